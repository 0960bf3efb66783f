//! Gradient checking: numerical gradients by central differences (the seed's 수치 미분, numerical
//! differentiation) against the gradients backpropagation computes.
//!
//! Numerical differentiation is simple and slow: two loss evaluations per scalar parameter.
//! Backpropagation is fast and exact up to rounding. Checking one against the other, in `f64`, is
//! how the backward code is shown correct.

use ndarray::ArrayView2;

use crate::error::Result;
use crate::network::Trainable;

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
pub fn check<N>(
    net: &mut N,
    x: ArrayView2<'_, f64>,
    t: N::Targets<'_>,
    eps: f64,
) -> Result<Vec<ParamCheck>>
where
    N: Trainable<Elem = f64>,
{
    net.gradient(x, t)?;
    let mut analytic = Vec::with_capacity(N::PARAM_NAMES.len());
    net.for_each_param(&mut |p| analytic.push(p.grad.to_vec()));

    let mut report = Vec::with_capacity(analytic.len());
    for (&name, analytic) in N::PARAM_NAMES.iter().zip(&analytic) {
        let mut max_abs_diff = 0.0_f64;
        let mut scale = 0.0_f64;
        for (i, &a) in analytic.iter().enumerate() {
            let original = net.param(name)?.value[i];
            net.param_mut(name)?.value[i] = original + eps;
            let plus = net.loss(x, t)?;
            net.param_mut(name)?.value[i] = original - eps;
            let minus = net.loss(x, t)?;
            net.param_mut(name)?.value[i] = original;
            let numeric = (plus - minus) / (2.0 * eps);
            max_abs_diff = max_abs_diff.max((a - numeric).abs());
            scale = scale.max(a.abs()).max(numeric.abs());
        }
        report.push(ParamCheck {
            name,
            len: analytic.len(),
            max_abs_diff,
            rel_error: if scale == 0.0 {
                0.0
            } else {
                max_abs_diff / scale
            },
        });
    }
    // Leave the gradients of the unperturbed parameters in place.
    net.gradient(x, t)?;
    Ok(report)
}

/// The worst `rel_error` of a report (0 for an empty one).
pub fn worst(report: &[ParamCheck]) -> f64 {
    report.iter().map(|c| c.rel_error).fold(0.0, f64::max)
}
