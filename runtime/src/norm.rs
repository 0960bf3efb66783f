//! The layers with a training mode: batch normalisation and dropout.
//!
//! Both behave differently in training and in evaluation, and the generated code says which at
//! every forward pass (`training`): training passes (`loss`, `gradient`, the SGD steps) normalise
//! with the batch's own statistics, update the running ones and drop units; evaluation passes
//! (`forward`, `infer`, `predict`, `accuracy`, `eval_loss`) normalise with the running statistics
//! and drop nothing. Each layer records the mode of its last forward pass, and its backward pass
//! differentiates that one.
//!
//! Values are rows of `channels × spatial` elements, channel-major (the layout of every image
//! value): per channel on images (PyTorch's `BatchNorm2d`), per feature on feature vectors
//! (`BatchNorm1d`, `spatial = 1`).

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2, Ix1};
use rand::{Rng, SeedableRng};

use crate::element::Element;
use crate::kernels::GradMode;
use crate::param::Param;

/// A batch normalisation's geometry and options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNorm {
    /// Channels (features, for vectors): one mean, variance, γ and β each.
    pub channels: usize,
    /// Elements per channel per sample: height × width for an image, 1 for a vector.
    pub spatial: usize,
    /// The weight of a batch's statistics in the running ones: after each training pass,
    /// `running ← (1 − momentum)·running + momentum·batch` (PyTorch's convention; the book's
    /// `momentum = 0.9` is the weight of the old value, the same as 0.1 here).
    pub momentum: f64,
    /// Added to the variance before its square root.
    pub eps: f64,
}

/// What a batch normalisation keeps between calls: the running mean and variance (saved in
/// checkpoints, not trained), and the statistics its last forward pass normalised with, for the
/// backward pass.
#[derive(Debug, Clone)]
pub struct BatchNormState<T> {
    running_mean: Vec<T>,
    running_var: Vec<T>,
    /// The mean the last forward pass subtracted (the batch's, or the running one).
    mean: Vec<f64>,
    /// `1 / √(variance + ε)` of the last forward pass.
    inv_std: Vec<f64>,
    /// Whether the last forward pass used the batch's statistics.
    training: bool,
    /// The backward pass's sums per channel: `Σ dy` and `Σ dy·x̂`.
    sums: Vec<(f64, f64)>,
    /// The forward pass's `(μ, γ/σ, β)` per channel, in the element type.
    affine: Vec<(T, T, T)>,
}

impl<T: Element> BatchNormState<T> {
    /// Running mean 0 and variance 1, as PyTorch starts them.
    pub fn new(channels: usize) -> Self {
        BatchNormState {
            running_mean: vec![T::zero(); channels],
            running_var: vec![T::one(); channels],
            mean: vec![0.0; channels],
            inv_std: vec![1.0; channels],
            training: false,
            sums: vec![(0.0, 0.0); channels],
            affine: vec![(T::zero(), T::one(), T::zero()); channels],
        }
    }

    /// The running mean, per channel.
    pub fn running_mean(&self) -> &[T] {
        &self.running_mean
    }

    /// The running variance, per channel (of the population: each batch's variance enters it
    /// scaled by `n / (n − 1)`, as in PyTorch).
    pub fn running_var(&self) -> &[T] {
        &self.running_var
    }

    /// The running mean, to change (checkpoints load it).
    pub fn running_mean_mut(&mut self) -> &mut [T] {
        &mut self.running_mean
    }

    /// The running variance, to change.
    pub fn running_var_mut(&mut self) -> &mut [T] {
        &mut self.running_var
    }
}

/// The `spatial` elements of channel `c` in a row of `x`, for every row.
fn channel_rows<'a, T>(
    x: &'a ArrayView2<'a, T>,
    c: usize,
    spatial: usize,
) -> impl Iterator<Item = &'a [T]> + 'a {
    x.rows().into_iter().map(move |row| {
        let row = row
            .to_slice()
            .expect("values are rows of contiguous elements");
        &row[c * spatial..(c + 1) * spatial]
    })
}

/// Batch normalisation, forward: `y = γ·(x − μ)/√(σ² + ε) + β` per channel, with `μ` and `σ²`
/// the batch's mean and (biased) variance over its samples and positions when `training`, which
/// also moves the running statistics towards them; the running statistics otherwise.
pub fn batchnorm_forward<T: Element>(
    x: ArrayView2<T>,
    gamma: ArrayView1<T>,
    beta: ArrayView1<T>,
    mut y: ArrayViewMut2<T>,
    state: &mut BatchNormState<T>,
    geometry: BatchNorm,
    training: bool,
) {
    let BatchNorm {
        channels,
        spatial,
        momentum,
        eps,
    } = geometry;
    assert_eq!(x.ncols(), channels * spatial, "batchnorm: x's width");
    assert_eq!(x.dim(), y.dim(), "batchnorm: x and y have the same shape");
    let n = (x.nrows() * spatial) as f64;
    state.training = training;
    for c in 0..channels {
        let (mean, inv_std) = if training {
            let mean = channel_rows(&x, c, spatial)
                .flatten()
                .map(|&v| Element::to_f64(v))
                .sum::<f64>()
                / n;
            let var = channel_rows(&x, c, spatial)
                .flatten()
                .map(|&v| (Element::to_f64(v) - mean).powi(2))
                .sum::<f64>()
                / n;
            let unbiased = if n > 1.0 { var * n / (n - 1.0) } else { var };
            let running = |old: T, new: f64| {
                T::from_f64((1.0 - momentum) * Element::to_f64(old) + momentum * new)
            };
            state.running_mean[c] = running(state.running_mean[c], mean);
            state.running_var[c] = running(state.running_var[c], unbiased);
            (mean, 1.0 / (var + eps).sqrt())
        } else {
            let var = Element::to_f64(state.running_var[c]);
            (
                Element::to_f64(state.running_mean[c]),
                1.0 / (var + eps).sqrt(),
            )
        };
        state.mean[c] = mean;
        state.inv_std[c] = inv_std;
    }
    // y = (x − μ)·a + β per channel, with a = γ/σ (subtracting first: a·x + (β − μ·a) would
    // lose the digits that x and μ share).
    for (c, affine) in state.affine.iter_mut().enumerate() {
        let a = Element::to_f64(gamma[c]) * state.inv_std[c];
        *affine = (T::from_f64(state.mean[c]), T::from_f64(a), beta[c]);
    }
    for (x_row, mut y_row) in x.rows().into_iter().zip(y.rows_mut()) {
        let x_row = x_row
            .to_slice()
            .expect("each sample's values are contiguous");
        let y_row = y_row.as_slice_mut().expect("value buffers are contiguous");
        for (c, &(mean, a, b)) in state.affine.iter().enumerate() {
            let range = c * spatial..(c + 1) * spatial;
            for (y, &x) in y_row[range.clone()].iter_mut().zip(&x_row[range]) {
                *y = (x - mean) * a + b;
            }
        }
    }
}

/// Batch normalisation, backward, for the mode of the last forward pass. With `x̂ = (x − μ)/σ`:
/// `dβ = Σ dy` and `dγ = Σ dy·x̂` (over samples and positions); `dx = γ/σ · (dy − Σdy/n −
/// x̂·Σ(dy·x̂)/n)` after a training pass (μ and σ depend on every sample of the batch), `dx =
/// γ/σ · dy` after an evaluation pass. `dx` is written as its mode says, when asked for; with
/// `sgd = Some((η, _))`, `γ −= η·dγ` and `β −= η·dβ` replace storing the gradients (one-axis
/// parameters take no weight decay).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward<T: Element>(
    x: ArrayView2<T>,
    dy: ArrayView2<T>,
    dx: Option<(ArrayViewMut2<T>, GradMode)>,
    gamma: &mut Param<T, Ix1>,
    beta: &mut Param<T, Ix1>,
    sgd: Option<(T, T)>,
    state: &mut BatchNormState<T>,
    geometry: BatchNorm,
) {
    let BatchNorm {
        channels, spatial, ..
    } = geometry;
    assert_eq!(x.dim(), dy.dim(), "batchnorm: x and dy have the same shape");
    let n = (x.nrows() * spatial) as f64;
    for c in 0..channels {
        let (mean, inv_std) = (state.mean[c], state.inv_std[c]);
        let mut sums = (0.0, 0.0);
        for (x, dy) in channel_rows(&x, c, spatial).zip(channel_rows(&dy, c, spatial)) {
            for (&x, &dy) in x.iter().zip(dy) {
                let dy = Element::to_f64(dy);
                sums.0 += dy;
                sums.1 += dy * (Element::to_f64(x) - mean) * inv_std;
            }
        }
        state.sums[c] = sums;
    }
    if let Some((mut dx, mode)) = dx {
        for ((x_row, dy_row), mut dx_row) in x.rows().into_iter().zip(dy.rows()).zip(dx.rows_mut())
        {
            let (x_row, dy_row) = (
                x_row
                    .to_slice()
                    .expect("each sample's values are contiguous"),
                dy_row
                    .to_slice()
                    .expect("each sample's gradient is contiguous"),
            );
            let dx_row = dx_row
                .as_slice_mut()
                .expect("gradient buffers are contiguous");
            for c in 0..channels {
                let range = c * spatial..(c + 1) * spatial;
                let (mean, inv_std) = (state.mean[c], state.inv_std[c]);
                let g = Element::to_f64(gamma.value()[c]) * inv_std;
                let (sum_dy, sum_dy_xhat) = state.sums[c];
                let xs = &x_row[range.clone()];
                let dys = &dy_row[range.clone()];
                for ((d, &x), &dy) in dx_row[range].iter_mut().zip(xs).zip(dys) {
                    let value = if state.training {
                        let x_hat = (Element::to_f64(x) - mean) * inv_std;
                        g * (Element::to_f64(dy) - sum_dy / n - x_hat * sum_dy_xhat / n)
                    } else {
                        g * Element::to_f64(dy)
                    };
                    match mode {
                        GradMode::Set => *d = T::from_f64(value),
                        GradMode::Add => *d += T::from_f64(value),
                    }
                }
            }
        }
    }
    match sgd {
        None => {
            for (c, &(sum_dy, sum_dy_xhat)) in state.sums.iter().enumerate() {
                gamma.grad_mut()[c] = T::from_f64(sum_dy_xhat);
                beta.grad_mut()[c] = T::from_f64(sum_dy);
            }
        }
        Some((lr, _)) => {
            let mut g = gamma.value_mut();
            let mut b = beta.value_mut();
            for (c, &(sum_dy, sum_dy_xhat)) in state.sums.iter().enumerate() {
                g[c] -= lr * T::from_f64(sum_dy_xhat);
                b[c] -= lr * T::from_f64(sum_dy);
            }
        }
    }
}

/// The generator dropout masks come from: its own stream, seeded with the network (xoshiro256++,
/// the same on every platform).
pub type MaskRng = rand::rngs::Xoshiro256PlusPlus;

/// The mask generator of a network seeded by `seed`: a stream apart from the one its parameters
/// were drawn from.
pub fn mask_rng(seed: u64) -> MaskRng {
    MaskRng::seed_from_u64(seed ^ 0x6d61_736b_7321_0000)
}

/// What a dropout keeps between calls: the mask of its last training pass, if it drew one.
#[derive(Debug, Clone, Default)]
pub struct DropoutMask<T> {
    /// Per element of the batch: 0 where dropped, `1/(1 − p)` where kept.
    mask: Vec<T>,
    /// Whether the last forward pass applied `mask` (a training pass) or passed `x` on.
    applied: bool,
}

/// Inverted dropout, forward: when `training`, each element is kept with probability `1 − p` and
/// scaled by `1/(1 − p)`, or zeroed (a fresh mask from `rng` each pass); otherwise `y = x`.
pub fn dropout_forward<T: Element>(
    x: ArrayView2<T>,
    mut y: ArrayViewMut2<T>,
    state: &mut DropoutMask<T>,
    p: f64,
    rng: &mut MaskRng,
    training: bool,
) {
    assert_eq!(x.dim(), y.dim(), "dropout: x and y have the same shape");
    assert!((0.0..1.0).contains(&p), "dropout: p = {p} is not in [0, 1)");
    state.applied = training;
    if !training {
        y.assign(&x);
        return;
    }
    // Kept where a uniform 32-bit draw is at least p·2³².
    let threshold = (p * 4_294_967_296.0) as u64;
    let scale = T::from_f64(1.0 / (1.0 - p));
    state.mask.clear();
    state.mask.extend((0..x.len()).map(|_| {
        if u64::from(rng.next_u32()) >= threshold {
            scale
        } else {
            T::zero()
        }
    }));
    for ((y, &x), &m) in y.iter_mut().zip(&x).zip(&state.mask) {
        *y = x * m;
    }
}

/// Inverted dropout, backward: `dx = dy·mask` after a training pass, `dx = dy` after an
/// evaluation pass; written as `mode` says.
pub fn dropout_backward<T: Element>(
    dy: ArrayView2<T>,
    mut dx: ArrayViewMut2<T>,
    mode: GradMode,
    state: &DropoutMask<T>,
) {
    assert_eq!(dy.dim(), dx.dim(), "dropout: dy and dx have the same shape");
    let store = |d: &mut T, v: T| match mode {
        GradMode::Set => *d = v,
        GradMode::Add => *d += v,
    };
    if state.applied {
        assert_eq!(
            state.mask.len(),
            dy.len(),
            "dropout: the mask fits the batch"
        );
        for ((d, &dy), &m) in dx.iter_mut().zip(&dy).zip(&state.mask) {
            store(d, dy * m);
        }
    } else {
        for (d, &dy) in dx.iter_mut().zip(&dy) {
            store(d, dy);
        }
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array1, Array2, array};

    use super::*;

    fn geometry(channels: usize, spatial: usize) -> BatchNorm {
        BatchNorm {
            channels,
            spatial,
            momentum: 0.1,
            eps: 1e-5,
        }
    }

    #[test]
    fn training_normalises_each_channel_over_samples_and_positions() {
        // Two samples of two channels of two positions: channel 0 holds 1, 2, 3, 4 (mean 2.5,
        // variance 1.25), channel 1 holds 10 four times.
        let x = array![[1.0, 2.0, 10.0, 10.0], [3.0, 4.0, 10.0, 10.0]];
        let (gamma, beta) = (array![2.0, 1.0], array![0.5, -1.0]);
        let mut y = Array2::zeros((2, 4));
        let mut state = BatchNormState::<f64>::new(2);
        batchnorm_forward(
            x.view(),
            gamma.view(),
            beta.view(),
            y.view_mut(),
            &mut state,
            geometry(2, 2),
            true,
        );
        let inv_std = 1.0 / (1.25f64 + 1e-5).sqrt();
        for (j, v) in [1.0, 2.0].into_iter().enumerate() {
            assert!((y[[0, j]] - (2.0 * (v - 2.5) * inv_std + 0.5)).abs() < 1e-12);
        }
        assert!(
            (y[[1, 3]] - -1.0).abs() < 1e-12,
            "a constant channel becomes β"
        );
        // Running statistics: 0.9·0 + 0.1·2.5 and 0.9·1 + 0.1·(1.25·4/3).
        assert!((state.running_mean()[0] - 0.25).abs() < 1e-12);
        assert!((state.running_var()[0] - (0.9 + 0.1 * 1.25 * 4.0 / 3.0)).abs() < 1e-12);
        assert!((state.running_mean()[1] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn evaluation_uses_the_running_statistics_and_leaves_them() {
        let x = array![[1.0, 5.0], [3.0, 7.0]];
        let mut state = BatchNormState::<f64>::new(2);
        state.running_mean_mut().copy_from_slice(&[1.0, 2.0]);
        state.running_var_mut().copy_from_slice(&[4.0, 9.0]);
        let (gamma, beta) = (Array1::ones(2), Array1::zeros(2));
        let mut y = Array2::zeros((2, 2));
        batchnorm_forward(
            x.view(),
            gamma.view(),
            beta.view(),
            y.view_mut(),
            &mut state,
            geometry(2, 1),
            false,
        );
        assert!((y[[1, 0]] - 2.0 / (4.0f64 + 1e-5).sqrt()).abs() < 1e-12);
        assert!((y[[0, 1]] - 3.0 / (9.0f64 + 1e-5).sqrt()).abs() < 1e-12);
        assert_eq!(state.running_mean(), &[1.0, 2.0]);
        assert_eq!(state.running_var(), &[4.0, 9.0]);
    }

    #[test]
    fn dropout_keeps_about_one_minus_p_and_scales_what_it_keeps() {
        let x = Array2::<f64>::ones((100, 100));
        let mut y = Array2::zeros((100, 100));
        let mut state = DropoutMask::default();
        let mut rng = mask_rng(7);
        dropout_forward(x.view(), y.view_mut(), &mut state, 0.25, &mut rng, true);
        let kept = y.iter().filter(|&&v| v != 0.0).count();
        assert!(
            (7300..7700).contains(&kept),
            "{kept} of 10,000 kept at p = 0.25"
        );
        assert!(y.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-15));
        // The backward pass drops the same elements.
        let mut dx = Array2::zeros((100, 100));
        dropout_backward(x.view(), dx.view_mut(), GradMode::Set, &state);
        assert_eq!(dx, y);
        // Evaluation passes x on and draws nothing.
        let before = rng.clone();
        dropout_forward(x.view(), y.view_mut(), &mut state, 0.25, &mut rng, false);
        assert_eq!(y, x);
        assert_eq!(rng.next_u64(), before.clone().next_u64());
    }
}
