//! `providers.aws`: its one schema, its checks (located in the config), the standard
//! environment, and the test-only overrides.

use anycloud_provider::doc::{Checks, Doc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// A profile of the standard config files; otherwise the standard credential chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Per-service endpoints (S3-compatible stores, moto), as `AWS_ENDPOINT_URL_<SERVICE>`.
    #[serde(default)]
    pub endpoints: Endpoints,
    /// Who may reach the VMs' SSH port (default 0.0.0.0/0, with a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_cidr: Option<String>,
    /// The VM image (an AMI id, or an SSM parameter holding one), for every deployment
    /// without `vm.image`; default: the latest Debian 12 image in the region, or with GPUs
    /// asked, the Deep Learning Base OSS NVIDIA Driver AMI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami: Option<String>,
    /// The image's login user (Debian's images: `admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_user: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec2: Option<String>,
}

pub const KEYS: &[&str] = &["profile", "endpoints", "ssh_cidr", "ami", "ssh_user"];
const ENDPOINT_KEYS: &[&str] = &["s3", "iam", "ec2"];

/// Debian's images log in as `admin`.
pub const DEFAULT_SSH_USER: &str = "admin";

/// SSH open to the world, key auth only: what a VM gets without `ssh_cidr`.
pub const OPEN_CIDR: &str = "0.0.0.0/0";

/// Checks `providers.aws` (its keys are known already) and returns it as [`Settings`].
pub fn check(doc: Option<&Doc>, checks: &mut Checks) -> Settings {
    let Some(doc) = doc else {
        return Settings::default();
    };
    let mut s = Settings::default();
    let text = |checks: &mut Checks, key: &str| -> Option<(String, anycloud_provider::Loc)> {
        let v = doc.get(key)?;
        checks
            .string(v, &format!("providers.aws.{key}"))
            .map(|t| (t, v.at))
    };
    s.profile = text(checks, "profile").map(|(t, _)| t);
    if let Some((cidr, at)) = text(checks, "ssh_cidr") {
        if !is_cidr(&cidr) {
            checks.error(
                at,
                format!("providers.aws.ssh_cidr '{cidr}' is not an IPv4 CIDR like 203.0.113.7/32"),
                None,
            );
        }
        s.ssh_cidr = Some(cidr);
    }
    if let Some((ami, at)) = text(checks, "ami") {
        if let Err(why) = check_image(&ami) {
            checks.error(at, format!("providers.aws.ami '{ami}' {why}"), None);
        }
        s.ami = Some(ami);
    }
    if let Some((user, at)) = text(checks, "ssh_user") {
        if !anycloud_provider::declare::is_user_name(&user) {
            checks.error(
                at,
                format!("providers.aws.ssh_user '{user}' is not a user name"),
                None,
            );
        }
        s.ssh_user = Some(user);
    }
    if let Some(endpoints) = doc.get("endpoints") {
        if checks.known_keys(endpoints, "providers.aws.endpoints", ENDPOINT_KEYS) {
            for (key, slot) in [
                ("s3", &mut s.endpoints.s3),
                ("iam", &mut s.endpoints.iam),
                ("ec2", &mut s.endpoints.ec2),
            ] {
                let Some(v) = endpoints.get(key) else {
                    continue;
                };
                let path = format!("providers.aws.endpoints.{key}");
                if let Some(url) = checks.string(v, &path) {
                    if let Err(why) = check_url(&url) {
                        checks.error(v.at, format!("{path} {why}"), None);
                    }
                    *slot = Some(url);
                }
            }
        }
    }
    s
}

pub use anycloud_provider::declare::{check_url, is_cidr};

/// An image as EC2 takes it: an AMI id (`ami-` and hex digits), or the name of an SSM
/// parameter that holds one (`/…`, read when the VM is made; AWS publishes its images'
/// under `/aws/service/`).
pub fn check_image(image: &str) -> Result<(), String> {
    let hex = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_hexdigit());
    if image.strip_prefix("ami-").is_some_and(hex) {
        return Ok(());
    }
    let param_char = |c: char| c.is_ascii_alphanumeric() || "/_.-".contains(c);
    if image.starts_with('/') && image.len() > 1 && image.chars().all(param_char) {
        return Ok(());
    }
    Err(
        "is neither an AMI id (ami-0123456789abcdef0) nor an SSM parameter naming one \
         (/aws/service/…/ami-id)"
            .into(),
    )
}

/// Whether `image` names an SSM parameter rather than an AMI.
pub fn is_parameter(image: &str) -> bool {
    image.starts_with('/')
}

impl Settings {
    /// The S3 endpoint the VMs' rclone must use too: the config's (checked with the
    /// config), else the standard variables (`AWS_ENDPOINT_URL_S3`, then
    /// `AWS_ENDPOINT_URL`). Every `AWS_ENDPOINT_URL*` must be a plain URL, of http only to
    /// loopback: an error names the variable.
    pub fn s3_endpoint(&self) -> Result<Option<String>, String> {
        // The SDK sends every service's signed requests to its variable's endpoint: plain
        // http to another host is refused for each, not only for S3's.
        let mut vars: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, v)| k.starts_with("AWS_ENDPOINT_URL") && !v.is_empty())
            .collect();
        vars.sort();
        for (var, url) in &vars {
            check_url(url).map_err(|why| format!("{var}: {why}"))?;
        }
        if let Some(url) = &self.endpoints.s3 {
            return Ok(Some(url.clone()));
        }
        for var in ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"] {
            match std::env::var(var) {
                Ok(url) if !url.is_empty() => {
                    check_url(&url).map_err(|why| format!("{var}: {why}"))?;
                    return Ok(Some(url));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    pub fn ssh_user(&self) -> &str {
        self.ssh_user.as_deref().unwrap_or(DEFAULT_SSH_USER)
    }

    pub fn ssh_cidr(&self) -> &str {
        self.ssh_cidr.as_deref().unwrap_or(OPEN_CIDR)
    }
}

pub use anycloud_host::testing;

#[cfg(test)]
mod tests {
    use super::check_image;

    #[test]
    fn images_are_amis_or_ssm_parameters() {
        for ok in [
            "ami-12345678",
            "ami-0123456789abcdef0",
            "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id",
            "/team/gpu-image",
        ] {
            assert!(check_image(ok).is_ok(), "{ok}");
        }
        for bad in [
            "debian-12",
            "ami-",
            "ami-xyz",
            "/",
            "/a b",
            "resolve:ssm:/x",
            "",
        ] {
            assert!(check_image(bad).is_err(), "{bad}");
        }
    }
}
