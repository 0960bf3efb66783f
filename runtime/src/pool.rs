//! The worker threads that share the large matrix products (and the element-wise passes over
//! large matrices, and the optimisers' updates of large parameters).
//!
//! A product is split into as many parts as there are threads; the calling thread runs part 0
//! and waits for the workers to finish the others. Workers are started on first use and kept:
//! after finishing a part a worker spins for a short while (products of a training step come in
//! quick succession) and then sleeps until the next one, so sharing a product allocates nothing
//! and costs about a microsecond, not a thread start.
//!
//! The number of threads is [`threads`]: `CHAINRULE_THREADS` if set, else the cores this process
//! may run on. `CHAINRULE_THREADS=1` (or [`set_threads`]`(1)`) pins the products to the calling
//! thread, for comparisons.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

/// The thread count set by [`set_threads`]; 0 until it is called.
static CHOSEN: AtomicUsize = AtomicUsize::new(0);

/// Sets how many threads the large matrix products use from now on (at least 1), overriding
/// `CHAINRULE_THREADS`. Workers are started once, when a product first shares its work, so a
/// count larger than the one in force then is capped by it.
pub fn set_threads(count: usize) {
    CHOSEN.store(count.max(1), Ordering::Relaxed);
}

/// How many threads the large matrix products use: the last [`set_threads`], else
/// `CHAINRULE_THREADS`, else the number of cores this process may run on.
pub fn threads() -> usize {
    match CHOSEN.load(Ordering::Relaxed) {
        0 => from_environment(),
        count => count,
    }
}

fn from_environment() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        match std::env::var("CHAINRULE_THREADS") {
            Err(_) => cores,
            Ok(text) => match text.trim().parse::<usize>() {
                Ok(count) if count >= 1 => count,
                _ => {
                    eprintln!(
                        "chainrule: CHAINRULE_THREADS={text:?} is not a thread count (1 or more); \
                         using {cores}, the cores this process may run on"
                    );
                    cores
                }
            },
        }
    })
}

/// A part of a job: called with the part's index and the number of parts.
type Job<'a> = dyn Fn(usize, usize) + Sync + 'a;

struct Pool {
    /// Held while a job runs: one job at a time; a caller that finds it taken runs alone.
    busy: Mutex<()>,
    /// Bumped for every job; a worker runs a part when it sees a new value.
    epoch: AtomicUsize,
    /// Workers still running their part of the current job.
    pending: AtomicUsize,
    /// Whether a part of the current job panicked.
    panicked: AtomicBool,
    /// The current job, valid between a bump of `epoch` and `pending` reaching 0.
    job: UnsafeCell<Option<*const Job<'static>>>,
    /// How many parts the current job has.
    parts: AtomicUsize,
    workers: OnceLock<Vec<Thread>>,
}

// SAFETY: `job` is written only by the caller holding `busy`, before `epoch` is bumped (release),
// and read by workers after they see the new epoch (acquire) and before they decrement `pending`;
// the caller waits for `pending` to reach 0 before the job's borrow ends.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool {
    busy: Mutex::new(()),
    epoch: AtomicUsize::new(0),
    pending: AtomicUsize::new(0),
    panicked: AtomicBool::new(false),
    job: UnsafeCell::new(None),
    parts: AtomicUsize::new(0),
    workers: OnceLock::new(),
};

/// Runs `job(part, parts)` for every `part` in `0..parts`, where `parts` is at most [`threads`]:
/// part 0 on this thread, the others on workers. If another job is running (a product called
/// from inside a part, or from two threads at once), runs `job(0, 1)` here instead; a job must
/// therefore do all of the work when `parts` is 1.
pub fn run(parts: usize, job: &Job<'_>) {
    let parts = parts.min(threads());
    if parts <= 1 {
        return job(0, 1);
    }
    // A panic in an earlier job poisons the lock; the pool itself is fine, so take it anyway.
    let _busy = match POOL.busy.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => return job(0, 1),
    };
    let workers = POOL.workers.get_or_init(|| spawn(threads() - 1));
    let parts = parts.min(workers.len() + 1);
    // SAFETY: the lifetime is erased only until `pending` is back to 0 below, before `job`'s
    // borrow ends; no worker touches the job after decrementing `pending`.
    let erased: *const Job<'static> = unsafe { std::mem::transmute(job as *const Job<'_>) };
    // SAFETY: `busy` is held, and no worker reads `job` until the epoch is bumped.
    unsafe { *POOL.job.get() = Some(erased) };
    POOL.parts.store(parts, Ordering::Relaxed);
    POOL.pending.store(workers.len(), Ordering::Relaxed);
    POOL.epoch.fetch_add(1, Ordering::Release);
    for worker in workers {
        worker.unpark();
    }
    let mine = catch_unwind(AssertUnwindSafe(|| job(0, parts)));
    while POOL.pending.load(Ordering::Acquire) != 0 {
        std::hint::spin_loop();
    }
    // SAFETY: every worker is done with the job.
    unsafe { *POOL.job.get() = None };
    if let Err(panic) = mine {
        std::panic::resume_unwind(panic);
    }
    if POOL.panicked.swap(false, Ordering::Relaxed) {
        panic!("a worker thread panicked in its part of a shared job (its message is above)");
    }
}

/// Runs `f` on matching pieces of `values` and `other` (of equal length), split across the
/// threads when there are more than `piece` elements per thread, else on this thread alone.
pub fn zip_pieces<T: Send + Sync>(
    values: &mut [T],
    other: &[T],
    piece: usize,
    f: &(dyn Fn(&mut [T], &[T]) + Sync),
) {
    assert_eq!(values.len(), other.len(), "pieces of equal length");
    let len = values.len();
    let parts = len / piece.max(1);
    if parts <= 1 || threads() <= 1 {
        return f(values, other);
    }
    // Addresses as integers, so that the job may cross threads; each part rebuilds its own
    // disjoint piece.
    let (to, from) = (values.as_mut_ptr() as usize, other.as_ptr() as usize);
    run(parts, &|part, parts| {
        let (start, end) = (len * part / parts, len * (part + 1) / parts);
        // SAFETY: the pieces `start..end` of the parts are disjoint and inside both slices,
        // which the caller keeps borrowed until `run` returns.
        let (values, other) = unsafe {
            (
                std::slice::from_raw_parts_mut((to as *mut T).add(start), end - start),
                std::slice::from_raw_parts((from as *const T).add(start), end - start),
            )
        };
        f(values, other);
    });
}

/// Runs `f` on pieces of `out`'s rows, with the range of rows each piece covers (so that `f` can
/// take the same rows of its inputs), split across the threads when `out` has more than `piece`
/// elements per thread, else on this thread alone.
pub fn row_pieces<T: Send + Sync>(
    mut out: ndarray::ArrayViewMut2<'_, T>,
    piece: usize,
    f: &(dyn Fn(ndarray::ArrayViewMut2<'_, T>, std::ops::Range<usize>) + Sync),
) {
    let (rows, cols) = out.dim();
    let parts = (rows * cols / piece.max(1)).min(rows);
    let strides = out.strides();
    if parts <= 1 || threads() <= 1 || strides.iter().any(|&s| s < 0) {
        return f(out, 0..rows);
    }
    let (row_stride, col_stride) = (strides[0] as usize, strides[1] as usize);
    let ptr = out.as_mut_ptr() as usize;
    run(parts, &|part, parts| {
        let (start, end) = (rows * part / parts, rows * (part + 1) / parts);
        // SAFETY: the rows `start..end` of the parts are disjoint and inside `out`, which stays
        // borrowed until `run` returns; the strides are `out`'s own, non-negative.
        let piece = unsafe {
            ndarray::ArrayViewMut2::from_shape_ptr(
                ndarray::ShapeBuilder::strides((end - start, cols), (row_stride, col_stride)),
                (ptr as *mut T).add(start * row_stride),
            )
        };
        f(piece, start..end);
    });
}

fn spawn(count: usize) -> Vec<Thread> {
    (1..=count)
        .map(|index| {
            thread::Builder::new()
                .name(format!("chainrule-worker-{index}"))
                .spawn(move || work(index))
                .expect("starting a worker thread")
                .thread()
                .clone()
        })
        .collect()
}

/// A worker's life: wait for a new epoch, run its part (if the job has that many), report done.
fn work(index: usize) {
    let mut seen = 0;
    loop {
        let idle = Instant::now();
        let mut spins = 0u32;
        loop {
            let epoch = POOL.epoch.load(Ordering::Acquire);
            if epoch != seen {
                seen = epoch;
                break;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) && idle.elapsed() > SPIN {
                thread::park();
            } else {
                std::hint::spin_loop();
            }
        }
        let parts = POOL.parts.load(Ordering::Relaxed);
        if index < parts {
            // SAFETY: the epoch was bumped after the job was stored, and the caller keeps it alive
            // until `pending` is 0, which happens only after this part.
            let job = unsafe { (*POOL.job.get()).expect("a job is set while its epoch runs") };
            let result = catch_unwind(AssertUnwindSafe(|| unsafe { (*job)(index, parts) }));
            if result.is_err() {
                POOL.panicked.store(true, Ordering::Relaxed);
            }
        }
        POOL.pending.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once() {
        set_threads(2);
        for _ in 0..1000 {
            let hits: Vec<AtomicUsize> = (0..2).map(|_| AtomicUsize::new(0)).collect();
            run(2, &|part, parts| {
                let mine = if parts == 1 {
                    &hits[..]
                } else {
                    &hits[part..=part]
                };
                for hit in mine {
                    hit.fetch_add(1, Ordering::Relaxed);
                }
            });
            let counts: Vec<usize> = hits.iter().map(|h| h.load(Ordering::Relaxed)).collect();
            assert_eq!(counts, [1, 1]);
        }
    }

    #[test]
    fn zip_pieces_covers_every_element_once() {
        set_threads(2);
        for len in [0, 1, 999, 1000, 1001, 100_003] {
            let mut values: Vec<u64> = (0..len as u64).collect();
            let other: Vec<u64> = (0..len as u64).map(|i| 3 * i).collect();
            zip_pieces(&mut values, &other, 1000, &|values, other| {
                for (v, &o) in values.iter_mut().zip(other) {
                    *v += o + 1;
                }
            });
            assert!(
                values
                    .iter()
                    .enumerate()
                    .all(|(i, &v)| v == 4 * i as u64 + 1),
                "length {len}"
            );
        }
    }

    #[test]
    fn a_panicking_part_reaches_the_caller() {
        set_threads(2);
        let result = catch_unwind(|| {
            run(2, &|part, parts| {
                assert_ne!(part, parts - 1, "the last part fails")
            })
        });
        assert!(result.is_err());
        // The pool still shares work afterwards (other tests may hold it for a while, so try a
        // few times).
        let shared = (0..2000).any(|_| {
            let sum = AtomicUsize::new(0);
            run(2, &|part, _| {
                sum.fetch_add(part + 1, Ordering::Relaxed);
            });
            let both = sum.load(Ordering::Relaxed) == 3;
            if !both {
                std::thread::sleep(Duration::from_micros(500));
            }
            both
        });
        assert!(
            shared,
            "after a panic, no job was split between two threads"
        );
    }
}
