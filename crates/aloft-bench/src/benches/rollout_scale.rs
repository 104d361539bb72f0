//! Benchmark 5: the rollout engine at fleet scale.
//!
//! A real sled store (`aloft_server::store::SledStore`, in the scratch
//! directory) is filled with 1,000,000 device records through the store API.
//! Then, against it:
//! - **create + membership**: `Rollout::new` and the stage of every device
//!   (store scan in pages, decode, `Rollout::classify`), counted per stage;
//! - **check-in decision**: for every device, in random order, its record is
//!   read from the store and `Rollout::decide` runs (the first check-in wave,
//!   which also fills the rollout's device table); p50/p99 of the decision
//!   alone and with the store read.
//!
//! - **the server's check-in path**: the same store behind the server's own
//!   `aloft_server::rollouts::Rollouts` (what a hello calls): `create` with a
//!   million devices registered, then every device's first
//!   `Rollouts::check_in` in random order, which decides and writes the
//!   device's rollout record to sled. This is the added latency of the
//!   rollout decision in a check-in (the goal); the engine-only figures
//!   above it show where the time goes.
//!
//! The server computes stage membership lazily at check-in (a pure function
//! of rollout id, device id and attributes), so its `create` does not scan;
//! the full membership scan is measured separately, as the status view of a
//! rollout over the whole fleet would need it.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use aloft_protocol::{DeviceId, UnixTime, Version, pb};
use aloft_rollout::DeviceView;
use aloft_rollout::rollout::{Decision, GlobalLoad, Rollout, RolloutSpec};
use aloft_server::rollouts::{CheckIn, RolloutSettings, Rollouts};
use aloft_server::store::{ReleaseRecord, SledStore, Store};
use anyhow::{Context, anyhow};

use crate::benches::{Bench, Ctx};
use crate::measure::{median, percentile, timed};
use crate::report::{BenchResult, Status, Table};

/// The benchmark.
#[derive(Debug)]
pub struct RolloutScale;

impl Bench for RolloutScale {
    fn name(&self) -> &'static str {
        "rollout-scale"
    }

    fn title(&self) -> &'static str {
        "Rollout engine at fleet scale"
    }

    fn item(&self) -> u8 {
        5
    }

    fn run(&self, ctx: &Ctx) -> anyhow::Result<BenchResult> {
        run(ctx)
    }
}

const REGIONS: [&str; 4] = ["eu", "us", "ap", "sa"];
const ZONES: [&str; 4] = [
    "Europe/Berlin",
    "America/New_York",
    "Asia/Tokyo",
    "America/Sao_Paulo",
];
const PAGE: usize = 10_000;
const NOW: u64 = 1_700_000_000;

fn device_id(i: u32) -> anyhow::Result<DeviceId> {
    DeviceId::new(&format!("dev-{i:07}")).map_err(|e| anyhow!("device id: {e}"))
}

fn record(i: u32, public_key: &[u8]) -> pb::DeviceInfo {
    let r = i as usize;
    pb::DeviceInfo {
        device_id: format!("dev-{i:07}"),
        public_key: public_key.to_vec(),
        attributes: Some(pb::DeviceAttributes {
            product: "sensor".into(),
            hardware: if i.is_multiple_of(3) {
                "rev-a"
            } else {
                "rev-b"
            }
            .into(),
            region: REGIONS[r % REGIONS.len()].into(),
            time_zone: ZONES[r % ZONES.len()].into(),
            tags: if i.is_multiple_of(50) {
                vec!["lab".into()]
            } else {
                vec!["field".into()]
            },
            test_device: i % 10_000 == 1,
        }),
        firmware_version: "1.0.0".into(),
        security_version: 1,
        registered_at: NOW - 86_400,
        ..Default::default()
    }
}

fn view(rec: &pb::DeviceInfo) -> anyhow::Result<DeviceView> {
    let a = rec.attributes.clone().unwrap_or_default();
    Ok(DeviceView {
        id: DeviceId::new(&rec.device_id).map_err(|e| anyhow!("device id: {e}"))?,
        product: a.product,
        hardware: a.hardware,
        version: Version::parse(&rec.firmware_version).map_err(|e| anyhow!("version: {e}"))?,
        region: a.region,
        time_zone: a.time_zone,
        tags: a.tags,
        test: a.test_device,
    })
}

/// The rollout both runs use: the server's create request.
fn request() -> pb::CreateRolloutRequest {
    let stage = |name: &str, percent: u32, test: bool| pb::RolloutStage {
        name: name.into(),
        percent,
        test_devices_only: test,
        soak_secs: 3600,
        min_sample: 10,
        max_failure_permille: 50,
    };
    pb::CreateRolloutRequest {
        rollout_id: "fleet-2.0".into(),
        release_id: "fw-2.0.0".into(),
        selector:
            "product = sensor and region in (eu, us, ap, sa) and version < 2.0.0 and not tag = lab"
                .into(),
        stages: vec![
            stage("test", 0, true),
            stage("canary", 1, false),
            stage("early", 10, false),
            stage("half", 50, false),
            stage("all", 100, false),
        ],
        ..Default::default()
    }
}

/// The same rollout as the engine sees it.
fn spec() -> anyhow::Result<RolloutSpec> {
    RolloutSpec::from_proto(&request(), Version::new(2, 0, 0)).map_err(|e| anyhow!("spec: {e}"))
}

/// Runs a future to completion on this thread (for `Store::flush`, whose
/// future is completed by sled's own threads).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => return v,
            std::task::Poll::Pending => std::thread::park(),
        }
    }
}

/// A deterministic permutation of `0..n`.
fn shuffled(n: u32) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n).collect();
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

fn run(ctx: &Ctx) -> anyhow::Result<BenchResult> {
    let n = if ctx.quick { 100_000 } else { 1_000_000 };
    let mut r = run_with(ctx, n)?;
    r.note(
        "Allocator: glibc malloc, as in the aloft-server binary. About half the samples of the \
         whole-fleet membership pass are in `_int_malloc`, `malloc_consolidate` and `free` \
         (decoding pages of records on a heap that sled's cache of a million records has \
         fragmented): it took 4.4 s with mimalloc and 1.43 s with jemalloc preloaded in earlier \
         runs. The server keeps glibc because mimalloc added 23 KiB of RSS per idle connected \
         device (69 against 46 KiB, benchmark 2), and the server never makes this pass: \
         membership is computed per device at check-in.",
    );
    Ok(r)
}

fn run_with(ctx: &Ctx, n: u32) -> anyhow::Result<BenchResult> {
    let mut r = BenchResult::new(
        "rollout-scale",
        "Rollout engine at fleet scale",
        5,
        Status::Measured,
    );
    let dir = ctx.scratch.join("rollout-scale");
    let store = Arc::new(SledStore::open(&dir).map_err(|e| anyhow!("opening sled: {e}"))?);
    let key = aloft_protocol::SecretKey::generate()
        .public_key()
        .to_sec1_compressed();

    // --- fill ---
    let start = Instant::now();
    for i in 0..n {
        store
            .insert_device(&record(i, &key))
            .map_err(|e| anyhow!("insert: {e}"))?;
    }
    block_on(store.flush()).map_err(|e| anyhow!("flush: {e}"))?;
    let fill = start.elapsed().as_secs_f64();
    r.figure("devices", f64::from(n));
    r.figure("fill_s", fill);

    // --- create + membership ---
    let now = UnixTime(NOW);
    let scan = || -> anyhow::Result<(Rollout, Vec<u64>, u64)> {
        let rollout = Rollout::new(spec()?, now, false).map_err(|e| anyhow!("rollout: {e}"))?;
        let stages = rollout.spec().stages.len();
        let mut counts = vec![0u64; stages + 1];
        let mut untargeted = 0u64;
        let mut after: Option<DeviceId> = None;
        loop {
            let page = store
                .list_devices(after.as_ref(), PAGE, &mut |_| true)
                .map_err(|e| anyhow!("list: {e}"))?;
            let Some(last) = page.last() else { break };
            after = Some(DeviceId::new(&last.device_id).map_err(|e| anyhow!("{e}"))?);
            for rec in &page {
                match rollout.classify(&view(rec)?) {
                    Some(stage) => counts[stage.unwrap_or(stages)] += 1,
                    None => untargeted += 1,
                }
            }
            if page.len() < PAGE {
                break;
            }
        }
        Ok((rollout, counts, untargeted))
    };
    let scans = ctx.reps(3, 2);
    let mut scan_s = Vec::with_capacity(scans);
    let mut last = None;
    for _ in 0..scans {
        let (result, secs) = timed(scan);
        last = Some(result?);
        scan_s.push(secs);
    }
    let create_s = median(&scan_s);
    let (mut rollout, counts, untargeted) = last.context("no membership scan ran")?;
    let targeted: u64 = counts.iter().sum();
    if targeted + untargeted != u64::from(n) {
        return Err(anyhow!(
            "membership saw {} devices, expected {n}",
            targeted + untargeted
        ));
    }

    // The store alone: the same paged scan, decoding only.
    let (scanned, store_scan_s) = timed(|| -> anyhow::Result<u64> {
        let mut seen = 0u64;
        let mut after: Option<DeviceId> = None;
        loop {
            let page = store
                .list_devices(after.as_ref(), PAGE, &mut |_| true)
                .map_err(|e| anyhow!("list: {e}"))?;
            let Some(last) = page.last() else { break };
            after = Some(DeviceId::new(&last.device_id).map_err(|e| anyhow!("{e}"))?);
            seen += page.len() as u64;
            if page.len() < PAGE {
                break;
            }
        }
        Ok(seen)
    });
    if scanned? != u64::from(n) {
        return Err(anyhow!("the store scan did not see every device"));
    }

    // The engine alone, over views already in memory.
    let views: Vec<DeviceView> = {
        let mut v = Vec::with_capacity(n as usize);
        for i in 0..n {
            v.push(view(&record(i, &key))?);
        }
        v
    };
    let (engine_counts, engine_s) = timed(|| {
        let mut c = vec![0u64; counts.len()];
        for v in &views {
            if let Some(stage) = rollout.classify(v) {
                c[stage.unwrap_or(counts.len() - 1)] += 1;
            }
        }
        c
    });
    if engine_counts != counts {
        return Err(anyhow!("in-memory membership differs from the store scan"));
    }
    drop(views);

    // --- check-in decisions, first wave, random order ---
    // Two operator advances: test devices, canary 1%, and now early 10%.
    rollout.advance(now).map_err(|e| anyhow!("advance: {e}"))?;
    rollout.advance(now).map_err(|e| anyhow!("advance: {e}"))?;
    let order = shuffled(n);
    let mut read_us = Vec::with_capacity(n as usize);
    let mut decide_us = Vec::with_capacity(n as usize);
    let mut offers = 0u64;
    for &i in &order {
        let id = device_id(i)?;
        let t0 = Instant::now();
        let rec = store
            .device(&id)
            .map_err(|e| anyhow!("read: {e}"))?
            .context("device missing")?;
        let t1 = Instant::now();
        let v = view(&rec)?;
        let decision = rollout.decide(&v, now, GlobalLoad::UNLIMITED);
        let t2 = Instant::now();
        if matches!(decision, Decision::Offer { .. }) {
            offers += 1;
        }
        black_box(decision);
        read_us.push((t1 - t0).as_secs_f64() * 1e6);
        decide_us.push((t2 - t1).as_secs_f64() * 1e6);
    }
    let total_us: Vec<f64> = read_us.iter().zip(&decide_us).map(|(a, b)| a + b).collect();
    let (d50, d99, dmax) = (
        percentile(&decide_us, 50.0),
        percentile(&decide_us, 99.0),
        percentile(&decide_us, 100.0),
    );
    let (t50, t99) = (percentile(&total_us, 50.0), percentile(&total_us, 99.0));

    let server = server_path(&store, &order, now)?;
    if server.offers != offers {
        return Err(anyhow!(
            "the server offered to {} devices, the engine to {offers}",
            server.offers
        ));
    }

    // --- tables ---
    let mut t = Table::new(
        &format!("{n} device records in sled (aloft-server SledStore)"),
        &["step", "time"],
    );
    t.row(&[
        "fill the store (insert_device one by one, then flush)".to_string(),
        format!("{fill:.1} s ({:.0} records/s)", f64::from(n) / fill),
    ]);
    t.row(&[
        format!(
            "create rollout + stage membership of every device (store scan in pages of {PAGE}, \
             decode, classify), median of {scans}"
        ),
        format!(
            "{create_s:.2} s (runs: {})",
            scan_s
                .iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ]);
    t.row(&[
        "of which: the store scan alone (list_devices pages, decode)".to_string(),
        format!("{store_scan_s:.2} s"),
    ]);
    t.row(&[
        "stage membership, engine only (views in memory)".to_string(),
        format!("{:.3} s", engine_s),
    ]);
    r.tables.push(t);

    let mut t = Table::new(
        "Stage membership",
        &["stage", "devices (first eligible stage)"],
    );
    for (i, c) in counts.iter().enumerate() {
        let name = rollout
            .spec()
            .stages
            .get(i)
            .map_or_else(|| "beyond last stage".to_string(), |s| s.name.clone());
        t.row(&[name, c.to_string()]);
    }
    t.row(&["not targeted".to_string(), untargeted.to_string()]);
    r.tables.push(t);

    let mut t = Table::new(
        &format!(
            "Per-check-in rollout decision, first check-in of each of the {n} devices in random order"
        ),
        &["", "p50", "p99", "max"],
    );
    t.row(&[
        "Rollout::decide (+ building the DeviceView)".to_string(),
        format!("{d50:.2} µs"),
        format!("{d99:.2} µs"),
        format!("{dmax:.0} µs"),
    ]);
    t.row(&[
        "store read of the device record + the above".to_string(),
        format!("{t50:.2} µs"),
        format!("{t99:.2} µs"),
        format!("{:.0} µs", percentile(&total_us, 100.0)),
    ]);
    let (s50, s99, smax) = (
        percentile(&server.check_in_us, 50.0),
        percentile(&server.check_in_us, 99.0),
        percentile(&server.check_in_us, 100.0),
    );
    t.row(&[
        "the server's Rollouts::check_in (decide + write the rollout's device record to sled)"
            .to_string(),
        format!("{s50:.2} µs"),
        format!("{s99:.2} µs"),
        format!("{smax:.0} µs"),
    ]);
    r.tables.push(t);
    let mut t = Table::new(
        "The server's rollouts over the same store",
        &["step", "time"],
    );
    t.row(&[
        format!("Rollouts::load with {n} devices registered, no rollout"),
        format!("{:.3} ms", server.load_s * 1e3),
    ]);
    t.row(&[
        "Rollouts::create (membership is computed lazily at check-in)".to_string(),
        format!("{:.3} ms", server.create_s * 1e3),
    ]);
    t.row(&[
        format!("first check-in of all {n} devices through Rollouts::check_in"),
        format!("{:.1} s", server.check_in_us.iter().sum::<f64>() / 1e6),
    ]);
    t.row(&[
        "Rollouts::tick with nothing due, after the wave (median of 20)".to_string(),
        format!("{:.3} ms", server.tick_ms),
    ]);
    t.row(&[
        format!(
            "Rollouts::load again, restoring {} device records of the rollout",
            server.restored
        ),
        format!("{:.2} s", server.reload_s),
    ]);
    r.tables.push(t);
    r.figure("server_tick_ms", server.tick_ms);
    r.goal(
        &format!("a rollout tick with nothing to do, {n} devices (the server's Rollouts::tick)"),
        "< 1 ms",
        format!("{:.3} ms", server.tick_ms),
        Some(server.tick_ms < 1.0 && n >= 1_000_000),
    );
    r.goal(
        &format!(
            "restart with {} rollout device records: Rollouts::load (the rest of a start does \
             not grow with the fleet)",
            server.restored
        ),
        "< 1 s",
        format!("{:.2} s", server.reload_s),
        Some(server.reload_s < 1.0 && n >= 1_000_000),
    );

    r.figure("server_create_ms", server.create_s * 1e3);
    r.figure("server_check_in_p50_us", s50);
    r.figure("server_check_in_p99_us", s99);
    r.figure("server_check_in_max_us", smax);
    r.figure("server_reload_s", server.reload_s);
    r.figure("create_and_membership_s", create_s);
    r.samples("create_and_membership_s", &scan_s);
    r.figure("membership_engine_only_s", engine_s);
    r.figure("store_scan_only_s", store_scan_s);
    r.figure("decide_p50_us", d50);
    r.figure("decide_p99_us", d99);
    r.figure("decide_max_us", dmax);
    r.figure("decide_median_us", median(&decide_us));
    r.figure("read_and_decide_p50_us", t50);
    r.figure("read_and_decide_p99_us", t99);
    r.figure("offers", offers as f64);
    r.goal(
        &format!(
            "create a rollout over {n} registered devices (the server's Rollouts::create; \
             membership is computed per device at check-in, inside the decision below)"
        ),
        "< 2 s",
        format!("{:.2} ms", server.create_s * 1e3),
        Some(server.create_s < 2.0 && n >= 1_000_000),
    );
    r.goal(
        &format!(
            "stage membership of all {n} devices in one pass (store scan, decode, classify: \
             what a whole-fleet preview would cost)"
        ),
        "< 2 s",
        format!("{create_s:.2} s"),
        Some(create_s < 2.0 && n >= 1_000_000),
    );
    r.goal(
        "rollout decision added to a check-in, p99 (the server's Rollouts::check_in)",
        "< 1 ms",
        format!("{s99:.1} µs (p50 {s50:.1} µs; engine alone p99 {d99:.1} µs)"),
        Some(s99 < 1000.0 && n >= 1_000_000),
    );
    r.note(
        "The decision figures exclude the gRPC session, the signature check and directive signing (benchmark 3 measures whole check-ins). The server's check-in includes writing the device's rollout record to sled (not flushed; the hello's flush covers it).",
    );
    r.note(format!(
        "Fleet: product `sensor`, 4 regions and time zones, 1 in 50 tagged `lab` (excluded by the selector), 1 in 10,000 a test device; stages test devices / 1% / 10% / 50% / 100%. The rollout was advanced to stage 2 (10%) before the wave, which offered the release to {offers} devices (no window, no pacing cap)."
    ));
    if n < 1_000_000 {
        r.note(format!(
            "Run with {n} devices (quick), so the goals are not judged: they are for 1,000,000."
        ));
    }
    drop(store);
    std::fs::remove_dir_all(&dir).ok();
    Ok(r)
}

/// What the server-path run measured.
struct ServerPath {
    load_s: f64,
    create_s: f64,
    check_in_us: Vec<f64>,
    offers: u64,
    restored: usize,
    reload_s: f64,
    /// Median of 20 ticks with nothing due.
    tick_ms: f64,
}

/// The server's `Rollouts` over `store`: load, create the same rollout
/// (advanced to its 10% stage like the engine run), then the first check-in
/// of every device in `order`, then a reload.
fn server_path(store: &Arc<SledStore>, order: &[u32], now: UnixTime) -> anyhow::Result<ServerPath> {
    let dyn_store: Arc<dyn Store> = store.clone();
    let (rollouts, load_s) =
        timed(|| Rollouts::load(dyn_store.clone(), RolloutSettings::default()));
    let rollouts = rollouts.map_err(|e| anyhow!("loading rollouts: {e}"))?;
    let release = ReleaseRecord {
        info: Some(pb::ReleaseInfo {
            release_id: "fw-2.0.0".into(),
            product: "sensor".into(),
            hardware: vec!["rev-a".into(), "rev-b".into()],
            version: "2.0.0".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let req = request();
    let (created, create_s) = timed(|| rollouts.create(req, &release, now));
    created.map_err(|e| anyhow!("creating the rollout: {e}"))?;
    for _ in 0..2 {
        rollouts
            .control("fleet-2.0", pb::RolloutAction::Advance, "bench", now)
            .map_err(|e| anyhow!("advance: {e}"))?;
    }
    let mut check_in_us = Vec::with_capacity(order.len());
    let mut offers = 0u64;
    for &i in order {
        let rec = store
            .device(&device_id(i)?)
            .map_err(|e| anyhow!("read: {e}"))?
            .context("device missing")?;
        let t0 = Instant::now();
        let got = rollouts
            .check_in(&rec, &rec.firmware_version, now)
            .map_err(|e| anyhow!("check-in: {e}"))?;
        check_in_us.push(t0.elapsed().as_secs_f64() * 1e6);
        offers += u64::from(matches!(got, CheckIn::Offer { .. }));
    }
    block_on(store.flush()).map_err(|e| anyhow!("flush: {e}"))?;
    // The background tick with nothing due (offer timeouts are a day away,
    // no stage can advance): what every tick costs a quiet fleet.
    let mut tick_ms = Vec::new();
    for k in 1..=21u64 {
        let (ticked, s) = timed(|| rollouts.tick(UnixTime(now.0 + k)));
        ticked.map_err(|e| anyhow!("tick: {e}"))?;
        tick_ms.push(s * 1e3);
    }
    // The first may take a history sample; the rest are the steady state.
    tick_ms.remove(0);
    drop(rollouts);
    let restored = store
        .rollout_devices("fleet-2.0")
        .map_err(|e| anyhow!("rollout devices: {e}"))?
        .len();
    let (reloaded, reload_s) =
        timed(|| Rollouts::load(dyn_store.clone(), RolloutSettings::default()));
    reloaded.map_err(|e| anyhow!("reloading rollouts: {e}"))?;
    Ok(ServerPath {
        load_s,
        create_s,
        check_in_us,
        offers,
        restored,
        reload_s,
        tick_ms: median(&tick_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_fleet_runs_and_membership_is_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Ctx {
            quick: true,
            scratch: dir.path().to_path_buf(),
        };
        let r = run_with(&ctx, 3_000).unwrap();
        assert_eq!(r.figures["devices"], 3_000.0);
        // Test devices (1 of 10,000: just one here) and the 1% + 10% stages
        // were offered; nothing else.
        let offers = r.figures["offers"];
        assert!(offers > 100.0 && offers < 600.0, "{offers} offers");
        assert_eq!(r.goals.iter().filter(|g| g.met == Some(true)).count(), 0);
        assert!(!dir.path().join("rollout-scale").exists());
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v = shuffled(1000);
        v.sort_unstable();
        assert_eq!(v, (0..1000).collect::<Vec<_>>());
    }
}
