//! Shared fixtures: real keys, a real TrustRoot (and rotations of it), signed
//! manifests and directives, encrypted payloads, and a small flash layout
//! over the simulator. Nothing verified is built by hand: every update goes
//! through `Device::verify_offer`.
#![allow(dead_code, missing_docs)]

use aloft_device::sim::SimFlash;
use aloft_device::{
    AcceptedOffer, Clock, Device, DeviceConfig, Installer, Layout, Partition, SessionBinding,
};
use aloft_protocol::envelope::seal;
use aloft_protocol::keys::Domain;
use aloft_protocol::payload::{PayloadParams, encrypt_payload};
use aloft_protocol::prost::Message;
use aloft_protocol::signed_chunks::{PayloadLayout, build_payload};
use aloft_protocol::trust::{VerifiedManifest, VerifiedTrustRoot, danger};
use aloft_protocol::{ContentKey, DeviceId, DeviceNonce, Digest, SecretKey, UnixTime, pb, wrap};

/// Write size 4, erase size 1 KiB: small enough for exhaustive sweeps.
pub type Sim = SimFlash<4, 1024>;

pub const NOW: u64 = 1_700_000_000;
pub const PRODUCT: &str = "sensor";
pub const HARDWARE: &str = "rev-b";
pub const DEVICE: &str = "dev-1";
pub const NONCE: [u8; 16] = [1; 16];

/// state 8 KiB (two log halves of 3 KiB = 4 records each, then two 1 KiB
/// TrustRoot copies), slots of 6 KiB with a 1 KiB manifest trailer (5 KiB
/// for the image).
pub fn layout() -> Layout {
    Layout {
        state: Partition::new(0, 8192, 1024),
        slot_a: Partition::new(8192, 6144, 1024),
        slot_b: Partition::new(14336, 6144, 1024),
        manifest_area: 1024,
        trust_area: 1024,
    }
}

pub fn flash() -> Sim {
    Sim::uniform(20)
}

pub fn config() -> DeviceConfig {
    DeviceConfig::new(PRODUCT, HARDWARE)
}

/// A device that installs encrypted and signature-only releases.
pub fn permissive_config() -> DeviceConfig {
    config().with_payloads(aloft_device::PayloadPolicy::EncryptedOrSignatureOnly)
}

pub fn pubkey(k: &SecretKey) -> Vec<u8> {
    k.public_key().to_sec1_compressed().to_vec()
}

pub struct Keys {
    pub root: SecretKey,
    pub release: SecretKey,
    pub server: SecretKey,
    /// The device's key (content keys are wrapped to it).
    pub device: SecretKey,
}

pub struct Fixture {
    pub keys: Keys,
    pub trust: VerifiedTrustRoot,
}

/// A TrustRoot payload listing one key per role.
pub fn root_payload(
    version: u32,
    expires_at: u64,
    root: &SecretKey,
    release: &SecretKey,
    server: &SecretKey,
) -> pb::TrustRoot {
    pb::TrustRoot {
        version,
        expires_at,
        root_keys: vec![pubkey(root)],
        root_threshold: 1,
        release_keys: vec![pubkey(release)],
        release_threshold: 1,
        server_keys: vec![pubkey(server)],
    }
}

impl Fixture {
    pub fn new() -> Self {
        let keys = Keys {
            root: SecretKey::generate(),
            release: SecretKey::generate(),
            server: SecretKey::generate(),
            device: SecretKey::generate(),
        };
        let root = root_payload(
            1,
            NOW + 86_400 * 365,
            &keys.root,
            &keys.release,
            &keys.server,
        );
        let env = seal(&root, Domain::TrustRoot, &[&keys.root]);
        let trust = VerifiedTrustRoot::trust_on_first_use(&env, UnixTime(NOW)).unwrap();
        Self { keys, trust }
    }

    /// Rotates to version + 1 with fresh root, release and server keys
    /// (the old release and server keys are retired), expiring at
    /// `expires_at`; signed by the old and the new root key. Returns the
    /// successor's envelope; `self` now signs with the new keys.
    pub fn rotate(&mut self, expires_at: u64) -> pb::SignedEnvelope {
        let root = SecretKey::generate();
        let release = SecretKey::generate();
        let server = SecretKey::generate();
        let next = root_payload(
            self.trust.version() + 1,
            expires_at,
            &root,
            &release,
            &server,
        );
        let env = seal(&next, Domain::TrustRoot, &[&self.keys.root, &root]);
        self.trust = self.trust.rotate(&env, UnixTime(0)).unwrap();
        self.keys.root = root;
        self.keys.release = release;
        self.keys.server = server;
        env
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
            ..Default::default()
        };
        edit(&mut m);
        let env = seal(&m, Domain::ReleaseManifest, &[&self.keys.release]);
        // Checked without expiry so tests can build expired manifests too.
        let manifest = danger::verify_manifest_ignoring_expiry(&self.trust, &env).unwrap();
        let key = ContentKey::from_bytes([sv as u8 ^ 0x5A; 32]);
        let params = manifest.payload_params();
        let payload = encrypt_payload(&key, &params, &image).unwrap_or_default();
        let directive = self.directive_for(&manifest, &key, NOW);
        Release {
            image,
            envelope: env.encode_to_vec(),
            layout: manifest.payload_layout(),
            manifest_env: env,
            manifest,
            payload,
            key,
            params,
            directive,
        }
    }

    /// A signature-only release of `image`: plaintext chunks with Merkle
    /// proofs, and a directive without a content key.
    pub fn signature_only_release(
        &self,
        name: &str,
        sv: u32,
        image: Vec<u8>,
        chunk_size: u32,
    ) -> Release {
        let (root, payload) = build_payload(&image, chunk_size).unwrap();
        let mut rel = self.release_with(name, sv, image, |m| {
            m.chunk_size = chunk_size;
            m.payload_encoding = pb::PayloadEncoding::SignatureOnly as i32;
            m.chunk_root = root.as_bytes().to_vec();
            m.nonce_prefix.clear();
        });
        rel.payload = payload;
        rel.directive = self.directive_without_key(&rel.manifest, NOW);
        rel
    }

    /// A directive for `dev-1` naming `manifest` with no content key (what a
    /// signature-only release gets).
    pub fn directive_without_key(
        &self,
        manifest: &VerifiedManifest,
        server_time: u64,
    ) -> pb::SignedEnvelope {
        let d = pb::Directive {
            device_id: DEVICE.into(),
            device_nonce: NONCE.to_vec(),
            manifest_digest: manifest.digest().as_bytes().to_vec(),
            content_key: None,
            server_time,
            expires_at: server_time + 600,
            rollout_id: String::new(),
            payload_url: String::new(),
        };
        seal(&d, Domain::Directive, &[&self.keys.server])
    }

    /// A directive for `dev-1` in the session with [`NONCE`], naming
    /// `manifest`, signed by the server key at `server_time`.
    pub fn directive_for(
        &self,
        manifest: &VerifiedManifest,
        key: &ContentKey,
        server_time: u64,
    ) -> pb::SignedEnvelope {
        let id = DeviceId::new(DEVICE).unwrap();
        let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
        let wrapped = wrap::wrap_content_key(key, &self.keys.device.public_key(), &id, &mut rng);
        let d = pb::Directive {
            device_id: DEVICE.into(),
            device_nonce: NONCE.to_vec(),
            manifest_digest: manifest.digest().as_bytes().to_vec(),
            content_key: Some(wrapped.to_pb()),
            server_time,
            expires_at: server_time + 600,
            rollout_id: String::new(),
            payload_url: String::new(),
        };
        seal(&d, Domain::Directive, &[&self.keys.server])
    }

    /// A freshly provisioned device running `factory` from slot A.
    pub fn provision(&self, flash: Sim, factory: &Release) -> Device<Sim> {
        self.provision_with(flash, factory, config())
    }

    /// [`Fixture::provision`] with another configuration.
    pub fn provision_with(
        &self,
        flash: Sim,
        factory: &Release,
        config: DeviceConfig,
    ) -> Device<Sim> {
        Device::provision(
            flash,
            layout(),
            config,
            &self.trust,
            &factory.image,
            &factory.envelope,
        )
        .unwrap()
    }
}

pub struct Release {
    pub image: Vec<u8>,
    /// The encoded manifest envelope (what the slot trailer holds).
    pub envelope: Vec<u8>,
    pub manifest_env: pb::SignedEnvelope,
    pub manifest: VerifiedManifest,
    pub payload: Vec<u8>,
    pub key: ContentKey,
    /// The encrypted layout (meaningless for a signature-only release).
    pub params: PayloadParams,
    /// The wire layout, whichever the encoding.
    pub layout: PayloadLayout,
    /// A directive for it (dev-1, [`NONCE`], server time [`NOW`]).
    pub directive: pb::SignedEnvelope,
}

impl Release {
    /// Wire bytes of chunk `i` (ciphertext then tag, or plaintext then proof).
    pub fn chunk(&self, i: u32) -> Vec<u8> {
        let off = self.layout.chunk_offset(i) as usize;
        let len = self.layout.chunk_len(i).unwrap();
        self.payload[off..off + len].to_vec()
    }

    pub fn chunks(&self) -> u32 {
        self.layout.chunk_count()
    }

    pub fn is_signature_only(&self) -> bool {
        self.manifest.is_signature_only()
    }
}

/// Deterministic test image bytes.
pub fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// `dev` verifies `rel`'s offer in the session with [`NONCE`], by a clock
/// reading [`NOW`].
pub fn accept<F: embedded_storage::nor_flash::NorFlash>(
    dev: &Device<F>,
    rel: &Release,
) -> Result<AcceptedOffer, aloft_device::Error> {
    accept_parts(
        dev,
        &rel.directive,
        &rel.manifest_env,
        Clock::At(UnixTime(NOW)),
    )
}

/// `dev` verifies a directive and manifest in the session with [`NONCE`].
pub fn accept_parts<F: embedded_storage::nor_flash::NorFlash>(
    dev: &Device<F>,
    directive: &pb::SignedEnvelope,
    manifest: &pb::SignedEnvelope,
    clock: Clock,
) -> Result<AcceptedOffer, aloft_device::Error> {
    let id = DeviceId::new(DEVICE).unwrap();
    let nonce = DeviceNonce::from_bytes(NONCE);
    dev.verify_offer(
        directive,
        manifest,
        SessionBinding {
            device_id: &id,
            nonce: &nonce,
        },
        clock,
    )
}

/// Verifies `rel`'s offer and begins (or resumes) installing it.
pub fn begin<'d, F: embedded_storage::nor_flash::NorFlash>(
    dev: &'d mut Device<F>,
    rel: &Release,
) -> Result<Installer<'d, F>, aloft_device::Error> {
    let offer = accept(dev, rel)?;
    if rel.is_signature_only() {
        dev.begin_signature_only_install(&offer)
    } else {
        dev.begin_install(&offer, &rel.key)
    }
}

/// Installs `rel` fully (resuming if needed) on `dev`; returns the result of finish.
pub fn install<F: embedded_storage::nor_flash::NorFlash>(
    dev: &mut Device<F>,
    rel: &Release,
) -> Result<(), aloft_device::Error> {
    let mut inst = begin(dev, rel)?;
    let mut buf = vec![0u8; rel.layout.chunk_len(0).unwrap()];
    for i in inst.next_chunk()..rel.chunks() {
        let c = rel.chunk(i);
        buf[..c.len()].copy_from_slice(&c);
        inst.write_chunk(&mut buf[..c.len()])?;
    }
    inst.finish()
}
