//! Training on real MNIST, small enough for CI: a subset of the project's own copy (data/mnist).

use chainrule::data::{Batches, Mnist, load_mnist};
use chainrule::prelude::*;
use chainrule::train::evaluate;

network! {
    struct TwoLayerNet { affine(784, 50) -> relu -> affine(50, 10) -> softmax_cross_entropy }
}

fn subset() -> Mnist {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");
    let Mnist { train, test } = load_mnist(dir).expect("the project ships MNIST in data/mnist");
    Mnist {
        train: train.take(10_000),
        // Every tenth test image: the first thousand alone are harder than the set as a whole.
        test: test
            .subset(&(0..10_000).step_by(10).collect::<Vec<_>>())
            .unwrap(),
    }
}

/// Trains the book's net on `data` for `epochs` with SGD (lr 0.1, batch 100) and returns it.
fn train(data: &Mnist, epochs: usize, seed: u64) -> TwoLayerNet {
    let mut net = TwoLayerNet::new(Init::He, seed);
    let mut sgd = Sgd::new(0.1);
    let mut batches = Batches::new(&data.train, 100, seed).unwrap();
    for _ in 0..epochs {
        while let Some((x, t)) = batches.next_batch() {
            net.gradient(x, t).unwrap();
            sgd.step(&mut net);
        }
    }
    net
}

#[test]
fn a_short_run_on_10_000_images_reaches_90_percent() {
    let data = subset();
    let mut net = TwoLayerNet::new(Init::He, 7);
    let before = evaluate(&mut net, &data.test, 100).unwrap();
    let mut net = train(&data, 10, 7);
    let after = evaluate(&mut net, &data.test, 100).unwrap();
    println!(
        "test accuracy on 1000 images: {:.3} before, {:.3} after 10 epochs of 10 000",
        before.accuracy, after.accuracy
    );
    assert!(before.accuracy < 0.3, "an untrained net guesses");
    assert!(
        after.accuracy >= 0.90,
        "test accuracy {:.3}",
        after.accuracy
    );
    assert!(after.loss < before.loss);
}

#[test]
fn weights_in_16_bits_classify_one_image_at_a_time_as_well() {
    let data = subset();
    let mut net = train(&data, 10, 7);
    let full = evaluate(&mut net, &data.test, 1).unwrap();
    for precision in [WeightPrecision::Half, WeightPrecision::BFloat16] {
        if net.set_one_sample_weights(precision).is_err() {
            // Without AVX-512 there is no 16-bit path to compare.
            return;
        }
        let rounded = evaluate(&mut net, &data.test, 1).unwrap();
        println!("one image at a time: full precision {full:?}, {precision} {rounded:?}");
        // The accuracy within two images of the thousand, and the mean loss within 0.5 %; not
        // the same to the last bit, or the rounded copy was not read.
        assert!(
            (rounded.accuracy - full.accuracy).abs() <= 0.002,
            "{precision}: {rounded:?} vs {full:?}"
        );
        assert!(
            (rounded.loss - full.loss).abs() <= 5e-3 * full.loss,
            "{precision}: {rounded:?} vs {full:?}"
        );
        assert_ne!(rounded.loss, full.loss, "{precision}");
    }
}

#[test]
fn the_same_seed_gives_the_same_run_bit_for_bit() {
    let data = subset();
    let data = Mnist {
        train: data.train.take(1_000),
        test: data.test,
    };
    let a = train(&data, 2, 3);
    let b = train(&data, 2, 3);
    let c = train(&data, 2, 4);
    for name in TwoLayerNet::PARAM_NAMES {
        let (a, b) = (a.param(name).unwrap(), b.param(name).unwrap());
        let same = a
            .value
            .iter()
            .zip(b.value)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{name} differs between two runs with one seed");
    }
    assert_ne!(
        a.param("affine0.weight").unwrap().value,
        c.param("affine0.weight").unwrap().value
    );
}
