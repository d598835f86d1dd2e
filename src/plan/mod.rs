//! Plans: what apply would do to make the state match the config (DESIGN §5).
//!
//! The plan document is plain, versioned data; every rendering (human, markdown) is made
//! from it, and `apply PLANFILE` executes exactly it.
//!
//! - `desired.rs`: each node's desired attributes from its provider, and the preflight;
//! - `refresh.rs`: what exists now (one batched read per provider), and `status`'s facts;
//! - `diff.rs`: desired against current, into changes;
//! - `missing_input.rs`: a missing input bucket located in the config, with a did-you-mean;
//! - `targets.rs`: `--target`, and the order of the changes;
//! - `saved.rs`: what a saved plan must agree on with the plan made again at apply;
//! - `sweeps.rs`: the summary's line per sweep (a `matrix:` deployment's members);
//! - `renames.rs`: a deployment that goes while another comes (a rename) is warned about
//!   the checkpoint it leaves behind.

mod desired;
mod diff;
pub mod images;
mod inputs;
pub mod missing_input;
pub mod placements;
mod refresh;
pub mod renames;
pub mod saved;
pub mod sweeps;
pub(crate) mod targets;

use anycloud_provider::{Attrs, Diagnostic, Kind};
use serde::{Deserialize, Serialize};

pub use desired::{desired, preflight, recall};
pub use diff::diff;
pub use inputs::input_notes;
pub use refresh::{clear_checkpoint, job_log, observe, read_recorded, refresh, Refreshed};
pub use targets::targets_match;

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

impl Summary {
    pub fn of(changes: &[Change]) -> Summary {
        let mut s = Summary::default();
        for c in changes {
            s.count(c.action);
        }
        s
    }

    pub fn count(&mut self, action: Action) {
        match action {
            Action::Create => self.add += 1,
            Action::Update => self.change += 1,
            Action::Replace => self.replace += 1,
            Action::Delete => self.destroy += 1,
            Action::Read => self.read += 1,
            Action::NoOp => {}
        }
    }
}

/// A deployment left out of a plan because what it has could not be read (its machine did
/// not answer): the plan changes nothing of it, and says why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unread {
    pub deployment: String,
    /// The first of its resources that could not be read.
    pub address: String,
    pub error: String,
}

/// A job that has ended, as its container's `job` attribute records it (read from the
/// machine by the refresh).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedJob {
    /// The container's address.
    pub address: String,
    /// `succeeded`, `failed` or `never-started`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub finished_at: String,
    /// Docker's reason it could not start.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_lines: Vec<String>,
    /// What `idle_shutdown` did once it had ended: the machine's own words, read by the
    /// refresh ("the machine stopped itself 10m after the job ended; output verified at …").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub idle_stop: String,
}

impl EndedJob {
    /// The ended job a container's attributes record, if it has ended.
    pub fn of(address: &str, attrs: &Attrs) -> Option<EndedJob> {
        let job = attrs.get("job")?;
        let state = job.get("state")?.as_str()?;
        if !matches!(state, "succeeded" | "failed" | "never-started") {
            return None;
        }
        let text = |k: &str| job.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
        Some(EndedJob {
            address: address.to_owned(),
            state: state.to_owned(),
            exit_code: job.get("exit_code").and_then(|v| v.as_i64()),
            finished_at: text("finished_at"),
            error: text("error"),
            idle_stop: text("idle_stop"),
            last_lines: job
                .get("last_lines")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// What a person reads about it, in a plan: how it ended, then what to do.
    pub fn describe(&self) -> String {
        let deployment = self
            .address
            .strip_prefix("deployment.")
            .and_then(|r| r.split('.').next())
            .unwrap_or(&self.address);
        let at = if self.finished_at.is_empty() {
            String::new()
        } else {
            format!(" at {}", self.finished_at)
        };
        if !self.idle_stop.is_empty() {
            // idle_shutdown has run: its output is in the bucket, verified, and the machine
            // is down (or not ours to stop). Nothing is started again.
            let how = match self.exit_code {
                Some(0) => "finished".to_owned(),
                Some(code) => format!("exited with code {code}"),
                None => "ended".to_owned(),
            };
            return format!(
                "the job of deployment {deployment} {how}{at}; idle_shutdown: {}. Apply does not start it again; `anycloud destroy --target deployment.{deployment}` takes down what is left.",
                self.idle_stop
            );
        }
        match self.state.as_str() {
            "succeeded" => format!(
                "the job of deployment {deployment} finished{at} (exit code 0). Its machine and upload programs still run: `anycloud destroy --target deployment.{deployment}` uploads what is left, verifies it, and stops them."
            ),
            "failed" => format!(
                "the job of deployment {deployment} exited with code {}{at}; apply does not run it again. To run it again: `anycloud apply -replace {}`.",
                self.exit_code.unwrap_or(-1),
                self.address
            ),
            _ => format!(
                "the job of deployment {deployment} never started: {}. Fix the image or the command in the config; apply then replaces it.",
                self.error
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    /// The state this plan was made against: apply refuses it once the state has moved.
    pub lineage: String,
    pub serial: u64,
    pub config_digest: String,
    pub refreshed: bool,
    /// A destroy's plan (`destroy`, `plan -destroy`): it reads nothing and makes nothing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub destroy: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// `-replace`'s addresses: with `targets` and `destroy`, what `apply PLANFILE` makes the
    /// plan again with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replace: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Deployments the refresh could not read: nothing of theirs is in `changes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unread: Vec<Unread>,
    /// Jobs that have ended (succeeded, failed, or never started) and that this plan leaves
    /// as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<EndedJob>,
    /// The config's sweeps: which deployments each `matrix:` made, from which values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sweeps: Vec<crate::config::Sweep>,
    /// Containers `apply --from-scratch` empties the checkpoint of before their job runs
    /// again: their deployment lines say so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_scratch: Vec<String>,
    /// VMs that run elsewhere than their deployment's first place, and why: the story says
    /// so (`placements.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<placements::Moved>,
    pub changes: Vec<Change>,
    pub summary: Summary,
}

#[cfg(test)]
impl Plan {
    /// A refreshed apply plan of `changes` made against an empty state: what unit tests
    /// render and run (each sets, with `..`, what it needs otherwise).
    pub(crate) fn of_changes(changes: Vec<Change>) -> Plan {
        Plan {
            format_version: PLAN_FORMAT_VERSION,
            lineage: String::new(),
            serial: 0,
            config_digest: String::new(),
            refreshed: true,
            destroy: false,
            targets: vec![],
            replace: vec![],
            warnings: vec![],
            unread: vec![],
            jobs: vec![],
            sweeps: vec![],
            from_scratch: vec![],
            placements: vec![],
            summary: Summary::of(&changes),
            changes,
        }
    }
}

impl Plan {
    /// Leaves out every change of the deployments in `unread` (a deployment's resources are
    /// needed only by its own), recording why.
    pub fn leave_out(&mut self, unread: Vec<Unread>) {
        if unread.is_empty() {
            return;
        }
        let prefixes: Vec<String> = unread
            .iter()
            .map(|u| format!("deployment.{}", u.deployment))
            .collect();
        self.changes
            .retain(|c| !targets::targets_match(&prefixes, &c.address));
        self.summary = Summary::of(&self.changes);
        self.unread = unread;
    }

    /// The changes that do something (every rendering shows these, never the no-ops).
    pub fn active(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.action != Action::NoOp)
    }

    pub fn has_changes(&self) -> bool {
        self.active().next().is_some()
    }

    pub fn summary_line(&self) -> String {
        let s = &self.summary;
        if self.destroy {
            return format!("Plan: {} to destroy.", s.destroy);
        }
        // Reads (an input bucket looked at again) change nothing, but a plan of reads alone
        // is not "no changes" either: say what it will do.
        let reads = if s.read > 0 {
            format!(", {} to read", s.read)
        } else {
            String::new()
        };
        format!(
            "Plan: {} to add, {} to change, {} to replace, {} to destroy{reads}.",
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
    /// Addresses (or prefixes) to replace although nothing of theirs changed (`-replace`).
    pub replace: &'a [String],
}
