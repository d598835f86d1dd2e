//! The embedded local cloud: buckets are directories under a root, the "VM" is this machine
//! reached through [`LocalHost`], and rclone uses remotes of type `local`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anycloud_host::{steps, HostContext, LocalHost, Probe, VmLayout};
use anycloud_provider::{attr_str, Attrs, Kind, Planned, Provider, ProviderError, Result, Target};
use serde_json::json;

pub struct LocalProvider {
    host: LocalHost,
    /// The host context of the deployment planned last: a deployment's ten hosted nodes are
    /// planned one after another with the same inputs.
    last_context: Mutex<Option<(Attrs, Arc<HostContext>)>>,
}

impl Default for LocalProvider {
    fn default() -> Self {
        LocalProvider {
            host: LocalHost,
            last_context: Mutex::new(None),
        }
    }
}

impl LocalProvider {
    fn context(&self, inputs: &Attrs) -> Result<Arc<HostContext>> {
        let mut cache = self.last_context.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((key, ctx)) = cache.as_ref() {
            if key == inputs {
                return Ok(ctx.clone());
            }
        }
        let ctx = Arc::new(host_context(inputs)?);
        *cache = Some((inputs.clone(), ctx.clone()));
        Ok(ctx)
    }

    /// One probe per host, however many of its resources are asked about.
    async fn probe_hosts(&self, targets: &[Target<'_>]) -> Result<BTreeMap<String, Probe>> {
        let mut probes: BTreeMap<String, Probe> = BTreeMap::new();
        for t in targets.iter().filter(|t| t.kind.is_hosted()) {
            let layout: VmLayout = match t.attrs.get("_layout").cloned().map(serde_json::from_value)
            {
                Some(Ok(l)) => l,
                _ => continue,
            };
            if probes.contains_key(&layout.mnt) {
                continue;
            }
            let container = t
                .dep(Kind::Vm)
                .and_then(|vm| vm.get("container_name"))
                .or_else(|| t.attrs.get("name").filter(|_| t.kind == Kind::Container))
                .and_then(|v| v.as_str())
                .unwrap_or("anycloud-none")
                .to_owned();
            let probe = steps::probe(&self.host, &layout, &container).await?;
            probes.insert(layout.mnt.clone(), probe);
        }
        Ok(probes)
    }
    /// Removes the deployment's container and stops its private supervisord.
    async fn cleanup_host(&self, vm: &Attrs) -> Result<()> {
        let layout = layout_of(vm)?;
        let container = attr_str(vm, "container_name")?;
        let script = format!(
            "{}{}",
            anycloud_host::scripts::container_remove(container),
            anycloud_host::scripts::supervisord_stop(&layout)
                .trim_start_matches("set -euo pipefail\n")
        );
        let out = anycloud_host::Host::run(&self.host, &script)
            .await
            .map_err(|e| ProviderError::retryable(e.to_string()))?;
        if out.success() {
            Ok(())
        } else {
            Err(ProviderError::permanent(format!(
                "cleaning up the host failed: {}",
                out.stderr.trim()
            )))
        }
    }
}

fn layout_of(attrs: &Attrs) -> Result<VmLayout> {
    serde_json::from_value(attrs.get("_layout").cloned().unwrap_or_default())
        .map_err(|e| ProviderError::permanent(format!("bad layout: {e}")))
}

const RCLONE_CONF: &str = "[local]\ntype = local\n";

fn buckets_dir(root: &str) -> String {
    format!("{root}/buckets")
}

fn host_dir(root: &str, deployment: &str) -> String {
    format!("{root}/hosts/{deployment}")
}

/// Paths go unquoted into supervisord's command lines, so keep them to a safe alphabet.
fn check_root(root: &str) -> Result<()> {
    let ok = root.starts_with('/')
        && root
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ProviderError::permanent(format!(
            "local root '{root}' must be an absolute path of letters, digits and / . _ - + @"
        )))
    }
}

fn host_context(inputs: &Attrs) -> Result<HostContext> {
    let root = attr_str(inputs, "root")?;
    check_root(root)?;
    let deployment = attr_str(inputs, "deployment")?.to_owned();
    let layout = VmLayout::under(&host_dir(root, &deployment));
    let mut remotes = BTreeMap::new();
    if let Some(buckets) = inputs.get("buckets").and_then(|b| b.as_object()) {
        for (role, name) in buckets {
            if let Some(name) = name.as_str() {
                remotes.insert(role.clone(), format!("local:{}/{name}", buckets_dir(root)));
            }
        }
    }
    Ok(HostContext {
        deployment,
        layout,
        rclone_conf: RCLONE_CONF.to_owned(),
        check_target: format!("local:{}", buckets_dir(root)),
        remotes,
    })
}

async fn exists(path: &str) -> bool {
    tokio::fs::metadata(path)
        .await
        .map(|m| m.is_dir())
        .unwrap_or(false)
}

fn io_err(what: &str, path: &str, e: std::io::Error) -> ProviderError {
    ProviderError::permanent(format!("{what} {path}: {e}"))
}

#[async_trait::async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn plan(&self, kind: Kind, inputs: &Attrs) -> Result<Planned> {
        let mut attrs = Attrs::new();
        match kind {
            Kind::Storage => {
                let root = attr_str(inputs, "root")?;
                check_root(root)?;
                attrs.insert("root".into(), json!(root));
                attrs.insert("buckets_dir".into(), json!(buckets_dir(root)));
                Ok(Planned {
                    attrs,
                    computed: vec![],
                    force_new: vec!["root".into()],
                })
            }
            Kind::Bucket => {
                let root = attr_str(inputs, "root")?;
                let name = attr_str(inputs, "name")?;
                attrs.insert("name".into(), json!(name));
                attrs.insert(
                    "path".into(),
                    json!(format!("{}/{name}", buckets_dir(root))),
                );
                if let Some(c) = inputs.get("continent") {
                    attrs.insert("continent".into(), c.clone());
                }
                // Buckets hold the user's data: destroy forgets them and leaves the directory.
                attrs.insert("_keep_on_destroy".into(), json!(true));
                Ok(Planned {
                    attrs,
                    computed: vec![],
                    force_new: vec!["name".into(), "path".into()],
                })
            }
            Kind::Vm => {
                let ctx = self.context(inputs)?;
                let root = attr_str(inputs, "root")?;
                attrs.insert("host_dir".into(), json!(host_dir(root, &ctx.deployment)));
                attrs.insert(
                    "_layout".into(),
                    serde_json::to_value(&ctx.layout).expect("strings"),
                );
                attrs.insert("container_name".into(), json!(ctx.container_name()));
                attrs.insert(
                    "_flush".into(),
                    json!(ctx
                        .flush_pairs()
                        .iter()
                        .map(|(d, r)| json!([d, r]))
                        .collect::<Vec<_>>()),
                );
                Ok(Planned {
                    attrs,
                    computed: vec![],
                    force_new: vec!["host_dir".into()],
                })
            }
            Kind::Role => Err(ProviderError::permanent("the local cloud has no roles")),
            hosted => steps::plan(hosted, inputs, &*self.context(inputs)?),
        }
    }

    async fn read(&self, targets: &[Target<'_>]) -> Result<Vec<Option<Attrs>>> {
        let probes = self.probe_hosts(targets).await?;
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            let found = match t.kind {
                Kind::Storage => exists(attr_str(t.attrs, "buckets_dir")?)
                    .await
                    .then(|| t.attrs.clone()),
                Kind::Bucket => exists(attr_str(t.attrs, "path")?)
                    .await
                    .then(|| t.attrs.clone()),
                Kind::Vm => exists(attr_str(t.attrs, "host_dir")?)
                    .await
                    .then(|| t.attrs.clone()),
                Kind::Role => None,
                hosted => {
                    let mnt = t
                        .attrs
                        .get("_layout")
                        .and_then(|l| l.get("mnt"))
                        .and_then(|m| m.as_str());
                    match mnt.and_then(|m| probes.get(m)) {
                        Some(probe) => steps::read(hosted, t.attrs, probe),
                        None => None,
                    }
                }
            };
            out.push(found);
        }
        Ok(out)
    }

    async fn create(&self, target: Target<'_>) -> Result<Attrs> {
        match target.kind {
            Kind::Vm => {
                // A new "VM" starts clean: a container or supervisord left by a VM whose
                // directory was wiped would otherwise keep running against deleted paths.
                self.cleanup_host(target.attrs).await?;
                let dir = attr_str(target.attrs, "host_dir")?;
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| io_err("creating", dir, e))?;
                Ok(target.attrs.clone())
            }
            Kind::Storage | Kind::Bucket => {
                let key = match target.kind {
                    Kind::Storage => "buckets_dir",
                    _ => "path",
                };
                let path = attr_str(target.attrs, key)?;
                tokio::fs::create_dir_all(path)
                    .await
                    .map_err(|e| io_err("creating", path, e))?;
                Ok(target.attrs.clone())
            }
            Kind::Role => Err(ProviderError::permanent("the local cloud has no roles")),
            hosted => steps::apply(&self.host, hosted, target.attrs).await,
        }
    }

    async fn observe(&self, targets: &[Target<'_>]) -> Result<Vec<BTreeMap<String, String>>> {
        let probes = self.probe_hosts(targets).await?;
        Ok(targets
            .iter()
            .map(|t| {
                let mnt = t
                    .attrs
                    .get("_layout")
                    .and_then(|l| l.get("mnt"))
                    .and_then(|m| m.as_str());
                match (t.kind.is_hosted(), mnt.and_then(|m| probes.get(m))) {
                    (true, Some(probe)) => steps::observe(t.kind, t.attrs, probe),
                    _ => BTreeMap::new(),
                }
            })
            .collect())
    }

    async fn update(&self, _prior: &Attrs, target: Target<'_>) -> Result<Attrs> {
        match target.kind {
            // The host lives on: what changed (its flush list) is bookkeeping. Recreating it
            // would kill the running job.
            Kind::Vm => {
                let dir = attr_str(target.attrs, "host_dir")?;
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| io_err("creating", dir, e))?;
                Ok(target.attrs.clone())
            }
            _ => self.create(target).await,
        }
    }

    async fn delete(&self, target: Target<'_>) -> Result<()> {
        match target.kind {
            // Buckets hold the user's data: destroy forgets them and leaves the directories.
            Kind::Storage | Kind::Bucket | Kind::Role => Ok(()),
            Kind::Vm => {
                let layout = layout_of(target.attrs)?;
                let pairs: Vec<(String, String)> = serde_json::from_value(
                    target
                        .attrs
                        .get("_flush")
                        .cloned()
                        .unwrap_or_else(|| json!([])),
                )
                .unwrap_or_default();
                steps::flush(&self.host, &layout, &pairs).await?;
                self.cleanup_host(target.attrs).await?;
                let dir = attr_str(target.attrs, "host_dir")?;
                if Path::new(dir).exists() {
                    tokio::fs::remove_dir_all(dir)
                        .await
                        .map_err(|e| io_err("removing", dir, e))?;
                }
                Ok(())
            }
            hosted => steps::delete(&self.host, hosted, target.attrs).await,
        }
    }
}
