//! The loss family: the loss and its input's gradient in one kernel (`softmax_cross_entropy`, the
//! book's softmax-with-loss, and `mse`), and the `Trainable` impl built around it.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::{Family, Generator, Method};
use crate::ops::{LossKernels, TargetKind};

impl Family for LossKernels {
    /// A loss runs in its own method, which `trainable` generates.
    fn forward(&self, _: &Generator, _: usize) -> Option<Method> {
        None
    }

    /// The loss method writes its input's gradient.
    fn backward(&self, _: &Generator, _: usize) -> Option<Method> {
        None
    }
}

/// The loss method and the `Trainable` impl, for the loss `node`.
/// `train_mode` and `eval_mode` put the network in either mode before a forward pass.
pub fn trainable(
    g: &Generator,
    node: usize,
    kernels: &LossKernels,
    train_mode: &Option<TokenStream>,
    eval_mode: &Option<TokenStream>,
) -> TokenStream {
    let net = g.net;
    let loss = &net.nodes[node];
    let ty = g.ty;
    let elem = &net.elem;
    let name = &net.name;
    let input_width = g.input_width();
    let kernel = format_ident!("{}", kernels.kernel);
    let targets_ty = match kernels.targets {
        TargetKind::Classes => quote!(&'t [usize]),
        TargetKind::Values => quote!(ArrayView2<'t, #elem>),
    };
    let (x, reads) = g.with_batch(|| g.pass_view(loss.inputs[0]));
    let (params, args) = g.batch_param(reads);
    let bind = reads.then(|| quote!(let batch = x;));
    let dx = g.grad_view_mut(loss.inputs[0]);
    let method = format_ident!("loss_{}", loss.ident);
    let doc = format!(
        " `{}` = `{}`: {}. The gradient is computed with the loss.",
        loss.ident,
        loss.layer.describe(),
        kernels.math
    );
    quote! {
        impl #ty {
            #[doc = #doc]
            #[inline]
            fn #method(&mut self, t: <Self as ::chainrule::Trainable>::Targets<'_>, #params) -> #elem {
                kernels::#kernel(#x, t, #dx)
            }

            /// `gradient` (`sgd = None`) or `sgd_step_with_decay` (`sgd = Some((η, λ))`): the
            /// forward pass, the loss and the backward pass, all reading `x` in place, so
            /// nothing is kept for a later `backward`. `ready` sees each parameter as soon as the
            /// backward pass is done with it.
            fn train_pass(
                &mut self,
                x: ArrayView2<'_, #elem>,
                t: <Self as ::chainrule::Trainable>::Targets<'_>,
                sgd: Option<(#elem, #elem)>,
                ready: &mut dyn FnMut(::chainrule::ParamRef<'_, #elem>),
            ) -> ::chainrule::Result<#elem> {
                let outputs = <Self as ::chainrule::Network>::OUTPUT;
                private::check_batch(#name, &x, #input_width, &t, outputs)?;
                self.resize_values(x.nrows());
                self.resize_grads(x.nrows());
                #train_mode
                self.run_forward(x);
                #bind
                let loss = self.#method(t, #args);
                self.run_backward(x, sgd, ready);
                self.pass = private::Pass::None;
                Ok(loss)
            }
        }

        impl ::chainrule::Trainable for #ty {
            type Targets<'t> = #targets_ty;

            fn loss(
                &mut self,
                x: ArrayView2<'_, #elem>,
                t: Self::Targets<'_>,
            ) -> ::chainrule::Result<#elem> {
                let outputs = <Self as ::chainrule::Network>::OUTPUT;
                private::check_batch(#name, &x, #input_width, &t, outputs)?;
                self.resize_values(x.nrows());
                self.resize_grads(x.nrows());
                private::copy_input(&mut self.input, x, #input_width);
                #train_mode
                let loss = self.on_kept_batch(|net, batch| {
                    net.run_forward(batch);
                    net.#method(t, #args)
                });
                self.pass = private::Pass::Loss;
                Ok(loss)
            }

            fn eval_loss(
                &mut self,
                x: ArrayView2<'_, #elem>,
                t: Self::Targets<'_>,
            ) -> ::chainrule::Result<#elem> {
                let outputs = <Self as ::chainrule::Network>::OUTPUT;
                private::check_batch(#name, &x, #input_width, &t, outputs)?;
                self.resize_values(x.nrows());
                self.resize_grads(x.nrows());
                #eval_mode
                self.run_forward(x);
                #bind
                let loss = self.#method(t, #args);
                self.pass = private::Pass::None;
                Ok(loss)
            }

            fn backward(&mut self) -> ::chainrule::Result<()> {
                if self.pass != private::Pass::Loss {
                    return Err(::chainrule::Error::BackwardBeforeLoss);
                }
                self.on_kept_batch(|net, batch| net.run_backward(batch, None, &mut |_| {}));
                Ok(())
            }

            fn gradient(
                &mut self,
                x: ArrayView2<'_, #elem>,
                t: Self::Targets<'_>,
            ) -> ::chainrule::Result<#elem> {
                self.train_pass(x, t, None, &mut |_| {})
            }

            fn gradient_with(
                &mut self,
                x: ArrayView2<'_, #elem>,
                t: Self::Targets<'_>,
                ready: &mut dyn FnMut(::chainrule::ParamRef<'_, #elem>),
            ) -> ::chainrule::Result<#elem> {
                self.train_pass(x, t, None, ready)
            }

            fn sgd_step_with_decay(
                &mut self,
                x: ArrayView2<'_, #elem>,
                t: Self::Targets<'_>,
                lr: f64,
                weight_decay: f64,
            ) -> ::chainrule::Result<#elem> {
                let step = (
                    <#elem as ::chainrule::Element>::from_f64(lr),
                    <#elem as ::chainrule::Element>::from_f64(weight_decay),
                );
                self.train_pass(x, t, Some(step), &mut |_| {})
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::methods;

    #[test]
    fn the_loss_writes_its_input_gradient_as_it_computes_the_loss() {
        insta::assert_snapshot!(methods(
            quote::quote!(affine(3, 4) -> softmax_cross_entropy),
            "softmax_cross_entropy0"
        ));
    }
}
