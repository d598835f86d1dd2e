//! Where the local state lives when `--state` is not given: beside the config, as the local
//! cloud's root already is. Resolved against the working directory instead, `status -f
//! other/anycloud.yaml` found no state and the plan then advised `state adopt` of the real
//! state's lineage — dangerous advice for "you are in the wrong directory".

use std::path::{Path, PathBuf};

use anycloud_state::LocalStore;

use crate::engine::{self, UserError};
use crate::registry::Providers;

/// The state file relative to its config's directory (and where anycloud kept it, relative
/// to the working directory, before it was resolved beside the config).
pub const DEFAULT_STATE: &str = ".anycloud/state.json";

/// The local state of `config` when `--state` names none: `<config dir>/.anycloud/state.json`.
/// (An explicit `--state` stays relative to the working directory, as a flag's path is.)
pub fn default_state(config: &Path) -> PathBuf {
    config
        .parent()
        .unwrap_or_else(|| Path::new(""))
        .join(DEFAULT_STATE)
}

/// The SSH keys' directory when `--keys-dir` names none: beside the config, with the state,
/// so `-f sub/anycloud.yaml` from anywhere reaches the machines `cd sub && anycloud apply`
/// made.
pub fn default_keys(config: &Path) -> PathBuf {
    config
        .parent()
        .unwrap_or_else(|| Path::new(""))
        .join(".anycloud/keys")
}

/// A state file, or the journal of a run that died before its first fold.
fn has_state(path: &Path) -> bool {
    path.exists() || LocalStore::new(path).journal_path().exists()
}

/// Refuses to start afresh beside the config while the state of this config's deployments
/// sits elsewhere: at the old default, `.anycloud/state.json` of the working directory, or
/// beside a directory above the config (an apply run from there with `-f`). An empty state
/// would plan everything again and, finding what the other state made, suggest adopting its
/// lineage. Says where the state is and how to move it instead.
pub fn refuse_a_state_left_behind(config: &Path, providers: &Providers) -> Result<(), UserError> {
    let beside = default_state(config);
    if has_state(&beside) {
        return Ok(());
    }
    let candidates: Vec<PathBuf> = left_behind_candidates(config)
        .into_iter()
        .filter(|c| has_state(c))
        .collect();
    if candidates.is_empty() {
        return Ok(());
    }
    // A config that does not load is reported by the command itself.
    let Ok(cfg) = engine::load_config(config, providers) else {
        return Ok(());
    };
    for old in candidates {
        let Ok(state) = LocalStore::load(&old) else {
            continue;
        };
        // This config's state when it records only deployments of this config: a state with
        // others too is taken for another project's that shares a name.
        let recorded: std::collections::BTreeSet<&str> = state
            .resources
            .keys()
            .filter_map(|a| a.strip_prefix("deployment.")?.split('.').next())
            .collect();
        let mut ours: Vec<&str> = cfg
            .deployments
            .iter()
            .map(|d| d.id.as_str())
            .filter(|id| recorded.contains(id))
            .collect();
        if ours.is_empty() || ours.len() < recorded.len() {
            continue;
        }
        let more = ours.len().saturating_sub(3);
        ours.truncate(3);
        let named = if more > 0 {
            format!("{} and {more} more", ours.join(", "))
        } else {
            ours.join(", ")
        };
        let dir = match beside.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        return Err(UserError::msg(format!(
            "there is no state beside {config} ({beside}), but {old} holds the state (lineage {lineage}) of its deployment(s) {named}: the state lives beside its config. Move it there with `mkdir -p {dir} && mv {old}* {dir}/`, or name it with `--state {old}`",
            config = config.display(),
            beside = beside.display(),
            old = old.display(),
            lineage = state.lineage,
            dir = dir.display(),
        )));
    }
    Ok(())
}

/// Where a state of `config` may have been left: the working directory's `.anycloud/`
/// (anycloud's default before), then each directory above the config's.
fn left_behind_candidates(config: &Path) -> Vec<PathBuf> {
    let dir = match config.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (Ok(dir), Ok(cwd)) = (std::fs::canonicalize(dir), std::fs::canonicalize(".")) else {
        // No such directory, so no config: the command says so.
        return vec![];
    };
    let mut out = Vec::new();
    if cwd != dir {
        out.push(PathBuf::from(DEFAULT_STATE));
    }
    for up in dir.ancestors().skip(1) {
        if up != cwd {
            out.push(up.join(DEFAULT_STATE));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_state_is_beside_the_config() {
        assert_eq!(
            default_state(Path::new("anycloud.yaml")),
            Path::new(".anycloud/state.json")
        );
        assert_eq!(
            default_state(Path::new("sub/anycloud.yaml")),
            Path::new("sub/.anycloud/state.json")
        );
        assert_eq!(
            default_state(Path::new("/p/x.yaml")),
            Path::new("/p/.anycloud/state.json")
        );
    }

    #[test]
    fn keys_are_beside_the_config_as_the_state_is() {
        assert_eq!(
            default_keys(Path::new("sub/anycloud.yaml")),
            Path::new("sub/.anycloud/keys")
        );
        assert_eq!(
            default_keys(Path::new("anycloud.yaml")),
            Path::new(".anycloud/keys")
        );
    }
}
