//! What a user does with a generated network: hand-derived values for tiny networks, run-time
//! errors, initialisation, the generated constants, and a training step.

use chainrule::ndarray::{Array2, array};
use chainrule::prelude::*;
use chainrule::{Element, Error};

network! {
    /// 2-3-2 with ReLU and mse: small enough to derive by hand.
    pub struct Tiny: f64 {
        affine(2, 3) -> relu -> affine(3, 2) -> mse
    }
}

/// Weights chosen so that every number below is exact in binary.
fn tiny() -> Tiny {
    let mut net = Tiny::new(Init::default(), 0);
    net.affine0_weight
        .value_mut()
        .assign(&array![[1.0, -1.0, 0.5], [2.0, 0.0, -1.0]]);
    net.affine0_bias.value_mut().assign(&array![0.0, 2.0, 0.5]);
    net.affine1_weight
        .value_mut()
        .assign(&array![[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]]);
    net.affine1_bias.value_mut().assign(&array![0.5, -1.0]);
    net
}

#[test]
fn tiny_network_forward_and_gradients_by_hand() {
    let mut net = tiny();
    let x = array![[1.0, 2.0]];
    let t = array![[5.0, 2.0]];

    // h = x·W1 + b1 = [1 + 4, −1 + 0, 0.5 − 2] + [0, 2, 0.5] = [5, 1, −1]
    // r = relu(h) = [5, 1, 0]
    // y = r·W2 + b2 = [5·1 + 1·0 + 0·3, 5·0 + 1·2 + 0·1] + [0.5, −1] = [5.5, 1]
    assert_eq!(net.forward(x.view()).unwrap(), array![[5.5, 1.0]]);

    // L = ((5.5 − 5)² + (1 − 2)²) / (2·1) = (0.25 + 1) / 2 = 0.625
    assert_eq!(net.loss(x.view(), t.view()).unwrap(), 0.625);
    net.backward().unwrap();

    // dy = (y − t) / n = [0.5, −1]
    // dW2 = rᵀ·dy = [[2.5, −5], [0.5, −1], [0, 0]];  db2 = dy
    assert_eq!(
        net.affine1_weight.grad(),
        array![[2.5, -5.0], [0.5, -1.0], [0.0, 0.0]]
    );
    assert_eq!(net.affine1_bias.grad(), array![0.5, -1.0]);
    // dr = dy·W2ᵀ = [0.5·1 − 1·0, 0.5·0 − 1·2, 0.5·3 − 1·1] = [0.5, −2, 0.5]
    // dh = dr where h > 0 = [0.5, −2, 0]
    // dW1 = xᵀ·dh = [[0.5, −2, 0], [1, −4, 0]];  db1 = dh
    assert_eq!(
        net.affine0_weight.grad(),
        array![[0.5, -2.0, 0.0], [1.0, -4.0, 0.0]]
    );
    assert_eq!(net.affine0_bias.grad(), array![0.5, -2.0, 0.0]);

    // The same values by name.
    let w = net.param("affine0.weight").unwrap();
    assert_eq!(w.shape, &[2, 3]);
    assert_eq!(w.grad, &[0.5, -2.0, 0.0, 1.0, -4.0, 0.0]);
}

#[test]
fn losses_and_gradients_are_batch_means() {
    // The same sample twice: the mean loss and the gradients do not change.
    let mut one = tiny();
    let mut two = tiny();
    let loss1 = one
        .gradient(array![[1.0, 2.0]].view(), array![[5.0, 2.0]].view())
        .unwrap();
    let loss2 = two
        .gradient(
            array![[1.0, 2.0], [1.0, 2.0]].view(),
            array![[5.0, 2.0], [5.0, 2.0]].view(),
        )
        .unwrap();
    assert_eq!(loss1, loss2);
    assert_eq!(one.affine0_weight.grad(), two.affine0_weight.grad());
    assert_eq!(one.affine1_bias.grad(), two.affine1_bias.grad());
}

#[test]
fn softmax_cross_entropy_by_hand() {
    // Scores [0, ln 3] give softmax [1/4, 3/4]; for class 1 the loss is −ln(3/4) and
    // dscores = softmax − onehot = [1/4, −1/4].
    let mut net = network!(f64: affine(2, 2) -> softmax_with_loss);
    net.param_mut("affine0.weight")
        .unwrap()
        .value
        .copy_from_slice(&[1.0, 0.0, 0.0, 1.0]);
    net.param_mut("affine0.bias")
        .unwrap()
        .value
        .copy_from_slice(&[0.0, 3f64.ln()]);
    let x = array![[0.0, 0.0]];
    let loss = net.gradient(x.view(), &[1]).unwrap();
    assert!((loss - -(0.75f64.ln())).abs() < 1e-15);
    let db = net.param("affine0.bias").unwrap().grad.to_vec();
    assert!((db[0] - 0.25).abs() < 1e-15 && (db[1] + 0.25).abs() < 1e-15);
    // x is zero, so dW = xᵀ·dscores is zero.
    assert_eq!(net.param("affine0.weight").unwrap().grad, &[0.0; 4]);
    assert_eq!(net.predict(x.view()).unwrap(), vec![1]);
    assert_eq!(net.accuracy(x.view(), &[1]).unwrap(), 1.0);
    assert_eq!(net.accuracy(x.view(), &[0]).unwrap(), 0.0);
}

#[test]
fn softmax_cross_entropy_is_stable_for_huge_scores() {
    let mut net = network!(affine(2, 3) -> softmax_cross_entropy);
    net.param_mut("affine0.weight")
        .unwrap()
        .value
        .copy_from_slice(&[1e4, -1e4, 0.0, 0.0, 0.0, 0.0]);
    let x = array![[1.0, 0.0], [-1.0, 0.0]];
    // Row 0: scores [1e4, −1e4, 0], the target is the largest: loss ≈ 0.
    // Row 1: scores [−1e4, 1e4, 0], the target is the smallest: loss ≈ 2e4.
    let loss = net.gradient(x.view(), &[0, 0]).unwrap();
    assert!(loss.is_finite());
    assert!((loss - 1e4).abs() < 1.0, "loss {loss}");
    let grad = net.param("affine0.weight").unwrap().grad.to_vec();
    assert!(grad.iter().all(|g| g.is_finite()));
}

#[test]
fn run_time_mistakes_are_errors_that_name_both_sides() {
    network! {
        struct Classifier { affine(4, 3) -> relu -> affine(3, 3) -> softmax_cross_entropy }
    }
    let mut net = Classifier::default();
    let wide = Array2::<f32>::zeros((2, 5));
    let err = net.forward(wide.view()).unwrap_err();
    assert_eq!(
        err,
        Error::InputWidth {
            network: "Classifier",
            expected: 4,
            actual: 5
        }
    );
    assert_eq!(
        err.to_string(),
        "Classifier takes 4 input features per sample, but the input has 5 columns"
    );

    let empty = Array2::<f32>::zeros((0, 4));
    assert!(matches!(
        net.predict(empty.view()),
        Err(Error::EmptyBatch { .. })
    ));

    let x = Array2::<f32>::zeros((2, 4));
    let err = net.loss(x.view(), &[0]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the input batch has 2 samples, but there are 1 targets"
    );
    let err = net.loss(x.view(), &[0, 3]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "target 1 is class 3, but Classifier has 3 classes (0 to 2)"
    );
    assert!(matches!(
        net.accuracy(x.view(), &[7, 0]),
        Err(Error::ClassOutOfRange { class: 7, .. })
    ));

    // backward needs a loss on the current batch; a later forward pass invalidates it.
    assert_eq!(net.backward(), Err(Error::BackwardBeforeLoss));
    net.loss(x.view(), &[0, 2]).unwrap();
    net.backward().unwrap();
    net.forward(x.view()).unwrap();
    assert_eq!(net.backward(), Err(Error::BackwardBeforeLoss));

    let err = net.param("affine9.weight").unwrap_err();
    assert_eq!(
        err.to_string(),
        "Classifier has no parameter named \"affine9.weight\"; it has: affine0.weight, affine0.bias, affine1.weight, affine1.bias"
    );

    let mut regression = network!(affine(2, 2) -> mse);
    let x = Array2::<f32>::zeros((3, 2));
    let t = Array2::<f32>::zeros((3, 4));
    assert_eq!(
        regression.loss(x.view(), t.view()).unwrap_err().to_string(),
        "network produces 2 outputs per sample, but the targets have 4 columns"
    );
}

#[test]
fn generated_constants() {
    network! {
        pub(crate) struct Book { affine(784, 50) -> relu -> affine(50, 10) -> softmax_cross_entropy }
    }
    assert_eq!(Book::NAME, "Book");
    assert_eq!(Book::INPUT, 784);
    assert_eq!(Book::OUTPUT, 10);
    assert_eq!(Book::PARAMS, 784 * 50 + 50 + 50 * 10 + 10);
    assert_eq!(
        Book::PARAM_NAMES,
        [
            "affine0.weight",
            "affine0.bias",
            "affine1.weight",
            "affine1.bias"
        ]
    );
    assert!(Book::DOT.starts_with("digraph \"Book\" {"));
    assert!(Book::DOT.contains("affine(784, 50)"));
    assert!(Book::DOT.contains("v1 -> v2 [label=\"n × 50\"]"));
    // With an mse loss, the output is what flows into the loss.
    assert_eq!(Tiny::OUTPUT, 2);
}

#[test]
fn a_network_without_a_loss_runs_forward() {
    let mut net = network!(affine(3, 2) -> sigmoid);
    let y = net.forward(Array2::<f32>::ones((4, 3)).view()).unwrap();
    assert_eq!(y.dim(), (4, 2));
    // Weights from std 0.01 and zero biases: every output is near sigmoid(0) = 0.5.
    assert!(y.iter().all(|&v| (v - 0.5).abs() < 0.05));
}

#[test]
fn initialisation_is_seeded_and_scaled() {
    let a = Tiny::new(Init::He, 1);
    let b = Tiny::new(Init::He, 1);
    let c = Tiny::new(Init::He, 2);
    assert_eq!(a.affine0_weight.value(), b.affine0_weight.value());
    assert_ne!(a.affine0_weight.value(), c.affine0_weight.value());
    assert!(a.affine0_bias.value().iter().all(|&v| v == 0.0));

    network! { struct Wide { affine(400, 300) -> relu } }
    for (init, expected) in [
        (Init::Std(0.01), 0.01),
        (Init::He, (2.0f64 / 400.0).sqrt()),
        (Init::Xavier, (1.0f64 / 400.0).sqrt()),
    ] {
        let net = Wide::new(init, 3);
        let w = net.affine0_weight.value();
        let n = w.len() as f64;
        let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 0.01 * expected, "{init:?}: mean {mean}");
        assert!(
            (std / expected - 1.0).abs() < 0.01,
            "{init:?}: std {std}, expected {expected}"
        );
    }
    assert_eq!(
        Init::He.std_dev(50),
        (2.0f64 / 50.0).sqrt(),
        "He's fan-in rule"
    );
}

#[test]
fn sgd_steps_downhill_and_buffers_follow_the_batch_size() {
    network! { struct Xor { affine(2, 8) -> tanh -> affine(8, 2) -> softmax_cross_entropy } }
    let mut net = Xor::new(Init::Xavier, 1);
    let x = array![[0.0f32, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]];
    let t = [0usize, 1, 1, 0];
    let mut sgd = Sgd::new(0.5);
    let first = net.gradient(x.view(), &t).unwrap();
    sgd.step(&mut net);
    let mut last = first;
    for _ in 0..2000 {
        last = net.gradient(x.view(), &t).unwrap();
        sgd.step(&mut net);
    }
    assert!(last < first * 0.1, "loss {first} -> {last}");
    assert_eq!(net.predict(x.view()).unwrap(), t);
    // Another batch size reallocates the buffers and still gives the same answers row by row.
    let one = net
        .predict(x.slice(chainrule::ndarray::s![1..2, ..]))
        .unwrap();
    assert_eq!(one, vec![1]);
}

#[test]
fn one_sample_at_a_time_sees_every_change_to_the_weights() {
    // One-row forward passes switch to a copy of each weight laid out for them after a while; an
    // optimiser step, `init` and loading a checkpoint must each make it stale.
    network! { struct Net { affine(20, 30) -> relu -> affine(30, 4) } }
    let x = Array2::from_shape_fn((2, 20), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 11.0 - 0.4);
    let one = x.slice(chainrule::ndarray::s![0..1, ..]);
    let mut net = Net::new(Init::He, 3);
    // The first row of a two-row batch: the general product, never the copy.
    let expected = |net: &mut Net| net.forward(x.view()).unwrap().row(0).to_owned();
    let close = |net: &mut Net, what: &str| {
        let want = expected(net);
        for call in 0..40 {
            let got = net.forward(one).unwrap().row(0).to_owned();
            let worst = largest(&(&got - &want));
            assert!(worst < 1e-5, "{what}, call {call}: {got} vs {want}");
        }
    };
    close(&mut net, "fresh");
    // An optimiser step, through `for_each_param_mut`.
    let mut sgd = Sgd::new(0.5);
    net.backward_from(Array2::ones((1, 4)).view()).unwrap();
    sgd.step(&mut net);
    close(&mut net, "after an SGD step");
    net.init(Init::Xavier, 9);
    close(&mut net, "after init");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    let saved = Net::new(Init::He, 11);
    chainrule::checkpoint::save(&saved, &path).unwrap();
    chainrule::checkpoint::load(&mut net, &path).unwrap();
    close(&mut net, "after loading a checkpoint");
}

#[test]
fn weights_in_16_bits_serve_one_sample_passes_only() {
    network! { struct Net { affine(100, 30) -> relu -> affine(30, 4) -> softmax_cross_entropy } }
    let x = Array2::from_shape_fn((2, 100), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 11.0);
    let one = x.slice(chainrule::ndarray::s![0..1, ..]);
    let mut net = Net::new(Init::He, 3);
    let batch = net.forward(x.view()).unwrap().to_owned();
    let single = net.forward(one).unwrap().to_owned();
    let size = largest(&single);

    let rounds = std::arch::is_x86_feature_detected!("avx512f");
    // Each precision with how far its rounding may move the outputs: 2⁻¹¹ and 2⁻⁸ of each
    // weight, piled up over the sums.
    for (precision, within) in [
        (WeightPrecision::Half, 2e-3),
        (WeightPrecision::BFloat16, 1.6e-2),
    ] {
        let set = net.set_one_sample_weights(precision);
        assert_eq!(set.is_ok(), rounds, "{set:?}");
        // Batches of more than one sample read the weights as they are, bit for bit.
        assert_eq!(net.forward(x.view()).unwrap(), batch, "{precision}");
        // One sample reads the rounded copy: close to full precision, but not the same (with
        // AVX-512; without it the setting was refused and nothing changed).
        let rounded = net.forward(one).unwrap().to_owned();
        let worst = largest(&(&rounded - &single));
        println!(
            "{precision}: outputs moved by up to {:.1e} of the largest",
            worst / size
        );
        assert!(worst <= within * size, "{precision}: {rounded} vs {single}");
        assert_eq!(
            worst > 1e-6 * size,
            rounds,
            "{precision}: {rounded} vs {single}"
        );
        // Back to full precision.
        net.set_one_sample_weights(WeightPrecision::Full).unwrap();
        let again = net.forward(one).unwrap().to_owned();
        let worst = largest(&(&again - &single));
        assert!(worst <= 1e-6 * size, "{precision}: {again} vs {single}");
    }

    // An f64 network says why it cannot, and stays as it was.
    let mut tiny = tiny();
    let err = tiny
        .set_one_sample_weights(WeightPrecision::BFloat16)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedPrecision {
                network: "Tiny",
                precision: WeightPrecision::BFloat16,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "Tiny cannot read its weights in bfloat16: it computes in f64; 16-bit weights serve f32 \
         networks"
    );
    assert_eq!(
        tiny.forward(array![[1.0, 2.0]].view()).unwrap(),
        array![[5.5, 1.0]]
    );
    tiny.set_one_sample_weights(WeightPrecision::Full).unwrap();
}

/// The largest magnitude among `values`.
fn largest<'a>(values: impl IntoIterator<Item = &'a f32>) -> f32 {
    values.into_iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// The largest difference between two networks' parameters, relative to the largest value.
fn param_gap<N: Network>(a: &N, b: &N) -> f64 {
    let mut values = Vec::new();
    a.for_each_param(&mut |p| values.push(p.value.iter().map(|v| v.to_f64()).collect::<Vec<_>>()));
    let mut gap = 0f64;
    let mut scale = 0f64;
    let mut i = 0;
    b.for_each_param(&mut |p| {
        for (x, y) in values[i].iter().zip(p.value.iter()) {
            gap = gap.max((x - y.to_f64()).abs());
            scale = scale.max(x.abs());
        }
        i += 1;
    });
    gap / scale
}

/// `sgd_step` against `gradient` then `Sgd::step` on a copy: the same losses and parameters, up to
/// rounding, over a few steps with a large learning rate (an update written into a weight before
/// the input gradient read it would move the layers below by far more).
fn sgd_step_matches<N>(make: impl Fn() -> N, x: &Array2<N::Elem>, t: N::Targets<'_>, tol: f64)
where
    N: Trainable,
    for<'t> N::Targets<'t>: Copy,
{
    for decay in [0.0, 0.3] {
        let (mut fused, mut plain) = (make(), make());
        let mut sgd = Sgd::new(0.5).with_weight_decay(decay);
        for step in 0..4 {
            let want = plain.gradient(x.view(), t).unwrap();
            sgd.step(&mut plain);
            let got = if decay == 0.0 {
                fused.sgd_step(x.view(), t, 0.5)
            } else {
                fused.sgd_step_with_decay(x.view(), t, 0.5, decay)
            };
            let (want, got) = (want.to_f64(), got.unwrap().to_f64());
            assert!(
                (want - got).abs() <= tol * want.abs(),
                "decay {decay}, step {step}: loss {got} vs {want}"
            );
            let gap = param_gap(&plain, &fused);
            assert!(
                gap <= tol,
                "decay {decay}, step {step}: parameters differ by {gap:e} (relative)"
            );
        }
        assert!(param_gap(&make(), &fused) > 1e-3, "the parameters moved");
    }
}

#[test]
fn sgd_step_is_gradient_then_sgd() {
    // f32, narrow layers: the in-place product.
    network! { struct Narrow { affine(30, 40) -> relu -> affine(40, 20) -> sigmoid -> affine(20, 10) -> softmax_cross_entropy } }
    let x = Array2::from_shape_fn((50, 30), |(i, j)| {
        ((i * 13 + j * 5) % 17) as f32 / 17.0 - 0.3
    });
    let labels: Vec<usize> = (0..50).map(|i| (i * 7) % 10).collect();
    sgd_step_matches(|| Narrow::new(Init::He, 1), &x, &labels[..], 1e-5);
    // One sample: the one-row forward.
    sgd_step_matches(
        || Narrow::new(Init::He, 2),
        &x.slice(chainrule::ndarray::s![..1, ..]).to_owned(),
        &labels[..1],
        1e-5,
    );

    // f32, layers wider than 256: the packed product.
    network! { struct Wide { affine(64, 300) -> relu -> affine(300, 260) -> relu -> affine(260, 10) -> softmax_cross_entropy } }
    let x = Array2::from_shape_fn((40, 64), |(i, j)| ((i * 11 + j * 3) % 23) as f32 / 23.0);
    sgd_step_matches(|| Wide::new(Init::He, 3), &x, &labels[..40], 1e-5);

    // ReLUs whose backward passes `sgd_step` folds into the product after them, and ones it
    // must not: `h` feeds a ReLU and an affine, and the ReLU `r` feeds two affines. The input's
    // gradient comes through a folded ReLU.
    network! {
        struct Branches {
            #[grad] a = input(8);
            h = a -> relu -> affine(8, 12);
            p = h -> relu -> affine(12, 5);
            r = h -> affine(12, 12) -> relu;
            q = r -> affine(12, 5);
            s = r -> affine(12, 5);
            u = add(p, q);
            add(u, s) -> mse
        }
    }
    let x = Array2::from_shape_fn((6, 8), |(i, j)| ((i * 5 + j * 3) % 11) as f32 / 11.0 - 0.5);
    let t = Array2::from_shape_fn((6, 5), |(i, j)| ((i + 2 * j) % 3) as f32 / 3.0);
    sgd_step_matches(|| Branches::new(Init::He, 6), &x, t.view(), 1e-5);
    let (mut plain, mut fused) = (Branches::new(Init::He, 7), Branches::new(Init::He, 7));
    plain.gradient(x.view(), t.view()).unwrap();
    fused.sgd_step(x.view(), t.view(), 0.5).unwrap();
    let input_grad = fused.input_grad("a").unwrap();
    assert_eq!(plain.input_grad("a").unwrap(), input_grad);
    assert!(input_grad.iter().any(|&g| g == 0.0) && input_grad.iter().any(|&g| g != 0.0));

    // f64 (ndarray's product), ending in mse.
    let x = array![[1.0, 2.0], [-1.0, 0.5], [0.25, -2.0]];
    let t = array![[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]];
    sgd_step_matches(tiny, &x, t.view(), 1e-12);
}

#[test]
fn sgd_step_keeps_input_gradients_and_checks_its_batch() {
    network! {
        struct TwoInputs: f64 {
            #[grad] a = input(3);
            b = input(2);
            p = a -> affine(3, 4) -> tanh;
            q = b -> affine(2, 4);
            add(p, q) -> affine(4, 2) -> mse
        }
    }
    let x = Array2::from_shape_fn((4, 5), |(i, j)| (i as f64 - j as f64) / 4.0);
    let t = Array2::from_shape_fn((4, 2), |(i, j)| (i + j) as f64 / 5.0);
    let mut plain = TwoInputs::new(Init::Xavier, 5);
    let mut fused = TwoInputs::new(Init::Xavier, 5);
    plain.gradient(x.view(), t.view()).unwrap();
    fused.sgd_step(x.view(), t.view(), 0.5).unwrap();
    // The input gradient is that of the weights before the update.
    assert_eq!(
        plain.input_grad("a").unwrap(),
        fused.input_grad("a").unwrap()
    );

    let before = fused.affine0_weight.value().to_owned();
    let wrong = Array2::<f64>::zeros((4, 4));
    let err = fused.sgd_step(wrong.view(), t.view(), 0.5).unwrap_err();
    assert!(err.to_string().contains("5"), "{err}");
    assert_eq!(
        fused.affine0_weight.value(),
        before,
        "a rejected batch changes nothing"
    );
    assert!(matches!(fused.backward(), Err(Error::BackwardBeforeLoss)));
}

#[test]
fn train_step_fuses_sgd_and_steps_the_others_after_the_gradient() {
    network! { struct Net { affine(6, 8) -> relu -> affine(8, 3) -> softmax_cross_entropy } }
    let x = Array2::from_shape_fn((5, 6), |(i, j)| ((i * 5 + j * 3) % 7) as f32 / 7.0 - 0.4);
    let labels = [0usize, 2, 1, 1, 0];
    let make = || Net::new(Init::He, 4);
    // Each optimiser's train_step against the step it stands for, on a copy.
    let check = |mut optim: Optim, by_hand: &dyn Fn(&mut Net, &mut Optim) -> f32| {
        let (mut net, mut reference) = (make(), make());
        let mut reference_optim = optim.clone();
        for _ in 0..3 {
            let got = optim.train_step(&mut net, x.view(), &labels).unwrap();
            let want = by_hand(&mut reference, &mut reference_optim);
            assert_eq!(got, want, "{optim}: loss");
            let gap = param_gap(&reference, &net);
            assert!(gap < 1e-6, "{optim}: parameters differ by {gap:e}");
        }
    };
    let fused =
        |net: &mut Net, optim: &mut Optim| net.sgd_step(x.view(), &labels, optim.lr()).unwrap();
    let fused_decay = |net: &mut Net, optim: &mut Optim| {
        net.sgd_step_with_decay(x.view(), &labels, optim.lr(), 0.1)
            .unwrap()
    };
    let unfused = |net: &mut Net, optim: &mut Optim| {
        let loss = net.gradient(x.view(), &labels).unwrap();
        optim.step(net);
        loss
    };
    check(Sgd::new(0.3).into(), &fused);
    check(Sgd::new(0.3).with_weight_decay(0.1).into(), &fused_decay);
    check(Adam::new(0.01).into(), &unfused);
    check(Adam::new(0.01).with_weight_decay(0.1).into(), &unfused);
    // The fused step stores no gradients: after it, they are still the last gradient's.
    let mut net = make();
    net.gradient(x.view(), &labels).unwrap();
    let before = net.affine0_weight.grad().to_owned();
    Sgd::new(0.3)
        .train_step(&mut net, x.view(), &labels)
        .unwrap();
    assert_eq!(net.affine0_weight.grad(), before);
}

// The plan's consts: bytes and floating-point operations per sample, derived by hand.

network! {
    struct BookCosts {
        affine(784, 50) -> relu -> affine(50, 10) -> softmax_cross_entropy
    }
}

network! {
    /// The main job's deep net.
    struct DeepCosts {
        affine(784, 256) -> relu -> affine(256, 256) -> relu -> affine(256, 256) -> relu
            -> affine(256, 10) -> softmax_cross_entropy
    }
}

#[test]
fn cost_consts_of_the_book_net() {
    assert_eq!(BookCosts::PARAM_BYTES, 4 * BookCosts::PARAMS);
    assert_eq!(BookCosts::PARAMS, 784 * 50 + 50 + 50 * 10 + 10);
    // A forward pass keeps affine0 (50), relu0 (50), affine1 (10) and the batch (784).
    assert_eq!(BookCosts::ACTIVATION_BYTES_INFERENCE, 4 * (110 + 784));
    // Training adds the gradients of affine1's, relu0's and affine0's outputs: all three are
    // alive at once in the backward pass (affine1's is the output's, which is kept), so no two
    // share storage.
    assert_eq!(
        BookCosts::ACTIVATION_BYTES_TRAINING,
        4 * (110 + 10 + 50 + 50)
    );
    // Each affine: 2·in·out for the product, out for the bias; relu: one per value.
    let forward = (2 * 784 * 50 + 50) + 50 + (2 * 50 * 10 + 10);
    assert_eq!(BookCosts::FLOPS_FORWARD, forward);
    // Then the loss (4 per score) and its gradient (2 per score), affine1's input gradient (a
    // product) and parameter gradients (a product and the bias sums), relu's input gradient,
    // and affine0's parameter gradients; nothing needs the input's gradient.
    let backward = 4 * 10 + 2 * 10 + (2 * 50 * 10) + (2 * 50 * 10 + 10) + 50 + (2 * 784 * 50 + 50);
    assert_eq!(BookCosts::FLOPS_TRAINING, forward + backward);
}

#[test]
fn gradients_whose_lifetimes_do_not_overlap_share_storage() {
    // Seven values: six of 256 features and the 10 scores.
    let values = 6 * 256 + 10;
    assert_eq!(DeepCosts::ACTIVATION_BYTES_INFERENCE, 4 * (values + 784));
    // The backward pass: the scores' gradient is kept; then relu2's and affine2's are alive
    // together (in sgd_step affine3's product writes affine2's through relu2's mask), relu1's
    // takes relu2's storage, affine1's a new one, relu0's relu1's and affine0's affine2's: four
    // buffers of 10, 256, 256 and 256 instead of seven.
    assert_eq!(
        DeepCosts::ACTIVATION_BYTES_TRAINING,
        4 * (values + 10 + 3 * 256)
    );
    let affine = |i: u64, o: u64| 2 * i * o + o;
    let forward = affine(784, 256) + 2 * affine(256, 256) + affine(256, 10) + 3 * 256;
    assert_eq!(DeepCosts::FLOPS_FORWARD, forward);
    // Every affine's parameter gradients, all but the first's input gradient, relu's, the loss.
    let backward = (affine(784, 256) + 2 * affine(256, 256) + affine(256, 10))
        + (2 * 2 * 256 * 256 + 2 * 256 * 10)
        + 3 * 256
        + (4 + 2) * 10;
    assert_eq!(DeepCosts::FLOPS_TRAINING, forward + backward);
    assert_eq!(DeepCosts::PARAM_BYTES, 4 * DeepCosts::PARAMS);
    println!(
        "deep net: {} parameter bytes, {} / {} activation bytes per sample (inference / \
         training), {} / {} FLOPs per sample (forward / training)",
        DeepCosts::PARAM_BYTES,
        DeepCosts::ACTIVATION_BYTES_INFERENCE,
        DeepCosts::ACTIVATION_BYTES_TRAINING,
        DeepCosts::FLOPS_FORWARD,
        DeepCosts::FLOPS_TRAINING
    );
}

// Not-a-number: never silently turned into a number.

#[test]
fn a_nan_in_the_input_stays_a_nan_and_has_no_class() {
    let mut net = BookCosts::new(Init::He, 3);
    let mut x = chainrule::ndarray::Array2::<f32>::from_elem((3, 784), 0.5);
    x[[1, 100]] = f32::NAN;
    let scores = net.forward(x.view()).unwrap().to_owned();
    assert!(scores.row(0).iter().all(|v| v.is_finite()));
    assert!(
        scores.row(1).iter().all(|v| v.is_nan()),
        "the ReLU passes the NaN on: {:?}",
        scores.row(1)
    );
    let message = net.predict(x.view()).unwrap_err().to_string();
    assert!(message.contains("sample 1 hold NaN"), "{message}");
    // One sample at a time (the one-row kernels), in every precision.
    for precision in [
        WeightPrecision::Full,
        WeightPrecision::Half,
        WeightPrecision::BFloat16,
    ] {
        if net.set_one_sample_weights(precision).is_err() {
            continue;
        }
        let one = net
            .forward(x.slice(chainrule::ndarray::s![1..2, ..]))
            .unwrap();
        assert!(one.iter().all(|v| v.is_nan()), "{precision}: {one:?}");
    }
    net.set_one_sample_weights(WeightPrecision::Full).unwrap();
    // Accuracy counts the sample as wrong, and the loss is NaN.
    let labels = [0usize, 0, 0];
    let clean = net
        .accuracy(x.slice(chainrule::ndarray::s![0..1, ..]), &labels[..1])
        .unwrap();
    let with_nan = net.accuracy(x.view(), &labels).unwrap();
    assert!(
        with_nan <= (2.0 * clean) / 3.0 + 1e-9,
        "{with_nan} vs {clean}"
    );
    assert!(net.loss(x.view(), &labels).unwrap().is_nan());
}

#[test]
fn check_finite_names_the_first_parameter_that_went_bad() {
    let mut net = BookCosts::new(Init::He, 3);
    net.check_finite().unwrap();
    // The last elements of a parameter, past its last whole run of sixteen.
    net.affine1_bias.value_mut()[7] = f32::NAN;
    let message = net.check_finite().unwrap_err().to_string();
    assert!(
        message.contains("affine1.bias holds NaN (element 7)"),
        "{message}"
    );
    net.affine1_weight.value_mut()[[4, 2]] = f32::INFINITY;
    let message = net.check_finite().unwrap_err().to_string();
    assert!(
        message.contains("affine1.weight holds inf (element 42)"),
        "{message}"
    );
    assert!(message.contains("smaller learning rate"), "{message}");
}
