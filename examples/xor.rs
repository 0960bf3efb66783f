//! The smallest problem a straight line cannot solve: XOR, learnt by a 2-8-2 network.
//!
//! Run with `cargo run --release --example xor`. It prints the loss falling and the final answers.

use chainrule::ndarray::array;
use chainrule::prelude::*;

network! {
    /// Two inputs, eight tanh units, two classes.
    struct Xor {
        affine(2, 8) -> tanh -> affine(8, 2) -> softmax_cross_entropy
    }
}

fn main() -> Result<(), chainrule::Error> {
    let x = array![[0.0f32, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]];
    let t = [0, 1, 1, 0];

    let mut net = Xor::new(Init::Xavier, 1);
    let mut sgd = Sgd::new(0.5);
    println!(
        "{} parameters; the graph in DOT:\n{}",
        Xor::PARAMS,
        Xor::DOT
    );
    for step in 0..=2000 {
        let loss = net.gradient(x.view(), &t)?;
        sgd.step(&mut net);
        if step % 200 == 0 {
            println!(
                "step {step:>4}  loss {loss:.5}  accuracy {:.2}",
                net.accuracy(x.view(), &t)?
            );
        }
    }
    let predicted = net.predict(x.view())?;
    for (row, class) in x.rows().into_iter().zip(&predicted) {
        println!("{} xor {} = {class}", row[0], row[1]);
    }
    assert_eq!(predicted, t, "XOR was not learnt");
    Ok(())
}
