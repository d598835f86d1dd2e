//! GCP's continent bucket, prefixes, service accounts, bucket IAM bindings and instances
//! against the contract server (`support/contract.rs`: Cloud Storage, IAM and Compute Engine
//! as Google's discovery documents define them). The verbs are driven as the engine drives
//! them: planned, then created in dependency order with the engine's retry policy, read back
//! in one refresh, and deleted in reverse.

#[path = "support/contract.rs"]
mod contract;
#[path = "../../api/tests/support/drive.rs"]
mod drive;
#[path = "../../host/tests/support/sshd.rs"]
mod sshd;

use std::sync::OnceLock;

use tokio::sync::{Mutex, MutexGuard};

use anycloud_provider::{
    BucketRole, BucketSpec, ContainerSpec, DeploymentSpec, ErrorCode, Kind, NodeSpec, Provider,
    Transfer, VmSpec,
};
use anycloud_provider_gcp::naming;
use anycloud_provider_gcp::GcpProvider;
use contract::{Contract, PROJECT};
use drive::{planned, Engine, Rec};
use serde_json::{json, Value};

/// One server for the binary: the token comes from the process's environment, which every
/// test shares. Tests take turns, each with deployments of its own.
async fn server() -> (MutexGuard<'static, ()>, Contract) {
    static SERVER: OnceLock<Contract> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::const_new(());
    let turn = TURN.lock().await;
    let c = SERVER.get_or_init(|| {
        let c = Contract::start();
        for (k, v) in c.env() {
            std::env::set_var(k, v);
        }
        c
    });
    c.with(|w| {
        w.throttle_next = 0;
        w.slow_polls = 0;
        w.page_size = 2;
        w.stale_etag_next = 0;
        w.unknown_member_polls = 0;
    });
    (turn, c.clone())
}

fn provider(c: &Contract, project: &str) -> GcpProvider {
    let p = GcpProvider::new(std::env::temp_dir().join("anycloud-gcp-contract-keys"));
    p.configure(&json!({
        "project": project,
        "endpoints": {"storage": c.url, "iam": c.url, "compute": c.url},
    }))
    .unwrap();
    p
}

fn deployment(id: &str, region: &str, input: &str) -> DeploymentSpec {
    let bucket = |name: &str| BucketSpec {
        name: name.to_owned(),
        continent: "eu".into(),
        region: region.into(),
    };
    DeploymentSpec {
        id: id.into(),
        provider: "gcp".into(),
        project: Some("contract".into()),
        region: region.into(),
        continent: "eu".into(),
        vm: VmSpec::default(),
        container: ContainerSpec::default(),
        buckets: [
            (BucketRole::Input, bucket(input)),
            (BucketRole::Output, bucket(&format!("{id}-results"))),
            (BucketRole::Checkpoint, bucket(id)),
        ]
        .into(),
        sync_interval_secs: 60,
        idle_shutdown_secs: None,
        check: Default::default(),
    }
}

/// The user's input, put in with the provider's `bucket upload` (the input prefix must hold
/// objects before a deployment uses it).
async fn seed_input(p: &GcpProvider, d: &DeploymentSpec) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.txt"), "input\n").unwrap();
    let name = &d.buckets[&BucketRole::Input].name;
    let sent = p
        .buckets()
        .unwrap()
        .upload(name, Some(d), dir.path(), &Transfer::unwatched())
        .await
        .unwrap();
    assert_eq!(sent, 1);
}

fn bindings_of(policy: &Value, member: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = policy["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["members"].as_array().unwrap().iter().any(|m| m == member))
        .map(|b| {
            (
                b["role"].as_str().unwrap().to_owned(),
                b["condition"]["expression"]
                    .as_str()
                    .expect("every binding of a deployment is conditioned")
                    .to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_converges_least_privilege_and_destroy_keeps_what_it_must() {
    let (_turn, c) = server().await;
    let p = provider(&c, PROJECT);
    let d = deployment("train", "europe-west4", "train-input");
    let recs = planned(&p, &d);
    // The plan names the bucket and the region it lives in.
    let storage = &recs[0].attrs;
    let bucket = naming::continent_bucket("eu", PROJECT);
    assert_eq!(storage["bucket"], json!(bucket));
    assert_eq!(storage["region"], json!("europe-west4"));

    // Throttled calls: the engine's retries carry on.
    c.with(|w| w.throttle_next = 3);
    let mut engine = Engine::new(&p, "lineage-one");
    // The storage first: the user's input prefix lives in the bucket it makes.
    engine.apply(&recs[..1]).await.unwrap();
    seed_input(&p, &d).await;
    engine.apply(&recs).await.unwrap();
    assert_eq!(c.violations(), Vec::<String>::new());

    let made = c.bucket(&bucket).unwrap();
    assert_eq!(made["location"], json!("EUROPE-WEST4"));
    assert_eq!(
        made["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"],
        json!(true)
    );
    assert_eq!(made["labels"]["anycloud-lineage"], json!("lineage-one"));
    assert_eq!(made["labels"]["anycloud-continent"], json!("eu"));
    let email = naming::account_email("train", PROJECT);
    let account = c.account(&email).expect("the service account");
    assert!(account["description"]
        .as_str()
        .unwrap()
        .contains("anycloud-lineage=lineage-one"));

    // Least privilege: each binding confined by its condition to the deployment's prefix.
    let policy = c.policy(&bucket).unwrap();
    assert_eq!(policy["version"], json!(3));
    let granted = bindings_of(&policy, &format!("serviceAccount:{email}"));
    let expected: Vec<(String, String)> = [
        ("roles/storage.objectAdmin", "train/"),
        ("roles/storage.objectAdmin", "train-results/"),
        ("roles/storage.objectViewer", "train-input/"),
    ]
    .iter()
    .map(|(role, prefix)| {
        (
            role.to_string(),
            format!(
                "resource.name.startsWith(\"projects/_/buckets/{bucket}/objects/{prefix}\") || (resource.type == \"storage.googleapis.com/Bucket\" && api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").startsWith(\"{prefix}\"))"
            ),
        )
    })
    .collect::<Vec<_>>();
    let mut expected = expected;
    expected.sort();
    assert_eq!(granted, expected);
    // Written out once in full, as an operator would read it in the console.
    assert!(granted.contains(&(
        "roles/storage.objectViewer".to_owned(),
        r#"resource.name.startsWith("projects/_/buckets/anycloud-eu-anycloud-contract/objects/train-input/") || (resource.type == "storage.googleapis.com/Bucket" && api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("train-input/"))"#.to_owned()
    )));
    // The bucket's own bindings (its project's owners) are still there.
    assert!(policy["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["role"] == json!("roles/storage.legacyBucketOwner")));
    // The checkpoint prefix is marked as this state's; the input only read.
    let marker = c.object(&bucket, &naming::marker("train")).unwrap();
    let marker: Value = serde_json::from_slice(&marker).unwrap();
    assert_eq!(marker["anycloud-lineage"], json!("lineage-one"));
    assert_eq!(
        engine.state["deployment.train.bucket.input"].attrs["managed"],
        json!(false)
    );

    // A refresh finds everything.
    let found = engine.refresh().await;
    for (address, f) in &found {
        assert!(f.is_some(), "{address} found missing");
    }
    let recorded = serde_json::to_string(
        &engine
            .state
            .values()
            .map(|r| (&r.attrs, &r.private))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    for secret in [contract::ACCESS_TOKEN, "private_key", "ya29."] {
        assert!(!recorded.contains(secret), "{secret} in {recorded}");
    }

    // Checkpoints land under the prefix; destroy takes them, and nothing else.
    c.with(|w| {
        let b = w.buckets.get_mut(&bucket).unwrap();
        for name in ["train/step-1.ckpt", "train-results/model.bin"] {
            b.objects.insert(
                name.into(),
                contract::Object {
                    meta: json!({"name": name, "bucket": bucket, "size": "1"}),
                    bytes: b"x".to_vec(),
                },
            );
        }
    });
    engine.destroy().await.unwrap();
    assert!(
        c.bucket(&bucket).is_some(),
        "the continent's bucket is kept"
    );
    assert!(
        c.account(&email).is_none(),
        "the service account is deleted"
    );
    assert!(bindings_of(
        &c.policy(&bucket).unwrap(),
        &format!("serviceAccount:{email}")
    )
    .is_empty());
    c.with(|w| {
        let left: Vec<&String> = w.buckets[&bucket].objects.keys().collect();
        assert_eq!(
            left,
            vec!["train-input/data.txt", "train-results/model.bin"],
            "input and output kept, the checkpoint prefix and its marker gone"
        );
    });
    assert_eq!(c.violations(), Vec::<String>::new());
}

/// Every deployment of the continent edits the one policy: edits of two processes at once,
/// stale etags and a binding of someone else's all end with every binding in place.
#[tokio::test(flavor = "multi_thread")]
async fn policy_edits_keep_everyones_bindings_through_stale_etags() {
    let (_turn, c) = server().await;
    let project = "etag-race-project";
    // Two providers: two processes, whose edits only the etags keep apart.
    let p = provider(&c, project);
    let q = provider(&c, project);
    let a = deployment("etag-a", "europe-west1", "etag-input");
    let b = deployment("etag-b", "europe-west1", "etag-input");
    let (ra, rb) = (planned(&p, &a), planned(&q, &b));
    let mut ea = Engine::new(&p, "lineage-etag");
    ea.apply(&ra[..1]).await.unwrap();
    seed_input(&p, &a).await;
    let bucket = naming::continent_bucket("eu", project);
    // Someone's own binding, and writers the server says came in between.
    let theirs = json!({"role": "roles/storage.objectViewer", "members": ["user:ada@example.com"]});
    c.with(|w| {
        let policy = &mut w.buckets.get_mut(&bucket).unwrap().policy;
        policy["bindings"]
            .as_array_mut()
            .unwrap()
            .push(theirs.clone());
        w.stale_etag_next = 3;
    });
    let mut eb = Engine::new(&q, "lineage-etag");
    eb.state
        .insert(ra[0].address.clone(), ea.state[&ra[0].address].clone());
    let (x, y) = tokio::join!(ea.apply(&ra), eb.apply(&rb));
    x.unwrap();
    y.unwrap();
    let policy = c.policy(&bucket).unwrap();
    assert!(policy["bindings"].as_array().unwrap().contains(&theirs));
    for id in ["etag-a", "etag-b"] {
        let member = format!("serviceAccount:{}", naming::account_email(id, project));
        assert_eq!(bindings_of(&policy, &member).len(), 3, "{id}: {policy:#}");
    }
    // Removing one deployment's grants leaves the other's and the stranger's.
    ea.destroy().await.unwrap();
    let policy = c.policy(&bucket).unwrap();
    assert!(policy["bindings"].as_array().unwrap().contains(&theirs));
    let member_b = format!(
        "serviceAccount:{}",
        naming::account_email("etag-b", project)
    );
    assert_eq!(bindings_of(&policy, &member_b).len(), 3);
    eb.destroy().await.unwrap();
    assert_eq!(c.violations(), Vec::<String>::new());
}

/// IAM takes a moment to know a new account everywhere: the binding is retried until it does.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_account_unknown_to_iam_for_a_moment_is_waited_for() {
    let (_turn, c) = server().await;
    let project = "fresh-account-project";
    let p = provider(&c, project);
    let d = deployment("fresh", "europe-west1", "fresh-input");
    let recs = planned(&p, &d);
    let mut engine = Engine::new(&p, "lineage-fresh");
    engine.apply(&recs[..1]).await.unwrap();
    seed_input(&p, &d).await;
    c.with(|w| w.unknown_member_polls = 2);
    engine.apply(&recs).await.unwrap();
    let member = format!("serviceAccount:{}", naming::account_email("fresh", project));
    let policy = c.policy(&naming::continent_bucket("eu", project)).unwrap();
    assert_eq!(bindings_of(&policy, &member).len(), 3);
    engine.destroy().await.unwrap();
    assert_eq!(c.violations(), Vec::<String>::new());
}

/// A continent bucket name another project holds fails the preflight naming it; nothing is
/// made. An input prefix with nothing in it fails its deployment with the way out.
#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_name_taken_elsewhere_fails_the_preflight_and_an_empty_input_says_what_to_do() {
    let (_turn, c) = server().await;
    let project = "taken-name-project";
    let p = provider(&c, project);
    let d = deployment("taken", "europe-west1", "taken-input");
    let bucket = naming::continent_bucket("eu", project);
    c.with(|w| w.buckets_taken_elsewhere.insert(bucket.clone()));
    let storage = planned(&p, &d).remove(0);
    let target = anycloud_provider::Target {
        address: &storage.address,
        kind: storage.kind,
        attrs: &storage.attrs,
        private: &storage.private,
        deps: &[],
        lineage: "lineage-taken",
    };
    let pre = p.preflight(&[target]).await.unwrap();
    assert_eq!(pre.errors.len(), 1, "{pre:?}");
    assert!(
        pre.errors[0].contains(&format!(
            "bucket '{bucket}' belongs to another Google Cloud project"
        )),
        "{pre:?}"
    );
    assert!(c.bucket(&bucket).is_none());
    c.with(|w| w.buckets_taken_elsewhere.clear());

    let recs = planned(&p, &d);
    let mut engine = Engine::new(&p, "lineage-taken");
    engine.apply(&recs[..1]).await.unwrap();
    let input = recs
        .iter()
        .find(|r| r.address == "deployment.taken.bucket.input")
        .unwrap();
    let err = engine.create(input).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    assert!(
        err.message.contains("anycloud bucket upload taken-input"),
        "{err}"
    );
    assert_eq!(c.violations(), Vec::<String>::new());
}

/// Two states with a deployment `train` in one project: the second never adopts the first's
/// service account or checkpoint prefix, and its destroy leaves them.
#[tokio::test(flavor = "multi_thread")]
async fn another_states_account_and_checkpoint_are_never_adopted_or_deleted() {
    let (_turn, c) = server().await;
    let project = "two-states-project";
    let first = provider(&c, project);
    let second = provider(&c, project);
    let d = deployment("shared-id", "europe-west1", "shared-input");
    let recs = planned(&first, &d);
    let mut one = Engine::new(&first, "lineage-first");
    one.apply(&recs[..1]).await.unwrap();
    seed_input(&first, &d).await;
    one.apply(&recs).await.unwrap();

    let mut two = Engine::new(&second, "lineage-second");
    let role = recs.iter().find(|r| r.kind == Kind::Role).unwrap();
    let err = two.create(role).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(err.message.contains("lineage lineage-first"), "{err}");
    let checkpoint = recs
        .iter()
        .find(|r| r.address == "deployment.shared-id.bucket.checkpoint")
        .unwrap();
    two.apply(&recs[..1]).await.unwrap();
    let err = two.create(checkpoint).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(err.message.contains("checkpoint prefix"), "{err}");

    // The second state's destroy of what it recorded (only the shared bucket) removes nothing.
    two.destroy().await.unwrap();
    let email = naming::account_email("shared-id", project);
    assert!(c.account(&email).is_some());
    let bucket = naming::continent_bucket("eu", project);
    assert!(c.object(&bucket, &naming::marker("shared-id")).is_some());
    one.destroy().await.unwrap();
    assert!(c.account(&email).is_none());
    assert_eq!(c.violations(), Vec::<String>::new());
}

/// Refresh costs a constant number of calls, but for pages (IAM lists at most 100 service
/// accounts a page): measured for 10 and 200 deployments over three continents (each
/// continent's policy holds at most 100 conditional bindings, so 200 deployments with a
/// checkpoint each cannot share one), sharing each continent's input and output.
#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_costs_the_same_calls_for_10_and_200_deployments() {
    let (_turn, c) = server().await;
    c.with(|w| w.page_size = 1000);
    let places = [
        ("eu", "europe-west1"),
        ("us", "us-central1"),
        ("apac", "asia-east1"),
    ];
    let mut counts = vec![];
    for (n, project) in [(10, "refresh-ten-project"), (200, "refresh-many-project")] {
        let p = provider(&c, project);
        let mut engine = Engine::new(&p, "lineage-scale");
        for i in 0..n {
            let (continent, region) = places[i % places.len()];
            let bucket = |name: &str| BucketSpec {
                name: name.to_owned(),
                continent: continent.into(),
                region: region.into(),
            };
            let mut d = deployment(&format!("job-{i}"), region, "");
            d.continent = continent.into();
            d.buckets = [
                (BucketRole::Input, bucket(&format!("{continent}-input"))),
                (BucketRole::Output, bucket(&format!("{continent}-results"))),
                (BucketRole::Checkpoint, bucket(&d.id)),
            ]
            .into();
            let recs = planned(&p, &d);
            if i < places.len() {
                engine.apply(&recs[..1]).await.unwrap();
                seed_input(&p, &d).await;
            }
            engine.apply(&recs).await.unwrap();
        }
        let before = p.remote_calls();
        let found = engine.refresh().await;
        let calls = p.remote_calls() - before;
        assert!(found.values().all(|f| f.is_some()));
        println!(
            "refresh of {n} deployments ({} resources): {calls} calls",
            found.len()
        );
        counts.push(calls);
    }
    // One list of buckets, one of service accounts (a page per 100), and per continent
    // bucket one policy read and one list of prefix markers.
    assert_eq!(counts, vec![1 + 1 + 2 * 3, 1 + 2 + 2 * 3]);
    assert_eq!(c.violations(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_carries_its_service_account_admits_ssh_from_the_cidr_only_and_a_preemption_is_seen() {
    let (_turn, c) = server().await;
    // The VM is reached at a test host whose login user is not root, as on Google's images.
    let host = sshd::TestHost::start().with_sudo_user();
    std::env::set_var(
        anycloud_host::testing::SSH_ADDRESS,
        format!("{}:{}", host.address, host.port),
    );
    let keys = tempfile::tempdir().unwrap();
    let project = "vm-contract-project";
    let p = GcpProvider::new(keys.path().to_path_buf());
    p.configure(&json!({
        "project": project,
        "ssh_cidr": "203.0.113.7/32",
        "ssh_user": host.user,
        "endpoints": {"storage": c.url, "iam": c.url, "compute": c.url},
    }))
    .unwrap();
    let key = anycloud_host::keys::ensure_deployment_key(keys.path(), "vmjob").unwrap();
    host.authorize(&key.public_key);
    let mut d = deployment("vmjob", "europe-west1", "vmjob-input");
    d.vm = VmSpec {
        machine_type: Some("e2-standard-4".into()),
        spot: true,
        disk_gb: Some(64),
        image: None,
        regions: vec![],
        settings: Value::Null,
    };
    let mut recs = planned(&p, &d);
    let vm_plan = p
        .plan(NodeSpec {
            kind: Kind::Vm,
            deployment: &d,
            bucket: None,
        })
        .unwrap();
    recs.push(Rec {
        address: "deployment.vmjob.vm".into(),
        kind: Kind::Vm,
        attrs: vm_plan.attrs,
        private: vm_plan.private,
        deps: vec!["deployment.vmjob.role".into()],
    });
    c.with(|w| w.slow_polls = 2);
    let mut engine = Engine::new(&p, "lineage-vm");
    engine.apply(&recs[..1]).await.unwrap();
    seed_input(&p, &d).await;
    engine.apply(&recs).await.unwrap();
    assert_eq!(c.violations(), Vec::<String>::new());
    assert!(
        c.count("POST /compute/v1/projects/") >= 2,
        "operations were waited for"
    );

    let vm = engine.state["deployment.vmjob.vm"].attrs.clone();
    assert_eq!(vm["ssh_user"], json!(host.user));
    assert_eq!(vm["zone"], json!("europe-west1-b"));
    assert!(
        vm["host_key"].is_string(),
        "the host key is pinned on first contact"
    );
    let made = c.instance("anycloud-vmjob").expect("the instance");
    assert_eq!(made["scheduling"]["provisioningModel"], json!("SPOT"));
    assert_eq!(
        made["scheduling"]["instanceTerminationAction"],
        json!("DELETE")
    );
    assert_eq!(
        made["serviceAccounts"],
        json!([{"email": naming::account_email("vmjob", project), "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}])
    );
    let items = made["metadata"]["items"].as_array().unwrap();
    let ssh_keys = items
        .iter()
        .find(|i| i["key"] == json!("ssh-keys"))
        .unwrap();
    assert_eq!(
        ssh_keys["value"],
        json!(format!("{}:{}", host.user, key.public_key.trim()))
    );
    assert_eq!(made["disks"][0]["diskSizeGb"], json!("64"));
    assert_eq!(made["labels"]["anycloud-lineage"], json!("lineage-vm"));
    assert_eq!(made["tags"]["items"], json!(["anycloud-vmjob"]));
    let rule = c.firewall("anycloud-ssh-vmjob").expect("the firewall rule");
    assert_eq!(rule["sourceRanges"], json!(["203.0.113.7/32"]));
    assert_eq!(
        rule["allowed"],
        json!([{"IPProtocol": "tcp", "ports": ["22"]}])
    );
    assert_eq!(rule["targetTags"], json!(["anycloud-vmjob"]));
    assert_eq!(rule["direction"], json!("INGRESS"));

    // A refresh sees it running; once preempted (termination action DELETE) it is gone,
    // which plans a new one.
    let found = engine.refresh().await;
    assert_eq!(
        found["deployment.vmjob.vm"].as_ref().unwrap()["status"],
        json!("RUNNING")
    );
    assert_eq!(
        found["deployment.vmjob.vm"].as_ref().unwrap()["ssh_cidr"],
        json!("203.0.113.7/32")
    );
    // A rule widened out of band shows as a changed ssh_cidr (the update makes it again).
    c.with(|w| {
        let rule = w.firewalls.values_mut().next().unwrap();
        rule["sourceRanges"] = json!(["0.0.0.0/0"]);
    });
    let found = engine.refresh().await;
    assert_eq!(
        found["deployment.vmjob.vm"].as_ref().unwrap()["ssh_cidr"],
        json!("0.0.0.0/0")
    );
    c.preempt("anycloud-vmjob");
    assert_eq!(engine.refresh().await["deployment.vmjob.vm"], None);

    // Destroy: the rule goes with the instance.
    engine.destroy().await.unwrap();
    assert!(c.firewall("anycloud-ssh-vmjob").is_none());
    assert!(c.instance("anycloud-vmjob").is_none());
    assert_eq!(c.violations(), Vec::<String>::new());
    std::env::remove_var(anycloud_host::testing::SSH_ADDRESS);
}

/// A service account's key file signs its own token request (an RS256 JWT); the key is read
/// from the file only, and the token asked for once.
#[tokio::test(flavor = "multi_thread")]
async fn a_service_account_key_signs_its_token_request() {
    let (_turn, c) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("key.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The server knows the account's public key, as Google does: the signature is checked.
    let public = dir.path().join("public.der");
    let out = std::process::Command::new("openssl")
        .args(["rsa", "-RSAPublicKey_out", "-outform", "DER", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&public)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let email = format!("operator@{PROJECT}.iam.gserviceaccount.com");
    c.with(|w| {
        w.service_account_keys
            .insert(email.clone(), std::fs::read(&public).unwrap())
    });
    let file = dir.path().join("sa.json");
    std::fs::write(
        &file,
        json!({
            "type": "service_account",
            "client_email": email,
            "private_key": std::fs::read_to_string(&pem).unwrap(),
            "token_uri": c.token_url(),
        })
        .to_string(),
    )
    .unwrap();
    let credential = anycloud_provider_gcp::auth::Credential::from_file(&file);
    let google = anycloud_provider_gcp::api::Google::new(credential).unwrap();
    let before = c.with(|w| w.token_requests);
    for _ in 0..2 {
        let listed = google
            .ok(
                http::Method::GET,
                &format!("{}/storage/v1/b?project={PROJECT}", c.url),
                None,
            )
            .await
            .unwrap();
        assert_eq!(listed["kind"], json!("storage#buckets"));
    }
    assert_eq!(
        c.with(|w| w.token_requests) - before,
        1,
        "the token is reused"
    );
    assert_eq!(c.violations(), Vec::<String>::new());
}

/// A checkpoint prefix is never someone's input or output, and objects nobody marked are
/// never taken for a checkpoint.
#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_prefix_is_nobody_elses_bucket_and_unmarked_objects_are_no_checkpoint() {
    let (_turn, c) = server().await;
    let project = "prefix-clash-project";
    let first = provider(&c, project);
    let d = deployment("train", "europe-west1", "clash-input");
    let recs = planned(&first, &d);
    let mut one = Engine::new(&first, "lineage-first");
    one.apply(&recs[..1]).await.unwrap();
    seed_input(&first, &d).await;
    one.apply(&recs).await.unwrap();

    // Another state names its output bucket `train`: the first state's checkpoint prefix.
    let second = provider(&c, project);
    let mut other = deployment("other-job", "europe-west1", "clash-input");
    other.buckets.get_mut(&BucketRole::Output).unwrap().name = "train".into();
    let theirs = planned(&second, &other);
    let mut two = Engine::new(&second, "lineage-second");
    two.apply(&theirs[..1]).await.unwrap();
    let output = theirs
        .iter()
        .find(|r| r.address == "deployment.other-job.bucket.output")
        .unwrap();
    let err = two.create(output).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(
        err.message.contains("is the checkpoint prefix") && err.message.contains("lineage-first"),
        "{err}"
    );

    // A deployment named like someone's output bucket, whose prefix holds their results.
    let mut clash = deployment("clash-input", "europe-west1", "train-results");
    clash.buckets.get_mut(&BucketRole::Input).unwrap().name = "train-results".into();
    let recs3 = planned(&second, &clash);
    let checkpoint = recs3
        .iter()
        .find(|r| r.address == "deployment.clash-input.bucket.checkpoint")
        .unwrap();
    let err = two.create(checkpoint).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(err.message.contains("no anycloud checkpoint"), "{err}");

    one.destroy().await.unwrap();
    assert_eq!(c.violations(), Vec::<String>::new());
}

/// Google keeps at most 100 conditional bindings in a policy: a config that would pass it
/// fails before any change, saying why and what to do; deployments sharing input and output
/// share their bindings.
#[tokio::test(flavor = "multi_thread")]
async fn a_policy_past_googles_limit_of_conditional_bindings_fails_the_preflight() {
    let (_turn, c) = server().await;
    let project = "binding-limit-project";
    let p = provider(&c, project);
    let shared = |n: usize| {
        (0..n)
            .flat_map(|i| {
                let mut d = deployment(&format!("sweep-{i}"), "europe-west1", "sweep-input");
                d.buckets.get_mut(&BucketRole::Output).unwrap().name = "sweep-results".into();
                planned(&p, &d)
            })
            .collect::<Vec<Rec>>()
    };
    let preflight = |recs: Vec<Rec>| {
        let p = &p;
        async move {
            let targets: Vec<anycloud_provider::Target> = recs
                .iter()
                .map(|r| anycloud_provider::Target {
                    address: &r.address,
                    kind: r.kind,
                    attrs: &r.attrs,
                    private: &r.private,
                    deps: &[],
                    lineage: "lineage-limit",
                })
                .collect();
            p.preflight(&targets).await.unwrap()
        }
    };
    // 98 checkpoints + one shared input and one shared output binding: 100, allowed.
    assert_eq!(preflight(shared(98)).await.errors, Vec::<String>::new());
    let too_many = preflight(shared(99)).await;
    assert_eq!(too_many.errors.len(), 1, "{too_many:?}");
    assert!(
        too_many.errors[0].contains("would hold 101 conditional bindings"),
        "{too_many:?}"
    );
    assert_eq!(c.violations(), Vec::<String>::new());
}

/// A job asking for GPUs: Compute Engine is asked whether the machine type brings GPUs
/// (machineTypes.get, its `accelerators`, answered as the discovery document's
/// `MachineType`); with them the plan names the image and why (by default a Deep Learning VM
/// image, asked to install NVIDIA's driver at first boot), without them it warns.
#[tokio::test(flavor = "multi_thread")]
async fn a_gpu_job_gets_a_deep_learning_image_and_a_type_without_gpus_is_warned_of() {
    let (_turn, c) = server().await;
    let p = provider(&c, "gpu-project");
    let notes = |machine_type: &str, image: Option<&str>| {
        let mut d = deployment("gpujob", "europe-west1", "gpujob-input");
        d.vm.machine_type = Some(machine_type.into());
        d.vm.image = image.map(String::from);
        d.container.image = "busybox".into();
        d.container.gpus = Some("all".into());
        let node = |kind| {
            p.plan(NodeSpec {
                kind,
                deployment: &d,
                bucket: None,
            })
            .unwrap()
        };
        let (vm, init) = (node(Kind::Vm), node(Kind::VmInit));
        let p = &p;
        async move {
            let deps = [anycloud_provider::Dep {
                kind: Kind::Vm,
                attrs: &vm.attrs,
                private: &vm.private,
            }];
            let target = anycloud_provider::Target {
                address: "deployment.gpujob.vm_init",
                kind: Kind::VmInit,
                attrs: &init.attrs,
                private: &init.private,
                deps: &deps,
                lineage: "lineage-gpu",
            };
            (vm.attrs.clone(), p.preflight(&[target]).await.unwrap())
        }
    };
    let (vm, pre) = notes("g2-standard-4", None).await;
    assert_eq!(
        vm["image"],
        json!("projects/deeplearning-platform-release/global/images/family/common-cu121-debian-11")
    );
    assert_eq!(vm["install_nvidia_driver"], json!(true));
    assert_eq!(
        pre.notes,
        ["deployment.gpujob.vm: image projects/deeplearning-platform-release/global/images/family/common-cu121-debian-11 (Deep Learning VM, Debian 11, CUDA 12.1; NVIDIA driver installed at first boot) because g2-standard-4 has 1 nvidia-l4"],
        "{pre:?}"
    );
    let (_, pre) = notes("n1-standard-4", None).await;
    assert_eq!(pre.notes.len(), 1, "{pre:?}");
    assert!(
        pre.notes[0].starts_with("deployment.gpujob.vm: the container asks for GPUs but machine type n1-standard-4 brings none (Compute Engine machineTypes.get)"),
        "{pre:?}"
    );
    let mine = "projects/my-images/global/images/family/cuda-debian-12";
    let (vm, pre) = notes("a2-highgpu-1g", Some(mine)).await;
    assert_eq!(vm["image"], json!(mine));
    assert!(!vm.contains_key("install_nvidia_driver"));
    assert_eq!(
        pre.notes,
        [format!("deployment.gpujob.vm: image {mine} (vm.image; it must bring the NVIDIA driver) because a2-highgpu-1g has 1 nvidia-tesla-a100")],
    );
    assert_eq!(c.violations(), Vec::<String>::new());
}

/// A VM of `d` planned with its role's record, ready for the engine.
fn vm_recs(p: &GcpProvider, d: &DeploymentSpec) -> Vec<Rec> {
    let mut recs = planned(p, d);
    let vm_plan = p
        .plan(NodeSpec {
            kind: Kind::Vm,
            deployment: d,
            bucket: None,
        })
        .unwrap();
    recs.push(Rec {
        address: format!("deployment.{}.vm", d.id),
        kind: Kind::Vm,
        attrs: vm_plan.attrs,
        private: vm_plan.private,
        deps: vec![format!("deployment.{}.role", d.id)],
    });
    recs
}

/// Capacity failover (issue 23, item 2): every zone of us-east1 and us-east4-a answer an
/// insert with `ZONE_RESOURCE_POOL_EXHAUSTED` (as the operation's error, as Compute Engine
/// does): the VM is made in us-east4-b, each refused zone asked once, and its record says
/// where and why; its zone is computed, so planning it again changes nothing. Then every
/// zone is full: the create fails naming each place with Google's words, nothing is made.
#[tokio::test(flavor = "multi_thread")]
async fn no_capacity_moves_the_vm_to_the_next_zone_then_the_next_region() {
    let (_turn, c) = server().await;
    let host = sshd::TestHost::start().with_sudo_user();
    std::env::set_var(
        anycloud_host::testing::SSH_ADDRESS,
        format!("{}:{}", host.address, host.port),
    );
    let keys = tempfile::tempdir().unwrap();
    let project = "failover-contract-project";
    let p = GcpProvider::new(keys.path().to_path_buf());
    p.configure(&json!({
        "project": project,
        "ssh_user": host.user,
        "endpoints": {"storage": c.url, "iam": c.url, "compute": c.url},
    }))
    .unwrap();
    let key = anycloud_host::keys::ensure_deployment_key(keys.path(), "movejob").unwrap();
    host.authorize(&key.public_key);
    let mut d = deployment("movejob", "us-east1", "movejob-input");
    d.continent = "us".into();
    d.vm = VmSpec {
        machine_type: Some("e2-standard-4".into()),
        spot: true,
        regions: vec!["us-east4".into()],
        ..VmSpec::default()
    };
    let recs = vm_recs(&p, &d);
    let vm_plan = recs.last().unwrap();
    assert!(
        !vm_plan.attrs.contains_key("zone"),
        "the zone is not planned"
    );
    c.with(|w| {
        w.full_zones = ["us-east1-b", "us-east1-c", "us-east1-d", "us-east4-a"]
            .map(String::from)
            .into();
    });
    let mut engine = Engine::new(&p, "lineage-failover");
    engine.apply(&recs[..1]).await.unwrap();
    seed_input(&p, &d).await;
    engine.apply(&recs).await.unwrap();
    assert_eq!(c.violations(), Vec::<String>::new());
    let vm = engine.state["deployment.movejob.vm"].attrs.clone();
    assert_eq!(vm["zone"], json!("us-east4-b"));
    assert_eq!(
        vm["placement"],
        json!({
            "region": "us-east4",
            "zone": "us-east4-b",
            "reason": "us-east1-b: ZONE_RESOURCE_POOL_EXHAUSTED, us-east1-c: ZONE_RESOURCE_POOL_EXHAUSTED, us-east1-d: ZONE_RESOURCE_POOL_EXHAUSTED, us-east4-a: ZONE_RESOURCE_POOL_EXHAUSTED",
        })
    );
    assert_eq!(vm["region"], json!("us-east1"), "planned, not moved");
    let inserts: Vec<String> = c.with(|w| {
        w.requests
            .iter()
            .filter(|r| {
                r.starts_with("POST ")
                    && r.contains(&format!("/projects/{project}/zones/"))
                    && r.ends_with("/instances")
            })
            .cloned()
            .collect()
    });
    let zones: Vec<&str> = inserts
        .iter()
        .filter_map(|r| r.split("/zones/").nth(1)?.split('/').next())
        .collect();
    assert_eq!(
        zones,
        [
            "us-east1-b",
            "us-east1-c",
            "us-east1-d",
            "us-east4-a",
            "us-east4-b"
        ],
        "each place once, in order"
    );
    let made = c.instance("anycloud-movejob").expect("the instance");
    assert!(
        made["zone"]
            .as_str()
            .unwrap()
            .ends_with("/zones/us-east4-b"),
        "{made}"
    );
    // Planned again: the recorded zone and placement are computed, nothing differs.
    let again = vm_recs(&p, &d).pop().unwrap();
    for (k, v) in &again.attrs {
        assert_eq!(vm.get(k), Some(v), "{k} would change");
    }
    // A refresh finds it where it runs.
    let found = engine.refresh().await;
    assert_eq!(
        found["deployment.movejob.vm"].as_ref().unwrap()["status"],
        json!("RUNNING")
    );
    engine.destroy().await.unwrap();
    assert!(c.instance("anycloud-movejob").is_none());

    // Every zone full: the error names each place with Google's words; nothing is made.
    c.with(|w| w.full_zones = ["*".to_owned()].into());
    let mut engine = Engine::new(&p, "lineage-failover");
    engine.apply(&recs[..1]).await.unwrap();
    let failed = engine.apply(&recs).await.unwrap_err();
    assert!(!failed.retryable(), "{failed}");
    for zone in [
        "us-east1-b",
        "us-east1-c",
        "us-east1-d",
        "us-east4-a",
        "us-east4-b",
        "us-east4-c",
    ] {
        assert!(
            failed.message.contains(&format!(
                "  {zone}: ZONE_RESOURCE_POOL_EXHAUSTED: The zone 'projects/{project}/zones/{zone}' does not have enough resources"
            )),
            "{zone}: {failed}"
        );
    }
    assert!(c.instance("anycloud-movejob").is_none());
    c.with(|w| w.full_zones.clear());
    engine.destroy().await.unwrap();
    assert_eq!(c.violations(), Vec::<String>::new());
    std::env::remove_var(anycloud_host::testing::SSH_ADDRESS);
}
