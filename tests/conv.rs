//! Convolutions, pooling and flatten in whole networks: gradient checks in f64 (every op alone and
//! composed, strides and pads, several channel counts, residual and concatenated images), and the
//! generated consts of the book's convolutional net derived by hand.

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

fn output_width<N: Network>(_: &N) -> usize {
    N::OUTPUT
}

#[test]
fn conv_alone() {
    let net = network!(f64: input(1, 5, 5) -> conv2d(1, 2, 3) -> flatten -> mse);
    check_mse("conv2d(1, 2, 3)", net, 3);
}

#[test]
fn conv_with_stride_2_and_pad_1() {
    let net =
        network!(f64: input(2, 7, 7) -> conv2d(2, 3, 3, stride = 2, pad = 1) -> flatten -> mse);
    check_mse("conv2d(2, 3, 3, stride = 2, pad = 1)", net, 3);
}

#[test]
fn conv_on_three_channels_with_a_rectangular_image() {
    let net = network!(f64: input(3, 6, 4) -> conv2d(3, 4, 3, pad = 1) -> flatten -> mse);
    check_mse("conv2d(3, 4, 3, pad = 1) on 3×6×4", net, 2);
}

#[test]
fn conv_that_drops_an_edge_when_told_to() {
    let net = network!(f64: input(1, 6, 6) -> conv2d(1, 2, 3, stride = 2, exact = false) -> flatten -> mse);
    // (6 − 3) / 2 + 1 = 2 rows and columns of each of the 2 filters: the last row and column
    // are left out.
    assert_eq!(output_width(&net), 2 * 2 * 2);
    check_mse("conv2d(.., stride = 2, exact = false)", net, 2);
}

#[test]
fn the_input_gradient_of_a_second_conv() {
    // The second convolution's backward pass computes its input's gradient; the first's does not.
    let net = network!(f64: input(1, 6, 6) -> conv2d(1, 2, 3) -> tanh -> conv2d(2, 3, 3, pad = 1) -> flatten -> mse);
    check_mse("conv -> tanh -> conv", net, 3);
}

#[test]
fn max_pool_alone() {
    let net = network!(f64: input(2, 4, 6) -> conv2d(2, 2, 1) -> max_pool(2) -> flatten -> mse);
    check_mse("max_pool(2)", net, 3);
}

#[test]
fn max_pool_with_overlapping_windows_and_padding() {
    let net = network!(f64: input(1, 5, 5) -> conv2d(1, 2, 1) -> max_pool(3, stride = 2, pad = 1) -> flatten -> mse);
    check_mse("max_pool(3, stride = 2, pad = 1)", net, 3);
}

#[test]
fn avg_pool_alone() {
    let net = network!(f64: input(2, 4, 4) -> conv2d(2, 2, 1) -> avg_pool(2) -> flatten -> mse);
    check_mse("avg_pool(2)", net, 3);
}

#[test]
fn avg_pool_with_padding() {
    let net = network!(f64: input(1, 5, 5) -> conv2d(1, 1, 1) -> avg_pool(3, stride = 2, pad = 1) -> flatten -> mse);
    check_mse("avg_pool(3, stride = 2, pad = 1)", net, 3);
}

#[test]
fn an_affine_reads_an_image_as_features() {
    let net = network!(f64: input(2, 3, 3) -> conv2d(2, 2, 1) -> affine(18, 3) -> mse);
    check_mse("conv -> affine(18, 3)", net, 3);
}

#[test]
fn the_books_conv_net_in_small() {
    let net = network!(f64: input(1, 8, 8) -> conv2d(1, 3, 3) -> relu -> max_pool(2) -> affine(27, 5) -> relu -> affine(5, 3) -> softmax_cross_entropy);
    let mut net = net;
    let x = random(4, 64, 3);
    let t = classes(4, 3, 4);
    let report = gradcheck::check(&mut net, x.view(), &t, EPS).unwrap();
    assert_close("conv-relu-pool-affine-relu-affine", &report);
}

#[test]
fn a_residual_block_of_convolutions() {
    let net = network! {
        f64:
        x = input(2, 5, 5);
        h = x -> conv2d(2, 2, 3, pad = 1) -> tanh -> conv2d(2, 2, 3, pad = 1);
        add(h, x) -> relu -> flatten -> affine(50, 3) -> mse
    };
    check_mse("residual block", net, 3);
}

#[test]
fn images_joined_along_their_channels() {
    let net = network! {
        f64:
        x = input(1, 6, 6);
        a = x -> conv2d(1, 2, 3, pad = 1);
        b = x -> conv2d(1, 3, 3, pad = 1);
        concat(a, b) -> max_pool(2) -> affine(45, 2) -> mse
    };
    check_mse("concat of two convolutions", net, 3);
}

#[test]
fn sgd_step_on_a_conv_net_equals_gradient_then_the_update() {
    // `sgd_step` folds the update into the backward pass; it must match gradients, then
    // W ← W − η·dW by hand.
    network! {
        struct Net: f64 {
            input(1, 6, 6) -> conv2d(1, 2, 3) -> relu -> max_pool(2) -> affine(8, 2) -> mse
        }
    }
    let (x, t) = (random(3, 36, 5), random(3, 2, 6));
    let lr = 0.05;
    let mut fused = Net::new(Init::Xavier, 7);
    let mut by_hand = Net::new(Init::Xavier, 7);
    fused.sgd_step(x.view(), t.view(), lr).unwrap();
    by_hand.gradient(x.view(), t.view()).unwrap();
    by_hand.for_each_param_mut(&mut |p| {
        for (v, g) in p.value.iter_mut().zip(p.grad.iter()) {
            *v -= lr * g;
        }
    });
    for name in Net::PARAM_NAMES {
        let (a, b) = (fused.param(name).unwrap(), by_hand.param(name).unwrap());
        for (a, b) in a.value.iter().zip(b.value) {
            assert!((a - b).abs() < 1e-12, "{name}: {a} against {b}");
        }
    }
}

network! {
    /// The book's SimpleConvNet.
    struct SimpleConvNet {
        input(1, 28, 28) -> conv2d(1, 30, 5) -> relu -> max_pool(2)
            -> affine(4320, 100) -> relu -> affine(100, 10) -> softmax_cross_entropy
    }
}

#[test]
fn consts_of_the_books_conv_net() {
    // conv: 30 filters × (1·5·5) weights + 30 biases; then 4320·100 + 100 and 100·10 + 10.
    assert_eq!(
        SimpleConvNet::PARAMS,
        30 * 25 + 30 + 4320 * 100 + 100 + 100 * 10 + 10
    );
    assert_eq!(SimpleConvNet::INPUT, 784);
    assert_eq!(SimpleConvNet::OUTPUT, 10);
    // Forward: the conv's 30·24·24 = 17,280 outputs at 25 multiply-adds and a bias each; the ReLU
    // one per element; the pool 4 comparisons per each of its 4,320 outputs; the affines
    // 2·in·out + out; the ReLU 100 (the loss is not part of the forward pass).
    let conv = 2 * 25 * 17_280 + 17_280;
    let forward = conv + 17_280 + 4 * 4_320 + (2 * 4_320 * 100 + 100) + 100 + (2 * 100 * 10 + 10);
    assert_eq!(SimpleConvNet::FLOPS_FORWARD, forward);
    assert_eq!(SimpleConvNet::PARAM_NAMES[0], "conv2d0.weight");
    assert!(SimpleConvNet::TOPOLOGY.starts_with("v0 = input(1, 28, 28); v1 = conv2d(in = 1, out = 30, kernel = 5, stride = 1, pad = 0, exact = true)(v0)"), "{}", SimpleConvNet::TOPOLOGY);
}
