//! The files under deploy/: the systemd unit passes `systemd-analyze verify`
//! (skipped, saying so, where systemd-analyze is missing) and keeps its
//! hardening; every flag the unit and the container file pass is one the
//! binary has.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_aloft-server");

fn deploy(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = deploy("aloft-server.service");
    for setting in [
        "User=aloft",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "StateDirectory=aloft",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.contains(setting), "the unit lost {setting:?}");
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze is not installed here; the unit was not verified");
        return;
    }
    // Verify the unit as installed, with ExecStart naming the binary built here.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aloft-server.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/aloft-server", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !said.contains("aloft-server.service:"),
        "systemd-analyze verify: {said}"
    );
}

/// The command line of the unit's ExecStart (with its continuations).
fn exec_start(unit: &str) -> String {
    let mut out = String::new();
    let mut lines = unit.lines().skip_while(|l| !l.starts_with("ExecStart="));
    for line in lines.by_ref() {
        out.push_str(line.trim_end_matches('\\'));
        out.push(' ');
        if !line.ends_with('\\') {
            break;
        }
    }
    out
}

/// The container's ENTRYPOINT array.
fn entrypoint(file: &str) -> String {
    let at = file.find("ENTRYPOINT [").expect("an ENTRYPOINT");
    let end = at + file[at..].find(']').expect("the ENTRYPOINT's ]");
    file[at..end].to_owned()
}

#[test]
fn every_flag_the_deploy_files_pass_exists() {
    let help = String::from_utf8(Command::new(BIN).arg("--help").output().unwrap().stdout).unwrap();
    let commands = [
        exec_start(&deploy("aloft-server.service")),
        entrypoint(&deploy("Containerfile")),
    ];
    for command in &commands {
        let flags: Vec<&str> = command
            .split(|c: char| c.is_whitespace() || c == '"' || c == ',')
            .filter(|w| w.starts_with("--"))
            .collect();
        for f in [
            "--data",
            "--listen",
            "--tls-cert",
            "--tls-key",
            "--metrics",
            "--log-format",
        ] {
            assert!(flags.contains(&f), "{f} not in {command}");
        }
        for f in flags {
            assert!(
                help.contains(&format!("{f} ")),
                "{command} passes {f}, which aloft-server does not have"
            );
        }
    }
}
