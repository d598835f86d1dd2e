//! `kill -9` of apply and destroy at random moments: the state always parses, and the next
//! run converges with nothing duplicated (one container, one supervisord, one set of
//! programs per deployment). The seed is printed so a failure can be replayed with
//! ANYCLOUD_KILL9_SEED.

mod common;

use std::time::{Duration, Instant};

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

/// xorshift64*: enough randomness for kill times, and replayable from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// Starts `anycloud ARGS` and SIGKILLs it after `after`. Returns whether it was still running.
fn kill_after(p: &Project, args: &[&str], after: Duration) -> bool {
    let mut child = p
        .command(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap_or(()); // SIGKILL
    child.wait().unwrap();
    // Steps the dead process had started (they run in their own process group) finish
    // on their own; a user would not rerun within the same instant either.
    std::thread::sleep(Duration::from_millis(1500));
    running
}

fn state_parses(p: &Project, when: &str) {
    let path = p.path().join(".anycloud/state.json");
    if path.exists() {
        anycloud_state::load(&path).unwrap_or_else(|e| panic!("state does not parse {when}: {e}"));
    }
    let backup = p.path().join(".anycloud/state.json.backup");
    if backup.exists() {
        anycloud_state::load(&backup)
            .unwrap_or_else(|e| panic!("state backup does not parse {when}: {e}"));
    }
}

fn assert_converged(p: &Project, when: &str) {
    let plan = p.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "plan not clean {when}: {plan:?}");
    for d in DEPLOYMENTS {
        assert_eq!(containers_of(d), 1, "containers of {d} {when}");
        assert_eq!(supervisords_of(&p.host(d)), 1, "supervisords of {d} {when}");
        let programs = std::fs::read_dir(p.host(d).join("supervisor/conf.d"))
            .unwrap()
            .count();
        assert_eq!(programs, 2, "programs of {d} {when}");
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
    build_image("anycloud-kill:v1");
    let p = Project::new(&config());
    let input = p.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("data.txt"), "kill -9 input\n").unwrap();
    p.ok(&["bucket", "upload", "kill-input", input.to_str().unwrap()]);

    // How long a whole apply and destroy take here bounds the moments to kill at (the first
    // runs are the slowest, so kills land in their first 70%).
    let t = Instant::now();
    p.ok(&["apply", "--auto-approve"]);
    let apply_ms = t.elapsed().as_millis() as u64;
    assert_converged(&p, "after the first apply");
    let t = Instant::now();
    p.ok(&["destroy", "--auto-approve"]);
    let destroy_ms = t.elapsed().as_millis() as u64;
    assert_gone(&p, "after the first destroy");

    let seed = std::env::var("ANYCLOUD_KILL9_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill -9 trials: seed {seed}, apply {apply_ms} ms, destroy {destroy_ms} ms");
    let mut rng = Rng(seed);
    let trials = 20;
    let mut interrupted = 0;
    for trial in 1..=trials {
        let at = Duration::from_millis(rng.below(apply_ms * 7 / 10));
        if kill_after(&p, &["apply", "--auto-approve"], at) {
            interrupted += 1;
        }
        let when = format!("after apply was killed at {at:?} (trial {trial}, seed {seed})");
        state_parses(&p, &when);
        if trial % 2 == 1 {
            // Straight to destroy: what the killed apply left (pending creates included)
            // must be found and removed.
            p.ok(&["destroy", "--auto-approve"]);
            assert_gone(&p, &format!("{when}, then destroyed"));
            continue;
        }
        p.ok(&["apply", "--auto-approve"]);
        assert_converged(&p, &when);

        let at = Duration::from_millis(rng.below(destroy_ms * 7 / 10));
        if kill_after(&p, &["destroy", "--auto-approve"], at) {
            interrupted += 1;
        }
        let when = format!("after destroy was killed at {at:?} (trial {trial}, seed {seed})");
        state_parses(&p, &when);
        p.ok(&["destroy", "--auto-approve"]);
        assert_gone(&p, &when);
    }
    // At least half the kills must land mid-run, or the test proves little.
    let kills = trials + trials / 2;
    assert!(
        interrupted >= kills / 2,
        "only {interrupted} of {kills} kills hit a running process"
    );
}
