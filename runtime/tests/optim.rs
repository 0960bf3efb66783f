//! The optimisers against steps worked out by hand, on a network written by hand; then each one
//! minimising a quadratic, with and without weight decay.
//!
//! The hand-worked steps all start from `W = [1, 2]` (a 2×1 weight) and `b = [0.5]` (a bias), with
//! learning rate `η = 0.1`, gradient `G1 = [0.5, −1 | 2]` at the first step and `G2 = [−0.25, 0.5 |
//! 1]` at the second. Values are listed as `[w0, w1 | b]`.

mod common;

use chainrule_runtime::Error;
use chainrule_runtime::optim::{AdaGrad, Adam, Momentum, Nesterov, Optim, Optimizer, RmsProp, Sgd};
use common::Toy;

const START: ([f64; 2], f64) = ([1.0, 2.0], 0.5);
const G1: [f64; 3] = [0.5, -1.0, 2.0];
const G2: [f64; 3] = [-0.25, 0.5, 1.0];

/// Runs two steps of `opt` from `START` with gradients `G1` then `G2`; returns the values after
/// each.
fn two_steps(opt: &mut impl Optimizer) -> [[f64; 3]; 2] {
    let mut net = Toy::<f64>::new(START.0, START.1);
    net.set_grads(G1);
    opt.step(&mut net);
    let first = net.values();
    net.set_grads(G2);
    opt.step(&mut net);
    [first, net.values()]
}

#[track_caller]
fn assert_close(actual: [f64; 3], expected: [f64; 3], tol: f64) {
    for (a, e) in actual.iter().zip(&expected) {
        assert!(
            (a - e).abs() <= tol,
            "got {actual:?}, expected {expected:?} (±{tol})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Steps by hand.

#[test]
fn sgd_by_hand() {
    // W ← W − η·G:
    //   step 1: [1 − 0.05, 2 + 0.1 | 0.5 − 0.2]     = [0.95, 2.1 | 0.3]
    //   step 2: [0.95 + 0.025, 2.1 − 0.05 | 0.3 − 0.1] = [0.975, 2.05 | 0.2]
    let [s1, s2] = two_steps(&mut Sgd::new(0.1));
    assert_close(s1, [0.95, 2.1, 0.3], 1e-12);
    assert_close(s2, [0.975, 2.05, 0.2], 1e-12);
}

#[test]
fn momentum_by_hand() {
    // v ← 0.9·v − η·G; W ← W + v.
    //   step 1: v = −0.1·G1 = [−0.05, 0.1 | −0.2];            W = [0.95, 2.1 | 0.3]
    //   step 2: v = 0.9·v − 0.1·G2
    //             = [−0.045 + 0.025, 0.09 − 0.05 | −0.18 − 0.1] = [−0.02, 0.04 | −0.28];
    //           W = [0.93, 2.14 | 0.02]
    let [s1, s2] = two_steps(&mut Momentum::new(0.1));
    assert_close(s1, [0.95, 2.1, 0.3], 1e-12);
    assert_close(s2, [0.93, 2.14, 0.02], 1e-12);
}

#[test]
fn nesterov_by_hand() {
    // v ← 0.9·v − η·G; W ← W + 0.81·v − 1.9·η·G.
    //   step 1: v = [−0.05, 0.1 | −0.2];
    //           ΔW = 0.81·v − 0.19·G1 = [−0.0405 − 0.095, 0.081 + 0.19 | −0.162 − 0.38]
    //              = [−0.1355, 0.271 | −0.542];                     W = [0.8645, 2.271 | −0.042]
    //   step 2: v = [−0.02, 0.04 | −0.28] (as for momentum);
    //           ΔW = 0.81·v − 0.19·G2 = [−0.0162 + 0.0475, 0.0324 − 0.095 | −0.2268 − 0.19]
    //              = [0.0313, −0.0626 | −0.4168];                   W = [0.8958, 2.2084 | −0.4588]
    let [s1, s2] = two_steps(&mut Nesterov::new(0.1));
    assert_close(s1, [0.8645, 2.271, -0.042], 1e-12);
    assert_close(s2, [0.8958, 2.2084, -0.4588], 1e-12);
}

#[test]
fn adagrad_by_hand() {
    // h ← h + G²; W ← W − η·G / (√h + 1e-7).
    //   step 1: h = [0.25, 1 | 4], √h = |G1|, so each scalar moves η·|g|/(|g| + ε) ≈ 0.1 against
    //           its gradient: W ≈ [0.9, 2.1 | 0.4]; exactly 1 − 0.05/(0.5 + 1e-7) = 0.90000002 etc.
    //   step 2: h = [0.3125, 1.25 | 5], √h = [0.559017, 1.118034 | 2.236068];
    //           ΔW = −0.1·G2/√h = [0.0447214, −0.0447214 | −0.0447214];
    //           W ≈ [0.9447214, 2.0552786 | 0.3552786]
    let [s1, s2] = two_steps(&mut AdaGrad::new(0.1));
    let e = 1e-7;
    assert_close(
        s1,
        [
            1.0 - 0.05 / (0.5 + e),
            2.0 + 0.1 / (1.0 + e),
            0.5 - 0.2 / (2.0 + e),
        ],
        1e-12,
    );
    assert_close(
        s1,
        [0.900000019999996, 2.099999990000001, 0.40000000499999977],
        1e-12,
    );
    assert_close(
        s2,
        [0.9447213715499932, 2.055278634450005, 0.35527864745000387],
        1e-12,
    );
}

#[test]
fn rmsprop_by_hand() {
    // h ← 0.99·h + 0.01·G²; W ← W − η·G / (√h + 1e-7).
    //   step 1: h = 0.01·G1² = [0.0025, 0.01 | 0.04], √h = 0.1·|G1|, so each scalar moves
    //           η/0.1 = 1 against its gradient: W ≈ [0, 3 | −0.5].
    //   step 2: h = 0.99·h + 0.01·G2² = [0.002475 + 0.000625, 0.0099 + 0.0025 | 0.0396 + 0.01]
    //             = [0.0031, 0.0124 | 0.0496], √h = [0.0556776, 0.1113553 | 0.2227106];
    //           ΔW = −0.1·G2/√h = [0.449013, −0.449013 | −0.449013];
    //           W ≈ [0.449014, 2.550986 | −0.949013]
    let [s1, s2] = two_steps(&mut RmsProp::new(0.1));
    assert_close(
        s1,
        [1.999996000034976e-06, 2.999999000001, -0.49999950000024995],
        1e-12,
    );
    assert_close(
        s2,
        [0.4490144486127728, 2.550986148159507, -0.9490125534543745],
        1e-12,
    );
}

#[test]
fn adam_by_hand() {
    // m ← m + 0.1·(G − m); v ← v + 0.001·(G² − v); η_t = η·√(1 − 0.999ᵗ)/(1 − 0.9ᵗ);
    // W ← W − η_t·m / (√v + 1e-7).
    //   step 1: m = 0.1·G1, v = 0.001·G1², η_1 = 0.1·√0.001/0.1 = √0.001; so
    //           ΔW = −√0.001·0.1·G1/(√0.001·|G1| + ε) ≈ −0.1·sign(G1): W ≈ [0.9, 2.1 | 0.4]
    //           (Adam's first step is η per scalar, against the gradient).
    //   step 2: m = 0.9·0.1·G1 + 0.1·G2 = [0.02, −0.04 | 0.28];
    //           v = 0.999·0.001·G1² + 0.001·G2² = [0.00031225, 0.001249 | 0.004996];
    //           η_2 = 0.1·√0.001999/0.19 = 0.0235317; √v = [0.0176706, 0.0353412 | 0.0706824];
    //           ΔW = −η_2·m/√v = [−0.026634, 0.026634 | −0.093218];
    //           W ≈ [0.873367, 2.126633 | 0.306782]
    let mut adam = Adam::new(0.1);
    let [s1, s2] = two_steps(&mut adam);
    assert_eq!(adam.steps(), 2);
    assert_close(
        s1,
        [0.900000632451532, 2.099999683773234, 0.40000015811363293],
        1e-12,
    );
    assert_close(
        s2,
        [0.8733670792079218, 2.126633312377846, 0.3067823261151785],
        1e-12,
    );
}

#[test]
fn optim_enum_steps_like_the_optimiser_it_holds() {
    for name in Optim::NAMES {
        let mut by_name = Optim::from_name(name).unwrap().with_lr(0.1);
        let mut direct: Optim = match *name {
            "sgd" => Sgd::new(0.1).into(),
            "momentum" => Momentum::new(0.1).into(),
            "nesterov" => Nesterov::new(0.1).into(),
            "adagrad" => AdaGrad::new(0.1).into(),
            "rmsprop" => RmsProp::new(0.1).into(),
            "adam" => Adam::new(0.1).into(),
            other => panic!("a name without a test: {other}"),
        };
        assert_eq!(two_steps(&mut by_name), two_steps(&mut direct), "{name}");
    }
    // The hand-worked momentum numbers, through the enum.
    let mut m = Optim::from_name("momentum").unwrap().with_lr(0.1);
    assert_close(two_steps(&mut m)[1], [0.93, 2.14, 0.02], 1e-12);
}

#[test]
fn inherent_step_needs_no_trait_import() {
    fn plain_call() -> [f64; 3] {
        // No `use Optimizer` in this scope's reach is needed for `.step`.
        let mut net = Toy::<f64>::new([1.0, 2.0], 0.5);
        net.set_grads(G1);
        chainrule_runtime::optim::Momentum::new(0.1).step(&mut net);
        net.values()
    }
    assert_close(plain_call(), [0.95, 2.1, 0.3], 1e-12);
}

// ---------------------------------------------------------------------------------------------
// State: per parameter, reset, and the gradient left alone.

#[test]
fn gradients_are_not_changed() {
    for name in Optim::NAMES {
        let mut opt = Optim::from_name(name).unwrap().with_weight_decay(0.5);
        let mut net = Toy::<f64>::new([1.0, 2.0], 0.5);
        net.set_grads(G1);
        opt.step(&mut net);
        opt.step(&mut net);
        assert_eq!(net.grads(), G1, "{name}");
    }
}

#[test]
fn reset_forgets_the_state() {
    for name in Optim::NAMES {
        let mut opt = Optim::from_name(name).unwrap().with_lr(0.1);
        let fresh = two_steps(&mut opt.clone());
        two_steps(&mut opt);
        if *name != "sgd" {
            // SGD has no state to carry over.
            assert_ne!(
                two_steps(&mut opt.clone()),
                fresh,
                "{name}: state carries over"
            );
        }
        opt.reset();
        assert_eq!(two_steps(&mut opt), fresh, "{name}");
    }
}

#[test]
fn another_network_starts_afresh() {
    // An optimiser belongs to one network; given parameters with other names, it starts their
    // state from zero instead of reusing the first network's.
    for name in Optim::NAMES {
        let mut opt = Optim::from_name(name).unwrap().with_lr(0.1);
        two_steps(&mut opt);
        let mut other = Toy::<f64>::named(["u", "c"], START.0, START.1);
        other.set_grads(G1);
        opt.step(&mut other);
        let mut fresh = Optim::from_name(name).unwrap().with_lr(0.1);
        let mut reference = Toy::<f64>::new(START.0, START.1);
        reference.set_grads(G1);
        fresh.step(&mut reference);
        if *name == "adam" {
            // Adam's step count is one for the whole optimiser: it goes on to 3.
            assert_ne!(other.values(), reference.values());
        } else {
            assert_eq!(other.values(), reference.values(), "{name}");
        }
    }
}

#[test]
fn set_lr_keeps_the_state() {
    // Momentum with the velocity of one step, then η = 0: W moves by 0.9·v alone.
    let mut opt = Momentum::new(0.1);
    let mut net = Toy::<f64>::new([1.0, 2.0], 0.5);
    net.set_grads(G1);
    opt.step(&mut net); // v = [−0.05, 0.1 | −0.2], W = [0.95, 2.1 | 0.3]
    opt.set_lr(0.0);
    assert_eq!(Optimizer::lr(&opt), 0.0);
    opt.step(&mut net); // v = [−0.045, 0.09 | −0.18]
    assert_close(net.values(), [0.905, 2.19, 0.12], 1e-12);
}

#[test]
fn f32_networks_round_once() {
    // Plain SGD updates in the element type (the hot path of training); Adam keeps its state in
    // f64 and rounds once. Either way these f32 results equal the f64 ones rounded.
    let mut net = Toy::<f32>::new([1.0, 2.0], 0.5);
    net.set_grads(G1);
    Sgd::new(0.1).step(&mut net);
    let expected = [0.95_f64 as f32, 2.1_f64 as f32, 0.3_f64 as f32];
    let got = net.values().map(|v| v as f32);
    assert_eq!(got, expected);

    let mut adam = Adam::new(0.1);
    let mut net = Toy::<f32>::new([1.0, 2.0], 0.5);
    net.set_grads(G1);
    adam.step(&mut net);
    assert_close(
        net.values(),
        [0.900000632451532, 2.099999683773234, 0.40000015811363293],
        1e-6,
    );
}

// ---------------------------------------------------------------------------------------------
// Weight decay.

#[test]
fn weight_decay_by_hand() {
    // λ = 0.5 adds λ·W to the weight's gradient, not to the bias's:
    //   w0: 0.5 + 0.5·1 = 1   → 1 − 0.1·1 = 0.9
    //   w1: −1 + 0.5·2 = 0    → stays 2
    //   b:  2 (no decay)      → 0.5 − 0.2 = 0.3
    let mut net = Toy::<f64>::new([1.0, 2.0], 0.5);
    net.set_grads(G1);
    Sgd::new(0.1).with_weight_decay(0.5).step(&mut net);
    assert_close(net.values(), [0.9, 2.0, 0.3], 1e-12);
    assert_eq!(net.grads(), G1, "the stored gradient is untouched");

    // Adam sees the same decayed gradient: w1's is 0, so m = 0 and w1 does not move at all;
    // w0's is 1 and b's 2, so each moves ≈ η = 0.1 against it.
    let mut net = Toy::<f64>::new([1.0, 2.0], 0.5);
    net.set_grads(G1);
    Adam::new(0.1).with_weight_decay(0.5).step(&mut net);
    assert_close(net.values(), [0.9, 2.0, 0.4], 1e-6);
    assert_eq!(net.values()[1], 2.0);
}

// ---------------------------------------------------------------------------------------------
// Minimising f(W, b) = Σ (w_i − c_i)² + (b − c_b)², whose gradient is 2·(value − c).

const TARGET: [f64; 3] = [3.0, -1.5, 0.7];

/// Runs `steps` steps of `opt` on the quadratic with minimum at `TARGET`, from `START`; returns
/// the final values.
fn minimise(opt: &mut impl Optimizer, steps: usize) -> [f64; 3] {
    let mut net = Toy::<f64>::new(START.0, START.1);
    for _ in 0..steps {
        let v = net.values();
        net.set_grads(std::array::from_fn(|i| 2.0 * (v[i] - TARGET[i])));
        opt.step(&mut net);
    }
    net.values()
}

/// Each optimiser with a learning rate that suits the quadratic, the steps it is given and the
/// tolerance it must reach.
fn quadratic_cases() -> Vec<(Optim, usize, f64)> {
    vec![
        (Sgd::new(0.1).into(), 200, 1e-9),
        (Momentum::new(0.05).into(), 500, 1e-9),
        (Nesterov::new(0.05).into(), 500, 1e-9),
        (AdaGrad::new(0.5).into(), 500, 1e-9),
        // RMSprop divides by the root of a running average of g², so near the minimum its step
        // stays about η in size; it settles into a small oscillation of the order of η rather
        // than converging exactly (with weight decay, ≈ 0.006 from the minimum here).
        (RmsProp::new(0.01).into(), 2000, 1e-2),
        (Adam::new(0.05).into(), 2000, 1e-6),
    ]
}

#[test]
fn each_optimiser_minimises_a_quadratic() {
    for (mut opt, steps, tol) in quadratic_cases() {
        let got = minimise(&mut opt, steps);
        println!("{opt}: {got:?}");
        assert_close(got, TARGET, tol);
    }
}

#[test]
fn weight_decay_shifts_the_minimum() {
    // With λ, the weights minimise (w − c)² + ½·λ·w²: 2·(w − c) + λ·w = 0, so w = 2c/(2 + λ).
    // The bias is not decayed: it still goes to c_b.
    let lambda = 0.5;
    let shifted = [
        2.0 * TARGET[0] / (2.0 + lambda),
        2.0 * TARGET[1] / (2.0 + lambda),
        TARGET[2],
    ];
    assert_close(shifted, [2.4, -1.2, 0.7], 1e-12);
    for (opt, steps, tol) in quadratic_cases() {
        let mut opt = opt.with_weight_decay(lambda);
        let got = minimise(&mut opt, steps);
        println!("{opt}: {got:?}");
        assert_close(got, shifted, tol);
    }
}

// ---------------------------------------------------------------------------------------------
// By name, for the command line.

#[test]
fn from_name_gives_the_book_defaults() {
    let names: Vec<&str> = Optim::NAMES
        .iter()
        .map(|n| Optim::from_name(n).unwrap().name())
        .collect();
    assert_eq!(names, Optim::NAMES);

    match Optim::from_name("sgd").unwrap() {
        Optim::Sgd(o) => assert_eq!((o.lr, o.weight_decay), (0.01, 0.0)),
        other => panic!("{other:?}"),
    }
    match Optim::from_name("momentum").unwrap() {
        Optim::Momentum(o) => assert_eq!((o.lr, o.momentum), (0.01, 0.9)),
        other => panic!("{other:?}"),
    }
    match Optim::from_name("nesterov").unwrap() {
        Optim::Nesterov(o) => assert_eq!((o.lr, o.momentum), (0.01, 0.9)),
        other => panic!("{other:?}"),
    }
    match Optim::from_name("adagrad").unwrap() {
        Optim::AdaGrad(o) => assert_eq!((o.lr, o.eps), (0.01, 1e-7)),
        other => panic!("{other:?}"),
    }
    match Optim::from_name("rmsprop").unwrap() {
        Optim::RmsProp(o) => assert_eq!((o.lr, o.decay_rate, o.eps), (0.01, 0.99, 1e-7)),
        other => panic!("{other:?}"),
    }
    match Optim::from_name("adam").unwrap() {
        Optim::Adam(o) => assert_eq!(
            (o.lr, o.beta1, o.beta2, o.eps, o.steps()),
            (0.001, 0.9, 0.999, 1e-7, 0)
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn names_are_case_insensitive_and_parse() {
    assert_eq!(Optim::from_name("Adam").unwrap().name(), "adam");
    assert_eq!(Optim::from_name("RMSprop").unwrap().name(), "rmsprop");
    let parsed: Optim = "AdaGrad".parse().unwrap();
    assert_eq!(parsed.name(), "adagrad");
}

#[test]
fn unknown_name_lists_the_valid_ones() {
    let err = Optim::from_name("adamw").unwrap_err();
    assert_eq!(
        err,
        Error::UnknownOptimizer {
            name: "adamw".into(),
            known: "sgd, momentum, nesterov, adagrad, rmsprop, adam".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "there is no optimiser named \"adamw\"; choose one of: sgd, momentum, nesterov, adagrad, \
         rmsprop, adam"
    );
    assert!("".parse::<Optim>().is_err());
}

#[test]
fn display_shows_the_hyperparameters() {
    let shown: Vec<String> = Optim::NAMES
        .iter()
        .map(|n| Optim::from_name(n).unwrap().to_string())
        .collect();
    assert_eq!(
        shown,
        [
            "sgd(lr=0.01)",
            "momentum(lr=0.01, momentum=0.9)",
            "nesterov(lr=0.01, momentum=0.9)",
            "adagrad(lr=0.01, eps=1e-7)",
            "rmsprop(lr=0.01, decay_rate=0.99, eps=1e-7)",
            "adam(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7)",
        ]
    );
    let decayed = Optim::from_name("sgd")
        .unwrap()
        .with_lr(0.1)
        .with_weight_decay(1e-4);
    assert_eq!(decayed.to_string(), "sgd(lr=0.1, weight_decay=0.0001)");
    assert_eq!(decayed.weight_decay(), 1e-4);
}

#[test]
fn a_network_written_by_hand_refuses_16_bit_weights_it_cannot_read() {
    use chainrule_runtime::{Network, WeightPrecision};
    // `Toy` does not override `set_one_sample_weights`: full precision is what it reads anyway,
    // and 16 bits are refused with a reason rather than ignored.
    let mut toy = Toy::<f32>::new([1.0, 2.0], 0.5);
    toy.set_one_sample_weights(WeightPrecision::Full).unwrap();
    for precision in [WeightPrecision::Half, WeightPrecision::BFloat16] {
        let err = toy.set_one_sample_weights(precision).unwrap_err();
        let reason = if std::arch::is_x86_feature_detected!("avx512f") {
            "it does not implement Network::set_one_sample_weights"
        } else {
            "this processor lacks AVX-512, which the 16-bit one-sample kernels need"
        };
        assert_eq!(
            err,
            Error::UnsupportedPrecision {
                network: "Toy",
                precision,
                reason
            }
        );
        let err = Toy::<f64>::new([1.0, 2.0], 0.5)
            .set_one_sample_weights(precision)
            .unwrap_err();
        assert!(err.to_string().contains("computes in f64"), "{err}");
    }
}
