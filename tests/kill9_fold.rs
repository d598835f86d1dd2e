//! `kill -9` while apply or destroy folds its journal into the state: before the new state
//! replaces the old (the journal holds the run), and after (the journal is stale). Either
//! way the state parses, the next run converges with nothing duplicated, and a destroy
//! leaves nothing. The local store pauses at the phase named by its test-only
//! `ANYCLOUD_TEST_PAUSE_IN_FOLD`, announcing it on stderr, so the kill lands exactly there.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Project;

const DEPLOYMENTS: usize = 40;

fn config() -> String {
    let mut c = String::from("defaults:\n  provider: local\ndeployments:\n");
    for i in 0..DEPLOYMENTS {
        c.push_str(&format!(
            "  fold-{i:02}:\n    container: {{ image: \"busybox:latest\" }}\n    buckets: {{ output: fold-out-{i:02}, checkpoint: true }}\n"
        ));
    }
    c
}

/// The targets of a trial: the storage, each deployment's VM (a directory here) and its
/// buckets. No Docker, so trials are quick.
fn targets() -> Vec<String> {
    let mut t = vec![
        "--target".to_owned(),
        "shared.local.local.storage".to_owned(),
    ];
    for i in 0..DEPLOYMENTS {
        for what in ["vm", "bucket"] {
            t.push("--target".to_owned());
            t.push(format!("deployment.fold-{i:02}.{what}"));
        }
    }
    t
}

/// Runs `anycloud ARGS` until it announces the fold phase `phase`, then kills it with -9.
fn kill_in_fold(p: &Project, args: &[&str], phase: &str) {
    let mut child = p
        .command(args)
        .env("ANYCLOUD_TEST_PAUSE_IN_FOLD", phase)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let marker = format!("paused in fold ({phase})");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let start = Instant::now();
    let mut seen = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        if line.contains(&marker) {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return;
        }
        seen.push(line);
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no fold after 2 min"
        );
    }
    let status = child.wait().unwrap();
    panic!("{args:?} ended ({status}) without reaching the fold's {phase}:\n{seen:#?}");
}

fn resources(p: &Project) -> usize {
    anycloud_state::load(&p.path().join(".anycloud/state.json"))
        .expect("the state parses")
        .resources
        .len()
}

fn assert_converged(p: &Project, when: &str) {
    let mut args = vec!["plan", "--detailed-exitcode"];
    let t = targets();
    args.extend(t.iter().map(String::as_str));
    let plan = p.run(&args);
    assert_eq!(plan.code, 0, "plan not clean {when}: {plan:?}");
    // Storage, and per deployment its VM and two buckets: each once.
    assert_eq!(resources(p), 1 + DEPLOYMENTS * 3, "{when}");
    for i in 0..DEPLOYMENTS {
        assert!(p.host(&format!("fold-{i:02}")).is_dir(), "{when}");
    }
}

#[test]
fn kill_nine_during_the_fold_then_converge() {
    let p = Project::new(&config());
    let t = targets();
    let targeted = |verb: &'static [&'static str]| -> Vec<&str> {
        let mut a: Vec<&str> = verb.to_vec();
        a.extend(t.iter().map(String::as_str));
        a
    };
    let apply = targeted(&["apply", "--auto-approve"]);
    let destroy = targeted(&["destroy", "--auto-approve"]);
    let journal = p.path().join(".anycloud/state.json.journal");
    let trials = 12;
    for trial in 0..trials {
        let phase = if trial % 2 == 0 {
            "before-replace"
        } else {
            "after-replace"
        };
        let when = format!("after apply was killed {phase} (trial {trial})");
        kill_in_fold(&p, &apply, phase);
        assert!(journal.exists(), "the journal outlives the kill {when}");
        // The state reads back whole, with what the killed run did.
        assert_eq!(resources(&p), 1 + DEPLOYMENTS * 3, "{when}");
        p.ok(&apply);
        assert!(!journal.exists(), "folded by the next run {when}");
        assert_converged(&p, &when);

        let when = format!("after destroy was killed {phase} (trial {trial})");
        kill_in_fold(&p, &destroy, phase);
        assert_eq!(resources(&p), 0, "{when}");
        p.ok(&destroy);
        assert_eq!(p.ok(&["state", "list"]).stdout, "", "{when}");
        for i in 0..DEPLOYMENTS {
            assert!(!p.host(&format!("fold-{i:02}")).exists(), "{when}");
        }
    }
}
