//! Differential test: networks compiled by `network!` against a reference evaluation.
//!
//! `differential/networks.rs` holds 50 random chains (written by `differential/generator.rs`).
//! For each, proptest draws batches, initialisers and seeds; the compiled network runs forward,
//! predict, loss and backward, and the reference evaluator (`differential/reference.rs`) runs the
//! same chain by calling the runtime's kernels directly on fresh arrays, with the parameters copied
//! out of the network. Outputs, predictions, losses and every parameter gradient must agree.
//!
//! Both sides use the same kernels, so what is tested is the macro's wiring: which buffer feeds
//! which kernel, the order of the backward pass, parameter naming and shapes, the loss's input.
//!
//! Before the compared calls each network runs once on the batch's first sample alone, so that the
//! compared calls see resized buffers and backward must overwrite gradients, not add to them.
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

use chainrule::ndarray::{Array2, ArrayView2, s};
use chainrule::{Element, Init, Network, Trainable};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use compare::{compare, compare_scalar, tolerance};
use reference::{AffineParams, Loss, Op, Reference, Targets};

/// How many random cases each network is tried on, unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 24;

/// What the harness needs to know about a compiled network besides [`Network`]: its chain as the
/// reference runs it, its constructor, and (with a loss) how to train it on a batch.
trait Subject: Network + Sized {
    /// The chain without the loss.
    const OPS: &'static [Op];
    const LOSS: Option<Loss>;
    /// `Self::new(init, seed)`.
    fn create(init: Init, seed: u64) -> Self;
    /// `loss` then `backward` on the batch and its targets, returning the loss; `None` for a
    /// network without a loss.
    fn loss_and_backward(
        &mut self,
        batch: &Batch<Self::Elem>,
    ) -> Option<chainrule::Result<Self::Elem>>;
}

/// Implements [`Subject`] for a compiled network and stamps out its proptest:
/// `differential_test! { test_name: NetType = [ops...], loss: softmax_cross_entropy | mse | none }`.
macro_rules! differential_test {
    ($test:ident: $net:ident = [$($op:expr),* $(,)?], loss: $loss:ident) => {
        impl $crate::Subject for $net {
            const OPS: &'static [$crate::reference::Op] = &[$($op),*];
            const LOSS: Option<$crate::reference::Loss> = differential_test!(@loss $loss);

            fn create(init: ::chainrule::Init, seed: u64) -> Self {
                $net::new(init, seed)
            }

            fn loss_and_backward(
                &mut self,
                batch: &$crate::Batch<Self::Elem>,
            ) -> Option<::chainrule::Result<Self::Elem>> {
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
    (@train $net:ident, $batch:ident, none) => {{
        let _ = ($net, $batch);
        None
    }};
    (@train $net:ident, $batch:ident, softmax_cross_entropy) => {
        Some($crate::loss_and_backward($net, $batch.x.view(), &$batch.classes[..]))
    };
    (@train $net:ident, $batch:ident, mse) => {
        Some($crate::loss_and_backward($net, $batch.x.view(), $batch.values.view()))
    };
}

/// The generated networks; `#[rustfmt::skip]` keeps the file exactly as the generator writes it.
#[path = "differential/networks.rs"]
#[rustfmt::skip]
mod networks;

/// The trainable half of [`Subject::loss_and_backward`].
fn loss_and_backward<N: Trainable>(
    net: &mut N,
    x: ArrayView2<'_, N::Elem>,
    t: N::Targets<'_>,
) -> chainrule::Result<N::Elem> {
    let loss = net.loss(x, t)?;
    net.backward()?;
    Ok(loss)
}

/// One random case, drawn in `f64` for a network of `input` features and `output` outputs.
#[derive(Debug, Clone)]
struct Case {
    batch: usize,
    /// batch × input, row-major, in [-3, 3].
    x: Vec<f64>,
    init: Init,
    seed: u64,
    /// One class below `output` per sample (for `softmax_cross_entropy`).
    classes: Vec<usize>,
    /// batch × output target values, row-major, in [-3, 3] (for `mse`).
    values: Vec<f64>,
}

fn cases(input: usize, output: usize) -> impl Strategy<Value = Case> {
    let inits = prop_oneof![Just(Init::Std(0.5)), Just(Init::He), Just(Init::Xavier)];
    (1usize..=6, inits, any::<u64>()).prop_flat_map(move |(batch, init, seed)| {
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
                classes,
                values,
            })
    })
}

/// A case in a network's element type.
struct Batch<T> {
    x: Array2<T>,
    classes: Vec<usize>,
    values: Array2<T>,
}

impl<T: Element> Batch<T> {
    fn new(case: &Case, input: usize, output: usize) -> Self {
        let convert = |v: &[f64], width| {
            Array2::from_shape_vec(
                (case.batch, width),
                v.iter().map(|&v| T::from_f64(v)).collect(),
            )
            .expect("the strategy draws batch × width values")
        };
        Batch {
            x: convert(&case.x, input),
            classes: case.classes.clone(),
            values: convert(&case.values, output),
        }
    }

    /// The first `rows` samples.
    fn head(&self, rows: usize) -> Self {
        Batch {
            x: self.x.slice(s![..rows, ..]).to_owned(),
            classes: self.classes[..rows].to_vec(),
            values: self.values.slice(s![..rows, ..]).to_owned(),
        }
    }
}

/// The proptest of one network.
fn run<N: Subject>() {
    check_constants::<N>();
    run_cases(N::NAME, N::INPUT, N::OUTPUT, &|case| check_case::<N>(&case));
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
fn check_constants<N: Subject>() {
    let names = reference::param_names(N::OPS);
    let shapes = reference::param_shapes(N::OPS);
    assert_eq!(
        N::INPUT,
        reference::input_width(N::OPS),
        "{}::INPUT",
        N::NAME
    );
    assert_eq!(
        N::OUTPUT,
        reference::output_width(N::OPS),
        "{}::OUTPUT",
        N::NAME
    );
    let scalars: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    assert_eq!(N::PARAMS, scalars, "{}::PARAMS", N::NAME);
    assert_eq!(N::PARAM_NAMES, names, "{}::PARAM_NAMES", N::NAME);
    let net = N::create(Init::He, 0);
    let mut visited = Vec::new();
    net.for_each_param(&mut |p| visited.push((p.name.to_owned(), p.shape.to_vec())));
    let expected: Vec<_> = names.into_iter().zip(shapes).collect();
    assert_eq!(visited, expected, "{}: for_each_param", N::NAME);
}

/// One case: a fresh network, its reference, and the comparison.
fn check_case<N: Subject>(case: &Case) -> Result<(), String> {
    let batch = Batch::<N::Elem>::new(case, N::INPUT, N::OUTPUT);
    let mut net = N::create(case.init, case.seed);
    let reference = evaluate_reference(&net, N::OPS, &batch)?;
    compare_with_reference(&mut net, &batch, &reference)
}

/// The reference evaluation of `ops` with `net`'s parameters on the batch (and, if `N` has a
/// loss, its targets).
fn evaluate_reference<N: Subject>(
    net: &N,
    ops: &[Op],
    batch: &Batch<N::Elem>,
) -> Result<Reference<N::Elem>, String> {
    let mut params = Vec::new();
    let mut k = 0;
    for op in ops {
        let &Op::Affine(i, o) = op else { continue };
        let weight = copy_param(net, &format!("affine{k}.weight"), &[i, o])?;
        let bias = copy_param(net, &format!("affine{k}.bias"), &[o])?;
        params.push(AffineParams {
            weight: Array2::from_shape_vec((i, o), weight).expect("the shape was checked"),
            bias: bias.into(),
        });
        k += 1;
    }
    let targets = N::LOSS.map(|loss| match loss {
        Loss::SoftmaxCrossEntropy => (loss, Targets::Classes(&batch.classes)),
        Loss::Mse => (loss, Targets::Values(&batch.values)),
    });
    let reference = reference::evaluate(ops, &params, &batch.x, targets);
    if let Some(training) = &reference.training {
        // Not compared (the compiled network does not compute it), but it must be there.
        assert_eq!(training.input_grad.dim(), batch.x.dim());
    }
    Ok(reference)
}

/// A parameter's value, copied out of the network (row-major) after checking its shape.
fn copy_param<N: Network>(net: &N, name: &str, shape: &[usize]) -> Result<Vec<N::Elem>, String> {
    let p = net.param(name).map_err(|e| e.to_string())?;
    if p.shape != shape {
        return Err(format!("{name} has shape {:?}, not {shape:?}", p.shape));
    }
    Ok(p.value.to_vec())
}

/// Runs `net` on the batch (forward, predict, and with a loss: loss then backward) and compares
/// every result with the reference's.
fn compare_with_reference<N: Subject>(
    net: &mut N,
    batch: &Batch<N::Elem>,
    reference: &Reference<N::Elem>,
) -> Result<(), String> {
    let rel = tolerance::<N::Elem>();

    // A warm-up on the first sample alone: the compared calls then run on resized buffers, and
    // backward must overwrite the warm-up's gradients, not add to them.
    let first = batch.head(1);
    net.forward(first.x.view())
        .map_err(|e| format!("warm-up forward: {e}"))?;
    if let Some(loss) = net.loss_and_backward(&first) {
        loss.map_err(|e| format!("warm-up loss: {e}"))?;
    }

    let x = batch.x.view();

    let output = net.forward(x).map_err(|e| e.to_string())?;
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

    let predict = net.predict(x).map_err(|e| e.to_string())?;
    if predict != reference.predict {
        return Err(format!(
            "predict gives {predict:?}, the reference {:?}",
            reference.predict
        ));
    }

    match (net.loss_and_backward(batch), &reference.training) {
        (None, None) => Ok(()),
        (Some(loss), Some(training)) => {
            let loss = loss.map_err(|e| e.to_string())?;
            compare_scalar("loss", loss, training.loss, rel)?;
            for (name, expected) in &training.grads {
                let p = net.param(name).map_err(|e| e.to_string())?;
                compare(&format!("{name} gradient"), p.grad, expected, rel)?;
            }
            Ok(())
        }
        (Some(_), None) => Err("the network has a loss, the reference none".to_owned()),
        (None, Some(_)) => Err("the reference has a loss, the network none".to_owned()),
    }
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
    use generator::Spec;
    let specs = generator::specs();
    assert_eq!(specs.len(), generator::NETWORKS);
    let any = |what: &str, f: &dyn Fn(&Spec) -> bool| {
        assert!(specs.iter().any(f), "no generated network has {what}");
    };
    let is_activation = |op: &Op| !matches!(op, Op::Affine(..));
    let affines = |s: &Spec| s.ops.iter().filter(|op| !is_activation(op)).count();
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
    for op in [Op::Relu, Op::Sigmoid, Op::Tanh] {
        any(&format!("{op:?}"), &|s| s.ops.contains(&op));
    }
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
    any("one input feature", &|s| {
        reference::input_width(&s.ops) == 1
    });
    any("mse on one output", &|s| {
        s.loss == Some(Loss::Mse) && reference::output_width(&s.ops) == 1
    });
    any("two classes", &|s| {
        s.loss == Some(Loss::SoftmaxCrossEntropy) && reference::output_width(&s.ops) == 2
    });
    any("a layer of width 1", &|s| widths(s).contains(&1));
    any("a layer of width 12", &|s| widths(s).contains(&12));
}

// A hand-written network for the tests that the comparison can fail.
chainrule::network! {
    struct Probe: f64 {
        affine(3, 4) -> tanh -> affine(4, 3) -> softmax_cross_entropy
    }
}
differential_test! {
    probe: Probe = [Op::Affine(3, 4), Op::Tanh, Op::Affine(4, 3)],
    loss: softmax_cross_entropy
}

fn probe_case() -> Case {
    Case {
        batch: 2,
        x: vec![0.5, -1.0, 2.0, -2.5, 0.25, 1.5],
        init: Init::Xavier,
        seed: 7,
        classes: vec![2, 0],
        values: vec![0.0; 6],
    }
}

/// The probe's batch and reference, ready to be tampered with.
fn probe_reference() -> (Probe, Batch<f64>, Reference<f64>) {
    let case = probe_case();
    let batch = Batch::new(&case, 3, 3);
    let net = Probe::create(case.init, case.seed);
    let reference = evaluate_reference(&net, Probe::OPS, &batch).unwrap();
    (net, batch, reference)
}

#[test]
fn comparison_passes_on_the_untouched_reference() {
    let (mut net, batch, reference) = probe_reference();
    compare_with_reference(&mut net, &batch, &reference).unwrap();
}

#[test]
fn comparison_catches_a_wrong_gradient() {
    let (_, batch, reference) = probe_reference();
    let grads = &reference.training.as_ref().unwrap().grads;
    for (p, (name, grad)) in grads.iter().enumerate() {
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
        ("loss", |r| r.training.as_mut().unwrap().loss *= 1.0 + 1e-9),
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
fn comparison_catches_wrong_wiring() {
    // The reference of a chain the probe is not: sigmoid where it has tanh, or no activation at all.
    let (net, batch, _) = probe_reference();
    let wirings: [&[Op]; 2] = [
        &[Op::Affine(3, 4), Op::Sigmoid, Op::Affine(4, 3)],
        &[Op::Affine(3, 4), Op::Affine(4, 3)],
    ];
    for ops in wirings {
        let wrong = evaluate_reference(&net, ops, &batch).unwrap();
        let mut net = Probe::create(Init::Xavier, 7);
        let error = compare_with_reference(&mut net, &batch, &wrong).unwrap_err();
        assert!(error.starts_with("forward output"), "{ops:?}: {error}");
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
}
