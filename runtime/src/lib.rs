//! The runtime of chainrule: everything a compiled network needs at run time, and nothing that knows
//! the `network!` language.
//!
//! - [`kernels`]: forward and backward kernels for each op, on ndarray views, writing into buffers
//!   they are given (no allocation).
//! - [`Param`]: a parameter's value and gradient; [`Init`]: how weights start.
//! - [`Network`] and [`Trainable`]: the traits every generated network implements, so training code
//!   can be generic.
//! - [`optim`]: the book's optimisers (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam) behind one
//!   [`Optimizer`](optim::Optimizer) trait; [`Schedule`]: learning-rate schedules they take (step,
//!   exponential, cosine, warm-up); [`gradcheck`]: central-difference gradient checking.
//! - [`data`]: MNIST's IDX files (raw or gzip) into a [`Dataset`](data::Dataset), and seeded,
//!   shuffled mini-batches.
//! - [`checkpoint`]: parameters saved to and loaded from safetensors files; [`train`]: evaluation
//!   helpers for training loops; [`graph`]: a network's graph as data, for exporters.
//!
//! Everything here can be used by hand; the macro is what makes it pleasant and fast.

pub mod checkpoint;
mod conv;
pub mod data;
mod element;
mod error;
mod gemm;
pub mod gradcheck;
pub mod graph;
pub mod init;
pub mod kernels;
mod network;
mod norm;
pub mod optim;
mod param;
pub mod pool;
mod precision;
pub mod schedule;
mod target;
pub mod train;
mod update;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use element::Element;
pub use error::{DataError, Error, Result};
pub use init::{Init, ParamInit};
pub use network::{BufferMut, BufferRef, Network, Trainable, ValueRef};
pub use param::{Param, ParamMut, ParamRef};
pub use precision::WeightPrecision;
pub use schedule::Schedule;
pub use target::{Target, argmax_rows};
