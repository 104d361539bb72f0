//! Registering devices: one at a time (`RegisterDevice`) or in batches
//! (`ImportDevices`), from the registration requests devices make with the
//! key pair they generated themselves (`aloft_protocol::registration`), or,
//! for development, from a public key made off the device.
//!
//! A registration request is checked in this order (first failure wins):
//! its size and proof of possession (the signature verifies under the key
//! it names; ring, as for session messages), the id the caller expects (a
//! station's file names each device: a request for another id is refused),
//! its age (made at most [`crate::Limits::registration_max_age`] ago and
//! not more than [`MAX_FUTURE_SKEW_SECS`] in the future by the server's
//! clock), and the product's capability profile (a device that cannot
//! decrypt is not registered for a product whose releases are encrypted,
//! nor one that requires encryption for a signature-only product). A
//! request registers once: the device record keeps its digest, so the same
//! request presented again is refused as a replay.
//!
//! An import is all or nothing: every item is checked, an id given twice
//! is refused at its second place, and unless every item passes nothing is
//! stored (the devices are inserted in one store transaction, which also
//! refuses ids registered meanwhile). The response lists each refused item
//! with its source (file and line) and reason.

use std::collections::HashMap;

use aloft_protocol::registration::{self, VerifiedRegistration};
use aloft_protocol::ring_verify::RingPublicKey;
use aloft_protocol::{DeviceId, PublicKey, Version, pb};
use tonic::{Status, Streaming};

use crate::Shared;
use crate::auth::{Caller, Role};
use crate::store::DeviceRecord;
use crate::tracking::EventKind;

/// How far in the future a request's creation time may be (clock skew
/// between the station and the server).
pub const MAX_FUTURE_SKEW_SECS: u64 = 600;
/// Most items in one import.
pub const MAX_IMPORT_ITEMS: usize = 100_000;
/// Most refused items listed in an import's response.
pub const MAX_LISTED_ERRORS: usize = 1000;

/// Why a registration was refused: what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// The request does not verify (size, encoding, key, signature, field).
    #[error("registration request refused: {}{}", .0, hint(.0))]
    Request(#[source] aloft_protocol::Error),
    /// The request is for another device than the caller named.
    #[error(
        "the registration request is for device {signed}, not {claimed}: register each request under the id the device signed"
    )]
    OtherDevice {
        /// The id in the signed request.
        signed: String,
        /// The id the caller gave.
        claimed: String,
    },
    /// The request is older than the server accepts.
    #[error(
        "the registration request of {device} was made {age} s ago, more than the {max} s this server accepts: power the device up again at the station to make a fresh one"
    )]
    Stale {
        /// The device.
        device: String,
        /// Seconds since the request was made.
        age: u64,
        /// The limit.
        max: u64,
    },
    /// The request claims to be made in the future.
    #[error(
        "the registration request of {device} was made {ahead} s in the future by this server's clock: set the station's clock (or the server's)"
    )]
    Future {
        /// The device.
        device: String,
        /// Seconds ahead.
        ahead: u64,
    },
    /// The device's payload support does not fit its product's declaration.
    #[error(
        "device {device} installs {device_support} payloads but product {product} releases {product_payloads} ones{}: {fix}",
        if *.sensitive { " (its data is sensitive)" } else { "" }
    )]
    Profile {
        /// The device.
        device: String,
        /// Its product.
        product: String,
        /// What the device installs.
        device_support: &'static str,
        /// What the product's releases are.
        product_payloads: &'static str,
        /// Whether the product is sensitive.
        sensitive: bool,
        /// What to do.
        fix: &'static str,
    },
    /// The same request was already used.
    #[error(
        "replayed registration request: it already registered device {device} (at {at}); a request registers once"
    )]
    Replayed {
        /// The device it registered.
        device: String,
        /// When (Unix seconds).
        at: u64,
    },
    /// The id is registered already (with another key or request).
    #[error(
        "device {0} is already registered (an id is never reused, even after `aloft device revoke`): give the new device another id"
    )]
    Exists(String),
    /// The same id twice in one import.
    #[error("device {device} appears twice in this import (first at {first})")]
    Duplicate {
        /// The device.
        device: String,
        /// Where it appeared first.
        first: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The hint that follows a protocol refusal.
fn hint(e: &aloft_protocol::Error) -> &'static str {
    match e {
        aloft_protocol::Error::BadSignature => {
            " (it is not signed by the key it names: no proof of possession, or it was changed after the device made it)"
        }
        aloft_protocol::Error::TooLarge(_) => " (a request is at most 2 KiB)",
        _ => "",
    }
}

impl From<RegistrationError> for Status {
    fn from(e: RegistrationError) -> Self {
        let message = e.to_string();
        match e {
            RegistrationError::Exists(_) | RegistrationError::Replayed { .. } => {
                Status::already_exists(message)
            }
            RegistrationError::Profile { .. } => Status::failed_precondition(message),
            RegistrationError::Store(s) => s.into(),
            _ => Status::invalid_argument(message),
        }
    }
}

/// Checks one registration request: see the module docs for the order.
/// `claimed` is the id the caller expects, if any.
pub(crate) fn check_request(
    shared: &Shared,
    signed: &pb::SignedRegistration,
    claimed: Option<&str>,
) -> Result<VerifiedRegistration, RegistrationError> {
    let request = registration::verify_with(signed, RingPublicKey::new)
        .map_err(RegistrationError::Request)?;
    check_verified(shared, request, claimed.unwrap_or(""))
}

/// Refuses a device whose payload support cannot install its product's
/// releases (an undeclared product's releases are encrypted).
fn check_profile(
    shared: &Shared,
    device: &str,
    product: &str,
    support: pb::PayloadSupport,
) -> Result<(), RegistrationError> {
    let declared = shared.store.product(product)?.unwrap_or_default();
    let releases =
        pb::PayloadEncoding::try_from(declared.payloads).unwrap_or(pb::PayloadEncoding::Encrypted);
    let (fits, fix) = match (releases, support) {
        (pb::PayloadEncoding::Encrypted, pb::PayloadSupport::SignatureOnly) => (
            false,
            "this device cannot decrypt; register it under a product declared signature-only (`aloft product set NAME --payloads signature-only`)",
        ),
        (pb::PayloadEncoding::SignatureOnly, pb::PayloadSupport::EncryptedOnly) => (
            false,
            "this device requires encryption; register it under a product whose releases are encrypted",
        ),
        _ => (true, ""),
    };
    if fits {
        return Ok(());
    }
    Err(RegistrationError::Profile {
        device: device.to_owned(),
        product: product.to_owned(),
        device_support: support_word(support),
        product_payloads: encoding_word(releases),
        sensitive: declared.sensitive,
        fix,
    })
}

/// `encrypted` or `signature-only`.
pub(crate) fn encoding_word(e: pb::PayloadEncoding) -> &'static str {
    match e {
        pb::PayloadEncoding::Encrypted => "encrypted",
        pb::PayloadEncoding::SignatureOnly => "signature-only",
    }
}

fn support_word(s: pb::PayloadSupport) -> &'static str {
    match s {
        pb::PayloadSupport::EncryptedOnly => "encrypted-only",
        pb::PayloadSupport::EncryptedOrSignatureOnly => "encrypted-or-signature-only",
        pb::PayloadSupport::SignatureOnly => "signature-only",
    }
}

/// The record a verified request registers.
fn record_of(request: &VerifiedRegistration, caller: &Caller, now: u64) -> DeviceRecord {
    DeviceRecord {
        device_id: request.device_id().as_str().to_owned(),
        public_key: request.public_key().to_sec1_compressed().to_vec(),
        attributes: Some(request.attributes().clone()),
        status: pb::DeviceStatus::Registered as i32,
        status_seq: 1,
        firmware_version: request.factory_version().to_string(),
        registered_at: now,
        key_origin: pb::KeyOrigin::OnDevice as i32,
        registered_by: caller.token_id.clone(),
        payloads: request.payloads() as i32,
        registration_digest: request.digest().as_bytes().to_vec(),
        ..Default::default()
    }
}

/// Why `id` cannot be inserted: a replay of the request that registered
/// it, or simply taken.
fn taken(shared: &Shared, id: &DeviceId, digest: &[u8]) -> RegistrationError {
    match shared.store.device(id) {
        Ok(Some(d)) if !digest.is_empty() && d.registration_digest == digest => {
            RegistrationError::Replayed {
                device: id.to_string(),
                at: d.registered_at,
            }
        }
        Ok(_) => RegistrationError::Exists(id.to_string()),
        Err(e) => e.into(),
    }
}

/// `RegisterDevice`: from a registration request (operator or factory), or
/// from a public key made off the device (operator only).
pub(crate) async fn register(
    shared: &Shared,
    caller: &Caller,
    req: pb::RegisterDeviceRequest,
) -> Result<pb::DeviceInfo, Status> {
    let now = shared.now().0;
    let record = match &req.registration {
        Some(signed) => {
            if !req.public_key.is_empty()
                || req.attributes.is_some()
                || !req.factory_version.is_empty()
            {
                return Err(Status::invalid_argument(
                    "give either a registration request or a public key with attributes and a factory version, not both",
                ));
            }
            let request = check_request(shared, signed, Some(&req.device_id))?;
            record_of(&request, caller, now)
        }
        None if caller.role == Role::Factory => {
            return Err(Status::permission_denied(format!(
                "token {} is a factory token: it registers devices only from their registration requests (the key born on the device), not from a public key",
                caller.token_id
            )));
        }
        None => off_device_record(&req, caller, now)?,
    };
    let id = DeviceId::new(&record.device_id).map_err(|_| Status::internal("checked id"))?;
    if !shared.store.insert_device(&record)? {
        return Err(taken(shared, &id, &record.registration_digest).into());
    }
    shared.tracker.event(
        id.as_str(),
        "",
        "",
        EventKind::Registered,
        origin_detail(&record),
    )?;
    shared.flush().await?;
    Ok(record)
}

fn origin_detail(record: &DeviceRecord) -> String {
    match pb::KeyOrigin::try_from(record.key_origin) {
        Ok(pb::KeyOrigin::OnDevice) => {
            format!("key made on the device; by {}", record.registered_by)
        }
        _ => format!("key made off the device; by {}", record.registered_by),
    }
}

/// A development registration: the key was made off the device.
fn off_device_record(
    req: &pb::RegisterDeviceRequest,
    caller: &Caller,
    now: u64,
) -> Result<DeviceRecord, Status> {
    let id = crate::admin_service::device_id(&req.device_id)?;
    let key = PublicKey::from_sec1(&req.public_key)
        .map_err(|e| Status::invalid_argument(format!("device public key: {e}")))?;
    let attrs = crate::admin_service::validate_attributes(req.attributes.clone())?;
    let version = Version::parse(&req.factory_version).map_err(|_| {
        Status::invalid_argument(format!(
            "factory version {:?} is not MAJOR.MINOR.PATCH",
            req.factory_version
        ))
    })?;
    Ok(DeviceRecord {
        device_id: id.as_str().to_owned(),
        public_key: key.to_sec1_compressed().to_vec(),
        attributes: Some(attrs),
        status: pb::DeviceStatus::Registered as i32,
        status_seq: 1,
        firmware_version: version.to_string(),
        registered_at: now,
        key_origin: pb::KeyOrigin::OffDevice as i32,
        registered_by: caller.token_id.clone(),
        ..Default::default()
    })
}

/// One refused item of an import.
fn refusal(
    index: usize,
    item: &pb::ImportItem,
    id: &str,
    e: &RegistrationError,
) -> pb::ImportError {
    pb::ImportError {
        index: index as u32,
        source: item.source.clone(),
        device_id: id.to_owned(),
        error: e.to_string(),
    }
}

/// `ImportDevices`: all or nothing (see the module docs).
pub(crate) async fn import(
    shared: &Shared,
    caller: &Caller,
    mut stream: Streaming<pb::ImportDevicesRequest>,
) -> Result<pb::ImportDevicesResponse, Status> {
    let mut items: Vec<pb::ImportItem> = Vec::new();
    let mut dry_run = None;
    while let Some(message) = stream.message().await? {
        dry_run.get_or_insert(message.dry_run);
        if items.len() + message.items.len() > MAX_IMPORT_ITEMS {
            return Err(Status::invalid_argument(format!(
                "an import holds at most {MAX_IMPORT_ITEMS} devices: split the file"
            )));
        }
        items.extend(message.items);
    }
    let dry_run = dry_run.unwrap_or(false);
    let now = shared.now().0;
    let mut refusals = Refusals::default();
    let checked = verify_all(shared, &items).await?;
    let mut records = Vec::with_capacity(items.len());
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    for (index, (item, result)) in items.iter().zip(checked).enumerate() {
        let request = match result {
            Ok(r) => r,
            Err(e) => {
                refusals.push(refusal(index, item, &item.device_id, &e));
                continue;
            }
        };
        let id = request.device_id().as_str().to_owned();
        if let Some(&first) = first_seen.get(&id) {
            let e = RegistrationError::Duplicate {
                device: id.clone(),
                first: place(&items[first], first),
            };
            refusals.push(refusal(index, item, &id, &e));
            continue;
        }
        first_seen.insert(id, index);
        records.push((index, record_of(&request, caller, now)));
    }
    let all: Vec<DeviceRecord> = records.iter().map(|(_, r)| r.clone()).collect();
    if refusals.count == 0 {
        // Ids registered before (or meanwhile, for a real import: the store
        // refuses them in the same transaction that would insert them).
        let existing = if dry_run {
            let mut out = Vec::new();
            for r in &all {
                let id = DeviceId::new(&r.device_id).map_err(|_| Status::internal("checked id"))?;
                if shared.store.device(&id)?.is_some() {
                    out.push(id);
                }
            }
            out
        } else {
            shared.store.insert_devices(&all)?
        };
        for id in existing {
            let (index, record) = records
                .iter()
                .find(|(_, r)| r.device_id == id.as_str())
                .ok_or_else(|| Status::internal("refused id not in the import"))?;
            let e = taken(shared, &id, &record.registration_digest);
            refusals.push(refusal(*index, &items[*index], id.as_str(), &e));
        }
        refusals.listed.sort_by_key(|e| e.index);
    }
    if refusals.count > 0 || dry_run {
        return Ok(pb::ImportDevicesResponse {
            registered: 0,
            checked: items.len() as u32,
            dry_run,
            refused: refusals.count,
            errors: refusals.listed,
        });
    }
    for r in &all {
        shared.tracker.event(
            &r.device_id,
            "",
            "",
            EventKind::Registered,
            origin_detail(r),
        )?;
    }
    shared.flush().await?;
    tracing::info!(devices = all.len(), token = %caller.token_id, "devices imported");
    Ok(pb::ImportDevicesResponse {
        registered: all.len() as u32,
        checked: items.len() as u32,
        dry_run,
        refused: 0,
        errors: Vec::new(),
    })
}

/// The refused items of an import: all counted, the first
/// [`MAX_LISTED_ERRORS`] listed.
#[derive(Default)]
struct Refusals {
    count: u32,
    listed: Vec<pb::ImportError>,
}

impl Refusals {
    fn push(&mut self, e: pb::ImportError) {
        self.count += 1;
        if self.listed.len() < MAX_LISTED_ERRORS {
            self.listed.push(e);
        }
    }
}

/// Where an item came from, for messages.
fn place(item: &pb::ImportItem, index: usize) -> String {
    if item.source.is_empty() {
        format!("item {index}")
    } else {
        item.source.clone()
    }
}

/// Checks every item's request, the signatures spread over the blocking
/// pool (one slice per core): they dominate an import's time.
async fn verify_all(
    shared: &Shared,
    items: &[pb::ImportItem],
) -> Result<Vec<Result<VerifiedRegistration, RegistrationError>>, Status> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let per = items.len().div_ceil(workers).max(1);
    let mut tasks = Vec::new();
    for slice in items.chunks(per) {
        let slice: Vec<(Option<pb::SignedRegistration>, String)> = slice
            .iter()
            .map(|i| (i.registration.clone(), i.device_id.clone()))
            .collect();
        tasks.push(tokio::task::spawn_blocking(move || {
            slice
                .into_iter()
                .map(|(signed, claimed)| {
                    let signed = signed.ok_or(RegistrationError::Request(
                        aloft_protocol::Error::InvalidField("registration request (missing)"),
                    ))?;
                    let request = registration::verify_with(&signed, RingPublicKey::new)
                        .map_err(RegistrationError::Request)?;
                    Ok((request, claimed))
                })
                .collect::<Vec<Result<_, RegistrationError>>>()
        }));
    }
    let mut out = Vec::with_capacity(items.len());
    for task in tasks {
        let verified = task
            .await
            .map_err(|e| Status::internal(format!("verifying requests: {e}")))?;
        for result in verified {
            // The rest of the checks (claimed id, age, profile) are cheap
            // and need the store: here, in order.
            out.push(
                result.and_then(|(request, claimed)| check_verified(shared, request, &claimed)),
            );
        }
    }
    Ok(out)
}

/// [`check_request`] after the signature: the claimed id, age and profile.
fn check_verified(
    shared: &Shared,
    request: VerifiedRegistration,
    claimed: &str,
) -> Result<VerifiedRegistration, RegistrationError> {
    let id = request.device_id().as_str();
    if !claimed.is_empty() && claimed != id {
        return Err(RegistrationError::OtherDevice {
            signed: id.to_owned(),
            claimed: claimed.to_owned(),
        });
    }
    check_age(shared, &request)?;
    check_profile(
        shared,
        id,
        &request.attributes().product,
        request.payloads(),
    )?;
    Ok(request)
}

/// The request's creation time against the server's clock.
fn check_age(shared: &Shared, request: &VerifiedRegistration) -> Result<(), RegistrationError> {
    let id = request.device_id().as_str();
    let now = shared.now().0;
    let made = request.created_at().0;
    let max = shared.limits.registration_max_age.as_secs();
    if made > now.saturating_add(MAX_FUTURE_SKEW_SECS) {
        return Err(RegistrationError::Future {
            device: id.to_owned(),
            ahead: made - now,
        });
    }
    if now.saturating_sub(made) > max {
        return Err(RegistrationError::Stale {
            device: id.to_owned(),
            age: now - made,
            max,
        });
    }
    Ok(())
}
