//! `payload::ChunkDecryptor` fed an arbitrary layout (key, nonce prefix,
//! image digest, length, chunk size, resume point) and an arbitrary stream
//! of chunks (each a u16 length, `0xFFFF` meaning "the length this chunk
//! must have", then that many bytes).
//!
//! Properties: no panic, and no allocation by the decryptor (the harness
//! holds one buffer of at most one frame); the decryptor advances by
//! exactly one chunk on success and not at all on failure; a success
//! returns exactly that chunk's plaintext length; it refuses a wrongly
//! sized chunk as `ChunkLength` and anything after the last chunk as
//! `PayloadTooLong`; each accepted chunk re-encrypts (`encrypt_chunk`,
//! deterministic for a key and nonce) to exactly the bytes it came from.
#![no_main]

use aloft_fuzz::ops::{ChunkHeader, Reader};
use aloft_protocol::payload::{ChunkDecryptor, PayloadParams, TAG_LEN, encrypt_chunk};
use aloft_protocol::{ContentKey, Digest, Error, NoncePrefix};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let h = ChunkHeader::read(&mut r);
    let key = ContentKey::from_bytes(h.key);
    let params = PayloadParams {
        image_len: h.image_len,
        chunk_size: h.chunk_size,
        nonce_prefix: NoncePrefix::from_bytes(h.nonce_prefix),
        image_digest: Digest::from_bytes(h.image_digest),
    };
    let count = params.chunk_count();
    // A resume point anywhere up to one past the end.
    let resume = h.resume % count.saturating_add(2).max(1);
    let mut dec = match ChunkDecryptor::new(&key, params, resume) {
        Ok(dec) => dec,
        Err(_) => {
            assert!(params.validate().is_err() || resume > count);
            return;
        }
    };
    assert!(params.validate().is_ok() && resume <= count);
    let mut buf = Vec::new();
    let mut original = Vec::new();
    while !r.is_empty() {
        let index = dec.next_index();
        let expected = params.chunk_len(index);
        let frame = match r.u16() {
            u16::MAX => r.bytes(expected.unwrap_or(0)),
            n => r.bytes(usize::from(n)),
        };
        buf.clear();
        buf.extend_from_slice(frame);
        original.clear();
        original.extend_from_slice(frame);
        match dec.decrypt_next(&mut buf) {
            Ok(plain) => {
                assert_eq!(Some(plain.len() + TAG_LEN), expected);
                assert_eq!(frame.len(), plain.len() + TAG_LEN);
                assert_eq!(dec.next_index(), index + 1);
                let mut again = plain.to_vec();
                again.extend_from_slice(&[0; TAG_LEN]);
                encrypt_chunk(&key, &params, index, &mut again).expect("re-encrypts");
                assert_eq!(
                    again, original,
                    "chunk {index} does not re-encrypt to itself"
                );
            }
            Err(e) => {
                assert_eq!(dec.next_index(), index, "advanced on failure");
                match e {
                    Error::PayloadTooLong => assert!(index >= count),
                    Error::ChunkLength { index: i } => {
                        assert_eq!(i, index);
                        assert_ne!(Some(frame.len()), expected);
                    }
                    Error::ChunkAuthentication { index: i } => {
                        assert_eq!(i, index);
                        assert_eq!(Some(frame.len()), expected);
                    }
                    other => panic!("unexpected error {other:?}"),
                }
            }
        }
        assert_eq!(dec.is_finished(), dec.next_index() == count);
    }
});
