//! `aloft-release release`: build the sample firmware, write and sign its
//! manifest with the offline release key, encrypt the payload (or, with
//! `--signature-only`, for devices that cannot decrypt, cut it into
//! plaintext chunks with Merkle proofs to the root the manifest signs) and
//! stage the result as a `ReleaseBundle` (a file, or an upload through the
//! admin API).
//!
//! The release key is read from its key file and used only in this process;
//! it is never written anywhere else or sent anywhere. Before a bundle is
//! written it is checked the way a device will check it: the manifest
//! against the TrustRoot of the key directory, and the payload decrypted
//! (or verified, chunk by chunk) back to the image (see [`check_bundle`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use aloft_firmware::config::{ENV_FAULT, ENV_VERSION, Fault};
use aloft_protocol::envelope::seal;
use aloft_protocol::keys::Domain;
use aloft_protocol::payload::encrypt_payload;
use aloft_protocol::prost::Message as _;
use aloft_protocol::signed_chunks::{PayloadOpener, build_payload};
use aloft_protocol::trust::{VerifiedManifest, VerifiedTrustRoot};
use aloft_protocol::{ContentKey, Digest, NoncePrefix, ReleaseId, SecretKey, Version, pb};
use serde::Serialize;

use crate::{ReleaseError, now};

/// Default product name of the sample firmware.
pub const DEFAULT_PRODUCT: &str = aloft_firmware::board::PRODUCT;
/// Default hardware revision of the sample firmware.
pub const DEFAULT_HARDWARE: &str = aloft_firmware::board::HARDWARE;
/// Default plaintext bytes per payload chunk.
pub const DEFAULT_CHUNK_SIZE: u32 = 16 * 1024;
/// Cargo profile the firmware is built with (see the root Cargo.toml).
pub const FIRMWARE_PROFILE: &str = "firmware";

/// What goes into a release.
#[derive(Clone, Debug)]
pub struct ReleaseOptions {
    /// Firmware version.
    pub version: Version,
    /// Anti-rollback counter.
    pub security_version: u32,
    /// Deliberate fault baked into the firmware (demos and tests).
    pub fault: Fault,
    /// Product name.
    pub product: String,
    /// Hardware revisions the image runs on.
    pub hardware: Vec<String>,
    /// Release id; default `PRODUCT-VERSION`.
    pub release_id: Option<String>,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Days the manifest stays valid for new installs.
    pub valid_days: u32,
    /// Signature-only: signed, not encrypted (for devices that cannot
    /// decrypt; a server refuses it for a product marked sensitive).
    pub signature_only: bool,
}

impl ReleaseOptions {
    /// Options with the sample firmware's defaults.
    pub fn new(version: Version) -> Self {
        Self {
            version,
            security_version: 0,
            fault: Fault::None,
            product: DEFAULT_PRODUCT.to_owned(),
            hardware: vec![DEFAULT_HARDWARE.to_owned()],
            release_id: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            valid_days: 90,
            signature_only: false,
        }
    }

    /// The release id this release gets.
    pub fn release_id(&self) -> Result<ReleaseId, ReleaseError> {
        let id = self
            .release_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", self.product, self.version));
        ReleaseId::new(&id).map_err(|e| ReleaseError::InvalidArg {
            what: "release id",
            reason: format!("{id:?}: {e}"),
        })
    }
}

/// Parses a `MAJOR.MINOR.PATCH` version argument.
pub fn parse_version(s: &str) -> Result<Version, ReleaseError> {
    Version::parse(s).map_err(|_| ReleaseError::InvalidArg {
        what: "version",
        reason: format!("{s:?} is not MAJOR.MINOR.PATCH (e.g. 1.2.0)"),
    })
}

/// The public description of a staged release, printed with `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct ReleaseSummary {
    /// Release id.
    pub release_id: String,
    /// Product.
    pub product: String,
    /// Hardware revisions.
    pub hardware: Vec<String>,
    /// Version.
    pub version: String,
    /// Security version.
    pub security_version: u32,
    /// Fault baked in.
    pub fault: String,
    /// Plaintext image bytes.
    pub image_len: u64,
    /// SHA-256 of the image (hex).
    pub image_sha256: String,
    /// SHA-256 of the manifest payload (hex): what directives name.
    pub manifest_digest: String,
    /// Bytes per chunk.
    pub chunk_size: u32,
    /// Payload bytes (encrypted chunks, or plaintext chunks with proofs).
    pub payload_len: u64,
    /// `encrypted` or `signature-only`.
    pub payload_encoding: String,
    /// Manifest expiry, unix seconds.
    pub expires_at: u64,
    /// Where the bundle went (a file path or a server URL).
    pub staged: String,
}

/// Builds the sample firmware with `version` and `fault` baked in (cargo,
/// profile [`FIRMWARE_PROFILE`]) and returns the executable's path.
///
/// Runs `cargo build` in the workspace this tool was built from, with the
/// caller's `CARGO_TARGET_DIR`; cargo's output goes to stderr.
pub fn build_firmware(version: Version, fault: Fault) -> Result<PathBuf, ReleaseError> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .ok_or_else(|| ReleaseError::Build("workspace root not found".into()))?
        .to_owned();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--profile",
            FIRMWARE_PROFILE,
            "-p",
            "aloft-firmware",
            "--bin",
            aloft_firmware::FIRMWARE_BIN,
            "--message-format=json-render-diagnostics",
        ])
        .env(ENV_VERSION, version.to_string())
        .env(ENV_FAULT, fault.as_str())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| ReleaseError::Build(format!("could not run cargo: {e}")))?;
    if !output.status.success() {
        return Err(ReleaseError::Build(format!(
            "cargo exited with {}",
            output.status
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n == aloft_firmware::FIRMWARE_BIN)
        })
        .ok_or_else(|| ReleaseError::Build("cargo reported no firmware executable".into()))
}

/// Checks that a sample-firmware `image` has `opts`' version and fault baked
/// in (its configuration record, see `aloft_firmware::config`); an image
/// without a record (another firmware) is accepted as it is. A mismatch
/// would make devices report a version the manifest does not name.
pub fn check_baked(image: &[u8], opts: &ReleaseOptions) -> Result<(), ReleaseError> {
    let Ok(baked) = aloft_firmware::config::read_record(image) else {
        return Ok(());
    };
    if baked.version != opts.version || baked.fault != opts.fault {
        return Err(ReleaseError::InvalidArg {
            what: "image",
            reason: format!(
                "it was built as version {} with fault {}, not version {} with fault {}",
                baked.version, baked.fault, opts.version, opts.fault
            ),
        });
    }
    Ok(())
}

/// Signs and encrypts `image` into a release bundle, then checks it against
/// `trust` exactly as a device would ([`check_bundle`]); a release key that
/// the TrustRoot does not list is refused here, not on the devices.
pub fn make_bundle(
    image: &[u8],
    opts: &ReleaseOptions,
    release_key: &SecretKey,
    trust: &VerifiedTrustRoot,
) -> Result<(pb::ReleaseBundle, ReleaseSummary), ReleaseError> {
    let release_id = opts.release_id()?;
    let created_at = now();
    let expires_at = created_at.0 + u64::from(opts.valid_days) * 86_400;
    let image_digest = Digest::of(image);
    let nonce_prefix = NoncePrefix::from_bytes(random());
    let content_key = ContentKey::from_bytes(random());
    let signed_chunks = if opts.signature_only {
        Some(
            build_payload(image, opts.chunk_size)
                .map_err(ReleaseError::refused("the signature-only payload"))?,
        )
    } else {
        None
    };
    let mut manifest = pb::ReleaseManifest {
        release_id: release_id.as_str().to_owned(),
        product: opts.product.clone(),
        hardware: opts.hardware.clone(),
        version: opts.version.to_string(),
        security_version: opts.security_version,
        image_len: image.len() as u64,
        image_sha256: image_digest.as_bytes().to_vec(),
        chunk_size: opts.chunk_size,
        nonce_prefix: nonce_prefix.as_bytes().to_vec(),
        created_at: created_at.0,
        expires_at,
        ..Default::default()
    };
    if let Some((root, _)) = &signed_chunks {
        manifest.payload_encoding = pb::PayloadEncoding::SignatureOnly as i32;
        manifest.chunk_root = root.as_bytes().to_vec();
        manifest.nonce_prefix.clear();
    }
    let envelope = seal(&manifest, Domain::ReleaseManifest, &[release_key]);
    let verified = trust
        .verify_manifest(&envelope, created_at)
        .map_err(ReleaseError::refused("the signed manifest"))?;
    let bundle = match signed_chunks {
        Some((_, payload)) => pb::ReleaseBundle {
            manifest: Some(envelope),
            content_key: Vec::new(),
            payload,
        },
        None => pb::ReleaseBundle {
            manifest: Some(envelope),
            content_key: content_key.expose().to_vec(),
            payload: encrypt_payload(&content_key, &verified.payload_params(), image)
                .map_err(ReleaseError::refused("encrypting the payload"))?,
        },
    };
    let (verified, _) = check_bundle(&bundle, trust)?;
    let summary = ReleaseSummary {
        release_id: release_id.as_str().to_owned(),
        product: verified.product().to_owned(),
        hardware: verified.hardware().to_vec(),
        version: verified.version().to_string(),
        security_version: verified.security_version().0,
        fault: opts.fault.as_str().to_owned(),
        image_len: verified.image_len(),
        image_sha256: hex::encode(verified.image_digest().as_bytes()),
        manifest_digest: hex::encode(verified.digest().as_bytes()),
        chunk_size: verified.chunk_size(),
        payload_len: bundle.payload.len() as u64,
        payload_encoding: if verified.is_signature_only() {
            "signature-only"
        } else {
            "encrypted"
        }
        .to_owned(),
        expires_at,
        staged: String::new(),
    };
    Ok((bundle, summary))
}

/// Verifies a bundle as a device would and opens it: the manifest against
/// `trust` (release-key threshold, fields, expiry), then every payload
/// chunk (decrypted and authenticated, or for a signature-only release
/// verified against the signed Merkle root, in order), then the image
/// digest. Returns the verified manifest and the plaintext image.
pub fn check_bundle(
    bundle: &pb::ReleaseBundle,
    trust: &VerifiedTrustRoot,
) -> Result<(VerifiedManifest, Vec<u8>), ReleaseError> {
    let envelope = bundle.manifest.as_ref().ok_or(ReleaseError::Refused {
        what: "release bundle",
        source: aloft_protocol::Error::Malformed("missing manifest"),
    })?;
    let manifest = trust
        .verify_manifest(envelope, now())
        .map_err(ReleaseError::refused("release manifest"))?;
    let key = if manifest.is_signature_only() {
        if !bundle.content_key.is_empty() {
            return Err(ReleaseError::Refused {
                what: "content key",
                source: aloft_protocol::Error::InvalidField(
                    "content key (given for a signature-only release)",
                ),
            });
        }
        None
    } else {
        Some(
            ContentKey::from_slice(&bundle.content_key)
                .map_err(ReleaseError::refused("content key"))?,
        )
    };
    let params = manifest.payload_layout();
    if bundle.payload.len() as u64 != params.payload_len() {
        return Err(ReleaseError::Refused {
            what: "payload",
            source: aloft_protocol::Error::InvalidField("payload length"),
        });
    }
    let mut decryptor =
        PayloadOpener::new(key.as_ref(), &params).map_err(ReleaseError::refused("payload"))?;
    let mut image = Vec::with_capacity(manifest.image_len() as usize);
    let mut rest = bundle.payload.as_slice();
    let mut buf = Vec::new();
    while !decryptor.is_finished() {
        let len = params
            .chunk_len(decryptor.next_index())
            .ok_or(ReleaseError::Refused {
                what: "payload",
                source: aloft_protocol::Error::PayloadTooLong,
            })?;
        let (chunk, tail) = rest.split_at(len);
        rest = tail;
        buf.clear();
        buf.extend_from_slice(chunk);
        let plain = decryptor
            .open(&mut buf)
            .map_err(ReleaseError::refused("payload chunk"))?;
        image.extend_from_slice(plain);
    }
    if Digest::of(&image) != manifest.image_digest() {
        return Err(ReleaseError::Refused {
            what: "payload",
            source: aloft_protocol::Error::InvalidField("image digest"),
        });
    }
    Ok((manifest, image))
}

/// Reads a release bundle file (size-checked before parsing).
pub fn read_bundle(path: &Path) -> Result<pb::ReleaseBundle, ReleaseError> {
    let len = std::fs::metadata(path)
        .map_err(ReleaseError::io(path))?
        .len();
    let max = aloft_protocol::limits::MAX_IMAGE_LEN * 2;
    if len > max {
        return Err(ReleaseError::BadFile {
            path: path.to_owned(),
            what: "release bundle",
            reason: format!("{len} bytes is more than any bundle can be"),
        });
    }
    let bytes = std::fs::read(path).map_err(ReleaseError::io(path))?;
    pb::ReleaseBundle::decode(bytes.as_slice()).map_err(|e| ReleaseError::BadFile {
        path: path.to_owned(),
        what: "release bundle",
        reason: e.to_string(),
    })
}

/// Writes a bundle file (atomically).
pub fn write_bundle(path: &Path, bundle: &pb::ReleaseBundle) -> Result<(), ReleaseError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(ReleaseError::io(dir))?;
    }
    crate::keyfile::write_public(path, &bundle.encode_to_vec())
}

/// Random bytes from the operating system.
fn random<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the OS random number generator is available");
    buf
}
