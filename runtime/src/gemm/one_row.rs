//! One row times a weight matrix (batch 1, the latency path): `z = x·W + b`, read as one dot
//! product per output over a copy of `W` laid out for it.
//!
//! Row-major, `W`'s columns are strided: one row `x` times `W` adds `x[i]` times each row of `W`
//! into the outputs, which keeps every output's sum in a register chain and reads rows that
//! straddle cache lines (2.3 µs for the book's 784×50 layer on one core). The copy serves four
//! outputs at a time, sharing each load of `x`: for each group of four columns it holds their
//! first 16 values, then their next 16, and so on, 64-byte aligned, so that every load is a whole
//! cache line and the whole copy is read front to back as one stream. The weight (157 KB for
//! 784×50) does not fit in L1, so every call streams it from L2; one stream does that at nearly
//! the speed of a loop of nothing but loads (0.85 against 0.78–0.82 µs on the development
//! machine's AMD Zen 5), where four columns stored one after the other, four short streams per
//! group, took 1.18 µs. The copy is kept with the weight ([`ColumnCopy`] in
//! [`Param`](crate::Param)), made once the weight has served [`USES_BEFORE_COPY`] one-row products
//! unchanged, and dropped whenever the weight may change.
//!
//! With [`WeightPrecision::Half`] the copy is rounded to IEEE half precision (binary16) and made at
//! the first one-row product: half the bytes to stream, widened to `f32` as they are loaded, the
//! sums still in `f32`.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use ndarray::ArrayView2;

#[cfg(target_arch = "x86_64")]
use super::{Ends, Raw, first_lanes};

/// One-row products a weight serves unchanged before it is copied for them: a weight that
/// changes after every sample (training one sample at a time) is never copied, and one that
/// stays (inference) is copied once, for the cost of about four of its products (10 µs for the
/// book's 784×50 weight).
pub(crate) const USES_BEFORE_COPY: u32 = 16;

/// How forward passes on a single sample read the weights of affine layers (see
/// [`Network::set_one_sample_weights`](crate::Network::set_one_sample_weights)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightPrecision {
    /// As they are: the same products as any batch, up to the order of the sums.
    #[default]
    Full,
    /// Rounded to IEEE half precision (binary16: 11 significant bits, relative error at most
    /// 2⁻¹¹ per weight), widened back to `f32` as they are read; the sums, biases and
    /// activations stay in `f32`. A weight too large for half precision (above 65504) keeps full
    /// precision. Batches of more than one sample read the weights as they are; a loss on a
    /// single sample reads the copy too.
    Half,
}

/// A copy of a weight matrix laid out for one-row products.
///
/// The columns of `W` (in × out) go in groups of four (the last group may have fewer), each
/// column padded with zeros to [`stride`] values; a group of `O` columns starting at column `j`
/// starts at element `j · stride`, and holds 16 values of each of its columns in turn: element
/// `i` of its column `o` is at `16·O·(i / 16) + 16·o + i % 16`. The copy starts on a 64-byte
/// boundary, so every group and every run of 16 values does too (32-byte in half precision).
pub(crate) struct ColumnCopy<T> {
    /// The columns, from the first 64-byte boundary on; allocated at the first one-row product,
    /// so a later one allocates nothing.
    data: Vec<T>,
    /// The same columns in half precision (the bits of binary16 numbers), when asked for and
    /// every weight fits; empty otherwise.
    half: Vec<u16>,
    /// Which copy one-row products read.
    precision: WeightPrecision,
    /// One-row products since the weight last changed; the copy is valid from
    /// [`ColumnCopy::uses_before_copy`] on.
    uses: u32,
}

impl<T> ColumnCopy<T> {
    /// The weight may have changed: the copy, if any, is out of date.
    pub(crate) fn invalidate(&mut self) {
        self.uses = 0;
    }

    /// Chooses the copy that one-row products read from the next one on.
    pub(crate) fn set_precision(&mut self, precision: WeightPrecision) {
        if precision != self.precision {
            self.precision = precision;
            self.invalidate();
        }
    }

    /// One-row products the weight serves unchanged before it is copied: a copy in half
    /// precision is asked for, for the latency of inference, so it is made at once.
    fn uses_before_copy(&self) -> u32 {
        match self.precision {
            WeightPrecision::Full => USES_BEFORE_COPY,
            WeightPrecision::Half => 1,
        }
    }
}

impl<T> Default for ColumnCopy<T> {
    fn default() -> Self {
        ColumnCopy {
            data: Vec::new(),
            half: Vec::new(),
            precision: WeightPrecision::Full,
            uses: 0,
        }
    }
}

/// A clone keeps the precision and starts without a copy: the data would sit at another
/// alignment.
impl<T> Clone for ColumnCopy<T> {
    fn clone(&self) -> Self {
        ColumnCopy {
            precision: self.precision,
            ..ColumnCopy::default()
        }
    }
}

impl<T> std::fmt::Debug for ColumnCopy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColumnCopy")
            .field("precision", &self.precision)
            .field("uses", &self.uses)
            .field("allocated", &!self.data.is_empty())
            .finish()
    }
}

/// The copy a one-row product reads, laid out as [`ColumnCopy`] says.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Columns<'a> {
    /// In `f32`.
    Full(&'a [f32]),
    /// In half precision.
    Half(&'a [u16]),
}

/// Values per column in the copy of a weight with `rows` rows: a whole number of 16-lane vectors.
fn stride(rows: usize) -> usize {
    rows.div_ceil(16) * 16
}

/// Where element `(i, j)` of a weight with `cols` columns goes in its copy (see [`ColumnCopy`]).
#[cfg(target_arch = "x86_64")]
fn position(i: usize, j: usize, stride: usize, cols: usize) -> usize {
    let first = j / GROUP * GROUP;
    let width = GROUP.min(cols - first);
    first * stride + 16 * width * (i / 16) + 16 * (j - first) + i % 16
}

/// Outputs computed together, sharing each load of `x`.
#[cfg(target_arch = "x86_64")]
const GROUP: usize = 4;

#[cfg(target_arch = "x86_64")]
impl ColumnCopy<f32> {
    /// Counts a one-row product of `w` and returns its copy (see [`ColumnCopy`]) once it is worth
    /// having, else `None`.
    pub(crate) fn for_one_row(&mut self, w: &ArrayView2<f32>) -> Option<Columns<'_>> {
        let (rows, cols) = w.dim();
        let stride = stride(rows);
        let len = stride * cols;
        if self.data.len() != len + 15 {
            // The first one-row product at this size allocates (16 floats of slack let the
            // columns start on a 64-byte boundary).
            self.data = vec![0.0; len + 15];
            self.half = Vec::new();
            self.uses = 0;
        }
        let start = self.data.as_ptr().align_offset(64);
        if self.uses < self.uses_before_copy() {
            self.uses += 1;
            if self.uses < self.uses_before_copy() {
                return None;
            }
            let columns = &mut self.data[start..start + len];
            // Row by row: `w` is read in order.
            for (i, row) in w.rows().into_iter().enumerate() {
                for (j, &value) in row.iter().enumerate() {
                    columns[position(i, j, stride, cols)] = value;
                }
            }
            self.half.clear();
            if self.precision == WeightPrecision::Half {
                if self.half.capacity() < len + 31 {
                    self.half = Vec::with_capacity(len + 31);
                }
                self.half.resize(len + 31, 0);
                let to = self.half.as_ptr().align_offset(64);
                // SAFETY: one-row products run only where AVX-512F is present.
                if !unsafe { halve(columns, &mut self.half[to..to + len]) } {
                    self.half.clear();
                }
            }
        }
        if !self.half.is_empty() {
            let to = self.half.as_ptr().align_offset(64);
            return Some(Columns::Half(&self.half[to..to + len]));
        }
        Some(Columns::Full(&self.data[start..start + len]))
    }
}

/// Rounds `from` to half precision (to nearest, ties to even) into `to`, of equal length and a
/// multiple of 16; false if a finite number is too large to have a finite half.
///
/// # Safety
/// AVX-512F must be present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn halve(from: &[f32], to: &mut [u16]) -> bool {
    debug_assert!(from.len() == to.len() && from.len().is_multiple_of(16));
    let mut fits = true;
    for (from, to) in from.chunks_exact(16).zip(to.chunks_exact_mut(16)) {
        // SAFETY: both chunks hold 16 elements.
        unsafe {
            let wide = _mm512_loadu_ps(from.as_ptr());
            let half = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(wide);
            _mm256_storeu_si256(to.as_mut_ptr().cast(), half);
            // A finite number whose half is infinite: too large. Widening back is exact.
            let finite = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(_mm512_sub_ps(wide, wide), wide);
            let back = _mm512_cvtph_ps(half);
            let infinite = !_mm512_cmp_ps_mask::<_CMP_ORD_Q>(_mm512_sub_ps(back, back), back);
            fits &= finite & infinite == 0;
        }
    }
    fits
}

/// `z = start + x·W` (and `max(z, 0)` into `ends.relu`) for one row `x` of length k and `W`
/// given as its copy `columns` (see [`ColumnCopy`]).
///
/// # Safety
/// AVX-512F must be present; `x` must hold k contiguous floats, `columns` must come from
/// [`ColumnCopy::for_one_row`] for a k-row weight with as many columns as `z`; `z` must have one
/// row, and `ends` must address matrices of its shape, with a scale and keep of 1 and no gate (a
/// forward pass).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn product(x: &[f32], columns: Columns, z: Raw, n: usize, ends: Ends) {
    // SAFETY: passed on from the caller.
    unsafe {
        match columns {
            Columns::Full(columns) => product_of(x, columns, z, n, ends),
            Columns::Half(columns) => product_of(x, columns, z, n, ends),
        }
    }
}

/// [`product`] for a copy whose elements are `W` (`f32`, or `u16` for half precision).
///
/// # Safety
/// As for [`product`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn product_of<W>(x: &[f32], columns: &[W], z: Raw, n: usize, ends: Ends) {
    debug_assert!(
        !ends.late_start(),
        "one-row products are forward passes, unscaled and ungated"
    );
    let k = x.len();
    let stride = stride(k);
    debug_assert_eq!(columns.len(), stride * n);
    // `x` is read where it lies, on a 64-byte boundary or not: on the development machine's
    // Zen 5, copying a row of 784 to one first cost more than loads that straddle cache lines
    // (784×50: 1.00 against 0.92 µs a call).
    let mut j = 0;
    while j < n {
        let outputs = (n - j).min(GROUP);
        let group = columns.as_ptr().wrapping_add(j * stride);
        // SAFETY: the group's `outputs` columns of `stride` ≥ k values each lie in `columns`
        // from `group` on, interleaved and aligned as `sums` needs (the caller's contract).
        let sums = unsafe {
            match outputs {
                4 => sums::<4, W>(x, group, stride),
                3 => sums::<3, W>(x, group, stride),
                2 => sums::<2, W>(x, group, stride),
                _ => sums::<1, W>(x, group, stride),
            }
        };
        for (o, &sum) in sums.iter().enumerate().take(outputs) {
            // SAFETY: the caller vouches that `z` and `ends` address one row of n columns.
            unsafe {
                let sum = ends.start.map_or(sum, |start| sum + *start.at(0, j + o));
                *z.at(0, j + o) = sum;
                if let Some(relu) = ends.relu {
                    *relu.at(0, j + o) = sum.max(0.0);
                }
            }
        }
        j += outputs;
    }
}

/// The dot products of `x` with the `O` columns of the group at `group`, in the first `O` of
/// four sums; a loop for each `O`, so that no step asks which columns exist.
///
/// # Safety
/// AVX-512F must be present; `W` must be `f32`, or `u16` holding half-precision numbers; the
/// group must hold `O · stride` elements, `stride` ≥ `x.len()`, laid out as [`ColumnCopy`] says,
/// from a 64-byte boundary (32-byte for `u16`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn sums<const O: usize, W>(x: &[f32], group: *const W, stride: usize) -> [f32; 4] {
    // The 16 values of column `o` from element `16·p` on, widened to `f32` from half precision
    // where they are stored so (the choice is made at compile time).
    macro_rules! load {
        ($p:expr, $o:expr) => {{
            let at = group.add(16 * O * $p + 16 * $o);
            if size_of::<W>() == 2 {
                _mm512_cvtph_ps(_mm256_load_si256(at.cast()))
            } else {
                _mm512_load_ps(at.cast())
            }
        }};
    }
    let k = x.len();
    debug_assert!(stride >= k);
    let (full, tail) = (k / 16, first_lanes(k % 16));
    let x = x.as_ptr();
    // Two sums per output (even and odd vectors of the column), so that each register's chain of
    // multiply-adds is half as long.
    let mut even = [_mm512_setzero_ps(); O];
    let mut odd = [_mm512_setzero_ps(); O];
    // SAFETY (the loads): `x` holds k floats and the tail load is masked to them; the group
    // holds `stride / 16` ≥ k / 16 runs of 16 values per column, aligned (the caller's contract).
    unsafe {
        let mut p = 0;
        while p + 2 <= full {
            let x0 = _mm512_loadu_ps(x.add(16 * p));
            let x1 = _mm512_loadu_ps(x.add(16 * p + 16));
            for o in 0..O {
                even[o] = _mm512_fmadd_ps(x0, load!(p, o), even[o]);
                odd[o] = _mm512_fmadd_ps(x1, load!(p + 1, o), odd[o]);
            }
            p += 2;
        }
        if p < full {
            let x0 = _mm512_loadu_ps(x.add(16 * p));
            for (o, sum) in even.iter_mut().enumerate() {
                *sum = _mm512_fmadd_ps(x0, load!(p, o), *sum);
            }
            p += 1;
        }
        if tail != 0 {
            let x0 = _mm512_maskz_loadu_ps(tail, x.add(16 * p));
            for (o, sum) in odd.iter_mut().enumerate() {
                *sum = _mm512_fmadd_ps(x0, load!(p, o), *sum);
            }
        }
    }
    let mut out = [0.0; 4];
    for o in 0..O {
        out[o] = _mm512_reduce_add_ps(_mm512_add_ps(even[o], odd[o]));
    }
    out
}
