//! Test-only overrides, documented in README.md: a cloud without real machines behind its
//! test double (moto, the Azure contract server) reaches every VM at a test host, whose
//! files are shared with the test machine.

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
