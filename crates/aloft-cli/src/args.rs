//! Value parsers for ids, names and versions on the command line, so a
//! malformed one is a usage error (exit 2) that names the rule, before any
//! file is touched or the server is asked.
//!
//! The rules are the server's (device, release and rollout ids share them:
//! `aloft_protocol::DeviceId`), checked here with the same code.

use aloft_protocol::{DeviceId, ReleaseId, Version};

/// The id rule, as said in every refusal.
const ID_RULE: &str = "1-64 of A-Z a-z 0-9 . _ : - (not starting with .)";

fn id(text: &str, what: &str, valid: bool) -> Result<String, String> {
    if valid {
        Ok(text.to_owned())
    } else if text.is_empty() {
        Err(format!("the {what} is empty: use {ID_RULE}"))
    } else {
        Err(format!("{text:?} is not a valid {what}: use {ID_RULE}"))
    }
}

/// A device id (`--id`, `device show ID`, ...).
pub fn device_id(text: &str) -> Result<String, String> {
    id(text, "device id", DeviceId::new(text).is_ok())
}

/// A release id, e.g. `sensor-1.1.0` (`aloft release list` shows them).
pub fn release_id(text: &str) -> Result<String, String> {
    id(text, "release id", ReleaseId::new(text).is_ok())
}

/// A rollout id, e.g. `fw-1.1.0-eu` (same rule as device ids).
pub fn rollout_id(text: &str) -> Result<String, String> {
    id(text, "rollout id", DeviceId::new(text).is_ok())
}

/// A token id as `aloft token list` shows it.
pub fn token_id(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("the token id is empty: `aloft token list` shows the ids".into());
    }
    Ok(t.to_owned())
}

/// A token's name: 1 to 64 bytes, no control characters.
pub fn token_name(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("the token name is empty: name it after who uses it, e.g. ci or alice".into());
    }
    if text.len() > 64 {
        return Err(format!(
            "the token name is {} bytes long: at most 64",
            text.len()
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("the token name contains control characters".into());
    }
    Ok(text.to_owned())
}

/// A firmware version, `MAJOR.MINOR.PATCH` (normalised, e.g. `01.0.0` is `1.0.0`).
pub fn version(text: &str) -> Result<String, String> {
    Version::parse(text.trim())
        .map(|v| v.to_string())
        .map_err(|_| format!("{text:?} is not a version: use MAJOR.MINOR.PATCH, e.g. 1.0.0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_server_rule() {
        assert_eq!(device_id("dev-1").unwrap(), "dev-1");
        assert_eq!(rollout_id("fw-1.1.0:eu_1").unwrap(), "fw-1.1.0:eu_1");
        assert_eq!(
            release_id("aloft-sample-1.1.0").unwrap(),
            "aloft-sample-1.1.0"
        );
        for bad in ["", "bad id", ".hidden", "a/b", &"x".repeat(65)] {
            let err = device_id(bad).unwrap_err();
            assert!(err.contains("1-64 of"), "{bad:?}: {err}");
            assert!(rollout_id(bad).unwrap_err().contains("rollout id"));
            assert!(release_id(bad).unwrap_err().contains("release id"));
        }
        assert!(device_id("").unwrap_err().contains("empty"));
    }

    #[test]
    fn names_and_versions_are_checked() {
        assert_eq!(token_name("ci").unwrap(), "ci");
        assert!(token_name(" ").unwrap_err().contains("empty"));
        assert!(
            token_name(&"n".repeat(65))
                .unwrap_err()
                .contains("at most 64")
        );
        assert!(token_id("").unwrap_err().contains("token list"));
        assert_eq!(version(" 1.2.3 ").unwrap(), "1.2.3");
        for bad in ["", "1.0", "v1.0.0", "1.0.0.0", "one"] {
            assert!(
                version(bad).unwrap_err().contains("MAJOR.MINOR.PATCH"),
                "{bad}"
            );
        }
    }
}
