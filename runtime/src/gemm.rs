//! Matrix products for the shapes small networks have: `C (+)= A·B` where `B` is row-major with at
//! most a few hundred columns (a layer's weight `W` in `x·W`, or a batch's gradient `dy` in
//! `xᵀ·dy`).
//!
//! matrixmultiply copies (packs) both operands on every call, which for these shapes costs about a
//! fifth of a training step, and allocates its packing buffer each time. Here an AVX-512 kernel
//! reads `B`'s rows in place: it keeps a block of 6 rows of `C` by up to 64 columns in 24 vector
//! registers while `k` runs, loading one row of `B` (the last vector masked) and broadcasting one
//! element of each of the 6 rows of `A` per step; a single row (the batch-1 forward pass) runs
//! four interleaved sums instead. A small `B` in another layout (a transposed weight, in `dy·Wᵀ`)
//! is first copied row-major into a buffer the thread keeps. Everything else goes to ndarray's
//! `general_mat_mul`, except a single row without AVX-512, which is a plain vector-matrix loop.

use std::any::TypeId;

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

use crate::Element;

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
    if TypeId::of::<T>() == TypeId::of::<f32>() && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: `T` is `f32` (same `TypeId`), so the views can be reinterpreted as `f32` views.
        let (a, b, c) = unsafe {
            (
                &*(a as *const ArrayView2<T> as *const ArrayView2<f32>),
                &*(b as *const ArrayView2<T> as *const ArrayView2<f32>),
                &mut *(c as *mut ArrayViewMut2<T> as *mut ArrayViewMut2<f32>),
            )
        };
        if avx512::fits(a, b, c) {
            // SAFETY: AVX-512F is present (checked above) and `fits` checked the layouts.
            unsafe { avx512::gemm(a, b, c, accumulate) };
            return;
        }
        if b.len() <= TRANSPOSE_LIMIT {
            // A small `B` in another layout (`Wᵀ` in `dy·Wᵀ`): copy it row-major into a buffer
            // this thread keeps, then multiply as above.
            return TRANSPOSED.with_borrow_mut(|scratch| {
                scratch.clear();
                scratch.extend(b.rows().into_iter().flatten().copied());
                let b = ArrayView2::from_shape(b.dim(), scratch.as_slice())
                    .expect("the buffer holds B's elements in row-major order");
                if avx512::fits(a, &b, c) {
                    // SAFETY: AVX-512F is present and `fits` checked the layouts.
                    unsafe { avx512::gemm(a, &b, c, accumulate) };
                } else {
                    general_mat_mul(1.0, a, &b, if accumulate { 1.0 } else { 0.0 }, c);
                }
            });
        }
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

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use ndarray::{ArrayView2, ArrayViewMut2};

    /// Rows of `C` per block.
    const MR: usize = 6;
    /// Columns of `C` per block: four vectors of 16.
    const NC: usize = 64;

    /// Whether the kernel handles these operands: `B` and `C` row-major with unit column stride,
    /// `B` narrow enough that reading it in place beats packing it, and shapes that agree.
    pub fn fits(a: &ArrayView2<f32>, b: &ArrayView2<f32>, c: &ArrayViewMut2<f32>) -> bool {
        let (m, k) = a.dim();
        let (k2, n) = b.dim();
        k == k2
            && c.dim() == (m, n)
            && m > 0
            && k > 0
            && n > 0
            && n <= 4 * NC
            && b.strides()[1] == 1
            && c.strides()[1] == 1
            && b.strides()[0] >= 0
            && c.strides()[0] >= 0
    }

    /// `C (+)= A·B` for operands that [`fits`] accepts.
    ///
    /// # Safety
    /// The processor must support AVX-512F, and `fits(a, b, c)` must hold.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn gemm(
        a: &ArrayView2<f32>,
        b: &ArrayView2<f32>,
        c: &mut ArrayViewMut2<f32>,
        accumulate: bool,
    ) {
        let (m, k) = a.dim();
        let n = b.ncols();
        let (rsa, csa) = (a.strides()[0], a.strides()[1]);
        let ldb = b.strides()[0];
        let ldc = c.strides()[0];
        let (pa, pb, pc) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        let mut col = 0;
        while col < n {
            let width = NC.min(n - col);
            let mut row = 0;
            while row < m {
                let rows = MR.min(m - row);
                // SAFETY: every pointer below stays inside the operands: rows `row..row + rows`
                // of A and C, columns `col..col + width` of B and C (the last vector is masked).
                unsafe {
                    let a0 = pa.offset(row as isize * rsa);
                    let c0 = pc.offset(row as isize * ldc).add(col);
                    let b0 = pb.add(col);
                    match rows {
                        6 => block::<6>(a0, rsa, csa, b0, ldb, c0, ldc, k, width, accumulate),
                        5 => block::<5>(a0, rsa, csa, b0, ldb, c0, ldc, k, width, accumulate),
                        4 => block::<4>(a0, rsa, csa, b0, ldb, c0, ldc, k, width, accumulate),
                        3 => block::<3>(a0, rsa, csa, b0, ldb, c0, ldc, k, width, accumulate),
                        2 => block::<2>(a0, rsa, csa, b0, ldb, c0, ldc, k, width, accumulate),
                        _ => block::<1>(a0, rsa, csa, b0, ldb, c0, ldc, k, width, accumulate),
                    }
                }
                row += rows;
            }
            col += width;
        }
    }

    /// One block: `R` rows of C, `width ≤ 64` columns, the whole of `k`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn block<const R: usize>(
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        ldb: isize,
        c: *mut f32,
        ldc: isize,
        k: usize,
        width: usize,
        accumulate: bool,
    ) {
        // Lane masks of the four column vectors: full, partial or empty.
        let masks: [__mmask16; 4] = std::array::from_fn(|v| {
            let lanes = width.saturating_sub(16 * v).min(16);
            if lanes == 16 {
                0xFFFF
            } else {
                ((1u32 << lanes) - 1) as __mmask16
            }
        });
        let vectors = width.div_ceil(16);
        // SAFETY (whole body): the caller guarantees the rows and columns addressed exist; masked
        // loads and stores touch only the lanes inside `width`.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 4]; R];
            if accumulate {
                for (r, acc) in acc.iter_mut().enumerate() {
                    for v in 0..vectors {
                        acc[v] =
                            _mm512_maskz_loadu_ps(masks[v], c.offset(r as isize * ldc).add(16 * v));
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
            for (r, acc) in acc.iter().enumerate() {
                for v in 0..vectors {
                    _mm512_mask_storeu_ps(c.offset(r as isize * ldc).add(16 * v), masks[v], acc[v]);
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
