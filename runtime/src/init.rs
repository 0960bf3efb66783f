//! How parameters start: the book's default (normal with std 0.01), He and Xavier.

use ndarray::Dimension;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Distribution, StandardNormal};

use crate::element::Element;
use crate::param::Param;

/// How weights are drawn. Biases always start at zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Normal with this standard deviation; the book's `weight_init_std`, 0.01 by default.
    Std(f64),
    /// He: normal with std `sqrt(2 / fan_in)`, for ReLU networks.
    He,
    /// Xavier (as in the book): normal with std `sqrt(1 / fan_in)`, for sigmoid and tanh networks.
    Xavier,
}

impl Default for Init {
    /// The book's default: `Std(0.01)`.
    fn default() -> Self {
        Init::Std(0.01)
    }
}

impl Init {
    /// The standard deviation for a weight whose layer has `fan_in` inputs.
    pub fn std_dev(self, fan_in: usize) -> f64 {
        match self {
            Init::Std(s) => s,
            Init::He => (2.0 / fan_in as f64).sqrt(),
            Init::Xavier => (1.0 / fan_in as f64).sqrt(),
        }
    }
}

/// What kind of parameter is being initialised; the macro's op table says it per parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamInit {
    /// A weight matrix fed by `fan_in` inputs: drawn by the chosen [`Init`].
    Weight { fan_in: usize },
    /// Starts at zero (biases, a batch normalisation's β).
    Zero,
    /// Starts at one (a batch normalisation's γ).
    One,
}

/// The random generator used for initialisation: the same seed gives the same parameters on every
/// platform (xoshiro256++).
pub type InitRng = Xoshiro256PlusPlus;

/// A generator seeded by `seed`.
pub fn rng(seed: u64) -> InitRng {
    InitRng::seed_from_u64(seed)
}

impl<T: Element, D: Dimension> Param<T, D> {
    /// Sets the value as `how` and `init` say, drawing from `rng`; clears the gradient.
    pub fn init(&mut self, how: ParamInit, init: Init, rng: &mut InitRng) {
        match how {
            ParamInit::Zero => self.value_mut().fill(T::zero()),
            ParamInit::One => self.value_mut().fill(T::one()),
            ParamInit::Weight { fan_in } => {
                let std = init.std_dev(fan_in);
                self.value_mut().map_inplace(|v| {
                    let z: f64 = StandardNormal.sample(rng);
                    *v = T::from_f64(z * std);
                });
            }
        }
        self.grad_mut().fill(T::zero());
    }
}
