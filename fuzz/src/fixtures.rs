//! Fixed keys and everything signed with them: a TrustRoot chain v1..v3, two
//! releases, a directive, and flash images of a provisioned device.
//!
//! Key numbers (`SecretKey::from_slice(&[n; 32])`): root 1 (v1), 2 (v2),
//! 3 and 4 (v3, threshold 2); release 11 and 12; server 21 (v1, v2) and 22
//! (v3); device 31; another device 32.

use std::convert::Infallible;
use std::sync::OnceLock;

use aloft_device::sim::SimFlash;
use aloft_device::{Clock, Device, DeviceConfig, Layout, Partition, SessionBinding, Slot};
use aloft_protocol::envelope::seal;
use aloft_protocol::keys::Domain;
use aloft_protocol::payload::{PayloadParams, TAG_LEN, encrypt_payload};
use aloft_protocol::prost::Message as _;
use aloft_protocol::trust::{VerifiedTrustRoot, danger};
use aloft_protocol::{ContentKey, DeviceId, DeviceNonce, Digest, SecretKey, UnixTime, pb, wrap};

/// The fuzzers' "now": 2027-01-15.
pub const NOW: u64 = 1_800_000_000;
/// Seconds in a (365-day) year.
pub const YEAR: u64 = 365 * 86_400;
/// Product of the device and the releases.
pub const PRODUCT: &str = "sensor";
/// Hardware revision of the device.
pub const HARDWARE: &str = "rev-b";
/// The device's id.
pub const DEVICE: &str = "dev-1";
/// The device's session nonce (directives echo it).
pub const NONCE: [u8; 16] = [1; 16];
/// The server's session challenge.
pub const CHALLENGE: [u8; 32] = [0x5a; 32];
/// Root key of v1.
pub const ROOT_V1: u8 = 1;
/// Root key of v2.
pub const ROOT_V2: u8 = 2;
/// Root keys of v3 (threshold 2).
pub const ROOT_V3: [u8; 2] = [3, 4];
/// Release keys (threshold 1 in v1 and v2; v3 keeps only the second).
pub const RELEASE: [u8; 2] = [11, 12];
/// Server key of v1 and v2.
pub const SERVER: u8 = 21;
/// Server key of v3.
pub const SERVER_V3: u8 = 22;
/// The device's key.
pub const DEVICE_KEY: u8 = 31;
/// Another device's key.
pub const OTHER_DEVICE_KEY: u8 = 32;
/// Expiry of releases and directives' roots: far enough that the tools that
/// use the wall clock (`check_bundle`) accept them for years.
pub const RELEASE_EXPIRY: u64 = NOW + 10 * YEAR;

/// The secret key `[n; 32]`.
pub fn key(n: u8) -> SecretKey {
    SecretKey::from_slice(&[n; 32]).expect("a fixed scalar below the group order")
}

/// SEC1 compressed public key of [`key`]`(n)`.
pub fn pubkey(n: u8) -> Vec<u8> {
    key(n).public_key().to_sec1_compressed().to_vec()
}

/// A deterministic "RNG": SHA-256 of a seed and a counter. Only for
/// operations whose randomness is not a secret here (wrapping a fixed key to
/// a fixed device in a fixture).
#[derive(Clone, Debug)]
pub struct DetRng {
    seed: u8,
    counter: u64,
}

impl DetRng {
    /// A stream named by `seed`.
    pub fn new(seed: u8) -> Self {
        Self { seed, counter: 0 }
    }
}

impl rand_core::TryRng for DetRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(32) {
            let mut input = [0u8; 9];
            input[0] = self.seed;
            input[1..].copy_from_slice(&self.counter.to_le_bytes());
            self.counter += 1;
            let block = Digest::of(&input);
            chunk.copy_from_slice(&block.as_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for DetRng {}

/// A TrustRoot payload.
pub fn root_payload(
    version: u32,
    expires_at: u64,
    roots: &[u8],
    root_threshold: u32,
    releases: &[u8],
    servers: &[u8],
) -> pb::TrustRoot {
    pb::TrustRoot {
        version,
        expires_at,
        root_keys: roots.iter().map(|&n| pubkey(n)).collect(),
        root_threshold,
        release_keys: releases.iter().map(|&n| pubkey(n)).collect(),
        release_threshold: 1,
        server_keys: servers.iter().map(|&n| pubkey(n)).collect(),
    }
}

/// Seals `message` in `domain` with the keys numbered `signers`.
pub fn sign<M: aloft_protocol::prost::Message>(
    message: &M,
    domain: Domain,
    signers: &[u8],
) -> pb::SignedEnvelope {
    let keys: Vec<SecretKey> = signers.iter().map(|&n| key(n)).collect();
    let refs: Vec<&SecretKey> = keys.iter().collect();
    seal(message, domain, &refs)
}

/// Deterministic image bytes.
pub fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// A signed and encrypted release.
#[derive(Clone, Debug)]
pub struct Release {
    /// The plaintext image.
    pub image: Vec<u8>,
    /// Its manifest payload.
    pub manifest: pb::ReleaseManifest,
    /// The manifest envelope (release key 11).
    pub envelope: pb::SignedEnvelope,
    /// The content key.
    pub key: ContentKey,
    /// The payload layout.
    pub params: PayloadParams,
    /// The encrypted payload (chunks, each ciphertext then tag).
    pub payload: Vec<u8>,
}

impl Release {
    /// Builds a release of `image`: version `1.SV.0`, security version `sv`.
    pub fn new(name: &str, sv: u32, image: Vec<u8>, chunk_size: u32) -> Self {
        let manifest = pb::ReleaseManifest {
            release_id: name.into(),
            product: PRODUCT.into(),
            hardware: vec!["rev-a".into(), HARDWARE.into()],
            version: format!("1.{sv}.0"),
            security_version: sv,
            image_len: image.len() as u64,
            image_sha256: Digest::of(&image).as_bytes().to_vec(),
            chunk_size,
            nonce_prefix: vec![sv as u8; 7],
            created_at: NOW - 10,
            expires_at: RELEASE_EXPIRY,
            ..Default::default()
        };
        let envelope = sign(&manifest, Domain::ReleaseManifest, &[RELEASE[0]]);
        let key = ContentKey::from_bytes([0x40 | sv as u8; 32]);
        let verified = danger::verify_manifest_ignoring_expiry(&fixture_v1(), &envelope)
            .expect("the fixture release verifies");
        let params = verified.payload_params();
        let payload = encrypt_payload(&key, &params, &image).expect("the fixture encrypts");
        Self {
            image,
            manifest,
            envelope,
            key,
            params,
            payload,
        }
    }

    /// Wire bytes of chunk `i`.
    pub fn chunk(&self, i: u32) -> &[u8] {
        let at = self.params.chunk_offset(i) as usize;
        let len = self.params.chunk_len(i).expect("a chunk of the release");
        &self.payload[at..at + len]
    }

    /// The manifest digest a directive names.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.envelope.payload)
    }
}

/// A directive payload for [`DEVICE`] in the session with [`NONCE`],
/// naming `release`, at `server_time`; the content key is wrapped to
/// [`DEVICE_KEY`] with [`DetRng`] `rng_seed`.
pub fn directive(release: &Release, server_time: u64, rng_seed: u8) -> pb::Directive {
    let id = DeviceId::new(DEVICE).expect("fixture id");
    let wrapped = wrap::wrap_content_key(
        &release.key,
        &key(DEVICE_KEY).public_key(),
        &id,
        &mut DetRng::new(rng_seed),
    );
    pb::Directive {
        device_id: DEVICE.into(),
        device_nonce: NONCE.to_vec(),
        manifest_digest: release.digest().as_bytes().to_vec(),
        content_key: Some(wrapped.to_pb()),
        server_time,
        expires_at: server_time + 600,
        rollout_id: "fw-2-rollout".into(),
        payload_url: String::new(),
    }
}

/// Everything signed once, shared by every iteration.
#[derive(Debug)]
pub struct Fixture {
    /// TrustRoot envelopes v1, v2, v3 (each a successor of the one before).
    pub roots: [pb::SignedEnvelope; 3],
    /// v1, accepted on first use at [`NOW`].
    pub v1: VerifiedTrustRoot,
    /// The factory release `fw-1` (1.1.0, security version 1).
    pub fw1: Release,
    /// The update `fw-2` (1.2.0, security version 2).
    pub fw2: Release,
    /// A directive for `fw-2`, signed by [`SERVER`] at [`NOW`].
    pub directive: pb::SignedEnvelope,
}

fn root_envelopes() -> [pb::SignedEnvelope; 3] {
    let v1 = root_payload(1, NOW + 5 * YEAR, &[ROOT_V1], 1, &RELEASE, &[SERVER]);
    let v2 = root_payload(2, NOW + 6 * YEAR, &[ROOT_V2], 1, &RELEASE, &[SERVER]);
    let v3 = root_payload(3, NOW + 10 * YEAR, &ROOT_V3, 2, &RELEASE[1..], &[SERVER_V3]);
    [
        sign(&v1, Domain::TrustRoot, &[ROOT_V1]),
        sign(&v2, Domain::TrustRoot, &[ROOT_V1, ROOT_V2]),
        sign(&v3, Domain::TrustRoot, &[ROOT_V2, ROOT_V3[0], ROOT_V3[1]]),
    ]
}

fn fixture_v1() -> VerifiedTrustRoot {
    VerifiedTrustRoot::trust_on_first_use(&root_envelopes()[0], UnixTime(NOW))
        .expect("the fixture root verifies")
}

/// The shared fixture (built on first use).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let fw1 = Release::new("fw-1", 1, image(1200, 1), 256);
        let fw2 = Release::new("fw-2", 2, image(2000, 2), 512);
        let directive = sign(&directive(&fw2, NOW, 7), Domain::Directive, &[SERVER]);
        Fixture {
            roots: root_envelopes(),
            v1: fixture_v1(),
            fw1,
            fw2,
            directive,
        }
    })
}

/// The simulated flash: write size 4, 1 KiB sectors.
pub type Sim = SimFlash<4, 1024>;

/// State 8 KiB (two 3 KiB log halves, then two 1 KiB TrustRoot copies),
/// slots of 6 KiB with a 1 KiB manifest trailer.
pub fn layout() -> Layout {
    Layout {
        state: Partition::new(0, 8192, 1024),
        slot_a: Partition::new(8192, 6144, 1024),
        slot_b: Partition::new(14336, 6144, 1024),
        manifest_area: 1024,
        trust_area: 1024,
    }
}

/// The device's compatibility configuration.
pub fn config() -> DeviceConfig {
    DeviceConfig::new(PRODUCT, HARDWARE)
}

/// Where things are in [`layout`]: the state log (both halves), each
/// TrustRoot copy, each slot's trailer, as `(offset, len)`.
pub mod regions {
    use super::*;

    /// Both halves of the state log.
    pub fn state_log() -> (usize, usize) {
        let l = layout();
        let log = l.state.size - 2 * l.trust_len();
        (l.state.offset as usize, log as usize)
    }

    /// TrustRoot copy `copy` (0 or 1).
    pub fn trust_copy(copy: u8) -> (usize, usize) {
        let l = layout();
        let at = l.state.end() - (2 - u32::from(copy)) * l.trust_len();
        (at as usize, l.trust_len() as usize)
    }

    /// `slot`'s manifest trailer.
    pub fn trailer(slot: Slot) -> (usize, usize) {
        let l = layout();
        let len = l.trailer_len(slot);
        ((l.slot(slot).end() - len) as usize, len as usize)
    }
}

/// The flash images the device targets start from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Provisioned with `fw-1` in slot A and booted once.
    Provisioned,
    /// Then `fw-2` installed into slot B: a trial is pending.
    TrialPending,
    /// Then booted into the trial.
    TrialBooted,
    /// Then confirmed (B active, floor 2, a "confirmed" report queued).
    Confirmed,
}

fn build(stage: Stage) -> Sim {
    let fx = fixture();
    let mut dev = Device::provision(
        Sim::uniform(20),
        layout(),
        config(),
        &fx.v1,
        &fx.fw1.image,
        &fx.fw1.envelope.encode_to_vec(),
    )
    .expect("provisioning the fixture");
    dev.boot().expect("first boot");
    if stage == Stage::Provisioned {
        return dev.into_flash();
    }
    install(&mut dev, &fx.fw2, &fx.directive);
    if stage == Stage::TrialPending {
        return dev.into_flash();
    }
    let booted = dev.boot().expect("trial boot");
    assert_eq!(booted.slot, Slot::B);
    if stage == Stage::TrialBooted {
        return dev.into_flash();
    }
    dev.confirm().expect("confirm");
    dev.into_flash()
}

/// Verifies and installs `release` with `directive` on `dev`.
pub fn install(dev: &mut Device<Sim>, release: &Release, directive: &pb::SignedEnvelope) {
    let id = DeviceId::new(DEVICE).expect("fixture id");
    let nonce = DeviceNonce::from_bytes(NONCE);
    let offer = dev
        .verify_offer(
            directive,
            &release.envelope,
            SessionBinding {
                device_id: &id,
                nonce: &nonce,
            },
            Clock::At(UnixTime(NOW)),
        )
        .expect("the fixture offer verifies");
    let mut installer = dev
        .begin_install(&offer, &release.key)
        .expect("begin install");
    let mut buf = vec![0u8; release.params.chunk_size as usize + TAG_LEN];
    for i in installer.next_chunk()..release.params.chunk_count() {
        let chunk = release.chunk(i);
        buf[..chunk.len()].copy_from_slice(chunk);
        installer
            .write_chunk(&mut buf[..chunk.len()])
            .expect("write chunk");
    }
    installer.finish().expect("finish install");
}

/// A copy of the flash at `stage` (each built once).
pub fn flash(stage: Stage) -> Sim {
    static FLASHES: OnceLock<[Sim; 4]> = OnceLock::new();
    let all = FLASHES.get_or_init(|| {
        [
            build(Stage::Provisioned),
            build(Stage::TrialPending),
            build(Stage::TrialBooted),
            build(Stage::Confirmed),
        ]
    });
    all[stage as usize].clone()
}

/// The state record's framing as seen from outside the crate (its encoder
/// is private): where each record sits in a log half and where its CRC-32
/// is, so the `device_state` target can make a mutated record's checksum
/// valid again and fuzz the decoder behind it. The record length is found
/// on a real provisioned flash at first use, so a format change cannot
/// silently make this wrong.
pub mod record {
    use std::sync::OnceLock;

    use super::{Stage, flash, regions};

    /// CRC-32 (IEEE 802.3, reflected; the state record's checksum).
    pub fn crc32(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    /// Encoded record length, CRC included (before padding).
    pub fn raw_len() -> usize {
        static LEN: OnceLock<usize> = OnceLock::new();
        *LEN.get_or_init(|| {
            let sim = flash(Stage::Provisioned);
            let (at, _) = regions::state_log();
            let log = &sim.bytes()[at..];
            (8..1024)
                .find(|&n| crc32(&log[..n - 4]).to_le_bytes() == log[n - 4..n])
                .expect("the first state record ends with its CRC-32")
        })
    }

    /// On-flash length of a record (padded to the write size, 4).
    pub fn stride() -> usize {
        raw_len().div_ceil(4) * 4
    }

    /// Rewrites the CRC of every record slot of both log halves in `log`
    /// that is not blank.
    pub fn fix_crcs(log: &mut [u8]) {
        let (raw, stride) = (raw_len(), stride());
        let half = log.len() / 2;
        for bank in log.chunks_mut(half) {
            for rec in bank.chunks_mut(stride) {
                if rec.len() < raw || rec.iter().all(|&b| b == 0xFF) {
                    continue;
                }
                let crc = crc32(&rec[..raw - 4]);
                rec[raw - 4..raw].copy_from_slice(&crc.to_le_bytes());
            }
        }
    }
}
