//! A job's life on the embedded local cloud with real dockerd: a job that fails after it
//! started stays failed (not re-run, its container and logs kept) and the plan and `status`
//! say so with its last lines; `-replace` runs it again; a job that fails within its first
//! seconds (or whose command is not in the image: its init exits 127) is the same, the
//! apply warning of it and succeeding for it; one whose image is nowhere fails the apply
//! with Docker's words; a
//! finished job is reported with the way to stop what still runs; `restart: on-failure:N`
//! lets Docker retry it.
//!
//! Needs root with docker, supervisord and rclone installed (`.ci/run` provides them).

mod common;

use common::{build_image, containers_of, files_under, sh, wait_for, Project};

const DEPLOYMENTS: [&str; 7] = [
    "job-late",
    "job-done",
    "job-early",
    "job-nocmd",
    "job-noimage",
    "job-retry",
    "job-tag",
];

fn config() -> String {
    r#"
project: jobs
defaults:
  provider: local
  sync_interval: 1s
  connectivity_check: { retries: 2, retries_sleep: 1s }
deployments:
  job-late:
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, -c, "echo loading; echo \"KeyError: 'lr'\"; sleep 4; exit 3"]
    buckets: { output: jobs-late-out }
  job-done:
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, -c, "echo all done"]
    buckets: { output: jobs-done-out }
  job-early:
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, -c, "echo 'no such file: data.csv'; exit 2"]
    buckets: { output: jobs-early-out }
  job-noimage:
    container:
      image: anycloud-e2e-missing:never-built
      command: [/bin/sh, -c, "echo unreachable"]
    buckets: { output: jobs-noimage-out }
  job-nocmd:
    container:
      image: anycloud-e2e:v1
      command: [/no/such/program]
    buckets: { output: jobs-nocmd-out }
  job-retry:
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, -c, "echo try; exit 4"]
      restart: on-failure:2
    buckets: { output: jobs-retry-out }
  job-tag:
    container:
      image: anycloud-e2e-jobs:rebuilt
      command: [/bin/sh, -c, "echo built"]
    buckets: { output: jobs-tag-out }
"#
    .to_owned()
}

fn container_of(deployment: &str) -> String {
    sh(&format!(
        "docker ps -aq --no-trunc --filter label=anycloud.deployment={deployment}"
    ))
}

fn status_of(deployment: &str) -> String {
    sh(&format!(
        "docker inspect -f '{{{{.State.Status}}}} {{{{.State.ExitCode}}}}' {}",
        container_of(deployment)
    ))
}

#[test]
fn a_jobs_life_failures_reruns_and_finished_jobs() {
    common::remove_leftover_containers(&DEPLOYMENTS);
    build_image("anycloud-e2e:v1");
    sh("docker tag anycloud-e2e:v1 anycloud-e2e-jobs:rebuilt");
    let p = Project::new(&config());

    // A job whose image is nowhere cannot start: the apply fails for it with Docker's words,
    // and applies the rest. One that dies at once (a missing file; a command not in the
    // image, which the image's init reports with 127) is the job's failure, not the apply's:
    // a warning with the job's own words.
    // Without a refresh the plan does not ask Docker for the images (a refreshed plan refuses
    // job-noimage before anything is made: e2e_local.rs), so its start fails as an image
    // deleted between plan and apply would.
    let first = p.run(&["apply", "--auto-approve", "--refresh=false"]);
    assert_eq!(first.code, 1, "{first:?}");
    let said = format!("{}{}", first.stdout, first.stderr);
    assert!(
        said.contains("Warning: the job of deployment job-early exited with code 2"),
        "{said}"
    );
    assert!(said.contains("| no such file: data.csv"), "{said}");
    assert!(
        !said.contains("error: deployment.job-early.container"),
        "{said}"
    );
    assert!(
        said.contains("Warning: the job of deployment job-nocmd exited with code 127")
            && said.contains("/no/such/program"),
        "{said}"
    );
    // An image that is nowhere: Docker's words, naming it.
    assert!(
        said.contains("deployment.job-noimage.container")
            && said.contains("Unable to find image 'anycloud-e2e-missing:never-built'"),
        "{said}"
    );
    assert_eq!(containers_of("job-late"), 1);

    // The late failure: apply succeeded for it; once it fails it stays failed.
    wait_for(30, "job-late to fail", || {
        (status_of("job-late") == "exited 3").then_some(())
    });
    let late_id = container_of("job-late");
    // Its own output is kept with its outputs, in the bucket.
    let log = wait_for(30, "the failed job's log in its bucket", || {
        files_under(&p.bucket("jobs-late-out").join(".anycloud-logs"))
            .into_iter()
            .find(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains("KeyError")))
    });
    assert!(log.to_string_lossy().ends_with(".log"), "{log:?}");
    let status = p.ok(&["status", "job-late"]).stdout;
    assert!(status.contains("exited (code 3) at "), "{status}");
    assert!(status.contains("KeyError: 'lr'"), "{status}");
    assert!(!status.contains("MISSING"), "{status}");

    let plan = p.run(&[
        "plan",
        "--target",
        "deployment.job-late",
        "--target",
        "deployment.job-done",
        "--detailed-exitcode",
    ]);
    assert_eq!(
        plan.code, 0,
        "a failed and a finished job are no change: {plan:?}"
    );
    assert!(
        plan.stdout
            .contains("Job: the job of deployment job-late exited with code 3 at "),
        "{plan:?}"
    );
    assert!(plan.stdout.contains("    | KeyError: 'lr'"), "{plan:?}");
    assert!(
        plan.stdout
            .contains("anycloud apply -replace deployment.job-late.container"),
        "{plan:?}"
    );
    assert!(
        plan.stdout
            .contains("the job of deployment job-done finished at "),
        "{plan:?}"
    );
    assert!(
        plan.stdout
            .contains("anycloud destroy --target deployment.job-done"),
        "{plan:?}"
    );

    // A plain apply leaves the failed job as it is: same container, its logs kept.
    let again = p.run(&["apply", "--auto-approve", "--target", "deployment.job-late"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(container_of("job-late"), late_id);
    assert!(
        sh(&format!("docker logs {late_id} 2>&1")).contains("KeyError"),
        "the failed job's logs are kept"
    );

    // The failed creates are named for what they are, not as an interruption.
    // (Unrefreshed: a refreshed plan refuses the image that is nowhere before all else.)
    let pending = p.run(&[
        "plan",
        "--refresh=false",
        "--target",
        "deployment.job-noimage",
    ]);
    assert!(
        pending
            .stdout
            .contains("a previous apply failed or was stopped while creating it"),
        "{pending:?}"
    );

    // -replace (Terraform's spelling) runs it again, in a new container.
    let replace = p.run(&[
        "plan",
        "-replace",
        "deployment.job-late.container",
        "--target",
        "deployment.job-late",
    ]);
    assert_eq!(replace.code, 0, "{replace:?}");
    assert!(
        replace
            .stdout
            .contains("replacement asked for with -replace"),
        "{replace:?}"
    );
    assert!(
        replace
            .stdout
            .contains("0 to add, 0 to change, 1 to replace"),
        "{replace:?}"
    );
    let unknown = p.run(&["plan", "-replace", "deployment.job-late.nothing"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(
        unknown.stderr.contains("-replace matches no resource"),
        "{unknown:?}"
    );
    // Saved, the plan records -replace, and apply makes it again with it.
    p.ok(&[
        "plan",
        "--out",
        "replace.plan",
        "-replace",
        "deployment.job-late.container",
        "--target",
        "deployment.job-late",
    ]);
    let replaced = p.ok(&["apply", "replace.plan"]);
    assert!(replaced.stdout.contains("1 replaced"), "{replaced:?}");
    let rerun = container_of("job-late");
    assert_ne!(rerun, late_id, "a new container runs the job again");
    assert_eq!(containers_of("job-late"), 1);

    // A tag rebuilt after its job ran is a new image to run: the plan replaces the
    // container, naming the image it ran and the one the tag names now.
    wait_for(30, "job-tag to finish", || {
        (status_of("job-tag") == "exited 0").then_some(())
    });
    let tag_plan = p.run(&[
        "plan",
        "--target",
        "deployment.job-tag",
        "--detailed-exitcode",
    ]);
    assert_eq!(tag_plan.code, 0, "nothing rebuilt yet: {tag_plan:?}");
    let ran = sh("docker image inspect -f '{{.Id}}' anycloud-e2e-jobs:rebuilt");
    sh("printf 'FROM anycloud-e2e:v1\\nLABEL anycloud.test=rebuilt\\n' | docker build -q -t anycloud-e2e-jobs:rebuilt -");
    let now = sh("docker image inspect -f '{{.Id}}' anycloud-e2e-jobs:rebuilt");
    assert_ne!(ran, now, "the rebuild made another image");
    let tag_plan = p.run(&[
        "plan",
        "--target",
        "deployment.job-tag",
        "--detailed-exitcode",
    ]);
    assert_eq!(tag_plan.code, 2, "{tag_plan:?}");
    let both = format!(
        "anycloud-e2e-jobs:rebuilt (ran {}; the tag now names {})",
        &ran[..19],
        &now[..19]
    );
    assert!(tag_plan.stdout.contains(&both), "{tag_plan:?}");
    assert!(
        tag_plan.stdout.contains("# forces replacement"),
        "{tag_plan:?}"
    );
    let tag_id = container_of("job-tag");
    p.ok(&["apply", "--auto-approve", "--target", "deployment.job-tag"]);
    assert_ne!(container_of("job-tag"), tag_id, "the new build runs");
    assert_eq!(
        sh(&format!(
            "docker inspect -f '{{{{.Image}}}}' {}",
            container_of("job-tag")
        )),
        now
    );
    let settled = p.run(&[
        "plan",
        "--target",
        "deployment.job-tag",
        "--detailed-exitcode",
    ]);
    assert_eq!(settled.code, 0, "{settled:?}");

    // restart: on-failure:2 is Docker's to do: three runs, then it stays failed.
    wait_for(60, "job-retry to give up", || {
        (status_of("job-retry") == "exited 4").then_some(())
    });
    wait_for(10, "three runs of job-retry", || {
        let logs = sh(&format!("docker logs {} 2>&1", container_of("job-retry")));
        (logs.matches("try").count() == 3).then_some(())
    });
    let retry = p.ok(&["status", "job-retry"]).stdout;
    assert!(retry.contains("exited (code 4)"), "{retry}");

    // A destroy can be planned and reviewed like any plan; it reads nothing by design, so
    // it carries no note about refreshing, and kept buckets are counted as forgotten.
    let planned = p.ok(&["plan", "-destroy"]);
    assert!(
        planned
            .stdout
            .contains("deployment.job-late.container will be destroyed"),
        "{planned:?}"
    );
    assert!(planned.stdout.contains(" to destroy."), "{planned:?}");
    assert!(!planned.stdout.contains("was not refreshed"), "{planned:?}");
    let destroyed = p.ok(&["destroy", "--auto-approve"]);
    assert!(
        !destroyed.stdout.contains("was not refreshed"),
        "{destroyed:?}"
    );
    assert!(
        destroyed
            .stdout
            .contains("forgotten (buckets kept with their data)."),
        "{destroyed:?}"
    );
    for d in DEPLOYMENTS {
        assert_eq!(containers_of(d), 0, "{d} is gone after destroy");
    }
}

const RUN_DEPLOYMENTS: [&str; 2] = ["run-ok", "run-fail"];

fn run_config() -> String {
    r#"
project: runs
defaults:
  provider: local
  sync_interval: 1s
  connectivity_check: { retries: 2, retries_sleep: 1s }
deployments:
  run-ok:
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, -c, "echo epoch 1; sleep 3; echo epoch 2; echo done > /mnt/output/model.txt"]
    buckets: { output: runs-ok-out }
  run-fail:
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, -c, "sleep 3; echo 'step one'; echo 'loss is NaN' >&2; exit 7"]
    buckets: { output: runs-fail-out }
"#
    .to_owned()
}

/// `anycloud run` applies one deployment, shows its job's output as it comes, takes down
/// what it made once the job exits (its output and log kept in the bucket) and exits with
/// the job's code; `--keep` leaves it running for `anycloud logs`.
#[test]
fn run_follows_a_job_to_its_end_and_exits_with_its_code() {
    common::remove_leftover_containers(&RUN_DEPLOYMENTS);
    build_image("anycloud-e2e:v1");
    let p = Project::new(&run_config());

    let failed = p.run(&["run", "run-fail", "--auto-approve"]);
    assert_eq!(failed.code, 7, "the job's exit code: {failed:?}");
    assert!(failed.stdout.contains("step one\n"), "{failed:?}");
    assert!(
        failed.stdout.contains("loss is NaN\n"),
        "stderr too: {failed:?}"
    );
    assert!(
        failed.stdout.contains("The job exited with code 7."),
        "{failed:?}"
    );
    assert!(failed.stdout.contains("Destroy complete!"), "{failed:?}");
    assert_eq!(containers_of("run-fail"), 0, "what run made is gone");
    assert!(!p.host("run-fail").exists());
    assert!(
        !p.ok(&["state", "list"]).stdout.contains("run-fail"),
        "and forgotten"
    );
    // Its log was kept with its outputs by the last upload.
    let kept = files_under(&p.bucket("runs-fail-out").join(".anycloud-logs"));
    assert!(
        kept.iter()
            .any(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains("loss is NaN"))),
        "{kept:?}"
    );

    let kept_run = p.run(&["run", "run-ok", "--keep", "--auto-approve"]);
    assert_eq!(kept_run.code, 0, "{kept_run:?}");
    let epochs = kept_run
        .stdout
        .find("epoch 1")
        .zip(kept_run.stdout.find("epoch 2"));
    assert!(epochs.is_some_and(|(a, b)| a < b), "{kept_run:?}");
    assert!(kept_run.stdout.contains("Kept (--keep)"), "{kept_run:?}");
    assert_eq!(containers_of("run-ok"), 1);
    // Kept running, its upload goes on: what the job wrote last reaches the bucket.
    wait_for(30, "the kept job's output in its bucket", || {
        (common::read(&p.bucket("runs-ok-out").join("model.txt")).as_deref() == Some("done"))
            .then_some(())
    });

    // The job's output, afterwards: all of it, its end, or nothing of a name not in the
    // config (with the nearest one).
    let all = p.ok(&["logs", "run-ok"]);
    assert_eq!(all.stdout, "epoch 1\nepoch 2\n", "{all:?}");
    let last = p.ok(&["logs", "run-ok", "--tail", "1"]);
    assert_eq!(last.stdout, "epoch 2\n", "{last:?}");
    let followed = p.ok(&["logs", "run-ok", "--follow"]);
    assert_eq!(followed.stdout, "epoch 1\nepoch 2\n", "{followed:?}");
    assert!(
        followed.stderr.contains("The job exited with code 0."),
        "{followed:?}"
    );
    // The upload programs' own logs, from the machine.
    let uploads = p.ok(&["logs", "run-ok", "--sync"]);
    assert!(
        uploads.stdout.contains("==> rclone-output.log <==")
            && uploads.stdout.contains("model.txt"),
        "{uploads:?}"
    );
    let refused = p.run(&["logs", "run-ok", "--sync", "--follow"]);
    assert_eq!(refused.code, 2, "{refused:?}");
    let recent = p.ok(&["logs", "run-ok", "--since", "1h"]);
    assert_eq!(recent.stdout, "epoch 1\nepoch 2\n", "{recent:?}");
    let typo = p.run(&["logs", "run-okk"]);
    assert_eq!(typo.code, 1, "{typo:?}");
    assert!(typo.stderr.contains("no deployment 'run-okk'"), "{typo:?}");
    assert!(typo.stderr.contains("run-ok"), "{typo:?}");
    let never = p.run(&["logs", "run-fail"]);
    assert_eq!(never.code, 1, "{never:?}");
    assert!(
        never.stderr.contains("the job has not been started"),
        "{never:?}"
    );

    p.ok(&["destroy", "--auto-approve"]);
    assert_eq!(containers_of("run-ok"), 0);
}

/// With its state lost, a running job is never replaced: the plan refuses the machine
/// another lineage made, naming it and `state adopt`; after it, apply takes everything
/// over and the job runs on in the same container.
#[test]
fn a_lost_state_is_succeeded_and_the_job_runs_on() {
    common::remove_leftover_containers(&["adopt-me"]);
    build_image("anycloud-e2e:v1");
    let p = Project::new(
        r#"
project: adopt
defaults:
  provider: local
  sync_interval: 1s
  connectivity_check: { retries: 2, retries_sleep: 1s }
deployments:
  adopt-me:
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, -c, "echo started; sleep 600"]
    buckets: { output: adopt-out, checkpoint: true }
"#,
    );
    p.ok(&["apply", "--auto-approve"]);
    let running = container_of("adopt-me");
    let started = sh(&format!(
        "docker inspect -f '{{{{.State.StartedAt}}}}' {running}"
    ));
    let lineage = p.state_json().unwrap()["lineage"]
        .as_str()
        .unwrap()
        .to_owned();
    for f in ["state.json", "state.json.backup", "state.json.journal"] {
        let _ = std::fs::remove_file(p.path().join(".anycloud").join(f));
    }

    let refused = p.run(&["plan"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains(&format!(
            "belongs to another anycloud state (lineage {lineage})"
        )),
        "{refused:?}"
    );
    assert!(
        refused
            .stderr
            .contains(&format!("`anycloud state adopt {lineage}`")),
        "{refused:?}"
    );
    let still = p.run(&["apply", "--auto-approve"]);
    assert_eq!(still.code, 1, "{still:?}");
    assert!(
        p.state_json()
            .is_none_or(|s| s["resources"].as_object().is_none_or(|r| r.is_empty())),
        "nothing was made under a new lineage"
    );
    assert_eq!(container_of("adopt-me"), running);

    let bad = p.run(&["state", "adopt", "not a lineage"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    let adopted = p.ok(&["state", "adopt", &lineage]);
    assert!(
        adopted
            .stdout
            .contains(&format!("now continues lineage {lineage}")),
        "{adopted:?}"
    );
    p.ok(&["apply", "--auto-approve"]);
    assert_eq!(container_of("adopt-me"), running, "the same container");
    assert_eq!(
        sh(&format!(
            "docker inspect -f '{{{{.State.StartedAt}}}}' {running}"
        )),
        started,
        "never restarted"
    );
    assert_eq!(p.run(&["plan", "--detailed-exitcode"]).code, 0);
    let again = p.run(&["state", "adopt", &lineage]);
    assert_eq!(
        again.code, 1,
        "only an empty state succeeds a lost one: {again:?}"
    );
    p.ok(&["destroy", "--auto-approve"]);
    assert_eq!(containers_of("adopt-me"), 0);
}

/// `apply --from-scratch NAME` empties the job's checkpoint, on its machine and in its
/// bucket, and runs it again from nothing; not without a confirmation, and not for a
/// deployment that has no checkpoint or has not run.
#[test]
fn a_job_starts_from_scratch_when_asked_and_confirmed() {
    common::remove_leftover_containers(&["scratch-me", "scratch-none"]);
    build_image("anycloud-e2e:v1");
    let p = Project::new(
        r#"
project: scratch
defaults:
  provider: local
  sync_interval: 1s
  connectivity_check: { retries: 2, retries_sleep: 1s }
deployments:
  scratch-me:
    container: { image: anycloud-e2e:v1, command: [/bin/sh, /job.sh] }
    buckets: { output: scratch-out, checkpoint: true }
  scratch-none:
    container: { image: anycloud-e2e:v1, command: [/bin/sh, -c, "sleep 600"] }
    buckets: { output: scratch-none-out }
"#,
    );
    // A checkpoint from an earlier run: the job resumes from 100.
    let counter = p.bucket("scratch-me").join("counter");
    std::fs::create_dir_all(p.bucket("scratch-me")).unwrap();
    std::fs::write(&counter, "100\n").unwrap();
    // And a file the job never writes again: only emptying both the bucket and the machine
    // keeps it from coming back.
    let old = p.bucket("scratch-me").join("old-epoch.pt");
    std::fs::write(&old, "weights\n").unwrap();
    p.ok(&["apply", "--auto-approve"]);
    let on_machine = p.host("scratch-me").join("mnt/checkpoint/old-epoch.pt");
    assert!(on_machine.exists(), "restored onto the machine");
    let resumed = p.host("scratch-me").join("mnt/output/resumed-from.txt");
    wait_for(30, "the first run's resume point", || {
        (common::read(&resumed).as_deref() == Some("100")).then_some(())
    });
    wait_for(30, "the checkpoint to advance", || {
        common::read(&counter)
            .and_then(|c| c.parse::<u64>().ok())
            .filter(|n| *n >= 105)
    });

    let unconfirmed = p.run(&["apply", "--from-scratch", "scratch-me"]);
    assert_eq!(unconfirmed.code, 1, "{unconfirmed:?}");
    assert!(
        unconfirmed
            .stdout
            .contains("--from-scratch: the checkpoint of deployment scratch-me is deleted"),
        "{unconfirmed:?}"
    );
    assert!(
        common::read(&counter).is_some(),
        "nothing deleted unconfirmed"
    );
    for (args, says) in [
        (["apply", "--from-scratch", "scratch-mee"], "did you mean"),
        (
            ["apply", "--from-scratch", "scratch-none"],
            "has no checkpoint",
        ),
    ] {
        let r = p.run(&args);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(r.stderr.contains(says), "{r:?}");
    }

    let elsewhere = p.run(&[
        "apply",
        "--from-scratch",
        "scratch-me",
        "--target",
        "deployment.scratch-none",
        "--auto-approve",
    ]);
    assert_eq!(elsewhere.code, 1, "{elsewhere:?}");
    assert!(
        elsewhere
            .stderr
            .contains("does not run deployment.scratch-me.container again"),
        "{elsewhere:?}"
    );
    assert!(
        old.exists(),
        "nothing deleted for a job the apply leaves out"
    );
    let fresh = p.run(&["apply", "--from-scratch", "scratch-me", "--auto-approve"]);
    assert_eq!(fresh.code, 0, "{fresh:?}");
    // The plan's line for it says where the job starts from: not its checkpoint.
    assert!(
        fresh
            .stdout
            .contains("STOPPED and started again from an empty checkpoint (--from-scratch)"),
        "{fresh:?}"
    );
    assert!(
        fresh.stdout.contains("job stopped; its checkpoint (")
            && fresh.stdout.contains(") emptied"),
        "{fresh:?}"
    );
    // The new run started from nothing, not from 100 and up.
    wait_for(30, "the new run's start", || {
        (common::read(&resumed).as_deref() == Some("0")).then_some(())
    });
    // Several upload rounds later the old file is still gone, from both.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!old.exists(), "deleted in the bucket");
    assert!(!on_machine.exists(), "deleted on the machine");
    assert_eq!(containers_of("scratch-me"), 1);
    p.ok(&["destroy", "--auto-approve"]);
}

/// An image of `/bin/busybox` whose `USER` is not root (as notebook and many ML images
/// are): by name (in its own `/etc/passwd`) or by number.
fn build_user_image(tag: &str, user: &str) {
    let rootfs = tempfile::tempdir().unwrap();
    let r = rootfs.path();
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
    for tool in ["sh", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(tool)).unwrap();
    }
    std::fs::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\njovyan:x:1234:100::/home/jovyan:/bin/sh\n",
    )
    .unwrap();
    let built = sh(&format!(
        "tar -C {} -c . | docker import -c 'USER {user}' -c 'ENV PATH=/bin' - {tag} >/dev/null && echo built",
        r.display()
    ));
    assert_eq!(built, "built", "building {tag}");
}

/// A job whose image runs as a user of its own reads its input (still read-only), writes
/// its output and checkpoint (here with mode 0600), and the uploads take what it wrote.
#[test]
fn a_job_whose_image_is_not_root_uses_its_mounts() {
    common::remove_leftover_containers(&["user-named", "user-numeric"]);
    build_user_image("anycloud-e2e-user:named", "jovyan");
    build_user_image("anycloud-e2e-user:numeric", "1000:1000");
    let job = r#"[/bin/sh, -c, "umask 077; cat /mnt/input/data.txt > /mnt/output/copy.txt && echo saved > /mnt/checkpoint/state && if echo x > /mnt/input/probe; then echo input-writable; exit 5; fi; echo done"]"#;
    let p = Project::new(&format!(
        r#"
project: users
defaults:
  provider: local
  sync_interval: 1s
  connectivity_check: {{ retries: 2, retries_sleep: 1s }}
deployments:
  user-named:
    container: {{ image: "anycloud-e2e-user:named", command: {job} }}
    buckets: {{ input: users-in, output: users-named-out, checkpoint: true }}
  user-numeric:
    container: {{ image: "anycloud-e2e-user:numeric", command: {job} }}
    buckets: {{ input: users-in, output: users-numeric-out, checkpoint: true }}
"#
    ));
    std::fs::create_dir_all(p.bucket("users-in")).unwrap();
    std::fs::write(p.bucket("users-in").join("data.txt"), "the input\n").unwrap();
    let applied = p.run(&["apply", "--auto-approve"]);
    assert_eq!(applied.code, 0, "{applied:?}");
    for (deployment, out, uid) in [
        ("user-named", "users-named-out", "1234"),
        ("user-numeric", "users-numeric-out", "1000"),
    ] {
        let copy = p.bucket(out).join("copy.txt");
        wait_for(30, &format!("{deployment}'s output in its bucket"), || {
            (common::read(&copy).as_deref() == Some("the input")).then_some(())
        });
        let checkpoint = p.bucket(deployment).join("state");
        wait_for(
            30,
            &format!("{deployment}'s checkpoint in its bucket"),
            || (common::read(&checkpoint).as_deref() == Some("saved")).then_some(()),
        );
        let written = p.host(deployment).join("mnt/output/copy.txt");
        assert_eq!(
            sh(&format!("stat -c '%u %a' {}", written.display())),
            format!("{uid} 600"),
            "{deployment}: written by the image's user, readable by it alone"
        );
        assert_eq!(status_of(deployment), "exited 0", "{deployment}");
    }
    // The last upload (as root) reads what the job's user wrote 0600.
    std::fs::write(p.host("user-named").join("mnt/output/late.txt"), "late\n").unwrap();
    sh(&format!(
        "chown 1234 {0} && chmod 0600 {0}",
        p.host("user-named").join("mnt/output/late.txt").display()
    ));
    p.ok(&["destroy", "--auto-approve"]);
    assert_eq!(
        common::read(&p.bucket("users-named-out").join("late.txt")).as_deref(),
        Some("late")
    );
}
