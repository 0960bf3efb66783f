//! chainrule on the workloads of `benches/peers` (W1 book, W2 wide, W3 latency; W4 conv, W5
//! conv latency, W6 deep conv), printing one JSON line per measurement like every other peer
//! there. Thread count: `--threads N` is only reported; the caller sets `CHAINRULE_THREADS` and
//! `MATMUL_NUM_THREADS` (and pins the process for 1 thread), as `compare.sh` does.

#[path = "../../common.rs"]
mod common;

use chainrule::ndarray::{Array2, ArrayView2};
use chainrule::prelude::*;
use common::{
    Cfg, ConvCfg, W1, W2, W3, W4, W5, W6, args, check_conv_shapes, check_mlp_shapes, emit,
    latency_us, make_conv_data, make_data, steps_per_s, time_steps,
};

/// Each layer's output shape (batch first) as the macro checked the graph, for the spec's check.
fn layer_shapes<N: Network>(batch: usize) -> Vec<Vec<usize>> {
    let graph = N::GRAPH;
    graph
        .inference_nodes()
        .map(|node| [&[batch][..], graph.shape(node.output)].concat())
        .collect()
}

network! {
    struct Book { affine(784, 50) -> relu -> affine(50, 10) -> softmax_cross_entropy }
}

network! {
    struct Wide {
        affine(784, 1024) -> relu -> affine(1024, 1024) -> relu -> affine(1024, 10)
            -> softmax_cross_entropy
    }
}

network! {
    /// W4 and W5: the book's SimpleConvNet.
    struct SimpleConv {
        input(1, 28, 28) -> conv2d(1, 30, 5) -> relu -> max_pool(2)
            -> affine(4320, 100) -> relu -> affine(100, 10) -> softmax_cross_entropy
    }
}

network! {
    /// W6: the book's DeepConvNet without dropout.
    struct DeepConv {
        input(1, 28, 28)
            -> conv2d(1, 16, 3, pad = 1) -> relu -> conv2d(16, 16, 3, pad = 1) -> relu -> max_pool(2)
            -> conv2d(16, 32, 3, pad = 1) -> relu -> conv2d(32, 32, 3, pad = 2) -> relu -> max_pool(2)
            -> conv2d(32, 64, 3, pad = 1) -> relu -> conv2d(64, 64, 3, pad = 1) -> relu -> max_pool(2)
            -> affine(1024, 50) -> relu -> affine(50, 10) -> softmax_cross_entropy
    }
}

/// A conv network holding the peers' fixed-seed weights (their layers in order, as ours), and the
/// batch with its labels.
fn conv_setup<N: Network<Elem = f32> + Default>(cfg: &ConvCfg) -> (N, Array2<f32>, Vec<usize>) {
    check_conv_shapes(cfg, &layer_shapes::<N>(cfg.batch));
    let data = make_conv_data(cfg);
    let mut net = N::default();
    assert_eq!(N::PARAM_NAMES.len(), 2 * data.params.len());
    for (param, names) in data.params.iter().zip(N::PARAM_NAMES.chunks(2)) {
        for (name, value) in names.iter().zip([&param.w, &param.b]) {
            let ours = net.param_mut(name).expect("the workload's layers");
            assert_eq!(ours.value.len(), value.len(), "{name}");
            ours.value.copy_from_slice(value);
        }
    }
    let x = Array2::from_shape_vec((cfg.batch, N::INPUT), data.x).expect("the batch's shape");
    (net, x, data.labels)
}

/// Training steps per second of a conv workload, with the loss before and after.
fn conv_train<N>(cfg: &ConvCfg) -> (f64, f32, f32)
where
    N: Default + for<'t> Trainable<Elem = f32, Targets<'t> = &'t [usize]>,
{
    let (mut net, x, labels) = conv_setup::<N>(cfg);
    let lr = f64::from(cfg.lr);
    let loss = |net: &mut N, x: ArrayView2<f32>| net.loss(x, &labels).expect("valid batch");
    let loss0 = loss(&mut net, x.view());
    let rate = time_steps(cfg.warmup, cfg.steps, || {
        std::hint::black_box(net.sgd_step(x.view(), &labels, lr).expect("valid batch"));
    });
    let loss1 = loss(&mut net, x.view());
    (rate, loss0, loss1)
}

/// A network holding the peers' fixed-seed weights, and the batch with its labels.
fn setup<N: Network<Elem = f32> + Default>(cfg: &Cfg) -> (N, Array2<f32>, Vec<usize>) {
    check_mlp_shapes(cfg, &layer_shapes::<N>(cfg.batch));
    let data = make_data(cfg);
    let mut net = N::default();
    for (layer, param) in data.params.iter().enumerate() {
        for (suffix, value) in [("weight", &param.w), ("bias", &param.b)] {
            let param = net
                .param_mut(&format!("affine{layer}.{suffix}"))
                .expect("the workload's layers");
            param.value.copy_from_slice(value);
        }
    }
    let x = Array2::from_shape_vec((cfg.batch, cfg.sizes[0]), data.x).expect("the batch's shape");
    (net, x, data.labels)
}

/// Training steps per second, with the loss before and after the timed steps.
fn train<N>(cfg: &Cfg) -> (f64, f32, f32)
where
    N: Default + for<'t> Trainable<Elem = f32, Targets<'t> = &'t [usize]>,
{
    let (mut net, x, labels) = setup::<N>(cfg);
    let lr = f64::from(cfg.lr);
    let loss = |net: &mut N, x: ArrayView2<f32>| net.loss(x, &labels).expect("valid batch");
    let loss0 = loss(&mut net, x.view());
    let rate = steps_per_s(cfg, || {
        std::hint::black_box(net.sgd_step(x.view(), &labels, lr).expect("valid batch"));
    });
    let loss1 = loss(&mut net, x.view());
    (rate, loss0, loss1)
}

/// Every parameter of `net`, copied out: what a forward pass on one sample must at least read.
fn weights<N: Network<Elem = f32>>(net: &mut N) -> Vec<Vec<f32>> {
    N::PARAM_NAMES
        .iter()
        .map(|name| {
            let param = net.param_mut(name).expect("the network's own parameter");
            param.value.to_vec()
        })
        .collect()
}

/// The median µs of a loop that only reads `weights` once per call, as fast as the processor
/// reads (AVX-512 loads into four running sums where it has them, else sixteen scalar sums): the
/// bound a forward pass on one sample can approach, since it reads every weight once.
fn weight_stream_bound(weights: &[Vec<f32>], calls: usize, warmup: usize) -> (f64, f64, f64) {
    latency_us(calls, warmup, || {
        let total: f32 = weights
            .iter()
            .map(|w| read_all(std::hint::black_box(w)))
            .sum();
        std::hint::black_box(total);
    })
}

/// A sum of `values` whose only purpose is to read them all.
fn read_all(values: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the processor has AVX-512F.
        return unsafe { read_all_avx512(values) };
    }
    let mut lanes = [0f32; 16];
    for block in values.chunks_exact(16) {
        for (lane, &v) in lanes.iter_mut().zip(block) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + values.chunks_exact(16).remainder().iter().sum::<f32>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn read_all_avx512(values: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let mut sums = [_mm512_setzero_ps(); 4];
    let mut blocks = values.chunks_exact(64);
    for block in &mut blocks {
        for (j, sum) in sums.iter_mut().enumerate() {
            // SAFETY: the block holds 64 values.
            *sum = _mm512_add_ps(*sum, unsafe { _mm512_loadu_ps(block.as_ptr().add(16 * j)) });
        }
    }
    let rest: f32 = blocks.remainder().iter().sum();
    sums.iter().map(|&s| _mm512_reduce_add_ps(s)).sum::<f32>() + rest
}

/// The weight-streaming bound of a one-sample workload, as a row of its own.
fn emit_bound(workload: &str, threads: usize, weights: &[Vec<f32>], calls: usize, warmup: usize) {
    let (median, p10, p90) = weight_stream_bound(weights, calls, warmup);
    let bytes: usize = weights.iter().map(|w| 4 * w.len()).sum();
    let extra = format!("\"p10\":{p10},\"p90\":{p90},\"bytes\":{bytes}");
    emit(BOUND, workload, threads, "median_us", median, &extra);
}

/// The name of the weight-streaming bound's rows (not a peer: `aggregate.py` compares
/// chainrule with it separately).
const BOUND: &str = "bound: weights read once";

fn main() {
    let a = args();
    let name = a.label.clone().unwrap_or_else(|| "chainrule".to_string());
    for w in &a.workloads {
        match w.as_str() {
            "W1" | "W2" => {
                let (rate, l0, l1) = match w.as_str() {
                    "W1" => train::<Book>(&W1),
                    _ => train::<Wide>(&W2),
                };
                let losses = format!("\"loss0\":{l0},\"loss1\":{l1}");
                emit(&name, w, a.threads, "steps_per_s", rate, &losses);
            }
            "W3" => {
                // As the peers compute (f32 throughout), then with the weights read in 16 bits
                // (a row for each), where the processor has the kernels for it.
                let (mut net, x, _) = setup::<Book>(&W3);
                for (precision, label) in [
                    (WeightPrecision::Full, name.clone()),
                    (
                        WeightPrecision::Half,
                        format!("{name}, half-precision weights"),
                    ),
                    (
                        WeightPrecision::BFloat16,
                        format!("{name}, bfloat16 weights"),
                    ),
                ] {
                    if net.set_one_sample_weights(precision).is_err() {
                        continue;
                    }
                    let (median, p10, p90) = latency_us(W3.steps, W3.warmup, || {
                        std::hint::black_box(net.forward(std::hint::black_box(x.view())).is_ok());
                    });
                    let spread = format!("\"p10\":{p10},\"p90\":{p90}");
                    emit(&label, "W3", a.threads, "median_us", median, &spread);
                }
                emit_bound("W3", a.threads, &weights(&mut net), W3.steps, W3.warmup);
            }
            "W4" | "W6" => {
                let (rate, l0, l1) = match w.as_str() {
                    "W4" => conv_train::<SimpleConv>(&W4),
                    _ => conv_train::<DeepConv>(&W6),
                };
                let losses = format!("\"loss0\":{l0},\"loss1\":{l1}");
                emit(&name, w, a.threads, "steps_per_s", rate, &losses);
            }
            "W5" => {
                let (mut net, x, _) = conv_setup::<SimpleConv>(&W5);
                let (median, p10, p90) = latency_us(W5.steps, W5.warmup, || {
                    std::hint::black_box(net.forward(std::hint::black_box(x.view())).is_ok());
                });
                let spread = format!("\"p10\":{p10},\"p90\":{p90}");
                emit(&name, "W5", a.threads, "median_us", median, &spread);
                emit_bound("W5", a.threads, &weights(&mut net), W5.steps, W5.warmup);
            }
            other => panic!("unknown workload {other}"),
        }
    }
}
