//! Whose an object is: everything anycloud makes on Azure carries the project and the
//! lineage of the state that made it (tags on resources, metadata on blob containers), and an
//! object of another lineage is never adopted, changed or deleted.

use anycloud_provider::{ErrorCode, ProviderError, Result};
use serde_json::{json, Map, Value};

/// Tag names: Azure allows `-` in tag names, and metadata names must be identifiers.
pub const LINEAGE_TAG: &str = "anycloud-lineage";
pub const PROJECT_TAG: &str = "anycloud-project";
pub const LINEAGE_METADATA: &str = "anycloud_lineage";
pub const PROJECT_METADATA: &str = "anycloud_project";

/// The tags of an object this state makes.
pub fn tags(lineage: &str, project: Option<&str>, extra: &[(&str, &str)]) -> Value {
    let mut t = Map::new();
    t.insert(LINEAGE_TAG.into(), json!(lineage));
    if let Some(p) = project {
        t.insert(PROJECT_TAG.into(), json!(p));
    }
    for (k, v) in extra {
        t.insert((*k).into(), json!(v));
    }
    Value::Object(t)
}

/// The metadata of a blob container this state makes.
pub fn metadata(lineage: &str, project: Option<&str>) -> Value {
    let mut m = Map::new();
    m.insert(LINEAGE_METADATA.into(), json!(lineage));
    if let Some(p) = project {
        m.insert(PROJECT_METADATA.into(), json!(p));
    }
    Value::Object(m)
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
    /// Not made by anycloud at all (no lineage).
    Stranger,
}

impl Owner {
    /// From the object's tags (resources) or metadata (containers).
    pub fn of(
        labels: Option<&Value>,
        lineage_key: &str,
        project_key: &str,
        lineage: &str,
    ) -> Owner {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(|v| v.as_str());
        match get(lineage_key) {
            Some(theirs) if theirs == lineage => Owner::Us,
            Some(theirs) => Owner::State {
                lineage: theirs.to_owned(),
                project: get(project_key).map(String::from),
            },
            None => Owner::Stranger,
        }
    }

    pub fn of_resource(resource: &Value, lineage: &str) -> Owner {
        Owner::of(resource.get("tags"), LINEAGE_TAG, PROJECT_TAG, lineage)
    }

    pub fn of_container(container: &Value, lineage: &str) -> Owner {
        Owner::of(
            container.get("properties").and_then(|p| p.get("metadata")),
            LINEAGE_METADATA,
            PROJECT_METADATA,
            lineage,
        )
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
            Owner::Stranger => "not anycloud's (it carries no anycloud-lineage tag)".into(),
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
    fn another_lineage_or_none_is_not_ours() {
        let theirs = json!({"tags": {LINEAGE_TAG: "l-1", PROJECT_TAG: "first"}});
        assert_eq!(Owner::of_resource(&theirs, "l-1"), Owner::Us);
        let err = Owner::of_resource(&theirs, "l-2")
            .must_be_ours("identity anycloud-train")
            .unwrap_err();
        assert!(
            err.message.contains("project 'first', lineage l-1"),
            "{err}"
        );
        assert_eq!(Owner::of_resource(&json!({}), "l-2"), Owner::Stranger);
        assert!(Owner::Stranger.must_be_ours("x").is_err());
    }
}
