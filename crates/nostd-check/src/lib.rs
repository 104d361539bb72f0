//! The no_std proof: a bare-metal-shaped crate that links Aloft's device-side
//! crates and fails to build if `std` creeps into their dependency graph.
//!
//! # How it works
//!
//! - The crate is `#![no_std]` and defines the two things only a final
//!   artifact defines: a `#[panic_handler]` and a `#[global_allocator]`.
//! - It is built as a `staticlib` (see Cargo.toml). A staticlib is a final
//!   artifact, so rustc resolves every lang item for it, yet no linker runs,
//!   so it builds on the host target (`x86_64-unknown-linux-gnu`) without
//!   an embedded target installed.
//! - If any crate in the graph (ours or a dependency, through a feature
//!   switched on by accident) links `std`, std's own panic handler meets
//!   ours and the build fails with
//!   `error[E0152]: found duplicate lang item 'panic_impl'`.
//! - The profiles use `panic = "abort"`: there is no unwinding runtime
//!   without std.
//! - It is its own workspace (`[workspace]` in Cargo.toml, listed in the root
//!   `exclude`), with its own Cargo.lock, so its panic strategy never leaks
//!   into the main workspace and `cargo test --workspace` never builds it.
//!
//! `cargo xtask ci` builds it with
//! `cargo build --locked --manifest-path crates/nostd-check/Cargo.toml
//! --target-dir target/nostd-check`.
//!
//! [`aloft_nostd_check`] calls into each linked crate so its code is really
//! compiled into the archive, not just named.
#![no_std]

extern crate alloc;
extern crate aloft_protocol;
// ---- aloft-device: add `extern crate aloft_device;` here when it lands ----

use core::hint::black_box;

use aloft_protocol::keys::Domain;
use aloft_protocol::{DeviceId, Digest, PublicKey, Signature, envelope};

/// The P-256 base point, SEC1 compressed: a valid public key to parse.
const P256_GENERATOR: [u8; 33] = [
    0x03, 0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40,
    0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2,
    0x96,
];

/// Exercises hashing, allocation, protobuf decoding and ECDSA verification
/// from `aloft-protocol`; returns a bit mask of the expected outcomes (all
/// set = `0b1111`). Exported unmangled so the code is kept in the archive.
#[unsafe(no_mangle)]
pub extern "C" fn aloft_nostd_check() -> u32 {
    let mut ok = 0;
    // SHA-256.
    let digest = Digest::of(black_box(b"aloft"));
    if digest.as_bytes()[0] != 0 || digest.as_bytes()[1] != 0 {
        ok |= 1;
    }
    // A validating newtype that allocates.
    if DeviceId::new(black_box("device-1")).is_ok() {
        ok |= 1 << 1;
    }
    // Protobuf decoding through prost.
    let Ok(env) = envelope::decode_envelope(black_box(&[])) else {
        return ok;
    };
    // ECDSA P-256 verification: a zero signature must be refused.
    if let Ok(key) = PublicKey::from_sec1(black_box(&P256_GENERATOR)) {
        ok |= 1 << 2;
        let sig = Signature::from_slice(&[0u8; Signature::LEN]);
        let refused = sig.map_or(true, |s| {
            key.verify(Domain::ReleaseManifest, &env.payload, &s)
                .is_err()
        });
        if refused && envelope::verify_threshold(&env, Domain::ReleaseManifest, &[key], 1).is_err()
        {
            ok |= 1 << 3;
        }
    }
    // ---- aloft-device: exercise something from it here ----
    ok
}

/// Halts: there is nowhere to report a panic on bare metal.
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// A never-freeing bump allocator over a static arena: enough to prove that
/// an allocator is all the protocol crates need from the platform.
mod bump {
    // `unsafe` is unavoidable here: `GlobalAlloc` is an unsafe trait and the
    // arena is shared mutable memory. Allowed only in this module.
    #![allow(unsafe_code)]

    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::UnsafeCell;
    use core::ptr;
    use core::sync::atomic::{AtomicUsize, Ordering};

    const ARENA_SIZE: usize = 64 * 1024;

    /// The allocator: an arena and the offset of its first free byte.
    pub struct Bump {
        arena: UnsafeCell<[u8; ARENA_SIZE]>,
        next: AtomicUsize,
    }

    // SAFETY: bytes of the arena are handed out at most once, claimed
    // through the atomic `next`, so no two threads share a region.
    unsafe impl Sync for Bump {}

    // SAFETY: every returned block lies inside the arena, is aligned as
    // requested and is never returned twice; null signals exhaustion.
    unsafe impl GlobalAlloc for Bump {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let base = self.arena.get().cast::<u8>();
            let mut current = self.next.load(Ordering::Relaxed);
            loop {
                let addr = base as usize + current;
                let start = current + (addr.wrapping_neg() & (layout.align() - 1));
                let Some(end) = start.checked_add(layout.size()) else {
                    return ptr::null_mut();
                };
                if end > ARENA_SIZE {
                    return ptr::null_mut();
                }
                match self.next.compare_exchange_weak(
                    current,
                    end,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    // SAFETY: `start <= end <= ARENA_SIZE`, inside the arena.
                    Ok(_) => return unsafe { base.add(start) },
                    Err(seen) => current = seen,
                }
            }
        }

        unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
    }

    #[global_allocator]
    static ALLOCATOR: Bump = Bump {
        arena: UnsafeCell::new([0; ARENA_SIZE]),
        next: AtomicUsize::new(0),
    };
}
