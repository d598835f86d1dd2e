//! The steps commands share: load the config and configure the providers, open the state
//! (lock, read, fold the journal of a run that died), make a plan.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anycloud_provider::Diagnostic;
use anycloud_state::{State, StateStore, Version};

use crate::config::{self, Config};
use crate::graph::{self, Graph};
use crate::plan::{self, Plan, PlanOptions};
use crate::registry::Providers;

/// Problems for the user, already worded; the CLI prints them and exits 1.
#[derive(Debug)]
pub struct UserError(pub Vec<Diagnostic>);

impl UserError {
    pub fn msg(text: impl Into<String>) -> UserError {
        UserError(vec![Diagnostic::error(text)])
    }
}

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for d in &self.0 {
            f.write_str(&d.to_string())?;
        }
        Ok(())
    }
}

impl std::error::Error for UserError {}

impl From<anycloud_state::StoreError> for UserError {
    fn from(e: anycloud_state::StoreError) -> Self {
        UserError::msg(e.to_string())
    }
}

pub fn load_config(path: &Path, providers: &Providers) -> Result<Config, UserError> {
    config::load(path, providers).map_err(|mut errors| {
        if errors.len() > 1 {
            errors.push(Diagnostic::error(format!(
                "{} errors in {}",
                errors.len(),
                path.display()
            )));
        }
        UserError(errors)
    })
}

/// Loads the config and hands each provider its checked settings.
pub fn load_config_for(path: &Path, providers: &Providers) -> Result<Config, UserError> {
    let config = load_config(path, providers)?;
    providers
        .configure(&config.provider_settings)
        .map_err(|e| UserError::msg(format!("{}: {e}", path.display())))?;
    Ok(config)
}

/// The state, locked for this command, with the journal of a run that died folded in.
pub struct Session<'s> {
    pub store: &'s dyn StateStore,
    pub state: State,
    pub version: Version,
}

impl<'s> Session<'s> {
    pub async fn open(
        store: &'s dyn StateStore,
        operation: &str,
        timeout: Duration,
    ) -> Result<Session<'s>, UserError> {
        store.lock(operation, timeout).await?;
        Self::opened(store).await
    }

    /// [`Session::open`] without waiting: `Ok(Err(holder))` when another run holds the lock
    /// (`run --recover` backs off and looks again rather than fail).
    pub async fn try_open(
        store: &'s dyn StateStore,
        operation: &str,
    ) -> Result<Result<Session<'s>, Box<anycloud_state::LockInfo>>, UserError> {
        match store.lock(operation, Duration::ZERO).await {
            Ok(_) => Self::opened(store).await.map(Ok),
            Err(anycloud_state::StoreError::Locked { holder, .. }) => Ok(Err(holder)),
            Err(e) => Err(e.into()),
        }
    }

    /// The state read under the lock just taken, the journal of a run that died folded in;
    /// the lock let go again on failure.
    async fn opened(store: &'s dyn StateStore) -> Result<Session<'s>, UserError> {
        let opened = async {
            let mut snap = store.read().await?;
            if snap.replayed > 0 {
                // What a killed run finished (and started) becomes the state now.
                snap.version = store.write(&snap.state, &snap.version).await?;
            }
            Ok::<_, UserError>(snap)
        }
        .await;
        match opened {
            Ok(snap) => Ok(Session {
                store,
                state: snap.state,
                version: snap.version,
            }),
            Err(e) => {
                let _ = store.unlock().await;
                Err(e)
            }
        }
    }

    /// Lets go of the lock; returns the state as it was read.
    pub async fn close(self) -> State {
        let _ = self.store.unlock().await;
        self.state
    }
}

/// The state as it is now, without a lock (for commands that only read it).
pub async fn read_state(store: &dyn StateStore) -> Result<State, UserError> {
    Ok(store.read().await?.state)
}

/// The state a plan without the lock (`plan --lock=false`) is made from: the stored state
/// with no run's journal over it. It writes nothing (no lock, no fold), so a role that may
/// only read can make it. While the journal of a run applies to the stored state (a run
/// applying now, or one that died before writing the state), it reads again every second
/// for up to `timeout`: what such a run will have done by its end is not known yet, and a
/// plan saved from the state half-way (the journal replayed moves the serial on, as the
/// run's own fold will) could be taken by `apply PLANFILE` as current. A state read with no
/// journal over it is at serial N; any run that changes it writes N+1 or later, so a saved
/// plan made from it is refused as stale once anything moved.
pub async fn read_settled(store: &dyn StateStore, timeout: Duration) -> Result<State, UserError> {
    let start = Instant::now();
    loop {
        let snap = store.read().await?;
        if snap.replayed == 0 {
            return Ok(snap.state);
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(UserError::msg(format!(
                "the state {} holds the journal of a run that has not written the state yet (one applying now, or one that died): a plan without the lock cannot tell what that run will have done; waited {}. Plan again when it has ended (--lock-timeout waits for it); a run that died is folded in by the next command that takes the lock (apply, destroy, or plan without --lock=false)",
                store.describe(),
                humantime::format_duration(Duration::from_secs(waited.as_secs()))
            )));
        }
        tokio::time::sleep(Duration::from_secs(1).min(timeout - waited)).await;
    }
}

/// Compiles, plans, refreshes (unless told not to) and diffs: the whole of `anycloud plan`.
pub async fn make_plan(
    config: &Config,
    state: &State,
    providers: &Providers,
    opts: &PlanOptions<'_>,
) -> Result<(Graph, Plan), UserError> {
    make_plan_timed(config, state, providers, opts)
        .await
        .map(|(g, p, _)| (g, p))
}

/// Where a plan's time went, for `-v`.
#[derive(Debug, Default)]
pub struct PlanTimings {
    pub compile: Duration,
    pub desired: Duration,
    pub refresh: Option<(Duration, usize)>,
    /// Calls to the outside the refresh made, by provider (those that made any).
    pub refresh_calls: BTreeMap<&'static str, u64>,
    /// Connections the refresh opened, by provider (those that opened any).
    pub refresh_connections: BTreeMap<&'static str, u64>,
    pub diff: Duration,
}

impl std::fmt::Display for PlanTimings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "plan: compile {:.1} ms, provider plan {:.1} ms, ",
            ms(self.compile),
            ms(self.desired)
        )?;
        match self.refresh {
            Some((d, n)) => {
                write!(f, "refresh of {n} resources {:.1} ms", ms(d))?;
                for (provider, calls) in &self.refresh_calls {
                    write!(f, " ({provider}: {calls} remote calls")?;
                    if let Some(n) = self.refresh_connections.get(provider) {
                        write!(f, " over {n} connections")?;
                    }
                    write!(f, ")")?;
                }
                write!(f, ", ")?;
            }
            None => write!(f, "no refresh, ")?,
        }
        write!(f, "diff {:.1} ms", ms(self.diff))
    }
}

pub async fn make_plan_timed(
    config: &Config,
    state: &State,
    providers: &Providers,
    opts: &PlanOptions<'_>,
) -> Result<(Graph, Plan, PlanTimings), UserError> {
    let mut t = PlanTimings::default();
    let start = Instant::now();
    let graph = graph::compile(config, providers);
    t.compile = start.elapsed();
    let start = Instant::now();
    plan::recall(state, providers);
    let desired = plan::desired(&graph, providers).map_err(UserError)?;
    t.desired = start.elapsed();
    let mut notes = Vec::new();
    if opts.refresh && !opts.destroy {
        notes = plan::preflight(&graph, &desired, state, providers)
            .await
            // The providers' own words, printed as they are.
            .map_err(|errors| UserError(errors.into_iter().map(Diagnostic::verbatim).collect()))?;
    }
    let mut unread = Vec::new();
    let current = if opts.refresh {
        let start = Instant::now();
        let calls_before = providers.remote_calls();
        let connections_before = providers.connections();
        let refreshed = plan::refresh(&graph, &desired, state, providers)
            .await
            .map_err(UserError)?;
        t.refresh = Some((
            start.elapsed(),
            refreshed.found.len() + refreshed.unreadable.len(),
        ));
        let mut current = refreshed.found;
        unread = unread_deployments(&refreshed.unreadable).map_err(UserError)?;
        // What could not be read is taken as recorded; its deployment is left out below.
        for addr in refreshed.unreadable.keys() {
            if let Some(r) = state.resources.get(addr) {
                current.insert(addr.clone(), Some(r.attributes.clone()));
            }
        }
        for (provider, after) in providers.connections() {
            let made = after - connections_before.get(provider).copied().unwrap_or(0);
            if made > 0 {
                t.refresh_connections.insert(provider, made);
            }
        }
        for (provider, after) in providers.remote_calls() {
            let made = after - calls_before.get(provider).copied().unwrap_or(0);
            if made > 0 {
                t.refresh_calls.insert(provider, made);
            }
        }
        Some(current)
    } else {
        None
    };
    let start = Instant::now();
    let mut plan = match plan::diff(&graph, &desired, state, current.as_ref(), opts) {
        Ok(plan) => plan,
        Err(errors) => {
            let errors = with_fill_hints(errors, &graph, providers);
            let errors = plan::missing_input::locate(errors, config, &graph, providers).await;
            return Err(UserError(errors));
        }
    };
    t.diff = start.elapsed();
    plan.leave_out(unread);
    if !opts.destroy {
        plan.placements = plan::placements::moved(state, current.as_ref(), &plan.changes);
    }
    // Like the preflight, it asks the outside: not under `--refresh=false`.
    if opts.refresh && !opts.destroy {
        let warnings = plan::images::check(&config.path, &graph, &plan, providers)
            .await
            .map_err(UserError)?;
        plan.warnings.extend(warnings);
    }
    plan.warnings.extend(notes);
    if let Some(current) = &current {
        plan.warnings
            .extend(plan::input_notes(current, &plan.changes));
    }
    if !opts.destroy {
        plan.warnings
            .extend(plan::renames::rename_warnings(&plan.changes));
    }
    plan.warnings.extend(
        desired
            .iter()
            .flat_map(|(address, p)| p.warnings.iter().map(move |w| format!("{address}: {w}"))),
    );
    plan.config_digest = config.digest.clone();
    if !opts.destroy {
        plan.sweeps = config.sweeps.clone();
    }
    Ok((graph, plan, t))
}

/// Each deployment with a resource the refresh could not read, with the first such resource
/// and why. A shared resource (a continent's storage) belongs to no one deployment: not
/// reading it fails the plan.
fn unread_deployments(
    unreadable: &BTreeMap<String, anycloud_provider::ProviderError>,
) -> Result<Vec<plan::Unread>, Vec<Diagnostic>> {
    let mut by_deployment: BTreeMap<&str, plan::Unread> = BTreeMap::new();
    let mut shared = Vec::new();
    for (addr, e) in unreadable {
        let Some(deployment) = addr
            .strip_prefix("deployment.")
            .and_then(|r| r.split('.').next())
        else {
            shared.push(Diagnostic::of(addr.clone(), format!("refresh failed: {e}")));
            continue;
        };
        by_deployment
            .entry(deployment)
            .or_insert_with(|| plan::Unread {
                deployment: deployment.to_owned(),
                address: addr.clone(),
                error: e.message.clone(),
            });
    }
    if shared.is_empty() {
        Ok(by_deployment.into_values().collect())
    } else {
        Err(shared)
    }
}

/// A missing input bucket can be filled from here where its provider reaches its buckets.
fn with_fill_hints(
    errors: Vec<Diagnostic>,
    graph: &Graph,
    providers: &Providers,
) -> Vec<Diagnostic> {
    errors
        .into_iter()
        .map(|d| {
            let node = d.address.as_deref().and_then(|a| graph.nodes.get(a));
            let hint = node.and_then(|n| {
                let provider = providers.get(&n.provider).ok()?;
                provider.buckets()?;
                let name = n.deployment.bucket(n.bucket?)?.name.clone();
                Some(format!(
                    "fill it from here with `anycloud bucket upload {name} DIR`"
                ))
            });
            match (n_is_data(node), hint) {
                (true, Some(h)) => d.with_help(h),
                _ => d,
            }
        })
        .collect()
}

fn n_is_data(node: Option<&crate::graph::Node>) -> bool {
    node.is_some_and(|n| n.mode == crate::graph::Mode::Data)
}
