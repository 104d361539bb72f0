//! Benchmark 3's baselines: P-256 ECDSA verifications per second on one
//! core with the design card's `p256` (what devices use), with `ring`
//! (through `aloft_protocol::ring_verify`, which a server may use), and with
//! `openssl speed ecdsap256` when OpenSSL is installed.
//!
//! Both Rust verifiers check the same signed device hello (a real
//! `SignedDeviceMessage`), including the domain-tagged SHA-256 of its payload.

use std::hint::black_box;
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aloft_protocol::keys::Domain;
use aloft_protocol::ring_verify::RingPublicKey;
use aloft_protocol::{SecretKey, Signature, device_msg, pb};
use anyhow::{Context, bail};

use crate::benches::{Bench, Ctx};
use crate::measure::median;
use crate::report::{BenchResult, Status, Table};

/// The benchmark.
#[derive(Debug)]
pub struct VerifyBaselines;

impl Bench for VerifyBaselines {
    fn name(&self) -> &'static str {
        "verify-baselines"
    }

    fn title(&self) -> &'static str {
        "P-256 verification baselines (for the check-in rate)"
    }

    fn item(&self) -> u8 {
        3
    }

    fn run(&self, ctx: &Ctx) -> anyhow::Result<BenchResult> {
        run(ctx)
    }
}

/// Verifications per second of `verify` over `budget`.
pub fn rate(budget: Duration, mut verify: impl FnMut() -> bool) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        for _ in 0..32 {
            if !black_box(verify()) {
                bail!("a valid signature did not verify");
            }
        }
        n += 32;
        let elapsed = start.elapsed();
        if elapsed >= budget {
            return Ok(n as f64 / elapsed.as_secs_f64());
        }
    }
}

/// The `verify/s` figure of `openssl speed` output for nistp256.
pub fn parse_openssl_speed(output: &str) -> Option<f64> {
    let line = output
        .lines()
        .find(|l| l.contains("ecdsa") && l.contains("nistp256"))?;
    line.split_whitespace().last()?.parse().ok()
}

pub fn openssl(ctx: &Ctx, seconds: u32) -> anyhow::Result<(String, f64)> {
    let version = Command::new("openssl")
        .arg("version")
        .output()
        .context("running `openssl version`")?;
    if !version.status.success() {
        bail!("`openssl version` failed");
    }
    // "OpenSSL 3.0.19 27 Jan 2026 (Library: ...)": keep name and version.
    let version = String::from_utf8_lossy(&version.stdout)
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = ctx
        .spawn(
            Command::new("openssl")
                .args(["speed", "-seconds", &seconds.to_string(), "ecdsap256"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        )
        .context("starting `openssl speed`")?;
    let mut text = String::new();
    child
        .0
        .stdout
        .take()
        .context("openssl stdout")?
        .read_to_string(&mut text)
        .context("reading `openssl speed` output")?;
    let status = child.0.wait().context("waiting for `openssl speed`")?;
    if !status.success() {
        bail!("`openssl speed` failed ({status})");
    }
    let rate = parse_openssl_speed(&text)
        .with_context(|| format!("no nistp256 verify/s in `openssl speed` output:\n{text}"))?;
    Ok((version, rate))
}

/// ring's verification rate on one thread over `budget` (a signed device
/// hello, as the server verifies it).
pub fn ring_rate(budget: Duration) -> anyhow::Result<f64> {
    let key = SecretKey::generate();
    let ring = RingPublicKey::new(&key.public_key());
    let hello = pb::DeviceMessage {
        device_id: "device-000001".into(),
        challenge: vec![0x5A; 32],
        seq: 1,
        body: None,
    };
    let signed = device_msg::seal(&hello, &key);
    let sig = Signature::from_slice(&signed.signature)?;
    rate(budget, || {
        ring.verify(Domain::DeviceMessage, &signed.payload, &sig)
            .is_ok()
    })
}

fn run(ctx: &Ctx) -> anyhow::Result<BenchResult> {
    let mut r = BenchResult::new(
        "verify-baselines",
        "P-256 verification baselines (for the check-in rate)",
        3,
        Status::Measured,
    );
    let key = SecretKey::generate();
    let public = key.public_key();
    let ring = RingPublicKey::new(&public);
    let hello = pb::DeviceMessage {
        device_id: "device-000001".into(),
        challenge: vec![0x5A; 32],
        seq: 1,
        body: Some(pb::device_message::Body::Hello(pb::Hello {
            device_nonce: vec![7; 16],
            state: None,
            reports: Vec::new(),
        })),
    };
    let signed = device_msg::seal(&hello, &key);
    let sig = Signature::from_slice(&signed.signature)?;
    let payload = signed.payload.clone();

    let rounds = ctx.reps(5, 2);
    let budget = Duration::from_millis(if ctx.quick { 300 } else { 1000 });
    let mut p256_rates = Vec::new();
    let mut ring_rates = Vec::new();
    for _ in 0..rounds {
        p256_rates.push(rate(budget, || {
            public.verify(Domain::DeviceMessage, &payload, &sig).is_ok()
        })?);
        ring_rates.push(rate(budget, || {
            ring.verify(Domain::DeviceMessage, &payload, &sig).is_ok()
        })?);
    }
    let p256 = median(&p256_rates);
    let ring_rate = median(&ring_rates);
    r.samples("p256_verifies_per_s", &p256_rates);
    r.samples("ring_verifies_per_s", &ring_rates);
    r.figure("p256_verifies_per_s", p256);
    r.figure("ring_verifies_per_s", ring_rate);

    let mut t = Table::new(
        &format!(
            "P-256 ECDSA verifications per second, one thread (median of {rounds} rounds of {:.1} s)",
            budget.as_secs_f64()
        ),
        &["implementation", "verifies/s", "vs p256"],
    );
    t.row(&[
        "p256 0.14 (`PublicKey::verify`, device hello with domain prehash)".to_string(),
        format!("{p256:.0}"),
        "1.00".into(),
    ]);
    t.row(&[
        "ring 0.17 (`RingPublicKey::verify`, same message and signature)".to_string(),
        format!("{ring_rate:.0}"),
        format!("{:.2}", ring_rate / p256),
    ]);
    let mut fastest = ring_rate.max(p256);
    match openssl(ctx, if ctx.quick { 1 } else { 3 }) {
        Ok((version, rate)) => {
            t.row(&[
                format!(
                    "{version}: `openssl speed -seconds {} ecdsap256`",
                    if ctx.quick { 1 } else { 3 }
                ),
                format!("{rate:.0}"),
                format!("{:.2}", rate / p256),
            ]);
            r.figure("openssl_verifies_per_s", rate);
            fastest = fastest.max(rate);
        }
        Err(e) => r.note(format!("OpenSSL skipped: {e:#}")),
    }
    r.tables.push(t);
    r.figure("fastest_verifies_per_s", fastest);
    r.goal(
        "ring / p256 verification rate (one core)",
        "(reference)",
        format!("{:.2} ({ring_rate:.0}/s vs {p256:.0}/s)", ring_rate / p256),
        None,
    );
    r.goal(
        "fastest P-256 verify rate on one core (check-in rate goal: >= 0.8 of it)",
        "(reference)",
        format!("{fastest:.0}/s"),
        None,
    );
    r.note(
        "The ring verifier accepts exactly the signatures the p256 one accepts (differential \
         test: crates/aloft-protocol/tests/ring_verify.rs); the server verifies device messages with it. \
         Rates include the SHA-256 of the ~70-byte domain-tagged hello; ring's also a copy of it.",
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openssl_speed_output() {
        let out = "Doing 256 bits verify ecdsa ops for 3s\n\
                   version: 3.0.11\n\
                   \x20                             sign    verify    sign/s verify/s\n\
                   \x20256 bits ecdsa (nistp256)   0.0000s   0.0001s  41234.5  13987.6\n";
        assert_eq!(parse_openssl_speed(out), Some(13987.6));
        assert_eq!(parse_openssl_speed("nothing here"), None);
    }
}
