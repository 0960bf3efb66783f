//! chainrule on the workloads of `../shared/peers` (W1 book, W2 wide, W3 latency; W4 conv, W5
//! conv latency, W6 deep conv), printing one
//! JSON line per measurement like every other peer there. Thread count: `--threads N` is only
//! reported; the caller sets `MATMUL_NUM_THREADS` (and pins the process for 1 thread), as
//! `compare.sh` does.

#[path = "../../common.rs"]
mod common;

use chainrule::ndarray::{Array2, ArrayView2};
use chainrule::prelude::*;
use common::{
    Cfg, ConvCfg, W1, W2, W3, W4, W5, W6, args, emit, latency_us, make_conv_data, make_data,
    steps_per_s, time_steps,
};

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
    let data = make_data(cfg);
    let mut net = N::default();
    for (layer, (weight, bias)) in data.params.iter().enumerate() {
        for (suffix, value) in [("weight", weight), ("bias", bias)] {
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
                    (WeightPrecision::Half, format!("{name}, half-precision weights")),
                    (WeightPrecision::BFloat16, format!("{name}, bfloat16 weights")),
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
            }
            other => panic!("unknown workload {other}"),
        }
    }
}
