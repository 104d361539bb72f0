//! The seed corpus: real, valid inputs for every target, built from the
//! fixtures (so they verify under the same keys the targets check with).
//! Each seed is checked here to be what it claims (a root that verifies, an
//! offer that is accepted, a session script whose messages open), so a
//! stale fixture fails loudly at generation instead of seeding noise.

use aloft_device::Slot;
use aloft_protocol::keys::Domain;
use aloft_protocol::pb::device_message::Body;
use aloft_protocol::pb::server_to_device::Kind;
use aloft_protocol::prost::Message as _;
use aloft_protocol::trust::{TrustChain, VerifiedTrustRoot};
use aloft_protocol::{UnixTime, device_msg, pb};

use crate::fixtures::{
    CHALLENGE, DEVICE, DEVICE_KEY, HARDWARE, NONCE, NOW, OTHER_DEVICE_KEY, PRODUCT, RELEASE,
    ROOT_V1, Release, SERVER, Stage, directive, fixture, flash, image, key, regions, root_payload,
    sign,
};
use crate::ops::{ChunkHeader, Writer, device_op, server_op};

/// One seed file: `corpus/<target>/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    /// The fuzz target.
    pub target: &'static str,
    /// File name.
    pub name: String,
    /// Contents.
    pub bytes: Vec<u8>,
}

/// Every target, in the order `cargo xtask fuzz --smoke` runs them.
pub const TARGETS: &[&str] = &[
    "envelope",
    "trust_root",
    "trust_chain",
    "manifest",
    "directive",
    "update",
    "device_msg",
    "chunk_decryptor",
    "device_state",
    "device_trailer",
    "device_trust_copy",
    "identity_bundle",
    "release_bundle",
    "selector",
    "stage_spec",
    "device_session",
    "server_session",
];

struct Out(Vec<Seed>);

impl Out {
    fn add(&mut self, target: &'static str, name: &str, bytes: Vec<u8>) {
        assert!(TARGETS.contains(&target), "unknown target {target}");
        self.0.push(Seed {
            target,
            name: name.into(),
            bytes,
        });
    }
}

/// `bytes` without its trailing erased (0xFF) bytes.
fn trimmed(bytes: &[u8]) -> Vec<u8> {
    let end = bytes.iter().rposition(|&b| b != 0xFF).map_or(0, |i| i + 1);
    bytes[..end].to_vec()
}

fn region(stage: Stage, (at, len): (usize, usize)) -> Vec<u8> {
    trimmed(&flash(stage).bytes()[at..at + len])
}

/// The whole seed corpus.
pub fn all() -> Vec<Seed> {
    let mut out = Out(Vec::new());
    signed_objects(&mut out);
    payload(&mut out);
    device(&mut out);
    bundles(&mut out);
    text(&mut out);
    device_session(&mut out);
    server_session(&mut out);
    for t in TARGETS {
        assert!(out.0.iter().any(|s| s.target == *t), "no seed for {t}");
    }
    out.0
}

fn signed_objects(out: &mut Out) {
    let fx = fixture();
    let now = UnixTime(NOW);
    let [v1, v2, v3] = fx.roots.clone();
    for (name, env) in [("root-v1", &v1), ("root-v3", &v3)] {
        out.add("envelope", name, env.encode_to_vec());
    }
    out.add("envelope", "manifest-fw-2", fx.fw2.envelope.encode_to_vec());
    out.add("envelope", "directive-fw-2", fx.directive.encode_to_vec());

    let expired = sign(
        &root_payload(1, NOW - 1, &[ROOT_V1], 1, &RELEASE, &[SERVER]),
        Domain::TrustRoot,
        &[ROOT_V1],
    );
    assert!(VerifiedTrustRoot::reload_stored(&expired).is_ok());
    assert!(VerifiedTrustRoot::trust_on_first_use(&expired, now).is_err());
    for (name, env) in [
        ("v1", &v1),
        ("v2", &v2),
        ("v3-threshold-2", &v3),
        ("v1-expired", &expired),
    ] {
        assert!(VerifiedTrustRoot::reload_stored(env).is_ok(), "{name}");
        out.add("trust_root", name, env.encode_to_vec());
    }
    assert!(fx.v1.rotate(&v2, now).is_ok());

    for (name, chain) in [
        ("v1-v2-v3", vec![v1.clone(), v2.clone(), v3.clone()]),
        ("v1-v2", vec![v1.clone(), v2.clone()]),
        ("v2-v3", vec![v2.clone(), v3.clone()]),
        ("v1", vec![v1.clone()]),
    ] {
        assert!(TrustChain::reload_stored(&chain).is_ok(), "{name}");
        out.add(
            "trust_chain",
            name,
            pb::TrustRootUpdate { chain }.encode_to_vec(),
        );
    }

    let mut old = Release::new("fw-0", 1, image(300, 9), 256);
    old.manifest.expires_at = NOW - 1;
    old.envelope = sign(&old.manifest, Domain::ReleaseManifest, &[RELEASE[1]]);
    for (name, env) in [
        ("fw-1", &fx.fw1.envelope),
        ("fw-2", &fx.fw2.envelope),
        ("fw-0-expired-second-key", &old.envelope),
    ] {
        let verified = aloft_protocol::trust::danger::verify_manifest_ignoring_expiry(&fx.v1, env);
        assert!(verified.is_ok(), "{name}");
        out.add("manifest", name, env.encode_to_vec());
    }

    let mut later = directive(&fx.fw1, NOW + 100, 8);
    later.rollout_id.clear();
    let later = sign(&later, Domain::Directive, &[SERVER]);
    for (name, env) in [("fw-2", &fx.directive), ("fw-1-no-rollout", &later)] {
        assert!(fx.v1.verify_directive(env, now).is_ok(), "{name}");
        out.add("directive", name, env.encode_to_vec());
    }

    let offer = pb::Offer {
        directive: Some(fx.directive.clone()),
        manifest: Some(fx.fw2.envelope.clone()),
    };
    out.add("update", "fw-2", offer.encode_to_vec());
    let not_newer = pb::Offer {
        directive: Some(later),
        manifest: Some(fx.fw1.envelope.clone()),
    };
    out.add("update", "fw-1-not-newer", not_newer.encode_to_vec());

    for (name, m) in device_messages(DEVICE) {
        out.add("device_msg", &name, m.encode_to_vec());
    }
}

/// A hello (seq 1, two reports), a report (seq 2) and a heartbeat (seq 3)
/// from `device` under [`CHALLENGE`], signed by its key.
fn device_messages(device: &str) -> Vec<(String, pb::SignedDeviceMessage)> {
    let number = if device == DEVICE {
        DEVICE_KEY
    } else {
        OTHER_DEVICE_KEY
    };
    let secret = key(number);
    let report = |id: u8| pb::Report {
        report_id: vec![0, 0, 0, id],
        kind: pb::ReportKind::Installed as i32,
        release_id: "fw-2".into(),
        detail: String::new(),
    };
    let state = pb::DeviceState {
        firmware_version: "1.1.0".into(),
        security_version: 1,
        confirmed: true,
        trust_root_version: 1,
        trust_root_expires_at: NOW + 5 * crate::fixtures::YEAR,
        ..Default::default()
    };
    let bodies = [
        (
            "hello",
            Body::Hello(pb::Hello {
                device_nonce: NONCE.to_vec(),
                state: Some(state.clone()),
                reports: vec![report(1), report(2)],
            }),
        ),
        ("report", Body::Report(report(1))),
        (
            "heartbeat",
            Body::Heartbeat(pb::Heartbeat { state: Some(state) }),
        ),
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, (name, body))| {
            let m = pb::DeviceMessage {
                device_id: device.into(),
                challenge: CHALLENGE.to_vec(),
                seq: i as u64 + 1,
                body: Some(body),
            };
            let signed = device_msg::seal(&m, &secret);
            let opened = device_msg::open(&signed, &secret.public_key(), &CHALLENGE, m.seq);
            assert_eq!(opened, Ok(m));
            (format!("{device}-{name}"), signed)
        })
        .collect()
}

fn payload(out: &mut Out) {
    let fx = fixture();
    for (name, release, resume) in [("fw-2", &fx.fw2, 0u32), ("fw-1-resume-2", &fx.fw1, 2)] {
        let p = release.params;
        let mut w = Writer::default();
        ChunkHeader {
            key: *release.key.expose(),
            nonce_prefix: *p.nonce_prefix.as_bytes(),
            image_digest: *p.image_digest.as_bytes(),
            image_len: p.image_len,
            chunk_size: p.chunk_size,
            resume,
        }
        .write(&mut w);
        for i in resume..p.chunk_count() {
            w.frame(release.chunk(i));
        }
        out.add("chunk_decryptor", name, w.out);
    }
}

fn device(out: &mut Out) {
    for (name, stage) in [
        ("provisioned", Stage::Provisioned),
        ("trial-pending", Stage::TrialPending),
        ("confirmed", Stage::Confirmed),
    ] {
        // First byte 1: the target re-validates record CRCs after mutation.
        let mut bytes = vec![1];
        bytes.extend(region(stage, regions::state_log()));
        out.add("device_state", name, bytes);
    }
    for (name, pick, slot) in [("slot-a", 0u8, Slot::A), ("slot-b", 1, Slot::B)] {
        let mut bytes = vec![pick];
        bytes.extend(region(Stage::TrialPending, regions::trailer(slot)));
        assert!(bytes.len() > 100, "a real trailer");
        out.add("device_trailer", name, bytes);
    }
    let copy0 = region(Stage::Provisioned, regions::trust_copy(0));
    assert!(copy0.len() > 100, "a real TrustRoot copy");
    for (name, pick) in [("named-copy", 0u8), ("other-copy", 1)] {
        let mut bytes = vec![pick];
        bytes.extend(&copy0);
        out.add("device_trust_copy", name, bytes);
    }
}

fn bundles(out: &mut Out) {
    let fx = fixture();
    let attributes = [
        ("product", PRODUCT),
        ("hardware", HARDWARE),
        ("region", "eu"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let plain = pb::IdentityBundle {
        device_id: DEVICE.into(),
        private_key: key(DEVICE_KEY).to_bytes().to_vec(),
        server_url: "http://127.0.0.1:7443".into(),
        ca_pem: String::new(),
        trust_root: Some(fx.roots[0].clone()),
        attributes,
    };
    let tls = pb::IdentityBundle {
        server_url: "https://localhost:7443".into(),
        ca_pem: "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2Fub3QgYmUgdXNlZA==\n-----END CERTIFICATE-----\n"
            .into(),
        trust_root: Some(fx.roots[2].clone()),
        ..plain.clone()
    };
    for (name, bundle) in [("http", plain), ("https-v3", tls)] {
        let bytes = bundle.encode_to_vec();
        assert!(aloft_agent::Identity::from_bytes(&bytes).is_ok(), "{name}");
        out.add("identity_bundle", name, bytes);
    }
    for (name, release) in [("fw-1", &fx.fw1), ("fw-2", &fx.fw2)] {
        let bundle = pb::ReleaseBundle {
            manifest: Some(release.envelope.clone()),
            content_key: release.key.expose().to_vec(),
            payload: release.payload.clone(),
        };
        assert!(
            aloft_release::release::check_bundle(&bundle, &fx.v1).is_ok(),
            "{name}"
        );
        out.add("release_bundle", name, bundle.encode_to_vec());
    }
}

fn text(out: &mut Out) {
    let selectors = [
        ("empty", ""),
        (
            "docs-example",
            "product = \"sensor\" and region in (eu, us) and version < 1.1.0 and not tag = lab",
        ),
        (
            "ranges",
            "(version in 1.0.0..1.2.0 or version in 2.0.0..=2.0.1) and test = false",
        ),
        (
            "quoted",
            "tag = \"a b\" or region = \"not\" or id not in (dev-1, \"x\\\"y\")",
        ),
        (
            "nested",
            "not (not (hardware != rev-a and tz = Europe/Berlin))",
        ),
    ];
    for (name, s) in selectors {
        assert!(aloft_rollout::Selector::parse(s).is_ok(), "{name}");
        out.add("selector", name, s.as_bytes().to_vec());
    }
    let specs = [
        ("default", aloft_cli::rollout::spec::DEFAULT_STAGES),
        (
            "overrides",
            "test,canary=1%:soak=4h,10%:min-sample=20,50%:max-failure=2.5%,100%",
        ),
        (
            "soak-compound",
            "5%:soak=1h30m:min-sample=0:max-failure=0%,100%",
        ),
        ("window", "02:00-04:00"),
        ("window-midnight", "22:30-24:00"),
        ("percent", "2.5%"),
    ];
    for (name, s) in specs {
        out.add("stage_spec", name, s.as_bytes().to_vec());
    }
}

fn message(w: &mut Writer, kind: Kind) {
    let bytes = pb::ServerToDevice { kind: Some(kind) }.encode_to_vec();
    w.u8(device_op::MESSAGE).frame(&bytes);
}

fn device_session(out: &mut Out) {
    let fx = fixture();
    let challenge = || {
        Kind::Challenge(pb::Challenge {
            nonce: vec![7; 32],
            server_time: NOW,
        })
    };
    let welcome = || {
        Kind::Welcome(pb::Welcome {
            session_token: vec![9; 16],
            server_time: NOW,
            next_check_in_secs: 300,
        })
    };
    let offer = || {
        Kind::Offer(pb::Offer {
            directive: Some(fx.directive.clone()),
            manifest: Some(fx.fw2.envelope.clone()),
        })
    };
    let ack = |ids: &[u8]| {
        Kind::ReportAck(pb::ReportAck {
            report_ids: ids.iter().map(|&i| vec![0, 0, 0, i]).collect(),
        })
    };

    let mut w = Writer::default();
    message(&mut w, challenge());
    message(&mut w, welcome());
    message(&mut w, ack(&[1]));
    w.u8(device_op::NEXT_TIMER);
    message(
        &mut w,
        Kind::CheckInLater(pb::CheckInLater { after_secs: 60 }),
    );
    out.add("device_session", "check-in-later", w.out);

    let mut w = Writer::default();
    message(&mut w, challenge());
    message(&mut w, welcome());
    message(
        &mut w,
        Kind::TrustRootUpdate(pb::TrustRootUpdate {
            chain: fx.roots[1..].to_vec(),
        }),
    );
    w.u8(device_op::TRUST_UPDATED);
    message(&mut w, offer());
    w.u8(device_op::INSTALLED);
    message(&mut w, ack(&[1, 2, 3]));
    out.add("device_session", "trust-then-install", w.out);

    let mut w = Writer::default();
    message(&mut w, challenge());
    message(&mut w, welcome());
    message(&mut w, offer());
    w.u8(device_op::REFUSED);
    w.u8(device_op::ADVANCE).u32(61_000);
    w.u8(device_op::ADVANCE).u32(400_000);
    out.add("device_session", "refused-then-timeout", w.out);

    let mut w = Writer::default();
    message(&mut w, challenge());
    message(&mut w, welcome());
    message(&mut w, offer());
    w.u8(device_op::INSTALLED);
    w.u8(device_op::CONNECTION_LOST);
    out.add("device_session", "installed-then-lost", w.out);

    let mut w = Writer::default();
    w.u8(device_op::NEXT_TIMER);
    message(&mut w, challenge());
    out.add("device_session", "no-challenge-in-time", w.out);
}

fn server_session(out: &mut Out) {
    let ours = device_messages(DEVICE);
    let theirs = device_messages("dev-2");
    let frame = |w: &mut Writer, op: u8, m: &pb::SignedDeviceMessage| {
        w.u8(op).frame(&m.encode_to_vec());
    };
    let (hello, report, heartbeat) = (&ours[0].1, &ours[1].1, &ours[2].1);

    let mut w = Writer::default();
    w.u8(server_op::CHALLENGE).u64(NOW);
    frame(&mut w, server_op::HELLO, hello);
    w.u8(server_op::WELCOME).u8(1).u8(3);
    w.u8(server_op::OFFER);
    w.u8(server_op::TRUST_UPDATE).u8(1);
    w.u8(server_op::OFFER);
    frame(&mut w, server_op::RECEIVE, report);
    w.u8(server_op::REPORT_ACK);
    frame(&mut w, server_op::RECEIVE, heartbeat);
    w.u8(server_op::CHECK_IN_LATER);
    out.add("server_session", "lagging-device", w.out);

    let mut w = Writer::default();
    w.u8(server_op::CHALLENGE).u64(NOW);
    frame(&mut w, server_op::HELLO, hello);
    w.u8(server_op::WELCOME).u8(1).u8(1);
    frame(&mut w, server_op::RECEIVE, report);
    frame(&mut w, server_op::RECEIVE, report);
    frame(&mut w, server_op::RECEIVE, heartbeat);
    out.add("server_session", "replayed-report", w.out);

    let mut w = Writer::default();
    frame(&mut w, server_op::HELLO, hello);
    w.u8(server_op::CHALLENGE).u64(NOW);
    frame(&mut w, server_op::RECEIVE, report);
    frame(&mut w, server_op::HELLO, &theirs[0].1);
    frame(&mut w, server_op::HELLO, hello);
    w.u8(server_op::OFFER);
    w.u8(server_op::WELCOME).u8(0).u8(0);
    frame(&mut w, server_op::RECEIVE, &theirs[1].1);
    frame(&mut w, server_op::RECEIVE, &ours[1].1);
    out.add("server_session", "out-of-order", w.out);
}
