//! Data-parallel throughput: the wide net (784-1024-1024-10, the peers' W2) or the book's
//! SimpleConvNet (W4) with SGD on random data, global batch 256 (W2) or 100 (W4).
//!
//! ```sh
//! cargo build --release -p chainrule-mpi --example throughput
//! # one process without MPI's wrapper (plain fused SGD steps), then 1 and 2 ranks:
//! CHAINRULE_THREADS=1 target/release/examples/throughput wide plain
//! mpirun -np 2 -x CHAINRULE_THREADS=1 target/release/examples/throughput wide
//! ```
//!
//! Prints the global batches per second and the share of the steps spent communicating.

use std::time::Instant;

use chainrule::ndarray::{Array2, s};
use chainrule::prelude::*;
use chainrule_mpi::DataParallel;
use chainrule_mpi::mpi::traits::CommunicatorCollectives;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

network! {
    /// W2.
    struct Wide {
        affine(784, 1024) -> relu -> affine(1024, 1024) -> relu -> affine(1024, 10)
            -> softmax_cross_entropy
    }
}

// W4 is the main job's ConvNet, the book's SimpleConvNet.
#[allow(dead_code, reason = "W4 is one of them")]
#[path = "../../examples/mnist/nets.rs"]
mod nets;
use nets::ConvNet as SimpleConv;

const WARMUP: usize = 10;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let conv = args.first().is_some_and(|a| a == "conv");
    let plain = args.iter().any(|a| a == "plain");
    let (batch, steps) = if conv { (100, 200) } else { (256, 100) };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let x = Array2::from_shape_fn((batch, 784), |_| rng.random::<f32>());
    let t: Vec<usize> = (0..batch).map(|_| rng.random_range(0..10)).collect();
    if plain {
        let rate = if conv {
            plain_rate(SimpleConv::new(Init::He, 1), &x, &t, steps)?
        } else {
            plain_rate(Wide::new(Init::He, 1), &x, &t, steps)?
        };
        println!("1 process, no MPI: {rate:.1} steps/s");
        return Ok(());
    }
    let universe = chainrule_mpi::initialize()?;
    let mut parallel = DataParallel::new(universe.world());
    let (rate, share) = if conv {
        parallel_rate(&mut parallel, SimpleConv::new(Init::He, 1), &x, &t, steps)?
    } else {
        parallel_rate(&mut parallel, Wide::new(Init::He, 1), &x, &t, steps)?
    };
    if parallel.rank() == 0 {
        println!(
            "{} ranks: {rate:.1} steps/s, {:.1} % of the steps communicating",
            parallel.size(),
            100.0 * share
        );
    }
    Ok(())
}

fn plain_rate<N>(mut net: N, x: &Array2<f32>, t: &[usize], steps: usize) -> chainrule::Result<f64>
where
    N: for<'t> Trainable<Elem = f32, Targets<'t> = &'t [usize]>,
{
    let mut sgd = Sgd::new(0.01);
    let mut started = Instant::now();
    for step in 0..WARMUP + steps {
        if step == WARMUP {
            started = Instant::now();
        }
        sgd.train_step(&mut net, x.view(), t)?;
    }
    Ok(steps as f64 / started.elapsed().as_secs_f64())
}

fn parallel_rate<N>(
    parallel: &mut DataParallel<f32>,
    mut net: N,
    x: &Array2<f32>,
    t: &[usize],
    steps: usize,
) -> Result<(f64, f64), chainrule_mpi::Error>
where
    N: for<'t> Trainable<Elem = f32, Targets<'t> = &'t [usize]>,
{
    parallel.broadcast_parameters(&mut net);
    let rows = parallel.shard(x.nrows());
    let (x, t) = (x.slice(s![rows.clone(), ..]), &t[rows]);
    let mut sgd = Sgd::new(0.01);
    let mut started = Instant::now();
    for step in 0..WARMUP + steps {
        if step == WARMUP {
            parallel.world().barrier();
            parallel.take_timing();
            started = Instant::now();
        }
        parallel.train_step(&mut net, &mut sgd, x, t)?;
    }
    let rate = steps as f64 / started.elapsed().as_secs_f64();
    parallel.check_identical(&net)?;
    Ok((rate, parallel.take_timing().communication_share()))
}
