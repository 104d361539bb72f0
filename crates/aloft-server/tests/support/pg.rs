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

/// A PostgreSQL server of one test's own (initdb in a temporary
/// directory, a free loopback port), so the test can kill -9 and restart
/// it without touching the machine's server. Run as the `postgres` user
/// (through setpriv) when the test runs as root, which PostgreSQL refuses.
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    /// `127.0.0.1`.
    pub port: u16,
    /// The process group of the running postmaster and its backends.
    group: Option<std::process::Child>,
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The newest installed PostgreSQL's binaries.
fn pg_bin() -> std::path::PathBuf {
    let mut versions: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's binaries under /usr/lib/postgresql")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().expect("an installed PostgreSQL with initdb")
}

/// `program args` as the postgres user when root (setpriv executes it in
/// place, so the child is the program itself).
fn as_owner(program: &std::path::Path) -> std::process::Command {
    if is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        std::process::Command::new(program)
    }
}

impl PrivateCluster {
    /// Creates and starts the cluster (user `postgres`, trust authentication).
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let ok = std::process::Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown the cluster directory to postgres");
        }
        let bin = pg_bin();
        let out = as_owner(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cluster = Self {
            dir,
            bin,
            port,
            group: None,
        };
        cluster.run();
        cluster
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the postmaster on the cluster's port and waits until it
    /// answers (after a crash, again until the killed backends are gone).
    pub fn run(&mut self) {
        use std::os::unix::process::CommandExt as _;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut child = as_owner(&self.bin.join("postgres"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-k",
                ])
                .arg(self.dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(self.dir.path().join("log")).unwrap())
                .process_group(0)
                .spawn()
                .unwrap();
            loop {
                if admin(&self.url(), "SELECT 1".into()).is_ok() {
                    self.group = Some(child);
                    return;
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the private PostgreSQL did not start: {}",
                std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILL to the postmaster and every backend at once (a crash).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.group.take() {
            let _ = std::process::Command::new("kill")
                .args(["-9", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        }
        // Every process of the group is gone once the port refuses.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "PostgreSQL survived kill -9"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.kill9();
    }
}
