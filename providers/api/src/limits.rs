//! An account's limits, checked before any change (issue 23, item 5): what a plan would add
//! (new roles, new vCPUs by region and family, new role assignments…) is counted by each
//! cloud in its preflight, asked of the cloud's own quota and usage APIs, and every limit
//! that would be exceeded fails the plan, worded here once for every cloud: the limit, where
//! the figure came from, and how many are needed, used and allowed. An apply half-way
//! through a sweep that meets a quota leaves machines billed and the rest unmade; this makes
//! it a plan that says so before anything is made.
//!
//! Only what the plan adds is counted: a resource the state records as made is already in
//! the cloud's usage.

use std::collections::BTreeMap;

/// One limit of the account, as the cloud reports it, and what this plan would add to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// What is limited, where: "IAM roles in the account", "vCPUs of family G in us-east-1".
    pub what: String,
    /// Where the figures came from (the API and the quota's code), for the reader to check.
    pub source: String,
    /// How many this plan adds.
    pub needed: u64,
    /// How many the account uses now.
    pub used: u64,
    /// How many it may have.
    pub allowed: u64,
}

impl Limit {
    /// Whether the plan's additions would go past the limit.
    pub fn is_short(&self) -> bool {
        self.used.saturating_add(self.needed) > self.allowed
    }

    /// The plan's error for a limit that is short: the provider's words, printed as they
    /// are; `help` says how to get more (the cloud's own way to raise it).
    pub fn error(&self, help: &str) -> String {
        let short = self
            .used
            .saturating_add(self.needed)
            .saturating_sub(self.allowed);
        format!(
            "Error: limit: {}: this plan needs {} more, {} are used and {} are allowed ({}), short by {short}. Nothing was changed. {help}",
            self.what, self.needed, self.used, self.allowed, self.source
        )
    }
}

/// The errors of every limit among `limits` that is short, each with its `help`, in the
/// order given.
pub fn errors<'a>(limits: impl IntoIterator<Item = (&'a Limit, &'a str)>) -> Vec<String> {
    limits
        .into_iter()
        .filter(|(l, _)| l.is_short())
        .map(|(l, help)| l.error(help))
        .collect()
}

/// Counts what a plan adds under each key (a region and family, a quota's code).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally<K: Ord>(pub BTreeMap<K, u64>);

impl<K: Ord> Tally<K> {
    pub fn add(&mut self, key: K, n: u64) {
        *self.0.entry(key).or_default() += n;
    }

    pub fn get(&self, key: &K) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(needed: u64, used: u64) -> Limit {
        Limit {
            what: "IAM roles in the account".into(),
            source: "IAM GetAccountSummary RolesQuota".into(),
            needed,
            used,
            allowed: 1000,
        }
    }

    #[test]
    fn a_limit_reached_exactly_is_not_short_and_one_more_is() {
        assert!(!roles(999, 1).is_short());
        assert!(!roles(0, 1000).is_short());
        assert!(roles(1000, 1).is_short());
        assert!(roles(1, 1000).is_short());
    }

    #[test]
    fn the_error_names_the_limit_and_the_figures() {
        assert_eq!(
            roles(1000, 1).error("Ask AWS Support for more."),
            "Error: limit: IAM roles in the account: this plan needs 1000 more, 1 are used and 1000 are allowed (IAM GetAccountSummary RolesQuota), short by 1. Nothing was changed. Ask AWS Support for more."
        );
    }

    #[test]
    fn only_the_short_limits_are_errors_in_order() {
        let (a, b, c) = (roles(1, 1), roles(5, 999), roles(2, 999));
        let errors = errors([(&a, "a"), (&b, "b"), (&c, "c")]);
        assert_eq!(errors.len(), 2);
        assert!(errors[0].ends_with(" b") && errors[0].contains("short by 4"));
        assert!(errors[1].ends_with(" c") && errors[1].contains("short by 1"));
    }

    #[test]
    fn a_tally_adds_up_by_key() {
        let mut t = Tally::default();
        t.add(("us-east-1", "G"), 4);
        t.add(("us-east-1", "G"), 8);
        t.add(("eu-west-1", "G"), 4);
        assert_eq!(t.get(&("us-east-1", "G")), 12);
        assert_eq!(t.get(&("us-east-1", "P")), 0);
        assert_eq!(t.0.len(), 2);
    }
}
