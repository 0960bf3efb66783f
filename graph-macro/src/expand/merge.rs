//! The merge family: two values of one shape combined element by element (`add`, `sub`, `mul`,
//! `div`), one backward kernel per input.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::{Family, Generator, Method};
use crate::ops::MergeKernels;

impl Family for MergeKernels {
    fn forward(&self, g: &Generator, node: usize) -> Option<Method> {
        let this = &g.net.nodes[node];
        let kernel = format_ident!("{}", self.forward);
        let (a, b) = (g.pass_view(this.inputs[0]), g.pass_view(this.inputs[1]));
        let y = g.value_field(this.output);
        Some(Method {
            math: self.forward_math,
            note: g.shapes_note(node),
            body: quote!(kernels::#kernel(#a, #b, self.#y.view_mut());),
        })
    }

    fn backward(&self, g: &Generator, node: usize) -> Option<Method> {
        let this = &g.net.nodes[node];
        let y = g.value_field(this.output);
        let mut body = TokenStream::new();
        let inputs = this.inputs.iter().zip(&g.plan.nodes[node].modes);
        for (kernel, (&input, mode)) in self.backward.iter().zip(inputs) {
            let Some(mode) = mode else { continue };
            let kernel = format_ident!("{kernel}");
            let (a, b) = (g.pass_view(this.inputs[0]), g.pass_view(this.inputs[1]));
            let (dy, dx) = (g.grad_view(this.output), g.grad_view_mut(input));
            body.extend(quote! {
                kernels::#kernel(#a, #b, self.#y.view(), #dy, #dx, #mode);
            });
        }
        (!body.is_empty()).then(|| Method {
            math: self.backward_math,
            note: String::new(),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::methods;

    #[test]
    fn a_merge_computes_only_the_gradients_needed() {
        // `a` has a parameter upstream, `b` is an input nobody asked a gradient for.
        insta::assert_snapshot!(methods(
            quote::quote! {
                x = input(2);
                b = input(3);
                a = x -> affine(2, 3);
                mul(a, b) -> mse
            },
            "mul0"
        ));
    }
}
