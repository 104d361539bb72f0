//! The verification rules of TrustRoot, ReleaseManifest, Directive and a
//! whole update offer: one accepting test per object, and a negative test
//! for every check, each asserting the precise error. Threat numbers refer to
//! the project's threat table.
#![cfg(feature = "sign")]

use aloft_protocol::envelope::{add_signature, seal};
use aloft_protocol::keys::Domain;
use aloft_protocol::limits::{
    MAX_CHUNK_SIZE, MAX_ENVELOPE_LEN, MAX_HARDWARE_IDS, MAX_IMAGE_LEN, MAX_KEYS_PER_ROLE,
    MAX_NAME_LEN, MAX_SIGNATURES, MIN_CHUNK_SIZE,
};
use aloft_protocol::pb;
use aloft_protocol::prost::Message;
use aloft_protocol::trust::{DeviceContext, VerifiedTrustRoot, verify_update};
use aloft_protocol::{
    DeviceId, DeviceNonce, Digest, Error, SecretKey, SecurityVersion, UnixTime, Version,
};

const NOW: UnixTime = UnixTime(1_700_000_000);
const ROOT_EXPIRES: u64 = 1_800_000_000;

/// A deterministic key; `n` picks it. Roles use distinct ranges:
/// root 1..=9, release 11..=19, server 21..=29, others 30+.
fn key(n: u8) -> SecretKey {
    SecretKey::from_slice(&[n; 32]).unwrap()
}

fn pubs(keys: &[u8]) -> Vec<Vec<u8>> {
    keys.iter()
        .map(|&n| key(n).public_key().to_sec1_compressed().to_vec())
        .collect()
}

/// TrustRoot v1: root key 1, release key 11, server keys 21 and 22.
fn tr_pb() -> pb::TrustRoot {
    pb::TrustRoot {
        version: 1,
        expires_at: ROOT_EXPIRES,
        root_keys: pubs(&[1]),
        root_threshold: 1,
        release_keys: pubs(&[11]),
        release_threshold: 1,
        server_keys: pubs(&[21, 22]),
    }
}

/// A compressed "point" whose x coordinate is not below the field prime.
fn invalid_point() -> Vec<u8> {
    let mut p = vec![0xff; 33];
    p[0] = 2;
    p
}

fn sealed(msg: &impl Message, domain: Domain, signers: &[u8]) -> pb::SignedEnvelope {
    let keys: Vec<SecretKey> = signers.iter().map(|&n| key(n)).collect();
    let refs: Vec<&SecretKey> = keys.iter().collect();
    seal(msg, domain, &refs)
}

fn trust() -> VerifiedTrustRoot {
    VerifiedTrustRoot::trust_on_first_use(&sealed(&tr_pb(), Domain::TrustRoot, &[1]), NOW).unwrap()
}

fn initial(tr: &pb::TrustRoot, signers: &[u8]) -> Result<VerifiedTrustRoot, Error> {
    VerifiedTrustRoot::trust_on_first_use(&sealed(tr, Domain::TrustRoot, signers), NOW)
}

fn manifest_pb() -> pb::ReleaseManifest {
    pb::ReleaseManifest {
        release_id: "sensor-1.1.0".into(),
        product: "sensor".into(),
        hardware: vec!["rev-a".into(), "rev-b".into()],
        version: "1.1.0".into(),
        security_version: 2,
        image_len: 10_000,
        image_sha256: vec![7; 32],
        chunk_size: 4096,
        nonce_prefix: vec![1; 7],
        created_at: NOW.0 - 100,
        expires_at: NOW.0 + 1000,
        ..Default::default()
    }
}

fn manifest_env(m: &pb::ReleaseManifest) -> pb::SignedEnvelope {
    sealed(m, Domain::ReleaseManifest, &[11])
}

fn check_manifest(m: &pb::ReleaseManifest) -> Result<(), Error> {
    trust().verify_manifest(&manifest_env(m), NOW).map(drop)
}

fn wrapped_key() -> pb::WrappedKey {
    pb::WrappedKey {
        ephemeral_public_key: key(40).public_key().to_sec1_compressed().to_vec(),
        ciphertext: vec![5; 48],
    }
}

fn directive_pb(manifest: &pb::SignedEnvelope) -> pb::Directive {
    pb::Directive {
        device_id: "dev-a".into(),
        device_nonce: vec![9; 16],
        manifest_digest: Digest::of(&manifest.payload).as_bytes().to_vec(),
        content_key: Some(wrapped_key()),
        server_time: NOW.0,
        expires_at: NOW.0 + 300,
        rollout_id: "rollout-1".into(),
        payload_url: String::new(),
    }
}

fn directive_env(d: &pb::Directive) -> pb::SignedEnvelope {
    sealed(d, Domain::Directive, &[21])
}

fn check_directive(d: &pb::Directive) -> Result<(), Error> {
    trust().verify_directive(&directive_env(d), NOW).map(drop)
}

/// What device "dev-a" knows about itself.
struct Dev {
    id: DeviceId,
    nonce: DeviceNonce,
}

impl Dev {
    fn new() -> Self {
        Self {
            id: DeviceId::new("dev-a").unwrap(),
            nonce: DeviceNonce::from_bytes([9; 16]),
        }
    }

    fn ctx(&self) -> DeviceContext<'_> {
        DeviceContext {
            device_id: &self.id,
            device_nonce: &self.nonce,
            product: "sensor",
            hardware: "rev-b",
            current_version: Version::new(1, 0, 0),
            security_floor: SecurityVersion(1),
            time_floor: UnixTime(NOW.0 - 60),
            slot_capacity: 64 * 1024,
            now: NOW,
        }
    }
}

/// Verifies a directive built from `d` and manifest built from `m` for `ctx`.
fn offer(
    m: &pb::ReleaseManifest,
    edit: impl FnOnce(&mut pb::Directive),
    ctx: &DeviceContext<'_>,
) -> Result<(), Error> {
    let menv = manifest_env(m);
    let mut d = directive_pb(&menv);
    edit(&mut d);
    verify_update(&trust(), &directive_env(&d), &menv, ctx).map(drop)
}

const NOT_MET_1: Error = Error::ThresholdNotMet {
    needed: 1,
    valid: 0,
};

// ---------------------------------------------------------------- TrustRoot

#[test]
fn initial_trust_root_is_accepted() {
    let t = trust();
    assert_eq!(t.version(), 1);
    assert_eq!(t.expires_at(), UnixTime(ROOT_EXPIRES));
    assert_eq!(t.root_keys(), vec![key(1).public_key()]);
    assert_eq!(t.release_keys(), vec![key(11).public_key()]);
    assert_eq!(
        t.server_keys(),
        vec![key(21).public_key(), key(22).public_key()]
    );
    assert_eq!((t.root_threshold(), t.release_threshold()), (1, 1));
    assert_eq!(t.envelope(), &sealed(&tr_pb(), Domain::TrustRoot, &[1]));
}

#[test]
fn trust_root_signatures_are_required() {
    // Unsigned.
    assert_eq!(initial(&tr_pb(), &[]).unwrap_err(), NOT_MET_1);
    // Signed by a key it does not list as root (unknown key).
    assert_eq!(initial(&tr_pb(), &[2]).unwrap_err(), NOT_MET_1);
    // Signed by its release or server key (role confusion).
    assert_eq!(initial(&tr_pb(), &[11, 21]).unwrap_err(), NOT_MET_1);
    // Signed by the root key, but in another domain.
    let env = sealed(&tr_pb(), Domain::ReleaseManifest, &[1]);
    assert_eq!(
        VerifiedTrustRoot::trust_on_first_use(&env, NOW).unwrap_err(),
        NOT_MET_1
    );
    // A flipped signature byte.
    let mut env = sealed(&tr_pb(), Domain::TrustRoot, &[1]);
    env.signatures[0].signature[10] ^= 0x80;
    assert_eq!(
        VerifiedTrustRoot::trust_on_first_use(&env, NOW).unwrap_err(),
        NOT_MET_1
    );
    // A truncated signature and a truncated key id.
    let mut env = sealed(&tr_pb(), Domain::TrustRoot, &[1]);
    env.signatures[0].signature.pop();
    assert_eq!(
        VerifiedTrustRoot::trust_on_first_use(&env, NOW).unwrap_err(),
        NOT_MET_1
    );
    let mut env = sealed(&tr_pb(), Domain::TrustRoot, &[1]);
    env.signatures[0].key_id.pop();
    assert_eq!(
        VerifiedTrustRoot::trust_on_first_use(&env, NOW).unwrap_err(),
        NOT_MET_1
    );
}

#[test]
fn trust_root_threshold_counts_each_key_once() {
    // Threat 2: a 2-of-3 root, one key signing twice.
    let mut tr = tr_pb();
    tr.root_keys = pubs(&[1, 2, 3]);
    tr.root_threshold = 2;
    assert_eq!(
        initial(&tr, &[1, 1]).unwrap_err(),
        Error::ThresholdNotMet {
            needed: 2,
            valid: 1
        }
    );
    // The same signature copied verbatim.
    let mut env = sealed(&tr, Domain::TrustRoot, &[2]);
    env.signatures.push(env.signatures[0].clone());
    assert_eq!(
        VerifiedTrustRoot::trust_on_first_use(&env, NOW).unwrap_err(),
        Error::ThresholdNotMet {
            needed: 2,
            valid: 1
        }
    );
    // Two distinct root keys meet it, even next to noise.
    let mut env = sealed(&tr, Domain::TrustRoot, &[21, 1, 1, 3]);
    add_signature(&mut env, Domain::TrustRoot, &key(2));
    assert!(VerifiedTrustRoot::trust_on_first_use(&env, NOW).is_ok());
    assert!(initial(&tr, &[3, 1]).is_ok());
}

#[test]
fn expired_trust_root_is_refused() {
    // Threat 5. Valid through the second it names, refused one second later.
    let env = sealed(&tr_pb(), Domain::TrustRoot, &[1]);
    let at = UnixTime(ROOT_EXPIRES);
    assert!(VerifiedTrustRoot::trust_on_first_use(&env, at).is_ok());
    let later = UnixTime(ROOT_EXPIRES + 1);
    assert_eq!(
        VerifiedTrustRoot::trust_on_first_use(&env, later).unwrap_err(),
        Error::Expired {
            expires_at: at,
            now: later
        }
    );
    // An expired TrustRoot no longer vouches for manifests or directives.
    let t = trust();
    let menv = manifest_env(&manifest_pb());
    assert_eq!(
        t.verify_manifest(&menv, later).unwrap_err(),
        Error::Expired {
            expires_at: at,
            now: later
        }
    );
    assert_eq!(
        t.verify_directive(&directive_env(&directive_pb(&menv)), later)
            .unwrap_err(),
        Error::Expired {
            expires_at: at,
            now: later
        }
    );
}

#[test]
fn malformed_trust_roots_are_refused() {
    type Edit = fn(&mut pb::TrustRoot);
    let cases: &[(&str, Edit, Error)] = &[
        (
            "zero root threshold",
            |t| t.root_threshold = 0,
            Error::InvalidThreshold,
        ),
        (
            "root threshold above keys",
            |t| t.root_threshold = 2,
            Error::InvalidThreshold,
        ),
        (
            "zero release threshold",
            |t| t.release_threshold = 0,
            Error::InvalidThreshold,
        ),
        (
            "release threshold above keys",
            |t| t.release_threshold = 2,
            Error::InvalidThreshold,
        ),
        (
            "no release keys",
            |t| t.release_keys.clear(),
            Error::InvalidThreshold,
        ),
        (
            "no server keys",
            |t| t.server_keys.clear(),
            Error::InvalidField("server key list (empty)"),
        ),
        (
            "invalid point",
            |t| t.release_keys[0] = invalid_point(),
            Error::InvalidKey,
        ),
        ("empty key", |t| t.server_keys[1].clear(), Error::InvalidKey),
        (
            "truncated key",
            |t| t.server_keys[0].truncate(32),
            Error::InvalidKey,
        ),
        (
            "duplicate release key",
            |t| t.release_keys = pubs(&[11, 12, 11]),
            Error::InvalidField("duplicate key in a TrustRoot role"),
        ),
        (
            "duplicate server key",
            |t| t.server_keys = pubs(&[21, 21]),
            Error::InvalidField("duplicate key in a TrustRoot role"),
        ),
        (
            "server key also a release key",
            |t| t.server_keys = pubs(&[21, 11]),
            Error::InvalidField("key listed in two TrustRoot roles"),
        ),
        (
            "release key also a root key",
            |t| t.release_keys = pubs(&[1]),
            Error::InvalidField("key listed in two TrustRoot roles"),
        ),
        (
            "server key also a root key",
            |t| t.server_keys = pubs(&[1]),
            Error::InvalidField("key listed in two TrustRoot roles"),
        ),
        (
            "too many root keys",
            |t| t.root_keys = pubs(&(1..=MAX_KEYS_PER_ROLE as u8 + 1).collect::<Vec<_>>()),
            Error::TooLarge("root key list"),
        ),
        (
            "too many release keys",
            |t| t.release_keys = pubs(&(41..=41 + MAX_KEYS_PER_ROLE as u8).collect::<Vec<_>>()),
            Error::TooLarge("release key list"),
        ),
        (
            "too many server keys",
            |t| t.server_keys = pubs(&(61..=61 + MAX_KEYS_PER_ROLE as u8).collect::<Vec<_>>()),
            Error::TooLarge("server key list"),
        ),
    ];
    for (name, edit, want) in cases {
        let mut tr = tr_pb();
        edit(&mut tr);
        assert_eq!(initial(&tr, &[1]).unwrap_err(), *want, "{name}");
    }
    // The limits themselves are accepted.
    let mut tr = tr_pb();
    tr.server_keys = pubs(&(61..61 + MAX_KEYS_PER_ROLE as u8).collect::<Vec<_>>());
    assert!(initial(&tr, &[1]).is_ok());
    // A valid point in uncompressed form (the RFC 6979 A.2.5 key) is
    // refused too: one canonical encoding per key.
    let mut tr = tr_pb();
    let uncompressed = hex::decode(concat!(
        "04",
        "60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6",
        "7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299"
    ))
    .unwrap();
    assert!(aloft_protocol::PublicKey::from_sec1(&uncompressed).is_ok());
    tr.server_keys.push(uncompressed);
    assert_eq!(initial(&tr, &[1]).unwrap_err(), Error::InvalidKey);
}

#[test]
fn undecodable_and_oversized_trust_roots_are_refused() {
    let garbage = pb::SignedEnvelope {
        payload: vec![0xff; 10],
        signatures: vec![],
    };
    assert_eq!(
        VerifiedTrustRoot::trust_on_first_use(&garbage, NOW).unwrap_err(),
        Error::Malformed("trust root")
    );
    let big = pb::SignedEnvelope {
        payload: vec![0; MAX_ENVELOPE_LEN + 1],
        signatures: vec![],
    };
    assert_eq!(
        VerifiedTrustRoot::trust_on_first_use(&big, NOW).unwrap_err(),
        Error::TooLarge("envelope payload")
    );
    let mut many = sealed(&tr_pb(), Domain::TrustRoot, &[1]);
    many.signatures = vec![many.signatures[0].clone(); MAX_SIGNATURES + 1];
    assert_eq!(
        VerifiedTrustRoot::trust_on_first_use(&many, NOW).unwrap_err(),
        Error::TooLarge("signature list")
    );
}

// ----------------------------------------------------------------- rotation

/// TrustRoot `version` with root key `root` (otherwise as v1).
fn tr_v(version: u32, root: u8) -> pb::TrustRoot {
    pb::TrustRoot {
        version,
        root_keys: pubs(&[root]),
        ..tr_pb()
    }
}

#[test]
fn proper_rotation_chain_is_accepted() {
    // Threat 13: v1 (root 1) -> v2 (root 2, new release key 12) -> v3 (root 3).
    let v1 = trust();
    let mut tr2 = tr_v(2, 2);
    tr2.release_keys = pubs(&[12]);
    let v2 = v1
        .rotate(&sealed(&tr2, Domain::TrustRoot, &[1, 2]), NOW)
        .unwrap();
    assert_eq!(v2.version(), 2);
    assert_eq!(v2.root_keys(), vec![key(2).public_key()]);
    let mut tr3 = tr_v(3, 3);
    tr3.release_keys = pubs(&[12]);
    let v3 = v2
        .rotate(&sealed(&tr3, Domain::TrustRoot, &[2, 3]), NOW)
        .unwrap();
    assert_eq!(v3.version(), 3);
    // The rotated-out release key no longer signs releases; the new one does.
    let m = manifest_pb();
    assert_eq!(
        v3.verify_manifest(&manifest_env(&m), NOW).unwrap_err(),
        NOT_MET_1
    );
    assert!(
        v3.verify_manifest(&sealed(&m, Domain::ReleaseManifest, &[12]), NOW)
            .is_ok()
    );
    // v1 cannot jump to v3 even though v3 is properly signed by v2's root.
    assert_eq!(
        v1.rotate(&sealed(&tr3, Domain::TrustRoot, &[2, 3]), NOW)
            .unwrap_err(),
        NOT_MET_1
    );
}

#[test]
fn rotation_needs_the_current_root_threshold() {
    // Signed only by the new root key.
    let v1 = trust();
    let next = sealed(&tr_v(2, 2), Domain::TrustRoot, &[2]);
    assert_eq!(v1.rotate(&next, NOW).unwrap_err(), NOT_MET_1);
    // Signed by the server or release key instead.
    let next = sealed(&tr_v(2, 2), Domain::TrustRoot, &[2, 21, 11]);
    assert_eq!(v1.rotate(&next, NOW).unwrap_err(), NOT_MET_1);
    // A 2-of-3 current root: one key twice is not enough.
    let mut tr1 = tr_pb();
    tr1.root_keys = pubs(&[1, 2, 3]);
    tr1.root_threshold = 2;
    let v1 = initial(&tr1, &[1, 2]).unwrap();
    let next = sealed(&tr_v(2, 4), Domain::TrustRoot, &[1, 1, 4]);
    assert_eq!(
        v1.rotate(&next, NOW).unwrap_err(),
        Error::ThresholdNotMet {
            needed: 2,
            valid: 1
        }
    );
    assert!(
        v1.rotate(&sealed(&tr_v(2, 4), Domain::TrustRoot, &[1, 3, 4]), NOW)
            .is_ok()
    );
}

#[test]
fn rotation_needs_the_new_root_threshold() {
    // Signed only by the old key: the new root keys never proved possession.
    let next = sealed(&tr_v(2, 2), Domain::TrustRoot, &[1]);
    assert_eq!(trust().rotate(&next, NOW).unwrap_err(), NOT_MET_1);
}

#[test]
fn rotation_needs_the_next_version() {
    let v1 = trust();
    for (offered, signers) in [(3, [1, 2]), (1, [1, 2]), (0, [1, 2])] {
        let next = sealed(&tr_v(offered, 2), Domain::TrustRoot, &signers);
        assert_eq!(
            v1.rotate(&next, NOW).unwrap_err(),
            Error::VersionNotSuccessor {
                current: 1,
                offered
            },
            "offered {offered}"
        );
    }
    // No wrap-around at the top.
    let mut top = tr_pb();
    top.version = u32::MAX;
    let top = initial(&top, &[1]).unwrap();
    let next = sealed(&tr_v(0, 2), Domain::TrustRoot, &[1, 2]);
    assert_eq!(
        top.rotate(&next, NOW).unwrap_err(),
        Error::VersionNotSuccessor {
            current: u32::MAX,
            offered: 0
        }
    );
}

#[test]
fn rotation_refuses_expired_successor_but_recovers_an_expired_current() {
    let v1 = trust();
    let mut tr2 = tr_v(2, 2);
    tr2.expires_at = NOW.0 - 1;
    assert_eq!(
        v1.rotate(&sealed(&tr2, Domain::TrustRoot, &[1, 2]), NOW)
            .unwrap_err(),
        Error::Expired {
            expires_at: UnixTime(NOW.0 - 1),
            now: NOW
        }
    );
    // v1 has expired, but a fresh v2 signed by it is still accepted.
    let late = UnixTime(ROOT_EXPIRES + 10);
    let mut tr2 = tr_v(2, 2);
    tr2.expires_at = ROOT_EXPIRES + 1000;
    assert!(
        v1.rotate(&sealed(&tr2, Domain::TrustRoot, &[1, 2]), late)
            .is_ok()
    );
}

#[test]
fn rotation_checks_the_successor_structure() {
    let mut tr2 = tr_v(2, 2);
    tr2.server_keys.clear();
    assert_eq!(
        trust()
            .rotate(&sealed(&tr2, Domain::TrustRoot, &[1, 2]), NOW)
            .unwrap_err(),
        Error::InvalidField("server key list (empty)")
    );
    let garbage = pb::SignedEnvelope {
        payload: vec![0xff; 3],
        signatures: vec![],
    };
    assert_eq!(
        trust().rotate(&garbage, NOW).unwrap_err(),
        Error::Malformed("trust root")
    );
}

// ----------------------------------------------------------------- manifest

#[test]
fn valid_manifest_is_accepted() {
    let m = manifest_pb();
    let env = manifest_env(&m);
    let v = trust().verify_manifest(&env, NOW).unwrap();
    assert_eq!(v.release_id().as_str(), "sensor-1.1.0");
    assert_eq!(v.product(), "sensor");
    assert_eq!(v.hardware(), vec!["rev-a".to_string(), "rev-b".to_string()]);
    assert_eq!(v.version(), Version::new(1, 1, 0));
    assert_eq!(v.security_version(), SecurityVersion(2));
    assert_eq!(v.image_len(), 10_000);
    assert_eq!(v.image_digest(), Digest::from_bytes([7; 32]));
    assert_eq!(v.chunk_size(), 4096);
    assert_eq!(v.nonce_prefix().as_bytes(), &[1; 7]);
    assert_eq!(v.created_at(), UnixTime(NOW.0 - 100));
    assert_eq!(v.expires_at(), UnixTime(NOW.0 + 1000));
    assert_eq!(v.digest(), Digest::of(&env.payload));
}

#[test]
fn manifest_signature_missing_flipped_stripped_or_swapped_is_refused() {
    // Threat 1.
    let t = trust();
    let env = manifest_env(&manifest_pb());
    let mut stripped = env.clone();
    stripped.signatures.clear();
    assert_eq!(t.verify_manifest(&stripped, NOW).unwrap_err(), NOT_MET_1);
    for i in 0..64 {
        let mut flipped = env.clone();
        flipped.signatures[0].signature[i] ^= 0x01;
        assert_eq!(
            t.verify_manifest(&flipped, NOW).unwrap_err(),
            NOT_MET_1,
            "byte {i}"
        );
    }
    // A valid release signature over another manifest, swapped in.
    let mut other = manifest_pb();
    other.version = "9.9.9".into();
    let mut swapped = env.clone();
    swapped.signatures = manifest_env(&other).signatures;
    assert_eq!(t.verify_manifest(&swapped, NOW).unwrap_err(), NOT_MET_1);
    // Key id of the release key, signature of another key.
    let mut mislabelled = sealed(&manifest_pb(), Domain::ReleaseManifest, &[12]);
    mislabelled.signatures[0].key_id = env.signatures[0].key_id.clone();
    assert_eq!(t.verify_manifest(&mislabelled, NOW).unwrap_err(), NOT_MET_1);
    // Signed by an unknown key.
    let unknown = sealed(&manifest_pb(), Domain::ReleaseManifest, &[12, 35]);
    assert_eq!(t.verify_manifest(&unknown, NOW).unwrap_err(), NOT_MET_1);
}

#[test]
fn flipping_any_manifest_payload_byte_is_refused() {
    // Threat 1: every byte, every bit position of it in turn.
    let t = trust();
    let env = manifest_env(&manifest_pb());
    for i in 0..env.payload.len() {
        let mut bad = env.clone();
        bad.payload[i] ^= 1 << (i % 8);
        assert_eq!(
            t.verify_manifest(&bad, NOW).unwrap_err(),
            NOT_MET_1,
            "byte {i}"
        );
    }
    // Appending or truncating is no better.
    let mut longer = env.clone();
    longer.payload.push(0);
    assert_eq!(t.verify_manifest(&longer, NOW).unwrap_err(), NOT_MET_1);
    let mut shorter = env;
    shorter.payload.pop();
    assert_eq!(t.verify_manifest(&shorter, NOW).unwrap_err(), NOT_MET_1);
}

#[test]
fn manifest_signed_by_another_role_is_refused() {
    // Threat 3, from both angles. The server and root keys are not in the
    // release key set, even when they sign in the manifest domain...
    let t = trust();
    let m = manifest_pb();
    for signer in [21, 22, 1] {
        let env = sealed(&m, Domain::ReleaseManifest, &[signer]);
        assert_eq!(
            t.verify_manifest(&env, NOW).unwrap_err(),
            NOT_MET_1,
            "key {signer}"
        );
    }
    // ...and a signature from another domain does not count, even by the
    // release key itself (the key set is right, the domain is not).
    for domain in [Domain::Directive, Domain::TrustRoot, Domain::DeviceMessage] {
        let env = sealed(&m, domain, &[11]);
        assert_eq!(
            t.verify_manifest(&env, NOW).unwrap_err(),
            NOT_MET_1,
            "{domain:?}"
        );
    }
    // A server key's valid directive-domain signature over the manifest bytes.
    let env = sealed(&m, Domain::Directive, &[21]);
    assert_eq!(t.verify_manifest(&env, NOW).unwrap_err(), NOT_MET_1);
}

#[test]
fn manifest_threshold_counts_each_key_once() {
    // Threat 2 on a 2-of-3 release threshold.
    let mut tr = tr_pb();
    tr.release_keys = pubs(&[11, 12, 13]);
    tr.release_threshold = 2;
    let t = initial(&tr, &[1]).unwrap();
    let m = manifest_pb();
    let twice = sealed(&m, Domain::ReleaseManifest, &[11, 11]);
    assert_eq!(
        t.verify_manifest(&twice, NOW).unwrap_err(),
        Error::ThresholdNotMet {
            needed: 2,
            valid: 1
        }
    );
    assert!(
        t.verify_manifest(&sealed(&m, Domain::ReleaseManifest, &[13, 11]), NOW)
            .is_ok()
    );
}

#[test]
fn expired_manifest_is_refused() {
    // Threat 5.
    let env = manifest_env(&manifest_pb());
    let exp = UnixTime(NOW.0 + 1000);
    assert!(trust().verify_manifest(&env, exp).is_ok());
    let later = UnixTime(exp.0 + 1);
    assert_eq!(
        trust().verify_manifest(&env, later).unwrap_err(),
        Error::Expired {
            expires_at: exp,
            now: later
        }
    );
}

#[test]
fn malformed_manifest_fields_are_refused() {
    type Edit = fn(&mut pb::ReleaseManifest);
    let cases: &[(&str, Edit, Error)] = &[
        (
            "empty release id",
            |m| m.release_id.clear(),
            Error::InvalidField("release id"),
        ),
        (
            "path release id",
            |m| m.release_id = "../x".into(),
            Error::InvalidField("release id"),
        ),
        (
            "long release id",
            |m| m.release_id = "r".repeat(65),
            Error::InvalidField("release id"),
        ),
        (
            "empty product",
            |m| m.product.clear(),
            Error::InvalidField("product"),
        ),
        (
            "long product",
            |m| m.product = "p".repeat(MAX_NAME_LEN + 1),
            Error::InvalidField("product"),
        ),
        (
            "control char product",
            |m| m.product = "sen\nsor".into(),
            Error::InvalidField("product"),
        ),
        (
            "no hardware",
            |m| m.hardware.clear(),
            Error::InvalidField("hardware list (empty)"),
        ),
        (
            "too many hardware ids",
            |m| m.hardware = (0..=MAX_HARDWARE_IDS).map(|i| format!("rev-{i}")).collect(),
            Error::TooLarge("hardware list"),
        ),
        (
            "empty hardware id",
            |m| m.hardware.push(String::new()),
            Error::InvalidField("hardware id"),
        ),
        (
            "long hardware id",
            |m| m.hardware.push("h".repeat(MAX_NAME_LEN + 1)),
            Error::InvalidField("hardware id"),
        ),
        (
            "short version",
            |m| m.version = "1.1".into(),
            Error::InvalidField("version"),
        ),
        (
            "suffixed version",
            |m| m.version = "1.1.0-rc1".into(),
            Error::InvalidField("version"),
        ),
        (
            "empty version",
            |m| m.version.clear(),
            Error::InvalidField("version"),
        ),
        (
            "zero image",
            |m| m.image_len = 0,
            Error::InvalidField("image length (zero)"),
        ),
        (
            "huge image",
            |m| m.image_len = MAX_IMAGE_LEN + 1,
            Error::TooLarge("image length"),
        ),
        (
            "short digest",
            |m| m.image_sha256.truncate(31),
            Error::InvalidField("digest"),
        ),
        (
            "long digest",
            |m| m.image_sha256.push(0),
            Error::InvalidField("digest"),
        ),
        (
            "no digest",
            |m| m.image_sha256.clear(),
            Error::InvalidField("digest"),
        ),
        (
            "small chunks",
            |m| m.chunk_size = MIN_CHUNK_SIZE - 1,
            Error::InvalidField("chunk size"),
        ),
        (
            "big chunks",
            |m| m.chunk_size = MAX_CHUNK_SIZE + 1,
            Error::InvalidField("chunk size"),
        ),
        (
            "zero chunks",
            |m| m.chunk_size = 0,
            Error::InvalidField("chunk size"),
        ),
        (
            "short nonce prefix",
            |m| m.nonce_prefix.truncate(6),
            Error::InvalidField("nonce prefix"),
        ),
        (
            "long nonce prefix",
            |m| m.nonce_prefix.push(0),
            Error::InvalidField("nonce prefix"),
        ),
    ];
    for (name, edit, want) in cases {
        let mut m = manifest_pb();
        edit(&mut m);
        assert_eq!(check_manifest(&m).unwrap_err(), *want, "{name}");
    }
    // The boundaries themselves are accepted.
    let limits: &[Edit] = &[
        |m| m.chunk_size = MIN_CHUNK_SIZE,
        |m| m.chunk_size = MAX_CHUNK_SIZE,
        |m| m.image_len = MAX_IMAGE_LEN,
        |m| m.image_len = 1,
        |m| m.product = "p".repeat(MAX_NAME_LEN),
        |m| m.hardware = (0..MAX_HARDWARE_IDS).map(|i| format!("rev-{i}")).collect(),
    ];
    for (i, edit) in limits.iter().enumerate() {
        let mut m = manifest_pb();
        edit(&mut m);
        assert_eq!(check_manifest(&m), Ok(()), "limit {i}");
    }
}

#[test]
fn undecodable_and_oversized_manifests_are_refused() {
    // Signed garbage: authentic bytes that are not a manifest.
    let t = trust();
    let mut env = pb::SignedEnvelope {
        payload: vec![0xff; 8],
        signatures: vec![],
    };
    add_signature(&mut env, Domain::ReleaseManifest, &key(11));
    assert_eq!(
        t.verify_manifest(&env, NOW).unwrap_err(),
        Error::Malformed("release manifest")
    );
    let big = pb::SignedEnvelope {
        payload: vec![0; MAX_ENVELOPE_LEN + 1],
        signatures: vec![],
    };
    assert_eq!(
        t.verify_manifest(&big, NOW).unwrap_err(),
        Error::TooLarge("envelope payload")
    );
    let mut many = manifest_env(&manifest_pb());
    many.signatures = vec![many.signatures[0].clone(); MAX_SIGNATURES + 1];
    assert_eq!(
        t.verify_manifest(&many, NOW).unwrap_err(),
        Error::TooLarge("signature list")
    );
}

// ---------------------------------------------------------------- directive

#[test]
fn valid_directive_is_accepted_from_any_server_key() {
    let menv = manifest_env(&manifest_pb());
    let d = directive_pb(&menv);
    for signer in [21, 22] {
        let v = trust()
            .verify_directive(&sealed(&d, Domain::Directive, &[signer]), NOW)
            .unwrap();
        assert_eq!(v.device_id().as_str(), "dev-a");
        assert_eq!(v.device_nonce(), &DeviceNonce::from_bytes([9; 16]));
        assert_eq!(v.manifest_digest(), Digest::of(&menv.payload));
        assert_eq!(v.content_key().unwrap().ephemeral, key(40).public_key());
        assert_eq!(v.content_key().unwrap().ciphertext, [5; 48]);
        assert_eq!(v.server_time(), NOW);
        assert_eq!(v.expires_at(), UnixTime(NOW.0 + 300));
        assert_eq!(v.rollout_id(), "rollout-1");
    }
}

#[test]
fn directive_signed_by_another_role_is_refused() {
    // Threat 3: release and root keys are not server keys...
    let t = trust();
    let d = directive_pb(&manifest_env(&manifest_pb()));
    for signer in [11, 1, 35] {
        let env = sealed(&d, Domain::Directive, &[signer]);
        assert_eq!(
            t.verify_directive(&env, NOW).unwrap_err(),
            NOT_MET_1,
            "key {signer}"
        );
    }
    // ...and a server key signing in another domain does not count.
    for domain in [
        Domain::ReleaseManifest,
        Domain::TrustRoot,
        Domain::DeviceMessage,
    ] {
        let env = sealed(&d, domain, &[21]);
        assert_eq!(
            t.verify_directive(&env, NOW).unwrap_err(),
            NOT_MET_1,
            "{domain:?}"
        );
    }
    // Unsigned, flipped.
    let mut env = directive_env(&d);
    env.signatures.clear();
    assert_eq!(t.verify_directive(&env, NOW).unwrap_err(), NOT_MET_1);
    let mut env = directive_env(&d);
    env.payload[3] ^= 0x04;
    assert_eq!(t.verify_directive(&env, NOW).unwrap_err(), NOT_MET_1);
}

#[test]
fn expired_directive_is_refused() {
    // Threat 5: expired by the device's clock...
    let d = directive_pb(&manifest_env(&manifest_pb()));
    let exp = UnixTime(NOW.0 + 300);
    let later = UnixTime(exp.0 + 1);
    assert!(trust().verify_directive(&directive_env(&d), exp).is_ok());
    assert_eq!(
        trust()
            .verify_directive(&directive_env(&d), later)
            .unwrap_err(),
        Error::Expired {
            expires_at: exp,
            now: later
        }
    );
    // ...or already expired when the server signed it (device clock behind).
    let mut stale = d;
    stale.server_time = later.0;
    assert_eq!(
        trust()
            .verify_directive(&directive_env(&stale), NOW)
            .unwrap_err(),
        Error::Expired {
            expires_at: exp,
            now: later
        }
    );
}

#[test]
fn malformed_directive_fields_are_refused() {
    type Edit = fn(&mut pb::Directive);
    let cases: &[(&str, Edit, Error)] = &[
        (
            "empty device id",
            |d| d.device_id.clear(),
            Error::InvalidField("device id"),
        ),
        (
            "bad device id",
            |d| d.device_id = "dev a".into(),
            Error::InvalidField("device id"),
        ),
        (
            "short nonce",
            |d| d.device_nonce.truncate(15),
            Error::InvalidField("device nonce (16 to 32 bytes)"),
        ),
        (
            "no nonce",
            |d| d.device_nonce.clear(),
            Error::InvalidField("device nonce (16 to 32 bytes)"),
        ),
        (
            "short digest",
            |d| d.manifest_digest.truncate(31),
            Error::InvalidField("digest"),
        ),
        (
            "long rollout id",
            |d| d.rollout_id = "r".repeat(65),
            Error::InvalidField("rollout id"),
        ),
    ];
    let menv = manifest_env(&manifest_pb());
    for (name, edit, want) in cases {
        let mut d = directive_pb(&menv);
        edit(&mut d);
        assert_eq!(check_directive(&d).unwrap_err(), *want, "{name}");
    }
    // The wrapped key's own checks (sizes, point) apply.
    type KeyEdit = fn(&mut pb::WrappedKey);
    let key_cases: &[KeyEdit] = &[
        |k| k.ciphertext.truncate(47),
        |k| k.ciphertext.push(0),
        |k| k.ephemeral_public_key.truncate(32),
        |k| k.ephemeral_public_key = invalid_point(),
    ];
    for (i, edit) in key_cases.iter().enumerate() {
        let mut d = directive_pb(&menv);
        edit(d.content_key.as_mut().unwrap());
        let e = check_directive(&d).unwrap_err();
        assert!(matches!(e, Error::InvalidField(_)), "case {i}: {e:?}");
    }
    // Signed garbage and oversized envelopes.
    let mut env = pb::SignedEnvelope {
        payload: vec![0xff; 8],
        signatures: vec![],
    };
    add_signature(&mut env, Domain::Directive, &key(21));
    assert_eq!(
        trust().verify_directive(&env, NOW).unwrap_err(),
        Error::Malformed("directive")
    );
    let big = pb::SignedEnvelope {
        payload: vec![0; MAX_ENVELOPE_LEN + 1],
        signatures: vec![],
    };
    assert_eq!(
        trust().verify_directive(&big, NOW).unwrap_err(),
        Error::TooLarge("envelope payload")
    );
}

// ------------------------------------------------------------ whole update

#[test]
fn valid_update_is_accepted() {
    let dev = Dev::new();
    let m = manifest_pb();
    let menv = manifest_env(&m);
    let denv = directive_env(&directive_pb(&menv));
    let u = verify_update(&trust(), &denv, &menv, &dev.ctx()).unwrap();
    assert_eq!(u.manifest().digest(), u.directive().manifest_digest());
    assert_eq!(u.manifest().version(), Version::new(1, 1, 0));
    assert_eq!(u.directive().device_id(), &dev.id);
}

#[test]
fn update_refuses_another_devices_directive() {
    // Threat 10: B's directive given to A.
    let dev = Dev::new();
    let r = offer(&manifest_pb(), |d| d.device_id = "dev-b".into(), &dev.ctx());
    assert_eq!(r.unwrap_err(), Error::WrongDevice);
}

#[test]
fn update_refuses_a_replayed_directive() {
    // Threat 11: a directive captured in an earlier session echoes an old nonce.
    let dev = Dev::new();
    let r = offer(&manifest_pb(), |d| d.device_nonce = vec![8; 16], &dev.ctx());
    assert_eq!(r.unwrap_err(), Error::NonceMismatch);
}

#[test]
fn update_refuses_regressed_server_time() {
    // Threat 5: signed time older than what the device has already seen.
    let dev = Dev::new();
    let mut ctx = dev.ctx();
    ctx.time_floor = UnixTime(NOW.0 + 1);
    assert_eq!(
        offer(&manifest_pb(), |_| {}, &ctx).unwrap_err(),
        Error::ServerTimeRegressed {
            floor: UnixTime(NOW.0 + 1),
            offered: NOW
        }
    );
    ctx.time_floor = NOW;
    assert_eq!(offer(&manifest_pb(), |_| {}, &ctx), Ok(()));
}

#[test]
fn update_refuses_mix_and_match() {
    // Threat 8: the directive names release A, the manifest is release B,
    // both validly signed.
    let dev = Dev::new();
    let a = manifest_env(&manifest_pb());
    let mut mb = manifest_pb();
    mb.release_id = "sensor-1.2.0".into();
    mb.version = "1.2.0".into();
    let b = manifest_env(&mb);
    let denv = directive_env(&directive_pb(&a));
    assert_eq!(
        verify_update(&trust(), &denv, &b, &dev.ctx()).unwrap_err(),
        Error::ManifestMismatch
    );
    // The same manifest with an extra signature: the digest covers only the payload.
    let mut a2 = a.clone();
    add_signature(&mut a2, Domain::ReleaseManifest, &key(12));
    assert!(verify_update(&trust(), &denv, &a2, &dev.ctx()).is_ok());
}

#[test]
fn update_refuses_a_server_chosen_unsigned_or_altered_manifest() {
    // Threat 12: a compromised server signs a directive naming a manifest
    // the release key never signed.
    let dev = Dev::new();
    let mut m = manifest_pb();
    m.image_sha256 = vec![0xee; 32];
    for signers in [&[][..], &[21][..], &[1][..]] {
        let forged = sealed(&m, Domain::ReleaseManifest, signers);
        let denv = directive_env(&directive_pb(&forged));
        assert_eq!(
            verify_update(&trust(), &denv, &forged, &dev.ctx()).unwrap_err(),
            NOT_MET_1,
            "signers {signers:?}"
        );
    }
    // The release signature of the genuine manifest, on altered bytes.
    let mut altered = manifest_env(&manifest_pb());
    altered.payload = manifest_env(&m).payload;
    let denv = directive_env(&directive_pb(&altered));
    assert_eq!(
        verify_update(&trust(), &denv, &altered, &dev.ctx()).unwrap_err(),
        NOT_MET_1
    );
}

#[test]
fn update_refuses_a_directive_not_from_a_server_key() {
    let dev = Dev::new();
    let menv = manifest_env(&manifest_pb());
    let denv = sealed(&directive_pb(&menv), Domain::Directive, &[11]);
    assert_eq!(
        verify_update(&trust(), &denv, &menv, &dev.ctx()).unwrap_err(),
        NOT_MET_1
    );
}

#[test]
fn update_refuses_wrong_product() {
    let dev = Dev::new();
    let mut ctx = dev.ctx();
    ctx.product = "camera";
    assert_eq!(
        offer(&manifest_pb(), |_| {}, &ctx).unwrap_err(),
        Error::WrongProduct
    );
}

#[test]
fn update_refuses_wrong_hardware() {
    // Threat 9: a release for other hardware revisions.
    let dev = Dev::new();
    let mut ctx = dev.ctx();
    ctx.hardware = "rev-c";
    assert_eq!(
        offer(&manifest_pb(), |_| {}, &ctx).unwrap_err(),
        Error::IncompatibleHardware
    );
    // Exact match only: no prefix or case folding.
    ctx.hardware = "rev";
    assert_eq!(
        offer(&manifest_pb(), |_| {}, &ctx).unwrap_err(),
        Error::IncompatibleHardware
    );
    ctx.hardware = "REV-A";
    assert_eq!(
        offer(&manifest_pb(), |_| {}, &ctx).unwrap_err(),
        Error::IncompatibleHardware
    );
    ctx.hardware = "rev-a";
    assert_eq!(offer(&manifest_pb(), |_| {}, &ctx), Ok(()));
}

#[test]
fn update_refuses_security_version_below_floor() {
    // Threat 4: a validly signed release below the anti-rollback floor.
    let dev = Dev::new();
    let mut ctx = dev.ctx();
    ctx.security_floor = SecurityVersion(3);
    assert_eq!(
        offer(&manifest_pb(), |_| {}, &ctx).unwrap_err(),
        Error::SecurityVersionBelowFloor {
            floor: SecurityVersion(3),
            offered: SecurityVersion(2)
        }
    );
    ctx.security_floor = SecurityVersion(2);
    assert_eq!(offer(&manifest_pb(), |_| {}, &ctx), Ok(()));
}

#[test]
fn update_refuses_a_version_that_is_not_newer() {
    let dev = Dev::new();
    let mut ctx = dev.ctx();
    for current in [
        Version::new(1, 1, 0),
        Version::new(1, 10, 0),
        Version::new(2, 0, 0),
    ] {
        ctx.current_version = current;
        assert_eq!(
            offer(&manifest_pb(), |_| {}, &ctx).unwrap_err(),
            Error::NotNewer {
                current,
                offered: Version::new(1, 1, 0)
            }
        );
    }
}

#[test]
fn update_refuses_an_image_larger_than_the_slot() {
    // Threat 6 (declared size): the slot cannot hold the image.
    let dev = Dev::new();
    let mut ctx = dev.ctx();
    ctx.slot_capacity = 9_999;
    assert_eq!(
        offer(&manifest_pb(), |_| {}, &ctx).unwrap_err(),
        Error::ImageTooLarge {
            image_len: 10_000,
            capacity: 9_999
        }
    );
    ctx.slot_capacity = 10_000;
    assert_eq!(offer(&manifest_pb(), |_| {}, &ctx), Ok(()));
}

#[test]
fn update_refuses_expired_objects() {
    // Threat 5: an expired directive, an expired manifest, and a manifest
    // that only the (authenticated) server time shows to be expired.
    let dev = Dev::new();
    let ctx = dev.ctx();
    let exp = UnixTime(NOW.0 + 10);
    assert_eq!(
        offer(&manifest_pb(), |d| d.expires_at = NOW.0 - 1, &ctx).unwrap_err(),
        Error::Expired {
            expires_at: UnixTime(NOW.0 - 1),
            now: NOW
        }
    );
    let mut m = manifest_pb();
    m.expires_at = NOW.0 - 1;
    assert_eq!(
        offer(&m, |_| {}, &ctx).unwrap_err(),
        Error::Expired {
            expires_at: UnixTime(NOW.0 - 1),
            now: NOW
        }
    );
    let mut m = manifest_pb();
    m.expires_at = exp.0;
    let server_now = UnixTime(exp.0 + 1);
    assert_eq!(
        offer(&m, |d| d.server_time = server_now.0, &ctx).unwrap_err(),
        Error::Expired {
            expires_at: exp,
            now: server_now
        }
    );
}

#[test]
fn update_checks_come_in_the_documented_order() {
    // Everything wrong at once: the directive's binding to this device is
    // reported first, then the mix-and-match, then compatibility.
    let dev = Dev::new();
    let mut ctx = dev.ctx();
    ctx.product = "camera";
    ctx.slot_capacity = 1;
    let r = offer(
        &manifest_pb(),
        |d| {
            d.device_id = "dev-b".into();
            d.device_nonce = vec![0; 16];
            d.manifest_digest = vec![0; 32];
        },
        &ctx,
    );
    assert_eq!(r.unwrap_err(), Error::WrongDevice);
    let r = offer(
        &manifest_pb(),
        |d| {
            d.device_nonce = vec![0; 16];
            d.manifest_digest = vec![0; 32];
        },
        &ctx,
    );
    assert_eq!(r.unwrap_err(), Error::NonceMismatch);
    let r = offer(&manifest_pb(), |d| d.manifest_digest = vec![0; 32], &ctx);
    assert_eq!(r.unwrap_err(), Error::ManifestMismatch);
    assert_eq!(
        offer(&manifest_pb(), |_| {}, &ctx).unwrap_err(),
        Error::WrongProduct
    );
}

#[test]
fn update_refuses_an_oversized_manifest_envelope() {
    let dev = Dev::new();
    let big = pb::SignedEnvelope {
        payload: vec![0; MAX_ENVELOPE_LEN + 1],
        signatures: vec![],
    };
    let denv = directive_env(&directive_pb(&big));
    assert_eq!(
        verify_update(&trust(), &denv, &big, &dev.ctx()).unwrap_err(),
        Error::TooLarge("envelope payload")
    );
}

// ------------------------------------------------------ payload encodings

fn signature_only_manifest() -> pb::ReleaseManifest {
    pb::ReleaseManifest {
        payload_encoding: pb::PayloadEncoding::SignatureOnly as i32,
        chunk_root: vec![3; 32],
        nonce_prefix: Vec::new(),
        ..manifest_pb()
    }
}

#[test]
fn a_manifest_without_an_encoding_is_encrypted() {
    let m = trust()
        .verify_manifest(&manifest_env(&manifest_pb()), NOW)
        .unwrap();
    assert_eq!(m.payload_encoding(), pb::PayloadEncoding::Encrypted);
    assert!(!m.is_signature_only());
    let s = trust()
        .verify_manifest(&manifest_env(&signature_only_manifest()), NOW)
        .unwrap();
    assert!(s.is_signature_only());
    assert!(matches!(
        s.payload_layout(),
        aloft_protocol::signed_chunks::PayloadLayout::SignatureOnly(p) if p.root == Digest::from_bytes([3; 32])
    ));
}

#[test]
fn payload_encoding_fields_must_agree() {
    type Edit = fn(&mut pb::ReleaseManifest);
    let cases: &[(&str, Edit, Error)] = &[
        (
            "unknown encoding",
            |m| m.payload_encoding = 7,
            Error::InvalidField("payload encoding"),
        ),
        (
            "encrypted with a chunk root",
            |m| {
                m.payload_encoding = 0;
                m.nonce_prefix = vec![1; 7];
            },
            Error::InvalidField("chunk root (only signature-only releases have one)"),
        ),
        (
            "signature-only with a nonce prefix",
            |m| m.nonce_prefix = vec![1; 7],
            Error::InvalidField("nonce prefix (a signature-only release has none)"),
        ),
        (
            "signature-only without a root",
            |m| m.chunk_root.clear(),
            Error::InvalidField("chunk root (32 bytes)"),
        ),
    ];
    for (name, edit, want) in cases {
        let mut m = signature_only_manifest();
        edit(&mut m);
        assert_eq!(check_manifest(&m).unwrap_err(), *want, "{name}");
    }
}

#[test]
fn the_content_key_is_there_exactly_when_the_release_is_encrypted() {
    let dev = Dev::new();
    assert_eq!(
        offer(&manifest_pb(), |d| d.content_key = None, &dev.ctx()),
        Err(Error::InvalidField(
            "content key (missing for an encrypted release)"
        ))
    );
    assert_eq!(
        offer(&signature_only_manifest(), |_| {}, &dev.ctx()),
        Err(Error::InvalidField(
            "content key (given for a signature-only release)"
        ))
    );
    offer(
        &signature_only_manifest(),
        |d| d.content_key = None,
        &dev.ctx(),
    )
    .unwrap();
    offer(&manifest_pb(), |_| {}, &dev.ctx()).unwrap();
}
