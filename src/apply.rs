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
use crate::retry::with_retries;

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
        let prior_deps = match c.action {
            Action::Delete => c.dependencies.clone(),
            _ => c.dependencies.clone(),
        };
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
        if !interrupt.load(Ordering::SeqCst) {
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
                            attributes: Attrs::new(),
                            dependencies: change.dependencies.clone(),
                            pending: None,
                        });
                    entry.pending = Some(pending);
                    persist.save()?;
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
                let provider = providers.shared(&change.provider).ok_or_else(|| {
                    anyhow::anyhow!("{}: provider '{}' is not available", op.0, change.provider)
                })?;
                let kind = change.kind;
                let op_id = op.clone();
                progress.started(&op.0, action);
                let start = Instant::now();
                running.spawn(async move {
                    let dep_refs: Vec<(Kind, &Attrs)> = deps.iter().map(|(k, a)| (*k, a)).collect();
                    let target = Target {
                        address: &op_id.0,
                        kind,
                        attrs: &attrs,
                        deps: &dep_refs,
                    };
                    let result = with_retries(|| async {
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
                    })
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
                persist.save()?;
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
        if interrupt.load(Ordering::SeqCst) && running.is_empty() {
            break;
        }
    }
    if interrupt.load(Ordering::SeqCst) && !waiting.is_empty() {
        outcome.interrupted = true;
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
