//! What every Rust peer shares, included with `#[path = "../../common.rs"] mod common;`: the six
//! workloads of `benches/peers/README.md`, their fixed-seed data, the timing loops, the command
//! line and the JSON-line output. Python's `py/common.py` is the same for the Python peers (with
//! numpy's generator, so the two groups start from slightly different data).
#![allow(dead_code)]

use std::time::Instant;

// ------------------------------------------------------------------------------------ workloads

/// An MLP workload (W1-W3): layer widths, batch, SGD rate, timed and warm-up steps (or calls).
pub struct Cfg {
    pub name: &'static str,
    pub sizes: &'static [usize],
    pub batch: usize,
    pub lr: f32,
    pub steps: usize,
    pub warmup: usize,
}

/// The book's 784-50-10 net, trained.
pub const W1: Cfg = Cfg {
    name: "W1",
    sizes: &[784, 50, 10],
    batch: 100,
    lr: 0.1,
    steps: 3000,
    warmup: 300,
};
/// A wide 784-1024-1024-10 net, trained.
pub const W2: Cfg = Cfg {
    name: "W2",
    sizes: &[784, 1024, 1024, 10],
    batch: 256,
    lr: 0.1,
    steps: 100,
    warmup: 10,
};
/// W1's net, forward only at batch 1: `steps` individually timed calls.
pub const W3: Cfg = Cfg {
    name: "W3",
    sizes: &[784, 50, 10],
    batch: 1,
    lr: 0.0,
    steps: 20_000,
    warmup: 2_000,
};

/// One layer of a conv net. Convs have stride 1 and a bias; pools are max 2x2 stride 2; an
/// affine flattens a 4-D input first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layer {
    Conv { out_c: usize, k: usize, pad: usize },
    Relu,
    Pool,
    Affine { out: usize },
}

const fn conv(out_c: usize, k: usize, pad: usize) -> Layer {
    Layer::Conv { out_c, k, pad }
}
const RELU: Layer = Layer::Relu;
const POOL: Layer = Layer::Pool;
const fn affine(out: usize) -> Layer {
    Layer::Affine { out }
}

/// The book's ch. 7 SimpleConvNet (W4, W5).
pub const SIMPLE_CONV: &[Layer] = &[conv(30, 5, 0), RELU, POOL, affine(100), RELU, affine(10)];
/// The book's ch. 8 DeepConvNet without dropout (W6); note the fourth conv's padding of 2.
#[rustfmt::skip]
pub const DEEP_CONV: &[Layer] = &[
    conv(16, 3, 1), RELU, conv(16, 3, 1), RELU, POOL,
    conv(32, 3, 1), RELU, conv(32, 3, 2), RELU, POOL,
    conv(64, 3, 1), RELU, conv(64, 3, 1), RELU, POOL,
    affine(50), RELU, affine(10),
];
/// One sample: channels, height, width (NCHW).
pub const CONV_INPUT: [usize; 3] = [1, 28, 28];

/// A conv workload (W4-W6).
pub struct ConvCfg {
    pub name: &'static str,
    pub net: &'static [Layer],
    /// He init, sqrt(2 / fan_in)·N(0,1); otherwise the book's 0.01·N(0,1).
    pub he_init: bool,
    pub batch: usize,
    pub lr: f32,
    pub steps: usize,
    pub warmup: usize,
    /// Features after the last pool (the first affine's input).
    pub flat: usize,
}

pub const W4: ConvCfg = ConvCfg {
    name: "W4",
    net: SIMPLE_CONV,
    he_init: false,
    batch: 100,
    lr: 0.1,
    steps: 300,
    warmup: 30,
    flat: 4320,
};
pub const W5: ConvCfg = ConvCfg {
    name: "W5",
    net: SIMPLE_CONV,
    he_init: false,
    batch: 1,
    lr: 0.0,
    steps: 5_000,
    warmup: 500,
    flat: 4320,
};
pub const W6: ConvCfg = ConvCfg {
    name: "W6",
    net: DEEP_CONV,
    he_init: true,
    batch: 100,
    lr: 0.1,
    steps: 30,
    warmup: 5,
    flat: 1024,
};

/// The MLP workload called `name` (W1-W3).
pub fn mlp_workload(name: &str) -> Option<&'static Cfg> {
    [&W1, &W2, &W3].into_iter().find(|c| c.name == name)
}

/// The conv workload called `name` (W4-W6).
pub fn conv_workload(name: &str) -> Option<&'static ConvCfg> {
    [&W4, &W5, &W6].into_iter().find(|c| c.name == name)
}

/// Each layer's output shape for one sample: [C, H, W] for conv/relu/pool, [n] after an affine.
pub fn conv_shapes(net: &[Layer]) -> Vec<Vec<usize>> {
    let mut s = CONV_INPUT.to_vec();
    let mut out = Vec::new();
    for &layer in net {
        s = match layer {
            Layer::Conv { out_c, k, pad } => {
                vec![out_c, s[1] + 2 * pad + 1 - k, s[2] + 2 * pad + 1 - k]
            }
            Layer::Pool => vec![s[0], s[1] / 2, s[2] / 2],
            Layer::Affine { out } => vec![out],
            Layer::Relu => s,
        };
        out.push(s.clone());
    }
    out
}

/// Panics unless `got` (each layer's output shape, batch first, as the peer's framework reports
/// it) matches the spec. The flatten size is checked too.
pub fn check_conv_shapes(cfg: &ConvCfg, got: &[Vec<usize>]) {
    let want: Vec<Vec<usize>> = conv_shapes(cfg.net)
        .into_iter()
        .map(|s| [vec![cfg.batch], s].concat())
        .collect();
    assert_eq!(
        got,
        &want[..],
        "{}: layer output shapes differ from the spec",
        cfg.name
    );
    let last_pool = cfg
        .net
        .iter()
        .rposition(|l| *l == Layer::Pool)
        .expect("a pool");
    let flat: usize = want[last_pool][1..].iter().product();
    assert_eq!(flat, cfg.flat, "{}: flatten size", cfg.name);
}

/// Panics unless an MLP's layer outputs (affine and relu alike, batch first) match the spec.
pub fn check_mlp_shapes(cfg: &Cfg, got: &[Vec<usize>]) {
    let mut want = Vec::new();
    for (i, &n) in cfg.sizes[1..].iter().enumerate() {
        want.push(vec![cfg.batch, n]);
        if i + 2 < cfg.sizes.len() {
            want.push(vec![cfg.batch, n]); // the relu after each hidden affine
        }
    }
    assert_eq!(
        got,
        &want[..],
        "{}: layer output shapes differ from the spec",
        cfg.name
    );
}

// --------------------------------------------------------------------------------------- data

/// splitmix64: small, fast, and the same on every platform.
pub struct Rng {
    state: u64,
    spare: Option<f32>,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng {
            state: seed,
            spare: None,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// U[0,1) with 24 random bits (exact in f32).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / 16_777_216.0)
    }

    /// N(0,1) by Box-Muller, using both values of each pair.
    pub fn normal(&mut self) -> f32 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1 = 1.0 - f64::from(self.uniform()); // (0, 1]: ln is finite
        let u2 = f64::from(self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        self.spare = Some((r * a.sin()) as f32);
        (r * a.cos()) as f32
    }
}

/// A weighted layer's parameters: `w` row-major in `shape` (conv [out_c, in_c, k, k], affine
/// [in, out]), `b` of the output size, zero.
pub struct Param {
    pub shape: Vec<usize>,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

/// The batch (row-major, batch first), its labels, and the weighted layers' initial parameters.
pub struct Data {
    pub x: Vec<f32>,
    pub labels: Vec<usize>,
    pub params: Vec<Param>,
}

impl Data {
    /// The labels one-hot, batch x classes row-major.
    pub fn one_hot(&self, classes: usize) -> Vec<f32> {
        let mut t = vec![0.0; self.labels.len() * classes];
        for (row, &l) in self.labels.iter().enumerate() {
            t[row * classes + l] = 1.0;
        }
        t
    }
}

/// Seed 0, drawn in this order: X ~ U[0,1), labels uniform over the classes, then each weighted
/// layer's weights in layer order ((shape, fan_in) each, scaled 0.01 or He).
fn draw(
    x_len: usize,
    batch: usize,
    classes: usize,
    layers: &[(Vec<usize>, usize)],
    he: bool,
) -> Data {
    let mut r = Rng::new(0);
    let x = (0..x_len).map(|_| r.uniform()).collect();
    let labels = (0..batch)
        .map(|_| (r.next_u64() % classes as u64) as usize)
        .collect();
    let params = layers
        .iter()
        .map(|(shape, fan_in)| {
            let scale = if he {
                (2.0 / *fan_in as f32).sqrt()
            } else {
                0.01
            };
            let w = (0..shape.iter().product())
                .map(|_| scale * r.normal())
                .collect();
            let outputs = if shape.len() == 2 { shape[1] } else { shape[0] }; // affine: (in, out)
            Param {
                shape: shape.clone(),
                w,
                b: vec![0.0; outputs],
            }
        })
        .collect();
    Data { x, labels, params }
}

/// An MLP workload's data: W = 0.01·N(0,1) of shape (in, out), b = 0.
pub fn make_data(cfg: &Cfg) -> Data {
    let layers: Vec<_> = cfg
        .sizes
        .windows(2)
        .map(|p| (vec![p[0], p[1]], p[0]))
        .collect();
    let classes = *cfg.sizes.last().unwrap();
    draw(cfg.batch * cfg.sizes[0], cfg.batch, classes, &layers, false)
}

/// A conv workload's data: input (batch, 1, 28, 28), conv weights (out_c, in_c, k, k), affine
/// weights (in, out); 0.01·N(0,1) or He.
pub fn make_conv_data(cfg: &ConvCfg) -> Data {
    let shapes = conv_shapes(cfg.net);
    let mut layers = Vec::new();
    for (i, layer) in cfg.net.iter().enumerate() {
        let input = if i == 0 {
            CONV_INPUT.to_vec()
        } else {
            shapes[i - 1].clone()
        };
        match *layer {
            Layer::Conv { out_c, k, .. } => {
                layers.push((vec![out_c, input[0], k, k], input[0] * k * k))
            }
            Layer::Affine { out } => {
                let n: usize = input.iter().product();
                layers.push((vec![n, out], n));
            }
            _ => {}
        }
    }
    let x_len = cfg.batch * CONV_INPUT.iter().product::<usize>();
    draw(x_len, cfg.batch, 10, &layers, cfg.he_init)
}

// ------------------------------------------------------------------------------------- timing

/// With `PEERS_QUICK=1` every loop runs 1/50 of its count (at least 3): for checking that a peer
/// works, not for measuring it.
fn count(n: usize) -> usize {
    match std::env::var("PEERS_QUICK").as_deref() {
        Ok("1") => (n / 50).max(3),
        _ => n,
    }
}

/// `warmup` untimed calls, then steps/s over `steps` calls timed together.
pub fn time_steps<F: FnMut()>(warmup: usize, steps: usize, mut step: F) -> f64 {
    let (warmup, steps) = (count(warmup), count(steps));
    (0..warmup).for_each(|_| step());
    let start = Instant::now();
    (0..steps).for_each(|_| step());
    steps as f64 / start.elapsed().as_secs_f64()
}

/// `time_steps` with a workload's counts.
pub fn steps_per_s<F: FnMut()>(cfg: &Cfg, step: F) -> f64 {
    time_steps(cfg.warmup, cfg.steps, step)
}

/// `warmup` untimed calls, then `calls` calls each timed alone: (median, p10, p90) in µs.
pub fn latency_us<F: FnMut()>(calls: usize, warmup: usize, mut call: F) -> (f64, f64, f64) {
    let (calls, warmup) = (count(calls), count(warmup));
    (0..warmup).for_each(|_| call());
    let mut us: Vec<f64> = (0..calls)
        .map(|_| {
            let start = Instant::now();
            call();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    us.sort_by(f64::total_cmp);
    let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.1), at(0.9))
}

// -------------------------------------------------------------------------- command line, output

pub struct Args {
    /// Only reported: the caller sets the thread knobs (and pins the process) for it.
    pub threads: usize,
    pub workloads: Vec<String>,
    /// Replaces the implementation's name in the output.
    pub label: Option<String>,
}

/// `--threads N`, `--workloads W1,W4` (default all six), `--label NAME`.
pub fn args() -> Args {
    let mut a = Args {
        threads: 1,
        workloads: ["W1", "W2", "W3", "W4", "W5", "W6"]
            .map(String::from)
            .to_vec(),
        label: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--threads" => a.threads = value().parse().unwrap_or_else(|_| usage("--threads N")),
            "--workloads" => {
                a.workloads = value()
                    .split(',')
                    .filter(|w| !w.is_empty())
                    .map(String::from)
                    .collect()
            }
            "--label" => a.label = Some(value()),
            _ => usage(&format!("unknown argument {flag}")),
        }
    }
    a
}

fn usage(msg: &str) -> ! {
    eprintln!("{msg}\nusage: [--threads N] [--workloads W1,W2,...] [--label NAME]");
    std::process::exit(2)
}

/// Prints one measurement as a JSON line; `extra` is more JSON members (`"loss0":2.3,"loss1":2.2`),
/// or empty.
pub fn emit(imp: &str, workload: &str, threads: usize, metric: &str, value: f64, extra: &str) {
    let imp = imp.replace('\\', "\\\\").replace('"', "\\\"");
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(",{extra}")
    };
    println!(
        "{{\"impl\":\"{imp}\",\"workload\":\"{workload}\",\"threads\":{threads},\"metric\":\"{metric}\",\"value\":{value}{extra}}}"
    );
}

/// `emit` for a training row, with the loss before and after the timed steps.
pub fn emit_train(imp: &str, workload: &str, threads: usize, rate: f64, loss0: f32, loss1: f32) {
    emit(
        imp,
        workload,
        threads,
        "steps_per_s",
        rate,
        &format!("\"loss0\":{loss0},\"loss1\":{loss1}"),
    );
}

/// `emit` for a latency row, with its spread.
pub fn emit_latency(
    imp: &str,
    workload: &str,
    threads: usize,
    (median, p10, p90): (f64, f64, f64),
) {
    emit(
        imp,
        workload,
        threads,
        "median_us",
        median,
        &format!("\"p10\":{p10},\"p90\":{p90}"),
    );
}
