//! AWS: S3 buckets by continent, an IAM role per deployment with a bucket-policy statement
//! per bucket it writes (the grants), EC2 VMs (spot when asked) reached over SSH, where the
//! VM steps of `anycloud-host` run as on every cloud. One module per kind of node.
//!
//! Every call also works against S3/IAM/EC2-compatible endpoints: the standard
//! `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` variables, or `providers.aws.endpoints`.

mod bucket;
pub mod clients;
pub mod ec2;
mod errors;
mod grant;
pub mod iam;
mod limits;
pub mod owner;
pub mod regions;
mod role;
pub mod s3;
pub mod settings;
pub mod state_objects;
pub mod transfer;
mod vm;
mod vm_host;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use anycloud_host::{ContextCache, SshPool};
use anycloud_provider::doc::{Checks, Doc};
use anycloud_provider::{
    Attrs, BucketAccess, BucketRole, Declaration, DeploymentSpec, IdLimit, Kind, NodeSpec, Planned,
    Preflight, Provider, ProviderError, Read, Regions, Result, Shape, Target, Transfer, VmContext,
    VmSpec,
};

use crate::clients::Clients;
use crate::settings::Settings;

pub use bucket::continent_error;

pub struct AwsProvider {
    keys_dir: PathBuf,
    clients: OnceLock<Clients>,
    connections: SshPool,
    contexts: ContextCache,
    /// One RunInstances client token per VM being created, kept across the retries of its
    /// create so that a retry whose first answer was lost gets the same instance back.
    client_tokens: std::sync::Mutex<BTreeMap<String, String>>,
    /// Buckets a create made and may not have tagged (CreateBucket takes no tags).
    untagged: anycloud_provider::ownership::UntaggedCreates,
    /// Where VM creates cut short had moved to (`anycloud_provider::placement`).
    placements: anycloud_provider::placement::Recalled,
}

impl AwsProvider {
    pub fn new(keys_dir: PathBuf) -> AwsProvider {
        AwsProvider {
            keys_dir,
            clients: OnceLock::new(),
            connections: SshPool::default(),
            contexts: ContextCache::default(),
            client_tokens: Default::default(),
            untagged: Default::default(),
            placements: Default::default(),
        }
    }

    fn clients(&self) -> &Clients {
        self.clients
            .get_or_init(|| Clients::new(Settings::default()))
    }
}

impl Declaration for AwsProvider {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn regions(&self) -> Regions {
        Regions::Table(regions::REGIONS)
    }

    fn shape(&self) -> Shape {
        Shape {
            identity: true,
            // The role's own policy lets it read the input bucket; the buckets it writes
            // admit it in their bucket policies too.
            grants: &[BucketRole::Output, BucketRole::Checkpoint],
            buckets_on_vm: false,
        }
    }

    fn id_limit(&self) -> IdLimit {
        // IAM role names are at most 64 characters.
        IdLimit {
            max: 55,
            because: "the IAM role anycloud-{id}",
        }
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
        let mut spec = anycloud_provider::declare::cloud_vm(vm, cx, checks, Some("aws"));
        spec.image = anycloud_provider::declare::vm_image(vm, checks, settings::check_image);
        spec
    }

    fn state_backend(&self) -> Option<&'static str> {
        Some("s3")
    }

    fn check_state(&self, doc: &Doc, checks: &mut Checks) -> serde_json::Value {
        state_objects::check(doc, checks)
    }
}

#[async_trait::async_trait]
impl Provider for AwsProvider {
    fn configure(&self, settings: &serde_json::Value) -> Result<()> {
        let parsed: Settings = if settings.is_null() {
            Settings::default()
        } else {
            anycloud_provider::read_settings(settings)?
        };
        // The first configuration wins: a process plans one config.
        let _ = self.clients.set(Clients::new(parsed));
        Ok(())
    }

    fn recall(&self, recorded: &[Target<'_>]) {
        self.untagged.recall(recorded);
        self.placements.recall(recorded);
    }

    async fn state_objects(
        &self,
        settings: &serde_json::Value,
    ) -> Result<(
        std::sync::Arc<dyn anycloud_provider::objects::ObjectStore>,
        String,
    )> {
        let settings: state_objects::StateSettings = anycloud_provider::read_settings(settings)?;
        let objects = state_objects::S3Objects::open(self.clients(), &settings).await;
        Ok((objects, settings.key))
    }

    fn remote_calls(&self) -> u64 {
        let ssh = self.connections.round_trips();
        self.clients.get().map(|c| c.calls()).unwrap_or(0) + ssh
    }

    fn connections(&self) -> u64 {
        self.connections.connections()
    }

    fn plan(&self, node: NodeSpec<'_>) -> Result<Planned> {
        match node.kind {
            Kind::Storage => Ok(bucket::plan_storage(node)),
            Kind::Bucket => bucket::plan(node),
            Kind::Role => Ok(role::plan(node.deployment)),
            Kind::Grant => grant::plan(node),
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
        let mut found = bucket::preflight(self.clients(), targets, &self.untagged).await?;
        vm::preflight(self, targets, &mut found).await?;
        limits::preflight(self.clients(), targets, &mut found).await?;
        let opens_ssh = self.clients().settings().ssh_cidr.is_none()
            && targets.iter().any(|t| t.kind == Kind::Vm);
        if opens_ssh {
            found.notes.push(format!(
                "providers.aws.ssh_cidr is not set: the VMs' SSH port is open to {} (key authentication only); set it to your address, e.g. 203.0.113.7/32",
                settings::OPEN_CIDR
            ));
        }
        Ok(found)
    }

    async fn read(&self, targets: &[Target<'_>]) -> Result<Vec<Read>> {
        let clients = self.clients();
        let wants = |kinds: &[Kind]| targets.iter().any(|t| kinds.contains(&t.kind));
        let buckets = if wants(&[Kind::Bucket, Kind::Grant]) {
            Some(s3::list(clients).await?)
        } else {
            None
        };
        let roles = if wants(&[Kind::Role, Kind::Grant]) {
            Some(iam::existing(clients).await?)
        } else {
            None
        };
        let machines = vm::Machines::find(self, targets).await?;
        let mut out = Vec::with_capacity(targets.len());
        for (i, t) in targets.iter().enumerate() {
            out.push(match t.kind {
                Kind::Storage => Ok(Some(t.attrs.clone())),
                Kind::Bucket => Ok(bucket::read(clients, t, buckets.as_ref()).await?),
                Kind::Role => Ok(role::read(t, roles.as_ref())),
                Kind::Grant => Ok(grant::read(t, buckets.as_ref(), roles.as_ref())),
                Kind::Vm => Ok(machines.read_vm(t)),
                _ => machines.read_hosted(i, t),
            });
        }
        Ok(out)
    }

    async fn create(&self, target: Target<'_>) -> Result<Attrs> {
        match target.kind {
            Kind::Storage => Ok(target.attrs.clone()),
            Kind::Bucket => bucket::create(self.clients(), &target, &self.untagged).await,
            Kind::Role => role::ensure(self.clients(), &target).await,
            Kind::Grant => grant::create(self.clients(), &target).await,
            Kind::Vm => vm::create(self, &target).await,
            _ => vm::apply_hosted(self, &target).await,
        }
    }

    async fn update(&self, prior: &Attrs, target: Target<'_>) -> Result<Attrs> {
        match target.kind {
            Kind::Storage | Kind::Bucket => Ok(target.attrs.clone()),
            Kind::Role => role::ensure(self.clients(), &target).await,
            Kind::Grant => grant::create(self.clients(), &target).await,
            Kind::Vm => vm::update(self, prior, &target).await,
            _ => vm::apply_hosted(self, &target).await,
        }
    }

    async fn delete(&self, target: Target<'_>) -> Result<()> {
        match target.kind {
            Kind::Storage => Ok(()),
            Kind::Bucket => bucket::delete(self.clients(), &target, &self.untagged).await,
            Kind::Role => role::delete(self.clients(), &target).await,
            Kind::Grant => grant::delete(self.clients(), &target).await,
            Kind::Vm => vm::delete(self, &target).await,
            _ => vm::delete_hosted(self, &target).await,
        }
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

    fn buckets(&self) -> Option<&dyn BucketAccess> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl BucketAccess for AwsProvider {
    async fn list(&self, bucket: &str, _: Option<&DeploymentSpec>) -> Result<Vec<(String, u64)>> {
        transfer::list(self.clients(), bucket).await
    }

    async fn upload(
        &self,
        bucket: &str,
        _: Option<&DeploymentSpec>,
        source: &std::path::Path,
        progress: &Transfer,
    ) -> Result<usize> {
        transfer::upload(self.clients(), bucket, source, progress).await
    }

    async fn download(
        &self,
        bucket: &str,
        _: Option<&DeploymentSpec>,
        dest: &std::path::Path,
        progress: &Transfer,
    ) -> Result<usize> {
        transfer::download(self.clients(), bucket, dest, progress).await
    }
}

/// An error for a verb asked of a kind this provider does not have.
fn no_such_kind(kind: Kind) -> ProviderError {
    ProviderError::permanent(format!("AWS has no {kind} resources"))
}
