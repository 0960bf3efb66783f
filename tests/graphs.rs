//! Graphs: merges, values used several times, residual blocks and several declared inputs.
//!
//! Gradient checks in f64 as in `tests/gradcheck.rs` (backprop against central differences), for
//! the parameters and, where an input is marked `#[grad]`, for the input too; then the graph's
//! run-time interface: `backward_from`, `input_grad`, `for_each_value` and `dot_with_values`.
//! Run with `--nocapture` to see the figures.

use chainrule::gradcheck::{self, ParamCheck};
use chainrule::ndarray::{Array1, Array2, ArrayView2, Axis, array, s};
use chainrule::prelude::*;
use chainrule::{Error, kernels};

mod common;
use common::*;

/// How the columns of a batch are split among the network's inputs: (name, first column, width),
/// in declaration order, read from `for_each_value` (which visits the inputs first).
fn input_layout<N: Network>(net: &N) -> Vec<(String, usize, usize)> {
    let mut layout = Vec::new();
    let mut offset = 0;
    let mut past_inputs = false;
    net.for_each_value(&mut |v| {
        if v.op.starts_with("input(") {
            assert!(!past_inputs, "input `{}` visited after a node", v.name);
            let width = v.value.ncols();
            layout.push((v.name.to_owned(), offset, width));
            offset += width;
        } else {
            past_inputs = true;
        }
    });
    assert_eq!(offset, N::INPUT, "the inputs' widths add up to INPUT");
    layout
}

/// The inputs that keep a gradient, with their columns.
fn grad_inputs<N: Network>(net: &N) -> Vec<(String, usize, usize)> {
    input_layout(net)
        .into_iter()
        .filter(|(name, _, _)| net.input_grad(name).is_ok())
        .collect()
}

/// Central differences of `f` with respect to each element of the columns `offset..offset+width`
/// of `x`, against `analytic`; prints the figures and returns the relative error.
fn compare_input_grad(
    network: &str,
    name: &str,
    x: &Array2<f64>,
    offset: usize,
    analytic: ArrayView2<f64>,
    f: &mut dyn FnMut(ArrayView2<f64>) -> f64,
) -> f64 {
    let (mut max_abs_diff, mut scale) = (0.0_f64, 0.0_f64);
    for ((i, j), &a) in analytic.indexed_iter() {
        let mut plus = x.clone();
        plus[[i, offset + j]] += EPS;
        let mut minus = x.clone();
        minus[[i, offset + j]] -= EPS;
        let numeric = (f(plus.view()) - f(minus.view())) / (2.0 * EPS);
        max_abs_diff = max_abs_diff.max((a - numeric).abs());
        scale = scale.max(a.abs()).max(numeric.abs());
    }
    let rel = if scale == 0.0 {
        0.0
    } else {
        max_abs_diff / scale
    };
    println!(
        "{network:<28} {:<16} {:>6} scalars  max |Δ| {max_abs_diff:.2e}  relative {rel:.2e}",
        format!("∂/∂{name}"),
        analytic.len()
    );
    assert!(
        scale > 0.0,
        "{network}: the gradient for `{name}` is all zero"
    );
    rel
}

/// Checks the gradients of every `#[grad]` input of a network ending in `mse` against central
/// differences of the loss.
fn check_input_grads_mse<N>(network: &str, net: &mut N, x: &Array2<f64>, t: &Array2<f64>)
where
    N: for<'t> Trainable<Elem = f64, Targets<'t> = ArrayView2<'t, f64>>,
{
    let inputs = grad_inputs(net);
    assert!(!inputs.is_empty(), "{network} has no #[grad] input");
    net.gradient(x.view(), t.view()).unwrap();
    let analytic: Vec<Array2<f64>> = inputs
        .iter()
        .map(|(name, _, _)| net.input_grad(name).unwrap().to_owned())
        .collect();
    for ((name, offset, width), analytic) in inputs.iter().zip(&analytic) {
        assert_eq!(analytic.dim(), (x.nrows(), *width), "∂/∂{name}'s shape");
        let rel = compare_input_grad(network, name, x, *offset, analytic.view(), &mut |x| {
            net.loss(x, t.view()).unwrap()
        });
        assert!(
            rel < TOLERANCE,
            "{network}: ∂/∂{name}: relative error {rel:.3e}"
        );
    }
}

/// Checks a network ending in `mse` on random inputs and targets: parameters, then `#[grad]`
/// inputs.
fn check_mse<N>(name: &str, mut net: N, x: &Array2<f64>)
where
    N: for<'t> Trainable<Elem = f64, Targets<'t> = ArrayView2<'t, f64>>,
{
    let t = random(x.nrows(), N::OUTPUT, 2);
    let report = gradcheck::check(&mut net, x.view(), t.view(), EPS).unwrap();
    assert_eq!(report.len(), N::PARAM_NAMES.len());
    assert_close(name, &report);
    if !grad_inputs(&net).is_empty() {
        check_input_grads_mse(name, &mut net, x, &t);
    }
}

/// Every parameter's gradient, by name.
fn param_grads<N: Network<Elem = f64>>(net: &N) -> Vec<(&'static str, Vec<f64>)> {
    let mut grads = Vec::new();
    net.for_each_param(&mut |p| grads.push((p.name, p.grad.to_vec())));
    grads
}

/// The parameter of `net` whose shape is `shape` (the tests' networks give each one its own).
fn param_with_shape<N: Network<Elem = f64>>(net: &N, shape: &[usize]) -> Array2<f64> {
    let mut found = Vec::new();
    net.for_each_param(&mut |p| {
        if p.shape == shape {
            found.push(p.value_array().into_dimensionality().unwrap().to_owned());
        }
    });
    assert_eq!(found.len(), 1, "one parameter of shape {shape:?}");
    found.pop().unwrap()
}

fn assert_all_close(actual: ArrayView2<f64>, expected: ArrayView2<f64>, what: &str) {
    assert_eq!(actual.dim(), expected.dim(), "{what}: shape");
    for ((index, &a), &e) in actual.indexed_iter().zip(expected.iter()) {
        assert!(
            (a - e).abs() <= 1e-12 * e.abs().max(1.0),
            "{what} at {index:?}: {a} ≠ {e}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Every merge alone: two inputs, one affine on each (whose parameters the check differentiates),
// the merge, and the loss. Both inputs are marked `#[grad]`, so the merge's backward into its
// inputs is checked on its own as well.

network! {
    struct AddAlone: f64 {
        #[grad] a = input(3);
        #[grad] b = input(2);
        p = a -> affine(3, 4);
        q = b -> affine(2, 4);
        add(p, q) -> mse
    }
}

network! {
    struct SubAlone: f64 {
        #[grad] a = input(3);
        #[grad] b = input(2);
        p = a -> affine(3, 4);
        q = b -> affine(2, 4);
        sub(p, q) -> mse
    }
}

network! {
    struct MulAlone: f64 {
        #[grad] a = input(3);
        #[grad] b = input(2);
        p = a -> affine(3, 4);
        q = b -> affine(2, 4);
        mul(p, q) -> mse
    }
}

network! {
    /// The divisor is a sigmoid's output: positive, and with small weights near 0.5.
    struct DivAlone: f64 {
        #[grad] a = input(3);
        #[grad] b = input(2);
        p = a -> affine(3, 4);
        q = b -> affine(2, 4) -> sigmoid;
        div(p, q) -> mse
    }
}

network! {
    /// The divisor is an input itself, kept in [1, 2] by the test.
    struct DivByInput: f64 {
        #[grad] a = input(3);
        #[grad] d = input(4);
        p = a -> affine(3, 4) -> tanh;
        div(p, d) -> affine(4, 2) -> mse
    }
}

#[test]
fn add_alone() {
    check_mse(
        "add(p, q) -> mse",
        AddAlone::new(Init::Std(1.0), 1),
        &random(4, 5, 1),
    );
}

#[test]
fn sub_alone() {
    check_mse(
        "sub(p, q) -> mse",
        SubAlone::new(Init::Std(1.0), 2),
        &random(4, 5, 1),
    );
}

#[test]
fn mul_alone() {
    check_mse(
        "mul(p, q) -> mse",
        MulAlone::new(Init::Std(1.0), 3),
        &random(4, 5, 1),
    );
}

#[test]
fn div_alone() {
    let mut net = DivAlone::new(Init::Std(0.2), 4);
    let x = random(4, 5, 1);
    // The divisor stays well away from zero.
    net.forward(x.view()).unwrap();
    let mut smallest = f64::INFINITY;
    net.for_each_value(&mut |v| {
        if v.name == "q" {
            smallest = v.value.fold(f64::INFINITY, |m, &q| m.min(q));
        }
    });
    assert!(
        smallest > 0.2,
        "the divisor comes as close to 0 as {smallest}"
    );
    check_mse("div(p, q) -> mse", net, &x);
}

#[test]
fn div_by_an_input() {
    let mut x = random(4, 7, 5);
    x.slice_mut(s![.., 3..]).assign(&uniform(4, 4, 6, 1.0, 2.0));
    check_mse(
        "div(p, d) -> affine -> mse",
        DivByInput::new(Init::Xavier, 5),
        &x,
    );
}

network! {
    struct ConcatTwo: f64 {
        #[grad] a = input(2);
        b = input(3);
        p = a -> affine(2, 3) -> tanh;
        q = b -> affine(3, 5);
        concat(p, q) -> affine(8, 2) -> mse
    }
}

network! {
    /// Three parts of widths 4, 3 and 2, one of them an input itself, in an order that is neither
    /// the inputs' nor the statements'.
    struct ConcatThree: f64 {
        #[grad] a = input(2);
        #[grad] b = input(3);
        p = a -> affine(2, 4) -> sigmoid;
        r = b -> affine(3, 2);
        concat(p, b, r) -> affine(9, 3) -> mse
    }
}

#[test]
fn concat_two_parts() {
    assert_eq!(ConcatTwo::INPUT, 5);
    check_mse(
        "concat(p3, q5) -> affine",
        ConcatTwo::new(Init::Xavier, 6),
        &random(4, 5, 7),
    );
}

#[test]
fn concat_three_parts() {
    check_mse(
        "concat(p4, b3, r2) -> affine",
        ConcatThree::new(Init::Xavier, 8),
        &random(5, 5, 9),
    );
}

#[test]
fn concat_puts_parts_side_by_side() {
    let mut net = ConcatThree::new(Init::Xavier, 8);
    let x = random(3, 5, 10);
    net.forward(x.view()).unwrap();
    let mut values = std::collections::HashMap::new();
    net.for_each_value(&mut |v| {
        values.insert(v.name, (v.op, v.value.to_owned()));
    });
    let concat = values
        .values()
        .find(|(op, _)| *op == "concat(p, b, r)")
        .map(|(_, v)| v.clone())
        .expect("the concat node is visited");
    assert_eq!(concat.ncols(), 9);
    assert_all_close(
        concat.slice(s![.., 0..4]),
        values["p"].1.view(),
        "p's columns",
    );
    assert_all_close(
        concat.slice(s![.., 4..7]),
        x.slice(s![.., 2..5]),
        "b's columns",
    );
    assert_all_close(
        concat.slice(s![.., 7..9]),
        values["r"].1.view(),
        "r's columns",
    );
}

// ---------------------------------------------------------------------------------------------
// A value used by several nodes gets the sum of their gradients.

network! {
    /// `h` feeds two affines and a concat.
    struct FanOut: f64 {
        #[grad] x = input(3);
        h = x -> affine(3, 4) -> tanh;
        a = h -> affine(4, 4) -> relu;
        b = h -> affine(4, 4) -> sigmoid;
        concat(a, h, b) -> affine(12, 2) -> mse
    }
}

network! {
    /// The same value twice in one merge: ∂(h·h)/∂h = 2h.
    struct Square: f64 {
        x = input(3);
        h = x -> affine(3, 4) -> tanh;
        mul(h, h) -> affine(4, 2) -> mse
    }
}

network! {
    /// An input used twice in one merge and once more elsewhere.
    struct InputTwice: f64 {
        #[grad] x = input(3);
        sq = mul(x, x);
        y = x -> affine(3, 3);
        add(sq, y) -> affine(3, 2) -> mse
    }
}

network! {
    /// Every merge on the same value, twice over: `h + h`, `h − h`, `h·h`, `[h | h]`.
    struct SameValueEverywhere: f64 {
        #[grad] x = input(2);
        h = x -> affine(2, 3) -> tanh;
        twice = add(h, h);
        zero = sub(h, h);
        square = mul(h, h);
        both = concat(h, h);
        left = add(twice, zero);
        right = both -> affine(6, 3);
        concat(left, square, right) -> affine(9, 2) -> mse
    }
}

network! {
    /// `h − h` is zero whatever the parameters: its gradient must be exactly zero.
    struct Cancels: f64 {
        x = input(2);
        h = x -> affine(2, 3);
        sub(h, h) -> mse
    }
}

#[test]
fn value_feeding_several_nodes() {
    check_mse(
        "h -> 2 affines + concat",
        FanOut::new(Init::Xavier, 11),
        &random(4, 3, 12),
    );
}

#[test]
fn same_value_twice_in_mul() {
    check_mse(
        "mul(h, h)",
        Square::new(Init::Xavier, 13),
        &random(4, 3, 14),
    );
}

#[test]
fn input_used_three_times() {
    check_mse(
        "mul(x, x) + affine(x)",
        InputTwice::new(Init::Xavier, 15),
        &random(4, 3, 16),
    );
}

#[test]
fn same_value_in_every_merge() {
    check_mse(
        "add/sub/mul/concat(h, h)",
        SameValueEverywhere::new(Init::Xavier, 17),
        &random(5, 2, 18),
    );
}

#[test]
fn same_value_twice_in_sub_cancels_exactly() {
    let mut net = Cancels::new(Init::Std(1.0), 19);
    let x = random(3, 2, 20);
    let t = random(3, 3, 21);
    net.gradient(x.view(), t.view()).unwrap();
    for (name, grad) in param_grads(&net) {
        assert!(
            grad.iter().all(|&g| g == 0.0),
            "{name}: da = dy and db = −dy must cancel, got {grad:?}"
        );
    }
}

#[test]
fn input_gradient_of_mul_x_x_is_2x() {
    network! {
        struct Squares: f64 {
            #[grad] x = input(3);
            mul(x, x)
        }
    }
    let mut net = Squares::default();
    let x = random(2, 3, 22);
    net.forward(x.view()).unwrap();
    net.backward_from(Array2::ones((2, 3)).view()).unwrap();
    assert_all_close(net.input_grad("x").unwrap(), (&x * 2.0).view(), "∂(x·x)/∂x");
}

#[test]
fn repeated_backward_passes_overwrite_gradients() {
    let mut net = SameValueEverywhere::new(Init::Xavier, 23);
    let x = random(4, 2, 24);
    let t = random(4, 2, 25);
    net.gradient(x.view(), t.view()).unwrap();
    let first = param_grads(&net);
    let first_input = net.input_grad("x").unwrap().to_owned();
    net.gradient(x.view(), t.view()).unwrap();
    // `gradient` read the batch in place and kept nothing to backpropagate again.
    assert!(matches!(net.backward(), Err(Error::BackwardBeforeLoss)));
    net.loss(x.view(), t.view()).unwrap();
    net.backward().unwrap();
    net.backward().unwrap();
    assert_eq!(
        param_grads(&net),
        first,
        "gradients are set, not accumulated"
    );
    assert_eq!(net.input_grad("x").unwrap(), first_input);
}

// ---------------------------------------------------------------------------------------------
// Residual networks.

network! {
    struct Residual: f64 {
        x = input(4);
        h = x -> affine(4, 6) -> relu;
        r = h -> affine(6, 6) -> relu -> affine(6, 6);
        add(h, r) -> affine(6, 2) -> softmax_cross_entropy
    }
}

network! {
    /// Two residual blocks, the second on the first's output, and the input's gradient.
    struct TwoBlocks: f64 {
        #[grad] x = input(3);
        h0 = x -> affine(3, 5) -> tanh;
        r0 = h0 -> affine(5, 5) -> tanh -> affine(5, 5);
        h1 = add(h0, r0);
        r1 = h1 -> affine(5, 5) -> sigmoid -> affine(5, 5);
        h2 = add(h1, r1);
        h2 -> affine(5, 2) -> mse
    }
}

#[test]
fn residual_network() {
    check_classes("residual softmax_ce", Residual::new(Init::He, 26), 6);
}

#[test]
fn two_residual_blocks() {
    check_mse(
        "2 residual blocks mse",
        TwoBlocks::new(Init::Xavier, 27),
        &random(4, 3, 28),
    );
}

#[test]
fn names_used_before_their_definition() {
    network! {
        struct Backwards: f64 {
            out = add(h, r) -> affine(6, 2);
            r = h -> affine(6, 6) -> tanh;
            h = x -> affine(4, 6) -> relu;
            #[grad] x = input(4);
            out -> mse
        }
    }
    check_mse(
        "residual, written backwards",
        Backwards::new(Init::He, 29),
        &random(4, 4, 30),
    );
}

// ---------------------------------------------------------------------------------------------
// Two declared inputs: the batch's columns go to the inputs in declaration order.

network! {
    /// `wide` is declared first, `narrow` second; `narrow` is used first.
    struct TwoInputs: f64 {
        #[grad] wide = input(3);
        #[grad] narrow = input(2);
        a = narrow -> affine(2, 4);
        b = wide -> affine(3, 4);
        sub(a, b)
    }
}

#[test]
fn two_inputs_take_their_columns_in_declaration_order() {
    assert_eq!(TwoInputs::INPUT, 5);
    assert_eq!(TwoInputs::OUTPUT, 4);
    let mut net = TwoInputs::new(Init::Std(1.0), 31);
    let x = random(3, 5, 32);
    let y = net.forward(x.view()).unwrap().to_owned();

    let (wide, narrow) = (x.slice(s![.., 0..3]), x.slice(s![.., 3..5]));
    // By hand: (narrow·Wa + ba) − (wide·Wb + bb), the weights told apart by their shapes.
    let (wa, wb) = (
        param_with_shape(&net, &[2, 4]),
        param_with_shape(&net, &[3, 4]),
    );
    let bias_of = |weight_shape: &[usize]| {
        let mut layer = String::new();
        net.for_each_param(&mut |p| {
            if p.shape == weight_shape {
                layer = p.name.trim_end_matches(".weight").to_owned();
            }
        });
        Array1::from(net.param(&format!("{layer}.bias")).unwrap().value.to_vec())
    };
    let (ba, bb) = (bias_of(&[2, 4]), bias_of(&[3, 4]));
    let expected = (narrow.dot(&wa) + &ba) - (wide.dot(&wb) + &bb);
    assert_all_close(y.view(), expected.view(), "the output");

    // The same with the runtime's kernels.
    let mut ya = Array2::zeros((3, 4));
    let mut yb = Array2::zeros((3, 4));
    let mut diff = Array2::zeros((3, 4));
    kernels::affine_forward(narrow, wa.view(), ba.view(), ya.view_mut());
    kernels::affine_forward(wide, wb.view(), bb.view(), yb.view_mut());
    kernels::sub_forward(ya.view(), yb.view(), diff.view_mut());
    assert_all_close(y.view(), diff.view(), "the output (kernels)");

    // Each input sees only its own columns: ∂Σy/∂narrow = rows of Wa summed, ∂Σy/∂wide = −(Wb's).
    net.backward_from(Array2::ones((3, 4)).view()).unwrap();
    let d_narrow = wa.sum_axis(Axis(1)).insert_axis(Axis(0));
    let d_wide = -wb.sum_axis(Axis(1)).insert_axis(Axis(0));
    for row in 0..3 {
        assert_all_close(
            net.input_grad("narrow")
                .unwrap()
                .slice(s![row..row + 1, ..]),
            d_narrow.view(),
            "∂Σy/∂narrow",
        );
        assert_all_close(
            net.input_grad("wide").unwrap().slice(s![row..row + 1, ..]),
            d_wide.view(),
            "∂Σy/∂wide",
        );
    }
    assert_eq!(
        input_layout(&net),
        [("wide".to_owned(), 0, 3), ("narrow".to_owned(), 3, 2)]
    );
}

#[test]
fn bill_by_hand() {
    network! {
        struct Bill: f64 {
            #[grad] price = input(1);
            #[grad] count = input(1);
            #[grad] rate = input(1);
            #[grad] shipping = input(1);
            won = mul(price, count);
            dollars = div(won, rate);
            add(dollars, shipping)
        }
    }
    let mut bill = Bill::default();
    let x = array![[6600.0, 2.0, 1100.0, 5.0], [100.0, 3.0, 50.0, 1.0]];
    let total = bill.forward(x.view()).unwrap().to_owned();
    assert_eq!(total, array![[17.0], [7.0]]);
    bill.backward_from(Array2::ones((2, 1)).view()).unwrap();
    let grad = |name| bill.input_grad(name).unwrap().to_owned();
    assert_all_close(
        grad("price").view(),
        array![[2.0 / 1100.0], [3.0 / 50.0]].view(),
        "price",
    );
    assert_all_close(grad("count").view(), array![[6.0], [2.0]].view(), "count");
    assert_all_close(
        grad("rate").view(),
        array![[-13200.0 / 1100.0 / 1100.0], [-300.0 / 2500.0]].view(),
        "rate",
    );
    assert_eq!(grad("shipping"), array![[1.0], [1.0]]);
}

// ---------------------------------------------------------------------------------------------
// backward_from

network! {
    /// No loss: `backward_from` is the only backward pass.
    struct Gate: f64 {
        #[grad] x = input(3);
        h = x -> affine(3, 4) -> tanh;
        g = x -> affine(3, 4) -> sigmoid;
        mul(h, g) -> affine(4, 2)
    }
}

#[test]
fn backward_from_ones_is_the_gradient_of_the_outputs_sum() {
    let mut net = Gate::new(Init::Xavier, 33);
    let x = random(3, 3, 34);
    net.forward(x.view()).unwrap();
    net.backward_from(Array2::ones((3, Gate::OUTPUT)).view())
        .unwrap();
    let analytic_params = param_grads(&net);
    let analytic_x = net.input_grad("x").unwrap().to_owned();
    let sum = |net: &mut Gate, x: ArrayView2<f64>| net.forward(x).unwrap().sum();

    let rel = compare_input_grad(
        "Σ mul(h, g) (no loss)",
        "x",
        &x,
        0,
        analytic_x.view(),
        &mut |x| sum(&mut net, x),
    );
    assert!(rel < TOLERANCE, "∂Σy/∂x: relative error {rel:.3e}");

    let mut report = Vec::new();
    for (name, analytic) in analytic_params {
        let (mut max_abs_diff, mut scale) = (0.0_f64, 0.0_f64);
        for (i, &a) in analytic.iter().enumerate() {
            let original = net.param(name).unwrap().value[i];
            net.param_mut(name).unwrap().value[i] = original + EPS;
            let plus = sum(&mut net, x.view());
            net.param_mut(name).unwrap().value[i] = original - EPS;
            let minus = sum(&mut net, x.view());
            net.param_mut(name).unwrap().value[i] = original;
            let numeric = (plus - minus) / (2.0 * EPS);
            max_abs_diff = max_abs_diff.max((a - numeric).abs());
            scale = scale.max(a.abs()).max(numeric.abs());
        }
        report.push(ParamCheck {
            name,
            len: analytic.len(),
            max_abs_diff,
            rel_error: max_abs_diff / scale,
        });
    }
    assert_close("Σ mul(h, g) (no loss)", &report);
}

#[test]
fn backward_from_the_loss_gradient_equals_backward() {
    let mut net = TwoBlocks::new(Init::Xavier, 35);
    let x = random(4, 3, 36);
    let t = random(4, 2, 37);
    net.gradient(x.view(), t.view()).unwrap();
    let by_backward = param_grads(&net);
    let x_by_backward = net.input_grad("x").unwrap().to_owned();

    // mse's gradient: (y − t) / n.
    let mut other = TwoBlocks::new(Init::Xavier, 35);
    let y = other.forward(x.view()).unwrap().to_owned();
    let dy = (&y - &t) / 4.0;
    other.backward_from(dy.view()).unwrap();
    let by_backward_from = param_grads(&other);
    for ((name, a), (other_name, b)) in by_backward.iter().zip(&by_backward_from) {
        assert_eq!(name, other_name);
        for (&a, &b) in a.iter().zip(b) {
            assert!(
                (a - b).abs() <= 1e-12 * a.abs().max(1.0),
                "{name}: {a} ≠ {b}"
            );
        }
    }
    assert_all_close(
        other.input_grad("x").unwrap(),
        x_by_backward.view(),
        "∂L/∂x",
    );
}

#[test]
fn backward_from_with_a_loss_network_after_loss() {
    // After `loss`, backward_from is allowed too, and overrides the loss's gradient.
    let mut net = AddAlone::new(Init::Std(1.0), 38);
    let x = random(2, 5, 39);
    let t = random(2, 4, 40);
    net.loss(x.view(), t.view()).unwrap();
    net.backward_from(Array2::ones((2, 4)).view()).unwrap();
    // ∂Σy/∂a = rows of Wa summed, for every sample.
    let wa = param_with_shape(&net, &[3, 4]);
    let expected = wa.sum_axis(Axis(1)).insert_axis(Axis(0));
    let da = net.input_grad("a").unwrap().to_owned();
    for row in da.rows() {
        assert_all_close(row.insert_axis(Axis(0)), expected.view(), "∂Σy/∂a");
    }
}

#[test]
fn backward_from_before_any_forward_pass_is_an_error() {
    let mut net = Gate::new(Init::Xavier, 41);
    let error = net.backward_from(Array2::ones((1, 2)).view()).unwrap_err();
    assert_eq!(error, Error::BackwardBeforeForward { network: "Gate" });
    assert_eq!(
        error.to_string(),
        "Gate has no forward pass to backpropagate: call forward or loss first (infer, predict, \
         accuracy and eval_loss keep nothing for a backward pass)"
    );
    // Nor does a failed forward pass count.
    assert!(net.forward(Array2::zeros((2, 4)).view()).is_err());
    assert_eq!(
        net.backward_from(Array2::ones((2, 2)).view()),
        Err(Error::BackwardBeforeForward { network: "Gate" })
    );
    // A network with a loss: the same.
    let mut trainable = TwoBlocks::default();
    assert_eq!(
        trainable.backward_from(Array2::ones((1, 2)).view()),
        Err(Error::BackwardBeforeForward {
            network: "TwoBlocks"
        })
    );
    assert_eq!(trainable.backward(), Err(Error::BackwardBeforeLoss));
}

#[test]
fn backward_from_with_a_wrong_shape_is_an_error() {
    let mut net = Gate::new(Init::Xavier, 42);
    net.forward(random(3, 3, 43).view()).unwrap();
    for (rows, cols) in [(3, 3), (2, 2), (4, 2), (3, 1), (0, 0)] {
        let error = net
            .backward_from(Array2::ones((rows, cols)).view())
            .unwrap_err();
        assert_eq!(
            error,
            Error::OutputGradShape {
                network: "Gate",
                expected: (3, 2),
                actual: (rows, cols),
            }
        );
    }
    assert_eq!(
        net.backward_from(Array2::ones((3, 1)).view())
            .unwrap_err()
            .to_string(),
        "the gradient for Gate's output must be (3, 2) (batch × outputs), but it is (3, 1)"
    );
    // A failed call leaves the network usable.
    net.backward_from(Array2::ones((3, 2)).view()).unwrap();
}

#[test]
fn forward_with_the_wrong_total_width_is_an_error() {
    let mut net = TwoInputs::default();
    assert_eq!(
        net.forward(Array2::zeros((2, 3)).view()).unwrap_err(),
        Error::InputWidth {
            network: "TwoInputs",
            expected: 5,
            actual: 3
        }
    );
}

// ---------------------------------------------------------------------------------------------
// input_grad

#[test]
fn input_grad_errors_name_the_input_and_list_those_with_gradients() {
    network! {
        struct Mixed: f64 {
            #[grad] price = input(1);
            plain = input(1);
            #[grad] count = input(1);
            won = mul(price, count);
            add(won, plain)
        }
    }
    let mut net = Mixed::default();
    net.forward(array![[3.0, 4.0, 5.0]].view()).unwrap();
    net.backward_from(array![[1.0]].view()).unwrap();
    assert_eq!(net.input_grad("price").unwrap(), array![[5.0]]);
    assert_eq!(net.input_grad("count").unwrap(), array![[3.0]]);

    for missing in ["plain", "nope", "won", ""] {
        let error = net.input_grad(missing).unwrap_err();
        assert_eq!(
            error,
            Error::NoInputGrad {
                network: "Mixed",
                name: missing.to_owned(),
                known: "price, count".to_owned(),
            }
        );
        assert_eq!(
            error.to_string(),
            format!(
                "Mixed keeps no gradient for an input named {missing:?}; inputs with a gradient: price, count"
            )
        );
    }

    // Without any `#[grad]`, the message says how to get one.
    let error = Residual::default().input_grad("x").unwrap_err();
    assert_eq!(
        error.to_string(),
        "Residual keeps no gradient for an input named \"x\"; inputs with a gradient: none (mark an input `#[grad]` to get one)"
    );
}

#[test]
fn input_grad_of_an_input_that_is_the_output() {
    network! {
        struct Identity: f64 {
            #[grad] x = input(3);
            x
        }
    }
    let mut net = Identity::default();
    let x = random(2, 3, 44);
    assert_eq!(net.forward(x.view()).unwrap(), x);
    let dy = random(2, 3, 45);
    net.backward_from(dy.view()).unwrap();
    assert_eq!(net.input_grad("x").unwrap(), dy);
}

#[test]
fn input_grad_of_an_input_that_feeds_the_loss() {
    network! {
        struct Direct: f64 {
            #[grad] x = input(2);
            x -> mse
        }
    }
    let mut net = Direct::default();
    let x = array![[1.0, 2.0], [3.0, 5.0]];
    let t = array![[0.0, 1.0], [1.0, 1.0]];
    net.gradient(x.view(), t.view()).unwrap();
    assert_eq!(net.input_grad("x").unwrap(), (&x - &t) / 2.0);
}

// ---------------------------------------------------------------------------------------------
// for_each_value and dot_with_values

#[test]
fn for_each_value_visits_inputs_in_declaration_order_then_every_node() {
    network! {
        struct Visited: f64 {
            out = concat(h, g) -> affine(5, 2);
            g = y -> sigmoid;
            h = x -> affine(3, 3) -> relu;
            #[grad] x = input(3);
            y = input(2);
            out -> mse
        }
    }
    let mut net = Visited::new(Init::Xavier, 46);
    let x = random(2, 5, 47);
    let t = random(2, 2, 48);
    // `gradient` reads the batch in place: afterwards the inputs show no rows.
    net.gradient(x.view(), t.view()).unwrap();
    let mut input_rows = Vec::new();
    net.for_each_value(&mut |v| {
        if v.op.starts_with("input") {
            input_rows.push(v.value.nrows());
        }
    });
    assert_eq!(input_rows, [0, 0]);
    // `loss` and `backward` keep it.
    net.loss(x.view(), t.view()).unwrap();
    net.backward().unwrap();

    /// What `for_each_value` showed of one value.
    struct Seen {
        name: String,
        op: String,
        value: Array2<f64>,
        grad: Option<Array2<f64>>,
    }
    let mut seen = Vec::new();
    net.for_each_value(&mut |v| {
        seen.push(Seen {
            name: v.name.to_owned(),
            op: v.op.to_owned(),
            value: v.value.to_owned(),
            grad: v.grad.map(|g| g.to_owned()),
        })
    });
    let summary: Vec<(&str, &str, bool)> = seen
        .iter()
        .map(|v| (v.name.as_str(), v.op.as_str(), v.grad.is_some()))
        .collect();
    println!("{summary:?}");

    // The inputs first, in declaration order, with their own columns.
    assert_eq!(summary[0], ("x", "input(3)", true));
    assert_eq!(summary[1], ("y", "input(2)", false));
    assert_eq!(seen[0].value, x.slice(s![.., 0..3]));
    assert_eq!(seen[1].value, x.slice(s![.., 3..5]));
    assert_eq!(
        seen[0].grad.as_ref().unwrap(),
        &net.input_grad("x").unwrap()
    );

    // Then every node but the loss, each once, after the values it reads: named values by their
    // names, the others by their node's (`affine0`).
    let mut nodes: Vec<(&str, &str, bool)> = summary[2..].to_vec();
    let position = |name: &str| summary.iter().position(|v| v.0 == name).unwrap();
    assert!(position("x") < position("affine0") && position("affine0") < position("h"));
    assert!(position("y") < position("g"));
    assert!(position("h") < position("concat0") && position("g") < position("concat0"));
    assert!(position("concat0") < position("out"));
    nodes.sort();
    let mut expected = vec![
        ("affine0", "affine(3, 3)", true),
        // Named: its gradient is kept.
        ("h", "relu", true),
        // `g` depends on no parameter and no `#[grad]` input: backward skips it.
        ("g", "sigmoid", false),
        // Unnamed: its gradient is used up within the backward pass, and its storage is
        // `affine0`'s by the end of it: not shown.
        ("concat0", "concat(h, g)", false),
        ("out", "affine(5, 2)", true),
    ];
    expected.sort();
    assert_eq!(nodes, expected);
    assert!(
        !summary.iter().any(|v| v.1 == "mse"),
        "the loss has no value"
    );

    // The values are those of the forward pass: `out` is what forward returns.
    let out = seen.iter().find(|v| v.name == "out").unwrap();
    assert_eq!(out.value, net.forward(x.view()).unwrap());
}

#[test]
fn dot_with_values_labels_edges_with_values_and_gradients() {
    network! {
        struct Bill: f64 {
            #[grad] price = input(1);
            #[grad] count = input(1);
            won = mul(price, count);
            rate = input(1);
            div(won, rate)
        }
    }
    let mut bill = Bill::default();
    // Before any pass the edges have no values.
    let before = bill.dot_with_values();
    println!("{before}");
    assert!(before.contains("[label=\"-\"]"), "{before}");

    bill.forward(array![[6600.0, 2.0, 1100.0]].view()).unwrap();
    bill.backward_from(array![[1.0]].view()).unwrap();
    let dot = bill.dot_with_values();
    println!("{dot}");
    assert!(dot.starts_with("digraph \"Bill\" {"), "{dot}");
    // price → won: 6600, ∂ = count / rate; count → won: 2, ∂ = price / rate = 6.
    assert!(dot.contains("[label=\"6600\\n∂ 0.0018182\"]"), "{dot}");
    assert!(dot.contains("[label=\"2\\n∂ 6\"]"), "{dot}");
    // won → div: 13200, ∂ = 1 / rate; rate has no gradient.
    assert!(dot.contains("[label=\"13200\\n∂ 0.00090909\"]"), "{dot}");
    assert!(dot.contains("[label=\"1100\"]"), "{dot}");
    // The output: 12 dollars, ∂ 1.
    assert!(dot.contains("-> output [label=\"12\\n∂ 1\"]"), "{dot}");
    // The same graph as DOT, with values instead of shapes.
    let edges = |dot: &str| dot.lines().filter(|l| l.contains("->")).count();
    assert_eq!(edges(&dot), edges(Bill::DOT));
    assert_eq!(edges(&dot), 5);
    assert!(Bill::DOT.contains("[label=\"n × 1\"]"));
    for name in ["price", "count", "rate", "won = mul0"] {
        assert!(dot.contains(name), "{name} in {dot}");
    }
}

// ---------------------------------------------------------------------------------------------
// Batches of different sizes, and the order of parameters.

#[test]
fn buffers_follow_the_batch_size() {
    let x4 = random(4, 2, 49);
    let t4 = random(4, 2, 50);
    let x2 = random(2, 2, 51);
    let t2 = random(2, 2, 52);
    let mut net = SameValueEverywhere::new(Init::Xavier, 53);
    net.gradient(x4.view(), t4.view()).unwrap();
    let loss = net.gradient(x2.view(), t2.view()).unwrap();
    assert_eq!(net.input_grad("x").unwrap().dim(), (2, 2));

    let mut fresh = SameValueEverywhere::new(Init::Xavier, 53);
    assert_eq!(fresh.gradient(x2.view(), t2.view()).unwrap(), loss);
    assert_eq!(param_grads(&net), param_grads(&fresh));
    assert_eq!(net.input_grad("x").unwrap(), fresh.input_grad("x").unwrap());
    // A forward pass alone does not make `backward` possible.
    net.forward(x4.view()).unwrap();
    assert_eq!(net.backward(), Err(Error::BackwardBeforeLoss));
}

network! {
    struct WrittenOrder: f64 {
        x = input(4);
        h = x -> affine(4, 5);
        g = x -> affine(4, 6);
        concat(h, g) -> affine(11, 2) -> mse
    }
}

/// The trait documents `PARAM_NAMES` and `for_each_param` as "in declaration order", and
/// checkpoints store parameters by name; but layers are numbered in petgraph's topological order,
/// so here `g`'s affine, written second, is `affine0`.
#[test]
fn parameters_are_numbered_in_the_order_written() {
    let net = WrittenOrder::default();
    let shapes: Vec<(&str, Vec<usize>)> = WrittenOrder::PARAM_NAMES
        .iter()
        .map(|&name| (name, net.param(name).unwrap().shape.to_vec()))
        .collect();
    println!("{shapes:?}");
    assert_eq!(
        shapes,
        [
            ("affine0.weight", vec![4, 5]),
            ("affine0.bias", vec![5]),
            ("affine1.weight", vec![4, 6]),
            ("affine1.bias", vec![6]),
            ("affine2.weight", vec![11, 2]),
            ("affine2.bias", vec![2]),
        ]
    );
}

network! {
    /// A chain with a parameterless layer between two affine ones, and a branch of two paths.
    struct ChainThenBranch: f64 {
        x = input(3);
        h = x -> affine(3, 4) -> tanh;
        p = h -> affine(4, 2);
        q = h -> affine(4, 2);
        add(p, q) -> mse
    }
}

/// What `gradient_with` showed of each parameter when it called: names in calling order, and
/// the gradients as they were then.
fn seen_by_gradient_with<N>(net: &mut N, x: &Array2<f64>) -> Vec<(&'static str, Vec<f64>)>
where
    N: for<'t> Trainable<Elem = f64, Targets<'t> = ArrayView2<'t, f64>>,
{
    let t = random(x.nrows(), N::OUTPUT, 2);
    let mut seen = Vec::new();
    net.gradient_with(x.view(), t.view(), &mut |p| {
        seen.push((p.name, p.grad.to_vec()))
    })
    .unwrap();
    seen
}

#[test]
fn gradient_with_shows_each_parameter_once_when_its_gradient_is_final() {
    // A fresh network's gradients are zero: a parameter shown before its node's backward pass
    // would show zeros, not the gradient that the pass leaves.
    let mut net = ChainThenBranch::new(Init::Std(1.0), 3);
    let seen = seen_by_gradient_with(&mut net, &random(5, 3, 1));
    let mut names: Vec<_> = seen.iter().map(|(name, _)| *name).collect();
    // Both heads before the shared layer, which the chain rule reaches last.
    assert_eq!(&names[4..], ["affine0.weight", "affine0.bias"]);
    names.sort_unstable();
    let mut all = ChainThenBranch::PARAM_NAMES.to_vec();
    all.sort_unstable();
    assert_eq!(names, all, "every parameter exactly once");
    let fin = param_grads(&net);
    for (name, grad) in &seen {
        let (_, after) = fin.iter().find(|(n, _)| n == name).unwrap();
        assert_eq!(
            grad, after,
            "{name}: the gradient shown is the one the pass leaves"
        );
        assert!(
            grad.iter().any(|&g| g != 0.0),
            "{name}: a gradient was computed"
        );
    }
}

#[test]
fn gradient_with_computes_what_gradient_does() {
    let x = random(5, 3, 1);
    let mut with = ChainThenBranch::new(Init::Std(1.0), 3);
    seen_by_gradient_with(&mut with, &x);
    let mut plain = ChainThenBranch::new(Init::Std(1.0), 3);
    let t = random(x.nrows(), ChainThenBranch::OUTPUT, 2);
    plain.gradient(x.view(), t.view()).unwrap();
    assert_eq!(param_grads(&with), param_grads(&plain));
}
