//! The GCP provider through the engine: buckets, their IAM policies, service accounts and
//! Compute Engine are the contract server written from Google's discovery documents
//! (`providers/gcp/tests/support/contract.rs`; Google has no emulator of them, and
//! fake-gcs-server keeps no labels or policies); every object request goes on to
//! fake-gcs-server, a real emulator of Cloud Storage's JSON API. The VM is a test host
//! logging in as a sudo user, reached through the documented `ANYCLOUD_TEST_SSH_ADDRESS`. On
//! that host rclone really syncs input from, and output and checkpoint to, fake-gcs-server,
//! signed in as the deployment's service account through a metadata server at
//! 169.254.169.254: no key file anywhere.
//!
//! Needs root, docker, supervisord, rclone, sshd, ip, curl, python3 and fake-gcs-server
//! (`scripts/prereqs.sh`).

#![cfg(feature = "gcp")]

mod common;

#[path = "../providers/gcp/tests/support/contract.rs"]
mod contract;
#[path = "common/fake_gcs.rs"]
mod fake_gcs;
#[path = "../providers/host/tests/support/sshd.rs"]
mod sshd;

use std::sync::Arc;

use common::{build_image, containers_of, read, wait_for, Project, Run};
use contract::Contract;
use fake_gcs::{FakeGcs, PolicyStore};

const PROJECT: &str = "e2e-gcp-project";

fn run(p: &Project, env: &[(String, String)], args: &[&str]) -> Run {
    let out = p
        .command(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(p: &Project, env: &[(String, String)], args: &[&str]) -> Run {
    let r = run(p, env, args);
    assert_eq!(r.code, 0, "anycloud {args:?} failed: {r:?}");
    r
}

fn config(user: &str, api: &str) -> String {
    format!(
        r#"
project: e2e-gcp
providers:
  gcp:
    project: {PROJECT}
    ssh_cidr: 10.0.0.0/8
    ssh_user: {user}
    endpoints: {{ storage: "{api}", iam: "{api}", compute: "{api}" }}
defaults:
  sync_interval: 1s
  connectivity_check: {{ retries: 5, retries_sleep: 1s }}
deployments:
  gcp-alpha:
    provider: gcp
    region: europe-west4
    vm: {{ type: e2-standard-4, spot: true }}
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, /job.sh]
    buckets: {{ input: gcp-input, output: gcp-results, checkpoint: true }}
"#
    )
}

#[test]
fn gcp_through_the_engine_with_objects_in_fake_gcs_server() {
    common::remove_leftover_containers(&["gcp-alpha"]);
    build_image("anycloud-e2e:v1");
    // The VM: a test host whose login user is not root (with sudo), as on Google's images.
    let mut host = sshd::TestHost::start().with_sudo_user();
    let mut gcs = FakeGcs::start(&host.gateway);
    gcs.serve_metadata(&host.namespace);
    // sshd's sessions see the host's name resolution from a fresh start.
    host.stop_sshd();
    host.start_sshd();

    let policies = PolicyStore::start(&host.gateway);

    let api = Contract::start_on(&host.gateway);
    let (mirror, policy_mirror) = (gcs.objects(), policies.calls());
    api.with(|w| {
        w.objects_upstream = Some(gcs.url.clone());
        w.policies_upstream = Some(policies.url.clone());
        // Buckets made through the JSON API exist in the emulator too.
        w.on_bucket = Some(Arc::new(move |name: &str, made: bool| {
            for emulator in [&mirror, &policy_mirror] {
                if made {
                    emulator.create_bucket(name)
                } else {
                    emulator.delete_bucket(name)
                }
            }
        }));
    });
    let bucket = anycloud_provider_gcp::naming::continent_bucket("eu", PROJECT);

    let vm_root = host.dir.path().join("vm");
    let p = Project::new(&config(&host.user, &api.url));
    let mut env: Vec<(String, String)> = api
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    env.push((
        "ANYCLOUD_TEST_SSH_ADDRESS".into(),
        format!("{}:{}", host.address, host.port),
    ));
    env.push((
        "ANYCLOUD_TEST_VM_ROOT".into(),
        vm_root.display().to_string(),
    ));
    // On GCP the guest agent installs the key from the instance's ssh-keys metadata; the
    // test host stands in for that by authorising the deployment's key.
    let key =
        anycloud_host::keys::ensure_deployment_key(&p.path().join(".anycloud/keys"), "gcp-alpha")
            .unwrap();
    host.authorize(&key.public_key);

    // Before any apply, the input goes in with `anycloud bucket upload`, which makes the
    // continent's bucket (the first apply adopts it).
    let input = p.path().join("input");
    std::fs::create_dir_all(input.join("big")).unwrap();
    std::fs::write(input.join("data.txt"), "hello from the input prefix\n").unwrap();
    let big: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(input.join("big/blob.bin"), &big).unwrap();
    let up = ok(&p, &env, &["bucket", "upload", "gcp-input", "input"]);
    assert!(up.stdout.contains("Uploaded 2 file(s)"), "{up:?}");
    let listed = ok(&p, &env, &["bucket", "ls", "gcp-input"]);
    assert!(
        listed.stdout.contains("20971520  big/blob.bin") && listed.stdout.contains("data.txt"),
        "{listed:?}"
    );

    let plan = ok(&p, &env, &["plan"]);
    assert!(plan.stdout.contains(&bucket), "{plan:?}");
    let applied = ok(&p, &env, &["apply", "--auto-approve"]);
    assert!(applied.stdout.contains("Apply complete!"), "{applied:?}");
    assert_eq!(containers_of("gcp-alpha"), 1);

    // The policy the emulator keeps confines the account to its prefixes: Object Viewer on
    // input, Object Admin on output and checkpoint, each conditioned on its prefix.
    let policy = policies.calls().policy(&bucket).unwrap();
    let member = format!(
        "serviceAccount:{}",
        anycloud_provider_gcp::naming::account_email("gcp-alpha", PROJECT)
    );
    let mut granted: Vec<(String, String)> = policy["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| {
            b["members"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!(member))
        })
        .map(|b| {
            let expression = b["condition"]["expression"].as_str().unwrap();
            let prefix = expression
                .split("/objects/")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap()
                .to_owned();
            (prefix, b["role"].as_str().unwrap().to_owned())
        })
        .collect();
    granted.sort();
    assert_eq!(
        granted,
        [
            ("gcp-alpha/", "roles/storage.objectAdmin"),
            ("gcp-input/", "roles/storage.objectViewer"),
            ("gcp-results/", "roles/storage.objectAdmin"),
        ]
        .map(|(p, r)| (p.to_owned(), r.to_owned()))
    );

    // The job's output and checkpoint reach the emulator, its input came from it.
    let copy = wait_for(60, "the input copy in the output prefix", || {
        gcs.get(&bucket, "gcp-results/input-copy.txt")
    });
    assert_eq!(copy, "hello from the input prefix\n");
    wait_for(60, "ticks in the output prefix", || {
        gcs.get(&bucket, "gcp-results/tick.txt")
            .filter(|t| t.trim().parse::<u64>().is_ok())
    });
    wait_for(60, "the counter in the checkpoint prefix", || {
        gcs.get(&bucket, "gcp-alpha/counter")
            .filter(|t| t.trim().parse::<u64>().is_ok())
    });
    assert_eq!(
        run(&p, &env, &["plan", "--detailed-exitcode"]).code,
        0,
        "converged"
    );
    // The results come back with `anycloud bucket download`, byte for byte.
    let fetched = p.path().join("fetched");
    ok(&p, &env, &["bucket", "download", "gcp-input", "fetched"]);
    assert_eq!(std::fs::read(fetched.join("big/blob.bin")).unwrap(), big);
    ok(
        &p,
        &env,
        &["bucket", "download", "gcp-results", "fetched/results"],
    );
    assert_eq!(
        read(&fetched.join("results/input-copy.txt")).as_deref(),
        Some("hello from the input prefix")
    );

    // No key file or token anywhere anycloud writes.
    let rclone_conf = common::files_under(&vm_root)
        .into_iter()
        .find(|f| f.ends_with("rclone.conf"))
        .expect("rclone.conf on the VM");
    let conf = read(&rclone_conf).unwrap();
    assert!(
        conf.contains("type = google cloud storage") && conf.contains("env_auth = true"),
        "{conf}"
    );
    let mut written: Vec<String> = common::files_under(&vm_root)
        .iter()
        // The deployments' own SSH keys are the one secret kept there, by design.
        .chain(
            common::files_under(&p.path().join(".anycloud"))
                .iter()
                .filter(|f| !f.starts_with(p.path().join(".anycloud/keys"))),
        )
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .collect();
    written.push(plan.stdout.clone());
    written.push(applied.stdout.clone() + &applied.stderr);
    for text in &written {
        for secret in [
            contract::ACCESS_TOKEN,
            fake_gcs::VM_TOKEN,
            "ya29.",
            "private_key",
        ] {
            assert!(!text.contains(secret), "{secret} found in: {text}");
        }
    }

    // Spot preemption (termination action DELETE): the VM is gone with its disk. The refresh
    // plans a new VM and everything on it; the new one restores the checkpoint and the job
    // resumes.
    let checkpoint = gcs
        .get(&bucket, "gcp-alpha/counter")
        .and_then(|c| c.trim().parse::<u64>().ok())
        .unwrap();
    api.preempt("anycloud-gcp-alpha");
    common::sh(&format!("docker rm -f $(docker ps -aq --filter label=anycloud.deployment=gcp-alpha) >/dev/null 2>&1; pkill -f 'supervisord -c {}/' ; true", vm_root.display()));
    std::fs::remove_dir_all(vm_root.join("mnt")).unwrap();
    let recovery = run(&p, &env, &["plan", "--detailed-exitcode"]);
    assert_eq!(recovery.code, 2, "{recovery:?}");
    for created in ["vm", "sync.checkpoint_restore", "container"] {
        assert!(
            recovery
                .stdout
                .contains(&format!("deployment.gcp-alpha.{created} will be created")),
            "{recovery:?}"
        );
    }
    ok(&p, &env, &["apply", "--auto-approve"]);
    let restored = read(&vm_root.join("mnt/checkpoint/counter"))
        .and_then(|c| c.trim().parse::<u64>().ok())
        .expect("the checkpoint is back on the new VM");
    assert!(restored >= checkpoint, "restored {restored} < {checkpoint}");
    let resumed = wait_for(60, "the new VM's job to resume", || {
        read(&vm_root.join("mnt/output/resumed-from.txt"))
            .and_then(|c| c.trim().parse::<u64>().ok())
    });
    assert!(
        resumed >= checkpoint,
        "resumed from {resumed} < {checkpoint}"
    );
    assert_eq!(containers_of("gcp-alpha"), 1);
    assert_eq!(run(&p, &env, &["plan", "--detailed-exitcode"]).code, 0);

    // Destroy: the last output reaches the emulator; the instance, its firewall rule, the
    // service account, its bindings and the checkpoint prefix go; the bucket, input and
    // output stay.
    std::fs::write(
        vm_root.join("mnt/output/last-words.txt"),
        "written just before destroy\n",
    )
    .unwrap();
    ok(&p, &env, &["destroy", "--auto-approve"]);
    assert_eq!(
        gcs.get(&bucket, "gcp-results/last-words.txt").as_deref(),
        Some("written just before destroy\n")
    );
    assert_eq!(containers_of("gcp-alpha"), 0);
    api.with(|w| {
        assert!(w.instances.is_empty(), "the instance is deleted");
        assert!(w.firewalls.is_empty(), "its firewall rule is deleted");
        assert!(w.accounts.is_empty(), "the service account is deleted");
    });
    let policy = policies.calls().policy(&bucket).unwrap();
    assert!(
        !policy.to_string().contains("serviceAccount:"),
        "its bindings are removed: {policy}"
    );
    assert_eq!(
        gcs.get(&bucket, "gcp-alpha/counter"),
        None,
        "the checkpoint prefix is gone"
    );
    assert!(
        gcs.get(&bucket, "gcp-input/data.txt").is_some(),
        "the input is kept"
    );
    assert_eq!(api.violations(), Vec::<String>::new());
}

/// The continent's bucket name is another project's: plan and apply fail before any change,
/// naming the bucket, with exit 1 and no state written.
#[test]
fn a_bucket_name_another_project_holds_fails_the_plan_naming_it() {
    let api = Contract::start();
    let bucket = anycloud_provider_gcp::naming::continent_bucket("eu", PROJECT);
    api.with(|w| w.buckets_taken_elsewhere.insert(bucket.clone()));
    let p = Project::new(&format!(
        r#"
project: taken
providers:
  gcp: {{ project: {PROJECT}, endpoints: {{ storage: "{u}", iam: "{u}", compute: "{u}" }} }}
deployments:
  taken-job:
    provider: gcp
    region: europe-west1
    vm: {{ type: e2-standard-4 }}
    container: {{ image: busybox }}
    buckets: {{ output: taken-results }}
"#,
        u = api.url
    ));
    let env: Vec<(String, String)> = api
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    for args in [&["plan"][..], &["apply", "--auto-approve"][..]] {
        let r = run(&p, &env, args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains(&format!(
                "bucket '{bucket}' belongs to another Google Cloud project than {PROJECT}"
            )),
            "{r:?}"
        );
    }
    let recorded = p
        .state_json()
        .map(|s| {
            s["resources"]
                .as_object()
                .expect("resources by address")
                .len()
        })
        .unwrap_or(0);
    assert_eq!(recorded, 0, "nothing recorded");
    api.with(|w| {
        assert!(
            w.accounts.is_empty() && w.instances.is_empty(),
            "nothing made"
        );
        assert!(w.buckets.is_empty());
    });
    assert_eq!(api.violations(), Vec::<String>::new());
}
