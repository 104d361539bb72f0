//! The on-flash state log from arbitrary bytes, through the public API: a
//! flash whose slots, trailers and TrustRoot copies are those of a device
//! with a trial pending (`fw-1` in A, `fw-2` in B), and whose state log (both
//! halves) is the input after its first byte (bytes past its end erased).
//! When the first byte is odd, every non-blank record's CRC-32 is made
//! valid, so mutations reach the record decoder behind the checksum. Then
//! `Device::open`,
//! `boot` (three times, to spend attempts), `confirm`, `ack_report`, with a
//! reopen after the first boot and at the end.
//!
//! Properties: no panic; `open` fails only as `NotProvisioned`; no flash
//! error ever (every append lands on erased bytes whatever the log held);
//! a booted slot holds the manifest its state records and is at or above
//! the floor; a boot that finds nothing is `NoBootableSlot`; what the
//! device appended reads back equal after a reopen (encode-then-decode of
//! the state record through the flash); the floor never goes down.
#![no_main]

use aloft_device::{Device, Error, Slot};
use aloft_fuzz::fixtures::{Sim, Stage, config, fixture, flash, layout, record, regions};
use libfuzzer_sys::fuzz_target;

/// What the public API shows of the state (a reopen must show the same).
fn view(dev: &Device<Sim>) -> impl PartialEq + core::fmt::Debug + use<> {
    (
        dev.active_slot(),
        dev.booted_slot(),
        dev.is_confirmed(),
        dev.trial(),
        dev.security_floor(),
        dev.time_floor(),
        dev.boot_count(),
        dev.install_progress(),
        dev.reports().collect::<Vec<_>>(),
        dev.running(),
        dev.server_clock_ahead(),
        dev.trust_status(aloft_device::Clock::None),
    )
}

fn reopen(dev: Device<Sim>) -> Device<Sim> {
    let before = view(&dev);
    let dev = Device::open(dev.into_flash(), layout(), config()).expect("reopens what it wrote");
    assert_eq!(view(&dev), before, "the state did not survive a reopen");
    dev
}

fn expected_digest(slot: Slot) -> aloft_protocol::Digest {
    let fx = fixture();
    match slot {
        Slot::A => fx.fw1.digest(),
        Slot::B => fx.fw2.digest(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let mut sim = flash(Stage::TrialPending);
    let (at, len) = regions::state_log();
    let log = &mut sim.bytes_mut()[at..at + len];
    log.fill(0xFF);
    let n = data.len().min(len);
    log[..n].copy_from_slice(&data[..n]);
    if flags & 1 == 1 {
        record::fix_crcs(log);
    }

    let mut dev = match Device::open(sim, layout(), config()) {
        Ok(dev) => dev,
        Err(e) => {
            assert_eq!(e, Error::NotProvisioned);
            return;
        }
    };
    // Each reopen re-verifies the TrustRoot copy (an ECDSA check), so the
    // state is read back after the first boot and at the end only.
    for round in 0..3 {
        let floor = dev.security_floor();
        match dev.boot() {
            Ok(booted) => {
                assert_eq!(booted.manifest.digest(), expected_digest(booted.slot));
                assert!(booted.manifest.security_version() >= dev.security_floor());
                assert_eq!(dev.booted_slot(), booted.slot);
                assert_eq!(dev.is_confirmed(), !booted.trial);
            }
            Err(e) => assert_eq!(e, Error::NoBootableSlot),
        }
        assert!(dev.security_floor() >= floor);
        if round == 0 {
            dev = reopen(dev);
        }
    }
    let floor = dev.security_floor();
    match dev.confirm() {
        Ok(()) => assert!(dev.is_confirmed()),
        Err(e) => assert_eq!(e, Error::NotInTrial),
    }
    assert!(dev.security_floor() >= floor);
    let first = dev.reports().next();
    if let Some(report) = first {
        // A crafted record may hold one id twice (a real device's ids come
        // from a counter); an ack drops one report.
        let queued = dev.reports().count();
        assert_eq!(dev.ack_report(report.id), Ok(true));
        assert_eq!(dev.reports().count(), queued - 1);
    }
    drop(reopen(dev));
});
