//! The apply executor: runs a plan's changes as a graph of operations, each starting as soon
//! as what it needs has finished, at most `parallelism` at a time. One coordinator owns the
//! state and persists it around every operation; workers only call providers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anycloud_provider::{Attrs, Kind, ProviderError, Target};
use anycloud_state::{Pending, Resource, State};
use tokio::task::JoinSet;

use crate::plan::{Action, Change, Plan};
use crate::progress::Progress;
use crate::providers::Providers;
use crate::retry::with_retries_noting;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// Deletes run first for a replacement (delete, then create).
    Delete,
    Apply,
}

type OpId = (String, Step);

#[derive(Debug, Default)]
pub struct Outcome {
    pub done: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub skipped: Vec<String>,
    pub interrupted: bool,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && !self.interrupted
    }
}

/// The operations a plan needs and what each waits for.
fn operations(plan: &Plan) -> BTreeMap<OpId, BTreeSet<OpId>> {
    let by_addr: BTreeMap<&str, &Change> = plan
        .changes
        .iter()
        .map(|c| (c.address.as_str(), c))
        .collect();
    let has = |addr: &str, step: Step| {
        by_addr.get(addr).is_some_and(|c| match step {
            Step::Delete => matches!(c.action, Action::Delete | Action::Replace),
            Step::Apply => matches!(
                c.action,
                Action::Create | Action::Update | Action::Replace | Action::Read
            ),
        })
    };
    let mut ops: BTreeMap<OpId, BTreeSet<OpId>> = BTreeMap::new();
    for c in &plan.changes {
        if has(&c.address, Step::Apply) {
            let mut needs: BTreeSet<OpId> = c
                .dependencies
                .iter()
                .filter(|d| has(d, Step::Apply))
                .map(|d| (d.clone(), Step::Apply))
                .collect();
            if c.action == Action::Replace {
                needs.insert((c.address.clone(), Step::Delete));
            }
            ops.insert((c.address.clone(), Step::Apply), needs);
        }
        if has(&c.address, Step::Delete) {
            ops.entry((c.address.clone(), Step::Delete)).or_default();
        }
    }
    // A delete waits for the deletes of everything that depended on it.
    for c in &plan.changes {
        if !has(&c.address, Step::Delete) {
            continue;
        }
        let prior_deps = c.dependencies.iter().chain(&c.prior_dependencies).cloned();
        for d in prior_deps {
            if has(&d, Step::Delete) {
                ops.get_mut(&(d, Step::Delete))
                    .expect("inserted above")
                    .insert((c.address.clone(), Step::Delete));
            }
        }
    }
    ops
}

struct Persist<'a> {
    path: &'a Path,
    state: State,
}

impl Persist<'_> {
    fn save(&mut self) -> anyhow::Result<()> {
        self.state.ensure_lineage();
        self.state.serial += 1;
        anycloud_state::save(self.path, &self.state)?;
        Ok(())
    }
}

/// Runs `plan` against `state` (persisted at `state_path` after every operation).
pub async fn apply(
    plan: &Plan,
    state: State,
    state_path: &Path,
    providers: &Providers,
    parallelism: usize,
    progress: &Progress,
    interrupt: Arc<AtomicBool>,
) -> anyhow::Result<(Outcome, State)> {
    let changes: BTreeMap<String, Change> = plan
        .changes
        .iter()
        .map(|c| (c.address.clone(), c.clone()))
        .collect();
    let mut waiting = operations(plan);
    let mut persist = Persist {
        path: state_path,
        state,
    };
    let mut outcome = Outcome::default();
    let mut running: JoinSet<(OpId, Instant, Result<Option<Attrs>, ProviderError>)> =
        JoinSet::new();
    let mut finished: BTreeSet<OpId> = BTreeSet::new();
    let mut failed: BTreeSet<OpId> = BTreeSet::new();
    let parallelism = parallelism.max(1);
    // A state write that fails stops new operations like Ctrl-C does; those in flight still
    // finish (and are recorded if the disk recovers) before the error is returned.
    let mut save_error: Option<anyhow::Error> = None;

    loop {
        // Anything whose prerequisite failed is skipped, and so are its own dependents.
        loop {
            let doomed: Vec<OpId> = waiting
                .iter()
                .filter(|(_, needs)| needs.iter().any(|n| failed.contains(n)))
                .map(|(op, _)| op.clone())
                .collect();
            if doomed.is_empty() {
                break;
            }
            for op in doomed {
                waiting.remove(&op);
                outcome.skipped.push(op.0.clone());
                progress.skipped(&op.0);
                failed.insert(op);
            }
        }
        if !interrupt.load(Ordering::SeqCst) && save_error.is_none() {
            let ready: Vec<OpId> = waiting
                .iter()
                .filter(|(_, needs)| needs.iter().all(|n| finished.contains(n)))
                .map(|(op, _)| op.clone())
                .take(parallelism.saturating_sub(running.len()))
                .collect();
            for op in ready {
                waiting.remove(&op);
                let change = &changes[&op.0];
                let action = if op.1 == Step::Delete {
                    Action::Delete
                } else {
                    change.action
                };
                let Some(provider) = providers.shared(&change.provider) else {
                    let message = format!(
                        "provider '{}' is not available in this build",
                        change.provider
                    );
                    progress.failed(&op.0, &message, Duration::ZERO);
                    outcome.failed.push((op.0.clone(), message));
                    failed.insert(op);
                    continue;
                };
                // Record the intent first: a crash now leaves evidence for the next plan.
                if action != Action::Read {
                    let pending = match (op.1, persist.state.resources.contains_key(&op.0)) {
                        (Step::Delete, _) => Pending::Delete,
                        (Step::Apply, true) if change.action == Action::Update => Pending::Update,
                        _ => Pending::Create,
                    };
                    let entry = persist
                        .state
                        .resources
                        .entry(op.0.clone())
                        .or_insert_with(|| Resource {
                            kind: change.kind.as_str().into(),
                            provider: change.provider.clone(),
                            // The planned attributes: enough for a later delete to find
                            // and clean up whatever a crashed create left behind.
                            attributes: change.after.clone().unwrap_or_default(),
                            dependencies: change.dependencies.clone(),
                            pending: None,
                        });
                    entry.pending = Some(pending);
                    if let Err(e) = persist.save() {
                        // Without the pending mark on disk the operation must not start.
                        waiting.insert(op, BTreeSet::new());
                        save_error = Some(e);
                        break;
                    }
                }
                let deps: Vec<(Kind, Attrs)> = change
                    .dependencies
                    .iter()
                    .filter_map(|d| persist.state.resources.get(d))
                    .filter_map(|r| Some((crate::plan::kind_of(&r.kind)?, r.attributes.clone())))
                    .collect();
                let prior = persist
                    .state
                    .resources
                    .get(&op.0)
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                let attrs = match op.1 {
                    Step::Delete => change.before.clone().unwrap_or_default(),
                    Step::Apply => change.after.clone().unwrap_or_default(),
                };
                let kind = change.kind;
                let op_id = op.clone();
                progress.started(&op.0, action);
                let start = Instant::now();
                let shown = progress.clone();
                running.spawn(async move {
                    let dep_refs: Vec<(Kind, &Attrs)> = deps.iter().map(|(k, a)| (*k, a)).collect();
                    let target = Target {
                        address: &op_id.0,
                        kind,
                        attrs: &attrs,
                        deps: &dep_refs,
                    };
                    let call = || async {
                        match action {
                            Action::Delete => provider.delete(target).await.map(|_| None),
                            Action::Read => {
                                let found = provider.read(&[target]).await?;
                                match found.into_iter().next().flatten() {
                                    Some(a) => Ok(Some(a)),
                                    None => Err(ProviderError::permanent("it does not exist")),
                                }
                            }
                            Action::Update => provider.update(&prior, target).await.map(Some),
                            _ => provider.create(target).await.map(Some),
                        }
                    };
                    let address = op_id.0.clone();
                    let sink_progress = shown.clone();
                    let sink: anycloud_provider::output::Sink =
                        Arc::new(move |line: &str| sink_progress.output(&address, line));
                    let note = |e: &ProviderError, after: Duration| {
                        shown.retrying(&op_id.0, &e.message, after)
                    };
                    let result =
                        anycloud_provider::output::with_sink(sink, with_retries_noting(call, note))
                            .await;
                    (op_id, start, result)
                });
            }
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (op, start, result) =
            joined.map_err(|e| anyhow::anyhow!("an apply worker panicked: {e}"))?;
        let change = &changes[&op.0];
        let elapsed = start.elapsed();
        match result {
            Ok(attrs) => {
                match attrs {
                    None => {
                        persist.state.resources.remove(&op.0);
                    }
                    Some(attrs) => {
                        persist.state.resources.insert(
                            op.0.clone(),
                            Resource {
                                kind: change.kind.as_str().into(),
                                provider: change.provider.clone(),
                                attributes: attrs,
                                dependencies: change.dependencies.clone(),
                                pending: None,
                            },
                        );
                    }
                }
                if let Err(e) = persist.save() {
                    save_error.get_or_insert(e);
                }
                progress.finished(
                    &op.0,
                    if op.1 == Step::Delete {
                        Action::Delete
                    } else {
                        change.action
                    },
                    elapsed,
                );
                finished.insert(op.clone());
                if op.1 == Step::Apply || change.action == Action::Delete {
                    outcome.done.push(op.0.clone());
                }
            }
            Err(e) => {
                progress.failed(&op.0, &e.message, elapsed);
                outcome.failed.push((op.0.clone(), e.message));
                failed.insert(op);
            }
        }
        if waiting.is_empty() && running.is_empty() {
            break;
        }
        if (interrupt.load(Ordering::SeqCst) || save_error.is_some()) && running.is_empty() {
            break;
        }
    }
    if let Some(e) = save_error {
        return Err(e.context(format!(
            "the state could not be saved; {} operation(s) finished, the rest were not started",
            outcome.done.len()
        )));
    }
    if interrupt.load(Ordering::SeqCst) && !waiting.is_empty() {
        outcome.interrupted = true;
    } else {
        // Only a cycle (a hand-edited state or plan) leaves operations that never became
        // ready: they did not run, so the apply must not report success.
        for (op, _) in std::mem::take(&mut waiting) {
            progress.skipped(&op.0);
            outcome.skipped.push(op.0);
        }
    }
    Ok((outcome, persist.state))
}

/// Sets `flag` on the first Ctrl-C; in-flight operations finish, nothing new starts.
pub fn watch_interrupt(flag: Arc<AtomicBool>, progress: Progress) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::SeqCst);
            progress.note("Interrupt received: waiting for the operations in flight to finish, then saving state…");
        }
    });
}

pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    //! The executor's scheduling, with a provider that records calls and fails on demand.
    //! (The real providers are exercised end to end in `tests/`.)

    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use anycloud_provider::{Planned, Provider, Result as PResult};
    use serde_json::json;

    use super::*;
    use crate::plan::Summary;

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
                Some(true) => Err(ProviderError::retryable("throttled")),
                Some(false) => Err(ProviderError::permanent("quota exceeded")),
                None => Ok(()),
            }
        }
    }

    #[async_trait::async_trait]
    impl Provider for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn plan(&self, _: Kind, inputs: &Attrs) -> PResult<Planned> {
            Ok(Planned {
                attrs: inputs.clone(),
                ..Default::default()
            })
        }
        async fn read(&self, t: &[Target<'_>]) -> PResult<Vec<Option<Attrs>>> {
            Ok(t.iter().map(|t| Some(t.attrs.clone())).collect())
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
            after_unknown: vec![],
            replace_paths: vec![],
            dependencies: deps.iter().map(|d| d.to_string()).collect(),
            prior_dependencies: vec![],
        }
    }

    fn plan(changes: Vec<Change>) -> Plan {
        Plan {
            format_version: 1,
            lineage: String::new(),
            serial: 0,
            config_digest: String::new(),
            refreshed: false,
            targets: vec![],
            warnings: vec![],
            changes,
            summary: Summary::default(),
        }
    }

    fn run(
        plan: &Plan,
        state: State,
        provider: Arc<Scripted>,
    ) -> (Outcome, State, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let providers = Providers::of(vec![provider]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (outcome, state) = rt
            .block_on(apply(
                plan,
                state,
                &path,
                &providers,
                4,
                &Progress::new(true),
                Arc::new(AtomicBool::new(false)),
            ))
            .unwrap();
        // What is on disk is what the executor ended with.
        assert_eq!(anycloud_state::load(&path).unwrap(), state);
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

    #[test]
    fn deletes_run_in_reverse_and_a_replacement_deletes_before_it_creates() {
        let provider = Arc::new(Scripted::default());
        let mut state = State::unborn();
        for (addr, deps) in [("vm", vec![]), ("svc", vec!["vm"]), ("ctr", vec!["svc"])] {
            state.resources.insert(
                addr.into(),
                anycloud_state::Resource {
                    kind: "bucket".into(),
                    provider: "scripted".into(),
                    attributes: Attrs::from([("n".into(), json!(addr))]),
                    dependencies: deps.iter().map(|d| d.to_string()).collect(),
                    pending: None,
                },
            );
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
        assert!(
            !state.lineage.is_empty(),
            "the first write gives the state its lineage"
        );
    }

    #[test]
    fn nothing_starts_when_the_pending_mark_cannot_be_written() {
        let provider = Arc::new(Scripted::default());
        let p = plan(vec![
            change("a", Action::Create, &[]),
            change("b", Action::Create, &["a"]),
        ]);
        // A state path under a file: every write fails.
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().join("state.json");
        let providers = Providers::of(vec![provider.clone()]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = rt.block_on(apply(
            &p,
            State::unborn(),
            &path,
            &providers,
            4,
            &Progress::new(true),
            Arc::new(AtomicBool::new(false)),
        ));
        let err = result.expect_err("a failed state write fails the apply");
        assert!(format!("{err:#}").contains("could not be saved"), "{err:#}");
        assert!(
            provider.calls.lock().unwrap().is_empty(),
            "no provider call without its pending mark"
        );
    }
}
