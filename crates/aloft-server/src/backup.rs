//! Online backup and restore.
//!
//! `aloft-server backup --server URL --data DIR --out FILE` asks the running
//! server (admin `Backup` RPC) for a consistent snapshot of its store
//! ([`crate::ops_store::OpsStore::snapshot`]: writes wait while it copies)
//! and adds, from `DIR`, the key files (directive key, next and retired
//! keys, KEK, bootstrap token file: they never travel over the network) and
//! then the release payloads of the filesystem object store
//! (`DIR/objects`; immutable, and published before their release row, so
//! copied after the snapshot they include every payload it names). Payloads
//! in an S3 bucket stay there: back the bucket up with its own tools. `aloft-server restore FILE --data NEW` checks
//! the file's SHA-256, then writes the keys and every record into a new
//! data directory a server can start from.
//!
//! The file holds the server's private keys: keep it like the data
//! directory (it is written 0600).
//!
//! Format (all integers big-endian):
//! ```text
//! "ALOFT-BACKUP\n" u32 version (1)
//! frames:  'F' u16 name-len name u32 len data      a key file of DIR
//!          'O' u16 path-len path u64 len data      a payload under DIR/objects
//!          'R' u16 tree-len tree u32 key-len key u32 len value
//!          'I' u64                                 ids issued so far
//!          'E' u64 records                          end of the store
//!          'Z' [32] SHA-256 of every byte before this frame
//! ```
//! The server streams the `R`, `I` and `E` frames; the client writes the
//! others.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use aloft_protocol::pb;
use aloft_protocol::pb::admin_service_client::AdminServiceClient;
use sha2::{Digest as _, Sha256};

use crate::ops_store::SnapshotStats;
use crate::store::StoreError;

const MAGIC: &[u8] = b"ALOFT-BACKUP\n";
const VERSION: u32 = 1;
/// Largest key file copied from the data directory.
const MAX_FILE: u64 = 1 << 20;
/// Largest key or value in a record frame.
const MAX_VALUE: u32 = 64 << 20;

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The server could not be reached.
    #[error("could not connect to {url}: {source} (is the server running? pass --ca for TLS)")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The server refused or failed the backup.
    #[error("the server refused the backup: {0} (it needs an admin token)")]
    Refused(#[source] tonic::Status),
    /// The file is not a complete Aloft backup.
    #[error("{path} is not a complete Aloft backup: {why}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The restore target already holds data.
    #[error("{0} is not empty: restore into a new data directory (it must not exist or be empty)")]
    NotEmpty(PathBuf),
    /// The new store could not be written.
    #[error("writing the restored store: {0}")]
    Store(#[from] StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Appends a record frame.
pub(crate) fn record_frame(out: &mut Vec<u8>, tree: &str, key: &[u8], value: &[u8]) {
    out.push(b'R');
    out.extend_from_slice(&(tree.len() as u16).to_be_bytes());
    out.extend_from_slice(tree.as_bytes());
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

/// Writes the server's part of a backup (records, id mark, end) to `out`.
pub(crate) fn write_snapshot(
    store: &dyn crate::ops_store::OpsStore,
    out: &mut dyn Write,
) -> Result<SnapshotStats, StoreError> {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut failed: Option<std::io::Error> = None;
    let mut stats = store.snapshot(&mut |tree, k, v| {
        record_frame(&mut buf, tree, k, v);
        if buf.len() >= 64 * 1024 {
            out.write_all(&buf)
                .map_err(|e| StoreError::Backend(format!("backup file: {e}")))?;
            buf.clear();
        }
        Ok(())
    })?;
    // Ids issued after the copy are above this mark.
    let mark = store.generate_id()?;
    buf.push(b'I');
    buf.extend_from_slice(&mark.to_be_bytes());
    buf.push(b'E');
    buf.extend_from_slice(&stats.records.to_be_bytes());
    if let Err(e) = out.write_all(&buf).and_then(|()| out.flush()) {
        failed = Some(e);
    }
    if let Some(e) = failed {
        return Err(StoreError::Backend(format!("backup file: {e}")));
    }
    stats.bytes += buf.len() as u64;
    Ok(stats)
}

/// What a backup wrote.
#[derive(Clone, Debug, Default)]
pub struct BackupSummary {
    /// Store records.
    pub records: u64,
    /// Key files of the data directory.
    pub files: Vec<String>,
    /// Payload objects.
    pub objects: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// The payload objects under `DIR/objects` (relative name, path, length),
/// without staging files of uploads in progress (`NAME#N`).
fn payload_objects(dir: &Path) -> Result<Vec<(String, PathBuf, u64)>, BackupError> {
    let root = dir.join("objects");
    let mut out = Vec::new();
    let mut todo = vec![root.clone()];
    while let Some(d) = todo.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&d)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io(&d))?;
            let path = entry.path();
            let meta = entry.metadata().map_err(io(&path))?;
            if meta.is_dir() {
                todo.push(path);
                continue;
            }
            let Some(rel) = path.strip_prefix(dir).ok().and_then(Path::to_str) else {
                continue;
            };
            if meta.is_file() && !rel.contains('#') {
                out.push((rel.to_owned(), path.clone(), meta.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Takes a backup of the server at `url` into `out` (see the module docs).
pub async fn backup(
    url: &str,
    ca_pem: Option<&str>,
    token: &str,
    data_dir: &Path,
    out: &Path,
) -> Result<BackupSummary, BackupError> {
    let mut endpoint =
        tonic::transport::Endpoint::from_shared(url.to_owned()).map_err(|source| {
            BackupError::Connect {
                url: url.to_owned(),
                source,
            }
        })?;
    if let Some(ca) = ca_pem {
        endpoint = endpoint
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
            )
            .map_err(|source| BackupError::Connect {
                url: url.to_owned(),
                source,
            })?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| BackupError::Connect {
            url: url.to_owned(),
            source,
        })?;
    let mut request = tonic::Request::new(pb::BackupRequest {});
    let header = format!("Bearer {}", token.trim()).parse().map_err(|_| {
        BackupError::Refused(tonic::Status::unauthenticated(
            "the token is not printable ASCII",
        ))
    })?;
    request.metadata_mut().insert("authorization", header);
    let mut stream = AdminServiceClient::new(channel)
        .max_decoding_message_size(4 << 20)
        .backup(request)
        .await
        .map_err(BackupError::Refused)?
        .into_inner();

    let tmp = out.with_extension("partial");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode_0600()
        .open(&tmp)
        .map_err(io(&tmp))?;
    let mut w = HashingWriter {
        inner: BufWriter::new(file),
        hash: Sha256::new(),
        bytes: 0,
    };
    let mut summary = BackupSummary::default();
    w.write_all(MAGIC).map_err(io(&tmp))?;
    w.write_all(&VERSION.to_be_bytes()).map_err(io(&tmp))?;
    for (name, data) in key_files(data_dir)? {
        let mut f = vec![b'F'];
        f.extend_from_slice(&(name.len() as u16).to_be_bytes());
        f.extend_from_slice(name.as_bytes());
        f.extend_from_slice(&(data.len() as u32).to_be_bytes());
        f.extend_from_slice(&data);
        w.write_all(&f).map_err(io(&tmp))?;
        summary.files.push(name);
    }
    let mut server_part = Vec::new();
    let mut ended = false;
    while let Some(chunk) = stream.message().await.map_err(BackupError::Refused)? {
        if ended {
            return Err(BackupError::Format {
                path: tmp,
                why: "the server sent data after its end frame".to_owned(),
            });
        }
        w.write_all(&chunk.data).map_err(io(&tmp))?;
        // Keep only what has not been parsed yet, to check the frames.
        server_part.extend_from_slice(&chunk.data);
        let (used, end) = check_frames(&server_part, &mut summary.records, &tmp)?;
        server_part.drain(..used);
        ended = end;
    }
    if !ended || !server_part.is_empty() {
        return Err(BackupError::Format {
            path: tmp,
            why: "the server's stream ended before its end frame".to_owned(),
        });
    }
    for (name, path, len) in payload_objects(data_dir)? {
        let mut f = vec![b'O'];
        f.extend_from_slice(&(name.len() as u16).to_be_bytes());
        f.extend_from_slice(name.as_bytes());
        f.extend_from_slice(&len.to_be_bytes());
        w.write_all(&f).map_err(io(&tmp))?;
        let mut src = std::fs::File::open(&path).map_err(io(&path))?.take(len);
        let copied = std::io::copy(&mut src, &mut w).map_err(io(&path))?;
        if copied != len {
            return Err(BackupError::Format {
                path,
                why: "the payload object shrank while it was copied".to_owned(),
            });
        }
        summary.objects += 1;
    }
    let digest: [u8; 32] = w.hash.clone().finalize().into();
    w.write_all(b"Z").map_err(io(&tmp))?;
    w.write_all(&digest).map_err(io(&tmp))?;
    summary.bytes = w.bytes;
    let file = w.inner.into_inner().map_err(|e| BackupError::Io {
        path: tmp.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, out).map_err(io(out))?;
    Ok(summary)
}

/// Parses whole frames of the server's part from the front of `buf`;
/// returns how many bytes it consumed and whether the end frame was among
/// them (nothing may follow it).
fn check_frames(buf: &[u8], records: &mut u64, path: &Path) -> Result<(usize, bool), BackupError> {
    let bad = |why: &str| BackupError::Format {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        match rest[0] {
            b'R' => match parse_record(rest) {
                Some((_, _, _, len)) => {
                    *records += 1;
                    at += len;
                }
                None => break,
            },
            b'I' | b'E' if rest.len() < 9 => break,
            b'I' => at += 9,
            b'E' => {
                let n = u64::from_be_bytes(rest[1..9].try_into().unwrap_or_default());
                if n != *records || rest.len() > 9 {
                    return Err(bad("the server's record count does not match what it sent"));
                }
                return Ok((at + 9, true));
            }
            _ => return Err(bad("unknown frame in the server's stream")),
        }
    }
    Ok((at, false))
}

/// A record frame at the start of `b`: (tree, key, value, frame length).
fn parse_record(b: &[u8]) -> Option<(&str, &[u8], &[u8], usize)> {
    let mut at = 1;
    let take = |at: &mut usize, n: usize| -> Option<&[u8]> {
        let s = b.get(*at..*at + n)?;
        *at += n;
        Some(s)
    };
    let tl = u16::from_be_bytes(take(&mut at, 2)?.try_into().ok()?) as usize;
    let tree = std::str::from_utf8(take(&mut at, tl)?).ok()?;
    let kl = u32::from_be_bytes(take(&mut at, 4)?.try_into().ok()?);
    if kl > MAX_VALUE {
        return None;
    }
    let key = take(&mut at, kl as usize)?;
    let vl = u32::from_be_bytes(take(&mut at, 4)?.try_into().ok()?);
    if vl > MAX_VALUE {
        return None;
    }
    let value = take(&mut at, vl as usize)?;
    Some((tree, key, value, at))
}

/// The key files at the top of a data directory (not the store).
fn key_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, BackupError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(io(dir))?;
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let meta = entry.metadata().map_err(io(&path))?;
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !meta.is_file() || name.starts_with('.') || meta.len() > MAX_FILE {
            continue;
        }
        out.push((name.to_owned(), std::fs::read(&path).map_err(io(&path))?));
    }
    if !out.iter().any(|(n, _)| n == "server-key") {
        return Err(BackupError::Format {
            path: dir.to_owned(),
            why: "it holds no server-key: pass the server's own --data directory".to_owned(),
        });
    }
    out.sort();
    Ok(out)
}

struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt as _;
        self.mode(0o600)
    }
}

/// What a restore wrote.
#[derive(Clone, Debug, Default)]
pub struct RestoreSummary {
    /// Store records.
    pub records: u64,
    /// Key files.
    pub files: Vec<String>,
    /// Payload objects.
    pub objects: u64,
}

/// Reads frames of a backup file.
struct Frames<R> {
    r: R,
    path: PathBuf,
}

impl<R: Read> Frames<R> {
    fn bad(&self, why: &str) -> BackupError {
        BackupError::Format {
            path: self.path.clone(),
            why: why.to_owned(),
        }
    }

    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, BackupError> {
        let mut b = vec![0u8; n];
        self.r
            .read_exact(&mut b)
            .map_err(|_| self.bad("a frame is cut short"))?;
        Ok(b)
    }

    fn u16(&mut self) -> Result<usize, BackupError> {
        Ok(u16::from_be_bytes(self.bytes(2)?.try_into().unwrap_or_default()) as usize)
    }

    fn u32(&mut self) -> Result<usize, BackupError> {
        let n = u32::from_be_bytes(self.bytes(4)?.try_into().unwrap_or_default());
        if n > MAX_VALUE {
            return Err(self.bad("a frame is larger than any record"));
        }
        Ok(n as usize)
    }

    fn u64(&mut self) -> Result<u64, BackupError> {
        Ok(u64::from_be_bytes(
            self.bytes(8)?.try_into().unwrap_or_default(),
        ))
    }

    fn name(&mut self) -> Result<String, BackupError> {
        let n = self.u16()?;
        String::from_utf8(self.bytes(n)?).map_err(|_| self.bad("a name is not UTF-8"))
    }
}

/// Restores `file` into the new data directory `dir` (see the module docs).
pub fn restore(file: &Path, dir: &Path) -> Result<RestoreSummary, BackupError> {
    let bad = |why: &str| BackupError::Format {
        path: file.to_owned(),
        why: why.to_owned(),
    };
    if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(BackupError::NotEmpty(dir.to_owned()));
    }
    // Pass 1: the checksum, before anything is written.
    let len = std::fs::metadata(file).map_err(io(file))?.len();
    if len < (MAGIC.len() + 4 + 33) as u64 {
        return Err(bad("it is too short"));
    }
    let mut f = std::io::BufReader::new(std::fs::File::open(file).map_err(io(file))?);
    let mut hash = Sha256::new();
    let mut left = len - 33;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let n = (left as usize).min(buf.len());
        f.read_exact(&mut buf[..n]).map_err(io(file))?;
        hash.update(&buf[..n]);
        left -= n as u64;
    }
    let mut tail = [0u8; 33];
    f.read_exact(&mut tail).map_err(io(file))?;
    let digest: [u8; 32] = hash.finalize().into();
    if tail[0] != b'Z' || tail[1..] != digest {
        return Err(bad(
            "its SHA-256 does not match (truncated or altered): use another backup",
        ));
    }

    // Pass 2: parse and write.
    let mut frames = Frames {
        r: std::io::BufReader::new(std::fs::File::open(file).map_err(io(file))?).take(len - 33),
        path: file.to_owned(),
    };
    let header = frames.bytes(MAGIC.len() + 4)?;
    if header[..MAGIC.len()] != *MAGIC || header[MAGIC.len()..] != VERSION.to_be_bytes() {
        return Err(bad("no Aloft backup header of version 1"));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let db = sled::Config::new()
        .path(dir.join("db"))
        .open()
        .map_err(StoreError::from)?;
    let mut summary = RestoreSummary::default();
    let mut mark = None;
    let mut ended = false;
    let mut trees: std::collections::HashMap<String, sled::Batch> = Default::default();
    loop {
        let mut tag = [0u8; 1];
        if frames.r.read(&mut tag).map_err(io(file))? == 0 {
            break;
        }
        match tag[0] {
            b'F' => {
                let name = frames.name()?;
                if name.contains('/') || name.starts_with('.') || name == "db" {
                    return Err(bad("a key file name is not a plain name"));
                }
                let n = frames.u32()?;
                let content = frames.bytes(n)?;
                crate::keys::write_secret_file(&dir.join(&name), &content)
                    .map_err(|e| bad(&format!("could not write {name}: {e}")))?;
                summary.files.push(name);
            }
            b'O' => {
                let name = frames.name()?;
                let rel = Path::new(&name);
                let plain = rel.starts_with("objects")
                    && rel
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)));
                if !plain {
                    return Err(bad("a payload path is not under objects/"));
                }
                let n = frames.u64()?;
                let path = dir.join(rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io(parent))?;
                }
                let mut out = std::fs::File::create(&path).map_err(io(&path))?;
                let copied =
                    std::io::copy(&mut (&mut frames.r).take(n), &mut out).map_err(io(&path))?;
                if copied != n {
                    return Err(bad("a payload is cut short"));
                }
                out.sync_all().map_err(io(&path))?;
                summary.objects += 1;
            }
            b'R' => {
                let tree = frames.name()?;
                let kl = frames.u32()?;
                let key = frames.bytes(kl)?;
                let vl = frames.u32()?;
                let value = frames.bytes(vl)?;
                trees.entry(tree).or_default().insert(key, value);
                summary.records += 1;
                if summary.records % 10_000 == 0 {
                    for (name, batch) in trees.drain() {
                        db.open_tree(&name)
                            .map_err(StoreError::from)?
                            .apply_batch(batch)
                            .map_err(StoreError::from)?;
                    }
                }
            }
            b'I' => mark = Some(frames.u64()?),
            b'E' => {
                if frames.u64()? != summary.records {
                    return Err(bad("its record count does not match its records"));
                }
                ended = true;
            }
            _ => return Err(bad("an unknown frame")),
        }
    }
    if !ended {
        return Err(bad("no end frame"));
    }
    for (name, batch) in trees.drain() {
        db.open_tree(&name)
            .map_err(StoreError::from)?
            .apply_batch(batch)
            .map_err(StoreError::from)?;
    }
    // Ids the new store issues must be above every id in the copy (event
    // seqs, uploads, deliveries): sled has no way to set its counter, so
    // draw ids up to the mark.
    if let Some(mark) = mark {
        while db.generate_id().map_err(StoreError::from)? < mark {}
    }
    db.flush().map_err(StoreError::from)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_frames_round_trip() {
        let mut b = Vec::new();
        record_frame(&mut b, "devices", b"k", b"value");
        let (tree, k, v, n) = parse_record(&b).unwrap();
        assert_eq!(
            (tree, k, v, n),
            ("devices", &b"k"[..], &b"value"[..], b.len())
        );
        assert!(
            parse_record(&b[..b.len() - 1]).is_none(),
            "a cut frame waits for more"
        );
    }
}
