//! A signed device message from arbitrary bytes: `device_msg::peek` (what
//! the server reads before it knows the key) and `device_msg::open` with
//! the device's key, the session challenge and a sequence number, by both
//! verifiers (`p256` and ring).
//!
//! Properties: no panic; `open` accepts only what `peek` accepts, with the
//! same message, this challenge and the expected seq; the two verifiers
//! accept exactly the same messages; a peeked message re-encodes and
//! decodes to itself and, sealed again, opens (RFC 6979 signing).
#![no_main]

use aloft_fuzz::fixtures::{CHALLENGE, DEVICE_KEY, key};
use aloft_protocol::limits::MAX_REPORTS_PER_HELLO;
use aloft_protocol::pb::device_message::Body;
use aloft_protocol::prost::Message as _;
use aloft_protocol::ring_verify::RingPublicKey;
use aloft_protocol::{device_msg, pb};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(signed) = pb::SignedDeviceMessage::decode(data) else {
        return;
    };
    let secret = key(DEVICE_KEY);
    let public = secret.public_key();
    let ring = RingPublicKey::new(&public);
    let peeked = device_msg::peek(&signed);
    let seqs = [1, peeked.as_ref().map_or(2, |m| m.seq)];
    for seq in seqs {
        let opened = device_msg::open(&signed, &public, &CHALLENGE, seq);
        let by_ring = device_msg::open(&signed, &ring, &CHALLENGE, seq);
        assert_eq!(opened, by_ring, "p256 and ring disagree");
        if let Ok(m) = &opened {
            assert_eq!(peeked.as_ref(), Ok(m));
            assert_eq!(m.challenge, CHALLENGE);
            assert_eq!(m.seq, seq);
        }
    }
    let Ok(message) = peeked else {
        return;
    };
    if let Some(Body::Hello(hello)) = &message.body {
        assert!(hello.reports.len() <= MAX_REPORTS_PER_HELLO);
    }
    let bytes = message.encode_to_vec();
    assert!(
        bytes.len() <= signed.payload.len(),
        "re-encoding grew the message"
    );
    assert_eq!(
        pb::DeviceMessage::decode(bytes.as_slice()).as_ref(),
        Ok(&message)
    );
    let resealed = device_msg::seal(&message, &secret);
    assert_eq!(
        device_msg::open(&resealed, &public, &message.challenge, message.seq).as_ref(),
        Ok(&message)
    );
});
