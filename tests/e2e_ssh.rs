//! End to end with `provider: ssh` against a real test host: a network namespace of its own
//! with OpenSSH's sshd, where every VM step runs over SSH (russh) with real supervisord,
//! rclone and Docker. Covers the deployment key (generated, refused until authorised), data
//! through input/output/checkpoint, drift repaired, a connection cut mid-apply, a changed host
//! key refused, and a destroy that flushes.
//!
//! Needs root with docker, supervisord, rclone, sshd and ip (`scripts/prereqs.sh`).

mod common;

#[path = "../providers/host/tests/support/sshd.rs"]
mod sshd;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{build_image, containers_of, read, wait_for, Project};
use sshd::TestHost;

fn config(host: &TestHost, root: &Path, extra_vm: &str) -> String {
    format!(
        r#"
project: e2e-ssh
deployments:
  ssh-alpha:
    provider: ssh
    vm: {{ host: {address}, port: {port}, user: {user}, root: {root}{extra_vm} }}
    sync_interval: 1s
    connectivity_check: {{ retries: 2, retries_sleep: 1s }}
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, /job.sh]
    buckets: {{ input: ssh-input, output: ssh-results, checkpoint: true }}
  ssh-beta:
    provider: ssh
    vm: {{ host: {address}, port: {port}, user: {user}, root: {root}{extra_vm} }}
    sync_interval: 1s
    connectivity_check: {{ retries: 2, retries_sleep: 1s }}
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, /job.sh]
    buckets: {{ output: ssh-results-beta }}
"#,
        address = host.address,
        port = host.port,
        user = host.user,
        root = root.display(),
    )
}

struct Machine {
    root: PathBuf,
}

impl Machine {
    fn bucket(&self, name: &str) -> PathBuf {
        self.root.join("buckets").join(name)
    }
    fn host_dir(&self) -> PathBuf {
        self.root.join("hosts/ssh-alpha")
    }
    fn supervisord_conf(&self) -> PathBuf {
        self.host_dir().join("supervisor/supervisord.conf")
    }
}

fn state(p: &Project) -> serde_json::Value {
    p.state_json().expect("a state")
}

fn processes_named(host: &TestHost, name: &str) -> usize {
    host.pids()
        .iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .contains(name)
        })
        .count()
}

#[test]
fn ssh_machine_end_to_end() {
    common::remove_leftover_containers(&["ssh-alpha", "ssh-beta"]);
    build_image("anycloud-e2e:v1");
    // Declared before the project so it is dropped after it: the project's drop destroys
    // over SSH. The machine's login user is not root and uses sudo, as on cloud images.
    let mut host = TestHost::start().with_sudo_user();
    assert_ne!(host.user, "root");
    let m = Machine {
        root: host.dir.path().join("root"),
    };
    std::fs::create_dir_all(m.bucket("ssh-input")).unwrap();
    std::fs::write(
        m.bucket("ssh-input").join("data.txt"),
        "hello from the input bucket\n",
    )
    .unwrap();
    let p = Project::new(&config(&host, &m.root, ""));

    // The deployment's key is made on first use; until the machine lists it, anycloud says
    // exactly which line to add, and changes nothing.
    let refused = p.run(&["plan"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    let public = read(&p.path().join(".anycloud/keys/ssh-alpha.pub")).expect("a public key");
    assert!(public.starts_with("ssh-ed25519 "), "{public}");
    assert!(refused.stderr.contains(&public), "{refused:?}");
    assert!(refused.stderr.contains("authorized_keys"), "{refused:?}");
    let key_mode = std::fs::metadata(p.path().join(".anycloud/keys/ssh-alpha")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode.permissions()) & 0o777,
        0o600
    );
    host.authorize(&public);

    // Each deployment has its own key: beta's (made when its VM is first reached) is not
    // authorised yet, so beta stops there while alpha goes all the way.
    let half = p.run(&["apply", "--auto-approve"]);
    assert_eq!(half.code, 1, "{half:?}");
    let beta = read(&p.path().join(".anycloud/keys/ssh-beta.pub")).expect("beta's public key");
    assert_ne!(beta, public);
    assert!(
        half.stdout.contains(&beta) || half.stderr.contains(&beta),
        "{half:?}"
    );
    assert_eq!(containers_of("ssh-alpha"), 1, "{half:?}");
    assert_eq!(containers_of("ssh-beta"), 0, "{half:?}");
    host.authorize(&beta);

    let applied = p.ok(&["apply", "--auto-approve"]);
    assert!(applied.stdout.contains("Apply complete!"), "{applied:?}");

    // The steps ran inside the test host: the supervisords live in the host's namespace.
    assert_eq!(processes_named(&host, "supervisord"), 2);
    assert_eq!(containers_of("ssh-alpha"), 1);
    assert_eq!(containers_of("ssh-beta"), 1);
    wait_for(30, "beta's output in its bucket", || {
        read(&m.bucket("ssh-results-beta").join("tick.txt")).filter(|c| !c.is_empty())
    });
    let copy = wait_for(30, "the input copy in the output bucket", || {
        read(&m.bucket("ssh-results").join("input-copy.txt")).filter(|c| !c.is_empty())
    });
    assert_eq!(copy, "hello from the input bucket");
    let mode = wait_for(30, "the input mode in the output bucket", || {
        read(&m.bucket("ssh-results").join("input-mode.txt")).filter(|c| !c.is_empty())
    });
    assert_eq!(mode, "read-only");
    wait_for(30, "a checkpoint in the checkpoint bucket", || {
        read(&m.bucket("ssh-alpha").join("counter")).filter(|c| c.parse::<u64>().is_ok())
    });

    // State pins the host key and holds the public half of the deployment key only.
    let s = state(&p);
    let vm = &s["resources"]["deployment.ssh-alpha.vm"]["attributes"];
    assert_eq!(vm["host_key"], host.host_key_fingerprint.as_str());
    assert_eq!(vm["public_key"], public.as_str());
    assert!(vm["key_fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("SHA256:"));
    let again = p.run(&["plan", "--detailed-exitcode", "-v"]);
    assert_eq!(again.code, 0, "a second plan must be clean: {again:?}");
    // The job's output, over SSH from the machine.
    let logs = p.ok(&["logs", "ssh-alpha"]);
    assert!(logs.stdout.starts_with("resuming from "), "{logs:?}");
    // The refresh of both deployments (18 resources) is one round trip to their machine
    // per deployment key: each deployment signs in with its own.
    assert!(
        again.stderr.contains("refresh of 18 resources")
            && again
                .stderr
                .contains("(ssh: 2 remote calls over 2 connections)"),
        "{again:?}"
    );

    // Drift: an upload program stopped by hand and the container stopped by hand are both
    // seen by the refresh and put back by apply.
    let ctl = format!(
        "supervisorctl -c {} stop rclone-output",
        m.supervisord_conf().display()
    );
    assert!(common::sh(&format!("{ctl} && echo stopped")).contains("stopped"));
    common::sh("docker stop --time 1 $(docker ps -q --filter label=anycloud.deployment=ssh-alpha)");
    let drift = p.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(drift.code, 2, "{drift:?}");
    assert!(
        drift
            .stdout
            .contains("deployment.ssh-alpha.service.output will be updated in place"),
        "{drift:?}"
    );
    assert!(
        drift
            .stdout
            .contains("deployment.ssh-alpha.container will be created"),
        "{drift:?}"
    );
    p.ok(&["apply", "--auto-approve"]);
    let status = common::sh(&format!(
        "supervisorctl -c {} status rclone-output",
        m.supervisord_conf().display()
    ));
    assert!(status.contains("RUNNING"), "{status}");
    assert_eq!(containers_of("ssh-alpha"), 1);
    assert_eq!(
        common::sh("docker inspect -f '{{.State.Status}}' $(docker ps -aq --filter label=anycloud.deployment=ssh-alpha)"),
        "running"
    );
    assert_eq!(p.run(&["plan", "--detailed-exitcode"]).code, 0);

    // The connection is cut while the machine is being set up again (its host dir wiped,
    // so the VM and everything on it are re-created): sshd and every session die for a few
    // seconds, and apply retries until it converges.
    std::fs::remove_dir_all(m.host_dir()).unwrap();
    let apply = p
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let cut_during = wait_for(60, "VM init to be under way", || {
        let s = p.state_json()?;
        let init = &s["resources"]["deployment.ssh-alpha.vm_init"];
        (init["pending"].is_string()).then(|| init["pending"].to_string())
    });
    host.stop_sshd();
    std::thread::sleep(Duration::from_secs(3));
    host.start_sshd();
    let out = apply.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "apply after the cut (during vm_init {cut_during}) failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The cut was seen and waited out (a step in flight is retried; a step started during
    // the cut waits for SSH), not slipped through between steps.
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("retrying in") || shown.contains("waiting for SSH"),
        "{shown}"
    );
    let s = state(&p);
    for (address, r) in s["resources"].as_object().unwrap() {
        assert!(r.get("pending").is_none(), "{address} is still pending");
    }
    assert_eq!(p.run(&["plan", "--detailed-exitcode"]).code, 0);
    assert_eq!(containers_of("ssh-alpha"), 1);
    assert_eq!(processes_named(&host, "supervisord"), 2);

    // A changed host key: plan and apply refuse, naming the host and both keys, and change
    // nothing. Pinning the new key in the config (after checking it) lets anycloud go on.
    let old_key = host.host_key_fingerprint.clone();
    host.replace_host_key();
    let before = std::fs::read(p.path().join(".anycloud/state.json")).unwrap();
    for args in [&["plan"][..], &["apply", "--auto-approve"][..]] {
        let r = p.run(args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(r.stderr.contains(&host.address), "{r:?}");
        assert!(r.stderr.contains(&old_key), "{r:?}");
        assert!(r.stderr.contains(&host.host_key_fingerprint), "{r:?}");
        assert!(!r.stderr.contains("panicked"), "{r:?}");
    }
    assert_eq!(
        std::fs::read(p.path().join(".anycloud/state.json")).unwrap(),
        before,
        "a refused host key must leave the state as it was"
    );
    let pin = format!(", host_key: \"{}\"", host.host_key_fingerprint);
    p.write_config(&config(&host, &m.root, &pin));
    p.ok(&["apply", "--auto-approve", "--refresh=false"]);
    assert_eq!(p.run(&["plan", "--detailed-exitcode"]).code, 0);

    // No private key material anywhere the engine wrote: state, its backup, a saved plan,
    // and every file on the machine (rclone.conf, supervisord's files, the logs).
    p.ok(&["plan", "--out", "saved.plan"]);
    // The key's secret in every form it could leak in: the file's own base64 lines (all but
    // the first, which every ed25519 key file shares) and the 32 secret bytes in hex.
    let key_file = p.path().join(".anycloud/keys/ssh-alpha");
    let private = std::fs::read_to_string(&key_file).unwrap();
    let mut secrets: Vec<String> = private
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .skip(1)
        .filter(|l| l.len() >= 20)
        .map(String::from)
        .collect();
    let (key, _) = anycloud_host::keys::load(&key_file).unwrap();
    let secret_bytes = key.key_data().ed25519().unwrap().private.to_bytes();
    secrets.push(hex::encode(secret_bytes));
    assert!(secrets.len() >= 3, "{secrets:?}");
    let leaks =
        |text: &str| text.contains("PRIVATE KEY") || secrets.iter().any(|s| text.contains(s));
    let mut scanned = 0;
    for dir in [p.path().to_path_buf(), m.root.clone()] {
        for file in common::files_under(&dir) {
            if file.starts_with(p.path().join(".anycloud/keys")) {
                continue;
            }
            let bytes = std::fs::read(&file).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!leaks(&text), "private key material in {}", file.display());
            scanned += 1;
        }
    }
    assert!(scanned > 10, "only {scanned} files scanned");
    // Nor in anything anycloud printed.
    for (what, run) in [
        ("refused plan", &refused),
        ("half apply", &half),
        ("apply", &applied),
        ("verbose plan", &again),
        ("drift plan", &drift),
    ] {
        for text in [&run.stdout, &run.stderr] {
            assert!(
                !leaks(text),
                "private key material in the output of the {what}"
            );
        }
    }

    // Destroy: what the job wrote just before reaches the bucket; the machine is left clean.
    std::fs::write(
        m.host_dir().join("mnt/output/last-words.txt"),
        "written just before destroy\n",
    )
    .unwrap();
    p.ok(&["destroy", "--auto-approve"]);
    assert_eq!(
        read(&m.bucket("ssh-results").join("last-words.txt")).as_deref(),
        Some("written just before destroy")
    );
    assert_eq!(containers_of("ssh-alpha"), 0);
    assert_eq!(containers_of("ssh-beta"), 0);
    assert_eq!(processes_named(&host, "supervisord"), 0);
    assert!(!m.host_dir().exists());
    assert!(m.bucket("ssh-results").exists(), "buckets are kept");
    assert!(p.ok(&["state", "list"]).stdout.trim().is_empty());
}

/// A host key set in the config (`vm.host_key`) is what every contact checks, the first
/// too: the input bucket is not read from (and no key is remembered for) a machine that
/// offers another key.
#[test]
fn a_configured_host_key_is_honoured_on_first_contact() {
    let host = TestHost::start().with_sudo_user();
    let root = host.dir.path().join("root");
    std::fs::create_dir_all(root.join("buckets/pinned-input")).unwrap();
    let wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let p = Project::new(&format!(
        r#"
project: pinned
deployments:
  pinned:
    provider: ssh
    vm: {{ host: {address}, port: {port}, user: {user}, root: {root}, host_key: "{wrong}" }}
    container: {{ image: busybox }}
    buckets: {{ input: pinned-input, output: pinned-results }}
"#,
        address = host.address,
        port = host.port,
        user = host.user,
        root = root.display(),
    ));
    let key =
        anycloud_host::keys::ensure_deployment_key(&p.path().join(".anycloud/keys"), "pinned")
            .unwrap();
    host.authorize(&key.public_key);
    let r = p.run(&["plan"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains(wrong), "{r:?}");
    assert!(r.stderr.contains(&host.host_key_fingerprint), "{r:?}");
    let known = read(&p.path().join(".anycloud/keys/known_hosts")).unwrap_or_default();
    assert!(!known.contains(&host.host_key_fingerprint), "{known}");
    let recorded = p
        .state_json()
        .and_then(|s| s["resources"].as_object().map(|r| r.len()))
        .unwrap_or(0);
    assert_eq!(recorded, 0, "nothing was recorded");
}
