//! Every unknown key of a config in one run. serde stops at the first unknown key, so when
//! it finds one the file is read again as a located tree and each mapping anycloud itself
//! defines is checked against its struct's fields: serde's own list of them (through
//! serde-aux), so the structs stay the one place keys are declared. A provider's parts
//! (`providers.<name>`, a deployment's `vm:`) are checked by the provider, later.

use anycloud_provider::diagnostic::{did_you_mean, suggest};
use anycloud_provider::doc::Doc;
use anycloud_provider::Loc;
use serde_aux::serde_introspection::serde_introspect;

use super::raw::{
    RawBuckets, RawCheck, RawConfig, RawContainer, RawDefaults, RawDeployment, RawDoc, S,
};

/// An unknown key: where, the message, and the help (the nearest key, or all of them).
pub type Unknown = (Loc, String, Option<String>);

/// Every unknown key of `text`, in file order; empty where the text is not even a located
/// tree (the first error stands alone then).
pub fn unknown_keys(text: &str, options: serde_saphyr::Options) -> Vec<Unknown> {
    let Ok(tree) = serde_saphyr::from_str_with_options::<S<RawDoc>>(text, options) else {
        return vec![];
    };
    let top = RawDoc::located(tree);
    let mut found = Vec::new();
    check(&top, serde_introspect::<RawConfig>(), &mut found);
    let check_part = |doc: &Doc, found: &mut Vec<Unknown>| {
        if let Some(c) = doc.get("connectivity_check") {
            check(c, serde_introspect::<RawCheck>(), found);
        }
    };
    if let Some(defaults) = top.get("defaults") {
        check(defaults, serde_introspect::<RawDefaults>(), &mut found);
        check_part(defaults, &mut found);
    }
    for (_, d) in top.get("deployments").map(Doc::entries).unwrap_or_default() {
        check(d, serde_introspect::<RawDeployment>(), &mut found);
        check_part(d, &mut found);
        if let Some(c) = d.get("container") {
            check(c, serde_introspect::<RawContainer>(), &mut found);
        }
        if let Some(b) = d.get("buckets") {
            check(b, serde_introspect::<RawBuckets>(), &mut found);
        }
    }
    found.sort_by_key(|(at, _, _)| (at.line, at.column));
    found
}

fn check(doc: &Doc, fields: &'static [&'static str], found: &mut Vec<Unknown>) {
    for (key, _) in doc.entries() {
        if fields.contains(&key.name.as_str()) {
            continue;
        }
        let help = did_you_mean(suggest(&key.name, fields.iter().copied()))
            .or_else(|| Some(format!("expected one of: {}", fields.join(", "))));
        found.push((key.at, format!("unknown key '{}'", key.name), help));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unknown_key_is_found_with_the_nearest_known_one() {
        let text = "defaults: { provider: local, sync_intervall: 5s }\n\
                    deployments:\n\
                    \x20 a:\n\
                    \x20   contianer: { image: x }\n\
                    \x20 b:\n\
                    \x20   container: { image: x, comand: [a] }\n\
                    \x20   buckets: { outptu: o }\n\
                    \x20   vm: { anything: goes }\n";
        let found = unknown_keys(text, serde_saphyr::Options::default());
        let said: Vec<(u64, &str, Option<&str>)> = found
            .iter()
            .map(|(at, m, h)| (at.line, m.as_str(), h.as_deref()))
            .collect();
        assert_eq!(
            said,
            [
                (
                    1,
                    "unknown key 'sync_intervall'",
                    Some("did you mean 'sync_interval'?")
                ),
                (
                    4,
                    "unknown key 'contianer'",
                    Some("did you mean 'container'?")
                ),
                (6, "unknown key 'comand'", Some("did you mean 'command'?")),
                (7, "unknown key 'outptu'", Some("did you mean 'output'?")),
            ]
        );
    }
}
