//! Data-parallel training of chainrule networks on MPI.
//!
//! Every process (an MPI *rank*) holds the whole network and trains on its own part of each
//! batch; the gradients are summed across the ranks by allreduce before the update, so every
//! rank applies the same update and the parameters stay the same everywhere: what PyTorch's
//! `DistributedDataParallel` and Horovod do, on the MPI that clusters already run (through the
//! [`mpi`] crate, on OpenMPI or any other implementation).
//!
//! ```no_run
//! use chainrule::prelude::*;
//! use chainrule_mpi::DataParallel;
//! # chainrule::network! { struct Net { affine(784, 50) -> relu -> affine(50, 10) -> softmax_cross_entropy } }
//! # fn batches() -> Vec<(chainrule::ndarray::Array2<f32>, Vec<usize>)> { Vec::new() }
//! # fn main() -> Result<(), chainrule_mpi::Error> {
//! let universe = chainrule_mpi::initialize()?;
//! let mut parallel = DataParallel::new(universe.world());
//! let mut net = Net::new(Init::He, 42);
//! parallel.broadcast_parameters(&mut net); // rank 0's parameters everywhere
//! let mut sgd = Sgd::new(0.1);
//! for (x, t) in batches() {
//!     // Every rank reads the same global batch and trains on its own rows of it.
//!     let rows = parallel.shard(x.nrows());
//!     let loss = parallel.train_step(&mut net, &mut sgd, x.slice(chainrule::ndarray::s![rows.clone(), ..]), &t[rows])?;
//!     if parallel.rank() == 0 {
//!         println!("loss {loss}");
//!     }
//! }
//! parallel.check_identical(&net)?;
//! # Ok(())
//! # }
//! ```
//!
//! # What a step does
//!
//! [`DataParallel::train_step`] on each rank, with its `n` rows of a global batch of `B`:
//!
//! 1. checks its rows and targets, and learns from one small allreduce whether every rank's are
//!    good and how many rows there are in all: a refused batch makes *every* rank return an `Err`
//!    at the same step, with nothing changed (no rank waits forever for another);
//! 2. runs [`Trainable::gradient_with`]: forward, loss, and the backward pass, which hands over
//!    each parameter as soon as its gradient is final, the last layer's first. The gradients,
//!    times `n`, are copied into buckets of about [`DataParallel::with_bucket_bytes`] bytes, and
//!    each full bucket's non-blocking allreduce starts at once, while the layers before it still
//!    compute their gradients (PyTorch DDP's buckets);
//! 3. waits for the buckets, writes `Σ n·∂L/∂p ÷ B` into every gradient (the gradient of the
//!    global batch's mean loss, as one process computes it, up to the order of the sums), and
//!    runs the optimiser's [`step`](Optimizer::step), the same update on every rank;
//! 4. averages the running statistics of batch normalisations over the ranks (each rank has
//!    seen only its rows), so they stay the same everywhere too.
//!
//! It returns the global batch's mean loss, the same on every rank.
//!
//! # Same results as one process
//!
//! With the same global batches and seed, `N` ranks follow one process's loss curve up to the
//! rounding of sums in another order, for networks without a training mode. A `batchnorm`
//! normalises each rank's rows with their own statistics (as DDP without `SyncBatchNorm` does),
//! and a `dropout` draws its masks on each rank: give each rank its own masks with
//! [`Network::seed_masks`] and a seed that depends on the rank.
//!
//! # Identical parameters
//!
//! [`DataParallel::check_identical`] compares a hash of every rank's parameters and running
//! statistics (an allgather of one number each); debug builds run it every 100 steps by
//! themselves ([`DataParallel::with_check_every`]), and a job should run it at its end.
//!
//! # Failure
//!
//! A rank that dies makes `mpirun` stop every other rank with a message naming it. A panic on
//! a rank aborts the whole job ([`initialize`] installs a hook that calls `MPI_Abort` after the
//! panic's message), instead of leaving the others waiting in a collective. Errors that every
//! rank sees alike (a non-finite loss: the loss is the global one) are returned on every rank.

use std::ops::Range;
use std::time::{Duration, Instant};

use chainrule_runtime::optim::Optimizer;
use chainrule_runtime::{Element, Network, ParamRef, Trainable};
use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::environment::Universe;
use mpi::request::{LocalScope, Request};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

pub use mpi;

/// What can go wrong in a data-parallel step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This rank's network refused its part of the batch (the message says why); every rank
    /// returned an error at this step, and no parameter changed.
    #[error("rank {rank}: {source}")]
    Network {
        /// The rank that refused it.
        rank: i32,
        /// What the network said.
        source: chainrule_runtime::Error,
    },
    /// Another rank refused its part of the batch (its own output says why); this rank stopped
    /// with it, and no parameter changed.
    #[error(
        "{refused} of {size} ranks refused their part of the batch (their messages say why); \
         this step changed nothing"
    )]
    PeerRefused {
        /// How many ranks refused.
        refused: i64,
        /// How many ranks there are.
        size: i32,
    },
    /// The ranks' parameters are no longer the same: a bug, or an optimiser or network whose
    /// update depends on more than the summed gradients.
    #[error(
        "after step {step} the parameters differ between ranks: ranks {ranks:?} hold other values \
         than rank 0"
    )]
    Diverged {
        /// The steps taken when it was found.
        step: u64,
        /// The ranks whose hash differs from rank 0's.
        ranks: Vec<i32>,
    },
    /// The backward pass did not hand over each of the network's parameters exactly once: a hand-written network's `gradient_with` that does not keep its
    /// promise. The step's gradients are not summed.
    #[error(
        "{network}'s backward pass did not hand over each of its {expected} parameters exactly \
         once (it handed over {got}), as Trainable::gradient_with must; nothing was updated"
    )]
    Handover {
        /// The network's name.
        network: &'static str,
        /// How many parameters it has.
        expected: usize,
        /// How many it handed over.
        got: usize,
    },
    /// MPI could not start: `MPI_Init` was called before, or failed.
    #[error("MPI could not be initialised (was it initialised already?)")]
    Initialize,
}

/// Starts MPI for a program whose own threads (chainrule's thread pool) never call it, and
/// installs a panic hook that aborts the whole job after the panic's message, so that a rank
/// that panics does not leave the others waiting in a collective. Keep the [`Universe`]
/// until the end of `main`: dropping it finalises MPI.
pub fn initialize() -> Result<Universe, Error> {
    let (universe, _) =
        mpi::initialize_with_threading(mpi::Threading::Funneled).ok_or(Error::Initialize)?;
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        if !mpi::environment::is_initialized() || mpi::environment::is_finalized() {
            return;
        }
        let world = SimpleCommunicator::world();
        eprintln!(
            "rank {} of {}: panicked; stopping every rank",
            world.rank(),
            world.size()
        );
        world.abort(101);
    }));
    Ok(universe)
}

/// Where a data-parallel step's time went, summed over the steps since the last
/// [`DataParallel::take_timing`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    /// Steps timed.
    pub steps: u64,
    /// The whole steps: check, gradients, reductions, update.
    pub total: Duration,
    /// Copying the gradients into the buckets and starting their reductions, inside the
    /// backward pass.
    pub bucketing: Duration,
    /// Waiting for the reductions after the backward pass: the communication that the backward
    /// pass did not hide, and the small reductions of the check and the loss.
    pub waiting: Duration,
}

impl Timing {
    /// The share of the steps' time spent on communication: bucketing and waiting.
    pub fn communication_share(&self) -> f64 {
        let total = self.total.as_secs_f64();
        if total == 0.0 {
            return 0.0;
        }
        (self.bucketing + self.waiting).as_secs_f64() / total
    }
}

/// Data-parallel training over the ranks of a communicator; see the [crate docs](crate).
pub struct DataParallel<T> {
    world: SimpleCommunicator,
    bucket_bytes: usize,
    check_every: Option<u64>,
    steps: u64,
    /// The gradients, times the rank's rows, in the order the backward pass hands them over.
    send: Vec<T>,
    /// Their sums over the ranks.
    recv: Vec<T>,
    /// Each parameter's name and start in `send`, in handover order.
    slots: Vec<(&'static str, usize)>,
    /// A copy of one running statistic, to sum in place of.
    scratch: Vec<T>,
    timing: Timing,
}

impl<T: Element + Equivalence> DataParallel<T> {
    /// Data-parallel training over `world`'s ranks, with buckets of 1 MiB.
    pub fn new(world: SimpleCommunicator) -> Self {
        DataParallel {
            world,
            bucket_bytes: 1 << 20,
            check_every: cfg!(debug_assertions).then_some(100),
            steps: 0,
            send: Vec::new(),
            recv: Vec::new(),
            slots: Vec::new(),
            scratch: Vec::new(),
            timing: Timing::default(),
        }
    }

    /// The same with buckets of at least `bytes` (a parameter is never split; the last
    /// bucket holds what is left). Small buckets start sooner and overlap more of the backward
    /// pass; each costs a reduction's latency. 0 gives each parameter its own.
    pub fn with_bucket_bytes(mut self, bytes: usize) -> Self {
        self.bucket_bytes = bytes;
        self
    }

    /// The same, running [`check_identical`](Self::check_identical) after every `steps`-th
    /// step (`None`: never by itself; debug builds default to every 100th).
    pub fn with_check_every(mut self, steps: Option<u64>) -> Self {
        self.check_every = steps.filter(|&n| n > 0);
        self
    }

    /// This process's rank, from 0.
    pub fn rank(&self) -> i32 {
        self.world.rank()
    }

    /// The number of ranks.
    pub fn size(&self) -> i32 {
        self.world.size()
    }

    /// The communicator.
    pub fn world(&self) -> &SimpleCommunicator {
        &self.world
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// This rank's rows of a global batch of `rows`: contiguous, in rank order, their sizes
    /// differing by at most one. A rank gets none when `rows` is below the number of ranks
    /// (and [`train_step`](Self::train_step) then refuses the batch on every rank).
    pub fn shard(&self, rows: usize) -> Range<usize> {
        shard(rows, self.rank() as usize, self.size() as usize)
    }

    /// Sets every rank's parameters and running statistics to rank 0's: the same start
    /// everywhere, whatever each rank drew or loaded.
    pub fn broadcast_parameters<N: Network<Elem = T> + ?Sized>(&self, net: &mut N) {
        let root = self.world.process_at_rank(0);
        net.for_each_param_mut(&mut |p| root.broadcast_into(p.value));
        net.for_each_buffer_mut(&mut |b| root.broadcast_into(b.value));
    }

    /// A hash of the parameters' and running statistics' bits, the same on every rank while
    /// they are the same.
    pub fn parameter_hash<N: Network<Elem = T> + ?Sized>(net: &N) -> u64 {
        let mut hash = Fnv::default();
        net.for_each_param(&mut |p| hash.values(p.value));
        net.for_each_buffer(&mut |b| hash.values(b.value));
        hash.0
    }

    /// Checks that every rank holds the same parameters and running statistics (an allgather of
    /// their hashes); on every rank, an [`Error::Diverged`] naming the ranks that differ from
    /// rank 0 when they do not.
    pub fn check_identical<N: Network<Elem = T> + ?Sized>(&self, net: &N) -> Result<(), Error> {
        let hash = Self::parameter_hash(net);
        let mut hashes = vec![0u64; self.size() as usize];
        self.world.all_gather_into(&hash, &mut hashes[..]);
        let ranks: Vec<i32> = (0..self.size())
            .filter(|&r| hashes[r as usize] != hashes[0])
            .collect();
        if ranks.is_empty() {
            Ok(())
        } else {
            Err(Error::Diverged {
                step: self.steps,
                ranks,
            })
        }
    }

    /// Where the steps' time went since the last call, and starts counting again.
    pub fn take_timing(&mut self) -> Timing {
        std::mem::take(&mut self.timing)
    }

    /// One data-parallel training step on this rank's rows `x` and targets `t` of the global
    /// batch (see the [crate docs](crate)): the same update of `net` by `optimizer` on every
    /// rank, from the gradient of the global batch's mean loss, which it returns.
    ///
    /// Every rank must call it at the same step, with the same kind of network and optimiser.
    /// A batch that some rank's network refuses makes every rank return an `Err`, having
    /// changed nothing.
    pub fn train_step<N, O>(
        &mut self,
        net: &mut N,
        optimizer: &mut O,
        x: ndarray::ArrayView2<'_, T>,
        t: N::Targets<'_>,
    ) -> Result<T, Error>
    where
        N: Trainable<Elem = T> + ?Sized,
        O: Optimizer + ?Sized,
    {
        let started = Instant::now();
        let rank = self.rank();
        // 1. Every rank goes on, or every rank stops.
        let refused = net.check_batch(x, &t).err();
        let mine = [x.nrows() as i64, i64::from(refused.is_some())];
        let mut all = [0i64; 2];
        let checked = Instant::now();
        self.world
            .all_reduce_into(&mine[..], &mut all[..], SystemOperation::sum());
        self.timing.waiting += checked.elapsed();
        let [rows, refusals] = all;
        if let Some(source) = refused {
            return Err(Error::Network { rank, source });
        }
        if refusals > 0 {
            return Err(Error::PeerRefused {
                refused: refusals,
                size: self.size(),
            });
        }

        // 2. Gradients, bucketed and summed as the backward pass hands them over.
        self.send.resize(N::PARAMS, T::zero());
        self.recv.resize(N::PARAMS, T::zero());
        let (loss, handed, bucketing, waiting) =
            self.reduce_gradients(net, x, t, T::from_f64(x.nrows() as f64));
        let loss = loss.map_err(|source| Error::Network { rank, source })?;
        let all_handed = N::PARAM_NAMES.iter().all(|name| {
            self.slots
                .iter()
                .any(|(n, start)| n == name && *start != usize::MAX)
        });
        if handed != N::PARAM_NAMES.len() || !all_handed {
            // Every rank runs the same code: every rank finds this alike.
            return Err(Error::Handover {
                network: N::NAME,
                expected: N::PARAM_NAMES.len(),
                got: handed,
            });
        }
        self.timing.bucketing += bucketing;
        let wait_started = Instant::now();
        let mine = [loss.to_f64() * x.nrows() as f64];
        let mut total = [0.0f64];
        self.world
            .all_reduce_into(&mine[..], &mut total[..], SystemOperation::sum());
        self.timing.waiting += waiting + wait_started.elapsed();

        // 3. The global batch's gradient, and the same update everywhere.
        let scale = T::from_f64(1.0 / rows as f64);
        let (slots, recv) = (&self.slots, &self.recv);
        net.for_each_param_mut(&mut |p| {
            let start = slot_start(slots, p.name);
            let sums = &recv[start..start + p.grad.len()];
            for (g, &s) in p.grad.iter_mut().zip(sums) {
                *g = s * scale;
            }
        });
        optimizer.step(net);

        // 4. Running statistics: the ranks' mean.
        self.average_buffers(net);

        self.steps += 1;
        self.timing.steps += 1;
        self.timing.total += started.elapsed();
        if let Some(every) = self.check_every
            && self.steps.is_multiple_of(every)
        {
            self.check_identical(net)?;
        }
        Ok(T::from_f64(total[0] / rows as f64))
    }

    /// Runs `net`'s forward and backward passes, copying each parameter's gradient times
    /// `weight` into `send` as the pass hands it over, and summing each full bucket into `recv`
    /// by a non-blocking allreduce started at once. Returns the local loss, how many parameters
    /// were handed over, and the time spent bucketing and then waiting for the reductions.
    fn reduce_gradients<N: Trainable<Elem = T> + ?Sized>(
        &mut self,
        net: &mut N,
        x: ndarray::ArrayView2<'_, T>,
        t: N::Targets<'_>,
        weight: T,
    ) -> (chainrule_runtime::Result<T>, usize, Duration, Duration) {
        let DataParallel {
            world,
            bucket_bytes,
            send,
            recv,
            slots,
            ..
        } = self;
        let bucket_len = (*bucket_bytes / size_of::<T>()).max(1);
        slots.clear();
        mpi::request::scope(|scope| {
            let mut buckets = Buckets {
                world,
                scope,
                bucket_len,
                send: Some(&mut send[..]),
                recv: Some(&mut recv[..]),
                consumed: 0,
                filled: 0,
                pending: Vec::new(),
                bucketing: Duration::ZERO,
            };
            let loss = net.gradient_with(x, t, &mut |p| {
                let started = Instant::now();
                buckets.take(p, weight, slots);
                buckets.bucketing += started.elapsed();
            });
            let waited = Instant::now();
            // A bucket left open (a network that handed over fewer parameters than it has)
            // is summed too, so that every request completes.
            buckets.close();
            for request in buckets.pending.drain(..).flatten() {
                request.wait_without_status();
            }
            (loss, slots.len(), buckets.bucketing, waited.elapsed())
        })
    }

    /// Replaces every running statistic by its mean over the ranks.
    fn average_buffers<N: Network<Elem = T> + ?Sized>(&mut self, net: &mut N) {
        let (world, scratch) = (&self.world, &mut self.scratch);
        let share = T::from_f64(1.0 / f64::from(world.size()));
        net.for_each_buffer_mut(&mut |b| {
            scratch.clear();
            scratch.extend_from_slice(b.value);
            world.all_reduce_into(&scratch[..], b.value, SystemOperation::sum());
            b.value.iter_mut().for_each(|v| *v *= share);
        });
    }
}

/// The buckets of one step: what the backward pass has handed over and not yet sent.
struct Buckets<'a, 's, 'w, T: Equivalence> {
    world: &'w SimpleCommunicator,
    scope: &'s LocalScope<'a>,
    bucket_len: usize,
    /// What is not yet in a started reduction: the open bucket from its start.
    send: Option<&'a mut [T]>,
    recv: Option<&'a mut [T]>,
    /// How much of the buffers is in started reductions: where the open bucket starts.
    consumed: usize,
    /// How much of the open bucket is filled.
    filled: usize,
    pending: Vec<Option<Request<'a, [T], &'s LocalScope<'a>>>>,
    bucketing: Duration,
}

impl<'a, T: Element + Equivalence> Buckets<'a, '_, '_, T> {
    /// Copies `p`'s gradient times `weight` into the open bucket, and starts its reduction if
    /// that fills it (or ends the parameters).
    fn take(&mut self, p: ParamRef<'_, T>, weight: T, slots: &mut Vec<(&'static str, usize)>) {
        let start = self.consumed + self.filled;
        let open = self.send.as_deref_mut().unwrap_or_default();
        let Some(to) = open.get_mut(self.filled..self.filled + p.grad.len()) else {
            // More than the network's PARAMS: not summed; the caller reports it.
            slots.push((p.name, usize::MAX));
            return;
        };
        for (s, &g) in to.iter_mut().zip(p.grad) {
            *s = g * weight;
        }
        slots.push((p.name, start));
        self.filled += p.grad.len();
        let rest = open.len() - self.filled;
        if self.filled >= self.bucket_len || rest == 0 {
            self.close();
        }
        // Let the reductions already started move on (MPI progresses them inside its calls).
        for slot in &mut self.pending {
            if let Some(request) = slot.take() {
                *slot = request.test().err();
            }
        }
    }

    /// Starts the reduction of the open bucket, if it holds anything.
    fn close(&mut self) {
        if self.filled == 0 {
            return;
        }
        let (send, send_rest) = self
            .send
            .take()
            .unwrap_or_default()
            .split_at_mut(self.filled);
        let (recv, recv_rest) = self
            .recv
            .take()
            .unwrap_or_default()
            .split_at_mut(self.filled);
        self.send = Some(send_rest);
        self.recv = Some(recv_rest);
        self.consumed += self.filled;
        self.filled = 0;
        let send: &'a [T] = send;
        let request =
            self.world
                .immediate_all_reduce_into(self.scope, send, recv, SystemOperation::sum());
        self.pending.push(Some(request));
    }
}

/// Where the gradient of the parameter called `name` starts in the step's buffers.
fn slot_start(slots: &[(&'static str, usize)], name: &str) -> usize {
    slots
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, start)| start)
        .expect("every parameter was handed over (checked before)")
}

/// Rank `rank`'s rows of `rows` shared among `size` ranks.
fn shard(rows: usize, rank: usize, size: usize) -> Range<usize> {
    let (base, extra) = (rows / size, rows % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// FNV-1a over 64 bits.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn values<T: Element>(&mut self, values: &[T]) {
        for v in values {
            for byte in Element::to_f64(*v).to_bits().to_le_bytes() {
                self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shard;

    #[test]
    fn shards_cover_the_batch_in_order_and_differ_by_at_most_one() {
        for rows in 0..40 {
            for size in 1..9 {
                let parts: Vec<_> = (0..size).map(|r| shard(rows, r, size)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[size - 1].end, rows);
                for pair in parts.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                }
                let (min, max) = (
                    parts.iter().map(|p| p.len()).min().unwrap(),
                    parts.iter().map(|p| p.len()).max().unwrap(),
                );
                assert!(max - min <= 1, "{rows} rows on {size} ranks: {parts:?}");
            }
        }
    }
}
