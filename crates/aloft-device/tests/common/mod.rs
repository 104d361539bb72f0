//! Shared fixtures: real keys, a real TrustRoot, signed manifests, encrypted
//! payloads, and a small flash layout over the simulator.
#![allow(dead_code, missing_docs)]

use aloft_device::sim::SimFlash;
use aloft_device::{Device, DeviceConfig, Layout, Partition};
use aloft_protocol::envelope::seal;
use aloft_protocol::keys::Domain;
use aloft_protocol::payload::{PayloadParams, encrypt_payload};
use aloft_protocol::prost::Message;
use aloft_protocol::trust::{
    VerifiedDirective, VerifiedManifest, VerifiedTrustRoot, VerifiedUpdate, WrappedContentKey,
};
use aloft_protocol::{
    ContentKey, DeviceId, DeviceNonce, Digest, NoncePrefix, SecretKey, UnixTime, pb,
};

/// Write size 4, erase size 1 KiB: small enough for exhaustive sweeps.
pub type Sim = SimFlash<4, 1024>;

pub const NOW: u64 = 1_700_000_000;
pub const PRODUCT: &str = "sensor";
pub const HARDWARE: &str = "rev-b";

/// state 4 KiB (two banks of 2 KiB = 3 records each), slots of 6 KiB with a
/// 1 KiB manifest trailer (5 KiB for the image).
pub fn layout() -> Layout {
    Layout {
        state: Partition::new(0, 4096, 1024),
        slot_a: Partition::new(4096, 6144, 1024),
        slot_b: Partition::new(10240, 6144, 1024),
        manifest_area: 1024,
    }
}

pub fn flash() -> Sim {
    Sim::uniform(16)
}

pub fn config() -> DeviceConfig {
    DeviceConfig {
        product: PRODUCT.into(),
        hardware: HARDWARE.into(),
        trial_attempts: 3,
    }
}

pub struct Keys {
    pub root: SecretKey,
    pub release: SecretKey,
    pub server: SecretKey,
}

pub struct Fixture {
    pub keys: Keys,
    pub trust: VerifiedTrustRoot,
}

impl Fixture {
    pub fn new() -> Self {
        let keys = Keys {
            root: SecretKey::generate(),
            release: SecretKey::generate(),
            server: SecretKey::generate(),
        };
        let root = pb::TrustRoot {
            version: 1,
            expires_at: NOW + 86_400 * 365,
            root_keys: vec![keys.root.public_key().to_sec1_compressed().to_vec()],
            root_threshold: 1,
            release_keys: vec![keys.release.public_key().to_sec1_compressed().to_vec()],
            release_threshold: 1,
            server_keys: vec![keys.server.public_key().to_sec1_compressed().to_vec()],
        };
        let env = seal(&root, Domain::TrustRoot, &[&keys.root]);
        let trust = VerifiedTrustRoot::from_initial(&env, UnixTime(NOW)).unwrap();
        Self { keys, trust }
    }

    /// A release of `image`, signed by the release key.
    pub fn release(&self, name: &str, sv: u32, image: Vec<u8>) -> Release {
        self.release_with(name, sv, image, |_| {})
    }

    /// A release whose manifest fields `edit` may change before signing.
    pub fn release_with(
        &self,
        name: &str,
        sv: u32,
        image: Vec<u8>,
        edit: impl FnOnce(&mut pb::ReleaseManifest),
    ) -> Release {
        let mut m = pb::ReleaseManifest {
            release_id: name.into(),
            product: PRODUCT.into(),
            hardware: vec!["rev-a".into(), HARDWARE.into()],
            version: format!("1.{sv}.0"),
            security_version: sv,
            image_len: image.len() as u64,
            image_sha256: Digest::of(&image).as_bytes().to_vec(),
            chunk_size: 256,
            nonce_prefix: vec![sv as u8; 7],
            created_at: NOW - 10,
            expires_at: NOW + 86_400,
        };
        edit(&mut m);
        let env = seal(&m, Domain::ReleaseManifest, &[&self.keys.release]);
        // Verified as the bootloader does (expiry not enforced) so tests can
        // build expired manifests too.
        let manifest = aloft_device::verify_manifest_for_boot(&self.trust, &env).unwrap();
        let key = ContentKey::from_bytes([sv as u8 ^ 0x5A; 32]);
        let params = PayloadParams {
            image_len: manifest.image_len,
            chunk_size: manifest.chunk_size,
            nonce_prefix: NoncePrefix::from_slice(&m.nonce_prefix).unwrap(),
            image_digest: manifest.image_digest,
        };
        let payload = encrypt_payload(&key, &params, &image).unwrap_or_default();
        let update = update_for(&manifest, &self.keys.server);
        Release {
            image,
            envelope: env.encode_to_vec(),
            manifest,
            payload,
            key,
            params,
            update,
        }
    }

    /// A freshly provisioned device running `factory` from slot A.
    pub fn provision(&self, flash: Sim, factory: &Release) -> Device<Sim> {
        Device::provision(
            flash,
            layout(),
            config(),
            &self.trust,
            &factory.image,
            &factory.envelope,
        )
        .unwrap()
    }
}

/// A verified update for `manifest` (the directive is built directly: the
/// device core trusts `VerifiedUpdate`, which aloft-protocol produces).
pub fn update_for(manifest: &VerifiedManifest, server: &SecretKey) -> VerifiedUpdate {
    VerifiedUpdate {
        directive: VerifiedDirective {
            device_id: DeviceId::new("dev-1").unwrap(),
            device_nonce: DeviceNonce::from_bytes([1; 16]),
            manifest_digest: manifest.digest,
            content_key: WrappedContentKey {
                ephemeral: server.public_key(),
                ciphertext: [0; 48],
            },
            server_time: UnixTime(NOW),
            expires_at: UnixTime(NOW + 600),
            rollout_id: String::new(),
        },
        manifest: manifest.clone(),
    }
}

pub struct Release {
    pub image: Vec<u8>,
    pub envelope: Vec<u8>,
    pub manifest: VerifiedManifest,
    pub payload: Vec<u8>,
    pub key: ContentKey,
    pub params: PayloadParams,
    pub update: VerifiedUpdate,
}

impl Release {
    /// Wire bytes of chunk `i` (ciphertext then tag).
    pub fn chunk(&self, i: u32) -> Vec<u8> {
        let off = self.params.chunk_offset(i) as usize;
        let len = self.params.chunk_len(i).unwrap();
        self.payload[off..off + len].to_vec()
    }

    pub fn chunks(&self) -> u32 {
        self.params.chunk_count()
    }
}

/// Deterministic test image bytes.
pub fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// Installs `rel` fully (resuming if needed) on `dev`; returns the result of finish.
pub fn install<F: embedded_storage::nor_flash::NorFlash>(
    dev: &mut Device<F>,
    rel: &Release,
) -> Result<(), aloft_device::Error> {
    let mut inst = dev.begin_install(&rel.update, &rel.envelope, &rel.key)?;
    let mut buf = vec![0u8; rel.params.chunk_size as usize + aloft_protocol::payload::TAG_LEN];
    for i in inst.next_chunk()..rel.chunks() {
        let c = rel.chunk(i);
        buf[..c.len()].copy_from_slice(&c);
        inst.write_chunk(&mut buf[..c.len()])?;
    }
    inst.finish()
}
