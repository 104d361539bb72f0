//! `aloft-release keys`: local key material in one directory.
//!
//! | file | secret | what |
//! |---|---|---|
//! | `root.key` | yes (0600) | root P-256 key: signs the TrustRoot |
//! | `release.key` | yes (0600) | release P-256 key: signs release manifests |
//! | `ca.pem` / `ca.key` | key 0600 | local CA that devices and `aloft --ca` pin |
//! | `server.pem` / `server.key` | key 0600 | server TLS certificate for `localhost`, `127.0.0.1` |
//! | `trust-root.pb` | no | the root-signed TrustRoot (a `SignedEnvelope`) |
//! | `keys.json` | no | public keys, key ids and the TrustRoot summary |
//!
//! Key files are created once and then only read: running the step again
//! keeps every existing key and re-signs the TrustRoot (for instance with
//! another server key). The server's directive key is the server's own
//! (`DATA/server-key`, which the server creates on first start if missing):
//! either this step creates that file before the server first starts
//! ([`ServerKeySource::DataDir`]) or it takes the public key the running
//! server reports (`aloft server info`, [`ServerKeySource::Public`]).

use std::path::{Path, PathBuf};

use aloft_protocol::envelope::seal;
use aloft_protocol::keys::Domain;
use aloft_protocol::trust::VerifiedTrustRoot;
use aloft_protocol::{PublicKey, pb};
use serde::Serialize;

use crate::keyfile::{load_or_create_key, read_key, write_private, write_public};
use crate::{ReleaseError, now};

/// Root key file name.
pub const ROOT_KEY: &str = "root.key";
/// Release key file name.
pub const RELEASE_KEY: &str = "release.key";
/// CA certificate file name.
pub const CA_CERT: &str = "ca.pem";
/// CA private key file name.
pub const CA_KEY: &str = "ca.key";
/// Server TLS certificate file name.
pub const SERVER_CERT: &str = "server.pem";
/// Server TLS private key file name.
pub const SERVER_TLS_KEY: &str = "server.key";
/// TrustRoot file name.
pub const TRUST_ROOT: &str = "trust-root.pb";
/// Public summary file name.
pub const SUMMARY: &str = "keys.json";
/// The server's directive key file inside its data directory (as
/// aloft-server names it).
pub const SERVER_DATA_KEY: &str = "server-key";

/// Where the server's directive public key comes from.
#[derive(Clone, Debug)]
pub enum ServerKeySource {
    /// The server's data directory: `DIR/server-key` is read, or created
    /// (0600) before the server's first start so the server uses it.
    DataDir(PathBuf),
    /// The public key a running server reports (`aloft server info`).
    Public(PublicKey),
}

/// What `keys` makes.
#[derive(Clone, Debug)]
pub struct KeysOptions {
    /// Output directory (created if missing).
    pub out: PathBuf,
    /// The server's directive key.
    pub server_key: ServerKeySource,
    /// TrustRoot version (1 for a first TrustRoot; a successor is one higher).
    pub trust_root_version: u32,
    /// Days the TrustRoot stays valid.
    pub valid_days: u32,
    /// Names and addresses in the server certificate.
    pub hosts: Vec<String>,
}

/// The public outcome of `keys`, printed as JSON with `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct KeysSummary {
    /// Output directory.
    pub dir: PathBuf,
    /// Root public key (SEC1 compressed, hex).
    pub root_key: String,
    /// Root key id.
    pub root_key_id: String,
    /// Release public key (hex).
    pub release_key: String,
    /// Release key id.
    pub release_key_id: String,
    /// Server directive public key (hex).
    pub server_key: String,
    /// Server key id.
    pub server_key_id: String,
    /// TrustRoot version.
    pub trust_root_version: u32,
    /// TrustRoot expiry, unix seconds.
    pub trust_root_expires_at: u64,
    /// Files created by this run (existing ones were kept).
    pub created: Vec<String>,
}

fn hex_key(key: &PublicKey) -> String {
    hex::encode(key.to_sec1_compressed())
}

/// Parses a server public key given as hex SEC1 (compressed or not).
pub fn parse_public_key(hex_str: &str) -> Result<PublicKey, ReleaseError> {
    let bytes = hex::decode(hex_str.trim()).map_err(|e| ReleaseError::InvalidArg {
        what: "server key",
        reason: format!("not hex: {e}"),
    })?;
    PublicKey::from_sec1(&bytes).map_err(|e| ReleaseError::InvalidArg {
        what: "server key",
        reason: format!("not a P-256 public key: {e}"),
    })
}

/// Creates (or completes) the key directory and signs a fresh TrustRoot.
pub fn create_keys(opts: &KeysOptions) -> Result<KeysSummary, ReleaseError> {
    if opts.trust_root_version == 0 {
        return Err(ReleaseError::InvalidArg {
            what: "TrustRoot version",
            reason: "versions start at 1".into(),
        });
    }
    std::fs::create_dir_all(&opts.out).map_err(ReleaseError::io(&opts.out))?;
    let mut created = Vec::new();
    let dir = &opts.out;

    let (root, new) = load_or_create_key(&dir.join(ROOT_KEY))?;
    if new {
        created.push(ROOT_KEY.to_owned());
    }
    let (release, new) = load_or_create_key(&dir.join(RELEASE_KEY))?;
    if new {
        created.push(RELEASE_KEY.to_owned());
    }
    let server = match &opts.server_key {
        ServerKeySource::Public(key) => *key,
        ServerKeySource::DataDir(data) => {
            std::fs::create_dir_all(data).map_err(ReleaseError::io(data))?;
            let path = data.join(SERVER_DATA_KEY);
            let (key, new) = load_or_create_key(&path)?;
            if new {
                created.push(path.display().to_string());
            }
            key.public_key()
        }
    };
    created.extend(create_tls(dir, &opts.hosts)?);

    let now = now();
    let expires_at = now.0 + u64::from(opts.valid_days) * 86_400;
    let trust_root = pb::TrustRoot {
        version: opts.trust_root_version,
        expires_at,
        root_keys: vec![root.public_key().to_sec1_compressed().to_vec()],
        root_threshold: 1,
        release_keys: vec![release.public_key().to_sec1_compressed().to_vec()],
        release_threshold: 1,
        server_keys: vec![server.to_sec1_compressed().to_vec()],
    };
    let envelope = seal(&trust_root, Domain::TrustRoot, &[&root]);
    // Check it the way a device will before anyone installs it.
    VerifiedTrustRoot::trust_on_first_use(&envelope, now)
        .map_err(ReleaseError::refused("the new TrustRoot"))?;
    write_public(
        &dir.join(TRUST_ROOT),
        &aloft_protocol::prost::Message::encode_to_vec(&envelope),
    )?;

    let summary = KeysSummary {
        dir: dir.clone(),
        root_key: hex_key(&root.public_key()),
        root_key_id: root.public_key().key_id().to_string(),
        release_key: hex_key(&release.public_key()),
        release_key_id: release.public_key().key_id().to_string(),
        server_key: hex_key(&server),
        server_key_id: server.key_id().to_string(),
        trust_root_version: opts.trust_root_version,
        trust_root_expires_at: expires_at,
        created,
    };
    let json = serde_json::to_vec_pretty(&summary).map_err(|source| ReleaseError::Json {
        what: "the key summary",
        source,
    })?;
    write_public(&dir.join(SUMMARY), &json)?;
    Ok(summary)
}

/// Creates the CA and the server certificate unless they all exist.
fn create_tls(dir: &Path, hosts: &[String]) -> Result<Vec<String>, ReleaseError> {
    let files = [CA_CERT, CA_KEY, SERVER_CERT, SERVER_TLS_KEY];
    let present = files.iter().filter(|f| dir.join(f).exists()).count();
    if present == files.len() {
        return Ok(Vec::new());
    }
    if present != 0 {
        return Err(ReleaseError::BadFile {
            path: dir.to_owned(),
            what: "key directory",
            reason: format!(
                "only some of {} exist; remove them to create a new CA",
                files.join(", ")
            ),
        });
    }
    let tls = ReleaseError::Tls;
    let ca_key = rcgen::KeyPair::generate().map_err(tls)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Aloft local CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().map_err(tls)?;
    let mut leaf_params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(tls)?;
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "aloft-server");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(tls)?;

    write_private(&dir.join(CA_KEY), ca_key_pem.as_bytes())?;
    write_private(
        &dir.join(SERVER_TLS_KEY),
        leaf_key.serialize_pem().as_bytes(),
    )?;
    write_public(&dir.join(CA_CERT), ca_cert.pem().as_bytes())?;
    write_public(&dir.join(SERVER_CERT), leaf.pem().as_bytes())?;
    Ok(files.iter().map(|f| (*f).to_owned()).collect())
}

/// Reads and verifies the TrustRoot in a key directory (as a first TrustRoot).
pub fn read_trust_root(dir: &Path) -> Result<VerifiedTrustRoot, ReleaseError> {
    let path = dir.join(TRUST_ROOT);
    let bytes = std::fs::read(&path).map_err(ReleaseError::io(&path))?;
    let envelope =
        aloft_protocol::envelope::decode_envelope(&bytes).map_err(|e| ReleaseError::BadFile {
            path: path.clone(),
            what: "TrustRoot",
            reason: e.to_string(),
        })?;
    VerifiedTrustRoot::trust_on_first_use(&envelope, now())
        .map_err(ReleaseError::refused("TrustRoot"))
}

/// Reads the release key of a key directory.
pub fn read_release_key(dir: &Path) -> Result<aloft_protocol::SecretKey, ReleaseError> {
    read_key(&dir.join(RELEASE_KEY))
}

/// The next directive key in a server's data directory (`aloft-server`
/// switches to it once a TrustRoot that lists it is installed).
pub const SERVER_DATA_NEXT_KEY: &str = "server-key.next";

/// What one rotation changes; anything left at its default stays as it is.
#[derive(Clone, Debug, Default)]
pub struct RotateOptions {
    /// Key directory (as `keys` made it): `root.key`, `release.key`,
    /// `trust-root.pb`.
    pub dir: PathBuf,
    /// Replace the root key: the new TrustRoot is signed by the old root key
    /// and the new one; the old is kept as `root.retired-vN.key`.
    pub new_root: bool,
    /// Make a new release key the one `release` signs with; the old one is
    /// kept as `release.retired-vN.key` and stays listed unless removed.
    pub new_release_key: bool,
    /// Release keys to remove (revoke), by key id (hex, or a unique prefix
    /// of at least 8 characters). Manifests they signed are refused from
    /// then on, by servers at upload and by devices that have the new root.
    pub remove_release_keys: Vec<String>,
    /// Server directive public keys to list (e.g. `aloft server info`'s
    /// next server key).
    pub add_server_keys: Vec<PublicKey>,
    /// Server keys to remove, by key id (or unique prefix).
    pub remove_server_keys: Vec<String>,
    /// Days the new TrustRoot stays valid (from now).
    pub valid_days: u32,
}

/// What a rotation made, printed as JSON with `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct RotateSummary {
    /// The new TrustRoot file (`trust-root.pb`; also kept as
    /// `trust-root-vN.pb`).
    pub trust_root: PathBuf,
    /// Its version.
    pub version: u32,
    /// Its expiry, unix seconds.
    pub expires_at: u64,
    /// Root key ids.
    pub root_keys: Vec<String>,
    /// Release key ids.
    pub release_keys: Vec<String>,
    /// Server key ids.
    pub server_keys: Vec<String>,
    /// Files created or renamed.
    pub changed: Vec<String>,
}

/// The next directive key of a server data directory: reads
/// `DIR/server-key.next`, or creates it (0600). Returns its public key and
/// whether it was created.
pub fn next_server_key(data_dir: &Path) -> Result<(PublicKey, bool), ReleaseError> {
    std::fs::create_dir_all(data_dir).map_err(ReleaseError::io(data_dir))?;
    let (key, created) = load_or_create_key(&data_dir.join(SERVER_DATA_NEXT_KEY))?;
    Ok((key.public_key(), created))
}

/// Finds the one key of `keys` whose id starts with `id` (hex, >= 8 chars).
fn find_key(keys: &[PublicKey], id: &str, role: &'static str) -> Result<usize, ReleaseError> {
    let id = id.trim().to_ascii_lowercase();
    if id.len() < 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ReleaseError::InvalidArg {
            what: role,
            reason: format!("{id:?} is not a key id (hex, at least 8 characters)"),
        });
    }
    let hits: Vec<usize> = keys
        .iter()
        .enumerate()
        .filter(|(_, k)| k.key_id().to_string().starts_with(&id))
        .map(|(i, _)| i)
        .collect();
    match hits[..] {
        [i] => Ok(i),
        [] => Err(ReleaseError::InvalidArg {
            what: role,
            reason: format!("no listed key has an id starting with {id}"),
        }),
        _ => Err(ReleaseError::InvalidArg {
            what: role,
            reason: format!("{id} matches several keys; give more of the id"),
        }),
    }
}

/// Signs the successor of the key directory's TrustRoot (version + 1) with
/// the changes `opts` asks for, checks it the way a server and a device
/// will (a rotation of the current root, unexpired), and writes it as
/// `trust-root.pb` (the previous one stays as `trust-root-vN.pb`). The
/// current root may have expired: rotation is how it is renewed.
pub fn rotate_keys(opts: &RotateOptions) -> Result<RotateSummary, ReleaseError> {
    let dir = &opts.dir;
    let current_path = dir.join(TRUST_ROOT);
    let bytes = std::fs::read(&current_path).map_err(ReleaseError::io(&current_path))?;
    let current_env =
        aloft_protocol::envelope::decode_envelope(&bytes).map_err(|e| ReleaseError::BadFile {
            path: current_path.clone(),
            what: "TrustRoot",
            reason: e.to_string(),
        })?;
    let current = VerifiedTrustRoot::reload_stored(&current_env)
        .map_err(ReleaseError::refused("the current TrustRoot"))?;
    let next_version = current.version() + 1;
    let old_root = read_key(&dir.join(ROOT_KEY))?;
    if !current.root_keys().contains(&old_root.public_key()) {
        return Err(ReleaseError::KeyFile {
            path: dir.join(ROOT_KEY),
            reason: "this root key is not listed in the current TrustRoot".into(),
        });
    }
    // Everything is decided and checked in memory first: a refused rotation
    // changes no file.
    let new_root = opts.new_root.then(aloft_protocol::SecretKey::generate);
    let new_release = opts
        .new_release_key
        .then(aloft_protocol::SecretKey::generate);
    let mut root_keys: Vec<PublicKey> = current.root_keys().to_vec();
    let mut signers = vec![old_root.clone()];
    if let Some(k) = &new_root {
        root_keys = vec![k.public_key()];
        signers.push(k.clone());
    }
    let mut release_keys: Vec<PublicKey> = current.release_keys().to_vec();
    if let Some(k) = &new_release {
        release_keys.push(k.public_key());
    }
    for id in &opts.remove_release_keys {
        let i = find_key(&release_keys, id, "release key to remove")?;
        release_keys.remove(i);
    }
    if release_keys.is_empty() {
        return Err(ReleaseError::InvalidArg {
            what: "release keys",
            reason: "the rotation would list none; add one with --new-release-key".into(),
        });
    }
    let mut server_keys: Vec<PublicKey> = current.server_keys().to_vec();
    for key in &opts.add_server_keys {
        if !server_keys.contains(key) {
            server_keys.push(*key);
        }
    }
    for id in &opts.remove_server_keys {
        let i = find_key(&server_keys, id, "server key to remove")?;
        server_keys.remove(i);
    }
    if server_keys.is_empty() {
        return Err(ReleaseError::InvalidArg {
            what: "server keys",
            reason: "the rotation would list none; add one with --server-key or --next-server-key"
                .into(),
        });
    }
    let now = now();
    let expires_at = now.0 + u64::from(opts.valid_days) * 86_400;
    let encode = |keys: &[PublicKey]| {
        keys.iter()
            .map(|k| k.to_sec1_compressed().to_vec())
            .collect::<Vec<_>>()
    };
    let next = pb::TrustRoot {
        version: next_version,
        expires_at,
        root_keys: encode(&root_keys),
        root_threshold: 1,
        release_keys: encode(&release_keys),
        release_threshold: current.release_threshold().min(release_keys.len() as u32),
        server_keys: encode(&server_keys),
    };
    let signer_refs: Vec<&aloft_protocol::SecretKey> = signers.iter().collect();
    let envelope = seal(&next, Domain::TrustRoot, &signer_refs);
    // Check it the way the server (SetTrustRoot) and a device will.
    let verified = current
        .rotate(&envelope, now)
        .map_err(ReleaseError::refused("the rotated TrustRoot"))?;

    // Now the files: archive the current root (the chain devices walk is
    // rebuilt from these), retire and replace keys, write the new root.
    let mut changed = Vec::new();
    let archived = dir.join(format!("trust-root-v{}.pb", current.version()));
    if !archived.exists() {
        write_public(&archived, &bytes)?;
        changed.push(archived.display().to_string());
    }
    let mut replace = |name: &str, key: &aloft_protocol::SecretKey| -> Result<(), ReleaseError> {
        let path = dir.join(name);
        let stem = name.trim_end_matches(".key");
        let retired = dir.join(format!("{stem}.retired-v{}.key", current.version()));
        if path.exists() {
            std::fs::rename(&path, &retired).map_err(ReleaseError::io(&retired))?;
            changed.push(retired.display().to_string());
        }
        write_private(&path, &key.to_bytes())?;
        changed.push(path.display().to_string());
        Ok(())
    };
    if let Some(k) = &new_root {
        replace(ROOT_KEY, k)?;
    }
    if let Some(k) = &new_release {
        replace(RELEASE_KEY, k)?;
    }
    let encoded = aloft_protocol::prost::Message::encode_to_vec(&envelope);
    write_public(
        &dir.join(format!("trust-root-v{next_version}.pb")),
        &encoded,
    )?;
    write_public(&current_path, &encoded)?;
    changed.push(current_path.display().to_string());
    let ids = |keys: &[PublicKey]| keys.iter().map(|k| k.key_id().to_string()).collect();
    Ok(RotateSummary {
        trust_root: current_path,
        version: verified.version(),
        expires_at,
        root_keys: ids(verified.root_keys()),
        release_keys: ids(verified.release_keys()),
        server_keys: ids(verified.server_keys()),
        changed,
    })
}
