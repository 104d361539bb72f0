//! Aloft's offline release tooling, behind `cargo xtask keys` and
//! `cargo xtask release` and the `aloft-release` binary:
//!
//! - [`keys`]: root and release P-256 key files (0600), a local CA and a
//!   server TLS certificate for localhost, and the root-signed TrustRoot that
//!   lists the release key and the server's directive key;
//! - [`release`]: builds the sample firmware with a version (and fault)
//!   baked in, signs its manifest with the release key file, encrypts the
//!   payload and writes a `ReleaseBundle` (or uploads it);
//! - [`factory`]: creates a device's flash file with a signed release in
//!   slot A as the confirmed active image.
//!
//! Every output is checked the way a device will check it before it is
//! written: the TrustRoot as a first TrustRoot, a bundle's manifest against
//! the TrustRoot and its payload decrypted back to the image.

mod error;
pub mod factory;
pub mod keyfile;
pub mod keys;
pub mod release;

pub use error::ReleaseError;

/// The current time as the protocol sees it.
pub fn now() -> aloft_protocol::UnixTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    aloft_protocol::UnixTime(secs)
}
