//! The chunked AES-256-GCM payload: layout arithmetic, round trips, resume,
//! and every stream manipulation (bit flips, reordering, dropping, duplicating,
//! extending, truncating, splicing from another release) caught at or before
//! the affected chunk with none of its plaintext released.
//!
//! Run with `--features std` (encryption needs `sign`).
#![cfg(feature = "sign")]

use aloft_protocol::limits::{MAX_CHUNK_SIZE, MAX_IMAGE_LEN, MIN_CHUNK_SIZE};
use aloft_protocol::payload::{
    ChunkDecryptor, PayloadParams, TAG_LEN, encrypt_chunk, encrypt_payload,
};
use aloft_protocol::{ContentKey, Digest, Error, NoncePrefix};
use proptest::prelude::*;

const KEY: ContentKey = ContentKey::from_bytes([0x42; 32]);
const PREFIX: NoncePrefix = NoncePrefix::from_bytes([9, 8, 7, 6, 5, 4, 3]);

fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn params_for(image: &[u8], chunk_size: u32) -> PayloadParams {
    PayloadParams {
        image_len: image.len() as u64,
        chunk_size,
        nonce_prefix: PREFIX,
        image_digest: Digest::of(image),
    }
}

/// The wire payload cut into its chunks.
fn split(params: &PayloadParams, payload: &[u8]) -> Vec<Vec<u8>> {
    (0..params.chunk_count())
        .map(|i| {
            let start = params.chunk_offset(i) as usize;
            payload[start..start + params.chunk_len(i).unwrap()].to_vec()
        })
        .collect()
}

/// Encrypts chunk by chunk with `encrypt_chunk`, which (unlike
/// `encrypt_payload`) does not insist that the digest matches the image: lets
/// a test build a release that differs from another in one parameter only.
fn encrypt_chunks(key: &ContentKey, params: &PayloadParams, image: &[u8]) -> Vec<Vec<u8>> {
    (0..params.chunk_count())
        .map(|i| {
            let start = params.chunk_offset(i) as usize - i as usize * TAG_LEN;
            let mut buf = image[start..start + params.plaintext_len(i).unwrap()].to_vec();
            buf.extend_from_slice(&[0; TAG_LEN]);
            encrypt_chunk(key, params, i, &mut buf).unwrap();
            buf
        })
        .collect()
}

/// What a device gets from feeding `frames` in order, stopping at the first
/// refusal.
struct Outcome {
    /// Plaintext of every accepted chunk, in order.
    accepted: Vec<Vec<u8>>,
    /// Index in `frames` and error of the first refusal.
    refused: Option<(usize, Error)>,
    finished: bool,
}

fn feed(key: &ContentKey, params: PayloadParams, frames: &[Vec<u8>]) -> Outcome {
    let mut dec = ChunkDecryptor::new(key, params, 0).unwrap();
    let mut accepted = Vec::new();
    let mut refused = None;
    for (pos, frame) in frames.iter().enumerate() {
        let mut buf = frame.clone();
        let before = dec.next_index();
        match dec.decrypt_next(&mut buf) {
            Ok(plaintext) => accepted.push(plaintext.to_vec()),
            Err(e) => {
                assert_eq!(dec.next_index(), before, "a refusal must not advance");
                refused = Some((pos, e));
                break;
            }
        }
    }
    Outcome {
        accepted,
        refused,
        finished: dec.is_finished(),
    }
}

/// The security property of a manipulated stream: every chunk released is the
/// genuine plaintext of its index; the first frame that differs from the
/// genuine stream is refused (at or before it); and the stream only finishes
/// if it is exactly the genuine one.
fn assert_detected(genuine: &[Vec<u8>], plaintext: &[Vec<u8>], frames: &[Vec<u8>], out: &Outcome) {
    for (i, p) in out.accepted.iter().enumerate() {
        assert_eq!(p, &plaintext[i], "chunk {i} released wrong plaintext");
    }
    let first_bad = (0..frames.len()).find(|&j| genuine.get(j) != Some(&frames[j]));
    if let Some(j) = first_bad {
        let (pos, _) = out.refused.as_ref().expect("manipulated stream accepted");
        assert!(*pos <= j, "refused at {pos}, after the bad frame {j}");
        assert!(out.accepted.len() <= j);
    }
    if out.finished {
        // Finishing means the whole genuine stream was accepted; anything
        // after it (an extension) must have been refused as too long.
        assert!(frames.len() >= genuine.len() && frames[..genuine.len()] == *genuine);
        if frames.len() > genuine.len() {
            assert_eq!(out.refused, Some((genuine.len(), Error::PayloadTooLong)));
        }
    }
}

fn plaintext_chunks(params: &PayloadParams, image: &[u8]) -> Vec<Vec<u8>> {
    image
        .chunks(params.chunk_size as usize)
        .map(<[u8]>::to_vec)
        .collect()
}

// ---------------------------------------------------------------- layout

#[test]
fn layout_arithmetic() {
    let p = PayloadParams {
        image_len: 1000,
        chunk_size: 256,
        nonce_prefix: PREFIX,
        image_digest: Digest::from_bytes([0; 32]),
    };
    assert_eq!(p.chunk_count(), 4);
    assert_eq!(p.plaintext_len(0), Some(256));
    assert_eq!(p.plaintext_len(3), Some(1000 - 768));
    assert_eq!(p.plaintext_len(4), None);
    assert_eq!(p.chunk_len(3), Some(232 + TAG_LEN));
    assert_eq!(p.chunk_len(4), None);
    assert_eq!(p.payload_len(), 1000 + 4 * 16);
    assert_eq!(p.chunk_offset(0), 0);
    assert_eq!(p.chunk_offset(3), 3 * 272);
    assert_eq!(p.chunk_offset(4), p.payload_len());
    assert_eq!(p.chunk_offset(u32::MAX), p.payload_len());

    let exact = PayloadParams {
        image_len: 512,
        ..p
    };
    assert_eq!(exact.chunk_count(), 2);
    assert_eq!(exact.plaintext_len(1), Some(256));
}

#[test]
fn layout_arithmetic_does_not_overflow() {
    let max = PayloadParams {
        image_len: MAX_IMAGE_LEN,
        chunk_size: MIN_CHUNK_SIZE,
        nonce_prefix: PREFIX,
        image_digest: Digest::from_bytes([0; 32]),
    };
    let n = max.chunk_count();
    assert_eq!(u64::from(n), MAX_IMAGE_LEN / u64::from(MIN_CHUNK_SIZE));
    assert_eq!(max.payload_len(), MAX_IMAGE_LEN + u64::from(n) * 16);
    assert_eq!(
        max.chunk_offset(n - 1) + max.chunk_len(n - 1).unwrap() as u64,
        max.payload_len()
    );

    // Far outside the limits: no panic, no wrap-around.
    let zero = PayloadParams {
        chunk_size: 0,
        ..max
    };
    assert_eq!(zero.chunk_count(), 0);
    assert_eq!(zero.plaintext_len(0), None);
    assert_eq!(zero.chunk_len(0), None);
    assert_eq!(zero.chunk_offset(7), zero.payload_len());
    let huge = PayloadParams {
        image_len: u64::MAX,
        chunk_size: 1,
        ..max
    };
    assert_eq!(huge.chunk_count(), u32::MAX);
    assert_eq!(huge.payload_len(), u64::MAX);
    assert_eq!(huge.plaintext_len(u32::MAX - 1), Some(1));
    let _ = huge.chunk_offset(u32::MAX - 1);
    let wide = PayloadParams {
        image_len: u64::MAX,
        chunk_size: u32::MAX,
        ..max
    };
    assert_eq!(
        wide.plaintext_len(wide.chunk_count() - 1),
        Some(u32::MAX as usize)
    );
}

#[test]
fn layouts_outside_the_limits_are_refused() {
    let img = image(1000, 1);
    let good = params_for(&img, MIN_CHUNK_SIZE);
    assert!(good.validate().is_ok());
    let cases = [
        (
            PayloadParams {
                chunk_size: 0,
                ..good
            },
            Error::InvalidField("chunk size"),
        ),
        (
            PayloadParams {
                chunk_size: MIN_CHUNK_SIZE - 1,
                ..good
            },
            Error::InvalidField("chunk size"),
        ),
        (
            PayloadParams {
                chunk_size: MAX_CHUNK_SIZE + 1,
                ..good
            },
            Error::InvalidField("chunk size"),
        ),
        (
            PayloadParams {
                image_len: 0,
                ..good
            },
            Error::InvalidField("image length"),
        ),
        (
            PayloadParams {
                image_len: MAX_IMAGE_LEN + 1,
                ..good
            },
            Error::TooLarge("image length"),
        ),
    ];
    for (params, err) in cases {
        assert_eq!(params.validate(), Err(err.clone()));
        assert_eq!(ChunkDecryptor::new(&KEY, params, 0).unwrap_err(), err);
        let mut buf = vec![0; 256 + TAG_LEN];
        assert_eq!(encrypt_chunk(&KEY, &params, 0, &mut buf), Err(err.clone()));
        assert_eq!(encrypt_payload(&KEY, &params, &img), Err(err));
    }
    // The limits themselves are accepted.
    assert!(
        PayloadParams {
            chunk_size: MAX_CHUNK_SIZE,
            ..good
        }
        .validate()
        .is_ok()
    );
    assert!(
        PayloadParams {
            image_len: MAX_IMAGE_LEN,
            ..good
        }
        .validate()
        .is_ok()
    );
}

// ---------------------------------------------------------------- round trips

#[test]
fn round_trip_around_chunk_boundaries() {
    let cs = 256usize;
    for len in [
        1,
        cs - 1,
        cs,
        cs + 1,
        2 * cs,
        5 * cs - 1,
        5 * cs + 17,
        8 * cs,
    ] {
        let img = image(len, len as u8);
        let params = params_for(&img, cs as u32);
        let payload = encrypt_payload(&KEY, &params, &img).unwrap();
        assert_eq!(payload.len() as u64, params.payload_len(), "len {len}");
        assert_eq!(params.chunk_count() as usize, len.div_ceil(cs));

        let mut dec = ChunkDecryptor::new(&KEY, params, 0).unwrap();
        let mut out = Vec::new();
        for mut chunk in split(&params, &payload) {
            assert!(!dec.is_finished());
            out.extend_from_slice(dec.decrypt_next(&mut chunk).unwrap());
        }
        assert!(dec.is_finished(), "len {len}");
        assert_eq!(out, img, "len {len}");
        // Nothing more is accepted after the last chunk.
        let mut extra = vec![0; params.chunk_len(0).unwrap()];
        assert_eq!(dec.decrypt_next(&mut extra), Err(Error::PayloadTooLong));
        assert_eq!(dec.decrypt_next(&mut []), Err(Error::PayloadTooLong));
    }
}

#[test]
fn ciphertext_is_not_the_plaintext() {
    let img = vec![0u8; 600];
    let params = params_for(&img, 256);
    let payload = encrypt_payload(&KEY, &params, &img).unwrap();
    // Zero plaintext under AES-CTR gives the keystream, which is not zero.
    assert!(payload[..600].iter().filter(|&&b| b == 0).count() < 20);
}

#[test]
fn encrypt_payload_equals_encrypt_chunk() {
    let img = image(1000, 3);
    let params = params_for(&img, 300);
    let payload = encrypt_payload(&KEY, &params, &img).unwrap();
    assert_eq!(
        split(&params, &payload),
        encrypt_chunks(&KEY, &params, &img)
    );
}

#[test]
fn resume_from_a_middle_chunk() {
    let img = image(7 * 256 + 5, 11);
    let params = params_for(&img, 256);
    let chunks = split(&params, &encrypt_payload(&KEY, &params, &img).unwrap());
    for start in 0..=params.chunk_count() {
        let mut dec = ChunkDecryptor::new(&KEY, params, start).unwrap();
        assert_eq!(dec.next_index(), start);
        let mut out = Vec::new();
        for chunk in &chunks[start as usize..] {
            out.extend_from_slice(dec.decrypt_next(&mut chunk.clone()).unwrap());
        }
        assert!(dec.is_finished());
        assert_eq!(out, img[(start as usize * 256).min(img.len())..]);
    }
}

#[test]
fn resume_past_the_end_is_refused() {
    let img = image(1000, 0);
    let params = params_for(&img, 256);
    assert!(ChunkDecryptor::new(&KEY, params, 4).unwrap().is_finished());
    assert_eq!(
        ChunkDecryptor::new(&KEY, params, 5).unwrap_err(),
        Error::InvalidField("resume chunk index")
    );
    assert!(ChunkDecryptor::new(&KEY, params, u32::MAX).is_err());
}

#[test]
fn resume_with_the_wrong_chunk_is_refused() {
    let img = image(1000, 0);
    let params = params_for(&img, 256);
    let chunks = split(&params, &encrypt_payload(&KEY, &params, &img).unwrap());
    // The device thinks it is at chunk 2 but the server sends chunk 1.
    let mut dec = ChunkDecryptor::new(&KEY, params, 2).unwrap();
    assert_eq!(
        dec.decrypt_next(&mut chunks[1].clone()),
        Err(Error::ChunkAuthentication { index: 2 })
    );
    assert_eq!(dec.next_index(), 2);
}

// ---------------------------------------------------------------- refusals

#[test]
fn wrong_chunk_length_is_refused_without_advancing() {
    let img = image(1000, 5);
    let params = params_for(&img, 256);
    let chunks = split(&params, &encrypt_payload(&KEY, &params, &img).unwrap());
    let mut dec = ChunkDecryptor::new(&KEY, params, 0).unwrap();

    let mut short = chunks[0][..chunks[0].len() - 1].to_vec();
    assert_eq!(
        dec.decrypt_next(&mut short),
        Err(Error::ChunkLength { index: 0 })
    );
    let mut long = chunks[0].clone();
    long.push(0);
    assert_eq!(
        dec.decrypt_next(&mut long),
        Err(Error::ChunkLength { index: 0 })
    );
    assert_eq!(
        dec.decrypt_next(&mut []),
        Err(Error::ChunkLength { index: 0 })
    );
    assert_eq!(dec.next_index(), 0);

    // The genuine chunk is still accepted at the same index.
    assert_eq!(
        dec.decrypt_next(&mut chunks[0].clone()).unwrap(),
        &img[..256]
    );
    assert_eq!(dec.next_index(), 1);
}

#[test]
fn failed_authentication_does_not_advance_and_releases_nothing() {
    let img = image(1000, 6);
    let params = params_for(&img, 256);
    let chunks = split(&params, &encrypt_payload(&KEY, &params, &img).unwrap());
    let mut dec = ChunkDecryptor::new(&KEY, params, 0).unwrap();
    let mut bad = chunks[0].clone();
    bad[10] ^= 0x80;
    assert_eq!(
        dec.decrypt_next(&mut bad),
        Err(Error::ChunkAuthentication { index: 0 })
    );
    assert_eq!(dec.next_index(), 0);
    assert!(!dec.is_finished());
    assert_eq!(
        dec.decrypt_next(&mut chunks[0].clone()).unwrap(),
        &img[..256]
    );
}

/// The last-chunk flag: a stream cut at a chunk boundary cannot be passed off
/// as complete, even under a layout that claims the shorter length with the
/// same key, prefix and digest.
#[test]
fn a_non_final_chunk_cannot_pose_as_the_last() {
    let img = image(3 * 256, 7);
    let params = params_for(&img, 256);
    let chunks = split(&params, &encrypt_payload(&KEY, &params, &img).unwrap());
    let shorter = PayloadParams {
        image_len: 2 * 256,
        ..params
    };
    let mut dec = ChunkDecryptor::new(&KEY, shorter, 0).unwrap();
    assert!(dec.decrypt_next(&mut chunks[0].clone()).is_ok());
    assert_eq!(
        dec.decrypt_next(&mut chunks[1].clone()),
        Err(Error::ChunkAuthentication { index: 1 })
    );
    assert!(!dec.is_finished());
}

#[test]
fn encrypt_refuses_mismatched_inputs() {
    let img = image(1000, 8);
    let params = params_for(&img, 256);
    assert_eq!(
        encrypt_payload(&KEY, &params, &img[..999]),
        Err(Error::InvalidField("image length"))
    );
    let mut other = img.clone();
    other[500] ^= 1;
    assert_eq!(
        encrypt_payload(&KEY, &params, &other),
        Err(Error::InvalidField("image digest"))
    );

    let mut buf = vec![0; 256 + TAG_LEN - 1];
    assert_eq!(
        encrypt_chunk(&KEY, &params, 0, &mut buf),
        Err(Error::ChunkLength { index: 0 })
    );
    let mut buf = vec![0; 256 + TAG_LEN];
    assert_eq!(
        encrypt_chunk(&KEY, &params, 3, &mut buf),
        Err(Error::ChunkLength { index: 3 })
    );
    assert_eq!(
        encrypt_chunk(&KEY, &params, 4, &mut buf),
        Err(Error::PayloadTooLong)
    );
}

/// Mix-and-match: the chunks of a release that differs in only the key, the
/// nonce prefix or the image digest (same plaintext, same layout) are refused
/// one by one under this release's parameters.
#[test]
fn chunks_of_another_release_are_refused() {
    let img = image(3 * 256 + 9, 10);
    let params = params_for(&img, 256);
    let others = [
        (ContentKey::from_bytes([0x43; 32]), params),
        (
            KEY,
            PayloadParams {
                nonce_prefix: NoncePrefix::from_bytes([0; 7]),
                ..params
            },
        ),
        (
            KEY,
            PayloadParams {
                image_digest: Digest::of(b"release B"),
                ..params
            },
        ),
    ];
    for (key, other) in &others {
        let chunks = encrypt_chunks(key, other, &img);
        // Sanity: they are that release's valid chunks.
        let mut dec = ChunkDecryptor::new(key, *other, 0).unwrap();
        for c in &chunks {
            dec.decrypt_next(&mut c.clone()).unwrap();
        }
        for (i, c) in chunks.iter().enumerate() {
            let i = i as u32;
            let mut dec = ChunkDecryptor::new(&KEY, params, i).unwrap();
            assert_eq!(
                dec.decrypt_next(&mut c.clone()),
                Err(Error::ChunkAuthentication { index: i }),
                "{other:?}"
            );
        }
    }
}

/// Every single bit of a three-chunk payload, flipped one at a time.
#[test]
fn every_single_bit_flip_is_detected() {
    let img = image(2 * 256 + 40, 9);
    let params = params_for(&img, 256);
    let payload = encrypt_payload(&KEY, &params, &img).unwrap();
    let genuine = split(&params, &payload);
    let plain = plaintext_chunks(&params, &img);
    for bit in 0..payload.len() * 8 {
        let mut p = payload.clone();
        p[bit / 8] ^= 1 << (bit % 8);
        let frames = split(&params, &p);
        let out = feed(&KEY, params, &frames);
        let chunk = (0..params.chunk_count())
            .rfind(|&i| params.chunk_offset(i) as usize <= bit / 8)
            .unwrap();
        assert_eq!(
            out.refused.as_ref().map(|r| &r.1),
            Some(&Error::ChunkAuthentication { index: chunk }),
            "bit {bit}"
        );
        assert_detected(&genuine, &plain, &frames, &out);
    }
}

// ---------------------------------------------------------------- properties

/// A manipulation of the chunk stream.
#[derive(Clone, Debug)]
enum Attack {
    FlipBit(usize),
    Swap(usize, usize),
    Drop(usize),
    Duplicate(usize),
    AppendChunk(Vec<u8>),
    AppendCopy(usize),
    AppendBytes(Vec<u8>),
    TruncateLast(usize),
    /// Replace chunk `i` with chunk `i` of another release.
    Splice(usize, Other),
}

/// How the other release differs.
#[derive(Clone, Copy, Debug)]
enum Other {
    Key,
    NoncePrefix,
    Digest,
}

fn attack() -> impl Strategy<Value = Attack> {
    prop_oneof![
        any::<usize>().prop_map(Attack::FlipBit),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Attack::Swap(a, b)),
        any::<usize>().prop_map(Attack::Drop),
        any::<usize>().prop_map(Attack::Duplicate),
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(Attack::AppendChunk),
        any::<usize>().prop_map(Attack::AppendCopy),
        proptest::collection::vec(any::<u8>(), 1..40).prop_map(Attack::AppendBytes),
        any::<usize>().prop_map(Attack::TruncateLast),
        (
            any::<usize>(),
            prop_oneof![
                Just(Other::Key),
                Just(Other::NoncePrefix),
                Just(Other::Digest)
            ]
        )
            .prop_map(|(i, o)| Attack::Splice(i, o)),
    ]
}

/// Applies `attack`; `None` if it does not apply to this stream (for example
/// swapping in a one-chunk stream).
fn apply(
    attack: &Attack,
    params: &PayloadParams,
    image: &[u8],
    genuine: &[Vec<u8>],
) -> Option<Vec<Vec<u8>>> {
    let n = genuine.len();
    let mut frames = genuine.to_vec();
    match attack {
        Attack::FlipBit(bit) => {
            let total: usize = frames.iter().map(Vec::len).sum();
            let mut bit = bit % (total * 8);
            for f in &mut frames {
                if bit < f.len() * 8 {
                    f[bit / 8] ^= 1 << (bit % 8);
                    break;
                }
                bit -= f.len() * 8;
            }
        }
        Attack::Swap(a, b) => {
            let (a, b) = (a % n, b % n);
            if a == b {
                return None;
            }
            frames.swap(a, b);
        }
        Attack::Drop(i) => {
            frames.remove(i % n);
        }
        Attack::Duplicate(i) => {
            let i = i % n;
            frames.insert(i + 1, frames[i].clone());
        }
        Attack::AppendChunk(bytes) => frames.push(bytes.clone()),
        Attack::AppendCopy(i) => frames.push(frames[i % n].clone()),
        Attack::AppendBytes(bytes) => frames[n - 1].extend_from_slice(bytes),
        Attack::TruncateLast(k) => {
            let last = &mut frames[n - 1];
            let cut = 1 + k % last.len();
            last.truncate(last.len() - cut);
        }
        Attack::Splice(i, other) => {
            let (key, other_params) = match other {
                Other::Key => (ContentKey::from_bytes([0x43; 32]), *params),
                Other::NoncePrefix => (
                    KEY,
                    PayloadParams {
                        nonce_prefix: NoncePrefix::from_bytes([9, 8, 7, 6, 5, 4, 2]),
                        ..*params
                    },
                ),
                Other::Digest => (
                    KEY,
                    PayloadParams {
                        image_digest: Digest::of(b"another release"),
                        ..*params
                    },
                ),
            };
            // Same plaintext, same layout: only the one parameter differs.
            let i = i % n;
            frames[i] = encrypt_chunks(&key, &other_params, image).swap_remove(i);
            assert!(
                frames[i] != genuine[i],
                "{other:?} must change the ciphertext"
            );
        }
    }
    Some(frames)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn manipulated_streams_are_detected(
        len in 1usize..1600,
        chunk_size in 256u32..520,
        seed in any::<u8>(),
        attack in attack(),
    ) {
        let img = image(len, seed);
        let params = params_for(&img, chunk_size);
        let genuine = split(&params, &encrypt_payload(&KEY, &params, &img).unwrap());
        let plain = plaintext_chunks(&params, &img);
        let Some(frames) = apply(&attack, &params, &img, &genuine) else {
            return Ok(());
        };
        prop_assume!(frames != genuine);
        let out = feed(&KEY, params, &frames);
        assert_detected(&genuine, &plain, &frames, &out);
        prop_assert!(out.refused.is_some() || frames.len() < genuine.len());
        // Only a pure extension leaves the genuine image complete.
        let extension = frames.len() > genuine.len() && frames[..genuine.len()] == genuine[..];
        prop_assert_eq!(out.finished, extension);
    }

    /// A stream cut anywhere before its end is never finished, whether it is
    /// cut at a chunk boundary or inside a chunk.
    #[test]
    fn a_stream_missing_its_end_never_finishes(
        len in 1usize..1600,
        chunk_size in 256u32..520,
        cut in any::<usize>(),
    ) {
        let img = image(len, 1);
        let params = params_for(&img, chunk_size);
        let payload = encrypt_payload(&KEY, &params, &img).unwrap();
        let cut = cut % payload.len();
        let mut dec = ChunkDecryptor::new(&KEY, params, 0).unwrap();
        let mut offset = 0;
        let mut out = Vec::new();
        while let Some(n) = params.chunk_len(dec.next_index()) {
            if offset + n > cut {
                break;
            }
            let mut chunk = payload[offset..offset + n].to_vec();
            out.extend_from_slice(dec.decrypt_next(&mut chunk).unwrap());
            offset += n;
        }
        // The remaining partial chunk, if any, is refused.
        if offset < cut {
            let mut partial = payload[offset..cut].to_vec();
            prop_assert_eq!(
                dec.decrypt_next(&mut partial),
                Err(Error::ChunkLength { index: dec.next_index() })
            );
        }
        prop_assert!(!dec.is_finished());
        prop_assert_eq!(&out[..], &img[..out.len()]);
    }
}
