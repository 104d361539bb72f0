//! Installer, boot decision and firmware API: the happy path on several flash
//! geometries, and one negative test per refusal.

mod common;

use aloft_device::sim::SimFlash;
use aloft_device::{Clock, Device, Error, Layout, Partition, ReportDetail, ReportKind, Slot};
use aloft_protocol::Error as P;
use aloft_protocol::{SecurityVersion, UnixTime};
use common::*;

fn setup() -> (Fixture, Release, Release, Device<Sim>) {
    let fx = Fixture::new();
    let old = fx.release("fw-1", 1, image(3000, 1));
    let new = fx.release("fw-2", 2, image(2999, 2));
    let dev = fx.provision(flash(), &old);
    (fx, old, new, dev)
}

fn slot_bytes(dev: Device<Sim>, slot: Slot, len: usize) -> (Vec<u8>, Sim) {
    let p = *dev.layout().slot(slot);
    let f = dev.into_flash();
    (
        f.bytes()[p.offset as usize..p.offset as usize + len].to_vec(),
        f,
    )
}

fn reopen(f: Sim) -> Device<Sim> {
    Device::open(f, layout(), config()).unwrap()
}

#[test]
fn install_trial_confirm_happy_path() {
    let (_fx, old, new, mut dev) = setup();
    let b = dev.boot().unwrap();
    assert_eq!((b.slot, b.trial), (Slot::A, false));
    assert_eq!(b.manifest.release_id(), old.manifest.release_id());
    install(&mut dev, &new).unwrap();
    assert_eq!(dev.trial(), Some((Slot::B, 3)));
    let b = dev.boot().unwrap();
    assert_eq!((b.slot, b.trial), (Slot::B, true));
    assert_eq!(
        dev.trial(),
        Some((Slot::B, 2)),
        "attempt spent before start"
    );
    assert_eq!(
        dev.security_floor(),
        SecurityVersion(1),
        "floor unchanged before confirm"
    );
    dev.confirm().unwrap();
    assert_eq!(dev.security_floor(), SecurityVersion(2));
    assert_eq!(dev.active_slot(), Slot::B);
    let kinds: Vec<_> = dev.reports().map(|r| r.kind).collect();
    assert_eq!(kinds, [ReportKind::Installed, ReportKind::Confirmed]);
    let (bytes, f) = slot_bytes(dev, Slot::B, new.image.len());
    assert_eq!(bytes, new.image);
    let mut dev = reopen(f);
    let b = dev.boot().unwrap();
    assert_eq!((b.slot, b.trial), (Slot::B, false));
}

#[test]
fn reports_leave_only_when_acknowledged() {
    let (_fx, _old, new, mut dev) = setup();
    install(&mut dev, &new).unwrap();
    let r = dev.reports().next().unwrap();
    assert_eq!(&r.release_id, new.manifest.release_id());
    let f = dev.into_flash();
    let mut dev = reopen(f);
    assert_eq!(dev.reports().count(), 1, "report survives a reboot");
    assert!(
        !dev.ack_report(aloft_device::ReportId(r.id.0 + 100))
            .unwrap()
    );
    assert_eq!(dev.reports().count(), 1);
    assert!(dev.ack_report(r.id).unwrap());
    let f = dev.into_flash();
    assert_eq!(reopen(f).reports().count(), 0);
}

#[test]
fn trial_without_confirm_reverts_once_with_one_rollback_report() {
    let (_fx, _old, new, mut dev) = setup();
    install(&mut dev, &new).unwrap();
    for left in [2, 1, 0] {
        let b = dev.boot().unwrap();
        assert_eq!((b.slot, b.trial), (Slot::B, true));
        assert_eq!(dev.trial(), Some((Slot::B, left)));
    }
    for _ in 0..3 {
        let b = dev.boot().unwrap();
        assert_eq!((b.slot, b.trial), (Slot::A, false));
        let rb: Vec<_> = dev
            .reports()
            .filter(|r| r.kind == ReportKind::RolledBack)
            .collect();
        assert_eq!(rb.len(), 1);
        assert_eq!(rb[0].detail, ReportDetail::AttemptsExhausted);
        assert_eq!(&rb[0].release_id, new.manifest.release_id());
    }
    assert_eq!(dev.security_floor(), SecurityVersion(1));
    assert_eq!(dev.confirm(), Ok(()), "old image is already confirmed");
}

#[test]
fn confirm_outside_a_trial_is_refused_or_a_no_op() {
    let (_fx, _old, new, mut dev) = setup();
    dev.boot().unwrap();
    assert_eq!(dev.confirm(), Ok(()));
    assert_eq!(dev.security_floor(), SecurityVersion(1));
    install(&mut dev, &new).unwrap();
    // Marked pending but the old image still runs: confirming now must not
    // promote the unstarted image nor raise the floor.
    assert_eq!(dev.confirm(), Ok(()));
    assert_eq!(dev.security_floor(), SecurityVersion(1));
    assert_eq!(dev.active_slot(), Slot::A);
}

// ---- refusals at begin ----

#[test]
fn refuses_wrong_hardware_and_product() {
    let (fx, _old, _new, mut dev) = setup();
    let hw = fx.release_with("fw-hw", 2, image(1000, 3), |m| {
        m.hardware = vec!["rev-z".into()]
    });
    let e = begin(&mut dev, &hw).err();
    assert_eq!(e, Some(Error::Protocol(P::IncompatibleHardware)));
    let pr = fx.release_with("fw-pr", 2, image(1000, 3), |m| m.product = "other".into());
    let e = begin(&mut dev, &pr).err();
    assert_eq!(e, Some(Error::Protocol(P::WrongProduct)));
    assert!(dev.install_progress().is_none());
}

#[test]
fn refuses_security_version_below_floor() {
    let fx = Fixture::new();
    let old = fx.release("fw-5", 5, image(1000, 1));
    let mut dev = fx.provision(flash(), &old);
    let down = fx.release("fw-4", 4, image(1000, 2));
    let e = begin(&mut dev, &down).err();
    assert!(
        matches!(
            e,
            Some(Error::Protocol(P::SecurityVersionBelowFloor { .. }))
        ),
        "{e:?}"
    );
    let same = fx.release_with("fw-5b", 5, image(1000, 2), |m| m.version = "1.5.1".into());
    assert!(begin(&mut dev, &same).is_ok());
}

#[test]
fn refuses_image_larger_than_the_slot() {
    let (fx, _old, _new, mut dev) = setup();
    let cap = layout().image_capacity(Slot::B) as usize;
    let big = fx.release("fw-big", 2, image(cap + 1, 3));
    let e = begin(&mut dev, &big).err();
    assert!(
        matches!(e, Some(Error::Protocol(P::ImageTooLarge { .. }))),
        "{e:?}"
    );
    let fits = fx.release("fw-fit", 2, image(cap, 3));
    install(&mut dev, &fits).unwrap();
}

#[test]
fn refuses_a_manifest_other_than_the_one_the_directive_names() {
    let (fx, _old, new, dev) = setup();
    let other = fx.release("fw-3", 3, image(500, 9));
    let e = accept_parts(
        &dev,
        &new.directive,
        &other.manifest_env,
        Clock::At(UnixTime(NOW)),
    )
    .err();
    assert_eq!(e, Some(Error::Protocol(P::ManifestMismatch)));
}

#[test]
fn refuses_a_second_concurrent_install_and_resumes_the_same() {
    let (fx, _old, new, mut dev) = setup();
    let other = fx.release("fw-3", 3, image(500, 9));
    {
        let mut inst = begin(&mut dev, &new).unwrap();
        for i in 0..6 {
            let mut c = new.chunk(i);
            inst.write_chunk(&mut c).unwrap();
        }
    } // connection lost
    let e = begin(&mut dev, &other).err();
    assert_eq!(e, Some(Error::InstallInProgress));
    let (rel, _, next) = dev.install_progress().unwrap();
    assert_eq!(&rel, new.manifest.release_id());
    assert_eq!(next, 4, "progress persisted at the 1 KiB sector boundary");
    let inst = begin(&mut dev, &new).unwrap();
    assert_eq!(inst.next_chunk(), 4);
    drop(inst);
    install(&mut dev, &new).unwrap();
    dev.abort_install().unwrap();
    assert!(begin(&mut dev, &other).is_err());
}

#[test]
fn progress_is_persisted_at_the_configured_interval() {
    let (_fx, _old, new, mut dev) = setup();
    // The default for this 5 KiB slot of 1 KiB sectors: one sector.
    assert_eq!(dev.progress_interval(Slot::B), 1024);
    // Rounded up to whole sectors.
    dev.set_progress_interval(1500);
    assert_eq!(dev.progress_interval(Slot::B), 2048);
    let chunk = new.params.chunk_size as usize;
    assert_eq!(chunk, 256);
    let records = |dev: &Device<Sim>| dev.flash().ops();
    let mut inst = begin(&mut dev, &new).unwrap();
    for i in 0..7 {
        inst.write_chunk(&mut new.chunk(i)).unwrap();
    }
    drop(inst);
    let (_, _, next) = dev.install_progress().unwrap();
    assert_eq!(next, 0, "no record at the 1 KiB sector boundary");
    let before = records(&dev);
    let mut inst = begin(&mut dev, &new).unwrap();
    assert_eq!(inst.next_chunk(), 0);
    for i in 0..9 {
        inst.write_chunk(&mut new.chunk(i)).unwrap();
    }
    drop(inst);
    let (_, _, next) = dev.install_progress().unwrap();
    assert_eq!(next, 8, "one record at the 2 KiB boundary");
    // 9 chunks: 3 sector erases, 9 writes, 1 record.
    assert_eq!(records(&dev) - before, 3 + 9 + 1);
    // The resume repeats from the durable point and completes the image.
    let mut inst = begin(&mut dev, &new).unwrap();
    assert_eq!(inst.next_chunk(), 8);
    for i in 8..new.chunks() {
        inst.write_chunk(&mut new.chunk(i)).unwrap();
    }
    inst.finish().unwrap();
    let b = dev.boot().unwrap();
    assert_eq!((b.slot, b.trial), (Slot::B, true));
    let (bytes, _) = slot_bytes(dev, Slot::B, new.image.len());
    assert_eq!(bytes, new.image);
}

#[test]
fn default_progress_interval_is_a_sixteenth_of_the_slot_up_to_64_kib() {
    let fx = Fixture::new();
    let old = fx.release("fw-1", 1, image(3000, 1));
    let at = |slot_kib: u32| {
        let slot = slot_kib * 1024;
        let l = Layout {
            state: Partition::new(0, 8192, 1024),
            slot_a: Partition::new(8192, slot, 1024),
            slot_b: Partition::new(8192 + slot, slot, 1024),
            manifest_area: 1024,
            trust_area: 1024,
        };
        let f = Sim::uniform((8 + 2 * slot_kib) as usize);
        let mut dev =
            Device::provision(f, l, config(), &fx.trust, &old.image, &old.envelope).unwrap();
        let default = dev.progress_interval(Slot::B);
        dev.set_progress_interval(0);
        let zero = dev.progress_interval(Slot::B);
        dev.set_progress_interval(u32::MAX);
        (default, zero, dev.progress_interval(Slot::B))
    };
    // 255 KiB of image: 15.9 KiB, rounded up to 16 sectors.
    assert_eq!(at(256), (16 * 1024, 1024, 255 * 1024));
    // 2047 KiB of image: capped at 64 KiB.
    assert_eq!(at(2048), (64 * 1024, 1024, 2047 * 1024));
}

#[test]
fn abort_clears_the_install_and_reports() {
    let (_fx, _old, new, mut dev) = setup();
    drop(begin(&mut dev, &new).unwrap());
    dev.abort_install().unwrap();
    assert!(dev.install_progress().is_none());
    let r = dev.reports().next().unwrap();
    assert_eq!(
        (r.kind, r.detail),
        (ReportKind::InstallFailed, ReportDetail::Aborted)
    );
}

#[test]
fn refuses_install_while_a_trial_is_pending() {
    let (fx, _old, new, mut dev) = setup();
    install(&mut dev, &new).unwrap();
    let next = fx.release("fw-3", 3, image(500, 9));
    let e = begin(&mut dev, &next).err();
    assert_eq!(e, Some(Error::TrialPending));
}

// ---- refusals per chunk and at finish ----

#[test]
fn tampered_chunk_is_refused_and_nothing_of_it_reaches_flash() {
    let (_fx, _old, new, mut dev) = setup();
    let mut inst = begin(&mut dev, &new).unwrap();
    for i in 0..6 {
        let mut c = new.chunk(i);
        inst.write_chunk(&mut c).unwrap();
    }
    drop(inst);
    let before = dev.into_flash();
    let mut dev = reopen(before.clone());
    let mut inst = begin(&mut dev, &new).unwrap();
    assert_eq!(inst.next_chunk(), 4);
    let mut c = new.chunk(4);
    c[10] ^= 1;
    assert_eq!(
        inst.write_chunk(&mut c),
        Err(Error::Protocol(P::ChunkAuthentication { index: 4 }))
    );
    let mut c = new.chunk(4);
    let n = c.len();
    c[n - 1] ^= 1;
    assert_eq!(
        inst.write_chunk(&mut c),
        Err(Error::Protocol(P::ChunkAuthentication { index: 4 }))
    );
    // Out of order (chunk 2 instead of 1) is also refused.
    let mut c2 = new.chunk(5);
    assert!(inst.write_chunk(&mut c2).is_err());
    drop(inst);
    let after = dev.into_flash();
    assert_eq!(
        after.bytes(),
        before.bytes(),
        "no byte of the refused chunks was written"
    );
    assert_eq!(after.ops(), before.ops(), "not even an erase");
}

#[test]
fn endless_data_is_refused_at_the_cap() {
    let (_fx, _old, new, mut dev) = setup();
    let mut inst = begin(&mut dev, &new).unwrap();
    let mut p = None;
    for i in 0..new.chunks() {
        let mut c = new.chunk(i);
        p = Some(inst.write_chunk(&mut c).unwrap());
    }
    assert!(p.unwrap().complete);
    // The server keeps streaming: a re-sent last chunk and garbage.
    let mut extra = new.chunk(new.chunks() - 1);
    assert_eq!(
        inst.write_chunk(&mut extra),
        Err(Error::Protocol(P::PayloadTooLong))
    );
    let mut junk = vec![0u8; 272];
    assert_eq!(
        inst.write_chunk(&mut junk),
        Err(Error::Protocol(P::PayloadTooLong))
    );
    inst.finish().unwrap();
    let cap_end = new.image.len().next_multiple_of(4);
    let p = *dev.layout().slot(Slot::B);
    let trailer = (p.end() - dev.layout().trailer_len(Slot::B)) as usize;
    let f = dev.into_flash();
    let slot = &f.bytes()[p.offset as usize..trailer];
    assert!(
        slot[cap_end..].iter().all(|&b| b == 0xFF),
        "nothing written past the image"
    );
}

#[test]
fn finish_before_the_last_chunk_is_refused() {
    let (_fx, _old, new, mut dev) = setup();
    let mut inst = begin(&mut dev, &new).unwrap();
    let mut c = new.chunk(0);
    inst.write_chunk(&mut c).unwrap();
    assert_eq!(inst.finish(), Err(Error::Incomplete));
    assert_eq!(dev.trial(), None);
}

#[test]
fn digest_mismatch_at_finish_does_not_mark_the_slot() {
    let (fx, _old, _new, mut dev) = setup();
    // A release whose signed digest does not match its (validly encrypted)
    // image: every chunk authenticates, only the whole-image check catches it.
    let img = image(2000, 4);
    let mut bad = fx.release("fw-bad", 2, img.clone());
    let mut wrong = img;
    wrong[1500] ^= 0xFF;
    bad.payload.clear();
    for (i, part) in wrong.chunks(256).enumerate() {
        let mut buf = part.to_vec();
        buf.extend_from_slice(&[0; 16]);
        aloft_protocol::payload::encrypt_chunk(&bad.key, &bad.params, i as u32, &mut buf).unwrap();
        bad.payload.extend_from_slice(&buf);
    }
    assert_eq!(install(&mut dev, &bad), Err(Error::DigestMismatch));
    assert_eq!(dev.trial(), None);
    assert!(dev.install_progress().is_none());
    let r = dev.reports().next().unwrap();
    assert_eq!(
        (r.kind, r.detail),
        (ReportKind::InstallFailed, ReportDetail::DigestMismatch)
    );
    let b = dev.boot().unwrap();
    assert_eq!(b.slot, Slot::A);
}

#[test]
fn never_writes_the_active_slot() {
    let (fx, old, new, mut dev) = setup();
    install(&mut dev, &new).unwrap();
    dev.boot().unwrap();
    dev.confirm().unwrap();
    // Now B is active; the next install must go to A, leaving B intact.
    let third = fx.release("fw-3", 3, image(1234, 7));
    let pb_ = *dev.layout().slot(Slot::B);
    let f = dev.into_flash();
    let b_before = f.bytes()[pb_.offset as usize..pb_.end() as usize].to_vec();
    let mut dev = reopen(f);
    assert_eq!(dev.inactive_slot(), Slot::A);
    install(&mut dev, &third).unwrap();
    let f = dev.into_flash();
    assert_eq!(
        &f.bytes()[pb_.offset as usize..pb_.end() as usize],
        &b_before[..]
    );
    let _ = old;
}

// ---- boot-time verification (TOCTOU, threat 16) ----

fn tamper_and_boot(offset_in_slot: impl Fn(&Layout) -> usize) -> (Fixture, Device<Sim>, Release) {
    let (fx, _old, new, mut dev) = setup();
    install(&mut dev, &new).unwrap();
    let at = dev.layout().slot(Slot::B).offset as usize + offset_in_slot(dev.layout());
    let mut f = dev.into_flash();
    f.bytes_mut()[at] ^= 0x01;
    (fx, reopen(f), new)
}

#[test]
fn image_modified_after_install_stays_on_old_image() {
    let (_fx, mut dev, new) = tamper_and_boot(|_| 777);
    let b = dev.boot().unwrap();
    assert_eq!((b.slot, b.trial), (Slot::A, false));
    let r: Vec<_> = dev
        .reports()
        .filter(|r| r.kind == ReportKind::RolledBack)
        .collect();
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].detail, &r[0].release_id),
        (ReportDetail::VerificationFailed, new.manifest.release_id())
    );
    assert_eq!(dev.trial(), None);
}

#[test]
fn manifest_modified_after_install_stays_on_old_image() {
    let (_fx, mut dev, _new) = tamper_and_boot(|l| (l.image_capacity(Slot::B) + 4 + 20) as usize);
    let b = dev.boot().unwrap();
    assert_eq!(b.slot, Slot::A);
}

#[test]
fn another_validly_signed_release_swapped_into_the_slot_is_refused() {
    let (fx, _old, new, mut dev) = setup();
    install(&mut dev, &new).unwrap();
    // Replace image and manifest of slot B with another signed release.
    let other = fx.release("fw-9", 9, image(800, 5));
    let l = *dev.layout();
    let mut f = dev.into_flash();
    let p = l.slot(Slot::B);
    let t = (p.end() - l.trailer_len(Slot::B)) as usize;
    f.bytes_mut()[p.offset as usize..p.end() as usize].fill(0xFF);
    f.bytes_mut()[p.offset as usize..p.offset as usize + 800].copy_from_slice(&other.image);
    f.bytes_mut()[t..t + 4].copy_from_slice(&(other.envelope.len() as u32).to_le_bytes());
    f.bytes_mut()[t + 4..t + 4 + other.envelope.len()].copy_from_slice(&other.envelope);
    let mut dev = reopen(f);
    let b = dev.boot().unwrap();
    assert_eq!(b.slot, Slot::A);
}

#[test]
fn corrupted_active_slot_falls_back_to_the_previous_confirmed_one() {
    let (_fx, _old, new, mut dev) = setup();
    install(&mut dev, &new).unwrap();
    dev.boot().unwrap();
    dev.confirm().unwrap();
    let at = dev.layout().slot(Slot::B).offset as usize + 5;
    let mut f = dev.into_flash();
    f.bytes_mut()[at] ^= 0x80;
    let mut dev = reopen(f);
    // Old image has security version 1 < floor 2: it must not be started.
    assert_eq!(dev.boot().err(), Some(Error::NoBootableSlot));
}

#[test]
fn corrupted_active_slot_uses_other_confirmed_image_at_or_above_floor() {
    let fx = Fixture::new();
    let old = fx.release("fw-2a", 2, image(1000, 1));
    let new = fx.release_with("fw-2b", 2, image(1100, 2), |m| m.version = "1.2.1".into());
    let mut dev = fx.provision(flash(), &old);
    install(&mut dev, &new).unwrap();
    dev.boot().unwrap();
    dev.confirm().unwrap();
    let at = dev.layout().slot(Slot::B).offset as usize + 5;
    let mut f = dev.into_flash();
    f.bytes_mut()[at] ^= 0x80;
    let mut dev = reopen(f);
    let b = dev.boot().unwrap();
    assert_eq!(
        (b.slot, b.manifest.release_id().as_str()),
        (Slot::A, "fw-2a")
    );
}

#[test]
fn neither_slot_verifies_is_a_typed_error() {
    let (_fx, _old, _new, dev) = setup();
    let at = dev.layout().slot(Slot::A).offset as usize;
    let mut f = dev.into_flash();
    f.bytes_mut()[at] ^= 1;
    let mut dev = reopen(f);
    assert_eq!(dev.boot().err(), Some(Error::NoBootableSlot));
}

#[test]
fn expired_manifest_still_boots() {
    let fx = Fixture::new();
    let old = fx.release_with("fw-1", 1, image(900, 1), |m| {
        m.created_at = 10;
        m.expires_at = 20;
    });
    let mut dev = fx.provision(flash(), &old);
    let b = dev.boot().unwrap();
    assert_eq!(b.manifest.expires_at(), aloft_protocol::UnixTime(20));
}

// ---- geometries ----

fn cycle<const W: usize, const E: usize>(flash: SimFlash<W, E>, layout: Layout) {
    let fx = Fixture::new();
    let old = fx.release("fw-1", 1, image(5001, 1));
    let new = fx.release("fw-2", 2, image(7777, 2));
    let mut dev = Device::provision(
        flash,
        layout,
        config(),
        &fx.trust,
        &old.image,
        &old.envelope,
    )
    .unwrap();
    assert_eq!(dev.boot().unwrap().slot, Slot::A);
    install(&mut dev, &new).unwrap();
    let b = dev.boot().unwrap();
    assert_eq!((b.slot, b.trial), (Slot::B, true));
    dev.confirm().unwrap();
    let p = *dev.layout().slot(Slot::B);
    let mut dev = Device::open(dev.into_flash(), layout, config()).unwrap();
    assert_eq!(dev.boot().unwrap().slot, Slot::B);
    let f = dev.into_flash();
    assert_eq!(
        &f.bytes()[p.offset as usize..p.offset as usize + new.image.len()],
        &new.image[..]
    );
}

#[test]
fn works_with_write_size_1() {
    let l = Layout {
        state: Partition::new(0, 8192, 1024),
        slot_a: Partition::new(8192, 16384, 1024),
        slot_b: Partition::new(24576, 16384, 1024),
        manifest_area: 1024,
        trust_area: 1024,
    };
    cycle(SimFlash::<1, 1024>::uniform(40), l);
}

#[test]
fn works_with_write_size_32_and_64k_sectors() {
    // State: one 64 KiB sector per log half and per TrustRoot copy.
    let l = Layout {
        state: Partition::new(0, 262144, 65536),
        slot_a: Partition::new(262144, 131072, 65536),
        slot_b: Partition::new(393216, 131072, 65536),
        manifest_area: 4096,
        trust_area: 4096,
    };
    cycle(SimFlash::<32, 65536>::uniform(8), l);
}

#[test]
fn works_with_odd_write_size_and_non_uniform_sectors() {
    // Four 1.5 KiB sectors for the state (a log half and a TrustRoot copy
    // each), then 12 KiB sectors for the slots (each slot: one sector of
    // image, one of manifest trailer).
    let sim2 =
        SimFlash::<12, 1536>::with_sectors(&[1536, 1536, 1536, 1536, 12288, 12288, 12288, 12288]);
    let l2 = Layout {
        state: Partition::new(0, 6144, 1536),
        slot_a: Partition::new(6144, 24576, 12288),
        slot_b: Partition::new(30720, 24576, 12288),
        manifest_area: 1024,
        trust_area: 1024,
    };
    cycle(sim2, l2);
}

#[test]
fn layout_validation_refuses_bad_maps() {
    type F = SimFlash<4, 1024>;
    let good = layout();
    assert!(good.validate::<F>(20480).is_ok());
    let bad = |l: Layout, why: &str| {
        assert!(
            matches!(l.validate::<F>(20480), Err(Error::InvalidLayout(_))),
            "{why}"
        );
    };
    let mut l = good;
    l.slot_b.offset = 10240;
    bad(l, "overlap");
    let mut l = good;
    l.state = Partition::new(0, 4096, 1024);
    bad(
        l,
        "state too small for two records per half beside the TrustRoot copies",
    );
    let mut l = good;
    l.trust_area = 4096;
    bad(l, "TrustRoot copies leave no room for the log");
    let mut l = good;
    l.trust_area = 256;
    bad(l, "TrustRoot area below 512 bytes");
    let mut l = good;
    l.slot_a.sector_size = 512;
    bad(l, "below ERASE_SIZE");
    assert!(
        matches!(good.validate::<F>(16384), Err(Error::InvalidLayout(_))),
        "beyond flash"
    );
}

/// A layout must match the flash's real erase sectors: a state partition
/// declared with 1 KiB sectors inside 2 KiB physical sectors validates
/// against ERASE_SIZE alone, but erasing one log half would erase part of
/// the other. Provisioning refuses it.
#[test]
fn provisioning_refuses_a_layout_that_splits_physical_sectors() {
    let fx = Fixture::new();
    let old = fx.release("fw-1", 1, image(900, 1));
    // 2 KiB physical sectors under the state, 1 KiB under the slots.
    let mut sectors = vec![2048u32; 4];
    sectors.extend([1024; 12]);
    let split = Sim::with_sectors(&sectors);
    let e = Device::provision(
        split,
        layout(),
        config(),
        &fx.trust,
        &old.image,
        &old.envelope,
    )
    .err();
    assert!(
        matches!(e, Some(Error::InvalidLayout(why)) if why.contains("physical erase sector")),
        "{e:?}"
    );
    // The same layout on a flash whose sectors match is provisioned.
    let mut dev = fx.provision(flash(), &old);
    assert_eq!(dev.boot().unwrap().slot, Slot::A);
    // A state partition on whole 2 KiB sectors works on the split flash.
    let mut sectors = vec![2048u32; 4];
    sectors.extend([1024; 12]);
    let l = Layout {
        state: Partition::new(0, 8192, 2048),
        trust_area: 2048,
        ..layout()
    };
    let dev = Device::provision(
        Sim::with_sectors(&sectors),
        l,
        config(),
        &fx.trust,
        &old.image,
        &old.envelope,
    );
    assert!(dev.is_ok(), "{:?}", dev.err());
}

#[test]
fn unprovisioned_flash_is_a_typed_error() {
    assert_eq!(
        Device::open(flash(), layout(), config()).err(),
        Some(Error::NotProvisioned)
    );
}
