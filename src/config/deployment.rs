//! One deployment's checks: its provider, id, region, `vm:` (through the provider's
//! declaration), container, buckets and intervals.

use std::collections::BTreeMap;

use anycloud_provider::diagnostic::{did_you_mean, suggest};
use anycloud_provider::doc::{Doc, Value};
use anycloud_provider::{
    BucketRole, BucketSpec, ConnectivityCheck, ContainerSpec, Declaration, DeploymentSpec, Loc,
    Regions, Restart, VmContext,
};

use super::buckets::BucketUse;
use super::raw::{loc, RawCheck, RawCommand, RawContainer, RawDefaults, RawDeployment, RawDoc, S};
use super::{names, Checker};

pub(super) fn check(
    ck: &mut Checker,
    defaults: &RawDefaults,
    defaults_vm: Option<&Doc>,
    id: &S<String>,
    dep: S<RawDeployment>,
    project: Option<&str>,
) -> Option<DeploymentSpec> {
    let errors_before = ck.errors();
    let id_at = loc(id.referenced);
    let d = dep.value;
    let registry = ck.registry;
    let provider: &dyn Declaration = match d.provider.as_ref().or(defaults.provider.as_ref()) {
        Some(p) => match registry.declaration(&p.value) {
            Some(decl) => decl,
            None => {
                let names = registry.names();
                ck.at(
                    loc(p.referenced),
                    format!(
                        "unknown provider '{}'; expected one of {}",
                        p.value,
                        names.join(", ")
                    ),
                    did_you_mean(suggest(&p.value, names.iter().copied())),
                );
                return None;
            }
        },
        None => registry.default_declaration(),
    };
    let name = provider.name();
    if let Err(m) = names::check_deployment_id(&id.value, provider) {
        ck.at(id_at, m, None);
    }
    let (region, continent) = region_of(ck, provider, &d, defaults, id);
    let own_vm = d.vm.map(RawDoc::located);
    let vm_doc = vm_of(ck, provider, Doc::overlay(defaults_vm, own_vm.as_ref()));
    let mut vm = provider.check_vm(
        vm_doc.as_ref(),
        VmContext {
            deployment: &id.value,
            at: id_at,
        },
        &mut ck.checks,
    );
    if let Some(listed) = vm_doc
        .as_ref()
        .and_then(|v| v.get("regions"))
        .filter(|_| !continent.is_empty())
    {
        vm.regions = vm_regions(ck, provider, listed, &continent);
    }
    let container = match d.container {
        None => {
            ck.at(
                id_at,
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
    let mut buckets = BTreeMap::new();
    let mut bucket = |ck: &mut Checker, role: BucketRole, name: String, at: Loc| {
        ck.buckets.push(BucketUse {
            provider: provider.name(),
            name: name.clone(),
            role,
            deployment: id.value.clone(),
            continent: continent.clone(),
            at,
        });
        // Where it lives is the graph's to decide (first-wins per continent).
        buckets.insert(
            role,
            BucketSpec {
                name,
                continent: continent.clone(),
                region: region.clone(),
            },
        );
    };
    if let Some(b) = d.buckets {
        for (role, given) in [(BucketRole::Input, b.input), (BucketRole::Output, b.output)] {
            if let Some(n) = given {
                if let Err(m) = names::check_bucket_name(&n.value, provider) {
                    ck.at(loc(n.referenced), m, None);
                }
                bucket(ck, role, n.value, loc(n.referenced));
            }
        }
        if b.checkpoint == Some(true) {
            if let Err(m) = names::check_checkpoint_bucket(&id.value, provider) {
                ck.at(
                    id_at,
                    m,
                    Some("rename the deployment, or remove `checkpoint: true`".into()),
                );
            }
            bucket(ck, BucketRole::Checkpoint, id.value.clone(), id_at);
        }
    }
    let interval = d.sync_interval.as_ref().or(defaults.sync_interval.as_ref());
    let sync_interval_secs = match interval {
        Some(i) => match i.value.seconds() {
            Ok(0) => {
                ck.at(loc(i.referenced), "sync_interval must be at least 1s", None);
                60
            }
            Ok(s) => s,
            Err(m) => {
                ck.at(loc(i.referenced), format!("sync_interval {m}"), None);
                60
            }
        },
        None => 60,
    };
    // 0s is allowed: stop as soon as the job has ended and its output is verified.
    let idle_shutdown_secs = d
        .idle_shutdown
        .as_ref()
        .or(defaults.idle_shutdown.as_ref())
        .and_then(|i| match i.value.seconds() {
            Ok(s) => Some(s),
            Err(m) => {
                ck.at(loc(i.referenced), format!("idle_shutdown {m}"), None);
                None
            }
        });
    let check = check_settings(
        ck,
        d.connectivity_check
            .as_ref()
            .or(defaults.connectivity_check.as_ref()),
    );
    if ck.errors() > errors_before {
        return None;
    }
    Some(DeploymentSpec {
        id: id.value.clone(),
        provider: name.to_owned(),
        project: project.map(String::from),
        region,
        continent,
        vm,
        container: container?,
        buckets,
        sync_interval_secs,
        idle_shutdown_secs,
        check,
    })
}

/// The deployment's region and its continent, as its provider declares them.
fn region_of(
    ck: &mut Checker,
    provider: &dyn Declaration,
    d: &RawDeployment,
    defaults: &RawDefaults,
    id: &S<String>,
) -> (String, String) {
    let name = provider.name();
    let given = d.region.as_ref().or(defaults.region.as_ref());
    match provider.regions() {
        Regions::None { why } => {
            // `defaults.region` does not apply to it; its own `region:` is a mistake.
            if let Some(r) = &d.region {
                ck.at(
                    loc(r.referenced),
                    format!("provider {name} takes no region: {why}"),
                    Some("remove `region:` from this deployment".into()),
                );
            }
            (name.to_owned(), name.to_owned())
        }
        Regions::Own => match given {
            None => (name.to_owned(), name.to_owned()),
            Some(r) if r.value == name => (name.to_owned(), name.to_owned()),
            Some(r) => match ck.registry.continent_anywhere(&r.value) {
                Some((_, c)) => (r.value.clone(), c.to_owned()),
                None => {
                    let mut all = vec![name];
                    all.extend(ck.registry.all_regions());
                    ck.at(
                        loc(r.referenced),
                        format!(
                            "unknown region '{}' for provider {name}",
                            anycloud_provider::diagnostic::clip(&r.value)
                        ),
                        did_you_mean(suggest(&r.value, all)),
                    );
                    (r.value.clone(), String::new())
                }
            },
        },
        table @ Regions::Table(_) => match given {
            Some(r) => match table.continent(&r.value) {
                Some(c) => (r.value.clone(), c.to_owned()),
                None => {
                    let help = match ck.registry.continent_anywhere(&r.value) {
                        Some((cloud, c)) => Some(format!(
                            "'{}' is a {cloud} region; {name}'s regions in continent '{c}' are: {}",
                            r.value,
                            table.of_continent(c).join(", ")
                        )),
                        None => did_you_mean(suggest(&r.value, table.all())),
                    };
                    ck.at(
                        loc(r.referenced),
                        format!(
                            "unknown region '{}' for provider {name}",
                            anycloud_provider::diagnostic::clip(&r.value)
                        ),
                        help,
                    );
                    (r.value.clone(), String::new())
                }
            },
            None => {
                ck.at(
                    loc(id.referenced),
                    format!(
                        "deployment '{}' needs a region for provider {name}",
                        id.value
                    ),
                    None,
                );
                (String::new(), String::new())
            }
        },
    }
}

/// `vm.regions`: where the VM may move when there is no capacity for it, each a region of
/// the provider's in the deployment's continent (the egress rule: data never crosses one).
fn vm_regions(
    ck: &mut Checker,
    provider: &dyn Declaration,
    listed: &Doc,
    continent: &str,
) -> Vec<String> {
    let Value::Seq(items) = &listed.value else {
        ck.at(listed.at, "vm.regions must be a list of regions", None);
        return Vec::new();
    };
    let table = provider.regions();
    let mut out = Vec::new();
    for item in items {
        let Some(region) = ck.checks.string(item, "vm.regions") else {
            continue;
        };
        match table.continent(&region) {
            Some(c) if c == continent => {
                if !out.contains(&region) {
                    out.push(region);
                }
            }
            Some(c) => ck.at(
                item.at,
                format!(
                    "vm.regions: '{region}' is in continent '{c}', not the deployment's '{continent}': a VM never moves out of its continent"
                ),
                Some(format!(
                    "{}'s regions in continent '{continent}' are: {}",
                    provider.name(),
                    table.of_continent(continent).join(", ")
                )),
            ),
            None => {
                let help = did_you_mean(suggest(&region, table.of_continent(continent)))
                    .or_else(|| {
                        Some(format!(
                            "{}'s regions in continent '{continent}' are: {}",
                            provider.name(),
                            table.of_continent(continent).join(", ")
                        ))
                    });
                ck.at(
                    item.at,
                    format!(
                        "unknown region '{}' in vm.regions for provider {}",
                        anycloud_provider::diagnostic::clip(&region),
                        provider.name()
                    ),
                    help,
                )
            }
        }
    }
    out
}

/// `vm:` with only the keys the provider knows: another provider's key is named as such,
/// a misspelt one gets a suggestion.
fn vm_of(ck: &mut Checker, provider: &dyn Declaration, vm: Option<Doc>) -> Option<Doc> {
    let vm = vm?;
    if vm.value == Value::Null {
        return None;
    }
    let Value::Map(entries) = &vm.value else {
        ck.at(vm.at, "vm must be a mapping", None);
        return None;
    };
    let known = provider.vm_keys();
    for (k, v) in entries {
        if known.contains(&k.name.as_str()) {
            continue;
        }
        let owners = ck.registry.vm_key_owners(&k.name);
        if owners.is_empty() {
            ck.at(
                k.at,
                format!("unknown key '{}' in vm", k.name),
                did_you_mean(suggest(&k.name, known.iter().copied()))
                    .or_else(|| Some(format!("expected one of: {}", known.join(", ")))),
            );
        } else {
            let plural = if owners.len() > 1 { "s" } else { "" };
            ck.at(
                v.at,
                format!(
                    "vm.{} has no meaning for provider {}",
                    k.name,
                    provider.name()
                ),
                Some(format!(
                    "vm.{} is only for provider{plural} {}",
                    k.name,
                    owners.join(", ")
                )),
            );
        }
    }
    Some(super::load::only_known(&vm, known))
}

fn check_settings(ck: &mut Checker, check: Option<&RawCheck>) -> ConnectivityCheck {
    let defaults = ConnectivityCheck::default();
    let retries = check
        .and_then(|c| c.retries.as_ref())
        .map(|r| r.value)
        .unwrap_or(defaults.retries);
    let retries_sleep_secs = match check.and_then(|c| c.retries_sleep.as_ref()) {
        Some(s) => s.value.seconds().unwrap_or_else(|m| {
            ck.at(loc(s.referenced), format!("retries_sleep {m}"), None);
            defaults.retries_sleep_secs
        }),
        None => defaults.retries_sleep_secs,
    };
    ConnectivityCheck {
        retries,
        retries_sleep_secs,
    }
}

fn check_container(ck: &mut Checker, c: S<RawContainer>) -> Option<ContainerSpec> {
    let at = loc(c.referenced);
    let c = c.value;
    let Some(image) = c.image else {
        ck.at(at, "the container needs an `image:`", None);
        return None;
    };
    let img = &image.value;
    if img.is_empty()
        || img.chars().any(|ch| ch.is_whitespace() || ch.is_control())
        || img.starts_with('-')
    {
        ck.at(
            loc(image.referenced),
            format!("image '{img}' is not a valid image reference"),
            Some("e.g. ghcr.io/acme/train:latest".into()),
        );
    }
    let mut command = Vec::new();
    let words = match c.command {
        None => Vec::new(),
        Some(S {
            value: RawCommand::Words(words),
            ..
        }) => words,
        Some(S {
            value: RawCommand::Line(line),
            referenced,
            ..
        }) => {
            ck.at(
                loc(referenced),
                "`command:` must be a list of words, not one string",
                Some(format!(
                    "no shell splits it; write each word as an item: command: {}",
                    list_form(&line)
                )),
            );
            Vec::new()
        }
    };
    for word in words {
        if word.value.contains('\0') {
            ck.at(
                loc(word.referenced),
                "a command word cannot contain a NUL byte",
                None,
            );
        }
        command.push(word.value);
    }
    // Collected rather than inserted one by one: a map built whole packs its nodes full,
    // and a sweep holds a thousand of these maps (benches/plan_scale.rs).
    let mut env = Vec::new();
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
                loc(k.referenced),
                format!(
                    "environment variable name '{}' must match [A-Za-z_][A-Za-z0-9_]*",
                    k.value
                ),
                None,
            );
        }
        if v.value.contains('\0') {
            ck.at(
                loc(v.referenced),
                "an environment value cannot contain a NUL byte",
                None,
            );
        }
        env.push((k.value, v.value));
    }
    let env: BTreeMap<String, String> = env.into_iter().collect();
    if let Some(shm) = &c.shm_size {
        if let Err(why) = check_size(&shm.value) {
            ck.at(
                loc(shm.referenced),
                format!("shm_size '{}' is not a size: {why}", shm.value),
                Some("a size like 8g, 512m or 1073741824 (bytes)".into()),
            );
        }
    }
    let mut gpus = None;
    if let Some(g) = &c.gpus {
        match docker_gpus(&g.value) {
            Ok(value) => gpus = Some(value),
            Err(why) => ck.at(
                loc(g.referenced),
                format!("gpus '{}' {why}", g.value),
                Some("all, a count (e.g. 2), count=N, or device=0,1 (indexes or GPU UUIDs)".into()),
            ),
        }
    }
    let mut restart = Restart::Never;
    if let Some(r) = &c.restart {
        match Restart::parse(&r.value) {
            Some(parsed) => restart = parsed,
            None => ck.at(
                loc(r.referenced),
                format!("restart '{}' is not a restart policy", r.value),
                Some("never (the default: a finished or failed job stays as it ended), on-failure, on-failure:N (N from 1 to 1000), or always (a service)".into()),
            ),
        }
    }
    Some(ContainerSpec {
        image: image.value,
        command,
        env,
        gpus,
        shm_size: c.shm_size.map(|s| s.value),
        restart,
    })
}

/// A one-string command as the list it should be: split at whitespace, each word quoted
/// (a suggestion to read, so quotes inside it are the user's to settle).
fn list_form(line: &str) -> String {
    let words: Vec<String> = line
        .split_whitespace()
        .map(|w| serde_json::to_string(w).expect("a string serialises"))
        .collect();
    format!("[{}]", words.join(", "))
}

/// A size as `docker run --shm-size` reads one: a number, then at most one unit of
/// b, k, m, g (any case, optionally followed by b).
fn check_size(size: &str) -> Result<(), &'static str> {
    let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = size[digits.len()..].to_ascii_lowercase();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err("it is not a whole number with a unit");
    }
    if !["", "b", "k", "kb", "m", "mb", "g", "gb"].contains(&unit.as_str()) {
        return Err("it has an unknown unit (use b, k, m or g)");
    }
    if digits.parse::<u64>().map_or(true, |n| n == 0) {
        return Err("it must be more than zero");
    }
    Ok(())
}

/// The value `docker run --gpus` is given for a config's `gpus`: `all`, a count, `count=N`
/// or `device=A,B` (a device list quoted as Docker's CSV parsing needs).
fn docker_gpus(gpus: &str) -> Result<String, &'static str> {
    let count = |n: &str| n.parse::<u32>().is_ok_and(|n| n > 0);
    if gpus == "all" || count(gpus) {
        return Ok(gpus.to_owned());
    }
    if let Some(n) = gpus.strip_prefix("count=") {
        return if n == "all" || count(n) {
            Ok(gpus.to_owned())
        } else {
            Err("has a count that is not a positive number or all")
        };
    }
    if let Some(list) = gpus.strip_prefix("device=") {
        let device =
            |d: &str| !d.is_empty() && d.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        return if list.split(',').all(device) {
            Ok(if list.contains(',') {
                format!("\"{gpus}\"")
            } else {
                gpus.to_owned()
            })
        } else {
            Err("has a device list that is not indexes or GPU UUIDs separated by commas")
        };
    }
    Err("is not a GPU request Docker understands")
}

#[cfg(test)]
mod gpu_tests {
    use super::*;

    #[test]
    fn shm_sizes_are_docker_sizes() {
        for good in ["8g", "512m", "1073741824", "64MB", "2G", "100k"] {
            assert_eq!(check_size(good), Ok(()), "{good}");
        }
        for bad in ["8gggg", "", "g", "1.5g", "-1g", "8t", "0", "8 g"] {
            assert!(check_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gpu_requests_become_what_docker_reads() {
        assert_eq!(docker_gpus("all").unwrap(), "all");
        assert_eq!(docker_gpus("2").unwrap(), "2");
        assert_eq!(docker_gpus("count=4").unwrap(), "count=4");
        assert_eq!(docker_gpus("device=0").unwrap(), "device=0");
        assert_eq!(docker_gpus("device=0,1").unwrap(), "\"device=0,1\"");
        for bad in [
            "yes",
            "0",
            "count=",
            "count=x",
            "device=",
            "device=0;rm",
            "all,1",
        ] {
            assert!(docker_gpus(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod checkpoint_tests {
    use std::path::Path;

    use crate::registry::Providers;

    fn load(text: &str) -> Result<super::super::Config, Vec<anycloud_provider::Diagnostic>> {
        let providers = Providers::builtin(Path::new("/nonexistent/keys"));
        super::super::parse(
            "anycloud.yaml",
            text,
            Path::new("/"),
            "sha256:t",
            &providers,
        )
    }

    #[test]
    fn a_deployment_without_a_checkpoint_is_not_held_to_the_bucket_rules() {
        let without = "deployments:\n  ab:\n    container: { image: x }\n";
        assert!(load(without).is_ok(), "{:?}", load(without).err());
        let with =
            "deployments:\n  ab:\n    container: { image: x }\n    buckets: { checkpoint: true }\n";
        let errors = load(with).expect_err("a 2-character checkpoint bucket");
        assert_eq!((errors[0].line, errors[0].column), (2, 3));
        assert!(errors[0].message.contains("2 characters"), "{errors:?}");
    }
}
