//! The contract between the anycloud engine and a cloud.
//!
//! A provider **declares** itself ([`Declaration`]: name, regions and continents, naming
//! limits, settings and `vm:` schemas with located checks, the shape of its part of the
//! graph) and **answers** a handful of verbs for one resource at a time ([`Provider`]: plan the
//! desired attributes from a typed [`NodeSpec`], read (batched), create, update, delete),
//! classifying its failures with an [`ErrorCode`]. It knows nothing of graphs, plans or state
//! files: the engine hands it attributes it returned before and stores what it returns.
//!
//! What every part of anycloud shares lives here too, once: the diagnostic type, the retry
//! policy, whose a cloud object is ([`ownership`]), atomic file writes, sha256, the duration
//! syntax and how much of an HTTP answer is read ([`answers`]).

pub mod answers;
pub mod declare;
pub mod diagnostic;
pub mod digest;
pub mod doc;
pub mod duration;
pub mod error;
pub mod files;
pub mod limits;
pub mod objects;
pub mod ownership;
pub mod placement;
pub mod retry;
pub mod spec;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use declare::{Declaration, IdLimit, Regions, Shape, VmContext};
pub use diagnostic::{Diagnostic, Loc};
pub use error::{ErrorCode, ProviderError, Result};
pub use spec::{
    BucketRole, BucketSpec, ConnectivityCheck, ContainerSpec, DeploymentSpec, NodeSpec, Restart,
    VmSpec,
};

/// Attribute maps are ordered so every rendering of them is byte-stable.
pub type Attrs = BTreeMap<String, serde_json::Value>;

/// What a refresh learnt of one target: its attributes, `None` where it is gone, or why it
/// could not be read (its machine did not answer in time).
pub type Read = Result<Option<Attrs>>;

/// The kinds of node in an anycloud resource graph (DESIGN §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Storage,
    Bucket,
    Role,
    /// The deployment's identity may read (input) or read and write a bucket.
    Grant,
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
    pub const ALL: [Kind; 12] = [
        Kind::Storage,
        Kind::Bucket,
        Kind::Role,
        Kind::Grant,
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
            Kind::Grant => "grant",
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

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
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

/// What the provider makes of a node before anything is called.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Planned {
    /// Every attribute whose value is known now (names, rendered config files, …): shown in
    /// plans, diffed, recorded in state.
    pub attrs: Attrs,
    /// The provider's own bookkeeping (paths it must clean up, where a bucket is made): its
    /// own serde type as JSON, recorded and handed back with the attributes, shown only in
    /// JSON plans. A change of it alone updates the resource in place.
    pub private: serde_json::Value,
    /// Attributes that only exist after apply (ids, addresses); shown as `(known after apply)`.
    pub computed: Vec<String>,
    /// Attributes whose change cannot be made in place.
    pub force_new: Vec<String>,
    /// Destroying it only forgets it: what it holds (a bucket and its data) is kept.
    pub keep_on_destroy: bool,
    /// What a reviewer should know before approving (a job asking for GPUs on a machine
    /// type that has none): shown as the plan's warnings, prefixed with the address.
    pub warnings: Vec<String>,
}

/// A resource's record as a dependency of another.
#[derive(Clone, Copy, Debug)]
pub struct Dep<'a> {
    pub kind: Kind,
    pub attrs: &'a Attrs,
    pub private: &'a serde_json::Value,
}

/// One resource handed to a provider verb.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The engine's address, only for messages.
    pub address: &'a str,
    pub kind: Kind,
    /// The attributes the resource should have (create, update) or had (read, delete).
    pub attrs: &'a Attrs,
    /// The provider's bookkeeping recorded with them ([`Planned::private`]).
    pub private: &'a serde_json::Value,
    /// The recorded resources it depends on.
    pub deps: &'a [Dep<'a>],
    /// The lineage of the state the resource belongs to: what a provider tags the cloud's
    /// objects with, and checks before it adopts, changes or deletes one (an object of
    /// another state's is never touched). Empty only for a state that has never been written,
    /// which records nothing to touch.
    pub lineage: &'a str,
}

impl<'a> Target<'a> {
    /// The attributes of the first dependency of `kind`.
    pub fn dep(&self, kind: Kind) -> Option<&'a Attrs> {
        self.deps.iter().find(|d| d.kind == kind).map(|d| d.attrs)
    }

    /// Every dependency of `kind`.
    pub fn deps_of(&self, kind: Kind) -> impl Iterator<Item = &'a Dep<'a>> {
        self.deps.iter().filter(move |d| d.kind == kind)
    }

    /// The provider's bookkeeping, read back into its type.
    pub fn private<T: DeserializeOwned>(&self) -> Result<T> {
        read_private(self.private)
    }
}

pub fn read_private<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T> {
    serde_json::from_value(value.clone()).map_err(|e| {
        ProviderError::permanent(format!(
            "anycloud's record of this resource is unreadable: {e}"
        ))
    })
}

/// A provider's settings, as its own checks returned them, read back into its type.
pub fn read_settings<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T> {
    serde_json::from_value(value.clone())
        .map_err(|e| ProviderError::new(ErrorCode::Invalid, format!("bad settings: {e}")))
}

pub fn write_private<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("bookkeeping is plain data")
}

/// What [`Provider::preflight`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preflight {
    /// Each fails the plan, printed as it is (a provider's own, exact wording).
    pub errors: Vec<String>,
    /// Shown with the plan.
    pub notes: Vec<String>,
}

/// What [`Provider::check_image`] found of a container image, asked at plan time so that a
/// missing image fails the plan rather than the apply, after the machine is made (and paid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageCheck {
    /// It is there: on the machine's daemon, or in its registry.
    Found,
    /// Not asked (a reference this provider cannot check without credentials or a network
    /// it does not have): nothing to say.
    Unchecked,
    /// It is not there: fails the plan. `message` carries the daemon's or registry's own
    /// words; `help` how to make it there.
    Missing { message: String, help: String },
    /// Could not tell (a private registry, one that did not answer): a warning with the plan.
    Unknown(String),
}

/// Reads and changes a cloud's resources, one node at a time.
#[async_trait::async_trait]
pub trait Provider: Declaration {
    /// Gives the provider its `providers.<name>` settings as its own
    /// [`Declaration::check_settings`] returned them (`null` when absent), once, before any
    /// other verb.
    fn configure(&self, _settings: &serde_json::Value) -> Result<()> {
        Ok(())
    }

    /// The state's records of this provider's resources (`deps` empty; pending creates
    /// included: they may exist), once before a plan asks for any [`Provider::plan`]. A name
    /// a provider derives can change between versions; one a state already recorded (storage
    /// holding data) is kept rather than planned anew; a pending create that made an object
    /// before it could tag it ([`ownership::UntaggedCreates`]) finds it ours. Also called
    /// before a saved plan is applied. No I/O. Default: nothing to keep.
    fn recall(&self, _recorded: &[Target<'_>]) {}

    /// The object store and key the state lives at, from [`Declaration::check_state`]'s
    /// settings (after `configure`, whose credentials and endpoints it uses).
    async fn state_objects(
        &self,
        _settings: &serde_json::Value,
    ) -> Result<(std::sync::Arc<dyn objects::ObjectStore>, String)> {
        Err(ProviderError::permanent(format!(
            "the provider {} keeps no state",
            self.name()
        )))
    }

    /// A node's desired attributes, from its deployment's spec. No I/O.
    fn plan(&self, node: NodeSpec<'_>) -> Result<Planned>;

    /// The current attributes of each target, `None` where it no longer exists. One call for
    /// many targets so a provider can use list APIs instead of one request per resource.
    /// An error of the whole call (the cloud's list failed) fails the refresh; a target's
    /// own error (its machine did not answer) fails only its deployment.
    async fn read(&self, targets: &[Target<'_>]) -> Result<Vec<Read>>;

    /// Creates the resource (idempotently: a retry after a crash must not duplicate it) and
    /// returns its attributes, including the computed ones.
    async fn create(&self, target: Target<'_>) -> Result<Attrs>;

    /// Changes a resource in place to `target.attrs`.
    async fn update(&self, prior: &Attrs, target: Target<'_>) -> Result<Attrs>;

    /// Deletes the resource described by `target.attrs` (its recorded attributes). Never
    /// called for a resource planned with [`Planned::keep_on_destroy`]: the engine only
    /// forgets those.
    async fn delete(&self, target: Target<'_>) -> Result<()>;

    /// Live facts about each target for `anycloud status` (a container's state, when an
    /// upload last ran): shown to people, never diffed or stored.
    async fn observe(&self, targets: &[Target<'_>]) -> Result<Vec<BTreeMap<String, String>>> {
        Ok(vec![BTreeMap::new(); targets.len()])
    }

    /// Read-only checks of the desired resources against the live cloud before any change:
    /// what would make an apply fail half-way (a name taken elsewhere) is an error now; what
    /// a reviewer should know (an existing bucket that will be reused) is a note.
    async fn preflight(&self, _targets: &[Target<'_>]) -> Result<Preflight> {
        Ok(Preflight::default())
    }

    /// Whether the container image `image` can be had where this provider's machines run
    /// it. Asked once per image at plan time, for the deployments whose container is to be
    /// created or replaced. Must answer within seconds. Default: not checked.
    async fn check_image(&self, _image: &str) -> ImageCheck {
        ImageCheck::Unchecked
    }

    /// How many calls this provider has made to the outside so far (API requests, SSH
    /// round trips): `-v` reports a refresh's share, which must not grow per resource.
    fn remote_calls(&self) -> u64 {
        0
    }

    /// How many connections (SSH sign-ins) it has made so far: `-v` reports them, which
    /// must stay near one per machine and key, not one per step.
    fn connections(&self) -> u64 {
        0
    }

    /// Direct access to this cloud's buckets (`anycloud bucket …`), where it has it.
    fn buckets(&self) -> Option<&dyn BucketAccess> {
        None
    }

    /// The output of the job whose container is `container` (a container target, with its
    /// VM among its dependencies): the lines written after `since` (a time as a previous
    /// read's last line carries it), or the last `tail` of them, and whether it has ended.
    /// `anycloud logs` and `anycloud run` follow a job by reading again from the last line.
    async fn job_log(&self, container: Target<'_>, _range: LogRange<'_>) -> Result<JobLog> {
        Err(ProviderError::permanent(format!(
            "{}: provider '{}' cannot read a job's output",
            container.address,
            self.name()
        )))
    }

    /// Empties the checkpoint of the job whose container is `container`, on its machine and
    /// in its bucket, with the job and the checkpoint's upload stopped first (so nothing of
    /// the old run is uploaded again): run again, the job starts from scratch. The engine
    /// replaces the container next.
    async fn clear_checkpoint(&self, container: Target<'_>) -> Result<Cleared> {
        Err(ProviderError::permanent(format!(
            "{}: provider '{}' cannot empty a job's checkpoint",
            container.address,
            self.name()
        )))
    }
}

/// What [`Provider::clear_checkpoint`] found and removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cleared {
    /// Where the checkpoint was (the bucket, as rclone names it on the machine).
    pub remote: String,
}

/// Which of a job's output [`Provider::job_log`] reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogRange<'a> {
    /// Only lines written after this time (RFC 3339 with nanoseconds, UTC).
    pub since: Option<&'a str>,
    /// Only the last this many lines.
    pub tail: Option<usize>,
    /// The upload programs' logs (rclone's own lines, with its timestamps) instead of the
    /// job's output.
    pub uploads: bool,
}

/// What [`Provider::job_log`] read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobLog {
    /// Each line with when the job wrote it (RFC 3339 with nanoseconds, UTC), in order.
    pub lines: Vec<(String, String)>,
    /// Its exit code once it has ended; `None` while it runs or waits to be restarted.
    pub exit_code: Option<i64>,
    /// The host's clock when it read the log (the lines' format): a follower that saw no
    /// line yet reads on from here, not from the start.
    pub read_at: Option<String>,
    /// The read stopped at its size limit: the rest follows from the last line's time (and
    /// `exit_code` waits for it).
    pub more: bool,
}

/// Listing, filling and fetching a bucket from this machine.
#[async_trait::async_trait]
pub trait BucketAccess: Send + Sync {
    /// Every object, relative name and size, sorted by name. `user` is a deployment of the
    /// config that uses the bucket, when one does.
    async fn list(&self, bucket: &str, user: Option<&DeploymentSpec>)
        -> Result<Vec<(String, u64)>>;

    /// Copies a file or a directory tree into the bucket; returns the number of files.
    async fn upload(
        &self,
        bucket: &str,
        user: Option<&DeploymentSpec>,
        source: &Path,
        progress: &Transfer,
    ) -> Result<usize>;

    /// The names of the buckets that exist, for a did-you-mean when a config names one
    /// that does not; empty where the cloud does not say (the default).
    async fn names(&self, _user: Option<&DeploymentSpec>) -> Result<Vec<String>> {
        Ok(vec![])
    }

    /// Copies the bucket's objects into `dest`; returns the number of files.
    async fn download(
        &self,
        bucket: &str,
        user: Option<&DeploymentSpec>,
        dest: &Path,
        progress: &Transfer,
    ) -> Result<usize>;
}

/// How far a transfer is, for a progress bar: told the bytes in all once they are known,
/// then the bytes done as they grow.
pub struct Transfer {
    total: Box<dyn Fn(u64) + Send + Sync>,
    done: Box<dyn Fn(u64) + Send + Sync>,
}

impl Transfer {
    pub fn new(
        total: impl Fn(u64) + Send + Sync + 'static,
        done: impl Fn(u64) + Send + Sync + 'static,
    ) -> Transfer {
        Transfer {
            total: Box::new(total),
            done: Box::new(done),
        }
    }

    /// A transfer nobody watches.
    pub fn unwatched() -> Transfer {
        Transfer::new(|_| {}, |_| {})
    }

    pub fn total(&self, bytes: u64) {
        (self.total)(bytes)
    }

    pub fn done(&self, bytes: u64) {
        (self.done)(bytes)
    }
}

/// The machines of the containers among `targets` that ask for GPUs, once per deployment:
/// its id and the VM's attributes. What each cloud asks of them (does the type have GPUs,
/// which image) is its own.
pub fn gpu_vms<'a>(targets: &[Target<'a>]) -> Result<Vec<(&'a str, &'a Attrs)>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut vms = Vec::new();
    for t in targets {
        if t.attrs.get("gpus").and_then(|g| g.as_bool()) != Some(true) {
            continue;
        }
        let Some(vm) = t.dep(Kind::Vm) else { continue };
        let deployment = attr_str(vm, "deployment")?;
        if seen.insert(deployment) {
            vms.push((deployment, vm));
        }
    }
    Ok(vms)
}

/// Reads a string attribute, with an error naming the resource when it is missing.
pub fn attr_str<'a>(attrs: &'a Attrs, key: &str) -> Result<&'a str> {
    attrs
        .get(key)
        .and_then(|v| v.as_str())
        .ok_or_else(|| ProviderError::permanent(format!("attribute '{key}' is missing")))
}

/// Live output of a long step (an install, a download), for the progress display; and what
/// a long create has made so far, for the state.
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

    pub type Progress = Arc<dyn Fn(&crate::Attrs) + Send + Sync>;

    tokio::task_local! {
        static MADE: Progress;
    }

    /// Runs `step` with what it reports it has made going to `made`.
    pub async fn with_progress<F: Future>(made: Progress, step: F) -> F::Output {
        MADE.scope(made, step).await
    }

    /// Tells the engine what a create has made so far (an instance started, before waiting
    /// for it to boot): these attributes are recorded for the resource at once, so a run
    /// killed before the create returns leaves a record that finds and removes it.
    pub fn made(attrs: &crate::Attrs) {
        let _ = MADE.try_with(|made| made(attrs));
    }
}
