//! The dashboard's browser tests, a step of `cargo xtask ci`:
//! `crates/aloft-web-e2e/tests/browser.rs` in headless Chromium.
//!
//! Chromium and chromedriver come from the system's packages (Debian's
//! `chromium` and `chromium-driver`, the same version by construction).
//! When they are missing and this runs as root with apt-get (CI), they are
//! installed; otherwise the step fails and says what to install. It never
//! skips silently: only `cargo xtask ci --quick` leaves it out, and says so.
//! Why not playwright-core from npm: it would bring Node.js and a second
//! test runner, and is tested against its own browser builds, which cannot
//! be downloaded here; chromedriver speaks the W3C standard to the very
//! Chromium it ships with, and the tests stay Rust tests on the fixtures
//! the other tests use.

use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::cmd::Cmd;

/// Options of `cargo xtask browser`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only make sure Chromium and chromedriver are installed (installing
    /// them as CI does when they are missing); run no test.
    #[arg(long)]
    install_only: bool,
}

/// `cargo xtask browser`: the CI step on its own.
pub fn task(args: &Args) -> Result<()> {
    if args.install_only {
        ensure_browser()
    } else {
        run()
    }
}

/// Debian packages the browser tests need.
const PACKAGES: &[&str] = &["chromium", "chromium-driver", "fonts-dejavu-core"];

/// Whether one of `names` is on `PATH`.
fn on_path(names: &[&str]) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| names.iter().any(|n| dir.join(n).is_file()))
}

/// Whether the file `env` names exists, or one of `names` is on `PATH`.
fn found(env: &str, names: &[&str]) -> bool {
    std::env::var_os(env).is_some_and(|p| std::path::Path::new(&p).is_file()) || on_path(names)
}

fn browser_present() -> bool {
    found(
        "ALOFT_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    ) && found("ALOFT_CHROMEDRIVER", &["chromedriver"])
}

/// Installs Chromium and chromedriver with apt-get when they are missing.
fn ensure_browser() -> Result<()> {
    if browser_present() {
        return Ok(());
    }
    let root = rustix::process::geteuid().is_root();
    if !root || !on_path(&["apt-get"]) {
        bail!(
            "the browser tests need Chromium and chromedriver, which are not installed. On \
             Debian or Ubuntu: `sudo apt-get install {}`; elsewhere install Chromium and its \
             chromedriver and name them in ALOFT_CHROMIUM and ALOFT_CHROMEDRIVER. \
             (`cargo xtask ci --quick` skips the browser tests.)",
            PACKAGES.join(" ")
        );
    }
    println!(
        "Chromium or chromedriver missing: installing {} with apt-get",
        PACKAGES.join(" ")
    );
    let started = Instant::now();
    Cmd::new("apt-get")
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
        .context("apt-get update")?;
    Cmd::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(PACKAGES)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
        .context("installing Chromium and chromedriver with apt-get")?;
    if !browser_present() {
        bail!(
            "apt-get installed {} but chromium or chromedriver is still not on PATH",
            PACKAGES.join(" ")
        );
    }
    println!(
        "installed {} in {:.0} s",
        PACKAGES.join(" "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs the browser tests (with the features and workspace of the tests
/// step, so nothing is rebuilt).
pub fn run() -> Result<()> {
    ensure_browser()?;
    let started = Instant::now();
    let result = run_tests();
    println!(
        "browser tests: {:.0} s (build and run)",
        started.elapsed().as_secs_f64()
    );
    result
}

fn run_tests() -> Result<()> {
    let nextest = std::env::var_os("ALOFT_NO_NEXTEST").is_none()
        && Cmd::cargo(["nextest", "--version"]).succeeds();
    if nextest {
        Cmd::cargo([
            "nextest",
            "run",
            "--locked",
            "--workspace",
            "--all-features",
            "--run-ignored",
            "only",
            "-E",
            "package(aloft-web-e2e) & binary(browser)",
        ])
        .run()
        .context(
            "the dashboard's browser tests failed (screenshots in target/dashboard-screenshots/)",
        )
    } else {
        Cmd::cargo([
            "test",
            "--locked",
            "--workspace",
            "--all-features",
            "--test",
            "browser",
            "--",
            "--ignored",
        ])
        .run()
        .context(
            "the dashboard's browser tests failed (screenshots in target/dashboard-screenshots/)",
        )
    }
}
