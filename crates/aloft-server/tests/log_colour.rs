//! The binary's log is coloured on a terminal only: a log file or a pipe
//! gets plain text, and so does a terminal when `NO_COLOR` is set.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

// The pseudo-terminal helper the CLI's terminal tests use.
#[path = "../../aloft-cli/tests/pty/mod.rs"]
mod pty;

/// A started `aloft-server`, killed when dropped (a failed assertion too).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server (plaintext: it logs a warning) with `stderr` as its
/// log and `no_color` as `NO_COLOR`, and waits until it listens.
fn start(dir: &tempfile::TempDir, stderr: Stdio, no_color: Option<&str>) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aloft-server"));
    cmd.arg("--data")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--insecure-plaintext"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let mut server = Server(cmd.spawn().unwrap());
    let stdout = server.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("aloft-server listening on ") {
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the server did not start listening within 30 s");
    server
}

/// Stops the server so its log is complete.
fn stop(mut server: Server) {
    server.0.kill().unwrap();
    server.0.wait().unwrap();
}

fn assert_plain(log: &str, how: &str) {
    assert!(
        log.contains("WARN") && log.contains("serving WITHOUT TLS"),
        "{how}: no warning logged:\n{log}"
    );
    assert!(
        !log.contains('\x1b'),
        "{how}: ANSI escape codes in the log:\n{log:?}"
    );
}

#[test]
fn a_piped_log_has_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&dir, Stdio::piped(), None);
    let mut stderr = server.0.stderr.take().unwrap();
    stop(server);
    let mut log = String::new();
    stderr.read_to_string(&mut log).unwrap();
    assert_plain(&log, "stderr a pipe");
}

#[test]
fn a_log_file_has_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.log");
    let file = std::fs::File::create(&path).unwrap();
    stop(start(&dir, file.into(), None));
    assert_plain(&std::fs::read_to_string(&path).unwrap(), "stderr a file");
}

#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    for (no_color, coloured) in [(None, true), (Some(""), true), (Some("1"), false)] {
        let dir = tempfile::tempdir().unwrap();
        let terminal = pty::Pty::open(120, 40);
        stop(start(&dir, terminal.terminal(), no_color));
        let log = String::from_utf8_lossy(&terminal.finish()).into_owned();
        if coloured {
            assert!(
                log.contains("\x1b[") && log.contains("serving WITHOUT TLS"),
                "NO_COLOR={no_color:?} on a terminal: no colour:\n{log:?}"
            );
        } else {
            assert_plain(&log, "NO_COLOR=1 on a terminal");
        }
    }
}
