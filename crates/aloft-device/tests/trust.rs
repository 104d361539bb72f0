//! The device's TrustRoot for its whole life (threats 13, 22, 23, 26): chain
//! updates and every forged successor, expiry, retired release keys of the
//! running image, offers verified under an older root, and bounded time.

mod common;

use aloft_device::{Clock, Device, Error, Slot};
use aloft_protocol::envelope::seal;
use aloft_protocol::keys::Domain;
use aloft_protocol::{Error as P, SecretKey, UnixTime, pb};
use common::*;

const YEAR: u64 = 365 * 86_400;

fn setup() -> (Fixture, Release, Device<Sim>) {
    let fx = Fixture::new();
    let old = fx.release("fw-1", 1, image(1200, 1));
    let mut dev = fx.provision(flash(), &old);
    dev.boot().unwrap();
    (fx, old, dev)
}

fn reopen(dev: Device<Sim>) -> Device<Sim> {
    Device::open(dev.into_flash(), layout(), config()).unwrap()
}

fn at(t: u64) -> Clock {
    Clock::At(UnixTime(t))
}

/// A successor of `fx`'s current root: version `version`, listing `next_root`
/// as its root key, signed by `signers`.
fn successor(
    fx: &Fixture,
    version: u32,
    next_root: &SecretKey,
    signers: &[&SecretKey],
    edit: impl FnOnce(&mut pb::TrustRoot),
) -> pb::SignedEnvelope {
    let mut tr = root_payload(
        version,
        NOW + YEAR,
        next_root,
        &fx.keys.release,
        &fx.keys.server,
    );
    edit(&mut tr);
    seal(&tr, Domain::TrustRoot, signers)
}

#[test]
fn a_device_walks_a_chain_and_keeps_the_newest_root_across_power_cycles() {
    let (mut fx, _old, mut dev) = setup();
    assert_eq!(dev.trust_status(at(NOW)).version, 1);
    let v2 = fx.rotate(NOW + 2 * YEAR);
    let v3 = fx.rotate(NOW + 3 * YEAR);
    assert_eq!(dev.update_trust_root(&[v2, v3], at(NOW)), Ok(3));
    let dev = reopen(dev);
    let status = dev.trust_status(at(NOW));
    assert_eq!((status.version, status.expired), (3, false));
    assert_eq!(dev.trust_root().unwrap().digest(), fx.trust.digest());
}

/// Threat 13 / 22: every forged or broken successor is refused, and the
/// device keeps the root it had.
#[test]
fn forged_successors_are_refused_and_the_root_is_kept() {
    let (fx, _old, dev) = setup();
    let flash = dev.into_flash();
    let new_root = SecretKey::generate();
    let stranger = SecretKey::generate();
    let cases: Vec<(&str, Vec<pb::SignedEnvelope>)> = vec![
        (
            "signed only by the new key",
            vec![successor(&fx, 2, &new_root, &[&new_root], |_| {})],
        ),
        (
            "signed only by the old key (the new keys are not proven held)",
            vec![successor(&fx, 2, &new_root, &[&fx.keys.root], |_| {})],
        ),
        (
            "a skipped version",
            vec![successor(
                &fx,
                3,
                &new_root,
                &[&fx.keys.root, &new_root],
                |_| {},
            )],
        ),
        (
            "a lower version",
            vec![successor(
                &fx,
                0,
                &new_root,
                &[&fx.keys.root, &new_root],
                |_| {},
            )],
        ),
        (
            "the same version",
            vec![successor(
                &fx,
                1,
                &new_root,
                &[&fx.keys.root, &new_root],
                |_| {},
            )],
        ),
        (
            "signed by a key that is not a root key",
            vec![successor(
                &fx,
                2,
                &new_root,
                &[&stranger, &new_root],
                |_| {},
            )],
        ),
        (
            "a zero root threshold",
            vec![successor(
                &fx,
                2,
                &new_root,
                &[&fx.keys.root, &new_root],
                |t| t.root_threshold = 0,
            )],
        ),
        (
            "already expired",
            vec![successor(
                &fx,
                2,
                &new_root,
                &[&fx.keys.root, &new_root],
                |t| t.expires_at = NOW - 1,
            )],
        ),
        ("an empty chain", vec![]),
    ];
    for (what, chain) in cases {
        let mut dev = Device::open(flash.clone(), layout(), config()).unwrap();
        assert!(dev.update_trust_root(&chain, at(NOW)).is_err(), "{what}");
        let dev = reopen(dev);
        assert_eq!(dev.trust_root().unwrap(), &fx.trust, "{what}: root kept");
    }
}

/// A key removed from the root set can no longer sign: after v2 drops the
/// v1 root key, a v3 signed by that key (and its own) is refused.
#[test]
fn a_removed_root_key_cannot_sign_the_next_rotation() {
    let (mut fx, _old, mut dev) = setup();
    let v1_root = fx.keys.root.clone();
    let v2 = fx.rotate(NOW + 2 * YEAR);
    dev.update_trust_root(std::slice::from_ref(&v2), at(NOW))
        .unwrap();
    let rogue = SecretKey::generate();
    let v3 = successor(&fx, 3, &rogue, &[&v1_root, &rogue], |_| {});
    let e = dev.update_trust_root(&[v3], at(NOW)).err();
    assert!(
        matches!(
            &e,
            Some(Error::Protocol(P::ChainLink { index: 0, source, .. }))
                if matches!(**source, P::ThresholdNotMet { .. })
        ),
        "{e:?}"
    );
    assert_eq!(dev.trust_root().unwrap().version(), 2);
}

/// TUF's rule: an expired current root (and expired intermediate roots) can
/// be walked past as long as the newest is unexpired; nothing is verified
/// under an expired root meanwhile.
#[test]
fn an_expired_root_is_rotated_past_but_verifies_nothing() {
    let (mut fx, _old, mut dev) = setup();
    let two_years = NOW + 2 * YEAR;
    // The v1 root (one year) has expired: updates are refused and say so.
    assert!(dev.trust_status(at(two_years)).expired);
    let rel = fx.release("fw-2", 2, image(900, 2));
    let late = fx.directive_for(&rel.manifest, &rel.key, two_years);
    let e = accept_parts(&dev, &late, &rel.manifest_env, at(two_years)).err();
    assert!(
        matches!(e, Some(Error::Protocol(P::Expired { .. }))),
        "{e:?}"
    );
    // v2 expired too (it lived until NOW + 18 months); v3 is current.
    let v2 = fx.rotate(NOW + YEAR + YEAR / 2);
    let v3 = fx.rotate(NOW + 4 * YEAR);
    assert_eq!(
        dev.update_trust_root(&[v2.clone(), v3], at(two_years)),
        Ok(3)
    );
    assert!(!dev.trust_status(at(two_years)).expired);
    // A chain that ends in an expired root is refused.
    let (mut fx, _old, mut dev) = setup();
    let v2 = fx.rotate(NOW + YEAR + YEAR / 2);
    let e = dev.update_trust_root(&[v2], at(two_years)).err();
    assert!(
        matches!(&e, Some(Error::Protocol(P::ChainLink { source, .. })) if matches!(**source, P::Expired { .. })),
        "{e:?}"
    );
}

/// Threat 26: retiring the release key of the running image never strands
/// it. The device boots it after the rotation and a power cycle, refuses
/// new installs signed by the retired key, and takes the next release signed
/// by the new one.
#[test]
fn a_retired_release_key_keeps_the_running_image_bootable() {
    let (mut fx, old, mut dev) = setup();
    // Signed by the release key the rotation is about to retire.
    let stale = fx.release("fw-2-old-key", 2, image(900, 3));
    let v2 = fx.rotate(NOW + 2 * YEAR);
    dev.update_trust_root(&[v2], at(NOW)).unwrap();
    // Power-cycle: the image signed by the retired key still boots.
    let mut dev = reopen(dev);
    let b = dev.boot().unwrap();
    assert_eq!(
        (b.slot, b.manifest.release_id()),
        (Slot::A, old.manifest.release_id())
    );
    // A release signed by the retired release key is refused, even under a
    // directive from the current server key; and the retired server key's
    // directive is refused too.
    let directive = fx.directive_for(&stale.manifest, &stale.key, NOW);
    let e = accept_parts(&dev, &directive, &stale.manifest_env, at(NOW)).err();
    assert!(
        matches!(e, Some(Error::Protocol(P::ThresholdNotMet { .. }))),
        "{e:?}"
    );
    let e = accept(&dev, &stale).err();
    assert!(
        matches!(e, Some(Error::Protocol(P::ThresholdNotMet { .. }))),
        "{e:?}"
    );
    // The next release under the new keys installs and is confirmed.
    let next = fx.release("fw-2", 2, image(900, 4));
    install(&mut dev, &next).unwrap();
    let mut dev = reopen(dev);
    let b = dev.boot().unwrap();
    assert_eq!((b.slot, b.trial), (Slot::B, true));
    dev.confirm().unwrap();
    assert_eq!(reopen(dev).boot().unwrap().slot, Slot::B);
}

#[test]
fn an_offer_verified_under_an_older_root_must_be_verified_again() {
    let (mut fx, _old, mut dev) = setup();
    let rel = fx.release("fw-2", 2, image(900, 2));
    let offer = accept(&dev, &rel).unwrap();
    let v2 = fx.rotate(NOW + 2 * YEAR);
    dev.update_trust_root(&[v2], at(NOW)).unwrap();
    assert_eq!(
        dev.begin_install(&offer, &rel.key).err(),
        Some(Error::OfferFromAnotherRoot)
    );
}

#[test]
fn a_root_too_large_for_the_trust_area_is_refused_and_nothing_changes() {
    let (fx, _old, mut dev) = setup();
    let new_root = SecretKey::generate();
    // 16 release keys and 16 server keys: over 1 KiB of keys, more than
    // the 1 KiB copy of this layout holds.
    let mut tr = root_payload(2, NOW + YEAR, &new_root, &fx.keys.release, &fx.keys.server);
    tr.release_keys
        .extend((0..15).map(|_| pubkey(&SecretKey::generate())));
    tr.server_keys
        .extend((0..15).map(|_| pubkey(&SecretKey::generate())));
    let env = seal(&tr, Domain::TrustRoot, &[&fx.keys.root, &new_root]);
    let e = dev.update_trust_root(&[env], at(NOW)).err();
    assert!(matches!(e, Some(Error::TrustRootTooLarge { .. })), "{e:?}");
    assert_eq!(reopen(dev).trust_root().unwrap(), &fx.trust);
}

/// Bit rot in the stored root does not brick the device: it boots and runs
/// the same image, and says it cannot verify updates.
#[test]
fn a_corrupt_stored_root_blocks_updates_not_boots() {
    let (fx, old, dev) = setup();
    let at_root = (layout().state.end() - 2 * layout().trust_len() + 40) as usize;
    let mut f = dev.into_flash();
    f.bytes_mut()[at_root] ^= 0x20;
    let mut dev = Device::open(f, layout(), config()).unwrap();
    assert_eq!(dev.trust_root().err(), Some(Error::TrustRootUnreadable));
    assert!(
        dev.trust_status(at(NOW)).expired,
        "reported as unable to verify"
    );
    assert_eq!(
        dev.boot().unwrap().manifest.release_id(),
        old.manifest.release_id()
    );
    let rel = fx.release("fw-2", 2, image(900, 2));
    assert_eq!(accept(&dev, &rel).err(), Some(Error::TrustRootUnreadable));
}

/// Threat 23: a directive whose server time is 89 days ahead (inside the
/// manifest's validity) is accepted, but moves the attested time only as far
/// as the device's own clock allows, and the disagreement is remembered;
/// genuine directives afterwards keep working.
#[test]
fn a_server_clock_far_ahead_cannot_push_the_attested_time() {
    let (fx, _old, mut dev) = setup();
    let ahead = NOW + 89 * 86_400;
    let rel = fx.release_with("fw-2", 2, image(900, 2), |m| {
        m.expires_at = NOW + 90 * 86_400
    });
    let wrong = fx.directive_for(&rel.manifest, &rel.key, ahead);
    let offer = accept_parts(&dev, &wrong, &rel.manifest_env, at(NOW)).unwrap();
    assert_eq!(offer.server_clock_ahead(), ahead - (NOW + 600));
    drop(dev.begin_install(&offer, &rel.key).unwrap());
    assert_eq!(dev.time_floor(), UnixTime(NOW + 600), "own clock + skew");
    assert_eq!(dev.server_clock_ahead(), ahead - (NOW + 600));
    // A genuine directive an hour later is not "regressed".
    let genuine = fx.directive_for(&rel.manifest, &rel.key, NOW + 3600);
    let offer = accept_parts(&dev, &genuine, &rel.manifest_env, at(NOW + 3600)).unwrap();
    assert_eq!(offer.server_clock_ahead(), 0);
    dev.begin_install(&offer, &rel.key).unwrap();
    assert_eq!(dev.server_clock_ahead(), 0, "agreement clears the report");

    // Without a clock the floor moves at most a day per accepted directive.
    let (fx, _old, mut dev) = setup();
    let rel = fx.release_with("fw-2", 2, image(900, 2), |m| {
        m.expires_at = NOW + 90 * 86_400
    });
    let wrong = fx.directive_for(&rel.manifest, &rel.key, ahead);
    let offer = accept_parts(&dev, &wrong, &rel.manifest_env, Clock::None).unwrap();
    drop(dev.begin_install(&offer, &rel.key).unwrap());
    assert_eq!(
        dev.time_floor(),
        UnixTime(86_400),
        "one step from the factory floor 0"
    );
    let genuine = fx.directive_for(&rel.manifest, &rel.key, NOW);
    assert!(accept_parts(&dev, &genuine, &rel.manifest_env, Clock::None).is_ok());
    // An older server time than the floor is still refused (threat 5).
    let mut dev = reopen(dev);
    dev.boot().unwrap();
    let offer = accept_parts(&dev, &genuine, &rel.manifest_env, at(NOW)).unwrap();
    dev.begin_install(&offer, &rel.key).unwrap();
    let older = fx.directive_for(&rel.manifest, &rel.key, NOW - 10);
    let e = accept_parts(&dev, &older, &rel.manifest_env, at(NOW)).err();
    assert!(
        matches!(e, Some(Error::Protocol(P::ServerTimeRegressed { .. }))),
        "{e:?}"
    );
}
