//! The machine the figures were measured on (Linux `/proc`, best effort).

use std::collections::BTreeSet;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// What BENCHMARKS.md says about the machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model name.
    pub cpu_model: String,
    /// Logical CPUs available to this process.
    pub logical_cores: usize,
    /// Physical cores, when `/proc/cpuinfo` says.
    pub physical_cores: Option<usize>,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// CPU features the AES-GCM, SHA-256 and P-256 code can use.
    pub crypto_features: String,
    /// Kernel.
    pub os: String,
    /// Compiler version.
    pub rustc: String,
}

impl Machine {
    /// Describes this machine.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let os = ["ostype", "osrelease"]
            .iter()
            .map(|f| {
                std::fs::read_to_string(format!("/proc/sys/kernel/{f}"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| std::env::consts::ARCH.into()),
            logical_cores: std::thread::available_parallelism().map_or(1, usize::from),
            physical_cores: physical_cores(&cpuinfo),
            memory_bytes: mem_total(&meminfo).unwrap_or(0),
            crypto_features: crypto_features(),
            os: if os.trim().is_empty() {
                std::env::consts::OS.into()
            } else {
                os
            },
            rustc: rustc_version(),
        }
    }

    /// Whether figures from `other` are comparable (same CPU, cores, memory).
    pub fn same_hardware(&self, other: &Self) -> bool {
        self.cpu_model == other.cpu_model
            && self.logical_cores == other.logical_cores
            && self.memory_bytes.abs_diff(other.memory_bytes) <= self.memory_bytes / 20
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// Distinct (physical id, core id) pairs.
fn physical_cores(cpuinfo: &str) -> Option<usize> {
    let mut cores = BTreeSet::new();
    let mut package = None;
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "physical id" => package = Some(value.trim().to_string()),
            "core id" => {
                cores.insert((package.clone(), value.trim().to_string()));
            }
            _ => {}
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn crypto_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let mut f = Vec::new();
        if std::arch::is_x86_feature_detected!("aes") {
            f.push("aes-ni");
        }
        if std::arch::is_x86_feature_detected!("pclmulqdq") {
            f.push("pclmulqdq");
        }
        if std::arch::is_x86_feature_detected!("sha") {
            f.push("sha-ni");
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            f.push("avx2");
        }
        if std::arch::is_x86_feature_detected!("adx") {
            f.push("adx");
        }
        if std::arch::is_x86_feature_detected!("bmi2") {
            f.push("bmi2");
        }
        if f.is_empty() {
            "none detected".into()
        } else {
            f.join(", ")
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        format!("({} not inspected)", std::env::consts::ARCH)
    }
}

fn rustc_version() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "?".into(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let cpuinfo = "processor\t: 0\nmodel name\t: Test CPU @ 3GHz\nphysical id\t: 0\ncore id\t: 0\n\n\
                       processor\t: 1\nmodel name\t: Test CPU @ 3GHz\nphysical id\t: 0\ncore id\t: 0\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("Test CPU @ 3GHz"));
        assert_eq!(physical_cores(cpuinfo), Some(1));
        assert_eq!(physical_cores(""), None);
        assert_eq!(
            mem_total("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
            Some(16384 * 1024)
        );
    }
}
