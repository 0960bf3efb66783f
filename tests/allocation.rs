//! Allocation counting: what a generated network allocates once its buffers are sized.

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

/// How many allocations `f` makes. The counter is global, so this file has a single test: no
/// other test thread allocates while it counts.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    f();
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

network! {
    struct Book { affine(784, 50) -> relu -> affine(50, 10) -> softmax_cross_entropy }
}

#[test]
fn sized_buffers_are_reused() {
    let mut net = Book::default();
    let one = Array2::from_elem((1, 784), 0.5f32);
    let two = Array2::from_elem((2, 784), 0.5f32);

    // At batch 1 the forward pass uses the one-row product, and the buffers, once sized, are
    // reused: nothing is allocated.
    net.forward(one.view()).unwrap();
    let count = allocations(|| {
        for _ in 0..100 {
            net.forward(one.view()).unwrap();
        }
    });
    assert_eq!(
        count, 0,
        "100 forward passes at batch 1 allocated {count} times"
    );

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
}
