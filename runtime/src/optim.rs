//! Optimisers: the book's chapter 6 (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam), with L2
//! weight decay. They work on any network through [`Network::for_each_param_mut`].
//!
//! Each optimiser implements [`Optimizer`], so training code can be generic over it, and also has
//! an inherent `step`, so `Sgd::new(0.1).step(&mut net)` needs no trait import. [`Optim`] holds any
//! of them and is made from a name (`"adam"`) with the book's default hyperparameters, for command
//! lines.
//!
//! # Conventions
//!
//! - `W` is a parameter, `∂L/∂W` its gradient from the last backward pass, `η` the learning rate.
//!   The update rules are those of the book's `common/optimizer.py`, written out on each type.
//! - State (velocities, squared-gradient sums, moment estimates) is kept per parameter, in the
//!   order [`Network::for_each_param_mut`] visits them, in `f64` whatever the network's element
//!   type; each update is computed in `f64` and rounded once to the element type. The state is
//!   allocated on the first step and reused: later steps allocate nothing. An optimiser belongs to
//!   one network: a parameter whose name or size differs from the last step's starts its state
//!   afresh (as [`Optimizer::reset`] does for all).
//! - Weight decay (L2, the book's `weight_decay_lambda`): with `weight_decay = λ`, the gradient
//!   used is `∂L/∂W + λ·W`, as if `½·λ·‖W‖²` were added to the loss. As in the book it applies to
//!   weights, not biases: to parameters with two or more axes. The stored gradient is not changed.
//!   It is the same for every optimiser, Adam included (not AdamW's decoupled decay).

use std::fmt;
use std::str::FromStr;

use ndarray::ArrayView2;

use crate::element::Element;
use crate::error::{Error, Result};
use crate::network::{Network, Trainable};
use crate::update::{self, decay_for, decayed};

/// What every optimiser does: update a network's parameters from their gradients.
pub trait Optimizer {
    /// Applies one update to every parameter of `net`, from the gradients of the last backward
    /// pass. The gradients are read, not changed.
    fn step<N: Network + ?Sized>(&mut self, net: &mut N);

    /// One training step on a batch: [`Trainable::gradient`], then [`step`](Optimizer::step).
    /// Returns the loss. SGD takes [`Trainable::sgd_step`] (or, with weight decay,
    /// [`Trainable::sgd_step_with_decay`]) instead, which writes the update in the backward pass
    /// (and so stores no gradients).
    fn train_step<N: Trainable + ?Sized>(
        &mut self,
        net: &mut N,
        x: ArrayView2<'_, N::Elem>,
        t: N::Targets<'_>,
    ) -> Result<N::Elem> {
        gradient_then_step(self, net, x, t)
    }

    /// The learning rate `η`.
    fn lr(&self) -> f64;

    /// Changes the learning rate, e.g. for a schedule; the state is kept.
    fn set_lr(&mut self, lr: f64);

    /// Forgets the state (velocities, sums, moments, step count): the next step is a first step.
    fn reset(&mut self);
}

/// [`Optimizer::train_step`] unfused: the gradients, then the optimiser's step.
fn gradient_then_step<O: Optimizer + ?Sized, N: Trainable + ?Sized>(
    optimizer: &mut O,
    net: &mut N,
    x: ArrayView2<'_, N::Elem>,
    t: N::Targets<'_>,
) -> Result<N::Elem> {
    let loss = net.gradient(x, t)?;
    optimizer.step(net);
    Ok(loss)
}

/// The state of one parameter: `K` buffers of one `f64` per scalar.
#[derive(Debug, Clone, PartialEq)]
struct Slot<const K: usize> {
    name: &'static str,
    bufs: [Vec<f64>; K],
}

/// Per-parameter optimiser state, `K` buffers per parameter, in visiting order.
#[derive(Debug, Clone, PartialEq)]
struct State<const K: usize> {
    slots: Vec<Slot<K>>,
}

impl<const K: usize> Default for State<K> {
    fn default() -> Self {
        State { slots: Vec::new() }
    }
}

impl<const K: usize> State<K> {
    /// The buffers of parameter `i`, zeroed if they are new or were a different parameter's.
    fn slot(&mut self, i: usize, name: &'static str, len: usize) -> &mut [Vec<f64>; K] {
        let fresh = || Slot {
            name,
            bufs: std::array::from_fn(|_| vec![0.0; len]),
        };
        if i >= self.slots.len() {
            self.slots.push(fresh());
        } else if self.slots[i].name != name || self.slots[i].bufs.iter().any(|b| b.len() != len) {
            self.slots[i] = fresh();
        }
        &mut self.slots[i].bufs
    }
}

/// Visits every parameter of `net` with its value, gradient, weight decay (`λ` for a weight, 0 for
/// a bias) and state buffers.
fn visit<N, const K: usize>(
    net: &mut N,
    state: &mut State<K>,
    weight_decay: f64,
    mut update: impl FnMut(&mut [N::Elem], &[N::Elem], f64, &mut [Vec<f64>; K]),
) where
    N: Network + ?Sized,
{
    let mut i = 0;
    net.for_each_param_mut(&mut |p| {
        let decay = decay_for(p.shape, weight_decay);
        update(p.value, p.grad, decay, state.slot(i, p.name, p.value.len()));
        i += 1;
    });
    state.slots.truncate(i);
}

/// Gives an optimiser an inherent `step` that forwards to [`Optimizer::step`].
macro_rules! inherent_step {
    ($($t:ty),*) => {$(
        impl $t {
            /// Applies one update to every parameter of `net` ([`Optimizer::step`]).
            pub fn step<N: Network + ?Sized>(&mut self, net: &mut N) {
                <Self as Optimizer>::step(self, net)
            }
        }
    )*};
}

inherent_step!(Sgd, Momentum, Nesterov, AdaGrad, RmsProp, Adam, Optim);

/// What every single optimiser has the same way: a weight-decay builder.
macro_rules! with_weight_decay {
    ($($t:ty),*) => {$(
        impl $t {
            /// The same with L2 weight decay `λ`.
            pub fn with_weight_decay(mut self, lambda: f64) -> Self {
                self.weight_decay = lambda;
                self
            }
        }
    )*};
}

with_weight_decay!(Sgd, Momentum, Nesterov, AdaGrad, RmsProp, Adam);

/// `Optimizer::lr` and `set_lr` for an optimiser with an `lr` field.
macro_rules! lr_methods {
    () => {
        fn lr(&self) -> f64 {
            self.lr
        }

        fn set_lr(&mut self, lr: f64) {
            self.lr = lr;
        }
    };
}

/// Plain stochastic gradient descent: `W ← W − η·∂L/∂W`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sgd {
    /// The learning rate `η`; the book's default is 0.01.
    pub lr: f64,
    /// The L2 weight decay `λ` (0: none).
    pub weight_decay: f64,
}

impl Sgd {
    /// SGD with learning rate `lr`, no weight decay.
    pub fn new(lr: f64) -> Self {
        Sgd {
            lr,
            weight_decay: 0.0,
        }
    }
}

impl Default for Sgd {
    /// The book's default: `lr = 0.01`.
    fn default() -> Self {
        Sgd::new(0.01)
    }
}

impl Optimizer for Sgd {
    fn step<N: Network + ?Sized>(&mut self, net: &mut N) {
        let (lr, weight_decay) = (self.lr, self.weight_decay);
        net.for_each_param_mut(&mut |p| update::sgd(p, lr, weight_decay));
    }

    fn train_step<N: Trainable + ?Sized>(
        &mut self,
        net: &mut N,
        x: ArrayView2<'_, N::Elem>,
        t: N::Targets<'_>,
    ) -> Result<N::Elem> {
        if self.weight_decay == 0.0 {
            return net.sgd_step(x, t, self.lr);
        }
        net.sgd_step_with_decay(x, t, self.lr, self.weight_decay)
    }

    lr_methods!();

    fn reset(&mut self) {}
}

/// Momentum SGD: a velocity that gradients accelerate and friction slows.
///
/// `v ← α·v − η·∂L/∂W`, then `W ← W + v`; `v` starts at zero.
#[derive(Debug, Clone, PartialEq)]
pub struct Momentum {
    /// The learning rate `η`; the book's default is 0.01.
    pub lr: f64,
    /// The momentum `α`, how much velocity is kept per step; the book's default is 0.9.
    pub momentum: f64,
    /// The L2 weight decay `λ` (0: none).
    pub weight_decay: f64,
    state: State<1>,
}

impl Momentum {
    /// Momentum with learning rate `lr` and the book's momentum 0.9, no weight decay.
    pub fn new(lr: f64) -> Self {
        Momentum {
            lr,
            momentum: 0.9,
            weight_decay: 0.0,
            state: State::default(),
        }
    }

    /// The same with momentum `momentum`.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
}

impl Default for Momentum {
    /// The book's defaults: `lr = 0.01`, `momentum = 0.9`.
    fn default() -> Self {
        Momentum::new(0.01)
    }
}

impl Optimizer for Momentum {
    fn step<N: Network + ?Sized>(&mut self, net: &mut N) {
        let (lr, mu) = (self.lr, self.momentum);
        visit(
            net,
            &mut self.state,
            self.weight_decay,
            |w, g, decay, [v]| {
                for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
                    let wf = w.to_f64();
                    *v = mu * *v - lr * decayed(wf, g, decay);
                    *w = N::Elem::from_f64(wf + *v);
                }
            },
        );
    }

    lr_methods!();

    fn reset(&mut self) {
        self.state = State::default();
    }
}

/// Nesterov's accelerated gradient, in the book's form (after Bengio et al., "Advances in
/// optimizing recurrent networks", 2012): momentum whose step looks ahead along the velocity.
///
/// `v ← α·v − η·∂L/∂W`, then `W ← W + α²·v − (1 + α)·η·∂L/∂W`; `v` starts at zero.
#[derive(Debug, Clone, PartialEq)]
pub struct Nesterov {
    /// The learning rate `η`; the book's default is 0.01.
    pub lr: f64,
    /// The momentum `α`; the book's default is 0.9.
    pub momentum: f64,
    /// The L2 weight decay `λ` (0: none).
    pub weight_decay: f64,
    state: State<1>,
}

impl Nesterov {
    /// Nesterov with learning rate `lr` and the book's momentum 0.9, no weight decay.
    pub fn new(lr: f64) -> Self {
        Nesterov {
            lr,
            momentum: 0.9,
            weight_decay: 0.0,
            state: State::default(),
        }
    }

    /// The same with momentum `momentum`.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
}

impl Default for Nesterov {
    /// The book's defaults: `lr = 0.01`, `momentum = 0.9`.
    fn default() -> Self {
        Nesterov::new(0.01)
    }
}

impl Optimizer for Nesterov {
    fn step<N: Network + ?Sized>(&mut self, net: &mut N) {
        let (lr, mu) = (self.lr, self.momentum);
        visit(
            net,
            &mut self.state,
            self.weight_decay,
            |w, g, decay, [v]| {
                for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
                    let wf = w.to_f64();
                    let g = decayed(wf, g, decay);
                    *v = mu * *v - lr * g;
                    *w = N::Elem::from_f64(wf + mu * mu * *v - (1.0 + mu) * lr * g);
                }
            },
        );
    }

    lr_methods!();

    fn reset(&mut self) {
        self.state = State::default();
    }
}

/// AdaGrad: each scalar's step shrinks with the sum of its squared gradients so far.
///
/// `h ← h + (∂L/∂W)²`, then `W ← W − η·∂L/∂W / (√h + ε)`; `h` starts at zero.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaGrad {
    /// The learning rate `η`; the book's default is 0.01.
    pub lr: f64,
    /// `ε`, which keeps the division finite where `h` is 0: 1e-7, as in the book.
    pub eps: f64,
    /// The L2 weight decay `λ` (0: none).
    pub weight_decay: f64,
    state: State<1>,
}

impl AdaGrad {
    /// AdaGrad with learning rate `lr`, the book's `ε = 1e-7`, no weight decay.
    pub fn new(lr: f64) -> Self {
        AdaGrad {
            lr,
            eps: 1e-7,
            weight_decay: 0.0,
            state: State::default(),
        }
    }
}

impl Default for AdaGrad {
    /// The book's defaults: `lr = 0.01`, `ε = 1e-7`.
    fn default() -> Self {
        AdaGrad::new(0.01)
    }
}

impl Optimizer for AdaGrad {
    fn step<N: Network + ?Sized>(&mut self, net: &mut N) {
        let (lr, eps) = (self.lr, self.eps);
        visit(
            net,
            &mut self.state,
            self.weight_decay,
            |w, g, decay, [h]| {
                for ((w, &g), h) in w.iter_mut().zip(g).zip(h.iter_mut()) {
                    let wf = w.to_f64();
                    let g = decayed(wf, g, decay);
                    *h += g * g;
                    *w = N::Elem::from_f64(wf - lr * g / (h.sqrt() + eps));
                }
            },
        );
    }

    lr_methods!();

    fn reset(&mut self) {
        self.state = State::default();
    }
}

/// RMSprop: AdaGrad with a decaying average of squared gradients instead of their sum, so old
/// gradients are forgotten and steps do not shrink to nothing.
///
/// `h ← ρ·h + (1 − ρ)·(∂L/∂W)²`, then `W ← W − η·∂L/∂W / (√h + ε)`; `h` starts at zero.
#[derive(Debug, Clone, PartialEq)]
pub struct RmsProp {
    /// The learning rate `η`; the book's default is 0.01.
    pub lr: f64,
    /// The decay rate `ρ` of the average; the book's default is 0.99.
    pub decay_rate: f64,
    /// `ε`, which keeps the division finite where `h` is 0: 1e-7, as in the book.
    pub eps: f64,
    /// The L2 weight decay `λ` (0: none).
    pub weight_decay: f64,
    state: State<1>,
}

impl RmsProp {
    /// RMSprop with learning rate `lr`, the book's `ρ = 0.99` and `ε = 1e-7`, no weight decay.
    pub fn new(lr: f64) -> Self {
        RmsProp {
            lr,
            decay_rate: 0.99,
            eps: 1e-7,
            weight_decay: 0.0,
            state: State::default(),
        }
    }

    /// The same with decay rate `rho`.
    pub fn with_decay_rate(mut self, rho: f64) -> Self {
        self.decay_rate = rho;
        self
    }
}

impl Default for RmsProp {
    /// The book's defaults: `lr = 0.01`, `ρ = 0.99`, `ε = 1e-7`.
    fn default() -> Self {
        RmsProp::new(0.01)
    }
}

impl Optimizer for RmsProp {
    fn step<N: Network + ?Sized>(&mut self, net: &mut N) {
        let (lr, rho, eps) = (self.lr, self.decay_rate, self.eps);
        visit(
            net,
            &mut self.state,
            self.weight_decay,
            |w, g, decay, [h]| {
                for ((w, &g), h) in w.iter_mut().zip(g).zip(h.iter_mut()) {
                    let wf = w.to_f64();
                    let g = decayed(wf, g, decay);
                    *h = rho * *h + (1.0 - rho) * g * g;
                    *w = N::Elem::from_f64(wf - lr * g / (h.sqrt() + eps));
                }
            },
        );
    }

    lr_methods!();

    fn reset(&mut self) {
        self.state = State::default();
    }
}

/// Adam: momentum on the gradient and an RMSprop-style average of its square, with bias
/// correction for their zero start, exactly as the book writes it.
///
/// At step `t` (1 for the first):
/// `m ← m + (1 − β₁)·(∂L/∂W − m)`, `v ← v + (1 − β₂)·((∂L/∂W)² − v)`,
/// `η_t = η·√(1 − β₂ᵗ) / (1 − β₁ᵗ)`, then `W ← W − η_t·m / (√v + ε)`; `m` and `v` start at zero.
///
/// This folds the bias corrections `m̂ = m/(1 − β₁ᵗ)`, `v̂ = v/(1 − β₂ᵗ)` into `η_t`; it differs
/// from the paper's `η·m̂/(√v̂ + ε)` only in where `ε` sits. `ε` is the book's 1e-7 (the paper's
/// is 1e-8).
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    /// The learning rate `η`; the book's default is 0.001.
    pub lr: f64,
    /// `β₁`, the decay of the gradient's average; the book's default is 0.9.
    pub beta1: f64,
    /// `β₂`, the decay of the squared gradient's average; the book's default is 0.999.
    pub beta2: f64,
    /// `ε`, which keeps the division finite: 1e-7, as in the book.
    pub eps: f64,
    /// The L2 weight decay `λ` (0: none), added to the gradient (not AdamW's decoupled decay).
    pub weight_decay: f64,
    /// Steps taken, `t`.
    t: u64,
    state: State<2>,
}

impl Adam {
    /// Adam with learning rate `lr`, the book's `β₁ = 0.9`, `β₂ = 0.999`, `ε = 1e-7`, no weight
    /// decay.
    pub fn new(lr: f64) -> Self {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
            weight_decay: 0.0,
            t: 0,
            state: State::default(),
        }
    }

    /// The same with decays `beta1` and `beta2`.
    pub fn with_betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.beta1 = beta1;
        self.beta2 = beta2;
        self
    }

    /// Steps taken since creation or the last [`reset`](Optimizer::reset).
    pub fn steps(&self) -> u64 {
        self.t
    }
}

impl Default for Adam {
    /// The book's defaults: `lr = 0.001`, `β₁ = 0.9`, `β₂ = 0.999`, `ε = 1e-7`.
    fn default() -> Self {
        Adam::new(0.001)
    }
}

impl Optimizer for Adam {
    fn step<N: Network + ?Sized>(&mut self, net: &mut N) {
        self.t += 1;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let t = self.t as f64;
        let lr_t = self.lr * (1.0 - b2.powf(t)).sqrt() / (1.0 - b1.powf(t));
        visit(
            net,
            &mut self.state,
            self.weight_decay,
            |w, g, decay, [m, v]| {
                for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    let wf = w.to_f64();
                    let g = decayed(wf, g, decay);
                    *m += (1.0 - b1) * (g - *m);
                    *v += (1.0 - b2) * (g * g - *v);
                    *w = N::Elem::from_f64(wf - lr_t * *m / (v.sqrt() + eps));
                }
            },
        );
    }

    lr_methods!();

    fn reset(&mut self) {
        self.t = 0;
        self.state = State::default();
    }
}

/// Any of the optimisers, chosen at run time, e.g. from a command line by
/// [`Optim::from_name`] or [`str::parse`].
#[derive(Debug, Clone, PartialEq)]
pub enum Optim {
    /// [`Sgd`].
    Sgd(Sgd),
    /// [`Momentum`].
    Momentum(Momentum),
    /// [`Nesterov`].
    Nesterov(Nesterov),
    /// [`AdaGrad`].
    AdaGrad(AdaGrad),
    /// [`RmsProp`].
    RmsProp(RmsProp),
    /// [`Adam`].
    Adam(Adam),
}

/// Runs `$body` with `$o` bound to the optimiser inside an [`Optim`].
macro_rules! each {
    ($self:expr, $o:ident => $body:expr) => {
        match $self {
            Optim::Sgd($o) => $body,
            Optim::Momentum($o) => $body,
            Optim::Nesterov($o) => $body,
            Optim::AdaGrad($o) => $body,
            Optim::RmsProp($o) => $body,
            Optim::Adam($o) => $body,
        }
    };
}

impl Optim {
    /// The names [`Optim::from_name`] knows, in the book's order.
    pub const NAMES: &'static [&'static str] =
        &["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"];

    /// The optimiser called `name` (any case: `"Adam"` works), with the book's default
    /// hyperparameters, learning rates included: 0.01 for all but Adam's 0.001; momentum 0.9;
    /// RMSprop's decay 0.99; Adam's `β₁ = 0.9`, `β₂ = 0.999`; `ε = 1e-7` everywhere. Errs with the
    /// list of valid names for an unknown one.
    pub fn from_name(name: &str) -> Result<Optim> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "sgd" => Optim::Sgd(Sgd::default()),
            "momentum" => Optim::Momentum(Momentum::default()),
            "nesterov" => Optim::Nesterov(Nesterov::default()),
            "adagrad" => Optim::AdaGrad(AdaGrad::default()),
            "rmsprop" => Optim::RmsProp(RmsProp::default()),
            "adam" => Optim::Adam(Adam::default()),
            _ => {
                return Err(Error::UnknownOptimizer {
                    name: name.to_owned(),
                    known: Optim::NAMES.join(", "),
                });
            }
        })
    }

    /// The optimiser's name, as [`Optim::from_name`] takes it.
    pub fn name(&self) -> &'static str {
        match self {
            Optim::Sgd(_) => "sgd",
            Optim::Momentum(_) => "momentum",
            Optim::Nesterov(_) => "nesterov",
            Optim::AdaGrad(_) => "adagrad",
            Optim::RmsProp(_) => "rmsprop",
            Optim::Adam(_) => "adam",
        }
    }

    /// The same with learning rate `lr`.
    pub fn with_lr(mut self, lr: f64) -> Self {
        self.set_lr(lr);
        self
    }

    /// The L2 weight decay `λ`.
    pub fn weight_decay(&self) -> f64 {
        each!(self, o => o.weight_decay)
    }

    /// The same with L2 weight decay `λ`.
    pub fn with_weight_decay(mut self, lambda: f64) -> Self {
        each!(&mut self, o => o.weight_decay = lambda);
        self
    }
}

impl FromStr for Optim {
    type Err = Error;

    /// [`Optim::from_name`].
    fn from_str(name: &str) -> Result<Optim> {
        Optim::from_name(name)
    }
}

impl fmt::Display for Optim {
    /// The name and hyperparameters, e.g. `adam(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7)`;
    /// a nonzero weight decay is shown last.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(lr={}", self.name(), self.lr())?;
        match self {
            Optim::Sgd(_) => {}
            Optim::Momentum(o) => write!(f, ", momentum={}", o.momentum)?,
            Optim::Nesterov(o) => write!(f, ", momentum={}", o.momentum)?,
            Optim::AdaGrad(o) => write!(f, ", eps={:e}", o.eps)?,
            Optim::RmsProp(o) => write!(f, ", decay_rate={}, eps={:e}", o.decay_rate, o.eps)?,
            Optim::Adam(o) => write!(f, ", beta1={}, beta2={}, eps={:e}", o.beta1, o.beta2, o.eps)?,
        }
        if self.weight_decay() != 0.0 {
            write!(f, ", weight_decay={}", self.weight_decay())?;
        }
        f.write_str(")")
    }
}

impl Optimizer for Optim {
    fn step<N: Network + ?Sized>(&mut self, net: &mut N) {
        each!(self, o => Optimizer::step(o, net))
    }

    fn train_step<N: Trainable + ?Sized>(
        &mut self,
        net: &mut N,
        x: ArrayView2<'_, N::Elem>,
        t: N::Targets<'_>,
    ) -> Result<N::Elem> {
        each!(self, o => Optimizer::train_step(o, net, x, t))
    }

    fn lr(&self) -> f64 {
        each!(self, o => o.lr)
    }

    fn set_lr(&mut self, lr: f64) {
        each!(self, o => o.lr = lr)
    }

    fn reset(&mut self) {
        each!(self, o => Optimizer::reset(o))
    }
}

macro_rules! into_optim {
    ($($t:ident),*) => {$(
        impl From<$t> for Optim {
            /// Wraps the optimiser.
            fn from(o: $t) -> Optim {
                Optim::$t(o)
            }
        }
    )*};
}

into_optim!(Sgd, Momentum, Nesterov, AdaGrad, RmsProp, Adam);
