//! What a provider declares about itself, before any call: its name, its regions and their
//! continents, its naming limits, its settings and `vm:` schemas with their checks, and the
//! shape of its part of the resource graph. The engine checks configs and builds graphs from
//! these declarations alone; it names no provider.

use crate::doc::{Checks, Doc};
use crate::spec::{BucketRole, VmSpec};
use crate::Loc;

/// Where a provider's deployments run.
#[derive(Clone, Copy, Debug)]
pub enum Regions {
    /// The cloud's regions, by continent code (DESIGN §6): a deployment must name one.
    Table(&'static [(&'static str, &'static [&'static str])]),
    /// A region of its own, named like the provider and its own continent, unless the
    /// deployment names another provider's region to rehearse that continent's layout.
    Own,
    /// No region at all (a machine is where it is): region and continent are the provider's
    /// name, and `defaults.region` does not apply.
    None { why: &'static str },
}

impl Regions {
    /// The continent of `region` in this provider's own table.
    pub fn continent(&self, region: &str) -> Option<&'static str> {
        match self {
            Regions::Table(table) => table
                .iter()
                .find(|(_, regions)| regions.contains(&region))
                .map(|(c, _)| *c),
            _ => None,
        }
    }

    /// Every region of the table, in order.
    pub fn all(&self) -> Vec<&'static str> {
        match self {
            Regions::Table(table) => table.iter().flat_map(|(_, r)| r.iter().copied()).collect(),
            _ => Vec::new(),
        }
    }

    /// The regions of the table in `continent`.
    pub fn of_continent(&self, continent: &str) -> Vec<&'static str> {
        match self {
            Regions::Table(table) => table
                .iter()
                .filter(|(c, _)| *c == continent)
                .flat_map(|(_, r)| r.iter().copied())
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The part of the resource graph a provider's deployments get beyond what every deployment
/// has (storage, buckets, VM and what runs on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// A deployment gets an identity (`deployment.D.role`) that its VM carries.
    pub identity: bool,
    /// The buckets whose access is granted to that identity as a node of its own
    /// (`deployment.D.grant.<role>`, depending on the role and the bucket).
    pub grants: &'static [BucketRole],
    /// Buckets live on the deployment's machine: they are made once it is reachable (they
    /// depend on the VM).
    pub buckets_on_vm: bool,
}

/// How long a deployment id may be on this provider, and why.
#[derive(Clone, Copy, Debug)]
pub struct IdLimit {
    pub max: usize,
    /// The name it limits, e.g. `anycloud-{id}`.
    pub because: &'static str,
}

/// Where the provider's checker is looking: the deployment whose `vm:` it checks.
#[derive(Clone, Copy, Debug)]
pub struct VmContext<'a> {
    pub deployment: &'a str,
    /// Where the deployment's id is in the file: problems of the whole `vm:` (a missing
    /// field) are reported there.
    pub at: Loc,
}

/// What a provider declares. Everything here is answered without I/O.
pub trait Declaration: Send + Sync {
    /// The name used in `provider:`, in `providers.<name>` and in state.
    fn name(&self) -> &'static str;

    fn regions(&self) -> Regions;

    fn shape(&self) -> Shape;

    /// The longest deployment id whose derived names fit this cloud.
    fn id_limit(&self) -> IdLimit {
        IdLimit {
            max: 63,
            because: "the checkpoint bucket named after it",
        }
    }

    /// This cloud's own rules for bucket names, beyond the common ones every cloud checks
    /// (so a config moves between clouds unchanged).
    fn check_bucket_name(&self, _name: &str) -> Result<(), String> {
        Ok(())
    }

    /// The keys of `providers.<name>`.
    fn settings_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// Checks `providers.<name>` (only known keys reach here) and returns the settings as the
    /// provider will be configured with them ([`crate::Provider::configure`]).
    fn check_settings(&self, _settings: Option<&Doc>, _checks: &mut Checks) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// The keys a deployment's `vm:` may have on this provider.
    fn vm_keys(&self) -> &'static [&'static str] {
        &["type", "spot", "disk_gb"]
    }

    /// Checks a deployment's `vm:` (`defaults.vm` under its own; only known keys reach here).
    fn check_vm(&self, vm: Option<&Doc>, cx: VmContext<'_>, checks: &mut Checks) -> VmSpec {
        cloud_vm(vm, cx, checks, None)
    }
    /// The key under the config's `state:` that keeps the state in this cloud's object
    /// store (`s3`), if it offers one.
    fn state_backend(&self) -> Option<&'static str> {
        None
    }

    /// Checks `state.<backend>` and returns its settings, as
    /// [`crate::Provider::state_objects`] takes them.
    fn check_state(&self, _doc: &Doc, _checks: &mut Checks) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// An endpoint goes into the VMs' `rclone.conf`: an http(s) URL and nothing else, so no
/// newline can add keys to the remote. The operator's credentials go to it (a bearer token
/// on GCP and Azure, signed requests on AWS), so plain `http` is for this machine only: a
/// loopback host ([`is_loopback_host`]), as a test's emulator is.
pub fn check_url(url: &str) -> Result<(), String> {
    let (scheme, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(r), _) => ("https", r),
        (_, Some(r)) => ("http", r),
        _ => ("", ""),
    };
    if rest.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "'{}' is not an http(s) URL without spaces or control characters",
            url.escape_default()
        ));
    }
    if scheme == "http" && !is_loopback_host(url_host(rest)) {
        return Err(format!(
            "'{url}' is plain http to another machine: the operator's credentials would cross \
             the network in the clear; use https (http is allowed only to localhost, \
             127.0.0.0/8 and [::1])"
        ));
    }
    Ok(())
}

/// The host of a URL's part after `scheme://`: without user info and port, an IPv6
/// address without its brackets.
fn url_host(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split_once(']').map_or("", |(h, _)| h);
    }
    host_port.split_once(':').map_or(host_port, |(h, _)| h)
}

/// `localhost`, an address of 127.0.0.0/8, or `::1`: never another machine. Written
/// strictly (no other spelling of an address, no name but `localhost`), so what is allowed
/// is what it looks like.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An IPv4 CIDR like `203.0.113.7/32` (who may reach a VM's SSH port).
pub fn is_cidr(text: &str) -> bool {
    let Some((ip, bits)) = text.split_once('/') else {
        return false;
    };
    ip.parse::<std::net::Ipv4Addr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 32)
}

/// `providers.<provider>.ssh_cidr`, checked: who may reach the VMs' SSH port.
pub fn check_ssh_cidr(doc: &Doc, provider: &str, checks: &mut Checks) -> Option<String> {
    let v = doc.get("ssh_cidr")?;
    let path = format!("providers.{provider}.ssh_cidr");
    let cidr = checks.string(v, &path)?;
    if !is_cidr(&cidr) {
        checks.error(
            v.at,
            format!("{path} '{cidr}' is not an IPv4 CIDR like 203.0.113.7/32"),
            None,
        );
    }
    Some(cidr)
}

/// `providers.<provider>.ssh_user`, checked: the image's login user, which gets the
/// deployment's key and sudo (never root: clouds refuse it or lock it).
pub fn check_ssh_user(doc: &Doc, provider: &str, checks: &mut Checks) -> Option<String> {
    let v = doc.get("ssh_user")?;
    let path = format!("providers.{provider}.ssh_user");
    let user = checks.string(v, &path)?;
    if !is_user_name(&user) || user == "root" {
        checks.error(
            v.at,
            format!("{path} '{user}' is not a login user name (letters, digits, '._-'; not root)"),
            None,
        );
    }
    Some(user)
}

/// A login user's name: letters, digits and `. _ -`.
pub fn is_user_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// `vm.type`, `vm.spot` and `vm.disk_gb`, as a cloud VM has them; `type_required_by` names
/// the provider that must be told the machine type.
/// The `vm:` keys of a cloud that makes its machines: [`cloud_vm`]'s, `image`, and
/// `regions` (checked by the engine, which knows the continents).
pub const CLOUD_VM_KEYS: &[&str] = &["type", "spot", "disk_gb", "image", "regions"];

/// `vm.image`, checked by the cloud's own rule `check` (which says why a value is not an
/// image of this cloud): a malformed one is an error located at the value.
pub fn vm_image(
    vm: Option<&Doc>,
    checks: &mut Checks,
    check: impl Fn(&str) -> Result<(), String>,
) -> Option<String> {
    let v = vm?.get("image")?;
    let image = checks.string(v, "vm.image")?;
    if let Err(why) = check(&image) {
        checks.error(v.at, format!("vm.image '{image}' {why}"), None);
    }
    Some(image)
}

pub fn cloud_vm(
    vm: Option<&Doc>,
    cx: VmContext<'_>,
    checks: &mut Checks,
    type_required_by: Option<&str>,
) -> VmSpec {
    let mut spec = VmSpec::default();
    let field = |k: &str| vm.and_then(|v| v.get(k));
    if let Some(t) = field("type") {
        spec.machine_type = checks.string(t, "vm.type");
    }
    if let Some(s) = field("spot") {
        spec.spot = checks.boolean(s, "vm.spot").unwrap_or(false);
    }
    if let Some(d) = field("disk_gb") {
        if let Some(n) = checks.integer(d, "vm.disk_gb", 0..=u32::MAX as i64) {
            if n < 10 {
                checks.error(d.at, format!("disk_gb {n} is too small; at least 10"), None);
            }
            spec.disk_gb = Some(n as u32);
        }
    }
    if let (None, Some(provider)) = (&spec.machine_type, type_required_by) {
        if field("type").is_none() {
            checks.error(
                cx.at,
                format!(
                    "deployment '{}' needs vm.type for provider {provider}",
                    cx.deployment
                ),
                None,
            );
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_plain_urls() {
        assert!(check_url("http://127.0.0.1:5000").is_ok());
        assert!(check_url("https://s3.example.com").is_ok());
        assert!(check_url("http://x\nacl = public-read").is_err());
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("http://").is_err());
    }

    /// The operator's token goes to an endpoint: in the clear only to this machine.
    #[test]
    fn plain_http_is_for_loopback_only() {
        for ok in [
            "http://127.0.0.1:4443",
            "http://127.1.2.3/storage",
            "http://localhost:9000",
            "http://LOCALHOST",
            "http://[::1]:8080/x",
            "http://user@127.0.0.1:1",
            "https://10.200.1.1:5000",
            "https://example.com",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://example.com",
            "http://10.200.1.1:5000",
            "http://127.0.0.1.example.com",
            "http://127.0.0.1@example.com/",
            "http://localhost.example.com",
            "http://0x7f.1",
            "http://[::ffff:127.0.0.1]",
            "http://[::2]:80",
            "http://169.254.169.254",
        ] {
            let e = check_url(refused).unwrap_err();
            assert!(
                e.contains("plain http to another machine"),
                "{refused}: {e}"
            );
        }
    }

    #[test]
    fn cidrs_are_ipv4_with_a_prefix_length() {
        assert!(is_cidr("203.0.113.7/32"));
        assert!(!is_cidr("203.0.113.7"));
        assert!(!is_cidr("203.0.113.7/33"));
    }
}
