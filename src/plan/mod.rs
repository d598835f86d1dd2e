//! Plans: what apply would do to make the state match the config (DESIGN §5).
//!
//! The plan document is plain, versioned data; every rendering (human, markdown) is made
//! from it, and `apply PLANFILE` executes exactly it.
//!
//! - `desired.rs`: each node's desired attributes from its provider, and the preflight;
//! - `refresh.rs`: what exists now (one batched read per provider), and `status`'s facts;
//! - `diff.rs`: desired against current, into changes;
//! - `targets.rs`: `--target`, and the order of the changes.

mod desired;
mod diff;
mod refresh;
mod targets;

use anycloud_provider::{Attrs, Diagnostic, Kind};
use serde::{Deserialize, Serialize};

pub use desired::{desired, preflight};
pub use diff::diff;
pub use refresh::{observe, refresh};

pub const PLAN_FORMAT_VERSION: u32 = 2;

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
    /// The provider's bookkeeping to record with `after` (never rendered for people).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<serde_json::Value>,
    /// Destroying it only forgets it: a bucket and its data are kept.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_on_destroy: bool,
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

fn is_false(b: &bool) -> bool {
    !*b
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

/// A problem found while planning, at a resource address: the one diagnostic type.
pub type PlanError = Diagnostic;

pub struct PlanOptions<'a> {
    pub refresh: bool,
    pub targets: &'a [String],
    pub destroy: bool,
}
