//! Capability profiles: signature-only releases install, boot and confirm
//! with every check of an encrypted one; a device that requires encryption
//! refuses a signature-only offer before it writes anything; a device that
//! cannot decrypt refuses an encrypted one; a tampered signature-only chunk
//! never reaches flash; a signature-only install resumes.

mod common;

use aloft_device::{Error, PayloadPolicy, ReportKind, Slot};
use aloft_protocol::Error as P;
use aloft_protocol::SecurityVersion;
use aloft_protocol::pb::PayloadEncoding;
use common::*;

fn signature_only(fx: &Fixture) -> Release {
    fx.signature_only_release("fw-2", 2, image(2999, 2), 384)
}

#[test]
fn a_signature_only_release_installs_boots_and_confirms() {
    for policy in [
        PayloadPolicy::EncryptedOrSignatureOnly,
        PayloadPolicy::SignatureOnly,
    ] {
        let fx = Fixture::new();
        let old = fx.release("fw-1", 1, image(3000, 1));
        let new = signature_only(&fx);
        let mut dev = fx.provision_with(flash(), &old, config().with_payloads(policy));
        dev.boot().unwrap();
        install(&mut dev, &new).unwrap();
        let b = dev.boot().unwrap();
        assert_eq!((b.slot, b.trial), (Slot::B, true), "{policy:?}");
        dev.confirm().unwrap();
        assert_eq!(dev.security_floor(), SecurityVersion(2));
        let kinds: Vec<_> = dev.reports().map(|r| r.kind).collect();
        assert_eq!(kinds, [ReportKind::Installed, ReportKind::Confirmed]);
        let p = *dev.layout().slot(Slot::B);
        let f = dev.into_flash();
        assert_eq!(
            &f.bytes()[p.offset as usize..p.offset as usize + new.image.len()],
            new.image.as_slice()
        );
    }
}

#[test]
fn a_device_that_requires_encryption_refuses_a_signature_only_offer_before_writing() {
    let fx = Fixture::new();
    let old = fx.release("fw-1", 1, image(3000, 1));
    let new = signature_only(&fx);
    let mut dev = fx.provision(flash(), &old);
    dev.boot().unwrap();
    assert_eq!(dev.config().payloads, PayloadPolicy::RequireEncrypted);
    let before = dev.flash().bytes().to_vec();
    let ops = dev.flash().ops();
    let err = accept(&dev, &new).unwrap_err();
    assert_eq!(
        err,
        Error::PayloadRefused {
            offered: PayloadEncoding::SignatureOnly,
            policy: PayloadPolicy::RequireEncrypted
        }
    );
    assert!(
        err.to_string().contains("requires encrypted releases"),
        "{err}"
    );
    assert_eq!(dev.flash().ops(), ops, "not one flash operation");
    assert_eq!(dev.flash().bytes(), before.as_slice());
    assert_eq!(dev.install_progress(), None);
    assert_eq!(dev.reports().count(), 0);
}

#[test]
fn the_installer_rechecks_the_policy() {
    // An offer a permissive device verified, handed to a strict one with the
    // same TrustRoot: the installer refuses it too, before writing.
    let fx = Fixture::new();
    let old = fx.release("fw-1", 1, image(3000, 1));
    let new = signature_only(&fx);
    let permissive = fx.provision_with(flash(), &old, permissive_config());
    let offer = accept(&permissive, &new).unwrap();
    let mut strict = fx.provision(flash(), &old);
    let ops = strict.flash().ops();
    assert!(matches!(
        strict.begin_signature_only_install(&offer),
        Err(Error::PayloadRefused { .. })
    ));
    assert_eq!(strict.flash().ops(), ops);
    assert_eq!(strict.install_progress(), None);
}

#[test]
fn a_device_that_cannot_decrypt_refuses_an_encrypted_offer() {
    let fx = Fixture::new();
    let old = fx.signature_only_release("fw-1", 1, image(3000, 1), 256);
    let new = fx.release("fw-2", 2, image(2999, 2));
    let mut dev = fx.provision_with(
        flash(),
        &old,
        config().with_payloads(PayloadPolicy::SignatureOnly),
    );
    dev.boot().unwrap();
    let ops = dev.flash().ops();
    let err = accept(&dev, &new).unwrap_err();
    assert_eq!(
        err,
        Error::PayloadRefused {
            offered: PayloadEncoding::Encrypted,
            policy: PayloadPolicy::SignatureOnly
        }
    );
    assert!(err.to_string().contains("cannot decrypt"), "{err}");
    assert_eq!(dev.flash().ops(), ops);
}

#[test]
fn each_install_call_takes_only_its_encoding() {
    let fx = Fixture::new();
    let old = fx.release("fw-1", 1, image(3000, 1));
    let sig = signature_only(&fx);
    let enc = fx.release("fw-3", 3, image(2000, 3));
    let mut dev = fx.provision_with(flash(), &old, permissive_config());
    let offer = accept(&dev, &sig).unwrap();
    assert_eq!(
        dev.begin_install(&offer, &sig.key).unwrap_err(),
        Error::Protocol(P::InvalidField(
            "content key (given for a signature-only release)"
        ))
    );
    let offer = accept(&dev, &enc).unwrap();
    assert_eq!(
        dev.begin_signature_only_install(&offer).unwrap_err(),
        Error::Protocol(P::InvalidField(
            "content key (missing for an encrypted release)"
        ))
    );
    assert_eq!(dev.install_progress(), None);
}

#[test]
fn a_tampered_signature_only_chunk_never_reaches_flash() {
    let fx = Fixture::new();
    let old = fx.release("fw-1", 1, image(3000, 1));
    let new = signature_only(&fx);
    let mut dev = fx.provision_with(flash(), &old, permissive_config());
    dev.boot().unwrap();
    let slot = *dev.layout().slot(Slot::B);
    let mut inst = begin(&mut dev, &new).unwrap();
    let mut c0 = new.chunk(0);
    inst.write_chunk(&mut c0).unwrap();
    for at in [0, 200, 383, 384, 384 + 40] {
        let mut c1 = new.chunk(1);
        c1[at] ^= 0x80;
        assert_eq!(
            inst.write_chunk(&mut c1).unwrap_err(),
            Error::Protocol(P::ChunkAuthentication { index: 1 }),
            "flip at {at}"
        );
        assert_eq!(inst.next_chunk(), 1);
    }
    drop(inst);
    // Chunk 0 may be partly buffered; nothing of chunk 1 was written: the
    // slot past chunk 0 is still erased.
    let bytes = dev.flash().bytes();
    let past = slot.offset as usize + 384 + 4;
    assert!(
        bytes[past..past + 384].iter().all(|&b| b == 0xFF),
        "no byte of the refused chunk reached flash"
    );
}

#[test]
fn a_signature_only_install_resumes_at_its_durable_chunk() {
    let fx = Fixture::new();
    let old = fx.release("fw-1", 1, image(3000, 1));
    let new = fx.signature_only_release("fw-2", 2, image(4900, 2), 384);
    let mut dev = fx.provision_with(flash(), &old, permissive_config());
    dev.boot().unwrap();
    dev.set_progress_interval(1024);
    {
        let mut inst = begin(&mut dev, &new).unwrap();
        for i in 0..8 {
            inst.write_chunk(&mut new.chunk(i)).unwrap();
        }
    } // connection lost
    let (_, _, durable) = dev.install_progress().unwrap();
    assert!(durable > 0, "progress was persisted");
    let f = dev.into_flash();
    let mut dev = aloft_device::Device::open(f, layout(), permissive_config()).unwrap();
    let inst = begin(&mut dev, &new).unwrap();
    assert!(inst.next_chunk() > 0 && inst.next_chunk() <= durable);
    drop(inst);
    install(&mut dev, &new).unwrap();
    assert_eq!(dev.boot().unwrap().slot, Slot::B);
}
