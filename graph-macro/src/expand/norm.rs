//! The families with a training mode: batch normalisation and dropout. Their forward methods pass
//! on `self.training`, which the entry points set (training passes `true`, evaluation passes
//! `false`); their backward kernels differentiate the mode the forward pass recorded in the
//! layer's state.

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use super::{Family, Generator, Method, lit};
use crate::ops::{DropoutKernels, NormKernels};

/// `kernels::BatchNorm { .. }` of a `batchnorm` node: channels (features, for a vector), elements
/// per channel, and its options.
pub fn norm_geometry(g: &Generator, node: usize) -> TokenStream {
    let this = &g.net.nodes[node];
    let shape = &g.net.values[this.inputs[0]].shape;
    let channels = shape.dims()[0];
    let spatial = shape.size() / channels;
    let mut options = this.args.reals().map(Literal::f64_unsuffixed);
    let (momentum, eps) = (options.next(), options.next());
    let (channels, spatial) = (lit(channels), lit(spatial));
    quote! {
        kernels::BatchNorm { channels: #channels, spatial: #spatial, momentum: #momentum, eps: #eps }
    }
}

impl Family for NormKernels {
    fn forward(&self, g: &Generator, node: usize) -> Option<Method> {
        let this = &g.net.nodes[node];
        let x = g.pass_view(this.inputs[0]);
        let y = g.value_field(this.output);
        let (gamma, beta) = (g.param_field(node, "gamma"), g.param_field(node, "beta"));
        let (state, _, _) = g.state(node)?;
        let geometry = norm_geometry(g, node);
        let kernel = format_ident!("{}", self.forward);
        Some(Method {
            math: self.forward_math,
            note: g.shapes_note(node),
            body: quote! {
                kernels::#kernel(
                    #x, self.#gamma.value(), self.#beta.value(), self.#y.view_mut(),
                    &mut self.#state, #geometry, self.training,
                );
            },
        })
    }

    fn backward(&self, g: &Generator, node: usize) -> Option<Method> {
        let this = &g.net.nodes[node];
        let (gamma, beta) = (g.param_field(node, "gamma"), g.param_field(node, "beta"));
        let (state, _, _) = g.state(node)?;
        let x = g.pass_view(this.inputs[0]);
        let dy = g.grad_view(this.output);
        let dx = match g.plan.nodes[node].modes[0] {
            Some(mode) => {
                let dx = g.grad_view_mut(this.inputs[0]);
                quote!(Some((#dx, #mode)))
            }
            None => quote!(None),
        };
        let geometry = norm_geometry(g, node);
        let kernel = format_ident!("{}", self.backward);
        Some(Method {
            math: self.backward_math,
            note: String::new(),
            body: quote! {
                kernels::#kernel(
                    #x, #dy, #dx, &mut self.#gamma, &mut self.#beta, sgd, &mut self.#state,
                    #geometry,
                );
            },
        })
    }
}

impl Family for DropoutKernels {
    fn forward(&self, g: &Generator, node: usize) -> Option<Method> {
        let this = &g.net.nodes[node];
        let x = g.pass_view(this.inputs[0]);
        let y = g.value_field(this.output);
        let (state, _, _) = g.state(node)?;
        let p = this.args.reals().map(Literal::f64_unsuffixed);
        let kernel = format_ident!("{}", self.forward);
        Some(Method {
            math: self.forward_math,
            note: g.shapes_note(node),
            body: quote! {
                kernels::#kernel(
                    #x, self.#y.view_mut(), &mut self.#state, #(#p,)* &mut self.masks,
                    self.training,
                );
            },
        })
    }

    fn backward(&self, g: &Generator, node: usize) -> Option<Method> {
        let this = &g.net.nodes[node];
        let mode = g.plan.nodes[node].modes[0]?;
        let (state, _, _) = g.state(node)?;
        let dy = g.grad_view(this.output);
        let dx = g.grad_view_mut(this.inputs[0]);
        let kernel = format_ident!("{}", self.backward);
        Some(Method {
            math: self.backward_math,
            note: String::new(),
            body: quote!(kernels::#kernel(#dy, #dx, #mode, &self.#state);),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::methods;

    #[test]
    fn a_batchnorm_passes_the_mode_and_its_running_statistics() {
        insta::assert_snapshot!(methods(
            quote::quote!(input(2, 4, 4) -> conv2d(2, 3, 3) -> batchnorm -> relu -> affine(12, 2) -> mse),
            "batchnorm0"
        ));
    }

    #[test]
    fn a_dropout_draws_its_mask_from_the_networks_generator() {
        insta::assert_snapshot!(methods(
            quote::quote!(affine(4, 3) -> dropout(0.25) -> mse),
            "dropout0"
        ));
    }
}
