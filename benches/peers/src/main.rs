//! chainrule on the workloads of `../shared/peers` (W1 book, W2 wide, W3 latency), printing one
//! JSON line per measurement like every other peer there. Thread count: `--threads N` is only
//! reported; the caller sets `MATMUL_NUM_THREADS` (and pins the process for 1 thread), as
//! `compare.sh` does.

#[path = "../../common.rs"]
mod common;

use chainrule::ndarray::{Array2, ArrayView2};
use chainrule::prelude::*;
use common::{Cfg, W1, W2, W3, args, emit, latency_us, make_data, steps_per_s};

network! {
    struct Book { affine(784, 50) -> relu -> affine(50, 10) -> softmax_cross_entropy }
}

network! {
    struct Wide {
        affine(784, 1024) -> relu -> affine(1024, 1024) -> relu -> affine(1024, 10)
            -> softmax_cross_entropy
    }
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
            other => panic!("unknown workload {other}"),
        }
    }
}
