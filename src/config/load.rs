//! Reading `anycloud.yaml`: bytes, UTF-8, YAML (serde-saphyr: locations, duplicate keys,
//! bounded aliases), then the checks; every problem becomes a located diagnostic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use anycloud_provider::diagnostic::{did_you_mean, suggest};
use anycloud_provider::doc::Checks;
use anycloud_provider::{Diagnostic, Loc};

use super::raw::{loc, RawConfig, RawDefaults, RawDoc, RawHead};
use super::yaml_limits::{self, Limits};
use super::{base_of, buckets, deployment, matrix, Checker, Config, StateBackend};
use crate::registry::Providers;

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", anycloud_provider::digest::sha256_hex(bytes))
}

/// Reads and checks the config at `path` against the providers of `registry`. All problems
/// are reported, each with its location.
pub fn load(path: &Path, registry: &Providers) -> Result<Config, Vec<Diagnostic>> {
    let file = path.display().to_string();
    let whole = |message: String| vec![Diagnostic::error(message).in_file(&file, "")];
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
            let mut d = Diagnostic::at(Loc::new(line, column), "the config is not valid UTF-8")
                .with_help("save anycloud.yaml as UTF-8");
            d.file = Some(file);
            return Err(vec![d]);
        }
    };
    let mut config = parse(&file, text, &base_of(path), &digest(&bytes), registry)?;
    config.path = path.to_path_buf();
    Ok(config)
}

/// Parses and checks config text; `base` resolves relative paths (the config's directory).
pub fn parse(
    file: &str,
    text: &str,
    base: &Path,
    digest: &str,
    registry: &Providers,
) -> Result<Config, Vec<Diagnostic>> {
    let mut ck = Checker {
        registry,
        checks: Checks::new(base),
        buckets: Vec::new(),
    };
    let located = |ck: Checker| -> Vec<Diagnostic> {
        let mut all: Vec<Diagnostic> = ck
            .checks
            .diagnostics
            .into_iter()
            .map(|d| d.in_file(file, text))
            .collect();
        // In file order, whoever found them.
        all.sort_by_key(|d| (d.line, d.column));
        all
    };
    // Only blank lines and comments: as empty as an empty file.
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        ck.at(
            Loc::new(1, 1),
            "the config is empty; it needs at least a `deployments:` mapping",
            None,
        );
        return Err(located(ck));
    }
    let limits = Limits::for_input(text.len());
    let options = limits.options();
    let raw: RawConfig = match serde_saphyr::from_str_with_options(text, options) {
        Ok(r) => r,
        Err(e) => {
            // serde stops at the first unknown key and the first value of a wrong type:
            // report every one, in one run (both are empty when the YAML itself is broken).
            // A file over the parser's limits is not read again: that is what the limits bound.
            if !over_limits(&e) {
                for part in super::every_error::part_errors(text, &limits) {
                    yaml_error(&mut ck, &part, &limits);
                }
                for (at, message, help) in super::unknown_keys::unknown_keys(text, limits.options())
                {
                    ck.at(at, message, help);
                }
            }
            let first = e.location().map(loc).unwrap_or(Loc::UNKNOWN);
            let reported = ck
                .checks
                .diagnostics
                .iter()
                .any(|d| (d.line, d.column) == (first.line, first.column));
            if !reported {
                yaml_error(&mut ck, &e, &limits);
            }
            return Err(located(ck));
        }
    };
    let config = check(&mut ck, raw, digest);
    if ck.errors() == 0 {
        Ok(config)
    } else {
        Err(located(ck))
    }
}

/// Whether the parser stopped at one of its limits (aliases, budget) rather than at the shape.
fn over_limits(e: &serde_saphyr::Error) -> bool {
    let message = e.to_string();
    matches!(
        e.without_snippet(),
        serde_saphyr::Error::AliasReplayLimitExceeded { .. } | serde_saphyr::Error::Budget { .. }
    ) || message.contains("alias replay limit exceeded")
        || message.contains("budget breached")
}

fn yaml_error(ck: &mut Checker, e: &serde_saphyr::Error, limits: &Limits) {
    let at = e.location().map(loc).unwrap_or(Loc::UNKNOWN);
    let at = if at == Loc::UNKNOWN {
        Loc::new(1, 1)
    } else {
        at
    };
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
    } else if matches!(
        e.without_snippet(),
        serde_saphyr::Error::AliasReplayLimitExceeded { .. }
    ) || message.starts_with("alias replay limit exceeded")
    {
        // The limit error reaches us as a plain message when a field's own Deserialize
        // passed it through `de::Error::custom`.
        let (m, h) = limits.replay_exceeded();
        message = m;
        help = Some(h);
    } else if let serde_saphyr::Error::Budget { breach, .. } = e.without_snippet() {
        message = yaml_limits::budget_breach(breach);
    } else if let Some(what) = message.strip_prefix("budget breached: ") {
        message = yaml_limits::unsized_breach(what);
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
    ck.at(at, message, help);
}

fn check(ck: &mut Checker, raw: RawConfig, digest: &str) -> Config {
    let project = raw.project.map(|p| {
        let ok = !p.value.is_empty()
            && p.value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            ck.at(
                loc(p.referenced),
                format!(
                    "project '{}' must be lowercase letters, digits and '-'",
                    p.value
                ),
                None,
            );
        }
        p.value
    });
    let state = raw.state.and_then(|s| check_state(ck, RawDoc::located(s)));
    let provider_settings = check_providers(ck, raw.providers);
    let defaults = raw.defaults.unwrap_or_default();
    let mut deployments = Vec::new();
    let mut sweeps = Vec::new();
    let mut input_at = BTreeMap::new();
    match raw.deployments {
        None => ck.at(
            Loc::new(1, 1),
            "the config has no `deployments:` mapping",
            Some("add `deployments:` with at least one deployment".into()),
        ),
        Some(entries) => {
            if entries.value.0.is_empty() {
                ck.at(
                    loc(entries.referenced),
                    "`deployments:` is empty; add at least one deployment",
                    None,
                );
            }
            let defaults_vm = defaults.vm.map(RawDoc::located).filter(|d| {
                let mapping = matches!(
                    d.value,
                    anycloud_provider::doc::Value::Map(_) | anycloud_provider::doc::Value::Null
                );
                if !mapping {
                    ck.at(d.at, "defaults.vm must be a mapping", None);
                }
                mapping
            });
            let defaults = RawDefaults {
                vm: None,
                ..defaults
            };
            let (expanded, found_sweeps) = matrix::expand_all(ck, entries.value.0);
            sweeps = found_sweeps;
            // A problem shared by a sweep's members is in the one place they were written:
            // reported once, not once per member.
            let mut reported: BTreeMap<usize, BTreeSet<(u64, u64)>> = BTreeMap::new();
            for e in expanded {
                let before = ck.errors();
                let found = deployment::check(
                    ck,
                    &defaults,
                    defaults_vm.as_ref(),
                    &e.id,
                    e.dep,
                    project.as_deref(),
                );
                if let Some(sweep) = e.sweep {
                    let seen = reported.entry(sweep).or_default();
                    let mut index = 0;
                    ck.checks.diagnostics.retain(|d| {
                        index += 1;
                        index <= before || seen.insert((d.line, d.column))
                    });
                    // An error at the key is about the member's id, which the file does
                    // not spell out: say where it came from.
                    let key = loc(e.id.referenced);
                    for d in &mut ck.checks.diagnostics[before..] {
                        if (d.line, d.column) == (key.line, key.column) && d.help.is_none() {
                            d.help = Some(format!(
                                "'{}' is a member of the sweep '{}': its id is the key, then each axis and value; shorten the key or the axis names",
                                e.id.value, sweeps[sweep].name
                            ));
                        }
                    }
                }
                deployments.extend(found);
            }
            buckets::check_roles(ck);
            input_at = ck
                .buckets
                .iter()
                .filter(|u| u.role == anycloud_provider::BucketRole::Input)
                .map(|u| (u.deployment.clone(), u.at))
                .collect();
            deployments.sort_by(|a, b| a.id.cmp(&b.id));
        }
    }
    Config {
        path: Default::default(),
        digest: digest.into(),
        project,
        provider_settings,
        deployments: deployments.into_iter().map(Arc::new).collect(),
        sweeps,
        input_at,
        state,
    }
}

/// `state:`: one backend, offered by one of the build's providers, which checks the rest.
fn check_state(ck: &mut Checker, doc: anycloud_provider::doc::Doc) -> Option<StateBackend> {
    use anycloud_provider::doc::Value;
    let offered = ck.registry.state_backends();
    let expected = || {
        match offered.first() {
        Some((first, _)) => format!(
            "state: {{ {first}: {{…}} }} (one of: {}); without `state:` it is the local file (--state)",
            offered.iter().map(|(b, _)| *b).collect::<Vec<_>>().join(", ")
        ),
        None => "this build offers no remote state; without `state:` it is the local file (--state)"
            .to_owned(),
    }
    };
    let entries = match &doc.value {
        Value::Map(entries) if entries.len() == 1 => entries,
        Value::Map(entries) if entries.len() > 1 => {
            ck.at(
                entries[1].0.at,
                "`state:` names more than one store",
                Some(expected()),
            );
            return None;
        }
        _ => {
            ck.at(doc.at, "`state:` must name one store", Some(expected()));
            return None;
        }
    };
    let (key, settings) = &entries[0];
    let Some((backend, provider)) = offered.iter().find(|(b, _)| *b == key.name).copied() else {
        let names: Vec<&str> = offered.iter().map(|(b, _)| *b).collect();
        ck.at(
            key.at,
            format!("unknown state store '{}'", key.name),
            did_you_mean(suggest(&key.name, names.iter().copied())).or_else(|| Some(expected())),
        );
        return None;
    };
    let declaration = ck.registry.declaration(provider).expect("offered by it");
    let errors = ck.errors();
    let settings = declaration.check_state(settings, &mut ck.checks);
    (ck.errors() == errors).then_some(StateBackend {
        provider,
        backend,
        settings,
    })
}

/// The remote state store a config names, and every provider's settings (the store is
/// reached with its provider's).
pub type Head = (StateBackend, BTreeMap<String, serde_json::Value>);

/// `state:` and the providers' settings only: what opening the state store needs, read
/// before (and whatever becomes of) the rest of the config. `None` when the config keeps
/// its state in the local file. A file that does not parse is reported as the whole load
/// reports it.
pub fn load_head(path: &Path, registry: &Providers) -> Result<Option<Head>, Vec<Diagnostic>> {
    let file = path.display().to_string();
    let Ok(text) = std::fs::read_to_string(path) else {
        return load(path, registry).map(|_| None);
    };
    let limits = Limits::for_input(text.len());
    let head: RawHead = match serde_saphyr::from_str_with_options(&text, limits.options()) {
        Ok(h) => h,
        Err(_) => return load(path, registry).map(|_| None),
    };
    let Some(state) = head.state else {
        return Ok(None);
    };
    let mut ck = Checker {
        registry,
        checks: Checks::new(&base_of(path)),
        buckets: Vec::new(),
    };
    let backend = check_state(&mut ck, RawDoc::located(state));
    let settings = check_providers(&mut ck, head.providers);
    match backend {
        Some(b) if ck.errors() == 0 => Ok(Some((b, settings))),
        _ => {
            let mut all: Vec<Diagnostic> = ck
                .checks
                .diagnostics
                .into_iter()
                .map(|d| d.in_file(&file, &text))
                .collect();
            all.sort_by_key(|d| (d.line, d.column));
            Err(all)
        }
    }
}

/// `providers:`: each section is checked by its provider; every provider of the build gets
/// its settings (its defaults where the config has no section for it).
fn check_providers(
    ck: &mut Checker,
    raw: Option<super::raw::S<super::raw::Entries<super::raw::S<RawDoc>>>>,
) -> BTreeMap<String, serde_json::Value> {
    let mut sections = BTreeMap::new();
    if let Some(entries) = raw {
        for (name, doc) in entries.value.0 {
            let doc = RawDoc::located(doc);
            match ck.registry.declaration(&name.value) {
                Some(_) => {
                    sections.insert(name.value, doc);
                }
                None => {
                    let names = ck.registry.names();
                    ck.at(
                        loc(name.referenced),
                        format!("unknown provider '{}' in `providers:`", name.value),
                        did_you_mean(suggest(&name.value, names.iter().copied()))
                            .or_else(|| Some(format!("expected one of: {}", names.join(", ")))),
                    );
                }
            }
        }
    }
    let mut settings = BTreeMap::new();
    for name in ck.registry.names() {
        let declaration = ck.registry.declaration(name).expect("listed");
        let doc = sections.get(name);
        let path = format!("providers.{name}");
        // A section written as `aws:` with nothing under it is as good as none.
        let doc = doc.filter(|d| d.value != anycloud_provider::doc::Value::Null);
        if let Some(d) = doc {
            if !ck.checks.known_keys(d, &path, declaration.settings_keys()) {
                continue;
            }
        }
        let known_only = doc.map(|d| only_known(d, declaration.settings_keys()));
        let value = declaration.check_settings(known_only.as_ref(), &mut ck.checks);
        settings.insert(name.to_owned(), value);
    }
    settings
}

/// The mapping without the keys not in `known` (reported already).
pub(crate) fn only_known(
    doc: &anycloud_provider::doc::Doc,
    known: &[&str],
) -> anycloud_provider::doc::Doc {
    use anycloud_provider::doc::{Doc, Value};
    match &doc.value {
        Value::Map(entries) => Doc {
            at: doc.at,
            value: Value::Map(
                entries
                    .iter()
                    .filter(|(k, _)| known.contains(&k.name.as_str()))
                    .cloned()
                    .collect(),
            ),
        },
        _ => doc.clone(),
    }
}

/// A diagnostic at `deployments.<id>.container.image` of the config at `path`, for a problem
/// found after the config was loaded (an image missing at plan time). The file is read again
/// only then: keeping every deployment's location would cost a sweep's memory for an error.
/// Without the file or the key (changed meanwhile), the diagnostic has no location.
pub fn at_image(path: &Path, id: &str, message: String) -> Diagnostic {
    let file = path.display().to_string();
    let found = std::fs::read_to_string(path).ok().and_then(|text| {
        let options = Limits::for_input(text.len()).options();
        let raw: RawConfig = serde_saphyr::from_str_with_options(&text, options).ok()?;
        let (_, dep) = raw
            .deployments?
            .value
            .0
            .into_iter()
            .find(|(name, _)| name.value == id)?;
        let image = dep.value.container?.value.image?;
        Some((loc(image.referenced), text))
    });
    match found {
        Some((at, text)) => Diagnostic::at(at, message).in_file(&file, &text),
        None => Diagnostic::error(message),
    }
}
