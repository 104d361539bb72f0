//! Live device sessions: which device is connected, its session token, and
//! how to close its stream.
//!
//! **One session per device; the newest wins.** When a device opens a second
//! session (it rebooted, or its old TCP connection is half-open), the older
//! session is closed with `ABORTED` and its session token stops authorising
//! downloads. A stolen key can therefore not keep two sessions alive side by
//! side, and a rebooted device never waits for a dead connection to time out.

use crate::sync::Recover as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aloft_protocol::DeviceId;
use tokio::sync::oneshot;

use crate::auth::hex;
use crate::keys::random;

/// Why a session was closed by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The same device opened a newer session.
    Superseded,
    /// The device was revoked.
    Revoked,
    /// The server is shutting down.
    Shutdown,
}

impl CloseReason {
    /// The gRPC status the device sees.
    pub fn status(self) -> tonic::Status {
        match self {
            Self::Superseded => tonic::Status::aborted(
                "session closed: the same device opened a newer session (newest wins)",
            ),
            Self::Revoked => tonic::Status::permission_denied("session closed: device revoked"),
            Self::Shutdown => tonic::Status::unavailable("server shutting down; reconnect later"),
        }
    }
}

struct Entry {
    session_id: u64,
    token: String,
    close: oneshot::Sender<CloseReason>,
}

#[derive(Default)]
struct Inner {
    by_device: HashMap<DeviceId, Entry>,
    by_token: HashMap<String, DeviceId>,
    next_id: u64,
}

/// The registry of live sessions.
#[derive(Clone, Default)]
pub struct SessionRegistry {
    inner: Arc<Mutex<Inner>>,
}

/// A registered session; unregisters itself on drop.
pub struct SessionHandle {
    registry: SessionRegistry,
    device: DeviceId,
    session_id: u64,
    /// The session token's raw bytes, sent in Welcome.
    pub token_bytes: [u8; 32],
    /// The session token as the device presents it: lower-case hex of
    /// `token_bytes`, in `authorization: Bearer <hex>`.
    pub token: String,
    /// Resolves when the server closes this session.
    pub closed: oneshot::Receiver<CloseReason>,
}

impl SessionRegistry {
    /// Registers a new session for `device`, closing any older one.
    pub fn open(&self, device: &DeviceId) -> SessionHandle {
        let token_bytes = random::<32>();
        let token = hex(&token_bytes);
        let (close, closed) = oneshot::channel();
        let mut inner = self.inner.lock().recover();
        inner.next_id += 1;
        let session_id = inner.next_id;
        let entry = Entry {
            session_id,
            token: token.clone(),
            close,
        };
        if let Some(old) = inner.by_device.insert(device.clone(), entry) {
            inner.by_token.remove(&old.token);
            let _ = old.close.send(CloseReason::Superseded);
            tracing::info!(device = %device, "newer session replaces the older one");
        }
        inner.by_token.insert(token.clone(), device.clone());
        SessionHandle {
            registry: self.clone(),
            device: device.clone(),
            session_id,
            token_bytes,
            token,
            closed,
        }
    }

    /// The device whose live session owns `token`.
    pub fn device_for_token(&self, token: &str) -> Option<DeviceId> {
        self.inner.lock().recover().by_token.get(token).cloned()
    }

    /// How many devices have a live session.
    pub fn connected(&self) -> usize {
        self.inner.lock().recover().by_device.len()
    }

    /// Whether `device` has a live session.
    pub fn is_connected(&self, device: &DeviceId) -> bool {
        self.inner.lock().recover().by_device.contains_key(device)
    }

    /// Closes `device`'s session, if any.
    pub fn close(&self, device: &DeviceId, reason: CloseReason) {
        let mut inner = self.inner.lock().recover();
        if let Some(old) = inner.by_device.remove(device) {
            inner.by_token.remove(&old.token);
            let _ = old.close.send(reason);
        }
    }

    /// Closes every session.
    pub fn close_all(&self, reason: CloseReason) {
        let mut inner = self.inner.lock().recover();
        inner.by_token.clear();
        for (_, entry) in inner.by_device.drain() {
            let _ = entry.close.send(reason);
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        let mut inner = self.registry.inner.lock().recover();
        if inner
            .by_device
            .get(&self.device)
            .is_some_and(|e| e.session_id == self.session_id)
        {
            inner.by_device.remove(&self.device);
            inner.by_token.remove(&self.token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_session_wins() {
        let reg = SessionRegistry::default();
        let d = DeviceId::new("d1").unwrap();
        let mut first = reg.open(&d);
        let second = reg.open(&d);
        assert_eq!(first.closed.try_recv().unwrap(), CloseReason::Superseded);
        assert_eq!(reg.device_for_token(&first.token), None);
        assert_eq!(reg.device_for_token(&second.token), Some(d.clone()));
        drop(first);
        assert!(
            reg.is_connected(&d),
            "dropping the old handle keeps the new session"
        );
        drop(second);
        assert!(!reg.is_connected(&d));
    }
}
