//! The concat family: values side by side along their first dimension (features, or channels),
//! each input's gradient its own part of the output's.

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use super::{Family, Generator, Method};
use crate::ops::ConcatKernels;

impl Family for ConcatKernels {
    fn forward(&self, g: &Generator, node: usize) -> Option<Method> {
        let this = &g.net.nodes[node];
        let kernel = format_ident!("{}", self.forward);
        let parts = this.inputs.iter().map(|&v| g.pass_view(v));
        let y = g.value_field(this.output);
        Some(Method {
            math: self.forward_math,
            note: g.shapes_note(node),
            body: quote!(kernels::#kernel(&[#(#parts),*], self.#y.view_mut());),
        })
    }

    fn backward(&self, g: &Generator, node: usize) -> Option<Method> {
        let this = &g.net.nodes[node];
        let kernel = format_ident!("{}", self.backward);
        let mut body = TokenStream::new();
        let mut offset = 0;
        for (&input, mode) in this.inputs.iter().zip(&g.plan.nodes[node].modes) {
            let start = Literal::usize_unsuffixed(offset);
            offset += g.net.values[input].shape.size();
            let Some(mode) = mode else { continue };
            let (dy, dx) = (g.grad_view(this.output), g.grad_view_mut(input));
            body.extend(quote! {
                kernels::#kernel(#dy, #start, #dx, #mode);
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
    fn each_part_takes_its_own_columns_of_the_gradient() {
        insta::assert_snapshot!(methods(
            quote::quote! {
                x = input(2);
                p = x -> affine(2, 3);
                q = x -> affine(2, 4);
                concat(p, q) -> mse
            },
            "concat0"
        ));
    }
}
