//! Reference vectors for Aloft's own wire formats: each file under
//! `tests/vectors/` is rebuilt here from fixed inputs (keys from fixed
//! scalars, `SecretKey::from_slice(&[n; 32])`) and compared byte for byte,
//! and decoded back to the values it was built from. A change to an
//! encoding, a domain tag, the nonce layout or the key derivation shows up
//! as a failing test here. What each file is: `tests/vectors/README.md`.
//!
//! `ALOFT_WRITE_VECTORS=1 cargo test -p aloft-protocol --test vectors`
//! rewrites the files (only after a deliberate format change; say why in
//! the commit); the normal run only compares.

use std::convert::Infallible;
use std::path::PathBuf;

use aloft_protocol::envelope::{decode_envelope, seal};
use aloft_protocol::keys::Domain;
use aloft_protocol::payload::{ChunkDecryptor, PayloadParams, encrypt_payload};
use aloft_protocol::pb::device_message::Body;
use aloft_protocol::prost::Message;
use aloft_protocol::signed_chunks::{ChunkVerifier, SignedChunkParams, build_payload};
use aloft_protocol::trust::{TrustChain, VerifiedTrustRoot, WrappedContentKey};
use aloft_protocol::wrap::{unwrap_content_key, wrap_content_key};
use aloft_protocol::{
    ContentKey, DeviceId, Digest, NoncePrefix, SecretKey, UnixTime, device_msg, pb, registration,
};

const NOW: u64 = 1_700_000_000;
const YEAR: u64 = 365 * 86_400;

fn key(n: u8) -> SecretKey {
    SecretKey::from_slice(&[n; 32]).unwrap()
}

fn pubkey(n: u8) -> Vec<u8> {
    key(n).public_key().to_sec1_compressed().to_vec()
}

/// Compares `bytes` with `tests/vectors/<name>`, or writes them there when
/// `ALOFT_WRITE_VECTORS=1`.
fn vector(name: &str, bytes: &[u8]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    if std::env::var_os("ALOFT_WRITE_VECTORS").is_some_and(|v| v == "1") {
        std::fs::write(&path, bytes).unwrap();
        return;
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (generate with ALOFT_WRITE_VECTORS=1)",
            path.display()
        )
    });
    assert!(
        want == bytes,
        "{name}: the encoding changed ({} bytes now, {} in the vector); if deliberate, \
         regenerate with ALOFT_WRITE_VECTORS=1 and say why in the commit",
        bytes.len(),
        want.len()
    );
}

/// The committed bytes of `tests/vectors/<name>`.
fn read(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The three TrustRoots of the chain vector: v1 (root key 1), v2 (root key
/// 2, signed by 1 and 2), v3 (root key 3, signed by 2 and 3); release key
/// 11, server key 21 throughout; expiring one, two and three years after
/// [`NOW`].
fn chain() -> Vec<pb::SignedEnvelope> {
    let root = |version: u32, root_key: u8| pb::TrustRoot {
        version,
        expires_at: NOW + u64::from(version) * YEAR,
        root_keys: vec![pubkey(root_key)],
        root_threshold: 1,
        release_keys: vec![pubkey(11)],
        release_threshold: 1,
        server_keys: vec![pubkey(21)],
    };
    vec![
        seal(&root(1, 1), Domain::TrustRoot, &[&key(1)]),
        seal(&root(2, 2), Domain::TrustRoot, &[&key(1), &key(2)]),
        seal(&root(3, 3), Domain::TrustRoot, &[&key(2), &key(3)]),
    ]
}

#[test]
fn trust_root_chain_v1_to_v3() {
    let update = pb::TrustRootUpdate { chain: chain() };
    let bytes = update.encode_to_vec();
    vector("trust-chain-v1-v3.pb", &bytes);

    let decoded = pb::TrustRootUpdate::decode(read("trust-chain-v1-v3.pb").as_slice()).unwrap();
    assert_eq!(decoded, update);
    for env in &decoded.chain {
        // Each envelope re-encodes to exactly its bytes.
        let one = env.encode_to_vec();
        assert_eq!(decode_envelope(&one).unwrap().encode_to_vec(), one);
    }
    let v1 = VerifiedTrustRoot::trust_on_first_use(&decoded.chain[0], UnixTime(NOW)).unwrap();
    let v3 = v1.update_chain(&decoded.chain[1..], UnixTime(NOW)).unwrap();
    assert_eq!(v3.version(), 3);
    assert_eq!(v3.root_keys(), &[key(3).public_key()]);
    assert_eq!(v3.digest(), Digest::of(&decoded.chain[2].payload));
    let stored = TrustChain::reload_stored(&decoded.chain).unwrap();
    assert_eq!(stored.latest(), &v3);
    // Skipping v2 is refused.
    assert!(v1.update_chain(&decoded.chain[2..], UnixTime(NOW)).is_err());
}

/// A deterministic stand-in for an RNG (SHA-256 of a counter): only to make
/// the wrapped-key vector reproducible.
struct Counter(u64);

impl rand_core::TryRng for Counter {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(32) {
            let block = Digest::of(&self.0.to_le_bytes());
            self.0 += 1;
            chunk.copy_from_slice(&block.as_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for Counter {}

#[test]
fn wrapped_content_key() {
    let device = key(31);
    let id = DeviceId::new("dev-1").unwrap();
    let content = ContentKey::from_bytes([0x42; 32]);
    if std::env::var_os("ALOFT_WRITE_VECTORS").is_some_and(|v| v == "1") {
        // Wrapping is randomised; the vector was made once with a counter
        // "RNG" starting at 0 and is only ever read afterwards.
        let wrapped = wrap_content_key(&content, &device.public_key(), &id, &mut Counter(0));
        vector("wrapped-key.pb", &wrapped.to_pb().encode_to_vec());
    }
    let bytes = read("wrapped-key.pb");
    let wire = pb::WrappedKey::decode(bytes.as_slice()).unwrap();
    let wrapped = WrappedContentKey::from_pb(&wire).unwrap();
    assert_eq!(
        wrapped.to_pb().encode_to_vec(),
        bytes,
        "re-encodes byte for byte"
    );
    assert_eq!(unwrap_content_key(&wrapped, &device, &id), Ok(content));
    // Bound to the device key and to the device id.
    assert!(unwrap_content_key(&wrapped, &key(32), &id).is_err());
    assert!(unwrap_content_key(&wrapped, &device, &DeviceId::new("dev-2").unwrap()).is_err());
}

/// 600 bytes: two full chunks of 256 and a last one of 88.
fn image() -> Vec<u8> {
    (0..600u32).map(|i| (i * 7 + i / 256) as u8).collect()
}

fn payload_params(image: &[u8]) -> PayloadParams {
    PayloadParams {
        image_len: image.len() as u64,
        chunk_size: 256,
        nonce_prefix: NoncePrefix::from_bytes([1, 2, 3, 4, 5, 6, 7]),
        image_digest: Digest::of(image),
    }
}

#[test]
fn chunk_stream() {
    let image = image();
    let key = ContentKey::from_bytes([0x42; 32]);
    let params = payload_params(&image);
    let payload = encrypt_payload(&key, &params, &image).unwrap();
    vector("chunk-stream.bin", &payload);

    let mut stream = read("chunk-stream.bin");
    assert_eq!(stream.len() as u64, params.payload_len());
    let mut dec = ChunkDecryptor::new(&key, params, 0).unwrap();
    let mut plain = Vec::new();
    for i in 0..params.chunk_count() {
        let at = params.chunk_offset(i) as usize;
        let len = params.chunk_len(i).unwrap();
        plain.extend_from_slice(dec.decrypt_next(&mut stream[at..at + len]).unwrap());
    }
    assert!(dec.is_finished());
    assert_eq!(plain, image);
}

/// The hello of a session: device `dev-1`, challenge `[0x5a; 32]`, seq 1,
/// nonce `[1; 16]`, its state and one pending report.
fn hello() -> pb::DeviceMessage {
    pb::DeviceMessage {
        device_id: "dev-1".into(),
        challenge: vec![0x5a; 32],
        seq: 1,
        body: Some(Body::Hello(pb::Hello {
            device_nonce: vec![1; 16],
            state: Some(pb::DeviceState {
                firmware_version: "1.1.0".into(),
                security_version: 1,
                confirmed: true,
                trust_root_version: 3,
                trust_root_expires_at: NOW + 3 * YEAR,
                ..Default::default()
            }),
            reports: vec![pb::Report {
                report_id: vec![0, 0, 0, 7],
                kind: pb::ReportKind::Confirmed as i32,
                release_id: "sensor-1.1.0".into(),
                detail: String::new(),
            }],
        })),
    }
}

#[test]
fn signed_device_message() {
    let device = key(31);
    let signed = device_msg::seal(&hello(), &device);
    vector("device-message.pb", &signed.encode_to_vec());

    let bytes = read("device-message.pb");
    let decoded = pb::SignedDeviceMessage::decode(bytes.as_slice()).unwrap();
    assert_eq!(decoded.encode_to_vec(), bytes);
    assert_eq!(
        device_msg::open(&decoded, &device.public_key(), &[0x5a; 32], 1),
        Ok(hello())
    );
}

#[test]
fn signature_only_chunk_stream() {
    let image = image();
    let (root, payload) = build_payload(&image, 256).unwrap();
    vector("signed-chunk-stream.bin", &payload);
    vector("signed-chunk-root.bin", root.as_bytes());

    let stream = read("signed-chunk-stream.bin");
    let root = Digest::from_slice(&read("signed-chunk-root.bin")).unwrap();
    let params = SignedChunkParams {
        image_len: image.len() as u64,
        chunk_size: 256,
        root,
    };
    assert_eq!(params.depth(), 2);
    assert_eq!(stream.len() as u64, params.payload_len());
    let mut verifier = ChunkVerifier::new(params, 0).unwrap();
    let mut plain = Vec::new();
    for i in 0..params.chunk_count() {
        let at = params.chunk_offset(i) as usize;
        let len = params.chunk_len(i).unwrap();
        plain.extend_from_slice(verifier.verify_next(&stream[at..at + len]).unwrap());
    }
    assert!(verifier.is_finished());
    assert_eq!(plain, image);
}

/// The registration request of device `dev-1` with key 31.
fn registration_request() -> pb::DeviceRegistration {
    pb::DeviceRegistration {
        device_id: "dev-1".into(),
        public_key: pubkey(31),
        attributes: [
            ("product".to_string(), "sensor".to_string()),
            ("hardware".to_string(), "rev-b".to_string()),
            ("region".to_string(), "eu".to_string()),
        ]
        .into_iter()
        .collect(),
        factory_version: "1.0.0".into(),
        created_at: NOW,
        nonce: vec![0x33; 16],
        payloads: pb::PayloadSupport::EncryptedOnly as i32,
    }
}

#[test]
fn signed_registration_request() {
    let device = key(31);
    let signed = registration::seal(&registration_request(), &device);
    vector("registration.pb", &signed.encode_to_vec());

    let bytes = read("registration.pb");
    let decoded = pb::SignedRegistration::decode(bytes.as_slice()).unwrap();
    assert_eq!(decoded.encode_to_vec(), bytes);
    let verified = registration::verify(&decoded).unwrap();
    assert_eq!(verified.device_id().as_str(), "dev-1");
    assert_eq!(*verified.public_key(), device.public_key());
    assert_eq!(verified.attributes().region, "eu");
    assert_eq!(verified.created_at(), UnixTime(NOW));
}
