//! Peak heap of a full install, measured with a counting global allocator
//! (its own test binary, so no other test allocates concurrently), and proof
//! that the per-chunk path allocates nothing.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        COUNT.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same layout, caller's contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: caller's contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn reset() -> usize {
    let now = CURRENT.load(Ordering::SeqCst);
    PEAK.store(now, Ordering::SeqCst);
    now
}

#[test]
fn full_install_peak_heap_and_no_allocation_per_chunk() {
    let fx = Fixture::new();
    let old = fx.release("fw-1", 1, image(1000, 1));
    let new = fx.release("fw-2", 2, image(5000, 2));
    let mut dev = fx.provision(flash(), &old);
    // The caller's chunk buffer, allocated before measuring.
    let mut buf = vec![0u8; new.params.chunk_size as usize + aloft_protocol::payload::TAG_LEN];
    let chunks: Vec<Vec<u8>> = (0..new.chunks()).map(|i| new.chunk(i)).collect();

    let base = reset();
    let mut inst = begin(&mut dev, &new).unwrap();
    let mut per_chunk_allocs = 0;
    for c in &chunks {
        buf[..c.len()].copy_from_slice(c);
        let before = COUNT.load(Ordering::SeqCst);
        inst.write_chunk(&mut buf[..c.len()]).unwrap();
        per_chunk_allocs += COUNT.load(Ordering::SeqCst) - before;
    }
    inst.finish().unwrap();
    let peak = PEAK.load(Ordering::SeqCst) - base;
    println!(
        "peak heap of a full install ({} bytes, {} chunks) beyond the chunk buffer: {peak} bytes; \
         allocations on the per-chunk path: {per_chunk_allocs}",
        new.image.len(),
        chunks.len()
    );
    assert_eq!(per_chunk_allocs, 0, "the per-chunk path must not allocate");
    assert!(peak < 8 * 1024, "peak heap {peak} bytes");

    // The boot decision (manifest decode and verification) is bounded too.
    let base = reset();
    dev.boot().unwrap();
    println!(
        "peak heap of a boot decision: {} bytes",
        PEAK.load(Ordering::SeqCst) - base
    );
}
