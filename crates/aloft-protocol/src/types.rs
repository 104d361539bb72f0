//! Validating newtypes for ids, digests, versions and times.
//!
//! Each constructor checks its input once, so code holding one of these types
//! never re-validates and never confuses, say, a device id with a release id.

use alloc::string::String;
use core::fmt;

use sha2::{Digest as _, Sha256};

use crate::Error;

/// Longest device or release id accepted.
pub const MAX_ID_LEN: usize = 64;

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
        && !s.starts_with('.')
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `s`: 1 to 64 of `[A-Za-z0-9._:-]`, not starting with `.`.
            pub fn new(s: &str) -> Result<Self, Error> {
                if valid_id(s) {
                    Ok(Self(String::from(s)))
                } else {
                    Err(Error::InvalidField($what))
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl core::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::new(s)
            }
        }
    };
}

string_id!(
    /// A device's factory-assigned unique id.
    DeviceId,
    "device id"
);
string_id!(
    /// A release's unique name, e.g. `sensor-1.1.0`.
    ReleaseId,
    "release id"
);

macro_rules! fixed_bytes {
    ($(#[$doc:meta])* $name:ident, $len:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// Wraps exactly `LEN` bytes.
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// Copies from a slice, which must be exactly `LEN` bytes.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
                bytes.try_into().map(Self).map_err(|_| Error::InvalidField($what))
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in &self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }
    };
}

fixed_bytes!(
    /// A SHA-256 digest.
    Digest,
    32,
    "digest"
);
fixed_bytes!(
    /// Identifies a public key: SHA-256 of its SEC1 compressed encoding.
    KeyId,
    32,
    "key id"
);
fixed_bytes!(
    /// Per-release prefix of every payload chunk's AES-GCM nonce.
    NoncePrefix,
    7,
    "nonce prefix"
);

/// Fresh device randomness sent in a hello, 16 to 32 bytes; a directive must
/// echo it exactly.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceNonce {
    len: u8,
    bytes: [u8; DeviceNonce::MAX_LEN],
}

impl DeviceNonce {
    /// Shortest accepted nonce (128 bits).
    pub const MIN_LEN: usize = 16;
    /// Longest accepted nonce.
    pub const MAX_LEN: usize = 32;

    /// Wraps a nonce of exactly `N` bytes; `N` must be in
    /// `MIN_LEN..=MAX_LEN` (checked at compile time).
    pub const fn from_bytes<const N: usize>(nonce: [u8; N]) -> Self {
        const {
            assert!(N >= Self::MIN_LEN && N <= Self::MAX_LEN);
        }
        let mut bytes = [0u8; Self::MAX_LEN];
        let mut i = 0;
        while i < N {
            bytes[i] = nonce[i];
            i += 1;
        }
        Self {
            len: N as u8,
            bytes,
        }
    }

    /// Copies a nonce of `MIN_LEN..=MAX_LEN` bytes.
    pub fn from_slice(nonce: &[u8]) -> Result<Self, Error> {
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&nonce.len()) {
            return Err(Error::InvalidField("device nonce (16 to 32 bytes)"));
        }
        let mut bytes = [0u8; Self::MAX_LEN];
        bytes[..nonce.len()].copy_from_slice(nonce);
        Ok(Self {
            len: nonce.len() as u8,
            bytes,
        })
    }

    /// The nonce bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl fmt::Debug for DeviceNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceNonce(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

impl Digest {
    /// SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }
}

/// A release's AES-256 content key. Never printed, wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct ContentKey([u8; 32]);

impl ContentKey {
    /// Length in bytes.
    pub const LEN: usize = 32;

    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Copies from a slice of exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| Error::InvalidField("content key"))
    }

    /// The raw key bytes. Handle with care.
    pub const fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContentKey(..)")
    }
}

impl Drop for ContentKey {
    fn drop(&mut self) {
        // Best-effort wipe; volatile-free so it stays in safe Rust.
        self.0 = [0; 32];
        core::hint::black_box(&self.0);
    }
}

/// A firmware version, `MAJOR.MINOR.PATCH`, ordered numerically.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// Incompatible changes.
    pub major: u32,
    /// Features.
    pub minor: u32,
    /// Fixes.
    pub patch: u32,
}

impl Version {
    /// A version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses `MAJOR.MINOR.PATCH` (decimal, no leading `+`, no suffix).
    pub fn parse(s: &str) -> Result<Self, Error> {
        let mut parts = s.split('.');
        let mut next = || -> Result<u32, Error> {
            let p = parts.next().ok_or(Error::InvalidField("version"))?;
            if p.is_empty() || p.len() > 9 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::InvalidField("version"));
            }
            p.parse().map_err(|_| Error::InvalidField("version"))
        };
        let v = Self::new(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(Error::InvalidField("version"));
        }
        Ok(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({self})")
    }
}

impl core::str::FromStr for Version {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// Anti-rollback counter of a release; a device refuses releases below its floor.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct SecurityVersion(pub u32);

/// Seconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct UnixTime(pub u64);

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(DeviceId::new("dev-001").is_ok());
        assert!(DeviceId::new("").is_err());
        assert!(DeviceId::new("../etc").is_err());
        assert!(DeviceId::new("a b").is_err());
        assert!(ReleaseId::new(&"x".repeat(65)).is_err());
        assert!(ReleaseId::new(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(Version::parse("1.10.0").unwrap(), Version::new(1, 10, 0));
        assert!(Version::parse("1.2.0").unwrap() < Version::parse("1.10.0").unwrap());
        for bad in ["1.2", "1.2.3.4", "a.b.c", "1..2", "+1.2.3", "1.2.3-rc1", ""] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fixed_bytes_need_exact_length() {
        assert!(Digest::from_slice(&[0; 31]).is_err());
        assert!(Digest::from_slice(&[0; 32]).is_ok());
        assert!(DeviceNonce::from_slice(&[0; 15]).is_err());
        assert!(DeviceNonce::from_slice(&[0; 33]).is_err());
        for len in 16..=32 {
            let n = DeviceNonce::from_slice(&vec![7; len]).unwrap();
            assert_eq!(n.as_bytes(), &vec![7; len][..]);
        }
        assert_ne!(
            DeviceNonce::from_slice(&[7; 16]).unwrap(),
            DeviceNonce::from_slice(&[7; 17]).unwrap(),
            "length is part of the nonce"
        );
    }
}
