//! `cargo xtask readme`: runs the README's "By hand" section as written, one
//! command at a time, the way a newcomer would paste it into a shell.
//!
//! - The commands are read from README.md at run time (the fenced `sh` block
//!   under `## By hand`), so the README and what is tested cannot drift apart.
//! - They run in one bash (aliases expanded, as in an interactive shell), in
//!   a fresh `target/readme/`, so a developer's own `local/` is left alone;
//!   cargo finds the workspace from there as from its root.
//! - The README's port (7443) is replaced by a free loopback port, so runs
//!   do not collide with each other or with a server someone left running.
//! - A command the README says to leave with Ctrl-C (`aloft rollout watch`)
//!   gets SIGINT once its output shows what a person waits for: every
//!   targeted device updated.
//! - After the last command the fleet is checked: the device runs 1.1.0 and
//!   reports TrustRoot version 2 (the rotation reached it).
//! - bash runs in its own process group, and the group (the server and the
//!   boot simulator the README starts in the background included) is
//!   stopped when the run ends, fails or is interrupted.
//!
//! This is an xtask step rather than a `cargo test`: the commands are cargo
//! commands, which wait for the build directory lock that a running
//! `cargo test` holds. `cargo xtask ci` runs it after the tests.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use rustix::process::{Pid, Signal, kill_process, kill_process_group, test_kill_process_group};

use crate::cmd::workspace_root;

/// Options of `cargo xtask readme`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Longest time one command may take (the first builds take minutes).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_COMMAND_TIMEOUT_SECS)]
    command_timeout: u64,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            command_timeout: DEFAULT_COMMAND_TIMEOUT_SECS,
        }
    }
}

/// See [`Args::command_timeout`]: a fresh machine builds the server, the
/// tools and the firmware profile inside the first commands.
const DEFAULT_COMMAND_TIMEOUT_SECS: u64 = 1200;

/// The heading of the section that is run.
const SECTION: &str = "## By hand";

/// The port the README uses; replaced by a free one.
const README_PORT: &str = "7443";

/// Marks the end of a command's output, followed by its exit code.
const DONE: &str = "@@aloft-readme-done";

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
    let started = Instant::now();
    let readme_path = workspace_root().join("README.md");
    let readme = std::fs::read_to_string(&readme_path)
        .with_context(|| format!("reading {}", readme_path.display()))?;
    let port = free_port()?;
    let block = with_port(&by_hand_block(&readme)?, port)?;
    let commands = commands(&block);
    ensure!(!commands.is_empty(), "the {SECTION} block holds no command");

    let dir = workspace_root().join("target").join("readme");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("clearing the previous run in {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let log_path = dir.join("readme.log");
    println!(
        "Running README.md's \"By hand\" ({} commands) in {} with port {port}; \
         the full output goes to {}",
        commands.len(),
        dir.display(),
        log_path.display()
    );
    let mut shell = Shell::start(&dir, &log_path, stop)?;
    let timeout = Duration::from_secs(args.command_timeout);
    for (i, command) in commands.iter().enumerate() {
        let label = format!("command {}/{}", i + 1, commands.len());
        let interrupt = interrupt_when(command)?;
        let out = shell
            .run(command, timeout, interrupt)
            .with_context(|| failed(&label, command, &dir))?;
        if out.code != 0 {
            bail!(
                "{}: exit code {}; its output:\n{}",
                failed(&label, command, &dir),
                out.code,
                tail(&out.lines, 40)
            );
        }
        if let Some(stop) = interrupt {
            ensure!(
                out.interrupted,
                "{}: it ended before {}",
                failed(&label, command, &dir),
                stop.describe()
            );
        }
    }
    check_outcome(&mut shell, &dir)?;
    drop(shell);
    println!(
        "README \"By hand\": all {} commands passed in {:.0} s",
        commands.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn failed(label: &str, command: &str, dir: &Path) -> String {
    format!(
        "README \"By hand\", {label} failed:\n    {}\n  (run in {}; logs there and in local/)",
        command.replace('\n', "\n    "),
        dir.display()
    )
}

/// The last `n` lines, indented.
fn tail(lines: &[String], n: usize) -> String {
    let skip = lines.len().saturating_sub(n);
    lines[skip..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A free loopback port (the system's choice; released for the server).
fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// The text of the first fenced `sh` block under the `## By hand` heading.
pub fn by_hand_block(readme: &str) -> Result<String> {
    let mut lines = readme.lines();
    lines
        .by_ref()
        .find(|l| l.trim_end() == SECTION)
        .with_context(|| format!("README.md has no {SECTION:?} section"))?;
    lines
        .by_ref()
        .take_while(|l| !l.starts_with("## "))
        .find(|l| l.trim_end() == "```sh")
        .with_context(|| format!("the {SECTION} section has no ```sh block"))?;
    let mut block = String::new();
    for line in lines {
        if line.trim_end() == "```" {
            return Ok(block);
        }
        block.push_str(line);
        block.push('\n');
    }
    bail!("the ```sh block of {SECTION} is not closed")
}

/// `block` with the README's port replaced by `port` (it must appear where
/// the server listens and where the CLI calls it).
pub fn with_port(block: &str, port: u16) -> Result<String> {
    let needle = format!(":{README_PORT}");
    let uses = block.matches(&needle).count();
    ensure!(
        uses >= 2,
        "the {SECTION} block should name port {README_PORT} where the server listens and where \
         the CLI calls it; found it {uses} times"
    );
    Ok(block.replace(&needle, &format!(":{port}")))
}

/// The block's commands: comment-only and blank lines dropped, lines
/// continued with a trailing `\` kept together.
pub fn commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        if current.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            continue;
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(line);
        if !line.trim_end().ends_with('\\') {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// When to press Ctrl-C for a command that runs until one does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// `aloft rollout watch`: once a status line shows `updated N/N`, N > 0.
    AllUpdated,
}

impl Interrupt {
    fn describe(self) -> &'static str {
        match self {
            Self::AllUpdated => "every targeted device was updated",
        }
    }

    fn reached(self, line: &str) -> bool {
        match self {
            Self::AllUpdated => {
                let Some(rest) = line.split("updated ").nth(1) else {
                    return false;
                };
                let counts = rest.split_whitespace().next().unwrap_or("");
                matches!(
                    counts.split_once('/'),
                    Some((done, of)) if done == of && done.parse::<u32>().is_ok_and(|n| n > 0)
                )
            }
        }
    }
}

/// Whether `command` runs until Ctrl-C (the README says so beside it), and
/// when the test presses it.
pub fn interrupt_when(command: &str) -> Result<Option<Interrupt>> {
    if !command.contains("Ctrl-C") {
        return Ok(None);
    }
    if command.contains("rollout watch") {
        return Ok(Some(Interrupt::AllUpdated));
    }
    bail!(
        "the {SECTION} command {command:?} is left with Ctrl-C, and xtask/src/readme.rs does \
         not know when to press it: add a case to `interrupt_when`"
    )
}

/// A finished command.
struct Output {
    code: i32,
    lines: Vec<String>,
    interrupted: bool,
}

/// The bash the commands run in, its output, and the log of both.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    log: std::fs::File,
    stop: Arc<AtomicBool>,
}

impl Shell {
    fn start(dir: &Path, log_path: &Path, stop: Arc<AtomicBool>) -> Result<Self> {
        let mut command = Command::new("bash");
        command
            .args(["--noprofile", "--norc", "-s"])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // A developer's own settings must not change what is tested.
            .env_remove("ALOFT_SERVER")
            .env_remove("ALOFT_CA")
            .env_remove("ALOFT_TOKEN")
            .env_remove("BASH_ENV")
            .env_remove("ENV")
            .process_group(0);
        let mut child = command.spawn().context("starting bash")?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // As in an interactive shell: aliases expand; stderr is shown too.
        stdin
            .write_all(b"shopt -s expand_aliases\nexec 2>&1\n")
            .context("writing to bash")?;
        let log = std::fs::File::create(log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        Ok(Self {
            child,
            stdin,
            lines,
            log,
            stop,
        })
    }

    fn log(&mut self, line: &str) {
        let _ = writeln!(self.log, "{line}");
    }

    /// Runs `command`, printing its output as it comes, until it finishes
    /// (or, with `interrupt`, until that moment comes and Ctrl-C ends it).
    fn run(
        &mut self,
        command: &str,
        timeout: Duration,
        interrupt: Option<Interrupt>,
    ) -> Result<Output> {
        let started = Instant::now();
        println!("$ {}", command.replace('\n', "\n  "));
        self.log(&format!("$ {command}"));
        writeln!(self.stdin, "{command}\nprintf '%s %d\\n' '{DONE}' \"$?\"")
            .context("writing to bash")?;
        self.stdin.flush()?;
        let mut lines = Vec::new();
        let mut interrupted = false;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            if started.elapsed() > timeout {
                bail!("no end after {} s", timeout.as_secs());
            }
            let mut line = match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("bash exited ({:?})", self.child.try_wait());
                }
            };
            // The marker follows the output, which may not end in a newline.
            let mut done = None;
            if let Some(at) = line.find(DONE) {
                done = Some(line[at + DONE.len()..].trim().parse().unwrap_or(-1));
                line.truncate(at);
            }
            if !line.is_empty() || done.is_none() {
                println!("  {line}");
                self.log(&line);
                if let Some(when) = interrupt
                    && !interrupted
                    && when.reached(&line)
                {
                    println!("  (Ctrl-C: {})", when.describe());
                    self.interrupt_foreground(command)?;
                    interrupted = true;
                }
                lines.push(line);
            }
            if let Some(code) = done {
                let took = format!("({code}, {:.1} s)", started.elapsed().as_secs_f64());
                println!("  {took}");
                self.log(&took);
                return Ok(Output {
                    code,
                    lines,
                    interrupted,
                });
            }
        }
    }

    /// Sends SIGINT to the command bash runs now (its child whose command
    /// line matches), as a terminal does on Ctrl-C.
    fn interrupt_foreground(&self, command: &str) -> Result<()> {
        let words: Vec<&str> = command
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .filter(|w| *w != "aloft")
            .collect();
        let bash = self.child.id();
        let mut found = false;
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // Fields after the parenthesised name: state, then the parent's pid.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if parent != Some(bash) {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if words.iter().all(|w| args.iter().any(|a| a == w))
                && let Some(pid) = Pid::from_raw(pid)
            {
                kill_process(pid, Signal::INT).context("sending SIGINT")?;
                found = true;
            }
        }
        ensure!(found, "found no process of {command:?} to interrupt");
        Ok(())
    }
}

impl Drop for Shell {
    /// Stops bash and everything it started: SIGTERM to the group, then
    /// SIGKILL to whatever is left after a grace period.
    fn drop(&mut self) {
        let Some(group) = Pid::from_raw(self.child.id() as i32) else {
            return;
        };
        let _ = kill_process_group(group, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        // The group is gone when signal 0 no longer reaches any member.
        while Instant::now() < deadline && test_kill_process_group(group).is_ok() {
            let _ = self.child.try_wait();
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = kill_process_group(group, Signal::KILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the section promises, checked after its last command: the device
/// runs 1.1.0 (updated) and holds TrustRoot version 2. The device checks in
/// every few seconds in the README, so this waits a little for the rotation.
fn check_outcome(shell: &mut Shell, dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = shell.run("aloft device list --json", Duration::from_secs(60), None)?;
        ensure!(
            out.code == 0,
            "checking the outcome: `aloft device list --json` failed:\n{}",
            tail(&out.lines, 20)
        );
        let json: serde_json::Value = serde_json::from_str(&out.lines.join("\n"))
            .context("`aloft device list --json` printed no JSON")?;
        let device = json
            .as_array()
            .and_then(|devices| devices.iter().find(|d| d["id"] == "dev-1"))
            .context("dev-1 is not in `aloft device list`")?;
        let firmware = device["firmware_version"].as_str().unwrap_or("-");
        let status = device["status"].as_str().unwrap_or("-");
        let root = device["trust_root_version"].as_u64().unwrap_or(0);
        if firmware == "1.1.0" && status == "updated" && root == 2 {
            println!("dev-1 runs 1.1.0 (updated) with TrustRoot version 2");
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "after the README's commands dev-1 runs {firmware} ({status}) with TrustRoot \
                 version {root}; expected 1.1.0 (updated) and version 2 (logs in {})",
                log_dir(dir).display()
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

fn log_dir(dir: &Path) -> PathBuf {
    dir.join("local")
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = include_str!("../../README.md");

    #[test]
    fn blocks_and_commands_are_read_as_a_shell_would() {
        let text = "# T\n\n## By hand\n\nIntro.\n\n```sh\nalias a='b'\n# comment\n\
                    a one \\\n  two &\n\nexport X=$(cat f)   # why\n```\n\n## Next\n";
        let block = by_hand_block(text).unwrap();
        assert_eq!(
            commands(&block),
            [
                "alias a='b'",
                "a one \\\n  two &",
                "export X=$(cat f)   # why"
            ]
        );
        assert!(by_hand_block("## By hand\n\nno block\n\n## Other\n```sh\nx\n```\n").is_err());
        assert!(by_hand_block("## Other\n```sh\nx\n```\n").is_err());
        assert!(by_hand_block("## By hand\n```sh\nx\n").is_err());
    }

    #[test]
    fn the_port_is_replaced_everywhere() {
        let block = "serve --listen 127.0.0.1:7443\nexport S=https://localhost:7443\n";
        assert_eq!(
            with_port(block, 40123).unwrap(),
            "serve --listen 127.0.0.1:40123\nexport S=https://localhost:40123\n"
        );
        assert!(with_port("serve --listen 127.0.0.1:8000\n", 1).is_err());
    }

    #[test]
    fn watch_is_interrupted_once_every_device_is_updated() {
        let stop = interrupt_when("aloft rollout watch r   # bars; Ctrl-C to leave")
            .unwrap()
            .unwrap();
        assert!(stop.reached("status  active  stage 1/2 test  updated 1/1  in flight 0  failed 0"));
        assert!(!stop.reached("status  active  stage 1/2 test  updated 0/1  in flight 1"));
        assert!(!stop.reached("status  active  stage 1/2 test  updated 0/0"));
        assert_eq!(interrupt_when("aloft rollout status r").unwrap(), None);
        assert!(interrupt_when("aloft top   # Ctrl-C to leave").is_err());
    }

    /// The README's own block: readable, and in the order that makes each
    /// step work the first time.
    #[test]
    fn the_readme_block_runs_in_a_working_order() {
        let block = by_hand_block(README).unwrap();
        with_port(&block, 1).unwrap();
        let commands = commands(&block);
        let at = |needle: &str| {
            commands
                .iter()
                .position(|c| c.contains(needle))
                .unwrap_or_else(|| panic!("no command with {needle:?} in {commands:#?}"))
        };
        assert!(at("alias aloft=") == 0);
        assert!(
            at("xtask keys") < at("-p aloft-server"),
            "keys before the first start"
        );
        assert!(at("-p aloft-server") < at("trust-root set"));
        assert!(
            at("trust-root set") < at("device provision"),
            "TrustRoot before provisioning"
        );
        assert!(at("device provision") < at("aloft-release -- factory"));
        assert!(at("rollout create") < at("rollout watch"));
        assert!(
            at("rollout watch") < at("keys rotate"),
            "rotation after the first rollout"
        );
        assert!(at("keys rotate") < at("trust-root history"));
        assert!(
            interrupt_when(&commands[at("rollout watch")])
                .unwrap()
                .is_some()
        );
        // Background processes write to files, not over the next commands.
        for c in commands.iter().filter(|c| c.trim_end().ends_with('&')) {
            assert!(c.contains("> local/"), "{c}");
        }
    }
}
