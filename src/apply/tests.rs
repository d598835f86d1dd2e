//! The executor's scheduling and recording, with a provider that records calls and fails on
//! demand, and the local file store. (The real providers are exercised end to end in
//! `tests/`.)

use std::collections::BTreeMap;
use std::sync::Mutex;

use anycloud_provider::{
    Declaration, NodeSpec, Planned, Provider, Regions, Result as PResult, Shape,
};
use anycloud_state::LocalStore;
use serde_json::json;

use super::*;
use crate::plan::Summary;
use crate::shell::Shell;

#[derive(Default)]
struct Scripted {
    /// Address → errors to return before succeeding (`true` = retryable).
    failures: Mutex<BTreeMap<String, Vec<bool>>>,
    calls: Mutex<Vec<String>>,
}

impl Scripted {
    fn call(&self, what: &str, address: &str) -> PResult<()> {
        self.calls.lock().unwrap().push(format!("{what} {address}"));
        let mut f = self.failures.lock().unwrap();
        match f
            .get_mut(address)
            .and_then(|v| (!v.is_empty()).then(|| v.remove(0)))
        {
            Some(true) => Err(ProviderError::new(
                anycloud_provider::ErrorCode::Throttled,
                "throttled",
            )),
            Some(false) => Err(ProviderError::permanent("quota exceeded")),
            None => Ok(()),
        }
    }
}

impl Declaration for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn regions(&self) -> Regions {
        Regions::Own
    }
    fn shape(&self) -> Shape {
        Shape {
            identity: false,
            grants: &[],
            buckets_on_vm: false,
        }
    }
}

#[async_trait::async_trait]
impl Provider for Scripted {
    fn plan(&self, _: NodeSpec<'_>) -> PResult<Planned> {
        Ok(Planned::default())
    }
    async fn read(&self, t: &[Target<'_>]) -> PResult<Vec<anycloud_provider::Read>> {
        Ok(t.iter().map(|t| Ok(Some(t.attrs.clone()))).collect())
    }
    async fn create(&self, t: Target<'_>) -> PResult<Attrs> {
        self.call("create", t.address)?;
        let mut a = t.attrs.clone();
        a.insert("id".into(), json!(format!("id-{}", t.address)));
        Ok(a)
    }
    async fn update(&self, _: &Attrs, t: Target<'_>) -> PResult<Attrs> {
        self.call("update", t.address)?;
        Ok(t.attrs.clone())
    }
    async fn delete(&self, t: Target<'_>) -> PResult<()> {
        self.call("delete", t.address)
    }
}

fn change(address: &str, action: Action, deps: &[&str]) -> Change {
    Change {
        address: address.into(),
        kind: Kind::Bucket,
        provider: "scripted".into(),
        action,
        reason: None,
        before: (action != Action::Create).then(|| Attrs::from([("n".into(), json!(address))])),
        after: (action != Action::Delete).then(|| Attrs::from([("n".into(), json!(address))])),
        private: None,
        keep_on_destroy: false,
        after_unknown: vec![],
        replace_paths: vec![],
        dependencies: deps.iter().map(|d| d.to_string()).collect(),
        prior_dependencies: vec![],
    }
}

fn plan(changes: Vec<Change>) -> Plan {
    Plan {
        refreshed: false,
        summary: Summary::default(),
        ..Plan::of_changes(changes)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Applies `plan` over `state` stored in a fresh local store; returns what the store holds
/// afterwards too.
fn run(plan: &Plan, state: State, provider: Arc<Scripted>) -> (Outcome, State, tempfile::TempDir) {
    run_showing(plan, state, provider, &Shell::plain())
}

/// [`run`], its progress shown through `shell` (a `--json-stream` one, say).
fn run_showing(
    plan: &Plan,
    state: State,
    provider: Arc<Scripted>,
    shell: &Shell,
) -> (Outcome, State, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    if !state.resources.is_empty() {
        LocalStore::save_unchecked(&path, &state).unwrap();
    }
    let store = LocalStore::new(&path);
    let providers = Providers::of(vec![provider]);
    let rt = runtime();
    let (outcome, state) = rt.block_on(async {
        store.lock("apply", Duration::ZERO).await.unwrap();
        let snap = store.read().await.unwrap();
        apply(
            plan,
            snap.state,
            &store,
            &snap.version,
            &providers,
            4,
            &Progress::new(shell),
            Arc::new(AtomicBool::new(false)),
        )
        .await
        .unwrap()
    });
    // What is stored is what the executor ended with, and the journal is folded away.
    assert_eq!(LocalStore::load(&path).unwrap(), state);
    assert!(!store.journal_path().exists());
    (outcome, state, dir)
}

#[test]
fn a_failure_skips_its_dependents_only() {
    let provider = Arc::new(Scripted::default());
    provider
        .failures
        .lock()
        .unwrap()
        .insert("b".into(), vec![false]);
    let p = plan(vec![
        change("a", Action::Create, &[]),
        change("b", Action::Create, &["a"]),
        change("c", Action::Create, &["b"]),
        change("d", Action::Create, &["c"]),
        change("e", Action::Create, &["a"]),
    ]);
    let (outcome, state, _dir) = run(&p, State::unborn(), provider.clone());
    assert_eq!(
        outcome.failed,
        vec![("b".to_owned(), "quota exceeded".to_owned())]
    );
    let mut skipped = outcome.skipped.clone();
    skipped.sort();
    assert_eq!(skipped, vec!["c", "d"]);
    let mut done = outcome.done.clone();
    done.sort();
    assert_eq!(done, vec!["a", "e"]);
    // The failed create stays marked pending, so the next plan re-runs it.
    assert_eq!(state.resources["b"].pending, Some(Pending::Create));
    assert!(
        state.resources["a"].pending.is_none()
            && state.resources["a"].attributes["id"] == json!("id-a")
    );
    assert!(!state.resources.contains_key("c"));
}

#[test]
fn retryable_errors_are_retried_and_permanent_ones_are_not() {
    let provider = Arc::new(Scripted::default());
    provider
        .failures
        .lock()
        .unwrap()
        .insert("a".into(), vec![true, true]);
    provider
        .failures
        .lock()
        .unwrap()
        .insert("b".into(), vec![false, false]);
    let p = plan(vec![
        change("a", Action::Create, &[]),
        change("b", Action::Create, &[]),
    ]);
    let (outcome, _, _dir) = run(&p, State::unborn(), provider.clone());
    assert_eq!(outcome.done, vec!["a"]);
    let calls = provider.calls.lock().unwrap().clone();
    assert_eq!(
        calls.iter().filter(|c| *c == "create a").count(),
        3,
        "{calls:?}"
    );
    assert_eq!(
        calls.iter().filter(|c| *c == "create b").count(),
        1,
        "{calls:?}"
    );
}

fn recorded(deps: &[&str], keep: bool) -> Resource {
    Resource {
        kind: "bucket".into(),
        provider: "scripted".into(),
        attributes: Attrs::new(),
        private: serde_json::Value::Null,
        keep_on_destroy: keep,
        dependencies: deps.iter().map(|d| d.to_string()).collect(),
        pending: None,
    }
}

#[test]
fn deletes_run_in_reverse_and_a_replacement_deletes_before_it_creates() {
    let provider = Arc::new(Scripted::default());
    let mut state = State::new();
    for (addr, deps) in [("vm", vec![]), ("svc", vec!["vm"]), ("ctr", vec!["svc"])] {
        state.resources.insert(addr.into(), recorded(&deps, false));
    }
    let p = plan(vec![
        change("vm", Action::Replace, &[]),
        change("svc", Action::Replace, &["vm"]),
        change("ctr", Action::Delete, &["svc"]),
    ]);
    let (outcome, state, _dir) = run(&p, state, provider.clone());
    assert!(outcome.ok(), "{outcome:?}");
    let calls = provider.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![
            "delete ctr",
            "delete svc",
            "delete vm",
            "create vm",
            "create svc"
        ]
    );
    assert_eq!(
        state.resources.keys().collect::<Vec<_>>(),
        vec!["svc", "vm"]
    );
}

#[test]
fn a_kept_resource_is_forgotten_without_asking_its_provider() {
    let provider = Arc::new(Scripted::default());
    let mut state = State::new();
    state.resources.insert("bucket".into(), recorded(&[], true));
    let mut forget = change("bucket", Action::Delete, &[]);
    forget.keep_on_destroy = true;
    let (outcome, state, _dir) = run(&plan(vec![forget]), state, provider.clone());
    assert!(outcome.ok(), "{outcome:?}");
    assert!(provider.calls.lock().unwrap().is_empty());
    assert!(state.resources.is_empty());
}

#[test]
fn the_first_write_gives_an_unborn_state_its_lineage_and_a_run_one_serial() {
    let provider = Arc::new(Scripted::default());
    let p = plan(
        (0..20)
            .map(|i| change(&format!("r{i:02}"), Action::Create, &[]))
            .collect(),
    );
    let (outcome, state, _dir) = run(&p, State::unborn(), provider);
    assert!(outcome.ok());
    assert!(!state.lineage.is_empty());
    assert_eq!(state.serial, 1, "one fold, not a write per operation");
}

#[test]
fn nothing_starts_when_the_intent_cannot_be_recorded() {
    let provider = Arc::new(Scripted::default());
    let p = plan(vec![
        change("a", Action::Create, &[]),
        change("b", Action::Create, &["a"]),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let store = LocalStore::new(&path);
    let providers = Providers::of(vec![provider.clone()]);
    let result = runtime().block_on(async {
        store.lock("apply", Duration::ZERO).await.unwrap();
        let snap = store.read().await.unwrap();
        // The journal's place is taken by a directory: every append fails.
        std::fs::create_dir(store.journal_path()).unwrap();
        apply(
            &p,
            snap.state,
            &store,
            &snap.version,
            &providers,
            4,
            &Progress::new(&Shell::plain()),
            Arc::new(AtomicBool::new(false)),
        )
        .await
    });
    let err = result.expect_err("a failed record fails the apply");
    assert!(
        format!("{err:#}").contains("could not be recorded"),
        "{err:#}"
    );
    assert!(
        provider.calls.lock().unwrap().is_empty(),
        "no provider call without its intent recorded"
    );
}

/// `--json-stream` during an apply with a retry and a failure: every line matches the
/// published schema, and the events say what happened, in order.
#[test]
fn the_json_stream_of_an_apply_with_a_retry_and_a_failure() {
    use crate::stream::tests::{check_against_schema, Shared};
    let provider = Arc::new(Scripted::default());
    provider
        .failures
        .lock()
        .unwrap()
        .insert("a".into(), vec![true]);
    provider
        .failures
        .lock()
        .unwrap()
        .insert("b".into(), vec![false]);
    let p = plan(vec![
        change("a", Action::Create, &[]),
        change("b", Action::Create, &[]),
        change("c", Action::Create, &["b"]),
    ]);
    let out = Shared::default();
    let shell = Shell::streaming(
        true,
        false,
        false,
        crate::stream::Stream::to(Box::new(out.clone())),
    );
    let (outcome, _, _dir) = run_showing(&p, State::unborn(), provider, &shell);
    assert_eq!(outcome.done, vec!["a"]);
    let lines = out.lines();
    let types = check_against_schema(&lines);
    let of = |t: &str, address: &str| {
        lines
            .iter()
            .position(|l| l["type"] == t && l["hook"]["address"] == address)
            .unwrap_or_else(|| panic!("no {t} of {address}: {types:?}"))
    };
    assert!(of("apply_start", "a") < of("apply_retry", "a"));
    assert!(of("apply_retry", "a") < of("apply_complete", "a"));
    assert_eq!(
        lines[of("apply_errored", "b")]["hook"]["error"],
        "quota exceeded"
    );
    of("apply_skipped", "c");
}

/// A store that says which entries are durable: what a kill -9 would leave.
struct Durability {
    inner: LocalStore,
    appended: Mutex<Vec<Entry>>,
    durable: tokio::sync::watch::Sender<Vec<Entry>>,
}

#[async_trait::async_trait]
impl StateStore for Durability {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn read(&self) -> std::result::Result<anycloud_state::Snapshot, StoreError> {
        self.inner.read().await
    }
    async fn lock(
        &self,
        operation: &str,
        timeout: Duration,
    ) -> std::result::Result<anycloud_state::LockInfo, StoreError> {
        self.inner.lock(operation, timeout).await
    }
    async fn unlock(&self) -> std::result::Result<(), StoreError> {
        self.inner.unlock().await
    }
    async fn force_unlock(
        &self,
        id: &str,
    ) -> std::result::Result<anycloud_state::LockInfo, StoreError> {
        self.inner.force_unlock(id).await
    }
    async fn record(
        &self,
        lineage: &str,
        entries: &[Entry],
        durable: bool,
    ) -> std::result::Result<(), StoreError> {
        self.appended.lock().unwrap().extend_from_slice(entries);
        self.inner.record(lineage, entries, durable).await?;
        if durable {
            // Everything appended before this record is on disk with it.
            let now = self.appended.lock().unwrap().clone();
            self.durable.send_replace(now);
        }
        Ok(())
    }
    async fn write(
        &self,
        state: &State,
        expected: &Version,
    ) -> std::result::Result<Version, StoreError> {
        self.inner.write(state, expected).await
    }
}

/// A provider whose create of `vm` reports the instance it made, then waits (up to a minute)
/// until that report is durable before it returns.
struct Launching {
    durable: tokio::sync::watch::Receiver<Vec<Entry>>,
}

impl Declaration for Launching {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn regions(&self) -> Regions {
        Regions::Own
    }
    fn shape(&self) -> Shape {
        Shape {
            identity: false,
            grants: &[],
            buckets_on_vm: false,
        }
    }
}

#[async_trait::async_trait]
impl Provider for Launching {
    fn plan(&self, _: NodeSpec<'_>) -> PResult<Planned> {
        Ok(Planned::default())
    }
    async fn read(&self, t: &[Target<'_>]) -> PResult<Vec<anycloud_provider::Read>> {
        Ok(t.iter().map(|t| Ok(Some(t.attrs.clone()))).collect())
    }
    async fn create(&self, t: Target<'_>) -> PResult<Attrs> {
        let mut a = t.attrs.clone();
        if t.address == "vm" {
            a.insert("instance_id".into(), json!("i-1"));
            anycloud_provider::output::made(&a);
            let mut durable = self.durable.clone();
            let seen = durable.wait_for(|entries| {
                entries.iter().any(|e| {
                    e.address == "vm"
                        && e.resource
                            .as_ref()
                            .is_some_and(|r| r.attributes.get("instance_id") == Some(&json!("i-1")))
                })
            });
            tokio::time::timeout(Duration::from_secs(60), seen)
                .await
                .map_err(|_| ProviderError::permanent("the instance made was never durable"))?
                .map_err(|_| ProviderError::permanent("the store went away"))?;
        }
        Ok(a)
    }
    async fn update(&self, _: &Attrs, t: Target<'_>) -> PResult<Attrs> {
        Ok(t.attrs.clone())
    }
    async fn delete(&self, _: Target<'_>) -> PResult<()> {
        Ok(())
    }
}

/// What a running create reports it made (an instance, before it boots) is made durable
/// while the create still runs, though it waits for no wave: a run killed then leaves a
/// record that finds the instance.
#[test]
fn what_a_running_create_made_is_durable_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(Vec::new());
    let store = Durability {
        inner: LocalStore::new(dir.path().join("state.json")),
        appended: Mutex::new(Vec::new()),
        durable: tx,
    };
    let providers = Providers::of(vec![Arc::new(Launching { durable: rx })]);
    let p = plan(vec![
        change("vm", Action::Create, &[]),
        change("other", Action::Create, &[]),
        change("on-vm", Action::Create, &["vm"]),
    ]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (outcome, state) = rt.block_on(async {
        store.lock("apply", Duration::ZERO).await.unwrap();
        let snap = store.read().await.unwrap();
        apply(
            &p,
            snap.state,
            &store,
            &snap.version,
            &providers,
            4,
            &Progress::new(&Shell::plain()),
            Arc::new(AtomicBool::new(false)),
        )
        .await
        .unwrap()
    });
    assert!(outcome.ok(), "{outcome:?}");
    assert_eq!(
        state.resources["vm"].attributes["instance_id"],
        json!("i-1")
    );
}

/// An intent written with its wave, ahead of its operation, is taken back when the operation
/// never starts: `cx` is in the batch of its wave (written when `cy` became ready, while `x`
/// was still being retried), and `x` then fails, skipping it. The state keeps no pending
/// record of something never tried.
#[test]
fn an_intent_written_ahead_of_an_operation_skipped_is_taken_back() {
    let provider = Arc::new(Scripted::default());
    provider
        .failures
        .lock()
        .unwrap()
        .insert("x".into(), vec![true, false]);
    let p = plan(vec![
        change("x", Action::Create, &[]),
        change("y", Action::Create, &[]),
        change("cx", Action::Create, &["x"]),
        change("cy", Action::Create, &["y"]),
    ]);
    let (outcome, state, _dir) = run(&p, State::unborn(), provider.clone());
    assert_eq!(outcome.skipped, vec!["cx"]);
    assert_eq!(
        *provider.calls.lock().unwrap(),
        ["create x", "create y", "create cy", "create x"],
        "cy started while x was retried"
    );
    assert!(!state.resources.contains_key("cx"), "{state:?}");
    assert_eq!(state.resources["x"].pending, Some(Pending::Create));
    assert!(state.resources["cy"].pending.is_none());
}
