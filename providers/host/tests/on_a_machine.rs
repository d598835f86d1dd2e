//! Host scripts run for real on this machine (as a cloud VM runs them): the connectivity
//! check's waiting, and job containers kept from the machine's metadata service while the
//! machine's own processes reach it.
//!
//! Needs root, bash, rclone, ip (network namespaces), iptables, dockerd, docker and a static
//! busybox (`scripts/prereqs.sh`).

#[path = "support/bash.rs"]
mod bash_support;
use bash_support::bash;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anycloud_host::{render, scripts, VmLayout};

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn layout(dir: &Path) -> VmLayout {
    let layout = VmLayout::under(
        dir.join("host").to_str().unwrap(),
        dir.join("run").to_str().unwrap(),
    );
    std::fs::create_dir_all(&layout.log_dir).unwrap();
    std::fs::write(&layout.rclone_config, "[local]\ntype = local\n").unwrap();
    layout
}

/// rclone's listing commands ignore `--retries`: the check must wait by itself, as long as
/// it was told, for storage that becomes reachable late (a grant still spreading).
#[test]
fn the_connectivity_check_waits_for_storage_that_becomes_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout(dir.path());
    let bucket = dir.path().join("granted-late");
    let script = scripts::rclone_check(&layout, &format!("local:{}", bucket.display()), 10, 1);
    // The "grant" arrives 2.5 s after the check starts.
    let late = bucket.clone();
    let granter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(2500));
        std::fs::create_dir_all(late.join("sub")).unwrap();
    });
    let started = Instant::now();
    let out = bash(&script, None);
    granter.join().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "it passed before the storage was there: {}",
        text(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("connectivity check 1/10 failed") && stderr.contains("trying again in 1s"),
        "each wait is said: {}",
        text(&out)
    );
}

/// Told to try 3 times, it tries 3 times, then fails with rclone's own words.
#[test]
fn the_connectivity_check_gives_up_after_its_tries_with_rclones_words() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout(dir.path());
    let missing = dir.path().join("never-granted");
    let script = scripts::rclone_check(&layout, &format!("local:{}", missing.display()), 3, 1);
    let started = Instant::now();
    let out = bash(&script, None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "3 tries 1 s apart take 2 s at least: {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("connectivity check 2/3 failed"),
        "{}",
        text(&out)
    );
    assert!(stderr.contains("after 3 tries"), "{}", text(&out));
    assert!(
        stderr.contains("directory not found"),
        "rclone's last words: {}",
        text(&out)
    );
}

/// A network namespace standing in for a cloud VM: its own metadata service at
/// 169.254.169.254, its own dockerd (containers on its bridge).
struct Vm {
    namespace: String,
    dir: tempfile::TempDir,
    dockerd: Option<Child>,
    metadata: Child,
}

const TOKEN: &str = "the-vm-identity-token";

impl Vm {
    fn start() -> Vm {
        let namespace = format!("acmd{}", std::process::id() % 100000);
        let _ = Command::new("ip")
            .args(["netns", "del", &namespace])
            .status();
        must(&["ip", "netns", "add", &namespace]);
        must(&["ip", "-n", &namespace, "link", "set", "lo", "up"]);
        // As on a cloud VM the address is the metadata service's; here it is the VM's own.
        must(&[
            "ip",
            "-n",
            &namespace,
            "addr",
            "add",
            "169.254.169.254/32",
            "dev",
            "lo",
        ]);
        let dir = tempfile::Builder::new()
            .prefix("anycloud-md-")
            .tempdir()
            .unwrap();
        let www = dir.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("token"), TOKEN).unwrap();
        let metadata = Command::new("ip")
            .args(["netns", "exec", &namespace, "/bin/busybox", "httpd", "-f"])
            .args(["-p", "169.254.169.254:80", "-h"])
            .arg(&www)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut vm = Vm {
            namespace,
            dir,
            dockerd: None,
            metadata,
        };
        vm.start_dockerd();
        // A job image: busybox, with wget.
        let rootfs = vm.dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        let load = vm.docker(&format!(
            "tar -C {} -c . | docker import -c 'ENTRYPOINT [\"/bin/busybox\"]' - anycloud-md-job:1 >/dev/null",
            rootfs.display()
        ));
        assert!(load.status.success(), "{}", text(&load));
        vm
    }

    fn socket(&self) -> String {
        format!("unix://{}/docker.sock", self.dir.path().display())
    }

    fn start_dockerd(&mut self) {
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        // nsenter, not `ip netns exec`: that one remounts /sys, hiding the cgroup
        // filesystems dockerd needs.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.namespace))
            .arg("dockerd")
            .arg(format!("--data-root={}/data", d.display()))
            .arg(format!("--exec-root={}/exec", d.display()))
            .arg(format!("--pidfile={}/docker.pid", d.display()))
            .arg(format!("--host={}", self.socket()))
            .args(["--iptables=false", "--ip6tables=false"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.dockerd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.docker("docker info").status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                std::fs::read_to_string(d.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop_dockerd(&mut self) {
        if let Some(mut child) = self.dockerd.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// A command on the "VM" (as root, in its namespace), its docker CLI on its dockerd.
    fn docker(&self, script: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.namespace, "bash", "-c", script])
            .env("DOCKER_HOST", self.socket())
            .output()
            .unwrap()
    }

    /// What a job container gets when it asks for the VM's token.
    fn container_asks(&self) -> Output {
        // nc, not busybox's wget: a static busybox's wget crashes in an image without NSS.
        self.docker(
            "docker run --rm --network bridge anycloud-md-job:1 sh -c 'printf \"GET /token HTTP/1.0\\r\\n\\r\\n\" | /bin/busybox nc -w 3 169.254.169.254 80'",
        )
    }

    /// What a process of the VM itself (rclone) gets.
    fn vm_asks(&self) -> Output {
        self.docker("curl -s -m 3 http://169.254.169.254/token")
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.docker("docker rm -f $(docker ps -aq) >/dev/null 2>&1");
        self.stop_dockerd();
        let _ = self.metadata.kill();
        let _ = self.metadata.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .status();
    }
}

fn must(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", text(&out));
}

fn got_token(out: &Output) -> bool {
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains(TOKEN)
}

/// Azure and GCP have no hop limit on their metadata services: a container on Docker's
/// bridge gets the VM identity's token unless VM init keeps it out. After VM init's rule
/// the container gets nothing while the VM itself (its rclone) still does, across a
/// restart of dockerd, and the boot script puts the rule back after a reboot forgot it.
#[test]
fn job_containers_get_no_token_from_the_metadata_service_and_the_vm_still_does() {
    let mut vm = Vm::start();
    assert!(
        got_token(&vm.container_asks()),
        "without the rule a container reaches the metadata service (else this test proves nothing): {}",
        text(&vm.container_asks())
    );

    let init = vm.docker(&format!(
        "set -e\n{}block_metadata",
        scripts::block_metadata()
    ));
    assert!(init.status.success(), "{}", text(&init));
    // Run again, it adds nothing.
    let again = vm.docker(&format!(
        "set -e\n{}block_metadata",
        scripts::block_metadata()
    ));
    assert!(again.status.success(), "{}", text(&again));
    let rules = vm.docker("iptables -w -t raw -S PREROUTING");
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    assert_eq!(
        rules.matches("169.254.169.254").count(),
        1,
        "one rule, however often VM init runs: {rules}"
    );
    let refused = vm.container_asks();
    assert!(!got_token(&refused), "{}", text(&refused));
    assert!(got_token(&vm.vm_asks()), "{}", text(&vm.vm_asks()));

    // dockerd restarted: the rule stays.
    vm.stop_dockerd();
    vm.start_dockerd();
    assert!(!got_token(&vm.container_asks()));
    assert!(got_token(&vm.vm_asks()));

    // A reboot forgets every rule; the boot script puts it back before any job starts.
    must(&[
        "ip",
        "netns",
        "exec",
        &vm.namespace,
        "iptables",
        "-w",
        "-t",
        "raw",
        "-F",
        "PREROUTING",
    ]);
    assert!(got_token(&vm.container_asks()), "the rule was flushed");
    let layout = layout(vm.dir.path());
    std::fs::create_dir_all(&layout.supervisor_dir).unwrap();
    let boot = Path::new(&layout.boot_script()).to_owned();
    std::fs::write(
        &boot,
        render::boot_script(&layout, "anycloud-md-no-such-job", true),
    )
    .unwrap();
    let booted = vm.docker(&format!("bash {}", boot.display()));
    assert!(booted.status.success(), "{}", text(&booted));
    let refused = vm.container_asks();
    assert!(!got_token(&refused), "{}", text(&refused));
    assert!(got_token(&vm.vm_asks()));
}
