//! The device side of a session (`aloft_session::device::DeviceSession`)
//! driven by an arbitrary script: server messages (arbitrary
//! `ServerToDevice` bytes), clock steps and timers, and the driver's
//! answers (trust updated, install durable / refused / deferred,
//! connection lost); see `aloft_fuzz::ops::device_op`.
//!
//! Properties: no panic; every sent message carries this device's id, the
//! one challenge, a 16..=64-byte challenge, and seq exactly one more than
//! the last, starting with the Hello at 1; a report is sent at most once per
//! session; an install or trust update is handed out only once the session
//! is open, one at a time; a session ends at most once and says nothing
//! after it; refused messages end it; once an install is durable every
//! ending is a reboot and no message is refused.
#![no_main]

use aloft_fuzz::fixtures::{DEVICE, NONCE};
use aloft_fuzz::ops::{Reader, device_op};
use aloft_protocol::pb::device_message::Body;
use aloft_protocol::prost::Message as _;
use aloft_protocol::{DeviceId, DeviceNonce, pb};
use aloft_session::device::{
    Action, DeviceSession, End, InstallResult, Installed, Snapshot, Timings,
};
use aloft_session::{Millis, SessionError};
use libfuzzer_sys::fuzz_target;

fn report(id: u8) -> pb::Report {
    pb::Report {
        report_id: vec![0, 0, 0, id],
        kind: pb::ReportKind::Installed as i32,
        release_id: "fw-2".into(),
        detail: String::new(),
    }
}

fn snapshot(reports: &[u8]) -> Snapshot {
    Snapshot {
        state: pb::DeviceState {
            firmware_version: "1.1.0".into(),
            security_version: 1,
            confirmed: true,
            trust_root_version: 1,
            ..Default::default()
        },
        reports: reports.iter().map(|&id| report(id)).collect(),
    }
}

#[derive(Default)]
struct Track {
    seq: u64,
    challenge: Option<Vec<u8>>,
    sent_reports: Vec<Vec<u8>>,
    ended: bool,
    /// The driver's outstanding job, if any.
    pending: Option<Job>,
    durable: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Job {
    Trust,
    Install,
}

impl Track {
    fn drain(&mut self, s: &mut DeviceSession) {
        while let Some(action) = s.poll_action() {
            assert!(!self.ended, "an action after the session ended: {action:?}");
            match action {
                Action::Send(m) => {
                    assert_eq!(m.device_id, DEVICE);
                    assert_eq!(m.seq, self.seq + 1, "seq must go up by one");
                    self.seq = m.seq;
                    match &self.challenge {
                        None => {
                            assert_eq!(m.seq, 1);
                            assert!(
                                matches!(m.body, Some(Body::Hello(_))),
                                "the first message is the hello"
                            );
                            assert!((16..=64).contains(&m.challenge.len()));
                            self.challenge = Some(m.challenge.clone());
                        }
                        Some(c) => assert_eq!(&m.challenge, c),
                    }
                    let ids: Vec<Vec<u8>> = match &m.body {
                        Some(Body::Hello(h)) => {
                            h.reports.iter().map(|r| r.report_id.clone()).collect()
                        }
                        Some(Body::Report(r)) => vec![r.report_id.clone()],
                        _ => vec![],
                    };
                    if m.seq > 1 {
                        assert!(!matches!(m.body, Some(Body::Hello(_))), "a second hello");
                    }
                    for id in ids {
                        assert!(!self.sent_reports.contains(&id), "report sent twice");
                        self.sent_reports.push(id);
                    }
                }
                Action::UpdateTrust(chain) => {
                    assert!(!chain.is_empty());
                    assert!(s.is_open() && self.pending.is_none());
                    self.pending = Some(Job::Trust);
                }
                Action::Install(_) => {
                    assert!(s.is_open() && self.pending.is_none());
                    self.pending = Some(Job::Install);
                }
                Action::Acked(_) => {}
                Action::End(end) => {
                    if self.durable {
                        assert_eq!(end, End::Reboot, "a durable install must end in a reboot");
                    }
                    self.ended = true;
                }
            }
        }
    }

    fn result(&mut self, r: Result<(), SessionError>) {
        match r {
            Ok(()) => {}
            Err(SessionError::Ended) => assert!(self.ended),
            Err(e) => {
                assert!(!self.ended, "refused after the end: {e:?}");
                assert!(!self.durable, "a durable install refused a message: {e:?}");
                self.ended = true;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mut now = Millis(0);
    let mut s = DeviceSession::new(
        DeviceId::new(DEVICE).unwrap(),
        DeviceNonce::from_bytes(NONCE),
        snapshot(&[1]),
        Timings::default(),
        now,
    );
    let mut t = Track::default();
    while !r.is_empty() {
        match r.u8() % device_op::COUNT {
            device_op::MESSAGE => {
                let Ok(message) = pb::ServerToDevice::decode(r.frame()) else {
                    continue;
                };
                let res = s.handle_message(now, message);
                t.result(res);
            }
            device_op::ADVANCE => {
                now = Millis(now.0.saturating_add(u64::from(r.u32())));
                let res = s.handle_timeout(now);
                t.result(res);
            }
            device_op::NEXT_TIMER => {
                if let Some(at) = s.poll_timeout() {
                    now = now.max(at);
                }
                let res = s.handle_timeout(now);
                t.result(res);
            }
            // The driver answers the job it was given, or late (no job:
            // ignored); never the other job's callback.
            device_op::TRUST_UPDATED => {
                if t.pending == Some(Job::Install) {
                    continue;
                }
                s.trust_updated(now, snapshot(&[1, 3]));
                t.pending = None;
            }
            op @ (device_op::INSTALLED
            | device_op::INSTALLED_NO_REPORT
            | device_op::REFUSED
            | device_op::DEFERRED) => {
                let result = match op {
                    device_op::INSTALLED => InstallResult::Installed(Installed(snapshot(&[1, 2]))),
                    device_op::INSTALLED_NO_REPORT => {
                        InstallResult::Installed(Installed(snapshot(&[])))
                    }
                    device_op::REFUSED => InstallResult::Refused(snapshot(&[1, 4])),
                    _ => InstallResult::Deferred,
                };
                if t.pending == Some(Job::Trust) {
                    continue;
                }
                let durable = matches!(result, InstallResult::Installed(_));
                s.install_finished(now, result);
                if t.pending == Some(Job::Install) && !t.ended {
                    t.durable |= durable;
                }
                t.pending = None;
            }
            _ => {
                let end = s.connection_lost(SessionError::Timeout("connection"));
                // Also after the machine announced the reboot itself (this
                // target's finding: crates/aloft-session/tests/
                // fuzz_regressions.rs).
                if t.durable {
                    assert_eq!(end, End::Reboot);
                }
                t.ended = true;
                assert_eq!(
                    s.poll_action(),
                    None,
                    "actions after the connection was lost"
                );
            }
        }
        t.drain(&mut s);
        assert_eq!(s.is_rebooting(), t.durable);
    }
});
