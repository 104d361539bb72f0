//! Release payloads in an object store (`object_store`): a directory of the
//! local filesystem for the embedded default (`DATA/objects`), or an
//! S3-compatible bucket that every replica shares.
//!
//! - **One object per upload**, holding the release's chunks concatenated
//!   exactly as devices receive them: chunk `i` at offset `i * (chunk_size
//!   + 16)`, its ciphertext then its 16-byte tag (a signature-only release:
//!   `i * (chunk_size + proof)`, its plaintext then its Merkle proof), the
//!   last chunk shorter ([`PayloadLayout::chunk_offset`]). So any run of chunks
//!   is one byte range, for the gRPC `Download` and for devices that fetch
//!   straight from storage ([`Payloads::direct_url`]).
//! - **Names**: `PREFIX/releases/RELEASE_ID/UPLOAD_ID`, the upload id 16
//!   random hex digits ([`UploadId`], kept in the release row as
//!   `upload_id`). Two uploads of one release id (two replicas, or a retry
//!   after a crash) never write the same object; the loser of
//!   `Store::commit_release` deletes its own.
//! - **Publish order**: the upload streams into the object (multipart, at
//!   most [`PART_SIZE`] x ([`PARTS_IN_FLIGHT`] + 1) bytes buffered), the
//!   object is complete and durable (`fsync` on the filesystem, a completed
//!   multipart upload on S3), and only then is the release row committed
//!   and flushed. A crash in between leaves an object no row names: an
//!   orphan, which [`Payloads::sweep`] deletes at start and every hour once
//!   it is older than the grace period (`--orphan-grace-secs`: a younger
//!   one may be another replica's upload between its object and its row).
//!   A release row therefore always has its object.
//! - Incomplete S3 multipart uploads (a crash mid-upload) are not objects
//!   and cannot be listed through `object_store`: give the bucket an
//!   `AbortIncompleteMultipartUpload` lifecycle rule. On the filesystem the
//!   sweep removes their staging files (`NAME#N`) itself.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aloft_protocol::signed_chunks::PayloadLayout;
use aloft_protocol::trust::Manifest;
use aloft_protocol::{Digest, ReleaseId};
use bytes::Bytes;
use futures_util::StreamExt as _;
use object_store::path::Path;
use object_store::signer::{Method, Signer};
use object_store::{ObjectStore, ObjectStoreExt as _, WriteMultipart};

use crate::store::ReleaseRecord;

/// Bytes per multipart part (S3's minimum for all but the last part).
pub const PART_SIZE: usize = 5 << 20;
/// Parts uploading at once per upload.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Bytes a download reads from the object store per request (whole chunks,
/// at least one).
pub const READ_BATCH_BYTES: u64 = 256 << 10;
/// Default `--orphan-grace-secs`.
pub const DEFAULT_ORPHAN_GRACE: Duration = Duration::from_secs(3600);
/// How often a running server sweeps orphans after the sweep at start.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// Longest validity S3 allows for a presigned URL.
const MAX_PRESIGNED: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a payload could not be stored, read or named.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// `--objects` is not a URL this server understands.
    #[error("--objects {url:?}: {reason} (expected file:///ABSOLUTE/DIR or s3://BUCKET[/PREFIX])")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `--payload-url-template` is not usable.
    #[error(
        "--payload-url-template {template:?}: {reason} (e.g. https://cdn.example.com/{{object}}; placeholders: {{object}}, {{release_id}}, {{upload_id}})"
    )]
    BadTemplate {
        /// The template given.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Presigned URLs were asked for over a store that cannot sign them.
    #[error(
        "--presign-payload-urls needs an S3 object store (--objects s3://BUCKET/PREFIX); use --payload-url-template for a CDN in front of other storage"
    )]
    PresignNeedsS3,
    /// The payload directory could not be created.
    #[error("cannot create the payload directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The object store could not be set up from its configuration.
    #[error("cannot open the object store {store}: {source}")]
    Open {
        /// The store (URL as given).
        store: String,
        /// The `object_store` error.
        source: object_store::Error,
    },
    /// An object store operation failed.
    #[error("object store: {op} {location}: {source}")]
    Object {
        /// What was being done ("write", "read", "delete", ...).
        op: &'static str,
        /// The object.
        location: String,
        /// The `object_store` error.
        source: object_store::Error,
    },
    /// A committed release's object is not in the store.
    #[error(
        "payload object {location} is missing although its release is committed: restore the object store from a backup, or upload the release under a new id"
    )]
    Missing {
        /// The object.
        location: String,
    },
    /// The object is shorter than its release says.
    #[error("payload object {location}: asked for {expected} bytes, got {got}")]
    ShortRead {
        /// The object.
        location: String,
        /// Bytes asked for.
        expected: u64,
        /// Bytes returned.
        got: u64,
    },
    /// The stored release row does not describe its payload.
    #[error("release {release}: stored record is unusable ({reason})")]
    Record {
        /// The release.
        release: String,
        /// What is wrong.
        reason: String,
    },
    /// The pre-object-store sled database could not be migrated.
    #[error("migrating payload chunks out of {path}: {reason}")]
    Migrate {
        /// The sled directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

impl PayloadError {
    fn object(op: &'static str, location: &Path) -> impl FnOnce(object_store::Error) -> Self {
        let location = location.to_string();
        move |source| match source {
            object_store::Error::NotFound { .. } => Self::Missing { location },
            source => Self::Object {
                op,
                location,
                source,
            },
        }
    }
}

impl From<PayloadError> for tonic::Status {
    fn from(e: PayloadError) -> Self {
        tracing::error!(error = %e, "payload storage failure");
        match e {
            PayloadError::Object { .. } => {
                tonic::Status::unavailable(format!("payload storage unavailable: {e}; retry later"))
            }
            e => tonic::Status::internal(format!("payload storage: {e}")),
        }
    }
}

/// Where payload objects live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectsConfig {
    /// A directory of the local filesystem.
    Local(PathBuf),
    /// An S3-compatible bucket.
    S3(S3Config),
}

/// An S3-compatible bucket. Credentials not given here come from the
/// environment as `object_store` reads it (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, web identity, instance
/// metadata, ...); `aloft-server` takes them only from there, never from
/// its command line.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket ("" for none), without slashes at the ends.
    pub prefix: String,
    /// Endpoint of a store other than AWS (e.g. `http://127.0.0.1:9000`);
    /// path-style requests are used then.
    pub endpoint: Option<String>,
    /// Region (`None`: `AWS_REGION`/`AWS_DEFAULT_REGION`, else us-east-1).
    pub region: Option<String>,
    /// Allow `http://` endpoints (local test servers only).
    pub allow_http: bool,
    /// Access key id and secret access key (`None`: from the environment).
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("credentials", &self.credentials.as_ref().map(|_| "<given>"))
            .finish()
    }
}

impl ObjectsConfig {
    /// Parses `--objects`: `file:///ABSOLUTE/DIR` or `s3://BUCKET[/PREFIX]`.
    pub fn parse(url: &str) -> Result<Self, PayloadError> {
        let bad = |reason| PayloadError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad("a file URL needs an absolute path"));
            }
            return Ok(Self::Local(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket name"));
            }
            return Ok(Self::S3(S3Config {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
                ..S3Config::default()
            }));
        }
        Err(bad("unknown scheme"))
    }
}

/// What a directive names for devices to fetch the payload from directly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PayloadUrls {
    /// Nothing: devices use the gRPC `Download`.
    #[default]
    None,
    /// A presigned S3 GET URL of the object, valid no longer than the directive.
    Presigned,
    /// A URL made from a template (a CDN in front of the object store).
    Template(UrlTemplate),
}

/// `--payload-url-template`: `{object}` (the object's key in its bucket or
/// directory), `{release_id}` and `{upload_id}` are replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlTemplate(String);

impl UrlTemplate {
    const PLACEHOLDERS: [&'static str; 3] = ["{object}", "{release_id}", "{upload_id}"];

    /// Checks the template: `https://` (or `http://`, for local tests), at
    /// least one placeholder, no unknown one.
    pub fn parse(template: &str) -> Result<Self, PayloadError> {
        let bad = |reason: String| PayloadError::BadTemplate {
            template: template.to_owned(),
            reason,
        };
        if !(template.starts_with("https://") || template.starts_with("http://")) {
            return Err(bad("must start with https://".into()));
        }
        let mut rest = template;
        let mut placeholders = 0;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| bad("a '{' is not closed".into()))?;
            let name = &rest[open..open + close + 1];
            if !Self::PLACEHOLDERS.contains(&name) {
                return Err(bad(format!("unknown placeholder {name}")));
            }
            placeholders += 1;
            rest = &rest[open + close + 1..];
        }
        if placeholders == 0 {
            return Err(bad(
                "names no placeholder, so every release would get the same URL".into(),
            ));
        }
        Ok(Self(template.to_owned()))
    }

    fn render(&self, object: &Path, release: &ReleaseId, upload: UploadId) -> String {
        self.0
            .replace("{object}", object.as_ref())
            .replace("{release_id}", release.as_str())
            .replace("{upload_id}", &upload.to_string())
    }
}

/// Payload storage settings of a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadConfig {
    /// Where objects live (`None`: `DATA/objects`).
    pub objects: Option<ObjectsConfig>,
    /// What directives name for direct downloads.
    pub urls: PayloadUrls,
    /// An object no release names is deleted once it is this old.
    pub orphan_grace: Duration,
}

impl Default for PayloadConfig {
    fn default() -> Self {
        Self {
            objects: None,
            urls: PayloadUrls::None,
            orphan_grace: DEFAULT_ORPHAN_GRACE,
        }
    }
}

/// The `aloft-server` flags of [`PayloadConfig`].
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Payload storage")]
pub struct PayloadArgs {
    /// Where release payloads live: file:///ABSOLUTE/DIR, or s3://BUCKET[/PREFIX]
    /// for an S3-compatible store that replicas share (credentials from
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN or the
    /// platform's providers). Default: DATA/objects.
    #[arg(long, value_name = "URL")]
    pub objects: Option<String>,
    /// S3 endpoint of a store other than AWS, e.g. http://127.0.0.1:9000
    /// (path-style requests). Default: AWS (or AWS_ENDPOINT).
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region. Default: AWS_REGION or AWS_DEFAULT_REGION, else us-east-1.
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Allow an http:// S3 endpoint (local test servers only).
    #[arg(long)]
    pub s3_allow_http: bool,
    /// Directives carry a presigned GET URL of the payload (expiring with the
    /// directive), so devices fetch it straight from S3 with Range requests,
    /// falling back to the gRPC download. Needs --objects s3://...
    #[arg(long, conflicts_with = "payload_url_template")]
    pub presign_payload_urls: bool,
    /// Directives carry this URL for devices to fetch the payload from (a CDN
    /// in front of the store); {object}, {release_id} and {upload_id} are
    /// replaced, e.g. https://cdn.example.com/{object}. The CDN is not
    /// trusted: every chunk is authenticated on the device.
    #[arg(long, value_name = "TEMPLATE")]
    pub payload_url_template: Option<String>,
    /// Seconds before an object that no release names (an upload that
    /// crashed before its release was published) is deleted.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_ORPHAN_GRACE.as_secs())]
    pub orphan_grace_secs: u64,
}

impl PayloadArgs {
    /// The configuration the flags describe.
    pub fn config(&self) -> Result<PayloadConfig, PayloadError> {
        let mut objects = self
            .objects
            .as_deref()
            .map(ObjectsConfig::parse)
            .transpose()?;
        if let Some(ObjectsConfig::S3(s3)) = objects.as_mut() {
            s3.endpoint.clone_from(&self.s3_endpoint);
            s3.region.clone_from(&self.s3_region);
            s3.allow_http = self.s3_allow_http;
        }
        let urls = match (&self.payload_url_template, self.presign_payload_urls) {
            (Some(t), _) => PayloadUrls::Template(UrlTemplate::parse(t)?),
            (None, true) => PayloadUrls::Presigned,
            (None, false) => PayloadUrls::None,
        };
        Ok(PayloadConfig {
            objects,
            urls,
            orphan_grace: Duration::from_secs(self.orphan_grace_secs),
        })
    }
}

/// One upload's object (see the module docs), random per upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UploadId(pub u64);

impl UploadId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(u64::from_be_bytes(crate::keys::random()))
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The payload layout of a stored release, from the manifest the server
/// verified at upload (re-read by its recorded digest, not re-verified).
pub fn params_of(record: &ReleaseRecord) -> Result<PayloadLayout, PayloadError> {
    let info = record.info.as_ref();
    let release = info.map_or("?", |i| i.release_id.as_str()).to_owned();
    let bad = |reason: String| PayloadError::Record {
        release: release.clone(),
        reason,
    };
    let digest = info
        .and_then(|i| Digest::from_slice(&i.manifest_digest).ok())
        .ok_or_else(|| bad("no manifest digest".into()))?;
    let envelope = record
        .manifest
        .as_ref()
        .ok_or_else(|| bad("no manifest".into()))?;
    Manifest::from_recorded(envelope, digest)
        .map(|m| m.payload_layout())
        .map_err(|e| bad(format!("manifest: {e}")))
}

/// The chunks `first..` that one read of at most [`READ_BATCH_BYTES`]
/// covers (at least one chunk): the end index of that run.
pub fn batch_end(params: &PayloadLayout, first: u32) -> u32 {
    let count = params.chunk_count();
    let start = params.chunk_offset(first);
    let mut end = first.saturating_add(1).min(count);
    while end < count && params.chunk_offset(end + 1) - start <= READ_BATCH_BYTES {
        end += 1;
    }
    end
}

/// Test hook: when the environment variable `ALOFT_FAILPOINT` names
/// `point`, the process aborts right here (no destructors, no flush: a
/// crash at a chosen moment). Used by `tests/payloads.rs`.
pub(crate) fn failpoint(point: &str) {
    static SET: OnceLock<Option<String>> = OnceLock::new();
    if SET
        .get_or_init(|| std::env::var("ALOFT_FAILPOINT").ok())
        .as_deref()
        == Some(point)
    {
        eprintln!("ALOFT_FAILPOINT={point}: aborting the process");
        std::process::abort();
    }
}

/// The payload objects of a server: see the module docs.
#[derive(Debug)]
pub struct Payloads {
    store: Arc<dyn ObjectStore>,
    /// Set for S3: presigns GET URLs.
    signer: Option<Arc<dyn Signer>>,
    /// `PREFIX/releases`.
    root: Path,
    urls: PayloadUrls,
    /// The directory, for the local backend (staging files are swept there).
    local_dir: Option<PathBuf>,
    /// For logs: `file:///...` or `s3://bucket/prefix`.
    describe: String,
    /// Batches of payload bytes read lately, by object and byte range
    /// (see [`HOT_CACHE_BYTES`]).
    hot: quick_cache::sync::Cache<(String, u64, u64), Bytes, ByLength>,
}

/// Bytes of payload batches kept in memory: a rollout's devices download
/// the same release, so one read from the object store serves them all
/// (objects are immutable once published, so an entry is never stale).
pub const HOT_CACHE_BYTES: u64 = 64 << 20;

/// Weighs a cached batch by its length.
#[derive(Clone)]
struct ByLength;

impl quick_cache::Weighter<(String, u64, u64), Bytes> for ByLength {
    fn weight(&self, _key: &(String, u64, u64), value: &Bytes) -> u64 {
        value.len().max(1) as u64
    }
}

/// An object store just opened, before the `releases/` root is set.
struct Opened {
    store: Arc<dyn ObjectStore>,
    signer: Option<Arc<dyn Signer>>,
    prefix: String,
    local_dir: Option<PathBuf>,
    describe: String,
}

impl Payloads {
    /// Opens the store `config` names (`DATA/objects` by default, created
    /// if missing).
    pub fn open(config: &PayloadConfig, data_dir: &FsPath) -> Result<Self, PayloadError> {
        let objects = config
            .objects
            .clone()
            .unwrap_or_else(|| ObjectsConfig::Local(data_dir.join("objects")));
        let Opened {
            store,
            signer,
            prefix,
            local_dir,
            describe,
        } = match objects {
            ObjectsConfig::Local(dir) => {
                std::fs::create_dir_all(&dir).map_err(|source| PayloadError::Dir {
                    path: dir.clone(),
                    source,
                })?;
                let describe = format!("file://{}", dir.display());
                let local = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|source| PayloadError::Open {
                        store: describe.clone(),
                        source,
                    })?
                    .with_fsync(true);
                Opened {
                    store: Arc::new(local),
                    signer: None,
                    prefix: String::new(),
                    local_dir: Some(dir),
                    describe,
                }
            }
            ObjectsConfig::S3(s3) => {
                // object_store's HTTP client is reqwest on rustls with the
                // process's default crypto provider: ring, as for tonic.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let describe = if s3.prefix.is_empty() {
                    format!("s3://{}", s3.bucket)
                } else {
                    format!("s3://{}/{}", s3.bucket, s3.prefix)
                };
                let mut builder =
                    object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&s3.bucket);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(region) = &s3.region {
                    builder = builder.with_region(region);
                }
                if s3.allow_http {
                    builder = builder.with_allow_http(true);
                }
                if let Some((id, secret)) = &s3.credentials {
                    builder = builder
                        .with_access_key_id(id)
                        .with_secret_access_key(secret);
                }
                let s3_store = Arc::new(builder.build().map_err(|source| PayloadError::Open {
                    store: describe.clone(),
                    source,
                })?);
                Opened {
                    store: s3_store.clone(),
                    signer: Some(s3_store),
                    prefix: s3.prefix.clone(),
                    local_dir: None,
                    describe,
                }
            }
        };
        if config.urls == PayloadUrls::Presigned && signer.is_none() {
            return Err(PayloadError::PresignNeedsS3);
        }
        let mut root = Path::parse(&prefix).map_err(|source| PayloadError::Open {
            store: describe.clone(),
            source: source.into(),
        })?;
        root = root.join("releases");
        Ok(Self {
            store,
            signer,
            root,
            urls: config.urls.clone(),
            local_dir,
            describe,
            hot: quick_cache::sync::Cache::with_weighter(
                (HOT_CACHE_BYTES / READ_BATCH_BYTES) as usize,
                HOT_CACHE_BYTES,
                ByLength,
            ),
        })
    }

    /// The store, for logs (`file:///...` or `s3://bucket/prefix`).
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// The object of one upload of `release`.
    pub fn location(&self, release: &ReleaseId, upload: UploadId) -> Path {
        self.root
            .clone()
            .join(release.as_str())
            .join(upload.to_string().as_str())
    }

    /// The object a committed release's payload lives in.
    pub fn location_of(&self, record: &ReleaseRecord) -> Result<Path, PayloadError> {
        let id = record.info.as_ref().map_or("", |i| i.release_id.as_str());
        let release = ReleaseId::new(id).map_err(|e| PayloadError::Record {
            release: id.to_owned(),
            reason: format!("release id: {e}"),
        })?;
        Ok(self.location(&release, UploadId(record.upload_id)))
    }

    /// Starts writing the object of a new upload.
    pub async fn create(
        &self,
        release: &ReleaseId,
        upload: UploadId,
    ) -> Result<PayloadWriter, PayloadError> {
        let location = self.location(release, upload);
        let multipart = self
            .store
            .put_multipart(&location)
            .await
            .map_err(PayloadError::object("start writing", &location))?;
        Ok(PayloadWriter {
            inner: WriteMultipart::new_with_chunk_size(multipart, PART_SIZE),
            location,
        })
    }

    /// Chunks `chunks` of the payload in `location`, read in one request.
    pub async fn read_chunks(
        &self,
        location: &Path,
        params: &PayloadLayout,
        chunks: Range<u32>,
    ) -> Result<Vec<Bytes>, PayloadError> {
        let start = params.chunk_offset(chunks.start);
        let end = params.chunk_offset(chunks.end);
        // Concurrent readers of one batch wait for a single read.
        let key = (location.to_string(), start, end);
        let data = self
            .hot
            .get_or_insert_async(&key, async {
                let data = self
                    .store
                    .get_range(location, start..end)
                    .await
                    .map_err(PayloadError::object("read", location))?;
                if data.len() as u64 != end - start {
                    return Err(PayloadError::ShortRead {
                        location: location.to_string(),
                        expected: end - start,
                        got: data.len() as u64,
                    });
                }
                Ok(data)
            })
            .await?;
        Ok(chunks
            .map(|i| {
                let at = (params.chunk_offset(i) - start) as usize;
                let len = params.chunk_len(i).unwrap_or(0);
                data.slice(at..at + len)
            })
            .collect())
    }

    /// The object's size, or `None` if it does not exist.
    pub async fn size(&self, location: &Path) -> Result<Option<u64>, PayloadError> {
        match self.store.head(location).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(PayloadError::object("look up", location)(e)),
        }
    }

    /// Deletes an object (gone already counts as deleted).
    pub async fn delete(&self, location: &Path) -> Result<(), PayloadError> {
        match self.store.delete(location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(PayloadError::object("delete", location)(e)),
        }
    }

    /// Deletes an upload's object that will never be published; a failure
    /// is logged (the sweep gets it later).
    pub async fn discard(&self, location: &Path) {
        if let Err(e) = self.delete(location).await {
            tracing::warn!(error = %e, "could not delete an unpublished payload; the orphan sweep will");
        }
    }

    /// Deletes every payload object that no location in `live` names and
    /// that is older than `grace` (and, on the filesystem, staging files of
    /// interrupted uploads as old); returns how many were deleted.
    pub async fn sweep(
        &self,
        live: &HashSet<Path>,
        grace: Duration,
    ) -> Result<usize, PayloadError> {
        let cutoff = SystemTime::now()
            .checked_sub(grace)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(i64::MIN, |d| d.as_secs() as i64);
        let mut orphans = Vec::new();
        let mut listing = self.store.list(Some(&self.root));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(PayloadError::object("list", &self.root))?;
            if !live.contains(&meta.location) && meta.last_modified.timestamp() <= cutoff {
                orphans.push(meta.location);
            }
        }
        drop(listing);
        for location in &orphans {
            self.delete(location).await?;
            tracing::info!(object = %location, "deleted an orphaned payload object (an upload that never published its release)");
        }
        let mut removed = orphans.len();
        if let Some(dir) = &self.local_dir {
            removed += sweep_staging(&dir.join(self.root.as_ref()), grace);
        }
        Ok(removed)
    }

    /// The URL a directive names for fetching `release`'s payload directly,
    /// valid for at most `valid_for` (the directive's lifetime), or `None`
    /// when the server offers only the gRPC download.
    pub async fn direct_url(
        &self,
        release: &ReleaseId,
        upload: UploadId,
        valid_for: Duration,
    ) -> Result<Option<String>, PayloadError> {
        let location = self.location(release, upload);
        match &self.urls {
            PayloadUrls::None => Ok(None),
            PayloadUrls::Template(t) => Ok(Some(t.render(&location, release, upload))),
            PayloadUrls::Presigned => {
                let Some(signer) = &self.signer else {
                    return Err(PayloadError::PresignNeedsS3);
                };
                let url = signer
                    .signed_url(Method::GET, &location, valid_for.min(MAX_PRESIGNED))
                    .await
                    .map_err(PayloadError::object("presign", &location))?;
                Ok(Some(url.to_string()))
            }
        }
    }
}

/// Removes multipart staging files (`NAME#DIGITS`) older than `grace` under
/// `dir`, left by a crash mid-upload on the local filesystem backend.
fn sweep_staging(dir: &FsPath, grace: Duration) -> usize {
    let mut removed = 0;
    let Ok(releases) = std::fs::read_dir(dir) else {
        return 0;
    };
    for release in releases.flatten() {
        let Ok(files) = std::fs::read_dir(release.path()) else {
            continue;
        };
        for file in files.flatten() {
            let name = file.file_name();
            let Some((_, suffix)) = name.to_str().and_then(|n| n.split_once('#')) else {
                continue;
            };
            let staging = !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit());
            let old = file
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= grace);
            if staging && old && std::fs::remove_file(file.path()).is_ok() {
                tracing::info!(file = %file.path().display(), "deleted the staging file of an interrupted upload");
                removed += 1;
            }
        }
    }
    removed
}

/// An upload's object being written: bytes in order, then
/// [`PayloadWriter::finish`]. Dropping it without finishing leaves no object
/// (S3 keeps the parts until the bucket's lifecycle rule aborts them).
pub struct PayloadWriter {
    inner: WriteMultipart,
    location: Path,
}

impl std::fmt::Debug for PayloadWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadWriter")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl PayloadWriter {
    /// The object being written.
    pub fn location(&self) -> &Path {
        &self.location
    }

    /// Appends `data`, first waiting while [`PARTS_IN_FLIGHT`] parts are
    /// uploading (bounded memory whatever the payload size).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), PayloadError> {
        self.inner
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(PayloadError::object("write", &self.location))?;
        self.inner.write(data);
        Ok(())
    }

    /// Completes the object; when this returns it is durable.
    pub async fn finish(self) -> Result<Path, PayloadError> {
        self.inner
            .finish()
            .await
            .map_err(PayloadError::object("complete", &self.location))?;
        Ok(self.location)
    }

    /// Abandons the upload (its parts are deleted where the store can).
    pub async fn abort(self) {
        if let Err(e) = self.inner.abort().await {
            tracing::warn!(object = %self.location, error = %e, "could not abort an unfinished payload upload");
        }
    }
}

/// Moves the payload chunks of a data directory from before the object
/// store (sled tree `chunks`, key upload id + chunk index, both big-endian)
/// into objects, then drops that tree. Runs at start, before the store
/// opens; a no-op once the tree is gone. Returns how many releases moved.
pub async fn migrate_sled_chunks(
    db_dir: &FsPath,
    payloads: &Payloads,
) -> Result<usize, PayloadError> {
    use aloft_protocol::prost::Message as _;
    let fail = |reason: String| PayloadError::Migrate {
        path: db_dir.to_owned(),
        reason,
    };
    if !db_dir.exists() {
        return Ok(0);
    }
    let db = crate::store::open_sled(db_dir).map_err(|e| fail(format!("open: {e}")))?;
    let has_chunks = db
        .tree_names()
        .iter()
        .any(|name| name.as_ref() == b"chunks");
    if !has_chunks {
        return Ok(0);
    }
    let chunks = db.open_tree("chunks").map_err(|e| fail(e.to_string()))?;
    let releases = db.open_tree("releases").map_err(|e| fail(e.to_string()))?;
    let mut moved = 0;
    for item in releases.iter() {
        let (_, value) = item.map_err(|e| fail(e.to_string()))?;
        let record = ReleaseRecord::decode(value.as_ref())
            .map_err(|e| fail(format!("release record: {e}")))?;
        let location = payloads.location_of(&record)?;
        if payloads.size(&location).await?.is_some() {
            continue;
        }
        let release = ReleaseId::new(record.info.as_ref().map_or("", |i| &i.release_id))
            .map_err(|e| fail(format!("release id: {e}")))?;
        let mut writer = payloads
            .create(&release, UploadId(record.upload_id))
            .await?;
        for index in 0..record.chunk_count {
            let mut key = [0u8; 12];
            key[..8].copy_from_slice(&record.upload_id.to_be_bytes());
            key[8..].copy_from_slice(&index.to_be_bytes());
            let chunk = chunks
                .get(key)
                .map_err(|e| fail(e.to_string()))?
                .ok_or_else(|| fail(format!("release {release}: chunk {index} is missing")))?;
            writer.write(&chunk).await?;
        }
        writer.finish().await?;
        tracing::info!(%release, chunks = record.chunk_count, object = %location, "moved a release payload from sled into the object store");
        moved += 1;
    }
    db.drop_tree("chunks").map_err(|e| fail(e.to_string()))?;
    db.flush_async()
        .await
        .map_err(|e| fail(format!("flush: {e}")))?;
    Ok(moved)
}
