//! Snapshots of every script the host layer sends to a host, for a fixed layout.

#[path = "support/bash.rs"]
mod bash_support;
use bash_support::bash;

use anycloud_host::{scripts, VmLayout};

fn layout() -> VmLayout {
    VmLayout::under("/srv/anycloud/hosts/train", "/srv/anycloud/run")
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
        ("vm_init", scripts::vm_init(&l, None, true)),
        (
            "vm_init_with_gpus",
            scripts::vm_init(&l, Some("ghcr.io/acme/train:1"), true),
        ),
        ("vm_init_host_network", scripts::vm_init(&l, None, false)),
        ("boot_install", scripts::boot_install(&l)),
        (
            "boot_script",
            anycloud_host::render::boot_script(&l, "anycloud-train-0123", true),
        ),
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
                None,
                true,
                None,
            ),
        ),
        (
            "container_run_as_image_user",
            scripts::container_run(
                &l,
                "anycloud-train-0123",
                "abcdef0123456789",
                &[l.mount("output")],
                "run --detach --name anycloud-train-0123 ghcr.io/acme/notebook:1",
                Some("ghcr.io/acme/notebook:1"),
                true,
                Some(&scripts::download_input(
                    &l,
                    "anycloud-input:acme-data",
                    &l.mount("input"),
                    true,
                )),
            ),
        ),
        (
            "container_stop",
            scripts::container_stop(&l, "anycloud-train-0123"),
        ),
        (
            "container_remove",
            scripts::container_remove("anycloud-train-0123"),
        ),
        ("probe", scripts::probe(&l, "anycloud-train-0123")),
        ("upload_logs", scripts::upload_logs(&l, None)),
        (
            "clear_checkpoint",
            scripts::clear_checkpoint(
                &l,
                "anycloud-train-0123",
                &l.mount("checkpoint"),
                Some("local:/srv/anycloud/buckets/train"),
            ),
        ),
        (
            "clear_checkpoint_machine_only",
            scripts::clear_checkpoint(&l, "anycloud-train-0123", &l.mount("checkpoint"), None),
        ),
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
        (
            "idle_watcher",
            anycloud_host::idle::watcher_script(
                &l,
                "anycloud-train-0123",
                600,
                Some("local:/srv/anycloud/buckets/results"),
                Some(anycloud_host::idle::POWER_OFF),
            ),
        ),
        (
            "idle_watcher_machine_kept",
            anycloud_host::idle::watcher_script(&l, "anycloud-train-0123", 0, None, None),
        ),
        (
            "read_owner",
            scripts::read_owner("/srv/anycloud/hosts/train/.anycloud-owner"),
        ),
        (
            "claim_dir",
            scripts::claim_dir(
                "/srv/anycloud/hosts/train",
                ".anycloud-owner",
                "5d0f8c1e-lineage",
            ),
        ),
    ];
    for (name, script) in all {
        // The boot script is a file run by systemd (or by hand): it names its interpreter.
        let body = script.strip_prefix("#!/bin/bash\n").unwrap_or(&script);
        let body = body
            .split_once('\n')
            .filter(|(first, _)| first.starts_with('#'))
            .map_or(body, |(_, rest)| rest);
        assert!(
            body.starts_with("set -"),
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

/// The checkpoint restore runs again on a machine that kept its disk (a reboot, a re-run
/// apply): what the job wrote since the last upload is newer and must stay.
#[test]
fn a_restore_never_replaces_newer_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("host");
    let l = VmLayout::under(
        base.to_str().unwrap(),
        dir.path().join("run").to_str().unwrap(),
    );
    let bucket = dir.path().join("bucket");
    let local = std::path::PathBuf::from(l.mount("checkpoint"));
    std::fs::create_dir_all(&bucket).unwrap();
    std::fs::create_dir_all(&local).unwrap();
    std::fs::create_dir_all(&l.log_dir).unwrap();
    std::fs::write(&l.rclone_config, "[local]\ntype = local\n").unwrap();
    std::fs::write(bucket.join("counter"), "5\n").unwrap();
    std::fs::write(bucket.join("only-in-bucket"), "restored\n").unwrap();
    bash(
        &format!("touch -d '10 minutes ago' {}/counter", bucket.display()),
        None,
    );
    std::fs::write(local.join("counter"), "9\n").unwrap();
    let script = scripts::download(
        &l,
        "copy",
        &format!("local:{}", bucket.display()),
        &l.mount("checkpoint"),
        "rclone-checkpoint-restore.log",
    );
    let out = bash(&script, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(local.join("counter")).unwrap(),
        "9\n"
    );
    assert_eq!(
        std::fs::read_to_string(local.join("only-in-bucket")).unwrap(),
        "restored\n"
    );
}

/// supervisord's socket lives in a directory of the deploying user's own: one that someone
/// else made first (to receive supervisorctl's commands) is refused, never used.
#[test]
fn the_socket_directory_of_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let squatted = bash(&format!("chown 65534:65534 {}", run.display()), None);
    assert!(squatted.status.success(), "the test runs as root");
    let l = VmLayout::under(
        dir.path().join("host").to_str().unwrap(),
        run.to_str().unwrap(),
    );
    std::fs::create_dir_all(&l.supervisor_dir).unwrap();
    std::fs::create_dir_all(&l.log_dir).unwrap();
    let out = bash(&scripts::supervisord_restart(&l), None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to another user"), "{err}");
    assert!(!std::path::Path::new(&l.supervisor_socket).exists());

    // Its own directory is made private.
    let own = dir.path().join("own-run");
    let out = bash(
        &format!("set -e; {}", scripts::make_dir(own.to_str().unwrap())),
        None,
    );
    assert!(out.status.success());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&own).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

/// With GPUs asked, VM init runs nvidia-smi in a container of the job's image: where a
/// container cannot use the GPUs, the step fails with what nvidia-smi said (a stand-in
/// `docker` here: no GPU on the test machines); where it can, the step goes on.
#[test]
fn the_gpu_check_fails_with_nvidia_smis_words() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let docker = dir.path().join("docker");
    let stand_in = |body: &str| {
        std::fs::write(
            &docker,
            format!(
                "#!/bin/bash\necho \"$*\" >>{}/args\n{body}",
                dir.path().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let script = format!(
        "set -euo pipefail\n{}echo after",
        scripts::gpu_check("ghcr.io/acme/train:1")
    );
    stand_in("echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\"\nexit 9\n");
    let out = bash(&script, Some(dir.path()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the job asks for GPUs but a container cannot use them (docker run --gpus all --entrypoint nvidia-smi ghcr.io/acme/train:1):"), "{err}");
    assert!(
        err.contains(
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
        ),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("after"));
    let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
    assert_eq!(
        args,
        "run --rm --quiet --gpus all --entrypoint nvidia-smi ghcr.io/acme/train:1\n"
    );

    stand_in("echo '| NVIDIA-SMI 550.54.15  Driver Version: 550.54.15  CUDA Version: 12.4 |'\n");
    let out = bash(&script, Some(dir.path()));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "after\n");
}
