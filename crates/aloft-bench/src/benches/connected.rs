//! Benchmark 2, connected devices on one server: the real `aloft-server`
//! binary (TLS, 127.0.0.1) holds N authenticated device sessions, each on
//! its own TLS connection from its own 127.x.y.z source address. Reported:
//! the server's RSS per connected device (the growth of `VmRSS` from before
//! the first connection, divided by the devices connected, at several
//! steps) and the largest N reached.
//!
//! The devices are [`super::device`] sessions (the agent's protocol without
//! a flash): an idle agent holds exactly this, one connection with one open
//! Session stream, between heartbeats.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::benches::device::{self, Signer};
use crate::benches::server::{self, ServerProc};
use crate::benches::{Bench, Ctx};
use crate::report::{BenchResult, Status, Table};

/// The benchmark.
#[derive(Debug)]
pub struct ConnectedDevices;

/// Goal: server memory per idle device.
const GOAL_BYTES: f64 = 16.0 * 1024.0;
/// Goal: devices on one server.
const GOAL_DEVICES: usize = 100_000;
/// Connections being set up at once.
const CONNECT_CONCURRENCY: usize = 128;

impl Bench for ConnectedDevices {
    fn name(&self) -> &'static str {
        "connected-devices"
    }

    fn title(&self) -> &'static str {
        "Connected devices on one server"
    }

    fn item(&self) -> u8 {
        2
    }

    fn run(&self, ctx: &Ctx) -> anyhow::Result<BenchResult> {
        let n = std::env::var("ALOFT_BENCH_DEVICES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if ctx.quick { 500 } else { 19_000 });
        server::runtime()?.block_on(run(ctx, n))
    }
}

async fn run(ctx: &Ctx, n: usize) -> anyhow::Result<BenchResult> {
    let mut r = BenchResult::new(
        "connected-devices",
        "Connected devices on one server",
        2,
        Status::Measured,
    );
    let nofile = server::raise_nofile(2 * n as u64 + 4096);
    // Each side holds one descriptor per device: stay under the limit.
    let wanted = n;
    let n = n.min((nofile as usize).saturating_sub(1024));
    let mut srv = ServerProc::start(ctx, &ctx.scratch.join("connected")).await?;
    let (creds, reg_secs) = {
        let t = Instant::now();
        let c = srv.register("conn-", n).await?;
        (c, t.elapsed().as_secs_f64())
    };
    println!(
        "  registered {n} devices in {reg_secs:.1} s ({:.0}/s); open files limit {nofile}",
        n as f64 / reg_secs
    );
    let endpoint = server::endpoint(srv.addr, &srv.tls.ca_pem)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A heap profiler can attach before any device connects (for example
    // `heaptrack -p PID`): ALOFT_BENCH_ATTACH_WAIT=SECS pauses here, and
    // ALOFT_BENCH_HOLD_SECS holds the devices connected at the end.
    let attach_wait = env_secs("ALOFT_BENCH_ATTACH_WAIT");
    if !attach_wait.is_zero() {
        println!(
            "  server pid {}: waiting {attach_wait:?} for a profiler to attach",
            srv.pid().unwrap_or(0)
        );
        tokio::time::sleep(attach_wait).await;
    }
    let base_rss = srv.rss()?;
    let steps: Vec<usize> = [n / 4, n / 2, 3 * n / 4, n]
        .into_iter()
        .filter(|&s| s > 0)
        .collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let alive = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let limit = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = JoinSet::new();
    let mut t = Table::new(
        "Server RSS while devices connect (each: own TLS connection from its own 127.x.y.z \
         address, one open authenticated Session stream)",
        &[
            "devices connected",
            "server RSS",
            "growth since 0 devices",
            "per device",
            "bench (client) RSS",
        ],
    );
    t.row(&[
        "0".to_string(),
        format!("{:.1} MiB", base_rss as f64 / 1048576.0),
        "-".into(),
        "-".into(),
        "-".into(),
    ]);
    let started = Instant::now();
    let mut launched = 0usize;
    let mut per_device = Vec::new();
    let mut reached = 0usize;
    let mut last_step_rss = base_rss;
    let mut client_rss = 0;
    for &step in &steps {
        while launched < step {
            let i = launched;
            launched += 1;
            let permit = limit.clone().acquire_owned().await?;
            let signer = Signer::new(&creds[i])?;
            let endpoint = endpoint.clone();
            let (alive, failed, first_error) = (alive.clone(), failed.clone(), first_error.clone());
            let mut stop = stop_rx.clone();
            tasks.spawn(async move {
                let local = Some(std::net::IpAddr::V4(Ctx::loopback(i as u32 + 1)));
                let session = async {
                    let channel = device::connect(&endpoint, local).await?;
                    let session = device::check_in(&channel, &signer).await?;
                    Ok::<_, anyhow::Error>((channel, session))
                }
                .await;
                drop(permit);
                match session {
                    Ok((_channel, mut session)) => {
                        alive.fetch_add(1, Ordering::SeqCst);
                        tokio::select! {
                            () = session.closed() => {}
                            _ = stop.wait_for(|s| *s) => {}
                        }
                        alive.fetch_sub(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        first_error
                            .lock()
                            .unwrap()
                            .get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            });
        }
        // Wait for this step's connections to settle.
        let settled = server::wait_until(Duration::from_secs(300), || {
            alive.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) >= step
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let connected = alive.load(Ordering::SeqCst);
        let rss = srv.rss()?;
        client_rss = server::proc_status_kib(std::process::id(), "VmRSS:").unwrap_or(0) * 1024;
        let growth = rss.saturating_sub(base_rss);
        let each = growth as f64 / connected.max(1) as f64;
        println!(
            "  {connected} connected ({} failed) after {:.1} s: server RSS {:.1} MiB, {:.1} KiB/device",
            failed.load(Ordering::SeqCst),
            started.elapsed().as_secs_f64(),
            rss as f64 / 1048576.0,
            each / 1024.0
        );
        t.row(&[
            connected.to_string(),
            format!("{:.1} MiB", rss as f64 / 1048576.0),
            format!("{:.1} MiB", growth as f64 / 1048576.0),
            format!("{:.1} KiB", each / 1024.0),
            format!("{:.0} MiB", client_rss as f64 / 1048576.0),
        ]);
        r.samples(
            &format!("server_rss_bytes_at_{step}"),
            &[rss as f64, connected as f64],
        );
        per_device.push((connected, rss));
        last_step_rss = rss;
        reached = reached.max(connected);
        if !settled || failed.load(Ordering::SeqCst) > step / 20 {
            r.note(format!(
                "Stopped adding devices at step {step}: {} connections failed (first error: {}).",
                failed.load(Ordering::SeqCst),
                first_error.lock().unwrap().clone().unwrap_or_default()
            ));
            break;
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Still connected after the last step, and the server's RSS then.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = alive.load(Ordering::SeqCst);
    let final_rss = srv.rss().unwrap_or(last_step_rss);
    tokio::time::sleep(env_secs("ALOFT_BENCH_HOLD_SECS")).await;
    let _ = stop_tx.send(true);
    let drain = tokio::time::timeout(Duration::from_secs(30), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drain.is_err() {
        tasks.abort_all();
    }
    srv.stop();

    // Per device: the slope between the first and last step (what each
    // further device costs), and the overall growth / devices.
    let overall = final_rss.saturating_sub(base_rss) as f64 / still.max(1) as f64;
    let slope = match (per_device.first(), per_device.last()) {
        (Some(&(n0, m0)), Some(&(n1, m1))) if n1 > n0 => (m1 as f64 - m0 as f64) / (n1 - n0) as f64,
        _ => overall,
    };
    r.tables.push(t);
    r.figure("devices_requested", n as f64);
    r.figure("devices_reached", reached as f64);
    r.figure("devices_connected_at_end", still as f64);
    r.figure("server_rss_base_bytes", base_rss as f64);
    r.figure("server_rss_final_bytes", final_rss as f64);
    r.figure("server_bytes_per_device", overall);
    r.figure("server_bytes_per_device_slope", slope);
    r.figure("register_per_s", n as f64 / reg_secs);
    r.figure("connect_seconds", connect_secs);
    r.figure("open_files_limit", nofile as f64);
    r.goal(
        "server memory per connected idle device (RSS growth / devices)",
        "<= 16 KiB",
        format!(
            "{:.1} KiB ({:.0}% of the goal; marginal {:.1} KiB)",
            overall / 1024.0,
            100.0 * overall / GOAL_BYTES,
            slope / 1024.0
        ),
        Some(overall <= GOAL_BYTES),
    );
    r.goal(
        "devices held by one server (largest N reached in this run)",
        ">= 100,000",
        format!(
            "{reached} of {n} tried ({:.0}% of the goal)",
            100.0 * reached as f64 / GOAL_DEVICES as f64
        ),
        Some(reached >= GOAL_DEVICES),
    );
    let projected = base_rss as f64 + overall * GOAL_DEVICES as f64;
    r.note(format!(
        "Method: the aloft-server binary (TLS, 127.0.0.1) after registering {n} devices \
         ({:.0} registrations/s through the admin API); then devices connect {CONNECT_CONCURRENCY} \
         at a time, each a TLS connection from its own 127.x.y.z address with one authenticated \
         Session stream held open (what an idle agent holds between heartbeats); RSS from \
         /proc/PID/status. The {n} of this run took {connect_secs:.0} s to connect; at the \
         measured cost, 100,000 devices would take about {:.1} GiB of server memory.",
        n as f64 / reg_secs,
        projected / f64::from(1u32 << 30)
    ));
    if reached < GOAL_DEVICES && n < wanted {
        r.note(format!(
            "What stops this run short of 100,000: the open-files limit. Every device costs the \
             server one descriptor; this environment's hard RLIMIT_NOFILE is {nofile} and cannot \
             be raised without CAP_SYS_RESOURCE (setrlimit refused), so one server process can \
             hold at most about {nofile} connections here ({wanted} asked for, {n} tried; \
             ALOFT_BENCH_DEVICES sets N). Memory is not the limit: the load generator in the \
             same machine used {:.0} MiB for its side of the connections.",
            client_rss as f64 / 1048576.0
        ));
    } else if reached < GOAL_DEVICES {
        r.note(format!(
            "The run stops at {n} devices to finish in minutes (ALOFT_BENCH_DEVICES sets N); \
             the load generator on the same machine used {:.0} MiB for its side.",
            client_rss as f64 / 1048576.0
        ));
    }
    r.note(
        "Where an idle device's server memory goes (heaptrack attached to the server of a \
         3,000-device run with ALOFT_BENCH_ATTACH_WAIT, heap bytes live at the peak per device, \
         2026-12-03): h2 allocates a 16 KiB write buffer, an 8 KiB read buffer and a 4 KiB HPACK \
         decoder buffer for every connection as it starts and keeps them (28.7 KiB, not \
         configurable in h2 0.4); h2 stream and connection state 5.5 KiB; rustls 6.2 KiB (its \
         4 KiB record buffer, which it does shrink when idle, and the connection with its key \
         schedule); the hyper connection task 2.5 KiB; the session task 2.4 KiB; the accepted \
         connection 1.8 KiB; tonic's codec buffers 2.1 KiB; the session channel 0.8 KiB; rest \
         1.9 KiB: 53 KB in all, of which RSS shows the pages touched. Aloft's own part was cut \
         from 23 KiB to 5 KiB: codec buffers of 1 KiB instead of tonic's 8 KiB per direction \
         (aloft_protocol::codec), a channel of boxed messages, and a session task whose opening \
         and rare work run boxed. The goal of 16 KiB needs h2 to allocate its buffers on demand \
         and release them when idle (as rustls does): the h2 floor alone is 28.7 KiB.",
    );
    Ok(r)
}

/// A duration in whole seconds from environment variable `name` (zero when
/// unset or not a number).
fn env_secs(name: &str) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}
