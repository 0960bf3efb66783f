//! The speed workloads, each against the naive baseline in the same process:
//!
//! - W1 "book": 784-50-10 (affine, relu, affine, softmax-cross-entropy), batch 100, a training step
//!   (forward, backward, SGD lr 0.1): `sgd_step`, and the same step unfused (`gradient`, then
//!   `Sgd::step`);
//! - W2 "wide": 784-1024-1024-10 with relu, batch 256, a training step;
//! - W3 "latency": 784-50-10 forward on one sample;
//! - W4 "conv": the book's SimpleConvNet (conv 30×5×5, ReLU, max pool 2, 4320-100-10), batch 100,
//!   a training step; W5 "conv latency": its forward pass on one image. No naive baseline here:
//!   `benches/peers/compare.sh` measures them against the peers.
//!
//! `cargo bench --bench steps`; the per-iteration times give steps/s (1 / time) and the ratio to
//! the baseline in the same group. Both cores by default; one with
//! `CHAINRULE_THREADS=1 MATMUL_NUM_THREADS=1` (the first for chainrule, the second for the
//! baseline's matrixmultiply), pinned with `taskset -c 0` for the peers' setting.

mod naive;

use std::hint::black_box;

use chainrule::ndarray::Array2;
use chainrule::prelude::*;
use criterion::{Criterion, criterion_group, criterion_main};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

network! {
    struct Book { affine(784, 50) -> relu -> affine(50, 10) -> softmax_cross_entropy }
}

network! {
    struct Wide {
        affine(784, 1024) -> relu -> affine(1024, 1024) -> relu -> affine(1024, 10)
            -> softmax_cross_entropy
    }
}

network! {
    struct SimpleConv {
        input(1, 28, 28) -> conv2d(1, 30, 5) -> relu -> max_pool(2)
            -> affine(4320, 100) -> relu -> affine(100, 10) -> softmax_cross_entropy
    }
}

/// Inputs in [0, 1), random labels: the same data for both implementations.
fn data(rows: usize, seed: u64) -> (Array2<f32>, Vec<usize>) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let x = Array2::from_shape_simple_fn((rows, 784), || rng.random::<f32>());
    let t = (0..rows).map(|_| rng.random_range(0..10)).collect();
    (x, t)
}

/// The naive net with the same weights as `net`.
fn naive_copy<N: Network<Elem = f32>>(net: &N) -> naive::Net {
    let weights = N::PARAM_NAMES
        .iter()
        .filter(|name| name.ends_with(".weight"))
        .map(|name| {
            let p = net.param(name).unwrap();
            Array2::from_shape_vec((p.shape[0], p.shape[1]), p.value.to_vec()).unwrap()
        })
        .collect();
    naive::Net::new(weights)
}

fn training_step<N>(c: &mut Criterion, name: &str, mut net: N, batch: usize)
where
    N: for<'t> Trainable<Elem = f32, Targets<'t> = &'t [usize]>,
{
    let (x, t) = data(batch, 0);
    let mut baseline = naive_copy(&net);
    let mut sgd = Sgd::new(0.1);
    let mut group = c.benchmark_group(name);
    group.bench_function("chainrule", |b| {
        b.iter(|| net.sgd_step(black_box(x.view()), &t, 0.1).unwrap())
    });
    // The same step unfused: gradients stored, then the optimiser's pass over the parameters.
    group.bench_function("chainrule gradient + Sgd", |b| {
        b.iter(|| {
            let loss = net.gradient(black_box(x.view()), &t).unwrap();
            sgd.step(&mut net);
            loss
        })
    });
    // What checking every parameter for NaN and infinity after each step costs.
    group.bench_function("chainrule, check_finite after each step", |b| {
        b.iter(|| {
            let loss = net.sgd_step(black_box(x.view()), &t, 0.1).unwrap();
            net.check_finite().unwrap();
            loss
        })
    });
    group.bench_function("chainrule, check_finite alone", |b| {
        b.iter(|| black_box(&net).check_finite().unwrap())
    });
    group.bench_function("naive", |b| {
        b.iter(|| {
            let loss = baseline.gradient(black_box(x.view()), &t);
            baseline.update(0.1);
            loss
        })
    });
    group.finish();
}

fn w1(c: &mut Criterion) {
    training_step(c, "W1 book 784-50-10 batch 100", Book::default(), 100);
}

fn w2(c: &mut Criterion) {
    training_step(
        c,
        "W2 wide 784-1024-1024-10 batch 256",
        Wide::default(),
        256,
    );
}

fn w3(c: &mut Criterion) {
    let mut net = Book::default();
    let mut baseline = naive_copy(&net);
    let (x, _) = data(1, 1);
    let mut group = c.benchmark_group("W3 latency 784-50-10 batch 1");
    group.bench_function("chainrule", |b| {
        b.iter(|| net.forward(black_box(x.view())).unwrap()[[0, 0]])
    });
    group.bench_function("naive", |b| {
        b.iter(|| baseline.predict(black_box(&x))[[0, 0]])
    });
    for (precision, name) in [
        (WeightPrecision::Half, "chainrule, half-precision weights"),
        (WeightPrecision::BFloat16, "chainrule, bfloat16 weights"),
    ] {
        if net.set_one_sample_weights(precision).is_ok() {
            group.bench_function(name, |b| {
                b.iter(|| net.forward(black_box(x.view())).unwrap()[[0, 0]])
            });
        }
    }
    group.finish();
}

fn w4(c: &mut Criterion) {
    let mut net = SimpleConv::new(Init::Std(0.01), 0);
    let (x, t) = data(100, 0);
    let mut group = c.benchmark_group("W4 conv SimpleConvNet batch 100");
    group.bench_function("chainrule", |b| {
        b.iter(|| net.sgd_step(black_box(x.view()), &t, 0.1).unwrap())
    });
    group.finish();
}

fn w5(c: &mut Criterion) {
    let mut net = SimpleConv::new(Init::Std(0.01), 0);
    let (x, _) = data(1, 1);
    let mut group = c.benchmark_group("W5 conv latency SimpleConvNet batch 1");
    group.bench_function("chainrule", |b| {
        b.iter(|| net.forward(black_box(x.view())).unwrap()[[0, 0]])
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = w1, w2, w3, w4, w5
}
criterion_main!(benches);
