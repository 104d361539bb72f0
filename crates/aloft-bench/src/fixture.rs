//! Real fixtures: generated P-256 keys, a root-signed TrustRoot, signed
//! manifests and AES-256-GCM payloads, and a device on the NOR simulator
//! with 4 KiB sectors and slots large enough for the benchmark image.

use aloft_device::sim::SimFlash;
use aloft_device::{
    AcceptedOffer, Clock, Device, DeviceConfig, Layout, Partition, PayloadPolicy, SessionBinding,
};
use aloft_protocol::envelope::seal;
use aloft_protocol::keys::Domain;
use aloft_protocol::payload::{PayloadParams, encrypt_payload};
use aloft_protocol::prost::Message;
use aloft_protocol::signed_chunks::{PayloadLayout, build_payload};
use aloft_protocol::trust::{VerifiedManifest, VerifiedTrustRoot, danger};
use aloft_protocol::{
    ContentKey, DeviceId, DeviceNonce, Digest, NoncePrefix, SecretKey, UnixTime, pb, wrap,
};
use anyhow::Context;

/// A NOR part with 4-byte program words and 4 KiB sectors (typical SPI NOR).
pub type Flash = SimFlash<4, 4096>;

/// Sector size of [`Flash`].
pub const SECTOR: u32 = 4096;

/// "Now" for signing and verifying.
pub const NOW: u64 = 1_700_000_000;
const PRODUCT: &str = "bench-board";
const HARDWARE: &str = "rev-a";

/// A flash layout: a 16 KiB state partition (a sector per log half and per
/// TrustRoot copy), then slots A and B each with room for `image_capacity`
/// bytes plus one sector of manifest trailer. The slots are erased (and the
/// installer persists progress) in sectors of `slot_sector` bytes, a
/// multiple of [`SECTOR`] (e.g. 64 KiB NOR blocks).
pub fn layout(image_capacity: u32, slot_sector: u32) -> Layout {
    let slot = image_capacity.div_ceil(slot_sector) * slot_sector + slot_sector;
    let state = 4 * SECTOR;
    Layout {
        state: Partition::new(0, state, SECTOR),
        slot_a: Partition::new(state, slot, slot_sector),
        slot_b: Partition::new(state + slot, slot, slot_sector),
        manifest_area: SECTOR,
        trust_area: SECTOR,
    }
}

/// An erased flash that holds `layout`.
pub fn flash(layout: &Layout) -> Flash {
    Flash::uniform((layout.slot_b.end() / SECTOR) as usize)
}

/// The device's identity as the installer checks it. It installs both
/// payload profiles (encrypted and signature-only), so one provisioned
/// flash serves both benchmarks.
pub fn config() -> DeviceConfig {
    DeviceConfig::new(PRODUCT, HARDWARE).with_payloads(PayloadPolicy::EncryptedOrSignatureOnly)
}

/// The benchmark device's id.
pub const DEVICE: &str = "bench-1";
/// The session nonce every benchmark directive echoes.
pub const NONCE: [u8; 16] = [1; 16];

/// Deterministic, incompressible-looking image bytes (xorshift).
pub fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Root, release, server and device keys with a verified TrustRoot.
pub struct Fixture {
    /// Release signing key.
    pub release_key: SecretKey,
    /// Directive key.
    pub server_key: SecretKey,
    /// The device's key (content keys are wrapped to it).
    pub device_key: SecretKey,
    /// The verified TrustRoot.
    pub trust: VerifiedTrustRoot,
}

/// A signed, encrypted release.
pub struct Release {
    /// Plaintext image.
    pub image: Vec<u8>,
    /// Encoded signed manifest envelope.
    pub envelope: Vec<u8>,
    /// The decoded envelope.
    pub signed: pb::SignedEnvelope,
    /// Encrypted payload (chunks, each ciphertext then tag).
    pub payload: Vec<u8>,
    /// Content key.
    pub key: ContentKey,
    /// Payload layout of an encrypted release (its nonce prefix and
    /// associated data; a signature-only release has none of those, so it
    /// holds the encrypted layout the same image would have).
    pub params: PayloadParams,
    /// How the payload is cut into chunks, whichever the encoding.
    pub layout: PayloadLayout,
    /// A directive for it, signed by the server key, for [`DEVICE`] in the
    /// session with [`NONCE`].
    pub directive: pb::SignedEnvelope,
}

impl Release {
    /// The device verifies this release's offer (as the agent does).
    pub fn accept(&self, dev: &Device<Flash>) -> anyhow::Result<AcceptedOffer> {
        let id = DeviceId::new(DEVICE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let nonce = DeviceNonce::from_bytes(NONCE);
        dev.verify_offer(
            &self.directive,
            &self.signed,
            SessionBinding {
                device_id: &id,
                nonce: &nonce,
            },
            Clock::At(UnixTime(NOW)),
        )
        .map_err(|e| anyhow::anyhow!("offer refused: {e}"))
    }
}

impl Release {
    /// Wire bytes of chunk `i`.
    pub fn chunk(&self, i: u32) -> &[u8] {
        let off = self.layout.chunk_offset(i) as usize;
        let len = self.layout.chunk_len(i).unwrap_or(0);
        &self.payload[off..off + len]
    }

    /// Number of chunks.
    pub fn chunks(&self) -> u32 {
        self.layout.chunk_count()
    }
}

impl Fixture {
    /// Fresh keys and a TrustRoot signed by its root key.
    pub fn new() -> anyhow::Result<Self> {
        let root_key = SecretKey::generate();
        let release_key = SecretKey::generate();
        let server_key = SecretKey::generate();
        let root = pb::TrustRoot {
            version: 1,
            expires_at: NOW + 86_400 * 365,
            root_keys: vec![root_key.public_key().to_sec1_compressed().to_vec()],
            root_threshold: 1,
            release_keys: vec![release_key.public_key().to_sec1_compressed().to_vec()],
            release_threshold: 1,
            server_keys: vec![server_key.public_key().to_sec1_compressed().to_vec()],
        };
        let env = seal(&root, Domain::TrustRoot, &[&root_key]);
        let trust = VerifiedTrustRoot::trust_on_first_use(&env, UnixTime(NOW))
            .map_err(|e| anyhow::anyhow!("trust root: {e}"))?;
        Ok(Self {
            release_key,
            server_key,
            device_key: SecretKey::generate(),
            trust,
        })
    }

    /// A release of `image` in chunks of `chunk_size` bytes.
    pub fn release(
        &self,
        name: &str,
        security_version: u32,
        image: Vec<u8>,
        chunk_size: u32,
    ) -> anyhow::Result<Release> {
        let m = self.manifest(name, security_version, &image, chunk_size);
        let signed = seal(&m, Domain::ReleaseManifest, &[&self.release_key]);
        let manifest = danger::verify_manifest_ignoring_expiry(&self.trust, &signed)
            .map_err(|e| anyhow::anyhow!("manifest: {e}"))?;
        let key = ContentKey::from_bytes([security_version as u8 ^ 0x5A; 32]);
        let params = PayloadParams {
            image_len: manifest.image_len(),
            chunk_size: manifest.chunk_size(),
            nonce_prefix: NoncePrefix::from_slice(&m.nonce_prefix)
                .map_err(|e| anyhow::anyhow!("nonce prefix: {e}"))?,
            image_digest: manifest.image_digest(),
        };
        let payload = encrypt_payload(&key, &params, &image)
            .map_err(|e| anyhow::anyhow!("encrypting: {e}"))?;
        let directive = self.directive(&manifest, Some(&key));
        Ok(Release {
            image,
            envelope: signed.encode_to_vec(),
            signed,
            payload,
            key,
            params,
            layout: PayloadLayout::Encrypted(params),
            directive,
        })
    }

    /// A signature-only release of `image` in chunks of `chunk_size` bytes:
    /// plaintext chunks with Merkle proofs under the signed manifest's root,
    /// and a directive that carries no content key.
    pub fn signature_only_release(
        &self,
        name: &str,
        security_version: u32,
        image: Vec<u8>,
        chunk_size: u32,
    ) -> anyhow::Result<Release> {
        let (root, payload) = build_payload(&image, chunk_size)
            .map_err(|e| anyhow::anyhow!("signature-only payload: {e}"))?;
        let m = pb::ReleaseManifest {
            chunk_root: root.as_bytes().to_vec(),
            payload_encoding: pb::PayloadEncoding::SignatureOnly as i32,
            nonce_prefix: Vec::new(),
            ..self.manifest(name, security_version, &image, chunk_size)
        };
        let signed = seal(&m, Domain::ReleaseManifest, &[&self.release_key]);
        let manifest = danger::verify_manifest_ignoring_expiry(&self.trust, &signed)
            .map_err(|e| anyhow::anyhow!("manifest: {e}"))?;
        let layout = manifest.payload_layout();
        let params = PayloadParams {
            image_len: manifest.image_len(),
            chunk_size: manifest.chunk_size(),
            nonce_prefix: NoncePrefix::from_slice(&[0; 7])
                .map_err(|e| anyhow::anyhow!("nonce prefix: {e}"))?,
            image_digest: manifest.image_digest(),
        };
        let directive = self.directive(&manifest, None);
        Ok(Release {
            image,
            envelope: signed.encode_to_vec(),
            signed,
            payload,
            key: ContentKey::from_bytes([0; 32]),
            params,
            layout,
            directive,
        })
    }

    /// The manifest of an encrypted release of `image`.
    fn manifest(
        &self,
        name: &str,
        security_version: u32,
        image: &[u8],
        chunk_size: u32,
    ) -> pb::ReleaseManifest {
        pb::ReleaseManifest {
            release_id: name.into(),
            product: PRODUCT.into(),
            hardware: vec![HARDWARE.into()],
            version: format!("1.{security_version}.0"),
            security_version,
            image_len: image.len() as u64,
            image_sha256: Digest::of(image).as_bytes().to_vec(),
            chunk_size,
            nonce_prefix: vec![security_version as u8; 7],
            created_at: NOW - 10,
            expires_at: NOW + 86_400,
            ..Default::default()
        }
    }

    /// A directive for [`DEVICE`] in the session with [`NONCE`] naming
    /// `manifest`, with `key` wrapped to the device (none for a
    /// signature-only release).
    fn directive(
        &self,
        manifest: &VerifiedManifest,
        key: Option<&ContentKey>,
    ) -> pb::SignedEnvelope {
        let content_key = key.map(|key| {
            let id = DeviceId::new(DEVICE).expect("the benchmark device id is valid");
            let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
            wrap::wrap_content_key(key, &self.device_key.public_key(), &id, &mut rng).to_pb()
        });
        seal(
            &pb::Directive {
                device_id: DEVICE.into(),
                device_nonce: NONCE.to_vec(),
                manifest_digest: manifest.digest().as_bytes().to_vec(),
                content_key,
                server_time: NOW,
                expires_at: NOW + 600,
                rollout_id: String::new(),
                payload_url: String::new(),
            },
            Domain::Directive,
            &[&self.server_key],
        )
    }

    /// A device provisioned with `factory` in slot A of `layout`; returns
    /// its flash (clone it per repetition).
    pub fn provisioned_flash(&self, factory: &Release, layout: Layout) -> anyhow::Result<Flash> {
        let dev = Device::provision(
            flash(&layout),
            layout,
            config(),
            &self.trust,
            &factory.image,
            &factory.envelope,
        )
        .map_err(|e| anyhow::anyhow!("provisioning: {e}"))
        .context("provisioning the benchmark device")?;
        Ok(dev.into_flash())
    }
}

/// Opens the device on `flash` with `layout`.
pub fn open(flash: Flash, layout: Layout) -> anyhow::Result<Device<Flash>> {
    Device::open(flash, layout, config()).map_err(|e| anyhow::anyhow!("opening the device: {e}"))
}
