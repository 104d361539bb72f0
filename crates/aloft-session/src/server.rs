//! The server side of a session.
//!
//! The driver (aloft-server) makes a fresh random challenge, creates a
//! [`ServerSession`] and sends [`ServerSession::challenge`]. For the first
//! device message it asks [`ServerSession::claimed_device`] who claims to
//! send it, looks that device's key up, and calls
//! [`ServerSession::accept_hello`]; then [`ServerSession::welcome`]. Every
//! later device message goes through [`ServerSession::receive`]; everything
//! the server sends after the Welcome is built by the session, which refuses
//! what the state does not allow (an offer before the TrustRoot successors
//! the device lacks, anything before the Welcome).

use alloc::vec::Vec;

use aloft_protocol::keys::SignatureVerifier;
use aloft_protocol::limits::MAX_REPORTS_PER_HELLO;
use aloft_protocol::pb::device_message::Body;
use aloft_protocol::pb::server_to_device::Kind;
use aloft_protocol::{DeviceId, DeviceNonce, device_msg, pb};

use crate::SessionError;

/// Length of the server's challenge.
pub const CHALLENGE_LEN: usize = 32;

/// A device message accepted after the Hello.
#[derive(Clone, Debug, PartialEq)]
pub enum Inbound {
    /// A report to record (then acknowledge with [`ServerSession::report_ack`]).
    Report(pb::Report),
    /// The device's current state.
    Heartbeat(pb::DeviceState),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    New,
    AwaitHello,
    /// Hello accepted; the Welcome is not sent yet.
    Authenticated,
    Open,
}

/// Whether the device still needs TrustRoot successors before an offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TrustSync {
    /// Its root is the newest (or it cannot be helped: not in our chain).
    Current,
    /// It states an older version; the update was not sent yet.
    Behind { device: u32, latest: u32 },
    /// The successors were sent.
    Sent,
}

/// The server side of one session. `K` verifies the device's signatures
/// (its registered public key, or a faster verifier for it).
#[derive(Debug)]
pub struct ServerSession<K> {
    challenge: [u8; CHALLENGE_LEN],
    phase: Phase,
    expected_seq: u64,
    device: Option<DeviceId>,
    key: Option<K>,
    nonce: Option<DeviceNonce>,
    trust: TrustSync,
}

fn body_name(body: &Option<Body>) -> &'static str {
    match body {
        Some(Body::Hello(_)) => "hello",
        Some(Body::Report(_)) => "report",
        Some(Body::Heartbeat(_)) => "heartbeat",
        None => "empty message",
    }
}

fn out(kind: Kind) -> pb::ServerToDevice {
    pb::ServerToDevice { kind: Some(kind) }
}

impl<K: SignatureVerifier> ServerSession<K> {
    /// A new session with `challenge` (fresh randomness from the driver).
    pub fn new(challenge: [u8; CHALLENGE_LEN]) -> Self {
        Self {
            challenge,
            phase: Phase::New,
            expected_seq: 1,
            device: None,
            key: None,
            nonce: None,
            trust: TrustSync::Current,
        }
    }

    /// The challenge message, sent first and once.
    pub fn challenge(&mut self, server_time: u64) -> Result<pb::ServerToDevice, SessionError> {
        if self.phase != Phase::New {
            return Err(SessionError::Unexpected {
                expected: "nothing before the hello",
                got: "a second challenge",
            });
        }
        self.phase = Phase::AwaitHello;
        Ok(out(Kind::Challenge(pb::Challenge {
            nonce: self.challenge.to_vec(),
            server_time,
        })))
    }

    /// The device the first message claims to come from, read *without*
    /// verifying it (to look its key up). Refuses oversized or malformed
    /// input, and any first message that is not a Hello.
    pub fn claimed_device(
        &self,
        signed: &pb::SignedDeviceMessage,
    ) -> Result<DeviceId, SessionError> {
        if self.phase != Phase::AwaitHello {
            return Err(SessionError::SecondHello);
        }
        let claimed = device_msg::peek(signed)?;
        if !matches!(claimed.body, Some(Body::Hello(_))) {
            return Err(SessionError::Unexpected {
                expected: "a hello first",
                got: body_name(&claimed.body),
            });
        }
        Ok(DeviceId::new(&claimed.device_id)?)
    }

    /// Verifies the Hello with the claimed device's `key`: signature, this
    /// session's challenge, seq 1, the same device id, a Hello body, a nonce
    /// of 16 to 32 bytes, at most [`MAX_REPORTS_PER_HELLO`] reports.
    pub fn accept_hello(
        &mut self,
        signed: &pb::SignedDeviceMessage,
        key: K,
    ) -> Result<pb::Hello, SessionError> {
        let claimed = self.claimed_device(signed)?;
        let opened = device_msg::open(signed, &key, &self.challenge, self.expected_seq)?;
        if opened.device_id != claimed.as_str() {
            return Err(SessionError::DeviceIdChanged);
        }
        let Some(Body::Hello(hello)) = opened.body else {
            return Err(SessionError::Unexpected {
                expected: "a hello first",
                got: body_name(&opened.body),
            });
        };
        let nonce = DeviceNonce::from_slice(&hello.device_nonce)?;
        if hello.reports.len() > MAX_REPORTS_PER_HELLO {
            return Err(SessionError::InvalidField("hello report list (at most 16)"));
        }
        self.expected_seq += 1;
        self.phase = Phase::Authenticated;
        self.device = Some(claimed);
        self.key = Some(key);
        self.nonce = Some(nonce);
        Ok(hello)
    }

    /// The Welcome, once, right after the Hello. `latest_root` is the
    /// version of the server's newest TrustRoot: a device that states an
    /// older one must get [`trust_update`](Self::trust_update) before any
    /// offer.
    pub fn welcome(
        &mut self,
        session_token: &[u8],
        server_time: u64,
        next_check_in_secs: u64,
        device_root: u32,
        latest_root: u32,
    ) -> Result<pb::ServerToDevice, SessionError> {
        match self.phase {
            Phase::Authenticated => {}
            Phase::Open => {
                return Err(SessionError::Unexpected {
                    expected: "one welcome per session",
                    got: "a second welcome",
                });
            }
            _ => return Err(SessionError::NotOpen("the welcome")),
        }
        self.phase = Phase::Open;
        self.trust = if device_root < latest_root {
            TrustSync::Behind {
                device: device_root,
                latest: latest_root,
            }
        } else {
            TrustSync::Current
        };
        Ok(out(Kind::Welcome(pb::Welcome {
            session_token: session_token.to_vec(),
            server_time,
            next_check_in_secs,
        })))
    }

    /// The device's root version and the newest, while it lags and the
    /// successors were not sent.
    pub fn trust_behind(&self) -> Option<(u32, u32)> {
        match self.trust {
            TrustSync::Behind { device, latest } => Some((device, latest)),
            _ => None,
        }
    }

    /// The TrustRoot successors the device lacks (oldest first), once.
    /// An empty `chain` (the device's root is not in the server's chain, so
    /// nothing can help it) lets offers go ahead; the device will refuse
    /// them and report why.
    pub fn trust_update(
        &mut self,
        chain: Vec<pb::SignedEnvelope>,
    ) -> Result<Option<pb::ServerToDevice>, SessionError> {
        self.require_open("a TrustRoot update")?;
        if self.trust_behind().is_none() {
            return Err(SessionError::Unexpected {
                expected: "a TrustRoot update only for a device that lags, once",
                got: "a TrustRoot update",
            });
        }
        self.trust = TrustSync::Sent;
        if chain.is_empty() {
            return Ok(None);
        }
        Ok(Some(out(Kind::TrustRootUpdate(pb::TrustRootUpdate {
            chain,
        }))))
    }

    /// An offer: only after the Welcome and after the TrustRoot successors
    /// the device lacks.
    pub fn offer(&mut self, offer: pb::Offer) -> Result<pb::ServerToDevice, SessionError> {
        self.require_open("an offer")?;
        if self.trust_behind().is_some() {
            return Err(SessionError::TrustUpdateFirst);
        }
        Ok(out(Kind::Offer(offer)))
    }

    /// Acknowledges durably recorded reports.
    pub fn report_ack(&self, report_ids: Vec<Vec<u8>>) -> Result<pb::ServerToDevice, SessionError> {
        self.require_open("a report ack")?;
        Ok(out(Kind::ReportAck(pb::ReportAck { report_ids })))
    }

    /// Tells the device to disconnect and check in after `after_secs`.
    pub fn check_in_later(&self, after_secs: u64) -> Result<pb::ServerToDevice, SessionError> {
        self.require_open("check-in-later")?;
        Ok(out(Kind::CheckInLater(pb::CheckInLater { after_secs })))
    }

    /// Verifies a device message after the Hello: signature with the
    /// device's key, this challenge, the next seq, the same device id; a
    /// Report or a Heartbeat body. A refused message ends the session.
    pub fn receive(&mut self, signed: &pb::SignedDeviceMessage) -> Result<Inbound, SessionError> {
        match self.phase {
            Phase::Open => {}
            Phase::Authenticated => {
                // The device may only speak after the Welcome.
                let got = device_msg::peek(signed).map_or("a message", |m| body_name(&m.body));
                return Err(SessionError::Unexpected {
                    expected: "nothing before the welcome",
                    got,
                });
            }
            _ => {
                let got = device_msg::peek(signed).map_or("a message", |m| body_name(&m.body));
                return Err(SessionError::Unexpected {
                    expected: "a hello first",
                    got,
                });
            }
        }
        let key = self
            .key
            .as_ref()
            .ok_or(SessionError::NotOpen("a device message"))?;
        let opened = device_msg::open(signed, key, &self.challenge, self.expected_seq)?;
        if self.device.as_ref().map(DeviceId::as_str) != Some(opened.device_id.as_str()) {
            return Err(SessionError::DeviceIdChanged);
        }
        self.expected_seq += 1;
        match opened.body {
            Some(Body::Report(report)) => Ok(Inbound::Report(report)),
            Some(Body::Heartbeat(hb)) => Ok(Inbound::Heartbeat(hb.state.unwrap_or_default())),
            Some(Body::Hello(_)) => Err(SessionError::SecondHello),
            None => Err(SessionError::Empty),
        }
    }

    /// The authenticated device (after the Hello).
    pub fn device_id(&self) -> Option<&DeviceId> {
        self.device.as_ref()
    }

    /// The nonce of the device's Hello (directives must echo it).
    pub fn device_nonce(&self) -> Option<&DeviceNonce> {
        self.nonce.as_ref()
    }

    /// The seq the next device message must carry.
    pub fn expected_seq(&self) -> u64 {
        self.expected_seq
    }

    fn require_open(&self, what: &'static str) -> Result<(), SessionError> {
        if self.phase == Phase::Open {
            Ok(())
        } else {
            Err(SessionError::NotOpen(what))
        }
    }
}
