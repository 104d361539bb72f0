//! [`Identity`]: what a device was given at provisioning, read from its
//! identity bundle (`proto/aloft/v1/signed.proto`, `IdentityBundle`): the
//! one `aloft device provision` writes with a key made off the device
//! (development), or the template `aloft device template` writes, into
//! which the device stores the key it made itself ([`crate::enroll`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use aloft_device::DeviceConfig;
use aloft_protocol::prost::Message as _;
use aloft_protocol::trust::VerifiedTrustRoot;
use aloft_protocol::{DeviceId, PublicKey, SecretKey, pb};

/// Largest identity file read (a bundle is a few KiB).
pub const MAX_IDENTITY_LEN: u64 = 256 * 1024;

/// Attribute naming the device's product (checked against manifests).
pub const ATTR_PRODUCT: &str = "product";
/// Attribute naming the device's hardware revision.
pub const ATTR_HARDWARE: &str = "hardware";

/// Why an identity bundle could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The file could not be read.
    #[error("identity bundle {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_IDENTITY_LEN`].
    #[error("identity bundle {path}: {len} bytes is larger than the {MAX_IDENTITY_LEN}-byte limit")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// The bytes are not an `IdentityBundle`.
    #[error("identity bundle does not decode: {0}")]
    Decode(#[source] aloft_protocol::prost::DecodeError),
    /// The device id is empty or invalid.
    #[error("identity bundle: invalid device id {0:?}")]
    DeviceId(String),
    /// The private key is not a 32-byte P-256 scalar.
    #[error("identity bundle: the private key is not a valid P-256 key")]
    PrivateKey,
    /// The bundle is a template: the device has not made its key yet.
    #[error(
        "identity bundle: no private key yet (a template from `aloft device template`): the device makes its key at its first factory boot with `aloft-agent register-request`"
    )]
    NoKey,
    /// The registration request would be refused (an attribute).
    #[error("identity bundle: its registration request would be refused: {0}")]
    Request(#[source] aloft_protocol::Error),
    /// The bundle could not be written back with the new key.
    #[error("identity bundle {path}: could not store the new key: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The server URL is not `http://` or `https://`.
    #[error("identity bundle: server url {0:?} must start with http:// or https://")]
    ServerUrl(String),
    /// An `https://` server without a CA to pin.
    #[error("identity bundle: server {0} uses TLS but the bundle has no CA to pin")]
    MissingCa(String),
    /// The bundle carries no TrustRoot.
    #[error(
        "identity bundle: no TrustRoot (provision the device again with the fleet's TrustRoot)"
    )]
    NoTrustRoot,
    /// The TrustRoot does not verify.
    #[error("identity bundle: TrustRoot refused: {0}")]
    TrustRoot(#[source] aloft_protocol::Error),
    /// A required attribute (product, hardware) is missing.
    #[error("identity bundle: attribute {0:?} is missing (provision with --attr {0}=...)")]
    MissingAttribute(&'static str),
}

/// A device's identity: id, key, server, pinned CA, TrustRoot, attributes.
#[derive(Clone)]
pub struct Identity {
    device_id: DeviceId,
    key: SecretKey,
    server_url: String,
    ca_pem: Option<String>,
    trust: VerifiedTrustRoot,
    attributes: BTreeMap<String, String>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private key.
        f.debug_struct("Identity")
            .field("device_id", &self.device_id)
            .field("public_key", &self.key.public_key())
            .field("server_url", &self.server_url)
            .field("pinned_ca", &self.ca_pem.is_some())
            .field("trust_root_version", &self.trust.version())
            .field("attributes", &self.attributes)
            .finish()
    }
}

impl Identity {
    /// Reads, decodes and checks an identity bundle file.
    ///
    /// A template (no key yet) is refused with [`IdentityError::NoKey`]:
    /// [`crate::enroll::enroll`] makes the key first.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        Self::from_bundle(read_bundle(path.as_ref())?)
    }

    /// Decodes and checks an encoded `IdentityBundle`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        let bundle = pb::IdentityBundle::decode(bytes).map_err(IdentityError::Decode)?;
        Self::from_bundle(bundle)
    }

    /// Checks a decoded bundle: a valid device id and private key, an
    /// `http(s)://` server URL (with a CA for `https://`), and a TrustRoot
    /// signed by its own root threshold. The TrustRoot's **expiry is not
    /// checked** here (as at boot): a device that was offline past it must
    /// still run; directives and manifests carry their own expiry.
    pub fn from_bundle(bundle: pb::IdentityBundle) -> Result<Self, IdentityError> {
        let device_id = DeviceId::new(&bundle.device_id)
            .map_err(|_| IdentityError::DeviceId(bundle.device_id.clone()))?;
        if bundle.private_key.is_empty() {
            return Err(IdentityError::NoKey);
        }
        // Exactly 32 bytes: a shorter slice would be zero-padded by the curve
        // library, hiding a truncated bundle.
        if bundle.private_key.len() != SecretKey::LEN {
            return Err(IdentityError::PrivateKey);
        }
        let key =
            SecretKey::from_slice(&bundle.private_key).map_err(|_| IdentityError::PrivateKey)?;
        let url = bundle.server_url;
        let tls = if url.starts_with("https://") {
            true
        } else if url.starts_with("http://") {
            false
        } else {
            return Err(IdentityError::ServerUrl(url));
        };
        let ca_pem = Some(bundle.ca_pem).filter(|p| !p.trim().is_empty());
        if tls && ca_pem.is_none() {
            return Err(IdentityError::MissingCa(url));
        }
        let envelope = bundle.trust_root.ok_or(IdentityError::NoTrustRoot)?;
        let trust =
            VerifiedTrustRoot::reload_stored(&envelope).map_err(IdentityError::TrustRoot)?;
        Ok(Self {
            device_id,
            key,
            server_url: url,
            ca_pem,
            trust,
            attributes: bundle.attributes.into_iter().collect(),
        })
    }

    /// Builds an identity from its parts (simulators and tests).
    pub fn new(
        device_id: DeviceId,
        key: SecretKey,
        server_url: impl Into<String>,
        ca_pem: Option<String>,
        trust: VerifiedTrustRoot,
        attributes: BTreeMap<String, String>,
    ) -> Result<Self, IdentityError> {
        Self::from_bundle(pb::IdentityBundle {
            device_id: device_id.to_string(),
            private_key: key.to_bytes().to_vec(),
            server_url: server_url.into(),
            ca_pem: ca_pem.unwrap_or_default(),
            trust_root: Some(trust.envelope().clone()),
            attributes: attributes.into_iter().collect(),
        })
    }

    /// The bundle form (contains the private key: keep it secret).
    pub fn to_bundle(&self) -> pb::IdentityBundle {
        pb::IdentityBundle {
            device_id: self.device_id.to_string(),
            private_key: self.key.to_bytes().to_vec(),
            server_url: self.server_url.clone(),
            ca_pem: self.ca_pem.clone().unwrap_or_default(),
            trust_root: Some(self.trust.envelope().clone()),
            attributes: self.attributes.clone().into_iter().collect(),
        }
    }

    /// The device id.
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// The device's private key (signs session messages, unwraps content keys).
    pub fn secret_key(&self) -> &SecretKey {
        &self.key
    }

    /// The device's public key (what the server registered).
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// The server URL (`http://` or `https://`).
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The PEM of the CA the server's certificate must chain to.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The factory TrustRoot the device was provisioned with (its own
    /// root threshold checked, expiry not). Only the factory step uses it:
    /// a provisioned device verifies updates under the root stored in its
    /// flash ([`aloft_device::Device::trust_root`]), which rotations replace.
    pub fn factory_trust_root(&self) -> &VerifiedTrustRoot {
        &self.trust
    }

    /// The provisioning attributes.
    pub fn attributes(&self) -> &BTreeMap<String, String> {
        &self.attributes
    }

    /// The compatibility configuration for [`aloft_device::Device`]: product
    /// and hardware from the attributes, the default trial attempts
    /// ([`aloft_device::DEFAULT_TRIAL_ATTEMPTS`]) and time policy.
    pub fn device_config(&self) -> Result<DeviceConfig, IdentityError> {
        let get = |name: &'static str| {
            self.attributes
                .get(name)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or(IdentityError::MissingAttribute(name))
        };
        Ok(DeviceConfig::new(get(ATTR_PRODUCT)?, get(ATTR_HARDWARE)?))
    }
}

/// What the factory step (writing the first image to flash) needs from an
/// identity bundle, which may still be a template without a key: the
/// device id, the factory TrustRoot (its own threshold checked) and the
/// device configuration from the attributes.
pub fn factory_view(
    path: impl AsRef<Path>,
) -> Result<(DeviceId, VerifiedTrustRoot, DeviceConfig), IdentityError> {
    let bundle = read_bundle(path.as_ref())?;
    if !bundle.private_key.is_empty() {
        let identity = Identity::from_bundle(bundle)?;
        let config = identity.device_config()?;
        return Ok((identity.device_id, identity.trust, config));
    }
    let device_id = DeviceId::new(&bundle.device_id)
        .map_err(|_| IdentityError::DeviceId(bundle.device_id.clone()))?;
    let envelope = bundle.trust_root.ok_or(IdentityError::NoTrustRoot)?;
    let trust = VerifiedTrustRoot::reload_stored(&envelope).map_err(IdentityError::TrustRoot)?;
    let get = |name: &'static str| {
        bundle
            .attributes
            .get(name)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or(IdentityError::MissingAttribute(name))
    };
    let config = DeviceConfig::new(get(ATTR_PRODUCT)?, get(ATTR_HARDWARE)?);
    Ok((device_id, trust, config))
}

/// Reads and decodes an identity bundle file (size-checked first), with or
/// without a key.
pub(crate) fn read_bundle(path: &Path) -> Result<pb::IdentityBundle, IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_IDENTITY_LEN {
        return Err(IdentityError::TooLarge {
            path: path.to_owned(),
            len,
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    pb::IdentityBundle::decode(bytes.as_slice()).map_err(IdentityError::Decode)
}
