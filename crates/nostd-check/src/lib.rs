//! The no_std proof: a bare-metal-shaped crate that links Aloft's device-side
//! crates (`aloft-protocol`, `aloft-device`, `aloft-session`) and fails to build if `std` creeps into their dependency graph.
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
extern crate aloft_device;
extern crate aloft_protocol;
extern crate aloft_session;
// More no_std crates: add `extern crate` lines here and exercise them below.

use core::hint::black_box;

use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};

use aloft_device::{Device, DeviceConfig, Layout, Partition};
use aloft_protocol::keys::Domain;
use aloft_protocol::pb::server_to_device::Kind;
use aloft_protocol::{DeviceId, DeviceNonce, Digest, PublicKey, Signature, envelope};
use aloft_session::Millis;
use aloft_session::device::{Action, DeviceSession, Snapshot, Timings};
use aloft_session::server::ServerSession;

/// The P-256 base point, SEC1 compressed: a valid public key to parse.
const P256_GENERATOR: [u8; 33] = [
    0x03, 0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40,
    0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2,
    0x96,
];

/// Exercises hashing, allocation, protobuf decoding and ECDSA verification
/// from `aloft-protocol`; returns a bit mask of the expected outcomes (all
/// set = `0b1111`), plus bit 4 when `aloft-device` refuses to open a blank
/// flash, bits 5 and 6 when `aloft-session`'s machines behave, bit 7 when
/// the signature-only chunk verifier refuses a forged chunk (all set =
/// `0b1111_1111`). Exported unmangled so the code is kept in the archive.
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
    // aloft-device: opening instantiates the state log and layout code over
    // a real `NorFlash`; a blank flash holds no state record.
    let config = DeviceConfig::new("nostd-check", "host");
    let layout = Layout {
        state: Partition::new(0, 4 * SECTOR, SECTOR),
        slot_a: Partition::new(4 * SECTOR, 2 * SECTOR, SECTOR),
        slot_b: Partition::new(6 * SECTOR, 2 * SECTOR, SECTOR),
        manifest_area: SECTOR,
        trust_area: SECTOR,
    };
    if Device::open(RamFlash::blank(), black_box(layout), config).is_err() {
        ok |= 1 << 4;
    }
    // aloft-session: the device side answers a challenge with a hello.
    let Ok(id) = DeviceId::new(black_box("device-1")) else {
        return ok;
    };
    let mut device = DeviceSession::new(
        id,
        DeviceNonce::from_bytes([7; 16]),
        Snapshot::default(),
        Timings::default(),
        Millis(0),
    );
    let challenge = aloft_protocol::pb::ServerToDevice {
        kind: Some(Kind::Challenge(aloft_protocol::pb::Challenge {
            nonce: alloc::vec![1; 32],
            server_time: 0,
        })),
    };
    if device
        .handle_message(Millis(1), black_box(challenge))
        .is_ok()
        && matches!(device.poll_action(), Some(Action::Send(m)) if m.seq == 1)
    {
        ok |= 1 << 5;
    }
    // The server side refuses an empty first message.
    let server = ServerSession::<PublicKey>::new([3; 32]);
    if server
        .claimed_device(&aloft_protocol::pb::SignedDeviceMessage::default())
        .is_err()
    {
        ok |= 1 << 6;
    }
    // Signature-only payloads: a chunk whose proof does not reach the root.
    let params = aloft_protocol::signed_chunks::SignedChunkParams {
        image_len: 600,
        chunk_size: 256,
        root: Digest::of(b"root"),
    };
    if let Ok(mut verifier) = aloft_protocol::signed_chunks::ChunkVerifier::new(params, 0) {
        let chunk = [0u8; 256 + 2 * 32];
        if verifier.verify_next(black_box(&chunk)).is_err() {
            ok |= 1 << 7;
        }
    }
    ok
}

/// Exercises the device core's whole update path (offer verification, the
/// installer of this build's payload profile, boot), so that `cargo xtask
/// bench --only device-install` can size it: with the `decrypt` feature the
/// content key is unwrapped and chunks decrypted; without it only
/// signature-only chunks are proven. Every input is opaque to the
/// optimiser, so none of the path can be folded away. Returns 0 when the
/// blank flash is refused (the expected outcome).
#[unsafe(no_mangle)]
pub extern "C" fn aloft_nostd_update_path(
    chunk: &mut [u8; 2 * SECTOR as usize],
    secret: &[u8; 32],
) -> u32 {
    use aloft_device::{Clock, SessionBinding};
    use aloft_protocol::{UnixTime, pb};
    let config = DeviceConfig::new("nostd-check", "host");
    let layout = Layout {
        state: Partition::new(0, 4 * SECTOR, SECTOR),
        slot_a: Partition::new(4 * SECTOR, 2 * SECTOR, SECTOR),
        slot_b: Partition::new(6 * SECTOR, 2 * SECTOR, SECTOR),
        manifest_area: SECTOR,
        trust_area: SECTOR,
    };
    let Ok(mut device) = Device::open(black_box(RamFlash::blank()), layout, config) else {
        return 0;
    };
    let Ok(id) = DeviceId::new(black_box("device-1")) else {
        return 1;
    };
    let nonce = DeviceNonce::from_bytes(*black_box(&[7; 16]));
    let directive: pb::SignedEnvelope = black_box(pb::SignedEnvelope::default());
    let manifest: pb::SignedEnvelope = black_box(pb::SignedEnvelope::default());
    let binding = SessionBinding {
        device_id: &id,
        nonce: &nonce,
    };
    let Ok(offer) = device.verify_offer(&directive, &manifest, binding, Clock::At(UnixTime(0)))
    else {
        return 2;
    };
    #[cfg(feature = "decrypt")]
    let begun = {
        let Ok(secret) = aloft_protocol::SecretKey::from_slice(secret) else {
            return 3;
        };
        match offer.update().directive().content_key() {
            Some(wrapped) => {
                match aloft_protocol::wrap::unwrap_content_key(wrapped, &secret, &id) {
                    Ok(key) => device.begin_install(&offer, &key),
                    Err(_) => return 4,
                }
            }
            None => device.begin_signature_only_install(&offer),
        }
    };
    #[cfg(not(feature = "decrypt"))]
    let begun = {
        let _ = secret;
        device.begin_signature_only_install(&offer)
    };
    let Ok(mut installer) = begun else {
        return 5;
    };
    while installer.write_chunk(&mut chunk[..]).is_ok() {}
    if installer.finish().is_err() {
        return 6;
    }
    match device.boot() {
        Ok(_) => 7,
        Err(_) => 8,
    }
}

/// Sector size of [`RamFlash`].
const SECTOR: u32 = 1024;

/// A NOR flash in RAM: eight 1 KiB sectors, erased to `0xff`, writes only
/// clear bits.
struct RamFlash([u8; 8 * SECTOR as usize]);

impl RamFlash {
    fn blank() -> Self {
        Self([0xff; 8 * SECTOR as usize])
    }

    fn range(&self, offset: u32, len: usize) -> Result<core::ops::Range<usize>, NorFlashErrorKind> {
        let start = offset as usize;
        match start.checked_add(len) {
            Some(end) if end <= self.0.len() => Ok(start..end),
            _ => Err(NorFlashErrorKind::OutOfBounds),
        }
    }
}

impl ErrorType for RamFlash {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for RamFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let range = self.range(offset, bytes.len())?;
        bytes.copy_from_slice(&self.0[range]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.0.len()
    }
}

impl NorFlash for RamFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = SECTOR as usize;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if !from.is_multiple_of(SECTOR) || !to.is_multiple_of(SECTOR) || to < from {
            return Err(NorFlashErrorKind::NotAligned);
        }
        let range = self.range(from, (to - from) as usize)?;
        self.0[range].fill(0xff);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        if !(offset as usize).is_multiple_of(Self::WRITE_SIZE)
            || !bytes.len().is_multiple_of(Self::WRITE_SIZE)
        {
            return Err(NorFlashErrorKind::NotAligned);
        }
        let range = self.range(offset, bytes.len())?;
        for (cell, byte) in self.0[range].iter_mut().zip(bytes) {
            *cell &= byte;
        }
        Ok(())
    }
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
