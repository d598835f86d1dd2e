//! `--target`, and the order changes are listed (and applied) in.

use std::collections::{BTreeMap, BTreeSet};

use super::{Action, Change};
use crate::graph::topo_order_sorted;

/// Targets and everything they depend on (for creates) or that depends on them (deletes).
pub(super) fn targeted(changes: &BTreeMap<String, Change>, targets: &[String]) -> BTreeSet<String> {
    let matches = |addr: &str| targets_match(targets, addr);
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

/// Whether `addr` is one of `targets` or under one of them (whole address segments).
pub fn targets_match(targets: &[String], addr: &str) -> bool {
    targets.iter().any(|t| {
        addr.strip_prefix(t.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    })
}

/// Creates and updates in dependency order, then deletes in reverse dependency order.
pub(super) fn plan_order(
    graph_order: &[String],
    changes: &BTreeMap<String, Change>,
) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use anycloud_provider::Kind;

    use super::*;

    fn change(address: &str, action: Action, deps: &[&str]) -> (String, Change) {
        (
            address.to_owned(),
            Change {
                address: address.into(),
                kind: Kind::Bucket,
                provider: "p".into(),
                action,
                reason: None,
                before: None,
                after: None,
                private: None,
                keep_on_destroy: false,
                after_unknown: vec![],
                replace_paths: vec![],
                dependencies: deps.iter().map(|d| d.to_string()).collect(),
                prior_dependencies: vec![],
            },
        )
    }

    #[test]
    fn a_target_takes_what_it_needs_and_a_prefix_matches_whole_segments() {
        let changes: BTreeMap<String, Change> = [
            change("deployment.a.vm", Action::Create, &[]),
            change(
                "deployment.a.container",
                Action::Create,
                &["deployment.a.vm"],
            ),
            change("deployment.ab.vm", Action::Create, &[]),
        ]
        .into();
        let keep = targeted(&changes, &["deployment.a.container".into()]);
        assert_eq!(
            keep.into_iter().collect::<Vec<_>>(),
            vec!["deployment.a.container", "deployment.a.vm"]
        );
        let keep = targeted(&changes, &["deployment.a".into()]);
        assert!(!keep.contains("deployment.ab.vm"), "{keep:?}");
    }

    #[test]
    fn a_replaced_target_takes_what_lives_on_it() {
        let changes: BTreeMap<String, Change> = [
            change("vm", Action::Replace, &[]),
            change("ctr", Action::Replace, &["vm"]),
            change("other", Action::Update, &[]),
        ]
        .into();
        let keep = targeted(&changes, &["vm".into()]);
        assert_eq!(keep.into_iter().collect::<Vec<_>>(), vec!["ctr", "vm"]);
    }

    #[test]
    fn deletes_come_last_in_reverse_dependency_order() {
        let changes: BTreeMap<String, Change> = [
            change("a", Action::Delete, &[]),
            change("b", Action::Delete, &["a"]),
            change("c", Action::Create, &[]),
        ]
        .into();
        assert_eq!(plan_order(&["c".to_owned()], &changes), vec!["c", "b", "a"]);
    }
}
