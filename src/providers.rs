//! The providers compiled into this build, by name.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anycloud_provider::Provider;

#[derive(Clone)]
pub struct Providers {
    by_name: BTreeMap<&'static str, Arc<dyn Provider>>,
}

impl Providers {
    /// Every provider of this build; `keys_dir` holds the deployments' SSH keys.
    pub fn builtin(keys_dir: &Path) -> Providers {
        let all: [Arc<dyn Provider>; 3] = [
            Arc::new(anycloud_provider_local::LocalProvider::default()),
            Arc::new(anycloud_provider_local::SshProvider::new(
                keys_dir.to_path_buf(),
            )),
            Arc::new(anycloud_provider_aws::AwsProvider::new(
                keys_dir.to_path_buf(),
            )),
        ];
        Providers::of(all.into())
    }

    /// Exactly these providers (tests of the engine use their own).
    pub fn of(list: Vec<Arc<dyn Provider>>) -> Providers {
        Providers {
            by_name: list.into_iter().map(|p| (p.name(), p)).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Result<&dyn Provider, String> {
        self.by_name.get(name).map(|p| p.as_ref()).ok_or_else(|| {
            format!(
                "provider '{name}' is not available in this build of anycloud (available: {})",
                self.by_name.keys().copied().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// Gives every provider its settings from the config (`null` where it has none).
    pub fn configure(&self, settings: &BTreeMap<String, serde_json::Value>) -> Result<(), String> {
        for (name, provider) in &self.by_name {
            let mine = settings.get(*name).unwrap_or(&serde_json::Value::Null);
            provider
                .configure(mine)
                .map_err(|e| format!("providers.{name}: {}", e.message))?;
        }
        Ok(())
    }

    /// Each provider's count of calls to the outside so far.
    pub fn remote_calls(&self) -> BTreeMap<&'static str, u64> {
        self.by_name
            .iter()
            .map(|(name, p)| (*name, p.remote_calls()))
            .collect()
    }

    pub fn shared(&self, name: &str) -> Option<Arc<dyn Provider>> {
        self.by_name.get(name).cloned()
    }
}
