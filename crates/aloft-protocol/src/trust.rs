//! The signed objects and their verification rules: TrustRoot (and its
//! rotation), ReleaseManifest and Directive.
//!
//! Verified objects are distinct types ([`VerifiedTrustRoot`],
//! [`VerifiedManifest`], [`VerifiedDirective`]): code that holds one knows its
//! signatures, roles, expiry and field sizes were checked.

use alloc::string::String;
use alloc::vec::Vec;

use crate::keys::PublicKey;
use crate::pb;
use crate::types::{
    DeviceId, DeviceNonce, Digest, NoncePrefix, ReleaseId, SecurityVersion, UnixTime, Version,
};
use crate::Error;

/// A TrustRoot whose signatures, thresholds and expiry were checked.
#[derive(Clone, Debug)]
pub struct VerifiedTrustRoot {
    /// Monotonic version.
    pub version: u32,
    /// Expiry.
    pub expires_at: UnixTime,
    /// Keys that sign TrustRoots.
    pub root_keys: Vec<PublicKey>,
    /// Root signatures needed.
    pub root_threshold: u32,
    /// Keys that sign release manifests.
    pub release_keys: Vec<PublicKey>,
    /// Release signatures needed.
    pub release_threshold: u32,
    /// Online server (director) keys; one signature suffices.
    pub server_keys: Vec<PublicKey>,
    /// The envelope it came from, to persist or forward unchanged.
    pub envelope: pb::SignedEnvelope,
}

impl VerifiedTrustRoot {
    /// Accepts a first TrustRoot, as installed at the factory: it must be
    /// signed by its own root threshold and not expired at `now`.
    pub fn from_initial(envelope: &pb::SignedEnvelope, now: UnixTime) -> Result<Self, Error> {
        let _ = (envelope, now);
        todo!()
    }

    /// Accepts `next` as the successor of `self`: signed by the current root
    /// threshold *and* by its own, version exactly `self.version + 1`, not
    /// expired at `now`.
    pub fn rotate(&self, next: &pb::SignedEnvelope, now: UnixTime) -> Result<Self, Error> {
        let _ = (next, now);
        todo!()
    }

    /// Verifies a release manifest: release-key threshold (a manifest signed
    /// with any other role's key is refused), well-formed fields, not expired.
    pub fn verify_manifest(
        &self,
        envelope: &pb::SignedEnvelope,
        now: UnixTime,
    ) -> Result<VerifiedManifest, Error> {
        let _ = (envelope, now);
        todo!()
    }

    /// Verifies a directive's server-key signature, fields and expiry; the
    /// device-specific checks are in [`verify_update`].
    pub fn verify_directive(
        &self,
        envelope: &pb::SignedEnvelope,
        now: UnixTime,
    ) -> Result<VerifiedDirective, Error> {
        let _ = (envelope, now);
        todo!()
    }
}

/// A release manifest whose release-key signatures and fields were checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedManifest {
    /// Release name.
    pub release_id: ReleaseId,
    /// Product.
    pub product: String,
    /// Compatible hardware revisions (non-empty).
    pub hardware: Vec<String>,
    /// Firmware version.
    pub version: Version,
    /// Anti-rollback counter.
    pub security_version: SecurityVersion,
    /// Plaintext image length (> 0, <= MAX_IMAGE_LEN).
    pub image_len: u64,
    /// SHA-256 of the plaintext image.
    pub image_digest: Digest,
    /// Plaintext bytes per chunk (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).
    pub chunk_size: u32,
    /// AES-GCM nonce prefix.
    pub nonce_prefix: NoncePrefix,
    /// Creation time.
    pub created_at: UnixTime,
    /// Expiry.
    pub expires_at: UnixTime,
    /// SHA-256 of the envelope's payload: what a directive names.
    pub digest: Digest,
}

impl VerifiedManifest {
    /// Payload layout of this release, for [`crate::payload`].
    pub fn payload_params(&self) -> crate::payload::PayloadParams {
        crate::payload::PayloadParams {
            image_len: self.image_len,
            chunk_size: self.chunk_size,
            nonce_prefix: self.nonce_prefix,
            image_digest: self.image_digest,
        }
    }
}

/// A content key wrapped to one device (see [`crate::wrap`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedContentKey {
    /// Ephemeral ECDH public key.
    pub ephemeral: PublicKey,
    /// AES-256-GCM ciphertext of the key, then its tag.
    pub ciphertext: [u8; 48],
}

/// A directive whose server-key signature, fields and expiry were checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedDirective {
    /// Device it is bound to.
    pub device_id: DeviceId,
    /// Echoed device nonce.
    pub device_nonce: DeviceNonce,
    /// Manifest it names.
    pub manifest_digest: Digest,
    /// The release content key, wrapped to the device.
    pub content_key: WrappedContentKey,
    /// Server time at signing.
    pub server_time: UnixTime,
    /// Expiry.
    pub expires_at: UnixTime,
    /// Rollout (informational; may be empty).
    pub rollout_id: String,
}

/// What a device knows about itself when an offer arrives.
#[derive(Clone, Debug)]
pub struct DeviceContext<'a> {
    /// This device.
    pub device_id: &'a DeviceId,
    /// The nonce sent in this session's hello.
    pub device_nonce: &'a DeviceNonce,
    /// Product of this device.
    pub product: &'a str,
    /// Hardware revision of this device.
    pub hardware: &'a str,
    /// Running firmware version.
    pub current_version: Version,
    /// Anti-rollback floor.
    pub security_floor: SecurityVersion,
    /// Latest server time the device has seen attested.
    pub time_floor: UnixTime,
    /// Capacity of the inactive slot in bytes.
    pub slot_capacity: u64,
    /// Current time (a device without a clock passes its attested floor).
    pub now: UnixTime,
}

/// A directive and manifest that together passed every device-side check.
#[derive(Clone, Debug)]
pub struct VerifiedUpdate {
    /// The directive.
    pub directive: VerifiedDirective,
    /// The manifest it names.
    pub manifest: VerifiedManifest,
}

/// Verifies an offer (directive + manifest) for one device: signatures and
/// roles, expiry, device binding, nonce, manifest digest (mix-and-match),
/// product and hardware, security floor, version monotonicity, attested
/// time, and slot capacity.
pub fn verify_update(
    trust: &VerifiedTrustRoot,
    directive: &pb::SignedEnvelope,
    manifest: &pb::SignedEnvelope,
    device: &DeviceContext<'_>,
) -> Result<VerifiedUpdate, Error> {
    let _ = (trust, directive, manifest, device);
    todo!()
}
