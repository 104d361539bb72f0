//! A fresh PostgreSQL database per test: created on the server named by
//! `$ALOFT_TEST_POSTGRES` (default: the local server every Aloft machine
//! runs, user `postgres`, database `test`), migrated with the server's own
//! migrations, and dropped (with its connections) when the value drops, so
//! tests never see each other's data. `cargo xtask ci` starts PostgreSQL
//! when it is not running.
#![allow(dead_code)]

use std::time::Duration;

/// The server tests connect to unless `$ALOFT_TEST_POSTGRES` says otherwise.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Whether the harness should run its servers on PostgreSQL
/// (`ALOFT_TEST_STORE=postgres`; `cargo xtask ci` runs the server's tests
/// once on each backend).
pub fn selected() -> bool {
    std::env::var("ALOFT_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// A database of one test.
pub struct TestDb {
    /// Its URL, for `--store` / `StoreBackend::Postgres`.
    pub url: String,
    name: String,
    admin: String,
}

fn admin_url() -> String {
    std::env::var("ALOFT_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// Runs `sql` on the admin database, on a thread of its own (callers may
/// be inside a runtime).
fn admin(url: &str, sql: String) -> Result<(), String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let (client, conn) = tokio::time::timeout(
                Duration::from_secs(10),
                tokio_postgres::connect(&url, tokio_postgres::NoTls),
            )
            .await
            .map_err(|_| "timed out connecting".to_owned())?
            .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| format!("{sql}: {e}"))
        })
    })
    .join()
    .map_err(|_| "admin thread panicked".to_owned())?
}

/// Replaces the database name of `url` (its last path segment).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let cut = base
        .rfind('/')
        .filter(|&i| i > "postgres://".len())
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..cut]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl TestDb {
    /// Creates an empty database (no schema).
    pub fn empty() -> Self {
        let admin_url = admin_url();
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "aloft_test_{}_{nanos}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        if let Err(e) = admin(&admin_url, format!("CREATE DATABASE {name}")) {
            panic!(
                "PostgreSQL is needed for this test and is not usable at {admin_url}: {e}. \
                 Start it (`cargo xtask ci` does: pg_ctlcluster ... main start) or point \
                 ALOFT_TEST_POSTGRES at a server where this user may create databases."
            );
        }
        Self {
            url: with_database(&admin_url, &name),
            name,
            admin: admin_url,
        }
    }

    /// Creates a database with the current schema.
    pub fn migrated() -> Self {
        let db = Self::empty();
        aloft_server::pg_store::PgStore::migrate(&db.url).expect("migrate the test database");
        db
    }

    /// Runs SQL on this database (to inspect or damage it).
    pub fn execute(&self, sql: &str) -> Result<(), String> {
        admin(&self.url, sql.to_owned())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = admin(
            &self.admin,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}
