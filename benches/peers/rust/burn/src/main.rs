//! burn 0.22 on W1-W6 with its pure-Rust CPU backend, flex (`Device::flex()`, `.autodiff()` for
//! training): `nn::conv::Conv2d`, `nn::pool::MaxPool2d`, `nn::Linear`, `CrossEntropyLoss`, `Sgd`.
//! Threads: flex runs on rayon's pool, `RAYON_NUM_THREADS` threads (the caller sets it).

#[path = "../../common.rs"]
mod common;

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{GradientsParams, SgdConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use common::{Data, Layer, Param as Weights};

const NAME: &str = "burn flex";

#[derive(Module, Debug)]
struct Net {
    convs: Vec<Conv2d>,
    linears: Vec<Linear>,
    pool: MaxPool2d,
}

/// A value between layers: an image batch (NCHW) or, after an affine, a matrix.
enum Act {
    Image(Tensor<4>),
    Flat(Tensor<2>),
}

impl Act {
    fn dims(&self) -> Vec<usize> {
        match self {
            Act::Image(t) => t.dims().to_vec(),
            Act::Flat(t) => t.dims().to_vec(),
        }
    }
}

impl Net {
    /// The spec's layers, holding the data's parameters, on `device`.
    fn new(layers: &[Layer], params: &[Weights], device: &Device) -> Self {
        let mut params = params.iter();
        let (mut convs, mut linears) = (Vec::new(), Vec::new());
        for layer in layers {
            match *layer {
                Layer::Conv { pad, .. } => {
                    let p = params.next().expect("a conv's parameters");
                    let [out_c, in_c, k, _] = p.shape[..] else {
                        unreachable!()
                    };
                    let mut conv = Conv2dConfig::new([in_c, out_c], [k, k])
                        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                        .init(device);
                    conv.weight =
                        Param::from_data(TensorData::new(p.w.clone(), [out_c, in_c, k, k]), device);
                    conv.bias = Some(Param::from_data(
                        TensorData::new(p.b.clone(), [out_c]),
                        device,
                    ));
                    convs.push(conv);
                }
                Layer::Affine { .. } => {
                    let p = params.next().expect("an affine's parameters");
                    let (n_in, n_out) = (p.shape[0], p.shape[1]);
                    let mut lin = LinearConfig::new(n_in, n_out).init(device);
                    lin.weight =
                        Param::from_data(TensorData::new(p.w.clone(), [n_in, n_out]), device); // (in, out)
                    lin.bias = Some(Param::from_data(
                        TensorData::new(p.b.clone(), [n_out]),
                        device,
                    ));
                    linears.push(lin);
                }
                _ => {}
            }
        }
        Net {
            convs,
            linears,
            pool: MaxPool2dConfig::new([2, 2]).init(),
        }
    }

    /// Runs the layers on `x`, recording each output's shape in `shapes` if given; the scores.
    fn forward(
        &self,
        layers: &[Layer],
        x: Act,
        mut shapes: Option<&mut Vec<Vec<usize>>>,
    ) -> Tensor<2> {
        let (mut convs, mut linears) = (self.convs.iter(), self.linears.iter());
        let mut x = x;
        for layer in layers {
            x = match (layer, x) {
                (Layer::Conv { .. }, Act::Image(t)) => Act::Image(convs.next().unwrap().forward(t)),
                (Layer::Pool, Act::Image(t)) => Act::Image(self.pool.forward(t)),
                (Layer::Relu, Act::Image(t)) => Act::Image(relu(t)),
                (Layer::Relu, Act::Flat(t)) => Act::Flat(relu(t)),
                (Layer::Affine { .. }, Act::Image(t)) => {
                    Act::Flat(linears.next().unwrap().forward(t.flatten(1, 3)))
                }
                (Layer::Affine { .. }, Act::Flat(t)) => {
                    Act::Flat(linears.next().unwrap().forward(t))
                }
                (l, _) => panic!("{l:?} after an affine"),
            };
            if let Some(s) = shapes.as_deref_mut() {
                s.push(x.dims());
            }
        }
        match x {
            Act::Flat(t) => t,
            Act::Image(_) => panic!("the net ends in an affine"),
        }
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

/// A workload: its layers, the batch's shape, and whether it is trained.
struct Job<'a> {
    layers: &'a [Layer],
    shape: Vec<usize>,
    lr: f32,
    steps: usize,
    warmup: usize,
    train: bool,
}

fn input(data: &Data, shape: &[usize], device: &Device) -> Act {
    match shape.len() {
        2 => Act::Flat(Tensor::from_data(
            TensorData::new(data.x.clone(), [shape[0], shape[1]]),
            device,
        )),
        _ => Act::Image(Tensor::from_data(
            TensorData::new(data.x.clone(), [shape[0], shape[1], shape[2], shape[3]]),
            device,
        )),
    }
}

fn clone(x: &Act) -> Act {
    match x {
        Act::Image(t) => Act::Image(t.clone()),
        Act::Flat(t) => Act::Flat(t.clone()),
    }
}

/// What a job measured.
enum Outcome {
    /// Steps/s, loss before, loss after.
    Train(f64, f32, f32),
    /// Median, p10, p90 µs.
    Latency((f64, f64, f64)),
}

/// Checks the shapes with `check`, then times the job.
fn run(job: &Job, data: &Data, check: impl Fn(&[Vec<usize>])) -> Outcome {
    let device = if job.train {
        Device::flex().autodiff()
    } else {
        Device::flex()
    };
    let net = Net::new(job.layers, &data.params, &device);
    let x = input(data, &job.shape, &device);
    let mut shapes = Vec::new();
    net.forward(job.layers, clone(&x), Some(&mut shapes));
    check(&shapes);

    if !job.train {
        return Outcome::Latency(common::latency_us(job.steps, job.warmup, || {
            std::hint::black_box(net.forward(job.layers, clone(&x), None));
        }));
    }
    let labels: Vec<i64> = data.labels.iter().map(|&l| l as i64).collect();
    let n = labels.len();
    let t = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), &device);
    let ce: CrossEntropyLoss = CrossEntropyLossConfig::new().init(&device);
    let loss = |net: &Net| ce.forward(net.forward(job.layers, clone(&x), None), t.clone());
    let mut opt = SgdConfig::new().init();
    let loss0 = loss(&net).into_scalar::<f32>();
    let mut slot = Some(net);
    let rate = common::time_steps(job.warmup, job.steps, || {
        let net = slot.take().unwrap();
        let grads = GradientsParams::from_grads(loss(&net).backward(), &net);
        slot = Some(opt.step(f64::from(job.lr), net, grads));
    });
    let loss1 = loss(slot.as_ref().unwrap()).into_scalar::<f32>();
    Outcome::Train(rate, loss0, loss1)
}

fn main() {
    let a = common::args();
    let name = a.label.as_deref().unwrap_or(NAME);
    for w in &a.workloads {
        let out = match w.as_str() {
            "W1" | "W2" | "W3" => {
                let cfg = common::mlp_workload(w).unwrap();
                let layers = mlp(cfg.sizes);
                let job = Job {
                    layers: &layers,
                    shape: vec![cfg.batch, cfg.sizes[0]],
                    lr: cfg.lr,
                    steps: cfg.steps,
                    warmup: cfg.warmup,
                    train: cfg.name != "W3",
                };
                run(&job, &common::make_data(cfg), |s| {
                    common::check_mlp_shapes(cfg, s)
                })
            }
            "W4" | "W5" | "W6" => {
                let cfg = common::conv_workload(w).unwrap();
                let [c, h, wd] = common::CONV_INPUT;
                let job = Job {
                    layers: cfg.net,
                    shape: vec![cfg.batch, c, h, wd],
                    lr: cfg.lr,
                    steps: cfg.steps,
                    warmup: cfg.warmup,
                    train: cfg.name != "W5",
                };
                run(&job, &common::make_conv_data(cfg), |s| {
                    common::check_conv_shapes(cfg, s)
                })
            }
            other => panic!("unknown workload {other}"),
        };
        match out {
            Outcome::Train(rate, l0, l1) => common::emit_train(name, w, a.threads, rate, l0, l1),
            Outcome::Latency(stats) => common::emit_latency(name, w, a.threads, stats),
        }
    }
}
