//! `anycloud plan --refresh=false` of 1,000 local deployments against a state that already
//! holds them all (so the plan is "No changes"), beside the time to merely read the config
//! and the state. The goal is plan / (config + state) <= 3: planning an up-to-date
//! configuration should cost little more than reading its inputs.
//!
//! Run with `cargo bench --bench plan_1000`. No criterion: one warm-up round, then the median
//! of RUNS timed rounds, each of which times every step once. See BENCHMARKS.md for the figures.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anycloud::engine::{self, make_plan};
use anycloud::plan;
use anycloud::registry::Providers;
use anycloud::{graph, render};
use anycloud_state::State;

mod fixture;

use fixture::{config_text, no_refresh, state_after};

const DEPLOYMENTS: usize = 1000;
const RUNS: usize = 7;

/// A state holding everything the config asks for, made from the plan against an empty
/// state as if apply had run it.
fn applied_state(
    config: &anycloud::config::Config,
    providers: &Providers,
    rt: &tokio::runtime::Runtime,
) -> State {
    let (_, plan) = rt
        .block_on(make_plan(config, &State::new(), providers, &no_refresh()))
        .expect("first plan");
    state_after(&plan, State::new())
}

/// Wall-clock and on-CPU time of this thread. The machine is shared (2 cores, other builds
/// and tests): CPU time barely moves with the load, wall time does; both are reported.
#[derive(Clone, Copy, Default)]
struct Sample {
    wall: Duration,
    cpu: Duration,
}

/// This thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), straight from libc: std has no such clock.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_cpu() -> Duration {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_cpu() -> Duration {
    Duration::ZERO
}

/// Times `f` once. Its result is leaked, not freed: the CLI exits without freeing what it
/// parsed and planned (the kernel takes the memory back at once), so neither the inputs nor
/// the plan pay for destructors here. The last phase row shows what freeing would cost.
fn time<T>(f: impl FnOnce() -> T) -> Sample {
    let (w, c) = (Instant::now(), thread_cpu());
    std::mem::forget(black_box(f()));
    Sample {
        wall: w.elapsed(),
        cpu: thread_cpu() - c,
    }
}

fn median(v: &[Sample]) -> Sample {
    let mid = |mut d: Vec<Duration>| {
        d.sort();
        d[d.len() / 2]
    };
    Sample {
        wall: mid(v.iter().map(|s| s.wall).collect()),
        cpu: mid(v.iter().map(|s| s.cpu).collect()),
    }
}

fn ms(d: Duration) -> String {
    format!("{:8.1}", d.as_secs_f64() * 1e3)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this too, without it (and
    // unoptimised): then only the no-change property is checked, on fewer deployments.
    let timing = std::env::args().any(|a| a == "--bench");
    let deployments = if timing { DEPLOYMENTS } else { 50 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let providers = Providers::builtin(std::path::Path::new("/nonexistent/keys"));
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("anycloud.yaml");
    let state_path = dir.path().join(".anycloud/state.json");

    let text = config_text(deployments);
    std::fs::write(&config_path, &text).expect("write config");
    let config = engine::load_config_for(&config_path, &providers).expect("config parses");
    assert_eq!(config.deployments.len(), deployments);
    let state = applied_state(&config, &providers, &rt);
    anycloud_state::LocalStore::save_unchecked(&state_path, &state).expect("save state");
    let state_bytes = std::fs::metadata(&state_path).expect("state written").len();

    // The property the benchmark rests on: the state holds everything, so nothing changes.
    let loaded = anycloud_state::LocalStore::load(&state_path).expect("state loads");
    assert_eq!(loaded.resources.len(), state.resources.len());
    let (graph, plan) = rt
        .block_on(make_plan(&config, &loaded, &providers, &no_refresh()))
        .expect("second plan");
    assert!(
        !plan.has_changes(),
        "the second plan must have no changes, but has: {}",
        plan.changes
            .iter()
            .filter(|c| c.action != plan::Action::NoOp)
            .map(|c| c.address.as_str())
            .take(5)
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert_eq!(plan.changes.len(), graph.nodes.len());
    assert!(render::human(&plan).contains("No changes."));
    if !timing {
        println!("plan_1000: the no-change property holds on {deployments} deployments; `cargo bench --bench plan_1000` times it");
        return;
    }

    println!(
        "plan_1000: {deployments} local deployments, {} resources; config {} KiB, state {} KiB; median of {RUNS} rounds after a warm-up round",
        graph.nodes.len(),
        text.len() / 1024,
        state_bytes / 1024
    );
    drop((config, state, loaded, graph, plan));

    // Each round times every step once, so a burst of load on the machine hits the inputs
    // and the plan alike; round 0 is the warm-up.
    let rows = [
        "(a) read + parse config",
        "(b) read + parse state",
        "(c) plan --refresh=false, end to end",
        "    config (as in a)",
        "    state (as in b)",
        "    graph::compile",
        "    plan::desired (provider.plan per node)",
        "    plan::diff",
        "    render::human",
        "    drop plan, graph, state, config",
    ];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); rows.len()];
    for round in 0..=RUNS {
        let mut t = vec![
            // (a), (b): the inputs alone.
            time(|| engine::load_config_for(&config_path, &providers).expect("config")),
            time(|| anycloud_state::LocalStore::load(&state_path).expect("state")),
            // (c): what `anycloud plan --refresh=false` does, minus process start and the lock file.
            time(|| {
                let config = engine::load_config_for(&config_path, &providers).expect("config");
                let state = anycloud_state::LocalStore::load(&state_path).expect("state");
                let (graph, plan) = rt
                    .block_on(make_plan(&config, &state, &providers, &no_refresh()))
                    .expect("plan");
                (render::human(&plan), config, state, graph, plan)
            }),
        ];
        // (c) again, phase by phase: the steps of `engine::make_plan`, then rendering, then
        // what freeing it all would cost (the CLI skips that: it exits right after).
        let mut config = None;
        let mut state = None;
        let mut graph = None;
        let mut desired = None;
        let mut plan = None;
        t.push(time(|| {
            config = Some(engine::load_config_for(&config_path, &providers).expect("config"))
        }));
        t.push(time(|| {
            state = Some(anycloud_state::LocalStore::load(&state_path).expect("state"))
        }));
        let (config, state) = (config.expect("timed"), state.expect("timed"));
        t.push(time(|| graph = Some(graph::compile(&config, &providers))));
        let graph = graph.expect("timed");
        t.push(time(|| {
            desired = Some(plan::desired(&graph, &providers).expect("desired"))
        }));
        let desired = desired.expect("timed");
        t.push(time(|| {
            plan = Some(plan::diff(&graph, &desired, &state, None, &no_refresh()).expect("diff"))
        }));
        let plan = plan.expect("timed");
        assert!(!plan.has_changes());
        t.push(time(|| render::human(&plan)));
        t.push(time(move || drop((plan, desired, graph, state, config))));
        if round > 0 {
            for (s, t) in samples.iter_mut().zip(t) {
                s.push(t);
            }
        }
    }
    let m: Vec<Sample> = samples.iter().map(|s| median(s)).collect();

    println!();
    println!("| step                                         | wall ms | cpu ms |");
    println!("|----------------------------------------------|--------:|-------:|");
    for (row, s) in rows.iter().zip(&m) {
        println!("| {row:<44} |{} |{} |", ms(s.wall), ms(s.cpu));
    }
    let ratio =
        |f: fn(&Sample) -> Duration| f(&m[2]).as_secs_f64() / (f(&m[0]) + f(&m[1])).as_secs_f64();
    println!();
    println!(
        "ratio c / (a + b): wall {:.2}, cpu {:.2} (goal: <= 3)",
        ratio(|s| s.wall),
        ratio(|s| s.cpu)
    );

    // The same question as a user meets it: whole processes of the real binary, each in a
    // fresh address space. `validate` only parses the config, `state list` only parses the
    // state, `plan --refresh=false` does everything.
    let bin = env!("CARGO_BIN_EXE_anycloud");
    // Wall time and peak resident memory of one process (as `-v` reports it).
    let run = |args: &[&str]| -> (Duration, u64) {
        let start = Instant::now();
        let out = std::process::Command::new(bin)
            .arg("-v")
            .arg("-f")
            .arg(&config_path)
            .arg("--state")
            .arg(&state_path)
            .args(args)
            .output()
            .expect("the binary runs");
        let elapsed = start.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "anycloud {args:?}: {stderr}");
        let mib: f64 = stderr
            .lines()
            .find_map(|l| l.strip_prefix("peak memory: "))
            .and_then(|l| l.trim_end_matches(" MiB").parse().ok())
            .expect("-v reports the peak memory");
        (elapsed, (mib * 1024.0) as u64)
    };
    let commands: [&[&str]; 3] = [
        &["validate"],
        &["state", "list"],
        &["plan", "--refresh=false"],
    ];
    let mut runs: Vec<Vec<Duration>> = vec![Vec::new(); commands.len()];
    let mut peak_kib = vec![0u64; commands.len()];
    for round in 0..=RUNS {
        for (i, args) in commands.iter().enumerate() {
            let (d, rss) = run(args);
            peak_kib[i] = peak_kib[i].max(rss);
            if round > 0 {
                runs[i].push(d);
            }
        }
    }
    let med: Vec<Duration> = runs
        .into_iter()
        .map(|mut v| {
            v.sort();
            v[v.len() / 2]
        })
        .collect();
    println!();
    println!("| process (release binary)                     | wall ms | peak RSS MiB |");
    println!("|----------------------------------------------|--------:|-------------:|");
    for ((args, d), kib) in commands.iter().zip(&med).zip(&peak_kib) {
        println!(
            "| anycloud {:<36} |{} | {:>12.1} |",
            args.join(" "),
            ms(*d),
            *kib as f64 / 1024.0
        );
    }
    println!();
    println!(
        "ratio plan / (validate + state list): {:.2} (goal: <= 3)",
        med[2].as_secs_f64() / (med[0] + med[1]).as_secs_f64()
    );
}
