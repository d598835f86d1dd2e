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

/// How many hosts are probed at once: a refresh of 1,000 VMs takes about 1,000 / this round
/// trips' time, and never opens a thousand connections (or file descriptors) at once.
pub const PROBES_AT_ONCE: usize = 64;

/// A target's host probe: `None` where it has no host to probe, the error where its host
/// could not be probed (that target's read fails; others on other hosts do not).
pub type Probed = Option<Result<HostProbe>>;

/// A hosted target's read from its host's probe.
pub fn read_probed(t: &Target<'_>, probed: &Probed) -> anycloud_provider::Read {
    match probed {
        None => Ok(None),
        Some(Ok(p)) => Ok(read_hosted(t, p)),
        Some(Err(e)) => Err(e.clone()),
    }
}

/// What `status` shows of a hosted target from its host's probe, or why there is nothing.
pub fn observe_probed(t: &Target<'_>, probed: &Probed) -> BTreeMap<String, String> {
    match probed {
        None => BTreeMap::new(),
        Some(Ok(p)) => observe_hosted(t, p),
        Some(Err(e)) => BTreeMap::from([("unreachable".to_owned(), e.message.clone())]),
    }
}

/// One round trip per host for everything a refresh needs: `hosts[i]` is the connection
/// target `i` is reached through (`None`: not probed), `dir_of` the directory whose existence
/// a target stands for. Hosts are probed all at once.
pub async fn probe_each_host(
    targets: &[Target<'_>],
    hosts: Vec<Option<Arc<dyn Host>>>,
    dir_of: impl Fn(&Target<'_>) -> Option<String>,
) -> Vec<Probed> {
    use futures::StreamExt;
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
    // Made up front (not lazily inside the stream): the providers' futures must be `Send`
    // for any lifetime, which a closure held across the awaits below would not let them be.
    let mut asks = Vec::with_capacity(groups.len());
    for (key, (host, members)) in &groups {
        let members: Vec<&Target> = members.iter().map(|i| &targets[*i]).collect();
        let dirs: Vec<String> = members.iter().filter_map(|t| dir_of(t)).collect();
        let deployments = deployments_of(&members);
        let (key, host) = (*key, host.clone());
        asks.push(async move { (key, probe_host(&*host, &deployments, &dirs).await) });
    }
    let probes: Vec<(usize, Result<HostProbe>)> = futures::stream::iter(asks)
        .buffer_unordered(PROBES_AT_ONCE)
        .collect()
        .await;
    let mut out = vec![None; targets.len()];
    for (key, probe) in probes {
        for i in &groups[&key].1 {
            out[*i] = Some(probe.clone());
        }
    }
    out
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
        Kind::SyncInput => {
            // What the machine downloaded last, and how the bucket differs from it now.
            let digest = probe.get("input.listing_sha256");
            if !digest.is_empty() {
                now.insert(
                    "downloaded".into(),
                    super::sync::downloaded(digest, probe.get("input.changed")),
                );
            }
            Some(now)
        }
        Kind::SyncCheckpointRestore => Some(now),
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
            let job = Job::of(probe)?;
            // A job killed from outside (a reboot, a lost machine) is resumed by apply; one
            // that ended by itself stays as it ended.
            if job.state == JobState::Interrupted {
                return None;
            }
            now.insert("container_id".into(), json!(job.id));
            let mut recorded = job.to_json();
            // What the idle watcher did once the job had ended: the plan says it.
            if let (Some(stopped), Some(j)) = (
                crate::idle::Stopped::of(probe).filter(|_| job.state != JobState::Running),
                recorded.as_object_mut(),
            ) {
                j.insert("idle_stop".into(), stopped.to_json());
            }
            now.insert("job".into(), recorded);
            let (ran, named) = (
                probe.get("container.image_id"),
                probe.get("container.tag_id"),
            );
            if !ran.is_empty() {
                now.insert("image_id".into(), json!(ran));
            }
            // A tag rebuilt since the job started names another image now: the image it ran
            // differs from the one asked for, which plans its replacement (a job that ended
            // too: -replace is not needed to run the new build).
            if !ran.is_empty() && !named.is_empty() && ran != named {
                let tag = prior.get("image").and_then(|v| v.as_str()).unwrap_or("");
                now.insert(
                    "image".into(),
                    json!(format!(
                        "{tag} (ran {}; the tag now names {})",
                        short_image_id(ran),
                        short_image_id(named)
                    )),
                );
            }
            Some(now)
        }
        _ => Some(now),
    }
}

/// How a job stands, from its container as the probe saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Running,
    /// Exited 0.
    Succeeded,
    /// Exited by itself with another code.
    Failed,
    /// Docker could not start it (a command that is not in the image, say).
    NeverStarted,
    /// Killed by a signal from outside (exit code 128 and up: a reboot, `docker kill`).
    Interrupted,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::NeverStarted => "never-started",
            JobState::Interrupted => "interrupted",
        }
    }
}

/// A job's container as the probe saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub state: JobState,
    pub exit_code: i64,
    pub id: String,
    /// When it started (running) or ended (otherwise), as Docker records it (RFC 3339).
    pub at: String,
    /// Docker's reason it could not start.
    pub error: String,
    /// The end of its output, for a job that did not succeed.
    pub last_lines: Vec<String>,
}

impl Job {
    /// `None` where there is no container.
    pub fn of(probe: &Probe) -> Option<Job> {
        let fact = probe.get("container");
        let mut parts = fact.splitn(4, ':');
        let (status, code, id) = (parts.next()?, parts.next()?, parts.next()?);
        if status.is_empty() || status == "missing" {
            return None;
        }
        let exit_code: i64 = code.parse().unwrap_or(-1);
        let error = probe.get("container.error").trim().to_owned();
        let state = match status {
            "running" | "restarting" | "paused" => JobState::Running,
            _ if !error.is_empty() || status == "created" => JobState::NeverStarted,
            "exited" if exit_code == 0 => JobState::Succeeded,
            "exited" if (1..128).contains(&exit_code) => JobState::Failed,
            _ => JobState::Interrupted,
        };
        let at = if state == JobState::Running {
            probe.get("container.started")
        } else {
            probe.get("container.finished")
        };
        let last_lines = (1..=scripts::JOB_TAIL_LINES)
            .filter_map(|i| probe.facts.get(&format!("container.log.{i}")).cloned())
            .collect();
        Some(Job {
            state,
            exit_code,
            id: id.to_owned(),
            at: to_the_second(at),
            error,
            last_lines,
        })
    }

    /// The container's `job` attribute: plain data the plan and `status` speak from.
    pub fn to_json(&self) -> serde_json::Value {
        let mut j = serde_json::Map::new();
        j.insert("state".into(), json!(self.state.as_str()));
        if self.state != JobState::Running {
            j.insert("exit_code".into(), json!(self.exit_code));
        }
        if !self.at.is_empty() {
            let key = if self.state == JobState::Running {
                "started_at"
            } else {
                "finished_at"
            };
            j.insert(key.into(), json!(self.at));
        }
        if !self.error.is_empty() {
            j.insert("error".into(), json!(self.error));
        }
        if !self.last_lines.is_empty() {
            j.insert("last_lines".into(), json!(self.last_lines));
        }
        serde_json::Value::Object(j)
    }

    /// One line for `status`.
    pub fn describe(&self) -> String {
        let at = |word: &str| {
            if self.at.is_empty() {
                String::new()
            } else {
                format!(" {word} {}", self.at)
            }
        };
        match self.state {
            JobState::Running => format!("running{}", at("since")),
            JobState::Succeeded => format!("succeeded{}", at("at")),
            // "exited", as Docker says it and alike for an exit at once or after hours.
            JobState::Failed => format!("exited (code {}){}", self.exit_code, at("at")),
            JobState::NeverStarted => format!("never started: {}", self.error),
            JobState::Interrupted => format!(
                "interrupted (exit code {}){}; apply starts it again",
                self.exit_code,
                at("at")
            ),
        }
    }
}

/// `sha256:` and the first 12 hex digits, as `docker images` shows an image id.
fn short_image_id(id: &str) -> String {
    match id.split_once(':') {
        Some((algo, hex)) => format!("{algo}:{}", &hex[..hex.len().min(12)]),
        None => id[..id.len().min(19)].to_owned(),
    }
}

/// Docker's RFC 3339 time to the second (`2026-12-04T15:25:10Z`); empty for its zero time.
fn to_the_second(at: &str) -> String {
    if at.is_empty() || at.starts_with("0001-") {
        return String::new();
    }
    match at.split_once('.') {
        Some((whole, _)) => format!("{whole}Z"),
        None => at.to_owned(),
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
            let Some(job) = Job::of(probe) else {
                facts.insert("container".into(), "missing".into());
                return facts;
            };
            facts.insert("job".into(), job.describe());
            if let Some(stopped) = crate::idle::Stopped::of(probe) {
                facts.insert("idle stop".into(), stopped.describe());
            }
            if !job.last_lines.is_empty() {
                facts.insert("last output".into(), job.last_lines.join(" ⏎ "));
            }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;

    fn probe_of(lines: &[&str]) -> Probe {
        Probe {
            facts: lines
                .iter()
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap();
                    (k.to_owned(), v.to_owned())
                })
                .collect(),
        }
    }

    /// A job that ended by itself is there, as it ended, with the end of its output; one
    /// killed from outside is for apply to start again; one Docker could not start says why.
    #[test]
    fn a_job_reads_as_it_stands() {
        let prior = Attrs::new();
        let failed = probe_of(&[
            "host_dir=present",
            "container=exited:3:abc:d1",
            "container.finished=2026-12-04T15:25:10.123456789Z",
            "container.error=",
            "container.log.1=loading data",
            "container.log.2=Traceback: KeyError 'lr'",
        ]);
        let read_back = read(Kind::Container, &prior, &failed).expect("a failed job is there");
        assert_eq!(
            read_back["job"],
            json!({"state": "failed", "exit_code": 3, "finished_at": "2026-12-04T15:25:10Z",
                   "last_lines": ["loading data", "Traceback: KeyError 'lr'"]})
        );
        assert_eq!(read_back["container_id"], json!("abc"));
        assert_eq!(
            Job::of(&failed).unwrap().describe(),
            "exited (code 3) at 2026-12-04T15:25:10Z"
        );

        let done = probe_of(&["host_dir=present", "container=exited:0:abc:d1"]);
        assert_eq!(
            read(Kind::Container, &prior, &done).unwrap()["job"]["state"],
            "succeeded"
        );
        let running = probe_of(&[
            "host_dir=present",
            "container=running:0:abc:d1",
            "container.started=2026-12-04T15:00:00.5Z",
        ]);
        assert_eq!(
            read(Kind::Container, &prior, &running).unwrap()["job"],
            json!({"state": "running", "started_at": "2026-12-04T15:00:00Z"})
        );
        let killed = probe_of(&["host_dir=present", "container=exited:137:abc:d1"]);
        assert_eq!(read(Kind::Container, &prior, &killed), None);
        let unstartable = probe_of(&[
            "host_dir=present",
            "container=created:127:abc:d1",
            "container.error=exec: \"trian.py\": executable file not found in $PATH",
        ]);
        let job = Job::of(&unstartable).unwrap();
        assert_eq!(job.state, JobState::NeverStarted);
        assert!(
            job.describe().starts_with("never started: exec:"),
            "{job:?}"
        );
        let gone = probe_of(&["host_dir=present", "container=missing"]);
        assert_eq!(read(Kind::Container, &prior, &gone), None);
    }

    /// A tag rebuilt since the container was made names another image: the read says which
    /// image ran and which the tag names now, so the plan replaces it showing both.
    #[test]
    fn a_rebuilt_tag_reads_as_another_image() {
        let prior: Attrs = [("image".to_owned(), json!("trainer:latest"))].into();
        let ran = "sha256:1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b";
        let now = "sha256:9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0";
        let same = probe_of(&[
            "host_dir=present",
            "container=running:0:abc:d1",
            &format!("container.image_id={ran}"),
            &format!("container.tag_id={ran}"),
        ]);
        let read_back = read(Kind::Container, &prior, &same).unwrap();
        assert_eq!(read_back["image"], json!("trainer:latest"));
        assert_eq!(read_back["image_id"], json!(ran));
        let rebuilt = probe_of(&[
            "host_dir=present",
            "container=exited:0:abc:d1",
            &format!("container.image_id={ran}"),
            &format!("container.tag_id={now}"),
        ]);
        assert_eq!(
            read(Kind::Container, &prior, &rebuilt).unwrap()["image"],
            json!(
                "trainer:latest (ran sha256:1a2b3c4d5e6f; the tag now names sha256:9f8e7d6c5b4a)"
            )
        );
        // A tag removed from the machine is no new image.
        let untagged = probe_of(&[
            "host_dir=present",
            "container=running:0:abc:d1",
            &format!("container.image_id={ran}"),
            "container.tag_id=",
        ]);
        assert_eq!(
            read(Kind::Container, &prior, &untagged).unwrap()["image"],
            json!("trainer:latest")
        );
    }

    use crate::transport::{Output, TransportError};

    /// A host that takes a moment to answer, counting how many are asked at once; one of
    /// them never answers.
    struct Slow {
        dead: bool,
        now: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl Host for Slow {
        async fn run(&self, _script: &str) -> std::result::Result<Output, TransportError> {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            if self.dead {
                return Err(TransportError::GaveUp(
                    "admin@10.0.0.9:22: no answer within 20s (tried for 60s)".into(),
                ));
            }
            Ok(Output {
                status: 0,
                stdout: String::new(),
                stderr: String::new(),
            })
        }
        async fn upload(
            &self,
            _: &str,
            _: &[u8],
            _: u32,
        ) -> std::result::Result<(), TransportError> {
            Ok(())
        }
    }

    /// 1,000 machines are probed at most [`PROBES_AT_ONCE`] at a time, and the one that does
    /// not answer fails only its own targets.
    #[tokio::test]
    async fn a_thousand_hosts_are_probed_a_bounded_number_at_once_and_fail_alone() {
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let attrs = Attrs::new();
        let private = serde_json::Value::Null;
        let addresses: Vec<String> = (0..1000).map(|i| format!("deployment.d{i}.vm")).collect();
        let targets: Vec<Target> = addresses
            .iter()
            .map(|a| Target {
                address: a,
                kind: Kind::Vm,
                attrs: &attrs,
                private: &private,
                deps: &[],
                lineage: "l",
            })
            .collect();
        let hosts: Vec<Option<Arc<dyn Host>>> = (0..1000)
            .map(|i| {
                Some(Arc::new(Slow {
                    dead: i == 500,
                    now: now.clone(),
                    most: most.clone(),
                }) as Arc<dyn Host>)
            })
            .collect();
        let probes = probe_each_host(&targets, hosts, |_| None).await;
        assert_eq!(most.load(Ordering::SeqCst), PROBES_AT_ONCE);
        let failed: Vec<usize> = probes
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p, Some(Err(_))))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(failed, vec![500]);
        let Some(Err(e)) = &probes[500] else {
            unreachable!()
        };
        assert!(
            e.message.contains("admin@10.0.0.9:22") && e.message.contains("60s"),
            "{e}"
        );
        assert!(probes
            .iter()
            .enumerate()
            .all(|(i, p)| i == 500 || matches!(p, Some(Ok(_)))));
    }
}
