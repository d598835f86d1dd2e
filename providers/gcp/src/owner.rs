//! Whose an object is: everything anycloud makes on Google Cloud carries the project and the
//! lineage of the state that made it (labels on buckets and instances; the description of
//! service accounts and firewall rules, which have no labels; the marker of a prefix), and an
//! object of another lineage is never adopted, changed or deleted.

use anycloud_provider::{ErrorCode, ProviderError, Result};
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// This state made it.
    Us,
    /// Another anycloud state made it.
    State {
        lineage: String,
        project: Option<String>,
    },
    /// Not made by anycloud at all.
    Stranger,
}

impl Owner {
    fn from(lineage_found: Option<String>, project: Option<String>, lineage: &str) -> Owner {
        match lineage_found {
            Some(theirs) if theirs == label_value(lineage) => Owner::Us,
            Some(theirs) => Owner::State {
                lineage: theirs,
                project,
            },
            None => Owner::Stranger,
        }
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
        Owner::from(get(LINEAGE), get(PROJECT), lineage)
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
        Owner::from(get(LINEAGE), get(PROJECT), lineage)
    }

    fn described(&self) -> String {
        match self {
            Owner::Us => "this state's".into(),
            Owner::State { lineage, project } => format!(
                "another anycloud state's ({}lineage {lineage})",
                project
                    .as_deref()
                    .map(|p| format!("project '{p}', "))
                    .unwrap_or_default()
            ),
            Owner::Stranger => format!("not anycloud's (it carries no {LINEAGE})"),
        }
    }

    /// Fails with a message naming the owner unless the object is this state's.
    pub fn must_be_ours(&self, what: &str) -> Result<()> {
        match self {
            Owner::Us => Ok(()),
            _ => Err(ProviderError::new(
                ErrorCode::Conflict,
                format!(
                    "{what} is {}: anycloud never adopts, changes or deletes an object it did not make for this state. Give this deployment another id, or manage it from its owner{}",
                    self.described(),
                    match self {
                        Owner::State { lineage, .. } => anycloud_provider::error::adopt_hint(lineage),
                        _ => String::new(),
                    }
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_descriptions_name_their_state() {
        let lineage = "6f1c2a9e-0000-4000-8000-00000000beef";
        let bucket = json!({"labels": labels(lineage, Some("Vision Team"), &[])});
        assert_eq!(bucket["labels"][PROJECT], "vision_team");
        assert_eq!(Owner::of_labels(&bucket, lineage), Owner::Us);
        let theirs = Owner::of_labels(&bucket, "another");
        let err = theirs.must_be_ours("bucket x").unwrap_err();
        assert!(err.message.contains("project 'vision_team'"), "{err}");
        let account =
            json!({"description": description("the service account of train", lineage, Some("p"))});
        assert_eq!(Owner::of_description(&account, lineage), Owner::Us);
        assert!(matches!(
            Owner::of_description(&account, "l-2"),
            Owner::State { .. }
        ));
        assert_eq!(Owner::of_description(&json!({}), lineage), Owner::Stranger);
    }
}
