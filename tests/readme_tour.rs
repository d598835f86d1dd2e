//! The tours in README.md and docs/tour.md are what the binary prints: every ```console
//! block under a `<!-- tour -->` line is run, in order, in a copy of `examples/quickstart`,
//! and each command's output (stdout and stderr, as a terminal shows them) must match the
//! lines under it. A line `…` stands for any number of lines. What differs between two
//! honest runs (times, durations, sizes that grow with the job, the container's generated
//! name) is masked on both sides before comparing. `<!-- tour: SHELL -->` runs SHELL, unseen,
//! before its block: the edits to `anycloud.yaml` the prose describes, or a wait for the job.
//!
//! `ANYCLOUD_BLESS_README=1 cargo test --test readme_tour` writes the output into the files
//! instead (then put the `…` back where an excerpt is wanted, and review the diff).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_anycloud");
const MARKER: &str = "<!-- tour";
const ELISION: &str = "…";

/// One `$ command` of a block and the lines the README shows under it.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

/// A tour block: where its body sits in its file (line indexes, end exclusive), what runs
/// unseen before it, and its steps.
#[derive(Debug)]
struct Block {
    body: std::ops::Range<usize>,
    setup: Option<String>,
    steps: Vec<Step>,
}

fn blocks(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(setup) = lines[i]
            .trim()
            .strip_prefix(MARKER)
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            i += 1;
            continue;
        };
        let setup = setup.trim().strip_prefix(':').map(|s| s.trim().to_owned());
        assert_eq!(
            lines.get(i + 1).copied(),
            Some("```console"),
            "README.md:{}: {MARKER} must be followed by a ```console block",
            i + 2
        );
        let start = i + 2;
        let end = (start..lines.len())
            .find(|&j| lines[j] == "```")
            .unwrap_or_else(|| panic!("README.md:{}: the block is never closed", i + 2));
        let mut steps: Vec<Step> = Vec::new();
        for (j, line) in lines[start..end].iter().enumerate() {
            if let Some(command) = line.strip_prefix("$ ") {
                steps.push(Step {
                    command: command.to_owned(),
                    expected: Vec::new(),
                });
            } else {
                steps
                    .last_mut()
                    .unwrap_or_else(|| {
                        panic!("README.md:{}: output before any `$ command`", start + j + 1)
                    })
                    .expected
                    .push((*line).to_owned());
            }
        }
        blocks.push(Block {
            body: start..end,
            setup,
            steps,
        });
        i = end + 1;
    }
    blocks
}

/// What two honest runs of the tour print differently, masked alike on both sides.
fn mask(line: &str) -> String {
    let rules: &[(&str, &str)] = &[
        (r"\d{4}-\d\d-\d\dT\d\d:?\d\d:?\d\d(\.\d+)?Z", "<time>"),
        (r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "<time>"),
        // Container and image ids: the tour builds its image afresh.
        (r"[0-9a-f]{64}", "<id>"),
        (r"\b\d\d:\d\d( UTC)?\b", "<hh:mm>"),
        (r"\b\d+(\.\d+)?(ms|s|m) ago\b", "<age> ago"),
        (r"after \d+(\.\d+)?(ms|s|m)\b", "after <duration>"),
        (r"\(\d+(\.\d+)?(ms|s)\)", "(<duration>)"),
        (
            r"anycloud-wordcount-[0-9a-f]{12}",
            "anycloud-wordcount-<id>",
        ),
        (r"^ *\d+  ", "<size>  "),
        // supervisord calls a program STARTING for its first `startsecs` (5 s): both are up.
        (r"program: (STARTING|RUNNING)", "program: <up>"),
    ];
    let mut out = line.trim_end().to_owned();
    for (pattern, with) in rules {
        out = regex_lite::Regex::new(pattern)
            .expect("a valid pattern")
            .replace_all(&out, *with)
            .into_owned();
    }
    out
}

/// Whether `actual` matches `expected`, where an expected `…` line takes any number of lines.
fn matches(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first.trim() == ELISION => {
            (0..=actual.len()).any(|skip| matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(a, more)| mask(first) == mask(a) && matches(rest, more)),
    }
}

/// Runs COMMAND as a shell would after a command that exited with LAST (`echo $?` works).
fn run(dir: &Path, command: &str, path: &str, last: i32) -> (Vec<String>, i32) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("(exit {last}); {command} 2>&1"))
        .current_dir(dir)
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env_remove("ANYCLOUD_TEST_SSH_ADDRESS")
        .env_remove("ANYCLOUD_TEST_VM_ROOT")
        .output()
        .expect("sh runs");
    let text = String::from_utf8_lossy(&out.stdout);
    (
        text.lines().map(str::to_owned).collect(),
        out.status.code().unwrap_or(-1),
    )
}

/// The job's first uploads, so `status` shows when each last succeeded rather than a race.
fn wait_for_first_uploads(dir: &Path) {
    let log = dir.join(".anycloud/local/hosts/wordcount/log");
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = || {
        ["rclone-output", "rclone-checkpoint"]
            .iter()
            .all(|p| log.join(format!("{p}.last-success")).exists())
            && dir
                .join(".anycloud/local/buckets/quickstart-results/wordcount.txt")
                .exists()
    };
    while !done() {
        assert!(
            Instant::now() < deadline,
            "the job's first uploads did not happen within 60s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Takes the tour's deployment down however the test ends.
struct Teardown<'a>(&'a Path);

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        let _ = Command::new(BIN)
            .args(["destroy", "--auto-approve", "-q"])
            .current_dir(self.0)
            .output();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Runs the tour of FILE (relative to the repository) in DIR, a fixed directory: plans print
/// paths under it, and the file shows them.
fn tour(file: &str, dir: &str) {
    let file_path = PathBuf::from(ROOT).join(file);
    let text = std::fs::read_to_string(&file_path).unwrap();
    let blocks = blocks(&text);
    assert!(!blocks.is_empty(), "{file} has no {MARKER} --> blocks");
    let dir = Path::new(dir);

    let quickstart = Path::new(ROOT).join("examples/quickstart");
    if dir.exists() {
        drop(Teardown(dir));
        std::fs::remove_dir_all(dir).unwrap();
    }
    copy_dir(&quickstart, dir);
    // Ignore any state or local cloud the example directory held: the tour starts empty.
    let _ = std::fs::remove_dir_all(dir.join(".anycloud"));
    let built = Command::new("bash")
        .arg(quickstart.join("build-image.sh"))
        .output()
        .unwrap();
    assert!(built.status.success(), "build-image.sh failed: {built:?}");
    let _teardown = Teardown(dir);

    let bin_dir = Path::new(BIN).parent().unwrap().display().to_string();
    let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());
    let bless = std::env::var_os("ANYCLOUD_BLESS_README").is_some();
    let mut failures = Vec::new();
    let mut blessed: Vec<(std::ops::Range<usize>, Vec<String>)> = Vec::new();
    let mut last = 0;
    for block in &blocks {
        if let Some(setup) = &block.setup {
            let (out, code) = run(dir, setup, &path, 0);
            assert_eq!(code, 0, "{file}: `{setup}` failed:\n{}", out.join("\n"));
        }
        let mut body = Vec::new();
        for step in &block.steps {
            let (actual, code) = run(dir, &step.command, &path, last);
            last = code;
            if step.command.starts_with("anycloud apply") && code == 0 {
                wait_for_first_uploads(dir);
            }
            if !matches(&step.expected, &actual) {
                failures.push(format!(
                    "$ {}\n--- {file} shows\n{}\n--- the binary printed\n{}",
                    step.command,
                    step.expected.join("\n"),
                    actual.join("\n")
                ));
            }
            body.push(format!("$ {}", step.command));
            body.extend(actual);
        }
        blessed.push((block.body.clone(), body));
    }
    if bless {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        // From the last block up, so the earlier ranges stay valid.
        for (range, body) in blessed.into_iter().rev() {
            lines.splice(range, body);
        }
        std::fs::write(&file_path, lines.join("\n") + "\n").unwrap();
        return;
    }
    assert!(
        failures.is_empty(),
        "{file}'s tour differs from what the binary prints \
         (ANYCLOUD_BLESS_README=1 rewrites it):\n\n{}",
        failures.join("\n\n")
    );
}

#[test]
fn the_readme_tour_prints_what_the_readme_shows() {
    tour("README.md", "/tmp/anycloud-readme-tour");
}

#[test]
fn the_long_tour_prints_what_docs_tour_shows() {
    tour("docs/tour.md", "/tmp/anycloud-docs-tour");
}

#[test]
fn an_elision_takes_any_number_of_lines_and_masks_apply_alike() {
    let s = |v: &[&str]| v.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
    assert!(matches(&s(&["a", "…", "d"]), &s(&["a", "b", "c", "d"])));
    assert!(matches(&s(&["a", "…", "d"]), &s(&["a", "d"])));
    assert!(!matches(&s(&["a", "…", "d"]), &s(&["a", "b"])));
    assert!(!matches(&s(&["a", "b"]), &s(&["a", "c"])));
    assert!(matches(
        &s(&["x: Creation complete after 3s"]),
        &s(&["x: Creation complete after 0s"])
    ));
    assert!(!matches(&s(&["3 to add"]), &s(&["4 to add"])));
}
