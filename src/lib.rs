//! chainrule: a static-graph neural-network compiler.
//!
//! Write a network as a chain of layers; the [`network!`] macro checks every shape at compile time
//! and generates a struct with specialised forward and backward code, which the runtime's kernels
//! execute on ndarray buffers.
//!
//! ```
//! use chainrule::prelude::*;
//! use chainrule::ndarray::array;
//!
//! network! {
//!     /// The two-layer net of the backprop chapter.
//!     pub struct TwoLayerNet {
//!         affine(784, 50) -> relu -> affine(50, 10) -> softmax_cross_entropy
//!     }
//! }
//!
//! let mut net = TwoLayerNet::new(Init::He, 42);
//! assert_eq!(TwoLayerNet::PARAMS, 784 * 50 + 50 + 50 * 10 + 10);
//!
//! // The expression form; `: f64` picks the element type (f32 is the default).
//! let mut tiny = network!(f64: affine(2, 3) -> sigmoid -> affine(3, 1) -> mse);
//! let x = array![[0.0, 1.0], [1.0, 0.0]];
//! let t = array![[1.0], [1.0]];
//! let loss = tiny.gradient(x.view(), t.view()).unwrap();
//! assert!(loss > 0.0);
//! Sgd::new(0.5).step(&mut tiny);
//! assert!(tiny.loss(x.view(), t.view()).unwrap() < loss);
//! ```
//!
//! # The language
//!
//! - Item form: `network! { #[attrs] VIS struct NAME { LAYERS } }`, or `struct NAME: f64 { ... }`
//!   for `f64` elements. Attributes (doc comments among them) and visibility pass through.
//! - Expression form: `network!(LAYERS)` or `network!(f64: LAYERS)`: a value of an unnamed network
//!   type, initialised as [`Default`] does (the book's normal, std 0.01, seed 0).
//! - `LAYERS` is `layer -> layer -> ...`. Layers: `affine(in, out)`, `relu`, `sigmoid`, `tanh`,
//!   `leaky_relu(alpha = 0.01)`, `elu(alpha = 1.0)`, `softmax`, and at the end at most one loss:
//!   `softmax_cross_entropy` (alias `softmax_with_loss`), which takes class indices, or `mse`,
//!   which takes target values. Arguments go in order or by name (`leaky_relu(alpha = 0.1)`);
//!   those with a default may be left out.
//! - Values have a shape of rank 1 to 3 per sample, known at compile time: `input(784)` or
//!   `input(1, 28, 28)` (channels × height × width, stored as rows of 784 values). A chain may
//!   start from its input: `input(1, 28, 28) -> relu -> ...`.
//! - Graphs: statements separated by `;`, each a chain that may be named (`h = x -> relu`) and may
//!   start from a declared input (`x = input(784)`), a named value, or a merge of named values
//!   (`add`, `sub`, `mul`, `div`, `concat`); the last statement is the output. `#[grad]` on an
//!   input asks for its gradient. See the README for a residual block and the seed's shopping
//!   bill.
//! - `#[gradcheck]` on the item form generates a test of the network's gradients (in `f64`,
//!   against central differences) in the crate that defines it.
//!
//! # Losses
//!
//! Both report the mean over the batch of `n` samples.
//! - `softmax_cross_entropy`: `L = −(1/n) Σ_i log softmax(x_i)[t_i]`, computed stably.
//! - `mse`: `L = (1/(2n)) Σ_i Σ_j (y_ij − t_ij)²`: half the squared distance of each sample (the
//!   book's `mean_squared_error`), averaged over the batch. Its gradient is `(y − t) / n`.

#[doc(hidden)]
pub use chainrule_macro::__op_names;
pub use chainrule_macro::network;
pub use chainrule_runtime::*;
/// The ndarray version chainrule's API uses.
pub use ndarray;

/// What network code usually needs: the macro, the traits, initialisers and optimisers.
pub mod prelude {
    pub use crate::network;
    pub use chainrule_runtime::optim::{Adam, Optim, Optimizer, Sgd};
    pub use chainrule_runtime::{Init, Network, Schedule, Target, Trainable, WeightPrecision};
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
