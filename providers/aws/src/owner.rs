//! How AWS objects carry whose they are: the project and the lineage of the state that made
//! them, as tags. Whose an object is, is decided by [`anycloud_provider::ownership`]: an
//! object of another lineage, or of none (the user's own), is never adopted, changed or
//! deleted.

use std::collections::BTreeMap;

pub use anycloud_provider::ownership::{Owner, Record};
use anycloud_provider::Result;

pub const LINEAGE_TAG: &str = "anycloud:lineage";
pub const PROJECT_TAG: &str = "anycloud:project";

/// What carries the lineage, for messages.
const CARRIER: &str = "tag anycloud:lineage";

/// The tags that say an object is this state's.
pub fn tags(lineage: &str, project: Option<&str>) -> Vec<(&'static str, String)> {
    let mut tags = vec![(LINEAGE_TAG, lineage.to_owned())];
    if let Some(p) = project {
        tags.push((PROJECT_TAG, p.to_owned()));
    }
    tags
}

/// Whose an object with these tags is.
pub fn of(tags: &BTreeMap<String, String>, lineage: &str, record: Record) -> Owner {
    Owner::of(
        tags.get(LINEAGE_TAG).map(String::as_str),
        tags.get(PROJECT_TAG).map(String::as_str),
        lineage,
        record,
    )
}

/// From an AWS API's tag list (EC2's and IAM's shapes alike, as key/value pairs).
pub fn of_pairs<'a>(
    pairs: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>,
    lineage: &str,
    record: Record,
) -> Owner {
    let tags: BTreeMap<String, String> = pairs
        .into_iter()
        .filter_map(|(k, v)| Some((k?.to_owned(), v.unwrap_or_default().to_owned())))
        .collect();
    of(&tags, lineage, record)
}

/// Fails with a message naming the owner (and what to do) unless the object is ours.
pub fn must_be_ours(owner: &Owner, what: &str, lineage: &str) -> Result<()> {
    owner.must_be_ours(what, CARRIER, lineage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_read_into_the_one_decision() {
        let theirs: BTreeMap<String, String> = [
            (LINEAGE_TAG.to_owned(), "l-1".to_owned()),
            (PROJECT_TAG.to_owned(), "first".to_owned()),
        ]
        .into();
        let err = must_be_ours(
            &of(&theirs, "l-2", Record::Nothing),
            "role anycloud-train",
            "l-2",
        )
        .unwrap_err();
        assert!(
            err.message.contains("project 'first', lineage l-1"),
            "{err}"
        );
        assert_eq!(of(&theirs, "l-1", Record::Nothing), Owner::Ours);
        // Untagged: a stranger's (the user's own), unless a pending create made it.
        let untagged = BTreeMap::new();
        let err = must_be_ours(
            &of(&untagged, "l-2", Record::Nothing),
            "IAM role anycloud-train",
            "l-2",
        )
        .unwrap_err();
        assert!(
            err.message.contains(
                "IAM role anycloud-train is not anycloud's (it carries no tag anycloud:lineage)"
            ),
            "{err}"
        );
        assert_eq!(of(&untagged, "l-2", Record::PendingCreate), Owner::Ours);
        assert_eq!(
            of_pairs([(Some(LINEAGE_TAG), Some("l-2"))], "l-2", Record::Nothing),
            Owner::Ours
        );
    }
}
