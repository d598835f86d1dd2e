//! Test-only overrides, documented in README.md: a cloud without real machines behind its
//! test double (moto, the Azure contract server) reaches every VM at a test host, whose
//! files are shared with the test machine.
//!
//! They exist only with the `test-hooks` feature, which only builds of tests turn on (a
//! dev-dependency's feature): an installed anycloud never sends a VM's SSH, and its host-key
//! pinning, anywhere but the VM, whatever its environment says.

use anycloud_provider::ProviderError;

/// `host:port` every instance is reached at instead of its public address.
pub const SSH_ADDRESS: &str = "ANYCLOUD_TEST_SSH_ADDRESS";
/// A directory the VM layout is rooted under instead of `/`.
pub const VM_ROOT: &str = "ANYCLOUD_TEST_VM_ROOT";

/// The SSM parameter AWS's default GPU image is read from instead of AWS's own (moto
/// refuses to hold a parameter under `/aws/`).
pub const GPU_IMAGE_PARAMETER: &str = "ANYCLOUD_TEST_AWS_GPU_IMAGE_PARAMETER";

/// The command the idle watcher runs instead of powering the machine off
/// ([`crate::idle`]): a test observes it, and keeps its host.
pub const POWER_OFF: &str = "ANYCLOUD_TEST_POWER_OFF";

/// The power-off command a test set, if test hooks are built in.
pub fn power_off() -> Option<String> {
    value(POWER_OFF)
}

/// A value a test set for `name`, if test hooks are built in.
pub fn value(name: &str) -> Option<String> {
    hook(name).filter(|v| !v.is_empty())
}

#[cfg(feature = "test-hooks")]
fn hook(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(not(feature = "test-hooks"))]
fn hook(_: &str) -> Option<String> {
    None
}

/// Where every VM is reached instead, if a test says so.
pub fn ssh_address() -> Result<Option<(String, u16)>, ProviderError> {
    hook(SSH_ADDRESS).map(|v| parse_address(&v)).transpose()
}

/// The directory the VM layout is rooted under (empty: `/`).
pub fn vm_root() -> Result<String, ProviderError> {
    hook(VM_ROOT).map_or(Ok(String::new()), |v| check_root(&v))
}

fn parse_address(value: &str) -> Result<(String, u16), ProviderError> {
    let bad = || {
        ProviderError::permanent(format!(
            "{SSH_ADDRESS}={value:?} is not HOST:PORT (a host name or IP address, then a port)"
        ))
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':');
    if host.is_empty() || !host.chars().all(plain) {
        return Err(bad());
    }
    Ok((host.to_owned(), port.parse().map_err(|_| bad())?))
}

/// The root is pasted into supervisord's command lines and scripts: only an absolute path
/// of plain characters is taken.
fn check_root(value: &str) -> Result<String, ProviderError> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-');
    if !value.starts_with('/') || !value.chars().all(plain) || value.split('/').any(|p| p == "..") {
        return Err(ProviderError::permanent(format!(
            "{VM_ROOT}={value:?} must be an absolute path of letters, digits and / . _ - only, without .."
        )));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_host_and_port() {
        assert_eq!(
            parse_address("127.0.0.1:2222").unwrap(),
            ("127.0.0.1".into(), 2222)
        );
        assert_eq!(parse_address("[::1]:22").unwrap(), ("::1".into(), 22));
        for bad in [
            "127.0.0.1",
            "host:port",
            ":22",
            "a b:22",
            "h;rm:22",
            "h:99999",
        ] {
            let e = parse_address(bad).unwrap_err();
            assert!(e.message.contains(SSH_ADDRESS), "{bad}: {e:?}");
        }
    }

    #[test]
    fn a_root_is_a_plain_absolute_path() {
        assert_eq!(check_root("/tmp/vm-1/").unwrap(), "/tmp/vm-1");
        for bad in [
            "tmp/vm",
            "/tmp/a b",
            "/tmp/$(reboot)",
            "/tmp/a;b",
            "/tmp/../etc",
            "",
        ] {
            let e = check_root(bad).unwrap_err();
            assert!(e.message.contains(VM_ROOT), "{bad}: {e:?}");
        }
    }
}
