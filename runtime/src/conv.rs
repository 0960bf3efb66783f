//! Convolution and pooling kernels on batches of images (re-exported by [`kernels`](crate::kernels)).
//!
//! A batch is a matrix of `n` rows, one sample each, of `C·H·W` columns in channel-major order
//! (NCHW): the value at channel `c`, row `y`, column `x` is at column `c·H·W + y·W + x`. Outputs
//! are laid out the same way, `n × C_out·OH·OW`. Each kernel takes its geometry ([`Conv2d`],
//! [`Pool2d`]) by value and asserts that the matrices it is given fit it.
//!
//! A convolution unrolls each sample into a matrix of patches (im2col, as the book's
//! `Convolution` layer does, with the patches as columns): row `c·k·k + ky·k + kx` holds, for
//! every output position `p = oy·OW + ox`, the input that position's window reads at that
//! offset, 0 where the window covers padding. With stride 1 each output row's inputs are one run
//! of a padded input row, so unrolling is a copy of runs. Then the sample's output, seen as
//! `F × OH·OW`, is `W·cols` plus the bias, with the weight seen as `F × C·k·k`; the weight's
//! gradient is `cols·dyᵀ`, and the input's is a convolution of `dy` with the weight turned around
//! (stride 1) or `Wᵀ·dy` added back to the inputs the patches came from (col2im). The samples of
//! a batch are shared among the [`pool`](crate::pool)'s threads, and the parameters' gradients
//! summed over fixed pieces of the batch, so they do not depend on the number of threads.
//! Patches and sums live in a [`ConvScratch`] the layer keeps, so after its first call a
//! convolution allocates nothing.

use std::marker::PhantomData;
use std::ops::{Index, IndexMut, Range};

use ndarray::{
    ArrayView1, ArrayView2, ArrayView4, ArrayViewMut1, ArrayViewMut2, Axis, Ix1, Ix2, Ix4,
    RawArrayViewMut, Zip,
};

use crate::Param;
use crate::element::Element;
use crate::gemm::gemm;
use crate::kernels::GradMode;
use crate::pool;

/// The geometry of a 2-D convolution with a square kernel, as the generated code writes it:
/// `channels` input planes of `height × width`, `filters` output planes, a `kernel × kernel`
/// window moved by `stride` over the input padded with `pad` zeros on every side.
///
/// The output planes are [`out_height`](Conv2d::out_height) × [`out_width`](Conv2d::out_width);
/// rows and columns of the input that no whole window reaches are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2d {
    /// Input channels `C`.
    pub channels: usize,
    /// Input height `H`.
    pub height: usize,
    /// Input width `W`.
    pub width: usize,
    /// Output channels `F`, one per filter.
    pub filters: usize,
    /// The window's side `k`.
    pub kernel: usize,
    /// How far the window moves between neighbouring outputs (at least 1).
    pub stride: usize,
    /// Zeros added on each side of each plane.
    pub pad: usize,
}

impl Conv2d {
    /// `OH = (H + 2·pad − k) / stride + 1`, rounded down. Panics if the kernel is larger than
    /// the padded input or the stride is 0.
    pub const fn out_height(&self) -> usize {
        out_size(self.height, self.kernel, self.stride, self.pad)
    }

    /// `OW = (W + 2·pad − k) / stride + 1`, rounded down. Panics if the kernel is larger than
    /// the padded input or the stride is 0.
    pub const fn out_width(&self) -> usize {
        out_size(self.width, self.kernel, self.stride, self.pad)
    }

    /// Columns of an input batch: `C·H·W`.
    pub const fn input_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Columns of an output batch: `F·OH·OW`.
    pub const fn output_len(&self) -> usize {
        self.filters * self.positions()
    }

    /// Output positions per plane: `OH·OW`.
    const fn positions(&self) -> usize {
        self.out_height() * self.out_width()
    }

    /// Inputs one output reads: `C·k·k`.
    const fn patch_len(&self) -> usize {
        self.channels * self.kernel * self.kernel
    }

    /// Asserts that an input batch and an output batch fit the geometry, and have as many rows.
    fn check_batch(&self, x: (usize, usize), y: (usize, usize), names: (&str, &str)) {
        assert_eq!(
            x.1,
            self.input_len(),
            "conv2d: {} has C·H·W = {} columns for {self:?}",
            names.0,
            self.input_len()
        );
        assert_eq!(
            y.1,
            self.output_len(),
            "conv2d: {} has F·OH·OW = {} columns for {self:?}",
            names.1,
            self.output_len()
        );
        assert_eq!(
            x.0, y.0,
            "conv2d: {} and {} have as many rows",
            names.0, names.1
        );
    }

    /// Asserts that a weight and a bias have the geometry's shapes.
    fn check_params(&self, w: &[usize], b: usize) {
        let k = self.kernel;
        assert_eq!(
            w,
            [self.filters, self.channels, k, k],
            "conv2d: the weight is filters × channels × kernel × kernel for {self:?}"
        );
        assert_eq!(b, self.filters, "conv2d: the bias has one value per filter");
    }
}

/// `(size + 2·pad − window) / stride + 1`, rounded down.
const fn out_size(size: usize, window: usize, stride: usize, pad: usize) -> usize {
    assert!(stride > 0, "the stride is at least 1");
    assert!(
        window > 0 && window <= size + 2 * pad,
        "the window is at least 1 and fits in the padded input"
    );
    (size + 2 * pad - window) / stride + 1
}

/// How many pieces a batch is cut into for the parameters' gradients: each piece's samples add
/// into sums of their own, and the pieces' sums are added in order at the end, so the gradients
/// are the same whatever the number of threads that share the pieces.
const PIECES: usize = 8;

/// Scratch a convolution reuses between calls: for each thread that shares a batch, one sample's
/// patches (`C·k·k × OH·OW`, see the module's notes) or their gradient, and copies of rows that
/// are not contiguous; the sums of the parameters' gradients over each piece of the batch; and
/// the weight turned around for the input's gradient. It grows on first use and never shrinks,
/// so later calls allocate nothing; its size does not depend on the batch.
/// `Default` gives an empty one.
#[derive(Debug, Default)]
pub struct ConvScratch<T> {
    /// One per thread of a shared batch.
    lanes: Vec<Lane<T>>,
    /// The weight's gradient, transposed (`C·k·k × F`), then the bias's (`F`), for each piece.
    sums: Vec<T>,
    /// The weight turned around for the input's gradient (`C × F·k·k`).
    flipped: Vec<T>,
}

/// What one thread of a convolution works in.
#[derive(Debug, Default)]
struct Lane<T> {
    /// One sample's patches (`C·k·k × OH·OW`), or their gradient.
    cols: Vec<T>,
    /// A copy of the row a pass reads first (`x`, or `dy` for the input's gradient) when it is
    /// not contiguous; in the parameters' pass, `dyᵢᵀ` (`OH·OW × F`).
    input: Vec<T>,
    /// A copy of the other row a pass reads or writes (`z`, `dx`; `x` and then `dy` in the
    /// parameters' pass) when it is not contiguous.
    output: Vec<T>,
    /// A sample's planes with their padding, or the gradient of such planes.
    padded: Vec<T>,
}

/// The first `len` elements of `buffer`, grown with zeros to that length if shorter.
fn grown<T: Element>(buffer: &mut Vec<T>, len: usize) -> &mut [T] {
    if buffer.len() < len {
        buffer.resize(len, T::zero());
    }
    &mut buffer[..len]
}

/// A sample's planes as [`im2col`] and [`col2im`] read and write them: each plane with `pad`
/// zeros on every side, `plane` elements apart, its rows `row` elements apart.
struct Planes<S> {
    values: S,
    row: usize,
    plane: usize,
}

impl Conv2d {
    /// The side lengths of a padded plane: `(H + 2·pad, W + 2·pad)`.
    const fn padded(&self) -> (usize, usize) {
        (self.height + 2 * self.pad, self.width + 2 * self.pad)
    }
}

/// The sample `x` as padded [`Planes`]: `x` itself without padding, else a copy in `spare`.
fn pad_planes<'a, T: Element>(x: &'a [T], spare: &'a mut Vec<T>, g: &Conv2d) -> Planes<&'a [T]> {
    let (h, w, pad) = (g.height, g.width, g.pad);
    if pad == 0 {
        return Planes {
            values: x,
            row: w,
            plane: h * w,
        };
    }
    let (ph, pw) = g.padded();
    let out = grown(spare, g.channels * ph * pw);
    for (planes, x) in out.chunks_exact_mut(ph * pw).zip(x.chunks_exact(h * w)) {
        let (top, rest) = planes.split_at_mut(pad * pw);
        let (middle, bottom) = rest.split_at_mut(h * pw);
        top.fill(T::zero());
        bottom.fill(T::zero());
        for (row, x) in middle.chunks_exact_mut(pw).zip(x.chunks_exact(w)) {
            row[..pad].fill(T::zero());
            row[pad + w..].fill(T::zero());
            copy(&mut row[pad..pad + w], x);
        }
    }
    Planes {
        values: out,
        row: pw,
        plane: ph * pw,
    }
}

/// The slices as `f32` slices, if that is what they are and the processor has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn as_f32_with_avx512<'a, 'b, T: Element>(
    to: &'a mut [T],
    from: &'b [T],
) -> Option<(&'a mut [f32], &'b [f32])> {
    if std::any::TypeId::of::<T>() != std::any::TypeId::of::<f32>()
        || !crate::gemm::avx512_kernels()
    {
        return None;
    }
    // SAFETY: `T` is `f32` (same `TypeId`).
    Some(unsafe {
        (
            std::slice::from_raw_parts_mut(to.as_mut_ptr().cast(), to.len()),
            std::slice::from_raw_parts(from.as_ptr().cast(), from.len()),
        )
    })
}

/// `to = from` (of equal length): in `f32` with AVX-512 by masked vector moves, else in blocks
/// of 8, so that short rows are copied by a few vector moves rather than a call to `memcpy`.
#[inline(always)]
fn copy<T: Element>(to: &mut [T], from: &[T]) {
    debug_assert_eq!(to.len(), from.len());
    #[cfg(target_arch = "x86_64")]
    if let Some((to, from)) = as_f32_with_avx512(to, from) {
        // SAFETY: the processor has AVX-512F.
        return unsafe { wide::copy(to, from) };
    }
    let mut blocks = to.chunks_exact_mut(8);
    let mut sources = from.chunks_exact(8);
    for (to, from) in (&mut blocks).zip(&mut sources) {
        to.copy_from_slice(from);
    }
    for (to, &from) in blocks.into_remainder().iter_mut().zip(sources.remainder()) {
        *to = from;
    }
}

/// `to += from` element by element (of equal length), in `f32` with AVX-512 by masked vectors.
#[inline(always)]
fn add<T: Element>(to: &mut [T], from: &[T]) {
    debug_assert_eq!(to.len(), from.len());
    #[cfg(target_arch = "x86_64")]
    if let Some((to, from)) = as_f32_with_avx512(to, from) {
        // SAFETY: the processor has AVX-512F.
        return unsafe { wide::add(to, from) };
    }
    for (to, &from) in to.iter_mut().zip(from) {
        *to += from;
    }
}

/// `to` (`cols × rows`) = `from` (`rows × cols`) transposed, both row-major; in `f32` with
/// AVX-512 by 16 × 16 squares in registers.
fn transpose<T: Element>(from: &[T], rows: usize, cols: usize, to: &mut [T]) {
    assert!(from.len() == rows * cols && to.len() == rows * cols);
    #[cfg(target_arch = "x86_64")]
    if let Some((to, from)) = as_f32_with_avx512(to, from) {
        // SAFETY: the processor has AVX-512F, and the lengths are checked above.
        return unsafe { wide::transpose(from, rows, cols, to) };
    }
    for (r, row) in from.chunks_exact(cols).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            to[c * rows + r] = v;
        }
    }
}

/// The sum of `values`, in sixteen interleaved partial sums (added pairwise at the end) so
/// that the additions are not one chain and vectorise.
fn total<T: Element>(values: &[T]) -> T {
    let mut lanes = [T::zero(); 16];
    let mut blocks = values.chunks_exact(16);
    for block in &mut blocks {
        for (lane, &v) in lanes.iter_mut().zip(block) {
            *lane += v;
        }
    }
    for (lane, &v) in lanes.iter_mut().zip(blocks.remainder()) {
        *lane += v;
    }
    let mut width = 16;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
    }
    lanes[0]
}

/// [`copy`], [`add`] and [`transpose`] in `f32` on AVX-512, and [`im2col`]'s and
/// [`scatter`]'s loops compiled with them inlined (a call per run of a few dozen elements would
/// cost as much as the run).
#[cfg(target_arch = "x86_64")]
mod wide {
    use std::arch::x86_64::*;

    use super::{Conv2d, Planes};
    use crate::gemm::first_lanes;

    /// [`super::unroll`] with AVX-512 moves.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn unroll(x: Planes<&[f32]>, cols: &mut [f32], g: &Conv2d) {
        // SAFETY: this function's features are the processor's (its contract).
        super::unroll(x, cols, g, |to, from| unsafe { copy(to, from) });
    }

    /// [`super::scatter_runs`] with AVX-512 additions.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn scatter(cols: &[f32], sums: &mut [f32], g: &Conv2d) {
        // SAFETY: as above.
        super::scatter_runs(cols, sums, g, |to, from| unsafe { add(to, from) });
    }

    /// `to = from` for the first `min(len)` elements.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn copy(to: &mut [f32], from: &[f32]) {
        let n = to.len().min(from.len());
        for i in (0..n).step_by(16) {
            let mask = first_lanes(n - i);
            // SAFETY: the mask covers only elements `i..n` of both slices.
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask, from.as_ptr().add(i));
                _mm512_mask_storeu_ps(to.as_mut_ptr().add(i), mask, v);
            }
        }
    }

    /// `to += from` for the first `min(len)` elements.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn add(to: &mut [f32], from: &[f32]) {
        let n = to.len().min(from.len());
        for i in (0..n).step_by(16) {
            let mask = first_lanes(n - i);
            // SAFETY: the mask covers only elements `i..n` of both slices.
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask, from.as_ptr().add(i));
                let t = _mm512_maskz_loadu_ps(mask, to.as_ptr().add(i));
                _mm512_mask_storeu_ps(to.as_mut_ptr().add(i), mask, _mm512_add_ps(t, v));
            }
        }
    }

    /// [`super::transpose`]: `from` and `to` hold `rows · cols` elements.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn transpose(from: &[f32], rows: usize, cols: usize, to: &mut [f32]) {
        let mut square = [_mm512_setzero_ps(); 16];
        for r0 in (0..rows).step_by(16) {
            let height = (rows - r0).min(16);
            for c0 in (0..cols).step_by(16) {
                let width = (cols - c0).min(16);
                let (load, store) = (first_lanes(width), first_lanes(height));
                for (i, v) in square.iter_mut().enumerate() {
                    *v = if i < height {
                        // SAFETY: row `r0 + i` < rows, columns `c0..c0 + width` < cols.
                        unsafe {
                            _mm512_maskz_loadu_ps(load, from.as_ptr().add((r0 + i) * cols + c0))
                        }
                    } else {
                        _mm512_setzero_ps()
                    };
                }
                crate::gemm::transpose16(&mut square);
                for (i, v) in square.iter().take(width).enumerate() {
                    // SAFETY: row `c0 + i` < cols of `to`, columns `r0..r0 + height` < rows.
                    unsafe {
                        _mm512_mask_storeu_ps(to.as_mut_ptr().add((c0 + i) * rows + r0), store, *v)
                    };
                }
            }
        }
    }
}

/// Calls `f(patch_row, input)` for every row of a sample's patches and every output row `oy`:
/// `patch_row` is the `OW` outputs' offset in the patches (`(c·k·k + ky·k + kx)·OH·OW + oy·OW`),
/// `input` the offset in the padded planes where that window row starts
/// (`c·plane + (oy·s + ky)·row + kx`), the outputs reading every `s`-th element from it.
#[inline(always)]
fn for_each_patch_row(g: &Conv2d, row: usize, plane: usize, mut f: impl FnMut(usize, usize)) {
    let (k, s, oh, ow) = (g.kernel, g.stride, g.out_height(), g.out_width());
    let mut out = 0;
    for c in 0..g.channels {
        for ky in 0..k {
            for kx in 0..k {
                for oy in 0..oh {
                    f(out, c * plane + (oy * s + ky) * row + kx);
                    out += ow;
                }
            }
        }
    }
}

/// Unrolls one sample `x` (`C·H·W`, NCHW) into its patches `cols` (`C·k·k × OH·OW`,
/// row-major): row `c·k·k + ky·k + kx`, column `oy·OW + ox` holds
/// `x[c, oy·s + ky − pad, ox·s + kx − pad]`, 0 where that lies in the padding (im2col, with the
/// patches as columns). The padding is a copy of the sample with zeros around each plane in
/// `spare`, so that each output row reads one run of a padded row.
fn im2col<T: Element>(x: &[T], cols: &mut [T], spare: &mut Vec<T>, g: &Conv2d) {
    let x = pad_planes(x, spare, g);
    #[cfg(target_arch = "x86_64")]
    if let Some((cols, values)) = as_f32_with_avx512(cols, x.values) {
        let x = Planes {
            values,
            row: x.row,
            plane: x.plane,
        };
        // SAFETY: the processor has AVX-512F.
        return unsafe { wide::unroll(x, cols, g) };
    }
    unroll(x, cols, g, copy);
}

/// [`im2col`] from the padded planes, with `copy` moving each run.
#[inline(always)]
fn unroll<T: Element>(x: Planes<&[T]>, cols: &mut [T], g: &Conv2d, copy: impl Fn(&mut [T], &[T])) {
    let (s, ow) = (g.stride, g.out_width());
    for_each_patch_row(g, x.row, x.plane, |out, input| {
        let (to, from) = (&mut cols[out..out + ow], &x.values[input..]);
        if s == 1 {
            copy(to, &from[..ow]);
        } else {
            for (to, &from) in to.iter_mut().zip(from.iter().step_by(s)) {
                *to = from;
            }
        }
    });
}

/// The adjoint of [`im2col`]: adds each element of `cols` to the input it was copied from
/// (elements from the padding are dropped), so that inputs read by several windows collect every
/// window's gradient; `dx` is overwritten (`add_to == false`) or added to. With padding the sums
/// collect in padded planes in `spare` first.
fn col2im<T: Element>(cols: &[T], dx: &mut [T], add_to: bool, spare: &mut Vec<T>, g: &Conv2d) {
    let (h, w, pad) = (g.height, g.width, g.pad);
    if pad == 0 {
        if !add_to {
            dx.fill(T::zero());
        }
        return scatter(cols, dx, g);
    }
    let (ph, pw) = g.padded();
    let sums = grown(spare, g.channels * ph * pw);
    sums.fill(T::zero());
    scatter(cols, sums, g);
    for (planes, dx) in sums.chunks_exact(ph * pw).zip(dx.chunks_exact_mut(h * w)) {
        let rows = planes[pad * pw..].chunks_exact(pw);
        for (row, dx) in rows.zip(dx.chunks_exact_mut(w)) {
            let row = &row[pad..pad + w];
            if add_to {
                add(dx, row);
            } else {
                copy(dx, row);
            }
        }
    }
}

/// Adds each element of `cols` to the element of the padded planes `sums` it was copied from.
fn scatter<T: Element>(cols: &[T], sums: &mut [T], g: &Conv2d) {
    #[cfg(target_arch = "x86_64")]
    if let Some((sums, cols)) = as_f32_with_avx512(sums, cols) {
        // SAFETY: the processor has AVX-512F.
        return unsafe { wide::scatter(cols, sums, g) };
    }
    scatter_runs(cols, sums, g, add);
}

/// [`scatter`], with `add` adding each run.
#[inline(always)]
fn scatter_runs<T: Element>(cols: &[T], sums: &mut [T], g: &Conv2d, add: impl Fn(&mut [T], &[T])) {
    let (s, ow) = (g.stride, g.out_width());
    let (ph, pw) = g.padded();
    for_each_patch_row(g, pw, ph * pw, |out, input| {
        let (from, to) = (&cols[out..out + ow], &mut sums[input..]);
        if s == 1 {
            add(&mut to[..ow], from);
        } else {
            for (to, &from) in to.iter_mut().step_by(s).zip(from) {
                *to += from;
            }
        }
    });
}

/// A sample's row as a slice: the row itself when it is contiguous, else a copy in `spare`.
fn contiguous<'a, T: Element>(row: ArrayView1<'a, T>, spare: &'a mut Vec<T>) -> &'a [T] {
    match row.to_slice() {
        Some(values) => values,
        None => {
            let copy = grown(spare, row.len());
            Zip::from(&mut *copy).and(&row).for_each(|c, &r| *c = r);
            copy
        }
    }
}

/// A sample's row seen as a `rows × cols` matrix (see [`contiguous`]).
fn matrix<'a, T: Element>(
    row: ArrayView1<'a, T>,
    shape: (usize, usize),
    spare: &'a mut Vec<T>,
) -> ArrayView2<'a, T> {
    ArrayView2::from_shape(shape, contiguous(row, spare)).expect("a row holds rows × cols values")
}

/// Runs `f` on a sample's row as a slice: the row itself when it is contiguous, else a copy in
/// `spare` (holding the row's values when `read` is set) that is written back afterwards.
fn with_slice_mut<T: Element>(
    mut row: ArrayViewMut1<T>,
    spare: &mut Vec<T>,
    read: bool,
    f: impl FnOnce(&mut [T]),
) {
    if let Some(values) = row.as_slice_mut() {
        return f(values);
    }
    let copy = grown(spare, row.len());
    if read {
        Zip::from(&mut *copy).and(&row).for_each(|c, &r| *c = r);
    }
    f(copy);
    Zip::from(&mut row).and(&*copy).for_each(|r, &c| *r = c);
}

/// The weight (`F × C × k × k`, row-major) as the `F × C·k·k` matrix the products use.
fn weight_matrix<'a, T>(w: ArrayView4<'a, T>, g: &Conv2d) -> ArrayView2<'a, T> {
    w.into_shape_with_order((g.filters, g.patch_len()))
        .expect("conv2d: the weight is row-major")
}

/// A matrix whose rows the threads sharing a batch write, each thread the rows of its own
/// samples.
struct SharedRows<'a, T>(RawArrayViewMut<T, Ix2>, PhantomData<&'a mut T>);

// SAFETY: the threads write disjoint rows (the contract of `row`), and `T` may be sent.
unsafe impl<T: Send> Sync for SharedRows<'_, T> {}

impl<'a, T> SharedRows<'a, T> {
    fn of(matrix: &'a mut ArrayViewMut2<'_, T>) -> Self {
        SharedRows(matrix.raw_view_mut(), PhantomData)
    }

    /// Row `i`.
    ///
    /// # Safety
    /// No other view of row `i` may be alive while this one is.
    unsafe fn row(&self, i: usize) -> ArrayViewMut1<'a, T> {
        // SAFETY: `i` is checked by `index_axis_move`; the matrix is borrowed for `'a`, and the
        // caller vouches that this row is not viewed twice.
        unsafe { self.0.index_axis_move(Axis(0), i).deref_into_view_mut() }
    }
}

/// What [`over_pieces`] runs for each piece: `f(piece, samples, lane)`.
type PieceJob<'a, T> = dyn Fn(usize, Range<usize>, &mut Lane<T>) + Sync + 'a;

/// Runs `f(piece, samples, lane)` for each of the `pieces` (at most `n`, at least 1) runs of
/// consecutive samples a batch of `n` is cut into (piece `j` holds samples
/// `n·j/pieces .. n·(j+1)/pieces`), sharing the pieces among the pool's threads, each thread
/// with its own lane of `lanes`. Returns how many pieces there were.
fn over_pieces<T: Element>(
    n: usize,
    pieces: usize,
    lanes: &mut Vec<Lane<T>>,
    f: &PieceJob<'_, T>,
) -> usize {
    let pieces = pieces.min(n).max(1);
    let parts = pool::threads().min(pieces);
    if lanes.len() < parts {
        lanes.resize_with(parts, Lane::default);
    }
    let lanes = lanes.as_mut_ptr() as usize;
    pool::run(parts, &|part, parts| {
        // SAFETY: each part takes its own lane (`part` < `parts` ≤ the lanes there are), and the
        // lanes stay borrowed until `run` returns.
        let lane = unsafe { &mut *(lanes as *mut Lane<T>).add(part) };
        for piece in (part..pieces).step_by(parts) {
            f(piece, n * piece / pieces..n * (piece + 1) / pieces, lane);
        }
    });
    pieces
}

/// Runs `f` on runs of consecutive samples of a batch of `n`, one run per thread of the pool
/// when the batch holds enough work (`len` elements per sample), else on this thread alone.
/// For kernels whose samples are independent, so that any split gives the same result.
fn over_samples(n: usize, len: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
    /// From this many elements in a batch on, its samples are shared.
    const SHARE_ABOVE: usize = 1 << 16;
    let parts = if n * len >= SHARE_ABOVE {
        pool::threads().min(n)
    } else {
        1
    };
    pool::run(parts, &|part, parts| {
        f(n * part / parts..n * (part + 1) / parts)
    });
}

/// `z = conv(x, W) + b` sample by sample, and `y = max(z, 0)` as well when `relu` is given.
fn forward<T: Element>(
    x: ArrayView2<T>,
    w: ArrayView4<T>,
    b: ArrayView1<T>,
    mut z: ArrayViewMut2<T>,
    mut relu: Option<ArrayViewMut2<T>>,
    scratch: &mut ConvScratch<T>,
    g: Conv2d,
) {
    g.check_batch(x.dim(), z.dim(), ("x", "y"));
    g.check_params(w.shape(), b.len());
    let w = weight_matrix(w, &g);
    let ys = relu.as_mut().map(SharedRows::of);
    for_each_unrolled(
        x,
        &mut z,
        false,
        &mut scratch.lanes,
        &g,
        &|i, cols, mut z| {
            for (mut plane, &bias) in z.rows_mut().into_iter().zip(&b) {
                plane.fill(bias);
            }
            gemm(&w, &cols, &mut z, true);
            if let Some(ys) = &ys {
                // SAFETY: sample `i` is this call's alone.
                let y = unsafe { ys.row(i) };
                Zip::from(y)
                    .and(z.into_shape_with_order(g.output_len()).unwrap())
                    .for_each(|y, &mut z| *y = if z <= T::zero() { T::zero() } else { z });
            }
        },
    );
}

/// What [`for_each_unrolled`] runs for each sample: `f(sample, patches, output)`.
type UnrolledJob<'a, T> = dyn Fn(usize, ArrayView2<T>, ArrayViewMut2<T>) + Sync + 'a;

/// For each sample `i` of `x`, unrolls it for `g` and calls `f(i, cols, out)` with its patches
/// (`C·k·k × OH·OW`) and row `i` of `out` seen as `F × OH·OW`, the samples shared among the
/// [`pool`](crate::pool)'s threads. `read` says whether `f` reads what the row held (a row that is
/// not contiguous is then copied in first; it is copied back either way).
fn for_each_unrolled<T: Element>(
    x: ArrayView2<T>,
    out: &mut ArrayViewMut2<T>,
    read: bool,
    lanes: &mut Vec<Lane<T>>,
    g: &Conv2d,
    f: &UnrolledJob<'_, T>,
) {
    let dims = (g.patch_len(), g.positions());
    let outs = SharedRows::of(out);
    over_pieces(x.nrows(), x.nrows(), lanes, &|_, samples, lane| {
        let cols = grown(&mut lane.cols, dims.0 * dims.1);
        for i in samples {
            im2col(
                contiguous(x.row(i), &mut lane.input),
                cols,
                &mut lane.padded,
                g,
            );
            let cols = ArrayView2::from_shape(dims, &*cols).expect("one sample's patches");
            // SAFETY: sample `i` is this piece's alone.
            let row = unsafe { outs.row(i) };
            with_slice_mut(row, &mut lane.output, read, |row| {
                let out = ArrayViewMut2::from_shape((g.filters, dims.1), row)
                    .expect("a row holds F × OH·OW values");
                f(i, cols, out);
            });
        }
    });
}

/// Convolution forward (PyTorch's `Conv2d`: cross-correlation with zero padding):
/// `y[f, oy, ox] = b[f] + Σ_{c, ky, kx} W[f, c, ky, kx] · x[c, oy·s + ky − pad, ox·s + kx − pad]`,
/// with `x` 0 outside the image.
///
/// `x` is `n × C·H·W` and `y` `n × F·OH·OW`, both NCHW (see [`Conv2d`]); `W` is
/// `F × C × k × k`, row-major (as a [`Param`] keeps it), `b` has `F` values. Each sample is
/// unrolled into its patches in `scratch` (see [`ConvScratch`]) and multiplied by the weight seen
/// as `F × C·k·k`: sample `i`'s output, seen as `F × OH·OW`, is `W·colsᵢᵀ + b`.
///
/// Local derivatives: `∂y/∂x` is the transposed convolution with `W`, `∂y/∂W` the correlation of
/// `dy` with `x`, `∂y[f, ·]/∂b[f] = 1`.
pub fn conv2d_forward<T: Element>(
    x: ArrayView2<T>,
    w: ArrayView4<T>,
    b: ArrayView1<T>,
    y: ArrayViewMut2<T>,
    scratch: &mut ConvScratch<T>,
    g: Conv2d,
) {
    forward(x, w, b, y, None, scratch, g);
}

/// Convolution forward followed by ReLU: `z = conv(x, W) + b` as in [`conv2d_forward`], and
/// `y = max(z, 0)`, each sample's output rectified as soon as it is complete. `z` keeps the
/// sums before the ReLU, `y` (of `z`'s shape) gets the ReLU's output.
pub fn conv2d_relu_forward<T: Element>(
    x: ArrayView2<T>,
    w: ArrayView4<T>,
    b: ArrayView1<T>,
    z: ArrayViewMut2<T>,
    y: ArrayViewMut2<T>,
    scratch: &mut ConvScratch<T>,
    g: Conv2d,
) {
    assert_eq!(z.dim(), y.dim(), "conv2d: z and y have the same shape");
    forward(x, w, b, z, Some(y), scratch, g);
}

/// Convolution backward for the input: `dx = convᵀ(dy, W)`, i.e.
/// `dx[c, iy, ix] = Σ dy[f, oy, ox] · W[f, c, ky, kx]` over every output `(oy, ox)` whose window
/// reads `(iy, ix)` at offset `(ky, kx)`.
///
/// `dy` is `n × F·OH·OW`, `dx` `n × C·H·W` (NCHW), `W` as in [`conv2d_forward`]; `mode` says
/// whether `dx` is overwritten or added to. With stride 1 this is itself a convolution, of `dy`
/// with the weight turned around, unrolled and multiplied straight into `dx`; otherwise per
/// sample the patches' gradient `dcols = Wᵀ·dyᵢ` (`C·k·k × OH·OW`, in `scratch`) is added back
/// to the inputs it came from (col2im). The samples are shared among the
/// [`pool`](crate::pool)'s threads.
pub fn conv2d_backward_input<T: Element>(
    w: ArrayView4<T>,
    dy: ArrayView2<T>,
    mut dx: ArrayViewMut2<T>,
    mode: GradMode,
    scratch: &mut ConvScratch<T>,
    g: Conv2d,
) {
    g.check_batch(dx.dim(), dy.dim(), ("dx", "dy"));
    assert_eq!(
        w.shape(),
        [g.filters, g.channels, g.kernel, g.kernel],
        "conv2d: the weight is filters × channels × kernel × kernel for {g:?}"
    );
    if g.stride == 1 && g.pad < g.kernel {
        return backward_input_by_convolution(w, dy, dx, mode, scratch, g);
    }
    let w = weight_matrix(w, &g);
    let dims = (g.patch_len(), g.positions());
    let dxs = SharedRows::of(&mut dx);
    over_pieces(
        dy.nrows(),
        dy.nrows(),
        &mut scratch.lanes,
        &|_, samples, lane| {
            let dcols = grown(&mut lane.cols, dims.0 * dims.1);
            for i in samples {
                let dys = matrix(dy.row(i), (g.filters, dims.1), &mut lane.input);
                let mut dc =
                    ArrayViewMut2::from_shape(dims, &mut *dcols).expect("one sample's patches");
                gemm(&w.t(), &dys, &mut dc, false);
                // SAFETY: sample `i` is this piece's alone.
                let dx = unsafe { dxs.row(i) };
                let add_to = mode == GradMode::Add;
                with_slice_mut(dx, &mut lane.output, add_to, |dx| {
                    col2im(dcols, dx, add_to, &mut lane.padded, &g);
                });
            }
        },
    );
}

/// [`conv2d_backward_input`] for stride 1 as a convolution itself: `dx` is `dy` (`F` planes of
/// `OH × OW`) convolved with the weight turned around (`W'[c, f, u, v] = W[f, c, k−1−u, k−1−v]`)
/// over `k − 1 − pad` zeros of padding, which gives `H × W` planes again. Each sample's `dy` is
/// unrolled (a copy of runs) and multiplied straight into `dx`, with no col2im.
fn backward_input_by_convolution<T: Element>(
    w: ArrayView4<T>,
    dy: ArrayView2<T>,
    mut dx: ArrayViewMut2<T>,
    mode: GradMode,
    scratch: &mut ConvScratch<T>,
    g: Conv2d,
) {
    let k = g.kernel;
    let turned = Conv2d {
        channels: g.filters,
        height: g.out_height(),
        width: g.out_width(),
        filters: g.channels,
        kernel: k,
        stride: 1,
        pad: k - 1 - g.pad,
    };
    debug_assert_eq!(
        (turned.out_height(), turned.out_width()),
        (g.height, g.width)
    );
    let flipped = grown(&mut scratch.flipped, g.channels * turned.patch_len());
    for (c, row) in flipped.chunks_exact_mut(turned.patch_len()).enumerate() {
        for (f, taps) in row.chunks_exact_mut(k * k).enumerate() {
            for (u, taps) in taps.chunks_exact_mut(k).enumerate() {
                for (v, tap) in taps.iter_mut().enumerate() {
                    *tap = w[[f, c, k - 1 - u, k - 1 - v]];
                }
            }
        }
    }
    let flipped = ArrayView2::from_shape((g.channels, turned.patch_len()), &*flipped)
        .expect("the turned weight");
    let add_to = mode == GradMode::Add;
    for_each_unrolled(
        dy,
        &mut dx,
        add_to,
        &mut scratch.lanes,
        &turned,
        &|_, cols, mut dx| {
            gemm(&flipped, &cols, &mut dx, add_to);
        },
    );
}

/// The parameters' gradients `dW` (`F × C·k·k`) and `db`, handed to `store(dW, db)`:
/// `dWᵀ = Σᵢ colsᵢ·dyᵢᵀ` with each sample's patches unrolled again, and `db[f]` the sum of
/// `dy`'s plane `f` over the batch. The batch's [`PIECES`] are shared among the pool's threads,
/// each summing its samples; the pieces' sums are then added in order.
fn param_gradients<T: Element>(
    x: ArrayView2<T>,
    dy: ArrayView2<T>,
    scratch: &mut ConvScratch<T>,
    g: &Conv2d,
    store: impl FnOnce(ArrayView2<T>, &[T]),
) {
    let (f, patch, positions) = (g.filters, g.patch_len(), g.positions());
    let each = patch * f + f;
    let sums = grown(&mut scratch.sums, PIECES * each);
    let shared = sums.as_mut_ptr() as usize;
    let pieces = over_pieces(
        x.nrows(),
        PIECES,
        &mut scratch.lanes,
        &|piece, samples, lane| {
            // SAFETY: each piece writes its own `each` elements of `sums`, borrowed until
            // `over_pieces` returns.
            let sum = unsafe {
                std::slice::from_raw_parts_mut((shared as *mut T).add(piece * each), each)
            };
            let (dwt, db) = sum.split_at_mut(patch * f);
            let mut dwt = ArrayViewMut2::from_shape((patch, f), dwt).expect("the piece's dWᵀ");
            if samples.is_empty() {
                dwt.fill(T::zero());
            }
            db.fill(T::zero());
            let cols = grown(&mut lane.cols, patch * positions);
            for (t, i) in samples.enumerate() {
                im2col(
                    contiguous(x.row(i), &mut lane.output),
                    cols,
                    &mut lane.padded,
                    g,
                );
                let cols = ArrayView2::from_shape((patch, positions), &*cols)
                    .expect("one sample's patches");
                // dyᵢᵀ (`OH·OW × F`), so that the product reads both operands row by row; the
                // bias's gradient on the way.
                let dys = contiguous(dy.row(i), &mut lane.output);
                let dyt = grown(&mut lane.input, positions * f);
                transpose(dys, f, positions, dyt);
                for (plane, db) in dys.chunks_exact(positions).zip(db.iter_mut()) {
                    *db += total(plane);
                }
                let dyt = ArrayView2::from_shape((positions, f), &*dyt).expect("dyᵢᵀ");
                gemm(&cols, &dyt, &mut dwt, t > 0);
            }
        },
    );
    let (first, rest) = sums.split_at_mut(each);
    for other in rest[..(pieces - 1) * each].chunks_exact(each) {
        for (s, &o) in first.iter_mut().zip(other) {
            *s += o;
        }
    }
    let (dwt, db) = first.split_at(patch * f);
    store(
        ArrayView2::from_shape((patch, f), dwt)
            .expect("dWᵀ")
            .reversed_axes(),
        db,
    );
}

/// The parameters' side of a convolution's backward pass: their gradients
/// `dW[f, c, ky, kx] = Σ_{i, oy, ox} dy[i, f, oy, ox] · x[i, c, oy·s + ky − pad, ox·s + kx − pad]`
/// and `db[f] = Σ_{i, oy, ox} dy[i, f, oy, ox]`, overwriting `weight`'s and `bias`'s gradients;
/// or with `sgd = Some((η, λ))` an SGD step in their place, from the same `dW` and `db`:
/// `W ← (1 − η·λ)·W − η·dW`, `b ← b − η·db` (weight decay `λ` on the weight, not the bias, as in
/// [`Sgd`](crate::optim::Sgd)), leaving the gradients as they were.
///
/// `x` is the forward pass's input (`n × C·H·W`), `dy` the output's gradient (`n × F·OH·OW`).
/// Each sample's patches are unrolled again into `scratch`; the batch is summed in pieces shared
/// among the [`pool`](crate::pool)'s threads, with the same result for any number of them. The
/// input's gradient needs the weight the forward pass used: call [`conv2d_backward_input`] first.
pub fn conv2d_param_grads_or_step<T: Element>(
    x: ArrayView2<T>,
    dy: ArrayView2<T>,
    weight: &mut Param<T, Ix4>,
    bias: &mut Param<T, Ix1>,
    sgd: Option<(T, T)>,
    scratch: &mut ConvScratch<T>,
    g: Conv2d,
) {
    g.check_batch(x.dim(), dy.dim(), ("x", "dy"));
    g.check_params(weight.shape(), bias.shape()[0]);
    let dims = (g.filters, g.patch_len());
    param_gradients(x, dy, scratch, &g, |dw, db| match sgd {
        None => {
            let grad = weight.grad_mut().into_shape_with_order(dims);
            grad.expect("parameters are row-major").assign(&dw);
            bias.grad_mut().assign(&ArrayView1::from(db));
        }
        Some((lr, decay)) => {
            let keep = T::one() - lr * decay;
            let w = weight.value_mut().into_shape_with_order(dims);
            Zip::from(w.expect("parameters are row-major"))
                .and(&dw)
                .for_each(|w, &d| *w = keep * *w - lr * d);
            Zip::from(bias.value_mut())
                .and(db)
                .for_each(|b, &d| *b -= lr * d);
        }
    });
}

/// The geometry of a 2-D pooling (square window) over `channels` planes of `height × width`: a
/// `window × window` window moved by `stride`, over the input padded by `pad` on every side
/// (at most half the window, as PyTorch requires, so that every window covers some input).
/// Pooling keeps the channels: the output is `C·OH·OW` per sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2d {
    /// Channels `C`, input and output.
    pub channels: usize,
    /// Input height `H`.
    pub height: usize,
    /// Input width `W`.
    pub width: usize,
    /// The window's side `k`.
    pub window: usize,
    /// How far the window moves between neighbouring outputs (at least 1).
    pub stride: usize,
    /// Padding on each side of each plane (at most `window / 2`).
    pub pad: usize,
}

impl Pool2d {
    /// `OH = (H + 2·pad − k) / stride + 1`, rounded down. Panics if the window is larger than
    /// the padded input or the stride is 0.
    pub const fn out_height(&self) -> usize {
        out_size(self.height, self.window, self.stride, self.pad)
    }

    /// `OW = (W + 2·pad − k) / stride + 1`, rounded down. Panics if the window is larger than
    /// the padded input or the stride is 0.
    pub const fn out_width(&self) -> usize {
        out_size(self.width, self.window, self.stride, self.pad)
    }

    /// Columns of an input batch: `C·H·W`.
    pub const fn input_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Columns of an output batch: `C·OH·OW`.
    pub const fn output_len(&self) -> usize {
        self.channels * self.out_height() * self.out_width()
    }

    /// Asserts that an input batch and an output batch fit the geometry, and have as many rows.
    fn check(&self, x: (usize, usize), y: (usize, usize), names: (&str, &str)) {
        assert!(
            2 * self.pad <= self.window,
            "pool2d: the padding is at most half the window for {self:?}"
        );
        assert_eq!(
            x.1,
            self.input_len(),
            "pool2d: {} has C·H·W = {} columns for {self:?}",
            names.0,
            self.input_len()
        );
        assert_eq!(
            y.1,
            self.output_len(),
            "pool2d: {} has C·OH·OW = {} columns for {self:?}",
            names.1,
            self.output_len()
        );
        assert_eq!(
            x.0, y.0,
            "pool2d: {} and {} have as many rows",
            names.0, names.1
        );
    }

    /// The input rows (or columns, with `size` the width) that output row (column) `o`'s window
    /// covers, the padding left out.
    fn span(&self, o: usize, size: usize) -> Range<usize> {
        let start = o * self.stride;
        let lo = start.saturating_sub(self.pad);
        let hi = (start + self.window).saturating_sub(self.pad).min(size);
        lo..hi.max(lo)
    }

    /// Calls `f(index, rows, cols)` for every output of one sample in order (`c·OH·OW + oy·OW +
    /// ox`), with the input rows and columns its window covers, as indices into the sample's
    /// row: `c·H·W + iy·W + ix` for `iy` in `rows`, `ix` in `cols`.
    fn for_each_window(&self, mut f: impl FnMut(usize, usize, Range<usize>, Range<usize>)) {
        let (h, w) = (self.height, self.width);
        let mut index = 0;
        for c in 0..self.channels {
            for oy in 0..self.out_height() {
                let rows = self.span(oy, h);
                for ox in 0..self.out_width() {
                    f(index, c * h * w, rows.clone(), self.span(ox, w));
                    index += 1;
                }
            }
        }
    }
}

/// Where each maximum of a max pooling came from, kept by [`max_pool_forward`] for
/// [`max_pool_backward`] (as the book's `Pooling` layer keeps its argmax): for output `j` of
/// sample `i`, entry `i·C·OH·OW + j` is the column of that sample's input row that held the
/// maximum. `Default` gives an empty one; it grows to the largest batch and then allocates
/// nothing.
#[derive(Debug, Default)]
pub struct PoolArgmax {
    /// The input column of each output's maximum, sample after sample.
    from: Vec<u32>,
}

/// Takes `v` (input `i`) as the window's maximum so far if it beats `best`: the first maximum in
/// row-major order wins, and a NaN is taken as the maximum (PyTorch). Selects rather than a
/// branch: which input of a window wins is a coin toss on real data, and a mispredicted branch
/// per input was most of the pool's time.
#[inline(always)]
fn keep_max<T: Element>(best: &mut T, at: &mut usize, v: T, i: usize) {
    let take = (v > *best) | v.is_nan();
    *best = if take { v } else { *best };
    *at = if take { i } else { *at };
}

/// Max pooling of one sample: each output gets its window's maximum, `from` its column.
fn max_pool_sample<T: Element, X: Index<usize, Output = T> + ?Sized>(
    x: &X,
    y: ArrayViewMut1<T>,
    from: &mut [u32],
    g: &Pool2d,
) {
    let mut outs = y.into_iter().zip(from);
    g.for_each_window(|_, plane, rows, cols| {
        let (y, from) = outs.next().expect("one output per window");
        let mut at = plane + rows.start * g.width + cols.start;
        let mut best = T::neg_infinity();
        for iy in rows {
            for ix in cols.clone() {
                let i = plane + iy * g.width + ix;
                let v = x[i];
                keep_max(&mut best, &mut at, v, i);
            }
        }
        *y = best;
        *from = at as u32;
    });
}

/// Max pooling forward (PyTorch's `MaxPool2d`): `y[c, oy, ox]` is the maximum of `x[c, iy, ix]`
/// over the window `iy ∈ oy·s − pad .. oy·s − pad + k`, `ix` likewise, the padding counting as
/// −∞; `argmax` records which input each maximum came from (the first in row-major order among
/// equal ones).
///
/// `x` is `n × C·H·W`, `y` `n × C·OH·OW` (NCHW, see [`Pool2d`]).
///
/// Local derivative: 1 for the input recorded in `argmax`, 0 for the rest of the window.
pub fn max_pool_forward<T: Element>(
    x: ArrayView2<T>,
    mut y: ArrayViewMut2<T>,
    argmax: &mut PoolArgmax,
    g: Pool2d,
) {
    g.check(x.dim(), y.dim(), ("x", "y"));
    assert!(
        g.input_len() <= u32::MAX as usize,
        "pool2d: a sample has at most 2³² values"
    );
    let out = g.output_len();
    argmax.from.resize(x.nrows() * out, 0);
    let two_by_two = g.window == 2 && g.stride == 2 && g.pad == 0;
    let (ys, froms) = (SharedRows::of(&mut y), argmax.from.as_mut_ptr() as usize);
    over_samples(x.nrows(), g.input_len(), &|samples| {
        for i in samples {
            let xs = x.row(i);
            // SAFETY: sample `i` is this run's alone; its `out` entries of the argmax lie inside
            // it (resized above), which stays borrowed until `over_samples` returns.
            let (mut ys, from) = unsafe {
                let from = (froms as *mut u32).add(i * out);
                (ys.row(i), std::slice::from_raw_parts_mut(from, out))
            };
            if two_by_two && let (Some(xs), Some(ys)) = (xs.as_slice(), ys.as_slice_mut()) {
                max_pool_2x2(xs, ys, from, &g);
                continue;
            }
            match xs.as_slice() {
                Some(xs) => max_pool_sample(xs, ys, from, &g),
                None => max_pool_sample(&xs, ys, from, &g),
            }
        }
    });
}

/// [`max_pool_sample`] for the common window (2×2, stride 2, no padding) on contiguous rows: the
/// four inputs of each window read directly, with the same choice among them; in `f32` with
/// AVX-512, up to sixteen neighbouring windows at a time.
fn max_pool_2x2<T: Element>(x: &[T], y: &mut [T], from: &mut [u32], g: &Pool2d) {
    let (h, w) = (g.height, g.width);
    let (oh, ow) = (g.out_height(), g.out_width());
    #[cfg(target_arch = "x86_64")]
    let vectors = std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
        && crate::gemm::avx512_kernels();
    #[cfg(not(target_arch = "x86_64"))]
    let vectors = false;
    for c in 0..g.channels {
        for oy in 0..oh {
            let top = c * h * w + 2 * oy * w;
            let (r0, r1) = (&x[top..top + w], &x[top + w..top + 2 * w]);
            let out = (c * oh + oy) * ow;
            let (y, from) = (&mut y[out..out + ow], &mut from[out..out + ow]);
            let mut done = 0;
            #[cfg(target_arch = "x86_64")]
            if vectors {
                while done < ow {
                    let (i, n) = (2 * done, (ow - done).min(16));
                    // SAFETY: `T` is `f32` (checked above), the processor has AVX-512F, and
                    // the rows hold the inputs of these `n` windows.
                    unsafe {
                        up_to_sixteen_windows(
                            (
                                r0[i..i + 2 * n].as_ptr().cast(),
                                r1[i..i + 2 * n].as_ptr().cast(),
                            ),
                            n,
                            (top + i) as u32,
                            w as u32,
                            y[done..done + n].as_mut_ptr().cast(),
                            from[done..done + n].as_mut_ptr(),
                        );
                    }
                    done += n;
                }
            }
            for ox in done..ow {
                let i = 2 * ox;
                let (mut best, mut at) = (r0[i], top + i);
                for (v, j) in [
                    (r0[i + 1], top + i + 1),
                    (r1[i], top + w + i),
                    (r1[i + 1], top + w + i + 1),
                ] {
                    keep_max(&mut best, &mut at, v, j);
                }
                y[ox] = best;
                from[ox] = at as u32;
            }
        }
    }
}

/// `n` (1 to 16) neighbouring 2×2 windows of [`max_pool_2x2`]: their `2·n` upper and lower
/// inputs at `rows`, the first upper one at column `first` of the sample (its rows `width`
/// apart); their maxima go to `y`, the columns they came from to `from`, chosen as [`keep_max`]
/// does.
///
/// # Safety
/// The processor must support AVX-512F; `rows` must point to `2·n` readable values each, `y`
/// and `from` to `n` writable ones.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn up_to_sixteen_windows(
    rows: (*const f32, *const f32),
    n: usize,
    first: u32,
    width: u32,
    y: *mut f32,
    from: *mut u32,
) {
    use crate::gemm::first_lanes;
    use std::arch::x86_64::*;
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    let (low, high) = (first_lanes(2 * n), first_lanes((2 * n).saturating_sub(16)));
    // SAFETY: the caller vouches for `2·n` values at each row; the masks read no more.
    let (u0, u1, l0, l1) = unsafe {
        (
            _mm512_maskz_loadu_ps(low, rows.0),
            _mm512_maskz_loadu_ps(high, rows.0.wrapping_add(16)),
            _mm512_maskz_loadu_ps(low, rows.1),
            _mm512_maskz_loadu_ps(high, rows.1.wrapping_add(16)),
        )
    };
    let columns = _mm512_add_epi32(_mm512_set1_epi32(first as i32), even);
    let mut best = _mm512_permutex2var_ps(u0, even, u1);
    let mut at = columns;
    // The other three inputs of each window in row-major order, and how far on they are.
    for (v, offset) in [
        (_mm512_permutex2var_ps(u0, odd, u1), 1),
        (_mm512_permutex2var_ps(l0, even, l1), width),
        (_mm512_permutex2var_ps(l0, odd, l1), width + 1),
    ] {
        let take =
            _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        best = _mm512_mask_blend_ps(take, best, v);
        let there = _mm512_add_epi32(columns, _mm512_set1_epi32(offset as i32));
        at = _mm512_mask_blend_epi32(take, at, there);
    }
    let out = first_lanes(n);
    // SAFETY: the caller vouches for `n` writable values at each; the mask writes no more.
    unsafe {
        _mm512_mask_storeu_ps(y, out, best);
        _mm512_mask_storeu_epi32(from.cast(), out, at);
    }
}

/// Adds each output gradient to the input its maximum came from.
fn max_pool_scatter<T: Element, D: IndexMut<usize, Output = T> + ?Sized>(
    dy: ArrayView1<T>,
    from: &[u32],
    dx: &mut D,
) {
    for (&d, &i) in dy.iter().zip(from) {
        dx[i as usize] += d;
    }
}

/// Max pooling backward: `dx[c, iy, ix] = Σ dy[c, oy, ox]` over the windows whose maximum came
/// from `(iy, ix)` (overlapping windows, `stride < window`, may share one), 0 for inputs that
/// were no window's maximum. `argmax` is the one the forward pass on this batch filled; `mode`
/// says whether `dx` is overwritten or added to.
pub fn max_pool_backward<T: Element>(
    dy: ArrayView2<T>,
    mut dx: ArrayViewMut2<T>,
    mode: GradMode,
    argmax: &PoolArgmax,
    g: Pool2d,
) {
    g.check(dx.dim(), dy.dim(), ("dx", "dy"));
    let out = g.output_len();
    assert_eq!(
        argmax.from.len(),
        dy.nrows() * out,
        "pool2d: the argmax is the forward pass's on a batch of this size"
    );
    let dxs = SharedRows::of(&mut dx);
    over_samples(dy.nrows(), g.input_len(), &|samples| {
        for i in samples {
            // SAFETY: sample `i` is this run's alone.
            let mut dxs = unsafe { dxs.row(i) };
            if mode == GradMode::Set {
                dxs.fill(T::zero());
            }
            let (dys, from) = (dy.row(i), &argmax.from[i * out..(i + 1) * out]);
            match dxs.as_slice_mut() {
                Some(dxs) => max_pool_scatter(dys, from, dxs),
                None => max_pool_scatter(dys, from, &mut dxs),
            }
        }
    });
}

/// Average pooling of one sample.
fn avg_pool_sample<T: Element, X: Index<usize, Output = T> + ?Sized>(
    x: &X,
    y: ArrayViewMut1<T>,
    g: &Pool2d,
) {
    let area = T::from_usize(g.window * g.window);
    let mut outs = y.into_iter();
    g.for_each_window(|_, plane, rows, cols| {
        let mut sum = T::zero();
        for iy in rows {
            for ix in cols.clone() {
                sum += x[plane + iy * g.width + ix];
            }
        }
        *outs.next().expect("one output per window") = sum / area;
    });
}

/// Average pooling forward (PyTorch's `AvgPool2d` with `count_include_pad=True`):
/// `y[c, oy, ox] = (1/k²) Σ x[c, iy, ix]` over the window (as in [`max_pool_forward`]), the
/// padding counting as zeros, so every window divides by `k²`.
///
/// `x` is `n × C·H·W`, `y` `n × C·OH·OW` (NCHW, see [`Pool2d`]).
///
/// Local derivative: `1/k²` for every input of the window.
pub fn avg_pool_forward<T: Element>(x: ArrayView2<T>, mut y: ArrayViewMut2<T>, g: Pool2d) {
    g.check(x.dim(), y.dim(), ("x", "y"));
    for (xs, ys) in x.rows().into_iter().zip(y.rows_mut()) {
        match xs.as_slice() {
            Some(xs) => avg_pool_sample(xs, ys, &g),
            None => avg_pool_sample(&xs, ys, &g),
        }
    }
}

/// Adds `dy/k²` of each output to every input of its window.
fn avg_pool_scatter<T: Element, D: IndexMut<usize, Output = T> + ?Sized>(
    dy: ArrayView1<T>,
    dx: &mut D,
    g: &Pool2d,
) {
    let area = T::from_usize(g.window * g.window);
    g.for_each_window(|index, plane, rows, cols| {
        let d = dy[index] / area;
        for iy in rows {
            for ix in cols.clone() {
                dx[plane + iy * g.width + ix] += d;
            }
        }
    });
}

/// Average pooling backward: `dx[c, iy, ix] = Σ dy[c, oy, ox] / k²` over the windows that cover
/// `(iy, ix)`; `mode` says whether `dx` is overwritten or added to.
pub fn avg_pool_backward<T: Element>(
    dy: ArrayView2<T>,
    mut dx: ArrayViewMut2<T>,
    mode: GradMode,
    g: Pool2d,
) {
    g.check(dx.dim(), dy.dim(), ("dx", "dy"));
    for (dys, mut dxs) in dy.rows().into_iter().zip(dx.rows_mut()) {
        if mode == GradMode::Set {
            dxs.fill(T::zero());
        }
        match dxs.as_slice_mut() {
            Some(dxs) => avg_pool_scatter(dys, dxs, &g),
            None => avg_pool_scatter(dys, &mut dxs, &g),
        }
    }
}

/// Flatten forward: `y = x`. Images are already stored one sample per row, so flattening
/// `C × H × W` into `C·H·W` features changes only how the shape is read; the values are copied.
///
/// Local derivative: the identity.
pub fn flatten_forward<T: Element>(x: ArrayView2<T>, mut y: ArrayViewMut2<T>) {
    assert_eq!(x.dim(), y.dim(), "flatten: x and y have the same shape");
    y.assign(&x);
}

/// Flatten backward: `dx = dy` (or `dx += dy`, as `mode` says). `y` is the forward's output,
/// unused, as in the activations' calling convention.
pub fn flatten_backward<T: Element>(
    _y: ArrayView2<T>,
    dy: ArrayView2<T>,
    dx: ArrayViewMut2<T>,
    mode: GradMode,
) {
    assert_eq!(dx.dim(), dy.dim(), "flatten: dx and dy have the same shape");
    let dx = Zip::from(dx).and(&dy);
    match mode {
        GradMode::Set => dx.for_each(|d, &g| *d = g),
        GradMode::Add => dx.for_each(|d, &g| *d += g),
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{
        Array, Array1, Array2, Array4, ArrayView, Dimension, ShapeBuilder, arr1, arr2, s,
    };
    use rand::rngs::Xoshiro256PlusPlus;
    use rand::{RngExt, SeedableRng};

    use super::*;

    fn rng(seed: u64) -> Xoshiro256PlusPlus {
        Xoshiro256PlusPlus::seed_from_u64(seed)
    }

    /// An array of uniform values in −1..1.
    fn random<D: Dimension, Sh: ShapeBuilder<Dim = D>>(
        rng: &mut Xoshiro256PlusPlus,
        shape: Sh,
    ) -> Array<f64, D> {
        Array::from_shape_simple_fn(shape, || rng.random_range(-1.0..1.0))
    }

    /// The largest difference between `a` and `b` over the largest magnitude in either (0 when
    /// both are all zero), as the gradient checks report it.
    fn rel_error<D: Dimension>(a: ArrayView<f64, D>, b: ArrayView<f64, D>) -> f64 {
        assert_eq!(a.shape(), b.shape());
        let diff = Zip::from(&a)
            .and(&b)
            .fold(0.0f64, |m, &a, &b| m.max((a - b).abs()));
        let scale = a.iter().chain(b.iter()).fold(0.0f64, |m, v| m.max(v.abs()));
        if scale == 0.0 { diff } else { diff / scale }
    }

    /// The convolution written out as seven nested loops, padding read as zeros.
    fn reference_conv(x: &Array2<f64>, w: &Array4<f64>, b: &Array1<f64>, g: Conv2d) -> Array2<f64> {
        let (oh, ow) = (g.out_height(), g.out_width());
        let mut y = Array2::zeros((x.nrows(), g.output_len()));
        for i in 0..x.nrows() {
            for f in 0..g.filters {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut sum = b[f];
                        for c in 0..g.channels {
                            for ky in 0..g.kernel {
                                for kx in 0..g.kernel {
                                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                                    let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= g.height as isize
                                        || ix >= g.width as isize
                                    {
                                        continue;
                                    }
                                    let at = c * g.height * g.width
                                        + iy as usize * g.width
                                        + ix as usize;
                                    sum += w[[f, c, ky, kx]] * x[[i, at]];
                                }
                            }
                        }
                        y[[i, (f * oh + oy) * ow + ox]] = sum;
                    }
                }
            }
        }
        y
    }

    fn conv(x: &Array2<f64>, w: &Array4<f64>, b: &Array1<f64>, g: Conv2d) -> Array2<f64> {
        let mut y = Array2::zeros((x.nrows(), g.output_len()));
        conv2d_forward(
            x.view(),
            w.view(),
            b.view(),
            y.view_mut(),
            &mut ConvScratch::default(),
            g,
        );
        y
    }

    /// Central differences of `loss` at `at`, element by element.
    fn numeric_gradient<D: Dimension>(
        at: &Array<f64, D>,
        loss: impl Fn(&Array<f64, D>) -> f64,
    ) -> Array<f64, D> {
        const EPS: f64 = 1e-5;
        let mut probe = at.clone();
        let mut grad = Array::zeros(at.raw_dim());
        for (j, g) in grad.iter_mut().enumerate() {
            let v = probe.as_slice().unwrap()[j];
            probe.as_slice_mut().unwrap()[j] = v + EPS;
            let up = loss(&probe);
            probe.as_slice_mut().unwrap()[j] = v - EPS;
            let down = loss(&probe);
            probe.as_slice_mut().unwrap()[j] = v;
            *g = (up - down) / (2.0 * EPS);
        }
        grad
    }

    /// `L = Σ r ⊙ y`, whose gradient with respect to `y` is `r`.
    fn linear(r: &Array2<f64>, y: &Array2<f64>) -> f64 {
        (r * y).sum()
    }

    fn geometry(channels: usize, height: usize, width: usize, filters: usize) -> Conv2d {
        Conv2d {
            channels,
            height,
            width,
            filters,
            kernel: 3,
            stride: 1,
            pad: 0,
        }
    }

    fn pool(
        channels: usize,
        height: usize,
        width: usize,
        window: usize,
        stride: usize,
        pad: usize,
    ) -> Pool2d {
        Pool2d {
            channels,
            height,
            width,
            window,
            stride,
            pad,
        }
    }

    #[test]
    fn conv_by_hand() {
        // One 3×3 channel 1..9, one 2×2 filter [[1, 2], [3, 4]], bias 0.5, stride 1, no padding:
        // y[0,0] = 1·1 + 2·2 + 3·4 + 4·5 = 37, y[0,1] = 2 + 6 + 15 + 24 = 47,
        // y[1,0] = 4 + 10 + 21 + 32 = 67, y[1,1] = 5 + 12 + 24 + 36 = 77; each + 0.5.
        let x = arr2(&[[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]]);
        let w = Array4::from_shape_vec((1, 1, 2, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let g = Conv2d {
            kernel: 2,
            ..geometry(1, 3, 3, 1)
        };
        assert_eq!((g.out_height(), g.out_width()), (2, 2));
        let y = conv(&x, &w, &arr1(&[0.5]), g);
        assert_eq!(y, arr2(&[[37.5, 47.5, 67.5, 77.5]]));

        // Padding 1, stride 2, a second filter of ones with bias −1: windows start at rows and
        // columns −1 and 1. Filter 0: (0,0) sees only x[0,0] under w[1,1]: 4·1 = 4; (0,1) sees
        // x[0,1], x[0,2] under w[1,0], w[1,1]: 3·2 + 4·3 = 18; (1,0) sees x[1,0], x[2,0] under
        // w[0,1], w[1,1]: 2·4 + 4·7 = 36; (1,1) sees 5, 6, 8, 9: 5 + 12 + 24 + 36 = 77.
        // Filter 1 sums the same inputs, minus 1: 0, 4, 10, 27. Filter 0's plane comes first.
        let mut w2 = Array4::ones((2, 1, 2, 2));
        w2.slice_mut(s![0..1, .., .., ..]).assign(&w);
        let g = Conv2d {
            filters: 2,
            stride: 2,
            pad: 1,
            ..g
        };
        assert_eq!((g.out_height(), g.out_width()), (2, 2));
        let y = conv(&x, &w2, &arr1(&[0.0, -1.0]), g);
        assert_eq!(y, arr2(&[[4.0, 18.0, 36.0, 77.0, 0.0, 4.0, 10.0, 27.0]]));
    }

    #[test]
    fn conv_matches_the_loops() {
        let mut rng = rng(1);
        let mut cases = 0;
        // One scratch for every geometry, as a layer reuses its own: nothing may be left over.
        let mut scratch = ConvScratch::default();
        for channels in [1, 3] {
            for filters in [1, 4] {
                for kernel in [1, 3, 5] {
                    for stride in [1, 2] {
                        for pad in [0, 1, 2] {
                            for n in [1, 3] {
                                let g = Conv2d {
                                    kernel,
                                    stride,
                                    pad,
                                    ..geometry(channels, 7, 6, filters)
                                };
                                let x = random(&mut rng, (n, g.input_len()));
                                let w = random(&mut rng, (filters, channels, kernel, kernel));
                                let b = random(&mut rng, filters);
                                let expected = reference_conv(&x, &w, &b, g);
                                let y = conv(&x, &w, &b, g);
                                let err = rel_error(y.view(), expected.view());
                                assert!(err < 1e-12, "{g:?}, batch {n}: error {err:e}");

                                // The fused ReLU: z as above, y its positive part.
                                let mut z = Array2::zeros(y.dim());
                                let mut r = Array2::from_elem(y.dim(), f64::NAN);
                                conv2d_relu_forward(
                                    x.view(),
                                    w.view(),
                                    b.view(),
                                    z.view_mut(),
                                    r.view_mut(),
                                    &mut scratch,
                                    g,
                                );
                                assert!(rel_error(z.view(), expected.view()) < 1e-12);
                                assert_eq!(r, z.mapv(|v| v.max(0.0)));
                                cases += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 144);
    }

    #[test]
    fn conv_reads_and_writes_strided_views() {
        // A batch whose rows are every other column of a wider matrix, into an output likewise.
        let mut rng = rng(2);
        let g = Conv2d {
            stride: 2,
            pad: 1,
            ..geometry(2, 5, 4, 3)
        };
        let wide = random(&mut rng, (2, 2 * g.input_len()));
        let x = wide.slice(s![.., ..;2]);
        let w = random(&mut rng, (3, 2, 3, 3));
        let b = random(&mut rng, 3);
        let mut out = Array2::zeros((2, 2 * g.output_len()));
        let mut scratch = ConvScratch::default();
        conv2d_forward(
            x,
            w.view(),
            b.view(),
            out.slice_mut(s![.., ..;2]),
            &mut scratch,
            g,
        );
        let expected = reference_conv(&x.to_owned(), &w, &b, g);
        assert!(rel_error(out.slice(s![.., ..;2]), expected.view()) < 1e-12);
        assert!(out.slice(s![.., 1..;2]).iter().all(|&v| v == 0.0));

        // The backward passes, from a strided gradient into a strided one, against the same
        // passes on contiguous copies.
        let wide_dy = random(&mut rng, (2, 2 * g.output_len()));
        let dy = wide_dy.slice(s![.., 1..;2]);
        let mut expected_dx = Array2::zeros(x.dim());
        conv2d_backward_input(
            w.view(),
            dy.to_owned().view(),
            expected_dx.view_mut(),
            GradMode::Set,
            &mut scratch,
            g,
        );
        let mut wide_dx = Array2::zeros((2, 2 * g.input_len()));
        conv2d_backward_input(
            w.view(),
            dy,
            wide_dx.slice_mut(s![.., ..;2]),
            GradMode::Set,
            &mut scratch,
            g,
        );
        assert_eq!(wide_dx.slice(s![.., ..;2]), expected_dx);
        assert!(wide_dx.slice(s![.., 1..;2]).iter().all(|&v| v == 0.0));

        let grads = |x: ArrayView2<f64>, dy: ArrayView2<f64>, scratch: &mut ConvScratch<f64>| {
            let mut weight = Param::zeros("conv.weight", w.raw_dim());
            let mut bias = Param::zeros("conv.bias", 3);
            conv2d_param_grads_or_step(x, dy, &mut weight, &mut bias, None, scratch, g);
            (weight.grad().to_owned(), bias.grad().to_owned())
        };
        let contiguous = grads(x.to_owned().view(), dy.to_owned().view(), &mut scratch);
        assert_eq!(grads(x, dy, &mut scratch), contiguous);
        assert!(contiguous.0.iter().all(|&v| v != 0.0));
    }

    /// Geometries for the gradient checks: (channels, filters, kernel, stride, pad).
    const GRAD_CASES: [(usize, usize, usize, usize, usize); 5] = [
        (1, 2, 3, 1, 0),
        (2, 3, 3, 2, 1),
        (3, 2, 2, 2, 0),
        (2, 1, 3, 1, 1),
        (4, 2, 1, 2, 1),
    ];

    #[test]
    fn conv_gradients_match_central_differences() {
        let mut rng = rng(3);
        for (channels, filters, kernel, stride, pad) in GRAD_CASES {
            let g = Conv2d {
                kernel,
                stride,
                pad,
                ..geometry(channels, 5, 6, filters)
            };
            let n = 2;
            let x = random(&mut rng, (n, g.input_len()));
            let w = random(&mut rng, (filters, channels, kernel, kernel));
            let b = random(&mut rng, filters);
            let r = random(&mut rng, (n, g.output_len()));
            let mut scratch = ConvScratch::default();

            let mut dx = Array2::from_elem(x.dim(), f64::NAN);
            conv2d_backward_input(
                w.view(),
                r.view(),
                dx.view_mut(),
                GradMode::Set,
                &mut scratch,
                g,
            );
            let numeric = numeric_gradient(&x, |x| linear(&r, &conv(x, &w, &b, g)));
            let err = rel_error(dx.view(), numeric.view());
            assert!(err < 1e-6, "{g:?}: input gradient error {err:e}");

            let mut weight = Param::zeros("conv.weight", w.raw_dim());
            let mut bias = Param::zeros("conv.bias", b.raw_dim());
            weight.value_mut().assign(&w);
            bias.value_mut().assign(&b);
            weight.grad_mut().fill(f64::NAN);
            bias.grad_mut().fill(f64::NAN);
            conv2d_param_grads_or_step(
                x.view(),
                r.view(),
                &mut weight,
                &mut bias,
                None,
                &mut scratch,
                g,
            );
            let numeric = numeric_gradient(&w, |w| linear(&r, &conv(&x, w, &b, g)));
            let err = rel_error(weight.grad(), numeric.view());
            assert!(err < 1e-6, "{g:?}: weight gradient error {err:e}");
            let numeric = numeric_gradient(&b, |b| linear(&r, &conv(&x, &w, b, g)));
            let err = rel_error(bias.grad(), numeric.view());
            assert!(err < 1e-6, "{g:?}: bias gradient error {err:e}");
            // The parameters themselves are left alone.
            assert_eq!(weight.value(), w);
            assert_eq!(bias.value(), b);
        }
    }

    fn max_pool(x: &Array2<f64>, g: Pool2d) -> (Array2<f64>, PoolArgmax) {
        let mut y = Array2::zeros((x.nrows(), g.output_len()));
        let mut argmax = PoolArgmax::default();
        max_pool_forward(x.view(), y.view_mut(), &mut argmax, g);
        (y, argmax)
    }

    fn avg_pool(x: &Array2<f64>, g: Pool2d) -> Array2<f64> {
        let mut y = Array2::zeros((x.nrows(), g.output_len()));
        avg_pool_forward(x.view(), y.view_mut(), g);
        y
    }

    /// `n` samples of distinct values (a shuffled, spread-out range), so that no window has a tie
    /// and no probe of the gradient check changes which input is a maximum.
    fn distinct(rng: &mut Xoshiro256PlusPlus, n: usize, len: usize) -> Array2<f64> {
        let mut values: Vec<f64> = (0..n * len).map(|i| i as f64 * 0.01 - 1.0).collect();
        for i in (1..values.len()).rev() {
            values.swap(i, rng.random_range(0..=i));
        }
        Array2::from_shape_vec((n, len), values).unwrap()
    }

    /// Pooling geometries for the gradient checks: (window, stride, pad).
    const POOL_CASES: [(usize, usize, usize); 5] =
        [(2, 2, 0), (3, 1, 1), (3, 2, 1), (2, 1, 0), (3, 3, 0)];

    #[test]
    fn pool_gradients_match_central_differences() {
        let mut rng = rng(4);
        for (window, stride, pad) in POOL_CASES {
            let g = pool(2, 5, 7, window, stride, pad);
            let x = distinct(&mut rng, 2, g.input_len());
            let r = random(&mut rng, (2, g.output_len()));

            let (_, argmax) = max_pool(&x, g);
            let mut dx = Array2::from_elem(x.dim(), f64::NAN);
            max_pool_backward(r.view(), dx.view_mut(), GradMode::Set, &argmax, g);
            let numeric = numeric_gradient(&x, |x| linear(&r, &max_pool(x, g).0));
            let err = rel_error(dx.view(), numeric.view());
            assert!(err < 1e-6, "{g:?}: max pool gradient error {err:e}");

            let mut dx = Array2::from_elem(x.dim(), f64::NAN);
            avg_pool_backward(r.view(), dx.view_mut(), GradMode::Set, g);
            let numeric = numeric_gradient(&x, |x| linear(&r, &avg_pool(x, g)));
            let err = rel_error(dx.view(), numeric.view());
            assert!(err < 1e-6, "{g:?}: avg pool gradient error {err:e}");
        }
    }

    #[test]
    fn flatten_gradient_matches_central_differences() {
        let mut rng = rng(5);
        let x = random(&mut rng, (3, 12));
        let r = random(&mut rng, (3, 12));
        let flat = |x: &Array2<f64>| {
            let mut y = Array2::zeros(x.dim());
            flatten_forward(x.view(), y.view_mut());
            y
        };
        assert_eq!(flat(&x), x);
        let y = flat(&x);
        let mut dx = Array2::from_elem(x.dim(), f64::NAN);
        flatten_backward(y.view(), r.view(), dx.view_mut(), GradMode::Set);
        let numeric = numeric_gradient(&x, |x| linear(&r, &flat(x)));
        assert!(rel_error(dx.view(), numeric.view()) < 1e-6);
    }

    #[test]
    fn pools_by_hand() {
        // One 2×2 plane, window 2, stride 2, padding 1: each window holds one input and three
        // padded places. Max: the padding is −∞, so each output is its input (0 if it were
        // zeros); average: the padding counts as zeros, so each output is its input / 4.
        let g = pool(1, 2, 2, 2, 2, 1);
        let x = arr2(&[[-1.0, -2.0, -3.0, -4.0], [1.0, 2.0, 3.0, 4.0]]);
        let (y, argmax) = max_pool(&x, g);
        assert_eq!(y, x);
        assert_eq!(argmax.from, [0, 1, 2, 3, 0, 1, 2, 3]);
        assert_eq!(avg_pool(&x, g), x.mapv(|v| v / 4.0));

        // 3×3, window 2, stride 1: windows overlap; x = [[1, 9, 2], [3, 4, 8], [5, 6, 7]].
        // Maxima 9 (at 1), 9 (at 1), 6 (at 7), 8 (at 5); 9's input gets both its gradients.
        let g = pool(1, 3, 3, 2, 1, 0);
        let x = arr2(&[[1.0, 9.0, 2.0, 3.0, 4.0, 8.0, 5.0, 6.0, 7.0]]);
        let (y, argmax) = max_pool(&x, g);
        assert_eq!(y, arr2(&[[9.0, 9.0, 6.0, 8.0]]));
        let mut dx = Array2::zeros(x.dim());
        let dy = arr2(&[[1.0, 10.0, 100.0, 1000.0]]);
        max_pool_backward(dy.view(), dx.view_mut(), GradMode::Set, &argmax, g);
        assert_eq!(
            dx,
            arr2(&[[0.0, 11.0, 0.0, 0.0, 0.0, 1000.0, 0.0, 100.0, 0.0]])
        );
        // Averages: (1+9+3+4)/4, (9+2+4+8)/4, (3+4+5+6)/4, (4+8+6+7)/4.
        assert_eq!(avg_pool(&x, g), arr2(&[[4.25, 5.75, 4.5, 6.25]]));
    }

    /// Max pooling by loops over every place of the padded window, padding −∞, the first
    /// maximum in row-major order winning: the outputs, and the gradient `dy` sends back.
    fn reference_max_pool(
        x: &Array2<f64>,
        dy: &Array2<f64>,
        g: Pool2d,
    ) -> (Array2<f64>, Array2<f64>) {
        let (oh, ow) = (g.out_height(), g.out_width());
        let mut y = Array2::zeros((x.nrows(), g.output_len()));
        let mut dx = Array2::zeros(x.dim());
        for i in 0..x.nrows() {
            for c in 0..g.channels {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut best = (f64::NEG_INFINITY, None);
                        for ky in 0..g.window {
                            for kx in 0..g.window {
                                let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                                let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                let inside = iy >= 0
                                    && ix >= 0
                                    && iy < g.height as isize
                                    && ix < g.width as isize;
                                let (v, at) = if inside {
                                    let at = (c * g.height + iy as usize) * g.width + ix as usize;
                                    (x[[i, at]], Some(at))
                                } else {
                                    (f64::NEG_INFINITY, None)
                                };
                                if v > best.0 || best.1.is_none() && at.is_some() && v == best.0 {
                                    best = (v, at);
                                }
                            }
                        }
                        let o = (c * oh + oy) * ow + ox;
                        y[[i, o]] = best.0;
                        dx[[i, best.1.unwrap()]] += dy[[i, o]];
                    }
                }
            }
        }
        (y, dx)
    }

    #[test]
    fn the_two_by_two_path_chooses_as_the_general_one() {
        two_by_two_against_the_general_path::<f64>();
        // In `f32` with AVX-512, windows go sixteen at a time: rows of 1 to 2 full vectors and
        // a part.
        two_by_two_against_the_general_path::<f32>();
    }

    /// Ties, NaNs and −∞ among random values, on planes whose odd edge is dropped.
    fn two_by_two_against_the_general_path<T: Element>() {
        let mut rng = rng(23);
        let values = [0.5, 0.5, f64::NAN, f64::NEG_INFINITY, -0.25];
        for (c, h, w) in [(1, 2, 2), (3, 5, 7), (2, 8, 6), (2, 4, 33), (1, 3, 70)] {
            let g = Pool2d {
                channels: c,
                height: h,
                width: w,
                window: 2,
                stride: 2,
                pad: 0,
            };
            let x = Array2::from_shape_simple_fn((4, c * h * w), || {
                T::from_f64(if rng.random_range(0..3) == 0 {
                    values[rng.random_range(0..values.len())]
                } else {
                    rng.random_range(-1.0..1.0)
                })
            });
            let mut fast = Array2::zeros((4, g.output_len()));
            let mut argmax = PoolArgmax::default();
            max_pool_forward(x.view(), fast.view_mut(), &mut argmax, g);
            for (n, row) in x.rows().into_iter().enumerate() {
                let mut slow = Array1::zeros(g.output_len());
                let mut from = vec![0; g.output_len()];
                max_pool_sample(&row, slow.view_mut(), &mut from, &g);
                let out = g.output_len();
                assert_eq!(from, argmax.from[n * out..(n + 1) * out], "{c}×{h}×{w}");
                for (a, b) in fast.row(n).iter().zip(&slow) {
                    assert!(
                        a == b || (a.is_nan() && b.is_nan()),
                        "{c}×{h}×{w}: {a} against {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn max_pool_with_padding_and_overlap_matches_the_loops() {
        let mut rng = rng(6);
        for (window, stride, pad) in [
            (3, 1, 1),
            (3, 2, 1),
            (2, 1, 1),
            (4, 2, 2),
            (3, 1, 0),
            (2, 2, 1),
        ] {
            for (h, w) in [(5, 7), (6, 4)] {
                let g = pool(3, h, w, window, stride, pad);
                // Small negative integers: many ties, and the padding must not look like a 0.
                let x = Array2::from_shape_simple_fn((2, g.input_len()), || {
                    -(rng.random_range(1..4) as f64)
                });
                let dy = random(&mut rng, (2, g.output_len()));
                let (expected_y, expected_dx) = reference_max_pool(&x, &dy, g);
                let (y, argmax) = max_pool(&x, g);
                assert_eq!(y, expected_y, "{g:?}");
                let mut dx = Array2::from_elem(x.dim(), f64::NAN);
                max_pool_backward(dy.view(), dx.view_mut(), GradMode::Set, &argmax, g);
                assert!(rel_error(dx.view(), expected_dx.view()) < 1e-15, "{g:?}");
            }
        }
    }

    #[test]
    fn add_mode_adds_to_the_gradient() {
        let mut rng = rng(7);
        let start = |rng: &mut Xoshiro256PlusPlus, len| random(rng, (2, len));

        let g = Conv2d {
            stride: 2,
            pad: 1,
            ..geometry(2, 5, 6, 3)
        };
        let w = random(&mut rng, (3, 2, 3, 3));
        let dy = random(&mut rng, (2, g.output_len()));
        let mut scratch = ConvScratch::default();
        let mut set = start(&mut rng, g.input_len());
        conv2d_backward_input(
            w.view(),
            dy.view(),
            set.view_mut(),
            GradMode::Set,
            &mut scratch,
            g,
        );
        let before = start(&mut rng, g.input_len());
        let mut added = before.clone();
        conv2d_backward_input(
            w.view(),
            dy.view(),
            added.view_mut(),
            GradMode::Add,
            &mut scratch,
            g,
        );
        assert!(rel_error(added.view(), (&before + &set).view()) < 1e-15);

        let g = pool(2, 5, 6, 3, 2, 1);
        let x = distinct(&mut rng, 2, g.input_len());
        let dy = random(&mut rng, (2, g.output_len()));
        let (_, argmax) = max_pool(&x, g);
        let mut set = start(&mut rng, g.input_len());
        max_pool_backward(dy.view(), set.view_mut(), GradMode::Set, &argmax, g);
        let before = start(&mut rng, g.input_len());
        let mut added = before.clone();
        max_pool_backward(dy.view(), added.view_mut(), GradMode::Add, &argmax, g);
        assert!(rel_error(added.view(), (&before + &set).view()) < 1e-15);

        let mut set = start(&mut rng, g.input_len());
        avg_pool_backward(dy.view(), set.view_mut(), GradMode::Set, g);
        let before = start(&mut rng, g.input_len());
        let mut added = before.clone();
        avg_pool_backward(dy.view(), added.view_mut(), GradMode::Add, g);
        assert!(rel_error(added.view(), (&before + &set).view()) < 1e-15);

        let before = start(&mut rng, 12);
        let dy = start(&mut rng, 12);
        let mut added = before.clone();
        flatten_backward(dy.view(), dy.view(), added.view_mut(), GradMode::Add);
        assert_eq!(added, &before + &dy);
    }

    #[test]
    fn sgd_step_is_the_gradients_step() {
        let mut rng = rng(8);
        let (lr, decay) = (0.1, 0.01);
        for (channels, filters, kernel, stride, pad) in GRAD_CASES {
            for n in [1, 3] {
                let g = Conv2d {
                    kernel,
                    stride,
                    pad,
                    ..geometry(channels, 5, 6, filters)
                };
                let x = random(&mut rng, (n, g.input_len()));
                let dy = random(&mut rng, (n, g.output_len()));
                let mut weight = Param::zeros("conv.weight", (filters, channels, kernel, kernel));
                let mut bias = Param::zeros("conv.bias", filters);
                let w0 = random(&mut rng, (filters, channels, kernel, kernel));
                weight.value_mut().assign(&w0);
                bias.value_mut().assign(&random(&mut rng, filters));
                let (w0, b0) = (weight.value().to_owned(), bias.value().to_owned());
                let mut scratch = ConvScratch::default();

                conv2d_param_grads_or_step(
                    x.view(),
                    dy.view(),
                    &mut weight,
                    &mut bias,
                    None,
                    &mut scratch,
                    g,
                );
                let (dw, db) = (weight.grad().to_owned(), bias.grad().to_owned());
                let expected_w = &w0 - &((&dw + &(&w0 * decay)) * lr);
                let expected_b = &b0 - &(&db * lr);

                conv2d_param_grads_or_step(
                    x.view(),
                    dy.view(),
                    &mut weight,
                    &mut bias,
                    Some((lr, decay)),
                    &mut scratch,
                    g,
                );
                assert!(
                    rel_error(weight.value(), expected_w.view()) < 1e-12,
                    "{g:?}"
                );
                assert!(rel_error(bias.value(), expected_b.view()) < 1e-12, "{g:?}");
                assert_ne!(weight.value(), w0);
                // The gradients are those of the first call, untouched by the step.
                assert_eq!(weight.grad(), dw);
                assert_eq!(bias.grad(), db);
            }
        }
    }

    #[test]
    fn a_second_call_reuses_the_scratch() {
        let mut rng = rng(9);
        let g = Conv2d {
            pad: 1,
            ..geometry(3, 6, 5, 4)
        };
        let x = random(&mut rng, (3, g.input_len()));
        let w = random(&mut rng, (4, 3, 3, 3));
        let b = random(&mut rng, 4);
        let dy = random(&mut rng, (3, g.output_len()));
        let mut y = Array2::zeros(dy.dim());
        let mut dx = Array2::zeros(x.dim());
        let mut weight = Param::zeros("conv.weight", w.raw_dim());
        let mut bias = Param::zeros("conv.bias", 4);
        let mut scratch = ConvScratch::default();
        let pg = pool(3, 6, 5, 2, 2, 1);
        let mut pooled = Array2::zeros((3, pg.output_len()));
        let mut argmax = PoolArgmax::default();

        let mut step = |scratch: &mut ConvScratch<f64>, argmax: &mut PoolArgmax| {
            conv2d_forward(x.view(), w.view(), b.view(), y.view_mut(), scratch, g);
            conv2d_backward_input(
                w.view(),
                dy.view(),
                dx.view_mut(),
                GradMode::Set,
                scratch,
                g,
            );
            conv2d_param_grads_or_step(
                x.view(),
                dy.view(),
                &mut weight,
                &mut bias,
                None,
                scratch,
                g,
            );
            conv2d_param_grads_or_step(
                x.view(),
                dy.view(),
                &mut weight,
                &mut bias,
                Some((0.1, 0.0)),
                scratch,
                g,
            );
            max_pool_forward(x.view(), pooled.view_mut(), argmax, pg);
        };
        let buffers = |scratch: &ConvScratch<f64>, argmax: &PoolArgmax| {
            let mut buffers = vec![
                (scratch.lanes.as_ptr() as usize, scratch.lanes.capacity()),
                (scratch.sums.as_ptr() as usize, scratch.sums.capacity()),
                (
                    scratch.flipped.as_ptr() as usize,
                    scratch.flipped.capacity(),
                ),
                (argmax.from.as_ptr() as usize, argmax.from.capacity()),
            ];
            for lane in &scratch.lanes {
                for buffer in [&lane.cols, &lane.input, &lane.output, &lane.padded] {
                    buffers.push((buffer.as_ptr() as usize, buffer.capacity()));
                }
            }
            buffers
        };
        step(&mut scratch, &mut argmax);
        let first = buffers(&scratch, &argmax);
        assert!(!scratch.lanes.is_empty());
        // The lane's patches hold the larger of the sample's (C·k·k rows) and its output
        // gradient's (F·k·k rows, for the input's gradient), over H·W = OH·OW positions.
        let rows = g.patch_len().max(g.filters * g.kernel * g.kernel);
        assert_eq!(scratch.lanes[0].cols.len(), rows * g.positions());
        assert_eq!(scratch.sums.len(), PIECES * (4 * g.patch_len() + 4));
        assert_eq!(argmax.from.len(), 3 * pg.output_len());
        step(&mut scratch, &mut argmax);
        assert_eq!(buffers(&scratch, &argmax), first);
    }

    #[test]
    fn f32_agrees_with_f64() {
        // The products take other paths in f32 (with AVX-512, chainrule's own kernels).
        let mut rng = rng(10);
        let g = Conv2d {
            stride: 1,
            pad: 2,
            kernel: 5,
            ..geometry(3, 28, 20, 16)
        };
        let n = 4;
        let x = random(&mut rng, (n, g.input_len()));
        let w = random(&mut rng, (16, 3, 5, 5));
        let b = random(&mut rng, 16);
        let dy = random(&mut rng, (n, g.output_len()));
        let single = |a: &Array2<f64>| a.mapv(|v| v as f32);
        let double = |a: ArrayView2<f32>| a.mapv(f64::from);

        let expected = reference_conv(&x, &w, &b, g);
        let mut y = Array2::<f32>::zeros(expected.dim());
        let mut scratch = ConvScratch::default();
        let w32 = w.mapv(|v| v as f32);
        let b32 = b.mapv(|v| v as f32);
        conv2d_forward(
            single(&x).view(),
            w32.view(),
            b32.view(),
            y.view_mut(),
            &mut scratch,
            g,
        );
        assert!(rel_error(double(y.view()).view(), expected.view()) < 1e-5);

        let mut dx64 = Array2::zeros(x.dim());
        conv2d_backward_input(
            w.view(),
            dy.view(),
            dx64.view_mut(),
            GradMode::Set,
            &mut ConvScratch::default(),
            g,
        );
        let mut dx = Array2::<f32>::zeros(x.dim());
        conv2d_backward_input(
            w32.view(),
            single(&dy).view(),
            dx.view_mut(),
            GradMode::Set,
            &mut scratch,
            g,
        );
        assert!(rel_error(double(dx.view()).view(), dx64.view()) < 1e-5);

        let mut weight64 = Param::zeros("w", w.raw_dim());
        let mut bias64 = Param::zeros("b", 16);
        conv2d_param_grads_or_step(
            x.view(),
            dy.view(),
            &mut weight64,
            &mut bias64,
            None,
            &mut ConvScratch::default(),
            g,
        );
        let mut weight = Param::<f32, Ix4>::zeros("w", w.raw_dim());
        let mut bias = Param::<f32, Ix1>::zeros("b", 16);
        conv2d_param_grads_or_step(
            single(&x).view(),
            single(&dy).view(),
            &mut weight,
            &mut bias,
            None,
            &mut scratch,
            g,
        );
        let dw = weight.grad().mapv(f64::from);
        assert!(rel_error(dw.view(), weight64.grad()) < 1e-5);
        let db = bias.grad().mapv(f64::from);
        assert!(rel_error(db.view(), bias64.grad()) < 1e-5);
    }
}
