//! Aloft's device session protocol as two sans-IO state machines, in the
//! style of rustls and quinn-proto: messages and timer events go in, actions
//! come out, and the drivers (the agent on the device, aloft-server) do the
//! I/O. Sequence numbers, the challenge binding and every ordering rule live
//! here, once.
//!
//! # The session
//!
//! ```text
//! server                                   device
//!   Challenge { nonce, server_time }  ->
//!                                     <-   Hello (seq 1): nonce, state, reports
//!   Welcome { token, next_check_in }  ->
//!   TrustRootUpdate { chain }         ->   (only if the device's root is older)
//!   Offer | ReportAck | CheckInLater  ->
//!                                     <-   Report | Heartbeat (seq 2, 3, ...)
//! ```
//!
//! Every device message is a `SignedDeviceMessage` over `DeviceMessage {
//! device_id, challenge, seq, body }`: the challenge binds it to this session,
//! `seq` (exactly +1, from 1) to its place in it. The server sends a
//! `TrustRootUpdate` before any `Offer` when the device states an older
//! TrustRoot version, because the offer's directive may be signed by a
//! server key only the newer root lists.
//!
//! - [`device::DeviceSession`]: the device side. After an install is durable
//!   the session's only possible end is a reboot, whatever the connection
//!   does ([`device::End::Reboot`]).
//! - [`server::ServerSession`]: the server side. It verifies each device
//!   message (signature, challenge, seq, device id) and refuses what the
//!   state does not allow.
//!
//! Time is the driver's: [`Millis`] since any origin it picks (a monotonic
//! clock; tests pass whatever they like).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod device;
mod error;
pub mod server;

pub use error::SessionError;

/// Monotonic time in milliseconds since an origin the driver chooses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + d`, saturating.
    pub const fn after(self, d: core::time::Duration) -> Self {
        let ms = d.as_millis();
        let ms = if ms > u64::MAX as u128 {
            u64::MAX
        } else {
            ms as u64
        };
        Self(self.0.saturating_add(ms))
    }
}
