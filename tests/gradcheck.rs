//! Gradient checks: backprop against central differences, in f64, for every op alone and for
//! composed networks. Run with `--nocapture` to see the figures.

use chainrule::gradcheck;
use chainrule::prelude::*;

mod common;
use common::*;

/// Checks a network ending in `mse` on random inputs and targets.
fn check_mse<N>(name: &str, mut net: N, batch: usize)
where
    N: for<'t> Trainable<Elem = f64, Targets<'t> = chainrule::ndarray::ArrayView2<'t, f64>>,
{
    let x = random(batch, N::INPUT, 1);
    let t = random(batch, N::OUTPUT, 2);
    let report = gradcheck::check(&mut net, x.view(), t.view(), EPS).unwrap();
    assert_eq!(report.len(), N::PARAM_NAMES.len());
    assert_close(name, &report);
}

// Every op alone (behind the one affine that gives it something to differentiate).

#[test]
fn affine_alone() {
    check_mse("affine -> mse", network!(f64: affine(3, 2) -> mse), 4);
}

#[test]
fn relu_alone() {
    let net = network!(f64: affine(3, 5) -> relu -> mse);
    check_mse("affine -> relu -> mse", net, 4);
}

#[test]
fn sigmoid_alone() {
    let net = network!(f64: affine(3, 5) -> sigmoid -> mse);
    check_mse("affine -> sigmoid -> mse", net, 4);
}

#[test]
fn tanh_alone() {
    let net = network!(f64: affine(3, 5) -> tanh -> mse);
    check_mse("affine -> tanh -> mse", net, 4);
}

#[test]
fn leaky_relu_alone() {
    // Xavier with a wide spread of inputs: both sides of 0 are reached.
    let net = network!(f64: affine(3, 6) -> leaky_relu(0.1) -> mse);
    check_mse("affine -> leaky_relu(0.1) -> mse", net, 5);
}

#[test]
fn leaky_relu_default_alpha() {
    let net = network!(f64: affine(3, 6) -> leaky_relu -> mse);
    check_mse("affine -> leaky_relu -> mse", net, 5);
}

#[test]
fn elu_alone() {
    let net = network!(f64: affine(3, 6) -> elu(0.7) -> mse);
    check_mse("affine -> elu(0.7) -> mse", net, 5);
}

#[test]
fn softmax_alone() {
    // Softmax as an output layer, under a loss that is not its own.
    let net = network!(f64: affine(3, 4) -> softmax -> mse);
    check_mse("affine -> softmax -> mse", net, 5);
}

#[test]
fn softmax_cross_entropy_alone() {
    let net = network!(f64: affine(3, 4) -> softmax_cross_entropy);
    check_classes("affine -> softmax_ce", net, 5);
}

#[test]
fn softmax_with_loss_alias() {
    let net = network!(f64: affine(3, 4) -> softmax_with_loss);
    check_classes("affine -> softmax_with_loss", net, 5);
}

// Composed networks, with initialisations large enough for every unit to matter.

network! {
    /// The book's two-layer net at full MNIST size.
    struct Book: f64 {
        affine(784, 50) -> relu -> affine(50, 10) -> softmax_cross_entropy
    }
}

#[test]
fn book_two_layer_net_784_50_10() {
    check_classes("784-50-10 relu softmax_ce", Book::new(Init::He, 7), 3);
}

network! {
    struct Deep: f64 {
        affine(5, 8) -> tanh -> affine(8, 8) -> sigmoid -> affine(8, 6) -> relu
            -> affine(6, 3) -> softmax_with_loss
    }
}

#[test]
fn deep_mixed_activations() {
    check_classes("5-8-8-6-3 mixed", Deep::new(Init::Xavier, 11), 6);
}

network! {
    struct Regression: f64 {
        affine(4, 6) -> relu -> affine(6, 6) -> relu -> affine(6, 2) -> mse
    }
}

#[test]
fn relu_regression() {
    check_mse("4-6-6-2 relu mse", Regression::new(Init::He, 5), 5);
}

network! {
    struct Sigmoids: f64 {
        affine(3, 4) -> sigmoid -> affine(4, 4) -> sigmoid -> affine(4, 2) -> sigmoid -> mse
    }
}

#[test]
fn stacked_sigmoids() {
    check_mse("3-4-4-2 sigmoid mse", Sigmoids::new(Init::Std(1.0), 9), 4);
}

network! {
    /// Every new activation between parameters.
    struct NewActivations: f64 {
        affine(4, 6) -> leaky_relu(0.2) -> affine(6, 5) -> elu -> affine(5, 4) -> softmax
            -> affine(4, 3) -> softmax_cross_entropy
    }
}

#[test]
fn new_activations_composed() {
    check_classes(
        "4-6-5-4-3 leaky elu softmax",
        NewActivations::new(Init::Xavier, 12),
        6,
    );
}

// `#[gradcheck]`: the macro generates the test (`__gradcheck_Generated::gradients_match_...`).

network! {
    /// The book's net in `f32`; its twin in `f64` is checked.
    #[gradcheck]
    pub struct GeneratedBook {
        affine(784, 50) -> relu -> affine(50, 10) -> softmax_cross_entropy
    }
}

network! {
    #[gradcheck]
    struct GeneratedGraph: f64 {
        x = input(3);
        h = x -> affine(3, 4) -> elu;
        r = h -> affine(4, 4) -> tanh;
        add(h, r) -> affine(4, 2) -> mse
    }
}

#[test]
fn generated_gradient_checks_compile_and_leave_the_network_as_written() {
    // The attribute adds a test and nothing else: the network is still `f32`.
    let mut net = GeneratedBook::default();
    let x = chainrule::ndarray::Array2::<f32>::zeros((1, 784));
    assert_eq!(net.forward(x.view()).unwrap().ncols(), 10);
    assert_eq!(GeneratedGraph::INPUT, 3);
}

#[test]
#[should_panic(expected = "backprop and central differences disagree")]
fn the_generated_check_fails_on_a_wrong_gradient() {
    chainrule::__private::generated_test_values(OffByOnePercent(
        network!(f64: affine(2, 3) -> tanh -> mse),
    ));
}

/// A network whose backward is wrong by 1%: the checker must notice.
struct OffByOnePercent<N>(N);

impl<N: Network> Network for OffByOnePercent<N> {
    type Elem = N::Elem;
    const NAME: &'static str = N::NAME;
    const INPUT: usize = N::INPUT;
    const OUTPUT: usize = N::OUTPUT;
    const PARAMS: usize = N::PARAMS;
    const PARAM_NAMES: &'static [&'static str] = N::PARAM_NAMES;
    const DOT: &'static str = N::DOT;
    const TOPOLOGY: &'static str = N::TOPOLOGY;
    const GRAPH: chainrule::graph::Graph = N::GRAPH;
    const PARAM_BYTES: usize = N::PARAM_BYTES;
    const ACTIVATION_BYTES_INFERENCE: usize = N::ACTIVATION_BYTES_INFERENCE;
    const ACTIVATION_BYTES_TRAINING: usize = N::ACTIVATION_BYTES_TRAINING;
    const FLOPS_FORWARD: u64 = N::FLOPS_FORWARD;
    const FLOPS_TRAINING: u64 = N::FLOPS_TRAINING;

    fn init(&mut self, init: Init, seed: u64) {
        self.0.init(init, seed)
    }
    fn forward(
        &mut self,
        x: chainrule::ndarray::ArrayView2<'_, N::Elem>,
    ) -> chainrule::Result<chainrule::ndarray::ArrayView2<'_, N::Elem>> {
        self.0.forward(x)
    }
    fn output(&self) -> chainrule::ndarray::ArrayView2<'_, N::Elem> {
        self.0.output()
    }
    fn backward_from(
        &mut self,
        dy: chainrule::ndarray::ArrayView2<'_, N::Elem>,
    ) -> chainrule::Result<()> {
        self.0.backward_from(dy)
    }
    fn param(&self, name: &str) -> chainrule::Result<chainrule::ParamRef<'_, N::Elem>> {
        self.0.param(name)
    }
    fn param_mut(&mut self, name: &str) -> chainrule::Result<chainrule::ParamMut<'_, N::Elem>> {
        self.0.param_mut(name)
    }
    fn for_each_param(&self, f: &mut dyn FnMut(chainrule::ParamRef<'_, N::Elem>)) {
        self.0.for_each_param(f)
    }
    fn for_each_param_mut(&mut self, f: &mut dyn FnMut(chainrule::ParamMut<'_, N::Elem>)) {
        self.0.for_each_param_mut(f)
    }
}

impl<N: Trainable<Elem = f64>> Trainable for OffByOnePercent<N> {
    type Targets<'t> = N::Targets<'t>;
    fn loss(
        &mut self,
        x: chainrule::ndarray::ArrayView2<'_, f64>,
        t: Self::Targets<'_>,
    ) -> chainrule::Result<f64> {
        self.0.loss(x, t)
    }
    fn backward(&mut self) -> chainrule::Result<()> {
        self.0.backward()?;
        self.0
            .for_each_param_mut(&mut |p| p.grad.iter_mut().for_each(|g| *g *= 1.01));
        Ok(())
    }
}

#[test]
fn gradcheck_notices_a_wrong_gradient() {
    let x = random(3, 2, 1);
    let t = random(3, 2, 2);
    let mut wrong = OffByOnePercent(network!(f64: affine(2, 2) -> tanh -> mse));
    let report = gradcheck::check(&mut wrong, x.view(), t.view(), EPS).unwrap();
    let worst = gradcheck::worst(&report);
    // max |1.01 g − g| / (1.01 max |g|) = 0.01 / 1.01.
    assert!(
        (worst - 0.01 / 1.01).abs() < 1e-6,
        "worst relative error {worst}"
    );
}
