//! Forward and backward kernels, one pair per op, on ndarray views.
//!
//! Every kernel writes into an output it is given and allocates nothing, so a generated training
//! step can reuse its buffers. Next to each forward the local derivative is stated; the backward
//! multiplies the incoming gradient `dy` by it (the chain rule).
//!
//! The calling conventions, by kind of op (the macro's op table names the kernels):
//! - affine: `affine_forward(x, w, b, y)`, `affine_backward_params(x, dy, dw, db)`,
//!   `affine_backward_input(w, dy, dx)`;
//! - elementwise activations: `NAME_forward(x, y)` and `NAME_backward(y, dy, dx)`: their local
//!   derivatives are written in terms of the output `y`, so the input need not be kept;
//! - losses: `NAME(x, targets, dx) -> loss`: the mean loss over the batch, and its gradient with
//!   respect to `x` written into `dx` in the same pass (the fused softmax-with-loss of the book).

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Zip};

use crate::Element;

/// Affine forward: `y = x·W + b` (x: n×in, W: in×out, b: out, y: n×out).
///
/// Local derivatives: `∂y/∂x = Wᵀ`, `∂y/∂W = xᵀ`, `∂y/∂b = 1` (summed over the batch).
pub fn affine_forward<T: Element>(
    x: ArrayView2<T>,
    w: ArrayView2<T>,
    b: ArrayView1<T>,
    mut y: ArrayViewMut2<T>,
) {
    let dim = y.raw_dim();
    y.assign(&b.broadcast(dim).expect("bias width equals output width"));
    general_mat_mul(T::one(), &x, &w, T::one(), &mut y);
}

/// Affine backward for the parameters: `dW = xᵀ·dy`, `db = Σ_rows dy`.
pub fn affine_backward_params<T: Element>(
    x: ArrayView2<T>,
    dy: ArrayView2<T>,
    mut dw: ArrayViewMut2<T>,
    mut db: ArrayViewMut1<T>,
) {
    general_mat_mul(T::one(), &x.t(), &dy, T::zero(), &mut dw);
    db.fill(T::zero());
    for row in dy.rows() {
        Zip::from(&mut db).and(&row).for_each(|d, &r| *d += r);
    }
}

/// Affine backward for the input: `dx = dy·Wᵀ`.
pub fn affine_backward_input<T: Element>(
    w: ArrayView2<T>,
    dy: ArrayView2<T>,
    mut dx: ArrayViewMut2<T>,
) {
    general_mat_mul(T::one(), &dy, &w.t(), T::zero(), &mut dx);
}

/// ReLU forward: `y = max(x, 0)`.
///
/// Local derivative: 1 where `x > 0`, else 0; `y > 0` exactly where `x > 0`, so the output serves
/// as the book's mask.
pub fn relu_forward<T: Element>(x: ArrayView2<T>, y: ArrayViewMut2<T>) {
    Zip::from(y)
        .and(x)
        .for_each(|y, &x| *y = if x > T::zero() { x } else { T::zero() });
}

/// ReLU backward: `dx = dy` where `y > 0`, else 0.
pub fn relu_backward<T: Element>(y: ArrayView2<T>, dy: ArrayView2<T>, dx: ArrayViewMut2<T>) {
    Zip::from(dx)
        .and(y)
        .and(dy)
        .for_each(|dx, &y, &dy| *dx = if y > T::zero() { dy } else { T::zero() });
}

/// Sigmoid forward: `y = 1 / (1 + e^(−x))`.
///
/// Local derivative: `y·(1 − y)`, in terms of the output.
pub fn sigmoid_forward<T: Element>(x: ArrayView2<T>, y: ArrayViewMut2<T>) {
    Zip::from(y).and(x).for_each(|y, &x| *y = sigmoid(x));
}

/// Sigmoid backward: `dx = dy·y·(1 − y)`.
pub fn sigmoid_backward<T: Element>(y: ArrayView2<T>, dy: ArrayView2<T>, dx: ArrayViewMut2<T>) {
    Zip::from(dx)
        .and(y)
        .and(dy)
        .for_each(|dx, &y, &dy| *dx = dy * y * (T::one() - y));
}

/// The logistic function, computed so that neither branch overflows.
#[inline]
fn sigmoid<T: Element>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

/// Tanh forward: `y = tanh(x)`.
///
/// Local derivative: `1 − y²`, in terms of the output.
pub fn tanh_forward<T: Element>(x: ArrayView2<T>, y: ArrayViewMut2<T>) {
    Zip::from(y).and(x).for_each(|y, &x| *y = x.tanh());
}

/// Tanh backward: `dx = dy·(1 − y²)`.
pub fn tanh_backward<T: Element>(y: ArrayView2<T>, dy: ArrayView2<T>, dx: ArrayViewMut2<T>) {
    Zip::from(dx)
        .and(y)
        .and(dy)
        .for_each(|dx, &y, &dy| *dx = dy * (T::one() - y * y));
}

/// Softmax with cross-entropy loss (the book's SoftmaxWithLoss), fused.
///
/// Takes scores `x` (n×k) and class indices `t` (n, each below k; the caller checks). Returns the
/// mean loss `L = −(1/n) Σ_i log softmax(x_i)[t_i]` and writes `dx = (softmax(x) − onehot(t)) / n`.
///
/// Numerically stable: each row is shifted by its maximum, and the log-probability of the target is
/// computed as `x_t − max − log Σ exp(x − max)`, which never takes the logarithm of zero.
pub fn softmax_cross_entropy<T: Element>(
    x: ArrayView2<T>,
    t: &[usize],
    mut dx: ArrayViewMut2<T>,
) -> T {
    let n = T::from_usize(x.nrows());
    let mut total = T::zero();
    for ((x, mut dx), &t) in x.rows().into_iter().zip(dx.rows_mut()).zip(t) {
        let max = x.fold(T::neg_infinity(), |m, &v| m.max(v));
        let mut sum = T::zero();
        Zip::from(&mut dx).and(&x).for_each(|d, &v| {
            let e = (v - max).exp();
            *d = e;
            sum += e;
        });
        let log_sum = sum.ln();
        total += log_sum - (x[t] - max);
        let scale = T::one() / (sum * n);
        dx.map_inplace(|d| *d *= scale);
        dx[t] -= T::one() / n;
    }
    total / n
}

/// Mean squared error: `L = (1/(2n)) Σ_i Σ_j (y_ij − t_ij)²`, half the squared distance per sample
/// (as in the book's `mean_squared_error`), averaged over the batch of `n`; writes
/// `dx = (y − t) / n`.
pub fn mse<T: Element>(y: ArrayView2<T>, t: ArrayView2<T>, dx: ArrayViewMut2<T>) -> T {
    let n = T::from_usize(y.nrows());
    let half = T::from_f64(0.5);
    let mut total = T::zero();
    Zip::from(dx).and(y).and(t).for_each(|dx, &y, &t| {
        let d = y - t;
        total += d * d;
        *dx = d / n;
    });
    total * half / n
}
