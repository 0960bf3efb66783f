//! The layers with a training mode: batch normalisation and dropout. Gradient checks in f64 of
//! training passes (rank 1 and rank 3; dropout with its mask held fixed), what evaluation
//! computes and what it leaves alone, seeded masks, checkpoints of the running statistics, and
//! the book's chapter 6 experiment: a deep MLP learns faster with batch normalisation.

use chainrule::checkpoint;
use chainrule::data::{Batches, load_mnist};
use chainrule::gradcheck;
use chainrule::ndarray::{Array2, array};
use chainrule::prelude::*;
use chainrule::train::evaluate;

mod common;
use common::*;

/// Every buffer of a network (running statistics), by name.
fn buffers<N: Network>(net: &N) -> Vec<(&'static str, Vec<N::Elem>)> {
    let mut out = Vec::new();
    net.for_each_buffer(&mut |b| out.push((b.name, b.value.to_vec())));
    out
}

/// Every parameter's values, in order.
fn params<N: Network>(net: &N) -> Vec<Vec<N::Elem>> {
    let mut out = Vec::new();
    net.for_each_param(&mut |p| out.push(p.value.to_vec()));
    out
}

/// A bias right before a batch normalisation cancels out (the mean subtracts it): its gradient
/// is 0, and both methods' values are rounding noise, whose relative error means nothing. Checks
/// that they are that small, and the rest of `report` as usual.
fn assert_close_but_cancelled(network: &str, report: &[gradcheck::ParamCheck], cancelled: &[&str]) {
    let (zero, rest): (Vec<_>, Vec<_>) = report
        .iter()
        .cloned()
        .partition(|check| cancelled.contains(&check.name));
    assert_eq!(zero.len(), cancelled.len());
    for check in &zero {
        assert!(
            check.max_abs_diff < 1e-9,
            "{network}: {} should have no gradient: {check:?}",
            check.name
        );
    }
    assert_close(network, &rest);
}

#[test]
fn batchnorm_on_features_in_training_mode() {
    let mut net =
        network!(f64: affine(5, 4) -> batchnorm -> relu -> affine(4, 3) -> softmax_cross_entropy);
    let (x, t) = (random(6, 5, 3), classes(6, 3, 4));
    let report = gradcheck::check(&mut net, x.view(), &t, EPS).unwrap();
    assert_close_but_cancelled("affine → batchnorm → relu", &report, &["affine0.bias"]);
}

#[test]
fn batchnorm_on_channels_in_training_mode() {
    let mut net = network!(f64:
        input(2, 5, 5) -> conv2d(2, 3, 3, pad = 1) -> batchnorm -> relu -> max_pool(2, exact = false)
            -> flatten -> affine(12, 3) -> softmax_cross_entropy
    );
    let (x, t) = (random(4, 50, 5), classes(4, 3, 6));
    let report = gradcheck::check(&mut net, x.view(), &t, EPS).unwrap();
    assert_close_but_cancelled("conv → batchnorm → relu → pool", &report, &["conv2d0.bias"]);
}

#[test]
fn batchnorm_first_with_its_own_options() {
    // On the network's input: the convolution's weights see the normalisation's input gradient.
    let net = network!(f64:
        input(3, 2, 2) -> batchnorm(momentum = 0.5, eps = 1e-3) -> conv2d(3, 2, 1) -> relu
            -> flatten -> affine(8, 3) -> softmax_cross_entropy
    );
    check_classes("batchnorm → conv", net, 5);
}

#[test]
fn dropout_with_its_mask_held_fixed() {
    let net = network!(f64:
        affine(6, 8) -> relu -> dropout(0.5) -> affine(8, 3) -> dropout(0.25) -> softmax_cross_entropy
    );
    check_classes("affine → dropout → affine → dropout", net, 5);
}

network! {
    struct Normed {
        input(4) -> affine(4, 6) -> batchnorm -> relu -> dropout(0.5) -> affine(6, 3)
            -> softmax_cross_entropy
    }
}

fn batch() -> (Array2<f32>, Vec<usize>) {
    let x = random(8, 4, 21).mapv(|v| v as f32);
    (x, classes(8, 3, 22))
}

#[test]
fn evaluation_leaves_the_running_statistics_and_the_mask_generator_alone() {
    let (x, t) = batch();
    let train = |net: &mut Normed| {
        for _ in 0..3 {
            net.sgd_step(x.view(), &t, 0.1).unwrap();
        }
    };
    let mut plain = Normed::new(Init::He, 3);
    train(&mut plain);
    train(&mut plain);

    let mut evaluated = Normed::new(Init::He, 3);
    train(&mut evaluated);
    let before = buffers(&evaluated);
    evaluated.forward(x.view()).unwrap();
    evaluated
        .backward_from(Array2::ones((8, 3)).view())
        .unwrap();
    evaluated.infer(x.view()).unwrap();
    evaluated.predict(x.view()).unwrap();
    evaluated.accuracy(x.view(), &t).unwrap();
    evaluated.eval_loss(x.view(), &t).unwrap();
    assert_eq!(
        buffers(&evaluated),
        before,
        "evaluation changed the running statistics"
    );
    train(&mut evaluated);
    // Had evaluation drawn a mask, the later training steps would have dropped other units.
    assert_eq!(params(&evaluated), params(&plain));
    assert_eq!(buffers(&evaluated), buffers(&plain));
}

#[test]
fn training_moves_the_running_statistics_and_draws_a_new_mask_each_pass() {
    let (x, t) = batch();
    let mut net = Normed::new(Init::He, 3);
    let start = buffers(&net);
    assert_eq!(start[0].0, "batchnorm0.running_mean");
    assert_eq!(start[1].0, "batchnorm0.running_var");
    assert_eq!(
        (start[0].1.clone(), start[1].1.clone()),
        (vec![0.0; 6], vec![1.0; 6])
    );
    let first = net.loss(x.view(), &t).unwrap();
    assert_ne!(
        buffers(&net),
        start,
        "a training pass moves the running statistics"
    );
    let second = net.loss(x.view(), &t).unwrap();
    assert_ne!(first, second, "the same batch, another mask");
    // Evaluation is deterministic and the same as the trait's default would be.
    let a = net.eval_loss(x.view(), &t).unwrap();
    let b = net.eval_loss(x.view(), &t).unwrap();
    assert_eq!(a, b);
}

#[test]
fn the_same_seed_gives_the_same_run_bit_for_bit() {
    let (x, t) = batch();
    let run = |seed: u64| {
        let mut net = Normed::new(Init::He, seed);
        let losses: Vec<f32> = (0..5)
            .map(|_| net.sgd_step(x.view(), &t, 0.1).unwrap())
            .collect();
        (losses, params(&net))
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5).0, run(6).0);
    // `seed_masks` restarts the masks alone: the same loss twice.
    let mut net = Normed::new(Init::He, 5);
    net.seed_masks(9);
    let first = net.loss(x.view(), &t).unwrap();
    net.seed_masks(9);
    assert_eq!(net.loss(x.view(), &t).unwrap(), first);
}

#[test]
fn evaluation_normalises_with_the_running_statistics_and_drops_nothing() {
    let mut net = network!(input(3) -> batchnorm(momentum = 1.0) -> dropout(0.5) -> mse);
    let x = array![[1.0f32, 10.0, -3.0], [3.0, 20.0, -3.0], [5.0, 30.0, -3.0]];
    let t = Array2::zeros((3, 3));
    // Training: the batch's statistics (γ = 1, β = 0: zero mean per feature), half dropped and
    // the rest doubled.
    net.loss(x.view(), t.view()).unwrap();
    let y = net.output().to_owned();
    for v in y.iter() {
        let undropped = [0.0, 1.0, 1.224_743_8];
        assert!(
            undropped.iter().any(|u| (v.abs() - 2.0 * u).abs() < 1e-4),
            "{v} is not a normalised value, doubled, or 0"
        );
    }
    // With momentum 1 the running statistics are the batch's: mean (3, 20, −3), unbiased
    // variance (4, 100, 0).
    let stats = buffers(&net);
    assert_eq!(stats[0].1, vec![3.0, 20.0, -3.0]);
    assert_eq!(stats[1].1, vec![4.0, 100.0, 0.0]);
    let y = net.forward(array![[5.0f32, 10.0, -3.0]].view()).unwrap();
    let expected = [
        2.0 / (4.0f32 + 1e-5).sqrt(),
        -10.0 / (100.0f32 + 1e-5).sqrt(),
        0.0,
    ];
    for (v, e) in y.iter().zip(expected) {
        assert!((v - e).abs() < 1e-5, "{v} ≠ {e}");
    }
}

#[test]
fn backward_from_after_forward_differentiates_the_evaluation_pass() {
    // After `forward` (evaluation), batchnorm is the affine map γ·(x − r)/√(v + ε) + β: its input
    // gradient is γ/√(v + ε) whatever the batch.
    network! {
        struct Grad: f64 {
            #[grad] x = input(2);
            x -> batchnorm -> mse
        }
    }
    let mut net = Grad::new(Init::He, 0);
    net.loss(
        array![[0.0, 1.0], [2.0, 5.0]].view(),
        Array2::zeros((2, 2)).view(),
    )
    .unwrap();
    let var: Vec<f64> = buffers(&net)[1].1.clone();
    net.forward(array![[7.0, -1.0]].view()).unwrap();
    net.backward_from(array![[1.0, 1.0]].view()).unwrap();
    let dx = net.input_grad("x").unwrap();
    for (d, v) in dx.iter().zip(var) {
        assert!((d - 1.0 / (v + 1e-5).sqrt()).abs() < 1e-12);
    }
    // `infer` keeps nothing to differentiate.
    net.infer(array![[7.0, -1.0]].view()).unwrap();
    assert!(net.backward_from(array![[1.0, 1.0]].view()).is_err());
}

#[test]
fn checkpoints_hold_the_running_statistics() {
    let (x, t) = batch();
    let mut net = Normed::new(Init::He, 3);
    for _ in 0..4 {
        net.sgd_step(x.view(), &t, 0.1).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("normed.safetensors");
    checkpoint::save(&net, &path).unwrap();
    let mut loaded = Normed::new(Init::He, 4);
    assert_ne!(buffers(&loaded), buffers(&net));
    checkpoint::load(&mut loaded, &path).unwrap();
    assert_eq!(buffers(&loaded), buffers(&net));
    assert_eq!(params(&loaded), params(&net));
    let scores = |net: &mut Normed| net.infer(x.view()).unwrap().to_owned();
    assert_eq!(scores(&mut loaded), scores(&mut net));
}

network! {
    struct Plain {
        affine(784, 100) -> relu -> affine(100, 100) -> relu -> affine(100, 100) -> relu
            -> affine(100, 100) -> relu -> affine(100, 100) -> relu -> affine(100, 10)
            -> softmax_cross_entropy
    }
}

network! {
    struct WithBatchNorm {
        affine(784, 100) -> batchnorm -> relu -> affine(100, 100) -> batchnorm -> relu
            -> affine(100, 100) -> batchnorm -> relu -> affine(100, 100) -> batchnorm -> relu
            -> affine(100, 100) -> batchnorm -> relu -> affine(100, 10) -> softmax_cross_entropy
    }
}

/// The loss on the training images after `epochs` of SGD (lr 0.01, batch 100), in evaluation mode.
fn book_ch06<N>(mut net: N, epochs: usize) -> f64
where
    N: for<'t> Trainable<Elem = f32, Targets<'t> = &'t [usize]>,
{
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");
    let train = load_mnist(dir).unwrap().train.take(1000);
    let mut batches = Batches::new(&train, 100, 1).unwrap();
    for _ in 0..epochs {
        while let Some((x, t)) = batches.next_batch() {
            net.sgd_step(x, t, 0.01).unwrap();
        }
    }
    evaluate(&mut net, &train, 100).unwrap().loss
}

#[test]
fn the_books_deep_mlp_learns_faster_with_batch_normalisation() {
    // The book's figure 6-18: 1,000 images, weights drawn with std 0.01 (the book's default).
    let (epochs, init) = (20, Init::Std(0.01));
    let plain = book_ch06(Plain::new(init, 1), epochs);
    let normed = book_ch06(WithBatchNorm::new(init, 1), epochs);
    println!("loss after {epochs} epochs: {plain:.4} without batchnorm, {normed:.4} with");
    assert!(
        normed < 0.5 * plain,
        "with batchnorm {normed:.4}, without {plain:.4}: batch normalisation should train faster"
    );
}

#[test]
fn check_finite_covers_the_running_statistics() {
    let mut net = Normed::new(Init::He, 3);
    assert!(net.check_finite().is_ok());
    // A batch with an infinity trains the running variance to infinity, the parameters aside.
    let (mut x, t) = batch();
    x[[0, 0]] = f32::INFINITY;
    let _ = net.loss(x.view(), &t);
    let error = net.check_finite().unwrap_err();
    assert!(error.to_string().contains("batchnorm0.running_"), "{error}");
}
