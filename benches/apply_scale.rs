//! `anycloud apply` of 1,000 deployments (11,001 operations) at `--parallelism 64` through a
//! test-only provider that only sleeps, per kind: VM 200 ms, VM init 100 ms, everything else
//! 10 ms, each ±10% of seeded jitter. What is measured is the engine: scheduling and
//! recording.
//!
//! - Wall time against the lower bound max(critical path, total work ÷ parallelism): the
//!   goal is ≤ 1.05×.
//! - Bytes the state store writes (journal and the final fold) per operation: the goal is
//!   ≤ 4 KiB.
//! - The fold (the one write of the whole state at the end) against a plain write of the
//!   same state.
//!
//! Run with `cargo bench --bench apply_scale [-- DEPLOYMENTS]`. Without `--bench` (as
//! `cargo test --all-targets` runs it) it applies 40 deployments and checks the outcome only.

#[path = "fixture/sleepy.rs"]
mod sleepy;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anycloud::apply::apply;
use anycloud::engine::make_plan;
use anycloud::plan::{Action, PlanOptions};
use anycloud::progress::Progress;
use anycloud::registry::Providers;
use anycloud::shell::Shell;
use anycloud_state::{LocalStore, State, StateStore};
use sleepy::{config_text, duration, Sleepy};

const PARALLELISM: usize = 64;
/// Timed rounds; the median is reported.
const ROUNDS: usize = 5;

fn main() {
    let timing = std::env::args().any(|a| a == "--bench");
    let deployments: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if timing { 1000 } else { 40 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(PARALLELISM + 8)
        .enable_all()
        .build()
        .expect("runtime");
    let sleepy = Arc::new(Sleepy::default());
    let providers = Providers::of(vec![sleepy.clone()]);
    let config = anycloud::config::parse(
        "anycloud.yaml",
        &config_text(deployments),
        Path::new("/nonexistent"),
        "sha256:bench",
        &providers,
    )
    .unwrap_or_else(|e| panic!("{}", e[0]));
    let opts = PlanOptions {
        refresh: false,
        targets: &[],
        destroy: false,
        replace: &[],
    };
    let (_, plan) = rt
        .block_on(make_plan(&config, &State::unborn(), &providers, &opts))
        .expect("plan");
    let ops = plan.changes.len();
    assert!(plan
        .changes
        .iter()
        .all(|c| matches!(c.action, Action::Create | Action::Read)));

    // The lower bound: all work spread evenly over the slots, or the longest chain of
    // operations, whichever is longer.
    let mut finish: BTreeMap<&str, Duration> = BTreeMap::new();
    let mut total = Duration::ZERO;
    for c in &plan.changes {
        let own = duration(c.kind, &c.address);
        total += own;
        let start = c
            .dependencies
            .iter()
            .filter_map(|d| finish.get(d.as_str()))
            .max()
            .copied()
            .unwrap_or_default();
        finish.insert(&c.address, start + own);
    }
    let critical = finish.values().max().copied().unwrap_or_default();
    let bound = critical.max(total / PARALLELISM as u32);

    // Each round applies the whole plan into a fresh store; the median round is reported.
    let rounds = if timing { ROUNDS } else { 1 };
    let mut results = Vec::new();
    for _ in 0..rounds {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let store = LocalStore::new(&path);
        let shell = Shell::new(true, true, false);
        sleepy.slept_us.store(0, Ordering::Relaxed);
        let start = Instant::now();
        let (outcome, state) = rt.block_on(async {
            store.lock("apply", Duration::ZERO).await.expect("lock");
            let snap = store.read().await.expect("read");
            apply(
                &plan,
                snap.state,
                &store,
                &snap.version,
                &providers,
                PARALLELISM,
                &Progress::new(&shell),
                Arc::new(AtomicBool::new(false)),
            )
            .await
            .expect("apply")
        });
        let wall = start.elapsed();
        let slept = Duration::from_micros(sleepy.slept_us.load(Ordering::Relaxed));
        assert!(outcome.ok(), "{outcome:?}");
        assert_eq!(state.resources.len(), ops);
        assert_eq!(LocalStore::load(&path).expect("state"), state);
        results.push((wall, slept, dir, store, state));
    }
    results.sort_by_key(|r| r.0);
    let walls: Vec<Duration> = results.iter().map(|r| r.0).collect();
    let (wall, slept, dir, store, state) = results.swap_remove(results.len() / 2);
    let path = dir.path().join("state.json");
    let bytes = store.bytes_written();
    if !timing {
        println!("apply_scale: {deployments} deployments applied; `cargo bench --bench apply_scale` times 1,000");
        return;
    }

    // The fold against a plain write of the same state: write it again (a new serial, so
    // it is a real write) five times and take the median.
    let state_bytes = std::fs::metadata(&path).expect("state").len();
    let mut writes = Vec::new();
    let mut s = state.clone();
    rt.block_on(async {
        for _ in 0..5 {
            let snap = store.read().await.expect("read");
            s.serial += 1;
            let t = Instant::now();
            store.write(&s, &snap.version).await.expect("write");
            writes.push(t.elapsed());
        }
    });
    writes.sort();
    let write = writes[writes.len() / 2];
    let fold = fold_time(&rt, &store, &state);

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("apply_scale: {deployments} deployments, {ops} operations, parallelism {PARALLELISM}");
    println!("| | |");
    println!("|---|---:|");
    println!("| total work | {:.0} ms |", ms(total));
    println!(
        "| total work / {PARALLELISM} | {:.0} ms |",
        ms(total / PARALLELISM as u32)
    );
    println!("| critical path | {:.0} ms |", ms(critical));
    println!("| lower bound | {:.0} ms |", ms(bound));
    println!(
        "| total work as slept / {PARALLELISM} | {:.0} ms |",
        ms(slept / PARALLELISM as u32)
    );
    println!(
        "| wall (median of {ROUNDS} rounds; all: {}) | {:.0} ms |",
        walls
            .iter()
            .map(|w| format!("{:.0}", ms(*w)))
            .collect::<Vec<_>>()
            .join(", "),
        ms(wall)
    );
    println!(
        "| **wall / lower bound** | **{:.3}** (goal <= 1.05) |",
        wall.as_secs_f64() / bound.as_secs_f64()
    );
    println!("| bytes written by the store | {bytes} |");
    println!(
        "| **bytes per operation** | **{:.0}** (goal <= 4096) |",
        bytes as f64 / ops as f64
    );
    println!("| state size | {state_bytes} bytes |");
    println!("| state write (median of 5) | {:.1} ms |", ms(write));
    println!(
        "| fold at the end of a run | {:.1} ms ({:.2}x a write) |",
        ms(fold),
        fold.as_secs_f64() / write.as_secs_f64()
    );
}

/// The fold as a run does it: a journal of one entry per resource, then the state written
/// over it.
fn fold_time(rt: &tokio::runtime::Runtime, store: &LocalStore, state: &State) -> Duration {
    rt.block_on(async {
        let snap = store.read().await.expect("read");
        let entries: Vec<anycloud_state::Entry> = state
            .resources
            .iter()
            .map(|(a, r)| anycloud_state::Entry {
                address: a.clone(),
                resource: Some(r.clone()),
            })
            .collect();
        store
            .record(&state.lineage, &entries, true)
            .await
            .expect("journal");
        let mut s = snap.state.clone();
        s.serial += 1;
        let t = Instant::now();
        store.write(&s, &snap.version).await.expect("fold");
        let elapsed = t.elapsed();
        assert!(
            !store.journal_path().exists(),
            "the fold removes the journal"
        );
        elapsed
    })
}
