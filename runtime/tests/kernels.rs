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
