//! The checkpoint restore (`scripts::download` with `copy`) run for real, as root, with a
//! local directory as the bucket: it writes into a directory the job can write, and never
//! follows what the job planted there out of it (issue 24, item 8).

#[path = "support/bash.rs"]
mod bash_support;
use bash_support::bash;

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anycloud_host::{scripts, VmLayout};

struct Machine {
    dir: tempfile::TempDir,
    layout: VmLayout,
    bucket: PathBuf,
    checkpoint: PathBuf,
}

impl Machine {
    fn new() -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let layout = VmLayout::under(
            dir.path().join("host").to_str().unwrap(),
            dir.path().join("run").to_str().unwrap(),
        );
        let bucket = dir.path().join("bucket");
        let checkpoint = PathBuf::from(layout.mount("checkpoint"));
        for d in [&bucket, &checkpoint, &PathBuf::from(&layout.log_dir)] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&layout.rclone_config, "[local]\ntype = local\n").unwrap();
        Machine {
            dir,
            layout,
            bucket,
            checkpoint,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn in_bucket(&self, name: &str, text: &str) {
        let path = self.bucket.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// The restore as the checkpoint restore step sends it, with `path` first in `PATH`.
    fn restore(&self, path: Option<&Path>) -> (bool, String) {
        let script = scripts::download(
            &self.layout,
            "copy",
            &format!("local:{}", self.bucket.display()),
            &self.layout.mount("checkpoint"),
            "rclone-checkpoint-restore.log",
        );
        let out = bash(&script, path);
        let log = std::fs::read_to_string(
            Path::new(&self.layout.log_dir).join("rclone-checkpoint-restore.log"),
        )
        .unwrap_or_default();
        (
            out.status.success(),
            format!(
                "stderr:\n{}\nrclone's log:\n{log}",
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

/// Every entry under `dir` (not following links) with its content, or what it links to.
fn tree(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            let kind = std::fs::symlink_metadata(&path).unwrap().file_type();
            let what = if kind.is_symlink() {
                format!("link to {}", std::fs::read_link(&path).unwrap().display())
            } else if kind.is_dir() {
                todo.push(path.clone());
                "dir".to_owned()
            } else if kind.is_file() {
                std::fs::read_to_string(&path).unwrap()
            } else {
                "special".to_owned()
            };
            found.push((name, what));
        }
    }
    found.sort();
    found
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

/// The job planted a link to a directory and one to a file (and, as root can in a container,
/// a device node) where the bucket holds a directory and files of the same names: the restore
/// removes them, says so, writes the bucket's files inside the checkpoint, and changes nothing
/// they pointed at.
#[test]
fn the_restore_never_writes_through_what_the_job_planted() {
    let m = Machine::new();
    let victim_dir = m.path("victim_dir");
    let victim_file = m.path("victim_file");
    std::fs::create_dir_all(&victim_dir).unwrap();
    std::fs::write(victim_dir.join("keep"), "the host's own\n").unwrap();
    std::fs::write(&victim_file, "the host's own file\n").unwrap();
    // Older than the bucket's: even a restore comparing through the link would write.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&victim_file)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let before = (
        tree(&victim_dir),
        std::fs::read_to_string(&victim_file).unwrap(),
    );

    std::os::unix::fs::symlink(&victim_dir, m.checkpoint.join("outside")).unwrap();
    std::os::unix::fs::symlink(&victim_file, m.checkpoint.join("file")).unwrap();
    std::fs::create_dir_all(m.checkpoint.join("deeper")).unwrap();
    std::os::unix::fs::symlink(&victim_dir, m.checkpoint.join("deeper/in")).unwrap();
    m.in_bucket("outside/x", "restored x\n");
    m.in_bucket("file", "restored file\n");
    m.in_bucket("deeper/in/y", "restored y\n");
    let device = is_root()
        && bash(
            &format!("mknod {}/device c 1 3", m.checkpoint.display()),
            None,
        )
        .status
        .success();
    if device {
        m.in_bucket("device", "restored device\n");
    }

    let (ok, said) = m.restore(None);
    assert!(ok, "{said}");

    assert_eq!(
        (
            tree(&victim_dir),
            std::fs::read_to_string(&victim_file).unwrap()
        ),
        before,
        "what the links pointed at is unchanged\n{said}"
    );
    let mut want = vec![
        ("deeper".to_owned(), "dir".to_owned()),
        ("deeper/in".to_owned(), "dir".to_owned()),
        ("deeper/in/y".to_owned(), "restored y\n".to_owned()),
        ("file".to_owned(), "restored file\n".to_owned()),
        ("outside".to_owned(), "dir".to_owned()),
        ("outside/x".to_owned(), "restored x\n".to_owned()),
    ];
    if device {
        want.push(("device".to_owned(), "restored device\n".to_owned()));
        want.sort();
    }
    assert_eq!(
        tree(&m.checkpoint),
        want,
        "the bucket's files are restored inside the checkpoint\n{said}"
    );
    for (link, to) in [
        ("outside", &victim_dir),
        ("file", &victim_file),
        ("deeper/in", &victim_dir),
    ] {
        let line = format!(
            "removed the link {}/{link} -> {} before rclone copy",
            m.checkpoint.display(),
            to.display()
        );
        assert!(said.contains(&line), "says {line:?}\n{said}");
    }
    if device {
        let line = format!(
            "removed the device node {}/device before rclone copy",
            m.checkpoint.display()
        );
        assert!(said.contains(&line), "says {line:?}\n{said}");
        assert!(
            std::fs::symlink_metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device(),
            "the device itself stays"
        );
    }
}

/// A link that appears after the links were cleared (the job may be running while a restore
/// runs again on a machine that kept its disk) is not followed either: rclone writes under a
/// `nosymfollow` mount of the checkpoint, so that file fails and the restore with it. A
/// `find` that clears nothing stands for the job winning that race.
#[test]
fn a_link_made_while_rclone_writes_is_not_followed() {
    let m = Machine::new();
    let victim_dir = m.path("victim_dir");
    let victim_file = m.path("victim_file");
    std::fs::create_dir_all(&victim_dir).unwrap();
    std::fs::write(&victim_file, "the host's own file\n").unwrap();
    std::os::unix::fs::symlink(&victim_dir, m.checkpoint.join("outside")).unwrap();
    std::os::unix::fs::symlink(&victim_file, m.checkpoint.join("file")).unwrap();
    m.in_bucket("outside/x", "restored x\n");
    m.in_bucket("file", "restored file\n");
    m.in_bucket("inside", "restored\n");
    let bin = m.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("find"), "#!/bin/sh\nexit 0\n").unwrap();
    bash(&format!("chmod +x {}/find", bin.display()), None);

    let (ok, said) = m.restore(Some(&bin));
    if said.contains("warning: cannot mount") {
        eprintln!("this host cannot mount nosymfollow (Linux 5.10+, root or user namespaces): not tested\n{said}");
        return;
    }
    assert!(!ok, "a link in the way fails the restore\n{said}");
    // rclone 1.60: a linked file fails its open, a linked directory its mkdir.
    for why in [
        "file: Failed to copy: open",
        "too many levels of symbolic links",
        "outside/x: Failed to copy: mkdir",
    ] {
        assert!(said.contains(why), "rclone says {why:?}\n{said}");
    }
    assert_eq!(tree(&victim_dir), vec![], "nothing written through\n{said}");
    assert_eq!(
        std::fs::read_to_string(&victim_file).unwrap(),
        "the host's own file\n",
        "nothing written through\n{said}"
    );
    assert_eq!(
        std::fs::read_to_string(m.checkpoint.join("inside")).unwrap(),
        "restored\n",
        "the rest is restored\n{said}"
    );
}

/// The restore's script, for review (the input's is `scripts__sync_input`).
#[test]
fn the_restore_script() {
    let l = VmLayout::under("/srv/anycloud/hosts/train", "/srv/anycloud/run");
    let script = scripts::download(
        &l,
        "copy",
        "local:/srv/anycloud/buckets/train",
        &l.mount("checkpoint"),
        "rclone-checkpoint-restore.log",
    );
    insta::assert_snapshot!("checkpoint_restore", script);
}
