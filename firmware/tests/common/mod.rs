//! Helpers shared by the firmware tests: the firmware image, keys, and
//! signed, encrypted releases made from it.
#![allow(dead_code)]

use std::path::PathBuf;

use aloft_firmware::board;
use aloft_protocol::envelope::seal;
use aloft_protocol::keys::Domain;
use aloft_protocol::payload::encrypt_payload;
use aloft_protocol::prost::Message as _;
use aloft_protocol::trust::{VerifiedManifest, VerifiedTrustRoot};
use aloft_protocol::{ContentKey, Digest, NoncePrefix, PublicKey, SecretKey, UnixTime, pb};

/// A fixed "now" for releases made offline.
pub const NOW: u64 = 1_900_000_000;

/// The firmware binary, stripped when `strip` is installed (once per run).
pub fn firmware_image() -> Vec<u8> {
    static IMAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    IMAGE.get_or_init(strip_firmware).clone()
}

fn strip_firmware() -> Vec<u8> {
    let built = PathBuf::from(env!("CARGO_BIN_EXE_aloft-firmware"));
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("fw");
    std::fs::copy(&built, &copy).unwrap();
    let _ = std::process::Command::new("strip").arg(&copy).status();
    std::fs::read(&copy).unwrap()
}

pub struct Keys {
    pub root: SecretKey,
    pub release: SecretKey,
    pub server: SecretKey,
}

impl Keys {
    pub fn new() -> Self {
        Self {
            root: SecretKey::generate(),
            release: SecretKey::generate(),
            server: SecretKey::generate(),
        }
    }

    pub fn trust_root(&self) -> pb::SignedEnvelope {
        self.trust_root_for(&self.server.public_key(), NOW + 86_400)
    }

    /// A TrustRoot listing `server` as the directive key.
    pub fn trust_root_for(&self, server: &PublicKey, expires_at: u64) -> pb::SignedEnvelope {
        let tr = pb::TrustRoot {
            version: 1,
            expires_at,
            root_keys: vec![self.root.public_key().to_sec1_compressed().to_vec()],
            root_threshold: 1,
            release_keys: vec![self.release.public_key().to_sec1_compressed().to_vec()],
            release_threshold: 1,
            server_keys: vec![server.to_sec1_compressed().to_vec()],
        };
        seal(&tr, Domain::TrustRoot, &[&self.root])
    }
}

pub struct Release {
    pub image: Vec<u8>,
    pub envelope: Vec<u8>,
    pub manifest: VerifiedManifest,
    pub key: ContentKey,
    pub payload: Vec<u8>,
}

pub fn release(keys: &Keys, trust: &VerifiedTrustRoot, image: Vec<u8>, version: &str) -> Release {
    let m = pb::ReleaseManifest {
        release_id: format!("{}-{version}", board::PRODUCT),
        product: board::PRODUCT.into(),
        hardware: vec![board::HARDWARE.into()],
        version: version.into(),
        security_version: 1,
        image_len: image.len() as u64,
        image_sha256: Digest::of(&image).as_bytes().to_vec(),
        chunk_size: 64 * 1024,
        nonce_prefix: SecretKey::generate().to_bytes()[..NoncePrefix::LEN].to_vec(),
        created_at: created_at(),
        expires_at: NOW + 3600,
        ..Default::default()
    };
    let env = seal(&m, Domain::ReleaseManifest, &[&keys.release]);
    let manifest = trust.verify_manifest(&env, UnixTime(created_at())).unwrap();
    let key = ContentKey::from_bytes(SecretKey::generate().to_bytes());
    let payload = encrypt_payload(&key, &manifest.payload_params(), &image).unwrap();
    Release {
        image,
        envelope: env.encode_to_vec(),
        manifest,
        key,
        payload,
    }
}

/// The current time (releases are valid from now until [`NOW`] + 1 h).
pub fn created_at() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
