//! The activation family: `y = f(x)` with the local derivative written in terms of `y`, the op's
//! numbers (`leaky_relu(0.1)`) passed after the arrays.

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use super::{Family, Generator, Method};
use crate::ops::ActivationKernels;

/// The op's real arguments as literals, each after a comma.
fn numbers(g: &Generator, node: usize) -> TokenStream {
    let numbers = g.net.nodes[node].args.reals().map(Literal::f64_unsuffixed);
    quote!(#(, #numbers)*)
}

impl Family for ActivationKernels {
    fn forward(&self, g: &Generator, node: usize) -> Option<Method> {
        let this = &g.net.nodes[node];
        let kernel = format_ident!("{}", self.forward);
        let x = g.pass_view(this.inputs[0]);
        let y = g.value_field(this.output);
        let numbers = numbers(g, node);
        Some(Method {
            math: self.forward_math,
            note: g.shapes_note(node),
            body: quote!(kernels::#kernel(#x, self.#y.view_mut() #numbers);),
        })
    }

    fn backward(&self, g: &Generator, node: usize) -> Option<Method> {
        let this = &g.net.nodes[node];
        let plan = &g.plan.nodes[node];
        let mode = plan.modes[0]?;
        let kernel = format_ident!("{}", self.backward);
        let y = g.value_field(this.output);
        let dy = g.grad_view(this.output);
        let dx = g.grad_view_mut(this.inputs[0]);
        let numbers = numbers(g, node);
        let mut body = quote! {
            kernels::#kernel(self.#y.view(), #dy, #dx, #mode #numbers);
        };
        let mut note = String::new();
        if plan.gated_into.is_some() {
            note.push_str(" With `sgd = Some(_)` the product after it has done this already.");
            body = quote!(if sgd.is_none() { #body });
        }
        Some(Method {
            math: self.backward_math,
            note,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::methods;

    #[test]
    fn an_activation_passes_its_number_after_the_arrays() {
        insta::assert_snapshot!(methods(
            quote::quote!(affine(4, 3) -> leaky_relu(0.1) -> mse),
            "leaky_relu0"
        ));
    }
}
