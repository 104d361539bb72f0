//! Operator authentication and authorisation for the admin service.
//!
//! Operators present `authorization: Bearer <token>`. A token is 32 random
//! bytes (hex, prefixed `aloft_`); the store keeps only its SHA-256, its
//! role and whether it is revoked. Roles are ordered viewer < operator <
//! admin: viewers read; operators manage devices, releases and rollouts;
//! admins also manage tokens and the TrustRoot. The factory role stands
//! outside that order: a factory station's token registers devices from
//! their registration requests, reads the devices it registered and the
//! server info, and meets no other requirement, so a stolen station token
//! reaches nothing else. No or unknown token -> `UNAUTHENTICATED`; revoked
//! -> `UNAUTHENTICATED`; insufficient role -> `PERMISSION_DENIED`. Device
//! session tokens live in a different namespace (the in-memory session
//! registry), so they are never valid here.

use crate::sync::Recover as _;
use std::sync::Arc;

use aloft_protocol::{Digest, pb};
use tokio::sync::broadcast;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::keys::random;
use crate::store::{Store, StoreError, TokenRecord};

/// An operator role. Viewer < operator < admin is the privilege order
/// ([`Role::meets`]); [`Role::Factory`] is outside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Read-only.
    Viewer,
    /// Devices, releases, rollouts.
    Operator,
    /// Everything, including tokens and the TrustRoot.
    Admin,
    /// A factory station: registers devices from their registration
    /// requests and reads the devices it registered; nothing else.
    Factory,
}

impl Role {
    /// From the wire enum; `None` for unspecified or unknown values.
    pub fn from_pb(role: i32) -> Option<Self> {
        match pb::Role::try_from(role).ok()? {
            pb::Role::Viewer => Some(Self::Viewer),
            pb::Role::Operator => Some(Self::Operator),
            pb::Role::Admin => Some(Self::Admin),
            pb::Role::Factory => Some(Self::Factory),
            pb::Role::Unspecified => None,
        }
    }

    /// The wire enum.
    pub fn to_pb(self) -> pb::Role {
        match self {
            Self::Viewer => pb::Role::Viewer,
            Self::Operator => pb::Role::Operator,
            Self::Admin => pb::Role::Admin,
            Self::Factory => pb::Role::Factory,
        }
    }

    /// The role's word: `viewer`, `operator`, `admin`, `factory`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
            Self::Factory => "factory",
        }
    }

    /// Rank in the privilege order; `None` for the factory role.
    fn rank(self) -> Option<u8> {
        match self {
            Self::Viewer => Some(0),
            Self::Operator => Some(1),
            Self::Admin => Some(2),
            Self::Factory => None,
        }
    }

    /// Whether a token of this role may make a call that needs `needed`
    /// (viewer < operator < admin). A factory token meets no such need,
    /// and nothing but a factory token meets a need of [`Role::Factory`].
    pub fn meets(self, needed: Role) -> bool {
        match (self.rank(), needed.rank()) {
            (Some(have), Some(need)) => have >= need,
            (None, None) => true,
            _ => false,
        }
    }
}

/// Who made an admin call.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's id.
    pub token_id: String,
    /// Its role.
    pub role: Role,
}

/// Extracts the bearer token from request metadata.
pub fn bearer(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get(aloft_protocol::wire::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix(aloft_protocol::wire::BEARER_PREFIX)
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Checks operator tokens against the store.
/// Requests each operator token may make: `per_second` sustained, `burst`
/// at once (0 = unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 50,
            burst: 200,
        }
    }
}

/// Token buckets, one per operator token: `burst` requests at once, refilled
/// at `per_second`. (A handful of tokens, checked once per admin call: a
/// mutex over a map is all it needs; governor would add 30 crates.)
struct Buckets {
    limit: RateLimit,
    /// Token id -> (tokens left, last refill).
    state: std::sync::Mutex<std::collections::HashMap<String, (f64, tokio::time::Instant)>>,
}

impl Buckets {
    /// Takes one request for `key`; `Err(wait)` when its bucket is empty.
    fn take(&self, key: &str) -> Result<(), std::time::Duration> {
        let now = tokio::time::Instant::now();
        let rate = f64::from(self.limit.per_second);
        let burst = f64::from(self.limit.burst.max(self.limit.per_second));
        let mut state = self.state.lock().recover();
        let (tokens, last) = state.entry(key.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(std::time::Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }
}

/// Checks operator tokens against the store (see the module docs), limits
/// each token's request rate, and tells open streams when their token is
/// revoked.
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn Store>,
    limiter: Option<Arc<Buckets>>,
    revoked: broadcast::Sender<String>,
}

impl Authenticator {
    /// Over `store`, with the default rate limit.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_rate_limit(store, RateLimit::default())
    }

    /// Over `store`, allowing each token `limit`.
    pub fn with_rate_limit(store: Arc<dyn Store>, limit: RateLimit) -> Self {
        let limiter = (limit.per_second > 0).then(|| {
            Arc::new(Buckets {
                limit,
                state: Default::default(),
            })
        });
        Self {
            store,
            limiter,
            revoked: broadcast::channel(64).0,
        }
    }

    /// Ids of tokens as they are revoked: a stream opened with a token ends
    /// when it sees its id.
    pub fn revocations(&self) -> broadcast::Receiver<String> {
        self.revoked.subscribe()
    }

    /// Announces that `token_id` was revoked (after the revocation is durable).
    pub fn revoked(&self, token_id: &str) {
        let _ = self.revoked.send(token_id.to_owned());
    }

    /// Authenticates the caller, checks it has at least `needed`, and counts
    /// the call against the token's rate (`RESOURCE_EXHAUSTED` with a retry
    /// delay in [`crate::RETRY_AFTER_MS`] when over it).
    pub fn require(&self, metadata: &MetadataMap, needed: Role) -> Result<Caller, Status> {
        self.require_any(metadata, &[needed])
    }

    /// As [`Authenticator::require`], for a call that a factory token may
    /// also make (the caller then limits it to what a station may do).
    pub fn require_or_factory(
        &self,
        metadata: &MetadataMap,
        needed: Role,
    ) -> Result<Caller, Status> {
        self.require_any(metadata, &[needed, Role::Factory])
    }

    /// Authenticates the caller and checks its role meets one of `allowed`.
    fn require_any(&self, metadata: &MetadataMap, allowed: &[Role]) -> Result<Caller, Status> {
        let needed = allowed[0];
        let token = bearer(metadata).ok_or_else(|| {
            Status::unauthenticated(
                "missing operator token: send 'authorization: Bearer <token>' (see DIR/admin-token)",
            )
        })?;
        let record = self
            .store
            .token_by_hash(&Digest::of(token.as_bytes()))?
            .ok_or_else(|| Status::unauthenticated("unknown operator token"))?;
        if record.revoked {
            return Err(Status::unauthenticated(format!(
                "operator token {} was revoked",
                record.token_id
            )));
        }
        let role = Role::from_pb(record.role)
            .ok_or_else(|| Status::internal("stored token has no role"))?;
        if !allowed.iter().any(|&a| role.meets(a)) {
            return Err(Status::permission_denied(if role == Role::Factory {
                format!(
                    "this call needs the {} role; token {} is a factory token, which may only \
                     register devices (from their registration requests), read the devices it \
                     registered and read the server info",
                    needed.name(),
                    record.token_id
                )
            } else {
                format!(
                    "this call needs the {} role; token {} has {}",
                    needed.name(),
                    record.token_id,
                    role.name()
                )
            }));
        }
        if let Some(limiter) = &self.limiter
            && let Err(wait) = limiter.take(&record.token_id)
        {
            let mut status = Status::resource_exhausted(format!(
                "operator token {} is over its request rate; retry in {} ms",
                record.token_id,
                wait.as_millis().max(1)
            ));
            if let Ok(v) = wait.as_millis().max(1).to_string().parse() {
                status.metadata_mut().insert(crate::RETRY_AFTER_MS, v);
            }
            return Err(status);
        }
        Ok(Caller {
            token_id: record.token_id,
            role,
        })
    }

    /// Creates a token: stores its hash and returns the record and the secret
    /// (shown once). The caller flushes.
    pub fn create(
        &self,
        name: &str,
        role: Role,
        now: u64,
    ) -> Result<(TokenRecord, String), StoreError> {
        let secret = format!("aloft_{}", hex(&random::<32>()));
        let record = TokenRecord {
            token_id: format!("tok-{}", hex(&random::<6>())),
            name: name.to_owned(),
            role: role.to_pb() as i32,
            hash: Digest::of(secret.as_bytes()).as_bytes().to_vec(),
            created_at: now,
            revoked: false,
        };
        self.store.insert_token(&record)?;
        Ok((record, secret))
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A token record as the wire shows it.
pub fn token_info(record: &TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        token_id: record.token_id.clone(),
        name: record.name.clone(),
        role: record.role,
        created_at: record.created_at,
        revoked: record.revoked,
    }
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn the_factory_role_meets_only_itself() {
        for needed in [Role::Viewer, Role::Operator, Role::Admin] {
            assert!(!Role::Factory.meets(needed), "{needed:?}");
            assert!(!needed.meets(Role::Factory), "{needed:?}");
            assert!(Role::Admin.meets(needed));
        }
        assert!(Role::Factory.meets(Role::Factory));
        assert!(Role::Operator.meets(Role::Viewer));
        assert!(!Role::Viewer.meets(Role::Operator));
        for role in [Role::Viewer, Role::Operator, Role::Admin, Role::Factory] {
            assert_eq!(Role::from_pb(role.to_pb() as i32), Some(role));
        }
    }
}
