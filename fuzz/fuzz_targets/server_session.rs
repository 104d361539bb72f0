//! The server side of a session (`aloft_session::server::ServerSession`)
//! driven by an arbitrary script: the challenge, first and later device
//! messages (arbitrary `SignedDeviceMessage` bytes; the seeds hold real ones
//! signed by the fixture device), the welcome, TrustRoot update, offer, ack
//! and check-in-later; see `aloft_fuzz::ops::server_op`.
//!
//! Properties: no panic; a hello is accepted once, only after the
//! challenge, and only if it opens (signature, challenge, seq 1) under the
//! claimed device's key; a later message is accepted only after the
//! welcome and only if it opens with the next seq; `expected_seq` moves by
//! exactly one per accepted message; no signed message is ever accepted
//! twice (replay); the device id never changes; the welcome is sent once;
//! an offer is refused while the device lags and its TrustRoot update was
//! not sent; the update goes out once and only to a lagging device.
#![no_main]

use aloft_fuzz::fixtures::{CHALLENGE, DEVICE, DEVICE_KEY, OTHER_DEVICE_KEY, fixture, key};
use aloft_fuzz::ops::{Reader, server_op};
use aloft_protocol::pb::device_message::Body;
use aloft_protocol::prost::Message as _;
use aloft_protocol::{PublicKey, device_msg, pb};
use aloft_session::SessionError;
use aloft_session::server::{Inbound, ServerSession};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mut s: ServerSession<PublicKey> = ServerSession::new(CHALLENGE);
    let mut challenged = false;
    let mut hello_key: Option<PublicKey> = None;
    let mut device: Option<String> = None;
    let mut welcomed = false;
    let mut update_sent = false;
    let mut accepted: Vec<Vec<u8>> = Vec::new();
    while !r.is_empty() {
        match r.u8() % server_op::COUNT {
            server_op::CHALLENGE => {
                let res = s.challenge(r.u64());
                assert_eq!(res.is_ok(), !challenged, "one challenge, first");
                challenged = true;
            }
            op @ (server_op::HELLO | server_op::RECEIVE) => {
                let Ok(signed) = pb::SignedDeviceMessage::decode(r.frame()) else {
                    continue;
                };
                let before = s.expected_seq();
                if op == server_op::HELLO {
                    let claimed = s.claimed_device(&signed);
                    let number = match &claimed {
                        Ok(id) if id.as_str() == DEVICE => DEVICE_KEY,
                        _ => OTHER_DEVICE_KEY,
                    };
                    let k = key(number).public_key();
                    match s.accept_hello(&signed, k) {
                        Ok(hello) => {
                            assert!(challenged && hello_key.is_none(), "a hello out of place");
                            assert_eq!(before, 1);
                            let opened = device_msg::open(&signed, &k, &CHALLENGE, 1)
                                .expect("an accepted hello opens");
                            assert_eq!(opened.body, Some(Body::Hello(hello)));
                            assert_eq!(
                                Some(opened.device_id.as_str()),
                                claimed.as_ref().ok().map(|c| c.as_str())
                            );
                            assert!(!accepted.contains(&signed.payload), "replayed");
                            accepted.push(signed.payload.clone());
                            assert_eq!(s.expected_seq(), 2);
                            assert_eq!(
                                s.device_id().map(|d| d.as_str()),
                                Some(opened.device_id.as_str())
                            );
                            hello_key = Some(k);
                            device = Some(opened.device_id);
                        }
                        Err(_) => assert_eq!(s.expected_seq(), before),
                    }
                } else {
                    match s.receive(&signed) {
                        Ok(inbound) => {
                            assert!(welcomed, "a message before the welcome");
                            let k = hello_key.expect("a key after the hello");
                            let opened = device_msg::open(&signed, &k, &CHALLENGE, before)
                                .expect("an accepted message opens with the expected seq");
                            match (opened.body, inbound) {
                                (Some(Body::Report(a)), Inbound::Report(b)) => assert_eq!(a, b),
                                (Some(Body::Heartbeat(a)), Inbound::Heartbeat(b)) => {
                                    assert_eq!(a.state.unwrap_or_default(), b)
                                }
                                other => panic!("accepted {other:?}"),
                            }
                            assert_eq!(Some(opened.device_id), device.clone(), "device id changed");
                            assert!(!accepted.contains(&signed.payload), "replayed");
                            accepted.push(signed.payload.clone());
                            assert_eq!(s.expected_seq(), before + 1);
                        }
                        // Refused after the seq check (the session ends).
                        Err(SessionError::SecondHello | SessionError::Empty) => {
                            assert!(s.expected_seq() <= before + 1)
                        }
                        Err(_) => assert_eq!(s.expected_seq(), before),
                    }
                }
                assert_eq!(s.device_id().map(|d| d.as_str().to_string()), device);
            }
            server_op::WELCOME => {
                let (device_root, latest) = (u32::from(r.u8()), u32::from(r.u8()));
                let res = s.welcome(b"token", 0, 60, device_root, latest);
                assert_eq!(res.is_ok(), hello_key.is_some() && !welcomed, "{res:?}");
                if res.is_ok() {
                    welcomed = true;
                    assert_eq!(s.trust_behind().is_some(), device_root < latest);
                }
            }
            server_op::TRUST_UPDATE => {
                let chain = if r.u8() == 0 {
                    vec![]
                } else {
                    vec![fixture().roots[1].clone()]
                };
                let empty = chain.is_empty();
                let behind = s.trust_behind();
                let res = s.trust_update(chain);
                assert_eq!(
                    res.is_ok(),
                    welcomed && behind.is_some() && !update_sent,
                    "{res:?}"
                );
                match res {
                    Ok(out) => {
                        update_sent = true;
                        assert_eq!(out.is_none(), empty);
                        assert_eq!(s.trust_behind(), None);
                    }
                    Err(_) => assert_eq!(s.trust_behind(), behind),
                }
            }
            server_op::OFFER => {
                let res = s.offer(pb::Offer::default());
                assert_eq!(
                    res.is_ok(),
                    welcomed && s.trust_behind().is_none(),
                    "{res:?}"
                );
                if welcomed && s.trust_behind().is_some() {
                    assert_eq!(res, Err(SessionError::TrustUpdateFirst));
                }
            }
            server_op::REPORT_ACK => {
                assert_eq!(s.report_ack(vec![vec![1]]).is_ok(), welcomed);
            }
            _ => {
                assert_eq!(s.check_in_later(5).is_ok(), welcomed);
            }
        }
    }
});
