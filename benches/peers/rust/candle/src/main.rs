//! candle (candle-core + candle-nn, CPU) on W1-W6: `candle_nn::Linear` and `Conv2d`,
//! `Tensor::max_pool2d`, `loss::cross_entropy`, `SGD::backward_step`. Training models hold their
//! parameters as `Var`s; the latency workloads (W3, W5) use plain tensors, as inference does.
//! Threads: candle's matrix products use `RAYON_NUM_THREADS` threads (the caller sets it).

#[path = "../../common.rs"]
mod common;

use candle_core::{Device, Module, Result, Tensor, Var};
use candle_nn::{loss, Conv2d, Conv2dConfig, Linear, Optimizer, SGD};
use common::{Data, Layer, Param};

const NAME: &str = "candle";

enum Op {
    Conv(Conv2d),
    Relu,
    Pool,
    Affine(Linear),
}

struct Model {
    ops: Vec<Op>,
    /// The parameters, when trained.
    vars: Vec<Var>,
}

impl Model {
    /// The spec's layers with the data's parameters; `train`: as `Var`s.
    fn new(net: &[Layer], params: &[Param], train: bool) -> Result<Self> {
        let mut vars = Vec::new();
        let mut tensor = |values: &[f32], shape: &[usize]| -> Result<Tensor> {
            let t = Tensor::from_slice(values, shape, &Device::Cpu)?;
            if !train {
                return Ok(t);
            }
            let v = Var::from_tensor(&t)?;
            let t = v.as_tensor().clone(); // shares the storage SGD updates
            vars.push(v);
            Ok(t)
        };
        let mut params = params.iter();
        let mut ops = Vec::new();
        for layer in net {
            ops.push(match *layer {
                Layer::Conv { pad, .. } => {
                    let p = params.next().expect("a conv's parameters");
                    let cfg = Conv2dConfig {
                        padding: pad,
                        ..Default::default()
                    };
                    let w = tensor(&p.w, &p.shape)?; // (out_c, in_c, k, k) as candle wants
                    Op::Conv(Conv2d::new(w, Some(tensor(&p.b, &[p.b.len()])?), cfg))
                }
                Layer::Affine { .. } => {
                    let p = params.next().expect("an affine's parameters");
                    let (n_in, n_out) = (p.shape[0], p.shape[1]);
                    // Linear keeps its weight as (out, in).
                    let wt: Vec<f32> = (0..n_out * n_in)
                        .map(|i| p.w[(i % n_in) * n_out + i / n_in])
                        .collect();
                    Op::Affine(Linear::new(
                        tensor(&wt, &[n_out, n_in])?,
                        Some(tensor(&p.b, &[n_out])?),
                    ))
                }
                Layer::Relu => Op::Relu,
                Layer::Pool => Op::Pool,
            });
        }
        Ok(Model { ops, vars })
    }

    /// Every layer's output, in order.
    fn layers(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut outs: Vec<Tensor> = Vec::new();
        for op in &self.ops {
            let x = outs.last().unwrap_or(x);
            outs.push(match op {
                Op::Conv(c) => c.forward(x)?,
                Op::Relu => x.relu()?,
                Op::Pool => x.max_pool2d(2)?,
                Op::Affine(l) if x.rank() > 2 => l.forward(&x.flatten_from(1)?)?,
                Op::Affine(l) => l.forward(x)?,
            });
        }
        Ok(outs)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for op in &self.ops {
            x = match op {
                Op::Conv(c) => c.forward(&x)?,
                Op::Relu => x.relu()?,
                Op::Pool => x.max_pool2d(2)?,
                Op::Affine(l) => l.forward(&if x.rank() > 2 { x.flatten_from(1)? } else { x })?,
            };
        }
        Ok(x)
    }
}

/// The MLP of widths `sizes` as the spec's layers.
fn mlp(sizes: &[usize]) -> Vec<Layer> {
    let mut net = Vec::new();
    for (i, &out) in sizes[1..].iter().enumerate() {
        if i > 0 {
            net.push(Layer::Relu);
        }
        net.push(Layer::Affine { out });
    }
    net
}

/// The batch and its labels as tensors.
fn inputs(data: &Data, shape: &[usize]) -> Result<(Tensor, Tensor)> {
    let labels: Vec<u32> = data.labels.iter().map(|&l| l as u32).collect();
    let n = labels.len();
    Ok((
        Tensor::from_slice(&data.x, shape, &Device::Cpu)?,
        Tensor::from_vec(labels, n, &Device::Cpu)?,
    ))
}

fn shapes(model: &Model, x: &Tensor) -> Result<Vec<Vec<usize>>> {
    Ok(model.layers(x)?.iter().map(|t| t.dims().to_vec()).collect())
}

/// Steps/s of SGD steps, and the loss before and after them.
fn train(
    model: &Model,
    x: &Tensor,
    t: &Tensor,
    lr: f32,
    warmup: usize,
    steps: usize,
) -> Result<(f64, f32, f32)> {
    let loss_of =
        |m: &Model| -> Result<f32> { loss::cross_entropy(&m.forward(x)?, t)?.to_scalar::<f32>() };
    let mut opt = SGD::new(model.vars.clone(), f64::from(lr))?;
    let loss0 = loss_of(model)?;
    let rate = common::time_steps(warmup, steps, || {
        let loss = loss::cross_entropy(&model.forward(x).unwrap(), t).unwrap();
        opt.backward_step(&loss).unwrap();
    });
    Ok((rate, loss0, loss_of(model)?))
}

fn main() -> Result<()> {
    let a = common::args();
    let name = a.label.as_deref().unwrap_or(NAME);
    for w in &a.workloads {
        match w.as_str() {
            "W1" | "W2" | "W3" => {
                let cfg = common::mlp_workload(w).unwrap();
                let data = common::make_data(cfg);
                let (x, t) = inputs(&data, &[cfg.batch, cfg.sizes[0]])?;
                let model = Model::new(&mlp(cfg.sizes), &data.params, cfg.name != "W3")?;
                common::check_mlp_shapes(cfg, &shapes(&model, &x)?);
                if cfg.name == "W3" {
                    let stats = common::latency_us(cfg.steps, cfg.warmup, || {
                        std::hint::black_box(model.forward(&x).unwrap());
                    });
                    common::emit_latency(name, w, a.threads, stats);
                } else {
                    let (rate, l0, l1) = train(&model, &x, &t, cfg.lr, cfg.warmup, cfg.steps)?;
                    common::emit_train(name, w, a.threads, rate, l0, l1);
                }
            }
            "W4" | "W5" | "W6" => {
                let cfg = common::conv_workload(w).unwrap();
                let data = common::make_conv_data(cfg);
                let [c, h, wd] = common::CONV_INPUT;
                let (x, t) = inputs(&data, &[cfg.batch, c, h, wd])?;
                let model = Model::new(cfg.net, &data.params, cfg.name != "W5")?;
                common::check_conv_shapes(cfg, &shapes(&model, &x)?);
                if cfg.name == "W5" {
                    let stats = common::latency_us(cfg.steps, cfg.warmup, || {
                        std::hint::black_box(model.forward(&x).unwrap());
                    });
                    common::emit_latency(name, w, a.threads, stats);
                } else {
                    let (rate, l0, l1) = train(&model, &x, &t, cfg.lr, cfg.warmup, cfg.steps)?;
                    common::emit_train(name, w, a.threads, rate, l0, l1);
                }
            }
            other => panic!("unknown workload {other}"),
        }
    }
    Ok(())
}
