//! The device service: authenticated sessions, offers, reports, downloads.

use std::sync::Arc;
use std::time::Duration;

use aloft_protocol::device_msg;
use aloft_protocol::envelope;
use aloft_protocol::keys::Domain;
use aloft_protocol::limits::MAX_REPORTS_PER_HELLO;
use aloft_protocol::pb::device_message::Body;
use aloft_protocol::pb::server_to_device::Kind;
use aloft_protocol::pb::{self, device_service_server::DeviceService};
use aloft_protocol::ring_verify::RingPublicKey;
use aloft_protocol::{DeviceId, DeviceNonce, Digest, PublicKey, ReleaseId, wrap};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::Shared;
use crate::auth::bearer;
use crate::keys::random;
use crate::rollouts::CheckIn;
use crate::session::CloseReason;
use crate::store::{DeviceRecord, DirectiveRecord};
use crate::tracking::ReportOutcome;

/// An offer decision: which release, from which rollout.
struct OfferChoice {
    release_id: ReleaseId,
    rollout_id: String,
}

type Tx = mpsc::Sender<Result<pb::ServerToDevice, Status>>;

/// The tonic `DeviceService` implementation.
pub(crate) struct DeviceSvc {
    shared: Arc<Shared>,
}

impl DeviceSvc {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn msg(kind: Kind) -> Result<pb::ServerToDevice, Status> {
    Ok(pb::ServerToDevice { kind: Some(kind) })
}

/// Authenticates the first message: returns the device, its key and the hello.
fn authenticate(
    shared: &Shared,
    first: pb::DeviceToServer,
    challenge: &[u8],
) -> Result<(DeviceRecord, DeviceId, PublicKey, pb::Hello), Status> {
    let signed = first
        .signed
        .ok_or_else(|| Status::invalid_argument("device message carries no signed payload"))?;
    let claimed = device_msg::peek(&signed)
        .map_err(|e| Status::invalid_argument(format!("malformed device message: {e}")))?;
    let id = DeviceId::new(&claimed.device_id)
        .map_err(|e| Status::invalid_argument(format!("hello refused: {e}")))?;
    let record = shared.store.device(&id)?.ok_or_else(|| {
        Status::unauthenticated(format!(
            "unknown device {id}: an operator must register it before it can connect"
        ))
    })?;
    if record.revoked {
        return Err(Status::permission_denied(format!("device {id} is revoked")));
    }
    let key = PublicKey::from_sec1(&record.public_key)
        .map_err(|_| Status::internal("registered device key does not parse"))?;
    // ring verifies about 5x faster than p256 and accepts exactly the same
    // signatures (aloft-protocol's differential test); devices keep p256.
    let opened = device_msg::open(&signed, &RingPublicKey::new(&key), challenge, 1).map_err(|e| {
        Status::unauthenticated(format!(
            "device authentication failed for {id}: {e} (the hello must be signed by the registered key over this session's challenge, seq 1)"
        ))
    })?;
    if opened.device_id != id.as_str() {
        return Err(Status::unauthenticated(
            "signed device id differs from the claimed one",
        ));
    }
    let Some(Body::Hello(hello)) = opened.body else {
        return Err(Status::invalid_argument(
            "the first device message must be a Hello",
        ));
    };
    Ok((record, id, key, hello))
}

async fn process_reports(
    shared: &Shared,
    id: &DeviceId,
    reports: &[pb::Report],
    tx: &Tx,
) -> Result<(), Status> {
    if reports.is_empty() {
        return Ok(());
    }
    let mut acked = Vec::with_capacity(reports.len());
    for report in reports {
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
    shared.store.flush().await?;
    let _ = tx
        .send(msg(Kind::ReportAck(pb::ReportAck { report_ids: acked })))
        .await;
    Ok(())
}

fn build_offer(
    shared: &Shared,
    device: &DeviceRecord,
    id: &DeviceId,
    device_key: &PublicKey,
    nonce: &DeviceNonce,
    choice: &OfferChoice,
) -> Result<pb::Offer, Status> {
    let release = shared
        .store
        .release(&choice.release_id)?
        .ok_or_else(|| Status::internal("offered release vanished"))?;
    let content_key = shared
        .keys
        .kek
        .open(&choice.release_id, &release.sealed_content_key)
        .map_err(|e| Status::internal(e.to_string()))?;
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    let wrapped = wrap::wrap_content_key(&content_key, device_key, id, &mut rng);
    let manifest = release
        .manifest
        .ok_or_else(|| Status::internal("release without manifest"))?;
    let issued = shared.now().0;
    let expires = issued + shared.limits.directive_ttl.as_secs();
    let directive = pb::Directive {
        device_id: device.device_id.clone(),
        device_nonce: nonce.as_bytes().to_vec(),
        manifest_digest: Digest::of(&manifest.payload).as_bytes().to_vec(),
        content_key: Some(wrapped.to_pb()),
        server_time: issued,
        expires_at: expires,
        rollout_id: choice.rollout_id.clone(),
    };
    let signed = envelope::seal(&directive, Domain::Directive, &[&shared.keys.directive_key]);
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
/// whether an offer went out.
async fn decide(
    shared: &Shared,
    id: &DeviceId,
    key: &PublicKey,
    nonce: &DeviceNonce,
    tx: &Tx,
    answer_later: bool,
) -> Result<bool, Status> {
    let Some(record) = shared.store.device(id)? else {
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
            let offer = build_offer(shared, &record, id, key, nonce, &choice)?;
            shared.tracker.offered(id, &choice.release_id, fresh)?;
            shared.tracker.event(
                id.as_str(),
                choice.release_id.as_str(),
                &choice.rollout_id,
                "offered",
                String::new(),
            )?;
            shared.store.flush().await?;
            let _ = tx.send(msg(Kind::Offer(offer))).await;
            Ok(true)
        }
        CheckIn::Later(at) => {
            // Decision records (a device joining a rollout) are durable before we answer.
            shared.store.flush().await?;
            if answer_later {
                let after_secs = at.0.saturating_sub(now.0).max(1);
                let _ = tx
                    .send(msg(Kind::CheckInLater(pb::CheckInLater { after_secs })))
                    .await;
            }
            Ok(false)
        }
        CheckIn::Nothing => Ok(false),
    }
}

async fn run_session(shared: Arc<Shared>, mut inbound: Streaming<pb::DeviceToServer>, tx: Tx) {
    if let Err(status) = session(&shared, &mut inbound, &tx).await {
        tracing::info!(code = ?status.code(), message = status.message(), "device session ended");
        let _ = tx.send(Err(status)).await;
    }
}

async fn session(
    shared: &Shared,
    inbound: &mut Streaming<pb::DeviceToServer>,
    tx: &Tx,
) -> Result<(), Status> {
    let challenge = random::<32>();
    let _ = tx
        .send(msg(Kind::Challenge(pb::Challenge {
            nonce: challenge.to_vec(),
            server_time: shared.now().0,
        })))
        .await;
    let first = match tokio::time::timeout(shared.limits.hello_timeout, inbound.message()).await {
        Err(_) => {
            return Err(Status::deadline_exceeded(format!(
                "no hello within {} s of the challenge",
                shared.limits.hello_timeout.as_secs_f32()
            )));
        }
        Ok(Err(status)) => return Err(status),
        Ok(Ok(None)) => return Ok(()),
        Ok(Ok(Some(first))) => first,
    };
    let (_, id, key, hello) = authenticate(shared, first, &challenge)?;
    let verifier = RingPublicKey::new(&key);
    let nonce = DeviceNonce::from_slice(&hello.device_nonce).map_err(|_| {
        Status::invalid_argument(format!(
            "hello refused: device nonce must be {} bytes",
            DeviceNonce::LEN
        ))
    })?;
    if hello.reports.len() > MAX_REPORTS_PER_HELLO {
        return Err(Status::invalid_argument(format!(
            "hello refused: more than {MAX_REPORTS_PER_HELLO} reports"
        )));
    }
    let state = hello.state.clone().unwrap_or_default();

    let mut handle = shared.sessions.open(&id);
    let detail = format!("running {}", state.firmware_version);
    if shared.tracker.observe(&id, Some(&state))? {
        // News (first connection, new firmware or slot): stored and durable
        // before the Welcome.
        shared
            .tracker
            .event(id.as_str(), "", "", "connected", detail)?;
        shared.store.flush().await?;
    } else {
        // A routine check-in: last-seen is written (sled flushes it within
        // its background interval), the event goes to live watchers only,
        // and no fsync holds up the Welcome.
        shared.tracker.publish(id.as_str(), "connected", detail);
    }
    let _ = tx
        .send(msg(Kind::Welcome(pb::Welcome {
            session_token: handle.token_bytes.to_vec(),
            server_time: shared.now().0,
            next_check_in_secs: shared.limits.next_check_in_secs,
        })))
        .await;
    process_reports(shared, &id, &hello.reports, tx).await?;

    // Subscribe before deciding, so no nudge between the two is missed.
    let mut nudges = shared.rollouts.subscribe();
    nudges.mark_unchanged();
    let mut offered = decide(shared, &id, &key, &nonce, tx, true).await?;
    let jitter = Duration::from_millis(aloft_rollout::membership::jitter_secs(
        &id,
        u64::try_from(shared.limits.notify_jitter.as_millis()).unwrap_or(u64::MAX),
    ));
    let mut renudge: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;

    let mut expected_seq = 2u64;
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
                offered = decide(shared, &id, &key, &nonce, tx, false).await?;
            }
            next = inbound.message() => {
                let Ok(Some(next)) = next else { return Ok(()) };
                let signed = next.signed.ok_or_else(|| {
                    Status::invalid_argument("device message carries no signed payload")
                })?;
                let opened = device_msg::open(&signed, &verifier, &challenge, expected_seq).map_err(|e| {
                    Status::unauthenticated(format!(
                        "device message refused: {e} (expected seq {expected_seq}, this session's challenge, the device's key)"
                    ))
                })?;
                if opened.device_id != id.as_str() {
                    return Err(Status::unauthenticated("device id changed within the session"));
                }
                expected_seq += 1;
                match opened.body {
                    Some(Body::Report(report)) => {
                        process_reports(shared, &id, std::slice::from_ref(&report), tx).await?;
                    }
                    Some(Body::Heartbeat(hb)) => {
                        shared.tracker.observe(&id, hb.state.as_ref())?;
                    }
                    Some(Body::Hello(_)) => {
                        return Err(Status::invalid_argument("a session carries exactly one Hello"));
                    }
                    None => return Err(Status::invalid_argument("device message without a body")),
                }
            }
        }
    }
}

#[tonic::async_trait]
impl DeviceService for DeviceSvc {
    type SessionStream = ReceiverStream<Result<pb::ServerToDevice, Status>>;
    type DownloadStream = ReceiverStream<Result<pb::DownloadChunk, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::DeviceToServer>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(run_session(self.shared.clone(), request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
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
        if shared.store.directive(&device, &release_id)?.is_none() {
            return Err(Status::permission_denied(format!(
                "no directive for device {device} names release {release_id}"
            )));
        }
        if req.start_chunk >= release.chunk_count {
            return Err(Status::out_of_range(format!(
                "start_chunk {} is past the last chunk ({} chunks)",
                req.start_chunk, release.chunk_count
            )));
        }
        let permit = shared.downloads.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted("too many concurrent downloads; retry later")
        })?;
        let (tx, rx) = mpsc::channel(shared.limits.download_buffer_chunks.max(1));
        let store = shared.store.clone();
        let upload = crate::store::UploadId(release.upload_id);
        let mut shutdown = shared.shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            for index in req.start_chunk..release.chunk_count {
                let item = match store.chunk(upload, index) {
                    Ok(Some(data)) => Ok(pb::DownloadChunk { index, data }),
                    Ok(None) => Err(Status::internal(format!("chunk {index} missing"))),
                    Err(e) => Err(e.into()),
                };
                let failed = item.is_err();
                tokio::select! {
                    sent = tx.send(item) => if sent.is_err() || failed { return },
                    _ = crate::stopped(&mut shutdown) => {
                        let _ = tx.try_send(Err(CloseReason::Shutdown.status()));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
