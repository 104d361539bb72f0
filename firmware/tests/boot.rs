//! The boot simulator with the real firmware executable in the slots: a good
//! trial image confirms itself; a crash-at-start image, a hang image and an
//! image that fails its health check go back to the old slot after the
//! attempts run out (through the watchdog for the hang).
//!
//! Images are the `aloft-firmware` binary cargo built for these tests,
//! stripped with `strip` when available, restamped per case
//! (`config::restamp`), signed and encrypted here, installed into slot B
//! through aloft-device's installer on a real flash file.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use aloft_device::{Clock, Device, ReportDetail, ReportKind, SessionBinding, Slot};
use aloft_firmware::board::{self, FileFlash};
use aloft_firmware::boot::{self, BootEvent, BootOptions, Outcome};
use aloft_firmware::config::{self, Fault, FirmwareConfig};
use aloft_protocol::envelope;
use aloft_protocol::keys::Domain;
use aloft_protocol::payload::TAG_LEN;
use aloft_protocol::prost::Message as _;
use aloft_protocol::trust::VerifiedTrustRoot;
use aloft_protocol::{DeviceId, DeviceNonce, SecretKey, UnixTime, Version, pb, wrap};

mod common;

use common::{Keys, NOW, Release, firmware_image, release};

struct Rig {
    dir: tempfile::TempDir,
    keys: Keys,
    trust: VerifiedTrustRoot,
    base: Vec<u8>,
}

impl Rig {
    /// A device provisioned with 1.0.0 in slot A.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::new();
        let envelope = keys.trust_root();
        let trust = VerifiedTrustRoot::trust_on_first_use(&envelope, UnixTime(NOW)).unwrap();
        let identity = pb::IdentityBundle {
            device_id: "dev-1".into(),
            private_key: SecretKey::generate().to_bytes().to_vec(),
            // Nothing listens there: the agent keeps backing off.
            server_url: "http://127.0.0.1:9".into(),
            ca_pem: String::new(),
            trust_root: Some(envelope),
            attributes: BTreeMap::from([
                ("product".into(), board::PRODUCT.into()),
                ("hardware".into(), board::HARDWARE.into()),
            ])
            .into_iter()
            .collect(),
        };
        std::fs::write(dir.path().join("identity.pb"), identity.encode_to_vec()).unwrap();
        let base = firmware_image();
        let rig = Self {
            dir,
            keys,
            trust,
            base,
        };
        let factory = rig.release(Version::new(1, 0, 0), Fault::None);
        let flash = FileFlash::create(
            rig.flash(),
            board::flash_len(rig.slot_size()) as usize,
            board::Durability::Sync,
        )
        .unwrap();
        Device::provision(
            flash,
            board::layout(rig.slot_size()),
            rig.config(),
            &rig.trust,
            &factory.image,
            &factory.envelope,
        )
        .unwrap();
        rig
    }

    fn flash(&self) -> PathBuf {
        self.dir.path().join("flash.bin")
    }

    fn identity(&self) -> PathBuf {
        self.dir.path().join("identity.pb")
    }

    /// Whole MiBs with room for the image and its manifest.
    fn slot_size(&self) -> u32 {
        let need = self.base.len() as u32 + aloft_device::DEFAULT_MANIFEST_AREA;
        need.div_ceil(1 << 20) << 20
    }

    fn config(&self) -> aloft_device::DeviceConfig {
        aloft_device::DeviceConfig::new(board::PRODUCT, board::HARDWARE)
    }

    fn release(&self, version: Version, fault: Fault) -> Release {
        let mut image = self.base.clone();
        config::restamp(&mut image, &FirmwareConfig { version, fault }).unwrap();
        release(&self.keys, &self.trust, image, &version.to_string())
    }

    fn open(&self) -> Device<FileFlash> {
        let (flash, layout) = board::open_flash(&self.flash()).unwrap();
        Device::open(flash, layout, self.config()).unwrap()
    }

    /// Installs `rel` into slot B as a pending trial.
    fn install(&self, rel: &Release) {
        let mut dev = self.open();
        // A real directive for this session, signed by the server key.
        let id = DeviceId::new("dev-1").unwrap();
        let nonce = DeviceNonce::from_bytes([1; 16]);
        let device_key = SecretKey::generate();
        let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
        let wrapped = wrap::wrap_content_key(&rel.key, &device_key.public_key(), &id, &mut rng);
        let directive = envelope::seal(
            &pb::Directive {
                device_id: id.to_string(),
                device_nonce: nonce.as_bytes().to_vec(),
                manifest_digest: rel.manifest.digest().as_bytes().to_vec(),
                content_key: Some(wrapped.to_pb()),
                server_time: NOW,
                expires_at: NOW + 600,
                rollout_id: String::new(),
                payload_url: String::new(),
            },
            Domain::Directive,
            &[&self.keys.server],
        );
        let offer = dev
            .verify_offer(
                &directive,
                rel.manifest.envelope(),
                SessionBinding {
                    device_id: &id,
                    nonce: &nonce,
                },
                Clock::At(UnixTime(NOW)),
            )
            .unwrap();
        let mut inst = dev.begin_install(&offer, &rel.key).unwrap();
        let params = rel.manifest.payload_params();
        let mut buf = vec![0u8; params.chunk_size as usize + TAG_LEN];
        for i in 0..params.chunk_count() {
            let off = params.chunk_offset(i) as usize;
            let len = params.chunk_len(i).unwrap();
            buf[..len].copy_from_slice(&rel.payload[off..off + len]);
            inst.write_chunk(&mut buf[..len]).unwrap();
        }
        inst.finish().unwrap();
        assert_eq!(dev.trial(), Some((Slot::B, 3)));
    }

    /// Runs the boot simulator until `until` says stop (or 30 s pass);
    /// returns every event.
    fn boot_until(
        &self,
        watchdog: Duration,
        until: impl Fn(&[BootEvent]) -> bool,
    ) -> Vec<BootEvent> {
        let mut opts = BootOptions::new(self.flash(), self.identity());
        opts.watchdog = watchdog;
        opts.reset_delay = Duration::ZERO;
        let stop = AtomicBool::new(false);
        let start = Instant::now();
        let mut events = Vec::new();
        boot::run(&opts, &stop, |e| {
            events.push(e.clone());
            if until(&events) || start.elapsed() > Duration::from_secs(30) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        eprintln!("{:?} in {:?}", events, start.elapsed());
        events
    }

    /// A faulty trial: three attempts, each ending in `outcome`, then slot A.
    fn assert_reverts(&self, fault: Fault, outcome: Outcome, watchdog: Duration) {
        self.install(&self.release(Version::new(1, 1, 0), fault));
        let events = self.boot_until(watchdog, |ev| {
            matches!(ev.last(), Some(BootEvent::Booted { slot: 'A', .. }))
        });
        let boots: Vec<(char, bool, u8)> = events
            .iter()
            .filter_map(|e| match e {
                BootEvent::Booted {
                    slot,
                    trial,
                    attempts_left,
                    ..
                } => Some((*slot, *trial, *attempts_left)),
                _ => None,
            })
            .collect();
        assert_eq!(
            boots,
            [
                ('B', true, 2),
                ('B', true, 1),
                ('B', true, 0),
                ('A', false, 0)
            ]
        );
        let resets: Vec<Outcome> = events
            .iter()
            .filter_map(|e| match e {
                BootEvent::Reset { outcome } => Some(*outcome),
                _ => None,
            })
            .collect();
        assert_eq!(resets, [outcome; 3]);
        assert!(!events.contains(&BootEvent::Confirmed));
        let dev = self.open();
        assert_eq!(dev.active_slot(), Slot::A);
        assert_eq!(dev.trial(), None);
        let report = dev.reports().last().unwrap();
        assert_eq!(report.kind, ReportKind::RolledBack);
        assert_eq!(report.detail, ReportDetail::AttemptsExhausted);
        assert_eq!(report.release_id.as_str(), "aloft-sample-1.1.0");
    }
}

#[test]
fn factory_image_boots_confirmed() {
    let rig = Rig::new();
    let events = rig.boot_until(Duration::from_secs(5), |ev| {
        ev.iter().any(|e| matches!(e, BootEvent::Started { .. }))
    });
    assert!(matches!(
        &events[0],
        BootEvent::Booted { slot: 'A', trial: false, version, .. } if version == "1.0.0"
    ));
    assert_eq!(
        events[1],
        BootEvent::Started {
            version: "1.0.0".into()
        }
    );
}

#[test]
fn good_trial_image_confirms_itself() {
    let rig = Rig::new();
    rig.install(&rig.release(Version::new(1, 1, 0), Fault::None));
    let events = rig.boot_until(Duration::from_secs(5), |ev| {
        ev.contains(&BootEvent::Confirmed)
    });
    assert!(matches!(
        &events[0],
        BootEvent::Booted { slot: 'B', trial: true, attempts_left: 2, version, .. } if version == "1.1.0"
    ));
    assert!(events.contains(&BootEvent::Started {
        version: "1.1.0".into()
    }));
    let dev = rig.open();
    assert_eq!(dev.active_slot(), Slot::B);
    assert!(dev.is_confirmed());
    assert_eq!(dev.trial(), None);
    assert_eq!(dev.security_floor().0, 1);
    let report = dev.reports().last().unwrap();
    assert_eq!(report.kind, ReportKind::Confirmed);
}

#[test]
fn crash_at_start_reverts_after_the_attempts() {
    Rig::new().assert_reverts(
        Fault::Crash,
        Outcome::Crash(Some(aloft_firmware::watchdog::EXIT_CRASH)),
        Duration::from_secs(5),
    );
}

#[test]
fn hang_is_reset_by_the_watchdog_and_reverts() {
    Rig::new().assert_reverts(Fault::Hang, Outcome::Watchdog, Duration::from_millis(400));
}

#[test]
fn failed_health_check_never_confirms_and_reverts() {
    Rig::new().assert_reverts(Fault::Health, Outcome::HealthFailed, Duration::from_secs(5));
}

#[test]
fn tampered_slot_is_never_started() {
    let rig = Rig::new();
    // Flip one bit of slot A's image (clearing a bit is a valid NOR program).
    let layout = board::layout(rig.slot_size());
    let mut bytes = std::fs::read(rig.flash()).unwrap();
    let at = layout.slot_a.offset as usize + 1000;
    bytes[at] ^= 0x01;
    std::fs::write(rig.flash(), &bytes).unwrap();
    let mut opts = BootOptions::new(rig.flash(), rig.identity());
    opts.reset_delay = Duration::ZERO;
    let stop = AtomicBool::new(false);
    let mut events = Vec::new();
    let err = boot::run(&opts, &stop, |e| {
        events.push(e.clone());
        ControlFlow::Break(())
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            boot::BootError::Device(aloft_device::Error::NoBootableSlot)
        ),
        "{err}"
    );
    assert!(events.is_empty(), "nothing may start: {events:?}");
    assert!(!rig.dir.path().join("flash.slot-a").exists());
}

/// Processes whose executable is `exe`.
fn running(exe: &std::path::Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| std::fs::read_link(e.path().join("exe")).is_ok_and(|p| p == exe))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn aloft_boot_prints_json_and_stops_its_firmware_on_sigterm() {
    use std::io::BufRead as _;
    let rig = Rig::new();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_aloft-boot"))
        .arg("--flash")
        .arg(rig.flash())
        .arg("--identity")
        .arg(rig.identity())
        .args(["--json", "--watchdog-ms", "5000"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    for line in lines.by_ref() {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let done = event["event"] == "confirmed";
        events.push(event);
        if done {
            break;
        }
    }
    assert_eq!(events[0]["event"], "booted");
    assert_eq!(events[0]["slot"], "A");
    assert_eq!(events[0]["version"], "1.0.0");
    let slot_exe = rig.dir.path().join("flash.slot-a");
    assert_eq!(running(&slot_exe).len(), 1, "the firmware runs");

    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "aloft-boot ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(rest.iter().any(|l| l.contains("\"stopped\"")), "{rest:?}");
    assert!(running(&slot_exe).is_empty(), "the firmware was killed");
}

#[test]
fn aloft_boot_exits_non_zero_when_nothing_verifies() {
    let rig = Rig::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aloft-boot"))
        .arg("--flash")
        .arg(rig.dir.path().join("missing.bin"))
        .arg("--identity")
        .arg(rig.identity())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.bin"));
}

/// The first factory boot of a device whose bundle is a template (no key):
/// the boot makes the key into the bundle, writes a registration request
/// the server would accept (signed by that key, the factory image's
/// version), then boots as usual; later boots keep the key and write
/// nothing.
#[test]
fn a_template_makes_its_key_and_request_at_the_first_factory_boot() {
    let rig = Rig::new();
    let mut bundle =
        pb::IdentityBundle::decode(std::fs::read(rig.identity()).unwrap().as_slice()).unwrap();
    bundle.private_key.clear();
    std::fs::write(rig.identity(), bundle.encode_to_vec()).unwrap();
    let started = |ev: &[BootEvent]| ev.iter().any(|e| matches!(e, BootEvent::Started { .. }));

    let events = rig.boot_until(Duration::from_secs(5), started);
    let request_path = rig.dir.path().join("identity.request.json");
    assert_eq!(
        events[0],
        BootEvent::Enrolled {
            device_id: "dev-1".into(),
            request: request_path.display().to_string(),
            key_made: true,
        }
    );
    assert!(
        matches!(&events[1], BootEvent::Booted { boot: 1, slot: 'A', version, .. } if version == "1.0.0"),
        "enrolling counts no boot: {events:?}"
    );
    let stored =
        pb::IdentityBundle::decode(std::fs::read(rig.identity()).unwrap().as_slice()).unwrap();
    assert_eq!(stored.private_key.len(), 32, "the key is in the bundle");
    let key = SecretKey::from_slice(&stored.private_key).unwrap();

    let line = std::fs::read_to_string(&request_path).unwrap();
    let json: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(json["device_id"], "dev-1");
    let signed = pb::SignedRegistration {
        payload: hex::decode(json["payload"].as_str().unwrap()).unwrap(),
        signature: hex::decode(json["signature"].as_str().unwrap()).unwrap(),
    };
    assert!(
        !line.contains(&hex::encode(&stored.private_key)),
        "the private key never leaves the bundle"
    );
    let verified = aloft_protocol::registration::verify(&signed).expect("a valid request");
    assert_eq!(verified.device_id().as_str(), "dev-1");
    assert_eq!(*verified.public_key(), key.public_key());
    assert_eq!(verified.factory_version(), Version::new(1, 0, 0));

    // The next boot has a key: no enrolment, the same key.
    std::fs::remove_file(&request_path).unwrap();
    let events = rig.boot_until(Duration::from_secs(5), started);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, BootEvent::Enrolled { .. })),
        "{events:?}"
    );
    assert!(!request_path.exists());
    let again =
        pb::IdentityBundle::decode(std::fs::read(rig.identity()).unwrap().as_slice()).unwrap();
    assert_eq!(again.private_key, stored.private_key);
}
