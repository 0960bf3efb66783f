//! The affine family: `y = x·W + b`, with its fusions (an activation applied as the sums are
//! stored; in `sgd_step`, the activation's backward pass in the input-gradient product, and the
//! parameter update in the parameter-gradient product).

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::{Family, Generator, Method};
use crate::ops::AffineKernels;

impl Family for AffineKernels {
    fn forward(&self, g: &Generator, node: usize) -> Option<Method> {
        let net = g.net;
        let this = &net.nodes[node];
        let x = g.pass_view(this.inputs[0]);
        let y = g.value_field(this.output);
        let (w, b) = (g.param_field(node, "weight"), g.param_field(node, "bias"));
        let shapes = g.shapes_note(node);
        if let Some(fused) = g.plan.nodes[node].epilogue {
            let activation = &net.nodes[fused.node];
            let out = g.value_field(activation.output);
            let kernel = format_ident!("{}", fused.epilogue.forward);
            let math = activation.op.kernels.math().0;
            let named = match &net.values[activation.output].name {
                Some(name) => format!("`{name}` = `{}`", activation.ident),
                None => format!("`{}`", activation.ident),
            };
            return Some(Method {
                math: self.forward_math,
                note: format!(
                    "{shapes} Also computes {named} = `{}`: {math}, as the sums are stored.",
                    activation.layer.describe()
                ),
                body: quote! {
                    kernels::#kernel(
                        #x, self.#w.weights(), self.#b.value(),
                        self.#y.view_mut(), self.#out.view_mut(),
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
                    #x, self.#w.weights(), self.#b.value(), self.#y.view_mut(),
                );
            },
        })
    }

    fn backward(&self, g: &Generator, node: usize) -> Option<Method> {
        let this = &g.net.nodes[node];
        let plan = &g.plan.nodes[node];
        let (w, b) = (g.param_field(node, "weight"), g.param_field(node, "bias"));
        let x = g.pass_view(this.inputs[0]);
        let dy = g.grad_view(this.output);
        let mut note = String::new();
        // The input's gradient first: it reads W as the forward pass used it, before an SGD update
        // changes it.
        let mut body = TokenStream::new();
        if let Some(mode) = plan.modes[0] {
            let kernel = format_ident!("{}", self.backward_input);
            let dx = g.grad_view_mut(this.inputs[0]);
            let plain = quote! {
                kernels::#kernel(self.#w.value(), #dy, #dx, #mode);
            };
            body.extend(match plan.gate {
                // `sgd_step` keeps no gradient for people to read, so it skips the activation
                // output's and sets the activation input's gradient in the product.
                Some(gate) => {
                    let activation = &g.net.nodes[gate.node];
                    note.push_str(&format!(
                        " With `sgd = Some(_)` the input gradient's product does `{}`'s \
                         backward pass as well: {}, applied as it is stored.",
                        activation.ident,
                        activation.op.kernels.math().1
                    ));
                    let gated = gate.epilogue.gated_backward_input;
                    let kernel = format_ident!("{}", gated.expect("plan gates only with a kernel"));
                    let y = g.value_field(activation.output);
                    let du = g.grad_view_mut(activation.inputs[0]);
                    quote! {
                        if sgd.is_some() {
                            kernels::#kernel(
                                self.#w.value(), #dy, self.#y.view(), #du,
                            );
                        } else {
                            #plain
                        }
                    }
                }
                None => plain,
            });
        }
        let params = format_ident!("{}", self.backward_params);
        body.extend(quote! {
            kernels::#params(#x, #dy, &mut self.#w, &mut self.#b, sgd);
        });
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
    fn affine_then_relu_is_one_forward_pass_and_a_gated_product_in_sgd_step() {
        insta::assert_snapshot!(methods(
            quote::quote!(affine(4, 3) -> relu -> affine(3, 2) -> mse),
            "affine1"
        ));
    }
}
