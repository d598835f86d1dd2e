//! Requests a remote state on S3 costs per `anycloud apply`: 1,000 deployments (11,001
//! operations) at `--parallelism 64`, the state on moto's S3, the provider the one of
//! `apply_scale` that only sleeps. The requests are counted from the real traffic: moto sits
//! behind a proxy that logs every request (`benches/fixture/s3_requests.rs`), by object
//! (the state, its lock, the journal's batches, the listing) and method, for each step of an
//! apply as the CLI runs it: lock, read, apply (journal batches and the fold), unlock.
//!
//! The journal's batches are checked against the plan's waves (its longest chain of
//! operations): at most waves + 2.
//!
//! Run with `cargo bench --bench state_requests [-- DEPLOYMENTS]` (needs moto,
//! `scripts/prereqs.sh`). Without `--bench` (as `cargo test --all-targets` runs it) it applies
//! 10 deployments with shorter sleeps and checks the same bounds.

#[allow(dead_code)]
#[path = "../tests/common/moto.rs"]
mod moto;
#[path = "fixture/s3_requests.rs"]
mod s3_requests;
#[path = "fixture/sleepy.rs"]
mod sleepy;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anycloud::apply::apply;
use anycloud::engine::make_plan;
use anycloud::plan::PlanOptions;
use anycloud::progress::Progress;
use anycloud::registry::Providers;
use anycloud::shell::Shell;
use anycloud_state::{RemoteStore, State, StateStore};
use s3_requests::{s3_objects, waves, CountingProxy, Counts};
use sleepy::{config_text, Sleepy};

const PARALLELISM: usize = 64;
const BUCKET: &str = "bench-state";
const KEY: &str = "anycloud/state.json";

fn main() {
    let timing = std::env::args().any(|a| a == "--bench");
    let deployments: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if timing { 1000 } else { 10 });
    let moto = moto::Moto::start("127.0.0.1");
    let (status, body) = moto.http("PUT", &format!("/{BUCKET}"), None);
    assert_eq!(status, 200, "{body}");
    // The credentials; the endpoint is the proxy's, in the provider's settings.
    for (k, v) in moto.env() {
        if k != "AWS_ENDPOINT_URL" {
            std::env::set_var(k, v);
        }
    }
    let proxy = CountingProxy::start(&moto.url);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(PARALLELISM + 8)
        .enable_all()
        .build()
        .expect("runtime");
    let objects = s3_objects(&rt, &proxy.url, BUCKET, KEY);

    let sleepy = Arc::new(Sleepy::scaled(if timing { 1.0 } else { 0.2 }));
    let providers = Providers::of(vec![sleepy]);
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
    let waves = waves(&plan);

    // Each step of the apply, as the CLI runs it, with the requests it made.
    let store = RemoteStore::new(objects.clone(), KEY);
    let shell = Shell::new(true, true, false);
    let mut steps: Vec<(&str, Counts, Duration)> = Vec::new();
    let mut seen = proxy.requests().len();
    let mut step = |name, started: Instant| {
        let requests = proxy.requests();
        steps.push((
            name,
            Counts::of(&requests[seen..], BUCKET, KEY),
            started.elapsed(),
        ));
        seen = requests.len();
    };
    let t = Instant::now();
    rt.block_on(store.lock("apply", Duration::ZERO))
        .expect("lock");
    step("lock", t);
    let t = Instant::now();
    let snap = rt.block_on(store.read()).expect("read");
    step("read", t);
    let t = Instant::now();
    let (outcome, state) = rt
        .block_on(apply(
            &plan,
            snap.state,
            &store,
            &snap.version,
            &providers,
            PARALLELISM,
            &Progress::new(&shell),
            Arc::new(AtomicBool::new(false)),
        ))
        .expect("apply");
    step("apply (journal, fold)", t);
    let t = Instant::now();
    rt.block_on(store.unlock()).expect("unlock");
    step("unlock", t);
    assert!(outcome.ok(), "{outcome:?}");
    assert_eq!(state.resources.len(), ops);
    // What is stored is what the run ended with, nothing pending.
    let stored = rt
        .block_on(RemoteStore::new(objects, KEY).read())
        .expect("read back");
    assert_eq!(stored.state, state);
    assert_eq!(stored.replayed, 0);
    assert!(state.resources.values().all(|r| r.pending.is_none()));

    let mut all = Counts::default();
    for (_, counts, _) in &steps {
        for (k, n) in &counts.0 {
            *all.0.entry(k.clone()).or_insert(0) += n;
        }
    }
    println!(
        "state_requests: {deployments} deployments, {ops} operations in {waves} waves, parallelism {PARALLELISM}, state on moto's S3"
    );
    println!();
    println!("| method | request | count |");
    println!("|---|---|---:|");
    for row in all.rows() {
        println!("{row}");
    }
    println!("| | **all requests** | **{}** |", all.total());
    println!();
    println!("| step | requests | wall ms |");
    println!("|---|---:|---:|");
    for (name, counts, took) in &steps {
        println!(
            "| {name} | {} | {:.0} |",
            counts.total(),
            took.as_secs_f64() * 1e3
        );
    }
    println!();
    println!(
        "journal batches written: {} (waves + 2 = {}); folds: {}",
        all.batch_writes(),
        waves + 2,
        all.folds()
    );
    assert_eq!(all.folds(), 1, "one fold per apply");
    assert!(
        all.batch_writes() <= waves + 2,
        "{} journal batches for {waves} waves",
        all.batch_writes()
    );
}
