//! The admin RPCs for operating the server: webhooks, the audit log and
//! backups. Each needs the admin role; `admin_service` delegates here.

use std::io::{Seek as _, Write as _};
use std::sync::Arc;

use aloft_protocol::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::Shared;
use crate::auth::Role;
use crate::webhooks::{WebhookError, Webhooks};

/// The stream `Backup` answers with.
pub(crate) type BackupStream = ReceiverStream<Result<pb::BackupChunk, Status>>;

/// Most event kinds one webhook may list.
const MAX_KINDS: usize = 32;
/// Most audit records per page.
const MAX_AUDIT_PAGE: usize = 5000;

fn admin<T>(shared: &Shared, request: &Request<T>) -> Result<(), Status> {
    shared
        .auth
        .require(request.metadata(), Role::Admin)
        .map(|_| ())
}

fn webhook_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(Status::invalid_argument(format!(
            "{:?} is not a webhook id (wh-... from `aloft webhook list`)",
            id.chars().take(64).collect::<String>()
        )));
    }
    Ok(id)
}

fn not_found(id: &str) -> Status {
    Status::not_found(format!(
        "no webhook {id}: `aloft webhook list` shows the webhooks"
    ))
}

async fn flush(shared: &Shared) -> Result<(), Status> {
    shared.flush().await.map_err(Status::from)
}

pub(crate) async fn add_webhook(
    shared: &Arc<Shared>,
    request: Request<pb::AddWebhookRequest>,
) -> Result<Response<pb::Webhook>, Status> {
    admin(shared, &request)?;
    let req = request.into_inner();
    if req.events.len() > MAX_KINDS {
        return Err(Status::invalid_argument(format!(
            "{} event kinds: at most {MAX_KINDS} (or none for all)",
            req.events.len()
        )));
    }
    let record = match Webhooks::add(shared, &req.url, &req.events, &req.secret)? {
        Ok(r) => r,
        Err(e @ WebhookError::Full) => return Err(Status::failed_precondition(e.to_string())),
        Err(e) => return Err(Status::invalid_argument(e.to_string())),
    };
    crate::audit::note(format!(
        "webhook_added webhook={}: {} events [{}]",
        record.webhook_id,
        record.url,
        record.events.join(",")
    ));
    flush(shared).await?;
    tracing::info!(webhook = %record.webhook_id, url = %record.url, "webhook added");
    Ok(Response::new(pb::Webhook {
        webhook_id: record.webhook_id,
        url: record.url,
        events: record.events,
        created_at: record.created_at,
        status: Some(pb::WebhookStatus::default()),
    }))
}

pub(crate) async fn list_webhooks(
    shared: &Arc<Shared>,
    request: Request<pb::ListWebhooksRequest>,
) -> Result<Response<pb::ListWebhooksResponse>, Status> {
    admin(shared, &request)?;
    Ok(Response::new(pb::ListWebhooksResponse {
        webhooks: shared.webhooks.list()?,
    }))
}

pub(crate) async fn remove_webhook(
    shared: &Arc<Shared>,
    request: Request<pb::RemoveWebhookRequest>,
) -> Result<Response<pb::Webhook>, Status> {
    admin(shared, &request)?;
    let id = webhook_id(&request.get_ref().webhook_id)?.to_owned();
    let record = shared.webhooks.remove(&id)?.ok_or_else(|| not_found(&id))?;
    crate::audit::note(format!("webhook_removed webhook={id}: {}", record.url));
    flush(shared).await?;
    tracing::info!(webhook = %id, "webhook removed");
    Ok(Response::new(pb::Webhook {
        webhook_id: record.webhook_id,
        url: record.url,
        events: record.events,
        created_at: record.created_at,
        status: None,
    }))
}

pub(crate) async fn test_webhook(
    shared: &Arc<Shared>,
    request: Request<pb::TestWebhookRequest>,
) -> Result<Response<pb::TestWebhookResponse>, Status> {
    admin(shared, &request)?;
    let id = webhook_id(&request.get_ref().webhook_id)?.to_owned();
    let (key, n) = shared
        .webhooks
        .test(&id, shared.now().0)?
        .ok_or_else(|| not_found(&id))?;
    crate::audit::note(format!("webhook_test webhook={id}: {key}"));
    flush(shared).await?;
    shared.webhooks.durable(n);
    Ok(Response::new(pb::TestWebhookResponse {
        idempotency_key: key,
    }))
}

pub(crate) async fn list_audit(
    shared: &Arc<Shared>,
    request: Request<pb::ListAuditRequest>,
) -> Result<Response<pb::ListAuditResponse>, Status> {
    use prost::Message as _;
    admin(shared, &request)?;
    let req = request.into_inner();
    let limit = match req.limit {
        0 => 500,
        n => (n as usize).min(MAX_AUDIT_PAGE),
    };
    let mut after = req.after_seq;
    let mut entries = Vec::new();
    let mut more = false;
    // Skip records before `since` without counting them against the page.
    'pages: loop {
        let page = shared.ops_store.audit_records(after, limit)?;
        let full = page.len() == limit;
        for (seq, bytes) in page {
            after = seq;
            let keep = req.since == 0
                || pb::AuditRecord::decode(bytes.as_slice()).map_or(true, |r| r.time >= req.since);
            if keep {
                entries.push(pb::AuditEntry { seq, record: bytes });
                if entries.len() == limit {
                    more = full || shared.ops_store.audit_records(after, 1)?.len() == 1;
                    break 'pages;
                }
            }
        }
        if !full {
            break;
        }
    }
    Ok(Response::new(pb::ListAuditResponse {
        next_after_seq: if more { after } else { 0 },
        entries,
        heads: shared.ops_store.audit_heads()?,
    }))
}

pub(crate) async fn backup(
    shared: &Arc<Shared>,
    request: Request<pb::BackupRequest>,
) -> Result<Response<BackupStream>, Status> {
    admin(shared, &request)?;
    let dir = shared.data_dir.clone();
    let store = shared.ops_store.clone();
    let taken = tokio::task::spawn_blocking(move || -> Result<_, Status> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = dir.join(format!(
            ".backup-{}.tmp",
            crate::auth::hex(&crate::keys::random::<6>())
        ));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Status::internal(format!("backup failed: {}: {e}", path.display())))?;
        // Unlinked at once: nothing is left behind however this ends.
        let _ = std::fs::remove_file(&path);
        let mut w = std::io::BufWriter::new(&mut file);
        let failed = |e: std::io::Error| Status::internal(format!("backup failed: {e}"));
        let stats = crate::backup::write_snapshot(&*store, &mut w).map_err(|e| match e {
            crate::store::StoreError::Unsupported(what) => Status::failed_precondition(what),
            e => Status::internal(format!("backup failed: {e}")),
        })?;
        w.flush().map_err(failed)?;
        drop(w);
        file.rewind().map_err(failed)?;
        Ok((file, stats))
    })
    .await
    .map_err(|e| Status::internal(format!("backup task: {e}")))?;
    let (file, stats) = taken?;
    shared
        .metrics
        .backup_pause
        .observe(stats.paused.as_secs_f64());
    tracing::info!(
        records = stats.records,
        bytes = stats.bytes,
        paused_ms = stats.paused.as_millis() as u64,
        "backup snapshot taken"
    );
    crate::audit::note(format!(
        "backup: {} records, {} bytes, writes paused {} ms",
        stats.records,
        stats.bytes,
        stats.paused.as_millis()
    ));
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let mut file = file;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let item = match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => Ok(pb::BackupChunk {
                    data: buf[..n].to_vec(),
                }),
                Err(e) => Err(Status::internal(format!("reading the snapshot: {e}"))),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_ids_are_checked() {
        assert!(webhook_id("wh-0a1b2c3d4e5f").is_ok());
        assert!(webhook_id("").is_err());
        assert!(webhook_id("../x").is_err());
        assert!(webhook_id(&"a".repeat(65)).is_err());
    }
}
