//! `aloft device ...`: provision (key made off the device, development),
//! write a template (the key is made on the device), register and import
//! devices' own registration requests, wait for a device to confirm a
//! release, list, show and revoke devices.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use aloft_protocol::prost::Message as _;
use aloft_protocol::{DeviceId, SecretKey, Version, pb};
use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::client::{ServerTarget, status_error};
use crate::duration::{age, now_unix, parse_duration};
use crate::output::{self, Table, dash, non_empty, non_zero, slot_word, status_word};
use crate::{Ctx, args};

/// File name of the device's private identity bundle (protobuf, mode 0600).
pub const IDENTITY_FILE: &str = "identity.pb";
/// File name of the human-readable identity summary (no private key).
pub const SUMMARY_FILE: &str = "identity.json";

/// Devices per ListDevices page.
const PAGE: u32 = 500;

/// `aloft device` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Development: make a device key pair HERE (off the device), register it
    /// and write the identity bundle holding the private key.
    ///
    /// The private key exists on this machine before it reaches the device:
    /// for development and tests. At a factory, let each device make its own
    /// key (`aloft device template`, then `aloft device register` or
    /// `import`). The server must hold a TrustRoot first (`aloft trust-root
    /// set FILE`): the bundle carries it, so the device trusts exactly what
    /// the server does.
    #[command(after_long_help = PROVISION_HELP)]
    Provision(ProvisionArgs),
    /// Write a device's identity bundle without a key (a template): the
    /// device makes its key pair itself at its first factory boot.
    ///
    /// Registers nothing. On the device, `aloft-agent register-request
    /// --identity identity.pb --factory-version V` stores its new key in the
    /// bundle and writes its signed registration request; register that with
    /// `aloft device register --request FILE` or `aloft device import FILE`.
    /// A factory token may run this (it reads the server's TrustRoot).
    Template(TemplateArgs),
    /// Register one device from the registration request it made (its key
    /// was born on it and never left it).
    Register(crate::register::RegisterArgs),
    /// Register many devices from a file of their registration requests, all
    /// or nothing; prints how many and how fast.
    #[command(after_long_help = IMPORT_HELP)]
    Import(crate::register::ImportArgs),
    /// Wait until a device confirmed a release (exit 0), e.g. before packing
    /// it; fails when it failed or rolled back on it, or the time runs out.
    Wait(crate::register::WaitArgs),
    /// List devices.
    List(ListArgs),
    /// Show one device.
    Show {
        /// Device id.
        #[arg(value_parser = args::device_id)]
        id: String,
    },
    /// Revoke a device: it can no longer connect.
    Revoke {
        /// Device id.
        #[arg(value_parser = args::device_id)]
        id: String,
    },
}

const PROVISION_HELP: &str = "\
Example:
  aloft device provision --id dev-1 --attr product=aloft-sample --attr hardware=sim-1 \\
      --factory-version 1.0.0 --out local/dev-1

Then write the device's flash with the factory release:
  cargo run -q -p aloft-release -- factory --identity local/dev-1/identity.pb \\
      --bundle FACTORY.bundle --flash local/dev-1/flash.bin";

const IMPORT_HELP: &str = "\
The file holds one registration request per line, as `aloft-agent
register-request` writes them:
  JSON lines  {\"device_id\":\"ID\",\"payload\":\"HEX\",\"signature\":\"HEX\"}
  CSV         ID,PAYLOAD_HEX,SIGNATURE_HEX   (optional header device_id,payload,signature)
Blank lines and lines starting with # are skipped. A file with an unreadable
line is refused before anything is sent; the server refuses the whole import
if any request is refused (bad signature, replayed, stale, id taken, payload
profile), listing each by FILE:LINE.

Example (a factory station, with a factory token):
  aloft device import line-3.jsonl";

/// Arguments of `aloft device template`.
#[derive(Debug, Args)]
pub struct TemplateArgs {
    /// Device id (1-64 of A-Z a-z 0-9 . _ : -).
    #[arg(long, value_parser = args::device_id)]
    pub id: String,
    /// Attribute KEY=VALUE (as for `provision`; product and hardware required).
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attr)]
    pub attrs: Vec<Attr>,
    /// Directory to write identity.pb (mode 0600: the device adds its key)
    /// and identity.json into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Server URL the device calls (default: --server).
    #[arg(long, value_name = "URL")]
    pub device_server_url: Option<String>,
    /// CA PEM the device pins (default: --ca).
    #[arg(long, value_name = "FILE")]
    pub device_ca: Option<PathBuf>,
}

/// Arguments of `aloft device provision`.
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Device id (1-64 of A-Z a-z 0-9 . _ : -).
    #[arg(long, value_parser = args::device_id)]
    pub id: String,
    /// Attribute KEY=VALUE; keys: product and hardware (both required:
    /// releases are offered by them), region, time_zone (IANA name), tags
    /// (comma list), test (true/false). Repeat for each.
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attr)]
    pub attrs: Vec<Attr>,
    /// Firmware version the factory writes to slot A (MAJOR.MINOR.PATCH, e.g.
    /// 1.0.0): what the server records for the device until it first checks
    /// in, and the version its releases must be newer than.
    #[arg(long, value_name = "V", value_parser = args::version)]
    pub factory_version: String,
    /// Directory to write identity.pb (private, 0600) and identity.json into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Server URL the device calls (default: --server).
    #[arg(long, value_name = "URL")]
    pub device_server_url: Option<String>,
    /// CA PEM the device pins (default: --ca).
    #[arg(long, value_name = "FILE")]
    pub device_ca: Option<PathBuf>,
}

/// Arguments of `aloft device list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Selector expression (grammar: ARCHITECTURE.md, "Selectors"); default: all devices.
    #[arg(long, value_name = "S")]
    pub selector: Option<String>,
    /// Only devices not seen for at least this long, e.g. 30m, 24h, 7d.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stale: Option<std::time::Duration>,
    /// Only devices suspected broken: repeated rollbacks, or silent soon
    /// after taking an update (thresholds are the server's).
    #[arg(long)]
    pub broken: bool,
    /// Only devices whose TrustRoot expires within --trust-horizon (or has
    /// expired): they stop accepting updates unless a successor reaches them.
    #[arg(long)]
    pub trust_expiring: bool,
    /// How soon a TrustRoot expiry is flagged (root-expiring).
    #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = parse_duration)]
    pub trust_horizon: std::time::Duration,
}

/// A device's TrustRoot as the CLI shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrustState {
    /// The device never reported one (an agent from before TrustRoot updates).
    Unknown,
    /// Valid beyond the horizon.
    Valid,
    /// Expires within the horizon.
    Expiring,
    /// Expired (by the server's clock or the device's own word): the device
    /// cannot verify updates until a successor reaches it.
    Expired,
}

/// Classifies a device's TrustRoot at `now` with `horizon_secs`.
pub fn trust_state(d: &pb::DeviceInfo, now: u64, horizon_secs: u64) -> TrustState {
    if d.trust_root_version == 0 {
        TrustState::Unknown
    } else if d.trust_root_expired || d.trust_root_expires_at < now {
        TrustState::Expired
    } else if d.trust_root_expires_at <= now.saturating_add(horizon_secs) {
        TrustState::Expiring
    } else {
        TrustState::Valid
    }
}

/// The TrustRoot column: `v3`, `v1 exp 40d`, `v1 EXPIRED`, `-`.
fn trust_cell(d: &pb::DeviceInfo, now: u64, horizon_secs: u64) -> String {
    match trust_state(d, now, horizon_secs) {
        TrustState::Unknown => "-".into(),
        TrustState::Valid => format!("v{}", d.trust_root_version),
        TrustState::Expiring => format!(
            "v{} exp {}",
            d.trust_root_version,
            crate::duration::compact(d.trust_root_expires_at.saturating_sub(now))
        ),
        TrustState::Expired => format!("v{} EXPIRED", d.trust_root_version),
    }
}

/// One `--attr KEY=VALUE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attr {
    /// `product=NAME`.
    Product(String),
    /// `hardware=REVISION`.
    Hardware(String),
    /// `region=NAME`.
    Region(String),
    /// `time_zone=Area/City` (IANA name).
    TimeZone(String),
    /// `tags=a,b,c`.
    Tags(Vec<String>),
    /// `test=true|false`.
    Test(bool),
}

impl Attr {
    /// The attribute's key as written on the command line.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Product(_) => "product",
            Self::Hardware(_) => "hardware",
            Self::Region(_) => "region",
            Self::TimeZone(_) => "time_zone",
            Self::Tags(_) => "tags",
            Self::Test(_) => "test",
        }
    }

    /// The value as text (tags joined with commas).
    pub fn value(&self) -> String {
        match self {
            Self::Product(v) | Self::Hardware(v) | Self::Region(v) | Self::TimeZone(v) => v.clone(),
            Self::Tags(tags) => tags.join(","),
            Self::Test(b) => b.to_string(),
        }
    }
}

/// Parses one `KEY=VALUE` attribute (clap value parser).
pub fn parse_attr(text: &str) -> Result<Attr, String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("attribute {text:?} is not KEY=VALUE"))?;
    let (key, value) = (key.trim(), value.trim());
    let needs_value = || {
        if value.is_empty() {
            Err(format!("attribute {key} needs a value ({key}=...)"))
        } else {
            Ok(())
        }
    };
    match key {
        "product" | "hardware" | "region" => {
            needs_value()?;
            if value.chars().any(char::is_control) {
                return Err(format!("attribute {key} contains control characters"));
            }
            Ok(match key {
                "product" => Attr::Product(value.into()),
                "hardware" => Attr::Hardware(value.into()),
                _ => Attr::Region(value.into()),
            })
        }
        "time_zone" => {
            needs_value()?;
            if !is_iana_zone_name(value) {
                return Err(format!(
                    "time_zone {value:?} is not an IANA time zone name (e.g. UTC, Europe/Berlin, America/New_York)"
                ));
            }
            Ok(Attr::TimeZone(value.into()))
        }
        "tags" => {
            let tags: Vec<String> = value
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect();
            if let Some(bad) = tags
                .iter()
                .find(|t| t.chars().any(|c| c.is_whitespace() || c.is_control()))
            {
                return Err(format!("tag {bad:?} contains whitespace"));
            }
            Ok(Attr::Tags(tags))
        }
        "test" => match value {
            "true" => Ok(Attr::Test(true)),
            "false" => Ok(Attr::Test(false)),
            _ => Err(format!("test must be true or false, not {value:?}")),
        },
        _ => Err(format!(
            "unknown attribute {key:?}: use product, hardware, region, time_zone, tags or test"
        )),
    }
}

/// A syntactic check of an IANA zone name (`UTC`, `Europe/Berlin`,
/// `America/Argentina/Buenos_Aires`, `Etc/GMT+5`); the server keeps the list.
fn is_iana_zone_name(name: &str) -> bool {
    name.len() <= 64
        && name.split('/').all(|part| {
            part.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
        })
}

/// Combines attributes into the wire form and the bundle's text map,
/// refusing a key given twice.
pub fn build_attributes(
    attrs: &[Attr],
) -> anyhow::Result<(pb::DeviceAttributes, BTreeMap<String, String>)> {
    let mut wire = pb::DeviceAttributes::default();
    let mut map = BTreeMap::new();
    for attr in attrs {
        if map.insert(attr.key().to_owned(), attr.value()).is_some() {
            bail!("attribute {} is given twice", attr.key());
        }
        match attr {
            Attr::Product(v) => wire.product.clone_from(v),
            Attr::Hardware(v) => wire.hardware.clone_from(v),
            Attr::Region(v) => wire.region.clone_from(v),
            Attr::TimeZone(v) => wire.time_zone.clone_from(v),
            Attr::Tags(v) => wire.tags.clone_from(v),
            Attr::Test(b) => wire.test_device = *b,
        }
    }
    Ok((wire, map))
}

/// Provisioning input checked before the server is contacted.
#[derive(Debug)]
pub struct Provision {
    id: DeviceId,
    attributes: pb::DeviceAttributes,
    attribute_map: BTreeMap<String, String>,
    factory_version: String,
    out: PathBuf,
    device_server_url: Option<String>,
    device_ca_pem: Option<String>,
    /// A template: no key, nothing registered.
    template: bool,
}

/// Checks local input (ids, attributes, the device's server URL and CA, the
/// output directory) so a mistake is reported before anything is
/// registered; `target` is how this CLI reaches the server (the device's
/// default).
pub fn prepare(cmd: &DeviceCommand, target: &ServerTarget) -> anyhow::Result<Option<Provision>> {
    match cmd {
        DeviceCommand::Provision(args) => {
            let factory_version = Version::parse(&args.factory_version)
                .map_err(|_| {
                    anyhow!(
                        "invalid --factory-version {:?}: use MAJOR.MINOR.PATCH, e.g. 1.0.0",
                        args.factory_version
                    )
                })?
                .to_string();
            let inputs = IdentityInputs {
                id: &args.id,
                attrs: &args.attrs,
                out: &args.out,
                device_server_url: args.device_server_url.as_deref(),
                device_ca: args.device_ca.as_deref(),
            };
            check_inputs(&inputs, target, factory_version, false).map(Some)
        }
        DeviceCommand::Template(args) => {
            let inputs = IdentityInputs {
                id: &args.id,
                attrs: &args.attrs,
                out: &args.out,
                device_server_url: args.device_server_url.as_deref(),
                device_ca: args.device_ca.as_deref(),
            };
            check_inputs(&inputs, target, String::new(), true).map(Some)
        }
        _ => Ok(None),
    }
}

/// What `provision` and `template` share.
struct IdentityInputs<'a> {
    id: &'a str,
    attrs: &'a [Attr],
    out: &'a Path,
    device_server_url: Option<&'a str>,
    device_ca: Option<&'a Path>,
}

fn check_inputs(
    args: &IdentityInputs<'_>,
    target: &ServerTarget,
    factory_version: String,
    template: bool,
) -> anyhow::Result<Provision> {
    let id = DeviceId::new(args.id).map_err(|_| {
        anyhow!(
            "invalid device id {:?}: use 1-64 of A-Z a-z 0-9 . _ : - (not starting with .)",
            args.id
        )
    })?;
    let (attributes, attribute_map) = build_attributes(args.attrs)?;
    let missing: Vec<&str> = [
        (attributes.product.is_empty(), "--attr product=NAME"),
        (attributes.hardware.is_empty(), "--attr hardware=REVISION"),
    ]
    .into_iter()
    .filter_map(|(missing, flag)| missing.then_some(flag))
    .collect();
    if !missing.is_empty() {
        bail!(
            "{} needs {}: releases are offered to devices by product and hardware \
             (e.g. --attr product=aloft-sample --attr hardware=sim-1)",
            if template {
                "a template"
            } else {
                "provisioning"
            },
            missing.join(" and ")
        );
    }
    let device_ca_pem = match args.device_ca {
        Some(path) => Some(crate::read_ca(path, "--device-ca")?),
        None => None,
    };
    let device_url = args
        .device_server_url
        .map(str::trim)
        .unwrap_or(target.url.as_str());
    let (_, device_tls) = crate::client::check_url(device_url)
        .with_context(|| format!("the device's server URL {device_url:?} (--device-server-url)"))?;
    if device_tls && device_ca_pem.is_none() && target.ca_pem.is_none() {
        bail!(
            "the device would call {device_url} over TLS but has no CA to pin: pass --ca or --device-ca"
        );
    }
    if args.out.is_file() {
        bail!(
            "--out {} is a file: name a directory for the device's identity",
            args.out.display()
        );
    }
    fs::create_dir_all(args.out).with_context(|| {
        format!(
            "could not create the output directory {}",
            args.out.display()
        )
    })?;
    for name in [IDENTITY_FILE, SUMMARY_FILE] {
        let path = args.out.join(name);
        if path.exists() {
            bail!(
                "{} already exists: refusing to overwrite a device identity; choose another --out directory",
                path.display()
            );
        }
    }
    Ok(Provision {
        id,
        attributes,
        attribute_map,
        factory_version,
        out: args.out.to_owned(),
        device_server_url: args.device_server_url.map(|u| u.trim().to_owned()),
        device_ca_pem,
        template,
    })
}

/// Runs one `aloft device` command.
pub async fn run(
    ctx: &mut Ctx,
    cmd: DeviceCommand,
    prepared: Option<Provision>,
) -> anyhow::Result<()> {
    match cmd {
        DeviceCommand::Provision(_) => {
            let plan = prepared
                .ok_or_else(|| anyhow!("internal error: provisioning input not checked"))?;
            provision(ctx, plan).await
        }
        DeviceCommand::Template(_) => {
            let plan =
                prepared.ok_or_else(|| anyhow!("internal error: template input not checked"))?;
            provision(ctx, plan).await
        }
        DeviceCommand::Register(args) => crate::register::register(ctx, args).await,
        DeviceCommand::Import(args) => crate::register::import(ctx, args).await,
        DeviceCommand::Wait(args) => crate::register::wait(ctx, args).await,
        DeviceCommand::List(args) => list(ctx, args).await,
        DeviceCommand::Show { id } => show(ctx, &id).await,
        DeviceCommand::Revoke { id } => revoke(ctx, &id).await,
    }
}

/// What `identity.json` holds: the bundle without the private key.
#[derive(Debug, Serialize)]
struct IdentitySummary {
    device_id: String,
    /// `null` in a template (the device makes its key).
    public_key: Option<String>,
    key_id: Option<String>,
    server_url: String,
    ca_pem: Option<String>,
    trust_root_version: u32,
    trust_root_expires_at: u64,
    factory_version: Option<String>,
    attributes: BTreeMap<String, String>,
}

async fn provision(ctx: &mut Ctx, plan: Provision) -> anyhow::Result<()> {
    let action = if plan.template {
        format!("writing the template of device {}", plan.id)
    } else {
        format!("provisioning device {}", plan.id)
    };
    let info = ctx
        .client
        .get_server_info(pb::GetServerInfoRequest {})
        .await
        .map_err(|s| status_error(&action, &s))?
        .into_inner();
    let trust_root = info.trust_root.ok_or_else(|| {
        anyhow!(
            "{action}: the server has no TrustRoot yet, so the device would trust nothing\n  \
             hint: install one first with `aloft trust-root set FILE`"
        )
    })?;
    let root = pb::TrustRoot::decode(trust_root.payload.as_slice())
        .context("the server's TrustRoot does not decode")?;

    // A template has no key: the device makes its own.
    let key = (!plan.template).then(SecretKey::generate);
    let public = key.as_ref().map(SecretKey::public_key);
    let server_url = plan
        .device_server_url
        .clone()
        .unwrap_or_else(|| ctx.target.url.clone());
    let ca_pem = plan
        .device_ca_pem
        .clone()
        .or_else(|| ctx.target.ca_pem.clone());
    if server_url.starts_with("https://") && ca_pem.is_none() {
        bail!(
            "{action}: the device would call {server_url} over TLS but has no CA to pin: pass --ca or --device-ca"
        );
    }
    let bundle = pb::IdentityBundle {
        device_id: plan.id.to_string(),
        private_key: key
            .as_ref()
            .map_or_else(Vec::new, |k| k.to_bytes().to_vec()),
        server_url: server_url.clone(),
        ca_pem: ca_pem.clone().unwrap_or_default(),
        trust_root: Some(trust_root),
        attributes: plan.attribute_map.clone().into_iter().collect(),
    };

    // Write the private bundle under a temporary name first, so a full disk
    // is found before the device exists on the server.
    let final_path = plan.out.join(IDENTITY_FILE);
    let tmp_path = plan.out.join(format!(".{IDENTITY_FILE}.tmp"));
    write_private(&tmp_path, &bundle.encode_to_vec())
        .with_context(|| format!("{action}: could not write {}", tmp_path.display()))?;
    drop(bundle);
    drop(key);

    let registered = match public {
        None => None,
        Some(public) => {
            let registered = ctx
                .client
                .register_device(pb::RegisterDeviceRequest {
                    device_id: plan.id.to_string(),
                    public_key: public.to_sec1_compressed().to_vec(),
                    attributes: Some(plan.attributes.clone()),
                    factory_version: plan.factory_version.clone(),
                    ..Default::default()
                })
                .await;
            match registered {
                Ok(r) => Some(r.into_inner()),
                Err(status) => {
                    let _ = fs::remove_file(&tmp_path);
                    return Err(status_error(&action, &status));
                }
            }
        }
    };
    fs::rename(&tmp_path, &final_path).with_context(|| {
        format!(
            "{action}: the device is registered but {} could not be moved into place; \
             revoke it with `aloft device revoke {}` and provision again",
            tmp_path.display(),
            plan.id
        )
    })?;

    let summary = IdentitySummary {
        device_id: plan.id.to_string(),
        public_key: public.map(|p| hex::encode(p.to_sec1_compressed())),
        key_id: public.map(|p| p.key_id().to_string()),
        server_url,
        ca_pem,
        trust_root_version: root.version,
        trust_root_expires_at: root.expires_at,
        factory_version: non_empty(&plan.factory_version),
        attributes: plan.attribute_map,
    };
    let summary_path = plan.out.join(SUMMARY_FILE);
    let mut text = serde_json::to_string_pretty(&summary)?;
    text.push('\n');
    fs::write(&summary_path, text)
        .with_context(|| format!("could not write {}", summary_path.display()))?;

    let Some(registered) = registered else {
        if ctx.json() {
            return output::print_json(&summary);
        }
        return output::print_fields(&[
            ("template", plan.id.to_string()),
            (
                "identity",
                format!(
                    "{} (no key: the device makes its key pair at its first factory boot)",
                    final_path.display()
                ),
            ),
            ("summary", summary_path.display().to_string()),
            ("server url", summary.server_url),
            (
                "trust root",
                format!("version {}", summary.trust_root_version),
            ),
            (
                "next, on the device",
                format!(
                    "aloft-agent register-request --identity {} --factory-version V --out REQUESTS.jsonl",
                    final_path.display()
                ),
            ),
        ]);
    };
    if ctx.json() {
        output::print_json(&device_json(&registered))
    } else {
        output::print_fields(&[
            ("provisioned", plan.id.to_string()),
            ("key id", summary.key_id.unwrap_or_default()),
            ("key made", "off the device (development)".into()),
            (
                "identity",
                format!(
                    "{} (private key, mode 0600: copy it to the device only)",
                    final_path.display()
                ),
            ),
            ("summary", summary_path.display().to_string()),
            ("server url", summary.server_url),
            (
                "trust root",
                format!("version {}", summary.trust_root_version),
            ),
        ])
    }
}

/// Creates `path` readable by its owner only and writes `bytes` durably.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file: File = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A device as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct DeviceJson {
    id: String,
    public_key: String,
    attributes: AttributesJson,
    firmware_version: Option<String>,
    security_version: u32,
    slot: Option<&'static str>,
    status: &'static str,
    status_seq: u64,
    release_id: Option<String>,
    last_seen: Option<u64>,
    registered_at: Option<u64>,
    revoked: bool,
    connected: bool,
    status_changed_at: Option<u64>,
    recent_rollbacks: u32,
    /// `repeated_rollbacks`, `silent_after_update`, or null.
    suspected_broken: Option<&'static str>,
    /// The device's TrustRoot version (null: never reported).
    trust_root_version: Option<u32>,
    /// Its expiry, Unix seconds.
    trust_root_expires_at: Option<u64>,
    /// `valid`, `expiring` (within the horizon), `expired`, or `unknown`.
    trust_root: &'static str,
    /// Seconds the server's clock was ahead of what the device accepted.
    server_clock_ahead_secs: u64,
    /// Where its key was made: `on_device`, `off_device` or `unknown`.
    key_origin: &'static str,
    /// Id of the token that registered it.
    registered_by: Option<String>,
    /// What it installs: `encrypted-only`, `encrypted-or-signature-only`,
    /// `signature-only`.
    payloads: &'static str,
}

/// Where a device's key was made, as a word.
fn key_origin_word(origin: i32) -> &'static str {
    match pb::KeyOrigin::try_from(origin) {
        Ok(pb::KeyOrigin::OnDevice) => "on_device",
        Ok(pb::KeyOrigin::OffDevice) => "off_device",
        _ => "unknown",
    }
}

#[derive(Debug, Serialize)]
struct AttributesJson {
    product: String,
    hardware: String,
    region: String,
    time_zone: String,
    tags: Vec<String>,
    test: bool,
}

/// Converts a device to its JSON form (TrustRoot flagged with the default
/// 90-day horizon).
pub fn device_json(d: &pb::DeviceInfo) -> DeviceJson {
    device_json_at(d, now_unix(), DEFAULT_TRUST_HORIZON_SECS)
}

/// Converts a device to its JSON form, its TrustRoot classified at `now`.
pub fn device_json_at(d: &pb::DeviceInfo, now: u64, horizon_secs: u64) -> DeviceJson {
    let a = d.attributes.clone().unwrap_or_default();
    DeviceJson {
        id: d.device_id.clone(),
        public_key: hex::encode(&d.public_key),
        attributes: AttributesJson {
            product: a.product,
            hardware: a.hardware,
            region: a.region,
            time_zone: a.time_zone,
            tags: a.tags,
            test: a.test_device,
        },
        firmware_version: non_empty(&d.firmware_version),
        security_version: d.security_version,
        slot: slot_word(d.active_slot),
        status: status_word(d.status),
        status_seq: d.status_seq,
        release_id: non_empty(&d.release_id),
        last_seen: non_zero(d.last_seen),
        registered_at: non_zero(d.registered_at),
        revoked: d.revoked,
        connected: d.connected,
        status_changed_at: non_zero(d.status_changed_at),
        recent_rollbacks: d.recent_rollbacks,
        suspected_broken: broken_word(d.suspected_broken),
        trust_root_version: non_zero(u64::from(d.trust_root_version)).map(|v| v as u32),
        trust_root_expires_at: non_zero(d.trust_root_expires_at),
        trust_root: match trust_state(d, now, horizon_secs) {
            TrustState::Unknown => "unknown",
            TrustState::Valid => "valid",
            TrustState::Expiring => "expiring",
            TrustState::Expired => "expired",
        },
        server_clock_ahead_secs: d.server_clock_ahead_secs,
        key_origin: key_origin_word(d.key_origin),
        registered_by: non_empty(&d.registered_by),
        payloads: crate::register::support_word(d.payloads),
    }
}

/// The wire's broken reason as a word (`None`: not suspected).
fn broken_word(reason: i32) -> Option<&'static str> {
    match pb::BrokenReason::try_from(reason).unwrap_or(pb::BrokenReason::None) {
        pb::BrokenReason::None => None,
        pb::BrokenReason::RepeatedRollbacks => Some("repeated_rollbacks"),
        pb::BrokenReason::SilentAfterUpdate => Some("silent_after_update"),
    }
}

fn flags(d: &pb::DeviceInfo, now: u64, horizon_secs: u64) -> String {
    let test = d.attributes.as_ref().is_some_and(|a| a.test_device);
    let broken = broken_word(d.suspected_broken).is_some();
    let trust = trust_state(d, now, horizon_secs);
    let flags: Vec<&str> = [
        (d.revoked, "revoked"),
        (d.connected, "online"),
        (test, "test"),
        (broken, "broken"),
        (trust == TrustState::Expiring, "root-expiring"),
        (trust == TrustState::Expired, "root-expired"),
        (d.server_clock_ahead_secs > 0, "clock-disagrees"),
    ]
    .into_iter()
    .filter_map(|(on, word)| on.then_some(word))
    .collect();
    dash(&flags.join(","))
}

async fn list(ctx: &mut Ctx, args: ListArgs) -> anyhow::Result<()> {
    let mut devices = Vec::new();
    let mut after = String::new();
    loop {
        let page = ctx
            .client
            .list_devices(pb::ListDevicesRequest {
                selector: args.selector.clone().unwrap_or_default(),
                stale_secs: args.stale.map_or(0, |d| d.as_secs()),
                after: after.clone(),
                limit: PAGE,
                suspected_broken: args.broken,
                trust_expires_within_secs: if args.trust_expiring {
                    args.trust_horizon.as_secs().max(1)
                } else {
                    0
                },
            })
            .await
            .map_err(|s| status_error("listing devices", &s))?
            .into_inner();
        let progressed = page.next_after != after;
        devices.extend(page.devices);
        if page.next_after.is_empty() || !progressed {
            break;
        }
        after = page.next_after;
    }
    let now = now_unix();
    let horizon = args.trust_horizon.as_secs();
    if ctx.json() {
        return output::print_json(
            &devices
                .iter()
                .map(|d| device_json_at(d, now, horizon))
                .collect::<Vec<_>>(),
        );
    }
    let mut table = Table::new(&[
        "ID",
        "STATUS",
        "FIRMWARE",
        "SLOT",
        "ROOT",
        "PRODUCT",
        "HARDWARE",
        "REGION",
        "LAST SEEN",
        "FLAGS",
    ]);
    for d in &devices {
        let a = d.attributes.clone().unwrap_or_default();
        table.row(vec![
            d.device_id.clone(),
            status_word(d.status).into(),
            dash(&d.firmware_version),
            slot_word(d.active_slot).unwrap_or("-").into(),
            trust_cell(d, now, horizon),
            dash(&a.product),
            dash(&a.hardware),
            dash(&a.region),
            age(now, d.last_seen),
            flags(d, now, horizon),
        ]);
    }
    table.print()
}

async fn show(ctx: &mut Ctx, id: &str) -> anyhow::Result<()> {
    let d = ctx
        .client
        .get_device(pb::GetDeviceRequest {
            device_id: id.to_owned(),
        })
        .await
        .map_err(|s| status_error(&format!("showing device {id}"), &s))?
        .into_inner();
    if ctx.json() {
        return output::print_json(&device_json(&d));
    }
    print_device(&d)
}

/// How `device show` describes the device's TrustRoot.
fn trust_text(d: &pb::DeviceInfo, now: u64) -> String {
    let version = d.trust_root_version;
    match trust_state(d, now, DEFAULT_TRUST_HORIZON_SECS) {
        TrustState::Unknown => "not reported".into(),
        TrustState::Expired => format!(
            "version {version}, expired {}: the device cannot verify updates until a successor reaches it",
            crate::duration::utc_text(d.trust_root_expires_at)
        ),
        _ => format!(
            "version {version}, expires {} (in {})",
            crate::duration::utc_text(d.trust_root_expires_at),
            crate::duration::compact(d.trust_root_expires_at.saturating_sub(now))
        ),
    }
}

/// The default `--trust-horizon`: 90 days.
pub const DEFAULT_TRUST_HORIZON_SECS: u64 = 90 * 86_400;

fn print_device(d: &pb::DeviceInfo) -> anyhow::Result<()> {
    let now = now_unix();
    let a = d.attributes.clone().unwrap_or_default();
    let key_id = aloft_protocol::PublicKey::from_sec1(&d.public_key)
        .map_or_else(|_| "(invalid key)".to_owned(), |k| k.key_id().to_string());
    output::print_fields(&[
        ("id", d.device_id.clone()),
        (
            "status",
            format!("{} (seq {})", status_word(d.status), d.status_seq),
        ),
        ("release", dash(&d.release_id)),
        ("firmware", dash(&d.firmware_version)),
        ("security version", d.security_version.to_string()),
        ("slot", slot_word(d.active_slot).unwrap_or("-").into()),
        ("trust root", trust_text(d, now)),
        (
            "server clock",
            match d.server_clock_ahead_secs {
                0 => "agrees".into(),
                s => format!(
                    "{} ahead of what the device accepts (check the server's time)",
                    crate::duration::compact(s)
                ),
            },
        ),
        ("status changed", age(now, d.status_changed_at)),
        ("last seen", age(now, d.last_seen)),
        ("connected", yes_no(d.connected).into()),
        (
            "suspected broken",
            match pb::BrokenReason::try_from(d.suspected_broken) {
                Ok(pb::BrokenReason::RepeatedRollbacks) => {
                    format!("yes: {} recent rollbacks", d.recent_rollbacks)
                }
                Ok(pb::BrokenReason::SilentAfterUpdate) => {
                    "yes: silent soon after taking an update".into()
                }
                _ => "no".into(),
            },
        ),
        ("recent rollbacks", d.recent_rollbacks.to_string()),
        ("revoked", yes_no(d.revoked).into()),
        ("registered", age(now, d.registered_at)),
        ("key id", key_id),
        (
            "key made",
            match key_origin_word(d.key_origin) {
                "on_device" => "on the device".into(),
                "off_device" => "off the device (development)".into(),
                _ => "-".into(),
            },
        ),
        ("registered by", dash(&d.registered_by)),
        ("payloads", crate::register::support_word(d.payloads).into()),
        ("product", dash(&a.product)),
        ("hardware", dash(&a.hardware)),
        ("region", dash(&a.region)),
        ("time zone", dash(&a.time_zone)),
        ("tags", dash(&a.tags.join(","))),
        ("test device", yes_no(a.test_device).into()),
    ])
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

async fn revoke(ctx: &mut Ctx, id: &str) -> anyhow::Result<()> {
    let d = ctx
        .client
        .revoke_device(pb::RevokeDeviceRequest {
            device_id: id.to_owned(),
        })
        .await
        .map_err(|s| status_error(&format!("revoking device {id}"), &s))?
        .into_inner();
    if ctx.json() {
        return output::print_json(&device_json(&d));
    }
    output::print_fields(&[
        ("revoked", d.device_id.clone()),
        ("status", status_word(d.status).into()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_parse() {
        assert_eq!(
            parse_attr("product=sensor").unwrap(),
            Attr::Product("sensor".into())
        );
        assert_eq!(
            parse_attr("hardware = rev-b ").unwrap(),
            Attr::Hardware("rev-b".into())
        );
        assert_eq!(
            parse_attr("region=eu-west").unwrap(),
            Attr::Region("eu-west".into())
        );
        assert_eq!(
            parse_attr("time_zone=America/Argentina/Buenos_Aires").unwrap(),
            Attr::TimeZone("America/Argentina/Buenos_Aires".into())
        );
        assert_eq!(
            parse_attr("time_zone=Etc/GMT+5").unwrap(),
            Attr::TimeZone("Etc/GMT+5".into())
        );
        assert_eq!(
            parse_attr("time_zone=UTC").unwrap(),
            Attr::TimeZone("UTC".into())
        );
        assert_eq!(
            parse_attr("tags=lab, canary,,roof").unwrap(),
            Attr::Tags(vec!["lab".into(), "canary".into(), "roof".into()])
        );
        assert_eq!(parse_attr("tags=").unwrap(), Attr::Tags(vec![]));
        assert_eq!(parse_attr("test=true").unwrap(), Attr::Test(true));
        assert_eq!(parse_attr("test=false").unwrap(), Attr::Test(false));
    }

    #[test]
    fn bad_attributes_are_refused_clearly() {
        for (bad, why) in [
            ("colour=red", "unknown attribute \"colour\""),
            ("product", "not KEY=VALUE"),
            ("product=", "needs a value"),
            ("test=yes", "true or false"),
            ("time_zone=Berlin time", "IANA"),
            ("time_zone=Europe//Berlin", "IANA"),
            ("time_zone=/Europe", "IANA"),
            ("time_zone=../etc", "IANA"),
            ("tags=a b,c", "whitespace"),
            ("region=eu\u{1b}[31m", "control"),
        ] {
            let err = parse_attr(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn attributes_combine_and_refuse_duplicates() {
        let attrs = [
            parse_attr("product=sensor").unwrap(),
            parse_attr("hardware=rev-b").unwrap(),
            parse_attr("tags=a,b").unwrap(),
            parse_attr("test=true").unwrap(),
            parse_attr("time_zone=Europe/Berlin").unwrap(),
        ];
        let (wire, map) = build_attributes(&attrs).unwrap();
        assert_eq!(wire.product, "sensor");
        assert_eq!(wire.hardware, "rev-b");
        assert_eq!(wire.tags, ["a", "b"]);
        assert!(wire.test_device);
        assert_eq!(wire.time_zone, "Europe/Berlin");
        assert_eq!(map["tags"], "a,b");
        assert_eq!(map["test"], "true");

        let twice = [
            parse_attr("product=a").unwrap(),
            parse_attr("product=b").unwrap(),
        ];
        assert!(
            build_attributes(&twice)
                .unwrap_err()
                .to_string()
                .contains("given twice")
        );
    }

    #[test]
    fn device_json_has_the_documented_shape() {
        let d = pb::DeviceInfo {
            device_id: "d1".into(),
            status: pb::DeviceStatus::Updated as i32,
            firmware_version: "1.2.3".into(),
            active_slot: pb::Slot::B as i32,
            last_seen: 1_700_000_000,
            attributes: Some(pb::DeviceAttributes {
                product: "p".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = serde_json::to_value(device_json(&d)).unwrap();
        assert_eq!(v["id"], "d1");
        assert_eq!(v["status"], "updated");
        assert_eq!(v["firmware_version"], "1.2.3");
        assert_eq!(v["slot"], "b");
        assert_eq!(v["last_seen"], 1_700_000_000);
        assert_eq!(v["attributes"]["product"], "p");
        assert_eq!(v["release_id"], serde_json::Value::Null);
        assert_eq!(v["revoked"], false);
        assert_eq!(v["suspected_broken"], serde_json::Value::Null);
        let broken = pb::DeviceInfo {
            suspected_broken: pb::BrokenReason::RepeatedRollbacks as i32,
            recent_rollbacks: 3,
            ..d
        };
        let v = serde_json::to_value(device_json(&broken)).unwrap();
        assert_eq!(v["suspected_broken"], "repeated_rollbacks");
        assert_eq!(v["recent_rollbacks"], 3);
        assert_eq!(flags(&broken, 0, 0), "broken");
    }

    #[test]
    fn trust_roots_are_flagged_by_expiry_and_the_device_word() {
        let now = 1_700_000_000;
        let day = 86_400;
        let with = |version, expires_at, expired| pb::DeviceInfo {
            trust_root_version: version,
            trust_root_expires_at: expires_at,
            trust_root_expired: expired,
            ..Default::default()
        };
        let horizon = 90 * day;
        assert_eq!(
            trust_state(&with(0, 0, false), now, horizon),
            TrustState::Unknown
        );
        assert_eq!(
            trust_state(&with(2, now + 200 * day, false), now, horizon),
            TrustState::Valid
        );
        assert_eq!(
            trust_state(&with(2, now + 40 * day, false), now, horizon),
            TrustState::Expiring
        );
        assert_eq!(
            trust_state(&with(1, now - 1, false), now, horizon),
            TrustState::Expired
        );
        assert_eq!(
            trust_state(&with(1, now + 200 * day, true), now, horizon),
            TrustState::Expired,
            "the device's own word counts"
        );
        assert_eq!(
            trust_cell(&with(2, now + 200 * day, false), now, horizon),
            "v2"
        );
        assert_eq!(
            trust_cell(&with(2, now + 40 * day, false), now, horizon),
            "v2 exp 40d"
        );
        assert_eq!(
            trust_cell(&with(1, now - 1, false), now, horizon),
            "v1 EXPIRED"
        );
        assert_eq!(
            flags(&with(2, now + 40 * day, false), now, horizon),
            "root-expiring"
        );
        let v =
            serde_json::to_value(device_json_at(&with(1, now - 1, true), now, horizon)).unwrap();
        assert_eq!(v["trust_root"], "expired");
        assert_eq!(v["trust_root_version"], 1);
    }
}
