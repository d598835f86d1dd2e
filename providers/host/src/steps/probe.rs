//! Refresh and status of what runs on a host: one round trip per host gathers everything
//! about every deployment on it ([`probe_host`]); each hosted resource is then read from it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anycloud_provider::{Attrs, Kind, ProviderError, Result, Target};
use serde_json::json;

use super::HostedPrivate;
use crate::layout::VmLayout;
use crate::scripts;
use crate::transport::Host;

/// What one probe of a deployment found.
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
    pub present_dirs: BTreeSet<String>,
}

/// The deployments to probe on one host (layout and container name), once each, from the
/// hosted resources among `targets`.
pub fn deployments_of(targets: &[&Target<'_>]) -> Vec<(VmLayout, String)> {
    let mut by_mnt: BTreeMap<String, (VmLayout, String)> = BTreeMap::new();
    for t in targets.iter().filter(|t| t.kind.is_hosted()) {
        let Ok(private) = HostedPrivate::of(t) else {
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
            .entry(private.layout.mnt.clone())
            .or_insert((private.layout, container));
    }
    by_mnt.into_values().collect()
}

/// One round trip per host for everything a refresh needs: `hosts[i]` is the connection
/// target `i` is reached through (`None`: not probed), `dir_of` the directory whose existence
/// a target stands for. Hosts are probed all at once.
pub async fn probe_each_host(
    targets: &[Target<'_>],
    hosts: Vec<Option<Arc<dyn Host>>>,
    dir_of: impl Fn(&Target<'_>) -> Option<String>,
) -> Result<Vec<Option<HostProbe>>> {
    // The same connection is the same host: group by the pointer.
    let mut groups: BTreeMap<usize, (Arc<dyn Host>, Vec<usize>)> = BTreeMap::new();
    for (i, host) in hosts.into_iter().enumerate() {
        if let Some(host) = host {
            let key = Arc::as_ptr(&host) as *const () as usize;
            groups
                .entry(key)
                .or_insert_with(|| (host, vec![]))
                .1
                .push(i);
        }
    }
    let probes = futures::future::join_all(groups.values().map(|(host, members)| {
        let members: Vec<&Target> = members.iter().map(|i| &targets[*i]).collect();
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

fn probe_of<'a>(t: &Target<'_>, probe: &'a HostProbe) -> Option<&'a Probe> {
    let private = HostedPrivate::of(t).ok()?;
    probe.deployments.get(&private.layout.mnt)
}

/// A hosted resource's current attributes from its host's probe; `None` where it is gone.
pub fn read_hosted(t: &Target<'_>, probe: &HostProbe) -> Option<Attrs> {
    read(t.kind, t.attrs, probe_of(t, probe)?)
}

/// What `status` shows of a hosted resource, from its host's probe.
pub fn observe_hosted(t: &Target<'_>, probe: &HostProbe) -> BTreeMap<String, String> {
    match probe_of(t, probe) {
        Some(p) if t.kind.is_hosted() => observe(t.kind, t.attrs, p),
        _ => BTreeMap::new(),
    }
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
            let success = probe.get(&format!("success.{program}"));
            if !success.is_empty() {
                facts.insert(
                    "last successful upload".into(),
                    match success {
                        "never" => "never".to_owned(),
                        age => format!("{age}s ago"),
                    },
                );
            }
            // A run that failed since says so; a good one is the success above.
            if let Some((age, "errors")) = probe.get(&format!("upload.{program}")).split_once(':') {
                facts.insert("last upload run".into(), format!("{age}s ago (errors)"));
            }
        }
        _ => {}
    }
    facts
}
