//! Desired against current: create, update in place, replace, delete, no-op or read for
//! every node, replacement forced by a provider's `force_new` attributes and carried from a
//! VM to everything on it, pending operations of a crashed apply resolved.

use std::collections::{BTreeMap, BTreeSet};

use anycloud_provider::{Attrs, Diagnostic, Kind, Planned};
use anycloud_state::{Pending, State};

use super::targets::{plan_order, targeted, targets_match};
use super::{Action, Change, EndedJob, Plan, PlanOptions, Summary, PLAN_FORMAT_VERSION};
use crate::graph::{Graph, Mode};

/// Diffs the desired graph against the (refreshed) state.
pub fn diff(
    graph: &Graph,
    desired: &BTreeMap<String, Planned>,
    state: &State,
    current: Option<&BTreeMap<String, Option<Attrs>>>,
    opts: &PlanOptions,
) -> Result<Plan, Vec<Diagnostic>> {
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
                private: None,
                keep_on_destroy: planned.keep_on_destroy,
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
                    (Some(None), _) => errors.push(Diagnostic::of(
                        addr.clone(),
                        format!(
                            "input bucket '{}' does not exist; create it and fill it first",
                            planned
                                .attrs
                                .get("name")
                                .and_then(|v| v.as_str())
                                .unwrap_or("?"),
                        ),
                    )),
                    (_, Some(b))
                        if recorded.is_some()
                            && changed_keys(b, &planned.attrs, &planned.computed).is_empty() => {}
                    _ => change.action = Action::Read,
                }
                if change.action == Action::NoOp {
                    change.keep_on_destroy = false;
                } else {
                    change.before = before.cloned();
                    change.after = Some(planned.attrs.clone());
                    change.private = Some(planned.private.clone());
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
                            Some("a previous apply failed or was stopped while creating it".into())
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
                    let bookkeeping_moved =
                        recorded.is_some_and(|r| !equivalent(&r.private, &planned.private));
                    let asked = replaceable(node.kind) && targets_match(opts.replace, addr);
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
                    } else if asked {
                        change.action = Action::Replace;
                        change.reason = Some("replacement asked for with -replace".into());
                        change.after_unknown = planned.computed.clone();
                    } else if !changed.is_empty() || pending.is_some() || bookkeeping_moved {
                        change.action = Action::Update;
                        if changed.is_empty() {
                            change.reason = Some(if pending.is_some() {
                                "a previous apply failed or was stopped while changing it".into()
                            } else {
                                "what anycloud records about it for itself changes".into()
                            });
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
            if change.action == Action::NoOp {
                change.keep_on_destroy = false;
            } else {
                if change.after.is_none() {
                    change.after = Some(planned.attrs.clone());
                }
                change.before = before.cloned();
                change.private = Some(planned.private.clone());
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
        let Some(kind) = Kind::parse(&r.kind) else {
            errors.push(Diagnostic::of(
                addr.clone(),
                format!("unknown kind '{}' in state", r.kind),
            ));
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
                reason: if r.keep_on_destroy {
                    Some("the bucket and its data are kept".into())
                } else if gone {
                    Some("already gone; only forgotten".into())
                } else {
                    None
                },
                before: Some(r.attributes.clone()),
                after: None,
                private: None,
                keep_on_destroy: r.keep_on_destroy,
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
    for r in opts.replace {
        let made = |(a, n): (&String, &crate::graph::Node)| {
            replaceable(n.kind)
                && targets_match(std::slice::from_ref(r), a)
                && state.resources.contains_key(a)
        };
        if !graph.nodes.iter().any(made) {
            let hint = anycloud_provider::diagnostic::did_you_mean(
                anycloud_provider::diagnostic::suggest(
                    r,
                    state.resources.keys().map(String::as_str),
                ),
            )
            .map(|h| format!("; {h}"))
            .unwrap_or_default();
            return Err(vec![Diagnostic::of(
                r.clone(),
                format!("-replace matches no resource that the config has and the state records (buckets and storage are never replaced: their data would go){hint}"),
            )]);
        }
    }
    if !opts.targets.is_empty() {
        let keep = targeted(&changes, opts.targets);
        let known = graph
            .nodes
            .keys()
            .chain(state.resources.keys())
            .any(|a| targets_match(opts.targets, a));
        if !known {
            let all: Vec<&str> = graph
                .nodes
                .keys()
                .chain(state.resources.keys())
                .map(String::as_str)
                .collect();
            let mut message = "--target matches no resource in the config or the state".to_owned();
            if let Some(hint) = opts.targets.iter().find_map(|t| {
                anycloud_provider::diagnostic::did_you_mean(anycloud_provider::diagnostic::suggest(
                    t,
                    all.iter().copied(),
                ))
            }) {
                message.push_str(&format!("; {hint}"));
            }
            return Err(vec![Diagnostic::of(opts.targets.join(", "), message)]);
        }
        changes.retain(|a, _| keep.contains(a));
    }
    // Jobs that ended and stay as they are: the plan says how they ended.
    let jobs = changes
        .values()
        .filter(|c| c.kind == Kind::Container && c.action == Action::NoOp)
        .filter_map(|c| EndedJob::of(&c.address, prior(&c.address)?))
        .collect();
    let ordered = plan_order(&order, &changes);
    let changes: Vec<Change> = ordered
        .into_iter()
        .map(|a| changes.remove(&a).expect("known"))
        .collect();
    let summary = Summary::of(&changes);
    Ok(Plan {
        format_version: PLAN_FORMAT_VERSION,
        lineage: state.lineage.clone(),
        serial: state.serial,
        config_digest: String::new(),
        refreshed: current.is_some(),
        destroy: opts.destroy,
        targets: opts.targets.to_vec(),
        replace: opts.replace.to_vec(),
        warnings: vec![],
        unread: vec![],
        jobs,
        sweeps: vec![],
        from_scratch: vec![],
        placements: vec![],
        changes,
        summary,
    })
}

/// What `-replace` may replace: anything but what holds data.
fn replaceable(kind: Kind) -> bool {
    !matches!(kind, Kind::Bucket | Kind::Storage)
}

/// The non-computed keys whose values differ (or that only one side has), sorted. Allocates
/// nothing when nothing changed, the common case.
pub(super) fn changed_keys(before: &Attrs, after: &Attrs, computed: &[String]) -> Vec<String> {
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

/// Bookkeeping equality where an absent field, `null` and an empty list or map mean the same
/// (so a record written by an older anycloud, or a default left out, is no change).
fn equivalent(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    fn empty(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.values().all(empty),
            _ => false,
        }
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.keys()
                .chain(y.keys())
                .all(|k| match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => equivalent(p, q),
                    (Some(v), None) | (None, Some(v)) => empty(v),
                    (None, None) => true,
                })
        }
        _ if empty(a) && empty(b) => true,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use anycloud_provider::{BucketRole, DeploymentSpec};
    use anycloud_state::Resource;
    use serde_json::json;

    use super::*;
    use crate::graph::Node;

    fn spec() -> Arc<DeploymentSpec> {
        Arc::new(DeploymentSpec {
            id: "d".into(),
            provider: "p".into(),
            project: None,
            region: "r".into(),
            continent: "c".into(),
            vm: Default::default(),
            container: Default::default(),
            buckets: Default::default(),
            sync_interval_secs: 60,
            idle_shutdown_secs: None,
            check: Default::default(),
        })
    }

    fn node(address: &str, kind: Kind, deps: &[&str], host: Option<&str>) -> Node {
        Node {
            address: address.into(),
            kind,
            provider: "p".into(),
            mode: Mode::Managed,
            deployment: spec(),
            bucket: (kind == Kind::Bucket).then_some(BucketRole::Output),
            deps: deps.iter().map(|d| d.to_string()).collect(),
            host: host.map(String::from),
        }
    }

    fn planned(attrs: serde_json::Value, force_new: &[&str]) -> Planned {
        Planned {
            attrs: serde_json::from_value(attrs).unwrap(),
            force_new: force_new.iter().map(|s| s.to_string()).collect(),
            ..Planned::default()
        }
    }

    fn recorded(attrs: serde_json::Value, deps: &[&str]) -> Resource {
        Resource {
            kind: String::new(),
            provider: "p".into(),
            attributes: serde_json::from_value(attrs).unwrap(),
            private: serde_json::Value::Null,
            keep_on_destroy: false,
            dependencies: deps.iter().map(|d| d.to_string()).collect(),
            pending: None,
        }
    }

    fn plan_of(
        nodes: Vec<Node>,
        desired: Vec<(&str, Planned)>,
        state: Vec<(&str, Kind, Resource)>,
        destroy: bool,
    ) -> Plan {
        let graph = Graph {
            nodes: nodes.into_iter().map(|n| (n.address.clone(), n)).collect(),
        };
        let desired = desired
            .into_iter()
            .map(|(a, p)| (a.to_owned(), p))
            .collect();
        let mut s = State::new();
        for (a, kind, mut r) in state {
            r.kind = kind.as_str().into();
            s.resources.insert(a.into(), r);
        }
        diff(
            &graph,
            &desired,
            &s,
            None,
            &PlanOptions {
                refresh: false,
                targets: &[],
                destroy,
                replace: &[],
            },
        )
        .unwrap()
    }

    fn action(plan: &Plan, address: &str) -> Action {
        plan.changes
            .iter()
            .find(|c| c.address == address)
            .map(|c| c.action)
            .unwrap_or_else(|| panic!("no change for {address}"))
    }

    #[test]
    fn a_forcing_change_replaces_and_the_vm_takes_what_it_hosts_with_it() {
        let plan = plan_of(
            vec![
                node("vm", Kind::Vm, &[], None),
                node("ctr", Kind::Container, &["vm"], Some("vm")),
                node("bucket", Kind::Bucket, &[], None),
            ],
            vec![
                ("vm", planned(json!({"type": "big"}), &["type"])),
                ("ctr", planned(json!({"image": "x"}), &[])),
                (
                    "bucket",
                    planned(json!({"name": "b", "note": "new"}), &["name"]),
                ),
            ],
            vec![
                ("vm", Kind::Vm, recorded(json!({"type": "small"}), &[])),
                (
                    "ctr",
                    Kind::Container,
                    recorded(json!({"image": "x"}), &["vm"]),
                ),
                (
                    "bucket",
                    Kind::Bucket,
                    recorded(json!({"name": "b", "note": "old"}), &[]),
                ),
            ],
            false,
        );
        assert_eq!(action(&plan, "vm"), Action::Replace);
        assert_eq!(action(&plan, "ctr"), Action::Replace);
        assert_eq!(
            plan.changes
                .iter()
                .find(|c| c.address == "ctr")
                .unwrap()
                .reason
                .as_deref(),
            Some("its VM vm is replaced")
        );
        assert_eq!(action(&plan, "bucket"), Action::Update);
        assert_eq!(plan.summary.replace, 2);
        assert_eq!(plan.summary.change, 1);
    }

    #[test]
    fn what_the_config_dropped_is_deleted_after_what_depends_on_it() {
        let plan = plan_of(
            vec![],
            vec![],
            vec![
                ("vm", Kind::Vm, recorded(json!({}), &[])),
                ("ctr", Kind::Container, recorded(json!({}), &["vm"])),
            ],
            false,
        );
        let order: Vec<&str> = plan.changes.iter().map(|c| c.address.as_str()).collect();
        assert_eq!(order, vec!["ctr", "vm"]);
        assert!(plan.changes.iter().all(|c| c.action == Action::Delete));
    }

    #[test]
    fn an_unchanged_resource_is_a_no_op_without_attributes_and_bookkeeping_moves_update_it() {
        let mut moved = planned(json!({"a": 1}), &[]);
        moved.private = json!({"flush": [["/mnt/output", "r:b"]]});
        let mut same = planned(json!({"a": 1}), &[]);
        same.private = json!({"flush": []});
        let plan = plan_of(
            vec![
                node("x", Kind::Vm, &[], None),
                node("y", Kind::Vm, &[], None),
            ],
            vec![("x", moved), ("y", same)],
            vec![
                ("x", Kind::Vm, recorded(json!({"a": 1}), &[])),
                ("y", Kind::Vm, recorded(json!({"a": 1}), &[])),
            ],
            false,
        );
        assert_eq!(action(&plan, "x"), Action::Update);
        let y = plan.changes.iter().find(|c| c.address == "y").unwrap();
        assert_eq!(y.action, Action::NoOp, "an empty list is no bookkeeping");
        assert!(y.before.is_none() && y.after.is_none());
    }

    #[test]
    fn destroy_deletes_everything_and_kept_resources_are_only_forgotten() {
        let mut kept = recorded(json!({"name": "b"}), &[]);
        kept.keep_on_destroy = true;
        let plan = plan_of(
            vec![node("bucket", Kind::Bucket, &[], None)],
            vec![("bucket", planned(json!({"name": "b"}), &[]))],
            vec![("bucket", Kind::Bucket, kept)],
            true,
        );
        let c = &plan.changes[0];
        assert_eq!(c.action, Action::Delete);
        assert!(c.keep_on_destroy);
        assert_eq!(
            c.reason.as_deref(),
            Some("the bucket and its data are kept")
        );
    }

    #[test]
    fn an_interrupted_create_is_created_again() {
        let mut pending = recorded(json!({"a": 1}), &[]);
        pending.pending = Some(Pending::Create);
        let plan = plan_of(
            vec![node("x", Kind::Vm, &[], None)],
            vec![("x", planned(json!({"a": 1}), &[]))],
            vec![("x", Kind::Vm, pending)],
            false,
        );
        assert_eq!(action(&plan, "x"), Action::Create);
        assert_eq!(
            plan.changes[0].reason.as_deref(),
            Some("a previous apply failed or was stopped while creating it")
        );
    }

    #[test]
    fn changed_keys_are_sorted_and_skip_computed_ones() {
        let before: Attrs = serde_json::from_value(json!({"a": 1, "b": 2, "id": "x"})).unwrap();
        let after: Attrs = serde_json::from_value(json!({"b": 3, "c": 4})).unwrap();
        assert_eq!(
            changed_keys(&before, &after, &["id".into()]),
            vec!["a", "b", "c"]
        );
    }
}
