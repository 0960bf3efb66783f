//! The seed's shopping bills, checked against values derived by hand.

use chainrule::ndarray::{Array2, array};
use chainrule::prelude::*;

include!("../examples/shopping/bills.rs");

const PRICE: f64 = 6600.0; // won per light novel
const COUNT: f64 = 2.0;
const RATE: f64 = 1100.0; // won per dollar
const SHIPPING: f64 = 5.0; // dollars
const FRIENDS: f64 = 33.0; // dollars

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 1e-12 * expected.abs().max(1.0)
}

/// Forward, then backward from ∂total/∂total = 1; returns the total.
fn run<N: Network<Elem = f64>>(net: &mut N, inputs: Array2<f64>) -> f64 {
    let total = net.forward(inputs.view()).unwrap()[[0, 0]];
    net.backward_from(Array2::ones((1, 1)).view()).unwrap();
    total
}

fn grad<N: Network<Elem = f64>>(net: &N, input: &str) -> f64 {
    net.input_grad(input).unwrap()[[0, 0]]
}

#[test]
fn bill_one_by_hand() {
    let mut bill = Bill::default();
    let total = run(&mut bill, array![[PRICE, COUNT, RATE, SHIPPING]]);
    // total = price·count / rate + shipping = 13200 / 1100 + 5 = 17 dollars.
    assert_eq!(total, 17.0);
    // ∂total/∂price = count / rate = 2/1100
    assert!(close(grad(&bill, "price"), 2.0 / 1100.0));
    // ∂total/∂count = price / rate = 6600/1100 = 6
    assert!(close(grad(&bill, "count"), 6.0));
    // ∂total/∂rate = −price·count / rate² = −13200/1100²
    assert!(close(grad(&bill, "rate"), -13200.0 / (1100.0 * 1100.0)));
    // ∂total/∂shipping = 1: the add node hands the gradient on unchanged.
    assert_eq!(grad(&bill, "shipping"), 1.0);
}

#[test]
fn every_node_of_bill_one() {
    let mut bill = Bill::default();
    run(&mut bill, array![[PRICE, COUNT, RATE, SHIPPING]]);
    let mut seen = Vec::new();
    bill.for_each_value(&mut |v| {
        seen.push((v.name, v.value[[0, 0]], v.grad.map(|g| g[[0, 0]])));
    });
    let expected = [
        ("price", 6600.0, 2.0 / 1100.0),
        ("count", 2.0, 6.0),
        ("rate", 1100.0, -13200.0 / 1_210_000.0),
        ("shipping", 5.0, 1.0),
        // won = price·count; ∂total/∂won = 1/rate.
        ("won", 13200.0, 1.0 / 1100.0),
        // dollars = won / rate; ∂total/∂dollars = 1.
        ("dollars", 12.0, 1.0),
        ("total", 17.0, 1.0),
    ];
    assert_eq!(seen.len(), expected.len(), "{seen:?}");
    for ((name, value, grad), (e_name, e_value, e_grad)) in seen.iter().zip(expected) {
        assert_eq!(*name, e_name);
        assert!(
            close(*value, e_value),
            "{name} = {value}, expected {e_value}"
        );
        let grad = grad.unwrap_or_else(|| panic!("{name} has a gradient"));
        assert!(
            close(grad, e_grad),
            "∂total/∂{name} = {grad}, expected {e_grad}"
        );
    }
}

#[test]
fn bill_two_adds_the_friends_items_without_changing_the_rest() {
    let mut bill = BillWithFriends::default();
    let total = run(&mut bill, array![[PRICE, COUNT, RATE, SHIPPING, FRIENDS]]);
    // 17 dollars of mine plus 33 of my friends' = 50. The add node needs to know nothing about
    // either side: local computation.
    assert_eq!(total, 50.0);
    assert_eq!(grad(&bill, "friends"), 1.0);
    assert!(close(grad(&bill, "price"), 2.0 / 1100.0));
    assert!(close(grad(&bill, "count"), 6.0));
    assert!(close(grad(&bill, "rate"), -13200.0 / (1100.0 * 1100.0)));
    assert_eq!(grad(&bill, "shipping"), 1.0);
}

#[test]
fn the_bill_draws_itself_with_values_and_gradients() {
    let mut bill = Bill::default();
    run(&mut bill, array![[PRICE, COUNT, RATE, SHIPPING]]);
    let dot = bill.dot_with_values();
    assert!(dot.starts_with("digraph \"Bill\" {"), "{dot}");
    assert!(
        dot.contains(r#"[label="won = mul0\nmul(price, count)"]"#),
        "{dot}"
    );
    // The edge from `won` into `div` carries 13200 forward and 1/1100 backward.
    assert!(dot.contains(r#"[label="13200\n∂ 0.00090909"]"#), "{dot}");
    // The total leaves the graph: 17, with gradient 1.
    assert!(dot.contains(r#"-> output [label="17\n∂ 1"]"#), "{dot}");
    // Without values, the edges carry shapes.
    assert!(Bill::DOT.contains(r#"[label="n × 1"]"#));
}
