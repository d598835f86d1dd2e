//! The VM on Google Cloud, and everything that runs on it through the host layer's steps:
//! reached over SSH as the login user its `ssh-keys` metadata names (not root, with sudo),
//! its uploads signed in as the deployment's service account through the metadata server
//! (rclone's `env_auth`: no key file anywhere).

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
use serde_json::{json, Value};

use crate::compute::{self, Machine};
use crate::owner;
use crate::{naming, GcpProvider};
use anycloud_provider::placement::{self, Launched, Placement};

/// SSH open to the world (key authentication only) when `ssh_cidr` is not set.
pub const OPEN_CIDR: &str = "0.0.0.0/0";
/// How long a new VM may take to answer SSH.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
const REMOTE: &str = "gcs";

/// `rclone.conf`: one remote for Cloud Storage, signed in as the VM's service account by
/// the metadata server (`env_auth`; rclone before 1.61 has no such option and falls back to
/// the same Application Default Credentials). Uniform bucket-level access, and no bucket
/// check: the account may touch objects of its prefixes only, not the bucket itself.
/// `endpoint` only for Cloud Storage elsewhere than storage.googleapis.com.
pub fn rclone_conf(storage_root: Option<&str>) -> String {
    let mut conf = format!(
        "[{REMOTE}]\ntype = google cloud storage\nenv_auth = true\nbucket_policy_only = true\nno_check_bucket = true\n"
    );
    if let Some(root) = storage_root {
        conf.push_str(&format!("endpoint = {root}/storage/v1/\n"));
    }
    conf
}

pub fn context(
    spec: &DeploymentSpec,
    project: &str,
    storage_root: Option<&str>,
) -> Result<HostContext> {
    let remotes: BTreeMap<BucketRole, String> = spec
        .buckets
        .iter()
        .map(|(role, b)| {
            (
                *role,
                format!(
                    "{REMOTE}:{}/{}",
                    naming::continent_bucket(&b.continent, project),
                    b.name
                ),
            )
        })
        .collect();
    // The account may list only its own prefixes: check one of them.
    let check_target = [
        BucketRole::Output,
        BucketRole::Checkpoint,
        BucketRole::Input,
    ]
    .iter()
    .find_map(|r| remotes.get(r).cloned())
    .unwrap_or_else(|| {
        format!(
            "{REMOTE}:{}",
            naming::continent_bucket(&spec.continent, project)
        )
    });
    Ok(HostContext {
        deployment: spec.id.clone(),
        layout: VmLayout::on_vm(&testing::vm_root()?),
        rclone_conf: rclone_conf(storage_root),
        check_target,
        remotes,
        // The job reaches the metadata server through Docker's bridge.
        network: "bridge".into(),
        container_user: None,
        power_off: Some(anycloud_host::idle::POWER_OFF.to_owned()),
    })
}

fn host_context(p: &GcpProvider, spec: &DeploymentSpec) -> Result<Arc<HostContext>> {
    let project = p.project()?;
    let root = p.settings().endpoints.storage.clone();
    p.contexts
        .get(spec, || context(spec, &project, root.as_deref()))
}

pub fn ssh_target(vm: &Attrs, key_path: PathBuf) -> Result<SshTarget> {
    let (host, port) = match testing::ssh_address()? {
        Some(over) => over,
        None => (
            vm.get("nat_ip")
                .and_then(|v| v.as_str())
                .ok_or_else(|| ProviderError::permanent("the instance has no external address"))?
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
        // The guest agent adds the user and its key a little after sshd starts answering.
        retry_refused_key: true,
    })
}

fn connection(p: &GcpProvider, vm: &Attrs) -> Result<Arc<SshHost>> {
    let deployment = attr_str(vm, "deployment")?;
    let key = keys::ensure_deployment_key(&p.keys_dir, deployment)
        .map_err(|e| ProviderError::permanent(e.to_string()))?;
    p.connections
        .get(ssh_target(vm, key.private_path)?)
        .map_err(ProviderError::from)
}

pub fn plan(p: &GcpProvider, spec: &DeploymentSpec) -> Result<Planned> {
    let project = p.project()?;
    let ctx = host_context(p, spec)?;
    let machine_type = spec.vm.machine_type.as_deref().ok_or_else(|| {
        ProviderError::permanent(format!("deployment {} has no vm.type", spec.id))
    })?;
    let mut attrs = Attrs::new();
    if let Some(project) = &spec.project {
        attrs.insert("project".into(), json!(project));
    }
    attrs.insert("deployment".into(), json!(spec.id));
    attrs.insert("region".into(), json!(spec.region));
    if !spec.vm.regions.is_empty() {
        attrs.insert("regions".into(), json!(spec.vm.regions));
    }
    attrs.insert("name".into(), json!(naming::instance(&spec.id)));
    attrs.insert("firewall".into(), json!(naming::firewall(&spec.id)));
    attrs.insert("machine_type".into(), json!(machine_type));
    attrs.insert("spot".into(), json!(spec.vm.spot));
    if let Some(d) = spec.vm.disk_gb {
        attrs.insert("disk_gb".into(), json!(d));
    }
    // `vm.image`, else with GPUs asked a Deep Learning VM image (which installs NVIDIA's
    // driver at first boot when asked), else Debian 12.
    let gpu_default = spec.vm.image.is_none() && spec.container.gpus.is_some();
    let image = match &spec.vm.image {
        Some(image) => image.as_str(),
        None if gpu_default => compute::GPU_IMAGE,
        None => compute::IMAGE,
    };
    attrs.insert("image".into(), json!(image));
    if gpu_default {
        attrs.insert("install_nvidia_driver".into(), json!(true));
    }
    attrs.insert(
        "ssh_user".into(),
        json!(p
            .settings()
            .ssh_user
            .as_deref()
            .unwrap_or(compute::SSH_USER)),
    );
    attrs.insert(
        "ssh_cidr".into(),
        json!(p.settings().ssh_cidr.as_deref().unwrap_or(OPEN_CIDR)),
    );
    attrs.insert("status".into(), json!("RUNNING"));
    attrs.insert(
        "service_account".into(),
        json!(naming::account_email(&spec.id, &project)),
    );
    let private = steps::vm_planned(&ctx, &mut attrs);
    // Said plainly: an OS shutdown stops a Compute Engine instance, it does not delete it.
    let warnings = spec
        .idle_shutdown_secs
        .map(|idle| {
            anycloud_host::idle::plan_note(
                idle,
                "shuts its OS down: Compute Engine stops the instance (TERMINATED), which ends the billing of its vCPUs and memory; its boot disk stays, and is billed, until `anycloud destroy`",
            )
        })
        .into_iter()
        .collect();
    Ok(Planned {
        attrs,
        private,
        // The zone is where capacity was found (`anycloud_provider::placement`): recorded,
        // never planned, so the next plan does not move the VM back to the first zone.
        computed: [
            "zone",
            "nat_ip",
            "host_key",
            "public_key",
            "key_fingerprint",
            placement::ATTRIBUTE,
        ]
        .map(String::from)
        .to_vec(),
        force_new: [
            "region",
            "machine_type",
            "spot",
            "disk_gb",
            "image",
            "install_nvidia_driver",
            "ssh_user",
            "status",
            "service_account",
        ]
        .map(String::from)
        .to_vec(),
        keep_on_destroy: false,
        warnings,
    })
}

/// What a reviewer should know of the machines whose jobs ask for GPUs, asked of Compute
/// Engine (`machineTypes.get`, its `accelerators`): a type that brings no GPU is warned of;
/// one that does names the image it gets and why.
pub async fn preflight(cx: &crate::Cx<'_>, targets: &[Target<'_>]) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    for (deployment, vm) in anycloud_provider::gpu_vms(targets)? {
        // The zone the VM runs in, or the first its region lists (a machine type's GPUs
        // are the same in every zone that offers it).
        let zone = match vm.get("zone").and_then(|z| z.as_str()) {
            Some(zone) => zone.to_owned(),
            None => compute::zones(cx, attr_str(vm, "region")?).await?.remove(0),
        };
        let (zone, machine_type) = (zone.as_str(), attr_str(vm, "machine_type")?);
        let at = format!("deployment.{deployment}.vm");
        let Some(gpus) = compute::gpus_of_type(cx, zone, machine_type).await? else {
            notes.push(format!(
                "{at}: the container asks for GPUs but machine type {machine_type} brings none (Compute Engine machineTypes.get): the container will not start; use an accelerator-optimized type such as g2-standard-4 or a2-highgpu-1g (anycloud attaches no GPUs to N1 types)"
            ));
            continue;
        };
        let image = attr_str(vm, "image")?;
        let what = if image == compute::GPU_IMAGE {
            compute::GPU_IMAGE_NAME
        } else {
            "vm.image; it must bring the NVIDIA driver"
        };
        notes.push(format!(
            "{at}: image {image} ({what}) because {machine_type} has {gpus}"
        ));
    }
    Ok(notes)
}

pub fn plan_hosted(p: &GcpProvider, kind: Kind, spec: &DeploymentSpec) -> Result<Planned> {
    steps::plan(kind, spec, &*host_context(p, spec)?)
}

fn describe(t: &Target<'_>, what: &str) -> String {
    owner::description(
        what,
        t.lineage,
        t.attrs.get("project").and_then(|p| p.as_str()),
    )
}

/// What the VM needs in each place it may move to (`anycloud_provider::placement`): only
/// the instance itself, since its firewall rule is the project's network's, global; a zone
/// a create cut short had reached is tried first in its region (its instance may be there).
struct GceMover<'a> {
    cx: &'a crate::Cx<'a>,
    machine: Machine<'a>,
    lineage: &'a str,
    recalled: Option<Placement>,
}

#[async_trait::async_trait]
impl placement::Mover for GceMover<'_> {
    type Made = Value;

    async fn zones(&mut self, region: &str) -> Result<Vec<String>> {
        let mut zones = compute::zones(self.cx, region).await?;
        if let Some(at) = self.recalled.as_ref().filter(|r| r.region == region) {
            if let Some(i) = zones.iter().position(|z| *z == at.zone) {
                let zone = zones.remove(i);
                zones.insert(0, zone);
            }
        }
        Ok(zones)
    }

    async fn enter(&mut self, placement: &Placement) -> Result<()> {
        record_placement(placement);
        Ok(())
    }

    async fn launch(&mut self, placement: &Placement) -> Result<Launched<Value>> {
        // Recorded before the insert: a run killed meanwhile leaves a record naming the
        // zone its instance may be in.
        record_placement(placement);
        let machine = Machine {
            zone: &placement.zone,
            labels: self.machine.labels.clone(),
            ..self.machine
        };
        compute::ensure_instance(self.cx, &machine, self.lineage).await
    }

    async fn leave(&mut self, _region: &str) -> Result<()> {
        // A refused insert made nothing; the firewall rule is global.
        Ok(())
    }
}

fn record_placement(placement: &Placement) {
    let mut made = Attrs::new();
    made.insert(placement::ATTRIBUTE.into(), placement.to_json());
    made.insert("zone".into(), json!(placement.zone));
    anycloud_provider::output::made(&made);
}

pub async fn create(p: &GcpProvider, t: &Target<'_>) -> Result<Attrs> {
    let a = t.attrs;
    let cx = p.cx()?;
    let deployment = attr_str(a, "deployment")?;
    let name = attr_str(a, "name")?;
    let key = keys::ensure_deployment_key(&p.keys_dir, deployment)
        .map_err(|e| ProviderError::permanent(e.to_string()))?;
    compute::ensure_firewall(
        &cx,
        attr_str(a, "firewall")?,
        name,
        attr_str(a, "ssh_cidr")?,
        t.lineage,
        &describe(t, &format!("SSH to {name}")),
    )
    .await?;
    let machine = Machine {
        name,
        zone: "",
        machine_type: attr_str(a, "machine_type")?,
        spot: a.get("spot").and_then(|s| s.as_bool()).unwrap_or(false),
        disk_gb: a.get("disk_gb").and_then(|d| d.as_u64()),
        image: attr_str(a, "image")?,
        install_nvidia_driver: a
            .get("install_nvidia_driver")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        service_account: attr_str(a, "service_account")?,
        ssh_user: attr_str(a, "ssh_user")?,
        public_key: &key.public_key,
        labels: owner::labels(
            t.lineage,
            a.get("project").and_then(|p| p.as_str()),
            &[("anycloud-deployment", deployment)],
        ),
    };
    let home = attr_str(a, "region")?;
    let table = anycloud_provider::Regions::Table(crate::REGIONS);
    let continent = table
        .continent(home)
        .map(|c| table.of_continent(c))
        .unwrap_or_default();
    let mut regions = placement::regions_of(a, &continent)?;
    let recalled = p.placements.get(t.address);
    // A create cut short in a region it had moved to goes on from there.
    if let Some(i) = recalled
        .as_ref()
        .and_then(|r| regions.iter().position(|x| *x == r.region))
    {
        regions.drain(..i);
    }
    let mut mover = GceMover {
        cx: &cx,
        machine,
        lineage: t.lineage,
        recalled,
    };
    let (instance, placed) = match placement::place(&regions, &mut mover).await {
        Ok(placed) => placed,
        Err(e) => {
            // No instance was made anywhere: the record names no place.
            let mut made = Attrs::new();
            made.insert(placement::ATTRIBUTE.into(), Value::Null);
            made.insert("zone".into(), Value::Null);
            anycloud_provider::output::made(&made);
            return Err(e);
        }
    };
    let mut out = a.clone();
    out.insert("zone".into(), json!(placed.zone));
    out.insert(placement::ATTRIBUTE.into(), placed.to_json());
    out.insert(
        "nat_ip".into(),
        json!(compute::nat_ip(&instance).unwrap_or_default()),
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
pub async fn update(p: &GcpProvider, prior: &Attrs, t: &Target<'_>) -> Result<Attrs> {
    let a = t.attrs;
    if prior.get("ssh_cidr") != a.get("ssh_cidr") {
        let name = attr_str(a, "name")?;
        compute::ensure_firewall(
            &p.cx()?,
            attr_str(a, "firewall")?,
            name,
            attr_str(a, "ssh_cidr")?,
            t.lineage,
            &describe(t, &format!("SSH to {name}")),
        )
        .await?;
    }
    Ok(a.clone())
}

async fn status_of(p: &GcpProvider, vm: &Attrs, lineage: &str) -> Result<Option<String>> {
    let cx = p.cx()?;
    // A create that found no capacity anywhere recorded no zone: no instance.
    let Some(zone) = vm.get("zone").and_then(|z| z.as_str()) else {
        return Ok(None);
    };
    let url = compute::instance_url(&cx, zone, attr_str(vm, "name")?);
    Ok(cx
        .g
        .get(&url)
        .await?
        .filter(|i| owner::of_labels(i, lineage).ours())
        .and_then(|i| i.get("status")?.as_str().map(String::from)))
}

pub async fn delete(p: &GcpProvider, t: &Target<'_>) -> Result<()> {
    let a = t.attrs;
    let cx = p.cx()?;
    let name = attr_str(a, "name")?;
    let running = status_of(p, a, t.lineage).await?.as_deref() == Some("RUNNING");
    // Only a running VM that SSH reached has anything left to upload.
    if running && a.get("host_key").and_then(|k| k.as_str()).is_some() {
        let private = HostedPrivate::of(t)?;
        steps::flush(&*connection(p, a)?, &private.layout, &private.flush).await?;
    }
    if let Some(zone) = a.get("zone").and_then(|z| z.as_str()) {
        compute::delete_ours(
            &cx,
            &compute::instance_url(&cx, zone, name),
            t.lineage,
            &format!("instance {name}"),
            true,
        )
        .await?;
    }
    // The rule admits SSH to this instance's tag only: unused once the instance is gone.
    compute::delete_ours(
        &cx,
        &compute::firewall_of(&cx, attr_str(a, "firewall")?),
        t.lineage,
        &format!("firewall rule {}", attr_str(a, "firewall")?),
        false,
    )
    .await
}

fn vm_of<'a>(t: &Target<'a>) -> Result<&'a Attrs> {
    t.dep(Kind::Vm)
        .ok_or_else(|| ProviderError::permanent("no VM recorded for this step"))
}

/// The output of the job on this VM (its container target's).
pub async fn job_log(
    p: &GcpProvider,
    t: &Target<'_>,
    range: anycloud_provider::LogRange<'_>,
) -> Result<anycloud_provider::JobLog> {
    steps::job_log(&*connection(p, vm_of(t)?)?, t, range).await
}

/// Empties the job's checkpoint, on this VM and in its bucket.
pub async fn clear_checkpoint(
    p: &GcpProvider,
    t: &Target<'_>,
) -> Result<anycloud_provider::Cleared> {
    steps::clear_checkpoint(
        &*connection(p, vm_of(t)?)?,
        t,
        steps::BucketEmptiedBy::Machine,
    )
    .await
}

pub async fn apply_hosted(p: &GcpProvider, t: &Target<'_>) -> Result<Attrs> {
    steps::apply(&*connection(p, vm_of(t)?)?, t).await
}

pub async fn delete_hosted(p: &GcpProvider, t: &Target<'_>) -> Result<()> {
    let Some(vm) = t.dep(Kind::Vm) else {
        return Ok(());
    };
    if status_of(p, vm, t.lineage).await?.as_deref() != Some("RUNNING") {
        // On a VM that is gone or not running there is nothing left to stop or upload.
        return Ok(());
    }
    steps::delete(&*connection(p, vm)?, t).await
}

/// What a refresh learns of the VMs among some targets: one instance list per zone (by the
/// state's lineage label), one list of the project's firewall rules, and one SSH probe per
/// running VM for what runs on it.
pub struct Machines {
    instances: Option<BTreeMap<String, Value>>,
    firewalls: BTreeMap<String, Value>,
    probes: Vec<steps::Probed>,
}

fn status<'a>(instances: &'a BTreeMap<String, Value>, vm: &Attrs) -> Option<&'a str> {
    instances
        .get(vm.get("name")?.as_str()?)?
        .get("status")?
        .as_str()
}

impl Machines {
    pub async fn find(p: &GcpProvider, targets: &[Target<'_>]) -> Result<Machines> {
        let wants = targets
            .iter()
            .any(|t| t.kind == Kind::Vm || t.kind.is_hosted());
        if !wants {
            return Ok(Machines {
                instances: None,
                firewalls: BTreeMap::new(),
                probes: vec![None; targets.len()],
            });
        }
        let mut zones: Vec<String> = targets
            .iter()
            .filter_map(|t| {
                let vm = if t.kind == Kind::Vm {
                    Some(t.attrs)
                } else {
                    t.dep(Kind::Vm)
                }?;
                vm.get("zone")?.as_str().map(String::from)
            })
            .collect();
        zones.sort();
        zones.dedup();
        let lineage = targets.first().map(|t| t.lineage).unwrap_or_default();
        let cx = p.cx()?;
        let instances = compute::list(&cx, &zones, lineage).await?;
        let firewalls = if targets.iter().any(|t| t.kind == Kind::Vm) {
            compute::firewalls(&cx).await?
        } else {
            BTreeMap::new()
        };
        let mut hosts: Vec<Option<Arc<dyn Host>>> = Vec::with_capacity(targets.len());
        for t in targets {
            let live_vm = t
                .dep(Kind::Vm)
                .filter(|vm| status(&instances, vm) == Some("RUNNING"));
            hosts.push(match live_vm {
                Some(vm) if t.kind.is_hosted() => Some(connection(p, vm)? as Arc<dyn Host>),
                _ => None,
            });
        }
        let probes = steps::probe_each_host(targets, hosts, |_| None).await;
        Ok(Machines {
            instances: Some(instances),
            firewalls,
            probes,
        })
    }

    /// A stopped or terminated instance differs from the planned `RUNNING`, which replaces
    /// it; a preempted Spot instance (termination action DELETE) is gone, which makes it anew.
    pub fn read_vm(&self, t: &Target<'_>) -> Option<Attrs> {
        let instances = self.instances.as_ref()?;
        let found = instances.get(t.attrs.get("name")?.as_str()?)?;
        let mut a = t.attrs.clone();
        if let Some(s) = found.get("status") {
            a.insert("status".into(), s.clone());
        }
        if let Some(ip) = compute::nat_ip(found) {
            a.insert("nat_ip".into(), json!(ip));
        }
        // A rule deleted, widened or narrowed out of band shows as a changed `ssh_cidr`,
        // which the update puts right.
        let rule = t
            .attrs
            .get("firewall")
            .and_then(|f| f.as_str())
            .and_then(|f| self.firewalls.get(f));
        a.insert("ssh_cidr".into(), json!(compute::admitted(rule, t.lineage)));
        Some(a)
    }

    pub fn read_hosted(&self, i: usize, t: &Target<'_>) -> anycloud_provider::Read {
        steps::read_probed(t, &self.probes[i])
    }

    pub fn observe(&self, i: usize, t: &Target<'_>) -> BTreeMap<String, String> {
        match (t.kind, &self.probes[i]) {
            (Kind::Vm, _) => {
                let state = self
                    .instances
                    .as_ref()
                    .and_then(|all| status(all, t.attrs))
                    .map(|s| s.to_ascii_lowercase());
                [(
                    "vm".to_owned(),
                    state.unwrap_or_else(|| "gone (deleted or preempted)".into()),
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
    fn rclone_signs_in_as_the_vms_service_account_and_holds_no_secret() {
        let conf = super::rclone_conf(None);
        assert_eq!(
            conf,
            "[gcs]\ntype = google cloud storage\nenv_auth = true\nbucket_policy_only = true\nno_check_bucket = true\n"
        );
        for secret in [
            "service_account_file",
            "service_account_credentials",
            "token",
            "client_secret",
        ] {
            assert!(!conf.contains(&format!("{secret} =")), "{conf}");
        }
        assert!(super::rclone_conf(Some("http://10.9.0.1:4443"))
            .ends_with("endpoint = http://10.9.0.1:4443/storage/v1/\n"));
    }
}
