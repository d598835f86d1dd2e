//! AWS: S3 buckets by continent, an IAM role per deployment, EC2 VMs (spot when asked)
//! reached over SSH, where the VM steps of `anycloud-host` run as on every cloud.
//!
//! Every call also works against S3/IAM/EC2-compatible endpoints: the standard
//! `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` variables, or `providers.aws.endpoints`.

pub mod clients;
pub mod ec2;
mod errors;
pub mod iam;
pub mod s3;
pub mod settings;
mod vm_host;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anycloud_host::{keys, steps, ContextCache, HostContext, SshHost, SshPool};
use anycloud_provider::{
    attr_str, Attrs, Kind, Planned, Preflight, Provider, ProviderError, Result, Target,
};
use serde_json::json;

use crate::clients::Clients;
use crate::settings::Settings;

pub struct AwsProvider {
    keys_dir: PathBuf,
    clients: OnceLock<Clients>,
    connections: SshPool,
    contexts: ContextCache,
}

impl AwsProvider {
    pub fn new(keys_dir: PathBuf) -> AwsProvider {
        AwsProvider {
            keys_dir,
            clients: OnceLock::new(),
            connections: SshPool::default(),
            contexts: ContextCache::default(),
        }
    }

    fn clients(&self) -> &Clients {
        self.clients
            .get_or_init(|| Clients::new(Settings::default()))
    }

    fn context(&self, inputs: &Attrs) -> Result<Arc<HostContext>> {
        self.contexts.get(inputs, || {
            vm_host::context(inputs, self.clients().settings())
        })
    }

    /// The SSH connection to a VM, from the VM's attributes; one per machine and key.
    fn connection(&self, vm: &Attrs) -> Result<Arc<SshHost>> {
        let deployment = attr_str(vm, "deployment")?;
        let key = keys::ensure_deployment_key(&self.keys_dir, deployment)
            .map_err(|e| ProviderError::permanent(e.to_string()))?;
        self.connections
            .get(vm_host::ssh_target(vm, key.private_path)?)
            .map_err(ProviderError::from)
    }

    /// A hosted resource's VM, if its instance is alive.
    fn live_vm<'a>(t: &'a Target<'_>, alive: &BTreeSet<String>) -> Option<&'a Attrs> {
        let vm = t.dep(Kind::Vm)?;
        let id = vm.get("instance_id")?.as_str()?;
        alive.contains(id).then_some(vm)
    }

    /// anycloud's instances (by id, in any state but terminated), for the VMs among
    /// `targets` and the VMs of hosted ones: one DescribeInstances per region.
    async fn alive_instances(
        &self,
        targets: &[Target<'_>],
    ) -> Result<BTreeMap<String, ec2::Instance>> {
        let mut regions: BTreeSet<String> = BTreeSet::new();
        for t in targets {
            let vm = match t.kind {
                Kind::Vm => Some(t.attrs),
                k if k.is_hosted() => t.dep(Kind::Vm),
                _ => None,
            };
            if let Some(vm) = vm {
                if let Ok(region) = attr_str(vm, "region") {
                    regions.insert(region.to_owned());
                }
            }
        }
        let mut out = BTreeMap::new();
        for region in regions {
            out.extend(ec2::in_region(self.clients(), &region).await?);
        }
        Ok(out)
    }

    /// One SSH round trip per live VM (and key) for the hosted targets.
    async fn probe_hosted(
        &self,
        targets: &[Target<'_>],
        alive: &BTreeSet<String>,
    ) -> Result<Vec<Option<anycloud_host::HostProbe>>> {
        let mut hosts: Vec<Option<Arc<dyn anycloud_host::Host>>> =
            Vec::with_capacity(targets.len());
        for t in targets {
            let host = match Self::live_vm(t, alive) {
                Some(vm) if t.kind.is_hosted() => {
                    Some(self.connection(vm)? as Arc<dyn anycloud_host::Host>)
                }
                _ => None,
            };
            hosts.push(host);
        }
        steps::probe_each_host(targets, hosts, |_| None).await
    }

    async fn create_vm(&self, t: &Target<'_>) -> Result<Attrs> {
        let a = t.attrs;
        let clients = self.clients();
        let region = attr_str(a, "region")?;
        let deployment = attr_str(a, "deployment")?;
        let key = keys::ensure_deployment_key(&self.keys_dir, deployment)
            .map_err(|e| ProviderError::permanent(e.to_string()))?;
        let key_name = attr_str(a, "key_name")?;
        ec2::import_key(clients, region, key_name, &key.public_key).await?;
        let group = ec2::ensure_security_group(
            clients,
            region,
            attr_str(a, "security_group")?,
            attr_str(a, "ssh_cidr")?,
        )
        .await?;
        let ami = match a.get("ami").and_then(|v| v.as_str()) {
            Some(ami) => ami.to_owned(),
            None => ec2::latest_debian(clients, region).await?,
        };
        let launch = ec2::Launch {
            region,
            deployment,
            project: a.get("project").and_then(|p| p.as_str()),
            ami: &ami,
            instance_type: attr_str(a, "instance_type")?,
            spot: a.get("spot").and_then(|s| s.as_bool()).unwrap_or(false),
            disk_gb: a.get("disk_gb").and_then(|d| d.as_i64()).map(|d| d as i32),
            key_name,
            security_group_id: &group,
            instance_profile: attr_str(a, "instance_profile")?,
        };
        let instance =
            errors::while_iam_propagates(|| ec2::ensure_instance(clients, &launch)).await?;
        let mut out = a.clone();
        out.insert("ami".into(), json!(ami));
        out.insert("instance_id".into(), json!(instance.id));
        out.insert("public_ip".into(), json!(instance.public_ip));
        out.insert(
            "lifecycle".into(),
            json!(instance.lifecycle.as_deref().unwrap_or("on-demand")),
        );
        // Waits for SSH (a fresh VM takes a while, and may refuse the key until cloud-init
        // has installed it), pins the host key on first sight.
        let ssh = self.connection(&out)?;
        let host_key = ssh.connect().await.map_err(ProviderError::from)?;
        out.insert("host_key".into(), json!(host_key));
        out.insert("public_key".into(), json!(key.public_key));
        out.insert("key_fingerprint".into(), json!(key.fingerprint));
        Ok(out)
    }

    async fn delete_vm(&self, t: &Target<'_>) -> Result<()> {
        let a = t.attrs;
        let clients = self.clients();
        let region = attr_str(a, "region")?;
        let recorded = a
            .get("instance_id")
            .and_then(|v| v.as_str())
            .map(String::from);
        // A create cut short recorded no instance id: the instance (if it was started) is
        // found by the deployment's tag.
        let id = match recorded {
            Some(id) => Some(id),
            None => ec2::find(clients, region, attr_str(a, "deployment")?, None)
                .await?
                .map(|i| i.id),
        };
        if let Some(id) = id.as_deref() {
            let alive = ec2::in_region(clients, region)
                .await?
                .get(id)
                .is_some_and(|i| i.alive());
            // Only a running VM has anything left to upload; a terminated one has no disk.
            if alive {
                let ssh = self.connection(a)?;
                steps::flush(&*ssh, &vm_host::layout_of(a)?, &vm_host::flush_pairs(a)).await?;
            }
            ec2::terminate(clients, region, id).await?;
        }
        ec2::delete_security_group(clients, region, attr_str(a, "security_group")?).await?;
        ec2::delete_key(clients, region, attr_str(a, "key_name")?).await
    }

    async fn ensure_role(&self, t: &Target<'_>) -> Result<Attrs> {
        let a = t.attrs;
        let clients = self.clients();
        let name = attr_str(a, "name")?;
        let policy = attr_str(a, "policy")?;
        let project = a.get("project").and_then(|p| p.as_str());
        let arn =
            errors::while_iam_propagates(|| iam::ensure(clients, name, policy, project)).await?;
        // Each managed bucket's policy admits the role too, as one statement of its own.
        for (kind, bucket) in t.deps {
            if *kind != Kind::Bucket || bucket.get("role").and_then(|r| r.as_str()) == Some("input")
            {
                continue;
            }
            let bucket_name = attr_str(bucket, "name")?;
            let region = match bucket.get("region").and_then(|r| r.as_str()) {
                Some(r) => r.to_owned(),
                None => s3::region_of(clients, bucket_name).await?,
            };
            let statement = json!({
                "Sid": statement_id(name),
                "Effect": "Allow",
                "Principal": {"AWS": arn},
                "Action": ["s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": [format!("arn:aws:s3:::{bucket_name}"), format!("arn:aws:s3:::{bucket_name}/*")]
            });
            let sid = statement_id(name);
            errors::while_iam_propagates(|| {
                s3::admit(clients, bucket_name, &region, &sid, statement.clone())
            })
            .await?;
        }
        let mut out = a.clone();
        out.insert("arn".into(), json!(arn));
        Ok(out)
    }

    async fn delete_role(&self, t: &Target<'_>) -> Result<()> {
        let clients = self.clients();
        let name = attr_str(t.attrs, "name")?;
        for (kind, bucket) in t.deps {
            if *kind != Kind::Bucket || bucket.get("role").and_then(|r| r.as_str()) == Some("input")
            {
                continue;
            }
            let bucket_name = attr_str(bucket, "name")?;
            let region = match bucket.get("region").and_then(|r| r.as_str()) {
                Some(r) => r.to_owned(),
                None => match s3::region_of(clients, bucket_name).await {
                    Ok(r) => r,
                    Err(e) if e.message.contains("NoSuchBucket") => continue,
                    Err(e) => return Err(e),
                },
            };
            s3::dismiss(clients, bucket_name, &region, &statement_id(name)).await?;
        }
        iam::delete(clients, name).await
    }
}

/// Bucket policy statement ids allow only letters and digits: the role's name without its
/// dashes, plus a digest of the whole name so `train-1` and `train1` never share one.
fn statement_id(role: &str) -> String {
    let plain: String = role.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{plain}{}", &anycloud_host::steps::sha256_hex(role)[..8])
}

/// The seed's words for a bucket that lives in another continent.
pub fn continent_error(bucket: &str, exists_in: &str, deploying_to: &str) -> String {
    format!(
        "Error: Bucket '{bucket}' already exists in continent '{exists_in}' but you are deploying to continent '{deploying_to}'.\nPlease use a different bucket name in anycloud.yaml."
    )
}

#[async_trait::async_trait]
impl Provider for AwsProvider {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn configure(&self, settings: &serde_json::Value) -> Result<()> {
        let parsed: Settings = if settings.is_null() {
            Settings::default()
        } else {
            serde_json::from_value(settings.clone())
                .map_err(|e| ProviderError::permanent(format!("bad settings: {e}")))?
        };
        // The first configuration wins: a process plans one config.
        let _ = self.clients.set(Clients::new(parsed));
        Ok(())
    }

    fn remote_calls(&self) -> u64 {
        let ssh = self.connections.round_trips();
        self.clients.get().map(|c| c.calls()).unwrap_or(0) + ssh
    }

    fn plan(&self, kind: Kind, inputs: &Attrs) -> Result<Planned> {
        let settings = self.clients().settings();
        let mut attrs = Attrs::new();
        let project = inputs.get("project").cloned();
        if let Some(p) = &project {
            attrs.insert("project".into(), p.clone());
        }
        match kind {
            Kind::Storage => {
                attrs.insert("continent".into(), json!(attr_str(inputs, "continent")?));
                Ok(Planned {
                    attrs,
                    computed: vec![],
                    force_new: vec![],
                })
            }
            Kind::Bucket => {
                let role = attr_str(inputs, "role")?;
                attrs.insert("name".into(), json!(attr_str(inputs, "name")?));
                attrs.insert("continent".into(), json!(attr_str(inputs, "continent")?));
                attrs.insert("role".into(), json!(role));
                attrs.insert(
                    "_home_region".into(),
                    json!(attr_str(inputs, "home_region")?),
                );
                // Only the checkpoint bucket goes with its deployment (and only if anycloud
                // made it); input and output outlive it.
                attrs.insert("_keep_on_destroy".into(), json!(role != "checkpoint"));
                Ok(Planned {
                    attrs,
                    computed: vec!["region".into(), "managed".into()],
                    force_new: vec!["name".into()],
                })
            }
            Kind::Role => {
                let deployment = attr_str(inputs, "deployment")?;
                let name = iam::role_name(deployment);
                let buckets = inputs.get("buckets").cloned().unwrap_or(json!({}));
                let input = buckets.get("input").and_then(|b| b.as_str());
                let writable: Vec<&str> = ["output", "checkpoint"]
                    .iter()
                    .filter_map(|r| buckets.get(*r).and_then(|b| b.as_str()))
                    .collect();
                let policy = iam::bucket_policy(input, &writable);
                attrs.insert("name".into(), json!(name));
                attrs.insert("instance_profile".into(), json!(name));
                attrs.insert(
                    "trust_policy".into(),
                    json!(serde_json::to_string_pretty(&iam::trust_policy()).expect("json")),
                );
                attrs.insert(
                    "policy".into(),
                    json!(serde_json::to_string_pretty(&policy).expect("json")),
                );
                Ok(Planned {
                    attrs,
                    computed: vec!["arn".into()],
                    force_new: vec!["name".into()],
                })
            }
            Kind::Vm => {
                let ctx = self.context(inputs)?;
                let deployment = attr_str(inputs, "deployment")?;
                let name = iam::role_name(deployment);
                attrs.insert("deployment".into(), json!(deployment));
                attrs.insert("region".into(), json!(attr_str(inputs, "region")?));
                attrs.insert("instance_type".into(), json!(attr_str(inputs, "vm_type")?));
                attrs.insert(
                    "spot".into(),
                    inputs.get("spot").cloned().unwrap_or(json!(false)),
                );
                if let Some(d) = inputs.get("disk_gb") {
                    attrs.insert("disk_gb".into(), d.clone());
                }
                let mut computed: Vec<String> = [
                    "instance_id",
                    "public_ip",
                    "lifecycle",
                    "host_key",
                    "public_key",
                    "key_fingerprint",
                ]
                .map(String::from)
                .to_vec();
                match &settings.ami {
                    Some(ami) => {
                        attrs.insert("ami".into(), json!(ami));
                    }
                    None => computed.push("ami".into()),
                }
                attrs.insert("ssh_user".into(), json!(settings.ssh_user()));
                attrs.insert("ssh_cidr".into(), json!(settings.ssh_cidr()));
                attrs.insert("instance_state".into(), json!("running"));
                attrs.insert("key_name".into(), json!(name));
                attrs.insert("security_group".into(), json!(name));
                attrs.insert("instance_profile".into(), json!(name));
                steps::vm_attrs(&ctx, &mut attrs);
                Ok(Planned {
                    attrs,
                    computed,
                    force_new: [
                        "region",
                        "instance_type",
                        "spot",
                        "disk_gb",
                        "ami",
                        "ssh_user",
                        "instance_state",
                    ]
                    .map(String::from)
                    .to_vec(),
                })
            }
            hosted => steps::plan(hosted, inputs, &*self.context(inputs)?),
        }
    }

    async fn preflight(&self, targets: &[Target<'_>]) -> Result<Preflight> {
        let clients = self.clients();
        let mut found = Preflight::default();
        let buckets: Vec<&Target> = targets.iter().filter(|t| t.kind == Kind::Bucket).collect();
        if !buckets.is_empty() {
            let existing = s3::list(clients).await?;
            let mut seen = BTreeSet::new();
            for t in buckets {
                let name = attr_str(t.attrs, "name")?;
                let continent = attr_str(t.attrs, "continent")?;
                if !seen.insert(name) {
                    continue;
                }
                match existing.get(name) {
                    Some(listed_region) => {
                        let region = match listed_region {
                            Some(r) => r.clone(),
                            None => s3::region_of(clients, name).await?,
                        };
                        let theirs = s3::continent_of(clients, name, &region).await?;
                        if theirs != continent {
                            found.errors.push(continent_error(name, &theirs, continent));
                        } else if t.attrs.get("role").and_then(|r| r.as_str()) != Some("input") {
                            found.notes.push(format!(
                                "{}: bucket '{name}' already exists in {region} (continent '{theirs}'): it will be used as it is",
                                t.address
                            ));
                        }
                    }
                    // A new name: free, or another account's (CreateBucket would fail later).
                    None => {
                        let to_make = t.attrs.get("role").and_then(|r| r.as_str()) != Some("input");
                        if to_make && s3::taken_elsewhere(clients, name).await? {
                            found.errors.push(format!(
                                "Error: Bucket '{name}' is taken by another AWS account.\nPlease use a different bucket name in anycloud.yaml."
                            ));
                        }
                    }
                }
            }
        }
        let opens_ssh =
            clients.settings().ssh_cidr.is_none() && targets.iter().any(|t| t.kind == Kind::Vm);
        if opens_ssh {
            found.notes.push(format!(
                "providers.aws.ssh_cidr is not set: the VMs' SSH port is open to {} (key authentication only); set it to your address, e.g. 203.0.113.7/32",
                settings::OPEN_CIDR
            ));
        }
        Ok(found)
    }

    async fn read(&self, targets: &[Target<'_>]) -> Result<Vec<Option<Attrs>>> {
        let clients = self.clients();
        let buckets = if targets.iter().any(|t| t.kind == Kind::Bucket) {
            Some(s3::list(clients).await?)
        } else {
            None
        };
        let roles = if targets.iter().any(|t| t.kind == Kind::Role) {
            Some(iam::existing(clients).await?)
        } else {
            None
        };
        let instances = if targets
            .iter()
            .any(|t| t.kind == Kind::Vm || t.kind.is_hosted())
        {
            self.alive_instances(targets).await?
        } else {
            BTreeMap::new()
        };
        let alive: BTreeSet<String> = instances
            .values()
            .filter(|i| i.alive())
            .map(|i| i.id.clone())
            .collect();
        let probes = self.probe_hosted(targets, &alive).await?;
        let mut out = Vec::with_capacity(targets.len());
        for (t, probe) in targets.iter().zip(probes) {
            let now = match t.kind {
                Kind::Storage => Some(t.attrs.clone()),
                Kind::Bucket => {
                    let name = attr_str(t.attrs, "name")?;
                    let input = t.attrs.get("role").and_then(|r| r.as_str()) == Some("input");
                    match buckets.as_ref().and_then(|b| b.get(name)) {
                        // Another account's input bucket is not in our listing, yet readable.
                        None if input && s3::readable(clients, name).await? => {
                            Some(t.attrs.clone())
                        }
                        None => None,
                        Some(region) => {
                            let mut a = t.attrs.clone();
                            let region = match (region, a.get("region")) {
                                (Some(r), _) => Some(r.clone()),
                                (None, Some(prior)) => prior.as_str().map(String::from),
                                (None, None) => Some(s3::region_of(clients, name).await?),
                            };
                            a.insert("region".into(), json!(region));
                            Some(a)
                        }
                    }
                }
                Kind::Role => {
                    let name = attr_str(t.attrs, "name")?;
                    roles
                        .as_ref()
                        .filter(|(r, p)| r.contains(name) && p.contains(name))
                        .map(|_| t.attrs.clone())
                }
                // A stopped (or stopping) instance still exists and still holds its security
                // group: its state differs from the planned one, which replaces it.
                Kind::Vm => t
                    .attrs
                    .get("instance_id")
                    .and_then(|id| id.as_str())
                    .and_then(|id| instances.get(id))
                    .map(|i| {
                        let mut a = t.attrs.clone();
                        a.insert("public_ip".into(), json!(i.public_ip));
                        let state = if i.alive() {
                            "running"
                        } else {
                            i.state.as_str()
                        };
                        a.insert("instance_state".into(), json!(state));
                        a
                    }),
                _ => probe.and_then(|p| steps::read_hosted(t, &p)),
            };
            out.push(now);
        }
        Ok(out)
    }

    async fn create(&self, target: Target<'_>) -> Result<Attrs> {
        let clients = self.clients();
        match target.kind {
            Kind::Storage => Ok(target.attrs.clone()),
            Kind::Bucket => {
                let a = target.attrs;
                let name = attr_str(a, "name")?;
                let region = attr_str(a, "_home_region")?;
                let managed = s3::create(
                    clients,
                    name,
                    region,
                    attr_str(a, "continent")?,
                    a.get("project").and_then(|p| p.as_str()),
                )
                .await?;
                let mut out = a.clone();
                out.insert("region".into(), json!(s3::region_of(clients, name).await?));
                out.insert("managed".into(), json!(managed));
                Ok(out)
            }
            Kind::Role => self.ensure_role(&target).await,
            Kind::Vm => self.create_vm(&target).await,
            hosted => {
                let vm = target
                    .dep(Kind::Vm)
                    .ok_or_else(|| ProviderError::permanent("no VM recorded for this step"))?;
                steps::apply(&*self.connection(vm)?, hosted, target.attrs).await
            }
        }
    }

    async fn update(&self, prior: &Attrs, target: Target<'_>) -> Result<Attrs> {
        match target.kind {
            Kind::Storage | Kind::Bucket => Ok(target.attrs.clone()),
            Kind::Role => self.ensure_role(&target).await,
            Kind::Vm => {
                // In place only what can change in place: who may reach SSH.
                let a = target.attrs;
                if prior.get("ssh_cidr") != a.get("ssh_cidr") {
                    ec2::ensure_security_group(
                        self.clients(),
                        attr_str(a, "region")?,
                        attr_str(a, "security_group")?,
                        attr_str(a, "ssh_cidr")?,
                    )
                    .await?;
                }
                Ok(a.clone())
            }
            _ => self.create(target).await,
        }
    }

    async fn delete(&self, target: Target<'_>) -> Result<()> {
        let clients = self.clients();
        match target.kind {
            Kind::Storage => Ok(()),
            Kind::Bucket => {
                let a = target.attrs;
                let name = attr_str(a, "name")?;
                if a.get("role").and_then(|r| r.as_str()) != Some("checkpoint") {
                    return Ok(());
                }
                // A create cut short recorded no answer: the bucket's tag says whose it is.
                let ours = match a.get("managed").and_then(|m| m.as_bool()) {
                    Some(m) => m,
                    None => s3::managed(clients, name).await?,
                };
                if ours {
                    s3::delete(clients, name).await
                } else {
                    Ok(())
                }
            }
            Kind::Role => self.delete_role(&target).await,
            Kind::Vm => self.delete_vm(&target).await,
            hosted => {
                let Some(vm) = target.dep(Kind::Vm) else {
                    return Ok(());
                };
                let region = attr_str(vm, "region")?;
                let id = vm.get("instance_id").and_then(|v| v.as_str()).unwrap_or("");
                let alive = ec2::in_region(clients, region)
                    .await?
                    .get(id)
                    .is_some_and(|i| i.alive());
                // On a terminated VM there is nothing left to stop or upload.
                if !alive {
                    return Ok(());
                }
                steps::delete(&*self.connection(vm)?, hosted, target.attrs).await
            }
        }
    }

    async fn observe(&self, targets: &[Target<'_>]) -> Result<Vec<BTreeMap<String, String>>> {
        let instances = self.alive_instances(targets).await?;
        let alive: BTreeSet<String> = instances
            .values()
            .filter(|i| i.alive())
            .map(|i| i.id.clone())
            .collect();
        let probes = self.probe_hosted(targets, &alive).await?;
        Ok(targets
            .iter()
            .zip(probes)
            .map(|(t, probe)| match (t.kind, probe) {
                (Kind::Vm, _) => {
                    let id = t
                        .attrs
                        .get("instance_id")
                        .and_then(|v| v.as_str())
                        .unwrap_or("");
                    let mut facts = BTreeMap::new();
                    facts.insert(
                        "instance".into(),
                        match instances.get(id) {
                            Some(i) => format!("{} {}", i.id, i.state),
                            None => "gone (terminated or missing)".into(),
                        },
                    );
                    facts
                }
                (k, Some(p)) if k.is_hosted() => steps::observe_hosted(t, &p),
                _ => BTreeMap::new(),
            })
            .collect())
    }
}
