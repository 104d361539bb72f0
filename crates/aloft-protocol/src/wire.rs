//! Names on the wire outside the protobuf schema: gRPC metadata keys and
//! their encodings. The full contract (domain tags, signature and token
//! encodings, roles, limits) is written down in `proto/aloft/v1/*.proto`
//! and ARCHITECTURE.md, "Wire contract".

/// Metadata key on a refusal (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`) saying how
/// long to wait before retrying, in milliseconds as decimal ASCII. Clients
/// wait at least that long.
pub const RETRY_AFTER_MS: &str = "aloft-retry-after-ms";

/// Metadata key carrying a bearer credential: the operator token on the
/// admin service, the session token from `Welcome` on `Download`.
pub const AUTHORIZATION: &str = "authorization";

/// Prefix of an [`AUTHORIZATION`] value; the session token follows it as
/// lower-case hex, the operator token as issued.
pub const BEARER_PREFIX: &str = "Bearer ";
