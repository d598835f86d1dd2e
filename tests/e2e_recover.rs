//! `anycloud run --recover` on the embedded local cloud with real dockerd, supervisord and
//! rclone: a job that counts with checkpoints loses its machine (its container removed, its
//! supervisord stopped, its host directory deleted: what a spot preemption leaves) while
//! the run watches. The run brings it back each time, a new machine resuming from the
//! checkpoint, says so in one `recovery` line of the JSON stream per recovery, ends with
//! the job's code and takes down what it made; past `--max-recoveries` it stops, naming the
//! limit, and makes nothing more; two watchers of one state recover the job once.
//!
//! Needs root with docker, supervisord and rclone installed (`.ci/run` provides them).

mod common;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{build_image, containers_of, read, sh, supervisords_of, wait_for, Project};
use serde_json::Value;

/// Counts to 150, a tick each 0.2 s, keeping the count in its checkpoint; says where it
/// resumed from; exits 3 once done (a code of its own, which the run must end with).
fn config(deployment: &str) -> String {
    format!(
        r#"
project: recover
defaults:
  provider: local
  sync_interval: 1s
  connectivity_check: {{ retries: 2, retries_sleep: 1s }}
deployments:
  {deployment}:
    container:
      image: anycloud-e2e:v1
      command: [/bin/sh, -c, "n=0; [ -f /mnt/checkpoint/counter ] && n=$(cat /mnt/checkpoint/counter); echo resuming from $n; while [ $n -lt 150 ]; do n=$((n+1)); echo $n > /mnt/checkpoint/counter.tmp && mv /mnt/checkpoint/counter.tmp /mnt/checkpoint/counter; sleep 0.2; done; echo counted to $n; exit 3"]
    buckets: {{ output: {deployment}-out, checkpoint: true }}
"#
    )
}

/// An `anycloud run --recover` in the background, its stdout (the JSON stream) and stderr
/// (people's text and the job's output) in files the test reads as it goes.
struct Watcher {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Watcher {
    fn start(p: &Project, name: &str, args: &[&str]) -> Watcher {
        let out = p.path().join(format!("{name}.stdout"));
        let err = p.path().join(format!("{name}.stderr"));
        let child = p
            .command(args)
            .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
            .spawn()
            .unwrap();
        Watcher {
            child: Some(child),
            out,
            err,
        }
    }

    /// The whole lines of the stream so far.
    fn lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter(|l| l.ends_with('}'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn recoveries(&self) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["type"] == "recovery")
            .collect()
    }

    /// Waits for the run to end; its exit code.
    fn wait(&mut self, secs: u64) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let child = self.child.as_mut().expect("still running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "the run did not end within {secs}s\n--- stderr\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Only the process this test started, by its id.
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every line valid against the schema `anycloud schema json-stream` prints.
fn check_schema(p: &Project, lines: &[Value]) {
    let schema: Value = serde_json::from_str(&p.ok(&["schema", "json-stream"]).stdout).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    for line in lines {
        let errors: Vec<String> = validator.iter_errors(line).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{line}: {errors:?}");
    }
}

/// The count in the checkpoint bucket.
fn checkpointed(p: &Project, d: &str) -> Option<u64> {
    read(&p.bucket(d).join("counter")).and_then(|c| c.parse().ok())
}

fn job_running(d: &str) -> bool {
    !sh(&format!(
        "docker ps -q --filter label=anycloud.deployment={d} --filter status=running"
    ))
    .is_empty()
}

/// Waits until the job runs and its checkpoint bucket holds at least `at_least`.
fn counting_past(p: &Project, d: &str, at_least: u64) -> u64 {
    wait_for(180, &format!("{d}'s checkpoint past {at_least}"), || {
        checkpointed(p, d).filter(|n| *n >= at_least && job_running(d))
    })
}

/// What a spot preemption leaves of the machine: nothing. Its job's container is removed,
/// its private supervisord stopped (and its upload loops with it), its disk deleted.
fn lose_machine(p: &Project, d: &str) {
    sh(&format!(
        "docker rm -f $(docker ps -aq --filter label=anycloud.deployment={d}) >/dev/null 2>&1; true"
    ));
    let host = p.host(d);
    let pattern = format!(
        "supervisord -c {}/supervisor/supervisord.conf",
        host.display()
    );
    let pids = std::process::Command::new("pgrep")
        .args(["-f", "--", &pattern])
        .output()
        .unwrap();
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        sh(&format!("kill {pid}"));
    }
    wait_for(30, "the machine's supervisord to stop", || {
        (supervisords_of(&host) == 0).then_some(())
    });
    std::fs::remove_dir_all(&host).unwrap();
}

/// The numbers each run of the job said it resumed from, in order.
fn resumed_from(said: &str) -> Vec<u64> {
    said.lines()
        .filter_map(|l| l.trim().strip_prefix("resuming from "))
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

fn addresses_of(p: &Project, d: &str) -> Vec<String> {
    p.ok(&["state", "list"])
        .stdout
        .lines()
        .filter(|a| a.starts_with(&format!("deployment.{d}.")))
        .map(str::to_owned)
        .collect()
}

/// Creates of the machine the stream reports (the first apply's, and each recovery's).
fn machines_made(lines: &[Value], d: &str) -> usize {
    lines
        .iter()
        .filter(|l| {
            l["type"] == "apply_start"
                && l["hook"]["address"] == format!("deployment.{d}.vm")
                && l["hook"]["action"] == "create"
        })
        .count()
}

#[test]
fn a_job_whose_machine_is_lost_twice_is_recovered_from_its_checkpoint_each_time() {
    let d = "recover-twice";
    common::remove_leftover_containers(&[d]);
    build_image("anycloud-e2e:v1");
    let p = Project::new(&config(d));
    let mut w = Watcher::start(
        &p,
        "watcher",
        &[
            "run",
            d,
            "--recover",
            "--recover-wait",
            "1s",
            "--max-recoveries",
            "3",
            "--auto-approve",
            "--json-stream",
        ],
    );

    let before_first = counting_past(&p, d, 10);
    lose_machine(&p, d);
    wait_for(180, "the first recovery", || {
        (w.recoveries().len() == 1).then_some(())
    });
    let before_second = counting_past(&p, d, before_first + 10);
    lose_machine(&p, d);

    let code = w.wait(300);
    let lines = w.lines();
    let said = w.stderr();
    assert_eq!(code, 3, "the run ends with the job's code\n{said}");
    check_schema(&p, &lines);
    let recoveries = w.recoveries();
    assert_eq!(recoveries.len(), 2, "one line per recovery: {recoveries:?}");
    for (i, r) in recoveries.iter().enumerate() {
        assert_eq!(r["recovery"]["deployment"], d, "{r}");
        assert_eq!(r["recovery"]["attempt"], i as u64 + 1, "{r}");
        assert_eq!(r["recovery"]["max_recoveries"], 3, "{r}");
        assert_eq!(r["recovery"]["reason"], "machine-gone", "{r}");
        assert!(r["recovery"]["waited_secs"].as_f64().unwrap() >= 1.0, "{r}");
    }
    assert_eq!(
        said.matches("Recovery ").count(),
        2,
        "a line for people per recovery too:\n{said}"
    );
    // Each new machine's job resumed from the checkpoint its bucket held when the last was
    // lost, or later.
    let resumed = resumed_from(&said);
    assert_eq!(resumed.len(), 3, "three runs of the job:\n{said}");
    assert_eq!(resumed[0], 0);
    assert!(
        resumed[1] > 0 && resumed[1] >= before_first && resumed[2] >= before_second,
        "resumed from {resumed:?}; the checkpoint held {before_first} and {before_second}"
    );
    assert!(said.contains("counted to 150"), "{said}");
    assert_eq!(
        machines_made(&lines, d),
        3,
        "the first machine and two more"
    );

    // What the run made, the recoveries' machines included, is taken down.
    assert!(said.contains("Destroy complete!"), "{said}");
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "outcome", "{last}");
    assert_eq!(last["outcome"]["operation"], "destroy", "{last}");
    assert_eq!(last["outcome"]["status"], "complete", "{last}");
    assert_eq!(containers_of(d), 0);
    assert!(!p.host(d).exists());
    assert_eq!(addresses_of(&p, d), Vec::<String>::new());
    assert_eq!(
        checkpointed(&p, d),
        Some(150),
        "the checkpoint bucket is kept"
    );
}

#[test]
fn past_max_recoveries_the_run_stops_naming_the_limit_and_makes_nothing_more() {
    let d = "recover-limit";
    common::remove_leftover_containers(&[d]);
    build_image("anycloud-e2e:v1");
    let p = Project::new(&config(d));
    let mut w = Watcher::start(
        &p,
        "watcher",
        &[
            "run",
            d,
            "--recover",
            "--recover-wait",
            "1s",
            "--max-recoveries",
            "1",
            "--auto-approve",
            "--json-stream",
        ],
    );
    let first = counting_past(&p, d, 10);
    lose_machine(&p, d);
    wait_for(180, "the first recovery", || {
        (w.recoveries().len() == 1).then_some(())
    });
    counting_past(&p, d, first + 10);
    let recorded = addresses_of(&p, d);
    lose_machine(&p, d);

    let code = w.wait(120);
    let said = w.stderr();
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("--max-recoveries 1 is reached"),
        "it names the limit:\n{said}"
    );
    let lines = w.lines();
    check_schema(&p, &lines);
    assert_eq!(w.recoveries().len(), 1);
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "diagnostic", "{last}");
    assert!(
        last["diagnostic"]["summary"]
            .as_str()
            .unwrap()
            .contains("--max-recoveries 1"),
        "{last}"
    );
    // Nothing more was made, nothing taken down or forgotten: the state records what the
    // run left, no operation of it pending, and the next plan sees the machine to make.
    assert!(!p.host(d).exists(), "no third machine");
    assert_eq!(containers_of(d), 0);
    assert_eq!(addresses_of(&p, d), recorded);
    let state = p.state_json().unwrap();
    for (address, r) in state["resources"].as_object().unwrap() {
        assert!(r["pending"].is_null(), "{address} is pending: {r}");
    }
    let plan = p.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    assert!(
        plan.stdout
            .contains(&format!("deployment.{d}.vm will be created")),
        "{plan:?}"
    );
}

#[test]
fn two_watchers_of_one_state_recover_a_lost_job_once() {
    let d = "recover-pair";
    common::remove_leftover_containers(&[d]);
    build_image("anycloud-e2e:v1");
    let p = Project::new(&config(d));
    let args = [
        "run",
        d,
        "--recover",
        "--recover-wait",
        "1s",
        "--auto-approve",
        "--json-stream",
    ];
    let mut first = Watcher::start(&p, "first", &args);
    let before = counting_past(&p, d, 10);
    let mut second = Watcher::start(&p, "second", &args);
    let deadline = Instant::now() + Duration::from_secs(240);
    while !second
        .stderr()
        .contains("was already running before this run")
    {
        assert!(
            Instant::now() < deadline,
            "the second watcher does not follow the job:\n{}",
            second.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    lose_machine(&p, d);

    let (code1, code2) = (first.wait(300), second.wait(120));
    let (said1, said2) = (first.stderr(), second.stderr());
    assert_eq!(code1, 3, "{said1}");
    assert_eq!(code2, 3, "{said2}");
    let (lines1, lines2) = (first.lines(), second.lines());
    check_schema(&p, &lines1);
    check_schema(&p, &lines2);
    let recoveries = first.recoveries().len() + second.recoveries().len();
    assert_eq!(
        recoveries, 1,
        "exactly one watcher recovered the job\n--- first\n{said1}\n--- second\n{said2}"
    );
    assert_eq!(
        machines_made(&lines1, d) + machines_made(&lines2, d),
        2,
        "the first machine, and one made by the recovery"
    );
    // Both followed the job to its end on the machine brought back, which resumed from the
    // checkpoint.
    for said in [&said1, &said2] {
        let resumed = resumed_from(said);
        assert!(
            resumed.last().is_some_and(|n| *n >= before) && said.contains("counted to 150"),
            "{resumed:?}, the checkpoint held {before}\n{said}"
        );
    }
    assert_eq!(containers_of(d), 0);
    assert!(!p.host(d).exists());
    assert_eq!(addresses_of(&p, d), Vec::<String>::new());
}
