//! Measuring tools: repetition statistics, a counting global allocator for
//! peak heap, and stack painting for peak stack.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Median of `values` (mean of the middle two for an even count); 0 if empty.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Nearest-rank percentile `p` (0-100) of `values`; 0 if empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Smallest and largest of `values`.
pub fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// Runs `f` and returns its result and wall time in seconds.
pub fn timed<R>(f: impl FnOnce() -> R) -> (R, f64) {
    let start = Instant::now();
    let r = f();
    (r, start.elapsed().as_secs_f64())
}

/// Formats a byte rate as MiB/s.
pub fn mib_s(bytes_per_sec: f64) -> String {
    format!("{:.0} MiB/s", bytes_per_sec / f64::from(1u32 << 20))
}

// ----- heap -----

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

/// A global allocator that forwards to the system allocator and counts live
/// bytes, their peak, and allocation calls. Installed by the binary.
#[derive(Debug)]
pub struct CountingAlloc;

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments and
// only updates counters.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        grew(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        grew(layout.size());
        // SAFETY: the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        if new_size >= layout.size() {
            grew(new_size - layout.size());
        } else {
            CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Heap measurement: peak live bytes and allocation calls of `f`, beyond
/// what was live when it started. Only meaningful with [`CountingAlloc`]
/// installed and no other thread allocating.
pub fn heap_peak<R>(f: impl FnOnce() -> R) -> (R, HeapUse) {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let calls = ALLOCATIONS.load(Ordering::SeqCst);
    let r = f();
    let peak = PEAK.load(Ordering::SeqCst).saturating_sub(base);
    let calls = ALLOCATIONS.load(Ordering::SeqCst) - calls;
    (r, HeapUse { peak, calls })
}

/// Allocation calls made so far (for counting those of a code section).
pub fn allocation_calls() -> usize {
    ALLOCATIONS.load(Ordering::SeqCst)
}

/// What [`heap_peak`] measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapUse {
    /// Peak live bytes beyond the starting point.
    pub peak: usize,
    /// Allocation calls (alloc, alloc_zeroed, realloc).
    pub calls: usize,
}

// ----- stack -----

/// Stack of the measuring thread.
const THREAD_STACK: usize = 2 << 20;
/// Bytes painted below the measuring frame (must stay well inside the stack).
const PAINT: usize = 1 << 20;
const PATTERN: u8 = 0xA5;

/// Paints `PAINT` bytes of stack just below the caller's frame; returns the
/// painted range `[low, high)`.
#[inline(never)]
#[allow(unsafe_code)]
fn paint() -> (usize, usize) {
    let mut area = MaybeUninit::<[u8; PAINT]>::uninit();
    let p = area.as_mut_ptr().cast::<u8>();
    for i in 0..PAINT {
        // SAFETY: `p + i` is inside `area`, which this frame owns.
        unsafe { std::ptr::write_volatile(p.add(i), PATTERN) };
    }
    black_box(&area);
    (p as usize, p as usize + PAINT)
}

/// Bytes of `[low, high)` overwritten since [`paint`], counted from the first
/// changed byte at the low end up to `high`.
#[inline(never)]
#[allow(unsafe_code)]
fn scan(low: usize, high: usize) -> usize {
    for addr in low..high {
        // SAFETY: the address lies in this thread's stack mapping, below the
        // calling frame (painted earlier and not released to the system); it
        // is only read, as a plain byte. This is the usual stack-painting
        // technique: outside Rust's object model, sound on the platforms the
        // bench runs on (Linux, where a thread stack is one mapping).
        let byte = unsafe { std::ptr::read_volatile(addr as *const u8) };
        if byte != PATTERN {
            return high - addr;
        }
    }
    0
}

#[inline(never)]
fn call<R>(f: impl FnOnce() -> R) -> R {
    black_box(f())
}

fn painted_run<R: Send>(f: impl FnOnce() -> R + Send) -> (R, usize) {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn_scoped(s, move || {
                let (low, high) = paint();
                let r = call(f);
                let used = scan(low, high);
                (r, used)
            })
            .expect("spawning the stack-measuring thread")
            .join()
            .expect("the stack-measuring thread panicked")
    })
}

/// Peak stack used by `f`, in bytes: `f` runs on a fresh thread whose stack
/// below the calling frame is painted with a pattern first; afterwards the
/// deepest overwritten byte gives the depth. The depth of an empty closure
/// (call overhead) is subtracted. Accurate to a few dozen bytes; `f` must use
/// less than 1 MiB.
pub fn stack_peak<R: Send>(f: impl FnOnce() -> R + Send) -> (R, usize) {
    let ((), overhead) = painted_run(|| ());
    let (r, used) = painted_run(f);
    (r, used.saturating_sub(overhead))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(min_max(&[2.0, -1.0, 5.0]), (-1.0, 5.0));
    }

    #[inline(never)]
    fn uses_stack(n: usize) -> u8 {
        let mut buf = [0u8; 64 * 1024];
        for (i, b) in buf.iter_mut().enumerate().take(n) {
            *b = black_box(i as u8);
        }
        black_box(&buf);
        buf[n / 2]
    }

    #[test]
    fn stack_painting_sees_a_known_frame() {
        let (_, used) = stack_peak(|| uses_stack(64 * 1024));
        assert!(
            (64 * 1024..64 * 1024 + 4096).contains(&used),
            "measured {used} bytes for a 64 KiB frame"
        );
        let (_, small) = stack_peak(|| black_box(1u8));
        assert!(small < 1024, "measured {small} bytes for a trivial closure");
    }
}
