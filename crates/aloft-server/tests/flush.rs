//! Concurrent flushes: sled 0.34.7's `flush_async` deadlocks when many tasks
//! call it at once (sled #1308/#1241); `SledStore::flush` serializes them.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use aloft_protocol::{DeviceId, pb};
use aloft_server::store::{SledStore, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_flushes_finish_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
    let work = async {
        for round in 0..20 {
            let mut tasks = Vec::new();
            for t in 0..32 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let record = pb::DeviceInfo {
                        device_id: format!("d-{round}-{t}"),
                        ..Default::default()
                    };
                    assert!(store.insert_device(&record).unwrap());
                    store.flush().await.unwrap();
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), work)
        .await
        .expect("concurrent flushes hung");
    drop(store);
    let store = SledStore::open(&dir.path().join("db")).unwrap();
    for round in 0..20 {
        for t in 0..32 {
            let id = DeviceId::new(&format!("d-{round}-{t}")).unwrap();
            assert!(store.device(&id).unwrap().is_some());
        }
    }
}
