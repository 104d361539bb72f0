//! Keys born on the device: the first factory boot.
//!
//! The station writes the device's identity bundle without a key (a
//! template, `aloft device template`: id, server, pinned CA, TrustRoot,
//! attributes). At its first factory boot the device calls [`enroll`]: it
//! generates its P-256 key pair, stores the private key in that same bundle
//! (its identity store; written to a temporary file, synced, then renamed
//! over the template, mode 0600), and makes a registration request
//! ([`aloft_protocol::registration`]) signed by the new key, the proof of
//! possession. Only the request leaves the device: the station registers
//! it (`aloft device register --request FILE`, or many at once with
//! `aloft device import FILE`). The private key is never printed, returned
//! in the request or written anywhere else.
//!
//! A bundle that already holds a key (a device restarted before the station
//! took its request) keeps it: [`enroll`] signs a fresh request (new
//! creation time and nonce) with the existing key and never replaces it,
//! so a device's key cannot change under a registered id.
//!
//! The request travels as one line of JSON ([`request_line`]):
//! `{"device_id":"ID","payload":"HEX","signature":"HEX"}`, `payload` the
//! encoded `DeviceRegistration`, `signature` its 64-byte r || s signature;
//! `device_id` repeats the signed id so the station's file can be read (the
//! server checks they agree). Lines concatenated make the JSON-lines file
//! `aloft device import` reads.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use aloft_protocol::prost::Message as _;
use aloft_protocol::registration::{self, NONCE_LEN};
use aloft_protocol::{SecretKey, UnixTime, Version, pb};

use crate::identity::{Identity, IdentityError, read_bundle};

/// What the device says about itself in its request, beyond its bundle.
#[derive(Clone, Debug)]
pub struct EnrollOptions {
    /// The firmware version in slot A (what the server records until the
    /// first check-in).
    pub factory_version: Version,
    /// What it installs (`None`: its [`aloft_device::DeviceConfig`] default,
    /// encrypted only for this build, which links the decrypting installer).
    pub payloads: Option<pb::PayloadSupport>,
    /// Its clock (the request's creation time; the server refuses stale or
    /// future requests).
    pub now: UnixTime,
}

/// The result of [`enroll`].
#[derive(Debug)]
pub struct Enrollment {
    /// The identity, with its key (as [`Identity::load`] reads it now).
    pub identity: Identity,
    /// The signed registration request.
    pub request: pb::SignedRegistration,
    /// True when this call made the key; false when the bundle held one.
    pub key_made: bool,
}

/// Makes the device's key if its bundle has none, stores it there, and
/// signs a registration request with it (see the module docs).
///
/// Errors: the bundle cannot be read or is not a valid template (no
/// TrustRoot, bad id, URL or attributes: nothing is written then), the
/// attributes would be refused by the server, or the bundle cannot be
/// written back.
pub fn enroll(path: &Path, opts: &EnrollOptions) -> Result<Enrollment, IdentityError> {
    let mut bundle = read_bundle(path)?;
    let key_made = bundle.private_key.is_empty();
    if key_made {
        bundle.private_key = SecretKey::generate().to_bytes().to_vec();
    }
    // Check everything before the key is stored.
    let identity = Identity::from_bundle(bundle.clone())?;
    let payloads = match opts.payloads {
        Some(p) => p,
        None => identity.device_config()?.payloads.to_pb(),
    };
    let request = pb::DeviceRegistration {
        device_id: identity.device_id().to_string(),
        public_key: identity.public_key().to_sec1_compressed().to_vec(),
        attributes: identity.attributes().clone(),
        factory_version: opts.factory_version.to_string(),
        created_at: opts.now.0,
        nonce: random::<NONCE_LEN>().to_vec(),
        payloads: payloads as i32,
    };
    registration::attributes_from_map(&request.attributes).map_err(IdentityError::Request)?;
    let signed = registration::seal(&request, identity.secret_key());
    // The server's checks, here first: a request this device cannot make
    // valid is refused before the key is kept.
    registration::verify(&signed).map_err(IdentityError::Request)?;
    if key_made {
        write_private(path, &bundle.encode_to_vec()).map_err(|source| IdentityError::Write {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(Enrollment {
        identity,
        request: signed,
        key_made,
    })
}

/// The request as one JSON line (no newline; see the module docs).
pub fn request_line(device_id: &str, request: &pb::SignedRegistration) -> String {
    // Device ids are A-Z a-z 0-9 . _ : - (checked by `DeviceId`): nothing to
    // escape.
    format!(
        "{{\"device_id\":\"{device_id}\",\"payload\":\"{}\",\"signature\":\"{}\"}}",
        hex::encode(&request.payload),
        hex::encode(&request.signature)
    )
}

/// Replaces `path` with `bytes` durably: a temporary file beside it (mode
/// 0600), synced, renamed over it, the directory synced.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.key.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Random bytes from the operating system.
fn random<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the OS random number generator is available");
    buf
}
