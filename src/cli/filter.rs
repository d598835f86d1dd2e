//! Which deployments and addresses a listing shows: `anycloud state list run-0042`,
//! `status 'run-00*'`, `graph deployment.run-0042.vm`. A sweep's state holds 100,000
//! addresses; a person wants a few.

use crate::config::Sweep;
use crate::plan::targets_match;

/// Deployment names and address prefixes; none means everything.
pub struct Filter {
    prefixes: Vec<String>,
    /// Names with a `*`, matched against a deployment's name.
    globs: Vec<String>,
}

impl Filter {
    /// A word without a dot is a deployment's name (`*` matches any run of characters);
    /// with one, an address or an address prefix (whole segments).
    pub fn new(words: &[String]) -> Filter {
        let mut prefixes = Vec::new();
        let mut globs = Vec::new();
        for w in words {
            if w.contains('*') && !w.contains('.') {
                globs.push(w.clone());
            } else if w.contains('.') {
                prefixes.push(w.clone());
            } else {
                prefixes.push(format!("deployment.{w}"));
            }
        }
        Filter { prefixes, globs }
    }

    pub fn is_all(&self) -> bool {
        self.prefixes.is_empty() && self.globs.is_empty()
    }

    pub fn address(&self, addr: &str) -> bool {
        if self.is_all() || targets_match(&self.prefixes, addr) {
            return true;
        }
        deployment_of(addr).is_some_and(|d| self.globs.iter().any(|g| glob(g, d)))
    }

    /// Whether anything of deployment `id` is shown.
    pub fn deployment(&self, id: &str) -> bool {
        let prefix = format!("deployment.{id}");
        self.is_all()
            || self.globs.iter().any(|g| glob(g, id))
            || self.prefixes.iter().any(|p| {
                p == &prefix
                    || p.strip_prefix(prefix.as_str())
                        .is_some_and(|r| r.starts_with('.'))
            })
    }
}

/// "did you mean '…'?" for a mistyped address, from the addresses there are.
pub fn nearest<'a>(word: &str, addresses: impl IntoIterator<Item = &'a String>) -> Option<String> {
    anycloud_provider::diagnostic::did_you_mean(anycloud_provider::diagnostic::suggest(
        word,
        addresses.into_iter().map(String::as_str),
    ))
}

/// A sweep's name stands for its members (`--target train` is every `train-…`); every
/// other word is itself.
pub fn with_sweeps(words: &[String], sweeps: &[Sweep]) -> Vec<String> {
    words
        .iter()
        .flat_map(|w| match sweeps.iter().find(|s| &s.name == w) {
            Some(sweep) => sweep.members.iter().map(|m| m.id.clone()).collect(),
            None => vec![w.clone()],
        })
        .collect()
}

/// `--target`/`-replace` words as addresses: a word without a dot is a deployment's name,
/// or a sweep's, which stands for its members.
pub fn as_addresses(words: &[String], sweeps: &[Sweep]) -> Vec<String> {
    with_sweeps(words, sweeps)
        .iter()
        .map(|w| {
            if w.contains('.') {
                w.clone()
            } else {
                format!("deployment.{w}")
            }
        })
        .collect()
}

/// The deployment an address belongs to (`deployment.NAME.…`).
pub fn deployment_of(addr: &str) -> Option<&str> {
    let rest = addr.strip_prefix("deployment.")?;
    Some(rest.split('.').next().unwrap_or(rest))
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_prefixes_and_globs_pick_addresses() {
        let f = Filter::new(&["run-01".into()]);
        assert!(f.address("deployment.run-01.vm"));
        assert!(!f.address("deployment.run-010.vm"));
        assert!(f.deployment("run-01") && !f.deployment("run-010"));
        let f = Filter::new(&["deployment.run-02.vm".into()]);
        assert!(f.address("deployment.run-02.vm") && !f.address("deployment.run-02.container"));
        assert!(f.deployment("run-02"));
        let f = Filter::new(&["run-0*".into()]);
        assert!(f.address("deployment.run-07.vm") && !f.address("deployment.run-17.vm"));
        assert!(!f.address("storage.local.earth"));
        let f = Filter::new(&["*-a*b".into()]);
        assert!(f.deployment("x-ab") && f.deployment("x-a-b") && !f.deployment("x-ba"));
        assert!(Filter::new(&[]).address("storage.local.earth"));
    }

    #[test]
    fn a_sweeps_name_stands_for_its_members() {
        let sweep = Sweep {
            name: "train".into(),
            axes: vec!["lr".into()],
            members: ["train-lr-0-1", "train-lr-0-01"]
                .iter()
                .map(|id| crate::config::SweepMember {
                    id: (*id).into(),
                    values: Default::default(),
                })
                .collect(),
        };
        let words = ["train".to_owned(), "other".to_owned()];
        assert_eq!(
            as_addresses(&words, std::slice::from_ref(&sweep)),
            [
                "deployment.train-lr-0-1",
                "deployment.train-lr-0-01",
                "deployment.other"
            ]
        );
        assert_eq!(
            as_addresses(&words, &[]),
            ["deployment.train", "deployment.other"]
        );
    }
}
