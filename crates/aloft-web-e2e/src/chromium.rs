//! Headless Chromium from the system's packages, driven by its
//! chromedriver: found on `PATH` (Debian's `chromium` and
//! `chromium-driver`) or named by `ALOFT_CHROMIUM` / `ALOFT_CHROMEDRIVER`.
//!
//! The browser reaches nothing but this machine: every host name other
//! than `localhost` fails to resolve, and Chromium's background services
//! (updates, sync, safe browsing, metrics) are off.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::webdriver::{Session, WebDriverError};

/// Why the browser could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// A program is not installed.
    #[error(
        "{program} not found (looked for {names} on PATH and in ${env}): install Debian's \
         chromium and chromium-driver (`apt-get install chromium chromium-driver`), which \
         `cargo xtask ci` does when it runs as root"
    )]
    NotFound {
        /// What is missing.
        program: &'static str,
        /// The names tried.
        names: String,
        /// The variable that may name it.
        env: &'static str,
    },
    /// A process could not be started or watched.
    #[error("{what}")]
    Io {
        /// What failed.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// chromedriver never answered.
    #[error("chromedriver did not answer on {url} within {waited:?}")]
    NotReady {
        /// Its address.
        url: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The WebDriver session could not be opened.
    #[error("opening the browser session")]
    Session(#[source] WebDriverError),
}

fn which(
    env: &'static str,
    names: &[&str],
    program: &'static str,
) -> Result<PathBuf, BrowserError> {
    if let Some(path) = std::env::var_os(env).map(PathBuf::from)
        && path.is_file()
    {
        return Ok(path);
    }
    let dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
        .ok_or_else(|| BrowserError::NotFound {
            program,
            names: names.join(", "),
            env,
        })
}

/// The Chromium binary.
pub fn chromium_path() -> Result<PathBuf, BrowserError> {
    which(
        "ALOFT_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
        "Chromium",
    )
}

/// The chromedriver binary.
pub fn chromedriver_path() -> Result<PathBuf, BrowserError> {
    which("ALOFT_CHROMEDRIVER", &["chromedriver"], "chromedriver")
}

/// A running chromedriver and one browser session on it. Dropping it
/// closes the browser and stops chromedriver.
pub struct Browser {
    driver: Child,
    session: Option<Session>,
    _profile: tempfile::TempDir,
}

fn free_port() -> Result<u16, BrowserError> {
    let io = |source| BrowserError::Io {
        what: "finding a free port for chromedriver".into(),
        source,
    };
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
    Ok(listener.local_addr().map_err(io)?.port())
}

fn wait_ready(url: &str, driver: &mut Child) -> Result<(), BrowserError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let waited = Duration::from_secs(20);
    let until = Instant::now() + waited;
    while Instant::now() < until {
        if agent.get(&format!("{url}/status")).call().is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = driver.try_wait() {
            return Err(BrowserError::Io {
                what: format!("chromedriver exited at start ({status})"),
                source: std::io::Error::other("exited"),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(BrowserError::NotReady {
        url: url.to_owned(),
        waited,
    })
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless
    /// Chromium window of `width` x `height`. `accept_insecure_certs` lets
    /// it take the test CA's certificate.
    pub fn start(
        width: u32,
        height: u32,
        accept_insecure_certs: bool,
    ) -> Result<Self, BrowserError> {
        let chromium = chromium_path()?;
        let chromedriver = chromedriver_path()?;
        let port = free_port()?;
        let profile = tempfile::tempdir().map_err(|source| BrowserError::Io {
            what: "making a browser profile directory".into(),
            source,
        })?;
        let mut driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| BrowserError::Io {
                what: format!("starting {}", chromedriver.display()),
                source,
            })?;
        let url = format!("http://127.0.0.1:{port}");
        if let Err(e) = wait_ready(&url, &mut driver) {
            let _ = driver.kill();
            let _ = driver.wait();
            return Err(e);
        }
        let mut browser = Self {
            driver,
            session: None,
            _profile: profile,
        };
        let capabilities = capabilities(
            &chromium,
            browser._profile.path(),
            width,
            height,
            accept_insecure_certs,
        );
        browser.session = Some(Session::new(&url, capabilities).map_err(BrowserError::Session)?);
        Ok(browser)
    }

    /// The session.
    pub fn session(&self) -> &Session {
        self.session
            .as_ref()
            .expect("a started browser has a session")
    }
}

fn capabilities(
    chromium: &Path,
    profile: &Path,
    width: u32,
    height: u32,
    accept_insecure_certs: bool,
) -> serde_json::Value {
    json!({
        "browserName": "chrome",
        "acceptInsecureCerts": accept_insecure_certs,
        "pageLoadStrategy": "normal",
        "goog:loggingPrefs": { "browser": "ALL" },
        "goog:chromeOptions": {
            "binary": chromium.display().to_string(),
            "args": [
                "--headless=new",
                // Running as root in CI: Chromium's sandbox needs a user namespace.
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                format!("--window-size={width},{height}"),
                format!("--user-data-dir={}", profile.display()),
                "--lang=en-US",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-domain-reliability",
                "--disable-client-side-phishing-detection",
                "--metrics-recording-only",
                "--no-pings",
                "--safebrowsing-disable-auto-update",
                "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,CertificateTransparencyComponentUpdater",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",
            ],
        },
    })
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.quit();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
