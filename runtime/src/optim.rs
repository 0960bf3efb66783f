//! Optimisers: they work on any network through [`Network::for_each_param_mut`].

use crate::{Element, Network};

/// Plain stochastic gradient descent: `w ← w − lr·∂L/∂w`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sgd {
    /// The learning rate.
    pub lr: f64,
}

impl Sgd {
    /// SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Sgd { lr }
    }

    /// Applies one step to every parameter of `net`, from the gradients of the last backward pass.
    pub fn step<N: Network + ?Sized>(&mut self, net: &mut N) {
        let lr = N::Elem::from_f64(self.lr);
        net.for_each_param_mut(&mut |p| {
            for (w, &g) in p.value.iter_mut().zip(p.grad.iter()) {
                *w -= lr * g;
            }
        });
    }
}
