//! The corpus of broken configs in `tests/bad-configs`: each one must be rejected, and its first
//! error must be reported where the file's first line says:
//!
//! ```text
//! # expect: LINE:COLUMN: SUBSTRING
//! ```
//!
//! SUBSTRING must appear in the error's message or in its help.

use std::path::{Path, PathBuf};
use std::process::Command;

use anycloud::config::{load, ConfigError};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bad-configs");

/// Files that cannot carry a header (not UTF-8, no bytes at all): name, line, column, substring.
const IN_CODE: &[(&str, u64, u64, &str)] = &[
    ("59-not-utf8.yaml", 2, 4, "not valid UTF-8"),
    ("71-zero-bytes.yaml", 1, 1, "the config is empty"),
];

/// Known parser weaknesses: the header names where the error belongs, the entry where it is
/// reported today. Remove an entry once the parser is fixed (the test says so).
const KNOWN_WRONG: &[(&str, u64, u64)] = &[
    // An unclosed quote at the end of the file is blamed on the end of the file (a line past the
    // last one, so no snippet) as "invalid indentation in multiline quoted scalar".
    ("70-unclosed-quote-at-eof.yaml", 6, 1),
];

struct Expect {
    line: u64,
    column: u64,
    substring: String,
}

fn corpus() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(CORPUS)
        .expect("tests/bad-configs exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .expect("a UTF-8 file name")
}

/// The expectation of one corpus file, from the table above or from its `# expect:` header.
fn expectation(path: &Path) -> Result<Expect, String> {
    if let Some((_, line, column, substring)) = IN_CODE.iter().find(|(n, ..)| *n == name(path)) {
        return Ok(Expect {
            line: *line,
            column: *column,
            substring: (*substring).to_owned(),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8: list it in IN_CODE".to_owned())?;
    let header = text.lines().next().unwrap_or_default();
    let rest = header.strip_prefix("# expect: ").ok_or_else(|| {
        format!("first line {header:?} is not `# expect: LINE:COLUMN: SUBSTRING`")
    })?;
    let mut parts = rest.splitn(3, ':');
    let mut number = |what: &str| {
        parts
            .next()
            .and_then(|n| n.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("header {header:?} has no {what} number"))
    };
    let line = number("line")?;
    let column = number("column")?;
    let substring = parts.next().map(str::trim).unwrap_or_default().to_owned();
    if substring.is_empty() {
        return Err(format!("header {header:?} has no substring"));
    }
    Ok(Expect {
        line,
        column,
        substring,
    })
}

/// What is wrong with the outcome of loading `path`, if anything.
fn check(path: &Path, expect: &Expect) -> Vec<String> {
    let providers = anycloud::registry::Providers::builtin(Path::new("/nonexistent/keys"));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(path, &providers)));
    let errors: Vec<ConfigError> = match outcome {
        Err(_) => return vec!["load panicked".into()],
        Ok(Ok(_)) => return vec!["the config was accepted".into()],
        Ok(Err(errors)) => errors,
    };
    let Some(first) = errors.first() else {
        return vec!["load returned Err with no errors".into()];
    };
    let mut problems = Vec::new();
    let known = KNOWN_WRONG.iter().find(|(n, ..)| *n == name(path));
    let at = (first.line, first.column);
    match known {
        Some((_, line, column)) if at == (expect.line, expect.column) => problems.push(format!(
            "now reported at the expected {}:{} (was {line}:{column}): remove it from KNOWN_WRONG",
            expect.line, expect.column
        )),
        Some((_, line, column)) if at != (*line, *column) => problems.push(format!(
            "reported at {}:{}; expected {}:{} (known to be reported at {line}:{column})",
            first.line, first.column, expect.line, expect.column
        )),
        Some(_) => {}
        None if at != (expect.line, expect.column) => problems.push(format!(
            "reported at {}:{}, expected {}:{}",
            first.line, first.column, expect.line, expect.column
        )),
        None => {}
    }
    let in_help = first
        .help
        .as_deref()
        .is_some_and(|h| h.contains(&expect.substring));
    if !first.message.contains(&expect.substring) && !in_help {
        problems.push(format!(
            "neither message {:?} nor help {:?} contains {:?}",
            first.message, first.help, expect.substring
        ));
    }
    let rendered = first.to_string();
    let prefix = format!("error: {}:{}:{}:", path.display(), first.line, first.column);
    if !rendered.starts_with(&prefix) {
        problems.push(format!(
            "rendered error does not start with {prefix:?}: {rendered:?}"
        ));
    }
    problems
}

#[test]
fn every_bad_config_is_rejected_at_its_expected_location() {
    let files = corpus();
    assert!(
        files.len() >= 35,
        "the corpus has {} files; it should have at least 35",
        files.len()
    );
    for (listed, ..) in IN_CODE {
        assert!(
            files.iter().any(|f| name(f) == *listed),
            "IN_CODE names a missing file {listed}"
        );
    }
    for (listed, ..) in KNOWN_WRONG {
        assert!(
            files.iter().any(|f| name(f) == *listed),
            "KNOWN_WRONG names a missing file {listed}"
        );
    }
    let mut mismatches = Vec::new();
    for path in &files {
        let problems = match expectation(path) {
            Ok(expect) => check(path, &expect),
            Err(header) => vec![header],
        };
        mismatches.extend(problems.into_iter().map(|p| format!("{}: {p}", name(path))));
    }
    assert!(
        mismatches.is_empty(),
        "{} problem(s) in {} corpus files:\n{}",
        mismatches.len(),
        files.len(),
        mismatches.join("\n")
    );
}

#[test]
fn the_binary_reports_the_location_on_stderr_and_exits_1() {
    for file in [
        "04-unknown-top-level-key.yaml",
        "45-tab-indented.yaml",
        "46-alias-bomb.yaml",
    ] {
        let path = Path::new(CORPUS).join(file);
        let expect = expectation(&path).expect("a valid header");
        let out = Command::new(env!("CARGO_BIN_EXE_anycloud"))
            .arg("-f")
            .arg(&path)
            .arg("validate")
            .output()
            .expect("the binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let location = format!("{}:{}:{}", path.display(), expect.line, expect.column);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{file}: exit status {:?}; stderr:\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains(&location),
            "{file}: stderr does not contain {location:?}:\n{stderr}"
        );
        assert!(
            stderr.contains(&expect.substring),
            "{file}: stderr does not contain {:?}:\n{stderr}",
            expect.substring
        );
        assert!(
            out.stdout.is_empty(),
            "{file}: stdout is not empty:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn three_mistakes_in_three_places_are_reported_in_one_run() {
    let path = Path::new(CORPUS).join("103-three-mistakes-in-one-run.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_anycloud"))
        .arg("-f")
        .arg(&path)
        .arg("validate")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // The project, a deployment's env, another deployment's checkpoint: each its own error.
    for (at, what) in [
        ("2:10", "expected string scalar"),
        ("6:57", "expected mapping"),
        ("9:45", "invalid boolean"),
    ] {
        let location = format!("{}:{at}: {what}", path.display());
        assert!(stderr.contains(&location), "no {location:?} in:\n{stderr}");
    }
    assert!(stderr.contains("3 errors"), "{stderr}");
}
