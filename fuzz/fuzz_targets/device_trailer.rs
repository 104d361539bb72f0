//! A slot's manifest trailer from arbitrary bytes, through the public API:
//! the flash of a device with a trial pending (`fw-1` in A, `fw-2` in B)
//! whose slot A or B trailer (the first input byte picks) is the rest of the
//! input (bytes past its end erased). Then `Device::open` and `boot` until
//! the trial's attempts are spent.
//!
//! Properties: no panic, no flash error; a booted slot's manifest is
//! exactly the one its state recorded (an attacker's trailer never boots
//! unless it carries the recorded manifest's bytes); the untouched slot
//! keeps booting, so only a damaged slot A with no trial left ends in
//! `NoBootableSlot`; a trial that fails verification is rolled back with a
//! report.
#![no_main]

use aloft_device::{Device, Error, ReportKind, Slot};
use aloft_fuzz::fixtures::{Stage, config, fixture, flash, layout, regions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, trailer)) = data.split_first() else {
        return;
    };
    let slot = if pick & 1 == 0 { Slot::A } else { Slot::B };
    let mut sim = flash(Stage::TrialPending);
    let (at, len) = regions::trailer(slot);
    let area = &mut sim.bytes_mut()[at..at + len];
    area.fill(0xFF);
    let n = trailer.len().min(len);
    area[..n].copy_from_slice(&trailer[..n]);

    let mut dev = Device::open(sim, layout(), config()).expect("the state is untouched");
    let fx = fixture();
    for _ in 0..4 {
        match dev.boot() {
            Ok(booted) => {
                let want = match booted.slot {
                    Slot::A => fx.fw1.digest(),
                    Slot::B => fx.fw2.digest(),
                };
                assert_eq!(booted.manifest.digest(), want);
                if booted.slot != slot {
                    continue;
                }
            }
            Err(e) => {
                assert_eq!(e, Error::NoBootableSlot);
                assert_eq!(slot, Slot::A, "an intact slot A must boot");
            }
        }
    }
    if slot == Slot::B && dev.trial().is_none() && dev.active_slot() == Slot::A {
        // The trial ended: either it verified and ran out of attempts, or it
        // failed verification; both are reported as a rollback.
        assert!(dev.reports().any(|r| r.kind == ReportKind::RolledBack));
    }
});
