//! The device side of a session.
//!
//! The driver connects, creates a [`DeviceSession`] with the device's state
//! and pending reports, then loops: feed every server message to
//! [`DeviceSession::handle_message`], call [`DeviceSession::handle_timeout`]
//! when [`DeviceSession::poll_timeout`] passes, and carry out each
//! [`Action`] from [`DeviceSession::poll_action`]:
//!
//! - [`Action::Send`]: seal the message with the device key and send it;
//! - [`Action::UpdateTrust`]: verify the chain and store the newest root,
//!   then call [`DeviceSession::trust_updated`];
//! - [`Action::Install`]: verify the offer, download, install, then call
//!   [`DeviceSession::install_finished`];
//! - [`Action::Acked`]: drop these reports (the server stored them);
//! - [`Action::End`]: the session is over (check in later, reboot, or
//!   failed).
//!
//! A lost connection goes to [`DeviceSession::connection_lost`], which says
//! how the session ends. Once an install is durable ([`Installed`] passed to
//! `install_finished`), every path ends in [`End::Reboot`]: the reboot into
//! the trial slot follows from the install, not from the connection.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::time::Duration;

use aloft_protocol::pb::device_message::Body;
use aloft_protocol::pb::server_to_device::Kind;
use aloft_protocol::{DeviceId, DeviceNonce, pb};

use crate::{Millis, SessionError};

/// Longest challenge accepted from a server (it sends 32 bytes).
pub const MAX_CHALLENGE_LEN: usize = 64;
/// Shortest challenge accepted: a shorter one could repeat across sessions.
pub const MIN_CHALLENGE_LEN: usize = 16;

/// Timings of the device side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timings {
    /// Interval between heartbeats once the session is open.
    pub heartbeat: Duration,
    /// Limit for each expected server message (challenge, welcome).
    pub message_timeout: Duration,
    /// Session length when the Welcome suggests none.
    pub default_check_in: Duration,
    /// Upper bound on any session length or check-in delay the server asks for.
    pub max_check_in: Duration,
    /// How long to wait for the server to acknowledge the reports of a
    /// finished install before rebooting (they are re-sent after it anyway).
    pub report_ack_wait: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(60),
            message_timeout: Duration::from_secs(30),
            default_check_in: Duration::from_secs(300),
            max_check_in: Duration::from_secs(24 * 3600),
            report_ack_wait: Duration::from_secs(5),
        }
    }
}

/// What the device says about itself: its state and the reports not yet
/// acknowledged, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// State for hellos and heartbeats.
    pub state: pb::DeviceState,
    /// Pending reports (durable ones and in-memory refusals).
    pub reports: Vec<pb::Report>,
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Seal this message with the device key and send it.
    Send(pb::DeviceMessage),
    /// Verify these TrustRoot successors (oldest first) and store the
    /// newest; then [`DeviceSession::trust_updated`].
    UpdateTrust(Vec<pb::SignedEnvelope>),
    /// Verify this offer, download and install it (with
    /// [`DeviceSession::token`] for the download); then
    /// [`DeviceSession::install_finished`].
    Install(alloc::boxed::Box<pb::Offer>),
    /// The server durably recorded these reports: drop them.
    Acked(Vec<Vec<u8>>),
    /// The session is over.
    End(End),
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Disconnect and check in again after this delay (zero: the session's
    /// check-in period ran out).
    CheckInAfter(Duration),
    /// An install is durable: reboot into the trial slot now.
    Reboot,
    /// The session failed; retry with backoff.
    Failed(SessionError),
}

/// How an [`Action::Install`] turned out.
#[derive(Clone, Debug, PartialEq)]
pub enum InstallResult {
    /// The image is verified and its slot marked for trial: durable.
    Installed(Installed),
    /// Refused or failed; the snapshot carries the report that says why.
    Refused(Snapshot),
    /// Set aside (a trial is pending confirmation); nothing changed.
    Deferred,
}

/// A durable install and the device's state after it (with its
/// "installed" report).
#[derive(Clone, Debug, PartialEq)]
pub struct Installed(pub Snapshot);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    AwaitChallenge,
    AwaitWelcome,
    Open,
    /// An install or trust update is being carried out by the driver.
    Working,
    /// An install is durable: waiting (bounded) for the report acks.
    Rebooting,
    Ended,
}

/// The device side of one session. See the module docs.
#[derive(Debug)]
pub struct DeviceSession {
    device_id: DeviceId,
    nonce: DeviceNonce,
    timings: Timings,
    snapshot: Snapshot,
    phase: Phase,
    challenge: Vec<u8>,
    seq: u64,
    token: Vec<u8>,
    /// Report ids carried in this session (each is sent once per session).
    sent: Vec<Vec<u8>>,
    /// While rebooting: reports whose ack is still awaited.
    awaiting_ack: Vec<Vec<u8>>,
    /// Deadline of the awaited message, the session, or the ack wait.
    deadline: Option<Millis>,
    next_heartbeat: Option<Millis>,
    actions: VecDeque<Action>,
    /// An install became durable: every ending from now on is a reboot,
    /// even after the machine announced it.
    reboot_owed: bool,
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Challenge(_) => "challenge",
        Kind::Welcome(_) => "welcome",
        Kind::Offer(_) => "offer",
        Kind::ReportAck(_) => "report ack",
        Kind::CheckInLater(_) => "check-in-later",
        Kind::TrustRootUpdate(_) => "TrustRoot update",
    }
}

impl DeviceSession {
    /// A session that has just connected at `now` and waits for the
    /// challenge. `nonce` must be fresh randomness (the driver's RNG).
    pub fn new(
        device_id: DeviceId,
        nonce: DeviceNonce,
        snapshot: Snapshot,
        timings: Timings,
        now: Millis,
    ) -> Self {
        let deadline = Some(now.after(timings.message_timeout));
        Self {
            device_id,
            nonce,
            timings,
            snapshot,
            phase: Phase::AwaitChallenge,
            challenge: Vec::new(),
            seq: 0,
            token: Vec::new(),
            sent: Vec::new(),
            awaiting_ack: Vec::new(),
            deadline,
            next_heartbeat: None,
            actions: VecDeque::new(),
            reboot_owed: false,
        }
    }

    /// This session's device nonce (a directive must echo it).
    pub fn nonce(&self) -> &DeviceNonce {
        &self.nonce
    }

    /// The session token from the Welcome (empty before it).
    pub fn token(&self) -> &[u8] {
        &self.token
    }

    /// Whether the Welcome arrived.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Working | Phase::Rebooting)
    }

    /// Whether an install became durable in this session (it can only end
    /// in a reboot now).
    pub fn is_rebooting(&self) -> bool {
        self.reboot_owed
    }

    /// The next action, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Millis> {
        match (self.deadline, self.next_heartbeat) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Replaces the state and reports the session reports from (for
    /// heartbeats and later report sends).
    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        self.snapshot = snapshot;
    }

    /// A message from the server arrived at `now`.
    pub fn handle_message(
        &mut self,
        now: Millis,
        message: pb::ServerToDevice,
    ) -> Result<(), SessionError> {
        if self.phase == Phase::Ended {
            return Err(SessionError::Ended);
        }
        let Some(kind) = message.kind else {
            return self.fail(SessionError::Empty);
        };
        let got = kind_name(&kind);
        match (self.phase, kind) {
            (Phase::AwaitChallenge, Kind::Challenge(c)) => {
                if !(MIN_CHALLENGE_LEN..=MAX_CHALLENGE_LEN).contains(&c.nonce.len()) {
                    return self.fail(SessionError::InvalidField("challenge (16 to 64 bytes)"));
                }
                self.challenge = c.nonce;
                let reports = self.snapshot.reports.clone();
                self.sent
                    .extend(reports.iter().map(|r| r.report_id.clone()));
                let hello = pb::Hello {
                    device_nonce: self.nonce.as_bytes().to_vec(),
                    state: Some(self.snapshot.state.clone()),
                    reports,
                };
                self.send(Body::Hello(hello));
                self.phase = Phase::AwaitWelcome;
                self.deadline = Some(now.after(self.timings.message_timeout));
                Ok(())
            }
            (Phase::AwaitChallenge, _) => self.fail(SessionError::Unexpected {
                expected: "a challenge",
                got,
            }),
            (Phase::AwaitWelcome, Kind::Welcome(w)) => {
                self.token = w.session_token;
                let check_in = match w.next_check_in_secs {
                    0 => self.timings.default_check_in,
                    s => Duration::from_secs(s),
                }
                .min(self.timings.max_check_in);
                self.phase = Phase::Open;
                self.deadline = Some(now.after(check_in));
                self.next_heartbeat = Some(now.after(self.timings.heartbeat));
                Ok(())
            }
            (Phase::AwaitWelcome, _) => self.fail(SessionError::Unexpected {
                expected: "the welcome",
                got,
            }),
            (_, Kind::Challenge(_) | Kind::Welcome(_)) => self.fail(SessionError::Unexpected {
                expected: "offers, acks or check-in-later once the session is open",
                got,
            }),
            (_, Kind::ReportAck(ack)) => {
                self.awaiting_ack.retain(|id| !ack.report_ids.contains(id));
                self.actions.push_back(Action::Acked(ack.report_ids));
                if self.phase == Phase::Rebooting && self.awaiting_ack.is_empty() {
                    self.end(End::Reboot);
                }
                Ok(())
            }
            (Phase::Rebooting, Kind::CheckInLater(_)) => {
                self.end(End::Reboot);
                Ok(())
            }
            (_, Kind::CheckInLater(later)) => {
                let after = Duration::from_secs(later.after_secs).min(self.timings.max_check_in);
                self.end(End::CheckInAfter(after));
                Ok(())
            }
            (Phase::Open, Kind::Offer(offer)) => {
                self.phase = Phase::Working;
                self.actions
                    .push_back(Action::Install(alloc::boxed::Box::new(offer)));
                Ok(())
            }
            (Phase::Open, Kind::TrustRootUpdate(update)) => {
                if update.chain.is_empty() {
                    return self.fail(SessionError::InvalidField("TrustRoot update (empty chain)"));
                }
                self.phase = Phase::Working;
                self.actions.push_back(Action::UpdateTrust(update.chain));
                Ok(())
            }
            // One install or trust update at a time, and nothing new once an
            // install is durable: set aside, the server offers again later.
            (_, Kind::Offer(_) | Kind::TrustRootUpdate(_)) => Ok(()),
        }
    }

    /// Timers due at `now`: the awaited message's timeout, heartbeats, the
    /// end of the check-in period, the bounded wait for acks before a reboot.
    pub fn handle_timeout(&mut self, now: Millis) -> Result<(), SessionError> {
        if self.phase == Phase::Ended {
            return Ok(());
        }
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            return match self.phase {
                Phase::AwaitChallenge => self.fail(SessionError::Timeout("challenge")),
                Phase::AwaitWelcome => self.fail(SessionError::Timeout("welcome")),
                Phase::Rebooting => {
                    self.end(End::Reboot);
                    Ok(())
                }
                _ => {
                    self.end(End::CheckInAfter(Duration::ZERO));
                    Ok(())
                }
            };
        }
        if let Some(at) = self.next_heartbeat
            && now >= at
        {
            self.next_heartbeat = Some(now.after(self.timings.heartbeat));
            if self.phase != Phase::Rebooting {
                let state = self.snapshot.state.clone();
                self.send(Body::Heartbeat(pb::Heartbeat { state: Some(state) }));
            }
        }
        Ok(())
    }

    /// The driver finished an [`Action::UpdateTrust`] (accepted or refused)
    /// at `now`; `snapshot` is the device's state after it, with a refusal
    /// report if it refused. The new state goes out in a heartbeat at once,
    /// so the server learns the device's root version.
    pub fn trust_updated(&mut self, now: Millis, snapshot: Snapshot) {
        if self.phase != Phase::Working {
            return;
        }
        self.snapshot = snapshot;
        self.phase = Phase::Open;
        self.send_new_reports();
        let state = self.snapshot.state.clone();
        self.send(Body::Heartbeat(pb::Heartbeat { state: Some(state) }));
        self.next_heartbeat = Some(now.after(self.timings.heartbeat));
    }

    /// The driver finished an [`Action::Install`] at `now`.
    ///
    /// [`InstallResult::Installed`]: its reports go out and the session
    /// waits at most `report_ack_wait` for their acks, then ends in
    /// [`End::Reboot`] (as does every other path from here).
    pub fn install_finished(&mut self, now: Millis, result: InstallResult) {
        if self.phase != Phase::Working {
            return;
        }
        match result {
            InstallResult::Installed(Installed(snapshot)) => {
                self.snapshot = snapshot;
                self.phase = Phase::Rebooting;
                self.reboot_owed = true;
                self.send_new_reports();
                self.awaiting_ack = self
                    .snapshot
                    .reports
                    .iter()
                    .map(|r| r.report_id.clone())
                    .collect();
                if self.awaiting_ack.is_empty() {
                    self.end(End::Reboot);
                } else {
                    self.deadline = Some(now.after(self.timings.report_ack_wait));
                }
            }
            InstallResult::Refused(snapshot) => {
                self.snapshot = snapshot;
                self.phase = Phase::Open;
                self.send_new_reports();
            }
            InstallResult::Deferred => self.phase = Phase::Open,
        }
    }

    /// The connection failed or closed with `cause`: how the session ends
    /// (a durable install still reboots). The session is over afterwards.
    pub fn connection_lost(&mut self, cause: SessionError) -> End {
        let end = if self.reboot_owed {
            End::Reboot
        } else {
            End::Failed(cause)
        };
        self.phase = Phase::Ended;
        self.actions.clear();
        end
    }

    /// Refuses a message: ends the session with `err`, unless an install is
    /// durable (then it reboots and the error is only logged by the driver).
    fn fail(&mut self, err: SessionError) -> Result<(), SessionError> {
        if self.phase == Phase::Rebooting {
            self.end(End::Reboot);
            return Ok(());
        }
        self.phase = Phase::Ended;
        self.deadline = None;
        self.next_heartbeat = None;
        Err(err)
    }

    fn end(&mut self, end: End) {
        self.phase = Phase::Ended;
        self.deadline = None;
        self.next_heartbeat = None;
        self.actions.push_back(Action::End(end));
    }

    /// Queues the reports this session has not carried yet.
    fn send_new_reports(&mut self) {
        let fresh: Vec<pb::Report> = self
            .snapshot
            .reports
            .iter()
            .filter(|r| !self.sent.contains(&r.report_id))
            .cloned()
            .collect();
        for report in fresh {
            self.sent.push(report.report_id.clone());
            self.send(Body::Report(report));
        }
    }

    /// Queues `body` as the next message: this session's challenge, seq + 1.
    fn send(&mut self, body: Body) {
        self.seq += 1;
        self.actions.push_back(Action::Send(pb::DeviceMessage {
            device_id: self.device_id.as_str().into(),
            challenge: self.challenge.clone(),
            seq: self.seq,
            body: Some(body),
        }));
    }
}
