//! A network's graph as data, as the macro checked it: every value's shape, every layer's op with
//! all of its arguments (defaults filled in), its inputs and its parameters' names. It is what
//! exporters read ([`Network::GRAPH`](crate::Network::GRAPH); the `chainrule-onnx` crate writes it
//! to an ONNX file), and it describes what the generated code computes, not how.
//!
//! Values are numbered: the network's inputs and each layer's output. Shapes are per sample
//! (the batch is left out), channels first for images: `[1, 28, 28]` is one channel of 28×28.

/// The whole graph.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Graph {
    /// The network's name.
    pub name: &'static str,
    /// Every value's shape per sample, by value number.
    pub values: &'static [&'static [usize]],
    /// The network's inputs, in the order their columns come in a batch.
    pub inputs: &'static [GraphInput],
    /// The layers in topological order (the loss, if any, last).
    pub nodes: &'static [GraphNode],
    /// The value `forward` returns (what flows into the loss, if there is one).
    pub output: usize,
}

/// One of the network's inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GraphInput {
    /// Its name: as written, or `input` for a chain's.
    pub name: &'static str,
    /// Its value.
    pub value: usize,
}

/// One layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GraphNode {
    /// The op's name in the language (`affine`, `conv2d`, `softmax_cross_entropy`).
    pub op: &'static str,
    /// The layer's name in parameter names: op and a counter (`affine0`); its parameters are
    /// `{name}.weight` and so on, its buffers `{name}.running_mean` and so on.
    pub name: &'static str,
    /// Every argument of the op, in the op's order, defaults filled in.
    pub args: &'static [GraphArg],
    /// The values it reads.
    pub inputs: &'static [usize],
    /// The value it produces (a loss produces none that is kept; the number is still its own).
    pub output: usize,
    /// Whether it is a loss (the last layer; an inference graph leaves it out).
    pub loss: bool,
}

/// An argument of a layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GraphArg {
    /// Its name in the language (`out`, `stride`, `p`).
    pub name: &'static str,
    /// Its value.
    pub value: ArgValue,
}

/// An argument's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ArgValue {
    /// A whole number (a width, a kernel size, a pad).
    Whole(usize),
    /// A real number (a slope, a momentum, a probability).
    Real(f64),
    /// A shape.
    Dims(&'static [usize]),
    /// Yes or no.
    Flag(bool),
}

impl GraphNode {
    /// The argument called `name`, if the op has one.
    pub fn arg(&self, name: &str) -> Option<ArgValue> {
        self.args.iter().find(|a| a.name == name).map(|a| a.value)
    }

    /// The whole-number argument called `name`, if the op has one.
    pub fn whole(&self, name: &str) -> Option<usize> {
        match self.arg(name)? {
            ArgValue::Whole(v) => Some(v),
            _ => None,
        }
    }

    /// The real argument called `name`, if the op has one.
    pub fn real(&self, name: &str) -> Option<f64> {
        match self.arg(name)? {
            ArgValue::Real(v) => Some(v),
            _ => None,
        }
    }
}

impl Graph {
    /// The shape per sample of value `value`.
    pub fn shape(&self, value: usize) -> &'static [usize] {
        self.values[value]
    }

    /// The layers an inference graph holds: all but the loss.
    pub fn inference_nodes(&self) -> impl Iterator<Item = &'static GraphNode> + use<> {
        let nodes: &'static [GraphNode] = self.nodes;
        nodes.iter().filter(|n| !n.loss)
    }

    /// The loss layer, if the network has one.
    pub fn loss(&self) -> Option<&'static GraphNode> {
        let nodes: &'static [GraphNode] = self.nodes;
        nodes.iter().find(|n| n.loss)
    }
}
