//! The server's own secrets, kept as files in the data directory (mode 0600):
//! `server-key` (the online directive-signing P-256 key, raw 32-byte scalar)
//! and `kek` (the AES-256 key-encryption key that seals release content keys
//! at rest). Both are created on first start. Only paths and the directive
//! key's [`KeyId`] are ever logged.
//!
//! **Changing the directive key.** A new key is made ahead of time as
//! `server-key.next` (`aloft-release keys next-server-key`), listed in a
//! TrustRoot rotation, and the server switches to it once a TrustRoot that
//! lists it is installed: `server-key` is kept as `server-key.retired-vN`
//! (N: the version of the root that retired it) and `server-key.next`
//! becomes `server-key`. Devices that lag receive the new root in their
//! session before any directive signed by the new key.

use crate::sync::Recover as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use aes_gcm::aead::AeadInOut as _;
use aes_gcm::{Aes256Gcm, KeyInit as _};
use aloft_protocol::trust::VerifiedTrustRoot;
use aloft_protocol::{ContentKey, KeyId, ReleaseId, SecretKey};

use crate::{KeyFileError, ServerError};

/// File name of the directive key.
pub const SERVER_KEY_FILE: &str = "server-key";
/// File name of the next directive key, made before a TrustRoot lists it.
pub const NEXT_SERVER_KEY_FILE: &str = "server-key.next";
/// File name of the key-encryption key.
pub const KEK_FILE: &str = "kek";
/// File name of the bootstrap admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Random bytes from the operating system.
pub fn random<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the OS random number generator is available");
    buf
}

/// Writes `data` to a new file readable only by its owner; fails if it exists.
pub fn write_secret_file(path: &Path, data: &[u8]) -> Result<(), ServerError> {
    let err = |e: std::io::Error| ServerError::KeyFile {
        path: path.to_owned(),
        source: e.into(),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(())
}

fn read_or_create(
    path: &Path,
    create: impl FnOnce() -> [u8; 32],
) -> Result<([u8; 32], bool), ServerError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let key = bytes
                .as_slice()
                .try_into()
                .map_err(|_| ServerError::KeyFile {
                    path: path.to_owned(),
                    source: KeyFileError::Length(bytes.len()),
                })?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = create();
            write_secret_file(path, &key)?;
            Ok((key, true))
        }
        Err(e) => Err(ServerError::KeyFile {
            path: path.to_owned(),
            source: e.into(),
        }),
    }
}

/// The directive keys and the KEK, loaded or created.
pub struct ServerKeys {
    dir: PathBuf,
    /// The key directives are signed with, and the next one if made.
    directive: std::sync::RwLock<DirectiveKeys>,
    /// Seals content keys at rest.
    pub kek: Kek,
}

struct DirectiveKeys {
    current: SecretKey,
    next: Option<SecretKey>,
}

fn read_key(path: &Path) -> Result<Option<SecretKey>, ServerError> {
    let err = |source: KeyFileError| ServerError::KeyFile {
        path: path.to_owned(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() != SecretKey::LEN => Err(err(KeyFileError::Length(bytes.len()))),
        Ok(bytes) => SecretKey::from_slice(&bytes)
            .map(Some)
            .map_err(|e| err(KeyFileError::Key(e))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(e.into())),
    }
}

impl ServerKeys {
    /// Loads the keys from `dir`, creating `server-key` and `kek` if missing.
    pub fn load_or_create(dir: &Path) -> Result<Self, ServerError> {
        let key_path = dir.join(SERVER_KEY_FILE);
        let (scalar, created) = read_or_create(&key_path, || SecretKey::generate().to_bytes())?;
        let current = SecretKey::from_slice(&scalar).map_err(|e| ServerError::KeyFile {
            path: key_path.clone(),
            source: KeyFileError::Key(e),
        })?;
        tracing::info!(
            path = %key_path.display(),
            key_id = %current.public_key().key_id(),
            created,
            "server directive key"
        );
        let next = read_key(&dir.join(NEXT_SERVER_KEY_FILE))?;
        if let Some(next) = &next {
            tracing::info!(key_id = %next.public_key().key_id(), "next directive key (used once a TrustRoot lists it)");
        }
        let kek_path = dir.join(KEK_FILE);
        let (kek, created) = read_or_create(&kek_path, random::<32>)?;
        tracing::info!(path = %kek_path.display(), created, "key-encryption key");
        Ok(Self {
            dir: dir.to_owned(),
            directive: std::sync::RwLock::new(DirectiveKeys { current, next }),
            kek: Kek(kek),
        })
    }

    /// The key directives are signed with now.
    pub fn directive_key(&self) -> SecretKey {
        self.directive.read().recover().current.clone()
    }

    /// The next directive key's public key, if one was made.
    pub fn next_public_key(&self) -> Option<aloft_protocol::PublicKey> {
        let keys = self.directive.read().recover();
        keys.next.as_ref().map(SecretKey::public_key)
    }

    /// Switches to the next directive key when `root` (newly installed, or
    /// the newest at start) lists it: `server-key` is kept as
    /// `server-key.retired-v{root version}` and `server-key.next` becomes
    /// `server-key`. Re-reads `server-key.next` first (it may have been made
    /// while the server runs). Returns whether it switched.
    pub fn adopt_listed(&self, root: &VerifiedTrustRoot) -> Result<bool, ServerError> {
        let mut keys = self.directive.write().recover();
        let next_path = self.dir.join(NEXT_SERVER_KEY_FILE);
        keys.next = read_key(&next_path)?;
        let Some(next) = keys.next.clone() else {
            return Ok(false);
        };
        if !root.server_keys().contains(&next.public_key()) {
            return Ok(false);
        }
        let current_path = self.dir.join(SERVER_KEY_FILE);
        let retired = self
            .dir
            .join(format!("{SERVER_KEY_FILE}.retired-v{}", root.version()));
        let io = |path: &Path| {
            let path = path.to_owned();
            move |e: std::io::Error| ServerError::KeyFile {
                path,
                source: e.into(),
            }
        };
        std::fs::rename(&current_path, &retired).map_err(io(&current_path))?;
        std::fs::rename(&next_path, &current_path).map_err(io(&next_path))?;
        tracing::info!(
            old = %keys.current.public_key().key_id(),
            new = %next.public_key().key_id(),
            trust_root = root.version(),
            "switched to the next directive key"
        );
        keys.current = next;
        keys.next = None;
        Ok(true)
    }

    /// The directive key's fingerprint.
    pub fn key_id(&self) -> KeyId {
        self.directive_key().public_key().key_id()
    }
}

/// AES-256-GCM key-encryption key for content keys at rest.
pub struct Kek([u8; 32]);

/// A sealed content key could not be opened (wrong KEK or altered record).
#[derive(Debug, thiserror::Error)]
#[error("sealed content key does not open under this server's KEK")]
pub struct KekError;

impl Kek {
    const NONCE_LEN: usize = 12;

    /// Seals `key` with a random nonce and AAD = the release id:
    /// `nonce (12) || ciphertext (32) || tag (16)`.
    pub fn seal(&self, release: &ReleaseId, key: &ContentKey) -> Vec<u8> {
        let cipher = Aes256Gcm::new(&self.0.into());
        let nonce: [u8; Self::NONCE_LEN] = random();
        let mut buf = *key.expose();
        let tag = cipher
            .encrypt_inout_detached(
                &nonce.into(),
                release.as_str().as_bytes(),
                buf.as_mut_slice().into(),
            )
            .expect("a 32-byte message always encrypts");
        let mut out = Vec::with_capacity(60);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        out.extend_from_slice(&tag);
        buf = [0; 32];
        std::hint::black_box(&buf);
        out
    }

    /// Opens a key sealed by [`Kek::seal`] for the same release.
    pub fn open(&self, release: &ReleaseId, sealed: &[u8]) -> Result<ContentKey, KekError> {
        if sealed.len() != Self::NONCE_LEN + 32 + 16 {
            return Err(KekError);
        }
        let cipher = Aes256Gcm::new(&self.0.into());
        let nonce: [u8; Self::NONCE_LEN] = sealed[..12].try_into().map_err(|_| KekError)?;
        let tag: [u8; 16] = sealed[44..].try_into().map_err(|_| KekError)?;
        let mut buf: [u8; 32] = sealed[12..44].try_into().map_err(|_| KekError)?;
        cipher
            .decrypt_inout_detached(
                &nonce.into(),
                release.as_str().as_bytes(),
                buf.as_mut_slice().into(),
                &tag.into(),
            )
            .map_err(|_| KekError)?;
        Ok(ContentKey::from_bytes(buf))
    }

    /// Seals any secret (a webhook's HMAC key) with a random nonce and AAD
    /// `aad`: `nonce (12) || ciphertext || tag (16)`.
    pub fn seal_secret(&self, aad: &[u8], secret: &[u8]) -> Vec<u8> {
        let cipher = Aes256Gcm::new(&self.0.into());
        let nonce: [u8; Self::NONCE_LEN] = random();
        let mut out = nonce.to_vec();
        out.extend_from_slice(secret);
        let tag = cipher
            .encrypt_inout_detached(&nonce.into(), aad, (&mut out[Self::NONCE_LEN..]).into())
            .expect("AES-GCM encrypts any message this size");
        out.extend_from_slice(&tag);
        out
    }

    /// Opens a secret sealed by [`Kek::seal_secret`] with the same AAD.
    pub fn open_secret(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KekError> {
        if sealed.len() < Self::NONCE_LEN + 16 {
            return Err(KekError);
        }
        let cipher = Aes256Gcm::new(&self.0.into());
        let nonce: [u8; Self::NONCE_LEN] = sealed[..12].try_into().map_err(|_| KekError)?;
        let (body, tag) = sealed[12..].split_at(sealed.len() - 12 - 16);
        let tag: [u8; 16] = tag.try_into().map_err(|_| KekError)?;
        let mut buf = body.to_vec();
        cipher
            .decrypt_inout_detached(&nonce.into(), aad, buf.as_mut_slice().into(), &tag.into())
            .map_err(|_| KekError)?;
        Ok(buf)
    }
}

/// Path of the bootstrap admin token file in `dir`.
pub fn admin_token_path(dir: &Path) -> PathBuf {
    dir.join(ADMIN_TOKEN_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kek_round_trip_and_binding() {
        let kek = Kek(random());
        let r1 = ReleaseId::new("r1").unwrap();
        let r2 = ReleaseId::new("r2").unwrap();
        let key = ContentKey::from_bytes([7; 32]);
        let sealed = kek.seal(&r1, &key);
        assert_eq!(kek.open(&r1, &sealed).unwrap(), key);
        assert!(kek.open(&r2, &sealed).is_err(), "AAD binds the release id");
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(kek.open(&r1, &bad).is_err());
        assert!(Kek(random()).open(&r1, &sealed).is_err());
    }

    #[test]
    fn secret_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let keys = ServerKeys::load_or_create(dir.path()).unwrap();
        for f in [SERVER_KEY_FILE, KEK_FILE] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let again = ServerKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(
            keys.key_id(),
            again.key_id(),
            "key persists across restarts"
        );
    }
}
