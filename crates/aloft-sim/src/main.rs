//! `aloft-sim`: the fleet simulator. See the library docs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aloft_agent::{AgentConfig, BackoffConfig};
use aloft_protocol::pb;
use aloft_protocol::prost::Message as _;
use aloft_sim::{Identities, SimConfig};
use anyhow::{Context as _, bail};
use clap::Parser;

/// N virtual Aloft devices in one process, each with its own key, identity,
/// device core on simulated NOR flash, and gRPC connection.
#[derive(Debug, Parser)]
#[command(name = "aloft-sim", version)]
struct Args {
    /// Number of virtual devices.
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// Server URL (http:// or https://).
    #[arg(long, env = "ALOFT_SERVER")]
    server: String,
    /// PEM file of the CA to pin for https://.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Admin or operator token: the simulator registers its own devices.
    #[arg(long, env = "ALOFT_TOKEN", conflicts_with = "identities")]
    token: Option<String>,
    /// Directory of identity bundles (`*.pb` or `*/identity.pb`) instead.
    #[arg(long)]
    identities: Option<PathBuf>,
    /// Release bundle of the factory firmware every device has in slot A
    /// (from `cargo xtask release --out FILE`).
    #[arg(long)]
    factory: PathBuf,
    /// Device id prefix for registered devices (default: sim-<random>-).
    #[arg(long, default_value = "")]
    id_prefix: String,
    /// KiB per slot (default: room for twice the factory image).
    #[arg(long)]
    slot_kib: Option<u32>,
    /// Percentage of devices that lose power during their first download.
    #[arg(long, default_value_t = 0.0)]
    power_cut_mid_download: f64,
    /// Percentage of devices whose firmware never confirms a trial image.
    #[arg(long, default_value_t = 0.0)]
    never_confirm: f64,
    /// Stop once every device runs VERSION confirmed (never-confirming
    /// devices: rolled back and reported).
    #[arg(long, value_name = "VERSION")]
    until_updated: Option<String>,
    /// Longest run, in seconds.
    #[arg(long, default_value_t = 300)]
    duration: u64,
    /// Milliseconds a never-confirming trial image runs before the watchdog resets it.
    #[arg(long, default_value_t = 1000)]
    trial_run_ms: u64,
    /// Do not give each device its own 127.x.y.z source address.
    #[arg(long)]
    no_spread: bool,
    /// Heartbeat interval in seconds.
    #[arg(long, default_value_t = 60)]
    heartbeat: u64,
    /// Initial reconnect backoff in milliseconds.
    #[arg(long, default_value_t = 500)]
    backoff_ms: u64,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Progress lines on stderr every this many seconds (0: none).
    #[arg(long, default_value_t = 2)]
    progress: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ALOFT_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("aloft-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let identities = match (args.token, args.identities) {
        (Some(token), None) => Identities::Register {
            admin_token: token,
            id_prefix: args.id_prefix,
        },
        (None, Some(dir)) => Identities::Dir(dir),
        _ => bail!("pass --token (register new devices) or --identities DIR"),
    };
    let factory = std::fs::read(&args.factory)
        .with_context(|| format!("reading --factory {}", args.factory.display()))?;
    let factory = pb::ReleaseBundle::decode(factory.as_slice())
        .with_context(|| format!("{} is not a release bundle", args.factory.display()))?;
    let ca_pem = match &args.ca {
        Some(p) => Some(
            std::fs::read_to_string(p).with_context(|| format!("reading --ca {}", p.display()))?,
        ),
        None => None,
    };
    let mut config = SimConfig::new(args.devices, args.server, identities, factory);
    config.ca_pem = ca_pem;
    config.slot_size = args.slot_kib.map(|k| k * 1024);
    config.power_cut_pct = args.power_cut_mid_download;
    config.never_confirm_pct = args.never_confirm;
    config.until_updated = args.until_updated;
    config.duration = Duration::from_secs(args.duration);
    config.trial_run = Duration::from_millis(args.trial_run_ms);
    config.spread_source_addrs = !args.no_spread;
    config.progress = (args.progress > 0).then(|| Duration::from_secs(args.progress));
    config.agent = AgentConfig {
        heartbeat: Duration::from_secs(args.heartbeat.max(1)),
        backoff: BackoffConfig {
            initial: Duration::from_millis(args.backoff_ms.max(1)),
            ..BackoffConfig::default()
        },
        ..AgentConfig::default()
    };
    let summary = aloft_sim::run(config).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.render());
    }
    Ok(summary.condition_met && summary.errors.is_empty())
}
