//! The server's own secrets, kept as files in the data directory (mode 0600):
//! `server-key` (the online directive-signing P-256 key, raw 32-byte scalar)
//! and `kek` (the AES-256 key-encryption key that seals release content keys
//! at rest). Both are created on first start. Only paths and the directive
//! key's [`KeyId`] are ever logged.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use aes_gcm::aead::AeadInOut as _;
use aes_gcm::{Aes256Gcm, KeyInit as _};
use aloft_protocol::{ContentKey, KeyId, ReleaseId, SecretKey};

use crate::ServerError;

/// File name of the directive key.
pub const SERVER_KEY_FILE: &str = "server-key";
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
        reason: e.to_string(),
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
                    reason: format!("expected 32 bytes, found {}", bytes.len()),
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
            reason: e.to_string(),
        }),
    }
}

/// The directive key and the KEK, loaded or created.
pub struct ServerKeys {
    /// Signs directives.
    pub directive_key: SecretKey,
    /// Seals content keys at rest.
    pub kek: Kek,
}

impl ServerKeys {
    /// Loads both keys from `dir`, creating any that is missing.
    pub fn load_or_create(dir: &Path) -> Result<Self, ServerError> {
        let key_path = dir.join(SERVER_KEY_FILE);
        let (scalar, created) = read_or_create(&key_path, || SecretKey::generate().to_bytes())?;
        let directive_key = SecretKey::from_slice(&scalar).map_err(|e| ServerError::KeyFile {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        tracing::info!(
            path = %key_path.display(),
            key_id = %directive_key.public_key().key_id(),
            created,
            "server directive key"
        );
        let kek_path = dir.join(KEK_FILE);
        let (kek, created) = read_or_create(&kek_path, random::<32>)?;
        tracing::info!(path = %kek_path.display(), created, "key-encryption key");
        Ok(Self {
            directive_key,
            kek: Kek(kek),
        })
    }

    /// The directive key's fingerprint.
    pub fn key_id(&self) -> KeyId {
        self.directive_key.public_key().key_id()
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
