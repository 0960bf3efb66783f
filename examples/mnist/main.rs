//! The main job: train a network on MNIST, as the book's `train_neuralnet.py` does.
//!
//! `cargo run --release --example mnist` trains the two-layer net (784-50-10, ReLU,
//! softmax-cross-entropy) with SGD (lr 0.1, batch 100) for 10 000 iterations from the book's
//! initialisation (normal, std 0.01), printing train and test accuracy once per epoch, then a
//! summary. `--help` lists the options: a deeper net, other optimisers and initialisers, saving and
//! loading checkpoints, and a plot of the run.

mod nets;
mod plot;

use std::error::Error;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chainrule::checkpoint;
use chainrule::data::{Batches, Dataset, Mnist, load_mnist};
use chainrule::ndarray::s;
use chainrule::prelude::*;
use chainrule::train::{Evaluation, evaluate};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use nets::{ConvBnNet, ConvNet, DeepConvNet, DeepNet, TwoLayerNet};

/// Train a network on MNIST, or on any data set in its IDX format.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The network: the book's 784-50-10, 784-256-256-256-10, or the book's convolutional net
    /// (use it with `--optimizer adam --lr 0.001`, as the book does).
    #[arg(long, value_enum, default_value_t = Arch::TwoLayer)]
    arch: Arch,
    /// Training iterations (mini-batches) [default: 10000, the book's, ≈17 epochs at batch 100].
    #[arg(long, conflicts_with = "epochs")]
    iterations: Option<usize>,
    /// Training epochs (passes over the training set), instead of --iterations.
    #[arg(long)]
    epochs: Option<usize>,
    /// Samples per mini-batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// The optimiser: sgd, momentum, nesterov, adagrad, rmsprop or adam.
    #[arg(long, default_value = "sgd")]
    optimizer: String,
    /// Learning rate [default: 0.1 for sgd, the book's default for the others].
    #[arg(long)]
    lr: Option<f64>,
    /// Multiply the learning rate by this every epoch: at each epoch's end with `--schedule step`
    /// (what a value other than 1 chooses by itself), a little every step with `--schedule exp`.
    #[arg(long, default_value_t = 1.0)]
    lr_decay: f64,
    /// How the learning rate changes over the run's steps (mini-batches) [default: constant, or
    /// step with --lr-decay].
    #[arg(long, value_enum)]
    schedule: Option<ScheduleKind>,
    /// Steps (mini-batches) of linear warm-up in front of the schedule: the learning rate rises
    /// from lr/N at the first step to lr at the N-th; the schedule counts its steps from there.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// The learning rate `--schedule cosine` ends at.
    #[arg(long, default_value_t = 0.0)]
    min_lr: f64,
    /// L2 weight decay λ (applied to weights, not biases).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Weight initialisation: normal with --init-std (the book's default), He or Xavier.
    #[arg(long, value_enum, default_value_t = InitKind::Std)]
    init: InitKind,
    /// The standard deviation for `--init std`.
    #[arg(long, default_value_t = 0.01)]
    init_std: f64,
    /// Seed for initialisation and shuffling: the same seed gives the same run, bit for bit.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// A directory holding the four MNIST IDX files (gzip or raw).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"))]
    data_dir: PathBuf,
    /// Use only the first N training images.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Use only the first N test images.
    #[arg(long)]
    test_limit: Option<usize>,
    /// Measure the training loss and accuracy after each epoch on the first N training images
    /// rather than all of them (the book's Trainer takes 1,000 for its deep net); the test set
    /// is always measured whole.
    #[arg(long)]
    train_eval_limit: Option<usize>,
    /// Start from the parameters in this checkpoint (safetensors).
    #[arg(long)]
    load: Option<PathBuf>,
    /// Save the trained parameters to this file (safetensors).
    #[arg(long)]
    save: Option<PathBuf>,
    /// Export the trained network to this ONNX file (the scores as `output` and their softmax as
    /// `probabilities`, for onnxruntime and other ONNX runtimes).
    #[arg(long)]
    export_onnx: Option<PathBuf>,
    /// Write a PNG of accuracy and loss per epoch to this file.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Arch {
    /// 784-50-10, ReLU.
    TwoLayer,
    /// 784-256-256-256-10, ReLU.
    Deep,
    /// conv 30×5×5 - ReLU - max pool 2 - 100 - ReLU - 10 (the book's SimpleConvNet).
    Conv,
    /// The same with a batch normalisation before each hidden ReLU.
    ConvBn,
    /// Six 3×3 convolutions (16, 16, 32, 32, 64, 64 channels) with ReLUs and three max pools,
    /// 50 - ReLU - dropout - 10 - dropout (the book's DeepConvNet; use it with `--init he
    /// --optimizer adam --lr 0.001`).
    DeepConv,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum InitKind {
    Std,
    He,
    Xavier,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ScheduleKind {
    /// --lr at every step.
    Constant,
    /// ×--lr-decay at the end of every epoch.
    Step,
    /// ×--lr-decay per epoch, spread evenly over its steps.
    Exp,
    /// Cosine annealing from --lr to --min-lr over the run's steps after the warm-up.
    Cosine,
}

/// One epoch's figures, for the log and the plot.
#[derive(Debug, Clone, Copy)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train: Evaluation,
    pub test: Evaluation,
}

fn main() {
    let args = Args::parse();
    if let Err(error) = run(&args) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    let optim = optimizer(args)?;
    let Mnist {
        mut train,
        mut test,
    } = load_mnist(&args.data_dir)?;
    if let Some(n) = args.train_limit {
        train = train.take(n);
    }
    if let Some(n) = args.test_limit {
        test = test.take(n);
    }
    println!(
        "data: {} training and {} test images from {}",
        train.len(),
        test.len(),
        args.data_dir.display()
    );
    let init = match args.init {
        InitKind::Std => Init::Std(args.init_std),
        InitKind::He => Init::He,
        InitKind::Xavier => Init::Xavier,
    };
    let data = Mnist { train, test };
    match args.arch {
        Arch::TwoLayer => train_net(
            TwoLayerNet::new(init, args.seed),
            optim,
            args,
            &data,
            started,
        ),
        Arch::Deep => train_net(DeepNet::new(init, args.seed), optim, args, &data, started),
        Arch::Conv => train_net(ConvNet::new(init, args.seed), optim, args, &data, started),
        Arch::ConvBn => train_net(ConvBnNet::new(init, args.seed), optim, args, &data, started),
        Arch::DeepConv => train_net(
            DeepConvNet::new(init, args.seed),
            optim,
            args,
            &data,
            started,
        ),
    }
}

/// The optimiser the options ask for, after checking every numeric option. Its schedule, which
/// counts in batches, comes in `train_net` from `lr_schedule`.
fn optimizer(args: &Args) -> Result<Optim, Box<dyn Error>> {
    let positive = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(format!("{name} must be a positive number, not {v}"))
        }
    };
    if let Some(lr) = args.lr {
        positive("--lr", lr)?;
    }
    positive("--init-std", args.init_std)?;
    positive("--lr-decay", args.lr_decay)?;
    if !(args.min_lr.is_finite() && args.min_lr >= 0.0) {
        return Err(format!("--min-lr must be 0 or more, not {}", args.min_lr).into());
    }
    let schedule = schedule_kind(args);
    let name = schedule
        .to_possible_value()
        .expect("every schedule has a name");
    if args.lr_decay != 1.0 && !matches!(schedule, ScheduleKind::Step | ScheduleKind::Exp) {
        return Err(format!(
            "--lr-decay is for --schedule step or exp, not {}",
            name.get_name()
        )
        .into());
    }
    if args.min_lr != 0.0 && schedule != ScheduleKind::Cosine {
        return Err(format!("--min-lr is for --schedule cosine, not {}", name.get_name()).into());
    }
    if !(args.weight_decay.is_finite() && args.weight_decay >= 0.0) {
        return Err(format!(
            "--weight-decay must be 0 or more, not {}",
            args.weight_decay
        )
        .into());
    }
    if args.batch_size == 0 || args.iterations == Some(0) || args.epochs == Some(0) {
        return Err("--batch-size, --iterations and --epochs must be at least 1".into());
    }
    let optim = Optim::from_name(&args.optimizer)?;
    let optim = match (args.lr, &optim) {
        (Some(lr), _) => optim.with_lr(lr),
        (None, Optim::Sgd(_)) => optim.with_lr(0.1),
        (None, _) => optim,
    };
    if schedule == ScheduleKind::Cosine && args.min_lr >= optim.base_lr() {
        return Err(format!(
            "--min-lr ({}) must be below the learning rate ({}) that cosine starts from",
            args.min_lr,
            optim.base_lr()
        )
        .into());
    }
    Ok(optim.with_weight_decay(args.weight_decay))
}

/// `--schedule`, or what it is when left out: step decay if `--lr-decay` is given, else constant.
fn schedule_kind(args: &Args) -> ScheduleKind {
    args.schedule.unwrap_or(if args.lr_decay == 1.0 {
        ScheduleKind::Constant
    } else {
        ScheduleKind::Step
    })
}

/// The learning-rate schedule the options ask for, counted in steps: `--lr-decay` applies per
/// epoch of `per_epoch` batches, and cosine spans what the warm-up leaves of the run's
/// `iterations`.
fn lr_schedule(
    args: &Args,
    per_epoch: usize,
    iterations: usize,
) -> Result<Schedule, Box<dyn Error>> {
    if args.warmup >= iterations {
        return Err(format!(
            "--warmup ({} steps) must be fewer than the run's {iterations} iterations",
            args.warmup
        )
        .into());
    }
    let per_epoch = per_epoch as u64;
    let schedule = match schedule_kind(args) {
        ScheduleKind::Constant => Schedule::constant(),
        ScheduleKind::Step => Schedule::step(per_epoch, args.lr_decay)?,
        ScheduleKind::Exp => Schedule::exponential_every(per_epoch, args.lr_decay)?,
        ScheduleKind::Cosine => Schedule::cosine((iterations - args.warmup) as u64, args.min_lr)?,
    };
    Ok(schedule.with_warmup(args.warmup as u64))
}

fn train_net<N>(
    mut net: N,
    mut optim: Optim,
    args: &Args,
    data: &Mnist,
    started: Instant,
) -> Result<(), Box<dyn Error>>
where
    N: for<'t> Trainable<Elem = f32, Targets<'t> = &'t [usize]>,
{
    if let Some(path) = &args.load {
        checkpoint::load(&mut net, path)?;
        println!("loaded parameters from {}", path.display());
    }

    let Mnist { train, test } = data;
    let mut batches = Batches::new(train, args.batch_size, args.seed)?;
    let per_epoch = batches.batches_per_epoch();
    let iterations = match (args.iterations, args.epochs) {
        (Some(n), _) => n,
        (None, Some(epochs)) => epochs * per_epoch,
        (None, None) => 10_000,
    };
    let epochs = iterations.div_ceil(per_epoch);
    optim = optim.with_schedule(lr_schedule(args, per_epoch, iterations)?);
    println!(
        "network: {} ({} parameters); optimiser: {optim}; batch {}; {iterations} iterations = {epochs} epoch{} of {per_epoch}",
        N::NAME,
        N::PARAMS,
        args.batch_size,
        if epochs == 1 { "" } else { "s" }
    );
    println!(
        "cost per sample: {:.2} MFLOP forward, {:.2} MFLOP a training step; parameters {:.2} MB, \
         activations {:.1} kB in training",
        N::FLOPS_FORWARD as f64 / 1e6,
        N::FLOPS_TRAINING as f64 / 1e6,
        N::PARAM_BYTES as f64 / 1e6,
        N::ACTIVATION_BYTES_TRAINING as f64 / 1e3,
    );

    let train_eval = match args.train_eval_limit {
        Some(n) => &train.take(n),
        None => train,
    };
    let mut history = vec![record(&mut net, 0, train_eval, test, args.batch_size)?];
    report(&history[0], None);
    let interactive = std::io::stderr().is_terminal();
    let mut done = 0;
    let mut training = Duration::ZERO;
    let mut samples = 0usize;
    for epoch in 1..=epochs {
        let steps = per_epoch.min(iterations - done);
        let bar = progress_bar(interactive, epoch, epochs, steps * args.batch_size);
        let epoch_start = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        while let Some((x, t)) = batches.next_batch() {
            // Plain SGD fuses its update into the backward pass; the others step after it.
            let loss = optim.train_step(&mut net, x, t)?;
            if !loss.is_finite() {
                // Diverged: stop here, save nothing (a checkpoint already at --save stays).
                bar.finish_and_clear();
                // This step's rate (`lr()` is the next one's); a smaller base rate is the cure.
                let lr = optim.schedule().lr(optim.base_lr(), done as u64);
                return Err(format!(
                    "step {} (epoch {epoch}): the loss is {loss} at learning rate {lr}: training \
                     has diverged; try a smaller --lr, such as {}",
                    done + 1,
                    optim.base_lr() / 10.0
                )
                .into());
            }
            loss_sum += f64::from(loss) * t.len() as f64;
            correct += Target::<f32>::correct(&t, net.output());
            seen += t.len();
            done += 1;
            bar.inc(t.len() as u64);
            if done % 20 == 0 {
                let rate = seen as f64 / epoch_start.elapsed().as_secs_f64();
                bar.set_message(format!(
                    "loss {:.4}  acc {:.4}  {rate:>7.0} samples/s",
                    loss_sum / seen as f64,
                    correct as f64 / seen as f64
                ));
            }
            if done == iterations {
                break;
            }
        }
        let elapsed = epoch_start.elapsed();
        training += elapsed;
        samples += seen;
        bar.finish_and_clear();
        history.push(record(&mut net, epoch, train_eval, test, args.batch_size)?);
        report(&history[epoch], Some((elapsed, seen)));
    }

    let last = history[history.len() - 1];
    println!(
        "done: test accuracy {:.4} (train {:.4}) after {done} iterations; {:.1} s in all, {:.1} s training, {:.0} samples/s",
        last.test.accuracy,
        last.train.accuracy,
        started.elapsed().as_secs_f64(),
        training.as_secs_f64(),
        samples as f64 / training.as_secs_f64()
    );
    let (latency, accuracy) = one_at_a_time(&mut net, test)?;
    let mut line =
        format!("one test image at a time: {latency:.2} µs per image and accuracy {accuracy:.4}");
    for precision in [WeightPrecision::Half, WeightPrecision::BFloat16] {
        match net.set_one_sample_weights(precision) {
            Ok(()) => {
                let (latency, accuracy) = one_at_a_time(&mut net, test)?;
                line += &format!("; {latency:.2} µs and {accuracy:.4} in {precision}");
            }
            Err(why) => {
                line += &format!("; {why}");
                break;
            }
        }
    }
    net.set_one_sample_weights(WeightPrecision::Full)?;
    println!("{line}");
    if let Some(path) = &args.save {
        // Never a checkpoint of non-finite parameters.
        net.check_finite()?;
        checkpoint::save(&net, path)?;
        println!("saved parameters to {}", path.display());
    }
    if let Some(path) = &args.export_onnx {
        chainrule_onnx::save(&net, path, &chainrule_onnx::Options::with_probabilities())?;
        println!(
            "exported the network to {} (ONNX opset {})",
            path.display(),
            chainrule_onnx::OPSET
        );
    }
    if let Some(path) = &args.plot {
        plot::draw(&history, N::NAME, path)?;
        println!("plotted accuracy and loss to {}", path.display());
    }
    Ok(())
}

fn record<N>(
    net: &mut N,
    epoch: usize,
    train: &Dataset,
    test: &Dataset,
    chunk: usize,
) -> chainrule::Result<EpochRecord>
where
    N: for<'t> Trainable<Elem = f32, Targets<'t> = &'t [usize]>,
{
    Ok(EpochRecord {
        epoch,
        train: evaluate(net, train, chunk)?,
        test: evaluate(net, test, chunk)?,
    })
}

/// Classifies the test images one at a time (the latency of inference): the median
/// microseconds per image over the set and the accuracy.
fn one_at_a_time<N>(net: &mut N, test: &Dataset) -> chainrule::Result<(f64, f64)>
where
    N: Network<Elem = f32>,
{
    let images = test.images();
    let mut times = Vec::with_capacity(test.len());
    let mut correct = 0;
    for (i, &label) in test.labels().iter().enumerate() {
        let started = Instant::now();
        let scores = net.forward(images.slice(s![i..i + 1, ..]))?;
        times.push(started.elapsed());
        correct += Target::<f32>::correct(&&[label][..], scores);
    }
    times.sort_unstable();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    Ok((
        median.as_secs_f64() * 1e6,
        correct as f64 / test.len().max(1) as f64,
    ))
}

fn report(record: &EpochRecord, timing: Option<(Duration, usize)>) {
    let timing = timing.map_or(String::new(), |(elapsed, seen)| {
        format!(
            "  ({:.2} s, {:.0} samples/s)",
            elapsed.as_secs_f64(),
            seen as f64 / elapsed.as_secs_f64()
        )
    });
    println!(
        "epoch {:>3}  train loss {:.4} acc {:.4}  test loss {:.4} acc {:.4}{timing}",
        record.epoch,
        record.train.loss,
        record.train.accuracy,
        record.test.loss,
        record.test.accuracy
    );
}

/// A progress bar on a terminal; nothing otherwise, so logs get only the per-epoch lines.
fn progress_bar(interactive: bool, epoch: usize, epochs: usize, samples: usize) -> ProgressBar {
    if !interactive {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(samples as u64).with_prefix(format!("epoch {epoch}/{epochs}"));
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar
}
