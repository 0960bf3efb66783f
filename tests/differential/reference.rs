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
//! Which op names it implements is [`implemented_names`]: the names of [`Node::exemplars`] and
//! [`Loss::ALL`], which the coverage test compares with the op table. Every `match` on the op
//! enums here is exhaustive (no catch-all arm), so a new variant does not compile until `evaluate`
//! runs it, and a name can only be listed through a variant.

use chainrule::Element;
use chainrule::kernels::{self, GradMode::Set};
use chainrule::ndarray::{Array1, Array2, ArrayView2, s};

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
    pub const EXEMPLARS: [Op; 7] = [
        Op::Affine(3, 2),
        Op::Relu,
        Op::Sigmoid,
        Op::Tanh,
        Op::LeakyRelu(0.1),
        Op::Elu(0.5),
        Op::Softmax,
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
        }
    }

    /// The layer as written in `network!`. The activations with a number are written in every
    /// form the language has, picked by the number: `leaky_relu` (the default α = 0.01),
    /// `leaky_relu(0.1)` (in order), `leaky_relu(alpha = 0.3)` (by name); `elu` (the default
    /// α = 1), `elu(alpha = 0.5)`.
    pub fn source(self) -> String {
        match self {
            Op::Affine(i, o) => format!("affine({i}, {o})"),
            Op::LeakyRelu(0.01) | Op::Elu(1.0) => self.name().to_owned(),
            Op::LeakyRelu(0.1) => "leaky_relu(0.1)".to_owned(),
            Op::LeakyRelu(alpha) | Op::Elu(alpha) => format!("{}(alpha = {alpha:?})", self.name()),
            Op::Relu | Op::Sigmoid | Op::Tanh | Op::Softmax => self.name().to_owned(),
        }
    }

    /// The op as a Rust expression (what the generated file lists).
    pub fn rust(self) -> String {
        match self {
            Op::Affine(i, o) => format!("Affine({i}, {o})"),
            Op::Relu => "Relu".to_owned(),
            Op::Sigmoid => "Sigmoid".to_owned(),
            Op::Tanh => "Tanh".to_owned(),
            Op::LeakyRelu(alpha) => format!("LeakyRelu({alpha:?})"),
            Op::Elu(alpha) => format!("Elu({alpha:?})"),
            Op::Softmax => "Softmax".to_owned(),
        }
    }

    /// Whether this is a layer with parameters.
    pub fn is_affine(self) -> bool {
        matches!(self, Op::Affine(..))
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
    /// One exemplar of every kind of node, with every [`Op`] and [`Merge`] variant: two inputs
    /// of 3 features (nodes 0 and 1, the second positive), and layers on the first, merges and a
    /// concatenation of both. The coverage test runs each through [`evaluate`].
    pub fn exemplars() -> Vec<Node> {
        let mut nodes = vec![
            input("x", &[3], &[Flag::Grad]),
            input("y", &[3], &[Flag::Grad, Flag::Positive]),
        ];
        nodes.extend(Op::EXEMPLARS.map(|op| Node::Layer(op, 0)));
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
            Node::Layer(op, from) => {
                let shape = of(*from);
                match *op {
                    Op::Affine(i, o) => {
                        assert_eq!(shape, [i], "node {index}: {op:?} on {shape:?}");
                        vec![o]
                    }
                    Op::Softmax => {
                        assert!(shape.len() == 1 && shape[0] >= 2, "softmax on {shape:?}");
                        shape
                    }
                    Op::Relu | Op::Sigmoid | Op::Tanh | Op::LeakyRelu(_) | Op::Elu(_) => shape,
                }
            }
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
/// and `affine{k}.bias` (out), `k` counting affine layers from 0 in the order of the nodes (the
/// order they are written in, for a network written in topological order), with their shapes.
pub fn params(nodes: &[Node]) -> Vec<(String, Vec<usize>)> {
    nodes
        .iter()
        .filter_map(|node| match *node {
            Node::Layer(Op::Affine(i, o), _) => Some((i, o)),
            _ => None,
        })
        .enumerate()
        .flat_map(|(k, (i, o))| {
            [
                (format!("affine{k}.weight"), vec![i, o]),
                (format!("affine{k}.bias"), vec![o]),
            ]
        })
        .collect()
}

/// The parameters of one affine layer, copied out of a network.
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
    /// What `forward` returns: the last node's value (what flows into the loss, if any).
    pub output: Array2<T>,
    /// The index of the largest output of each row, the first on ties.
    pub predict: Vec<usize>,
    /// With a head: the loss and the backward pass.
    pub training: Option<Training<T>>,
}

/// The loss and the backward pass.
#[derive(Debug, Clone)]
pub struct Training<T> {
    /// `None` for a backward pass from a given output gradient.
    pub loss: Option<T>,
    /// The gradient of every parameter, named and ordered as [`params`], values row-major.
    pub grads: Vec<(String, Vec<T>)>,
    /// The gradient of every input, in the order of [`inputs`], `#[grad]` or not.
    pub input_grads: Vec<(Input, Array2<T>)>,
}

/// Runs the network `nodes` on `x` with the layers' parameters `params` (one per affine layer, in
/// order): the forward pass, then, with a head, the loss kernel (or the given output gradient)
/// and every backward kernel in reverse order. Every node's input gradients are computed, each
/// into a fresh array; where a value is read by several nodes (or twice by one), its gradients
/// are added up.
pub fn evaluate<T: Element>(
    nodes: &[Node],
    params: &[AffineParams<T>],
    x: &Array2<T>,
    head: Option<Head<'_, T>>,
) -> Reference<T> {
    let batch = x.nrows();
    let shapes = shapes(nodes);
    let alpha = |a: f64| T::from_f64(a);
    assert_eq!(x.ncols(), input_width(nodes), "the batch's columns");

    // Forward: `values[i]` is node `i`'s value.
    let mut values: Vec<Array2<T>> = Vec::with_capacity(nodes.len());
    let mut column = 0;
    let mut affine = 0;
    for (node, shape) in nodes.iter().zip(&shapes) {
        let mut y = Array2::zeros((batch, size(shape)));
        match node {
            Node::Input(_) => {
                y.assign(&x.slice(s![.., column..column + size(shape)]));
                column += size(shape);
            }
            &Node::Layer(op, from) => {
                let x = values[from].view();
                let y = y.view_mut();
                match op {
                    Op::Affine(..) => {
                        let p = &params[affine];
                        affine += 1;
                        kernels::affine_forward(x, p.weight.view(), p.bias.view(), y);
                    }
                    Op::Relu => kernels::relu_forward(x, y),
                    Op::Sigmoid => kernels::sigmoid_forward(x, y),
                    Op::Tanh => kernels::tanh_forward(x, y),
                    Op::LeakyRelu(a) => kernels::leaky_relu_forward(x, y, alpha(a)),
                    Op::Elu(a) => kernels::elu_forward(x, y, alpha(a)),
                    Op::Softmax => kernels::softmax_forward(x, y),
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
    }
    assert_eq!(affine, params.len(), "one parameter set per affine layer");
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
        // complete when its node's turn comes.
        let mut grads: Vec<Option<Array2<T>>> = vec![None; nodes.len()];
        *grads.last_mut().expect("the output is there") = Some(dy);
        let add_to = |grads: &mut Vec<Option<Array2<T>>>, value: usize, dx: Array2<T>| {
            grads[value] = Some(match grads[value].take() {
                None => dx,
                Some(sum) => sum + dx,
            });
        };
        let mut param_grads = Vec::new();
        for (i, node) in nodes.iter().enumerate().rev() {
            let Some(dy) = grads[i].clone() else {
                continue;
            };
            let (y, dy) = (values[i].view(), dy.view());
            let fresh = |value: usize| Array2::<T>::zeros(values[value].raw_dim());
            match node {
                Node::Input(_) => {}
                &Node::Layer(op, from) => {
                    let x = values[from].view();
                    let mut dx = fresh(from);
                    let d = dx.view_mut();
                    match op {
                        Op::Affine(..) => {
                            affine -= 1;
                            let p = &params[affine];
                            let mut dw = Array2::zeros(p.weight.raw_dim());
                            let mut db = Array1::zeros(p.bias.raw_dim());
                            kernels::affine_backward_params(x, dy, dw.view_mut(), db.view_mut());
                            kernels::affine_backward_input(p.weight.view(), dy, d, Set);
                            param_grads.push((format!("affine{affine}.bias"), db.to_vec()));
                            param_grads.push((
                                format!("affine{affine}.weight"),
                                dw.iter().copied().collect(),
                            ));
                        }
                        Op::Relu => kernels::relu_backward(y, dy, d, Set),
                        Op::Sigmoid => kernels::sigmoid_backward(y, dy, d, Set),
                        Op::Tanh => kernels::tanh_backward(y, dy, d, Set),
                        Op::LeakyRelu(a) => kernels::leaky_relu_backward(y, dy, d, Set, alpha(a)),
                        Op::Elu(a) => kernels::elu_backward(y, dy, d, Set, alpha(a)),
                        Op::Softmax => kernels::softmax_backward(y, dy, d, Set),
                    }
                    add_to(&mut grads, from, dx);
                }
                &Node::Merge(merge, a, b) => {
                    let (va, vb) = (values[a].view(), values[b].view());
                    let (mut da, mut db) = (fresh(a), fresh(b));
                    let (ga, gb) = (da.view_mut(), db.view_mut());
                    match merge {
                        Merge::Add => {
                            kernels::add_backward_a(va, vb, y, dy, ga, Set);
                            kernels::add_backward_b(va, vb, y, dy, gb, Set);
                        }
                        Merge::Sub => {
                            kernels::sub_backward_a(va, vb, y, dy, ga, Set);
                            kernels::sub_backward_b(va, vb, y, dy, gb, Set);
                        }
                        Merge::Mul => {
                            kernels::mul_backward_a(va, vb, y, dy, ga, Set);
                            kernels::mul_backward_b(va, vb, y, dy, gb, Set);
                        }
                        Merge::Div => {
                            kernels::div_backward_a(va, vb, y, dy, ga, Set);
                            kernels::div_backward_b(va, vb, y, dy, gb, Set);
                        }
                    }
                    add_to(&mut grads, a, da);
                    add_to(&mut grads, b, db);
                }
                Node::Concat(parts) => {
                    let mut offset = 0;
                    for &part in parts {
                        let mut dx = fresh(part);
                        kernels::concat_backward(dy, offset, dx.view_mut(), Set);
                        offset += dx.ncols();
                        add_to(&mut grads, part, dx);
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
