//! The convolution and pooling families: kernels that slide a window over each image, their
//! geometry (`kernels::Conv2d`, `kernels::Pool2d`) written out as a constant, and what they keep
//! between calls (a convolution's scratch, a max pool's argmax) in a field of their own.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::{Family, Generator, Method, lit};
use crate::ops::{ConvKernels, PoolKernels};

/// The input image's channels, height and width.
fn image(g: &Generator, node: usize) -> [usize; 3] {
    match g.net.values[g.net.nodes[node].inputs[0]].shape.dims() {
        &[c, h, w] => [c, h, w],
        dims => unreachable!("check lets only images into a window op, not {dims:?}"),
    }
}

/// `kernels::Conv2d { .. }` of a `conv2d` node.
fn conv_geometry(g: &Generator, node: usize) -> TokenStream {
    let args = &g.net.nodes[node].args;
    let [c, h, w] = image(g, node).map(lit);
    let (filters, kernel) = (lit(args.whole(1)), lit(args.whole(2)));
    let (stride, pad) = (lit(args.whole(3)), lit(args.whole(4)));
    quote! {
        kernels::Conv2d {
            channels: #c, height: #h, width: #w,
            filters: #filters, kernel: #kernel, stride: #stride, pad: #pad,
        }
    }
}

/// `kernels::Pool2d { .. }` of a pooling node.
fn pool_geometry(g: &Generator, node: usize) -> TokenStream {
    let args = &g.net.nodes[node].args;
    let [c, h, w] = image(g, node).map(lit);
    let (window, stride, pad) = (lit(args.whole(0)), lit(args.whole(1)), lit(args.whole(2)));
    quote! {
        kernels::Pool2d {
            channels: #c, height: #h, width: #w,
            window: #window, stride: #stride, pad: #pad,
        }
    }
}

impl Family for ConvKernels {
    fn forward(&self, g: &Generator, node: usize) -> Option<Method> {
        let this = &g.net.nodes[node];
        let x = g.pass_view(this.inputs[0]);
        let y = g.value_field(this.output);
        let (w, b) = (g.param_field(node, "weight"), g.param_field(node, "bias"));
        let (state, _, _) = g.state(node)?;
        let geometry = conv_geometry(g, node);
        let shapes = g.shapes_note(node);
        if let Some(fused) = g.plan.nodes[node].epilogue {
            let activation = &g.net.nodes[fused.node];
            let out = g.value_field(activation.output);
            let kernel = format_ident!("{}", fused.epilogue.forward);
            return Some(Method {
                math: self.forward_math,
                note: format!(
                    "{shapes} Also computes `{}` = `{}`: {}, as the sums are stored.",
                    activation.ident,
                    activation.layer.describe(),
                    activation.op.kernels.math().0
                ),
                body: quote! {
                    kernels::#kernel(
                        #x, self.#w.value(), self.#b.value(), self.#y.view_mut(),
                        self.#out.view_mut(), &mut self.#state, #geometry,
                    );
                },
            });
        }
        let kernel = format_ident!("{}", self.forward);
        Some(Method {
            math: self.forward_math,
            note: shapes,
            body: quote! {
                kernels::#kernel(
                    #x, self.#w.value(), self.#b.value(), self.#y.view_mut(),
                    &mut self.#state, #geometry,
                );
            },
        })
    }

    fn backward(&self, g: &Generator, node: usize) -> Option<Method> {
        let this = &g.net.nodes[node];
        let plan = &g.plan.nodes[node];
        let (w, b) = (g.param_field(node, "weight"), g.param_field(node, "bias"));
        let (state, _, _) = g.state(node)?;
        let x = g.pass_view(this.inputs[0]);
        let dy = g.grad_view(this.output);
        let geometry = conv_geometry(g, node);
        // The input's gradient first: it reads W as the forward pass used it, before an SGD
        // update changes it.
        let mut body = TokenStream::new();
        if let Some(mode) = plan.modes[0] {
            let kernel = format_ident!("{}", self.backward_input);
            let dx = g.grad_view_mut(this.inputs[0]);
            body.extend(quote! {
                kernels::#kernel(self.#w.value(), #dy, #dx, #mode, &mut self.#state, #geometry);
            });
        }
        let params = format_ident!("{}", self.backward_params);
        body.extend(quote! {
            kernels::#params(
                #x, #dy, &mut self.#w, &mut self.#b, sgd, &mut self.#state, #geometry,
            );
        });
        Some(Method {
            math: self.backward_math,
            note: String::new(),
            body,
        })
    }
}

impl Family for PoolKernels {
    fn forward(&self, g: &Generator, node: usize) -> Option<Method> {
        let this = &g.net.nodes[node];
        let x = g.pass_view(this.inputs[0]);
        let y = g.value_field(this.output);
        let state = g.state(node).map(|(field, _, _)| quote!(&mut self.#field,));
        let geometry = pool_geometry(g, node);
        let kernel = format_ident!("{}", self.forward);
        Some(Method {
            math: self.forward_math,
            note: g.shapes_note(node),
            body: quote!(kernels::#kernel(#x, self.#y.view_mut(), #state #geometry);),
        })
    }

    fn backward(&self, g: &Generator, node: usize) -> Option<Method> {
        let this = &g.net.nodes[node];
        let mode = g.plan.nodes[node].modes[0]?;
        let dy = g.grad_view(this.output);
        let dx = g.grad_view_mut(this.inputs[0]);
        let state = g.state(node).map(|(field, _, _)| quote!(&self.#field,));
        let geometry = pool_geometry(g, node);
        let kernel = format_ident!("{}", self.backward);
        Some(Method {
            math: self.backward_math,
            note: String::new(),
            body: quote!(kernels::#kernel(#dy, #dx, #mode, #state #geometry);),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::methods;

    #[test]
    fn a_convolution_writes_its_geometry_and_passes_its_scratch() {
        insta::assert_snapshot!(methods(
            quote::quote!(input(1, 6, 6) -> conv2d(1, 2, 3) -> relu -> max_pool(2) -> affine(8, 2) -> mse),
            "conv2d0"
        ));
    }

    #[test]
    fn a_max_pool_keeps_its_argmax_for_the_backward_pass() {
        insta::assert_snapshot!(methods(
            quote::quote!(input(1, 6, 6) -> conv2d(1, 2, 3) -> relu -> max_pool(2) -> affine(8, 2) -> mse),
            "max_pool0"
        ));
    }
}
