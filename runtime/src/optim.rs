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
//! - Learning-rate schedules: each optimiser keeps its base learning rate `η` (its `lr`), a
//!   [`Schedule`] (constant by default, `with_schedule` to change it) and a count of its steps.
//!   Step `t` (from 0) uses `schedule.lr(η, t)` wherever its rule says `η`, then counts itself;
//!   a [`train_step`](Optimizer::train_step) that errs is not counted. The constant schedule
//!   gives `η` exactly, so the updates are those of an optimiser without one.

use std::fmt;
use std::str::FromStr;

use ndarray::ArrayView2;

use crate::element::Element;
use crate::error::{Error, Result};
use crate::network::{Network, Trainable};
use crate::schedule::Schedule;
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

    /// The learning rate the next step will use: the base rate `η` as the schedule has it at the
    /// steps taken so far (`η` itself with the constant schedule).
    fn lr(&self) -> f64;

    /// Changes the base learning rate `η`, e.g. for a schedule of one's own. The state and the
    /// step count are kept: a schedule goes on from the step it has reached, from the new `η`.
    fn set_lr(&mut self, lr: f64);

    /// Forgets the state (velocities, sums, moments, step count): the next step is a first step,
    /// and the schedule starts again from step 0.
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

/// What every single optimiser has the same way: weight-decay and schedule builders, and the
/// step count.
macro_rules! common_methods {
    ($($t:ty),*) => {$(
        impl $t {
            /// The same with L2 weight decay `λ`.
            pub fn with_weight_decay(mut self, lambda: f64) -> Self {
                self.weight_decay = lambda;
                self
            }

            /// The same with the learning-rate schedule `schedule`, from the next step on.
            pub fn with_schedule(mut self, schedule: Schedule) -> Self {
                self.schedule = schedule;
                self
            }

            /// Steps taken since creation or the last [`reset`](Optimizer::reset): the
            /// schedule's number for the next step.
            pub fn steps(&self) -> u64 {
                self.t
            }

            /// The scheduled learning rate of the step being taken, which it counts.
            fn take_lr(&mut self) -> f64 {
                let lr = self.schedule.lr(self.lr, self.t);
                self.t += 1;
                lr
            }
        }
    )*};
}

common_methods!(Sgd, Momentum, Nesterov, AdaGrad, RmsProp, Adam);

/// `Optimizer::lr` and `set_lr` for an optimiser with `lr`, `schedule` and `t` fields.
macro_rules! lr_methods {
    () => {
        fn lr(&self) -> f64 {
            self.schedule.lr(self.lr, self.t)
        }

        fn set_lr(&mut self, lr: f64) {
            self.lr = lr;
        }
    };
}

/// Plain stochastic gradient descent: `W ← W − η·∂L/∂W`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sgd {
    /// The base learning rate `η`, which the schedule scales; the book's default is 0.01.
    pub lr: f64,
    /// The L2 weight decay `λ` (0: none).
    pub weight_decay: f64,
    /// The learning-rate schedule (constant by default).
    pub schedule: Schedule,
    /// Steps taken.
    t: u64,
}

impl Sgd {
    /// SGD with learning rate `lr`, no weight decay.
    pub fn new(lr: f64) -> Self {
        Sgd {
            lr,
            weight_decay: 0.0,
            schedule: Schedule::constant(),
            t: 0,
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
        let (lr, weight_decay) = (self.take_lr(), self.weight_decay);
        net.for_each_param_mut(&mut |p| update::sgd(p, lr, weight_decay));
    }

    fn train_step<N: Trainable + ?Sized>(
        &mut self,
        net: &mut N,
        x: ArrayView2<'_, N::Elem>,
        t: N::Targets<'_>,
    ) -> Result<N::Elem> {
        let lr = self.schedule.lr(self.lr, self.t);
        let loss = if self.weight_decay == 0.0 {
            net.sgd_step(x, t, lr)
        } else {
            net.sgd_step_with_decay(x, t, lr, self.weight_decay)
        }?;
        self.t += 1;
        Ok(loss)
    }

    lr_methods!();

    fn reset(&mut self) {
        self.t = 0;
    }
}

/// Momentum SGD: a velocity that gradients accelerate and friction slows.
///
/// `v ← α·v − η·∂L/∂W`, then `W ← W + v`; `v` starts at zero.
#[derive(Debug, Clone, PartialEq)]
pub struct Momentum {
    /// The base learning rate `η`, which the schedule scales; the book's default is 0.01.
    pub lr: f64,
    /// The momentum `α`, how much velocity is kept per step; the book's default is 0.9.
    pub momentum: f64,
    /// The L2 weight decay `λ` (0: none).
    pub weight_decay: f64,
    /// The learning-rate schedule (constant by default).
    pub schedule: Schedule,
    /// Steps taken.
    t: u64,
    state: State<1>,
}

impl Momentum {
    /// Momentum with learning rate `lr` and the book's momentum 0.9, no weight decay.
    pub fn new(lr: f64) -> Self {
        Momentum {
            lr,
            momentum: 0.9,
            weight_decay: 0.0,
            schedule: Schedule::constant(),
            t: 0,
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
        let (lr, mu) = (self.take_lr(), self.momentum);
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
        self.t = 0;
        self.state = State::default();
    }
}

/// Nesterov's accelerated gradient, in the book's form (after Bengio et al., "Advances in
/// optimizing recurrent networks", 2012): momentum whose step looks ahead along the velocity.
///
/// `v ← α·v − η·∂L/∂W`, then `W ← W + α²·v − (1 + α)·η·∂L/∂W`; `v` starts at zero.
#[derive(Debug, Clone, PartialEq)]
pub struct Nesterov {
    /// The base learning rate `η`, which the schedule scales; the book's default is 0.01.
    pub lr: f64,
    /// The momentum `α`; the book's default is 0.9.
    pub momentum: f64,
    /// The L2 weight decay `λ` (0: none).
    pub weight_decay: f64,
    /// The learning-rate schedule (constant by default).
    pub schedule: Schedule,
    /// Steps taken.
    t: u64,
    state: State<1>,
}

impl Nesterov {
    /// Nesterov with learning rate `lr` and the book's momentum 0.9, no weight decay.
    pub fn new(lr: f64) -> Self {
        Nesterov {
            lr,
            momentum: 0.9,
            weight_decay: 0.0,
            schedule: Schedule::constant(),
            t: 0,
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
        let (lr, mu) = (self.take_lr(), self.momentum);
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
        self.t = 0;
        self.state = State::default();
    }
}

/// AdaGrad: each scalar's step shrinks with the sum of its squared gradients so far.
///
/// `h ← h + (∂L/∂W)²`, then `W ← W − η·∂L/∂W / (√h + ε)`; `h` starts at zero.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaGrad {
    /// The base learning rate `η`, which the schedule scales; the book's default is 0.01.
    pub lr: f64,
    /// `ε`, which keeps the division finite where `h` is 0: 1e-7, as in the book.
    pub eps: f64,
    /// The L2 weight decay `λ` (0: none).
    pub weight_decay: f64,
    /// The learning-rate schedule (constant by default).
    pub schedule: Schedule,
    /// Steps taken.
    t: u64,
    state: State<1>,
}

impl AdaGrad {
    /// AdaGrad with learning rate `lr`, the book's `ε = 1e-7`, no weight decay.
    pub fn new(lr: f64) -> Self {
        AdaGrad {
            lr,
            eps: 1e-7,
            weight_decay: 0.0,
            schedule: Schedule::constant(),
            t: 0,
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
        let (lr, eps) = (self.take_lr(), self.eps);
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
        self.t = 0;
        self.state = State::default();
    }
}

/// RMSprop: AdaGrad with a decaying average of squared gradients instead of their sum, so old
/// gradients are forgotten and steps do not shrink to nothing.
///
/// `h ← ρ·h + (1 − ρ)·(∂L/∂W)²`, then `W ← W − η·∂L/∂W / (√h + ε)`; `h` starts at zero.
#[derive(Debug, Clone, PartialEq)]
pub struct RmsProp {
    /// The base learning rate `η`, which the schedule scales; the book's default is 0.01.
    pub lr: f64,
    /// The decay rate `ρ` of the average; the book's default is 0.99.
    pub decay_rate: f64,
    /// `ε`, which keeps the division finite where `h` is 0: 1e-7, as in the book.
    pub eps: f64,
    /// The L2 weight decay `λ` (0: none).
    pub weight_decay: f64,
    /// The learning-rate schedule (constant by default).
    pub schedule: Schedule,
    /// Steps taken.
    t: u64,
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
            schedule: Schedule::constant(),
            t: 0,
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
        let (lr, rho, eps) = (self.take_lr(), self.decay_rate, self.eps);
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
        self.t = 0;
        self.state = State::default();
    }
}

/// Adam: momentum on the gradient and an RMSprop-style average of its square, with bias
/// correction for their zero start, exactly as the book writes it.
///
/// At step `t` (1 for the first):
/// `m ← m + (1 − β₁)·(∂L/∂W − m)`, `v ← v + (1 − β₂)·((∂L/∂W)² − v)`,
/// `η_t = η·√(1 − β₂ᵗ) / (1 − β₁ᵗ)`, then `W ← W − η_t·m / (√v + ε)`; `m` and `v` start at zero.
/// With a schedule, `η` is its rate for the step, whose number from 0 is `t − 1`.
///
/// This folds the bias corrections `m̂ = m/(1 − β₁ᵗ)`, `v̂ = v/(1 − β₂ᵗ)` into `η_t`; it differs
/// from the paper's `η·m̂/(√v̂ + ε)` only in where `ε` sits. `ε` is the book's 1e-7 (the paper's
/// is 1e-8).
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    /// The base learning rate `η`, which the schedule scales; the book's default is 0.001.
    pub lr: f64,
    /// `β₁`, the decay of the gradient's average; the book's default is 0.9.
    pub beta1: f64,
    /// `β₂`, the decay of the squared gradient's average; the book's default is 0.999.
    pub beta2: f64,
    /// `ε`, which keeps the division finite: 1e-7, as in the book.
    pub eps: f64,
    /// The L2 weight decay `λ` (0: none), added to the gradient (not AdamW's decoupled decay).
    pub weight_decay: f64,
    /// The learning-rate schedule (constant by default).
    pub schedule: Schedule,
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
            schedule: Schedule::constant(),
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
}

impl Default for Adam {
    /// The book's defaults: `lr = 0.001`, `β₁ = 0.9`, `β₂ = 0.999`, `ε = 1e-7`.
    fn default() -> Self {
        Adam::new(0.001)
    }
}

impl Optimizer for Adam {
    fn step<N: Network + ?Sized>(&mut self, net: &mut N) {
        // The scheduled rate of this step, then `t` is the step's number from 1.
        let lr = self.take_lr();
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let t = self.t as f64;
        let lr_t = lr * (1.0 - b2.powf(t)).sqrt() / (1.0 - b1.powf(t));
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

    /// The same with base learning rate `lr`.
    pub fn with_lr(mut self, lr: f64) -> Self {
        self.set_lr(lr);
        self
    }

    /// The base learning rate `η`, which the schedule scales ([`Optimizer::lr`] is the scaled
    /// rate of the next step).
    pub fn base_lr(&self) -> f64 {
        each!(self, o => o.lr)
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> Schedule {
        each!(self, o => o.schedule)
    }

    /// The same with the learning-rate schedule `schedule`, from the next step on.
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        each!(&mut self, o => o.schedule = schedule);
        self
    }

    /// Steps taken since creation or the last [`reset`](Optimizer::reset).
    pub fn steps(&self) -> u64 {
        each!(self, o => o.t)
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
    /// The name and hyperparameters, e.g. `adam(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7)`,
    /// with the base learning rate; a nonzero weight decay and a schedule other than the constant
    /// one are shown last.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(lr={}", self.name(), self.base_lr())?;
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
        if self.schedule() != Schedule::constant() {
            write!(f, ", schedule={}", self.schedule())?;
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
        each!(self, o => Optimizer::lr(o))
    }

    fn set_lr(&mut self, lr: f64) {
        each!(self, o => Optimizer::set_lr(o, lr))
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

#[cfg(test)]
mod tests {
    use ndarray::{Array2, Ix1, Ix2, array};

    use super::*;
    use crate::network::check_input;
    use crate::param::{Param, ParamMut, ParamRef};
    use crate::{Init, Schedule};

    /// A network whose backward pass always gives the same gradients: `W` (2×1, a weight, so
    /// weight decay applies) gets `[0.5, −1]` and `b` (a bias) gets `[2]`, whatever the batch. So
    /// each step moves the parameters by the learning rate alone, and steps are easy to add up.
    struct Fixed {
        w: Param<f64, Ix2>,
        b: Param<f64, Ix1>,
        out: Array2<f64>,
    }

    const GRADS: [f64; 3] = [0.5, -1.0, 2.0];

    impl Fixed {
        /// `W = [1, 2]`, `b = [0.5]`.
        fn new() -> Self {
            let mut net = Fixed {
                w: Param::zeros("w", (2, 1)),
                b: Param::zeros("b", 1),
                out: Array2::zeros((0, 1)),
            };
            net.w.value_mut().assign(&array![[1.0], [2.0]]);
            net.b.value_mut()[0] = 0.5;
            net
        }

        /// `[w0, w1 | b]`.
        fn values(&self) -> [f64; 3] {
            let w = self.w.value();
            [w[[0, 0]], w[[1, 0]], self.b.value()[0]]
        }
    }

    impl Network for Fixed {
        type Elem = f64;
        const NAME: &'static str = "Fixed";
        const INPUT: usize = 2;
        const OUTPUT: usize = 1;
        const PARAMS: usize = 3;
        const PARAM_NAMES: &'static [&'static str] = &["w", "b"];
        const DOT: &'static str = "digraph Fixed {}";
        const TOPOLOGY: &'static str = "fixed";
        const GRAPH: crate::graph::Graph = crate::graph::Graph {
            name: "Fixed",
            values: &[&[2], &[1]],
            inputs: &[crate::graph::GraphInput {
                name: "input",
                value: 0,
            }],
            nodes: &[crate::graph::GraphNode {
                op: "affine",
                name: "affine0",
                args: &[
                    crate::graph::GraphArg {
                        name: "in",
                        value: crate::graph::ArgValue::Whole(2),
                    },
                    crate::graph::GraphArg {
                        name: "out",
                        value: crate::graph::ArgValue::Whole(1),
                    },
                ],
                inputs: &[0],
                output: 1,
                loss: false,
            }],
            output: 1,
        };
        const PARAM_BYTES: usize = 24;
        const ACTIVATION_BYTES_INFERENCE: usize = 8;
        const ACTIVATION_BYTES_TRAINING: usize = 8;
        const FLOPS_FORWARD: u64 = 0;
        const FLOPS_TRAINING: u64 = 0;

        fn init(&mut self, _: Init, _: u64) {}

        fn forward(&mut self, x: ArrayView2<'_, f64>) -> Result<ArrayView2<'_, f64>> {
            check_input(Self::NAME, &x, Self::INPUT)?;
            self.out = Array2::zeros((x.nrows(), 1));
            Ok(self.out.view())
        }

        fn output(&self) -> ArrayView2<'_, f64> {
            self.out.view()
        }

        fn backward_from(&mut self, _: ArrayView2<'_, f64>) -> Result<()> {
            self.w.grad_mut().assign(&array![[GRADS[0]], [GRADS[1]]]);
            self.b.grad_mut()[0] = GRADS[2];
            Ok(())
        }

        fn param(&self, _: &str) -> Result<ParamRef<'_, f64>> {
            unimplemented!("not needed by the optimisers")
        }

        fn param_mut(&mut self, _: &str) -> Result<ParamMut<'_, f64>> {
            unimplemented!("not needed by the optimisers")
        }

        fn for_each_param(&self, f: &mut dyn FnMut(ParamRef<'_, f64>)) {
            f(self.w.view());
            f(self.b.view());
        }

        fn for_each_param_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_, f64>)) {
            f(self.w.view_mut());
            f(self.b.view_mut());
        }
    }

    impl Trainable for Fixed {
        type Targets<'t> = &'t [usize];

        fn loss(&mut self, x: ArrayView2<'_, f64>, _: &[usize]) -> Result<f64> {
            self.forward(x)?;
            Ok(0.0)
        }

        fn backward(&mut self) -> Result<()> {
            self.backward_from(ArrayView2::from_shape((0, 1), &[]).unwrap())
        }
    }

    /// One training step of `opt` on `net`, on a batch of one sample.
    fn train(opt: &mut impl Optimizer, net: &mut Fixed) -> Result<f64> {
        opt.train_step(net, array![[0.0, 0.0]].view(), &[0][..])
    }

    #[track_caller]
    fn assert_close(actual: [f64; 3], expected: [f64; 3]) {
        for (a, e) in actual.iter().zip(&expected) {
            assert!(
                (a - e).abs() <= 1e-12,
                "got {actual:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn sgd_takes_the_scheduled_rate_of_each_step() {
        // ×0.5 every 2 steps from η = 0.1: rates 0.1, 0.1, 0.05, so after 3 steps each parameter
        // has moved 0.25·G: W = [1 − 0.125, 2 + 0.25], b = 0.5 − 0.5.
        let schedule = Schedule::step(2, 0.5).unwrap();
        let expected = [0.875, 2.25, 0.0];
        let mut sgd = Sgd::new(0.1).with_schedule(schedule);
        let mut net = Fixed::new();
        let mut next = Vec::new();
        for _ in 0..3 {
            net.backward().unwrap();
            sgd.step(&mut net);
            next.push(sgd.lr());
        }
        assert_close(net.values(), expected);
        // `lr` is the rate of the next step: steps 1, 2, 3 take 0.1, 0.05, 0.05.
        assert_eq!(next, [0.1, 0.05, 0.05]);
        assert_eq!((sgd.steps(), sgd.lr), (3, 0.1));

        // The same through `train_step`, which takes `Trainable::sgd_step`.
        let mut sgd = Sgd::new(0.1).with_schedule(schedule);
        let mut net = Fixed::new();
        for _ in 0..3 {
            train(&mut sgd, &mut net).unwrap();
        }
        assert_close(net.values(), expected);
        assert_eq!(sgd.steps(), 3);

        // A warm-up of 4 steps: rates 0.025, 0.05, so after 2 steps 0.075·G.
        let mut sgd = Sgd::new(0.1).with_schedule(Schedule::constant().with_warmup(4));
        let mut net = Fixed::new();
        train(&mut sgd, &mut net).unwrap();
        train(&mut sgd, &mut net).unwrap();
        assert_close(net.values(), [1.0 - 0.0375, 2.075, 0.35]);
    }

    #[test]
    fn sgd_with_weight_decay_takes_the_scheduled_rate() {
        // `Trainable::sgd_step_with_decay`, λ = 0.5, rates 0.1 then 0.05 (×0.5 every step):
        //   w0: g = 0.5 + 0.5·1 = 1 → 1 − 0.1 = 0.9; g = 0.5 + 0.45 = 0.95 → 0.9 − 0.0475 = 0.8525
        //   w1: g = −1 + 0.5·2 = 0 → 2, twice
        //   b:  no decay: 0.5 − 0.2 = 0.3, then 0.3 − 0.05·2 = 0.2
        let mut sgd = Sgd::new(0.1)
            .with_weight_decay(0.5)
            .with_schedule(Schedule::exponential(0.5).unwrap());
        let mut net = Fixed::new();
        train(&mut sgd, &mut net).unwrap();
        assert_close(net.values(), [0.9, 2.0, 0.3]);
        train(&mut sgd, &mut net).unwrap();
        assert_close(net.values(), [0.8525, 2.0, 0.2]);
    }

    #[test]
    fn every_optimiser_follows_its_schedule() {
        // Each optimiser with a schedule takes the steps of one without, whose `lr` is set by hand
        // to the schedule's rate before each step: bit for bit, by `step` and by `train_step`.
        let schedule = Schedule::cosine(5, 0.01).unwrap().with_warmup(2);
        for name in Optim::NAMES {
            for weight_decay in [0.0, 0.5] {
                for fused in [false, true] {
                    let base = Optim::from_name(name)
                        .unwrap()
                        .with_lr(0.1)
                        .with_weight_decay(weight_decay);
                    let mut scheduled = base.clone().with_schedule(schedule);
                    let mut by_hand = base;
                    let (mut a, mut b) = (Fixed::new(), Fixed::new());
                    for t in 0..9 {
                        let lr = schedule.lr(0.1, t);
                        assert_eq!(scheduled.lr(), lr, "{name} step {t}");
                        by_hand.set_lr(lr);
                        if fused {
                            train(&mut scheduled, &mut a).unwrap();
                            train(&mut by_hand, &mut b).unwrap();
                        } else {
                            a.backward().unwrap();
                            b.backward().unwrap();
                            scheduled.step(&mut a);
                            by_hand.step(&mut b);
                        }
                        assert_eq!(a.values(), b.values(), "{name} λ={weight_decay} step {t}");
                    }
                    assert_eq!(scheduled.steps(), 9);
                    assert_eq!(scheduled.base_lr(), 0.1);
                }
            }
        }
    }

    #[test]
    fn reset_restarts_the_schedule_and_set_lr_sets_the_base() {
        let schedule = Schedule::step(1, 0.5).unwrap();
        for name in Optim::NAMES {
            let mut opt = Optim::from_name(name)
                .unwrap()
                .with_lr(0.1)
                .with_schedule(schedule);
            let mut net = Fixed::new();
            train(&mut opt, &mut net).unwrap();
            train(&mut opt, &mut net).unwrap();
            assert_eq!((opt.steps(), opt.lr()), (2, 0.025), "{name}");

            // A new base rate: the schedule goes on from step 2.
            opt.set_lr(1.0);
            assert_eq!(
                (opt.steps(), opt.lr(), opt.base_lr()),
                (2, 0.25, 1.0),
                "{name}"
            );

            opt.reset();
            assert_eq!((opt.steps(), opt.lr()), (0, 1.0), "{name}");
            let mut net = Fixed::new();
            train(&mut opt, &mut net).unwrap();
            // The first step again: η = 1, whatever the optimiser's rule makes of it.
            let mut fresh = Optim::from_name(name).unwrap().with_lr(1.0);
            let mut reference = Fixed::new();
            train(&mut fresh, &mut reference).unwrap();
            assert_eq!(net.values(), reference.values(), "{name}");
        }
    }

    #[test]
    fn a_step_that_errs_is_not_counted() {
        for name in Optim::NAMES {
            let mut opt = Optim::from_name(name)
                .unwrap()
                .with_schedule(Schedule::exponential(0.5).unwrap());
            let mut net = Fixed::new();
            let wide = array![[0.0, 0.0, 0.0]];
            assert!(opt.train_step(&mut net, wide.view(), &[0][..]).is_err());
            assert_eq!(opt.steps(), 0, "{name}");
            assert_eq!(net.values(), Fixed::new().values(), "{name}");
        }
    }

    #[test]
    fn display_shows_a_schedule() {
        let optim = Optim::from_name("sgd")
            .unwrap()
            .with_lr(0.1)
            .with_schedule(Schedule::step(600, 0.5).unwrap());
        assert_eq!(
            optim.to_string(),
            "sgd(lr=0.1, schedule=step(every=600, factor=0.5))"
        );
        // The base rate, not the rate of the next step.
        let mut optim = optim.with_schedule(Schedule::constant().with_warmup(10));
        optim.step(&mut Fixed::new());
        assert_eq!(
            optim.to_string(),
            "sgd(lr=0.1, schedule=warmup(10) then constant)"
        );
        assert_eq!(optim.schedule(), Schedule::constant().with_warmup(10));
    }
}
