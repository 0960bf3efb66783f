//! The vocabulary of operations: one table, one row per op.
//!
//! A row says everything the rest of the pipeline needs: the op's name (and aliases), its
//! arguments with their kinds, defaults and valid ranges, where its inputs come from, its shape
//! rule, its parameters and how they start, its cost, the runtime kernels that run its forward and
//! backward passes (with the local derivative they implement), and which other ops it can fuse
//! with. Adding an op means adding a row here, a kernel pair in `runtime/src/kernels.rs`, a
//! gradient-check test, and the op in the differential test's reference evaluator.

use crate::shape::Shape;

/// One operation of the `network!` language.
#[derive(Debug)]
pub struct OpSpec {
    /// The name written in a network description.
    pub name: &'static str,
    /// Other accepted spellings.
    pub aliases: &'static [&'static str],
    /// Names other libraries use for it (lowercase): not accepted, but suggested when written.
    pub elsewhere: &'static [&'static str],
    /// Its arguments, in the order they are written when not named.
    pub args: &'static [ArgSpec],
    /// Where its inputs come from.
    pub inputs: Inputs,
    /// Its output's shape from its inputs' shapes and its arguments, or why they do not fit.
    pub shape: ShapeRule,
    /// The input shape it fixes when it is the first layer of a chain of unknown input: `affine`
    /// fixes `in` features; most ops take any shape and fix none.
    pub fixes_input: Option<fn(&Args) -> Shape>,
    /// The output shape its arguments alone fix, if they do (`affine`'s `out` features): where
    /// its input is unknown or does not fit, its consumers are still checked against it.
    pub fixes_output: Option<fn(&Args) -> Shape>,
    /// Its trainable parameters.
    pub params: &'static [ParamSpec],
    /// The runtime kernels, and what they compute.
    pub kernels: Kernels,
    /// Floating-point operations per sample.
    pub cost: CostRule,
}

/// An argument of an op: written in order (`affine(784, 50)`) or by name (`leaky_relu(alpha = 0.1)`);
/// one with a default may be left out.
#[derive(Debug)]
pub struct ArgSpec {
    pub name: &'static str,
    pub kind: ArgKind,
    /// The value when it is not written; `None`: it must be written.
    pub default: Option<ArgValue>,
}

/// What an argument may be.
#[derive(Debug, Clone, Copy)]
pub enum ArgKind {
    /// A whole number of at least `min` (a dimension has `min: 1`).
    Whole { min: usize },
    /// A finite real number within the bounds.
    Real { min: Bound, max: Bound },
    /// One to three dimensions, the rest of the arguments: the shape of an `input`.
    Dims,
    /// `true` or `false`.
    Flag,
}

/// One end of a real argument's range.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    Unbounded,
    /// The bound itself is allowed.
    Inclusive(f64),
    /// Only values strictly inside are allowed.
    Exclusive(f64),
}

/// An argument's value, once read.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    Whole(usize),
    Real(f64),
    Dims(Vec<usize>),
    Flag(bool),
    /// As a default only: the value of the argument at this index (a pool's `stride` is its
    /// `window` unless written).
    SameAs(usize),
}

/// An op's arguments, one per [`ArgSpec`], defaults filled in.
#[derive(Debug, Clone)]
pub struct Args(pub Vec<ArgValue>);

impl Args {
    /// The whole-number argument at `index`.
    pub fn whole(&self, index: usize) -> usize {
        match self.0[index] {
            ArgValue::Whole(value) => value,
            ref other => unreachable!("argument {index} is {other:?}, not a whole number"),
        }
    }

    /// The flag argument at `index`.
    pub fn flag(&self, index: usize) -> bool {
        match self.0[index] {
            ArgValue::Flag(value) => value,
            ref other => unreachable!("argument {index} is {other:?}, not a flag"),
        }
    }

    /// Every real argument, in order: what an activation's kernels take after their arrays.
    pub fn reals(&self) -> impl Iterator<Item = f64> + '_ {
        self.0.iter().filter_map(|value| match value {
            ArgValue::Real(value) => Some(*value),
            _ => None,
        })
    }

    /// The dimensions argument, if the op has one.
    pub fn dims(&self) -> Option<&[usize]> {
        self.0.iter().find_map(|value| match value {
            ArgValue::Dims(dims) => Some(&dims[..]),
            _ => None,
        })
    }
}

/// Where an op's inputs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inputs {
    /// One: the value before it in its chain (`x -> relu`), or the network's input.
    Chain,
    /// None: it is a source of values (`input(784)`).
    Source,
    /// The values named by its arguments, exactly these many, in this order: `add(a, b)`.
    Values(&'static [&'static str]),
    /// The values named by its arguments, at least this many: `concat(a, b, c)`.
    AtLeast(usize),
}

/// What a shape rule sees: the layer as written, its arguments, and what flows in.
pub struct ShapeIn<'a> {
    /// The layer as written: `affine(40, 10)`.
    pub layer: &'a str,
    pub args: &'a Args,
    pub inputs: &'a [Incoming],
}

/// A value flowing into a layer, as a shape rule sees it.
pub struct Incoming {
    pub shape: Shape,
    /// How a message names where it comes from: `affine(784, 50)`, `` `h` ``, ``the input `x` ``.
    pub from: String,
    /// Where its size was chosen, when not by its producer: ` (set by affine(784, 50))`, or empty.
    pub set_by: String,
}

/// A shape rule: the output's shape, or a message saying why the inputs do not fit.
pub type ShapeRule = fn(&ShapeIn) -> Result<Shape, String>;

/// What a cost rule sees.
pub struct CostIn<'a> {
    pub args: &'a Args,
    pub output: &'a Shape,
}

/// Floating-point operations per sample, as the kernels do them (an `exp` or a division counts
/// as one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// The forward pass (for a loss: the loss).
    pub forward: u64,
    /// The gradient of each input that needs one (for a loss: its input's gradient).
    pub input_grad: u64,
    /// The gradients of its parameters.
    pub param_grad: u64,
}

/// A cost rule.
pub type CostRule = fn(&CostIn) -> Cost;

/// A trainable parameter of an op.
#[derive(Debug)]
pub struct ParamSpec {
    /// Its name within the layer: `affine0.weight`.
    pub name: &'static str,
    /// Its shape.
    pub dims: ParamDims,
    /// How it starts.
    pub init: InitSpec,
}

/// Where a parameter's shape comes from.
#[derive(Debug, Clone, Copy)]
pub enum ParamDims {
    /// The op's whole-number arguments at these indices.
    Args(&'static [usize]),
    /// One per channel of its input (per feature, for a vector): a batch normalisation's γ.
    Channels,
}

/// How a parameter is initialised (the runtime's `ParamInit`).
#[derive(Debug, Clone, Copy)]
pub enum InitSpec {
    /// Drawn by the chosen initialiser, with the fan-in the product of these arguments.
    Weight { fan_in: &'static [usize] },
    /// Zero.
    Zero,
    /// One.
    One,
}

/// Which runtime kernels an op uses; each variant is a calling convention of the runtime, and
/// `expand` has one module per variant.
#[derive(Debug, Clone, Copy)]
pub enum Kernels {
    Affine(AffineKernels),
    Activation(ActivationKernels),
    /// No kernel: the network's input, read from the caller's batch.
    Source,
    Merge(MergeKernels),
    Concat(ConcatKernels),
    Loss(LossKernels),
    Conv(ConvKernels),
    Pool(PoolKernels),
    Norm(NormKernels),
    Dropout(DropoutKernels),
}

/// `forward(x, w, b, y)`, `backward_input(w, dy, dx, mode)`, and `backward_params(x, dy, &mut
/// weight, &mut bias, sgd)`: the parameters' gradients, or with `sgd = Some((η, λ))` a step of
/// SGD fused into the backward pass in their place.
#[derive(Debug, Clone, Copy)]
pub struct AffineKernels {
    pub forward: &'static str,
    pub backward_params: &'static str,
    pub backward_input: &'static str,
    pub forward_math: &'static str,
    pub backward_math: &'static str,
    /// Activations it can apply as its sums are stored.
    pub epilogues: &'static [Epilogue],
}

/// `forward(x, y, args…)` and `backward(y, dy, dx, mode, args…)`, the op's real arguments last:
/// the local derivative is written with the output.
#[derive(Debug, Clone, Copy)]
pub struct ActivationKernels {
    pub forward: &'static str,
    pub backward: &'static str,
    pub forward_math: &'static str,
    pub backward_math: &'static str,
}

/// `forward(a, b, y)`, and `backward[i](a, b, y, dy, dx, mode)` for input `i`.
#[derive(Debug, Clone, Copy)]
pub struct MergeKernels {
    pub forward: &'static str,
    pub backward: [&'static str; 2],
    pub forward_math: &'static str,
    pub backward_math: &'static str,
}

/// `forward(&[parts], y)`, and `backward(dy, offset, dx, mode)` for each part.
#[derive(Debug, Clone, Copy)]
pub struct ConcatKernels {
    pub forward: &'static str,
    pub backward: &'static str,
    pub forward_math: &'static str,
    pub backward_math: &'static str,
}

/// A 2-D convolution, its geometry (`kernels::Conv2d`) and scratch (`kernels::ConvScratch`) last:
/// `forward(x, w, b, y, scratch, geometry)`, `backward_input(w, dy, dx, mode, scratch, geometry)`,
/// and `backward_params(x, dy, &mut weight, &mut bias, sgd, scratch, geometry)` (the parameters'
/// gradients, or a step of SGD in their place).
#[derive(Debug, Clone, Copy)]
pub struct ConvKernels {
    pub forward: &'static str,
    pub backward_input: &'static str,
    pub backward_params: &'static str,
    pub forward_math: &'static str,
    pub backward_math: &'static str,
    /// Activations it can apply as its sums are stored: `forward(x, w, b, z, y, scratch,
    /// geometry)`.
    pub epilogues: &'static [Epilogue],
}

/// A 2-D pooling, its geometry (`kernels::Pool2d`) last: `forward(x, y, [state,] geometry)` and
/// `backward(dy, dx, mode, [state,] geometry)`, with the state a forward pass keeps for the
/// backward one, if the op has any (a max pool's argmax).
#[derive(Debug, Clone, Copy)]
pub struct PoolKernels {
    pub forward: &'static str,
    pub backward: &'static str,
    /// The runtime type of the state, in `kernels`, if there is one.
    pub state: Option<&'static str>,
    pub forward_math: &'static str,
    pub backward_math: &'static str,
}

/// A batch normalisation, its geometry and options (`kernels::BatchNorm`) and running statistics
/// (`kernels::BatchNormState`) given to both passes: `forward(x, γ, β, y, state, geometry,
/// training)` and `backward(x, dy, Some((dx, mode)), &mut γ, &mut β, sgd, state, geometry)`.
#[derive(Debug, Clone, Copy)]
pub struct NormKernels {
    pub forward: &'static str,
    pub backward: &'static str,
    pub forward_math: &'static str,
    pub backward_math: &'static str,
}

/// Dropout, its mask (`kernels::DropoutMask`) kept between the passes and drawn from the
/// network's generator: `forward(x, y, mask, p, rng, training)` and `backward(dy, dx, mode,
/// mask)`.
#[derive(Debug, Clone, Copy)]
pub struct DropoutKernels {
    pub forward: &'static str,
    pub backward: &'static str,
    pub forward_math: &'static str,
    pub backward_math: &'static str,
}

/// `kernel(x, targets, dx) -> loss`: the mean loss and its gradient in one pass.
#[derive(Debug, Clone, Copy)]
pub struct LossKernels {
    pub kernel: &'static str,
    pub targets: TargetKind,
    pub math: &'static str,
}

/// An activation that a product can apply as it stores its sums, and undo the gradient of in the
/// product before it.
#[derive(Debug, Clone, Copy)]
pub struct Epilogue {
    /// The activation op's name.
    pub activation: &'static str,
    /// `forward(x, w, b, z, y)`: the product into `z` and the activation of it into `y`, in one
    /// pass, when the activation is the product's only reader.
    pub forward: &'static str,
    /// `backward_input(w, dy, y, dx)`: the input gradient of the product after the activation,
    /// with the activation's backward pass applied as it is stored (`dx = (dy·Wᵀ) ⊙ f'(y)`), when
    /// the activation's input and output each have one reader. Used only by `sgd_step`, which
    /// keeps no gradients for people to read. `None` for a product that has no such kernel.
    pub gated_backward_input: Option<&'static str>,
}

/// What a loss compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// One class index per sample (`&[usize]`).
    Classes,
    /// One row of values per sample (`ArrayView2`).
    Values,
}

const DIM: ArgKind = ArgKind::Whole { min: 1 };

/// Every op, in the order the documentation lists them.
pub static OPS: &[OpSpec] = &[
    OpSpec {
        name: "affine",
        aliases: &[],
        elsewhere: &["linear", "dense", "fc", "fully_connected"],
        args: &[
            ArgSpec {
                name: "in",
                kind: DIM,
                default: None,
            },
            ArgSpec {
                name: "out",
                kind: DIM,
                default: None,
            },
        ],
        inputs: Inputs::Chain,
        shape: rules::affine,
        fixes_input: Some(|args| Shape::features(args.whole(0))),
        fixes_output: Some(|args| Shape::features(args.whole(1))),
        params: &[
            ParamSpec {
                name: "weight",
                dims: ParamDims::Args(&[0, 1]),
                init: InitSpec::Weight { fan_in: &[0] },
            },
            ParamSpec {
                name: "bias",
                dims: ParamDims::Args(&[1]),
                init: InitSpec::Zero,
            },
        ],
        kernels: Kernels::Affine(AffineKernels {
            forward: "affine_forward",
            backward_params: "affine_param_grads_or_step",
            backward_input: "affine_backward_input",
            forward_math: "y = x·W + b",
            backward_math: "dx = dy·Wᵀ, dW = xᵀ·dy, db = Σ_rows dy (with `sgd = Some((η, λ))`: W ← (1 − η·λ)·W − η·xᵀ·dy, b −= η·Σ_rows dy, in place of dW and db)",
            epilogues: &[Epilogue {
                activation: "relu",
                forward: "affine_relu_forward",
                gated_backward_input: Some("affine_relu_backward_input"),
            }],
        }),
        cost: costs::affine,
    },
    OpSpec {
        name: "relu",
        aliases: &[],
        elsewhere: &[],
        args: &[],
        inputs: Inputs::Chain,
        shape: rules::same,
        fixes_input: None,
        fixes_output: None,
        params: &[],
        kernels: Kernels::Activation(ActivationKernels {
            forward: "relu_forward",
            backward: "relu_backward",
            forward_math: "y = max(x, 0)",
            backward_math: "dx = dy where y > 0, else 0",
        }),
        cost: costs::per_element::<1, 1>,
    },
    OpSpec {
        name: "leaky_relu",
        aliases: &[],
        elsewhere: &["leakyrelu", "lrelu"],
        args: &[ArgSpec {
            name: "alpha",
            kind: ArgKind::Real {
                min: Bound::Inclusive(0.0),
                max: Bound::Unbounded,
            },
            default: Some(ArgValue::Real(0.01)),
        }],
        inputs: Inputs::Chain,
        shape: rules::same,
        fixes_input: None,
        fixes_output: None,
        params: &[],
        kernels: Kernels::Activation(ActivationKernels {
            forward: "leaky_relu_forward",
            backward: "leaky_relu_backward",
            forward_math: "y = x where x > 0, else α·x",
            backward_math: "dx = dy where y > 0, else α·dy",
        }),
        cost: costs::per_element::<2, 2>,
    },
    OpSpec {
        name: "elu",
        aliases: &[],
        elsewhere: &[],
        args: &[ArgSpec {
            name: "alpha",
            kind: ArgKind::Real {
                min: Bound::Exclusive(0.0),
                max: Bound::Unbounded,
            },
            default: Some(ArgValue::Real(1.0)),
        }],
        inputs: Inputs::Chain,
        shape: rules::same,
        fixes_input: None,
        fixes_output: None,
        params: &[],
        kernels: Kernels::Activation(ActivationKernels {
            forward: "elu_forward",
            backward: "elu_backward",
            forward_math: "y = x where x > 0, else α·(eˣ − 1)",
            backward_math: "dx = dy where y > 0, else dy·(y + α)",
        }),
        cost: costs::per_element::<3, 2>,
    },
    OpSpec {
        name: "sigmoid",
        aliases: &[],
        elsewhere: &["logistic"],
        args: &[],
        inputs: Inputs::Chain,
        shape: rules::same,
        fixes_input: None,
        fixes_output: None,
        params: &[],
        kernels: Kernels::Activation(ActivationKernels {
            forward: "sigmoid_forward",
            backward: "sigmoid_backward",
            forward_math: "y = 1 / (1 + exp(−x))",
            backward_math: "dx = dy·y·(1 − y)",
        }),
        cost: costs::per_element::<4, 3>,
    },
    OpSpec {
        name: "tanh",
        aliases: &[],
        elsewhere: &[],
        args: &[],
        inputs: Inputs::Chain,
        shape: rules::same,
        fixes_input: None,
        fixes_output: None,
        params: &[],
        kernels: Kernels::Activation(ActivationKernels {
            forward: "tanh_forward",
            backward: "tanh_backward",
            forward_math: "y = tanh(x)",
            backward_math: "dx = dy·(1 − y²)",
        }),
        cost: costs::per_element::<1, 3>,
    },
    OpSpec {
        name: "softmax",
        aliases: &[],
        elsewhere: &[],
        args: &[],
        inputs: Inputs::Chain,
        shape: rules::features_at_least::<2>,
        fixes_input: None,
        fixes_output: None,
        params: &[],
        kernels: Kernels::Activation(ActivationKernels {
            forward: "softmax_forward",
            backward: "softmax_backward",
            forward_math: "y = exp(x − max x) / Σ exp(x − max x), along each sample's features",
            backward_math: "dx = y ⊙ (dy − Σ dy⊙y)",
        }),
        cost: costs::per_element::<4, 4>,
    },
    OpSpec {
        name: "softmax_cross_entropy",
        aliases: &["softmax_with_loss"],
        elsewhere: &["log_softmax", "crossentropy", "cross_entropy", "nll"],
        args: &[],
        inputs: Inputs::Chain,
        shape: rules::features_at_least::<2>,
        fixes_input: None,
        fixes_output: None,
        params: &[],
        kernels: Kernels::Loss(LossKernels {
            kernel: "softmax_cross_entropy",
            targets: TargetKind::Classes,
            math: "L = −mean(log softmax(x)[t]); dx = (softmax(x) − onehot(t)) / n",
        }),
        cost: costs::per_element::<4, 2>,
    },
    OpSpec {
        name: "mse",
        aliases: &[],
        elsewhere: &["mean_squared_error", "l2"],
        args: &[],
        inputs: Inputs::Chain,
        shape: rules::same,
        fixes_input: None,
        fixes_output: None,
        params: &[],
        kernels: Kernels::Loss(LossKernels {
            kernel: "mse",
            targets: TargetKind::Values,
            math: "L = Σ (y − t)² / (2n); dx = (y − t) / n",
        }),
        cost: costs::per_element::<3, 2>,
    },
    OpSpec {
        name: "input",
        aliases: &[],
        elsewhere: &["placeholder"],
        args: &[ArgSpec {
            name: "shape",
            kind: ArgKind::Dims,
            default: None,
        }],
        inputs: Inputs::Source,
        shape: rules::declared,
        fixes_input: None,
        fixes_output: None,
        params: &[],
        kernels: Kernels::Source,
        cost: costs::none,
    },
    OpSpec {
        name: "add",
        aliases: &[],
        elsewhere: &["sum", "plus"],
        args: &[],
        inputs: Inputs::Values(&["a", "b"]),
        shape: rules::equal,
        fixes_input: None,
        fixes_output: None,
        params: &[],
        kernels: Kernels::Merge(MergeKernels {
            forward: "add_forward",
            backward: ["add_backward_a", "add_backward_b"],
            forward_math: "y = a + b",
            backward_math: "da = dy, db = dy",
        }),
        cost: costs::per_element::<1, 0>,
    },
    OpSpec {
        name: "sub",
        aliases: &[],
        elsewhere: &["subtract", "minus"],
        args: &[],
        inputs: Inputs::Values(&["a", "b"]),
        shape: rules::equal,
        fixes_input: None,
        fixes_output: None,
        params: &[],
        kernels: Kernels::Merge(MergeKernels {
            forward: "sub_forward",
            backward: ["sub_backward_a", "sub_backward_b"],
            forward_math: "y = a − b",
            backward_math: "da = dy, db = −dy",
        }),
        cost: costs::per_element::<1, 1>,
    },
    OpSpec {
        name: "mul",
        aliases: &[],
        elsewhere: &["multiply", "times", "prod"],
        args: &[],
        inputs: Inputs::Values(&["a", "b"]),
        shape: rules::equal,
        fixes_input: None,
        fixes_output: None,
        params: &[],
        kernels: Kernels::Merge(MergeKernels {
            forward: "mul_forward",
            backward: ["mul_backward_a", "mul_backward_b"],
            forward_math: "y = a·b",
            backward_math: "da = dy·b, db = dy·a",
        }),
        cost: costs::per_element::<1, 1>,
    },
    OpSpec {
        name: "div",
        aliases: &[],
        elsewhere: &["divide"],
        args: &[],
        inputs: Inputs::Values(&["a", "b"]),
        shape: rules::equal,
        fixes_input: None,
        fixes_output: None,
        params: &[],
        kernels: Kernels::Merge(MergeKernels {
            forward: "div_forward",
            backward: ["div_backward_a", "div_backward_b"],
            forward_math: "y = a / b",
            backward_math: "da = dy / b, db = −dy·y / b",
        }),
        cost: costs::per_element::<1, 3>,
    },
    OpSpec {
        name: "concat",
        aliases: &[],
        elsewhere: &["cat", "concatenate", "hstack"],
        args: &[],
        inputs: Inputs::AtLeast(2),
        shape: rules::concat,
        fixes_input: None,
        fixes_output: None,
        params: &[],
        kernels: Kernels::Concat(ConcatKernels {
            forward: "concat_forward",
            backward: "concat_backward",
            forward_math: "y = [a | b | …] along the features (the channels, for values of rank 3)",
            backward_math: "each input's gradient is its own part of dy",
        }),
        cost: costs::none,
    },
    OpSpec {
        name: "conv2d",
        aliases: &[],
        elsewhere: &["conv", "convolution", "conv2"],
        args: &[
            ArgSpec {
                name: "in",
                kind: DIM,
                default: None,
            },
            ArgSpec {
                name: "out",
                kind: DIM,
                default: None,
            },
            ArgSpec {
                name: "kernel",
                kind: DIM,
                default: None,
            },
            ArgSpec {
                name: "stride",
                kind: DIM,
                default: Some(ArgValue::Whole(1)),
            },
            ArgSpec {
                name: "pad",
                kind: ArgKind::Whole { min: 0 },
                default: Some(ArgValue::Whole(0)),
            },
            ArgSpec {
                name: "exact",
                kind: ArgKind::Flag,
                default: Some(ArgValue::Flag(true)),
            },
        ],
        inputs: Inputs::Chain,
        shape: rules::conv2d,
        fixes_input: None,
        fixes_output: None,
        params: &[
            ParamSpec {
                name: "weight",
                dims: ParamDims::Args(&[1, 0, 2, 2]),
                init: InitSpec::Weight { fan_in: &[0, 2, 2] },
            },
            ParamSpec {
                name: "bias",
                dims: ParamDims::Args(&[1]),
                init: InitSpec::Zero,
            },
        ],
        kernels: Kernels::Conv(ConvKernels {
            forward: "conv2d_forward",
            backward_input: "conv2d_backward_input",
            backward_params: "conv2d_param_grads_or_step",
            forward_math: "y[o, i, j] = b[o] + Σ_c,u,v W[o, c, u, v]·x[c, s·i + u − p, s·j + v − p] (zero outside x)",
            epilogues: &[Epilogue {
                activation: "relu",
                forward: "conv2d_relu_forward",
                gated_backward_input: None,
            }],
            backward_math: "dx = the same sums run backwards (dy spread through W), dW[o, c, u, v] = Σ_rows,i,j dy[o, i, j]·x[c, s·i + u − p, s·j + v − p], db = Σ_rows,i,j dy (with `sgd = Some((η, λ))`: W ← (1 − η·λ)·W − η·dW, b −= η·db, in place of dW and db)",
        }),
        cost: costs::conv2d,
    },
    OpSpec {
        name: "max_pool",
        aliases: &[],
        elsewhere: &["maxpool", "max_pool2d", "maxpool2d", "pool"],
        args: POOL_ARGS,
        inputs: Inputs::Chain,
        shape: rules::pool,
        fixes_input: None,
        fixes_output: None,
        params: &[],
        kernels: Kernels::Pool(PoolKernels {
            forward: "max_pool_forward",
            backward: "max_pool_backward",
            state: Some("PoolArgmax"),
            forward_math: "y[c, i, j] = the largest x[c, s·i + u − p, s·j + v − p] of the window (−∞ outside x)",
            backward_math: "dx = dy at each window's largest input (kept by the forward pass), 0 elsewhere",
        }),
        cost: costs::pool,
    },
    OpSpec {
        name: "avg_pool",
        aliases: &[],
        elsewhere: &["avgpool", "avg_pool2d", "avgpool2d", "mean_pool"],
        args: POOL_ARGS,
        inputs: Inputs::Chain,
        shape: rules::pool,
        fixes_input: None,
        fixes_output: None,
        params: &[],
        kernels: Kernels::Pool(PoolKernels {
            forward: "avg_pool_forward",
            backward: "avg_pool_backward",
            state: None,
            forward_math: "y[c, i, j] = the mean of the window's window² inputs (zeros outside x count)",
            backward_math: "dx = dy / window², spread over each window",
        }),
        cost: costs::pool,
    },
    OpSpec {
        name: "flatten",
        aliases: &[],
        elsewhere: &["reshape", "view", "ravel"],
        args: &[],
        inputs: Inputs::Chain,
        shape: rules::flatten,
        fixes_input: None,
        fixes_output: None,
        params: &[],
        kernels: Kernels::Activation(ActivationKernels {
            forward: "flatten_forward",
            backward: "flatten_backward",
            forward_math: "y = x, channels × height × width read as features",
            backward_math: "dx = dy",
        }),
        cost: costs::none,
    },
    OpSpec {
        name: "batchnorm",
        aliases: &["batch_norm"],
        elsewhere: &["batchnorm1d", "batchnorm2d", "bn", "batch_normalization"],
        args: &[
            ArgSpec {
                name: "momentum",
                kind: ArgKind::Real {
                    min: Bound::Inclusive(0.0),
                    max: Bound::Inclusive(1.0),
                },
                default: Some(ArgValue::Real(0.1)),
            },
            ArgSpec {
                name: "eps",
                kind: ArgKind::Real {
                    min: Bound::Exclusive(0.0),
                    max: Bound::Unbounded,
                },
                default: Some(ArgValue::Real(1e-5)),
            },
        ],
        inputs: Inputs::Chain,
        shape: rules::same,
        fixes_input: None,
        fixes_output: None,
        params: &[
            ParamSpec {
                name: "gamma",
                dims: ParamDims::Channels,
                init: InitSpec::One,
            },
            ParamSpec {
                name: "beta",
                dims: ParamDims::Channels,
                init: InitSpec::Zero,
            },
        ],
        kernels: Kernels::Norm(NormKernels {
            forward: "batchnorm_forward",
            backward: "batchnorm_backward",
            forward_math: "y = γ·(x − μ)/√(σ² + ε) + β per channel (per feature on vectors), μ and σ² the batch's mean and variance over its samples and positions in training (the running ones move towards them: r ← (1 − momentum)·r + momentum·batch), the running ones in evaluation",
            backward_math: "x̂ = (x − μ)/σ; dβ = Σ dy, dγ = Σ dy·x̂; dx = γ/σ·(dy − mean(dy) − x̂·mean(dy·x̂)) after a training pass, γ/σ·dy after an evaluation pass (with `sgd = Some((η, _))`: γ −= η·dγ, β −= η·dβ in place of dγ and dβ)",
        }),
        cost: costs::per_element::<6, 8>,
    },
    OpSpec {
        name: "dropout",
        aliases: &[],
        elsewhere: &["dropout2d"],
        args: &[ArgSpec {
            name: "p",
            kind: ArgKind::Real {
                min: Bound::Inclusive(0.0),
                max: Bound::Exclusive(1.0),
            },
            default: Some(ArgValue::Real(0.5)),
        }],
        inputs: Inputs::Chain,
        shape: rules::same,
        fixes_input: None,
        fixes_output: None,
        params: &[],
        kernels: Kernels::Dropout(DropoutKernels {
            forward: "dropout_forward",
            backward: "dropout_backward",
            forward_math: "y = x·m/(1 − p) in training, m a fresh mask of Bernoulli(1 − p) draws from the network's generator; y = x in evaluation",
            backward_math: "dx = dy·m/(1 − p) after a training pass (its mask), dy after an evaluation pass",
        }),
        cost: costs::per_element::<1, 1>,
    },
];

/// A pooling's arguments: its window, the stride (the window unless written), the padding, and
/// whether the windows must tile the padded input exactly.
const POOL_ARGS: &[ArgSpec] = &[
    ArgSpec {
        name: "window",
        kind: DIM,
        default: None,
    },
    ArgSpec {
        name: "stride",
        kind: DIM,
        default: Some(ArgValue::SameAs(0)),
    },
    ArgSpec {
        name: "pad",
        kind: ArgKind::Whole { min: 0 },
        default: Some(ArgValue::Whole(0)),
    },
    ArgSpec {
        name: "exact",
        kind: ArgKind::Flag,
        default: Some(ArgValue::Flag(true)),
    },
];

/// The shape rules the table names.
mod rules {
    use super::{Shape, ShapeIn};

    /// The shape its (one) input has.
    pub fn same(op: &ShapeIn) -> Result<Shape, String> {
        Ok(op.inputs[0].shape.clone())
    }

    /// An input's declared shape: its dimensions argument.
    pub fn declared(op: &ShapeIn) -> Result<Shape, String> {
        Shape::new(op.args.dims().unwrap_or_default())
    }

    /// `affine(in, out)`: `in` features in, `out` out.
    pub fn affine(op: &ShapeIn) -> Result<Shape, String> {
        let (want, out) = (op.args.whole(0), op.args.whole(1));
        let input = &op.inputs[0];
        if input.shape.rank() > 1 && input.shape.size() != want {
            return Err(format!(
                "{} takes {want} features, but {} produces {}{}: an affine layer reads each \
                 sample's {} elements as features (what `flatten` gives), so its `in` is {}",
                op.layer,
                input.from,
                input.shape,
                input.set_by,
                input.shape,
                input.shape.size()
            ));
        }
        if input.shape.size() != want {
            return Err(format!(
                "{} takes {want} features, but {} produces {}{}",
                op.layer,
                input.from,
                input.shape.size(),
                input.set_by
            ));
        }
        Ok(Shape::features(out))
    }

    /// An image (channels × height × width), or why the input is none.
    fn image(op: &ShapeIn) -> Result<(usize, usize, usize), String> {
        let input = &op.inputs[0];
        match input.shape.dims() {
            &[c, h, w] => Ok((c, h, w)),
            _ => Err(format!(
                "{} works on images (channels × height × width), but {} produces {}{}",
                op.layer,
                input.from,
                input.shape.describe(),
                input.set_by
            )),
        }
    }

    /// The output size along one axis of `size` for a window of `window` moved by `stride` over
    /// the input padded by `pad` on both sides, or why the window does not fit.
    fn slide(size: usize, window: usize, stride: usize, pad: usize) -> Option<(usize, usize)> {
        let padded = size + 2 * pad;
        let span = padded.checked_sub(window)?;
        Some((span / stride + 1, span % stride))
    }

    /// What a window (a kernel, or a pool's window) of `window`, `stride` and `pad` makes of the
    /// input's height and width: the output's, or a message.
    fn windows(
        op: &ShapeIn,
        what: &str,
        (h, w): (usize, usize),
        (window, stride, pad, exact): (usize, usize, usize, bool),
    ) -> Result<(usize, usize), String> {
        let input = &op.inputs[0];
        if pad >= window {
            return Err(format!(
                "{}: a pad of {pad} is not smaller than the {what} ({window}), so some windows \
                 would hold nothing but padding",
                op.layer
            ));
        }
        if what == "window" && 2 * pad > window {
            return Err(format!(
                "{}: a pad of {pad} is more than half the window ({window}), so a window at an \
                 edge would be mostly padding (PyTorch refuses this too)",
                op.layer
            ));
        }
        let (Some((oh, rows_left)), Some((ow, cols_left))) =
            (slide(h, window, stride, pad), slide(w, window, stride, pad))
        else {
            let padded = if pad > 0 {
                format!(" ({}×{} padded)", h + 2 * pad, w + 2 * pad)
            } else {
                String::new()
            };
            let nothing = if what == "window" {
                "nothing to pool"
            } else {
                "nothing to convolve"
            };
            return Err(format!(
                "{} gets {h}×{w}{padded} from {}{}: a {window}×{window} {what} does not fit, \
                 {nothing}",
                op.layer, input.from, input.set_by
            ));
        };
        if exact && (rows_left > 0 || cols_left > 0) {
            let dropped = match (rows_left, cols_left) {
                (1, 1) => "its last row and column".to_owned(),
                (0, c) => format!("its last {c} column{}", if c == 1 { "" } else { "s" }),
                (r, 0) => format!("its last {r} row{}", if r == 1 { "" } else { "s" }),
                (r, c) if r == c => format!("its last {r} rows and columns"),
                (r, c) => format!("its last {r} rows and {c} columns"),
            };
            return Err(format!(
                "{}: {window}×{window} {what}s with stride {stride} do not tile the {h}×{w} of {}{} \
                 ({} + 2·{pad} − {window} is not a multiple of {stride}), so {dropped} would be \
                 dropped; write `exact = false` to accept that (PyTorch drops them silently)",
                op.layer,
                input.from,
                input.set_by,
                if rows_left > 0 { h } else { w },
            ));
        }
        Ok((oh, ow))
    }

    /// `conv2d(in, out, kernel, stride, pad, exact)`: `in` channels in, `out` out, each side by
    /// the usual rule `(size + 2·pad − kernel) / stride + 1`.
    pub fn conv2d(op: &ShapeIn) -> Result<Shape, String> {
        let (c, h, w) = image(op)?;
        let args = op.args;
        let (want, out, kernel) = (args.whole(0), args.whole(1), args.whole(2));
        if c != want {
            let input = &op.inputs[0];
            return Err(format!(
                "{} takes {want} channel{}, but {} has {c}{}",
                op.layer,
                if want == 1 { "" } else { "s" },
                input.from,
                input.set_by
            ));
        }
        let geometry = (kernel, args.whole(3), args.whole(4), args.flag(5));
        let (oh, ow) = windows(op, "kernel", (h, w), geometry)?;
        Shape::new(&[out, oh, ow]).map_err(|problem| format!("{}: {problem}", op.layer))
    }

    /// `max_pool` and `avg_pool(window, stride, pad, exact)`: each channel on its own.
    pub fn pool(op: &ShapeIn) -> Result<Shape, String> {
        let (c, h, w) = image(op)?;
        let args = op.args;
        let geometry = (args.whole(0), args.whole(1), args.whole(2), args.flag(3));
        let (oh, ow) = windows(op, "window", (h, w), geometry)?;
        Shape::new(&[c, oh, ow]).map_err(|problem| format!("{}: {problem}", op.layer))
    }

    /// `flatten`: an image's elements as features.
    pub fn flatten(op: &ShapeIn) -> Result<Shape, String> {
        let input = &op.inputs[0];
        if input.shape.rank() == 1 {
            return Err(format!(
                "{} reads an image (channels × height × width) as features, but {} has \
                 features already ({}{})",
                op.layer,
                input.from,
                input.shape.describe(),
                input.set_by
            ));
        }
        Ok(Shape::features(input.shape.size()))
    }

    /// Features (rank 1), at least `MIN` of them; gives the same.
    pub fn features_at_least<const MIN: usize>(op: &ShapeIn) -> Result<Shape, String> {
        let input = &op.inputs[0];
        if input.shape.rank() > 1 {
            return Err(format!(
                "{} works along each sample's features (rank 1), but {} produces {}{}",
                op.layer, input.from, input.shape, input.set_by
            ));
        }
        if input.shape.size() < MIN {
            return Err(format!(
                "{} needs at least {MIN} features, but {} produces {}{}",
                op.layer,
                input.from,
                input.shape.size(),
                input.set_by
            ));
        }
        Ok(input.shape.clone())
    }

    /// Every input of one shape; gives that shape.
    pub fn equal(op: &ShapeIn) -> Result<Shape, String> {
        let first = &op.inputs[0];
        for other in &op.inputs[1..] {
            if other.shape == first.shape {
                continue;
            }
            return Err(if first.shape.rank() == 1 && other.shape.rank() == 1 {
                format!(
                    "{} needs inputs of one width, but {} has {} and {} has {}",
                    op.layer,
                    first.from,
                    first.shape.describe(),
                    other.from,
                    other.shape.size()
                )
            } else {
                format!(
                    "{} needs inputs of one shape, but {} {} and {} {}",
                    op.layer,
                    first.from,
                    first.shape.is(),
                    other.from,
                    other.shape.is()
                )
            });
        }
        Ok(first.shape.clone())
    }

    /// Rank-1 inputs side by side, or rank-3 inputs along their channels (the same height and
    /// width): the parts follow each other in each sample's storage either way.
    pub fn concat(op: &ShapeIn) -> Result<Shape, String> {
        let first = &op.inputs[0];
        let mut outer = 0usize;
        for input in op.inputs {
            let same_inner = input.shape.rank() == first.shape.rank()
                && input.shape.dims()[1..] == first.shape.dims()[1..];
            if !same_inner {
                return Err(format!(
                    "{} joins values along their first dimension (features, or channels), so the \
                     rest must agree, but {} {} and {} {}",
                    op.layer,
                    first.from,
                    first.shape.is(),
                    input.from,
                    input.shape.is()
                ));
            }
            outer = outer.checked_add(input.shape.dims()[0]).ok_or_else(|| {
                format!(
                    "{} would have more elements than this machine can address",
                    op.layer
                )
            })?;
        }
        let mut dims = first.shape.dims().to_vec();
        dims[0] = outer;
        Shape::new(&dims).map_err(|problem| format!("{}: {problem}", op.layer))
    }
}

/// The cost rules the table names.
mod costs {
    use super::{Cost, CostIn};

    pub fn none(_: &CostIn) -> Cost {
        Cost::default()
    }

    /// `FORWARD` operations per output element, and `BACKWARD` per element of each input gradient.
    pub fn per_element<const FORWARD: u64, const BACKWARD: u64>(op: &CostIn) -> Cost {
        let n = op.output.size() as u64;
        Cost {
            forward: FORWARD * n,
            input_grad: BACKWARD * n,
            param_grad: 0,
        }
    }

    /// Per output element, a sum over the kernel's `in·kernel²` inputs (a multiply-add each) and
    /// the bias; the gradients: as many multiply-adds for `dx` and for `dW`, and the bias's sums.
    pub fn conv2d(op: &CostIn) -> Cost {
        let per_output = (op.args.whole(0) * op.args.whole(2) * op.args.whole(2)) as u64;
        let n = op.output.size() as u64;
        Cost {
            forward: 2 * per_output * n + n,
            input_grad: 2 * per_output * n,
            param_grad: 2 * per_output * n + n,
        }
    }

    /// Per output element, a comparison or an add per element of the window; the gradient: one
    /// store per output element (a max pool) or per element of its window (an average pool),
    /// counted as the former.
    pub fn pool(op: &CostIn) -> Cost {
        let window = (op.args.whole(0) * op.args.whole(0)) as u64;
        let n = op.output.size() as u64;
        Cost {
            forward: window * n,
            input_grad: n,
            param_grad: 0,
        }
    }

    /// A product of `in × out` multiply-adds and `out` bias adds; the gradients: one product each
    /// for `dx` and `dW`, and the bias's sums.
    pub fn affine(op: &CostIn) -> Cost {
        let (inputs, outputs) = (op.args.whole(0) as u64, op.args.whole(1) as u64);
        let product = 2 * inputs * outputs;
        Cost {
            forward: product + outputs,
            input_grad: product,
            param_grad: product + outputs,
        }
    }
}

impl Kernels {
    /// What the forward and the backward kernels compute, as the generated docs say it.
    pub fn math(&self) -> (&'static str, &'static str) {
        match self {
            Kernels::Affine(k) => (k.forward_math, k.backward_math),
            Kernels::Activation(k) => (k.forward_math, k.backward_math),
            Kernels::Merge(k) => (k.forward_math, k.backward_math),
            Kernels::Concat(k) => (k.forward_math, k.backward_math),
            Kernels::Loss(k) => (k.math, k.math),
            Kernels::Conv(k) => (k.forward_math, k.backward_math),
            Kernels::Pool(k) => (k.forward_math, k.backward_math),
            Kernels::Norm(k) => (k.forward_math, k.backward_math),
            Kernels::Dropout(k) => (k.forward_math, k.backward_math),
            Kernels::Source => ("", ""),
        }
    }

    /// Whether the backward pass reads the op's inputs (not only its output and gradient), so
    /// that a backward method of an op reading the network's input takes the batch.
    pub fn backward_reads_inputs(&self) -> bool {
        match self {
            Kernels::Affine(_)
            | Kernels::Merge(_)
            | Kernels::Loss(_)
            | Kernels::Conv(_)
            | Kernels::Norm(_) => true,
            Kernels::Activation(_)
            | Kernels::Concat(_)
            | Kernels::Pool(_)
            | Kernels::Dropout(_)
            | Kernels::Source => false,
        }
    }
}

impl Kernels {
    /// Whether the op computes differently in training and in evaluation (batch statistics,
    /// dropout masks): a network with such an op keeps which mode its last forward pass ran in.
    pub fn has_mode(&self) -> bool {
        matches!(self, Kernels::Norm(_) | Kernels::Dropout(_))
    }

    /// The activations a product can apply as it stores its sums.
    pub fn epilogues(&self) -> &'static [Epilogue] {
        match self {
            Kernels::Affine(k) => k.epilogues,
            Kernels::Conv(k) => k.epilogues,
            _ => &[],
        }
    }
}

impl OpSpec {
    /// Whether the op's backward method takes `sgd` and can update its parameters in place.
    pub fn updates_params(&self) -> bool {
        !self.params.is_empty()
    }

    /// Whether this op is a loss (and so must end the network).
    pub fn is_loss(&self) -> bool {
        matches!(self.kernels, Kernels::Loss(_))
    }

    /// Whether this op declares an input of the network.
    pub fn is_source(&self) -> bool {
        self.inputs == Inputs::Source
    }

    /// Whether its arguments name values (a merge such as `add(a, b)`) rather than numbers.
    pub fn takes_values(&self) -> bool {
        matches!(self.inputs, Inputs::Values(_) | Inputs::AtLeast(_))
    }
}

/// The op called `name`, or one of its aliases.
pub fn lookup(name: &str) -> Option<&'static OpSpec> {
    OPS.iter()
        .find(|op| op.name == name || op.aliases.contains(&name))
}

/// The known name closest to `name`, if any is close enough to be a likely typo.
pub fn suggest(name: &str) -> Option<&'static str> {
    OPS.iter()
        .flat_map(|op| std::iter::once(op.name).chain(op.aliases.iter().copied()))
        .map(|known| (strsim::damerau_levenshtein(name, known), known))
        .filter(|&(distance, known)| distance <= 2.max(known.len() / 3))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, known)| known)
}

/// Every known name, for an error message.
pub fn known_names() -> String {
    OPS.iter().map(|op| op.name).collect::<Vec<_>>().join(", ")
}
