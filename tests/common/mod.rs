//! What the gradient-check test files share: seeded random data and the tolerance check.

#![allow(dead_code)]

use chainrule::gradcheck::{self, ParamCheck};
use chainrule::ndarray::Array2;
use chainrule::prelude::*;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

/// The worst relative error the checks accept; see `ParamCheck::rel_error`.
pub const TOLERANCE: f64 = 1e-6;
/// The central-difference step.
pub const EPS: f64 = 1e-5;

/// Values in [-2, 2) from a seeded generator.
pub fn random(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
    uniform(rows, cols, seed, -2.0, 2.0)
}

/// Values in [low, high) from a seeded generator.
pub fn uniform(rows: usize, cols: usize, seed: u64, low: f64, high: f64) -> Array2<f64> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    Array2::from_shape_simple_fn((rows, cols), || rng.random_range(low..high))
}

/// Class indices below `classes` from a seeded generator.
pub fn classes(rows: usize, classes: usize, seed: u64) -> Vec<usize> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..rows).map(|_| rng.random_range(0..classes)).collect()
}

/// Prints a gradient-check report and fails if its worst relative error reaches [`TOLERANCE`].
pub fn assert_close(network: &str, report: &[ParamCheck]) {
    for check in report {
        println!(
            "{network:<28} {:<16} {:>6} scalars  max |Δ| {:.2e}  relative {:.2e}",
            check.name, check.len, check.max_abs_diff, check.rel_error
        );
    }
    let worst = gradcheck::worst(report);
    assert!(
        worst < TOLERANCE,
        "{network}: worst relative error {worst:.3e} ≥ {TOLERANCE:e}: {report:#?}"
    );
    assert!(report.iter().all(|c| c.len > 0));
}

/// Checks a network ending in `softmax_cross_entropy` on random inputs and classes.
pub fn check_classes<N>(name: &str, mut net: N, batch: usize)
where
    N: for<'t> Trainable<Elem = f64, Targets<'t> = &'t [usize]>,
{
    let x = random(batch, N::INPUT, 3);
    let t = classes(batch, N::OUTPUT, 4);
    let report = gradcheck::check(&mut net, x.view(), &t, EPS).unwrap();
    assert_eq!(report.len(), N::PARAM_NAMES.len());
    assert_close(name, &report);
}
