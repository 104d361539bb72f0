//! Aloft's fleet simulator: N virtual devices in one tokio process. Each has
//! its own key and identity, the real aloft-device core on simulated NOR
//! flash, the real [`aloft_agent::Agent`], and its own gRPC connection. It is
//! the load generator for the benchmarks and a soak test for the server.
//!
//! # Design decisions
//!
//! - **Real parts only**: the devices run the same agent and device core as
//!   the sample firmware; only the flash is simulated ([`flash::CowFlash`]:
//!   the NOR rules of aloft-device's `SimFlash`, checked by a differential
//!   test, stored copy-on-write per sector).
//! - **Provisioning**: with an admin token the simulator registers its own
//!   devices through the admin API (ids `PREFIX00000`...), reading the
//!   TrustRoot from the server; or it loads identity bundles made by
//!   `aloft device provision`. Every device gets the factory release (a
//!   release bundle file) in slot A: the image is decrypted with the
//!   bundle's content key and verified against the TrustRoot. The flash is
//!   provisioned once and shared by every device copy-on-write.
//! - **Memory per device** is what its flash does not share: an idle device
//!   holds its state sectors only (8 KiB), a device that installed an update
//!   also its new slot. Slot size is configurable (default: room for twice
//!   the factory image); the summary reports the private flash per device.
//! - **Source addresses**: against a loopback server each device binds its
//!   own 127.x.y.z source address, so N can exceed one address's ephemeral
//!   port range.
//! - **Faults**: a power cut tears a flash write at a random chunk of the
//!   device's first download (10..90 %); the device restarts (boot decision)
//!   and its agent must resume from the durable chunk. A never-confirming
//!   firmware runs `trial_run` per trial boot, then the "watchdog" resets it
//!   until the boot decision reverts.
//! - **Timing** is measured per session (connect, authentication) and per
//!   install, and reported as percentiles; nothing is asserted on it.
#![forbid(unsafe_code)]

pub mod flash;
pub mod stats;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aloft_agent::{Agent, AgentConfig, AgentError, Event, Identity, Outcome};
use aloft_device::{DEFAULT_MANIFEST_AREA, Device, DeviceConfig, Layout, Partition, ReportKind};
use aloft_protocol::payload::ChunkDecryptor;
use aloft_protocol::pb::admin_service_client::AdminServiceClient;
use aloft_protocol::prost::Message as _;
use aloft_protocol::trust::VerifiedTrustRoot;
use aloft_protocol::{ContentKey, DeviceId, SecretKey, pb};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tonic::Request;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::flash::{CowFlash, PowerSwitch, SECTOR};
use crate::stats::{DeviceStats, Summary, settled};

/// Why the simulation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The admin API refused or failed a call.
    #[error("{action}: server said {code:?}: {message}")]
    Admin {
        /// What was attempted.
        action: String,
        /// gRPC code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// Connecting to the server failed.
    #[error("connect to {url}: {reason}")]
    Connect {
        /// Server URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The factory release bundle is unusable.
    #[error("factory release: {0}")]
    Factory(String),
    /// Identity bundles could not be loaded.
    #[error("identities: {0}")]
    Identities(String),
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// Provisioning a device's flash failed.
    #[error("device core: {0}")]
    Device(#[from] aloft_device::Error),
}

/// Where the virtual devices' identities come from.
#[derive(Clone, Debug)]
pub enum Identities {
    /// Register new devices through the admin API with this token.
    Register {
        /// An operator or admin token.
        admin_token: String,
        /// Device id prefix (a random suffix keeps reruns apart when empty).
        id_prefix: String,
    },
    /// Load identity bundles (`*.pb`, or `*/identity.pb`) from a directory.
    Dir(PathBuf),
}

/// A simulation run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Virtual devices.
    pub devices: usize,
    /// Server URL the devices and the admin client use.
    pub server_url: String,
    /// CA to pin for `https://`.
    pub ca_pem: Option<String>,
    /// Identity source.
    pub identities: Identities,
    /// The factory release every device has in slot A.
    pub factory: pb::ReleaseBundle,
    /// Bytes per slot (a multiple of 4096); `None`: twice the factory image
    /// plus the manifest area.
    pub slot_size: Option<u32>,
    /// Percentage of devices that lose power during their first download.
    pub power_cut_pct: f64,
    /// Percentage of devices whose firmware never confirms a trial image.
    pub never_confirm_pct: f64,
    /// Stop once every device runs this version confirmed (or, for
    /// never-confirming devices, rolled back and reported it).
    pub until_updated: Option<String>,
    /// Longest run.
    pub duration: Duration,
    /// How long a never-confirming trial image runs before the watchdog
    /// resets it.
    pub trial_run: Duration,
    /// Bind each device to its own 127.x.y.z source address.
    pub spread_source_addrs: bool,
    /// Agent timings (the local address is set per device).
    pub agent: AgentConfig,
    /// Concurrent registrations.
    pub register_concurrency: usize,
    /// Print progress to stderr every this often (`None`: quiet).
    pub progress: Option<Duration>,
}

impl SimConfig {
    /// Defaults for everything but the essentials.
    pub fn new(
        devices: usize,
        server_url: impl Into<String>,
        identities: Identities,
        factory: pb::ReleaseBundle,
    ) -> Self {
        Self {
            devices,
            server_url: server_url.into(),
            ca_pem: None,
            identities,
            factory,
            slot_size: None,
            power_cut_pct: 0.0,
            never_confirm_pct: 0.0,
            until_updated: None,
            duration: Duration::from_secs(300),
            trial_run: Duration::from_secs(1),
            spread_source_addrs: false,
            agent: AgentConfig::default(),
            register_concurrency: 32,
            progress: None,
        }
    }
}

/// Whether `url` names a loopback host (source-address spreading applies).
pub fn is_loopback_url(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    host == "localhost" || host.starts_with("127.")
}

/// The source address of device `i`: 127.a.b.c, c in 1..=254.
pub fn source_addr(i: usize) -> IpAddr {
    let c = (i % 254) as u8 + 1;
    let b = ((i / 254) % 256) as u8;
    let a = (1 + i / (254 * 256)).min(254) as u8;
    IpAddr::V4(Ipv4Addr::new(127, a, b, c))
}

async fn admin_channel(url: &str, ca_pem: Option<&str>) -> Result<Channel, SimError> {
    let err = |reason: String| SimError::Connect {
        url: url.to_owned(),
        reason,
    };
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| err(e.to_string()))?
        .connect_timeout(Duration::from_secs(10));
    if url.starts_with("https://") {
        let ca = ca_pem.ok_or_else(|| err("https:// needs --ca".into()))?;
        let host = endpoint.uri().host().unwrap_or_default().to_owned();
        endpoint = endpoint
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .domain_name(host),
            )
            .map_err(|e| err(e.to_string()))?;
    }
    endpoint.connect().await.map_err(|e| err(e.to_string()))
}

fn authed<T>(message: T, token: &str) -> Result<Request<T>, SimError> {
    let mut r = Request::new(message);
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| SimError::Config("the admin token is not printable ASCII".into()))?;
    r.metadata_mut().insert("authorization", value);
    Ok(r)
}

fn admin_error(action: impl Into<String>) -> impl FnOnce(tonic::Status) -> SimError {
    let action = action.into();
    move |s| SimError::Admin {
        action,
        code: s.code(),
        message: s.message().to_owned(),
    }
}

/// The factory image: the bundle's manifest verified against `trust`, its
/// payload decrypted with the bundle's content key.
pub fn factory_image(
    bundle: &pb::ReleaseBundle,
    trust: &VerifiedTrustRoot,
) -> Result<(aloft_protocol::trust::VerifiedManifest, Vec<u8>), SimError> {
    let envelope = bundle
        .manifest
        .as_ref()
        .ok_or_else(|| SimError::Factory("the bundle has no manifest".into()))?;
    // A factory image may have been built long ago: expiry is not checked.
    let manifest = aloft_protocol::trust::danger::verify_manifest_ignoring_expiry(trust, envelope)
        .map_err(|e| SimError::Factory(format!("manifest refused by the TrustRoot: {e}")))?;
    let key = ContentKey::from_slice(&bundle.content_key)
        .map_err(|_| SimError::Factory("content key is not 32 bytes".into()))?;
    let params = manifest.payload_params();
    let mut dec = ChunkDecryptor::new(&key, params, 0)
        .map_err(|e| SimError::Factory(format!("payload parameters: {e}")))?;
    let mut image = Vec::with_capacity(manifest.image_len() as usize);
    let mut at = 0usize;
    for i in 0..params.chunk_count() {
        let len = params.chunk_len(i).unwrap_or(0);
        let mut chunk = bundle
            .payload
            .get(at..at + len)
            .ok_or_else(|| SimError::Factory(format!("payload ends before chunk {i}")))?
            .to_vec();
        at += len;
        let plain = dec
            .decrypt_next(&mut chunk)
            .map_err(|e| SimError::Factory(format!("payload: {e}")))?;
        image.extend_from_slice(plain);
    }
    Ok((manifest, image))
}

/// Sectors of a virtual device's state partition: a sector per half of the
/// state log and per TrustRoot copy.
const STATE_SECTORS: u32 = 4;

/// The flash map of every virtual device.
pub fn layout(slot_size: u32) -> Layout {
    let s = SECTOR as u32;
    Layout {
        state: Partition::new(0, STATE_SECTORS * s, s),
        slot_a: Partition::new(STATE_SECTORS * s, slot_size, s),
        slot_b: Partition::new(STATE_SECTORS * s + slot_size, slot_size, s),
        manifest_area: DEFAULT_MANIFEST_AREA,
        trust_area: s,
    }
}

fn load_identities(dir: &Path, n: usize) -> Result<Vec<Identity>, SimError> {
    let read = |d: &Path| {
        std::fs::read_dir(d).map_err(|e| SimError::Identities(format!("{}: {e}", d.display())))
    };
    let mut paths = Vec::new();
    for entry in read(dir)? {
        let path = entry
            .map_err(|e| SimError::Identities(e.to_string()))?
            .path();
        if path.is_dir() && path.join("identity.pb").is_file() {
            paths.push(path.join("identity.pb"));
        } else if path.extension().is_some_and(|e| e == "pb") {
            paths.push(path);
        }
    }
    paths.sort();
    if paths.len() < n {
        return Err(SimError::Identities(format!(
            "{} holds {} identity bundles, {n} wanted",
            dir.display(),
            paths.len()
        )));
    }
    paths
        .iter()
        .take(n)
        .map(|p| Identity::load(p).map_err(|e| SimError::Identities(e.to_string())))
        .collect()
}

/// `count` distinct random indices below `n`.
fn pick(n: usize, pct: f64) -> HashSet<usize> {
    let count = ((n as f64) * pct.clamp(0.0, 100.0) / 100.0).round() as usize;
    let mut all: Vec<usize> = (0..n).collect();
    for i in (1..all.len()).rev() {
        let j = (random_u64() % (i as u64 + 1)) as usize;
        all.swap(i, j);
    }
    all.into_iter().take(count).collect()
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random number generator failed");
    u64::from_le_bytes(b)
}

/// Runs the simulation and summarises it.
pub async fn run(config: SimConfig) -> Result<Summary, SimError> {
    let provision_start = Instant::now();
    let (trust, identities) = match &config.identities {
        Identities::Register {
            admin_token,
            id_prefix,
        } => register(&config, admin_token, id_prefix).await?,
        Identities::Dir(dir) => {
            let ids = load_identities(dir, config.devices)?;
            let trust = ids
                .first()
                .map(|i| i.factory_trust_root().clone())
                .ok_or_else(|| SimError::Config("no devices".into()))?;
            (trust, ids)
        }
    };
    let (manifest, image) = factory_image(&config.factory, &trust)?;
    let sector = SECTOR as u32;
    let slot_size = match config.slot_size {
        Some(s) if s % sector != 0 || s < 2 * sector => {
            return Err(SimError::Config(format!(
                "slot size {s} must be a multiple of {sector} and at least two sectors"
            )));
        }
        Some(s) => s,
        None => ((2 * image.len() as u32).div_ceil(sector) * sector) + DEFAULT_MANIFEST_AREA,
    };
    let layout = layout(slot_size);
    let factory_config = DeviceConfig::new(
        manifest.product(),
        manifest.hardware().first().cloned().unwrap_or_default(),
    );
    let sectors = (STATE_SECTORS * sector + 2 * slot_size) / sector;
    let template = Device::provision(
        CowFlash::new(sectors as usize),
        layout,
        factory_config.clone(),
        &trust,
        &image,
        &config
            .factory
            .manifest
            .as_ref()
            .map(|m| m.encode_to_vec())
            .unwrap_or_default(),
    )?
    .into_flash();
    let provision_time = provision_start.elapsed();

    let n = identities.len();
    let cuts = pick(n, config.power_cut_pct);
    let never = pick(n, config.never_confirm_pct);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stats: Vec<Arc<Mutex<DeviceStats>>> = identities
        .iter()
        .enumerate()
        .map(|(i, id)| {
            Arc::new(Mutex::new(DeviceStats {
                id: id.device_id().to_string(),
                planned_cut: cuts.contains(&i),
                never_confirm: never.contains(&i),
                ..Default::default()
            }))
        })
        .collect();
    let spread = config.spread_source_addrs && is_loopback_url(&config.server_url);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, identity) in identities.into_iter().enumerate() {
        let device_config = identity
            .device_config()
            .unwrap_or_else(|_| factory_config.clone());
        let mut agent_config = config.agent.clone();
        if spread {
            agent_config.local_address = Some(source_addr(i));
        }
        let switch = Arc::new(PowerSwitch::default());
        let flash = template.share(switch.clone());
        let job = VirtualDevice {
            identity,
            layout,
            device_config,
            agent: agent_config,
            switch,
            stats: stats[i].clone(),
            trial_run: config.trial_run,
        };
        tasks.spawn(job.run(flash, stop_rx.clone()));
    }

    let target = config.until_updated.clone();
    let deadline = started + config.duration;
    let mut last_progress = Instant::now();
    let condition_met = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let snapshot: Vec<DeviceStats> = stats.iter().map(|s| s.lock().unwrap().clone()).collect();
        let met = target
            .as_deref()
            .is_some_and(|t| snapshot.iter().all(|s| settled(s, t)));
        if let Some(every) = config.progress
            && last_progress.elapsed() >= every
        {
            last_progress = Instant::now();
            let partial = Summary::new(
                &snapshot,
                target.as_deref(),
                started.elapsed(),
                provision_time,
                met,
            );
            eprintln!(
                "[{:>6.1} s] {:?} sessions {} installs {} rollbacks {} power cuts {}",
                partial.elapsed_secs,
                partial.outcomes,
                partial.sessions,
                partial.installs,
                partial.rollbacks,
                partial.power_cuts
            );
        }
        if met {
            break true;
        }
        if Instant::now() >= deadline || tasks.is_empty() {
            break target.is_none();
        }
        while tasks.try_join_next().is_some() {}
    };
    let elapsed = started.elapsed();
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
    let all: Vec<DeviceStats> = stats.iter().map(|s| s.lock().unwrap().clone()).collect();
    Ok(Summary::new(
        &all,
        target.as_deref(),
        elapsed,
        provision_time,
        condition_met,
    ))
}

/// Registers `config.devices` new devices; returns the server's TrustRoot
/// and their identities.
async fn register(
    config: &SimConfig,
    token: &str,
    prefix: &str,
) -> Result<(VerifiedTrustRoot, Vec<Identity>), SimError> {
    let channel = admin_channel(&config.server_url, config.ca_pem.as_deref()).await?;
    let admin = AdminServiceClient::new(channel);
    let info = admin
        .clone()
        .get_server_info(authed(pb::GetServerInfoRequest {}, token)?)
        .await
        .map_err(admin_error("reading the server's TrustRoot"))?
        .into_inner();
    let envelope = info
        .trust_root
        .ok_or_else(|| SimError::Config("the server has no TrustRoot: install one first".into()))?;
    // The simulated factory trusts the server's newest root as given (its
    // expiry is the devices' business: they report it).
    let trust = VerifiedTrustRoot::reload_stored(&envelope)
        .map_err(|e| SimError::Config(format!("the server's TrustRoot does not verify: {e}")))?;
    let (manifest, _) = factory_image(&config.factory, &trust)?;
    let prefix = if prefix.is_empty() {
        format!("sim-{:06x}-", random_u64() & 0xFF_FFFF)
    } else {
        prefix.to_owned()
    };
    let hardware = manifest.hardware().first().cloned().unwrap_or_default();
    let limit = Arc::new(Semaphore::new(config.register_concurrency.max(1)));
    let mut jobs = JoinSet::new();
    for i in 0..config.devices {
        let id = DeviceId::new(&format!("{prefix}{i:05}"))
            .map_err(|e| SimError::Config(format!("device id prefix {prefix:?}: {e}")))?;
        let key = SecretKey::generate();
        let request = pb::RegisterDeviceRequest {
            device_id: id.to_string(),
            public_key: key.public_key().to_sec1_compressed().to_vec(),
            attributes: Some(pb::DeviceAttributes {
                product: manifest.product().to_owned(),
                hardware: hardware.clone(),
                region: ["eu", "us", "ap"][i % 3].into(),
                time_zone: ["Europe/Berlin", "America/New_York", "Asia/Tokyo"][i % 3].into(),
                tags: vec!["sim".into()],
                test_device: false,
            }),
            factory_version: manifest.version().to_string(),
            ..Default::default()
        };
        let attributes = [
            (aloft_agent::ATTR_PRODUCT, manifest.product().to_owned()),
            (aloft_agent::ATTR_HARDWARE, hardware.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let identity = Identity::new(
            id,
            key,
            config.server_url.clone(),
            config.ca_pem.clone(),
            trust.clone(),
            attributes,
        )
        .map_err(|e| SimError::Config(e.to_string()))?;
        let request = authed(request, token)?;
        let mut admin = admin.clone();
        let permit = limit.clone().acquire_owned().await.expect("semaphore open");
        jobs.spawn(async move {
            let _permit = permit;
            let action = format!("registering {}", identity.device_id());
            admin
                .register_device(request)
                .await
                .map_err(admin_error(action))?;
            Ok::<_, SimError>((i, identity))
        });
    }
    let mut identities = Vec::with_capacity(config.devices);
    while let Some(joined) = jobs.join_next().await {
        let joined = joined.map_err(|e| SimError::Config(format!("registration task: {e}")))?;
        identities.push(joined?);
    }
    identities.sort_by_key(|(i, _)| *i);
    Ok((trust, identities.into_iter().map(|(_, id)| id).collect()))
}

struct VirtualDevice {
    identity: Identity,
    layout: Layout,
    device_config: DeviceConfig,
    agent: AgentConfig,
    switch: Arc<PowerSwitch>,
    stats: Arc<Mutex<DeviceStats>>,
    trial_run: Duration,
}

impl VirtualDevice {
    fn fail(&self, error: impl std::fmt::Display) {
        self.stats.lock().unwrap().error = Some(error.to_string());
    }

    /// The observer: statistics, and the power cut at its chunk.
    fn observer(&self, cut_armed: bool) -> impl FnMut(&Event) + Send + Sync + 'static {
        let stats = self.stats.clone();
        let switch = self.switch.clone();
        let cut_at = Arc::new(AtomicU32::new(u32::MAX));
        let mut armed = cut_armed;
        move |event| {
            let mut s = stats.lock().unwrap();
            match event {
                Event::Connected { elapsed } => s.connect.push(*elapsed),
                Event::Authenticated { elapsed, .. } => {
                    s.sessions += 1;
                    s.auth.push(*elapsed);
                }
                Event::ReportsAcked { count } if *count > 0 => {
                    s.acked_since_boot = true;
                    if s.rollbacks > 0 {
                        s.rollback_acked = true;
                    }
                }
                Event::Retrying { .. } => s.retries += 1,
                Event::OfferRefused { .. } => s.refusals += 1,
                Event::DownloadStarted {
                    start_chunk,
                    chunk_count,
                    ..
                } => {
                    if *start_chunk > 0 {
                        s.resumed_from.push(*start_chunk);
                    } else if s.power_cuts > 0 {
                        s.restarts_from_zero += 1;
                    }
                    if armed && *chunk_count > 2 {
                        let lo = (chunk_count / 10).max(*start_chunk + 1);
                        let hi = (chunk_count * 9 / 10).max(lo + 1);
                        let at = lo + (random_u64() % u64::from(hi - lo)) as u32;
                        cut_at.store(at, Ordering::SeqCst);
                    }
                }
                Event::ChunkWritten { index }
                    if armed && *index >= cut_at.load(Ordering::SeqCst) =>
                {
                    armed = false;
                    switch.cut();
                }
                Event::Installed { elapsed, .. } => {
                    s.installs += 1;
                    s.install.push(*elapsed);
                }
                _ => {}
            }
        }
    }

    async fn run(self, flash: CowFlash, stop: watch::Receiver<bool>) {
        let mut device = match Device::open(flash, self.layout, self.device_config.clone()) {
            Ok(d) => d,
            Err(e) => return self.fail(format!("open: {e}")),
        };
        let never_confirm = self.stats.lock().unwrap().never_confirm;
        let mut cut_armed = self.stats.lock().unwrap().planned_cut;
        let mut seen_reports = HashSet::new();
        while !*stop.borrow() {
            let booted = match device.boot() {
                Ok(b) => b,
                Err(e) => return self.fail(format!("boot: {e}")),
            };
            {
                let mut s = self.stats.lock().unwrap();
                s.boots += 1;
                s.acked_since_boot = false;
                s.version = booted.manifest.version().to_string();
                for r in device.reports() {
                    if r.kind == ReportKind::RolledBack && seen_reports.insert(r.id) {
                        s.rollbacks += 1;
                        s.rollback_acked = false;
                    }
                }
            }
            let agent = match Agent::new(self.identity.clone(), device, self.agent.clone()) {
                Ok(a) => a,
                Err(e) => return self.fail(e),
            };
            let mut agent = agent.with_observer(self.observer(cut_armed));
            let watchdog = booted.trial && never_confirm;
            if booted.trial
                && !never_confirm
                && let Err(e) = agent.confirm()
            {
                return self.fail(e);
            }
            self.stats.lock().unwrap().confirmed = agent.is_confirmed();
            let mut stop_rx = stop.clone();
            let trial_run = self.trial_run;
            let shutdown = async move {
                let stopped = stop_rx.wait_for(|s| *s);
                if watchdog {
                    tokio::select! {
                        _ = stopped => {}
                        () = tokio::time::sleep(trial_run) => {}
                    }
                } else {
                    let _ = stopped.await;
                }
            };
            let result = agent.run(shutdown).await;
            device = agent.into_device();
            match result {
                Ok(Outcome::RebootRequested { .. } | Outcome::Shutdown) => {}
                Err(AgentError::Device(_)) if !device.flash().is_powered() => {
                    // The injected power cut: power comes back, the device restarts.
                    cut_armed = false;
                    self.stats.lock().unwrap().power_cuts += 1;
                    let mut flash = device.into_flash();
                    flash.restore();
                    device = match Device::open(flash, self.layout, self.device_config.clone()) {
                        Ok(d) => d,
                        Err(e) => return self.fail(format!("open after power cut: {e}")),
                    };
                }
                Err(e) => return self.fail(e),
            }
            // A device that had its cut armed but never downloaded keeps it.
            if cut_armed && self.stats.lock().unwrap().installs > 0 {
                cut_armed = false;
            }
        }
        self.stats.lock().unwrap().flash_private_bytes = device.flash().private_bytes();
    }
}
