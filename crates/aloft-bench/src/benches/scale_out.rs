//! Benchmark 7, scale-out on PostgreSQL: in one run, check-ins against the
//! `aloft-server` binary on sled and on PostgreSQL with 1, 2 and 3 server
//! processes sharing one database (devices spread over them), then a fleet
//! of 1,000,000 device records in PostgreSQL: filling it, listing a
//! filtered page of 100, and creating a rollout over it.
//!
//! The database is made for the run on the local PostgreSQL
//! (`$ALOFT_BENCH_POSTGRES`, default the machine's server as user
//! `postgres`) and dropped after it. Server-side CPU is the servers' and
//! their PostgreSQL backends' (found by the database name in their process
//! titles), so the rate per server-side CPU-second includes the database.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};

use crate::benches::checkin::{Target, checkin_loop_over};
use crate::benches::server::{self, ServerProc};
use crate::benches::{Bench, Ctx};
use crate::measure::{median, percentile};
use crate::report::{BenchResult, Status, Table};

/// The benchmark.
#[derive(Debug)]
pub struct ScaleOut;

impl Bench for ScaleOut {
    fn name(&self) -> &'static str {
        "scale-out"
    }

    fn title(&self) -> &'static str {
        "Scale-out on PostgreSQL"
    }

    fn item(&self) -> u8 {
        7
    }

    fn run(&self, ctx: &Ctx) -> anyhow::Result<BenchResult> {
        server::runtime()?.block_on(run(ctx))
    }
}

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database for the run, dropped (with its connections) on drop.
struct BenchDb {
    url: String,
    name: String,
    admin: String,
}

fn admin_sql(url: &str, sql: String) -> anyhow::Result<()> {
    let url = url.to_owned();
    std::thread::spawn(move || -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            client.batch_execute(&sql).await?;
            Ok(())
        })
    })
    .join()
    .map_err(|_| anyhow!("admin thread panicked"))?
}

impl BenchDb {
    fn create() -> anyhow::Result<Self> {
        let admin =
            std::env::var("ALOFT_BENCH_POSTGRES").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
        let name = format!("aloft_bench_{}", std::process::id());
        admin_sql(
            &admin,
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )?;
        admin_sql(&admin, format!("CREATE DATABASE {name}")).with_context(|| {
            format!(
                "creating a database on {admin} (PostgreSQL must run there; set \
                 ALOFT_BENCH_POSTGRES to another server)"
            )
        })?;
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Ok(Self {
            url: format!("{base}/{name}"),
            name,
            admin,
        })
    }

    /// CPU seconds of this database's backend processes.
    fn backend_cpu(&self) -> f64 {
        let needle = format!(" {} ", self.name);
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0.0;
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.starts_with("postgres: ") && c.contains(&needle)
                })
            })
            .filter_map(|pid| server::cpu_seconds(pid).ok())
            .sum()
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        let _ = admin_sql(
            &self.admin,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn record(i: u32) -> aloft_protocol::pb::DeviceInfo {
    use aloft_protocol::pb;
    const REGIONS: [&str; 4] = ["eu", "us", "ap", "sa"];
    pb::DeviceInfo {
        device_id: format!("dev-{i:07}"),
        // A fixed compressed point: these devices are listed, never connected.
        public_key: vec![2; 33],
        attributes: Some(pb::DeviceAttributes {
            product: server::PRODUCT.into(),
            hardware: server::HARDWARE.into(),
            region: REGIONS[i as usize % REGIONS.len()].into(),
            time_zone: "Europe/Berlin".into(),
            // 1 in 997 (a prime, so lab devices spread over the regions).
            tags: if i.is_multiple_of(997) {
                vec!["lab".into()]
            } else {
                vec!["field".into()]
            },
            test_device: false,
        }),
        firmware_version: server::FACTORY_VERSION.into(),
        security_version: 1,
        registered_at: server::now() - 86_400,
        ..Default::default()
    }
}

async fn run(ctx: &Ctx) -> anyhow::Result<BenchResult> {
    let mut r = BenchResult::new("scale-out", "Scale-out on PostgreSQL", 7, Status::Measured);
    let db = BenchDb::create()?;
    let url = db.url.clone();
    let migrated =
        tokio::task::spawn_blocking(move || aloft_server::pg_store::PgStore::migrate(&url))
            .await??;
    println!("  database {} at schema version {}", db.name, migrated.to);

    let loop_devices = if ctx.quick { 32 } else { 128 };
    let warmup = Duration::from_secs(if ctx.quick { 1 } else { 2 });
    let window = Duration::from_secs(if ctx.quick { 3 } else { 10 });
    server::raise_nofile(16_384);

    let sled = ServerProc::start(ctx, &ctx.scratch.join("scale-sled")).await?;
    let sled_creds = sled.register("so-", loop_devices).await?;
    let pg1 = ServerProc::start_with(
        ctx,
        &ctx.scratch.join("scale-pg-1"),
        vec!["--store".into(), db.url.clone()],
    )
    .await?;
    let pg_creds = pg1.register("so-", loop_devices).await?;
    let pg2 = pg1.replica(ctx, &ctx.scratch.join("scale-pg-2"))?;
    let pg3 = pg1.replica(ctx, &ctx.scratch.join("scale-pg-3"))?;

    let mut t = Table::new(
        &format!(
            "Check-ins (new TLS connection + session, as the agent) from {loop_devices} devices in \
             a loop, {:.0} s window; PostgreSQL replicas share one database and the devices are \
             spread over them",
            window.as_secs_f64()
        ),
        &[
            "store",
            "servers",
            "check-ins/s",
            "server-side CPU (cores)",
            "per server-side CPU-second",
            "latency p50 / p99",
            "errors",
        ],
    );
    let runs: [(&str, Vec<&ServerProc>, &[server::DeviceCred]); 4] = [
        ("sled", vec![&sled], &sled_creds),
        ("postgres", vec![&pg1], &pg_creds),
        ("postgres", vec![&pg1, &pg2], &pg_creds),
        ("postgres", vec![&pg1, &pg2, &pg3], &pg_creds),
    ];
    for (store, servers, creds) in runs {
        let targets = servers
            .iter()
            .map(|s| {
                Ok(Target::Aloft {
                    endpoint: Box::new(server::endpoint(s.addr, &s.tls.ca_pem)?),
                    fresh: true,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let pids: Vec<u32> = servers.iter().filter_map(|s| s.pid()).collect();
        let with_db = store == "postgres";
        let cpu = || -> anyhow::Result<f64> {
            let mut total = 0.0;
            for pid in &pids {
                total += server::cpu_seconds(*pid)?;
            }
            if with_db {
                total += db.backend_cpu();
            }
            Ok(total)
        };
        let lr = checkin_loop_over(&cpu, &targets, creds, warmup, window).await?;
        let n = servers.len();
        println!(
            "  {store} x{n}: {:.0}/s, server side {:.2} cores, {:.0} per CPU-s, {} errors",
            lr.rate(),
            lr.server_cpu / lr.window,
            lr.per_server_cpu(),
            lr.errors
        );
        let key = format!("{store}_{n}");
        r.figure(&format!("{key}.checkins_per_s"), lr.rate());
        r.figure(&format!("{key}.per_server_cpu_s"), lr.per_server_cpu());
        r.figure(&format!("{key}.p99_ms"), percentile(&lr.latency_ms, 99.0));
        if let Some(e) = &lr.first_error {
            r.note(format!("{store} x{n}: first error: {e}"));
        }
        t.row(&[
            store.to_string(),
            n.to_string(),
            format!("{:.0}", lr.rate()),
            format!("{:.2}", lr.server_cpu / lr.window),
            format!("{:.0}", lr.per_server_cpu()),
            format!(
                "{:.1} / {:.1} ms",
                percentile(&lr.latency_ms, 50.0),
                percentile(&lr.latency_ms, 99.0)
            ),
            lr.errors.to_string(),
        ]);
    }
    r.tables.push(t);
    drop((sled, pg2, pg3));
    let sled_rate = r
        .figures
        .get("sled_1.checkins_per_s")
        .copied()
        .unwrap_or(0.0);
    let pg_rate = r
        .figures
        .get("postgres_1.checkins_per_s")
        .copied()
        .unwrap_or(0.0);
    r.goal(
        "check-ins/s of one server on PostgreSQL / one server on sled",
        "(report)",
        format!(
            "{:.2} ({pg_rate:.0} vs {sled_rate:.0})",
            pg_rate / sled_rate.max(1e-9)
        ),
        None,
    );

    // A million device records.
    let fleet: u32 = if ctx.quick { 20_000 } else { 1_000_000 };
    let url = db.url.clone();
    let fill_secs = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        use aloft_server::store::Store as _;
        let store = aloft_server::pg_store::PgStore::connect(&url)?;
        let started = Instant::now();
        let mut batch = Vec::with_capacity(10_000);
        for i in 0..fleet {
            batch.push(record(i));
            if batch.len() == 10_000 || i + 1 == fleet {
                let taken = store.insert_devices(&batch)?;
                anyhow::ensure!(taken.is_empty(), "ids already registered: {taken:?}");
                batch.clear();
            }
        }
        Ok(started.elapsed().as_secs_f64())
    })
    .await??;
    println!("  filled {fleet} devices in {fill_secs:.1} s");
    admin_sql(&db.url, "ANALYZE".into())?;

    let mut admin = pg1.admin().await?;
    let page = |selector: &'static str| {
        let mut admin = admin.clone();
        let token = pg1.token.clone();
        async move {
            let mut times = Vec::new();
            let mut found = 0;
            for _ in 0..3 {
                let started = Instant::now();
                let resp = admin
                    .list_devices(server::authed(
                        aloft_protocol::pb::ListDevicesRequest {
                            selector: selector.into(),
                            limit: 100,
                            ..Default::default()
                        },
                        &token,
                    )?)
                    .await
                    .context("listing devices")?
                    .into_inner();
                times.push(started.elapsed().as_secs_f64() * 1e3);
                found = resp.devices.len();
            }
            Ok::<_, anyhow::Error>((median(&times), found))
        }
    };
    let (first_ms, first_n) = page("").await?;
    let (filtered_ms, filtered_n) = page("tag = lab and region = eu").await?;

    let release = pg1
        .keys
        .release("2.0.0", 1, vec![7u8; 64 * 1024], 16 * 1024)?;
    pg1.upload(&release).await?;
    let started = Instant::now();
    admin
        .create_rollout(server::authed(
            aloft_protocol::pb::CreateRolloutRequest {
                rollout_id: "fleet".into(),
                release_id: release.id.clone(),
                selector: format!("product = {} and not tag = lab", server::PRODUCT),
                ..Default::default()
            },
            &pg1.token,
        )?)
        .await
        .context("creating the rollout")?;
    let create_ms = started.elapsed().as_secs_f64() * 1e3;
    drop(pg1);

    // The rollout's device table as a first wave leaves it (every device
    // offered), written straight through the store; then what a restart
    // and a quiet tick cost on PostgreSQL.
    let url = db.url.clone();
    let (restored, reload_s, tick_ms) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<(usize, f64, f64)> {
            use aloft_server::store::{RolloutDeviceRecord, Store as _};
            let store = std::sync::Arc::new(aloft_server::pg_store::PgStore::connect(&url)?);
            let now = server::now();
            let mut batch = Vec::with_capacity(10_000);
            for i in 0..fleet {
                if i.is_multiple_of(997) {
                    continue; // lab devices are not in the rollout
                }
                let id = aloft_protocol::DeviceId::new(&format!("dev-{i:07}"))
                    .map_err(|e| anyhow!("device id: {e}"))?;
                batch.push((
                    id,
                    RolloutDeviceRecord {
                        outcome: 1,
                        stage: 1,
                        since: now,
                        offers: 1,
                        ..Default::default()
                    },
                ));
                if batch.len() == 10_000 {
                    store.save_rollout("fleet", None, &batch)?;
                    batch.clear();
                }
            }
            store.save_rollout("fleet", None, &batch)?;
            let restored = store.rollout_devices("fleet")?.len();
            let dyn_store: std::sync::Arc<dyn aloft_server::store::Store> = store;
            let started = Instant::now();
            let rollouts = aloft_server::rollouts::Rollouts::load(
                dyn_store,
                aloft_server::rollouts::RolloutSettings::default(),
            )
            .map_err(|e| anyhow!("loading rollouts: {e}"))?;
            let reload_s = started.elapsed().as_secs_f64();
            let mut ticks = Vec::new();
            for k in 1..=21u64 {
                let started = Instant::now();
                rollouts
                    .tick(aloft_protocol::UnixTime(now + k))
                    .map_err(|e| anyhow!("tick: {e}"))?;
                ticks.push(started.elapsed().as_secs_f64() * 1e3);
            }
            ticks.remove(0);
            Ok((restored, reload_s, median(&ticks)))
        })
        .await??;
    println!(
        "  restart with {restored} rollout device records: {reload_s:.2} s, quiet tick {tick_ms:.3} ms"
    );

    let mut f = Table::new(
        &format!("{fleet} device records in PostgreSQL, through the server's admin API"),
        &["step", "time"],
    );
    f.row(&[
        "fill (Store::insert_devices, 10,000 per call)".to_string(),
        format!(
            "{fill_secs:.1} s ({:.0} records/s)",
            f64::from(fleet) / fill_secs
        ),
    ]);
    f.row(&[
        format!("ListDevices, first page of 100, no filter ({first_n} devices), median of 3"),
        format!("{first_ms:.1} ms"),
    ]);
    f.row(&[
        format!(
            "ListDevices, page of 100 with selector `tag = lab and region = eu` (1 in about \
             4,000 matches; {filtered_n} devices), median of 3"
        ),
        format!("{filtered_ms:.1} ms"),
    ]);
    f.row(&[
        "CreateRollout over the fleet".to_string(),
        format!("{create_ms:.1} ms"),
    ]);
    f.row(&[
        format!("restart: Rollouts::load with {restored} rollout device records (all offered)"),
        format!("{reload_s:.2} s"),
    ]);
    f.row(&[
        "Rollouts::tick with nothing due (median of 20)".to_string(),
        format!("{tick_ms:.3} ms"),
    ]);
    r.tables.push(f);
    r.figure("fill_secs", fill_secs);
    r.figure("page_ms", filtered_ms);
    r.figure("first_page_ms", first_ms);
    r.figure("create_rollout_ms", create_ms);
    r.goal(
        &format!("a filtered page of 100 devices out of {fleet} on PostgreSQL"),
        "< 50 ms",
        format!("{filtered_ms:.1} ms"),
        Some(filtered_ms < 50.0),
    );
    r.goal(
        &format!("creating a rollout over {fleet} devices on PostgreSQL"),
        "< 2 s",
        format!("{create_ms:.1} ms"),
        Some(create_ms < 2000.0),
    );
    r.figure("reload_s", reload_s);
    r.figure("tick_ms", tick_ms);
    r.goal(
        &format!("restart with {restored} rollout device records on PostgreSQL (Rollouts::load)"),
        "< 1 s",
        format!("{reload_s:.2} s"),
        Some(reload_s < 1.0 && fleet >= 1_000_000),
    );
    r.goal(
        &format!("a rollout tick with nothing to do, {fleet} devices, on PostgreSQL"),
        "< 1 ms",
        format!("{tick_ms:.3} ms"),
        Some(tick_ms < 1.0 && fleet >= 1_000_000),
    );
    r.note(
        "What this 2-core machine shows: the cost of the database round trips per check-in and \
         whether replicas sharing one database stay correct under load; it cannot show scaling, \
         since every replica, PostgreSQL and the load generator share the same two cores, so \
         more replicas only add contention. A real cluster puts each replica and the database \
         on their own machines, where check-ins scale with replicas until the database's \
         write rate is the limit.",
    );
    r.note(
        "Replicas here serve sessions and admin calls from one database; rollout state is still \
         per process (issue 12), so the replica rows measure check-ins only.",
    );
    r.note(
        "Device lists on PostgreSQL narrow by the selector's indexable terms (equality on \
         product, hardware, region, time zone, id, a tag, the test flag: indexed columns of \
         `devices`, tags in a GIN index), then the server checks the whole selector on what \
         they let through. A selector with no such term (only `version < x`, `or`, `not`) still \
         pages through the table in id order.",
    );
    Ok(r)
}
