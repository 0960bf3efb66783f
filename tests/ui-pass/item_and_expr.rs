use chainrule::{Network, network};

network! {
    /// A documented network.
    pub struct Net {
        affine(784, 50) -> relu -> affine(50, 10) -> softmax_cross_entropy
    }
}

network! {
    struct Wide: f64 {
        affine(2, 3) -> tanh -> affine(3, 1) -> mse
    }
}

fn main() {
    assert_eq!(Net::PARAMS, 784 * 50 + 50 + 50 * 10 + 10);
    let _net = Net::default();
    let _wide = Wide::default();
    let _tiny = network!(f64: affine(2, 3) -> sigmoid -> affine(3, 1) -> mse);
    let _no_loss = network!(affine(4, 2) -> relu);
}
