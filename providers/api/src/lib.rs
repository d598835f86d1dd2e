//! The interface between the anycloud engine and a cloud.
//!
//! A provider answers a handful of verbs for one resource at a time — plan the desired
//! attributes, read (batched), create, update, delete — and classifies its errors as
//! retryable or not. It knows nothing of graphs, plans or state files: the engine hands it
//! plain attribute maps and stores what it returns.

pub mod regions;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Attribute maps are ordered so every rendering of them is byte-stable.
pub type Attrs = BTreeMap<String, serde_json::Value>;

/// The kinds of node in an anycloud resource graph (DESIGN §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Storage,
    Bucket,
    Role,
    Vm,
    VmInit,
    Rclone,
    SyncInput,
    SyncCheckpointRestore,
    ServiceOutput,
    ServiceCheckpoint,
    Container,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Storage,
        Kind::Bucket,
        Kind::Role,
        Kind::Vm,
        Kind::VmInit,
        Kind::Rclone,
        Kind::SyncInput,
        Kind::SyncCheckpointRestore,
        Kind::ServiceOutput,
        Kind::ServiceCheckpoint,
        Kind::Container,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Storage => "storage",
            Kind::Bucket => "bucket",
            Kind::Role => "role",
            Kind::Vm => "vm",
            Kind::VmInit => "vm_init",
            Kind::Rclone => "rclone",
            Kind::SyncInput => "sync_input",
            Kind::SyncCheckpointRestore => "sync_checkpoint_restore",
            Kind::ServiceOutput => "service_output",
            Kind::ServiceCheckpoint => "service_checkpoint",
            Kind::Container => "container",
        }
    }

    /// Kinds that live on a VM: replacing the VM replaces them too.
    pub fn is_hosted(self) -> bool {
        matches!(
            self,
            Kind::VmInit
                | Kind::Rclone
                | Kind::SyncInput
                | Kind::SyncCheckpointRestore
                | Kind::ServiceOutput
                | Kind::ServiceCheckpoint
                | Kind::Container
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the provider makes of a node's inputs before anything is called.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Planned {
    /// Every attribute whose value is known now (names, rendered config files, …).
    pub attrs: Attrs,
    /// Attributes that only exist after apply (ids, addresses); shown as `(known after apply)`.
    pub computed: Vec<String>,
    /// Attributes whose change cannot be made in place.
    pub force_new: Vec<String>,
}

/// One resource handed to a provider verb.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The engine's address, only for messages.
    pub address: &'a str,
    pub kind: Kind,
    /// The attributes the resource should have (create, update) or had (read, delete).
    pub attrs: &'a Attrs,
    /// The recorded attributes of the resources it depends on, by kind.
    pub deps: &'a [(Kind, &'a Attrs)],
}

impl Target<'_> {
    pub fn dep(&self, kind: Kind) -> Option<&Attrs> {
        self.deps.iter().find(|(k, _)| *k == kind).map(|(_, a)| *a)
    }
}

/// A provider failure: the engine retries retryable ones with capped backoff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderError {
    pub message: String,
    pub retryable: bool,
}

impl ProviderError {
    pub fn permanent(message: impl Into<String>) -> Self {
        ProviderError {
            message: message.into(),
            retryable: false,
        }
    }

    pub fn retryable(message: impl Into<String>) -> Self {
        ProviderError {
            message: message.into(),
            retryable: true,
        }
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProviderError {}

pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// What [`Provider::preflight`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preflight {
    /// Each fails the plan, printed as it is (a provider's own, exact wording).
    pub errors: Vec<String>,
    /// Shown with the plan.
    pub notes: Vec<String>,
}

/// Reads and changes a cloud's resources, one node at a time.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// The name used in `provider:` and in state.
    fn name(&self) -> &'static str;

    /// Turns a node's inputs (from the config) into its desired attributes. No I/O.
    fn plan(&self, kind: Kind, inputs: &Attrs) -> Result<Planned>;

    /// The current attributes of each target, `None` where it no longer exists. One call for
    /// many targets so a provider can use list APIs instead of one request per resource.
    async fn read(&self, targets: &[Target<'_>]) -> Result<Vec<Option<Attrs>>>;

    /// Creates the resource (idempotently: a retry after a crash must not duplicate it) and
    /// returns its attributes, including the computed ones.
    async fn create(&self, target: Target<'_>) -> Result<Attrs>;

    /// Changes a resource in place to `target.attrs`.
    async fn update(&self, prior: &Attrs, target: Target<'_>) -> Result<Attrs>;

    /// Deletes the resource described by `target.attrs` (its recorded attributes).
    async fn delete(&self, target: Target<'_>) -> Result<()>;

    /// Live facts about each target for `anycloud status` (a container's state, when an
    /// upload last ran): shown to people, never diffed or stored.
    async fn observe(&self, targets: &[Target<'_>]) -> Result<Vec<BTreeMap<String, String>>> {
        Ok(vec![BTreeMap::new(); targets.len()])
    }

    /// The config's `providers.<name>` section (as JSON; `null` when absent), given once
    /// before any other verb. Checked by the config loader already.
    fn configure(&self, _settings: &serde_json::Value) -> Result<()> {
        Ok(())
    }

    /// Read-only checks of the desired resources against the live cloud before any change:
    /// what would make an apply fail half-way (a name taken elsewhere) is an error now; what
    /// a reviewer should know (an existing bucket that will be reused) is a note.
    async fn preflight(&self, _targets: &[Target<'_>]) -> Result<Preflight> {
        Ok(Preflight::default())
    }

    /// How many calls this provider has made to the outside so far (API requests, SSH
    /// round trips): `-v` reports a refresh's share, which must not grow per resource.
    fn remote_calls(&self) -> u64 {
        0
    }
}

/// Reads a string attribute, with an error naming the resource when it is missing.
pub fn attr_str<'a>(attrs: &'a Attrs, key: &str) -> Result<&'a str> {
    attrs
        .get(key)
        .and_then(|v| v.as_str())
        .ok_or_else(|| ProviderError::permanent(format!("attribute '{key}' is missing")))
}

/// Live output of a long step (an install, a download), for the progress display.
pub mod output {
    use std::future::Future;
    use std::sync::Arc;

    pub type Sink = Arc<dyn Fn(&str) + Send + Sync>;

    tokio::task_local! {
        static SINK: Sink;
    }

    /// Runs `step` with its output lines going to `sink`.
    pub async fn with_sink<F: Future>(sink: Sink, step: F) -> F::Output {
        SINK.scope(sink, step).await
    }

    /// Reports one line of a step's output; a no-op where nobody listens.
    pub fn line(text: &str) {
        let _ = SINK.try_with(|sink| sink(text));
    }
}
