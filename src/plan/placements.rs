//! VMs that run elsewhere than their deployment's first place: a create that met no
//! capacity moved them (`anycloud_provider::placement`) and recorded where and why in the
//! VM's `placement` attribute. The plan carries them (`Plan::placements`) so its story says
//! so while nothing changes; a VM this plan replaces or deletes is left out (its successor
//! tries every place again).

use std::collections::BTreeMap;

use anycloud_provider::placement::{Placement, ATTRIBUTE};
use anycloud_provider::{Attrs, Kind};
use anycloud_state::State;
use serde::{Deserialize, Serialize};

use super::{Action, Change};

/// A VM not in its deployment's first place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    /// The VM's address.
    pub address: String,
    pub placement: Placement,
}

/// The moved VMs of the state, as refreshed where the plan refreshed, in address order.
pub fn moved(
    state: &State,
    current: Option<&BTreeMap<String, Option<Attrs>>>,
    changes: &[Change],
) -> Vec<Moved> {
    let goes = |address: &str| {
        changes.iter().any(|c| {
            c.address == address
                && matches!(c.action, Action::Replace | Action::Delete | Action::Create)
        })
    };
    state
        .resources
        .iter()
        .filter(|(_, r)| {
            r.kind == Kind::Vm.as_str()
                && r.pending.is_none()
                && r.attributes.contains_key(ATTRIBUTE)
        })
        .filter(|(address, _)| !goes(address))
        .filter_map(|(address, r)| {
            let attrs = match current {
                Some(c) => c.get(address.as_str())?.as_ref()?,
                None => &r.attributes,
            };
            let placement = Placement::of(attrs)?;
            placement.reason.is_some().then(|| Moved {
                address: address.clone(),
                placement,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use anycloud_state::{Pending, Resource};
    use serde_json::json;

    use super::*;

    fn vm(placement: serde_json::Value, pending: Option<Pending>) -> Resource {
        Resource {
            kind: "vm".into(),
            provider: "cloud".into(),
            attributes: serde_json::from_value(json!({ "placement": placement })).unwrap(),
            private: serde_json::Value::Null,
            keep_on_destroy: false,
            dependencies: vec![],
            pending,
        }
    }

    fn change(address: &str, action: Action) -> Change {
        Change {
            address: address.into(),
            kind: Kind::Vm,
            provider: "cloud".into(),
            action,
            reason: None,
            before: None,
            after: None,
            private: None,
            keep_on_destroy: false,
            after_unknown: vec![],
            replace_paths: vec![],
            dependencies: vec![],
            prior_dependencies: vec![],
        }
    }

    /// Only a VM that moved, exists, and stays in this plan is said to run elsewhere.
    #[test]
    fn a_moved_vm_is_named_unless_first_placed_pending_or_replaced() {
        let away = json!({"region": "us-east-2", "zone": "us-east-2b", "reason": "us-east-1a: X"});
        let first = json!({"region": "us-east-1", "zone": "us-east-1a"});
        let mut state = State::default();
        for (address, r) in [
            ("deployment.a.vm", vm(away.clone(), None)),
            ("deployment.b.vm", vm(first, None)),
            ("deployment.c.vm", vm(away.clone(), Some(Pending::Create))),
            ("deployment.d.vm", vm(away.clone(), None)),
        ] {
            state.resources.insert(address.into(), r);
        }
        let changes = [change("deployment.d.vm", Action::Replace)];
        let found = moved_vms(&state, &changes);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].address, "deployment.a.vm");
        assert_eq!(found[0].placement.zone, "us-east-2b");
        // Refreshed: a VM found gone says nothing.
        let current = BTreeMap::from([("deployment.a.vm".to_owned(), None)]);
        assert!(moved(&state, Some(&current), &changes).is_empty());
    }

    fn moved_vms(state: &State, changes: &[Change]) -> Vec<Moved> {
        moved(state, None, changes)
    }
}
