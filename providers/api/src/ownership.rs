//! Whose a cloud object is, decided here once for every cloud. Everything anycloud makes
//! carries the lineage of the state that made it (and its project): a tag, a label, a
//! description or a marker, as each cloud allows. A cloud only reads that value off its
//! object and asks [`Owner::of`]; the rule is this:
//!
//! - the object carries this state's lineage: it is **ours**;
//! - it carries another lineage: it is **another state's**, never adopted, changed or
//!   deleted (`state adopt` makes a lost state's successor, which then carries its lineage);
//! - it carries none: it is a **stranger's** (the user's own, or made by hand), never adopted,
//!   changed or deleted either, with one exception: a create of this state that makes the
//!   object and tags it in two calls, cut short between them, leaves an untagged object that
//!   is ours. Such a create says so in its pending record ([`UntaggedCreates::made`]), and
//!   only a pending record that says so ([`Record::PendingCreate`]) excuses a missing tag. A
//!   pending record alone does not: a create refused because a stranger's object was in the
//!   way stays pending too, and must not take it over on the next run.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::error::{adopt_hint, ErrorCode, ProviderError, Result};
use crate::{Attrs, Target};

/// Whose an object is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// This state's.
    Ours,
    /// Another anycloud state's: the lineage (and project) it carries.
    AnotherState {
        lineage: String,
        project: Option<String>,
    },
    /// Not made by anycloud for any state: it carries no lineage.
    Stranger,
}

/// What this state records at the object's address, as far as ownership goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// Nothing (a create about to run for the first time), or a create that never reached
    /// the point of making the object.
    Nothing,
    /// A finished create: the object was tagged when it was made.
    Made,
    /// A create this state started and never finished, recorded as having made the object
    /// before it tagged it ([`UntaggedCreates::made`]).
    PendingCreate,
}

/// The attribute a create records (through [`crate::output::made`]) between making an object
/// and tagging it.
pub const MADE_UNTAGGED: &str = "made_untagged";

impl Record {
    /// From the attributes of the resource's record: a pending create's carry the mark when
    /// it made the object before it could tag it (a finished create's never do: the record
    /// is then what the create returned).
    pub fn of_attrs(attrs: &Attrs) -> Record {
        if attrs.get(MADE_UNTAGGED).and_then(|v| v.as_bool()) == Some(true) {
            Record::PendingCreate
        } else {
            Record::Nothing
        }
    }
}

impl Owner {
    /// The one decision. `found` is the lineage the object carries (`None` when it carries
    /// none), `project` the project it carries, `lineage` this state's (as the cloud writes
    /// it: a GCP label's form, say), `record` what this state records at its address.
    pub fn of(found: Option<&str>, project: Option<&str>, lineage: &str, record: Record) -> Owner {
        match found {
            Some(theirs) if theirs == lineage => Owner::Ours,
            Some(theirs) => Owner::AnotherState {
                lineage: theirs.to_owned(),
                project: project.map(String::from),
            },
            None if record == Record::PendingCreate => Owner::Ours,
            None => Owner::Stranger,
        }
    }

    pub fn ours(&self) -> bool {
        *self == Owner::Ours
    }

    /// Who it is, for messages: `this state's`, `another anycloud state's (…)`, `not
    /// anycloud's (…)`. `tag` names what would carry the lineage (`tag anycloud:lineage`).
    pub fn described(&self, tag: &str) -> String {
        match self {
            Owner::Ours => "this state's".into(),
            Owner::AnotherState { lineage, project } => format!(
                "another anycloud state's ({}lineage {lineage})",
                project
                    .as_deref()
                    .map(|p| format!("project '{p}', "))
                    .unwrap_or_default()
            ),
            Owner::Stranger => format!("not anycloud's (it carries no {tag})"),
        }
    }

    /// Fails with a message naming the owner and what to do, unless the object is ours.
    /// `what` names the object (`IAM role anycloud-train`), `tag` what would carry a lineage
    /// (`tag anycloud:lineage`), `lineage` this state's.
    pub fn must_be_ours(&self, what: &str, tag: &str, lineage: &str) -> Result<()> {
        let resolve = match self {
            Owner::Ours => return Ok(()),
            Owner::AnotherState { lineage, .. } => format!(
                "Give this deployment another id, or manage it from that state{}",
                adopt_hint(lineage)
            ),
            Owner::Stranger => format!(
                "Give this deployment another id, or remove or rename that object; if this state should take it over, set its {tag} to {lineage}"
            ),
        };
        Err(ProviderError::new(
            ErrorCode::Conflict,
            format!(
                "{what} is {}: anycloud never adopts, changes or deletes an object it did not make for this state. {resolve}",
                self.described(tag)
            ),
        ))
    }

    /// On a delete: whether the object is not ours and so stays, which the progress display
    /// says, naming the owner. A record of this state that names an object not ours (a
    /// create refused for that reason) is thus forgotten without touching it.
    pub fn leaves(&self, what: &str) -> bool {
        if self.ours() {
            return false;
        }
        crate::output::line(&format!(
            "{what} is {}: left as it is",
            self.described("lineage")
        ));
        true
    }
}

/// The creates of a provider that make an object and tag it in two calls, cut short between
/// them: recalled from the state's pending records ([`crate::Provider::recall`]) and
/// remembered for this process's own attempts (a retry after the tagging failed).
#[derive(Debug, Default)]
pub struct UntaggedCreates(Mutex<BTreeSet<String>>);

impl UntaggedCreates {
    fn key(t: &Target<'_>) -> String {
        format!("{}/{}", t.lineage, t.address)
    }

    /// Keeps the records (pending creates) that say their create made an untagged object,
    /// in place of what an earlier recall kept (this process's own creates recorded theirs).
    pub fn recall(&self, recorded: &[Target<'_>]) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = recorded
            .iter()
            .filter(|t| Record::of_attrs(t.attrs) == Record::PendingCreate)
            .map(Self::key)
            .collect();
    }

    /// Called by a create between making the object and tagging it: `attrs` (the target's,
    /// with the mark) are recorded at once, so a run cut short before the tag leaves a
    /// record that says the object is ours.
    pub fn made(&self, t: &Target<'_>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(Self::key(t));
        let mut attrs = t.attrs.clone();
        attrs.insert(MADE_UNTAGGED.into(), serde_json::Value::Bool(true));
        crate::output::made(&attrs);
    }

    /// What this state records of the target's object: a pending create that made it
    /// untagged (recalled, remembered, or in the target's own attributes, as a delete of
    /// such a record has them), or nothing that excuses a missing tag.
    pub fn record(&self, t: &Target<'_>) -> Record {
        let remembered = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&Self::key(t));
        if remembered {
            Record::PendingCreate
        } else {
            Record::of_attrs(t.attrs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    const TAG: &str = "tag anycloud:lineage";

    #[test]
    fn this_lineage_is_ours_whatever_the_record() {
        for record in [Record::Nothing, Record::Made, Record::PendingCreate] {
            assert_eq!(Owner::of(Some("l-1"), None, "l-1", record), Owner::Ours);
        }
    }

    #[test]
    fn another_lineage_is_another_states_whatever_the_record() {
        for record in [Record::Nothing, Record::Made, Record::PendingCreate] {
            let owner = Owner::of(Some("l-1"), Some("first"), "l-2", record);
            assert_eq!(
                owner,
                Owner::AnotherState {
                    lineage: "l-1".into(),
                    project: Some("first".into())
                }
            );
            let err = owner
                .must_be_ours("role anycloud-train", TAG, "l-2")
                .unwrap_err();
            assert_eq!(err.code, ErrorCode::Conflict);
            assert!(
                err.message.contains(
                    "role anycloud-train is another anycloud state's (project 'first', lineage l-1)"
                ),
                "{err}"
            );
            assert!(err.message.contains("anycloud state adopt l-1"), "{err}");
        }
        assert_eq!(
            Owner::of(Some("l-1"), None, "l-2", Record::Nothing).described(TAG),
            "another anycloud state's (lineage l-1)"
        );
    }

    #[test]
    fn no_lineage_is_a_strangers_unless_a_pending_create_made_it() {
        assert_eq!(
            Owner::of(None, None, "l-2", Record::Nothing),
            Owner::Stranger
        );
        // A record of a finished create does not make an untagged object ours: what has
        // this name now is not what this state made (or its tag was taken off by hand).
        assert_eq!(Owner::of(None, None, "l-2", Record::Made), Owner::Stranger);
        // A project without a lineage says nothing either.
        assert_eq!(
            Owner::of(None, Some("first"), "l-2", Record::Made),
            Owner::Stranger
        );
        assert_eq!(
            Owner::of(None, None, "l-2", Record::PendingCreate),
            Owner::Ours
        );
        let err = Owner::Stranger
            .must_be_ours("bucket 'train'", TAG, "l-2")
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Conflict);
        assert!(
            err.message.starts_with(
                "bucket 'train' is not anycloud's (it carries no tag anycloud:lineage)"
            ),
            "{err}"
        );
        assert!(
            err.message.contains("set its tag anycloud:lineage to l-2"),
            "{err}"
        );
        assert!(Owner::Ours.must_be_ours("x", TAG, "l-2").is_ok());
        assert!(!Owner::Ours.leaves("x"));
        assert!(Owner::Stranger.leaves("x"));
    }

    fn target<'a>(address: &'a str, attrs: &'a Attrs, lineage: &'a str) -> Target<'a> {
        Target {
            address,
            kind: Kind::Bucket,
            attrs,
            private: &serde_json::Value::Null,
            deps: &[],
            lineage,
        }
    }

    #[test]
    fn only_a_pending_create_that_says_it_made_the_object_excuses_its_tag() {
        let plain = Attrs::new();
        let mut marked = Attrs::new();
        marked.insert(MADE_UNTAGGED.into(), true.into());
        assert_eq!(Record::of_attrs(&plain), Record::Nothing);
        assert_eq!(Record::of_attrs(&marked), Record::PendingCreate);

        let creates = UntaggedCreates::default();
        // Recalled: only the marked record of this lineage counts.
        creates.recall(&[target("a", &marked, "l-1"), target("b", &plain, "l-1")]);
        assert_eq!(
            creates.record(&target("a", &plain, "l-1")),
            Record::PendingCreate
        );
        assert_eq!(creates.record(&target("b", &plain, "l-1")), Record::Nothing);
        assert_eq!(creates.record(&target("a", &plain, "l-2")), Record::Nothing);
        // A delete of a marked record carries the mark in its own attributes.
        assert_eq!(
            creates.record(&target("c", &marked, "l-1")),
            Record::PendingCreate
        );
        // Remembered for this process's retries, and reported to the engine with the mark.
        let reported = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = reported.clone();
        let progress: crate::output::Progress =
            std::sync::Arc::new(move |a: &Attrs| sink.lock().unwrap().push(a.clone()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(crate::output::with_progress(progress, async {
            creates.made(&target("d", &plain, "l-1"))
        }));
        assert_eq!(
            creates.record(&target("d", &plain, "l-1")),
            Record::PendingCreate
        );
        assert_eq!(
            Record::of_attrs(&reported.lock().unwrap()[0]),
            Record::PendingCreate
        );
        // A later recall of records that say nothing of the sort forgets it.
        creates.recall(&[target("d", &plain, "l-1")]);
        assert_eq!(creates.record(&target("d", &plain, "l-1")), Record::Nothing);
    }
}
