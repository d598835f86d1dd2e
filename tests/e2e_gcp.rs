//! The GCP provider through the engine: buckets, their IAM policies, service accounts and
//! Compute Engine are the contract server written from Google's discovery documents
//! (`providers/gcp/tests/support/contract.rs`; Google has no emulator of them, and
//! fake-gcs-server keeps no labels or policies); every object request goes on to
//! fake-gcs-server, a real emulator of Cloud Storage's JSON API. The VM is a test host
//! logging in as a sudo user, reached through the documented `ANYCLOUD_TEST_SSH_ADDRESS`. On
//! that host rclone really syncs input from, and output and checkpoint to, fake-gcs-server,
//! signed in as the deployment's service account through a metadata server at
//! 169.254.169.254: no key file anywhere. Between the contract server and the emulators sits
//! `gcs_authz`, which enforces what Cloud Storage does: each object request of the VM's
//! account is allowed only by the bucket policy's bindings anycloud wrote (conditions
//! evaluated), once they have propagated; what it refuses is counted, and the tests assert
//! the refusals they expect and no others.
//!
//! Needs root, docker, supervisord, rclone, sshd, ip, curl, python3 and fake-gcs-server
//! (`scripts/prereqs.sh`).

#![cfg(feature = "gcp")]

mod common;

#[path = "../providers/gcp/tests/support/contract.rs"]
mod contract;
#[path = "common/fake_gcs.rs"]
mod fake_gcs;
#[path = "common/gcs_authz.rs"]
mod gcs_authz;
#[path = "../providers/host/tests/support/sshd.rs"]
mod sshd;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anycloud_provider_gcp::naming;
use common::relay::Relay;
use common::{build_image, containers_of, read, wait_for, Project, Run};
use contract::Contract;
use fake_gcs::{FakeGcs, PolicyStore};
use gcs_authz::{Directory, GcsAuthz, Refusal};

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

fn config(user: &str, api: &str, check: &str, deployment: &str) -> String {
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
  connectivity_check: {check}
deployments:
{deployment}"#
    )
}

/// Who the contract server says an instance runs as, and whether an account exists.
fn directory(api: &Contract) -> Directory {
    let (instances, accounts) = (api.world.clone(), api.world.clone());
    Directory {
        instance: Box::new(move |name| {
            let w = instances.lock().unwrap();
            let (_, vm) = w.instances.iter().find(|((_, _, n), _)| n == name)?;
            if vm["status"] == "TERMINATED" {
                return None;
            }
            let sa = vm["serviceAccounts"].get(0)?;
            let scopes = sa["scopes"]
                .as_array()?
                .iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect();
            Some((sa["email"].as_str()?.to_owned(), scopes))
        }),
        account_exists: Box::new(move |email| {
            accounts.lock().unwrap().accounts.contains_key(email)
        }),
    }
}

/// A test host as the deployment's VM, the contract server, fake-gcs-server and the policy
/// store behind the authorising proxy, and the metadata server minting the VM's tokens.
struct Stack {
    host: sshd::TestHost,
    gcs: FakeGcs,
    policies: PolicyStore,
    api: Contract,
    authz: GcsAuthz,
    /// The contract server at a loopback URL, from here and from the VM alike: what the
    /// config's endpoints are (anycloud sends its token over http only to loopback).
    endpoint: Relay,
    vm_root: PathBuf,
}

impl Stack {
    fn start(deployment: &str, delay: Duration) -> Stack {
        // The VM: a test host whose login user is not root (with sudo), as on Google's images.
        let mut host = sshd::TestHost::start().with_sudo_user();
        let mut gcs = FakeGcs::start(&host.gateway);
        let policies = PolicyStore::start(&host.gateway);
        let api = Contract::start_on(&host.gateway);
        let authz = GcsAuthz::start(
            &host.gateway,
            &gcs.url,
            &policies.url,
            &api.url,
            contract::ACCESS_TOKEN,
            delay,
            directory(&api),
        );
        gcs.serve_metadata(&host.namespace, &authz.url, &naming::instance(deployment));
        // sshd's sessions see the host's name resolution from a fresh start.
        host.stop_sshd();
        host.start_sshd();
        let (mirror, policy_mirror) = (gcs.objects(), policies.calls());
        api.with(|w| {
            // Object and policy requests go through the proxy, which enforces the policies.
            w.objects_upstream = Some(authz.url.clone());
            w.policies_upstream = Some(authz.url.clone());
            // Buckets made through the JSON API exist in the emulators too.
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
        let vm_root = host.dir.path().join("vm");
        let endpoint = Relay::start(&host.namespace, &api.url);
        Stack {
            host,
            gcs,
            policies,
            api,
            authz,
            endpoint,
            vm_root,
        }
    }

    /// The project, with the deployment's SSH key authorised on the test host (on GCP the
    /// guest agent installs it from the instance's ssh-keys metadata), and its environment.
    fn project(&self, config: &str, deployment: &str) -> (Project, Vec<(String, String)>) {
        let p = Project::new(config);
        let mut env: Vec<(String, String)> = self
            .api
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        env.push((
            "ANYCLOUD_TEST_SSH_ADDRESS".into(),
            format!("{}:{}", self.host.address, self.host.port),
        ));
        env.push((
            "ANYCLOUD_TEST_VM_ROOT".into(),
            self.vm_root.display().to_string(),
        ));
        let key = anycloud_host::keys::ensure_deployment_key(
            &p.path().join(".anycloud/keys"),
            deployment,
        )
        .unwrap();
        self.host.authorize(&key.public_key);
        (p, env)
    }

    /// rclone run on the VM as the VM's programs run it (its config, its identity through
    /// the metadata server): whether it succeeded.
    fn rclone_as_vm(&self, args: &[&str]) -> bool {
        let conf = common::files_under(&self.vm_root)
            .into_iter()
            .find(|f| f.ends_with("rclone.conf"))
            .expect("rclone.conf on the VM");
        std::process::Command::new("ip")
            .args(["netns", "exec", &self.host.namespace, "/usr/bin/rclone"])
            .arg("--config")
            .arg(&conf)
            .args(args)
            .args(["--retries", "1", "--low-level-retries", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    }
}

/// What a normal run is refused, and only that: rclone's check whether a remote's root is a
/// file (a get of the prefix's own name, without its slash, which no prefix condition grants;
/// rclone takes the refusal for "a directory"), and the connectivity check's listings of
/// `check_prefix` while the bindings spread. Returns the other refusals.
fn unexpected(
    refusals: &[Refusal],
    account: &str,
    bucket: &str,
    prefixes: &[&str],
    check_prefix: &str,
) -> Vec<Refusal> {
    refusals
        .iter()
        .filter(|r| {
            let probe = r.permission == "storage.objects.get"
                && prefixes
                    .iter()
                    .any(|p| r.resource == format!("projects/_/buckets/{bucket}/objects/{p}"));
            let check = r.propagating
                && r.permission == "storage.objects.list"
                && r.list_prefix.as_deref() == Some(&format!("{check_prefix}/"));
            !(r.identity == account && (probe || check))
        })
        .cloned()
        .collect()
}

#[test]
fn gcp_through_the_engine_with_objects_in_fake_gcs_server() {
    common::remove_leftover_containers(&["gcp-alpha"]);
    build_image("anycloud-e2e:v1");
    let stack = Stack::start("gcp-alpha", gcs_authz::DEFAULT_DELAY);
    let (gcs, policies, api, authz, vm_root) = (
        &stack.gcs,
        &stack.policies,
        &stack.api,
        &stack.authz,
        &stack.vm_root,
    );
    let bucket = naming::continent_bucket("eu", PROJECT);
    let account = naming::account_email("gcp-alpha", PROJECT);
    let prefixes = ["gcp-input", "gcp-results", "gcp-alpha"];
    // The bindings take DEFAULT_DELAY to spread: the connectivity check waits for them.
    let (p, env) = stack.project(
        &config(
            &stack.host.user,
            &stack.endpoint.url,
            "{ retries: 15, retries_sleep: 1s }",
            r#"  gcp-alpha:
    provider: gcp
    region: europe-west4
    vm: { type: e2-standard-4, spot: true }
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, /job.sh]
    buckets: { input: gcp-input, output: gcp-results, checkpoint: true }
"#,
        ),
        "gcp-alpha",
    );

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
    let member = format!("serviceAccount:{account}");
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
            .filter(|t| common::tick(t).is_some())
    });
    wait_for(60, "the counter in the checkpoint prefix", || {
        gcs.get(&bucket, "gcp-alpha/counter")
            .filter(|t| t.trim().parse::<u64>().is_ok())
    });
    let converged = run(&p, &env, &["plan", "--detailed-exitcode"]);
    assert_eq!(converged.code, 0, "converged: {converged:?}");
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
    let rclone_conf = common::files_under(vm_root)
        .into_iter()
        .find(|f| f.ends_with("rclone.conf"))
        .expect("rclone.conf on the VM");
    let conf = read(&rclone_conf).unwrap();
    assert!(
        conf.contains("type = google cloud storage") && conf.contains("env_auth = true"),
        "{conf}"
    );
    let mut written: Vec<String> = common::files_under(vm_root)
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
            gcs_authz::TOKEN_PREFIX,
            "ya29.",
            "private_key",
        ] {
            assert!(!text.contains(secret), "{secret} found in: {text}");
        }
    }

    // The run so far met only what it should: rclone's root probes, and the connectivity
    // check's listings while the bindings spread. Every condition could be evaluated.
    let normal = authz.refusals();
    assert_eq!(
        unexpected(&normal, &account, &bucket, &prefixes, "gcp-results"),
        Vec::<Refusal>::new(),
        "refusals the normal run should not meet"
    );
    assert_eq!(authz.unevaluable(), Vec::<String>::new());
    // And the VM's programs did go through it: listings, downloads, uploads (over objects
    // already there: create and delete), server-side copies.
    let allowed = authz.allowed();
    for (call, what) in [
        (format!("GET /storage/v1/b/{bucket}/o"), "a listing"),
        (
            format!("GET /download/storage/v1/b/{bucket}/o/gcp-input%2Fdata.txt"),
            "the input's download (at its mediaLink)",
        ),
        (format!("POST /upload/storage/v1/b/{bucket}/o"), "an upload"),
    ] {
        assert!(
            allowed.contains(&call),
            "{what} never allowed: {allowed:#?}"
        );
    }
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for r in &normal {
        let what = match &r.list_prefix {
            Some(p) => format!("{} prefix {p:?}", r.permission),
            None => format!("{} {}", r.permission, r.resource),
        };
        let spreading = if r.propagating { " (spreading)" } else { "" };
        *kinds.entry(format!("{what}{spreading}")).or_default() += 1;
    }
    eprintln!(
        "gcs_authz: {} requests of the VM's account allowed; refused: {kinds:#?}",
        allowed.len()
    );

    // What the VM's account may not do, it cannot: write or delete under the input prefix,
    // read or list another deployment's prefix, write beside its own under a name that only
    // starts like it, list the whole bucket. It still reads its input.
    gcs.objects().put(
        &bucket,
        "gcp-beta/counter",
        "another deployment's checkpoint\n",
    );
    let forbidden_file = stack.host.dir.path().join("forbidden.txt");
    std::fs::write(&forbidden_file, "must not land\n").unwrap();
    let forbidden_file = forbidden_file.display().to_string();
    let remote = |path: &str| format!("gcs:{bucket}/{path}");
    let fetched_here = stack.host.dir.path().join("fetched-as-vm");
    let fetched_here = fetched_here.display().to_string();
    let window = authz.refusals().len();
    assert!(stack.rclone_as_vm(&["copyto", &remote("gcp-input/data.txt"), &fetched_here]));
    assert_eq!(
        read(std::path::Path::new(&fetched_here)).as_deref(),
        Some("hello from the input prefix")
    );
    for (args, what) in [
        (
            vec![
                "copyto",
                &forbidden_file,
                &remote("gcp-input/forbidden.txt"),
            ],
            "writing under the input prefix",
        ),
        (
            vec!["deletefile", &remote("gcp-input/data.txt")],
            "deleting under the input prefix",
        ),
        (
            vec!["copyto", &remote("gcp-beta/counter"), &fetched_here],
            "reading another deployment's prefix",
        ),
        (
            vec!["lsf", &remote("gcp-beta")],
            "listing another deployment's prefix",
        ),
        (
            vec![
                "copyto",
                &forbidden_file,
                &remote("gcp-results-other/x.txt"),
            ],
            "writing under a name that only starts like its output prefix",
        ),
        (
            vec!["lsf", &format!("gcs:{bucket}")],
            "listing the whole bucket",
        ),
    ] {
        assert!(!stack.rclone_as_vm(&args), "{what} was allowed");
    }
    assert_eq!(gcs.get(&bucket, "gcp-input/forbidden.txt"), None);
    assert_eq!(gcs.get(&bucket, "gcp-results-other/x.txt"), None);
    assert!(gcs.get(&bucket, "gcp-input/data.txt").is_some());
    let refused = unexpected(
        &authz.refusals()[window..],
        &account,
        &bucket,
        &prefixes,
        "gcp-results",
    );
    let object = |name: &str| format!("projects/_/buckets/{bucket}/objects/{name}");
    // (rclone asks whether a destination exists before it writes: a refused get stops it
    // there.)
    for (permissions, resource, list_prefix) in [
        (
            &["storage.objects.create"][..],
            object("gcp-input/forbidden.txt"),
            None,
        ),
        (
            &["storage.objects.delete"],
            object("gcp-input/data.txt"),
            None,
        ),
        (&["storage.objects.get"], object("gcp-beta/counter"), None),
        (
            &["storage.objects.list"],
            format!("projects/_/buckets/{bucket}"),
            Some("gcp-beta/"),
        ),
        (
            &["storage.objects.get", "storage.objects.create"],
            object("gcp-results-other/x.txt"),
            None,
        ),
        (
            &["storage.objects.list"],
            format!("projects/_/buckets/{bucket}"),
            Some(""),
        ),
    ] {
        assert!(
            refused.iter().any(|r| r.identity == account
                && permissions.contains(&r.permission.as_str())
                && r.resource == resource
                && r.list_prefix.as_deref() == list_prefix
                && !r.propagating),
            "no refusal of {permissions:?} on {resource} ({list_prefix:?}) among {refused:#?}"
        );
    }
    // Nothing else was refused meanwhile (rclone's probes of those names aside).
    let touched = |r: &Refusal| {
        let name = r
            .resource
            .strip_prefix(&format!("projects/_/buckets/{bucket}"))
            .unwrap_or("?");
        let name = name.strip_prefix("/objects/").unwrap_or(name);
        let listed = r.list_prefix.as_deref().unwrap_or("");
        [
            "gcp-input/forbidden.txt",
            "gcp-input/data.txt",
            "gcp-beta",
            "gcp-results-other",
        ]
        .iter()
        .any(|f| name.starts_with(f) || (!listed.is_empty() && listed.starts_with(f)))
            || (name.is_empty() && r.list_prefix.as_deref() == Some(""))
    };
    let other: Vec<&Refusal> = refused.iter().filter(|r| !touched(r)).collect();
    assert!(
        other.is_empty(),
        "refused besides the forbidden calls: {other:#?}"
    );
    let window_end = authz.refusals().len();

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
    let settled = run(&p, &env, &["plan", "--detailed-exitcode"]);
    assert_eq!(settled.code, 0, "{settled:?}");

    // (The last upload runs alongside the bindings' removal: it gets through because the
    // removal takes a while to spread, DEFAULT_REVOCATION here; see
    // destroy_uploads_the_last_output_before_the_bindings_go.)
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
    // Before and after the forbidden calls, through preemption and destroy: nothing
    // refused but what a normal run meets.
    let all = authz.refusals();
    let outside: Vec<Refusal> = all[..window]
        .iter()
        .chain(&all[window_end..])
        .cloned()
        .collect();
    assert_eq!(
        unexpected(&outside, &account, &bucket, &prefixes, "gcp-results"),
        Vec::<Refusal>::new()
    );
    assert_eq!(authz.unevaluable(), Vec::<String>::new());
    assert_eq!(api.violations(), Vec::<String>::new());
}

/// Bindings that take a minute to spread (as IAM's may): the VM's connectivity check
/// waits for them (30 tries, 3 s apart), so the apply succeeds once they are effective and
/// the job's data flows, with nothing refused but the check's listings meanwhile.
#[test]
fn bindings_that_take_a_minute_to_spread_are_waited_for() {
    const DELAY: Duration = Duration::from_secs(60);
    common::remove_leftover_containers(&["gcp-slow"]);
    build_image("anycloud-e2e:v1");
    let stack = Stack::start("gcp-slow", DELAY);
    let (gcs, authz) = (&stack.gcs, &stack.authz);
    let bucket = naming::continent_bucket("eu", PROJECT);
    let account = naming::account_email("gcp-slow", PROJECT);
    let (p, env) = stack.project(
        &config(
            &stack.host.user,
            &stack.endpoint.url,
            "{ retries: 30, retries_sleep: 3s }",
            r#"  gcp-slow:
    provider: gcp
    region: europe-west4
    vm: { type: e2-standard-4 }
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, /job.sh]
    buckets: { input: slow-input, output: slow-results }
"#,
        ),
        "gcp-slow",
    );
    std::fs::create_dir_all(p.path().join("input")).unwrap();
    std::fs::write(
        p.path().join("input/data.txt"),
        "hello from the input prefix\n",
    )
    .unwrap();
    ok(&p, &env, &["bucket", "upload", "slow-input", "input"]);

    let started = Instant::now();
    let applied = ok(&p, &env, &["apply", "--auto-approve"]);
    let took = started.elapsed();
    assert!(
        took >= DELAY,
        "the apply took {took:?}, less than the bindings' delay"
    );
    let said = applied.stdout.clone() + &applied.stderr;
    assert!(
        said.contains("permissions may still be spreading"),
        "{applied:?}"
    );
    let copy = wait_for(60, "the input copy in the output prefix", || {
        gcs.get(&bucket, "slow-results/input-copy.txt")
    });
    assert_eq!(copy, "hello from the input prefix\n");

    let refusals = authz.refusals();
    assert!(
        refusals.iter().any(|r| r.identity == account
            && r.permission == "storage.objects.list"
            && r.propagating),
        "the check was refused while the bindings spread: {refusals:#?}"
    );
    ok(&p, &env, &["destroy", "--auto-approve"]);
    assert_eq!(
        gcs.get(&bucket, "slow-results/tick.txt")
            .map(|t| common::tick(&t).is_some()),
        Some(true)
    );
    assert_eq!(containers_of("gcp-slow"), 0);
    assert_eq!(
        unexpected(
            &authz.refusals(),
            &account,
            &bucket,
            &["slow-input", "slow-results"],
            "slow-results"
        ),
        Vec::<Refusal>::new()
    );
    assert_eq!(authz.unevaluable(), Vec::<String>::new());
    assert_eq!(stack.api.violations(), Vec::<String>::new());
}

/// One request to `url` by hand: its status and body.
fn call(method: &str, url: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("authorization: Bearer {t}")]);
    }
    if method != "GET" {
        cmd.args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ]);
    }
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// The proxy on requests made by hand: a role grants only its permissions, and only where
/// its condition holds; replacing an object takes storage.objects.delete too; a condition it
/// cannot evaluate grants nothing and is counted; a new binding waits out the delay; the
/// owner may do anything; a token of no one, or of a deleted account, is refused.
#[test]
fn the_proxy_enforces_roles_conditions_replacements_and_delays() {
    let gcs = FakeGcs::start("127.0.0.1");
    let policies = PolicyStore::start("127.0.0.1");
    let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let lives = alive.clone();
    let authz = GcsAuthz::start(
        "127.0.0.1",
        &gcs.url,
        &policies.url,
        "http://127.0.0.1:9",
        "owner-token",
        Duration::ZERO,
        Directory {
            instance: Box::new(|_| None),
            account_exists: Box::new(move |_| lives.load(std::sync::atomic::Ordering::SeqCst)),
        },
    );
    let b = "authz-self-test";
    gcs.objects().create_bucket(b);
    policies.calls().create_bucket(b);
    let me = "writer@p.iam.gserviceaccount.com";
    let token = authz.mint(me, &["https://www.googleapis.com/auth/cloud-platform"]);
    let policy = serde_json::json!({"version": 3, "bindings": [
        {"role": "roles/storage.objectCreator", "members": [format!("serviceAccount:{me}")],
         "condition": {"title": "w", "expression":
            format!("resource.name.startsWith(\"projects/_/buckets/{b}/objects/w/\")")}},
        {"role": "roles/storage.objectViewer", "members": [format!("serviceAccount:{me}")],
         "condition": {"title": "t", "expression":
            "request.time < timestamp(\"2099-01-01T00:00:00Z\")"}},
    ]});
    let url = |path: &str| format!("{}{path}", authz.url);
    let (code, said) = call(
        "PUT",
        &url(&format!("/storage/v1/b/{b}/iam")),
        Some("owner-token"),
        &policy.to_string(),
    );
    assert_eq!(code, 200, "{said}");
    let upload = |name: &str| {
        url(&format!(
            "/upload/storage/v1/b/{b}/o?uploadType=media&name={name}"
        ))
    };
    let object = |name: &str| url(&format!("/storage/v1/b/{b}/o/{name}?alt=media"));

    assert_eq!(call("POST", &upload("w%2Fa.txt"), Some(&token), "1").0, 200);
    let (code, said) = call("POST", &upload("w%2Fa.txt"), Some(&token), "2");
    assert_eq!(code, 403, "replacing needs storage.objects.delete: {said}");
    assert!(said.contains("storage.objects.delete"), "{said}");
    assert_eq!(
        call("POST", &upload("elsewhere.txt"), Some(&token), "1").0,
        403
    );
    assert_eq!(call("GET", &object("w%2Fa.txt"), Some(&token), "").0, 403);
    assert!(
        authz
            .unevaluable()
            .iter()
            .any(|u| u.contains("request.time")),
        "{:?}",
        authz.unevaluable()
    );
    assert_eq!(gcs.get(b, "w/a.txt").as_deref(), Some("1"));
    assert_eq!(gcs.get(b, "elsewhere.txt"), None);
    assert_eq!(
        call("GET", &object("w%2Fa.txt"), Some("owner-token"), "").0,
        200
    );
    assert_eq!(
        call("POST", &upload("w%2Fa.txt"), Some("owner-token"), "3").0,
        200
    );
    assert_eq!(
        call("GET", &object("w%2Fa.txt"), Some("ya29.nobody"), "").0,
        401
    );
    assert_eq!(call("GET", &object("w%2Fa.txt"), None, "").0, 401);

    // While the bindings spread, what they will allow is refused, and said to be spreading.
    authz.set_delay(Duration::from_secs(3600));
    assert_eq!(call("POST", &upload("w%2Fb.txt"), Some(&token), "1").0, 403);
    authz.set_delay(Duration::ZERO);
    assert_eq!(call("POST", &upload("w%2Fb.txt"), Some(&token), "1").0, 200);
    alive.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(call("POST", &upload("w%2Fc.txt"), Some(&token), "1").0, 401);

    let seen: Vec<(String, String, bool)> = authz
        .refusals()
        .into_iter()
        .map(|r| (r.permission, r.identity, r.propagating))
        .collect();
    let me = me.to_owned();
    assert_eq!(
        seen,
        [
            ("storage.objects.delete".into(), me.clone(), false),
            ("storage.objects.create".into(), me.clone(), false),
            ("storage.objects.get".into(), me.clone(), false),
            ("authentication".into(), "an unknown token".into(), false),
            ("authentication".into(), "no token".into(), false),
            ("storage.objects.create".into(), me, true),
            (
                "authentication".into(),
                "a token of a deleted service account".into(),
                false
            ),
        ]
    );
}

/// Destroy uploads the VM's last output before the bindings that allow it go. Google gives
/// no lower bound on how fast a removed binding stops working, so here removals are
/// effective at once. (Before the VM depended on its grants they were deleted alongside
/// the VM, whose deletion makes that upload, and it was refused: `storage.objects.list` on
/// the output prefix.)
#[test]
fn destroy_uploads_the_last_output_before_the_bindings_go() {
    common::remove_leftover_containers(&["gcp-last"]);
    build_image("anycloud-e2e:v1");
    let stack = Stack::start("gcp-last", Duration::ZERO);
    stack.authz.set_revocation_delay(Duration::ZERO);
    let gcs = &stack.gcs;
    let bucket = naming::continent_bucket("eu", PROJECT);
    let account = naming::account_email("gcp-last", PROJECT);
    let (p, env) = stack.project(
        &config(
            &stack.host.user,
            &stack.endpoint.url,
            "{ retries: 5, retries_sleep: 1s }",
            r#"  gcp-last:
    provider: gcp
    region: europe-west4
    vm: { type: e2-standard-4 }
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, /job.sh]
    buckets: { input: last-input, output: last-results }
"#,
        ),
        "gcp-last",
    );
    std::fs::create_dir_all(p.path().join("input")).unwrap();
    std::fs::write(p.path().join("input/data.txt"), "hello\n").unwrap();
    ok(&p, &env, &["bucket", "upload", "last-input", "input"]);
    ok(&p, &env, &["apply", "--auto-approve"]);
    wait_for(60, "ticks in the output prefix", || {
        gcs.get(&bucket, "last-results/tick.txt")
    });
    std::fs::write(
        stack.vm_root.join("mnt/output/last-words.txt"),
        "written just before destroy\n",
    )
    .unwrap();
    ok(&p, &env, &["destroy", "--auto-approve"]);
    assert_eq!(
        gcs.get(&bucket, "last-results/last-words.txt").as_deref(),
        Some("written just before destroy\n")
    );
    assert_eq!(
        unexpected(
            &stack.authz.refusals(),
            &account,
            &bucket,
            &["last-input", "last-results"],
            "last-results"
        ),
        Vec::<Refusal>::new()
    );
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

/// `bucket download` of a live prefix (a job's output, rewritten as it runs): an object
/// listed a moment ago and deleted since is not an error, and one absent for an instant
/// (fake-gcs-server replaces an object in two steps) is fetched once it is back. A stand-in
/// for Cloud Storage answers the listing and the downloads.
#[test]
fn bucket_download_of_a_live_prefix_takes_what_is_there() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let flicker = Arc::new(AtomicU32::new(0));
    let seen = flicker.clone();
    let addr = common::http_server::serve("127.0.0.1", move |req| {
        let seen = seen.clone();
        async move {
            let path = req.uri().path().to_owned();
            let query = req.uri().query().unwrap_or("").to_owned();
            let (status, body) = if query.contains("alt=media") {
                if path.ends_with("%2Fkept.txt") {
                    (200, "kept\n".to_owned())
                } else if path.ends_with("%2Fflicker.txt")
                    && seen.fetch_add(1, Ordering::SeqCst) > 0
                {
                    (200, "back\n".to_owned())
                } else {
                    (
                        404,
                        r#"{"error":{"code":404,"message":"No such object"}}"#.to_owned(),
                    )
                }
            } else if path.ends_with("/o") {
                let item = |n: &str| format!(r#"{{"name":"live-results/{n}","size":"5"}}"#);
                (
                    200,
                    format!(
                        r#"{{"items":[{},{},{}]}}"#,
                        item("kept.txt"),
                        item("gone.txt"),
                        item("flicker.txt")
                    ),
                )
            } else {
                (
                    404,
                    r#"{"error":{"code":404,"message":"Not found"}}"#.to_owned(),
                )
            };
            hyper::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap()
        }
    });
    let url = format!("http://{addr}");
    let mut p = Project::new(&format!(
        r#"
project: live
providers:
  gcp: {{ project: acme-ml-prod, endpoints: {{ storage: "{url}", iam: "{url}", compute: "{url}" }} }}
deployments:
  live:
    provider: gcp
    region: europe-west4
    vm: {{ type: e2-standard-4 }}
    container: {{ image: busybox }}
    buckets: {{ output: live-results }}
"#
    ));
    p.env = vec![("GOOGLE_OAUTH_ACCESS_TOKEN".into(), "ya29.stand-in".into())];
    let r = p.run(&["bucket", "download", "live-results", "fetched"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("Downloaded 2 file(s)"), "{r:?}");
    let fetched = p.path().join("fetched");
    assert_eq!(read(&fetched.join("kept.txt")).as_deref(), Some("kept"));
    assert_eq!(read(&fetched.join("flicker.txt")).as_deref(), Some("back"));
    assert!(!fetched.join("gone.txt").exists());
    assert_eq!(
        common::files_under(&fetched).len(),
        2,
        "no staging file is left behind"
    );
}
