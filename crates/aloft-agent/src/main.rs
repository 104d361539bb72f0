//! `aloft-agent`: device-side commands of the agent runtime.
//!
//! `aloft-agent register-request`: the first factory boot of a device whose
//! key is born on it (see `aloft_agent::enroll`): makes the key pair into
//! the key-less identity bundle the station wrote (`aloft device template`)
//! and prints the signed registration request, one JSON line, for the
//! station (`aloft device register --request FILE` or `aloft device import
//! FILE`). The private key stays in the bundle.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use aloft_agent::enroll::{EnrollOptions, enroll, request_line};
use aloft_protocol::{UnixTime, Version, pb};

const USAGE: &str = "\
Usage: aloft-agent register-request --identity FILE --factory-version V
                                    [--payloads SUPPORT] [--out FILE]

Makes the device's P-256 key pair on the device, stores the private key in
its identity bundle FILE (the key-less template from `aloft device
template`; mode 0600), and writes the registration request signed by the
new key (proof of possession) as one JSON line to --out (appended) or
stdout. A bundle that already holds a key keeps it: a fresh request is
signed with it. The private key is never printed.

  --identity FILE        the device's identity bundle (identity.pb)
  --factory-version V    firmware version in slot A, MAJOR.MINOR.PATCH
  --payloads SUPPORT     encrypted-only (default for this build),
                         encrypted-or-signature-only or signature-only
  --out FILE             append the request line to FILE (e.g. the
                         station's devices.jsonl) instead of stdout";

/// A parsed `register-request` command line.
#[derive(Debug, PartialEq)]
struct RequestArgs {
    identity: PathBuf,
    factory_version: Version,
    payloads: Option<pb::PayloadSupport>,
    out: Option<PathBuf>,
}

fn parse_payloads(text: &str) -> Result<pb::PayloadSupport, String> {
    match text {
        "encrypted-only" => Ok(pb::PayloadSupport::EncryptedOnly),
        "encrypted-or-signature-only" => Ok(pb::PayloadSupport::EncryptedOrSignatureOnly),
        "signature-only" => Ok(pb::PayloadSupport::SignatureOnly),
        _ => Err(format!(
            "--payloads {text:?}: use encrypted-only, encrypted-or-signature-only or signature-only"
        )),
    }
}

/// Parses the arguments after `register-request`.
fn parse(args: &[String]) -> Result<RequestArgs, String> {
    let mut identity = None;
    let mut version = None;
    let mut payloads = None;
    let mut out = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--identity" => identity = Some(PathBuf::from(value()?)),
            "--factory-version" => {
                let v = value()?;
                version = Some(Version::parse(&v).map_err(|_| {
                    format!("--factory-version {v:?} is not MAJOR.MINOR.PATCH (e.g. 1.0.0)")
                })?);
            }
            "--payloads" => payloads = Some(parse_payloads(&value()?)?),
            "--out" => out = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(RequestArgs {
        identity: identity.ok_or("--identity FILE is required")?,
        factory_version: version.ok_or("--factory-version V is required")?,
        payloads,
        out,
    })
}

fn register_request(args: &RequestArgs) -> Result<(), String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let enrolled = enroll(
        &args.identity,
        &EnrollOptions {
            factory_version: args.factory_version,
            payloads: args.payloads,
            now: UnixTime(now),
        },
    )
    .map_err(|e| e.to_string())?;
    let id = enrolled.identity.device_id().to_string();
    let mut line = request_line(&id, &enrolled.request);
    line.push('\n');
    match &args.out {
        Some(path) => {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(line.as_bytes()).map(|()| f))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            file.flush()
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        None => print!("{line}"),
    }
    eprintln!(
        "device {id}: {} key {}; registration request written{}",
        if enrolled.key_made {
            "made its"
        } else {
            "kept its existing"
        },
        enrolled.identity.public_key().key_id(),
        args.out
            .as_ref()
            .map(|p| format!(" to {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("register-request") => match parse(&args[1..]).and_then(|a| register_request(&a)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn arguments_parse_and_refuse_clearly() {
        let a = parse(&args(&[
            "--identity",
            "id.pb",
            "--factory-version",
            "1.0.0",
            "--payloads",
            "signature-only",
        ]))
        .unwrap();
        assert_eq!(a.identity, PathBuf::from("id.pb"));
        assert_eq!(a.payloads, Some(pb::PayloadSupport::SignatureOnly));
        for (bad, why) in [
            (&["--factory-version", "1.0.0"][..], "--identity"),
            (&["--identity", "x"], "--factory-version"),
            (&["--identity", "x", "--factory-version", "1.0"], "MAJOR"),
            (&["--identity"], "needs a value"),
            (&["--colour", "red"], "unknown"),
            (
                &[
                    "--identity",
                    "x",
                    "--factory-version",
                    "1.0.0",
                    "--payloads",
                    "aes",
                ],
                "encrypted-only",
            ),
        ] {
            let err = parse(&args(bad)).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
