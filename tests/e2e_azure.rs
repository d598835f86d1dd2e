//! The Azure provider through the engine: Resource Manager is the contract server written
//! from Azure's REST specifications (`providers/azure/tests/support/contract.rs`; Azure has
//! no emulator of its control plane), the blob service is Azurite (HTTPS, bearer tokens
//! checked for issuer, audience and lifetime), and the VM is a test host logging in as a
//! sudo user, reached through the documented `ANYCLOUD_TEST_SSH_ADDRESS`. On that host rclone
//! really syncs input from, and output and checkpoint to, Azurite, signed in as the
//! deployment's managed identity through a metadata service at 169.254.169.254: no key,
//! SAS or connection string anywhere.
//!
//! Needs root, docker, supervisord, rclone, sshd, ip, curl, openssl, python3 and Azurite
//! (`scripts/prereqs.sh`).

#![cfg(feature = "azure")]

mod common;

#[path = "common/azurite.rs"]
mod azurite;
#[path = "../providers/azure/tests/support/contract.rs"]
mod contract;
#[path = "../providers/host/tests/support/sshd.rs"]
mod sshd;

use std::sync::Arc;

use azurite::Azurite;
use common::{build_image, containers_of, read, wait_for, Project, Run};
use contract::Contract;
use serde_json::json;
use sshd::TestHost;

const SUBSCRIPTION: &str = "5eed0000-aaaa-4bbb-8ccc-0123456789ab";

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

/// `anycloud ARGS` in the test host's namespace (as an operator whose machine resolves and
/// trusts the blob service).
fn in_host(host: &TestHost, p: &Project, env: &[(String, String)], args: &[&str]) -> Run {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &host.namespace,
            env!("CARGO_BIN_EXE_anycloud"),
        ])
        .args(args)
        .current_dir(p.path())
        .stdin(std::process::Stdio::null())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn config(user: &str, arm: &str, blob_suffix: &str) -> String {
    format!(
        r#"
project: e2e-azure
providers:
  azure:
    subscription_id: {SUBSCRIPTION}
    ssh_cidr: 10.0.0.0/8
    ssh_user: {user}
    endpoints: {{ resource_manager: "{arm}", blob_suffix: "{blob_suffix}" }}
defaults:
  sync_interval: 1s
  connectivity_check: {{ retries: 5, retries_sleep: 1s }}
deployments:
  az-alpha:
    provider: azure
    region: westeurope
    vm: {{ type: Standard_D2s_v5, spot: true }}
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, /job.sh]
    buckets: {{ input: az-input, output: az-results, checkpoint: true }}
"#
    )
}

#[test]
fn azure_through_the_engine_with_blobs_in_azurite() {
    common::remove_leftover_containers(&["az-alpha"]);
    build_image("anycloud-e2e:v1");
    let mut host = TestHost::start().with_sudo_user();
    let account = anycloud_provider_azure::naming::storage_account("eu", SUBSCRIPTION);
    let mut blobs = Azurite::start(&host.gateway, &account);
    blobs.serve_host(&host.namespace);
    // sshd's sessions see the host's name resolution and trusted CA from a fresh start.
    host.stop_sshd();
    host.start_sshd();
    let blobs = Arc::new(blobs);

    // On the host's link: `anycloud bucket` runs in the host's namespace, where the blob
    // service's name resolves and its CA is trusted.
    let arm = Contract::start_on(&host.gateway);
    let mirror = blobs.clone();
    arm.with(|w| {
        // Containers made through Resource Manager exist in the blob service too.
        w.on_container = Some(Arc::new(move |_account: &str, name: &str, made: bool| {
            if made {
                mirror.create_container(name)
            } else {
                mirror.delete_container(name)
            }
        }));
    });
    // The continent's account exists already (made for an earlier deployment), with the
    // input container the user filled.
    arm.with(|w| {
        w.accounts.insert(
            account.clone(),
            (
                SUBSCRIPTION.into(),
                "anycloud-storage-eu".into(),
                json!({
                    "id": format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/anycloud-storage-eu/providers/Microsoft.Storage/storageAccounts/{account}"),
                    "name": account, "location": "westeurope", "tags": {},
                    "properties": {"provisioningState": "Succeeded"},
                }),
                0,
            ),
        );
        w.containers.insert(
            (account.clone(), "az-input".into()),
            json!({"name": "az-input", "properties": {"metadata": {}}}),
        );
    });
    blobs.create_container("az-input");

    let vm_root = host.dir.path().join("vm");
    let p = Project::new(&config(&host.user, &arm.url, &blobs.suffix()));
    let mut env: Vec<(String, String)> = arm
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
    // On Azure the VM's agent installs the key from the VM's osProfile; the test host stands
    // in for that by authorising the deployment's key.
    let key =
        anycloud_host::keys::ensure_deployment_key(&p.path().join(".anycloud/keys"), "az-alpha")
            .unwrap();
    host.authorize(&key.public_key);

    // The input goes in with `anycloud bucket upload`, as the operator (a file in blocks).
    let input = p.path().join("input");
    std::fs::create_dir_all(input.join("big")).unwrap();
    std::fs::write(input.join("data.txt"), "hello from the input container\n").unwrap();
    let big: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(input.join("big/blob.bin"), &big).unwrap();
    let up = in_host(&host, &p, &env, &["bucket", "upload", "az-input", "input"]);
    assert_eq!(up.code, 0, "{up:?}");
    assert!(up.stdout.contains("Uploaded 2 file(s)"), "{up:?}");
    let listed = in_host(&host, &p, &env, &["bucket", "ls", "az-input"]);
    assert!(
        listed.stdout.contains("20971520  big/blob.bin") && listed.stdout.contains("data.txt"),
        "{listed:?}"
    );

    let plan = ok(&p, &env, &["plan"]);
    assert!(plan.stdout.contains(&account), "{plan:?}");
    let applied = ok(&p, &env, &["apply", "--auto-approve"]);
    assert!(applied.stdout.contains("Apply complete!"), "{applied:?}");
    assert_eq!(containers_of("az-alpha"), 1);

    // The job's output and checkpoint reach Azurite, its input came from it.
    let copy = wait_for(60, "the input copy in the output container", || {
        blobs.get_blob("az-results", "input-copy.txt")
    });
    assert_eq!(copy, "hello from the input container\n");
    wait_for(60, "ticks in the output container", || {
        blobs
            .get_blob("az-results", "tick.txt")
            .filter(|t| t.trim().parse::<u64>().is_ok())
    });
    wait_for(60, "the counter in the checkpoint container", || {
        blobs
            .get_blob("az-alpha", "counter")
            .filter(|t| t.trim().parse::<u64>().is_ok())
    });
    assert_eq!(
        run(&p, &env, &["plan", "--detailed-exitcode"]).code,
        0,
        "converged"
    );
    // The results come back with `anycloud bucket download`, byte for byte.
    let fetched = p.path().join("fetched");
    let down = in_host(
        &host,
        &p,
        &env,
        &["bucket", "download", "az-input", "fetched"],
    );
    assert_eq!(down.code, 0, "{down:?}");
    assert_eq!(std::fs::read(fetched.join("big/blob.bin")).unwrap(), big);
    let down = in_host(
        &host,
        &p,
        &env,
        &["bucket", "download", "az-results", "fetched/results"],
    );
    assert_eq!(down.code, 0, "{down:?}");
    assert_eq!(
        read(&fetched.join("results/input-copy.txt")).as_deref(),
        Some("hello from the input container")
    );

    // No key, SAS, connection string or token anywhere anycloud writes.
    let rclone_conf = common::files_under(&vm_root)
        .into_iter()
        .find(|f| f.ends_with("rclone.conf"))
        .expect("rclone.conf on the VM");
    let conf = read(&rclone_conf).unwrap();
    assert!(
        conf.contains("use_msi = true") && conf.contains(&format!("account = {account}")),
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
            contract::CLIENT_SECRET,
            "token-",
            "eyJ",
            "AccountKey",
            "sig=",
        ] {
            assert!(!text.contains(secret), "{secret} found in: {text}");
        }
    }

    // Spot eviction (policy Delete): the VM is gone with its disk. The refresh plans a new
    // VM and everything on it; the new one restores the checkpoint and the job resumes.
    let checkpoint = blobs
        .get_blob("az-alpha", "counter")
        .and_then(|c| c.trim().parse::<u64>().ok())
        .unwrap();
    arm.evict("anycloud-az-alpha");
    common::sh(&format!("docker rm -f $(docker ps -aq --filter label=anycloud.deployment=az-alpha) >/dev/null 2>&1; pkill -f 'supervisord -c {}/' ; true", vm_root.display()));
    std::fs::remove_dir_all(vm_root.join("mnt")).unwrap();
    let recovery = run(&p, &env, &["plan", "--detailed-exitcode"]);
    assert_eq!(recovery.code, 2, "{recovery:?}");
    for created in ["vm", "sync.checkpoint_restore", "container"] {
        assert!(
            recovery
                .stdout
                .contains(&format!("deployment.az-alpha.{created} will be created")),
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
    assert_eq!(containers_of("az-alpha"), 1);
    assert_eq!(run(&p, &env, &["plan", "--detailed-exitcode"]).code, 0);

    // Destroy: the last output reaches Azurite; VM, NIC, IP, NSG, identity, its role
    // assignments and the checkpoint container go; the account, input and output stay.
    std::fs::write(
        vm_root.join("mnt/output/last-words.txt"),
        "written just before destroy\n",
    )
    .unwrap();
    ok(&p, &env, &["destroy", "--auto-approve"]);
    assert_eq!(
        blobs.get_blob("az-results", "last-words.txt").as_deref(),
        Some("written just before destroy\n")
    );
    assert_eq!(containers_of("az-alpha"), 0);
    arm.with(|w| {
        assert!(w.vms.is_empty(), "the VM is deleted");
        assert!(w.identities.is_empty(), "the identity is deleted");
        assert!(w.assignments.is_empty(), "its role assignments are deleted");
        let network: Vec<&str> = w
            .network
            .values()
            .map(|n| n["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            network,
            vec!["anycloud"],
            "only the region's virtual network stays"
        );
        assert!(w.accounts.contains_key(&account));
        let containers: Vec<&str> = w.containers.keys().map(|(_, c)| c.as_str()).collect();
        assert_eq!(containers, vec!["az-input", "az-results"]);
    });
    assert_eq!(
        blobs.get_blob("az-alpha", "counter"),
        None,
        "the checkpoint container is gone"
    );
    assert_eq!(arm.violations(), Vec::<String>::new());
    // The contract server's thread outlives the test: let go of Azurite, so it stops here.
    arm.with(|w| w.on_container = None);
}

fn storage_only(arm: &str, subscription: &str, deployment: &str) -> String {
    format!(
        r#"
project: {deployment}
providers:
  azure: {{ subscription_id: {subscription}, endpoints: {{ resource_manager: "{arm}" }} }}
deployments:
  {deployment}:
    provider: azure
    region: northeurope
    vm: {{ type: Standard_D2s_v5 }}
    container: {{ image: busybox }}
    buckets: {{ output: {deployment}-results }}
"#
    )
}

/// Two teams' applies make the continent's account at the same moment: both end with the
/// one account and exit 0; the slower one adopts what the faster one made.
#[test]
fn two_apply_processes_racing_for_the_account_both_succeed_with_one_account() {
    let arm = Contract::start();
    // A slow account widens the window: both PUTs land while it provisions.
    arm.with(|w| w.slow_polls = 3);
    let subscription = "5eed0001-aaaa-4bbb-8ccc-0123456789ab";
    let env: Vec<(String, String)> = arm
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let (a, b) = (
        Project::new(&storage_only(&arm.url, subscription, "team-a")),
        Project::new(&storage_only(&arm.url, subscription, "team-b")),
    );
    let args = [
        "apply",
        "--auto-approve",
        "--target",
        "shared.azure.eu.storage",
    ];
    let spawn = |p: &Project| {
        p.command(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (spawn(&a), spawn(&b));
    for child in [ca, cb] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let account = anycloud_provider_azure::naming::storage_account("eu", subscription);
    assert_eq!(
        arm.with(|w| w.accounts.keys().filter(|n| **n == account).count()),
        1
    );
    assert!(arm.count(&format!("PUT /subscriptions/{subscription}/resourceGroups/anycloud-storage-eu/providers/Microsoft.Storage/storageAccounts/{account}")) >= 1);
    for p in [&a, &b] {
        let recorded = p.state_json().unwrap()["resources"]["shared.azure.eu.storage"]
            ["attributes"]["account"]
            .clone();
        assert_eq!(recorded, json!(account));
    }
    assert_eq!(arm.violations(), Vec::<String>::new());
}

/// An account name another subscription holds fails the plan, naming the account, before
/// anything is made.
#[test]
fn an_account_name_taken_elsewhere_fails_the_plan_naming_it() {
    let arm = Contract::start();
    let subscription = "5eed0002-aaaa-4bbb-8ccc-0123456789ab";
    let account = anycloud_provider_azure::naming::storage_account("eu", subscription);
    arm.with(|w| w.taken_elsewhere.insert(account.clone()));
    let env: Vec<(String, String)> = arm
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let p = Project::new(&storage_only(&arm.url, subscription, "taken"));
    let r = run(&p, &env, &["plan"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(&account) && r.stderr.contains("another Azure subscription"),
        "{r:?}"
    );
    assert_eq!(arm.count("PUT "), 0, "nothing is made");
    assert_eq!(arm.violations(), Vec::<String>::new());
}
