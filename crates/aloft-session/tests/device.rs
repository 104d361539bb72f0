//! The device side, driven by scripted server messages (no I/O).

use std::time::Duration;

use aloft_protocol::pb::device_message::Body;
use aloft_protocol::pb::server_to_device::Kind;
use aloft_protocol::{DeviceId, DeviceNonce, pb};
use aloft_session::device::{
    Action, DeviceSession, End, InstallResult, Installed, Snapshot, Timings,
};
use aloft_session::{Millis, SessionError};

const CHALLENGE: [u8; 32] = [0x5a; 32];

fn timings() -> Timings {
    Timings {
        heartbeat: Duration::from_secs(60),
        message_timeout: Duration::from_secs(30),
        default_check_in: Duration::from_secs(300),
        max_check_in: Duration::from_secs(3600),
        report_ack_wait: Duration::from_secs(5),
    }
}

fn report(id: u8) -> pb::Report {
    pb::Report {
        report_id: vec![id; 4],
        kind: pb::ReportKind::Installed as i32,
        release_id: "fw-2".into(),
        detail: String::new(),
    }
}

fn snapshot(version: &str, reports: Vec<pb::Report>) -> Snapshot {
    Snapshot {
        state: pb::DeviceState {
            firmware_version: version.into(),
            trust_root_version: 1,
            ..Default::default()
        },
        reports,
    }
}

fn session(reports: Vec<pb::Report>) -> DeviceSession {
    DeviceSession::new(
        DeviceId::new("dev-1").unwrap(),
        DeviceNonce::from_bytes([9; 16]),
        snapshot("1.0.0", reports),
        timings(),
        Millis(0),
    )
}

fn msg(kind: Kind) -> pb::ServerToDevice {
    pb::ServerToDevice { kind: Some(kind) }
}

fn challenge() -> pb::ServerToDevice {
    msg(Kind::Challenge(pb::Challenge {
        nonce: CHALLENGE.to_vec(),
        server_time: 1,
    }))
}

fn welcome(next_check_in_secs: u64) -> pb::ServerToDevice {
    msg(Kind::Welcome(pb::Welcome {
        session_token: vec![7; 32],
        server_time: 1,
        next_check_in_secs,
    }))
}

fn ack(ids: &[u8]) -> pb::ServerToDevice {
    msg(Kind::ReportAck(pb::ReportAck {
        report_ids: ids.iter().map(|&i| vec![i; 4]).collect(),
    }))
}

fn offer() -> pb::ServerToDevice {
    msg(Kind::Offer(pb::Offer::default()))
}

fn actions(s: &mut DeviceSession) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn sent(a: &Action) -> &pb::DeviceMessage {
    match a {
        Action::Send(m) => m,
        other => panic!("expected a send, got {other:?}"),
    }
}

/// A session past its Welcome (the hello already polled).
fn open(reports: Vec<pb::Report>) -> DeviceSession {
    let mut s = session(reports);
    s.handle_message(Millis(10), challenge()).unwrap();
    s.handle_message(Millis(20), welcome(0)).unwrap();
    actions(&mut s);
    s
}

#[test]
fn hello_answers_the_challenge_with_seq_one_and_every_message_counts_up() {
    let mut s = session(vec![report(1)]);
    assert_eq!(s.poll_action(), None, "the device waits for the challenge");
    s.handle_message(Millis(10), challenge()).unwrap();
    let a = actions(&mut s);
    assert_eq!(a.len(), 1);
    let hello = sent(&a[0]);
    assert_eq!((hello.seq, hello.challenge.as_slice()), (1, &CHALLENGE[..]));
    assert_eq!(hello.device_id, "dev-1");
    let Some(Body::Hello(h)) = &hello.body else {
        panic!("first message is a hello")
    };
    assert_eq!(h.device_nonce, vec![9; 16]);
    assert_eq!(h.reports, vec![report(1)]);
    assert_eq!(h.state.as_ref().unwrap().trust_root_version, 1);

    s.handle_message(Millis(20), welcome(0)).unwrap();
    assert_eq!(s.token(), &[7; 32]);
    // Heartbeats every minute, each with the next seq.
    assert_eq!(s.poll_timeout(), Some(Millis(60_020)));
    for (i, at) in [60_020, 120_020].into_iter().enumerate() {
        s.handle_timeout(Millis(at)).unwrap();
        let a = actions(&mut s);
        let hb = sent(&a[0]);
        assert_eq!(hb.seq, 2 + i as u64);
        assert_eq!(hb.challenge, CHALLENGE);
        assert!(matches!(hb.body, Some(Body::Heartbeat(_))));
    }
}

#[test]
fn out_of_order_and_duplicate_server_messages_are_refused_by_name() {
    let cases: Vec<(Vec<pb::ServerToDevice>, pb::ServerToDevice, SessionError)> = vec![
        (
            vec![],
            welcome(0),
            SessionError::Unexpected {
                expected: "a challenge",
                got: "welcome",
            },
        ),
        (
            vec![],
            ack(&[1]),
            SessionError::Unexpected {
                expected: "a challenge",
                got: "report ack",
            },
        ),
        (
            vec![challenge()],
            ack(&[1]),
            SessionError::Unexpected {
                expected: "the welcome",
                got: "report ack",
            },
        ),
        (
            vec![challenge()],
            offer(),
            SessionError::Unexpected {
                expected: "the welcome",
                got: "offer",
            },
        ),
        (
            vec![challenge()],
            challenge(),
            SessionError::Unexpected {
                expected: "the welcome",
                got: "challenge",
            },
        ),
        (
            vec![challenge(), welcome(0)],
            welcome(0),
            SessionError::Unexpected {
                expected: "offers, acks or check-in-later once the session is open",
                got: "welcome",
            },
        ),
        (
            vec![challenge(), welcome(0)],
            challenge(),
            SessionError::Unexpected {
                expected: "offers, acks or check-in-later once the session is open",
                got: "challenge",
            },
        ),
        (
            vec![challenge(), welcome(0)],
            pb::ServerToDevice { kind: None },
            SessionError::Empty,
        ),
        (
            vec![],
            msg(Kind::Challenge(pb::Challenge {
                nonce: vec![1; 8],
                server_time: 0,
            })),
            SessionError::InvalidField("challenge (16 to 64 bytes)"),
        ),
    ];
    for (before, bad, want) in cases {
        let mut s = session(vec![]);
        for m in before {
            s.handle_message(Millis(1), m).unwrap();
        }
        assert_eq!(
            s.handle_message(Millis(2), bad.clone()),
            Err(want.clone()),
            "{bad:?}"
        );
        // The session is over: nothing more is accepted.
        assert_eq!(
            s.handle_message(Millis(3), challenge()),
            Err(SessionError::Ended)
        );
    }
}

#[test]
fn a_server_that_does_not_answer_times_out() {
    let mut s = session(vec![]);
    assert_eq!(s.poll_timeout(), Some(Millis(30_000)));
    s.handle_timeout(Millis(29_999)).unwrap();
    assert_eq!(
        s.handle_timeout(Millis(30_000)),
        Err(SessionError::Timeout("challenge"))
    );
    let mut s = session(vec![]);
    s.handle_message(Millis(1_000), challenge()).unwrap();
    assert_eq!(s.poll_timeout(), Some(Millis(31_000)));
    assert_eq!(
        s.handle_timeout(Millis(31_000)),
        Err(SessionError::Timeout("welcome"))
    );
}

#[test]
fn the_check_in_period_and_check_in_later_end_the_session() {
    let mut s = session(vec![]);
    s.handle_message(Millis(0), challenge()).unwrap();
    s.handle_message(Millis(0), welcome(90)).unwrap();
    actions(&mut s);
    s.handle_timeout(Millis(60_000)).unwrap(); // a heartbeat
    s.handle_timeout(Millis(90_000)).unwrap();
    let a = actions(&mut s);
    assert_eq!(
        a.last(),
        Some(&Action::End(End::CheckInAfter(Duration::ZERO)))
    );

    // A suggested delay is capped by max_check_in.
    let mut s = open(vec![]);
    s.handle_message(
        Millis(30),
        msg(Kind::CheckInLater(pb::CheckInLater {
            after_secs: 7 * 86_400,
        })),
    )
    .unwrap();
    assert_eq!(
        actions(&mut s),
        vec![Action::End(End::CheckInAfter(Duration::from_secs(3600)))]
    );
}

#[test]
fn acks_drop_reports_and_each_report_is_sent_once_per_session() {
    let mut s = open(vec![report(1)]);
    s.handle_message(Millis(30), ack(&[1])).unwrap();
    assert_eq!(actions(&mut s), vec![Action::Acked(vec![vec![1; 4]])]);
    // An offer refused: the refusal report goes out once, the hello's not again.
    s.handle_message(Millis(40), offer()).unwrap();
    assert!(matches!(actions(&mut s)[..], [Action::Install(_)]));
    s.install_finished(
        Millis(50),
        InstallResult::Refused(snapshot("1.0.0", vec![report(1), report(2)])),
    );
    let a = actions(&mut s);
    assert_eq!(a.len(), 1);
    let m = sent(&a[0]);
    assert_eq!(m.body, Some(Body::Report(report(2))));
    assert_eq!(m.seq, 2);
}

#[test]
fn a_durable_install_reboots_once_its_reports_are_acknowledged() {
    let mut s = open(vec![]);
    s.handle_message(Millis(30), offer()).unwrap();
    actions(&mut s);
    // While the install runs, another offer or root update is set aside.
    s.handle_message(Millis(31), offer()).unwrap();
    assert_eq!(actions(&mut s), vec![]);
    s.install_finished(
        Millis(40),
        InstallResult::Installed(Installed(snapshot("1.0.0", vec![report(3)]))),
    );
    assert!(s.is_rebooting());
    let a = actions(&mut s);
    assert_eq!(sent(&a[0]).body, Some(Body::Report(report(3))));
    assert_eq!(
        s.poll_timeout(),
        Some(Millis(5_040)),
        "the ack wait is bounded"
    );
    s.handle_message(Millis(50), ack(&[3])).unwrap();
    assert_eq!(
        actions(&mut s),
        vec![Action::Acked(vec![vec![3; 4]]), Action::End(End::Reboot)]
    );
}

/// Threat: a device that finished an install and then lost the session
/// must still reboot into the trial slot. Every way the session can end
/// after the install is durable ends in a reboot.
#[test]
fn after_a_durable_install_every_ending_is_a_reboot() {
    type Cut = fn(&mut DeviceSession) -> Option<End>;
    let cuts: Vec<(&str, Cut)> = vec![
        ("connection lost", |s| {
            Some(s.connection_lost(SessionError::Timeout("the stream")))
        }),
        ("no ack in time", |s| {
            s.handle_timeout(Millis(5_040)).unwrap();
            None
        }),
        ("check-in-later", |s| {
            s.handle_message(
                Millis(41),
                msg(Kind::CheckInLater(pb::CheckInLater { after_secs: 600 })),
            )
            .unwrap();
            None
        }),
        ("a garbage message", |s| {
            s.handle_message(Millis(41), pb::ServerToDevice { kind: None })
                .unwrap();
            None
        }),
        ("a second challenge", |s| {
            s.handle_message(Millis(41), challenge()).unwrap();
            None
        }),
        ("an ack of another report", |s| {
            s.handle_message(Millis(41), ack(&[9])).unwrap();
            Some(s.connection_lost(SessionError::Ended))
        }),
    ];
    for (what, cut) in cuts {
        let mut s = open(vec![]);
        s.handle_message(Millis(30), offer()).unwrap();
        actions(&mut s);
        s.install_finished(
            Millis(40),
            InstallResult::Installed(Installed(snapshot("1.0.0", vec![report(3)]))),
        );
        actions(&mut s);
        let end = cut(&mut s).or_else(|| {
            actions(&mut s).into_iter().find_map(|a| match a {
                Action::End(e) => Some(e),
                _ => None,
            })
        });
        assert_eq!(end, Some(End::Reboot), "{what}");
    }
    // Before the install is durable, a lost connection is an ordinary failure.
    let mut s = open(vec![]);
    s.handle_message(Millis(30), offer()).unwrap();
    assert_eq!(
        s.connection_lost(SessionError::Ended),
        End::Failed(SessionError::Ended)
    );
}

#[test]
fn a_trust_root_update_is_handed_over_and_the_new_state_reported_at_once() {
    let mut s = open(vec![]);
    let chain = vec![pb::SignedEnvelope {
        payload: vec![1, 2, 3],
        signatures: vec![],
    }];
    s.handle_message(
        Millis(30),
        msg(Kind::TrustRootUpdate(pb::TrustRootUpdate {
            chain: chain.clone(),
        })),
    )
    .unwrap();
    assert_eq!(actions(&mut s), vec![Action::UpdateTrust(chain)]);
    let mut after = snapshot("1.0.0", vec![]);
    after.state.trust_root_version = 3;
    s.trust_updated(Millis(40), after);
    let a = actions(&mut s);
    let Some(Body::Heartbeat(hb)) = &sent(&a[0]).body else {
        panic!("a heartbeat carries the new state")
    };
    assert_eq!(hb.state.as_ref().unwrap().trust_root_version, 3);
    // An empty chain is refused.
    let mut s = open(vec![]);
    assert_eq!(
        s.handle_message(
            Millis(30),
            msg(Kind::TrustRootUpdate(pb::TrustRootUpdate { chain: vec![] }))
        ),
        Err(SessionError::InvalidField("TrustRoot update (empty chain)"))
    );
}
