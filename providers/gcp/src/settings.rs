//! `providers.gcp`: its schema and its checks, located in the config.

use anycloud_provider::declare::{check_ssh_cidr, check_ssh_user, check_url};
use anycloud_provider::doc::{Checks, Doc};
use anycloud_provider::{ErrorCode, ProviderError, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The project everything is made in; else `GOOGLE_CLOUD_PROJECT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Who may reach the VMs' SSH port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_cidr: Option<String>,
    /// The login user the deployment's key is given to (the guest agent makes it, with
    /// sudo); default `anycloud`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_user: Option<String>,
    #[serde(default)]
    pub endpoints: Endpoints,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoints {
    /// Cloud Storage's JSON API root (the VMs' rclone too), e.g. a private endpoint or a
    /// test's emulator; default `https://storage.googleapis.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// IAM's root; default `https://iam.googleapis.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<String>,
    /// Compute Engine's root; default `https://compute.googleapis.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<String>,
}

pub const KEYS: &[&str] = &["project", "ssh_cidr", "ssh_user", "endpoints"];
const ENDPOINT_KEYS: &[&str] = &["storage", "iam", "compute"];

/// Google's project ids: 6–30 characters of `[a-z0-9-]`, a letter first, no `-` last; a
/// domain-scoped one has `domain:` before that.
pub fn is_project_id(id: &str) -> bool {
    let (domain, id) = match id.rsplit_once(':') {
        Some((d, i)) => (Some(d), i),
        None => (None, id),
    };
    domain.is_none_or(|d| {
        !d.is_empty()
            && d.split('.').all(|l| {
                !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    }) && (6..=30).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Checks `providers.gcp` (its keys are known already) and returns it as [`Settings`].
pub fn check(doc: Option<&Doc>, checks: &mut Checks) -> Settings {
    let mut s = Settings::default();
    let Some(doc) = doc else {
        return s;
    };
    if let Some(v) = doc.get("project") {
        if let Some(project) = checks.string(v, "providers.gcp.project") {
            if !is_project_id(&project) {
                checks.error(
                    v.at,
                    format!(
                        "providers.gcp.project '{}' is not a project id (6–30 characters: lowercase letters, digits and '-', a letter first)",
                        project.escape_default()
                    ),
                    Some("the id, not the project's display name or number: e.g. acme-ml-prod".into()),
                );
            }
            s.project = Some(project);
        }
    }
    s.ssh_cidr = check_ssh_cidr(doc, "gcp", checks);
    s.ssh_user = check_ssh_user(doc, "gcp", checks);
    if let Some(endpoints) = doc.get("endpoints") {
        if checks.known_keys(endpoints, "providers.gcp.endpoints", ENDPOINT_KEYS) {
            for key in ENDPOINT_KEYS {
                let Some(v) = endpoints.get(key) else {
                    continue;
                };
                let path = format!("providers.gcp.endpoints.{key}");
                if let Some(url) = checks.string(v, &path) {
                    if let Err(why) = check_url(&url) {
                        checks.error(v.at, format!("{path} {why}"), None);
                    }
                    let slot = match *key {
                        "storage" => &mut s.endpoints.storage,
                        "iam" => &mut s.endpoints.iam,
                        _ => &mut s.endpoints.compute,
                    };
                    *slot = Some(url.trim_end_matches('/').to_owned());
                }
            }
        }
    }
    s
}

impl Settings {
    /// The project: the config's, else `GOOGLE_CLOUD_PROJECT` (checked the same way).
    pub fn project(&self) -> Result<String> {
        if let Some(p) = &self.project {
            return Ok(p.clone());
        }
        match std::env::var("GOOGLE_CLOUD_PROJECT") {
            Ok(p) if is_project_id(&p) => Ok(p),
            Ok(p) if !p.is_empty() => Err(ProviderError::new(
                ErrorCode::Invalid,
                format!("GOOGLE_CLOUD_PROJECT '{}' is not a project id", p.escape_default()),
            )),
            _ => Err(ProviderError::new(
                ErrorCode::Invalid,
                "no Google Cloud project: set providers.gcp.project in anycloud.yaml, or GOOGLE_CLOUD_PROJECT",
            )),
        }
    }

    /// Cloud Storage's JSON API, e.g. `https://storage.googleapis.com/storage/v1`.
    pub fn storage(&self) -> String {
        format!("{}/storage/v1", self.storage_root())
    }

    /// Where media uploads go, e.g. `https://storage.googleapis.com/upload/storage/v1`.
    pub fn upload(&self) -> String {
        format!("{}/upload/storage/v1", self.storage_root())
    }

    pub fn storage_root(&self) -> &str {
        self.endpoints
            .storage
            .as_deref()
            .unwrap_or("https://storage.googleapis.com")
    }

    pub fn iam(&self) -> String {
        format!(
            "{}/v1",
            self.endpoints
                .iam
                .as_deref()
                .unwrap_or("https://iam.googleapis.com")
        )
    }

    pub fn compute(&self) -> String {
        format!(
            "{}/compute/v1",
            self.endpoints
                .compute
                .as_deref()
                .unwrap_or("https://compute.googleapis.com")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_follow_googles_rules() {
        assert!(is_project_id("acme-ml-prod"));
        assert!(is_project_id("example.com:ml-prod"));
        assert!(!is_project_id("Acme"));
        assert!(!is_project_id("short"));
        assert!(!is_project_id("ends-with-"));
        assert!(!is_project_id("1234567890"));
        assert!(!is_project_id("a-thirty-one-characters-long-id"));
    }
}
