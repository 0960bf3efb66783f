//! The seed's computational graph: a shopping bill, forward and backward.
//!
//! Two light novels at 6600 won each, paid in dollars at 1100 won per dollar, plus 5 dollars of
//! shipping: 17 dollars. Then friends' items worth 33 dollars join through an add node: 50 dollars.
//! The forward pass computes each node's value from its inputs alone; the backward pass, from the
//! total's gradient of 1, tells how the total moves when each input moves (local derivatives,
//! multiplied along the way: the chain rule).
//!
//! Run with `cargo run --example shopping`. With Graphviz's `dot` installed (Debian: `apt-get
//! install graphviz`), it also draws both graphs, values and gradients on the edges, as SVG files.

use std::path::Path;
use std::process::Command;

use chainrule::ndarray::{Array2, array};
use chainrule::prelude::*;

include!("bills.rs");

/// Runs one bill forward and backward, prints it, and draws it if it can.
fn show<N: Network<Elem = f64>>(net: &mut N, inputs: Array2<f64>, names: &[&str], file: &str) {
    let total = net.forward(inputs.view()).expect("the inputs fit")[[0, 0]];
    net.backward_from(Array2::ones((1, 1)).view())
        .expect("after a forward pass");
    println!("{}: total {total} dollars", N::NAME);
    net.for_each_value(&mut |v| {
        let grad = v
            .grad
            .map_or(String::from("-"), |g| format!("{:.6}", g[[0, 0]]));
        println!(
            "  {:<9} {:<22} = {:>6}   ∂total/∂{} = {grad}",
            v.name,
            v.op,
            v.value[[0, 0]],
            v.name
        );
    });
    for name in names {
        let grad = net.input_grad(name).expect("every input is marked #[grad]")[[0, 0]];
        println!("  ∂total/∂{name:<8} = {grad}");
    }
    draw(&net.dot_with_values(), file);
}

/// Writes `dot` beside `file` and, if Graphviz is there, renders it to `file` (SVG).
fn draw(dot: &str, file: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/shopping");
    if let Err(error) = std::fs::create_dir_all(&dir) {
        eprintln!("  could not create {}: {error}", dir.display());
        return;
    }
    let file = dir.join(file);
    let file = file.as_path();
    let dot_file = file.with_extension("dot");
    if let Err(error) = std::fs::write(&dot_file, dot) {
        eprintln!("  could not write {}: {error}", dot_file.display());
        return;
    }
    match Command::new("dot")
        .arg("-Tsvg")
        .arg("-o")
        .arg(file)
        .arg(&dot_file)
        .status()
    {
        Ok(status) if status.success() => println!("  drew the graph to {}", file.display()),
        Ok(status) => eprintln!(
            "  dot failed ({status}); the graph is in {}",
            dot_file.display()
        ),
        Err(_) => println!(
            "  the graph is in {}; install Graphviz (Debian: apt-get install graphviz) to draw it as SVG",
            dot_file.display()
        ),
    }
}

fn main() {
    let mut bill = Bill::default();
    show(
        &mut bill,
        array![[6600.0, 2.0, 1100.0, 5.0]],
        &["price", "count", "rate", "shipping"],
        "bill.svg",
    );
    println!();
    let mut with_friends = BillWithFriends::default();
    show(
        &mut with_friends,
        array![[6600.0, 2.0, 1100.0, 5.0, 33.0]],
        &["price", "count", "rate", "shipping", "friends"],
        "bill_with_friends.svg",
    );
}
