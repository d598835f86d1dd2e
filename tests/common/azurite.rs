//! Azurite (Azure Storage's blob service emulator) as the blob service of a test host, the
//! way a VM on Azure sees the real one: HTTPS at `https://{account}.{suffix}` (rclone builds
//! that URL from `account` and `endpoint`), and bearer tokens that the host's rclone gets
//! from an instance metadata service at 169.254.169.254 for the VM's managed identity.
//!
//! - Azurite runs on this machine, on the test host's link (`--oauth basic`: it checks each
//!   token's issuer, audience and lifetime, not its signature), with a certificate for
//!   `*.blob.anycloud.test` signed by a CA made for the test;
//! - the test host resolves `{account}.blob.anycloud.test` to this machine and trusts only
//!   that CA, through `/etc/netns/<namespace>/` (which `ip netns exec` mounts over `/etc` for
//!   sshd and everything started from its sessions);
//! - a small metadata service in the host's namespace mints tokens for `storage.azure.com`.
//!
//! Needs node with `azurite` under /var/cache/anycloud/azurite, openssl, curl and python3
//! (`scripts/prereqs.sh`).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SUFFIX_HOST: &str = "blob.anycloud.test";
const AZURITE: &str = "/var/cache/anycloud/azurite/node_modules/.bin/azurite-blob";

pub struct Azurite {
    azurite: Child,
    imds: Option<Child>,
    pub gateway: String,
    pub port: u16,
    pub account: String,
    dir: tempfile::TempDir,
    netns_dir: Option<PathBuf>,
}

/// A token as Entra ID would issue it for the blob service.
pub fn token() -> String {
    crate::contract::storage_token()
}

fn must(cmd: &mut Command) {
    let out = cmd.output().expect("running a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Azurite {
    /// Azurite for `account`, listening on `gateway` (this machine's address on the test
    /// host's link).
    pub fn start(gateway: &str, account: &str) -> Azurite {
        let dir = tempfile::Builder::new()
            .prefix("anycloud-azurite-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        must(
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=anycloud test CA",
                ])
                .arg("-keyout")
                .arg(d.join("ca.key"))
                .arg("-out")
                .arg(d.join("ca.pem")),
        );
        std::fs::write(
            d.join("san.ext"),
            format!(
                "subjectAltName=DNS:*.{SUFFIX_HOST},DNS:{SUFFIX_HOST}\nbasicConstraints=CA:FALSE\n"
            ),
        )
        .unwrap();
        must(
            Command::new("openssl")
                .args([
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    &format!("/CN=*.{SUFFIX_HOST}"),
                ])
                .arg("-keyout")
                .arg(d.join("key.pem"))
                .arg("-out")
                .arg(d.join("req.pem")),
        );
        must(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2"])
                .arg("-in")
                .arg(d.join("req.pem"))
                .arg("-CA")
                .arg(d.join("ca.pem"))
                .arg("-CAkey")
                .arg(d.join("ca.key"))
                .arg("-CAcreateserial")
                .arg("-extfile")
                .arg(d.join("san.ext"))
                .arg("-out")
                .arg(d.join("cert.pem")),
        );
        let port = TcpListener::bind(format!("{gateway}:0"))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(d.join("azurite.log")).unwrap();
        let mut azurite = Command::new(AZURITE)
            .args(["--blobHost", gateway, "--blobPort", &port.to_string()])
            .args(["--oauth", "basic", "--skipApiVersionCheck", "--loose"])
            .arg("--cert")
            .arg(d.join("cert.pem"))
            .arg("--key")
            .arg(d.join("key.pem"))
            .arg("--location")
            .arg(d)
            // The account exists in the emulator; its key is never used by anycloud.
            .env(
                "AZURITE_ACCOUNTS",
                format!("{account}:a2V5LW5ldmVyLXVzZWQ="),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting azurite (scripts/prereqs.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(format!("{gateway}:{port}")).is_err() {
            let exited = azurite.try_wait().unwrap().is_some();
            assert!(
                Instant::now() < deadline && !exited,
                "azurite did not start: {}",
                std::fs::read_to_string(d.join("azurite.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Azurite {
            azurite,
            imds: None,
            gateway: gateway.to_owned(),
            port,
            account: account.to_owned(),
            dir,
            netns_dir: None,
        }
    }

    /// The CA that signed Azurite's certificate: what a client must trust to reach it.
    #[allow(dead_code)] // not every test that includes this module asks
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// What `providers.azure.endpoints.blob_suffix` is set to.
    pub fn suffix(&self) -> String {
        format!("{SUFFIX_HOST}:{}", self.port)
    }

    fn host(&self) -> String {
        format!("{}.{SUFFIX_HOST}", self.account)
    }

    /// Makes the test host see this blob service as a VM on Azure sees Azure's: by name, over
    /// TLS it trusts, and a metadata service handing out the identity's tokens. sshd must be
    /// (re)started afterwards for its sessions to see the files.
    pub fn serve_host(&mut self, namespace: &str) {
        let etc = PathBuf::from(format!("/etc/netns/{namespace}"));
        std::fs::create_dir_all(etc.join("ssl/certs")).unwrap();
        std::fs::write(
            etc.join("hosts"),
            format!("127.0.0.1 localhost\n{} {}\n", self.gateway, self.host()),
        )
        .unwrap();
        std::fs::copy(
            self.dir.path().join("ca.pem"),
            etc.join("ssl/certs/ca-certificates.crt"),
        )
        .unwrap();
        self.netns_dir = Some(etc);
        must(Command::new("ip").args([
            "-n",
            namespace,
            "addr",
            "add",
            "169.254.169.254/32",
            "dev",
            "lo",
        ]));
        let script = r#"
import http.server, json, sys, time
token = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.headers.get("Metadata") != "true" or "/metadata/identity/oauth2/token" not in self.path:
            self.send_response(400); self.end_headers(); return
        now = int(time.time())
        body = json.dumps({"access_token": token, "expires_in": "3600", "expires_on": str(now + 3600),
                           "not_before": str(now - 60), "resource": "https://storage.azure.com",
                           "token_type": "Bearer"}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("169.254.169.254", 80), H).serve_forever()
"#;
        let imds = Command::new("ip")
            .args([
                "netns",
                "exec",
                namespace,
                "python3",
                "-c",
                script,
                &token(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.imds = Some(imds);
    }

    /// One call to the blob service with the identity's token, from this machine.
    pub fn curl(&self, method: &str, path: &str, body: Option<&Path>) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .arg("--cacert")
            .arg(self.dir.path().join("ca.pem"))
            .args([
                "--resolve",
                &format!("{}:{}:{}", self.host(), self.port, self.gateway),
            ])
            .args(["-H", &format!("Authorization: Bearer {}", token())])
            .args(["-H", "x-ms-version: 2021-08-06"]);
        match body {
            Some(file) => {
                cmd.args(["-H", "x-ms-blob-type: BlockBlob", "--data-binary"])
                    .arg(format!("@{}", file.display()));
            }
            None if method == "PUT" => {
                cmd.args(["-H", "Content-Length: 0"]);
            }
            None => {}
        }
        cmd.arg(format!("https://{}:{}{path}", self.host(), self.port));
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    pub fn create_container(&self, name: &str) {
        let (code, body) = self.curl("PUT", &format!("/{name}?restype=container"), None);
        assert!(
            code == 201 || code == 409,
            "creating container {name}: {code} {body}"
        );
    }

    pub fn delete_container(&self, name: &str) {
        let (code, body) = self.curl("DELETE", &format!("/{name}?restype=container"), None);
        assert!(
            code == 202 || code == 404,
            "deleting container {name}: {code} {body}"
        );
    }

    pub fn get_blob(&self, container: &str, name: &str) -> Option<String> {
        let (code, body) = self.curl("GET", &format!("/{container}/{name}"), None);
        (code == 200).then_some(body)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.azurite.kill();
        let _ = self.azurite.wait();
        if let Some(mut imds) = self.imds.take() {
            let _ = imds.kill();
            let _ = imds.wait();
        }
        if let Some(etc) = &self.netns_dir {
            let _ = std::fs::remove_dir_all(etc);
        }
    }
}
