//! `kill -9` trials beyond the local cloud: apply and destroy killed at random moments on
//! AWS (moto's S3, IAM and EC2, with every instance reached at a test host) and on a
//! `provider: ssh` machine, both logging in as a user who is not root and uses sudo, as cloud
//! images do. The invariants of `tests/kill9.rs`: the state always parses, nothing is
//! duplicated (one running instance, one container, one supervisord), and a later destroy
//! leaves nothing.
//!
//! Needs root, docker, supervisord, rclone, sshd, ip, curl and moto (`scripts/prereqs.sh`).

mod common;

#[path = "common/kill9.rs"]
mod kill9;

#[path = "../providers/host/tests/support/sshd.rs"]
mod sshd;

use common::moto::{xml_all, Moto};
use common::{build_image, containers_of, Project};
use sshd::TestHost;

const TRIALS: u32 = 20;

fn supervisords_in(host: &TestHost) -> usize {
    host.pids()
        .iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .unwrap_or_default()
                .trim()
                == "supervisord"
        })
        .count()
}

/// Instances moto has pending or running for the deployment.
fn live_instances(moto: &Moto, deployment: &str) -> usize {
    let found = moto.query(
        "ec2",
        &format!(
            "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag:anycloud:deployment&Filter.1.Value.1={deployment}&Filter.2.Name=instance-state-name&Filter.2.Value.1=pending&Filter.2.Value.2=running"
        ),
    );
    xml_all(&found, "instanceId").len()
}

#[test]
fn aws_apply_and_destroy_killed_at_random_moments() {
    common::remove_leftover_containers(&["kill-aws"]);
    build_image("anycloud-kill:v1");
    let host = TestHost::start_with_env(&[
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ])
    .with_sudo_user();
    let moto = Moto::start(&host.gateway);
    let vm_root = host.dir.path().join("vm");
    let mut p = Project::new(&format!(
        r#"
project: kill-aws
providers:
  aws: {{ ami: ami-12345678, ssh_user: {user}, ssh_cidr: 10.0.0.0/8 }}
defaults:
  sync_interval: 1s
  connectivity_check: {{ retries: 2, retries_sleep: 1s }}
deployments:
  kill-aws:
    provider: aws
    region: us-east-1
    vm: {{ type: t3.micro }}
    container: {{ image: "anycloud-kill:v1", command: [/bin/sh, /job.sh] }}
    buckets: {{ output: kill-aws-results, checkpoint: true }}
"#,
        user = host.user
    ));
    // moto at a loopback URL from here and from the VM alike: anycloud sends requests over
    // plain http only to loopback.
    let relay = common::relay::Relay::start(&host.namespace, &moto.url);
    p.env = moto.env();
    for (k, v) in p.env.iter_mut() {
        if k == "AWS_ENDPOINT_URL" {
            *v = relay.url.clone();
        }
    }
    p.env.push((
        "ANYCLOUD_TEST_SSH_ADDRESS".into(),
        format!("{}:{}", host.address, host.port),
    ));
    p.env.push((
        "ANYCLOUD_TEST_VM_ROOT".into(),
        vm_root.display().to_string(),
    ));
    let key =
        anycloud_host::keys::ensure_deployment_key(&p.path().join(".anycloud/keys"), "kill-aws")
            .unwrap();
    host.authorize(&key.public_key);
    let converged = |p: &Project, when: &str| {
        let plan = p.run(&["plan", "--detailed-exitcode"]);
        assert_eq!(plan.code, 0, "plan not clean {when}: {plan:?}");
        assert_eq!(live_instances(&moto, "kill-aws"), 1, "instances {when}");
        assert_eq!(containers_of("kill-aws"), 1, "containers {when}");
        assert_eq!(supervisords_in(&host), 1, "supervisords {when}");
    };
    let gone = |p: &Project, when: &str| {
        assert_eq!(live_instances(&moto, "kill-aws"), 0, "instances {when}");
        assert_eq!(containers_of("kill-aws"), 0, "containers {when}");
        assert_eq!(supervisords_in(&host), 0, "supervisords {when}");
        assert_eq!(p.ok(&["state", "list"]).stdout, "", "state {when}");
        let roles = moto.query("iam", "Action=ListRoles&Version=2010-05-08");
        assert!(!roles.contains("anycloud-kill-aws"), "role {when}");
    };
    let outcome = kill9::run(
        &p,
        &kill9::Checks {
            converged: &converged,
            gone: &gone,
        },
        TRIALS,
    );
    eprintln!(
        "aws: {} kills, {} mid-run",
        outcome.kills, outcome.interrupted
    );
}

#[test]
fn ssh_apply_and_destroy_killed_at_random_moments() {
    common::remove_leftover_containers(&["kill-ssh"]);
    build_image("anycloud-kill:v1");
    let host = TestHost::start().with_sudo_user();
    let root = host.dir.path().join("root");
    let p = Project::new(&format!(
        r#"
project: kill-ssh
deployments:
  kill-ssh:
    provider: ssh
    vm: {{ host: {address}, port: {port}, user: {user}, root: {root} }}
    sync_interval: 1s
    connectivity_check: {{ retries: 2, retries_sleep: 1s }}
    container: {{ image: "anycloud-kill:v1", command: [/bin/sh, /job.sh] }}
    buckets: {{ output: kill-ssh-results, checkpoint: true }}
"#,
        address = host.address,
        port = host.port,
        user = host.user,
        root = root.display(),
    ));
    let key =
        anycloud_host::keys::ensure_deployment_key(&p.path().join(".anycloud/keys"), "kill-ssh")
            .unwrap();
    host.authorize(&key.public_key);
    let host_dir = root.join("hosts/kill-ssh");
    let converged = |p: &Project, when: &str| {
        let plan = p.run(&["plan", "--detailed-exitcode"]);
        assert_eq!(plan.code, 0, "plan not clean {when}: {plan:?}");
        assert_eq!(containers_of("kill-ssh"), 1, "containers {when}");
        assert_eq!(supervisords_in(&host), 1, "supervisords {when}");
    };
    let gone = |p: &Project, when: &str| {
        assert_eq!(containers_of("kill-ssh"), 0, "containers {when}");
        assert_eq!(supervisords_in(&host), 0, "supervisords {when}");
        assert!(!host_dir.exists(), "the host directory {when}");
        assert_eq!(p.ok(&["state", "list"]).stdout, "", "state {when}");
    };
    let outcome = kill9::run(
        &p,
        &kill9::Checks {
            converged: &converged,
            gone: &gone,
        },
        TRIALS,
    );
    eprintln!(
        "ssh: {} kills, {} mid-run",
        outcome.kills, outcome.interrupted
    );
}
