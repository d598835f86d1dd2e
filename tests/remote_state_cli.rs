//! A team's state in S3 (moto), end to end through the CLI with the local cloud running the
//! deployments: `state:` in anycloud.yaml, a local state migrated there, two applies at
//! once (one waits, then fails naming the holder), and `kill -9` at random moments, after
//! which `force-unlock` and the next run converge with nothing duplicated.
//!
//! Needs root, docker, supervisord, rclone and moto (`scripts/prereqs.sh`).

mod common;

#[path = "common/kill9.rs"]
mod kill9;

use common::moto::Moto;
use common::{build_image, containers_of, supervisords_of, Project};

const DEPLOYMENTS: [&str; 2] = ["team-one", "team-two"];
const STATE: &str =
    "state: { s3: { bucket: team-state, key: envs/prod/anycloud.json, region: us-east-1 } }\n";

fn deployments(names: &[&str], steps: u32) -> String {
    let mut c = String::from(
        "defaults:\n  provider: local\n  sync_interval: 1s\n  connectivity_check: { retries: 2, retries_sleep: 1s }\ndeployments:\n",
    );
    for d in names {
        c.push_str(&format!(
            "  {d}:\n    container: {{ image: \"anycloud-kill:v1\", command: [/bin/sh, /job.sh], env: {{ STEPS: \"{steps}\" }} }}\n    buckets: {{ input: team-input, output: team-results-{d}, checkpoint: true }}\n"
        ));
    }
    c
}

fn project(config: &str, moto: &Moto) -> Project {
    let mut p = Project::new(config);
    p.env = moto.env();
    let input = p.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("data.txt"), "team input\n").unwrap();
    p
}

fn moto_with_bucket() -> Moto {
    let moto = Moto::start("127.0.0.1");
    let (status, body) = moto.http("PUT", "/team-state", None);
    assert_eq!(status, 200, "{body}");
    moto
}

fn lock_held(moto: &Moto) -> bool {
    moto.http("GET", "/team-state/envs/prod/anycloud.json.lock", None)
        .0
        == 200
}

#[test]
fn a_local_state_moves_to_s3_and_two_applies_take_turns() {
    common::remove_leftover_containers(&DEPLOYMENTS);
    build_image("anycloud-kill:v1");
    let moto = moto_with_bucket();
    // A project that began with its state on the laptop.
    let p = project(&deployments(&DEPLOYMENTS[..1], 1), &moto);
    p.ok(&["bucket", "upload", "team-input", "input"]);
    p.ok(&["apply", "--auto-approve"]);
    let local = anycloud_state::load(&p.path().join(".anycloud/state.json")).unwrap();

    // The team's config keeps it in S3: an empty store until the state is migrated.
    p.write_config(&format!("{STATE}{}", deployments(&DEPLOYMENTS[..1], 1)));
    let both = p.run(&["plan", "--state", ".anycloud/state.json"]);
    assert_eq!(both.code, 1, "{both:?}");
    assert!(
        both.stderr
            .contains("state migrate --from .anycloud/state.json"),
        "{both:?}"
    );
    let migrated = p.ok(&["state", "migrate", "--from", ".anycloud/state.json"]);
    assert!(
        migrated
            .stdout
            .contains("to s3://team-state/envs/prod/anycloud.json"),
        "{migrated:?}"
    );
    let pulled = p.ok(&["state", "pull"]);
    let remote = anycloud_state::from_bytes(pulled.stdout.as_bytes()).unwrap();
    assert_eq!(remote.lineage, local.lineage);
    assert_eq!(remote.resources, local.resources);
    let clean = p.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(clean.code, 0, "the migrated state is the same: {clean:?}");
    // Again, or from another lineage: refused, nothing written.
    let again = p.run(&["state", "migrate", "--from", ".anycloud/state.json"]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("newer state"), "{again:?}");
    let other = p.path().join("other.json");
    anycloud_state::LocalStore::save_unchecked(&other, &anycloud_state::State::new()).unwrap();
    let foreign = p.run(&["state", "migrate", "--from", "other.json"]);
    assert_eq!(foreign.code, 1, "{foreign:?}");
    assert!(foreign.stderr.contains("another lineage"), "{foreign:?}");
    assert!(!lock_held(&moto), "a refused migrate lets go of the lock");

    // Two applies at once: the second waits for the lock, then fails naming the holder.
    p.write_config(&format!("{STATE}{}", deployments(&DEPLOYMENTS, 1)));
    let first = p
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for(30, "the first apply's lock in S3", || {
        lock_held(&moto).then_some(())
    });
    let t = std::time::Instant::now();
    let second = p.run(&["apply", "--auto-approve", "--lock-timeout", "2s"]);
    assert_eq!(second.code, 1, "{second:?}");
    assert!(
        t.elapsed() >= std::time::Duration::from_secs(2),
        "it waited"
    );
    assert!(
        second.stderr.contains("is locked by") && second.stderr.contains("running 'apply'"),
        "{second:?}"
    );
    assert!(
        second.stderr.contains("anycloud force-unlock "),
        "{second:?}"
    );
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{first:?}");
    assert!(!lock_held(&moto));
    for d in DEPLOYMENTS {
        assert_eq!(containers_of(d), 1, "{d}");
    }
    let clean = p.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(clean.code, 0, "{clean:?}");
    // No state file was written beside the config: the state is in S3 only.
    let local_after = anycloud_state::load(&p.path().join(".anycloud/state.json")).unwrap();
    assert_eq!(
        local_after.serial, local.serial,
        "the laptop's file is left as it was"
    );

    p.ok(&["destroy", "--auto-approve"]);
    for d in DEPLOYMENTS {
        assert_eq!(containers_of(d), 0, "{d}");
    }
}

#[test]
fn kill_nine_on_an_s3_state_then_force_unlock_and_converge() {
    let names = ["team-kill-one", "team-kill-two"];
    common::remove_leftover_containers(&names);
    build_image("anycloud-kill:v1");
    let moto = moto_with_bucket();
    let p = project(&format!("{STATE}{}", deployments(&names, 1)), &moto);
    p.ok(&["bucket", "upload", "team-input", "input"]);
    let converged = |p: &Project, when: &str| {
        let plan = p.run(&["plan", "--detailed-exitcode"]);
        assert_eq!(plan.code, 0, "plan not clean {when}: {plan:?}");
        for d in names {
            assert_eq!(containers_of(d), 1, "containers of {d} {when}");
            assert_eq!(supervisords_of(&p.host(d)), 1, "supervisords of {d} {when}");
        }
    };
    let gone = |p: &Project, when: &str| {
        for d in names {
            assert_eq!(containers_of(d), 0, "containers of {d} {when}");
            assert_eq!(supervisords_of(&p.host(d)), 0, "supervisords of {d} {when}");
        }
        assert_eq!(p.ok(&["state", "list"]).stdout, "", "state {when}");
    };
    let outcome = kill9::run(
        &p,
        &kill9::Checks {
            converged: &converged,
            gone: &gone,
        },
        10,
    );
    eprintln!(
        "s3 state: {} kills, {} mid-run",
        outcome.kills, outcome.interrupted
    );
    assert!(
        !p.path().join(".anycloud/state.json").exists(),
        "the state never touched the local file"
    );
}
