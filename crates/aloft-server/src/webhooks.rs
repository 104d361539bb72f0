//! Signed webhooks from a durable outbox.
//!
//! - **Queued with the event, durable with it.** Events reach webhooks at
//!   the same moment they reach live watchers' queue: [`Webhooks::enqueue`]
//!   runs inside `Shared::flush`, before the store flush, and writes one
//!   outbox record per matching webhook. The flush that makes an event
//!   durable makes its deliveries durable; a delivery is sent only once it
//!   is ([`Webhooks::durable`]), so a receiver never hears of an event a
//!   crash then erases. The device path pays one sled insert per matching
//!   webhook; it never waits for a receiver.
//! - **At least once, in order per webhook.** One task per webhook sends
//!   its oldest queued delivery, and removes it only after a 2xx answer: a
//!   crash (kill -9 included) between the answer and the removal sends it
//!   again, with the same `aloft-idempotency-key`. Later deliveries wait
//!   behind a failing one.
//! - **Retries** back off exponentially from `retry_base` to `retry_max`
//!   with jitter (each delay drawn from its upper half), persisted in the
//!   delivery so a restart keeps the schedule. A delivery still failing
//!   `give_up_after` after its event is dropped and counted (`given_up`).
//! - **Bounded.** At most `max_queued` deliveries per webhook (more are
//!   counted as `dropped`), one attempt at a time per webhook, each within
//!   `attempt_timeout`; at most [`MAX_WEBHOOKS`] webhooks.
//! - **Signed.** `aloft-signature: v1=<hex>` is HMAC-SHA256 with the
//!   webhook's secret over `timestamp || "." || body`, `aloft-timestamp`
//!   being the attempt's Unix time. ARCHITECTURE.md says how a receiver
//!   checks it and refuses replays.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aloft_protocol::pb;
use hmac::{KeyInit as _, Mac as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use tokio::sync::Notify;

use crate::Shared;
use crate::ops_store::{DeliveryRecord, OpsStore, WebhookRecord};
use crate::store::StoreResult;
use crate::sync::Recover as _;
use crate::tracking::EventKind;

/// Most webhooks a server keeps.
pub const MAX_WEBHOOKS: usize = 32;
/// Longest accepted URL.
pub const MAX_URL_LEN: usize = 2048;
/// Secret length bounds, in bytes.
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=1024;
/// The event kind of `aloft webhook test`.
pub const TEST_KIND: &str = "webhook_test";

/// How deliveries are paced.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// The first retry's delay.
    pub retry_base: Duration,
    /// The longest delay between retries.
    pub retry_max: Duration,
    /// A delivery failing this long after its event is given up.
    pub give_up_after: Duration,
    /// One attempt's deadline (connect, TLS, request, answer).
    pub attempt_timeout: Duration,
    /// Deliveries queued per webhook at most.
    pub max_queued: u64,
    /// Extra CA certificates (PEM) trusted for https receivers, besides the
    /// system's roots.
    pub extra_ca_pem: Option<String>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            give_up_after: Duration::from_secs(3 * 86_400),
            attempt_timeout: Duration::from_secs(10),
            max_queued: 100_000,
            extra_ca_pem: None,
        }
    }
}

/// Why a webhook request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The URL is not one events can be sent to.
    #[error("webhook URL {url:?} refused: {why}")]
    Url {
        /// The URL as given (cut to 100 characters).
        url: String,
        /// What is wrong and what to give instead.
        why: &'static str,
    },
    /// An event kind is not one the server records.
    #[error(
        "unknown event kind {0:?}: use the kinds of `aloft rollout watch` (connected, offered, installed, confirmed, rolled_back, install_failed, rollout_paused, ...)"
    )]
    Kind(String),
    /// The secret's length is out of bounds.
    #[error(
        "the webhook secret is {0} bytes: give 16 to 1024 (e.g. `openssl rand -hex 32 > secret`)"
    )]
    Secret(usize),
    /// Too many webhooks.
    #[error("this server already has {MAX_WEBHOOKS} webhooks: remove one first")]
    Full,
}

/// Checks a webhook URL: `https://HOST[:PORT]/PATH`, or `http://` to a
/// loopback address only (a receiver on this machine); no user name or
/// password, no fragment.
pub fn check_url(url: &str) -> Result<hyper::Uri, WebhookError> {
    let refuse = |why| WebhookError::Url {
        url: url.chars().take(100).collect(),
        why,
    };
    if url.len() > MAX_URL_LEN {
        return Err(refuse("longer than 2048 bytes"));
    }
    if url.contains('#') {
        return Err(refuse("it has a #fragment, which is never sent: remove it"));
    }
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| refuse("not a URL: give https://HOST[:PORT]/PATH"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| refuse("no host: give https://HOST[:PORT]/PATH"))?;
    if authority.as_str().contains('@') {
        return Err(refuse(
            "it holds a user name or password: put credentials in the secret, not the URL",
        ));
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(refuse("no host: give https://HOST[:PORT]/PATH"));
    }
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(host) => Ok(uri),
        Some("http") => Err(refuse(
            "plain http is accepted only to a loopback address: use https",
        )),
        _ => Err(refuse(
            "the scheme must be https (or http to a loopback address)",
        )),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks event kinds against the kinds the server records.
pub fn check_kinds(kinds: &[String]) -> Result<Vec<String>, WebhookError> {
    let known = EventKind::ALL.map(EventKind::as_str);
    let mut out: Vec<String> = Vec::new();
    for k in kinds {
        let k = k.trim();
        if k.is_empty() {
            continue;
        }
        if !known.contains(&k) && k != TEST_KIND {
            return Err(WebhookError::Kind(k.chars().take(64).collect()));
        }
        if !out.iter().any(|o| o == k) {
            out.push(k.to_owned());
        }
    }
    Ok(out)
}

/// HMAC-SHA256 of `timestamp "." body` under `secret`, lower-case hex.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    crate::auth::hex(&mac.finalize().into_bytes())
}

/// The delay before attempt `attempts + 1`: `base * 2^(attempts-1)` capped
/// at `max`, drawn from its upper half.
pub fn backoff(settings: &WebhookSettings, attempts: u32, unit: f64) -> Duration {
    let exp = settings
        .retry_base
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(30));
    let d = exp.min(settings.retry_max);
    d.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One webhook in memory.
struct Hook {
    record: WebhookRecord,
    queued: AtomicU64,
    dropped: AtomicU64,
    wake: Notify,
}

/// The webhooks of a server (see the module docs).
pub struct Webhooks {
    store: Arc<dyn OpsStore>,
    settings: WebhookSettings,
    hooks: RwLock<Vec<Arc<Hook>>>,
    tasks: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Held across taking pending events and queueing them, so outbox
    /// order is the order events were taken.
    order: Mutex<()>,
    /// Deliveries up to this id are durable and may be sent.
    durable: AtomicU64,
    tls: Mutex<Option<Arc<rustls::ClientConfig>>>,
}

impl Webhooks {
    /// Loads the stored webhooks (their tasks start with [`Webhooks::start`]).
    pub fn load(store: Arc<dyn OpsStore>, settings: WebhookSettings) -> StoreResult<Self> {
        let mut hooks = Vec::new();
        for record in store.webhooks()? {
            let queued = store.queued(&record.webhook_id)?;
            hooks.push(Arc::new(Hook {
                record,
                queued: AtomicU64::new(queued),
                dropped: AtomicU64::new(0),
                wake: Notify::new(),
            }));
        }
        Ok(Self {
            store,
            settings,
            hooks: RwLock::new(hooks),
            tasks: Mutex::default(),
            order: Mutex::default(),
            // Everything stored at start is durable.
            durable: AtomicU64::new(u64::MAX),
            tls: Mutex::default(),
        })
    }

    /// Starts one delivery task per webhook.
    pub(crate) fn start(shared: &Arc<Shared>) {
        let hooks = shared.webhooks.hooks.read().recover().clone();
        // Deliveries queued from now on wait for their flush.
        let mark = shared.webhooks.store.generate_id().unwrap_or(0);
        shared.webhooks.durable.store(mark, Relaxed);
        for hook in hooks {
            spawn(shared, hook);
        }
    }

    /// Deliveries waiting, over all webhooks.
    pub fn queued_total(&self) -> u64 {
        self.hooks
            .read()
            .recover()
            .iter()
            .map(|h| h.queued.load(Relaxed))
            .sum()
    }

    /// Takes the tracker's pending events (as `Tracker::take_pending`) and
    /// queues a delivery of each to every webhook that wants it. Returns
    /// the events and the highest delivery id queued (for
    /// [`Webhooks::durable`] after the flush).
    pub(crate) fn enqueue(&self, tracker: &crate::tracking::Tracker) -> (Vec<pb::Event>, u64) {
        let _order = self.order.lock().recover();
        let events = tracker.take_pending();
        let hooks = self.hooks.read().recover().clone();
        if hooks.is_empty() || events.is_empty() {
            return (events, 0);
        }
        let mut items = Vec::new();
        let mut last = 0;
        for event in &events {
            for hook in &hooks {
                let r = &hook.record;
                if !r.events.is_empty() && !r.events.contains(&event.kind) {
                    continue;
                }
                if hook.queued.load(Relaxed) >= self.settings.max_queued {
                    hook.dropped.fetch_add(1, Relaxed);
                    continue;
                }
                let Ok(id) = self.store.generate_id() else {
                    continue;
                };
                items.push((r.webhook_id.clone(), id, delivery(&r.webhook_id, event)));
                hook.queued.fetch_add(1, Relaxed);
                last = id;
            }
        }
        if let Err(e) = self.store.enqueue(&items) {
            tracing::error!(error = %e, "could not queue webhook deliveries");
            return (events, 0);
        }
        (events, last)
    }

    /// Deliveries up to `id` are durable now: wakes the webhooks.
    pub(crate) fn durable(&self, id: u64) {
        if id == 0 {
            return;
        }
        self.durable.fetch_max(id, Relaxed);
        for hook in self.hooks.read().recover().iter() {
            hook.wake.notify_one();
        }
    }

    /// Adds a webhook and starts its task. The caller flushes.
    pub(crate) fn add(
        shared: &Arc<Shared>,
        url: &str,
        events: &[String],
        secret: &[u8],
    ) -> Result<Result<WebhookRecord, WebhookError>, crate::store::StoreError> {
        let this = &shared.webhooks;
        let checked = check_url(url)
            .and_then(|_| check_kinds(events))
            .and_then(|kinds| {
                if !SECRET_LEN.contains(&secret.len()) {
                    return Err(WebhookError::Secret(secret.len()));
                }
                if this.hooks.read().recover().len() >= MAX_WEBHOOKS {
                    return Err(WebhookError::Full);
                }
                Ok(kinds)
            });
        let kinds = match checked {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        let id = format!("wh-{}", crate::auth::hex(&crate::keys::random::<6>()));
        let record = WebhookRecord {
            sealed_secret: shared.keys.kek.seal_secret(id.as_bytes(), secret),
            webhook_id: id,
            url: url.to_owned(),
            events: kinds,
            created_at: shared.now().0,
        };
        if !this.store.insert_webhook(&record)? {
            return Ok(Err(WebhookError::Full));
        }
        let hook = Arc::new(Hook {
            record: record.clone(),
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            wake: Notify::new(),
        });
        this.hooks.write().recover().push(hook.clone());
        spawn(shared, hook);
        Ok(Ok(record))
    }

    /// Removes a webhook, its queue and counters; stops its task.
    pub(crate) fn remove(&self, id: &str) -> StoreResult<Option<WebhookRecord>> {
        let removed = self.store.remove_webhook(id)?;
        self.hooks
            .write()
            .recover()
            .retain(|h| h.record.webhook_id != id);
        if let Some(task) = self.tasks.lock().recover().remove(id) {
            task.abort();
        }
        Ok(removed)
    }

    /// Queues a test event for one webhook; returns its idempotency key and
    /// delivery id, or `None` for an unknown webhook. The caller flushes,
    /// then marks it [`Webhooks::durable`].
    pub(crate) fn test(&self, id: &str, time: u64) -> StoreResult<Option<(String, u64)>> {
        let Some(hook) = self.find(id) else {
            return Ok(None);
        };
        let n = self.store.generate_id()?;
        let event = pb::Event {
            seq: 0,
            time,
            kind: TEST_KIND.to_owned(),
            detail: "a test delivery from `aloft webhook test`".to_owned(),
            ..Default::default()
        };
        let mut d = delivery(id, &event);
        d.idempotency_key = format!("test-{n}");
        d.body = body_json(id, &d.idempotency_key, &event);
        let key = d.idempotency_key.clone();
        self.store.enqueue(&[(id.to_owned(), n, d)])?;
        hook.queued.fetch_add(1, Relaxed);
        Ok(Some((key, n)))
    }

    fn find(&self, id: &str) -> Option<Arc<Hook>> {
        self.hooks
            .read()
            .recover()
            .iter()
            .find(|h| h.record.webhook_id == id)
            .cloned()
    }

    /// Every webhook with its delivery state.
    pub(crate) fn list(&self) -> StoreResult<Vec<pb::Webhook>> {
        let hooks = self.hooks.read().recover().clone();
        let mut out = Vec::with_capacity(hooks.len());
        for hook in hooks {
            let r = &hook.record;
            let stats = self.store.webhook_stats(&r.webhook_id)?;
            let head = self.store.next_delivery(&r.webhook_id)?;
            out.push(pb::Webhook {
                webhook_id: r.webhook_id.clone(),
                url: r.url.clone(),
                events: r.events.clone(),
                created_at: r.created_at,
                status: Some(pb::WebhookStatus {
                    pending: hook.queued.load(Relaxed),
                    delivered: stats.delivered,
                    failed_attempts: stats.failed_attempts,
                    last_success_at: stats.last_success_at,
                    last_failure_at: stats.last_failure_at,
                    last_error: stats.last_error,
                    oldest_pending_at: head.as_ref().map_or(0, |(_, d)| d.created_at),
                    head_attempts: head.as_ref().map_or(0, |(_, d)| d.attempts),
                    next_attempt_at: head
                        .as_ref()
                        .map_or(0, |(_, d)| d.next_attempt_at_ms / 1000),
                    dropped: stats.dropped + hook.dropped.load(Relaxed),
                    given_up: stats.given_up,
                }),
            });
        }
        Ok(out)
    }

    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut cached = self.tls.lock().recover();
        if let Some(c) = &*cached {
            return Ok(c.clone());
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(pem) = &self.settings.extra_ca_pem {
            use rustls_pki_types::pem::PemObject as _;
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("the webhook CA file: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("the webhook CA file: {e}"))?;
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let config = Arc::new(config);
        *cached = Some(config.clone());
        Ok(config)
    }
}

/// The JSON body of one event to one webhook.
fn body_json(webhook: &str, key: &str, e: &pb::Event) -> Vec<u8> {
    serde_json::json!({
        "id": key,
        "webhook_id": webhook,
        "seq": e.seq,
        "kind": e.kind,
        "time": e.time,
        "device_id": e.device_id,
        "release_id": e.release_id,
        "rollout_id": e.rollout_id,
        "detail": e.detail,
    })
    .to_string()
    .into_bytes()
}

fn delivery(webhook: &str, e: &pb::Event) -> DeliveryRecord {
    let key = format!("evt-{}", e.seq);
    DeliveryRecord {
        body: body_json(webhook, &key, e),
        idempotency_key: key,
        kind: e.kind.clone(),
        created_at: e.time,
        attempts: 0,
        next_attempt_at_ms: 0,
    }
}

fn spawn(shared: &Arc<Shared>, hook: Arc<Hook>) {
    let id = hook.record.webhook_id.clone();
    let task = tokio::spawn(run(shared.clone(), hook));
    if let Some(old) = shared.webhooks.tasks.lock().recover().insert(id, task) {
        old.abort();
    }
}

/// One webhook's delivery loop.
async fn run(shared: Arc<Shared>, hook: Arc<Hook>) {
    let this = &shared.webhooks;
    let id = hook.record.webhook_id.clone();
    let secret = match shared
        .keys
        .kek
        .open_secret(id.as_bytes(), &hook.record.sealed_secret)
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(webhook = %id, error = %e, "the webhook's secret does not open under this server's KEK: remove and add it again");
            return;
        }
    };
    let mut shutdown = shared.shutdown.clone();
    loop {
        let next = match this.store.next_delivery(&id) {
            Ok(n) => n.filter(|(n, _)| *n <= this.durable.load(Relaxed)),
            Err(e) => {
                tracing::error!(webhook = %id, error = %e, "could not read the webhook outbox");
                None
            }
        };
        let Some((n, mut d)) = next else {
            tokio::select! {
                _ = crate::stopped(&mut shutdown) => return,
                _ = hook.wake.notified() => continue,
                // A lost wake-up costs at most this.
                _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
            }
        };
        let wait = d.next_attempt_at_ms.saturating_sub(now_ms());
        if wait > 0 {
            tokio::select! {
                _ = crate::stopped(&mut shutdown) => return,
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            }
        }
        let result = tokio::select! {
            _ = crate::stopped(&mut shutdown) => return,
            r = attempt(this, &hook.record.url, &id, &secret, &d) => r,
        };
        let mut stats = this.store.webhook_stats(&id).unwrap_or_default();
        stats.dropped += hook.dropped.swap(0, Relaxed);
        let now = shared.now().0;
        let outcome = match result {
            Ok(()) => {
                stats.delivered += 1;
                stats.last_success_at = now;
                tracing::debug!(webhook = %id, key = %d.idempotency_key, attempts = d.attempts + 1, "webhook delivered");
                this.store.finish(&id, n, &stats).map(|()| "delivered")
            }
            Err(why) => {
                d.attempts += 1;
                stats.failed_attempts += 1;
                stats.last_failure_at = now;
                stats.last_error = why.chars().take(300).collect();
                let age = Duration::from_secs(now.saturating_sub(d.created_at));
                if age >= this.settings.give_up_after {
                    stats.given_up += 1;
                    tracing::warn!(webhook = %id, key = %d.idempotency_key, attempts = d.attempts, error = %why, "webhook delivery given up");
                    this.store.finish(&id, n, &stats).map(|()| "given_up")
                } else {
                    let unit = f64::from(crate::keys::random::<1>()[0]) / 255.0;
                    let delay = backoff(&this.settings, d.attempts, unit);
                    d.next_attempt_at_ms = now_ms() + delay.as_millis() as u64;
                    tracing::info!(webhook = %id, key = %d.idempotency_key, attempts = d.attempts, retry_in_ms = delay.as_millis() as u64, error = %why, "webhook delivery failed");
                    this.store
                        .retry_later(&id, n, &d, &stats)
                        .map(|()| "failed")
                }
            }
        };
        match outcome {
            Ok(result) => {
                if result != "failed" {
                    let _ = hook
                        .queued
                        .fetch_update(Relaxed, Relaxed, |q| Some(q.saturating_sub(1)));
                }
                shared
                    .metrics
                    .webhook_deliveries
                    .get_or_create(&crate::metrics::Outcome { result })
                    .inc();
            }
            Err(e) => {
                tracing::error!(webhook = %id, error = %e, "could not update the webhook outbox");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One POST of `d` to `url`; `Err` says why it failed.
async fn attempt(
    this: &Webhooks,
    url: &str,
    webhook: &str,
    secret: &[u8],
    d: &DeliveryRecord,
) -> Result<(), String> {
    let uri = check_url(url).map_err(|e| e.to_string())?;
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_secs());
    let request = hyper::Request::post(
        uri.path_and_query()
            .map_or("/", hyper::http::uri::PathAndQuery::as_str),
    )
    .header(
        hyper::header::HOST,
        uri.authority().map_or("", |a| a.as_str()),
    )
    .header(hyper::header::CONTENT_TYPE, "application/json")
    .header(
        hyper::header::USER_AGENT,
        concat!("aloft-server/", env!("CARGO_PKG_VERSION")),
    )
    .header("aloft-webhook-id", webhook)
    .header("aloft-event-kind", &d.kind)
    .header("aloft-idempotency-key", &d.idempotency_key)
    .header("aloft-timestamp", timestamp.to_string())
    .header(
        "aloft-signature",
        format!("v1={}", signature(secret, timestamp, &d.body)),
    )
    .body(Full::new(Bytes::from(d.body.clone())))
    .map_err(|e| format!("could not build the request: {e}"))?;
    let fut = async {
        let host = uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
        let status = if https {
            let name = rustls_pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| format!("host {host}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(this.tls()?)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {host}: {e}"))?;
            send(tls, request).await?
        } else {
            send(tcp, request).await?
        };
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered HTTP {status}"))
        }
    };
    tokio::time::timeout(this.settings.attempt_timeout, fut)
        .await
        .map_err(|_| {
            format!(
                "no answer within {} s",
                this.settings.attempt_timeout.as_secs_f32()
            )
        })?
}

async fn send<IO>(io: IO, request: hyper::Request<Full<Bytes>>) -> Result<hyper::StatusCode, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
    let conn = tokio::spawn(conn);
    let res = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = res.status();
    // Read (and drop) a bounded answer so the connection ends cleanly.
    let _ = http_body_util::Limited::new(res.into_body(), 64 * 1024)
        .collect()
        .await;
    conn.abort();
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(check_url("https://hooks.example.com/aloft?x=1").is_ok());
        assert!(check_url("http://127.0.0.1:8080/in").is_ok());
        assert!(check_url("http://[::1]:8080/in").is_ok());
        assert!(check_url("http://localhost/in").is_ok());
        for (bad, says) in [
            ("http://hooks.example.com/in", "only to a loopback"),
            ("ftp://hooks.example.com/in", "scheme"),
            ("https://user:pw@hooks.example.com/in", "password"),
            ("https://hooks.example.com/in#x", "fragment"),
            ("/just/a/path", "no host"),
            ("not a url", "not a URL"),
        ] {
            let e = check_url(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let long = format!("https://h.example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(check_url(&long).unwrap_err().to_string().contains("2048"));
    }

    #[test]
    fn kinds_are_checked() {
        assert_eq!(
            check_kinds(&[
                "confirmed".into(),
                " confirmed".into(),
                "rolled_back".into()
            ])
            .unwrap(),
            ["confirmed", "rolled_back"]
        );
        assert!(check_kinds(&["confirmd".into()]).is_err());
    }

    #[test]
    fn signature_is_hmac_over_timestamp_and_body() {
        let sig = signature(b"0123456789abcdef", 1_700_000_000, b"{\"a\":1}");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"0123456789abcdef").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        assert_eq!(sig, crate::auth::hex(&mac.finalize().into_bytes()));
        assert_eq!(sig.len(), 64);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let s = WebhookSettings {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(1000),
            ..Default::default()
        };
        assert_eq!(backoff(&s, 1, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(&s, 3, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(&s, 3, 0.0), Duration::from_millis(200));
        assert_eq!(backoff(&s, 20, 1.0), Duration::from_millis(1000));
        assert_eq!(backoff(&s, 200, 0.0), Duration::from_millis(500));
    }
}
