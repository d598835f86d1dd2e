//! Remote state stores against their emulators: the state store suite every store passes
//! (`anycloud_state::conformance`), on S3 (moto), Azure Blob (Azurite) and GCS
//! (fake-gcs-server), each reached through its provider's `state_objects`, as the CLI
//! does for `state:` in anycloud.yaml.
//!
//! Needs moto, Azurite and fake-gcs-server (`scripts/prereqs.sh`), and for Azurite
//! `unshare` (util-linux), as root or with user namespaces allowed.

mod common;

// Each is included as the end-to-end tests include it; this file uses part of each.
#[cfg(feature = "azure")]
#[allow(dead_code)]
#[path = "common/azurite.rs"]
mod azurite;
#[cfg(feature = "azure")]
#[path = "../providers/azure/tests/support/contract.rs"]
mod contract;
#[cfg(feature = "gcp")]
#[allow(dead_code)]
#[path = "common/fake_gcs.rs"]
mod fake_gcs;
#[path = "../benches/fixture/s3_requests.rs"]
mod s3_requests;
#[path = "../benches/fixture/sleepy.rs"]
mod sleepy;

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

/// An S3-compatible endpoint that ignores conditional writes (here moto behind a proxy that
/// strips `If-None-Match` and `If-Match`) would let two runs hold the lock at once: it is
/// refused at the first lock, and its lock object does not stay behind.
#[test]
fn s3_state_behind_a_proxy_that_drops_conditions_is_refused_at_first_lock() {
    use anycloud_state::StateStore;
    let moto = common::moto::Moto::start("127.0.0.1");
    let (status, body) = moto.http("PUT", "/team-state", None);
    assert_eq!(status, 200, "{body}");
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flaky_proxy.py");
    /// Stopped however the test ends: a proxy left running holds the test's output open.
    struct Proxy(std::process::Child);
    impl Drop for Proxy {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _proxy = Proxy(
        std::process::Command::new("python3")
            .arg(&script)
            .args([&port.to_string(), &moto.url, "0"])
            .arg(dir.path().join("faults"))
            .arg("strip-conditions")
            .spawn()
            .unwrap(),
    );
    common::wait_for(10, "the proxy to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    // The credentials are the same for every moto; the endpoint goes in the settings, as
    // the other test of this binary sets the environment's to its own moto.
    for (k, v) in moto.env() {
        if k != "AWS_ENDPOINT_URL" {
            std::env::set_var(k, v);
        }
    }
    let keys = tempfile::tempdir().unwrap();
    let aws = anycloud_provider_aws::AwsProvider::new(keys.path().to_path_buf());
    let rt = runtime();
    aws.configure(&serde_json::json!({
        "endpoints": { "s3": format!("http://127.0.0.1:{port}") }
    }))
    .unwrap();
    let (objects, key) = rt
        .block_on(aws.state_objects(&serde_json::json!({
            "bucket": "team-state", "key": "anycloud/state.json", "region": "us-east-1"
        })))
        .unwrap();
    let store = RemoteStore::new(objects.clone(), key);
    let refused = rt
        .block_on(store.lock("plan", std::time::Duration::from_secs(5)))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("does not honour conditional writes"),
        "{refused}"
    );
    let (_, listing) = moto.http("GET", "/team-state?list-type=2", None);
    assert!(!listing.contains("state.json.lock"), "{listing}");
}

/// An apply writes its journal a wave at a time: its batches on S3, counted from the
/// requests moto was sent (a proxy logs each), are at most the plan's waves (its longest
/// chain of operations) plus two, not one per completion that made something ready (36
/// batches for these 111 operations in 6 waves, before). What is stored afterwards is what
/// the run ended with, nothing pending.
#[test]
fn an_apply_writes_its_journal_batches_a_wave_at_a_time_on_s3() {
    use anycloud_state::StateStore;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;
    const BUCKET: &str = "waves-state";
    const KEY: &str = "team/waves/state.json";
    let moto = common::moto::Moto::start("127.0.0.1");
    let (status, body) = moto.http("PUT", &format!("/{BUCKET}"), None);
    assert_eq!(status, 200, "{body}");
    for (k, v) in moto.env() {
        if k != "AWS_ENDPOINT_URL" {
            std::env::set_var(k, v);
        }
    }
    let proxy = s3_requests::CountingProxy::start(&moto.url);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(24)
        .enable_all()
        .build()
        .unwrap();
    let objects = s3_requests::s3_objects(&rt, &proxy.url, BUCKET, KEY);
    let providers = anycloud::registry::Providers::of(vec![Arc::new(sleepy::Sleepy::scaled(0.2))]);
    let config = anycloud::config::parse(
        "anycloud.yaml",
        &sleepy::config_text(10),
        std::path::Path::new("/nonexistent"),
        "sha256:test",
        &providers,
    )
    .unwrap_or_else(|e| panic!("{}", e[0]));
    let opts = anycloud::plan::PlanOptions {
        refresh: false,
        targets: &[],
        destroy: false,
        replace: &[],
    };
    let (_, plan) = rt
        .block_on(anycloud::engine::make_plan(
            &config,
            &anycloud_state::State::unborn(),
            &providers,
            &opts,
        ))
        .unwrap();
    let waves = s3_requests::waves(&plan);
    assert_eq!((plan.changes.len(), waves), (111, 6));

    let store = RemoteStore::new(objects.clone(), KEY);
    let shell = anycloud::shell::Shell::new(true, true, false);
    let (outcome, state) = rt.block_on(async {
        store.lock("apply", Duration::ZERO).await.unwrap();
        let snap = store.read().await.unwrap();
        let applied = anycloud::apply::apply(
            &plan,
            snap.state,
            &store,
            &snap.version,
            &providers,
            16,
            &anycloud::progress::Progress::new(&shell),
            Arc::new(AtomicBool::new(false)),
        )
        .await
        .unwrap();
        store.unlock().await.unwrap();
        applied
    });
    assert!(outcome.ok(), "{outcome:?}");
    let counts = s3_requests::Counts::of(&proxy.requests(), BUCKET, KEY);
    assert!(
        counts.batch_writes() >= 1 && counts.batch_writes() <= waves + 2,
        "{} journal batches for {waves} waves: {counts:?}",
        counts.batch_writes()
    );
    assert_eq!(counts.folds(), 1, "{counts:?}");
    let stored = rt.block_on(RemoteStore::new(objects, KEY).read()).unwrap();
    assert_eq!(stored.state, state);
    assert_eq!(stored.replayed, 0);
    assert_eq!(state.resources.len(), 111);
    assert!(state.resources.values().all(|r| r.pending.is_none()));
}

/// Set in this test binary's re-run whose `/etc/hosts` is its own.
#[cfg(feature = "azure")]
const OWN_HOSTS: &str = "ANYCLOUD_TEST_OWN_HOSTS";

/// Runs `test` of this binary again, alone, in a mount namespace whose `/etc/hosts` resolves
/// `host` to this machine: the provider reaches a service by a name no DNS knows, the way
/// `anycloud` itself does, with nothing of the machine's own resolution changed. As root,
/// `unshare --mount`; otherwise in a user namespace too.
#[cfg(feature = "azure")]
fn rerun_resolving(test: &str, host: &str) {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.1 {host}\n")).unwrap();
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    let mut unshare = std::process::Command::new("unshare");
    if !root {
        unshare.arg("--map-root-user");
    }
    let status = unshare
        .args([
            "--mount",
            "sh",
            "-c",
            r#"mount --bind "$0" /etc/hosts && exec "$@""#,
        ])
        .arg(&hosts)
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture"])
        .env(OWN_HOSTS, "1")
        .status()
        .expect("running unshare (util-linux)");
    assert!(
        status.success(),
        "{test}, run again where {host} resolves, failed: {status}"
    );
}

/// Azurite answers as `https://{account}.blob.anycloud.test:{port}`, the URL the provider
/// makes from `endpoints.blob_suffix`, over TLS with a CA of the test's: the suite runs
/// where that name resolves (see [`rerun_resolving`]) and that CA is the one trusted
/// (`SSL_CERT_FILE`). Tokens come from the contract server as Entra ID's would.
#[cfg(feature = "azure")]
#[test]
fn azure_blob_state_passes_the_store_suite_on_azurite() {
    const ACCOUNT: &str = "anycloudstatetest";
    if std::env::var_os(OWN_HOSTS).is_none() {
        rerun_resolving(
            "azure_blob_state_passes_the_store_suite_on_azurite",
            &format!("{ACCOUNT}.{}", azurite::SUFFIX_HOST),
        );
        return;
    }
    let signin = contract::Contract::start();
    let blobs = azurite::Azurite::start("127.0.0.1", ACCOUNT);
    blobs.create_container("team-state");
    for (k, v) in signin.env() {
        std::env::set_var(k, v);
    }
    std::env::set_var("SSL_CERT_FILE", blobs.ca());
    let keys = tempfile::tempdir().unwrap();
    let azure = anycloud_provider_azure::AzureProvider::new(keys.path().to_path_buf());
    azure
        .configure(&serde_json::json!({"endpoints": {"blob_suffix": blobs.suffix()}}))
        .unwrap();
    let rt = runtime();
    let (objects, key) = rt
        .block_on(azure.state_objects(&serde_json::json!({
            "storage_account": ACCOUNT, "container": "team-state", "key": "anycloud/state.json"
        })))
        .unwrap();
    assert_eq!(key, "anycloud/state.json");
    assert_eq!(
        objects.describe(&key),
        format!(
            "https://{ACCOUNT}.{}/team-state/anycloud/state.json",
            blobs.suffix()
        )
    );
    // The blob service's own API does not say whether the account keeps versions.
    assert_eq!(rt.block_on(objects.versioned()).unwrap(), None);
    drop(rt);
    run_suite(objects);
}

/// fake-gcs-server takes any bearer token; the provider reaches it through
/// `endpoints.storage`, as in the end-to-end test.
#[cfg(feature = "gcp")]
#[test]
fn gcs_state_passes_the_store_suite_on_fake_gcs() {
    let gcs = fake_gcs::FakeGcs::start("127.0.0.1");
    gcs.objects().create_bucket("team-state");
    std::env::set_var("GOOGLE_OAUTH_ACCESS_TOKEN", "ya29.remote-state-test");
    let keys = tempfile::tempdir().unwrap();
    let gcp = anycloud_provider_gcp::GcpProvider::new(keys.path().to_path_buf());
    gcp.configure(&serde_json::json!({"endpoints": {"storage": gcs.url}}))
        .unwrap();
    let rt = runtime();
    let (objects, key) = rt
        .block_on(gcp.state_objects(&serde_json::json!({
            "bucket": "team-state", "key": "anycloud/state.json"
        })))
        .unwrap();
    assert_eq!(key, "anycloud/state.json");
    assert_eq!(
        objects.describe(&key),
        "gs://team-state/anycloud/state.json"
    );
    assert_eq!(rt.block_on(objects.versioned()).unwrap(), Some(false));
    drop(rt);
    run_suite(objects);
}
