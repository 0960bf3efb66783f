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
//! With [`WeightPrecision::Half`] or [`WeightPrecision::BFloat16`] the copy is rounded to 16 bits
//! and made at the first one-row product: half the bytes to stream, widened to `f32` as they are
//! loaded, the sums still in `f32`. Widening binary16 takes a conversion instruction per 16
//! weights, which bounds the kernel (784×50: 0.58 µs, where L2 would stream the 78 KB in about
//! 0.4); a bfloat16 is the upper half of an `f32`, so the copy holds two rows' values in each
//! 32-bit lane and a shift or a mask widens them (0.43 µs), for three fewer significant bits.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use ndarray::ArrayView2;

#[cfg(target_arch = "x86_64")]
use super::{Ends, Raw, first_lanes};
use crate::precision::WeightPrecision;

/// One-row products a weight serves unchanged before it is copied for them: a weight that
/// changes after every sample (training one sample at a time) is never copied, and one that
/// stays (inference) is copied once, for the cost of about four of its products (10 µs for the
/// book's 784×50 weight).
pub(crate) const USES_BEFORE_COPY: u32 = 16;

/// A copy of a weight matrix laid out for one-row products.
///
/// The columns of `W` (in × out) go in groups of four (the last group may have fewer), each
/// column padded with zeros to [`stride`] values; a group of `O` columns starting at column `j`
/// starts at element `j · stride`, and holds 16 values of each of its columns in turn: element
/// `i` of its column `o` is at `16·O·(i / 16) + 16·o + i % 16`. The copy starts on a 64-byte
/// boundary, so every group and every run of 16 values does too (32-byte in half precision).
///
/// In bfloat16 the stride is a multiple of 32 and a group holds 32 values of each of its
/// columns in turn, as 16 pairs: element `i` of column `o` is at
/// `32·O·(i / 32) + 32·o + 2·(i % 16) + (i % 32) / 16`, so that each 32-bit lane holds the value
/// of one row in its lower half and that of the row 16 further on in its upper half.
pub(crate) struct ColumnCopy<T> {
    /// The columns, from the first 64-byte boundary on; allocated at the first one-row product,
    /// so a later one allocates nothing.
    data: Vec<T>,
    /// The columns in 16 bits (the bits of binary16 or bfloat16 numbers, laid out for the
    /// precision asked for) when one is and every weight fits; empty otherwise.
    narrow: Vec<u16>,
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

    /// One-row products the weight serves unchanged before it is copied: a copy in 16 bits is
    /// asked for, for the latency of inference, so it is made at once.
    fn uses_before_copy(&self) -> u32 {
        match self.precision {
            WeightPrecision::Full => USES_BEFORE_COPY,
            WeightPrecision::Half | WeightPrecision::BFloat16 => 1,
        }
    }
}

impl<T> Default for ColumnCopy<T> {
    fn default() -> Self {
        ColumnCopy {
            data: Vec::new(),
            narrow: Vec::new(),
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
    /// In bfloat16, two rows to a 32-bit lane.
    BFloat16(&'a [u16]),
}

/// Values per column in the copy of a weight with `rows` rows: a whole number of 16-lane vectors
/// (of pairs of them in bfloat16).
fn stride(rows: usize, precision: WeightPrecision) -> usize {
    let run = match precision {
        WeightPrecision::Full | WeightPrecision::Half => 16,
        WeightPrecision::BFloat16 => 32,
    };
    rows.div_ceil(run) * run
}

/// Where element `(i, j)` of a weight with `cols` columns goes in its copy in `precision` (see
/// [`ColumnCopy`]), whose columns are `stride` values long.
#[cfg(target_arch = "x86_64")]
fn position(i: usize, j: usize, stride: usize, cols: usize, precision: WeightPrecision) -> usize {
    let first = j / GROUP * GROUP;
    let width = GROUP.min(cols - first);
    match precision {
        WeightPrecision::Full | WeightPrecision::Half => {
            first * stride + 16 * width * (i / 16) + 16 * (j - first) + i % 16
        }
        WeightPrecision::BFloat16 => {
            first * stride + 32 * width * (i / 32) + 32 * (j - first) + 2 * (i % 16) + (i % 32) / 16
        }
    }
}

/// How far ahead of its loads [`sums`] prefetches the copy, in bytes.
#[cfg(target_arch = "x86_64")]
const PREFETCH_AHEAD: usize = 2048;

/// Outputs computed together, sharing each load of `x`.
#[cfg(target_arch = "x86_64")]
const GROUP: usize = 4;

#[cfg(target_arch = "x86_64")]
impl ColumnCopy<f32> {
    /// Counts a one-row product of `w` and returns its copy (see [`ColumnCopy`]) once it is worth
    /// having, else `None`.
    pub(crate) fn for_one_row(&mut self, w: &ArrayView2<f32>) -> Option<Columns<'_>> {
        let (rows, cols) = w.dim();
        let (stride, narrow_stride) = (
            stride(rows, WeightPrecision::Full),
            stride(rows, self.precision),
        );
        let len = stride * cols;
        if self.data.len() != len + 15 {
            // The first one-row product at this size allocates (16 floats of slack let the
            // columns start on a 64-byte boundary).
            self.data = vec![0.0; len + 15];
            self.narrow = Vec::new();
            self.uses = 0;
        }
        let start = self.data.as_ptr().align_offset(64);
        let narrow_len = narrow_stride * cols;
        if self.uses < self.uses_before_copy() {
            self.uses += 1;
            if self.uses < self.uses_before_copy() {
                return None;
            }
            let columns = &mut self.data[start..start + len];
            // Row by row: `w` is read in order.
            for (i, row) in w.rows().into_iter().enumerate() {
                for (j, &value) in row.iter().enumerate() {
                    columns[position(i, j, stride, cols, WeightPrecision::Full)] = value;
                }
            }
            self.narrow.clear();
            if self.precision != WeightPrecision::Full {
                // 32 values of slack let the copy start on a 64-byte boundary.
                if self.narrow.capacity() < narrow_len + 31 {
                    self.narrow = Vec::with_capacity(narrow_len + 31);
                }
                self.narrow.resize(narrow_len + 31, 0);
                let to = self.narrow.as_ptr().align_offset(64);
                let narrow = &mut self.narrow[to..to + narrow_len];
                let fits = match self.precision {
                    // SAFETY: one-row products run only where AVX-512F is present.
                    WeightPrecision::Half => unsafe { halve(columns, narrow) },
                    _ => round_to_bfloat16(w, narrow, narrow_stride),
                };
                if !fits {
                    self.narrow.clear();
                }
            }
        }
        if !self.narrow.is_empty() {
            let to = self.narrow.as_ptr().align_offset(64);
            let narrow = &self.narrow[to..to + narrow_len];
            return Some(match self.precision {
                WeightPrecision::BFloat16 => Columns::BFloat16(narrow),
                _ => Columns::Half(narrow),
            });
        }
        Some(Columns::Full(&self.data[start..start + len]))
    }
}

/// Rounds `w` to bfloat16 (to nearest, ties to even) into `to`, laid out in pairs (see
/// [`ColumnCopy`]) with columns of `stride` values; false if a finite number rounds to infinity.
#[cfg(target_arch = "x86_64")]
fn round_to_bfloat16(w: &ArrayView2<f32>, to: &mut [u16], stride: usize) -> bool {
    let cols = w.ncols();
    let mut fits = true;
    for (i, row) in w.rows().into_iter().enumerate() {
        for (j, &value) in row.iter().enumerate() {
            let bits = value.to_bits();
            let rounded = if value.is_nan() {
                // Quiet, whatever its payload: rounding could carry it into an infinity.
                (bits >> 16) as u16 | 0x40
            } else {
                let rounded = (bits + 0x7fff + ((bits >> 16) & 1)) >> 16;
                fits &= value.is_infinite() || rounded & 0x7fff != 0x7f80;
                rounded as u16
            };
            to[position(i, j, stride, cols, WeightPrecision::BFloat16)] = rounded;
        }
    }
    fits
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
            Columns::Full(columns) => product_of::<Full>(x, columns, z, n, ends),
            Columns::Half(columns) => product_of::<Half>(x, columns, z, n, ends),
            Columns::BFloat16(columns) => product_of::<BFloat16>(x, columns, z, n, ends),
        }
    }
}

/// [`product`] for a copy in the layout `L`.
///
/// # Safety
/// As for [`product`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn product_of<L: Layout>(x: &[f32], columns: &[L::Elem], z: Raw, n: usize, ends: Ends) {
    debug_assert!(
        !ends.late_start(),
        "one-row products are forward passes, unscaled and ungated"
    );
    let k = x.len();
    let stride = stride(k, L::PRECISION);
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
                4 => sums::<4, L>(x, group, stride),
                3 => sums::<3, L>(x, group, stride),
                2 => sums::<2, L>(x, group, stride),
                _ => sums::<1, L>(x, group, stride),
            }
        };
        for (o, &sum) in sums.iter().enumerate().take(outputs) {
            // SAFETY: the caller vouches that `z` and `ends` address one row of n columns.
            unsafe {
                let sum = ends.start.map_or(sum, |start| sum + *start.at(0, j + o));
                *z.at(0, j + o) = sum;
                if let Some(relu) = ends.relu {
                    *relu.at(0, j + o) = super::relu(sum);
                }
            }
        }
        j += outputs;
    }
}

/// How a copy's values are stored, and widened to `f32` 32 rows of a column at a time.
#[cfg(target_arch = "x86_64")]
trait Layout {
    /// The stored element.
    type Elem;
    /// The precision whose layout this is.
    const PRECISION: WeightPrecision;
    /// Whether [`sums`] prefetches the copy ahead of its loads: it pays where streaming from L2
    /// is what bounds the loop (in `f32`), not where widening the values does.
    const PREFETCH: bool;

    /// Rows `32·c ..` and `32·c + 16 ..` (16 each) of column `o` of the group of `O` columns at
    /// `group`.
    ///
    /// # Safety
    /// AVX-512F must be present; the group must hold them, laid out as [`ColumnCopy`] says.
    unsafe fn pair<const O: usize>(
        group: *const Self::Elem,
        c: usize,
        o: usize,
    ) -> (__m512, __m512);

    /// Rows `32·c ..` (16) of column `o`, where the column may end before row `32·c + 16`.
    ///
    /// # Safety
    /// As for [`Layout::pair`].
    unsafe fn first<const O: usize>(group: *const Self::Elem, c: usize, o: usize) -> __m512;
}

/// `f32`, in runs of 16 values.
#[cfg(target_arch = "x86_64")]
struct Full;

/// Half precision, in runs of 16 values.
#[cfg(target_arch = "x86_64")]
struct Half;

/// bfloat16, in runs of 16 pairs.
#[cfg(target_arch = "x86_64")]
struct BFloat16;

#[cfg(target_arch = "x86_64")]
impl Layout for Full {
    type Elem = f32;
    const PRECISION: WeightPrecision = WeightPrecision::Full;
    const PREFETCH: bool = true;

    #[inline(always)]
    unsafe fn pair<const O: usize>(group: *const f32, c: usize, o: usize) -> (__m512, __m512) {
        // SAFETY: passed on from the caller.
        unsafe {
            let at = group.add(32 * O * c + 16 * o);
            (_mm512_load_ps(at), _mm512_load_ps(at.add(16 * O)))
        }
    }

    #[inline(always)]
    unsafe fn first<const O: usize>(group: *const f32, c: usize, o: usize) -> __m512 {
        // SAFETY: passed on from the caller.
        unsafe { _mm512_load_ps(group.add(32 * O * c + 16 * o)) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Layout for Half {
    type Elem = u16;
    const PRECISION: WeightPrecision = WeightPrecision::Half;
    const PREFETCH: bool = false;

    #[inline(always)]
    unsafe fn pair<const O: usize>(group: *const u16, c: usize, o: usize) -> (__m512, __m512) {
        // SAFETY: passed on from the caller.
        unsafe {
            let at = group.add(32 * O * c + 16 * o);
            (
                _mm512_cvtph_ps(_mm256_load_si256(at.cast())),
                _mm512_cvtph_ps(_mm256_load_si256(at.add(16 * O).cast())),
            )
        }
    }

    #[inline(always)]
    unsafe fn first<const O: usize>(group: *const u16, c: usize, o: usize) -> __m512 {
        // SAFETY: passed on from the caller.
        unsafe { _mm512_cvtph_ps(_mm256_load_si256(group.add(32 * O * c + 16 * o).cast())) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Layout for BFloat16 {
    type Elem = u16;
    const PRECISION: WeightPrecision = WeightPrecision::BFloat16;
    const PREFETCH: bool = false;

    #[inline(always)]
    unsafe fn pair<const O: usize>(group: *const u16, c: usize, o: usize) -> (__m512, __m512) {
        // SAFETY: passed on from the caller.
        unsafe {
            let pairs = _mm512_load_si512(group.add(32 * O * c + 32 * o).cast());
            // A bfloat16 in the upper half of a lane is that lane's `f32`, once the lower half
            // is cleared; the one in the lower half, once shifted up.
            (
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(pairs)),
                _mm512_castsi512_ps(_mm512_and_si512(pairs, _mm512_set1_epi32(!0xffff))),
            )
        }
    }

    #[inline(always)]
    unsafe fn first<const O: usize>(group: *const u16, c: usize, o: usize) -> __m512 {
        // SAFETY: passed on from the caller (the copy's columns are a whole number of 32
        // values long, so the pairs are all there).
        unsafe { Self::pair::<O>(group, c, o).0 }
    }
}

/// The dot products of `x` with the `O` columns of the group at `group`, in the first `O` of
/// four sums; a loop for each `O`, so that no step asks which columns exist.
///
/// # Safety
/// AVX-512F must be present; the group must hold `O · stride` elements, `stride` ≥ `x.len()`,
/// laid out as [`ColumnCopy`] says for `L`, from a 64-byte boundary (32-byte in half
/// precision).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn sums<const O: usize, L: Layout>(
    x: &[f32],
    group: *const L::Elem,
    stride: usize,
) -> [f32; 4] {
    let k = x.len();
    debug_assert!(stride >= k);
    let (blocks, rest) = (k / 32, k % 32);
    let x = x.as_ptr();
    // Two sums per output (the first and second 16 rows of each block of 32), so that each
    // register's chain of multiply-adds is half as long.
    let mut even = [_mm512_setzero_ps(); O];
    let mut odd = [_mm512_setzero_ps(); O];
    // SAFETY (the loads): `x` holds k floats and the loads past them are masked off; the group
    // holds `stride` ≥ k values per column, laid out for `L` (the caller's contract), and `L`
    // reads the second 16 rows of a block only where rows past the first 16 exist.
    unsafe {
        for c in 0..blocks {
            let x0 = _mm512_loadu_ps(x.add(32 * c));
            let x1 = _mm512_loadu_ps(x.add(32 * c + 16));
            // The block is read in address order, the lines 2 KB ahead asked for by hand: with
            // the hardware's prefetcher alone, or the columns' halves taken in turn, the f32 loop
            // ran 8–10 % slower in some builds than in others (by where its code happened to lie).
            if L::PREFETCH {
                let ahead = group
                    .add(32 * O * c)
                    .cast::<i8>()
                    .wrapping_add(PREFETCH_AHEAD);
                for line in (0..size_of::<L::Elem>() * 32 * O).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line));
                }
            }
            let w: [(__m512, __m512); O] = std::array::from_fn(|o| L::pair::<O>(group, c, o));
            for o in 0..O {
                even[o] = _mm512_fmadd_ps(x0, w[o].0, even[o]);
            }
            for o in 0..O {
                odd[o] = _mm512_fmadd_ps(x1, w[o].1, odd[o]);
            }
        }
        if rest > 0 {
            let x0 = _mm512_maskz_loadu_ps(first_lanes(rest), x.add(32 * blocks));
            if rest > 16 {
                let x1 = _mm512_maskz_loadu_ps(first_lanes(rest - 16), x.add(32 * blocks + 16));
                for o in 0..O {
                    let (w0, w1) = L::pair::<O>(group, blocks, o);
                    even[o] = _mm512_fmadd_ps(x0, w0, even[o]);
                    odd[o] = _mm512_fmadd_ps(x1, w1, odd[o]);
                }
            } else {
                for (o, sum) in even.iter_mut().enumerate() {
                    *sum = _mm512_fmadd_ps(x0, L::first::<O>(group, blocks, o), *sum);
                }
            }
        }
    }
    let mut out = [0.0; 4];
    for o in 0..O {
        out[o] = _mm512_reduce_add_ps(_mm512_add_ps(even[o], odd[o]));
    }
    out
}
