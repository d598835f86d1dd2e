//! `providers.aws` from the config, the standard environment, and the test-only overrides.

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Settings {
    pub profile: Option<String>,
    #[serde(default)]
    pub endpoints: Endpoints,
    pub ssh_cidr: Option<String>,
    pub ami: Option<String>,
    pub ssh_user: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Endpoints {
    pub s3: Option<String>,
    pub iam: Option<String>,
    pub ec2: Option<String>,
}

/// Debian's images log in as `admin`.
pub const DEFAULT_SSH_USER: &str = "admin";

/// SSH open to the world, key auth only: what a VM gets without `ssh_cidr`.
pub const OPEN_CIDR: &str = "0.0.0.0/0";

impl Settings {
    /// The S3 endpoint the VMs' rclone must use too: the config's, else the standard
    /// variables (`AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`).
    pub fn s3_endpoint(&self) -> Option<String> {
        self.endpoints
            .s3
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .filter(|e| !e.is_empty())
    }

    pub fn ssh_user(&self) -> &str {
        self.ssh_user.as_deref().unwrap_or(DEFAULT_SSH_USER)
    }

    pub fn ssh_cidr(&self) -> &str {
        self.ssh_cidr.as_deref().unwrap_or(OPEN_CIDR)
    }
}

/// Test-only overrides, documented in README.md: with no real EC2 behind moto, every
/// instance is reached at a test host, whose files are shared with the test machine.
pub mod testing {
    /// `host:port` every instance is reached at instead of its public address.
    pub const SSH_ADDRESS: &str = "ANYCLOUD_TEST_SSH_ADDRESS";
    /// A directory the VM layout is rooted under instead of `/`.
    pub const VM_ROOT: &str = "ANYCLOUD_TEST_VM_ROOT";

    pub fn ssh_address() -> Option<(String, u16)> {
        let value = std::env::var(SSH_ADDRESS).ok()?;
        let (host, port) = value.rsplit_once(':')?;
        Some((host.to_owned(), port.parse().ok()?))
    }

    pub fn vm_root() -> String {
        std::env::var(VM_ROOT).unwrap_or_default()
    }
}
