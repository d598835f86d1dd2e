//! The anycloud state file (format v1): what exists, as last recorded.
//!
//! Persistence is crash-safe: every write goes to a temp file in the same directory, is
//! fsynced, keeps the previous copy as `.backup` and is renamed over the old file, mode 0600.
//! A lock file beside the state holds the current holder's details.

mod lock;
mod store;

pub use lock::{LockError, LockInfo, StateLock};
pub use store::{load, save, StateError};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const FORMAT_VERSION: u32 = 1;

pub type Attrs = BTreeMap<String, serde_json::Value>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Set once when a state is born; a plan or a lock from another lineage is refused.
    pub lineage: String,
    /// Incremented on every write, so a saved plan can tell the state moved.
    pub serial: u64,
    /// Sorted by address, so diffs of state files are readable.
    pub resources: BTreeMap<String, Resource>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub kind: String,
    pub provider: String,
    #[serde(default)]
    pub attributes: Attrs,
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// An operation that was started and not seen to finish: a crash leaves this behind and
    /// the next plan resolves it (re-running the idempotent create, or the delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pending {
    Create,
    Update,
    Delete,
}

impl State {
    pub fn new() -> State {
        State {
            version: FORMAT_VERSION,
            lineage: uuid::Uuid::new_v4().to_string(),
            serial: 0,
            resources: BTreeMap::new(),
        }
    }
}

impl State {
    /// The state before anything was ever applied: no file yet, so no lineage yet. A plan
    /// made against it stays valid until the first write gives the state its lineage.
    pub fn unborn() -> State {
        State {
            version: FORMAT_VERSION,
            lineage: String::new(),
            serial: 0,
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
