//! The vocabulary of operations: one table, one row per op.
//!
//! A row says everything the rest of the pipeline needs: the op's name (and aliases), its
//! arguments, its shape rule, its parameters and how they start, and which runtime kernels run its
//! forward and backward passes, with the local derivative they implement. Adding an op means adding
//! a row here, a kernel pair in `runtime/src/kernels.rs`, and a gradient-check test.

/// One operation of the `network!` language.
#[derive(Debug)]
pub struct OpSpec {
    /// The name written in a network description.
    pub name: &'static str,
    /// Other accepted spellings.
    pub aliases: &'static [&'static str],
    /// Names other libraries use for it (lowercase): not accepted, but suggested when written.
    pub elsewhere: &'static [&'static str],
    /// The names of its arguments; each is a dimension (a positive whole number).
    pub args: &'static [&'static str],
    /// Where its inputs come from.
    pub inputs: Inputs,
    /// How many features it accepts.
    pub takes: Takes,
    /// How many features it produces.
    pub gives: Gives,
    /// Its trainable parameters.
    pub params: &'static [ParamSpec],
    /// The runtime kernels, and what they compute.
    pub kernels: Kernels,
}

/// Where an op's inputs come from.
#[derive(Debug, Clone, Copy)]
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

/// The input-width half of a shape rule.
#[derive(Debug, Clone, Copy)]
pub enum Takes {
    /// Any width.
    Any,
    /// Exactly the value of the argument at this index.
    Arg(usize),
    /// At least this many features.
    AtLeast(usize),
    /// Any width, the same for every input.
    Equal,
}

/// The output-width half of a shape rule.
#[derive(Debug, Clone, Copy)]
pub enum Gives {
    /// As many features as it takes.
    Same,
    /// The value of the argument at this index.
    Arg(usize),
    /// The sum of its inputs' widths.
    Sum,
}

/// A trainable parameter of an op.
#[derive(Debug)]
pub struct ParamSpec {
    /// Its name within the layer: `affine0.weight`.
    pub name: &'static str,
    /// Its shape, as indices into the op's arguments.
    pub dims: &'static [usize],
    /// How it starts.
    pub init: InitSpec,
}

/// How a parameter is initialised (the runtime's `ParamInit`).
#[derive(Debug, Clone, Copy)]
pub enum InitSpec {
    /// Drawn by the chosen initialiser, with the fan-in given by the argument at this index.
    Weight { fan_in: usize },
    /// Zero.
    Zero,
}

/// Which runtime kernels an op uses; each variant is a calling convention of the runtime.
#[derive(Debug, Clone, Copy)]
pub enum Kernels {
    /// `forward(x, w, b, y)`, `backward_params(x, dy, dw, db)`, `backward_input(w, dy, dx)`, and
    /// `sgd_update(x, dy, w, b, η, λ)` in place of `backward_params` when a step of SGD is
    /// fused into the backward pass.
    Affine {
        forward: &'static str,
        backward_params: &'static str,
        backward_input: &'static str,
        sgd_update: &'static str,
        forward_math: &'static str,
        backward_math: &'static str,
    },
    /// `forward(x, y)` and `backward(y, dy, dx)`: the local derivative is written with the output.
    Elementwise {
        forward: &'static str,
        backward: &'static str,
        forward_math: &'static str,
        backward_math: &'static str,
    },
    /// No kernel: the network's input, copied in from the caller's batch.
    Source,
    /// `forward(a, b, y)`, and `backward[i](a, b, y, dy, dx, mode)` for input `i`.
    Merge {
        forward: &'static str,
        backward: [&'static str; 2],
        forward_math: &'static str,
        backward_math: &'static str,
    },
    /// `forward(&[parts], y)`, and `backward(dy, offset, dx, mode)` for each part.
    Concat {
        forward: &'static str,
        backward: &'static str,
        forward_math: &'static str,
        backward_math: &'static str,
    },
    /// `kernel(x, targets, dx) -> loss`: the mean loss and its gradient in one pass.
    Loss {
        kernel: &'static str,
        targets: TargetKind,
        math: &'static str,
    },
}

/// What a loss compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// One class index per sample (`&[usize]`).
    Classes,
    /// One row of values per sample (`ArrayView2`).
    Values,
}

/// Every op, in the order the documentation lists them.
pub static OPS: &[OpSpec] = &[
    OpSpec {
        name: "affine",
        aliases: &[],
        elsewhere: &["linear", "dense", "fc", "fully_connected"],
        args: &["in", "out"],
        inputs: Inputs::Chain,
        takes: Takes::Arg(0),
        gives: Gives::Arg(1),
        params: &[
            ParamSpec {
                name: "weight",
                dims: &[0, 1],
                init: InitSpec::Weight { fan_in: 0 },
            },
            ParamSpec {
                name: "bias",
                dims: &[1],
                init: InitSpec::Zero,
            },
        ],
        kernels: Kernels::Affine {
            forward: "affine_forward",
            backward_params: "affine_backward_params",
            backward_input: "affine_backward_input",
            sgd_update: "affine_sgd_update",
            forward_math: "y = x·W + b",
            backward_math: "dx = dy·Wᵀ, dW = xᵀ·dy, db = Σ_rows dy (with `sgd = Some((η, λ))`: W ← (1 − η·λ)·W − η·xᵀ·dy, b −= η·Σ_rows dy, in place of dW and db)",
        },
    },
    OpSpec {
        name: "relu",
        aliases: &[],
        elsewhere: &[],
        args: &[],
        inputs: Inputs::Chain,
        takes: Takes::Any,
        gives: Gives::Same,
        params: &[],
        kernels: Kernels::Elementwise {
            forward: "relu_forward",
            backward: "relu_backward",
            forward_math: "y = max(x, 0)",
            backward_math: "dx = dy where y > 0, else 0",
        },
    },
    OpSpec {
        name: "sigmoid",
        aliases: &[],
        elsewhere: &["logistic"],
        args: &[],
        inputs: Inputs::Chain,
        takes: Takes::Any,
        gives: Gives::Same,
        params: &[],
        kernels: Kernels::Elementwise {
            forward: "sigmoid_forward",
            backward: "sigmoid_backward",
            forward_math: "y = 1 / (1 + exp(−x))",
            backward_math: "dx = dy·y·(1 − y)",
        },
    },
    OpSpec {
        name: "tanh",
        aliases: &[],
        elsewhere: &[],
        args: &[],
        inputs: Inputs::Chain,
        takes: Takes::Any,
        gives: Gives::Same,
        params: &[],
        kernels: Kernels::Elementwise {
            forward: "tanh_forward",
            backward: "tanh_backward",
            forward_math: "y = tanh(x)",
            backward_math: "dx = dy·(1 − y²)",
        },
    },
    OpSpec {
        name: "softmax_cross_entropy",
        aliases: &["softmax_with_loss"],
        elsewhere: &["softmax", "log_softmax", "crossentropy", "nll"],
        args: &[],
        inputs: Inputs::Chain,
        takes: Takes::AtLeast(2),
        gives: Gives::Same,
        params: &[],
        kernels: Kernels::Loss {
            kernel: "softmax_cross_entropy",
            targets: TargetKind::Classes,
            math: "L = −mean(log softmax(x)[t]); dx = (softmax(x) − onehot(t)) / n",
        },
    },
    OpSpec {
        name: "mse",
        aliases: &[],
        elsewhere: &["mean_squared_error", "l2"],
        args: &[],
        inputs: Inputs::Chain,
        takes: Takes::Any,
        gives: Gives::Same,
        params: &[],
        kernels: Kernels::Loss {
            kernel: "mse",
            targets: TargetKind::Values,
            math: "L = Σ (y − t)² / (2n); dx = (y − t) / n",
        },
    },
    OpSpec {
        name: "input",
        aliases: &[],
        elsewhere: &["placeholder"],
        args: &["width"],
        inputs: Inputs::Source,
        takes: Takes::Any,
        gives: Gives::Arg(0),
        params: &[],
        kernels: Kernels::Source,
    },
    OpSpec {
        name: "add",
        aliases: &[],
        elsewhere: &["sum", "plus"],
        args: &[],
        inputs: Inputs::Values(&["a", "b"]),
        takes: Takes::Equal,
        gives: Gives::Same,
        params: &[],
        kernels: Kernels::Merge {
            forward: "add_forward",
            backward: ["add_backward_a", "add_backward_b"],
            forward_math: "y = a + b",
            backward_math: "da = dy, db = dy",
        },
    },
    OpSpec {
        name: "sub",
        aliases: &[],
        elsewhere: &["subtract", "minus"],
        args: &[],
        inputs: Inputs::Values(&["a", "b"]),
        takes: Takes::Equal,
        gives: Gives::Same,
        params: &[],
        kernels: Kernels::Merge {
            forward: "sub_forward",
            backward: ["sub_backward_a", "sub_backward_b"],
            forward_math: "y = a − b",
            backward_math: "da = dy, db = −dy",
        },
    },
    OpSpec {
        name: "mul",
        aliases: &[],
        elsewhere: &["multiply", "times", "prod"],
        args: &[],
        inputs: Inputs::Values(&["a", "b"]),
        takes: Takes::Equal,
        gives: Gives::Same,
        params: &[],
        kernels: Kernels::Merge {
            forward: "mul_forward",
            backward: ["mul_backward_a", "mul_backward_b"],
            forward_math: "y = a·b",
            backward_math: "da = dy·b, db = dy·a",
        },
    },
    OpSpec {
        name: "div",
        aliases: &[],
        elsewhere: &["divide"],
        args: &[],
        inputs: Inputs::Values(&["a", "b"]),
        takes: Takes::Equal,
        gives: Gives::Same,
        params: &[],
        kernels: Kernels::Merge {
            forward: "div_forward",
            backward: ["div_backward_a", "div_backward_b"],
            forward_math: "y = a / b",
            backward_math: "da = dy / b, db = −dy·y / b",
        },
    },
    OpSpec {
        name: "concat",
        aliases: &[],
        elsewhere: &["cat", "concatenate", "hstack"],
        args: &[],
        inputs: Inputs::AtLeast(2),
        takes: Takes::Any,
        gives: Gives::Sum,
        params: &[],
        kernels: Kernels::Concat {
            forward: "concat_forward",
            backward: "concat_backward",
            forward_math: "y = [a | b | …] along the features",
            backward_math: "each input's gradient is its own columns of dy",
        },
    },
];

impl OpSpec {
    /// Whether the op's backward method takes `sgd` and can update its parameters in place.
    pub fn updates_params(&self) -> bool {
        matches!(self.kernels, Kernels::Affine { .. })
    }

    /// Whether this op is a loss (and so must end the network).
    pub fn is_loss(&self) -> bool {
        matches!(self.kernels, Kernels::Loss { .. })
    }

    /// Whether its arguments name values (a merge such as `add(a, b)`) rather than dimensions.
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
