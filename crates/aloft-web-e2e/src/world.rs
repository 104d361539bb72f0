//! The world the dashboard tests run in: the real server (TLS, gRPC port
//! and `--web` listener) in its own data directory, a TrustRoot, signed
//! and encrypted releases, operator and viewer tokens, and a simulated
//! fleet of real agents (aloft-sim) updating over real sockets.
//!
//! It is built once per test process and shared by every scenario, so the
//! browser tests pay for one server, one fleet and one browser.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aloft_agent::{AgentConfig, BackoffConfig};
use aloft_protocol::keys::Domain;
use aloft_protocol::payload::{self, PayloadParams};
use aloft_protocol::pb::admin_service_client::AdminServiceClient;
use aloft_protocol::{ContentKey, Digest, NoncePrefix, SecretKey, envelope, pb};
use aloft_server::{RunningServer, ServerConfig, TlsFiles};
use tonic::Request;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Plaintext bytes per payload chunk of the test releases.
const CHUNK: u32 = 1024;

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random number generator");
    b
}

/// A signed, encrypted release as the release tooling makes it.
pub struct Release {
    /// `sensor-VERSION`.
    pub id: String,
    /// The manifest, signed by the release key.
    pub manifest: pb::SignedEnvelope,
    /// The content key.
    pub key: ContentKey,
    /// The encrypted payload.
    pub payload: Vec<u8>,
}

impl Release {
    /// Signs and encrypts a `len`-byte image of `version` with `release_key`.
    pub fn new(release_key: &SecretKey, version: &str, len: usize) -> Self {
        let seed = random::<1>()[0] as usize;
        let image: Vec<u8> = (0..len).map(|i| (i * 31 + seed) as u8).collect();
        let nonce_prefix: [u8; 7] = random();
        let created = now();
        let id = format!("sensor-{version}");
        // Fields the manifest gains later keep their defaults.
        #[allow(clippy::needless_update)]
        let manifest = pb::ReleaseManifest {
            release_id: id.clone(),
            product: "sensor".into(),
            hardware: vec!["rev-a".into()],
            version: version.into(),
            security_version: 1,
            image_len: len as u64,
            image_sha256: Digest::of(&image).as_bytes().to_vec(),
            chunk_size: CHUNK,
            nonce_prefix: nonce_prefix.to_vec(),
            created_at: created,
            expires_at: created + 30 * 86_400,
            ..Default::default()
        };
        let key = ContentKey::from_bytes(random());
        let params = PayloadParams {
            image_len: len as u64,
            chunk_size: CHUNK,
            nonce_prefix: NoncePrefix::from_bytes(nonce_prefix),
            image_digest: Digest::of(&image),
        };
        let payload =
            payload::encrypt_payload(&key, &params, &image).expect("encrypting a test image");
        Self {
            id,
            manifest: envelope::seal(&manifest, Domain::ReleaseManifest, &[release_key]),
            key,
            payload,
        }
    }

    /// As a factory bundle (what a device has in slot A).
    pub fn bundle(&self) -> pb::ReleaseBundle {
        pb::ReleaseBundle {
            manifest: Some(self.manifest.clone()),
            content_key: self.key.expose().to_vec(),
            payload: self.payload.clone(),
        }
    }
}

/// What to build.
#[derive(Clone, Debug)]
pub struct WorldConfig {
    /// Serve over TLS (the browser accepts the test CA's certificate).
    pub tls: bool,
    /// Simulated devices (0: no fleet).
    pub devices: usize,
    /// Percentage of them whose firmware never confirms an update (they
    /// roll back).
    pub never_confirm_pct: f64,
}

/// The running world. Dropping it stops the fleet and the server.
pub struct World {
    /// The runtime the server and the fleet run on.
    pub rt: tokio::runtime::Runtime,
    server: Option<RunningServer>,
    _dir: tempfile::TempDir,
    /// An admin client on the gRPC port.
    pub admin: AdminServiceClient<Channel>,
    /// The bootstrap admin token.
    pub admin_token: String,
    /// A token with the operator role.
    pub operator_token: String,
    /// A token with the viewer role.
    pub viewer_token: String,
    /// The dashboard's URL, ending in `/`.
    pub web_url: String,
    /// The release key's id (what the releases page lists as signer).
    pub release_key_id: Vec<u8>,
    /// 1.0.0 (the factory image), 1.1.0, 1.2.0: all uploaded but 1.0.0.
    pub releases: Vec<Release>,
    /// Device ids of the fleet.
    pub device_ids: Vec<String>,
    fleet: Option<tokio::task::JoinHandle<()>>,
}

fn tls_files(dir: &std::path::Path) -> (String, TlsFiles) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("self-signed CA");
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("certificate parameters")
        .signed_by(&key, &ca)
        .expect("server certificate");
    let files = TlsFiles {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.cert, cert.pem()).expect("writing the certificate");
    std::fs::write(&files.key, key.serialize_pem()).expect("writing the key");
    (ca.pem(), files)
}

/// `message` with `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a token is ASCII"),
    );
    r
}

async fn upload(admin: &AdminServiceClient<Channel>, token: &str, release: &Release) {
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
        .unwrap_or_else(|s| panic!("uploading {}: {s}", release.id));
}

async fn token(
    admin: &AdminServiceClient<Channel>,
    admin_token: &str,
    name: &str,
    role: pb::Role,
) -> String {
    admin
        .clone()
        .create_token(authed(
            pb::CreateTokenRequest {
                name: name.into(),
                role: role as i32,
            },
            admin_token,
        ))
        .await
        .unwrap_or_else(|s| panic!("creating the {name} token: {s}"))
        .into_inner()
        .token
}

impl World {
    /// Starts everything and waits until every device is online on 1.0.0.
    pub fn start(config: WorldConfig) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let p = rt.block_on(Self::build(&config));
        let world = World {
            rt,
            server: p.server,
            _dir: p._dir,
            admin: p.admin,
            admin_token: p.admin_token,
            operator_token: p.operator_token,
            viewer_token: p.viewer_token,
            web_url: p.web_url,
            release_key_id: p.release_key_id,
            releases: p.releases,
            device_ids: p.device_ids,
            fleet: p.fleet,
        };
        if config.devices > 0 {
            world.wait_until(
                "every device online on 1.0.0",
                Duration::from_secs(60),
                |w| {
                    let devices = w.devices();
                    (devices.len() == config.devices
                        && devices
                            .iter()
                            .all(|d| d.connected && d.firmware_version == "1.0.0"))
                    .then_some(())
                },
            );
        }
        world
    }

    async fn build(config: &WorldConfig) -> PartialWorld {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut server_config = ServerConfig::new(
            dir.path().join("data"),
            "127.0.0.1:0".parse().expect("an address"),
        );
        server_config.web = Some("127.0.0.1:0".parse().expect("an address"));
        let ca = config.tls.then(|| {
            let (ca, files) = tls_files(dir.path());
            server_config.tls = Some(files);
            ca
        });
        let limits = &mut server_config.limits;
        limits.rollout_tick = Duration::from_millis(200);
        limits.rollout_sample_interval = Duration::from_secs(1);
        limits.check_in_jitter_secs = 0;
        limits.notify_jitter = Duration::from_millis(300);
        let server = aloft_server::start(server_config)
            .await
            .expect("starting the server");
        let scheme = if config.tls { "https" } else { "http" };
        let grpc_url = format!("{scheme}://localhost:{}", server.local_addr().port());
        let web: SocketAddr = server.web_addr().expect("the web listener was asked for");
        let web_url = format!("{scheme}://localhost:{}/", web.port());
        let mut endpoint = Endpoint::from_shared(grpc_url.clone()).expect("the server URL");
        if let Some(ca) = &ca {
            endpoint = endpoint
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(ca))
                        .domain_name("localhost"),
                )
                .expect("TLS settings");
        }
        let admin =
            AdminServiceClient::new(endpoint.connect().await.expect("connecting to the server"));
        let admin_token = server.admin_token().to_owned();

        let root = SecretKey::generate();
        let release_key = SecretKey::generate();
        let trust_root = pb::TrustRoot {
            version: 1,
            expires_at: now() + 365 * 86_400,
            root_keys: vec![root.public_key().to_sec1_compressed().to_vec()],
            root_threshold: 1,
            release_keys: vec![release_key.public_key().to_sec1_compressed().to_vec()],
            release_threshold: 1,
            server_keys: vec![server.server_public_key().to_sec1_compressed().to_vec()],
        };
        admin
            .clone()
            .set_trust_root(authed(
                pb::SetTrustRootRequest {
                    trust_root: Some(envelope::seal(&trust_root, Domain::TrustRoot, &[&root])),
                },
                &admin_token,
            ))
            .await
            .expect("installing the TrustRoot");

        let releases: Vec<Release> = ["1.0.0", "1.1.0", "1.2.0"]
            .iter()
            .map(|v| Release::new(&release_key, v, 24 * 1024))
            .collect();
        for r in &releases[1..] {
            upload(&admin, &admin_token, r).await;
        }
        let operator_token = token(
            &admin,
            &admin_token,
            "dashboard-operator",
            pb::Role::Operator,
        )
        .await;
        let viewer_token = token(&admin, &admin_token, "dashboard-viewer", pb::Role::Viewer).await;

        let device_ids: Vec<String> = (0..config.devices)
            .map(|i| format!("dash-{i:05}"))
            .collect();
        let fleet = (config.devices > 0).then(|| {
            let mut sim = aloft_sim::SimConfig::new(
                config.devices,
                grpc_url.clone(),
                aloft_sim::Identities::Register {
                    admin_token: admin_token.clone(),
                    id_prefix: "dash-".into(),
                },
                releases[0].bundle(),
            );
            sim.ca_pem = ca.clone();
            sim.never_confirm_pct = config.never_confirm_pct;
            sim.duration = Duration::from_secs(900);
            sim.trial_run = Duration::from_millis(300);
            sim.agent = AgentConfig {
                heartbeat: Duration::from_millis(500),
                backoff: BackoffConfig {
                    initial: Duration::from_millis(100),
                    max: Duration::from_millis(800),
                },
                ..AgentConfig::default()
            };
            tokio::spawn(async move {
                if let Err(e) = aloft_sim::run(sim).await {
                    eprintln!("the simulated fleet stopped: {e}");
                }
            })
        });
        PartialWorld {
            server: Some(server),
            _dir: dir,
            admin,
            admin_token,
            operator_token,
            viewer_token,
            web_url,
            release_key_id: release_key.public_key().key_id().as_bytes().to_vec(),
            releases,
            device_ids,
            fleet,
        }
    }

    /// Runs `fut` on the world's runtime.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.rt.block_on(fut)
    }

    /// Polls `probe` every 100 ms until it returns `Some`, or panics naming
    /// `what` after `timeout`.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        let until = Instant::now() + timeout;
        loop {
            if let Some(v) = probe(self) {
                return v;
            }
            assert!(
                Instant::now() < until,
                "timed out after {timeout:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every device record.
    pub fn devices(&self) -> Vec<pb::DeviceInfo> {
        self.block_on(async {
            let mut out = Vec::new();
            let mut after = String::new();
            loop {
                let page = self
                    .admin
                    .clone()
                    .list_devices(authed(
                        pb::ListDevicesRequest {
                            after: after.clone(),
                            limit: 500,
                            ..Default::default()
                        },
                        &self.admin_token,
                    ))
                    .await
                    .expect("listing devices")
                    .into_inner();
                out.extend(page.devices);
                if page.next_after.is_empty() {
                    return out;
                }
                after = page.next_after;
            }
        })
    }

    /// A rollout as the server has it.
    pub fn rollout(&self, id: &str) -> pb::RolloutInfo {
        self.block_on(self.admin.clone().get_rollout(authed(
            pb::GetRolloutRequest {
                rollout_id: id.into(),
            },
            &self.admin_token,
        )))
        .unwrap_or_else(|s| panic!("reading rollout {id}: {s}"))
        .into_inner()
    }

    /// A rollout's history as the server has it.
    pub fn history(&self, id: &str) -> Vec<pb::RolloutSample> {
        self.block_on(self.admin.clone().get_rollout_history(authed(
            pb::GetRolloutHistoryRequest {
                rollout_id: id.into(),
                ..Default::default()
            },
            &self.admin_token,
        )))
        .unwrap_or_else(|s| panic!("reading the history of {id}: {s}"))
        .into_inner()
        .samples
    }

    /// Creates a rollout (as the admin, through the gRPC port).
    pub fn create_rollout(&self, request: pb::CreateRolloutRequest) -> pb::RolloutInfo {
        let id = request.rollout_id.clone();
        self.block_on(
            self.admin
                .clone()
                .create_rollout(authed(request, &self.admin_token)),
        )
        .unwrap_or_else(|s| panic!("creating rollout {id}: {s}"))
        .into_inner()
    }

    /// Marks a device as a test device.
    pub fn make_test_device(&self, id: &str) {
        let mut info = self
            .block_on(self.admin.clone().get_device(authed(
                pb::GetDeviceRequest {
                    device_id: id.into(),
                },
                &self.admin_token,
            )))
            .unwrap_or_else(|s| panic!("reading {id}: {s}"))
            .into_inner();
        let mut attributes = info.attributes.take().unwrap_or_default();
        attributes.test_device = true;
        self.block_on(self.admin.clone().update_device(authed(
            pb::UpdateDeviceRequest {
                device_id: id.into(),
                attributes: Some(attributes),
            },
            &self.admin_token,
        )))
        .unwrap_or_else(|s| panic!("updating {id}: {s}"));
    }
}

/// [`World`] before it owns its runtime.
struct PartialWorld {
    server: Option<RunningServer>,
    _dir: tempfile::TempDir,
    admin: AdminServiceClient<Channel>,
    admin_token: String,
    operator_token: String,
    viewer_token: String,
    web_url: String,
    release_key_id: Vec<u8>,
    releases: Vec<Release>,
    device_ids: Vec<String>,
    fleet: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(fleet) = self.fleet.take() {
            fleet.abort();
        }
        if let Some(server) = self.server.take() {
            let _ = self.rt.block_on(server.shutdown());
        }
    }
}
