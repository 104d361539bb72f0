//! The PostgreSQL schema as numbered migrations, applied in order by
//! `aloft-server migrate` and checked by every server at start
//! ([`check`]): a server never runs on a schema it was not built for, and
//! never changes one by itself (replicas of two versions can share a
//! database during a rolling upgrade only if the operator migrated first).
//!
//! A migration is applied in one transaction that also records its version
//! in `aloft_schema`; two `migrate` runs at once conflict on that row and
//! the loser rolls back. Migrations are never edited once released: a
//! change is a new migration.

use deadpool_postgres::GenericClient;

use crate::store::{StoreError, StoreResult};

/// One schema step.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
    /// Work in Rust after the SQL, in the same transaction.
    then: Option<Then>,
}

/// Data a migration rewrites in Rust (SQL cannot read the prost records).
#[derive(Clone, Copy)]
enum Then {
    /// Fill the attribute columns of every device from its record.
    DeviceColumns,
}

/// Every migration, oldest first.
const MIGRATIONS: &[Migration] = &[
    Migration {
    version: 1,
    name: "tables of the store and the operations store",
    sql: "
        CREATE SEQUENCE aloft_ids START 1;
        CREATE TABLE trust_roots (version BIGINT PRIMARY KEY, record BYTEA NOT NULL);
        CREATE TABLE devices (device_id TEXT PRIMARY KEY, record BYTEA NOT NULL);
        CREATE TABLE products (product TEXT PRIMARY KEY, record BYTEA NOT NULL);
        CREATE TABLE tokens (
            hash BYTEA PRIMARY KEY,
            token_id TEXT NOT NULL UNIQUE,
            record BYTEA NOT NULL
        );
        CREATE TABLE releases (release_id TEXT PRIMARY KEY, record BYTEA NOT NULL);
        CREATE TABLE rollouts (rollout_id TEXT PRIMARY KEY, record BYTEA NOT NULL);
        CREATE TABLE rollout_devices (
            rollout_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            record BYTEA NOT NULL,
            PRIMARY KEY (rollout_id, device_id)
        );
        CREATE TABLE rollout_samples (
            rollout_id TEXT NOT NULL,
            time BIGINT NOT NULL,
            seq BIGINT NOT NULL,
            record BYTEA NOT NULL,
            PRIMARY KEY (rollout_id, time, seq)
        );
        CREATE TABLE directives (
            device_id TEXT NOT NULL,
            release_id TEXT NOT NULL,
            record BYTEA NOT NULL,
            PRIMARY KEY (device_id, release_id)
        );
        CREATE TABLE reports (
            device_id TEXT NOT NULL,
            report_id BYTEA NOT NULL,
            PRIMARY KEY (device_id, report_id)
        );
        CREATE TABLE events (seq BIGINT PRIMARY KEY, device_id TEXT NOT NULL, record BYTEA NOT NULL);
        CREATE INDEX events_by_device ON events (device_id, seq);
        CREATE TABLE webhooks (webhook_id TEXT PRIMARY KEY, record BYTEA NOT NULL);
        CREATE TABLE webhook_outbox (
            webhook_id TEXT NOT NULL,
            delivery_id BIGINT NOT NULL,
            record BYTEA NOT NULL,
            PRIMARY KEY (webhook_id, delivery_id)
        );
        CREATE TABLE webhook_stats (webhook_id TEXT PRIMARY KEY, record BYTEA NOT NULL);
        CREATE TABLE audit (seq BIGINT PRIMARY KEY, record BYTEA NOT NULL);
        CREATE TABLE audit_heads (seq BIGINT PRIMARY KEY, record BYTEA NOT NULL);
    ",
        then: None,
    },
    Migration {
        version: 2,
        name: "device attribute columns and their indexes, for device lists",
        // No index on anything a check-in changes, so a check-in's update
        // stays a heap-only (HOT) update that touches no index.
        sql: "
        ALTER TABLE devices ADD COLUMN product TEXT NOT NULL DEFAULT '';
        ALTER TABLE devices ADD COLUMN hardware TEXT NOT NULL DEFAULT '';
        ALTER TABLE devices ADD COLUMN region TEXT NOT NULL DEFAULT '';
        ALTER TABLE devices ADD COLUMN time_zone TEXT NOT NULL DEFAULT '';
        ALTER TABLE devices ADD COLUMN tags TEXT[] NOT NULL DEFAULT '{}';
        ALTER TABLE devices ADD COLUMN test_device BOOLEAN NOT NULL DEFAULT false;
        CREATE INDEX devices_by_product ON devices (product, device_id);
        CREATE INDEX devices_by_hardware ON devices (hardware, device_id);
        CREATE INDEX devices_by_region ON devices (region, device_id);
        CREATE INDEX devices_by_time_zone ON devices (time_zone, device_id);
        CREATE INDEX devices_by_test ON devices (test_device, device_id);
        CREATE INDEX devices_by_tag ON devices USING GIN (tags);
    ",
        then: Some(Then::DeviceColumns),
    },
];

/// The schema version this build runs on.
pub fn current_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

const CREATE_SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS aloft_schema (
    version INT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

/// The highest applied version (0: none; `None`: no `aloft_schema` table).
async fn applied<C: GenericClient>(c: &C) -> StoreResult<Option<i32>> {
    let exists = c
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'aloft_schema'",
            &[],
        )
        .await?
        .get::<_, i64>(0)
        > 0;
    if !exists {
        return Ok(None);
    }
    let v: Option<i32> = c
        .query_one("SELECT max(version) FROM aloft_schema", &[])
        .await?
        .get(0);
    Ok(Some(v.unwrap_or(0)))
}

/// Refuses a database whose schema is not [`current_version`].
pub(crate) async fn check<C: GenericClient>(c: &C) -> StoreResult<()> {
    let found = applied(c).await?.unwrap_or(0);
    if found == current_version() {
        Ok(())
    } else {
        Err(StoreError::Schema {
            found,
            expected: current_version(),
        })
    }
}

/// What [`migrate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migrated {
    /// The version before.
    pub from: i32,
    /// The version now.
    pub to: i32,
    /// Names of the migrations applied, in order.
    pub applied: Vec<String>,
}

/// Applies every migration the database lacks; refuses a database newer
/// than this build.
pub async fn migrate(client: &mut deadpool_postgres::Object) -> StoreResult<Migrated> {
    migrate_to(client, current_version()).await
}

/// Applies the migrations the database lacks up to `target` (tests build
/// an older schema with it, to check what a later migration does to data).
async fn migrate_to(client: &mut deadpool_postgres::Object, target: i32) -> StoreResult<Migrated> {
    client.batch_execute(CREATE_SCHEMA_TABLE).await?;
    let from = applied(&*client).await?.unwrap_or(0);
    if from > current_version() {
        return Err(StoreError::Schema {
            found: from,
            expected: current_version(),
        });
    }
    let mut done = Vec::new();
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version > from && m.version <= target)
    {
        let tx = client.transaction().await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        tx.execute(
            "INSERT INTO aloft_schema (version, name, applied_at) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &now],
        )
        .await?;
        tx.batch_execute(m.sql).await?;
        match m.then {
            Some(Then::DeviceColumns) => fill_device_columns(&tx).await?,
            None => {}
        }
        tx.commit().await?;
        done.push(format!("{}: {}", m.version, m.name));
    }
    Ok(Migrated {
        from,
        to: target.max(from),
        applied: done,
    })
}

/// [`Then::DeviceColumns`].
async fn fill_device_columns(tx: &deadpool_postgres::Transaction<'_>) -> StoreResult<()> {
    use prost::Message as _;
    let rows = tx
        .query("SELECT device_id, record FROM devices", &[])
        .await?;
    let update = tx
        .prepare(
            "UPDATE devices SET product = $2, hardware = $3, region = $4, time_zone = $5, \
             tags = $6, test_device = $7 WHERE device_id = $1",
        )
        .await?;
    for row in rows {
        let id: String = row.get(0);
        let record = crate::store::DeviceRecord::decode(row.get::<_, &[u8]>(1))
            .map_err(|_| StoreError::Corrupt("device"))?;
        let c = crate::pg_store::DeviceColumns::of(&record);
        tx.execute(
            &update,
            &[
                &id,
                &c.product,
                &c.hardware,
                &c.region,
                &c.time_zone,
                &c.tags,
                &c.test,
            ],
        )
        .await?;
    }
    Ok(())
}

impl crate::pg_store::PgStore {
    /// Connects to `url` and applies the migrations it lacks.
    pub fn migrate(url: &str) -> StoreResult<Migrated> {
        Self::migrate_to(url, current_version())
    }

    /// Connects to `url` and applies the migrations it lacks up to
    /// `version` (for tests of a migration's data changes).
    pub fn migrate_to(url: &str, version: i32) -> StoreResult<Migrated> {
        let store = Self::open_unchecked(url)?;
        let pool = store.pool().clone();
        store.run(async move {
            let mut client = pool.get().await?;
            migrate_to(&mut client, version).await
        })
    }
}
