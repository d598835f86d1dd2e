//! How Azure objects carry whose they are: the project and the lineage of the state that
//! made them, as tags on resources and metadata on blob containers. Whose an object is, is
//! decided by [`anycloud_provider::ownership`]: an object of another lineage, or of none,
//! is never adopted, changed or deleted.

pub use anycloud_provider::ownership::{Owner, Record};
use anycloud_provider::Result;
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

/// Whose an object with these tags (resources) or metadata (containers) is. Azure makes an
/// object with its tags in the one PUT that makes it, so no record excuses a missing tag.
fn of(labels: Option<&Value>, lineage_key: &str, project_key: &str, lineage: &str) -> Owner {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(|v| v.as_str());
    Owner::of(get(lineage_key), get(project_key), lineage, Record::Nothing)
}

pub fn of_resource(resource: &Value, lineage: &str) -> Owner {
    of(resource.get("tags"), LINEAGE_TAG, PROJECT_TAG, lineage)
}

pub fn of_container(container: &Value, lineage: &str) -> Owner {
    of(
        container.get("properties").and_then(|p| p.get("metadata")),
        LINEAGE_METADATA,
        PROJECT_METADATA,
        lineage,
    )
}

/// Fails with a message naming the owner (and what to do) unless the object is ours.
pub fn must_be_ours(owner: &Owner, what: &str, lineage: &str) -> Result<()> {
    owner.must_be_ours(what, &format!("tag {LINEAGE_TAG}"), lineage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_lineage_or_none_is_not_ours() {
        let theirs = json!({"tags": {LINEAGE_TAG: "l-1", PROJECT_TAG: "first"}});
        assert_eq!(of_resource(&theirs, "l-1"), Owner::Ours);
        let err = must_be_ours(
            &of_resource(&theirs, "l-2"),
            "identity anycloud-train",
            "l-2",
        )
        .unwrap_err();
        assert!(
            err.message.contains("project 'first', lineage l-1"),
            "{err}"
        );
        assert_eq!(of_resource(&json!({}), "l-2"), Owner::Stranger);
        assert!(must_be_ours(&Owner::Stranger, "x", "l-2").is_err());
        let container = json!({"properties": {"metadata": {LINEAGE_METADATA: "l-2"}}});
        assert_eq!(of_container(&container, "l-2"), Owner::Ours);
    }
}
