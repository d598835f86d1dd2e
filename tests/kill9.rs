//! `kill -9` of apply and destroy at random moments: the state always parses, and the next
//! run converges with nothing duplicated (one container, one supervisord, one set of
//! programs per deployment). The seed is printed so a failure can be replayed with
//! ANYCLOUD_KILL9_SEED.

mod common;

#[path = "common/kill9.rs"]
mod kill9;

use common::{build_image, containers_of, supervisords_of, Project};

const DEPLOYMENTS: [&str; 2] = ["kill-one", "kill-two"];

fn config() -> String {
    let mut c = String::from(
        "defaults:\n  provider: local\n  sync_interval: 1s\n  connectivity_check: { retries: 2, retries_sleep: 1s }\ndeployments:\n",
    );
    for d in DEPLOYMENTS {
        c.push_str(&format!(
            "  {d}:\n    container: {{ image: \"anycloud-kill:v1\", command: [/bin/sh, /job.sh] }}\n    buckets: {{ input: kill-input, output: kill-results-{d}, checkpoint: true }}\n"
        ));
    }
    c
}

fn assert_converged(p: &Project, when: &str) {
    let plan = p.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "plan not clean {when}: {plan:?}");
    for d in DEPLOYMENTS {
        assert_eq!(containers_of(d), 1, "containers of {d} {when}");
        assert_eq!(supervisords_of(&p.host(d)), 1, "supervisords of {d} {when}");
        // What supervisord loads (`conf.d/*.conf`): a write killed mid-way may leave its
        // temporary file (`.anycloud-…`) beside them, which is never loaded.
        let entries: Vec<String> = std::fs::read_dir(p.host(d).join("supervisor/conf.d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let programs = entries.iter().filter(|n| n.ends_with(".conf")).count();
        assert_eq!(programs, 2, "programs of {d} {when}: {entries:?}");
    }
}

fn assert_gone(p: &Project, when: &str) {
    for d in DEPLOYMENTS {
        assert_eq!(containers_of(d), 0, "containers of {d} {when}");
        assert_eq!(supervisords_of(&p.host(d)), 0, "supervisords of {d} {when}");
    }
    assert_eq!(p.ok(&["state", "list"]).stdout, "", "state {when}");
}

#[test]
fn kill_nine_at_random_moments_then_converge() {
    common::remove_leftover_containers(&DEPLOYMENTS);
    build_image("anycloud-kill:v1");
    let p = Project::new(&config());
    let input = p.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("data.txt"), "kill -9 input\n").unwrap();
    p.ok(&["bucket", "upload", "kill-input", input.to_str().unwrap()]);
    let outcome = kill9::run(
        &p,
        &kill9::Checks {
            converged: &assert_converged,
            gone: &assert_gone,
        },
        20,
    );
    eprintln!(
        "local: {} kills, {} mid-run",
        outcome.kills, outcome.interrupted
    );
}
