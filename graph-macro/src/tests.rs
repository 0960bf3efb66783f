//! Expansion snapshots: the generated code of a few whole networks, pretty-printed, so that
//! codegen changes show in review (each kernel family's module in `expand/` snapshots one node). Run `cargo insta review` (or set INSTA_UPDATE=always) after a deliberate
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

#[test]
fn residual_block_sums_gradients_over_both_paths() {
    // `h` feeds both the residual branch and the add: its gradient is set by one path and added
    // to by the other. `x` is an input nobody asked a gradient for: it gets none.
    insta::assert_snapshot!(pretty(crate::expand(quote! {
        struct Residual {
            x = input(784);
            h = x -> affine(784, 64) -> relu;
            r = h -> affine(64, 64) -> relu -> affine(64, 64);
            add(h, r) -> affine(64, 10) -> softmax_cross_entropy
        }
    })));
}

#[test]
fn shopping_bill_with_input_gradients() {
    // Only the inputs marked #[grad] get gradient buffers; `count` does not.
    insta::assert_snapshot!(pretty(crate::expand(quote! {
        struct Bill: f64 {
            #[grad] price = input(1);
            count = input(1);
            #[grad] rate = input(1);
            won = mul(price, count);
            div(won, rate)
        }
    })));
}
