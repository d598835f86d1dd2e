//! The embedded local cloud: buckets are directories under a root on this machine, the "VM"
//! is this machine reached through [`LocalHost`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use anycloud_host::{steps, ContextCache, HostContext, LocalHost};
use anycloud_provider::doc::{Checks, Doc};
use anycloud_provider::{
    Attrs, BucketAccess, Declaration, DeploymentSpec, Kind, NodeSpec, Planned, Provider,
    ProviderError, Read, Regions, Result, Shape, Target, Transfer,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::dirs;

pub const DEFAULT_ROOT: &str = ".anycloud/local";

/// `uid:gid` of an operator who is not root: the job runs as them, so the last upload and
/// the removal of what it wrote (both theirs) can read and remove every file of it.
fn operator_user() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").ok()?;
    (me.uid() != 0).then(|| format!("{}:{}", me.uid(), me.gid()))
}

/// `providers.local`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Absolute: relative roots are resolved against the config's directory when checked.
    pub root: String,
}

#[derive(Default)]
pub struct LocalProvider {
    host: LocalHost,
    settings: OnceLock<Settings>,
    contexts: ContextCache,
}

impl LocalProvider {
    fn root(&self) -> Result<&str> {
        self.settings
            .get()
            .map(|s| s.root.as_str())
            .ok_or_else(|| ProviderError::permanent("the local provider was not configured"))
    }

    fn context(&self, spec: &DeploymentSpec) -> Result<Arc<HostContext>> {
        self.contexts.get(spec, || {
            let root = self.root()?;
            let mut ctx = dirs::host_context(
                spec,
                root,
                &anycloud_host::layout::local_run_dir(),
                format!("local:{}", dirs::buckets_dir(root)),
            )?;
            ctx.container_user = operator_user();
            Ok(ctx)
        })
    }

    /// One round trip for every target: they are all on this machine.
    async fn probe(&self, targets: &[Target<'_>]) -> Result<anycloud_host::HostProbe> {
        let all: Vec<&Target> = targets.iter().collect();
        let dirs: Vec<String> = targets.iter().filter_map(dirs::dir_of).collect();
        steps::probe_host(&self.host, &steps::deployments_of(&all), &dirs).await
    }

    fn bucket_dir(&self, name: &str) -> Result<std::path::PathBuf> {
        Ok(Path::new(self.root()?).join("buckets").join(name))
    }
}

impl Declaration for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn regions(&self) -> Regions {
        Regions::Own
    }

    fn shape(&self) -> Shape {
        Shape {
            identity: false,
            grants: &[],
            buckets_on_vm: false,
        }
    }

    fn settings_keys(&self) -> &'static [&'static str] {
        &["root"]
    }

    fn check_settings(&self, settings: Option<&Doc>, checks: &mut Checks) -> serde_json::Value {
        let root = match settings.and_then(|s| s.get("root")) {
            Some(r) => match checks.string(r, "providers.local.root") {
                Some(text) if anycloud_host::render::is_plain_path(&text) => checks.absolute(&text),
                Some(text) => {
                    checks.error(
                        r.at,
                        format!("local root '{text}' may only use letters, digits and / . _ - + @"),
                        None,
                    );
                    checks.absolute(DEFAULT_ROOT)
                }
                None => checks.absolute(DEFAULT_ROOT),
            },
            None => checks.absolute(DEFAULT_ROOT),
        };
        json!(Settings { root })
    }
}

#[async_trait::async_trait]
impl Provider for LocalProvider {
    fn configure(&self, settings: &serde_json::Value) -> Result<()> {
        let parsed: Settings = anycloud_provider::read_settings(settings)?;
        // The first configuration wins: a process plans one config.
        let _ = self.settings.set(parsed);
        Ok(())
    }

    fn plan(&self, node: NodeSpec<'_>) -> Result<Planned> {
        let root = self.root()?;
        match node.kind {
            Kind::Storage => {
                dirs::check_root(root)?;
                let mut attrs = Attrs::new();
                attrs.insert("root".into(), json!(root));
                attrs.insert("buckets_dir".into(), json!(dirs::buckets_dir(root)));
                Ok(Planned {
                    attrs,
                    force_new: vec!["root".into()],
                    ..Planned::default()
                })
            }
            Kind::Bucket => dirs::bucket_planned(root, node),
            Kind::Vm => {
                let mut planned = dirs::vm_planned(&*self.context(node.deployment)?, root);
                if let Some(idle) = node.deployment.idle_shutdown_secs {
                    planned.warnings.push(anycloud_host::idle::plan_note(
                        idle,
                        "leaves this machine on: it is yours, not the deployment's",
                    ));
                }
                Ok(planned)
            }
            Kind::Role | Kind::Grant => Err(ProviderError::permanent(
                "the local cloud has no identities",
            )),
            hosted => steps::plan(hosted, node.deployment, &*self.context(node.deployment)?),
        }
    }

    async fn read(&self, targets: &[Target<'_>]) -> Result<Vec<Read>> {
        let probe = self.probe(targets).await?;
        Ok(targets
            .iter()
            .map(|t| Ok(dirs::read_from(t, &probe)))
            .collect())
    }

    async fn check_image(&self, image: &str) -> anycloud_provider::ImageCheck {
        crate::image::check(&self.host, image).await
    }

    /// A host directory another state owns fails the plan (not the apply half-way): after a
    /// lost state, nothing is made under a new lineage before `state adopt`.
    async fn preflight(&self, targets: &[Target<'_>]) -> Result<anycloud_provider::Preflight> {
        let mut found = anycloud_provider::Preflight::default();
        for t in targets.iter().filter(|t| t.kind == Kind::Vm) {
            let Some(dir) = dirs::dir_of(t) else { continue };
            // This machine's own file: read directly, not through a shell per deployment.
            let owner =
                std::fs::read_to_string(Path::new(&dir).join(dirs::OWNER_FILE)).unwrap_or_default();
            let owner = owner.trim();
            if !owner.is_empty() && owner != t.lineage {
                found.errors.push(format!(
                    "{}: {}",
                    t.address,
                    dirs::owned_elsewhere(&dir, owner).message
                ));
            }
        }
        Ok(found)
    }

    async fn create(&self, target: Target<'_>) -> Result<Attrs> {
        match target.kind {
            Kind::Vm => {
                dirs::create_vm(&self.host, &target).await?;
                Ok(target.attrs.clone())
            }
            Kind::Storage | Kind::Bucket => {
                let path = dirs::dir_of(&target)
                    .ok_or_else(|| ProviderError::permanent("no directory in the attributes"))?;
                dirs::make_dir(&self.host, &path).await?;
                Ok(target.attrs.clone())
            }
            Kind::Role | Kind::Grant => Err(ProviderError::permanent(
                "the local cloud has no identities",
            )),
            _ => steps::apply(&self.host, &target).await,
        }
    }

    async fn observe(&self, targets: &[Target<'_>]) -> Result<Vec<BTreeMap<String, String>>> {
        let probe = self.probe(targets).await?;
        Ok(targets
            .iter()
            .map(|t| steps::observe_hosted(t, &probe))
            .collect())
    }

    async fn update(&self, _prior: &Attrs, target: Target<'_>) -> Result<Attrs> {
        match target.kind {
            // The host lives on: what changed (its flush list) is bookkeeping. Recreating it
            // would kill the running job.
            Kind::Vm => {
                dirs::claim_host(&self.host, &target).await?;
                Ok(target.attrs.clone())
            }
            _ => self.create(target).await,
        }
    }

    async fn delete(&self, target: Target<'_>) -> Result<()> {
        match target.kind {
            // The root directory holds the buckets: it stays.
            Kind::Storage | Kind::Bucket | Kind::Role | Kind::Grant => Ok(()),
            Kind::Vm => dirs::delete_vm(&self.host, &target).await,
            _ => steps::delete(&self.host, &target).await,
        }
    }

    fn buckets(&self) -> Option<&dyn BucketAccess> {
        Some(self)
    }

    async fn job_log(
        &self,
        container: Target<'_>,
        range: anycloud_provider::LogRange<'_>,
    ) -> Result<anycloud_provider::JobLog> {
        steps::job_log(&self.host, &container, range).await
    }

    async fn clear_checkpoint(&self, container: Target<'_>) -> Result<anycloud_provider::Cleared> {
        steps::clear_checkpoint(&self.host, &container, steps::BucketEmptiedBy::Machine).await
    }
}

fn io_error(what: String) -> impl Fn(std::io::Error) -> ProviderError {
    move |e| ProviderError::permanent(format!("{what}: {e}"))
}

#[async_trait::async_trait]
impl BucketAccess for LocalProvider {
    async fn list(&self, bucket: &str, _: Option<&DeploymentSpec>) -> Result<Vec<(String, u64)>> {
        let dir = self.bucket_dir(bucket)?;
        anycloud_provider::files::list_tree(&dir).map_err(io_error(format!(
            "listing bucket '{bucket}' ({})",
            dir.display()
        )))
    }

    async fn names(&self, _: Option<&DeploymentSpec>) -> Result<Vec<String>> {
        let dir = Path::new(self.root()?).join("buckets");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io_error(format!("listing {}", dir.display()))(e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    async fn upload(
        &self,
        bucket: &str,
        _: Option<&DeploymentSpec>,
        source: &Path,
        _: &Transfer,
    ) -> Result<usize> {
        let dir = self.bucket_dir(bucket)?;
        dirs::copy_tree(source, &dir).map_err(io_error(format!("uploading {}", source.display())))
    }

    async fn download(
        &self,
        bucket: &str,
        _: Option<&DeploymentSpec>,
        dest: &Path,
        _: &Transfer,
    ) -> Result<usize> {
        let dir = self.bucket_dir(bucket)?;
        dirs::copy_tree(&dir, dest).map_err(io_error(format!("downloading bucket '{bucket}'")))
    }
}
