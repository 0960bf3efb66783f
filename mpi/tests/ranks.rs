//! Data-parallel training under `mpirun`: this program is both the test (run by `cargo test`)
//! and, started by `mpirun` on its own executable, the ranks it checks.
//!
//! Needs OpenMPI's `mpirun` (`tests/mpi/install.sh` installs it); the ranks run with
//! `--allow-run-as-root --oversubscribe` and one thread each.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chainrule::checkpoint;
use chainrule::data::{Batches, Dataset, load_mnist};
use chainrule::ndarray::s;
use chainrule::prelude::*;
use chainrule_mpi::DataParallel;

// The main job's networks.
#[allow(dead_code, reason = "the ranks train one of them")]
#[path = "../../examples/mnist/nets.rs"]
mod nets;
use nets::TwoLayerNet;

/// Steps of the equivalence check, and its global batch: 101 rows, so the two ranks' shares
/// differ (51 and 50) and the weighting of their gradients is checked too.
const STEPS: usize = 50;
const BATCH: usize = 101;
const SEED: u64 = 7;
/// How long a job of ranks may take before it counts as hung.
const DEADLINE: Duration = Duration::from_secs(300);

fn main() {
    if std::env::var_os("OMPI_COMM_WORLD_RANK").is_some() {
        let role = std::env::args()
            .nth(1)
            .expect("a rank is started with its role");
        let rest: Vec<String> = std::env::args().skip(2).collect();
        rank_main(&role, &rest);
        return;
    }
    let tests: [(&str, fn()); 4] = [
        ("two_ranks_follow_one_process", two_ranks_follow_one_process),
        (
            "a_batch_one_rank_refuses_stops_every_rank_at_that_step",
            a_batch_one_rank_refuses_stops_every_rank_at_that_step,
        ),
        (
            "a_rank_that_dies_stops_the_job_and_the_checkpoint_stays_intact",
            a_rank_that_dies_stops_the_job_and_the_checkpoint_stays_intact,
        ),
        (
            "a_rank_that_panics_stops_the_job",
            a_rank_that_panics_stops_the_job,
        ),
    ];
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let mut ran = 0;
    for (name, test) in tests {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let started = Instant::now();
        test();
        println!(
            "test {name} ... ok ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        ran += 1;
    }
    println!("test result: ok. {ran} passed");
}

fn training_data() -> Dataset {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist");
    load_mnist(dir)
        .expect("the MNIST copy in data/mnist")
        .train
        .take(6000)
}

// --- the ranks ---------------------------------------------------------------------------

fn rank_main(role: &str, args: &[String]) {
    let universe = chainrule_mpi::initialize().expect("MPI starts");
    let mut parallel = DataParallel::new(universe.world()).with_check_every(Some(10));
    let rank = parallel.rank();
    // Each rank draws its own start (another seed): broadcasting must make them one.
    let mut net = TwoLayerNet::new(Init::He, SEED + rank as u64);
    parallel.broadcast_parameters(&mut net);
    let mut adam = Adam::new(0.001);
    let data = training_data();
    let mut batches = Batches::new(&data, BATCH, SEED).unwrap();
    // A directory of the driver's: the checkpoint (for the roles that save one) and each rank's
    // error message (whole, where mpirun's forwarding of the ranks' output may interleave).
    let dir = PathBuf::from(&args[0]);
    let checkpoint = matches!(role, "train" | "die").then(|| dir.join("last.safetensors"));
    for step in 1..=STEPS {
        let (x, t) = batches.next_batch().unwrap();
        let rows = parallel.shard(x.nrows());
        let mut labels = t[rows.clone()].to_vec();
        match role {
            "refuse" if rank == 1 && step == 5 => labels[3] = 10,
            "panic" if rank == 1 && step == 3 => panic!("a rank's own failure"),
            "die" if rank == 1 && step == 25 => std::process::abort(),
            _ => {}
        }
        let before = DataParallel::<f32>::parameter_hash(&net);
        match parallel.train_step(&mut net, &mut adam, x.slice(s![rows, ..]), &labels) {
            Ok(loss) => {
                if rank == 0 {
                    println!("loss {step} {loss:?}");
                }
            }
            Err(error) => {
                // Every rank stops here, with nothing changed.
                let unchanged = DataParallel::<f32>::parameter_hash(&net) == before;
                let message = format!("step {step}: {error} (parameters unchanged: {unchanged})");
                eprintln!("rank {rank}: {message}");
                std::fs::write(dir.join(format!("rank{rank}.err")), message).unwrap();
                parallel.check_identical(&net).unwrap();
                drop(universe);
                std::process::exit(2);
            }
        }
        if rank == 0
            && step.is_multiple_of(10)
            && let Some(path) = &checkpoint
        {
            checkpoint::save(&net, path).unwrap();
            println!("saved {step} {}", DataParallel::<f32>::parameter_hash(&net));
        }
    }
    parallel.check_identical(&net).unwrap();
    println!(
        "rank {rank} hash {}",
        DataParallel::<f32>::parameter_hash(&net)
    );
    if rank == 0
        && let Some(path) = &checkpoint
    {
        checkpoint::save(&net, path).unwrap();
    }
}

// --- the driver --------------------------------------------------------------------------

struct Job {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs this executable as `ranks` ranks in role `role` under `mpirun`, one thread each, and
/// fails the test if the job is not over by [`DEADLINE`].
fn mpirun(ranks: usize, role: &str, dir: &Path) -> Job {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(ranks.to_string())
        .args(["-x", "CHAINRULE_THREADS=1"])
        .arg(&exe)
        .arg(role)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start mpirun ({e}): install OpenMPI with tests/mpi/install.sh")
        });
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).unwrap();
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "`mpirun -np {ranks}` ({role}) hung: not done after {DEADLINE:?}\n{}",
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Job {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// The values after `word` on the lines that start with it.
fn lines<'a>(text: &'a str, word: &str) -> Vec<Vec<&'a str>> {
    text.lines()
        .filter_map(|line| line.strip_prefix(word)?.strip_prefix(' '))
        .map(|rest| rest.split(' ').collect())
        .collect()
}

fn two_ranks_follow_one_process() {
    // One process, no MPI: the reference.
    let mut reference = TwoLayerNet::new(Init::He, SEED);
    let mut adam = Adam::new(0.001);
    let data = training_data();
    let mut batches = Batches::new(&data, BATCH, SEED).unwrap();
    let mut expected = Vec::new();
    for _ in 0..STEPS {
        let (x, t) = batches.next_batch().unwrap();
        expected.push(adam.train_step(&mut reference, x, t).unwrap());
    }

    let dir = tempfile::tempdir().unwrap();
    let job = mpirun(2, "train", dir.path());
    let saved = dir.path().join("last.safetensors");
    assert!(job.status.success(), "the job failed:\n{}", job.stderr);
    let losses = lines(&job.stdout, "loss");
    assert_eq!(losses.len(), STEPS, "rank 0 prints every step's loss");
    for (step, (line, &want)) in losses.iter().zip(&expected).enumerate() {
        let got: f32 = line[1].parse().unwrap();
        let rel = (got - want).abs() / want.abs();
        assert!(
            rel < 1e-5,
            "step {}: loss {got} on 2 ranks, {want} in one process (relative {rel:.2e})",
            step + 1
        );
    }
    let hashes = lines(&job.stdout, "rank");
    assert_eq!(hashes.len(), 2, "both ranks report their parameters");
    assert_eq!(
        hashes[0][2], hashes[1][2],
        "the ranks' parameters are the same"
    );

    // The parameters too, not only the losses: to the rounding of sums in another order.
    let mut trained = TwoLayerNet::new(Init::He, 0);
    checkpoint::load(&mut trained, &saved).unwrap();
    let mut worst = 0.0f32;
    trained.for_each_param(&mut |p| {
        let want = reference.param(p.name).unwrap();
        let scale = want.value.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (a, b) in p.value.iter().zip(want.value) {
            worst = worst.max((a - b).abs() / scale);
        }
    });
    assert!(
        worst < 1e-4,
        "parameters differ by {worst:.2e} of their scale"
    );
}

fn a_batch_one_rank_refuses_stops_every_rank_at_that_step() {
    let dir = tempfile::tempdir().unwrap();
    let job = mpirun(2, "refuse", dir.path());
    assert!(!job.status.success(), "the job ends in failure");
    let said = |rank: usize| {
        std::fs::read_to_string(dir.path().join(format!("rank{rank}.err")))
            .unwrap_or_else(|_| panic!("rank {rank} stopped with an error:\n{}", job.stderr))
    };
    let (zero, one) = (said(0), said(1));
    assert_eq!(
        one,
        "step 5: rank 1: target 3 is class 10, but TwoLayerNet has 10 classes (0 to 9) \
         (parameters unchanged: true)",
        "rank 1 says what its batch had wrong"
    );
    assert_eq!(
        zero,
        "step 5: 1 of 2 ranks refused their part of the batch (their messages say why); this \
         step changed nothing (parameters unchanged: true)",
        "rank 0 stops at the same step"
    );
    assert_eq!(lines(&job.stdout, "loss").len(), 4, "four steps were taken");
}

fn a_rank_that_dies_stops_the_job_and_the_checkpoint_stays_intact() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("last.safetensors");
    let job = mpirun(2, "die", dir.path());
    assert!(!job.status.success(), "the job ends in failure");
    assert!(
        job.stderr.contains("signal 6") || job.stderr.contains("Aborted"),
        "mpirun names the rank's death:\n{}",
        job.stderr
    );
    let saves = lines(&job.stdout, "saved");
    let last = saves.last().expect("rank 0 saved before rank 1 died");
    assert!(
        last[0] == "20",
        "the last checkpoint is step 20's: {saves:?}"
    );
    let mut net = TwoLayerNet::new(Init::He, 0);
    checkpoint::load(&mut net, &saved).unwrap();
    assert_eq!(
        DataParallel::<f32>::parameter_hash(&net).to_string(),
        last[1],
        "the checkpoint holds step 20's parameters"
    );
}

fn a_rank_that_panics_stops_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let job = mpirun(2, "panic", dir.path());
    assert!(!job.status.success(), "the job ends in failure");
    assert!(
        job.stderr.contains("a rank's own failure")
            && job
                .stderr
                .contains("rank 1 of 2: panicked; stopping every rank"),
        "the panic's message and what it does:\n{}",
        job.stderr
    );
    assert!(lines(&job.stdout, "loss").len() < STEPS);
}
