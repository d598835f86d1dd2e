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
use anycloud_host::{
    steps, ContextCache, Host, HostContext, HostProbe, SshHost, SshPool, SshTarget,
};
use anycloud_provider::{attr_str, Attrs, Kind, Planned, Provider, ProviderError, Result, Target};
use serde_json::json;

use crate::dirs;

/// How long to wait for a machine's SSH to answer (a rebooting machine, a restarted sshd).
/// A machine of the user's own is expected to be up: a wrong address should not hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

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

    fn context(&self, inputs: &Attrs) -> Result<Arc<HostContext>> {
        self.contexts.get(inputs, || {
            let root = attr_str(inputs, "root")?;
            // The root exists once the VM does; the buckets dir may not yet (buckets are
            // made after the VM, which pins the host key first).
            dirs::host_context(inputs, root, format!("local:{root}"))
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

    fn remember(&self, host_port: &str, fingerprint: &str) -> Result<()> {
        let _guard = self
            .known_hosts_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let path = self.known_hosts();
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let mut lines: Vec<String> = old
            .lines()
            .filter(|l| l.split_once(' ').map(|(h, _)| h) != Some(host_port))
            .map(String::from)
            .collect();
        lines.push(format!("{host_port} {fingerprint}"));
        lines.sort();
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            std::fs::create_dir_all(&self.keys_dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&self.keys_dir)?;
            tmp.write_all(format!("{}\n", lines.join("\n")).as_bytes())?;
            tmp.as_file().sync_all()?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        };
        write().map_err(|e| {
            ProviderError::permanent(format!("recording the host key in {}: {e}", path.display()))
        })
    }

    /// Connects to a VM's machine and records what a VM's attributes hold about the keys.
    async fn connect_vm(&self, vm: &Attrs) -> Result<(Arc<SshHost>, Attrs)> {
        let ssh = self.connection(vm)?;
        let host_key = ssh.connect().await.map_err(ProviderError::from)?;
        self.remember(&host_port(vm), &host_key)?;
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
                let pin = t.dep(Kind::Vm).and_then(|vm| vm.get("host_key"));
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

    /// One round trip per machine, all machines at once.
    /// One round trip per machine and key, all machines at once.
    async fn probe(&self, targets: &[Target<'_>]) -> Result<Vec<Option<HostProbe>>> {
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
        steps::probe_each_host(targets, hosts, dirs::dir_of).await
    }
}

#[async_trait::async_trait]
impl Provider for SshProvider {
    fn name(&self) -> &'static str {
        "ssh"
    }

    fn plan(&self, kind: Kind, inputs: &Attrs) -> Result<Planned> {
        let mut attrs = Attrs::new();
        match kind {
            Kind::Storage => {
                attrs.insert(
                    "buckets".into(),
                    json!("directories under vm.root/buckets on each deployment's machine"),
                );
                Ok(Planned {
                    attrs,
                    computed: vec![],
                    force_new: vec![],
                })
            }
            Kind::Bucket => {
                let root = attr_str(inputs, "root")?;
                dirs::check_root(root)?;
                dirs::bucket_attrs(root, inputs, &mut attrs)?;
                connection_attrs(inputs, &mut attrs)?;
                Ok(Planned {
                    attrs,
                    computed: vec![],
                    force_new: ["name", "path", "host", "port"].map(String::from).to_vec(),
                })
            }
            Kind::Vm => {
                let ctx = self.context(inputs)?;
                let root = attr_str(inputs, "root")?;
                dirs::vm_attrs(&ctx, root, &mut attrs);
                attrs.insert("root".into(), json!(root));
                connection_attrs(inputs, &mut attrs)?;
                let mut computed = vec!["key_fingerprint".to_owned(), "public_key".to_owned()];
                // A configured host key is the pin; otherwise the first key seen becomes it.
                match inputs.get("ssh_host_key") {
                    Some(k) => {
                        attrs.insert("host_key".into(), k.clone());
                    }
                    None => computed.push("host_key".into()),
                }
                Ok(Planned {
                    attrs,
                    computed,
                    force_new: vec!["host".into(), "port".into(), "host_dir".into()],
                })
            }
            Kind::Role => Err(ProviderError::permanent(
                "a machine of your own has no cloud role",
            )),
            hosted => steps::plan(hosted, inputs, &*self.context(inputs)?),
        }
    }

    async fn read(&self, targets: &[Target<'_>]) -> Result<Vec<Option<Attrs>>> {
        let probes = self.probe(targets).await?;
        Ok(targets
            .iter()
            .zip(probes)
            .map(|(t, probe)| match (t.kind, probe) {
                (Kind::Storage, _) => Some(t.attrs.clone()),
                (_, Some(p)) => dirs::read_from(t, &p),
                (_, None) => None,
            })
            .collect())
    }

    async fn create(&self, target: Target<'_>) -> Result<Attrs> {
        match target.kind {
            Kind::Storage => Ok(target.attrs.clone()),
            Kind::Vm => {
                let (ssh, out) = self.connect_vm(target.attrs).await?;
                // A new "VM" starts clean: a container or supervisord left by an earlier one
                // whose directory was wiped would keep running against deleted paths.
                dirs::cleanup_host(&*ssh, target.attrs).await?;
                dirs::make_dir(&*ssh, attr_str(target.attrs, "host_dir")?).await?;
                Ok(out)
            }
            Kind::Bucket => {
                let ssh = self.host_for(&target)?;
                dirs::make_dir(&*ssh, attr_str(target.attrs, "path")?).await?;
                Ok(target.attrs.clone())
            }
            Kind::Role => Err(ProviderError::permanent(
                "a machine of your own has no cloud role",
            )),
            hosted => steps::apply(&*self.host_for(&target)?, hosted, target.attrs).await,
        }
    }

    async fn update(&self, _prior: &Attrs, target: Target<'_>) -> Result<Attrs> {
        match target.kind {
            // The machine lives on: a new user, key or pin only changes how we reach it.
            Kind::Vm => {
                let (ssh, out) = self.connect_vm(target.attrs).await?;
                dirs::make_dir(&*ssh, attr_str(target.attrs, "host_dir")?).await?;
                Ok(out)
            }
            _ => self.create(target).await,
        }
    }

    async fn delete(&self, target: Target<'_>) -> Result<()> {
        match target.kind {
            // Buckets hold the user's data: destroy forgets them and leaves the directories.
            Kind::Storage | Kind::Bucket | Kind::Role => Ok(()),
            Kind::Vm => dirs::delete_vm(&*self.connection(target.attrs)?, target.attrs).await,
            hosted => steps::delete(&*self.host_for(&target)?, hosted, target.attrs).await,
        }
    }

    fn remote_calls(&self) -> u64 {
        self.connections.round_trips()
    }

    async fn observe(&self, targets: &[Target<'_>]) -> Result<Vec<BTreeMap<String, String>>> {
        let probes = self.probe(targets).await?;
        Ok(targets
            .iter()
            .zip(probes)
            .map(|(t, probe)| match probe {
                Some(p) => steps::observe_hosted(t, &p),
                None => BTreeMap::new(),
            })
            .collect())
    }
}

/// Where the machine is and which key opens it, as a VM's and a bucket's attributes.
fn connection_attrs(inputs: &Attrs, attrs: &mut Attrs) -> Result<()> {
    attrs.insert("deployment".into(), json!(attr_str(inputs, "deployment")?));
    attrs.insert("host".into(), json!(attr_str(inputs, "ssh_host")?));
    attrs.insert(
        "port".into(),
        inputs.get("ssh_port").cloned().unwrap_or(json!(22)),
    );
    attrs.insert("user".into(), json!(attr_str(inputs, "ssh_user")?));
    if let Some(i) = inputs.get("ssh_identity_file") {
        attrs.insert("identity_file".into(), i.clone());
    }
    Ok(())
}

fn host_port(vm: &Attrs) -> String {
    format!(
        "{}:{}",
        vm.get("host").and_then(|v| v.as_str()).unwrap_or_default(),
        vm.get("port").and_then(|v| v.as_u64()).unwrap_or(22)
    )
}
