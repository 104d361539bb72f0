//! Refusals on the agent side, against a hostile server: a real tonic
//! server on 127.0.0.1 that holds the genuine server key (the worst case the
//! design allows) and sends misbound directives, a manifest signed with the
//! wrong role's key, expired directives, or tampered payload chunks.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aloft_agent::{Agent, Event, OfferError, SessionEnd};
use aloft_device::{Device, ReportKind};
use aloft_protocol::envelope;
use aloft_protocol::keys::Domain;
use aloft_protocol::pb::device_message::Body;
use aloft_protocol::pb::device_service_server::{DeviceService, DeviceServiceServer};
use aloft_protocol::pb::server_to_device::Kind;
use aloft_protocol::trust::VerifiedTrustRoot;
use aloft_protocol::{DeviceId, Digest, PublicKey, SecretKey, UnixTime, device_msg, pb, wrap};
use common::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attack {
    WrongDevice,
    WrongNonce,
    Expired,
    ManifestSignedByServerKey,
    TamperedChunk(u32),
}

struct Hostile {
    attack: Attack,
    server_key: SecretKey,
    device_key: PublicKey,
    release: Arc<Release>,
    /// Whether reports are acknowledged.
    ack: bool,
    reports: mpsc::UnboundedSender<pb::Report>,
    downloads: Arc<Mutex<Vec<u32>>>,
}

type Out = mpsc::Sender<Result<pb::ServerToDevice, Status>>;

async fn send(tx: &Out, kind: Kind) {
    let _ = tx.send(Ok(pb::ServerToDevice { kind: Some(kind) })).await;
}

impl Hostile {
    fn offer(&self, nonce: &[u8]) -> pb::Offer {
        let now = now();
        let device_id = match self.attack {
            Attack::WrongDevice => "dev-other",
            _ => "dev-x",
        };
        let nonce = match self.attack {
            Attack::WrongNonce => rand_bytes::<16>().to_vec(),
            _ => nonce.to_vec(),
        };
        let (server_time, expires_at) = match self.attack {
            Attack::Expired => (now - 7200, now - 3600),
            _ => (now, now + 3600),
        };
        let manifest = match self.attack {
            Attack::ManifestSignedByServerKey => envelope::seal(
                &pb::ReleaseManifest::decode_from(&self.release.manifest.payload),
                Domain::ReleaseManifest,
                &[&self.server_key],
            ),
            _ => self.release.manifest.clone(),
        };
        let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
        let wrapped = wrap::wrap_content_key(
            &self.release.key,
            &self.device_key,
            &DeviceId::new("dev-x").unwrap(),
            &mut rng,
        );
        let directive = pb::Directive {
            device_id: device_id.into(),
            device_nonce: nonce,
            manifest_digest: Digest::of(&manifest.payload).as_bytes().to_vec(),
            content_key: Some(wrapped.to_pb()),
            server_time,
            expires_at,
            rollout_id: "hostile".into(),
            payload_url: String::new(),
        };
        pb::Offer {
            directive: Some(envelope::seal(
                &directive,
                Domain::Directive,
                &[&self.server_key],
            )),
            manifest: Some(manifest),
        }
    }
}

trait DecodeFrom {
    fn decode_from(bytes: &[u8]) -> Self;
}

impl DecodeFrom for pb::ReleaseManifest {
    fn decode_from(bytes: &[u8]) -> Self {
        use aloft_protocol::prost::Message as _;
        Self::decode(bytes).unwrap()
    }
}

struct Svc(Arc<Hostile>);

#[tonic::async_trait]
impl DeviceService for Svc {
    type SessionStream = ReceiverStream<Result<pb::ServerToDevice, Status>>;
    type DownloadStream = ReceiverStream<Result<pb::DownloadChunk, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::DeviceToServer>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let this = self.0.clone();
        tokio::spawn(async move {
            send(
                &tx,
                Kind::Challenge(pb::Challenge {
                    nonce: rand_bytes::<32>().to_vec(),
                    server_time: now(),
                }),
            )
            .await;
            let Ok(Some(first)) = inbound.message().await else {
                return;
            };
            let hello = match device_msg::peek(&first.signed.unwrap()).unwrap().body {
                Some(Body::Hello(h)) => h,
                other => panic!("expected hello, got {other:?}"),
            };
            send(
                &tx,
                Kind::Welcome(pb::Welcome {
                    session_token: vec![7; 16],
                    server_time: now(),
                    next_check_in_secs: 30,
                }),
            )
            .await;
            send(&tx, Kind::Offer(this.offer(&hello.device_nonce))).await;
            while let Ok(Some(m)) = inbound.message().await {
                if let Some(Body::Report(r)) = device_msg::peek(&m.signed.unwrap()).unwrap().body {
                    let id = r.report_id.clone();
                    this.reports.send(r).unwrap();
                    if this.ack {
                        send(
                            &tx,
                            Kind::ReportAck(pb::ReportAck {
                                report_ids: vec![id],
                            }),
                        )
                        .await;
                    }
                    send(&tx, Kind::CheckInLater(pb::CheckInLater { after_secs: 0 })).await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn download(
        &self,
        request: Request<pb::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let req = request.into_inner();
        self.0.downloads.lock().unwrap().push(req.start_chunk);
        let (tx, rx) = mpsc::channel(4);
        let chunks = self.0.release.chunks();
        let attack = self.0.attack;
        tokio::spawn(async move {
            for (index, mut data) in chunks
                .into_iter()
                .enumerate()
                .skip(req.start_chunk as usize)
            {
                let index = index as u32;
                if attack == Attack::TamperedChunk(index) {
                    data[10] ^= 0x01;
                }
                if tx
                    .send(Ok(pb::DownloadChunk { index, data }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Outcome {
    agent: Agent<Flash>,
    events: Vec<Event>,
    reports: Vec<pb::Report>,
    downloads: Vec<u32>,
    before: Vec<u8>,
    release: Arc<Release>,
    trust: VerifiedTrustRoot,
}

async fn attack(attack: Attack, ack: bool) -> Outcome {
    let keys = Keys::new();
    let server_key = SecretKey::generate();
    let trust_env = keys.trust_root(&server_key.public_key());
    let trust = VerifiedTrustRoot::trust_on_first_use(&trust_env, UnixTime(now())).unwrap();
    let factory = keys.release("1.0.0", 8 * 1024);
    let release = Arc::new(keys.release("1.1.0", 6 * 1024));
    let device_key = SecretKey::generate();
    let (reports_tx, mut reports_rx) = mpsc::unbounded_channel();
    let downloads = Arc::new(Mutex::new(Vec::new()));
    let hostile = Arc::new(Hostile {
        attack,
        server_key,
        device_key: device_key.public_key(),
        release: release.clone(),
        ack,
        reports: reports_tx,
        downloads: downloads.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DeviceServiceServer::new(Svc(hostile)))
            .serve_with_incoming(incoming),
    );

    let attributes = [("product", "sensor"), ("hardware", "rev-a")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let identity = aloft_agent::Identity::new(
        DeviceId::new("dev-x").unwrap(),
        device_key,
        format!("http://{addr}"),
        None,
        trust.clone(),
        attributes,
    )
    .unwrap();
    let mut device = Device::provision(
        new_flash(),
        layout(),
        device_config(),
        &trust,
        &factory.image,
        &factory.manifest_bytes(),
    )
    .unwrap();
    let _booted = device.boot().unwrap();
    let before = device.flash().bytes().to_vec();
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = events.clone();
    let mut agent = Agent::new(identity, device, fast_config())
        .unwrap()
        .with_observer(move |e| sink.lock().unwrap().push(e.clone()));
    let end = tokio::time::timeout(
        Duration::from_secs(20),
        agent.check_in(std::future::pending()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(end, SessionEnd::CheckInAfter(Duration::ZERO));
    server.abort();
    let mut reports = Vec::new();
    while let Ok(r) = reports_rx.try_recv() {
        reports.push(r);
    }
    let events = events.lock().unwrap().clone();
    let downloads = downloads.lock().unwrap().clone();
    Outcome {
        agent,
        events,
        reports,
        downloads,
        before,
        release,
        trust,
    }
}

fn refusal(events: &[Event]) -> OfferError {
    events
        .iter()
        .find_map(|e| match e {
            Event::OfferRefused { error, .. } => Some(error.clone()),
            _ => None,
        })
        .expect("the offer was refused")
}

/// A refused offer: reported as INSTALL_FAILED naming the release and the
/// reason, nothing downloaded, not a byte of flash changed.
fn assert_refused_before_install(o: &Outcome, why: &str) {
    assert_eq!(o.reports.len(), 1, "one report");
    let r = &o.reports[0];
    assert_eq!(r.kind, pb::ReportKind::InstallFailed as i32);
    assert_eq!(r.release_id, o.release.id);
    assert!(r.detail.contains(why), "{:?} names {why:?}", r.detail);
    assert!(o.downloads.is_empty(), "nothing downloaded");
    assert_eq!(
        o.agent.device().flash().bytes(),
        &o.before[..],
        "flash untouched"
    );
    assert!(
        o.agent.pending_reports().is_empty(),
        "the acked report is gone"
    );
}

#[tokio::test]
async fn directive_for_another_device_is_refused() {
    let o = attack(Attack::WrongDevice, true).await;
    assert_eq!(
        refusal(&o.events),
        OfferError::Verify(aloft_protocol::Error::WrongDevice)
    );
    assert_refused_before_install(&o, "another device");
}

#[tokio::test]
async fn directive_with_a_wrong_nonce_is_refused() {
    let o = attack(Attack::WrongNonce, true).await;
    assert_eq!(
        refusal(&o.events),
        OfferError::Verify(aloft_protocol::Error::NonceMismatch)
    );
    assert_refused_before_install(&o, "nonce");
}

#[tokio::test]
async fn expired_directive_is_refused() {
    let o = attack(Attack::Expired, true).await;
    assert!(matches!(
        refusal(&o.events),
        OfferError::Verify(aloft_protocol::Error::Expired { .. })
    ));
    assert_refused_before_install(&o, "expired");
}

#[tokio::test]
async fn manifest_signed_by_a_non_release_key_is_refused() {
    let o = attack(Attack::ManifestSignedByServerKey, true).await;
    assert!(matches!(
        refusal(&o.events),
        OfferError::Verify(aloft_protocol::Error::ThresholdNotMet { valid: 0, .. })
    ));
    assert_refused_before_install(&o, "signature");
}

#[tokio::test]
async fn tampered_chunk_is_refused_and_nothing_of_it_is_written() {
    // Chunk 5 is in the middle of the first sector, which is erased by then.
    let o = attack(Attack::TamperedChunk(5), false).await;
    assert!(matches!(
        refusal(&o.events),
        OfferError::Chunk(aloft_device::Error::Protocol(
            aloft_protocol::Error::ChunkAuthentication { index: 5 }
        ))
    ));
    assert_eq!(o.downloads, [0]);
    let written: Vec<u32> = o
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ChunkWritten { index } => Some(*index),
            _ => None,
        })
        .collect();
    assert_eq!(written, [0, 1, 2, 3, 4]);
    let device = o.agent.device();
    let slot_b = layout().slot_b.offset as usize;
    let flash = device.flash().bytes();
    let c = CHUNK as usize;
    assert_eq!(&flash[slot_b..slot_b + 5 * c], &o.release.image[..5 * c]);
    assert!(
        flash[slot_b + 5 * c..slot_b + 6 * c]
            .iter()
            .all(|&b| b == 0xFF),
        "nothing of the tampered chunk reached flash"
    );
    // The install was abandoned with a durable INSTALL_FAILED report, sent
    // to the server; not acknowledged, so it stays in flash for the next hello.
    assert_eq!(device.install_progress(), None);
    let queued: Vec<_> = device.reports().collect();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].kind, ReportKind::InstallFailed);
    assert_eq!(o.reports.len(), 1);
    assert_eq!(o.reports[0].report_id, queued[0].id.to_bytes());
    assert_eq!(o.reports[0].kind, pb::ReportKind::InstallFailed as i32);
    // The old image still boots; nothing boots from the half-written slot.
    let _trust = o.trust.clone();
    let mut device = o.agent.into_device();
    let booted = device.boot().unwrap();
    assert_eq!((booted.slot, booted.trial), (aloft_device::Slot::A, false));
}
