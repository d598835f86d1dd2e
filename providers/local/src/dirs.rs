//! What the local and the ssh clouds share: buckets are `<root>/buckets/<name>` and a
//! deployment's "VM" is `<root>/hosts/<id>` on one machine, whichever way it is reached.

use std::collections::BTreeMap;

use anycloud_host::{scripts, steps, Host, HostContext, HostProbe, HostedPrivate, VmLayout};
use anycloud_provider::{
    attr_str, Attrs, BucketRole, DeploymentSpec, Kind, NodeSpec, Planned, ProviderError, Result,
    Target,
};
use serde_json::json;

pub const RCLONE_CONF: &str = "[local]\ntype = local\n";

pub fn buckets_dir(root: &str) -> String {
    format!("{root}/buckets")
}

pub fn bucket_path(root: &str, name: &str) -> String {
    format!("{}/{name}", buckets_dir(root))
}

pub fn host_dir(root: &str, deployment: &str) -> String {
    format!("{root}/hosts/{deployment}")
}

/// Paths go unquoted into supervisord's command lines ([`anycloud_host::render::is_plain_path`]).
pub fn check_root(root: &str) -> Result<()> {
    let ok = root.starts_with('/') && anycloud_host::render::is_plain_path(root);
    if ok {
        Ok(())
    } else {
        Err(ProviderError::permanent(format!(
            "root '{root}' must be an absolute path of letters, digits and / . _ - + @"
        )))
    }
}

/// The host context of a deployment on a machine whose anycloud root is `root`.
/// `check_target` is what rclone's connectivity check lists.
/// `run_dir` holds the private supervisord's socket (a directory of the user's own).
pub fn host_context(
    spec: &DeploymentSpec,
    root: &str,
    run_dir: &str,
    check_target: String,
) -> Result<HostContext> {
    check_root(root)?;
    let layout = VmLayout::under(&host_dir(root, &spec.id), run_dir);
    let remotes: BTreeMap<BucketRole, String> = spec
        .buckets
        .iter()
        .map(|(role, b)| (*role, format!("local:{}", bucket_path(root, &b.name))))
        .collect();
    Ok(HostContext {
        deployment: spec.id.clone(),
        layout,
        rclone_conf: RCLONE_CONF.to_owned(),
        check_target,
        remotes,
        network: "host".into(),
        container_user: None,
        // The machine is the operator's own: the caller says when it may be powered off.
        power_off: None,
    })
}

/// A directory-cloud VM: its directory on the machine.
pub fn vm_planned(ctx: &HostContext, root: &str) -> Planned {
    let mut attrs = Attrs::new();
    attrs.insert("host_dir".into(), json!(host_dir(root, &ctx.deployment)));
    let private = steps::vm_planned(ctx, &mut attrs);
    Planned {
        attrs,
        private,
        computed: vec![],
        force_new: vec!["host_dir".into()],
        keep_on_destroy: false,
        warnings: vec![],
    }
}

/// A bucket is a directory; it holds the user's data, so destroy forgets it and leaves it.
pub fn bucket_planned(root: &str, node: NodeSpec<'_>) -> Result<Planned> {
    let (_, bucket) = node.bucket()?;
    let mut attrs = Attrs::new();
    attrs.insert("name".into(), json!(bucket.name));
    attrs.insert("path".into(), json!(bucket_path(root, &bucket.name)));
    attrs.insert("continent".into(), json!(bucket.continent));
    Ok(Planned {
        attrs,
        private: serde_json::Value::Null,
        computed: vec![],
        force_new: vec!["name".into(), "path".into()],
        keep_on_destroy: true,
        warnings: vec![],
    })
}

async fn run_ok(host: &dyn Host, script: &str, what: &str) -> Result<()> {
    let out = host.run(script).await.map_err(ProviderError::from)?;
    if out.success() {
        Ok(())
    } else {
        Err(ProviderError::permanent(format!(
            "{what} failed: {}",
            out.stderr.trim()
        )))
    }
}

pub async fn make_dir(host: &dyn Host, path: &str) -> Result<()> {
    run_ok(host, &scripts::make_dir(path), &format!("creating {path}")).await
}

/// The file in a host directory naming the lineage of the state whose "VM" it is: two
/// states share `<root>/hosts/`, and one must never stop or remove the other's job.
pub const OWNER_FILE: &str = ".anycloud-owner";

/// The lineage of another state that owns the host directory `dir`, if another does (a
/// directory without the file is from before owners were recorded, and nobody else's).
pub async fn other_owner(host: &dyn Host, dir: &str, lineage: &str) -> Result<Option<String>> {
    let found = owner_of(host, dir).await?;
    Ok((!found.is_empty() && found != lineage).then_some(found))
}

/// The lineage recorded in the host directory `dir` (empty where none is).
async fn owner_of(host: &dyn Host, dir: &str) -> Result<String> {
    let out = host
        .run(&scripts::read_owner(&format!("{dir}/{OWNER_FILE}")))
        .await
        .map_err(ProviderError::from)?;
    if !out.success() {
        return Err(ProviderError::permanent(format!(
            "reading the owner of {dir} failed: {}",
            out.stderr.trim()
        )));
    }
    Ok(out.stdout.trim().to_owned())
}

pub fn owned_elsewhere(dir: &str, other: &str) -> ProviderError {
    ProviderError::new(
        anycloud_provider::ErrorCode::Conflict,
        format!(
            "{dir} belongs to another anycloud state (lineage {other}): anycloud never adopts, changes or deletes another state's objects. Give this deployment another id, or another root{}",
            anycloud_provider::error::adopt_hint(other)
        ),
    )
}

/// Makes the deployment's host directory this state's: refused when another state's.
pub async fn claim_host(host: &dyn Host, vm: &Target<'_>) -> Result<()> {
    let dir = attr_str(vm.attrs, "host_dir")?;
    if let Some(other) = other_owner(host, dir, vm.lineage).await? {
        return Err(owned_elsewhere(dir, &other));
    }
    run_ok(
        host,
        &scripts::claim_dir(dir, OWNER_FILE, vm.lineage),
        &format!("creating {dir}"),
    )
    .await
}

/// A new "VM": another state's is refused; a container or supervisord left by a VM whose
/// directory was wiped would otherwise keep running against deleted paths, so it goes first.
pub async fn create_vm(host: &dyn Host, vm: &Target<'_>) -> Result<()> {
    let dir = attr_str(vm.attrs, "host_dir")?;
    let owner = owner_of(host, dir).await?;
    if !owner.is_empty() && owner != vm.lineage {
        return Err(owned_elsewhere(dir, &owner));
    }
    // This state's machine already (a create run again after a crash, or a lost state's
    // successor): kept as it is, its job running, as a cloud's create finds its instance.
    // Otherwise a new machine starts clean of what a wiped one left (its container).
    if owner != vm.lineage {
        cleanup_host(host, vm).await?;
    }
    claim_host(host, vm).await
}

/// Removes the deployment's container and stops its private supervisord.
pub async fn cleanup_host(host: &dyn Host, vm: &Target<'_>) -> Result<()> {
    let private = HostedPrivate::of(vm)?;
    let container = attr_str(vm.attrs, "container_name")?;
    run_ok(
        host,
        &scripts::host_cleanup(&private.layout, container),
        "cleaning up the host",
    )
    .await
}

/// The last upload of the VM's directories, then the cleanup, then its directory goes;
/// another state's directory (a record of a create that was refused) is left as it is.
pub async fn delete_vm(host: &dyn Host, vm: &Target<'_>) -> Result<()> {
    let dir = attr_str(vm.attrs, "host_dir")?;
    if let Some(other) = other_owner(host, dir, vm.lineage).await? {
        anycloud_provider::output::line(&format!(
            "{dir} belongs to another anycloud state (lineage {other}): left as it is"
        ));
        return Ok(());
    }
    let private = HostedPrivate::of(vm)?;
    steps::flush(host, &private.layout, &private.flush).await?;
    cleanup_host(host, vm).await?;
    run_ok(host, &scripts::remove_dir(dir), &format!("removing {dir}")).await
}

/// The directory whose existence says whether a storage, bucket or VM resource exists.
pub fn dir_of(t: &Target<'_>) -> Option<String> {
    let key = match t.kind {
        Kind::Storage => "buckets_dir",
        Kind::Bucket => "path",
        Kind::Vm => "host_dir",
        _ => return None,
    };
    t.attrs.get(key).and_then(|v| v.as_str()).map(String::from)
}

/// A target's current attributes as one host probe saw them.
pub fn read_from(t: &Target<'_>, probe: &HostProbe) -> Option<Attrs> {
    if let Some(dir) = dir_of(t) {
        return probe.present_dirs.contains(&dir).then(|| t.attrs.clone());
    }
    steps::read_hosted(t, probe)
}

/// Copies a file or a directory tree into `dest`, returning the number of files copied.
pub fn copy_tree(src: &std::path::Path, dest: &std::path::Path) -> std::io::Result<usize> {
    let meta = std::fs::metadata(src)?;
    if meta.is_file() {
        std::fs::create_dir_all(dest)?;
        let name = src
            .file_name()
            .ok_or_else(|| std::io::Error::other("source has no file name"))?;
        std::fs::copy(src, dest.join(name))?;
        return Ok(1);
    }
    let mut n = 0;
    for (rel, _) in anycloud_provider::files::list_tree(src)? {
        let to = dest.join(&rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(src.join(&rel), &to)?;
        n += 1;
    }
    std::fs::create_dir_all(dest)?;
    Ok(n)
}
