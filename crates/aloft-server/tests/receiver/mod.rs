//! A real webhook receiver for tests: an HTTP/1.1 server on 127.0.0.1 that
//! records every request, answers 503 to the first N, and checks each
//! signature the way ARCHITECTURE.md tells receivers to.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{KeyInit as _, Mac as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub key: String,
    pub kind: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub status: u16,
}

impl Delivery {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<Delivery>>>,
    pub fail_next: Arc<AtomicU32>,
}

impl Receiver {
    /// Starts a receiver that answers 503 to its first `fail_first` requests.
    pub async fn start(fail_first: u32) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let fail_next = Arc::new(AtomicU32::new(fail_first));
        let (l, f) = (log.clone(), fail_next.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (log, fail) = (l.clone(), f.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (log, fail) = (log.clone(), fail.clone());
                            async move {
                                let h = |n: &str| {
                                    req.headers()
                                        .get(n)
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or_default()
                                        .to_owned()
                                };
                                let (key, kind, timestamp, signature) = (
                                    h("aloft-idempotency-key"),
                                    h("aloft-event-kind"),
                                    h("aloft-timestamp"),
                                    h("aloft-signature"),
                                );
                                let body =
                                    req.into_body().collect().await.unwrap().to_bytes().to_vec();
                                let failing = fail
                                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                        n.checked_sub(1)
                                    })
                                    .is_ok();
                                let status = if failing { 503 } else { 200 };
                                log.lock().unwrap().push(Delivery {
                                    key,
                                    kind,
                                    timestamp,
                                    signature,
                                    body,
                                    status,
                                });
                                let mut res =
                                    hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                                *res.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                                Ok::<_, std::convert::Infallible>(res)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            log,
            fail_next,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn all(&self) -> Vec<Delivery> {
        self.log.lock().unwrap().clone()
    }

    /// Requests answered 200.
    pub fn delivered(&self) -> Vec<Delivery> {
        self.all().into_iter().filter(|d| d.status == 200).collect()
    }

    /// Waits until `pred` holds for the log (or panics after `secs`).
    pub async fn wait(&self, secs: u64, what: &str, pred: impl Fn(&[Delivery]) -> bool) {
        let until = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if pred(&self.all()) {
                return;
            }
            assert!(
                std::time::Instant::now() < until,
                "receiver never saw {what}: {:#?}",
                self.all()
                    .iter()
                    .map(|d| (&d.key, d.status))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What a receiver must do (ARCHITECTURE.md, "Webhooks"): recompute
/// HMAC-SHA256(secret, timestamp "." body), compare in constant time, and
/// refuse a timestamp more than 300 s from its clock.
pub fn verify(secret: &[u8], d: &Delivery, now: u64) -> Result<(), &'static str> {
    let ts: u64 = d.timestamp.parse().map_err(|_| "no timestamp")?;
    if now.abs_diff(ts) > 300 {
        return Err("stale: older than 5 minutes (a replay?)");
    }
    let sig = d.signature.strip_prefix("v1=").ok_or("no v1 signature")?;
    let sig = hex::decode(sig).map_err(|_| "signature not hex")?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(d.timestamp.as_bytes());
    mac.update(b".");
    mac.update(&d.body);
    mac.verify_slice(&sig).map_err(|_| "bad signature")
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
