//! Prometheus metrics and health endpoints on a listener of their own
//! (`--metrics ADDR`): `GET /metrics` (Prometheus text format 0.0.4),
//! `GET /healthz` (the process answers) and `GET /readyz` (the store
//! answers a read, a TrustRoot is installed, the stored data is of this
//! server's version).
//!
//! Nothing served here is secret: counts, states, ids of rollouts and
//! durations; never tokens, keys, device ids or URLs. The listener speaks
//! plain HTTP/1.1 and is meant for a scraper on a private network (bind it
//! to 127.0.0.1 or an internal address).
//!
//! Counters are moved where things happen (one line each on the device
//! path); gauges (connected devices, downloads in flight, rollouts, webhook
//! queues, process memory and descriptors) are read when scraped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aloft_protocol::pb;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Shared;

/// One label: `reason`, `kind`, `result`, `state` or `code`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// Why.
    pub reason: &'static str,
}

/// A report or event kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// The kind's wire word.
    pub kind: String,
}

/// A webhook delivery result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// delivered, failed, given_up or dropped.
    pub result: &'static str,
}

/// A rollout state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct State {
    /// active, paused, cancelled or completed.
    pub state: &'static str,
}

/// Devices of one rollout stage with one outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageOutcome {
    /// Rollout id.
    pub rollout: String,
    /// Stage name.
    pub stage: String,
    /// targeted, pending, offered, installed, updated, failed, rolled_back, excluded.
    pub outcome: &'static str,
}

/// A refused admin call's gRPC code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Code {
    /// The code's name, e.g. permission_denied.
    pub code: String,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    started: Instant,
    /// Device Session streams opened.
    pub sessions_opened: Counter,
    /// Sessions refused before their Welcome, by reason.
    pub sessions_refused: Family<Reason, Counter>,
    /// Hellos accepted (a device checked in).
    pub check_ins: Counter,
    /// Offers sent.
    pub offers: Counter,
    /// Download streams started.
    pub downloads: Counter,
    /// Payload bytes sent to devices.
    pub download_bytes: Counter,
    /// Device reports received, by kind.
    pub reports: Family<Kind, Counter>,
    /// Events recorded, by kind.
    pub events: Family<Kind, Counter>,
    /// Store flushes (every acknowledged write waits for one).
    pub store_flush: Histogram,
    /// A store read, timed at every /readyz and scrape.
    pub store_read: Histogram,
    /// Webhook attempts by result.
    pub webhook_deliveries: Family<Outcome, Counter>,
    /// Audit records appended.
    pub audit_records: Counter,
    /// Admin calls refused, by gRPC code.
    pub admin_refused: Family<Code, Counter>,
    /// How long the last backup held writes.
    pub backup_pause: Histogram,
    connected: Gauge,
    downloads_active: Gauge,
    rollouts: Family<State, Gauge>,
    stage_devices: Family<StageOutcome, Gauge>,
    webhook_queue: Gauge,
    audit_seq: Gauge,
    trust_root_version: Gauge,
    resident_bytes: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    uptime: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency() -> Histogram {
    // 50 µs to about 3 s.
    Histogram::new(exponential_buckets(0.000_05, 3.0, 11))
}

impl Metrics {
    /// Every metric at zero, registered under the `aloft_` prefix.
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("aloft"),
            started: Instant::now(),
            sessions_opened: Counter::default(),
            sessions_refused: Family::default(),
            check_ins: Counter::default(),
            offers: Counter::default(),
            downloads: Counter::default(),
            download_bytes: Counter::default(),
            reports: Family::default(),
            events: Family::default(),
            store_flush: latency(),
            store_read: latency(),
            webhook_deliveries: Family::default(),
            audit_records: Counter::default(),
            admin_refused: Family::default(),
            backup_pause: latency(),
            connected: Gauge::default(),
            downloads_active: Gauge::default(),
            rollouts: Family::default(),
            stage_devices: Family::default(),
            webhook_queue: Gauge::default(),
            audit_seq: Gauge::default(),
            trust_root_version: Gauge::default(),
            resident_bytes: Gauge::default(),
            open_fds: Gauge::default(),
            max_fds: Gauge::default(),
            uptime: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "device_sessions_opened",
            "Device session streams opened",
            m.sessions_opened.clone(),
        );
        r.register(
            "device_sessions_refused",
            "Device sessions refused before their Welcome, by reason",
            m.sessions_refused.clone(),
        );
        r.register(
            "device_check_ins",
            "Device hellos accepted",
            m.check_ins.clone(),
        );
        r.register("offers", "Update offers sent to devices", m.offers.clone());
        r.register(
            "downloads_started",
            "Payload download streams started",
            m.downloads.clone(),
        );
        r.register(
            "download_bytes",
            "Payload bytes sent to devices",
            m.download_bytes.clone(),
        );
        r.register(
            "device_reports",
            "Device reports received, by kind",
            m.reports.clone(),
        );
        r.register("events", "Events recorded, by kind", m.events.clone());
        r.register(
            "store_flush_seconds",
            "Time to make writes durable (every acknowledged write waits for one)",
            m.store_flush.clone(),
        );
        r.register(
            "store_read_seconds",
            "Time of a store read probe (at each scrape and /readyz)",
            m.store_read.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by result",
            m.webhook_deliveries.clone(),
        );
        r.register(
            "audit_records",
            "Audit log records appended",
            m.audit_records.clone(),
        );
        r.register(
            "admin_refused",
            "Admin calls refused, by gRPC code",
            m.admin_refused.clone(),
        );
        r.register(
            "backup_pause_seconds",
            "How long a backup held the store's writes",
            m.backup_pause.clone(),
        );
        r.register(
            "devices_connected",
            "Devices with a live session",
            m.connected.clone(),
        );
        r.register(
            "downloads_active",
            "Payload downloads in flight",
            m.downloads_active.clone(),
        );
        r.register("rollouts", "Rollouts by state", m.rollouts.clone());
        r.register(
            "rollout_stage_devices",
            "Devices of each stage of active and paused rollouts, by outcome",
            m.stage_devices.clone(),
        );
        r.register(
            "webhook_queued",
            "Webhook deliveries waiting in the outbox",
            m.webhook_queue.clone(),
        );
        r.register(
            "audit_seq",
            "Seq of the newest audit record",
            m.audit_seq.clone(),
        );
        r.register(
            "trust_root_version",
            "Version of the newest TrustRoot (0 = none)",
            m.trust_root_version.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory of the server process",
            m.resident_bytes.clone(),
        );
        r.register(
            "process_open_fds",
            "Open file descriptors",
            m.open_fds.clone(),
        );
        r.register(
            "process_max_fds",
            "File descriptor limit",
            m.max_fds.clone(),
        );
        r.register(
            "uptime_seconds",
            "Seconds since the server started",
            m.uptime.clone(),
        );
        m
    }

    /// Counts a session refused before its Welcome, by what its status says.
    pub fn session_refused(&self, status: &tonic::Status) {
        let reason = match status.code() {
            tonic::Code::Unavailable => "busy",
            tonic::Code::DeadlineExceeded => "hello_timeout",
            tonic::Code::PermissionDenied => "revoked",
            tonic::Code::Unauthenticated if status.message().starts_with("unknown device") => {
                "unknown_device"
            }
            tonic::Code::Unauthenticated => "bad_signature",
            tonic::Code::InvalidArgument => "malformed",
            _ => "other",
        };
        self.sessions_refused
            .get_or_create(&Reason { reason })
            .inc();
    }

    /// Records a completed store flush and the events it made durable.
    pub fn flushed(&self, started: Instant, events: &[pb::Event]) {
        self.store_flush.observe(started.elapsed().as_secs_f64());
        for e in events {
            self.events
                .get_or_create(&Kind {
                    kind: e.kind.clone(),
                })
                .inc();
        }
    }

    /// Counts a device report.
    pub fn report(&self, kind: i32) {
        let kind = pb::ReportKind::try_from(kind)
            .map(|k| {
                k.as_str_name()
                    .trim_start_matches("REPORT_KIND_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|_| "unknown".to_owned());
        self.reports.get_or_create(&Kind { kind }).inc();
    }

    /// Reads the gauges from the server and encodes everything.
    fn render(&self, shared: &Shared) -> String {
        self.connected.set(shared.sessions.connected() as i64);
        let in_flight = shared
            .limits
            .max_downloads
            .saturating_sub(shared.downloads.available_permits());
        self.downloads_active.set(in_flight as i64);
        self.rollouts.clear();
        self.stage_devices.clear();
        for state in ["active", "paused", "cancelled", "completed"] {
            self.rollouts.get_or_create(&State { state }).set(0);
        }
        for r in shared.rollouts.list() {
            let state = match pb::RolloutState::try_from(r.state) {
                Ok(pb::RolloutState::Active) => "active",
                Ok(pb::RolloutState::Paused) => "paused",
                Ok(pb::RolloutState::Cancelled) => "cancelled",
                Ok(pb::RolloutState::Completed) => "completed",
                _ => continue,
            };
            self.rollouts.get_or_create(&State { state }).inc();
            if state != "active" && state != "paused" {
                continue;
            }
            for c in &r.counts {
                for (outcome, n) in [
                    ("targeted", c.targeted),
                    ("pending", c.pending),
                    ("offered", c.offered),
                    ("installed", c.installed),
                    ("updated", c.updated),
                    ("failed", c.failed),
                    ("rolled_back", c.rolled_back),
                    ("excluded", c.excluded),
                ] {
                    self.stage_devices
                        .get_or_create(&StageOutcome {
                            rollout: r.rollout_id.clone(),
                            stage: c.stage.clone(),
                            outcome,
                        })
                        .set(i64::from(n));
                }
            }
        }
        self.webhook_queue
            .set(shared.webhooks.queued_total() as i64);
        self.audit_seq.set(shared.audit.seq() as i64);
        let version = shared
            .trust
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map_or(0, |c| c.latest().version());
        self.trust_root_version.set(i64::from(version));
        let process = process_stats();
        self.resident_bytes.set(process.resident_bytes as i64);
        self.open_fds.set(process.open_fds as i64);
        self.max_fds.set(process.max_fds as i64);
        self.uptime.set(self.started.elapsed().as_secs() as i64);
        let _ = probe_store(shared);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
        {
            tracing::error!(error = %e, "could not encode metrics");
        }
        out.push_str("# EOF\n");
        out
    }
}

/// What `/proc/self` says about the process (zeros where it says nothing).
#[derive(Clone, Copy, Debug, Default)]
struct ProcessStats {
    resident_bytes: u64,
    open_fds: u64,
    max_fds: u64,
}

fn process_stats() -> ProcessStats {
    let mut p = ProcessStats::default();
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        p.resident_bytes = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        p.open_fds = dir.count() as u64;
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        p.max_fds = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
    }
    p
}

/// Reads one record to show the store answers; times it.
fn probe_store(shared: &Shared) -> Result<(), String> {
    let t = Instant::now();
    let result = shared
        .store
        .trust_chain()
        .map(|_| ())
        .map_err(|e| e.to_string());
    shared.metrics.store_read.observe(t.elapsed().as_secs_f64());
    result
}

/// Why the server is not ready, or `None` when it is.
fn not_ready(shared: &Shared) -> Option<String> {
    if let Err(e) = probe_store(shared) {
        return Some(format!("the store does not answer: {e}"));
    }
    let trust = shared
        .trust
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .is_some();
    if !trust {
        return Some(
            "no TrustRoot installed: an admin must run `aloft trust-root set FILE`".to_owned(),
        );
    }
    if *shared.shutdown.borrow() {
        return Some("shutting down".to_owned());
    }
    None
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        res.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    res
}

fn answer(shared: &Shared, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET is served here\n".to_owned(),
        );
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            shared.metrics.render(shared),
        ),
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".to_owned()),
        "/readyz" => match not_ready(shared) {
            None => text(StatusCode::OK, PLAIN, "ready\n".to_owned()),
            Some(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                format!("not ready: {why}\n"),
            ),
        },
        other => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            format!(
                "no {}: this listener serves /metrics, /healthz and /readyz\n",
                other.chars().take(100).collect::<String>()
            ),
        ),
    }
}

/// Serves the endpoints on `listener` until shutdown. Each connection gets
/// 10 s to send its request; at most 64 are served at once.
pub(crate) fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    tokio::spawn(async move {
        let mut shutdown = shared.shutdown.clone();
        loop {
            let (tcp, _) = tokio::select! {
                _ = crate::stopped(&mut shutdown) => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                continue; // dropped: a scraper retries
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(|req| {
                    let res = answer(&shared, &req);
                    async move { Ok::<_, std::convert::Infallible>(res) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .header_read_timeout(Duration::from_secs(10))
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
            });
        }
    });
}

/// Binds the metrics listener.
pub(crate) async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, crate::ServerError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| crate::ServerError::Bind { addr, source })
}
