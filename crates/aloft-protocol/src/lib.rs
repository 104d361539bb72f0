//! Aloft's shared protocol: the wire schema, the signed objects and the rules
//! that verify them, and the payload cryptography.
//!
//! `#![no_std]` + `alloc` by default, with no I/O: the device agent links it on
//! bare metal. Features:
//! - `sign`: signing, content-key wrapping and payload encryption (still no_std);
//! - `std`: key generation from the operating system's RNG;
//! - `grpc`: the tonic client and server stubs (std);
//! - `ring-verify`: [`ring_verify::RingPublicKey`], a ring-backed verifier
//!   that accepts exactly the signatures `p256` accepts (std; for servers).
//!
//! The verification entry points are [`trust::VerifiedTrustRoot`] (TrustRoot
//! and its rotation), [`trust::VerifiedTrustRoot::verify_manifest`] and
//! [`trust::verify_update`] (directive + manifest against a device's state).
//! Payload chunks go through [`payload::ChunkDecryptor`]; content keys through
//! [`wrap`].
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod audit;
#[cfg(feature = "grpc")]
pub mod codec;
pub mod device_msg;
pub mod envelope;
mod error;
pub mod keys;
pub mod limits;
pub mod payload;
pub mod registration;
#[cfg(feature = "ring-verify")]
pub mod ring_verify;
pub mod signed_chunks;
pub mod trust;
pub mod types;
pub mod wire;
pub mod wrap;

pub use error::Error;
pub use keys::{PublicKey, SecretKey, Signature};
pub use types::{
    ContentKey, DeviceId, DeviceNonce, Digest, KeyId, NoncePrefix, ReleaseId, SecurityVersion,
    UnixTime, Version,
};

/// Generated protobuf messages (and, with `grpc`, tonic stubs) of `aloft.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/aloft.v1.rs"));
}

/// Re-exported so dependants encode and decode with the same prost.
pub use prost;
