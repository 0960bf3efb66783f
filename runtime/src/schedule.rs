//! Learning-rate schedules: how the learning rate changes over training, as a value an optimiser
//! takes (`with_schedule` on each of [`optim`](crate::optim)'s types).
//!
//! A [`Schedule`] maps the base learning rate `η` (the optimiser's `lr`) and the number `t` of a
//! step, counted in optimiser steps (training batches) from 0, to the learning rate `η_t` that step
//! uses. The formulas are PyTorch's schedulers of the same names, written out on each
//! constructor; a decay per epoch is one every `batches per epoch` steps.
//!
//! The constructors check their arguments and return [`Error::InvalidSchedule`] for a value that
//! makes no schedule (a factor that is not a positive number, a period of 0 steps, a negative
//! minimum), so that a bad setting fails where it is made, not as a NaN learning rate later.

use std::f64::consts::PI;
use std::fmt;

use crate::error::{Error, Result};

/// A learning-rate schedule: the learning rate of each step from the base rate `η`.
///
/// Made by [`constant`](Schedule::constant) (the default), [`step`](Schedule::step),
/// [`exponential`](Schedule::exponential), [`exponential_every`](Schedule::exponential_every) or
/// [`cosine`](Schedule::cosine), with an optional linear warm-up in front
/// ([`with_warmup`](Schedule::with_warmup)); [`lr`](Schedule::lr) gives `η_t`.
///
/// ```
/// use chainrule_runtime::Schedule;
///
/// // ×0.5 every 3 steps, after 2 steps of warm-up.
/// let s = Schedule::step(3, 0.5)?.with_warmup(2);
/// let lrs: Vec<f64> = (0..8).map(|t| s.lr(0.1, t)).collect();
/// assert_eq!(lrs, [0.05, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05]);
/// # Ok::<(), chainrule_runtime::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Schedule {
    kind: Kind,
    /// Steps of linear warm-up before `kind` starts (0: none).
    warmup: u64,
}

/// What a schedule does after its warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
enum Kind {
    #[default]
    Constant,
    Step {
        every: u64,
        factor: f64,
    },
    Exponential {
        every: u64,
        factor: f64,
    },
    Cosine {
        total: u64,
        min_lr: f64,
    },
}

impl Schedule {
    /// The learning rate of every step is `η`: `η_t = η`, exactly. The default, and what an
    /// optimiser without a schedule has.
    pub const fn constant() -> Schedule {
        Schedule {
            kind: Kind::Constant,
            warmup: 0,
        }
    }

    /// Step decay (PyTorch's `StepLR`): `η_t = η·factor^⌊t / every⌋`, i.e. `×factor` at steps
    /// `every`, `2·every`, … . With `every` the batches per epoch, the learning rate changes
    /// once an epoch.
    ///
    /// Errs unless `every ≥ 1` and `factor` is finite and above 0 (above 1 makes it grow).
    pub fn step(every: u64, factor: f64) -> Result<Schedule> {
        check_every("step", every)?;
        check_factor("step", factor)?;
        Ok(Kind::Step { every, factor }.schedule())
    }

    /// Exponential decay (PyTorch's `ExponentialLR`): `η_t = η·factor^t`, `×factor` every step.
    ///
    /// Errs unless `factor` is finite and above 0.
    pub fn exponential(factor: f64) -> Result<Schedule> {
        Schedule::exponential_every(1, factor)
    }

    /// Exponential decay of `×factor` per `every` steps, spread evenly over them:
    /// `η_t = η·factor^(t / every)` with a real exponent, so `×factor^(1/every)` every step. With
    /// `every` the batches per epoch, `factor` is the decay per epoch, applied smoothly.
    ///
    /// Errs unless `every ≥ 1` and `factor` is finite and above 0.
    pub fn exponential_every(every: u64, factor: f64) -> Result<Schedule> {
        check_every("exponential", every)?;
        check_factor("exponential", factor)?;
        Ok(Kind::Exponential { every, factor }.schedule())
    }

    /// Cosine annealing (PyTorch's `CosineAnnealingLR`, its closed form) from `η` down to
    /// `min_lr` over `total` steps: `η_t = min_lr + (η − min_lr)·(1 + cos(π·t / total)) / 2` for
    /// `t ≤ total`, then `min_lr` for every later step (it does not rise again). So `η_0 = η`,
    /// `η_{total/2}` is halfway, `η_total = min_lr`. `min_lr` is a learning rate, not a fraction
    /// of `η`.
    ///
    /// Errs unless `total ≥ 1` and `min_lr` is finite and 0 or more.
    pub fn cosine(total: u64, min_lr: f64) -> Result<Schedule> {
        if total == 0 {
            return Err(invalid("cosine", "total", "at least 1 step", total));
        }
        if !(min_lr.is_finite() && min_lr >= 0.0) {
            return Err(invalid(
                "cosine",
                "min_lr",
                "a finite number, 0 or more",
                min_lr,
            ));
        }
        Ok(Kind::Cosine { total, min_lr }.schedule())
    }

    /// The same after a linear warm-up of `steps` steps: `η_t = η·(t + 1) / steps` for
    /// `t < steps`, rising from `η / steps` at step 0 to `η` at step `steps − 1` (PyTorch's
    /// `LinearLR` with `start_factor = 1/steps` over `steps − 1` steps). Then the schedule runs
    /// with its own count starting from 0: step `t ≥ steps` takes its rate at `t − steps` (as
    /// PyTorch's `SequentialLR` does), so a cosine's `total` is what follows the warm-up.
    /// `with_warmup(0)` takes the warm-up away; a second call replaces the first.
    pub fn with_warmup(mut self, steps: u64) -> Schedule {
        self.warmup = steps;
        self
    }

    /// The steps of warm-up (0: none).
    pub fn warmup(&self) -> u64 {
        self.warmup
    }

    /// The learning rate of step `t` (from 0) for the base rate `base`, by the formulas above.
    pub fn lr(&self, base: f64, t: u64) -> f64 {
        if t < self.warmup {
            // The fraction first, so that the last warm-up step is `base` exactly.
            return base * ((t + 1) as f64 / self.warmup as f64);
        }
        let t = t - self.warmup;
        match self.kind {
            Kind::Constant => base,
            Kind::Step { every, factor } => base * factor.powf((t / every) as f64),
            Kind::Exponential { every, factor } => base * factor.powf(t as f64 / every as f64),
            Kind::Cosine { total, min_lr } => {
                if t >= total {
                    min_lr
                } else {
                    let cos = (PI * t as f64 / total as f64).cos();
                    min_lr + (base - min_lr) * (1.0 + cos) / 2.0
                }
            }
        }
    }
}

impl Kind {
    /// The schedule of this kind, without a warm-up.
    fn schedule(self) -> Schedule {
        Schedule {
            kind: self,
            warmup: 0,
        }
    }
}

impl fmt::Display for Schedule {
    /// The kind and its arguments, e.g. `step(every=600, factor=0.5)`, after
    /// `warmup(100) then ` if there is a warm-up.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.warmup > 0 {
            write!(f, "warmup({}) then ", self.warmup)?;
        }
        match self.kind {
            Kind::Constant => f.write_str("constant"),
            Kind::Step { every, factor } => write!(f, "step(every={every}, factor={factor})"),
            Kind::Exponential { every: 1, factor } => write!(f, "exp(factor={factor})"),
            Kind::Exponential { every, factor } => {
                write!(f, "exp(factor={factor}, every={every})")
            }
            Kind::Cosine { total, min_lr } => write!(f, "cosine(total={total}, min_lr={min_lr})"),
        }
    }
}

fn check_every(schedule: &'static str, every: u64) -> Result<()> {
    if every == 0 {
        return Err(invalid(schedule, "every", "at least 1 step", every));
    }
    Ok(())
}

fn check_factor(schedule: &'static str, factor: f64) -> Result<()> {
    if !(factor.is_finite() && factor > 0.0) {
        return Err(invalid(
            schedule,
            "factor",
            "a finite number above 0",
            factor,
        ));
    }
    Ok(())
}

fn invalid(
    schedule: &'static str,
    parameter: &'static str,
    requirement: &'static str,
    value: impl fmt::Display,
) -> Error {
    Error::InvalidSchedule {
        schedule,
        parameter,
        requirement,
        value: value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `s.lr(base, t)` for `t` in `0..n`.
    fn lrs(s: Schedule, base: f64, n: u64) -> Vec<f64> {
        (0..n).map(|t| s.lr(base, t)).collect()
    }

    #[track_caller]
    fn assert_close(actual: &[f64], expected: &[f64]) {
        assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
        for (a, e) in actual.iter().zip(expected) {
            assert!(
                (a - e).abs() <= 1e-15 * e.abs().max(1.0),
                "got {actual:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn constant_is_the_base_rate_exactly() {
        assert_eq!(Schedule::default(), Schedule::constant());
        let s = Schedule::constant();
        for t in [0, 1, 599, 600, u64::MAX] {
            assert_eq!(s.lr(0.1, t), 0.1);
        }
        assert_eq!(s.warmup(), 0);
    }

    #[test]
    fn step_decays_at_each_multiple_of_every() {
        // 0.1·0.5^⌊t/3⌋: 0.1 for t = 0, 1, 2; 0.05 from t = 3; 0.025 from 6; 0.0125 at 9.
        let s = Schedule::step(3, 0.5).unwrap();
        assert_eq!(
            lrs(s, 0.1, 10),
            [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125]
        );
        // A factor above 1 grows the rate.
        assert_eq!(
            lrs(Schedule::step(1, 2.0).unwrap(), 1.0, 4),
            [1.0, 2.0, 4.0, 8.0]
        );
    }

    #[test]
    fn exponential_multiplies_every_step() {
        // 1·0.5^t.
        let s = Schedule::exponential(0.5).unwrap();
        assert_eq!(lrs(s, 1.0, 4), [1.0, 0.5, 0.25, 0.125]);
        assert_eq!(s.lr(1.0, 10), 1.0 / 1024.0);
        assert_eq!(s, Schedule::exponential_every(1, 0.5).unwrap());
    }

    #[test]
    fn exponential_every_spreads_the_factor_over_its_steps() {
        // 1·0.5^(t/4): 0.5^¼ = 0.8408964…, 0.5^½ = 0.7071067…, 0.5^¾ = 0.5946035…, then 0.5 at
        // t = 4 and 0.25 at t = 8.
        let s = Schedule::exponential_every(4, 0.5).unwrap();
        assert_close(
            &lrs(s, 1.0, 5),
            &[
                1.0,
                0.840_896_415_253_714_6,
                std::f64::consts::FRAC_1_SQRT_2,
                0.594_603_557_501_360_6,
                0.5,
            ],
        );
        assert_eq!(s.lr(1.0, 8), 0.25);
    }

    #[test]
    fn cosine_halves_at_the_midpoint_and_stays_at_the_minimum() {
        // min 0.1, base 1.1, over 10 steps: 1.1 at t = 0, 0.6 at t = 5, 0.1 at t = 10 and after.
        // t = 1: 0.1 + 1·(1 + cos(π/10))/2 = 0.1 + (1 + 0.9510565…)/2 = 1.0755282….
        let s = Schedule::cosine(10, 0.1).unwrap();
        assert_close(
            &[s.lr(1.1, 0), s.lr(1.1, 1), s.lr(1.1, 5), s.lr(1.1, 10)],
            &[1.1, 1.075_528_258_147_577, 0.6, 0.1],
        );
        assert_eq!(s.lr(1.1, 10), 0.1);
        assert_eq!(s.lr(1.1, 11), 0.1);
        assert_eq!(s.lr(1.1, u64::MAX), 0.1);
        // To 0 over 4 steps: (1 + cos(πt/4))/2 = 1, 0.8535534, 0.5, 0.1464466, 0.
        let s = Schedule::cosine(4, 0.0).unwrap();
        assert_close(
            &lrs(s, 1.0, 6),
            &[
                1.0,
                0.853_553_390_593_273_8,
                0.5,
                0.146_446_609_406_726_3,
                0.0,
                0.0,
            ],
        );
    }

    #[test]
    fn warmup_rises_linearly_then_hands_over() {
        // base·(t + 1)/4 for t < 4: 0.025, 0.05, 0.075, then 0.1 at the last warm-up step, exactly.
        let s = Schedule::constant().with_warmup(4);
        let got = lrs(s, 0.1, 6);
        assert_close(&got, &[0.025, 0.05, 0.075, 0.1, 0.1, 0.1]);
        assert_eq!(got[3], 0.1);
        assert_eq!(s.warmup(), 4);

        // Step decay ×0.5 every 2 steps after 3 of warm-up: its count starts at t = 3.
        let s = Schedule::step(2, 0.5).unwrap().with_warmup(3);
        assert_close(
            &lrs(s, 1.0, 8),
            &[1.0 / 3.0, 2.0 / 3.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.25],
        );

        // Cosine over 4 steps after 2 of warm-up: its midpoint is t = 4, its end t = 6.
        let s = Schedule::cosine(4, 0.0).unwrap().with_warmup(2);
        assert_close(
            &[s.lr(1.0, 0), s.lr(1.0, 1), s.lr(1.0, 2)],
            &[0.5, 1.0, 1.0],
        );
        assert_close(
            &[s.lr(1.0, 4), s.lr(1.0, 6), s.lr(1.0, 7)],
            &[0.5, 0.0, 0.0],
        );

        // One step of warm-up is the base rate; none is the schedule as it was.
        let s = Schedule::exponential(0.5).unwrap();
        assert_eq!(s.with_warmup(1).lr(1.0, 0), 1.0);
        assert_eq!(s.with_warmup(1).lr(1.0, 2), 0.5);
        assert_eq!(s.with_warmup(3).with_warmup(0), s);
    }

    #[test]
    fn invalid_values_are_refused_at_construction() {
        let bad_factors = [0.0, -0.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
        for factor in bad_factors {
            for made in [
                Schedule::step(3, factor),
                Schedule::exponential(factor),
                Schedule::exponential_every(3, factor),
            ] {
                let err = made.unwrap_err();
                assert!(
                    matches!(
                        err,
                        Error::InvalidSchedule {
                            parameter: "factor",
                            ..
                        }
                    ),
                    "{factor}: {err:?}"
                );
            }
        }
        for made in [Schedule::step(0, 0.5), Schedule::exponential_every(0, 0.5)] {
            assert!(matches!(
                made.unwrap_err(),
                Error::InvalidSchedule {
                    parameter: "every",
                    ..
                }
            ));
        }
        assert!(matches!(
            Schedule::cosine(0, 0.0).unwrap_err(),
            Error::InvalidSchedule {
                parameter: "total",
                ..
            }
        ));
        for min_lr in [-1e-3, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                Schedule::cosine(10, min_lr).unwrap_err(),
                Error::InvalidSchedule {
                    parameter: "min_lr",
                    ..
                }
            ));
        }

        assert_eq!(
            Schedule::step(600, -0.5).unwrap_err(),
            Error::InvalidSchedule {
                schedule: "step",
                parameter: "factor",
                requirement: "a finite number above 0",
                value: "-0.5".into(),
            }
        );
        assert_eq!(
            Schedule::step(600, f64::NAN).unwrap_err().to_string(),
            "step schedule: factor must be a finite number above 0, not NaN"
        );
        assert_eq!(
            Schedule::cosine(0, 0.0).unwrap_err().to_string(),
            "cosine schedule: total must be at least 1 step, not 0"
        );

        // The edges that are valid.
        assert!(Schedule::step(1, f64::MIN_POSITIVE).is_ok());
        assert!(Schedule::cosine(1, 0.0).is_ok());
    }

    #[test]
    fn display_names_the_schedule() {
        let shown = [
            Schedule::constant(),
            Schedule::step(600, 0.5).unwrap(),
            Schedule::exponential(0.99).unwrap(),
            Schedule::exponential_every(600, 0.5).unwrap(),
            Schedule::cosine(10_000, 0.0).unwrap().with_warmup(100),
        ]
        .map(|s| s.to_string());
        assert_eq!(
            shown,
            [
                "constant",
                "step(every=600, factor=0.5)",
                "exp(factor=0.99)",
                "exp(factor=0.5, every=600)",
                "warmup(100) then cosine(total=10000, min_lr=0)",
            ]
        );
    }
}
