//! The server side, fed scripted signed device messages (no I/O), and both
//! machines talking to each other.

use std::time::Duration;

use aloft_protocol::pb::device_message::Body;
use aloft_protocol::pb::server_to_device::Kind;
use aloft_protocol::{DeviceId, DeviceNonce, Error, PublicKey, SecretKey, device_msg, pb};
use aloft_session::device::{Action, DeviceSession, End, InstallResult, Installed, Snapshot};
use aloft_session::server::{Inbound, ServerSession};
use aloft_session::{Millis, SessionError};

const CHALLENGE: [u8; 32] = [0x33; 32];

fn key() -> SecretKey {
    SecretKey::from_slice(&[41; 32]).unwrap()
}

fn message(seq: u64, body: Body) -> pb::DeviceMessage {
    pb::DeviceMessage {
        device_id: "dev-1".into(),
        challenge: CHALLENGE.to_vec(),
        seq,
        body: Some(body),
    }
}

fn hello_body(nonce_len: usize) -> Body {
    Body::Hello(pb::Hello {
        device_nonce: vec![5; nonce_len],
        state: Some(pb::DeviceState {
            trust_root_version: 1,
            ..Default::default()
        }),
        reports: vec![],
    })
}

fn report_body(id: u8) -> Body {
    Body::Report(pb::Report {
        report_id: vec![id; 4],
        kind: pb::ReportKind::Confirmed as i32,
        release_id: "fw-2".into(),
        detail: String::new(),
    })
}

fn heartbeat_body() -> Body {
    Body::Heartbeat(pb::Heartbeat {
        state: Some(pb::DeviceState::default()),
    })
}

fn seal(m: &pb::DeviceMessage) -> pb::SignedDeviceMessage {
    device_msg::seal(m, &key())
}

fn fresh() -> ServerSession<PublicKey> {
    let mut s = ServerSession::new(CHALLENGE);
    s.challenge(100).unwrap();
    s
}

/// Hello accepted, Welcome sent; the device states root `device_root`,
/// the server's newest is `latest`.
fn open(device_root: u32, latest: u32) -> ServerSession<PublicKey> {
    let mut s = fresh();
    let hello = seal(&message(1, hello_body(16)));
    s.accept_hello(&hello, key().public_key()).unwrap();
    s.welcome(&[7; 32], 100, 300, device_root, latest).unwrap();
    s
}

#[test]
fn a_session_authenticates_then_accepts_reports_and_heartbeats_in_order() {
    let mut s = fresh();
    let hello = seal(&message(1, hello_body(16)));
    assert_eq!(
        s.claimed_device(&hello),
        Ok(DeviceId::new("dev-1").unwrap())
    );
    let h = s.accept_hello(&hello, key().public_key()).unwrap();
    assert_eq!(h.state.unwrap().trust_root_version, 1);
    assert_eq!(
        s.device_nonce(),
        Some(&DeviceNonce::from_slice(&[5; 16]).unwrap())
    );
    let w = s.welcome(&[7; 32], 100, 300, 1, 1).unwrap();
    assert!(matches!(w.kind, Some(Kind::Welcome(_))));
    assert!(matches!(
        s.receive(&seal(&message(2, report_body(1)))),
        Ok(Inbound::Report(_))
    ));
    assert!(matches!(
        s.receive(&seal(&message(3, heartbeat_body()))),
        Ok(Inbound::Heartbeat(_))
    ));
    assert_eq!(s.expected_seq(), 4);
}

#[test]
fn a_hello_must_come_first_carry_seq_one_this_challenge_and_the_right_key() {
    let other = SecretKey::from_slice(&[42; 32]).unwrap();
    let mut wrong_challenge = message(1, hello_body(16));
    wrong_challenge.challenge = vec![0x34; 32];
    let cases: Vec<(pb::SignedDeviceMessage, SessionError)> = vec![
        (
            seal(&message(1, report_body(1))),
            SessionError::Unexpected {
                expected: "a hello first",
                got: "report",
            },
        ),
        (
            seal(&message(1, heartbeat_body())),
            SessionError::Unexpected {
                expected: "a hello first",
                got: "heartbeat",
            },
        ),
        (
            seal(&message(2, hello_body(16))),
            SessionError::Message(Error::SequenceMismatch {
                expected: 1,
                got: 2,
            }),
        ),
        (
            seal(&wrong_challenge),
            SessionError::Message(Error::ChallengeMismatch),
        ),
        (
            device_msg::seal(&message(1, hello_body(16)), &other),
            SessionError::Message(Error::BadSignature),
        ),
        (
            seal(&message(1, hello_body(15))),
            SessionError::Message(Error::InvalidField("device nonce (16 to 32 bytes)")),
        ),
        (
            seal(&message(1, hello_body(33))),
            SessionError::Message(Error::InvalidField("device nonce (16 to 32 bytes)")),
        ),
    ];
    for (signed, want) in cases {
        let mut s = fresh();
        assert_eq!(
            s.accept_hello(&signed, key().public_key()),
            Err(want.clone())
        );
        assert_eq!(s.device_id(), None, "{want:?}: nothing authenticated");
    }
    // 32 bytes is the longest nonce the protocol allows.
    let mut s = fresh();
    assert!(
        s.accept_hello(&seal(&message(1, hello_body(32))), key().public_key())
            .is_ok()
    );
}

#[test]
fn after_the_hello_replays_gaps_second_hellos_and_early_messages_are_refused() {
    // A report before the Welcome.
    let mut s = fresh();
    s.accept_hello(&seal(&message(1, hello_body(16))), key().public_key())
        .unwrap();
    assert_eq!(
        s.receive(&seal(&message(2, report_body(1)))),
        Err(SessionError::Unexpected {
            expected: "nothing before the welcome",
            got: "report",
        })
    );
    // Any message before the hello goes through accept_hello, never receive.
    let mut s = fresh();
    assert_eq!(
        s.receive(&seal(&message(1, report_body(1)))),
        Err(SessionError::Unexpected {
            expected: "a hello first",
            got: "report",
        })
    );
    // A second Hello.
    let mut s = open(1, 1);
    assert_eq!(
        s.receive(&seal(&message(2, hello_body(16)))),
        Err(SessionError::SecondHello)
    );
    // A duplicate (replayed) message and a gap.
    let mut s = open(1, 1);
    let r = seal(&message(2, report_body(1)));
    s.receive(&r).unwrap();
    assert_eq!(
        s.receive(&r),
        Err(SessionError::Message(Error::SequenceMismatch {
            expected: 3,
            got: 2
        }))
    );
    assert_eq!(
        s.receive(&seal(&message(4, report_body(2)))),
        Err(SessionError::Message(Error::SequenceMismatch {
            expected: 3,
            got: 4
        }))
    );
    // The same key signing for another device id.
    let mut s = open(1, 1);
    let mut m = message(2, report_body(1));
    m.device_id = "dev-2".into();
    assert_eq!(s.receive(&seal(&m)), Err(SessionError::DeviceIdChanged));
    // An empty body.
    let mut s = open(1, 1);
    let mut m = message(2, report_body(1));
    m.body = None;
    assert_eq!(s.receive(&seal(&m)), Err(SessionError::Empty));
    // A second hello claim after the first was accepted.
    let s = open(1, 1);
    assert_eq!(
        s.claimed_device(&seal(&message(1, hello_body(16)))),
        Err(SessionError::SecondHello)
    );
}

#[test]
fn the_server_cannot_send_out_of_order() {
    let mut s = ServerSession::<PublicKey>::new(CHALLENGE);
    assert_eq!(
        s.offer(pb::Offer::default()),
        Err(SessionError::NotOpen("an offer"))
    );
    s.challenge(1).unwrap();
    assert!(s.challenge(1).is_err(), "one challenge per session");
    assert_eq!(
        s.welcome(&[1], 1, 1, 1, 1),
        Err(SessionError::NotOpen("the welcome"))
    );
    assert_eq!(
        s.report_ack(vec![]),
        Err(SessionError::NotOpen("a report ack"))
    );
    let mut s = open(1, 1);
    assert!(
        s.welcome(&[1], 1, 1, 1, 1).is_err(),
        "one welcome per session"
    );
    assert!(
        s.trust_update(vec![]).is_err(),
        "no TrustRoot update for a current device"
    );
}

#[test]
fn a_lagging_device_gets_its_trust_root_successors_before_any_offer() {
    let mut s = open(1, 3);
    assert_eq!(s.trust_behind(), Some((1, 3)));
    assert_eq!(
        s.offer(pb::Offer::default()),
        Err(SessionError::TrustUpdateFirst)
    );
    let chain = vec![pb::SignedEnvelope::default(), pb::SignedEnvelope::default()];
    let m = s.trust_update(chain.clone()).unwrap().unwrap();
    assert_eq!(
        m.kind,
        Some(Kind::TrustRootUpdate(pb::TrustRootUpdate { chain }))
    );
    assert!(s.trust_update(vec![]).is_err(), "sent once");
    assert!(s.offer(pb::Offer::default()).is_ok());
    // A device whose root the server cannot help (not in its chain): the
    // empty update sends nothing and lets offers go (the device refuses and
    // reports them).
    let mut s = open(1, 3);
    assert_eq!(s.trust_update(vec![]), Ok(None));
    assert!(s.offer(pb::Offer::default()).is_ok());
}

/// Both machines, wired together by hand: the device's sends are sealed
/// and fed to the server, the server's messages to the device.
#[test]
fn both_machines_complete_a_session_with_an_install_and_a_reboot() {
    let device_key = key();
    let mut dev = DeviceSession::new(
        DeviceId::new("dev-1").unwrap(),
        DeviceNonce::from_bytes([5; 16]),
        Snapshot::default(),
        Default::default(),
        Millis(0),
    );
    let mut srv = ServerSession::<PublicKey>::new(CHALLENGE);
    let mut now = Millis(0);
    let mut to_device = vec![srv.challenge(0).unwrap()];
    let mut ended = None;
    let mut installs = 0;
    for _round in 0..20 {
        for m in to_device.drain(..) {
            dev.handle_message(now, m).unwrap();
        }
        now = now.after(Duration::from_millis(10));
        while let Some(action) = dev.poll_action() {
            match action {
                Action::Send(m) => {
                    let signed = device_msg::seal(&m, &device_key);
                    if srv.device_id().is_none() {
                        srv.accept_hello(&signed, device_key.public_key()).unwrap();
                        to_device.push(srv.welcome(&[1; 32], 0, 60, 0, 0).unwrap());
                        to_device.push(srv.offer(pb::Offer::default()).unwrap());
                    } else if let Inbound::Report(r) = srv.receive(&signed).unwrap() {
                        to_device.push(srv.report_ack(vec![r.report_id]).unwrap());
                    }
                }
                Action::Install(_) => {
                    installs += 1;
                    let report = pb::Report {
                        report_id: vec![1; 4],
                        kind: pb::ReportKind::Installed as i32,
                        release_id: "fw-2".into(),
                        detail: String::new(),
                    };
                    dev.install_finished(
                        now,
                        InstallResult::Installed(Installed(Snapshot {
                            state: Default::default(),
                            reports: vec![report],
                        })),
                    );
                }
                Action::End(e) => ended = Some(e),
                Action::Acked(_) | Action::UpdateTrust(_) => {}
            }
        }
        if ended.is_some() {
            break;
        }
    }
    assert_eq!(installs, 1);
    assert_eq!(ended, Some(End::Reboot));
    assert_eq!(srv.expected_seq(), 3, "hello and one report");
}
