//! What the optimisers and the network traits both need to update a parameter: plain SGD's step
//! and the L2 weight decay, which every optimiser applies the same way (see
//! [`optim`](crate::optim)'s conventions). It sits below both, so that
//! [`Trainable::sgd_step_with_decay`](crate::Trainable::sgd_step_with_decay)'s default can take
//! the same step as [`Sgd`](crate::optim::Sgd) without the network traits depending on the
//! optimisers, which depend on them.

use crate::element::Element;
use crate::param::ParamMut;
use crate::pool;

/// Parameters with more elements than this are updated by all threads.
const SHARE_ABOVE: usize = 1 << 14;

/// The weight decay for a parameter of `shape`: `λ` for a weight (two or more axes), 0 for a bias.
#[inline]
pub(crate) fn decay_for(shape: &[usize], weight_decay: f64) -> f64 {
    if shape.len() >= 2 { weight_decay } else { 0.0 }
}

/// The gradient a rule uses for one scalar: `∂L/∂w + λ·w`, in `f64`.
#[inline]
pub(crate) fn decayed<T: Element>(w: f64, g: T, decay: f64) -> f64 {
    g.to_f64() + decay * w
}

/// One step of plain SGD on `p`: `W ← W − η·(∂L/∂W + λ·W)` with the weight decay `λ` of
/// [`decay_for`] (none for a bias).
pub(crate) fn sgd<T: Element>(p: ParamMut<'_, T>, lr: f64, weight_decay: f64) {
    let decay = decay_for(p.shape, weight_decay);
    if decay == 0.0 {
        // The hot path: `w -= lr·g` in the element type, which the compiler vectorises; a large
        // parameter is shared between the threads (it streams from memory).
        let lr = T::from_f64(lr);
        pool::zip_pieces(p.value, p.grad, SHARE_ABOVE, &|value, grad| {
            for (w, &g) in value.iter_mut().zip(grad) {
                *w -= lr * g;
            }
        });
        return;
    }
    for (w, &g) in p.value.iter_mut().zip(p.grad.iter()) {
        let wf = w.to_f64();
        *w = T::from_f64(wf - lr * decayed(wf, g, decay));
    }
}
