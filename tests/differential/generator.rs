//! The generator of `networks.rs`: random chains and graphs from fixed seeds (the convolutional
//! ones from seeds of their own, after the others, so that adding them changed none of the
//! others; then, as well, those with batch normalisation and dropout), and a few graphs written
//! here by hand, each written out as a `network!` item with the
//! description the reference evaluator runs (an op list for a chain, a node list for a graph),
//! both made from one spec.
//!
//! It has its own tiny generator (splitmix64), so that its output depends on nothing but this file:
//! no crate upgrade can change the committed networks.

use std::collections::{BTreeSet, HashMap};

use super::reference::{self, Input, Loss, Merge, Node, Op, Window, avg_pool, conv2d, max_pool};

/// How many chains on features (and images without convolutions) `networks.rs` holds.
const FEATURE_CHAINS: usize = 26;

/// How many convolutional chains it holds, after those.
const CONV_CHAINS: usize = 9;

/// How many chains with batch normalisation and dropout it holds, after those.
const NORM_CHAINS: usize = 12;

/// How many chains `networks.rs` holds.
pub const NETWORKS: usize = FEATURE_CHAINS + CONV_CHAINS + NORM_CHAINS;

/// How many random graphs without convolutions it holds.
const FEATURE_GRAPHS: usize = 7;

/// How many random graphs of images with convolutions it holds, after those.
const CONV_GRAPHS: usize = 3;

/// How many random graphs with batch normalisation and dropout it holds, after those: half of
/// features, half of images with convolutions.
const NORM_GRAPHS: usize = 4;

/// How many random graphs `networks.rs` holds (besides the hand-written ones of [`fixed_graphs`]).
pub const GRAPHS: usize = FEATURE_GRAPHS + CONV_GRAPHS + NORM_GRAPHS;

/// The seed of the chains.
const SEED: u64 = 0x00c4_a1d2_0e1e_005f;

/// The seed of the convolutional chains.
const CONV_SEED: u64 = 0x00c4_a1d2_0e1e_0035;

/// The seed of the random graphs.
const GRAPH_SEED: u64 = 0x00c4_a1d2_0e1e_00d3;

/// The seed of the random graphs with convolutions.
const CONV_GRAPH_SEED: u64 = 0x00c4_a1d2_0e1e_0002;

/// The seed of the chains with batch normalisation and dropout.
const NORM_SEED: u64 = 0x00c4_a1d2_0e1e_00b7;

/// The seed of the random graphs with batch normalisation and dropout.
const NORM_GRAPH_SEED: u64 = 0x00c4_a1d2_0e1e_006e;

/// splitmix64 (Steele, Lea and Flood): tiny, and good enough to pick shapes.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (the modulo bias is irrelevant here).
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    /// A layer width in `min..=12`, the extremes more often than the rest.
    fn width(&mut self, min: usize) -> usize {
        match self.range(0, 9) {
            0 => min,
            1 => 12,
            _ => self.range(min, 12),
        }
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// One of `items`.
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.range(0, items.len() - 1)].clone()
    }

    /// An activation for a value of `shape`: the book's three more often than the rest, with α
    /// from a small fixed set; `softmax` only on features, at least 2 of them.
    fn activation(&mut self, shape: &[usize]) -> Op {
        loop {
            let op = match self.range(0, 10) {
                0 | 1 => Op::Relu,
                2 | 3 => Op::Sigmoid,
                4 | 5 => Op::Tanh,
                6 | 7 => Op::LeakyRelu(self.pick(&[0.01, 0.1, 0.3])),
                8 | 9 => Op::Elu(self.pick(&[0.5, 1.0])),
                _ => Op::Softmax,
            };
            if op != Op::Softmax || (shape.len() == 1 && shape[0] >= 2) {
                return op;
            }
        }
    }

    /// A `batchnorm` with options from a small fixed set, each written in its own way
    /// ([`Op::source`]): the defaults most often; momentum 0 (the running statistics never move)
    /// and 1 (they are the last batch's).
    fn batchnorm(&mut self) -> Op {
        match self.range(0, 5) {
            0 | 1 => Op::BatchNorm(0.1, 1e-5),
            2 => Op::BatchNorm(0.5, 1e-5),
            3 => Op::BatchNorm(0.1, 1e-3),
            4 => Op::BatchNorm(1.0, 0.01),
            _ => Op::BatchNorm(0.0, 1e-4),
        }
    }

    /// A `dropout` with p from a small fixed set, each written in its own way ([`Op::source`]),
    /// 0 among them (it keeps every element, but still draws its mask).
    fn dropout(&mut self) -> Op {
        Op::Dropout(self.pick(&[0.0, 0.1, 0.25, 0.5]))
    }

    /// A `batchnorm` or a `dropout`, each about as often.
    fn norm(&mut self) -> Op {
        if self.chance(55) {
            self.batchnorm()
        } else {
            self.dropout()
        }
    }

    /// A `conv2d` on images of `shape`: 1 to 3 filters, a kernel of 1 to 3, stride 1 or 2, pad 0
    /// or 1 (smaller than the kernel); `None` if the kernel does not fit.
    fn conv(&mut self, shape: &[usize]) -> Option<Op> {
        let kernel = self.range(1, 3);
        let stride = self.range(1, 2);
        let pad = self.range(0, 1).min(kernel - 1);
        let filters = self.range(1, 3);
        let window = self.window(shape, kernel, stride, pad)?;
        Some(Op::Conv2d(shape[0], filters, window))
    }

    /// A `conv2d` on images of `shape` that keeps their height and width (a kernel of 1, or of 3
    /// padded by 1), to a number of channels mostly from `outers`, so that its output can be
    /// merged.
    fn same_size_conv(&mut self, shape: &[usize], outers: &[usize]) -> Op {
        let kernel = if self.chance(50) { 1 } else { 3 };
        let filters = if self.chance(70) {
            self.pick(outers)
        } else {
            self.range(1, 3)
        };
        let window = Window {
            size: kernel,
            stride: 1,
            pad: kernel / 2,
            exact: true,
        };
        Op::Conv2d(shape[0], filters, window)
    }

    /// A pooling's window on images of `shape`: 2, mostly with stride 2 and no pad; `None` if it
    /// does not fit.
    fn pool(&mut self, shape: &[usize]) -> Option<Window> {
        let stride = if self.chance(25) { 1 } else { 2 };
        let pad = if self.chance(25) { 1 } else { 0 };
        self.window(shape, 2, stride, pad)
    }

    /// A `max_pool` or an `avg_pool` on images of `shape`, if its window fits.
    fn pooling(&mut self, shape: &[usize]) -> Option<Op> {
        let max = self.chance(50);
        let window = self.pool(shape)?;
        Some(if max {
            Op::MaxPool(window)
        } else {
            Op::AvgPool(window)
        })
    }

    /// A window of `size`, `stride` and `pad` on images of `shape`, if it fits: `exact` unless it
    /// does not tile them (and now and then even so).
    fn window(
        &mut self,
        shape: &[usize],
        size: usize,
        stride: usize,
        pad: usize,
    ) -> Option<Window> {
        let mut window = Window {
            size,
            stride,
            pad,
            exact: true,
        };
        let (_, rows) = window.slide(shape[1])?;
        let (_, columns) = window.slide(shape[2])?;
        window.exact = rows == 0 && columns == 0 && !self.chance(10);
        Some(window)
    }
}

/// One generated chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// `Net00`, `Net01`, ...
    pub name: String,
    /// `f32` or `f64`.
    pub elem: &'static str,
    /// The input written at the chain's start (`input(12) -> ...`), or `None`: the first affine
    /// layer fixes it.
    pub input: Option<Vec<usize>>,
    pub ops: Vec<Op>,
    pub loss: Option<Loss>,
}

impl Spec {
    /// The chain as the reference runs it.
    pub fn nodes(&self) -> Vec<Node> {
        reference::chain(self.input.as_deref(), &self.ops)
    }
}

/// The chains of `networks.rs`, in order.
pub fn specs() -> Vec<Spec> {
    specs_from(SEED, CONV_SEED, NORM_SEED)
}

/// The chains drawn from `seed`, then the convolutional ones drawn from `conv_seed`, then those
/// with batch normalisation and dropout drawn from `norm_seed`.
pub fn specs_from(seed: u64, conv_seed: u64, norm_seed: u64) -> Vec<Spec> {
    let mut rng = SplitMix64(seed);
    let mut specs: Vec<Spec> = (0..FEATURE_CHAINS).map(|n| spec(n, &mut rng)).collect();
    let mut rng = SplitMix64(conv_seed);
    let convs = FEATURE_CHAINS + CONV_CHAINS;
    specs.extend((FEATURE_CHAINS..convs).map(|n| conv_spec(n, &mut rng)));
    let mut rng = SplitMix64(norm_seed);
    specs.extend((convs..NETWORKS).map(|n| norm_spec(n, &mut rng)));
    specs
}

fn spec(n: usize, rng: &mut SplitMix64) -> Spec {
    let elem = if rng.chance(25) { "f32" } else { "f64" };
    let loss = match rng.range(0, 2) {
        0 => Some(Loss::SoftmaxCrossEntropy),
        1 => Some(Loss::Mse),
        _ => None,
    };
    let name = format!("Net{n:02}");
    let declared = rng.chance(30);
    let mut ops = Vec::new();
    if declared && loss != Some(Loss::SoftmaxCrossEntropy) && rng.chance(35) {
        // Images: no affine layer reads them, so activations only.
        let dims = vec![rng.range(1, 3), rng.range(1, 3), rng.range(2, 3)];
        for _ in 0..rng.range(1, 3) {
            ops.push(rng.activation(&dims));
        }
        return Spec {
            name,
            elem,
            input: Some(dims),
            ops,
            loss,
        };
    }
    let affines = rng.range(1, 5);
    let width = rng.width(1);
    let input = declared.then(|| vec![width]);
    if declared && rng.chance(50) {
        ops.push(rng.activation(&[width]));
    }
    affine_tail(rng, &mut ops, width, affines, loss, false);
    Spec {
        name,
        elem,
        input,
        ops,
        loss,
    }
}

/// `affines` affine layers, the first on `width` features, each followed by activations: the end
/// of a chain before its loss. With `norms`, now and then a `batchnorm` right after an affine
/// layer (its bias then has no gradient) and a `dropout` after its activations.
fn affine_tail(
    rng: &mut SplitMix64,
    ops: &mut Vec<Op>,
    mut width: usize,
    affines: usize,
    loss: Option<Loss>,
    norms: bool,
) {
    for k in 0..affines {
        // softmax_cross_entropy needs at least two classes.
        let min = if k + 1 == affines && loss == Some(Loss::SoftmaxCrossEntropy) {
            2
        } else {
            1
        };
        let out = rng.width(min);
        ops.push(Op::Affine(width, out));
        width = out;
        if norms && rng.chance(50) {
            ops.push(rng.batchnorm());
        }
        // Activations after each affine layer: mostly one, sometimes none, sometimes two.
        let activations = match rng.range(0, 99) {
            0..=24 => 0,
            25..=84 => 1,
            _ => 2,
        };
        for _ in 0..activations {
            ops.push(rng.activation(&[width]));
        }
        if norms && rng.chance(40) {
            ops.push(rng.dropout());
        }
    }
}

/// A chain with batch normalisation and dropout: on features (a declared input, now and then
/// normalised or dropped out first, or the first affine layer's), affine layers as in
/// [`affine_tail`] with them between; or on images of 1 to 3 channels of 3 to 6 × 3 to 6, one to
/// four of `conv2d` (mostly with a `batchnorm` right after it), `relu`, a pooling, `batchnorm`
/// and `dropout`, each drawn to fit, then the image as features as in [`conv_spec`] (now and then
/// normalised or dropped out once flat), or, now and then, the image alone before the loss.
fn norm_spec(n: usize, rng: &mut SplitMix64) -> Spec {
    let elem = if rng.chance(25) { "f32" } else { "f64" };
    let loss = match rng.range(0, 2) {
        0 => Some(Loss::SoftmaxCrossEntropy),
        1 => Some(Loss::Mse),
        _ => None,
    };
    let mut ops = Vec::new();
    let input = if rng.chance(45) {
        let input = vec![rng.range(1, 3), rng.range(3, 6), rng.range(3, 6)];
        let mut shape = input.clone();
        for _ in 0..rng.range(1, 4) {
            let op = loop {
                let op = match rng.range(0, 11) {
                    0..=3 => rng.conv(&shape),
                    4 => Some(Op::Relu),
                    5 | 6 => rng.pooling(&shape),
                    7..=9 => Some(rng.batchnorm()),
                    _ => Some(rng.dropout()),
                };
                if let Some(op) = op {
                    break op;
                }
            };
            shape = reference::layer_shape(op, &shape).expect("drawn to fit");
            ops.push(op);
            if matches!(op, Op::Conv2d(..)) && rng.chance(60) {
                ops.push(rng.batchnorm());
            }
        }
        let features = reference::size(&shape);
        let alone = loss != Some(Loss::SoftmaxCrossEntropy) && rng.chance(10);
        if !alone {
            if rng.chance(50) {
                ops.push(Op::Flatten);
                if rng.chance(40) {
                    ops.push(rng.norm());
                }
            }
            let affines = rng.range(1, 3);
            affine_tail(rng, &mut ops, features, affines, loss, true);
        }
        Some(input)
    } else {
        let width = rng.width(1);
        let declared = rng.chance(40);
        if declared && rng.chance(50) {
            ops.push(rng.norm());
        }
        let affines = rng.range(1, 4);
        affine_tail(rng, &mut ops, width, affines, loss, true);
        // Now and then the output itself normalised or dropped out.
        match rng.range(0, 4) {
            0 => ops.push(rng.batchnorm()),
            1 => ops.push(rng.dropout()),
            _ => {}
        }
        declared.then(|| vec![width])
    };
    Spec {
        name: format!("Net{n:02}"),
        elem,
        input,
        ops,
        loss,
    }
}

/// A convolutional chain: an image of 1 to 3 channels of 4 to 9 × 4 to 9 (square now and then);
/// one to three of `conv2d`, `relu`, `max_pool` and `avg_pool` in random order, each drawn to fit
/// what comes before it; then the image as features, by `flatten` (sometimes with an activation
/// after it) or by an affine layer reading it as it is, and affine layers with activations; or,
/// now and then, `flatten` alone before the loss.
fn conv_spec(n: usize, rng: &mut SplitMix64) -> Spec {
    let elem = if rng.chance(25) { "f32" } else { "f64" };
    let loss = match rng.range(0, 2) {
        0 => Some(Loss::SoftmaxCrossEntropy),
        1 => Some(Loss::Mse),
        _ => None,
    };
    let (height, width) = (rng.range(4, 9), rng.range(4, 9));
    let width = if rng.chance(25) { height } else { width };
    let input = vec![rng.range(1, 3), height, width];
    let mut shape = input.clone();
    let mut ops = Vec::new();
    for _ in 0..rng.range(1, 3) {
        let op = loop {
            let op = match rng.range(0, 9) {
                0..=3 => rng.conv(&shape),
                4 | 5 => Some(Op::Relu),
                _ => rng.pooling(&shape),
            };
            if let Some(op) = op {
                break op;
            }
        };
        shape = reference::layer_shape(op, &shape).expect("drawn to fit");
        ops.push(op);
    }
    let features = reference::size(&shape);
    let flatten_alone = loss != Some(Loss::SoftmaxCrossEntropy) && rng.chance(10);
    if flatten_alone || rng.chance(50) {
        ops.push(Op::Flatten);
        if !flatten_alone && rng.chance(25) {
            ops.push(rng.activation(&[features]));
        }
    }
    if !flatten_alone {
        let affines = rng.range(1, 3);
        affine_tail(rng, &mut ops, features, affines, loss, false);
    }
    Spec {
        name: format!("Net{n:02}"),
        elem,
        input: Some(input),
        ops,
        loss,
    }
}

/// One graph: statements as written in `network!`, the last one the output.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphSpec {
    /// `Graph00`, ..., or a hand-written graph's name.
    pub name: String,
    pub elem: &'static str,
    pub statements: Vec<Statement>,
    pub loss: Option<Loss>,
}

/// `[#[grad]] [name =] start [-> op]*`.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// `None` only for the last statement.
    pub name: Option<String>,
    /// `#[grad]`, on an input declared alone.
    pub grad: bool,
    pub start: Start,
    pub ops: Vec<Op>,
}

/// Where a statement's chain starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// `input(dims)`; `positive`: the test draws its values in [1, 2].
    Input {
        dims: Vec<usize>,
        positive: bool,
    },
    /// A named value.
    Value(String),
    Merge(Merge, String, String),
    Concat(Vec<String>),
}

impl GraphSpec {
    /// The graph as the reference runs it: one node per input, merge and layer, in the order
    /// they are written (which is a topological order: a statement reads only names defined
    /// before it).
    pub fn nodes(&self) -> Vec<Node> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut nodes = Vec::new();
        for statement in &self.statements {
            let value = |name: &String| {
                *index
                    .get(name.as_str())
                    .unwrap_or_else(|| panic!("{}: `{name}` is not defined before", self.name))
            };
            let mut current = match &statement.start {
                Start::Input { dims, positive } => {
                    nodes.push(Node::Input(Input {
                        name: statement.name.clone().filter(|_| statement.ops.is_empty()),
                        dims: dims.clone(),
                        grad: statement.grad,
                        positive: *positive,
                    }));
                    nodes.len() - 1
                }
                Start::Value(name) => value(name),
                Start::Merge(merge, a, b) => {
                    nodes.push(Node::Merge(*merge, value(a), value(b)));
                    nodes.len() - 1
                }
                Start::Concat(parts) => {
                    nodes.push(Node::Concat(parts.iter().map(value).collect()));
                    nodes.len() - 1
                }
            };
            for &op in &statement.ops {
                nodes.push(Node::Layer(op, current));
                current = nodes.len() - 1;
            }
            if let Some(name) = &statement.name {
                index.insert(name, current);
            }
        }
        nodes
    }
}

/// Every graph of `networks.rs`: the hand-written ones, then the random ones.
pub fn graph_specs() -> Vec<GraphSpec> {
    graph_specs_from(GRAPH_SEED, CONV_GRAPH_SEED, NORM_GRAPH_SEED)
}

/// The hand-written graphs, then random ones drawn from `seed`, then random ones with
/// convolutions drawn from `conv_seed`, then random ones with batch normalisation and dropout
/// drawn from `norm_seed` (of features and of images with convolutions, by turns).
pub fn graph_specs_from(seed: u64, conv_seed: u64, norm_seed: u64) -> Vec<GraphSpec> {
    let mut rng = SplitMix64(seed);
    let mut graphs = fixed_graphs();
    graphs.extend((0..FEATURE_GRAPHS).map(|n| random_graph(n, &mut rng, false, false)));
    let mut rng = SplitMix64(conv_seed);
    let convs = FEATURE_GRAPHS + CONV_GRAPHS;
    graphs.extend((FEATURE_GRAPHS..convs).map(|n| random_graph(n, &mut rng, true, false)));
    let mut rng = SplitMix64(norm_seed);
    graphs.extend((convs..GRAPHS).map(|n| random_graph(n, &mut rng, n % 2 == 1, true)));
    graphs
}

/// A statement declaring an input alone.
fn declare(name: &str, dims: &[usize], grad: bool, positive: bool) -> Statement {
    Statement {
        name: Some(name.to_owned()),
        grad,
        start: Start::Input {
            dims: dims.to_vec(),
            positive,
        },
        ops: Vec::new(),
    }
}

/// A statement `name = start -> ops` (`name` empty: the last, unnamed, statement).
fn define(name: &str, start: Start, ops: &[Op]) -> Statement {
    Statement {
        name: (!name.is_empty()).then(|| name.to_owned()),
        grad: false,
        start,
        ops: ops.to_vec(),
    }
}

fn value(name: &str) -> Start {
    Start::Value(name.to_owned())
}

fn merge(merge: Merge, a: &str, b: &str) -> Start {
    Start::Merge(merge, a.to_owned(), b.to_owned())
}

fn concat(parts: &[&str]) -> Start {
    Start::Concat(parts.iter().map(|&p| p.to_owned()).collect())
}

/// The graphs written by hand, each for a feature of the language.
fn fixed_graphs() -> Vec<GraphSpec> {
    use Merge::{Add, Div, Mul, Sub};
    use Op::{Affine, BatchNorm, Dropout, Elu, Flatten, LeakyRelu, Relu, Sigmoid, Softmax, Tanh};
    let graph = |name: &str, elem, loss, statements| GraphSpec {
        name: name.to_owned(),
        elem,
        statements,
        loss,
    };
    vec![
        // A residual block: `h` feeds the block and the sum; the input is written at the start
        // of `h`'s chain.
        graph(
            "Residual",
            "f64",
            Some(Loss::SoftmaxCrossEntropy),
            vec![
                define(
                    "h",
                    Start::Input {
                        dims: vec![4],
                        positive: false,
                    },
                    &[Affine(4, 6), Relu],
                ),
                define(
                    "r",
                    value("h"),
                    &[Affine(6, 6), LeakyRelu(0.1), Affine(6, 6)],
                ),
                define("", merge(Add, "h", "r"), &[Affine(6, 3)]),
            ],
        ),
        // Three inputs, two of them `#[grad]`, one of them concatenated as it is.
        graph(
            "MultiInput",
            "f32",
            Some(Loss::Mse),
            vec![
                declare("a", &[3], true, false),
                declare("b", &[2], false, false),
                declare("c", &[4], true, false),
                define("p", value("a"), &[Affine(3, 4), Elu(1.0)]),
                define("q", value("b"), &[Affine(2, 3), Tanh]),
                define("", concat(&["q", "c", "p"]), &[Affine(11, 2)]),
            ],
        ),
        // Values of rank 3, merged by every merge and concatenated along their channels before
        // the loss; `s` is read twice.
        graph(
            "Channels",
            "f64",
            Some(Loss::Mse),
            vec![
                declare("a", &[2, 3, 3], true, false),
                declare("c", &[1, 3, 3], false, false),
                declare("b", &[2, 3, 3], true, true),
                define("m", merge(Mul, "a", "b"), &[Tanh]),
                define("s", merge(Sub, "a", "b"), &[Elu(0.5)]),
                define("q", merge(Div, "m", "b"), &[]),
                define("t", merge(Add, "q", "s"), &[]),
                define("l", value("c"), &[LeakyRelu(0.3)]),
                define("", concat(&["t", "l", "s"]), &[Sigmoid]),
            ],
        ),
        // Divisors kept away from 0: an input drawn in [1, 2], and a sigmoid's output; a value
        // divided by itself, and one added to itself.
        graph(
            "Divisors",
            "f64",
            Some(Loss::Mse),
            vec![
                declare("a", &[3], true, false),
                declare("d", &[4], true, true),
                define("p", value("a"), &[Affine(3, 4), Tanh]),
                define("g", value("a"), &[Affine(3, 4), Sigmoid]),
                define("u", merge(Div, "p", "d"), &[]),
                define("v", merge(Div, "u", "g"), &[]),
                define("one", merge(Div, "d", "d"), &[]),
                define("w", merge(Add, "v", "v"), &[]),
                define("", concat(&["w", "one"]), &[Affine(8, 2)]),
            ],
        ),
        // Inputs as operands of `mul`, `x` three times; no loss, so `backward_from`.
        graph(
            "Gates",
            "f64",
            None,
            vec![
                declare("x", &[3], true, false),
                declare("y", &[3], true, false),
                define("g", value("x"), &[Affine(3, 3), Sigmoid]),
                define("gated", merge(Mul, "y", "g"), &[]),
                define("square", merge(Mul, "x", "x"), &[]),
                define("", merge(Add, "gated", "square"), &[Affine(3, 4), Softmax]),
            ],
        ),
        // A residual block on images: `x` feeds two padded convolutions and the sum, whose
        // gradients add up in `x`'s; the 5 × 6 images do not tile the pool's windows.
        graph(
            "ConvResidual",
            "f64",
            Some(Loss::SoftmaxCrossEntropy),
            vec![
                declare("x", &[2, 5, 6], true, false),
                define(
                    "a",
                    value("x"),
                    &[conv2d(2, 2, 3).pad(1), Relu, conv2d(2, 2, 3).pad(1)],
                ),
                define(
                    "",
                    merge(Add, "a", "x"),
                    &[Relu, max_pool(2).inexact(), Flatten, Affine(12, 3)],
                ),
            ],
        ),
        // Two convolutions of one image concatenated along their channels; both poolings read
        // the concatenation, and an affine layer reads their sum as it is (of rank 3).
        graph(
            "ConvConcat",
            "f32",
            Some(Loss::Mse),
            vec![
                declare("x", &[1, 6, 5], true, false),
                define("p", value("x"), &[conv2d(1, 2, 3).pad(1), Tanh]),
                define("q", value("x"), &[conv2d(1, 3, 1), Relu]),
                define("c", concat(&["p", "q"]), &[]),
                define("m", value("c"), &[max_pool(2).stride(1)]),
                define("v", value("c"), &[avg_pool(2).stride(1)]),
                define("", merge(Add, "m", "v"), &[Affine(100, 4)]),
            ],
        ),
        // An image read by a max pool, a padded average pool, `flatten` and a strided
        // convolution, whose gradients add up in its gradient; no loss, so `backward_from`.
        graph(
            "Pooling",
            "f64",
            None,
            vec![
                declare("x", &[2, 4, 4], true, false),
                define("m", value("x"), &[max_pool(2), Flatten]),
                define("a", value("x"), &[avg_pool(2).stride(1).pad(1), Flatten]),
                define("f", value("x"), &[Flatten]),
                define("s", value("x"), &[conv2d(2, 3, 2).stride(2), Flatten]),
                define("", concat(&["m", "a", "f", "s"]), &[Affine(102, 3)]),
            ],
        ),
        // Two dropouts on two branches (their masks drawn in the order they are written), both
        // reading a batchnorm right after an affine layer, and another batchnorm of their sum.
        graph(
            "NormBranches",
            "f64",
            Some(Loss::SoftmaxCrossEntropy),
            vec![
                declare("x", &[4], true, false),
                define("h", value("x"), &[Affine(4, 6), BatchNorm(0.1, 1e-5)]),
                define("a", value("h"), &[Relu, Dropout(0.25)]),
                define("b", value("h"), &[Tanh, Dropout(0.5)]),
                define(
                    "",
                    merge(Add, "a", "b"),
                    &[BatchNorm(0.1, 1e-3), Affine(6, 3)],
                ),
            ],
        ),
        // On images: a convolution normalised per channel, the image itself dropped out and
        // normalised, their concatenation dropped out with p = 0 (which still draws its mask),
        // pooled, and normalised per feature once flat.
        graph(
            "NormChannels",
            "f32",
            Some(Loss::Mse),
            vec![
                declare("x", &[2, 4, 4], true, false),
                define(
                    "c",
                    value("x"),
                    &[conv2d(2, 3, 3).pad(1), BatchNorm(0.5, 1e-5), Relu],
                ),
                define("d", value("x"), &[Dropout(0.1)]),
                define("e", value("x"), &[BatchNorm(1.0, 0.01)]),
                define(
                    "",
                    concat(&["c", "d", "e"]),
                    &[
                        Dropout(0.0),
                        avg_pool(2),
                        Flatten,
                        BatchNorm(0.1, 1e-5),
                        Affine(28, 3),
                    ],
                ),
            ],
        ),
        // No loss, so `backward_from` after `forward`: it differentiates an evaluation pass, where
        // a batchnorm is an affine map of the running statistics and a dropout passes its input on.
        graph(
            "NormGates",
            "f64",
            None,
            vec![
                declare("x", &[3], true, false),
                declare("y", &[3], true, false),
                define("g", value("x"), &[BatchNorm(0.1, 1e-5), Sigmoid]),
                define("", merge(Mul, "g", "y"), &[Dropout(0.5), Affine(3, 2)]),
            ],
        ),
    ]
}

/// A value of a graph being drawn.
struct Drawn {
    name: String,
    shape: Vec<usize>,
    used: bool,
    /// Positive, and far enough from 0 to divide by.
    positive: bool,
}

/// A random graph: one to three inputs (all of features, or all of images of one height and
/// width), one to four named statements, each a chain from a value, a merge or a concatenation,
/// and a last statement that concatenates every value nobody has read yet.
///
/// With `convs`: images of 3 to 6 × 3 to 6, and convolutions that keep their size among the
/// activations; the last statement may pool the result and read it as features (by `flatten`,
/// an affine layer, or both), and does when the loss needs classes. With `norms`: batch
/// normalisations and dropouts among them too.
fn random_graph(n: usize, rng: &mut SplitMix64, convs: bool, norms: bool) -> GraphSpec {
    let elem = if rng.chance(25) { "f32" } else { "f64" };
    let images = rng.chance(30) || convs;
    let (height, width) = (rng.range(1, 2), rng.range(2, 3));
    let (height, width) = if convs {
        (rng.range(3, 6), rng.range(3, 6))
    } else {
        (height, width)
    };
    let shape = |outer: usize| {
        if images {
            vec![outer, height, width]
        } else {
            vec![outer]
        }
    };
    let loss = match rng.range(0, 2) {
        0 if !images || convs => Some(Loss::SoftmaxCrossEntropy),
        0 | 1 => Some(Loss::Mse),
        _ => None,
    };
    let mut statements = Vec::new();
    let mut values: Vec<Drawn> = Vec::new();
    // The widths (channels, for images) values mostly have, so that some can be merged.
    let outers = if images {
        [1, 2]
    } else {
        [rng.range(1, 6), rng.range(2, 6)]
    };

    let inputs = rng.range(1, 3);
    for i in 0..inputs {
        let outer = rng.pick(&outers);
        let positive = rng.chance(30);
        // A graph of images has no parameters: without a `#[grad]` input it has no gradients.
        let grad = rng.chance(50)
            || (images && i + 1 == inputs && !statements.iter().any(|s: &Statement| s.grad));
        let name = format!("x{i}");
        statements.push(declare(&name, &shape(outer), grad, positive));
        values.push(Drawn {
            name,
            shape: shape(outer),
            used: false,
            positive,
        });
    }

    let named = rng.range(1, 4);
    for k in 0..=named {
        let last = k == named;
        let unused: Vec<usize> = (0..values.len()).filter(|&v| !values[v].used).collect();
        let (start, mut current, mut positive, min_ops) = if last {
            if unused.len() == 1 {
                let v = &values[unused[0]];
                let min = if loss.is_some() { 0 } else { 1 };
                (value(&v.name), v.shape.clone(), v.positive, min)
            } else {
                let parts: Vec<&str> = unused.iter().map(|&v| values[v].name.as_str()).collect();
                let (shape, positive) = concat_shape(&values, &unused);
                (concat(&parts), shape, positive, 0)
            }
        } else {
            draw_start(rng, &values)
        };
        for name in start_reads(&start) {
            values
                .iter_mut()
                .find(|v| v.name == name)
                .expect("drawn")
                .used = true;
        }
        let mut ops = Vec::new();
        for _ in 0..rng.range(min_ops, 3).max(min_ops) {
            let op = if norms && rng.chance(40) {
                rng.norm()
            } else if !images && rng.chance(50) {
                let out = if rng.chance(70) {
                    rng.pick(&outers)
                } else {
                    rng.range(1, 6)
                };
                Op::Affine(current[0], out)
            } else if convs && rng.chance(40) {
                rng.same_size_conv(&current, &outers)
            } else {
                rng.activation(&current)
            };
            (current, positive) = after(op, current);
            ops.push(op);
        }
        let classes = loss == Some(Loss::SoftmaxCrossEntropy);
        if convs && last && (classes || rng.chance(60)) {
            let mut head = Vec::new();
            if rng.chance(50) {
                head.extend(rng.pooling(&current));
            }
            if rng.chance(50) {
                head.push(Op::Flatten);
            }
            for op in head {
                (current, positive) = after(op, current);
                ops.push(op);
            }
            if classes || rng.chance(50) {
                let op = Op::Affine(reference::size(&current), rng.range(2, 5));
                (current, positive) = after(op, current);
                ops.push(op);
            }
        }
        if last && classes && current[0] < 2 {
            let op = Op::Affine(current[0], rng.range(2, 5));
            (current, positive) = after(op, current);
            ops.push(op);
        }
        let name = if last { String::new() } else { format!("h{k}") };
        statements.push(define(&name, start, &ops));
        values.push(Drawn {
            name,
            shape: current,
            used: false,
            positive,
        });
    }
    GraphSpec {
        name: format!("Graph{n:02}"),
        elem,
        statements,
        loss,
    }
}

/// The shape of a value after `op`, and whether it is positive (a sigmoid's output is).
fn after(op: Op, shape: Vec<usize>) -> (Vec<usize>, bool) {
    let shape = reference::layer_shape(op, &shape).expect("drawn to fit");
    (shape, op == Op::Sigmoid)
}

/// The shape of the concatenation of `parts` (drawn values of one inner shape), and whether it
/// is positive.
fn concat_shape(values: &[Drawn], parts: &[usize]) -> (Vec<usize>, bool) {
    let mut shape = values[parts[0]].shape.clone();
    shape[0] = parts.iter().map(|&p| values[p].shape[0]).sum();
    (shape, parts.iter().all(|&p| values[p].positive))
}

/// The names a start reads.
fn start_reads(start: &Start) -> Vec<String> {
    match start {
        Start::Input { .. } => Vec::new(),
        Start::Value(name) => vec![name.clone()],
        Start::Merge(_, a, b) => vec![a.clone(), b.clone()],
        Start::Concat(parts) => parts.clone(),
    }
}

/// The start of a named statement: a value (then at least one op), a merge of two values of one
/// shape (`div` only by a positive value), or a concatenation of two or three values. Returns the
/// start, its shape, whether it is positive, and the fewest ops that must follow.
fn draw_start(rng: &mut SplitMix64, values: &[Drawn]) -> (Start, Vec<usize>, bool, usize) {
    // Values nobody reads yet are picked more often, so that the last concatenation stays short.
    let pick = |rng: &mut SplitMix64| {
        let unused: Vec<usize> = (0..values.len()).filter(|&v| !values[v].used).collect();
        if !unused.is_empty() && rng.chance(60) {
            rng.pick(&unused)
        } else {
            rng.range(0, values.len() - 1)
        }
    };
    match rng.range(0, 9) {
        0..=3 => {}
        4..=7 => {
            let merge = rng.pick(&Merge::ALL);
            let a = pick(rng);
            let fits = |b: usize| {
                values[b].shape == values[a].shape && (merge != Merge::Div || values[b].positive)
            };
            let others: Vec<usize> = (0..values.len()).filter(|&b| b != a && fits(b)).collect();
            // Mostly two values; now and then the same one twice.
            let b = if !others.is_empty() && rng.chance(85) {
                Some(rng.pick(&others))
            } else {
                (fits(a) && rng.chance(50)).then_some(a)
            };
            if let Some(b) = b {
                let positive = merge != Merge::Sub && values[a].positive && values[b].positive;
                let start = Start::Merge(merge, values[a].name.clone(), values[b].name.clone());
                return (start, values[a].shape.clone(), positive, 0);
            }
        }
        _ => {
            // Two or three parts, mostly different ones.
            let count = rng.range(2, 3);
            let mut parts: Vec<usize> = Vec::new();
            for _ in 0..10 * count {
                let part = pick(rng);
                if !parts.contains(&part) || rng.chance(10) {
                    parts.push(part);
                }
                if parts.len() == count {
                    break;
                }
            }
            if parts.len() < 2 {
                parts.push(parts[0]);
            }
            let (shape, positive) = concat_shape(values, &parts);
            let names = parts.iter().map(|&p| values[p].name.clone()).collect();
            return (Start::Concat(names), shape, positive, 0);
        }
    }
    let v = &values[pick(rng)];
    (Start::Value(v.name.clone()), v.shape.clone(), v.positive, 1)
}

const HEADER: &str = "\
//! GENERATED by `tests/differential/generator.rs`; do not edit by hand.
//!
//! Random chains, hand-written graphs and random graphs for the differential test: each
//! `network!` item is followed by a `differential_test!` with the same network as the reference
//! evaluator runs it: a list of `Op`s for a chain, a list of `Node`s for a graph (each node names
//! the nodes it reads by their index).
//!
//! To regenerate after changing the generator, run
//!
//! ```text
//! CHAINRULE_REGENERATE=1 cargo test --test differential generated_file_is_fresh
//! ```
//!
//! and commit the result; without the variable that test fails when this file is stale.
";

/// The column a wrapped line must not pass.
const WIDTH: usize = 96;

/// The identifier a Rust expression starts with: `Affine` for `Affine(3, 4)`.
fn head(expr: &str) -> String {
    expr.split('(').next().unwrap_or(expr).to_owned()
}

/// The text of `networks.rs`.
pub fn render() -> String {
    let specs = specs();
    let graphs = graph_specs();
    let mut ops = BTreeSet::new();
    let mut merges = BTreeSet::new();
    let mut variants = BTreeSet::new();
    let mut functions = BTreeSet::new();
    let mut flags = BTreeSet::new();
    // A window op is written with its constructor function, the others as a variant of `Op`.
    let import = |op: &Op, ops: &mut BTreeSet<String>, functions: &mut BTreeSet<String>| {
        match op.window() {
            Some(_) => functions.insert(head(&op.rust())),
            None => ops.insert(head(&op.rust())),
        };
    };
    for spec in &specs {
        for op in &spec.ops {
            import(op, &mut ops, &mut functions);
        }
    }
    for graph in &graphs {
        for node in graph.nodes() {
            match &node {
                Node::Input(input) => {
                    functions.insert("input".to_owned());
                    if input.grad {
                        flags.insert("Grad");
                    }
                    if input.positive {
                        flags.insert("Positive");
                    }
                }
                Node::Layer(op, _) => {
                    variants.insert("Layer");
                    import(op, &mut ops, &mut functions);
                }
                Node::Merge(merge, ..) => {
                    variants.insert("Merge");
                    merges.insert(merge.rust());
                }
                Node::Concat(_) => {
                    functions.insert("concat".to_owned());
                }
            }
        }
    }
    let list = |items: Vec<&str>| match items.len() {
        1 => items[0].to_owned(),
        _ => format!("{{{}}}", items.join(", ")),
    };
    let mut out = String::from(HEADER);
    out.push('\n');
    out.push_str(&format!(
        "use super::reference::Flag::{};\n",
        list(flags.into_iter().collect())
    ));
    out.push_str(&format!(
        "use super::reference::Merge::{};\n",
        list(merges.into_iter().collect())
    ));
    out.push_str(&format!(
        "use super::reference::Node::{};\n",
        list(variants.into_iter().collect())
    ));
    out.push_str(&format!(
        "use super::reference::Op::{};\n",
        list(ops.iter().map(String::as_str).collect())
    ));
    out.push_str(&format!(
        "use super::reference::{};\n",
        list(functions.iter().map(String::as_str).collect())
    ));
    out.push_str("use chainrule::network;\n");

    for spec in &specs {
        let mut layers: Vec<String> = Vec::new();
        if let Some(dims) = &spec.input {
            layers.push(format!("input({})", join(dims)));
        }
        layers.extend(spec.ops.iter().map(|op| op.source()));
        if let Some(loss) = spec.loss {
            layers.push(loss.source().to_owned());
        }
        let mut ops: Vec<String> = spec.ops.iter().map(|op| op.rust()).collect();
        ops[0] = match &spec.input {
            Some(dims) => format!("input({}) -> [{}", join(dims), ops[0]),
            None => format!("[{}", ops[0]),
        };
        *ops.last_mut().expect("a chain has an op") += "]";
        let test = spec.name.to_lowercase();
        out.push_str(&format!(
            "\nnetwork! {{\n    pub struct {name}: {elem} {{\n        {chain}\n    }}\n}}\n\
             differential_test! {{\n    {test}: {name} = {ops},\n    loss: {loss}\n}}\n",
            name = spec.name,
            elem = spec.elem,
            chain = wrap(&layers, " -> ", 8, "            "),
            ops = wrap(
                &ops,
                ", ",
                4 + test.len() + 2 + spec.name.len() + 3,
                "        "
            ),
            loss = spec.loss.map_or("none", Loss::source),
        ));
    }

    for graph in &graphs {
        let last = graph.statements.len() - 1;
        let statements: Vec<String> = graph
            .statements
            .iter()
            .enumerate()
            .map(|(i, statement)| {
                let mut layers = vec![start_source(statement)];
                layers.extend(statement.ops.iter().map(|op| op.source()));
                if i == last {
                    layers.extend(graph.loss.map(|loss| loss.source().to_owned()));
                }
                let end = if i == last { "" } else { ";" };
                format!("{}{end}", wrap(&layers, " -> ", 8, "            "))
            })
            .collect();
        let mut nodes: Vec<String> = graph.nodes().iter().map(Node::rust).collect();
        nodes[0] = format!("graph [{}", nodes[0]);
        *nodes.last_mut().expect("a graph has a node") += "]";
        let test = graph.name.to_lowercase();
        out.push_str(&format!(
            "\nnetwork! {{\n    pub struct {name}: {elem} {{\n        {statements}\n    }}\n}}\n\
             differential_test! {{\n    {test}: {name} = {nodes},\n    loss: {loss}\n}}\n",
            name = graph.name,
            elem = graph.elem,
            statements = statements.join("\n        "),
            nodes = wrap(
                &nodes,
                ", ",
                4 + test.len() + 2 + graph.name.len() + 3,
                "        "
            ),
            loss = graph.loss.map_or("none", Loss::source),
        ));
    }
    out
}

/// `1, 28, 28`.
fn join(dims: &[usize]) -> String {
    dims.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a statement starts, as written: `#[grad] x = input(3)`, `h = add(a, b)`, `x`.
fn start_source(statement: &Statement) -> String {
    let grad = if statement.grad { "#[grad] " } else { "" };
    let name = statement
        .name
        .as_ref()
        .map_or_else(String::new, |name| format!("{name} = "));
    let start = match &statement.start {
        Start::Input { dims, .. } => format!("input({})", join(dims)),
        Start::Value(name) => name.clone(),
        Start::Merge(merge, a, b) => format!("{}({a}, {b})", merge.name()),
        Start::Concat(parts) => format!("concat({})", parts.join(", ")),
    };
    format!("{grad}{name}{start}")
}

/// Joins `items` with `sep`, breaking the line after a separator (and going on with `indent`)
/// when it gets long.
/// `start` is the column the first item starts at.
fn wrap(items: &[String], sep: &str, start: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = start;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            if line + sep.len() + item.len() + sep.trim_end().len() > WIDTH {
                out.push_str(sep.trim_end());
                out.push('\n');
                out.push_str(indent);
                line = indent.len();
            } else {
                out.push_str(sep);
                line += sep.len();
            }
        }
        out.push_str(item);
        line += item.len();
    }
    out
}
