//! Every structural error of a file in one run. serde stops at the first value of the wrong
//! type, so three mistakes would take three runs; when the file is valid YAML (only its
//! shape is wrong) it is parsed again in parts — everything but the deployments, then each
//! deployment alone — and each part's first error is kept. A part is the file with every
//! other line blanked, so its errors have the file's own lines and columns.
//!
//! Only block-style `deployments:` (each id on a line of its own) is split; a flow mapping
//! keeps the first error alone. Within one part, the first error still hides the rest.

use serde::Deserialize;

use super::raw::{Entries, RawConfig, RawDeployment, RawDoc, S};
use super::yaml_limits::Limits;

/// The deployments alone, for a part holding one of them.
#[derive(Deserialize)]
struct OnlyDeployments {
    #[allow(dead_code)] // parsed for its errors
    deployments: Option<Entries<S<RawDeployment>>>,
}

/// The first error of each part of `text` (unknown keys left out: `unknown_keys` reports
/// those). Empty when the text is not valid YAML or its deployments cannot be split.
pub fn part_errors(text: &str, limits: &Limits) -> Vec<serde_saphyr::Error> {
    let Some(parts) = parts(text, limits) else {
        return vec![];
    };
    let mut errors = Vec::new();
    let head = blank_except(text, |line| !parts.deployments.contains(&line));
    if let Err(e) = serde_saphyr::from_str_with_options::<RawConfig>(&head, limits.options()) {
        errors.push(e);
    }
    for range in &parts.each {
        let one = blank_except(text, |line| {
            line == parts.deployments_key || range.contains(&line)
        });
        if let Err(e) =
            serde_saphyr::from_str_with_options::<OnlyDeployments>(&one, limits.options())
        {
            errors.push(e);
        }
    }
    errors.retain(|e| {
        let unknown_key = matches!(
            e.without_snippet(),
            serde_saphyr::Error::SerdeUnknownField { .. }
        );
        // An alias whose anchor is in another part: not the user's mistake.
        let message = e.to_string();
        let lost_anchor = message.contains("anchor") || message.contains("alias");
        !unknown_key && !lost_anchor
    });
    errors
}

/// Where the parts are, by 1-based line.
struct Parts {
    /// The line of the `deployments:` key.
    deployments_key: u64,
    /// The lines of all the deployments.
    deployments: std::ops::Range<u64>,
    /// The lines of each deployment.
    each: Vec<std::ops::Range<u64>>,
}

fn parts(text: &str, limits: &Limits) -> Option<Parts> {
    use anycloud_provider::doc::Value;
    let tree = serde_saphyr::from_str_with_options::<S<RawDoc>>(text, limits.options()).ok()?;
    let top = RawDoc::located(tree);
    let Value::Map(keys) = &top.value else {
        return None;
    };
    let (key, deployments) = keys.iter().find(|(k, _)| k.name == "deployments")?;
    let key_line = key.at.line;
    let lines = text.lines().count() as u64;
    // The deployments end where the next top-level key starts.
    let end = keys
        .iter()
        .map(|(k, _)| k.at.line)
        .filter(|l| *l > key_line)
        .min()
        .unwrap_or(lines + 1);
    let starts: Vec<u64> = deployments
        .entries()
        .iter()
        .map(|(k, _)| k.at.line)
        .collect();
    let block_style = !starts.is_empty()
        && starts.first().is_some_and(|l| *l > key_line)
        && starts.windows(2).all(|w| w[0] < w[1])
        && starts.last().is_some_and(|l| *l < end);
    if !block_style {
        return None;
    }
    let each = starts
        .iter()
        .enumerate()
        .map(|(i, start)| *start..starts.get(i + 1).copied().unwrap_or(end))
        .collect();
    Some(Parts {
        deployments_key: key_line,
        deployments: starts[0]..end,
        each,
    })
}

/// `text` with every line for which `keep` (1-based) is false made empty: lines and columns
/// stay where they were.
fn blank_except(text: &str, keep: impl Fn(u64) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        if keep(i as u64 + 1) {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_deployment_and_the_rest_report_their_own_first_error() {
        let text = "project: [acme]\n\
                    deployments:\n\
                    \x20 a:\n\
                    \x20   container: { image: x, env: [A=1] }\n\
                    \x20 b:\n\
                    \x20   container: { image: x }\n\
                    \x20 c:\n\
                    \x20   buckets: { checkpoint: maybe }\n\
                    defaults: { provider: local }\n";
        let lines: Vec<u64> = part_errors(text, &Limits::for_input(text.len()))
            .iter()
            .filter_map(|e| e.location().map(|l| l.line()))
            .collect();
        assert_eq!(lines, [1, 4, 8]);
    }

    #[test]
    fn flow_style_deployments_are_not_split() {
        let text = "deployments: { a: { container: 1 }, b: { container: 2 } }\n";
        assert!(part_errors(text, &Limits::for_input(text.len())).is_empty());
    }
}
