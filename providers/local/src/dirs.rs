//! What the local and the ssh clouds share: buckets are `<root>/buckets/<name>` and a
//! deployment's "VM" is `<root>/hosts/<id>` on one machine, whichever way it is reached.

use std::collections::BTreeMap;

use anycloud_host::{scripts, steps, Host, HostContext, HostProbe, VmLayout};
use anycloud_provider::{attr_str, Attrs, Kind, ProviderError, Result, Target};
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

pub use steps::layout_of;

/// The host context of a deployment from the engine's inputs and the machine's root.
/// `check_target` is what rclone's connectivity check lists.
pub fn host_context(inputs: &Attrs, root: &str, check_target: String) -> Result<HostContext> {
    check_root(root)?;
    let deployment = attr_str(inputs, "deployment")?.to_owned();
    let layout = VmLayout::under(&host_dir(root, &deployment));
    let mut remotes = BTreeMap::new();
    if let Some(buckets) = inputs.get("buckets").and_then(|b| b.as_object()) {
        for (role, name) in buckets {
            if let Some(name) = name.as_str() {
                remotes.insert(role.clone(), format!("local:{}", bucket_path(root, name)));
            }
        }
    }
    Ok(HostContext {
        deployment,
        layout,
        rclone_conf: RCLONE_CONF.to_owned(),
        check_target,
        remotes,
    })
}

/// The attributes every directory-cloud VM has.
pub fn vm_attrs(ctx: &HostContext, root: &str, attrs: &mut Attrs) {
    attrs.insert("host_dir".into(), json!(host_dir(root, &ctx.deployment)));
    steps::vm_attrs(ctx, attrs);
}

/// Buckets hold the user's data: destroy forgets them and leaves the directory.
pub fn bucket_attrs(root: &str, inputs: &Attrs, attrs: &mut Attrs) -> Result<()> {
    let name = attr_str(inputs, "name")?;
    attrs.insert("name".into(), json!(name));
    attrs.insert("path".into(), json!(bucket_path(root, name)));
    if let Some(c) = inputs.get("continent") {
        attrs.insert("continent".into(), c.clone());
    }
    attrs.insert("_keep_on_destroy".into(), json!(true));
    Ok(())
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

/// Removes the deployment's container and stops its private supervisord.
pub async fn cleanup_host(host: &dyn Host, vm: &Attrs) -> Result<()> {
    let layout = layout_of(vm)?;
    let container = attr_str(vm, "container_name")?;
    run_ok(
        host,
        &scripts::host_cleanup(&layout, container),
        "cleaning up the host",
    )
    .await
}

/// The last upload of the VM's directories, then the cleanup, then its directory goes.
pub async fn delete_vm(host: &dyn Host, vm: &Attrs) -> Result<()> {
    let layout = layout_of(vm)?;
    steps::flush(host, &layout, &steps::pairs_of(vm)).await?;
    cleanup_host(host, vm).await?;
    let dir = attr_str(vm, "host_dir")?;
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
