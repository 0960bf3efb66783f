//! Kernel paths that must agree with each other: the one-row product against the general one.

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
    // both layouts of A (x·W in the forward pass, xᵀ·dy for the weight gradient).
    for m in [1, 2, 5, 6, 7, 13, 100] {
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
