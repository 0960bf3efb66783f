use chainrule::ndarray::array;
use chainrule::prelude::*;

fn main() {
    let x = array![[0.0f32, 1.0]];
    let t = array![[1.0f32]];

    // One mistake: the error alone, nothing about `net`'s type below.
    let mut net = network!(affine(2, 3) -> rleu -> affine(3, 1) -> mse);
    let loss = net.gradient(x.view(), t.view()).unwrap();
    Sgd::new(0.1).step(&mut net);

    // Two mistakes: both errors, and still nothing below.
    let mut net = network!(affine(2, 0) -> rleu -> mse);
    let y = net.forward(x.view()).unwrap();
    println!("{loss} {y}");
}
