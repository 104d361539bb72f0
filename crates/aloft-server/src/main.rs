//! The `aloft-server` binary: `aloft-server --data DIR --listen ADDR
//! [--tls-cert F --tls-key F | --insecure-plaintext] [OPTIONS]`; `--help`
//! lists every option with its default, the limits under their own heading.
//!
//! Logs go to stderr, coloured only when stderr is a terminal and
//! `NO_COLOR` is not set (<https://no-color.org>): a log file or a pipe gets
//! plain text. Start-up failures print `error: ...` with what to do, and
//! exit 1; usage errors exit 2.

use std::ffi::OsStr;
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aloft_server::{ServerConfig, ServerError, TlsFiles};

mod ops_cli;
use anyhow::{Context as _, bail};
use clap::Parser;

/// Aloft's OTA server.
#[derive(Parser, Debug)]
#[command(version, about, after_help = ops_cli::AFTER_HELP)]
struct Args {
    /// Data directory (store, keys, admin token); created if missing. Make
    /// its directive key with `cargo xtask keys --server-data DIR` before
    /// the first start, so the TrustRoot can list it.
    #[arg(long = "data", value_name = "DIR")]
    data: PathBuf,
    /// Where records live: `sled` (embedded, under --data; the default) or
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE, whose schema
    /// `aloft-server migrate --store URL` creates first. Keys, the admin
    /// token and (by default) payloads stay under --data either way.
    #[arg(
        long,
        value_name = "STORE",
        env = "ALOFT_STORE",
        default_value = "sled"
    )]
    store: aloft_server::StoreBackend,
    /// Address to listen on, IP:PORT, e.g. 127.0.0.1:7443 or 0.0.0.0:7443.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    listen: SocketAddr,
    /// Also serve the browser dashboard on this address, IP:PORT (same TLS
    /// as --listen; port 0 picks a free port). Sign in with an operator token.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    web: Option<SocketAddr>,
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
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    hello_timeout_secs: u64,
    /// Server-wide pacing cap: devices offered an update and not yet finished,
    /// across all rollouts (0 = no cap). Devices over it are told to check in later.
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_concurrent_downloads: u32,
    /// How often rollouts advance by themselves (soak, silent devices, health
    /// gate), in ms (at least 10).
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = parse_tick_ms)]
    rollout_tick_ms: u64,
    /// Least time between two history samples of a rollout whose counts changed
    /// (state and stage changes are sampled at once), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    rollout_sample_secs: u64,
    /// An offer with no report for this long is withdrawn, freeing its pacing slot (0 = never).
    #[arg(long, value_name = "SECS", default_value_t = 86_400)]
    offer_timeout_secs: u64,
    /// Largest per-device jitter added to suggested check-in times, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    check_in_jitter_secs: u64,
    /// A device with this many rollbacks within --rollback-window-secs is
    /// suspected broken (0 = never for rollbacks).
    #[arg(long, value_name = "N", default_value_t = 2)]
    broken_after_rollbacks: u32,
    /// Look-back for counting a device's rollbacks, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 7 * 86_400)]
    rollback_window_secs: u64,
    /// A device that took an update, was seen for less than this after it and
    /// has been silent as long since, is suspected broken (0 = never), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    silent_after_secs: u64,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    payloads: aloft_server::payloads::PayloadArgs,
    #[command(flatten)]
    ops: ops_cli::OpsArgs,
}

/// What one client may hold or ask for: each refusal keeps the server
/// serving everyone else (threat 25).
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Limits")]
struct LimitArgs {
    /// A connection must finish its TLS handshake and send the HTTP/2
    /// preface within this many seconds of being accepted.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    handshake_timeout_secs: u64,
    /// Open connections at most, in total (0 = no cap).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_connections: usize,
    /// Open connections from one source address at most (0 = no cap).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_connections_per_address: usize,
    /// Concurrent HTTP/2 streams (calls) one connection may open.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_streams_per_connection: u32,
    /// Device sessions between their challenge and an accepted hello at once;
    /// more are refused with a suggested retry delay.
    #[arg(long, value_name = "N", default_value_t = 2048)]
    max_pending_hellos: usize,
    /// Concurrent download streams.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_downloads: usize,
    /// Admin requests per second each operator token may make, sustained
    /// (0 = no limit); over it, RESOURCE_EXHAUSTED with a retry delay.
    #[arg(long, value_name = "N", default_value_t = 50)]
    admin_rate: u32,
    /// Admin requests a token may make at once above --admin-rate.
    #[arg(long, value_name = "N", default_value_t = 200)]
    admin_burst: u32,
    /// Largest gRPC message on the device service, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024)]
    max_device_message_bytes: usize,
    /// Largest gRPC message on the admin service (each upload part), in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_admin_message_bytes: usize,
    /// Largest release payload accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    max_payload_bytes: u64,
    /// On SIGTERM or Ctrl-C, how long calls in flight may finish before every
    /// connection is closed, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    shutdown_grace_secs: u64,
    /// Oldest device registration request accepted, by the time the device
    /// made it, in seconds (a station imports requests within this time).
    #[arg(long, value_name = "SECS", default_value_t = 7 * 86_400)]
    registration_max_age_secs: u64,
}

impl LimitArgs {
    /// Applies the flags to `limits`.
    fn apply(&self, limits: &mut aloft_server::Limits) {
        use std::time::Duration;
        limits.connections.handshake_timeout = Duration::from_secs(self.handshake_timeout_secs);
        limits.connections.max_connections = self.max_connections;
        limits.connections.max_per_address = self.max_connections_per_address;
        limits.max_streams_per_connection = self.max_streams_per_connection;
        limits.max_pending_hellos = self.max_pending_hellos;
        limits.max_downloads = self.max_downloads;
        limits.admin_rate.per_second = self.admin_rate;
        limits.admin_rate.burst = self.admin_burst;
        limits.max_device_message = self.max_device_message_bytes;
        limits.max_admin_message = self.max_admin_message_bytes;
        limits.max_payload_len = self.max_payload_bytes;
        limits.shutdown_grace = Duration::from_secs(self.shutdown_grace_secs);
        limits.registration_max_age = Duration::from_secs(self.registration_max_age_secs);
    }
}

/// `--listen`: an IP address and a port.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        if text.trim().bytes().all(|b| b.is_ascii_digit()) {
            format!(
                "{text:?} is only a port: give IP:PORT, e.g. 127.0.0.1:{text} or 0.0.0.0:{text}"
            )
        } else {
            format!(
                "{text:?} is not IP:PORT (e.g. 127.0.0.1:7443, 0.0.0.0:7443 or [::1]:7443; host \
                 names such as localhost are not accepted)"
            )
        }
    })
}

/// `--rollout-tick-ms`: at least 10.
fn parse_tick_ms(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(ms) if ms >= 10 => Ok(ms),
        Ok(ms) => Err(format!("{ms} ms is too short: at least 10")),
        Err(_) => Err(format!("{text:?} is not a number of milliseconds")),
    }
}

/// Whether log lines get ANSI colours: only on a terminal, and not when
/// `NO_COLOR` is set to anything but the empty string.
fn log_colour(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

fn main() -> ExitCode {
    if let Some(code) = ops_cli::run_if_command() {
        return code;
    }
    // Usage errors (exit 2) before anything is logged.
    let args = Args::parse();
    ops_cli::init_logging(
        args.ops.log_format,
        log_colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes joined with `: `, leaving out a cause whose text
/// an outer message already includes.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => {
            check_pem(
                &cert,
                "--tls-cert",
                "CERTIFICATE-----",
                "a PEM certificate chain",
            )?;
            check_pem(&key, "--tls-key", "PRIVATE KEY-----", "a PEM private key")?;
            Some(TlsFiles { cert, key })
        }
        _ if args.insecure_plaintext => {
            tracing::warn!("serving WITHOUT TLS (--insecure-plaintext): for local tests only");
            None
        }
        _ => bail!(
            "refusing to start without TLS: pass --tls-cert FILE --tls-key FILE (`cargo xtask keys \
             --out DIR` makes DIR/server.pem and DIR/server.key), or --insecure-plaintext for local tests"
        ),
    };
    std::fs::create_dir_all(&args.data).with_context(|| {
        format!(
            "could not create the data directory {} (--data)",
            args.data.display()
        )
    })?;
    let data = args.data.clone();
    let listen = args.listen;
    let payloads = args.payloads.config()?;
    let mut config = ServerConfig::new(args.data, args.listen);
    config.payloads = payloads;
    config.store = args.store;
    let web_scheme = if tls.is_some() { "https" } else { "http" };
    config.tls = tls;
    config.web = args.web;
    args.ops.apply(&mut config)?;
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
    args.limits.apply(&mut config.limits);
    let server = match aloft_server::start(config).await {
        Ok(server) => server,
        Err(e) => {
            let hint = start_hint(&e, &data, listen);
            let err = anyhow::Error::new(e).context("starting the server");
            match hint {
                Some(hint) => bail!("{}\n  hint: {hint}", error_text(&err)),
                None => return Err(err),
            }
        }
    };
    println!("aloft-server listening on {}", server.local_addr());
    if let Some(metrics) = server.metrics_addr() {
        println!("aloft-server metrics on http://{metrics}/metrics");
    }
    if let Some(web) = server.web_addr() {
        println!("aloft-server dashboard on {web_scheme}://{web}/");
    }
    shutdown_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await.context("shutting down")?;
    Ok(())
}

/// Refuses a TLS file that cannot be read or is not the PEM it should be,
/// before the data directory is touched.
fn check_pem(path: &Path, flag: &str, marker: &str, what: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read {flag} {}", path.display()))?;
    if !text.contains(marker) {
        bail!(
            "{flag} {} is not {what}: pass the server's certificate as --tls-cert and its key as \
             --tls-key (`cargo xtask keys --out DIR` makes DIR/server.pem and DIR/server.key)",
            path.display()
        );
    }
    Ok(())
}

/// What to do about a failed start, for the failures people run into.
fn start_hint(e: &ServerError, data: &Path, listen: SocketAddr) -> Option<String> {
    use std::io::ErrorKind;
    let text = e.to_string();
    Some(match e {
        ServerError::Bind { source, .. } if source.kind() == ErrorKind::AddrInUse => format!(
            "another process listens on {listen}: stop it, or pass another --listen (port 0 \
             lets the system choose)"
        ),
        ServerError::Bind { source, .. } if source.kind() == ErrorKind::AddrNotAvailable => {
            format!(
                "{} is not an address of this machine: use 127.0.0.1, 0.0.0.0 or one of its own",
                listen.ip()
            )
        }
        ServerError::Store(_) if text.contains("could not acquire lock") => format!(
            "another aloft-server is using the data directory {}: stop it, or give this one \
             its own --data",
            data.display()
        ),
        ServerError::Tls { .. } => {
            "check that --tls-cert holds the certificate chain and --tls-key \
                                its matching private key"
                .to_owned()
        }
        _ => return None,
    })
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn parse(extra: &[&str]) -> Args {
        let mut argv = vec!["aloft-server", "--data", "d", "--listen", "127.0.0.1:0"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    /// The defaults `--help` shows are the server's defaults.
    #[test]
    fn limit_flags_default_to_the_servers_limits() {
        let mut limits = aloft_server::Limits::default();
        let before = format!("{limits:?}");
        parse(&[]).limits.apply(&mut limits);
        assert_eq!(format!("{limits:?}"), before);
    }

    #[test]
    fn limit_flags_reach_the_limits_and_are_listed_under_their_heading() {
        let mut limits = aloft_server::Limits::default();
        parse(&[
            "--max-connections",
            "7",
            "--max-connections-per-address",
            "3",
            "--handshake-timeout-secs",
            "2",
            "--admin-rate",
            "0",
            "--shutdown-grace-secs",
            "1",
        ])
        .limits
        .apply(&mut limits);
        assert_eq!(limits.connections.max_connections, 7);
        assert_eq!(limits.connections.max_per_address, 3);
        assert_eq!(limits.connections.handshake_timeout.as_secs(), 2);
        assert_eq!(limits.admin_rate.per_second, 0);
        assert_eq!(limits.shutdown_grace.as_secs(), 1);
        let help = Args::command().render_long_help().to_string();
        let limits_at = help.find("Limits:").expect("a Limits heading");
        for flag in [
            "--handshake-timeout-secs",
            "--max-connections",
            "--max-connections-per-address",
            "--max-streams-per-connection",
            "--max-pending-hellos",
            "--max-downloads",
            "--admin-rate",
            "--admin-burst",
            "--max-device-message-bytes",
            "--max-admin-message-bytes",
            "--max-payload-bytes",
            "--shutdown-grace-secs",
            "--registration-max-age-secs",
        ] {
            let at = help
                .find(&format!("{flag} <"))
                .unwrap_or_else(|| panic!("{flag} in --help"));
            assert!(at > limits_at, "{flag} under Limits");
        }
        assert!(help.contains("[default: 100000]"), "{help}");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(log_colour(true, None));
        assert!(
            log_colour(true, Some(OsStr::new(""))),
            "empty NO_COLOR is unset"
        );
        assert!(!log_colour(true, Some(OsStr::new("1"))));
        assert!(!log_colour(false, None), "a file or a pipe gets plain text");
    }

    #[test]
    fn listen_addresses_say_what_they_need() {
        assert_eq!(
            parse_listen("127.0.0.1:7443").unwrap(),
            "127.0.0.1:7443".parse().unwrap()
        );
        assert!(parse_listen("7443").unwrap_err().contains("127.0.0.1:7443"));
        assert!(
            parse_listen("localhost:7443")
                .unwrap_err()
                .contains("host names")
        );
        assert!(parse_tick_ms("5").unwrap_err().contains("at least 10"));
        assert_eq!(parse_tick_ms("10").unwrap(), 10);
    }

    #[test]
    fn start_failures_name_the_fix() {
        let listen = "127.0.0.1:7443".parse().unwrap();
        let data = Path::new("local/server");
        let hint = start_hint(
            &ServerError::Bind {
                addr: listen,
                source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
            },
            data,
            listen,
        )
        .unwrap();
        assert!(
            hint.contains("another process listens on 127.0.0.1:7443"),
            "{hint}"
        );
        let tls = ServerError::Tls {
            what: "certificate and key".into(),
            source: None,
        };
        let hint = start_hint(&tls, data, listen).unwrap();
        assert!(hint.contains("matching private key"), "{hint}");
        assert_eq!(
            start_hint(&ServerError::Io(std::io::Error::other("x")), data, listen),
            None
        );
    }

    #[test]
    fn causes_are_not_repeated() {
        let inner = std::io::Error::other("lock held");
        let e = anyhow::Error::new(inner)
            .context("store: lock held")
            .context("starting the server");
        assert_eq!(error_text(&e), "starting the server: store: lock held");
    }

    #[test]
    fn cli_definition_is_consistent() {
        Args::command().debug_assert();
    }
}
