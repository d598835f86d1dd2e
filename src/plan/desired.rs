//! Each node's desired attributes, from its provider; and the read-only preflight that
//! checks what is yet to be made against the live cloud.

use std::collections::BTreeMap;

use anycloud_provider::{Dep, Diagnostic, Kind, Planned, Target};
use anycloud_state::{Pending, State};

use crate::graph::Graph;
use crate::registry::Providers;

/// Hands every provider the state's records of its own resources before anything is
/// planned ([`anycloud_provider::Provider::recall`]).
pub fn recall(state: &State, providers: &Providers) {
    let mut by_provider: BTreeMap<&str, Vec<Target>> = BTreeMap::new();
    for (address, r) in &state.resources {
        let Some(kind) = Kind::parse(&r.kind) else {
            continue;
        };
        by_provider
            .entry(r.provider.as_str())
            .or_default()
            .push(Target {
                address,
                kind,
                attrs: &r.attributes,
                private: &r.private,
                deps: &[],
                lineage: &state.lineage,
            });
    }
    for name in providers.names() {
        if let Ok(provider) = providers.get(name) {
            provider.recall(by_provider.get(name).map_or(&[], Vec::as_slice));
        }
    }
}

/// The provider's desired attributes of every node in the graph.
pub fn desired(
    graph: &Graph,
    providers: &Providers,
) -> Result<BTreeMap<String, Planned>, Vec<Diagnostic>> {
    // Collected into a map at the end: built whole, its nodes are packed full.
    let mut out = Vec::with_capacity(graph.nodes.len());
    let mut errors: Vec<Diagnostic> = Vec::new();
    for node in graph.nodes.values() {
        let result = providers
            .get(&node.provider)
            .and_then(|p| p.plan(node.spec()).map_err(|e| e.message));
        match result {
            Ok(planned) => {
                out.push((node.address.clone(), planned));
            }
            Err(message) => errors.push(Diagnostic::of(node.address.clone(), message)),
        }
    }
    if errors.is_empty() {
        Ok(out.into_iter().collect())
    } else {
        // One line per deployment and message: a provider missing from this build would
        // otherwise be reported for every node.
        errors.sort_by(|a, b| a.address.cmp(&b.address));
        let deployment = |d: &Diagnostic| {
            d.address
                .as_deref()
                .and_then(|a| a.split('.').nth(1))
                .map(String::from)
        };
        errors.dedup_by(|a, b| a.message == b.message && deployment(a) == deployment(b));
        Err(errors)
    }
}

/// Asks each provider to check the desired resources against the live cloud (read-only):
/// returns the notes for the plan, or the providers' errors, which fail it.
pub async fn preflight(
    graph: &Graph,
    desired: &BTreeMap<String, Planned>,
    state: &State,
    providers: &Providers,
) -> Result<Vec<String>, Vec<String>> {
    let mut by_provider: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    // What state records as made is known; what is yet to be made is what can clash.
    let made = |a: &str| {
        state
            .resources
            .get(a)
            .is_some_and(|r| r.pending != Some(Pending::Create))
    };
    for node in graph.nodes.values().filter(|n| !made(&n.address)) {
        by_provider
            .entry(node.provider.as_str())
            .or_default()
            .push(node.address.as_str());
    }
    let (mut notes, mut errors) = (Vec::new(), Vec::new());
    for (name, addrs) in by_provider {
        let Ok(provider) = providers.get(name) else {
            continue;
        };
        let deps: Vec<Vec<Dep>> = addrs
            .iter()
            .map(|a| {
                graph.nodes[*a]
                    .deps
                    .iter()
                    .filter_map(|d| {
                        let planned = desired.get(d)?;
                        Some(Dep {
                            kind: graph.nodes.get(d)?.kind,
                            attrs: &planned.attrs,
                            private: &planned.private,
                        })
                    })
                    .collect()
            })
            .collect();
        let targets: Vec<Target> = addrs
            .iter()
            .zip(&deps)
            .map(|(a, d)| Target {
                address: a,
                kind: graph.nodes[*a].kind,
                attrs: &desired[*a].attrs,
                private: &desired[*a].private,
                deps: d,
                lineage: &state.lineage,
            })
            .collect();
        match anycloud_provider::retry::with_retries(|| provider.preflight(&targets), |_, _| {})
            .await
        {
            Ok(found) => {
                notes.extend(found.notes);
                errors.extend(found.errors);
            }
            Err(e) => errors.push(format!("error: provider {name}: {}", e.message)),
        }
    }
    if errors.is_empty() {
        Ok(notes)
    } else {
        Err(errors)
    }
}
