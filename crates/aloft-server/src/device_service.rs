//! The device service: authenticated sessions, offers, reports, downloads.

use crate::sync::Recover as _;
use std::sync::Arc;
use std::time::Duration;

use aloft_protocol::envelope;
use aloft_protocol::keys::Domain;
use aloft_protocol::limits::{MAX_DEVICE_MESSAGE_LEN, MAX_REPORTS_PER_HELLO};
use aloft_protocol::pb::{self, device_service_server::DeviceService};
use aloft_protocol::ring_verify::RingPublicKey;
use aloft_protocol::{DeviceId, DeviceNonce, Digest, PublicKey, ReleaseId, wrap};
use aloft_session::SessionError;
use aloft_session::server::{CHALLENGE_LEN, Inbound, ServerSession};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::Shared;
use crate::auth::bearer;
use crate::keys::random;
use crate::rollouts::CheckIn;
use crate::session::CloseReason;
use crate::store::{DeviceRecord, DirectiveRecord};
use crate::tracking::{EventKind, ReportOutcome};

/// An offer decision: which release, from which rollout.
struct OfferChoice {
    release_id: ReleaseId,
    rollout_id: String,
}

/// What a session task sends its device. Boxed: the channel's first block
/// (32 slots) is allocated when the session opens and lives as long as the
/// session, so each slot is a pointer, not a whole message or status.
type SessionItem = Box<Result<pb::ServerToDevice, Status>>;
type Tx = mpsc::Sender<SessionItem>;

/// The Session response stream: the session task's messages, unboxed.
pub(crate) struct SessionStream(mpsc::Receiver<SessionItem>);

impl tokio_stream::Stream for SessionStream {
    type Item = Result<pb::ServerToDevice, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|item| item.map(|b| *b))
    }
}
type Session = ServerSession<RingPublicKey>;
/// The SEC1 bytes of the key a session was authenticated with.
type DeviceKey = Vec<u8>;

/// The tonic `DeviceService` implementation.
pub(crate) struct DeviceSvc {
    shared: Arc<Shared>,
}

impl DeviceSvc {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// The gRPC status for a refused session message: what was wrong and what
/// the device (or whoever wrote it) should do.
fn refused(e: SessionError, signed: &pb::SignedDeviceMessage, expected_seq: u64) -> Status {
    use aloft_protocol::Error as P;
    match e {
        SessionError::Message(P::TooLarge(what)) => Status::invalid_argument(format!(
            "device message refused: {what} exceeds its limit (this payload is {} bytes; limits are {MAX_DEVICE_MESSAGE_LEN} bytes per message and {MAX_REPORTS_PER_HELLO} reports per hello): send the remaining reports in later messages",
            signed.payload.len()
        )),
        SessionError::Message(P::Malformed(what)) => Status::invalid_argument(format!(
            "device message refused: the signed payload is not a valid {what} (protobuf DeviceMessage)"
        )),
        SessionError::Message(
            e @ (P::BadSignature | P::ChallengeMismatch | P::SequenceMismatch { .. }),
        ) => Status::unauthenticated(format!(
            "device message refused: {e} (each message must be signed by the device's registered key over this session's challenge, with seq {expected_seq})"
        )),
        SessionError::DeviceIdChanged => Status::unauthenticated(
            "device message refused: the device id changed within the session",
        ),
        e => Status::invalid_argument(format!("device message refused: {e}")),
    }
}

async fn send(tx: &Tx, message: Result<pb::ServerToDevice, SessionError>) -> Result<(), Status> {
    let message = message.map_err(|e| Status::internal(format!("session state: {e}")))?;
    let _ = tx.send(Box::new(Ok(message))).await;
    Ok(())
}

/// Authenticates the first message with the claimed device's registered key.
fn authenticate(
    shared: &Shared,
    machine: &mut Session,
    first: pb::DeviceToServer,
) -> Result<(DeviceId, DeviceKey, pb::Hello), Status> {
    let signed = first
        .signed
        .ok_or_else(|| Status::invalid_argument("device message carries no signed payload"))?;
    let id = machine
        .claimed_device(&signed)
        .map_err(|e| refused(e, &signed, 1))?;
    let record = shared.store.device(&id)?.ok_or_else(|| {
        Status::unauthenticated(format!(
            "unknown device {id}: an operator must register it before it can connect"
        ))
    })?;
    if record.revoked {
        return Err(Status::permission_denied(format!("device {id} is revoked")));
    }
    // ring verifies about 5x faster than p256 and accepts exactly the same
    // signatures (aloft-protocol's differential test); devices keep p256.
    let ring_key = shared
        .device_keys
        .get(&record.public_key)
        .map_err(|_| Status::internal("registered device key does not parse"))?;
    let hello = machine
        .accept_hello(&signed, ring_key)
        .map_err(|e| match e {
            SessionError::Message(_) | SessionError::DeviceIdChanged => Status::unauthenticated(
                format!(
                    "device authentication failed for {id}: {e} (the hello must be signed by the registered key over this session's challenge, seq 1)"
                ),
            ),
            e => refused(e, &signed, 1),
        })?;
    Ok((id, record.public_key, hello))
}

async fn process_reports(
    shared: &Shared,
    machine: &Session,
    id: &DeviceId,
    reports: &[pb::Report],
    tx: &Tx,
) -> Result<(), Status> {
    if reports.is_empty() {
        return Ok(());
    }
    let mut acked = Vec::with_capacity(reports.len());
    for report in reports {
        shared.metrics.report(report.kind);
        // The directive that named this release says which rollout it belongs to.
        let rollout = match ReleaseId::new(&report.release_id) {
            Ok(release) => shared
                .store
                .directive(id, &release)?
                .map(|d| d.rollout_id)
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        let outcome = shared.tracker.report(id, report, &rollout)?;
        if outcome != ReportOutcome::Duplicate && !rollout.is_empty() {
            let engine_report = match pb::ReportKind::try_from(report.kind) {
                Ok(pb::ReportKind::Installed) => Some(aloft_rollout::Report::Installed),
                Ok(pb::ReportKind::Confirmed) => Some(aloft_rollout::Report::Updated),
                Ok(pb::ReportKind::RolledBack) => Some(aloft_rollout::Report::RolledBack),
                Ok(pb::ReportKind::InstallFailed) => Some(aloft_rollout::Report::Failed {
                    detail: report.detail.clone(),
                }),
                _ => None,
            };
            if let Some(r) = engine_report {
                for event in shared.rollouts.report(&rollout, id, r, shared.now())? {
                    shared.tracker.rollout_event(&event)?;
                }
            }
        }
        acked.push(report.report_id.clone());
    }
    shared.flush().await?;
    send(tx, machine.report_ack(acked)).await
}

async fn build_offer(
    shared: &Shared,
    device: &DeviceRecord,
    id: &DeviceId,
    device_key: &[u8],
    nonce: &DeviceNonce,
    choice: &OfferChoice,
) -> Result<pb::Offer, Status> {
    let release = shared
        .store
        .release(&choice.release_id)?
        .ok_or_else(|| Status::internal("offered release vanished"))?;
    // A signature-only release has no content key: its directive carries none.
    let signature_only = release
        .info
        .as_ref()
        .is_some_and(|i| i.payload_encoding == pb::PayloadEncoding::SignatureOnly as i32);
    let wrapped = if signature_only {
        None
    } else {
        let content_key = shared
            .keys
            .kek
            .open(&choice.release_id, &release.sealed_content_key)
            .map_err(|e| Status::internal(e.to_string()))?;
        // Parsed here, not at the hello: only an offer needs the p256 form.
        let device_key = PublicKey::from_sec1(device_key)
            .map_err(|_| Status::internal("registered device key does not parse"))?;
        let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
        Some(wrap::wrap_content_key(&content_key, &device_key, id, &mut rng).to_pb())
    };
    let manifest = release
        .manifest
        .ok_or_else(|| Status::internal("release without manifest"))?;
    let issued = shared.now().0;
    let expires = issued + shared.limits.directive_ttl.as_secs();
    // Where the device may fetch the payload directly (untrusted, like any
    // transport), valid no longer than the directive.
    let payload_url = shared
        .payloads
        .direct_url(
            &choice.release_id,
            crate::payloads::UploadId(release.upload_id),
            shared.limits.directive_ttl,
        )
        .await?
        .unwrap_or_default();
    let directive = pb::Directive {
        device_id: device.device_id.clone(),
        device_nonce: nonce.as_bytes().to_vec(),
        manifest_digest: Digest::of(&manifest.payload).as_bytes().to_vec(),
        content_key: wrapped,
        server_time: issued,
        expires_at: expires,
        rollout_id: choice.rollout_id.clone(),
        payload_url,
    };
    let key = shared.keys.directive_key();
    let signed = envelope::seal(&directive, Domain::Directive, &[&key]);
    shared.store.put_directive(&DirectiveRecord {
        device_id: device.device_id.clone(),
        release_id: choice.release_id.as_str().to_owned(),
        rollout_id: choice.rollout_id.clone(),
        issued_at: issued,
        expires_at: expires,
    })?;
    Ok(pb::Offer {
        directive: Some(signed),
        manifest: Some(manifest),
    })
}

/// Decides what the device gets now and sends it: an offer, or (only when
/// `answer_later`, i.e. at the hello) a suggested next check-in. Returns
/// whether an offer went out. `known`: the device's record, when the caller
/// has just written it (else it is read).
async fn decide(
    shared: &Shared,
    machine: &mut Session,
    key: &[u8],
    tx: &Tx,
    answer_later: bool,
    known: Option<DeviceRecord>,
) -> Result<bool, Status> {
    let (Some(id), Some(nonce)) = (
        machine.device_id().cloned(),
        machine.device_nonce().copied(),
    ) else {
        return Ok(false);
    };
    let known = known.filter(|r| r.device_id == id.as_str());
    let Some(record) = (match known {
        Some(r) => Some(r),
        None => shared.store.device(&id)?,
    }) else {
        return Ok(false);
    };
    if record.revoked {
        return Ok(false);
    }
    let now = shared.now();
    match shared
        .rollouts
        .check_in(&record, &record.firmware_version, now)?
    {
        CheckIn::Offer {
            release,
            rollout,
            fresh,
        } => {
            let choice = OfferChoice {
                release_id: release,
                rollout_id: rollout,
            };
            let offer = build_offer(shared, &record, &id, key, &nonce, &choice).await?;
            shared.tracker.offered(&id, &choice.release_id, fresh)?;
            shared.metrics.offers.inc();
            shared.tracker.event(
                id.as_str(),
                choice.release_id.as_str(),
                &choice.rollout_id,
                EventKind::Offered,
                String::new(),
            )?;
            shared.flush().await?;
            send(tx, machine.offer(offer)).await?;
            Ok(true)
        }
        CheckIn::Later(at) => {
            // Decision records (a device joining a rollout) are durable before we answer.
            shared.flush().await?;
            if answer_later {
                let after_secs = at.0.saturating_sub(now.0).max(1);
                send(tx, machine.check_in_later(after_secs)).await?;
            }
            Ok(false)
        }
        CheckIn::Nothing => Ok(false),
    }
}

/// Sends the TrustRoot successors a lagging device lacks, right after the
/// Welcome and before any offer.
async fn sync_trust(shared: &Shared, machine: &mut Session, tx: &Tx) -> Result<(), Status> {
    let Some((device_version, latest)) = machine.trust_behind() else {
        return Ok(());
    };
    let chain: Vec<pb::SignedEnvelope> = shared
        .trust
        .read()
        .recover()
        .as_ref()
        .map(|c| {
            c.successors_of(device_version)
                .iter()
                .map(|r| r.envelope().clone())
                .collect()
        })
        .unwrap_or_default();
    let id = machine
        .device_id()
        .map(DeviceId::to_string)
        .unwrap_or_default();
    if chain.is_empty() {
        tracing::warn!(device = %id, device_version, latest, "the device states a TrustRoot version this server's chain does not contain; it cannot be brought up to date");
    } else {
        tracing::info!(device = %id, from = device_version, to = latest, "sending TrustRoot successors");
        shared.tracker.publish(
            &id,
            EventKind::TrustRootSent,
            format!("versions {} to {latest}", device_version + 1),
        );
    }
    if let Some(m) = machine
        .trust_update(chain)
        .map_err(|e| Status::internal(format!("session state: {e}")))?
    {
        let _ = tx.send(Box::new(Ok(m))).await;
    }
    Ok(())
}

async fn run_session(shared: Arc<Shared>, mut inbound: Streaming<pb::DeviceToServer>, tx: Tx) {
    use tracing::Instrument as _;
    // Every log line of the session carries the device id once it is known
    // (a span field: `--log-format json` shows it under "span").
    let span = tracing::info_span!("session", device = tracing::field::Empty);
    let ended = session(&shared, &mut inbound, &tx)
        .instrument(span.clone())
        .await;
    if let Err(status) = ended {
        let _entered = span.enter();
        tracing::info!(code = ?status.code(), reason = status.message(), "device session ended");
        let _ = tx.send(Box::new(Err(status))).await;
    }
}

/// An authenticated session as it idles: what the loop of [`session`]
/// keeps between messages.
struct Open {
    machine: Session,
    id: DeviceId,
    key: DeviceKey,
    handle: crate::session::SessionHandle,
    nudges: tokio::sync::watch::Receiver<u64>,
    offered: bool,
}

async fn session(
    shared: &Shared,
    inbound: &mut Streaming<pb::DeviceToServer>,
    tx: &Tx,
) -> Result<(), Status> {
    // Opening (challenge, hello, welcome, reports, the first decision) runs
    // boxed, so its state is freed before the session idles: the task of an
    // idle session holds only the loop's futures (BENCHMARKS.md, benchmark 2).
    let Some(open) = Box::pin(open_session(shared, inbound, tx)).await? else {
        return Ok(());
    };
    idle(shared, inbound, tx, open).await
}

/// Challenge, hello, welcome, the hello's reports and the first offer
/// decision; `None` when the device closed before its hello.
async fn open_session(
    shared: &Shared,
    inbound: &mut Streaming<pb::DeviceToServer>,
    tx: &Tx,
) -> Result<Option<Open>, Status> {
    // A bounded number of sessions may wait for their hello at once: a
    // storm of reconnecting devices (or of clients that never say hello) is
    // told to come back later instead of exhausting the server.
    let Ok(waiting) = shared.pending_hellos.clone().try_acquire_owned() else {
        let wait_ms = 1_000 + u64::from(random::<2>()[0]) * 16;
        let mut status = Status::unavailable(format!(
            "too many devices are connecting at once ({} waiting for their hello); retry in {wait_ms} ms",
            shared.limits.max_pending_hellos
        ));
        if let Ok(v) = wait_ms.to_string().parse() {
            status.metadata_mut().insert(crate::RETRY_AFTER_MS, v);
        }
        shared.metrics.session_refused(&status);
        return Err(status);
    };
    let mut machine = Session::new(random::<CHALLENGE_LEN>());
    send(tx, machine.challenge(shared.now().0)).await?;
    let first = match tokio::time::timeout(shared.limits.hello_timeout, inbound.message()).await {
        Err(_) => {
            let status = Status::deadline_exceeded(format!(
                "no hello within {} s of the challenge",
                shared.limits.hello_timeout.as_secs_f32()
            ));
            shared.metrics.session_refused(&status);
            return Err(status);
        }
        Ok(Err(status)) => return Err(status),
        Ok(Ok(None)) => return Ok(None),
        Ok(Ok(Some(first))) => first,
    };
    let (id, key, hello) = authenticate(shared, &mut machine, first)
        .inspect_err(|status| shared.metrics.session_refused(status))?;
    shared.metrics.check_ins.inc();
    tracing::Span::current().record("device", id.as_str());
    drop(waiting);
    let state = hello.state.clone().unwrap_or_default();

    let handle = shared.sessions.open(&id);
    let detail = format!("running {}", state.firmware_version);
    let (news, observed) = shared.tracker.observe(&id, Some(&state))?;
    if news {
        // News (first connection, new firmware, slot or TrustRoot): stored
        // and durable before the Welcome.
        shared
            .tracker
            .event(id.as_str(), "", "", EventKind::Connected, detail)?;
        shared.flush().await?;
    } else {
        // A routine check-in: last-seen is written (sled flushes it within
        // its background interval), the event goes to live watchers only,
        // and no fsync holds up the Welcome.
        shared
            .tracker
            .publish(id.as_str(), EventKind::Connected, detail);
    }
    if state.server_clock_ahead_secs > 0 {
        tracing::warn!(device = %id, ahead_secs = state.server_clock_ahead_secs, "the device reports this server's clock ahead of what it accepts; check the server's time");
    }
    let latest_root = shared
        .trust
        .read()
        .recover()
        .as_ref()
        .map_or(0, |c| c.latest().version());
    send(
        tx,
        machine.welcome(
            &handle.token_bytes,
            shared.now().0,
            shared.limits.next_check_in_secs,
            state.trust_root_version,
            latest_root,
        ),
    )
    .await?;
    sync_trust(shared, &mut machine, tx).await?;
    process_reports(shared, &machine, &id, &hello.reports, tx).await?;
    // A confirmed device on a rollout's version whose report the store lacks
    // (restored from a backup) counts as updated.
    if state.confirmed {
        let events =
            shared
                .rollouts
                .reconcile_confirmed(&id, &state.firmware_version, shared.now())?;
        for e in &events {
            shared.tracker.rollout_event(e)?;
        }
        if !events.is_empty() {
            shared.flush().await?;
        }
    }

    // Subscribe before deciding, so no nudge between the two is missed.
    let mut nudges = shared.rollouts.subscribe();
    nudges.mark_unchanged();
    // The record as the hello wrote it, unless reports changed it since
    // (saves reading it again).
    let known = observed.filter(|_| hello.reports.is_empty());
    let offered = decide(shared, &mut machine, &key, tx, true, known).await?;
    Ok(Some(Open {
        machine,
        id,
        key,
        handle,
        nudges,
        offered,
    }))
}

/// The authenticated session until it ends: nudges, reports, heartbeats.
/// Work that is rare for an idle device (an offer decision, reports, a
/// durable write) runs boxed, so it adds nothing to the idle task's size.
async fn idle(
    shared: &Shared,
    inbound: &mut Streaming<pb::DeviceToServer>,
    tx: &Tx,
    open: Open,
) -> Result<(), Status> {
    let Open {
        mut machine,
        id,
        key,
        mut handle,
        mut nudges,
        mut offered,
    } = open;
    let jitter = Duration::from_millis(aloft_rollout::membership::jitter_secs(
        &id,
        u64::try_from(shared.limits.notify_jitter.as_millis()).unwrap_or(u64::MAX),
    ));
    let mut renudge: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;

    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            reason = &mut handle.closed => {
                return Err(reason.unwrap_or(CloseReason::Shutdown).status());
            }
            _ = crate::stopped(&mut shutdown) => return Err(CloseReason::Shutdown.status()),
            changed = nudges.changed(), if !offered && renudge.is_none() => {
                if changed.is_ok() {
                    // Deterministic per-device jitter spreads a fleet-wide nudge.
                    renudge = Some(Box::pin(tokio::time::sleep(jitter)));
                }
            }
            () = async { if let Some(t) = renudge.as_mut() { t.await } }, if renudge.is_some() => {
                renudge = None;
                nudges.mark_unchanged();
                                offered = Box::pin(decide(shared, &mut machine, &key, tx, false, None)).await?;
            }
            next = inbound.message() => {
                let Ok(Some(next)) = next else { return Ok(()) };
                let signed = next.signed.ok_or_else(|| {
                    Status::invalid_argument("device message carries no signed payload")
                })?;
                let expected = machine.expected_seq();
                match machine.receive(&signed).map_err(|e| refused(e, &signed, expected))? {
                    Inbound::Report(report) => {
                        Box::pin(process_reports(shared, &machine, &id, std::slice::from_ref(&report), tx)).await?;
                    }
                    Inbound::Heartbeat(state) => {
                                                if shared.tracker.observe(&id, Some(&state))?.0 {
                            shared.tracker.event(
                                id.as_str(),
                                "",
                                "",
                                EventKind::State,
                                format!(
                                    "running {}, TrustRoot v{}",
                                    state.firmware_version, state.trust_root_version
                                ),
                            )?;
                            Box::pin(shared.flush()).await?;
                        }
                    }
                }
            }
        }
    }
}

/// A download re-checks its authorisation every this many chunks.
const RECHECK_EVERY_CHUNKS: u32 = 64;

/// Whether `directive` still authorises `device`'s download: not expired,
/// and its rollout neither cancelled nor excluding the device.
fn authorised(
    shared: &Shared,
    directive: &DirectiveRecord,
    device: &DeviceId,
) -> Result<(), Status> {
    let now = shared.now().0;
    if now > directive.expires_at {
        return Err(Status::permission_denied(format!(
            "the directive for release {} expired at {} (now {now}): check in again for a new offer",
            directive.release_id, directive.expires_at
        )));
    }
    shared
        .rollouts
        .download_allowed(&directive.rollout_id, device)
        .map_err(|e| {
            Status::permission_denied(format!(
                "download of {} no longer authorised: {e}",
                directive.release_id
            ))
        })
}

#[tonic::async_trait]
impl DeviceService for DeviceSvc {
    type SessionStream = SessionStream;
    type DownloadStream = ReceiverStream<Result<pb::DownloadChunk, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::DeviceToServer>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let (tx, rx) = mpsc::channel(8);
        self.shared.metrics.sessions_opened.inc();
        tokio::spawn(run_session(self.shared.clone(), request.into_inner(), tx));
        Ok(Response::new(SessionStream(rx)))
    }

    async fn download(
        &self,
        request: Request<pb::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let shared = &self.shared;
        let token = bearer(request.metadata()).ok_or_else(|| {
            Status::unauthenticated(
                "missing session token: send 'authorization: Bearer <token from Welcome>'",
            )
        })?;
        let device = shared.sessions.device_for_token(token).ok_or_else(|| {
            Status::unauthenticated("unknown or expired session token: open a Session first")
        })?;
        let req = request.into_inner();
        let release_id = ReleaseId::new(&req.release_id)
            .map_err(|e| Status::invalid_argument(format!("download refused: {e}")))?;
        let release = shared
            .store
            .release(&release_id)?
            .ok_or_else(|| Status::not_found(format!("no release {release_id}")))?;
        let directive = shared
            .store
            .directive(&device, &release_id)?
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "no directive for device {device} names release {release_id}"
                ))
            })?;
        authorised(shared, &directive, &device)?;
        if req.start_chunk >= release.chunk_count {
            return Err(Status::out_of_range(format!(
                "start_chunk {} is past the last chunk ({} chunks)",
                req.start_chunk, release.chunk_count
            )));
        }
        let permit = shared.downloads.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted("too many concurrent downloads; retry later")
        })?;
        shared.metrics.downloads.inc();
        let (tx, rx) = mpsc::channel(shared.limits.download_buffer_chunks.max(1));
        let params = crate::payloads::params_of(&release)?;
        let object = shared.payloads.location_of(&release)?;
        let mut shutdown = shared.shutdown.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut index = req.start_chunk;
            while index < release.chunk_count {
                // One read from the object store per batch of chunks.
                let end = crate::payloads::batch_end(&params, index).min(release.chunk_count);
                let chunks = shared.payloads.read_chunks(&object, &params, index..end);
                let chunks = tokio::select! {
                    read = chunks => read,
                    _ = crate::stopped(&mut shutdown) => {
                        let _ = tx.try_send(Err(CloseReason::Shutdown.status()));
                        return;
                    }
                };
                let chunks = match chunks {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                for data in chunks {
                    // Revocation bites mid-download too: a cancelled rollout, an
                    // excluded device or an expired directive stops the stream.
                    if index.is_multiple_of(RECHECK_EVERY_CHUNKS)
                        && index != req.start_chunk
                        && let Err(status) = authorised(&shared, &directive, &device)
                    {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                    shared.metrics.download_bytes.inc_by(data.len() as u64);
                    let item = Ok(pb::DownloadChunk {
                        index,
                        data: data.to_vec(),
                    });
                    tokio::select! {
                        sent = tx.send(item) => if sent.is_err() { return },
                        _ = crate::stopped(&mut shutdown) => {
                            let _ = tx.try_send(Err(CloseReason::Shutdown.status()));
                            return;
                        }
                    }
                    index += 1;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
