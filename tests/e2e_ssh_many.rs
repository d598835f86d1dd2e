//! Many deployments on one machine, and one machine that does not answer among several.
//!
//! 200 `provider: ssh` deployments on one test host, each signing in with its own key,
//! against sshd's default limits (`MaxStartups 10:30:100`: connections still authenticating
//! beyond 10 are dropped at random; `MaxSessions 10` channels per connection): apply and
//! refresh converge without a dropped connection, with the connections and round trips
//! that `-v` prints. And a host whose sshd is gone fails only its own deployment, with its
//! address and how long it was tried, while the others' plans come out and apply.
//!
//! Needs root with docker, supervisord, rclone, sshd and ip (`scripts/prereqs.sh`).

mod common;

#[path = "../providers/host/tests/support/sshd.rs"]
mod sshd;

use std::fmt::Write as _;
use std::path::Path;

use common::{build_image, sh, Project};
use sshd::TestHost;

const MANY: usize = 200;

fn deployment(name: &str, host: &TestHost, root: &Path, env: &str) -> String {
    format!(
        "  {name}:\n    provider: ssh\n    vm: {{ host: {}, port: {}, user: {}, root: {} }}\n    sync_interval: 30s\n    container:\n      image: anycloud-e2e:v1\n      command: [/bin/sh, -c, \"sleep 3600\"]\n      env: {{ RUN: \"{env}\" }}\n",
        host.address,
        host.port,
        host.user,
        root.display()
    )
}

/// Containers of deployments whose names start with `prefix`, in one call to Docker.
fn containers_with_prefix(prefix: &str, all: bool) -> Vec<String> {
    sh(&format!(
        "docker ps {} --format '{{{{.ID}}}} {{{{.Label \"anycloud.deployment\"}}}}'",
        if all { "-a" } else { "" }
    ))
    .lines()
    .filter_map(|l| l.split_once(' '))
    .filter(|(_, d)| d.starts_with(prefix))
    .map(|(id, _)| id.to_owned())
    .collect()
}

fn remove_leftovers(prefix: &str) {
    for id in containers_with_prefix(prefix, true) {
        eprintln!("removing container {id}, left by an earlier run");
        sh(&format!("docker rm -f {id}"));
    }
}

/// The `-v` line of a refresh: `(ssh: N remote calls over M connections)`.
fn refresh_counts(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("(ssh: "))
        .unwrap_or_else(|| panic!("-v names the refresh's calls: {stderr}"));
    let rest = &line[line.find("(ssh: ").unwrap() + 6..];
    let calls: u64 = rest.split(' ').next().unwrap().parse().unwrap();
    let connections: u64 = rest
        .split(" over ")
        .nth(1)
        .map(|r| r.split(' ').next().unwrap().parse().unwrap())
        .unwrap_or(0);
    (calls, connections)
}

#[test]
fn two_hundred_deployments_on_one_host_within_sshds_default_limits() {
    remove_leftovers("many-");
    build_image("anycloud-e2e:v1");
    let host = TestHost::start().with_sudo_user();
    let root = host.dir.path().join("root");
    let mut config = String::from("project: e2e-many\ndeployments:\n");
    for i in 0..MANY {
        config.push_str(&deployment(&format!("many-{i:03}"), &host, &root, "1"));
    }
    let p = Project::new(&config);

    // Each deployment's key is made when its machine is first reached, and refused until the
    // machine lists it: nothing is made meanwhile.
    let refused = p.run(&["apply", "--auto-approve"]);
    assert_eq!(refused.code, 1, "{}", tail(&refused.stderr));
    let mut keys = 0;
    for i in 0..MANY {
        let public = p.path().join(format!(".anycloud/keys/many-{i:03}.pub"));
        if let Some(line) = common::read(&public) {
            host.authorize(&line);
            keys += 1;
        }
    }
    assert_eq!(keys, MANY, "every deployment has its own key");
    let refused_phase = host.sshd_log().len();

    let applied = p.run(&["apply", "--auto-approve", "-v"]);
    assert_eq!(
        applied.code,
        0,
        "{}\n{}",
        tail(&applied.stdout),
        tail(&applied.stderr)
    );
    assert!(applied.stdout.contains("Apply complete!"));
    let running = containers_with_prefix("many-", false);
    assert_eq!(running.len(), MANY, "one running container per deployment");
    let apply_line = applied
        .stderr
        .lines()
        .find(|l| l.starts_with("apply: ssh:"))
        .unwrap_or_else(|| panic!("-v reports the apply's calls: {}", tail(&applied.stderr)));
    eprintln!("{apply_line}");

    // A refresh: one round trip per deployment (each has its own key, so its own
    // connection), never more connections than keys.
    let planned = p.run(&["plan", "-v", "--detailed-exitcode"]);
    assert_eq!(planned.code, 0, "{}", tail(&planned.stderr));
    assert!(planned.stdout.contains("No changes."), "{}", planned.stdout);
    let (calls, connections) = refresh_counts(&planned.stderr);
    eprintln!("refresh of {MANY} deployments: {calls} round trips over {connections} connections");
    assert_eq!(calls, MANY as u64, "{}", planned.stderr);
    assert_eq!(connections, MANY as u64, "{}", planned.stderr);

    // sshd dropped nothing: no start was refused for MaxStartups, no session for MaxSessions.
    let log = host.sshd_log();
    for refused in [
        "drop connection",
        "exceeded MaxStartups",
        "no more sessions",
    ] {
        let at = log.find(refused);
        assert!(
            at.is_none(),
            "sshd: {refused} ({} the first apply, whose keys were not yet listed):\n{}",
            if at < Some(refused_phase) {
                "during"
            } else {
                "after"
            },
            log.lines()
                .filter(|l| l.contains(refused))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        !applied.stderr.contains("waiting for SSH"),
        "{}",
        tail(&applied.stderr)
    );
    assert!(
        !planned.stderr.contains("waiting for SSH"),
        "{}",
        tail(&planned.stderr)
    );

    let destroyed = p.run(&["destroy", "--auto-approve"]);
    assert_eq!(destroyed.code, 0, "{}", tail(&destroyed.stderr));
    assert!(containers_with_prefix("many-", true).is_empty());
}

/// A machine that stopped answering fails its own deployment, named with its address and
/// how long it was tried; the other machine's deployments are planned and applied.
#[test]
fn an_unreachable_machine_fails_only_its_own_deployment() {
    remove_leftovers("reach-");
    build_image("anycloud-e2e:v1");
    let up = TestHost::start().with_sudo_user();
    let mut down = TestHost::start().with_sudo_user();
    let root_up = up.dir.path().join("root");
    let root_down = down.dir.path().join("root");
    let (a, b) = (
        deployment("reach-a", &up, &root_up, "RUN"),
        deployment("reach-b", &up, &root_up, "RUN"),
    );
    let gone = deployment("reach-gone", &down, &root_down, "RUN");
    let config = |run: &str| {
        format!("project: e2e-reach\ndeployments:\n{a}{b}{gone}")
            .replace("RUN: \"RUN\"", &format!("RUN: \"{run}\""))
    };
    let p = Project::new(&config("1"));
    let _ = p.run(&["apply", "--auto-approve"]);
    for (name, host) in [("reach-a", &up), ("reach-b", &up), ("reach-gone", &down)] {
        let line = common::read(&p.path().join(format!(".anycloud/keys/{name}.pub")))
            .expect("a key per deployment");
        host.authorize(&line);
    }
    p.ok(&["apply", "--auto-approve"]);
    assert_eq!(containers_with_prefix("reach-", false).len(), 3);

    down.stop_sshd();
    p.write_config(&config("2"));
    let planned = p.run(&["plan"]);
    assert_eq!(planned.code, 1, "{planned:?}");
    // The others' plans come out in full.
    for name in ["reach-a", "reach-b"] {
        assert!(
            planned
                .stdout
                .contains(&format!("deployment.{name}.container must be replaced")),
            "{}",
            planned.stdout
        );
    }
    assert!(!planned
        .stdout
        .contains("deployment.reach-gone.container must"));
    assert!(
        planned
            .stdout
            .contains("deployment reach-gone is left out of this plan"),
        "{}",
        planned.stdout
    );
    let error = planned
        .stderr
        .lines()
        .find(|l| l.contains("deployment reach-gone was left out"))
        .unwrap_or_else(|| panic!("{}", planned.stderr));
    assert!(
        error.contains(&format!("{}@{}:22", down.user, down.address)),
        "{error}"
    );
    assert!(error.contains("tried for 60s"), "{error}");

    // Apply does the others' part and fails for the one left out.
    let applied = p.run(&["apply", "--auto-approve"]);
    assert_eq!(applied.code, 1, "{applied:?}");
    assert!(applied.stdout.contains("Apply complete!"), "{applied:?}");
    assert!(applied
        .stderr
        .contains("deployment reach-gone was left out"));
    let state = p.state_json().unwrap();
    for name in ["reach-a", "reach-b"] {
        let env = &state["resources"][format!("deployment.{name}.container")]["attributes"]["env"];
        assert_eq!(env["RUN"], "2", "{name}: {env}");
    }
    let gone = &state["resources"]["deployment.reach-gone.container"]["attributes"]["env"];
    assert_eq!(
        gone["RUN"], "1",
        "the unreachable deployment is as it was: {gone}"
    );

    // Once it answers again, it catches up.
    down.start_sshd();
    p.ok(&["apply", "--auto-approve"]);
    let mut status = String::new();
    let _ = write!(status, "{}", p.ok(&["status", "reach-gone"]).stdout);
    assert!(status.contains("deployment reach-gone"), "{status}");
    assert!(!status.contains("deployment reach-a"), "{status}");
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
