//! `aloft webhook ...`: signed event deliveries to other systems.

use std::path::PathBuf;

use aloft_protocol::pb;
use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde::Serialize;

use crate::Ctx;
use crate::client::status_error;
use crate::duration::{age, now_unix};
use crate::output::{self, Table};

/// `aloft webhook` subcommands.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Add a webhook: events are POSTed to URL as JSON, signed with the secret.
    Add {
        /// https://HOST[:PORT]/PATH (or http:// to a loopback address).
        url: String,
        /// Event kinds to deliver, comma-separated, e.g. confirmed,rolled_back
        /// (default: every kind).
        #[arg(long, value_delimiter = ',', value_name = "KIND,...")]
        events: Vec<String>,
        /// File holding the HMAC secret (16 to 1024 bytes; a trailing newline
        /// is removed), e.g. made with `openssl rand -hex 32 > FILE`.
        #[arg(long, value_name = "FILE")]
        secret_file: PathBuf,
    },
    /// List webhooks.
    List,
    /// Delivery state of every webhook: queued, delivered, failures, last error.
    Status,
    /// Remove a webhook and its undelivered events.
    Remove {
        /// Webhook id (from `aloft webhook list`).
        id: String,
    },
    /// Queue a test event for a webhook.
    Test {
        /// Webhook id.
        id: String,
    },
}

/// Runs one `aloft webhook` command.
pub async fn run(ctx: &mut Ctx, cmd: WebhookCommand) -> anyhow::Result<()> {
    match cmd {
        WebhookCommand::Add {
            url,
            events,
            secret_file,
        } => add(ctx, url, events, secret_file).await,
        WebhookCommand::List => list(ctx, false).await,
        WebhookCommand::Status => list(ctx, true).await,
        WebhookCommand::Remove { id } => remove(ctx, id).await,
        WebhookCommand::Test { id } => test(ctx, id).await,
    }
}

/// A webhook as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct WebhookJson {
    id: String,
    url: String,
    events: Vec<String>,
    created_at: u64,
    pending: u64,
    delivered: u64,
    failed_attempts: u64,
    last_success_at: u64,
    last_failure_at: u64,
    last_error: String,
    oldest_pending_at: u64,
    head_attempts: u32,
    next_attempt_at: u64,
    dropped: u64,
    given_up: u64,
}

fn json(w: &pb::Webhook) -> WebhookJson {
    let s = w.status.clone().unwrap_or_default();
    WebhookJson {
        id: w.webhook_id.clone(),
        url: w.url.clone(),
        events: w.events.clone(),
        created_at: w.created_at,
        pending: s.pending,
        delivered: s.delivered,
        failed_attempts: s.failed_attempts,
        last_success_at: s.last_success_at,
        last_failure_at: s.last_failure_at,
        last_error: s.last_error,
        oldest_pending_at: s.oldest_pending_at,
        head_attempts: s.head_attempts,
        next_attempt_at: s.next_attempt_at,
        dropped: s.dropped,
        given_up: s.given_up,
    }
}

async fn add(
    ctx: &mut Ctx,
    url: String,
    events: Vec<String>,
    secret_file: PathBuf,
) -> anyhow::Result<()> {
    let mut secret = std::fs::read(&secret_file)
        .with_context(|| format!("could not read --secret-file {}", secret_file.display()))?;
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    if secret.len() < 16 {
        bail!(
            "--secret-file {} holds {} bytes: a webhook secret needs at least 16 (e.g. `openssl rand -hex 32 > FILE`)",
            secret_file.display(),
            secret.len()
        );
    }
    let w = ctx
        .client
        .add_webhook(pb::AddWebhookRequest {
            url: url.clone(),
            events,
            secret,
        })
        .await
        .map_err(|s| status_error(&format!("adding webhook {url}"), &s))?
        .into_inner();
    if ctx.json() {
        return output::print_json(&json(&w));
    }
    println!("{}", w.webhook_id);
    eprintln!(
        "added webhook {} for {} ({})",
        w.webhook_id,
        w.url,
        if w.events.is_empty() {
            "every event".to_owned()
        } else {
            w.events.join(", ")
        }
    );
    Ok(())
}

async fn list(ctx: &mut Ctx, status: bool) -> anyhow::Result<()> {
    let hooks = ctx
        .client
        .list_webhooks(pb::ListWebhooksRequest {})
        .await
        .map_err(|s| status_error("listing webhooks", &s))?
        .into_inner()
        .webhooks;
    if ctx.json() {
        return output::print_json(&hooks.iter().map(json).collect::<Vec<_>>());
    }
    let now = now_unix();
    let mut table = if status {
        Table::new(&[
            "ID",
            "QUEUED",
            "DELIVERED",
            "FAILED",
            "OLDEST",
            "TRIES",
            "LAST OK",
            "LAST ERROR",
        ])
    } else {
        Table::new(&["ID", "URL", "EVENTS", "CREATED"])
    };
    for w in &hooks {
        let s = w.status.clone().unwrap_or_default();
        let when = |t: u64| if t == 0 { "-".to_owned() } else { age(now, t) };
        if status {
            let mut error = s.last_error.clone();
            if s.last_failure_at <= s.last_success_at {
                error.clear();
            }
            if s.dropped + s.given_up > 0 {
                error = format!("{} dropped, {} given up; {error}", s.dropped, s.given_up);
            }
            table.row(vec![
                w.webhook_id.clone(),
                s.pending.to_string(),
                s.delivered.to_string(),
                s.failed_attempts.to_string(),
                when(s.oldest_pending_at),
                s.head_attempts.to_string(),
                when(s.last_success_at),
                output::dash(&error),
            ]);
        } else {
            table.row(vec![
                w.webhook_id.clone(),
                w.url.clone(),
                if w.events.is_empty() {
                    "all".to_owned()
                } else {
                    w.events.join(",")
                },
                age(now, w.created_at),
            ]);
        }
    }
    if table.is_empty() {
        eprintln!("no webhooks: add one with `aloft webhook add URL --secret-file FILE`");
        return Ok(());
    }
    table.print()
}

async fn remove(ctx: &mut Ctx, id: String) -> anyhow::Result<()> {
    let w = ctx
        .client
        .remove_webhook(pb::RemoveWebhookRequest {
            webhook_id: id.clone(),
        })
        .await
        .map_err(|s| status_error(&format!("removing webhook {id}"), &s))?
        .into_inner();
    if ctx.json() {
        return output::print_json(&json(&w));
    }
    println!("removed webhook {} ({})", w.webhook_id, w.url);
    Ok(())
}

async fn test(ctx: &mut Ctx, id: String) -> anyhow::Result<()> {
    let r = ctx
        .client
        .test_webhook(pb::TestWebhookRequest {
            webhook_id: id.clone(),
        })
        .await
        .map_err(|s| status_error(&format!("testing webhook {id}"), &s))?
        .into_inner();
    if ctx.json() {
        return output::print_json(&serde_json::json!({ "idempotency_key": r.idempotency_key }));
    }
    println!(
        "queued a test event for {id} (idempotency key {}); `aloft webhook status` shows whether it arrived",
        r.idempotency_key
    );
    Ok(())
}
