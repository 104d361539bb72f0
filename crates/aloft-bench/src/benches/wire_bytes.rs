//! Benchmark 6, bytes on the wire: the bytes a device actually receives for
//! one update, against the image size. The real agent (aloft-agent, on the
//! device core over the NOR simulator) updates from the real
//! `aloft-server` binary (TLS) through a counting TCP proxy on 127.0.0.1;
//! every byte the proxy forwards in either direction is counted, TLS
//! handshakes, HTTP/2 and gRPC framing, the session and the report
//! included. The payload format's own overhead (one 16-byte AES-GCM tag per
//! chunk) is listed next to it, computed.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use aloft_agent::{Agent, AgentConfig, Identity, Outcome};
use aloft_device::Device;
use aloft_protocol::payload::PayloadParams;
use aloft_protocol::prost::Message as _;
use aloft_protocol::trust::VerifiedTrustRoot;
use aloft_protocol::{DeviceId, Digest, NoncePrefix, UnixTime};
use anyhow::{Context, anyhow, bail};
use tokio::net::{TcpListener, TcpStream};

use crate::benches::server::{self, HARDWARE, PRODUCT, ServerProc};
use crate::benches::{Bench, Ctx};
use crate::fixture;
use crate::report::{BenchResult, Status, Table};

/// The benchmark.
#[derive(Debug)]
pub struct WireBytes;

impl Bench for WireBytes {
    fn name(&self) -> &'static str {
        "wire-bytes"
    }

    fn title(&self) -> &'static str {
        "Bytes on the wire"
    }

    fn item(&self) -> u8 {
        6
    }

    fn run(&self, ctx: &Ctx) -> anyhow::Result<BenchResult> {
        server::runtime()?.block_on(run(ctx))
    }
}

/// Bytes the proxy forwarded.
#[derive(Default)]
struct Counts {
    to_device: AtomicU64,
    from_device: AtomicU64,
    connections: AtomicUsize,
    open: AtomicUsize,
}

/// A TCP proxy from `listener` to `upstream` counting bytes each way.
async fn proxy(listener: TcpListener, upstream: SocketAddr, counts: Arc<Counts>) {
    while let Ok((mut client, _)) = listener.accept().await {
        let counts = counts.clone();
        counts.connections.fetch_add(1, Ordering::SeqCst);
        counts.open.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            if let Ok(mut server) = TcpStream::connect(upstream).await {
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let mut up = 0u64;
                let mut down = 0u64;
                // Counted as they flow, so a connection that errors out still counts.
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let a = copy_counting(&mut cr, &mut sw, &mut up);
                let b = copy_counting(&mut sr, &mut cw, &mut down);
                let _ = tokio::join!(a, b);
                counts.from_device.fetch_add(up, Ordering::SeqCst);
                counts.to_device.fetch_add(down, Ordering::SeqCst);
            }
            counts.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

async fn copy_counting<R, W>(r: &mut R, w: &mut W, n: &mut u64) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let k = r.read(&mut buf).await?;
        if k == 0 {
            let _ = w.shutdown().await;
            return Ok(());
        }
        *n += k as u64;
        w.write_all(&buf[..k]).await?;
    }
}

/// What one update through the proxy measured.
struct Measured {
    to_device: u64,
    from_device: u64,
    connections: usize,
    payload: u64,
}

/// One device updates from `factory` to a release of `image_len` bytes in
/// `chunk`-byte chunks; returns the bytes the proxy counted.
async fn one_update(ctx: &Ctx, image_len: usize, chunk: u32) -> anyhow::Result<Measured> {
    let srv = ServerProc::start(ctx, &ctx.scratch.join(format!("wire-{chunk}"))).await?;
    let trust = VerifiedTrustRoot::trust_on_first_use(&srv.trust, UnixTime(server::now()))
        .map_err(|e| anyhow!("TrustRoot: {e}"))?;
    let factory = srv
        .keys
        .release("1.0.0", 1, fixture::image(image_len, 1), chunk)?;
    let update = srv
        .keys
        .release("1.1.0", 1, fixture::image(image_len, 2), chunk)?;
    srv.upload(&update).await?;
    srv.rollout("wire", &update.id).await?;
    let cred = srv
        .register("wire-", 1)
        .await?
        .pop()
        .context("no device registered")?;

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let proxy_addr: SocketAddr = listener.local_addr()?;
    let counts = Arc::new(Counts::default());
    let proxy_task = tokio::spawn(proxy(listener, srv.addr, counts.clone()));

    let identity = Identity::new(
        DeviceId::new(&cred.id).map_err(|e| anyhow!("{e}"))?,
        cred.key.clone(),
        format!("https://{proxy_addr}"),
        Some(srv.tls.ca_pem.clone()),
        trust.clone(),
        BTreeMap::from([
            (aloft_agent::ATTR_PRODUCT.to_owned(), PRODUCT.to_owned()),
            (aloft_agent::ATTR_HARDWARE.to_owned(), HARDWARE.to_owned()),
        ]),
    )
    .map_err(|e| anyhow!("identity: {e}"))?;
    let layout = fixture::layout(image_len as u32, fixture::SECTOR);
    let mut device = Device::provision(
        fixture::flash(&layout),
        layout,
        fixture::config(),
        &trust,
        &factory.image,
        &factory.manifest.encode_to_vec(),
    )
    .map_err(|e| anyhow!("provisioning: {e}"))?;
    device.boot().map_err(|e| anyhow!("boot: {e}"))?;
    let mut agent =
        Agent::new(identity, device, AgentConfig::default()).map_err(|e| anyhow!("agent: {e}"))?;
    let outcome = tokio::time::timeout(Duration::from_secs(120), agent.run(std::future::pending()))
        .await
        .map_err(|_| {
            anyhow!(
                "the update did not finish in 120 s; server log:\n{}",
                srv.log_tail()
            )
        })?
        .map_err(|e| anyhow!("agent: {e}"))?;
    match outcome {
        Outcome::RebootRequested { .. } => {}
        other => bail!("the agent ended with {other:?} instead of a reboot request"),
    }
    // The agent's connection closes as it returns; wait for the proxy to
    // finish counting.
    drop(agent);
    server::wait_until(Duration::from_secs(10), || {
        counts.open.load(Ordering::SeqCst) == 0
    })
    .await;
    proxy_task.abort();
    drop(srv);
    Ok(Measured {
        to_device: counts.to_device.load(Ordering::SeqCst),
        from_device: counts.from_device.load(Ordering::SeqCst),
        connections: counts.connections.load(Ordering::SeqCst),
        payload: update.payload.len() as u64,
    })
}

async fn run(ctx: &Ctx) -> anyhow::Result<BenchResult> {
    let mut r = BenchResult::new("wire-bytes", "Bytes on the wire", 6, Status::Measured);
    let image_len: usize = 1 << 20;
    let mut t = Table::new(
        "One update of a 1 MiB image by the real agent through a counting TCP proxy (all bytes \
         of every connection: TLS, HTTP/2, gRPC, session, download, report)",
        &[
            "chunk size",
            "bytes to the device",
            "overhead vs image",
            "of which payload format (tags)",
            "bytes from the device",
            "connections",
        ],
    );
    let mut at_default = None;
    for chunk in [4096u32, 16 * 1024, 64 * 1024] {
        let m = one_update(ctx, image_len, chunk)
            .await
            .with_context(|| format!("update with {chunk}-byte chunks"))?;
        let overhead = (m.to_device as f64 - image_len as f64) / image_len as f64;
        let format = (m.payload as f64 - image_len as f64) / image_len as f64;
        println!(
            "  {chunk} B chunks: {} bytes to the device ({:.2}% over the image), {} from it, {} connections",
            m.to_device,
            overhead * 100.0,
            m.from_device,
            m.connections
        );
        t.row(&[
            format!("{} KiB", chunk / 1024),
            m.to_device.to_string(),
            format!("{:.2}%", overhead * 100.0),
            format!("{:.2}%", format * 100.0),
            m.from_device.to_string(),
            m.connections.to_string(),
        ]);
        r.figure(
            &format!("chunk_{chunk}.bytes_to_device"),
            m.to_device as f64,
        );
        r.figure(
            &format!("chunk_{chunk}.bytes_from_device"),
            m.from_device as f64,
        );
        r.figure(&format!("chunk_{chunk}.overhead"), overhead);
        r.figure(&format!("format_overhead.chunk_{chunk}"), format);
        if chunk == 16 * 1024 {
            at_default = Some(overhead);
        }
    }
    r.tables.push(t);
    let overhead = at_default.context("no 16 KiB measurement")?;
    r.goal(
        "bytes a device downloads for one update / image size - 1 (1 MiB image, 16 KiB chunks: \
         the release tool's default)",
        "< 1%",
        format!("{:.2}%", overhead * 100.0),
        Some(overhead < 0.01),
    );
    r.note(format!(
        "Image {image_len} bytes. The payload format alone costs 16 bytes per chunk \
         ({}); the rest is the TLS handshake (certificate chain), TLS record overhead, HTTP/2 \
         and gRPC frame headers, the session (challenge, Welcome, offer with directive and \
         manifest) and the report acknowledgement.",
        format_overhead_text(image_len as u64)?
    ));
    Ok(r)
}

/// The computed payload format overhead at 4 and 16 KiB, as text.
fn format_overhead_text(image_len: u64) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for chunk_size in [4096u32, 16384] {
        let params = PayloadParams {
            image_len,
            chunk_size,
            nonce_prefix: NoncePrefix::from_slice(&[0; 7]).map_err(|e| anyhow!("{e}"))?,
            image_digest: Digest::from_bytes([0; 32]),
        };
        let o = (params.payload_len() - image_len) as f64 / image_len as f64;
        parts.push(format!(
            "{:.2}% at {} KiB chunks",
            o * 100.0,
            chunk_size / 1024
        ));
    }
    Ok(parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_overhead_is_one_tag_per_chunk() {
        let text = format_overhead_text(1 << 20).unwrap();
        assert!(text.contains("0.39% at 4 KiB"), "{text}");
        assert!(text.contains("0.10% at 16 KiB"), "{text}");
    }
}
