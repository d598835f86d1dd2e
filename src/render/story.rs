//! A plan's first lines: one per deployment that changes, in the user's terms — what
//! happens to its job and why, said in the config keys the user wrote (`env.STEPS 60 → 80`,
//! not `-/+ container` and a changed `run_spec`) — then how many deployments are untouched.
//!
//! Made from the plan alone (its changes, and the job state the refresh recorded in the
//! container's `job` attribute), so it is as byte-stable as the rest of the plan. The entry
//! point is [`story`]; what a changed attribute means to a user is decided in one table,
//! [`TERMS`], and an attribute it does not name is said by its own name, so a new one is
//! never silently left out.

use std::collections::{BTreeMap, BTreeSet};

use anycloud_provider::{Attrs, Kind};
use serde_json::Value;

use crate::plan::{Action, Change, EndedJob, Plan};

/// The story of a plan: a line per deployment with changes, by deployment name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Story {
    pub lines: Vec<Line>,
    /// Deployments in the plan of which nothing changes.
    pub untouched: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    pub deployment: String,
    /// The whole sentence, the deployment named in it.
    pub text: String,
}

impl Story {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.untouched == 0
    }

    /// The count of untouched deployments as a line, if there are any.
    pub fn untouched_line(&self) -> Option<String> {
        let other = if self.lines.is_empty() { "" } else { " other" };
        match self.untouched {
            0 => None,
            1 => Some(format!("1{other} deployment is not touched.")),
            n => Some(format!("{n}{other} deployments are not touched.")),
        }
    }
}

/// A line per VM that runs elsewhere than its deployment's first place, and why: shown with
/// the story, and also when nothing changes (a plan after a failover is empty, and should
/// say where the VM went).
pub fn placement_lines(plan: &Plan, safe: &dyn Fn(&str) -> String) -> Vec<String> {
    plan.placements
        .iter()
        .map(|m| {
            let d = deployment_of(&m.address).unwrap_or(&m.address);
            let p = &m.placement;
            format!(
                "{}: its VM runs in {} ({}), not its first place: no capacity at {}.",
                safe(d),
                safe(&p.zone),
                safe(&p.region),
                safe(p.reason.as_deref().unwrap_or(""))
            )
        })
        .collect()
}

/// What `plan` does to each deployment. `safe` makes text from the config or a machine (a
/// value, a time) safe for where it is shown: a terminal or a pull-request comment.
pub fn story(plan: &Plan, safe: &dyn Fn(&str) -> String) -> Story {
    let mut by: BTreeMap<&str, Vec<&Change>> = BTreeMap::new();
    for c in &plan.changes {
        if let Some(d) = deployment_of(&c.address) {
            by.entry(d).or_default().push(c);
        }
    }
    let mut story = Story::default();
    for (d, changes) in by {
        if changes.iter().all(|c| c.action == Action::NoOp) {
            story.untouched += 1;
        } else {
            let container = format!("deployment.{d}.container");
            story.lines.push(Line {
                deployment: d.to_owned(),
                text: Deployment {
                    name: d,
                    changes,
                    ended: plan.jobs.iter().find(|j| j.address == container),
                    refreshed: plan.refreshed,
                    from_scratch: plan.from_scratch.contains(&container),
                    safe,
                }
                .line(),
            });
        }
    }
    story.lines = group_sweeps(&plan.sweeps, std::mem::take(&mut story.lines));
    story
}

/// How many of a group's members a grouped line names before "and N more".
const NAMED_MEMBERS: usize = 5;

/// A sweep's members whose lines say the same, names aside, become one line: a sweep of
/// 1,000 jobs that all start again reads as one sentence, not 1,000.
fn group_sweeps(sweeps: &[crate::config::Sweep], lines: Vec<Line>) -> Vec<Line> {
    // (sweep, what it says) -> the members saying it, in the lines' order.
    let mut groups: BTreeMap<(usize, String, String, String), Vec<String>> = BTreeMap::new();
    let mut grouped: BTreeMap<&str, (usize, String, String, String)> = BTreeMap::new();
    for line in &lines {
        let Some(sweep) = sweeps
            .iter()
            .position(|s| s.members.iter().any(|m| m.id == line.deployment))
        else {
            continue;
        };
        let Some((head, rest)) = line.text.split_once(": ") else {
            continue;
        };
        let (noun, after) = if let Some(after) =
            head.strip_prefix(&format!("job {}", line.deployment))
        {
            ("jobs", after)
        } else if let Some(after) = head.strip_prefix(&format!("deployment {}", line.deployment)) {
            ("deployments", after)
        } else {
            continue;
        };
        let key = (sweep, noun.to_owned(), after.to_owned(), rest.to_owned());
        groups
            .entry(key.clone())
            .or_default()
            .push(line.deployment.clone());
        grouped.insert(&line.deployment, key);
    }
    let mut out = Vec::new();
    let mut said = std::collections::BTreeSet::new();
    for line in &lines {
        let Some(key) = grouped.get(line.deployment.as_str()) else {
            out.push(Line {
                deployment: line.deployment.clone(),
                text: line.text.clone(),
            });
            continue;
        };
        let members = &groups[key];
        if members.len() < 2 {
            out.push(Line {
                deployment: line.deployment.clone(),
                text: line.text.clone(),
            });
            continue;
        }
        if !said.insert(key.clone()) {
            continue;
        }
        let (sweep, noun, after, rest) = key;
        let sweep = &sweeps[*sweep];
        let mut names = members
            .iter()
            .take(NAMED_MEMBERS)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if members.len() > NAMED_MEMBERS {
            names.push_str(&format!(" and {} more", members.len() - NAMED_MEMBERS));
        }
        out.push(Line {
            deployment: sweep.name.clone(),
            text: format!(
                "sweep {}, {} of {} {noun} ({names}){after}: {rest}",
                sweep.name,
                members.len(),
                sweep.members.len()
            ),
        });
    }
    out
}

fn deployment_of(address: &str) -> Option<&str> {
    address.strip_prefix("deployment.")?.split('.').next()
}

/// How a changed attribute reads to a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Says {
    /// A config key, with the old and new values.
    Key(&'static str),
    /// An attribute the table does not name: by its own name, with its values.
    Own,
    /// A map of config keys under this prefix (`env.STEPS`), each changed key with its values.
    Map(&'static str),
    /// An upload program: its `sync_interval`, read from its loop's `sleep`.
    Interval,
    /// Text anycloud generates from other keys (a script, a program, a run line): named only
    /// when nothing the user wrote explains the change (a new anycloud version).
    Generated,
}

/// Changed attributes in the user's terms, by the kind of resource that has them. What is
/// not here is said by its attribute's name (or as generated, if it is multi-line text).
const TERMS: &[(Kind, &str, Says)] = &[
    (Kind::Container, "image", Says::Key("image")),
    (Kind::Container, "command", Says::Key("command")),
    (Kind::Container, "env", Says::Map("env")),
    // The remotes its input and checkpoint were downloaded from.
    (Kind::Container, "data_sources", Says::Map("buckets")),
    // From the deployment id and the state's lineage.
    (Kind::Container, "name", Says::Generated),
    (Kind::Container, "run_spec", Says::Generated),
    (Kind::ServiceOutput, "program", Says::Interval),
    (Kind::ServiceCheckpoint, "program", Says::Interval),
    (Kind::Rclone, "config_sha256", Says::Generated),
    (
        Kind::Rclone,
        "check_retries",
        Says::Key("connectivity_check.retries"),
    ),
    (
        Kind::Rclone,
        "check_retries_sleep_secs",
        Says::Key("connectivity_check.retries_sleep"),
    ),
    // Each cloud's name for `vm.type`: AWS, Azure, GCP.
    (Kind::Vm, "instance_type", Says::Key("vm.type")),
    (Kind::Vm, "size", Says::Key("vm.type")),
    (Kind::Vm, "machine_type", Says::Key("vm.type")),
    (Kind::Vm, "spot", Says::Key("vm.spot")),
    (Kind::Vm, "disk_gb", Says::Key("vm.disk_gb")),
    (Kind::Vm, "region", Says::Key("region")),
    (Kind::Vm, "zone", Says::Key("region")),
    (Kind::Vm, "ami", Says::Key("the VM's image")),
    (Kind::Vm, "image", Says::Key("the VM's image")),
    // What the machine is now (stopped, say): a VM not running is made again.
    (Kind::Vm, "instance_state", Says::Key("the VM's state")),
    (Kind::Vm, "power_state", Says::Key("the VM's state")),
    (Kind::Vm, "status", Says::Key("the VM's state")),
    (Kind::Vm, "host", Says::Key("vm.host")),
    (Kind::Vm, "port", Says::Key("vm.port")),
];

fn says(kind: Kind, attr: &str, value: Option<&Value>) -> Says {
    TERMS
        .iter()
        .find(|(k, a, _)| *k == kind && *a == attr)
        .map(|(_, _, s)| *s)
        .unwrap_or_else(|| {
            if value
                .and_then(Value::as_str)
                .is_some_and(|s| s.contains('\n'))
            {
                Says::Generated
            } else {
                Says::Own
            }
        })
}

/// A value as a person reads it: a string bare, anything else as JSON; none as `(none)`.
fn value(v: Option<&Value>, safe: &dyn Fn(&str) -> String) -> String {
    match v {
        None | Some(Value::Null) => "(none)".to_owned(),
        Some(Value::String(s)) => safe(s),
        Some(v) => safe(&serde_json::to_string(v).expect("json values serialise")),
    }
}

/// The seconds an upload program sleeps between rounds (`sync_interval`).
fn interval(program: Option<&Value>) -> Option<u64> {
    let text = program?.as_str()?;
    let at = text.rfind("; sleep ")?;
    let rest = &text[at + "; sleep ".len()..];
    rest.split(';').next()?.trim().parse().ok()
}

/// What changed of `c`, in the user's terms; anycloud's generated text only when nothing
/// else explains it.
fn reasons(c: &Change, safe: &dyn Fn(&str) -> String) -> Vec<String> {
    // Something made or removed has no "from → to" to tell.
    if c.before.is_none() || c.after.is_none() {
        return Vec::new();
    }
    let empty = Attrs::new();
    let before = c.before.as_ref().unwrap_or(&empty);
    let after = c.after.as_ref().unwrap_or(&empty);
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut said = Vec::new();
    let mut generated = Vec::new();
    for k in keys {
        // Read from the machine, never planned: their change is no reason.
        if c.after_unknown.contains(k) {
            continue;
        }
        let (b, a) = (before.get(k), after.get(k));
        if b == a {
            continue;
        }
        match says(c.kind, k, a.or(b)) {
            Says::Own => said.push(format!(
                "{} {} → {}",
                safe(k),
                value(b, safe),
                value(a, safe)
            )),
            Says::Key(label) => {
                said.push(format!("{label} {} → {}", value(b, safe), value(a, safe)))
            }
            Says::Map(prefix) => {
                let (bm, am) = (as_map(b), as_map(a));
                let names: BTreeSet<&String> = bm.keys().chain(am.keys()).collect();
                for n in names {
                    let (x, y) = (bm.get(n), am.get(n));
                    if x != y {
                        said.push(format!(
                            "{prefix}.{} {} → {}",
                            safe(n),
                            value(x, safe),
                            value(y, safe)
                        ));
                    }
                }
            }
            Says::Interval => match (interval(b), interval(a)) {
                (Some(x), Some(y)) if x != y => said.push(format!("sync_interval {x}s → {y}s")),
                _ => generated.push(k.as_str()),
            },
            Says::Generated => generated.push(k.as_str()),
        }
    }
    if said.is_empty() && !generated.is_empty() {
        said.push(format!(
            "anycloud's generated {} changes",
            generated.join(", ")
        ));
    }
    said
}

fn as_map(v: Option<&Value>) -> serde_json::Map<String, Value> {
    v.and_then(Value::as_object).cloned().unwrap_or_default()
}

/// How a job stood when the plan was made, from its container's `job` attribute.
enum Job {
    Running(String),
    Ended(String),
    /// Not recorded (a state made before jobs were read, or never refreshed).
    Unknown,
}

impl Job {
    /// From what the container records, else (a container left as it is carries no
    /// attributes in a plan) from the plan's note of its ended job.
    fn of(c: Option<&Change>, ended: Option<&EndedJob>, safe: &dyn Fn(&str) -> String) -> Job {
        if let Some(job) = c.and_then(|c| c.before.as_ref()?.get("job")) {
            return Job::from_value(job, safe);
        }
        match ended {
            Some(e) => Job::from_value(
                &serde_json::json!({
                    "state": e.state,
                    "exit_code": e.exit_code,
                    "finished_at": e.finished_at,
                }),
                safe,
            ),
            None => Job::Unknown,
        }
    }

    fn from_value(job: &Value, safe: &dyn Fn(&str) -> String) -> Job {
        let text = |k: &str| {
            job.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| safe(&when(s)))
        };
        match job.get("state").and_then(Value::as_str) {
            Some("running") => Job::Running(match text("started_at") {
                Some(t) => format!("running since {t}"),
                None => "running".into(),
            }),
            Some("succeeded") => Job::Ended(match text("finished_at") {
                Some(t) => format!("finished at {t}"),
                None => "finished".into(),
            }),
            Some("failed") => Job::Ended(format!(
                "exited with code {}",
                job.get("exit_code").and_then(Value::as_i64).unwrap_or(-1)
            )),
            Some("never-started") => Job::Ended("never started".into()),
            Some("interrupted") => Job::Ended("interrupted".into()),
            _ => Job::Unknown,
        }
    }

    /// `job D (running since …)`.
    fn head(&self, deployment: &str) -> String {
        match self {
            Job::Running(s) | Job::Ended(s) => format!("job {deployment} ({s})"),
            Job::Unknown => format!("job {deployment}"),
        }
    }
}

/// `2026-12-07T14:42:10Z` as `2026-12-07 14:42 UTC`; anything else as it is.
fn when(rfc3339: &str) -> String {
    let b = rfc3339.as_bytes();
    if b.len() >= 17 && b[10] == b'T' && b[13] == b':' && rfc3339.ends_with('Z') {
        format!("{} {} UTC", &rfc3339[..10], &rfc3339[11..16])
    } else {
        rfc3339.to_owned()
    }
}

struct Deployment<'a> {
    name: &'a str,
    changes: Vec<&'a Change>,
    /// Its job, if it has ended (the plan's note of it).
    ended: Option<&'a EndedJob>,
    /// Whether the job's state was read now, or is what the state last recorded.
    refreshed: bool,
    /// Whether `--from-scratch` empties its checkpoint before the job runs again.
    from_scratch: bool,
    safe: &'a dyn Fn(&str) -> String,
}

impl Deployment<'_> {
    fn get(&self, part: &str) -> Option<&Change> {
        let address = format!("deployment.{}.{part}", self.name);
        self.changes.iter().copied().find(|c| c.address == address)
    }

    fn is(&self, part: &str, action: Action) -> bool {
        self.get(part).is_some_and(|c| c.action == action)
    }

    /// Whether the job it will run has a checkpoint to start from.
    fn checkpointed(&self) -> bool {
        self.get("bucket.checkpoint")
            .is_some_and(|c| c.action != Action::Delete)
    }

    fn line(&self) -> String {
        let safe = self.safe;
        // A name the config validated, but read back from a state file: shown as any text is.
        let d = &safe(self.name);
        let container = self.get("container");
        let job = match Job::of(container, self.ended, safe) {
            // A destroy, or --refresh=false: the job may have moved on since.
            Job::Running(s) if !self.refreshed => Job::Running(format!("{s}, as last recorded")),
            Job::Ended(s) if !self.refreshed => Job::Ended(format!("{s}, as last recorded")),
            job => job,
        };
        let mut clauses: Vec<String> = Vec::new();
        let head;
        if self.is("vm", Action::Delete) {
            head = format!("deployment {d}");
            clauses.push("destroyed".into());
            if container.is_some_and(|c| c.action == Action::Delete) {
                clauses.push(match &job {
                    Job::Ended(s) => format!("its job ({s}) is removed"),
                    Job::Running(s) => {
                        format!("its job ({s}) is STOPPED after a last upload of what it wrote")
                    }
                    Job::Unknown => {
                        "its job is STOPPED after a last upload of what it wrote".into()
                    }
                });
            }
        } else if self.is("vm", Action::Create) && self.is("container", Action::Create) {
            head = format!("deployment {d}");
            clauses.push("new; its job will start".into());
        } else {
            match container {
                Some(c) if c.action == Action::Replace => {
                    head = job.head(d);
                    clauses.push(self.restart(c, &job));
                }
                Some(c) if c.action == Action::Create => {
                    head = format!("job {d}");
                    clauses.push(match &c.reason {
                        Some(r) => format!("will start ({r})"),
                        None => "will start".into(),
                    });
                }
                Some(c) if c.action == Action::Delete => {
                    head = job.head(d);
                    clauses.push(match job {
                        Job::Ended(_) => "removed".into(),
                        _ => "STOPPED after a last upload of what it wrote, and not started again"
                            .into(),
                    });
                }
                _ => {
                    head = format!("deployment {d}");
                }
            }
            clauses.extend(self.uploads());
            clauses.extend(self.others());
            if matches!(container, Some(c) if matches!(c.action, Action::NoOp | Action::Update)) {
                clauses.push(match &job {
                    // Apply never runs an ended job again by itself.
                    Job::Ended(s) => format!("its job ({s}) is not run again"),
                    _ => "the job is not touched".into(),
                });
            }
        }
        clauses.extend(self.buckets());
        if clauses.is_empty() {
            clauses.push("changes".into());
        }
        format!("{head}: {}", clauses.join("; "))
    }

    /// Why a replaced container's job runs again, and from where.
    fn restart(&self, c: &Change, job: &Job) -> String {
        let why = if c
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("its VM "))
        {
            self.vm_why()
        } else {
            let r = reasons(c, self.safe);
            if r.is_empty() {
                c.reason.clone().unwrap_or_else(|| "it is replaced".into())
            } else {
                r.join(", ")
            }
        };
        let from = match (self.checkpointed(), job) {
            _ if self.from_scratch => "from an empty checkpoint (--from-scratch)",
            (true, _) => "from its checkpoint",
            (false, Job::Ended(_)) => "from the beginning",
            (false, _) => "from the beginning (no checkpoint: its progress is lost)",
        };
        match job {
            Job::Ended(_) => format!("started again {from}, because {why}"),
            _ => format!("STOPPED and started again {from}, because {why}"),
        }
    }

    /// Why its VM is made again.
    fn vm_why(&self) -> String {
        let Some(vm) = self.get("vm") else {
            return "its VM is replaced".into();
        };
        let r = reasons(vm, self.safe);
        match (&vm.reason, r.is_empty()) {
            (_, false) => format!("its VM is replaced ({})", r.join(", ")),
            (Some(reason), true) => format!("its VM is made again ({reason})"),
            (None, true) => "its VM is replaced".into(),
        }
    }

    /// The upload programs' changes: a new cadence, said as one.
    fn uploads(&self) -> Vec<String> {
        let mut cadence = BTreeSet::new();
        let mut other = Vec::new();
        for part in ["service.output", "service.checkpoint"] {
            let Some(c) = self.get(part) else { continue };
            if carried(c) {
                continue;
            }
            let what = if part == "service.output" {
                "output"
            } else {
                "checkpoint"
            };
            match c.action {
                Action::Update | Action::Replace => {
                    let program = |s: &Option<Attrs>| interval(s.as_ref()?.get("program"));
                    let rest: Vec<String> = reasons(c, self.safe)
                        .into_iter()
                        .filter(|r| !r.starts_with("sync_interval "))
                        .collect();
                    if let (Some(x), Some(y)) = (program(&c.before), program(&c.after)) {
                        if x != y {
                            cadence.insert((x, y));
                        }
                    }
                    if !rest.is_empty() {
                        other.push(format!("the {what} upload changes ({})", rest.join(", ")));
                    }
                }
                Action::Create => other.push(format!("{what} uploads start")),
                Action::Delete => other.push(format!("{what} uploads stop after a last upload")),
                _ => {}
            }
        }
        let mut said: Vec<String> = cadence
            .into_iter()
            .map(|(x, y)| format!("uploads every {y}s instead of {x}s"))
            .collect();
        said.extend(other);
        said
    }

    /// Changes the other clauses do not speak of (the VM updated, rclone's config, the
    /// machine's scripts), each with its reasons.
    fn others(&self) -> Vec<String> {
        let container_replaced = self.is("container", Action::Replace);
        self.changes
            .iter()
            .filter(|c| {
                let said_elsewhere = match c.kind {
                    Kind::Container | Kind::ServiceOutput | Kind::ServiceCheckpoint => true,
                    Kind::Bucket => c.action == Action::Delete,
                    // A replaced VM is said in the job's line.
                    Kind::Vm => container_replaced,
                    _ => false,
                };
                c.action != Action::NoOp && !said_elsewhere && !carried(c)
            })
            .map(|c| {
                let part = c
                    .address
                    .strip_prefix(&format!("deployment.{}.", self.name))
                    .unwrap_or(&c.address);
                let part = (self.safe)(part);
                let done = match c.action {
                    Action::Read => "read again",
                    Action::Create => "made",
                    Action::Update => "changed in place",
                    Action::Replace => "replaced",
                    _ => "destroyed",
                };
                let r = reasons(c, self.safe);
                match (r.is_empty(), &c.reason) {
                    (false, _) => format!("{part} {done} ({})", r.join(", ")),
                    (true, Some(reason)) => format!("{part} {done} ({reason})"),
                    (true, None) => format!("{part} {done}"),
                }
            })
            .collect()
    }

    /// Buckets that go: kept (only forgotten) or deleted with their data, as destroy does.
    fn buckets(&self) -> Vec<String> {
        self.changes
            .iter()
            .filter(|c| c.kind == Kind::Bucket && c.action == Action::Delete)
            .map(|c| {
                let role = c.address.rsplit('.').next().unwrap_or("");
                let name = value(c.before.as_ref().and_then(|b| b.get("name")), self.safe);
                if c.keep_on_destroy {
                    format!("{role} bucket {name} kept")
                } else {
                    format!("{role} bucket {name} DELETED with its data")
                }
            })
            .collect()
    }
}

/// Replaced or made again only because its VM is: said once, with the VM.
fn carried(c: &Change) -> bool {
    c.reason
        .as_deref()
        .is_some_and(|r| r.starts_with("its VM "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(v: Value) -> Option<Attrs> {
        Some(serde_json::from_value(v).unwrap())
    }

    fn change(address: &str, kind: Kind, action: Action, before: Value, after: Value) -> Change {
        Change {
            address: address.into(),
            kind,
            provider: "test".into(),
            action,
            reason: None,
            before: if before.is_null() {
                None
            } else {
                attrs(before)
            },
            after: if after.is_null() { None } else { attrs(after) },
            private: None,
            keep_on_destroy: false,
            after_unknown: vec![],
            replace_paths: vec![],
            dependencies: vec![],
            prior_dependencies: vec![],
        }
    }

    fn plan(changes: Vec<Change>) -> Plan {
        Plan::of_changes(changes)
    }

    fn lines(p: &Plan) -> Vec<String> {
        let s = story(p, &|t| t.to_owned());
        let untouched = s.untouched_line();
        let mut lines: Vec<String> = s.lines.into_iter().map(|l| l.text).collect();
        lines.extend(untouched);
        lines
    }

    fn noop(address: &str, kind: Kind) -> Change {
        change(address, kind, Action::NoOp, Value::Null, Value::Null)
    }

    #[test]
    fn the_table_says_each_cloud_s_vm_type_as_the_config_key() {
        for attr in ["instance_type", "size", "machine_type"] {
            assert_eq!(says(Kind::Vm, attr, None), Says::Key("vm.type"), "{attr}");
        }
        assert_eq!(says(Kind::Container, "env", None), Says::Map("env"));
        assert_eq!(says(Kind::Container, "run_spec", None), Says::Generated);
        // Not in the table: multi-line text is generated, anything else its own name.
        assert_eq!(
            says(Kind::VmInit, "boot_script", Some(&json!("a\nb\n"))),
            Says::Generated
        );
        assert_eq!(says(Kind::VmInit, "user", Some(&json!("x"))), Says::Own);
    }

    #[test]
    fn an_upload_program_s_interval_is_read_from_its_loop() {
        let program = json!("command=/bin/bash -c \"while true; do \\\n    touch x; sleep 120; done\"\nautostart=true\n");
        assert_eq!(interval(Some(&program)), Some(120));
        assert_eq!(interval(Some(&json!("no loop"))), None);
    }

    #[test]
    fn a_vm_replaced_for_its_type_restarts_the_job_and_says_why() {
        let job = json!({"state": "running", "started_at": "2026-12-07T09:05:00Z"});
        let mut container = change(
            "deployment.a.container",
            Kind::Container,
            Action::Replace,
            json!({"image": "i", "job": job}),
            json!({"image": "i"}),
        );
        container.reason = Some("its VM deployment.a.vm is replaced".into());
        container.after_unknown = vec!["job".into()];
        let p = plan(vec![
            change(
                "deployment.a.vm",
                Kind::Vm,
                Action::Replace,
                json!({"instance_type": "t3.small", "spot": true}),
                json!({"instance_type": "t3.large", "spot": true}),
            ),
            container,
            noop("deployment.b.vm", Kind::Vm),
        ]);
        assert_eq!(
            lines(&p),
            [
                "job a (running since 2026-12-07 09:05 UTC): STOPPED and started again from the beginning (no checkpoint: its progress is lost), because its VM is replaced (vm.type t3.small → t3.large)",
                "1 other deployment is not touched.",
            ]
        );
    }

    #[test]
    fn a_destroy_says_which_buckets_are_kept_and_which_are_deleted() {
        let mut output = change(
            "deployment.a.bucket.output",
            Kind::Bucket,
            Action::Delete,
            json!({"name": "results"}),
            Value::Null,
        );
        output.keep_on_destroy = true;
        let p = plan(vec![
            change(
                "deployment.a.container",
                Kind::Container,
                Action::Delete,
                json!({"job": {"state": "succeeded", "exit_code": 0, "finished_at": "2026-12-07T10:00:00Z"}}),
                Value::Null,
            ),
            output,
            change(
                "deployment.a.bucket.checkpoint",
                Kind::Bucket,
                Action::Delete,
                json!({"name": "a"}),
                Value::Null,
            ),
            change(
                "deployment.a.vm",
                Kind::Vm,
                Action::Delete,
                json!({}),
                Value::Null,
            ),
        ]);
        assert_eq!(
            lines(&p),
            ["deployment a: destroyed; its job (finished at 2026-12-07 10:00 UTC) is removed; output bucket results kept; checkpoint bucket a DELETED with its data"]
        );
    }

    #[test]
    fn only_generated_text_changing_is_said_as_anycloud_s() {
        let p = plan(vec![change(
            "deployment.a.vm_init",
            Kind::VmInit,
            Action::Update,
            json!({"boot_script": "a\nb\n"}),
            json!({"boot_script": "a\nc\n"}),
        )]);
        assert_eq!(
            lines(&p),
            ["deployment a: vm_init changed in place (anycloud's generated boot_script changes)"]
        );
    }

    #[test]
    fn a_finished_job_left_as_it_is_is_not_run_again() {
        let mut p = plan(vec![
            change(
                "deployment.a.service.output",
                Kind::ServiceOutput,
                Action::Update,
                json!({"program": "x; sleep 5; done\"\n"}),
                json!({"program": "x; sleep 10; done\"\n"}),
            ),
            noop("deployment.a.container", Kind::Container),
        ]);
        assert_eq!(
            lines(&p),
            ["deployment a: uploads every 10s instead of 5s; the job is not touched"]
        );
        p.jobs = vec![EndedJob {
            address: "deployment.a.container".into(),
            state: "failed".into(),
            exit_code: Some(3),
            finished_at: String::new(),
            error: String::new(),
            idle_stop: String::new(),
            last_lines: vec![],
        }];
        assert_eq!(
            lines(&p),
            ["deployment a: uploads every 10s instead of 5s; its job (exited with code 3) is not run again"]
        );
    }

    #[test]
    fn env_keys_added_and_removed_are_each_named() {
        let c = change(
            "deployment.a.container",
            Kind::Container,
            Action::Replace,
            json!({"env": {"A": "1", "B": "2"}, "run_spec": "x\n"}),
            json!({"env": {"A": "1", "C": "3"}, "run_spec": "y\n"}),
        );
        assert_eq!(
            reasons(&c, &|t| t.to_owned()),
            ["env.B 2 → (none)", "env.C (none) → 3"]
        );
    }

    #[test]
    fn a_sweeps_members_saying_the_same_are_one_line() {
        let member = |id: &str| crate::config::SweepMember {
            id: id.to_owned(),
            values: Default::default(),
        };
        let sweeps = vec![crate::config::Sweep {
            name: "train".into(),
            axes: vec!["seed".into()],
            members: (1..=7)
                .map(|i| member(&format!("train-seed-{i}")))
                .collect(),
        }];
        let line = |d: &str, text: String| Line {
            deployment: d.into(),
            text,
        };
        let mut lines: Vec<Line> = (1..=6)
            .map(|i| {
                let d = format!("train-seed-{i}");
                line(&d, format!("deployment {d}: new; its job will start"))
            })
            .collect();
        lines.push(line(
            "other",
            "deployment other: new; its job will start".into(),
        ));
        lines.push(line(
            "train-seed-7",
            "job train-seed-7 (running since 2026-12-07 14:42 UTC): STOPPED".into(),
        ));
        let texts: Vec<String> = group_sweeps(&sweeps, lines)
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(
            texts,
            [
                "sweep train, 6 of 7 deployments (train-seed-1, train-seed-2, train-seed-3, train-seed-4, train-seed-5 and 1 more): new; its job will start",
                "deployment other: new; its job will start",
                "job train-seed-7 (running since 2026-12-07 14:42 UTC): STOPPED",
            ]
        );
    }
}
