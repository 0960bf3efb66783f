//! The main job on several processes: the book's two-layer net on MNIST, data-parallel.
//!
//! ```sh
//! cargo build --release -p chainrule-mpi --example mnist_mpi
//! mpirun -np 2 -x CHAINRULE_THREADS=1 target/release/examples/mnist_mpi [EPOCHS] [CHECKPOINT]
//! ```
//!
//! Every rank reads MNIST and the same shuffled global batches of 100 and trains on its share of
//! each; rank 0 prints each epoch's test accuracy, the throughput and the share of the steps
//! spent on communication, and saves the parameters to CHECKPOINT (atomically) after each epoch.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chainrule::checkpoint;
use chainrule::data::{Batches, load_mnist};
use chainrule::ndarray::s;
use chainrule::prelude::*;
use chainrule::train::evaluate;
use chainrule_mpi::DataParallel;

// The main job's networks.
#[allow(dead_code, reason = "this job trains one of them")]
#[path = "../../examples/mnist/nets.rs"]
mod nets;
use nets::TwoLayerNet;

fn main() {
    let universe = match chainrule_mpi::initialize() {
        Ok(universe) => universe,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    };
    let mut parallel = DataParallel::new(universe.world());
    if let Err(error) = run(&mut parallel) {
        // Every rank stops at the same step with such an error (see chainrule_mpi's docs).
        eprintln!("rank {}: error: {error}", parallel.rank());
        drop(universe);
        std::process::exit(1);
    }
}

fn run(parallel: &mut DataParallel<f32>) -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let epochs: usize = args.next().map_or(Ok(3), |a| a.parse())?;
    let save = args.next().map(PathBuf::from);
    let lead = parallel.rank() == 0;
    let data = load_mnist(Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist"))?;
    let mut net = TwoLayerNet::new(Init::Std(0.01), 42);
    parallel.broadcast_parameters(&mut net);
    let mut sgd = Sgd::new(0.1);
    let mut batches = Batches::new(&data.train, 100, 42)?;
    if lead {
        println!(
            "{} ranks, each with its share of every batch of 100; {} batches an epoch",
            parallel.size(),
            batches.batches_per_epoch()
        );
    }
    for epoch in 1..=epochs {
        let started = Instant::now();
        let mut samples = 0;
        // One epoch: the batches end with it, and start again after.
        while let Some((x, t)) = batches.next_batch() {
            let rows = parallel.shard(x.nrows());
            let loss =
                parallel.train_step(&mut net, &mut sgd, x.slice(s![rows.clone(), ..]), &t[rows])?;
            if !loss.is_finite() {
                // The global loss: every rank stops here.
                return Err(format!("the loss is {loss}: training has diverged").into());
            }
            samples += x.nrows();
        }
        let elapsed = started.elapsed().as_secs_f64();
        let timing = parallel.take_timing();
        parallel.check_identical(&net)?;
        if lead {
            let test = evaluate(&mut net, &data.test, 1000)?;
            println!(
                "epoch {epoch}: test accuracy {:.4}; {:.0} samples/s; {:.1} % of the steps communicating",
                test.accuracy,
                samples as f64 / elapsed,
                100.0 * timing.communication_share()
            );
            if let Some(path) = &save {
                checkpoint::save(&net, path)?;
            }
        }
    }
    Ok(())
}
