//! The server's notion of "now", injectable so tests can drive soak times,
//! silent devices and maintenance windows.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use aloft_protocol::UnixTime;

/// A source of the current time in Unix seconds.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Now.
    fn now(&self) -> UnixTime;
}

/// The system clock (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        UnixTime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        )
    }
}

/// A clock that moves only when told to (for tests and simulations).
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// Starts at `t`.
    pub fn new(t: UnixTime) -> Self {
        Self(AtomicU64::new(t.0))
    }

    /// Jumps to `t`.
    pub fn set(&self, t: UnixTime) {
        self.0.store(t.0, Ordering::SeqCst);
    }

    /// Moves forward by `secs`; returns the new time.
    pub fn advance(&self, secs: u64) -> UnixTime {
        UnixTime(self.0.fetch_add(secs, Ordering::SeqCst) + secs)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.0.load(Ordering::SeqCst))
    }
}
