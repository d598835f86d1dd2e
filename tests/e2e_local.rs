//! End to end on the embedded local cloud with real dockerd, supervisord and rclone:
//! data through input, output and checkpoint; a clean second plan; an image change that
//! replaces only the container; a wiped host restored from its checkpoint; and a destroy
//! that keeps the buckets with the last output in them.
//!
//! Needs root with docker, supervisord and rclone installed (`.ci/run` provides them).

mod common;

use common::{build_image, containers_of, files_under, read, supervisords_of, wait_for, Project};

fn config(image: &str) -> String {
    format!(
        r#"
project: e2e
defaults:
  provider: local
  sync_interval: 1s
  connectivity_check: {{ retries: 2, retries_sleep: 1s }}
deployments:
  e2e-alpha:
    container:
      image: {image}
      command: [/bin/sh, /job.sh]
    buckets: {{ input: e2e-input, output: e2e-results-alpha, checkpoint: true }}
  e2e-beta:
    container:
      image: {image}
      command: [/bin/sh, /job.sh]
    buckets: {{ input: e2e-input, output: e2e-results-beta }}
"#
    )
}

fn counter(path: &std::path::Path) -> Option<u64> {
    read(path).and_then(|s| s.parse().ok())
}

#[test]
fn local_cloud_end_to_end() {
    common::remove_leftover_containers(&["e2e-alpha", "e2e-beta"]);
    build_image("anycloud-e2e:v1");
    build_image("anycloud-e2e:v2");
    let p = Project::new(&config("anycloud-e2e:v1"));
    let input = p.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("data.txt"), "hello from the input bucket\n").unwrap();

    // Without the input bucket the plan fails, naming it, before anything is made.
    let missing = p.run(&["plan"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(
        missing.stderr.contains("deployment.e2e-alpha.bucket.input"),
        "{missing:?}"
    );
    assert!(
        missing
            .stderr
            .contains("input bucket 'e2e-input' does not exist"),
        "{missing:?}"
    );
    assert!(
        !p.path().join(".anycloud/state.json").exists()
            || p.ok(&["state", "list"]).stdout.is_empty()
    );

    p.ok(&["bucket", "upload", "e2e-input", input.to_str().unwrap()]);
    let applied = p.ok(&["apply", "--auto-approve"]);
    assert!(applied.stdout.contains("Apply complete!"), "{applied:?}");

    // The input is readable in the container and not writable; the container's output
    // reaches the output bucket through the upload program.
    for (dep, out) in [
        ("e2e-alpha", "e2e-results-alpha"),
        ("e2e-beta", "e2e-results-beta"),
    ] {
        let copy = wait_for(
            30,
            &format!("{dep}'s input copy in its output bucket"),
            || read(&p.bucket(out).join("input-copy.txt")).filter(|c| !c.is_empty()),
        );
        assert_eq!(copy, "hello from the input bucket");
        // An upload pass can catch a file the job is still writing; wait for its content.
        let mode = wait_for(
            30,
            &format!("{dep}'s input mode in its output bucket"),
            || read(&p.bucket(out).join("input-mode.txt")).filter(|m| !m.is_empty()),
        );
        assert_eq!(mode, "read-only");
        assert_eq!(containers_of(dep), 1, "one container for {dep}");
        assert_eq!(
            supervisords_of(&p.host(dep)),
            1,
            "one private supervisord for {dep}"
        );
    }
    assert!(
        !p.bucket("e2e-input").join("probe").exists(),
        "the job must not write the input bucket"
    );

    // `status` shows the live picture: the job runs and the upload loops have run.
    // (Programs count as RUNNING once up for supervisord's startsecs=5.)
    let status = wait_for(30, "status to show the upload programs RUNNING", || {
        let s = p.ok(&["status"]);
        (!s.stdout.contains("program: STARTING")).then_some(s)
    });
    assert!(status.stdout.contains("job: running since "), "{status:?}");
    assert_eq!(
        status.stdout.matches("program: RUNNING").count(),
        3,
        "{status:?}"
    );
    // When each upload last succeeded (a zero exit of its copy), not merely ran.
    let succeeded = status
        .stdout
        .lines()
        .filter_map(|l| l.split_once("last successful upload: "))
        .filter(|(_, age)| {
            let digits: String = age.chars().take_while(|c| c.is_ascii_digit()).collect();
            !digits.is_empty() && age[digits.len()..].starts_with("s ago")
        })
        .count();
    assert_eq!(succeeded, 3, "{status:?}");

    // The state is private and a second plan has nothing to do.
    let mode = std::fs::metadata(p.path().join(".anycloud/state.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let again = p.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "a second plan must be clean: {again:?}");

    // Checkpoints go up; a new image replaces the container and nothing else.
    let ckpt = p.bucket("e2e-alpha").join("counter");
    wait_for(30, "a checkpoint in the checkpoint bucket", || {
        counter(&ckpt).filter(|n| *n >= 3)
    });
    p.write_config(&config("anycloud-e2e:v2"));
    let json = p.ok(&["plan", "--format", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let active: Vec<(String, String)> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] != "no-op")
        .map(|c| {
            (
                c["address"].as_str().unwrap().to_owned(),
                c["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        active,
        vec![
            (
                "deployment.e2e-alpha.container".to_owned(),
                "replace".to_owned()
            ),
            (
                "deployment.e2e-beta.container".to_owned(),
                "replace".to_owned()
            ),
        ]
    );
    assert_eq!(
        p.run(&[
            "plan",
            "--detailed-exitcode",
            "--target",
            "deployment.e2e-beta"
        ])
        .code,
        2
    );
    p.ok(&["apply", "--auto-approve"]);
    assert_eq!(p.run(&["plan", "--detailed-exitcode"]).code, 0);
    assert_eq!(containers_of("e2e-alpha"), 1);

    // Wipe the host: the next apply builds a fresh one and restores the checkpoint into it.
    let before_wipe = wait_for(30, "the checkpoint to advance", || {
        counter(&ckpt).filter(|n| *n >= 5)
    });
    std::fs::remove_dir_all(p.host("e2e-alpha")).unwrap();
    let plan = p.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    assert!(
        plan.stdout
            .contains("deployment.e2e-alpha.vm will be created"),
        "{plan:?}"
    );
    p.ok(&["apply", "--auto-approve"]);
    let resumed = wait_for(30, "the replacement's resume point", || {
        counter(&p.host("e2e-alpha").join("mnt/output/resumed-from.txt"))
    });
    assert!(
        resumed >= before_wipe,
        "resumed from {resumed}, but the bucket held {before_wipe} before the wipe"
    );
    assert_eq!(
        containers_of("e2e-alpha"),
        1,
        "the old container is gone, one runs"
    );
    // The new machine's first upload replaced the first run's resume point in the bucket;
    // the first run's file is kept, moved under .anycloud-replaced/<the new run's start>/.
    let output = p.bucket("e2e-results-alpha");
    let kept = wait_for(30, "the first run's resume point kept", || {
        files_under(&output.join(".anycloud-replaced"))
            .into_iter()
            .find(|f| f.ends_with("resumed-from.txt"))
    });
    assert_eq!(read(&kept).as_deref(), Some("0"), "{kept:?}");
    assert_eq!(counter(&output.join("resumed-from.txt")), Some(resumed));
    assert_eq!(supervisords_of(&p.host("e2e-alpha")), 1);

    // Destroy: the last output written just before it reaches the bucket; all else goes.
    std::fs::write(
        p.host("e2e-alpha").join("mnt/output/last-words.txt"),
        "written just before destroy\n",
    )
    .unwrap();
    let destroyed = p.ok(&["destroy", "--auto-approve"]);
    assert!(
        destroyed.stdout.contains("Destroy complete!"),
        "{destroyed:?}"
    );
    assert_eq!(
        read(&p.bucket("e2e-results-alpha").join("last-words.txt")).as_deref(),
        Some("written just before destroy")
    );
    let final_tick = read(&p.bucket("e2e-results-alpha").join("tick.txt"))
        .and_then(|t| common::tick(&t))
        .unwrap();
    assert!(final_tick > 0);
    for dep in ["e2e-alpha", "e2e-beta"] {
        assert_eq!(containers_of(dep), 0, "{dep}'s container is removed");
        assert_eq!(
            supervisords_of(&p.host(dep)),
            0,
            "{dep}'s supervisord is stopped"
        );
        assert!(!p.host(dep).exists(), "{dep}'s host directory is removed");
    }
    for bucket in [
        "e2e-input",
        "e2e-results-alpha",
        "e2e-results-beta",
        "e2e-alpha",
    ] {
        assert!(p.bucket(bucket).is_dir(), "bucket {bucket} is kept");
    }
    assert_eq!(p.ok(&["state", "list"]).stdout, "");
}

#[test]
fn ctrl_c_finishes_what_is_in_flight_saves_state_and_exits_130() {
    common::remove_leftover_containers(&["e2e-sigint"]);
    build_image("anycloud-e2e:v1");
    let p = Project::new(
        r#"
defaults:
  provider: local
  sync_interval: 1s
  connectivity_check: { retries: 2, retries_sleep: 1s }
deployments:
  e2e-sigint:
    container: { image: "anycloud-e2e:v1", command: [/bin/sh, /job.sh] }
    buckets: { output: e2e-sigint-results, checkpoint: true }
"#,
    );
    let child = p
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the first resources have been recorded, while VM init is in flight.
    wait_for(30, "apply to record its first resource", || {
        anycloud_state::LocalStore::load(&p.path().join(".anycloud/state.json"))
            .ok()
            .filter(|s| {
                s.resources.contains_key("deployment.e2e-sigint.vm")
                    && s.resources["deployment.e2e-sigint.vm"].pending.is_none()
            })
    });
    common::sh(&format!("kill -INT {}", child.id()));
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("Interrupted"), "{stdout}");
    let state = anycloud_state::LocalStore::load(&p.path().join(".anycloud/state.json")).unwrap();
    assert!(
        state.resources.values().all(|r| r.pending.is_none()),
        "in-flight operations finished before exit"
    );
    assert!(
        !state
            .resources
            .contains_key("deployment.e2e-sigint.container"),
        "nothing new started after Ctrl-C"
    );
    p.ok(&["apply", "--auto-approve"]);
    assert_eq!(p.run(&["plan", "--detailed-exitcode"]).code, 0);
    assert_eq!(containers_of("e2e-sigint"), 1);
}

/// A missing image fails the plan (issue 25, item 5), located at the deployment's
/// `container.image` and saying how to build or pull it, before anything is made; and an
/// image changed to a missing one leaves the running container as it is.
#[test]
fn a_missing_image_fails_the_plan_before_anything_is_made() {
    common::remove_leftover_containers(&["img-check"]);
    let missing = "anycloud-e2e-never-built:v404";
    let _ = std::process::Command::new("docker")
        .args(["image", "rm", "-f", missing])
        .output();
    let config = |image: &str| {
        format!(
            "project: imgcheck\ndefaults:\n  provider: local\n  sync_interval: 1s\n  connectivity_check: {{ retries: 2, retries_sleep: 1s }}\ndeployments:\n  img-check:\n    container:\n      image: {image}\n      command: [/bin/sh, -c, \"sleep 600\"]\n    buckets: {{ output: img-check-out }}\n"
        )
    };
    let p = Project::new(&config(missing));
    for args in [&["plan"][..], &["apply", "--auto-approve"]] {
        let r = p.run(args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(r.stderr.contains("anycloud.yaml:9:14"), "{args:?}: {r:?}");
        assert!(
            r.stderr.contains(&format!(
                "image '{missing}' is not in this machine's Docker daemon"
            )),
            "{args:?}: {r:?}"
        );
        assert!(
            r.stderr.contains(&format!("docker build -t {missing}")),
            "{args:?}: {r:?}"
        );
        assert!(!r.stderr.contains("panicked"), "{r:?}");
        assert!(
            p.state_json()
                .is_none_or(|s| s["resources"].as_object().is_none_or(|r| r.is_empty())),
            "nothing made: {args:?}"
        );
        assert!(!p.root().join("buckets").exists(), "{args:?}");
        assert!(!p.host("img-check").exists(), "{args:?}");
    }
    // Under --refresh=false nothing is asked, as of every cloud.
    p.ok(&["plan", "--refresh=false"]);

    build_image("anycloud-e2e:v1");
    p.write_config(&config("anycloud-e2e:v1"));
    p.ok(&["apply", "--auto-approve"]);
    assert_eq!(containers_of("img-check"), 1);
    let before = common::sh("docker ps -q --filter label=anycloud.deployment=img-check");
    p.write_config(&config(missing));
    let replace = p.run(&["apply", "--auto-approve"]);
    assert_eq!(replace.code, 1, "{replace:?}");
    assert!(replace.stderr.contains(missing), "{replace:?}");
    assert_eq!(
        common::sh("docker ps -q --filter label=anycloud.deployment=img-check"),
        before,
        "the running container is left as it is"
    );
    p.write_config(&config("anycloud-e2e:v1"));
    p.ok(&["destroy", "--auto-approve"]);
}
