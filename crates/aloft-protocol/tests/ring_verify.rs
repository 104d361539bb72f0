//! Differential test: the ring-backed verifier accepts exactly the signatures
//! the `p256` verifier accepts (valid, tampered, wrong key, wrong domain,
//! high-S, malformed), directly and through `device_msg::open`.
#![cfg(feature = "ring-verify")]

use aloft_protocol::keys::{Domain, SignatureVerifier};
use aloft_protocol::ring_verify::RingPublicKey;
use aloft_protocol::{Error, PublicKey, SecretKey, Signature, device_msg, pb};

const DOMAINS: [Domain; 4] = [
    Domain::TrustRoot,
    Domain::ReleaseManifest,
    Domain::Directive,
    Domain::DeviceMessage,
];

/// The P-256 group order n, big-endian.
const N: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];

/// `a - b` for 256-bit big-endian numbers with `a >= b`.
fn sub(a: &[u8; 32], b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    assert_eq!(borrow, 0);
    out
}

/// `a + k` for a small `k` (no overflow past 2^256 for the values used).
fn add_small(a: &[u8; 32], k: u8) -> [u8; 32] {
    let mut out = *a;
    let mut carry = u16::from(k);
    for byte in out.iter_mut().rev() {
        let v = u16::from(*byte) + carry;
        *byte = v as u8;
        carry = v >> 8;
    }
    out
}

fn sig(r: &[u8], s: &[u8]) -> Signature {
    Signature::from_slice(&[r, s].concat()).unwrap()
}

/// Both verifiers' verdicts; the test asserts they are equal.
fn both(key: &PublicKey, domain: Domain, msg: &[u8], sig: &Signature) -> [Result<(), Error>; 2] {
    let ring = RingPublicKey::new(key);
    [key.verify(domain, msg, sig), ring.verify(domain, msg, sig)]
}

fn assert_agree(key: &PublicKey, domain: Domain, msg: &[u8], sig: &Signature, expect_ok: bool) {
    let [p256, ring] = both(key, domain, msg, sig);
    assert_eq!(
        p256,
        ring,
        "p256 and ring disagree ({domain:?}, {} byte message)",
        msg.len()
    );
    let expected = if expect_ok {
        Ok(())
    } else {
        Err(Error::BadSignature)
    };
    assert_eq!(p256, expected, "({domain:?}, {} byte message)", msg.len());
}

fn keys(n: u8) -> Vec<SecretKey> {
    (1..=n)
        .map(|i| SecretKey::from_slice(&[i; 32]).unwrap())
        .collect()
}

fn messages() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        b"a".to_vec(),
        b"hello, device".to_vec(),
        (0..=255).collect(),
        vec![0xA5; 8192],
    ]
}

#[test]
fn valid_signatures_verify_with_both() {
    for secret in keys(8) {
        let public = secret.public_key();
        for domain in DOMAINS {
            for msg in messages() {
                let s = secret.sign(domain, &msg);
                assert_agree(&public, domain, &msg, &s, true);
            }
        }
    }
    // Keys given in compressed form verify the same.
    let secret = SecretKey::generate();
    let compressed = PublicKey::from_sec1(&secret.public_key().to_sec1_compressed()).unwrap();
    let s = secret.sign(Domain::DeviceMessage, b"m");
    assert_agree(&compressed, Domain::DeviceMessage, b"m", &s, true);
}

#[test]
fn tampered_signatures_and_messages_fail_with_both() {
    let secret = SecretKey::generate();
    let public = secret.public_key();
    let msg = b"a device message".to_vec();
    let good = secret.sign(Domain::DeviceMessage, &msg);
    for i in 0..64 {
        for bit in [0x01u8, 0x80] {
            let mut bytes = *good.as_bytes();
            bytes[i] ^= bit;
            let bad = Signature::from_slice(&bytes).unwrap();
            assert_agree(&public, Domain::DeviceMessage, &msg, &bad, false);
        }
    }
    for i in 0..msg.len() {
        let mut m = msg.clone();
        m[i] ^= 0x04;
        assert_agree(&public, Domain::DeviceMessage, &m, &good, false);
    }
    // Truncated and extended messages.
    assert_agree(
        &public,
        Domain::DeviceMessage,
        &msg[..msg.len() - 1],
        &good,
        false,
    );
    assert_agree(
        &public,
        Domain::DeviceMessage,
        &[&msg[..], b"x"].concat(),
        &good,
        false,
    );
    // The domain tag moved into the message is not the same signed bytes
    // for the p256 verifier's prehash either: both refuse.
    let shifted = [Domain::DeviceMessage.tag(), &msg[..]].concat();
    assert_agree(&public, Domain::DeviceMessage, &shifted, &good, false);
}

#[test]
fn wrong_key_and_wrong_domain_fail_with_both() {
    let all = keys(4);
    let msg = b"report".to_vec();
    for (i, signer) in all.iter().enumerate() {
        let s = signer.sign(Domain::DeviceMessage, &msg);
        for (j, other) in all.iter().enumerate() {
            assert_agree(&other.public_key(), Domain::DeviceMessage, &msg, &s, i == j);
        }
        for domain in DOMAINS {
            assert_agree(
                &signer.public_key(),
                domain,
                &msg,
                &s,
                domain == Domain::DeviceMessage,
            );
        }
    }
}

#[test]
fn high_s_signatures_are_accepted_by_both() {
    // Neither verifier enforces low-S: (r, n - s) is the same signature's
    // twin and both accept it. (Devices sign low-S; malleability does not
    // matter here because messages are bound by challenge and sequence.)
    for secret in keys(16) {
        let msg = b"malleable?";
        let s = secret.sign(Domain::DeviceMessage, msg);
        let (r, s_low) = s.as_bytes().split_at(32);
        let high = sig(r, &sub(&N, s_low));
        assert_ne!(high, s);
        assert_agree(
            &secret.public_key(),
            Domain::DeviceMessage,
            msg,
            &high,
            true,
        );
    }
}

#[test]
fn malformed_signatures_fail_with_both() {
    let secret = SecretKey::generate();
    let public = secret.public_key();
    let msg = b"m";
    let good = secret.sign(Domain::DeviceMessage, msg);
    let (r, s) = good.as_bytes().split_at(32);
    let r: [u8; 32] = r.try_into().unwrap();
    let s: [u8; 32] = s.try_into().unwrap();
    let zero = [0u8; 32];
    let n_minus_1 = sub(&N, &{
        let mut one = [0u8; 32];
        one[31] = 1;
        one
    });
    let cases = [
        sig(&zero, &zero),
        sig(&zero, &s),
        sig(&r, &zero),
        sig(&N, &s),
        sig(&r, &N),
        // n + 1: out of range as an encoding, though 1 as a residue.
        sig(&add_small(&N, 1), &s),
        sig(&r, &add_small(&N, 1)),
        sig(&[0xFF; 32], &s),
        sig(&r, &[0xFF; 32]),
        sig(&[0xFF; 32], &[0xFF; 32]),
        sig(&n_minus_1, &n_minus_1),
        // r and s swapped.
        sig(&s, &r),
    ];
    for (i, case) in cases.iter().enumerate() {
        assert_ne!(case, &good, "case {i}");
        assert_agree(&public, Domain::DeviceMessage, msg, case, false);
    }
    // Wrong lengths never become a Signature at all.
    for len in [0, 32, 63, 65, 72] {
        assert_eq!(
            Signature::from_slice(&vec![1u8; len]),
            Err(Error::BadSignature)
        );
    }
}

#[test]
fn random_keys_and_messages_agree() {
    // A seeded sweep: random messages, the right signature and a corrupted
    // one, against the right key and a random other key.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..64 {
        let secret = SecretKey::generate();
        let other = SecretKey::generate().public_key();
        let len = (next() % 300) as usize;
        let msg: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let good = secret.sign(Domain::DeviceMessage, &msg);
        assert_agree(
            &secret.public_key(),
            Domain::DeviceMessage,
            &msg,
            &good,
            true,
        );
        assert_agree(&other, Domain::DeviceMessage, &msg, &good, false);
        let mut bytes = *good.as_bytes();
        bytes[(next() % 64) as usize] ^= 1 << (next() % 8);
        let bad = Signature::from_slice(&bytes).unwrap();
        assert_agree(
            &secret.public_key(),
            Domain::DeviceMessage,
            &msg,
            &bad,
            false,
        );
    }
}

#[test]
fn device_messages_open_the_same_with_both() {
    let secret = SecretKey::generate();
    let public = secret.public_key();
    let ring = RingPublicKey::from(&public);
    let challenge = [7u8; 32];
    let msg = pb::DeviceMessage {
        device_id: "dev-1".into(),
        challenge: challenge.to_vec(),
        seq: 1,
        body: None,
    };
    let signed = device_msg::seal(&msg, &secret);
    assert_eq!(
        device_msg::open(&signed, &ring, &challenge, 1),
        Ok(msg.clone())
    );
    assert_eq!(
        device_msg::open(&signed, &ring, &challenge, 1),
        device_msg::open(&signed, &public, &challenge, 1)
    );
    // A flipped payload byte, another key, a signature in another domain.
    let mut tampered = signed.clone();
    tampered.payload[0] ^= 1;
    let other = RingPublicKey::new(&SecretKey::generate().public_key());
    let mut other_domain = signed.clone();
    other_domain.signature = secret
        .sign(Domain::Directive, &signed.payload)
        .as_bytes()
        .to_vec();
    for (name, s, k) in [
        ("tampered", &tampered, &ring),
        ("other key", &signed, &other),
        ("other domain", &other_domain, &ring),
    ] {
        assert_eq!(
            device_msg::open(s, k, &challenge, 1),
            Err(Error::BadSignature),
            "{name}"
        );
    }
    assert_eq!(
        device_msg::open(&tampered, &public, &challenge, 1),
        Err(Error::BadSignature)
    );
    // Through the trait object too.
    let verifier: &dyn SignatureVerifier = &ring;
    assert_eq!(device_msg::open(&signed, verifier, &challenge, 1), Ok(msg));
}
