//! Matrix products, `C (+)= A·B`, picked by shape, with what a layer does around them (a bias to
//! start from, a ReLU or nothing after).
//!
//! matrixmultiply copies (packs) both operands on every call, which for a small network's shapes
//! costs about a fifth of a training step, and allocates its packing buffer each time. With
//! AVX-512 and `f32`, chainrule multiplies itself:
//!
//! - `B` row-major with at most 256 columns (a layer's weight `W` in `x·W`, a batch's gradient
//!   `dy` in `xᵀ·dy`): [`avx512`] reads `B`'s rows in place, keeping a block of 6 rows × 64
//!   columns of `C` (8 × 48 when the layer is narrower) in 24 vector registers while `k` runs; the
//!   last 1–4 columns of a layer like 50 wide go through dot products instead of a mostly empty
//!   vector, and a `B` of at most 16 columns times a transposed `A` (`xᵀ·dy` for a 10-wide
//!   layer) is vectorised along the rows of `C`; a single row (batch 1) runs four interleaved
//!   sums. A small `B` in another layout (a transposed weight, in `dy·Wᵀ`) is first copied
//!   row-major into a buffer the thread keeps.
//! - a single row times a weight that comes with its copy for one-row products (batch 1 through
//!   a generated network): [`one_row`], one dot product per output.
//! - everything else: [`packed`], which packs `B` into panels (the usual blocked scheme).
//!
//! Both split large products between the [`pool`](crate::pool)'s threads at block boundaries, so
//! a result does not depend on the number of threads. Without AVX-512, or in `f64`, products go
//! to ndarray's `general_mat_mul`, except a single row, which is a plain vector-matrix loop.

use std::any::TypeId;

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2};

use crate::element::Element;

mod one_row;
#[cfg(target_arch = "x86_64")]
mod packed;

pub(crate) use one_row::ColumnCopy;
#[cfg(target_arch = "x86_64")]
pub(crate) use packed::transpose as transpose16;

/// A lane mask selecting the first `lanes` of a vector's 16 (all of them from 16 on).
#[cfg(target_arch = "x86_64")]
pub(crate) fn first_lanes(lanes: usize) -> std::arch::x86_64::__mmask16 {
    ((1u32 << lanes.min(16)) - 1) as u16
}

/// `sums` where `gate` is positive, 0 elsewhere.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn gated(
    sums: std::arch::x86_64::__m512,
    gate: std::arch::x86_64::__m512,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let open = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(gate, _mm512_setzero_ps());
    _mm512_maskz_mov_ps(open, sums)
}

/// The lane masks of the four vectors that cover `width` (≤ 64) columns: full, partial or empty.
#[cfg(target_arch = "x86_64")]
fn vector_masks(width: usize) -> [std::arch::x86_64::__mmask16; 4] {
    std::array::from_fn(|v| first_lanes(width.saturating_sub(16 * v)))
}

/// A matrix as a pointer and strides, shareable between the threads of one product.
#[derive(Clone, Copy)]
struct Raw {
    ptr: *mut f32,
    rows: isize,
    cols: isize,
}

impl Raw {
    fn of(view: &ArrayView2<f32>) -> Raw {
        let ptr = view.as_ptr().cast_mut();
        Raw {
            ptr,
            rows: view.strides()[0],
            cols: view.strides()[1],
        }
    }

    fn of_mut(view: &mut ArrayViewMut2<f32>) -> Raw {
        let ptr = view.as_mut_ptr();
        Raw {
            ptr,
            rows: view.strides()[0],
            cols: view.strides()[1],
        }
    }
}

// SAFETY: a `Raw` only travels to the parts of one product, which read A and B and write disjoint
// parts of C, while the caller keeps all three borrowed; nothing is written through A's or B's.
unsafe impl Send for Raw {}
unsafe impl Sync for Raw {}

/// How a product begins and ends besides the multiply-adds:
/// `C = keep·start + scale·(A·B ⊙ [G > 0])` (the gate `G` only when given), and `max(C, 0)` as
/// well when a ReLU follows.
#[derive(Clone, Copy)]
struct Ends {
    /// The sums start from this matrix, of C's shape: C itself to accumulate, or a bias row
    /// repeated through a row stride of 0. `None` starts from zero.
    start: Option<Raw>,
    /// What the products are multiplied by before the start is added: 1 for a plain product,
    /// `−η` for an SGD step written into a weight.
    scale: f32,
    /// What the start is multiplied by: 1, or `1 − η·λ` for an SGD step with weight decay `λ`.
    keep: f32,
    /// Where `max(C, 0)` goes as well, once C is complete: a ReLU fused into the product.
    relu: Option<Raw>,
    /// A matrix of C's shape where the product counts only where it is positive: a ReLU's
    /// backward pass (its output as the gate) fused into the input gradient's product.
    gate: Option<Raw>,
}

impl Ends {
    /// `C = start + A·B`.
    fn from(start: Option<Raw>) -> Ends {
        Ends {
            start,
            scale: 1.0,
            keep: 1.0,
            relu: None,
            gate: None,
        }
    }

    /// The same ends for the block of C whose first element is at row `i`, column `j`.
    fn at_corner(self, i: usize, j: usize) -> Ends {
        let shift = |m: Raw| Raw {
            ptr: m.at(i, j),
            ..m
        };
        Ends {
            start: self.start.map(shift),
            relu: self.relu.map(shift),
            gate: self.gate.map(shift),
            ..self
        }
    }

    /// Whether the start is added after the sums rather than being where they start: when they
    /// are scaled or gated first, or the start is scaled.
    fn late_start(self) -> bool {
        self.scale != 1.0 || self.keep != 1.0 || self.gate.is_some()
    }

    /// The finished value at (i, j) from its sum: gated, scaled, the kept start added.
    ///
    /// # Safety
    /// (i, j) must lie inside the start and the gate, when given.
    unsafe fn finish(self, i: usize, j: usize, sum: f32) -> f32 {
        // SAFETY: the caller's contract.
        unsafe {
            let open = self.gate.is_none_or(|g| *g.at(i, j) > 0.0);
            let sum = if open { self.scale * sum } else { 0.0 };
            self.start.map_or(sum, |s| self.keep * *s.at(i, j) + sum)
        }
    }

    /// [`finish`](Ends::finish) for 16 values from (i, j) on, reading the start and the gate only
    /// in the lanes of `mask`. With a scale and keep of 1 the multiplications are exact: start +
    /// sum, rounded once.
    ///
    /// # Safety
    /// AVX-512F must be present; the lanes of `mask` from (i, j) on must lie inside the start and
    /// the gate, when given, and their columns be contiguous.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn finish_lanes(
        self,
        i: usize,
        j: usize,
        sums: std::arch::x86_64::__m512,
        mask: std::arch::x86_64::__mmask16,
    ) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: the caller's contract; the loads are masked.
        unsafe {
            let sums = match self.gate {
                Some(g) => gated(sums, _mm512_maskz_loadu_ps(mask, g.at(i, j))),
                None => sums,
            };
            let scale = _mm512_set1_ps(self.scale);
            match self.start {
                Some(s) => {
                    let start = _mm512_maskz_loadu_ps(mask, s.at(i, j));
                    _mm512_fmadd_ps(sums, scale, _mm512_mul_ps(_mm512_set1_ps(self.keep), start))
                }
                None => _mm512_mul_ps(sums, scale),
            }
        }
    }
}

impl Raw {
    /// The element at row `i`, column `j`.
    fn at(self, i: usize, j: usize) -> *mut f32 {
        self.ptr
            .wrapping_offset(i as isize * self.rows)
            .wrapping_offset(j as isize * self.cols)
    }
}

/// Up to this many elements, a `B` that is not row-major is copied into [`TRANSPOSED`].
const TRANSPOSE_LIMIT: usize = 1 << 16;

thread_local! {
    /// A row-major copy of a small `B`: it grows to the largest such `B` and is then reused, so
    /// a training step allocates nothing.
    static TRANSPOSED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `C = A·B` (`accumulate == false`) or `C += A·B` (`accumulate == true`).
pub fn gemm<T: Element>(
    a: &ArrayView2<T>,
    b: &ArrayView2<T>,
    c: &mut ArrayViewMut2<T>,
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if let Some((a, b, c)) = as_f32_with_avx512(a, b, c) {
        let start = accumulate.then(|| Raw::of_mut(c));
        // SAFETY: AVX-512F is present, and `start` is C itself.
        unsafe { product(a, b, c, Ends::from(start)) };
        return;
    }
    if accumulate
        && a.nrows() == 1
        && let (Some(x), Some(w), Some(y)) = (a.as_slice(), b.as_slice(), c.as_slice_mut())
    {
        // One sample: a vector-matrix product, without the packing a matrix product does.
        row_times_matrix(x, w, y);
        return;
    }
    let beta = if accumulate { T::one() } else { T::zero() };
    general_mat_mul(T::one(), a, b, beta, c);
}

/// `C = β·C + α·A·B`: what SGD does to a weight with its gradient product
/// (`W = (1 − η·λ)·W + (−η)·xᵀ·dy`, with weight decay `λ`), in one product that reads and writes
/// `C` once: with AVX-512, each block of sums is scaled and added to `C` as it is stored.
pub fn gemm_scaled<T: Element>(
    alpha: T,
    a: &ArrayView2<T>,
    b: &ArrayView2<T>,
    beta: T,
    c: &mut ArrayViewMut2<T>,
) {
    #[cfg(target_arch = "x86_64")]
    if let Some((a, b, c)) = as_f32_with_avx512(a, b, c) {
        let ends = Ends {
            scale: alpha.to_f64() as f32,
            keep: beta.to_f64() as f32,
            ..Ends::from(Some(Raw::of_mut(c)))
        };
        // SAFETY: AVX-512F is present, and the start is C itself.
        unsafe { product(a, b, c, ends) };
        return;
    }
    general_mat_mul(alpha, a, b, beta, c);
}

/// `C = A·B ⊙ [G > 0]`: the product where the gate `G` (of C's shape) is positive, 0 elsewhere.
/// With AVX-512 the gate is applied as the sums are stored, so a ReLU's backward pass costs no
/// pass of its own.
pub fn gemm_gated<T: Element>(
    a: &ArrayView2<T>,
    b: &ArrayView2<T>,
    c: &mut ArrayViewMut2<T>,
    gate: &ArrayView2<T>,
) {
    assert_eq!(gate.dim(), c.dim(), "the gate has the product's shape");
    #[cfg(target_arch = "x86_64")]
    if let Some((a, b, c)) = as_f32_with_avx512(a, b, c) {
        // SAFETY: `T` is `f32` (checked by `as_f32_with_avx512`).
        let gate = unsafe { &*(gate as *const ArrayView2<T> as *const ArrayView2<f32>) };
        let ends = Ends {
            gate: Some(Raw::of(gate)),
            ..Ends::from(None)
        };
        // SAFETY: AVX-512F is present, and the gate has C's shape (asserted above).
        unsafe { product(a, b, c, ends) };
        return;
    }
    general_mat_mul(T::one(), a, b, T::zero(), c);
    ndarray::Zip::from(c).and(gate).for_each(|c, &g| {
        if g <= T::zero() {
            *c = T::zero();
        }
    });
}

/// `z = x·W + b`, and `y = max(z, 0)` as well when `relu` is given. With AVX-512 the bias is
/// where the sums start and the ReLU is applied as the result is stored, so neither costs a pass
/// over the batch of its own; a single row reads `W`'s copy for one-row products when `w` has
/// one (see [`one_row`]).
pub fn affine<T: Element>(
    x: &ArrayView2<T>,
    w: Weights<'_, T>,
    b: &ArrayView1<T>,
    z: &mut ArrayViewMut2<T>,
    mut relu: Option<&mut ArrayViewMut2<T>>,
) {
    let Weights { value: w, columns } = w;
    #[cfg(target_arch = "x86_64")]
    if let Some((x, w, z)) = as_f32_with_avx512(x, &w, z)
        && (b.len() <= 1 || b.strides()[0] == 1)
        && relu.as_ref().is_none_or(|y| y.dim() == z.dim())
    {
        let bias = Raw {
            ptr: b.as_ptr().cast::<f32>().cast_mut(),
            rows: 0,
            cols: 1,
        };
        let relu = relu.map(|y| {
            // SAFETY: `T` is `f32` (checked by `as_f32_with_avx512`).
            Raw::of_mut(unsafe { &mut *(y as *mut ArrayViewMut2<T> as *mut ArrayViewMut2<f32>) })
        });
        let ends = Ends {
            relu,
            ..Ends::from(Some(bias))
        };
        if let (Some(columns), Some(row)) = (columns, x.as_slice().filter(|_| x.nrows() == 1)) {
            // SAFETY: `T` is `f32` (checked by `as_f32_with_avx512`).
            let columns =
                unsafe { &mut *(columns as *mut ColumnCopy<T>).cast::<ColumnCopy<f32>>() };
            if let Some(columns) = columns.for_one_row(w) {
                // SAFETY: AVX-512F is present; `row` is x's one contiguous row, `columns` the
                // copy of this `w`, z has one row of w's width, and the bias and ReLU output
                // have z's shape (as below).
                unsafe { one_row::product(row, columns, Raw::of_mut(z), z.ncols(), ends) };
                return;
            }
        }
        // SAFETY: AVX-512F is present; the bias has z's width (ndarray checked the broadcast in
        // the caller) and the ReLU output z's shape.
        unsafe { product(x, w, z, ends) };
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = columns;
    let dim = z.raw_dim();
    z.assign(&b.broadcast(dim).expect("bias width equals output width"));
    gemm(x, &w, z, true);
    if let Some(y) = relu.as_mut() {
        ndarray::Zip::from(&mut **y)
            .and(&*z)
            .for_each(|y, &z| *y = if z <= T::zero() { T::zero() } else { z });
    }
}

/// A weight matrix as the affine kernels read it: its value and, when it comes from
/// [`Param::weights`](crate::Param::weights), the copy that one-row products read
/// instead once the weight has served a few of them unchanged. A plain view converts into one
/// without the copy.
#[derive(Debug)]
pub struct Weights<'a, T> {
    pub(crate) value: ArrayView2<'a, T>,
    pub(crate) columns: Option<&'a mut ColumnCopy<T>>,
}

impl<'a, T> From<ArrayView2<'a, T>> for Weights<'a, T> {
    fn from(value: ArrayView2<'a, T>) -> Self {
        Weights {
            value,
            columns: None,
        }
    }
}

/// Whether `f32` products run on chainrule's own kernels (and one-row products read copies laid
/// out for them, see [`one_row`]): on x86-64 with AVX-512F.
pub(crate) fn avx512_kernels() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// The operands as `f32` views, if that is what they are and the processor has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::type_complexity)]
fn as_f32_with_avx512<'v, 'a, 'b, 'c, T: Element>(
    a: &'v ArrayView2<'a, T>,
    b: &'v ArrayView2<'b, T>,
    c: &'v mut ArrayViewMut2<'c, T>,
) -> Option<(
    &'v ArrayView2<'a, f32>,
    &'v ArrayView2<'b, f32>,
    &'v mut ArrayViewMut2<'c, f32>,
)> {
    if TypeId::of::<T>() != TypeId::of::<f32>() || !avx512_kernels() {
        return None;
    }
    // SAFETY: `T` is `f32` (same `TypeId`), so the views can be reinterpreted as `f32` views.
    Some(unsafe {
        (
            &*(a as *const ArrayView2<T> as *const ArrayView2<f32>),
            &*(b as *const ArrayView2<T> as *const ArrayView2<f32>),
            &mut *(c as *mut ArrayViewMut2<T> as *mut ArrayViewMut2<f32>),
        )
    })
}

/// `C = start + A·B` on AVX-512, by the kernel that suits the shapes.
///
/// # Safety
/// The processor must support AVX-512F; `ends.start` and `ends.relu`, when given, must address
/// matrices of C's shape (the start may repeat a row through a row stride of 0).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn product(
    a: &ArrayView2<f32>,
    b: &ArrayView2<f32>,
    c: &mut ArrayViewMut2<f32>,
    ends: Ends,
) {
    if avx512::fits(a, b, c, ends) {
        // SAFETY: AVX-512F is present and `fits` checked the layouts.
        unsafe { avx512::gemm(a, b, c, ends) };
        return;
    }
    if b.strides()[1] != 1 && b.len() <= TRANSPOSE_LIMIT && b.ncols() <= avx512::MAX_WIDTH {
        // A small `B` in another layout (`Wᵀ` in `dy·Wᵀ`): copy it row-major into a buffer
        // this thread keeps, then multiply as above.
        let done = TRANSPOSED.with_borrow_mut(|scratch| {
            scratch.clear();
            scratch.extend(b.rows().into_iter().flatten().copied());
            let b = ArrayView2::from_shape(b.dim(), scratch.as_slice())
                .expect("the buffer holds B's elements in row-major order");
            let fits = avx512::fits(a, &b, c, ends);
            if fits {
                // SAFETY: AVX-512F is present and `fits` checked the layouts.
                unsafe { avx512::gemm(a, &b, c, ends) };
            }
            fits
        });
        if done {
            return;
        }
    }
    // SAFETY: AVX-512F is present; the shapes agree (ndarray's views of one product), and the
    // caller vouches for `ends`.
    unsafe { packed::gemm(a, b, c, ends) };
}

/// `y += x·W` for one row `x` (length k) and a row-major `W` (k × n): `y` accumulates `x[i]`
/// times each row of `W`. Compiled for AVX-512 or AVX2 when the processor has them.
fn row_times_matrix<T: Element>(x: &[T], w: &[T], y: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor supports AVX-512F, checked just above.
            return unsafe { row_times_matrix_avx512(x, w, y) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor supports AVX2, checked just above.
            return unsafe { row_times_matrix_avx2(x, w, y) };
        }
    }
    row_times_matrix_portable(x, w, y);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_times_matrix_avx512<T: Element>(x: &[T], w: &[T], y: &mut [T]) {
    row_times_matrix_portable(x, w, y);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_times_matrix_avx2<T: Element>(x: &[T], w: &[T], y: &mut [T]) {
    row_times_matrix_portable(x, w, y);
}

/// The loop behind [`row_times_matrix`]; inlined into each target-feature version so that the
/// compiler vectorises it for that instruction set.
#[inline(always)]
fn row_times_matrix_portable<T: Element>(x: &[T], w: &[T], y: &mut [T]) {
    debug_assert_eq!(w.len(), x.len() * y.len());
    for (&xi, row) in x.iter().zip(w.chunks_exact(y.len())) {
        for (a, &wij) in y.iter_mut().zip(row) {
            *a += xi * wij;
        }
    }
}

/// `max(x, 0)` that keeps a NaN a NaN, as the ReLU kernel does.
#[inline(always)]
fn relu(x: f32) -> f32 {
    if x <= 0.0 { 0.0 } else { x }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use ndarray::{ArrayView2, ArrayViewMut2};

    use super::{Ends, Raw, first_lanes, relu, vector_masks};

    /// Rows of `C` per block: 6 with four column vectors, 8 with three or fewer (24 registers of
    /// sums either way).
    const MR: usize = 6;
    const MR_NARROW: usize = 8;
    /// Threads split the rows at multiples of this (of both block heights), so that every row is
    /// computed the same way whatever the number of threads.
    const SPLIT: usize = 24;
    /// Columns of `C` per block: four vectors of 16.
    const NC: usize = 64;
    /// From this many multiply-adds on (about ten microseconds' work) a product is shared
    /// between threads.
    const SHARE_ABOVE: usize = 1 << 20;
    /// The widest `B` read in place; wider ones are packed.
    pub const MAX_WIDTH: usize = 4 * NC;

    /// Whether the kernel handles these operands: `B` and `C` row-major with unit column stride,
    /// `B` narrow enough that reading it in place beats packing it, and shapes that agree.
    pub fn fits(
        a: &ArrayView2<f32>,
        b: &ArrayView2<f32>,
        c: &ArrayViewMut2<f32>,
        ends: Ends,
    ) -> bool {
        let (m, k) = a.dim();
        let (k2, n) = b.dim();
        k == k2
            && c.dim() == (m, n)
            && m > 0
            && k > 0
            && n > 0
            && n <= MAX_WIDTH
            && b.strides()[1] == 1
            && c.strides()[1] == 1
            && b.strides()[0] >= 0
            && c.strides()[0] >= 0
            && ends.start.is_none_or(|s| s.cols == 1)
            && ends.relu.is_none_or(|y| y.cols == 1)
            && ends.gate.is_none_or(|g| g.cols == 1)
    }

    /// `C = start + A·B` for operands that [`fits`] accepts. A product with enough work is split
    /// by rows of `C` across the [`pool`](crate::pool)'s threads.
    ///
    /// # Safety
    /// The processor must support AVX-512F, `fits(a, b, c, ends)` must hold, and `ends` must
    /// address matrices of C's shape.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn gemm(
        a: &ArrayView2<f32>,
        b: &ArrayView2<f32>,
        c: &mut ArrayViewMut2<f32>,
        ends: Ends,
    ) {
        let (m, k) = a.dim();
        let n = b.ncols();
        let (a, b, c) = (Raw::of(a), Raw::of(b), Raw::of_mut(c));
        let parts = if m * n * k >= SHARE_ABOVE {
            m.div_ceil(SPLIT)
        } else {
            1
        };
        crate::pool::run(parts, &|part, parts| {
            // Split the rows into `parts` runs of whole blocks.
            let blocks = m.div_ceil(SPLIT);
            let first = blocks * part / parts * SPLIT;
            let last = (blocks * (part + 1) / parts * SPLIT).min(m);
            // SAFETY: AVX-512F is present and the operands fit (this function's contract); the
            // rows `first..last` of C (and of the ReLU output) belong to this part alone.
            unsafe { rows(a, b, c, ends, first..last, k, n) };
        });
    }

    /// Rows `range` of `C = start + A·B`.
    #[target_feature(enable = "avx512f")]
    unsafe fn rows(
        a: Raw,
        b: Raw,
        c: Raw,
        ends: Ends,
        range: std::ops::Range<usize>,
        k: usize,
        n: usize,
    ) {
        if n <= 16 && a.rows == 1 && range.len() >= 16 {
            // One vector of columns, and A's columns contiguous (xᵀ in xᵀ·dy for a narrow dy):
            // blocks of rows would broadcast A's elements from a different row of x at every
            // step. Vectorised along the rows of C instead, reading A's columns whole.
            for first in (0..n).step_by(LAST_MAX) {
                let cols = first..n.min(first + LAST_MAX);
                // SAFETY: these columns and the rows of `range` lie inside every operand.
                unsafe { last_columns(a, b, c, ends, range.clone(), k, cols) };
            }
            return;
        }
        // A last vector with only a few lanes would cost as much as a full one: leave those
        // columns to `last_columns`, when A's layout suits it and there are enough rows.
        let spare = n % 16;
        let (main, rest) = if n > 16
            && (1..=4).contains(&spare)
            && range.len() >= 16
            && (a.cols == 1 || a.rows == 1)
        {
            (n - spare, spare)
        } else {
            (n, 0)
        };
        let mut col = 0;
        while col < main {
            let width = NC.min(main - col);
            let height = if width <= 48 { MR_NARROW } else { MR };
            let mut row = range.start;
            while row < range.end {
                let rows = height.min(range.end - row);
                let tile = Tile {
                    a: a.at(row, 0),
                    b: b.at(0, col),
                    c: Raw {
                        ptr: c.at(row, col),
                        ..c
                    },
                    ends: ends.at_corner(row, col),
                };
                // SAFETY: the tile's rows `row..row + rows` and columns `col..col + width` lie
                // inside every operand (the last vector is masked); 7 or 8 rows come only with
                // at most three vectors.
                unsafe {
                    match rows {
                        8 => block::<8>(tile, a, b.rows, k, width),
                        7 => block::<7>(tile, a, b.rows, k, width),
                        6 => block::<6>(tile, a, b.rows, k, width),
                        5 => block::<5>(tile, a, b.rows, k, width),
                        4 => block::<4>(tile, a, b.rows, k, width),
                        3 => block::<3>(tile, a, b.rows, k, width),
                        2 => block::<2>(tile, a, b.rows, k, width),
                        _ => block::<1>(tile, a, b.rows, k, width),
                    }
                }
                row += rows;
            }
            col += width;
        }
        if rest > 0 {
            // SAFETY: columns `main..n` and the rows of `range` lie inside every operand.
            unsafe { last_columns(a, b, c, ends, range, k, main..n) };
        }
    }

    /// The most columns `last_columns` takes at once.
    const LAST_MAX: usize = 4;

    thread_local! {
        /// The last columns of B, transposed, for `last_columns`; grown once, then reused.
        static LAST_COLUMNS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Columns `cols` (at most four) of `C = start + A·B` for the rows of `range`, vectorised
    /// along another axis than the columns: along `k` (dot products) when A's rows are
    /// contiguous, along the rows of C when A's columns are.
    #[target_feature(enable = "avx512f")]
    unsafe fn last_columns(
        a: Raw,
        b: Raw,
        c: Raw,
        ends: Ends,
        range: std::ops::Range<usize>,
        k: usize,
        cols: std::ops::Range<usize>,
    ) {
        const MAX: usize = LAST_MAX;
        let count = cols.len();
        debug_assert!(count <= MAX);
        // Stores one finished value, and its ReLU.
        let finish = |i: usize, j: usize, sum: f32| {
            // SAFETY: the caller guarantees (i, j) lies inside C, the start, the ReLU output and
            // the gate.
            unsafe {
                let value = ends.finish(i, j, sum);
                *c.at(i, j) = value;
                if let Some(y) = ends.relu {
                    *y.at(i, j) = relu(value);
                }
            }
        };
        if a.cols == 1 {
            // Dot products of A's rows with B's columns, copied contiguous first.
            LAST_COLUMNS.with_borrow_mut(|columns| {
                columns.clear();
                for j in cols.clone() {
                    // SAFETY: rows `0..k` of column j lie inside B.
                    columns.extend((0..k).map(|p| unsafe { *b.at(p, j) }));
                }
                let bt = columns.as_ptr();
                const ROWS: usize = 4;
                let mut row = range.start;
                while row < range.end {
                    let rows = ROWS.min(range.end - row);
                    let mut sums = [[_mm512_setzero_ps(); MAX]; ROWS];
                    let mut p = 0;
                    while p < k {
                        let mask = first_lanes(k - p);
                        // SAFETY: lanes `p..min(p + 16, k)` lie inside A's rows and the copies.
                        unsafe {
                            let bv: [__m512; MAX] = std::array::from_fn(|t| {
                                if t < count {
                                    _mm512_maskz_loadu_ps(mask, bt.add(t * k + p))
                                } else {
                                    _mm512_setzero_ps()
                                }
                            });
                            for (r, sums) in sums.iter_mut().enumerate().take(rows) {
                                let av = _mm512_maskz_loadu_ps(mask, a.at(row + r, p));
                                for (sum, &bv) in sums.iter_mut().zip(&bv).take(count) {
                                    *sum = _mm512_fmadd_ps(av, bv, *sum);
                                }
                            }
                        }
                        p += 16;
                    }
                    for (r, sums) in sums.iter().enumerate().take(rows) {
                        for (t, &sum) in sums.iter().enumerate().take(count) {
                            finish(row + r, cols.start + t, _mm512_reduce_add_ps(sum));
                        }
                    }
                    row += rows;
                }
            });
        } else {
            // A's columns are contiguous (xᵀ in xᵀ·dy): sums over k of a column of A times one
            // element of B, 64 rows of C at a time.
            const VECTORS: usize = 4;
            let mut row = range.start;
            while row < range.end {
                let rows = (16 * VECTORS).min(range.end - row);
                let masks = vector_masks(rows);
                let mut sums = [[_mm512_setzero_ps(); VECTORS]; MAX];
                for p in 0..k {
                    // SAFETY: rows `row..row + rows` of column p lie inside A (loads are masked),
                    // and (p, j) inside B.
                    unsafe {
                        let av: [__m512; VECTORS] = std::array::from_fn(|v| {
                            _mm512_maskz_loadu_ps(masks[v], a.at(row + 16 * v, p))
                        });
                        for (t, sums) in sums.iter_mut().enumerate().take(count) {
                            let x = _mm512_set1_ps(*b.at(p, cols.start + t));
                            for (sum, &av) in sums.iter_mut().zip(&av) {
                                *sum = _mm512_fmadd_ps(av, x, *sum);
                            }
                        }
                    }
                }
                for (t, sums) in sums.iter().enumerate().take(count) {
                    let mut values = [0.0f32; 16 * VECTORS];
                    for (v, &sum) in sums.iter().enumerate() {
                        // SAFETY: `values` holds 16 lanes per vector.
                        unsafe { _mm512_storeu_ps(values.as_mut_ptr().add(16 * v), sum) };
                    }
                    for (r, &value) in values.iter().enumerate().take(rows) {
                        finish(row + r, cols.start + t, value);
                    }
                }
                row += rows;
            }
        }
    }

    /// Where one block's operands start.
    #[derive(Clone, Copy)]
    struct Tile {
        a: *mut f32,
        b: *mut f32,
        c: Raw,
        /// The ends from the tile's corner on.
        ends: Ends,
    }

    /// One block: `R` rows of C, `width ≤ 64` columns, the whole of `k`. `s` holds A's strides,
    /// `ldb` B's row stride.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block<const R: usize>(tile: Tile, s: Raw, ldb: isize, k: usize, width: usize) {
        let (a, b) = (tile.a.cast_const(), tile.b.cast_const());
        let (rsa, csa) = (s.rows, s.cols);
        let masks = vector_masks(width);
        let vectors = width.div_ceil(16);
        // SAFETY (whole body): the caller guarantees the rows and columns addressed exist; masked
        // loads and stores touch only the lanes inside `width`.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 4]; R];
            // Plain sums start from the start (a bias, or C); scaled or gated ones get it at the
            // end.
            let ends = tile.ends;
            let late = ends.late_start();
            if let Some(start) = ends.start.filter(|_| !late) {
                for (r, acc) in acc.iter_mut().enumerate() {
                    for v in 0..vectors {
                        acc[v] = _mm512_maskz_loadu_ps(masks[v], start.at(r, 16 * v));
                    }
                }
            }
            if R == 1 {
                // One row has too little work per step to hide the latency of a chain of
                // fused multiply-adds: interleave four chains over `k` instead.
                let acc = &mut acc[0];
                match vectors {
                    4 => run_one_row::<4>(acc, a, csa, b, ldb, k, &masks),
                    3 => run_one_row::<3>(acc, a, csa, b, ldb, k, &masks),
                    2 => run_one_row::<2>(acc, a, csa, b, ldb, k, &masks),
                    _ => run_one_row::<1>(acc, a, csa, b, ldb, k, &masks),
                }
            } else {
                match vectors {
                    4 => run::<R, 4>(&mut acc, a, rsa, csa, b, ldb, k, &masks),
                    3 => run::<R, 3>(&mut acc, a, rsa, csa, b, ldb, k, &masks),
                    2 => run::<R, 2>(&mut acc, a, rsa, csa, b, ldb, k, &masks),
                    _ => run::<R, 1>(&mut acc, a, rsa, csa, b, ldb, k, &masks),
                }
            }
            if late {
                for (r, acc) in acc.iter_mut().enumerate() {
                    for v in 0..vectors {
                        acc[v] = ends.finish_lanes(r, 16 * v, acc[v], masks[v]);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for v in 0..vectors {
                    _mm512_mask_storeu_ps(tile.c.at(r, 16 * v), masks[v], acc[v]);
                    if let Some(y) = ends.relu {
                        // The second operand where either is NaN: a NaN stays a NaN.
                        let positive = _mm512_max_ps(_mm512_setzero_ps(), acc[v]);
                        _mm512_mask_storeu_ps(y.at(r, 16 * v), masks[v], positive);
                    }
                }
            }
        }
    }

    /// The inner loop for a single row of `C`: four independent sums over `k` (every fourth `p`
    /// each), added together at the end.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn run_one_row<const V: usize>(
        acc: &mut [__m512; 4],
        a: *const f32,
        csa: isize,
        b: *const f32,
        ldb: isize,
        k: usize,
        masks: &[__mmask16; 4],
    ) {
        // SAFETY (whole body): as in `block`; `p` runs over `k` rows of B and elements of A.
        unsafe {
            let mut sums = [[_mm512_setzero_ps(); V]; 4];
            sums[0].copy_from_slice(&acc[..V]);
            let step = |sum: &mut [__m512; V], p: usize| {
                let brow = b.offset(p as isize * ldb);
                let x = _mm512_set1_ps(*a.offset(p as isize * csa));
                for (v, (sum, &mask)) in sum.iter_mut().zip(masks).enumerate() {
                    *sum = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(mask, brow.add(16 * v)), *sum);
                }
            };
            let mut p = 0;
            while p + 4 <= k {
                for (lane, sum) in sums.iter_mut().enumerate() {
                    step(sum, p + lane);
                }
                p += 4;
            }
            while p < k {
                step(&mut sums[0], p);
                p += 1;
            }
            for v in 0..V {
                acc[v] = _mm512_add_ps(
                    _mm512_add_ps(sums[0][v], sums[1][v]),
                    _mm512_add_ps(sums[2][v], sums[3][v]),
                );
            }
        }
    }

    /// The inner loop over `k` with `V` column vectors, all of them in registers.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn run<const R: usize, const V: usize>(
        acc: &mut [[__m512; 4]; R],
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        ldb: isize,
        k: usize,
        masks: &[__mmask16; 4],
    ) {
        // SAFETY (whole body): as in `block`; `p` runs over `k` rows of B and columns of A.
        unsafe {
            let mut local = [[_mm512_setzero_ps(); V]; R];
            for (local, acc) in local.iter_mut().zip(acc.iter()) {
                local.copy_from_slice(&acc[..V]);
            }
            for p in 0..k {
                let brow = b.offset(p as isize * ldb);
                let mut bv = [_mm512_setzero_ps(); V];
                for (v, (bv, &mask)) in bv.iter_mut().zip(masks).enumerate() {
                    *bv = _mm512_maskz_loadu_ps(mask, brow.add(16 * v));
                }
                let acol = a.offset(p as isize * csa);
                for (r, local) in local.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*acol.offset(r as isize * rsa));
                    for (sum, &bv) in local.iter_mut().zip(&bv) {
                        *sum = _mm512_fmadd_ps(x, bv, *sum);
                    }
                }
            }
            for (acc, local) in acc.iter_mut().zip(&local) {
                acc[..V].copy_from_slice(local);
            }
        }
    }
}
