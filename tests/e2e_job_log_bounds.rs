//! A job that prints much, on the embedded local cloud: Docker keeps a bounded log of it
//! (the options anycloud gives when it starts the job, not in the recorded run spec), and
//! `logs` brings all of it over in pieces, never the whole log in memory at once.
//!
//! Needs root with docker, supervisord and rclone installed (`.ci/run` provides them).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{build_image, sh, wait_for, Project};

const DEPLOYMENT: &str = "out-loud";
/// About 53 MB of output, 72 MB with Docker's timestamps: many pieces of a read.
const LINES: usize = 600_000;
const PAD: &str =
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

fn config() -> String {
    format!(
        r#"
project: loud
defaults:
  provider: local
  sync_interval: 1s
  connectivity_check: {{ retries: 2, retries_sleep: 1s }}
deployments:
  {DEPLOYMENT}:
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, -c, "/bin/busybox seq 1 {LINES} | /bin/busybox sed 's/$/ {PAD}/'"]
    buckets: {{ output: loud-out }}
"#
    )
}

/// The peak resident memory of process `pid` so far, in KiB (None once it is gone).
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn a_loud_job_has_a_bounded_log_read_in_pieces() {
    common::remove_leftover_containers(&[DEPLOYMENT]);
    build_image("anycloud-e2e:v1");
    let p = Project::new(&config());
    p.ok(&["apply", "--auto-approve"]);
    let container = sh(&format!(
        "docker ps -aq --filter label=anycloud.deployment={DEPLOYMENT}"
    ));
    assert!(!container.is_empty(), "the job's container");

    // Docker keeps at most 4 files of 64 MiB of it, where it logs to files by default.
    if sh("docker info -f '{{.LoggingDriver}}'") == "json-file" {
        let config = sh(&format!(
            "docker inspect -f '{{{{json .HostConfig.LogConfig.Config}}}}' {container}"
        ));
        assert_eq!(config, r#"{"max-file":"4","max-size":"64m"}"#);
    }
    wait_for(120, "the job to end", || {
        (sh(&format!(
            "docker inspect -f '{{{{.State.Status}}}}' {container}"
        )) == "exited")
            .then_some(())
    });
    // The options are the daemon's, not the plan's: nothing to change.
    let plan = p.ok(&["plan", "--detailed-exitcode"]);
    assert!(plan.stdout.contains("No changes"), "{}", plan.stdout);

    // All of it, in order, through pieces of a few MiB each.
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut logs = p
        .command(&["logs", DEPLOYMENT])
        .stdout(Stdio::from(out.reopen().unwrap()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak = 0;
    while logs.try_wait().unwrap().is_none() {
        peak = peak_kib(logs.id()).unwrap_or(0).max(peak);
        std::thread::sleep(Duration::from_millis(20));
    }
    let done = logs.wait_with_output().unwrap();
    assert!(done.status.success(), "{done:?}");
    let text = std::fs::read_to_string(out.path()).unwrap();
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        assert_eq!(line, format!("{} {PAD}", i + 1), "line {}", i + 1);
        n += 1;
    }
    assert_eq!(n, LINES);
    // A whole read of the log (72 MB, as one string, then as lines) would take several
    // times this.
    assert!(peak < 64 * 1024, "logs peaked at {peak} KiB");
    eprintln!("logs of {} bytes peaked at {peak} KiB", text.len());

    // A job an earlier anycloud started, without log options, runs on untouched: they are
    // no part of what the state records, so an upgrade replaces no running job.
    let name = sh(&format!("docker inspect -f '{{{{.Name}}}}' {container}"));
    let digest = sh(&format!(
        "docker inspect -f '{{{{index .Config.Labels \"anycloud.spec\"}}}}' {container}"
    ));
    sh(&format!("docker rm -f {container}"));
    let earlier = sh(&format!(
        "docker run --detach --name {name} --label anycloud.deployment={DEPLOYMENT} \
         --label anycloud.spec={digest} --log-driver json-file anycloud-e2e:v1 /bin/sh -c 'sleep 600'",
        name = name.trim_start_matches('/')
    ));
    assert!(!earlier.is_empty());
    let plan = p.ok(&["plan", "--detailed-exitcode"]);
    assert!(plan.stdout.contains("No changes"), "{}", plan.stdout);
    p.ok(&["apply", "--auto-approve"]);
    assert_eq!(
        sh(&format!(
            "docker ps -q --no-trunc --filter label=anycloud.deployment={DEPLOYMENT}"
        )),
        earlier,
        "the running job is the one started before"
    );

    p.ok(&["destroy", "--auto-approve"]);
}
