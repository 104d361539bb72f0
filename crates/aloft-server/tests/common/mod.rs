//! Shared fixtures for the server's gRPC tests: keys, a TrustRoot, releases
//! made with aloft-protocol's signing functions, TLS material from rcgen, and a
//! hand-rolled device client.
#![allow(dead_code, missing_docs)]

use std::path::Path;
use std::time::Duration;

use aloft_protocol::envelope;
use aloft_protocol::keys::Domain;
use aloft_protocol::payload::{self, PayloadParams};
use aloft_protocol::pb::admin_service_client::AdminServiceClient;
use aloft_protocol::pb::device_service_client::DeviceServiceClient;
use aloft_protocol::pb::server_to_device::Kind;
use aloft_protocol::pb::{self, device_message::Body};
use aloft_protocol::trust::VerifiedTrustRoot;
use aloft_protocol::{ContentKey, DeviceId, Digest, NoncePrefix, SecretKey, UnixTime, device_msg};
use aloft_server::{RunningServer, ServerConfig, TlsFiles};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status, Streaming};

#[path = "../support/pg.rs"]
pub mod pg;

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Offline keys of the test "operator".
pub struct Keys {
    pub root: SecretKey,
    pub release: SecretKey,
}

impl Keys {
    pub fn new() -> Self {
        Self {
            root: SecretKey::generate(),
            release: SecretKey::generate(),
        }
    }

    /// A TrustRoot listing the server's key, signed by the root key.
    pub fn trust_root(
        &self,
        server: &aloft_protocol::PublicKey,
        version: u32,
    ) -> pb::SignedEnvelope {
        let tr = pb::TrustRoot {
            version,
            expires_at: now() + 86_400,
            root_keys: vec![self.root.public_key().to_sec1_compressed().to_vec()],
            root_threshold: 1,
            release_keys: vec![self.release.public_key().to_sec1_compressed().to_vec()],
            release_threshold: 1,
            server_keys: vec![server.to_sec1_compressed().to_vec()],
        };
        envelope::seal(&tr, Domain::TrustRoot, &[&self.root])
    }

    pub fn verified_trust(&self, server: &aloft_protocol::PublicKey) -> VerifiedTrustRoot {
        VerifiedTrustRoot::trust_on_first_use(&self.trust_root(server, 1), UnixTime(now())).unwrap()
    }

    /// A release signed by the release key.
    pub fn release(&self, id: &str, version: &str, image_len: usize, expires_at: u64) -> Release {
        let image: Vec<u8> = (0..image_len).map(|i| (i * 7 + 3) as u8).collect();
        let nonce_prefix: [u8; 7] = rand_bytes();
        let manifest = pb::ReleaseManifest {
            release_id: id.into(),
            product: "sensor".into(),
            hardware: vec!["rev-a".into()],
            version: version.into(),
            security_version: 1,
            image_len: image_len as u64,
            image_sha256: Digest::of(&image).as_bytes().to_vec(),
            chunk_size: 256,
            nonce_prefix: nonce_prefix.to_vec(),
            created_at: now(),
            expires_at,
            ..Default::default()
        };
        let key = ContentKey::from_bytes(rand_bytes());
        let params = PayloadParams {
            image_len: image_len as u64,
            chunk_size: 256,
            nonce_prefix: NoncePrefix::from_bytes(nonce_prefix),
            image_digest: Digest::of(&image),
        };
        let payload = payload::encrypt_payload(&key, &params, &image).unwrap();
        Release {
            manifest: envelope::seal(&manifest, Domain::ReleaseManifest, &[&self.release]),
            key,
            payload,
            image,
            params,
        }
    }
}

pub struct Release {
    pub manifest: pb::SignedEnvelope,
    pub key: ContentKey,
    pub payload: Vec<u8>,
    pub image: Vec<u8>,
    pub params: PayloadParams,
}

pub fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).unwrap();
    b
}

/// TLS material: a CA and a localhost certificate it signed.
pub struct Tls {
    pub ca_pem: String,
    pub files: TlsFiles,
}

pub fn make_tls(dir: &Path) -> Tls {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let files = TlsFiles {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    Tls {
        ca_pem: ca.pem(),
        files,
    }
}

/// A running server in a temp dir and a channel to it.
pub struct Harness {
    pub server: RunningServer,
    pub dir: tempfile::TempDir,
    pub channel: Channel,
    pub keys: Keys,
    /// Where the server's records live.
    pub store: TestStore,
}

/// The store a test's servers run on: sled under their data directory, or
/// with `ALOFT_TEST_STORE=postgres` one PostgreSQL database for the whole
/// test (servers it restarts find their records), dropped with this value.
pub struct TestStore {
    db: Option<pg::TestDb>,
}

impl TestStore {
    /// As `ALOFT_TEST_STORE` says (`cargo xtask ci` runs both).
    pub fn new() -> Self {
        Self {
            db: pg::selected().then(pg::TestDb::migrated),
        }
    }

    /// Always sled (a test of sled itself).
    pub fn sled() -> Self {
        Self { db: None }
    }

    /// For `ServerConfig::store`.
    pub fn backend(&self) -> aloft_server::StoreBackend {
        match &self.db {
            Some(db) => aloft_server::StoreBackend::Postgres(db.url.clone()),
            None => aloft_server::StoreBackend::Sled,
        }
    }
}

pub async fn start_with(tls: bool, tweak: impl FnOnce(&mut ServerConfig)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
    let ca = if tls {
        let t = make_tls(dir.path());
        config.tls = Some(t.files);
        Some(t.ca_pem)
    } else {
        None
    };
    // The same tests on either backend (`cargo xtask ci` runs both).
    let store = TestStore::new();
    config.store = store.backend();
    tweak(&mut config);
    let server = aloft_server::start(config).await.unwrap();
    let channel = connect(server.local_addr(), ca.as_deref()).await;
    Harness {
        server,
        dir,
        channel,
        keys: Keys::new(),
        store,
    }
}

pub async fn start(tls: bool) -> Harness {
    start_with(tls, |_| {}).await
}

pub async fn connect(addr: std::net::SocketAddr, ca_pem: Option<&str>) -> Channel {
    let endpoint = match ca_pem {
        Some(ca) => Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .domain_name("localhost"),
            )
            .unwrap(),
        None => Endpoint::from_shared(format!("http://{addr}")).unwrap(),
    };
    endpoint
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

/// A plaintext channel to `addr` whose connection comes from `local` (any
/// 127.0.0.0/8 address), to test per-address limits.
pub async fn connect_from(addr: std::net::SocketAddr, local: std::net::IpAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .local_address(Some(local))
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

impl Harness {
    pub fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel.clone())
    }

    pub fn token(&self) -> String {
        self.server.admin_token().to_owned()
    }

    pub async fn install_trust_root(&self) {
        let env = self.keys.trust_root(&self.server.server_public_key(), 1);
        self.admin()
            .set_trust_root(authed(
                pb::SetTrustRootRequest {
                    trust_root: Some(env),
                },
                &self.token(),
            ))
            .await
            .unwrap();
    }

    pub async fn register(&self, id: &str) -> TestDevice {
        let device = TestDevice::new(id);
        self.admin()
            .register_device(authed(device.register_request(), &self.token()))
            .await
            .unwrap();
        device
    }

    pub async fn upload(&self, release: &Release, part: usize) -> Result<pb::ReleaseInfo, Status> {
        upload(
            &self.admin(),
            &self.token(),
            release,
            release.payload.len() as u64,
            part,
        )
        .await
    }

    pub async fn rollout(&self, rollout: &str, release: &str, selector: &str) {
        self.admin()
            .create_rollout(authed(
                pb::CreateRolloutRequest {
                    rollout_id: rollout.into(),
                    release_id: release.into(),
                    selector: selector.into(),
                    ..Default::default()
                },
                &self.token(),
            ))
            .await
            .unwrap();
    }

    pub async fn device_info(&self, id: &str) -> pb::DeviceInfo {
        self.admin()
            .get_device(authed(
                pb::GetDeviceRequest {
                    device_id: id.into(),
                },
                &self.token(),
            ))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn releases(&self) -> Vec<pb::ReleaseInfo> {
        self.admin()
            .list_releases(authed(pb::ListReleasesRequest {}, &self.token()))
            .await
            .unwrap()
            .into_inner()
            .releases
    }
}

pub async fn upload(
    admin: &AdminServiceClient<Channel>,
    token: &str,
    release: &Release,
    payload_len: u64,
    part: usize,
) -> Result<pb::ReleaseInfo, Status> {
    use pb::upload_release_request::Part;
    let mut messages = vec![pb::UploadReleaseRequest {
        part: Some(Part::Header(pb::UploadReleaseHeader {
            manifest: Some(release.manifest.clone()),
            content_key: release.key.expose().to_vec(),
            payload_len,
        })),
    }];
    for p in release.payload.chunks(part) {
        messages.push(pb::UploadReleaseRequest {
            part: Some(Part::Payload(p.to_vec())),
        });
    }
    admin
        .clone()
        .upload_release(authed(tokio_stream::iter(messages), token))
        .await
        .map(|r| r.into_inner())
}

/// A device with its own key pair.
pub struct TestDevice {
    pub id: DeviceId,
    pub key: SecretKey,
    pub version: String,
}

impl TestDevice {
    pub fn new(id: &str) -> Self {
        Self {
            id: DeviceId::new(id).unwrap(),
            key: SecretKey::generate(),
            version: "1.0.0".into(),
        }
    }

    pub fn register_request(&self) -> pb::RegisterDeviceRequest {
        pb::RegisterDeviceRequest {
            device_id: self.id.to_string(),
            public_key: self.key.public_key().to_sec1_compressed().to_vec(),
            attributes: Some(pb::DeviceAttributes {
                product: "sensor".into(),
                hardware: "rev-a".into(),
                region: "eu".into(),
                time_zone: "Europe/Berlin".into(),
                tags: vec![],
                test_device: false,
            }),
            factory_version: self.version.clone(),
            ..Default::default()
        }
    }

    pub fn state(&self) -> pb::DeviceState {
        pb::DeviceState {
            firmware_version: self.version.clone(),
            security_version: 1,
            active_slot: pb::Slot::A as i32,
            confirmed: true,
            ..Default::default()
        }
    }

    /// Opens a session and reads the challenge.
    pub async fn open(&self, channel: &Channel) -> Result<Conn, Status> {
        let (tx, rx) = mpsc::channel(16);
        let mut inbound = DeviceServiceClient::new(channel.clone())
            .session(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let challenge = match inbound.message().await?.and_then(|m| m.kind) {
            Some(Kind::Challenge(c)) => c.nonce,
            other => panic!("expected a challenge, got {other:?}"),
        };
        Ok(Conn {
            tx,
            inbound,
            challenge,
            seq: 0,
            nonce: rand_bytes(),
            id: self.id.clone(),
            key: self.key.clone(),
        })
    }

    /// Opens a session, says hello, and reads the Welcome.
    pub async fn connect(
        &self,
        channel: &Channel,
        reports: Vec<pb::Report>,
    ) -> Result<(Conn, pb::Welcome), Status> {
        let mut conn = self.open(channel).await?;
        let hello = pb::Hello {
            device_nonce: conn.nonce.to_vec(),
            state: Some(self.state()),
            reports,
        };
        conn.send(Body::Hello(hello)).await;
        match conn.next().await? {
            Kind::Welcome(w) => Ok((conn, w)),
            other => panic!("expected welcome, got {other:?}"),
        }
    }
}

/// A live device session.
pub struct Conn {
    pub tx: mpsc::Sender<pb::DeviceToServer>,
    pub inbound: Streaming<pb::ServerToDevice>,
    pub challenge: Vec<u8>,
    pub seq: u64,
    pub nonce: [u8; 16],
    pub id: DeviceId,
    pub key: SecretKey,
}

impl Conn {
    /// Signs the next message with the next sequence number.
    pub fn seal(&mut self, body: Body) -> pb::SignedDeviceMessage {
        self.seq += 1;
        let m = pb::DeviceMessage {
            device_id: self.id.to_string(),
            challenge: self.challenge.clone(),
            seq: self.seq,
            body: Some(body),
        };
        device_msg::seal(&m, &self.key)
    }

    pub async fn send(&mut self, body: Body) {
        let signed = self.seal(body);
        self.send_raw(signed).await;
    }

    pub async fn send_raw(&self, signed: pb::SignedDeviceMessage) {
        let _ = self
            .tx
            .send(pb::DeviceToServer {
                signed: Some(signed),
            })
            .await;
    }

    /// The next server message, or the status that closed the stream.
    pub async fn next(&mut self) -> Result<Kind, Status> {
        match tokio::time::timeout(Duration::from_secs(10), self.inbound.message()).await {
            Err(_) => panic!("timed out waiting for the server"),
            Ok(Ok(Some(m))) => Ok(m.kind.expect("message kind")),
            Ok(Ok(None)) => Err(Status::cancelled("stream ended")),
            Ok(Err(s)) => Err(s),
        }
    }

    pub async fn report(
        &mut self,
        kind: pb::ReportKind,
        release: &str,
        id: &[u8],
    ) -> pb::ReportAck {
        let r = pb::Report {
            report_id: id.to_vec(),
            kind: kind as i32,
            release_id: release.into(),
            detail: String::new(),
        };
        self.send(Body::Report(r)).await;
        match self.next().await.unwrap() {
            Kind::ReportAck(a) => a,
            other => panic!("expected ack, got {other:?}"),
        }
    }
}

/// Downloads chunks of `release` from `start` with the session token.
pub async fn download(
    channel: &Channel,
    token: Option<&[u8]>,
    release: &str,
    start: u32,
) -> Result<Vec<pb::DownloadChunk>, Status> {
    let req = pb::DownloadRequest {
        release_id: release.into(),
        start_chunk: start,
    };
    let req = match token {
        Some(t) => authed(req, &hex::encode(t)),
        None => Request::new(req),
    };
    let mut stream = DeviceServiceClient::new(channel.clone())
        .download(req)
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(c) = stream.message().await? {
        out.push(c);
    }
    Ok(out)
}
