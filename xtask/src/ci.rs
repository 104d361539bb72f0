//! `cargo xtask ci`: every check CI runs, in order, stopping at the first
//! failure.
//!
//! 1. rustfmt (`--check`) on the workspace and on `crates/nostd-check`;
//! 2. clippy with `-D warnings`: the whole workspace with all features and
//!    all targets, then the no_std crates with their default (device)
//!    feature set, which `--all-features` never builds;
//! 3. the tests (after installing s3s-fs, the S3 server of the object-store
//!    tests, when it is missing): `cargo nextest run` when cargo-nextest is
//!    installed, else
//!    `cargo test` (which includes the doctests; nextest does not run them,
//!    so they follow it);
//!    Then the server's tests once more with their servers on PostgreSQL
//!    (`ALOFT_TEST_STORE=postgres`; each test makes and drops its own
//!    database), after starting the local PostgreSQL cluster when nothing
//!    answers on 127.0.0.1:5432;
//! 4. the dashboard's browser tests in headless Chromium (see
//!    `browser.rs`; Chromium and chromedriver are installed with apt-get
//!    when missing and this runs as root, else the step fails; skipped by
//!    `--quick`);
//! 5. README.md's "By hand" commands, run as written (`cargo xtask readme`;
//!    after the tests, since its commands are cargo commands; skipped by
//!    `--quick`);
//! 6. the no_std proof: build `crates/nostd-check` (see its crate docs);
//! 7. the fuzz smoke run: every target of `fuzz/` briefly from its seeds
//!    (`cargo xtask fuzz --smoke`; skipped by `--quick`);
//! 8. `cargo deny check` against `deny.toml` (skipped by `--quick`).
//!
//! Environment: `ALOFT_NO_NEXTEST=1` forces the `cargo test` fallback;
//! `ALOFT_DENY_ADVISORIES=1` also checks security advisories (which needs
//! the advisory database, fetched over the network).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::{Cmd, workspace_root};

/// Options of `cargo xtask ci`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip the browser tests, the README run, the fuzz smoke run and
    /// cargo-deny (for a fast local loop; CI runs everything).
    #[arg(long)]
    quick: bool,
    /// Run every step even after one fails, then fail if any did (to see all
    /// problems at once).
    #[arg(long)]
    keep_going: bool,
}

/// The crates that must stay `no_std`, checked with their default features.
/// Each must also be linked by `crates/nostd-check`.
const NO_STD_CRATES: &[&str] = &["aloft-protocol", "aloft-device", "aloft-session"];

/// Manifest of the no_std proof crate, relative to the workspace root.
const NOSTD_MANIFEST: &str = "crates/nostd-check/Cargo.toml";

/// cargo-deny release installed when it is missing (pinned so `deny.toml`
/// keeps meaning the same thing).
const CARGO_DENY_VERSION: &str = "0.20.2";

type Step = fn() -> Result<()>;

/// Runs the CI steps.
pub fn run(args: &Args) -> Result<()> {
    let mut steps: Vec<(&str, Step)> = vec![("rustfmt", fmt), ("clippy", clippy), ("tests", tests)];
    if !args.quick {
        steps.push(("browser tests", crate::browser::run));
        steps.push(("README by hand", readme));
    }
    steps.push(("no_std proof", nostd));
    if args.quick {
        println!(
            "--quick: the browser tests, the README run, the fuzz smoke run and cargo-deny will be skipped"
        );
    } else {
        steps.push(("fuzz smoke", crate::fuzz::smoke));
        steps.push(("cargo-deny", deny));
    }

    let started = Instant::now();
    let mut timings = Vec::new();
    let mut failed = Vec::new();
    for (index, (name, step)) in steps.iter().enumerate() {
        println!("\n==> [{}/{}] {name}", index + 1, steps.len());
        let step_started = Instant::now();
        let result = step();
        timings.push((*name, step_started.elapsed()));
        if let Err(err) = result {
            let at = format!("step {}/{}: {name}", index + 1, steps.len());
            if !args.keep_going {
                print_timings(&timings, started.elapsed());
                return Err(err.context(format!("CI FAILED at {at}")));
            }
            eprintln!("\nerror: {err:#}\n(--keep-going: continuing after the failure of {at})");
            failed.push(*name);
        }
    }
    print_timings(&timings, started.elapsed());
    if !failed.is_empty() {
        bail!(
            "CI FAILED: {} step(s) failed: {}",
            failed.len(),
            failed.join(", ")
        );
    }
    println!(
        "\nCI passed{}",
        if args.quick {
            " (--quick: the browser tests, the README run, fuzz smoke and cargo-deny skipped)"
        } else {
            ""
        }
    );
    Ok(())
}

fn print_timings(timings: &[(&str, Duration)], total: Duration) {
    println!("\n==> timings");
    for (name, took) in timings {
        println!("    {name:<14} {}", human(*took));
    }
    println!("    {:<14} {}", "total", human(total));
}

fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn fmt() -> Result<()> {
    Cmd::cargo(["fmt", "--all", "--", "--check"])
        .run()
        .context("code is not formatted: run `cargo fmt --all`")?;
    Cmd::cargo(["fmt", "--manifest-path", NOSTD_MANIFEST, "--", "--check"])
        .run()
        .with_context(|| format!("run `cargo fmt --manifest-path {NOSTD_MANIFEST}`"))
}

fn clippy() -> Result<()> {
    Cmd::cargo([
        "clippy",
        "--locked",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ])
    .run()?;
    // The device build: default features, library only (test targets would
    // pull in std-enabling dev-dependencies).
    let mut packages = Vec::new();
    for krate in NO_STD_CRATES {
        packages.extend(["-p", krate]);
    }
    Cmd::cargo(["clippy", "--locked", "--lib"])
        .args(packages)
        .args(["--", "-D", "warnings"])
        .run()
}

/// The s3s-fs release the object-store tests run against (keep in step
/// with `crates/aloft-server/tests/support/s3s.rs`).
const S3S_FS_VERSION: &str = "0.14.1";

/// Installs s3s-fs, the S3-protocol server of the object-store tests, when
/// it is missing (and `ALOFT_S3S_FS` does not name one).
fn ensure_s3s_fs() -> Result<()> {
    if std::env::var_os("ALOFT_S3S_FS").is_some() {
        return Ok(());
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("s3s-fs").is_file()));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let in_cargo_home = cargo_home.is_some_and(|h| h.join("bin").join("s3s-fs").is_file());
    if on_path || in_cargo_home {
        return Ok(());
    }
    println!(
        "s3s-fs not found: installing it with `cargo install --locked s3s-fs --version \
         {S3S_FS_VERSION} --features binary` (the S3 server of the object-store tests; once \
         per machine)"
    );
    let started = Instant::now();
    Cmd::cargo([
        "install",
        "--locked",
        "s3s-fs",
        "--version",
        S3S_FS_VERSION,
        "--features",
        "binary",
    ])
    .env("CARGO_PROFILE_RELEASE_LTO", "off")
    .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
    .run()
    .context("installing s3s-fs")?;
    println!("s3s-fs installed in {}", human(started.elapsed()));
    Ok(())
}

/// Where the PostgreSQL tests connect (see `crates/aloft-server/tests/support/pg.rs`).
const POSTGRES_ADDR: &str = "127.0.0.1:5432";

/// Starts the machine's PostgreSQL cluster when nothing answers on
/// [`POSTGRES_ADDR`] (and `ALOFT_TEST_POSTGRES` does not name another server).
fn ensure_postgres() -> Result<()> {
    let answers = || {
        std::net::TcpStream::connect_timeout(
            &POSTGRES_ADDR.parse().expect("valid address"),
            Duration::from_secs(2),
        )
        .is_ok()
    };
    if std::env::var_os("ALOFT_TEST_POSTGRES").is_some() || answers() {
        return Ok(());
    }
    let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    let Some(version) = versions.iter().max() else {
        bail!(
            "PostgreSQL is needed by the scale-out tests and nothing answers on {POSTGRES_ADDR}, \
             and no cluster is installed to start: install PostgreSQL (apt-get install \
             postgresql) or set ALOFT_TEST_POSTGRES to a server's URL"
        );
    };
    println!("PostgreSQL not running on {POSTGRES_ADDR}: starting cluster {version}/main");
    Cmd::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", version, "main", "start"])
        .run()
        .context("starting PostgreSQL")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers() {
        if Instant::now() > deadline {
            bail!("PostgreSQL was started but does not answer on {POSTGRES_ADDR} after 30 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn tests() -> Result<()> {
    ensure_s3s_fs()?;
    ensure_postgres()?;
    let nextest = std::env::var_os("ALOFT_NO_NEXTEST").is_none()
        && Cmd::cargo(["nextest", "--version"]).succeeds();
    if nextest {
        // nextest prints its own closing `Summary [...] N tests run: ...` line,
        // but does not run doctests.
        Cmd::cargo([
            "nextest",
            "run",
            "--locked",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
        ])
        .run()?;
        // Same features as above, so the libraries built for the tests are
        // reused.
        // The server's tests again, their servers on PostgreSQL (same
        // build: the workspace with a filter).
        println!("\nthe server's tests on PostgreSQL (ALOFT_TEST_STORE=postgres)");
        Cmd::cargo([
            "nextest",
            "run",
            "--locked",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
            "-E",
            "package(aloft-server)",
        ])
        .env("ALOFT_TEST_STORE", "postgres")
        .run()
        .context("the server's tests on PostgreSQL")?;
        let (lines, ok) =
            Cmd::cargo(["test", "--locked", "--workspace", "--all-features", "--doc"]).run_tee()?;
        println!("Summary: {} (doctests)", Totals::parse(&lines));
        if !ok {
            bail!("doctests failed");
        }
    } else {
        println!("cargo-nextest not found (or ALOFT_NO_NEXTEST set): using cargo test");
        let (lines, ok) = Cmd::cargo([
            "test",
            "--locked",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
        ])
        .run_tee()?;
        let totals = Totals::parse(&lines);
        println!("Summary: {totals} (cargo test, doctests included)");
        if !ok {
            bail!("tests failed");
        }
        let (lines, ok) = Cmd::cargo([
            "test",
            "--locked",
            "--all-features",
            "--no-fail-fast",
            "-p",
            "aloft-server",
            "--tests",
        ])
        .env("ALOFT_TEST_STORE", "postgres")
        .run_tee()?;
        println!(
            "Summary: {} (the server's tests on PostgreSQL)",
            Totals::parse(&lines)
        );
        if !ok {
            bail!("the server's tests on PostgreSQL failed");
        }
        if totals.passed == 0 {
            bail!("no test ran");
        }
    }
    Ok(())
}

/// README.md's "By hand" section, run as written (see `readme`).
fn readme() -> Result<()> {
    crate::readme::run(&crate::readme::Args::default())
}

/// Where the no_std proof builds: `nostd-check/` under the target dir, so
/// `cargo clean` covers it and the crate directory stays clean.
fn nostd_target_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => std::env::current_dir()
            .context("current directory")?
            .join(dir),
        None => workspace_root().join("target"),
    };
    Ok(base.join("nostd-check"))
}

fn nostd() -> Result<()> {
    let target_dir = nostd_target_dir()?;
    let common = |sub: &str| {
        Cmd::cargo([
            sub,
            "--locked",
            "--manifest-path",
            NOSTD_MANIFEST,
            "--target-dir",
        ])
        .args([&target_dir])
    };
    let hint = || {
        format!(
            "the no_std proof failed to build.\n\
             - `duplicate lang item panic_impl` (or `unwinding panics are not supported \
             without std`): std crept into the graph of {crates}; find who pulls it with \
             `cargo tree --manifest-path {NOSTD_MANIFEST} -e features -i <crate>`.\n\
             - `cannot update the lock file`: a dependency of {crates} changed; run \
             `cargo update --manifest-path {NOSTD_MANIFEST} --workspace` and commit \
             crates/nostd-check/Cargo.lock.",
            crates = NO_STD_CRATES.join(", ")
        )
    };
    common("clippy")
        .args(["--", "-D", "warnings"])
        .run()
        .with_context(hint)?;
    common("build").run().with_context(hint)?;
    // A signature-only device: the device core without its decrypting
    // installer (aloft-device's `decrypt` feature off).
    common("build")
        .args(["--no-default-features"])
        .run()
        .with_context(hint)
}

/// Whether the advisory check runs, and why.
enum Advisories {
    /// `ALOFT_DENY_ADVISORIES=1`: fetch the database and check.
    Fetch,
    /// A database is already on disk: check against it without fetching.
    Local,
    /// No database and no network for it: skipped, and said so.
    Skip,
}

fn deny() -> Result<()> {
    if !Cmd::cargo(["deny", "--version"]).succeeds() {
        println!(
            "cargo-deny not found: installing it with \
             `cargo install --locked cargo-deny --version {CARGO_DENY_VERSION}` \
             (a few minutes on 2 cores; once per machine)"
        );
        let started = Instant::now();
        Cmd::cargo([
            "install",
            "--locked",
            "cargo-deny",
            "--version",
            CARGO_DENY_VERSION,
        ])
        // cargo-deny's release profile asks for fat LTO and one codegen
        // unit: minutes more on 2 cores for a tool that checks our small
        // graph in a second. Config overrides the manifest's profile.
        .env("CARGO_PROFILE_RELEASE_LTO", "off")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
        .run()
        .context("installing cargo-deny")?;
        println!("cargo-deny installed in {}", human(started.elapsed()));
    }

    let advisories = if std::env::var_os("ALOFT_DENY_ADVISORIES").is_some_and(|v| v == "1") {
        Advisories::Fetch
    } else if advisory_db_present() {
        Advisories::Local
    } else {
        Advisories::Skip
    };
    let mut args = vec!["deny", "--locked"];
    match advisories {
        Advisories::Fetch => args.extend(["check", "advisories"]),
        // `--offline`: use the database on disk, fetch nothing.
        Advisories::Local => args.extend(["--offline", "check", "advisories"]),
        Advisories::Skip => {
            println!("{ADVISORIES_SKIPPED}");
            args.push("check");
        }
    }
    args.extend(["licenses", "bans", "sources"]);
    let fetching = matches!(advisories, Advisories::Fetch);
    Cmd::cargo(args).run().with_context(|| {
        if fetching {
            "cargo deny failed (see deny.toml); ALOFT_DENY_ADVISORIES=1 also needs the advisory \
             database to be reachable"
        } else {
            "cargo deny found a problem (see deny.toml)"
        }
    })?;
    if matches!(advisories, Advisories::Skip) {
        println!("{ADVISORIES_SKIPPED}");
    }
    Ok(())
}

const ADVISORIES_SKIPPED: &str = "NOTE: cargo-deny advisories SKIPPED: the advisory database is \
     not on this machine and cannot be fetched offline. Checked: licenses, bans, sources. \
     Set ALOFT_DENY_ADVISORIES=1 where the network allows it.";

/// Whether cargo-deny's advisory database (default location:
/// `$CARGO_HOME/advisory-dbs/<name>-<hash>/`) has been fetched: a database
/// directory holding its `crates/` tree. A failed fetch leaves only a lock
/// file behind, which does not count.
fn advisory_db_present() -> bool {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let Some(entries) =
        cargo_home.and_then(|home| std::fs::read_dir(home.join("advisory-dbs")).ok())
    else {
        return false;
    };
    entries
        .flatten()
        .any(|entry| entry.path().join("crates").is_dir())
}

/// Sums of the `test result:` lines printed by `cargo test`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn parse(lines: &[String]) -> Self {
        let mut totals = Self::default();
        for line in lines {
            let Some(rest) = line.trim().strip_prefix("test result: ") else {
                continue;
            };
            let Some((_, counts)) = rest.split_once(". ") else {
                continue;
            };
            for part in counts.split("; ") {
                let mut words = part.split_whitespace();
                let (Some(n), Some(what)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(n) = n.parse::<u64>() else { continue };
                match what {
                    "passed" => totals.passed += n,
                    "failed" => totals.failed += n,
                    "ignored" => totals.ignored += n,
                    _ => {}
                }
            }
        }
        totals
    }
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} tests run: {} passed, {} failed, {} ignored",
            self.passed + self.failed,
            self.passed,
            self.failed,
            self.ignored
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_every_result_line() {
        let lines: Vec<String> = [
            "running 3 tests",
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "   Doc-tests aloft_protocol",
            "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.20s",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            Totals::parse(&lines),
            Totals {
                passed: 5,
                failed: 1,
                ignored: 1
            }
        );
        assert_eq!(
            Totals::parse(&lines).to_string(),
            "6 tests run: 5 passed, 1 failed, 1 ignored"
        );
    }

    #[test]
    fn totals_of_no_result_line_is_zero() {
        let lines = vec![String::from("warning: no tests")];
        assert_eq!(Totals::parse(&lines), Totals::default());
    }
}
