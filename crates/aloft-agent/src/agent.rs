//! The runtime: one [`Agent`] per device, driving sessions, offers,
//! downloads and reconnects over a [`Device`].

use std::collections::HashSet;
use std::future::Future;
use std::net::IpAddr;
use std::pin::{Pin, pin};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aloft_device::{Booted, Device, Installer, ReportId, Slot};
use aloft_protocol::pb::device_message::Body;
use aloft_protocol::pb::device_service_client::DeviceServiceClient;
use aloft_protocol::pb::server_to_device::Kind;
use aloft_protocol::prost::Message as _;
use aloft_protocol::trust::{DeviceContext, VerifiedUpdate, verify_update};
use aloft_protocol::{
    DeviceNonce, ReleaseId, SecurityVersion, UnixTime, Version, device_msg, pb, wrap,
};
use embedded_storage::nor_flash::NorFlash;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Streaming};

use crate::backoff::{Backoff, BackoffConfig, random_u64};
use crate::connect;
use crate::error::{AgentError, OfferError};
use crate::identity::Identity;

/// Refusal reports kept in memory (not in flash) at most; the oldest goes.
const MAX_VOLATILE_REPORTS: usize = 8;
/// Longest report detail the server accepts.
const MAX_DETAIL: usize = 1024;

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
        }
    }
}

/// The firmware that is running, as the firmware itself reports it.
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
            version: booted.manifest.version,
            security_version: booted.manifest.security_version,
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
        /// The session's check-in period.
        check_in: Duration,
    },
    /// The server durably recorded reports.
    ReportsAcked {
        /// How many of ours.
        count: usize,
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

enum OfferResult {
    Installed {
        release_id: ReleaseId,
        version: Version,
    },
    Refused,
    Deferred,
    Shutdown,
}

/// One live session's sending half.
struct Outbound {
    tx: mpsc::Sender<pb::DeviceToServer>,
    challenge: Vec<u8>,
    seq: u64,
    sent: HashSet<Vec<u8>>,
}

type Observer = Box<dyn FnMut(&Event) + Send + Sync>;

/// The device runtime over flash `F`: see the crate docs for how a firmware
/// uses it.
pub struct Agent<F: NorFlash> {
    identity: Identity,
    device: Device<F>,
    running: RunningFirmware,
    config: AgentConfig,
    endpoint: Endpoint,
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

fn now() -> UnixTime {
    UnixTime(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
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

async fn next_message(
    inbound: &mut Streaming<pb::ServerToDevice>,
    limit: Duration,
    what: &'static str,
) -> Result<Kind, AgentError> {
    match tokio::time::timeout(limit, inbound.message()).await {
        Err(_) => Err(AgentError::Timeout(what)),
        Ok(Err(status)) => Err(status.into()),
        Ok(Ok(None)) => Err(AgentError::SessionClosed),
        Ok(Ok(Some(m))) => m
            .kind
            .ok_or_else(|| AgentError::Protocol(format!("empty message instead of {what}"))),
    }
}

impl<F: NorFlash> Agent<F> {
    /// An agent for `device` (opened by the firmware after the boot
    /// decision), running `running`.
    pub fn new(
        identity: Identity,
        device: Device<F>,
        running: RunningFirmware,
        config: AgentConfig,
    ) -> Result<Self, AgentError> {
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
            observer: None,
            volatile: Vec::new(),
        })
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

    /// The device core (state, reports, slots).
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

    /// The state sent in hellos and heartbeats.
    pub fn state(&self) -> pb::DeviceState {
        let progress = self.device.install_progress();
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
        }
    }

    /// Reports waiting for the server's acknowledgement: the durable ones
    /// from flash, then refusal reports held in memory.
    pub fn pending_reports(&self) -> Vec<pb::Report> {
        let mut out: Vec<pb::Report> = self.device.reports().map(|r| r.to_pb()).collect();
        out.extend(self.volatile.iter().cloned());
        out
    }

    fn emit(&mut self, event: Event) {
        tracing::debug!(device = %self.identity.device_id(), ?event, "agent");
        if let Some(o) = self.observer.as_mut() {
            o(&event);
        }
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
                    let delay = self.backoff.next_delay();
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
        let started = Instant::now();
        let channel = tokio::select! {
            c = connect::connect(&self.endpoint) => c?,
            () = &mut shutdown => return Ok(SessionEnd::Shutdown),
        };
        self.emit(Event::Connected {
            elapsed: started.elapsed(),
        });
        let connected = Instant::now();
        let limit = self.config.message_timeout;
        let (tx, rx) = mpsc::channel(16);
        let mut client = DeviceServiceClient::new(channel.clone());
        let mut inbound = tokio::time::timeout(limit, client.session(ReceiverStream::new(rx)))
            .await
            .map_err(|_| AgentError::Timeout("the session to open"))??
            .into_inner();
        let challenge = match next_message(&mut inbound, limit, "the challenge").await? {
            Kind::Challenge(c) => c.nonce,
            other => {
                return Err(AgentError::Protocol(format!(
                    "expected a challenge, got {other:?}"
                )));
            }
        };
        let mut nonce = [0u8; DeviceNonce::LEN];
        getrandom::fill(&mut nonce).expect("the OS random number generator failed");
        let nonce = DeviceNonce::from_bytes(nonce);
        let mut out = Outbound {
            tx,
            challenge,
            seq: 0,
            sent: HashSet::new(),
        };
        let reports = self.pending_reports();
        out.sent.extend(reports.iter().map(|r| r.report_id.clone()));
        let hello = pb::Hello {
            device_nonce: nonce.as_bytes().to_vec(),
            state: Some(self.state()),
            reports,
        };
        self.send(&mut out, Body::Hello(hello)).await?;
        let welcome = match next_message(&mut inbound, limit, "the welcome").await? {
            Kind::Welcome(w) => w,
            other => {
                return Err(AgentError::Protocol(format!(
                    "expected a welcome, got {other:?}"
                )));
            }
        };
        let token: String = welcome
            .session_token
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.backoff.reset();
        let check_in = match welcome.next_check_in_secs {
            0 => self.config.default_check_in,
            s => Duration::from_secs(s),
        }
        .min(self.config.max_check_in);
        self.emit(Event::Authenticated {
            elapsed: connected.elapsed(),
            check_in,
        });
        let deadline = tokio::time::Instant::now() + check_in;
        let mut heartbeat = tokio::time::interval_at(
            tokio::time::Instant::now() + self.config.heartbeat,
            self.config.heartbeat,
        );
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(SessionEnd::Shutdown),
                () = tokio::time::sleep_until(deadline) => return Ok(SessionEnd::CheckInAfter(Duration::ZERO)),
                _ = heartbeat.tick() => {
                    let state = self.state();
                    self.send(&mut out, Body::Heartbeat(pb::Heartbeat { state: Some(state) })).await?;
                }
                message = inbound.message() => {
                    let kind = match message {
                        Err(status) => return Err(status.into()),
                        Ok(None) => return Err(AgentError::SessionClosed),
                        Ok(Some(m)) => m.kind,
                    };
                    match kind {
                        Some(Kind::ReportAck(ack)) => self.acked(&ack)?,
                        Some(Kind::CheckInLater(later)) => {
                            let after = Duration::from_secs(later.after_secs).min(self.config.max_check_in);
                            return Ok(SessionEnd::CheckInAfter(after));
                        }
                        Some(Kind::Offer(offer)) => {
                            match self.handle_offer(&offer, &nonce, &channel, &token, shutdown.as_mut()).await? {
                                OfferResult::Installed { release_id, version } => {
                                    self.send_new_reports(&mut out).await?;
                                    self.await_ack(&mut inbound).await?;
                                    return Ok(SessionEnd::Reboot { release_id, version });
                                }
                                OfferResult::Refused => self.send_new_reports(&mut out).await?,
                                OfferResult::Deferred => {}
                                OfferResult::Shutdown => return Ok(SessionEnd::Shutdown),
                            }
                        }
                        Some(other @ (Kind::Challenge(_) | Kind::Welcome(_))) => {
                            return Err(AgentError::Protocol(format!("unexpected {other:?} mid-session")));
                        }
                        None => {}
                    }
                }
            }
        }
    }

    async fn send(&self, out: &mut Outbound, body: Body) -> Result<(), AgentError> {
        out.seq += 1;
        let message = pb::DeviceMessage {
            device_id: self.identity.device_id().to_string(),
            challenge: out.challenge.clone(),
            seq: out.seq,
            body: Some(body),
        };
        let signed = device_msg::seal(&message, self.identity.secret_key());
        out.tx
            .send(pb::DeviceToServer {
                signed: Some(signed),
            })
            .await
            .map_err(|_| AgentError::SessionClosed)
    }

    /// Sends the pending reports this session has not carried yet.
    async fn send_new_reports(&self, out: &mut Outbound) -> Result<(), AgentError> {
        for report in self.pending_reports() {
            if out.sent.insert(report.report_id.clone()) {
                self.send(out, Body::Report(report)).await?;
            }
        }
        Ok(())
    }

    /// Waits (bounded) for one acknowledgement after the "installed" report.
    async fn await_ack(
        &mut self,
        inbound: &mut Streaming<pb::ServerToDevice>,
    ) -> Result<(), AgentError> {
        let deadline = tokio::time::Instant::now() + self.config.report_ack_wait;
        while self.device.reports().next().is_some() {
            match tokio::time::timeout_at(deadline, inbound.message()).await {
                Ok(Ok(Some(pb::ServerToDevice {
                    kind: Some(Kind::ReportAck(ack)),
                }))) => self.acked(&ack)?,
                Ok(Ok(Some(_))) => {}
                // Unacknowledged reports stay queued and go with the next hello.
                _ => break,
            }
        }
        Ok(())
    }

    /// Drops acknowledged reports: from flash (4-byte ids) and from memory.
    fn acked(&mut self, ack: &pb::ReportAck) -> Result<(), AgentError> {
        let mut count = 0;
        for id in &ack.report_ids {
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

    /// Verifies an offer for this device and this session's `nonce`:
    /// directive (server key, device id, nonce, expiry, attested time), then
    /// manifest (digest, release keys, expiry, product, hardware, security
    /// floor, newer version, size). Returns the verified update and the
    /// encoded manifest envelope to store next to the image.
    pub fn verify_offer(
        &self,
        offer: &pb::Offer,
        nonce: &DeviceNonce,
    ) -> Result<(VerifiedUpdate, Vec<u8>), OfferError> {
        let directive = offer
            .directive
            .as_ref()
            .ok_or(OfferError::Missing("directive"))?;
        let manifest = offer
            .manifest
            .as_ref()
            .ok_or(OfferError::Missing("manifest"))?;
        let config = self.device.config();
        let ctx = DeviceContext {
            device_id: self.identity.device_id(),
            device_nonce: nonce,
            product: &config.product,
            hardware: &config.hardware,
            current_version: self.running.version,
            security_floor: self.device.security_floor(),
            time_floor: self.device.time_floor(),
            slot_capacity: self.device.inactive_capacity(),
            now: now().max(self.device.time_floor()),
        };
        let update = verify_update(self.identity.trust_root(), directive, manifest, &ctx)
            .map_err(OfferError::Verify)?;
        Ok((update, manifest.encode_to_vec()))
    }

    /// Queues an `INSTALL_FAILED` report for a refusal that left nothing in
    /// flash to hang a durable report on.
    fn refuse(&mut self, release_id: Option<ReleaseId>, error: OfferError) -> OfferResult {
        tracing::warn!(device = %self.identity.device_id(), release = ?release_id, %error, "offer refused");
        if let Some(release) = &release_id {
            let mut detail = error.to_string();
            detail.truncate(MAX_DETAIL);
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&random_u64().to_le_bytes());
            id[8..].copy_from_slice(&random_u64().to_le_bytes());
            if self.volatile.len() >= MAX_VOLATILE_REPORTS {
                self.volatile.remove(0);
            }
            self.volatile.push(pb::Report {
                report_id: id.to_vec(),
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
        let (update, envelope) = match self.verify_offer(offer, nonce) {
            Ok(v) => v,
            Err(e) => return Ok(self.refuse(claimed, e)),
        };
        let release_id = update.manifest.release_id.clone();
        if self.device.trial().is_some() {
            // The running trial must be confirmed (or roll back) first.
            self.emit(Event::OfferDeferred { release_id });
            return Ok(OfferResult::Deferred);
        }
        let key = match wrap::unwrap_content_key(
            &update.directive.content_key,
            self.identity.secret_key(),
            self.identity.device_id(),
        ) {
            Ok(k) => k,
            Err(e) => return Ok(self.refuse(Some(release_id), OfferError::Unwrap(e))),
        };
        if let Some((_, digest, _)) = self.device.install_progress()
            && digest != update.manifest.digest
        {
            // The server now wants another release: give up the old one
            // (queues its durable "install failed" report).
            self.device.abort_install()?;
        }
        let started = Instant::now();
        let params = update.manifest.payload_params();
        let chunk_count = params.image_len.div_ceil(u64::from(params.chunk_size)) as u32;
        let mut installer = match self.device.begin_install(&update, &envelope, &key) {
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
        let result = download(
            &mut installer,
            &mut self.observer,
            channel,
            token,
            &release_id,
            self.config.message_timeout,
            shutdown.as_mut(),
        )
        .await;
        let refused = match result {
            Ok(Downloaded::Complete) => match installer.finish() {
                Ok(()) => {
                    self.emit(Event::Installed {
                        release_id: release_id.clone(),
                        elapsed: started.elapsed(),
                    });
                    return Ok(OfferResult::Installed {
                        release_id,
                        version: update.manifest.version,
                    });
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
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| AgentError::Protocol("session token is not printable".into()))?;
    request.metadata_mut().insert("authorization", bearer);
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
