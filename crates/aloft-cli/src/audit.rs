//! `aloft audit ...`: the server's tamper-evident audit log.
//!
//! `verify` checks the log here, not on the server: it reads every record's
//! exact bytes, the signed heads and the TrustRoot history, and applies
//! `aloft_protocol::audit::verify` (links, positions, head signatures under
//! the server keys of every TrustRoot the server held).

use std::time::Duration;

use aloft_protocol::audit::{self, Report};
use aloft_protocol::pb;
use aloft_protocol::prost::Message as _;
use aloft_protocol::trust::TrustChain;
use anyhow::bail;
use clap::Subcommand;
use serde::Serialize;

use crate::Ctx;
use crate::client::status_error;
use crate::duration::{now_unix, parse_duration, utc_text};
use crate::output::{self, Table};

/// `aloft audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit records, oldest first.
    List {
        /// Only records of the last DURATION, e.g. 90m, 24h, 7d.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        since: Option<Duration>,
    },
    /// Check the whole log: each record's link, its place, and the server's
    /// signed heads; name every record that is wrong. Exits 1 if any is.
    Verify,
}

/// Runs one `aloft audit` command.
pub async fn run(ctx: &mut Ctx, cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::List { since } => list(ctx, since).await,
        AuditCommand::Verify => verify(ctx).await,
    }
}

/// Every entry and the heads, page by page.
async fn fetch(
    ctx: &mut Ctx,
    since: u64,
) -> anyhow::Result<(Vec<pb::AuditEntry>, Vec<pb::SignedEnvelope>)> {
    let mut entries = Vec::new();
    let mut after = 0;
    loop {
        let page = ctx
            .client
            .list_audit(pb::ListAuditRequest {
                after_seq: after,
                since,
                limit: 5000,
            })
            .await
            .map_err(|s| status_error("reading the audit log", &s))?
            .into_inner();
        entries.extend(page.entries);
        if page.next_after_seq == 0 {
            return Ok((entries, page.heads));
        }
        after = page.next_after_seq;
    }
}

/// A record as `--json` prints it.
#[derive(Debug, Serialize)]
struct RecordJson {
    seq: u64,
    time: u64,
    method: String,
    token_id: String,
    token_name: String,
    role: String,
    peer: String,
    code: u32,
    message: String,
    subjects: Vec<String>,
}

fn outcome(code: u32) -> String {
    if code == 0 {
        "ok".to_owned()
    } else {
        // The gRPC code's name in snake case, as its spec writes it
        // (`PermissionDenied` -> `permission_denied`).
        let name = format!("{:?}", tonic::Code::from_i32(code as i32));
        let mut out = String::with_capacity(name.len() + 4);
        for (i, c) in name.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }
}

async fn list(ctx: &mut Ctx, since: Option<Duration>) -> anyhow::Result<()> {
    let since = since.map_or(0, |d| now_unix().saturating_sub(d.as_secs()).max(1));
    let (entries, _) = fetch(ctx, since).await?;
    let records: Vec<(u64, Option<pb::AuditRecord>)> = entries
        .iter()
        .map(|e| (e.seq, pb::AuditRecord::decode(e.record.as_slice()).ok()))
        .collect();
    if ctx.json() {
        let out: Vec<RecordJson> = records
            .into_iter()
            .filter_map(|(_, r)| r)
            .map(|r| RecordJson {
                seq: r.seq,
                time: r.time,
                method: r.method,
                token_id: r.token_id,
                token_name: r.token_name,
                role: r.role,
                peer: r.peer,
                code: r.code,
                message: r.message,
                subjects: r.subjects,
            })
            .collect();
        return output::print_json(&out);
    }
    let mut table = Table::new(&["SEQ", "TIME (UTC)", "WHO", "CALL", "RESULT", "WHAT"]);
    for (seq, r) in records {
        let Some(r) = r else {
            table.row(vec![
                seq.to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                "undecodable".into(),
                "run `aloft audit verify`".into(),
            ]);
            continue;
        };
        let who = if r.token_id.is_empty() {
            format!("(no valid token) {}", r.peer)
        } else {
            format!("{} ({}, {})", r.token_name, r.token_id, r.role)
        };
        let what = if r.code == 0 {
            r.subjects.join("; ")
        } else {
            r.message.clone()
        };
        table.row(vec![
            r.seq.to_string(),
            utc_text(r.time),
            who,
            r.method,
            outcome(r.code),
            output::dash(&what),
        ]);
    }
    if table.is_empty() {
        eprintln!("no audit records");
        return Ok(());
    }
    table.print()
}

/// The server keys of every TrustRoot the server held (the chain checked
/// link by link from its first root), or the server's reported key while it
/// has no TrustRoot.
async fn server_keys(ctx: &mut Ctx) -> anyhow::Result<Vec<aloft_protocol::PublicKey>> {
    let history = ctx
        .client
        .get_trust_root_history(pb::GetTrustRootHistoryRequest {})
        .await
        .map_err(|s| status_error("reading the TrustRoot history", &s))?
        .into_inner();
    let envelopes: Vec<_> = history
        .roots
        .into_iter()
        .filter_map(|r| r.trust_root)
        .collect();
    if envelopes.is_empty() {
        // No TrustRoot yet: the heads can only be checked against the key
        // the server says it signs with (which proves the records were not
        // changed on disk, not that the server is honest).
        let info = ctx
            .client
            .get_server_info(pb::GetServerInfoRequest {})
            .await
            .map_err(|s| status_error("reading the server's key", &s))?
            .into_inner();
        eprintln!(
            "note: the server has no TrustRoot yet; its signed heads are checked against the key it reports (set a TrustRoot to pin the key offline)"
        );
        let key = aloft_protocol::PublicKey::from_sec1(&info.server_public_key)
            .map_err(|e| anyhow::anyhow!("the server reports a malformed public key ({e})"))?;
        return Ok(vec![key]);
    }
    let chain = TrustChain::reload_stored(&envelopes).map_err(|e| {
        anyhow::anyhow!("the server's TrustRoot history does not verify ({e}): its audit heads cannot be checked")
    })?;
    let mut keys = Vec::new();
    for root in chain.roots() {
        for k in root.server_keys() {
            if !keys.contains(k) {
                keys.push(*k);
            }
        }
    }
    Ok(keys)
}

#[derive(Serialize)]
struct VerifyJson {
    intact: bool,
    records: u64,
    last_seq: u64,
    heads_verified: usize,
    signed_through: u64,
    findings: Vec<String>,
}

async fn verify(ctx: &mut Ctx) -> anyhow::Result<()> {
    let keys = server_keys(ctx).await?;
    let (entries, heads) = fetch(ctx, 0).await?;
    let entries: Vec<(u64, Vec<u8>)> = entries.into_iter().map(|e| (e.seq, e.record)).collect();
    let report: Report = audit::verify(&entries, &heads, &keys);
    let findings: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
    if ctx.json() {
        output::print_json(&VerifyJson {
            intact: findings.is_empty(),
            records: report.records,
            last_seq: report.last_seq,
            heads_verified: report.heads_verified,
            signed_through: report.signed_through,
            findings: findings.clone(),
        })?;
    } else {
        for f in &findings {
            println!("{f}");
        }
        if findings.is_empty() {
            println!(
                "audit log intact: {} records, {} signed heads verified (through record {})",
                report.records, report.heads_verified, report.signed_through
            );
            if report.last_seq > report.signed_through {
                println!(
                    "records {} to {} are linked but not yet under a signed head (the server signs one every --audit-head-secs)",
                    report.signed_through + 1,
                    report.last_seq
                );
            }
        }
    }
    if !findings.is_empty() {
        bail!(
            "the audit log was tampered with: {} finding{} above",
            findings.len(),
            if findings.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
}
