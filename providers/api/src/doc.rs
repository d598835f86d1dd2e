//! A provider's part of the config (`providers.<name>`, a deployment's `vm:`) as written:
//! a tree of values that remembers where each one is, so a provider's own checks can report
//! problems at their line and column without knowing anything of YAML.

use std::path::{Path, PathBuf};

use crate::diagnostic::{did_you_mean, suggest, Diagnostic, Loc};

#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    pub at: Loc,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Doc>),
    /// In file order.
    Map(Vec<(Key, Doc)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub at: Loc,
}

impl Doc {
    pub fn entries(&self) -> &[(Key, Doc)] {
        match &self.value {
            Value::Map(m) => m,
            _ => &[],
        }
    }

    pub fn get(&self, key: &str) -> Option<&Doc> {
        self.entries()
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// The mapping `top` over the mapping `base`, key by key (a deployment's own `vm:` over
    /// `defaults.vm`); either alone when the other is absent.
    pub fn overlay(base: Option<&Doc>, top: Option<&Doc>) -> Option<Doc> {
        match (base, top) {
            (None, None) => None,
            (Some(d), None) | (None, Some(d)) => Some(d.clone()),
            (Some(base), Some(top)) => {
                let (Value::Map(b), Value::Map(t)) = (&base.value, &top.value) else {
                    return Some(top.clone());
                };
                let mut merged: Vec<(Key, Doc)> = b
                    .iter()
                    .filter(|(k, _)| !t.iter().any(|(tk, _)| tk.name == k.name))
                    .cloned()
                    .collect();
                merged.extend(t.iter().cloned());
                Some(Doc {
                    at: top.at,
                    value: Value::Map(merged),
                })
            }
        }
    }

    /// The tree as JSON, for `serde` to read into a provider's own settings type.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Doc::to_json).collect()),
            Value::Map(m) => J::Object(
                m.iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The value as it was written, for messages.
    pub fn shown(&self) -> String {
        match &self.value {
            Value::Str(s) => s.clone(),
            other => Doc {
                at: self.at,
                value: other.clone(),
            }
            .to_json()
            .to_string(),
        }
    }
}

/// What a provider's checks collect: located problems, and where relative paths start.
#[derive(Debug, Default)]
pub struct Checks {
    /// The config's directory: relative paths in the config are relative to it.
    pub base_dir: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

impl Checks {
    pub fn new(base_dir: &Path) -> Checks {
        Checks {
            base_dir: base_dir.to_path_buf(),
            diagnostics: Vec::new(),
        }
    }

    pub fn error(&mut self, at: Loc, message: impl Into<String>, help: Option<String>) {
        self.diagnostics
            .push(Diagnostic::at(at, message).help_opt(help));
    }

    /// Reports every key of mapping `doc` (named `path` in messages) that is not in `known`.
    /// Returns `false` (and reports it) when `doc` is not a mapping at all.
    pub fn known_keys(&mut self, doc: &Doc, path: &str, known: &[&str]) -> bool {
        let Value::Map(entries) = &doc.value else {
            self.error(doc.at, format!("{path} must be a mapping"), None);
            return false;
        };
        for (k, _) in entries {
            if !known.contains(&k.name.as_str()) {
                let help = did_you_mean(suggest(&k.name, known.iter().copied())).or_else(|| {
                    (!known.is_empty()).then(|| format!("expected one of: {}", known.join(", ")))
                });
                self.error(k.at, format!("unknown key '{}' in {path}", k.name), help);
            }
        }
        true
    }

    /// A string value (a plain number or boolean as it is written, as YAML readers take it
    /// where text is expected: `profile: 123456789012`), or an error naming `path`.
    pub fn string(&mut self, doc: &Doc, path: &str) -> Option<String> {
        match &doc.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => Some(doc.shown()),
            _ => {
                self.error(
                    doc.at,
                    format!("{path} must be a string, not {}", doc.shown()),
                    None,
                );
                None
            }
        }
    }

    pub fn boolean(&mut self, doc: &Doc, path: &str) -> Option<bool> {
        match &doc.value {
            Value::Bool(b) => Some(*b),
            Value::Str(s) if s == "true" || s == "false" => Some(s == "true"),
            _ => {
                self.error(
                    doc.at,
                    format!("{path} must be true or false, not '{}'", doc.shown()),
                    None,
                );
                None
            }
        }
    }

    /// A whole number in `range`.
    pub fn integer(
        &mut self,
        doc: &Doc,
        path: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let number = match &doc.value {
            Value::Int(i) => Some(*i),
            Value::Str(s) => s.trim().parse().ok(),
            _ => None,
        };
        match number {
            Some(i) if range.contains(&i) => Some(i),
            _ => {
                let bounds = if *range.end() < 1_000_000 {
                    format!("from {} to {}", range.start(), range.end())
                } else {
                    format!("of at least {}", range.start())
                };
                self.error(
                    doc.at,
                    format!(
                        "{path} must be a whole number {bounds}, not '{}'",
                        doc.shown()
                    ),
                    None,
                );
                None
            }
        }
    }

    /// `path` made absolute against the config's directory, `~/` against `$HOME`.
    pub fn absolute(&self, path: &str) -> String {
        let expanded = match (path.strip_prefix("~/"), std::env::var("HOME")) {
            (Some(rest), Ok(home)) => format!("{home}/{rest}"),
            _ => path.to_owned(),
        };
        absolute(&self.base_dir, &expanded)
    }
}

/// `p` made absolute against `base` (the current directory when `base` is empty), with `.`
/// and `..` resolved lexically so the same path always renders the same way.
pub fn absolute(base: &Path, p: &str) -> String {
    let path = Path::new(p);
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let base = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        base.join(path)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str, line: u64) -> Doc {
        Doc {
            at: Loc::new(line, 1),
            value: Value::Str(v.into()),
        }
    }

    fn map(entries: &[(&str, Doc)]) -> Doc {
        Doc {
            at: Loc::new(1, 1),
            value: Value::Map(
                entries
                    .iter()
                    .map(|(k, v)| {
                        (
                            Key {
                                name: (*k).into(),
                                at: v.at,
                            },
                            v.clone(),
                        )
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn overlay_takes_the_top_key_by_key() {
        let base = map(&[("type", s("small", 1)), ("spot", s("x", 2))]);
        let top = map(&[("type", s("big", 5))]);
        let merged = Doc::overlay(Some(&base), Some(&top)).unwrap();
        assert_eq!(merged.get("type").unwrap().shown(), "big");
        assert_eq!(merged.get("type").unwrap().at.line, 5);
        assert_eq!(merged.get("spot").unwrap().shown(), "x");
    }

    #[test]
    fn unknown_keys_are_located_with_a_suggestion() {
        let mut checks = Checks::default();
        let doc = map(&[("rot", s("/x", 3))]);
        assert!(checks.known_keys(&doc, "providers.local", &["root"]));
        let d = &checks.diagnostics[0];
        assert_eq!((d.line, d.column), (3, 1));
        assert_eq!(d.help.as_deref(), Some("did you mean 'root'?"));
    }
}
