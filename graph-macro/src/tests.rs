//! Expansion snapshots: the generated code of a few networks, pretty-printed, so that codegen
//! changes show in review. Run `cargo insta review` (or set INSTA_UPDATE=always) after a deliberate
//! change.

use proc_macro2::TokenStream;
use quote::quote;

fn pretty(tokens: TokenStream) -> String {
    let file: syn::File = syn::parse2(tokens).expect("the expansion is valid Rust");
    prettyplease::unparse(&file)
}

#[test]
fn two_layer_net() {
    insta::assert_snapshot!(pretty(crate::expand(quote! {
        /// The two-layer net of the backprop chapter.
        pub struct TwoLayerNet {
            affine(784, 50) -> relu -> affine(50, 10) -> softmax_cross_entropy
        }
    })));
}

#[test]
fn network_without_a_loss_has_no_backward() {
    insta::assert_snapshot!(pretty(crate::expand(quote! {
        struct Encoder: f64 {
            affine(4, 3) -> tanh -> affine(3, 2) -> sigmoid
        }
    })));
}

#[test]
fn expression_form_with_mse() {
    let expansion = crate::expand(quote! {
        affine(2, 3) -> sigmoid -> affine(3, 1) -> mse
    });
    insta::assert_snapshot!(pretty(quote! {
        fn main() {
            let mut net = #expansion;
        }
    }));
}
