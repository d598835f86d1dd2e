//! `provider: ssh` — a machine the user already has, reached over SSH. Buckets are
//! directories under `vm.root` on it, and the deployment's "VM" is `<root>/hosts/<id>` there.
//!
//! Every resource on a machine reaches it through the deployment's VM resource: its
//! attributes say where the machine is, which key to use and which host key is pinned.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anycloud_host::keys;
use anycloud_host::{steps, ContextCache, Host, HostContext, SshHost, SshPool, SshTarget};
use anycloud_provider::doc::{Checks, Doc};
use anycloud_provider::{
    attr_str, Attrs, Declaration, DeploymentSpec, ErrorCode, Kind, NodeSpec, Planned, Provider,
    ProviderError, Read, Regions, Result, Shape, Target, VmContext, VmSpec,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::dirs;

/// How long to wait for a machine's SSH to answer (a rebooting machine, a restarted sshd).
/// A machine of the user's own is expected to be up: a wrong address should not hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

pub const DEFAULT_ROOT: &str = "/var/lib/anycloud";

/// A deployment's `vm:` on `provider: ssh`: the machine of the user's own to use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Absolute; `None` means the deployment's own generated key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    /// `SHA256:…`; `None` trusts the key seen first and pins it in state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// Where anycloud keeps its directories (buckets, the deployment's host dir) there.
    pub root: String,
}

pub struct SshProvider {
    /// Where the deployments' generated keys live (`.anycloud/keys`).
    keys_dir: PathBuf,
    connections: SshPool,
    known_hosts_lock: Mutex<()>,
    contexts: ContextCache,
}

impl SshProvider {
    pub fn new(keys_dir: PathBuf) -> SshProvider {
        SshProvider {
            keys_dir,
            connections: SshPool::default(),
            known_hosts_lock: Mutex::new(()),
            contexts: ContextCache::default(),
        }
    }

    fn context(&self, spec: &DeploymentSpec) -> Result<Arc<HostContext>> {
        self.contexts.get(spec, || {
            let root = machine_of_spec(spec)?.root;
            // The root exists once the VM does; the buckets dir may not yet (buckets are
            // made after the VM, which pins the host key first).
            let mut ctx =
                dirs::host_context(spec, &root, &format!("{root}/run"), format!("local:{root}"))?;
            // On Docker's bridge, not the host's network: a machine of one's own is often a
            // cloud VM, and VM init keeps bridged containers from its metadata service (its
            // identity's credentials); a job on the host's network would reach it.
            ctx.network = "bridge".into();
            // A machine of one's own that runs one deployment's job: `idle_shutdown` on it
            // asks for it to be powered off when the job is done (the plan says so).
            ctx.power_off = Some(anycloud_host::idle::POWER_OFF.to_owned());
            Ok(ctx)
        })
    }

    /// The machine's address, user, key and pinned host key, from a VM's attributes.
    fn target_of(&self, vm: &Attrs) -> Result<SshTarget> {
        let key_path = match vm.get("identity_file").and_then(|v| v.as_str()) {
            Some(path) => PathBuf::from(path),
            None => {
                let deployment = attr_str(vm, "deployment")?;
                keys::ensure_deployment_key(&self.keys_dir, deployment)
                    .map_err(|e| ProviderError::permanent(e.to_string()))?
                    .private_path
            }
        };
        Ok(SshTarget {
            host: attr_str(vm, "host")?.to_owned(),
            port: vm
                .get("port")
                .and_then(|p| p.as_u64())
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(22),
            user: attr_str(vm, "user")?.to_owned(),
            key_path,
            pinned: vm
                .get("host_key")
                .and_then(|v| v.as_str())
                .map(String::from)
                .or_else(|| self.remembered(&host_port(vm))),
            connect_timeout: CONNECT_TIMEOUT,
            retry_refused_key: false,
        })
    }

    /// The host keys trusted so far, by `host:port`, as OpenSSH's known_hosts keeps them:
    /// a VM re-created after a wipe (no host key in its planned attributes) must still meet
    /// the key it met before.
    fn known_hosts(&self) -> PathBuf {
        self.keys_dir.join("known_hosts")
    }

    fn remembered(&self, host_port: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.known_hosts()).ok()?;
        text.lines().find_map(|l| {
            let (h, fp) = l.split_once(' ')?;
            (h == host_port).then(|| fp.trim().to_owned())
        })
    }

    /// Records the key met at `host_port`. A key met on first contact (or against the
    /// `known_hosts` pin) never replaces another recorded meanwhile, by this process or
    /// another: that is a different machine answering, or someone in between. Only a pin of
    /// the state or the config (`vm.host_key`, the way out of a rebuilt machine) does.
    fn remember(&self, host_port: &str, fingerprint: &str, pinned_by_record: bool) -> Result<()> {
        let _guard = self
            .known_hosts_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let path = self.known_hosts();
        std::fs::create_dir_all(&self.keys_dir)
            .map_err(|e| ProviderError::permanent(format!("{}: {e}", self.keys_dir.display())))?;
        // Across processes too: two first contacts at once must not both win.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.keys_dir.join("known_hosts.lock"))
            .and_then(|f| f.lock().map(|_| f))
            .map_err(|e| ProviderError::permanent(format!("locking {}: {e}", path.display())))?;
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let recorded = old.lines().find_map(|l| {
            let (h, fp) = l.split_once(' ')?;
            (h == host_port).then(|| fp.trim().to_owned())
        });
        match recorded {
            Some(fp) if fp == fingerprint => return Ok(()),
            Some(fp) if !pinned_by_record => {
                return Err(ProviderError::new(
                    ErrorCode::Conflict,
                    format!(
                        "{host_port} offered the host key {fingerprint}, but {} pins {fp} for it (recorded meanwhile): anycloud will not replace it. Check the machine's key out of band and set `vm.host_key:` to it",
                        path.display()
                    ),
                ))
            }
            _ => {}
        }
        let mut lines: Vec<String> = old
            .lines()
            .filter(|l| l.split_once(' ').map(|(h, _)| h) != Some(host_port))
            .map(String::from)
            .collect();
        lines.push(format!("{host_port} {fingerprint}"));
        lines.sort();
        let text = format!("{}\n", lines.join("\n"));
        let written = anycloud_provider::files::write_atomically(&path, text.as_bytes(), 0o600)
            .map_err(|e| {
                ProviderError::permanent(format!(
                    "recording the host key in {}: {e}",
                    path.display()
                ))
            });
        drop(lock);
        written
    }

    /// Connects to a VM's machine and records what a VM's attributes hold about the keys.
    async fn connect_vm(&self, vm: &Attrs) -> Result<(Arc<SshHost>, Attrs)> {
        let ssh = self.connection(vm)?;
        let host_key = ssh.connect().await.map_err(ProviderError::from)?;
        self.remember(&host_port(vm), &host_key, vm.contains_key("host_key"))?;
        let key = keys::load(&ssh.target().key_path)
            .map_err(|e| ProviderError::permanent(e.to_string()))?
            .1;
        let mut out = vm.clone();
        out.insert("host_key".into(), json!(host_key));
        out.insert("public_key".into(), json!(key.public_key));
        out.insert("key_fingerprint".into(), json!(key.fingerprint));
        Ok((ssh, out))
    }

    /// One connection per machine, shared by every step on it.
    fn connection(&self, vm: &Attrs) -> Result<Arc<SshHost>> {
        self.connections
            .get(self.target_of(vm)?)
            .map_err(ProviderError::from)
    }

    /// What says how to reach a resource's machine: a VM's own attributes; a bucket's own
    /// (it may be read before its VM exists: an input bucket is checked on the first plan)
    /// with the VM's pinned host key once there is one; a hosted resource's VM.
    fn machine_of<'a>(t: &'a Target<'_>) -> Option<Cow<'a, Attrs>> {
        match t.kind {
            Kind::Vm => Some(Cow::Borrowed(t.attrs)),
            Kind::Bucket => {
                // The VM's pin once there is one; before (an input bucket read on the first
                // plan), the configured `vm.host_key`: no first contact trusts any key met.
                let pin = t
                    .dep(Kind::Vm)
                    .and_then(|vm| vm.get("host_key"))
                    .or_else(|| t.private.get("host_key"));
                Some(match pin {
                    Some(k) => {
                        let mut a = t.attrs.clone();
                        a.insert("host_key".into(), k.clone());
                        Cow::Owned(a)
                    }
                    None => Cow::Borrowed(t.attrs),
                })
            }
            _ => t.dep(Kind::Vm).map(Cow::Borrowed),
        }
    }

    fn host_for(&self, t: &Target<'_>) -> Result<Arc<SshHost>> {
        let vm = Self::machine_of(t).ok_or_else(|| {
            ProviderError::permanent(format!(
                "{}: its VM is not recorded in state, so there is no machine to reach",
                t.address
            ))
        })?;
        self.connection(&vm)
    }

    /// One round trip per machine and key, a bounded number at once.
    async fn probe(&self, targets: &[Target<'_>]) -> Result<Vec<steps::Probed>> {
        let mut hosts: Vec<Option<Arc<dyn Host>>> = Vec::with_capacity(targets.len());
        for t in targets {
            // Each deployment signs in with its own key: a key not yet authorised (or
            // revoked) fails only its own deployment's reads, never answers for another's.
            let host = match (t.kind, Self::machine_of(t)) {
                (Kind::Storage, _) | (_, None) => None,
                (_, Some(machine)) => Some(self.connection(&machine)? as Arc<dyn Host>),
            };
            hosts.push(host);
        }
        Ok(steps::probe_each_host(targets, hosts, dirs::dir_of).await)
    }
}

impl Declaration for SshProvider {
    fn name(&self) -> &'static str {
        "ssh"
    }

    fn regions(&self) -> Regions {
        Regions::None {
            why: "the machine is where it is",
        }
    }

    fn shape(&self) -> Shape {
        Shape {
            identity: false,
            grants: &[],
            // Buckets are directories on the machine: made once it is reachable and its
            // host key pinned.
            buckets_on_vm: true,
        }
    }

    fn vm_keys(&self) -> &'static [&'static str] {
        &["host", "port", "user", "identity_file", "host_key", "root"]
    }

    fn check_vm(&self, vm: Option<&Doc>, cx: VmContext<'_>, checks: &mut Checks) -> VmSpec {
        let machine = check_machine(vm, cx, checks);
        VmSpec {
            settings: machine.map_or(serde_json::Value::Null, |m| json!(m)),
            ..VmSpec::default()
        }
    }
}

/// `vm:` of a `provider: ssh` deployment names a machine of the user's own.
fn check_machine(vm: Option<&Doc>, cx: VmContext<'_>, checks: &mut Checks) -> Option<Machine> {
    let field = |k: &str| vm.and_then(|v| v.get(k));
    let Some(host) = field("host") else {
        checks.error(
            cx.at,
            format!(
                "deployment '{}' needs vm.host for provider ssh",
                cx.deployment
            ),
            Some("e.g. `vm: { host: 10.0.0.5, user: root }`".into()),
        );
        return None;
    };
    let host_at = host.at;
    let host = checks.string(host, "vm.host")?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:_".contains(c));
    if !host_ok {
        checks.error(
            host_at,
            format!("vm.host '{host}' is not a host name or IP address"),
            None,
        );
    }
    let port = match field("port") {
        None => 22,
        Some(p) => match &p.value {
            anycloud_provider::doc::Value::Int(n) if (1..=65535).contains(n) => *n as u16,
            _ => {
                checks.error(
                    p.at,
                    format!("vm.port {} is not a port: 1 to 65535", p.shown()),
                    None,
                );
                22
            }
        },
    };
    let user = match field("user") {
        None => "root".to_owned(),
        Some(u) => {
            let text = checks.string(u, "vm.user").unwrap_or_else(|| "root".into());
            if !anycloud_provider::declare::is_user_name(&text) {
                checks.error(u.at, format!("vm.user '{text}' is not a user name"), None);
            }
            text
        }
    };
    let identity_file = match field("identity_file") {
        None => None,
        Some(i) => {
            let given = checks.string(i, "vm.identity_file").unwrap_or_default();
            let path = checks.absolute(&given);
            if !std::path::Path::new(&path).is_file() {
                checks.error(
                    i.at,
                    format!("vm.identity_file '{given}' does not exist ({path})"),
                    Some(
                        "omit it and anycloud generates a key for the deployment under .anycloud/keys/"
                            .into(),
                    ),
                );
            }
            Some(path)
        }
    };
    let host_key = match field("host_key") {
        None => None,
        Some(k) => {
            let text = checks.string(k, "vm.host_key").unwrap_or_default();
            let body = text.strip_prefix("SHA256:").unwrap_or("");
            let ok = body.len() == 43
                && body
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/');
            if !ok {
                checks.error(
                    k.at,
                    format!("vm.host_key '{text}' is not a SHA256 fingerprint"),
                    Some("give it as `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it on the machine: SHA256: and 43 characters".into()),
                );
            }
            Some(text)
        }
    };
    let root = match field("root") {
        None => DEFAULT_ROOT.to_owned(),
        Some(r) => {
            let text = checks
                .string(r, "vm.root")
                .unwrap_or_else(|| DEFAULT_ROOT.into());
            let ok = text.starts_with('/')
                && !text.trim_end_matches('/').is_empty()
                && anycloud_host::render::is_plain_path(&text);
            if !ok {
                checks.error(
                    r.at,
                    format!(
                        "vm.root '{text}' must be an absolute path (not /) of letters, digits and / . _ - + @"
                    ),
                    None,
                );
            }
            text.trim_end_matches('/').to_owned()
        }
    };
    Some(Machine {
        host,
        port,
        user,
        identity_file,
        host_key,
        root,
    })
}

fn machine_of_spec(spec: &DeploymentSpec) -> Result<Machine> {
    anycloud_provider::read_private(&spec.vm.settings)
}

#[async_trait::async_trait]
impl Provider for SshProvider {
    fn plan(&self, node: NodeSpec<'_>) -> Result<Planned> {
        let spec = node.deployment;
        let mut attrs = Attrs::new();
        match node.kind {
            Kind::Storage => {
                attrs.insert(
                    "buckets".into(),
                    json!("directories under vm.root/buckets on each deployment's machine"),
                );
                Ok(Planned {
                    attrs,
                    ..Planned::default()
                })
            }
            Kind::Bucket => {
                let machine = machine_of_spec(spec)?;
                dirs::check_root(&machine.root)?;
                let mut planned = dirs::bucket_planned(&machine.root, node)?;
                connection_attrs(spec, &machine, &mut planned.attrs);
                if let Some(k) = &machine.host_key {
                    planned.private = json!({ "host_key": k });
                }
                planned.force_new = ["name", "path", "host", "port"].map(String::from).to_vec();
                Ok(planned)
            }
            Kind::Vm => {
                let machine = machine_of_spec(spec)?;
                let ctx = self.context(spec)?;
                let mut planned = dirs::vm_planned(&ctx, &machine.root);
                planned.attrs.insert("root".into(), json!(machine.root));
                if let Some(idle) = spec.idle_shutdown_secs {
                    planned.warnings.push(anycloud_host::idle::plan_note(
                        idle,
                        "powers the machine off (`shutdown -h now`, through sudo) unless another deployment's job runs on it; it does not start again by itself",
                    ));
                }
                connection_attrs(spec, &machine, &mut planned.attrs);
                planned.computed = vec!["key_fingerprint".to_owned(), "public_key".to_owned()];
                // A configured host key is the pin; otherwise the first key seen becomes it.
                match &machine.host_key {
                    Some(k) => {
                        planned.attrs.insert("host_key".into(), json!(k));
                    }
                    None => planned.computed.push("host_key".into()),
                }
                planned.force_new = vec!["host".into(), "port".into(), "host_dir".into()];
                Ok(planned)
            }
            Kind::Role | Kind::Grant => Err(ProviderError::permanent(
                "a machine of your own has no cloud identity",
            )),
            hosted => steps::plan(hosted, spec, &*self.context(spec)?),
        }
    }

    async fn read(&self, targets: &[Target<'_>]) -> Result<Vec<Read>> {
        let probes = self.probe(targets).await?;
        Ok(targets
            .iter()
            .zip(probes)
            .map(|(t, probe)| match (t.kind, probe) {
                (Kind::Storage, _) => Ok(Some(t.attrs.clone())),
                (_, Some(Ok(p))) => Ok(dirs::read_from(t, &p)),
                (_, Some(Err(e))) => Err(e),
                (_, None) => Ok(None),
            })
            .collect())
    }

    async fn create(&self, target: Target<'_>) -> Result<Attrs> {
        match target.kind {
            Kind::Storage => Ok(target.attrs.clone()),
            Kind::Vm => {
                let (ssh, out) = self.connect_vm(target.attrs).await?;
                dirs::create_vm(&*ssh, &target).await?;
                Ok(out)
            }
            Kind::Bucket => {
                let ssh = self.host_for(&target)?;
                dirs::make_dir(&*ssh, attr_str(target.attrs, "path")?).await?;
                Ok(target.attrs.clone())
            }
            Kind::Role | Kind::Grant => Err(ProviderError::permanent(
                "a machine of your own has no cloud identity",
            )),
            _ => steps::apply(&*self.host_for(&target)?, &target).await,
        }
    }

    async fn update(&self, _prior: &Attrs, target: Target<'_>) -> Result<Attrs> {
        match target.kind {
            // The machine lives on: a new user, key or pin only changes how we reach it.
            Kind::Vm => {
                let (ssh, out) = self.connect_vm(target.attrs).await?;
                dirs::claim_host(&*ssh, &target).await?;
                Ok(out)
            }
            _ => self.create(target).await,
        }
    }

    async fn delete(&self, target: Target<'_>) -> Result<()> {
        match target.kind {
            Kind::Storage | Kind::Bucket | Kind::Role | Kind::Grant => Ok(()),
            Kind::Vm => dirs::delete_vm(&*self.connection(target.attrs)?, &target).await,
            _ => steps::delete(&*self.host_for(&target)?, &target).await,
        }
    }

    fn remote_calls(&self) -> u64 {
        self.connections.round_trips()
    }

    fn connections(&self) -> u64 {
        self.connections.connections()
    }

    async fn observe(&self, targets: &[Target<'_>]) -> Result<Vec<BTreeMap<String, String>>> {
        let probes = self.probe(targets).await?;
        Ok(targets
            .iter()
            .zip(probes)
            .map(|(t, probe)| steps::observe_probed(t, &probe))
            .collect())
    }

    async fn job_log(
        &self,
        container: Target<'_>,
        range: anycloud_provider::LogRange<'_>,
    ) -> Result<anycloud_provider::JobLog> {
        steps::job_log(&*self.host_for(&container)?, &container, range).await
    }

    async fn clear_checkpoint(&self, container: Target<'_>) -> Result<anycloud_provider::Cleared> {
        steps::clear_checkpoint(
            &*self.host_for(&container)?,
            &container,
            steps::BucketEmptiedBy::Machine,
        )
        .await
    }
}

/// Where the machine is and which key opens it, as a VM's and a bucket's attributes.
fn connection_attrs(spec: &DeploymentSpec, m: &Machine, attrs: &mut Attrs) {
    attrs.insert("deployment".into(), json!(spec.id));
    attrs.insert("host".into(), json!(m.host));
    attrs.insert("port".into(), json!(m.port));
    attrs.insert("user".into(), json!(m.user));
    if let Some(i) = &m.identity_file {
        attrs.insert("identity_file".into(), json!(i));
    }
}

fn host_port(vm: &Attrs) -> String {
    format!(
        "{}:{}",
        vm.get("host").and_then(|v| v.as_str()).unwrap_or_default(),
        vm.get("port").and_then(|v| v.as_u64()).unwrap_or(22)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two runs meeting a machine for the first time at once (two processes: two
    /// providers on one keys directory) must not both win: the second key met is refused,
    /// never written over the first. Only a pin of the state or the config replaces it.
    #[test]
    fn a_recorded_host_key_is_never_replaced_by_a_first_contact() {
        let dir = tempfile::tempdir().unwrap();
        let one = SshProvider::new(dir.path().to_path_buf());
        let two = SshProvider::new(dir.path().to_path_buf());
        one.remember("10.0.0.5:22", "SHA256:first", false).unwrap();
        let err = two
            .remember("10.0.0.5:22", "SHA256:second", false)
            .unwrap_err();
        assert!(err.message.contains("SHA256:first"), "{err}");
        assert!(err.message.contains("SHA256:second"), "{err}");
        assert_eq!(
            two.remembered("10.0.0.5:22").as_deref(),
            Some("SHA256:first")
        );
        two.remember("10.0.0.5:22", "SHA256:second", true).unwrap();
        assert_eq!(
            one.remembered("10.0.0.5:22").as_deref(),
            Some("SHA256:second")
        );
        // Other machines' entries are kept.
        one.remember("10.0.0.6:22", "SHA256:other", false).unwrap();
        two.remember("10.0.0.5:22", "SHA256:second", false).unwrap();
        assert_eq!(
            one.remembered("10.0.0.6:22").as_deref(),
            Some("SHA256:other")
        );
    }
}
