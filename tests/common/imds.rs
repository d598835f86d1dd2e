//! The instance metadata service of a test host (tests/fixtures/imds.py): inside the host's
//! network namespace, at EC2's address, so rclone's `env_auth` on the "VM" signs in as the
//! deployment's role with credentials from moto's STS, as on EC2.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where EC2's metadata service answers; the test host's sessions name it in
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
pub const ADDRESS: &str = "169.254.169.254";
pub const ENDPOINT: &str = "http://169.254.169.254/";

pub struct Imds {
    child: Child,
    log: PathBuf,
    namespace: String,
}

impl Imds {
    /// Starts the service in `namespace` for `role_arn`, minting through moto at `moto_url`
    /// (which the namespace reaches). Its log goes in `dir`.
    pub fn start(
        namespace: &str,
        moto_url: &str,
        role_arn: &str,
        python: &Path,
        dir: &Path,
    ) -> Imds {
        let log = dir.join("imds.log");
        let _ = std::fs::remove_file(&log);
        let added = Command::new("ip")
            .args(["-n", namespace, "addr", "add", &format!("{ADDRESS}/32")])
            .args(["dev", "lo"])
            .output()
            .unwrap();
        assert!(added.status.success(), "adding {ADDRESS}: {added:?}");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imds.py");
        let child = Command::new("ip")
            .args(["netns", "exec", namespace])
            .arg(python)
            .arg(script)
            .args([ADDRESS, "80", moto_url, role_arn])
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the metadata service");
        let imds = Imds {
            child,
            log,
            namespace: namespace.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !imds.log_text().contains("ready") {
            assert!(
                Instant::now() < deadline,
                "the metadata service did not start: {}",
                imds.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        imds
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many credentials it minted (moto STS AssumeRole).
    pub fn mints(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.starts_with("minted "))
            .count()
    }

    /// A command run in the host's network namespace with only what a VM's session has:
    /// no credentials, the metadata service's endpoint.
    pub fn on_host(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespace, "env", "-i"])
            .arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .arg("HOME=/nonexistent")
            .arg(format!("AWS_EC2_METADATA_SERVICE_ENDPOINT={ENDPOINT}"))
            .arg(program);
        cmd
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        // `ip netns exec` execs the program: the child is the service itself.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
