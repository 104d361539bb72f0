//! Benchmark 3, check-in rate: authenticated check-ins per second the real
//! `aloft-server` binary sustains (TLS, 127.0.0.1), many devices checking
//! in in a loop, against the fastest P-256 verification rate on one core of
//! this machine measured in the same run (ring, and `openssl speed` when
//! installed). Then a reconnect storm: N devices connected, the server is
//! killed and started again, and every device reconnects at once; reported
//! is the time until every device is authenticated again.
//!
//! A check-in is what the agent does per session: a new TLS connection
//! (from the device's own 127.x.y.z address), a Session stream, the
//! challenge, a signed hello, Welcome. The same is measured on kept-open
//! connections (Session stream only), which isolates the session cost from
//! the TLS handshake. Server CPU time comes from `/proc/PID/stat`, so the
//! rate per server CPU-second can be set against the one-core verify rate
//! although the load generator shares the machine's cores.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tonic::transport::Endpoint;

use crate::benches::device::{self, Signer};
use crate::benches::server::{self, DeviceCred, ServerProc};
use crate::benches::{Bench, Ctx, floor, verify};
use crate::measure::percentile;
use crate::report::{BenchResult, Status, Table};

/// The benchmark.
#[derive(Debug)]
pub struct CheckInRate;

impl Bench for CheckInRate {
    fn name(&self) -> &'static str {
        "check-in-rate"
    }

    fn title(&self) -> &'static str {
        "Check-in rate"
    }

    fn item(&self) -> u8 {
        3
    }

    fn run(&self, ctx: &Ctx) -> anyhow::Result<BenchResult> {
        server::runtime()?.block_on(run(ctx))
    }
}

/// What one check-in loop measured.
pub(crate) struct LoopResult {
    pub(crate) checkins: usize,
    pub(crate) errors: usize,
    pub(crate) first_error: Option<String>,
    pub(crate) window: f64,
    /// CPU seconds of every server-side process (see [`checkin_loop`]).
    pub(crate) server_cpu: f64,
    pub(crate) client_cpu: f64,
    pub(crate) latency_ms: Vec<f64>,
}

impl LoopResult {
    pub(crate) fn rate(&self) -> f64 {
        self.checkins as f64 / self.window
    }

    pub(crate) fn per_server_cpu(&self) -> f64 {
        self.checkins as f64 / self.server_cpu.max(1e-9)
    }
}

/// What a check-in loop talks to.
#[derive(Clone)]
pub(crate) enum Target {
    /// aloft-server; `fresh`: a new connection per check-in (as the agent
    /// does), else one kept connection per device.
    Aloft {
        endpoint: Box<Endpoint>,
        fresh: bool,
    },
    /// The bare rustls floor server (a new connection per check-in).
    Floor {
        connector: tokio_rustls::TlsConnector,
        addr: std::net::SocketAddr,
    },
}

/// `devices` devices check in in a loop for `warmup + window` against
/// `target`, whose process is `server_pid`; counts the check-ins completed
/// inside the window.
async fn checkin_loop(
    server_pid: u32,
    target: &Target,
    creds: &[DeviceCred],
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<LoopResult> {
    checkin_loop_over(
        &|| server::cpu_seconds(server_pid),
        std::slice::from_ref(target),
        creds,
        warmup,
        window,
    )
    .await
}

/// [`checkin_loop`] over several servers: device `i` talks to
/// `targets[i % len]`, and `server_cpu` reads the CPU seconds of every
/// process on the server side (replicas and their database).
pub(crate) async fn checkin_loop_over(
    server_cpu: &dyn Fn() -> anyhow::Result<f64>,
    targets: &[Target],
    creds: &[DeviceCred],
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<LoopResult> {
    let count = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let latency = Arc::new(Mutex::new(Vec::new()));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for (i, cred) in creds.iter().enumerate() {
        let signer = Signer::new(cred)?;
        let cred = cred.clone();
        let target = targets[i % targets.len()].clone();
        let (count, errors, measuring, latency, first_error) = (
            count.clone(),
            errors.clone(),
            measuring.clone(),
            latency.clone(),
            first_error.clone(),
        );
        let stop = stop_rx.clone();
        tasks.spawn(async move {
            let address = std::net::IpAddr::V4(Ctx::loopback(i as u32 + 1));
            let local = Some(address);
            let mut kept = None;
            while !*stop.borrow() {
                let t = Instant::now();
                let done = async {
                    match &target {
                        Target::Aloft { endpoint, fresh } => {
                            let channel = match (&kept, fresh) {
                                (Some(c), false) => Clone::clone(c),
                                _ => device::connect(endpoint, local).await?,
                            };
                            let session = device::check_in(&channel, &signer).await?;
                            drop(session);
                            if !fresh {
                                kept = Some(channel);
                            }
                        }
                        Target::Floor { connector, addr } => {
                            floor::check_in(connector, *addr, address, i as u32, &cred).await?;
                        }
                    }
                    Ok::<_, anyhow::Error>(())
                }
                .await;
                match done {
                    Ok(()) if measuring.load(Ordering::Relaxed) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        latency
                            .lock()
                            .unwrap()
                            .push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        kept = None;
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap()
                            .get_or_insert_with(|| format!("{e:#}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    tokio::time::sleep(warmup).await;
    let cpu0 = server_cpu()?;
    let own0 = server::own_cpu_seconds();
    let t0 = Instant::now();
    measuring.store(true, Ordering::SeqCst);
    tokio::time::sleep(window).await;
    measuring.store(false, Ordering::SeqCst);
    let elapsed = t0.elapsed().as_secs_f64();
    let server_cpu = server_cpu()? - cpu0;
    let client_cpu = server::own_cpu_seconds() - own0;
    let checkins = count.load(Ordering::SeqCst);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(40), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
    let latency_ms = latency.lock().unwrap().clone();
    let first_error = first_error.lock().unwrap().clone();
    Ok(LoopResult {
        checkins,
        errors: errors.load(Ordering::SeqCst),
        first_error,
        window: elapsed,
        server_cpu,
        client_cpu,
        latency_ms,
    })
}

/// What the reconnect storm measured.
struct Storm {
    devices: usize,
    connected_before: usize,
    restart_secs: f64,
    reauth_secs: Vec<f64>,
    all_back: bool,
    retries: usize,
}

/// Connects `creds` (each holding a session, reconnecting with 50-250 ms
/// jittered backoff when it drops), kills and restarts the server, and
/// times every device's next authentication from the kill.
async fn storm(ctx: &Ctx, srv: &mut ServerProc, creds: &[DeviceCred]) -> anyhow::Result<Storm> {
    let endpoint = server::endpoint(srv.addr, &srv.tls.ca_pem)?;
    let sessions = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let reauth = Arc::new(Mutex::new(Vec::new()));
    let kill_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let limit = Arc::new(Semaphore::new(128));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for (i, cred) in creds.iter().enumerate() {
        let signer = Signer::new(cred)?;
        let endpoint = endpoint.clone();
        let (sessions, retries, reauth, kill_at, limit) = (
            sessions.clone(),
            retries.clone(),
            reauth.clone(),
            kill_at.clone(),
            limit.clone(),
        );
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let local = Some(std::net::IpAddr::V4(Ctx::loopback(i as u32 + 1)));
            let mut first = true;
            while !*stop.borrow() {
                // Only the first connection is paced (a steady fleet); after
                // the restart every device reconnects at once.
                let permit = if first {
                    Some(limit.clone().acquire_owned().await)
                } else {
                    None
                };
                let r = async {
                    let channel = device::connect(&endpoint, local).await?;
                    let session = device::check_in(&channel, &signer).await?;
                    Ok::<_, anyhow::Error>((channel, session))
                }
                .await;
                drop(permit);
                match r {
                    Ok((_channel, mut session)) => {
                        if let Some(t) = *kill_at.lock().unwrap() {
                            reauth.lock().unwrap().push(t.elapsed().as_secs_f64());
                        }
                        first = false;
                        sessions.fetch_add(1, Ordering::SeqCst);
                        tokio::select! {
                            () = session.closed() => {}
                            _ = stop.wait_for(|s| *s) => return,
                        }
                    }
                    Err(_) => {
                        retries.fetch_add(1, Ordering::Relaxed);
                        let jitter = 50 + rand_below(200);
                        tokio::time::sleep(Duration::from_millis(jitter)).await;
                    }
                }
            }
        });
    }
    let n = creds.len();
    server::wait_until(Duration::from_secs(120), || {
        sessions.load(Ordering::SeqCst) >= n
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connected_before = sessions.load(Ordering::SeqCst);
    retries.store(0, Ordering::SeqCst);
    let t = Instant::now();
    *kill_at.lock().unwrap() = Some(t);
    srv.restart(ctx)?;
    let restart_secs = t.elapsed().as_secs_f64();
    let all_back = server::wait_until(Duration::from_secs(180), || {
        reauth.lock().unwrap().len() >= connected_before
    })
    .await;
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
    let reauth_secs = reauth.lock().unwrap().clone();
    Ok(Storm {
        devices: n,
        connected_before,
        restart_secs,
        reauth_secs,
        all_back,
        retries: retries.load(Ordering::SeqCst),
    })
}

fn rand_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b) % n.max(1)
}

async fn run(ctx: &Ctx) -> anyhow::Result<BenchResult> {
    let mut r = BenchResult::new("check-in-rate", "Check-in rate", 3, Status::Measured);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    // Baselines first, with nothing else of the bench running.
    let budget = Duration::from_millis(if ctx.quick { 300 } else { 1000 });
    let mut ring_rates = Vec::new();
    for _ in 0..ctx.reps(3, 1) {
        ring_rates.push(verify::ring_rate(budget)?);
    }
    let ring = crate::measure::median(&ring_rates);
    let mut fastest = ("ring", ring);
    match verify::openssl(ctx, if ctx.quick { 1 } else { 3 }) {
        Ok((_, rate)) => {
            r.figure("openssl_verifies_per_s", rate);
            if rate > fastest.1 {
                fastest = ("OpenSSL", rate);
            }
        }
        Err(e) => r.note(format!("OpenSSL baseline skipped: {e:#}")),
    }
    r.figure("ring_verifies_per_s", ring);
    r.figure("fastest_verifies_per_s", fastest.1);

    let loop_devices = if ctx.quick { 32 } else { 128 };
    let storm_devices = std::env::var("ALOFT_BENCH_STORM_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if ctx.quick { 300 } else { 5_000 });
    server::raise_nofile(4 * storm_devices as u64 + 8192);
    let mut srv = ServerProc::start(ctx, &ctx.scratch.join("checkin")).await?;
    let creds = srv
        .register("chk-", loop_devices.max(storm_devices))
        .await?;
    let endpoint = server::endpoint(srv.addr, &srv.tls.ca_pem)?;
    let warmup = Duration::from_secs(if ctx.quick { 1 } else { 2 });
    let window = Duration::from_secs(if ctx.quick { 3 } else { 10 });

    let mut t = Table::new(
        &format!(
            "Check-ins against the aloft-server binary over TLS, {loop_devices} devices in a loop, \
             {:.0} s window",
            window.as_secs_f64()
        ),
        &[
            "check-in",
            "check-ins/s",
            "server CPU (cores)",
            "per server CPU-second",
            "vs fastest verify/s (one core)",
            "latency p50 / p99",
            "errors",
        ],
    );
    let mut full_ratio = 0.0;
    // The floor: a bare rustls server, same certificate, TLS 1.3 and ring,
    // one handshake and one P-256 verify per connection (benches/floor.rs).
    let floor_srv = floor::FloorServer::start(
        &ctx.scratch.join("checkin-floor"),
        &srv.tls,
        &creds[..loop_devices],
    )?;
    let floor_target = Target::Floor {
        connector: floor::connector(&srv.tls.ca_pem)?,
        addr: floor_srv.addr,
    };
    let floor = checkin_loop(
        floor_srv.pid(),
        &floor_target,
        &creds[..loop_devices],
        warmup,
        window,
    )
    .await?;
    drop(floor_srv);
    if let Some(e) = &floor.first_error {
        r.note(format!("floor: first error: {e}"));
    }
    let floor_rate = floor.per_server_cpu();
    println!(
        "  floor (bare rustls: handshake + 1 verify): {:.0}/s, {floor_rate:.0} per server CPU-s, {} errors",
        floor.rate(),
        floor.errors
    );
    r.figure("floor.per_server_cpu_s", floor_rate);
    r.figure("floor.checkins_per_s", floor.rate());
    let server_pid = srv.pid().context("server not running")?;
    for (label, key, fresh) in [
        (
            "new TLS connection + session (as the agent)",
            "new_connection",
            true,
        ),
        ("session on a kept connection", "kept_connection", false),
    ] {
        let target = Target::Aloft {
            endpoint: Box::new(endpoint.clone()),
            fresh,
        };
        let lr = checkin_loop(server_pid, &target, &creds[..loop_devices], warmup, window).await?;
        let ratio = lr.per_server_cpu() / fastest.1;
        println!(
            "  {label}: {:.0}/s, server {:.2} cores, {:.0} per server CPU-s ({ratio:.2} of {:.0}), client {:.2} cores, {} errors",
            lr.rate(),
            lr.server_cpu / lr.window,
            lr.per_server_cpu(),
            fastest.1,
            lr.client_cpu / lr.window,
            lr.errors
        );
        t.row(&[
            label.to_string(),
            format!("{:.0}", lr.rate()),
            format!("{:.2}", lr.server_cpu / lr.window),
            format!("{:.0}", lr.per_server_cpu()),
            format!("{ratio:.2}"),
            format!(
                "{:.1} / {:.1} ms",
                percentile(&lr.latency_ms, 50.0),
                percentile(&lr.latency_ms, 99.0)
            ),
            lr.errors.to_string(),
        ]);
        r.figure(&format!("{key}.checkins_per_s"), lr.rate());
        r.figure(&format!("{key}.per_server_cpu_s"), lr.per_server_cpu());
        r.figure(&format!("{key}.server_cores"), lr.server_cpu / lr.window);
        r.figure(&format!("{key}.client_cores"), lr.client_cpu / lr.window);
        r.figure(&format!("{key}.errors"), lr.errors as f64);
        r.figure(&format!("{key}.p50_ms"), percentile(&lr.latency_ms, 50.0));
        r.figure(&format!("{key}.p99_ms"), percentile(&lr.latency_ms, 99.0));
        if let Some(e) = &lr.first_error {
            r.note(format!("{label}: first error: {e}"));
        }
        if fresh {
            full_ratio = ratio;
            r.goal(
                "check-ins per server CPU-second / fastest P-256 verifies per second on one core",
                ">= 0.80",
                format!(
                    "{ratio:.2} ({:.0} vs {} {:.0}/s; wall rate {:.0}/s with the server using \
                     {:.2} of {cores} cores)",
                    lr.per_server_cpu(),
                    fastest.0,
                    fastest.1,
                    lr.rate(),
                    lr.server_cpu / lr.window
                ),
                Some(ratio >= 0.8),
            );
        } else {
            r.goal(
                "same, sessions on kept-open connections (no TLS handshake)",
                "(reference)",
                format!(
                    "{ratio:.2} ({:.0}/s per server CPU-second)",
                    lr.per_server_cpu()
                ),
                None,
            );
        }
    }
    t.row(&[
        "floor: bare rustls, handshake + 1 P-256 verify".to_string(),
        format!("{:.0}", floor.rate()),
        format!("{:.2}", floor.server_cpu / floor.window),
        format!("{floor_rate:.0}"),
        format!("{:.2}", floor_rate / fastest.1),
        format!(
            "{:.1} / {:.1} ms",
            percentile(&floor.latency_ms, 50.0),
            percentile(&floor.latency_ms, 99.0)
        ),
        floor.errors.to_string(),
    ]);
    r.tables.push(t);
    r.figure("ratio_new_connection", full_ratio);
    let new_conn = r
        .figures
        .get("new_connection.per_server_cpu_s")
        .copied()
        .unwrap_or(0.0);
    let vs_floor = new_conn / floor_rate.max(1e-9);
    r.figure("new_connection.vs_floor", vs_floor);
    r.goal(
        "check-ins on new connections per server CPU-second / the bare rustls floor (same \
         certificate, TLS 1.3, ring; handshake + 1 verify per connection)",
        ">= 0.80",
        format!("{vs_floor:.2} ({new_conn:.0} vs {floor_rate:.0})"),
        Some(vs_floor >= 0.8),
    );

    let s = storm(ctx, &mut srv, &creds[..storm_devices]).await?;
    srv.stop();
    let back = s.reauth_secs.len();
    let last = s.reauth_secs.iter().copied().fold(0.0, f64::max);
    println!(
        "  storm: {back}/{} back, last after {last:.2} s (restart {:.2} s), {} retries",
        s.connected_before, s.restart_secs, s.retries
    );
    let mut st = Table::new(
        &format!(
            "Reconnect storm: {} devices connected, the server killed (SIGKILL) and started \
             again; every device reconnects at once (failed attempts retry after 50-250 ms)",
            s.devices
        ),
        &[
            "devices",
            "server back (listening)",
            "all re-authenticated",
            "p50 / p99 re-auth",
            "failed attempts",
        ],
    );
    st.row(&[
        format!("{back} of {}", s.connected_before),
        format!("{:.2} s", s.restart_secs),
        if s.all_back {
            format!("{last:.2} s")
        } else {
            format!("not within 180 s ({back} back)")
        },
        format!(
            "{:.2} / {:.2} s",
            percentile(&s.reauth_secs, 50.0),
            percentile(&s.reauth_secs, 99.0)
        ),
        s.retries.to_string(),
    ]);
    r.tables.push(st);
    r.figure("storm.devices", s.connected_before as f64);
    r.figure("storm.all_back_s", last);
    r.figure("storm.restart_s", s.restart_secs);
    r.figure("storm.retries", s.retries as f64);
    r.figure("storm.reauth_p50_s", percentile(&s.reauth_secs, 50.0));
    r.figure("storm.reauth_p99_s", percentile(&s.reauth_secs, 99.0));
    r.goal(
        &format!(
            "reconnect storm: {} devices authenticated again after a server restart",
            s.connected_before
        ),
        "(report)",
        if s.all_back {
            format!(
                "{last:.2} s from the kill ({:.0} re-auths/s)",
                back as f64 / last.max(1e-9)
            )
        } else {
            format!("only {back} within 180 s")
        },
        None,
    );
    r.note(format!(
        "The verify baseline is one core (ring {ring:.0}/s, fastest {} {:.0}/s, measured just \
         before); the server's rate is divided by the CPU time it used, because the load \
         generator (TLS clients signing with ring) shares the {cores} cores.",
        fastest.0, fastest.1
    ));
    r.note(
        "What limits it (perf of the server, 2026-12-03): a new connection is mostly the TLS \
         1.3 handshake (X25519 and the certificate's P-256 signature: the `ecp_nistz256` and \
         `x25519` samples dominate), which the floor pays too; the floor row is a bare rustls \
         server with the same certificate, versions and ring provider that sends a challenge \
         and verifies one P-256 signature per connection (benches/floor.rs, its own process, \
         CPU from /proc). What Aloft adds on top is the HTTP/2 connection and stream, tonic's \
         framing and tasks, a sled read and compare-and-swap of the device record, and malloc \
         (about 8% of the samples). Decompressing the stored SEC1 key on every hello (p256's \
         square root, 4% of the samples) is gone: the server keeps a bounded cache of device \
         keys in ring's form (in a --quick run of 32 devices, the kept-connection rate went \
         from 4,850 to 6,100 per server CPU-second).",
    );
    Ok(r)
}
