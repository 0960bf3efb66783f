//! What must not allocate in a training loop: an optimiser's steps after the first, and mini-batches
//! after the first. A global allocator counts this thread's allocations.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use chainrule_runtime::data::{Batches, Dataset, Sampling};
use chainrule_runtime::optim::Optim;
use common::Toy;
use ndarray::Array2;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the thread's counter may be gone while the thread shuts down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed on to `System` unchanged; the counting touches only a
// thread-local `Cell`, which does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How many times `f` allocated on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn optimiser_steps_after_the_first_do_not_allocate() {
    for name in Optim::NAMES {
        let mut opt = Optim::from_name(name).unwrap().with_weight_decay(1e-3);
        let mut net = Toy::<f32>::new([1.0, 2.0], 0.5);
        net.set_grads([0.5, -1.0, 2.0]);
        let first = allocations(|| opt.step(&mut net));
        let later = allocations(|| {
            for _ in 0..10 {
                opt.step(&mut net);
            }
        });
        assert_eq!(later, 0, "{name} allocated after its first step");
        if *name != "sgd" {
            assert!(
                first > 0,
                "{name}: the state is allocated on the first step"
            );
        }
    }
}

#[test]
fn batches_after_construction_do_not_allocate() {
    let images = Array2::from_shape_fn((23, 5), |(i, j)| (i * 5 + j) as f32);
    let data = Dataset::new(images, (0..23).map(|i| i % 10).collect()).unwrap();
    for sampling in [
        Sampling::Shuffle,
        Sampling::ShuffleDropLast,
        Sampling::WithReplacement,
    ] {
        let mut batches = Batches::with_sampling(&data, 4, 9, sampling).unwrap();
        let mut rows = 0;
        let n = allocations(|| {
            // Three epochs, across their boundaries and reshuffles.
            for _ in 0..3 {
                while let Some((x, t)) = batches.next_batch() {
                    rows += x.nrows() + t.len();
                }
            }
        });
        assert_eq!(n, 0, "{sampling:?} allocated");
        assert!(rows > 0);
    }
}

#[test]
fn activation_kernels_do_not_allocate() {
    use chainrule_runtime::kernels::{
        GradMode, elu_backward, elu_forward, leaky_relu_backward, leaky_relu_forward,
        softmax_backward, softmax_forward,
    };
    // A small batch, and one large enough to be split between threads (the pool's workers start
    // at the first split, so each shape runs once before counting).
    for (m, n) in [(3, 7), (301, 700)] {
        let x = Array2::from_shape_fn((m, n), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0);
        let dy = x.mapv(|v| 0.1 * v);
        let mut y = Array2::zeros((m, n));
        let mut dx = Array2::zeros((m, n));
        let pass = |y: &mut Array2<f32>, dx: &mut Array2<f32>| {
            for mode in [GradMode::Set, GradMode::Add] {
                softmax_forward(x.view(), y.view_mut());
                softmax_backward(y.view(), dy.view(), dx.view_mut(), mode);
                leaky_relu_forward(x.view(), y.view_mut(), 0.01);
                leaky_relu_backward(y.view(), dy.view(), dx.view_mut(), mode, 0.01);
                elu_forward(x.view(), y.view_mut(), 1.0);
                elu_backward(y.view(), dy.view(), dx.view_mut(), mode, 1.0);
            }
        };
        pass(&mut y, &mut dx);
        let allocated = allocations(|| pass(&mut y, &mut dx));
        assert_eq!(allocated, 0, "the activations allocated on a {m}×{n} batch");
    }
}
