//! Storage for operating the server: webhooks and their outbox, the audit
//! log, and consistent snapshots for backups.
//!
//! A trait of its own ([`OpsStore`]) beside [`crate::store::Store`], so a
//! second backend ports these five tables separately; [`SledStore`]
//! implements it with its own sled trees:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `webhooks` | webhook id | [`WebhookRecord`] |
//! | `webhook_outbox` | webhook id `\0` big-endian delivery id | [`DeliveryRecord`] |
//! | `webhook_stats` | webhook id | [`WebhookStatsRecord`] |
//! | `audit` | big-endian seq | the exact bytes of a `pb::AuditRecord` |
//! | `audit_heads` | big-endian seq | a signed `pb::AuditHead` envelope |
//!
//! Like every store write, nothing here is durable before `Store::flush`.
//!
//! **Snapshots.** sled 0.34.7 has no point-in-time read: `Db::export` and
//! tree iterators see writes made while they run, so a copy taken during
//! writes can hold a rollout record newer than its device records, or a
//! report marked seen whose status change it missed. [`OpsStore::snapshot`]
//! copies every tree while every write of the store waits
//! ([`SledStore::pause_writes`]); reads go on. Release payloads are not in
//! the store (see `crate::payloads`): they are immutable objects published
//! before their release row, so a copy of them made after the snapshot
//! holds every payload the snapshot names. `aloft_backup_pause_seconds`
//! shows how long writes waited.

use aloft_protocol::pb;
use prost::Message;

use crate::store::{SledStore, StoreError, StoreResult};

/// A webhook as stored.
#[derive(Clone, PartialEq, Message)]
pub struct WebhookRecord {
    /// Its id (`wh-` + hex).
    #[prost(string, tag = "1")]
    pub webhook_id: String,
    /// Where events are POSTed.
    #[prost(string, tag = "2")]
    pub url: String,
    /// Event kinds delivered; empty = all.
    #[prost(string, repeated, tag = "3")]
    pub events: Vec<String>,
    /// The HMAC key, sealed under the KEK (AAD = the webhook id).
    #[prost(bytes = "vec", tag = "4")]
    pub sealed_secret: Vec<u8>,
    /// Unix seconds.
    #[prost(uint64, tag = "5")]
    pub created_at: u64,
}

/// One event waiting for delivery to one webhook.
#[derive(Clone, PartialEq, Message)]
pub struct DeliveryRecord {
    /// Sent as `aloft-idempotency-key`, the same on every attempt.
    #[prost(string, tag = "1")]
    pub idempotency_key: String,
    /// The event kind.
    #[prost(string, tag = "2")]
    pub kind: String,
    /// The JSON body, exactly as signed and sent.
    #[prost(bytes = "vec", tag = "3")]
    pub body: Vec<u8>,
    /// When the event was recorded (Unix seconds).
    #[prost(uint64, tag = "4")]
    pub created_at: u64,
    /// Attempts so far.
    #[prost(uint32, tag = "5")]
    pub attempts: u32,
    /// Not before this Unix time in milliseconds.
    #[prost(uint64, tag = "6")]
    pub next_attempt_at_ms: u64,
}

/// Counters of one webhook's deliveries.
#[derive(Clone, PartialEq, Message)]
pub struct WebhookStatsRecord {
    /// Delivered events.
    #[prost(uint64, tag = "1")]
    pub delivered: u64,
    /// Failed attempts.
    #[prost(uint64, tag = "2")]
    pub failed_attempts: u64,
    /// Unix seconds of the last success.
    #[prost(uint64, tag = "3")]
    pub last_success_at: u64,
    /// Unix seconds of the last failure.
    #[prost(uint64, tag = "4")]
    pub last_failure_at: u64,
    /// Why the last attempt failed.
    #[prost(string, tag = "5")]
    pub last_error: String,
    /// Events not queued because the outbox was full.
    #[prost(uint64, tag = "6")]
    pub dropped: u64,
    /// Deliveries given up.
    #[prost(uint64, tag = "7")]
    pub given_up: u64,
}

/// What a snapshot copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Records copied.
    pub records: u64,
    /// Bytes of keys and values copied.
    pub bytes: u64,
    /// How long writes waited.
    pub paused: std::time::Duration,
}

/// Receives one record of a snapshot: tree name, key, value.
pub type SnapshotSink<'a> = dyn FnMut(&str, &[u8], &[u8]) -> StoreResult<()> + 'a;

/// Storage for webhooks, the audit log and backups. See the module docs.
pub trait OpsStore: Send + Sync + 'static {
    /// A fresh id, increasing across restarts.
    fn generate_id(&self) -> StoreResult<u64>;

    /// Inserts a webhook; false (nothing written) if the id exists.
    fn insert_webhook(&self, record: &WebhookRecord) -> StoreResult<bool>;
    /// Every webhook, by id.
    fn webhooks(&self) -> StoreResult<Vec<WebhookRecord>>;
    /// Deletes a webhook with its outbox and counters; `None` if unknown.
    fn remove_webhook(&self, id: &str) -> StoreResult<Option<WebhookRecord>>;
    /// Queues deliveries `(webhook id, delivery id, delivery)`; delivery ids
    /// order each webhook's queue.
    fn enqueue(&self, items: &[(String, u64, DeliveryRecord)]) -> StoreResult<()>;
    /// The oldest queued delivery of a webhook.
    fn next_delivery(&self, webhook: &str) -> StoreResult<Option<(u64, DeliveryRecord)>>;
    /// How many deliveries a webhook has queued.
    fn queued(&self, webhook: &str) -> StoreResult<u64>;
    /// Rewrites a queued delivery (after a failed attempt) and the counters.
    fn retry_later(
        &self,
        webhook: &str,
        id: u64,
        delivery: &DeliveryRecord,
        stats: &WebhookStatsRecord,
    ) -> StoreResult<()>;
    /// Removes a delivery (delivered or given up) and writes the counters.
    fn finish(&self, webhook: &str, id: u64, stats: &WebhookStatsRecord) -> StoreResult<()>;
    /// A webhook's counters (zero if none yet).
    fn webhook_stats(&self, webhook: &str) -> StoreResult<WebhookStatsRecord>;
    /// Writes a webhook's counters.
    fn put_webhook_stats(&self, webhook: &str, stats: &WebhookStatsRecord) -> StoreResult<()>;

    /// Stores audit record `seq` (its exact bytes).
    fn append_audit(&self, seq: u64, bytes: &[u8]) -> StoreResult<()>;
    /// Up to `limit` records after `after`, by seq.
    fn audit_records(&self, after: u64, limit: usize) -> StoreResult<Vec<(u64, Vec<u8>)>>;
    /// The record with the highest seq.
    fn last_audit(&self) -> StoreResult<Option<(u64, Vec<u8>)>>;
    /// Stores a signed head for `seq`.
    fn put_audit_head(&self, seq: u64, head: &pb::SignedEnvelope) -> StoreResult<()>;
    /// Every signed head, oldest first.
    fn audit_heads(&self) -> StoreResult<Vec<pb::SignedEnvelope>>;

    /// A consistent copy of every record of the store (see the module
    /// docs), oldest tree first; `Err(Unsupported)` where a backend backs up
    /// with its own tools.
    fn snapshot(&self, sink: &mut SnapshotSink<'_>) -> StoreResult<SnapshotStats>;
}

/// Names of this module's trees.
pub const WEBHOOKS: &str = "webhooks";
/// See [`WEBHOOKS`].
pub const OUTBOX: &str = "webhook_outbox";
/// See [`WEBHOOKS`].
pub const STATS: &str = "webhook_stats";
/// See [`WEBHOOKS`].
pub const AUDIT: &str = "audit";
/// See [`WEBHOOKS`].
pub const AUDIT_HEADS: &str = "audit_heads";

fn outbox_key(webhook: &str, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(webhook.len() + 9);
    k.extend_from_slice(webhook.as_bytes());
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn outbox_prefix(webhook: &str) -> Vec<u8> {
    let mut k = webhook.as_bytes().to_vec();
    k.push(0);
    k
}

fn decode<M: Message + Default>(bytes: &[u8], what: &'static str) -> StoreResult<M> {
    M::decode(bytes).map_err(|_| StoreError::Corrupt(what))
}

impl SledStore {
    fn ops_tree(&self, name: &str) -> StoreResult<sled::Tree> {
        Ok(self.db().open_tree(name)?)
    }
}

impl OpsStore for SledStore {
    fn generate_id(&self) -> StoreResult<u64> {
        Ok(self.db().generate_id()?)
    }

    fn insert_webhook(&self, record: &WebhookRecord) -> StoreResult<bool> {
        let _gate = self.gate();
        Ok(self
            .ops_tree(WEBHOOKS)?
            .compare_and_swap(
                record.webhook_id.as_bytes(),
                None as Option<&[u8]>,
                Some(record.encode_to_vec()),
            )?
            .is_ok())
    }

    fn webhooks(&self) -> StoreResult<Vec<WebhookRecord>> {
        self.ops_tree(WEBHOOKS)?
            .iter()
            .values()
            .map(|v| decode(&v?, "webhook"))
            .collect()
    }

    fn remove_webhook(&self, id: &str) -> StoreResult<Option<WebhookRecord>> {
        let _gate = self.gate();
        let Some(old) = self.ops_tree(WEBHOOKS)?.remove(id.as_bytes())? else {
            return Ok(None);
        };
        let outbox = self.ops_tree(OUTBOX)?;
        let mut batch = sled::Batch::default();
        for key in outbox.scan_prefix(outbox_prefix(id)).keys() {
            batch.remove(key?);
        }
        outbox.apply_batch(batch)?;
        self.ops_tree(STATS)?.remove(id.as_bytes())?;
        Ok(Some(decode(&old, "webhook")?))
    }

    fn enqueue(&self, items: &[(String, u64, DeliveryRecord)]) -> StoreResult<()> {
        if items.is_empty() {
            return Ok(());
        }
        let _gate = self.gate();
        let outbox = self.ops_tree(OUTBOX)?;
        for (webhook, id, delivery) in items {
            outbox.insert(outbox_key(webhook, *id), delivery.encode_to_vec())?;
        }
        Ok(())
    }

    fn next_delivery(&self, webhook: &str) -> StoreResult<Option<(u64, DeliveryRecord)>> {
        let prefix = outbox_prefix(webhook);
        let Some(item) = self.ops_tree(OUTBOX)?.scan_prefix(&prefix).next() else {
            return Ok(None);
        };
        let (k, v) = item?;
        let id = u64::from_be_bytes(
            k[prefix.len()..]
                .try_into()
                .map_err(|_| StoreError::Corrupt("outbox key"))?,
        );
        Ok(Some((id, decode(&v, "delivery")?)))
    }

    fn queued(&self, webhook: &str) -> StoreResult<u64> {
        let mut n = 0;
        for key in self
            .ops_tree(OUTBOX)?
            .scan_prefix(outbox_prefix(webhook))
            .keys()
        {
            key?;
            n += 1;
        }
        Ok(n)
    }

    fn retry_later(
        &self,
        webhook: &str,
        id: u64,
        delivery: &DeliveryRecord,
        stats: &WebhookStatsRecord,
    ) -> StoreResult<()> {
        let _gate = self.gate();
        self.ops_tree(OUTBOX)?
            .insert(outbox_key(webhook, id), delivery.encode_to_vec())?;
        self.ops_tree(STATS)?
            .insert(webhook.as_bytes(), stats.encode_to_vec())?;
        Ok(())
    }

    fn finish(&self, webhook: &str, id: u64, stats: &WebhookStatsRecord) -> StoreResult<()> {
        let _gate = self.gate();
        self.ops_tree(OUTBOX)?.remove(outbox_key(webhook, id))?;
        self.ops_tree(STATS)?
            .insert(webhook.as_bytes(), stats.encode_to_vec())?;
        Ok(())
    }

    fn webhook_stats(&self, webhook: &str) -> StoreResult<WebhookStatsRecord> {
        match self.ops_tree(STATS)?.get(webhook.as_bytes())? {
            Some(v) => decode(&v, "webhook stats"),
            None => Ok(WebhookStatsRecord::default()),
        }
    }

    fn put_webhook_stats(&self, webhook: &str, stats: &WebhookStatsRecord) -> StoreResult<()> {
        let _gate = self.gate();
        self.ops_tree(STATS)?
            .insert(webhook.as_bytes(), stats.encode_to_vec())?;
        Ok(())
    }

    fn append_audit(&self, seq: u64, bytes: &[u8]) -> StoreResult<()> {
        let _gate = self.gate();
        self.ops_tree(AUDIT)?.insert(seq.to_be_bytes(), bytes)?;
        Ok(())
    }

    fn audit_records(&self, after: u64, limit: usize) -> StoreResult<Vec<(u64, Vec<u8>)>> {
        let start = after.saturating_add(1).to_be_bytes();
        self.ops_tree(AUDIT)?
            .range(start..)
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                let seq = u64::from_be_bytes(
                    k.as_ref()
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("audit key"))?,
                );
                Ok((seq, v.to_vec()))
            })
            .collect()
    }

    fn last_audit(&self) -> StoreResult<Option<(u64, Vec<u8>)>> {
        let Some((k, v)) = self.ops_tree(AUDIT)?.last()? else {
            return Ok(None);
        };
        let seq = u64::from_be_bytes(
            k.as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("audit key"))?,
        );
        Ok(Some((seq, v.to_vec())))
    }

    fn put_audit_head(&self, seq: u64, head: &pb::SignedEnvelope) -> StoreResult<()> {
        let _gate = self.gate();
        self.ops_tree(AUDIT_HEADS)?
            .insert(seq.to_be_bytes(), head.encode_to_vec())?;
        Ok(())
    }

    fn audit_heads(&self) -> StoreResult<Vec<pb::SignedEnvelope>> {
        self.ops_tree(AUDIT_HEADS)?
            .iter()
            .values()
            .map(|v| decode(&v?, "audit head"))
            .collect()
    }

    fn snapshot(&self, sink: &mut SnapshotSink<'_>) -> StoreResult<SnapshotStats> {
        let db = self.db();
        let mut stats = SnapshotStats::default();
        let paused = std::time::Instant::now();
        let _pause = self.pause_writes();
        let mut names: Vec<Vec<u8>> = db.tree_names().into_iter().map(|n| n.to_vec()).collect();
        names.sort();
        for name in names {
            let Ok(name) = String::from_utf8(name) else {
                continue;
            };
            if name == "__sled__default" {
                continue;
            }
            for item in db.open_tree(&name)?.iter() {
                let (k, v) = item?;
                stats.records += 1;
                stats.bytes += (k.len() + v.len()) as u64;
                sink(&name, &k, &v)?;
            }
        }
        stats.paused = paused.elapsed();
        Ok(stats)
    }
}
