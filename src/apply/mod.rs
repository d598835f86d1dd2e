//! The apply executor: runs a plan's changes as a graph of operations, each starting as soon
//! as what it needs has finished, at most `parallelism` at a time. One coordinator owns the
//! state; workers only call providers.
//!
//! Scheduling keeps a count of unfinished prerequisites per operation and a ready queue
//! (the longest chain of waiting operations first, then the smallest address), so a
//! completion costs its dependents, not a rescan. Recording costs O(1) bytes per operation:
//! an operation's intent (the resource marked pending) is appended to the store's journal
//! and made durable before it reaches its provider; its result is appended after, and made
//! durable with the next batch of intents. The whole state is written once, when the run
//! ends, folding the journal.
//!
//! Intents are made durable a wave at a time. An operation's wave is its depth in the graph
//! (the longest chain of prerequisites before it); the first operation of a wave to become
//! ready has the intents of its whole wave written in one batch, and the rest of the wave
//! then starts the moment it is ready, with no write of its own (one ready while that batch
//! is on its way is parked, taking no slot, so operations whose intents are down run in its
//! place). A remote store pays a request (and its fences) per batch, so an apply costs one
//! batch per wave, not one per completion: 11,001 operations in 6 waves wrote 1,772 batches
//! when every completion that made something ready wrote its own, and write 6 now
//! (benches/state_requests.rs). An intent written ahead of its operation's start is
//! harmless: a pending mark says "may have been started", and a run that ends (or stops)
//! before starting it puts its record back as it was.
//! Two operations on one address (a replacement's delete, then its create) never have
//! their intents in the same batch: the create's waits until the delete is over, so the
//! record of the old resource stays until it is gone. (So each replacement's create whose
//! delete ends after its wave was written costs a batch of its own, shared with whatever
//! else is ready at that moment.)
//!
//! What a running create reports it made (an instance named before it boots, a bucket
//! made before its tags) is appended at once and made durable in a batch of its own, which
//! does not hold the coordinator up; one such batch is on its way at a time, and the reports
//! that come meanwhile go in the next (or with the next intents).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use anycloud_provider::{Attrs, Dep, Kind, Provider, ProviderError, Target};
use anycloud_state::{Entry, Pending, Resource, State, StateStore, StoreError, Version};
use futures::FutureExt;
use tokio::task::JoinSet;

use crate::plan::{Action, Change, Plan};
use crate::progress::Progress;
use crate::registry::Providers;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Step {
    /// Deletes run first for a replacement (delete, then create).
    Delete,
    Apply,
}

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

/// The operations of a plan: (address, step) in order, and what each waits for.
struct Operations<'p> {
    ops: Vec<(&'p Change, Step)>,
    /// Unfinished prerequisites of each operation.
    waiting_on: Vec<usize>,
    dependents: Vec<Vec<usize>>,
    /// The longest chain waiting for each operation: the ready queue's priority.
    height: Vec<usize>,
    /// The operations of each wave (the longest chain of prerequisites before them).
    waves: Vec<Vec<usize>>,
    wave_of: Vec<usize>,
    /// For a replacement's create, its delete: what must be over before its intent is written.
    deleted_first: Vec<Option<usize>>,
}

impl<'p> Operations<'p> {
    fn of(plan: &'p Plan) -> Operations<'p> {
        let has = |c: &Change, step: Step| match step {
            Step::Delete => matches!(c.action, Action::Delete | Action::Replace),
            Step::Apply => matches!(
                c.action,
                Action::Create | Action::Update | Action::Replace | Action::Read
            ),
        };
        // Sorted by (address, step): the ready queue's ties are broken by this index.
        let mut ops: Vec<(&Change, Step)> = plan
            .changes
            .iter()
            .flat_map(|c| {
                [Step::Delete, Step::Apply]
                    .into_iter()
                    .filter(move |s| has(c, *s))
                    .map(move |s| (c, s))
            })
            .collect();
        ops.sort_unstable_by(|a, b| (a.0.address.as_str(), a.1).cmp(&(b.0.address.as_str(), b.1)));
        let mut index: HashMap<(&str, Step), usize> = HashMap::with_capacity(ops.len());
        for (i, (c, s)) in ops.iter().enumerate() {
            index.insert((c.address.as_str(), *s), i);
        }
        let mut needs: Vec<Vec<usize>> = vec![Vec::new(); ops.len()];
        for (i, (c, step)) in ops.iter().enumerate() {
            match step {
                Step::Apply => {
                    for d in &c.dependencies {
                        if let Some(&j) = index.get(&(d.as_str(), Step::Apply)) {
                            needs[i].push(j);
                        }
                    }
                    if c.action == Action::Replace {
                        needs[i].push(index[&(c.address.as_str(), Step::Delete)]);
                    }
                }
                // A delete waits for the deletes of everything that depended on it.
                Step::Delete => {
                    for d in c.dependencies.iter().chain(&c.prior_dependencies) {
                        if let Some(&j) = index.get(&(d.as_str(), Step::Delete)) {
                            needs[j].push(i);
                        }
                    }
                }
            }
        }
        let deleted_first = (0..ops.len())
            .map(|i| match ops[i] {
                (c, Step::Apply) if c.action == Action::Replace => {
                    Some(index[&(c.address.as_str(), Step::Delete)])
                }
                _ => None,
            })
            .collect();
        let mut waiting_on = vec![0; ops.len()];
        let mut dependents = vec![Vec::new(); ops.len()];
        for (i, n) in needs.iter_mut().enumerate() {
            n.sort_unstable();
            n.dedup();
            waiting_on[i] = n.len();
            for &j in n.iter() {
                dependents[j].push(i);
            }
        }
        let order = kahn_order(&dependents, &waiting_on);
        let height = heights(&dependents, &order);
        let wave_of = wave_of(&dependents, &order);
        let mut waves = vec![Vec::new(); wave_of.iter().max().map_or(0, |w| w + 1)];
        for (i, w) in wave_of.iter().enumerate() {
            waves[*w].push(i);
        }
        Operations {
            ops,
            waiting_on,
            dependents,
            height,
            waves,
            wave_of,
            deleted_first,
        }
    }
}

/// The operations in Kahn's order: each after everything it waits for. (Those of a cycle,
/// which a hand-edited state or plan could make, are left out.)
fn kahn_order(dependents: &[Vec<usize>], waiting_on: &[usize]) -> Vec<usize> {
    let mut left = waiting_on.to_vec();
    let mut order: Vec<usize> = (0..left.len()).filter(|&i| left[i] == 0).collect();
    let mut next = 0;
    while next < order.len() {
        let i = order[next];
        next += 1;
        for &d in &dependents[i] {
            left[d] -= 1;
            if left[d] == 0 {
                order.push(d);
            }
        }
    }
    order
}

/// The wave of each operation: 0 for those that wait for nothing, else one more than the
/// latest wave of what it waits for.
fn wave_of(dependents: &[Vec<usize>], order: &[usize]) -> Vec<usize> {
    let mut wave = vec![0; dependents.len()];
    for &i in order {
        for &d in &dependents[i] {
            wave[d] = wave[d].max(wave[i] + 1);
        }
    }
    wave
}

/// The longest chain of operations that waits for each one (itself included). Starting the
/// tallest first keeps the long chains (a VM, then everything on it) from being left for
/// last, when too few operations remain to fill the slots.
fn heights(dependents: &[Vec<usize>], order: &[usize]) -> Vec<usize> {
    let mut height = vec![1; dependents.len()];
    for &i in order.iter().rev() {
        height[i] = 1 + dependents[i].iter().map(|&d| height[d]).max().unwrap_or(0);
    }
    height
}

type Done = (usize, Instant, Result<Option<Attrs>, ProviderError>);

/// A durable record under way while completions go on.
type Recording<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// Where an operation's intent is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Intent {
    /// A read: it changes nothing, so it has none.
    Needless,
    NotWritten,
    /// In the batch of this number, on its way.
    Writing(u64),
    Durable,
}

/// A batch on its way to the store: the intents of one or more waves, or what running
/// creates have made.
struct Writing<'a> {
    number: u64,
    /// Only what running creates made (and the results that came with it).
    made: bool,
    /// Whose intents it holds.
    members: Vec<usize>,
    /// Ready, and waiting for it to start: back in the ready queue once it is durable. They
    /// take no slot meanwhile, so operations whose intents are down run in their place.
    parked: Vec<usize>,
    durable: Recording<'a>,
}

/// What the coordinator waits for next.
enum Event {
    /// The `n`th batch on its way is on disk (or could not be written).
    Recorded(usize, Result<(), StoreError>),
    /// A running create has made something: these attributes are the resource's now.
    Made(usize, Attrs),
    Joined(Result<Done, tokio::task::JoinError>),
}

/// Runs `plan` against `state` (read from `store` at `version`): every operation is
/// journaled in the store as it starts and ends, and the state is written when it ends.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    plan: &Plan,
    mut state: State,
    store: &dyn StateStore,
    version: &Version,
    providers: &Providers,
    parallelism: usize,
    progress: &Progress,
    interrupt: Arc<AtomicBool>,
) -> anyhow::Result<(Outcome, State)> {
    state.ensure_lineage();
    let lineage = state.lineage.clone();
    let Operations {
        ops,
        mut waiting_on,
        dependents,
        height,
        waves,
        wave_of,
        deleted_first,
    } = Operations::of(plan);
    let mut outcome = Outcome::default();
    let mut running: JoinSet<Done> = JoinSet::new();
    // Tallest first, then by address: deterministic.
    let mut ready: BinaryHeap<(usize, Reverse<usize>)> = (0..ops.len())
        .filter(|&i| waiting_on[i] == 0)
        .map(|i| (height[i], Reverse(i)))
        .collect();
    let mut settled = vec![false; ops.len()];
    let mut intents: Vec<Intent> = (0..ops.len())
        .map(|i| match ops[i] {
            (c, Step::Apply) if c.action == Action::Read => Intent::Needless,
            _ => Intent::NotWritten,
        })
        .collect();
    // For an operation whose intent is in the state and that has not started: its record
    // before the intent, put back if the run ends without starting it.
    let mut unstarted: Vec<Option<Option<Resource>>> = vec![None; ops.len()];
    let parallelism = parallelism.max(1);
    let mut writing: Vec<Writing> = Vec::new();
    let mut batches: u64 = 0;
    // What running creates made, appended and not yet on its way to disk.
    let mut made_waiting = false;
    // A record that fails stops new operations like Ctrl-C does; those in flight still finish
    // (and are recorded if the store recovers) before the error is returned.
    let mut save_error: Option<anyhow::Error> = None;
    let (made_tx, mut made_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Attrs)>();
    let address = |i: usize| ops[i].0.address.as_str();
    let action = |i: usize| match ops[i].1 {
        Step::Delete => Action::Delete,
        Step::Apply => ops[i].0.action,
    };

    loop {
        let stopping = interrupt.load(Ordering::SeqCst) || save_error.is_some();
        if !stopping {
            // Ready operations whose intents are not written yet: their waves go in a batch.
            let mut fresh: Vec<usize> = Vec::new();
            while running.len() < parallelism {
                let Some((_, Reverse(i))) = ready.pop() else {
                    break;
                };
                match intents[i] {
                    Intent::Needless | Intent::Durable => {
                        let provider = match providers.shared(&ops[i].0.provider) {
                            Ok(p) => p,
                            Err(message) => {
                                progress.failed(address(i), &message, Duration::ZERO);
                                outcome.failed.push((address(i).to_owned(), message));
                                settled[i] = true;
                                skip_dependents(
                                    i,
                                    &dependents,
                                    &mut settled,
                                    &mut outcome,
                                    progress,
                                    &ops,
                                );
                                continue;
                            }
                        };
                        unstarted[i] = None;
                        start(
                            i,
                            provider,
                            &ops,
                            &state,
                            &mut running,
                            progress,
                            &action,
                            &made_tx,
                        );
                    }
                    Intent::Writing(n) => writing
                        .iter_mut()
                        .find(|w| w.number == n)
                        .expect("a batch being written is in `writing`")
                        .parked
                        .push(i),
                    Intent::NotWritten => fresh.push(i),
                }
            }
            if !fresh.is_empty() {
                let mut of_waves: Vec<usize> = fresh.iter().map(|i| wave_of[*i]).collect();
                of_waves.sort_unstable();
                of_waves.dedup();
                // The whole of each wave, but what is settled (skipped) and a replacement's
                // create whose delete is not over.
                let members: Vec<usize> = of_waves
                    .iter()
                    .flat_map(|w| waves[*w].iter().copied())
                    .filter(|&j| {
                        intents[j] == Intent::NotWritten
                            && !settled[j]
                            && deleted_first[j].is_none_or(|d| settled[d])
                    })
                    .collect();
                let number = batches;
                batches += 1;
                let entries: Vec<Entry> = members
                    .iter()
                    .filter_map(|&j| {
                        let entry = intent(ops[j].0, ops[j].1, &state)?;
                        unstarted[j] = Some(state.resources.get(address(j)).cloned());
                        entry.apply(&mut state);
                        intents[j] = Intent::Writing(number);
                        Some(entry)
                    })
                    .collect();
                let lineage = lineage.clone();
                writing.push(Writing {
                    number,
                    made: false,
                    members,
                    parked: fresh,
                    durable: Box::pin(async move { store.record(&lineage, &entries, true).await }),
                });
            }
        }
        // What creates made is written even when stopping: it is what exists. One batch at a
        // time; what comes meanwhile goes in the next (or with the next intents).
        if made_waiting && !writing.iter().any(|w| w.made) {
            made_waiting = false;
            let number = batches;
            batches += 1;
            let lineage = lineage.clone();
            writing.push(Writing {
                number,
                made: true,
                members: Vec::new(),
                parked: Vec::new(),
                durable: Box::pin(async move { store.record(&lineage, &[], true).await }),
            });
        }
        if writing.is_empty() && running.is_empty() {
            break;
        }
        let event = std::future::poll_fn(|cx| {
            // What a create has made comes before its completion (it was sent first).
            if let Poll::Ready(Some((i, attrs))) = made_rx.poll_recv(cx) {
                return Poll::Ready(Event::Made(i, attrs));
            }
            for (n, w) in writing.iter_mut().enumerate() {
                if let Poll::Ready(r) = w.durable.as_mut().poll(cx) {
                    return Poll::Ready(Event::Recorded(n, r));
                }
            }
            match running.poll_join_next(cx) {
                Poll::Ready(Some(joined)) => Poll::Ready(Event::Joined(joined)),
                _ => Poll::Pending,
            }
        })
        .await;
        let mut finished = match event {
            Event::Recorded(n, result) => {
                let done = writing.swap_remove(n);
                match result {
                    Ok(()) => {
                        for j in done.members {
                            intents[j] = Intent::Durable;
                        }
                        // Ready again, to start at once (unless the run is stopping: then they
                        // are recorded but never started, and their records are put back).
                        for i in done.parked {
                            ready.push((height[i], Reverse(i)));
                        }
                    }
                    // Without their intents on disk the operations must not start.
                    Err(e) => {
                        for j in done.members {
                            intents[j] = Intent::NotWritten;
                        }
                        save_error.get_or_insert(e.into());
                    }
                }
                continue;
            }
            Event::Made(i, attrs) => {
                // Recorded at once, and made durable in the next batch, which is started
                // now unless one is on its way: an instance started and not yet seen to boot
                // must be found by a run that comes after this one is killed.
                if !settled[i] {
                    if let Some(mut resource) = state.resources.get(address(i)).cloned() {
                        resource.attributes.extend(attrs);
                        let entry = Entry {
                            address: address(i).to_owned(),
                            resource: Some(resource),
                        };
                        let recorded = store
                            .record(&lineage, std::slice::from_ref(&entry), false)
                            .await;
                        entry.into_state(&mut state);
                        match recorded {
                            Ok(()) => made_waiting = true,
                            Err(e) => {
                                save_error.get_or_insert(e.into());
                            }
                        }
                    }
                }
                continue;
            }
            Event::Joined(joined) => vec![joined],
        };
        // Take every completion there is: the next batch gathers them all.
        while let Some(more) = running.try_join_next() {
            finished.push(more);
        }
        // The results, in one append, before anything that waits for them can start.
        let mut results = Vec::with_capacity(finished.len());
        for joined in finished {
            let (i, started, result) =
                joined.map_err(|e| anyhow::anyhow!("an apply worker panicked: {e}"))?;
            let (change, step) = ops[i];
            let elapsed = started.elapsed();
            settled[i] = true;
            match result {
                Ok(attrs) => {
                    results.push(result_entry(change, attrs));
                    progress.finished(address(i), action(i), elapsed);
                    if step == Step::Apply || change.action == Action::Delete {
                        outcome.done.push(change.address.clone());
                    }
                    for &d in &dependents[i] {
                        waiting_on[d] -= 1;
                        if waiting_on[d] == 0 && !settled[d] {
                            ready.push((height[d], Reverse(d)));
                        }
                    }
                }
                Err(e) => {
                    progress.failed(address(i), &e.message, elapsed);
                    outcome.failed.push((change.address.clone(), e.message));
                    skip_dependents(i, &dependents, &mut settled, &mut outcome, progress, &ops);
                }
            }
        }
        if !results.is_empty() {
            if let Err(e) = store.record(&lineage, &results, false).await {
                save_error.get_or_insert(e.into());
            }
            for entry in results {
                entry.into_state(&mut state);
            }
        }
    }
    // Intents written ahead of operations that never started (skipped, or the run stopped):
    // their records go back to what they were, in the state the fold writes.
    for (i, before) in unstarted.into_iter().enumerate() {
        match before {
            Some(Some(resource)) => {
                state.resources.insert(address(i).to_owned(), resource);
            }
            Some(None) => {
                state.resources.remove(address(i));
            }
            None => {}
        }
    }
    let unstarted: Vec<usize> = (0..ops.len()).filter(|&i| !settled[i]).collect();
    if interrupt.load(Ordering::SeqCst) && !unstarted.is_empty() {
        outcome.interrupted = true;
    } else if save_error.is_none() {
        // Only a cycle (a hand-edited state or plan) leaves operations that never became
        // ready: they did not run, so the apply must not report success.
        for i in unstarted {
            progress.skipped(address(i));
            outcome.skipped.push(address(i).to_owned());
        }
    }
    if let Some(e) = save_error {
        return Err(e.context(format!(
            "the state could not be recorded; {} operation(s) finished, the rest were not started",
            outcome.done.len()
        )));
    }
    // The fold: the whole state once, the journal gone.
    state.serial += 1;
    store.write(&state, version).await?;
    Ok((outcome, state))
}

/// Starts operation `i` on its own task.
#[allow(clippy::too_many_arguments)]
fn start(
    i: usize,
    provider: Arc<dyn Provider>,
    ops: &[(&Change, Step)],
    state: &State,
    running: &mut JoinSet<Done>,
    progress: &Progress,
    action: &dyn Fn(usize) -> Action,
    made: &Made,
) {
    let (change, step) = ops[i];
    progress.started(&change.address, action(i));
    let work = Work::new(change, step, state, made.clone());
    let shown = progress.clone();
    running.spawn(async move {
        let started = Instant::now();
        // A provider that panics fails its own operation; the others go on and are recorded.
        let result = std::panic::AssertUnwindSafe(work.run(i, provider, shown))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(ProviderError::permanent(format!(
                    "the provider failed unexpectedly (a bug in anycloud): {why}"
                )))
            });
        (i, started, result)
    });
}

/// Marks everything that (transitively) waits for `failed` as skipped.
fn skip_dependents(
    failed: usize,
    dependents: &[Vec<usize>],
    settled: &mut [bool],
    outcome: &mut Outcome,
    progress: &Progress,
    ops: &[(&Change, Step)],
) {
    let mut stack = dependents[failed].clone();
    while let Some(i) = stack.pop() {
        if settled[i] {
            continue;
        }
        settled[i] = true;
        progress.skipped(&ops[i].0.address);
        outcome.skipped.push(ops[i].0.address.clone());
        stack.extend(dependents[i].iter().copied());
    }
}

/// The resource marked pending before its operation starts; `None` for a read, which
/// changes nothing.
fn intent(change: &Change, step: Step, state: &State) -> Option<Entry> {
    if step == Step::Apply && change.action == Action::Read {
        return None;
    }
    let recorded = state.resources.get(&change.address);
    let pending = match (step, recorded.is_some()) {
        (Step::Delete, _) => Pending::Delete,
        (Step::Apply, true) if change.action == Action::Update => Pending::Update,
        _ => Pending::Create,
    };
    let mut resource = match recorded {
        Some(r) if step == Step::Delete || change.action == Action::Update => r.clone(),
        // The planned attributes: enough for a later delete to find and clean up whatever
        // a crashed create left behind.
        _ => Resource {
            kind: change.kind.as_str().into(),
            provider: change.provider.clone(),
            attributes: change.after.clone().unwrap_or_default(),
            private: change.private.clone().unwrap_or_default(),
            keep_on_destroy: change.keep_on_destroy,
            dependencies: change.dependencies.clone(),
            pending: None,
        },
    };
    resource.pending = Some(pending);
    Some(Entry {
        address: change.address.clone(),
        resource: Some(resource),
    })
}

/// What a finished operation leaves: the resource as the provider returned it, or gone.
fn result_entry(change: &Change, attrs: Option<Attrs>) -> Entry {
    Entry {
        address: change.address.clone(),
        resource: attrs.map(|attributes| Resource {
            kind: change.kind.as_str().into(),
            provider: change.provider.clone(),
            attributes,
            private: change.private.clone().unwrap_or_default(),
            keep_on_destroy: change.keep_on_destroy,
            dependencies: change.dependencies.clone(),
            pending: None,
        }),
    }
}

/// One operation, with everything it needs owned so it can run on its own task.
struct Work {
    address: String,
    kind: Kind,
    action: Action,
    attrs: Attrs,
    private: serde_json::Value,
    prior: Attrs,
    deps: Vec<(Kind, Attrs, serde_json::Value)>,
    /// Only forgotten: a kept resource (a bucket and its data) is never deleted.
    forget: bool,
    lineage: String,
    /// Where what a create has made so far goes (to be recorded at once).
    made: Made,
}

/// What a running create has made so far: its operation and the attributes.
type Made = tokio::sync::mpsc::UnboundedSender<(usize, Attrs)>;

impl Work {
    fn new(change: &Change, step: Step, state: &State, made: Made) -> Work {
        let recorded = state.resources.get(&change.address);
        let deps = change
            .dependencies
            .iter()
            .filter_map(|d| state.resources.get(d))
            .filter_map(|r| {
                Some((
                    Kind::parse(&r.kind)?,
                    r.attributes.clone(),
                    r.private.clone(),
                ))
            })
            .collect();
        let (action, attrs, private) = match step {
            Step::Delete => (
                Action::Delete,
                change.before.clone().unwrap_or_default(),
                recorded.map(|r| r.private.clone()).unwrap_or_default(),
            ),
            Step::Apply => (
                change.action,
                change.after.clone().unwrap_or_default(),
                change.private.clone().unwrap_or_default(),
            ),
        };
        Work {
            address: change.address.clone(),
            kind: change.kind,
            action,
            attrs,
            private,
            // Only an update is told what was there.
            prior: match (step, change.action) {
                (Step::Apply, Action::Update) => recorded.map(|r| r.attributes.clone()),
                _ => None,
            }
            .unwrap_or_default(),
            deps,
            forget: step == Step::Delete && change.keep_on_destroy,
            lineage: state.lineage.clone(),
            made,
        }
    }

    async fn run(
        self,
        i: usize,
        provider: Arc<dyn Provider>,
        progress: Progress,
    ) -> Result<Option<Attrs>, ProviderError> {
        if self.forget {
            return Ok(None);
        }
        let deps: Vec<Dep> = self
            .deps
            .iter()
            .map(|(kind, attrs, private)| Dep {
                kind: *kind,
                attrs,
                private,
            })
            .collect();
        let target = Target {
            address: &self.address,
            kind: self.kind,
            attrs: &self.attrs,
            private: &self.private,
            deps: &deps,
            lineage: &self.lineage,
        };
        let call = || async {
            match self.action {
                Action::Delete => provider.delete(target).await.map(|_| None),
                Action::Read => {
                    let found = provider.read(&[target]).await?;
                    match found.into_iter().next().transpose()?.flatten() {
                        Some(a) => Ok(Some(a)),
                        None => Err(ProviderError::new(
                            anycloud_provider::ErrorCode::NotFound,
                            "it does not exist",
                        )),
                    }
                }
                Action::Update => provider.update(&self.prior, target).await.map(Some),
                _ => provider.create(target).await.map(Some),
            }
        };
        let sink_progress = progress.clone();
        let address = self.address.clone();
        let sink: anycloud_provider::output::Sink =
            Arc::new(move |line: &str| sink_progress.output(&address, line));
        let note = |e: &ProviderError, after: Duration| {
            progress.retrying(&self.address, &e.message, after)
        };
        let made = self.made.clone();
        let made: anycloud_provider::output::Progress = Arc::new(move |attrs: &Attrs| {
            let _ = made.send((i, attrs.clone()));
        });
        anycloud_provider::output::with_sink(
            sink,
            anycloud_provider::output::with_progress(
                made,
                anycloud_provider::retry::with_retries(call, note),
            ),
        )
        .await
    }
}

/// Sets `flag` on the first Ctrl-C: in-flight operations finish, nothing new starts. A second
/// Ctrl-C stops at once (exit 130): the journal holds what was started, and the next run
/// resolves it.
/// The watch ends when the returned handle is aborted (the run is over).
pub fn watch_interrupt(flag: Arc<AtomicBool>, progress: Progress) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::SeqCst);
            progress.note("Interrupt received: waiting for the operations in flight to finish, then saving state… (Ctrl-C again to stop at once)");
            if tokio::signal::ctrl_c().await.is_ok() {
                progress.note("Stopped at once: the operations in flight are recorded as started; the next run resolves them.");
                std::process::exit(130);
            }
        }
    })
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
mod tests;
