//! Operator authentication and authorisation for the admin service.
//!
//! Operators present `authorization: Bearer <token>`. A token is 32 random
//! bytes (hex, prefixed `aloft_`); the store keeps only its SHA-256, its
//! role and whether it is revoked. Roles are ordered viewer < operator <
//! admin: viewers read; operators manage devices, releases and rollouts;
//! admins also manage tokens and the TrustRoot. No or unknown token ->
//! `UNAUTHENTICATED`; revoked -> `UNAUTHENTICATED`; insufficient role ->
//! `PERMISSION_DENIED`. Device session tokens live in a different namespace
//! (the in-memory session registry), so they are never valid here.

use std::sync::Arc;

use aloft_protocol::{Digest, pb};
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::keys::random;
use crate::store::{Store, StoreError, TokenRecord};

/// An operator role; the order is the privilege order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read-only.
    Viewer,
    /// Devices, releases, rollouts.
    Operator,
    /// Everything, including tokens and the TrustRoot.
    Admin,
}

impl Role {
    /// From the wire enum; `None` for unspecified or unknown values.
    pub fn from_pb(role: i32) -> Option<Self> {
        match pb::Role::try_from(role).ok()? {
            pb::Role::Viewer => Some(Self::Viewer),
            pb::Role::Operator => Some(Self::Operator),
            pb::Role::Admin => Some(Self::Admin),
            pb::Role::Unspecified => None,
        }
    }

    /// The wire enum.
    pub fn to_pb(self) -> pb::Role {
        match self {
            Self::Viewer => pb::Role::Viewer,
            Self::Operator => pb::Role::Operator,
            Self::Admin => pb::Role::Admin,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
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
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Checks operator tokens against the store.
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn Store>,
}

impl Authenticator {
    /// Over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Authenticates the caller and checks it has at least `needed`.
    pub fn require(&self, metadata: &MetadataMap, needed: Role) -> Result<Caller, Status> {
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
        if role < needed {
            return Err(Status::permission_denied(format!(
                "this call needs the {} role; token {} has {}",
                needed.name(),
                record.token_id,
                role.name()
            )));
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
