//! What every store backend promises (`aloft_server::store::Store` and
//! `ops_store::OpsStore`), checked on sled and on PostgreSQL by the same
//! test bodies; then what only the PostgreSQL backend has to get right
//! (schema versions, a database that goes away).

#[path = "support/pg.rs"]
mod pg;

use std::sync::Arc;

use aloft_protocol::pb;
use aloft_protocol::{DeviceId, Digest, ReleaseId};
use aloft_server::ops_store::{DeliveryRecord, OpsStore, WebhookRecord, WebhookStatsRecord};
use aloft_server::pg_store::PgStore;
use aloft_server::store::{
    DirectiveRecord, ReleaseRecord, ReportId, RolloutDeviceRecord, RolloutRecord, SledStore, Store,
    StoreError, TokenRecord,
};

/// A store under test, with what keeps its data alive and a way to open it again.
struct Backend {
    store: Arc<dyn Both>,
    reopen: Box<dyn Fn() -> Arc<dyn Both>>,
    _guard: Box<dyn std::any::Any>,
}

trait Both: Store + OpsStore {}
impl<T: Store + OpsStore> Both for T {}

fn sled() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store: Arc<dyn Both> = Arc::new(SledStore::open(&path).unwrap());
    Backend {
        store,
        reopen: Box::new(move || Arc::new(SledStore::open(&path).unwrap())),
        _guard: Box::new(dir),
    }
}

fn postgres() -> Backend {
    let db = pg::TestDb::migrated();
    let url = db.url.clone();
    Backend {
        store: Arc::new(PgStore::connect(&url).unwrap()),
        reopen: Box::new(move || Arc::new(PgStore::connect(&url).unwrap())),
        _guard: Box::new(db),
    }
}

/// One test body, run on each backend.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sled() {
                super::$name(super::sled());
            }
            #[test]
            fn postgres() {
                super::$name(super::postgres());
            }
        }
    )*};
}

contract!(
    devices_insert_once_update_atomically_and_page_in_id_order,
    a_batch_of_devices_is_inserted_whole_or_not_at_all,
    concurrent_updates_of_one_device_are_never_lost,
    tokens_are_found_by_hash_and_revoked_by_id,
    releases_rollouts_and_their_devices_survive_a_reopen,
    rollout_samples_sort_by_time_drop_the_oldest_and_stay_per_rollout,
    trust_roots_keep_their_order_and_are_never_replaced,
    directives_reports_events_and_products,
    webhooks_their_outbox_and_the_audit_log,
    device_queries_narrow_by_indexable_terms_and_the_filter_still_decides,
);

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

fn device(name: &str, product: &str) -> pb::DeviceInfo {
    pb::DeviceInfo {
        device_id: name.into(),
        attributes: Some(pb::DeviceAttributes {
            product: product.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn devices_insert_once_update_atomically_and_page_in_id_order(b: Backend) {
    let s = &b.store;
    for n in [3, 1, 2, 5, 4] {
        assert!(
            s.insert_device(&device(&format!("dev-{n}"), "sensor"))
                .unwrap()
        );
    }
    assert!(
        !s.insert_device(&device("dev-1", "other")).unwrap(),
        "a second insert of an id writes nothing"
    );
    assert_eq!(
        s.device(&id("dev-1"))
            .unwrap()
            .unwrap()
            .attributes
            .unwrap()
            .product,
        "sensor"
    );
    assert!(s.device(&id("dev-9")).unwrap().is_none());

    let after = s
        .update_device(&id("dev-2"), &mut |d| {
            d.firmware_version = "1.1.0".into();
            true
        })
        .unwrap()
        .unwrap();
    assert_eq!(after.firmware_version, "1.1.0");
    // A closure that changes nothing returns the record and writes nothing.
    let same = s
        .update_device(&id("dev-2"), &mut |_| false)
        .unwrap()
        .unwrap();
    assert_eq!(same, after);
    assert!(
        s.update_device(&id("dev-9"), &mut |_| true)
            .unwrap()
            .is_none()
    );

    let ids = |v: Vec<pb::DeviceInfo>| v.into_iter().map(|d| d.device_id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_devices(None, 2, &mut |_| true).unwrap()),
        ["dev-1", "dev-2"]
    );
    assert_eq!(
        ids(s
            .list_devices(Some(&id("dev-2")), 10, &mut |_| true)
            .unwrap()),
        ["dev-3", "dev-4", "dev-5"]
    );
    assert_eq!(
        ids(s
            .list_devices(None, 10, &mut |d| d.firmware_version == "1.1.0")
            .unwrap()),
        ["dev-2"]
    );
}

fn attributed(name: &str, region: &str, tags: &[&str], test: bool) -> pb::DeviceInfo {
    let mut d = device(name, "sensor");
    let a = d.attributes.as_mut().unwrap();
    a.region = region.into();
    a.hardware = "rev-a".into();
    a.time_zone = "Europe/Berlin".into();
    a.tags = tags.iter().map(|t| (*t).to_owned()).collect();
    a.test_device = test;
    d.firmware_version = "1.0.0".into();
    d
}

fn device_queries_narrow_by_indexable_terms_and_the_filter_still_decides(b: Backend) {
    use aloft_rollout::Selector;
    use aloft_server::store::DeviceQuery;
    let s = &b.store;
    assert!(
        s.insert_device(&attributed("a-1", "eu", &["lab"], false))
            .unwrap()
    );
    assert!(
        s.insert_device(&attributed("a-2", "us", &["field"], true))
            .unwrap()
    );
    let mut gateway = attributed("a-3", "", &[], false);
    gateway.attributes.as_mut().unwrap().product = "gateway".into();
    assert!(s.insert_device(&gateway).unwrap());
    // Inserted as a batch: its columns are written too.
    let batch: Vec<_> = (0..700)
        .map(|n| {
            attributed(
                &format!("b-{n:03}"),
                if n % 7 == 0 { "eu" } else { "sa" },
                &["field"],
                false,
            )
        })
        .collect();
    assert!(s.insert_devices(&batch).unwrap().is_empty());

    let list = |selector: &str, limit: usize| -> Vec<String> {
        let sel = Selector::parse(selector).unwrap();
        let query = DeviceQuery {
            terms: sel.indexable_terms(),
        };
        s.query_devices(None, limit, &query, &mut |d| {
            aloft_server::rollouts::device_view(d, &d.firmware_version)
                .is_some_and(|v| sel.matches(&v))
        })
        .unwrap()
        .into_iter()
        .map(|d| d.device_id)
        .collect()
    };
    assert_eq!(list("tag = lab", 10), ["a-1"]);
    assert_eq!(list("test = true", 10), ["a-2"]);
    assert_eq!(list("product = gateway", 10), ["a-3"]);
    assert_eq!(
        list(
            "region in (us, eu) and hardware = rev-a and tag = field",
            10
        ),
        [
            "a-2", "b-000", "b-007", "b-014", "b-021", "b-028", "b-035", "b-042", "b-049", "b-056"
        ]
    );
    assert_eq!(list("region = eu", 1000).len(), 1 + 100);
    assert_eq!(
        list("tz = Europe/Berlin and id in (a-1, b-001)", 10),
        ["a-1", "b-001"]
    );
    // Terms narrow; the rest of the selector is still checked.
    assert_eq!(list("region = eu and not tag = field", 10), ["a-1"]);
    assert!(list("product = sensor and product = gateway", 10).is_empty());

    // An update moves a device between answers (its columns follow the record).
    s.update_device(&id("a-1"), &mut |d| {
        d.attributes.as_mut().unwrap().region = "ap".into();
        d.attributes.as_mut().unwrap().tags = vec!["field".into()];
        true
    })
    .unwrap();
    assert!(list("tag = lab", 10).is_empty());
    assert_eq!(list("region = ap", 10), ["a-1"]);
}

fn a_batch_of_devices_is_inserted_whole_or_not_at_all(b: Backend) {
    let s = &b.store;
    assert!(s.insert_device(&device("taken", "sensor")).unwrap());
    let batch: Vec<_> = ["new-1", "taken", "new-2"]
        .iter()
        .map(|n| device(n, "sensor"))
        .collect();
    assert_eq!(s.insert_devices(&batch).unwrap(), [id("taken")]);
    assert!(
        s.device(&id("new-1")).unwrap().is_none(),
        "nothing of a refused batch is written"
    );
    // Large enough to span more than one page of the paging scan.
    let batch: Vec<_> = (0..1200)
        .map(|n| device(&format!("n-{n:05}"), "sensor"))
        .collect();
    assert!(s.insert_devices(&batch).unwrap().is_empty());
    let all = s.list_devices(None, usize::MAX, &mut |_| true).unwrap();
    assert_eq!(all.len(), 1201);
    let odd = s
        .list_devices(None, 700, &mut |d| d.device_id.ends_with('1'))
        .unwrap();
    assert_eq!(odd.len(), 120, "the filter sees every page");
}

fn concurrent_updates_of_one_device_are_never_lost(b: Backend) {
    let s = b.store.clone();
    assert!(s.insert_device(&device("hot", "sensor")).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    s.update_device(&id("hot"), &mut |d| {
                        d.status_seq += 1;
                        true
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.device(&id("hot")).unwrap().unwrap().status_seq, 100);
}

fn token(n: u8) -> TokenRecord {
    TokenRecord {
        token_id: format!("tok-{n}"),
        name: format!("operator {n}"),
        role: pb::Role::Operator as i32,
        hash: Digest::of(&[n]).as_bytes().to_vec(),
        created_at: 1,
        revoked: false,
    }
}

fn tokens_are_found_by_hash_and_revoked_by_id(b: Backend) {
    let s = &b.store;
    s.insert_token(&token(2)).unwrap();
    s.insert_token(&token(1)).unwrap();
    let found = s.token_by_hash(&Digest::of(&[1])).unwrap().unwrap();
    assert_eq!(found.token_id, "tok-1");
    assert!(s.token_by_hash(&Digest::of(&[9])).unwrap().is_none());
    assert!(s.revoke_token("tok-1").unwrap().unwrap().revoked);
    assert!(s.revoke_token("nope").unwrap().is_none());
    assert!(s.token_by_hash(&Digest::of(&[1])).unwrap().unwrap().revoked);
    let ids: Vec<_> = s
        .list_tokens()
        .unwrap()
        .into_iter()
        .map(|t| t.token_id)
        .collect();
    assert_eq!(ids, ["tok-1", "tok-2"]);
}

fn rollout(name: &str, stage: u32) -> RolloutRecord {
    RolloutRecord {
        request: Some(pb::CreateRolloutRequest {
            rollout_id: name.into(),
            release_id: "rel-1".into(),
            ..Default::default()
        }),
        target_version: "1.1.0".into(),
        current_stage: stage,
        ..Default::default()
    }
}

fn placed(outcome: u32) -> RolloutDeviceRecord {
    RolloutDeviceRecord {
        outcome,
        stage: 1,
        ..Default::default()
    }
}

fn releases_rollouts_and_their_devices_survive_a_reopen(b: Backend) {
    let s = &b.store;
    let release = ReleaseRecord {
        upload_id: 7,
        chunk_count: 3,
        sealed_content_key: vec![1, 2, 3],
        ..Default::default()
    };
    let rel = ReleaseId::new("rel-1").unwrap();
    assert!(s.commit_release(&rel, &release).unwrap());
    assert!(!s.commit_release(&rel, &ReleaseRecord::default()).unwrap());

    assert!(s.insert_rollout(&rollout("r1", 0)).unwrap());
    assert!(!s.insert_rollout(&rollout("r1", 5)).unwrap());
    // The rollout and its devices in one write; then one device alone.
    let devices: Vec<_> = (0..1500)
        .map(|n| (id(&format!("d-{n:04}")), placed(0)))
        .collect();
    s.save_rollout("r1", Some(&rollout("r1", 1)), &devices)
        .unwrap();
    s.save_rollout("r1", None, &[(id("d-0007"), placed(3))])
        .unwrap();
    s.save_rollout("r2", Some(&rollout("r2", 0)), &[(id("d-0007"), placed(1))])
        .unwrap();
    tokio_block_on(s.flush()).unwrap();

    let Backend {
        store,
        reopen,
        _guard,
    } = b;
    drop(store);
    let s = reopen();
    assert_eq!(s.release(&rel).unwrap().unwrap(), release);
    assert_eq!(s.list_releases().unwrap(), [release]);
    let rollouts = s.list_rollouts().unwrap();
    assert_eq!(
        rollouts
            .iter()
            .map(|r| (r.id(), r.current_stage))
            .collect::<Vec<_>>(),
        [("r1", 1), ("r2", 0)]
    );
    let r1 = s.rollout_devices("r1").unwrap();
    assert_eq!(r1.len(), 1500);
    assert_eq!(r1[0].0, id("d-0000"));
    assert_eq!(r1[7], (id("d-0007"), placed(3)));
    assert_eq!(
        s.rollout_devices("r2").unwrap(),
        [(id("d-0007"), placed(1))]
    );
    assert!(s.rollout_devices("r3").unwrap().is_empty());
}

fn tokio_block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn sample(time: u64, stage: u32) -> pb::RolloutSample {
    pb::RolloutSample {
        time,
        state: pb::RolloutState::Active as i32,
        current_stage: stage,
        counts: Vec::new(),
    }
}

fn rollout_samples_sort_by_time_drop_the_oldest_and_stay_per_rollout(b: Backend) {
    let s = &b.store;
    for (t, stage) in [(100, 0), (100, 1), (250, 2), (300, 3)] {
        s.append_rollout_sample("r", &sample(t, stage), 0).unwrap();
    }
    s.append_rollout_sample("r2", &sample(50, 9), 0).unwrap();
    let stages =
        |v: Vec<pb::RolloutSample>| -> Vec<u32> { v.iter().map(|s| s.current_stage).collect() };
    assert_eq!(stages(s.rollout_samples("r", 0, 0).unwrap()), [0, 1, 2, 3]);
    assert_eq!(stages(s.rollout_samples("r", 101, 0).unwrap()), [2, 3]);
    assert_eq!(stages(s.rollout_samples("r", 0, 2).unwrap()), [2, 3]);
    assert_eq!(stages(s.rollout_samples("r2", 0, 0).unwrap()), [9]);
    assert_eq!(s.rollout_sample_count("r").unwrap(), 4);
    assert!(s.rollout_samples("nope", 0, 0).unwrap().is_empty());
    s.append_rollout_sample("r", &sample(400, 4), 2).unwrap();
    assert_eq!(stages(s.rollout_samples("r", 0, 0).unwrap()), [2, 3, 4]);
    assert_eq!(s.rollout_sample_count("r").unwrap(), 3);
    assert_eq!(s.rollout_sample_count("r2").unwrap(), 1);
}

fn root(installed_at: u64) -> pb::TrustRootRecord {
    pb::TrustRootRecord {
        trust_root: Some(pb::SignedEnvelope {
            payload: vec![installed_at as u8],
            signatures: Vec::new(),
        }),
        installed_at,
    }
}

fn trust_roots_keep_their_order_and_are_never_replaced(b: Backend) {
    let s = &b.store;
    assert!(s.trust_chain().unwrap().is_empty());
    assert!(s.append_trust_root(2, &root(20)).unwrap());
    assert!(s.append_trust_root(1, &root(10)).unwrap());
    assert!(
        !s.append_trust_root(1, &root(99)).unwrap(),
        "version 1 is taken"
    );
    let at: Vec<_> = s
        .trust_chain()
        .unwrap()
        .iter()
        .map(|r| r.installed_at)
        .collect();
    assert_eq!(at, [10, 20]);
}

fn directives_reports_events_and_products(b: Backend) {
    let s = &b.store;
    let (dev, rel) = (id("dev-1"), ReleaseId::new("rel-1").unwrap());
    assert!(s.directive(&dev, &rel).unwrap().is_none());
    let mut d = DirectiveRecord {
        device_id: "dev-1".into(),
        release_id: "rel-1".into(),
        rollout_id: "r".into(),
        issued_at: 1,
        expires_at: 2,
    };
    s.put_directive(&d).unwrap();
    d.expires_at = 3;
    s.put_directive(&d).unwrap();
    assert_eq!(s.directive(&dev, &rel).unwrap().unwrap().expires_at, 3);
    assert!(s.directive(&id("dev-2"), &rel).unwrap().is_none());

    let report = ReportId::new(b"r-1").unwrap();
    assert!(!s.report_seen(&dev, &report).unwrap());
    s.mark_report(&dev, &report).unwrap();
    s.mark_report(&dev, &report).unwrap();
    assert!(s.report_seen(&dev, &report).unwrap());
    assert!(
        !s.report_seen(&id("dev-2"), &report).unwrap(),
        "reports are per device"
    );

    let mut seqs = Vec::new();
    for (n, who) in ["dev-1", "dev-2", "dev-1", "", "dev-1"].iter().enumerate() {
        let mut e = pb::Event {
            device_id: (*who).into(),
            kind: format!("k{n}"),
            ..Default::default()
        };
        s.append_event(&mut e).unwrap();
        assert!(e.seq > 0, "0 means no event");
        seqs.push(e.seq);
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq increases: {seqs:?}"
    );
    let kinds = |v: Vec<pb::Event>| v.into_iter().map(|e| e.kind).collect::<Vec<_>>();
    assert_eq!(
        kinds(s.device_events(&dev, 10).unwrap()),
        ["k0", "k2", "k4"]
    );
    assert_eq!(kinds(s.device_events(&dev, 2).unwrap()), ["k2", "k4"]);
    let last = s.device_events(&dev, 1).unwrap().pop().unwrap();
    assert_eq!(last.seq, seqs[4], "the stored event carries its seq");

    assert!(s.product("sensor").unwrap().is_none());
    for (name, sensitive) in [("sensor", false), ("gate", true), ("sensor", true)] {
        s.put_product(&pb::ProductInfo {
            product: name.into(),
            sensitive,
            ..Default::default()
        })
        .unwrap();
    }
    assert!(s.product("sensor").unwrap().unwrap().sensitive, "replaced");
    let names: Vec<_> = s
        .list_products()
        .unwrap()
        .into_iter()
        .map(|p| p.product)
        .collect();
    assert_eq!(names, ["gate", "sensor"]);
}

fn webhooks_their_outbox_and_the_audit_log(b: Backend) {
    let s = &b.store;
    let a = s.generate_id().unwrap();
    assert!(s.generate_id().unwrap() > a);
    let hook = |n: &str| WebhookRecord {
        webhook_id: n.into(),
        url: format!("https://example.invalid/{n}"),
        ..Default::default()
    };
    assert!(s.insert_webhook(&hook("wh-b")).unwrap());
    assert!(s.insert_webhook(&hook("wh-a")).unwrap());
    assert!(!s.insert_webhook(&hook("wh-a")).unwrap());
    let ids: Vec<_> = s
        .webhooks()
        .unwrap()
        .into_iter()
        .map(|w| w.webhook_id)
        .collect();
    assert_eq!(ids, ["wh-a", "wh-b"]);

    let delivery = |k: &str| DeliveryRecord {
        idempotency_key: k.into(),
        ..Default::default()
    };
    s.enqueue(&[
        ("wh-a".into(), 20, delivery("second")),
        ("wh-a".into(), 10, delivery("first")),
        ("wh-b".into(), 5, delivery("other")),
    ])
    .unwrap();
    assert_eq!(s.queued("wh-a").unwrap(), 2);
    let (next, d) = s.next_delivery("wh-a").unwrap().unwrap();
    assert_eq!((next, d.idempotency_key.as_str()), (10, "first"));
    let stats = WebhookStatsRecord {
        failed_attempts: 1,
        ..Default::default()
    };
    let mut retried = d.clone();
    retried.attempts = 1;
    s.retry_later("wh-a", 10, &retried, &stats).unwrap();
    assert_eq!(s.next_delivery("wh-a").unwrap().unwrap().1.attempts, 1);
    assert_eq!(s.webhook_stats("wh-a").unwrap().failed_attempts, 1);
    s.finish(
        "wh-a",
        10,
        &WebhookStatsRecord {
            delivered: 1,
            ..stats.clone()
        },
    )
    .unwrap();
    assert_eq!(s.next_delivery("wh-a").unwrap().unwrap().0, 20);
    assert_eq!(s.webhook_stats("wh-a").unwrap().delivered, 1);
    assert_eq!(
        s.webhook_stats("wh-none").unwrap(),
        WebhookStatsRecord::default()
    );

    assert!(s.remove_webhook("wh-a").unwrap().is_some());
    assert!(s.remove_webhook("wh-a").unwrap().is_none());
    assert_eq!(s.queued("wh-a").unwrap(), 0, "its outbox went with it");
    assert_eq!(
        s.webhook_stats("wh-a").unwrap(),
        WebhookStatsRecord::default()
    );
    assert_eq!(
        s.queued("wh-b").unwrap(),
        1,
        "another webhook keeps its queue"
    );

    assert!(s.last_audit().unwrap().is_none());
    for seq in [1u64, 2, 3] {
        s.append_audit(seq, &[seq as u8; 3]).unwrap();
    }
    assert_eq!(
        s.audit_records(1, 10).unwrap(),
        [(2, vec![2; 3]), (3, vec![3; 3])]
    );
    assert_eq!(s.audit_records(0, 1).unwrap(), [(1, vec![1; 3])]);
    assert_eq!(s.last_audit().unwrap(), Some((3, vec![3; 3])));
    let head = |n: u8| pb::SignedEnvelope {
        payload: vec![n],
        signatures: Vec::new(),
    };
    s.put_audit_head(3, &head(3)).unwrap();
    s.put_audit_head(1, &head(1)).unwrap();
    assert_eq!(s.audit_heads().unwrap(), [head(1), head(3)]);
}

// PostgreSQL only.

#[test]
fn a_server_refuses_a_database_without_the_schema_and_migrate_creates_it_once() {
    let db = pg::TestDb::empty();
    match PgStore::connect(&db.url) {
        Err(StoreError::Schema { found: 0, expected }) => {
            assert_eq!(expected, aloft_server::pg_schema::current_version())
        }
        other => panic!("expected a schema refusal, got {other:?}"),
    }
    let first = PgStore::migrate(&db.url).unwrap();
    assert_eq!(first.from, 0);
    assert!(!first.applied.is_empty());
    let again = PgStore::migrate(&db.url).unwrap();
    assert!(again.applied.is_empty(), "a second migrate changes nothing");
    PgStore::connect(&db.url).unwrap();
}

#[test]
fn migration_2_fills_the_attribute_columns_of_devices_stored_before_it() {
    use aloft_protocol::prost::Message as _;
    let db = pg::TestDb::empty();
    PgStore::migrate_to(&db.url, 1).unwrap();
    let record = attributed("old-1", "eu", &["lab"], true).encode_to_vec();
    db.execute(&format!(
        "INSERT INTO devices (device_id, record) VALUES ('old-1', '\\x{}')",
        hex::encode(record)
    ))
    .unwrap();
    let m = PgStore::migrate(&db.url).unwrap();
    assert_eq!(
        (m.from, m.to),
        (1, aloft_server::pg_schema::current_version())
    );
    let s = PgStore::connect(&db.url).unwrap();
    let query = aloft_server::store::DeviceQuery {
        terms: aloft_rollout::Selector::parse("region = eu and tag = lab and test = true")
            .unwrap()
            .indexable_terms(),
    };
    let found = s.query_devices(None, 10, &query, &mut |_| true).unwrap();
    assert_eq!(
        found.len(),
        1,
        "the indexed columns were filled from the record"
    );
}

/// Two handles on one database, as two replicas: the first's remembered
/// bytes of a device (its first compare-and-swap guess) go stale when the
/// second writes, and the first's update must still apply to the fresh
/// record, never over it.
#[test]
fn an_update_after_another_replica_wrote_applies_to_the_fresh_record() {
    let db = pg::TestDb::migrated();
    let one = PgStore::connect(&db.url).unwrap();
    let two = PgStore::connect(&db.url).unwrap();
    assert!(one.insert_device(&device("shared", "sensor")).unwrap());
    one.device(&id("shared")).unwrap().unwrap();
    two.update_device(&id("shared"), &mut |d| {
        d.firmware_version = "2.0.0".into();
        true
    })
    .unwrap();
    let after = one
        .update_device(&id("shared"), &mut |d| {
            d.status_seq += 1;
            true
        })
        .unwrap()
        .unwrap();
    assert_eq!(
        (after.firmware_version.as_str(), after.status_seq),
        ("2.0.0", 1)
    );
    // A closure that changes nothing returns the stored record, not the guess.
    one.device(&id("shared")).unwrap().unwrap();
    two.update_device(&id("shared"), &mut |d| {
        d.firmware_version = "3.0.0".into();
        true
    })
    .unwrap();
    let unchanged = one
        .update_device(&id("shared"), &mut |_| false)
        .unwrap()
        .unwrap();
    assert_eq!(unchanged.firmware_version, "3.0.0");
    assert_eq!(one.device(&id("shared")).unwrap().unwrap().status_seq, 1);
}

#[test]
fn a_database_newer_than_this_server_is_refused_by_the_server_and_by_migrate() {
    let db = pg::TestDb::migrated();
    db.execute("INSERT INTO aloft_schema (version, name, applied_at) VALUES (9999, 'future', 0)")
        .unwrap();
    let refused = |r: Result<(), StoreError>| match r {
        Err(e @ StoreError::Schema { found: 9999, .. }) => e.to_string(),
        other => panic!("expected a schema refusal, got {other:?}"),
    };
    let text = refused(PgStore::connect(&db.url).map(drop));
    assert!(text.contains("aloft-server migrate"), "{text}");
    refused(PgStore::migrate(&db.url).map(drop));
}

#[test]
fn an_unreachable_database_fails_calls_with_unavailable_and_a_bad_url_is_refused() {
    // A port nothing listens on: refused at once, reported as unavailable.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = format!("postgres://postgres@127.0.0.1:{port}/test");
    let started = std::time::Instant::now();
    match PgStore::connect(&url) {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    match PgStore::connect("postgres://host:notaport/db") {
        Err(StoreError::Config(text)) => assert!(text.contains("host"), "{text}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn a_corrupt_record_is_reported_as_corrupt_not_decoded() {
    let db = pg::TestDb::migrated();
    let s = PgStore::connect(&db.url).unwrap();
    db.execute("INSERT INTO devices (device_id, record) VALUES ('bad', '\\xffffffff')")
        .unwrap();
    assert!(matches!(
        s.device(&id("bad")),
        Err(StoreError::Corrupt("device"))
    ));
}

#[test]
fn a_snapshot_of_a_postgres_store_says_to_use_postgres_tools() {
    let db = pg::TestDb::migrated();
    let s = PgStore::connect(&db.url).unwrap();
    match s.snapshot(&mut |_, _, _| Ok(())) {
        Err(StoreError::Unsupported(text)) => assert!(text.contains("pg_dump"), "{text}"),
        other => panic!("expected unsupported, got {other:?}"),
    }
}

#[test]
fn passwords_are_not_shown() {
    assert_eq!(
        aloft_server::pg_store::redact("postgres://aloft:s3cret@db:5432/aloft"),
        "postgres://aloft:***@db:5432/aloft"
    );
    assert_eq!(
        aloft_server::pg_store::redact("postgres://aloft@db/aloft"),
        "postgres://aloft@db/aloft"
    );
    let shown = format!(
        "{:?}",
        aloft_server::StoreBackend::Postgres("postgres://a:pw@h/d".into())
    );
    assert!(!shown.contains("pw"), "{shown}");
}
