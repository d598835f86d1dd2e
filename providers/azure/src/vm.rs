//! The VM on Azure, and everything that runs on it through the host layer's steps: reached
//! over SSH as the image's non-root user (`azureuser`, with sudo), its uploads signed in as
//! the deployment's managed identity (rclone's `use_msi`: no key, SAS or connection string).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anycloud_host::{
    keys, steps, testing, Host, HostContext, HostedPrivate, SshHost, SshTarget, VmLayout,
};
use anycloud_provider::{
    attr_str, Attrs, BucketRole, DeploymentSpec, Kind, Planned, ProviderError, Result, Target,
};
use serde_json::json;

use crate::compute::{self, Fleet, Machine, Nic, COMPUTE_API, NETWORK_API};
use crate::{identity, naming, owner, AzureProvider};

/// SSH open to the world (key authentication only) when `ssh_cidr` is not set.
pub const OPEN_CIDR: &str = "0.0.0.0/0";
/// How long a new VM may take to answer SSH.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);

fn remote_name(account: &str) -> String {
    format!("azure-{account}")
}

/// `rclone.conf`: one remote for the continent's account, signed in as the VM's only
/// user-assigned identity through the instance metadata service. `blob_suffix` only for a
/// blob service elsewhere than `{account}.blob.core.windows.net` (rclone's `endpoint`).
pub fn rclone_conf(account: &str, blob_suffix: Option<&str>) -> String {
    let mut conf = format!(
        "[{}]\ntype = azureblob\naccount = {account}\nuse_msi = true\n",
        remote_name(account)
    );
    if let Some(suffix) = blob_suffix {
        conf.push_str(&format!("endpoint = {suffix}\n"));
    }
    conf
}

/// `account`: the deployment's continent's account (`AzureProvider::account`).
pub fn context(
    spec: &DeploymentSpec,
    account: &str,
    blob_suffix: Option<&str>,
) -> Result<HostContext> {
    let remotes: BTreeMap<BucketRole, String> = spec
        .buckets
        .iter()
        .map(|(role, b)| (*role, format!("{}:{}", remote_name(account), b.name)))
        .collect();
    // The identity may list only its own containers: check one of them.
    let check_target = [
        BucketRole::Output,
        BucketRole::Checkpoint,
        BucketRole::Input,
    ]
    .iter()
    .find_map(|r| remotes.get(r).cloned())
    .unwrap_or_else(|| format!("{}:", remote_name(account)));
    Ok(HostContext {
        deployment: spec.id.clone(),
        layout: VmLayout::on_vm(&testing::vm_root()?),
        rclone_conf: rclone_conf(account, blob_suffix),
        check_target,
        remotes,
        // The job reaches the instance metadata service through Docker's bridge.
        network: "bridge".into(),
        container_user: None,
        power_off: Some(anycloud_host::idle::POWER_OFF.to_owned()),
    })
}

fn host_context(p: &AzureProvider, spec: &DeploymentSpec) -> Result<Arc<HostContext>> {
    let account = p.account(&spec.continent)?;
    let suffix = p.settings().endpoints.blob_suffix.clone();
    p.contexts
        .get(spec, || context(spec, &account, suffix.as_deref()))
}

pub fn ssh_target(vm: &Attrs, key_path: PathBuf) -> Result<SshTarget> {
    let (host, port) = match testing::ssh_address()? {
        Some(over) => over,
        None => (
            vm.get("public_ip_address")
                .and_then(|v| v.as_str())
                .ok_or_else(|| ProviderError::permanent("the VM has no public address"))?
                .to_owned(),
            22,
        ),
    };
    Ok(SshTarget {
        host,
        port,
        user: attr_str(vm, "ssh_user")?.to_owned(),
        key_path,
        pinned: vm
            .get("host_key")
            .and_then(|v| v.as_str())
            .map(String::from),
        connect_timeout: CONNECT_TIMEOUT,
        // The agent installs the key a little after sshd starts answering.
        retry_refused_key: true,
    })
}

fn connection(p: &AzureProvider, vm: &Attrs) -> Result<Arc<SshHost>> {
    let deployment = attr_str(vm, "deployment")?;
    let key = keys::ensure_deployment_key(&p.keys_dir, deployment)
        .map_err(|e| ProviderError::permanent(e.to_string()))?;
    p.connections
        .get(ssh_target(vm, key.private_path)?)
        .map_err(ProviderError::from)
}

pub fn plan(p: &AzureProvider, spec: &DeploymentSpec) -> Result<Planned> {
    let subscription = p.subscription()?;
    let ctx = host_context(p, spec)?;
    let name = naming::identity(&spec.id);
    let group = naming::region_group(&spec.region);
    let size = spec.vm.machine_type.as_deref().ok_or_else(|| {
        ProviderError::permanent(format!("deployment {} has no vm.type", spec.id))
    })?;
    let mut attrs = Attrs::new();
    if let Some(project) = &spec.project {
        attrs.insert("project".into(), json!(project));
    }
    attrs.insert("deployment".into(), json!(spec.id));
    attrs.insert("region".into(), json!(spec.region));
    attrs.insert("resource_group".into(), json!(group));
    attrs.insert("name".into(), json!(name));
    attrs.insert("size".into(), json!(size));
    attrs.insert("spot".into(), json!(spec.vm.spot));
    if let Some(d) = spec.vm.disk_gb {
        attrs.insert("disk_gb".into(), json!(d));
    }
    // `vm.image`, else with GPUs asked Azure's HPC image (NVIDIA's driver installed), else
    // Debian 12.
    let image = match &spec.vm.image {
        Some(image) => image.clone(),
        None if spec.container.gpus.is_some() => compute::urn(compute::GPU_IMAGE),
        None => compute::urn(compute::IMAGE),
    };
    attrs.insert("image".into(), json!(image));
    attrs.insert(
        "ssh_user".into(),
        json!(p
            .settings()
            .ssh_user
            .as_deref()
            .unwrap_or(compute::ADMIN_USER)),
    );
    attrs.insert(
        "ssh_cidr".into(),
        json!(p.settings().ssh_cidr.as_deref().unwrap_or(OPEN_CIDR)),
    );
    attrs.insert("power_state".into(), json!("running"));
    attrs.insert(
        "id".into(),
        json!(compute::vm_id(&subscription, &group, &name)),
    );
    attrs.insert(
        "identity".into(),
        json!(identity::path(&subscription, &group, &name)),
    );
    for (attr, kind) in [
        ("nsg", "networkSecurityGroups"),
        ("public_ip", "publicIPAddresses"),
        ("nic", "networkInterfaces"),
    ] {
        attrs.insert(
            attr.into(),
            json!(compute::network_id(&subscription, &group, kind, &name)),
        );
    }
    let private = steps::vm_planned(&ctx, &mut attrs);
    Ok(Planned {
        attrs,
        private,
        computed: [
            "public_ip_address",
            "host_key",
            "public_key",
            "key_fingerprint",
        ]
        .map(String::from)
        .to_vec(),
        force_new: [
            "region",
            "size",
            "spot",
            "disk_gb",
            "image",
            "ssh_user",
            "power_state",
            "identity",
        ]
        .map(String::from)
        .to_vec(),
        keep_on_destroy: false,
        // Said plainly: Azure bills a VM stopped from inside until it is deallocated.
        warnings: spec
            .idle_shutdown_secs
            .map(|idle| {
                anycloud_host::idle::plan_note(
                    idle,
                    "shuts its OS down. Azure keeps a VM stopped from inside ALLOCATED and still bills its compute: anycloud does not deallocate it yet, so cost stops only with `anycloud destroy` (or `az vm deallocate`)",
                )
            })
            .into_iter()
            .collect(),
    })
}

/// What a reviewer should know of the machines whose jobs ask for GPUs, asked of Azure
/// (Resource SKUs, the size's `GPUs` capability): a size without GPUs is warned of; one with
/// them names the image it gets and why.
pub async fn preflight(
    arm: &crate::arm::Arm,
    subscription: &str,
    targets: &[Target<'_>],
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    for (deployment, vm) in anycloud_provider::gpu_vms(targets)? {
        let (region, size) = (attr_str(vm, "region")?, attr_str(vm, "size")?);
        let at = format!("deployment.{deployment}.vm");
        let Some(gpus) = compute::gpus_of_size(arm, subscription, region, size).await? else {
            notes.push(format!(
                "{at}: the container asks for GPUs but VM size {size} has none (Azure Resource SKUs): the container will not start; use an N-series size such as Standard_NC4as_T4_v3"
            ));
            continue;
        };
        let image = attr_str(vm, "image")?;
        let what = if image == compute::urn(compute::GPU_IMAGE) {
            compute::GPU_IMAGE_NAME
        } else {
            "vm.image; it must bring the NVIDIA driver"
        };
        let plural = if gpus == 1 { "" } else { "s" };
        notes.push(format!(
            "{at}: image {image} ({what}) because {size} has {gpus} GPU{plural}"
        ));
    }
    Ok(notes)
}

pub fn plan_hosted(p: &AzureProvider, kind: Kind, spec: &DeploymentSpec) -> Result<Planned> {
    steps::plan(kind, spec, &*host_context(p, spec)?)
}

fn tags(t: &Target<'_>) -> Result<serde_json::Value> {
    let a = t.attrs;
    Ok(owner::tags(
        t.lineage,
        a.get("project").and_then(|p| p.as_str()),
        &[("anycloud-deployment", attr_str(a, "deployment")?)],
    ))
}

pub async fn create(p: &AzureProvider, t: &Target<'_>) -> Result<Attrs> {
    let a = t.attrs;
    let arm = p.arm()?;
    let subscription = p.subscription()?;
    let deployment = attr_str(a, "deployment")?;
    let region = attr_str(a, "region")?;
    let group = attr_str(a, "resource_group")?;
    let name = attr_str(a, "name")?;
    let tags = tags(t)?;
    let key = keys::ensure_deployment_key(&p.keys_dir, deployment)
        .map_err(|e| ProviderError::permanent(e.to_string()))?;
    crate::storage::ensure_group(arm, &subscription, group, region, t.lineage).await?;
    let region_tags = owner::tags(t.lineage, None, &[("anycloud-managed", "true")]);
    let subnet = compute::ensure_vnet(arm, &subscription, group, region, &region_tags).await?;
    compute::ensure_nsg(
        arm,
        attr_str(a, "nsg")?,
        region,
        attr_str(a, "ssh_cidr")?,
        &tags,
        t.lineage,
        name,
    )
    .await?;
    compute::ensure_public_ip(
        arm,
        attr_str(a, "public_ip")?,
        region,
        &tags,
        t.lineage,
        name,
    )
    .await?;
    compute::ensure_nic(
        arm,
        &Nic {
            id: attr_str(a, "nic")?,
            name,
            region,
            subnet: &subnet,
            public_ip: attr_str(a, "public_ip")?,
            nsg: attr_str(a, "nsg")?,
        },
        &tags,
        t.lineage,
    )
    .await?;
    let machine = Machine {
        id: attr_str(a, "id")?,
        name,
        region,
        size: attr_str(a, "size")?,
        image: attr_str(a, "image")?,
        spot: a.get("spot").and_then(|s| s.as_bool()).unwrap_or(false),
        disk_gb: a.get("disk_gb").and_then(|d| d.as_u64()),
        nic: attr_str(a, "nic")?,
        identity: attr_str(a, "identity")?,
        public_key: &key.public_key,
        admin_user: attr_str(a, "ssh_user")?,
    };
    compute::ensure_vm(arm, &machine, &tags, t.lineage).await?;
    let mut out = a.clone();
    out.insert(
        "public_ip_address".into(),
        json!(compute::address_of(arm, attr_str(a, "public_ip")?).await?),
    );
    // Recorded before the wait for SSH: a run killed meanwhile leaves a VM destroy finds.
    anycloud_provider::output::made(&out);
    let ssh = connection(p, &out)?;
    let host_key = ssh.connect().await.map_err(ProviderError::from)?;
    out.insert("host_key".into(), json!(host_key));
    out.insert("public_key".into(), json!(key.public_key));
    out.insert("key_fingerprint".into(), json!(key.fingerprint));
    Ok(out)
}

/// In place only who may reach SSH.
pub async fn update(p: &AzureProvider, prior: &Attrs, t: &Target<'_>) -> Result<Attrs> {
    let a = t.attrs;
    if prior.get("ssh_cidr") != a.get("ssh_cidr") {
        compute::ensure_nsg(
            p.arm()?,
            attr_str(a, "nsg")?,
            attr_str(a, "region")?,
            attr_str(a, "ssh_cidr")?,
            &tags(t)?,
            t.lineage,
            attr_str(a, "name")?,
        )
        .await?;
    }
    Ok(a.clone())
}

pub async fn delete(p: &AzureProvider, t: &Target<'_>) -> Result<()> {
    let a = t.attrs;
    let arm = p.arm()?;
    let lineage = t.lineage;
    let name = attr_str(a, "name")?;
    let id = attr_str(a, "id")?;
    let fleet = Fleet::list(arm, &p.subscription()?).await?;
    let running = fleet.power_state(id).as_deref() == Some("running");
    // Only a running VM that SSH reached has anything left to upload.
    if running && a.get("host_key").and_then(|k| k.as_str()).is_some() {
        let private = HostedPrivate::of(t)?;
        steps::flush(&*connection(p, a)?, &private.layout, &private.flush).await?;
    }
    compute::delete_ours(
        arm,
        id,
        COMPUTE_API,
        lineage,
        &format!("virtual machine {name}"),
    )
    .await?;
    compute::delete_ours(
        arm,
        attr_str(a, "nic")?,
        NETWORK_API,
        lineage,
        &format!("network interface {name}"),
    )
    .await?;
    compute::delete_ours(
        arm,
        attr_str(a, "public_ip")?,
        NETWORK_API,
        lineage,
        &format!("public IP {name}"),
    )
    .await?;
    compute::delete_ours(
        arm,
        attr_str(a, "nsg")?,
        NETWORK_API,
        lineage,
        &format!("network security group {name}"),
    )
    .await
}

fn vm_of<'a>(t: &Target<'a>) -> Result<&'a Attrs> {
    t.dep(Kind::Vm)
        .ok_or_else(|| ProviderError::permanent("no VM recorded for this step"))
}

/// The output of the job on this VM (its container target's).
pub async fn job_log(
    p: &AzureProvider,
    t: &Target<'_>,
    range: anycloud_provider::LogRange<'_>,
) -> Result<anycloud_provider::JobLog> {
    steps::job_log(&*connection(p, vm_of(t)?)?, t, range).await
}

/// Empties the job's checkpoint, on this VM and in its bucket.
pub async fn clear_checkpoint(
    p: &AzureProvider,
    t: &Target<'_>,
) -> Result<anycloud_provider::Cleared> {
    steps::clear_checkpoint(
        &*connection(p, vm_of(t)?)?,
        t,
        steps::BucketEmptiedBy::Machine,
    )
    .await
}

pub async fn apply_hosted(p: &AzureProvider, t: &Target<'_>) -> Result<Attrs> {
    steps::apply(&*connection(p, vm_of(t)?)?, t).await
}

pub async fn delete_hosted(p: &AzureProvider, t: &Target<'_>) -> Result<()> {
    let Some(vm) = t.dep(Kind::Vm) else {
        return Ok(());
    };
    let fleet = Fleet::list(p.arm()?, &p.subscription()?).await?;
    if fleet.power_state(attr_str(vm, "id")?).as_deref() != Some("running") {
        // On a VM that is gone or not running there is nothing left to stop or upload.
        return Ok(());
    }
    steps::delete(&*connection(p, vm)?, t).await
}

/// What a refresh learns of the VMs among some targets: two list calls for the whole
/// subscription, and one SSH probe per running VM for what runs on it.
pub struct Machines {
    fleet: Option<Fleet>,
    probes: Vec<steps::Probed>,
}

impl Machines {
    pub async fn find(p: &AzureProvider, targets: &[Target<'_>]) -> Result<Machines> {
        let wants = targets
            .iter()
            .any(|t| t.kind == Kind::Vm || t.kind.is_hosted());
        if !wants {
            return Ok(Machines {
                fleet: None,
                probes: vec![None; targets.len()],
            });
        }
        let fleet = Fleet::list(p.arm()?, &p.subscription()?).await?;
        let mut hosts: Vec<Option<Arc<dyn Host>>> = Vec::with_capacity(targets.len());
        for t in targets {
            let live_vm = t.dep(Kind::Vm).filter(|vm| {
                vm.get("id")
                    .and_then(|v| v.as_str())
                    .and_then(|id| fleet.power_state(id))
                    .as_deref()
                    == Some("running")
            });
            hosts.push(match live_vm {
                Some(vm) if t.kind.is_hosted() => Some(connection(p, vm)? as Arc<dyn Host>),
                _ => None,
            });
        }
        let probes = steps::probe_each_host(targets, hosts, |_| None).await;
        Ok(Machines {
            fleet: Some(fleet),
            probes,
        })
    }

    /// A deallocated or stopped VM differs from the planned `running`, which replaces it; an
    /// evicted Spot VM (policy Delete) is gone, which makes it anew.
    pub fn read_vm(&self, t: &Target<'_>) -> Option<Attrs> {
        let fleet = self.fleet.as_ref()?;
        let id = t.attrs.get("id")?.as_str()?;
        let state = fleet.power_state(id)?;
        if let Some(vm) = fleet.vms.get(&id.to_ascii_lowercase()) {
            if !owner::of_resource(vm, t.lineage).ours() {
                return None;
            }
        }
        let mut a = t.attrs.clone();
        a.insert("power_state".into(), json!(state));
        if let Some(address) = t
            .attrs
            .get("public_ip")
            .and_then(|v| v.as_str())
            .and_then(|ip| fleet.address(ip))
        {
            a.insert("public_ip_address".into(), json!(address));
        }
        Some(a)
    }

    pub fn read_hosted(&self, i: usize, t: &Target<'_>) -> anycloud_provider::Read {
        steps::read_probed(t, &self.probes[i])
    }

    pub fn observe(&self, i: usize, t: &Target<'_>) -> BTreeMap<String, String> {
        match (t.kind, &self.probes[i]) {
            (Kind::Vm, _) => {
                let id = t.attrs.get("id").and_then(|v| v.as_str()).unwrap_or("");
                let state = self.fleet.as_ref().and_then(|f| f.power_state(id));
                [(
                    "vm".to_owned(),
                    state.unwrap_or_else(|| "gone (deleted or evicted)".into()),
                )]
                .into()
            }
            (k, probed) if k.is_hosted() => steps::observe_probed(t, probed),
            _ => BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rclone_signs_in_as_the_vms_identity_and_holds_no_secret() {
        let conf = super::rclone_conf("anycloudeu0123456789a", None);
        assert_eq!(
            conf,
            "[azure-anycloudeu0123456789a]\ntype = azureblob\naccount = anycloudeu0123456789a\nuse_msi = true\n"
        );
        for secret in ["key", "sas", "connection_string", "client_secret"] {
            assert!(!conf.contains(&format!("{secret} =")), "{conf}");
        }
    }
}
