//! The runtime: one [`Agent`] per device, driving sessions, offers,
//! downloads and reconnects over a [`Device`].
//!
//! The session protocol itself (challenge, hello, seq, ordering, when to
//! heartbeat, when the session ends) is `aloft_session::device`'s state
//! machine; this module is its driver: it owns the gRPC stream, the clocks,
//! the device key and the flash, and carries out the machine's actions.

use std::future::Future;
use std::net::IpAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aloft_device::{Booted, Clock, Device, Installer, ReportId, SessionBinding, Slot};
use aloft_protocol::pb::device_service_client::DeviceServiceClient;
use aloft_protocol::prost::Message as _;
use aloft_protocol::{
    DeviceNonce, ReleaseId, SecurityVersion, UnixTime, Version, device_msg, pb, wire, wrap,
};
use aloft_session::device::{
    Action, DeviceSession, End, InstallResult, Installed, Snapshot, Timings,
};
use aloft_session::{Millis, SessionError};
use embedded_storage::nor_flash::NorFlash;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::transport::{Channel, Endpoint};

use crate::backoff::{Backoff, BackoffConfig, random_u64};
use crate::connect;
use crate::direct::{DirectFailure, Fetched, PayloadTls};
use crate::error::{AgentError, OfferError};
use crate::identity::Identity;

/// Refusal reports kept in memory (not in flash) at most; the oldest goes.
const MAX_VOLATILE_REPORTS: usize = 8;
/// Longest report detail the server accepts.
const MAX_DETAIL: usize = 1024;

/// The device's wall clock (Unix time), behind a trait so tests can move it.
pub trait WallClock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> UnixTime;
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> UnixTime {
        UnixTime(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )
    }
}

/// Timings and limits of the agent.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Interval between heartbeats within a session.
    pub heartbeat: Duration,
    /// Limit for TCP connect, TLS handshake and HTTP/2 setup.
    pub connect_timeout: Duration,
    /// Limit for each expected server message (challenge, welcome, the
    /// download's next chunk).
    pub message_timeout: Duration,
    /// Reconnect delays after failures.
    pub backoff: BackoffConfig,
    /// Session length when the server's Welcome suggests none.
    pub default_check_in: Duration,
    /// Upper bound on any check-in delay the server asks for.
    pub max_check_in: Duration,
    /// How long to wait for the server to acknowledge the "installed" report
    /// before asking for the reboot (it is re-sent after the reboot anyway).
    pub report_ack_wait: Duration,
    /// Source address for connections (`None`: the OS chooses).
    pub local_address: Option<IpAddr>,
    /// The device's real-time clock (`None`: it has none, and its attested
    /// time stands in for now; see `aloft_device::TimePolicy`).
    pub clock: Option<Arc<dyn WallClock>>,
    /// Which certificates a directive's `payload_url` may present (see
    /// [`crate::direct`]).
    pub payload_tls: PayloadTls,
    /// Bytes asked for per Range request of a direct download (whole
    /// chunks, at least one).
    pub payload_request_bytes: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            message_timeout: Duration::from_secs(30),
            backoff: BackoffConfig::default(),
            default_check_in: Duration::from_secs(300),
            max_check_in: Duration::from_secs(24 * 3600),
            report_ack_wait: Duration::from_secs(5),
            local_address: None,
            clock: Some(Arc::new(SystemClock)),
            payload_tls: PayloadTls::default(),
            payload_request_bytes: crate::direct::REQUEST_BYTES,
        }
    }
}

impl AgentConfig {
    fn timings(&self) -> Timings {
        Timings {
            heartbeat: self.heartbeat,
            message_timeout: self.message_timeout,
            default_check_in: self.default_check_in,
            max_check_in: self.max_check_in,
            report_ack_wait: self.report_ack_wait,
        }
    }
}

/// The firmware that is running, as the device core recorded it when the
/// image was verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningFirmware {
    /// Its version (offers must be newer).
    pub version: Version,
    /// Its security version.
    pub security_version: SecurityVersion,
    /// The slot it was started from.
    pub slot: Slot,
}

impl RunningFirmware {
    /// From the boot decision's result.
    pub fn from_booted(booted: &Booted) -> Self {
        Self {
            version: booted.manifest.version(),
            security_version: booted.manifest.security_version(),
            slot: booted.slot,
        }
    }
}

/// How [`Agent::run`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An update was installed and its slot marked for trial: reset the
    /// device so the boot decision starts it.
    RebootRequested {
        /// The installed release.
        release_id: ReleaseId,
        /// Its version.
        version: Version,
    },
    /// The shutdown future completed.
    Shutdown,
}

/// How one session ([`Agent::check_in`]) ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// An update was installed: reboot.
    Reboot {
        /// The installed release.
        release_id: ReleaseId,
        /// Its version.
        version: Version,
    },
    /// Check in again after this delay (the server's CheckInLater, or zero
    /// when the session's check-in period ran out).
    CheckInAfter(Duration),
    /// The shutdown future completed.
    Shutdown,
}

/// Something the agent did, for logs, progress displays and measurements.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// TCP, TLS and HTTP/2 are up.
    Connected {
        /// Time to connect.
        elapsed: Duration,
    },
    /// The server accepted the signed hello.
    Authenticated {
        /// From connected to Welcome (challenge, hello, welcome).
        elapsed: Duration,
    },
    /// The server durably recorded reports.
    ReportsAcked {
        /// How many of ours.
        count: usize,
    },
    /// The device took TrustRoot successors and stored the newest.
    TrustRootUpdated {
        /// Its version.
        version: u32,
    },
    /// A TrustRoot update was refused; the device keeps its root.
    TrustRootRefused {
        /// Why.
        error: String,
    },
    /// An offer arrived (release id as the manifest claims, unverified).
    OfferReceived {
        /// Claimed release.
        release_id: Option<ReleaseId>,
    },
    /// An offer was refused; an `INSTALL_FAILED` report was queued.
    OfferRefused {
        /// Claimed release.
        release_id: Option<ReleaseId>,
        /// Why.
        error: OfferError,
    },
    /// An offer was set aside (a trial image is pending confirmation).
    OfferDeferred {
        /// The release.
        release_id: ReleaseId,
    },
    /// A download request was sent.
    DownloadStarted {
        /// The release.
        release_id: ReleaseId,
        /// First chunk asked for (the durable resume point).
        start_chunk: u32,
        /// Chunks in the release.
        chunk_count: u32,
    },
    /// The directive names a payload URL: chunks come from there first.
    DirectDownloadStarted {
        /// The release.
        release_id: ReleaseId,
        /// The URL's host (the URL itself may carry a signature).
        host: String,
        /// First chunk asked for.
        start_chunk: u32,
    },
    /// The direct download stopped before the end; the rest comes over the
    /// gRPC download from `next_chunk`. Nothing refused was written.
    DirectDownloadFailed {
        /// The release.
        release_id: ReleaseId,
        /// What went wrong.
        kind: DirectFailure,
        /// The whole error.
        error: String,
        /// The resume point the gRPC download starts from.
        next_chunk: u32,
    },
    /// Every chunk came from the payload URL.
    DirectDownloadCompleted {
        /// The release.
        release_id: ReleaseId,
    },
    /// A chunk was authenticated and written.
    ChunkWritten {
        /// Its index.
        index: u32,
    },
    /// The image was verified and its slot marked for trial.
    Installed {
        /// The release.
        release_id: ReleaseId,
        /// Download and install time in this session.
        elapsed: Duration,
    },
    /// A session failed; the agent waits `delay` before reconnecting.
    Retrying {
        /// What failed.
        error: String,
        /// The backoff delay.
        delay: Duration,
    },
}

type Observer = Box<dyn FnMut(&Event) + Send + Sync>;

/// Makes the channel for one session (see [`Agent::with_connector`]).
pub type Connector = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<Channel, AgentError>> + Send>> + Send + Sync,
>;

/// The device runtime over flash `F`: see the crate docs for how a firmware
/// uses it.
pub struct Agent<F: NorFlash> {
    identity: Identity,
    device: Device<F>,
    running: RunningFirmware,
    config: AgentConfig,
    endpoint: Endpoint,
    connector: Option<Connector>,
    backoff: Backoff,
    observer: Option<Observer>,
    /// Refusal reports (no install state in flash to hang them on), re-sent
    /// until acknowledged while the process lives.
    volatile: Vec<pb::Report>,
}

impl<F: NorFlash> std::fmt::Debug for Agent<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("device_id", self.identity.device_id())
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

fn slot_pb(slot: Slot) -> pb::Slot {
    match slot {
        Slot::A => pb::Slot::A,
        Slot::B => pb::Slot::B,
    }
}

/// The release id the offered manifest claims, read *without* verifying it:
/// only to name the release in a refusal report.
fn claimed_release(offer: &pb::Offer) -> Option<ReleaseId> {
    let env = offer.manifest.as_ref()?;
    let manifest = pb::ReleaseManifest::decode(env.payload.as_slice()).ok()?;
    ReleaseId::new(&manifest.release_id).ok()
}

fn random_report_id() -> Vec<u8> {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&random_u64().to_le_bytes());
    id[8..].copy_from_slice(&random_u64().to_le_bytes());
    id.to_vec()
}

impl<F: NorFlash> Agent<F> {
    /// An agent for `device` (opened by the firmware after the boot
    /// decision). What runs is what the device core recorded for the booted
    /// slot when that image was verified.
    pub fn new(
        identity: Identity,
        device: Device<F>,
        config: AgentConfig,
    ) -> Result<Self, AgentError> {
        let image = device
            .running()
            .ok_or(AgentError::Device(aloft_device::Error::NoBootableSlot))?;
        let running = RunningFirmware {
            version: image.version,
            security_version: image.security_version,
            slot: image.slot,
        };
        let endpoint = connect::endpoint(
            identity.server_url(),
            identity.ca_pem(),
            config.connect_timeout,
            config.local_address,
        )?;
        Ok(Self {
            backoff: Backoff::new(config.backoff),
            identity,
            device,
            running,
            config,
            endpoint,
            connector: None,
            observer: None,
            volatile: Vec::new(),
        })
    }

    /// Reaches the server through `connector` instead of the identity's URL:
    /// each session calls it for a fresh channel. For simulations and tests
    /// that run the session over an in-memory transport (and so under
    /// `tokio::time::pause`, where real sockets would race the paused clock).
    pub fn with_connector<Fut>(
        mut self,
        connector: impl Fn() -> Fut + Send + Sync + 'static,
    ) -> Self
    where
        Fut: Future<Output = Result<Channel, AgentError>> + Send + 'static,
    {
        self.connector = Some(Arc::new(move || Box::pin(connector())));
        self
    }

    /// Calls `observer` for every [`Event`] (progress, timings).
    pub fn with_observer(mut self, observer: impl FnMut(&Event) + Send + Sync + 'static) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    /// The identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The device core (state, reports, slots, TrustRoot).
    pub fn device(&self) -> &Device<F> {
        &self.device
    }

    /// Gives the device core back (to "reboot" it in simulations).
    pub fn into_device(self) -> Device<F> {
        self.device
    }

    /// The running firmware.
    pub fn running(&self) -> &RunningFirmware {
        &self.running
    }

    /// Whether the running image is confirmed.
    pub fn is_confirmed(&self) -> bool {
        self.device.is_confirmed()
    }

    /// Confirms the running image after the firmware's health check: a trial
    /// image becomes the active one, the security floor rises to its security
    /// version and a "confirmed" report is queued (sent at the next check-in).
    /// A confirmed image: no-op.
    pub fn confirm(&mut self) -> Result<(), AgentError> {
        self.device.confirm().map_err(AgentError::Device)
    }

    /// The device's sense of time for verification.
    fn clock(&self) -> Clock {
        match &self.config.clock {
            Some(c) => Clock::At(c.now()),
            None => Clock::None,
        }
    }

    /// The state sent in hellos and heartbeats.
    pub fn state(&self) -> pb::DeviceState {
        let progress = self.device.install_progress();
        let trust = self.device.trust_status(self.clock());
        pb::DeviceState {
            firmware_version: self.running.version.to_string(),
            security_version: self.running.security_version.0,
            active_slot: slot_pb(self.running.slot) as i32,
            confirmed: self.device.is_confirmed(),
            pending_release_id: progress
                .as_ref()
                .map(|(r, _, _)| r.to_string())
                .unwrap_or_default(),
            download_next_chunk: progress.map_or(0, |(_, _, n)| n),
            trust_root_version: trust.version,
            trust_root_expires_at: trust.expires_at.0,
            trust_root_expired: trust.expired,
            server_clock_ahead_secs: self.device.server_clock_ahead(),
        }
    }

    /// Reports waiting for the server's acknowledgement: the durable ones
    /// from flash, then refusal reports held in memory.
    pub fn pending_reports(&self) -> Vec<pb::Report> {
        let mut out: Vec<pb::Report> = self.device.reports().map(|r| r.to_pb()).collect();
        out.extend(self.volatile.iter().cloned());
        out
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: self.state(),
            reports: self.pending_reports(),
        }
    }

    fn emit(&mut self, event: Event) {
        tracing::debug!(device = %self.identity.device_id(), ?event, "agent");
        if let Some(o) = self.observer.as_mut() {
            o(&event);
        }
    }

    /// A trial image that is installed but not started yet: an install is
    /// durable and the device must reboot into it, whatever happened to the
    /// session that installed it.
    fn pending_reboot(&self) -> Option<(ReleaseId, Version)> {
        let (slot, _) = self.device.trial()?;
        if slot == self.device.booted_slot() {
            return None;
        }
        self.device.trial_image()
    }

    /// Runs until an install asks for a reboot or `shutdown` completes:
    /// check in, stay connected for the server's check-in period (heartbeats,
    /// offers, report acknowledgements), reconnect; after a failure, wait an
    /// exponential backoff with jitter. Returns `Err` only for fatal errors
    /// ([`AgentError::is_fatal`]): the firmware should then reset.
    pub async fn run(
        &mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<Outcome, AgentError> {
        let mut shutdown = pin!(shutdown);
        loop {
            let wait = match self.session(shutdown.as_mut()).await {
                Ok(SessionEnd::Reboot {
                    release_id,
                    version,
                }) => {
                    return Ok(Outcome::RebootRequested {
                        release_id,
                        version,
                    });
                }
                Ok(SessionEnd::Shutdown) => return Ok(Outcome::Shutdown),
                Ok(SessionEnd::CheckInAfter(d)) => d,
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    // The reboot follows from a durable install, not from
                    // the connection that delivered it.
                    if let Some((release_id, version)) = self.pending_reboot() {
                        tracing::info!(device = %self.identity.device_id(), error = %e, %release_id, "session lost after an install; rebooting into it");
                        return Ok(Outcome::RebootRequested {
                            release_id,
                            version,
                        });
                    }
                    // A server that says when to come back is obeyed, up to
                    // our own longest backoff.
                    let delay = self.backoff.next_delay().max(
                        e.retry_after()
                            .unwrap_or_default()
                            .min(self.config.backoff.max),
                    );
                    tracing::info!(device = %self.identity.device_id(), error = %e, ?delay, "session failed; retrying");
                    self.emit(Event::Retrying {
                        error: e.to_string(),
                        delay,
                    });
                    delay
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.as_mut() => return Ok(Outcome::Shutdown),
            }
        }
    }

    /// One session: connect, authenticate, and serve it until it ends (see
    /// [`SessionEnd`]). No backoff, no retry: for tests and load generators
    /// that schedule check-ins themselves.
    pub async fn check_in(
        &mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<SessionEnd, AgentError> {
        let shutdown = pin!(shutdown);
        self.session(shutdown).await
    }

    async fn session<S: Future<Output = ()> + Send>(
        &mut self,
        mut shutdown: Pin<&mut S>,
    ) -> Result<SessionEnd, AgentError> {
        if let Some((release_id, version)) = self.pending_reboot() {
            return Ok(SessionEnd::Reboot {
                release_id,
                version,
            });
        }
        let started = tokio::time::Instant::now();
        let connecting = match &self.connector {
            Some(c) => c(),
            None => {
                let endpoint = self.endpoint.clone();
                Box::pin(async move { connect::connect(&endpoint).await })
            }
        };
        let channel = tokio::select! {
            c = connecting => c?,
            () = &mut shutdown => return Ok(SessionEnd::Shutdown),
        };
        self.emit(Event::Connected {
            elapsed: started.elapsed(),
        });
        let connected = tokio::time::Instant::now();
        let limit = self.config.message_timeout;
        let (tx, rx) = mpsc::channel(16);
        let mut client = DeviceServiceClient::new(channel.clone());
        let mut inbound = tokio::time::timeout(limit, client.session(ReceiverStream::new(rx)))
            .await
            .map_err(|_| AgentError::Timeout("the session to open"))??
            .into_inner();
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).expect("the OS random number generator failed");
        let origin = tokio::time::Instant::now();
        let now = move || Millis(origin.elapsed().as_millis() as u64);
        let mut machine = DeviceSession::new(
            self.identity.device_id().clone(),
            DeviceNonce::from_bytes(nonce),
            self.snapshot(),
            self.config.timings(),
            now(),
        );
        let mut authenticated = false;
        loop {
            while let Some(action) = machine.poll_action() {
                match action {
                    Action::Send(message) => {
                        let signed = device_msg::seal(&message, self.identity.secret_key());
                        let sent = tx
                            .send(pb::DeviceToServer {
                                signed: Some(signed),
                            })
                            .await;
                        if sent.is_err() {
                            return self.lost(&mut machine, AgentError::SessionClosed);
                        }
                    }
                    Action::UpdateTrust(chain) => {
                        self.update_trust(&chain)?;
                        machine.trust_updated(now(), self.snapshot());
                    }
                    Action::Install(offer) => {
                        let token: String =
                            machine.token().iter().map(|b| format!("{b:02x}")).collect();
                        let nonce = *machine.nonce();
                        let result = self
                            .handle_offer(&offer, &nonce, &channel, &token, shutdown.as_mut())
                            .await;
                        let result = match result {
                            Ok(r) => r,
                            Err(e) => return self.lost(&mut machine, e),
                        };
                        let result = match result {
                            OfferResult::Installed => {
                                InstallResult::Installed(Installed(self.snapshot()))
                            }
                            OfferResult::Refused => InstallResult::Refused(self.snapshot()),
                            OfferResult::Deferred => InstallResult::Deferred,
                            OfferResult::Shutdown => return Ok(SessionEnd::Shutdown),
                        };
                        machine.install_finished(now(), result);
                    }
                    Action::Acked(ids) => {
                        self.acked(&ids)?;
                        machine.set_snapshot(self.snapshot());
                    }
                    Action::End(end) => return self.ended(end),
                }
            }
            if !authenticated && machine.is_open() {
                authenticated = true;
                self.backoff.reset();
                self.emit(Event::Authenticated {
                    elapsed: connected.elapsed(),
                });
            }
            let wake = machine
                .poll_timeout()
                .map(|t| origin + Duration::from_millis(t.0));
            tokio::select! {
                () = &mut shutdown => return Ok(SessionEnd::Shutdown),
                () = async { match wake { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    if let Err(e) = machine.handle_timeout(now()) {
                        return Err(AgentError::Session(e));
                    }
                }
                message = inbound.message() => match message {
                    Ok(Some(m)) => {
                        if let Err(e) = machine.handle_message(now(), m) {
                            return Err(AgentError::Session(e));
                        }
                    }
                    Ok(None) => return self.lost(&mut machine, AgentError::SessionClosed),
                    Err(status) => return self.lost(&mut machine, status.into()),
                },
            }
        }
    }

    /// The connection failed with `error`: a durable install still reboots.
    fn lost(
        &mut self,
        machine: &mut DeviceSession,
        error: AgentError,
    ) -> Result<SessionEnd, AgentError> {
        if error.is_fatal() {
            return Err(error);
        }
        match machine.connection_lost(SessionError::Ended) {
            End::Reboot => self.ended(End::Reboot),
            _ => Err(error),
        }
    }

    fn ended(&mut self, end: End) -> Result<SessionEnd, AgentError> {
        match end {
            End::CheckInAfter(d) => Ok(SessionEnd::CheckInAfter(d)),
            End::Failed(e) => Err(AgentError::Session(e)),
            End::Reboot => {
                let (release_id, version) = self
                    .device
                    .trial_image()
                    .ok_or(AgentError::Device(aloft_device::Error::NotInTrial))?;
                Ok(SessionEnd::Reboot {
                    release_id,
                    version,
                })
            }
        }
    }

    /// Drops acknowledged reports: from flash (4-byte ids) and from memory.
    fn acked(&mut self, ids: &[Vec<u8>]) -> Result<(), AgentError> {
        let mut count = 0;
        for id in ids {
            let before = self.volatile.len();
            self.volatile.retain(|r| &r.report_id != id);
            count += before - self.volatile.len();
            if let Some(id) = ReportId::from_slice(id)
                && self.device.ack_report(id)?
            {
                count += 1;
            }
        }
        self.emit(Event::ReportsAcked { count });
        Ok(())
    }

    /// Walks the TrustRoot successors the server sent and stores the newest
    /// (power-safe, in the device core). A refusal keeps the old root and
    /// queues a `TRUST_ROOT_REFUSED` report; only a flash failure is an error.
    fn update_trust(&mut self, chain: &[pb::SignedEnvelope]) -> Result<(), AgentError> {
        match self.device.update_trust_root(chain, self.clock()) {
            Ok(version) => {
                tracing::info!(device = %self.identity.device_id(), version, "TrustRoot updated");
                self.emit(Event::TrustRootUpdated { version });
                Ok(())
            }
            Err(e @ aloft_device::Error::Flash(_)) => Err(e.into()),
            Err(e) => {
                tracing::warn!(device = %self.identity.device_id(), error = %e, "TrustRoot update refused");
                let mut detail = e.to_string();
                detail.truncate(MAX_DETAIL);
                self.push_volatile(pb::Report {
                    report_id: random_report_id(),
                    kind: pb::ReportKind::TrustRootRefused as i32,
                    release_id: String::new(),
                    detail: detail.clone(),
                });
                self.emit(Event::TrustRootRefused { error: detail });
                Ok(())
            }
        }
    }

    fn push_volatile(&mut self, report: pb::Report) {
        if self.volatile.len() >= MAX_VOLATILE_REPORTS {
            self.volatile.remove(0);
        }
        self.volatile.push(report);
    }

    /// Queues an `INSTALL_FAILED` report for a refusal that left nothing in
    /// flash to hang a durable report on.
    fn refuse(&mut self, release_id: Option<ReleaseId>, error: OfferError) -> OfferResult {
        tracing::warn!(device = %self.identity.device_id(), release = ?release_id, %error, "offer refused");
        if let Some(release) = &release_id {
            let mut detail = error.to_string();
            detail.truncate(MAX_DETAIL);
            self.push_volatile(pb::Report {
                report_id: random_report_id(),
                kind: pb::ReportKind::InstallFailed as i32,
                release_id: release.to_string(),
                detail,
            });
        }
        self.emit(Event::OfferRefused { release_id, error });
        OfferResult::Refused
    }

    async fn handle_offer<S: Future<Output = ()> + Send>(
        &mut self,
        offer: &pb::Offer,
        nonce: &DeviceNonce,
        channel: &Channel,
        token: &str,
        mut shutdown: Pin<&mut S>,
    ) -> Result<OfferResult, AgentError> {
        let claimed = claimed_release(offer);
        self.emit(Event::OfferReceived {
            release_id: claimed.clone(),
        });
        let (Some(directive), Some(manifest)) = (&offer.directive, &offer.manifest) else {
            let missing = if offer.directive.is_none() {
                "directive"
            } else {
                "manifest"
            };
            return Ok(self.refuse(claimed, OfferError::Missing(missing)));
        };
        let binding = SessionBinding {
            device_id: self.identity.device_id(),
            nonce,
        };
        let accepted = match self
            .device
            .verify_offer(directive, manifest, binding, self.clock())
        {
            Ok(a) => a,
            Err(aloft_device::Error::Protocol(e)) => {
                return Ok(self.refuse(claimed, OfferError::Verify(e)));
            }
            Err(e @ aloft_device::Error::Flash(_)) => return Err(e.into()),
            Err(e) => return Ok(self.refuse(claimed, OfferError::Install(e))),
        };
        let update = accepted.update();
        let release_id = update.manifest().release_id().clone();
        if self.device.trial().is_some() {
            // The running trial must be confirmed (or roll back) first.
            self.emit(Event::OfferDeferred { release_id });
            return Ok(OfferResult::Deferred);
        }
        // A signature-only release has no key (the device core checked the
        // directive carries one exactly when the release is encrypted).
        let key = match update.directive().content_key() {
            None => None,
            Some(wrapped) => match wrap::unwrap_content_key(
                wrapped,
                self.identity.secret_key(),
                self.identity.device_id(),
            ) {
                Ok(k) => Some(k),
                Err(e) => return Ok(self.refuse(Some(release_id), OfferError::Unwrap(e))),
            },
        };
        if let Some((_, digest, _)) = self.device.install_progress()
            && digest != update.manifest().digest()
        {
            // The server now wants another release: give up the old one
            // (queues its durable "install failed" report).
            self.device.abort_install()?;
        }
        if accepted.server_clock_ahead() > 0 {
            tracing::warn!(device = %self.identity.device_id(), ahead_secs = accepted.server_clock_ahead(), "the server's clock is ahead of this device's; attested time moved only as far as allowed");
        }
        let started = tokio::time::Instant::now();
        let chunk_count = update.manifest().payload_layout().chunk_count();
        let begun = match &key {
            Some(key) => self.device.begin_install(&accepted, key),
            None => self.device.begin_signature_only_install(&accepted),
        };
        let mut installer = match begun {
            Ok(i) => i,
            Err(e @ aloft_device::Error::Flash(_)) => return Err(e.into()),
            Err(e) => return Ok(self.refuse(Some(release_id), OfferError::Install(e))),
        };
        let start_chunk = installer.next_chunk();
        let event = Event::DownloadStarted {
            release_id: release_id.clone(),
            start_chunk,
            chunk_count,
        };
        emit_to(&mut self.observer, &event);
        // Straight from storage first when the directive names a URL; the
        // gRPC download takes over from wherever that stops.
        let direct = match update.directive().payload_url() {
            Some(url) => {
                let source = crate::direct::SourceConfig {
                    ca_pem: self.identity.ca_pem(),
                    plaintext_server: self.identity.server_url().starts_with("http://"),
                    trust: self.config.payload_tls,
                    local_address: self.config.local_address,
                    timeout: self.config.message_timeout,
                    request_bytes: self.config.payload_request_bytes,
                };
                crate::direct::run(
                    &mut installer,
                    url,
                    &source,
                    &update.manifest().payload_layout(),
                    &release_id,
                    &mut |e| emit_to(&mut self.observer, e),
                    shutdown.as_mut(),
                )
                .await?
            }
            None => None,
        };
        let result = match direct {
            Some(Fetched::Complete) => Ok(Downloaded::Complete),
            Some(Fetched::Shutdown) => Ok(Downloaded::Shutdown),
            None => {
                download(
                    &mut installer,
                    &mut self.observer,
                    channel,
                    token,
                    &release_id,
                    self.config.message_timeout,
                    shutdown.as_mut(),
                )
                .await
            }
        };
        let refused = match result {
            Ok(Downloaded::Complete) => match installer.finish() {
                Ok(()) => {
                    self.emit(Event::Installed {
                        release_id,
                        elapsed: started.elapsed(),
                    });
                    return Ok(OfferResult::Installed);
                }
                // The device core queued its own durable report.
                Err(aloft_device::Error::DigestMismatch) => OfferError::Digest,
                Err(e @ aloft_device::Error::Flash(_)) => return Err(e.into()),
                Err(e) => {
                    self.device.abort_install()?;
                    OfferError::Install(e)
                }
            },
            Ok(Downloaded::Shutdown) => return Ok(OfferResult::Shutdown),
            Ok(Downloaded::Refused(e)) => {
                drop(installer);
                // Abandon the install: queues a durable "install failed".
                self.device.abort_install()?;
                OfferError::Chunk(e)
            }
            Err(e) => return Err(e),
        };
        self.emit(Event::OfferRefused {
            release_id: Some(release_id),
            error: refused,
        });
        Ok(OfferResult::Refused)
    }
}

enum OfferResult {
    Installed,
    Refused,
    Deferred,
    Shutdown,
}

fn emit_to(observer: &mut Option<Observer>, event: &Event) {
    if let Some(o) = observer.as_mut() {
        o(event);
    }
}

enum Downloaded {
    Complete,
    Shutdown,
    Refused(aloft_device::Error),
}

/// Streams the payload from the installer's resume point into it. Network
/// failures are `Err` (retryable: progress is durable at sector boundaries);
/// a chunk the installer refuses is `Refused`.
async fn download<F: NorFlash, S: Future<Output = ()> + Send>(
    installer: &mut Installer<'_, F>,
    observer: &mut Option<Observer>,
    channel: &Channel,
    token: &str,
    release_id: &ReleaseId,
    limit: Duration,
    mut shutdown: Pin<&mut S>,
) -> Result<Downloaded, AgentError> {
    let mut request = Request::new(pb::DownloadRequest {
        release_id: release_id.to_string(),
        start_chunk: installer.next_chunk(),
    });
    let bearer = format!("{}{token}", wire::BEARER_PREFIX)
        .parse()
        .map_err(|_| AgentError::Protocol("session token is not printable".into()))?;
    request.metadata_mut().insert(wire::AUTHORIZATION, bearer);
    let mut client = DeviceServiceClient::new(channel.clone());
    let mut stream = tokio::select! {
        r = tokio::time::timeout(limit, client.download(request)) => {
            r.map_err(|_| AgentError::Timeout("the download to start"))??.into_inner()
        }
        () = &mut shutdown => return Ok(Downloaded::Shutdown),
    };
    loop {
        let next = tokio::select! {
            n = tokio::time::timeout(limit, stream.message()) => n,
            () = &mut shutdown => return Ok(Downloaded::Shutdown),
        };
        let expected = installer.next_chunk();
        let chunk = match next {
            Err(_) => return Err(AgentError::Timeout("the next chunk")),
            Ok(Err(status)) => return Err(status.into()),
            Ok(Ok(None)) => {
                return Err(AgentError::Protocol(format!(
                    "download of {release_id} ended before chunk {expected}"
                )));
            }
            Ok(Ok(Some(c))) => c,
        };
        if chunk.index != expected {
            return Err(AgentError::Protocol(format!(
                "download sent chunk {} where {expected} was due",
                chunk.index
            )));
        }
        let mut data = chunk.data;
        match installer.write_chunk(&mut data) {
            Ok(progress) => {
                emit_to(observer, &Event::ChunkWritten { index: chunk.index });
                if progress.complete {
                    return Ok(Downloaded::Complete);
                }
            }
            Err(e @ aloft_device::Error::Flash(_)) => return Err(e.into()),
            Err(e) => return Ok(Downloaded::Refused(e)),
        }
    }
}
