//! `aloft device ...`: provision, list, show and revoke devices.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use aloft_protocol::prost::Message as _;
use aloft_protocol::{DeviceId, SecretKey, Version, pb};
use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::Ctx;
use crate::client::status_error;
use crate::duration::{age, now_unix, parse_duration};
use crate::output::{self, Table, dash, non_empty, non_zero, slot_word, status_word};

/// File name of the device's private identity bundle (protobuf, mode 0600).
pub const IDENTITY_FILE: &str = "identity.pb";
/// File name of the human-readable identity summary (no private key).
pub const SUMMARY_FILE: &str = "identity.json";

/// Devices per ListDevices page.
const PAGE: u32 = 500;

/// `aloft device` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Create a device key pair, register the device and write its identity bundle.
    Provision(ProvisionArgs),
    /// List devices.
    List(ListArgs),
    /// Show one device.
    Show {
        /// Device id.
        id: String,
    },
    /// Revoke a device: it can no longer connect.
    Revoke {
        /// Device id.
        id: String,
    },
}

/// Arguments of `aloft device provision`.
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Device id (1-64 of A-Z a-z 0-9 . _ : -).
    #[arg(long)]
    pub id: String,
    /// Attribute KEY=VALUE; keys: product, hardware, region, time_zone (IANA
    /// name), tags (comma list), test (true/false). Repeat for each.
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attr)]
    pub attrs: Vec<Attr>,
    /// Firmware version installed at the factory (MAJOR.MINOR.PATCH).
    #[arg(long, value_name = "V")]
    pub factory_version: Option<String>,
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
    /// Selector expression (see ARCHITECTURE.md); default: all devices.
    #[arg(long, value_name = "S")]
    pub selector: Option<String>,
    /// Only devices not seen for at least this long, e.g. 30m, 24h, 7d.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stale: Option<std::time::Duration>,
    /// Only devices suspected broken: repeated rollbacks, or silent soon
    /// after taking an update (thresholds are the server's).
    #[arg(long)]
    pub broken: bool,
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
}

/// Checks local input (ids, attributes, the output directory) so a mistake
/// is reported before anything is registered.
pub fn prepare(cmd: &DeviceCommand) -> anyhow::Result<Option<Provision>> {
    let DeviceCommand::Provision(args) = cmd else {
        return Ok(None);
    };
    let id = DeviceId::new(&args.id).map_err(|_| {
        anyhow!(
            "invalid device id {:?}: use 1-64 of A-Z a-z 0-9 . _ : - (not starting with .)",
            args.id
        )
    })?;
    let (attributes, attribute_map) = build_attributes(&args.attrs)?;
    let factory_version = match &args.factory_version {
        Some(v) => Version::parse(v)
            .map_err(|_| {
                anyhow!("invalid --factory-version {v:?}: use MAJOR.MINOR.PATCH, e.g. 1.0.0")
            })?
            .to_string(),
        None => String::new(),
    };
    let device_ca_pem = match &args.device_ca {
        Some(path) => Some(
            fs::read_to_string(path)
                .with_context(|| format!("could not read --device-ca {}", path.display()))?,
        ),
        None => None,
    };
    fs::create_dir_all(&args.out).with_context(|| {
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
    Ok(Some(Provision {
        id,
        attributes,
        attribute_map,
        factory_version,
        out: args.out.clone(),
        device_server_url: args.device_server_url.clone(),
        device_ca_pem,
    }))
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
        DeviceCommand::List(args) => list(ctx, args).await,
        DeviceCommand::Show { id } => show(ctx, &id).await,
        DeviceCommand::Revoke { id } => revoke(ctx, &id).await,
    }
}

/// What `identity.json` holds: the bundle without the private key.
#[derive(Debug, Serialize)]
struct IdentitySummary {
    device_id: String,
    public_key: String,
    key_id: String,
    server_url: String,
    ca_pem: Option<String>,
    trust_root_version: u32,
    trust_root_expires_at: u64,
    factory_version: Option<String>,
    attributes: BTreeMap<String, String>,
}

async fn provision(ctx: &mut Ctx, plan: Provision) -> anyhow::Result<()> {
    let action = format!("provisioning device {}", plan.id);
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

    let key = SecretKey::generate();
    let public = key.public_key();
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
        private_key: key.to_bytes().to_vec(),
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

    let registered = ctx
        .client
        .register_device(pb::RegisterDeviceRequest {
            device_id: plan.id.to_string(),
            public_key: public.to_sec1_compressed().to_vec(),
            attributes: Some(plan.attributes.clone()),
            factory_version: plan.factory_version.clone(),
        })
        .await;
    let registered = match registered {
        Ok(r) => r.into_inner(),
        Err(status) => {
            let _ = fs::remove_file(&tmp_path);
            return Err(status_error(&action, &status));
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
        public_key: hex::encode(public.to_sec1_compressed()),
        key_id: public.key_id().to_string(),
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

    if ctx.json() {
        output::print_json(&device_json(&registered))
    } else {
        output::print_fields(&[
            ("provisioned", plan.id.to_string()),
            ("key id", summary.key_id),
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

/// Converts a device to its JSON form.
pub fn device_json(d: &pb::DeviceInfo) -> DeviceJson {
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

fn flags(d: &pb::DeviceInfo) -> String {
    let test = d.attributes.as_ref().is_some_and(|a| a.test_device);
    let broken = broken_word(d.suspected_broken).is_some();
    let flags: Vec<&str> = [
        (d.revoked, "revoked"),
        (d.connected, "online"),
        (test, "test"),
        (broken, "broken"),
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
    if ctx.json() {
        return output::print_json(&devices.iter().map(device_json).collect::<Vec<_>>());
    }
    let now = now_unix();
    let mut table = Table::new(&[
        "ID",
        "STATUS",
        "FIRMWARE",
        "SLOT",
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
            dash(&a.product),
            dash(&a.hardware),
            dash(&a.region),
            age(now, d.last_seen),
            flags(d),
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
        assert_eq!(flags(&broken), "broken");
    }
}
