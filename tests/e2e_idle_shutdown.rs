//! `idle_shutdown` without anycloud: on the embedded local cloud with real supervisord,
//! rclone and dockerd, `anycloud run` is killed once the job runs; the machine's own idle
//! watcher then uploads the job's last files, verifies them, and only then "powers itself
//! off" — on a test host a command the test observes (`ANYCLOUD_TEST_POWER_OFF`, read only
//! in builds with test hooks). A verification that fails powers nothing off.
//!
//! Needs root with docker, supervisord and rclone installed (`.ci/run` provides them).

mod common;

use std::path::Path;

use common::{build_image, read, sh, wait_for, Project};

/// A job that writes one file at once and another after 3 s, then exits 0. The upload
/// loop runs once an hour: only the final upload can bring the late file to the bucket.
fn config(deployment: &str) -> String {
    format!(
        r#"
defaults:
  provider: local
  sync_interval: 1h
  idle_shutdown: 2s
  connectivity_check: {{ retries: 2, retries_sleep: 1s }}
deployments:
  {deployment}:
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, -c, "echo early > /mnt/output/early.txt; sleep 3; echo late > /mnt/output/late.txt"]
    buckets: {{ output: {deployment}-out }}
"#
    )
}

fn running(deployment: &str) -> bool {
    sh(&format!(
        "docker ps -q --filter label=anycloud.deployment={deployment} --filter status=running"
    ))
    .lines()
    .any(|l| !l.is_empty())
}

/// The project with the power-off hook: it writes the bucket's listing, as it is at that
/// moment, to `powered-off` in the project.
fn project(deployment: &str) -> Project {
    common::remove_leftover_containers(&[deployment]);
    build_image("anycloud-e2e:v1");
    let mut p = Project::new(&config(deployment));
    let bucket = p.bucket(&format!("{deployment}-out"));
    let marker = p.path().join("powered-off");
    p.env.push((
        "ANYCLOUD_TEST_POWER_OFF".into(),
        format!(
            "find {} -type f -printf '%P\\n' | sort > {}",
            bucket.display(),
            marker.display()
        ),
    ));
    p
}

/// Starts `anycloud run`, and kills it (SIGKILL: nothing of it runs on) once its apply is
/// done and it follows the running job.
fn run_then_kill_the_cli(p: &Project, deployment: &str) {
    use std::io::BufRead;
    let mut cli = p
        .command(&["run", deployment, "--auto-approve", "--no-color"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(cli.stdout.take().unwrap()).lines();
    let mut said = String::new();
    for line in lines {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.contains("job (Ctrl-C stops following") {
            break;
        }
    }
    assert!(
        running(deployment),
        "the job runs when the CLI dies: {said}"
    );
    cli.kill().unwrap();
    cli.wait().unwrap();
}

fn watcher_log(p: &Project, deployment: &str) -> String {
    read(&p.host(deployment).join("log/idle-shutdown.stdout.log")).unwrap_or_default()
}

#[test]
fn the_machine_uploads_verifies_and_powers_itself_off_without_the_cli() {
    let d = "idle-off";
    let p = project(d);
    run_then_kill_the_cli(&p, d);

    let marker = p.path().join("powered-off");
    wait_for(90, "the machine to power itself off", || {
        marker.exists().then_some(())
    });
    let container = sh(&format!(
        "docker ps -a --filter label=anycloud.deployment={d} --format '{{{{.Names}}}}'"
    ));
    // The bucket as the power-off found it: the late file, which only the final upload
    // sends, and the record the watcher writes only once the check succeeded.
    let listed = read(&marker).unwrap();
    let listed: Vec<&str> = listed.lines().collect();
    assert!(listed.contains(&"early.txt"), "{listed:?}");
    assert!(listed.contains(&"late.txt"), "{listed:?}");
    let record = format!(".anycloud-logs/{container}/idle-stop.txt");
    assert!(listed.contains(&record.as_str()), "{listed:?}");
    let bucket = p.bucket(&format!("{d}-out"));
    assert_eq!(read(&bucket.join("late.txt")).as_deref(), Some("late"));
    assert_eq!(read(&bucket.join("early.txt")).as_deref(), Some("early"));
    let recorded = read(&bucket.join(&record)).unwrap();
    assert!(recorded.contains("machine=stopped"), "{recorded}");
    assert!(recorded.contains("idle_shutdown=2s"), "{recorded}");
    // In that order, once: the upload, its check, then the power-off.
    let log = watcher_log(&p, d);
    let upload = log.find("the final upload").expect(&log);
    let stop = log
        .find("output verified: stopping the machine")
        .expect(&log);
    assert!(upload < stop, "{log}");
    assert_eq!(log.matches("stopping the machine").count(), 1, "{log}");
    let flush_log = read(&p.host(d).join("log/rclone-flush.log")).unwrap_or_default();
    assert!(
        flush_log.contains("0 differences found"),
        "rclone check verified it: {flush_log}"
    );

    // The next plan: nothing to do, and why the machine is down.
    let plan = p.run(&["plan", "--detailed-exitcode", "--no-color"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout.contains(
            "idle_shutdown: the machine stopped itself 2s after the job ended; output verified at"
        ),
        "{plan:?}"
    );
    let status = p.ok(&["status", d]);
    assert!(
        status
            .stdout
            .contains("stopped itself 2s after the job ended"),
        "{status:?}"
    );
    // apply starts nothing again.
    let applied = p.ok(&["apply", "--auto-approve", "--no-color"]);
    assert!(applied.stdout.contains("No changes"), "{applied:?}");
    assert!(!running(d));
}

#[test]
fn a_failed_verification_powers_nothing_off() {
    let d = "idle-stuck";
    let p = project(d);
    let bucket = p.bucket(&format!("{d}-out"));
    run_then_kill_the_cli(&p, d);
    // The bucket becomes unwritable while the job runs: a file where its directory was.
    let aside = bucket.with_extension("aside");
    std::fs::rename(&bucket, &aside).unwrap();
    std::fs::write(&bucket, "not a directory\n").unwrap();

    wait_for(90, "the final upload to fail", || {
        watcher_log(&p, d)
            .contains("the final upload or its check failed: the machine stays on")
            .then_some(())
    });
    // Past another look of the watcher's (every second): still on.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let log = watcher_log(&p, d);
    assert!(!p.path().join("powered-off").exists(), "{log}");
    assert!(!log.contains("stopping the machine"), "{log}");
    assert!(!Path::new(&p.host(d).join("log/idle-stop")).exists());

    // The bucket back, so that the project's teardown can upload what is left.
    std::fs::remove_file(&bucket).unwrap();
    std::fs::rename(&aside, &bucket).unwrap();
}
