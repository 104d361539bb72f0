//! A real S3-protocol server for tests: `s3s-fs` (crates.io, pinned by
//! `cargo xtask ci`, which installs it when missing: see ARCHITECTURE.md,
//! "S3 server for tests"), started on 127.0.0.1 with a port of the OS's
//! choosing, SigV4 authentication on (so presigned URLs are really
//! checked: signature and expiry) and one bucket; killed on drop.
//!
//! Found as `$ALOFT_S3S_FS`, else `s3s-fs` on `PATH`, else in cargo's
//! install directory (`$CARGO_HOME/bin`, by default `$HOME/.cargo/bin`).
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aloft_server::payloads::{ObjectsConfig, S3Config};

/// The `s3s-fs` release `cargo xtask ci` installs.
pub const S3S_FS_VERSION: &str = "0.14.1";
pub const ACCESS_KEY: &str = "aloft-test-access";
pub const SECRET_KEY: &str = "aloft-test-secret-key-0123456789";

/// A running s3s-fs.
pub struct S3s {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The directory it stores buckets in (bucket = subdirectory).
    pub root: tempfile::TempDir,
    /// The bucket made for the test.
    pub bucket: String,
}

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ALOFT_S3S_FS") {
        return p.into();
    }
    let name = "s3s-fs";
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(candidate) = cargo_home.map(|h| h.join("bin").join(name))
        && candidate.is_file()
    {
        return candidate;
    }
    panic!(
        "s3s-fs (the S3-protocol server these tests run against) is not installed: run \
         `cargo install --locked s3s-fs --version {S3S_FS_VERSION} --features binary` \
         (cargo xtask ci does it), or point ALOFT_S3S_FS at the binary"
    );
}

impl S3s {
    /// Starts s3s-fs with an empty bucket `bucket`.
    pub fn start(bucket: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(bucket)).unwrap();
        let mut child = Command::new(binary())
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
            ])
            .arg(root.path())
            .env("RUST_LOG", "s3s_fs=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting s3s-fs");
        // It logs `server is running at http://127.0.0.1:PORT` once bound.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(at) = line.find("http://127.0.0.1:") {
                    let url: String = line[at..]
                        .chars()
                        .take_while(|c| !c.is_whitespace())
                        .collect();
                    let _ = tx.send(url);
                    sent = true;
                }
                // Keep draining so the server never blocks on its stdout.
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let endpoint = loop {
            if let Ok(url) = rx.recv_timeout(Duration::from_millis(100)) {
                break url;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("s3s-fs exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not start within 20 s"
            );
        };
        Self {
            child,
            endpoint,
            root,
            bucket: bucket.to_owned(),
        }
    }

    /// The payload store config for this bucket under `prefix`.
    pub fn objects(&self, prefix: &str) -> ObjectsConfig {
        ObjectsConfig::S3(S3Config {
            bucket: self.bucket.clone(),
            prefix: prefix.to_owned(),
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            allow_http: true,
            credentials: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
        })
    }

    /// Regular files under the bucket (relative paths, sorted), skipping
    /// s3s-fs's own bookkeeping (dot files, upload staging).
    pub fn files(&self) -> Vec<String> {
        fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let path = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    out.push(
                        path.strip_prefix(base)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
            }
        }
        let base = self.root.path().join(&self.bucket);
        let mut out = Vec::new();
        walk(&base, &base, &mut out);
        out.sort();
        out
    }
}

impl Drop for S3s {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
