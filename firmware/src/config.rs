//! The firmware's build-time configuration: its version and, for demos and
//! tests, a deliberate fault.
//!
//! `build.rs` reads [`ENV_VERSION`] and [`ENV_FAULT`] (with
//! `rerun-if-env-changed`) and the values are baked into one fixed-size
//! record in the executable: [`MARKER`], the version (32 bytes, NUL padded)
//! and the fault (16 bytes, NUL padded). The release tool rebuilds the
//! firmware for every release; [`restamp`] rewrites the record of an
//! already built image instead, which lets tests make a crash image or a
//! hang image from one build in milliseconds.

use core::fmt;
use core::str::FromStr;

use aloft_protocol::Version;

/// Environment variable holding the version to bake in (`MAJOR.MINOR.PATCH`).
pub const ENV_VERSION: &str = "ALOFT_FIRMWARE_VERSION";
/// Environment variable holding the fault to bake in (`none|health|crash|hang`).
pub const ENV_FAULT: &str = "ALOFT_FIRMWARE_FAULT";

/// First bytes of the configuration record.
pub const MARKER: &[u8; 16] = b"ALOFT-FW-CONFIG:";
const VERSION_LEN: usize = 32;
const FAULT_LEN: usize = 16;
/// Length of the configuration record.
pub const RECORD_LEN: usize = MARKER.len() + VERSION_LEN + FAULT_LEN;

/// A deliberate fault, baked in for demos and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Fault {
    /// A healthy firmware.
    #[default]
    None,
    /// Fails its health check, so it never confirms itself.
    Health,
    /// Exits at start, before its health check.
    Crash,
    /// Stops petting the watchdog (and never confirms).
    Hang,
}

impl Fault {
    /// All faults, in order.
    pub const ALL: [Self; 4] = [Self::None, Self::Health, Self::Crash, Self::Hang];

    /// The name used on command lines and in [`ENV_FAULT`].
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Health => "health",
            Self::Crash => "crash",
            Self::Hang => "hang",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a configuration could not be parsed or stamped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not one of `none`, `health`, `crash`, `hang`.
    #[error("unknown fault {0:?}: expected none, health, crash or hang")]
    UnknownFault(String),
    /// Not `MAJOR.MINOR.PATCH`.
    #[error("invalid firmware version {0:?}: expected MAJOR.MINOR.PATCH")]
    BadVersion(String),
    /// The image holds no configuration record, or more than one.
    #[error("the image holds {0} firmware configuration records (expected exactly 1)")]
    Records(usize),
}

impl FromStr for Fault {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| ConfigError::UnknownFault(s.to_owned()))
    }
}

/// A firmware's version and fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirmwareConfig {
    /// Version reported to the server.
    pub version: Version,
    /// Deliberate fault.
    pub fault: Fault,
}

impl FirmwareConfig {
    /// The configuration record for `self`.
    pub fn record(&self) -> [u8; RECORD_LEN] {
        let mut rec = [0u8; RECORD_LEN];
        rec[..MARKER.len()].copy_from_slice(MARKER);
        let v = self.version.to_string();
        rec[MARKER.len()..MARKER.len() + v.len()].copy_from_slice(v.as_bytes());
        let f = self.fault.as_str();
        let at = MARKER.len() + VERSION_LEN;
        rec[at..at + f.len()].copy_from_slice(f.as_bytes());
        rec
    }

    /// Parses a configuration record.
    pub fn parse(rec: &[u8]) -> Result<Self, ConfigError> {
        if rec.len() != RECORD_LEN || !rec.starts_with(MARKER) {
            return Err(ConfigError::Records(0));
        }
        let field = |bytes: &[u8]| {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            String::from_utf8_lossy(&bytes[..end]).into_owned()
        };
        let v = field(&rec[MARKER.len()..MARKER.len() + VERSION_LEN]);
        let version = Version::parse(&v).map_err(|_| ConfigError::BadVersion(v))?;
        let fault = field(&rec[MARKER.len() + VERSION_LEN..]).parse()?;
        Ok(Self { version, fault })
    }
}

const fn bake(version: &str, fault: &str) -> [u8; RECORD_LEN] {
    let mut rec = [0u8; RECORD_LEN];
    let mut i = 0;
    while i < MARKER.len() {
        rec[i] = MARKER[i];
        i += 1;
    }
    let v = version.as_bytes();
    assert!(v.len() <= VERSION_LEN, "version too long");
    let mut j = 0;
    while j < v.len() {
        rec[MARKER.len() + j] = v[j];
        j += 1;
    }
    let f = fault.as_bytes();
    assert!(f.len() <= FAULT_LEN, "fault too long");
    let mut k = 0;
    while k < f.len() {
        rec[MARKER.len() + VERSION_LEN + k] = f[k];
        k += 1;
    }
    rec
}

/// The record baked in by `build.rs`.
static BAKED: [u8; RECORD_LEN] = bake(env!("ALOFT_BAKED_VERSION"), env!("ALOFT_BAKED_FAULT"));

/// This executable's configuration. The record is read through
/// [`core::hint::black_box`] so the compiler cannot fold it into the code
/// and [`restamp`] stays effective.
pub fn baked() -> FirmwareConfig {
    let rec: &[u8; RECORD_LEN] = core::hint::black_box(&BAKED);
    FirmwareConfig::parse(rec).expect("build.rs validated the baked configuration")
}

/// Rewrites the configuration record of a built firmware `image` (exactly
/// one valid record must be present).
pub fn restamp(image: &mut [u8], config: &FirmwareConfig) -> Result<(), ConfigError> {
    let found: Vec<usize> = image
        .windows(RECORD_LEN)
        .enumerate()
        .filter(|(_, w)| w.starts_with(MARKER) && FirmwareConfig::parse(w).is_ok())
        .map(|(i, _)| i)
        .collect();
    let [at] = found[..] else {
        return Err(ConfigError::Records(found.len()));
    };
    image[at..at + RECORD_LEN].copy_from_slice(&config.record());
    Ok(())
}

/// Reads the configuration record of a built firmware `image`.
pub fn read_record(image: &[u8]) -> Result<FirmwareConfig, ConfigError> {
    let found: Vec<FirmwareConfig> = image
        .windows(RECORD_LEN)
        .filter(|w| w.starts_with(MARKER))
        .filter_map(|w| FirmwareConfig::parse(w).ok())
        .collect();
    match found[..] {
        [one] => Ok(one),
        _ => Err(ConfigError::Records(found.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_restamps() {
        let c = FirmwareConfig {
            version: Version::new(1, 22, 333),
            fault: Fault::Hang,
        };
        assert_eq!(FirmwareConfig::parse(&c.record()).unwrap(), c);
        let mut image = vec![7u8; 100];
        image.extend_from_slice(&baked().record());
        image.extend_from_slice(MARKER);
        image.extend_from_slice(&[0xFF; 80]);
        restamp(&mut image, &c).unwrap();
        assert_eq!(read_record(&image).unwrap(), c);
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(
            "explode".parse::<Fault>(),
            Err(ConfigError::UnknownFault("explode".into()))
        );
        let mut image = vec![0u8; 200];
        assert_eq!(restamp(&mut image, &baked()), Err(ConfigError::Records(0)));
        let rec = baked().record();
        image[..RECORD_LEN].copy_from_slice(&rec);
        image[100..100 + RECORD_LEN].copy_from_slice(&rec);
        assert_eq!(restamp(&mut image, &baked()), Err(ConfigError::Records(2)));
        let mut bad = rec;
        bad[MARKER.len()] = b'x';
        assert!(matches!(
            FirmwareConfig::parse(&bad),
            Err(ConfigError::BadVersion(_))
        ));
    }
}
