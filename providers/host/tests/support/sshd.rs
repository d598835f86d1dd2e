//! A test "VM": a network namespace of its own, reached over a veth pair, with OpenSSH's sshd
//! listening on its address. Files and processes are shared with this machine (only the
//! network is separate), so tests give every host its own root directory.
//!
//! Needs root, `ip` (iproute2) and `/usr/sbin/sshd` (openssh-server): `scripts/prereqs.sh`.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct TestHost {
    pub namespace: String,
    pub address: String,
    /// This machine's address on the host's link: servers the host must reach bind here.
    pub gateway: String,
    pub port: u16,
    pub user: String,
    pub dir: tempfile::TempDir,
    pub authorized_keys: PathBuf,
    /// `SHA256:…` of the host key sshd offers.
    pub host_key_fingerprint: String,
    veth: String,
    sshd: Option<Child>,
    /// Set in every session (sshd's `SetEnv`), e.g. what an instance role would provide.
    env: Vec<(String, String)>,
    /// A login user made for this host (removed with it).
    made_user: Option<String>,
}

fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

fn must(args: &[&str]) {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestHost {
    /// A new host with sshd up and an empty `authorized_keys`.
    pub fn start() -> TestHost {
        TestHost::start_with_env(&[])
    }

    /// A host whose sessions see `env`.
    pub fn start_with_env(env: &[(&str, &str)]) -> TestHost {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // Distinct per process and per host, and short: interface names allow 15 bytes.
        let tag = format!("{}{}", pid % 100_000, n);
        let namespace = format!("acns{tag}");
        let veth = format!("acv{tag}");
        let peer = format!("acp{tag}");
        let subnet = format!("10.{}.{}", 200 + (pid % 50), n + 1);
        let address = format!("{subnet}.2");
        // A namespace left by a killed run of the same pid would clash: remove it first.
        let _ = sh(&["ip", "netns", "del", &namespace]);
        let _ = sh(&["ip", "link", "del", &veth]);
        must(&["ip", "netns", "add", &namespace]);
        must(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer,
        ]);
        must(&["ip", "link", "set", &peer, "netns", &namespace]);
        must(&["ip", "addr", "add", &format!("{subnet}.1/24"), "dev", &veth]);
        must(&["ip", "link", "set", &veth, "up"]);
        must(&[
            "ip",
            "-n",
            &namespace,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            &peer,
        ]);
        must(&["ip", "-n", &namespace, "link", "set", &peer, "up"]);
        must(&["ip", "-n", &namespace, "link", "set", "lo", "up"]);

        let dir = tempfile::Builder::new()
            .prefix("anycloud-host-")
            .tempdir()
            .unwrap();
        let host_key = dir.path().join("host_key");
        new_host_key(&host_key);
        let authorized_keys = dir.path().join("authorized_keys");
        std::fs::write(&authorized_keys, "").unwrap();
        let mut host = TestHost {
            namespace,
            gateway: format!("{subnet}.1"),
            address,
            port: 22,
            user: "root".into(),
            host_key_fingerprint: fingerprint_of(&host_key.with_extension("pub")),
            dir,
            authorized_keys,
            veth,
            sshd: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            made_user: None,
        };
        host.write_config();
        host.start_sshd();
        host
    }

    /// sshd's own defaults for the limits on connections, written out: tests run against
    /// them as a stock machine has them.
    fn write_config(&self) {
        let d = self.dir.path().display();
        let conf = format!(
            "Port {port}\nListenAddress {addr}\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\n\
             Subsystem sftp internal-sftp\n\
             MaxStartups 10:30:100\nMaxSessions 10\n",
            port = self.port,
            addr = self.address,
        );
        let conf = if self.env.is_empty() {
            conf
        } else {
            let pairs: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{conf}SetEnv {}\n", pairs.join(" "))
        };
        std::fs::write(self.dir.path().join("sshd_config"), conf).unwrap();
    }

    /// Starts sshd (in the foreground, so its pid is ours) and waits until it answers.
    pub fn start_sshd(&mut self) {
        std::fs::create_dir_all("/run/sshd").unwrap();
        let conf = self.dir.path().join("sshd_config");
        let log = self.dir.path().join("sshd.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.namespace, "/usr/sbin/sshd", "-D"])
            .arg("-f")
            .arg(&conf)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting sshd");
        self.sshd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = format!("{}:{}", self.address, self.port);
        while TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200))
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "sshd did not answer on {addr}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops sshd and cuts every SSH session into the host, as a reboot or a network drop
    /// would; what those sessions started in the background (supervisord) lives on.
    pub fn stop_sshd(&mut self) {
        if let Some(mut child) = self.sshd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in self.pids() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "sshd" {
                let _ = sh(&["kill", "-9", &pid.to_string()]);
            }
        }
    }

    /// A different host key, as a rebuilt machine (or an impostor) would offer.
    pub fn replace_host_key(&mut self) {
        self.stop_sshd();
        let key = self.dir.path().join("host_key");
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        new_host_key(&key);
        self.host_key_fingerprint = fingerprint_of(&key.with_extension("pub"));
        self.start_sshd();
    }

    /// Logs in as a new user who is not root and may use sudo without a password, as cloud
    /// images do (`admin` on Debian's). sudo keeps the session's `SetEnv` variables (on a
    /// real VM the instance role needs none).
    pub fn with_sudo_user(mut self) -> TestHost {
        let name = format!("ac{}", self.namespace.trim_start_matches("acns"));
        let _ = sh(&["userdel", "-r", &name]);
        // `*`, not a locked `!`: sshd without PAM refuses key logins of locked accounts.
        must(&["useradd", "-m", "-s", "/bin/bash", "-p", "*", &name]);
        let keep: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        let mut rule = format!("{name} ALL=(ALL) NOPASSWD:ALL\n");
        if !keep.is_empty() {
            rule.push_str(&format!(
                "Defaults:{name} env_keep += \"{}\"\n",
                keep.join(" ")
            ));
        }
        let file = format!("/etc/sudoers.d/{name}");
        std::fs::write(&file, rule).unwrap();
        must(&["chmod", "0440", &file]);
        self.user = name.clone();
        self.made_user = Some(name);
        self
    }

    pub fn authorize(&self, public_key_line: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.authorized_keys)
            .unwrap();
        writeln!(f, "{}", public_key_line.trim()).unwrap();
    }

    /// Every process whose network namespace is this host's.
    pub fn pids(&self) -> Vec<u32> {
        let out = sh(&["ip", "netns", "pids", &self.namespace]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    pub fn sshd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(mut child) = self.sshd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Everything started inside the host (sessions, supervisord, rclone) goes with it.
        for pid in self.pids() {
            let _ = sh(&["kill", "-9", &pid.to_string()]);
        }
        let _ = sh(&["ip", "netns", "del", &self.namespace]);
        let _ = sh(&["ip", "link", "del", &self.veth]);
        if let Some(name) = self.made_user.take() {
            let _ = std::fs::remove_file(format!("/etc/sudoers.d/{name}"));
            let _ = sh(&["userdel", "-r", &name]);
        }
    }
}

/// A fresh ed25519 host key at `path` (and `path.pub`).
fn new_host_key(path: &Path) {
    must(&[
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-f",
        path.to_str().unwrap(),
    ]);
}

pub fn fingerprint_of(public_key: &Path) -> String {
    let out = sh(&[
        "ssh-keygen",
        "-l",
        "-E",
        "sha256",
        "-f",
        public_key.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no fingerprint in {text:?}"))
        .to_owned()
}
