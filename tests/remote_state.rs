//! Remote state stores against their emulators: the state store suite every store passes
//! (`anycloud_state::conformance`), on S3 (moto), Azure Blob (Azurite) and GCS
//! (fake-gcs-server), each reached through its provider's `state_objects`, as the CLI
//! does for `state:` in anycloud.yaml.
//!
//! Needs moto, Azurite and fake-gcs-server (`scripts/prereqs.sh`).

mod common;

use std::sync::Arc;

use anycloud_provider::objects::ObjectStore;
use anycloud_provider::Provider;
use anycloud_state::{conformance, RemoteStore};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Two stores on one key of `objects` per case, each case on a key of its own.
fn run_suite(objects: Arc<dyn ObjectStore>) {
    let case = std::sync::atomic::AtomicU32::new(0);
    let make = || {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = format!("team/case-{n}/state.json");
        (
            RemoteStore::new(objects.clone(), key.clone()),
            RemoteStore::new(objects.clone(), key),
        )
    };
    runtime().block_on(conformance::run(&make));
}

#[test]
fn s3_state_passes_the_store_suite_on_moto() {
    let moto = common::moto::Moto::start("127.0.0.1");
    let (status, body) = moto.http("PUT", "/team-state", None);
    assert_eq!(status, 200, "{body}");
    for (k, v) in moto.env() {
        std::env::set_var(k, v);
    }
    let keys = tempfile::tempdir().unwrap();
    let aws = anycloud_provider_aws::AwsProvider::new(keys.path().to_path_buf());
    let rt = runtime();
    aws.configure(&serde_json::Value::Null).unwrap();
    let (objects, key) = rt
        .block_on(aws.state_objects(&serde_json::json!({
            "bucket": "team-state", "key": "anycloud/state.json", "region": "us-east-1"
        })))
        .unwrap();
    assert_eq!(key, "anycloud/state.json");
    assert_eq!(
        objects.describe(&key),
        "s3://team-state/anycloud/state.json"
    );
    assert_eq!(rt.block_on(objects.versioned()).unwrap(), Some(false));
    drop(rt);
    run_suite(objects);
}
