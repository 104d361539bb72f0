//! Failure-atomic rollouts: a store write that fails leaves the engine in
//! memory and the store agreeing, and the operation refused. The store is
//! the real sled store behind a wrapper that fails the next rollout write
//! (no mock: every other call goes to sled). Also: a stored rollout whose
//! state is unknown refuses to load (fail closed).
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aloft_protocol::{DeviceId, Digest, ReleaseId, UnixTime, pb};
use aloft_rollout::Report;
use aloft_server::rollouts::{CheckIn, RolloutError, RolloutSettings, Rollouts};
use aloft_server::store::{
    DeviceRecord, DirectiveRecord, FlushFuture, ReleaseRecord, ReportId, RolloutDeviceRecord,
    RolloutRecord, SledStore, Store, StoreError, StoreResult, TokenRecord,
};

/// sled, with the next `save_rollout` failing when armed.
struct Faulty {
    inner: SledStore,
    fail_next: AtomicBool,
}

impl Faulty {
    fn arm(&self) {
        self.fail_next.store(true, Ordering::SeqCst);
    }
}

impl Store for Faulty {
    fn trust_chain(&self) -> StoreResult<Vec<pb::TrustRootRecord>> {
        self.inner.trust_chain()
    }
    fn append_trust_root(&self, v: u32, r: &pb::TrustRootRecord) -> StoreResult<bool> {
        self.inner.append_trust_root(v, r)
    }
    fn insert_device(&self, r: &DeviceRecord) -> StoreResult<bool> {
        self.inner.insert_device(r)
    }
    fn device(&self, id: &DeviceId) -> StoreResult<Option<DeviceRecord>> {
        self.inner.device(id)
    }
    fn update_device(
        &self,
        id: &DeviceId,
        f: &mut dyn FnMut(&mut DeviceRecord) -> bool,
    ) -> StoreResult<Option<DeviceRecord>> {
        self.inner.update_device(id, f)
    }
    fn list_devices(
        &self,
        after: Option<&DeviceId>,
        limit: usize,
        filter: &mut dyn FnMut(&DeviceRecord) -> bool,
    ) -> StoreResult<Vec<DeviceRecord>> {
        self.inner.list_devices(after, limit, filter)
    }
    fn insert_token(&self, r: &TokenRecord) -> StoreResult<()> {
        self.inner.insert_token(r)
    }
    fn token_by_hash(&self, h: &Digest) -> StoreResult<Option<TokenRecord>> {
        self.inner.token_by_hash(h)
    }
    fn revoke_token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        self.inner.revoke_token(id)
    }
    fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.inner.list_tokens()
    }
    fn commit_release(&self, id: &ReleaseId, r: &ReleaseRecord) -> StoreResult<bool> {
        self.inner.commit_release(id, r)
    }
    fn release(&self, id: &ReleaseId) -> StoreResult<Option<ReleaseRecord>> {
        self.inner.release(id)
    }
    fn list_releases(&self) -> StoreResult<Vec<ReleaseRecord>> {
        self.inner.list_releases()
    }
    fn insert_rollout(&self, r: &RolloutRecord) -> StoreResult<bool> {
        self.inner.insert_rollout(r)
    }
    fn list_rollouts(&self) -> StoreResult<Vec<RolloutRecord>> {
        self.inner.list_rollouts()
    }
    fn save_rollout(
        &self,
        rollout: &str,
        record: Option<&RolloutRecord>,
        devices: &[(DeviceId, RolloutDeviceRecord)],
    ) -> StoreResult<()> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Backend("injected write failure".into()));
        }
        self.inner.save_rollout(rollout, record, devices)
    }
    fn rollout_devices(&self, r: &str) -> StoreResult<Vec<(DeviceId, RolloutDeviceRecord)>> {
        self.inner.rollout_devices(r)
    }
    fn append_rollout_sample(&self, r: &str, s: &pb::RolloutSample, d: usize) -> StoreResult<()> {
        self.inner.append_rollout_sample(r, s, d)
    }
    fn rollout_samples(
        &self,
        r: &str,
        since: u64,
        limit: usize,
    ) -> StoreResult<Vec<pb::RolloutSample>> {
        self.inner.rollout_samples(r, since, limit)
    }
    fn rollout_sample_count(&self, r: &str) -> StoreResult<usize> {
        self.inner.rollout_sample_count(r)
    }
    fn put_directive(&self, r: &DirectiveRecord) -> StoreResult<()> {
        self.inner.put_directive(r)
    }
    fn directive(&self, d: &DeviceId, r: &ReleaseId) -> StoreResult<Option<DirectiveRecord>> {
        self.inner.directive(d, r)
    }
    fn report_seen(&self, d: &DeviceId, r: &ReportId) -> StoreResult<bool> {
        self.inner.report_seen(d, r)
    }
    fn mark_report(&self, d: &DeviceId, r: &ReportId) -> StoreResult<()> {
        self.inner.mark_report(d, r)
    }
    fn append_event(&self, e: &mut pb::Event) -> StoreResult<()> {
        self.inner.append_event(e)
    }
    fn device_events(&self, d: &DeviceId, limit: usize) -> StoreResult<Vec<pb::Event>> {
        self.inner.device_events(d, limit)
    }
    fn flush(&self) -> FlushFuture<'_> {
        self.inner.flush()
    }
    fn insert_devices(&self, r: &[DeviceRecord]) -> StoreResult<Vec<DeviceId>> {
        self.inner.insert_devices(r)
    }
    fn put_product(&self, r: &pb::ProductInfo) -> StoreResult<()> {
        self.inner.put_product(r)
    }
    fn product(&self, p: &str) -> StoreResult<Option<pb::ProductInfo>> {
        self.inner.product(p)
    }
    fn list_products(&self) -> StoreResult<Vec<pb::ProductInfo>> {
        self.inner.list_products()
    }
}

const T0: u64 = 1_700_000_000;

fn device(i: usize) -> DeviceRecord {
    DeviceRecord {
        device_id: format!("dev-{i}"),
        attributes: Some(pb::DeviceAttributes {
            product: "sensor".into(),
            hardware: "rev-a".into(),
            ..Default::default()
        }),
        firmware_version: "1.0.0".into(),
        ..Default::default()
    }
}

fn release() -> ReleaseRecord {
    ReleaseRecord {
        info: Some(pb::ReleaseInfo {
            release_id: "sensor-1.1.0".into(),
            product: "sensor".into(),
            hardware: vec!["rev-a".into()],
            version: "1.1.0".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct World {
    store: Arc<Faulty>,
    rollouts: Rollouts,
    _dir: tempfile::TempDir,
}

fn settings() -> RolloutSettings {
    RolloutSettings {
        offer_timeout_secs: 600,
        jitter_secs: 0,
        ..Default::default()
    }
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Faulty {
        inner: SledStore::open(&dir.path().join("db")).unwrap(),
        fail_next: AtomicBool::new(false),
    });
    let rollouts = Rollouts::load(store.clone(), settings()).unwrap();
    rollouts
        .create(
            pb::CreateRolloutRequest {
                rollout_id: "r".into(),
                release_id: "sensor-1.1.0".into(),
                ..Default::default()
            },
            &release(),
            UnixTime(T0),
        )
        .unwrap();
    World {
        store,
        rollouts,
        _dir: dir,
    }
}

impl World {
    /// The rollout as memory has it equals the rollout rebuilt from the store.
    fn agree(&self, what: &str) {
        let reloaded = Rollouts::load(self.store.clone(), settings()).unwrap();
        assert_eq!(
            self.rollouts.get("r").unwrap(),
            reloaded.get("r").unwrap(),
            "{what}"
        );
    }

    /// `op` fails when the store write fails, and leaves nothing changed;
    /// then succeeds without the fault.
    fn refused_then_done<T: std::fmt::Debug>(
        &self,
        what: &str,
        op: impl Fn(&Rollouts) -> Result<T, RolloutError>,
    ) -> T {
        let before = self.rollouts.get("r").unwrap();
        self.store.arm();
        let err = op(&self.rollouts).expect_err(what);
        assert!(matches!(err, RolloutError::Store(_)), "{what}: {err:?}");
        assert_eq!(
            self.rollouts.get("r").unwrap(),
            before,
            "{what}: memory unchanged"
        );
        self.agree(what);
        let done = op(&self.rollouts).unwrap_or_else(|e| panic!("{what}: {e}"));
        self.agree(what);
        done
    }
}

#[test]
fn every_rollout_operation_is_undone_when_its_write_fails() {
    let w = world();
    let id = |i: usize| DeviceId::new(&format!("dev-{i}")).unwrap();
    // A check-in that takes an offer.
    let got = w.refused_then_done("check-in", |r| {
        r.check_in(&device(1), "1.0.0", UnixTime(T0))
    });
    assert!(matches!(got, CheckIn::Offer { .. }), "{got:?}");
    w.rollouts
        .check_in(&device(2), "1.0.0", UnixTime(T0))
        .unwrap();
    // A report.
    w.refused_then_done("report", |r| {
        r.report("r", &id(1), Report::Installed, UnixTime(T0 + 1))
    });
    // Per-device control.
    w.refused_then_done("exclude", |r| {
        r.control_device("r", &id(3), pb::DeviceAction::Exclude, UnixTime(T0 + 2))
    });
    // The tick: dev-2's offer expires.
    let tick = w.refused_then_done("tick", |r| r.tick(UnixTime(T0 + 700)));
    assert!(!tick.events.is_empty());
    // Rollout control.
    w.refused_then_done("pause", |r| {
        r.control("r", pb::RolloutAction::Pause, "test", UnixTime(T0 + 800))
    });
    w.refused_then_done("cancel", |r| {
        r.control("r", pb::RolloutAction::Cancel, "test", UnixTime(T0 + 900))
    });
}

#[test]
fn a_stored_rollout_in_an_unknown_state_refuses_to_load() {
    let w = world();
    let mut record = w
        .store
        .list_rollouts()
        .unwrap()
        .into_iter()
        .find(|r| r.id() == "r")
        .unwrap();
    record.state = 42;
    w.store.save_rollout("r", Some(&record), &[]).unwrap();
    let err = Rollouts::load(w.store.clone(), settings()).err().unwrap();
    assert!(matches!(err, RolloutError::Corrupt(..)), "{err:?}");
    assert!(err.to_string().contains("state"), "{err}");
}
