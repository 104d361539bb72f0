//! Architecture invariant: nothing on the per-chunk data path allocates.
//!
//! A counting global allocator (its own test binary, since a global allocator
//! is per binary) counts the allocations made by the current thread while
//! `ChunkDecryptor` is built and decrypts a multi-chunk payload.
//!
//! Run with `--features std` (encryption needs `sign`).
#![cfg(feature = "sign")]
// A `GlobalAlloc` impl is unsafe by definition; it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use aloft_protocol::payload::{ChunkDecryptor, PayloadParams, encrypt_payload};
use aloft_protocol::{ContentKey, Digest, NoncePrefix};

struct Counting;

thread_local! {
    // Const-initialised and without a destructor: touching it never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with` fails only during thread teardown; nothing to count then.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; counting touches only a const-initialised thread-local `Cell`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by this thread while `f` runs.
fn allocations_during<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (ALLOCATIONS.with(Cell::get) - before, out)
}

#[test]
fn the_counter_sees_allocations() {
    // Without this the zero below could come from a counter that never counts.
    let (n, v) = allocations_during(|| std::hint::black_box(vec![1u8; 100]));
    assert!(n >= 1);
    drop(v);
}

#[test]
fn decrypting_a_payload_allocates_nothing() {
    let key = ContentKey::from_bytes([3; 32]);
    let image: Vec<u8> = (0..10 * 1024 + 123).map(|i| i as u8).collect();
    let params = PayloadParams {
        image_len: image.len() as u64,
        chunk_size: 1024,
        nonce_prefix: NoncePrefix::from_bytes([1; 7]),
        image_digest: Digest::of(&image),
    };
    let mut payload = encrypt_payload(&key, &params, &image).unwrap();
    let mut accepted = 0u64;
    let mut checksum = 0u64;

    let (n, finished) = allocations_during(|| {
        let mut dec = ChunkDecryptor::new(&key, params, 0).unwrap();
        // A refused chunk (failed tag) allocates nothing.
        let mut tampered = [0u8; 1024 + 16];
        assert!(dec.decrypt_next(&mut tampered).is_err());
        let mut rest: &mut [u8] = &mut payload;
        while let Some(len) = params.chunk_len(dec.next_index()) {
            let (chunk, tail) = rest.split_at_mut(len);
            rest = tail;
            let plaintext = dec.decrypt_next(chunk).unwrap();
            accepted += plaintext.len() as u64;
            checksum = plaintext
                .iter()
                .fold(checksum, |a, &b| a.wrapping_mul(31) ^ u64::from(b));
        }
        // Nor does a chunk past the end.
        let mut extra = [0u8; 32];
        assert!(dec.decrypt_next(&mut extra).is_err());
        dec.is_finished()
    });

    assert!(finished);
    assert_eq!(params.chunk_count(), 11);
    assert_eq!(accepted, image.len() as u64);
    let expected = image
        .iter()
        .fold(0u64, |a, &b| a.wrapping_mul(31) ^ u64::from(b));
    assert_eq!(checksum, expected);
    assert_eq!(n, 0, "{n} allocations on the decryption path");
}
