//! GCP, as declared to the engine (its regions by continent, `providers.gcp`, its naming
//! rules, the shape of its part of the graph) and, in [`GcpProvider`], its verbs over
//! Google's JSON APIs: the continent's Cloud Storage bucket with the deployments' buckets as
//! its top-level prefixes, the deployment's service account and its prefix-conditioned
//! bucket IAM bindings (the grants), and the Compute Engine instance (firewall rule, Spot
//! when asked) where the host layer's steps run over SSH as on every cloud. One module per
//! kind of node.

mod account;
pub mod api;
pub mod auth;
mod binding;
mod compute;
mod limits;
pub mod naming;
mod objects;
pub mod owner;
mod prefix;
pub mod settings;
pub mod state_objects;
mod storage;
mod vm;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use anycloud_host::{ContextCache, SshPool};
use anycloud_provider::declare::cloud_vm;
use anycloud_provider::doc::{Checks, Doc};
use anycloud_provider::{
    Attrs, BucketAccess, BucketRole, Declaration, DeploymentSpec, IdLimit, Kind, NodeSpec, Planned,
    Preflight, Provider, ProviderError, Read, Regions, Result, Shape, Target, Transfer, VmContext,
    VmSpec,
};

use crate::api::Google;
use crate::auth::Credential;
use crate::settings::Settings;

pub const REGIONS: &[(&str, &[&str])] = &[
    (
        "us",
        &[
            "us-central1",
            "us-east1",
            "us-east4",
            "us-east5",
            "us-west1",
            "us-west2",
            "us-west3",
            "us-west4",
            "us-south1",
        ],
    ),
    (
        "eu",
        &[
            "europe-west1",
            "europe-west2",
            "europe-west3",
            "europe-west4",
            "europe-west6",
            "europe-west8",
            "europe-west9",
            "europe-west10",
            "europe-west12",
            "europe-north1",
            "europe-central2",
            "europe-southwest1",
        ],
    ),
    (
        "apac",
        &[
            "asia-east1",
            "asia-east2",
            "asia-northeast1",
            "asia-northeast2",
            "asia-northeast3",
            "asia-south1",
            "asia-south2",
            "asia-southeast1",
            "asia-southeast2",
        ],
    ),
    ("aus", &["australia-southeast1", "australia-southeast2"]),
    (
        "latam",
        &[
            "southamerica-east1",
            "southamerica-west1",
            "northamerica-south1",
        ],
    ),
    (
        "mea",
        &["me-west1", "me-central1", "me-central2", "africa-south1"],
    ),
    (
        "ca",
        &["northamerica-northeast1", "northamerica-northeast2"],
    ),
];

impl Declaration for GcpProvider {
    fn name(&self) -> &'static str {
        "gcp"
    }

    fn regions(&self) -> Regions {
        Regions::Table(REGIONS)
    }

    fn shape(&self) -> Shape {
        Shape {
            identity: true,
            // Bucket IAM bindings conditioned on the deployment's prefixes: Object Viewer on
            // input, Object Admin on output and checkpoint.
            grants: &[
                BucketRole::Input,
                BucketRole::Output,
                BucketRole::Checkpoint,
            ],
            buckets_on_vm: false,
        }
    }

    fn id_limit(&self) -> IdLimit {
        // Instance and firewall names are at most 63 characters.
        IdLimit {
            max: 50,
            because: "the firewall rule anycloud-ssh-{id}",
        }
    }

    /// Prefixes of one bucket: the common rules are all GCS adds for a name without dots,
    /// and a dot is harmless in a prefix.
    fn check_bucket_name(&self, _name: &str) -> Result<(), String> {
        Ok(())
    }

    fn settings_keys(&self) -> &'static [&'static str] {
        settings::KEYS
    }

    fn check_settings(&self, doc: Option<&Doc>, checks: &mut Checks) -> serde_json::Value {
        serde_json::to_value(settings::check(doc, checks)).expect("plain data")
    }

    fn vm_keys(&self) -> &'static [&'static str] {
        anycloud_provider::declare::CLOUD_VM_KEYS
    }

    fn check_vm(&self, vm: Option<&Doc>, cx: VmContext<'_>, checks: &mut Checks) -> VmSpec {
        let mut spec = cloud_vm(vm, cx, checks, Some("gcp"));
        spec.image = anycloud_provider::declare::vm_image(vm, checks, compute::check_image);
        spec
    }

    fn state_backend(&self) -> Option<&'static str> {
        Some("gcs")
    }

    fn check_state(&self, doc: &Doc, checks: &mut Checks) -> serde_json::Value {
        state_objects::check(doc, checks)
    }
}

/// What every verb needs: the client, the settings and the project.
pub(crate) struct Cx<'a> {
    pub g: &'a Google,
    pub s: &'a Settings,
    pub project: String,
    pub policy_locks: &'a PolicyLocks,
}

/// One edit at a time of each bucket's IAM policy from this process: every deployment of a
/// continent edits the same policy, and concurrent read-modify-writes would mostly meet stale
/// etags and start over. Other processes are kept apart by the etags alone.
#[derive(Default)]
pub(crate) struct PolicyLocks(
    std::sync::Mutex<BTreeMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
);

impl PolicyLocks {
    pub fn of(&self, bucket: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        self.0
            .lock()
            .expect("not poisoned")
            .entry(bucket.to_owned())
            .or_default()
            .clone()
    }
}

/// GCP's verbs. Every call goes through one client, which counts them.
pub struct GcpProvider {
    keys_dir: PathBuf,
    settings: OnceLock<Settings>,
    google: OnceLock<Result<Google>>,
    connections: SshPool,
    contexts: ContextCache,
    policy_locks: PolicyLocks,
    /// Where VM creates cut short had moved to (`anycloud_provider::placement`).
    placements: anycloud_provider::placement::Recalled,
}

impl GcpProvider {
    /// `keys_dir` holds the deployments' SSH keys.
    pub fn new(keys_dir: PathBuf) -> GcpProvider {
        GcpProvider {
            keys_dir,
            settings: OnceLock::new(),
            google: OnceLock::new(),
            connections: SshPool::default(),
            contexts: ContextCache::default(),
            policy_locks: PolicyLocks::default(),
            placements: Default::default(),
        }
    }

    fn settings(&self) -> &Settings {
        self.settings.get_or_init(Settings::default)
    }

    fn project(&self) -> Result<String> {
        self.settings().project()
    }

    fn google(&self) -> Result<&Google> {
        self.google
            .get_or_init(|| Google::new(Credential::from_env()))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn cx(&self) -> Result<Cx<'_>> {
        Ok(Cx {
            g: self.google()?,
            s: self.settings(),
            project: self.project()?,
            policy_locks: &self.policy_locks,
        })
    }
}

#[async_trait::async_trait]
impl Provider for GcpProvider {
    fn recall(&self, recorded: &[Target<'_>]) {
        self.placements.recall(recorded);
    }

    fn configure(&self, settings: &serde_json::Value) -> Result<()> {
        let parsed: Settings = if settings.is_null() {
            Settings::default()
        } else {
            anycloud_provider::read_settings(settings)?
        };
        // The first configuration wins: a process plans one config.
        let _ = self.settings.set(parsed);
        Ok(())
    }

    async fn state_objects(
        &self,
        settings: &serde_json::Value,
    ) -> Result<(
        std::sync::Arc<dyn anycloud_provider::objects::ObjectStore>,
        String,
    )> {
        let state: state_objects::StateSettings = anycloud_provider::read_settings(settings)?;
        let objects = state_objects::GcsObjects::open(self.settings(), &state)?;
        Ok((objects, state.key))
    }

    fn remote_calls(&self) -> u64 {
        self.google
            .get()
            .and_then(|g| g.as_ref().ok())
            .map(|g| g.calls())
            .unwrap_or(0)
            + self.connections.round_trips()
    }

    fn connections(&self) -> u64 {
        self.connections.connections()
    }

    fn plan(&self, node: NodeSpec<'_>) -> Result<Planned> {
        let project = self.project()?;
        match node.kind {
            Kind::Storage => Ok(storage::plan(node, &project)),
            Kind::Bucket => prefix::plan(node, &project),
            Kind::Role => Ok(account::plan(node.deployment, &project)),
            Kind::Grant => binding::plan(node, &project),
            Kind::Vm => vm::plan(self, node.deployment),
            hosted => vm::plan_hosted(self, hosted, node.deployment),
        }
    }

    /// A reference with a registry host is asked of that registry (the machine pulls it only
    /// once it is made); one without is not asked (README, "A missing image").
    async fn check_image(&self, image: &str) -> anycloud_provider::ImageCheck {
        anycloud_host::registry::check(image).await
    }

    async fn preflight(&self, targets: &[Target<'_>]) -> Result<Preflight> {
        let cx = self.cx()?;
        let mut errors = storage::preflight(&cx, targets).await?;
        errors.extend(binding::preflight(&cx, targets).await?);
        let notes = vm::preflight(&cx, targets).await?;
        let mut found = Preflight { errors, notes };
        limits::preflight(&cx, targets, &mut found).await?;
        Ok(found)
    }

    /// A constant number of calls whatever the number of deployments: one list of the
    /// project's buckets and one of its service accounts; per continent bucket, one read of
    /// its IAM policy and one list of its prefix markers; one instance list per zone.
    async fn read(&self, targets: &[Target<'_>]) -> Result<Vec<Read>> {
        let cx = self.cx()?;
        let wants = |k: Kind| targets.iter().any(|t| t.kind == k);
        let buckets = if wants(Kind::Storage) || wants(Kind::Bucket) || wants(Kind::Grant) {
            storage::list(&cx).await?
        } else {
            vec![]
        };
        let markers = prefix::markers(&cx, targets, &buckets).await?;
        let accounts = if wants(Kind::Role) {
            account::list(&cx).await?
        } else {
            Default::default()
        };
        let policies = binding::policies(&cx, targets, &buckets).await?;
        let machines = vm::Machines::find(self, targets).await?;
        Ok(targets
            .iter()
            .enumerate()
            .map(|(i, t)| match t.kind {
                Kind::Storage => storage::read(t, &buckets),
                Kind::Bucket => prefix::read(t, &markers),
                Kind::Role => account::read(t, &accounts),
                Kind::Grant => binding::read(t, &policies),
                Kind::Vm => Ok(machines.read_vm(t)),
                _ => machines.read_hosted(i, t),
            })
            .collect())
    }

    async fn create(&self, target: Target<'_>) -> Result<Attrs> {
        let cx = self.cx()?;
        match target.kind {
            Kind::Storage => storage::create(&cx, &target).await,
            Kind::Bucket => prefix::create(&cx, &target).await,
            Kind::Role => account::ensure(&cx, &target).await,
            Kind::Grant => binding::create(&cx, &target).await,
            Kind::Vm => vm::create(self, &target).await,
            _ => vm::apply_hosted(self, &target).await,
        }
    }

    async fn update(&self, prior: &Attrs, target: Target<'_>) -> Result<Attrs> {
        // Every attribute that matters forces a replacement; the rest is recorded as is.
        match target.kind {
            Kind::Storage | Kind::Bucket | Kind::Grant => Ok(target.attrs.clone()),
            Kind::Role => account::ensure(&self.cx()?, &target).await,
            Kind::Vm => vm::update(self, prior, &target).await,
            _ => vm::apply_hosted(self, &target).await,
        }
    }

    async fn delete(&self, target: Target<'_>) -> Result<()> {
        let cx = self.cx()?;
        match target.kind {
            // The continent's bucket is shared: only forgotten.
            Kind::Storage => Ok(()),
            Kind::Bucket => prefix::delete(&cx, &target).await,
            Kind::Role => account::delete(&cx, &target).await,
            Kind::Grant => binding::delete(&cx, &target).await,
            Kind::Vm => vm::delete(self, &target).await,
            _ => vm::delete_hosted(self, &target).await,
        }
    }

    fn buckets(&self) -> Option<&dyn BucketAccess> {
        Some(self)
    }

    async fn observe(&self, targets: &[Target<'_>]) -> Result<Vec<BTreeMap<String, String>>> {
        let machines = vm::Machines::find(self, targets).await?;
        Ok(targets
            .iter()
            .enumerate()
            .map(|(i, t)| machines.observe(i, t))
            .collect())
    }

    async fn job_log(
        &self,
        container: Target<'_>,
        range: anycloud_provider::LogRange<'_>,
    ) -> Result<anycloud_provider::JobLog> {
        vm::job_log(self, &container, range).await
    }

    async fn clear_checkpoint(&self, container: Target<'_>) -> Result<anycloud_provider::Cleared> {
        vm::clear_checkpoint(self, &container).await
    }
}

impl GcpProvider {
    /// Where `bucket` lives: the continent bucket of the deployment that uses it (made for an
    /// upload if the project has none yet: an input is filled before the first apply), and its prefix there.
    async fn locate(
        &self,
        bucket: &str,
        user: Option<&DeploymentSpec>,
        make: bool,
    ) -> Result<(String, String)> {
        let spec = user.ok_or_else(|| {
            ProviderError::permanent(format!(
                "bucket '{bucket}' is used by no GCP deployment of the config: anycloud cannot tell which continent's bucket holds it"
            ))
        })?;
        let (continent, region) = spec
            .buckets
            .values()
            .find(|b| b.name == bucket)
            .map(|b| (b.continent.as_str(), b.region.as_str()))
            .unwrap_or((&spec.continent, &spec.region));
        let name = naming::continent_bucket(continent, &self.project()?);
        if !make {
            return Ok((name, naming::prefix(bucket)));
        }
        storage::ensure(
            &self.cx()?,
            &storage::Bucket {
                name: &name,
                region,
                continent,
                project: spec.project.as_deref(),
                lineage: None,
            },
        )
        .await?;
        Ok((name, naming::prefix(bucket)))
    }
}

#[async_trait::async_trait]
impl BucketAccess for GcpProvider {
    async fn list(
        &self,
        bucket: &str,
        user: Option<&DeploymentSpec>,
    ) -> Result<Vec<(String, u64)>> {
        let (b, prefix) = self.locate(bucket, user, false).await?;
        objects::list(self.google()?, self.settings(), &b, &prefix).await
    }

    async fn upload(
        &self,
        bucket: &str,
        user: Option<&DeploymentSpec>,
        source: &std::path::Path,
        progress: &Transfer,
    ) -> Result<usize> {
        let (b, prefix) = self.locate(bucket, user, true).await?;
        objects::upload(
            self.google()?,
            self.settings(),
            &b,
            &prefix,
            source,
            progress,
        )
        .await
    }

    async fn download(
        &self,
        bucket: &str,
        user: Option<&DeploymentSpec>,
        dest: &std::path::Path,
        progress: &Transfer,
    ) -> Result<usize> {
        let (b, prefix) = self.locate(bucket, user, false).await?;
        objects::download(self.google()?, self.settings(), &b, &prefix, dest, progress).await
    }
}
