//! Gradient checking: numerical gradients by central differences (the seed's 수치 미분, numerical
//! differentiation) against the gradients backpropagation computes.
//!
//! Numerical differentiation is simple and slow: two loss evaluations per scalar parameter.
//! Backpropagation is fast and exact up to rounding. Checking one against the other, in `f64`, is
//! how the backward code is shown correct.

use ndarray::ArrayView2;

use crate::error::Result;
use crate::network::Trainable;

/// The seed of the dropout masks in every pass of a check, so that each pass drops the same units.
pub const MASK_SEED: u64 = 0x6472_6f70;

/// How well backprop agreed with the numerical gradient for one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamCheck {
    /// The parameter's name, e.g. `affine0.weight`.
    pub name: &'static str,
    /// How many scalars were compared.
    pub len: usize,
    /// The largest absolute difference between the two gradients, over the parameter's elements.
    pub max_abs_diff: f64,
    /// `max_abs_diff` divided by the largest gradient magnitude of the parameter (either method):
    /// the worst error relative to the gradient's own scale. 0 when both gradients are all zero.
    pub rel_error: f64,
}

/// Compares backprop with central differences `(L(w+ε) − L(w−ε)) / 2ε` for every scalar of every
/// parameter of `net`, on the batch `x` with targets `t`. Returns one [`ParamCheck`] per parameter.
///
/// Parameters are restored exactly after each probe; gradients are those of `x`, `t` at the end.
/// The loss is a training pass's: a batch normalisation uses the batch's statistics, and dropout
/// the same masks in every pass (the mask generator is restarted with [`MASK_SEED`] before each).
pub fn check<N>(
    net: &mut N,
    x: ArrayView2<'_, f64>,
    t: N::Targets<'_>,
    eps: f64,
) -> Result<Vec<ParamCheck>>
where
    N: Trainable<Elem = f64>,
{
    check_sampled(net, x, t, eps, usize::MAX)
}

/// [`check`] on at most `per_param` scalars of each parameter, spread evenly over it (the first
/// and the last among them): for networks too large to probe every scalar twice.
pub fn check_sampled<N>(
    net: &mut N,
    x: ArrayView2<'_, f64>,
    t: N::Targets<'_>,
    eps: f64,
    per_param: usize,
) -> Result<Vec<ParamCheck>>
where
    N: Trainable<Elem = f64>,
{
    net.seed_masks(MASK_SEED);
    net.gradient(x, t)?;
    let mut analytic = Vec::with_capacity(N::PARAM_NAMES.len());
    net.for_each_param(&mut |p| analytic.push(p.grad.to_vec()));

    let mut report = Vec::with_capacity(analytic.len());
    for (&name, analytic) in N::PARAM_NAMES.iter().zip(&analytic) {
        let mut max_abs_diff = 0.0_f64;
        let mut scale = 0.0_f64;
        let len = analytic.len();
        let probes = len.min(per_param.max(1));
        for probe in 0..probes {
            // Evenly spread, the first and the last included.
            let i = if probes == 1 {
                0
            } else {
                probe * (len - 1) / (probes - 1)
            };
            let a = analytic[i];
            let original = net.param(name)?.value[i];
            net.param_mut(name)?.value[i] = original + eps;
            net.seed_masks(MASK_SEED);
            let plus = net.loss(x, t)?;
            net.param_mut(name)?.value[i] = original - eps;
            net.seed_masks(MASK_SEED);
            let minus = net.loss(x, t)?;
            net.param_mut(name)?.value[i] = original;
            let numeric = (plus - minus) / (2.0 * eps);
            max_abs_diff = max_abs_diff.max((a - numeric).abs());
            scale = scale.max(a.abs()).max(numeric.abs());
        }
        report.push(ParamCheck {
            name,
            len: probes,
            max_abs_diff,
            rel_error: if scale == 0.0 {
                0.0
            } else {
                max_abs_diff / scale
            },
        });
    }
    // Leave the gradients of the unperturbed parameters in place.
    net.seed_masks(MASK_SEED);
    net.gradient(x, t)?;
    Ok(report)
}

/// The test `#[gradcheck]` generates, for a network ending in a loss on class indices: its
/// gradients against central differences on a random batch, at most 64 scalars per parameter.
#[doc(hidden)]
pub fn generated_test_classes<N>(mut net: N)
where
    N: for<'t> Trainable<Elem = f64, Targets<'t> = &'t [usize]>,
{
    let x = generated_batch(N::INPUT);
    let classes: Vec<usize> = (0..x.nrows())
        .map(|row| (row * 7 + 3) % N::OUTPUT)
        .collect();
    assert_generated(
        N::NAME,
        check_sampled(&mut net, x.view(), &classes, EPS, PROBES),
    );
}

/// The test `#[gradcheck]` generates, for a network ending in a loss on target values.
#[doc(hidden)]
pub fn generated_test_values<N>(mut net: N)
where
    N: for<'t> Trainable<Elem = f64, Targets<'t> = ArrayView2<'t, f64>>,
{
    let x = generated_batch(N::INPUT);
    let t = generated_batch(N::OUTPUT);
    assert_generated(
        N::NAME,
        check_sampled(&mut net, x.view(), t.view(), EPS, PROBES),
    );
}

/// Central differences' step and the worst relative error accepted, in the generated tests.
const EPS: f64 = 1e-5;
const TOLERANCE: f64 = 1e-6;
/// Scalars probed per parameter in the generated tests.
const PROBES: usize = 64;

/// Three samples of `width` values in [−1, 1), the same in every run.
fn generated_batch(width: usize) -> ndarray::Array2<f64> {
    use rand_distr::Distribution;
    let mut rng = crate::init::rng(0x6772_6164);
    let uniform = rand_distr::Uniform::new(-1.0, 1.0).expect("−1 < 1");
    ndarray::Array2::from_shape_simple_fn((3, width), || uniform.sample(&mut rng))
}

fn assert_generated(network: &str, report: Result<Vec<ParamCheck>>) {
    let report = report.unwrap_or_else(|error| panic!("{network}: {error}"));
    let worst = report
        .iter()
        .max_by(|a, b| a.rel_error.total_cmp(&b.rel_error));
    if let Some(check) = worst {
        assert!(
            check.rel_error < TOLERANCE,
            "{network}: the gradient of {} is off by {:.3e} of its largest value (at most \
             {TOLERANCE:e} expected): backprop and central differences disagree",
            check.name,
            check.rel_error
        );
    }
}

/// The worst `rel_error` of a report (0 for an empty one).
pub fn worst(report: &[ParamCheck]) -> f64 {
    report.iter().map(|c| c.rel_error).fold(0.0, f64::max)
}
