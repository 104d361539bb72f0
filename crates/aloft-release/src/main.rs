//! `aloft-release`: offline release tooling (keys, release, factory). Not
//! interactive; results go to stdout (JSON with `--json`), errors to stderr
//! with a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aloft_firmware::config::Fault;
use aloft_release::keys::{self, KeysOptions, ServerKeySource};
use aloft_release::release::{self, ReleaseOptions};
use aloft_release::{ReleaseError, factory};
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

/// Aloft's offline release tooling.
#[derive(Debug, Parser)]
#[command(name = "aloft-release", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create root and release keys, a local CA, a server TLS certificate and
    /// the signed TrustRoot (existing keys are kept; the TrustRoot is
    /// re-signed); or, with a subcommand, rotate keys or make the server's
    /// next directive key.
    Keys(KeysArgs),
    /// Build the sample firmware, sign and encrypt it, and stage the bundle.
    Release(ReleaseArgs),
    /// Create a device's flash file with a signed release confirmed in slot A.
    Factory(FactoryArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct KeysArgs {
    #[command(subcommand)]
    action: Option<KeysAction>,
    #[command(flatten)]
    init: InitArgs,
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Sign the next TrustRoot (version + 1) of a key directory: new root
    /// key, new or removed (revoked) release keys, listed or removed server
    /// keys, a new expiry. Signed by the current root key and the new one;
    /// install it with `aloft trust-root set DIR/trust-root.pb`.
    Rotate(RotateArgs),
    /// Make the server's next directive key (DATA/server-key.next) before
    /// its TrustRoot lists it; prints its public key. The server switches to
    /// it once a TrustRoot that lists it is installed.
    NextServerKey(NextServerKeyArgs),
}

#[derive(Debug, Args)]
struct RotateArgs {
    /// Key directory (as `keys --out DIR` made it).
    #[arg(long, value_name = "DIR")]
    keys: PathBuf,
    /// Replace the root key (the old one is kept as root.retired-vN.key).
    #[arg(long)]
    new_root: bool,
    /// Sign releases with a new release key from now on (the old one stays
    /// listed unless removed with --remove-release-key).
    #[arg(long)]
    new_release_key: bool,
    /// Remove (revoke) a release key by its key id or a unique prefix of at
    /// least 8 hex characters (repeat). Manifests it signed are refused
    /// from then on.
    #[arg(long = "remove-release-key", value_name = "KEY_ID")]
    remove_release_keys: Vec<String>,
    /// List a server directive public key, hex SEC1 (repeat).
    #[arg(long = "server-key", value_name = "HEX")]
    server_keys: Vec<String>,
    /// List the next directive key of this server data directory
    /// (DATA/server-key.next, created if missing).
    #[arg(long, value_name = "DATA_DIR")]
    next_server_key: Option<PathBuf>,
    /// Remove a server key by its key id or a unique prefix (repeat).
    #[arg(long = "remove-server-key", value_name = "KEY_ID")]
    remove_server_keys: Vec<String>,
    /// Days the new TrustRoot stays valid, from now.
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    valid_days: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct NextServerKeyArgs {
    /// The server's data directory.
    #[arg(long, value_name = "DIR")]
    server_data: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Key directory (created if missing).
    #[arg(long, value_name = "DIR", required = true)]
    out: Option<PathBuf>,
    /// The server's data directory: its directive key DIR/server-key is
    /// read, or created before the server's first start (default: OUT/server-data).
    #[arg(long, value_name = "DIR", conflicts_with = "server_key")]
    server_data: Option<PathBuf>,
    /// The running server's directive public key, hex (`aloft server info`).
    #[arg(long, value_name = "HEX")]
    server_key: Option<String>,
    /// TrustRoot version (1 for the first; a rotation is the current + 1).
    #[arg(long, value_name = "N", default_value_t = 1)]
    trust_root_version: u32,
    /// Days the TrustRoot stays valid.
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    valid_days: u32,
    /// Names in the server certificate (repeat).
    #[arg(long = "host", value_name = "NAME", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
    hosts: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ReleaseArgs {
    /// Key directory (as `keys` made it): release.key and trust-root.pb.
    #[arg(long, value_name = "DIR")]
    keys: PathBuf,
    /// Firmware version, MAJOR.MINOR.PATCH.
    #[arg(long, value_name = "V")]
    version: String,
    /// Anti-rollback counter.
    #[arg(long, value_name = "N", default_value_t = 0)]
    security_version: u32,
    /// Deliberate fault baked into the firmware: none, health, crash or hang.
    #[arg(long, value_name = "KIND", default_value = "none")]
    fault: String,
    /// Product name.
    #[arg(long, default_value = release::DEFAULT_PRODUCT)]
    product: String,
    /// Hardware revision the image runs on (repeat).
    #[arg(long = "hardware", value_name = "REV", default_values_t = [release::DEFAULT_HARDWARE.to_owned()])]
    hardware: Vec<String>,
    /// Release id (default PRODUCT-VERSION).
    #[arg(long, value_name = "ID")]
    release_id: Option<String>,
    /// Plaintext bytes per chunk.
    #[arg(long, value_name = "BYTES", default_value_t = release::DEFAULT_CHUNK_SIZE)]
    chunk_size: u32,
    /// Days the manifest stays valid for new installs.
    #[arg(long, value_name = "DAYS", default_value_t = 90)]
    valid_days: u32,
    /// Signed but not encrypted: plaintext chunks, each with a Merkle proof
    /// to the root the manifest signs, for devices that cannot decrypt (every
    /// signature, expiry, nonce and anti-rollback check stays). A server
    /// takes it only for a product declared `aloft product set NAME
    /// --payloads signature-only`, never for a sensitive one.
    #[arg(long)]
    signature_only: bool,
    /// Use this already built firmware image instead of building one (a
    /// sample firmware image must have --version and --fault baked in).
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// Write the ReleaseBundle here.
    #[arg(long, value_name = "FILE", required_unless_present = "server")]
    out: Option<PathBuf>,
    /// Upload the bundle to this server's admin API.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// CA PEM to pin for --server.
    #[arg(long, value_name = "FILE", env = "ALOFT_CA")]
    ca: Option<PathBuf>,
    /// Operator token for --server.
    #[arg(long, env = "ALOFT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the operator token (e.g. DATA/admin-token).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct FactoryArgs {
    /// The device's identity bundle (identity.pb from `aloft device template` or
    /// `aloft device provision`).
    #[arg(long, value_name = "FILE")]
    identity: PathBuf,
    /// The release bundle for slot A.
    #[arg(long, value_name = "FILE")]
    bundle: PathBuf,
    /// The flash file to create.
    #[arg(long, value_name = "FILE")]
    flash: PathBuf,
    /// Bytes per slot.
    #[arg(long, value_name = "BYTES", default_value_t = aloft_firmware::board::DEFAULT_SLOT_SIZE)]
    slot_size: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keys(args) => run_keys(args),
        Command::Release(args) => run_release(args),
        Command::Factory(args) => run_factory(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aloft-release: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print<T: Serialize>(json: bool, value: &T, fields: &[(&str, String)]) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in fields {
            println!("{k:width$}  {v}");
        }
    }
    Ok(())
}

fn run_keys(args: KeysArgs) -> anyhow::Result<()> {
    match args.action {
        Some(KeysAction::Rotate(r)) => return run_rotate(r),
        Some(KeysAction::NextServerKey(n)) => return run_next_server_key(n),
        None => {}
    }
    let args = args.init;
    let out = args
        .out
        .ok_or_else(|| anyhow::anyhow!("--out DIR is required"))?;
    let server_key = match args.server_key {
        Some(hex) => ServerKeySource::Public(keys::parse_public_key(&hex)?),
        None => {
            ServerKeySource::DataDir(args.server_data.unwrap_or_else(|| out.join("server-data")))
        }
    };
    let summary = keys::create_keys(&KeysOptions {
        out,
        server_key,
        trust_root_version: args.trust_root_version,
        valid_days: args.valid_days,
        hosts: args.hosts,
    })?;
    let d = |f: &str| summary.dir.join(f).display().to_string();
    print(
        args.json,
        &summary,
        &[
            ("root key id", summary.root_key_id.clone()),
            ("release key id", summary.release_key_id.clone()),
            ("server key id", summary.server_key_id.clone()),
            (
                "trust root",
                format!(
                    "{} (version {})",
                    d(keys::TRUST_ROOT),
                    summary.trust_root_version
                ),
            ),
            ("ca", d(keys::CA_CERT)),
            ("server cert", d(keys::SERVER_CERT)),
            ("server tls key", d(keys::SERVER_TLS_KEY)),
            ("created", summary.created.join(", ")),
        ],
    )
}

fn run_rotate(args: RotateArgs) -> anyhow::Result<()> {
    let mut add = Vec::new();
    for hex in &args.server_keys {
        add.push(keys::parse_public_key(hex)?);
    }
    if let Some(data) = &args.next_server_key {
        add.push(keys::next_server_key(data)?.0);
    }
    let summary = keys::rotate_keys(&keys::RotateOptions {
        dir: args.keys,
        new_root: args.new_root,
        new_release_key: args.new_release_key,
        remove_release_keys: args.remove_release_keys,
        add_server_keys: add,
        remove_server_keys: args.remove_server_keys,
        valid_days: args.valid_days,
    })?;
    print(
        args.json,
        &summary,
        &[
            (
                "trust root",
                format!(
                    "{} (version {})",
                    summary.trust_root.display(),
                    summary.version
                ),
            ),
            ("expires", summary.expires_at.to_string()),
            ("root keys", summary.root_keys.join(", ")),
            ("release keys", summary.release_keys.join(", ")),
            ("server keys", summary.server_keys.join(", ")),
            ("changed", summary.changed.join(", ")),
            (
                "next",
                format!("aloft trust-root set {}", summary.trust_root.display()),
            ),
        ],
    )
}

fn run_next_server_key(args: NextServerKeyArgs) -> anyhow::Result<()> {
    let (key, created) = keys::next_server_key(&args.server_data)?;
    #[derive(Serialize)]
    struct Next {
        server_key: String,
        key_id: String,
        created: bool,
        file: PathBuf,
    }
    let next = Next {
        server_key: hex::encode(key.to_sec1_compressed()),
        key_id: key.key_id().to_string(),
        created,
        file: args.server_data.join(keys::SERVER_DATA_NEXT_KEY),
    };
    print(
        args.json,
        &next,
        &[
            ("next server key", next.server_key.clone()),
            ("key id", next.key_id.clone()),
            (
                "file",
                format!(
                    "{} ({})",
                    next.file.display(),
                    if created { "created" } else { "existing" }
                ),
            ),
        ],
    )
}

fn run_release(args: ReleaseArgs) -> anyhow::Result<()> {
    let version = release::parse_version(&args.version)?;
    let fault: Fault = args.fault.parse().map_err(|e| ReleaseError::InvalidArg {
        what: "fault",
        reason: format!("{e}"),
    })?;
    let mut opts = ReleaseOptions::new(version);
    opts.security_version = args.security_version;
    opts.fault = fault;
    opts.product = args.product;
    opts.hardware = args.hardware;
    opts.release_id = args.release_id;
    opts.chunk_size = args.chunk_size;
    opts.valid_days = args.valid_days;
    opts.signature_only = args.signature_only;
    opts.release_id()?;
    // Read the keys before the (slow) build, so a bad key fails fast.
    let trust = keys::read_trust_root(&args.keys)?;
    let release_key = keys::read_release_key(&args.keys)?;
    let image_path = match args.image {
        Some(path) => path,
        None => release::build_firmware(version, fault)?,
    };
    let image = std::fs::read(&image_path).map_err(ReleaseError::io(&image_path))?;
    release::check_baked(&image, &opts)?;
    let (bundle, mut summary) = release::make_bundle(&image, &opts, &release_key, &trust)?;
    drop(release_key);
    let mut staged = Vec::new();
    if let Some(out) = &args.out {
        release::write_bundle(out, &bundle)?;
        staged.push(out.display().to_string());
    }
    if let Some(url) = &args.server {
        upload(
            url,
            args.ca.as_deref(),
            args.token.as_deref(),
            args.token_file.as_deref(),
            bundle,
        )?;
        staged.push(url.clone());
    }
    summary.staged = staged.join(", ");
    print(
        args.json,
        &summary,
        &[
            ("release", summary.release_id.clone()),
            ("version", summary.version.clone()),
            ("security version", summary.security_version.to_string()),
            ("fault", summary.fault.clone()),
            ("image", format!("{} bytes", summary.image_len)),
            ("payload", summary.payload_encoding.clone()),
            ("image sha256", summary.image_sha256.clone()),
            ("manifest digest", summary.manifest_digest.clone()),
            ("staged", summary.staged.clone()),
        ],
    )
}

fn upload(
    url: &str,
    ca: Option<&Path>,
    token: Option<&str>,
    token_file: Option<&Path>,
    bundle: aloft_protocol::pb::ReleaseBundle,
) -> anyhow::Result<()> {
    use aloft_cli::client::{BearerAuth, ServerTarget, connect, status_error};
    let token = aloft_cli::resolve_token(token, token_file)?;
    let ca_pem = ca
        .map(|p| {
            std::fs::read_to_string(p).with_context(|| format!("reading the CA {}", p.display()))
        })
        .transpose()?;
    let target = ServerTarget {
        url: url.to_owned(),
        ca_pem,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut client = connect(&target, BearerAuth::new(&token)?).await?;
        let messages = aloft_cli::release::upload_messages(bundle);
        client
            .upload_release(tokio_stream::iter(messages))
            .await
            .map_err(|s| status_error(&format!("uploading to {url}"), &s))?;
        Ok(())
    })
}

fn run_factory(args: FactoryArgs) -> anyhow::Result<()> {
    let summary = factory::provision(&factory::FactoryOptions {
        identity: args.identity,
        bundle: args.bundle,
        flash: args.flash,
        slot_size: args.slot_size,
    })?;
    print(
        args.json,
        &summary,
        &[
            ("device", summary.device_id.clone()),
            ("flash", summary.flash.display().to_string()),
            ("slot size", format!("{} bytes", summary.slot_size)),
            (
                "slot A",
                format!("{} ({})", summary.release_id, summary.version),
            ),
            ("image", format!("{} bytes", summary.image_len)),
        ],
    )
}
