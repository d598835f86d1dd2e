//! One failure model for a job's exit (issue 25, item 2), on the embedded local cloud with
//! real dockerd: a job that exits non-zero at once and one that exits after a few seconds
//! are the same thing. Apply succeeds and warns "the job of deployment D exited with code
//! 7"; the state records the container with how its job ended; `status` shows
//! "exited (code 7)"; the next plan has no changes. `anycloud run` exits with the job's
//! code and takes down what it made, or with `--keep-failed` keeps the machine of a failed
//! job and says how to take it down.
//!
//! Needs root with docker, supervisord and rclone installed (`.ci/run` provides them).

mod common;

use common::{build_image, containers_of, sh, wait_for, Project};

/// `exit 7` at once (within apply's first look at the job) and after 3 seconds (after it).
const FAST: &str = "echo 'no such file: data.csv'; exit 7";
const SLOW: &str = "sleep 3; echo 'loss is NaN'; exit 7";

fn config(jobs: &[(&str, &str)]) -> String {
    let mut text = r#"
project: exits
defaults:
  provider: local
  sync_interval: 1s
  connectivity_check: { retries: 2, retries_sleep: 1s }
deployments:
"#
    .to_owned();
    for (d, command) in jobs {
        text.push_str(&format!(
            "  {d}:\n    container:\n      image: anycloud-e2e:v1\n      command: [/bin/sh, -c, \"{command}\"]\n    buckets: {{ output: {d}-out }}\n"
        ));
    }
    text
}

fn exit_status(deployment: &str) -> String {
    sh(&format!(
        "docker inspect -f '{{{{.State.Status}}}} {{{{.State.ExitCode}}}}' $(docker ps -aq --no-trunc --filter label=anycloud.deployment={deployment})"
    ))
}

fn addresses_of(p: &Project, deployment: &str) -> Vec<String> {
    p.ok(&["state", "list"])
        .stdout
        .lines()
        .filter(|a| a.starts_with(&format!("deployment.{deployment}.")))
        .map(str::to_owned)
        .collect()
}

/// Both jobs: apply succeeds and names the failed job, the state keeps its container, the
/// plan after has no changes, and `status` shows how it exited.
#[test]
fn a_job_that_exits_fast_or_slow_is_kept_shown_and_not_made_again() {
    let jobs = [("exits-fast", FAST), ("exits-slow", SLOW)];
    common::remove_leftover_containers(&["exits-fast", "exits-slow"]);
    build_image("anycloud-e2e:v1");
    let p = Project::new(&config(&jobs));

    let applied = p.run(&["apply", "--auto-approve"]);
    assert_eq!(
        applied.code, 0,
        "the job's failure is not the apply's: {applied:?}"
    );
    let said = format!("{}{}", applied.stdout, applied.stderr);
    assert!(
        said.contains("the job of deployment exits-fast exited with code 7"),
        "the apply names the failed job: {said}"
    );
    assert!(said.contains("| no such file: data.csv"), "{said}");
    assert!(!said.contains("docker run failed"), "{said}");
    wait_for(30, "the slow job to exit", || {
        (exit_status("exits-slow") == "exited 7").then_some(())
    });
    assert_eq!(exit_status("exits-fast"), "exited 7");

    for (d, _) in jobs {
        let container = format!("deployment.{d}.container");
        assert!(
            addresses_of(&p, d).contains(&container),
            "the state records {container}"
        );
        let status = p.ok(&["status", d]).stdout;
        assert!(status.contains("job: exited (code 7) at "), "{status}");
        assert!(!status.contains("MISSING"), "{status}");
    }
    let status = p.ok(&["status", "exits-fast"]).stdout;
    assert!(status.contains("no such file: data.csv"), "{status}");

    let plan = p.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "an exited job is no change: {plan:?}");
    for (d, _) in jobs {
        assert!(
            plan.stdout
                .contains(&format!("the job of deployment {d} exited with code 7 at ")),
            "{plan:?}"
        );
    }
    // Nothing was made again: the same containers, their logs kept.
    let again = p.ok(&["apply", "--auto-approve"]);
    assert!(again.stdout.contains("No changes."), "{again:?}");
    assert_eq!(containers_of("exits-fast"), 1);
    assert_eq!(exit_status("exits-fast"), "exited 7");

    p.ok(&["destroy", "--auto-approve"]);
    for (d, _) in jobs {
        assert_eq!(containers_of(d), 0, "{d} is gone after destroy");
    }
}

/// `run` of either job exits 7 and takes down everything it made; with `--keep-failed` it
/// still exits 7 and keeps the machine, the container and the state, and says how to take
/// them down.
#[test]
fn run_exits_with_the_jobs_code_fast_or_slow_and_keeps_a_failed_machine_when_asked() {
    let jobs = [
        ("runs-fast", FAST),
        ("runs-slow", SLOW),
        ("keeps-fast", FAST),
        ("keeps-slow", SLOW),
    ];
    common::remove_leftover_containers(&jobs.map(|(d, _)| d));
    build_image("anycloud-e2e:v1");
    let p = Project::new(&config(&jobs));

    for d in ["runs-fast", "runs-slow"] {
        let ran = p.run(&["run", d, "--auto-approve"]);
        assert_eq!(ran.code, 7, "the job's exit code: {ran:?}");
        assert!(
            ran.stdout.contains("The job exited with code 7."),
            "{ran:?}"
        );
        assert!(ran.stdout.contains("Destroy complete!"), "{ran:?}");
        assert_eq!(containers_of(d), 0, "what run made is gone");
        assert!(!p.host(d).exists(), "its machine too");
        assert!(addresses_of(&p, d).is_empty(), "and forgotten");
    }

    for d in ["keeps-fast", "keeps-slow"] {
        let ran = p.run(&["run", d, "--keep-failed", "--auto-approve"]);
        assert_eq!(ran.code, 7, "the job's exit code: {ran:?}");
        assert!(
            ran.stdout.contains("The job exited with code 7."),
            "{ran:?}"
        );
        assert!(!ran.stdout.contains("Destroy complete!"), "{ran:?}");
        let said = format!("{}{}", ran.stdout, ran.stderr);
        assert!(
            said.contains(&format!("anycloud destroy --target deployment.{d}")),
            "it says how to take it down: {said}"
        );
        assert_eq!(containers_of(d), 1, "the failed job's container is kept");
        assert!(p.host(d).exists(), "and its machine");
        assert!(
            addresses_of(&p, d).contains(&format!("deployment.{d}.container")),
            "and the state says so"
        );
    }

    p.ok(&["destroy", "--auto-approve"]);
    for (d, _) in jobs {
        assert_eq!(containers_of(d), 0, "{d} is gone after destroy");
    }
}
