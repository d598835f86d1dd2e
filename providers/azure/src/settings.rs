//! `providers.azure`: its schema and its checks, located in the config.

use anycloud_provider::declare::{check_ssh_cidr, check_ssh_user, check_url};
use anycloud_provider::doc::{Checks, Doc};
use anycloud_provider::{ErrorCode, ProviderError, Result};
use serde::{Deserialize, Serialize};

use crate::arm::PUBLIC_CLOUD;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The subscription everything is made in; else `AZURE_SUBSCRIPTION_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<String>,
    /// Who may reach the VMs' SSH port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_cidr: Option<String>,
    /// The image's login user (it gets the deployment's key and sudo); default `azureuser`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_user: Option<String>,
    #[serde(default)]
    pub endpoints: Endpoints,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoints {
    /// Resource Manager of another cloud (or a test's contract server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_manager: Option<String>,
    /// The blob service's domain, when it is not `blob.core.windows.net` (another cloud, a
    /// test's emulator): the VMs' rclone reaches `https://{account}.{blob_suffix}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_suffix: Option<String>,
}

pub const KEYS: &[&str] = &["subscription_id", "ssh_cidr", "ssh_user", "endpoints"];
const ENDPOINT_KEYS: &[&str] = &["resource_manager", "blob_suffix"];

/// A domain with an optional port: it goes into the VMs' `rclone.conf`, so nothing else.
fn is_domain(v: &str) -> bool {
    let (host, port) = match v.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (v, None),
    };
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

fn is_guid(v: &str) -> bool {
    v.len() == 36
        && v.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Checks `providers.azure` (its keys are known already) and returns it as [`Settings`].
pub fn check(doc: Option<&Doc>, checks: &mut Checks) -> Settings {
    let mut s = Settings::default();
    let Some(doc) = doc else {
        return s;
    };
    if let Some(id) = doc.get("subscription_id") {
        if let Some(v) = checks.string(id, "providers.azure.subscription_id") {
            if !is_guid(&v) {
                checks.error(
                    id.at,
                    format!("subscription_id '{v}' is not a GUID"),
                    Some("e.g. 00000000-0000-0000-0000-000000000000".into()),
                );
            }
            s.subscription_id = Some(v);
        }
    }
    s.ssh_cidr = check_ssh_cidr(doc, "azure", checks);
    s.ssh_user = check_ssh_user(doc, "azure", checks);
    if let Some(endpoints) = doc.get("endpoints") {
        if checks.known_keys(endpoints, "providers.azure.endpoints", ENDPOINT_KEYS) {
            if let Some(v) = endpoints.get("resource_manager") {
                let path = "providers.azure.endpoints.resource_manager";
                if let Some(url) = checks.string(v, path) {
                    if let Err(why) = check_url(&url) {
                        checks.error(v.at, format!("{path} {why}"), None);
                    }
                    s.endpoints.resource_manager = Some(url);
                }
            }
            if let Some(v) = endpoints.get("blob_suffix") {
                let path = "providers.azure.endpoints.blob_suffix";
                if let Some(suffix) = checks.string(v, path) {
                    if !is_domain(&suffix) {
                        checks.error(
                            v.at,
                            format!(
                                "{path} '{}' is not a domain like blob.core.chinacloudapi.cn (with an optional :port)",
                                suffix.escape_default()
                            ),
                            None,
                        );
                    }
                    s.endpoints.blob_suffix = Some(suffix);
                }
            }
        }
    }
    s
}

impl Settings {
    /// The subscription: the config's, else `AZURE_SUBSCRIPTION_ID` (checked the same way).
    pub fn subscription(&self) -> Result<String> {
        if let Some(id) = &self.subscription_id {
            return Ok(id.to_ascii_lowercase());
        }
        match std::env::var("AZURE_SUBSCRIPTION_ID") {
            Ok(id) if is_guid(&id) => Ok(id.to_ascii_lowercase()),
            Ok(id) if !id.is_empty() => Err(ProviderError::new(
                ErrorCode::Invalid,
                format!(
                    "AZURE_SUBSCRIPTION_ID '{}' is not a GUID",
                    id.escape_default()
                ),
            )),
            _ => Err(ProviderError::new(
                ErrorCode::Invalid,
                "no Azure subscription: set providers.azure.subscription_id in anycloud.yaml, or AZURE_SUBSCRIPTION_ID",
            )),
        }
    }

    /// The blob service of `account`: `https://{account}.{blob_suffix}`, the name the VMs'
    /// rclone reaches too.
    pub fn blob_endpoint(&self, account: &str) -> String {
        let suffix = self
            .endpoints
            .blob_suffix
            .as_deref()
            .unwrap_or("blob.core.windows.net");
        format!("https://{account}.{suffix}")
    }

    pub fn resource_manager(&self) -> &str {
        self.endpoints
            .resource_manager
            .as_deref()
            .unwrap_or(PUBLIC_CLOUD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_suffix_is_a_domain_and_nothing_else() {
        assert!(is_domain("blob.core.chinacloudapi.cn"));
        assert!(is_domain("blob.anycloud.test:10443"));
        assert!(!is_domain("blob.test\nkey = x"));
        assert!(!is_domain("https://blob.test"));
        assert!(!is_domain("blob..test"));
    }

    #[test]
    fn guids_have_their_dashes_in_place() {
        assert!(is_guid("9f3b1c2d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"));
        assert!(!is_guid("9f3b1c2d4e5f-4a6b-8c7d-0e1f2a3b4c5d-"));
        assert!(!is_guid("not-a-guid"));
    }
}
