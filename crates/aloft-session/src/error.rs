use core::fmt;

/// Why a session message was refused. Either side ends the session on one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// A message arrived that the session's state does not allow now (out
    /// of order, or a duplicate of a once-only message).
    Unexpected {
        /// What the session was waiting for.
        expected: &'static str,
        /// What arrived.
        got: &'static str,
    },
    /// A second Hello in one session.
    SecondHello,
    /// A message with no body (or a server message with no kind).
    Empty,
    /// The signed device id differs from the one that opened the session.
    DeviceIdChanged,
    /// The device message failed signature, challenge or sequence checks, or
    /// is oversized or malformed: see the wrapped error.
    Message(aloft_protocol::Error),
    /// A field is out of its range (names the field and the rule).
    InvalidField(&'static str),
    /// The server tried to send an offer before the TrustRoot successors the
    /// device lacks: offers may be signed by keys only the newest root lists.
    TrustUpdateFirst,
    /// The server tried to send something before the session was open.
    NotOpen(&'static str),
    /// The awaited server message did not arrive in time.
    Timeout(&'static str),
    /// The session already ended.
    Ended,
}

impl From<aloft_protocol::Error> for SessionError {
    fn from(e: aloft_protocol::Error) -> Self {
        Self::Message(e)
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unexpected { expected, got } => {
                write!(f, "unexpected {got}: the session expects {expected}")
            }
            Self::SecondHello => f.write_str("a session carries exactly one Hello"),
            Self::Empty => f.write_str("message without a body"),
            Self::DeviceIdChanged => f.write_str("device id changed within the session"),
            Self::Message(e) => write!(f, "device message refused: {e}"),
            Self::InvalidField(what) => write!(f, "invalid {what}"),
            Self::TrustUpdateFirst => {
                f.write_str("an offer may only follow the TrustRoot successors the device lacks")
            }
            Self::NotOpen(what) => write!(f, "{what} before the session is open"),
            Self::Timeout(what) => write!(f, "no {what} in time"),
            Self::Ended => f.write_str("the session has ended"),
        }
    }
}

impl core::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Message(e) => Some(e),
            _ => None,
        }
    }
}
