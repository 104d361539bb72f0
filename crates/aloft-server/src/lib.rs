//! Aloft's OTA server: the device and admin gRPC services over an embedded
//! store.
//!
//! # Design decisions
//! - **Modules, one responsibility each**: [`store`] (the [`store::Store`]
//!   trait, free of sled types, and [`store::SledStore`]); [`keys`] (directive
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
//!   flushed (`Store::flush`) before the reply is sent. Uploads write chunks
//!   under a fresh upload id and publish the release record last; a failed
//!   upload deletes its chunks, and a crash mid-upload leaves chunks that the
//!   next start sweeps.
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
use aloft_protocol::trust::VerifiedTrustRoot;
use aloft_protocol::{PublicKey, UnixTime};
use tokio::sync::{Semaphore, watch};
use tonic::transport::{Identity, ServerTlsConfig};

mod admin_service;
pub mod auth;
pub mod clock;
mod device_service;
mod error;
pub mod keys;
pub mod rollouts;
pub mod session;
pub mod store;
pub mod tracking;

pub use error::ServerError;

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
        }
    }
}

/// State shared by both services.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn store::Store>,
    pub(crate) keys: keys::ServerKeys,
    pub(crate) auth: auth::Authenticator,
    pub(crate) sessions: session::SessionRegistry,
    pub(crate) tracker: tracking::Tracker,
    pub(crate) rollouts: rollouts::Rollouts,
    pub(crate) clock: Arc<dyn clock::Clock>,
    pub(crate) trust: RwLock<Option<VerifiedTrustRoot>>,
    pub(crate) limits: Limits,
    pub(crate) downloads: Arc<Semaphore>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) uploads_in_progress: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Shared {
    /// Now, by the server's clock.
    pub(crate) fn now(&self) -> UnixTime {
        self.clock.now()
    }
}

/// A running server. Drop without [`RunningServer::shutdown`] aborts it.
pub struct RunningServer {
    local_addr: SocketAddr,
    admin_token: String,
    public_key: PublicKey,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    ticker: tokio::task::JoinHandle<()>,
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
        self.public_key
    }

    /// Stops accepting, closes device sessions and event streams, waits for
    /// in-flight calls, and flushes the store.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.stop.send(true);
        self.shared
            .sessions
            .close_all(session::CloseReason::Shutdown);
        let served = self
            .task
            .await
            .map_err(|e| ServerError::Transport(e.to_string()))?;
        let _ = self.ticker.await;
        self.shared.store.flush().await?;
        served.map_err(|e| ServerError::Transport(e.to_string()))?;
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

/// Opens the data directory (creating keys and the bootstrap token on first
/// start), binds `config.listen` and serves in a background task.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    std::fs::create_dir_all(&config.data_dir)?;
    let keys = keys::ServerKeys::load_or_create(&config.data_dir)?;
    let sled = store::SledStore::open(&config.data_dir.join("db"))?;
    let store: Arc<dyn store::Store> = Arc::new(sled);
    let swept = store.sweep_orphan_chunks()?;
    if swept > 0 {
        tracing::info!(chunks = swept, "removed chunks of unfinished uploads");
    }
    let auth = auth::Authenticator::new(store.clone());
    let clock = config.clock.clone();
    let admin_token = bootstrap_admin_token(&config.data_dir, &store, &auth, clock.now().0)?;
    let rollouts = rollouts::Rollouts::load(
        store.clone(),
        rollouts::RolloutSettings {
            max_concurrent_downloads: config.limits.max_concurrent_downloads,
            offer_timeout_secs: config.limits.offer_timeout_secs,
            check_in_secs: config.limits.next_check_in_secs.max(1),
            jitter_secs: config.limits.check_in_jitter_secs,
            sample_interval_secs: config.limits.rollout_sample_interval.as_secs(),
            max_samples: config.limits.rollout_samples_kept,
            ..Default::default()
        },
    )
    .map_err(|e| ServerError::Rollouts(e.to_string()))?;
    store.flush().await?;

    let trust = match store.trust_root()? {
        Some(env) => match VerifiedTrustRoot::from_initial(&env, clock.now()) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "stored TrustRoot no longer verifies; install a new one with SetTrustRoot");
                None
            }
        },
        None => {
            tracing::warn!(
                "no TrustRoot installed: release uploads are refused until an admin calls SetTrustRoot"
            );
            None
        }
    };

    let tls = match &config.tls {
        Some(files) => {
            let cert = std::fs::read(&files.cert)
                .map_err(|e| ServerError::Tls(format!("{}: {e}", files.cert.display())))?;
            let key = std::fs::read(&files.key)
                .map_err(|e| ServerError::Tls(format!("{}: {e}", files.key.display())))?;
            Some(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
        }
        None => None,
    };

    let (stop, shutdown) = watch::channel(false);
    let public_key = keys.directive_key.public_key();
    let shared = Arc::new(Shared {
        tracker: tracking::Tracker::new(store.clone(), config.limits.event_buffer, clock.clone()),
        rollouts,
        clock,
        sessions: session::SessionRegistry::default(),
        downloads: Arc::new(Semaphore::new(config.limits.max_downloads)),
        trust: RwLock::new(trust),
        limits: config.limits.clone(),
        uploads_in_progress: Default::default(),
        store,
        keys,
        auth,
        shutdown: shutdown.clone(),
    });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServerError::Transport(format!("bind {}: {e}", config.listen)))?;
    let local_addr = listener.local_addr()?;

    let mut builder = tonic::transport::Server::builder()
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| ServerError::Tls(e.to_string()))?;
    }
    let device = DeviceServiceServer::new(device_service::DeviceSvc::new(shared.clone()))
        .max_decoding_message_size(config.limits.max_device_message);
    let admin = AdminServiceServer::new(admin_service::AdminSvc::new(shared.clone()))
        .max_decoding_message_size(config.limits.max_admin_message);
    let router = builder.add_service(device).add_service(admin);
    let mut signal = shutdown;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        stopped(&mut signal).await;
    }));
    let ticker = tokio::spawn(rollout_ticker(shared.clone(), config.limits.rollout_tick));
    tracing::info!(addr = %local_addr, tls = config.tls.is_some(), "serving");
    Ok(RunningServer {
        local_addr,
        admin_token,
        public_key,
        shared,
        stop,
        task,
        ticker,
    })
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
        .map_err(|e| ServerError::Rollouts(e.to_string()))?;
    if tick.events.is_empty() && tick.samples == 0 {
        return Ok(());
    }
    for e in &tick.events {
        tracing::info!(rollout = %e.rollout, kind = e.kind, detail = %e.detail, "rollout event");
        shared.tracker.rollout_event(e)?;
    }
    shared.store.flush().await?;
    Ok(())
}
