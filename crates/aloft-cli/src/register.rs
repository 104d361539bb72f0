//! Registering devices whose key was born on the device: `aloft device
//! register --request FILE`, `aloft device import FILE` and `aloft device
//! wait ID --confirmed RELEASE` (the factory station's commands; a factory
//! token may run them).
//!
//! A request file holds registration requests as the device wrote them
//! (`aloft-agent register-request`, `aloft_agent::enroll`), one per line:
//!
//! - JSON lines: `{"device_id":"ID","payload":"HEX","signature":"HEX"}`
//!   (`device_id` optional: when given, the server checks the request is
//!   for that id);
//! - or CSV: `ID,PAYLOAD_HEX,SIGNATURE_HEX` (ID may be empty), with an
//!   optional header line `device_id,payload,signature`.
//!
//! Blank lines and lines starting with `#` are skipped. Every line is read
//! before anything is sent, and a file with any unreadable line is refused
//! whole, naming `FILE:LINE`: the server's import is all or nothing too.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aloft_protocol::pb;
use aloft_protocol::prost::Message as _;
use anyhow::{Context as _, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::client::status_error;
use crate::output::{self, status_word};
use crate::{Ctx, args};

/// Most requests one import sends (the server's limit).
pub const MAX_IMPORT: usize = 100_000;
/// Largest request file read.
const MAX_FILE_LEN: u64 = 512 * 1024 * 1024;
/// Most bytes of items in one ImportDevices message (the server takes up to
/// 1 MiB per message).
const MAX_BATCH_BYTES: usize = 512 * 1024;

/// Arguments of `aloft device register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The device's registration request (one line as `aloft-agent
    /// register-request` wrote it: JSON or CSV).
    #[arg(long, value_name = "FILE")]
    pub request: PathBuf,
    /// The id the request must be for (default: the file's device_id, if any).
    #[arg(long, value_name = "ID", value_parser = args::device_id)]
    pub id: Option<String>,
}

/// Arguments of `aloft device import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Registration requests, one per line: JSON lines or CSV (see below).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Check every request, register nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Requests per message sent (each message also stays under 512 KiB).
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
}

/// Arguments of `aloft device wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Device id.
    #[arg(value_parser = args::device_id)]
    pub id: String,
    /// Release the device must confirm (from `aloft release list`).
    #[arg(long, value_name = "RELEASE", value_parser = args::release_id)]
    pub confirmed: String,
    /// How long to wait (at most 1h).
    #[arg(long, value_name = "DURATION", default_value = "10m",
          value_parser = crate::duration::parse_duration)]
    pub timeout: Duration,
}

/// One request read from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestItem {
    /// `FILE:LINE`.
    pub source: String,
    /// The id the file names for it (empty: none).
    pub device_id: String,
    /// The signed request.
    pub registration: pb::SignedRegistration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestJson {
    #[serde(default)]
    device_id: String,
    payload: String,
    signature: String,
}

fn unhex(text: &str, what: &str) -> Result<Vec<u8>, String> {
    hex::decode(text.trim()).map_err(|e| format!("{what} is not hex ({e})"))
}

/// Parses one non-blank line of a request file.
fn parse_line(line: &str) -> Result<(String, pb::SignedRegistration), String> {
    let (id, payload, signature) = if line.starts_with('{') {
        let j: RequestJson = serde_json::from_str(line).map_err(|e| {
            format!("not a request ({e}): expected {{\"device_id\":..,\"payload\":HEX,\"signature\":HEX}}")
        })?;
        (j.device_id, j.payload, j.signature)
    } else {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [id, payload, signature] = fields[..] else {
            return Err(format!(
                "{} CSV fields: expected device_id,payload,signature",
                fields.len()
            ));
        };
        (id.to_owned(), payload.to_owned(), signature.to_owned())
    };
    if !id.is_empty() {
        args::device_id(&id)?;
    }
    let registration = pb::SignedRegistration {
        payload: unhex(&payload, "payload")?,
        signature: unhex(&signature, "signature")?,
    };
    if registration.payload.is_empty() || registration.signature.is_empty() {
        return Err("payload and signature must not be empty".into());
    }
    Ok((id, registration))
}

/// Parses a request file's text (see the module docs); `name` prefixes the
/// sources. Refuses the file if any line is unreadable, naming up to ten.
pub fn parse_requests(name: &str, text: &str) -> anyhow::Result<Vec<RequestItem>> {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    let mut bad = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if items.is_empty() && bad == 0 && line.replace(' ', "") == "device_id,payload,signature" {
            continue;
        }
        let source = format!("{name}:{}", i + 1);
        match parse_line(line) {
            Ok((device_id, registration)) => items.push(RequestItem {
                source,
                device_id,
                registration,
            }),
            Err(e) => {
                bad += 1;
                if errors.len() < 10 {
                    errors.push(format!("  {source}: {e}"));
                }
            }
        }
    }
    if bad > 0 {
        bail!(
            "{name}: {bad} unreadable line{} (nothing was sent):\n{}",
            if bad == 1 { "" } else { "s" },
            errors.join("\n")
        );
    }
    if items.is_empty() {
        bail!("{name} holds no registration requests");
    }
    Ok(items)
}

/// Reads and parses a request file (size-checked first).
pub fn read_requests(path: &Path) -> anyhow::Result<Vec<RequestItem>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("could not read {}", path.display()))?
        .len();
    if len > MAX_FILE_LEN {
        bail!(
            "{} is {len} bytes: more than {MAX_IMPORT} requests can be; split the file",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read {}", path.display()))?;
    parse_requests(&path.display().to_string(), &text)
}

/// `aloft device register --request FILE`.
pub async fn register(ctx: &mut Ctx, args: RegisterArgs) -> anyhow::Result<()> {
    let items = read_requests(&args.request)?;
    let [item] = &items[..] else {
        bail!(
            "{} holds {} requests: register one per call, or use `aloft device import {}`",
            args.request.display(),
            items.len(),
            args.request.display()
        );
    };
    let claimed = args.id.clone().unwrap_or_else(|| item.device_id.clone());
    let action = if claimed.is_empty() {
        format!("registering the request in {}", args.request.display())
    } else {
        format!("registering device {claimed}")
    };
    let d = ctx
        .client
        .register_device(pb::RegisterDeviceRequest {
            device_id: claimed,
            registration: Some(item.registration.clone()),
            ..Default::default()
        })
        .await
        .map_err(|s| status_error(&action, &s))?
        .into_inner();
    if ctx.json() {
        return output::print_json(&crate::device::device_json(&d));
    }
    let key_id = aloft_protocol::PublicKey::from_sec1(&d.public_key)
        .map_or_else(|_| "(invalid key)".to_owned(), |k| k.key_id().to_string());
    output::print_fields(&[
        ("registered", d.device_id.clone()),
        ("key id", key_id),
        ("key made", "on the device".into()),
        ("firmware", d.firmware_version.clone()),
        ("payloads", support_word(d.payloads).into()),
    ])
}

/// `encrypted-only`, `encrypted-or-signature-only`, `signature-only`.
pub fn support_word(support: i32) -> &'static str {
    match pb::PayloadSupport::try_from(support) {
        Ok(pb::PayloadSupport::EncryptedOrSignatureOnly) => "encrypted-or-signature-only",
        Ok(pb::PayloadSupport::SignatureOnly) => "signature-only",
        _ => "encrypted-only",
    }
}

/// The messages of an import: at most `batch` items and
/// [`MAX_BATCH_BYTES`] each; the first carries `dry_run`.
pub fn batches(
    items: Vec<RequestItem>,
    batch: usize,
    dry_run: bool,
) -> Vec<pb::ImportDevicesRequest> {
    let mut out = Vec::new();
    let mut current: Vec<pb::ImportItem> = Vec::new();
    let mut bytes = 0usize;
    for item in items {
        let item = pb::ImportItem {
            registration: Some(item.registration),
            device_id: item.device_id,
            source: item.source,
        };
        let len = item.encoded_len() + 4;
        if !current.is_empty() && (current.len() >= batch || bytes + len > MAX_BATCH_BYTES) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += len;
        current.push(item);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out.into_iter()
        .enumerate()
        .map(|(i, items)| pb::ImportDevicesRequest {
            items,
            dry_run: i == 0 && dry_run,
        })
        .collect()
}

#[derive(Serialize)]
struct ImportJson {
    file: String,
    registered: u32,
    checked: u32,
    dry_run: bool,
    refused: u32,
    errors: Vec<ImportErrorJson>,
    seconds: f64,
    devices_per_second: f64,
}

#[derive(Serialize)]
struct ImportErrorJson {
    source: String,
    device_id: String,
    error: String,
}

/// `aloft device import FILE`.
pub async fn import(ctx: &mut Ctx, args: ImportArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let items = read_requests(&args.file)?;
    let file = args.file.display().to_string();
    if items.len() > MAX_IMPORT {
        bail!(
            "{file} holds {} requests; an import holds at most {MAX_IMPORT}: split the file",
            items.len()
        );
    }
    let count = items.len();
    let messages = batches(items, args.batch as usize, args.dry_run);
    let response = ctx
        .client
        .import_devices(tokio_stream::iter(messages))
        .await
        .map_err(|s| status_error(&format!("importing {file}"), &s))?
        .into_inner();
    let seconds = started.elapsed().as_secs_f64();
    let rate = if seconds > 0.0 {
        f64::from(response.checked) / seconds
    } else {
        0.0
    };
    if ctx.json() {
        output::print_json(&ImportJson {
            file: file.clone(),
            registered: response.registered,
            checked: response.checked,
            dry_run: response.dry_run,
            refused: response.refused,
            errors: response
                .errors
                .iter()
                .map(|e| ImportErrorJson {
                    source: e.source.clone(),
                    device_id: e.device_id.clone(),
                    error: e.error.clone(),
                })
                .collect(),
            seconds,
            devices_per_second: rate,
        })?;
    } else if response.refused == 0 {
        let what = if response.dry_run {
            format!(
                "checked {} requests (dry run: nothing registered)",
                response.checked
            )
        } else {
            format!("registered {} devices", response.registered)
        };
        println!("{what} from {file} in {seconds:.2} s ({rate:.0} devices/s)");
    }
    if response.refused > 0 {
        for e in &response.errors {
            let id = if e.device_id.is_empty() {
                String::new()
            } else {
                format!(" {}", e.device_id)
            };
            eprintln!("  {}{id}: {}", e.source, e.error);
        }
        let unlisted = response.refused as usize - response.errors.len();
        let more = if unlisted > 0 {
            format!(" ({unlisted} more not listed)")
        } else {
            String::new()
        };
        bail!(
            "importing {file}: {} of {count} requests refused{more}, so nothing was registered: fix or remove them and import the file again",
            response.refused
        );
    }
    Ok(())
}

/// `aloft device wait ID --confirmed RELEASE`: exit 0 once the device runs
/// the release confirmed; an error when it failed or rolled back on it, or
/// the time ran out.
pub async fn wait(ctx: &mut Ctx, args: WaitArgs) -> anyhow::Result<()> {
    let timeout = args.timeout.as_secs().clamp(1, 3600) as u32;
    let action = format!(
        "waiting for device {} to confirm {}",
        args.id, args.confirmed
    );
    let d = ctx
        .client
        .wait_device(pb::WaitDeviceRequest {
            device_id: args.id.clone(),
            release_id: args.confirmed.clone(),
            timeout_secs: timeout,
        })
        .await
        .map_err(|s| status_error(&action, &s))?
        .into_inner();
    let confirmed = d.status == pb::DeviceStatus::Updated as i32 && d.release_id == args.confirmed;
    if ctx.json() {
        output::print_json(&crate::device::device_json(&d))?;
    } else if confirmed {
        println!(
            "device {} confirmed {} (firmware {})",
            d.device_id, d.release_id, d.firmware_version
        );
    }
    if !confirmed {
        bail!(
            "{action}: the device {} on {} (firmware {}): do not ship it; `aloft device show {}` has its status",
            match pb::DeviceStatus::try_from(d.status) {
                Ok(pb::DeviceStatus::RolledBack) => "rolled back".to_owned(),
                _ => status_word(d.status).to_owned(),
            },
            d.release_id,
            d.firmware_version,
            d.device_id
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str) -> String {
        format!("{{\"device_id\":\"{id}\",\"payload\":\"0a01\",\"signature\":\"abcd\"}}")
    }

    #[test]
    fn json_lines_and_csv_parse_with_their_sources() {
        let text = format!("{}\n\n# a comment\n{}\n", line("d1"), "d2, 0a02 ,ef01");
        let items = parse_requests("f.jsonl", &text).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].source, "f.jsonl:1");
        assert_eq!(items[0].device_id, "d1");
        assert_eq!(items[0].registration.payload, [0x0a, 0x01]);
        assert_eq!(items[1].source, "f.jsonl:4");
        assert_eq!(items[1].registration.signature, [0xef, 0x01]);
        let csv = "device_id,payload,signature\n,0a03,0102\n";
        let items = parse_requests("f.csv", csv).unwrap();
        assert_eq!(items.len(), 1, "header skipped");
        assert_eq!(items[0].device_id, "");
        assert_eq!(items[0].source, "f.csv:2");
    }

    #[test]
    fn an_unreadable_line_refuses_the_file_naming_it() {
        for (bad, why) in [
            ("{\"payload\":\"zz\",\"signature\":\"00\"}", "not hex"),
            ("{\"payload\":\"00\"}", "not a request"),
            (
                "{\"payload\":\"00\",\"signature\":\"00\",\"key\":\"1\"}",
                "not a request",
            ),
            ("d1,00", "2 CSV fields"),
            ("bad id,00,00", "not a valid device id"),
            ("d1,,00", "must not be empty"),
        ] {
            let text = format!("{}\n{bad}\n", line("ok"));
            let err = parse_requests("f", &text).unwrap_err().to_string();
            assert!(err.contains("f:2") && err.contains(why), "{bad}: {err}");
            assert!(err.contains("nothing was sent"), "{err}");
        }
        assert!(parse_requests("f", "\n# only\n").is_err());
    }

    #[test]
    fn batches_bound_items_and_bytes() {
        let items: Vec<RequestItem> = (0..25)
            .map(|i| RequestItem {
                source: format!("f:{i}"),
                device_id: format!("d{i}"),
                registration: pb::SignedRegistration {
                    payload: vec![0; 100],
                    signature: vec![0; 64],
                },
            })
            .collect();
        let b = batches(items.clone(), 10, true);
        assert_eq!(
            b.iter().map(|m| m.items.len()).collect::<Vec<_>>(),
            [10, 10, 5]
        );
        assert!(b[0].dry_run && !b[1].dry_run);
        let big: Vec<RequestItem> = items
            .into_iter()
            .map(|mut i| {
                i.registration.payload = vec![0; 100 * 1024];
                i
            })
            .collect();
        let b = batches(big, 1000, false);
        assert!(
            b.iter()
                .all(|m| m.encoded_len() <= MAX_BATCH_BYTES + 200 * 1024)
        );
        assert_eq!(b.iter().map(|m| m.items.len()).sum::<usize>(), 25);
        assert!(b.len() >= 5);
    }
}
