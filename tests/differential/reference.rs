//! The reference evaluator: a network described as a list of [`Op`]s, run op by op by calling the
//! runtime's kernels directly on freshly allocated arrays.
//!
//! It shares the kernels with the generated code but nothing else: not the buffers, not the
//! wiring (which value feeds which kernel), not the order of the backward pass, not the parameter
//! naming. So a disagreement with a compiled network points at the macro's code generation.

use chainrule::Element;
use chainrule::kernels::{self, GradMode::Set};
use chainrule::ndarray::{Array1, Array2};

/// One layer of a chain, as the reference evaluator runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `affine(in, out)`.
    Affine(usize, usize),
    Relu,
    Sigmoid,
    Tanh,
}

/// The loss that ends a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    SoftmaxCrossEntropy,
    Mse,
}

impl Op {
    /// The layer as written in `network!`.
    pub fn source(self) -> String {
        match self {
            Op::Affine(i, o) => format!("affine({i}, {o})"),
            Op::Relu => "relu".to_owned(),
            Op::Sigmoid => "sigmoid".to_owned(),
            Op::Tanh => "tanh".to_owned(),
        }
    }

    /// The op as a Rust expression (what the generated file lists).
    pub fn rust(self) -> String {
        match self {
            Op::Affine(i, o) => format!("Affine({i}, {o})"),
            Op::Relu => "Relu".to_owned(),
            Op::Sigmoid => "Sigmoid".to_owned(),
            Op::Tanh => "Tanh".to_owned(),
        }
    }
}

impl Loss {
    /// The loss as written in `network!`.
    pub fn source(self) -> &'static str {
        match self {
            Loss::SoftmaxCrossEntropy => "softmax_cross_entropy",
            Loss::Mse => "mse",
        }
    }
}

/// The features a chain takes (its first layer must be an affine one, which fixes it).
pub fn input_width(ops: &[Op]) -> usize {
    match ops.first() {
        Some(&Op::Affine(i, _)) => i,
        other => panic!("a chain starts with an affine layer, not {other:?}"),
    }
}

/// The features a chain produces: the width of its last affine layer.
pub fn output_width(ops: &[Op]) -> usize {
    ops.iter()
        .rev()
        .find_map(|op| match *op {
            Op::Affine(_, o) => Some(o),
            _ => None,
        })
        .expect("a chain has an affine layer")
}

/// The parameters of a chain, named as the macro documents them: `affine{k}.weight` (in × out) and
/// `affine{k}.bias` (out), `k` counting affine layers from 0, in declaration order.
pub fn param_names(ops: &[Op]) -> Vec<String> {
    let affines = ops.iter().filter(|op| matches!(op, Op::Affine(..))).count();
    (0..affines)
        .flat_map(|k| [format!("affine{k}.weight"), format!("affine{k}.bias")])
        .collect()
}

/// Parameter shapes, in the order of [`param_names`].
pub fn param_shapes(ops: &[Op]) -> Vec<Vec<usize>> {
    ops.iter()
        .filter_map(|op| match *op {
            Op::Affine(i, o) => Some([vec![i, o], vec![o]]),
            _ => None,
        })
        .flatten()
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

/// Everything the reference computes for one batch.
#[derive(Debug, Clone)]
pub struct Reference<T> {
    /// What `forward` returns: the last layer's output (what flows into the loss, if any).
    pub output: Array2<T>,
    /// The index of the largest output of each row, the first on ties.
    pub predict: Vec<usize>,
    /// With a loss: its value, the gradient of every parameter (named as [`param_names`], values
    /// row-major), and the gradient with respect to the network's input.
    pub training: Option<Training<T>>,
}

/// The loss and the backward pass.
#[derive(Debug, Clone)]
pub struct Training<T> {
    pub loss: T,
    pub grads: Vec<(String, Vec<T>)>,
    pub input_grad: Array2<T>,
}

/// Runs `ops` on `x` with the layers' parameters `params` (one per affine layer, in order): the
/// forward pass, then, with a loss, the loss kernel and every backward kernel in reverse order.
pub fn evaluate<T: Element>(
    ops: &[Op],
    params: &[AffineParams<T>],
    x: &Array2<T>,
    loss: Option<(Loss, Targets<'_, T>)>,
) -> Reference<T> {
    let batch = x.nrows();

    // Forward: `values[i]` is the input of op `i`; `values[ops.len()]` is the output.
    let mut values = vec![x.clone()];
    let mut affine = 0;
    for &op in ops {
        let input = values.last().expect("the input is there");
        let mut y = match op {
            Op::Affine(_, o) => Array2::zeros((batch, o)),
            _ => Array2::zeros(input.raw_dim()),
        };
        match op {
            Op::Affine(..) => {
                let p = &params[affine];
                affine += 1;
                kernels::affine_forward(input.view(), p.weight.view(), p.bias.view(), y.view_mut());
            }
            Op::Relu => kernels::relu_forward(input.view(), y.view_mut()),
            Op::Sigmoid => kernels::sigmoid_forward(input.view(), y.view_mut()),
            Op::Tanh => kernels::tanh_forward(input.view(), y.view_mut()),
        }
        values.push(y);
    }
    assert_eq!(affine, params.len(), "one parameter set per affine layer");
    let output = values.last().expect("the output is there").clone();
    let predict = output.rows().into_iter().map(first_argmax).collect();

    let training = loss.map(|(loss, targets)| {
        // The loss, and its gradient with respect to the output.
        let mut dy = Array2::zeros(output.raw_dim());
        let value = match (loss, targets) {
            (Loss::SoftmaxCrossEntropy, Targets::Classes(t)) => {
                kernels::softmax_cross_entropy(output.view(), t, dy.view_mut())
            }
            (Loss::Mse, Targets::Values(t)) => kernels::mse(output.view(), t.view(), dy.view_mut()),
            (loss, targets) => panic!("{loss:?} cannot take {targets:?}"),
        };

        // Backward, op by op in reverse; every op's input gradient is computed, the first one's too.
        let mut grads = Vec::new();
        for (i, &op) in ops.iter().enumerate().rev() {
            let (x, y) = (&values[i], &values[i + 1]);
            let mut dx = Array2::zeros(x.raw_dim());
            match op {
                Op::Affine(..) => {
                    affine -= 1;
                    let p = &params[affine];
                    let mut dw = Array2::zeros(p.weight.raw_dim());
                    let mut db = Array1::zeros(p.bias.raw_dim());
                    kernels::affine_backward_params(
                        x.view(),
                        dy.view(),
                        dw.view_mut(),
                        db.view_mut(),
                    );
                    kernels::affine_backward_input(p.weight.view(), dy.view(), dx.view_mut(), Set);
                    grads.push((format!("affine{affine}.bias"), db.iter().copied().collect()));
                    grads.push((
                        format!("affine{affine}.weight"),
                        dw.iter().copied().collect(),
                    ));
                }
                Op::Relu => kernels::relu_backward(y.view(), dy.view(), dx.view_mut(), Set),
                Op::Sigmoid => kernels::sigmoid_backward(y.view(), dy.view(), dx.view_mut(), Set),
                Op::Tanh => kernels::tanh_backward(y.view(), dy.view(), dx.view_mut(), Set),
            }
            dy = dx;
        }
        grads.reverse();
        Training {
            loss: value,
            grads,
            input_grad: dy,
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
