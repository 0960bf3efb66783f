//! ONNX export checked by a runtime nobody here wrote: every op alone and in the graphs it is
//! used in (several inputs, a residual block, images joined along their channels), and the main
//! job's networks, are exported with `chainrule_onnx`; `tests/python/onnx_check.py` then runs
//! `onnx.checker.check_model` on each file and onnxruntime on the same inputs, and compares its
//! outputs with chainrule's evaluation pass (`infer`) to 1e-5 of each value (or absolutely, below
//! 1).
//!
//! The Python side runs in the virtual environment `target/python-venv`, made here on first use
//! with the packages of `tests/python/requirements.txt` from PyPI (as `tests/python/readme_snippet.sh`
//! makes it). Without Python or PyPI the test fails and says why; it never skips.

#[path = "../examples/mnist/nets.rs"]
mod nets;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use chainrule::ndarray::{Array2, ArrayView2, s};
use chainrule::prelude::*;
use chainrule_onnx::{Error, Options};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

/// The agreement asked of onnxruntime: |ort − chainrule| ≤ TOLERANCE · max(1, |chainrule|).
const TOLERANCE: f64 = 1e-5;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's Python, the venv made (or brought up to date) once per run of this file.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = root().join("target/python-venv");
        let python = venv.join("bin/python");
        let run = |cmd: &mut Command, what: &str| {
            let status = cmd
                .status()
                .unwrap_or_else(|e| panic!("{what}: cannot start it: {e}"));
            assert!(status.success(), "{what} failed ({status})");
        };
        if !python.exists() {
            run(
                Command::new("python3").args(["-m", "venv"]).arg(&venv),
                "making the venv for the ONNX check (python3 -m venv; Debian: apt-get install python3-venv)",
            );
        }
        run(
            Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(root().join("tests/python/requirements.txt")),
            "installing onnx and onnxruntime from PyPI into target/python-venv",
        );
        python
    })
}

/// The cases of one test, written to a folder of their own.
struct Cases {
    dir: tempfile::TempDir,
    count: usize,
}

impl Cases {
    fn new() -> Self {
        Cases {
            dir: tempfile::tempdir().expect("a temporary folder"),
            count: 0,
        }
    }

    /// Exports `net`, and writes `x` (one sample per row, the inputs' columns side by side) and
    /// what `infer` makes of it (with `options.probabilities`, its softmax too).
    fn add<N: Network<Elem = f32>>(
        &mut self,
        case: &str,
        net: &mut N,
        x: &Array2<f32>,
        options: &Options,
    ) {
        let dir = self.dir.path();
        chainrule_onnx::save(net, dir.join(format!("{case}.onnx")), options)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let graph = N::GRAPH;
        let batch = x.nrows();
        let mut inputs = String::new();
        let mut column = 0;
        for (i, input) in graph.inputs.iter().enumerate() {
            let shape = graph.shape(input.value);
            let width: usize = shape.iter().product();
            let part = x.slice(s![.., column..column + width]);
            column += width;
            let file = format!("{case}.in{i}.bin");
            write_f32(&dir.join(&file), part);
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(
                inputs,
                "{sep}{:?}: {}",
                input.name,
                entry(&file, batch, shape)
            );
        }
        assert_eq!(column, N::INPUT);
        let out = net.infer(x.view()).unwrap().to_owned();
        let shape = graph.shape(graph.output);
        write_f32(&dir.join(format!("{case}.out.bin")), out.view());
        let mut outputs = format!(
            "\"output\": {}",
            entry(&format!("{case}.out.bin"), batch, shape)
        );
        if options.probabilities {
            let probabilities = softmax(&out);
            write_f32(&dir.join(format!("{case}.prob.bin")), probabilities.view());
            let file = format!("{case}.prob.bin");
            let _ = write!(
                outputs,
                ", \"probabilities\": {}",
                entry(&file, batch, shape)
            );
        }
        let manifest = format!(
            "{{\"case\": {case:?}, \"tolerance\": {TOLERANCE}, \"inputs\": {{{inputs}}}, \"outputs\": {{{outputs}}}}}"
        );
        std::fs::write(dir.join(format!("{case}.json")), manifest).unwrap();
        self.count += 1;
    }

    /// Runs the Python check on every case; fails with its report unless all agree.
    fn check(self) {
        let output = Command::new(python())
            .arg(root().join("tests/python/onnx_check.py"))
            .arg(self.dir.path())
            .output()
            .expect("running tests/python/onnx_check.py");
        let report = String::from_utf8_lossy(&output.stdout);
        println!("{report}{}", String::from_utf8_lossy(&output.stderr));
        assert!(
            output.status.success(),
            "onnxruntime disagrees with chainrule:\n{report}"
        );
        let ok = report.lines().filter(|l| l.contains(" ok  (")).count();
        assert_eq!(ok, self.count, "every case is checked:\n{report}");
    }
}

fn entry(file: &str, batch: usize, shape: &[usize]) -> String {
    let dims: Vec<String> = std::iter::once(batch)
        .chain(shape.iter().copied())
        .map(|d| d.to_string())
        .collect();
    format!("{{\"file\": {file:?}, \"shape\": [{}]}}", dims.join(", "))
}

fn write_f32(path: &Path, values: ArrayView2<'_, f32>) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

fn softmax(scores: &Array2<f32>) -> Array2<f32> {
    let mut p = scores.mapv(f64::from);
    for mut row in p.rows_mut() {
        let max = row.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row /= sum;
    }
    p.mapv(|v| v as f32)
}

fn uniform(rows: usize, cols: usize, seed: u64, low: f32, high: f32) -> Array2<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    Array2::from_shape_simple_fn((rows, cols), || rng.random_range(low..high))
}

fn classes(rows: usize, classes: usize, seed: u64) -> Vec<usize> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..rows).map(|_| rng.random_range(0..classes)).collect()
}

/// A net alone on a batch of 5 in [-3, 3): the usual case.
fn alone<N: Network<Elem = f32>>(cases: &mut Cases, case: &str, mut net: N) {
    let x = uniform(5, N::INPUT, 7, -3.0, 3.0);
    cases.add(case, &mut net, &x, &Options::default());
}

#[test]
fn every_op_alone_agrees_with_onnxruntime() {
    let mut cases = Cases::new();
    alone(&mut cases, "affine", network! { input(7) -> affine(7, 5) });
    alone(&mut cases, "relu", network! { input(9) -> relu });
    alone(&mut cases, "sigmoid", network! { input(9) -> sigmoid });
    alone(&mut cases, "tanh", network! { input(9) -> tanh });
    alone(
        &mut cases,
        "leaky_relu",
        network! { input(9) -> leaky_relu(alpha = 0.2) },
    );
    alone(&mut cases, "elu", network! { input(9) -> elu(alpha = 0.7) });
    alone(&mut cases, "softmax", network! { input(9) -> softmax });
    alone(
        &mut cases,
        "add",
        network! { a = input(4); b = input(4); add(a, b) },
    );
    alone(
        &mut cases,
        "sub",
        network! { a = input(4); b = input(4); sub(a, b) },
    );
    alone(
        &mut cases,
        "mul",
        network! { a = input(4); b = input(4); mul(a, b) },
    );
    // A divisor in (0.04, 0.96): a sigmoid of [-3, 3).
    alone(
        &mut cases,
        "div",
        network! { a = input(4); b = input(4); q = b -> sigmoid; div(a, q) },
    );
    alone(
        &mut cases,
        "concat",
        network! { a = input(3); b = input(5); concat(a, b) },
    );
    alone(
        &mut cases,
        "conv2d",
        network! { input(3, 8, 8) -> conv2d(3, 4, 3) },
    );
    alone(
        &mut cases,
        "conv2d_stride_pad",
        network! { input(3, 9, 9) -> conv2d(3, 4, 3, stride = 2, pad = 1) },
    );
    alone(
        &mut cases,
        "conv2d_relu",
        network! { input(2, 6, 6) -> conv2d(2, 5, 5, pad = 2) -> relu },
    );
    alone(
        &mut cases,
        "max_pool",
        network! { input(2, 6, 6) -> max_pool(2) },
    );
    alone(
        &mut cases,
        "max_pool_pad",
        network! { input(2, 5, 5) -> max_pool(3, stride = 1, pad = 1) },
    );
    alone(
        &mut cases,
        "avg_pool",
        network! { input(2, 6, 6) -> avg_pool(2) },
    );
    alone(
        &mut cases,
        "avg_pool_pad",
        network! { input(2, 5, 5) -> avg_pool(3, stride = 2, pad = 1) },
    );
    alone(
        &mut cases,
        "flatten",
        network! { input(2, 3, 3) -> flatten },
    );
    alone(
        &mut cases,
        "affine_on_image",
        network! { input(2, 3, 3) -> affine(18, 4) },
    );
    // Nothing but a dropout: the output is the input (an `Identity` in ONNX).
    alone(&mut cases, "dropout", network! { input(6) -> dropout(0.5) });
    alone(
        &mut cases,
        "dropout_between",
        network! { input(6) -> affine(6, 8) -> dropout(0.3) -> affine(8, 3) -> dropout(0.2) },
    );
    // An f64 network's parameters are written as float.
    alone(&mut cases, "f64_rounded", f64_as_f32());
    cases.check();
}

/// An f64 net cannot be fed to `Cases::add` (f32 only): this is its f32 twin with the f64 net's
/// parameters, so the file written from the f64 net must compute the twin's outputs.
fn f64_as_f32() -> impl Network<Elem = f32> {
    let wide = network! { f64: input(5) -> affine(5, 4) -> tanh -> affine(4, 3) };
    let mut narrow = network! { input(5) -> affine(5, 4) -> tanh -> affine(4, 3) };
    let wide = {
        let mut wide = wide;
        wide.init(Init::He, 3);
        wide
    };
    wide.for_each_param(&mut |p| {
        let q = narrow.param_mut(p.name).unwrap();
        for (q, &v) in q.value.iter_mut().zip(p.value) {
            *q = v as f32;
        }
    });
    let bytes = chainrule_onnx::to_bytes(&wide, &Options::default()).unwrap();
    assert_eq!(
        bytes,
        chainrule_onnx::to_bytes(&narrow, &Options::default()).unwrap(),
        "an f64 net's file is its f32 twin's"
    );
    narrow
}

#[test]
fn graphs_agree_with_onnxruntime() {
    let mut cases = Cases::new();
    alone(
        &mut cases,
        "several_inputs",
        network! {
            a = input(3);
            b = input(1, 4, 4);
            p = b -> conv2d(1, 2, 3) -> flatten -> affine(8, 3);
            q = add(a, p) -> relu;
            concat(q, a) -> affine(6, 2)
        },
    );
    alone(
        &mut cases,
        "residual_block",
        network! {
            x = input(2, 5, 5);
            h = x -> conv2d(2, 2, 3, pad = 1) -> tanh -> conv2d(2, 2, 3, pad = 1);
            add(h, x) -> relu -> flatten -> affine(50, 3)
        },
    );
    alone(
        &mut cases,
        "channels_joined",
        network! {
            x = input(1, 6, 6);
            a = x -> conv2d(1, 2, 3, pad = 1);
            b = x -> conv2d(1, 3, 3, pad = 1);
            concat(a, b) -> max_pool(2) -> affine(45, 2)
        },
    );
    alone(
        &mut cases,
        "value_read_twice",
        network! { x = input(4); h = x -> affine(4, 4) -> sigmoid; p = mul(h, h); sub(p, h) },
    );
    cases.check();
}

/// Batch normalisation is exported with its running statistics: a few training steps move them
/// away from their start (0 and 1), and the evaluation pass reads them.
#[test]
fn batchnorm_exports_its_running_statistics() {
    let mut cases = Cases::new();
    let mut features = network! {
        input(6) -> affine(6, 5) -> batchnorm -> relu -> affine(5, 3) -> softmax_cross_entropy
    };
    features.init(Init::He, 1);
    let mut images = network! {
        input(2, 5, 5) -> conv2d(2, 3, 3) -> batchnorm(momentum = 0.3, eps = 1e-3) -> relu
            -> flatten -> affine(27, 2) -> softmax_cross_entropy
    };
    images.init(Init::He, 2);
    for step in 0..5 {
        let x = uniform(8, 6, step, 0.0, 4.0);
        features
            .sgd_step(x.view(), &classes(8, 3, step), 0.1)
            .unwrap();
        let x = uniform(8, 50, step, 0.0, 4.0);
        images
            .sgd_step(x.view(), &classes(8, 2, step), 0.1)
            .unwrap();
    }
    let mut moved = 0;
    images.for_each_buffer(&mut |b| {
        moved += b.value.iter().filter(|&&v| v != 0.0 && v != 1.0).count()
    });
    assert!(moved > 0, "the running statistics moved");
    let x = uniform(5, 6, 11, 0.0, 4.0);
    cases.add(
        "batchnorm_features",
        &mut features,
        &x,
        &Options::with_probabilities(),
    );
    let x = uniform(5, 50, 12, 0.0, 4.0);
    cases.add(
        "batchnorm_channels",
        &mut images,
        &x,
        &Options::with_probabilities(),
    );
    cases.check();
}

#[test]
fn the_main_jobs_networks_agree_with_onnxruntime() {
    let mut cases = Cases::new();
    let x = uniform(4, 784, 5, 0.0, 1.0);
    let probabilities = Options::with_probabilities();
    cases.add(
        "two_layer",
        &mut nets::TwoLayerNet::new(Init::He, 1),
        &x,
        &probabilities,
    );
    cases.add(
        "deep",
        &mut nets::DeepNet::new(Init::He, 2),
        &x,
        &probabilities,
    );
    cases.add(
        "conv",
        &mut nets::ConvNet::new(Init::He, 3),
        &x,
        &probabilities,
    );
    let mut conv_bn = nets::ConvBnNet::new(Init::He, 4);
    conv_bn
        .sgd_step(
            uniform(10, 784, 6, 0.0, 1.0).view(),
            &classes(10, 10, 6),
            0.01,
        )
        .unwrap();
    cases.add("conv_bn", &mut conv_bn, &x, &probabilities);
    cases.add(
        "deep_conv",
        &mut nets::DeepConvNet::new(Init::He, 5),
        &x,
        &probabilities,
    );
    cases.check();
}

/// Every op of the table has an ONNX form: a new op fails here until `chainrule_onnx` maps it.
#[test]
fn every_op_of_the_table_has_an_onnx_form() {
    for op in chainrule::__op_names!() {
        assert!(
            *op == "input" || chainrule_onnx::OPS.contains(op),
            "the op `{op}` has no ONNX form: map it in onnx/src/lib.rs (`OPS` and `layer`) and add a case here"
        );
    }
}

/// What the export refuses: probabilities of a network that has no class scores, and parameters
/// that are not finite.
#[test]
fn the_export_refuses_clearly() {
    let net = network! { input(4) -> affine(4, 2) -> mse };
    let err = chainrule_onnx::to_bytes(&net, &Options::with_probabilities()).unwrap_err();
    assert!(matches!(err, Error::Options { .. }), "{err}");
    assert!(err.to_string().contains("softmax_cross_entropy"), "{err}");

    let mut net = network! { input(4) -> affine(4, 2) -> softmax_cross_entropy };
    net.param_mut("affine0.bias").unwrap().value[1] = f32::NAN;
    let err = chainrule_onnx::to_bytes(&net, &Options::default()).unwrap_err();
    assert!(err.to_string().contains("affine0.bias"), "{err}");
    let path = tempfile::tempdir().unwrap();
    let file = path.path().join("net.onnx");
    assert!(chainrule_onnx::save(&net, &file, &Options::default()).is_err());
    assert!(!file.exists(), "nothing is written");
}

/// The same network gives the same bytes, and the file records the network's structure.
#[test]
fn the_file_is_reproducible_and_records_the_topology() {
    let a = nets::ConvNet::new(Init::He, 9);
    let b = nets::ConvNet::new(Init::He, 9);
    let bytes = chainrule_onnx::to_bytes(&a, &Options::default()).unwrap();
    assert_eq!(
        bytes,
        chainrule_onnx::to_bytes(&b, &Options::default()).unwrap()
    );
    let model = chainrule_onnx::to_model(&a, &Options::default()).unwrap();
    assert_eq!(
        model.metadata_props[0].value,
        <nets::ConvNet as Network>::TOPOLOGY
    );
    let graph = model.graph.unwrap();
    let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(
        ops,
        ["Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm"]
    );
    let names: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv2d0.weight",
            "conv2d0.bias",
            "affine0.weight",
            "affine0.bias",
            "affine1.weight",
            "affine1.bias"
        ]
    );
    assert_eq!(graph.initializer[0].dims, [30, 1, 5, 5]);
    assert_eq!(graph.initializer[2].dims, [4320, 100]);
}
