//! The server side of the network benchmarks: the real `aloft-server`
//! binary (built next to `aloft-bench`) with TLS on a free 127.0.0.1 port,
//! its admin API, and the operator's offline keys.
//!
//! [`ServerProc`] starts the process, waits for its "listening" line,
//! installs a TrustRoot naming the server's directive key, and gives an
//! admin client; it registers devices, uploads releases and creates
//! rollouts; it reads the server's RSS and CPU time from `/proc`; it can
//! restart the server on the same port. The process is killed when the
//! value drops (also on error).

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aloft_protocol::envelope;
use aloft_protocol::keys::Domain;
use aloft_protocol::payload::{PayloadParams, encrypt_payload};
use aloft_protocol::pb::admin_service_client::AdminServiceClient;
use aloft_protocol::{ContentKey, Digest, NoncePrefix, SecretKey, pb};
use anyhow::{Context, anyhow, bail};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tonic::Request;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::benches::{ChildGuard, Ctx};

/// Product and hardware of the benchmark fleet's releases.
pub const PRODUCT: &str = "bench-board";
/// Hardware revision.
pub const HARDWARE: &str = "rev-a";
/// The firmware version every benchmark device reports running.
pub const FACTORY_VERSION: &str = "1.0.0";

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Raises this process's open-file limit (soft and hard) to `want`, capped
/// by `fs.nr_open`; children inherit it. Returns the soft limit now in force.
#[allow(unsafe_code)]
pub fn raise_nofile(want: u64) -> u64 {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(want);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let target = want.min(nr_open);
    if lim.rlim_cur >= target {
        return lim.rlim_cur;
    }
    // Raising the hard limit needs CAP_SYS_RESOURCE; without it, go up to
    // the hard limit.
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: target.max(lim.rlim_max),
    };
    // SAFETY: `raised` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return target;
    }
    let soft = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: `soft` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } == 0 {
        lim.rlim_max
    } else {
        lim.rlim_cur
    }
}

/// A TLS identity for the server: a CA and a certificate for `localhost`
/// and `127.0.0.1` it issued.
#[derive(Clone)]
pub struct Tls {
    /// CA certificate (PEM) the clients pin.
    pub ca_pem: String,
    /// Server certificate file.
    pub cert: PathBuf,
    /// Server key file.
    pub key: PathBuf,
}

impl Tls {
    /// Makes the CA and certificate in `dir`.
    pub fn make(dir: &Path) -> anyhow::Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
            .signed_by(&key, &ca)?;
        std::fs::create_dir_all(dir)?;
        let tls = Self {
            ca_pem: ca.pem(),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        };
        std::fs::write(&tls.cert, cert.pem())?;
        std::fs::write(&tls.key, key.serialize_pem())?;
        Ok(tls)
    }
}

/// A client endpoint for `https://127.0.0.1:port`, pinned to `ca_pem`.
pub fn endpoint(addr: SocketAddr, ca_pem: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("https://{addr}"))?
        .connect_timeout(Duration::from_secs(20))
        .tcp_nodelay(true)
        // The agent's HTTP/2 settings, so the server sees what devices ask for.
        .initial_stream_window_size(aloft_agent::connect::STREAM_WINDOW)
        .initial_connection_window_size(aloft_agent::connect::CONNECTION_WINDOW)
        .max_frame_size(aloft_agent::connect::MAX_FRAME)
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .domain_name("localhost"),
        )?)
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// The path of a binary built next to this one (`cargo xtask bench` builds
/// `aloft-server` into the same release directory).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating aloft-bench")?;
    let path = exe
        .parent()
        .context("aloft-bench has no directory")?
        .join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p {name}` (cargo xtask bench does)",
            path.display()
        );
    }
    Ok(path)
}

/// The operator's offline keys (root and release).
pub struct OfflineKeys {
    root: SecretKey,
    release: SecretKey,
}

/// A signed, encrypted release as the release tooling makes it.
pub struct Release {
    /// Release id.
    pub id: String,
    /// Signed manifest.
    pub manifest: pb::SignedEnvelope,
    /// Content key.
    pub key: ContentKey,
    /// Encrypted payload.
    pub payload: Vec<u8>,
    /// Plaintext image.
    pub image: Vec<u8>,
}

impl OfflineKeys {
    /// Fresh keys.
    pub fn new() -> Self {
        Self {
            root: SecretKey::generate(),
            release: SecretKey::generate(),
        }
    }

    /// A TrustRoot naming `server_key` as the directive key.
    pub fn trust_root(&self, server_key: &[u8]) -> pb::SignedEnvelope {
        let tr = pb::TrustRoot {
            version: 1,
            expires_at: now() + 86_400 * 30,
            root_keys: vec![self.root.public_key().to_sec1_compressed().to_vec()],
            root_threshold: 1,
            release_keys: vec![self.release.public_key().to_sec1_compressed().to_vec()],
            release_threshold: 1,
            server_keys: vec![server_key.to_vec()],
        };
        envelope::seal(&tr, Domain::TrustRoot, &[&self.root])
    }

    /// A release of `image` in chunks of `chunk_size` bytes.
    pub fn release(
        &self,
        version: &str,
        security_version: u32,
        image: Vec<u8>,
        chunk_size: u32,
    ) -> anyhow::Result<Release> {
        let id = format!("{PRODUCT}-{version}");
        let mut prefix = [0u8; 7];
        getrandom::fill(&mut prefix).map_err(|e| anyhow!("random: {e}"))?;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| anyhow!("random: {e}"))?;
        let m = pb::ReleaseManifest {
            release_id: id.clone(),
            product: PRODUCT.into(),
            hardware: vec![HARDWARE.into()],
            version: version.into(),
            security_version,
            image_len: image.len() as u64,
            image_sha256: Digest::of(&image).as_bytes().to_vec(),
            chunk_size,
            nonce_prefix: prefix.to_vec(),
            created_at: now() - 60,
            expires_at: now() + 86_400,
            ..Default::default()
        };
        let key = ContentKey::from_bytes(key);
        let params = PayloadParams {
            image_len: image.len() as u64,
            chunk_size,
            nonce_prefix: NoncePrefix::from_bytes(prefix),
            image_digest: Digest::of(&image),
        };
        let payload = encrypt_payload(&key, &params, &image).map_err(|e| anyhow!("{e}"))?;
        Ok(Release {
            id,
            manifest: envelope::seal(&m, Domain::ReleaseManifest, &[&self.release]),
            key,
            payload,
            image,
        })
    }
}

/// A registered benchmark device: id and key.
#[derive(Clone)]
pub struct DeviceCred {
    /// Device id.
    pub id: String,
    /// Device key.
    pub key: SecretKey,
}

/// Adds a bearer token.
pub fn authed<T>(message: T, token: &str) -> anyhow::Result<Request<T>> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(r)
}

/// The `aloft-server` process.
pub struct ServerProc {
    bin: PathBuf,
    data: PathBuf,
    /// Its address (127.0.0.1, fixed across restarts).
    pub addr: SocketAddr,
    /// TLS identity.
    pub tls: Tls,
    /// Bootstrap admin token.
    pub token: String,
    /// Offline keys; the TrustRoot is installed.
    pub keys: OfflineKeys,
    /// The installed TrustRoot.
    pub trust: pb::SignedEnvelope,
    child: Option<ChildGuard>,
    log: PathBuf,
    /// More flags (e.g. `--store URL`).
    extra: Vec<String>,
}

impl ServerProc {
    /// Starts the server in `dir` (data, TLS and log) and installs a
    /// TrustRoot.
    pub async fn start(ctx: &Ctx, dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(ctx, dir, Vec::new()).await
    }

    /// [`ServerProc::start`] with more flags.
    pub async fn start_with(ctx: &Ctx, dir: &Path, extra: Vec<String>) -> anyhow::Result<Self> {
        let bin = sibling_binary("aloft-server")?;
        std::fs::create_dir_all(dir)?;
        let tls = Tls::make(&dir.join("tls"))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let mut s = Self {
            bin,
            data: dir.join("data"),
            addr,
            tls,
            token: String::new(),
            keys: OfflineKeys::new(),
            trust: pb::SignedEnvelope::default(),
            child: None,
            log: dir.join("server.log"),
            extra,
        };
        s.spawn(ctx)?;
        s.token = std::fs::read_to_string(s.data.join("admin-token"))
            .context("reading the bootstrap admin token")?
            .trim()
            .to_owned();
        let mut admin = s.admin().await?;
        let info = admin
            .get_server_info(authed(pb::GetServerInfoRequest {}, &s.token)?)
            .await?
            .into_inner();
        s.trust = s.keys.trust_root(&info.server_public_key);
        admin
            .set_trust_root(authed(
                pb::SetTrustRootRequest {
                    trust_root: Some(s.trust.clone()),
                },
                &s.token,
            )?)
            .await?;
        Ok(s)
    }

    fn spawn(&mut self, ctx: &Ctx) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = ctx.spawn(
            Command::new(&self.bin)
                .arg("--data")
                .arg(&self.data)
                .arg("--listen")
                .arg(self.addr.to_string())
                .arg("--tls-cert")
                .arg(&self.tls.cert)
                .arg("--tls-key")
                .arg(&self.tls.key)
                // Setup registers thousands of devices one request each
                // through the bootstrap token: no per-token request rate.
                .args(["--admin-rate", "0"])
                .args(&self.extra)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log),
        )?;
        let stdout = child.0.stdout.take().context("server stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(Ok(line))) if line.contains("listening") => {}
            other => {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                bail!("aloft-server did not start ({other:?}); its log:\n{log}");
            }
        }
        self.child = Some(child);
        Ok(())
    }

    /// Another process on the same data directory and flags (a replica
    /// when the store is shared), listening on a port of its own, its log
    /// in `dir`. The TrustRoot and tokens are the store's already.
    pub fn replica(&self, ctx: &Ctx, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut s = Self {
            bin: self.bin.clone(),
            data: self.data.clone(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?)),
            tls: self.tls.clone(),
            token: self.token.clone(),
            // Unused: a replica is never asked to sign.
            keys: OfflineKeys::new(),
            trust: self.trust.clone(),
            child: None,
            log: dir.join("server.log"),
            extra: self.extra.clone(),
        };
        s.spawn(ctx)?;
        Ok(s)
    }

    /// Process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.0.id())
    }

    /// Stops the server (SIGKILL: a crash, sessions drop) and starts it again
    /// on the same port and data.
    pub fn restart(&mut self, ctx: &Ctx) -> anyhow::Result<()> {
        self.child = None;
        self.spawn(ctx)
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// Resident set size in bytes (`VmRSS`).
    pub fn rss(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("server not running")?;
        proc_status_kib(pid, "VmRSS:").map(|k| k * 1024)
    }

    /// CPU time (user + system) the server used so far, in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let pid = self.pid().context("server not running")?;
        cpu_seconds(pid)
    }

    /// An admin client.
    pub async fn admin(&self) -> anyhow::Result<AdminServiceClient<Channel>> {
        let channel = endpoint(self.addr, &self.tls.ca_pem)?
            .connect()
            .await
            .context("connecting the admin client")?;
        Ok(AdminServiceClient::new(channel).max_decoding_message_size(16 << 20))
    }

    /// Registers `n` devices `PREFIX000000`.. with fresh keys, 64 at a time.
    pub async fn register(&self, prefix: &str, n: usize) -> anyhow::Result<Vec<DeviceCred>> {
        let admin = self.admin().await?;
        let limit = Arc::new(Semaphore::new(64));
        let mut jobs = JoinSet::new();
        for i in 0..n {
            let cred = DeviceCred {
                id: format!("{prefix}{i:06}"),
                key: SecretKey::generate(),
            };
            let req = authed(
                pb::RegisterDeviceRequest {
                    device_id: cred.id.clone(),
                    public_key: cred.key.public_key().to_sec1_compressed().to_vec(),
                    attributes: Some(pb::DeviceAttributes {
                        product: PRODUCT.into(),
                        hardware: HARDWARE.into(),
                        region: "eu".into(),
                        time_zone: "Europe/Berlin".into(),
                        tags: vec!["bench".into()],
                        test_device: false,
                    }),
                    factory_version: FACTORY_VERSION.into(),
                    ..Default::default()
                },
                &self.token,
            )?;
            let mut admin = admin.clone();
            let permit = limit.clone().acquire_owned().await?;
            jobs.spawn(async move {
                let _permit = permit;
                admin
                    .register_device(req)
                    .await
                    .with_context(|| format!("registering {}", cred.id))?;
                Ok::<_, anyhow::Error>((i, cred))
            });
        }
        let mut out = Vec::with_capacity(n);
        while let Some(j) = jobs.join_next().await {
            out.push(j??);
        }
        out.sort_by_key(|(i, _)| *i);
        Ok(out.into_iter().map(|(_, c)| c).collect())
    }

    /// Uploads `release`.
    pub async fn upload(&self, release: &Release) -> anyhow::Result<()> {
        use pb::upload_release_request::Part;
        let mut messages = vec![pb::UploadReleaseRequest {
            part: Some(Part::Header(pb::UploadReleaseHeader {
                manifest: Some(release.manifest.clone()),
                content_key: release.key.expose().to_vec(),
                payload_len: release.payload.len() as u64,
            })),
        }];
        for p in release.payload.chunks(256 * 1024) {
            messages.push(pb::UploadReleaseRequest {
                part: Some(Part::Payload(p.to_vec())),
            });
        }
        self.admin()
            .await?
            .upload_release(authed(tokio_stream::iter(messages), &self.token)?)
            .await
            .context("uploading the release")?;
        Ok(())
    }

    /// A rollout of `release` to every device, no download cap below the
    /// server's.
    pub async fn rollout(&self, id: &str, release: &str) -> anyhow::Result<()> {
        self.admin()
            .await?
            .create_rollout(authed(
                pb::CreateRolloutRequest {
                    rollout_id: id.into(),
                    release_id: release.into(),
                    selector: String::new(),
                    max_concurrent: 100_000,
                    ..Default::default()
                },
                &self.token,
            )?)
            .await
            .context("creating the rollout")?;
        Ok(())
    }

    /// The server's log so far (for error messages).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// A `/proc/PID/status` field in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// User + system CPU seconds of process `pid` (all its threads).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After "(comm)": state is field 0, utime 11, stime 12.
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Ok(ticks / clock_ticks())
}

/// This process's CPU seconds (user + system).
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id()).unwrap_or(0.0)
}

#[allow(unsafe_code)]
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Waits until `cond` holds or `limit` passes.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// A multi-threaded tokio runtime for a benchmark's clients.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
