//! Secret files: P-256 key files (the raw 32-byte scalar, the same format as
//! the server's `DATA/server-key`) and other private files, created with mode
//! 0600 and never overwritten.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use aloft_protocol::SecretKey;

use crate::ReleaseError;

/// Writes `data` to a new file readable only by its owner; refuses to
/// overwrite an existing file.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), ReleaseError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                ReleaseError::Exists(path.to_owned())
            } else {
                ReleaseError::io(path)(e)
            }
        })?;
    file.write_all(data).map_err(ReleaseError::io(path))?;
    file.sync_all().map_err(ReleaseError::io(path))
}

/// Writes a public (non-secret) file, replacing it atomically if it exists.
pub fn write_public(path: &Path, data: &[u8]) -> Result<(), ReleaseError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(ReleaseError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(ReleaseError::io(path))
}

/// Reads a P-256 key file. Refuses a file others can read or write (mode
/// bits beyond 0600), a length other than 32 bytes and an invalid scalar.
pub fn read_key(path: &Path) -> Result<SecretKey, ReleaseError> {
    let err = |reason: String| ReleaseError::KeyFile {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "mode {mode:o} lets other users read it; run `chmod 600 {}`",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if bytes.len() != SecretKey::LEN {
        return Err(err(format!(
            "expected a {}-byte P-256 scalar, found {} bytes",
            SecretKey::LEN,
            bytes.len()
        )));
    }
    SecretKey::from_slice(&bytes).map_err(|_| err("not a valid P-256 private scalar".into()))
}

/// Loads the key file at `path`, or creates it with a fresh key if it does
/// not exist. Returns the key and whether it was created.
pub fn load_or_create_key(path: &Path) -> Result<(SecretKey, bool), ReleaseError> {
    if path.exists() {
        return Ok((read_key(path)?, false));
    }
    let key = SecretKey::generate();
    write_private(path, &key.to_bytes())?;
    Ok((key, true))
}
