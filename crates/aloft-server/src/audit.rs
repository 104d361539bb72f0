//! The tamper-evident audit log: every operator action and every refused
//! admin call, as a hash chain (`aloft_protocol::audit`) with heads the
//! server signs at intervals.
//!
//! - **One place records**: [`AuditLayer`] wraps the admin service. It sees
//!   each call's method, caller (the bearer token, looked up by hash, never
//!   stored) and peer, and the gRPC status it answered. Reads (`Get*`,
//!   `List*`, `Watch*`) are recorded only when refused; every other call
//!   always, so an RPC added later is audited without a change here. What a
//!   call did comes from the events it recorded ([`note_event`], called by
//!   `Tracker::event`), one subject line each.
//! - **Durable before the answer**: an action's record is appended and
//!   flushed before its reply leaves. Refusals are flushed with the next
//!   write (sled's background flush within half a second), so a flood of
//!   bad calls costs no fsync each; past [`REFUSALS_PER_SEC`] a second (a
//!   burst of [`REFUSAL_BURST`]) they are counted, and the next record that
//!   is written says how many were left out.
//! - **Signed heads**: every `head_interval` (and at shutdown) the newest
//!   record's seq and hash are signed by the directive key in the
//!   audit-head domain and stored. `aloft audit verify` checks the chain
//!   and the heads against the server keys of the TrustRoot history.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use aloft_protocol::audit::{ChainHash, GENESIS, chain_hash, link};
use aloft_protocol::keys::Domain;
use aloft_protocol::{Digest, envelope, pb};
use prost::Message as _;
use tonic::codegen::http;

use crate::Shared;
use crate::listen::PeerAddr;
use crate::ops_store::OpsStore;
use crate::store::{StoreError, StoreResult};
use crate::sync::Recover as _;

/// Refused calls recorded per second, sustained.
pub const REFUSALS_PER_SEC: f64 = 20.0;
/// Refused calls recorded at once above the sustained rate.
pub const REFUSAL_BURST: f64 = 200.0;
/// Longest refusal message kept in a record.
const MAX_MESSAGE: usize = 512;

tokio::task_local! {
    /// The subjects of the admin call this task is serving.
    static CALL: Arc<Mutex<Vec<String>>>;
}

/// Adds a subject line to the audit record of the admin call being served
/// (no-op outside one: device sessions, the rollout tick).
pub fn note(subject: String) {
    let _ = CALL.try_with(|c| c.lock().recover().push(subject));
}

/// Adds an event the current admin call recorded.
pub fn note_event(e: &pb::Event) {
    if CALL.try_with(|_| ()).is_err() {
        return;
    }
    let mut line = e.kind.clone();
    for (name, value) in [
        ("device", &e.device_id),
        ("release", &e.release_id),
        ("rollout", &e.rollout_id),
    ] {
        if !value.is_empty() {
            line.push_str(&format!(" {name}={value}"));
        }
    }
    if !e.detail.is_empty() {
        line.push_str(&format!(": {}", e.detail));
    }
    note(line);
}

/// The chain's head in memory, and the refusal budget.
struct Head {
    seq: u64,
    hash: ChainHash,
    signed_seq: u64,
    tokens: f64,
    refilled: std::time::Instant,
    suppressed: u64,
}

/// The audit log (see the module docs).
pub struct AuditLog {
    store: Arc<dyn OpsStore>,
    head: Mutex<Head>,
}

/// What one admin call was and how it ended.
#[derive(Clone, Debug, Default)]
pub struct Call {
    /// The RPC name.
    pub method: String,
    /// The caller's token id, name and role, if the token is known.
    pub token: Option<(String, String, String)>,
    /// The caller's address.
    pub peer: String,
    /// gRPC code (0 = done).
    pub code: u32,
    /// The refusal's message.
    pub message: String,
    /// What it did.
    pub subjects: Vec<String>,
}

impl AuditLog {
    /// Over `store`, continuing its chain.
    pub fn open(store: Arc<dyn OpsStore>) -> StoreResult<Self> {
        let (seq, hash) = match store.last_audit()? {
            Some((seq, bytes)) => (seq, chain_hash(&bytes)),
            None => (0, GENESIS),
        };
        let signed_seq = store
            .audit_heads()?
            .last()
            .and_then(|h| pb::AuditHead::decode(h.payload.as_slice()).ok())
            .map_or(0, |h| h.seq);
        Ok(Self {
            store,
            head: Mutex::new(Head {
                seq,
                hash,
                signed_seq,
                tokens: REFUSAL_BURST,
                refilled: std::time::Instant::now(),
                suppressed: 0,
            }),
        })
    }

    /// Seq of the newest record.
    pub fn seq(&self) -> u64 {
        self.head.lock().recover().seq
    }

    /// Appends a record for `call` at `time`; `Ok(false)` when it was a
    /// refusal over the budget (counted, not written).
    pub fn append(&self, call: Call, time: u64) -> StoreResult<bool> {
        let mut head = self.head.lock().recover();
        let mut subjects = call.subjects;
        if call.code != 0 {
            let now = std::time::Instant::now();
            head.tokens = (head.tokens
                + now.duration_since(head.refilled).as_secs_f64() * REFUSALS_PER_SEC)
                .min(REFUSAL_BURST);
            head.refilled = now;
            if head.tokens < 1.0 {
                head.suppressed += 1;
                return Ok(false);
            }
            head.tokens -= 1.0;
        }
        if head.suppressed > 0 {
            subjects.push(format!(
                "{} refused calls before this one were not recorded (over {REFUSALS_PER_SEC}/s)",
                head.suppressed
            ));
        }
        let (token_id, token_name, role) = call.token.unwrap_or_default();
        let mut record = pb::AuditRecord {
            time,
            method: call.method,
            token_id,
            token_name,
            role,
            peer: call.peer,
            code: call.code,
            message: call.message.chars().take(MAX_MESSAGE).collect(),
            subjects,
            ..Default::default()
        };
        let (bytes, hash) = link(&mut record, head.seq, &head.hash);
        self.store.append_audit(record.seq, &bytes)?;
        head.seq = record.seq;
        head.hash = hash;
        head.suppressed = 0;
        Ok(true)
    }

    /// Signs the head if records were added since the last signed one;
    /// returns whether it did. The caller flushes.
    pub fn sign_head(&self, key: &aloft_protocol::SecretKey, time: u64) -> StoreResult<bool> {
        let mut head = self.head.lock().recover();
        if head.seq == head.signed_seq {
            return Ok(false);
        }
        let signed = envelope::seal(
            &pb::AuditHead {
                seq: head.seq,
                hash: head.hash.to_vec(),
                time,
            },
            Domain::AuditHead,
            &[key],
        );
        self.store.put_audit_head(head.seq, &signed)?;
        head.signed_seq = head.seq;
        Ok(true)
    }
}

/// Signs the head every `every` until shutdown, and once more at the end.
pub(crate) fn spawn_head_signer(shared: Arc<Shared>, every: Duration) {
    tokio::spawn(async move {
        let mut shutdown = shared.shutdown.clone();
        let mut interval = tokio::time::interval(every.max(Duration::from_millis(10)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = crate::stopped(&mut shutdown) => return,
                _ = interval.tick() => {}
            }
            if let Err(e) = sign_and_flush(&shared).await {
                tracing::error!(error = %e, "could not sign the audit head");
            }
        }
    });
}

/// Signs the head (if it moved) and makes it durable.
pub(crate) async fn sign_and_flush(shared: &Shared) -> Result<(), StoreError> {
    let key = shared.keys.directive_key();
    if shared.audit.sign_head(&key, shared.now().0)? {
        shared.flush().await?;
    }
    Ok(())
}

/// Whether a method only reads (recorded only when refused).
fn is_read(method: &str) -> bool {
    ["Get", "List", "Watch"]
        .iter()
        .any(|p| method.starts_with(p))
}

/// The caller a bearer token names, looked up by its hash (nothing about the
/// token itself is kept).
fn caller(shared: &Shared, headers: &http::HeaderMap) -> Option<(String, String, String)> {
    let token = headers
        .get(aloft_protocol::wire::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix(aloft_protocol::wire::BEARER_PREFIX)?
        .trim();
    let record = shared
        .store
        .token_by_hash(&Digest::of(token.as_bytes()))
        .ok()??;
    let role = crate::auth::Role::from_pb(record.role).map_or_else(
        || "none".to_owned(),
        |r| format!("{r:?}").to_ascii_lowercase(),
    );
    Some((record.token_id, record.name, role))
}

fn code_name(code: u32) -> String {
    format!("{:?}", tonic::Code::from_i32(code as i32)).to_ascii_lowercase()
}

/// Records an admin call that ended; flushes when it was an action.
async fn record(shared: &Shared, call: Call) {
    let action = call.code == 0;
    if !action {
        shared
            .metrics
            .admin_refused
            .get_or_create(&crate::metrics::Code {
                code: code_name(call.code),
            })
            .inc();
    }
    let method = call.method.clone();
    match shared.audit.append(call, shared.now().0) {
        Ok(true) => {
            shared.metrics.audit_records.inc();
            if action && let Err(e) = shared.flush().await {
                tracing::error!(error = %e, method, "could not make the audit record durable");
            }
        }
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, method, "could not append to the audit log"),
    }
}

/// Wraps the admin service so each call is audited (see the module docs).
#[derive(Clone)]
pub(crate) struct Audited<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Audited<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Audited<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> tower::Service<http::Request<B>> for Audited<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
    B: Send + 'static,
    R: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(64)
            .collect::<String>();
        let token = caller(&shared, req.headers());
        let peer = req
            .extensions()
            .get::<PeerAddr>()
            .map(|p| p.0.to_string())
            .unwrap_or_default();
        let subjects = Arc::new(Mutex::new(Vec::new()));
        let fut = CALL.scope(subjects.clone(), self.inner.call(req));
        Box::pin(async move {
            let res = fut.await?;
            let headers = res.headers();
            let code = headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0);
            if code != 0 || !is_read(&method) {
                let message = headers
                    .get("grpc-message")
                    .and_then(|v| v.to_str().ok())
                    .map(percent_decode)
                    .unwrap_or_default();
                let subjects = std::mem::take(&mut *subjects.lock().recover());
                let call = Call {
                    method,
                    token,
                    peer,
                    code,
                    message,
                    subjects,
                };
                record(&shared, call).await;
            }
            Ok(res)
        })
    }
}

/// Decodes the percent-encoding of a `grpc-message` header.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_decoded() {
        assert_eq!(percent_decode("no%20device%20x"), "no device x");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn reads_are_told_from_actions() {
        assert!(is_read("ListDevices") && is_read("GetRollout") && is_read("WatchEvents"));
        assert!(!is_read("CreateToken") && !is_read("Backup") && !is_read("TestWebhook"));
    }
}
