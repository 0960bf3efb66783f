//! Differential test: networks compiled by `network!` against a reference evaluation.
//!
//! `differential/networks.rs` holds random chains, hand-written graphs and random graphs (written
//! by `differential/generator.rs`). For each, proptest draws batches, initialisers and seeds; the
//! compiled network runs forward, predict and the backward pass (with a loss: `loss` then
//! `backward`; without: `backward_from` a drawn output gradient), and the reference evaluator
//! (`differential/reference.rs`) runs the same network by calling the runtime's kernels directly
//! on fresh arrays, with the parameters copied out of the network. Outputs, predictions, losses,
//! every parameter gradient and the gradient of every `#[grad]` input must agree (and the inputs
//! not marked must have none), and so must the running statistics after the backward pass.
//!
//! Both sides use the same kernels, so what is tested is the macro's wiring: which buffer feeds
//! which kernel, the order of the backward pass, how gradients of a value read several times are
//! summed, how a batch's columns are split among the inputs, parameter naming and shapes, the
//! loss's input.
//!
//! Batch normalisation and dropout are the exception: the reference computes them with loops of
//! its own, so their kernels are tested too, and the mode of each pass. `forward` and `predict`
//! are evaluation passes (running statistics, no dropout); with a loss, the backward pass is a
//! training pass (the batch's statistics, which move the running ones, and fresh masks), and
//! without one it differentiates `forward`'s evaluation pass. Before the network's first pass its
//! masks are restarted with `seed_masks` and a drawn seed, from which the reference draws the same
//! masks in the network's order (see `differential/reference.rs`); so the masks are compared too,
//! through the loss and every gradient. The two sides then round apart (by an ulp or so), so in
//! such a network each gradient and running mean is judged on the scale of its terms, which the
//! reference gives with it (`reference::Training`): past a training pass's batch normalisation
//! they cancel (a bias right before one has gradient 0, its values rounding alone).
//!
//! Before the compared calls each network runs once on the batch's first sample alone, so that the
//! compared calls see resized buffers and backward must overwrite gradients, not add to them. With
//! a loss that is a training pass, which moves the running statistics and draws masks: the
//! reference runs it too.
//!
//! `every_op_of_the_table_is_evaluated_by_the_reference` and `every_op_of_the_table_is_in_a_network`
//! check the op table (`chainrule::__op_names!()`) against the reference evaluator and the
//! networks: an op added to the table fails them until the reference runs it and a network uses it.
//!
//! Each network gets [`CASES`] cases (set `PROPTEST_CASES` for a deeper run). To change the networks,
//! edit the generator and run
//! `CHAINRULE_REGENERATE=1 cargo test --test differential generated_file_is_fresh`.

#[path = "differential/compare.rs"]
mod compare;
#[path = "differential/generator.rs"]
mod generator;
#[path = "differential/reference.rs"]
mod reference;

use std::ops::Range;

use chainrule::ndarray::{Array2, ArrayView2, s};
use chainrule::{BufferRef, Element, Init, Network, ParamRef, Trainable};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use compare::{compare, compare_scalar, compare_sums, tolerance};
use reference::{AffineParams, Head, Loss, Mode, Node, Op, Reference, State, Targets};

/// How many random cases each network is tried on, unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 24;

/// What the harness needs to know about a compiled network besides [`Network`]: its nodes as the
/// reference runs them, its loss, its constructor, and its backward pass.
trait Subject: Network + Sized {
    /// The network without the loss.
    fn nodes() -> Vec<Node>;
    const LOSS: Option<Loss>;
    /// `Self::new(init, seed)`.
    fn create(init: Init, seed: u64) -> Self;
    /// The backward pass on the batch: with a loss, `loss` then `backward` on the batch and its
    /// targets, returning the loss; without, `forward` then `backward_from` the batch's values as
    /// the output gradient. (Chosen by the macro, so that only the network's own pass is built.)
    fn backward_pass(&mut self, batch: &Batch<Self::Elem>) -> Result<Option<Self::Elem>, String>;
}

/// Implements [`Subject`] for a compiled network and stamps out its proptest:
/// `differential_test! { test_name: NetType = DESCRIPTION, loss: softmax_cross_entropy | mse | none }`,
/// where `DESCRIPTION` is a chain on the implicit input, `[ops...]`, a chain on a declared input,
/// `input(dims...) -> [ops...]`, or a graph, `graph [nodes...]`.
macro_rules! differential_test {
    ($test:ident: $net:ident = [$($op:expr),* $(,)?], loss: $loss:ident) => {
        differential_test!(
            @impl $test, $net, $crate::reference::chain(None, &[$($op),*]), $loss
        );
    };
    (
        $test:ident: $net:ident = input($($dim:expr),+) -> [$($op:expr),* $(,)?],
        loss: $loss:ident
    ) => {
        differential_test!(
            @impl $test, $net, $crate::reference::chain(Some(&[$($dim),+]), &[$($op),*]), $loss
        );
    };
    ($test:ident: $net:ident = graph [$($node:expr),* $(,)?], loss: $loss:ident) => {
        differential_test!(@impl $test, $net, vec![$($node),*], $loss);
    };
    (@impl $test:ident, $net:ident, $nodes:expr, $loss:ident) => {
        impl $crate::Subject for $net {
            fn nodes() -> Vec<$crate::reference::Node> {
                $nodes
            }

            const LOSS: Option<$crate::reference::Loss> = differential_test!(@loss $loss);

            // Not inlined: the harness creates networks in two places, and `new` is long.
            #[inline(never)]
            fn create(init: ::chainrule::Init, seed: u64) -> Self {
                $net::new(init, seed)
            }

            fn backward_pass(
                &mut self,
                batch: &$crate::Batch<Self::Elem>,
            ) -> Result<Option<Self::Elem>, String> {
                differential_test!(@train self, batch, $loss)
            }
        }

        #[test]
        fn $test() {
            $crate::run::<$net>();
        }
    };
    (@loss none) => { None };
    (@loss softmax_cross_entropy) => { Some($crate::reference::Loss::SoftmaxCrossEntropy) };
    (@loss mse) => { Some($crate::reference::Loss::Mse) };
    (@train $net:ident, $batch:ident, none) => {
        $crate::forward_and_backward_from($net, $batch)
    };
    (@train $net:ident, $batch:ident, softmax_cross_entropy) => {
        $crate::loss_and_backward($net, $batch.x.view(), &$batch.classes[..])
    };
    (@train $net:ident, $batch:ident, mse) => {
        $crate::loss_and_backward($net, $batch.x.view(), $batch.values.view())
    };
}

/// The generated networks; `#[rustfmt::skip]` keeps the file exactly as the generator writes it.
#[path = "differential/networks.rs"]
#[rustfmt::skip]
mod networks;

/// [`Subject::backward_pass`] with a loss.
fn loss_and_backward<N: Trainable>(
    net: &mut N,
    x: ArrayView2<'_, N::Elem>,
    t: N::Targets<'_>,
) -> Result<Option<N::Elem>, String> {
    let loss = net.loss(x, t).map_err(|e| format!("loss: {e}"))?;
    net.backward().map_err(|e| format!("backward: {e}"))?;
    Ok(Some(loss))
}

/// [`Subject::backward_pass`] without a loss.
fn forward_and_backward_from<N: Network>(
    net: &mut N,
    batch: &Batch<N::Elem>,
) -> Result<Option<N::Elem>, String> {
    net.forward(batch.x.view())
        .map_err(|e| format!("forward: {e}"))?;
    net.backward_from(batch.values.view())
        .map_err(|e| format!("backward_from: {e}"))?;
    Ok(None)
}

/// One random case, drawn in `f64` for a network of `input` features and `output` outputs.
#[derive(Debug, Clone)]
struct Case {
    batch: usize,
    /// batch × input, row-major, in [-3, 3] (mapped to [1, 2] for a positive input).
    x: Vec<f64>,
    init: Init,
    seed: u64,
    /// The seed the network's dropout masks are restarted with (`seed_masks`).
    masks: u64,
    /// One class below `output` per sample (for `softmax_cross_entropy`).
    classes: Vec<usize>,
    /// batch × output values, row-major, in [-3, 3]: the targets of `mse`, or the output
    /// gradient given to `backward_from` by a network without a loss.
    values: Vec<f64>,
}

fn cases(input: usize, output: usize) -> impl Strategy<Value = Case> {
    let inits = prop_oneof![Just(Init::Std(0.5)), Just(Init::He), Just(Init::Xavier)];
    (1usize..=6, inits, any::<u64>(), any::<u64>()).prop_flat_map(
        move |(batch, init, seed, masks)| {
            (
                vec(-3.0..=3.0, batch * input),
                vec(0..output, batch),
                vec(-3.0..=3.0, batch * output),
            )
                .prop_map(move |(x, classes, values)| Case {
                    batch,
                    x,
                    init,
                    seed,
                    masks,
                    classes,
                    values,
                })
        },
    )
}

/// A case in a network's element type.
struct Batch<T> {
    x: Array2<T>,
    classes: Vec<usize>,
    values: Array2<T>,
    /// The seed of the dropout masks.
    masks: u64,
}

impl<T: Element> Batch<T> {
    /// The case for a network of `input` columns (those in `positive` mapped from [-3, 3] to
    /// [1, 2]) and `output` outputs.
    fn new(case: &Case, input: usize, output: usize, positive: &[Range<usize>]) -> Self {
        let convert = |v: &[f64], width| {
            Array2::from_shape_vec(
                (case.batch, width),
                v.iter().map(|&v| T::from_f64(v)).collect(),
            )
            .expect("the strategy draws batch × width values")
        };
        let mut x = case.x.clone();
        for (i, v) in x.iter_mut().enumerate() {
            if positive
                .iter()
                .any(|columns| columns.contains(&(i % input)))
            {
                *v = 1.5 + *v / 6.0;
            }
        }
        Batch {
            x: convert(&x, input),
            classes: case.classes.clone(),
            values: convert(&case.values, output),
            masks: case.masks,
        }
    }

    /// The first `rows` samples.
    fn head(&self, rows: usize) -> Self {
        Batch {
            x: self.x.slice(s![..rows, ..]).to_owned(),
            classes: self.classes[..rows].to_vec(),
            values: self.values.slice(s![..rows, ..]).to_owned(),
            masks: self.masks,
        }
    }
}

/// The columns of the inputs the test draws positive.
fn positive_columns(nodes: &[Node]) -> Vec<Range<usize>> {
    reference::inputs(nodes)
        .into_iter()
        .filter(|(_, input)| input.positive)
        .map(|(start, input)| start..start + reference::size(&input.dims))
        .collect()
}

/// The proptest of one network.
fn run<N: Subject>() {
    let nodes = N::nodes();
    check_constants::<N>(&nodes);
    run_cases(N::NAME, N::INPUT, N::OUTPUT, &|case| {
        let batch = Batch::<N::Elem>::new(&case, N::INPUT, N::OUTPUT, &positive_columns(&nodes));
        let mut net = N::create(case.init, case.seed);
        check_case(&mut net, &nodes, N::LOSS, &batch)
    });
}

/// Runs `test` on [`CASES`] random cases (no failure file is written) and panics with the smallest failing one. Not generic, so
/// proptest's runner is compiled once for all networks.
fn run_cases(name: &str, input: usize, output: usize, test: &dyn Fn(Case) -> Result<(), String>) {
    let defaults = Config::default(); // reads PROPTEST_CASES
    let config = Config {
        cases: match std::env::var_os("PROPTEST_CASES") {
            Some(_) => defaults.cases,
            None => CASES,
        },
        failure_persistence: None,
        ..defaults
    };
    let mut runner = TestRunner::new(config);
    if let Err(error) = runner.run(&cases(input, output), |case| {
        test(case).map_err(TestCaseError::fail)
    }) {
        panic!("{name}: {error}");
    }
}

/// What does not depend on the batch: the network's constants and parameter list.
fn check_constants<N: Subject>(nodes: &[Node]) {
    let params = reference::params(nodes);
    assert_eq!(
        N::INPUT,
        reference::input_width(nodes),
        "{}::INPUT",
        N::NAME
    );
    assert_eq!(
        N::OUTPUT,
        reference::output_width(nodes),
        "{}::OUTPUT",
        N::NAME
    );
    let scalars: usize = params
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(N::PARAMS, scalars, "{}::PARAMS", N::NAME);
    let names: Vec<&str> = params.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(N::PARAM_NAMES, names, "{}::PARAM_NAMES", N::NAME);
    let net = N::create(Init::He, 0);
    let visited = Compiled::params(&net);
    let shapes: Vec<_> = visited
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone()))
        .collect();
    assert_eq!(shapes, params, "{}: for_each_param", N::NAME);
    // `param` finds each by its name.
    for p in &visited {
        let found = net.param(&p.name).expect("the parameter is there");
        assert_eq!(
            (found.shape, found.value),
            (&p.shape[..], &p.value[..]),
            "{}: param({:?})",
            N::NAME,
            p.name
        );
    }
}

/// What the comparison calls on a compiled network, behind a `dyn`: the comparison is compiled
/// once per element type rather than once per network (which would double the test's build).
trait Compiled<T: Element> {
    fn forward(&mut self, x: ArrayView2<'_, T>) -> Result<Array2<T>, String>;
    fn predict(&mut self, x: ArrayView2<'_, T>) -> Result<Vec<usize>, String>;
    /// With a loss, `loss` then `backward`, returning the loss; without, `forward` then
    /// `backward_from` the batch's values.
    fn backward(&mut self, batch: &Batch<T>) -> Result<Option<T>, String>;
    /// Every parameter (as `for_each_param` visits them): name, shape, value and gradient
    /// (row-major).
    fn params(&self) -> Vec<ParamCopy<T>>;
    fn input_grad(&self, name: &str) -> Result<Array2<T>, String>;
    /// Every buffer (as `for_each_buffer` visits them): name and values.
    fn buffers(&self) -> Vec<(String, Vec<T>)>;
    fn seed_masks(&mut self, seed: u64);
}

/// A parameter copied out of a network.
#[derive(Debug, Clone, PartialEq)]
struct ParamCopy<T> {
    name: String,
    shape: Vec<usize>,
    value: Vec<T>,
    grad: Vec<T>,
}

/// What `for_each_buffer` calls to copy each buffer into `buffers` (a closure of one type per
/// element type, as [`ParamCopy::pusher`]).
fn buffer_pusher<T: Element>(
    buffers: &mut Vec<(String, Vec<T>)>,
) -> impl FnMut(BufferRef<'_, T>) + '_ {
    |b| buffers.push((b.name.to_owned(), b.value.to_vec()))
}

impl<T: Element> ParamCopy<T> {
    /// What `for_each_param` calls to copy each parameter into `params` (a closure of one type
    /// per element type, not per network).
    fn pusher(params: &mut Vec<Self>) -> impl FnMut(ParamRef<'_, T>) + '_ {
        |p| {
            params.push(ParamCopy {
                name: p.name.to_owned(),
                shape: p.shape.to_vec(),
                value: p.value.to_vec(),
                grad: p.grad.to_vec(),
            })
        }
    }
}

impl<N: Subject> Compiled<N::Elem> for N {
    fn forward(&mut self, x: ArrayView2<'_, N::Elem>) -> Result<Array2<N::Elem>, String> {
        Network::forward(self, x)
            .map(|y| y.to_owned())
            .map_err(|e| e.to_string())
    }

    fn predict(&mut self, x: ArrayView2<'_, N::Elem>) -> Result<Vec<usize>, String> {
        Network::predict(self, x).map_err(|e| e.to_string())
    }

    fn backward(&mut self, batch: &Batch<N::Elem>) -> Result<Option<N::Elem>, String> {
        self.backward_pass(batch)
    }

    fn params(&self) -> Vec<ParamCopy<N::Elem>> {
        let mut params = Vec::new();
        self.for_each_param(&mut ParamCopy::pusher(&mut params));
        params
    }

    fn input_grad(&self, name: &str) -> Result<Array2<N::Elem>, String> {
        Network::input_grad(self, name)
            .map(|g| g.to_owned())
            .map_err(|e| e.to_string())
    }

    fn buffers(&self) -> Vec<(String, Vec<N::Elem>)> {
        let mut buffers = Vec::new();
        self.for_each_buffer(&mut buffer_pusher(&mut buffers));
        buffers
    }

    fn seed_masks(&mut self, seed: u64) {
        Network::seed_masks(self, seed);
    }
}

/// One case: the reference of `net` (with its loss, `loss`) on the batch, and the comparison.
fn check_case<T: Element>(
    net: &mut dyn Compiled<T>,
    nodes: &[Node],
    loss: Option<Loss>,
    batch: &Batch<T>,
) -> Result<(), String> {
    let reference = evaluate_reference(net, nodes, loss, batch)?;
    compare_with_reference(net, batch, &reference)
}

/// The reference evaluation of `nodes` with `net`'s parameters on the batch, and the backward
/// pass from `loss` and the batch's targets or, without a loss, from the batch's values as the
/// output gradient; each in the mode of the network's pass it is compared with, after the passes
/// [`compare_with_reference`] makes the network run before it.
fn evaluate_reference<T: Element>(
    net: &dyn Compiled<T>,
    nodes: &[Node],
    loss: Option<Loss>,
    batch: &Batch<T>,
) -> Result<Reference<T>, String> {
    let copies = net.params();
    let mut params = Vec::new();
    for pair in reference::params(nodes).chunks(2) {
        let [(weight, shape), (bias, bias_shape)] = pair else {
            unreachable!("weights and biases come in pairs")
        };
        let weight = copy_param(&copies, weight, shape)?;
        let bias = copy_param(&copies, bias, bias_shape)?;
        // A matrix of the weight's first dimension by the rest: in × out, or out × in·k·k.
        let matrix = (shape[0], reference::size(&shape[1..]));
        params.push(AffineParams {
            weight: Array2::from_shape_vec(matrix, weight).expect("the shape was checked"),
            bias: bias.into(),
        });
    }
    let head = match loss {
        Some(loss @ Loss::SoftmaxCrossEntropy) => {
            Head::Loss(loss, Targets::Classes(&batch.classes))
        }
        Some(loss @ Loss::Mse) => Head::Loss(loss, Targets::Values(&batch.values)),
        None => Head::OutputGrad(&batch.values),
    };
    let mut state = State::new(nodes, batch.masks);
    if loss.is_some() {
        // The warm-up's `loss` on the first sample.
        let first = batch.head(1);
        reference::evaluate(nodes, &params, &first.x, None, Mode::Training, &mut state);
    }
    // `forward` and `predict`.
    let evaluation =
        reference::evaluate(nodes, &params, &batch.x, None, Mode::Evaluation, &mut state);
    // `loss` then `backward`, or `backward_from` after `forward`.
    let mode = match loss {
        Some(_) => Mode::Training,
        None => Mode::Evaluation,
    };
    let backward = reference::evaluate(nodes, &params, &batch.x, Some(head), mode, &mut state);
    Ok(Reference {
        output: evaluation.output,
        predict: evaluation.predict,
        ..backward
    })
}

/// The value of the parameter `name` of `params` (row-major), after checking its shape.
fn copy_param<T: Element>(
    params: &[ParamCopy<T>],
    name: &str,
    shape: &[usize],
) -> Result<Vec<T>, String> {
    let p = params
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| format!("the network has no parameter {name:?}"))?;
    if p.shape != shape {
        return Err(format!("{name} has shape {:?}, not {shape:?}", p.shape));
    }
    Ok(p.value.clone())
}

/// Runs `net` on the batch (forward, predict, and the backward pass) and compares every result
/// with the reference's.
fn compare_with_reference<T: Element>(
    net: &mut dyn Compiled<T>,
    batch: &Batch<T>,
    reference: &Reference<T>,
) -> Result<(), String> {
    let rel = tolerance::<T>();

    // The masks the reference draws.
    net.seed_masks(batch.masks);
    // A warm-up on the first sample alone: the compared calls then run on resized buffers, and
    // backward must overwrite the warm-up's gradients, not add to them.
    let first = batch.head(1);
    net.forward(first.x.view())
        .map_err(|e| format!("warm-up forward: {e}"))?;
    net.backward(&first).map_err(|e| format!("warm-up {e}"))?;

    let x = batch.x.view();

    let output = net.forward(x)?;
    if output.dim() != reference.output.dim() {
        return Err(format!(
            "forward output is {:?}, the reference's {:?}",
            output.dim(),
            reference.output.dim()
        ));
    }
    let output: Vec<_> = output.iter().copied().collect();
    let expected: Vec<_> = reference.output.iter().copied().collect();
    compare("forward output", &output, &expected, rel)?;

    let predict = net.predict(x)?;
    if predict != reference.predict {
        return Err(format!(
            "predict gives {predict:?}, the reference {:?}",
            reference.predict
        ));
    }

    let Some(training) = &reference.training else {
        return Ok(());
    };
    match (net.backward(batch)?, training.loss) {
        (Some(loss), Some(expected)) => compare_scalar("loss", loss, expected, rel)?,
        (None, None) => {}
        (Some(_), None) => return Err("the network has a loss, the reference none".to_owned()),
        (None, Some(_)) => return Err("the reference has a loss, the network none".to_owned()),
    }
    let params = net.params();
    for (name, expected, terms) in &training.grads {
        let p = params
            .iter()
            .find(|p| p.name == *name)
            .ok_or_else(|| format!("the network has no parameter {name:?}"))?;
        let what = format!("{name} gradient");
        compare_sums(&what, &p.grad, expected, rel, *terms)?;
    }
    for (input, expected, terms) in &training.input_grads {
        let Some(name) = &input.name else { continue };
        match (input.grad, net.input_grad(name)) {
            (true, Ok(grad)) => {
                if grad.dim() != expected.dim() {
                    return Err(format!(
                        "input_grad({name:?}) is {:?}, the reference's {:?}",
                        grad.dim(),
                        expected.dim()
                    ));
                }
                let grad: Vec<_> = grad.iter().copied().collect();
                let expected: Vec<_> = expected.iter().copied().collect();
                let what = format!("input_grad({name:?})");
                compare_sums(&what, &grad, &expected, rel, *terms)?;
            }
            (true, Err(e)) => return Err(format!("input_grad({name:?}): {e}")),
            (false, Ok(_)) => {
                return Err(format!(
                    "input_grad({name:?}) is kept, but `{name}` is not #[grad]"
                ));
            }
            (false, Err(_)) => {}
        }
    }
    // The running statistics, after the warm-up and the backward pass.
    let buffers = net.buffers();
    let names: Vec<&str> = buffers.iter().map(|(name, _)| name.as_str()).collect();
    let expected: Vec<&str> = reference.buffers.iter().map(|(n, ..)| n.as_str()).collect();
    if names != expected {
        return Err(format!(
            "the network's buffers are {names:?}, the reference's {expected:?}"
        ));
    }
    for ((name, value), (_, expected, terms)) in buffers.iter().zip(&reference.buffers) {
        compare_sums(name, value, expected, rel, *terms)?;
    }
    Ok(())
}

#[test]
fn generated_file_is_fresh() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/differential/networks.rs"
    );
    let generated = generator::render();
    if std::env::var_os("CHAINRULE_REGENERATE").is_some_and(|v| v == "1") {
        std::fs::write(path, &generated).expect("networks.rs is writable");
        return;
    }
    let committed = std::fs::read_to_string(path).expect("networks.rs is readable");
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(c, g)| c != g)
            .map_or_else(|| "the end".to_owned(), |i| format!("line {}", i + 1));
        panic!(
            "tests/differential/networks.rs is stale (first difference at {line}); regenerate it with \
             CHAINRULE_REGENERATE=1 cargo test --test differential generated_file_is_fresh"
        );
    }
}

#[test]
fn generated_networks_cover_the_language() {
    let specs = generator::specs();
    assert_eq!(specs.len(), generator::NETWORKS);
    let missing = missing_from_chains(&specs);
    assert!(
        missing.is_empty(),
        "no generated chain has {}",
        missing.join("; ")
    );
}

/// What the language has that none of `specs` has.
fn missing_from_chains(specs: &[generator::Spec]) -> Vec<String> {
    use generator::Spec;
    let missing = std::cell::RefCell::new(Vec::new());
    let any = |what: &str, f: &dyn Fn(&Spec) -> bool| {
        if !specs.iter().any(f) {
            missing.borrow_mut().push(what.to_owned());
        }
    };
    let is_activation = |op: &Op| !op.is_affine();
    let affines = |s: &Spec| s.ops.iter().filter(|op| op.is_affine()).count();
    let ends_in_activation = |s: &Spec| is_activation(s.ops.last().unwrap());
    let pairs = |s: &Spec, f: &dyn Fn(bool, bool) -> bool| {
        s.ops
            .windows(2)
            .any(|w| f(is_activation(&w[0]), is_activation(&w[1])))
    };
    let widths = |s: &Spec| -> Vec<usize> {
        s.ops
            .iter()
            .filter_map(|op| match *op {
                Op::Affine(i, o) => Some([i, o]),
                _ => None,
            })
            .flatten()
            .collect()
    };

    for elem in ["f32", "f64"] {
        for loss in [Some(Loss::SoftmaxCrossEntropy), Some(Loss::Mse), None] {
            any(&format!("{elem} and {loss:?}"), &|s| {
                s.elem == elem && s.loss == loss
            });
        }
    }
    // Every activation, with every α the generator draws (so every way of writing it).
    let activations = [
        Op::Relu,
        Op::Sigmoid,
        Op::Tanh,
        Op::LeakyRelu(0.01),
        Op::LeakyRelu(0.1),
        Op::LeakyRelu(0.3),
        Op::Elu(0.5),
        Op::Elu(1.0),
        Op::Softmax,
    ];
    for op in activations {
        any(&format!("{op:?}"), &|s| s.ops.contains(&op));
    }
    for loss in [Some(Loss::SoftmaxCrossEntropy), Some(Loss::Mse), None] {
        any(&format!("softmax before {loss:?}"), &|s| {
            s.loss == loss && s.ops.last() == Some(&Op::Softmax)
        });
    }
    any("softmax between affine layers", &|s| {
        s.ops
            .windows(3)
            .any(|w| w[0].is_affine() && w[1] == Op::Softmax && w[2].is_affine())
    });
    any("one affine layer", &|s| affines(s) == 1);
    any("five affine layers", &|s| affines(s) == 5);
    any("two activations in a row", &|s| pairs(s, &|a, b| a && b));
    any("two affine layers in a row", &|s| {
        pairs(s, &|a, b| !a && !b)
    });
    for loss in [Some(Loss::SoftmaxCrossEntropy), Some(Loss::Mse), None] {
        any(&format!("{loss:?} after an activation"), &|s| {
            s.loss == loss && ends_in_activation(s)
        });
        any(&format!("{loss:?} after an affine layer"), &|s| {
            s.loss == loss && !ends_in_activation(s)
        });
    }
    any("a declared input of features", &|s| {
        s.input.as_ref().is_some_and(|d| d.len() == 1)
    });
    any("a declared input then an activation", &|s| {
        s.input.is_some() && is_activation(&s.ops[0])
    });
    any("a declared input then an affine layer", &|s| {
        s.input.is_some() && s.ops[0].is_affine()
    });
    for loss in [Some(Loss::Mse), None] {
        any(&format!("images (rank 3) and {loss:?}"), &|s| {
            s.loss == loss && s.input.as_ref().is_some_and(|d| d.len() == 3)
        });
    }
    any("one input feature", &|s| {
        reference::input_width(&s.nodes()) == 1
    });
    any("mse on one output", &|s| {
        s.loss == Some(Loss::Mse) && reference::output_width(&s.nodes()) == 1
    });
    any("two classes", &|s| {
        s.loss == Some(Loss::SoftmaxCrossEntropy) && reference::output_width(&s.nodes()) == 2
    });
    any("a layer of width 1", &|s| widths(s).contains(&1));
    any("a layer of width 12", &|s| widths(s).contains(&12));

    // Convolutional chains: every way a window slides, and every way an image becomes features.
    let windows = |s: &Spec, f: &dyn Fn(&Op, reference::Window) -> bool| {
        s.ops.iter().any(|op| op.window().is_some_and(|w| f(op, w)))
    };
    let is_conv = |op: &Op| matches!(op, Op::Conv2d(..));
    let is_pool = |op: &Op| matches!(op, Op::MaxPool(_) | Op::AvgPool(_));
    any("a 1 × 1 convolution", &|s| {
        windows(s, &|op, w| is_conv(op) && w.size == 1)
    });
    any("a 3 × 3 convolution", &|s| {
        windows(s, &|op, w| is_conv(op) && w.size == 3)
    });
    any("a convolution with stride 2", &|s| {
        windows(s, &|op, w| is_conv(op) && w.stride == 2)
    });
    any("a padded convolution", &|s| {
        windows(s, &|op, w| is_conv(op) && w.pad > 0)
    });
    any("a pooling with stride 1", &|s| {
        windows(s, &|op, w| is_pool(op) && w.stride == 1)
    });
    any("a padded pooling", &|s| {
        windows(s, &|op, w| is_pool(op) && w.pad > 0)
    });
    for op in [reference::max_pool(2), reference::avg_pool(2)] {
        any(op.name(), &|s| s.ops.iter().any(|o| o.name() == op.name()));
    }
    // Each op with the shape it reads.
    let reading = |s: &Spec| -> Vec<(Op, Vec<usize>)> {
        s.ops
            .iter()
            .copied()
            .zip(reference::shapes(&s.nodes()))
            .collect()
    };
    any("a window that does not tile, with exact = false", &|s| {
        reading(s).iter().any(|(op, shape)| {
            op.window().is_some_and(|w| {
                let left = |side: usize| w.slide(side).expect("it fits").1;
                !w.exact && (left(shape[1]) > 0 || left(shape[2]) > 0)
            })
        })
    });
    any("relu after conv2d", &|s| {
        s.ops.windows(2).any(|w| is_conv(&w[0]) && w[1] == Op::Relu)
    });
    any("an affine layer reading an image", &|s| {
        reading(s)
            .iter()
            .any(|(op, shape)| op.is_affine() && shape.len() == 3)
    });
    any("flatten then an affine layer", &|s| {
        s.ops
            .windows(2)
            .any(|w| w[0] == Op::Flatten && w[1].is_affine())
    });
    any("flatten last", &|s| s.ops.last() == Some(&Op::Flatten));
    any("f32 convolutions", &|s| {
        s.elem == "f32" && s.ops.iter().any(is_conv)
    });

    // Batch normalisation and dropout: every way of writing their options, on features and on
    // images, where a bias cancels, and with every loss (so both modes of the backward pass).
    let is_norm = |op: &Op| matches!(op, Op::BatchNorm(..));
    let is_dropout = |op: &Op| matches!(op, Op::Dropout(_));
    let forms = [
        Op::BatchNorm(0.1, 1e-5),
        Op::BatchNorm(0.5, 1e-5),
        Op::BatchNorm(0.1, 1e-3),
        Op::BatchNorm(1.0, 0.01),
        Op::BatchNorm(0.0, 1e-4),
        Op::Dropout(0.0),
        Op::Dropout(0.1),
        Op::Dropout(0.25),
        Op::Dropout(0.5),
    ];
    for op in forms {
        any(&format!("{op:?}"), &|s| s.ops.contains(&op));
    }
    for name in ["batchnorm", "dropout"] {
        let is = |op: &Op| op.name() == name;
        for loss in [Some(Loss::SoftmaxCrossEntropy), Some(Loss::Mse), None] {
            any(&format!("{name} and {loss:?}"), &|s| {
                s.loss == loss && s.ops.iter().any(is)
            });
        }
        for elem in ["f32", "f64"] {
            any(&format!("{elem} {name}"), &|s| {
                s.elem == elem && s.ops.iter().any(is)
            });
        }
        for rank in [1, 3] {
            any(&format!("{name} on values of rank {rank}"), &|s| {
                reading(s)
                    .iter()
                    .any(|(op, shape)| is(op) && shape.len() == rank)
            });
        }
        any(&format!("{name} on a declared input"), &|s| {
            s.input.is_some() && is(&s.ops[0])
        });
        any(&format!("{name} last"), &|s| s.ops.last().is_some_and(is));
    }
    any("batchnorm right after an affine layer", &|s| {
        s.ops.windows(2).any(|w| w[0].is_affine() && is_norm(&w[1]))
    });
    any("batchnorm right after a convolution", &|s| {
        s.ops.windows(2).any(|w| is_conv(&w[0]) && is_norm(&w[1]))
    });
    any("batchnorm on flattened images", &|s| {
        s.ops
            .windows(2)
            .any(|w| w[0] == Op::Flatten && is_norm(&w[1]))
    });
    any("two dropouts", &|s| {
        s.ops.iter().filter(|op| is_dropout(op)).count() >= 2
    });
    missing.into_inner()
}

/// How many times each node's value is read, by node.
fn readers(nodes: &[Node]) -> Vec<usize> {
    let mut readers = vec![0; nodes.len()];
    for node in nodes {
        match node {
            Node::Input(_) => {}
            Node::Layer(_, from) => readers[*from] += 1,
            Node::Merge(_, a, b) => {
                readers[*a] += 1;
                readers[*b] += 1;
            }
            Node::Concat(parts) => parts.iter().for_each(|&p| readers[p] += 1),
        }
    }
    readers
}

#[test]
fn graphs_cover_the_language() {
    let graphs = generator::graph_specs();
    assert_eq!(
        graphs
            .iter()
            .filter(|g| g.name.starts_with("Graph"))
            .count(),
        generator::GRAPHS
    );
    let missing = missing_from_graphs(&graphs);
    assert!(missing.is_empty(), "no graph has {}", missing.join("; "));
}

/// What the language has that none of `graphs` has.
fn missing_from_graphs(graphs: &[generator::GraphSpec]) -> Vec<String> {
    use generator::GraphSpec;
    let missing = std::cell::RefCell::new(Vec::new());
    /// A property of a graph, its nodes and their shapes.
    type Has<'a> = dyn Fn(&GraphSpec, &[Node], &[Vec<usize>]) -> bool + 'a;
    let any = |what: &str, f: &Has<'_>| {
        let found = graphs.iter().any(|g| {
            let nodes = g.nodes();
            f(g, &nodes, &reference::shapes(&nodes))
        });
        if !found {
            missing.borrow_mut().push(what.to_owned());
        }
    };
    let is_input = |nodes: &[Node], i: usize| matches!(nodes[i], Node::Input(_));
    let input = |node: &Node| match node {
        Node::Input(input) => Some(input.clone()),
        _ => None,
    };

    for elem in ["f32", "f64"] {
        any(&format!("{elem} elements"), &|g, _, _| g.elem == elem);
    }
    for loss in [Some(Loss::SoftmaxCrossEntropy), Some(Loss::Mse), None] {
        any(&format!("{loss:?}"), &|g, _, _| g.loss == loss);
    }
    for merge in reference::Merge::ALL {
        any(&format!("{merge:?}"), &|_, nodes, _| {
            nodes
                .iter()
                .any(|n| matches!(n, Node::Merge(m, ..) if *m == merge))
        });
        any(
            &format!("{merge:?} of values of rank 3"),
            &|_, nodes, shapes| {
                nodes.iter().zip(shapes).any(|(n, shape)| {
                    matches!(n, Node::Merge(m, ..) if *m == merge) && shape.len() == 3
                })
            },
        );
        any(
            &format!("{merge:?} of a value with itself"),
            &|_, nodes, _| {
                nodes
                    .iter()
                    .any(|n| matches!(n, Node::Merge(m, a, b) if *m == merge && a == b))
            },
        );
    }
    any("mul with an input as an operand", &|_, nodes, _| {
        nodes.iter().any(|n| {
            matches!(*n, Node::Merge(reference::Merge::Mul, a, b)
                if is_input(nodes, a) || is_input(nodes, b))
        })
    });
    any("div by an input", &|_, nodes, _| {
        nodes
            .iter()
            .any(|n| matches!(*n, Node::Merge(reference::Merge::Div, _, b) if is_input(nodes, b)))
    });
    any("div by a sigmoid's output", &|_, nodes, _| {
        nodes.iter().any(|n| {
            matches!(*n, Node::Merge(reference::Merge::Div, _, b)
                if matches!(nodes[b], Node::Layer(Op::Sigmoid, _)))
        })
    });
    any("concat of three parts", &|_, nodes, _| {
        nodes
            .iter()
            .any(|n| matches!(n, Node::Concat(parts) if parts.len() >= 3))
    });
    any("concat along channels", &|_, nodes, shapes| {
        nodes
            .iter()
            .zip(shapes)
            .any(|(n, shape)| matches!(n, Node::Concat(_)) && shape.len() == 3)
    });
    any("concat with an input as a part", &|_, nodes, _| {
        nodes
            .iter()
            .any(|n| matches!(n, Node::Concat(parts) if parts.iter().any(|&p| is_input(nodes, p))))
    });
    any("a value read by three nodes", &|_, nodes, _| {
        readers(nodes).iter().any(|&r| r >= 3)
    });
    any("a residual sum", &|_, nodes, _| {
        nodes.iter().enumerate().any(|(i, n)| {
            matches!(*n, Node::Merge(reference::Merge::Add, a, b)
                if a < i && b == i - 1 && a != b && !is_input(nodes, a))
        })
    });
    any("three inputs", &|_, nodes, _| {
        nodes.iter().filter_map(input).count() == 3
    });
    any("a #[grad] input and one without", &|_, nodes, _| {
        let inputs: Vec<_> = nodes.iter().filter_map(input).collect();
        inputs.iter().any(|i| i.grad) && inputs.iter().any(|i| !i.grad)
    });
    any("inputs of rank 3", &|_, nodes, _| {
        nodes.iter().filter_map(input).any(|i| i.dims.len() == 3)
    });
    any("an input written at a chain's start", &|_, nodes, _| {
        nodes.iter().filter_map(input).any(|i| i.name.is_none())
    });
    // A value made by a convolution, perhaps through elementwise activations after it.
    let from_conv = |nodes: &[Node], mut i: usize| loop {
        match nodes[i] {
            Node::Layer(Op::Conv2d(..), _) => return true,
            Node::Layer(op, from) if !op.reads_images() && !op.is_affine() => i = from,
            _ => return false,
        }
    };
    any(
        "a residual sum of a convolution and the image it read",
        &|_, nodes, _| {
            nodes.iter().any(|n| match *n {
                Node::Merge(reference::Merge::Add, a, b) => {
                    let reads = |conv: usize, image: usize| {
                        from_conv(nodes, conv)
                        && (0..conv).any(|c| {
                            matches!(nodes[c], Node::Layer(Op::Conv2d(..), from) if from == image)
                        })
                    };
                    reads(a, b) || reads(b, a)
                }
                _ => false,
            })
        },
    );
    any(
        "a concat of two convolutions along channels",
        &|_, nodes, _| {
            nodes.iter().any(|n| {
                matches!(n, Node::Concat(parts)
                if parts.iter().filter(|&&p| from_conv(nodes, p)).count() >= 2)
            })
        },
    );
    any(
        "an image read by a convolution and by another node",
        &|_, nodes, _| {
            let readers = readers(nodes);
            nodes
                .iter()
                .any(|n| matches!(*n, Node::Layer(Op::Conv2d(..), from) if readers[from] >= 2))
        },
    );
    any(
        "an image read by several poolings and flatten",
        &|_, nodes, _| {
            (0..nodes.len()).any(|v| {
                let readers: Vec<&str> = nodes
                    .iter()
                    .filter(|n| matches!(n, Node::Layer(_, from) if *from == v))
                    .map(Node::name)
                    .collect();
                ["max_pool", "avg_pool", "flatten"]
                    .iter()
                    .all(|name| readers.contains(name))
            })
        },
    );
    let layer = |node: &Node, f: &dyn Fn(Op) -> bool| matches!(*node, Node::Layer(op, _) if f(op));
    let is_norm = |op: Op| matches!(op, Op::BatchNorm(..));
    let is_dropout = |op: Op| matches!(op, Op::Dropout(_));
    for loss in [Some(Loss::SoftmaxCrossEntropy), Some(Loss::Mse), None] {
        any(
            &format!("batchnorm and dropout and {loss:?}"),
            &|g, nodes, _| {
                g.loss == loss
                    && nodes.iter().any(|n| layer(n, &is_norm))
                    && nodes.iter().any(|n| layer(n, &is_dropout))
            },
        );
    }
    any("batchnorm of values of rank 3", &|_, nodes, shapes| {
        nodes
            .iter()
            .zip(shapes)
            .any(|(n, shape)| layer(n, &is_norm) && shape.len() == 3)
    });
    any("dropout of values of rank 3", &|_, nodes, shapes| {
        nodes
            .iter()
            .zip(shapes)
            .any(|(n, shape)| layer(n, &is_dropout) && shape.len() == 3)
    });
    any("a batchnorm of a merge", &|_, nodes, _| {
        nodes.iter().any(|n| {
            matches!(*n, Node::Layer(Op::BatchNorm(..), from)
                if matches!(nodes[from], Node::Merge(..)))
        })
    });
    any("a batchnorm of a concatenation", &|_, nodes, _| {
        nodes.iter().any(|n| {
            matches!(*n, Node::Layer(Op::BatchNorm(..), from)
                if matches!(nodes[from], Node::Concat(_)))
        })
    });
    any("a batchnorm read by two nodes", &|_, nodes, _| {
        let readers = readers(nodes);
        (0..nodes.len()).any(|i| layer(&nodes[i], &is_norm) && readers[i] >= 2)
    });
    any("dropouts on two branches", &|_, nodes, _| {
        // Two dropouts neither of which reads the other's value, through any path.
        let reads = |reader: usize, value: usize| -> bool {
            let mut stack = vec![reader];
            while let Some(i) = stack.pop() {
                if i == value {
                    return true;
                }
                match &nodes[i] {
                    Node::Input(_) => {}
                    Node::Layer(_, from) => stack.push(*from),
                    Node::Merge(_, a, b) => stack.extend([*a, *b]),
                    Node::Concat(parts) => stack.extend(parts),
                }
            }
            false
        };
        let dropouts: Vec<usize> = (0..nodes.len())
            .filter(|&i| layer(&nodes[i], &is_dropout))
            .collect();
        dropouts
            .iter()
            .any(|&a| dropouts.iter().any(|&b| a < b && !reads(b, a)))
    });
    for op in Op::EXEMPLARS {
        any(op.name(), &|_, nodes, _| {
            nodes
                .iter()
                .any(|n| matches!(n, Node::Layer(o, _) if o.name() == op.name()))
        });
    }
    missing.into_inner()
}

/// The names of `table` the reference does not evaluate.
fn not_evaluated<'a>(table: &[&'a str]) -> Vec<&'a str> {
    let implemented = reference::implemented_names();
    table
        .iter()
        .copied()
        .filter(|name| !implemented.contains(name))
        .collect()
}

#[test]
fn every_op_of_the_table_is_evaluated_by_the_reference() {
    let table: &[&str] = chainrule::__op_names!();
    let implemented = reference::implemented_names();
    let missing: Vec<String> = not_evaluated(table)
        .iter()
        .map(|name| format!("`{name}`"))
        .collect();
    assert!(
        missing.is_empty(),
        "the op table (graph-macro/src/ops.rs) has {}, which the differential test's reference \
         (tests/differential/reference.rs) does not evaluate: give each a variant, run it in \
         `evaluate`, list an exemplar, and let the generator draw it (the reference evaluates \
         {implemented:?})",
        missing.join(", ")
    );
    for name in &implemented {
        assert!(
            table.contains(name),
            "the reference evaluates `{name}`, which the op table does not have: {table:?}"
        );
    }
}

#[test]
fn the_coverage_check_names_an_op_the_reference_lacks() {
    assert_eq!(
        not_evaluated(&["affine", "gelu", "mse", "layer_norm"]),
        ["gelu", "layer_norm"]
    );
    assert!(not_evaluated(&reference::implemented_names()).is_empty());
}

#[test]
fn every_op_of_the_table_is_in_a_network() {
    let mut used = std::collections::BTreeSet::new();
    for spec in generator::specs() {
        let nodes = spec.nodes();
        // A chain's input is the `input` op only where the chain writes it.
        let skip = usize::from(spec.input.is_none());
        used.extend(nodes[skip..].iter().map(Node::name));
        used.extend(spec.loss.map(Loss::name));
    }
    for graph in generator::graph_specs() {
        used.extend(graph.nodes().iter().map(Node::name));
        used.extend(graph.loss.map(Loss::name));
    }
    for name in chainrule::__op_names!() {
        assert!(
            used.contains(name),
            "no network of the differential test uses the op `{name}`: let the generator draw \
             it (tests/differential/generator.rs)"
        );
    }
}

#[test]
fn every_exemplar_runs_forward_and_backward() {
    // Each exemplar node alone on the exemplars' inputs (the nodes before the first that is not
    // one: two of 3 features and an image, all positive), backward from an output gradient that
    // is not constant along the features (softmax's input gradient would be zero).
    let exemplars = Node::exemplars();
    let count = exemplars
        .iter()
        .take_while(|n| matches!(n, Node::Input(_)))
        .count();
    let inputs = &exemplars[..count];
    let x = Array2::from_shape_fn((2, reference::input_width(inputs)), |(i, j)| {
        1.0 + 0.125 * (i + j) as f64
    });
    let mut evaluated = vec!["input"];
    for node in &exemplars[count..] {
        let mut nodes = inputs.to_vec();
        nodes.push(node.clone());
        let params: Vec<AffineParams<f64>> = reference::params(&nodes)
            .chunks(2)
            .map(|pair| {
                let (shape, bias) = (&pair[0].1, &pair[1].1);
                let matrix = (shape[0], reference::size(&shape[1..]));
                AffineParams {
                    weight: Array2::from_shape_fn(matrix, |(i, j)| 0.5 - 0.25 * (i + j) as f64),
                    bias: chainrule::ndarray::Array1::from_elem(bias[0], 0.25),
                }
            })
            .collect();
        let dy = Array2::from_shape_fn((2, reference::output_width(&nodes)), |(i, j)| {
            1.0 - 0.5 * (i + 2 * j) as f64
        });
        // Both modes, for the ops that have them.
        for mode in [Mode::Training, Mode::Evaluation] {
            let state = &mut State::new(&nodes, 1);
            let r = reference::evaluate(
                &nodes,
                &params,
                &x,
                Some(Head::OutputGrad(&dy)),
                mode,
                state,
            );
            let training = r.training.expect("there is a head");
            let grads: Vec<f64> = training
                .input_grads
                .iter()
                .flat_map(|(_, g, _)| g.iter().copied())
                .chain(
                    training
                        .grads
                        .iter()
                        .flat_map(|(_, g, _)| g.iter().copied()),
                )
                .collect();
            assert!(
                r.output.iter().chain(&grads).all(|v| v.is_finite())
                    && r.output.iter().any(|&v| v != 0.0)
                    && grads.iter().any(|&v| v != 0.0),
                "{node:?} in {mode:?}: output {:?}, gradients {grads:?}",
                r.output
            );
        }
        evaluated.push(node.name());
    }
    for loss in Loss::ALL {
        // The output is the second input's value.
        let nodes = inputs[..2].to_vec();
        let x = x.slice(s![.., ..reference::input_width(&nodes)]).to_owned();
        let classes = [0, 2];
        let values = Array2::zeros((2, 3));
        let targets = match loss {
            Loss::SoftmaxCrossEntropy => Targets::Classes(&classes),
            Loss::Mse => Targets::Values(&values),
        };
        let state = &mut State::new(&nodes, 0);
        let head = Some(Head::Loss(loss, targets));
        let r = reference::evaluate(&nodes, &[], &x, head, Mode::Training, state);
        let training = r.training.expect("there is a head");
        assert!(training.loss.is_some_and(|l| l.is_finite()), "{loss:?}");
        evaluated.push(loss.name());
    }
    assert_eq!(evaluated, reference::implemented_names());
}

// Hand-written networks for the tests that the comparison can fail.
chainrule::network! {
    struct Probe: f64 {
        affine(3, 4) -> tanh -> affine(4, 3) -> softmax_cross_entropy
    }
}
differential_test! {
    probe: Probe = [Op::Affine(3, 4), Op::Tanh, Op::Affine(4, 3)],
    loss: softmax_cross_entropy
}

chainrule::network! {
    struct GraphProbe: f64 {
        #[grad] a = input(2);
        b = input(2);
        h = a -> affine(2, 2) -> tanh;
        sub(h, b) -> mse
    }
}
differential_test! {
    graph_probe: GraphProbe = graph [
        reference::input("a", &[2], &[reference::Flag::Grad]),
        reference::input("b", &[2], &[]),
        Node::Layer(Op::Affine(2, 2), 0),
        Node::Layer(Op::Tanh, 2),
        Node::Merge(reference::Merge::Sub, 3, 1),
    ],
    loss: mse
}

fn probe_case() -> Case {
    Case {
        batch: 2,
        x: vec![0.5, -1.0, 2.0, -2.5, 0.25, 1.5],
        init: Init::Xavier,
        seed: 7,
        masks: 11,
        classes: vec![2, 0],
        values: vec![0.5, -0.5, 1.0, 0.0, 2.0, -1.0],
    }
}

/// The probe's batch and reference, ready to be tampered with.
fn probe_reference() -> (Probe, Batch<f64>, Reference<f64>) {
    let case = probe_case();
    let batch = Batch::new(&case, 3, 3, &[]);
    let net = Probe::create(case.init, case.seed);
    let reference = evaluate_reference(&net, &Probe::nodes(), Probe::LOSS, &batch).unwrap();
    (net, batch, reference)
}

/// The graph probe's batch and reference.
fn graph_probe_reference() -> (Batch<f64>, Reference<f64>) {
    let mut case = probe_case();
    case.x.extend([1.0, -0.75]);
    case.values.truncate(4);
    let batch = Batch::new(&case, 4, 2, &[]);
    let net = GraphProbe::create(case.init, case.seed);
    let reference =
        evaluate_reference(&net, &GraphProbe::nodes(), GraphProbe::LOSS, &batch).unwrap();
    (batch, reference)
}

#[test]
fn comparison_passes_on_the_untouched_reference() {
    let (mut net, batch, reference) = probe_reference();
    compare_with_reference(&mut net, &batch, &reference).unwrap();
    let (batch, reference) = graph_probe_reference();
    let mut net = GraphProbe::create(Init::Xavier, 7);
    compare_with_reference(&mut net, &batch, &reference).unwrap();
}

#[test]
fn comparison_catches_a_wrong_gradient() {
    let (_, batch, reference) = probe_reference();
    let grads = &reference.training.as_ref().unwrap().grads;
    for (p, (name, grad, _)) in grads.iter().enumerate() {
        // Far above the 1e-12 tolerance, far below anything visible in a printout.
        let scale = grad.iter().map(|g| g.abs()).fold(0.0, f64::max);
        assert!(scale > 0.0, "{name}'s gradient is all zero");
        for (i, nudge) in [(0, 1e-9), (grad.len() - 1, -1e-9)] {
            let mut wrong = reference.clone();
            wrong.training.as_mut().unwrap().grads[p].1[i] += nudge * scale;
            let mut net = Probe::create(Init::Xavier, 7);
            let error = compare_with_reference(&mut net, &batch, &wrong).unwrap_err();
            assert!(
                error.starts_with(&format!("{name} gradient[{i}]")),
                "{error}"
            );
        }
    }
}

#[test]
fn comparison_catches_a_wrong_loss_output_or_prediction() {
    let (_, batch, reference) = probe_reference();
    type Tamper = fn(&mut Reference<f64>);
    let tamper: [(&str, Tamper); 3] = [
        ("loss", |r| {
            *r.training.as_mut().unwrap().loss.as_mut().unwrap() *= 1.0 + 1e-9;
        }),
        ("forward output[4]", |r| r.output[(1, 1)] += 1e-9),
        ("predict", |r| r.predict[1] = (r.predict[1] + 1) % 3),
    ];
    for (what, tamper) in tamper {
        let mut wrong = reference.clone();
        tamper(&mut wrong);
        let mut net = Probe::create(Init::Xavier, 7);
        let error = compare_with_reference(&mut net, &batch, &wrong).unwrap_err();
        assert!(error.starts_with(what), "{what}: {error}");
    }
}

#[test]
fn comparison_catches_a_wrong_input_gradient() {
    let (batch, reference) = graph_probe_reference();
    type Tamper = fn(&mut Reference<f64>);
    let tamper: [(&str, Tamper); 3] = [
        // a's gradient off by a little.
        (r#"input_grad("a")[3]"#, |r| {
            r.training.as_mut().unwrap().input_grads[0].1[(1, 1)] *= 1.0 + 1e-9;
        }),
        // a not #[grad], b #[grad].
        (r#"input_grad("a") is kept"#, |r| {
            r.training.as_mut().unwrap().input_grads[0].0.grad = false;
        }),
        (r#"input_grad("b"): "#, |r| {
            r.training.as_mut().unwrap().input_grads[1].0.grad = true;
        }),
    ];
    for (what, tamper) in tamper {
        let mut wrong = reference.clone();
        tamper(&mut wrong);
        let mut net = GraphProbe::create(Init::Xavier, 7);
        let error = compare_with_reference(&mut net, &batch, &wrong).unwrap_err();
        assert!(error.starts_with(what), "{what}: {error}");
    }
}

// Batch normalisation and dropout, which the reference computes with its own loops.
chainrule::network! {
    struct NormProbe: f64 {
        affine(3, 4) -> batchnorm -> tanh -> dropout(0.5) -> affine(4, 3) -> softmax_cross_entropy
    }
}
differential_test! {
    norm_probe: NormProbe = [
        Op::Affine(3, 4),
        Op::BatchNorm(0.1, 1e-5),
        Op::Tanh,
        Op::Dropout(0.5),
        Op::Affine(4, 3),
    ],
    loss: softmax_cross_entropy
}

/// The norm probe's batch (of four samples) and reference.
fn norm_probe_reference() -> (Batch<f64>, Reference<f64>) {
    let mut case = probe_case();
    case.batch = 4;
    case.x.extend([1.0, 0.5, -1.5, -0.25, 2.5, 0.75]);
    case.classes.extend([1, 1]);
    case.values.extend([0.0; 6]);
    let batch = Batch::new(&case, 3, 3, &[]);
    let net = NormProbe::create(case.init, case.seed);
    let reference = evaluate_reference(&net, &NormProbe::nodes(), NormProbe::LOSS, &batch).unwrap();
    (batch, reference)
}

#[test]
fn comparison_catches_other_masks_or_running_statistics() {
    let (batch, reference) = norm_probe_reference();
    let mut net = NormProbe::create(Init::Xavier, 7);
    compare_with_reference(&mut net, &batch, &reference).unwrap();
    // The network's masks restarted from another seed: the training pass drops other units.
    let other = Batch {
        masks: batch.masks + 1,
        ..batch.head(4)
    };
    let mut net = NormProbe::create(Init::Xavier, 7);
    let error = compare_with_reference(&mut net, &other, &reference).unwrap_err();
    assert!(error.starts_with("loss"), "{error}");
    // Running statistics off by a little.
    for (b, name) in [
        (0, "batchnorm0.running_mean"),
        (1, "batchnorm0.running_var"),
    ] {
        let mut wrong = reference.clone();
        wrong.buffers[b].1[3] *= 1.0 + 1e-9;
        let mut net = NormProbe::create(Init::Xavier, 7);
        let error = compare_with_reference(&mut net, &batch, &wrong).unwrap_err();
        assert!(error.starts_with(&format!("{name}[3]")), "{error}");
    }
}

#[test]
fn comparison_catches_a_wrong_gradient_past_a_batchnorm() {
    let (batch, reference) = norm_probe_reference();
    let grads = &reference.training.as_ref().unwrap().grads;
    // The bias right before the batchnorm has gradient 0 in theory: its values are rounding, far
    // below the scale of their terms, on which it is judged.
    let (name, bias, terms) = &grads[1];
    assert_eq!(name, "affine0.bias");
    assert!(
        bias.iter().all(|g| g.abs() < 1e-12 * terms),
        "{bias:?}, terms {terms:e}"
    );
    for (p, (name, grad, terms)) in grads.iter().enumerate() {
        // Far above the 1e-12 tolerance on the scale it is judged on.
        let scale = grad.iter().map(|g| g.abs()).fold(*terms, f64::max);
        let mut wrong = reference.clone();
        wrong.training.as_mut().unwrap().grads[p].1[0] += 1e-9 * scale;
        let mut net = NormProbe::create(Init::Xavier, 7);
        let error = compare_with_reference(&mut net, &batch, &wrong).unwrap_err();
        assert!(error.starts_with(&format!("{name} gradient[0]")), "{error}");
    }
}

#[test]
fn comparison_catches_wrong_wiring() {
    // The reference of a chain the probe is not: sigmoid where it has tanh, or no activation at all.
    let (net, batch, _) = probe_reference();
    let wirings: [&[Op]; 2] = [
        &[Op::Affine(3, 4), Op::Sigmoid, Op::Affine(4, 3)],
        &[Op::Affine(3, 4), Op::Affine(4, 3)],
    ];
    for ops in wirings {
        let wrong =
            evaluate_reference(&net, &reference::chain(None, ops), Probe::LOSS, &batch).unwrap();
        let mut net = Probe::create(Init::Xavier, 7);
        let error = compare_with_reference(&mut net, &batch, &wrong).unwrap_err();
        assert!(error.starts_with("forward output"), "{ops:?}: {error}");
    }

    // The graph probe with its merge's operands swapped, or its inputs' columns swapped.
    let (batch, _) = graph_probe_reference();
    let net = GraphProbe::create(Init::Xavier, 7);
    let mut swapped_operands = GraphProbe::nodes();
    swapped_operands[4] = Node::Merge(reference::Merge::Sub, 1, 3);
    let mut swapped_inputs = GraphProbe::nodes();
    swapped_inputs.swap(0, 1);
    swapped_inputs[2] = Node::Layer(Op::Affine(2, 2), 1);
    swapped_inputs[4] = Node::Merge(reference::Merge::Sub, 3, 0);
    for nodes in [swapped_operands, swapped_inputs] {
        let wrong = evaluate_reference(&net, &nodes, GraphProbe::LOSS, &batch).unwrap();
        let mut net = GraphProbe::create(Init::Xavier, 7);
        let error = compare_with_reference(&mut net, &batch, &wrong).unwrap_err();
        assert!(error.starts_with("forward output"), "{nodes:?}: {error}");
    }
}

#[test]
fn tolerances_are_tight_but_not_zero() {
    assert!(compare("x", &[1.0, 2.0], &[1.0, 2.0 + 1e-13], 1e-12).is_ok());
    assert!(compare("x", &[1.0, 2.0], &[1.0, 2.0 + 1e-10], 1e-12).is_err());
    assert!(compare("x", &[1.0f32], &[1.0 + 1e-6], tolerance::<f32>()).is_ok());
    assert!(compare("x", &[1.0f32], &[1.0 + 1e-4], tolerance::<f32>()).is_err());
    // Judged on the array's scale: a tiny element may be off by a tiny amount.
    assert!(compare("x", &[1e-20, 1.0], &[2e-20, 1.0], 1e-12).is_ok());
    assert!(compare("x", &[0.0], &[0.0], 1e-12).is_ok());
    assert!(compare("x", &[f64::NAN], &[f64::NAN], 1e-12).is_err());
    assert!(compare("x", &[1.0], &[1.0, 2.0], 1e-12).is_err());
    // Sums that cancel, judged on their terms: rounding of sums of terms of 1 passes, a
    // difference far above it does not.
    assert!(compare("x", &[3e-17], &[-2e-17], 1e-12).is_err());
    assert!(compare_sums("x", &[3e-17], &[-2e-17], 1e-12, 1.0).is_ok());
    assert!(compare_sums("x", &[1e-11], &[0.0], 1e-12, 1.0).is_err());
}
