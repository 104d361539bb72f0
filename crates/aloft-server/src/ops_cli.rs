//! The binary's operations flags (metrics, logs, webhooks, audit) and its
//! `backup` and `restore` commands.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};

/// Text after `aloft-server --help`.
pub const AFTER_HELP: &str = "Commands:
  aloft-server backup --server URL --data DIR --out FILE
      a consistent backup of a running server (see `aloft-server backup --help`)
  aloft-server restore FILE --data NEW_DIR
      a new data directory from a backup (see `aloft-server restore --help`)
  aloft-server migrate --store postgres://USER@HOST:PORT/DB
      create or upgrade a PostgreSQL store's schema (see `aloft-server migrate --help`)";

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, every field (device, rollout, ...) a key.
    Json,
}

/// Flags for operating the server.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Operations")]
pub struct OpsArgs {
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address,
    /// IP:PORT, plain HTTP (default: not served). Bind it to a private address.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Log format: text, or json for log shippers.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Sign the audit log's head this often when it moved, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub audit_head_secs: u64,
    /// First webhook retry after this many milliseconds; each later one doubles.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub webhook_retry_base_ms: u64,
    /// Longest wait between webhook retries, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub webhook_retry_max_secs: u64,
    /// Give a webhook delivery up this long after its event, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3 * 86_400)]
    pub webhook_give_up_secs: u64,
    /// One webhook attempt's deadline (connect, TLS, answer), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub webhook_timeout_secs: u64,
    /// Deliveries queued per webhook at most; more events are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub webhook_max_queued: u64,
    /// PEM file of extra CA certificates for https webhook receivers
    /// (default: the system's roots only).
    #[arg(long, value_name = "FILE")]
    pub webhook_ca: Option<PathBuf>,
}

impl OpsArgs {
    /// Applies the flags to the server's configuration.
    pub fn apply(&self, config: &mut aloft_server::ServerConfig) -> anyhow::Result<()> {
        let ops = &mut config.ops;
        ops.metrics = self.metrics;
        ops.audit_head_interval = Duration::from_secs(self.audit_head_secs.max(1));
        let w = &mut ops.webhooks;
        w.retry_base = Duration::from_millis(self.webhook_retry_base_ms.max(1));
        w.retry_max = Duration::from_secs(self.webhook_retry_max_secs.max(1));
        w.give_up_after = Duration::from_secs(self.webhook_give_up_secs);
        w.attempt_timeout = Duration::from_secs(self.webhook_timeout_secs.max(1));
        w.max_queued = self.webhook_max_queued;
        if let Some(path) = &self.webhook_ca {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("could not read --webhook-ca {}", path.display()))?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                anyhow::bail!(
                    "--webhook-ca {} holds no PEM certificate: pass the CA that issued your receivers' certificates",
                    path.display()
                );
            }
            w.extra_ca_pem = Some(pem);
        }
        Ok(())
    }
}

/// Sets up logging to stderr.
pub fn init_logging(format: LogFormat, colour: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(colour).init(),
        // One object per line: the event's fields as keys, the fields of
        // the span it happened in (a session's device id) under "span".
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// `aloft-server backup`.
#[derive(Parser, Debug)]
#[command(
    name = "aloft-server backup",
    about = "Back up a running server: a consistent snapshot of its store, its key files and its payloads"
)]
struct BackupArgs {
    /// The server's admin URL, e.g. https://127.0.0.1:7443.
    #[arg(long, value_name = "URL")]
    server: String,
    /// The server's data directory (its key files and payloads are copied
    /// from here; its admin-token is used unless --token-file is given).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Where to write the backup (0600; it holds the server's keys).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// PEM file of the CA of the server's TLS certificate (https).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// File holding an admin token (default: DIR/admin-token).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// `aloft-server restore`.
#[derive(Parser, Debug)]
#[command(
    name = "aloft-server restore",
    about = "Restore a backup into a new data directory, then start aloft-server --data on it"
)]
struct RestoreArgs {
    /// The backup file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The new data directory (must not exist or be empty).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
}

fn read(path: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("could not read {what} {}", path.display()))
}

/// Runs `backup` or `restore` when the command line starts with one;
/// `None` otherwise (the server runs).
pub fn run_if_command() -> Option<ExitCode> {
    let mut args = std::env::args_os();
    let first = args.nth(1)?;
    let rest = || std::iter::once(first.clone()).chain(std::env::args_os().skip(2));
    let result = match first.to_str()? {
        "backup" => {
            let a = BackupArgs::parse_from(rest());
            run_backup(a)
        }
        "restore" => {
            let a = RestoreArgs::parse_from(rest());
            aloft_server::backup::restore(&a.file, &a.data)
                .map(|s| {
                    println!(
                        "restored {} records, {} payloads and {} key files into {}: start aloft-server --data {}",
                        s.records,
                        s.objects,
                        s.files.len(),
                        a.data.display(),
                        a.data.display()
                    );
                })
                .map_err(anyhow::Error::from)
        }
        "migrate" => {
            let a = MigrateArgs::parse_from(rest());
            run_migrate(&a)
        }
        _ => return None,
    };
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    })
}

/// `aloft-server migrate`.
#[derive(Parser, Debug)]
#[command(
    name = "aloft-server migrate",
    about = "Create or upgrade the schema of a PostgreSQL store (run it before starting servers \
             of a new version; servers refuse a schema that is not theirs)"
)]
struct MigrateArgs {
    /// The database, postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (the
    /// --store of the servers). The user needs the right to create tables.
    #[arg(long, value_name = "URL", env = "ALOFT_STORE")]
    store: String,
}

fn run_migrate(a: &MigrateArgs) -> anyhow::Result<()> {
    let shown = aloft_server::pg_store::redact(&a.store);
    let m = aloft_server::pg_store::PgStore::migrate(&a.store)
        .with_context(|| format!("migrating {shown}"))?;
    if m.applied.is_empty() {
        println!("{shown}: schema already at version {}", m.to);
    } else {
        for step in &m.applied {
            println!("applied migration {step}");
        }
        println!("{shown}: schema at version {} (was {})", m.to, m.from);
    }
    Ok(())
}

fn run_backup(a: BackupArgs) -> anyhow::Result<()> {
    let token_path = a
        .token_file
        .clone()
        .unwrap_or_else(|| a.data.join("admin-token"));
    let token = read(&token_path, "the token file")?;
    let ca = a.ca.as_deref().map(|p| read(p, "--ca")).transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let summary = runtime.block_on(aloft_server::backup::backup(
        &a.server,
        ca.as_deref(),
        &token,
        &a.data,
        &a.out,
    ))?;
    println!(
        "backed up {} records, {} payloads and {} key files ({} bytes) to {}",
        summary.records,
        summary.objects,
        summary.files.len(),
        summary.bytes,
        a.out.display()
    );
    Ok(())
}
