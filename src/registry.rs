//! The providers of this build, by name. The built-ins are registered in one place,
//! [`Providers::builtin`]; everything else asks them by name for their declaration and verbs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anycloud_provider::{Declaration, Provider};

struct Entry {
    declaration: Arc<dyn Declaration>,
    provider: Arc<dyn Provider>,
}

pub struct Providers {
    entries: BTreeMap<&'static str, Entry>,
    /// The provider of a deployment that names none.
    default: &'static str,
}

impl Providers {
    /// Every provider of this build; `keys_dir` holds the deployments' SSH keys.
    pub fn builtin(keys_dir: &Path) -> Providers {
        let keys = keys_dir.to_path_buf();
        #[allow(unused_mut)]
        let mut all = Providers::empty("local")
            .with(Arc::new(anycloud_provider_local::LocalProvider::default()))
            .with(Arc::new(anycloud_provider_local::SshProvider::new(
                keys.clone(),
            )));
        #[cfg(feature = "aws")]
        {
            all = all.with(Arc::new(anycloud_provider_aws::AwsProvider::new(keys)));
        }
        #[cfg(feature = "azure")]
        {
            all = all.with(Arc::new(anycloud_provider_azure::AzureProvider::new(
                keys_dir.to_path_buf(),
            )));
        }
        #[cfg(feature = "gcp")]
        {
            all = all.with(Arc::new(anycloud_provider_gcp::GcpProvider::new(
                keys_dir.to_path_buf(),
            )));
        }
        all
    }

    /// No providers yet; `default` is the one a deployment without `provider:` gets.
    pub fn empty(default: &'static str) -> Providers {
        Providers {
            entries: BTreeMap::new(),
            default,
        }
    }

    /// Exactly these providers, the first the default (tests and benchmarks of the engine
    /// use their own).
    pub fn of(list: Vec<Arc<dyn Provider>>) -> Providers {
        let default = list.first().expect("at least one provider").name();
        list.into_iter()
            .fold(Providers::empty(default), |all, p| all.with(p))
    }

    pub fn with(mut self, provider: Arc<dyn Provider>) -> Providers {
        let declaration: Arc<dyn Declaration> = provider.clone();
        self.entries.insert(
            provider.name(),
            Entry {
                declaration,
                provider,
            },
        );
        self
    }

    /// The remote state stores of the build: the key under `state:`, and the provider
    /// offering it.
    pub fn state_backends(&self) -> Vec<(&'static str, &'static str)> {
        let mut all: Vec<_> = self
            .entries
            .iter()
            .filter_map(|(name, e)| e.declaration.state_backend().map(|b| (b, *name)))
            .collect();
        all.sort();
        all
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.entries.keys().copied().collect()
    }

    pub fn declaration(&self, name: &str) -> Option<&dyn Declaration> {
        self.entries.get(name).map(|e| e.declaration.as_ref())
    }

    pub fn default_declaration(&self) -> &dyn Declaration {
        self.declaration(self.default)
            .expect("the default provider is registered")
    }

    pub fn default_name(&self) -> &'static str {
        self.default
    }

    pub fn get(&self, name: &str) -> Result<&dyn Provider, String> {
        self.shared_ref(name).map(|p| p.as_ref())
    }

    fn shared_ref(&self, name: &str) -> Result<&Arc<dyn Provider>, String> {
        match self.entries.get(name) {
            Some(entry) => Ok(&entry.provider),
            None => Err(format!(
                "provider '{name}' is not available in this build of anycloud (available: {})",
                self.available().join(", ")
            )),
        }
    }

    pub fn shared(&self, name: &str) -> Result<Arc<dyn Provider>, String> {
        self.shared_ref(name).cloned()
    }

    fn available(&self) -> Vec<&'static str> {
        self.entries.keys().copied().collect()
    }

    /// Gives every provider its checked settings (`null` where it has none).
    pub fn configure(&self, settings: &BTreeMap<String, serde_json::Value>) -> Result<(), String> {
        for (name, entry) in &self.entries {
            let mine = settings.get(*name).unwrap_or(&serde_json::Value::Null);
            entry
                .provider
                .configure(mine)
                .map_err(|e| format!("providers.{name}: {}", e.message))?;
        }
        Ok(())
    }

    /// Each provider's count of calls to the outside so far.
    pub fn remote_calls(&self) -> BTreeMap<&'static str, u64> {
        self.entries
            .iter()
            .map(|(name, e)| (*name, e.provider.remote_calls()))
            .collect()
    }

    /// Each provider's count of connections made so far (those that make any).
    pub fn connections(&self) -> BTreeMap<&'static str, u64> {
        self.entries
            .iter()
            .map(|(name, e)| (*name, e.provider.connections()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The provider whose regions include `region`, and its continent there.
    pub fn continent_anywhere(&self, region: &str) -> Option<(&'static str, &'static str)> {
        self.entries
            .iter()
            .find_map(|(name, e)| Some((*name, e.declaration.regions().continent(region)?)))
    }

    /// Every region of every provider's table.
    pub fn all_regions(&self) -> Vec<&'static str> {
        self.entries
            .values()
            .flat_map(|e| e.declaration.regions().all())
            .collect()
    }

    /// The providers whose `vm:` has `key`.
    pub fn vm_key_owners(&self, key: &str) -> Vec<&'static str> {
        self.entries
            .iter()
            .filter(|(_, e)| e.declaration.vm_keys().contains(&key))
            .map(|(n, _)| *n)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    /// The engine knows no cloud: outside this file, `src/` names no cloud provider's crate
    /// and no cloud's name as a value (a cloud's word in a comment is fine).
    #[test]
    fn the_engine_names_no_cloud_outside_the_registry() {
        let named = regex_lite::Regex::new(
            r#""(aws|azure|gcp|s3|gcs|azureblob|ec2|iam)"|anycloud_provider_(aws|azure|gcp)"#,
        )
        .unwrap();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut dirs = vec![src.clone()];
        let mut found = Vec::new();
        let mut files = 0;
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && path != src.join("registry.rs")
                {
                    files += 1;
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (n, line) in text.lines().enumerate() {
                        if named.is_match(line) {
                            found.push(format!("{}:{}: {line}", path.display(), n + 1));
                        }
                    }
                }
            }
        }
        assert!(
            files > 40,
            "only {files} files read under {}",
            src.display()
        );
        assert!(
            found.is_empty(),
            "cloud names in the engine:\n{}",
            found.join("\n")
        );
    }
}
