//! The `aloft-server` binary: `aloft-server --data DIR --listen ADDR
//! [--tls-cert F --tls-key F | --insecure-plaintext] [--max-concurrent-downloads N]
//! [--rollout-tick-ms MS] [--offer-timeout-secs S] [--check-in-jitter-secs S]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use aloft_server::{ServerConfig, TlsFiles};
use anyhow::{Context as _, bail};
use clap::Parser;

/// Aloft's OTA server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Data directory (store, keys, admin token).
    #[arg(long = "data", value_name = "DIR")]
    data: PathBuf,
    /// Address to listen on, e.g. 0.0.0.0:7443.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// TLS certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve without TLS. Only for local tests: tokens and keys travel in clear.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    insecure_plaintext: bool,
    /// Seconds a device has to answer the session challenge.
    #[arg(long, default_value_t = 10)]
    hello_timeout_secs: u64,
    /// Server-wide pacing cap: devices offered an update and not yet finished,
    /// across all rollouts (0 = no cap). Devices over it are told to check in later.
    #[arg(long, default_value_t = 0)]
    max_concurrent_downloads: u32,
    /// How often rollouts advance by themselves (soak, silent devices, health gate), in ms.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    rollout_tick_ms: u64,
    /// Least time between two history samples of a rollout whose counts changed
    /// (state and stage changes are sampled at once), in seconds.
    #[arg(long, default_value_t = 60)]
    rollout_sample_secs: u64,
    /// An offer with no report for this long is withdrawn, freeing its pacing slot (0 = never).
    #[arg(long, default_value_t = 86_400)]
    offer_timeout_secs: u64,
    /// Largest per-device jitter added to suggested check-in times, in seconds.
    #[arg(long, default_value_t = 300)]
    check_in_jitter_secs: u64,
    /// A device with this many rollbacks within --rollback-window-secs is
    /// suspected broken (0 = never for rollbacks).
    #[arg(long, default_value_t = 2)]
    broken_after_rollbacks: u32,
    /// Look-back for counting a device's rollbacks, in seconds.
    #[arg(long, default_value_t = 7 * 86_400)]
    rollback_window_secs: u64,
    /// A device that took an update, was seen for less than this after it and
    /// has been silent as long since, is suspected broken (0 = never), in seconds.
    #[arg(long, default_value_t = 3600)]
    silent_after_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ if args.insecure_plaintext => {
            tracing::warn!("serving WITHOUT TLS (--insecure-plaintext): for local tests only");
            None
        }
        _ => bail!(
            "refusing to start without TLS: pass --tls-cert FILE --tls-key FILE, or --insecure-plaintext for local tests"
        ),
    };
    let mut config = ServerConfig::new(args.data, args.listen);
    config.tls = tls;
    config.limits.hello_timeout = std::time::Duration::from_secs(args.hello_timeout_secs);
    config.limits.max_concurrent_downloads = args.max_concurrent_downloads;
    config.limits.rollout_tick = std::time::Duration::from_millis(args.rollout_tick_ms);
    config.limits.offer_timeout_secs = args.offer_timeout_secs;
    config.limits.rollout_sample_interval =
        std::time::Duration::from_secs(args.rollout_sample_secs);
    config.limits.check_in_jitter_secs = args.check_in_jitter_secs;
    config.limits.tracking.broken_after_rollbacks = args.broken_after_rollbacks;
    config.limits.tracking.rollback_window_secs = args.rollback_window_secs;
    config.limits.tracking.silent_after_secs = args.silent_after_secs;
    let server = aloft_server::start(config)
        .await
        .context("starting the server")?;
    println!("aloft-server listening on {}", server.local_addr());
    shutdown_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await.context("shutting down")?;
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
