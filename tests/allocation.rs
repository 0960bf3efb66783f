//! Allocation counting: what a generated network allocates once its buffers are sized.
//!
//! The counter is global, so this test runs without libtest (`harness = false`): the harness's
//! own threads allocate now and then (4 allocations at a random moment, in a third to a half of
//! the runs here), which would count as the network's. The only threads here are this one and
//! the pool's workers, whose allocations do count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use chainrule::ndarray::Array2;
use chainrule::prelude::*;

/// The system allocator, counting allocations made while `COUNTING` is on.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How many allocations `f` makes, on any thread of this process.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    f();
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

network! {
    struct Book { affine(784, 50) -> relu -> affine(50, 10) -> softmax_cross_entropy }
}

network! {
    /// Wide enough for the packed product (more than 256 columns), which keeps packing buffers.
    struct Wide { affine(64, 300) -> relu -> affine(300, 10) -> softmax_cross_entropy }
}

network! {
    /// A small version of the book's convolutional net: a convolution's scratch and a max pool's
    /// argmax are kept between steps too.
    struct Conv {
        input(1, 12, 12) -> conv2d(1, 4, 3, pad = 1) -> relu -> max_pool(2) -> avg_pool(2)
            -> affine(36, 10) -> softmax_cross_entropy
    }
}

network! {
    /// Layers with a training mode: a batch normalisation's statistics and a dropout's mask are
    /// kept between steps, and evaluation passes run in between.
    struct Normed {
        input(2, 6, 6) -> conv2d(2, 3, 3) -> batchnorm -> relu -> flatten -> affine(48, 20)
            -> batchnorm -> relu -> dropout(0.5) -> affine(20, 10) -> softmax_cross_entropy
    }
}

/// Inputs in [0, 1) and labels for a batch.
fn batch(rows: usize, width: usize) -> (Array2<f32>, Vec<usize>) {
    let x = Array2::from_shape_fn((rows, width), |(i, j)| {
        ((i * 31 + j * 7) % 97) as f32 / 97.0
    });
    (x, (0..rows).map(|i| i % 10).collect())
}

/// One kind of training step.
type Step<'a, N> = &'a mut dyn FnMut(&mut N);

/// Allocations of ten training steps of each kind after a first one, on one thread and on two.
fn step_allocations<N>(mut net: N, rows: usize) -> Vec<(String, usize)>
where
    N: for<'t> Trainable<Elem = f32, Targets<'t> = &'t [usize]>,
{
    let (x, t) = batch(rows, N::INPUT);
    let mut counts = Vec::new();
    for threads in [1, 2] {
        chainrule::pool::set_threads(threads);
        let mut sgd = Sgd::new(0.1);
        let mut adam = Adam::new(0.001);
        let mut kinds: [(&str, Step<'_, N>); 4] = [
            ("sgd_step", &mut |net: &mut N| {
                net.sgd_step(x.view(), &t, 0.1).unwrap();
            }),
            ("gradient, then SGD", &mut |net: &mut N| {
                net.gradient(x.view(), &t).unwrap();
                sgd.step(net);
            }),
            ("gradient, then Adam", &mut |net: &mut N| {
                net.gradient(x.view(), &t).unwrap();
                adam.step(net);
            }),
            ("evaluation passes", &mut |net: &mut N| {
                net.infer(x.view()).unwrap();
                net.eval_loss(x.view(), &t).unwrap();
                net.forward(x.view()).unwrap();
            }),
        ];
        for (name, step) in kinds.iter_mut() {
            step(&mut net);
            let count = allocations(|| {
                for _ in 0..10 {
                    step(&mut net);
                }
            });
            counts.push((format!("{name}, {threads} thread(s)"), count));
        }
    }
    counts
}

/// Runs [`sized_buffers_are_reused`], unless the command line names tests and not this one
/// (`cargo test some_other_test`); a failed check panics, which fails the run.
fn main() {
    const NAME: &str = "sized_buffers_are_reused";
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--list") {
        println!("{NAME}: test");
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|arg| !arg.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|filter| NAME.contains(filter.as_str())) {
        return;
    }
    sized_buffers_are_reused();
    println!("test {NAME} ... ok");
}

fn sized_buffers_are_reused() {
    let mut net = Book::default();
    let one = Array2::from_elem((1, 784), 0.5f32);
    let two = Array2::from_elem((2, 784), 0.5f32);

    // At batch 1 the forward pass uses the one-row product, in each precision; the buffers and
    // the weights' copies, once made by a first pass, are reused: nothing is allocated.
    for precision in [
        WeightPrecision::Full,
        WeightPrecision::Half,
        WeightPrecision::BFloat16,
    ] {
        if net.set_one_sample_weights(precision).is_err() {
            // No 16-bit path here (no AVX-512).
            continue;
        }
        net.forward(one.view()).unwrap();
        let count = allocations(|| {
            for _ in 0..100 {
                net.forward(one.view()).unwrap();
            }
        });
        assert_eq!(
            count, 0,
            "100 forward passes at batch 1 ({precision:?} weights) allocated {count} times"
        );
    }
    net.set_one_sample_weights(WeightPrecision::Full).unwrap();

    // Another batch size resizes the buffers, which allocates; back at batch 1 they are resized
    // once more, and then nothing is allocated again.
    assert!(
        allocations(|| {
            net.forward(two.view()).unwrap();
        }) > 0
    );
    net.forward(one.view()).unwrap();
    assert_eq!(
        allocations(|| {
            net.forward(one.view()).unwrap();
        }),
        0
    );

    // Training steps: with AVX-512 every product runs in chainrule's kernels, whose buffers (and
    // worker threads) are made on first use; without it matrixmultiply packs into fresh buffers.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        for (net, counts) in [
            (
                "784-50-10, batch 100",
                step_allocations(Book::default(), 100),
            ),
            ("64-300-10, batch 32", step_allocations(Wide::default(), 32)),
            (
                "conv-pool-affine, batch 20",
                step_allocations(Conv::default(), 20),
            ),
            (
                "batchnorm and dropout, batch 16",
                step_allocations(Normed::default(), 16),
            ),
        ] {
            for (kind, count) in counts {
                assert_eq!(
                    count, 0,
                    "{net}: ten steps of {kind} allocated {count} times"
                );
            }
        }
        return;
    }
    eprintln!("no AVX-512 here: the training-step part of this test was skipped");
}
