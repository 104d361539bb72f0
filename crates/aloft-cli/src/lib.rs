//! The `aloft` operator CLI: devices, releases, tokens and the TrustRoot,
//! over the server's admin gRPC API.
//!
//! `main.rs` only parses arguments and maps errors to exit codes; everything
//! else is here so tests can call [`run`]. One module per command group
//! ([`device`], [`release`], [`token`], [`trust`]); a new group (rollouts)
//! adds a module, a [`Command`] variant and one line in [`run`].

pub mod args;
pub mod audit;
pub mod client;
pub mod device;
pub mod duration;
pub mod fleet;
pub mod output;
pub mod product;
pub mod register;
pub mod release;
pub mod rollout;
pub mod token;
pub mod trust;
pub mod webhook;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use crate::client::{AdminClient, BearerAuth, ServerTarget};
use crate::output::Format;

/// Operate an Aloft OTA server: devices, releases, tokens and trust.
#[derive(Debug, Parser)]
#[command(name = "aloft", version, about, propagate_version = true)]
pub struct Cli {
    /// Server URL: http://HOST:PORT (plaintext) or https://HOST:PORT (TLS).
    #[arg(
        long,
        env = "ALOFT_SERVER",
        global = true,
        value_name = "URL",
        help_heading = "Global options"
    )]
    pub server: Option<String>,

    /// PEM file of the CA that issued the server's TLS certificate (pinned).
    #[arg(
        long,
        env = "ALOFT_CA",
        global = true,
        value_name = "FILE",
        help_heading = "Global options"
    )]
    pub ca: Option<PathBuf>,

    /// Operator token (a new server writes its admin token to DATA_DIR/admin-token).
    #[arg(
        long,
        env = "ALOFT_TOKEN",
        global = true,
        hide_env_values = true,
        help_heading = "Global options"
    )]
    pub token: Option<String>,

    /// File holding the operator token (used instead of --token / ALOFT_TOKEN).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "Global options"
    )]
    pub token_file: Option<PathBuf>,

    /// Print JSON instead of tables.
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The command groups.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register (keys made on the device), provision (development), wait
    /// for, list, show and revoke devices.
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// Declare what a product's devices install (encrypted or signature-only
    /// payloads) and whether its data is sensitive.
    #[command(subcommand)]
    Product(product::ProductCommand),
    /// Upload and list releases.
    #[command(subcommand)]
    Release(release::ReleaseCommand),
    /// Create, follow and steer staged rollouts.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Create, list and revoke operator tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Install or rotate the server's TrustRoot.
    #[command(subcommand, name = "trust-root")]
    TrustRoot(trust::TrustRootCommand),
    /// Devices by firmware version: how many are online, stale, failed.
    Fleet(fleet::FleetArgs),
    /// Inspect the server.
    #[command(subcommand)]
    Server(trust::ServerCommand),
    /// Send events to other systems: signed HTTP POSTs (admin).
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// List and verify the tamper-evident audit log (admin).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

/// What every command gets: a connected client and the output format.
pub struct Ctx {
    /// The authenticated admin client.
    pub client: AdminClient,
    /// Table or JSON.
    pub format: Format,
    /// How the server was reached (provisioning copies it into identities).
    pub target: ServerTarget,
}

impl Ctx {
    /// True when `--json` was given.
    pub fn json(&self) -> bool {
        self.format == Format::Json
    }
}

/// Runs one parsed command line.
///
/// Everything that can be checked locally is checked before the server is
/// contacted: the server URL, the token, the CA file, and a command's own
/// files and inputs (provisioning).
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let url = cli
        .server
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty());
    let token = resolve_token(cli.token.as_deref(), cli.token_file.as_deref());
    let Some(url) = url else {
        let also = match &token {
            Err(e) => format!("\n  and {e:#}"),
            Ok(_) => String::new(),
        };
        bail!(
            "no server given: pass --server URL or set ALOFT_SERVER (e.g. https://ota.example.com:7443){also}"
        );
    };
    let auth = BearerAuth::new(&token?)?;
    let ca_pem = cli
        .ca
        .as_deref()
        .map(|path| read_ca(path, "--ca / ALOFT_CA"))
        .transpose()?;
    let target = ServerTarget {
        url: url.to_owned(),
        ca_pem,
    };
    client::endpoint(&target)?;
    // Refuse bad local input (files, directories) before touching the server.
    let prepared = match &cli.command {
        Command::Device(cmd) => device::prepare(cmd, &target)?,
        _ => None,
    };
    let client = client::connect(&target, auth).await?;
    let format = if cli.json {
        Format::Json
    } else {
        Format::Human
    };
    let mut ctx = Ctx {
        client,
        format,
        target,
    };
    match cli.command {
        Command::Device(cmd) => device::run(&mut ctx, cmd, prepared).await,
        Command::Release(cmd) => release::run(&mut ctx, cmd).await,
        Command::Product(cmd) => product::run(&mut ctx, cmd).await,
        Command::Rollout(cmd) => rollout::run(&mut ctx, cmd).await,
        Command::Fleet(args) => fleet::run(&mut ctx, &args).await,
        Command::Token(cmd) => token::run(&mut ctx, cmd).await,
        Command::TrustRoot(cmd) => trust::run_trust_root(&mut ctx, cmd).await,
        Command::Server(cmd) => trust::run_server(&mut ctx, cmd).await,
        Command::Webhook(cmd) => webhook::run(&mut ctx, cmd).await,
        Command::Audit(cmd) => audit::run(&mut ctx, cmd).await,
    }
}

/// The token to send: from `--token-file` if given, else `--token` /
/// `ALOFT_TOKEN`; whitespace around it is removed.
pub fn resolve_token(token: Option<&str>, token_file: Option<&Path>) -> anyhow::Result<String> {
    let token = match token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("could not read the token file {}", path.display()))?,
        None => match token {
            Some(t) => t.to_owned(),
            None => bail!(
                "no operator token: pass --token, set ALOFT_TOKEN or pass --token-file \
                 (a new server writes its bootstrap admin token to DATA_DIR/admin-token)"
            ),
        },
    };
    let token = token.trim();
    if token.is_empty() {
        match token_file {
            Some(path) => bail!("the token file {} is empty", path.display()),
            None => bail!("the operator token is empty: pass --token, ALOFT_TOKEN or --token-file"),
        }
    }
    Ok(token.to_owned())
}

/// Reads a PEM CA certificate file given with `flag` (named in errors).
pub fn read_ca(path: &Path, flag: &str) -> anyhow::Result<String> {
    if path.is_dir() {
        bail!(
            "the CA file {} ({flag}) is a directory: name the PEM file in it, e.g. {}",
            path.display(),
            path.join("ca.pem").display()
        );
    }
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the CA file {} ({flag})", path.display()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        let what = if pem.contains("PRIVATE KEY-----") {
            "a private key, not a certificate"
        } else {
            "no PEM certificate"
        };
        bail!(
            "the CA file {} ({flag}) holds {what}: pass the CA's certificate (`cargo xtask keys --out DIR` \
             writes it to DIR/ca.pem)",
            path.display()
        );
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn token_file_wins_and_is_trimmed() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "  from-file  ").unwrap();
        assert_eq!(
            resolve_token(Some("from-flag"), Some(file.path())).unwrap(),
            "from-file"
        );
        assert_eq!(
            resolve_token(Some(" from-flag\n"), None).unwrap(),
            "from-flag"
        );
    }

    #[test]
    fn missing_or_empty_tokens_are_refused() {
        let err = resolve_token(None, None).unwrap_err().to_string();
        assert!(
            err.contains("--token") && err.contains("ALOFT_TOKEN"),
            "{err}"
        );
        assert!(resolve_token(Some("  "), None).is_err());
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = resolve_token(Some("ignored"), Some(file.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty"), "{err}");
        let err = resolve_token(None, Some(Path::new("does/not/exist")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("token file"), "{err}");
    }

    #[test]
    fn ca_must_be_pem() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "not a certificate").unwrap();
        assert!(
            read_ca(file.path(), "--ca / ALOFT_CA")
                .unwrap_err()
                .to_string()
                .contains("no PEM")
        );
        let mut key = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            key,
            "-----BEGIN PRIVATE KEY-----\nMC4=\n-----END PRIVATE KEY-----"
        )
        .unwrap();
        let err = read_ca(key.path(), "--device-ca").unwrap_err().to_string();
        assert!(
            err.contains("a private key, not a certificate") && err.contains("--device-ca"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = read_ca(dir.path(), "--ca / ALOFT_CA")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a directory"), "{err}");
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("aloft").chain(args.iter().copied()))
    }

    #[test]
    fn command_lines_parse() {
        let cli = parse(&[
            "--server",
            "http://h:1",
            "device",
            "list",
            "--stale",
            "7d",
            "--json",
        ])
        .unwrap();
        assert!(cli.json);
        let Command::Device(device::DeviceCommand::List(args)) = cli.command else {
            panic!("not device list")
        };
        assert_eq!(args.stale.unwrap().as_secs(), 7 * 86_400);

        let cli = parse(&["token", "create", "--name", "ci", "--role", "operator"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Token(token::TokenCommand::Create {
                role: token::Role::Operator,
                ..
            })
        ));
        assert!(parse(&["trust-root", "set", "root.pb"]).is_ok());
        assert!(parse(&["server", "info"]).is_ok());
        assert!(parse(&["release", "upload", "b.bin"]).is_ok());
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for bad in [
            &["token", "create", "--name", "x", "--role", "root"][..],
            &["device", "list", "--stale", "24"],
            &[
                "device",
                "provision",
                "--id",
                "d",
                "--out",
                "o",
                "--attr",
                "colour=red",
            ],
            &["device", "provision", "--id", "d"],
            &["device", "provision", "--id", "d", "--out", "o"],
            &[
                "device",
                "provision",
                "--id",
                "d",
                "--out",
                "o",
                "--factory-version",
                "1.0",
            ],
            &[
                "device",
                "provision",
                "--id",
                "bad id",
                "--out",
                "o",
                "--factory-version",
                "1.0.0",
            ],
            &["device", "show", ""],
            &["device", "revoke", "a/b"],
            &["rollout", "create", "bad id", "--release", "f"],
            &["rollout", "create", "r", "--release", ".f"],
            &["rollout", "watch", "r", "--interval", "1.5s"],
            &["rollout", "force", "r", "bad device"],
            &["token", "create", "--name", "", "--role", "viewer"],
            &["token", "revoke", ""],
            &["device", "show"],
            &["rollout", "create", "r"],
            &[
                "rollout",
                "create",
                "r",
                "--release",
                "f",
                "--stages",
                "10%,5%",
            ],
            &[
                "rollout",
                "create",
                "r",
                "--release",
                "f",
                "--window",
                "2-4",
            ],
            &[
                "rollout",
                "create",
                "r",
                "--release",
                "f",
                "--max-failure",
                "5",
            ],
            &["rollout", "create", "r", "--release", "f", "--soak", "1"],
            &["rollout", "exclude", "r"],
            &["rollout", "bogus"],
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn provisioning_names_its_required_flags() {
        let err = parse(&["device", "provision", "--id", "d", "--out", "o"]).unwrap_err();
        assert!(err.to_string().contains("--factory-version <V>"), "{err}");
        let err = parse(&[
            "device",
            "provision",
            "--id",
            "d",
            "--out",
            "o",
            "--factory-version",
            "1.0",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("MAJOR.MINOR.PATCH"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_server_and_token_are_named_together() {
        let cli = parse(&["device", "list"]).unwrap();
        let cli = Cli {
            server: None,
            token: None,
            token_file: None,
            ..cli
        };
        let err = format!("{:#}", run(cli).await.unwrap_err());
        assert!(
            err.contains("no server given") && err.contains("no operator token"),
            "{err}"
        );
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
