//! Dimensions passed through `macro_rules!` as `$n:expr` arrive in invisible groups.
use chainrule::{Network, network};

macro_rules! mlp {
    ($name:ident, $inputs:expr, $hidden:expr, $classes:expr) => {
        network! {
            struct $name {
                affine($inputs, $hidden) -> relu -> affine($hidden, $classes) -> softmax_cross_entropy
            }
        }
    };
}

mlp!(Mlp, 784, 50, 10);

fn main() {
    assert_eq!(Mlp::PARAMS, 784 * 50 + 50 + 50 * 10 + 10);
}
