//! The VM steps of DESIGN §4 — vm_init, rclone, the two one-shot downloads, the two upload
//! programs and the container — as provider verbs on any [`Host`], one module per kind. A
//! cloud provider supplies the layout and its rclone remotes ([`HostContext`]); everything
//! else is the same on every cloud.

mod container;
mod probe;
mod rclone;
mod service;
mod sync;
mod vm_init;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anycloud_provider::{
    write_private, Attrs, BucketRole, DeploymentSpec, Kind, Planned, ProviderError, Result, Target,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::layout::VmLayout;
use crate::scripts;
use crate::transport::{Host, Output};

pub use probe::{
    deployments_of, observe, observe_hosted, observe_probed, probe_each_host, probe_host, read,
    read_hosted, read_probed, HostProbe, Job, JobState, Probe, Probed, PROBES_AT_ONCE,
};

/// What the cloud provider knows about a deployment's host and storage.
#[derive(Clone, Debug)]
pub struct HostContext {
    pub deployment: String,
    pub layout: VmLayout,
    /// The complete `rclone.conf` (cloud-native auth only: never a key).
    pub rclone_conf: String,
    /// What the connectivity check lists.
    pub check_target: String,
    /// rclone paths of the deployment's buckets.
    pub remotes: BTreeMap<BucketRole, String>,
    /// The container's network: `host` where the machine is the deployment's alone to use,
    /// `bridge` on a cloud VM (one hop from the host, so the instance metadata service,
    /// answering one hop only, never hands the job the VM's credentials).
    pub network: String,
    /// The container's user (`uid:gid`) where steps run as a user other than root, so what
    /// the job writes stays that user's to upload and remove.
    pub container_user: Option<String>,
    /// What the idle watcher runs to stop the machine costing once the job ended and its
    /// output is verified ([`crate::idle::POWER_OFF`] on a machine that is the deployment's
    /// own); `None` where the machine is the operator's (the local cloud).
    pub power_off: Option<String>,
}

impl HostContext {
    /// Whether jobs run on Docker's bridge (a network of their own), where VM init keeps
    /// them from the machine's metadata service.
    pub fn bridged(&self) -> bool {
        self.network == "bridge"
    }

    /// The directories whose contents must reach their buckets before the host goes.
    pub fn flush_pairs(&self) -> Vec<(String, String)> {
        [BucketRole::Output, BucketRole::Checkpoint]
            .iter()
            .filter_map(|role| {
                self.remotes
                    .get(role)
                    .map(|r| (self.layout.mount(role.as_str()), r.clone()))
            })
            .collect()
    }

    pub fn container_name(&self) -> String {
        format!(
            "anycloud-{}-{}",
            self.deployment,
            anycloud_provider::digest::short_hash(&self.layout.mnt)
        )
    }

    pub fn remote(&self, role: BucketRole) -> Result<&String> {
        self.remotes.get(&role).ok_or_else(|| {
            ProviderError::permanent(format!(
                "no {role} bucket for deployment {}",
                self.deployment
            ))
        })
    }
}

/// The host context of the deployment planned last: a deployment's hosted nodes are
/// planned one after another, so one is built per deployment.
#[derive(Default)]
pub struct ContextCache {
    last: Mutex<Option<(DeploymentSpec, Arc<HostContext>)>>,
}

impl ContextCache {
    pub fn get(
        &self,
        spec: &DeploymentSpec,
        build: impl FnOnce() -> Result<HostContext>,
    ) -> Result<Arc<HostContext>> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((key, ctx)) = last.as_ref() {
            if key == spec {
                return Ok(ctx.clone());
            }
        }
        let ctx = Arc::new(build()?);
        *last = Some((spec.clone(), ctx.clone()));
        Ok(ctx)
    }
}

/// What anycloud keeps of a hosted resource (and of a VM) for itself: where things are on
/// the host, and what to upload before it goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedPrivate {
    pub layout: VmLayout,
    /// `(directory, rclone remote)` pairs uploaded and verified before the resource goes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flush: Vec<(String, String)>,
}

impl HostedPrivate {
    pub fn of(target: &Target<'_>) -> Result<HostedPrivate> {
        target.private()
    }
}

/// The private part every VM carries for what runs on it: the layout and what to upload
/// before it goes; and the container's name among its attributes.
pub fn vm_planned(ctx: &HostContext, attrs: &mut Attrs) -> serde_json::Value {
    attrs.insert("container_name".into(), json!(ctx.container_name()));
    write_private(&HostedPrivate {
        layout: ctx.layout.clone(),
        flush: ctx.flush_pairs(),
    })
}

/// The desired attributes of a hosted node.
pub fn plan(kind: Kind, spec: &DeploymentSpec, ctx: &HostContext) -> Result<Planned> {
    let mut planned = match kind {
        Kind::VmInit => vm_init::plan(spec, ctx),
        Kind::Rclone => rclone::plan(spec, ctx),
        Kind::SyncInput | Kind::SyncCheckpointRestore => sync::plan(kind, ctx)?,
        Kind::ServiceOutput | Kind::ServiceCheckpoint => service::plan(kind, spec, ctx)?,
        Kind::Container => container::plan(spec, ctx),
        other => return Err(not_hosted(other)),
    };
    let flush = planned.flush.take().unwrap_or_default();
    Ok(Planned {
        attrs: planned.attrs,
        private: write_private(&HostedPrivate {
            layout: ctx.layout.clone(),
            flush,
        }),
        computed: planned.computed,
        force_new: planned.force_new,
        keep_on_destroy: false,
        warnings: vec![],
    })
}

/// What a kind's module plans: its attributes, and what it uploads before it goes.
#[derive(Default)]
struct KindPlan {
    attrs: Attrs,
    computed: Vec<String>,
    force_new: Vec<String>,
    flush: Option<Vec<(String, String)>>,
}

fn not_hosted(kind: Kind) -> ProviderError {
    ProviderError::permanent(format!("{kind} is not a host resource"))
}

/// Creates (or, for changed attributes, re-applies) a hosted node.
pub async fn apply(host: &dyn Host, target: &Target<'_>) -> Result<Attrs> {
    let private = HostedPrivate::of(target)?;
    let layout = &private.layout;
    let attrs = target.attrs;
    match target.kind {
        Kind::VmInit => vm_init::apply(host, layout, attrs).await?,
        Kind::Rclone => rclone::apply(host, layout, attrs).await?,
        Kind::SyncInput | Kind::SyncCheckpointRestore => {
            return sync::apply(host, target.kind, layout, attrs).await
        }
        Kind::ServiceOutput | Kind::ServiceCheckpoint => {
            service::apply(host, layout, attrs).await?
        }
        Kind::Container => return container::apply(host, &private, attrs).await,
        other => return Err(not_hosted(other)),
    }
    Ok(attrs.clone())
}

/// Deletes a hosted node; the container and the upload programs flush first.
pub async fn delete(host: &dyn Host, target: &Target<'_>) -> Result<()> {
    let private = HostedPrivate::of(target)?;
    let layout = &private.layout;
    match target.kind {
        Kind::VmInit => vm_init::delete(host, layout).await,
        // The config stays until the VM goes: the final flush of the VM still needs it.
        Kind::Rclone | Kind::SyncInput | Kind::SyncCheckpointRestore => Ok(()),
        Kind::ServiceOutput | Kind::ServiceCheckpoint => {
            service::delete(host, &private, target.attrs).await
        }
        Kind::Container => container::delete(host, &private, target.attrs).await,
        other => Err(not_hosted(other)),
    }
}

/// The output of the job a container target runs ([`anycloud_provider::Provider::job_log`]).
pub async fn job_log(
    host: &dyn Host,
    target: &Target<'_>,
    range: anycloud_provider::LogRange<'_>,
) -> Result<anycloud_provider::JobLog> {
    match target.kind {
        Kind::Container if range.uploads => {
            let private = HostedPrivate::of(target)?;
            let out = host
                .run(&scripts::upload_logs(&private.layout, range.tail))
                .await
                .map_err(ProviderError::from)?;
            if !out.success() {
                return Err(ProviderError::permanent(out.stderr.trim().to_owned()));
            }
            Ok(anycloud_provider::JobLog {
                lines: out
                    .stdout
                    .lines()
                    .map(|l| (String::new(), l.to_owned()))
                    .collect(),
                exit_code: None,
                read_at: None,
                more: false,
            })
        }
        Kind::Container => container::job_log(host, target.attrs, range).await,
        other => Err(not_hosted(other)),
    }
}

/// Who empties the checkpoint's bucket for [`clear_checkpoint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketEmptiedBy {
    /// The machine's rclone, where its identity may delete (buckets that are directories).
    Machine,
    /// The caller, with the operator's credentials, after this step: a cloud VM's identity
    /// may delete nothing.
    Caller,
}

/// Empties the checkpoint of the job a container target runs
/// ([`anycloud_provider::Provider::clear_checkpoint`]): on the machine, and in its bucket
/// when `bucket` says the machine does that.
pub async fn clear_checkpoint(
    host: &dyn Host,
    target: &Target<'_>,
    bucket: BucketEmptiedBy,
) -> Result<anycloud_provider::Cleared> {
    if target.kind != Kind::Container {
        return Err(not_hosted(target.kind));
    }
    let private = HostedPrivate::of(target)?;
    let dir = private.layout.mount(BucketRole::Checkpoint.as_str());
    let Some((_, remote)) = private.flush.iter().find(|(d, _)| *d == dir) else {
        return Err(ProviderError::permanent(format!(
            "{}: the job has no checkpoint to empty",
            target.address
        )));
    };
    let name = anycloud_provider::attr_str(target.attrs, "name")?;
    run(
        host,
        &scripts::clear_checkpoint(
            &private.layout,
            name,
            &dir,
            (bucket == BucketEmptiedBy::Machine).then_some(remote.as_str()),
        ),
        "emptying the checkpoint",
    )
    .await?;
    Ok(anycloud_provider::Cleared {
        remote: remote.clone(),
    })
}

async fn run(host: &dyn Host, script: &str, what: &str) -> Result<Output> {
    let out = host.run(script).await.map_err(ProviderError::from)?;
    if out.success() {
        Ok(out)
    } else {
        // The end says why; streamed progress before it would bury that.
        let lines: Vec<&str> = out.stderr.trim().lines().collect();
        let detail = lines[lines.len().saturating_sub(25)..].join("\n");
        Err(ProviderError::permanent(format!(
            "{what} failed (exit {}): {detail}",
            out.status
        )))
    }
}

async fn upload(host: &dyn Host, path: &str, text: &str, mode: u32) -> Result<()> {
    host.upload(path, text.as_bytes(), mode)
        .await
        .map_err(ProviderError::from)
}

/// The verified last upload of the given directories.
pub async fn flush(host: &dyn Host, layout: &VmLayout, pairs: &[(String, String)]) -> Result<()> {
    if pairs.is_empty() {
        return Ok(());
    }
    run(host, &scripts::final_flush(layout, pairs), "final upload")
        .await
        .map(|_| ())
}

fn attr_u64(attrs: &Attrs, key: &str, default: u64) -> u64 {
    attrs.get(key).and_then(|v| v.as_u64()).unwrap_or(default)
}
