//! Whose an object is. Everything anycloud makes carries the project and the lineage of the
//! state that made it; an object of another lineage (a second project with a deployment of
//! the same name, in the same account) is never adopted, changed or deleted.

use std::collections::BTreeMap;

use anycloud_provider::{ErrorCode, ProviderError};

pub const LINEAGE_TAG: &str = "anycloud:lineage";
pub const PROJECT_TAG: &str = "anycloud:project";

/// The tags that say an object is this state's.
pub fn tags(lineage: &str, project: Option<&str>) -> Vec<(&'static str, String)> {
    let mut tags = vec![(LINEAGE_TAG, lineage.to_owned())];
    if let Some(p) = project {
        tags.push((PROJECT_TAG, p.to_owned()));
    }
    tags
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// This state's, or made by an anycloud from before lineages were recorded.
    Ours,
    /// Another state's.
    Theirs {
        lineage: String,
        project: Option<String>,
    },
}

impl Ownership {
    /// From an AWS API's tag list (EC2's and IAM's shapes alike, as key/value pairs).
    pub fn of_pairs<'a>(
        pairs: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>,
        lineage: &str,
    ) -> Ownership {
        let tags: BTreeMap<String, String> = pairs
            .into_iter()
            .filter_map(|(k, v)| Some((k?.to_owned(), v.unwrap_or_default().to_owned())))
            .collect();
        Ownership::of(&tags, lineage)
    }

    pub fn of(tags: &BTreeMap<String, String>, lineage: &str) -> Ownership {
        match tags.get(LINEAGE_TAG) {
            Some(theirs) if theirs != lineage && !lineage.is_empty() => Ownership::Theirs {
                lineage: theirs.clone(),
                project: tags.get(PROJECT_TAG).cloned(),
            },
            _ => Ownership::Ours,
        }
    }

    /// On a delete: whether the object is another state's and so stays (which the progress
    /// display says, naming the owner). A record of this state that names another's object
    /// (a create refused for that reason) is thus forgotten without touching it.
    pub fn leaves(&self, what: &str) -> bool {
        match self {
            Ownership::Ours => false,
            Ownership::Theirs { .. } => {
                anycloud_provider::output::line(&format!(
                    "{what} is {}: left as it is",
                    self.owner()
                ));
                true
            }
        }
    }

    fn owner(&self) -> String {
        match self {
            Ownership::Ours => "this state's".into(),
            Ownership::Theirs { lineage, project } => format!(
                "another anycloud state's ({}lineage {lineage})",
                project
                    .as_deref()
                    .map(|p| format!("project '{p}', "))
                    .unwrap_or_default()
            ),
        }
    }

    /// Fails with a message naming the owner when the object is another state's.
    pub fn must_be_ours(&self, what: &str) -> Result<(), ProviderError> {
        match self {
            Ownership::Ours => Ok(()),
            Ownership::Theirs { lineage, .. } => Err(ProviderError::new(
                ErrorCode::Conflict,
                format!(
                    "{what} is {}: anycloud never adopts, changes or deletes another state's objects. Give this deployment another id, or manage it from that state{}",
                    self.owner(),
                    anycloud_provider::error::adopt_hint(lineage)
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_lineage_is_theirs_and_a_legacy_object_is_ours() {
        let theirs: BTreeMap<String, String> = [
            (LINEAGE_TAG.to_owned(), "l-1".to_owned()),
            (PROJECT_TAG.to_owned(), "first".to_owned()),
        ]
        .into();
        let err = Ownership::of(&theirs, "l-2")
            .must_be_ours("role anycloud-train")
            .unwrap_err();
        assert!(
            err.message.contains("project 'first', lineage l-1"),
            "{err}"
        );
        assert_eq!(Ownership::of(&theirs, "l-1"), Ownership::Ours);
        assert_eq!(Ownership::of(&BTreeMap::new(), "l-2"), Ownership::Ours);
    }
}
