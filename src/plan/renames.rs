//! A deployment that goes while another comes may be a rename: the new one starts from an
//! empty checkpoint, and the old one's goes with its deployment (or stays behind, where
//! buckets are kept). The plan says so, and how to carry the checkpoint over.

use std::collections::BTreeSet;

use super::{Action, Change};

const CHECKPOINT: &str = "bucket.checkpoint";

/// One warning per deployment whose checkpoint is left behind while another deployment's
/// checkpoint is made empty in the same plan.
pub fn rename_warnings(changes: &[Change]) -> Vec<String> {
    let deployment_of = |c: &Change| -> Option<String> {
        let rest = c.address.strip_prefix("deployment.")?;
        let (d, node) = rest.split_once('.')?;
        (node == CHECKPOINT).then(|| d.to_owned())
    };
    let new: BTreeSet<String> = changes
        .iter()
        .filter(|c| c.action == Action::Create && c.reason.is_none())
        .filter_map(deployment_of)
        .collect();
    if new.is_empty() {
        return vec![];
    }
    let came = new.iter().cloned().collect::<Vec<_>>().join(", ");
    let first_new = new.iter().next().expect("not empty");
    changes
        .iter()
        .filter(|c| c.action == Action::Delete)
        .filter_map(|c| {
            let gone = deployment_of(c)?;
            let bucket = c
                .before
                .as_ref()
                .and_then(|b| b.get("name"))
                .and_then(|v| v.as_str())
                .unwrap_or(&gone);
            let fate = if c.keep_on_destroy {
                format!("{gone}'s stays behind in bucket '{bucket}'")
            } else {
                format!("{gone}'s (bucket '{bucket}') is deleted with {gone}")
            };
            Some(format!(
                "deployment {gone} goes and {came} comes: if {first_new} is {gone} renamed, it starts from an empty checkpoint, and {fate}. To carry the checkpoint over, keep {gone} in the config for now, run `anycloud apply --target deployment.{first_new}.{CHECKPOINT}`, copy it with `anycloud bucket download {bucket} ./checkpoint-{gone}` and `anycloud bucket upload {first_new} ./checkpoint-{gone}`, then remove {gone} and apply."
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anycloud_provider::Kind;
    use serde_json::json;

    fn change(address: &str, action: Action, name: &str, keep: bool) -> Change {
        Change {
            address: address.into(),
            kind: Kind::Bucket,
            provider: "cloud".into(),
            action,
            reason: None,
            before: (action == Action::Delete).then(|| [("name".to_owned(), json!(name))].into()),
            after: None,
            private: None,
            keep_on_destroy: keep,
            after_unknown: vec![],
            replace_paths: vec![],
            dependencies: vec![],
            prior_dependencies: vec![],
        }
    }

    #[test]
    fn a_renamed_deployment_is_told_where_its_checkpoint_is() {
        let renamed = [
            change(
                "deployment.train.bucket.checkpoint",
                Action::Delete,
                "train",
                false,
            ),
            change(
                "deployment.train-v2.bucket.checkpoint",
                Action::Create,
                "",
                false,
            ),
        ];
        let w = rename_warnings(&renamed);
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("deployment train goes and train-v2 comes: if train-v2 is train renamed, it starts from an empty checkpoint, and train's (bucket 'train') is deleted with train."), "{w:?}");
        assert!(
            w[0].contains("anycloud bucket upload train-v2 ./checkpoint-train"),
            "{w:?}"
        );

        let kept = [
            change("deployment.a.bucket.checkpoint", Action::Delete, "a", true),
            change("deployment.b.bucket.checkpoint", Action::Create, "", true),
        ];
        assert!(rename_warnings(&kept)[0].contains("a's stays behind in bucket 'a'"));

        // A deployment removed with none added, or one added with none removed: no rename.
        assert!(rename_warnings(&renamed[..1]).is_empty());
        assert!(rename_warnings(&renamed[1..]).is_empty());
        // Outputs are kept anyway: only checkpoints start over.
        let outputs = [
            change(
                "deployment.train.bucket.output",
                Action::Delete,
                "results",
                true,
            ),
            change(
                "deployment.train-v2.bucket.checkpoint",
                Action::Create,
                "",
                false,
            ),
        ];
        assert!(rename_warnings(&outputs).is_empty());
    }
}
