//! The reference evaluator: a network described as a list of [`Node`]s (declared inputs, layers,
//! merges, concatenations) in topological order, run node by node by calling the runtime's
//! kernels directly on freshly allocated arrays. A chain is the special case of one input and one
//! layer after the other ([`chain`]).
//!
//! It shares the kernels with the generated code but nothing else: not the buffers, not the
//! wiring (which value feeds which kernel), not the order of the backward pass, not the way the
//! gradients of a value read by several nodes are summed (here: fresh arrays added up, where the
//! macro lets later kernels add into a buffer), not the parameter naming, not the shape rules. So
//! a disagreement with a compiled network points at the macro's code generation.
//!
//! The convolution's parameter gradients are also summed here from their definition, with plain
//! loops, and the runtime's kernel (run on parameters of the reference's own) is checked against
//! those sums within a bound on their rounding ([`conv2d_param_grads`]): the two sum in different
//! orders, so where a sum cancels they cannot agree to the comparison's last digits. The kernel's
//! are then what the network's are compared with, as for every other op.
//!
//! Batch normalisation and dropout are run differently: their forward and backward passes are
//! written out here with plain loops from their definitions (those of `runtime/src/norm.rs`:
//! statistics and gradients in `f64`, outputs in the element type), and no kernel of the runtime
//! is called for them. They have a training
//! mode, so [`evaluate`] runs one pass in a [`Mode`], and a [`State`] carries what the passes
//! share: each batch normalisation's running statistics, and the generator the dropout masks are
//! drawn from (`chainrule::kernels::mask_rng`, drawn from as the network draws: each dropout in the
//! order of the nodes, one `next_u32` per element of the batch, row-major), so that a network whose
//! masks are seeded alike draws the same masks. As the two sides then round apart, the gradients
//! of such a network come with the scale of their terms, for the comparison (see [`Training`]).
//!
//! Which op names it implements is [`implemented_names`]: the names of [`Node::exemplars`] and
//! [`Loss::ALL`], which the coverage test compares with the op table. Every `match` on the op
//! enums here is exhaustive (no catch-all arm), so a new variant does not compile until `evaluate`
//! runs it, and a name can only be listed through a variant.

use chainrule::kernels::{self, Conv2d, ConvScratch, GradMode::Set, MaskRng, Pool2d, PoolArgmax};
use chainrule::ndarray::{
    Array1, Array2, ArrayView2, ArrayView4, ArrayViewMut2, Axis, Ix1, Ix4, s,
};
use chainrule::{Element, Param};
use rand::Rng;

/// A layer that reads one value (the one before it in its chain), as the reference runs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// `affine(in, out)`.
    Affine(usize, usize),
    Relu,
    Sigmoid,
    Tanh,
    /// `leaky_relu(α)`.
    LeakyRelu(f64),
    /// `elu(α)`.
    Elu(f64),
    Softmax,
    /// `conv2d(in, out, kernel, stride, pad, exact)`: `in` channels, `out` filters, and the
    /// kernel's window.
    Conv2d(usize, usize, Window),
    /// `max_pool(window, stride, pad, exact)`.
    MaxPool(Window),
    /// `avg_pool(window, stride, pad, exact)`.
    AvgPool(Window),
    Flatten,
    /// `batchnorm(momentum, eps)`: per channel of an image, per feature of a vector.
    BatchNorm(f64, f64),
    /// `dropout(p)`.
    Dropout(f64),
}

/// How a convolution's kernel or a pooling's window slides over each image: its side, its stride,
/// the zeros padded on every side, and whether it must tile the padded image exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub size: usize,
    pub stride: usize,
    pub pad: usize,
    pub exact: bool,
}

impl Window {
    /// Along a side of `side`: the output's side, `(side + 2·pad − size) / stride + 1`, and how
    /// many of the padded input's rows (or columns) the windows leave over at the end; `None` if
    /// the window is larger than the padded side, or does not move.
    pub fn slide(self, side: usize) -> Option<(usize, usize)> {
        let span = (side + 2 * self.pad).checked_sub(self.size)?;
        Some((span.checked_div(self.stride)? + 1, span % self.stride))
    }

    /// The output's side along a side of `side`, if the language accepts the window there: it
    /// fits, its pad is smaller than it, and, if `exact`, nothing is left over (a pooling's pad must
    /// also be at most half its window: [`layer_shape`]).
    pub fn output(self, side: usize) -> Option<usize> {
        let (out, left) = self.slide(side)?;
        (self.pad < self.size && (left == 0 || !self.exact)).then_some(out)
    }

    /// The arguments after the window's side as written in `network!`, defaults left out (the
    /// stride's is `default_stride`): the stride in order when it is the last one written, by name
    /// otherwise; `pad = 1`; `exact = false`.
    fn options(self, default_stride: usize) -> String {
        let mut out = String::new();
        if self.stride != default_stride {
            if self.pad == 0 && self.exact {
                out += &format!(", {}", self.stride);
            } else {
                out += &format!(", stride = {}", self.stride);
            }
        }
        if self.pad != 0 {
            out += &format!(", pad = {}", self.pad);
        }
        if !self.exact {
            out += ", exact = false";
        }
        out
    }

    /// The calls after a window op's constructor ([`conv2d`], [`max_pool`], [`avg_pool`]) that
    /// give it this window, defaults left out as in [`Window::options`]: `.stride(2).pad(1)`.
    fn rust_options(self, default_stride: usize) -> String {
        let mut out = String::new();
        if self.stride != default_stride {
            out += &format!(".stride({})", self.stride);
        }
        if self.pad != 0 {
            out += &format!(".pad({})", self.pad);
        }
        if !self.exact {
            out += ".inexact()";
        }
        out
    }
}

/// `conv2d(channels, filters, kernel)`: stride 1, no pad, exact, until [`Op::stride`],
/// [`Op::pad`] or [`Op::inexact`] change them.
pub const fn conv2d(channels: usize, filters: usize, kernel: usize) -> Op {
    Op::Conv2d(
        channels,
        filters,
        Window {
            size: kernel,
            stride: 1,
            pad: 0,
            exact: true,
        },
    )
}

/// `max_pool(window)`: stride `window`, no pad, exact, until [`Op::stride`], [`Op::pad`] or
/// [`Op::inexact`] change them.
pub const fn max_pool(window: usize) -> Op {
    Op::MaxPool(Window::tiling(window))
}

/// `avg_pool(window)`, as [`max_pool`].
pub const fn avg_pool(window: usize) -> Op {
    Op::AvgPool(Window::tiling(window))
}

impl Window {
    /// A pooling's window of `size` by default: moved by its size, no pad, exact.
    const fn tiling(size: usize) -> Window {
        Window {
            size,
            stride: size,
            pad: 0,
            exact: true,
        }
    }
}

/// The loss that ends a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    SoftmaxCrossEntropy,
    Mse,
}

/// An elementwise merge of two values of one shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    Add,
    Sub,
    Mul,
    Div,
}

/// A declared input of a network.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// `x` in `x = input(3)`; `None` for a chain's input (implicit, or written at its start).
    pub name: Option<String>,
    /// One to three dimensions; a sample is a row of their product, channels outermost.
    pub dims: Vec<usize>,
    /// Marked `#[grad]`: the network keeps its gradient.
    pub grad: bool,
    /// The test draws its values in [1, 2] rather than [-3, 3], so that it can divide.
    pub positive: bool,
}

/// One node of a network; each produces one value, which later nodes name by the node's index.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A declared input; the batch's columns go to the inputs in the order of the node list.
    Input(Input),
    /// A layer on the value of node `.1`.
    Layer(Op, usize),
    /// A merge of the values of nodes `.1` and `.2` (the same node twice is allowed).
    Merge(Merge, usize, usize),
    /// The values of these nodes side by side along their first dimension (features, or channels).
    Concat(Vec<usize>),
}

impl Op {
    /// One exemplar of every variant.
    /// The ones that read images ([`Op::reads_images`]) fit the exemplars' input of 2 × 4 × 5
    /// ([`Node::exemplars`]).
    pub const EXEMPLARS: [Op; 13] = [
        Op::Affine(3, 2),
        Op::Relu,
        Op::Sigmoid,
        Op::Tanh,
        Op::LeakyRelu(0.1),
        Op::Elu(0.5),
        Op::Softmax,
        conv2d(2, 3, 3).pad(1),
        // 4 × 5 padded to 6 × 7: the last column is left over.
        max_pool(2).pad(1).inexact(),
        avg_pool(2).stride(1),
        Op::Flatten,
        Op::BatchNorm(0.1, 1e-5),
        Op::Dropout(0.5),
    ];

    /// The op's name in the language (and the table).
    pub fn name(self) -> &'static str {
        match self {
            Op::Affine(..) => "affine",
            Op::Relu => "relu",
            Op::Sigmoid => "sigmoid",
            Op::Tanh => "tanh",
            Op::LeakyRelu(_) => "leaky_relu",
            Op::Elu(_) => "elu",
            Op::Softmax => "softmax",
            Op::Conv2d(..) => "conv2d",
            Op::MaxPool(_) => "max_pool",
            Op::AvgPool(_) => "avg_pool",
            Op::Flatten => "flatten",
            Op::BatchNorm(..) => "batchnorm",
            Op::Dropout(_) => "dropout",
        }
    }

    /// The layer as written in `network!`. The activations with a number are written in every
    /// form the language has, picked by the number: `leaky_relu` (the default α = 0.01),
    /// `leaky_relu(0.1)` (in order), `leaky_relu(alpha = 0.3)` (by name); `elu` (the default
    /// α = 1), `elu(alpha = 0.5)`. A window's arguments after its side are left out where they
    /// are the defaults; the stride is written in order when it is the last argument written
    /// (`max_pool(2, 1)`, `conv2d(1, 2, 3, 2)`), by name otherwise (`conv2d(1, 2, 3, stride = 2,
    /// pad = 1)`). So are the options of `batchnorm`: `batchnorm` (the defaults, momentum 0.1 and
    /// ε = 1e-5), `batchnorm(0.5)` (the momentum alone, in order), `batchnorm(eps = 0.001)`,
    /// `batchnorm(momentum = 1.0, eps = 0.01)` (by name); and `dropout`'s p: `dropout` (the
    /// default, 0.5), `dropout(0.25)` (in order), `dropout(p = 0.1)` (by name).
    pub fn source(self) -> String {
        match self {
            Op::Affine(i, o) => format!("affine({i}, {o})"),
            Op::LeakyRelu(0.01) | Op::Elu(1.0) => self.name().to_owned(),
            Op::LeakyRelu(0.1) => "leaky_relu(0.1)".to_owned(),
            Op::LeakyRelu(alpha) | Op::Elu(alpha) => format!("{}(alpha = {alpha:?})", self.name()),
            Op::Conv2d(c, f, window) => {
                format!("conv2d({c}, {f}, {}{})", window.size, window.options(1))
            }
            Op::MaxPool(window) | Op::AvgPool(window) => format!(
                "{}({}{})",
                self.name(),
                window.size,
                window.options(window.size)
            ),
            Op::BatchNorm(0.1, 1e-5) | Op::Dropout(0.5) => self.name().to_owned(),
            Op::BatchNorm(momentum, 1e-5) => format!("batchnorm({momentum:?})"),
            Op::BatchNorm(0.1, eps) => format!("batchnorm(eps = {eps:?})"),
            Op::BatchNorm(momentum, eps) => {
                format!("batchnorm(momentum = {momentum:?}, eps = {eps:?})")
            }
            Op::Dropout(0.25) => "dropout(0.25)".to_owned(),
            Op::Dropout(p) => format!("dropout(p = {p:?})"),
            Op::Relu | Op::Sigmoid | Op::Tanh | Op::Softmax | Op::Flatten => self.name().to_owned(),
        }
    }

    /// The op as a Rust expression (what the generated file lists): a window op by its
    /// constructor and the calls that set its window, `conv2d(1, 2, 3).stride(2).inexact()`.
    pub fn rust(self) -> String {
        match self {
            Op::Affine(i, o) => format!("Affine({i}, {o})"),
            Op::Relu => "Relu".to_owned(),
            Op::Sigmoid => "Sigmoid".to_owned(),
            Op::Tanh => "Tanh".to_owned(),
            Op::LeakyRelu(alpha) => format!("LeakyRelu({alpha:?})"),
            Op::Elu(alpha) => format!("Elu({alpha:?})"),
            Op::Softmax => "Softmax".to_owned(),
            Op::Conv2d(c, f, window) => {
                format!(
                    "conv2d({c}, {f}, {}){}",
                    window.size,
                    window.rust_options(1)
                )
            }
            Op::MaxPool(window) | Op::AvgPool(window) => format!(
                "{}({}){}",
                self.name(),
                window.size,
                window.rust_options(window.size)
            ),
            Op::Flatten => "Flatten".to_owned(),
            Op::BatchNorm(momentum, eps) => format!("BatchNorm({momentum:?}, {eps:?})"),
            Op::Dropout(p) => format!("Dropout({p:?})"),
        }
    }

    /// Whether this is an affine layer (`conv2d` has parameters too, but is not one).
    pub fn is_affine(self) -> bool {
        matches!(self, Op::Affine(..))
    }

    /// The op with its window moved by `stride`.
    pub const fn stride(self, stride: usize) -> Op {
        let mut window = self.expect_window();
        window.stride = stride;
        self.with_window(window)
    }

    /// The op with its window's input padded by `pad`.
    pub const fn pad(self, pad: usize) -> Op {
        let mut window = self.expect_window();
        window.pad = pad;
        self.with_window(window)
    }

    /// The op with `exact = false`.
    pub const fn inexact(self) -> Op {
        let mut window = self.expect_window();
        window.exact = false;
        self.with_window(window)
    }

    /// The op's window; panics for an op without one.
    const fn expect_window(self) -> Window {
        match self.window() {
            Some(window) => window,
            None => panic!("only conv2d, max_pool and avg_pool have a window"),
        }
    }

    /// The op with `window` in place of its own.
    const fn with_window(self, window: Window) -> Op {
        match self {
            Op::Conv2d(c, f, _) => Op::Conv2d(c, f, window),
            Op::MaxPool(_) => Op::MaxPool(window),
            Op::AvgPool(_) => Op::AvgPool(window),
            Op::Affine(..)
            | Op::Relu
            | Op::Sigmoid
            | Op::Tanh
            | Op::LeakyRelu(_)
            | Op::Elu(_)
            | Op::Softmax
            | Op::Flatten
            | Op::BatchNorm(..)
            | Op::Dropout(_) => panic!("only conv2d, max_pool and avg_pool have a window"),
        }
    }

    /// The window the op slides over images, if it has one.
    pub const fn window(self) -> Option<Window> {
        match self {
            Op::Conv2d(_, _, window) | Op::MaxPool(window) | Op::AvgPool(window) => Some(window),
            Op::Affine(..)
            | Op::Relu
            | Op::Sigmoid
            | Op::Tanh
            | Op::LeakyRelu(_)
            | Op::Elu(_)
            | Op::Softmax
            | Op::Flatten
            | Op::BatchNorm(..)
            | Op::Dropout(_) => None,
        }
    }

    /// Whether the op reads images only (channels × height × width): `flatten` and the ops with
    /// a window.
    pub fn reads_images(self) -> bool {
        match self {
            Op::Conv2d(..) | Op::MaxPool(_) | Op::AvgPool(_) | Op::Flatten => true,
            Op::Affine(..)
            | Op::Relu
            | Op::Sigmoid
            | Op::Tanh
            | Op::LeakyRelu(_)
            | Op::Elu(_)
            | Op::Softmax
            | Op::BatchNorm(..)
            | Op::Dropout(_) => false,
        }
    }
}

impl Loss {
    /// Every variant.
    pub const ALL: [Loss; 2] = [Loss::SoftmaxCrossEntropy, Loss::Mse];

    /// The loss's name in the language (and the table).
    pub fn name(self) -> &'static str {
        match self {
            Loss::SoftmaxCrossEntropy => "softmax_cross_entropy",
            Loss::Mse => "mse",
        }
    }

    /// The loss as written in `network!`.
    pub fn source(self) -> &'static str {
        self.name()
    }
}

impl Merge {
    /// Every variant.
    pub const ALL: [Merge; 4] = [Merge::Add, Merge::Sub, Merge::Mul, Merge::Div];

    /// The merge's name in the language (and the table).
    pub fn name(self) -> &'static str {
        match self {
            Merge::Add => "add",
            Merge::Sub => "sub",
            Merge::Mul => "mul",
            Merge::Div => "div",
        }
    }

    /// The merge as a Rust expression.
    pub fn rust(self) -> &'static str {
        match self {
            Merge::Add => "Add",
            Merge::Sub => "Sub",
            Merge::Mul => "Mul",
            Merge::Div => "Div",
        }
    }
}

impl Node {
    /// One exemplar of every kind of node, with every [`Op`] and [`Merge`] variant: the inputs
    /// (the nodes before the first that is not one): two of 3 features (nodes 0 and 1, the second
    /// positive) and an image of 2 × 4 × 5 (node 2); then layers on the first (on the image, for
    /// the ops that read images), merges and a concatenation of the first two. The coverage test
    /// runs each through [`evaluate`].
    pub fn exemplars() -> Vec<Node> {
        let mut nodes = vec![
            input("x", &[3], &[Flag::Grad]),
            input("y", &[3], &[Flag::Grad, Flag::Positive]),
            input("z", &[2, 4, 5], &[Flag::Grad]),
        ];
        nodes
            .extend(Op::EXEMPLARS.map(|op| Node::Layer(op, if op.reads_images() { 2 } else { 0 })));
        nodes.extend(Merge::ALL.map(|merge| Node::Merge(merge, 0, 1)));
        nodes.push(Node::Concat(vec![0, 1]));
        nodes
    }

    /// The name of the op the node runs.
    pub fn name(&self) -> &'static str {
        match self {
            Node::Input(_) => "input",
            Node::Layer(op, _) => op.name(),
            Node::Merge(merge, ..) => merge.name(),
            Node::Concat(_) => "concat",
        }
    }

    /// The node as a Rust expression (what the generated file lists), using the constructors
    /// [`input`], [`Layer`](Node::Layer), [`Merge`](Node::Merge) and [`concat`].
    pub fn rust(&self) -> String {
        match self {
            Node::Input(input) => {
                let dims = input.dims.iter().map(usize::to_string).collect::<Vec<_>>();
                let flags = [(input.grad, "Grad"), (input.positive, "Positive")]
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, flag)| *flag)
                    .collect::<Vec<_>>();
                format!(
                    "input({:?}, &[{}], &[{}])",
                    input.name.as_deref().unwrap_or(""),
                    dims.join(", "),
                    flags.join(", ")
                )
            }
            Node::Layer(op, from) => format!("Layer({}, {from})", op.rust()),
            Node::Merge(merge, a, b) => format!("Merge({}, {a}, {b})", merge.rust()),
            Node::Concat(parts) => {
                let parts = parts.iter().map(usize::to_string).collect::<Vec<_>>();
                format!("concat(&[{}])", parts.join(", "))
            }
        }
    }
}

/// Every op name the reference evaluates: its nodes' and its losses'.
pub fn implemented_names() -> Vec<&'static str> {
    let mut names = Vec::new();
    let nodes = Node::exemplars();
    for name in nodes
        .iter()
        .map(Node::name)
        .chain(Loss::ALL.map(Loss::name))
    {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// A flag of [`input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// `#[grad]`.
    Grad,
    /// Values in [1, 2].
    Positive,
}

/// A declared input (`""`: a chain's unnamed input).
pub fn input(name: &str, dims: &[usize], flags: &[Flag]) -> Node {
    Node::Input(Input {
        name: (!name.is_empty()).then(|| name.to_owned()),
        dims: dims.to_vec(),
        grad: flags.contains(&Flag::Grad),
        positive: flags.contains(&Flag::Positive),
    })
}

/// A concatenation of the values of `parts`.
pub fn concat(parts: &[usize]) -> Node {
    Node::Concat(parts.to_vec())
}

/// A chain as a network: its input (declared with `dims`, or implicit: then the first layer, an
/// affine one, fixes it), then each op on the one before.
pub fn chain(input_dims: Option<&[usize]>, ops: &[Op]) -> Vec<Node> {
    let dims = match (input_dims, ops.first()) {
        (Some(dims), _) => dims.to_vec(),
        (None, Some(&Op::Affine(i, _))) => vec![i],
        (None, other) => {
            panic!("a chain without an input starts with an affine layer, not {other:?}")
        }
    };
    let mut nodes = vec![input("", &dims, &[])];
    for (i, &op) in ops.iter().enumerate() {
        nodes.push(Node::Layer(op, i));
    }
    nodes
}

/// The shape of every node's value, checked as the reference understands the language.
pub fn shapes(nodes: &[Node]) -> Vec<Vec<usize>> {
    let mut shapes: Vec<Vec<usize>> = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        let of = |value: usize| {
            assert!(
                value < index,
                "node {index} reads node {value}, which is not before it"
            );
            shapes[value].clone()
        };
        let shape = match node {
            Node::Input(input) => {
                assert!((1..=3).contains(&input.dims.len()), "{input:?}");
                input.dims.clone()
            }
            Node::Layer(op, from) => layer_shape(*op, &of(*from))
                .unwrap_or_else(|problem| panic!("node {index}: {problem}")),
            Node::Merge(merge, a, b) => {
                let (a, b) = (of(*a), of(*b));
                assert_eq!(a, b, "node {index}: {merge:?} of different shapes");
                a
            }
            Node::Concat(parts) => {
                assert!(parts.len() >= 2, "node {index}: concat of {parts:?}");
                let mut shape = of(parts[0]);
                for &part in &parts[1..] {
                    let other = of(part);
                    assert_eq!(other[1..], shape[1..], "node {index}: concat {parts:?}");
                    shape[0] += other[0];
                }
                shape
            }
        };
        shapes.push(shape);
    }
    shapes
}

/// The shape of what `op` makes of a value of `shape`, as the reference understands the
/// language, or why the language rejects it.
pub fn layer_shape(op: Op, shape: &[usize]) -> Result<Vec<usize>, String> {
    let image = || match *shape {
        [c, h, w] => Ok((c, h, w)),
        _ => Err(format!("{op:?} on {shape:?}, which is not an image")),
    };
    let slide = |window: Window, (h, w): (usize, usize)| match (window.output(h), window.output(w))
    {
        (Some(oh), Some(ow)) => Ok((oh, ow)),
        _ => Err(format!("{window:?} does not slide over {h} × {w}")),
    };
    match op {
        // An image is read as its elements (as `flatten` gives them).
        Op::Affine(i, o) if size(shape) == i => Ok(vec![o]),
        Op::Affine(..) => Err(format!("{op:?} on {shape:?}")),
        Op::Softmax if shape.len() == 1 && shape[0] >= 2 => Ok(shape.to_vec()),
        Op::Softmax => Err(format!("softmax on {shape:?}")),
        Op::Relu | Op::Sigmoid | Op::Tanh | Op::LeakyRelu(_) | Op::Elu(_) => Ok(shape.to_vec()),
        Op::BatchNorm(momentum, eps) if !(0.0..=1.0).contains(&momentum) || eps <= 0.0 => {
            Err(format!(
                "batchnorm: momentum {momentum} is not in [0, 1], or ε = {eps} is not positive"
            ))
        }
        Op::Dropout(p) if !(0.0..1.0).contains(&p) => {
            Err(format!("dropout: p = {p} is not in [0, 1)"))
        }
        Op::BatchNorm(..) | Op::Dropout(_) => Ok(shape.to_vec()),
        Op::Conv2d(channels, filters, window) => {
            let (c, h, w) = image()?;
            if c != channels {
                return Err(format!("{op:?} on {c} channels"));
            }
            let (oh, ow) = slide(window, (h, w))?;
            Ok(vec![filters, oh, ow])
        }
        // A pooling's pad is at most half its window (as PyTorch's).
        Op::MaxPool(window) | Op::AvgPool(window) if 2 * window.pad > window.size => {
            Err(format!("{op:?}: the pad is more than half the window"))
        }
        Op::MaxPool(window) | Op::AvgPool(window) => {
            let (c, h, w) = image()?;
            let (oh, ow) = slide(window, (h, w))?;
            Ok(vec![c, oh, ow])
        }
        Op::Flatten if shape.len() > 1 => Ok(vec![size(shape)]),
        Op::Flatten => Err(format!("flatten on {shape:?}, which is features already")),
    }
}

/// Elements per sample of a value of this shape.
pub fn size(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The declared inputs, in order, with the first column of each in a batch.
pub fn inputs(nodes: &[Node]) -> Vec<(usize, &Input)> {
    let mut offset = 0;
    nodes
        .iter()
        .filter_map(|node| match node {
            Node::Input(input) => {
                let start = offset;
                offset += size(&input.dims);
                Some((start, input))
            }
            _ => None,
        })
        .collect()
}

/// The columns a network takes: its inputs' elements.
pub fn input_width(nodes: &[Node]) -> usize {
    inputs(nodes)
        .iter()
        .map(|(_, input)| size(&input.dims))
        .sum()
}

/// The columns a network produces: the elements of its last node's value.
pub fn output_width(nodes: &[Node]) -> usize {
    size(shapes(nodes).last().expect("a network has a node"))
}

/// The parameters of a network, named as the macro documents them: `affine{k}.weight` (in × out)
/// and `affine{k}.bias` (out), `conv2d{k}.weight` (out × in × kernel × kernel) and
/// `conv2d{k}.bias` (out), `batchnorm{k}.gamma` and `batchnorm{k}.beta` (one per channel of its
/// input), `k` counting the layers of each op from 0 in the order of the nodes (the order they
/// are written in, for a network written in topological order), with their shapes: a weight and
/// its bias (γ and β) for each layer with parameters, in the order of the nodes.
pub fn params(nodes: &[Node]) -> Vec<(String, Vec<usize>)> {
    layer_params(nodes)
        .into_iter()
        .flatten()
        .flat_map(|(prefix, pair)| pair.map(|(name, shape)| (format!("{prefix}.{name}"), shape)))
        .collect()
}

/// Each node's parameters, `None` for a node without any: the name before the dot (`affine0`,
/// `conv2d1`), and the names after it and the shapes of the weight and the bias (γ and β).
type ParamShapes = Option<(String, [(&'static str, Vec<usize>); 2])>;

/// [`ParamShapes`] of every node.
fn layer_params(nodes: &[Node]) -> Vec<ParamShapes> {
    let shapes = shapes(nodes);
    let mut counters = std::collections::HashMap::new();
    let mut next = |op: Op, pair: [(&'static str, Vec<usize>); 2]| {
        let k: &mut usize = counters.entry(op.name()).or_default();
        *k += 1;
        Some((format!("{}{}", op.name(), *k - 1), pair))
    };
    nodes
        .iter()
        .map(|node| match *node {
            Node::Layer(op, from) => match op {
                Op::Affine(i, o) => next(op, [("weight", vec![i, o]), ("bias", vec![o])]),
                Op::Conv2d(c, f, window) => next(
                    op,
                    [
                        ("weight", vec![f, c, window.size, window.size]),
                        ("bias", vec![f]),
                    ],
                ),
                Op::BatchNorm(..) => {
                    let channels = shapes[from][0];
                    next(op, [("gamma", vec![channels]), ("beta", vec![channels])])
                }
                Op::Relu
                | Op::Sigmoid
                | Op::Tanh
                | Op::LeakyRelu(_)
                | Op::Elu(_)
                | Op::Softmax
                | Op::MaxPool(_)
                | Op::AvgPool(_)
                | Op::Flatten
                | Op::Dropout(_) => None,
            },
            Node::Input(_) | Node::Merge(..) | Node::Concat(_) => None,
        })
        .collect()
}

/// The parameters of one layer with parameters, copied out of a network: the weight as a matrix of
/// its first dimension by the rest (in × out for `affine`; out × in·kernel·kernel for `conv2d`, in
/// the row-major order of its out × in × kernel × kernel; for `batchnorm`, γ as a column of one
/// per channel), and the bias (β).
#[derive(Debug, Clone)]
pub struct AffineParams<T> {
    pub weight: Array2<T>,
    pub bias: Array1<T>,
}

/// The targets of a loss.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a, T> {
    Classes(&'a [usize]),
    Values(&'a Array2<T>),
}

/// Where the backward pass starts.
#[derive(Debug, Clone, Copy)]
pub enum Head<'a, T> {
    /// A loss and its targets (`loss` then `backward`).
    Loss(Loss, Targets<'a, T>),
    /// A given gradient of the output (`backward_from`).
    OutputGrad(&'a Array2<T>),
}

/// Everything the reference computes for one batch.
#[derive(Debug, Clone)]
pub struct Reference<T> {
    /// The last node's value (what flows into the loss, if any): in an evaluation pass, what
    /// `forward` returns.
    pub output: Array2<T>,
    /// The index of the largest output of each row, the first on ties.
    pub predict: Vec<usize>,
    /// With a head: the loss and the backward pass.
    pub training: Option<Training<T>>,
    /// The running statistics after the pass, as [`State::buffers`] gives them.
    pub buffers: Vec<(String, Vec<T>, f64)>,
}

/// The loss and the backward pass.
///
/// Each gradient comes with the scale of its terms, for a network with a batch normalisation or
/// a dropout (0 for the others, whose numbers both sides compute with the same kernels): the
/// largest magnitude of an element that the backward pass would give with every number in it
/// replaced by its magnitude (the output gradient, the weights, each op's derivatives). Both sides
/// round the plain loops' numbers and the kernels' apart, by an ulp or so of those magnitudes;
/// where the terms cancel, as past a training pass's batch normalisation (whose input gradient is
/// the output gradient less its channel's mean and its projection on `x̂`; a bias right before
/// one has gradient 0, its values rounding alone on both sides), the comparison judges the
/// elements on that scale, as it judges an array's small elements on the array's.
#[derive(Debug, Clone)]
pub struct Training<T> {
    /// `None` for a backward pass from a given output gradient.
    pub loss: Option<T>,
    /// The gradient of every parameter, named and ordered as [`params`], values row-major, and
    /// the scale of its terms.
    pub grads: Vec<(String, Vec<T>, f64)>,
    /// The gradient of every input, in the order of [`inputs`], `#[grad]` or not, and the scale
    /// of its terms.
    pub input_grads: Vec<(Input, Array2<T>, f64)>,
}

/// A pass's mode, as the network's entry points set it: a training pass (`loss`) normalises with
/// the batch's statistics, moves the running ones and drops units; an evaluation pass (`forward`,
/// `predict`, and `backward_from` after `forward`) normalises with the running statistics and
/// drops nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Training,
    Evaluation,
}

/// What one pass leaves to the next: every batch normalisation's running statistics, and the
/// generator the dropout masks are drawn from.
#[derive(Debug, Clone)]
pub struct State<T> {
    /// Per node, for a batch normalisation: its running statistics.
    running: Vec<Option<Running<T>>>,
    /// The masks' generator, `kernels::mask_rng(seed)`, as `Network::seed_masks(seed)` restarts
    /// the network's.
    masks: MaskRng,
}

/// A batch normalisation's running statistics, per channel, in the element type as the network
/// keeps them.
#[derive(Debug, Clone)]
struct Running<T> {
    mean: Vec<T>,
    var: Vec<T>,
    /// The magnitudes of the terms of each running mean, the scale it is compared on: from 0 (the
    /// exact start), `(1 − momentum)·terms + momentum·mean(|x|)` at each training pass.
    mean_terms: Vec<f64>,
}

impl<T: Element> State<T> {
    /// The state of a network just made, its masks seeded by `seed`: every running mean 0 and
    /// variance 1, as PyTorch starts them.
    pub fn new(nodes: &[Node], seed: u64) -> Self {
        let shapes = shapes(nodes);
        let running = nodes
            .iter()
            .map(|node| match *node {
                Node::Layer(Op::BatchNorm(..), from) => {
                    let channels = shapes[from][0];
                    Some(Running {
                        mean: vec![T::zero(); channels],
                        var: vec![T::one(); channels],
                        mean_terms: vec![0.0; channels],
                    })
                }
                _ => None,
            })
            .collect();
        State {
            running,
            masks: kernels::mask_rng(seed),
        }
    }

    /// The running statistics as `Network::for_each_buffer` visits them:
    /// `batchnorm{k}.running_mean` and `batchnorm{k}.running_var` of every batch normalisation,
    /// in the order of the nodes, each with the scale of its terms (a running mean's; 0 for a
    /// variance, a sum of squares).
    pub fn buffers(&self, nodes: &[Node]) -> Vec<(String, Vec<T>, f64)> {
        let prefixes = layer_params(nodes);
        let mut buffers = Vec::new();
        for (running, prefix) in self.running.iter().zip(prefixes) {
            let (Some(running), Some((prefix, _))) = (running, prefix) else {
                continue;
            };
            let terms = running.mean_terms.iter().copied().fold(0.0, f64::max);
            buffers.push((
                format!("{prefix}.running_mean"),
                running.mean.clone(),
                terms,
            ));
            buffers.push((format!("{prefix}.running_var"), running.var.clone(), 0.0));
        }
        buffers
    }
}

/// What a node's forward pass keeps for its backward pass.
enum Kept {
    Nothing,
    /// Where a max pool found its maxima, for its backward kernel.
    Argmax(PoolArgmax),
    /// What a batch normalisation normalised with, per channel.
    Normalised(Normalised),
    /// A dropout's mask, per element of the batch (row-major): 0 where dropped, `1/(1 − p)` where
    /// kept; `None` after an evaluation pass, which keeps every element as it is.
    Mask(Option<Vec<f64>>),
}

/// The statistics a batch normalisation normalised with, per channel: `x̂ = (x − mean)·inv_std`.
struct Normalised {
    mean: Vec<f64>,
    inv_std: Vec<f64>,
    /// Whether they were the batch's (a training pass): then they depend on every element.
    batch: bool,
}

/// Runs the network `nodes` on `x` with the layers' parameters `params` (one per layer with
/// parameters, in the order of [`params`]) in a pass of `mode`, from `state` (which it leaves as
/// the network's pass leaves the network's): the forward pass, then, with a head, the loss kernel
/// (or the given output gradient) and every backward kernel in reverse order. Every node's input
/// gradients are computed, each into a fresh array; where a value is read by several nodes (or
/// twice by one), its gradients are added up.
pub fn evaluate<T: Element>(
    nodes: &[Node],
    params: &[AffineParams<T>],
    x: &Array2<T>,
    head: Option<Head<'_, T>>,
    mode: Mode,
    state: &mut State<T>,
) -> Reference<T> {
    let batch = x.nrows();
    let shapes = shapes(nodes);
    let alpha = |a: f64| T::from_f64(a);
    assert_eq!(x.ncols(), input_width(nodes), "the batch's columns");
    assert_eq!(state.running.len(), nodes.len(), "the state of these nodes");
    // Whether the reference computes some of the network with loops of its own, rounding apart
    // from the kernels.
    let rounds_apart = nodes
        .iter()
        .any(|node| matches!(node, Node::Layer(Op::BatchNorm(..) | Op::Dropout(_), _)));

    // Forward: `values[i]` is node `i`'s value.
    let layers = layer_params(nodes);
    let mut values: Vec<Array2<T>> = Vec::with_capacity(nodes.len());
    // What each node keeps for its backward pass.
    let mut kept: Vec<Kept> = Vec::with_capacity(nodes.len());
    let mut column = 0;
    let mut layer = 0;
    for (i, (node, shape)) in nodes.iter().zip(&shapes).enumerate() {
        let mut keep = Kept::Nothing;
        let mut y = Array2::zeros((batch, size(shape)));
        match node {
            Node::Input(_) => {
                y.assign(&x.slice(s![.., column..column + size(shape)]));
                column += size(shape);
            }
            &Node::Layer(op, from) => {
                let x = values[from].view();
                let y = y.view_mut();
                let image = &shapes[from];
                match op {
                    Op::Affine(..) => {
                        let p = &params[layer];
                        layer += 1;
                        kernels::affine_forward(x, p.weight.view(), p.bias.view(), y);
                    }
                    Op::Conv2d(_, filters, window) => {
                        let p = &params[layer];
                        layer += 1;
                        let g = conv_geometry(image, filters, window);
                        let w = conv_weight(p, g);
                        let scratch = &mut ConvScratch::default();
                        kernels::conv2d_forward(x, w, p.bias.view(), y, scratch, g);
                    }
                    Op::MaxPool(window) => {
                        let mut found = PoolArgmax::default();
                        kernels::max_pool_forward(x, y, &mut found, pool_geometry(image, window));
                        keep = Kept::Argmax(found);
                    }
                    Op::AvgPool(window) => {
                        kernels::avg_pool_forward(x, y, pool_geometry(image, window));
                    }
                    Op::Flatten => kernels::flatten_forward(x, y),
                    Op::Relu => kernels::relu_forward(x, y),
                    Op::Sigmoid => kernels::sigmoid_forward(x, y),
                    Op::Tanh => kernels::tanh_forward(x, y),
                    Op::LeakyRelu(a) => kernels::leaky_relu_forward(x, y, alpha(a)),
                    Op::Elu(a) => kernels::elu_forward(x, y, alpha(a)),
                    Op::Softmax => kernels::softmax_forward(x, y),
                    Op::BatchNorm(momentum, eps) => {
                        let p = &params[layer];
                        layer += 1;
                        let running = state.running[i].as_mut().expect("made for each batchnorm");
                        let used =
                            batchnorm_forward(x, p, y, running, image, (momentum, eps), mode);
                        keep = Kept::Normalised(used);
                    }
                    Op::Dropout(p) => {
                        keep = Kept::Mask(dropout_forward(x, y, p, &mut state.masks, mode));
                    }
                }
            }
            &Node::Merge(merge, a, b) => {
                let (a, b, y) = (values[a].view(), values[b].view(), y.view_mut());
                match merge {
                    Merge::Add => kernels::add_forward(a, b, y),
                    Merge::Sub => kernels::sub_forward(a, b, y),
                    Merge::Mul => kernels::mul_forward(a, b, y),
                    Merge::Div => kernels::div_forward(a, b, y),
                }
            }
            Node::Concat(parts) => {
                let parts: Vec<ArrayView2<T>> = parts.iter().map(|&p| values[p].view()).collect();
                kernels::concat_forward(&parts, y.view_mut());
            }
        }
        values.push(y);
        kept.push(keep);
    }
    assert_eq!(
        layer,
        params.len(),
        "one parameter set per layer with parameters"
    );
    let output = values.last().expect("the output is there").clone();
    let predict = output.rows().into_iter().map(first_argmax).collect();

    let training = head.map(|head| {
        // The loss, and the gradient with respect to the output.
        let mut dy = Array2::zeros(output.raw_dim());
        let loss = match head {
            Head::Loss(Loss::SoftmaxCrossEntropy, Targets::Classes(t)) => Some(
                kernels::softmax_cross_entropy(output.view(), t, dy.view_mut()),
            ),
            Head::Loss(Loss::Mse, Targets::Values(t)) => {
                Some(kernels::mse(output.view(), t.view(), dy.view_mut()))
            }
            Head::Loss(loss, targets) => panic!("{loss:?} cannot take {targets:?}"),
            Head::OutputGrad(given) => {
                dy.assign(given);
                None
            }
        };

        // Backward, node by node in reverse. `grads[i]` is the sum of the gradients of node `i`'s
        // value that have come back so far; every reader of a value comes after it, so it is
        // complete when its node's turn comes. `terms[i]` is the same with every number replaced
        // by its magnitude (see `Training`).
        let mut terms: Vec<Option<Array2<f64>>> = vec![None; nodes.len()];
        *terms.last_mut().expect("the output is there") = Some(magnitudes(dy.view()));
        let mut grads: Vec<Option<Array2<T>>> = vec![None; nodes.len()];
        *grads.last_mut().expect("the output is there") = Some(dy);
        fn add<A: std::ops::Add<Output = A>>(sum: &mut Option<A>, more: A) {
            *sum = Some(match sum.take() {
                None => more,
                Some(sum) => sum + more,
            });
        }
        let add_to = |grads: &mut [Option<Array2<T>>],
                      terms: &mut [Option<Array2<f64>>],
                      value: usize,
                      dx: Array2<T>,
                      m: Array2<f64>| {
            add(&mut grads[value], dx);
            add(&mut terms[value], m);
        };
        let mut param_grads = Vec::new();
        // The scale a gradient is judged on: its terms' largest, where the two sides round apart.
        let judged = |m: &Array2<f64>| match rounds_apart {
            true => m.iter().copied().fold(0.0, f64::max),
            false => 0.0,
        };
        for (i, node) in nodes.iter().enumerate().rev() {
            let Some(dy) = grads[i].clone() else {
                continue;
            };
            let m = terms[i].clone().expect("a gradient has its terms");
            let (y, dy, m) = (values[i].view(), dy.view(), m.view());
            let fresh = |value: usize| Array2::<T>::zeros(values[value].raw_dim());
            let fresh_terms = |value: usize| Array2::<f64>::zeros(values[value].raw_dim());
            match node {
                Node::Input(_) => {}
                &Node::Layer(op, from) => {
                    let x = values[from].view();
                    let image = &shapes[from];
                    let mut dx = fresh(from);
                    let d = dx.view_mut();
                    let mut m_dx = fresh_terms(from);
                    let prefix = || {
                        let (prefix, ..) = layers[i].as_ref().expect("the layer has parameters");
                        prefix.as_str()
                    };
                    // The magnitudes of an elementwise op's derivatives, from its backward kernel.
                    let slopes = |backward: &dyn Fn(ArrayViewMut2<'_, T>)| {
                        let mut slope = Array2::<T>::zeros(y.raw_dim());
                        backward(slope.view_mut());
                        magnitudes(slope.view()) * m
                    };
                    let ones = Array2::<T>::ones(y.raw_dim());
                    let ones = ones.view();
                    match op {
                        Op::Affine(..) => {
                            layer -= 1;
                            let p = &params[layer];
                            let mut dw = Array2::zeros(p.weight.raw_dim());
                            let mut db = Array1::zeros(p.bias.raw_dim());
                            kernels::affine_backward_params(x, dy, dw.view_mut(), db.view_mut());
                            kernels::affine_backward_input(p.weight.view(), dy, d, Set);
                            m_dx = m.dot(&magnitudes(p.weight.view()).t());
                            let m_dw = magnitudes(x).t().dot(&m);
                            let m_db = m.sum_axis(Axis(0)).insert_axis(Axis(0));
                            param_grads.push((
                                format!("{}.bias", prefix()),
                                db.to_vec(),
                                judged(&m_db),
                            ));
                            param_grads.push((
                                format!("{}.weight", prefix()),
                                dw.iter().copied().collect(),
                                judged(&m_dw),
                            ));
                        }
                        Op::Conv2d(_, filters, window) => {
                            layer -= 1;
                            let p = &params[layer];
                            let g = conv_geometry(image, filters, window);
                            kernels::conv2d_backward_input(
                                conv_weight(p, g),
                                dy,
                                d,
                                Set,
                                &mut ConvScratch::default(),
                                g,
                            );
                            let w = magnitudes(p.weight.view());
                            kernels::conv2d_backward_input(
                                w.view()
                                    .into_shape_with_order((
                                        g.filters, g.channels, g.kernel, g.kernel,
                                    ))
                                    .expect("out × in·kernel·kernel"),
                                m,
                                m_dx.view_mut(),
                                Set,
                                &mut ConvScratch::default(),
                                g,
                            );
                            let (dw, db) = conv2d_param_grads(x, dy, g);
                            let sums = ConvSums::new(magnitudes(x).view(), m, g);
                            let largest = |sums: &[(f64, f64)]| match rounds_apart {
                                true => sums.iter().map(|&(sum, _)| sum).fold(0.0, f64::max),
                                false => 0.0,
                            };
                            param_grads.push((format!("{}.bias", prefix()), db, largest(&sums.db)));
                            param_grads.push((
                                format!("{}.weight", prefix()),
                                dw,
                                largest(&sums.dw),
                            ));
                        }
                        Op::MaxPool(window) => {
                            let Kept::Argmax(found) = &kept[i] else {
                                unreachable!("a max pool keeps its maxima")
                            };
                            let g = pool_geometry(image, window);
                            kernels::max_pool_backward(dy, d, Set, found, g);
                            kernels::max_pool_backward(m, m_dx.view_mut(), Set, found, g);
                        }
                        Op::AvgPool(window) => {
                            let g = pool_geometry(image, window);
                            kernels::avg_pool_backward(dy, d, Set, g);
                            kernels::avg_pool_backward(m, m_dx.view_mut(), Set, g);
                        }
                        Op::Flatten => {
                            kernels::flatten_backward(y, dy, d, Set);
                            m_dx.assign(&m);
                        }
                        Op::Relu => {
                            kernels::relu_backward(y, dy, d, Set);
                            m_dx = slopes(&|s| kernels::relu_backward(y, ones, s, Set));
                        }
                        Op::Sigmoid => {
                            kernels::sigmoid_backward(y, dy, d, Set);
                            m_dx = slopes(&|s| kernels::sigmoid_backward(y, ones, s, Set));
                        }
                        Op::Tanh => {
                            kernels::tanh_backward(y, dy, d, Set);
                            m_dx = slopes(&|s| kernels::tanh_backward(y, ones, s, Set));
                        }
                        Op::LeakyRelu(a) => {
                            kernels::leaky_relu_backward(y, dy, d, Set, alpha(a));
                            m_dx = slopes(&|s| {
                                kernels::leaky_relu_backward(y, ones, s, Set, alpha(a))
                            });
                        }
                        Op::Elu(a) => {
                            kernels::elu_backward(y, dy, d, Set, alpha(a));
                            m_dx = slopes(&|s| kernels::elu_backward(y, ones, s, Set, alpha(a)));
                        }
                        Op::Softmax => {
                            kernels::softmax_backward(y, dy, d, Set);
                            // dx = y·(dy − Σ y·dy): its terms, y·(m + Σ y·m).
                            for r in 0..y.nrows() {
                                let y = y.row(r).mapv(|v| Element::to_f64(v));
                                let through = y.dot(&m.row(r));
                                for (j, &y) in y.iter().enumerate() {
                                    m_dx[(r, j)] = y * (m[(r, j)] + through);
                                }
                            }
                        }
                        Op::BatchNorm(..) => {
                            layer -= 1;
                            let Kept::Normalised(used) = &kept[i] else {
                                unreachable!("a batchnorm keeps its statistics")
                            };
                            let [(dgamma, m_dgamma), (dbeta, m_dbeta)] = batchnorm_backward(
                                (x, dy, m),
                                &params[layer],
                                (d, m_dx.view_mut()),
                                used,
                                image[0],
                            );
                            param_grads.push((
                                format!("{}.beta", prefix()),
                                dbeta,
                                judged(&m_dbeta),
                            ));
                            param_grads.push((
                                format!("{}.gamma", prefix()),
                                dgamma,
                                judged(&m_dgamma),
                            ));
                        }
                        Op::Dropout(_) => {
                            let Kept::Mask(mask) = &kept[i] else {
                                unreachable!("a dropout keeps its mask")
                            };
                            dropout_backward(dy, d, mask.as_deref());
                            let width = m.ncols();
                            m_dx = Array2::from_shape_fn(m.raw_dim(), |(r, j)| {
                                m[(r, j)] * mask.as_ref().map_or(1.0, |mask| mask[r * width + j])
                            });
                        }
                    }
                    add_to(&mut grads, &mut terms, from, dx, m_dx);
                }
                &Node::Merge(merge, a, b) => {
                    let (va, vb) = (values[a].view(), values[b].view());
                    let (mut da, mut db) = (fresh(a), fresh(b));
                    let (ga, gb) = (da.view_mut(), db.view_mut());
                    let (ma, mb) = (magnitudes(va), magnitudes(vb));
                    let (m_da, m_db) = match merge {
                        Merge::Add => {
                            kernels::add_backward_a(va, vb, y, dy, ga, Set);
                            kernels::add_backward_b(va, vb, y, dy, gb, Set);
                            (m.to_owned(), m.to_owned())
                        }
                        Merge::Sub => {
                            kernels::sub_backward_a(va, vb, y, dy, ga, Set);
                            kernels::sub_backward_b(va, vb, y, dy, gb, Set);
                            (m.to_owned(), m.to_owned())
                        }
                        Merge::Mul => {
                            kernels::mul_backward_a(va, vb, y, dy, ga, Set);
                            kernels::mul_backward_b(va, vb, y, dy, gb, Set);
                            (&m * &mb, &m * &ma)
                        }
                        Merge::Div => {
                            kernels::div_backward_a(va, vb, y, dy, ga, Set);
                            kernels::div_backward_b(va, vb, y, dy, gb, Set);
                            (&m / &mb, &m * &ma / (&mb * &mb))
                        }
                    };
                    add_to(&mut grads, &mut terms, a, da, m_da);
                    add_to(&mut grads, &mut terms, b, db, m_db);
                }
                Node::Concat(parts) => {
                    let mut offset = 0;
                    for &part in parts {
                        let mut dx = fresh(part);
                        kernels::concat_backward(dy, offset, dx.view_mut(), Set);
                        let width = dx.ncols();
                        let m_dx = m.slice(s![.., offset..offset + width]).to_owned();
                        offset += width;
                        add_to(&mut grads, &mut terms, part, dx, m_dx);
                    }
                }
            }
        }
        param_grads.reverse();
        let input_grads = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, node)| match node {
                Node::Input(input) => Some((
                    input.clone(),
                    grads[i]
                        .clone()
                        .unwrap_or_else(|| Array2::zeros(values[i].raw_dim())),
                    terms[i].as_ref().map_or(0.0, judged),
                )),
                _ => None,
            })
            .collect();
        Training {
            loss,
            grads: param_grads,
            input_grads,
        }
    });

    Reference {
        output,
        predict,
        training,
        buffers: state.buffers(nodes),
    }
}

/// The magnitudes of the elements of `a`, in `f64`.
fn magnitudes<T: Element>(a: ArrayView2<'_, T>) -> Array2<f64> {
    a.mapv(|v| Element::to_f64(v).abs())
}

/// Batch normalisation, forward, with plain loops: with `image` the shape of a sample of `x`
/// (channels first, the rest positions), `y = γ·(x − μ)/√(σ² + ε) + β` per channel, with μ and
/// σ² the batch's mean and biased variance over its rows and positions (summed in `f64`) in a
/// training pass, which also moves the running statistics towards them (`r ← (1 − momentum)·r +
/// momentum·batch`, the variance made unbiased by `n/(n − 1)` where there are n > 1 values per
/// channel), and the running statistics in an evaluation pass. Returns what it normalised with.
///
/// The output is computed in the element type as the runtime documents it, `(x − μ)·a + β` with
/// μ and `a = γ/σ` rounded to it: the two sides then agree on it to the last bit, as on every
/// kernel's output, so that in `f32` what reads it (an affine layer's weight gradient, summed
/// over the batch of values whose mean was subtracted) does not start from values an ulp of μ
/// apart.
fn batchnorm_forward<T: Element>(
    x: ArrayView2<'_, T>,
    p: &AffineParams<T>,
    mut y: ArrayViewMut2<'_, T>,
    running: &mut Running<T>,
    image: &[usize],
    (momentum, eps): (f64, f64),
    mode: Mode,
) -> Normalised {
    let channels = image[0];
    let spatial = size(&image[1..]);
    let n = (x.nrows() * spatial) as f64;
    let at = |c: usize, j: usize| c * spatial + j;
    let mut used = Normalised {
        mean: Vec::with_capacity(channels),
        inv_std: Vec::with_capacity(channels),
        batch: mode == Mode::Training,
    };
    for c in 0..channels {
        let (mean, var) = match mode {
            Mode::Training => {
                let (mut sum, mut magnitude) = (0.0, 0.0);
                for r in 0..x.nrows() {
                    for j in 0..spatial {
                        let v = Element::to_f64(x[(r, at(c, j))]);
                        sum += v;
                        magnitude += v.abs();
                    }
                }
                let mean = sum / n;
                let mut squares = 0.0;
                for r in 0..x.nrows() {
                    for j in 0..spatial {
                        squares += (Element::to_f64(x[(r, at(c, j))]) - mean).powi(2);
                    }
                }
                let var = squares / n;
                let unbiased = if n > 1.0 { var * n / (n - 1.0) } else { var };
                let move_towards = |r: &mut T, batch: f64| {
                    *r = T::from_f64((1.0 - momentum) * Element::to_f64(*r) + momentum * batch);
                };
                move_towards(&mut running.mean[c], mean);
                move_towards(&mut running.var[c], unbiased);
                let terms = &mut running.mean_terms[c];
                *terms = (1.0 - momentum) * *terms + momentum * magnitude / n;
                (mean, var)
            }
            Mode::Evaluation => (
                Element::to_f64(running.mean[c]),
                Element::to_f64(running.var[c]),
            ),
        };
        used.mean.push(mean);
        used.inv_std.push(1.0 / (var + eps).sqrt());
    }
    for c in 0..channels {
        let mean = T::from_f64(used.mean[c]);
        let a = T::from_f64(Element::to_f64(p.weight[(c, 0)]) * used.inv_std[c]);
        for r in 0..x.nrows() {
            for j in 0..spatial {
                y[(r, at(c, j))] = (x[(r, at(c, j))] - mean) * a + p.bias[c];
            }
        }
    }
    used
}

/// A parameter's gradient from [`batchnorm_backward`], and its terms (see [`Training`]).
type NormGrad<T> = (Vec<T>, Array2<f64>);

/// Batch normalisation, backward, with plain loops in `f64`, into `dx`, for the statistics its
/// forward pass used (`used`) on the `channels` channels of the rows of `x`: with `x̂ = (x −
/// μ)/σ`, `dβ = Σ dy` and `dγ = Σ dy·x̂` over the rows and positions, and `dx = γ/σ·(dy − Σdy/n −
/// x̂·Σ(dy·x̂)/n)` after a training pass (μ and σ depend on every element of the channel),
/// `dx = γ/σ·dy` after an evaluation pass. The same into `m_dx` for the terms `m` of `dy` (see
/// [`Training`]). Returns the gradients of γ and β.
fn batchnorm_backward<T: Element>(
    (x, dy, m): (ArrayView2<'_, T>, ArrayView2<'_, T>, ArrayView2<'_, f64>),
    p: &AffineParams<T>,
    (mut dx, mut m_dx): (ArrayViewMut2<'_, T>, ArrayViewMut2<'_, f64>),
    used: &Normalised,
    channels: usize,
) -> [NormGrad<T>; 2] {
    let spatial = x.ncols() / channels;
    let n = (x.nrows() * spatial) as f64;
    let at = |c: usize, j: usize| c * spatial + j;
    let (mut dgamma, mut dbeta) = (Vec::with_capacity(channels), Vec::with_capacity(channels));
    let (mut m_dgamma, mut m_dbeta) = (Array2::zeros((1, channels)), Array2::zeros((1, channels)));
    for c in 0..channels {
        let (mean, inv_std) = (used.mean[c], used.inv_std[c]);
        let x_hat = |r: usize, j: usize| (Element::to_f64(x[(r, at(c, j))]) - mean) * inv_std;
        let (mut sum_dy, mut sum_dy_x_hat) = (0.0, 0.0);
        let (mut sum_m, mut sum_m_x_hat) = (0.0, 0.0);
        for r in 0..x.nrows() {
            for j in 0..spatial {
                let d = Element::to_f64(dy[(r, at(c, j))]);
                sum_dy += d;
                sum_dy_x_hat += d * x_hat(r, j);
                sum_m += m[(r, at(c, j))];
                sum_m_x_hat += m[(r, at(c, j))] * x_hat(r, j).abs();
            }
        }
        dgamma.push(T::from_f64(sum_dy_x_hat));
        dbeta.push(T::from_f64(sum_dy));
        m_dgamma[(0, c)] = sum_m_x_hat;
        m_dbeta[(0, c)] = sum_m;
        let scale = Element::to_f64(p.weight[(c, 0)]) * inv_std;
        for r in 0..x.nrows() {
            for j in 0..spatial {
                let (d, m) = (Element::to_f64(dy[(r, at(c, j))]), m[(r, at(c, j))]);
                let (value, terms) = if used.batch {
                    let x_hat = x_hat(r, j);
                    (
                        scale * (d - sum_dy / n - x_hat * sum_dy_x_hat / n),
                        scale.abs() * (m + sum_m / n + x_hat.abs() * sum_m_x_hat / n),
                    )
                } else {
                    (scale * d, scale.abs() * m)
                };
                dx[(r, at(c, j))] = T::from_f64(value);
                m_dx[(r, at(c, j))] = terms;
            }
        }
    }
    [(dgamma, m_dgamma), (dbeta, m_dbeta)]
}

/// Inverted dropout, forward, with plain loops: in a training pass each element of `x`, row by
/// row, is kept where a `next_u32` of `masks` is at least `p·2³²` (truncated), then scaled by
/// `1/(1 − p)` (rounded to the element type), and zeroed elsewhere; returns that mask. In an
/// evaluation pass `y = x`, no mask and nothing drawn.
fn dropout_forward<T: Element>(
    x: ArrayView2<'_, T>,
    mut y: ArrayViewMut2<'_, T>,
    p: f64,
    masks: &mut MaskRng,
    mode: Mode,
) -> Option<Vec<f64>> {
    if mode == Mode::Evaluation {
        y.assign(&x);
        return None;
    }
    let threshold = (p * 4_294_967_296.0) as u64;
    let mut mask = Vec::with_capacity(x.len());
    for r in 0..x.nrows() {
        for j in 0..x.ncols() {
            let m = if u64::from(masks.next_u32()) >= threshold {
                1.0 / (1.0 - p)
            } else {
                0.0
            };
            y[(r, j)] = x[(r, j)] * T::from_f64(m);
            mask.push(m);
        }
    }
    Some(mask)
}

/// Inverted dropout, backward, into `dx`: `dx = dy·mask` after a training pass, `dx = dy` after an
/// evaluation pass (no mask).
fn dropout_backward<T: Element>(
    dy: ArrayView2<'_, T>,
    mut dx: ArrayViewMut2<'_, T>,
    mask: Option<&[f64]>,
) {
    let width = dy.ncols();
    for r in 0..dy.nrows() {
        for j in 0..width {
            let m = mask.map_or(1.0, |mask| mask[r * width + j]);
            dx[(r, j)] = dy[(r, j)] * T::from_f64(m);
        }
    }
}

/// The geometry of a convolution of `filters` filters sliding `window` over images of `shape`.
fn conv_geometry(shape: &[usize], filters: usize, window: Window) -> Conv2d {
    let &[channels, height, width] = shape else {
        unreachable!("shapes checked that a convolution reads an image, not {shape:?}")
    };
    Conv2d {
        channels,
        height,
        width,
        filters,
        kernel: window.size,
        stride: window.stride,
        pad: window.pad,
    }
}

/// The geometry of a pooling sliding `window` over images of `shape`.
fn pool_geometry(shape: &[usize], window: Window) -> Pool2d {
    let &[channels, height, width] = shape else {
        unreachable!("shapes checked that a pooling reads an image, not {shape:?}")
    };
    Pool2d {
        channels,
        height,
        width,
        window: window.size,
        stride: window.stride,
        pad: window.pad,
    }
}

/// A convolution's weight, out × in × kernel × kernel.
fn conv_weight<T: Element>(p: &AffineParams<T>, g: Conv2d) -> ArrayView4<'_, T> {
    p.weight
        .view()
        .into_shape_with_order((g.filters, g.channels, g.kernel, g.kernel))
        .expect("a convolution's weight has out × in·kernel·kernel elements")
}

/// The gradients of a convolution's weight (out × in × kernel × kernel, row-major) and bias from
/// its input `x` and the gradient of its output `dy` (both a batch of rows, each channel × height
/// × width): the runtime kernel's, on parameters of the reference's own, after checking each of
/// them against [`ConvSums`], their sums from the definition.
fn conv2d_param_grads<T: Element>(
    x: ArrayView2<'_, T>,
    dy: ArrayView2<'_, T>,
    g: Conv2d,
) -> (Vec<T>, Vec<T>) {
    let (f, c, k) = (g.filters, g.channels, g.kernel);
    let mut weight = Param::<T, Ix4>::zeros("weight", (f, c, k, k));
    let mut bias = Param::<T, Ix1>::zeros("bias", f);
    let scratch = &mut ConvScratch::default();
    kernels::conv2d_param_grads_or_step(x, dy, &mut weight, &mut bias, None, scratch, g);
    let dw: Vec<T> = weight.grad().iter().copied().collect();
    let db: Vec<T> = bias.grad().iter().copied().collect();
    let sums = ConvSums::new(x, dy, g);
    // A sum of n products computed in T is off by at most about (n + 1)·ε/2 times the sum of the
    // products' magnitudes (their rounding and the additions'); so are the sums here, in f64
    // (exact products of T's values, in f32).
    let terms = sums.terms;
    let bound = (terms + 2) as f64 * Element::to_f64(T::epsilon());
    for (what, kernel, sums) in [("dW", &dw, &sums.dw), ("db", &db, &sums.db)] {
        for (i, (&got, &(sum, magnitude))) in kernel.iter().zip(sums).enumerate() {
            let got = Element::to_f64(got);
            let allowed = bound * magnitude;
            assert!(
                (got - sum).abs() <= allowed,
                "conv2d_param_grads_or_step gives {what}[{i}] = {got:e}, its definition {sum:e} \
                 (difference {:e}, allowed {allowed:e} for a sum of {terms} terms of \
                 magnitudes summing to {magnitude:e}) for {g:?}",
                (got - sum).abs(),
            );
        }
    }
    (dw, db)
}

/// A convolution's parameter gradients summed with plain loops, in `f64`, straight from the
/// definition `y[o, i, j] = b[o] + Σ_c,u,v W[o, c, u, v]·x[c, s·i + u − p, s·j + v − p]` (zero
/// outside x): `dW[o, c, u, v] = Σ_rows,i,j dy[o, i, j]·x[c, s·i + u − p, s·j + v − p]` and
/// `db[o] = Σ_rows,i,j dy[o, i, j]`; each element with the sum of its terms' magnitudes.
struct ConvSums {
    /// Row-major, out × in × kernel × kernel: the sum, and the sum of its terms' magnitudes.
    dw: Vec<(f64, f64)>,
    db: Vec<(f64, f64)>,
    /// The terms of each sum: rows × output positions.
    terms: usize,
}

impl ConvSums {
    fn new<T: Element>(x: ArrayView2<'_, T>, dy: ArrayView2<'_, T>, g: Conv2d) -> Self {
        let Conv2d {
            channels,
            height,
            width,
            filters,
            kernel,
            stride,
            pad,
        } = g;
        let oh = (height + 2 * pad - kernel) / stride + 1;
        let ow = (width + 2 * pad - kernel) / stride + 1;
        assert_eq!(
            x.ncols(),
            channels * height * width,
            "the convolution's input"
        );
        assert_eq!(
            dy.ncols(),
            filters * oh * ow,
            "the convolution's output gradient"
        );
        // The input's row (or column) under kernel offset `u` of output row `i`, if not padding.
        let at = |i: usize, u: usize, side: usize| {
            (stride * i + u).checked_sub(pad).filter(|&r| r < side)
        };
        let add = |sum: &mut (f64, f64), term: f64| {
            sum.0 += term;
            sum.1 += term.abs();
        };
        let mut dw = vec![(0.0, 0.0); filters * channels * kernel * kernel];
        let mut db = vec![(0.0, 0.0); filters];
        for (x, dy) in x.rows().into_iter().zip(dy.rows()) {
            for o in 0..filters {
                for i in 0..oh {
                    for j in 0..ow {
                        let d = Element::to_f64(dy[(o * oh + i) * ow + j]);
                        add(&mut db[o], d);
                        for c in 0..channels {
                            for u in 0..kernel {
                                let Some(r) = at(i, u, height) else { continue };
                                for v in 0..kernel {
                                    let Some(q) = at(j, v, width) else { continue };
                                    let x = Element::to_f64(x[(c * height + r) * width + q]);
                                    add(
                                        &mut dw[((o * channels + c) * kernel + u) * kernel + v],
                                        d * x,
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        ConvSums {
            dw,
            db,
            terms: x.nrows() * oh * ow,
        }
    }
}

/// The column of the largest value in a row, the first one on ties.
fn first_argmax<T: Element>(row: chainrule::ndarray::ArrayView1<'_, T>) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}
