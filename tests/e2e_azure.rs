//! The Azure provider through the engine: Resource Manager is the contract server written
//! from Azure's REST specifications (`providers/azure/tests/support/contract.rs`; Azure has
//! no emulator of its control plane), the blob service is Azurite (HTTPS, bearer tokens
//! checked for issuer, audience and lifetime), and the VM is a test host logging in as a
//! sudo user, reached through the documented `ANYCLOUD_TEST_SSH_ADDRESS`. On that host rclone
//! really syncs input from, and output and checkpoint to, Azurite, signed in as the
//! deployment's managed identity through a metadata service at 169.254.169.254: no key,
//! SAS or connection string anywhere. The blob service enforces what Azure's does
//! (`tests/common/azure_authz.rs`): each token is for one identity, and a request its role
//! assignments (the contract server's, each effective only after a propagation delay) do
//! not allow is refused with Azure's 403 `AuthorizationPermissionMismatch`; the tests assert
//! which requests were refused, and that nothing else was.
//!
//! Needs root, docker, supervisord, rclone, sshd, ip, curl, openssl, python3 and Azurite
//! (`scripts/prereqs.sh`).

#![cfg(feature = "azure")]

mod common;

#[path = "common/azure_authz.rs"]
mod azure_authz;
#[path = "common/azurite.rs"]
mod azurite;
#[path = "../providers/azure/tests/support/contract.rs"]
mod contract;
#[path = "../providers/host/tests/support/sshd.rs"]
mod sshd;

use common::relay::Relay;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_authz::{Action, Authz, Refusal};
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

/// One deployment on the test host; `buckets` and `check` are YAML flow mappings.
fn config(a: &AzureHarness, deployment: &str, buckets: &str, check: &str) -> String {
    let (user, arm, blob_suffix) = (&a.host.user, &a.arm_relay.url, a.blobs.suffix());
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
  connectivity_check: {check}
deployments:
  {deployment}:
    provider: azure
    region: westeurope
    vm: {{ type: Standard_D2s_v5, spot: true }}
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, /job.sh]
    buckets: {buckets}
"#
    )
}

/// What an end-to-end test runs against: the test host (the VM), Resource Manager (the
/// contract server), and Azurite behind the authoriser that enforces the contract server's
/// role assignments.
struct AzureHarness {
    host: TestHost,
    arm: Contract,
    /// Resource Manager at a loopback URL, from here and from the host's namespace alike
    /// (anycloud sends its token and secret over http only to loopback).
    arm_relay: Relay,
    authz: Authz,
    blobs: Arc<Azurite>,
    account: String,
    vm_root: PathBuf,
}

impl AzureHarness {
    /// For `deployment`, whose VM the test host stands for; the continent's account exists
    /// already (made for an earlier deployment), with the `input` container the user filled.
    /// Each role assignment is effective `propagation` after it is made.
    fn start(deployment: &str, input: &str, propagation: Duration) -> AzureHarness {
        let mut host = TestHost::start().with_sudo_user();
        let account = anycloud_provider_azure::naming::storage_account("eu", SUBSCRIPTION);
        // On the host's link: `anycloud bucket` runs in the host's namespace, where the blob
        // service's name resolves and its CA is trusted.
        let arm = Contract::start_on(&host.gateway);
        let authz = Authz::start(&arm, &host.gateway, propagation);
        authz.serve_vm(&format!("anycloud-{deployment}"));
        let mut blobs = Azurite::start_enforcing(&host.gateway, &account, &authz.authorize_url());
        blobs.serve_host(&host.namespace, &authz.imds_url());
        // sshd's sessions see the host's name resolution and trusted CA from a fresh start.
        host.stop_sshd();
        host.start_sshd();
        let blobs = Arc::new(blobs);
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
                (account.clone(), input.into()),
                json!({"name": input, "properties": {"metadata": {}}}),
            );
        });
        blobs.create_container(input);
        let vm_root = host.dir.path().join("vm");
        let arm_relay = Relay::start(&host.namespace, &arm.url);
        AzureHarness {
            host,
            arm,
            arm_relay,
            authz,
            blobs,
            account,
            vm_root,
        }
    }

    /// What anycloud runs with: the contract server's sign-in, and the test host as the VM.
    fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .arm
            .env()
            .into_iter()
            .map(|(k, v)| match k {
                "AZURE_AUTHORITY_HOST" => (k.to_owned(), self.arm_relay.url.clone()),
                _ => (k.to_owned(), v),
            })
            .collect();
        env.push((
            "ANYCLOUD_TEST_SSH_ADDRESS".into(),
            format!("{}:{}", self.host.address, self.host.port),
        ));
        env.push((
            "ANYCLOUD_TEST_VM_ROOT".into(),
            self.vm_root.display().to_string(),
        ));
        env
    }

    /// rclone on the test host as the VM's own runs: its config, its identity's tokens.
    fn rclone_as_vm(&self, conf: &Path, args: &[&str]) -> Run {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.host.namespace, "/usr/bin/rclone"])
            .arg("--config")
            .arg(conf)
            .args(["--retries", "1", "--low-level-retries", "1"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Drop for AzureHarness {
    fn drop(&mut self) {
        // The contract server's thread outlives the test: let go of Azurite, so it stops.
        self.arm.with(|w| w.on_container = None);
    }
}

/// Nothing was allowed only by a deleted role assignment whose removal was still
/// propagating: the VM depends on its grants, so destroy deletes them after the VM's last
/// upload into its containers. (Before, they went alongside it and Azure's caches were all
/// that let that upload through.)
fn assert_only_own_late_uploads(late: &[Refusal], identity: &str, own: &[&str]) {
    assert!(
        late.is_empty(),
        "allowed only by a deleted role assignment (of {identity}, containers {own:?}): {late:#?}"
    );
}

/// The refusals of a run that went as planned: only the connectivity check's listings of
/// `target` (a container) while its grants were still propagating, by the deployment's own
/// identity. Anything else is something anycloud did that its grants do not allow.
fn assert_only_propagating_checks(refusals: &[Refusal], identity: &str, target: &str) {
    let unexpected: Vec<&Refusal> = refusals
        .iter()
        .filter(|r| {
            !(r.propagating
                && r.identity == identity
                && r.method == "GET"
                && r.path == format!("/{target}")
                && r.query.contains("comp=list"))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "refused, and not the connectivity check waiting for its grants: {unexpected:#?}"
    );
}

#[test]
fn azure_through_the_engine_with_blobs_in_azurite() {
    common::remove_leftover_containers(&["az-alpha"]);
    build_image("anycloud-e2e:v1");
    let a = AzureHarness::start("az-alpha", "az-input", azure_authz::DEFAULT_PROPAGATION);
    let (host, arm, authz, blobs) = (&a.host, &a.arm, &a.authz, &a.blobs);
    let (account, vm_root) = (a.account.clone(), a.vm_root.clone());
    let p = Project::new(&config(
        &a,
        "az-alpha",
        "{ input: az-input, output: az-results, checkpoint: true }",
        "{ retries: 5, retries_sleep: 1s }",
    ));
    let env = a.env();
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
    let up = in_host(host, &p, &env, &["bucket", "upload", "az-input", "input"]);
    assert_eq!(up.code, 0, "{up:?}");
    assert!(up.stdout.contains("Uploaded 2 file(s)"), "{up:?}");
    let listed = in_host(host, &p, &env, &["bucket", "ls", "az-input"]);
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
            .filter(|t| common::tick(t).is_some())
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
        host,
        &p,
        &env,
        &["bucket", "download", "az-input", "fetched"],
    );
    assert_eq!(down.code, 0, "{down:?}");
    assert_eq!(std::fs::read(fetched.join("big/blob.bin")).unwrap(), big);
    let down = in_host(
        host,
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

    // The VM signed in as its own identity, and everything it did its grants allowed (the
    // connectivity check may have waited for them to propagate).
    let identity = "anycloud-az-alpha";
    assert!(authz.minted(identity) > 0 && authz.allowed() > 0);
    let normal = authz.refusals();
    assert_only_propagating_checks(&normal, identity, "az-results");

    // What its grants do not allow, the blob service refuses as Azure does: writing into the
    // input (Storage Blob Data Reader), reading another deployment's container, listing the
    // account's containers (its grants are on containers only).
    let remote = conf
        .lines()
        .next()
        .and_then(|l| l.strip_prefix('[')?.strip_suffix(']'))
        .expect("the remote's name")
        .to_owned();
    let probe = host.dir.path().join("forbidden.txt");
    std::fs::write(&probe, "written by the VM into its input\n").unwrap();
    let write = a.rclone_as_vm(
        &rclone_conf,
        &[
            "copyto",
            probe.to_str().unwrap(),
            &format!("{remote}:az-input/forbidden.txt"),
        ],
    );
    assert!(
        write.code != 0 && write.stderr.contains("AuthorizationPermissionMismatch"),
        "{write:?}"
    );
    assert_eq!(blobs.get_blob("az-input", "forbidden.txt"), None);
    // Another deployment's output, in the same account.
    arm.with(|w| {
        w.containers.insert(
            (account.clone(), "az-beta-results".into()),
            json!({"name": "az-beta-results", "properties": {"metadata": {}}}),
        )
    });
    blobs.create_container("az-beta-results");
    let secret = host.dir.path().join("secret.txt");
    std::fs::write(&secret, "beta's results\n").unwrap();
    let (code, body) = blobs.curl("PUT", "/az-beta-results/secret.txt", Some(&secret));
    assert_eq!(code, 201, "{body}");
    let other = a.rclone_as_vm(
        &rclone_conf,
        &["cat", &format!("{remote}:az-beta-results/secret.txt")],
    );
    assert!(
        other.code != 0
            && other.stderr.contains("AuthorizationPermissionMismatch")
            && !other.stdout.contains("beta's results"),
        "{other:?}"
    );
    let listed = a.rclone_as_vm(&rclone_conf, &["lsd", &format!("{remote}:")]);
    assert!(
        listed.code != 0 && listed.stderr.contains("AuthorizationPermissionMismatch"),
        "{listed:?}"
    );
    // Those refusals, and no others.
    let forbidden: Vec<Refusal> = authz.refusals()[normal.len()..].to_vec();
    let (mut into_input, mut others, mut account_wide) = (0, 0, 0);
    for r in &forbidden {
        assert!(!r.propagating && r.identity == identity, "{r:#?}");
        if r.path.starts_with("/az-input") && r.action != Action::Read {
            into_input += 1;
        } else if r.path.starts_with("/az-beta-results") && r.action == Action::Read {
            others += 1;
        } else if r.path == "/" && r.action == Action::Read {
            account_wide += 1;
        } else {
            panic!("refused, and not one of the forbidden calls: {r:#?}");
        }
    }
    assert!(
        into_input > 0 && others > 0 && account_wide > 0,
        "{forbidden:#?}"
    );
    arm.with(|w| {
        w.containers
            .remove(&(account.clone(), "az-beta-results".into()))
    });
    eprintln!(
        "refused: {} connectivity check(s) while the grants propagated; as forbidden, {into_input} write(s) into the input, {others} read(s) of another deployment's container, {account_wide} listing(s) of the account",
        normal.len()
    );
    // The metadata service hands out the token of the identity asked for, if the VM has it.
    let client_id = arm
        .with(|w| {
            w.identities
                .values()
                .find(|i| i["name"] == json!(identity))
                .map(|i| i["properties"]["clientId"].clone())
        })
        .expect("the identity");
    let imds = |query: &str| {
        common::sh(&format!(
            "ip netns exec {} curl -sS --noproxy '*' -H Metadata:true 'http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com&{query}'",
            host.namespace
        ))
    };
    let own: serde_json::Value =
        serde_json::from_str(&imds(&format!("client_id={}", client_id.as_str().unwrap()))).unwrap();
    assert_eq!(own["client_id"], client_id, "{own}");
    let foreign = imds("client_id=00000000-0000-4000-b000-999999999999");
    assert!(foreign.contains("Identity not found"), "{foreign}");
    let refused_so_far = authz.refusals().len();

    // Spot eviction (policy Delete): the VM is gone with its disk. The refresh plans a new
    // VM and everything on it; the new one restores the checkpoint and the job resumes.
    // Read until it answers: the upload loop rewrites it every second.
    let checkpoint = wait_for(30, "the checkpoint's counter before the eviction", || {
        blobs
            .get_blob("az-alpha", "counter")
            .and_then(|c| c.trim().parse::<u64>().ok())
    });
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
    let settled = run(&p, &env, &["plan", "--detailed-exitcode"]);
    assert_eq!(settled.code, 0, "{settled:?}");

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
    // The new VM (the same identity, its grants long effective) and the destroy's last
    // uploads were refused nothing.
    assert_eq!(
        authz.refusals()[refused_so_far..].to_vec(),
        Vec::<Refusal>::new(),
        "refused after the eviction"
    );
    assert_only_own_late_uploads(&authz.late(), identity, &["az-results", "az-alpha"]);
}

/// Role assignments reach Azure Storage only after a while (minutes, at worst). With a
/// propagation of 60 s, the new VM's rclone is refused until its grants are effective: the
/// connectivity check waits that out (`connectivity_check: { retries: 30, retries_sleep: 3s }`)
/// and the apply succeeds, the job's input and output going through once it has.
#[test]
fn a_vm_whose_grants_take_a_minute_to_propagate_waits_for_them() {
    const PROPAGATION: Duration = Duration::from_secs(60);
    common::remove_leftover_containers(&["az-slow"]);
    build_image("anycloud-e2e:v1");
    let a = AzureHarness::start("az-slow", "az-slow-input", PROPAGATION);
    let p = Project::new(&config(
        &a,
        "az-slow",
        "{ input: az-slow-input, output: az-slow-results }",
        "{ retries: 30, retries_sleep: 3s }",
    ));
    let env = a.env();
    let key =
        anycloud_host::keys::ensure_deployment_key(&p.path().join(".anycloud/keys"), "az-slow")
            .unwrap();
    a.host.authorize(&key.public_key);
    let data = a.host.dir.path().join("data.txt");
    std::fs::write(&data, "hello from the slow input\n").unwrap();
    let (code, body) = a.blobs.curl("PUT", "/az-slow-input/data.txt", Some(&data));
    assert_eq!(code, 201, "{body}");

    let started = Instant::now();
    let applied = ok(&p, &env, &["apply", "--auto-approve"]);
    let took = started.elapsed();
    assert!(applied.stdout.contains("Apply complete!"), "{applied:?}");
    // Nothing the VM needed was allowed before its grants were effective.
    assert!(took >= PROPAGATION, "apply took {took:?}: {applied:?}");
    let copy = wait_for(60, "the input copy in the output container", || {
        a.blobs.get_blob("az-slow-results", "input-copy.txt")
    });
    assert_eq!(copy, "hello from the slow input\n");
    let refusals = a.authz.refusals();
    assert!(
        !refusals.is_empty(),
        "the check was never refused: was the propagation enforced?"
    );
    assert_only_propagating_checks(&refusals, "anycloud-az-slow", "az-slow-results");

    ok(&p, &env, &["destroy", "--auto-approve"]);
    assert_eq!(containers_of("az-slow"), 0);
    assert_eq!(a.authz.refusals(), refusals, "refused after the apply");
    assert_only_own_late_uploads(&a.authz.late(), "anycloud-az-slow", &["az-slow-results"]);
    assert_eq!(a.arm.violations(), Vec::<String>::new());
    eprintln!(
        "grants effective after {PROPAGATION:?}: apply took {took:?}, {} check(s) refused",
        refusals.len()
    );
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

/// A state written by an earlier anycloud recorded the continent's account with 11 digits of
/// the subscription id; the seed (and anycloud now) takes 8. The recorded account is kept:
/// the plan replaces nothing and says which account it keeps and what the seed's name would
/// be, and apply makes no second account: the bucket and its grant go into the recorded one.
#[test]
fn a_state_that_recorded_the_eleven_digit_account_keeps_it() {
    let arm = Contract::start();
    let subscription = "5eed0003-aaaa-4bbb-8ccc-0123456789ab";
    let (recorded, seed) = ("anycloudeu5eed0003aaa", "anycloudeu5eed0003");
    let lineage = "5eed0003-0000-4000-8000-000000000000";
    let group = "anycloud-storage-eu";
    let id = format!("/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Storage/storageAccounts/{recorded}");
    let endpoint = format!("https://{recorded}.blob.core.windows.net/");
    // The account the earlier anycloud made, and the state it wrote.
    arm.with(|w| {
        w.accounts.insert(
            recorded.into(),
            (
                subscription.into(),
                group.into(),
                json!({
                    "id": id, "name": recorded, "location": "northeurope",
                    "tags": {"anycloud-lineage": lineage, "anycloud-continent": "eu"},
                    "properties": {
                        "provisioningState": "Succeeded",
                        "primaryEndpoints": {"blob": endpoint},
                    },
                }),
                0,
            ),
        );
    });
    let p = Project::new(&storage_only(&arm.url, subscription, "legacy"));
    let state = json!({
        "version": 2,
        "lineage": lineage,
        "serial": 1,
        "resources": {
            "shared.azure.eu.storage": {
                "kind": "storage",
                "provider": "azure",
                "attributes": {
                    "account": recorded,
                    "blob_endpoint": endpoint,
                    "continent": "eu",
                    "project": "legacy",
                    "region": "northeurope",
                    "resource_group": group,
                },
                "keep_on_destroy": true,
                "dependencies": [],
            }
        }
    });
    std::fs::create_dir_all(p.path().join(".anycloud")).unwrap();
    std::fs::write(
        p.path().join(".anycloud/state.json"),
        serde_json::to_vec_pretty(&state).unwrap(),
    )
    .unwrap();
    let env: Vec<(String, String)> = arm
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();

    let plan = ok(&p, &env, &["plan"]);
    let storage = "shared.azure.eu.storage";
    assert!(
        !plan.stdout.contains(&format!("{storage} must be replaced"))
            && !plan.stdout.contains(&format!("{storage} will be created")),
        "{plan:?}"
    );
    // Said once, for the reviewer: the account kept, and the seed's name for it.
    let said: Vec<&str> = plan
        .stdout
        .lines()
        .filter(|l| l.contains(storage) && l.contains("Warning:"))
        .collect();
    assert_eq!(said.len(), 1, "{plan:?}");
    assert!(
        said[0].contains(&format!("'{recorded}'"))
            && said[0].contains(&format!("'{seed}'"))
            && said[0].contains("kept"),
        "{plan:?}"
    );
    // Everything else the plan makes names the recorded account, never the seed's.
    let elsewhere = plan
        .stdout
        .lines()
        .filter(|l| !l.contains("Warning:"))
        .map(|l| l.replace(recorded, "RECORDED"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!elsewhere.contains(seed), "{plan:?}");
    assert!(elsewhere.contains("RECORDED"), "{plan:?}");

    // The bucket and its grant land in the recorded account; no account is made.
    let target = ["--target", "deployment.legacy.grant.output"];
    let applied = ok(
        &p,
        &env,
        &[&["apply", "--auto-approve"][..], &target].concat(),
    );
    assert!(applied.stdout.contains("Apply complete!"), "{applied:?}");
    arm.with(|w| {
        let made: Vec<&String> = w
            .requests
            .iter()
            .filter(|r| r.starts_with("PUT ") && r.rsplit('/').nth(1) == Some("storageAccounts"))
            .collect();
        assert_eq!(made, Vec::<&String>::new(), "no account is made");
        let accounts: Vec<&String> = w.accounts.keys().collect();
        assert_eq!(accounts, vec![recorded], "no second account");
        assert!(w
            .containers
            .contains_key(&(recorded.to_owned(), "legacy-results".to_owned())));
        let scopes: Vec<&str> = w
            .assignments
            .values()
            .map(|a| a["properties"]["scope"].as_str().unwrap())
            .collect();
        assert_eq!(scopes.len(), 1);
        assert!(
            scopes[0].contains(&format!("/storageAccounts/{recorded}/")),
            "{scopes:?}"
        );
    });
    let resources = &p.state_json().unwrap()["resources"];
    assert_eq!(resources[storage]["attributes"]["account"], json!(recorded));
    assert_eq!(
        resources["deployment.legacy.bucket.output"]["attributes"]["account"],
        json!(recorded)
    );
    // And it stays that way: nothing left to do for what was applied.
    let again = run(
        &p,
        &env,
        &[&["plan", "--detailed-exitcode"][..], &target].concat(),
    );
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(arm.violations(), Vec::<String>::new());
}
