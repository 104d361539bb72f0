//! The benchmarks, one module each, listed in [`registry`].
//!
//! To add one: write a module with a type implementing [`Bench`] and list it
//! in [`registry`]. A benchmark that
//! starts processes must start them through [`Ctx::spawn`], bind and connect
//! only to [`Ctx::loopback`] addresses, and stop them before returning (the
//! xtask also kills the bench's whole process group at the end).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command};

use crate::report::BenchResult;

pub mod checkin;
pub mod connected;
pub mod device;
pub mod download;
pub mod floor;
pub mod install;
pub mod rollout_scale;
pub mod scale_out;
pub mod server;
pub mod verify;
pub mod wire_bytes;

/// What every benchmark gets.
#[derive(Debug)]
pub struct Ctx {
    /// Fewer and smaller repetitions (a smoke run).
    pub quick: bool,
    /// A scratch directory, deleted after the run.
    pub scratch: PathBuf,
}

impl Ctx {
    /// Repetitions: `full` normally, `quick` with `--quick`.
    pub fn reps(&self, full: usize, quick: usize) -> usize {
        if self.quick { quick } else { full }
    }

    /// The `i`-th loopback address, in 127.0.0.0/8 (never 127.0.0.0 or the
    /// broadcast address): benchmarks that need many source addresses use
    /// these, and nothing else.
    pub fn loopback(i: u32) -> Ipv4Addr {
        let host = 1 + i % 0x00FF_FFFE;
        let [_, a, b, c] = host.to_be_bytes();
        Ipv4Addr::new(127, a, b, c)
    }

    /// Starts a helper process (killed when the returned guard drops).
    pub fn spawn(&self, cmd: &mut Command) -> anyhow::Result<ChildGuard> {
        let child = cmd.spawn()?;
        Ok(ChildGuard(child))
    }
}

/// A child process that is killed and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One benchmark.
pub trait Bench {
    /// Name for `--only` (kebab-case).
    fn name(&self) -> &'static str;
    /// Heading in BENCHMARKS.md.
    fn title(&self) -> &'static str;
    /// Item number in the benchmarks issue.
    fn item(&self) -> u8;
    /// Runs it. Errors become a "failed" result with the error as a note.
    fn run(&self, ctx: &Ctx) -> anyhow::Result<BenchResult>;
}

/// Every benchmark, in report order.
pub fn registry() -> Vec<Box<dyn Bench>> {
    vec![
        Box::new(install::DeviceInstall),
        Box::new(connected::ConnectedDevices),
        Box::new(verify::VerifyBaselines),
        Box::new(checkin::CheckInRate),
        Box::new(download::DownloadThroughput),
        Box::new(rollout_scale::RolloutScale),
        Box::new(wire_bytes::WireBytes),
        Box::new(scale_out::ScaleOut),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_loopback_stays_in_127_8() {
        let names: Vec<_> = registry().iter().map(|b| b.name()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        for i in [0, 1, 254, 255, 65_535, 0x00FF_FFFD, 0x00FF_FFFE, u32::MAX] {
            let a = Ctx::loopback(i);
            assert!(a.is_loopback(), "{a}");
            assert_ne!(a, Ipv4Addr::new(127, 0, 0, 0));
            assert_ne!(a, Ipv4Addr::new(127, 255, 255, 255));
        }
    }
}
