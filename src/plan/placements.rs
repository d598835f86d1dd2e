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
