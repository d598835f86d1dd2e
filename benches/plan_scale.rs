//! Does planning grow linearly? A sweep of 1,000 and of 10,000 local deployments, each with
//! 120 `env` entries of its own (7 images, 13 shared inputs, an output and a checkpoint per
//! job), timed as a user meets it: whole processes of the release binary.
//!
//! - `anycloud validate` (read, parse and check the config);
//! - `anycloud plan --refresh=false` against the state an apply would leave (no changes);
//! - the same plan with one deployment's parameter changed: what it prints must be that
//!   change and a summary, not a line per deployment.
//!
//! Reported: medians of the rounds, peak RSS (`-v` reports Linux's VmHWM), and the ratios of
//! 10,000 to 1,000. Goals: plan ratio ≤ 11, peak RSS ≤ 150 MiB per 1,000 deployments.
//!
//! `cargo bench --bench plan_scale` (about 4 minutes once built; `-- N…` for other sizes).
//! `PLAN_SCALE_KEEP=DIR` keeps each size's config and state in `DIR/N` for profiling.
//! Without `--bench` (as `cargo test --all-targets` runs it) it checks 50 deployments only.

use std::path::Path;
use std::time::{Duration, Instant};

use anycloud::engine::{self, make_plan};
use anycloud::registry::Providers;
use anycloud_state::State;

mod fixture;

use fixture::{no_refresh, state_after, sweep_text};

const ENV_PER_JOB: usize = 120;
const ROUNDS: usize = 3;

struct Measured {
    wall: Duration,
    peak_mib: f64,
    stdout: String,
}

fn run(config: &Path, state: &Path, args: &[&str]) -> Measured {
    let start = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anycloud"))
        .arg("-v")
        .arg("--no-color")
        .arg("-f")
        .arg(config)
        .arg("--state")
        .arg(state)
        .args(args)
        .output()
        .expect("the binary runs");
    let wall = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "anycloud {args:?}: {stderr}");
    let peak_mib = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak memory: "))
        .and_then(|l| l.trim_end_matches(" MiB").parse().ok())
        .expect("-v reports the peak memory");
    Measured {
        wall,
        peak_mib,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

/// Median wall time and the highest peak over the rounds (after a warm-up).
fn measure(rounds: usize, f: impl Fn() -> Measured) -> (Duration, f64) {
    f();
    let mut walls = Vec::new();
    let mut peak: f64 = 0.0;
    for _ in 0..rounds {
        let m = f();
        walls.push(m.wall);
        peak = peak.max(m.peak_mib);
    }
    walls.sort();
    (walls[walls.len() / 2], peak)
}

struct Row {
    deployments: usize,
    resources: usize,
    config_mib: f64,
    state_mib: f64,
    validate: (Duration, f64),
    plan: (Duration, f64),
    changed_lines: usize,
}

fn size(deployments: usize, rounds: usize, providers: &Providers) -> Row {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    // PLAN_SCALE_KEEP=DIR leaves the fixture there for a profiler (`heaptrack anycloud plan`).
    let dir_path = match std::env::var_os("PLAN_SCALE_KEEP") {
        Some(keep) => {
            let keep = Path::new(&keep).join(deployments.to_string());
            std::fs::create_dir_all(&keep).expect("keep dir");
            keep
        }
        None => dir.path().to_path_buf(),
    };
    let config_path = dir_path.join("anycloud.yaml");
    let state_path = dir_path.join("state.json");
    let text = sweep_text(deployments, ENV_PER_JOB);
    std::fs::write(&config_path, &text).expect("write config");
    let state = {
        let config = engine::load_config_for(&config_path, providers).expect("config parses");
        assert_eq!(config.deployments.len(), deployments);
        let (_, plan) = rt
            .block_on(make_plan(&config, &State::new(), providers, &no_refresh()))
            .expect("first plan");
        state_after(&plan, State::new())
    };
    let resources = state.resources.len();
    anycloud_state::LocalStore::save_unchecked(&state_path, &state).expect("save state");
    drop(state);
    let state_bytes = std::fs::metadata(&state_path).expect("state").len();

    let plan = run(&config_path, &state_path, &["plan", "--refresh=false"]);
    assert!(plan.stdout.contains("No changes."), "{}", plan.stdout);
    let validate = measure(rounds, || run(&config_path, &state_path, &["validate"]));
    let planned = measure(rounds, || {
        run(&config_path, &state_path, &["plan", "--refresh=false"])
    });

    // One job's parameter changed: the plan shows that job's container and the summary.
    let target = format!("run-{:05}", deployments / 2);
    let changed = text.replacen(
        &format!("  {target}:\n    container:\n      image: \"ghcr.io/acme/train-{}:latest\"\n      command: [python, train.py, --seed, \"{}\"]\n      env:\n        PARAM_000:", (deployments / 2) % 7, deployments / 2),
        &format!("  {target}:\n    container:\n      image: \"ghcr.io/acme/train-{}:latest\"\n      command: [python, train.py, --seed, \"{}\"]\n      env:\n        CHANGED: \"yes\"\n        PARAM_000:", (deployments / 2) % 7, deployments / 2),
        1,
    );
    assert_ne!(changed, text, "the change applies");
    std::fs::write(&config_path, &changed).expect("write config");
    let one = run(&config_path, &state_path, &["plan", "--refresh=false"]);
    assert!(
        one.stdout
            .contains(&format!("deployment.{target}.container")),
        "{}",
        one.stdout
    );
    assert!(one.stdout.contains("CHANGED"), "{}", one.stdout);
    assert!(one.stdout.contains("to replace"), "{}", one.stdout);
    let changed_lines = one.stdout.lines().count();
    // The changed container's block (its rendered run spec is a few dozen lines), not
    // a line per deployment.
    assert!(
        changed_lines < 400,
        "{changed_lines} lines:\n{}",
        one.stdout
    );
    Row {
        deployments,
        resources,
        config_mib: text.len() as f64 / (1 << 20) as f64,
        state_mib: state_bytes as f64 / (1 << 20) as f64,
        validate,
        plan: planned,
        changed_lines,
    }
}

fn main() {
    let timing = std::env::args().any(|a| a == "--bench");
    let mut sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if sizes.is_empty() {
        sizes = if timing { vec![1000, 10_000] } else { vec![50] };
    }
    let providers = Providers::builtin(Path::new("/nonexistent/keys"));
    let rounds = if timing { ROUNDS } else { 1 };
    let rows: Vec<Row> = sizes.iter().map(|n| size(*n, rounds, &providers)).collect();
    if !timing {
        println!("plan_scale: 50 deployments plan with no changes, and one change prints briefly; `cargo bench --bench plan_scale` times 1,000 and 10,000");
        return;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "plan_scale: {ENV_PER_JOB} env entries per job; medians of {rounds} rounds after a warm-up"
    );
    println!();
    println!("| deployments | resources | config MiB | state MiB | validate ms | validate peak MiB | plan ms | plan peak MiB | plan MiB per 1,000 | lines for one change |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.0} | {:.1} | {:.0} | {:.1} | {:.1} | {} |",
            r.deployments,
            r.resources,
            r.config_mib,
            r.state_mib,
            ms(r.validate.0),
            r.validate.1,
            ms(r.plan.0),
            r.plan.1,
            r.plan.1 * 1000.0 / r.deployments as f64,
            r.changed_lines
        );
    }
    if let [small, large, ..] = rows.as_slice() {
        let scale = large.deployments as f64 / small.deployments as f64;
        println!();
        println!(
            "{}x the deployments: validate {:.2}x, plan {:.2}x the time (goal: plan <= {:.0}x); peak RSS {:.2}x",
            scale,
            large.validate.0.as_secs_f64() / small.validate.0.as_secs_f64(),
            large.plan.0.as_secs_f64() / small.plan.0.as_secs_f64(),
            scale * 1.1,
            large.plan.1 / small.plan.1
        );
    }
}
