//! What real machines do that a fresh test host does not, on the embedded local cloud with
//! real dockerd, supervisord and rclone: a reboot (supervisord and the job killed, the boot
//! unit run again), a second state sharing the machine's root, and an operator who is not
//! root but in the docker group.
//!
//! Needs root with docker, supervisord and rclone (`scripts/prereqs.sh`).

mod common;

use std::path::Path;

use common::{build_image, containers_of, read, supervisords_of, wait_for, Project};

fn config(project: &str, root: Option<&Path>, deployment: &str) -> String {
    let root = root
        .map(|r| format!("providers: {{ local: {{ root: {} }} }}\n", r.display()))
        .unwrap_or_default();
    format!(
        r#"
project: {project}
{root}defaults:
  provider: local
  sync_interval: 1s
  connectivity_check: {{ retries: 2, retries_sleep: 1s }}
deployments:
  {deployment}:
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, /job.sh]
    buckets: {{ input: {deployment}-input, output: {deployment}-results, checkpoint: true }}
"#
    )
}

fn fill_input(bucket: &Path) {
    std::fs::create_dir_all(bucket).unwrap();
    std::fs::write(bucket.join("data.txt"), "hello\n").unwrap();
}

/// The upload loops running for a host: (under a live supervisord, orphans of a dead one).
fn upload_loops(host: &Path) -> (usize, usize) {
    let mnt = format!("{}/mnt/", host.display());
    let mut counts = (0, 0);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !(cmdline.starts_with("/bin/bash -c while true; do") && cmdline.contains(&mnt)) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .unwrap_or("1");
        let parent = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
        if parent.trim() == "supervisord" {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }
    counts
}

fn container_state(deployment: &str) -> String {
    common::sh(&format!(
        "docker inspect -f '{{{{.State.Status}}}} {{{{.State.ExitCode}}}}' $(docker ps -aq --filter label=anycloud.deployment={deployment})"
    ))
}

/// After a reboot (or a crash of supervisord or dockerd) the uploads and the job come back
/// by themselves: the boot unit runs the boot script, which starts the private supervisord
/// again and restarts a job that was killed (not one that finished or that anycloud
/// stopped). Nothing is left for a plan to do.
#[test]
fn after_a_reboot_the_uploads_and_the_job_come_back_by_themselves() {
    common::remove_leftover_containers(&["boot-job"]);
    build_image("anycloud-e2e:v1");
    let p = Project::new(&config("reboot", None, "boot-job"));
    fill_input(&p.bucket("boot-job-input"));
    p.ok(&["apply", "--auto-approve"]);
    let host = p.host("boot-job");
    let results = p.bucket("boot-job-results");
    wait_for(30, "the job's first output in its bucket", || {
        read(&results.join("tick.txt")).filter(|t| !t.is_empty())
    });
    let boot = host.join("supervisor/boot.sh");
    let mode = std::fs::metadata(&boot).expect("the boot script is on the machine");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o755
    );

    // The machine goes down: the job is killed (137) and supervisord with it.
    common::sh(
        "docker kill $(docker ps -q --filter label=anycloud.deployment=boot-job) >/dev/null",
    );
    let pattern = format!("supervisord -c {}/", host.display());
    std::process::Command::new("pkill")
        .args(["-9", "-f", "--", &pattern])
        .status()
        .unwrap();
    wait_for(10, "supervisord to be gone", || {
        (supervisords_of(&host) == 0).then_some(())
    });
    assert!(container_state("boot-job").starts_with("exited 137"));
    std::fs::remove_file(results.join("tick.txt")).unwrap();

    // The service manager starts the unit again.
    assert_eq!(
        upload_loops(&host),
        (0, 2),
        "the dead supervisord's loops live on"
    );
    let out = std::process::Command::new(&boot).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(supervisords_of(&host), 1);
    // Its orphaned loops are gone; the new supervisord's two run (one per program).
    wait_for(10, "one loop per upload program, and no orphan", || {
        (upload_loops(&host) == (2, 0)).then_some(())
    });
    assert!(
        container_state("boot-job").starts_with("running"),
        "{}",
        container_state("boot-job")
    );
    // Uploads run again: the job's new output reaches the bucket with no apply.
    wait_for(30, "output to reach the bucket after the reboot", || {
        read(&results.join("tick.txt")).filter(|t| !t.is_empty())
    });
    // Run again (the unit's watch loop does every 30 s): nothing more is started.
    let out = std::process::Command::new(&boot).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(supervisords_of(&host), 1);
    assert_eq!(containers_of("boot-job"), 1);
    let again = p.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "nothing is left to repair: {again:?}");

    // A job anycloud stopped stays stopped.
    p.ok(&[
        "destroy",
        "--auto-approve",
        "--target",
        "deployment.boot-job.container",
    ]);
    let out = std::process::Command::new(&boot).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(containers_of("boot-job"), 0);
}

/// Two states (two projects) with a deployment of the same id on one machine root: the
/// second never stops, adopts or removes the first's "VM", and says whose it is.
#[test]
fn a_second_state_never_touches_the_first_ones_machine() {
    build_image("anycloud-e2e:v1");
    let shared = tempfile::Builder::new()
        .prefix("anycloud-shared-")
        .tempdir_in("/tmp")
        .unwrap();
    let root = shared.path().join("root");
    fill_input(&root.join("buckets/twin-input"));
    let first = Project::new(&config("first", Some(&root), "twin"));
    first.ok(&["apply", "--auto-approve"]);
    let host = root.join("hosts/twin");
    let owner = read(&host.join(".anycloud-owner")).expect("an owner marker");
    assert_eq!(
        owner,
        first.state_json().unwrap()["lineage"].as_str().unwrap()
    );
    let container = common::sh("docker ps -q --filter label=anycloud.deployment=twin");
    assert!(!container.is_empty());

    let second = Project::new(&config("second", Some(&root), "twin"));
    let refused = second.run(&["apply", "--auto-approve"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(said.contains("belongs to another anycloud state"), "{said}");
    assert!(said.contains(&owner), "{said}");
    // The first's job runs on, untouched (the same container), and its files are there.
    assert_eq!(
        common::sh("docker ps -q --filter label=anycloud.deployment=twin"),
        container
    );
    assert_eq!(supervisords_of(&host), 1);

    // The second's destroy forgets its refused record and leaves the first's machine.
    second.ok(&["destroy", "--auto-approve"]);
    assert!(host.join("mnt").is_dir());
    assert_eq!(
        common::sh("docker ps -q --filter label=anycloud.deployment=twin"),
        container
    );
    assert_eq!(first.run(&["plan", "--detailed-exitcode"]).code, 0);
    first.ok(&["destroy", "--auto-approve"]);
    assert!(!host.exists());
}

/// An operator who is not root, in the docker group: the job runs as them, so what it
/// writes (0600 files, directories of its own) is theirs to upload and to remove.
#[test]
fn an_operator_in_the_docker_group_destroys_what_the_job_wrote() {
    common::remove_leftover_containers(&["op-job"]);
    build_image("anycloud-e2e:v1");
    let user = format!("acop{}", std::process::id() % 100_000);
    let _ = common::sh(&format!("userdel -r {user} 2>/dev/null"));
    common::sh(&format!("useradd -m -G docker -s /bin/bash {user}"));
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            common::sh(&format!("userdel -r {} 2>/dev/null", self.0));
        }
    }
    let _gone = Gone(user.clone());
    let p = Project::new(&config("operator", None, "op-job").replace(
        "command: [/bin/sh, /job.sh]",
        "command: [/bin/sh, -c, 'umask 077; mkdir -p /mnt/output/private; echo secret > /mnt/output/private/result.txt; exec /bin/sh /job.sh']",
    ));
    fill_input(&p.bucket("op-job-input"));
    common::sh(&format!("chown -R {user}: {}", p.path().display()));
    let as_operator = |args: &[&str]| {
        let out = std::process::Command::new("runuser")
            .args(["-u", &user, "--", env!("CARGO_BIN_EXE_anycloud")])
            .args(args)
            .current_dir(p.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "anycloud {args:?} as {user}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    as_operator(&["apply", "--auto-approve"]);
    let host = p.host("op-job");
    wait_for(30, "the job's private file", || {
        read(&host.join("mnt/output/private/result.txt"))
    });
    let uid = common::sh(&format!("id -u {user}"));
    assert_eq!(
        common::sh(&format!(
            "stat -c %u {}",
            host.join("mnt/output/private/result.txt").display()
        )),
        uid,
        "the job writes as the operator"
    );
    as_operator(&["destroy", "--auto-approve"]);
    assert_eq!(
        read(&p.bucket("op-job-results").join("private/result.txt")).as_deref(),
        Some("secret"),
        "the last upload read the job's private file"
    );
    assert!(!host.exists(), "the job's directories were removed");
    assert_eq!(containers_of("op-job"), 0);
}
