//! The VM steps of DESIGN §4 — vm_init, rclone, the two one-shot downloads, the two upload
//! programs and the container — as provider verbs on any [`Host`]. A cloud provider supplies
//! the layout and its rclone remotes; everything else is the same on every cloud.

use std::collections::BTreeMap;

use anycloud_provider::{attr_str, Attrs, Kind, Planned, ProviderError, Result};
use serde_json::{json, Value};

use crate::layout::VmLayout;
use crate::render::{self, ContainerSpec};
use crate::scripts;
use crate::transport::{Host, Output};

/// What the cloud provider knows about a deployment's host and storage.
#[derive(Clone, Debug)]
pub struct HostContext {
    pub deployment: String,
    pub layout: VmLayout,
    /// The complete `rclone.conf` (cloud-native auth only: never a key).
    pub rclone_conf: String,
    /// What the connectivity check lists.
    pub check_target: String,
    /// rclone paths of the deployment's buckets, by role (`input`, `output`, `checkpoint`).
    pub remotes: BTreeMap<String, String>,
}

/// The host context of the deployment planned last: a deployment's hosted nodes are
/// planned one after another with the same inputs, so one is built per deployment.
#[derive(Default)]
pub struct ContextCache {
    last: std::sync::Mutex<Option<(Attrs, std::sync::Arc<HostContext>)>>,
}

impl ContextCache {
    pub fn get(
        &self,
        inputs: &Attrs,
        build: impl FnOnce() -> Result<HostContext>,
    ) -> Result<std::sync::Arc<HostContext>> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((key, ctx)) = last.as_ref() {
            if key == inputs {
                return Ok(ctx.clone());
            }
        }
        let ctx = std::sync::Arc::new(build()?);
        *last = Some((inputs.clone(), ctx.clone()));
        Ok(ctx)
    }
}

impl HostContext {
    /// The directories whose contents must reach their buckets before the host goes.
    pub fn flush_pairs(&self) -> Vec<(String, String)> {
        ["output", "checkpoint"]
            .iter()
            .filter_map(|role| {
                self.remotes
                    .get(*role)
                    .map(|r| (self.layout.mount(role), r.clone()))
            })
            .collect()
    }

    pub fn container_name(&self) -> String {
        format!(
            "anycloud-{}-{}",
            self.deployment,
            crate::short_hash(&self.layout.mnt)
        )
    }
}

fn layout_json(layout: &VmLayout) -> Value {
    serde_json::to_value(layout).expect("a layout is plain strings")
}

pub fn layout_of(attrs: &Attrs) -> Result<VmLayout> {
    let v = attrs.get("_layout").cloned().unwrap_or(Value::Null);
    serde_json::from_value(v).map_err(|e| ProviderError::permanent(format!("bad layout: {e}")))
}

fn pairs_json(pairs: &[(String, String)]) -> Value {
    Value::Array(pairs.iter().map(|(d, r)| json!([d, r])).collect())
}

/// The `(directory, remote)` pairs a resource flushes before it goes.
pub fn pairs_of(attrs: &Attrs) -> Vec<(String, String)> {
    attrs
        .get("_flush")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    Some((
                        p.get(0)?.as_str()?.to_owned(),
                        p.get(1)?.as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The attributes every VM carries for what runs on it: where things are, the container's
/// name, and what to upload before it goes.
pub fn vm_attrs(ctx: &HostContext, attrs: &mut Attrs) {
    attrs.insert("_layout".into(), layout_json(&ctx.layout));
    attrs.insert("container_name".into(), json!(ctx.container_name()));
    attrs.insert("_flush".into(), pairs_json(&ctx.flush_pairs()));
}

/// The deployments to probe on one host (layout and container name), once each, from the
/// hosted resources among `targets`.
pub fn deployments_of(targets: &[&anycloud_provider::Target<'_>]) -> Vec<(VmLayout, String)> {
    let mut by_mnt: BTreeMap<String, (VmLayout, String)> = BTreeMap::new();
    for t in targets.iter().filter(|t| t.kind.is_hosted()) {
        let Ok(layout) = layout_of(t.attrs) else {
            continue;
        };
        let container = t
            .dep(Kind::Vm)
            .and_then(|vm| vm.get("container_name"))
            .or_else(|| t.attrs.get("name").filter(|_| t.kind == Kind::Container))
            .and_then(|v| v.as_str())
            .unwrap_or("anycloud-none")
            .to_owned();
        by_mnt
            .entry(layout.mnt.clone())
            .or_insert((layout, container));
    }
    by_mnt.into_values().collect()
}

/// One round trip per host for everything a refresh needs: `hosts[i]` is the connection
/// target `i` is reached through (`None`: not probed), `dir_of` the directory whose existence
/// a target stands for. Hosts are probed all at once.
pub async fn probe_each_host(
    targets: &[anycloud_provider::Target<'_>],
    hosts: Vec<Option<std::sync::Arc<dyn Host>>>,
    dir_of: impl Fn(&anycloud_provider::Target<'_>) -> Option<String>,
) -> Result<Vec<Option<HostProbe>>> {
    // The same connection is the same host: group by the pointer.
    let mut groups: BTreeMap<usize, (std::sync::Arc<dyn Host>, Vec<usize>)> = BTreeMap::new();
    for (i, host) in hosts.into_iter().enumerate() {
        if let Some(host) = host {
            let key = std::sync::Arc::as_ptr(&host) as *const () as usize;
            groups
                .entry(key)
                .or_insert_with(|| (host, vec![]))
                .1
                .push(i);
        }
    }
    let probes = futures::future::join_all(groups.values().map(|(host, members)| {
        let members: Vec<&anycloud_provider::Target> =
            members.iter().map(|i| &targets[*i]).collect();
        let dirs: Vec<String> = members.iter().filter_map(|t| dir_of(t)).collect();
        let deployments = deployments_of(&members);
        let host = host.clone();
        async move { probe_host(&*host, &deployments, &dirs).await }
    }))
    .await;
    let mut out = vec![None; targets.len()];
    for ((_, members), probe) in groups.values().zip(probes) {
        let probe = probe?;
        for i in members {
            out[*i] = Some(probe.clone());
        }
    }
    Ok(out)
}

fn probe_of<'a>(t: &anycloud_provider::Target<'_>, probe: &'a HostProbe) -> Option<&'a Probe> {
    let mnt = t.attrs.get("_layout")?.get("mnt")?.as_str()?;
    probe.deployments.get(mnt)
}

/// A hosted resource's current attributes from its host's probe; `None` where it is gone.
pub fn read_hosted(t: &anycloud_provider::Target<'_>, probe: &HostProbe) -> Option<Attrs> {
    read(t.kind, t.attrs, probe_of(t, probe)?)
}

/// What `status` shows of a hosted resource, from its host's probe.
pub fn observe_hosted(
    t: &anycloud_provider::Target<'_>,
    probe: &HostProbe,
) -> BTreeMap<String, String> {
    match probe_of(t, probe) {
        Some(p) if t.kind.is_hosted() => observe(t.kind, t.attrs, p),
        _ => BTreeMap::new(),
    }
}

fn input_u64(inputs: &Attrs, key: &str, default: u64) -> u64 {
    inputs.get(key).and_then(|v| v.as_u64()).unwrap_or(default)
}

pub fn sha256_hex(text: &str) -> String {
    sha256_bytes(text.as_bytes())
}

pub fn sha256_bytes(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The program name and the bucket role a service kind uploads.
fn service_of(kind: Kind) -> Option<(&'static str, &'static str)> {
    match kind {
        Kind::ServiceOutput => Some(("rclone-output", "output")),
        Kind::ServiceCheckpoint => Some(("rclone-checkpoint", "checkpoint")),
        _ => None,
    }
}

/// The desired attributes of a hosted node. `inputs` are the engine's, from the config.
pub fn plan(kind: Kind, inputs: &Attrs, ctx: &HostContext) -> Result<Planned> {
    let layout = &ctx.layout;
    let mut attrs = Attrs::new();
    attrs.insert("_layout".into(), layout_json(layout));
    let mut force_new: Vec<String> = Vec::new();
    let mut computed = Vec::new();
    let interval = input_u64(inputs, "sync_interval_secs", 60);
    match kind {
        Kind::VmInit => {
            let conf = render::supervisord_conf(layout, &format!("anycloud-{}", ctx.deployment));
            attrs.insert("supervisord_conf".into(), json!(conf));
        }
        Kind::Rclone => {
            attrs.insert("config".into(), json!(ctx.rclone_conf));
            attrs.insert("config_sha256".into(), json!(sha256_hex(&ctx.rclone_conf)));
            attrs.insert("check_target".into(), json!(ctx.check_target));
            attrs.insert(
                "check_retries".into(),
                json!(input_u64(inputs, "check_retries", 30)),
            );
            attrs.insert(
                "check_retries_sleep_secs".into(),
                json!(input_u64(inputs, "check_retries_sleep_secs", 15)),
            );
        }
        Kind::SyncInput | Kind::SyncCheckpointRestore => {
            let role = if kind == Kind::SyncInput {
                "input"
            } else {
                "checkpoint"
            };
            let remote = ctx.remotes.get(role).ok_or_else(|| {
                ProviderError::permanent(format!(
                    "no {role} bucket for deployment {}",
                    ctx.deployment
                ))
            })?;
            attrs.insert("source".into(), json!(remote));
            attrs.insert("destination".into(), json!(layout.mount(role)));
            force_new = vec!["source".into(), "destination".into()];
        }
        Kind::ServiceOutput | Kind::ServiceCheckpoint => {
            let (program, role) = service_of(kind).expect("a service kind");
            let remote = ctx.remotes.get(role).ok_or_else(|| {
                ProviderError::permanent(format!(
                    "no {role} bucket for deployment {}",
                    ctx.deployment
                ))
            })?;
            let text = if kind == Kind::ServiceOutput {
                render::output_program(layout, remote, interval)
            } else {
                render::checkpoint_program(layout, remote, interval)
            };
            attrs.insert("program_name".into(), json!(program));
            attrs.insert("program".into(), json!(text));
            attrs.insert("status".into(), json!("RUNNING"));
            attrs.insert(
                "_flush".into(),
                pairs_json(&[(layout.mount(role), remote.clone())]),
            );
        }
        Kind::Container => {
            let spec = container_spec(inputs, ctx)?;
            attrs.insert("name".into(), json!(spec.name));
            attrs.insert("image".into(), json!(spec.image));
            attrs.insert("command".into(), json!(spec.command));
            attrs.insert("env".into(), json!(spec.env));
            attrs.insert("run_spec".into(), json!(spec.render()));
            // What was downloaded into its read-only input and checkpoint: a new source
            // means new data under a running job, so the container is replaced with it.
            let sources: BTreeMap<&str, &String> = ["input", "checkpoint"]
                .iter()
                .filter_map(|r| Some((*r, ctx.remotes.get(*r)?)))
                .collect();
            attrs.insert("data_sources".into(), json!(sources));
            attrs.insert("_flush".into(), pairs_json(&ctx.flush_pairs()));
            computed.push("container_id".into());
            force_new = [
                "name",
                "image",
                "command",
                "env",
                "run_spec",
                "data_sources",
            ]
            .map(String::from)
            .to_vec();
        }
        other => {
            return Err(ProviderError::permanent(format!(
                "{other} is not a host resource"
            )));
        }
    }
    Ok(Planned {
        attrs,
        computed,
        force_new,
    })
}

fn container_spec(inputs: &Attrs, ctx: &HostContext) -> Result<ContainerSpec> {
    let image = attr_str(inputs, "image")?.to_owned();
    let command = inputs
        .get("command")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let env = inputs
        .get("env")
        .and_then(|v| v.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let mut mounts = Vec::new();
    for (role, ro) in [("input", true), ("output", false), ("checkpoint", false)] {
        if ctx.remotes.contains_key(role) {
            mounts.push((ctx.layout.mount(role), format!("/mnt/{role}"), ro));
        }
    }
    let opt = |k: &str| inputs.get(k).and_then(|v| v.as_str()).map(String::from);
    Ok(ContainerSpec {
        name: ctx.container_name(),
        deployment: ctx.deployment.clone(),
        image,
        command,
        env,
        mounts,
        gpus: opt("gpus"),
        shm_size: opt("shm_size"),
    })
}

async fn run(host: &dyn Host, script: &str, what: &str) -> Result<Output> {
    let out = host.run(script).await.map_err(ProviderError::from)?;
    if out.success() {
        Ok(out)
    } else {
        // The end says why; streamed progress before it would bury that.
        let lines: Vec<&str> = out.stderr.trim().lines().collect();
        let detail = lines[lines.len().saturating_sub(25)..].join("\n");
        Err(ProviderError::permanent(format!(
            "{what} failed (exit {}): {detail}",
            out.status
        )))
    }
}

async fn upload(host: &dyn Host, path: &str, text: &str, mode: u32) -> Result<()> {
    host.upload(path, text.as_bytes(), mode)
        .await
        .map_err(ProviderError::from)
}

/// Creates (or, for changed attributes, re-applies) a hosted node.
pub async fn apply(host: &dyn Host, kind: Kind, attrs: &Attrs) -> Result<Attrs> {
    let layout = layout_of(attrs)?;
    let mut out = attrs.clone();
    match kind {
        Kind::VmInit => {
            run(host, &scripts::vm_init(&layout), "VM init").await?;
            upload(
                host,
                &layout.supervisord_conf(),
                attr_str(attrs, "supervisord_conf")?,
                0o644,
            )
            .await?;
            run(
                host,
                &scripts::supervisord_restart(&layout),
                "starting supervisord",
            )
            .await?;
        }
        Kind::Rclone => {
            upload(
                host,
                &layout.rclone_config,
                attr_str(attrs, "config")?,
                0o600,
            )
            .await?;
            let retries = attrs
                .get("check_retries")
                .and_then(|v| v.as_u64())
                .unwrap_or(30);
            let sleep = attrs
                .get("check_retries_sleep_secs")
                .and_then(|v| v.as_u64())
                .unwrap_or(15);
            let target = attr_str(attrs, "check_target")?;
            run(
                host,
                &scripts::rclone_check(&layout, target, retries, sleep),
                "rclone",
            )
            .await?;
        }
        Kind::SyncInput | Kind::SyncCheckpointRestore => {
            let (verb, log) = if kind == Kind::SyncInput {
                ("sync", "rclone-input.log")
            } else {
                ("copy", "rclone-checkpoint-restore.log")
            };
            let script = scripts::download(
                &layout,
                verb,
                attr_str(attrs, "source")?,
                attr_str(attrs, "destination")?,
                log,
            );
            run(host, &script, &format!("rclone {verb}")).await?;
        }
        Kind::ServiceOutput | Kind::ServiceCheckpoint => {
            let program = attr_str(attrs, "program_name")?;
            upload(
                host,
                &layout.program_path(program),
                attr_str(attrs, "program")?,
                0o644,
            )
            .await?;
            run(host, &scripts::program_apply(&layout, program), program).await?;
        }
        Kind::Container => {
            let run_spec = attr_str(attrs, "run_spec")?;
            let digest = &sha256_hex(run_spec)[..16];
            let name = attr_str(attrs, "name")?;
            // The spec digest label is how a re-run recognises its own container.
            let args = run_spec.trim_start_matches("docker ").replacen(
                "--detach",
                &format!("--detach --label anycloud.spec={digest}"),
                1,
            );
            let mounts: Vec<String> = ["input", "output", "checkpoint"]
                .iter()
                .map(|r| layout.mount(r))
                .collect();
            let out_run = run(
                host,
                &scripts::container_run(&layout, name, digest, &mounts, args.trim_end()),
                "docker run",
            )
            .await?;
            let id = out_run
                .stdout
                .trim()
                .lines()
                .last()
                .unwrap_or_default()
                .to_owned();
            out.insert("container_id".into(), json!(id));
        }
        other => {
            return Err(ProviderError::permanent(format!(
                "{other} is not a host resource"
            )))
        }
    }
    Ok(out)
}

/// Deletes a hosted node; the container and the upload programs flush first.
pub async fn delete(host: &dyn Host, kind: Kind, attrs: &Attrs) -> Result<()> {
    let layout = layout_of(attrs)?;
    match kind {
        Kind::VmInit => {
            run(
                host,
                &scripts::supervisord_stop(&layout),
                "stopping supervisord",
            )
            .await?;
        }
        // The config stays until the VM goes: the final flush of the VM still needs it.
        Kind::Rclone | Kind::SyncInput | Kind::SyncCheckpointRestore => {}
        Kind::ServiceOutput | Kind::ServiceCheckpoint => {
            let program = attr_str(attrs, "program_name")?;
            run(host, &scripts::program_remove(&layout, program), program).await?;
            flush(host, &layout, &pairs_of(attrs)).await?;
        }
        Kind::Container => {
            let name = attr_str(attrs, "name")?;
            run(host, &scripts::container_stop(name), "docker stop").await?;
            flush(host, &layout, &pairs_of(attrs)).await?;
            run(host, &scripts::container_remove(name), "docker rm").await?;
        }
        other => {
            return Err(ProviderError::permanent(format!(
                "{other} is not a host resource"
            )))
        }
    }
    Ok(())
}

/// The verified last upload of the given directories.
pub async fn flush(host: &dyn Host, layout: &VmLayout, pairs: &[(String, String)]) -> Result<()> {
    if pairs.is_empty() {
        return Ok(());
    }
    run(host, &scripts::final_flush(layout, pairs), "final upload")
        .await
        .map(|_| ())
}

/// What one probe of a host found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    pub facts: BTreeMap<String, String>,
}

impl Probe {
    pub fn get(&self, key: &str) -> &str {
        self.facts.get(key).map(String::as_str).unwrap_or("")
    }

    pub fn host_present(&self) -> bool {
        self.get("host_dir") == "present"
    }
}

/// What one round trip to a host found: its deployments' probes (by layout `mnt`) and which
/// of the asked directories exist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostProbe {
    pub deployments: BTreeMap<String, Probe>,
    pub present_dirs: std::collections::BTreeSet<String>,
}

/// Gathers everything a refresh needs about one host — every deployment on it and the
/// existence of `dirs` — in a single round trip.
pub async fn probe_host(
    host: &dyn Host,
    deployments: &[(VmLayout, String)],
    dirs: &[String],
) -> Result<HostProbe> {
    let out = host
        .run(&scripts::host_probe(deployments, dirs))
        .await
        .map_err(ProviderError::from)?;
    let mut found = HostProbe::default();
    let mut section: Option<String> = None;
    for line in out.stdout.lines() {
        if let Some(mnt) = line.strip_prefix("@@ ") {
            section = Some(mnt.to_owned());
            found.deployments.entry(mnt.to_owned()).or_default();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match (&section, key.strip_prefix("dir.")) {
            (None, Some(dir)) => {
                if value == "present" {
                    found.present_dirs.insert(dir.to_owned());
                }
            }
            (Some(mnt), _) => {
                if let Some(p) = found.deployments.get_mut(mnt) {
                    p.facts.insert(key.to_owned(), value.to_owned());
                }
            }
            (None, None) => {}
        }
    }
    Ok(found)
}

/// The current attributes of a hosted node as the probe saw them; `None` where it is gone.
pub fn read(kind: Kind, prior: &Attrs, probe: &Probe) -> Option<Attrs> {
    if !probe.host_present() {
        return None;
    }
    let mut now = prior.clone();
    match kind {
        Kind::VmInit => (probe.get("supervisord") == "up").then_some(now),
        Kind::Rclone => match probe.get("rclone_config") {
            "" | "missing" => None,
            digest => {
                now.insert("config_sha256".into(), json!(digest));
                Some(now)
            }
        },
        Kind::SyncInput | Kind::SyncCheckpointRestore => Some(now),
        Kind::ServiceOutput | Kind::ServiceCheckpoint => {
            let program = prior
                .get("program_name")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            match probe.get(&format!("program.{program}")) {
                "" => None,
                "RUNNING" | "STARTING" | "BACKOFF" => Some(now),
                other => {
                    now.insert("status".into(), json!(other));
                    Some(now)
                }
            }
        }
        Kind::Container => {
            let fact = probe.get("container");
            let mut parts = fact.splitn(4, ':');
            let (status, code, id) = (parts.next()?, parts.next()?, parts.next()?);
            let alive = status == "running" || (status == "exited" && code == "0");
            if !alive {
                return None;
            }
            now.insert("container_id".into(), json!(id));
            Some(now)
        }
        _ => Some(now),
    }
}

/// What `anycloud status` shows of a hosted node, from the same probe as a refresh.
pub fn observe(kind: Kind, prior: &Attrs, probe: &Probe) -> BTreeMap<String, String> {
    let mut facts = BTreeMap::new();
    if !probe.host_present() {
        facts.insert("host".into(), "missing".into());
        return facts;
    }
    match kind {
        Kind::Container => {
            let fact = probe.get("container");
            let mut parts = fact.splitn(3, ':');
            let shown = match (parts.next(), parts.next()) {
                (Some("running"), _) => "running".to_owned(),
                (Some("exited"), Some(code)) => format!("exited with code {code}"),
                (Some(""), _) | (None, _) => "missing".to_owned(),
                (Some(other), _) => other.to_owned(),
            };
            facts.insert("container".into(), shown);
        }
        Kind::ServiceOutput | Kind::ServiceCheckpoint => {
            let program = prior
                .get("program_name")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let status = probe.get(&format!("program.{program}"));
            facts.insert(
                "program".into(),
                if status.is_empty() {
                    "missing".into()
                } else {
                    status.into()
                },
            );
            if let Some((age, result)) = probe.get(&format!("upload.{program}")).split_once(':') {
                facts.insert("last upload run".into(), format!("{age}s ago ({result})"));
            }
        }
        _ => {}
    }
    facts
}
