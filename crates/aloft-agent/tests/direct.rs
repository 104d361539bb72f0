//! Downloads straight from storage: the directive names a payload URL (a
//! CDN template here, a presigned S3 URL in `tests/direct_s3.rs`), the
//! agent fetches the ciphertext over HTTPS Range requests from a local
//! HTTPS server with a certificate of the identity bundle's CA, and falls
//! back to the gRPC download when anything is wrong.
//!
//! The CDN is untrusted. Each test below makes it lie in one way (a flipped
//! byte, truncation, an extra chunk, a 200 full body instead of 206, a 206
//! for the wrong range, a longer declared length, a stall, a certificate of
//! another CA, plain http) and checks: the refusal names that lie (so the
//! test fails if that check is removed: another check, or none, would name
//! it otherwise); at the moment of the refusal nothing past the chunks
//! already verified was written to the slot; no byte that differs from the
//! real image was ever written to it (a watching flash compares every
//! write); and the install completes through the server.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aloft_agent::{Agent, AgentConfig, DirectFailure, Event, Identity, Outcome};
use aloft_device::{Device, EraseSectors, Slot};
use aloft_protocol::payload::TAG_LEN;
use aloft_protocol::{DeviceId, SecretKey, pb};
use aloft_server::payloads::{PayloadUrls, UrlTemplate};
use bytes::Bytes;
use common::*;
use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use http_body_util::BodyExt as _;

const IMAGE: usize = 40 * 1024;
const WIRE_CHUNK: u64 = CHUNK as u64 + TAG_LEN as u64;

/// A flash that compares every write into slot B's image area with the
/// image that belongs there, and remembers how far writes went.
#[derive(Clone)]
struct Watched {
    inner: Flash,
    watch: Arc<Watch>,
}

struct Watch {
    image: Mutex<Vec<u8>>,
    /// Bytes of slot B written so far (the highest end offset).
    written: AtomicU32,
    wrong: Mutex<Vec<String>>,
}

const SLOT_B: u32 = STATE + SLOT;
/// Slot B's image area (its last sector holds the manifest).
const IMAGE_AREA: u32 = SLOT - SECTOR;

impl ErrorType for Watched {
    type Error = <Flash as ErrorType>::Error;
}

impl ReadNorFlash for Watched {
    const READ_SIZE: usize = Flash::READ_SIZE;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.inner.read(offset, bytes)
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

impl NorFlash for Watched {
    const WRITE_SIZE: usize = Flash::WRITE_SIZE;
    const ERASE_SIZE: usize = Flash::ERASE_SIZE;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.inner.erase(from, to)
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        if (SLOT_B..SLOT_B + IMAGE_AREA).contains(&offset) {
            let at = (offset - SLOT_B) as usize;
            let image = self.watch.image.lock().unwrap();
            for (i, b) in bytes.iter().enumerate() {
                let expected = image.get(at + i).copied().unwrap_or(0xFF);
                if *b != expected {
                    self.watch.wrong.lock().unwrap().push(format!(
                        "slot B byte {} written {b:#04x}, image has {expected:#04x}",
                        at + i
                    ));
                    break;
                }
            }
            self.watch
                .written
                .fetch_max((at + bytes.len()) as u32, Ordering::SeqCst);
        }
        self.inner.write(offset, bytes)
    }
}

impl EraseSectors for Watched {
    fn sector_at(&self, offset: u32) -> Option<(u32, u32)> {
        self.inner.sector_at(offset)
    }
}

/// How the CDN answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lie {
    /// The bytes asked for, as 206 with the right Content-Range.
    None,
    /// One byte of this chunk flipped.
    FlipByte(u32),
    /// 200 and the whole object, ignoring the Range header.
    FullBody,
    /// 206 for the range one chunk further on (Content-Range saying so).
    WrongRange,
    /// The range, then one more chunk, in a body of unknown length.
    ExtraChunk,
    /// The range and one more chunk with a Content-Length saying so.
    DeclaresTooLong,
    /// The body ends cleanly after this many chunks.
    TruncateAfter(u32),
    /// Headers and a little data, then nothing.
    Stall,
}

/// A local HTTPS server playing a CDN over the payload objects directory.
#[derive(Clone)]
struct Cdn {
    addr: SocketAddr,
    lie: Arc<Mutex<Lie>>,
    /// Ranges asked for, as (first, last) byte.
    ranges: Arc<Mutex<Vec<(u64, u64)>>>,
    root: Arc<Mutex<PathBuf>>,
    /// Certificate chain and key (PEM files), read at each connection.
    tls: Arc<Mutex<Option<(PathBuf, PathBuf)>>>,
}

fn parse_range(header: &str) -> Option<(u64, u64)> {
    let (a, b) = header.strip_prefix("bytes=")?.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn full(data: Vec<u8>) -> Body {
    http_body_util::Full::new(Bytes::from(data)).boxed()
}

/// A body without a declared length (chunked transfer encoding).
fn chunked(parts: Vec<Vec<u8>>) -> Body {
    let frames = parts
        .into_iter()
        .map(|p| Ok(hyper::body::Frame::data(Bytes::from(p))));
    http_body_util::StreamBody::new(tokio_stream::iter(frames)).boxed()
}

impl Cdn {
    /// Listens on 127.0.0.1; serves files under `root` with the TLS files
    /// in `tls`, both set before the first connection.
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cdn = Self {
            addr: listener.local_addr().unwrap(),
            lie: Arc::new(Mutex::new(Lie::None)),
            ranges: Arc::default(),
            root: Arc::default(),
            tls: Arc::default(),
        };
        let served = cdn.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = served.acceptor();
                let cdn = served.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let cdn = cdn.clone();
                        async move { Ok::<_, std::convert::Infallible>(cdn.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        cdn
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use rustls_pki_types::pem::PemObject as _;
        let (cert, key) = self.tls.lock().unwrap().clone().expect("CDN TLS files set");
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(&cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    fn set(&self, lie: Lie) {
        *self.lie.lock().unwrap() = lie;
    }

    async fn answer(&self, req: hyper::Request<hyper::body::Incoming>) -> hyper::Response<Body> {
        let path = self
            .root
            .lock()
            .unwrap()
            .join(req.uri().path().trim_start_matches('/'));
        let Ok(object) = std::fs::read(&path) else {
            return hyper::Response::builder()
                .status(404)
                .body(full(vec![]))
                .unwrap();
        };
        let total = object.len() as u64;
        let Some((first, last)) = req
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_range)
        else {
            return hyper::Response::builder()
                .status(400)
                .body(full(vec![]))
                .unwrap();
        };
        self.ranges.lock().unwrap().push((first, last));
        let slice = |a: u64, b: u64| object[a as usize..=(b.min(total - 1)) as usize].to_vec();
        let partial = |a: u64, b: u64| {
            hyper::Response::builder()
                .status(206)
                .header("content-range", format!("bytes {a}-{b}/{total}"))
        };
        let lie = *self.lie.lock().unwrap();
        match lie {
            Lie::None => partial(first, last).body(full(slice(first, last))).unwrap(),
            Lie::FlipByte(chunk) => {
                let mut data = slice(first, last);
                let at = u64::from(chunk) * WIRE_CHUNK + 5;
                if (first..=last).contains(&at) {
                    data[(at - first) as usize] ^= 0x40;
                }
                partial(first, last).body(full(data)).unwrap()
            }
            Lie::FullBody => hyper::Response::builder()
                .status(200)
                .body(full(object))
                .unwrap(),
            Lie::WrongRange => {
                let (a, b) = (first + WIRE_CHUNK, (last + WIRE_CHUNK).min(total - 1));
                partial(a, b).body(full(slice(a, b))).unwrap()
            }
            Lie::ExtraChunk => {
                let extra = slice(last + 1, last + WIRE_CHUNK);
                partial(first, last)
                    .body(chunked(vec![slice(first, last), extra]))
                    .unwrap()
            }
            Lie::DeclaresTooLong => {
                // One chunk's worth more than asked for (zeros: the range
                // may end at the end of the object).
                let mut data = slice(first, last);
                data.extend(std::iter::repeat_n(0u8, WIRE_CHUNK as usize));
                partial(first, last).body(full(data)).unwrap()
            }
            Lie::TruncateAfter(chunks) => {
                let end = (first + u64::from(chunks) * WIRE_CHUNK + 10).min(last);
                partial(first, last)
                    .body(chunked(vec![slice(first, end)]))
                    .unwrap()
            }
            Lie::Stall => {
                let head = slice(first, first + 100);
                let frames = futures_stall(head);
                partial(first, last).body(frames).unwrap()
            }
        }
    }
}

/// A body that sends `head`, then waits far longer than any test.
fn futures_stall(head: Vec<u8>) -> Body {
    let stream = tokio_stream::StreamExt::chain(
        tokio_stream::iter(vec![Ok(hyper::body::Frame::data(Bytes::from(head)))]),
        tokio_stream::StreamExt::then(tokio_stream::iter(vec![()]), |()| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(hyper::body::Frame::data(Bytes::new()))
        }),
    );
    http_body_util::StreamBody::new(stream).boxed()
}

/// A server whose directives name `https://localhost:PORT/{object}` (or
/// what `template` makes of the CDN's address) on a CDN with a certificate
/// of the identity CA; an update rolled out; a device identity whose slot B
/// writes are watched.
struct Rig {
    h: Harness,
    cdn: Cdn,
    factory: Release,
    update: Release,
    identity: Identity,
    watch: Arc<Watch>,
}

fn cdn_template(addr: SocketAddr) -> String {
    format!("https://localhost:{}/{{object}}", addr.port())
}

async fn rig(template: impl FnOnce(SocketAddr) -> String) -> Rig {
    rig_on(Cdn::start().await, template).await
}

/// A rig over `cdn` (listening already, so its port can go into the
/// template). Unless its TLS files are set, it gets the server's: a
/// localhost certificate of the CA the identity bundle pins.
async fn rig_on(cdn: Cdn, template: impl FnOnce(SocketAddr) -> String) -> Rig {
    let url = template(cdn.addr);
    let (root, tls) = (cdn.root.clone(), cdn.tls.clone());
    let h = Harness::start_with(true, move |c| {
        let files = c.tls.clone().unwrap();
        tls.lock().unwrap().get_or_insert((files.cert, files.key));
        *root.lock().unwrap() = c.data_dir.join("objects");
        c.payloads.urls = PayloadUrls::Template(UrlTemplate::parse(&url).unwrap());
    })
    .await;
    let factory = h.keys.release("1.0.0", 30 * 1024);
    let update = h.keys.release("1.1.0", IMAGE);
    h.upload(&update).await;
    h.rollout("r1", &update.id, "").await;
    let identity = register(&h, "dev-direct").await;
    let watch = Arc::new(Watch {
        image: Mutex::new(update.image.clone()),
        written: AtomicU32::new(0),
        wrong: Mutex::default(),
    });
    Rig {
        h,
        cdn,
        factory,
        update,
        identity,
        watch,
    }
}

async fn register(h: &Harness, id: &str) -> Identity {
    let key = SecretKey::generate();
    h.admin
        .clone()
        .register_device(h.authed(pb::RegisterDeviceRequest {
            device_id: id.into(),
            public_key: key.public_key().to_sec1_compressed().to_vec(),
            attributes: Some(pb::DeviceAttributes {
                product: "sensor".into(),
                hardware: "rev-a".into(),
                ..Default::default()
            }),
            factory_version: "1.0.0".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let attributes = [("product", "sensor"), ("hardware", "rev-a")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Identity::new(
        DeviceId::new(id).unwrap(),
        key,
        h.url(),
        h.ca_pem.clone(),
        h.trust.clone(),
        attributes,
    )
    .unwrap()
}

type Events = Arc<Mutex<Vec<Event>>>;

/// What one install run showed.
struct Run {
    outcome: Outcome,
    events: Vec<Event>,
    /// Slot B bytes written when the direct download was refused.
    written_at_refusal: Option<u32>,
    device: Device<Watched>,
}

impl Rig {
    /// A provisioned device (factory image in slot A) on a watched flash.
    fn device(&self) -> Device<Watched> {
        let flash = Watched {
            inner: new_flash(),
            watch: self.watch.clone(),
        };
        Device::provision(
            flash,
            layout(),
            device_config(),
            &self.h.trust,
            &self.factory.image,
            &self.factory.manifest_bytes(),
        )
        .unwrap()
    }

    /// Runs an agent on `device` until it asks for the reboot.
    async fn install(&self, mut device: Device<Watched>, config: AgentConfig) -> Run {
        device.boot().unwrap();
        let events: Events = Arc::default();
        let written_at_refusal = Arc::new(Mutex::new(None));
        let (sink, at_refusal, watch) = (
            events.clone(),
            written_at_refusal.clone(),
            self.watch.clone(),
        );
        let mut agent = Agent::new(self.identity.clone(), device, config)
            .unwrap()
            .with_observer(move |e: &Event| {
                if matches!(e, Event::DirectDownloadFailed { .. }) {
                    *at_refusal.lock().unwrap() = Some(watch.written.load(Ordering::SeqCst));
                }
                sink.lock().unwrap().push(e.clone());
            });
        let outcome =
            tokio::time::timeout(Duration::from_secs(30), agent.run(std::future::pending()))
                .await
                .expect("no reboot within 30 s")
                .unwrap();
        let events = events.lock().unwrap().clone();
        let written = *written_at_refusal.lock().unwrap();
        Run {
            outcome,
            events,
            written_at_refusal: written,
            device: agent.into_device(),
        }
    }
}

impl Run {
    fn refusal(&self) -> Option<(DirectFailure, String, u32)> {
        self.events.iter().find_map(|e| match e {
            Event::DirectDownloadFailed {
                kind,
                error,
                next_chunk,
                ..
            } => Some((*kind, error.clone(), *next_chunk)),
            _ => None,
        })
    }

    fn direct_completed(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, Event::DirectDownloadCompleted { .. }))
    }
}

/// Installs through a CDN that tells `lie`, and checks what every refusal
/// must show. Returns the run and the refusal (kind, message, next chunk).
async fn refused(lie: Lie, config: AgentConfig) -> (Run, DirectFailure, String, u32) {
    let rig = rig(cdn_template).await;
    rig.cdn.set(lie);
    let run = rig.install(rig.device(), config).await;
    let (kind, error, next) = run.refusal().unwrap_or_else(|| {
        panic!(
            "{lie:?}: the direct download was not refused; events: {:?}",
            run.events
        )
    });
    // Nothing of the refused answer reached flash: at the refusal, slot B
    // holds at most the chunks before the resume point.
    let written = run.written_at_refusal.unwrap();
    assert!(
        written <= next * CHUNK,
        "{lie:?}: {written} bytes of slot B written before the refusal at chunk {next}"
    );
    assert_installed_through_fallback(&rig, &run);
    rig.h.server.shutdown().await.unwrap();
    (run, kind, error, next)
}

fn assert_installed_through_fallback(rig: &Rig, run: &Run) {
    assert_eq!(
        run.outcome,
        Outcome::RebootRequested {
            release_id: rig.update.id.parse().unwrap(),
            version: "1.1.0".parse().unwrap()
        }
    );
    let wrong = rig.watch.wrong.lock().unwrap().clone();
    assert!(
        wrong.is_empty(),
        "bytes unlike the image were written: {wrong:?}"
    );
    assert_eq!(run.device.trial().map(|(slot, _)| slot), Some(Slot::B));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_cdn_serves_every_chunk_by_range_requests() {
    let rig = rig(cdn_template).await;
    // 8 chunks per request: many requests, each starting at a chunk.
    let config = AgentConfig {
        payload_request_bytes: 8 * WIRE_CHUNK + 100,
        ..fast_config()
    };
    let run = rig.install(rig.device(), config).await;
    assert!(run.refusal().is_none(), "{:?}", run.events);
    assert!(run.direct_completed(), "{:?}", run.events);
    assert_installed_through_fallback(&rig, &run);
    let ranges = rig.cdn.ranges.lock().unwrap().clone();
    let payload = rig.update.payload.len() as u64;
    assert_eq!(ranges.len(), 160_usize.div_ceil(8));
    let mut next = 0;
    for (first, last) in &ranges {
        assert_eq!(*first, next, "contiguous, chunk-aligned ranges");
        assert_eq!((last + 1 - first) % WIRE_CHUNK, 0, "whole chunks");
        next = last + 1;
    }
    assert_eq!(next, payload);

    // Reboot: the image the direct download wrote boots.
    let mut device = run.device;
    let booted = device.boot().unwrap();
    assert_eq!((booted.slot, booted.trial), (Slot::B, true));
    rig.h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_is_refused_by_the_chunk_check_and_the_rest_comes_from_the_server() {
    let (_, kind, error, next) = refused(Lie::FlipByte(37), fast_config()).await;
    assert_eq!(kind, DirectFailure::Chunk, "{error}");
    assert_eq!(next, 37, "chunks 0..37 were good and kept: {error}");
    assert!(error.contains("chunk 37"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_full_body_instead_of_206_is_refused() {
    let (_, kind, error, next) = refused(Lie::FullBody, fast_config()).await;
    assert_eq!(kind, DirectFailure::Status, "{error}");
    assert_eq!(next, 0);
    assert!(error.contains("HTTP 200 instead of 206"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_206_for_another_range_is_refused() {
    let (_, kind, error, _) = refused(Lie::WrongRange, fast_config()).await;
    assert_eq!(kind, DirectFailure::Range, "{error}");
    assert!(error.contains("Content-Range"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_chunk_past_the_range_is_refused() {
    let config = AgentConfig {
        payload_request_bytes: 8 * WIRE_CHUNK,
        ..fast_config()
    };
    let (_, kind, error, next) = refused(Lie::ExtraChunk, config).await;
    assert_eq!(kind, DirectFailure::TooLong, "{error}");
    assert!(next <= 8, "nothing past the first range: {next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_past_the_range_is_refused_before_the_body() {
    let (_, kind, error, next) = refused(Lie::DeclaresTooLong, fast_config()).await;
    assert_eq!(kind, DirectFailure::Length, "{error}");
    assert_eq!(next, 0, "refused on the headers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_answer_is_refused_and_resumed_by_chunk() {
    let (_, kind, error, next) = refused(Lie::TruncateAfter(50), fast_config()).await;
    assert_eq!(kind, DirectFailure::Truncated, "{error}");
    assert_eq!(next, 50, "the 50 whole chunks were kept: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_answer_times_out() {
    let config = AgentConfig {
        message_timeout: Duration::from_millis(700),
        ..fast_config()
    };
    let (_, kind, error, _) = refused(Lie::Stall, config).await;
    assert_eq!(kind, DirectFailure::Timeout, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdn_certificate_of_another_ca_is_refused() {
    // The CDN presents a localhost certificate of a CA the device does not pin.
    let other = tempfile::tempdir().unwrap();
    let foreign = make_tls(other.path());
    let impostor = Cdn::start().await;
    *impostor.tls.lock().unwrap() = Some((foreign.files.cert, foreign.files.key));
    let rig = rig_on(impostor, cdn_template).await;
    let run = rig.install(rig.device(), fast_config()).await;
    let (kind, error, _) = run.refusal().expect("refused");
    assert_eq!(kind, DirectFailure::Tls, "{error}");
    assert!(
        rig.cdn.ranges.lock().unwrap().is_empty(),
        "no request was sent"
    );
    assert_installed_through_fallback(&rig, &run);
    rig.h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_payload_url_is_refused_while_the_server_uses_tls() {
    let rig = rig(|addr| format!("http://localhost:{}/{{object}}", addr.port())).await;
    let run = rig.install(rig.device(), fast_config()).await;
    let (kind, error, _) = run.refusal().expect("refused");
    assert_eq!(kind, DirectFailure::Url, "{error}");
    assert!(error.contains("must be https://"), "{error}");
    assert!(rig.cdn.ranges.lock().unwrap().is_empty());
    assert_installed_through_fallback(&rig, &run);
    rig.h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_direct_download_resumes_from_the_durable_chunk_by_range() {
    let rig = rig(cdn_template).await;
    // The first session stops at the refusal (shut down before the gRPC
    // download gets far): progress is durable every 16 chunks (4 KiB).
    rig.cdn.set(Lie::TruncateAfter(100));
    let mut device = rig.device();
    device.boot().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_tx = Mutex::new(Some(stop_tx));
    let mut agent = Agent::new(rig.identity.clone(), device, fast_config())
        .unwrap()
        .with_observer(move |e: &Event| {
            if matches!(e, Event::DirectDownloadFailed { .. })
                && let Some(tx) = stop_tx.lock().unwrap().take()
            {
                let _ = tx.send(());
            }
        });
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        agent.run(async {
            let _ = stop_rx.await;
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(outcome, Outcome::Shutdown);
    let (_, _, durable) = agent
        .device()
        .install_progress()
        .expect("an install in progress");
    assert!(
        durable >= 96,
        "durable up to the last progress point: {durable}"
    );

    // Next boot: the honest CDN is asked from that chunk on, by range.
    rig.cdn.set(Lie::None);
    rig.cdn.ranges.lock().unwrap().clear();
    let run = rig.install(agent.into_device(), fast_config()).await;
    assert!(run.direct_completed(), "{:?}", run.events);
    let start = run
        .events
        .iter()
        .find_map(|e| match e {
            Event::DirectDownloadStarted { start_chunk, .. } => Some(*start_chunk),
            _ => None,
        })
        .unwrap();
    assert!(
        start >= durable,
        "resumed at {start}, durable was {durable}"
    );
    assert!(start > 0);
    let first = rig.cdn.ranges.lock().unwrap()[0];
    assert_eq!(
        first.0,
        u64::from(start) * WIRE_CHUNK,
        "the range starts at the resume chunk"
    );
    assert_installed_through_fallback(&rig, &run);
    rig.h.server.shutdown().await.unwrap();
}
