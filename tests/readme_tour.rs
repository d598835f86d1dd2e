//! The README's short tour is what the binary prints: every ```console block under a
//! `<!-- tour -->` line is run, in order, in a copy of `examples/quickstart`, and each
//! command's output (stdout and stderr, as a terminal shows them) must match the lines under
//! it. A line `…` stands for any number of lines. What differs between two honest runs
//! (times, durations, sizes that grow with the job, the container's generated name) is
//! masked on both sides before comparing.
//!
//! `ANYCLOUD_BLESS_README=1 cargo test --test readme_tour` writes the output into README.md
//! instead (then put the `…` back where an excerpt is wanted, and review the diff).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_anycloud");
/// A fixed directory: the plan prints paths under it, and the README shows them.
const TOUR: &str = "/tmp/anycloud-readme-tour";
const MARKER: &str = "<!-- tour -->";
const ELISION: &str = "…";

/// One `$ command` of a block and the lines the README shows under it.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

/// A tour block: where its body sits in README.md (line indexes, end exclusive) and its steps.
#[derive(Debug)]
struct Block {
    body: std::ops::Range<usize>,
    steps: Vec<Step>,
}

fn blocks(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != MARKER {
            i += 1;
            continue;
        }
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
        (r"\b\d\d:\d\d( UTC)?\b", "<hh:mm>"),
        (r"\b\d+(\.\d+)?(ms|s|m) ago\b", "<age> ago"),
        (r"after \d+(\.\d+)?(ms|s|m)\b", "after <duration>"),
        (r"\(\d+(\.\d+)?(ms|s)\)", "(<duration>)"),
        (r"anycloud-wordcount-[0-9a-f]{12}", "anycloud-wordcount-<id>"),
        (r"^ *\d+  ", "<size>  "),
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

fn run(command: &str, path: &str) -> Vec<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{command} 2>&1"))
        .current_dir(TOUR)
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env_remove("ANYCLOUD_TEST_SSH_ADDRESS")
        .env_remove("ANYCLOUD_TEST_VM_ROOT")
        .output()
        .expect("sh runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() || command.contains("--detailed-exitcode"),
        "`{command}` failed ({}):\n{text}",
        out.status
    );
    text.lines().map(str::to_owned).collect()
}

/// The job's first uploads, so `status` shows when each last succeeded rather than a race.
fn wait_for_first_uploads() {
    let log = Path::new(TOUR).join(".anycloud/local/hosts/wordcount/log");
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = || {
        ["rclone-output", "rclone-checkpoint"]
            .iter()
            .all(|p| log.join(format!("{p}.last-success")).exists())
            && Path::new(TOUR)
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
struct Teardown;

impl Drop for Teardown {
    fn drop(&mut self) {
        let _ = Command::new(BIN)
            .args(["destroy", "--auto-approve", "-q"])
            .current_dir(TOUR)
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

#[test]
fn the_readme_tour_prints_what_the_readme_shows() {
    let readme_path = PathBuf::from(ROOT).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let blocks = blocks(&readme);
    assert!(!blocks.is_empty(), "README.md has no {MARKER} blocks");

    let quickstart = Path::new(ROOT).join("examples/quickstart");
    if Path::new(TOUR).exists() {
        let _ = Command::new(BIN)
            .args(["destroy", "--auto-approve", "-q"])
            .current_dir(TOUR)
            .output();
        std::fs::remove_dir_all(TOUR).unwrap();
    }
    copy_dir(&quickstart, Path::new(TOUR));
    // Ignore any state or local cloud the example directory held: the tour starts empty.
    let _ = std::fs::remove_dir_all(Path::new(TOUR).join(".anycloud"));
    let built = Command::new("bash")
        .arg(quickstart.join("build-image.sh"))
        .output()
        .unwrap();
    assert!(built.status.success(), "build-image.sh failed: {built:?}");
    let _teardown = Teardown;

    let bin_dir = Path::new(BIN).parent().unwrap().display().to_string();
    let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());
    let bless = std::env::var_os("ANYCLOUD_BLESS_README").is_some();
    let mut lines: Vec<String> = readme.lines().map(str::to_owned).collect();
    let mut failures = Vec::new();
    // Bodies are replaced from the last block up, so earlier ranges stay valid.
    let mut blessed: Vec<(std::ops::Range<usize>, Vec<String>)> = Vec::new();
    for block in &blocks {
        let mut body = Vec::new();
        for step in &block.steps {
            let actual = run(&step.command, &path);
            if step.command.contains("apply") {
                wait_for_first_uploads();
            }
            if !matches(&step.expected, &actual) {
                failures.push(format!(
                    "$ {}\n--- README.md shows\n{}\n--- the binary printed\n{}",
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
        for (range, body) in blessed.into_iter().rev() {
            lines.splice(range, body);
        }
        std::fs::write(&readme_path, lines.join("\n") + "\n").unwrap();
        return;
    }
    assert!(
        failures.is_empty(),
        "the README's tour differs from what the binary prints \
         (ANYCLOUD_BLESS_README=1 rewrites it):\n\n{}",
        failures.join("\n\n")
    );
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
