//! The admin service: operators manage the TrustRoot, devices, releases,
//! rollouts and tokens. Every call checks the caller's role first
//! (see [`crate::auth`]); every write is flushed before it is acknowledged.

use std::sync::Arc;

use aloft_protocol::payload::ChunkDecryptor;
use aloft_protocol::pb::upload_release_request::Part;
use aloft_protocol::pb::{self, admin_service_server::AdminService};
use aloft_protocol::trust::VerifiedTrustRoot;
use aloft_protocol::{ContentKey, DeviceId, Digest, PublicKey, ReleaseId, Version};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::Shared;
use crate::auth::{Role, token_info};
use crate::rollouts::{RolloutEvent, device_view};
use crate::session::CloseReason;
use crate::store::{DeviceRecord, ReleaseRecord, UploadId};
use crate::tracking::{self, set_status};

/// The tonic `AdminService` implementation.
pub(crate) struct AdminSvc {
    shared: Arc<Shared>,
}

impl AdminSvc {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn require<T>(&self, request: &Request<T>, role: Role) -> Result<(), Status> {
        self.shared
            .auth
            .require(request.metadata(), role)
            .map(|_| ())
    }

    async fn flush(&self) -> Result<(), Status> {
        self.shared.store.flush().await.map_err(Status::from)
    }

    fn event(
        &self,
        device: &str,
        release: &str,
        rollout: &str,
        kind: &str,
        detail: String,
    ) -> Result<(), Status> {
        self.shared
            .tracker
            .event(device, release, rollout, kind, detail)
            .map_err(Status::from)
    }

    fn now(&self) -> u64 {
        self.shared.now().0
    }

    fn rollout_events(&self, events: &[RolloutEvent]) -> Result<(), Status> {
        for e in events {
            self.shared.tracker.rollout_event(e)?;
        }
        Ok(())
    }

    /// The stored record as served: with its live connection and its
    /// health under the server's tracking policy.
    fn device_info(&self, mut record: DeviceRecord) -> pb::DeviceInfo {
        record.connected =
            DeviceId::new(&record.device_id).is_ok_and(|id| self.shared.sessions.is_connected(&id));
        let health = self.classify(&record);
        record.recent_rollbacks = health.recent_rollbacks;
        record.suspected_broken = health
            .suspected_broken
            .map_or(pb::BrokenReason::None, |r| r.to_pb()) as i32;
        record
    }

    fn classify(&self, record: &DeviceRecord) -> aloft_rollout::tracking::Classification {
        aloft_rollout::tracking::classify(
            &tracking::history(record),
            aloft_protocol::UnixTime(self.now()),
            &self.shared.limits.tracking,
        )
    }

    fn server_info(&self) -> pb::ServerInfo {
        let trust = self
            .shared
            .trust
            .read()
            .expect("trust lock")
            .as_ref()
            .map(|t| t.envelope.clone());
        pb::ServerInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            server_public_key: self
                .shared
                .keys
                .directive_key
                .public_key()
                .to_sec1_compressed()
                .to_vec(),
            trust_root: trust,
            server_time: self.now(),
        }
    }
}

fn device_id(s: &str) -> Result<DeviceId, Status> {
    DeviceId::new(s)
        .map_err(|e| Status::invalid_argument(format!("{e}: {s:?} (1-64 of A-Z a-z 0-9 . _ : -)")))
}

fn release_id(s: &str) -> Result<ReleaseId, Status> {
    ReleaseId::new(s)
        .map_err(|e| Status::invalid_argument(format!("{e}: {s:?} (1-64 of A-Z a-z 0-9 . _ : -)")))
}

const MAX_ATTR_LEN: usize = 64;
const MAX_TAGS: usize = 32;

fn validate_attributes(
    attrs: Option<pb::DeviceAttributes>,
) -> Result<pb::DeviceAttributes, Status> {
    let attrs = attrs.ok_or_else(|| Status::invalid_argument("device attributes are required"))?;
    if attrs.product.is_empty() || attrs.hardware.is_empty() {
        return Err(Status::invalid_argument(
            "device attributes need a product and a hardware revision",
        ));
    }
    let fields = [
        &attrs.product,
        &attrs.hardware,
        &attrs.region,
        &attrs.time_zone,
    ];
    if fields
        .iter()
        .chain(attrs.tags.iter().collect::<Vec<_>>().iter())
        .any(|f| f.len() > MAX_ATTR_LEN)
    {
        return Err(Status::invalid_argument(format!(
            "device attribute longer than {MAX_ATTR_LEN} bytes"
        )));
    }
    if attrs.tags.len() > MAX_TAGS {
        return Err(Status::invalid_argument(format!(
            "more than {MAX_TAGS} tags"
        )));
    }
    Ok(attrs)
}

/// Removes an upload's reservation when the upload ends, however it ends.
struct UploadGuard<'a> {
    shared: &'a Shared,
    id: String,
}

impl Drop for UploadGuard<'_> {
    fn drop(&mut self) {
        self.shared
            .uploads_in_progress
            .lock()
            .expect("uploads lock")
            .remove(&self.id);
    }
}

/// Receives the payload of an upload into chunk records, checking every
/// chunk decrypts under the content key and the image matches the manifest.
async fn receive_payload(
    shared: &Shared,
    stream: &mut Streaming<pb::UploadReleaseRequest>,
    upload: UploadId,
    key: &ContentKey,
    manifest: &aloft_protocol::trust::VerifiedManifest,
) -> Result<u32, Status> {
    let params = manifest.payload_params();
    let expected = params.payload_len();
    let count = params.chunk_count();
    let mut decryptor = ChunkDecryptor::new(key, params, 0)
        .map_err(|e| Status::invalid_argument(format!("payload refused: {e}")))?;
    let mut hasher = Sha256::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut index = 0u32;
    let mut received = 0u64;
    while let Some(message) = stream.message().await? {
        let bytes = match message.part {
            Some(Part::Payload(bytes)) => bytes,
            Some(Part::Header(_)) => {
                return Err(Status::invalid_argument("upload header sent twice"));
            }
            None => return Err(Status::invalid_argument("upload message without a part")),
        };
        received += bytes.len() as u64;
        if received > expected {
            return Err(Status::invalid_argument(format!(
                "upload sends more than the declared payload_len of {expected} bytes"
            )));
        }
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let chunk_len = params.chunk_len(index).ok_or_else(|| {
                Status::invalid_argument("payload longer than the manifest allows")
            })?;
            let take = (chunk_len - buf.len()).min(rest.len());
            buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if buf.len() == chunk_len {
                shared.store.put_chunk(upload, index, &buf)?;
                let plain = decryptor.decrypt_next(&mut buf).map_err(|e| {
                    Status::invalid_argument(format!(
                        "payload refused: {e} (not encrypted with this content key for this manifest)"
                    ))
                })?;
                hasher.update(plain);
                buf.clear();
                index += 1;
            }
        }
    }
    if received != expected || index != count {
        return Err(Status::invalid_argument(format!(
            "upload ended after {received} of {expected} payload bytes"
        )));
    }
    let digest = Digest::from_bytes(hasher.finalize().into());
    if digest != manifest.image_digest {
        return Err(Status::invalid_argument(
            "decrypted image does not match the manifest's digest",
        ));
    }
    Ok(count)
}

#[tonic::async_trait]
impl AdminService for AdminSvc {
    type WatchEventsStream = ReceiverStream<Result<pb::Event, Status>>;

    async fn get_server_info(
        &self,
        request: Request<pb::GetServerInfoRequest>,
    ) -> Result<Response<pb::ServerInfo>, Status> {
        self.require(&request, Role::Viewer)?;
        Ok(Response::new(self.server_info()))
    }

    async fn set_trust_root(
        &self,
        request: Request<pb::SetTrustRootRequest>,
    ) -> Result<Response<pb::ServerInfo>, Status> {
        self.require(&request, Role::Admin)?;
        let envelope = request
            .into_inner()
            .trust_root
            .ok_or_else(|| Status::invalid_argument("trust_root is required"))?;
        let current = self.shared.trust.read().expect("trust lock").clone();
        let t = self.shared.now();
        let next = match &current {
            None => VerifiedTrustRoot::from_initial(&envelope, t),
            Some(cur) => cur.rotate(&envelope, t),
        }
        .map_err(|e| {
            let how = if current.is_some() {
                "a rotation must be version + 1 and signed by the current root threshold and its own"
            } else {
                "the first TrustRoot must be signed by its own root threshold"
            };
            Status::invalid_argument(format!("TrustRoot refused: {e} ({how})"))
        })?;
        let me = self.shared.keys.directive_key.public_key();
        if !next.server_keys.contains(&me) {
            tracing::warn!(key_id = %me.key_id(), "the new TrustRoot does not list this server's key: devices will refuse its directives");
        }
        self.shared.store.set_trust_root(&next.envelope)?;
        self.event(
            "",
            "",
            "",
            "trust_root",
            format!("version {}", next.version),
        )?;
        self.flush().await?;
        *self.shared.trust.write().expect("trust lock") = Some(next);
        Ok(Response::new(self.server_info()))
    }

    async fn register_device(
        &self,
        request: Request<pb::RegisterDeviceRequest>,
    ) -> Result<Response<pb::DeviceInfo>, Status> {
        self.require(&request, Role::Operator)?;
        let req = request.into_inner();
        let id = device_id(&req.device_id)?;
        let key = PublicKey::from_sec1(&req.public_key)
            .map_err(|e| Status::invalid_argument(format!("device public key: {e}")))?;
        let attrs = validate_attributes(req.attributes)?;
        let version = Version::parse(&req.factory_version).map_err(|_| {
            Status::invalid_argument(format!(
                "factory version {:?} is not MAJOR.MINOR.PATCH",
                req.factory_version
            ))
        })?;
        let record = DeviceRecord {
            device_id: id.as_str().to_owned(),
            public_key: key.to_sec1_compressed().to_vec(),
            attributes: Some(attrs),
            status: pb::DeviceStatus::Registered as i32,
            status_seq: 1,
            firmware_version: version.to_string(),
            registered_at: self.now(),
            ..Default::default()
        };
        if !self.shared.store.insert_device(&record)? {
            return Err(Status::already_exists(format!(
                "device {id} is already registered"
            )));
        }
        self.event(id.as_str(), "", "", "registered", String::new())?;
        self.flush().await?;
        Ok(Response::new(self.device_info(record)))
    }

    async fn get_device(
        &self,
        request: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::DeviceInfo>, Status> {
        self.require(&request, Role::Viewer)?;
        let id = device_id(&request.get_ref().device_id)?;
        let record = self
            .shared
            .store
            .device(&id)?
            .ok_or_else(|| Status::not_found(format!("no device {id}")))?;
        Ok(Response::new(self.device_info(record)))
    }

    async fn list_devices(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        self.require(&request, Role::Viewer)?;
        let req = request.into_inner();
        let selector = aloft_rollout::Selector::parse(&req.selector)
            .map_err(|e| Status::invalid_argument(format!("invalid selector: {e}")))?;
        let after = if req.after.is_empty() {
            None
        } else {
            Some(device_id(&req.after)?)
        };
        let limit = match req.limit {
            0 => 100,
            n => n.min(1000) as usize,
        };
        let cutoff = self.now().saturating_sub(req.stale_secs);
        let devices = self
            .shared
            .store
            .list_devices(after.as_ref(), limit, &mut |d| {
                device_view(d, &d.firmware_version).is_some_and(|v| selector.matches(&v))
                    && (req.stale_secs == 0 || d.last_seen <= cutoff)
                    && (!req.suspected_broken || self.classify(d).suspected_broken.is_some())
            })?;
        let next_after = if devices.len() == limit {
            devices
                .last()
                .map(|d| d.device_id.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let devices = devices.into_iter().map(|d| self.device_info(d)).collect();
        Ok(Response::new(pb::ListDevicesResponse {
            devices,
            next_after,
        }))
    }

    async fn update_device(
        &self,
        request: Request<pb::UpdateDeviceRequest>,
    ) -> Result<Response<pb::DeviceInfo>, Status> {
        self.require(&request, Role::Operator)?;
        let req = request.into_inner();
        let id = device_id(&req.device_id)?;
        let attrs = validate_attributes(req.attributes)?;
        let record = self
            .shared
            .store
            .update_device(&id, &mut |d| {
                d.attributes = Some(attrs.clone());
                true
            })?
            .ok_or_else(|| Status::not_found(format!("no device {id}")))?;
        self.event(id.as_str(), "", "", "updated", String::new())?;
        self.flush().await?;
        Ok(Response::new(self.device_info(record)))
    }

    async fn revoke_device(
        &self,
        request: Request<pb::RevokeDeviceRequest>,
    ) -> Result<Response<pb::DeviceInfo>, Status> {
        self.require(&request, Role::Operator)?;
        let id = device_id(&request.get_ref().device_id)?;
        let now = self.now();
        let record = self
            .shared
            .store
            .update_device(&id, &mut |d| {
                if d.revoked {
                    return false;
                }
                d.revoked = true;
                set_status(d, pb::DeviceStatus::Revoked, now);
                true
            })?
            .ok_or_else(|| Status::not_found(format!("no device {id}")))?;
        self.event(id.as_str(), "", "", "revoked", String::new())?;
        self.flush().await?;
        self.shared.sessions.close(&id, CloseReason::Revoked);
        Ok(Response::new(self.device_info(record)))
    }

    async fn list_device_events(
        &self,
        request: Request<pb::ListDeviceEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        self.require(&request, Role::Viewer)?;
        let req = request.into_inner();
        let id = device_id(&req.device_id)?;
        if self.shared.store.device(&id)?.is_none() {
            return Err(Status::not_found(format!("no device {id}")));
        }
        let limit = match req.limit {
            0 => 100,
            n => n.min(1000) as usize,
        };
        let events = self.shared.store.device_events(&id, limit)?;
        Ok(Response::new(pb::ListEventsResponse { events }))
    }

    async fn upload_release(
        &self,
        request: Request<Streaming<pb::UploadReleaseRequest>>,
    ) -> Result<Response<pb::ReleaseInfo>, Status> {
        self.require(&request, Role::Operator)?;
        let shared = &*self.shared;
        let mut stream = request.into_inner();
        let header = match stream.message().await?.and_then(|m| m.part) {
            Some(Part::Header(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first upload message must be the header",
                ));
            }
        };
        let trust = shared.trust.read().expect("trust lock").clone().ok_or_else(|| {
            Status::failed_precondition(
                "no TrustRoot installed: an admin must install one with SetTrustRoot (e.g. `aloft trust set FILE`) before releases can be uploaded",
            )
        })?;
        let envelope = header
            .manifest
            .ok_or_else(|| Status::invalid_argument("upload header has no manifest"))?;
        let manifest = trust
            .verify_manifest(&envelope, self.shared.now())
            .map_err(|e| Status::invalid_argument(format!("manifest refused: {e}")))?;
        let key = ContentKey::from_slice(&header.content_key)
            .map_err(|_| Status::invalid_argument("content key must be 32 bytes"))?;
        let params = manifest.payload_params();
        let expected = params.payload_len();
        if header.payload_len != expected {
            return Err(Status::invalid_argument(format!(
                "payload_len {} does not match the manifest's payload length {expected}",
                header.payload_len
            )));
        }
        if expected > shared.limits.max_payload_len {
            return Err(Status::invalid_argument(format!(
                "payload of {expected} bytes exceeds this server's limit of {} bytes",
                shared.limits.max_payload_len
            )));
        }
        let id = manifest.release_id.clone();
        if shared.store.release(&id)?.is_some() {
            return Err(Status::already_exists(format!(
                "release {id} already exists"
            )));
        }
        if !shared
            .uploads_in_progress
            .lock()
            .expect("uploads lock")
            .insert(id.as_str().to_owned())
        {
            return Err(Status::already_exists(format!(
                "an upload of release {id} is in progress"
            )));
        }
        let _guard = UploadGuard {
            shared,
            id: id.as_str().to_owned(),
        };
        let upload = shared.store.new_upload()?;
        let chunk_count = match receive_payload(shared, &mut stream, upload, &key, &manifest).await
        {
            Ok(n) => n,
            Err(status) => {
                shared.store.discard_upload(upload)?;
                return Err(status);
            }
        };
        let info = pb::ReleaseInfo {
            release_id: id.as_str().to_owned(),
            product: manifest.product.clone(),
            hardware: manifest.hardware.clone(),
            version: manifest.version.to_string(),
            security_version: manifest.security_version.0,
            image_len: manifest.image_len,
            payload_len: expected,
            manifest_digest: manifest.digest.as_bytes().to_vec(),
            expires_at: manifest.expires_at.0,
            uploaded_at: self.now(),
        };
        let record = ReleaseRecord {
            info: Some(info.clone()),
            manifest: Some(envelope),
            sealed_content_key: shared.keys.kek.seal(&id, &key),
            upload_id: upload.0,
            chunk_count,
        };
        if !shared.store.commit_release(&id, &record)? {
            shared.store.discard_upload(upload)?;
            return Err(Status::already_exists(format!(
                "release {id} already exists"
            )));
        }
        self.event(
            "",
            id.as_str(),
            "",
            "release_uploaded",
            info.version.clone(),
        )?;
        self.flush().await?;
        tracing::info!(release = %id, chunks = chunk_count, bytes = expected, "release stored");
        Ok(Response::new(info))
    }

    async fn list_releases(
        &self,
        request: Request<pb::ListReleasesRequest>,
    ) -> Result<Response<pb::ListReleasesResponse>, Status> {
        self.require(&request, Role::Viewer)?;
        let releases = self
            .shared
            .store
            .list_releases()?
            .into_iter()
            .filter_map(|r| r.info)
            .collect();
        Ok(Response::new(pb::ListReleasesResponse { releases }))
    }

    async fn create_rollout(
        &self,
        request: Request<pb::CreateRolloutRequest>,
    ) -> Result<Response<pb::RolloutInfo>, Status> {
        self.require(&request, Role::Operator)?;
        let req = request.into_inner();
        let release = release_id(&req.release_id)?;
        let record =
            self.shared.store.release(&release)?.ok_or_else(|| {
                Status::not_found(format!("no release {release}: upload it first"))
            })?;
        let info = self
            .shared
            .rollouts
            .create(req, &record, self.shared.now())?;
        self.event(
            "",
            release.as_str(),
            &info.rollout_id,
            "rollout_created",
            String::new(),
        )?;
        self.flush().await?;
        Ok(Response::new(info))
    }

    async fn get_rollout(
        &self,
        request: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<pb::RolloutInfo>, Status> {
        self.require(&request, Role::Viewer)?;
        let info = self.shared.rollouts.get(&request.get_ref().rollout_id)?;
        Ok(Response::new(info))
    }

    async fn get_rollout_history(
        &self,
        request: Request<pb::GetRolloutHistoryRequest>,
    ) -> Result<Response<pb::RolloutHistory>, Status> {
        self.require(&request, Role::Viewer)?;
        let req = request.get_ref();
        let samples = self
            .shared
            .rollouts
            .history(&req.rollout_id, req.since, req.limit)?;
        Ok(Response::new(pb::RolloutHistory { samples }))
    }

    async fn list_rollouts(
        &self,
        request: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        self.require(&request, Role::Viewer)?;
        Ok(Response::new(pb::ListRolloutsResponse {
            rollouts: self.shared.rollouts.list(),
        }))
    }

    async fn control_rollout(
        &self,
        request: Request<pb::ControlRolloutRequest>,
    ) -> Result<Response<pb::RolloutInfo>, Status> {
        self.require(&request, Role::Operator)?;
        let req = request.into_inner();
        let action =
            pb::RolloutAction::try_from(req.action).unwrap_or(pb::RolloutAction::Unspecified);
        let (info, events) = self.shared.rollouts.control(
            &req.rollout_id,
            action,
            &req.reason,
            self.shared.now(),
        )?;
        self.rollout_events(&events)?;
        self.flush().await?;
        Ok(Response::new(info))
    }

    async fn control_rollout_device(
        &self,
        request: Request<pb::ControlRolloutDeviceRequest>,
    ) -> Result<Response<pb::RolloutInfo>, Status> {
        self.require(&request, Role::Operator)?;
        let req = request.into_inner();
        // Unknown rollout first, then unknown device.
        self.shared.rollouts.get(&req.rollout_id)?;
        let id = device_id(&req.device_id)?;
        if self.shared.store.device(&id)?.is_none() {
            return Err(Status::not_found(format!("no device {id}")));
        }
        let action =
            pb::DeviceAction::try_from(req.action).unwrap_or(pb::DeviceAction::Unspecified);
        let (info, event) =
            self.shared
                .rollouts
                .control_device(&req.rollout_id, &id, action, self.shared.now())?;
        self.rollout_events(std::slice::from_ref(&event))?;
        self.flush().await?;
        Ok(Response::new(info))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        self.require(&request, Role::Admin)?;
        let req = request.into_inner();
        let role = Role::from_pb(req.role)
            .ok_or_else(|| Status::invalid_argument("role must be viewer, operator or admin"))?;
        if req.name.is_empty() || req.name.len() > 64 {
            return Err(Status::invalid_argument("token name must be 1 to 64 bytes"));
        }
        let (record, token) = self.shared.auth.create(&req.name, role, self.now())?;
        self.event(
            "",
            "",
            "",
            "token_created",
            format!("{} ({:?})", record.token_id, role),
        )?;
        self.flush().await?;
        Ok(Response::new(pb::CreateTokenResponse {
            info: Some(token_info(&record)),
            token,
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.require(&request, Role::Admin)?;
        let tokens = self
            .shared
            .store
            .list_tokens()?
            .iter()
            .map(token_info)
            .collect();
        Ok(Response::new(pb::ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        self.require(&request, Role::Admin)?;
        let id = request.into_inner().token_id;
        let record = self
            .shared
            .store
            .revoke_token(&id)?
            .ok_or_else(|| Status::not_found(format!("no token {id:?}")))?;
        self.event("", "", "", "token_revoked", id)?;
        self.flush().await?;
        Ok(Response::new(token_info(&record)))
    }

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        self.require(&request, Role::Viewer)?;
        let rollout = request.into_inner().rollout_id;
        let mut events = self.shared.tracker.subscribe();
        let mut shutdown = self.shared.shutdown.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = crate::stopped(&mut shutdown) => return,
                    _ = tx.closed() => return,
                    event = events.recv() => match event {
                        Ok(e) => {
                            if (rollout.is_empty() || e.rollout_id == rollout) && tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            let _ = tx.send(Err(Status::data_loss(format!(
                                "watcher fell behind and missed {n} events; resubscribe and list to catch up"
                            )))).await;
                            return;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
