//! The demo's child processes: each runs in its own process group, its
//! output goes to a log file, and every group is stopped (SIGTERM, then
//! SIGKILL after a grace period) when the [`Procs`] is dropped, so the demo
//! never leaves a process behind, whether it succeeds, fails or is
//! interrupted.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rustix::process::Signal;
use rustix::process::{Pid, kill_process_group};

/// One started process.
struct Proc {
    name: String,
    child: Child,
}

/// The set of processes the demo started.
#[derive(Default)]
pub struct Procs {
    procs: Vec<Proc>,
}

impl Procs {
    /// Starts `cmd` in a new process group, stdout and stderr appended to
    /// `log`. Returns the child's pid.
    pub fn spawn(&mut self, name: &str, mut cmd: Command, log: &Path) -> Result<u32> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        let pid = child.id();
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
        });
        Ok(pid)
    }

    /// Names of started processes that have exited already (a crashed
    /// server or boot simulator is a demo failure).
    pub fn exited(&mut self) -> Vec<String> {
        self.procs
            .iter_mut()
            .filter_map(|p| match p.child.try_wait() {
                Ok(Some(status)) => Some(format!("{} ({status})", p.name)),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        stop_all(std::mem::take(&mut self.procs));
    }
}

fn signal_group(child: &Child, signal: Signal) {
    if let Some(pid) = Pid::from_raw(child.id() as i32) {
        // The group may be gone already; nothing to do then.
        let _ = kill_process_group(pid, signal);
    }
}

fn stop_all(mut procs: Vec<Proc>) {
    for p in &procs {
        signal_group(&p.child, Signal::TERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && procs
            .iter_mut()
            .any(|p| matches!(p.child.try_wait(), Ok(None)))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in &mut procs {
        // Whatever is left of the group (a firmware the boot simulator did
        // not reap, say) goes too.
        signal_group(&p.child, Signal::KILL);
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
}

/// A log file path for `name` under `dir`.
pub fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}
