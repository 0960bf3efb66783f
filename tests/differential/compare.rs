//! Comparing a compiled network's numbers with the reference's.

use chainrule::Element;

/// The relative tolerance for an element type: 1e-12 for `f64`, 1e-5 for `f32`.
///
/// Both sides run the same kernels on the same numbers, so they should agree to the last bit;
/// the tolerance only leaves room for a kernel that sums in another order on another layout, and
/// for batch normalisation and dropout, which the reference computes with loops of its own, in
/// `f64`, rounding differently (by an ulp or so of the element type).
pub fn tolerance<T: Element>() -> f64 {
    if T::NAME == "f64" { 1e-12 } else { 1e-5 }
}

/// Checks that `actual` (the compiled network's) equals `expected` (the reference's) within the
/// relative tolerance `rel`, element by element.
///
/// An element's error is measured against the larger of its own magnitude and the largest
/// magnitude in `expected`: a value that is small only because of cancellation is judged on the
/// array's scale, not its own. All-zero arrays must match exactly, and NaN never matches.
/// On a mismatch the error names `what`, the index and both values.
pub fn compare<T: Element>(
    what: &str,
    actual: &[T],
    expected: &[T],
    rel: f64,
) -> Result<(), String> {
    compare_sums(what, actual, expected, rel, 0.0)
}

/// [`compare`] for an array of sums whose terms' magnitudes add up to as much as `terms` (for one
/// element, the largest): each element is also judged on that scale, so that sums that cancel
/// (to 0 in theory, their values rounding alone) are judged on their terms as a small element is
/// judged on its array. With `terms` 0, [`compare`].
pub fn compare_sums<T: Element>(
    what: &str,
    actual: &[T],
    expected: &[T],
    rel: f64,
    terms: f64,
) -> Result<(), String> {
    if actual.len() != expected.len() {
        return Err(format!(
            "{what}: the compiled network has {} elements, the reference {}",
            actual.len(),
            expected.len()
        ));
    }
    let scale = expected
        .iter()
        .map(|&v| Element::to_f64(v).abs())
        .fold(terms, f64::max);
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let (a, e) = (Element::to_f64(a), Element::to_f64(e));
        let allowed = rel * a.abs().max(e.abs()).max(scale);
        let within = (a - e).abs() <= allowed; // false if either is NaN
        if !within {
            return Err(format!(
                "{what}[{i}]: the compiled network gives {a:e}, the reference {e:e} \
                 (difference {:e}, allowed {allowed:e})",
                (a - e).abs()
            ));
        }
    }
    Ok(())
}

/// [`compare`] for one number.
pub fn compare_scalar<T: Element>(
    what: &str,
    actual: T,
    expected: T,
    rel: f64,
) -> Result<(), String> {
    compare(what, &[actual], &[expected], rel)
}
