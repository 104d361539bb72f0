//! Persistence behind the [`Store`] trait, and its sled implementation.
//!
//! The trait speaks only in typed records (prost messages) and aloft newtypes,
//! never in sled types; `crate::pg_store` implements it on PostgreSQL. Read-modify-write goes through
//! closures ([`Store::update_device`], [`Store::update_rollout`]) that a
//! backend may call more than once (compare-and-swap retry, or `SELECT ... FOR
//! UPDATE`); they must be pure.
//!
//! Writes are not durable until [`Store::flush`] completes: the services flush
//! before they acknowledge anything.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use aloft_protocol::pb;
use aloft_protocol::{DeviceId, Digest, ReleaseId};
use prost::Message;

/// A boxed future returned by [`Store::flush`].
pub type FlushFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend reported an error.
    #[error("backend: {0}")]
    Backend(String),
    /// A stored record does not decode.
    #[error("corrupt {0} record")]
    Corrupt(&'static str),
    /// The store's address or settings are not usable.
    #[error("store configuration: {0}")]
    Config(String),
    /// The backend cannot do this; the text says what to do instead.
    #[error("not supported by this store: {0}")]
    Unsupported(&'static str),
    /// PostgreSQL refused or failed a statement.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be had in time (down, unreachable,
    /// or every pooled connection busy).
    #[error("postgres unavailable: {0}")]
    Unavailable(#[from] deadpool_postgres::PoolError),
    /// The database's schema is not the one this build runs on.
    #[error(
        "the database schema is at version {found}, this aloft-server runs on version \
         {expected}: run `aloft-server migrate --store URL` with this build (a newer \
         schema needs a newer aloft-server)"
    )]
    Schema {
        /// Highest migration applied (0: none).
        found: i32,
        /// What this build expects.
        expected: i32,
    },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        Self::Backend(e.to_string())
    }
}

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => e.into(),
        }
    }
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// A stored device: its registration and tracked status (the wire
/// [`pb::DeviceInfo`] without the live `connected` flag).
pub type DeviceRecord = pb::DeviceInfo;

/// A device report's id (1 to 64 bytes, chosen by the device).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReportId(Vec<u8>);

impl ReportId {
    /// Longest accepted report id.
    pub const MAX_LEN: usize = 64;

    /// Validates the length.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        (!bytes.is_empty() && bytes.len() <= Self::MAX_LEN).then(|| Self(bytes.to_vec()))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A stored operator token (only its hash; never the secret).
#[derive(Clone, PartialEq, Message)]
pub struct TokenRecord {
    /// Public id, used to list and revoke.
    #[prost(string, tag = "1")]
    pub token_id: String,
    /// Human name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// `pb::Role` as i32.
    #[prost(enumeration = "pb::Role", tag = "3")]
    pub role: i32,
    /// SHA-256 of the secret.
    #[prost(bytes = "vec", tag = "4")]
    pub hash: Vec<u8>,
    /// Unix seconds.
    #[prost(uint64, tag = "5")]
    pub created_at: u64,
    /// Revoked tokens are refused.
    #[prost(bool, tag = "6")]
    pub revoked: bool,
}

/// A stored release.
#[derive(Clone, PartialEq, Message)]
pub struct ReleaseRecord {
    /// What operators see.
    #[prost(message, optional, tag = "1")]
    pub info: Option<pb::ReleaseInfo>,
    /// The release-signed manifest, as uploaded.
    #[prost(message, optional, tag = "2")]
    pub manifest: Option<pb::SignedEnvelope>,
    /// Content key sealed under the KEK (see `keys::Kek`).
    #[prost(bytes = "vec", tag = "3")]
    pub sealed_content_key: Vec<u8>,
    /// Names the payload object (see `crate::payloads::Payloads::location`).
    #[prost(uint64, tag = "4")]
    pub upload_id: u64,
    /// Number of payload chunks.
    #[prost(uint32, tag = "5")]
    pub chunk_count: u32,
}

/// A stored rollout: its definition and its progress. Each device's place in
/// it is a separate [`RolloutDeviceRecord`], so a check-in rewrites one small
/// record, never the rollout.
#[derive(Clone, PartialEq, Message)]
pub struct RolloutRecord {
    /// The definition as accepted (stages filled in with the defaults).
    #[prost(message, optional, tag = "1")]
    pub request: Option<pb::CreateRolloutRequest>,
    /// The release's version when the rollout was created.
    #[prost(string, tag = "2")]
    pub target_version: String,
    /// Seconds before an unanswered offer is withdrawn (0 = never).
    #[prost(uint64, tag = "3")]
    pub offer_timeout_secs: u64,
    /// Suggested check-in interval for waiting devices.
    #[prost(uint64, tag = "4")]
    pub check_in_secs: u64,
    /// Suggested wait for devices held back by a pacing cap.
    #[prost(uint64, tag = "5")]
    pub pacing_retry_secs: u64,
    /// Largest per-device jitter on suggested check-ins.
    #[prost(uint64, tag = "6")]
    pub jitter_secs: u64,
    /// `pb::RolloutState` as i32.
    #[prost(enumeration = "pb::RolloutState", tag = "7")]
    pub state: i32,
    /// Why it is paused.
    #[prost(string, tag = "8")]
    pub pause_reason: String,
    /// Index of the current stage.
    #[prost(uint32, tag = "9")]
    pub current_stage: u32,
    /// Unix seconds.
    #[prost(uint64, tag = "10")]
    pub created_at: u64,
    /// Unix seconds.
    #[prost(uint64, tag = "11")]
    pub stage_started_at: u64,
    /// Current-stage failures acknowledged by an operator resume.
    #[prost(uint32, tag = "12")]
    pub acknowledged: u32,
}

impl RolloutRecord {
    /// The rollout's id.
    pub fn id(&self) -> &str {
        self.request.as_ref().map_or("", |r| r.rollout_id.as_str())
    }
}

/// One device's place in one rollout (mirrors `aloft_rollout`'s device record).
#[derive(Clone, PartialEq, Message)]
pub struct RolloutDeviceRecord {
    /// Outcome index: 0 pending, 1 offered, 2 installed, 3 updated, 4 failed,
    /// 5 rolled back, 6 silent, 7 excluded.
    #[prost(uint32, tag = "1")]
    pub outcome: u32,
    /// First eligible stage + 1; 0 = beyond the last stage (or not placed).
    #[prost(uint32, tag = "2")]
    pub stage: u32,
    /// Forced by an operator.
    #[prost(bool, tag = "3")]
    pub forced: bool,
    /// Unix seconds of the last outcome change.
    #[prost(uint64, tag = "4")]
    pub since: u64,
    /// Offers made.
    #[prost(uint32, tag = "5")]
    pub offers: u32,
    /// Rollbacks reported.
    #[prost(uint32, tag = "6")]
    pub rollbacks: u32,
    /// Install failures reported.
    #[prost(uint32, tag = "7")]
    pub failures: u32,
    /// The last failure detail.
    #[prost(string, optional, tag = "8")]
    pub last_error: Option<String>,
    /// Unix seconds of its last check-in while installing.
    #[prost(uint64, tag = "9")]
    pub last_seen: u64,
}

/// A directive the server issued: authorises the device to download the release.
#[derive(Clone, PartialEq, Message)]
pub struct DirectiveRecord {
    /// Device.
    #[prost(string, tag = "1")]
    pub device_id: String,
    /// Release.
    #[prost(string, tag = "2")]
    pub release_id: String,
    /// Rollout.
    #[prost(string, tag = "3")]
    pub rollout_id: String,
    /// Unix seconds.
    #[prost(uint64, tag = "4")]
    pub issued_at: u64,
    /// Unix seconds.
    #[prost(uint64, tag = "5")]
    pub expires_at: u64,
}

/// What a device list is narrowed by before its filter runs (see
/// [`Store::query_devices`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceQuery {
    /// Conditions every listed device meets
    /// (`aloft_rollout::Selector::indexable_terms`).
    pub terms: Vec<aloft_rollout::Term>,
}

/// Typed persistence for the server. See the module docs.
pub trait Store: Send + Sync + 'static {
    /// Every TrustRoot accepted, oldest first (empty before the first).
    fn trust_chain(&self) -> StoreResult<Vec<pb::TrustRootRecord>>;
    /// Appends the next TrustRoot of the chain under `version`; false
    /// (nothing written) if that version is already stored. Roots are never
    /// replaced or removed: they anchor the chain devices walk.
    fn append_trust_root(&self, version: u32, record: &pb::TrustRootRecord) -> StoreResult<bool>;

    /// Inserts a device; false (and nothing written) if the id exists.
    fn insert_device(&self, record: &DeviceRecord) -> StoreResult<bool>;
    /// One device.
    fn device(&self, id: &DeviceId) -> StoreResult<Option<DeviceRecord>>;
    /// Atomically applies `f` (which returns whether it changed anything) and
    /// returns the resulting record; `None` if the device does not exist.
    fn update_device(
        &self,
        id: &DeviceId,
        f: &mut dyn FnMut(&mut DeviceRecord) -> bool,
    ) -> StoreResult<Option<DeviceRecord>>;
    /// Up to `limit` devices with id greater than `after` that pass `filter`, by id.
    fn list_devices(
        &self,
        after: Option<&DeviceId>,
        limit: usize,
        filter: &mut dyn FnMut(&DeviceRecord) -> bool,
    ) -> StoreResult<Vec<DeviceRecord>>;

    /// [`Store::list_devices`] narrowed by `query` first: a backend with
    /// indexes reads only devices that meet its terms; `filter` still
    /// decides. The default ignores `query` (sled: an id-ordered scan).
    fn query_devices(
        &self,
        after: Option<&DeviceId>,
        limit: usize,
        query: &DeviceQuery,
        filter: &mut dyn FnMut(&DeviceRecord) -> bool,
    ) -> StoreResult<Vec<DeviceRecord>> {
        let _ = query;
        self.list_devices(after, limit, filter)
    }

    /// Inserts every device of `records` or none of them: when one of the
    /// ids is registered already, nothing is written and those ids are
    /// returned (empty: all were inserted). The ids in `records` are
    /// distinct (the caller checks).
    fn insert_devices(&self, records: &[DeviceRecord]) -> StoreResult<Vec<DeviceId>>;

    /// Creates or replaces a product's declaration (what its devices
    /// install, whether its data is sensitive).
    fn put_product(&self, record: &pb::ProductInfo) -> StoreResult<()>;
    /// One product's declaration (`None`: never declared).
    fn product(&self, product: &str) -> StoreResult<Option<pb::ProductInfo>>;
    /// Every declared product, by name.
    fn list_products(&self) -> StoreResult<Vec<pb::ProductInfo>>;

    /// Inserts an operator token.
    fn insert_token(&self, record: &TokenRecord) -> StoreResult<()>;
    /// The token whose secret hashes to `hash`.
    fn token_by_hash(&self, hash: &Digest) -> StoreResult<Option<TokenRecord>>;
    /// Marks a token revoked; returns it, or `None` if unknown.
    fn revoke_token(&self, token_id: &str) -> StoreResult<Option<TokenRecord>>;
    /// All tokens.
    fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>>;

    /// Publishes a release whose payload object is already stored (see
    /// `crate::payloads`); false (nothing written) if the release id exists.
    fn commit_release(&self, id: &ReleaseId, record: &ReleaseRecord) -> StoreResult<bool>;
    /// One release.
    fn release(&self, id: &ReleaseId) -> StoreResult<Option<ReleaseRecord>>;
    /// All releases, by id.
    fn list_releases(&self) -> StoreResult<Vec<ReleaseRecord>>;

    /// Inserts a rollout; false (nothing written) if the id exists.
    fn insert_rollout(&self, record: &RolloutRecord) -> StoreResult<bool>;
    /// All rollouts, by id.
    fn list_rollouts(&self) -> StoreResult<Vec<RolloutRecord>>;
    /// Atomically writes a rollout's record (when `record` is given) and
    /// device records of rollout `rollout`.
    fn save_rollout(
        &self,
        rollout: &str,
        record: Option<&RolloutRecord>,
        devices: &[(DeviceId, RolloutDeviceRecord)],
    ) -> StoreResult<()>;
    /// Every device record of rollout `rollout`, by device id.
    fn rollout_devices(&self, rollout: &str) -> StoreResult<Vec<(DeviceId, RolloutDeviceRecord)>>;

    /// Appends a sample to rollout `rollout`'s history, then deletes its
    /// `drop_oldest` oldest samples. Samples sort by time, then by order of
    /// appending.
    fn append_rollout_sample(
        &self,
        rollout: &str,
        sample: &pb::RolloutSample,
        drop_oldest: usize,
    ) -> StoreResult<()>;
    /// The latest `limit` samples of rollout `rollout` at or after `since`
    /// (Unix seconds), oldest first; `limit` 0 = all.
    fn rollout_samples(
        &self,
        rollout: &str,
        since: u64,
        limit: usize,
    ) -> StoreResult<Vec<pb::RolloutSample>>;
    /// How many samples rollout `rollout` has.
    fn rollout_sample_count(&self, rollout: &str) -> StoreResult<usize>;

    /// Records (or replaces) the directive for (device, release).
    fn put_directive(&self, record: &DirectiveRecord) -> StoreResult<()>;
    /// The directive issued to `device` for `release`, if any.
    fn directive(
        &self,
        device: &DeviceId,
        release: &ReleaseId,
    ) -> StoreResult<Option<DirectiveRecord>>;

    /// Whether this device's report was already recorded.
    fn report_seen(&self, device: &DeviceId, report: &ReportId) -> StoreResult<bool>;
    /// Records this device's report as processed.
    fn mark_report(&self, device: &DeviceId, report: &ReportId) -> StoreResult<()>;

    /// Appends an event, assigning its `seq` (increasing, may skip).
    fn append_event(&self, event: &mut pb::Event) -> StoreResult<()>;
    /// The latest `limit` events of a device, oldest first.
    fn device_events(&self, device: &DeviceId, limit: usize) -> StoreResult<Vec<pb::Event>>;

    /// Makes every write so far durable.
    fn flush(&self) -> FlushFuture<'_>;
}

/// The embedded default: one sled database under the data directory.
///
/// **Flushes are serialized.** sled 0.34.7 can deadlock when `flush_async`
/// runs from many tasks at once (sled issues #1308 and #1241), so
/// [`Store::flush`] never calls it: callers take a ticket, then one at a time
/// run the blocking `Db::flush` (on tokio's blocking pool when a runtime is
/// present). Group commit: a flush covers every ticket taken before it
/// started, so callers whose ticket is already covered return without
/// flushing again.
pub struct SledStore {
    db: sled::Db,
    /// Tickets handed out (one per `flush` call).
    flush_requested: std::sync::atomic::AtomicU64,
    /// Every ticket up to this one is durable.
    flush_done: std::sync::atomic::AtomicU64,
    /// Held while a flush runs.
    flush_lock: tokio::sync::Mutex<()>,
    /// Every write holds it shared; a backup holds it exclusively while it
    /// copies (see [`SledStore::pause_writes`]).
    gate: std::sync::RwLock<()>,
    /// Key: big-endian TrustRoot version.
    trust_roots: sled::Tree,
    devices: sled::Tree,
    /// Key: product name; value: `pb::ProductInfo`.
    products: sled::Tree,
    tokens: sled::Tree,
    token_ids: sled::Tree,
    releases: sled::Tree,
    rollouts: sled::Tree,
    rollout_devices: sled::Tree,
    /// Key `rollout\0` + big-endian time + big-endian sequence.
    rollout_samples: sled::Tree,
    directives: sled::Tree,
    reports: sled::Tree,
    events: sled::Tree,
    device_events: sled::Tree,
}

fn decode<M: Message + Default>(bytes: &[u8], what: &'static str) -> StoreResult<M> {
    M::decode(bytes).map_err(|_| StoreError::Corrupt(what))
}

fn pair_key(a: &str, b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1 + b.len());
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b);
    k
}

/// How long [`open_sled`] waits for a lock held by a closing handle.
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens (or creates) the sled database in directory `path`. sled holds a
/// file lock on it until its background flusher thread has ended, a moment
/// after the last handle is dropped: a server restarted within the same
/// process (tests, the demo) can find the lock still held by the one it
/// stopped. Waits for such a lock up to [`SLED_LOCK_WAIT`]; another process
/// that keeps the database open is still refused with sled's lock error.
pub(crate) fn open_sled(path: &Path) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + SLED_LOCK_WAIT;
    loop {
        match sled::Config::new().path(path).open() {
            // sled reports the lock as `ErrorKind::Other` with the OS
            // error (EWOULDBLOCK) in its message.
            Err(sled::Error::Io(e))
                if (e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock"))
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

impl SledStore {
    /// Opens (or creates) the database in directory `path`.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let db = open_sled(path)?;
        Ok(Self {
            trust_roots: db.open_tree("trust_roots")?,
            devices: db.open_tree("devices")?,
            products: db.open_tree("products")?,
            tokens: db.open_tree("tokens")?,
            token_ids: db.open_tree("token_ids")?,
            releases: db.open_tree("releases")?,
            rollouts: db.open_tree("rollout_records")?,
            rollout_devices: db.open_tree("rollout_devices")?,
            rollout_samples: db.open_tree("rollout_samples")?,
            directives: db.open_tree("directives")?,
            reports: db.open_tree("reports")?,
            events: db.open_tree("events")?,
            device_events: db.open_tree("device_events")?,
            db,
            flush_requested: Default::default(),
            flush_done: Default::default(),
            flush_lock: tokio::sync::Mutex::new(()),
            gate: std::sync::RwLock::new(()),
        })
    }

    /// Taken by every write (shared).
    pub(crate) fn gate(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Holds every write of this store until dropped: sled 0.34.7 has no
    /// point-in-time snapshot (its iterators see concurrent writes), so a
    /// consistent backup copies while writes wait (`crate::ops_store`).
    pub(crate) fn pause_writes(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.gate
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The sled database (for `crate::ops_store`, which keeps its own trees in it).
    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    fn update_record<M: Message + Default>(
        tree: &sled::Tree,
        key: &[u8],
        what: &'static str,
        f: &mut dyn FnMut(&mut M) -> bool,
    ) -> StoreResult<Option<M>> {
        loop {
            let Some(old) = tree.get(key)? else {
                return Ok(None);
            };
            let mut record: M = decode(&old, what)?;
            if !f(&mut record) {
                return Ok(Some(record));
            }
            let new = record.encode_to_vec();
            if tree.compare_and_swap(key, Some(&old), Some(new))?.is_ok() {
                return Ok(Some(record));
            }
        }
    }

    fn insert_new(tree: &sled::Tree, key: &[u8], value: Vec<u8>) -> StoreResult<bool> {
        Ok(tree
            .compare_and_swap(key, None as Option<&[u8]>, Some(value))?
            .is_ok())
    }

    fn all<M: Message + Default>(tree: &sled::Tree, what: &'static str) -> StoreResult<Vec<M>> {
        tree.iter().values().map(|v| decode(&v?, what)).collect()
    }
}

impl Store for SledStore {
    fn trust_chain(&self) -> StoreResult<Vec<pb::TrustRootRecord>> {
        Self::all(&self.trust_roots, "trust root")
    }

    fn append_trust_root(&self, version: u32, record: &pb::TrustRootRecord) -> StoreResult<bool> {
        let _gate = self.gate();
        Self::insert_new(
            &self.trust_roots,
            &version.to_be_bytes(),
            record.encode_to_vec(),
        )
    }

    fn insert_device(&self, record: &DeviceRecord) -> StoreResult<bool> {
        let _gate = self.gate();
        Self::insert_new(
            &self.devices,
            record.device_id.as_bytes(),
            record.encode_to_vec(),
        )
    }

    fn device(&self, id: &DeviceId) -> StoreResult<Option<DeviceRecord>> {
        self.devices
            .get(id.as_str())?
            .map(|v| decode(&v, "device"))
            .transpose()
    }

    fn update_device(
        &self,
        id: &DeviceId,
        f: &mut dyn FnMut(&mut DeviceRecord) -> bool,
    ) -> StoreResult<Option<DeviceRecord>> {
        let _gate = self.gate();
        Self::update_record(&self.devices, id.as_str().as_bytes(), "device", f)
    }

    fn list_devices(
        &self,
        after: Option<&DeviceId>,
        limit: usize,
        filter: &mut dyn FnMut(&DeviceRecord) -> bool,
    ) -> StoreResult<Vec<DeviceRecord>> {
        use std::ops::Bound;
        let start = match after {
            Some(a) => Bound::Excluded(a.as_str().as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in self.devices.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            if out.len() >= limit {
                break;
            }
            let record: DeviceRecord = decode(&item?.1, "device")?;
            if filter(&record) {
                out.push(record);
            }
        }
        Ok(out)
    }

    fn insert_devices(&self, records: &[DeviceRecord]) -> StoreResult<Vec<DeviceId>> {
        let _gate = self.gate();
        use sled::transaction::ConflictableTransactionError as Abort;
        let existing = self.devices.transaction(|t| {
            let mut existing = Vec::new();
            for r in records {
                if t.get(r.device_id.as_bytes())?.is_some() {
                    let id = DeviceId::new(&r.device_id)
                        .map_err(|_| Abort::Abort(StoreError::Corrupt("device id")))?;
                    existing.push(id);
                }
            }
            if existing.is_empty() {
                for r in records {
                    t.insert(r.device_id.as_bytes(), r.encode_to_vec())?;
                }
            }
            Ok(existing)
        })?;
        Ok(existing)
    }

    fn put_product(&self, record: &pb::ProductInfo) -> StoreResult<()> {
        let _gate = self.gate();
        self.products
            .insert(record.product.as_bytes(), record.encode_to_vec())?;
        Ok(())
    }

    fn product(&self, product: &str) -> StoreResult<Option<pb::ProductInfo>> {
        self.products
            .get(product.as_bytes())?
            .map(|v| decode(&v, "product"))
            .transpose()
    }

    fn list_products(&self) -> StoreResult<Vec<pb::ProductInfo>> {
        Self::all(&self.products, "product")
    }

    fn insert_token(&self, record: &TokenRecord) -> StoreResult<()> {
        let _gate = self.gate();
        self.tokens.insert(&record.hash, record.encode_to_vec())?;
        self.token_ids
            .insert(record.token_id.as_bytes(), record.hash.as_slice())?;
        Ok(())
    }

    fn token_by_hash(&self, hash: &Digest) -> StoreResult<Option<TokenRecord>> {
        self.tokens
            .get(hash.as_bytes())?
            .map(|v| decode(&v, "token"))
            .transpose()
    }

    fn revoke_token(&self, token_id: &str) -> StoreResult<Option<TokenRecord>> {
        let _gate = self.gate();
        let Some(hash) = self.token_ids.get(token_id.as_bytes())? else {
            return Ok(None);
        };
        Self::update_record(&self.tokens, &hash, "token", &mut |t: &mut TokenRecord| {
            let changed = !t.revoked;
            t.revoked = true;
            changed
        })
    }

    fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        let mut tokens: Vec<TokenRecord> = Self::all(&self.tokens, "token")?;
        tokens.sort_by(|a, b| a.token_id.cmp(&b.token_id));
        Ok(tokens)
    }

    fn commit_release(&self, id: &ReleaseId, record: &ReleaseRecord) -> StoreResult<bool> {
        let _gate = self.gate();
        Self::insert_new(
            &self.releases,
            id.as_str().as_bytes(),
            record.encode_to_vec(),
        )
    }

    fn release(&self, id: &ReleaseId) -> StoreResult<Option<ReleaseRecord>> {
        self.releases
            .get(id.as_str())?
            .map(|v| decode(&v, "release"))
            .transpose()
    }

    fn list_releases(&self) -> StoreResult<Vec<ReleaseRecord>> {
        Self::all(&self.releases, "release")
    }

    fn insert_rollout(&self, record: &RolloutRecord) -> StoreResult<bool> {
        let _gate = self.gate();
        Self::insert_new(
            &self.rollouts,
            record.id().as_bytes(),
            record.encode_to_vec(),
        )
    }

    fn list_rollouts(&self) -> StoreResult<Vec<RolloutRecord>> {
        Self::all(&self.rollouts, "rollout")
    }

    fn save_rollout(
        &self,
        rollout: &str,
        record: Option<&RolloutRecord>,
        devices: &[(DeviceId, RolloutDeviceRecord)],
    ) -> StoreResult<()> {
        let _gate = self.gate();
        use sled::Transactional as _;
        // The common case, one device at a check-in: a plain insert. A sled
        // batch takes the tree's global write lock, which waits for the
        // background flusher and showed up in the check-in's tail latency.
        if let (None, [(id, rec)]) = (record, devices) {
            self.rollout_devices.insert(
                pair_key(rollout, id.as_str().as_bytes()),
                rec.encode_to_vec(),
            )?;
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (id, rec) in devices {
            batch.insert(
                pair_key(rollout, id.as_str().as_bytes()),
                rec.encode_to_vec(),
            );
        }
        match record {
            None => self.rollout_devices.apply_batch(batch)?,
            Some(record) => {
                let value = record.encode_to_vec();
                (&self.rollouts, &self.rollout_devices).transaction(|(r, d)| {
                    r.insert(rollout.as_bytes(), value.as_slice())?;
                    d.apply_batch(&batch)?;
                    Ok::<_, sled::transaction::ConflictableTransactionError<StoreError>>(())
                })?;
            }
        }
        Ok(())
    }

    fn rollout_devices(&self, rollout: &str) -> StoreResult<Vec<(DeviceId, RolloutDeviceRecord)>> {
        let prefix = pair_key(rollout, &[]);
        self.rollout_devices
            .scan_prefix(&prefix)
            .map(|item| {
                let (k, v) = item?;
                let id = std::str::from_utf8(&k[prefix.len()..])
                    .ok()
                    .and_then(|s| DeviceId::new(s).ok())
                    .ok_or(StoreError::Corrupt("rollout device key"))?;
                Ok((id, decode(&v, "rollout device")?))
            })
            .collect()
    }

    fn append_rollout_sample(
        &self,
        rollout: &str,
        sample: &pb::RolloutSample,
        drop_oldest: usize,
    ) -> StoreResult<()> {
        let _gate = self.gate();
        let mut order = [0u8; 16];
        order[..8].copy_from_slice(&sample.time.to_be_bytes());
        order[8..].copy_from_slice(&self.db.generate_id()?.to_be_bytes());
        let mut batch = sled::Batch::default();
        batch.insert(pair_key(rollout, &order), sample.encode_to_vec());
        for key in self
            .rollout_samples
            .scan_prefix(pair_key(rollout, &[]))
            .keys()
            .take(drop_oldest)
        {
            batch.remove(key?);
        }
        self.rollout_samples.apply_batch(batch)?;
        Ok(())
    }

    fn rollout_samples(
        &self,
        rollout: &str,
        since: u64,
        limit: usize,
    ) -> StoreResult<Vec<pb::RolloutSample>> {
        let start = pair_key(rollout, &since.to_be_bytes());
        let end = pair_key(rollout, &[0xff; 17]);
        let limit = if limit == 0 { usize::MAX } else { limit };
        let mut out = self
            .rollout_samples
            .range(start..end)
            .values()
            .rev()
            .take(limit)
            .map(|v| decode(&v?, "rollout sample"))
            .collect::<StoreResult<Vec<pb::RolloutSample>>>()?;
        out.reverse();
        Ok(out)
    }

    fn rollout_sample_count(&self, rollout: &str) -> StoreResult<usize> {
        let mut n = 0;
        for key in self
            .rollout_samples
            .scan_prefix(pair_key(rollout, &[]))
            .keys()
        {
            key?;
            n += 1;
        }
        Ok(n)
    }

    fn put_directive(&self, record: &DirectiveRecord) -> StoreResult<()> {
        let _gate = self.gate();
        let key = pair_key(&record.device_id, record.release_id.as_bytes());
        self.directives.insert(key, record.encode_to_vec())?;
        Ok(())
    }

    fn directive(
        &self,
        device: &DeviceId,
        release: &ReleaseId,
    ) -> StoreResult<Option<DirectiveRecord>> {
        let key = pair_key(device.as_str(), release.as_str().as_bytes());
        self.directives
            .get(key)?
            .map(|v| decode(&v, "directive"))
            .transpose()
    }

    fn report_seen(&self, device: &DeviceId, report: &ReportId) -> StoreResult<bool> {
        Ok(self
            .reports
            .contains_key(pair_key(device.as_str(), report.as_bytes()))?)
    }

    fn mark_report(&self, device: &DeviceId, report: &ReportId) -> StoreResult<()> {
        let _gate = self.gate();
        self.reports
            .insert(pair_key(device.as_str(), report.as_bytes()), &[])?;
        Ok(())
    }

    fn append_event(&self, event: &mut pb::Event) -> StoreResult<()> {
        let _gate = self.gate();
        // Start at 1 so that 0 keeps meaning "no event".
        event.seq = self.db.generate_id()? + 1;
        let seq = event.seq.to_be_bytes();
        self.events.insert(seq, event.encode_to_vec())?;
        if !event.device_id.is_empty() {
            self.device_events
                .insert(pair_key(&event.device_id, &seq), &[])?;
        }
        Ok(())
    }

    fn device_events(&self, device: &DeviceId, limit: usize) -> StoreResult<Vec<pb::Event>> {
        let prefix = pair_key(device.as_str(), &[]);
        let mut out = Vec::new();
        for key in self
            .device_events
            .scan_prefix(&prefix)
            .keys()
            .rev()
            .take(limit)
        {
            let key = key?;
            if let Some(v) = self.events.get(&key[prefix.len()..])? {
                out.push(decode(&v, "event")?);
            }
        }
        out.reverse();
        Ok(out)
    }

    fn flush(&self) -> FlushFuture<'_> {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            // Writes made before this ticket precede any flush that starts after it.
            let ticket = self.flush_requested.fetch_add(1, SeqCst) + 1;
            let _guard = self.flush_lock.lock().await;
            if self.flush_done.load(SeqCst) >= ticket {
                return Ok(());
            }
            let covered = self.flush_requested.load(SeqCst);
            let db = self.db.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => rt
                    .spawn_blocking(move || db.flush())
                    .await
                    .map_err(|e| StoreError::Backend(format!("flush task: {e}")))??,
                Err(_) => db.flush()?,
            };
            self.flush_done.fetch_max(covered, SeqCst);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(time: u64, stage: u32) -> pb::RolloutSample {
        pb::RolloutSample {
            time,
            state: pb::RolloutState::Active as i32,
            current_stage: stage,
            counts: Vec::new(),
        }
    }

    #[test]
    fn rollout_samples_sort_by_time_drop_the_oldest_and_stay_per_rollout() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        // Two samples in one second keep their order; "r" and "r2" do not mix.
        for (t, stage) in [(100, 0), (100, 1), (250, 2), (300, 3)] {
            store
                .append_rollout_sample("r", &sample(t, stage), 0)
                .unwrap();
        }
        store
            .append_rollout_sample("r2", &sample(50, 9), 0)
            .unwrap();
        let stages =
            |v: Vec<pb::RolloutSample>| -> Vec<u32> { v.iter().map(|s| s.current_stage).collect() };
        assert_eq!(
            stages(store.rollout_samples("r", 0, 0).unwrap()),
            [0, 1, 2, 3]
        );
        assert_eq!(stages(store.rollout_samples("r", 101, 0).unwrap()), [2, 3]);
        assert_eq!(stages(store.rollout_samples("r", 0, 2).unwrap()), [2, 3]);
        assert_eq!(stages(store.rollout_samples("r2", 0, 0).unwrap()), [9]);
        assert_eq!(store.rollout_sample_count("r").unwrap(), 4);
        assert!(store.rollout_samples("nope", 0, 0).unwrap().is_empty());

        // Appending with drop_oldest = 2 keeps the newest three.
        store
            .append_rollout_sample("r", &sample(400, 4), 2)
            .unwrap();
        assert_eq!(stages(store.rollout_samples("r", 0, 0).unwrap()), [2, 3, 4]);
        assert_eq!(store.rollout_sample_count("r").unwrap(), 3);
        assert_eq!(store.rollout_sample_count("r2").unwrap(), 1);
    }
}
