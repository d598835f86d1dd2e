//! Fresh input on a re-run (issue 25, item 3), on the embedded local cloud with real dockerd
//! and rclone: the input's download records the bucket's listing; after `bucket upload` of a
//! new file (and a file changed in place) the plan has no changes but says "input changed
//! since download: 1 new file, 1 changed"; `apply -replace` of the container syncs the input
//! again before the new run, whose job sees the new file; the note is gone after it.
//!
//! Needs root with docker, supervisord and rclone installed (`.ci/run` provides them).

mod common;

use common::{build_image, read, wait_for, Project};

const D: &str = "fresh-input";

fn config() -> String {
    format!(
        r#"
project: inputs
defaults:
  provider: local
  sync_interval: 1s
  connectivity_check: {{ retries: 2, retries_sleep: 1s }}
deployments:
  {D}:
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, -c, "ls /mnt/input > /mnt/output/seen.txt; cat /mnt/input/a.txt > /mnt/output/a.txt"]
    buckets: {{ input: fresh-input-data, output: fresh-input-out }}
"#
    )
}

#[test]
fn a_replaced_container_sees_the_input_as_the_bucket_holds_it_now() {
    common::remove_leftover_containers(&[D]);
    build_image("anycloud-e2e:v1");
    let p = Project::new(&config());
    let bucket = p.bucket("fresh-input-data");
    std::fs::create_dir_all(&bucket).unwrap();
    std::fs::write(bucket.join("a.txt"), "first\n").unwrap();
    p.ok(&["apply", "--auto-approve"]);
    let seen = p.host(D).join("mnt/output/seen.txt");
    let a = p.host(D).join("mnt/output/a.txt");
    wait_for(30, "the first run's view of its input", || {
        (read(&seen).as_deref() == Some("a.txt") && read(&a).as_deref() == Some("first"))
            .then_some(())
    });
    let settled = p.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(settled.code, 0, "{settled:?}");
    assert!(!settled.stdout.contains("input changed"), "{settled:?}");

    // A new file through `bucket upload`, and one changed in place.
    std::fs::write(p.path().join("new.txt"), "new\n").unwrap();
    p.ok(&["bucket", "upload", "fresh-input-data", "new.txt"]);
    assert!(bucket.join("new.txt").exists(), "uploaded into the bucket");
    std::fs::write(bucket.join("a.txt"), "second, longer\n").unwrap();

    let noted = p.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        noted.code, 0,
        "a changed input is a note, not a change: {noted:?}"
    );
    assert!(
        noted.stdout.contains(&format!(
            "deployment.{D}.sync.input: input changed since download: 1 new file, 1 changed."
        )),
        "{noted:?}"
    );
    assert!(
        noted
            .stdout
            .contains(&format!("anycloud apply -replace deployment.{D}.container")),
        "{noted:?}"
    );
    // The job that ran keeps what it started with.
    assert!(!p.host(D).join("mnt/input/new.txt").exists());

    let replaced = p.ok(&[
        "apply",
        "-replace",
        &format!("deployment.{D}.container"),
        "--auto-approve",
    ]);
    assert!(
        replaced
            .stdout
            .contains("The new run of its job in this plan syncs it first."),
        "{replaced:?}"
    );
    wait_for(30, "the new run's view of its input", || {
        (read(&seen).as_deref() == Some("a.txt\nnew.txt")
            && read(&a).as_deref() == Some("second, longer"))
        .then_some(())
    });
    let after = p.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(after.code, 0, "{after:?}");
    assert!(
        !after.stdout.contains("input changed"),
        "the input on the machine is the bucket's again: {after:?}"
    );

    p.ok(&["destroy", "--auto-approve"]);
}
