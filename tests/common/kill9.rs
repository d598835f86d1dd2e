//! Random `kill -9` trials of apply and destroy, for any cloud: the state always parses,
//! the next apply converges with nothing duplicated, and a destroy leaves nothing. The seed
//! is printed so a failure can be replayed with ANYCLOUD_KILL9_SEED.

use std::time::{Duration, Instant};

use crate::common::Project;

/// xorshift64*: enough randomness for kill times, and replayable from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

pub fn seed() -> u64 {
    std::env::var("ANYCLOUD_KILL9_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

/// Starts `anycloud ARGS` and SIGKILLs it after `after`. Returns whether it was still running.
pub fn kill_after(p: &Project, args: &[&str], after: Duration) -> bool {
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

/// Runs `anycloud ARGS` and insists on success. A remote state keeps the lock of a killed
/// run (no kernel lets go of it): the refusal must name the holder and the command that
/// clears it, which is then run, as a user would, before trying again.
pub fn ok_after_kill(p: &Project, args: &[&str], when: &str) {
    let first = p.run(args);
    if first.code == 0 {
        return;
    }
    let id = first
        .stderr
        .split("`anycloud force-unlock ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_else(|| panic!("anycloud {args:?} failed {when}: {first:?}"))
        .to_owned();
    assert!(
        first.stderr.contains("is locked by") && first.stderr.contains("pid "),
        "the refusal names the holder {when}: {first:?}"
    );
    p.ok(&["force-unlock", &id]);
    p.ok(args);
}

pub fn state_parses(p: &Project, when: &str) {
    // Wherever the state lives, what a run would start from parses.
    let pulled = p.run(&["state", "pull"]);
    assert_eq!(pulled.code, 0, "state pull {when}: {pulled:?}");
    anycloud_state::from_bytes(pulled.stdout.as_bytes())
        .unwrap_or_else(|e| panic!("state does not parse {when}: {e}"));
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

/// What a cloud's trials check, besides the state parsing.
pub struct Checks<'a> {
    /// After an apply: everything there once (one VM, one container, one supervisord…).
    pub converged: &'a dyn Fn(&Project, &str),
    /// After a destroy: nothing left.
    pub gone: &'a dyn Fn(&Project, &str),
}

/// What the trials did: how many kills there were and how many hit a running process.
pub struct Outcome {
    pub kills: u32,
    pub interrupted: u32,
}

/// `trials` rounds on `p`: odd ones kill an apply and destroy straight away (what the
/// killed apply left, pending creates included, must be found and removed); even ones kill
/// an apply, apply again, kill a destroy and destroy again.
pub fn run(p: &Project, checks: &Checks<'_>, trials: u32) -> Outcome {
    // How long a whole apply and destroy take here bounds the moments to kill at (the first
    // runs are the slowest, so kills land in their first 70%).
    let t = Instant::now();
    p.ok(&["apply", "--auto-approve"]);
    let apply_ms = t.elapsed().as_millis() as u64;
    (checks.converged)(p, "after the first apply");
    let t = Instant::now();
    p.ok(&["destroy", "--auto-approve"]);
    let destroy_ms = t.elapsed().as_millis() as u64;
    (checks.gone)(p, "after the first destroy");

    let seed = seed();
    eprintln!("kill -9 trials: seed {seed}, apply {apply_ms} ms, destroy {destroy_ms} ms");
    let mut rng = Rng(seed);
    let mut interrupted = 0;
    let mut kills = 0;
    for trial in 1..=trials {
        let at = Duration::from_millis(rng.below(apply_ms * 7 / 10));
        kills += 1;
        if kill_after(p, &["apply", "--auto-approve"], at) {
            interrupted += 1;
        }
        let when = format!("after apply was killed at {at:?} (trial {trial}, seed {seed})");
        state_parses(p, &when);
        if trial % 2 == 1 {
            ok_after_kill(p, &["destroy", "--auto-approve"], &when);
            (checks.gone)(p, &format!("{when}, then destroyed"));
            continue;
        }
        ok_after_kill(p, &["apply", "--auto-approve"], &when);
        (checks.converged)(p, &when);

        let at = Duration::from_millis(rng.below(destroy_ms * 7 / 10));
        kills += 1;
        if kill_after(p, &["destroy", "--auto-approve"], at) {
            interrupted += 1;
        }
        let when = format!("after destroy was killed at {at:?} (trial {trial}, seed {seed})");
        state_parses(p, &when);
        ok_after_kill(p, &["destroy", "--auto-approve"], &when);
        (checks.gone)(p, &when);
    }
    eprintln!("kill -9 trials: {interrupted} of {kills} kills hit a running process");
    // At least half the kills must land mid-run, or the trials prove little.
    assert!(
        interrupted >= kills / 2,
        "only {interrupted} of {kills} kills hit a running process"
    );
    Outcome { kills, interrupted }
}
