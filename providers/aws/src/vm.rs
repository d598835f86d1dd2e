//! The VM: the deployment's key pair, a security group admitting SSH only, and an instance
//! (spot when asked) carrying the role, reached over SSH; and everything that runs on it,
//! through the host layer's steps.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anycloud_host::{keys, steps, Host, HostContext, HostedPrivate, SshHost};
use anycloud_provider::placement::{self, Launched, Placement};
use anycloud_provider::{
    attr_str, Attrs, DeploymentSpec, Kind, Planned, Preflight, ProviderError, Result, Target,
};
use serde_json::json;

use crate::{ec2, iam, settings, vm_host, AwsProvider};

fn context(p: &AwsProvider, spec: &DeploymentSpec) -> Result<Arc<HostContext>> {
    p.contexts
        .get(spec, || vm_host::context(spec, p.clients().settings()))
}

/// The SSH connection to a VM, from the VM's attributes; one per machine and key.
fn connection(p: &AwsProvider, vm: &Attrs) -> Result<Arc<SshHost>> {
    let deployment = attr_str(vm, "deployment")?;
    let key = keys::ensure_deployment_key(&p.keys_dir, deployment)
        .map_err(|e| ProviderError::permanent(e.to_string()))?;
    p.connections
        .get(vm_host::ssh_target(vm, key.private_path)?)
        .map_err(ProviderError::from)
}

pub fn plan(p: &AwsProvider, spec: &DeploymentSpec) -> Result<Planned> {
    let settings = p.clients().settings();
    let ctx = context(p, spec)?;
    let name = iam::role_name(&spec.id);
    let mut attrs = Attrs::new();
    if let Some(project) = &spec.project {
        attrs.insert("project".into(), json!(project));
    }
    attrs.insert("deployment".into(), json!(spec.id));
    attrs.insert("region".into(), json!(spec.region));
    if !spec.vm.regions.is_empty() {
        attrs.insert("regions".into(), json!(spec.vm.regions));
    }
    let instance_type = spec.vm.machine_type.as_deref().ok_or_else(|| {
        ProviderError::permanent(format!("deployment {} has no vm.type", spec.id))
    })?;
    attrs.insert("instance_type".into(), json!(instance_type));
    attrs.insert("spot".into(), json!(spec.vm.spot));
    if let Some(d) = spec.vm.disk_gb {
        attrs.insert("disk_gb".into(), json!(d));
    }
    let mut computed: Vec<String> = [
        "instance_id",
        "public_ip",
        "lifecycle",
        "host_key",
        "public_key",
        "key_fingerprint",
        placement::ATTRIBUTE,
    ]
    .map(String::from)
    .to_vec();
    // `vm.image`, else `providers.aws.ami`, else with GPUs asked AWS's image with NVIDIA's
    // driver (whose login user is `ubuntu`), else Debian's newest (read when made).
    let gpu_default =
        spec.vm.image.is_none() && settings.ami.is_none() && spec.container.gpus.is_some();
    match spec.vm.image.as_deref().or(settings.ami.as_deref()) {
        Some(param) if settings::is_parameter(param) => {
            attrs.insert("image_parameter".into(), json!(param));
            computed.push("ami".into());
        }
        Some(ami) => {
            attrs.insert("ami".into(), json!(ami));
        }
        None if gpu_default => {
            attrs.insert("image_parameter".into(), json!(ec2::gpu_image_parameter()));
            computed.push("ami".into());
        }
        None => computed.push("ami".into()),
    }
    let user = match (&settings.ssh_user, gpu_default) {
        (Some(user), _) => user.as_str(),
        (None, true) => ec2::GPU_IMAGE_USER,
        (None, false) => settings.ssh_user(),
    };
    attrs.insert("ssh_user".into(), json!(user));
    attrs.insert("ssh_cidr".into(), json!(settings.ssh_cidr()));
    attrs.insert("instance_state".into(), json!("running"));
    attrs.insert("key_name".into(), json!(name));
    attrs.insert("security_group".into(), json!(name));
    attrs.insert("instance_profile".into(), json!(name));
    let private = steps::vm_planned(&ctx, &mut attrs);
    let mut warnings = Vec::new();
    if let Some(idle) = spec.idle_shutdown_secs {
        attrs.insert("shutdown_behavior".into(), json!("terminate"));
        warnings.push(anycloud_host::idle::plan_note(
            idle,
            "shuts itself down, and EC2 terminates the instance (InstanceInitiatedShutdownBehavior=terminate; its volume goes with it)",
        ));
    }
    Ok(Planned {
        attrs,
        private,
        computed,
        force_new: [
            "region",
            "instance_type",
            "spot",
            "disk_gb",
            "ami",
            "image_parameter",
            "ssh_user",
            "instance_state",
        ]
        .map(String::from)
        .to_vec(),
        keep_on_destroy: false,
        warnings,
    })
}

/// What a reviewer should know of the machines whose jobs ask for GPUs, asked of EC2
/// (`DescribeInstanceTypes`, its `GpuInfo`): a type without NVIDIA GPUs is warned of; one
/// with them names the image it gets and why. The default GPU image's parameter is read
/// now: one that cannot be read fails the plan with SSM's words.
pub async fn preflight(
    p: &AwsProvider,
    targets: &[Target<'_>],
    found: &mut Preflight,
) -> Result<()> {
    let clients = p.clients();
    for (deployment, vm) in anycloud_provider::gpu_vms(targets)? {
        let (region, instance_type) = (attr_str(vm, "region")?, attr_str(vm, "instance_type")?);
        let at = format!("deployment.{deployment}.vm");
        let Some(gpus) = ec2::nvidia_gpus(clients, region, instance_type).await? else {
            found.notes.push(format!(
                "{at}: the container asks for GPUs but instance type {instance_type} has no NVIDIA GPU (EC2 DescribeInstanceTypes): the container will not start; use a GPU type such as g5.xlarge or p4d.24xlarge"
            ));
            continue;
        };
        let param = vm.get("image_parameter").and_then(|v| v.as_str());
        let (image, what) = match (vm.get("ami").and_then(|v| v.as_str()), param) {
            (Some(ami), _) => (
                ami.to_owned(),
                "vm.image or providers.aws.ami; it must bring the NVIDIA driver".to_owned(),
            ),
            (None, Some(param)) => match ec2::image_of_parameter(clients, region, param).await {
                Ok(ami) if param == ec2::gpu_image_parameter() => (
                    ami,
                    format!("{}, from SSM parameter {param}", ec2::GPU_IMAGE_NAME),
                ),
                Ok(ami) => (
                    ami,
                    format!("from SSM parameter {param}; it must bring the NVIDIA driver"),
                ),
                Err(e) => {
                    found.errors.push(format!("Error: {at}: {}", e.message));
                    continue;
                }
            },
            (None, None) => continue,
        };
        found.notes.push(format!(
            "{at}: image {image} ({what}) because {instance_type} has {gpus}"
        ));
    }
    Ok(())
}

pub fn plan_hosted(p: &AwsProvider, kind: Kind, spec: &DeploymentSpec) -> Result<Planned> {
    if !kind.is_hosted() {
        return Err(crate::no_such_kind(kind));
    }
    steps::plan(kind, spec, &*context(p, spec)?)
}

/// What the VM needs in each region it may move to (`anycloud_provider::placement`): the
/// key pair and the security group, made on entering a region and deleted on leaving it;
/// the image, resolved per region (an AMI id is a region's own).
struct Ec2Mover<'a> {
    p: &'a AwsProvider,
    t: &'a Target<'a>,
    public_key: &'a str,
    client_token: &'a str,
    /// In the region entered last.
    group: Option<String>,
    ami: Option<String>,
}

impl Ec2Mover<'_> {
    fn owner(&self) -> Result<ec2::Owner<'_>> {
        let a = self.t.attrs;
        Ok(ec2::Owner {
            deployment: attr_str(a, "deployment")?,
            lineage: self.t.lineage,
            project: a.get("project").and_then(|p| p.as_str()),
        })
    }

    fn described(&self, i: &ec2::Instance, placement: &Placement) -> Attrs {
        let mut made = Attrs::new();
        made.insert("ami".into(), json!(self.ami));
        made.insert("instance_id".into(), json!(i.id));
        made.insert("public_ip".into(), json!(i.public_ip));
        made.insert(
            "lifecycle".into(),
            json!(i.lifecycle.as_deref().unwrap_or("on-demand")),
        );
        made.insert(placement::ATTRIBUTE.into(), placement.to_json());
        made
    }
}

#[async_trait::async_trait]
impl placement::Mover for Ec2Mover<'_> {
    type Made = ec2::Instance;

    async fn zones(&mut self, region: &str) -> Result<Vec<String>> {
        ec2::zones(self.p.clients(), region).await
    }

    async fn enter(&mut self, placement: &Placement) -> Result<()> {
        // Recorded before anything is made there: a run killed in this region leaves a
        // record whose destroy looks here.
        let mut made = Attrs::new();
        made.insert(placement::ATTRIBUTE.into(), placement.to_json());
        anycloud_provider::output::made(&made);
        let (clients, a, region) = (self.p.clients(), self.t.attrs, placement.region.as_str());
        let owner = self.owner()?;
        ec2::import_key(
            clients,
            region,
            attr_str(a, "key_name")?,
            self.public_key,
            &owner,
        )
        .await?;
        let group = ec2::ensure_security_group(
            clients,
            region,
            attr_str(a, "security_group")?,
            attr_str(a, "ssh_cidr")?,
            &owner,
        )
        .await?;
        let ami = match (
            a.get("ami").and_then(|v| v.as_str()),
            a.get("image_parameter").and_then(|v| v.as_str()),
        ) {
            (Some(ami), _) => ami.to_owned(),
            (None, Some(param)) => ec2::image_of_parameter(clients, region, param).await?,
            (None, None) => ec2::latest_debian(clients, region).await?,
        };
        self.group = Some(group);
        self.ami = Some(ami);
        Ok(())
    }

    async fn launch(&mut self, placement: &Placement) -> Result<Launched<ec2::Instance>> {
        let a = self.t.attrs;
        // One token per place: EC2 refuses a token reused with other parameters.
        let token = format!("{}-{}", self.client_token, placement.zone);
        let (group, ami) = (
            self.group.clone().unwrap_or_default(),
            self.ami.clone().unwrap_or_default(),
        );
        let launch = ec2::Launch {
            region: &placement.region,
            zone: &placement.zone,
            owner: self.owner()?,
            client_token: &token,
            ami: &ami,
            instance_type: attr_str(a, "instance_type")?,
            spot: a.get("spot").and_then(|s| s.as_bool()).unwrap_or(false),
            disk_gb: a.get("disk_gb").and_then(|d| d.as_i64()).map(|d| d as i32),
            key_name: attr_str(a, "key_name")?,
            security_group_id: &group,
            instance_profile: attr_str(a, "instance_profile")?,
            terminate_on_shutdown: terminates_on_shutdown(a),
        };
        // Recorded as soon as EC2 names the instance, and again once it has an address: a
        // run killed while waiting leaves a record that a destroy terminates.
        ec2::ensure_instance(self.p.clients(), &launch, |i| {
            anycloud_provider::output::made(&self.described(i, placement))
        })
        .await
    }

    async fn leave(&mut self, region: &str) -> Result<()> {
        let (clients, a, lineage) = (self.p.clients(), self.t.attrs, self.t.lineage);
        ec2::delete_security_group(clients, region, attr_str(a, "security_group")?, lineage)
            .await?;
        ec2::delete_key(clients, region, attr_str(a, "key_name")?, lineage).await
    }
}

pub async fn create(p: &AwsProvider, t: &Target<'_>) -> Result<Attrs> {
    let a = t.attrs;
    let deployment = attr_str(a, "deployment")?;
    let key = keys::ensure_deployment_key(&p.keys_dir, deployment)
        .map_err(|e| ProviderError::permanent(e.to_string()))?;
    let token_key = format!("{}/{}", t.lineage, t.address);
    let client_token = p
        .client_tokens
        .lock()
        .expect("no panic while held")
        .entry(token_key.clone())
        .or_insert_with(|| uuid::Uuid::new_v4().to_string())
        .clone();
    let home = attr_str(a, "region")?;
    let continent = crate::regions::continent(home)
        .map(|c| anycloud_provider::Regions::Table(crate::regions::REGIONS).of_continent(c))
        .unwrap_or_default();
    let mut regions = placement::regions_of(a, &continent)?;
    // A create cut short in a region it had moved to goes on from there: its instance may
    // be starting there, and the regions before it refused.
    if let Some(i) = p
        .placements
        .get(t.address)
        .and_then(|r| regions.iter().position(|x| *x == r.region))
    {
        regions.drain(..i);
    }
    let mut mover = Ec2Mover {
        p,
        t,
        public_key: &key.public_key,
        client_token: &client_token,
        group: None,
        ami: None,
    };
    let placed = placement::place(&regions, &mut mover).await;
    let (instance, placed) = match placed {
        Ok(placed) => placed,
        Err(e) => {
            // Nothing is left in any region: the record names none.
            let mut made = Attrs::new();
            made.insert(placement::ATTRIBUTE.into(), serde_json::Value::Null);
            anycloud_provider::output::made(&made);
            return Err(e);
        }
    };
    p.client_tokens
        .lock()
        .expect("no panic while held")
        .remove(&token_key);
    let mut out = a.clone();
    out.extend(mover.described(&instance, &placed));
    anycloud_provider::output::made(&out);
    // Waits for SSH (a fresh VM takes a while, and may refuse the key until cloud-init has
    // installed it), pins the host key on first sight.
    let ssh = connection(p, &out)?;
    let host_key = ssh.connect().await.map_err(ProviderError::from)?;
    out.insert("host_key".into(), json!(host_key));
    out.insert("public_key".into(), json!(key.public_key));
    out.insert("key_fingerprint".into(), json!(key.fingerprint));
    Ok(out)
}

/// In place only what can change in place: who may reach SSH.
/// Whether the planned instance is terminated by its own shutdown (`idle_shutdown`).
fn terminates_on_shutdown(a: &Attrs) -> bool {
    a.get("shutdown_behavior").and_then(|v| v.as_str()) == Some("terminate")
}

pub async fn update(p: &AwsProvider, prior: &Attrs, t: &Target<'_>) -> Result<Attrs> {
    let a = t.attrs;
    if terminates_on_shutdown(prior) != terminates_on_shutdown(a) {
        let id = prior
            .get("instance_id")
            .or_else(|| a.get("instance_id"))
            .and_then(|v| v.as_str())
            .ok_or_else(|| ProviderError::permanent("the instance has no recorded id"))?;
        ec2::set_shutdown_behavior(
            p.clients(),
            attr_str(a, "region")?,
            id,
            terminates_on_shutdown(a),
        )
        .await?;
    }
    if prior.get("ssh_cidr") != a.get("ssh_cidr") {
        let owner = ec2::Owner {
            deployment: attr_str(a, "deployment")?,
            lineage: t.lineage,
            project: a.get("project").and_then(|p| p.as_str()),
        };
        ec2::ensure_security_group(
            p.clients(),
            &region_of(prior)?,
            attr_str(a, "security_group")?,
            attr_str(a, "ssh_cidr")?,
            &owner,
        )
        .await?;
    }
    Ok(a.clone())
}

/// Where a recorded VM's objects are: its placement's region, else its deployment's.
fn region_of(vm: &Attrs) -> Result<String> {
    Placement::region_of(vm)
        .ok_or_else(|| ProviderError::permanent("the VM's record names no region"))
}

pub async fn delete(p: &AwsProvider, t: &Target<'_>) -> Result<()> {
    let a = t.attrs;
    let clients = p.clients();
    let region = &region_of(a)?;
    let recorded = a
        .get("instance_id")
        .and_then(|v| v.as_str())
        .map(String::from);
    // A create cut short before EC2 answered recorded no instance id: the instance (if it
    // was started) is found by the deployment's and the state's tags.
    let id = match recorded {
        Some(id) => Some(id),
        None => ec2::find(clients, region, attr_str(a, "deployment")?, t.lineage)
            .await?
            .map(|i| i.id),
    };
    if let Some(id) = id.as_deref() {
        let alive = ec2::in_region(clients, region)
            .await?
            .get(id)
            .is_some_and(|i| i.alive());
        // Only a running VM that SSH reached (and so may have been set up) has anything left
        // to upload; a terminated one has no disk, and one that never answered never ran a
        // job: it is terminated without trying.
        let reached = a.get("host_key").and_then(|k| k.as_str()).is_some();
        if alive && reached {
            let private = HostedPrivate::of(t)?;
            steps::flush(&*connection(p, a)?, &private.layout, &private.flush).await?;
        }
        ec2::terminate(clients, region, id).await?;
    }
    ec2::delete_security_group(clients, region, attr_str(a, "security_group")?, t.lineage).await?;
    ec2::delete_key(clients, region, attr_str(a, "key_name")?, t.lineage).await
}

fn vm_of<'a>(t: &Target<'a>) -> Result<&'a Attrs> {
    t.dep(Kind::Vm)
        .ok_or_else(|| ProviderError::permanent("no VM recorded for this step"))
}

/// The output of the job on this VM (its container target's).
pub async fn job_log(
    p: &AwsProvider,
    t: &Target<'_>,
    range: anycloud_provider::LogRange<'_>,
) -> Result<anycloud_provider::JobLog> {
    steps::job_log(&*connection(p, vm_of(t)?)?, t, range).await
}

/// Empties the job's checkpoint: on this VM, then in its bucket with the operator's
/// credentials (the instance role may delete nothing).
pub async fn clear_checkpoint(
    p: &AwsProvider,
    t: &Target<'_>,
) -> Result<anycloud_provider::Cleared> {
    let cleared = steps::clear_checkpoint(
        &*connection(p, vm_of(t)?)?,
        t,
        steps::BucketEmptiedBy::Caller,
    )
    .await?;
    // rclone's name for it: `s3-<region>:<bucket>` (vm_host::context).
    let bucket = cleared
        .remote
        .split_once(':')
        .map(|(_, bucket)| bucket)
        .filter(|b| !b.is_empty() && !b.contains('/'))
        .ok_or_else(|| {
            ProviderError::permanent(format!(
                "{}: the checkpoint's remote {:?} names no bucket",
                t.address, cleared.remote
            ))
        })?;
    // Only this state's bucket is emptied (a state from before checkpoint buckets had to be
    // this state's may record the user's own).
    if let Some(whose) = crate::s3::owner_of(
        p.clients(),
        bucket,
        t.lineage,
        crate::owner::Record::Nothing,
    )
    .await?
    {
        crate::owner::must_be_ours(&whose, &format!("checkpoint bucket '{bucket}'"), t.lineage)?;
    }
    crate::s3::empty(p.clients(), bucket).await?;
    Ok(cleared)
}

pub async fn apply_hosted(p: &AwsProvider, t: &Target<'_>) -> Result<Attrs> {
    steps::apply(&*connection(p, vm_of(t)?)?, t).await
}

pub async fn delete_hosted(p: &AwsProvider, t: &Target<'_>) -> Result<()> {
    let Some(vm) = t.dep(Kind::Vm) else {
        return Ok(());
    };
    let region = &region_of(vm)?;
    let id = vm.get("instance_id").and_then(|v| v.as_str()).unwrap_or("");
    let alive = ec2::in_region(p.clients(), region)
        .await?
        .get(id)
        .is_some_and(|i| i.alive());
    // On a terminated VM there is nothing left to stop or upload.
    if !alive {
        return Ok(());
    }
    steps::delete(&*connection(p, vm)?, t).await
}

/// What a refresh (or `status`) learns of the VMs among some targets: anycloud's instances,
/// one DescribeInstances per region, and one SSH probe per live VM for what runs on it.
pub struct Machines {
    instances: BTreeMap<String, ec2::Instance>,
    probes: Vec<steps::Probed>,
}

impl Machines {
    pub async fn find(p: &AwsProvider, targets: &[Target<'_>]) -> Result<Machines> {
        let vm_of = |t: &Target<'_>| -> Option<Attrs> {
            match t.kind {
                Kind::Vm => Some(t.attrs.clone()),
                k if k.is_hosted() => t.dep(Kind::Vm).cloned(),
                _ => None,
            }
        };
        let regions: BTreeSet<String> = targets
            .iter()
            .filter_map(vm_of)
            .filter_map(|vm| Placement::region_of(&vm))
            .collect();
        let mut instances = BTreeMap::new();
        for region in regions {
            instances.extend(ec2::in_region(p.clients(), &region).await?);
        }
        let alive: BTreeSet<&str> = instances
            .values()
            .filter(|i| i.alive())
            .map(|i| i.id.as_str())
            .collect();
        let mut hosts: Vec<Option<Arc<dyn Host>>> = Vec::with_capacity(targets.len());
        for t in targets {
            let live_vm = t.dep(Kind::Vm).filter(|vm| {
                vm.get("instance_id")
                    .and_then(|v| v.as_str())
                    .is_some_and(|id| alive.contains(id))
            });
            hosts.push(match live_vm {
                Some(vm) if t.kind.is_hosted() => Some(connection(p, vm)? as Arc<dyn Host>),
                _ => None,
            });
        }
        let probes = steps::probe_each_host(targets, hosts, |_| None).await;
        Ok(Machines { instances, probes })
    }

    /// A stopped (or stopping) instance still exists and still holds its security group: its
    /// state differs from the planned one, which replaces it.
    pub fn read_vm(&self, t: &Target<'_>) -> Option<Attrs> {
        let id = t.attrs.get("instance_id")?.as_str()?;
        let i = self.instances.get(id)?;
        let mut a = t.attrs.clone();
        a.insert("public_ip".into(), json!(i.public_ip));
        let state = if i.alive() {
            "running"
        } else {
            i.state.as_str()
        };
        a.insert("instance_state".into(), json!(state));
        Some(a)
    }

    pub fn read_hosted(&self, i: usize, t: &Target<'_>) -> anycloud_provider::Read {
        steps::read_probed(t, &self.probes[i])
    }

    pub fn observe(&self, i: usize, t: &Target<'_>) -> BTreeMap<String, String> {
        match (t.kind, &self.probes[i]) {
            (Kind::Vm, _) => {
                let id = t
                    .attrs
                    .get("instance_id")
                    .and_then(|v| v.as_str())
                    .unwrap_or("");
                let mut facts = BTreeMap::new();
                facts.insert(
                    "instance".into(),
                    match self.instances.get(id) {
                        Some(i) => format!("{} {}", i.id, i.state),
                        None => "gone (terminated or missing)".into(),
                    },
                );
                facts
            }
            (k, probed) if k.is_hosted() => steps::observe_probed(t, probed),
            _ => BTreeMap::new(),
        }
    }
}
