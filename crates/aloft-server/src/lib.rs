//! Aloft's OTA server: the device and admin gRPC services over an embedded
//! store (sled) or PostgreSQL.
//!
//! # Design decisions
//! - **Modules, one responsibility each**: [`store`] (the [`store::Store`]
//!   trait, free of sled types, and [`store::SledStore`]); [`pg_store`] and
//!   [`pg_schema`] (the PostgreSQL backend and its migrations); [`keys`] (directive
//!   key, KEK, secret files); [`auth`] (operator tokens and roles);
//!   [`session`] (live device sessions); [`tracking`] (status, reports,
//!   events); [`rollouts`] (the `aloft-rollout` engine over the store, and
//!   the background tick); [`clock`] (the injectable time source);
//!   `device_service` and `admin_service` (the gRPC surfaces).
//! - **Rollouts**: see [`rollouts`]. Selectors use `aloft-rollout`'s grammar,
//!   also for `ListDevices`.
//! - **Trust**: the server holds only its online directive key. Releases are
//!   verified against a TrustRoot installed with `SetTrustRoot`; until then,
//!   uploads fail with `FAILED_PRECONDITION`.
//! - **Device authentication**: every session starts with a 32-byte server
//!   challenge; the device's first message is a Hello signed by its
//!   registered key over that challenge with seq 1; later messages must carry
//!   seq + 1 and the same challenge. A device that does not answer within
//!   `hello_timeout` is dropped. Newest session wins (see [`session`]).
//! - **Least privilege**: device session tokens exist only in memory, for one
//!   session, and authorise only downloads of releases that a directive for
//!   that device names; operator tokens are hashed at rest and role-checked
//!   on every admin call.
//! - **Durability**: every acknowledged admin write and device report is
//!   flushed (`Store::flush`) before the reply is sent. Uploads stream into
//!   one object per upload ([`payloads`]) and publish the release record
//!   last; a failed upload deletes its object, and a crash in between leaves
//!   an orphan that the sweep deletes.
//! - **Downloads** stream through a bounded channel of
//!   `download_buffer_chunks`, so memory per stream is bounded by that many
//!   chunks whatever the image size.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aloft_protocol::pb::admin_service_server::AdminServiceServer;
use aloft_protocol::pb::device_service_server::DeviceServiceServer;
use aloft_protocol::trust::TrustChain;
use aloft_protocol::{PublicKey, UnixTime};
use tokio::sync::{Semaphore, watch};

mod admin_service;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod clock;
mod device_service;
mod error;
pub mod factory;
mod key_cache;
pub mod keys;
pub mod listen;
pub mod metrics;
pub mod ops;
mod ops_service;
pub mod ops_store;
pub mod payloads;
pub mod pg_schema;
pub mod pg_store;
mod products;
mod registration;
pub mod rollouts;
pub mod session;
pub mod store;
mod sync;
pub mod tracking;
mod wait;
mod web;
pub mod webhooks;

pub use error::{KeyFileError, ServerError};

/// Metadata key on a refusal saying how long to wait before retrying, in
/// milliseconds (rate limits, too many sessions connecting at once).
pub use aloft_protocol::wire::RETRY_AFTER_MS;

/// PEM files of the server's TLS identity.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Directory for the store and key files.
    pub data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// TLS identity; `None` serves plaintext (tests and local use only).
    pub tls: Option<TlsFiles>,
    /// Limits and timings.
    pub limits: Limits,
    /// The time source ([`clock::SystemClock`] unless a test injects one).
    pub clock: Arc<dyn clock::Clock>,
    /// Where release payloads live and what directives name for direct
    /// downloads ([`payloads`]).
    pub payloads: payloads::PayloadConfig,
    /// Address of the browser dashboard (`None`: not served); same TLS
    /// identity as `listen`.
    pub web: Option<SocketAddr>,
    /// Metrics, webhooks and the audit log ([`ops`]).
    pub ops: ops::OpsConfig,
    /// Where records live: sled in `data_dir` (the default) or PostgreSQL.
    pub store: StoreBackend,
}

/// Which backend holds the server's records (its `Debug` hides a password).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum StoreBackend {
    /// The embedded default: sled under `data_dir/db`.
    #[default]
    Sled,
    /// PostgreSQL (or a wire-compatible engine) at this URL, its schema
    /// created by `aloft-server migrate` ([`pg_schema`]).
    Postgres(String),
}

impl std::fmt::Debug for StoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sled => f.write_str("Sled"),
            Self::Postgres(url) => write!(f, "Postgres({})", pg_store::redact(url)),
        }
    }
}

impl std::str::FromStr for StoreBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "sled" {
            Ok(Self::Sled)
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(Self::Postgres(s.to_owned()))
        } else {
            Err(format!(
                "unknown store {s:?}: use `sled` (the embedded default, under --data) or a \
                 postgres://user@host:port/database URL"
            ))
        }
    }
}

/// Tunable limits and timings, with sensible defaults.
#[derive(Clone, Debug)]
pub struct Limits {
    /// How long a device has to answer the challenge.
    pub hello_timeout: Duration,
    /// `next_check_in_secs` sent in Welcome.
    pub next_check_in_secs: u64,
    /// Lifetime of a directive.
    pub directive_ttl: Duration,
    /// Largest release payload accepted.
    pub max_payload_len: u64,
    /// Largest decoded message on the device service.
    pub max_device_message: usize,
    /// Largest decoded message on the admin service (upload parts included).
    pub max_admin_message: usize,
    /// Chunks buffered per download stream.
    pub download_buffer_chunks: usize,
    /// Concurrent download streams.
    pub max_downloads: usize,
    /// Capacity of the live event channel.
    pub event_buffer: usize,
    /// Devices offered and not finished across all rollouts: the server's
    /// pacing cap (0 = none).
    pub max_concurrent_downloads: u32,
    /// How often the rollout tick runs (soak, silent devices, health gate).
    pub rollout_tick: Duration,
    /// Least time between two history samples of a rollout whose state and
    /// stage did not change (whole seconds; state changes are sampled at once).
    pub rollout_sample_interval: Duration,
    /// History samples kept per rollout; the oldest are deleted.
    pub rollout_samples_kept: usize,
    /// An offer with no report for this long is withdrawn (0 = never).
    pub offer_timeout_secs: u64,
    /// Largest per-device jitter on suggested check-ins, in seconds.
    pub check_in_jitter_secs: u64,
    /// Largest per-device delay before a connected device is offered an
    /// update that became available (rollout created, resumed, advanced).
    pub notify_jitter: Duration,
    /// When a device counts as suspected broken (`stale_after_secs` is not
    /// used: ListDevices takes the stale period per request).
    pub tracking: aloft_rollout::tracking::TrackingPolicy,
    /// Connection caps and the handshake deadline.
    pub connections: listen::ConnLimits,
    /// Concurrent HTTP/2 streams one connection may open.
    pub max_streams_per_connection: u32,
    /// Device sessions between their challenge and an accepted hello at
    /// once; more are refused with a suggested retry delay.
    pub max_pending_hellos: usize,
    /// Admin requests per operator token.
    pub admin_rate: auth::RateLimit,
    /// How long a shutdown waits for calls in flight before it closes
    /// every connection.
    pub shutdown_grace: Duration,
    /// Oldest registration request accepted, by its creation time.
    pub registration_max_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            hello_timeout: Duration::from_secs(10),
            next_check_in_secs: 300,
            directive_ttl: Duration::from_secs(3600),
            max_payload_len: 256 << 20,
            max_device_message: 16 * 1024,
            max_admin_message: 1 << 20,
            download_buffer_chunks: 4,
            max_downloads: 256,
            event_buffer: 1024,
            max_concurrent_downloads: 0,
            rollout_tick: Duration::from_secs(1),
            rollout_sample_interval: Duration::from_secs(60),
            rollout_samples_kept: rollouts::MAX_SAMPLES_PER_ROLLOUT,
            offer_timeout_secs: 24 * 3600,
            check_in_jitter_secs: aloft_rollout::rollout::DEFAULT_JITTER_SECS,
            notify_jitter: Duration::from_secs(10),
            tracking: aloft_rollout::tracking::TrackingPolicy::default(),
            connections: listen::ConnLimits::default(),
            max_streams_per_connection: 64,
            max_pending_hellos: 2048,
            admin_rate: auth::RateLimit::default(),
            shutdown_grace: Duration::from_secs(10),
            registration_max_age: Duration::from_secs(7 * 86_400),
        }
    }
}

impl ServerConfig {
    /// Plaintext on `listen`, data in `data_dir`, default limits.
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen,
            tls: None,
            limits: Limits::default(),
            clock: Arc::new(clock::SystemClock),
            payloads: payloads::PayloadConfig::default(),
            web: None,
            ops: ops::OpsConfig::default(),
            store: StoreBackend::Sled,
        }
    }
}

/// State shared by both services.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn store::Store>,
    pub(crate) payloads: Arc<payloads::Payloads>,
    pub(crate) keys: keys::ServerKeys,
    pub(crate) auth: auth::Authenticator,
    pub(crate) sessions: session::SessionRegistry,
    pub(crate) tracker: tracking::Tracker,
    pub(crate) rollouts: rollouts::Rollouts,
    pub(crate) clock: Arc<dyn clock::Clock>,
    /// Every TrustRoot accepted, oldest first (`None` before the first).
    pub(crate) trust: RwLock<Option<TrustChain>>,
    pub(crate) limits: Limits,
    pub(crate) downloads: Arc<Semaphore>,
    /// Sessions waiting for their hello (see `Limits::max_pending_hellos`).
    pub(crate) pending_hellos: Arc<Semaphore>,
    /// Registered device keys in ring's form (a check-in skips decompressing).
    pub(crate) device_keys: key_cache::KeyCache,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) uploads_in_progress: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Operating the server: metrics, webhooks, the audit log, backups.
    pub(crate) metrics: Arc<metrics::Metrics>,
    pub(crate) webhooks: webhooks::Webhooks,
    pub(crate) audit: audit::AuditLog,
    pub(crate) ops_store: Arc<dyn ops_store::OpsStore>,
    pub(crate) data_dir: PathBuf,
}

impl Shared {
    /// Now, by the server's clock.
    pub(crate) fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// Makes every write so far durable, then publishes the events it
    /// covered to live watchers (never before: a watcher must not see an
    /// event a crash then erases).
    pub(crate) async fn flush(&self) -> Result<(), store::StoreError> {
        // Webhook deliveries are queued with the events they carry.
        let (events, queued) = self.webhooks.enqueue(&self.tracker);
        let started = std::time::Instant::now();
        match self.store.flush().await {
            Ok(()) => {
                self.metrics.flushed(started, &events);
                self.webhooks.durable(queued);
                self.tracker.publish_durable(events);
                Ok(())
            }
            Err(e) => {
                self.tracker.restore_pending(events);
                Err(e)
            }
        }
    }
}

/// A running server. Drop without [`RunningServer::shutdown`] aborts it.
pub struct RunningServer {
    local_addr: SocketAddr,
    admin_token: String,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    ticker: tokio::task::JoinHandle<()>,
    accept_stats: Arc<listen::AcceptStats>,
    web: Option<web::WebServer>,
    metrics_addr: Option<SocketAddr>,
}

impl RunningServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bootstrap admin token from `DIR/admin-token` (empty if that file
    /// was removed).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The directive key's public key (list it in the TrustRoot's server keys).
    pub fn server_public_key(&self) -> PublicKey {
        self.shared.keys.directive_key().public_key()
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, if they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Where the browser dashboard listens, if it is served.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().map(|w| w.local_addr)
    }

    /// Connections refused or dropped at accept so far.
    pub fn accept_stats(&self) -> &listen::AcceptStats {
        &self.accept_stats
    }

    /// Stops accepting, closes device sessions and event streams, waits for
    /// in-flight calls (at most `Limits::shutdown_grace`, then every
    /// connection is closed), and flushes the store. Ends in bounded time
    /// whatever the clients do.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.stop.send(true);
        self.shared
            .sessions
            .close_all(session::CloseReason::Shutdown);
        let mut task = self.task;
        let served = match tokio::time::timeout(self.shared.limits.shutdown_grace, &mut task).await
        {
            Ok(joined) => joined
                .map_err(ServerError::Task)?
                .map_err(ServerError::Transport),
            Err(_) => {
                tracing::warn!(
                    grace = ?self.shared.limits.shutdown_grace,
                    "calls still in flight after the shutdown grace period; closing every connection"
                );
                task.abort();
                Ok(())
            }
        };
        if let Some(web) = self.web {
            let mut task = web.task;
            if tokio::time::timeout(self.shared.limits.shutdown_grace, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        let _ = self.ticker.await;
        // The audit log's last records are covered by a signed head.
        if let Err(e) = audit::sign_and_flush(&self.shared).await {
            tracing::error!(error = %e, "could not sign the audit head at shutdown");
        }
        self.shared.flush().await?;
        served?;
        tracing::info!("server stopped, store flushed");
        Ok(())
    }
}

/// Resolves once the shutdown flag is set (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn bootstrap_admin_token(
    dir: &std::path::Path,
    store: &Arc<dyn store::Store>,
    auth: &auth::Authenticator,
    now: u64,
) -> Result<String, ServerError> {
    let path = keys::admin_token_path(dir);
    if store.list_tokens()?.is_empty() {
        if path.exists() {
            std::fs::remove_file(&path)?;
        }
        let (record, secret) = auth.create("bootstrap-admin", auth::Role::Admin, now)?;
        keys::write_secret_file(&path, format!("{secret}\n").as_bytes())?;
        tracing::info!(path = %path.display(), token_id = %record.token_id, "bootstrap admin token created");
    } else {
        tracing::info!(path = %path.display(), "bootstrap admin token file");
    }
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e.into()),
    }
}

/// The configured store, as both traits.
async fn open_store(
    config: &ServerConfig,
    payloads: &payloads::Payloads,
) -> Result<(Arc<dyn store::Store>, Arc<dyn ops_store::OpsStore>), ServerError> {
    match &config.store {
        StoreBackend::Sled => {
            let db = config.data_dir.join("db");
            let moved = payloads::migrate_sled_chunks(&db, payloads).await?;
            if moved > 0 {
                tracing::info!(
                    releases = moved,
                    objects = payloads.describe(),
                    "moved release payloads from sled into the object store"
                );
            }
            let sled = Arc::new(store::SledStore::open(&db)?);
            Ok((sled.clone(), sled))
        }
        StoreBackend::Postgres(url) => {
            let url = url.clone();
            // Connecting blocks on the store's own runtime.
            let pg = tokio::task::spawn_blocking(move || pg_store::PgStore::connect(&url))
                .await
                .map_err(|e| store::StoreError::Backend(format!("connect task: {e}")))??;
            tracing::info!(db = pg.describe(), "store: postgres");
            let pg = Arc::new(pg);
            Ok((pg.clone(), pg))
        }
    }
}

/// Opens the data directory (creating keys and the bootstrap token on first
/// start), binds `config.listen` and serves in a background task.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    std::fs::create_dir_all(&config.data_dir)?;
    let keys = keys::ServerKeys::load_or_create(&config.data_dir)?;
    let payloads = Arc::new(payloads::Payloads::open(
        &config.payloads,
        &config.data_dir,
    )?);
    let (store, ops_store) = open_store(&config, &payloads).await?;
    sweep_payloads(&store, &payloads, config.payloads.orphan_grace).await?;
    let auth = auth::Authenticator::with_rate_limit(store.clone(), config.limits.admin_rate);
    let clock = config.clock.clone();
    let admin_token = bootstrap_admin_token(&config.data_dir, &store, &auth, clock.now().0)?;
    let rollouts = rollouts::Rollouts::load(
        store.clone(),
        rollouts::RolloutSettings {
            max_concurrent_downloads: config.limits.max_concurrent_downloads,
            offer_timeout_secs: config.limits.offer_timeout_secs,
            check_in_secs: config.limits.next_check_in_secs.max(1),
            // A device held back by a pacing cap comes back no later than
            // it would check in anyway.
            pacing_retry_secs: aloft_rollout::rollout::DEFAULT_PACING_RETRY_SECS
                .min(config.limits.next_check_in_secs.max(1)),
            jitter_secs: config.limits.check_in_jitter_secs,
            sample_interval_secs: config.limits.rollout_sample_interval.as_secs(),
            max_samples: config.limits.rollout_samples_kept,
        },
    )
    .map_err(ServerError::Rollouts)?;
    store.flush().await?;

    let trust = load_trust_chain(store.as_ref(), &keys, clock.now())?;
    let tls = match &config.tls {
        Some(files) => {
            let cert = std::fs::read(&files.cert)
                .map_err(|e| ServerError::tls(files.cert.display().to_string(), e))?;
            let key = std::fs::read(&files.key)
                .map_err(|e| ServerError::tls(files.key.display().to_string(), e))?;
            Some(listen::tls_acceptor(&cert, &key)?)
        }
        None => None,
    };

    let (stop, shutdown) = watch::channel(false);
    let shared = Arc::new(Shared {
        tracker: tracking::Tracker::new(store.clone(), config.limits.event_buffer, clock.clone()),
        rollouts,
        clock,
        sessions: session::SessionRegistry::default(),
        downloads: Arc::new(Semaphore::new(config.limits.max_downloads)),
        pending_hellos: Arc::new(Semaphore::new(config.limits.max_pending_hellos.max(1))),
        device_keys: key_cache::KeyCache::default(),
        trust: RwLock::new(trust),
        limits: config.limits.clone(),
        uploads_in_progress: Default::default(),
        store,
        payloads,
        keys,
        auth,
        shutdown: shutdown.clone(),
        metrics: Arc::new(metrics::Metrics::new()),
        webhooks: webhooks::Webhooks::load(ops_store.clone(), config.ops.webhooks.clone())?,
        audit: audit::AuditLog::open(ops_store.clone())?,
        ops_store,
        data_dir: config.data_dir.clone(),
    });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr()?;

    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(config.limits.max_streams_per_connection.max(1)))
        .layer(listen::UnknownMethodLayer);
    let device = DeviceServiceServer::new(device_service::DeviceSvc::new(shared.clone()))
        .max_decoding_message_size(config.limits.max_device_message);
    let admin = AdminServiceServer::new(admin_service::AdminSvc::new(shared.clone()))
        .max_decoding_message_size(config.limits.max_admin_message);
    let router = builder
        .add_service(device)
        .add_service(audit::Audited::new(admin, shared.clone()));
    let metrics_addr = ops::start(&shared, &config.ops).await?;
    let web = match config.web {
        Some(addr) => Some(web::start(addr, shared.clone(), tls.clone(), shutdown.clone()).await?),
        None => None,
    };
    let mut signal = shutdown.clone();
    let accept_stats = Arc::new(listen::AcceptStats::default());
    let incoming = listen::accept(
        listener,
        tls,
        config.limits.connections,
        shutdown,
        accept_stats.clone(),
    );
    let task = tokio::spawn(router.serve_with_incoming_shutdown(
        tokio_stream::wrappers::ReceiverStream::new(incoming),
        async move {
            stopped(&mut signal).await;
        },
    ));
    let ticker = tokio::spawn(rollout_ticker(shared.clone(), config.limits.rollout_tick));
    tokio::spawn(payload_sweeper(
        shared.clone(),
        config.payloads.orphan_grace,
    ));
    tracing::info!(addr = %local_addr, tls = config.tls.is_some(), "serving");
    Ok(RunningServer {
        local_addr,
        admin_token,
        accept_stats,
        shared,
        stop,
        task,
        ticker,
        web,
        metrics_addr,
    })
}

/// Loads every stored TrustRoot, re-verifying each link (signatures, never
/// expiry: an expired newest root is kept, and the next `SetTrustRoot` must
/// still be signed by its threshold), and switches to the next directive key
/// if the newest root lists it.
fn load_trust_chain(
    store: &dyn store::Store,
    keys: &keys::ServerKeys,
    now: UnixTime,
) -> Result<Option<TrustChain>, ServerError> {
    let records = store.trust_chain()?;
    if records.is_empty() {
        tracing::warn!(
            "no TrustRoot installed: release uploads are refused until an admin installs one (`aloft trust-root set FILE`, e.g. the trust-root.pb `cargo xtask keys` wrote)"
        );
        return Ok(None);
    }
    let envelopes: Vec<_> = records
        .into_iter()
        .map(|r| r.trust_root.unwrap_or_default())
        .collect();
    let chain = TrustChain::reload_stored(&envelopes).map_err(ServerError::TrustChain)?;
    let latest = chain.latest();
    if latest.is_expired(now) {
        tracing::error!(
            version = latest.version(),
            expired_at = latest.expires_at().0,
            "the newest TrustRoot has expired: uploads and directives are refused until an admin installs its successor (signed by this root's threshold) with SetTrustRoot"
        );
    } else {
        tracing::info!(
            version = latest.version(),
            chain = chain.roots().len(),
            "TrustRoot chain loaded"
        );
    }
    keys.adopt_listed(latest)?;
    if !latest
        .server_keys()
        .contains(&keys.directive_key().public_key())
    {
        tracing::warn!(key_id = %keys.key_id(), "the newest TrustRoot does not list this server's directive key: devices will refuse its directives");
    }
    Ok(Some(chain))
}

/// Deletes payload objects that no release names and that are older than
/// `grace` (uploads that crashed before publishing their release).
async fn sweep_payloads(
    store: &Arc<dyn store::Store>,
    payloads: &payloads::Payloads,
    grace: Duration,
) -> Result<(), ServerError> {
    let mut live = std::collections::HashSet::new();
    for record in store.list_releases()? {
        live.insert(payloads.location_of(&record)?);
    }
    let removed = payloads.sweep(&live, grace).await?;
    if removed > 0 {
        tracing::info!(
            objects = removed,
            store = payloads.describe(),
            "removed payloads of unfinished uploads"
        );
    }
    Ok(())
}

/// Sweeps orphaned payloads every [`payloads::SWEEP_EVERY`] until shutdown.
async fn payload_sweeper(shared: Arc<Shared>, grace: Duration) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            () = tokio::time::sleep(payloads::SWEEP_EVERY) => {}
        }
        if let Err(e) = sweep_payloads(&shared.store, &shared.payloads, grace).await {
            tracing::warn!(error = %e, "payload orphan sweep failed; retrying in an hour");
        }
    }
}

/// Runs [`rollouts::Rollouts::tick`] every `period` until shutdown: records
/// and publishes the resulting events, then flushes.
async fn rollout_ticker(shared: Arc<Shared>, period: Duration) {
    let mut shutdown = shared.shutdown.clone();
    let mut interval = tokio::time::interval(period.max(Duration::from_millis(10)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = interval.tick() => {}
        }
        if let Err(e) = tick_once(&shared).await {
            tracing::error!(error = %e, "rollout tick failed");
        }
    }
}

async fn tick_once(shared: &Shared) -> Result<(), ServerError> {
    let tick = shared
        .rollouts
        .tick(shared.now())
        .map_err(ServerError::Rollouts)?;
    if tick.events.is_empty() && tick.samples == 0 {
        return Ok(());
    }
    for e in &tick.events {
        tracing::info!(rollout = %e.rollout, kind = %e.kind, detail = %e.detail, "rollout event");
        shared.tracker.rollout_event(e)?;
    }
    shared.flush().await?;
    Ok(())
}
