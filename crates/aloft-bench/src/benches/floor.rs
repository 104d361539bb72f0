//! The floor of benchmark 3: what a check-in on a new connection cannot
//! cost less than. A bare rustls server (same certificate, TLS 1.3, the
//! same ring crypto provider as aloft-server) that, per connection,
//! completes the handshake, sends a 32-byte challenge, and verifies one
//! P-256 signature over it with ring against the device's key, loaded
//! once at start. It runs as a child process (`aloft-bench --floor-server
//! DIR`), so its CPU time is measured from `/proc` like aloft-server's.
//!
//! Wire: server -> 32-byte challenge; client -> key index (u32 big-endian)
//! and the 64-byte r||s signature in `Domain::DeviceMessage`; server -> one
//! byte (1 verified, 0 refused); close.

use std::io::BufRead as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aloft_protocol::keys::Domain;
use aloft_protocol::ring_verify::RingPublicKey;
use aloft_protocol::{PublicKey, Signature};
use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls;

use crate::benches::ChildGuard;
use crate::benches::server::{DeviceCred, Tls};

/// File in the floor server's directory holding the devices' keys, SEC1
/// compressed, 33 bytes each, in index order.
const KEYS_FILE: &str = "keys.bin";
/// Challenge length (as aloft-server's).
const CHALLENGE_LEN: usize = 32;

/// The floor server process.
pub struct FloorServer {
    /// Its address.
    pub addr: SocketAddr,
    child: ChildGuard,
}

impl FloorServer {
    /// Writes the keys of `creds` into `dir` and starts the floor server
    /// with the certificate of `tls`.
    pub fn start(dir: &Path, tls: &Tls, creds: &[DeviceCred]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut keys = Vec::with_capacity(creds.len() * 33);
        for c in creds {
            keys.extend_from_slice(&c.key.public_key().to_sec1_compressed());
        }
        std::fs::write(dir.join(KEYS_FILE), keys)?;
        std::fs::copy(&tls.cert, dir.join("server.crt"))?;
        std::fs::copy(&tls.key, dir.join("server.key"))?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--floor-server")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the floor server")?;
        let stdout = child.stdout.take().context("floor server stdout")?;
        let child = ChildGuard(child);
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("the floor server did not start (said {line:?})"))?;
        Ok(Self { addr, child })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }
}

/// The floor server's main (`aloft-bench --floor-server DIR`): serves until
/// killed.
pub fn serve(dir: &Path) -> anyhow::Result<()> {
    let keys: Vec<RingPublicKey> = std::fs::read(dir.join(KEYS_FILE))?
        .chunks(33)
        .map(|k| PublicKey::from_sec1(k).map(|k| RingPublicKey::new(&k)))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("floor keys: {e}"))?;
    let keys = Arc::new(keys);
    let acceptor = acceptor(
        &std::fs::read(dir.join("server.crt"))?,
        &std::fs::read(dir.join("server.key"))?,
    )?;
    let rt = crate::benches::server::runtime()?;
    rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        println!("listening {}", listener.local_addr()?);
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, keys) = (acceptor.clone(), keys.clone());
            tokio::spawn(async move {
                let _ = one_connection(acceptor, &keys, tcp).await;
            });
        }
    })
}

async fn one_connection(
    acceptor: tokio_rustls::TlsAcceptor,
    keys: &[RingPublicKey],
    tcp: tokio::net::TcpStream,
) -> anyhow::Result<()> {
    let mut tls = acceptor.accept(tcp).await?;
    let mut challenge = [0u8; CHALLENGE_LEN];
    getrandom::fill(&mut challenge).map_err(|e| anyhow::anyhow!("rng: {e}"))?;
    tls.write_all(&challenge).await?;
    tls.flush().await?;
    let mut msg = [0u8; 4 + Signature::LEN];
    tls.read_exact(&mut msg).await?;
    let index = u32::from_be_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize;
    let ok = match (keys.get(index), Signature::from_slice(&msg[4..])) {
        (Some(key), Ok(sig)) => key.verify(Domain::DeviceMessage, &challenge, &sig).is_ok(),
        _ => false,
    };
    tls.write_all(&[u8::from(ok)]).await?;
    tls.shutdown().await?;
    Ok(())
}

/// The server side: the same as aloft-server's (ring provider, the safe
/// default protocol versions, one certificate).
fn acceptor(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A client of the floor server, trusting `ca_pem`, TLS 1.3 only.
pub fn connector(ca_pem: &str) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// One floor check-in from `local` as device `index`: handshake,
/// challenge, signature, verdict.
pub async fn check_in(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    local: IpAddr,
    index: u32,
    cred: &DeviceCred,
) -> anyhow::Result<()> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(local, 0))?;
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let mut tls = connector.connect(name, tcp).await?;
    let mut challenge = [0u8; CHALLENGE_LEN];
    tls.read_exact(&mut challenge).await?;
    let sig = cred.key.sign(Domain::DeviceMessage, &challenge);
    let mut msg = [0u8; 4 + Signature::LEN];
    msg[..4].copy_from_slice(&index.to_be_bytes());
    msg[4..].copy_from_slice(sig.as_bytes());
    tls.write_all(&msg).await?;
    let mut verdict = [0u8; 1];
    tls.read_exact(&mut verdict).await?;
    if verdict[0] != 1 {
        bail!("the floor server refused the signature");
    }
    Ok(())
}
