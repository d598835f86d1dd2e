//! fake-gcs-server (Cloud Storage's JSON API emulator) as the object store of a test host,
//! the way a VM on Compute Engine sees Cloud Storage: over HTTP at a fixed endpoint (rclone's
//! `endpoint`), with the tokens of the VM's service account from a metadata server at
//! 169.254.169.254 in the host's namespace (what rclone's Application Default Credentials
//! ask when no key file exists).
//!
//! fake-gcs-server accepts any token and keeps no labels or IAM policies; PyPI's
//! gcp-storage-emulator keeps IAM policies (not enforced, and their etags never change) but
//! drops the labels and location a bucket is made with. So each emulator serves what it
//! keeps: the contract server answers bucket requests itself, makes each bucket in both
//! emulators (`contract::World::on_bucket`), hands every object request to fake-gcs-server
//! (`objects_upstream`) and every policy request, once checked against the discovery
//! document, to gcp-storage-emulator (`policies_upstream`). Neither emulator enforces IAM:
//! the end-to-end test puts `gcs_authz`'s proxy in between, which does, with the policies
//! anycloud set.
//!
//! Needs fake-gcs-server and gcp-storage-emulator under /var/cache/anycloud/fake-gcs, and
//! python3 (`scripts/prereqs.sh`).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FAKE_GCS: &str = "/var/cache/anycloud/fake-gcs/fake-gcs-server";
const GCP_STORAGE_EMULATOR: &str = "/var/cache/anycloud/fake-gcs/bin/gcp-storage-emulator";

pub struct FakeGcs {
    server: Child,
    metadata: Option<Child>,
    netns_dir: Option<std::path::PathBuf>,
    pub url: String,
}

fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until_listening(ip: &str, port: u16, what: &str) {
    let started = Instant::now();
    while TcpStream::connect((ip, port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// gcp-storage-emulator, for the buckets' IAM policies.
pub struct PolicyStore {
    server: Child,
    pub url: String,
}

impl PolicyStore {
    pub fn start(ip: &str) -> PolicyStore {
        let port = free_port(ip);
        let server = Command::new(GCP_STORAGE_EMULATOR)
            .args(["start", "--host", ip, "--port", &port.to_string()])
            .args(["--no-store-on-disk", "--quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gcp-storage-emulator (scripts/prereqs.sh installs it)");
        wait_until_listening(ip, port, "gcp-storage-emulator");
        PolicyStore {
            server,
            url: format!("http://{ip}:{port}"),
        }
    }

    pub fn calls(&self) -> Objects {
        Objects {
            url: self.url.clone(),
        }
    }
}

impl Drop for PolicyStore {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl FakeGcs {
    /// fake-gcs-server listening on `gateway` (this machine's address on the test host's link).
    pub fn start(gateway: &str) -> FakeGcs {
        let port = free_port(gateway);
        let url = format!("http://{gateway}:{port}");
        let server = Command::new(FAKE_GCS)
            .args(["-scheme", "http", "-backend", "memory", "-host", gateway])
            .args(["-port", &port.to_string()])
            .args(["-public-host", &format!("{gateway}:{port}")])
            .args(["-external-url", &url, "-log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("fake-gcs-server (scripts/prereqs.sh installs it)");
        wait_until_listening(gateway, port, "fake-gcs-server");
        FakeGcs {
            server,
            metadata: None,
            netns_dir: None,
            url,
        }
    }

    /// A metadata server in the host's namespace, as on Compute Engine: at 169.254.169.254
    /// and by the name `metadata.google.internal` (Google's libraries look for either to tell
    /// they run on Compute Engine); it hands out tokens only to requests carrying
    /// `Metadata-Flavor: Google`, and says `Metadata-Flavor: Google` in its answers. The
    /// tokens are those of the service account `instance` runs as, minted by `harness`
    /// (`gcs_authz`: `GET {harness}/harness/token?instance=…`, and `…/email`); none while
    /// the instance does not exist. sshd must be (re)started afterwards for its sessions to
    /// see the name.
    pub fn serve_metadata(&mut self, namespace: &str, harness: &str, instance: &str) {
        let etc = std::path::PathBuf::from(format!("/etc/netns/{namespace}"));
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("hosts"),
            "127.0.0.1 localhost\n169.254.169.254 metadata.google.internal\n",
        )
        .unwrap();
        self.netns_dir = Some(etc);
        let out = Command::new("ip")
            .args([
                "-n",
                namespace,
                "addr",
                "add",
                "169.254.169.254/32",
                "dev",
                "lo",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let script = r#"
import http.server, sys, urllib.error, urllib.parse, urllib.request
harness, instance = sys.argv[1], sys.argv[2]
def ask(what):
    url = harness + "/harness/" + what + "?instance=" + urllib.parse.quote(instance)
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except Exception as e:
        return 503, str(e).encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/":
            self.send_response(200); self.send_header("Metadata-Flavor", "Google")
            self.send_header("Content-Length", "0"); self.end_headers(); return
        if self.headers.get("Metadata-Flavor") != "Google":
            self.send_response(403); self.send_header("Content-Length", "0"); self.end_headers(); return
        path = self.path.split("?")[0]
        if path.endswith("/service-accounts/default/token"):
            status, body = ask("token")
            ctype = "application/json"
        elif path.endswith("/service-accounts/default/email"):
            status, body = ask("email")
            ctype = "application/text"
        elif path.rstrip("/") in ("", "/computeMetadata/v1"):
            status, body, ctype = 200, b"computeMetadata/\n", "application/text"
        else:
            status, body, ctype = 404, b"", "application/text"
        self.send_response(status); self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", ctype); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
    # A probe that opens a connection and gives up must not hold the others.
    timeout = 5
http.server.ThreadingHTTPServer(("169.254.169.254", 80), H).serve_forever()
"#;
        let metadata = Command::new("ip")
            .args([
                "netns", "exec", namespace, "python3", "-c", script, harness, instance,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.metadata = Some(metadata);
    }

    /// The emulator's objects, for a callback that must not keep the emulator alive.
    pub fn objects(&self) -> Objects {
        Objects {
            url: self.url.clone(),
        }
    }

    pub fn get(&self, bucket: &str, name: &str) -> Option<String> {
        self.objects().get(bucket, name)
    }
}

/// Calls to the emulator from this machine.
#[derive(Clone)]
pub struct Objects {
    url: String,
}

impl Objects {
    fn curl(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method]);
        if method == "POST" {
            cmd.args([
                "-H",
                "content-type: application/json",
                "--data-binary",
                "@-",
            ]);
        }
        cmd.arg(format!("{}{path}", self.url))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(body).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let text = out.stdout;
        let split = text.iter().rposition(|b| *b == b'\n').unwrap_or(0);
        let code = String::from_utf8_lossy(&text[split..])
            .trim()
            .parse()
            .unwrap_or(0);
        (code, text[..split].to_vec())
    }

    /// A bucket's IAM policy as the emulator keeps it.
    pub fn policy(&self, bucket: &str) -> Option<serde_json::Value> {
        let (code, body) = self.curl("GET", &format!("/storage/v1/b/{bucket}/iam"), b"");
        (code == 200).then(|| serde_json::from_slice(&body).unwrap())
    }

    pub fn create_bucket(&self, name: &str) {
        let body = format!("{{\"name\": \"{name}\"}}");
        let (code, said) = self.curl("POST", "/storage/v1/b?project=fake", body.as_bytes());
        assert!(
            code == 200 || code == 409,
            "creating bucket {name}: {code} {}",
            String::from_utf8_lossy(&said)
        );
    }

    pub fn delete_bucket(&self, name: &str) {
        self.curl("DELETE", &format!("/storage/v1/b/{name}"), b"");
    }

    /// Writes an object straight into the emulator (past any proxy in front of it).
    pub fn put(&self, bucket: &str, name: &str, body: &str) {
        let object: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
        let (code, said) = self.curl(
            "POST",
            &format!("/upload/storage/v1/b/{bucket}/o?uploadType=media&name={object}"),
            body.as_bytes(),
        );
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&said));
    }

    pub fn get(&self, bucket: &str, name: &str) -> Option<String> {
        let object: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
        let (code, body) = self.curl(
            "GET",
            &format!("/storage/v1/b/{bucket}/o/{object}?alt=media"),
            b"",
        );
        (code == 200).then(|| String::from_utf8_lossy(&body).into_owned())
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        if let Some(mut m) = self.metadata.take() {
            let _ = m.kill();
            let _ = m.wait();
        }
        if let Some(etc) = &self.netns_dir {
            let _ = std::fs::remove_dir_all(etc);
        }
    }
}
