//! `C (+)= A·B` for operands too large to read in place, in any layout, on AVX-512.
//!
//! A blocked scheme: for each block of up to `KC` rows of `B` and as many of its columns as
//! make a megabyte, `B` is copied (packed) into panels of 64 columns, each panel `k`-major so
//! that one step of `k` reads 256 contiguous, aligned bytes; a transposed `B` (`Wᵀ` in `dy·Wᵀ`)
//! is packed through 16 × 16 transposes in registers. The micro-kernel keeps a block of up to 6
//! rows × 64 columns of `C` in 24 vector registers and runs over the block's steps of `k`: four
//! loads from the `B` panel, six broadcasts from `A`, 24 fused multiply-adds. A row-major `A` is
//! read in place (a transposed one is first copied, 48 rows × up to 256 steps at a time,
//! `k`-major): its 6-row slice stays in L1 while the packed `B` block streams past it from L2.
//!
//! Deep blocks pay: every block of `k` loads and stores each tile of `C` once more, and packing
//! `B` for a whole layer's depth at once (784 or 1024 steps) took the products of a
//! 784-1024-1024-10 training step from 145–153 to 150–163 GFLOP/s on one core.
//!
//! Large products are split by columns of `C` across the [`pool`](crate::pool)'s threads; each
//! thread packs into buffers it keeps, so after the first product nothing is allocated.

use std::arch::x86_64::*;
use std::cell::RefCell;

use ndarray::{ArrayView2, ArrayViewMut2};

use super::{Ends, Raw, first_lanes, relu, vector_masks};

/// Rows of `C` per micro-kernel call.
const MR: usize = 6;
/// Columns of `C` per micro-kernel call: four vectors of 16.
const NR: usize = 64;
/// At most this many steps of `k` per packed block when `A` is read in place: each block
/// costs a load and a store of every tile of `C`, and its `A` slice (6 × 1024 floats, 24 KB)
/// still stays in L1.
const KC: usize = 1024;
/// At most this many steps of `k` per block when `A` is copied first (a transposed `A`).
const KC_COPIED: usize = 256;
/// Blocks of `MR` rows of a transposed `A` copied together (48 KB).
const GROUP: usize = 8;
/// Steps of `k` ahead of the one it copies that [`pack_a`] asks the cache for.
const PACK_A_AHEAD: usize = 8;
/// Rows ahead of the one it copies that [`pack_b`] asks the cache for, in a row-major `B`.
const PACK_B_ROWS_AHEAD: usize = 4;
/// Values ahead in each of a transposed `B`'s columns that [`pack_b`] asks the cache for.
const PACK_B_AHEAD: usize = 64;
/// Floats of `B` per packed block (1 MB, half of a core's L2): a block is `kc` rows deep and as
/// many whole panels wide as fit. A transposed `A` is copied again for every block of columns,
/// so a shallow block (`xᵀ·dy` with `k` the batch) had better be wide.
const BLOCK: usize = 1 << 18;
/// Below this many multiply-adds a product is not worth sharing between threads.
const SHARE_ABOVE: usize = 1 << 21;

thread_local! {
    /// This thread's packed block of `B`, grown once to its largest size.
    static PACKED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `C = start + A·B` (see [`Ends`]), for any strides and shapes that agree.
///
/// # Safety
/// The processor must support AVX-512F, `A`'s columns must equal `B`'s rows, `C` must be `A`'s
/// rows by `B`'s columns, and `ends` must address matrices of C's shape.
#[target_feature(enable = "avx512f")]
pub unsafe fn gemm(
    a: &ArrayView2<f32>,
    b: &ArrayView2<f32>,
    c: &mut ArrayViewMut2<f32>,
    ends: Ends,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    debug_assert_eq!(b.nrows(), k);
    debug_assert_eq!(c.dim(), (m, n));
    if m == 0 || n == 0 {
        return;
    }
    let (a, b, c) = (Raw::of(a), Raw::of(b), Raw::of_mut(c));
    if k == 0 {
        // No products: C is its start, and the ReLU output follows.
        for i in 0..m {
            for j in 0..n {
                // SAFETY: (i, j) lies inside C, the start and the ReLU output.
                unsafe {
                    let value = ends.finish(i, j, 0.0);
                    *c.at(i, j) = value;
                    if let Some(y) = ends.relu {
                        *y.at(i, j) = relu(value);
                    }
                }
            }
        }
        return;
    }
    let parts = if m * n * k > SHARE_ABOVE {
        n.div_ceil(NR)
    } else {
        1
    };
    crate::pool::run(parts, &|part, parts| {
        // Split the columns into `parts` runs of whole panels.
        let panels = n.div_ceil(NR);
        let first = panels * part / parts * NR;
        let last = (panels * (part + 1) / parts * NR).min(n);
        if first < last {
            // SAFETY: AVX-512F is present (this function's contract), and the columns
            // `first..last` of C and of the ReLU output belong to this part alone.
            unsafe { columns(a, b, c, ends, m, k, first..last) };
        }
    });
}

/// The product for columns `cols` of `B` and `C`, on this thread.
#[target_feature(enable = "avx512f")]
unsafe fn columns(
    a: Raw,
    b: Raw,
    c: Raw,
    ends: Ends,
    m: usize,
    k: usize,
    cols: std::ops::Range<usize>,
) {
    PACKED.with_borrow_mut(|packed| {
        // Steps of k per block: as even as the limit allows (784 = one block, 1100 = 2 × 550).
        let depth = k.div_ceil(k.div_ceil(if a.cols == 1 { KC } else { KC_COPIED }));
        let width = (BLOCK / depth / NR).max(1) * NR;
        let len = width.min(cols.len().next_multiple_of(NR)) * depth + 16;
        if packed.len() < len {
            packed.resize(len, 0.0);
        }
        // Panels start on 64-byte boundaries, for aligned loads.
        let skip = packed.as_ptr().align_offset(64);
        let pb = packed[skip..].as_mut_ptr();
        // On the stack: a pointer into `packed` instead made the compiler spill the
        // micro-kernel's sums to memory (60 instead of 150 GFLOP/s).
        let mut panels_a = [0.0f32; GROUP * MR * KC_COPIED];
        let mut jc = cols.start;
        while jc < cols.end {
            let nc = width.min(cols.end - jc);
            let mut pc = 0;
            while pc < k {
                let kc = depth.min(k - pc);
                // The first block of k starts from the given start (times `keep`), later ones
                // from C as it stands; the last one also writes the ReLU output. Every block is
                // gated.
                let block_ends = Ends {
                    start: if pc == 0 { ends.start } else { Some(c) },
                    keep: if pc == 0 { ends.keep } else { 1.0 },
                    relu: if pc + kc == k { ends.relu } else { None },
                    ..ends
                };
                // SAFETY (this block): packing reads rows `pc..pc + kc` and columns `jc..jc + nc`
                // of B, inside the operand, into a buffer sized above for the largest block; the
                // micro-kernel reads rows `ir..ir + rows` and columns `pc..pc + kc` of A and
                // writes the matching tile of C, all inside the operands.
                unsafe {
                    pack_b(
                        b.ptr.offset(pc as isize * b.rows + jc as isize * b.cols),
                        b,
                        kc,
                        nc,
                        pb,
                    );
                    for ir in (0..m).step_by(MR) {
                        let rows = MR.min(m - ir);
                        let mut a0 = a.ptr.offset(ir as isize * a.rows + pc as isize * a.cols);
                        let mut a = a;
                        if a.cols != 1 {
                            // A's rows are not contiguous (xᵀ in xᵀ·dy), and its steps of k may
                            // all land in one cache set: copy the slices of `GROUP` blocks of
                            // rows at once, k-major, reading each of A's lines once.
                            let group = ir / MR % GROUP;
                            if group == 0 {
                                let rows = (GROUP * MR).min(m - ir);
                                pack_a(a0, a, rows, kc, panels_a.as_mut_ptr());
                            }
                            a0 = panels_a.as_mut_ptr().add(group * MR * kc);
                            a = Raw {
                                ptr: a0,
                                rows: 1,
                                cols: MR as isize,
                            };
                        }
                        for jr in (0..nc).step_by(NR) {
                            let width = NR.min(nc - jr);
                            let (i, j) = (ir, jc + jr);
                            let tile = Tile {
                                a: a0,
                                a_strides: a,
                                b: pb.add(jr * kc),
                                c: Raw {
                                    ptr: c.at(i, j),
                                    ..c
                                },
                                ends: block_ends.at_corner(i, j),
                            };
                            match rows {
                                6 => micro::<6>(kc, tile, width),
                                5 => micro::<5>(kc, tile, width),
                                4 => micro::<4>(kc, tile, width),
                                3 => micro::<3>(kc, tile, width),
                                2 => micro::<2>(kc, tile, width),
                                _ => micro::<1>(kc, tile, width),
                            }
                        }
                    }
                }
                pc += kc;
            }
            jc += nc;
        }
    });
}

/// Packs `kc` rows by `nc` columns of `B` (starting at `b`) into panels of `NR` columns, each
/// `k`-major (`NR` values per step of `k`), the last one padded with zeros.
#[target_feature(enable = "avx512f")]
unsafe fn pack_b(b: *const f32, s: Raw, kc: usize, nc: usize, out: *mut f32) {
    if s.cols == 1 {
        // Row-major: row by row across every panel, so that B is read in order (a panel's
        // rows alone lie a page apart in a wide B); masked loads pad the last panel with zeros.
        for p in 0..kc {
            // SAFETY: the caller guarantees B's block and the buffer's size; loads are masked to
            // the block's columns (prefetches, which never fault, may point past it), and each
            // panel's 64-byte-aligned step holds `NR` values.
            unsafe {
                let row = b.offset(p as isize * s.rows);
                // The block's part of the row `PACK_B_ROWS_AHEAD` on: a wide B's rows lie a page
                // or more apart, and each part starts a new stream for the hardware to find.
                let ahead = row.wrapping_offset(PACK_B_ROWS_AHEAD as isize * s.rows);
                for j in (0..nc).step_by(16) {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(j).cast());
                }
                for (panel, j0) in (0..nc).step_by(NR).enumerate() {
                    let masks = vector_masks(nc - j0);
                    let dst = out.add(panel * NR * kc + p * NR);
                    for (v, &mask) in masks.iter().enumerate() {
                        let values = _mm512_maskz_loadu_ps(mask, row.add(j0 + 16 * v));
                        _mm512_store_ps(dst.add(16 * v), values);
                    }
                }
            }
        }
        return;
    }
    for (panel, j0) in (0..nc).step_by(NR).enumerate() {
        let width = NR.min(nc - j0);
        // SAFETY: the caller guarantees B's block and the buffer's size; loads are masked to the
        // block (prefetches, which never fault, may point past it) and stores stay inside the
        // panel's `kc` rows.
        unsafe {
            let out = out.add(panel * NR * kc);
            let src = b.add(j0 * s.cols as usize);
            if s.rows == 1 {
                // Column j of the panel is contiguous in k: transpose 16 × 16 squares.
                for p0 in (0..kc).step_by(16) {
                    let steps = 16.min(kc - p0);
                    let mask = first_lanes(steps);
                    for j16 in (0..NR).step_by(16) {
                        let mut square: [__m512; 16] = std::array::from_fn(|j| {
                            if j16 + j < width {
                                let col = src.offset((j16 + j) as isize * s.cols).add(p0);
                                // This column's values 4 lines on: the panel reads 64 of
                                // them side by side, more streams than the hardware follows.
                                let ahead = col.wrapping_add(PACK_B_AHEAD);
                                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                                _mm512_maskz_loadu_ps(mask, col)
                            } else {
                                _mm512_setzero_ps()
                            }
                        });
                        transpose(&mut square);
                        for (p, row) in square.iter().enumerate().take(steps) {
                            _mm512_store_ps(out.add((p0 + p) * NR + j16), *row);
                        }
                    }
                }
            } else {
                for p in 0..kc {
                    for j in 0..NR {
                        *out.add(p * NR + j) = if j < width {
                            *src.offset(p as isize * s.rows + j as isize * s.cols)
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// Copies `rows` (at most `GROUP * MR`) rows by `kc` columns of `A` (starting at `a`) to `out`,
/// as one panel per `MR` rows, `MR · kc` values apart, each `k`-major: `MR` values per step of `k`.
#[target_feature(enable = "avx512f")]
unsafe fn pack_a(a: *const f32, s: Raw, rows: usize, kc: usize, out: *mut f32) {
    debug_assert!(rows <= GROUP * MR);
    // SAFETY: the caller guarantees A's block and `GROUP * MR * kc` floats at `out`; loads and
    // stores are masked to each panel's rows (prefetches may point past the block, which a
    // prefetch never faults on).
    unsafe {
        for p in 0..kc {
            let step = a.offset(p as isize * s.cols);
            if s.rows == 1 {
                // The lines of the step `PACK_A_AHEAD` on: each step is a row of A's transpose,
                // a page or most of one further on, where the hardware's prefetcher does not
                // follow (W2 at one thread +3 %, at two +6 %).
                let ahead = step.wrapping_offset(PACK_A_AHEAD as isize * s.cols);
                for at in (0..rows).step_by(16).chain([rows - 1]) {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(at).cast());
                }
            }
            for first in (0..rows).step_by(MR) {
                let count = MR.min(rows - first);
                let dst = out.add(first * kc + p * MR);
                if s.rows == 1 {
                    let mask = first_lanes(count);
                    _mm512_mask_storeu_ps(dst, mask, _mm512_maskz_loadu_ps(mask, step.add(first)));
                } else {
                    for r in 0..count {
                        *dst.add(r) = *step.offset((first + r) as isize * s.rows);
                    }
                }
            }
        }
    }
}

/// Transposes a 16 × 16 square held as 16 rows.
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn transpose(r: &mut [__m512; 16]) {
    let mut t = [_mm512_setzero_ps(); 16];
    // Interleave pairs of rows, then pairs of pairs (as 64-bit lanes), then 128-bit quarters.
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let pd = _mm512_castps_pd;
    let ps = _mm512_castpd_ps;
    for i in 0..4 {
        let q = 4 * i;
        r[q] = ps(_mm512_unpacklo_pd(pd(t[q]), pd(t[q + 2])));
        r[q + 1] = ps(_mm512_unpackhi_pd(pd(t[q]), pd(t[q + 2])));
        r[q + 2] = ps(_mm512_unpacklo_pd(pd(t[q + 1]), pd(t[q + 3])));
        r[q + 3] = ps(_mm512_unpackhi_pd(pd(t[q + 1]), pd(t[q + 3])));
    }
    for h in 0..2 {
        for i in 0..4 {
            t[8 * h + i] = _mm512_shuffle_f32x4::<0x88>(r[8 * h + i], r[8 * h + i + 4]);
            t[8 * h + i + 4] = _mm512_shuffle_f32x4::<0xDD>(r[8 * h + i], r[8 * h + i + 4]);
        }
    }
    for i in 0..8 {
        r[i] = _mm512_shuffle_f32x4::<0x88>(t[i], t[i + 8]);
        r[i + 8] = _mm512_shuffle_f32x4::<0xDD>(t[i], t[i + 8]);
    }
}

/// Where one micro-kernel call's operands start.
#[derive(Clone, Copy)]
struct Tile {
    /// `R` rows of `A`, with `a_strides`' strides.
    a: *const f32,
    a_strides: Raw,
    /// The packed `B` panel: `kc` steps of `NR` values, 64-byte aligned.
    b: *const f32,
    c: Raw,
    /// The ends of this block of k, from the tile's corner on.
    ends: Ends,
}

/// `R × width` of C = keep·start + scale·(`R` rows of `A` times the packed `B` panel, gated), over
/// `kc` steps (and `max(C, 0)` into the ReLU output, when given).
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn micro<const R: usize>(kc: usize, tile: Tile, width: usize) {
    let s = tile.a_strides;
    // SAFETY (whole body): A has `R` rows and `kc` columns from `tile.a`; the panel holds `kc`
    // steps of `NR` values, 64-byte aligned; C, the start, the ReLU output and the gate are
    // touched only in `R` rows and, through the masks, `width` columns.
    unsafe {
        let rows: [*const f32; R] = std::array::from_fn(|r| tile.a.offset(r as isize * s.rows));
        // Ask for the tile's ends now, so that they arrive while the sums run: C, and a weight
        // that an SGD step adds to, are rows far apart in a matrix of megabytes, and read only
        // after the last step of k.
        let ends = tile.ends;
        for m in [Some(tile.c), ends.start, ends.relu, ends.gate]
            .into_iter()
            .flatten()
        {
            for r in 0..R {
                for v in 0..width.div_ceil(16) {
                    _mm_prefetch::<_MM_HINT_T0>(m.at(r, 16 * v).cast_const().cast());
                }
            }
        }
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        for p in 0..kc {
            let bp = tile.b.add(p * NR);
            let bv = [
                _mm512_load_ps(bp),
                _mm512_load_ps(bp.add(16)),
                _mm512_load_ps(bp.add(32)),
                _mm512_load_ps(bp.add(48)),
            ];
            let step = p as isize * s.cols;
            for (acc, row) in acc.iter_mut().zip(&rows) {
                let x = _mm512_set1_ps(*row.offset(step));
                for (sum, &bv) in acc.iter_mut().zip(&bv) {
                    *sum = _mm512_fmadd_ps(x, bv, *sum);
                }
            }
        }
        let masks = vector_masks(width);
        let contiguous = [Some(tile.c), ends.start, ends.relu, ends.gate]
            .iter()
            .flatten()
            .all(|m| m.cols == 1);
        if contiguous {
            for (r, acc) in acc.iter().enumerate() {
                for (v, (&sum, &mask)) in acc.iter().zip(&masks).enumerate() {
                    let sum = ends.finish_lanes(r, 16 * v, sum, mask);
                    _mm512_mask_storeu_ps(tile.c.at(r, 16 * v), mask, sum);
                    if let Some(y) = ends.relu {
                        _mm512_mask_storeu_ps(
                            y.at(r, 16 * v),
                            mask,
                            // The second operand where either is NaN: a NaN stays.
                            _mm512_max_ps(_mm512_setzero_ps(), sum),
                        );
                    }
                }
            }
        } else {
            // Some matrix in another layout: element by element.
            for (r, acc) in acc.iter().enumerate() {
                let mut values = [0.0f32; NR];
                for (v, &sum) in acc.iter().enumerate() {
                    _mm512_storeu_ps(values.as_mut_ptr().add(16 * v), sum);
                }
                for (j, &sum) in values.iter().enumerate().take(width) {
                    let value = ends.finish(r, j, sum);
                    *tile.c.at(r, j) = value;
                    if let Some(y) = ends.relu {
                        *y.at(r, j) = relu(value);
                    }
                }
            }
        }
    }
}
