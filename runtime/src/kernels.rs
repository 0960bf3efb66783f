//! Forward and backward kernels, one pair per op, on ndarray views.
//!
//! Every kernel writes into an output it is given and allocates nothing, so a generated training
//! step can reuse its buffers. Next to each forward the local derivative is stated; the backward
//! multiplies the incoming gradient `dy` by it (the chain rule).
//!
//! The calling conventions, by kind of op (the macro's op table names the kernels):
//! - affine: `affine_forward(x, w, b, y)`, `affine_backward_params(x, dy, dw, db)` (or
//!   `affine_sgd_update(x, dy, w, b, η)`, which updates the parameters in place instead; the
//!   generated code calls [`affine_param_grads_or_step`], which picks one of the two),
//!   `affine_backward_input(w, dy, dx, mode)`; the forward takes the weight as a view or as
//!   [`Param::weights`](crate::Param::weights), which lets one-row products use a copy of it
//!   laid out for them;
//! - elementwise activations: `NAME_forward(x, y)` and `NAME_backward(y, dy, dx, mode)`: their
//!   local derivatives are written in terms of the output `y`, so the input need not be kept; an
//!   activation with a number argument takes it last: `NAME_forward(x, y, α)` and
//!   `NAME_backward(y, dy, dx, mode, α)` (`leaky_relu`, `elu`); `softmax` works on each row as a
//!   whole rather than element by element, with the same calling convention;
//! - elementwise merges of two values: `NAME_forward(a, b, y)`, and `NAME_backward_a(a, b, y, dy,
//!   da, mode)`, `NAME_backward_b(a, b, y, dy, db, mode)`, one per input;
//! - concatenation along the features: `concat_forward(&[parts], y)` and
//!   `concat_backward(dy, offset, dx, mode)` for the part starting at column `offset`;
//! - convolutions, on batches of images stored one sample per row in channel-major order (NCHW,
//!   `C·H·W` columns) with their geometry `g` a [`Conv2d`] and the layer's [`ConvScratch`]:
//!   `conv2d_forward(x, w, b, y, scratch, g)` (or `conv2d_relu_forward(x, w, b, z, y, scratch,
//!   g)` with a ReLU after), `conv2d_backward_input(w, dy, dx, mode, scratch, g)` and
//!   [`conv2d_param_grads_or_step`]`(x, dy, weight, bias, sgd, scratch, g)`, which writes the
//!   parameters' gradients or, with `sgd = Some((η, λ))`, an SGD step in their place, like its
//!   affine counterpart;
//! - pooling, on the same layout with its geometry `g` a [`Pool2d`]:
//!   `max_pool_forward(x, y, argmax, g)` and `max_pool_backward(dy, dx, mode, argmax, g)`, the
//!   [`PoolArgmax`] the layer keeps saying where each maximum came from;
//!   `avg_pool_forward(x, y, g)` and `avg_pool_backward(dy, dx, mode, g)`; flattening images
//!   into features is an activation: `flatten_forward(x, y)`, `flatten_backward(y, dy, dx, mode)`;
//! - the layers with a training mode, whose forward pass is told which mode it runs in and
//!   whose backward pass differentiates the mode of the last forward one: batch normalisation,
//!   `batchnorm_forward(x, γ, β, y, state, g, training)` and [`batchnorm_backward`]`(x, dy,
//!   Some((dx, mode)), γ, β, sgd, state, g)` with its geometry `g` a [`BatchNorm`] and the
//!   running statistics in its [`BatchNormState`]; inverted dropout, `dropout_forward(x, y,
//!   mask, p, rng, training)` and `dropout_backward(dy, dx, mode, mask)`, the [`DropoutMask`]
//!   kept for the backward pass and the masks drawn from the network's [`MaskRng`];
//! - losses: `NAME(x, targets, dx) -> loss`: the mean loss over the batch, and its gradient with
//!   respect to `x` written into `dx` in the same pass (the fused softmax-with-loss of the book).
//!
//! An input gradient is written with a [`GradMode`]: where a value feeds several nodes, the first
//! gradient that reaches it in the backward pass sets its gradient buffer and the others add to it
//! (the chain rule sums over every path).

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, Ix1, Ix2, Zip, s};

use crate::Param;
use crate::element::Element;
pub use crate::gemm::Weights;
use crate::gemm::{self, gemm};

pub use crate::conv::{
    Conv2d, ConvScratch, Pool2d, PoolArgmax, avg_pool_backward, avg_pool_forward,
    conv2d_backward_input, conv2d_forward, conv2d_param_grads_or_step, conv2d_relu_forward,
    flatten_backward, flatten_forward, max_pool_backward, max_pool_forward,
};
pub use crate::norm::{
    BatchNorm, BatchNormState, DropoutMask, MaskRng, batchnorm_backward, batchnorm_forward,
    dropout_backward, dropout_forward, mask_rng,
};

/// How a backward kernel stores an input gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradMode {
    /// Overwrite the buffer: the first gradient to reach the value.
    Set,
    /// Add to the buffer: a further path from the same value.
    Add,
}

/// Elements per thread below which an element-wise kernel runs on the calling thread alone.
const PIECE: usize = 1 << 16;

/// Stores `value` of the inputs into `dx`, element by element, as `mode` says: `Zip` over `dx` and
/// the inputs (matrices of dx's shape), by pieces of rows shared between the
/// [`pool`](crate::pool)'s threads when the matrices are large.
macro_rules! store {
    ($mode:expr, $dx:expr, [$($v:ident = $a:expr),+] => $value:expr) => {{
        let mode: GradMode = $mode;
        crate::pool::row_pieces($dx, PIECE, &|dx, rows| {
            $(let $v = $a.slice_move(s![rows.clone(), ..]);)+
            match mode {
                GradMode::Set => Zip::from(dx)$(.and(&$v))+.for_each(|d, $(&$v),+| *d = $value),
                GradMode::Add => Zip::from(dx)$(.and(&$v))+.for_each(|d, $(&$v),+| *d += $value),
            }
        });
    }};
}

/// Affine forward: `y = x·W + b` (x: n×in, W: in×out, b: out, y: n×out).
///
/// Local derivatives: `∂y/∂x = Wᵀ`, `∂y/∂W = xᵀ`, `∂y/∂b = 1` (summed over the batch).
pub fn affine_forward<'w, T: Element + 'w>(
    x: ArrayView2<T>,
    w: impl Into<Weights<'w, T>>,
    b: ArrayView1<T>,
    mut y: ArrayViewMut2<T>,
) {
    gemm::affine(&x, w.into(), &b, &mut y, None);
}

/// Affine forward followed by ReLU, in one pass over the batch: `z = x·W + b`, `y = max(z, 0)`.
///
/// The same as [`affine_forward`] into `z` and then [`relu_forward`] from `z` into `y`; with
/// AVX-512 the bias is where the sums start and the ReLU is applied as they are stored.
pub fn affine_relu_forward<'w, T: Element + 'w>(
    x: ArrayView2<T>,
    w: impl Into<Weights<'w, T>>,
    b: ArrayView1<T>,
    mut z: ArrayViewMut2<T>,
    mut y: ArrayViewMut2<T>,
) {
    gemm::affine(&x, w.into(), &b, &mut z, Some(&mut y));
}

/// Affine backward for the parameters: `dW = xᵀ·dy`, `db = Σ_rows dy`.
pub fn affine_backward_params<T: Element>(
    x: ArrayView2<T>,
    dy: ArrayView2<T>,
    mut dw: ArrayViewMut2<T>,
    db: ArrayViewMut1<T>,
) {
    gemm(&x.t(), &dy, &mut dw, false);
    column_sums(dy, db, &|d, sum| *d = sum);
}

/// Affine backward for the parameters with an SGD step written in: `W ← (1 − η·λ)·W − η·xᵀ·dy`,
/// `b ← b − η·Σ_rows dy`, for learning rate `η` and weight decay `λ` (on the weight, not the
/// bias, as in [`Sgd`](crate::optim::Sgd)). The gradient product adds into the weight itself, so
/// no gradient is stored and the update costs no pass of its own. The input gradient needs the
/// weight the forward pass used: call [`affine_backward_input`] first.
pub fn affine_sgd_update<T: Element>(
    x: ArrayView2<T>,
    dy: ArrayView2<T>,
    mut w: ArrayViewMut2<T>,
    b: ArrayViewMut1<T>,
    lr: T,
    weight_decay: T,
) {
    gemm::gemm_scaled(-lr, &x.t(), &dy, T::one() - lr * weight_decay, &mut w);
    column_sums(dy, b, &|b, sum| *b -= lr * sum);
}

/// The parameters' side of an affine backward pass: their gradients
/// ([`affine_backward_params`]), or with `sgd = Some((η, λ))` an SGD step in their place
/// ([`affine_sgd_update`]).
pub fn affine_param_grads_or_step<T: Element>(
    x: ArrayView2<T>,
    dy: ArrayView2<T>,
    weight: &mut Param<T, Ix2>,
    bias: &mut Param<T, Ix1>,
    sgd: Option<(T, T)>,
) {
    match sgd {
        None => affine_backward_params(x, dy, weight.grad_mut(), bias.grad_mut()),
        Some((lr, decay)) => {
            affine_sgd_update(x, dy, weight.value_mut(), bias.value_mut(), lr, decay)
        }
    }
}

/// Calls `store(out[j], Σ_rows m[:, j])` for every column `j` of `m`, by pieces of columns shared
/// between the threads when `m` is large.
fn column_sums<T: Element>(
    m: ArrayView2<T>,
    out: ArrayViewMut1<T>,
    store: &(dyn Fn(&mut T, T) + Sync),
) {
    /// Columns summed at once, in registers or on the stack.
    const CHUNK: usize = 64;
    let rows = m.nrows().max(1);
    crate::pool::row_pieces(out.insert_axis(Axis(1)), PIECE / rows, &|out, cols| {
        let mut out = out.index_axis_move(Axis(1), 0);
        for (chunk, mut out) in out.axis_chunks_iter_mut(Axis(0), CHUNK).enumerate() {
            let first = cols.start + chunk * CHUNK;
            let mut sums = [T::zero(); CHUNK];
            let sums = &mut sums[..out.len()];
            for row in m.slice(s![.., first..first + out.len()]).rows() {
                Zip::from(&mut *sums).and(&row).for_each(|s, &v| *s += v);
            }
            Zip::from(&mut out)
                .and(&*sums)
                .for_each(|o, &s| store(o, s));
        }
    });
}

/// Affine backward for the input: `dx = dy·Wᵀ`.
pub fn affine_backward_input<T: Element>(
    w: ArrayView2<T>,
    dy: ArrayView2<T>,
    mut dx: ArrayViewMut2<T>,
    mode: GradMode,
) {
    gemm(&dy, &w.t(), &mut dx, mode == GradMode::Add);
}

/// Affine backward for the input of a ReLU before it: `dx = (dy·Wᵀ) ⊙ [y > 0]`, where `y` is the
/// ReLU's output and `dx` the gradient of the ReLU's input: [`affine_backward_input`] then
/// [`relu_backward`] (setting) in one product, without the gradient between them.
pub fn affine_relu_backward_input<T: Element>(
    w: ArrayView2<T>,
    dy: ArrayView2<T>,
    y: ArrayView2<T>,
    mut dx: ArrayViewMut2<T>,
) {
    gemm::gemm_gated(&dy, &w.t(), &mut dx, &y);
}

/// ReLU forward: `y = max(x, 0)`.
///
/// Local derivative: 1 where `x > 0`, else 0; `y > 0` exactly where `x > 0`, so the output serves
/// as the book's mask.
pub fn relu_forward<T: Element>(x: ArrayView2<T>, y: ArrayViewMut2<T>) {
    store!(GradMode::Set, y, [x = x] => if x <= T::zero() { T::zero() } else { x });
}

/// ReLU backward: `dx = dy` where `y > 0`, else 0.
pub fn relu_backward<T: Element>(
    y: ArrayView2<T>,
    dy: ArrayView2<T>,
    dx: ArrayViewMut2<T>,
    mode: GradMode,
) {
    store!(mode, dx, [y = y, dy = dy] => if y > T::zero() { dy } else { T::zero() });
}

/// Sigmoid forward: `y = 1 / (1 + e^(−x))`.
///
/// Local derivative: `y·(1 − y)`, in terms of the output.
pub fn sigmoid_forward<T: Element>(x: ArrayView2<T>, y: ArrayViewMut2<T>) {
    store!(GradMode::Set, y, [x = x] => sigmoid(x));
}

/// Sigmoid backward: `dx = dy·y·(1 − y)`.
pub fn sigmoid_backward<T: Element>(
    y: ArrayView2<T>,
    dy: ArrayView2<T>,
    dx: ArrayViewMut2<T>,
    mode: GradMode,
) {
    store!(mode, dx, [y = y, dy = dy] => dy * y * (T::one() - y));
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
    store!(GradMode::Set, y, [x = x] => x.tanh());
}

/// Tanh backward: `dx = dy·(1 − y²)`.
pub fn tanh_backward<T: Element>(
    y: ArrayView2<T>,
    dy: ArrayView2<T>,
    dx: ArrayViewMut2<T>,
    mode: GradMode,
) {
    store!(mode, dx, [y = y, dy = dy] => dy * (T::one() - y * y));
}

/// Leaky ReLU forward: `y = x` where `x > 0`, else `α·x`.
///
/// Local derivative: 1 where `x > 0`, else `α`; for `α ≥ 0` (which the macro requires) `y > 0`
/// exactly where `x > 0`, so the backward reads the output.
pub fn leaky_relu_forward<T: Element>(x: ArrayView2<T>, y: ArrayViewMut2<T>, alpha: T) {
    store!(GradMode::Set, y, [x = x] => if x > T::zero() { x } else { alpha * x });
}

/// Leaky ReLU backward: `dx = dy` where `y > 0`, else `α·dy`.
pub fn leaky_relu_backward<T: Element>(
    y: ArrayView2<T>,
    dy: ArrayView2<T>,
    dx: ArrayViewMut2<T>,
    mode: GradMode,
    alpha: T,
) {
    store!(mode, dx, [y = y, dy = dy] => if y > T::zero() { dy } else { alpha * dy });
}

/// ELU forward: `y = x` where `x > 0`, else `α·(eˣ − 1)` (computed as `exp_m1`, accurate for `x`
/// near 0).
///
/// Local derivative: 1 where `x > 0`, else `α·eˣ = y + α`, in terms of the output; for `α > 0`
/// (which the macro requires) `y > 0` exactly where `x > 0`.
pub fn elu_forward<T: Element>(x: ArrayView2<T>, y: ArrayViewMut2<T>, alpha: T) {
    store!(GradMode::Set, y, [x = x] => if x > T::zero() { x } else { alpha * x.exp_m1() });
}

/// ELU backward: `dx = dy` where `y > 0`, else `dy·(y + α)`.
pub fn elu_backward<T: Element>(
    y: ArrayView2<T>,
    dy: ArrayView2<T>,
    dx: ArrayViewMut2<T>,
    mode: GradMode,
    alpha: T,
) {
    store!(mode, dx, [y = y, dy = dy] => if y > T::zero() { dy } else { dy * (y + alpha) });
}

/// Softmax forward, row by row: `y_ij = e^(x_ij − m_i) / Σ_k e^(x_ik − m_i)`, where `m_i` is the
/// row's maximum, so that no exponential overflows (the largest is e⁰ = 1): each row sums to 1
/// and stays finite however large its (finite) scores.
///
/// Local derivative, within a row: `∂y_j/∂x_i = y_j·(δ_ij − y_i)`, in terms of the output; rows
/// do not depend on each other.
pub fn softmax_forward<T: Element>(x: ArrayView2<T>, y: ArrayViewMut2<T>) {
    crate::pool::row_pieces(y, PIECE, &|mut y, rows| {
        let x = x.slice_move(s![rows, ..]);
        for (x, mut y) in x.rows().into_iter().zip(y.rows_mut()) {
            let max = x.fold(T::neg_infinity(), |m, &v| m.max(v));
            let mut sum = T::zero();
            Zip::from(&mut y).and(&x).for_each(|y, &v| {
                let e = (v - max).exp();
                *y = e;
                sum += e;
            });
            y.map_inplace(|y| *y /= sum);
        }
    });
}

/// Softmax backward, row by row: `dx = y ⊙ (dy − Σ_j dy_j·y_j)`.
pub fn softmax_backward<T: Element>(
    y: ArrayView2<T>,
    dy: ArrayView2<T>,
    dx: ArrayViewMut2<T>,
    mode: GradMode,
) {
    crate::pool::row_pieces(dx, PIECE, &|mut dx, rows| {
        let y = y.slice_move(s![rows.clone(), ..]);
        let dy = dy.slice_move(s![rows, ..]);
        for ((y, dy), dx) in y.rows().into_iter().zip(dy.rows()).zip(dx.rows_mut()) {
            let dot = Zip::from(&y)
                .and(&dy)
                .fold(T::zero(), |sum, &y, &dy| sum + dy * y);
            let dx = Zip::from(dx).and(&y).and(&dy);
            match mode {
                GradMode::Set => dx.for_each(|d, &y, &dy| *d = y * (dy - dot)),
                GradMode::Add => dx.for_each(|d, &y, &dy| *d += y * (dy - dot)),
            }
        }
    });
}

/// Add forward: `y = a + b`.
///
/// Local derivatives: `∂y/∂a = ∂y/∂b = 1`: the add node hands the incoming gradient on unchanged to
/// both inputs, knowing nothing about where they came from (the seed's local computation).
pub fn add_forward<T: Element>(a: ArrayView2<T>, b: ArrayView2<T>, y: ArrayViewMut2<T>) {
    store!(GradMode::Set, y, [a = a, b = b] => a + b);
}

/// Add backward for `a`: `da = dy`.
pub fn add_backward_a<T: Element>(
    _a: ArrayView2<T>,
    _b: ArrayView2<T>,
    _y: ArrayView2<T>,
    dy: ArrayView2<T>,
    da: ArrayViewMut2<T>,
    mode: GradMode,
) {
    store!(mode, da, [dy = dy] => dy);
}

/// Add backward for `b`: `db = dy`.
pub fn add_backward_b<T: Element>(
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    y: ArrayView2<T>,
    dy: ArrayView2<T>,
    db: ArrayViewMut2<T>,
    mode: GradMode,
) {
    add_backward_a(a, b, y, dy, db, mode);
}

/// Subtract forward: `y = a − b`.
///
/// Local derivatives: `∂y/∂a = 1`, `∂y/∂b = −1`.
pub fn sub_forward<T: Element>(a: ArrayView2<T>, b: ArrayView2<T>, y: ArrayViewMut2<T>) {
    store!(GradMode::Set, y, [a = a, b = b] => a - b);
}

/// Subtract backward for `a`: `da = dy`.
pub fn sub_backward_a<T: Element>(
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    y: ArrayView2<T>,
    dy: ArrayView2<T>,
    da: ArrayViewMut2<T>,
    mode: GradMode,
) {
    add_backward_a(a, b, y, dy, da, mode);
}

/// Subtract backward for `b`: `db = −dy`.
pub fn sub_backward_b<T: Element>(
    _a: ArrayView2<T>,
    _b: ArrayView2<T>,
    _y: ArrayView2<T>,
    dy: ArrayView2<T>,
    db: ArrayViewMut2<T>,
    mode: GradMode,
) {
    store!(mode, db, [dy = dy] => -dy);
}

/// Multiply forward: `y = a·b`, element by element.
///
/// Local derivatives: `∂y/∂a = b`, `∂y/∂b = a`: the mul node hands each input the incoming gradient
/// times the other input (the seed's "swap the inputs").
pub fn mul_forward<T: Element>(a: ArrayView2<T>, b: ArrayView2<T>, y: ArrayViewMut2<T>) {
    store!(GradMode::Set, y, [a = a, b = b] => a * b);
}

/// Multiply backward for `a`: `da = dy·b`.
pub fn mul_backward_a<T: Element>(
    _a: ArrayView2<T>,
    b: ArrayView2<T>,
    _y: ArrayView2<T>,
    dy: ArrayView2<T>,
    da: ArrayViewMut2<T>,
    mode: GradMode,
) {
    store!(mode, da, [dy = dy, b = b] => dy * b);
}

/// Multiply backward for `b`: `db = dy·a`.
pub fn mul_backward_b<T: Element>(
    a: ArrayView2<T>,
    _b: ArrayView2<T>,
    _y: ArrayView2<T>,
    dy: ArrayView2<T>,
    db: ArrayViewMut2<T>,
    mode: GradMode,
) {
    store!(mode, db, [dy = dy, a = a] => dy * a);
}

/// Divide forward: `y = a / b`, element by element.
///
/// Local derivatives: `∂y/∂a = 1/b`, `∂y/∂b = −a/b² = −y/b`.
pub fn div_forward<T: Element>(a: ArrayView2<T>, b: ArrayView2<T>, y: ArrayViewMut2<T>) {
    store!(GradMode::Set, y, [a = a, b = b] => a / b);
}

/// Divide backward for `a`: `da = dy / b`.
pub fn div_backward_a<T: Element>(
    _a: ArrayView2<T>,
    b: ArrayView2<T>,
    _y: ArrayView2<T>,
    dy: ArrayView2<T>,
    da: ArrayViewMut2<T>,
    mode: GradMode,
) {
    store!(mode, da, [dy = dy, b = b] => dy / b);
}

/// Divide backward for `b`: `db = −dy·y / b`.
pub fn div_backward_b<T: Element>(
    _a: ArrayView2<T>,
    b: ArrayView2<T>,
    y: ArrayView2<T>,
    dy: ArrayView2<T>,
    db: ArrayViewMut2<T>,
    mode: GradMode,
) {
    store!(mode, db, [dy = dy, y = y, b = b] => -dy * y / b);
}

/// Concatenation along the features: `y = [p₀ | p₁ | …]`.
///
/// Local derivative: each part's gradient is its own columns of `dy`.
pub fn concat_forward<T: Element>(parts: &[ArrayView2<T>], mut y: ArrayViewMut2<T>) {
    let mut offset = 0;
    for part in parts {
        let width = part.ncols();
        y.slice_mut(s![.., offset..offset + width]).assign(part);
        offset += width;
    }
}

/// Concatenation backward for the part at columns `offset..offset + dx.ncols()`.
pub fn concat_backward<T: Element>(
    dy: ArrayView2<T>,
    offset: usize,
    dx: ArrayViewMut2<T>,
    mode: GradMode,
) {
    let width = dx.ncols();
    store!(mode, dx, [dy = dy.slice(s![.., offset..offset + width])] => dy);
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
