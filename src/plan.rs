//! Plans: what apply would do to make the state match the config (DESIGN §5).
//!
//! The plan document is plain, versioned data; every rendering (human, markdown) is made
//! from it, and `apply PLANFILE` executes exactly it.

use std::collections::{BTreeMap, BTreeSet};

use anycloud_provider::{Attrs, Kind, Planned, Provider, Target};
use anycloud_state::{Pending, State};
use serde::{Deserialize, Serialize};

use crate::graph::{topo_order_sorted, Graph, Mode};
use crate::providers::Providers;

pub const PLAN_FORMAT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
    NoOp,
    Read,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::NoOp => "no-op",
            Action::Read => "read",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub address: String,
    pub kind: Kind,
    pub provider: String,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub before: Option<Attrs>,
    pub after: Option<Attrs>,
    /// Attributes only known once apply has made the resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_unknown: Vec<String>,
    /// Changed attributes that cannot be changed in place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replace_paths: Vec<String>,
    /// What this resource needs (after apply), or needed (for a delete).
    pub dependencies: Vec<String>,
    /// For a replacement or update whose dependencies changed: what it needed before, which
    /// is what its delete must wait on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prior_dependencies: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub replace: usize,
    pub destroy: usize,
    pub read: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    /// The state this plan was made against: apply refuses it once the state has moved.
    pub lineage: String,
    pub serial: u64,
    pub config_digest: String,
    pub refreshed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub changes: Vec<Change>,
    pub summary: Summary,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::NoOp)
    }

    pub fn summary_line(&self) -> String {
        let s = &self.summary;
        format!(
            "Plan: {} to add, {} to change, {} to replace, {} to destroy.",
            s.add, s.change, s.replace, s.destroy
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError {
    pub address: String,
    pub message: String,
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.address, self.message)
    }
}

pub struct PlanOptions<'a> {
    pub refresh: bool,
    pub targets: &'a [String],
    pub destroy: bool,
}

/// The provider's desired attributes of every node in the graph.
pub fn desired(
    graph: &Graph,
    providers: &Providers,
) -> Result<BTreeMap<String, Planned>, Vec<PlanError>> {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for node in graph.nodes.values() {
        let result = providers
            .get(&node.provider)
            .map_err(|message| PlanError {
                address: node.address.clone(),
                message,
            })
            .and_then(|p| {
                p.plan(node.kind, &node.inputs).map_err(|e| PlanError {
                    address: node.address.clone(),
                    message: e.message,
                })
            });
        match result {
            Ok(planned) => {
                out.insert(node.address.clone(), planned);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        errors.sort_by(|a, b| a.address.cmp(&b.address));
        errors.dedup_by(|a, b| {
            a.message == b.message && a.address.split('.').nth(1) == b.address.split('.').nth(1)
        });
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
        let deps: Vec<Vec<(Kind, &Attrs)>> = addrs
            .iter()
            .map(|a| {
                graph.nodes[*a]
                    .deps
                    .iter()
                    .filter_map(|d| Some((graph.nodes.get(d)?.kind, &desired.get(d)?.attrs)))
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
                deps: d,
            })
            .collect();
        match crate::retry::with_retries(|| provider.preflight(&targets)).await {
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

/// Asks each provider, in one batch, what exists now of everything in state (and of the
/// data nodes). Returns the current attributes by address, `None` where gone.
pub async fn refresh(
    graph: &Graph,
    desired: &BTreeMap<String, Planned>,
    state: &State,
    providers: &Providers,
) -> Result<BTreeMap<String, Option<Attrs>>, Vec<PlanError>> {
    let mut wanted: BTreeMap<String, (Kind, String, Attrs, Vec<String>)> = BTreeMap::new();
    for (addr, r) in &state.resources {
        let Some(kind) = kind_of(&r.kind) else {
            continue;
        };
        // A create that never finished is re-run, not read: it may not exist at all.
        if r.pending == Some(Pending::Create) {
            continue;
        }
        wanted.insert(
            addr.clone(),
            (
                kind,
                r.provider.clone(),
                r.attributes.clone(),
                r.dependencies.clone(),
            ),
        );
    }
    for node in graph.nodes.values().filter(|n| n.mode == Mode::Data) {
        if !wanted.contains_key(&node.address) {
            let attrs = desired[&node.address].attrs.clone();
            wanted.insert(
                node.address.clone(),
                (node.kind, node.provider.clone(), attrs, node.deps.clone()),
            );
        }
    }
    let mut by_provider: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (addr, (_, provider, _, _)) in &wanted {
        by_provider
            .entry(provider.clone())
            .or_default()
            .push(addr.clone());
    }
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (provider_name, addrs) in by_provider {
        let provider: &dyn Provider = match providers.get(&provider_name) {
            Ok(p) => p,
            Err(message) => {
                errors.extend(addrs.iter().map(|a| PlanError {
                    address: a.clone(),
                    message: message.clone(),
                }));
                continue;
            }
        };
        let dep_attrs: Vec<Vec<(Kind, &Attrs)>> = addrs
            .iter()
            .map(|a| {
                wanted[a]
                    .3
                    .iter()
                    .filter_map(|d| wanted.get(d).map(|(k, _, attrs, _)| (*k, attrs)))
                    .collect()
            })
            .collect();
        let targets: Vec<Target> = addrs
            .iter()
            .zip(&dep_attrs)
            .map(|(a, deps)| Target {
                address: a,
                kind: wanted[a].0,
                attrs: &wanted[a].2,
                deps,
            })
            .collect();
        match crate::retry::with_retries(|| provider.read(&targets)).await {
            Ok(found) => {
                for (a, f) in addrs.iter().zip(found) {
                    out.insert(a.clone(), f);
                }
            }
            Err(e) => errors.push(PlanError {
                address: format!("provider.{provider_name}"),
                message: format!("refresh failed: {e}"),
            }),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

pub fn kind_of(name: &str) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| k.as_str() == name)
}

/// Diffs the desired graph against the (refreshed) state.
pub fn diff(
    graph: &Graph,
    desired: &BTreeMap<String, Planned>,
    state: &State,
    current: Option<&BTreeMap<String, Option<Attrs>>>,
    opts: &PlanOptions,
) -> Result<Plan, Vec<PlanError>> {
    let mut changes: BTreeMap<String, Change> = BTreeMap::new();
    let mut errors = Vec::new();
    // Prior attributes: refreshed where we refreshed, recorded otherwise.
    let prior = |addr: &str| -> Option<&Attrs> {
        let recorded = state.resources.get(addr)?;
        if recorded.pending == Some(Pending::Create) {
            return None;
        }
        match current {
            Some(c) => c.get(addr).and_then(Option::as_ref),
            None => Some(&recorded.attributes),
        }
    };
    let order = graph.order();
    let mut replaced_hosts: BTreeSet<String> = BTreeSet::new();
    if !opts.destroy {
        for addr in &order {
            let node = &graph.nodes[addr];
            let planned = &desired[addr];
            let before = prior(addr);
            let recorded = state.resources.get(addr);
            let mut change = Change {
                address: addr.clone(),
                kind: node.kind,
                provider: node.provider.clone(),
                action: Action::NoOp,
                reason: None,
                // Both are filled in below, once the action is known: `before` is moved in and
                // `after` is cloned once, from the side it ends up as (these maps hold rendered
                // config files, and 1,000 deployments make 11,000 of them).
                before: None,
                after: None,
                after_unknown: vec![],
                replace_paths: vec![],
                dependencies: node.deps.clone(),
                prior_dependencies: match recorded {
                    Some(r) if r.dependencies != node.deps => r.dependencies.clone(),
                    _ => vec![],
                },
            };
            if node.mode == Mode::Data {
                match (current.and_then(|c| c.get(addr)), &before) {
                    (Some(None), _) => errors.push(PlanError {
                        address: addr.clone(),
                        message: format!(
                            "input bucket '{}' does not exist; create it and fill it first (e.g. `anycloud bucket upload {} DIR`)",
                            planned.attrs.get("name").and_then(|v| v.as_str()).unwrap_or("?"),
                            planned.attrs.get("name").and_then(|v| v.as_str()).unwrap_or("?"),
                        ),
                    }),
                    (_, Some(b))
                        if recorded.is_some() && attrs_equal(b, &planned.attrs, &planned.computed) => {}
                    _ => change.action = Action::Read,
                }
                if change.action != Action::NoOp {
                    change.before = before.cloned();
                    change.after = Some(planned.attrs.clone());
                }
                changes.insert(addr.clone(), change);
                continue;
            }
            let host_replaced = node
                .host
                .as_ref()
                .is_some_and(|h| replaced_hosts.contains(h));
            let pending = recorded.and_then(|r| r.pending);
            match &before {
                None => {
                    change.action = Action::Create;
                    change.after_unknown = planned.computed.clone();
                    change.reason = match (recorded, pending) {
                        (Some(_), Some(Pending::Create)) => {
                            Some("a previous apply was interrupted while creating it".into())
                        }
                        (Some(_), _) => Some("found missing on refresh".into()),
                        _ => None,
                    };
                }
                Some(b) => {
                    let changed = changed_keys(b, &planned.attrs, &planned.computed);
                    let forcing: Vec<String> = changed
                        .iter()
                        .filter(|k| planned.force_new.contains(k))
                        .cloned()
                        .collect();
                    if host_replaced {
                        change.action = Action::Replace;
                        change.reason = Some(format!(
                            "its VM {} is replaced",
                            node.host.as_deref().unwrap_or("")
                        ));
                        change.after_unknown = planned.computed.clone();
                    } else if !forcing.is_empty() {
                        change.action = Action::Replace;
                        change.replace_paths = forcing;
                        change.after_unknown = planned.computed.clone();
                    } else if !changed.is_empty() || pending.is_some() {
                        change.action = Action::Update;
                        if pending.is_some() && changed.is_empty() {
                            change.reason =
                                Some("a previous apply was interrupted while changing it".into());
                        }
                        // Computed attributes keep their values across an in-place update.
                        let mut after = planned.attrs.clone();
                        for k in &planned.computed {
                            if let Some(v) = b.get(k) {
                                after.insert(k.clone(), v.clone());
                            }
                        }
                        change.after = Some(after);
                    } else {
                        change.action = Action::NoOp;
                    }
                }
            }
            // A no-op carries no attributes: nothing renders or applies them, and a plan of
            // thousands of unchanged resources should cost little more than reading them.
            if change.action != Action::NoOp {
                if change.after.is_none() {
                    change.after = Some(planned.attrs.clone());
                }
                change.before = before.cloned();
            }
            if node.kind == Kind::Vm && matches!(change.action, Action::Replace | Action::Create) {
                replaced_hosts.insert(addr.clone());
            }
            changes.insert(addr.clone(), change);
        }
    }
    // Whatever state holds that the graph does not (or everything, for destroy) goes.
    for (addr, r) in &state.resources {
        if !opts.destroy && graph.nodes.contains_key(addr) {
            continue;
        }
        let Some(kind) = kind_of(&r.kind) else {
            errors.push(PlanError {
                address: addr.clone(),
                message: format!("unknown kind '{}' in state", r.kind),
            });
            continue;
        };
        let gone = current.is_some_and(|c| matches!(c.get(addr), Some(None)));
        changes.insert(
            addr.clone(),
            Change {
                address: addr.clone(),
                kind,
                provider: r.provider.clone(),
                action: Action::Delete,
                reason: if r.attributes.get("_keep_on_destroy")
                    == Some(&serde_json::Value::Bool(true))
                {
                    Some("the bucket and its data are kept".into())
                } else if gone {
                    Some("already gone; only forgotten".into())
                } else {
                    None
                },
                before: Some(r.attributes.clone()),
                after: None,
                after_unknown: vec![],
                replace_paths: vec![],
                dependencies: r.dependencies.clone(),
                prior_dependencies: vec![],
            },
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if !opts.targets.is_empty() {
        let keep = targeted(&changes, opts.targets);
        if keep.is_empty() {
            return Err(vec![PlanError {
                address: opts.targets.join(", "),
                message: "--target matches no resource in the config or the state".into(),
            }]);
        }
        changes.retain(|a, _| keep.contains(a));
    }
    let ordered = plan_order(&order, &changes);
    let changes: Vec<Change> = ordered
        .into_iter()
        .map(|a| changes.remove(&a).expect("known"))
        .collect();
    let mut summary = Summary::default();
    for c in &changes {
        match c.action {
            Action::Create => summary.add += 1,
            Action::Update => summary.change += 1,
            Action::Replace => summary.replace += 1,
            Action::Delete => summary.destroy += 1,
            Action::Read => summary.read += 1,
            Action::NoOp => {}
        }
    }
    Ok(Plan {
        format_version: PLAN_FORMAT_VERSION,
        lineage: state.lineage.clone(),
        serial: state.serial,
        config_digest: String::new(),
        refreshed: current.is_some(),
        targets: opts.targets.to_vec(),
        warnings: graph.warnings.clone(),
        changes,
        summary,
    })
}

/// Targets and everything they depend on (for creates) or that depends on them (deletes).
fn targeted(changes: &BTreeMap<String, Change>, targets: &[String]) -> BTreeSet<String> {
    let matches = |addr: &str| {
        targets
            .iter()
            .any(|t| addr == t || addr.starts_with(&format!("{t}.")))
    };
    let mut keep: BTreeSet<String> = changes.keys().filter(|a| matches(a)).cloned().collect();
    loop {
        let mut grew = false;
        for c in changes.values() {
            if keep.contains(&c.address) && c.action != Action::Delete {
                for d in &c.dependencies {
                    if changes.contains_key(d) && keep.insert(d.clone()) {
                        grew = true;
                    }
                }
            }
            // Whatever goes with a target that goes (a replaced VM's containers, a deleted
            // bucket's users) is targeted too, or it would be left recorded on a host that
            // no longer exists.
            let goes = |a: &Change| matches!(a.action, Action::Delete | Action::Replace);
            if goes(c)
                && !keep.contains(&c.address)
                && c.dependencies
                    .iter()
                    .chain(&c.prior_dependencies)
                    .any(|d| keep.contains(d) && changes.get(d).is_some_and(goes))
            {
                keep.insert(c.address.clone());
                grew = true;
            }
        }
        if !grew {
            return keep;
        }
    }
}

/// Creates and updates in dependency order, then deletes in reverse dependency order.
fn plan_order(graph_order: &[String], changes: &BTreeMap<String, Change>) -> Vec<String> {
    // The graph's own order already puts creates and updates after what they need.
    let forward = graph_order
        .iter()
        .filter(|a| changes.get(*a).is_some_and(|c| c.action != Action::Delete))
        .cloned();
    // Keyed by address, so the list is sorted and unique, as `topo_order_sorted` needs.
    let deletes: Vec<(&str, &[String])> = changes
        .iter()
        .filter(|(_, c)| c.action == Action::Delete)
        .map(|(a, c)| (a.as_str(), c.dependencies.as_slice()))
        .collect();
    let mut reverse = topo_order_sorted(&deletes);
    reverse.reverse();
    forward.chain(reverse).collect()
}

/// The non-computed keys whose values differ (or that only one side has), sorted. Allocates
/// nothing when nothing changed, the common case.
fn changed_keys(before: &Attrs, after: &Attrs, computed: &[String]) -> Vec<String> {
    let mut keys: Vec<String> = after
        .iter()
        .filter(|(k, v)| !computed.contains(k) && before.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    keys.extend(
        before
            .keys()
            .filter(|k| !computed.contains(k) && !after.contains_key(*k))
            .cloned(),
    );
    keys.sort();
    keys
}

fn attrs_equal(a: &Attrs, b: &Attrs, computed: &[String]) -> bool {
    changed_keys(a, b, computed).is_empty()
}

/// Live facts (`Provider::observe`) about every resource in state, for `anycloud status`.
pub async fn observe(
    state: &State,
    providers: &Providers,
) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut by_provider: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for (addr, r) in &state.resources {
        by_provider
            .entry(r.provider.as_str())
            .or_default()
            .push(addr);
    }
    let mut out = BTreeMap::new();
    for (name, addrs) in by_provider {
        let Ok(provider) = providers.get(name) else {
            continue;
        };
        let kinds: Vec<Option<Kind>> = addrs
            .iter()
            .map(|a| kind_of(&state.resources[*a].kind))
            .collect();
        let deps: Vec<Vec<(Kind, &Attrs)>> = addrs
            .iter()
            .map(|a| {
                state.resources[*a]
                    .dependencies
                    .iter()
                    .filter_map(|d| {
                        state
                            .resources
                            .get(d)
                            .and_then(|r| Some((kind_of(&r.kind)?, &r.attributes)))
                    })
                    .collect()
            })
            .collect();
        let targets: Vec<Target> = addrs
            .iter()
            .zip(&kinds)
            .zip(&deps)
            .filter_map(|((a, k), d)| {
                Some(Target {
                    address: a,
                    kind: (*k)?,
                    attrs: &state.resources[*a].attributes,
                    deps: d,
                })
            })
            .collect();
        if let Ok(facts) = provider.observe(&targets).await {
            for (t, f) in targets.iter().zip(facts) {
                out.insert(t.address.to_owned(), f);
            }
        }
    }
    out
}
