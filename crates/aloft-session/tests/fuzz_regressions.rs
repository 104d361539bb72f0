//! Inputs the fuzz targets of `fuzz/` (`cargo xtask fuzz`) found, each
//! reduced to a scripted session. An ignored test is a known bug waiting
//! for its fix (the reason says which).

use std::time::Duration;

use aloft_protocol::pb::server_to_device::Kind;
use aloft_protocol::{DeviceId, DeviceNonce, pb};
use aloft_session::device::{
    Action, DeviceSession, End, InstallResult, Installed, Snapshot, Timings,
};
use aloft_session::{Millis, SessionError};

fn msg(kind: Kind) -> pb::ServerToDevice {
    pb::ServerToDevice { kind: Some(kind) }
}

fn snapshot(reports: Vec<pb::Report>) -> Snapshot {
    Snapshot {
        state: pb::DeviceState {
            firmware_version: "1.0.0".into(),
            trust_root_version: 1,
            ..Default::default()
        },
        reports,
    }
}

fn drain(s: &mut DeviceSession) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

/// Found by `fuzz/fuzz_targets/device_session.rs`: once an install is
/// durable, "every path ends in `End::Reboot`" (module docs of
/// `aloft_session::device`), but only until the machine has emitted that
/// `End::Reboot`: `end()` sets the phase to `Ended`, and a later
/// `connection_lost` (the connection dropping while the driver still works
/// through the queued actions) answers `End::Failed`, because
/// `connection_lost` tells `Rebooting` from the rest by the phase alone.
/// The shipped agent returned on the `End` action before it could call
/// `connection_lost`, and reboots anyway when a session fails with an
/// unbooted trial pending, so nothing stranded; a driver written to the
/// documented contract would not have rebooted. Fixed: the machine
/// remembers that a reboot is owed from `install_finished(Installed)` on.
#[test]
fn connection_lost_after_the_reboot_was_announced_still_reboots() {
    let timings = Timings {
        report_ack_wait: Duration::from_secs(5),
        ..Timings::default()
    };
    let mut s = DeviceSession::new(
        DeviceId::new("dev-1").unwrap(),
        DeviceNonce::from_bytes([1; 16]),
        snapshot(vec![]),
        timings,
        Millis(0),
    );
    s.handle_message(
        Millis(0),
        msg(Kind::Challenge(pb::Challenge {
            nonce: vec![7; 32],
            server_time: 1,
        })),
    )
    .unwrap();
    s.handle_message(
        Millis(1),
        msg(Kind::Welcome(pb::Welcome {
            session_token: vec![9; 16],
            server_time: 1,
            next_check_in_secs: 300,
        })),
    )
    .unwrap();
    s.handle_message(Millis(2), msg(Kind::Offer(pb::Offer::default())))
        .unwrap();
    assert!(
        drain(&mut s)
            .iter()
            .any(|a| matches!(a, Action::Install(_)))
    );
    let installed = pb::Report {
        report_id: vec![0, 0, 0, 2],
        kind: pb::ReportKind::Installed as i32,
        release_id: "fw-2".into(),
        detail: String::new(),
    };
    s.install_finished(
        Millis(3),
        InstallResult::Installed(Installed(snapshot(vec![installed]))),
    );
    drain(&mut s);
    // The ack does not come: the bounded wait ends in the reboot.
    s.handle_timeout(Millis(3 + 5_000)).unwrap();
    assert_eq!(drain(&mut s).last(), Some(&Action::End(End::Reboot)));
    // The connection drops before the driver acted on it.
    assert_eq!(
        s.connection_lost(SessionError::Timeout("connection")),
        End::Reboot
    );
}
