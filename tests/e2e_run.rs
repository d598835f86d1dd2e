//! `anycloud run` takes down only what it made, on the embedded local cloud with real
//! dockerd: a deployment that existed before the run (its job already ended) is left as it
//! was, checkpoint and all; a fresh one is taken down whole; of one whose job the run
//! started again on a machine that was already there, only the new container goes.
//!
//! Needs root with docker, supervisord and rclone installed (`.ci/run` provides them).

mod common;

use common::{build_image, containers_of, read, sh, supervisords_of, wait_for, Project};

fn config(deployment: &str, step: &str) -> String {
    format!(
        r#"
project: owns
defaults:
  provider: local
  sync_interval: 1s
  connectivity_check: {{ retries: 2, retries_sleep: 1s }}
deployments:
  {deployment}:
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, -c, "echo {step} > /mnt/checkpoint/step.txt; echo trained to {step}"]
    buckets: {{ output: {deployment}-out, checkpoint: true }}
"#
    )
}

fn addresses(p: &Project) -> Vec<String> {
    p.ok(&["state", "list"])
        .stdout
        .lines()
        .map(str::to_owned)
        .collect()
}

fn job_status(deployment: &str) -> String {
    sh(&format!(
        "docker inspect -f '{{{{.State.Status}}}} {{{{.State.ExitCode}}}}' $(docker ps -aq --no-trunc --filter label=anycloud.deployment={deployment})"
    ))
}

/// Applies `deployment` and waits until its job has ended and its checkpoint is uploaded.
fn deployed_and_ended(deployment: &str, step: &str) -> Project {
    common::remove_leftover_containers(&[deployment]);
    build_image("anycloud-e2e:v1");
    let p = Project::new(&config(deployment, step));
    p.ok(&["apply", "--auto-approve"]);
    wait_for(30, "the job to end", || {
        (job_status(deployment) == "exited 0").then_some(())
    });
    let uploaded = p.bucket(deployment).join("step.txt");
    wait_for(30, "the checkpoint in its bucket", || {
        (read(&uploaded).as_deref() == Some(step)).then_some(())
    });
    p
}

/// A deployment that existed, its job ended, the config unchanged: `run` applies nothing
/// and destroys nothing, says so, and names the command that takes it down. Its checkpoint
/// stays on its machine, in its bucket and in the state.
#[test]
fn run_leaves_a_deployment_that_existed_before_it() {
    let d = "owns-ended";
    let p = deployed_and_ended(d, "step-1");
    let before = addresses(&p);
    assert!(
        before.contains(&format!("deployment.{d}.bucket.checkpoint")),
        "{before:?}"
    );

    let again = p.run(&["run", d, "--auto-approve"]);
    assert_eq!(again.code, 0, "the ended job's code: {again:?}");
    let said = format!("{}{}", again.stdout, again.stderr);
    assert!(!said.contains("Destroy complete"), "{again:?}");
    assert!(
        said.contains("had already ended before this run"),
        "it says why nothing is taken down: {again:?}"
    );
    assert!(
        said.contains(&format!("`anycloud destroy --target deployment.{d}`")),
        "and how to take it down: {again:?}"
    );
    assert_eq!(addresses(&p), before, "the state is as it was");
    assert_eq!(containers_of(d), 1, "the job's container is kept");
    assert!(p.host(d).exists(), "its machine is kept");
    assert_eq!(supervisords_of(&p.host(d)), 1, "its uploads still run");
    assert_eq!(
        read(&p.host(d).join("mnt/checkpoint/step.txt")).as_deref(),
        Some("step-1"),
        "the checkpoint on the machine is kept"
    );
    assert_eq!(
        read(&p.bucket(d).join("step.txt")).as_deref(),
        Some("step-1"),
        "the checkpoint in its bucket is kept"
    );
    assert_eq!(
        p.run(&["plan", "--detailed-exitcode"]).code,
        0,
        "nothing to do after it"
    );

    p.ok(&["destroy", "--auto-approve"]);
    assert_eq!(containers_of(d), 0);
}

/// A deployment `run` makes from nothing, it takes down whole once the job has ended:
/// nothing of it is left running or in the state (its buckets' data kept).
#[test]
fn run_takes_down_a_deployment_it_made() {
    let d = "owns-fresh";
    common::remove_leftover_containers(&[d]);
    build_image("anycloud-e2e:v1");
    // With an input: the run reads it first, so its record is the run's to forget too.
    let with_input = config(d, "step-1").replace(
        "buckets: { output:",
        &format!("buckets: {{ input: {d}-in, output:"),
    );
    assert!(with_input.contains("input:"), "{with_input}");
    let p = Project::new(&with_input);
    std::fs::create_dir_all(p.bucket(&format!("{d}-in"))).unwrap();
    std::fs::write(p.bucket(&format!("{d}-in")).join("data.txt"), "data\n").unwrap();

    let ran = p.run(&["run", d, "--auto-approve"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.contains("trained to step-1"), "{ran:?}");
    assert!(ran.stdout.contains("Destroy complete!"), "{ran:?}");
    assert!(!ran.stdout.contains("existed before this run"), "{ran:?}");
    assert_eq!(containers_of(d), 0, "what run made is gone");
    assert!(!p.host(d).exists());
    assert!(
        !addresses(&p)
            .iter()
            .any(|a| a.starts_with(&format!("deployment.{d}."))),
        "and forgotten"
    );
    assert_eq!(
        read(&p.bucket(d).join("step.txt")).as_deref(),
        Some("step-1"),
        "the last upload reached the checkpoint bucket, which is kept"
    );
}

/// A deployment that existed, whose job the run starts again (its command changed): the
/// run replaces the container, follows the new job, and takes down only that container.
/// The machine, its upload programs, the buckets and the checkpoint were there before the
/// run and stay, and the run names them.
#[test]
fn run_takes_down_only_the_job_it_started_on_a_machine_that_was_there() {
    let d = "owns-rerun";
    let p = deployed_and_ended(d, "step-1");
    let before = addresses(&p);
    p.write_config(&config(d, "step-2"));

    let ran = p.run(&["run", d, "--auto-approve"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.contains("trained to step-2"), "{ran:?}");
    assert!(
        ran.stdout
            .contains("Destroy complete! Resources: 1 destroyed."),
        "only the container: {ran:?}"
    );
    let said = format!("{}{}", ran.stdout, ran.stderr);
    assert!(
        said.contains("existed before this run")
            && said.contains(&format!("deployment.{d}.bucket.checkpoint"))
            && said.contains(&format!("`anycloud destroy --target deployment.{d}`")),
        "it names what it left and how to take it down: {ran:?}"
    );
    let container = format!("deployment.{d}.container");
    let after = addresses(&p);
    assert_eq!(
        after,
        before
            .iter()
            .filter(|a| **a != container)
            .cloned()
            .collect::<Vec<_>>(),
        "everything but the container is still recorded"
    );
    assert_eq!(containers_of(d), 0, "the new job's container is gone");
    assert!(p.host(d).exists(), "the machine is kept");
    assert_eq!(supervisords_of(&p.host(d)), 1, "its uploads still run");
    // The container's last upload came first: the new job's checkpoint is in the bucket.
    assert_eq!(
        read(&p.bucket(d).join("step.txt")).as_deref(),
        Some("step-2")
    );
    assert_eq!(
        read(&p.host(d).join("mnt/checkpoint/step.txt")).as_deref(),
        Some("step-2"),
        "and still on the machine"
    );

    p.ok(&["destroy", "--auto-approve"]);
    assert!(!p.host(d).exists());
}
