//! The crate's one error type.

use core::fmt;

/// Why a selector did not parse: where, what was expected, what was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset into the selector text (0-based).
    pub position: usize,
    /// What the parser expected at `position`, e.g. "a value".
    pub expected: String,
    /// What it found instead (a token, or "end of input").
    pub found: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "selector error at position {}: expected {}, found {}",
            self.position, self.expected, self.found
        )
    }
}

impl std::error::Error for ParseError {}

/// Everything this crate refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A selector expression did not parse.
    #[error(transparent)]
    Selector(#[from] ParseError),
    /// A time zone name is not in the bundled IANA database.
    /// [`crate::window::resolve_or_utc`] is the documented fallback.
    #[error("unknown time zone {0:?} (use an IANA name such as \"Europe/Berlin\")")]
    UnknownTimeZone(String),
    /// A maintenance window minute is not below 1440 (24 h).
    #[error("maintenance window minute {0} is out of range (0-1439)")]
    InvalidWindow(u32),
    /// The stage list breaks a rule (see [`crate::rollout::RolloutSpec::new`]).
    #[error("invalid stages: {0}")]
    InvalidStages(String),
    /// A rollout id is not 1 to 64 of `[A-Za-z0-9._:-]` (not starting with `.`).
    #[error("invalid rollout id")]
    InvalidRolloutId,
    /// A field of a request message is missing or malformed.
    #[error("invalid {0}")]
    InvalidField(&'static str),
    /// An operator action does not apply in the rollout's current state.
    #[error("cannot {action} a rollout that is {state}")]
    InvalidState {
        /// The refused action, e.g. "resume".
        action: &'static str,
        /// The rollout's state, e.g. "cancelled".
        state: &'static str,
    },
    /// The device has no record in this rollout (it never checked in).
    #[error("device {0} is not part of this rollout")]
    UnknownDevice(String),
}
