//! The signed objects and their verification rules: TrustRoot (and its
//! rotation chain), ReleaseManifest and Directive.
//!
//! Verified objects are distinct types with private fields
//! ([`VerifiedTrustRoot`], [`VerifiedManifest`], [`VerifiedDirective`],
//! [`VerifiedUpdate`]): a value exists only if the verification that names it
//! ran, so code holding one knows its signatures, roles, expiry and field
//! sizes were checked. [`Manifest`] is the one unauthenticated view: a
//! manifest whose fields were validated and whose bytes match a digest the
//! caller recorded after verifying them earlier (the boot path).
//!
//! # What is trusted without a fresh signature check, and why
//!
//! - [`VerifiedTrustRoot::trust_on_first_use`]: the factory's first
//!   TrustRoot is self-signed; nothing older exists to check it against.
//! - [`VerifiedTrustRoot::reload_stored`]: a root the holder verified before
//!   and stored (device flash, server database). Its own threshold is
//!   re-checked, its expiry is not: an expired root is still the anchor of
//!   the next rotation. It verifies nothing while expired, because
//!   [`VerifiedTrustRoot::verify_manifest`] and
//!   [`VerifiedTrustRoot::verify_directive`] check the root's own expiry.
//! - [`Manifest::from_recorded`]: the bytes of a manifest whose digest the
//!   device recorded when it installed the image under the root of that
//!   time. Boot checks integrity against that record, so retiring the
//!   release key of a running image never strands it (threat 26).
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
//! an expired current TrustRoot can still be rotated: a chain of successors
//! is accepted when every link is signed by the previous root threshold and
//! its own, versions go up by exactly one, and the newest link is unexpired
//! (intermediate links may have expired while the device was offline, as in
//! TUF's root update).

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Deref;

use prost::Message;

use crate::Error;
use crate::envelope::verify_threshold;
use crate::keys::{Domain, PublicKey};
use crate::limits::{
    MAX_CHUNK_SIZE, MAX_ENVELOPE_LEN, MAX_HARDWARE_IDS, MAX_IMAGE_LEN, MAX_KEYS_PER_ROLE,
    MAX_NAME_LEN, MAX_SIGNATURES, MAX_TRUST_CHAIN, MIN_CHUNK_SIZE,
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

/// A TrustRoot whose structure and root signatures were checked, accepted by
/// one of: trust on first use, a verified rotation, or a reload of a root
/// its holder verified before (see the module docs).
#[derive(Clone, Debug)]
pub struct VerifiedTrustRoot {
    version: u32,
    expires_at: UnixTime,
    root_keys: Vec<PublicKey>,
    root_threshold: u32,
    release_keys: Vec<PublicKey>,
    release_threshold: u32,
    server_keys: Vec<PublicKey>,
    envelope: pb::SignedEnvelope,
    digest: Digest,
}

impl PartialEq for VerifiedTrustRoot {
    fn eq(&self, other: &Self) -> bool {
        self.envelope == other.envelope
    }
}

impl Eq for VerifiedTrustRoot {}

impl VerifiedTrustRoot {
    /// Accepts a first TrustRoot, as installed at the factory or on a
    /// server's first `SetTrustRoot`: it must be signed by its own root
    /// threshold and not expired at `now`. Nothing older can vouch for it.
    ///
    /// Structure is checked first (key encodings, thresholds in `1..=keys`,
    /// at most [`MAX_KEYS_PER_ROLE`] keys per role, no key listed twice in a
    /// role or in two roles, at least one server key), then the root
    /// signatures, then expiry.
    pub fn trust_on_first_use(envelope: &pb::SignedEnvelope, now: UnixTime) -> Result<Self, Error> {
        let root = Self::reload_stored(envelope)?;
        check_expiry(root.expires_at, now)?;
        Ok(root)
    }

    /// Reloads a TrustRoot its holder verified and stored earlier: structure
    /// and its own root threshold are re-checked, expiry is not (an expired
    /// root still anchors the next rotation, and it verifies nothing else
    /// while expired).
    pub fn reload_stored(envelope: &pb::SignedEnvelope) -> Result<Self, Error> {
        let root = Self::parse(envelope)?;
        verify_threshold(
            envelope,
            Domain::TrustRoot,
            &root.root_keys,
            root.root_threshold,
        )?;
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
            digest: Digest::of(&envelope.payload),
            envelope: envelope.clone(),
        })
    }

    /// One link of a chain: `next` signed by this root's threshold and by
    /// its own, version exactly one higher. Expiry is the caller's.
    fn successor(&self, next: &pb::SignedEnvelope) -> Result<Self, Error> {
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
        Ok(new)
    }

    /// Accepts `next` as the successor of `self`: signed by the current root
    /// threshold *and* by its own, version exactly `self.version + 1`, not
    /// expired at `now`.
    ///
    /// Order: structure of `next`, the current root threshold (the check
    /// that makes it trustworthy), the new root threshold (its keys are
    /// really held), version succession, expiry. The current TrustRoot may
    /// itself have expired: rotation is how a holder recovers from that.
    pub fn rotate(&self, next: &pb::SignedEnvelope, now: UnixTime) -> Result<Self, Error> {
        let new = self.successor(next)?;
        check_expiry(new.expires_at, now)?;
        Ok(new)
    }

    /// Walks a chain of successors (oldest first, starting at
    /// `self.version + 1`) and returns the newest: every link must be a
    /// [`rotate`](Self::rotate) of the one before it, and the newest must be
    /// unexpired at `now`; the links in between may have expired (a device
    /// that was offline for years catches up in one step). At most
    /// [`MAX_TRUST_CHAIN`] links.
    ///
    /// A refused link is [`Error::ChainLink`] with its position and cause;
    /// nothing of the chain is accepted then.
    pub fn update_chain(
        &self,
        successors: &[pb::SignedEnvelope],
        now: UnixTime,
    ) -> Result<Self, Error> {
        if successors.is_empty() {
            return Err(Error::EmptyChain);
        }
        if successors.len() > MAX_TRUST_CHAIN {
            return Err(Error::TooLarge("TrustRoot chain"));
        }
        let mut current = self.clone();
        for (index, next) in successors.iter().enumerate() {
            let claimed = pb::TrustRoot::decode(next.payload.as_slice()).map_or(0, |t| t.version);
            let link = |source: Error| Error::ChainLink {
                version: claimed,
                index: index as u32,
                source: alloc::boxed::Box::new(source),
            };
            current = current.successor(next).map_err(link)?;
            if index + 1 == successors.len() {
                check_expiry(current.expires_at, now).map_err(link)?;
            }
        }
        Ok(current)
    }

    /// Monotonic version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Expiry.
    pub fn expires_at(&self) -> UnixTime {
        self.expires_at
    }

    /// Whether it has expired at `now` (then it verifies nothing but its
    /// successor).
    pub fn is_expired(&self, now: UnixTime) -> bool {
        now > self.expires_at
    }

    /// Keys that sign TrustRoots.
    pub fn root_keys(&self) -> &[PublicKey] {
        &self.root_keys
    }

    /// Root signatures needed.
    pub fn root_threshold(&self) -> u32 {
        self.root_threshold
    }

    /// Keys that sign release manifests.
    pub fn release_keys(&self) -> &[PublicKey] {
        &self.release_keys
    }

    /// Release signatures needed.
    pub fn release_threshold(&self) -> u32 {
        self.release_threshold
    }

    /// Online server (director) keys; one signature suffices.
    pub fn server_keys(&self) -> &[PublicKey] {
        &self.server_keys
    }

    /// The envelope it came from, to persist or forward unchanged.
    pub fn envelope(&self) -> &pb::SignedEnvelope {
        &self.envelope
    }

    /// SHA-256 of the envelope's payload: identifies this root exactly.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Verifies a release manifest: release-key threshold (a manifest signed
    /// with any other role's key is refused), well-formed fields, not
    /// expired, under an unexpired TrustRoot.
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
        let manifest = Manifest::decode_fields(&envelope.payload)?;
        check_expiry(manifest.expires_at, now)?;
        Ok(VerifiedManifest {
            manifest,
            envelope: envelope.clone(),
        })
    }

    /// Verifies a directive's server-key signature, fields and expiry under
    /// an unexpired TrustRoot; the device-specific checks are in
    /// [`verify_update`].
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
            .map(WrappedContentKey::from_pb)
            .transpose()?;
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
            payload_url: d.payload_url,
        })
    }
}

/// The chain of TrustRoots a server (or a tool) holds, oldest first: every
/// root it ever accepted, expired or not, each link verified. Devices that
/// lag get the successors they lack from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustChain {
    roots: Vec<VerifiedTrustRoot>,
}

impl TrustChain {
    /// A chain of one root.
    pub fn new(first: VerifiedTrustRoot) -> Self {
        Self {
            roots: alloc::vec![first],
        }
    }

    /// Rebuilds a stored chain (oldest first): the first root as
    /// [`VerifiedTrustRoot::reload_stored`], every later one as a verified
    /// successor of the one before it. Expiry is not checked (see the module
    /// docs); a link that does not verify is [`Error::ChainLink`].
    pub fn reload_stored(envelopes: &[pb::SignedEnvelope]) -> Result<Self, Error> {
        let (first, rest) = envelopes.split_first().ok_or(Error::EmptyChain)?;
        let first = VerifiedTrustRoot::reload_stored(first).map_err(|source| Error::ChainLink {
            version: 0,
            index: 0,
            source: alloc::boxed::Box::new(source),
        })?;
        let mut roots = alloc::vec![first];
        for (i, next) in rest.iter().enumerate() {
            let prev = roots.last().expect("the chain is never empty");
            let root = prev.successor(next).map_err(|source| Error::ChainLink {
                version: prev.version.saturating_add(1),
                index: i as u32 + 1,
                source: alloc::boxed::Box::new(source),
            })?;
            roots.push(root);
        }
        Ok(Self { roots })
    }

    /// Appends a rotation of the newest root ([`VerifiedTrustRoot::rotate`]).
    pub fn push(&mut self, next: &pb::SignedEnvelope, now: UnixTime) -> Result<(), Error> {
        let root = self.latest().rotate(next, now)?;
        self.roots.push(root);
        Ok(())
    }

    /// The newest root: the one releases and directives verify against.
    pub fn latest(&self) -> &VerifiedTrustRoot {
        self.roots.last().expect("the chain is never empty")
    }

    /// Every root, oldest first.
    pub fn roots(&self) -> &[VerifiedTrustRoot] {
        &self.roots
    }

    /// The successors a holder of root `version` lacks, oldest first (empty
    /// when it is current, or when `version` is not in this chain: then no
    /// walk from it can verify), at most [`MAX_TRUST_CHAIN`] of them.
    pub fn successors_of(&self, version: u32) -> &[VerifiedTrustRoot] {
        match self.roots.iter().position(|r| r.version == version) {
            Some(i) => {
                let rest = &self.roots[i + 1..];
                &rest[..rest.len().min(MAX_TRUST_CHAIN)]
            }
            None => &[],
        }
    }
}

/// A release manifest's validated fields. On its own it says nothing about
/// who signed it: [`VerifiedManifest`] is the authenticated form, and
/// [`Manifest::from_recorded`] binds it to a digest the caller recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    release_id: ReleaseId,
    product: String,
    hardware: Vec<String>,
    version: Version,
    security_version: SecurityVersion,
    image_len: u64,
    image_digest: Digest,
    chunk_size: u32,
    nonce_prefix: NoncePrefix,
    created_at: UnixTime,
    expires_at: UnixTime,
    digest: Digest,
    payload_encoding: pb::PayloadEncoding,
    /// The Merkle root of a signature-only payload (`None` when encrypted).
    chunk_root: Option<Digest>,
}

impl Manifest {
    /// Decodes and validates a manifest payload's fields (no signatures).
    fn decode_fields(payload: &[u8]) -> Result<Self, Error> {
        if payload.len() > MAX_ENVELOPE_LEN {
            return Err(Error::TooLarge("envelope payload"));
        }
        let m = pb::ReleaseManifest::decode(payload)
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
        let payload_encoding = pb::PayloadEncoding::try_from(m.payload_encoding)
            .map_err(|_| Error::InvalidField("payload encoding"))?;
        let (nonce_prefix, chunk_root) = match payload_encoding {
            pb::PayloadEncoding::Encrypted => {
                if !m.chunk_root.is_empty() {
                    return Err(Error::InvalidField(
                        "chunk root (only signature-only releases have one)",
                    ));
                }
                (NoncePrefix::from_slice(&m.nonce_prefix)?, None)
            }
            pb::PayloadEncoding::SignatureOnly => {
                if !m.nonce_prefix.is_empty() {
                    return Err(Error::InvalidField(
                        "nonce prefix (a signature-only release has none)",
                    ));
                }
                let root = Digest::from_slice(&m.chunk_root)
                    .map_err(|_| Error::InvalidField("chunk root (32 bytes)"))?;
                (NoncePrefix::from_bytes([0; NoncePrefix::LEN]), Some(root))
            }
        };
        Ok(Self {
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
            expires_at: UnixTime(m.expires_at),
            digest: Digest::of(payload),
            payload_encoding,
            chunk_root,
        })
    }

    /// The manifest in `envelope`, whose payload digest must equal
    /// `recorded`: a digest its holder recorded durably after verifying the
    /// manifest (the device at install, or provisioning). Signatures and
    /// expiry are not checked again: this is how boot re-checks an
    /// installed image's integrity without depending on the release key
    /// still being listed.
    pub fn from_recorded(envelope: &pb::SignedEnvelope, recorded: Digest) -> Result<Self, Error> {
        check_envelope_size(envelope)?;
        if Digest::of(&envelope.payload) != recorded {
            return Err(Error::ManifestMismatch);
        }
        Self::decode_fields(&envelope.payload)
    }

    /// Release name.
    pub fn release_id(&self) -> &ReleaseId {
        &self.release_id
    }

    /// Product.
    pub fn product(&self) -> &str {
        &self.product
    }

    /// Compatible hardware revisions (non-empty).
    pub fn hardware(&self) -> &[String] {
        &self.hardware
    }

    /// Firmware version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Anti-rollback counter.
    pub fn security_version(&self) -> SecurityVersion {
        self.security_version
    }

    /// Plaintext image length (> 0, <= [`MAX_IMAGE_LEN`]).
    pub fn image_len(&self) -> u64 {
        self.image_len
    }

    /// SHA-256 of the plaintext image.
    pub fn image_digest(&self) -> Digest {
        self.image_digest
    }

    /// Plaintext bytes per chunk ([`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`]).
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// AES-GCM nonce prefix.
    pub fn nonce_prefix(&self) -> NoncePrefix {
        self.nonce_prefix
    }

    /// Creation time.
    pub fn created_at(&self) -> UnixTime {
        self.created_at
    }

    /// Expiry (for new installs; not enforced at boot).
    pub fn expires_at(&self) -> UnixTime {
        self.expires_at
    }

    /// SHA-256 of the envelope's payload: what a directive names.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// How the payload travels: encrypted (the default) or signature-only.
    pub fn payload_encoding(&self) -> pb::PayloadEncoding {
        self.payload_encoding
    }

    /// Whether the payload is signature-only (not encrypted).
    pub fn is_signature_only(&self) -> bool {
        self.payload_encoding == pb::PayloadEncoding::SignatureOnly
    }

    /// The payload's wire layout, whichever its encoding.
    pub fn payload_layout(&self) -> crate::signed_chunks::PayloadLayout {
        use crate::signed_chunks::{PayloadLayout, SignedChunkParams};
        match self.chunk_root {
            Some(root) => PayloadLayout::SignatureOnly(SignedChunkParams {
                image_len: self.image_len,
                chunk_size: self.chunk_size,
                root,
            }),
            None => PayloadLayout::Encrypted(self.payload_params()),
        }
    }

    /// The encrypted payload layout, for [`crate::payload`] (for a
    /// signature-only release, whose chunks would all fail to decrypt, use
    /// [`Manifest::payload_layout`]).
    pub fn payload_params(&self) -> crate::payload::PayloadParams {
        crate::payload::PayloadParams {
            image_len: self.image_len,
            chunk_size: self.chunk_size,
            nonce_prefix: self.nonce_prefix,
            image_digest: self.image_digest,
        }
    }
}

/// A release manifest whose release-key signatures, fields and expiry were
/// checked against an unexpired TrustRoot. Its fields are [`Manifest`]'s.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedManifest {
    manifest: Manifest,
    envelope: pb::SignedEnvelope,
}

impl VerifiedManifest {
    /// The envelope it was verified from (to store next to the image).
    pub fn envelope(&self) -> &pb::SignedEnvelope {
        &self.envelope
    }

    /// The validated fields.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

impl Deref for VerifiedManifest {
    type Target = Manifest;

    fn deref(&self) -> &Manifest {
        &self.manifest
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
    device_id: DeviceId,
    device_nonce: DeviceNonce,
    manifest_digest: Digest,
    content_key: Option<WrappedContentKey>,
    server_time: UnixTime,
    expires_at: UnixTime,
    rollout_id: String,
    payload_url: String,
}

impl VerifiedDirective {
    /// Device it is bound to.
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// Echoed device nonce.
    pub fn device_nonce(&self) -> &DeviceNonce {
        &self.device_nonce
    }

    /// Manifest it names.
    pub fn manifest_digest(&self) -> Digest {
        self.manifest_digest
    }

    /// The release content key, wrapped to the device (`None` for a
    /// signature-only release: [`verify_update`] checks it is there exactly
    /// when the manifest is encrypted).
    pub fn content_key(&self) -> Option<&WrappedContentKey> {
        self.content_key.as_ref()
    }

    /// Server time at signing.
    pub fn server_time(&self) -> UnixTime {
        self.server_time
    }

    /// Expiry.
    pub fn expires_at(&self) -> UnixTime {
        self.expires_at
    }

    /// Rollout (informational; may be empty).
    pub fn rollout_id(&self) -> &str {
        &self.rollout_id
    }

    /// Where the payload may also be fetched over HTTP(S) with Range
    /// requests (`None` when absent, or longer than
    /// [`crate::limits::MAX_PAYLOAD_URL_LEN`]). The source is untrusted:
    /// the signature on this directive says only which URL the server
    /// suggested, and every chunk is authenticated as from any source.
    pub fn payload_url(&self) -> Option<&str> {
        let url = self.payload_url.as_str();
        (!url.is_empty() && url.len() <= crate::limits::MAX_PAYLOAD_URL_LEN).then_some(url)
    }
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

/// A directive and manifest that together passed every device-side check,
/// under one TrustRoot.
#[derive(Clone, Debug)]
pub struct VerifiedUpdate {
    directive: VerifiedDirective,
    manifest: VerifiedManifest,
    root_digest: Digest,
}

impl VerifiedUpdate {
    /// The directive.
    pub fn directive(&self) -> &VerifiedDirective {
        &self.directive
    }

    /// The manifest it names.
    pub fn manifest(&self) -> &VerifiedManifest {
        &self.manifest
    }

    /// [`VerifiedTrustRoot::digest`] of the root both were verified under.
    pub fn root_digest(&self) -> Digest {
        self.root_digest
    }
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
/// 5. the content key is there exactly when the release is encrypted
///    ([`Error::InvalidField`]);
/// 6. [`Error::WrongProduct`], [`Error::IncompatibleHardware`],
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
    match (manifest.payload_encoding, directive.content_key.is_some()) {
        (pb::PayloadEncoding::Encrypted, false) => {
            return Err(Error::InvalidField(
                "content key (missing for an encrypted release)",
            ));
        }
        (pb::PayloadEncoding::SignatureOnly, true) => {
            return Err(Error::InvalidField(
                "content key (given for a signature-only release)",
            ));
        }
        _ => {}
    }
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
        root_digest: trust.digest,
    })
}

/// Checks that deliberately skip a rule, named for what they skip. Each has
/// exactly one legitimate caller, given in its docs.
pub mod danger {
    use super::{Manifest, VerifiedManifest, VerifiedTrustRoot, check_envelope_size};
    use crate::envelope::verify_threshold;
    use crate::keys::Domain;
    use crate::{Error, pb};

    /// Verifies a manifest's release-key threshold and fields under `trust`
    /// but **not expiry** (neither the manifest's nor the root's).
    ///
    /// For factory provisioning only: the factory flashes a first image
    /// whose manifest may have expired since the release was built, and the
    /// device must still boot it. An update offered in the field always goes
    /// through [`super::verify_update`], which enforces expiry.
    pub fn verify_manifest_ignoring_expiry(
        trust: &VerifiedTrustRoot,
        envelope: &pb::SignedEnvelope,
    ) -> Result<VerifiedManifest, Error> {
        check_envelope_size(envelope)?;
        verify_threshold(
            envelope,
            Domain::ReleaseManifest,
            &trust.release_keys,
            trust.release_threshold,
        )?;
        Ok(VerifiedManifest {
            manifest: Manifest::decode_fields(&envelope.payload)?,
            envelope: envelope.clone(),
        })
    }
}
