//! Snapshots of every script the host layer sends to a host, for a fixed layout.

use anycloud_host::{scripts, VmLayout};

fn layout() -> VmLayout {
    VmLayout::under("/srv/anycloud/hosts/train")
}

#[test]
fn every_script_sent_to_a_host() {
    let l = layout();
    let pairs = vec![
        (
            l.mount("output"),
            "local:/srv/anycloud/buckets/results".to_owned(),
        ),
        (
            l.mount("checkpoint"),
            "local:/srv/anycloud/buckets/train".to_owned(),
        ),
    ];
    let all = [
        ("vm_init", scripts::vm_init(&l)),
        ("supervisord_restart", scripts::supervisord_restart(&l)),
        ("supervisord_stop", scripts::supervisord_stop(&l)),
        (
            "rclone_check",
            scripts::rclone_check(&l, "local:/srv/anycloud/buckets", 30, 15),
        ),
        (
            "sync_input",
            scripts::download(
                &l,
                "sync",
                "local:/srv/anycloud/buckets/data",
                &l.mount("input"),
                "rclone-input.log",
            ),
        ),
        ("program_apply", scripts::program_apply(&l, "rclone-output")),
        (
            "program_remove",
            scripts::program_remove(&l, "rclone-output"),
        ),
        ("final_flush", scripts::final_flush(&l, &pairs)),
        (
            "container_run",
            scripts::container_run(
                &l,
                "anycloud-train-0123",
                "abcdef0123456789",
                &[l.mount("output")],
                "run --detach --name anycloud-train-0123 busybox",
            ),
        ),
        (
            "container_stop",
            scripts::container_stop("anycloud-train-0123"),
        ),
        (
            "container_remove",
            scripts::container_remove("anycloud-train-0123"),
        ),
        ("probe", scripts::probe(&l, "anycloud-train-0123")),
        (
            "host_probe",
            scripts::host_probe(
                &[(l.clone(), "anycloud-train-0123".to_owned())],
                &["/srv/anycloud/buckets/results".to_owned()],
            ),
        ),
        (
            "upload",
            scripts::upload(
                "/srv/anycloud/hosts/train/rclone.conf",
                0o600,
                16,
                "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4",
            ),
        ),
        (
            "make_dir",
            scripts::make_dir("/srv/anycloud/buckets/results"),
        ),
        (
            "remove_dir",
            scripts::remove_dir("/srv/anycloud/hosts/train"),
        ),
        (
            "host_cleanup",
            scripts::host_cleanup(&l, "anycloud-train-0123"),
        ),
    ];
    for (name, script) in all {
        assert!(
            script.starts_with("set -"),
            "{name} must run with strict bash options"
        );
        assert_syntax(name, &script);
        insta::assert_snapshot!(name, script);
    }
}

/// `bash -n` parses without running: a quoting slip in a template fails here, not on a VM.
fn assert_syntax(name: &str, script: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("bash")
        .arg("-n")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{name} is not valid bash: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A cut connection ends the upload's stdin early: the file it was replacing must survive.
#[test]
fn an_incomplete_upload_replaces_nothing() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("supervisord.conf");
    std::fs::write(&path, "the good file\n").unwrap();
    let body = b"a whole new file\n";
    let sha = anycloud_provider::digest::sha256_hex(body);
    let run = |sent: &[u8]| {
        let script = scripts::upload(path.to_str().unwrap(), 0o644, body.len(), &sha);
        let mut child = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(sent).unwrap();
        child.wait().unwrap().code()
    };
    assert_eq!(run(&body[..5]), Some(scripts::UPLOAD_INCOMPLETE));
    assert_eq!(run(b""), Some(scripts::UPLOAD_INCOMPLETE));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "the good file\n");
    assert_eq!(run(body), Some(0));
    assert_eq!(std::fs::read(&path).unwrap(), body);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "no temporary file is left");
}
