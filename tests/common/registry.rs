//! A real registry for the image check's tests: Debian's `docker-registry` (the CNCF
//! distribution registry) on a loopback port, filled with Docker.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The registry, stopped when dropped.
pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn start() -> Registry {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog: {{ level: error }}\nstorage:\n  filesystem: {{ rootdirectory: {} }}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry is installed (scripts/prereqs.sh)");
    let registry = Registry {
        child,
        port,
        _dir: dir,
    };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the registry did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    registry
}

/// A one-file image imported into Docker and pushed to the registry as `image`.
pub fn push(image: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello"), "hi\n").unwrap();
    let script = format!(
        "set -e; tar -C {} -c . | docker import - {image} >/dev/null; docker push {image} >/dev/null; docker image rm {image} >/dev/null",
        dir.path().display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pushing {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
