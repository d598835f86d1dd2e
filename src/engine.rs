//! The steps every command shares: read the config, lock and read the state, make a plan.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anycloud_state::State;

use crate::config::{self, Config};
use crate::graph::{self, Graph};
use crate::plan::{self, Plan, PlanOptions};
use crate::providers::Providers;

/// An error for the user, already worded; the CLI prints it and exits 1.
#[derive(Debug)]
pub struct UserError(pub String);

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserError {}

pub fn load_config(path: &Path) -> Result<Config, UserError> {
    match config::load(path) {
        Ok(mut c) => {
            c.path = path.to_path_buf();
            Ok(c)
        }
        Err(errors) => {
            let mut text: String = errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n");
            if errors.len() > 1 {
                text.push_str(&format!("\n{} errors in {}", errors.len(), path.display()));
            }
            Err(UserError(text.trim_end().to_owned()))
        }
    }
}

pub fn load_state(path: &Path) -> Result<State, UserError> {
    anycloud_state::load(path).map_err(|e| UserError(format!("error: {e}")))
}

fn plan_errors(errors: Vec<plan::PlanError>) -> UserError {
    UserError(
        errors
            .iter()
            .map(|e| format!("error: {e}"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Loads the config and hands each provider its `providers.<name>` section.
pub fn load_config_for(path: &Path, providers: &Providers) -> Result<Config, UserError> {
    let config = load_config(path)?;
    providers
        .configure(&config.provider_settings)
        .map_err(|e| UserError(format!("error: {}: {e}", path.display())))?;
    Ok(config)
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
                    write!(f, " ({provider}: {calls} remote calls)")?;
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
    let graph = graph::compile(config);
    t.compile = start.elapsed();
    let start = Instant::now();
    let desired = plan::desired(&graph, providers).map_err(plan_errors)?;
    t.desired = start.elapsed();
    let mut notes = Vec::new();
    if opts.refresh && !opts.destroy {
        notes = plan::preflight(&graph, &desired, state, providers)
            .await
            .map_err(|errors| UserError(errors.join("\n")))?;
    }
    let current = if opts.refresh {
        let start = Instant::now();
        let calls_before = providers.remote_calls();
        let current = plan::refresh(&graph, &desired, state, providers)
            .await
            .map_err(plan_errors)?;
        t.refresh = Some((start.elapsed(), current.len()));
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
    let mut plan =
        plan::diff(&graph, &desired, state, current.as_ref(), opts).map_err(plan_errors)?;
    t.diff = start.elapsed();
    plan.warnings.extend(notes);
    plan.config_digest = config.digest.clone();
    Ok((graph, plan, t))
}
