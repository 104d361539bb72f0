//! The signed objects and their verification rules: TrustRoot (and its
//! rotation), ReleaseManifest and Directive.
//!
//! Verified objects are distinct types ([`VerifiedTrustRoot`],
//! [`VerifiedManifest`], [`VerifiedDirective`]): code that holds one knows its
//! signatures, roles, expiry and field sizes were checked.
//!
//! # Check order
//!
//! Every rule authenticates before it interprets: signatures are checked on
//! the envelope's exact payload bytes before any field of it is believed, so
//! a tampered or wrongly signed object always fails as
//! [`Error::ThresholdNotMet`], never as a misleading field error. The only
//! exception is a TrustRoot, whose key set is inside the payload: it is
//! decoded and its structure checked first, then its signatures.
//!
//! After authentication come the field checks, then expiry. In
//! [`verify_update`] the directive (one signature) is verified and matched
//! against the device (device id, nonce, attested time) before any work is
//! spent on the manifest; the manifest is then matched by digest (one hash)
//! before its release-key threshold (several signatures) is verified; the
//! compatibility checks (product, hardware, security floor, version, size)
//! come last, on authenticated data.
//!
//! Expiry: an object expires when `now > expires_at` (it is still valid at
//! the second it names). A TrustRoot must itself be unexpired to verify
//! manifests and directives (a frozen TrustRoot cannot be used forever), but
//! an expired current TrustRoot can still be rotated to a fresh one.

use alloc::string::String;
use alloc::vec::Vec;

use prost::Message;

use crate::Error;
use crate::envelope::verify_threshold;
use crate::keys::{Domain, PublicKey};
use crate::limits::{
    MAX_CHUNK_SIZE, MAX_ENVELOPE_LEN, MAX_HARDWARE_IDS, MAX_IMAGE_LEN, MAX_KEYS_PER_ROLE,
    MAX_NAME_LEN, MAX_SIGNATURES, MIN_CHUNK_SIZE,
};
use crate::pb;
use crate::types::MAX_ID_LEN;
use crate::types::{
    DeviceId, DeviceNonce, Digest, NoncePrefix, ReleaseId, SecurityVersion, UnixTime, Version,
};

/// Refuses `now` past `expires_at`.
fn check_expiry(expires_at: UnixTime, now: UnixTime) -> Result<(), Error> {
    if now > expires_at {
        Err(Error::Expired { expires_at, now })
    } else {
        Ok(())
    }
}

/// Refuses envelopes over the size limits before any parsing or crypto work.
fn check_envelope_size(envelope: &pb::SignedEnvelope) -> Result<(), Error> {
    if envelope.payload.len() > MAX_ENVELOPE_LEN {
        return Err(Error::TooLarge("envelope payload"));
    }
    if envelope.signatures.len() > MAX_SIGNATURES {
        return Err(Error::TooLarge("signature list"));
    }
    Ok(())
}

/// Parses one role's key list: at most [`MAX_KEYS_PER_ROLE`] SEC1 compressed
/// keys, no key twice.
fn parse_keys(raw: &[Vec<u8>], role: &'static str) -> Result<Vec<PublicKey>, Error> {
    if raw.len() > MAX_KEYS_PER_ROLE {
        return Err(Error::TooLarge(role));
    }
    let mut keys: Vec<PublicKey> = Vec::with_capacity(raw.len());
    for bytes in raw {
        if bytes.len() != PublicKey::COMPRESSED_LEN {
            return Err(Error::InvalidKey);
        }
        let key = PublicKey::from_sec1(bytes)?;
        if keys.contains(&key) {
            return Err(Error::InvalidField("duplicate key in a TrustRoot role"));
        }
        keys.push(key);
    }
    Ok(keys)
}

/// Checks a threshold is in `1..=keys`.
fn check_threshold(threshold: u32, keys: &[PublicKey]) -> Result<(), Error> {
    if threshold == 0 || threshold as usize > keys.len() {
        Err(Error::InvalidThreshold)
    } else {
        Ok(())
    }
}

/// A product or hardware name: 1..=[`MAX_NAME_LEN`] bytes, no control characters.
fn check_name(name: &str, what: &'static str) -> Result<(), Error> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        Err(Error::InvalidField(what))
    } else {
        Ok(())
    }
}

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
    ///
    /// Structure is checked first (key encodings, thresholds in `1..=keys`,
    /// at most [`MAX_KEYS_PER_ROLE`] keys per role, no key listed twice in a
    /// role or in two roles, at least one server key), then the root
    /// signatures, then expiry.
    pub fn from_initial(envelope: &pb::SignedEnvelope, now: UnixTime) -> Result<Self, Error> {
        let root = Self::parse(envelope)?;
        verify_threshold(
            envelope,
            Domain::TrustRoot,
            &root.root_keys,
            root.root_threshold,
        )?;
        check_expiry(root.expires_at, now)?;
        Ok(root)
    }

    /// Decodes and structurally validates a TrustRoot, without signatures.
    fn parse(envelope: &pb::SignedEnvelope) -> Result<Self, Error> {
        check_envelope_size(envelope)?;
        let tr = pb::TrustRoot::decode(envelope.payload.as_slice())
            .map_err(|_| Error::Malformed("trust root"))?;
        let root_keys = parse_keys(&tr.root_keys, "root key list")?;
        let release_keys = parse_keys(&tr.release_keys, "release key list")?;
        let server_keys = parse_keys(&tr.server_keys, "server key list")?;
        check_threshold(tr.root_threshold, &root_keys)?;
        check_threshold(tr.release_threshold, &release_keys)?;
        if server_keys.is_empty() {
            return Err(Error::InvalidField("server key list (empty)"));
        }
        // One key, one role: a key in two roles would undo role separation
        // (e.g. an online server key that could also sign releases).
        let in_two_roles = release_keys.iter().any(|k| root_keys.contains(k))
            || server_keys
                .iter()
                .any(|k| root_keys.contains(k) || release_keys.contains(k));
        if in_two_roles {
            return Err(Error::InvalidField("key listed in two TrustRoot roles"));
        }
        Ok(Self {
            version: tr.version,
            expires_at: UnixTime(tr.expires_at),
            root_keys,
            root_threshold: tr.root_threshold,
            release_keys,
            release_threshold: tr.release_threshold,
            server_keys,
            envelope: envelope.clone(),
        })
    }

    /// Accepts `next` as the successor of `self`: signed by the current root
    /// threshold *and* by its own, version exactly `self.version + 1`, not
    /// expired at `now`.
    ///
    /// Order: structure of `next`, the current root threshold (the check
    /// that makes it trustworthy), the new root threshold (its keys are
    /// really held), version succession, expiry. The current TrustRoot may
    /// itself have expired: rotation is how a device recovers from that.
    pub fn rotate(&self, next: &pb::SignedEnvelope, now: UnixTime) -> Result<Self, Error> {
        let new = Self::parse(next)?;
        verify_threshold(
            next,
            Domain::TrustRoot,
            &self.root_keys,
            self.root_threshold,
        )?;
        verify_threshold(next, Domain::TrustRoot, &new.root_keys, new.root_threshold)?;
        if self.version.checked_add(1) != Some(new.version) {
            return Err(Error::VersionNotSuccessor {
                current: self.version,
                offered: new.version,
            });
        }
        check_expiry(new.expires_at, now)?;
        Ok(new)
    }

    /// Verifies a release manifest: release-key threshold (a manifest signed
    /// with any other role's key is refused), well-formed fields, not expired.
    pub fn verify_manifest(
        &self,
        envelope: &pb::SignedEnvelope,
        now: UnixTime,
    ) -> Result<VerifiedManifest, Error> {
        check_envelope_size(envelope)?;
        check_expiry(self.expires_at, now)?;
        verify_threshold(
            envelope,
            Domain::ReleaseManifest,
            &self.release_keys,
            self.release_threshold,
        )?;
        let m = pb::ReleaseManifest::decode(envelope.payload.as_slice())
            .map_err(|_| Error::Malformed("release manifest"))?;
        let release_id = ReleaseId::new(&m.release_id)?;
        check_name(&m.product, "product")?;
        if m.hardware.is_empty() {
            return Err(Error::InvalidField("hardware list (empty)"));
        }
        if m.hardware.len() > MAX_HARDWARE_IDS {
            return Err(Error::TooLarge("hardware list"));
        }
        for hw in &m.hardware {
            check_name(hw, "hardware id")?;
        }
        let version = Version::parse(&m.version)?;
        if m.image_len == 0 {
            return Err(Error::InvalidField("image length (zero)"));
        }
        if m.image_len > MAX_IMAGE_LEN {
            return Err(Error::TooLarge("image length"));
        }
        let image_digest = Digest::from_slice(&m.image_sha256)?;
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&m.chunk_size) {
            return Err(Error::InvalidField("chunk size"));
        }
        let nonce_prefix = NoncePrefix::from_slice(&m.nonce_prefix)?;
        let expires_at = UnixTime(m.expires_at);
        check_expiry(expires_at, now)?;
        Ok(VerifiedManifest {
            release_id,
            product: m.product,
            hardware: m.hardware,
            version,
            security_version: SecurityVersion(m.security_version),
            image_len: m.image_len,
            image_digest,
            chunk_size: m.chunk_size,
            nonce_prefix,
            created_at: UnixTime(m.created_at),
            expires_at,
            digest: Digest::of(&envelope.payload),
        })
    }

    /// Verifies a directive's server-key signature, fields and expiry; the
    /// device-specific checks are in [`verify_update`].
    pub fn verify_directive(
        &self,
        envelope: &pb::SignedEnvelope,
        now: UnixTime,
    ) -> Result<VerifiedDirective, Error> {
        check_envelope_size(envelope)?;
        check_expiry(self.expires_at, now)?;
        verify_threshold(envelope, Domain::Directive, &self.server_keys, 1)?;
        let d = pb::Directive::decode(envelope.payload.as_slice())
            .map_err(|_| Error::Malformed("directive"))?;
        let device_id = DeviceId::new(&d.device_id)?;
        let device_nonce = DeviceNonce::from_slice(&d.device_nonce)?;
        let manifest_digest = Digest::from_slice(&d.manifest_digest)?;
        let content_key = d
            .content_key
            .as_ref()
            .ok_or(Error::InvalidField("content key (missing)"))
            .and_then(WrappedContentKey::from_pb)?;
        if d.rollout_id.len() > MAX_ID_LEN {
            return Err(Error::InvalidField("rollout id"));
        }
        let server_time = UnixTime(d.server_time);
        let expires_at = UnixTime(d.expires_at);
        // A directive already expired when the server signed it is refused
        // even if the device's clock lags behind.
        check_expiry(expires_at, now.max(server_time))?;
        Ok(VerifiedDirective {
            device_id,
            device_nonce,
            manifest_digest,
            content_key,
            server_time,
            expires_at,
            rollout_id: d.rollout_id,
        })
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
///
/// Order (first failure wins):
/// 1. the directive: server-key signature, fields, expiry
///    ([`VerifiedTrustRoot::verify_directive`]);
/// 2. [`Error::WrongDevice`], [`Error::NonceMismatch`],
///    [`Error::ServerTimeRegressed`]: a replayed or misrouted directive
///    stops here, before any manifest work;
/// 3. [`Error::ManifestMismatch`]: the manifest's payload digest against the
///    directive (one hash, before several signature checks);
/// 4. the manifest: release-key threshold, fields, expiry
///    ([`VerifiedTrustRoot::verify_manifest`]), against the later of
///    `device.now` and the directive's server time;
/// 5. [`Error::WrongProduct`], [`Error::IncompatibleHardware`],
///    [`Error::SecurityVersionBelowFloor`], [`Error::NotNewer`],
///    [`Error::ImageTooLarge`].
pub fn verify_update(
    trust: &VerifiedTrustRoot,
    directive: &pb::SignedEnvelope,
    manifest: &pb::SignedEnvelope,
    device: &DeviceContext<'_>,
) -> Result<VerifiedUpdate, Error> {
    let directive = trust.verify_directive(directive, device.now)?;
    if directive.device_id != *device.device_id {
        return Err(Error::WrongDevice);
    }
    if directive.device_nonce != *device.device_nonce {
        return Err(Error::NonceMismatch);
    }
    if directive.server_time < device.time_floor {
        return Err(Error::ServerTimeRegressed {
            floor: device.time_floor,
            offered: directive.server_time,
        });
    }
    check_envelope_size(manifest)?;
    if Digest::of(&manifest.payload) != directive.manifest_digest {
        return Err(Error::ManifestMismatch);
    }
    // The directive's server time is authenticated and fresh (it echoes
    // this session's nonce): a device whose clock lags still sees expiry.
    let now = device.now.max(directive.server_time);
    let manifest = trust.verify_manifest(manifest, now)?;
    if manifest.product != device.product {
        return Err(Error::WrongProduct);
    }
    if !manifest.hardware.iter().any(|hw| hw == device.hardware) {
        return Err(Error::IncompatibleHardware);
    }
    if manifest.security_version < device.security_floor {
        return Err(Error::SecurityVersionBelowFloor {
            floor: device.security_floor,
            offered: manifest.security_version,
        });
    }
    if manifest.version <= device.current_version {
        return Err(Error::NotNewer {
            current: device.current_version,
            offered: manifest.version,
        });
    }
    if manifest.image_len > device.slot_capacity {
        return Err(Error::ImageTooLarge {
            image_len: manifest.image_len,
            capacity: device.slot_capacity,
        });
    }
    Ok(VerifiedUpdate {
        directive,
        manifest,
    })
}
