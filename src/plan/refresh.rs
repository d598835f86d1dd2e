//! What exists now: every provider reads everything of its own in state (and the data
//! nodes) in one batched call; and the live facts `anycloud status` shows.

use std::collections::BTreeMap;

use anycloud_provider::{Attrs, Dep, Diagnostic, Kind, Planned, Provider, ProviderError, Target};
use anycloud_state::{Pending, State};

use crate::graph::{Graph, Mode};
use crate::registry::Providers;

/// One resource to read: what it is and what it depends on.
struct Wanted<'a> {
    kind: Kind,
    provider: &'a str,
    attrs: &'a Attrs,
    private: &'a serde_json::Value,
    deps: &'a [String],
}

/// What a refresh found: the current attributes by address (`None` where gone), and the
/// addresses that could not be read, with why (a machine that did not answer).
#[derive(Debug, Default)]
pub struct Refreshed {
    pub found: BTreeMap<String, Option<Attrs>>,
    pub unreadable: BTreeMap<String, ProviderError>,
}

/// Asks each provider, in one batch, what exists now of everything in state (and of the
/// data nodes).
pub async fn refresh(
    graph: &Graph,
    desired: &BTreeMap<String, Planned>,
    state: &State,
    providers: &Providers,
) -> Result<Refreshed, Vec<Diagnostic>> {
    let mut wanted: BTreeMap<&str, Wanted> = BTreeMap::new();
    for (addr, r) in &state.resources {
        let Some(kind) = Kind::parse(&r.kind) else {
            continue;
        };
        // A create that never finished is re-run, not read: it may not exist at all.
        if r.pending == Some(Pending::Create) {
            continue;
        }
        wanted.insert(
            addr,
            Wanted {
                kind,
                provider: &r.provider,
                attrs: &r.attributes,
                private: &r.private,
                deps: &r.dependencies,
            },
        );
    }
    for node in graph.nodes.values().filter(|n| n.mode == Mode::Data) {
        if !wanted.contains_key(node.address.as_str()) {
            let planned = &desired[&node.address];
            wanted.insert(
                &node.address,
                Wanted {
                    kind: node.kind,
                    provider: &node.provider,
                    attrs: &planned.attrs,
                    private: &planned.private,
                    deps: &node.deps,
                },
            );
        }
    }
    read_all(&wanted, providers, &state.lineage).await
}

/// Reads every wanted resource, one batch per provider.
async fn read_all(
    wanted: &BTreeMap<&str, Wanted<'_>>,
    providers: &Providers,
    lineage: &str,
) -> Result<Refreshed, Vec<Diagnostic>> {
    let mut by_provider: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (addr, w) in wanted {
        by_provider.entry(w.provider).or_default().push(addr);
    }
    let mut out = Refreshed::default();
    let mut errors = Vec::new();
    for (provider_name, addrs) in by_provider {
        let provider: &dyn Provider = match providers.get(provider_name) {
            Ok(p) => p,
            Err(message) => {
                errors.extend(
                    addrs
                        .iter()
                        .map(|a| Diagnostic::of(a.to_string(), message.clone())),
                );
                continue;
            }
        };
        let deps: Vec<Vec<Dep>> = addrs
            .iter()
            .map(|a| dependencies(wanted, wanted[a].deps))
            .collect();
        let targets: Vec<Target> = addrs
            .iter()
            .zip(&deps)
            .map(|(a, deps)| target(a, &wanted[a], deps, lineage))
            .collect();
        // A target's transient error (a connection dropped mid-probe) is retried as a failed
        // call is; what is still failing after the retries fails only its own target.
        let last = std::sync::Mutex::new(None);
        let read = || async {
            let found = provider.read(&targets).await?;
            let transient = found
                .iter()
                .find_map(|f| f.as_ref().err().filter(|e| e.retryable()).cloned());
            match transient {
                Some(e) => {
                    *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(found);
                    Err(e)
                }
                None => Ok(found),
            }
        };
        let read = match anycloud_provider::retry::with_retries(read, |_, _| {}).await {
            Err(e) => last
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .ok_or(e),
            ok => ok,
        };
        match read {
            Ok(found) => {
                for (a, f) in addrs.iter().zip(found) {
                    match f {
                        Ok(f) => {
                            out.found.insert(a.to_string(), f);
                        }
                        Err(e) => {
                            out.unreadable.insert(a.to_string(), e);
                        }
                    }
                }
            }
            Err(e) => errors.push(Diagnostic::of(
                format!("provider.{provider_name}"),
                format!("refresh failed: {e}"),
            )),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn dependencies<'a>(wanted: &'a BTreeMap<&str, Wanted<'a>>, deps: &[String]) -> Vec<Dep<'a>> {
    deps.iter()
        .filter_map(|d| wanted.get(d.as_str()))
        .map(|w| Dep {
            kind: w.kind,
            attrs: w.attrs,
            private: w.private,
        })
        .collect()
}

fn target<'a>(
    address: &'a str,
    w: &Wanted<'a>,
    deps: &'a [Dep<'a>],
    lineage: &'a str,
) -> Target<'a> {
    Target {
        address,
        kind: w.kind,
        attrs: w.attrs,
        private: w.private,
        deps,
        lineage,
    }
}

/// Live facts (`Provider::observe`) about every resource in state, for `anycloud status`.
pub async fn observe(
    state: &State,
    providers: &Providers,
) -> BTreeMap<String, BTreeMap<String, String>> {
    let wanted: BTreeMap<&str, Wanted> = state
        .resources
        .iter()
        .filter_map(|(addr, r)| {
            Some((
                addr.as_str(),
                Wanted {
                    kind: Kind::parse(&r.kind)?,
                    provider: &r.provider,
                    attrs: &r.attributes,
                    private: &r.private,
                    deps: &r.dependencies,
                },
            ))
        })
        .collect();
    let mut by_provider: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (addr, w) in &wanted {
        by_provider.entry(w.provider).or_default().push(addr);
    }
    let mut out = BTreeMap::new();
    for (name, addrs) in by_provider {
        let Ok(provider) = providers.get(name) else {
            continue;
        };
        let deps: Vec<Vec<Dep>> = addrs
            .iter()
            .map(|a| dependencies(&wanted, wanted[a].deps))
            .collect();
        let targets: Vec<Target> = addrs
            .iter()
            .zip(&deps)
            .map(|(a, d)| target(a, &wanted[a], d, &state.lineage))
            .collect();
        if let Ok(facts) = provider.observe(&targets).await {
            for (t, f) in targets.iter().zip(facts) {
                out.insert(t.address.to_owned(), f);
            }
        }
    }
    out
}

/// A resource recorded in the state, with its dependencies' records: what a verb on that
/// one resource gets (`None` where the state does not record it).
fn recorded<'a>(state: &'a State, address: &str) -> Option<(Wanted<'a>, Vec<Dep<'a>>)> {
    let wanted = |addr: &str| {
        let r = state.resources.get(addr)?;
        Some(Wanted {
            kind: Kind::parse(&r.kind)?,
            provider: &r.provider,
            attrs: &r.attributes,
            private: &r.private,
            deps: &r.dependencies,
        })
    };
    let w = wanted(address)?;
    let deps = w
        .deps
        .iter()
        .filter_map(|d| wanted(d))
        .map(|d| Dep {
            kind: d.kind,
            attrs: d.attrs,
            private: d.private,
        })
        .collect();
    Some((w, deps))
}

fn not_started(address: &str) -> String {
    format!(
        "{address} is not in the state: the job has not been started (anycloud apply starts it)"
    )
}

/// The output of the job whose container is at `address` in the state, from its machine
/// ([`Provider::job_log`]).
pub async fn job_log(
    state: &State,
    providers: &Providers,
    address: &str,
    range: anycloud_provider::LogRange<'_>,
) -> Result<anycloud_provider::JobLog, String> {
    let (w, deps) = recorded(state, address).ok_or_else(|| not_started(address))?;
    let provider = providers.get(w.provider)?;
    provider
        .job_log(target(address, &w, &deps, &state.lineage), range)
        .await
        .map_err(|e| format!("{address}: reading the job's output failed: {}", e.message))
}

/// What exists now of a few resources recorded in the state, each asked of its provider
/// (one read per provider, one attempt: a caller that watches asks again): the current
/// attributes, `None` where gone, or the target's own error. An address the state does not
/// record is left out. `run --recover` looks at one deployment's machine and job this way,
/// not at the whole state.
pub async fn read_recorded(
    state: &State,
    providers: &Providers,
    addresses: &[&str],
) -> Result<BTreeMap<String, Result<Option<Attrs>, ProviderError>>, String> {
    let records: Vec<(&str, Wanted, Vec<Dep>)> = addresses
        .iter()
        .filter_map(|a| recorded(state, a).map(|(w, deps)| (*a, w, deps)))
        .collect();
    let mut by_provider: BTreeMap<&str, Vec<Target>> = BTreeMap::new();
    for (address, w, deps) in &records {
        by_provider
            .entry(w.provider)
            .or_default()
            .push(target(address, w, deps, &state.lineage));
    }
    let mut out = BTreeMap::new();
    for (name, targets) in by_provider {
        let found = providers
            .get(name)?
            .read(&targets)
            .await
            .map_err(|e| format!("reading {} failed: {}", targets[0].address, e.message))?;
        for (t, f) in targets.iter().zip(found) {
            out.insert(t.address.to_owned(), f);
        }
    }
    Ok(out)
}

/// Empties the checkpoint of the job whose container is at `address`
/// ([`Provider::clear_checkpoint`]).
pub async fn clear_checkpoint(
    state: &State,
    providers: &Providers,
    address: &str,
) -> Result<anycloud_provider::Cleared, String> {
    let (w, deps) = recorded(state, address).ok_or_else(|| not_started(address))?;
    let provider = providers.get(w.provider)?;
    provider
        .clear_checkpoint(target(address, &w, &deps, &state.lineage))
        .await
        .map_err(|e| format!("{address}: emptying the checkpoint failed: {}", e.message))
}
