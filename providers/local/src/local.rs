//! The embedded local cloud: buckets are directories under a root on this machine, the "VM"
//! is this machine reached through [`LocalHost`].

use std::collections::BTreeMap;
use std::sync::Arc;

use anycloud_host::{steps, ContextCache, HostContext, LocalHost};
use anycloud_provider::{attr_str, Attrs, Kind, Planned, Provider, ProviderError, Result, Target};
use serde_json::json;

use crate::dirs;

pub struct LocalProvider {
    host: LocalHost,
    contexts: ContextCache,
}

impl Default for LocalProvider {
    fn default() -> Self {
        LocalProvider {
            host: LocalHost,
            contexts: ContextCache::default(),
        }
    }
}

impl LocalProvider {
    fn context(&self, inputs: &Attrs) -> Result<Arc<HostContext>> {
        self.contexts.get(inputs, || {
            let root = attr_str(inputs, "root")?;
            dirs::host_context(inputs, root, format!("local:{}", dirs::buckets_dir(root)))
        })
    }

    /// One round trip for every target: they are all on this machine.
    async fn probe(&self, targets: &[Target<'_>]) -> Result<anycloud_host::HostProbe> {
        let all: Vec<&Target> = targets.iter().collect();
        let dirs: Vec<String> = targets.iter().filter_map(dirs::dir_of).collect();
        steps::probe_host(&self.host, &steps::deployments_of(&all), &dirs).await
    }
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
                dirs::check_root(root)?;
                attrs.insert("root".into(), json!(root));
                attrs.insert("buckets_dir".into(), json!(dirs::buckets_dir(root)));
                Ok(Planned {
                    attrs,
                    computed: vec![],
                    force_new: vec!["root".into()],
                })
            }
            Kind::Bucket => {
                dirs::bucket_attrs(attr_str(inputs, "root")?, inputs, &mut attrs)?;
                Ok(Planned {
                    attrs,
                    computed: vec![],
                    force_new: vec!["name".into(), "path".into()],
                })
            }
            Kind::Vm => {
                let ctx = self.context(inputs)?;
                dirs::vm_attrs(&ctx, attr_str(inputs, "root")?, &mut attrs);
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
        let probe = self.probe(targets).await?;
        Ok(targets.iter().map(|t| dirs::read_from(t, &probe)).collect())
    }

    async fn create(&self, target: Target<'_>) -> Result<Attrs> {
        match target.kind {
            Kind::Vm => {
                // A new "VM" starts clean: a container or supervisord left by a VM whose
                // directory was wiped would otherwise keep running against deleted paths.
                dirs::cleanup_host(&self.host, target.attrs).await?;
                dirs::make_dir(&self.host, attr_str(target.attrs, "host_dir")?).await?;
                Ok(target.attrs.clone())
            }
            Kind::Storage | Kind::Bucket => {
                let path = dirs::dir_of(&target)
                    .ok_or_else(|| ProviderError::permanent("no directory in the attributes"))?;
                dirs::make_dir(&self.host, &path).await?;
                Ok(target.attrs.clone())
            }
            Kind::Role => Err(ProviderError::permanent("the local cloud has no roles")),
            hosted => steps::apply(&self.host, hosted, target.attrs).await,
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
                dirs::make_dir(&self.host, attr_str(target.attrs, "host_dir")?).await?;
                Ok(target.attrs.clone())
            }
            _ => self.create(target).await,
        }
    }

    async fn delete(&self, target: Target<'_>) -> Result<()> {
        match target.kind {
            // Buckets hold the user's data: destroy forgets them and leaves the directories.
            Kind::Storage | Kind::Bucket | Kind::Role => Ok(()),
            Kind::Vm => dirs::delete_vm(&self.host, target.attrs).await,
            hosted => steps::delete(&self.host, hosted, target.attrs).await,
        }
    }
}
