//! The anycloud state: what exists, as last recorded, and the stores that keep it.
//!
//! - [`State`] is the format (version 2; version 1 files are read and migrated).
//! - [`StateStore`] is the one interface every backend implements: read (with the journal of
//!   an unfinished run replayed) → state and version; write (only over the version read);
//!   lock, unlock, force-unlock by lock id; and a journal that records each operation's
//!   intent and result (a resource record each, whatever the size of the state), folded into
//!   the state when the run ends.
//! - [`LocalStore`] keeps it in a file beside its lock and journal; [`RemoteStore`] in a
//!   cloud's object store, with the store's conditional writes as its lock and fence.
//! - [`conformance`] is the suite every store must pass.

pub mod conformance;
mod format;
mod journal;
mod local;
mod remote;
mod store;

pub use format::{from_bytes, to_bytes, StateError, FORMAT_VERSION};
pub use journal::Entry;
pub use local::LocalStore;
pub use remote::RemoteStore;
pub use store::{LockInfo, Snapshot, StateStore, StoreError, Version};

/// The state in the local file at `path`, its journal replayed, without locking: what a
/// run would start from. (For tests and tools; commands go through a [`StateStore`].)
pub fn load(path: &std::path::Path) -> Result<State, StoreError> {
    LocalStore::load(path)
}

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub type Attrs = BTreeMap<String, serde_json::Value>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Set once when a state is born; a plan or a lock from another lineage is refused.
    pub lineage: String,
    /// Incremented on every write, so a saved plan can tell the state moved.
    pub serial: u64,
    /// In a remote store, the locks whose holders' journal batches this state folds in (its
    /// writer's, and those it replayed): a batch one serial behind written under any other
    /// lock was never folded into it (a force-unlocked holder's fold landed over a newer
    /// holder's batches) and is replayed, not lost. Only the remote store writes and reads
    /// it; a state read from a store never carries it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folded_locks: Vec<String>,
    /// Sorted by address, so diffs of state files are readable.
    pub resources: BTreeMap<String, Resource>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub kind: String,
    pub provider: String,
    #[serde(default)]
    pub attributes: Attrs,
    /// The provider's own bookkeeping, in its own shape (never shown to reviewers).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub private: serde_json::Value,
    /// Destroying it only forgets it: what it holds (a bucket and its data) is kept.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_on_destroy: bool,
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// An operation that was started and not seen to finish: a crash leaves this behind and
    /// the next plan resolves it (re-running the idempotent create, or the delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pending {
    Create,
    Update,
    Delete,
}

impl State {
    /// A state with a lineage of its own, for tests and fixtures.
    pub fn new() -> State {
        let mut s = State::unborn();
        s.ensure_lineage();
        s
    }

    /// The state before anything was ever applied: no file yet, so no lineage yet. A plan
    /// made against it stays valid until the first write gives the state its lineage.
    pub fn unborn() -> State {
        State {
            version: FORMAT_VERSION,
            lineage: String::new(),
            serial: 0,
            folded_locks: Vec::new(),
            resources: BTreeMap::new(),
        }
    }

    /// Gives an unborn state its lineage; called before its first write.
    pub fn ensure_lineage(&mut self) {
        if self.lineage.is_empty() {
            self.lineage = uuid::Uuid::new_v4().to_string();
        }
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}
