//! The admin service: operators manage the TrustRoot, devices, releases,
//! rollouts and tokens. Every call checks the caller's role first
//! (see [`crate::auth`]); every write is flushed before it is acknowledged.

use crate::sync::Recover as _;
use std::sync::Arc;

use aloft_protocol::pb::upload_release_request::Part;
use aloft_protocol::pb::{self, admin_service_server::AdminService};
use aloft_protocol::trust::{TrustChain, VerifiedTrustRoot};
use aloft_protocol::{ContentKey, DeviceId, Digest, ReleaseId};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::Shared;
use crate::auth::{Role, token_info};
use crate::payloads::{PayloadWriter, UploadId};
use crate::rollouts::{RolloutEvent, device_view};
use crate::session::CloseReason;
use crate::store::{DeviceRecord, ReleaseRecord};
use crate::tracking::{self, EventKind, set_status};

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
        self.shared.flush().await.map_err(Status::from)
    }

    fn event(
        &self,
        device: &str,
        release: &str,
        rollout: &str,
        kind: EventKind,
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
            .recover()
            .as_ref()
            .map(|t| t.latest().envelope().clone());
        let keys = &self.shared.keys;
        pb::ServerInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            server_public_key: keys
                .directive_key()
                .public_key()
                .to_sec1_compressed()
                .to_vec(),
            trust_root: trust,
            server_time: self.now(),
            next_server_public_key: keys
                .next_public_key()
                .map(|k| k.to_sec1_compressed().to_vec())
                .unwrap_or_default(),
            caller_role: pb::Role::Unspecified as i32,
            caller_token_id: String::new(),
        }
    }
}

/// Key ids of the release keys, of any root in `chain`, whose signature on
/// `manifest` verifies (each once, at most `MAX_SIGNATURES` examined).
fn release_signers(
    manifest: Option<&pb::SignedEnvelope>,
    chain: Option<&TrustChain>,
) -> Vec<Vec<u8>> {
    let (Some(manifest), Some(chain)) = (manifest, chain) else {
        return Vec::new();
    };
    let mut signers: Vec<Vec<u8>> = Vec::new();
    for sig in manifest
        .signatures
        .iter()
        .take(aloft_protocol::limits::MAX_SIGNATURES)
    {
        let Ok(signature) = aloft_protocol::Signature::from_slice(&sig.signature) else {
            continue;
        };
        let valid = chain
            .roots()
            .iter()
            .flat_map(|root| root.release_keys())
            .find(|key| key.key_id().as_bytes()[..] == sig.key_id[..])
            .is_some_and(|key| {
                key.verify(
                    aloft_protocol::keys::Domain::ReleaseManifest,
                    &manifest.payload,
                    &signature,
                )
                .is_ok()
            });
        if valid && !signers.contains(&sig.key_id) {
            signers.push(sig.key_id.clone());
        }
    }
    signers
}

pub(crate) fn device_id(s: &str) -> Result<DeviceId, Status> {
    DeviceId::new(s)
        .map_err(|e| Status::invalid_argument(format!("{e}: {s:?} (1-64 of A-Z a-z 0-9 . _ : -)")))
}

fn release_id(s: &str) -> Result<ReleaseId, Status> {
    ReleaseId::new(s)
        .map_err(|e| Status::invalid_argument(format!("{e}: {s:?} (1-64 of A-Z a-z 0-9 . _ : -)")))
}

const MAX_ATTR_LEN: usize = 64;
const MAX_TAGS: usize = 32;

pub(crate) fn validate_attributes(
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
            .recover()
            .remove(&self.id);
    }
}

/// Receives the payload of an upload into its object, checking every
/// chunk opens (decrypts under the content key, or proves its place under
/// a signature-only manifest's root) and the image matches the manifest.
/// `key` is `None` exactly for a signature-only release.
async fn receive_payload(
    stream: &mut Streaming<pb::UploadReleaseRequest>,
    writer: &mut PayloadWriter,
    key: Option<&ContentKey>,
    manifest: &aloft_protocol::trust::VerifiedManifest,
) -> Result<u32, Status> {
    let params = manifest.payload_layout();
    let expected = params.payload_len();
    let count = params.chunk_count();
    let mut decryptor = aloft_protocol::signed_chunks::PayloadOpener::new(key, &params)
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
                writer.write(&buf).await?;
                let plain = decryptor.open(&mut buf).map_err(|e| {
                    Status::invalid_argument(format!(
                        "payload refused: {e} ({})",
                        if key.is_some() {
                            "not encrypted with this content key for this manifest"
                        } else {
                            "not the signature-only payload of this manifest"
                        }
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
    if digest != manifest.image_digest() {
        return Err(Status::invalid_argument(
            "decrypted image does not match the manifest's digest",
        ));
    }
    Ok(count)
}

#[tonic::async_trait]
impl AdminService for AdminSvc {
    type WatchEventsStream = ReceiverStream<Result<pb::Event, Status>>;
    type BackupStream = crate::ops_service::BackupStream;

    // Operating the server: see `crate::ops_service` (admin role).
    async fn add_webhook(
        &self,
        request: Request<pb::AddWebhookRequest>,
    ) -> Result<Response<pb::Webhook>, Status> {
        crate::ops_service::add_webhook(&self.shared, request).await
    }

    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        crate::ops_service::list_webhooks(&self.shared, request).await
    }

    async fn remove_webhook(
        &self,
        request: Request<pb::RemoveWebhookRequest>,
    ) -> Result<Response<pb::Webhook>, Status> {
        crate::ops_service::remove_webhook(&self.shared, request).await
    }

    async fn test_webhook(
        &self,
        request: Request<pb::TestWebhookRequest>,
    ) -> Result<Response<pb::TestWebhookResponse>, Status> {
        crate::ops_service::test_webhook(&self.shared, request).await
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        crate::ops_service::list_audit(&self.shared, request).await
    }

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        crate::ops_service::backup(&self.shared, request).await
    }

    async fn get_server_info(
        &self,
        request: Request<pb::GetServerInfoRequest>,
    ) -> Result<Response<pb::ServerInfo>, Status> {
        // A factory station reads the TrustRoot for its device templates.
        let caller = self
            .shared
            .auth
            .require_or_factory(request.metadata(), Role::Viewer)?;
        let mut info = self.server_info();
        info.caller_role = caller.role.to_pb() as i32;
        info.caller_token_id = caller.token_id;
        Ok(Response::new(info))
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
        let t = self.shared.now();
        let mut chain = self.shared.trust.read().recover().clone();
        let next = match &mut chain {
            None => VerifiedTrustRoot::trust_on_first_use(&envelope, t)
                .map(|root| {
                    let first = TrustChain::new(root);
                    chain = Some(first);
                })
                .map_err(|e| {
                    Status::invalid_argument(format!(
                        "TrustRoot refused: {e} (the first TrustRoot must be signed by its own root threshold and not expired)"
                    ))
                }),
            Some(c) => c.push(&envelope, t).map_err(|e| {
                let latest = c.latest();
                Status::invalid_argument(format!(
                    "TrustRoot refused: {e} (a rotation must be version {} and signed by the root threshold of version {} and by its own; the current root may have expired, the new one must not)",
                    latest.version().saturating_add(1),
                    latest.version()
                ))
            }),
        };
        next?;
        let chain = chain.expect("a chain after a successful install");
        let next = chain.latest().clone();
        let record = pb::TrustRootRecord {
            trust_root: Some(next.envelope().clone()),
            installed_at: t.0,
        };
        if !self
            .shared
            .store
            .append_trust_root(next.version(), &record)?
        {
            return Err(Status::aborted(format!(
                "TrustRoot version {} was installed concurrently; read it with GetTrustRootHistory and retry",
                next.version()
            )));
        }
        let switched = self
            .shared
            .keys
            .adopt_listed(&next)
            .map_err(|e| Status::internal(e.to_string()))?;
        let me = self.shared.keys.directive_key().public_key();
        if !next.server_keys().contains(&me) {
            tracing::warn!(key_id = %me.key_id(), "the new TrustRoot does not list this server's directive key: devices will refuse its directives");
        }
        let mut detail = format!("version {}", next.version());
        if switched {
            detail.push_str(&format!(", directive key now {}", me.key_id()));
        }
        self.event("", "", "", EventKind::TrustRoot, detail)?;
        self.flush().await?;
        *self.shared.trust.write().recover() = Some(chain);
        Ok(Response::new(self.server_info()))
    }

    async fn get_trust_root_history(
        &self,
        request: Request<pb::GetTrustRootHistoryRequest>,
    ) -> Result<Response<pb::TrustRootHistory>, Status> {
        self.require(&request, Role::Viewer)?;
        Ok(Response::new(pb::TrustRootHistory {
            roots: self.shared.store.trust_chain()?,
        }))
    }

    async fn register_device(
        &self,
        request: Request<pb::RegisterDeviceRequest>,
    ) -> Result<Response<pb::DeviceInfo>, Status> {
        let caller = self
            .shared
            .auth
            .require_or_factory(request.metadata(), Role::Operator)?;
        let record =
            crate::registration::register(&self.shared, &caller, request.into_inner()).await?;
        Ok(Response::new(self.device_info(record)))
    }

    async fn import_devices(
        &self,
        request: Request<Streaming<pb::ImportDevicesRequest>>,
    ) -> Result<Response<pb::ImportDevicesResponse>, Status> {
        let caller = self
            .shared
            .auth
            .require_or_factory(request.metadata(), Role::Operator)?;
        let response =
            crate::registration::import(&self.shared, &caller, request.into_inner()).await?;
        Ok(Response::new(response))
    }

    async fn wait_device(
        &self,
        request: Request<pb::WaitDeviceRequest>,
    ) -> Result<Response<pb::DeviceInfo>, Status> {
        let caller = self
            .shared
            .auth
            .require_or_factory(request.metadata(), Role::Viewer)?;
        let record = crate::wait::wait(&self.shared, &caller, request.into_inner()).await?;
        Ok(Response::new(self.device_info(record)))
    }

    async fn set_product(
        &self,
        request: Request<pb::SetProductRequest>,
    ) -> Result<Response<pb::ProductInfo>, Status> {
        self.require(&request, Role::Operator)?;
        // Recorded by the audit log like every admin call; no device event.
        let info = crate::products::set(&self.shared, request.into_inner())?;
        self.flush().await?;
        Ok(Response::new(info))
    }

    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        self.require(&request, Role::Viewer)?;
        Ok(Response::new(pb::ListProductsResponse {
            products: self.shared.store.list_products()?,
        }))
    }

    async fn get_device(
        &self,
        request: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::DeviceInfo>, Status> {
        let caller = self
            .shared
            .auth
            .require_or_factory(request.metadata(), Role::Viewer)?;
        let id = device_id(&request.get_ref().device_id)?;
        let record = crate::wait::readable(&self.shared, &caller, &id)?;
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
        let query = crate::store::DeviceQuery {
            terms: selector.indexable_terms(),
        };
        let cutoff = self.now().saturating_sub(req.stale_secs);
        let trust_horizon = self.now().saturating_add(req.trust_expires_within_secs);
        let devices = self
            .shared
            .store
            .query_devices(after.as_ref(), limit, &query, &mut |d| {
                device_view(d, &d.firmware_version).is_some_and(|v| selector.matches(&v))
                    && (req.stale_secs == 0 || d.last_seen <= cutoff)
                    && (!req.suspected_broken || self.classify(d).suspected_broken.is_some())
                    && (req.trust_expires_within_secs == 0
                        || d.trust_root_expired
                        || (d.trust_root_version != 0 && d.trust_root_expires_at <= trust_horizon))
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
        self.event(id.as_str(), "", "", EventKind::Updated, String::new())?;
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
        self.event(id.as_str(), "", "", EventKind::Revoked, String::new())?;
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
        let trust = shared
            .trust
            .read()
            .recover()
            .as_ref()
            .map(|c| c.latest().clone())
            .ok_or_else(|| {
                Status::failed_precondition(
                    "no TrustRoot installed: an admin must install one with SetTrustRoot (e.g. `aloft trust-root set FILE`) before releases can be uploaded",
                )
            })?;
        let envelope = header
            .manifest
            .ok_or_else(|| Status::invalid_argument("upload header has no manifest"))?;
        let manifest = trust
            .verify_manifest(&envelope, self.shared.now())
            .map_err(|e| Status::invalid_argument(format!("manifest refused: {e}")))?;
        crate::products::check_release(shared, manifest.product(), manifest.payload_encoding())?;
        let key = match (manifest.is_signature_only(), header.content_key.is_empty()) {
            (true, true) => None,
            (true, false) => {
                return Err(Status::invalid_argument(
                    "a signature-only release has no content key: send none",
                ));
            }
            (false, _) => Some(
                ContentKey::from_slice(&header.content_key)
                    .map_err(|_| Status::invalid_argument("content key must be 32 bytes"))?,
            ),
        };
        let expected = manifest.payload_layout().payload_len();
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
        let id = manifest.release_id().clone();
        if shared.store.release(&id)?.is_some() {
            return Err(Status::already_exists(format!(
                "release {id} already exists"
            )));
        }
        if !shared
            .uploads_in_progress
            .lock()
            .recover()
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
        let upload = UploadId::random();
        let mut writer = shared.payloads.create(&id, upload).await?;
        let chunk_count =
            match receive_payload(&mut stream, &mut writer, key.as_ref(), &manifest).await {
                Ok(n) => n,
                Err(status) => {
                    writer.abort().await;
                    return Err(status);
                }
            };
        // The object is complete and durable before its release is
        // published: a release row always has its payload.
        let object = writer.finish().await?;
        crate::payloads::failpoint("upload-before-commit");
        let info = pb::ReleaseInfo {
            release_id: id.as_str().to_owned(),
            product: manifest.product().to_owned(),
            hardware: manifest.hardware().to_vec(),
            version: manifest.version().to_string(),
            security_version: manifest.security_version().0,
            image_len: manifest.image_len(),
            payload_len: expected,
            manifest_digest: manifest.digest().as_bytes().to_vec(),
            expires_at: manifest.expires_at().0,
            payload_encoding: manifest.payload_encoding() as i32,
            uploaded_at: self.now(),
            // Computed when served (ListReleases).
            signer_key_ids: Vec::new(),
        };
        let record = ReleaseRecord {
            info: Some(info.clone()),
            manifest: Some(envelope),
            // A signature-only release has no key to keep.
            sealed_content_key: key
                .as_ref()
                .map(|key| shared.keys.kek.seal(&id, key))
                .unwrap_or_default(),
            upload_id: upload.0,
            chunk_count,
        };
        let committed = match shared.store.commit_release(&id, &record) {
            Ok(c) => c,
            Err(e) => {
                shared.payloads.discard(&object).await;
                return Err(e.into());
            }
        };
        if !committed {
            shared.payloads.discard(&object).await;
            return Err(Status::already_exists(format!(
                "release {id} already exists"
            )));
        }
        self.event(
            "",
            id.as_str(),
            "",
            EventKind::ReleaseUploaded,
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
        let chain = self.shared.trust.read().recover().clone();
        let releases = self
            .shared
            .store
            .list_releases()?
            .into_iter()
            .filter_map(|r| {
                let mut info = r.info?;
                info.signer_key_ids = release_signers(r.manifest.as_ref(), chain.as_ref());
                Some(info)
            })
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
        if let Some(info) = &record.info {
            // The product's declaration may have changed since the upload.
            crate::products::check_release(
                &self.shared,
                &info.product,
                pb::PayloadEncoding::try_from(info.payload_encoding)
                    .unwrap_or(pb::PayloadEncoding::Encrypted),
            )?;
        }
        let (info, superseded) = if req.factory.is_some() {
            self.shared
                .rollouts
                .create_factory(req, &record, self.shared.now())?
        } else {
            let info = self
                .shared
                .rollouts
                .create(req, &record, self.shared.now())?;
            (info, Vec::new())
        };
        self.rollout_events(&superseded)?;
        self.event(
            "",
            release.as_str(),
            &info.rollout_id,
            EventKind::RolloutCreated,
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
        let role = Role::from_pb(req.role).ok_or_else(|| {
            Status::invalid_argument("role must be viewer, operator, admin or factory")
        })?;
        if req.name.is_empty() || req.name.len() > 64 {
            return Err(Status::invalid_argument("token name must be 1 to 64 bytes"));
        }
        let (record, token) = self.shared.auth.create(&req.name, role, self.now())?;
        self.event(
            "",
            "",
            "",
            EventKind::TokenCreated,
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
        self.event("", "", "", EventKind::TokenRevoked, id.clone())?;
        self.flush().await?;
        // Streams the token opened end now, not at their next call.
        self.shared.auth.revoked(&id);
        Ok(Response::new(token_info(&record)))
    }

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let caller = self.shared.auth.require(request.metadata(), Role::Viewer)?;
        let rollout = request.into_inner().rollout_id;
        let mut events = self.shared.tracker.subscribe();
        let mut revocations = self.shared.auth.revocations();
        let mut shutdown = self.shared.shutdown.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = crate::stopped(&mut shutdown) => return,
                    _ = tx.closed() => return,
                    revoked = revocations.recv() => {
                        // A missed announcement (lagged) may have been ours:
                        // end the stream; a valid token just reconnects.
                        if matches!(&revoked, Ok(id) if *id != caller.token_id) {
                            continue;
                        }
                        let _ = tx.send(Err(Status::unauthenticated(format!(
                            "operator token {} was revoked: this stream is closed",
                            caller.token_id
                        )))).await;
                        return;
                    }
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
