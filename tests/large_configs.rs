//! Honest large configs pass; hostile small ones fail fast, naming the limit they hit.

mod common;

use std::time::{Duration, Instant};

use common::Project;

/// A user's sweep: 1,000 jobs, 120 parameters each, a file of more than 2 MB. The parser's
/// fixed node cap (250,000) used to refuse it.
#[test]
fn a_sweep_of_1000_jobs_with_120_env_entries_each_validates() {
    let text = common::sweep_text(1000, 120);
    assert!(text.len() > 2_000_000, "{} bytes", text.len());
    let p = Project::new(&text);
    let r = p.run(&["validate"]);
    assert_eq!(r.code, 0, "{}", &r.stderr[..r.stderr.len().min(2000)]);
}

/// Many deployments naming one anchor is a sweep's normal shape, not a bomb: 3,000 jobs
/// sharing a 120-entry `env` by alias replay 363,000 values from a 220 KB file.
#[test]
fn thousands_of_aliases_of_one_anchor_are_honest() {
    let mut text = String::from(
        "project: sweep\ndefaults:\n  provider: local\nproviders:\n  local: { root: /srv/x }\nx-common: &common\n",
    );
    for k in 0..120 {
        text.push_str(&format!("  PARAM_{k:03}: \"{k}\"\n"));
    }
    text.push_str("deployments:\n");
    for i in 0..3000 {
        text.push_str(&format!(
            "  run-{i:04}: {{ container: {{ image: busybox, env: *common }} }}\n"
        ));
    }
    let p = Project::new(&text);
    let r = p.run(&["validate"]);
    // The only complaint may be the unknown top-level key holding the anchor: the aliases
    // themselves must pass.
    assert!(
        !r.stderr.contains("alias") && !r.stderr.contains("limit"),
        "{}",
        &r.stderr[..r.stderr.len().min(2000)]
    );
}

fn bomb(levels: usize) -> String {
    let names: Vec<String> = (0..levels).map(|i| format!("l{i}")).collect();
    let mut s = String::from(
        "deployments:\n  train-1:\n    container: { image: busybox }\n    sync_interval:\n",
    );
    s.push_str(&format!(
        "      - &{} [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        names[0]
    ));
    for w in names.windows(2) {
        let a = format!("*{}", w[0]);
        s.push_str(&format!("      - &{} [{}]\n", w[1], vec![a; 9].join(",")));
    }
    s
}

/// Billion laughs (nine levels, 9^9 values from 600 bytes) and a deeper one are refused
/// while parsing, fast, with the limit and the way to raise it in the message.
#[test]
fn an_alias_bomb_is_refused_in_milliseconds_naming_the_limit() {
    for levels in [9, 30] {
        let p = Project::new(&bomb(levels));
        let start = Instant::now();
        let r = p.run(&["validate"]);
        let took = start.elapsed();
        eprintln!("a bomb of {levels} levels refused in {took:?}");
        assert_eq!(r.code, 1, "{r:?}");
        assert!(
            r.stderr.contains(
                "anchors and aliases expand into too large a document: more than 100000 values"
            ),
            "{}",
            r.stderr
        );
        assert!(
            r.stderr.contains("ANYCLOUD_YAML_ALIAS_VALUES="),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("anycloud.yaml:"), "located: {}", r.stderr);
        // A debug build of the whole process, start to exit: the bound is what keeps it
        // from running for hours or taking all memory.
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}

/// The limit is the user's to raise for an honest file (and to lower).
#[test]
fn the_alias_limit_can_be_set_for_an_honest_file() {
    // 9^4 values: within the default (the config is still wrong: sync_interval is no list).
    let p = Project::new(&bomb(4));
    let r = p.run(&["validate"]);
    assert!(!r.stderr.contains("aliases expand"), "{}", r.stderr);
    let r = p
        .command(&["validate"])
        .env("ANYCLOUD_YAML_ALIAS_VALUES", "10")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("more than 10 values (ANYCLOUD_YAML_ALIAS_VALUES)"),
        "{stderr}"
    );
}
