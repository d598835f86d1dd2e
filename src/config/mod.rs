//! `anycloud.yaml`: parsed with locations, checked completely before anything is called.

mod names;
mod raw;
/// The continent table lives with the providers, which map a bucket's region to it too.
pub use anycloud_provider::regions;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use raw::{RawCheck, RawConfig, RawDefaults, RawVm, S};
use serde_saphyr::Location;

pub const PROVIDERS: [&str; 5] = ["aws", "azure", "gcp", "local", "ssh"];
pub const DEFAULT_LOCAL_ROOT: &str = ".anycloud/local";

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub path: PathBuf,
    /// sha256 of the file's bytes: a saved plan records it and refuses a changed config.
    pub digest: String,
    pub project: Option<String>,
    /// The local cloud's root, absolute.
    pub local_root: String,
    /// `providers.aws.profile`, for the AWS provider's credential chain.
    pub aws_profile: Option<String>,
    /// `providers.gcp.project`.
    pub gcp_project: Option<String>,
    /// Each provider's own settings, handed to it as they are (`Provider::configure`).
    pub provider_settings: BTreeMap<String, serde_json::Value>,
    pub deployments: Vec<Deployment>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Deployment {
    pub id: String,
    pub provider: String,
    pub region: String,
    pub continent: String,
    pub vm: Vm,
    pub container: Container,
    pub buckets: Buckets,
    pub sync_interval_secs: u64,
    pub check_retries: u32,
    pub check_retries_sleep_secs: u64,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Vm {
    pub machine_type: Option<String>,
    pub spot: bool,
    pub disk_gb: Option<u32>,
    /// The machine of a `provider: ssh` deployment.
    pub machine: Option<Machine>,
}

/// A machine the user already has, reached over SSH.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Absolute; `None` means the deployment's own generated key.
    pub identity_file: Option<String>,
    /// `SHA256:…`; `None` trusts the key seen first and pins it in state.
    pub host_key: Option<String>,
    /// Where anycloud keeps its directories (buckets, the deployment's host dir) there.
    pub root: String,
}

pub const DEFAULT_SSH_ROOT: &str = "/var/lib/anycloud";

#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub gpus: Option<String>,
    pub shm_size: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Buckets {
    pub input: Option<String>,
    pub output: Option<String>,
    /// The checkpoint bucket, named after the deployment id.
    pub checkpoint: Option<String>,
}

/// A config problem, located in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
    pub help: Option<String>,
    /// The offending source line, for the snippet.
    pub source_line: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "error: {}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(src) = &self.source_line {
            let n = self.line.to_string();
            let pad = " ".repeat(n.len());
            writeln!(f, "{pad} |")?;
            writeln!(f, "{n} | {src}")?;
            let caret_at = (self.column.max(1) - 1) as usize;
            writeln!(
                f,
                "{pad} | {}^",
                " ".repeat(caret_at.min(src.chars().count()))
            )?;
        }
        if let Some(help) = &self.help {
            writeln!(f, "  = help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

struct Checker<'a> {
    file: String,
    source: &'a str,
    errors: Vec<ConfigError>,
    /// The config's directory, which relative paths in it are relative to.
    base: PathBuf,
    /// Every bucket a deployment names, for the checks across deployments.
    buckets: Vec<BucketUse>,
}

struct BucketUse {
    provider: String,
    name: String,
    role: &'static str,
    deployment: String,
    at: Location,
}

impl Checker<'_> {
    fn at(&mut self, loc: Location, message: impl Into<String>, help: Option<String>) {
        let (line, column) = if loc == Location::UNKNOWN {
            (1, 1)
        } else {
            (loc.line(), loc.column())
        };
        self.push(line, column, message.into(), help);
    }

    fn push(&mut self, line: u64, column: u64, message: String, help: Option<String>) {
        let source_line = self
            .source
            .lines()
            .nth(line.saturating_sub(1) as usize)
            .map(String::from);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            message,
            help,
            source_line,
        });
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(2))
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

fn did_you_mean(found: Option<&str>) -> Option<String> {
    found.map(|s| format!("did you mean '{s}'?"))
}

/// Reads and checks the config at `path`. All problems are reported, each with its location.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let file = path.display().to_string();
    let whole = |message: String| {
        vec![ConfigError {
            file: file.clone(),
            line: 1,
            column: 1,
            message,
            help: None,
            source_line: None,
        }]
    };
    let bytes = std::fs::read(path).map_err(|e| whole(format!("cannot read the config: {e}")))?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(e) => {
            let upto = &bytes[..e.valid_up_to()];
            let line = upto.iter().filter(|b| **b == b'\n').count() as u64 + 1;
            let column = (upto.len()
                - upto
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map(|p| p + 1)
                    .unwrap_or(0)) as u64
                + 1;
            return Err(vec![ConfigError {
                file,
                line,
                column,
                message: "the config is not valid UTF-8".into(),
                help: Some("save anycloud.yaml as UTF-8".into()),
                source_line: None,
            }]);
        }
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&file, text, &base, &digest(&bytes))
}

pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Parses and checks config text; `base` resolves relative paths (the config's directory).
pub fn parse(
    file: &str,
    text: &str,
    base: &Path,
    digest: &str,
) -> Result<Config, Vec<ConfigError>> {
    let mut ck = Checker {
        file: file.to_owned(),
        source: text,
        errors: Vec::new(),
        base: base.to_path_buf(),
        buckets: Vec::new(),
    };
    // Only blank lines and comments: as empty as an empty file.
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        ck.push(
            1,
            1,
            "the config is empty; it needs at least a `deployments:` mapping".into(),
            None,
        );
        return Err(ck.errors);
    }
    // Alias bombs stop at a few thousand replayed events: a real config has a handful.
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = 10_000;
    alias_limits.max_replay_stack_depth = 16;
    alias_limits.max_alias_expansions_per_anchor = 100;
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        alias_limits: alias_limits,
    };
    let raw: RawConfig = match serde_saphyr::from_str_with_options(text, options) {
        Ok(r) => r,
        Err(e) => {
            yaml_error(&mut ck, &e);
            return Err(ck.errors);
        }
    };
    let config = check(&mut ck, raw, base, digest);
    if ck.errors.is_empty() {
        Ok(config)
    } else {
        Err(ck.errors)
    }
}

fn yaml_error(ck: &mut Checker, e: &serde_saphyr::Error) {
    let loc = e.location().unwrap_or(Location::UNKNOWN);
    let opts = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
    let mut message = e.render_with_options(opts);
    // The location is ours to print; drop the parser's own suffixes.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    let mut help = None;
    // Reword the library's messages that speak to programmers rather than to users.
    if let Some(key) = message.strip_prefix("duplicate mapping key: ") {
        let key = key
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or(key)
            .to_owned();
        message = format!("duplicate key '{key}'");
        help =
            Some("each key may appear once in a mapping; remove or merge the repeated one".into());
    } else if message.starts_with("alias replay limit exceeded") {
        message =
            "anchors and aliases expand into too large a document (more than 10000 values)".into();
        help = Some("an anycloud.yaml needs only a few aliases; is this a YAML bomb?".into());
    } else if message.starts_with("multiple YAML documents detected") {
        message = "the config must be a single YAML document, but a second one starts here".into();
        help = Some("remove the `---` line and merge the documents".into());
    }
    // serde-saphyr renders the expected keys without backticks, so read them from the error itself.
    if let serde_saphyr::Error::SerdeUnknownField {
        field, expected, ..
    } = e.without_snippet()
    {
        help = did_you_mean(suggest(field, expected.iter().copied())).or_else(|| {
            (!expected.is_empty()).then(|| format!("expected one of: {}", expected.join(", ")))
        });
        message = format!("unknown key '{field}'");
    }
    ck.at(loc, message, help);
}

fn check(ck: &mut Checker, raw: RawConfig, base: &Path, digest: &str) -> Config {
    let project = raw.project.map(|p| {
        let ok = !p.value.is_empty()
            && p.value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            ck.at(
                p.referenced,
                format!(
                    "project '{}' must be lowercase letters, digits and '-'",
                    p.value
                ),
                None,
            );
        }
        p.value
    });
    let providers = raw.providers.unwrap_or_default();
    let local_root = match providers.local.and_then(|l| l.root) {
        Some(r) => {
            let ok = anycloud_host::render::is_plain_path(&r.value);
            if !ok {
                ck.at(
                    r.referenced,
                    format!(
                        "local root '{}' may only use letters, digits and / . _ - + @",
                        r.value
                    ),
                    None,
                );
            }
            absolute(base, &r.value)
        }
        None => absolute(base, DEFAULT_LOCAL_ROOT),
    };
    if let Some(azure) = providers.azure.and_then(|a| a.subscription_id) {
        let v = &azure.value;
        let ok = v.len() == 36 && v.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if !ok {
            ck.at(
                azure.referenced,
                format!("subscription_id '{v}' is not a GUID"),
                Some("e.g. 00000000-0000-0000-0000-000000000000".into()),
            );
        }
    }
    let mut provider_settings = BTreeMap::new();
    if let Some(aws) = &providers.aws {
        if let Some(cidr) = &aws.ssh_cidr {
            if !is_cidr(&cidr.value) {
                ck.at(
                    cidr.referenced,
                    format!(
                        "providers.aws.ssh_cidr '{}' is not an IPv4 CIDR like 203.0.113.7/32",
                        cidr.value
                    ),
                    None,
                );
            }
        }
        if let Some(ami) = &aws.ami {
            if !ami.value.starts_with("ami-") {
                ck.at(
                    ami.referenced,
                    format!(
                        "providers.aws.ami '{}' is not an image id (ami-…)",
                        ami.value
                    ),
                    None,
                );
            }
        }
        provider_settings.insert(
            "aws".to_owned(),
            serde_json::json!({
                "profile": aws.profile,
                "endpoints": aws.endpoints.clone().unwrap_or_default(),
                "ssh_cidr": aws.ssh_cidr.as_ref().map(|c| &c.value),
                "ami": aws.ami.as_ref().map(|c| &c.value),
                "ssh_user": aws.ssh_user.as_ref().map(|c| &c.value),
            }),
        );
    }
    let aws_profile = providers.aws.and_then(|a| a.profile);
    let gcp_project = providers.gcp.and_then(|g| g.project).map(|p| p.value);
    let defaults = raw.defaults.unwrap_or_default();
    let mut deployments = Vec::new();
    match raw.deployments {
        None => ck.push(
            1,
            1,
            "the config has no `deployments:` mapping".into(),
            Some("add `deployments:` with at least one deployment".into()),
        ),
        Some(entries) => {
            if entries.value.0.is_empty() {
                ck.at(
                    entries.referenced,
                    "`deployments:` is empty; add at least one deployment",
                    None,
                );
            }
            for (id, dep) in entries.value.0 {
                if let Some(d) = check_deployment(ck, &defaults, &id, dep) {
                    deployments.push(d);
                }
            }
            check_bucket_roles(ck);
            deployments.sort_by(|a, b| a.id.cmp(&b.id));
        }
    }
    Config {
        path: PathBuf::new(),
        digest: digest.into(),
        project,
        local_root,
        aws_profile,
        gcp_project,
        provider_settings,
        deployments,
    }
}

/// A checkpoint bucket belongs to its deployment alone, and no deployment uploads its
/// output into a bucket that is some job's read-only input.
fn check_bucket_roles(ck: &mut Checker) {
    // Grouped by (provider, name): linear in the number of buckets.
    let mut by_name: BTreeMap<(&str, &str), Vec<&BucketUse>> = BTreeMap::new();
    for u in &ck.buckets {
        by_name
            .entry((u.provider.as_str(), u.name.as_str()))
            .or_default()
            .push(u);
    }
    let mut problems = Vec::new();
    for uses in by_name.values().filter(|uses| uses.len() > 1) {
        let checkpoint_of = uses.iter().find(|u| u.role == "checkpoint");
        let input_of = uses.iter().find(|u| u.role == "input");
        for u in uses {
            let message = match (u.role, checkpoint_of, input_of) {
                ("input" | "output", Some(c), _) => format!(
                    "bucket '{}' is the checkpoint bucket of deployment '{}' (named after it); {} cannot also use it as its {} bucket",
                    u.name, c.deployment, u.deployment, u.role
                ),
                ("output", None, Some(i)) => format!(
                    "bucket '{}' is the read-only input of deployment '{}'; {} cannot upload its output into it",
                    u.name, i.deployment, u.deployment
                ),
                _ => continue,
            };
            problems.push((u.at, message));
        }
    }
    problems.sort_by_key(|(at, _)| (at.line(), at.column()));
    for (at, message) in problems {
        ck.at(
            at,
            message,
            Some("use a different bucket name in anycloud.yaml".into()),
        );
    }
}

fn absolute(base: &Path, p: &str) -> String {
    let path = Path::new(p);
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let base = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        base.join(path)
    };
    // Lexically normalise `.` and `..` so the same root always renders the same way.
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.display().to_string()
}

fn check_deployment(
    ck: &mut Checker,
    defaults: &RawDefaults,
    id: &S<String>,
    dep: S<raw::RawDeployment>,
) -> Option<Deployment> {
    let errors_before = ck.errors.len();
    let d = dep.value;
    let provider_s = d.provider.as_ref().or(defaults.provider.as_ref());
    let provider = match provider_s {
        Some(p) if PROVIDERS.contains(&p.value.as_str()) => p.value.clone(),
        Some(p) => {
            ck.at(
                p.referenced,
                format!(
                    "unknown provider '{}'; expected one of aws, azure, gcp, local, ssh",
                    p.value
                ),
                did_you_mean(suggest(&p.value, PROVIDERS)),
            );
            return None;
        }
        None => "local".to_owned(),
    };
    if let Err(m) = names::check_deployment_id(&id.value, &provider) {
        ck.at(id.referenced, m, None);
    }
    let region_s = d.region.as_ref().or(defaults.region.as_ref());
    // A machine of the user's own is where it is: `defaults.region` does not apply to it.
    let region_s = if provider == "ssh" {
        if let Some(r) = &d.region {
            ck.at(
                r.referenced,
                "provider ssh takes no region: the machine is where it is",
                Some("remove `region:` from this deployment".into()),
            );
        }
        None
    } else {
        region_s
    };
    let (region, continent) = match region_s {
        Some(r) => match regions::continent(&provider, &r.value) {
            Some(c) => (r.value.clone(), c.to_owned()),
            None => {
                let other_cloud = PROVIDERS
                    .iter()
                    .filter(|p| **p != provider && **p != "local")
                    .find_map(|p| regions::continent(p, &r.value).map(|c| (*p, c)));
                let help = match other_cloud {
                    Some((cloud, c)) => Some(format!(
                        "'{}' is a {cloud} region; {provider}'s regions in continent '{c}' are: {}",
                        r.value,
                        regions::regions_of_continent(&provider, c).join(", ")
                    )),
                    None => did_you_mean(suggest(&r.value, regions::regions(&provider))),
                };
                ck.at(
                    r.referenced,
                    format!("unknown region '{}' for provider {provider}", r.value),
                    help,
                );
                (r.value.clone(), String::new())
            }
        },
        None if provider == "local" => (regions::LOCAL_REGION.to_owned(), "local".to_owned()),
        // A machine of the user's own: wherever it is, its buckets are its directories.
        None if provider == "ssh" => ("ssh".to_owned(), "ssh".to_owned()),
        None => {
            ck.at(
                id.referenced,
                format!(
                    "deployment '{}' needs a region for provider {provider}",
                    id.value
                ),
                None,
            );
            (String::new(), String::new())
        }
    };
    let mut vm = merge_vm(defaults.vm.as_ref(), d.vm.as_ref());
    vm.machine = check_machine(ck, &provider, id, defaults.vm.as_ref(), d.vm.as_ref());
    if let Some(disk) =
        d.vm.as_ref()
            .and_then(|v| v.disk_gb.as_ref())
            .or(defaults.vm.as_ref().and_then(|v| v.disk_gb.as_ref()))
    {
        if disk.value < 10 {
            ck.at(
                disk.referenced,
                format!("disk_gb {} is too small; at least 10", disk.value),
                None,
            );
        }
    }
    if !["local", "ssh"].contains(&provider.as_str()) && vm.machine_type.is_none() {
        ck.at(
            id.referenced,
            format!(
                "deployment '{}' needs vm.type for provider {provider}",
                id.value
            ),
            None,
        );
    }
    let container = match d.container {
        None => {
            ck.at(
                id.referenced,
                format!(
                    "deployment '{}' needs a `container:` with an `image:`",
                    id.value
                ),
                None,
            );
            None
        }
        Some(c) => check_container(ck, c),
    };
    let mut buckets = Buckets::default();
    if let Some(b) = d.buckets {
        for (slot, name, role) in [
            (&mut buckets.input, b.input, "input"),
            (&mut buckets.output, b.output, "output"),
        ] {
            if let Some(n) = name {
                if let Err(m) = names::check_bucket_name(&n.value, &provider) {
                    ck.at(n.referenced, m, None);
                }
                ck.buckets.push(BucketUse {
                    provider: provider.clone(),
                    name: n.value.clone(),
                    role,
                    deployment: id.value.clone(),
                    at: n.referenced,
                });
                *slot = Some(n.value);
            }
        }
        if b.checkpoint == Some(true) {
            buckets.checkpoint = Some(id.value.clone());
            ck.buckets.push(BucketUse {
                provider: provider.clone(),
                name: id.value.clone(),
                role: "checkpoint",
                deployment: id.value.clone(),
                at: id.referenced,
            });
        }
    }
    let interval_s = d.sync_interval.as_ref().or(defaults.sync_interval.as_ref());
    let sync_interval_secs = match interval_s {
        Some(i) => match i.value.seconds() {
            Ok(0) => {
                ck.at(i.referenced, "sync_interval must be at least 1s", None);
                60
            }
            Ok(s) => s,
            Err(m) => {
                ck.at(i.referenced, format!("sync_interval {m}"), None);
                60
            }
        },
        None => 60,
    };
    let check = d
        .connectivity_check
        .as_ref()
        .or(defaults.connectivity_check.as_ref());
    let (check_retries, check_retries_sleep_secs) = check_settings(ck, check);
    if ck.errors.len() > errors_before {
        return None;
    }
    Some(Deployment {
        id: id.value.clone(),
        provider,
        region,
        continent,
        vm,
        container: container?,
        buckets,
        sync_interval_secs,
        check_retries,
        check_retries_sleep_secs,
    })
}

fn check_settings(ck: &mut Checker, check: Option<&RawCheck>) -> (u32, u64) {
    let retries = check
        .and_then(|c| c.retries.as_ref())
        .map(|r| r.value)
        .unwrap_or(30);
    let sleep = match check.and_then(|c| c.retries_sleep.as_ref()) {
        Some(s) => s.value.seconds().unwrap_or_else(|m| {
            ck.at(s.referenced, format!("retries_sleep {m}"), None);
            15
        }),
        None => 15,
    };
    (retries, sleep)
}

fn merge_vm(defaults: Option<&RawVm>, own: Option<&RawVm>) -> Vm {
    let pick = |f: fn(&RawVm) -> Option<String>| own.and_then(f).or_else(|| defaults.and_then(f));
    Vm {
        machine_type: pick(|v| v.machine_type.as_ref().map(|t| t.value.clone())),
        spot: own
            .and_then(|v| v.spot.as_ref().map(|s| s.value))
            .or_else(|| defaults.and_then(|v| v.spot.as_ref().map(|s| s.value)))
            .unwrap_or(false),
        disk_gb: own
            .and_then(|v| v.disk_gb.as_ref().map(|d| d.value))
            .or_else(|| defaults.and_then(|v| v.disk_gb.as_ref().map(|d| d.value))),
        machine: None,
    }
}

/// `vm:` of a `provider: ssh` deployment names a machine; of any other, it must not.
fn check_machine(
    ck: &mut Checker,
    provider: &str,
    id: &S<String>,
    defaults: Option<&RawVm>,
    own: Option<&RawVm>,
) -> Option<Machine> {
    fn pick<'a, T>(
        own: Option<&'a RawVm>,
        defaults: Option<&'a RawVm>,
        f: fn(&'a RawVm) -> Option<&'a S<T>>,
    ) -> Option<&'a S<T>> {
        own.and_then(f).or_else(|| defaults.and_then(f))
    }
    let host = pick(own, defaults, |v| v.host.as_ref());
    let port = pick(own, defaults, |v| v.port.as_ref());
    let user = pick(own, defaults, |v| v.user.as_ref());
    let identity = pick(own, defaults, |v| v.identity_file.as_ref());
    let host_key = pick(own, defaults, |v| v.host_key.as_ref());
    let root = pick(own, defaults, |v| v.root.as_ref());
    if provider != "ssh" {
        let strings = [
            ("host", host),
            ("user", user),
            ("identity_file", identity),
            ("host_key", host_key),
            ("root", root),
        ];
        for (key, v) in strings {
            if let Some(v) = v {
                ck.at(
                    v.referenced,
                    format!("vm.{key} is only for provider ssh (a machine of your own); provider {provider} makes its own VM"),
                    None,
                );
            }
        }
        if let Some(p) = port {
            ck.at(
                p.referenced,
                format!("vm.port is only for provider ssh; provider {provider} makes its own VM"),
                None,
            );
        }
        return None;
    }
    for (key, loc) in [
        (
            "type",
            pick(own, defaults, |v| v.machine_type.as_ref()).map(|v| v.referenced),
        ),
        (
            "spot",
            pick(own, defaults, |v| v.spot.as_ref()).map(|v| v.referenced),
        ),
        (
            "disk_gb",
            pick(own, defaults, |v| v.disk_gb.as_ref()).map(|v| v.referenced),
        ),
    ] {
        if let Some(loc) = loc {
            ck.at(
                loc,
                format!("vm.{key} has no meaning for provider ssh: the machine is yours as it is"),
                None,
            );
        }
    }
    let Some(host) = host else {
        ck.at(
            id.referenced,
            format!("deployment '{}' needs vm.host for provider ssh", id.value),
            Some("e.g. `vm: { host: 10.0.0.5, user: root }`".into()),
        );
        return None;
    };
    let host_ok = !host.value.is_empty()
        && host
            .value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:_".contains(c));
    if !host_ok {
        ck.at(
            host.referenced,
            format!("vm.host '{}' is not a host name or IP address", host.value),
            None,
        );
    }
    let port_number = match port {
        None => 22,
        Some(p) => u16::try_from(p.value)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| {
                ck.at(
                    p.referenced,
                    format!("vm.port {} is not a port: 1 to 65535", p.value),
                    None,
                );
                22
            }),
    };
    if let Some(u) = user {
        let ok = !u.value.is_empty()
            && u.value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !ok {
            ck.at(
                u.referenced,
                format!("vm.user '{}' is not a user name", u.value),
                None,
            );
        }
    }
    let identity_file = identity.map(|i| {
        let expanded = match (i.value.strip_prefix("~/"), std::env::var("HOME")) {
            (Some(rest), Ok(home)) => format!("{home}/{rest}"),
            _ => i.value.clone(),
        };
        let path = absolute(&ck.base.clone(), &expanded);
        if !Path::new(&path).is_file() {
            ck.at(
                i.referenced,
                format!("vm.identity_file '{}' does not exist ({path})", i.value),
                Some(
                    "omit it and anycloud generates a key for the deployment under .anycloud/keys/"
                        .into(),
                ),
            );
        }
        path
    });
    if let Some(k) = host_key {
        let body = k.value.strip_prefix("SHA256:").unwrap_or("");
        let ok = body.len() == 43
            && body
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/');
        if !ok {
            ck.at(
                k.referenced,
                format!("vm.host_key '{}' is not a SHA256 fingerprint", k.value),
                Some("give it as `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it on the machine: SHA256: and 43 characters".into()),
            );
        }
    }
    let root = match root {
        Some(r) => {
            let ok = r.value.starts_with('/')
                && !r.value.trim_end_matches('/').is_empty()
                && anycloud_host::render::is_plain_path(&r.value);
            if !ok {
                ck.at(
                    r.referenced,
                    format!(
                        "vm.root '{}' must be an absolute path (not /) of letters, digits and / . _ - + @",
                        r.value
                    ),
                    None,
                );
            }
            r.value.trim_end_matches('/').to_owned()
        }
        None => DEFAULT_SSH_ROOT.to_owned(),
    };
    Some(Machine {
        host: host.value.clone(),
        port: port_number,
        user: user
            .map(|u| u.value.clone())
            .unwrap_or_else(|| "root".into()),
        identity_file,
        host_key: host_key.map(|k| k.value.clone()),
        root,
    })
}

fn check_container(ck: &mut Checker, c: S<raw::RawContainer>) -> Option<Container> {
    let loc = c.referenced;
    let c = c.value;
    let Some(image) = c.image else {
        ck.at(loc, "the container needs an `image:`", None);
        return None;
    };
    let img = &image.value;
    if img.is_empty()
        || img.chars().any(|ch| ch.is_whitespace() || ch.is_control())
        || img.starts_with('-')
    {
        ck.at(
            image.referenced,
            format!("image '{img}' is not a valid image reference"),
            Some("e.g. ghcr.io/acme/train:latest".into()),
        );
    }
    let mut command = Vec::new();
    for word in c.command.unwrap_or_default() {
        if word.value.contains('\0') {
            ck.at(
                word.referenced,
                "a command word cannot contain a NUL byte",
                None,
            );
        }
        command.push(word.value);
    }
    let mut env = BTreeMap::new();
    for (k, v) in c.env.map(|e| e.0).unwrap_or_default() {
        let valid = k
            .value
            .chars()
            .next()
            .is_some_and(|ch| ch.is_ascii_alphabetic() || ch == '_')
            && k.value
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !valid {
            ck.at(
                k.referenced,
                format!(
                    "environment variable name '{}' must match [A-Za-z_][A-Za-z0-9_]*",
                    k.value
                ),
                None,
            );
        }
        if v.value.contains('\0') {
            ck.at(
                v.referenced,
                "an environment value cannot contain a NUL byte",
                None,
            );
        }
        env.insert(k.value, v.value);
    }
    if let Some(shm) = &c.shm_size {
        let ok = shm
            .value
            .trim_end_matches(['b', 'k', 'm', 'g', 'B', 'K', 'M', 'G'])
            .parse::<u64>()
            .is_ok();
        if !ok {
            ck.at(
                shm.referenced,
                format!("shm_size '{}' is not a size like 8g or 512m", shm.value),
                None,
            );
        }
    }
    Some(Container {
        image: image.value,
        command,
        env,
        gpus: c.gpus.map(|g| g.value),
        shm_size: c.shm_size.map(|s| s.value),
    })
}

fn is_cidr(text: &str) -> bool {
    let Some((ip, bits)) = text.split_once('/') else {
        return false;
    };
    ip.parse::<std::net::Ipv4Addr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 32)
}
