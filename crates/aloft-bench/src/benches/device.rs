//! A lean benchmark device: the device session protocol the agent speaks
//! (TLS pinned to the bench CA, challenge, signed hello, Welcome, offers,
//! downloads), without a flash or an installer, so one bench process can
//! drive thousands of sessions. Messages are signed with `ring` (the same
//! ECDSA P-256 signature over `SHA-256(domain tag || payload)` the device's
//! `p256` makes; the server cannot tell them apart), which keeps the load
//! generator's CPU share small on a shared machine.

use std::net::IpAddr;
use std::time::Duration;

use aloft_protocol::keys::Domain;
use aloft_protocol::pb::device_message::Body;
use aloft_protocol::pb::device_service_client::DeviceServiceClient;
use aloft_protocol::pb::server_to_device::Kind;
use aloft_protocol::prost::Message as _;
use aloft_protocol::{SecretKey, pb};
use anyhow::{Context, anyhow, bail};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

use crate::benches::server::{DeviceCred, FACTORY_VERSION};

/// How long any one protocol step may take.
const STEP: Duration = Duration::from_secs(30);

/// A device's signing key in ring's form.
pub struct Signer {
    id: String,
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Signer {
    /// From a registered device's credentials.
    pub fn new(cred: &DeviceCred) -> anyhow::Result<Self> {
        Self::from_key(&cred.id, &cred.key)
    }

    /// From an id and a key.
    pub fn from_key(id: &str, key: &SecretKey) -> anyhow::Result<Self> {
        let public =
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key().to_sec1_compressed())
                .map_err(|e| anyhow!("device key: {e}"))?;
        let uncompressed = public.to_sec1_point(false);
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.to_bytes(),
            uncompressed.as_bytes(),
            &rng,
        )
        .map_err(|e| anyhow!("ring refused the device key: {e}"))?;
        Ok(Self {
            id: id.to_owned(),
            pair,
            rng,
        })
    }

    /// Device id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encodes and signs `message` in the device-message domain.
    pub fn seal(&self, message: &pb::DeviceMessage) -> anyhow::Result<pb::SignedDeviceMessage> {
        let payload = message.encode_to_vec();
        let tag = Domain::DeviceMessage.tag();
        let mut signed = Vec::with_capacity(tag.len() + payload.len());
        signed.extend_from_slice(tag);
        signed.extend_from_slice(&payload);
        let signature = self
            .pair
            .sign(&self.rng, &signed)
            .map_err(|_| anyhow!("signing failed"))?;
        Ok(pb::SignedDeviceMessage {
            payload,
            signature: signature.as_ref().to_vec(),
        })
    }
}

/// Connects (TCP from `local`, TLS, HTTP/2) eagerly.
pub async fn connect(endpoint: &Endpoint, local: Option<IpAddr>) -> anyhow::Result<Channel> {
    let ep = endpoint.clone().local_address(local);
    tokio::time::timeout(STEP, ep.connect())
        .await
        .map_err(|_| anyhow!("connect timed out"))?
        .map_err(|e| anyhow!("connect: {:#}", anyhow::Error::new(e)))
}

/// An authenticated session.
pub struct Session {
    /// Messages to the server (held: dropping it ends the session).
    _outbound: mpsc::Sender<pb::DeviceToServer>,
    /// Messages from the server.
    pub inbound: Streaming<pb::ServerToDevice>,
    /// The session token from Welcome, hex (the download bearer token).
    pub token: String,
}

async fn next(inbound: &mut Streaming<pb::ServerToDevice>, what: &str) -> anyhow::Result<Kind> {
    let m = tokio::time::timeout(STEP, inbound.message())
        .await
        .map_err(|_| anyhow!("timed out waiting for {what}"))?
        .with_context(|| format!("waiting for {what}"))?
        .with_context(|| format!("the server closed the session before {what}"))?;
    m.kind
        .with_context(|| format!("an empty message instead of {what}"))
}

/// One check-in on `channel`: opens a Session, answers the challenge with a
/// signed hello (running the factory version, confirmed, in slot A) and
/// waits for Welcome.
pub async fn check_in(channel: &Channel, signer: &Signer) -> anyhow::Result<Session> {
    let (tx, rx) = mpsc::channel(4);
    let mut client = DeviceServiceClient::new(channel.clone());
    let mut inbound = tokio::time::timeout(STEP, client.session(ReceiverStream::new(rx)))
        .await
        .map_err(|_| anyhow!("timed out opening the session"))??
        .into_inner();
    let challenge = match next(&mut inbound, "the challenge").await? {
        Kind::Challenge(c) => c.nonce,
        other => bail!("expected a challenge, got {other:?}"),
    };
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| anyhow!("random: {e}"))?;
    let hello = pb::DeviceMessage {
        device_id: signer.id().to_owned(),
        challenge,
        seq: 1,
        body: Some(Body::Hello(pb::Hello {
            device_nonce: nonce.to_vec(),
            state: Some(pb::DeviceState {
                firmware_version: FACTORY_VERSION.into(),
                security_version: 1,
                active_slot: pb::Slot::A.into(),
                confirmed: true,
                pending_release_id: String::new(),
                download_next_chunk: 0,
                trust_root_version: 1,
                ..Default::default()
            }),
            reports: Vec::new(),
        })),
    };
    tx.send(pb::DeviceToServer {
        signed: Some(signer.seal(&hello)?),
    })
    .await
    .map_err(|_| anyhow!("the session closed before the hello"))?;
    let welcome = match next(&mut inbound, "the welcome").await? {
        Kind::Welcome(w) => w,
        other => bail!("expected a welcome, got {other:?}"),
    };
    let token = welcome
        .session_token
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Session {
        _outbound: tx,
        inbound,
        token,
    })
}

impl Session {
    /// Waits for the offer that follows the Welcome; returns its release id.
    pub async fn offer(&mut self) -> anyhow::Result<String> {
        loop {
            match next(&mut self.inbound, "an offer").await? {
                Kind::Offer(offer) => {
                    let manifest = offer.manifest.context("an offer without a manifest")?;
                    let m = pb::ReleaseManifest::decode(manifest.payload.as_slice())
                        .context("the offer's manifest")?;
                    return Ok(m.release_id);
                }
                Kind::ReportAck(_) => {}
                other => bail!("expected an offer, got {other:?}"),
            }
        }
    }

    /// Waits until the server ends the session (or the connection drops).
    pub async fn closed(&mut self) {
        while let Ok(Some(_)) = self.inbound.message().await {}
    }
}

/// Downloads all of `release` with `token` on `channel`; returns the chunk
/// data bytes received.
pub async fn download(channel: &Channel, token: &str, release: &str) -> anyhow::Result<u64> {
    let mut request = tonic::Request::new(pb::DownloadRequest {
        release_id: release.to_owned(),
        start_chunk: 0,
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let mut client = DeviceServiceClient::new(channel.clone());
    let mut stream = tokio::time::timeout(STEP, client.download(request))
        .await
        .map_err(|_| anyhow!("timed out starting the download"))??
        .into_inner();
    let mut bytes = 0u64;
    let mut expected = 0u32;
    while let Some(chunk) = tokio::time::timeout(STEP, stream.message())
        .await
        .map_err(|_| anyhow!("timed out waiting for chunk {expected}"))??
    {
        if chunk.index != expected {
            bail!("chunk {} where {expected} was due", chunk.index);
        }
        expected += 1;
        bytes += chunk.data.len() as u64;
    }
    Ok(bytes)
}
