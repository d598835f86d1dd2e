//! Azure, as declared to the engine (its regions by continent, `providers.azure`, its
//! naming rules, the shape of its part of the graph) and, in [`AzureProvider`], its verbs
//! over Resource Manager: the continent's storage account, blob containers, the
//! deployment's managed identity and its role assignments (the grants), and the VM (network
//! security group, public IP, NIC, Spot when asked) where the host layer's steps run over
//! SSH as on every cloud. One module per kind of node.

pub mod arm;
pub mod auth;
mod blobs;
mod compute;
mod container;
mod grant;
mod identity;
mod limits;
pub mod naming;
pub mod owner;
pub mod settings;
pub mod state_objects;
mod storage;
mod vm;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{OnceLock, RwLock};

use anycloud_host::{ContextCache, SshPool};

use anycloud_provider::{
    Attrs, BucketAccess, DeploymentSpec, IdLimit, Kind, NodeSpec, Planned, Preflight, Provider,
    ProviderError, Read, Result, Target, Transfer,
};

use crate::arm::Arm;
use crate::auth::Credential;
use crate::settings::Settings;

use anycloud_provider::declare::cloud_vm;
use anycloud_provider::doc::{Checks, Doc};
use anycloud_provider::{BucketRole, Declaration, Regions, Shape, VmContext, VmSpec};

pub const REGIONS: &[(&str, &[&str])] = &[
    (
        "us",
        &[
            "eastus",
            "eastus2",
            "westus",
            "westus2",
            "westus3",
            "centralus",
            "northcentralus",
            "southcentralus",
            "westcentralus",
        ],
    ),
    (
        "eu",
        &[
            "westeurope",
            "northeurope",
            "uksouth",
            "ukwest",
            "francecentral",
            "francesouth",
            "germanywestcentral",
            "germanynorth",
            "swedencentral",
            "switzerlandnorth",
            "norwayeast",
            "italynorth",
            "polandcentral",
            "spaincentral",
        ],
    ),
    (
        "apac",
        &[
            "eastasia",
            "southeastasia",
            "japaneast",
            "japanwest",
            "koreacentral",
            "koreasouth",
            "centralindia",
            "southindia",
            "westindia",
        ],
    ),
    (
        "aus",
        &["australiaeast", "australiasoutheast", "australiacentral"],
    ),
    ("latam", &["brazilsouth", "mexicocentral", "chilecentral"]),
    (
        "mea",
        &[
            "uaenorth",
            "uaecentral",
            "southafricanorth",
            "southafricawest",
            "israelcentral",
            "qatarcentral",
        ],
    ),
    ("ca", &["canadacentral", "canadaeast"]),
];

impl Declaration for AzureProvider {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn regions(&self) -> Regions {
        Regions::Table(REGIONS)
    }

    fn shape(&self) -> Shape {
        Shape {
            identity: true,
            // Role assignments scoped to each container: Reader on input, Contributor on
            // output and checkpoint.
            grants: &[
                BucketRole::Input,
                BucketRole::Output,
                BucketRole::Checkpoint,
            ],
            buckets_on_vm: false,
        }
    }

    fn id_limit(&self) -> IdLimit {
        // Linux VM (and computer) names are at most 64 characters.
        IdLimit {
            max: 55,
            because: "the VM anycloud-{id}",
        }
    }

    /// Blob container names: no `.` and no `--`, beyond the common rules.
    fn check_bucket_name(&self, name: &str) -> Result<(), String> {
        naming::check_container_name(name)
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
        let mut spec = cloud_vm(vm, cx, checks, Some("azure"));
        spec.image = anycloud_provider::declare::vm_image(vm, checks, compute::check_image);
        spec
    }

    fn state_backend(&self) -> Option<&'static str> {
        Some("azureblob")
    }

    fn check_state(&self, doc: &Doc, checks: &mut Checks) -> serde_json::Value {
        state_objects::check(doc, checks)
    }
}

/// Azure's verbs. Every call goes through one Resource Manager client, which counts them.
pub struct AzureProvider {
    keys_dir: PathBuf,
    settings: OnceLock<Settings>,
    arm: OnceLock<Result<Arm>>,
    connections: SshPool,
    contexts: ContextCache,
    /// The continents' accounts the state recorded ([`Provider::recall`]), by continent:
    /// planned with whatever anycloud would name them now.
    recorded: RwLock<BTreeMap<String, String>>,
}

impl AzureProvider {
    /// `keys_dir` holds the deployments' SSH keys.
    pub fn new(keys_dir: PathBuf) -> AzureProvider {
        AzureProvider {
            keys_dir,
            settings: OnceLock::new(),
            arm: OnceLock::new(),
            connections: SshPool::default(),
            contexts: ContextCache::default(),
            recorded: RwLock::default(),
        }
    }

    fn recorded_account(&self, continent: &str) -> Option<String> {
        self.recorded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(continent)
            .cloned()
    }

    /// The continent's storage account: the one the state recorded, else the seed's name.
    pub(crate) fn account(&self, continent: &str) -> Result<String> {
        match self.recorded_account(continent) {
            Some(recorded) => Ok(recorded),
            None => Ok(naming::storage_account(continent, &self.subscription()?)),
        }
    }

    fn settings(&self) -> &Settings {
        self.settings.get_or_init(Settings::default)
    }

    fn subscription(&self) -> Result<String> {
        self.settings().subscription()
    }

    fn arm(&self) -> Result<&Arm> {
        self.arm
            .get_or_init(|| {
                let base = self.settings().resource_manager().to_owned();
                // The token's audience: Resource Manager itself, with its trailing slash.
                let audience = format!("{}/", base.trim_end_matches('/'));
                Arm::new(&base, Credential::from_env(&audience))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

#[async_trait::async_trait]
impl Provider for AzureProvider {
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
        let objects = state_objects::BlobObjects::open(self.settings(), &state)?;
        Ok((objects, state.key))
    }

    fn remote_calls(&self) -> u64 {
        self.arm
            .get()
            .and_then(|a| a.as_ref().ok())
            .map(|a| a.calls())
            .unwrap_or(0)
            + self.connections.round_trips()
    }

    fn connections(&self) -> u64 {
        self.connections.connections()
    }

    fn recall(&self, recorded: &[Target<'_>]) {
        *self.recorded.write().unwrap_or_else(|p| p.into_inner()) = storage::recorded(recorded);
    }

    fn plan(&self, node: NodeSpec<'_>) -> Result<Planned> {
        let subscription = self.subscription()?;
        match node.kind {
            Kind::Storage => {
                let continent = &node.deployment.continent;
                Ok(storage::plan(
                    node,
                    &self.account(continent)?,
                    &naming::storage_account(continent, &subscription),
                ))
            }
            Kind::Bucket => container::plan(node, &self.account(&node.bucket()?.1.continent)?),
            Kind::Role => Ok(identity::plan(node.deployment, &subscription)),
            Kind::Grant => grant::plan(
                node,
                &subscription,
                &self.account(&node.bucket()?.1.continent)?,
            ),
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
        let subscription = self.subscription()?;
        let (errors, mut notes) = storage::preflight(self.arm()?, &subscription, targets).await?;
        notes.extend(vm::preflight(self.arm()?, &subscription, targets).await?);
        let mut found = Preflight { errors, notes };
        limits::preflight(self.arm()?, &subscription, targets, &mut found).await?;
        Ok(found)
    }

    /// A constant number of calls whatever the number of resources: one list of the
    /// subscription's accounts, identities and role assignments, one of each account's
    /// containers.
    async fn read(&self, targets: &[Target<'_>]) -> Result<Vec<Read>> {
        let subscription = self.subscription()?;
        let arm = self.arm()?;
        let wants = |k: Kind| targets.iter().any(|t| t.kind == k);
        let accounts = if wants(Kind::Storage) || wants(Kind::Bucket) {
            storage::list(arm, &subscription).await?
        } else {
            vec![]
        };
        let containers = container::list(arm, &subscription, targets, &accounts).await?;
        let identities = if wants(Kind::Role) {
            identity::list(arm, &subscription).await?
        } else {
            Default::default()
        };
        let assignments = if wants(Kind::Grant) {
            grant::list(arm, &subscription).await?
        } else {
            Default::default()
        };
        let machines = vm::Machines::find(self, targets).await?;
        Ok(targets
            .iter()
            .enumerate()
            .map(|(i, t)| match t.kind {
                Kind::Storage => storage::read(t, &accounts),
                Kind::Bucket => container::read(t, &containers),
                Kind::Role => identity::read(t, &identities),
                Kind::Grant => grant::read(t, &assignments),
                Kind::Vm => Ok(machines.read_vm(t)),
                _ => machines.read_hosted(i, t),
            })
            .collect())
    }

    async fn create(&self, target: Target<'_>) -> Result<Attrs> {
        let subscription = self.subscription()?;
        let arm = self.arm()?;
        match target.kind {
            Kind::Storage => storage::create(arm, &subscription, &target).await,
            Kind::Bucket => container::create(arm, &subscription, &target).await,
            Kind::Role => identity::ensure(arm, &subscription, &target).await,
            Kind::Grant => grant::create(arm, &subscription, &target).await,
            Kind::Vm => vm::create(self, &target).await,
            _ => vm::apply_hosted(self, &target).await,
        }
    }

    async fn update(&self, prior: &Attrs, target: Target<'_>) -> Result<Attrs> {
        // Every attribute that matters forces a replacement; the rest is recorded as is.
        match target.kind {
            Kind::Storage | Kind::Bucket | Kind::Grant => Ok(target.attrs.clone()),
            Kind::Role => identity::ensure(self.arm()?, &self.subscription()?, &target).await,
            Kind::Vm => vm::update(self, prior, &target).await,
            _ => vm::apply_hosted(self, &target).await,
        }
    }

    async fn delete(&self, target: Target<'_>) -> Result<()> {
        let subscription = self.subscription()?;
        let arm = self.arm()?;
        match target.kind {
            // The continent's account is shared: only forgotten.
            Kind::Storage => Ok(()),
            Kind::Bucket => container::delete(arm, &subscription, &target).await,
            Kind::Role => identity::delete(arm, &target).await,
            Kind::Grant => grant::delete(arm, &subscription, &target).await,
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

impl AzureProvider {
    /// The blob service of the account holding `bucket`: the continent's account of the
    /// deployment that uses it, signed in as the operator for the blob audience.
    async fn blob_service(&self, bucket: &str, user: Option<&DeploymentSpec>) -> Result<Arm> {
        let spec = user.ok_or_else(|| {
            ProviderError::permanent(format!(
                "bucket '{bucket}' is used by no Azure deployment of the config: anycloud cannot tell which continent's account holds it"
            ))
        })?;
        let continent = spec
            .buckets
            .values()
            .find(|b| b.name == bucket)
            .map(|b| b.continent.as_str())
            .unwrap_or(&spec.continent);
        let account = self.bucket_account(continent).await?;
        blobs::service(&self.settings().blob_endpoint(&account))
    }

    /// The continent's account for `anycloud bucket`, which reads no state: the recorded one
    /// if a plan recalled it, else the seed's name, unless only the one an earlier anycloud
    /// named (11 digits) exists in the subscription (one list of its accounts).
    async fn bucket_account(&self, continent: &str) -> Result<String> {
        if let Some(recorded) = self.recorded_account(continent) {
            return Ok(recorded);
        }
        let subscription = self.subscription()?;
        let seed = naming::storage_account(continent, &subscription);
        let earlier = naming::earlier_storage_account(continent, &subscription);
        let arm = self.arm()?;
        let listed =
            anycloud_provider::retry::with_retries(|| storage::list(arm, &subscription), |_, _| {})
                .await?;
        let exists = |name: &str| {
            listed
                .iter()
                .any(|a| a.get("name").and_then(|n| n.as_str()) == Some(name))
        };
        Ok(if !exists(&seed) && exists(&earlier) {
            earlier
        } else {
            seed
        })
    }
}

#[async_trait::async_trait]
impl BucketAccess for AzureProvider {
    async fn list(
        &self,
        bucket: &str,
        user: Option<&DeploymentSpec>,
    ) -> Result<Vec<(String, u64)>> {
        blobs::list(&self.blob_service(bucket, user).await?, bucket, "").await
    }

    async fn upload(
        &self,
        bucket: &str,
        user: Option<&DeploymentSpec>,
        source: &std::path::Path,
        progress: &Transfer,
    ) -> Result<usize> {
        blobs::upload(
            &self.blob_service(bucket, user).await?,
            bucket,
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
        blobs::download(
            &self.blob_service(bucket, user).await?,
            bucket,
            dest,
            progress,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anycloud_provider::{BucketSpec, ContainerSpec};
    use serde_json::{json, Value};

    const SEED: &str = "anycloudus12345678";
    const EARLIER: &str = "anycloudus123456789ab";

    fn deployment() -> DeploymentSpec {
        DeploymentSpec {
            id: "train".into(),
            provider: "azure".into(),
            project: None,
            region: "eastus".into(),
            continent: "us".into(),
            vm: VmSpec {
                machine_type: Some("Standard_D2s_v5".into()),
                ..VmSpec::default()
            },
            container: ContainerSpec::default(),
            buckets: [(
                BucketRole::Output,
                BucketSpec {
                    name: "train-results".into(),
                    continent: "us".into(),
                    region: "eastus".into(),
                },
            )]
            .into(),
            sync_interval_secs: 60,
            idle_shutdown_secs: None,
            check: Default::default(),
        }
    }

    fn provider() -> AzureProvider {
        let p = AzureProvider::new(std::env::temp_dir().join("anycloud-azure-unit-keys"));
        p.configure(&json!({"subscription_id": "12345678-9abc-4def-8123-456789abcdef"}))
            .unwrap();
        p
    }

    fn recorded(account: &str) -> Attrs {
        [("continent", json!("us")), ("account", json!(account))]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    #[test]
    fn a_recorded_account_is_kept_by_every_node_that_names_it_and_the_plan_says_so() {
        let p = provider();
        let d = deployment();
        let plan = |kind, bucket| {
            p.plan(NodeSpec {
                kind,
                deployment: &d,
                bucket,
            })
            .unwrap()
        };
        let storage = plan(Kind::Storage, None);
        assert_eq!(storage.attrs["account"], json!(SEED));
        assert!(storage.warnings.is_empty(), "{:?}", storage.warnings);

        let attrs = recorded(EARLIER);
        p.recall(&[Target {
            address: "shared.azure.us.storage",
            kind: Kind::Storage,
            attrs: &attrs,
            private: &Value::Null,
            deps: &[],
            lineage: "lineage",
        }]);
        let storage = plan(Kind::Storage, None);
        assert_eq!(storage.attrs["account"], json!(EARLIER));
        assert_eq!(storage.force_new, vec!["account".to_owned()]);
        assert_eq!(storage.warnings.len(), 1);
        let said = &storage.warnings[0];
        assert!(
            said.contains(&format!("'{EARLIER}'")) && said.contains(&format!("'{SEED}'")),
            "{said}"
        );
        let bucket = plan(Kind::Bucket, Some(BucketRole::Output));
        assert_eq!(bucket.attrs["account"], json!(EARLIER));
        assert!(bucket.warnings.is_empty());
        let grant = plan(Kind::Grant, Some(BucketRole::Output));
        assert!(grant.attrs["scope"]
            .as_str()
            .unwrap()
            .contains(&format!("/storageAccounts/{EARLIER}/blobServices/")));
        // The VM's rclone.conf and the upload programs name it too, never the seed's.
        for kind in [Kind::Rclone, Kind::ServiceOutput] {
            let text = serde_json::to_string(&plan(kind, None).attrs)
                .unwrap()
                .replace(EARLIER, "RECORDED");
            assert!(
                text.contains("RECORDED") && !text.contains(SEED),
                "{kind}: {text}"
            );
        }
    }

    #[test]
    fn a_recorded_bucket_names_its_continents_account_when_no_storage_is_recorded() {
        let p = provider();
        let attrs = recorded(EARLIER);
        p.recall(&[Target {
            address: "deployment.train.bucket.output",
            kind: Kind::Bucket,
            attrs: &attrs,
            private: &Value::Null,
            deps: &[],
            lineage: "lineage",
        }]);
        assert_eq!(p.account("us").unwrap(), EARLIER);
        assert_eq!(p.account("eu").unwrap(), "anycloudeu12345678");
        // A state without it (recalled again) plans the seed's name.
        p.recall(&[]);
        assert_eq!(p.account("us").unwrap(), SEED);
    }
}
