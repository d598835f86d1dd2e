//! How Google Cloud objects carry whose they are: the project and the lineage of the state
//! that made them (labels on buckets and instances; the description of service accounts and
//! firewall rules, which have no labels; the marker of a prefix). Whose an object is, is
//! decided by [`anycloud_provider::ownership`]: an object of another lineage, or of none, is
//! never adopted, changed or deleted.

pub use anycloud_provider::ownership::{Owner, Record};
use anycloud_provider::Result;
use serde_json::{json, Map, Value};

pub const LINEAGE: &str = "anycloud-lineage";
pub const PROJECT: &str = "anycloud-project";

/// A label value: at most 63 characters of `[a-z0-9_-]`.
pub fn label_value(text: &str) -> String {
    text.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '_') => c,
            _ => '_',
        })
        .take(63)
        .collect()
}

/// The labels of an object this state makes.
pub fn labels(lineage: &str, project: Option<&str>, extra: &[(&str, &str)]) -> Value {
    let mut l = Map::new();
    l.insert(LINEAGE.into(), json!(label_value(lineage)));
    if let Some(p) = project {
        l.insert(PROJECT.into(), json!(label_value(p)));
    }
    for (k, v) in extra {
        l.insert((*k).into(), json!(label_value(v)));
    }
    Value::Object(l)
}

/// The description of an object without labels: words people read, then `key=value` pairs.
pub fn description(what: &str, lineage: &str, project: Option<&str>) -> String {
    let mut d = format!("anycloud: {what}. {LINEAGE}={lineage}");
    if let Some(p) = project {
        d.push_str(&format!(" {PROJECT}={}", label_value(p)));
    }
    d
}

/// What carries the lineage, for messages: labels (buckets, instances, a prefix's marker),
/// or the description (service accounts and firewall rules).
pub const LABEL: &str = "label anycloud-lineage";
pub const DESCRIPTION: &str = "description entry anycloud-lineage";

/// Google makes an object with its labels or description in the one call that makes it, so
/// no record excuses a missing lineage.
fn of(found: Option<String>, project: Option<String>, lineage: &str) -> Owner {
    Owner::of(
        found.as_deref(),
        project.as_deref(),
        &label_value(lineage),
        Record::Nothing,
    )
}

/// From an object's labels (buckets, instances).
pub fn of_labels(object: &Value, lineage: &str) -> Owner {
    let get = |k: &str| {
        object
            .get("labels")
            .and_then(|l| l.get(k))
            .and_then(|v| v.as_str())
            .map(String::from)
    };
    of(get(LINEAGE), get(PROJECT), lineage)
}

/// From an object's description (service accounts, firewall rules).
pub fn of_description(object: &Value, lineage: &str) -> Owner {
    let text = object
        .get("description")
        .and_then(|d| d.as_str())
        .unwrap_or("");
    let get = |k: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
            .map(String::from)
    };
    of(get(LINEAGE), get(PROJECT), lineage)
}

/// Fails with a message naming the owner (and what to do) unless the object is ours;
/// `carrier` is [`LABEL`] or [`DESCRIPTION`].
pub fn must_be_ours(owner: &Owner, what: &str, carrier: &str, lineage: &str) -> Result<()> {
    owner.must_be_ours(what, carrier, &label_value(lineage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_descriptions_name_their_state() {
        let lineage = "6f1c2a9e-0000-4000-8000-00000000beef";
        let bucket = json!({"labels": labels(lineage, Some("Vision Team"), &[])});
        assert_eq!(bucket["labels"][PROJECT], "vision_team");
        assert_eq!(of_labels(&bucket, lineage), Owner::Ours);
        let theirs = of_labels(&bucket, "another");
        let err = must_be_ours(&theirs, "bucket x", LABEL, "another").unwrap_err();
        assert!(err.message.contains("project 'vision_team'"), "{err}");
        let account =
            json!({"description": description("the service account of train", lineage, Some("p"))});
        assert_eq!(of_description(&account, lineage), Owner::Ours);
        assert!(matches!(
            of_description(&account, "l-2"),
            Owner::AnotherState { .. }
        ));
        assert_eq!(of_description(&json!({}), lineage), Owner::Stranger);
        let err =
            must_be_ours(&Owner::Stranger, "service account x", DESCRIPTION, lineage).unwrap_err();
        assert!(
            err.message
                .contains("it carries no description entry anycloud-lineage"),
            "{err}"
        );
    }
}
