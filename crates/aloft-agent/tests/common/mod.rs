//! Fixtures for the agent's tests: offline keys, a TrustRoot, signed and
//! encrypted releases, the real server in-process, TLS from rcgen, and
//! devices on the simulated NOR flash.
#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use aloft_agent::{Agent, AgentConfig, BackoffConfig, Identity};
use aloft_device::sim::SimFlash;
use aloft_device::{Device, DeviceConfig, Layout, Partition};
use aloft_protocol::envelope;
use aloft_protocol::keys::Domain;
use aloft_protocol::payload::{self, PayloadParams};
use aloft_protocol::pb::admin_service_client::AdminServiceClient;
use aloft_protocol::prost::Message as _;
use aloft_protocol::trust::VerifiedTrustRoot;
use aloft_protocol::{
    ContentKey, DeviceId, Digest, NoncePrefix, PublicKey, SecretKey, UnixTime, pb,
};
use aloft_server::{RunningServer, ServerConfig, TlsFiles};
use tonic::Request;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub type Flash = SimFlash<4, 4096>;

pub const SECTOR: u32 = 4096;
pub const SLOT: u32 = 16 * SECTOR;
pub const CHUNK: u32 = 256;

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn layout() -> Layout {
    Layout {
        state: Partition::new(0, STATE, SECTOR),
        slot_a: Partition::new(STATE, SLOT, SECTOR),
        slot_b: Partition::new(STATE + SLOT, SLOT, SECTOR),
        manifest_area: SECTOR,
        trust_area: SECTOR,
    }
}

/// The state partition: a sector per log half and per TrustRoot copy.
pub const STATE: u32 = 4 * SECTOR;

pub fn new_flash() -> Flash {
    Flash::uniform(((STATE + 2 * SLOT) / SECTOR) as usize)
}

pub fn device_config() -> DeviceConfig {
    DeviceConfig::new("sensor", "rev-a")
}

pub fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).unwrap();
    b
}

/// The operator's offline keys.
pub struct Keys {
    pub root: SecretKey,
    pub release: SecretKey,
}

/// A release as the release tooling makes it.
pub struct Release {
    pub id: String,
    pub manifest: pb::SignedEnvelope,
    pub key: ContentKey,
    pub payload: Vec<u8>,
    pub image: Vec<u8>,
    pub params: PayloadParams,
}

impl Release {
    pub fn manifest_bytes(&self) -> Vec<u8> {
        self.manifest.encode_to_vec()
    }

    /// The encrypted chunks (ciphertext then tag each).
    pub fn chunks(&self) -> Vec<Vec<u8>> {
        let n = self.params.image_len.div_ceil(u64::from(CHUNK)) as usize;
        let mut out = Vec::new();
        let mut at = 0;
        for i in 0..n {
            let plain = if i + 1 == n {
                self.image.len() - i * CHUNK as usize
            } else {
                CHUNK as usize
            };
            out.push(self.payload[at..at + plain + 16].to_vec());
            at += plain + 16;
        }
        out
    }
}

impl Keys {
    pub fn new() -> Self {
        Self {
            root: SecretKey::generate(),
            release: SecretKey::generate(),
        }
    }

    pub fn trust_root(&self, server: &PublicKey) -> pb::SignedEnvelope {
        let tr = pb::TrustRoot {
            version: 1,
            expires_at: now() + 86_400,
            root_keys: vec![self.root.public_key().to_sec1_compressed().to_vec()],
            root_threshold: 1,
            release_keys: vec![self.release.public_key().to_sec1_compressed().to_vec()],
            release_threshold: 1,
            server_keys: vec![server.to_sec1_compressed().to_vec()],
        };
        envelope::seal(&tr, Domain::TrustRoot, &[&self.root])
    }

    pub fn verified(&self, server: &PublicKey) -> VerifiedTrustRoot {
        VerifiedTrustRoot::trust_on_first_use(&self.trust_root(server), UnixTime(now())).unwrap()
    }

    /// A release signed by `signer` (normally the release key).
    pub fn release_signed_by(
        &self,
        signer: &SecretKey,
        version: &str,
        security_version: u32,
        image_len: usize,
    ) -> Release {
        release_signed_at(signer, version, security_version, image_len, now())
    }

    pub fn release(&self, version: &str, image_len: usize) -> Release {
        self.release_signed_by(&self.release, version, 1, image_len)
    }
}

/// A release signed by `signer`, created at `created_at` and valid for a day.
pub fn release_signed_at(
    signer: &SecretKey,
    version: &str,
    security_version: u32,
    image_len: usize,
    created_at: u64,
) -> Release {
    {
        let id = format!("sensor-{version}");
        let seed = rand_bytes::<1>()[0] as usize;
        let image: Vec<u8> = (0..image_len).map(|i| (i * 7 + seed) as u8).collect();
        let nonce_prefix: [u8; 7] = rand_bytes();
        let manifest = pb::ReleaseManifest {
            release_id: id.clone(),
            product: "sensor".into(),
            hardware: vec!["rev-a".into()],
            version: version.into(),
            security_version,
            image_len: image_len as u64,
            image_sha256: Digest::of(&image).as_bytes().to_vec(),
            chunk_size: CHUNK,
            nonce_prefix: nonce_prefix.to_vec(),
            created_at,
            expires_at: created_at + 86_400,
            ..Default::default()
        };
        let key = ContentKey::from_bytes(rand_bytes());
        let params = PayloadParams {
            image_len: image_len as u64,
            chunk_size: CHUNK,
            nonce_prefix: NoncePrefix::from_bytes(nonce_prefix),
            image_digest: Digest::of(&image),
        };
        let payload = payload::encrypt_payload(&key, &params, &image).unwrap();
        Release {
            id,
            manifest: envelope::seal(&manifest, Domain::ReleaseManifest, &[signer]),
            key,
            payload,
            image,
            params,
        }
    }
}

/// A CA and a localhost certificate it issued.
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
    std::fs::create_dir_all(dir).unwrap();
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

/// The real server in a temp dir, with a TrustRoot installed.
pub struct Harness {
    pub server: RunningServer,
    pub dir: tempfile::TempDir,
    pub keys: Keys,
    pub ca_pem: Option<String>,
    pub admin: AdminServiceClient<Channel>,
    pub trust: VerifiedTrustRoot,
    /// Held for the test: one server per test process at a time (sled 0.34's
    /// `flush_async` can deadlock when several databases in one process
    /// flush concurrently, spacejam/sled#1241).
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// Ends the test process if it is still running after three minutes: a hang
/// (for instance a storage deadlock in the server) fails the run with a
/// message instead of stalling CI.
pub fn watchdog() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(180));
            eprintln!("test process still running after 180 s: aborting it as hung");
            std::process::exit(101);
        });
    });
}

impl Harness {
    pub async fn start(tls: bool) -> Self {
        Self::start_with(tls, |_| {}).await
    }

    /// [`Harness::start`], with `tweak` applied to the server's config last.
    pub async fn start_with(tls: bool, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        watchdog();
        let serial = SERIAL.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
        // Sessions end quickly so devices re-hello (offers come with hellos).
        config.limits.next_check_in_secs = 1;
        let ca_pem = tls.then(|| {
            let t = make_tls(&dir.path().join("tls"));
            config.tls = Some(t.files);
            t.ca_pem
        });
        tweak(&mut config);
        let server = aloft_server::start(config).await.unwrap();
        let endpoint = match &ca_pem {
            Some(ca) => {
                Endpoint::from_shared(format!("https://localhost:{}", server.local_addr().port()))
                    .unwrap()
                    .tls_config(
                        ClientTlsConfig::new()
                            .ca_certificate(Certificate::from_pem(ca))
                            .domain_name("localhost"),
                    )
                    .unwrap()
            }
            None => Endpoint::from_shared(format!("http://{}", server.local_addr())).unwrap(),
        };
        let admin = AdminServiceClient::new(endpoint.connect().await.unwrap());
        let keys = Keys::new();
        let env = keys.trust_root(&server.server_public_key());
        let trust = keys.verified(&server.server_public_key());
        let h = Self {
            server,
            dir,
            keys,
            ca_pem,
            admin,
            trust,
            _serial: serial,
        };
        h.admin
            .clone()
            .set_trust_root(h.authed(pb::SetTrustRootRequest {
                trust_root: Some(env),
            }))
            .await
            .unwrap();
        h
    }

    pub fn authed<T>(&self, message: T) -> Request<T> {
        authed(message, self.server.admin_token())
    }

    pub fn url(&self) -> String {
        match self.ca_pem {
            Some(_) => format!("https://localhost:{}", self.server.local_addr().port()),
            None => format!("http://{}", self.server.local_addr()),
        }
    }

    pub async fn upload(&self, release: &Release) {
        upload_ok(&self.admin, self.server.admin_token(), release).await;
    }

    pub async fn rollout(&self, rollout: &str, release: &str, selector: &str) {
        self.admin
            .clone()
            .create_rollout(self.authed(pb::CreateRolloutRequest {
                rollout_id: rollout.into(),
                release_id: release.into(),
                selector: selector.into(),
                ..Default::default()
            }))
            .await
            .unwrap();
    }

    pub async fn device_info(&self, id: &str) -> pb::DeviceInfo {
        self.admin
            .clone()
            .get_device(self.authed(pb::GetDeviceRequest {
                device_id: id.into(),
            }))
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits until `pred` holds for the device's record (or panics).
    pub async fn wait_for(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&pb::DeviceInfo) -> bool,
    ) -> pb::DeviceInfo {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let info = self.device_info(id).await;
            if pred(&info) {
                return info;
            }
            assert!(Instant::now() < until, "{id}: never {what}; last {info:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Registers a device and provisions its flash with `factory` in slot A.
    pub async fn provision(&self, id: &str, factory: &Release) -> (Identity, Device<Flash>) {
        let key = SecretKey::generate();
        self.admin
            .clone()
            .register_device(self.authed(pb::RegisterDeviceRequest {
                device_id: id.into(),
                public_key: key.public_key().to_sec1_compressed().to_vec(),
                attributes: Some(pb::DeviceAttributes {
                    product: "sensor".into(),
                    hardware: "rev-a".into(),
                    region: "eu".into(),
                    time_zone: "Europe/Berlin".into(),
                    tags: vec![],
                    test_device: false,
                }),
                factory_version: "1.0.0".into(),
                ..Default::default()
            }))
            .await
            .unwrap();
        let attributes = BTreeMap::from([
            ("product".to_owned(), "sensor".to_owned()),
            ("hardware".to_owned(), "rev-a".to_owned()),
        ]);
        let identity = Identity::new(
            DeviceId::new(id).unwrap(),
            key,
            self.url(),
            self.ca_pem.clone(),
            self.trust.clone(),
            attributes,
        )
        .unwrap();
        let device = Device::provision(
            new_flash(),
            layout(),
            device_config(),
            &self.trust,
            &factory.image,
            &factory.manifest_bytes(),
        )
        .unwrap();
        (identity, device)
    }
}

/// Uploads `release`; the server's answer.
pub async fn upload(
    admin: &AdminServiceClient<Channel>,
    token: &str,
    release: &Release,
) -> Result<pb::ReleaseInfo, tonic::Status> {
    use pb::upload_release_request::Part;
    let mut messages = vec![pb::UploadReleaseRequest {
        part: Some(Part::Header(pb::UploadReleaseHeader {
            manifest: Some(release.manifest.clone()),
            content_key: release.key.expose().to_vec(),
            payload_len: release.payload.len() as u64,
        })),
    }];
    for p in release.payload.chunks(64 * 1024) {
        messages.push(pb::UploadReleaseRequest {
            part: Some(Part::Payload(p.to_vec())),
        });
    }
    admin
        .clone()
        .upload_release(authed(tokio_stream::iter(messages), token))
        .await
        .map(tonic::Response::into_inner)
}

/// Uploads `release`, which must be accepted.
pub async fn upload_ok(admin: &AdminServiceClient<Channel>, token: &str, release: &Release) {
    upload(admin, token, release).await.unwrap();
}

/// Uploads `release`, which must be refused; the refusal.
pub async fn upload_err(
    admin: &AdminServiceClient<Channel>,
    token: &str,
    release: &Release,
) -> tonic::Status {
    upload(admin, token, release).await.unwrap_err()
}

/// Fast timings for tests.
pub fn fast_config() -> AgentConfig {
    AgentConfig {
        heartbeat: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(5),
        message_timeout: Duration::from_secs(10),
        backoff: BackoffConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(400),
        },
        report_ack_wait: Duration::from_secs(2),
        ..AgentConfig::default()
    }
}

/// Boots `device` (the boot decision) and makes an agent for what booted.
pub fn boot(
    identity: &Identity,
    mut device: Device<Flash>,
) -> (Agent<Flash>, aloft_device::Booted) {
    let booted = device.boot().unwrap();
    let agent = Agent::new(identity.clone(), device, fast_config()).unwrap();
    (agent, booted)
}
