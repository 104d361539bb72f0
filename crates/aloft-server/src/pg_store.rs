//! The scale-out backend: [`Store`] and [`OpsStore`] on PostgreSQL (or a
//! wire-compatible engine), through `tokio-postgres` with a `deadpool` pool.
//!
//! **Schema.** Each table keeps the prost-encoded record in `record` beside
//! the key columns it is looked up by; [`crate::pg_schema`] owns the
//! versioned migrations, and [`PgStore::connect`] refuses a database whose
//! schema is not the one this build expects.
//!
//! **Sync facade over an async driver.** The [`Store`] trait is synchronous
//! (the rollout engine calls it under its lock), so each call runs as one
//! task on a private two-thread runtime that owns the pool and its
//! connections, and the caller waits for the answer: one loopback round trip
//! on the calling thread, as sled's calls block on its page cache and disk.
//! The private runtime means a caller on any runtime flavour (or none)
//! cannot deadlock the driver. Making the trait async removes the wait.
//!
//! **Atomicity without held locks.** Read-modify-write
//! ([`Store::update_device`]) reads the record, applies the closure on the
//! caller's thread, and writes it back only if the stored bytes are still
//! the ones read (`UPDATE ... WHERE record = $old`), retrying otherwise: the
//! same compare-and-swap the sled backend uses, with no transaction open
//! while the closure runs. Multi-record writes are single transactions.
//!
//! **Durability.** A statement is durable when it returns (PostgreSQL's
//! default `synchronous_commit = on`), so [`Store::flush`] has nothing to do.
//!
//! **SQL.** Plain types (`TEXT`, `BYTEA`, `BIGINT`), primary keys and
//! secondary indexes, `INSERT ... ON CONFLICT DO NOTHING`, `ON CONFLICT ...
//! DO UPDATE`, one sequence: the subset CockroachDB and YugabyteDB document
//! as supported (see ARCHITECTURE.md for what was checked).

use std::future::Future;
use std::str::FromStr as _;
use std::time::Duration;

use aloft_protocol::pb;
use aloft_protocol::{DeviceId, Digest, ReleaseId};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use prost::Message;
use tokio_postgres::NoTls;

use crate::ops_store::{
    DeliveryRecord, OpsStore, SnapshotSink, SnapshotStats, WebhookRecord, WebhookStatsRecord,
};
use crate::store::{
    DeviceQuery, DeviceRecord, DirectiveRecord, FlushFuture, ReleaseRecord, ReportId,
    RolloutDeviceRecord, RolloutRecord, Store, StoreError, StoreResult, TokenRecord,
};

/// Connections the pool keeps at most.
const POOL_SIZE: usize = 16;
/// How long a call waits for a free connection, or to open one, before it
/// fails as unavailable.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// [`Store`] and [`OpsStore`] on PostgreSQL. See the module docs.
pub struct PgStore {
    pool: Pool,
    /// `Some` until dropped (a runtime cannot be dropped inside another's
    /// context, so `Drop` shuts it down in the background).
    rt: Option<tokio::runtime::Runtime>,
    /// What `describe` shows (the URL without its password).
    shown: String,
    /// The stored bytes of devices read or written lately: the expected
    /// value of an update's first compare-and-swap, which then needs no
    /// read (a hello reads the device, then updates it). Only ever a guess:
    /// a stale entry makes that swap miss and the update read as usual.
    recent: std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>,
}

/// Entries of [`PgStore::recent`] at most (it starts again empty when full).
const RECENT_DEVICES: usize = 8192;

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("db", &self.shown).finish()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn decode<M: Message + Default>(bytes: &[u8], what: &'static str) -> StoreResult<M> {
    M::decode(bytes).map_err(|_| StoreError::Corrupt(what))
}

/// The URL as safe to log: the password replaced.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = &url[s + 3..at];
            match user.split_once(':') {
                Some((name, _)) => format!("{}{name}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/db`) and
    /// checks the schema version; [`crate::pg_schema::migrate`] creates or
    /// upgrades it.
    pub fn connect(url: &str) -> StoreResult<Self> {
        let store = Self::open_unchecked(url)?;
        store.run(async move { Ok(()) })?;
        let pool = store.pool.clone();
        store.run(async move {
            let client = pool.get().await?;
            crate::pg_schema::check(&client).await
        })?;
        Ok(store)
    }

    /// Opens the pool without checking the schema (for `migrate`).
    pub(crate) fn open_unchecked(url: &str) -> StoreResult<Self> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Config(format!("{}: {e}", redact(url))))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("aloft-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("postgres runtime: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Self {
            pool,
            rt: Some(rt),
            shown: redact(url),
            recent: Default::default(),
        })
    }

    fn remember(&self, id: &str, bytes: &[u8]) {
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() >= RECENT_DEVICES {
            recent.clear();
        }
        recent.insert(id.to_owned(), bytes.to_vec());
    }

    fn recalled(&self, id: &str) -> Option<Vec<u8>> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id)
    }

    /// The connection pool.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The database, for logs (no password).
    pub fn describe(&self) -> &str {
        &self.shown
    }

    /// Runs `fut` on the private runtime and waits for it.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = StoreResult<T>> + Send + 'static,
    ) -> StoreResult<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let rt = self.rt.as_ref().expect("runtime lives until drop");
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| StoreError::Backend("the postgres task ended".into()))?
    }

    /// Runs `f` with a pooled connection on the private runtime.
    fn with<T, F, Fut>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = StoreResult<T>> + Send,
    {
        let pool = self.pool.clone();
        self.run(async move { f(pool.get().await?).await })
    }

    /// One optional `record` column.
    fn get_record<M: Message + Default>(
        &self,
        sql: &'static str,
        key: Vec<u8>,
        text_key: Option<String>,
        what: &'static str,
    ) -> StoreResult<Option<M>> {
        let bytes = self.with(move |c| async move {
            let st = c.prepare_cached(sql).await?;
            let row = match &text_key {
                Some(k) => c.query_opt(&st, &[k]).await?,
                None => c.query_opt(&st, &[&key]).await?,
            };
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })?;
        bytes.map(|b| decode(&b, what)).transpose()
    }

    /// Every `record` of a query without parameters.
    fn all<M: Message + Default>(
        &self,
        sql: &'static str,
        what: &'static str,
    ) -> StoreResult<Vec<M>> {
        let rows = self.with(move |c| async move {
            let st = c.prepare_cached(sql).await?;
            Ok(c.query(&st, &[])
                .await?
                .into_iter()
                .map(|r| r.get::<_, Vec<u8>>(0))
                .collect::<Vec<_>>())
        })?;
        rows.iter().map(|b| decode(b, what)).collect()
    }

    /// Executes one statement with text and bytes parameters; rows changed.
    fn exec(&self, sql: &'static str, params: Vec<Param>) -> StoreResult<u64> {
        self.with(move |c| async move {
            let st = c.prepare_cached(sql).await?;
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(Param::as_sql).collect();
            Ok(c.execute(&st, &refs).await?)
        })
    }

    /// Compare-and-swap read-modify-write of one `record` (see the module
    /// docs and [`Cas`]).
    fn update_record<M: Message + Default>(
        &self,
        cas: Cas<'_, M>,
        f: &mut dyn FnMut(&mut M) -> bool,
    ) -> StoreResult<Option<M>> {
        let Cas {
            select,
            update,
            key,
            what,
            extra,
            mut guess,
            written,
        } = cas;
        loop {
            let k = key.clone();
            let guessed = guess.is_some();
            let old: Option<Vec<u8>> = match guess.take() {
                Some(bytes) => Some(bytes),
                None => self.with(move |c| async move {
                    let st = c.prepare_cached(select).await?;
                    Ok(c.query_opt(&st, &[k.as_sql()])
                        .await?
                        .map(|r| r.get::<_, Vec<u8>>(0)))
                })?,
            };
            let Some(old) = old else {
                return Ok(None);
            };
            let mut record: M = decode(&old, what)?;
            if !f(&mut record) {
                if guessed {
                    // Nothing to write, but the guess may be stale: read.
                    continue;
                }
                return Ok(Some(record));
            }
            let new = record.encode_to_vec();
            let mut params = vec![key.clone(), Param::Bytes(new.clone()), Param::Bytes(old)];
            params.extend(extra(&record));
            if self.exec(update, params)? == 1 {
                written(&new);
                return Ok(Some(record));
            }
        }
    }
}

/// One table's compare-and-swap update ([`PgStore::update_record`]).
struct Cas<'a, M> {
    /// Reads `record` by the key (`$1`).
    select: &'static str,
    /// Takes the key, the new and the old record, then what `extra` makes
    /// of the new record; changes one row only if the old one is stored.
    update: &'static str,
    key: Param,
    what: &'static str,
    extra: &'a dyn Fn(&M) -> Vec<Param>,
    /// The bytes the record probably has (the first swap tries them).
    guess: Option<Vec<u8>>,
    /// Told the bytes written.
    written: &'a dyn Fn(&[u8]),
}

/// An owned statement parameter (the calls run on another thread).
#[derive(Clone, Debug)]
enum Param {
    Text(String),
    Bytes(Vec<u8>),
    Int(i64),
    Bool(bool),
    Texts(Vec<String>),
}

impl Param {
    fn as_sql(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Param::Text(s) => s,
            Param::Bytes(b) => b,
            Param::Int(i) => i,
            Param::Bool(b) => b,
            Param::Texts(v) => v,
        }
    }
}

/// A device's attributes as the indexed columns of `devices` hold them
/// (migration 2), written with every device record.
pub(crate) struct DeviceColumns {
    pub(crate) product: String,
    pub(crate) hardware: String,
    pub(crate) region: String,
    pub(crate) time_zone: String,
    pub(crate) tags: Vec<String>,
    pub(crate) test: bool,
}

impl DeviceColumns {
    pub(crate) fn of(record: &DeviceRecord) -> Self {
        let a = record.attributes.clone().unwrap_or_default();
        Self {
            product: a.product,
            hardware: a.hardware,
            region: a.region,
            time_zone: a.time_zone,
            tags: a.tags,
            test: a.test_device,
        }
    }

    /// As parameters in column order.
    fn params(self) -> Vec<Param> {
        vec![
            Param::Text(self.product),
            Param::Text(self.hardware),
            Param::Text(self.region),
            Param::Text(self.time_zone),
            Param::Texts(self.tags),
            Param::Bool(self.test),
        ]
    }
}

/// The indexed column of a selector field.
fn column(field: aloft_rollout::IndexedField) -> &'static str {
    use aloft_rollout::IndexedField as F;
    match field {
        F::Product => "product",
        F::Hardware => "hardware",
        F::Region => "region",
        F::Tz => "time_zone",
        F::Tag => "tags",
        F::Id => "device_id",
    }
}

fn text(s: &str) -> Param {
    Param::Text(s.to_owned())
}

fn int(v: u64) -> Param {
    Param::Int(v as i64)
}

impl Store for PgStore {
    fn trust_chain(&self) -> StoreResult<Vec<pb::TrustRootRecord>> {
        self.all(
            "SELECT record FROM trust_roots ORDER BY version",
            "trust root",
        )
    }

    fn append_trust_root(&self, version: u32, record: &pb::TrustRootRecord) -> StoreResult<bool> {
        let n = self.exec(
            "INSERT INTO trust_roots (version, record) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            vec![int(version.into()), Param::Bytes(record.encode_to_vec())],
        )?;
        Ok(n == 1)
    }

    fn insert_device(&self, record: &DeviceRecord) -> StoreResult<bool> {
        let mut params = vec![
            text(&record.device_id),
            Param::Bytes(record.encode_to_vec()),
        ];
        params.extend(DeviceColumns::of(record).params());
        let n = self.exec(
            "INSERT INTO devices (device_id, record, product, hardware, region, time_zone, tags, \
             test_device) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            params,
        )?;
        Ok(n == 1)
    }

    fn device(&self, id: &DeviceId) -> StoreResult<Option<DeviceRecord>> {
        let key = id.as_str().to_owned();
        let bytes: Option<Vec<u8>> = self.with(move |c| async move {
            let st = c
                .prepare_cached("SELECT record FROM devices WHERE device_id = $1")
                .await?;
            Ok(c.query_opt(&st, &[&key]).await?.map(|r| r.get(0)))
        })?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        let record = decode(&bytes, "device")?;
        self.remember(id.as_str(), &bytes);
        Ok(Some(record))
    }

    fn update_device(
        &self,
        id: &DeviceId,
        f: &mut dyn FnMut(&mut DeviceRecord) -> bool,
    ) -> StoreResult<Option<DeviceRecord>> {
        let cas = Cas {
            select: "SELECT record FROM devices WHERE device_id = $1",
            update: "UPDATE devices SET record = $2, product = $4, hardware = $5, region = $6, \
                     time_zone = $7, tags = $8, test_device = $9 \
                     WHERE device_id = $1 AND record = $3",
            key: text(id.as_str()),
            what: "device",
            extra: &|d| DeviceColumns::of(d).params(),
            guess: self.recalled(id.as_str()),
            written: &|bytes| self.remember(id.as_str(), bytes),
        };
        self.update_record(cas, f)
    }

    fn list_devices(
        &self,
        after: Option<&DeviceId>,
        limit: usize,
        filter: &mut dyn FnMut(&DeviceRecord) -> bool,
    ) -> StoreResult<Vec<DeviceRecord>> {
        self.query_devices(after, limit, &DeviceQuery::default(), filter)
    }

    fn query_devices(
        &self,
        after: Option<&DeviceId>,
        limit: usize,
        query: &DeviceQuery,
        filter: &mut dyn FnMut(&DeviceRecord) -> bool,
    ) -> StoreResult<Vec<DeviceRecord>> {
        // The terms become indexed conditions; the filter (a closure) runs
        // here on what they let through, read in id order in batches until
        // `limit` pass it or nothing is left.
        const BATCH: i64 = 500;
        let mut sql = String::from("SELECT device_id, record FROM devices WHERE device_id > $1");
        let mut terms = Vec::new();
        for term in &query.terms {
            let n = terms.len() + 3;
            match term {
                aloft_rollout::Term::AnyOf(aloft_rollout::IndexedField::Tag, tags) => {
                    sql.push_str(&format!(" AND tags && ${n}"));
                    terms.push(Param::Texts(tags.clone()));
                }
                aloft_rollout::Term::AnyOf(field, values) => {
                    sql.push_str(&format!(" AND {} = ANY(${n})", column(*field)));
                    terms.push(Param::Texts(values.clone()));
                }
                aloft_rollout::Term::Test(b) => {
                    sql.push_str(&format!(" AND test_device = ${n}"));
                    terms.push(Param::Bool(*b));
                }
            }
        }
        sql.push_str(" ORDER BY device_id LIMIT $2");
        let mut out = Vec::new();
        let mut cursor = after.map(|a| a.as_str().to_owned()).unwrap_or_default();
        while out.len() < limit {
            let mut params = vec![Param::Text(cursor.clone()), Param::Int(BATCH)];
            params.extend(terms.iter().cloned());
            let sql = sql.clone();
            let rows: Vec<(String, Vec<u8>)> = self.with(move |c| async move {
                let st = c.prepare_cached(&sql).await?;
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(Param::as_sql).collect();
                Ok(c.query(&st, &refs)
                    .await?
                    .into_iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect())
            })?;
            let done = (rows.len() as i64) < BATCH;
            for (id, bytes) in rows {
                cursor = id;
                let record: DeviceRecord = decode(&bytes, "device")?;
                if filter(&record) {
                    out.push(record);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            if done {
                break;
            }
        }
        Ok(out)
    }

    fn insert_devices(&self, records: &[DeviceRecord]) -> StoreResult<Vec<DeviceId>> {
        let rows: Vec<(String, Vec<u8>, DeviceColumns)> = records
            .iter()
            .map(|r| (r.device_id.clone(), r.encode_to_vec(), DeviceColumns::of(r)))
            .collect();
        let existing: Vec<String> = self.with(move |mut c| async move {
            let tx = c.transaction().await?;
            let ids: Vec<&str> = rows.iter().map(|(id, _, _)| id.as_str()).collect();
            let taken: Vec<String> = tx
                .query(
                    "SELECT device_id FROM devices WHERE device_id = ANY($1) ORDER BY device_id",
                    &[&ids],
                )
                .await?
                .into_iter()
                .map(|r| r.get(0))
                .collect();
            if !taken.is_empty() {
                return Ok(taken);
            }
            // One statement per device, pipelined on the connection (sent
            // without waiting for each answer), 1,000 at a time. A
            // concurrent insert of one of the ids fails its statement
            // (primary key), and so the whole batch.
            let st = tx
                .prepare_cached(
                    "INSERT INTO devices (device_id, record, product, hardware, region, \
                     time_zone, tags, test_device) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .await?;
            for batch in rows.chunks(1000) {
                type Sql<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);
                let params: Vec<[Sql<'_>; 8]> = batch
                    .iter()
                    .map(|(id, bytes, c)| -> [Sql<'_>; 8] {
                        [
                            id,
                            bytes,
                            &c.product,
                            &c.hardware,
                            &c.region,
                            &c.time_zone,
                            &c.tags,
                            &c.test,
                        ]
                    })
                    .collect();
                let inserts = params.iter().map(|p| tx.execute(&st, p));
                for done in futures_util::future::join_all(inserts).await {
                    done?;
                }
            }
            tx.commit().await?;
            Ok(Vec::new())
        })?;
        existing
            .iter()
            .map(|id| DeviceId::new(id).map_err(|_| StoreError::Corrupt("device id")))
            .collect()
    }

    fn put_product(&self, record: &pb::ProductInfo) -> StoreResult<()> {
        self.exec(
            "INSERT INTO products (product, record) VALUES ($1, $2) \
             ON CONFLICT (product) DO UPDATE SET record = excluded.record",
            vec![text(&record.product), Param::Bytes(record.encode_to_vec())],
        )?;
        Ok(())
    }

    fn product(&self, product: &str) -> StoreResult<Option<pb::ProductInfo>> {
        self.get_record(
            "SELECT record FROM products WHERE product = $1",
            Vec::new(),
            Some(product.to_owned()),
            "product",
        )
    }

    fn list_products(&self) -> StoreResult<Vec<pb::ProductInfo>> {
        self.all("SELECT record FROM products ORDER BY product", "product")
    }

    fn insert_token(&self, record: &TokenRecord) -> StoreResult<()> {
        self.exec(
            "INSERT INTO tokens (hash, token_id, record) VALUES ($1, $2, $3) \
             ON CONFLICT (hash) DO UPDATE SET token_id = excluded.token_id, record = excluded.record",
            vec![
                Param::Bytes(record.hash.clone()),
                text(&record.token_id),
                Param::Bytes(record.encode_to_vec()),
            ],
        )?;
        Ok(())
    }

    fn token_by_hash(&self, hash: &Digest) -> StoreResult<Option<TokenRecord>> {
        self.get_record(
            "SELECT record FROM tokens WHERE hash = $1",
            hash.as_bytes().to_vec(),
            None,
            "token",
        )
    }

    fn revoke_token(&self, token_id: &str) -> StoreResult<Option<TokenRecord>> {
        let cas = Cas {
            select: "SELECT record FROM tokens WHERE token_id = $1",
            update: "UPDATE tokens SET record = $2 WHERE token_id = $1 AND record = $3",
            key: text(token_id),
            what: "token",
            extra: &|_| Vec::new(),
            guess: None,
            written: &|_| {},
        };
        self.update_record(cas, &mut |t: &mut TokenRecord| {
            let changed = !t.revoked;
            t.revoked = true;
            changed
        })
    }

    fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.all("SELECT record FROM tokens ORDER BY token_id", "token")
    }

    fn commit_release(&self, id: &ReleaseId, record: &ReleaseRecord) -> StoreResult<bool> {
        let n = self.exec(
            "INSERT INTO releases (release_id, record) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            vec![text(id.as_str()), Param::Bytes(record.encode_to_vec())],
        )?;
        Ok(n == 1)
    }

    fn release(&self, id: &ReleaseId) -> StoreResult<Option<ReleaseRecord>> {
        self.get_record(
            "SELECT record FROM releases WHERE release_id = $1",
            Vec::new(),
            Some(id.as_str().to_owned()),
            "release",
        )
    }

    fn list_releases(&self) -> StoreResult<Vec<ReleaseRecord>> {
        self.all("SELECT record FROM releases ORDER BY release_id", "release")
    }

    fn insert_rollout(&self, record: &RolloutRecord) -> StoreResult<bool> {
        let n = self.exec(
            "INSERT INTO rollouts (rollout_id, record) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            vec![text(record.id()), Param::Bytes(record.encode_to_vec())],
        )?;
        Ok(n == 1)
    }

    fn list_rollouts(&self) -> StoreResult<Vec<RolloutRecord>> {
        self.all("SELECT record FROM rollouts ORDER BY rollout_id", "rollout")
    }

    fn save_rollout(
        &self,
        rollout: &str,
        record: Option<&RolloutRecord>,
        devices: &[(DeviceId, RolloutDeviceRecord)],
    ) -> StoreResult<()> {
        const UPSERT_DEVICE: &str = "INSERT INTO rollout_devices (rollout_id, device_id, record) \
             VALUES ($1, $2, $3) ON CONFLICT (rollout_id, device_id) \
             DO UPDATE SET record = excluded.record";
        let rollout = rollout.to_owned();
        let record = record.map(Message::encode_to_vec);
        let devices: Vec<(String, Vec<u8>)> = devices
            .iter()
            .map(|(id, r)| (id.as_str().to_owned(), r.encode_to_vec()))
            .collect();
        // One device at a check-in: one statement, no transaction.
        if record.is_none() && devices.len() == 1 {
            let (id, bytes) = devices.into_iter().next().expect("one device");
            self.exec(
                UPSERT_DEVICE,
                vec![Param::Text(rollout), Param::Text(id), Param::Bytes(bytes)],
            )?;
            return Ok(());
        }
        self.with(move |mut c| async move {
            let tx = c.transaction().await?;
            if let Some(record) = &record {
                tx.execute(
                    "INSERT INTO rollouts (rollout_id, record) VALUES ($1, $2) \
                     ON CONFLICT (rollout_id) DO UPDATE SET record = excluded.record",
                    &[&rollout, record],
                )
                .await?;
            }
            // Batches of rows per statement: a rollout over a large fleet
            // writes its device table in few round trips.
            for batch in devices.chunks(1000) {
                let ids: Vec<&str> = batch.iter().map(|(id, _)| id.as_str()).collect();
                let records: Vec<&[u8]> = batch.iter().map(|(_, r)| r.as_slice()).collect();
                tx.execute(
                    "INSERT INTO rollout_devices (rollout_id, device_id, record) \
                     SELECT $1, d, r FROM unnest($2::TEXT[], $3::BYTEA[]) AS t (d, r) \
                     ON CONFLICT (rollout_id, device_id) DO UPDATE SET record = excluded.record",
                    &[&rollout, &ids, &records],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn rollout_devices(&self, rollout: &str) -> StoreResult<Vec<(DeviceId, RolloutDeviceRecord)>> {
        let rollout = rollout.to_owned();
        let rows: Vec<(String, Vec<u8>)> = self.with(move |c| async move {
            let st = c
                .prepare_cached(
                    "SELECT device_id, record FROM rollout_devices WHERE rollout_id = $1 \
                     ORDER BY device_id",
                )
                .await?;
            Ok(c.query(&st, &[&rollout])
                .await?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })?;
        rows.into_iter()
            .map(|(id, bytes)| {
                let id =
                    DeviceId::new(&id).map_err(|_| StoreError::Corrupt("rollout device key"))?;
                Ok((id, decode(&bytes, "rollout device")?))
            })
            .collect()
    }

    fn append_rollout_sample(
        &self,
        rollout: &str,
        sample: &pb::RolloutSample,
        drop_oldest: usize,
    ) -> StoreResult<()> {
        let rollout = rollout.to_owned();
        let time = sample.time as i64;
        let bytes = sample.encode_to_vec();
        let drop = drop_oldest as i64;
        self.with(move |mut c| async move {
            let tx = c.transaction().await?;
            tx.execute(
                "INSERT INTO rollout_samples (rollout_id, time, seq, record) \
                 VALUES ($1, $2, nextval('aloft_ids'), $3)",
                &[&rollout, &time, &bytes],
            )
            .await?;
            if drop > 0 {
                tx.execute(
                    "DELETE FROM rollout_samples WHERE rollout_id = $1 AND (time, seq) IN \
                     (SELECT time, seq FROM rollout_samples WHERE rollout_id = $1 \
                      ORDER BY time, seq LIMIT $2)",
                    &[&rollout, &drop],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn rollout_samples(
        &self,
        rollout: &str,
        since: u64,
        limit: usize,
    ) -> StoreResult<Vec<pb::RolloutSample>> {
        let rollout = rollout.to_owned();
        let since = since as i64;
        let limit = if limit == 0 { i64::MAX } else { limit as i64 };
        let rows: Vec<Vec<u8>> = self.with(move |c| async move {
            let st = c
                .prepare_cached(
                    "SELECT record FROM rollout_samples WHERE rollout_id = $1 AND time >= $2 \
                     ORDER BY time DESC, seq DESC LIMIT $3",
                )
                .await?;
            Ok(c.query(&st, &[&rollout, &since, &limit])
                .await?
                .into_iter()
                .map(|r| r.get(0))
                .collect())
        })?;
        rows.iter()
            .rev()
            .map(|b| decode(b, "rollout sample"))
            .collect()
    }

    fn rollout_sample_count(&self, rollout: &str) -> StoreResult<usize> {
        let rollout = rollout.to_owned();
        let n: i64 = self.with(move |c| async move {
            let st = c
                .prepare_cached("SELECT count(*) FROM rollout_samples WHERE rollout_id = $1")
                .await?;
            Ok(c.query_one(&st, &[&rollout]).await?.get(0))
        })?;
        Ok(n as usize)
    }

    fn put_directive(&self, record: &DirectiveRecord) -> StoreResult<()> {
        self.exec(
            "INSERT INTO directives (device_id, release_id, record) VALUES ($1, $2, $3) \
             ON CONFLICT (device_id, release_id) DO UPDATE SET record = excluded.record",
            vec![
                text(&record.device_id),
                text(&record.release_id),
                Param::Bytes(record.encode_to_vec()),
            ],
        )?;
        Ok(())
    }

    fn directive(
        &self,
        device: &DeviceId,
        release: &ReleaseId,
    ) -> StoreResult<Option<DirectiveRecord>> {
        let (d, r) = (device.as_str().to_owned(), release.as_str().to_owned());
        let bytes: Option<Vec<u8>> = self.with(move |c| async move {
            let st = c
                .prepare_cached(
                    "SELECT record FROM directives WHERE device_id = $1 AND release_id = $2",
                )
                .await?;
            Ok(c.query_opt(&st, &[&d, &r]).await?.map(|row| row.get(0)))
        })?;
        bytes.map(|b| decode(&b, "directive")).transpose()
    }

    fn report_seen(&self, device: &DeviceId, report: &ReportId) -> StoreResult<bool> {
        let (d, r) = (device.as_str().to_owned(), report.as_bytes().to_vec());
        self.with(move |c| async move {
            let st = c
                .prepare_cached("SELECT 1 FROM reports WHERE device_id = $1 AND report_id = $2")
                .await?;
            Ok(c.query_opt(&st, &[&d, &r]).await?.is_some())
        })
    }

    fn mark_report(&self, device: &DeviceId, report: &ReportId) -> StoreResult<()> {
        self.exec(
            "INSERT INTO reports (device_id, report_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            vec![
                text(device.as_str()),
                Param::Bytes(report.as_bytes().to_vec()),
            ],
        )?;
        Ok(())
    }

    fn append_event(&self, event: &mut pb::Event) -> StoreResult<()> {
        let device = event.device_id.clone();
        let mut stored = event.clone();
        let seq: i64 = self.with(move |c| async move {
            let seq: i64 = c
                .query_one("SELECT nextval('aloft_ids')", &[])
                .await?
                .get(0);
            // Start at 1 so that 0 keeps meaning "no event" (the sequence does).
            stored.seq = seq as u64;
            let st = c
                .prepare_cached("INSERT INTO events (seq, device_id, record) VALUES ($1, $2, $3)")
                .await?;
            c.execute(&st, &[&seq, &device, &stored.encode_to_vec()])
                .await?;
            Ok(seq)
        })?;
        event.seq = seq as u64;
        Ok(())
    }

    fn device_events(&self, device: &DeviceId, limit: usize) -> StoreResult<Vec<pb::Event>> {
        let d = device.as_str().to_owned();
        let limit = limit as i64;
        let rows: Vec<Vec<u8>> = self.with(move |c| async move {
            let st = c
                .prepare_cached(
                    "SELECT record FROM events WHERE device_id = $1 ORDER BY seq DESC LIMIT $2",
                )
                .await?;
            Ok(c.query(&st, &[&d, &limit])
                .await?
                .into_iter()
                .map(|r| r.get(0))
                .collect())
        })?;
        rows.iter().rev().map(|b| decode(b, "event")).collect()
    }

    fn flush(&self) -> FlushFuture<'_> {
        // Every statement is durable when it returns (see the module docs).
        Box::pin(async { Ok(()) })
    }
}

impl OpsStore for PgStore {
    fn generate_id(&self) -> StoreResult<u64> {
        let id: i64 = self.with(|c| async move {
            Ok(c.query_one("SELECT nextval('aloft_ids')", &[])
                .await?
                .get(0))
        })?;
        Ok(id as u64)
    }

    fn insert_webhook(&self, record: &WebhookRecord) -> StoreResult<bool> {
        let n = self.exec(
            "INSERT INTO webhooks (webhook_id, record) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            vec![
                text(&record.webhook_id),
                Param::Bytes(record.encode_to_vec()),
            ],
        )?;
        Ok(n == 1)
    }

    fn webhooks(&self) -> StoreResult<Vec<WebhookRecord>> {
        self.all("SELECT record FROM webhooks ORDER BY webhook_id", "webhook")
    }

    fn remove_webhook(&self, id: &str) -> StoreResult<Option<WebhookRecord>> {
        let id = id.to_owned();
        let old: Option<Vec<u8>> = self.with(move |mut c| async move {
            let tx = c.transaction().await?;
            let old = tx
                .query_opt(
                    "DELETE FROM webhooks WHERE webhook_id = $1 RETURNING record",
                    &[&id],
                )
                .await?
                .map(|r| r.get::<_, Vec<u8>>(0));
            if old.is_some() {
                tx.execute("DELETE FROM webhook_outbox WHERE webhook_id = $1", &[&id])
                    .await?;
                tx.execute("DELETE FROM webhook_stats WHERE webhook_id = $1", &[&id])
                    .await?;
            }
            tx.commit().await?;
            Ok(old)
        })?;
        old.map(|b| decode(&b, "webhook")).transpose()
    }

    fn enqueue(&self, items: &[(String, u64, DeliveryRecord)]) -> StoreResult<()> {
        if items.is_empty() {
            return Ok(());
        }
        let rows: Vec<(String, i64, Vec<u8>)> = items
            .iter()
            .map(|(w, id, d)| (w.clone(), *id as i64, d.encode_to_vec()))
            .collect();
        self.with(move |mut c| async move {
            let tx = c.transaction().await?;
            let st = tx
                .prepare_cached(
                    "INSERT INTO webhook_outbox (webhook_id, delivery_id, record) \
                     VALUES ($1, $2, $3) ON CONFLICT (webhook_id, delivery_id) \
                     DO UPDATE SET record = excluded.record",
                )
                .await?;
            for (w, id, bytes) in &rows {
                tx.execute(&st, &[w, id, bytes]).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn next_delivery(&self, webhook: &str) -> StoreResult<Option<(u64, DeliveryRecord)>> {
        let w = webhook.to_owned();
        let row: Option<(i64, Vec<u8>)> = self.with(move |c| async move {
            let st = c
                .prepare_cached(
                    "SELECT delivery_id, record FROM webhook_outbox WHERE webhook_id = $1 \
                     ORDER BY delivery_id LIMIT 1",
                )
                .await?;
            Ok(c.query_opt(&st, &[&w]).await?.map(|r| (r.get(0), r.get(1))))
        })?;
        row.map(|(id, b)| Ok((id as u64, decode(&b, "delivery")?)))
            .transpose()
    }

    fn queued(&self, webhook: &str) -> StoreResult<u64> {
        let w = webhook.to_owned();
        let n: i64 = self.with(move |c| async move {
            let st = c
                .prepare_cached("SELECT count(*) FROM webhook_outbox WHERE webhook_id = $1")
                .await?;
            Ok(c.query_one(&st, &[&w]).await?.get(0))
        })?;
        Ok(n as u64)
    }

    fn retry_later(
        &self,
        webhook: &str,
        id: u64,
        delivery: &DeliveryRecord,
        stats: &WebhookStatsRecord,
    ) -> StoreResult<()> {
        let (w, id) = (webhook.to_owned(), id as i64);
        let (d, s) = (delivery.encode_to_vec(), stats.encode_to_vec());
        self.with(move |mut c| async move {
            let tx = c.transaction().await?;
            tx.execute(
                "UPDATE webhook_outbox SET record = $3 WHERE webhook_id = $1 AND delivery_id = $2",
                &[&w, &id, &d],
            )
            .await?;
            put_stats(&tx, &w, &s).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn finish(&self, webhook: &str, id: u64, stats: &WebhookStatsRecord) -> StoreResult<()> {
        let (w, id, s) = (webhook.to_owned(), id as i64, stats.encode_to_vec());
        self.with(move |mut c| async move {
            let tx = c.transaction().await?;
            tx.execute(
                "DELETE FROM webhook_outbox WHERE webhook_id = $1 AND delivery_id = $2",
                &[&w, &id],
            )
            .await?;
            put_stats(&tx, &w, &s).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn webhook_stats(&self, webhook: &str) -> StoreResult<WebhookStatsRecord> {
        Ok(self
            .get_record(
                "SELECT record FROM webhook_stats WHERE webhook_id = $1",
                Vec::new(),
                Some(webhook.to_owned()),
                "webhook stats",
            )?
            .unwrap_or_default())
    }

    fn put_webhook_stats(&self, webhook: &str, stats: &WebhookStatsRecord) -> StoreResult<()> {
        let (w, s) = (webhook.to_owned(), stats.encode_to_vec());
        self.with(move |c| async move { put_stats(&c, &w, &s).await })
    }

    fn append_audit(&self, seq: u64, bytes: &[u8]) -> StoreResult<()> {
        self.exec(
            "INSERT INTO audit (seq, record) VALUES ($1, $2) \
             ON CONFLICT (seq) DO UPDATE SET record = excluded.record",
            vec![int(seq), Param::Bytes(bytes.to_vec())],
        )?;
        Ok(())
    }

    fn audit_records(&self, after: u64, limit: usize) -> StoreResult<Vec<(u64, Vec<u8>)>> {
        let (after, limit) = (after as i64, limit as i64);
        let rows: Vec<(i64, Vec<u8>)> = self.with(move |c| async move {
            let st = c
                .prepare_cached(
                    "SELECT seq, record FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .await?;
            Ok(c.query(&st, &[&after, &limit])
                .await?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })?;
        Ok(rows.into_iter().map(|(s, b)| (s as u64, b)).collect())
    }

    fn last_audit(&self) -> StoreResult<Option<(u64, Vec<u8>)>> {
        let row: Option<(i64, Vec<u8>)> = self.with(|c| async move {
            let st = c
                .prepare_cached("SELECT seq, record FROM audit ORDER BY seq DESC LIMIT 1")
                .await?;
            Ok(c.query_opt(&st, &[]).await?.map(|r| (r.get(0), r.get(1))))
        })?;
        Ok(row.map(|(s, b)| (s as u64, b)))
    }

    fn put_audit_head(&self, seq: u64, head: &pb::SignedEnvelope) -> StoreResult<()> {
        self.exec(
            "INSERT INTO audit_heads (seq, record) VALUES ($1, $2) \
             ON CONFLICT (seq) DO UPDATE SET record = excluded.record",
            vec![int(seq), Param::Bytes(head.encode_to_vec())],
        )?;
        Ok(())
    }

    fn audit_heads(&self) -> StoreResult<Vec<pb::SignedEnvelope>> {
        self.all("SELECT record FROM audit_heads ORDER BY seq", "audit head")
    }

    fn snapshot(&self, _sink: &mut SnapshotSink<'_>) -> StoreResult<SnapshotStats> {
        Err(StoreError::Unsupported(
            "a PostgreSQL store is backed up with PostgreSQL's own tools (pg_dump, or \
             continuous archiving); `aloft-server backup` copies the sled store only",
        ))
    }
}

async fn put_stats<C: deadpool_postgres::GenericClient>(
    c: &C,
    webhook: &str,
    stats: &[u8],
) -> StoreResult<()> {
    c.execute(
        "INSERT INTO webhook_stats (webhook_id, record) VALUES ($1, $2) \
         ON CONFLICT (webhook_id) DO UPDATE SET record = excluded.record",
        &[&webhook, &stats],
    )
    .await?;
    Ok(())
}
