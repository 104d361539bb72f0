//! Trust for a device's whole life, by time travel (threats 13, 22, 26): a
//! fleet provisioned with a one-year TrustRoot v1 lives three years of
//! clock time (a `ManualClock` on the server, the same manual clock in every
//! agent). Each year the operator rotates the root key, revokes the release
//! key and changes the server's directive key; devices that check in learn
//! each root in their session. One device is offline for the last two
//! rotations (its root expired meanwhile) and catches up the whole chain in
//! one session. At the end every device installs a release signed under the
//! latest keys, reboots into it and confirms it.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aloft_agent::{Agent, AgentConfig, Identity, Outcome, SessionEnd, WallClock};
use aloft_device::Device;
use aloft_protocol::envelope::seal;
use aloft_protocol::keys::Domain;
use aloft_protocol::pb;
use aloft_protocol::pb::admin_service_client::AdminServiceClient;
use aloft_protocol::trust::VerifiedTrustRoot;
use aloft_protocol::{DeviceId, PublicKey, SecretKey, UnixTime};
use aloft_server::clock::{Clock, ManualClock};
use aloft_server::{RunningServer, ServerConfig};
use common::*;
use tonic::transport::{Channel, Endpoint};

const YEAR: u64 = 365 * 86_400;
const DAY: u64 = 86_400;

/// One manual clock for the server and every device.
#[derive(Debug)]
struct Time(AtomicU64);

impl Time {
    fn set(&self, t: u64) {
        self.0.store(t, Ordering::SeqCst);
    }
}

impl WallClock for Time {
    fn now(&self) -> UnixTime {
        UnixTime(self.0.load(Ordering::SeqCst))
    }
}

/// The operator's offline keys of one year.
struct Generation {
    root: SecretKey,
    release: SecretKey,
}

fn sec1(k: &PublicKey) -> Vec<u8> {
    k.to_sec1_compressed().to_vec()
}

struct World {
    server: RunningServer,
    admin: AdminServiceClient<Channel>,
    token: String,
    data: std::path::PathBuf,
    clock: Arc<ManualClock>,
    time: Arc<Time>,
    keys: Generation,
    version: u32,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(t0: u64) -> Self {
        watchdog();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let clock = Arc::new(ManualClock::new(UnixTime(t0)));
        let mut config = ServerConfig::new(&data, "127.0.0.1:0".parse().unwrap());
        config.clock = clock.clone();
        config.limits.next_check_in_secs = 1;
        config.limits.check_in_jitter_secs = 0;
        config.limits.notify_jitter = Duration::ZERO;
        config.limits.rollout_tick = Duration::from_millis(50);
        let server = aloft_server::start(config).await.unwrap();
        let channel = Endpoint::from_shared(format!("http://{}", server.local_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let token = server.admin_token().to_owned();
        let keys = Generation {
            root: SecretKey::generate(),
            release: SecretKey::generate(),
        };
        let v1 = pb::TrustRoot {
            version: 1,
            expires_at: t0 + YEAR,
            root_keys: vec![sec1(&keys.root.public_key())],
            root_threshold: 1,
            release_keys: vec![sec1(&keys.release.public_key())],
            release_threshold: 1,
            server_keys: vec![sec1(&server.server_public_key())],
        };
        let world = Self {
            admin: AdminServiceClient::new(channel),
            server,
            token,
            data,
            clock,
            time: Arc::new(Time(AtomicU64::new(t0))),
            version: 1,
            _dir: dir,
            keys,
        };
        world
            .set_root(seal(&v1, Domain::TrustRoot, &[&world.keys.root]))
            .await;
        world
    }

    fn now(&self) -> u64 {
        self.clock.now().0
    }

    fn travel_to(&self, t: u64) {
        self.clock.set(UnixTime(t));
        self.time.set(t);
    }

    async fn set_root(&self, env: pb::SignedEnvelope) -> pb::ServerInfo {
        self.admin
            .clone()
            .set_trust_root(authed(
                pb::SetTrustRootRequest {
                    trust_root: Some(env),
                },
                &self.token,
            ))
            .await
            .unwrap()
            .into_inner()
    }

    /// The yearly drill: a new root key, a new release key (the old one
    /// revoked: not listed), and the server's next directive key (made in
    /// its data directory first) replacing the current one. Expires a year
    /// from now.
    async fn rotate(&mut self) {
        let next_server = SecretKey::generate();
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(self.data.join("server-key.next"))
                .unwrap();
            f.write_all(&next_server.to_bytes()).unwrap();
        }
        let next = Generation {
            root: SecretKey::generate(),
            release: SecretKey::generate(),
        };
        self.version += 1;
        let tr = pb::TrustRoot {
            version: self.version,
            expires_at: self.now() + YEAR,
            root_keys: vec![sec1(&next.root.public_key())],
            root_threshold: 1,
            release_keys: vec![sec1(&next.release.public_key())],
            release_threshold: 1,
            server_keys: vec![sec1(&next_server.public_key())],
        };
        let env = seal(&tr, Domain::TrustRoot, &[&self.keys.root, &next.root]);
        let info = self.set_root(env).await;
        assert_eq!(
            info.server_public_key,
            sec1(&next_server.public_key()),
            "v{}: the server switched to its next directive key",
            self.version
        );
        self.keys = next;
    }

    async fn device(&self, id: &str) -> pb::DeviceInfo {
        self.admin
            .clone()
            .get_device(authed(
                pb::GetDeviceRequest {
                    device_id: id.into(),
                },
                &self.token,
            ))
            .await
            .unwrap()
            .into_inner()
    }

    fn agent_config(&self) -> AgentConfig {
        let mut c = fast_config();
        c.clock = Some(self.time.clone());
        c
    }

    async fn provision(&self, id: &str, factory: &Release) -> (Identity, Device<Flash>) {
        let key = SecretKey::generate();
        self.admin
            .clone()
            .register_device(authed(
                pb::RegisterDeviceRequest {
                    device_id: id.into(),
                    public_key: sec1(&key.public_key()),
                    attributes: Some(pb::DeviceAttributes {
                        product: "sensor".into(),
                        hardware: "rev-a".into(),
                        ..Default::default()
                    }),
                    factory_version: "1.0.0".into(),
                    ..Default::default()
                },
                &self.token,
            ))
            .await
            .unwrap();
        let info = self
            .admin
            .clone()
            .get_server_info(authed(pb::GetServerInfoRequest {}, &self.token))
            .await
            .unwrap()
            .into_inner();
        let trust = VerifiedTrustRoot::trust_on_first_use(
            info.trust_root.as_ref().unwrap(),
            UnixTime(self.now()),
        )
        .unwrap();
        let identity = Identity::new(
            DeviceId::new(id).unwrap(),
            key,
            format!("http://{}", self.server.local_addr()),
            None,
            trust.clone(),
            BTreeMap::from([
                ("product".to_owned(), "sensor".to_owned()),
                ("hardware".to_owned(), "rev-a".to_owned()),
            ]),
        )
        .unwrap();
        let device = Device::provision(
            new_flash(),
            layout(),
            device_config(),
            &trust,
            &factory.image,
            &factory.manifest_bytes(),
        )
        .unwrap();
        (identity, device)
    }
}

/// One device: its identity and flash, booted fresh each time it runs.
struct Fleet {
    devices: Vec<(Identity, Option<Device<Flash>>)>,
}

impl Fleet {
    /// Boots device `i` and runs one session (it learns any new root).
    async fn check_in(&mut self, w: &World, i: usize) {
        let (identity, slot) = &mut self.devices[i];
        let mut device = slot.take().unwrap();
        device.boot().unwrap();
        let mut agent = Agent::new(identity.clone(), device, w.agent_config()).unwrap();
        let end = tokio::time::timeout(
            Duration::from_secs(20),
            agent.check_in(std::future::pending()),
        )
        .await
        .expect("a session within 20 s")
        .unwrap();
        assert!(matches!(end, SessionEnd::CheckInAfter(_)), "{end:?}");
        *slot = Some(agent.into_device());
    }

    /// Runs device `i` until it installed an update, reboots it into the
    /// trial image, confirms it and reports.
    async fn update(&mut self, w: &World, i: usize) {
        let (identity, slot) = &mut self.devices[i];
        let mut device = slot.take().unwrap();
        device.boot().unwrap();
        let mut agent = Agent::new(identity.clone(), device, w.agent_config()).unwrap();
        let outcome =
            tokio::time::timeout(Duration::from_secs(30), agent.run(std::future::pending()))
                .await
                .expect("an install within 30 s")
                .unwrap();
        assert!(
            matches!(outcome, Outcome::RebootRequested { .. }),
            "{outcome:?}"
        );
        let mut device = agent.into_device();
        let booted = device.boot().unwrap();
        assert!(booted.trial);
        let mut agent = Agent::new(identity.clone(), device, w.agent_config()).unwrap();
        agent.confirm().unwrap();
        let end = tokio::time::timeout(
            Duration::from_secs(20),
            agent.check_in(std::future::pending()),
        )
        .await
        .expect("a session within 20 s")
        .unwrap();
        assert!(matches!(end, SessionEnd::CheckInAfter(_)), "{end:?}");
        *slot = Some(agent.into_device());
    }

    fn root_version(&self, i: usize) -> u32 {
        self.devices[i]
            .1
            .as_ref()
            .unwrap()
            .trust_root()
            .unwrap()
            .version()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_years_of_rotations_reach_the_fleet_and_it_still_updates() {
    let t0 = now();
    let mut w = World::start(t0).await;
    let factory = release_signed_at(&w.keys.release, "1.0.0", 1, 3000, t0);
    let mut fleet = Fleet { devices: vec![] };
    for i in 0..4 {
        let (identity, device) = w.provision(&format!("dev-{i}"), &factory).await;
        fleet.devices.push((identity, Some(device)));
    }
    for i in 0..4 {
        fleet.check_in(&w, i).await;
        assert_eq!(w.device(&format!("dev-{i}")).await.trust_root_version, 1);
    }
    let revoked_release_key = w.keys.release.clone();

    // Three yearly drills, ten days before the current root expires.
    for year in 1..=3u64 {
        w.travel_to(t0 + year * YEAR - 10 * DAY);
        w.rotate().await;
        let online: &[usize] = if year == 1 { &[0, 1, 2, 3] } else { &[0, 1, 2] };
        for &i in online {
            fleet.check_in(&w, i).await;
            assert_eq!(fleet.root_version(i), w.version, "dev-{i} in year {year}");
            let info = w.device(&format!("dev-{i}")).await;
            assert_eq!(
                info.trust_root_version, w.version,
                "the server records dev-{i}'s root"
            );
        }
    }
    assert_eq!(w.version, 4);
    assert_eq!(
        fleet.root_version(3),
        2,
        "dev-3 was offline for two rotations"
    );

    // Three years in: dev-3's root (v2) expired long ago.
    w.travel_to(t0 + 3 * YEAR);
    assert!(
        fleet.devices[3]
            .1
            .as_ref()
            .unwrap()
            .trust_status(aloft_device::Clock::At(UnixTime(w.now())))
            .expired
    );
    // A release signed by a revoked release key is refused at upload.
    let stale = release_signed_at(&revoked_release_key, "1.1.0", 1, 2000, w.now());
    let err = common::upload_err(&w.admin, &w.token, &stale).await;
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    // The current release, signed under the newest keys, reaches everyone.
    let current = release_signed_at(&w.keys.release, "1.1.0", 1, 2000, w.now());
    common::upload_ok(&w.admin, &w.token, &current).await;
    w.admin
        .clone()
        .create_rollout(authed(
            pb::CreateRolloutRequest {
                rollout_id: "year-3".into(),
                release_id: current.id.clone(),
                ..Default::default()
            },
            &w.token,
        ))
        .await
        .unwrap();
    for i in 0..4 {
        fleet.update(&w, i).await;
        let info = w.device(&format!("dev-{i}")).await;
        assert_eq!(
            (
                info.status,
                info.firmware_version.as_str(),
                info.trust_root_version
            ),
            (pb::DeviceStatus::Updated as i32, "1.1.0", 4),
            "dev-{i}"
        );
    }
    assert_eq!(
        fleet.root_version(3),
        4,
        "dev-3 caught up v2 -> v4 in one session"
    );
    w.server.shutdown().await.unwrap();
}

/// A device whose root expired with no successor in sight keeps running its
/// firmware and checking in, and says it cannot verify updates: the server
/// records it, and lists it among devices whose root expires within a
/// horizon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_root_expired_keeps_checking_in_and_says_so() {
    let t0 = now();
    let w = World::start(t0).await;
    let factory = release_signed_at(&w.keys.release, "1.0.0", 1, 3000, t0);
    let (identity, device) = w.provision("dev-old", &factory).await;
    let (identity2, device2) = w.provision("dev-fresh", &factory).await;
    let mut fleet = Fleet {
        devices: vec![(identity, Some(device)), (identity2, Some(device2))],
    };
    fleet.check_in(&w, 1).await;
    let list = |within: u64| {
        let admin = w.admin.clone();
        let token = w.token.clone();
        async move {
            admin
                .clone()
                .list_devices(authed(
                    pb::ListDevicesRequest {
                        trust_expires_within_secs: within,
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .unwrap()
                .into_inner()
                .devices
                .into_iter()
                .map(|d| d.device_id)
                .collect::<Vec<_>>()
        }
    };
    // v1 lives a year: outside a 90-day horizon now, inside a 400-day one
    // (only roots a device reported count: dev-old never checked in).
    assert!(list(90 * DAY).await.is_empty());
    assert_eq!(list(400 * DAY).await, ["dev-fresh"]);
    // Eleven months in, both are within 90 days of expiry.
    w.travel_to(t0 + YEAR - 30 * DAY);
    fleet.check_in(&w, 0).await;
    assert_eq!(list(90 * DAY).await, ["dev-fresh", "dev-old"]);
    assert!(list(10 * DAY).await.is_empty(), "outside a 10-day horizon");
    // Past its expiry, the device keeps checking in and says so.
    w.travel_to(t0 + YEAR + DAY);
    fleet.check_in(&w, 0).await;
    let info = w.device("dev-old").await;
    assert!(info.trust_root_expired, "{info:?}");
    assert_eq!(info.trust_root_version, 1);
    assert!(info.last_seen >= t0 + YEAR, "it still checks in");
    assert_eq!(
        list(1).await,
        ["dev-fresh", "dev-old"],
        "an expired root is always listed"
    );
    w.server.shutdown().await.unwrap();
}
