//! `anycloud.yaml`: parsed with locations, checked completely before anything is called.
//!
//! - `raw.rs`: the config as written;
//! - `load.rs`: reading the file and turning the YAML parser's errors into diagnostics;
//! - `every_error.rs`: every structural error in one run (each deployment parsed alone);
//! - `deployment.rs`: one deployment's checks (provider, region, `vm:` through the
//!   provider's declaration, container, buckets, intervals);
//! - `matrix.rs`: sweeps, a deployment's `matrix:` expanded into one deployment per
//!   combination of values, before the checks (which see only ordinary deployments);
//! - `buckets.rs`: the checks across deployments;
//! - `names.rs`: the naming rules every cloud shares;
//! - `yaml_limits.rs`: what the YAML parser may spend, sized to the file (alias bombs
//!   bounded, honest large files not).
//!
//! Everything a provider owns (its settings, its `vm:` keys, its regions and naming limits)
//! is checked through its [`anycloud_provider::Declaration`]: this module names no cloud.

mod buckets;
mod deployment;
mod every_error;
pub(crate) mod load;
mod matrix;
mod names;
mod raw;
mod unknown_keys;
pub mod yaml_limits;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anycloud_provider::doc::Checks;
use anycloud_provider::{DeploymentSpec, Diagnostic, Loc};

pub use load::{at_image, digest, load, load_head, parse};
pub use matrix::{Sweep, SweepMember, MAX_MEMBERS};
pub use names::check_bucket_name;

use crate::registry::Providers;

/// A config problem: the one diagnostic type, located in the file.
pub type ConfigError = Diagnostic;

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub path: PathBuf,
    /// sha256 of the file's bytes: a saved plan records it and refuses a changed config.
    pub digest: String,
    pub project: Option<String>,
    /// Every provider's settings as its own checks returned them, handed to it as they are
    /// ([`anycloud_provider::Provider::configure`]).
    pub provider_settings: BTreeMap<String, serde_json::Value>,
    /// Sorted by id; shared with the graph's nodes (a sweep's specs hold most of its bytes).
    pub deployments: Vec<Arc<DeploymentSpec>>,
    /// The sweeps the deployments came from (their members are among `deployments`, as
    /// ordinary deployments); for the plan's summary.
    pub sweeps: Vec<Sweep>,
    /// Where each deployment's `buckets.input` is written, by deployment id: a plan that
    /// finds the bucket missing points there.
    pub input_at: BTreeMap<String, Loc>,
    /// `state:`: the state in a cloud's object store; `None` keeps it in the local file.
    pub state: Option<StateBackend>,
}

/// `state: { <backend>: {…} }`, checked by the provider that offers the backend.
#[derive(Clone, Debug, PartialEq)]
pub struct StateBackend {
    /// The provider whose object store keeps it (`aws`).
    pub provider: &'static str,
    /// The key under `state:` (`s3`).
    pub backend: &'static str,
    /// What the provider's `check_state` returned, for its `state_objects`.
    pub settings: serde_json::Value,
}

/// Collects every problem of one config, each at its place in the file.
struct Checker<'a> {
    registry: &'a Providers,
    /// Shared with the providers' own checks (their diagnostics land in it too).
    checks: Checks,
    /// Every bucket a deployment names, for the checks across deployments.
    buckets: Vec<buckets::BucketUse>,
}

impl Checker<'_> {
    fn at(&mut self, at: Loc, message: impl Into<String>, help: Option<String>) {
        self.checks.error(at, message, help);
    }

    fn errors(&self) -> usize {
        self.checks.diagnostics.len()
    }
}

/// The directory relative paths in the config are relative to.
fn base_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}
