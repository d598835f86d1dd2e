//! What the YAML parser may spend on one file, sized to the file.
//!
//! The parser's defaults are fixed caps (250,000 nodes, 1,000,000 events): they refuse an
//! honest sweep of a few thousand deployments as readily as a bomb. What a hostile file can
//! do that an honest one cannot is make aliases expand into far more than it holds, so that
//! is what stays bounded: a multiple of the file's own size. Everything a file really
//! contains (nodes, events, scalar bytes) is allowed up to what its bytes can hold.

use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::options::AliasLimits;
use serde_saphyr::Budget;

/// Values aliases may replay for each byte of the file: an honest sweep that gives every
/// deployment `env: *common` replays far less than this; a billion-laughs file needs
/// millions per byte.
const REPLAYED_PER_BYTE: usize = 8;
/// The least replay allowance, so a small file may still use anchors freely.
const MIN_REPLAYED: usize = 100_000;
/// Raises the alias allowance for a file that is honest but needs more.
pub const ALIAS_ENV: &str = "ANYCLOUD_YAML_ALIAS_VALUES";

/// The limits for a file of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Values (events) that aliases may replay in all.
    pub replayed: usize,
    /// Whether `replayed` came from [`ALIAS_ENV`].
    pub replayed_from_env: bool,
    len: usize,
}

impl Limits {
    pub fn for_input(len: usize) -> Limits {
        let sized = len.saturating_mul(REPLAYED_PER_BYTE).max(MIN_REPLAYED);
        let from_env = std::env::var(ALIAS_ENV)
            .ok()
            .and_then(|v| v.trim().replace('_', "").parse::<usize>().ok());
        Limits {
            replayed: from_env.unwrap_or(sized),
            replayed_from_env: from_env.is_some(),
            len,
        }
    }

    pub fn options(&self) -> serde_saphyr::Options {
        let mut aliases = AliasLimits::default();
        aliases.max_total_replayed_events = self.replayed;
        // Nesting of aliases inside anchors is what grows exponentially; a real config
        // nests a few levels at most.
        aliases.max_replay_stack_depth = 16;
        // Ten thousand deployments may all name the same anchor: the total above bounds it.
        aliases.max_alias_expansions_per_anchor = usize::MAX;
        // Every node, event and scalar byte of the file itself takes at least a byte of it
        // (a key and its empty value take two); replays add what the alias limit allows.
        let held = self.len.saturating_add(self.replayed);
        let mut budget = Budget::default();
        budget.max_nodes = held.max(budget.max_nodes);
        budget.max_events = held
            .saturating_mul(2)
            .saturating_add(64)
            .max(budget.max_events);
        budget.max_total_scalar_bytes = self.len.max(budget.max_total_scalar_bytes);
        budget.max_recorded_anchor_events = held.max(budget.max_recorded_anchor_events);
        budget.max_anchors = self.len.max(budget.max_anchors);
        budget.max_aliases = self.len.max(budget.max_aliases);
        // Many aliases of one anchor is the sweep's normal shape; the replay total is the
        // bound that matters.
        budget.enforce_alias_anchor_ratio = false;
        serde_saphyr::options! {
            duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
            alias_limits: aliases,
            budget: Some(budget),
        }
    }

    /// The message and help for aliases that replayed more than allowed.
    pub fn replay_exceeded(&self) -> (String, String) {
        let source = if self.replayed_from_env {
            ALIAS_ENV.to_owned()
        } else {
            format!(
                "{REPLAYED_PER_BYTE} for each byte of this {}-byte file, at least {MIN_REPLAYED}",
                self.len
            )
        };
        (
            format!(
                "anchors and aliases expand into too large a document: more than {} values ({source})",
                self.replayed
            ),
            format!(
                "a file that expands this much from a few lines is a YAML bomb; if this one is honest, put what deployments share under `defaults:`, or raise the limit with {ALIAS_ENV}={}",
                self.replayed.saturating_mul(4)
            ),
        )
    }
}

/// Which of the parser's size limits a file went past, in a user's words.
pub fn budget_breach(breach: &BudgetBreach) -> String {
    match breach {
        BudgetBreach::Depth { depth } => format!(
            "the YAML nests {depth} levels deep, past the parser's limit of {}",
            Budget::default().max_depth
        ),
        BudgetBreach::Documents { documents } => {
            format!("the file holds {documents} YAML documents; a config is one")
        }
        other => unsized_breach(&format!("{other:?}")),
    }
}

/// A limit this module sized to the file was reached anyway: a bug of ours, not the user's.
pub fn unsized_breach(what: &str) -> String {
    format!("the YAML parser's limit was reached ({what}) although it is sized to the file; please report this")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alias_allowance_grows_with_the_file_and_never_falls_below_the_floor() {
        assert_eq!(Limits::for_input(10).replayed, MIN_REPLAYED);
        assert_eq!(
            Limits::for_input(1_000_000).replayed,
            1_000_000 * REPLAYED_PER_BYTE
        );
    }
}
