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
pub fn host_context(
    spec: &DeploymentSpec,
    root: &str,
    check_target: String,
) -> Result<HostContext> {
    check_root(root)?;
    let layout = VmLayout::under(&host_dir(root, &spec.id));
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

/// The last upload of the VM's directories, then the cleanup, then its directory goes.
pub async fn delete_vm(host: &dyn Host, vm: &Target<'_>) -> Result<()> {
    let private = HostedPrivate::of(vm)?;
    steps::flush(host, &private.layout, &private.flush).await?;
    cleanup_host(host, vm).await?;
    let dir = attr_str(vm.attrs, "host_dir")?;
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

/// Every file under `dir`, relative, sorted.
pub fn list_files(dir: &std::path::Path) -> std::io::Result<Vec<(String, u64)>> {
    fn walk(
        root: &std::path::Path,
        dir: &std::path::Path,
        out: &mut Vec<(String, u64)>,
    ) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let meta = entry.metadata()?;
            if meta.is_dir() {
                walk(root, &path, out)?;
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                out.push((rel, meta.len()));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
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
    for (rel, _) in list_files(src)? {
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
