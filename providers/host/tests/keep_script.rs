//! The output upload's keep step (`supervisor/rclone-output-keep.sh`) run for real: bash,
//! find, flock and rclone, with a local directory as the bucket. A "run" is what a new
//! container starts (its stamp written, its lists cleared); the disk stays, as it does when
//! a container is replaced on the same machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use anycloud_host::{render, VmLayout};

struct Machine {
    _dir: tempfile::TempDir,
    layout: VmLayout,
    bucket: PathBuf,
    output: PathBuf,
    keep: PathBuf,
    /// Every event's mtime, 2 s after the last (in the past): rclone's size-and-modtime
    /// comparison sees every rewrite, and `find -newer` every order, without sleeping.
    clock: std::cell::Cell<std::time::SystemTime>,
}

impl Machine {
    fn new() -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let layout = VmLayout::under(
            dir.path().join("host").to_str().unwrap(),
            dir.path().join("run").to_str().unwrap(),
        );
        let bucket = dir.path().join("bucket");
        let output = PathBuf::from(layout.mount("output"));
        for d in [&bucket, &output, &PathBuf::from(&layout.log_dir)] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&layout.rclone_config, "[local]\ntype = local\n").unwrap();
        let keep = dir.path().join("rclone-output-keep.sh");
        std::fs::write(
            &keep,
            render::output_keep_script(
                &layout,
                &format!("local:{}", bucket.display()),
                "anycloud-keep-test-no-such-container",
            ),
        )
        .unwrap();
        Machine {
            _dir: dir,
            layout,
            bucket,
            output,
            keep,
            clock: std::cell::Cell::new(
                std::time::SystemTime::now() - std::time::Duration::from_secs(3600),
            ),
        }
    }

    fn tick(&self, path: &Path) {
        let at = self.clock.get() + std::time::Duration::from_secs(2);
        self.clock.set(at);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(at)
            .unwrap();
    }

    /// What `container_run` does for a new run, with a readable run name.
    fn new_run(&self, name: &str) {
        std::fs::write(self.layout.run_stamp(), format!("{name}\n")).unwrap();
        self.tick(Path::new(&self.layout.run_stamp()));
        for entry in std::fs::read_dir(&self.layout.log_dir).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            if file.starts_with("rclone-output.uploaded.")
                || file.starts_with("rclone-output.leftover.")
                || file.starts_with("rclone-output.failed.")
            {
                std::fs::remove_file(path).unwrap();
            }
        }
    }

    /// The job writes a file (after the run began: the stamp is older).
    fn job_writes(&self, name: &str, text: &str) {
        let path = self.output.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        self.tick(&path);
    }

    /// One round of the upload program: true when it succeeded.
    fn round(&self) -> bool {
        let out = Command::new("bash")
            .arg(&self.keep)
            .args(["/usr/bin/rclone", "copy"])
            .arg(&self.output)
            .arg(format!("local:{}", self.bucket.display()))
            .args([
                "--verbose",
                "--fast-list",
                "--no-update-modtime",
                "--modify-window",
                "1s",
            ])
            .env("RCLONE_CONFIG", &self.layout.rclone_config)
            .output()
            .unwrap();
        out.status.success()
    }

    fn in_bucket(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.bucket.join(name)).ok()
    }

    fn kept(&self, run: &str, name: &str) -> Option<String> {
        self.in_bucket(&format!("{}/{run}/{name}", render::REPLACED_DIR))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(Path::new(&self.layout.log_dir).join("rclone-output.log"))
            .unwrap_or_default()
    }
}

/// A new container on the same machine finds the earlier run's files on the disk: a file it
/// rewrites later still has the earlier run's version kept, however many rounds came first.
#[test]
fn a_new_run_on_the_same_disk_keeps_the_earlier_runs_version_of_what_it_rewrites() {
    let m = Machine::new();
    m.new_run("run1");
    m.job_writes("model.txt", "run1 result");
    m.job_writes("notes.txt", "run1 notes");
    assert!(m.round(), "{}", m.log());
    assert!(m.round(), "{}", m.log());
    assert_eq!(m.in_bucket("model.txt").as_deref(), Some("run1 result"));

    m.new_run("run2");
    // Rounds before the new job writes anything: the earlier run's files are not its own.
    assert!(m.round(), "{}", m.log());
    assert!(m.round(), "{}", m.log());
    m.job_writes("model.txt", "run2 result");
    assert!(m.round(), "{}", m.log());
    assert_eq!(m.in_bucket("model.txt").as_deref(), Some("run2 result"));
    assert_eq!(
        m.kept("run2.rewritten", "model.txt").as_deref(),
        Some("run1 result"),
        "the earlier run's version is kept"
    );
    // Rewrites by the same run replace only its own version.
    m.job_writes("model.txt", "run2 result, later");
    assert!(m.round(), "{}", m.log());
    assert!(m.round(), "{}", m.log());
    assert_eq!(
        m.in_bucket("model.txt").as_deref(),
        Some("run2 result, later")
    );
    assert_eq!(
        m.kept("run2.rewritten", "model.txt").as_deref(),
        Some("run1 result")
    );
    // What the new run never touched is neither moved nor copied.
    assert_eq!(m.in_bucket("notes.txt").as_deref(), Some("run1 notes"));
    assert_eq!(m.kept("run2", "notes.txt"), None);
}

/// A round that fails part-way has replaced some names already; the retry must not put the
/// run's own version over the earlier run's kept copy.
#[test]
fn a_round_that_fails_part_way_never_overwrites_a_kept_copy() {
    let m = Machine::new();
    m.new_run("run1");
    m.job_writes("model.txt", "run1 result");
    assert!(m.round(), "{}", m.log());

    m.new_run("run2");
    m.job_writes("model.txt", "run2 first");
    // `extra/part` cannot be uploaded while the bucket holds a file named `extra`.
    std::fs::write(m.bucket.join("extra"), "in the way").unwrap();
    m.job_writes("extra/part", "x");
    assert!(!m.round(), "the round must fail");
    assert_eq!(m.in_bucket("model.txt").as_deref(), Some("run2 first"));
    assert_eq!(m.kept("run2", "model.txt").as_deref(), Some("run1 result"));

    std::fs::remove_file(m.bucket.join("extra")).unwrap();
    m.job_writes("model.txt", "run2 second");
    assert!(m.round(), "{}", m.log());
    assert!(m.round(), "{}", m.log());
    assert_eq!(m.in_bucket("model.txt").as_deref(), Some("run2 second"));
    assert_eq!(
        m.kept("run2", "model.txt").as_deref(),
        Some("run1 result"),
        "the copy kept before the failure stands"
    );
    assert_eq!(
        m.kept("run2.retry1", "model.txt").as_deref(),
        Some("run2 first"),
        "what the retry replaced is kept beside it"
    );
    assert_eq!(m.in_bucket("extra/part").as_deref(), Some("x"));
}

/// `--files-from` would read `#name` and `;name` as comments and trim spaces: every name
/// the job writes must reach the bucket, first round and later ones.
#[test]
fn names_that_look_like_comments_or_have_spaces_are_uploaded() {
    let m = Machine::new();
    m.new_run("run1");
    let names = [
        "#epoch-1.txt",
        ";notes",
        " leading space",
        "trailing space ",
    ];
    for name in names {
        m.job_writes(name, "first");
    }
    assert!(m.round(), "{}", m.log());
    for name in names {
        m.job_writes(name, "second");
    }
    assert!(m.round(), "{}", m.log());
    for name in names {
        assert_eq!(m.in_bucket(name).as_deref(), Some("second"), "{name:?}");
    }
}

/// The bucket holds another version than the one an earlier run left on the disk (a shared
/// bucket, another machine's upload, a hand edit): both are kept when the new job rewrites
/// the file.
#[test]
fn a_leftover_that_differs_from_the_bucket_keeps_both_versions() {
    let m = Machine::new();
    m.new_run("run1");
    m.job_writes("model.txt", "run1 result");
    assert!(m.round(), "{}", m.log());
    std::fs::write(m.bucket.join("model.txt"), "from elsewhere").unwrap();

    m.new_run("run2");
    assert!(m.round(), "{}", m.log());
    assert!(m.round(), "{}", m.log());
    assert_eq!(
        m.kept("run2", "model.txt").as_deref(),
        Some("from elsewhere")
    );
    assert_eq!(m.in_bucket("model.txt").as_deref(), Some("run1 result"));
    m.job_writes("model.txt", "run2 result");
    assert!(m.round(), "{}", m.log());
    assert!(m.round(), "{}", m.log());
    assert_eq!(m.in_bucket("model.txt").as_deref(), Some("run2 result"));
    assert_eq!(
        m.kept("run2", "model.txt").as_deref(),
        Some("from elsewhere"),
        "the copy kept first stands"
    );
    assert_eq!(
        m.kept("run2.rewritten", "model.txt").as_deref(),
        Some("run1 result")
    );
}
