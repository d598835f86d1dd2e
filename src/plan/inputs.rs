//! The input a machine downloaded, against its bucket now. The refresh of a deployment's
//! `sync.input` reads `downloaded.changed` ("1 new file, 1 changed") where the bucket lists
//! otherwise than it did at the download; that is a note on the plan, not a change: a
//! running job keeps the input it started with, and a new run of it syncs the input first.

use std::collections::BTreeMap;

use anycloud_provider::Attrs;

use super::{Action, Change};

/// One note per deployment whose input bucket changed since its machine downloaded it.
pub fn input_notes(current: &BTreeMap<String, Option<Attrs>>, changes: &[Change]) -> Vec<String> {
    let mut notes = vec![];
    for (address, attrs) in current {
        let Some(deployment) = address
            .strip_prefix("deployment.")
            .and_then(|a| a.strip_suffix(".sync.input"))
        else {
            continue;
        };
        let Some(changed) = attrs
            .as_ref()
            .and_then(|a| a.get("downloaded"))
            .and_then(|d| d.get("changed"))
            .and_then(|c| c.as_str())
        else {
            continue;
        };
        let container = format!("deployment.{deployment}.container");
        let rerun = changes.iter().any(|c| {
            c.address == container && matches!(c.action, Action::Create | Action::Replace)
        });
        notes.push(if rerun {
            format!("{address}: input changed since download: {changed}. The new run of its job in this plan syncs it first.")
        } else {
            format!("{address}: input changed since download: {changed}. A running job keeps the input it started with; a new run syncs it first: `anycloud apply -replace {container}`.")
        });
    }
    notes
}

#[cfg(test)]
mod tests {
    use anycloud_provider::Kind;
    use serde_json::json;

    use super::*;

    fn read(downloaded: serde_json::Value) -> BTreeMap<String, Option<Attrs>> {
        let attrs: Attrs = serde_json::from_value(json!({ "downloaded": downloaded })).unwrap();
        BTreeMap::from([
            ("deployment.a.sync.input".to_owned(), Some(attrs)),
            ("deployment.b.sync.input".to_owned(), None),
        ])
    }

    fn replace(address: &str) -> Change {
        Change {
            address: address.into(),
            kind: Kind::Container,
            provider: "local".into(),
            action: Action::Replace,
            reason: None,
            before: None,
            after: None,
            private: None,
            keep_on_destroy: false,
            after_unknown: vec![],
            replace_paths: vec![],
            dependencies: vec![],
            prior_dependencies: vec![],
        }
    }

    #[test]
    fn a_changed_input_is_a_note_naming_how_a_new_run_gets_it() {
        let changed = read(json!({"listing_sha256": "ab", "changed": "1 new file, 1 changed"}));
        assert_eq!(
            input_notes(&changed, &[]),
            ["deployment.a.sync.input: input changed since download: 1 new file, 1 changed. A running job keeps the input it started with; a new run syncs it first: `anycloud apply -replace deployment.a.container`."]
        );
        let notes = input_notes(&changed, &[replace("deployment.a.container")]);
        assert!(notes[0].ends_with("The new run of its job in this plan syncs it first."));
        assert!(input_notes(&read(json!({"listing_sha256": "ab"})), &[]).is_empty());
    }
}
