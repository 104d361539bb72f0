//! `cargo xtask demo`: the full stack on loopback, end to end.
//!
//! 1. Builds the server, the CLI, the release tool and the boot simulator.
//! 2. Makes keys (root, release, a local CA, the server's directive key) and
//!    starts `aloft-server` with TLS on 127.0.0.1 (a port the OS picks).
//! 3. Signs and stages three releases of the sample firmware: 1.0.0 (the
//!    factory image), 1.1.0 and 1.2.0, which fails its health check.
//! 4. Provisions a fleet (two test devices, the rest spread over regions and
//!    time zones), writes each one's flash with 1.0.0 confirmed in slot A and
//!    powers it on under `aloft-boot` (bootloader, watchdog, reset loop).
//! 5. Rolls 1.1.0 out in stages (test devices, 50 %, 100 %) that advance by
//!    themselves once they soaked and their devices confirmed.
//! 6. Rotates the TrustRoot (version 2: a new root key, the server's next
//!    directive key) and waits until every device has taken it in its
//!    session: the server switches to the new directive key, and devices
//!    walk the chain from the root they were provisioned with.
//! 7. Rolls 1.2.0 out: the test devices install it, its health check fails,
//!    the watchdog and boot attempts send them back to 1.1.0, the old firmware
//!    reports the rollback, and the health gate pauses the rollout before any
//!    other device gets it.
//! 8. Prints who runs what, and exits non-zero if any outcome is missing.
//!
//! Everything lives under `target/demo/` (logs included) and every process
//! the demo starts is stopped when it ends, fails or is interrupted.

mod procs;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::cmd::{Cmd, workspace_root};
use procs::{Procs, log_path};

/// Options of `cargo xtask demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Devices in the fleet (the first two are test devices).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(3..=64))]
    devices: u32,
    /// Longest wait for one step (a rollout stage, the fleet coming online).
    #[arg(long, value_name = "SECS", default_value_t = 180)]
    step_timeout: u64,
    /// Leave the server and devices running after the demo until Ctrl-C,
    /// to explore with `aloft` (the environment to use is printed).
    #[arg(long)]
    keep_running: bool,
}

/// The product and hardware revision the sample firmware is built for.
const PRODUCT: &str = "aloft-sample";
const HARDWARE: &str = "sim-1";

/// Regions and IANA time zones the demo fleet is spread over.
const PLACES: [(&str, &str); 4] = [
    ("eu", "Europe/Berlin"),
    ("us", "America/New_York"),
    ("ap", "Asia/Tokyo"),
    ("au", "Australia/Sydney"),
];

/// Runs the task.
pub fn run(args: &Args) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the Ctrl-C handler")?;
    }

    step("building the server, the CLI, the release tool and the boot simulator");
    Cmd::cargo([
        "build",
        "-p",
        "aloft-server",
        "-p",
        "aloft-cli",
        "-p",
        "aloft-release",
        "-p",
        "aloft-firmware",
        "--bins",
    ])
    .run()?;
    let bins = Bins::locate()?;
    let dir = workspace_root().join("target").join("demo");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("clearing the previous demo in {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("logs"))?;

    let mut demo = Demo {
        started: Instant::now(),
        bins,
        dir,
        procs: Procs::default(),
        env: Vec::new(),
        stop,
        timeout: Duration::from_secs(args.step_timeout),
    };
    let result = demo.play(args);
    if let Err(e) = &result {
        eprintln!("\nThe demo failed: {e:#}");
        eprintln!("Logs: {}", demo.dir.join("logs").display());
    }
    result
}

/// The binaries the demo runs, built in the dev profile.
struct Bins {
    server: PathBuf,
    aloft: PathBuf,
    release: PathBuf,
    boot: PathBuf,
}

impl Bins {
    fn locate() -> Result<Self> {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map_or_else(
                || workspace_root().join("target"),
                |t| workspace_root().join(t),
            );
        let debug = target.join("debug");
        let bins = Self {
            server: debug.join("aloft-server"),
            aloft: debug.join("aloft"),
            release: debug.join("aloft-release"),
            boot: debug.join("aloft-boot"),
        };
        for bin in [&bins.server, &bins.aloft, &bins.release, &bins.boot] {
            ensure!(bin.exists(), "{} was not built", bin.display());
        }
        Ok(bins)
    }
}

/// One device of the demo fleet.
struct Device {
    id: String,
    region: &'static str,
    time_zone: &'static str,
    test: bool,
}

/// The demo's state: where things are and what runs.
struct Demo {
    started: Instant,
    bins: Bins,
    dir: PathBuf,
    procs: Procs,
    /// ALOFT_SERVER, ALOFT_CA, ALOFT_TOKEN for the CLI.
    env: Vec<(&'static str, String)>,
    stop: Arc<AtomicBool>,
    timeout: Duration,
}

fn step(what: &str) {
    println!("\n==> {what}");
}

impl Demo {
    fn say(&self, what: &str) {
        println!("[{:6.1}s] {what}", self.started.elapsed().as_secs_f64());
    }

    fn play(&mut self, args: &Args) -> Result<()> {
        let keys = self.dir.join("keys");
        let data = self.dir.join("server");

        step("keys: root and release keys, a local CA, the server's directive key, the TrustRoot");
        self.tool(
            &self.bins.release,
            &[
                "keys".as_ref(),
                "--out".as_ref(),
                keys.as_os_str(),
                "--server-data".as_ref(),
                data.as_os_str(),
            ],
        )?;

        step("starting aloft-server (TLS on 127.0.0.1)");
        let port = self.start_server(&keys, &data)?;
        let token = std::fs::read_to_string(data.join("admin-token"))
            .context("reading the server's bootstrap admin token")?;
        self.env = vec![
            ("ALOFT_SERVER", format!("https://localhost:{port}")),
            ("ALOFT_CA", keys.join("ca.pem").display().to_string()),
            ("ALOFT_TOKEN", token.trim().to_owned()),
        ];
        self.aloft(&[
            "trust-root",
            "set",
            &keys.join("trust-root.pb").display().to_string(),
        ])?;
        self.say(&format!(
            "server up on https://localhost:{port}, TrustRoot installed"
        ));

        step("releases: build the sample firmware per version, sign offline, encrypt, stage");
        let factory_bundle = self.dir.join("aloft-sample-1.0.0.bundle");
        self.release("1.0.0", "none", Some(&factory_bundle))?;
        self.release("1.1.0", "none", None)?;
        self.release("1.2.0", "health", None)?;
        self.say(
            "1.0.0 bundled for the factory; 1.1.0 and 1.2.0 (fails its health check) uploaded",
        );

        step("factory: provision the fleet, write 1.0.0 to slot A, power on");
        let fleet = fleet(args.devices);
        for device in &fleet {
            self.provision(device, &factory_bundle)?;
        }
        self.say(&format!(
            "{} devices powered on; the first two are test devices",
            fleet.len()
        ));
        self.wait("every device online on 1.0.0", None, |_, devices| {
            Ok(devices.len() == fleet.len()
                && devices
                    .values()
                    .all(|d| d["connected"] == true && d["firmware_version"] == "1.0.0"))
        })?;

        step(
            "rollout of 1.1.0: test devices, then 50 %, then everyone; stages advance by themselves",
        );
        self.create_rollout("1.1.0", "test,50%,100%")?;
        self.wait(
            "every device running 1.1.0 (confirmed)",
            Some("demo-1.1.0"),
            |_, devices| {
                Ok(devices
                    .values()
                    .all(|d| d["firmware_version"] == "1.1.0" && d["status"] == "updated"))
            },
        )?;

        step(
            "TrustRoot rotation: version 2 with a new root key and the server's next directive key",
        );
        self.tool(
            &self.bins.release,
            &[
                "keys".as_ref(),
                "rotate".as_ref(),
                "--keys".as_ref(),
                keys.as_os_str(),
                "--new-root".as_ref(),
                "--next-server-key".as_ref(),
                data.as_os_str(),
            ],
        )?;
        self.aloft(&[
            "trust-root",
            "set",
            &keys.join("trust-root.pb").display().to_string(),
        ])?;
        self.wait(
            "every device holding TrustRoot v2 (sent in its session)",
            None,
            |_, devices| Ok(devices.values().all(|d| d["trust_root_version"] == 2)),
        )?;
        self.say("every device took TrustRoot v2; the server now signs with its new directive key");

        step("rollout of 1.2.0, whose health check fails: test devices first");
        self.create_rollout("1.2.0", "test,100%")?;
        let tests: Vec<&str> = fleet
            .iter()
            .filter(|d| d.test)
            .map(|d| d.id.as_str())
            .collect();
        let mut paused = None;
        self.wait(
            "the test devices back on 1.1.0 and the rollout paused by its health gate",
            Some("demo-1.2.0"),
            |demo, devices| {
                let rollout = demo.rollout("demo-1.2.0")?;
                let back = tests.iter().all(|id| {
                    devices.get(*id).is_some_and(|d| {
                        d["firmware_version"] == "1.1.0" && d["status"] == "rolled_back"
                    })
                });
                if back && rollout["state"] == "paused" {
                    paused = rollout["pause_reason"].as_str().map(str::to_owned);
                    return Ok(true);
                }
                Ok(false)
            },
        )?;
        self.say(&format!(
            "rollout demo-1.2.0 paused itself: {}",
            paused.as_deref().unwrap_or("(no reason given)")
        ));

        step("the fleet");
        let devices = self.devices()?;
        print_fleet(&fleet, &devices);
        check_outcome(&fleet, &devices)?;
        println!(
            "\nDemo complete in {:.0} s: 1.1.0 reached every device stage by stage; a TrustRoot \
             rotation reached every device; 1.2.0 failed on the test devices, which rolled back \
             to 1.1.0 and reported it, and the rollout paused before any other device took it.",
            self.started.elapsed().as_secs_f64()
        );

        if args.keep_running {
            println!("\nStill running. In another shell, from the workspace root:");
            for (k, v) in &self.env {
                println!("  export {k}={v}");
            }
            println!("  cargo run -q -p aloft-cli -- device list");
            if let Some(url) = self.dashboard_url() {
                println!(
                    "Dashboard: {url} (sign in with the token in {}; the browser warns about the \
                     demo's own CA, {})",
                    self.dir.join("server").join("admin-token").display(),
                    self.dir.join("keys").join("ca.pem").display()
                );
            }
            println!("Ctrl-C stops the server and the devices.");
            while !self.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                self.check_alive()?;
            }
        }
        Ok(())
    }

    /// Creates rollout `demo-VERSION` of `aloft-sample-VERSION` in `stages`:
    /// each stage soaks 3 s, and more than 20 % failures among at least one
    /// finished device pauses it.
    fn create_rollout(&self, version: &str, stages: &str) -> Result<()> {
        self.aloft(&[
            "rollout",
            "create",
            &format!("demo-{version}"),
            "--release",
            &format!("aloft-sample-{version}"),
            "--stages",
            stages,
            "--soak",
            "3s",
            "--min-sample",
            "1",
            "--max-failure",
            "20%",
        ])?;
        Ok(())
    }

    /// The dashboard's URL, from the server's log (`--web`).
    fn dashboard_url(&self) -> Option<String> {
        let log = std::fs::read_to_string(log_path(&self.dir.join("logs"), "server")).ok()?;
        let addr = log
            .lines()
            .find_map(|l| l.strip_prefix("aloft-server dashboard on "))?;
        let port = addr.trim().trim_end_matches('/').rsplit(':').next()?;
        Some(format!("https://localhost:{port}/"))
    }

    /// Starts the server on a port the OS picks; returns the port.
    fn start_server(&mut self, keys: &Path, data: &Path) -> Result<u16> {
        let log = log_path(&self.dir.join("logs"), "server");
        let mut cmd = Command::new(&self.bins.server);
        cmd.arg("--data")
            .arg(data)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--web",
                "127.0.0.1:0",
                "--tls-cert",
            ])
            .arg(keys.join("server.pem"))
            .arg("--tls-key")
            .arg(keys.join("server.key"))
            .env("RUST_LOG", "info");
        self.procs.spawn("aloft-server", cmd, &log)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.strip_prefix("aloft-server listening on "))
            {
                let port = addr
                    .trim()
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .with_context(|| format!("unexpected listen address {addr:?}"))?;
                return Ok(port);
            }
            self.check_alive()?;
            ensure!(
                Instant::now() < deadline,
                "the server did not start within 30 s (see {})",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Builds firmware `version` with `fault`, signs and either bundles it
    /// to `out` or uploads it.
    fn release(&self, version: &str, fault: &str, out: Option<&Path>) -> Result<()> {
        let keys = self.dir.join("keys");
        let mut args: Vec<String> = vec![
            "release".into(),
            "--keys".into(),
            keys.display().to_string(),
            "--version".into(),
            version.into(),
            "--fault".into(),
            fault.into(),
        ];
        match out {
            Some(out) => args.extend(["--out".into(), out.display().to_string()]),
            None => args.extend(["--server".into(), self.var("ALOFT_SERVER").to_owned()]),
        }
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        self.tool(&self.bins.release, &args)?;
        Ok(())
    }

    /// Registers `device`, writes its flash and powers it on.
    fn provision(&mut self, device: &Device, factory_bundle: &Path) -> Result<()> {
        let home = self.dir.join("devices").join(&device.id);
        let home_text = home.display().to_string();
        let region = format!("region={}", device.region);
        let time_zone = format!("time_zone={}", device.time_zone);
        let test = format!("test={}", device.test);
        self.aloft(&[
            "device",
            "provision",
            "--id",
            &device.id,
            "--attr",
            &format!("product={PRODUCT}"),
            "--attr",
            &format!("hardware={HARDWARE}"),
            "--attr",
            &region,
            "--attr",
            &time_zone,
            "--attr",
            &test,
            "--factory-version",
            "1.0.0",
            "--out",
            &home_text,
        ])?;
        let identity = home.join("identity.pb");
        let flash = home.join("flash.bin");
        self.tool(
            &self.bins.release,
            &[
                "factory".as_ref(),
                "--identity".as_ref(),
                identity.as_os_str(),
                "--bundle".as_ref(),
                factory_bundle.as_os_str(),
                "--flash".as_ref(),
                flash.as_os_str(),
            ],
        )?;
        let mut cmd = Command::new(&self.bins.boot);
        cmd.arg("--flash")
            .arg(&flash)
            .arg("--identity")
            .arg(&identity)
            .arg("--work-dir")
            .arg(&home)
            .arg("--json")
            // A demo fleet checks in every 2 s rather than every few minutes.
            .env("ALOFT_AGENT_MAX_CHECK_IN_MS", "2000")
            .env("ALOFT_AGENT_HEARTBEAT_MS", "1000");
        // The identity bundle names the server and its CA; operator
        // credentials never reach a device.
        for (k, _) in &self.env {
            cmd.env_remove(k);
        }
        let log = log_path(&self.dir.join("logs"), &device.id);
        self.procs.spawn(&device.id, cmd, &log)?;
        Ok(())
    }

    fn var(&self, key: &str) -> &str {
        self.env
            .iter()
            .find(|(k, _)| *k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Runs a tool to completion, quietly; its output goes to the tool log
    /// and, on failure, into the error.
    fn tool(&self, bin: &Path, args: &[&std::ffi::OsStr]) -> Result<String> {
        let output = Command::new(bin)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(workspace_root())
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("starting {}", bin.display()))?;
        let name = bin
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let line = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let mut log = format!("$ {name} {line}\n");
        log.push_str(&String::from_utf8_lossy(&output.stdout));
        log.push_str(&String::from_utf8_lossy(&output.stderr));
        append(&self.dir.join("logs").join("tools.log"), &log);
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if !output.status.success() {
            bail!(
                "`{name} {line}` failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs `aloft ARGS`.
    fn aloft(&self, args: &[&str]) -> Result<String> {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        self.tool(&self.bins.aloft, &args)
    }

    fn json(&self, args: &[&str]) -> Result<Value> {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.aloft(&args)?;
        serde_json::from_str(&out)
            .with_context(|| format!("`aloft {}` printed no JSON", args.join(" ")))
    }

    /// Every device, by id.
    fn devices(&self) -> Result<BTreeMap<String, Value>> {
        let list = self.json(&["device", "list"])?;
        Ok(list
            .as_array()
            .context("`aloft device list --json` printed no list")?
            .iter()
            .filter_map(|d| Some((d["id"].as_str()?.to_owned(), d.clone())))
            .collect())
    }

    fn rollout(&self, id: &str) -> Result<Value> {
        self.json(&["rollout", "status", id])
    }

    /// Fails when the server or a device process has died, or on Ctrl-C.
    fn check_alive(&mut self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let exited = self.procs.exited();
        ensure!(exited.is_empty(), "process exited: {}", exited.join(", "));
        Ok(())
    }

    /// Polls the fleet (and `rollout`, if given) once a second, printing a
    /// progress line whenever it changes, until `done` says so.
    fn wait(
        &mut self,
        what: &str,
        rollout: Option<&str>,
        mut done: impl FnMut(&Self, &BTreeMap<String, Value>) -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        let mut last = String::new();
        loop {
            self.check_alive()?;
            let devices = self.devices()?;
            // Devices end their session at every check-in (every 2 s here),
            // so "online" only means something before a rollout starts.
            let mut line = fleet_line(&devices, rollout.is_none());
            if let Some(id) = rollout {
                line = format!("{} | {line}", rollout_line(&self.rollout(id)?));
            }
            if line != last {
                self.say(&line);
                last = line;
            }
            if done(self, &devices)? {
                self.say(&format!("done: {what}"));
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("timed out after {:?} waiting for {what}", self.timeout);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// The demo fleet: `n` devices, the first two test devices, spread over
/// [`PLACES`].
fn fleet(n: u32) -> Vec<Device> {
    (0..n)
        .map(|i| {
            let (region, time_zone) = PLACES[i as usize % PLACES.len()];
            Device {
                id: format!("dev-{:02}", i + 1),
                region,
                time_zone,
                test: i < 2,
            }
        })
        .collect()
}

/// `fleet: 1.0.0×3 1.1.0×5 · updated 5 · online 8/8` (the last part only
/// with `online`).
fn fleet_line(devices: &BTreeMap<String, Value>, show_online: bool) -> String {
    let mut versions: BTreeMap<String, u32> = BTreeMap::new();
    let mut statuses: BTreeMap<String, u32> = BTreeMap::new();
    let mut roots: BTreeMap<u64, u32> = BTreeMap::new();
    let mut online = 0;
    for d in devices.values() {
        let v = d["firmware_version"].as_str().unwrap_or("-").to_owned();
        *versions.entry(v).or_default() += 1;
        *roots
            .entry(d["trust_root_version"].as_u64().unwrap_or(0))
            .or_default() += 1;
        *statuses
            .entry(d["status"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
        online += u32::from(d["connected"] == true);
    }
    let mut line = String::from("fleet:");
    for (v, n) in &versions {
        let _ = write!(line, " {v}×{n}");
    }
    line.push_str(" ·");
    for (s, n) in &statuses {
        let _ = write!(line, " {s} {n}");
    }
    line.push_str(" · root");
    for (v, n) in &roots {
        let _ = write!(line, " v{v}×{n}");
    }
    if show_online {
        let _ = write!(line, " · online {online}/{}", devices.len());
    }
    line
}

/// `demo-1.1.0 active, stage 2/3 (50%): 3/8 updated`.
fn rollout_line(r: &Value) -> String {
    let stages = r["stages"].as_array().map_or(0, Vec::len);
    let t = &r["totals"];
    let mut line = format!(
        "{} {}, stage {}/{} ({}): {} offered, {} installed, {} updated, {} rolled back, {} failed",
        r["id"].as_str().unwrap_or("?"),
        r["state"].as_str().unwrap_or("?"),
        r["current_stage"].as_u64().unwrap_or(0) + 1,
        stages,
        r["current_stage_name"].as_str().unwrap_or("?"),
        t["offered"],
        t["installed"],
        t["updated"],
        t["rolled_back"],
        t["failed"],
    );
    if let Some(reason) = r["pause_reason"].as_str() {
        let _ = write!(line, " [{reason}]");
    }
    line
}

fn print_fleet(fleet: &[Device], devices: &BTreeMap<String, Value>) {
    println!(
        "{:<8} {:<5} {:<6} {:<18} {:<8} {:<5} {:<5} {:<12} release",
        "device", "test", "region", "time zone", "version", "slot", "root", "status"
    );
    for device in fleet {
        let d = devices.get(&device.id).cloned().unwrap_or(Value::Null);
        println!(
            "{:<8} {:<5} {:<6} {:<18} {:<8} {:<5} {:<5} {:<12} {}",
            device.id,
            if device.test { "yes" } else { "" },
            device.region,
            device.time_zone,
            d["firmware_version"].as_str().unwrap_or("-"),
            d["slot"].as_str().unwrap_or("-"),
            d["trust_root_version"]
                .as_u64()
                .map_or_else(|| "-".to_owned(), |v| format!("v{v}")),
            d["status"].as_str().unwrap_or("-"),
            d["release_id"].as_str().unwrap_or("-"),
        );
    }
}

/// The outcome the demo promises: every device runs 1.1.0 under TrustRoot
/// v2; the test devices rolled back from 1.2.0; nobody else was offered 1.2.0.
fn check_outcome(fleet: &[Device], devices: &BTreeMap<String, Value>) -> Result<()> {
    let mut wrong = Vec::new();
    for device in fleet {
        let Some(d) = devices.get(&device.id) else {
            wrong.push(format!("{} is missing", device.id));
            continue;
        };
        let (want_status, want_release) = if device.test {
            ("rolled_back", "aloft-sample-1.2.0")
        } else {
            ("updated", "aloft-sample-1.1.0")
        };
        if d["firmware_version"] != "1.1.0"
            || d["status"] != want_status
            || d["release_id"] != want_release
            || d["trust_root_version"] != 2
        {
            wrong.push(format!(
                "{}: expected 1.1.0 {want_status} ({want_release}) on TrustRoot v2, found {} {} ({}) on v{}",
                device.id,
                d["firmware_version"],
                d["status"],
                d["release_id"],
                d["trust_root_version"]
            ));
        }
    }
    ensure!(
        wrong.is_empty(),
        "unexpected outcome:\n  {}",
        wrong.join("\n  ")
    );
    Ok(())
}

fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    if let Ok(mut f) = std::fs::File::options()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_has_two_test_devices_spread_over_places() {
        let f = fleet(8);
        assert_eq!(f.iter().filter(|d| d.test).count(), 2);
        assert_eq!(f[0].id, "dev-01");
        assert_eq!(f[4].time_zone, PLACES[0].1);
    }

    #[test]
    fn a_wrong_outcome_is_reported_per_device() {
        let f = fleet(3);
        let mut devices = BTreeMap::new();
        for d in &f {
            let (status, release) = if d.test {
                ("rolled_back", "aloft-sample-1.2.0")
            } else {
                ("updated", "aloft-sample-1.1.0")
            };
            devices.insert(
                d.id.clone(),
                serde_json::json!({
                    "firmware_version": "1.1.0",
                    "status": status,
                    "release_id": release,
                    "trust_root_version": 2,
                }),
            );
        }
        check_outcome(&f, &devices).unwrap();
        devices.get_mut("dev-03").unwrap()["firmware_version"] = "1.0.0".into();
        let err = check_outcome(&f, &devices).unwrap_err().to_string();
        assert!(err.contains("dev-03: expected 1.1.0 updated"), "{err}");
        devices.get_mut("dev-03").unwrap()["firmware_version"] = "1.1.0".into();
        devices.get_mut("dev-02").unwrap()["trust_root_version"] = 1.into();
        let err = check_outcome(&f, &devices).unwrap_err().to_string();
        assert!(
            err.contains("dev-02: expected") && err.contains("on v1"),
            "{err}"
        );
        devices.remove("dev-01");
        let err = check_outcome(&f, &devices).unwrap_err().to_string();
        assert!(err.contains("dev-01 is missing"), "{err}");
    }
}
