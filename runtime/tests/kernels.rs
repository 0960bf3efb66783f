//! Kernel paths that must agree with each other: the one-row product against the general one;
//! and kernels against plain loops.

use chainrule_runtime::Element;
use chainrule_runtime::kernels::affine_forward;
use ndarray::{Array1, Array2, s};

/// Deterministic values in [-1, 1).
fn filled(rows: usize, cols: usize, salt: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |(i, j)| {
        (((i * 131 + j * 71 + salt * 17) % 97) as f32) / 48.5 - 1.0
    })
}

#[test]
fn one_row_matches_the_general_product() {
    for k in [1, 3, 16, 100, 784] {
        for n in [1, 2, 10, 15, 16, 17, 50, 64, 65, 130] {
            let x = filled(2, k, 1);
            let w = filled(k, n, 2);
            let b = Array1::from_shape_fn(n, |j| j as f32 * 0.25);
            // Two rows go through the general product; the first row alone through the
            // one-row path.
            let mut both = Array2::zeros((2, n));
            affine_forward(x.view(), w.view(), b.view(), both.view_mut());
            let mut one = Array2::zeros((1, n));
            affine_forward(x.slice(s![0..1, ..]), w.view(), b.view(), one.view_mut());
            for (j, (&a, &e)) in one.iter().zip(both.row(0)).enumerate() {
                let tolerance = 1e-5 * (k as f32).sqrt() * e.abs().max(1.0);
                assert!(
                    (a - e).abs() <= tolerance,
                    "k {k}, n {n}, column {j}: {a} vs {e}"
                );
            }
        }
    }
}

#[test]
fn products_match_a_plain_triple_loop() {
    use chainrule_runtime::kernels::affine_backward_params;
    // Every row count up to a few blocks, column counts around the vector and block edges, and
    // both layouts of A (x·W in the forward pass, xᵀ·dy for the weight gradient); the large ones
    // split between two threads, then on one.
    for (m, threads) in [
        (1, 2),
        (2, 2),
        (5, 2),
        (6, 2),
        (7, 2),
        (13, 2),
        (100, 2),
        (100, 1),
    ] {
        chainrule_runtime::pool::set_threads(threads);
        for k in [1, 7, 100, 784] {
            for n in [1, 2, 10, 16, 17, 50, 64, 65, 130] {
                let x = filled(m, k, 3);
                let w = filled(k, n, 4);
                let b = Array1::from_shape_fn(n, |j| j as f32 * 0.5);
                let mut y = Array2::zeros((m, n));
                affine_forward(x.view(), w.view(), b.view(), y.view_mut());
                for i in 0..m {
                    for j in 0..n {
                        let expected: f64 = b[j] as f64
                            + (0..k)
                                .map(|p| x[[i, p]] as f64 * w[[p, j]] as f64)
                                .sum::<f64>();
                        let tolerance = 1e-5 * (k as f64).sqrt() * expected.abs().max(1.0);
                        assert!(
                            (y[[i, j]] as f64 - expected).abs() <= tolerance,
                            "x·W + b, m {m} k {k} n {n} at ({i}, {j}): {} vs {expected}",
                            y[[i, j]]
                        );
                    }
                }
                // dW = xᵀ·dy with dy = y: k × n.
                let mut dw = Array2::from_elem((k, n), f32::NAN);
                let mut db = Array1::zeros(n);
                affine_backward_params(x.view(), y.view(), dw.view_mut(), db.view_mut());
                for p in 0..k {
                    for j in 0..n {
                        let expected: f64 =
                            (0..m).map(|i| x[[i, p]] as f64 * y[[i, j]] as f64).sum();
                        let tolerance = 1e-5 * (m as f64).sqrt() * expected.abs().max(1.0);
                        assert!(
                            (dw[[p, j]] as f64 - expected).abs() <= tolerance,
                            "xᵀ·dy, m {m} k {k} n {n} at ({p}, {j}): {} vs {expected}",
                            dw[[p, j]]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn input_gradient_matches_a_plain_triple_loop() {
    use chainrule_runtime::kernels::{GradMode, affine_backward_input};
    for (m, n, k) in [(1, 1, 1), (100, 10, 50), (7, 3, 5), (3, 784, 50)] {
        // dx = dy·Wᵀ with dy: m × n, W: k × n, dx: m × k; then once more with Add.
        let dy = filled(m, n, 5);
        let w = filled(k, n, 6);
        let mut dx = Array2::from_elem((m, k), f32::NAN);
        affine_backward_input(w.view(), dy.view(), dx.view_mut(), GradMode::Set);
        let expected = Array2::from_shape_fn((m, k), |(i, p)| {
            (0..n)
                .map(|j| dy[[i, j]] as f64 * w[[p, j]] as f64)
                .sum::<f64>()
        });
        let close = |got: &Array2<f32>, scale: f64| {
            got.iter().zip(&expected).all(|(&g, &e)| {
                (g as f64 - scale * e).abs()
                    <= 1e-5 * (n as f64).sqrt() * (scale * e).abs().max(1.0)
            })
        };
        assert!(close(&dx, 1.0), "dy·Wᵀ for m {m} n {n} k {k}");
        affine_backward_input(w.view(), dy.view(), dx.view_mut(), GradMode::Add);
        assert!(close(&dx, 2.0), "dy·Wᵀ added twice for m {m} n {n} k {k}");
    }
}

/// `a·b` in f64 by ndarray's own product, as the reference for the packed kernel.
fn reference(a: ndarray::ArrayView2<f32>, b: ndarray::ArrayView2<f32>) -> Array2<f64> {
    a.mapv(f64::from).dot(&b.mapv(f64::from))
}

fn assert_close(got: ndarray::ArrayView2<f32>, expected: &Array2<f64>, k: usize, what: &str) {
    assert_eq!(got.dim(), expected.dim(), "{what}: shape");
    for ((i, j), &e) in expected.indexed_iter() {
        let g = got[[i, j]] as f64;
        let tolerance = 1e-5 * (k as f64).sqrt() * e.abs().max(1.0);
        assert!(
            (g - e).abs() <= tolerance,
            "{what} at ({i}, {j}): {g} vs {e}"
        );
    }
}

#[test]
fn wide_products_match_the_reference_in_every_layout() {
    use chainrule_runtime::kernels::{GradMode, affine_backward_input, affine_backward_params};
    use chainrule_runtime::pool::set_threads;
    // Layers wider than the in-place kernel takes: packed products, with shapes around the
    // packing blocks (6 rows, 64 columns, up to 1024 steps of k with A read in place or 256 with
    // A copied, blocks of a megabyte), on one and two threads.
    let shapes = [
        (1, 5, 300),
        (5, 1100, 300),
        (7, 300, 257),
        (13, 1, 1030),
        (385, 257, 513),
        (256, 784, 1024),
    ];
    for threads in [1, 2] {
        set_threads(threads);
        for (m, k, n) in shapes {
            let what = format!("{threads} thread(s), m {m} k {k} n {n}");
            let x = filled(m, k, 7);
            let w = filled(k, n, 8);
            let b = Array1::from_shape_fn(n, |j| j as f32 * 0.125);
            // y = x·W + b
            let mut y = Array2::from_elem((m, n), f32::NAN);
            affine_forward(x.view(), w.view(), b.view(), y.view_mut());
            let expected = reference(x.view(), w.view()) + &b.mapv(f64::from);
            assert_close(y.view(), &expected, k, &format!("x·W + b, {what}"));
            // The same into a transposed view of C.
            let mut yt = Array2::from_elem((n, m), f32::NAN);
            affine_forward(x.view(), w.view(), b.view(), yt.view_mut().reversed_axes());
            assert_close(yt.t(), &expected, k, &format!("x·W + b into Cᵀ, {what}"));
            // dW = xᵀ·dy with dy = y / k (A transposed).
            let dy = y.mapv(|v| v / k as f32);
            let mut dw = Array2::from_elem((k, n), f32::NAN);
            let mut db = Array1::zeros(n);
            affine_backward_params(x.view(), dy.view(), dw.view_mut(), db.view_mut());
            let expected = reference(x.t(), dy.view());
            assert_close(dw.view(), &expected, m, &format!("xᵀ·dy, {what}"));
            // dx = dy·Wᵀ (B transposed), set and then added.
            let mut dx = Array2::from_elem((m, k), f32::NAN);
            affine_backward_input(w.view(), dy.view(), dx.view_mut(), GradMode::Set);
            let expected = reference(dy.view(), w.t());
            assert_close(dx.view(), &expected, n, &format!("dy·Wᵀ, {what}"));
            affine_backward_input(w.view(), dy.view(), dx.view_mut(), GradMode::Add);
            assert_close(
                dx.view(),
                &(2.0 * &expected),
                n,
                &format!("dy·Wᵀ added, {what}"),
            );
        }
    }
}

#[test]
fn fused_affine_relu_matches_affine_then_relu() {
    use chainrule_runtime::kernels::{affine_relu_forward, relu_forward};
    use chainrule_runtime::pool::set_threads;
    // Narrow layers (read in place), wide ones (packed, k across blocks), one row, and outputs
    // in a transposed layout; inputs centred so that about half the sums are negative.
    for threads in [1, 2] {
        set_threads(threads);
        for (m, k, n) in [
            (1, 784, 50),
            (100, 784, 50),
            (7, 3, 17),
            (13, 300, 257),
            (9, 1100, 300),
            (256, 520, 1024),
        ] {
            let what = format!("{threads} thread(s), m {m} k {k} n {n}");
            let x = filled(m, k, 9);
            let w = filled(k, n, 10);
            let b = Array1::from_shape_fn(n, |j| (j % 7) as f32 * 0.3 - 0.9);
            let mut z_ref = Array2::zeros((m, n));
            affine_forward(x.view(), w.view(), b.view(), z_ref.view_mut());
            let mut y_ref = Array2::zeros((m, n));
            relu_forward(z_ref.view(), y_ref.view_mut());
            assert!(
                y_ref.iter().any(|&v| v == 0.0) && y_ref.iter().any(|&v| v > 0.0),
                "{what}"
            );

            let mut z = Array2::from_elem((m, n), f32::NAN);
            let mut y = Array2::from_elem((m, n), f32::NAN);
            affine_relu_forward(x.view(), w.view(), b.view(), z.view_mut(), y.view_mut());
            assert_eq!(z, z_ref, "z, {what}");
            assert_eq!(y, y_ref, "y, {what}");

            let mut yt = Array2::from_elem((n, m), f32::NAN);
            affine_relu_forward(
                x.view(),
                w.view(),
                b.view(),
                z.view_mut(),
                yt.view_mut().reversed_axes(),
            );
            // Another kernel (a different order of summation) serves this layout.
            let expected = y_ref.mapv(f64::from);
            assert_close(
                yt.t(),
                &expected,
                k,
                &format!("y into a transposed view, {what}"),
            );
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    use chainrule_runtime::kernels::{GradMode, affine_backward_input, affine_backward_params};
    use chainrule_runtime::pool::set_threads;
    // Large enough to be shared: narrow (rows split) and wide (columns split) products, in every
    // layout; one thread and two must agree bit for bit.
    for (m, k, n) in [(100, 784, 50), (130, 300, 100), (256, 520, 700)] {
        let x = filled(m, k, 11);
        let w = filled(k, n, 12);
        let b = Array1::from_shape_fn(n, |j| j as f32 * 0.01);
        let run = |threads| {
            set_threads(threads);
            let mut y = Array2::zeros((m, n));
            affine_forward(x.view(), w.view(), b.view(), y.view_mut());
            let mut dw = Array2::zeros((k, n));
            let mut db = Array1::zeros(n);
            affine_backward_params(x.view(), y.view(), dw.view_mut(), db.view_mut());
            let mut dx = Array2::zeros((m, k));
            affine_backward_input(w.view(), y.view(), dx.view_mut(), GradMode::Set);
            (y, dw, dx)
        };
        assert!(
            run(1) == run(2),
            "m {m} k {k} n {n}: one thread and two differ"
        );
    }
}

#[test]
fn one_row_products_through_a_param_follow_every_change_of_its_value() {
    use chainrule_runtime::Param;
    use chainrule_runtime::kernels::affine_relu_forward;
    // With AVX-512, a weight that serves enough one-row products unchanged is read through a
    // copy laid out for them; the copy must be remade whenever the value may have changed, whichever
    // way it was changed, and a clone must not share it.
    let reference = |x: ndarray::ArrayView2<f32>, w: ndarray::ArrayView2<f32>, b: &Array1<f32>| {
        Array2::from_shape_fn((1, w.ncols()), |(_, j)| {
            b[j] as f64
                + (0..w.nrows())
                    .map(|p| x[[0, p]] as f64 * w[[p, j]] as f64)
                    .sum::<f64>()
        })
    };
    // The row sits in a wider batch, as a named input's columns do: on a 64-byte boundary or 8
    // bytes past one (its loads then straddle cache lines).
    for (k, shift) in [1, 7, 16, 17, 100, 784, 2100]
        .into_iter()
        .flat_map(|k| [(k, 0), (k, 2)])
    {
        for n in [1, 3, 4, 5, 10, 50, 65] {
            let mut w = Param::<f32, ndarray::Ix2>::zeros("w", (k, n));
            w.value_mut().assign(&filled(k, n, 13));
            let wide = filled(1, k + 32, 14);
            let first = wide.as_ptr().align_offset(64) + shift;
            let x = wide.slice(s![.., first..first + k]);
            let b = Array1::from_shape_fn(n, |j| (j % 5) as f32 * 0.2 - 0.4);
            for change in 0..4 {
                let expected = reference(x, w.value(), &b);
                for call in 0..40 {
                    let what = format!("k {k}, n {n}, after change {change}, call {call}");
                    let mut z = Array2::from_elem((1, n), f32::NAN);
                    let mut y = Array2::from_elem((1, n), f32::NAN);
                    affine_relu_forward(x, w.weights(), b.view(), z.view_mut(), y.view_mut());
                    assert_close(z.view(), &expected, k, &format!("z, {what}"));
                    assert_eq!(y, z.mapv(|z| z.max(0.0)), "y, {what}");
                }
                match change {
                    0 => w.value_mut().mapv_inplace(|v| 0.1 - 0.5 * v),
                    1 => w.view_mut().value.iter_mut().for_each(|v| *v += 0.25),
                    2 => w = w.clone(),
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn one_row_products_in_16_bits_read_the_rounded_weights() {
    use chainrule_runtime::kernels::affine_relu_forward;
    use chainrule_runtime::{Param, WeightPrecision};
    use half::{bf16, f16};
    // A weight rounded to `precision` (None if it has no finite value there), in f64.
    let round = |v: f32, precision: WeightPrecision| match precision {
        WeightPrecision::Full => Some(v as f64),
        WeightPrecision::Half => Some(f16::from_f32(v).to_f64()).filter(|v| v.is_finite()),
        WeightPrecision::BFloat16 => Some(bf16::from_f32(v).to_f64()).filter(|v| v.is_finite()),
    };
    // `x·round(W) + b`, in f64, and the bound on the error of any order of f32 sums of its k
    // terms (and the bias); rounded only where the kernel rounds (AVX-512) and every weight has
    // a finite value in the precision asked for.
    let rounds = std::arch::is_x86_feature_detected!("avx512f");
    let expected = |x: ndarray::ArrayView2<f32>,
                    w: &Array2<f32>,
                    b: &Array1<f32>,
                    precision: WeightPrecision| {
        let rounded = w.mapv(|v| round(v, precision));
        let w = if rounds && rounded.iter().all(Option::is_some) {
            rounded.mapv(Option::unwrap)
        } else {
            w.mapv(|v| v as f64)
        };
        let sums = Array2::from_shape_fn((1, w.ncols()), |(_, j)| {
            let terms = (0..w.nrows()).map(|p| x[[0, p]] as f64 * w[[p, j]]);
            let size = terms.clone().map(f64::abs).sum::<f64>() + b[j].abs() as f64;
            (b[j] as f64 + terms.sum::<f64>(), size)
        });
        let bound = (w.nrows() + 2) as f64 * f64::from(f32::EPSILON);
        (
            sums.mapv(|(sum, _)| sum),
            sums.mapv(|(_, size)| bound * size),
        )
    };
    let check = |got: &Array2<f32>, (want, bound): &(Array2<f64>, Array2<f64>), what: &str| {
        for ((j, &g), (&e, &bound)) in got.iter().enumerate().zip(want.iter().zip(bound)) {
            assert!(
                (g as f64 - e).abs() <= bound,
                "{what}, column {j}: {g} vs {e} (off by more than {bound:e})"
            );
        }
    };
    for (k, shift) in [1, 7, 16, 17, 31, 32, 33, 48, 100, 784, 2100]
        .into_iter()
        .flat_map(|k| [(k, 0), (k, 2)])
    {
        for n in [1, 3, 4, 5, 10, 50, 65] {
            let mut wide = filled(1, k + 32, 21).mapv(|v| v.abs() + 0.25);
            let first = wide.as_ptr().align_offset(64) + shift;
            // At most 1 where the weight below is too large, so that its product stays finite.
            wide[[0, first + k / 2]] = 0.5;
            let x = wide.slice(s![.., first..first + k]);
            let b = Array1::from_shape_fn(n, |j| (j % 5) as f32 * 0.2 - 0.4);
            // Weights of mixed signs, and positive ones near a third, which both precisions
            // round down (by up to 2⁻¹¹ and 2⁻⁸ of their size): an error that the sums pile up,
            // far past what f32 sums lose.
            let mixed = filled(k, n, 22);
            let thirds = filled(k, n, 23).mapv(|v| (1.0 + v / 64.0) / 3.0);
            // Too large for 16 bits in one place: the weight keeps full precision (until it is
            // halved, when bfloat16 holds it).
            let mut large = mixed.clone();
            large[[k / 2, n - 1]] = 3.4e38;
            for precision in [WeightPrecision::Half, WeightPrecision::BFloat16] {
                for (name, weight) in [("mixed", &mixed), ("thirds", &thirds), ("large", &large)] {
                    let what =
                        format!("{precision}, {name} weights, k {k}, n {n}, x shifted by {shift}");
                    let mut w = Param::<f32, ndarray::Ix2>::zeros("w", (k, n));
                    w.value_mut().assign(weight);
                    w.set_one_row_precision(precision);
                    let run = |w: &mut Param<f32, ndarray::Ix2>| {
                        let mut z = Array2::from_elem((1, n), f32::NAN);
                        let mut y = Array2::from_elem((1, n), f32::NAN);
                        affine_relu_forward(x, w.weights(), b.view(), z.view_mut(), y.view_mut());
                        assert_eq!(y, z.mapv(|z| z.max(0.0)), "y, {what}");
                        z
                    };
                    // From the first call on, and in a clone, which keeps the precision.
                    let first = expected(x, weight, &b, precision);
                    check(&run(&mut w), &first, &what);
                    check(&run(&mut w.clone()), &first, &what);
                    // A new value is rounded anew.
                    w.value_mut().mapv_inplace(|v| v * 0.5);
                    let halved = weight.mapv(|v| v * 0.5);
                    let what = format!("{what}, halved");
                    check(&run(&mut w), &expected(x, &halved, &b, precision), &what);
                    // Back to full precision: the weights as they are.
                    w.set_one_row_precision(WeightPrecision::Full);
                    let full = expected(x, &halved, &b, WeightPrecision::Full);
                    for call in 0..20 {
                        check(
                            &run(&mut w),
                            &full,
                            &format!("{what}, full again, call {call}"),
                        );
                    }
                    // And 16 bits again, after full precision has made its copy.
                    let again = expected(x, &halved, &b, precision);
                    w.set_one_row_precision(precision);
                    check(&run(&mut w), &again, &format!("{what}, {precision} again"));
                    // And straight to the other 16-bit format, laid out another way.
                    let other = match precision {
                        WeightPrecision::Half => WeightPrecision::BFloat16,
                        _ => WeightPrecision::Half,
                    };
                    w.set_one_row_precision(other);
                    let other_copy = expected(x, &halved, &b, other);
                    check(&run(&mut w), &other_copy, &format!("{what}, then {other}"));
                }
            }
        }
    }
}

#[test]
fn a_nan_weight_stays_a_nan_in_16_bits() {
    use chainrule_runtime::{Param, WeightPrecision};
    // A NaN whose payload lies only in the bits that rounding to 16 bits drops: carried into an
    // infinity it would make its column ±inf (or NaN only by luck of the other terms).
    let nan = f32::from_bits(0x7f80_0001);
    let (k, n) = (40, 6);
    let x = Array2::from_elem((1, k), 0.5f32);
    let b = Array1::zeros(n);
    for precision in [
        WeightPrecision::Full,
        WeightPrecision::Half,
        WeightPrecision::BFloat16,
    ] {
        let mut w = Param::<f32, ndarray::Ix2>::zeros("w", (k, n));
        w.value_mut().fill(0.25);
        w.value_mut()[[3, 2]] = nan;
        w.set_one_row_precision(precision);
        let mut z = Array2::from_elem((1, n), 0.0f32);
        for _ in 0..20 {
            affine_forward(x.view(), w.weights(), b.view(), z.view_mut());
            for (j, &value) in z.iter().enumerate() {
                if j == 2 {
                    assert!(value.is_nan(), "{precision}: column 2 is {value}");
                } else {
                    assert_eq!(value, 5.0, "{precision}: column {j}");
                }
            }
        }
    }
}

#[test]
fn large_element_wise_kernels_match_plain_loops_on_any_thread_count() {
    use chainrule_runtime::kernels::{
        GradMode, affine_backward_params, mul_backward_b, relu_backward, relu_forward,
        sigmoid_forward,
    };
    use chainrule_runtime::pool::set_threads;
    // Large enough to be split between threads by rows (columns for the bias gradient), with a
    // row count that does not divide evenly.
    let (m, n) = (301, 700);
    let x = filled(m, n, 15);
    let dy = filled(m, n, 16);
    let a = filled(m, n, 17);
    let mut sigmoid_one_thread = None;
    for threads in [1, 2] {
        set_threads(threads);
        let what = format!("{threads} thread(s)");
        let mut y = Array2::from_elem((m, n), f32::NAN);
        relu_forward(x.view(), y.view_mut());
        assert_eq!(y, x.mapv(|v| v.max(0.0)), "relu forward, {what}");

        let mut dx = Array2::from_elem((m, n), f32::NAN);
        relu_backward(y.view(), dy.view(), dx.view_mut(), GradMode::Set);
        let expected =
            Array2::from_shape_fn(
                (m, n),
                |(i, j)| {
                    if y[[i, j]] > 0.0 { dy[[i, j]] } else { 0.0 }
                },
            );
        assert_eq!(dx, expected, "relu backward, {what}");
        relu_backward(y.view(), dy.view(), dx.view_mut(), GradMode::Add);
        assert_eq!(dx, &expected * 2.0, "relu backward added, {what}");

        let mut s = Array2::from_elem((m, n), f32::NAN);
        sigmoid_forward(x.view(), s.view_mut());
        let close = s
            .iter()
            .zip(&x)
            .all(|(&s, &v)| (s - 1.0 / (1.0 + (-v).exp())).abs() < 1e-6);
        assert!(close, "sigmoid, {what}");
        assert_eq!(
            sigmoid_one_thread.get_or_insert(s.clone()),
            &s,
            "sigmoid, {what}"
        );

        // A merge's backward with an input in a transposed layout.
        let at = a.t().to_owned();
        let mut db = Array2::from_elem((m, n), f32::NAN);
        mul_backward_b(
            at.t(),
            x.view(),
            y.view(),
            dy.view(),
            db.view_mut(),
            GradMode::Set,
        );
        assert_eq!(db, &dy * &a, "mul backward, {what}");

        let mut dw = Array2::zeros((4, n));
        let mut bias = Array1::from_elem(n, f32::NAN);
        affine_backward_params(
            x.slice(s![.., ..4]),
            dy.view(),
            dw.view_mut(),
            bias.view_mut(),
        );
        let expected = Array1::from_shape_fn(n, |j| (0..m).map(|i| dy[[i, j]]).sum::<f32>());
        assert_eq!(bias, expected, "bias gradient, {what}");
    }
}

#[test]
fn sgd_update_matches_the_gradient_step_it_fuses() {
    use chainrule_runtime::kernels::affine_sgd_update;
    use chainrule_runtime::pool::set_threads;
    // The in-place product (≤ 256 columns, with a ragged last vector, or at most 16 computed
    // along the rows of the weight), the packed one (with a batch over one block of k: 300, where
    // only the first block may scale the weight), and a gradient large enough that the bias sums
    // are shared between threads; without and with weight decay.
    let shapes = [
        (1, 3, 5),
        (64, 100, 10),
        (100, 784, 50),
        (40, 64, 300),
        (300, 20, 300),
        (256, 784, 1024),
    ];
    let lr = 0.25f32;
    for (threads, decay) in [(1, 0.0), (2, 0.0), (1, 0.5), (2, 0.5)] {
        set_threads(threads);
        for (m, k, n) in shapes {
            let what = format!("{threads} thread(s), decay {decay}, batch {m}, {k} → {n}");
            let x = filled(m, k, 3);
            let dy = filled(m, n, 4);
            let mut w = filled(k, n, 5);
            let mut b = Array1::from_shape_fn(n, |j| j as f32 * 0.5 - 3.0);
            let keep = 1.0 - f64::from(lr) * f64::from(decay);
            let expected_w = keep * w.mapv(f64::from) - f64::from(lr) * reference(x.t(), dy.view());
            let expected_b =
                b.mapv(f64::from) - f64::from(lr) * dy.mapv(f64::from).sum_axis(ndarray::Axis(0));
            // A weight stored transposed as well (column-major: element by element).
            let mut wt = Array2::zeros((n, k));
            wt.assign(&w.t());
            affine_sgd_update(x.view(), dy.view(), w.view_mut(), b.view_mut(), lr, decay);
            let update = "(1 − η·λ)·W − η·xᵀ·dy";
            assert_close(w.view(), &expected_w, m, &format!("{update}, {what}"));
            let mut bt = Array1::zeros(n);
            let wt_view = wt.view_mut().reversed_axes();
            affine_sgd_update(x.view(), dy.view(), wt_view, bt.view_mut(), lr, decay);
            assert_close(wt.t(), &expected_w, m, &format!("{update} into Wᵀ, {what}"));
            assert_close(
                b.view().insert_axis(ndarray::Axis(0)),
                &expected_b.insert_axis(ndarray::Axis(0)),
                m,
                &format!("b − η·Σ dy, {what}"),
            );
        }
    }
}

#[test]
fn gated_input_gradient_is_the_product_then_relu_backward() {
    use chainrule_runtime::kernels::{
        GradMode, affine_backward_input, affine_relu_backward_input, relu_backward,
    };
    use chainrule_runtime::pool::set_threads;
    // dx = (dy·Wᵀ) ⊙ [y > 0] for dy: m × n, W: k × n. One row, the in-place kernel (a copied Wᵀ,
    // with its last two columns as dot products), and packed products (one block of k, two,
    // and a Wᵀ too wide to read in place), into row-major and transposed gradients.
    let shapes = [
        (1, 10, 50),
        (100, 10, 50),
        (7, 3, 17),
        (40, 64, 300),
        (9, 1100, 300),
        (256, 1024, 1024),
    ];
    for threads in [1, 2] {
        set_threads(threads);
        for (m, n, k) in shapes {
            let what = format!("{threads} thread(s), m {m} n {n} k {k}");
            let dy = filled(m, n, 13);
            let w = filled(k, n, 14);
            // About half positive, and some exact zeros (a ReLU's output at z ≤ 0).
            let mut y = filled(m, k, 15);
            y.indexed_iter_mut()
                .filter(|((i, j), _)| (i + j) % 5 == 0)
                .for_each(|(_, v)| *v = 0.0);
            let mut product = Array2::from_elem((m, k), f32::NAN);
            affine_backward_input(w.view(), dy.view(), product.view_mut(), GradMode::Set);
            let mut expected = Array2::from_elem((m, k), f32::NAN);
            relu_backward(y.view(), product.view(), expected.view_mut(), GradMode::Set);
            assert!(expected.iter().any(|&v| v == 0.0) && expected.iter().any(|&v| v != 0.0));

            let mut dx = Array2::from_elem((m, k), f32::NAN);
            affine_relu_backward_input(w.view(), dy.view(), y.view(), dx.view_mut());
            assert_eq!(dx, expected, "{what}");
            // Into a transposed view (another kernel, which may sum in another order).
            let mut product_t = Array2::from_elem((k, m), f32::NAN);
            affine_backward_input(
                w.view(),
                dy.view(),
                product_t.view_mut().reversed_axes(),
                GradMode::Set,
            );
            let mut expected_t = Array2::from_elem((k, m), f32::NAN);
            relu_backward(
                y.view(),
                product_t.t(),
                expected_t.view_mut().reversed_axes(),
                GradMode::Set,
            );
            let mut dxt = Array2::from_elem((k, m), f32::NAN);
            affine_relu_backward_input(
                w.view(),
                dy.view(),
                y.view(),
                dxt.view_mut().reversed_axes(),
            );
            assert_eq!(dxt, expected_t, "into a transposed view, {what}");
        }
    }
    // f64 (ndarray's product, then the gate).
    let dy = filled(5, 4, 16).mapv(f64::from);
    let w = filled(6, 4, 17).mapv(f64::from);
    let y = filled(5, 6, 18).mapv(f64::from);
    let mut product = Array2::zeros((5, 6));
    affine_backward_input(w.view(), dy.view(), product.view_mut(), GradMode::Set);
    let mut expected = Array2::zeros((5, 6));
    relu_backward(y.view(), product.view(), expected.view_mut(), GradMode::Set);
    let mut dx = Array2::from_elem((5, 6), f64::NAN);
    affine_relu_backward_input(w.view(), dy.view(), y.view(), dx.view_mut());
    assert_eq!(dx, expected, "f64");
}

/// Deterministic values in [-scale, scale), in any element type.
fn filled_as<T: Element>(rows: usize, cols: usize, salt: usize, scale: f64) -> Array2<T> {
    filled(rows, cols, salt).mapv(|v| T::from_f64(f64::from(v) * scale))
}

/// A matrix of `(rows, cols)` filled by `f(i, j)`, one element at a time in two plain loops.
fn plain_loop((rows, cols): (usize, usize), mut f: impl FnMut(usize, usize) -> f64) -> Array2<f64> {
    let mut out = Array2::zeros((rows, cols));
    for i in 0..rows {
        for j in 0..cols {
            out[[i, j]] = f(i, j);
        }
    }
    out
}

/// Row-wise softmax in f64, in plain loops: each row shifted by its maximum.
fn softmax_reference(x: &Array2<f64>) -> Array2<f64> {
    let mut y = Array2::zeros(x.dim());
    for i in 0..x.nrows() {
        let mut max = f64::NEG_INFINITY;
        for j in 0..x.ncols() {
            max = max.max(x[[i, j]]);
        }
        let mut sum = 0.0;
        for j in 0..x.ncols() {
            y[[i, j]] = (x[[i, j]] - max).exp();
            sum += y[[i, j]];
        }
        for j in 0..x.ncols() {
            y[[i, j]] /= sum;
        }
    }
    y
}

/// `got` against a reference in f64: within a few roundings of `T` (relative to the larger of
/// the value and 1), and finite.
fn assert_near<T: Element>(got: ndarray::ArrayView2<T>, expected: &Array2<f64>, what: &str) {
    let tolerance = if T::NAME == "f32" { 1e-5 } else { 1e-12 };
    assert_eq!(got.dim(), expected.dim(), "{what}: shape");
    for ((i, j), &e) in expected.indexed_iter() {
        let g = Element::to_f64(got[[i, j]]);
        assert!(
            g.is_finite() && (g - e).abs() <= tolerance * e.abs().max(1.0),
            "{what}, {}, at ({i}, {j}): {g} vs {e}",
            T::NAME
        );
    }
}

/// A forward kernel, bound to its number argument if it takes one: `(x, y)`.
type Forward<T> = Box<dyn Fn(ndarray::ArrayView2<T>, ndarray::ArrayViewMut2<T>)>;
/// A backward kernel, bound to its number argument if it takes one: `(y, dy, dx, mode)`.
type Backward<T> = Box<
    dyn Fn(
        ndarray::ArrayView2<T>,
        ndarray::ArrayView2<T>,
        ndarray::ArrayViewMut2<T>,
        chainrule_runtime::kernels::GradMode,
    ),
>;
/// A forward's reference in f64: `y` from `x`.
type ForwardReference = Box<dyn Fn(&Array2<f64>) -> Array2<f64>>;
/// A backward's reference in f64: `dx` from `x`, `y` and `dy`.
type BackwardReference = Box<dyn Fn(&Array2<f64>, &Array2<f64>, &Array2<f64>) -> Array2<f64>>;

/// A forward kernel and its backward, with their references.
struct Pair<T> {
    name: String,
    forward: Forward<T>,
    backward: Backward<T>,
    forward_ref: ForwardReference,
    backward_ref: BackwardReference,
}

/// Softmax, leaky ReLU (α = 0, 0.01, 0.3) and ELU (α = 1, 0.5) in `T`, with plain-loop
/// references.
fn new_activations<T: Element>() -> Vec<Pair<T>> {
    use chainrule_runtime::kernels::{
        GradMode, elu_backward, elu_forward, leaky_relu_backward, leaky_relu_forward,
        softmax_backward, softmax_forward,
    };
    use ndarray::{ArrayView2, ArrayViewMut2};
    let mut pairs = vec![Pair {
        name: "softmax".to_owned(),
        forward: Box::new(softmax_forward::<T>),
        backward: Box::new(softmax_backward::<T>),
        forward_ref: Box::new(softmax_reference),
        backward_ref: Box::new(|_, y, dy| {
            let mut dots = vec![0.0; y.nrows()];
            for (i, dot) in dots.iter_mut().enumerate() {
                for j in 0..y.ncols() {
                    *dot += dy[[i, j]] * y[[i, j]];
                }
            }
            plain_loop(y.dim(), |i, j| y[[i, j]] * (dy[[i, j]] - dots[i]))
        }),
    }];
    for alpha in [0.0, 0.01, 0.3] {
        let a = T::from_f64(alpha);
        // The references use α as `T` holds it.
        let alpha = Element::to_f64(a);
        pairs.push(Pair {
            name: format!("leaky_relu({alpha})"),
            forward: Box::new(move |x: ArrayView2<T>, y: ArrayViewMut2<T>| {
                leaky_relu_forward(x, y, a)
            }),
            backward: Box::new(
                move |y: ArrayView2<T>, dy: ArrayView2<T>, dx: ArrayViewMut2<T>, mode: GradMode| {
                    leaky_relu_backward(y, dy, dx, mode, a)
                },
            ),
            forward_ref: Box::new(move |x| {
                plain_loop(x.dim(), |i, j| {
                    let x = x[[i, j]];
                    if x > 0.0 { x } else { alpha * x }
                })
            }),
            // From the input: the slope is 1 where x > 0.
            backward_ref: Box::new(move |x, _, dy| {
                plain_loop(x.dim(), |i, j| {
                    let dy = dy[[i, j]];
                    if x[[i, j]] > 0.0 { dy } else { alpha * dy }
                })
            }),
        });
    }
    for alpha in [1.0, 0.5] {
        let a = T::from_f64(alpha);
        pairs.push(Pair {
            name: format!("elu({alpha})"),
            forward: Box::new(move |x: ArrayView2<T>, y: ArrayViewMut2<T>| elu_forward(x, y, a)),
            backward: Box::new(
                move |y: ArrayView2<T>, dy: ArrayView2<T>, dx: ArrayViewMut2<T>, mode: GradMode| {
                    elu_backward(y, dy, dx, mode, a)
                },
            ),
            forward_ref: Box::new(move |x| {
                plain_loop(x.dim(), |i, j| {
                    let x = x[[i, j]];
                    if x > 0.0 { x } else { alpha * (x.exp() - 1.0) }
                })
            }),
            // From the input, `α·eˣ`, rather than the kernel's `y + α`.
            backward_ref: Box::new(move |x, _, dy| {
                plain_loop(x.dim(), |i, j| {
                    let (x, dy) = (x[[i, j]], dy[[i, j]]);
                    if x > 0.0 { dy } else { dy * alpha * x.exp() }
                })
            }),
        });
    }
    pairs
}

/// Every new activation on `x` (m × n): the forward against its reference, then the backward
/// against the formula applied to that output, setting into a buffer of NaNs and adding to one
/// of other values; once more with `x` and the outputs in transposed layouts. Returns the
/// outputs.
fn check_new_activations<T: Element>((m, n): (usize, usize), what: &str) -> Vec<Array2<T>> {
    use chainrule_runtime::kernels::GradMode;
    let wide = |a: &Array2<T>| a.mapv(Element::to_f64);
    let x = filled_as::<T>(m, n, 31, 3.0);
    let dy = filled_as::<T>(m, n, 32, 1.0);
    let prior = filled_as::<T>(m, n, 33, 0.5);
    let mut outputs = Vec::new();
    for pair in new_activations::<T>() {
        let (forward, backward) = (&pair.forward, &pair.backward);
        let what = format!("{}, {m}×{n}, {what}", pair.name);
        let mut y = Array2::from_elem((m, n), T::nan());
        forward(x.view(), y.view_mut());
        let expected_y = (pair.forward_ref)(&wide(&x));
        assert_near(y.view(), &expected_y, &format!("{what}: forward"));

        let expected = (pair.backward_ref)(&wide(&x), &wide(&y), &wide(&dy));
        let mut dx = Array2::from_elem((m, n), T::nan());
        backward(y.view(), dy.view(), dx.view_mut(), GradMode::Set);
        assert_near(dx.view(), &expected, &format!("{what}: backward, set"));
        let mut added = prior.clone();
        backward(y.view(), dy.view(), added.view_mut(), GradMode::Add);
        let expected_added = &expected + &wide(&prior);
        assert_near(
            added.view(),
            &expected_added,
            &format!("{what}: backward, added"),
        );

        // Column-major inputs and outputs: rows that are strided.
        let xt = x.t().to_owned();
        let mut yt = Array2::from_elem((n, m), T::nan());
        forward(xt.t(), yt.view_mut().reversed_axes());
        assert_near(yt.t(), &expected_y, &format!("{what}: forward, transposed"));
        let (ydt, dyt) = (y.t().to_owned(), dy.t().to_owned());
        let mut dxt = prior.t().to_owned();
        backward(
            ydt.t(),
            dyt.t(),
            dxt.view_mut().reversed_axes(),
            GradMode::Add,
        );
        assert_near(
            dxt.t(),
            &expected_added,
            &format!("{what}: backward, added, transposed"),
        );
        outputs.extend([y, dx, added]);
    }
    outputs
}

#[test]
fn softmax_leaky_relu_and_elu_match_plain_loops() {
    use chainrule_runtime::pool::set_threads;
    // One element, one row, a few rows, and a matrix large enough (more than 2¹⁶ elements per
    // thread, with a row count that does not divide evenly) to be split between threads by
    // rows; in f32 and f64, on one thread and two, which must agree bit for bit.
    let shapes = [(1, 1), (1, 10), (3, 7), (64, 10), (301, 700)];
    let mut one_thread = (Vec::new(), Vec::new());
    for threads in [1, 2] {
        set_threads(threads);
        let what = format!("{threads} thread(s)");
        let mut outputs = (Vec::new(), Vec::new());
        for shape in shapes {
            outputs.0.extend(check_new_activations::<f32>(shape, &what));
            outputs.1.extend(check_new_activations::<f64>(shape, &what));
        }
        if threads == 1 {
            one_thread = outputs;
        } else {
            assert!(one_thread.0 == outputs.0, "f32: one thread and two differ");
            assert!(one_thread.1 == outputs.1, "f64: one thread and two differ");
        }
    }
}

#[test]
fn softmax_rows_sum_to_one_and_stay_finite_for_huge_scores() {
    use chainrule_runtime::kernels::softmax_forward;
    fn check<T: Element>() {
        let big = T::max_value();
        let rows: Vec<Vec<T>> = vec![
            vec![1000.0, -1000.0].into_iter().map(T::from_f64).collect(),
            vec![1000.0, -1000.0, 0.0, 999.0]
                .into_iter()
                .map(T::from_f64)
                .collect(),
            vec![-1000.0; 3].into_iter().map(T::from_f64).collect(),
            vec![1e30; 5].into_iter().map(T::from_f64).collect(),
            vec![big, -big, T::zero()],
            vec![-big, -big],
            vec![big; 4],
        ];
        for row in rows {
            let x = Array2::from_shape_vec((1, row.len()), row).unwrap();
            let mut y = Array2::from_elem(x.dim(), T::nan());
            softmax_forward(x.view(), y.view_mut());
            let what = format!("softmax of {x}");
            assert!(y.iter().all(|v| v.is_finite()), "{what} is {y}");
            let sum: f64 = y.iter().map(|&v| Element::to_f64(v)).sum();
            assert!((sum - 1.0).abs() <= 1e-6, "{what} sums to {sum}");
            assert_near(
                y.view(),
                &softmax_reference(&x.mapv(Element::to_f64)),
                &what,
            );
        }
        // Several rows at once, each shifted by its own maximum.
        let x = Array2::from_shape_vec(
            (3, 3),
            [
                1000.0, -1000.0, 0.0, 1.0, 2.0, 3.0, -1000.0, -999.0, -1000.0,
            ]
            .into_iter()
            .map(T::from_f64)
            .collect(),
        )
        .unwrap();
        let mut y = Array2::from_elem((3, 3), T::nan());
        softmax_forward(x.view(), y.view_mut());
        assert_near(
            y.view(),
            &softmax_reference(&x.mapv(Element::to_f64)),
            "three rows",
        );
        assert_eq!(y[[0, 0]], T::one(), "e⁻¹⁰⁰⁰ vanishes next to e⁰");
    }
    check::<f32>();
    check::<f64>();
}

#[test]
fn new_activation_backwards_agree_with_central_differences() {
    use chainrule_runtime::kernels::GradMode;
    // With L = Σ dy ⊙ forward(x), ∂L/∂x is what the backward computes from forward(x) and dy:
    // the derivatives the kernels state, against (L(x + ε) − L(x − ε)) / 2ε. No element of x is
    // within 0.02 of the kinks at 0.
    let x = filled_as::<f64>(4, 6, 41, 2.0);
    let dy = filled_as::<f64>(4, 6, 42, 1.0);
    let eps = 1e-6;
    for Pair {
        name,
        forward,
        backward,
        ..
    } in new_activations::<f64>()
    {
        let loss = |x: &Array2<f64>| {
            let mut y = Array2::zeros(x.dim());
            forward(x.view(), y.view_mut());
            (&y * &dy).sum()
        };
        let mut y = Array2::zeros(x.dim());
        forward(x.view(), y.view_mut());
        let mut dx = Array2::zeros(x.dim());
        backward(y.view(), dy.view(), dx.view_mut(), GradMode::Set);
        for ((i, j), &analytic) in dx.indexed_iter() {
            let (mut plus, mut minus) = (x.clone(), x.clone());
            plus[[i, j]] += eps;
            minus[[i, j]] -= eps;
            let numeric = (loss(&plus) - loss(&minus)) / (2.0 * eps);
            assert!(
                (analytic - numeric).abs() <= 1e-7,
                "{name} at ({i}, {j}): backward {analytic}, central difference {numeric}"
            );
        }
    }
}

/// A NaN that reaches a ReLU stays a NaN on every path: the plain kernel, and the ReLU applied as
/// an affine product's sums are stored (narrow, packed, one-row and scalar kernels).
#[test]
fn relu_keeps_nan_on_every_path() {
    use chainrule_runtime::kernels::{affine_relu_forward, relu_forward};
    let x = ndarray::Array2::from_shape_fn((3, 5), |(i, j)| {
        if (i, j) == (1, 2) {
            f32::NAN
        } else {
            i as f32 - j as f32
        }
    });
    let mut y = ndarray::Array2::zeros((3, 5));
    relu_forward(x.view(), y.view_mut());
    assert!(y[[1, 2]].is_nan());
    assert_eq!(y[[0, 1]], 0.0);
    assert_eq!(y[[2, 0]], 2.0);
    // Products of every kind of shape: batch 1 (one row), narrow and wide outputs, long k.
    for (rows, k, n) in [
        (1, 784, 50),
        (7, 33, 10),
        (64, 300, 200),
        (300, 1100, 70),
        (20, 100, 300),
        (130, 1100, 520),
        (5, 1, 20),
    ] {
        let mut x =
            ndarray::Array2::from_shape_fn((rows, k), |(i, j)| ((i * 3 + j) % 7) as f32 - 3.0);
        x[[rows - 1, k / 2]] = f32::NAN;
        let w = ndarray::Array2::from_shape_fn((k, n), |(i, j)| ((i + 2 * j) % 5) as f32 * 0.01);
        let b = ndarray::Array1::zeros(n);
        let mut z = ndarray::Array2::zeros((rows, n));
        let mut y = ndarray::Array2::zeros((rows, n));
        affine_relu_forward(x.view(), w.view(), b.view(), z.view_mut(), y.view_mut());
        assert!(
            y.row(rows - 1).iter().all(|v| v.is_nan()),
            "{rows}×{k}·{k}×{n}: {:?}",
            y.row(rows - 1)
        );
        if rows > 1 {
            assert!(y.row(0).iter().all(|v| v.is_finite() && *v >= 0.0));
        }
    }
}

#[test]
fn convolutions_give_the_same_bits_on_one_and_two_threads() {
    use chainrule_runtime::kernels::{
        Conv2d, ConvScratch, GradMode, conv2d_backward_input, conv2d_param_grads_or_step,
        conv2d_relu_forward,
    };
    use chainrule_runtime::{Param, pool::set_threads};
    // Thirteen samples: pieces of unequal size, more of them than threads. Stride 1 with the
    // padding that keeps the size, stride 2 with none.
    for g in [
        Conv2d {
            channels: 3,
            height: 9,
            width: 8,
            filters: 5,
            kernel: 3,
            stride: 1,
            pad: 1,
        },
        Conv2d {
            channels: 2,
            height: 11,
            width: 10,
            filters: 4,
            kernel: 3,
            stride: 2,
            pad: 0,
        },
    ] {
        let n = 13;
        let x = filled(n, g.input_len(), 9);
        let dy = filled(n, g.output_len(), 10);
        let w = filled(g.filters, g.channels * 9, 11)
            .into_shape_with_order((g.filters, g.channels, 3, 3))
            .unwrap();
        let b = Array1::from_shape_fn(g.filters, |f| f as f32 * 0.1 - 0.2);
        let run = |threads: usize| {
            set_threads(threads);
            let mut scratch = ConvScratch::default();
            let mut z = Array2::zeros((n, g.output_len()));
            let mut y = Array2::zeros((n, g.output_len()));
            conv2d_relu_forward(
                x.view(),
                w.view(),
                b.view(),
                z.view_mut(),
                y.view_mut(),
                &mut scratch,
                g,
            );
            let mut dx = Array2::zeros((n, g.input_len()));
            conv2d_backward_input(
                w.view(),
                dy.view(),
                dx.view_mut(),
                GradMode::Set,
                &mut scratch,
                g,
            );
            let mut weight = Param::zeros("w", w.raw_dim());
            let mut bias = Param::zeros("b", g.filters);
            conv2d_param_grads_or_step(
                x.view(),
                dy.view(),
                &mut weight,
                &mut bias,
                None,
                &mut scratch,
                g,
            );
            (y, dx, weight.grad().to_owned(), bias.grad().to_owned())
        };
        let (one, two) = (run(1), run(2));
        assert_eq!(one.0, two.0, "y, {g:?}");
        assert_eq!(one.1, two.1, "dx, {g:?}");
        assert_eq!(one.2, two.2, "dW, {g:?}");
        assert_eq!(one.3, two.3, "db, {g:?}");
    }
}

#[test]
fn max_pools_give_the_same_results_on_one_and_two_threads() {
    use chainrule_runtime::kernels::{
        GradMode, Pool2d, PoolArgmax, max_pool_backward, max_pool_forward,
    };
    use chainrule_runtime::pool::set_threads;
    // Large enough a batch that its samples are shared; the 2×2 path and the general one.
    for (window, stride) in [(2, 2), (3, 2)] {
        let g = Pool2d {
            channels: 4,
            height: 48,
            width: 48,
            window,
            stride,
            pad: 0,
        };
        let n = 9;
        let x = filled(n, g.input_len(), 12);
        let dy = filled(n, g.output_len(), 13);
        let run = |threads: usize| {
            set_threads(threads);
            let mut y = Array2::zeros((n, g.output_len()));
            let mut argmax = PoolArgmax::default();
            max_pool_forward(x.view(), y.view_mut(), &mut argmax, g);
            let mut dx = Array2::from_elem((n, g.input_len()), 1.0);
            max_pool_backward(dy.view(), dx.view_mut(), GradMode::Add, &argmax, g);
            (y, dx)
        };
        let (one, two) = (run(1), run(2));
        assert_eq!(one.0, two.0, "y, {g:?}");
        assert_eq!(one.1, two.1, "dx, {g:?}");
        // Every sample's maximum is one of its own inputs.
        for (xs, ys) in x.rows().into_iter().zip(one.0.rows()) {
            assert!(ys.iter().all(|v| xs.iter().any(|x| x == v)));
        }
    }
}
