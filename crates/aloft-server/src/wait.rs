//! `WaitDevice`: a factory station (or an operator) waits until a device
//! confirmed a release, without polling: the call follows the live events
//! of that device (published only once durable) and re-reads its record at
//! each one.
//!
//! Also what a factory token may read: only the devices it registered
//! ([`readable`]). Whether a device exists is not revealed to it either: a
//! device registered by someone else and no device at all get the same
//! refusal.

use std::time::Duration;

use aloft_protocol::{DeviceId, ReleaseId, pb};
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use crate::Shared;
use crate::auth::{Caller, Role};
use crate::store::DeviceRecord;

/// Default and largest wait.
const DEFAULT_WAIT: Duration = Duration::from_secs(600);
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// The device record `caller` may read: any for viewers and above, only
/// its own registrations for a factory token.
pub(crate) fn readable(
    shared: &Shared,
    caller: &Caller,
    id: &DeviceId,
) -> Result<DeviceRecord, Status> {
    let record = shared.store.device(id)?;
    if caller.role == Role::Factory {
        return record
            .filter(|d| d.registered_by == caller.token_id)
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "factory token {} reads only the devices it registered; {id} is not one of them",
                    caller.token_id
                ))
            });
    }
    record.ok_or_else(|| Status::not_found(format!("no device {id}")))
}

/// Whether the wait is over: the device confirmed `release`, or it failed
/// or rolled back on it.
fn settled(d: &DeviceRecord, release: &ReleaseId) -> bool {
    use pb::DeviceStatus as S;
    d.release_id == release.as_str()
        && matches!(
            S::try_from(d.status),
            Ok(S::Updated | S::Failed | S::RolledBack)
        )
}

/// `WaitDevice` (see `proto/aloft/v1/admin.proto`).
pub(crate) async fn wait(
    shared: &Shared,
    caller: &Caller,
    req: pb::WaitDeviceRequest,
) -> Result<DeviceRecord, Status> {
    let id = DeviceId::new(&req.device_id)
        .map_err(|e| Status::invalid_argument(format!("{e}: {:?}", req.device_id)))?;
    let release = ReleaseId::new(&req.release_id)
        .map_err(|e| Status::invalid_argument(format!("{e}: {:?}", req.release_id)))?;
    let timeout = match req.timeout_secs {
        0 => DEFAULT_WAIT,
        n => Duration::from_secs(u64::from(n)).min(MAX_WAIT),
    };
    // Subscribe before the first read, so nothing between them is missed.
    let mut events = shared.tracker.subscribe();
    let mut record = readable(shared, caller, &id)?;
    // A factory token does not learn which releases exist.
    if caller.role != Role::Factory && shared.store.release(&release)?.is_none() {
        return Err(Status::not_found(format!("no release {release}")));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut shutdown = shared.shutdown.clone();
    while !settled(&record, &release) {
        tokio::select! {
            event = tokio::time::timeout_at(deadline, events.recv()) => match event {
                Err(_) => {
                    return Err(Status::deadline_exceeded(format!(
                        "device {id} did not confirm {release} within {} s; it is {} (release {:?})",
                        timeout.as_secs(),
                        status_word(record.status),
                        record.release_id
                    )));
                }
                Ok(Ok(e)) if e.device_id != id.as_str() => continue,
                Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
                Ok(Err(RecvError::Closed)) => {
                    return Err(Status::unavailable("the server is shutting down"));
                }
            },
            _ = crate::stopped(&mut shutdown) => {
                return Err(Status::unavailable("the server is shutting down"));
            }
        }
        record = readable(shared, caller, &id)?;
    }
    Ok(record)
}

fn status_word(status: i32) -> &'static str {
    use pb::DeviceStatus as S;
    match S::try_from(status).unwrap_or(S::Unspecified) {
        S::Unspecified => "unknown",
        S::Registered => "registered",
        S::Idle => "idle",
        S::Offered => "offered",
        S::Installed => "installed",
        S::Updated => "updated",
        S::Failed => "failed",
        S::RolledBack => "rolled back",
        S::Revoked => "revoked",
    }
}
