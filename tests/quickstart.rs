//! The README's set-up commands, tried as a new user would: on a fresh clone, the
//! quickstart command brings the job up and shows its output in the output bucket.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn the_readme_names_both_commands_and_ci_runs_the_test_one() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    assert!(
        readme.contains("\n./scripts/quickstart.sh\n"),
        "README must give the quickstart command"
    );
    assert!(
        readme.contains("\n./scripts/test.sh\n"),
        "README must give the test command"
    );
    let ci = std::fs::read_to_string(Path::new(ROOT).join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == "exec ./scripts/test.sh"),
        ".ci/run must run exactly the README's test command"
    );
}

#[test]
fn the_quickstart_runs_from_a_fresh_clone() {
    let tmp = tempfile::Builder::new()
        .prefix("anycloud-clone-")
        .tempdir_in("/tmp")
        .unwrap();
    let clone = tmp.path().join("anycloud");
    let status = Command::new("git")
        .args(["clone", "--quiet", ROOT])
        .arg(&clone)
        .status()
        .unwrap();
    assert!(status.success(), "git clone failed");
    // Its own target directory (kept between runs): building the clone must not replace the
    // binary the other tests run, which may hold uncommitted changes.
    let target = std::env::var("ANYCLOUD_QUICKSTART_TARGET")
        .unwrap_or_else(|_| "/var/cache/anycloud/quickstart-target".into());
    let out = Command::new("bash")
        .arg(clone.join("scripts/quickstart.sh"))
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&clone)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let anycloud = Path::new(&target).join("debug/anycloud");
    let teardown = || {
        Command::new(&anycloud)
            .args(["destroy", "--auto-approve", "-q"])
            .current_dir(clone.join("examples/quickstart"))
            .output()
            .unwrap()
    };
    if !out.status.success() {
        teardown();
        panic!("the quickstart failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    }
    // The job counted the words of the two input files and the upload program put the
    // result in the output bucket, which the script listed and printed.
    assert!(
        stdout.contains("Apply complete! Resources: 11 added"),
        "{stdout}"
    );
    assert!(stdout.contains("wordcount.txt"), "{stdout}");
    assert!(
        stdout.contains("13 hello.txt") && stdout.contains("18 poem.txt"),
        "{stdout}"
    );
    let bucket =
        clone.join("examples/quickstart/.anycloud/local/buckets/quickstart-results/input-mode.txt");
    assert_eq!(
        std::fs::read_to_string(bucket).unwrap().trim(),
        "input is read-only"
    );
    let down = teardown();
    assert!(
        down.status.success(),
        "destroy failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
}
