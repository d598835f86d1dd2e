//! Sweeps: a deployment with `matrix:` becomes one deployment per combination of its axes'
//! values, as a GitHub Actions matrix becomes one job per combination.
//!
//! ```yaml
//! deployments:
//!   train:
//!     matrix: { lr: [0.1, 0.01], seed: [1, 2, 3] }
//!     container:
//!       image: ghcr.io/acme/train:latest
//!       command: [python, train.py, --lr, "${{ matrix.lr }}", --seed, "${{ matrix.seed }}"]
//!       env: { SEED: "${{ matrix.seed }}" }
//! ```
//!
//! Each member's id is the key followed by every axis and its value (`train-lr-0-01-seed-2`),
//! so the same config gives the same ids, and a value added to an axis adds members without
//! renaming any existing one (their state addresses stay where they are). `${{ matrix.NAME }}`
//! is GitHub's spelling and cannot be mistaken for a shell's `$VAR` or `${VAR}` in a command.
//! After expansion a member is an ordinary deployment: the checks, the graph and the state
//! know nothing of sweeps; only the plan's summary groups them ([`Sweep`]).

use std::collections::BTreeMap;

use anycloud_provider::doc::{Doc, Value};
use anycloud_provider::Loc;
use serde::{Deserialize, Serialize};

use super::raw::{loc, RawDeployment, RawDoc, S};
use super::Checker;

/// The most deployments one matrix may make: more is almost surely a mistake in an axis,
/// and each member is a VM to pay for.
pub const MAX_MEMBERS: usize = 256;

/// A sweep as the plan reports it: which deployments one `matrix:` made, and from which values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    /// The deployment key that carries the `matrix:`.
    pub name: String,
    /// In the order written.
    pub axes: Vec<String>,
    /// In the order of the combinations (first axis slowest).
    pub members: Vec<SweepMember>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepMember {
    pub id: String,
    /// Each axis's value for this member, as substituted.
    pub values: BTreeMap<String, String>,
}

/// A deployment to check: written by hand, or a member of the sweep at that index.
pub(super) struct Expanded {
    pub id: S<String>,
    pub dep: S<RawDeployment>,
    pub sweep: Option<usize>,
}

/// One axis as written: its name and each value's text and location.
struct Axis {
    name: String,
    values: Vec<(String, Loc)>,
}

/// Every deployment of `deployments:`, each sweep expanded into its members; problems are
/// reported to `ck` and their deployments left out.
pub(super) fn expand_all(
    ck: &mut Checker,
    entries: Vec<(S<String>, S<RawDeployment>)>,
) -> (Vec<Expanded>, Vec<Sweep>) {
    let mut out = Vec::new();
    let mut sweeps = Vec::new();
    for (id, mut dep) in entries {
        match dep.value.matrix.take() {
            None => {
                report_placeholders(ck, &dep.value, &id.value, None);
                out.push(Expanded {
                    id,
                    dep,
                    sweep: None,
                });
            }
            Some(matrix) => {
                let Some(axes) = axes_of(ck, RawDoc::located(matrix), &id.value) else {
                    continue;
                };
                let names: Vec<&str> = axes.iter().map(|a| a.name.as_str()).collect();
                if report_placeholders(ck, &dep.value, &id.value, Some(&names)) {
                    continue;
                }
                let index = sweeps.len();
                let mut sweep = Sweep {
                    name: id.value.clone(),
                    axes: axes.iter().map(|a| a.name.clone()).collect(),
                    members: Vec::new(),
                };
                for combination in combinations(&axes) {
                    let values: BTreeMap<String, String> = axes
                        .iter()
                        .zip(&combination)
                        .map(|(a, v)| (a.name.clone(), v.clone()))
                        .collect();
                    let member_id = member_id(&id.value, &axes, &combination);
                    out.push(Expanded {
                        id: S {
                            value: member_id.clone(),
                            ..id.clone()
                        },
                        dep: S {
                            value: substituted(&dep.value, &values),
                            ..dep.clone()
                        },
                        sweep: Some(index),
                    });
                    sweep.members.push(SweepMember {
                        id: member_id,
                        values,
                    });
                }
                sweeps.push(sweep);
            }
        }
    }
    report_taken_ids(ck, &out, &sweeps);
    (out, sweeps)
}

/// The axes of a `matrix:`, each checked; `None` (reported) when the matrix cannot expand.
fn axes_of(ck: &mut Checker, matrix: Doc, key: &str) -> Option<Vec<Axis>> {
    let Value::Map(entries) = matrix.value else {
        ck.at(
            matrix.at,
            format!("the matrix of '{key}' must be a mapping of axes to lists of values"),
            Some("e.g. matrix: { lr: [0.1, 0.01], seed: [1, 2, 3] }".into()),
        );
        return None;
    };
    if entries.is_empty() {
        ck.at(
            matrix.at,
            format!("the matrix of '{key}' has no axes"),
            Some("e.g. matrix: { lr: [0.1, 0.01], seed: [1, 2, 3] }".into()),
        );
        return None;
    }
    let errors = ck.errors();
    let mut axes = Vec::new();
    for (name, list) in entries {
        if !valid_axis_name(&name.name) {
            ck.at(
                name.at,
                format!(
                    "matrix axis '{}' must be letters, digits, '_' and '-', starting with a letter",
                    name.name
                ),
                None,
            );
            continue;
        }
        let Value::Seq(items) = list.value else {
            ck.at(
                list.at,
                format!("matrix axis '{}' must be a list of values", name.name),
                Some(format!("e.g. {}: [1, 2, 3]", name.name)),
            );
            continue;
        };
        if items.is_empty() {
            ck.at(
                list.at,
                format!(
                    "matrix axis '{}' is empty; it would make no deployments",
                    name.name
                ),
                Some("give it at least one value, or remove the axis".into()),
            );
            continue;
        }
        let mut values: Vec<(String, Loc)> = Vec::new();
        for item in items {
            let Some(text) = scalar_text(&item.value) else {
                ck.at(
                    item.at,
                    format!(
                        "a value of matrix axis '{}' must be a string, a number or a boolean",
                        name.name
                    ),
                    Some("a list or a mapping has no single value to substitute; quote it to use it as text".into()),
                );
                continue;
            };
            let part = id_part(&text);
            if part.is_empty() {
                ck.at(
                    item.at,
                    format!(
                        "matrix value '{text}' of axis '{}' has no letter or digit to name its deployment by",
                        name.name
                    ),
                    None,
                );
            } else if let Some((earlier, _)) = values.iter().find(|(v, _)| id_part(v) == part) {
                ck.at(
                    item.at,
                    format!(
                        "matrix values '{earlier}' and '{text}' of axis '{}' give the same deployment id part '{part}'",
                        name.name
                    ),
                    Some("each value of an axis must differ in its letters or digits (ids keep only [a-z0-9-])".into()),
                );
            }
            values.push((text, item.at));
        }
        axes.push(Axis {
            name: name.name,
            values,
        });
    }
    if ck.errors() > errors {
        return None;
    }
    let members = axes
        .iter()
        .try_fold(1usize, |n, a| n.checked_mul(a.values.len()));
    if members.is_none_or(|n| n > MAX_MEMBERS) {
        let sizes: Vec<String> = axes
            .iter()
            .map(|a| format!("{} {}", a.name, a.values.len()))
            .collect();
        ck.at(
            matrix.at,
            format!(
                "the matrix of '{key}' makes {} deployments ({}); at most {MAX_MEMBERS} are allowed",
                members.map_or_else(|| "too many".to_owned(), |n| n.to_string()),
                sizes.join(" × ")
            ),
            Some("split the sweep into several deployments with smaller matrices".into()),
        );
        return None;
    }
    Some(axes)
}

fn valid_axis_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A scalar's text as it is substituted. YAML has already read numbers: `1e-3` is `0.001`
/// (quote a value to keep it as written).
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Seq(_) | Value::Map(_) => None,
    }
}

/// A value as part of a deployment id: lowercase letters and digits, every other run of
/// characters one '-' (`0.01` → `0-01`, `ResNet_50` → `resnet-50`).
pub fn id_part(text: &str) -> String {
    let mut part = String::with_capacity(text.len());
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            part.push(c);
        } else if !part.is_empty() && !part.ends_with('-') {
            part.push('-');
        }
    }
    part.trim_end_matches('-').to_owned()
}

/// `key-axis-value-axis-value…`: derived from the values alone, so adding a value (or
/// reordering an axis's values) never renames an existing member.
fn member_id(key: &str, axes: &[Axis], values: &[String]) -> String {
    let mut id = key.to_owned();
    for (axis, value) in axes.iter().zip(values) {
        id.push('-');
        id.push_str(&id_part(&axis.name));
        id.push('-');
        id.push_str(&id_part(value));
    }
    id
}

/// Every combination of the axes' values, first axis slowest.
fn combinations(axes: &[Axis]) -> Vec<Vec<String>> {
    let mut all: Vec<Vec<String>> = vec![vec![]];
    for axis in axes {
        all = all
            .into_iter()
            .flat_map(|prefix| {
                axis.values.iter().map(move |(v, _)| {
                    let mut next = prefix.clone();
                    next.push(v.clone());
                    next
                })
            })
            .collect();
    }
    all
}

/// The deployment with every `${{ matrix.NAME }}` of its image, command and environment
/// values replaced (references were checked before: none is unknown).
fn substituted(dep: &RawDeployment, values: &BTreeMap<String, String>) -> RawDeployment {
    let mut dep = dep.clone();
    let sub = |s: &mut S<String>| {
        if let Ok(Some(text)) = substitute(&s.value, &mut |name| values.get(name).cloned()) {
            s.value = text;
        }
    };
    if let Some(c) = dep.container.as_mut() {
        let c = &mut c.value;
        if let Some(image) = c.image.as_mut() {
            sub(image);
        }
        if let Some(command) = c.command.as_mut() {
            command.value.words_mut().iter_mut().for_each(sub);
        }
        if let Some(env) = c.env.as_mut() {
            env.0.iter_mut().for_each(|(_, v)| sub(v));
        }
    }
    dep
}

/// `text` with each `${{ matrix.NAME }}` replaced by `value(NAME)`; `None` when it has no
/// placeholder. The error names the first placeholder that is malformed or unknown.
fn substitute(
    text: &str,
    value: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<Option<String>, (String, Option<String>)> {
    if !text.contains("${{") {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let Some(end) = after.find("}}") else {
            return Err((
                format!(
                    "'{}' opens `${{{{` without closing it with `}}}}`",
                    clip(text)
                ),
                Some("write a matrix value as ${{ matrix.NAME }}".into()),
            ));
        };
        let inner = after[..end].trim();
        let Some(name) = inner.strip_prefix("matrix.") else {
            return Err((
                format!("`${{{{ {inner} }}}}` is not a matrix value"),
                Some("only ${{ matrix.NAME }} is substituted, NAME an axis of the deployment's `matrix:`".into()),
            ));
        };
        match value(name) {
            Some(v) => out.push_str(&v),
            None => {
                return Err((format!("`${{{{ matrix.{name} }}}}` names no axis"), None));
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

fn clip(text: &str) -> String {
    anycloud_provider::diagnostic::clip(text)
}

/// Reports every placeholder of `dep` that is malformed, names no axis of `axes` (no axis at
/// all for a deployment without `matrix:`), or sits where values are not substituted.
/// Returns whether it reported any.
fn report_placeholders(
    ck: &mut Checker,
    dep: &RawDeployment,
    key: &str,
    axes: Option<&[&str]>,
) -> bool {
    let errors = ck.errors();
    let mut substituted: Vec<&S<String>> = Vec::new();
    let mut elsewhere: Vec<(&str, &S<String>)> = Vec::new();
    if let Some(c) = &dep.container {
        let c = &c.value;
        substituted.extend(c.image.iter());
        if let Some(command) = &c.command {
            substituted.extend(command.value.words());
        }
        if let Some(env) = &c.env {
            substituted.extend(env.0.iter().map(|(_, v)| v));
            elsewhere.extend(
                env.0
                    .iter()
                    .map(|(k, _)| ("an environment variable's name", k)),
            );
        }
        for (what, s) in [
            ("container.gpus", &c.gpus),
            ("container.shm_size", &c.shm_size),
            ("container.restart", &c.restart),
        ] {
            elsewhere.extend(s.iter().map(|s| (what, s)));
        }
    }
    for (what, s) in [("provider", &dep.provider), ("region", &dep.region)] {
        elsewhere.extend(s.iter().map(|s| (what, s)));
    }
    if let Some(b) = &dep.buckets {
        for (what, s) in [("buckets.input", &b.input), ("buckets.output", &b.output)] {
            elsewhere.extend(s.iter().map(|s| (what, s)));
        }
    }
    for s in substituted {
        // Only whether each name is an axis matters here: the values come per member.
        let mut known = |name: &str| axes.is_some_and(|a| a.contains(&name)).then(String::new);
        if let Err((message, help)) = substitute(&s.value, &mut known) {
            let help = help.or_else(|| match axes {
                Some(a) => Some(format!("the axes of '{key}' are: {}", a.join(", "))),
                None => Some(format!(
                    "deployment '{key}' has no `matrix:`; add one to sweep over values"
                )),
            });
            ck.at(loc(s.referenced), message, help);
        }
    }
    for (what, s) in elsewhere {
        if s.value.contains("${{") {
            ck.at(
                loc(s.referenced),
                format!("{what} cannot use a matrix value"),
                Some("${{ matrix.NAME }} is substituted in container.image, container.command and container.env values only".into()),
            );
        }
    }
    if let Some(vm) = &dep.vm {
        let mut found = None;
        find_placeholder(&vm.value.0, loc(vm.referenced), &mut found);
        if let Some(at) = found {
            ck.at(
                at,
                "vm cannot use a matrix value",
                Some("${{ matrix.NAME }} is substituted in container.image, container.command and container.env values only".into()),
            );
        }
    }
    ck.errors() > errors
}

/// The first string of a located tree that holds a placeholder.
fn find_placeholder(v: &Value, at: Loc, found: &mut Option<Loc>) {
    if found.is_some() {
        return;
    }
    match v {
        Value::Str(s) if s.contains("${{") => *found = Some(at),
        Value::Seq(items) => items
            .iter()
            .for_each(|d| find_placeholder(&d.value, d.at, found)),
        Value::Map(entries) => entries
            .iter()
            .for_each(|(_, d)| find_placeholder(&d.value, d.at, found)),
        _ => {}
    }
}

/// An id two deployments would share: a member and a hand-written deployment, two sweeps'
/// members, or two members of one sweep whose values differ only in what ids leave out.
fn report_taken_ids(ck: &mut Checker, all: &[Expanded], sweeps: &[Sweep]) {
    let mut first: BTreeMap<&str, &Expanded> = BTreeMap::new();
    let describe = |e: &Expanded| match e.sweep {
        Some(i) => format!("a member of sweep '{}'", sweeps[i].name),
        None => "the deployment written".into(),
    };
    for e in all {
        let Some(earlier) = first.get(e.id.value.as_str()) else {
            first.insert(&e.id.value, e);
            continue;
        };
        let at = loc(e.id.referenced);
        let earlier_at = loc(earlier.id.referenced);
        ck.at(
            at,
            format!(
                "deployment id '{}' is taken twice: by {} at line {} and by {} here",
                e.id.value,
                describe(earlier),
                earlier_at.line,
                describe(e)
            ),
            Some("a sweep's member ids are its key, then each axis and value (train-lr-0-1-seed-1); rename one of them".into()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_id_parts_of_lowercase_letters_digits_and_single_dashes() {
        assert_eq!(id_part("0.01"), "0-01");
        assert_eq!(id_part("ResNet_50"), "resnet-50");
        assert_eq!(id_part("--a..b--"), "a-b");
        assert_eq!(id_part("1e-3"), "1e-3");
        assert_eq!(id_part("é"), "");
    }

    #[test]
    fn placeholders_are_replaced_and_bad_ones_named() {
        let mut v = |n: &str| (n == "lr").then(|| "0.1".to_owned());
        assert_eq!(
            substitute("--lr=${{ matrix.lr }}!", &mut v),
            Ok(Some("--lr=0.1!".into()))
        );
        assert_eq!(
            substitute("${{matrix.lr}}${{ matrix.lr }}", &mut v),
            Ok(Some("0.10.1".into()))
        );
        assert_eq!(substitute("$HOME ${HOME}", &mut v), Ok(None));
        assert!(substitute("${{ matrix.seed }}", &mut v)
            .unwrap_err()
            .0
            .contains("matrix.seed"));
        assert!(substitute("${{ env.X }}", &mut v)
            .unwrap_err()
            .0
            .contains("not a matrix value"));
        assert!(substitute("${{ matrix.lr", &mut v).is_err());
    }

    fn axis(name: &str, values: &[&str]) -> Axis {
        Axis {
            name: name.into(),
            values: values
                .iter()
                .map(|v| (v.to_string(), Loc::UNKNOWN))
                .collect(),
        }
    }

    #[test]
    fn combinations_run_first_axis_slowest_and_ids_name_every_axis() {
        let axes = [axis("lr", &["0.1", "0.01"]), axis("seed", &["1", "2"])];
        let ids: Vec<String> = combinations(&axes)
            .iter()
            .map(|c| member_id("train", &axes, c))
            .collect();
        assert_eq!(
            ids,
            [
                "train-lr-0-1-seed-1",
                "train-lr-0-1-seed-2",
                "train-lr-0-01-seed-1",
                "train-lr-0-01-seed-2"
            ]
        );
    }

    #[test]
    fn a_value_added_to_an_axis_renames_no_member() {
        let ids = |axes: &[Axis]| -> Vec<String> {
            combinations(axes)
                .iter()
                .map(|c| member_id("train", axes, c))
                .collect()
        };
        let before = ids(&[axis("lr", &["0.1", "0.01"]), axis("seed", &["1", "2"])]);
        let after = ids(&[axis("lr", &["0.1", "0.01"]), axis("seed", &["1", "2", "3"])]);
        for id in &before {
            assert!(after.contains(id), "{id} was renamed: {after:?}");
        }
        assert_eq!(after.len(), 6);
    }
}
