//! Azurite (Azure Storage's blob service emulator) as the blob service of a test host, the
//! way a VM on Azure sees the real one: HTTPS at `https://{account}.{suffix}` (rclone builds
//! that URL from `account` and `endpoint`), and bearer tokens that the host's rclone gets
//! from an instance metadata service at 169.254.169.254 for the VM's managed identity.
//!
//! - Azurite runs on this machine, on the test host's link (`--oauth basic`: it checks each
//!   token's issuer, audience and lifetime, not its signature), with a certificate for
//!   `*.blob.anycloud.test` signed by a CA made for the test;
//! - with [`Azurite::start_enforcing`], clients reach it through a TLS proxy (python3) that
//!   asks an authoriser (`azure_authz.rs`) about every request first: whose token it is and
//!   whether that identity's role assignments allow it; a refusal is the authoriser's answer
//!   (Azure's 403), anything else goes on to Azurite;
//! - the test host resolves `{account}.blob.anycloud.test` to this machine and trusts only
//!   that CA, through `/etc/netns/<namespace>/` (which `ip netns exec` mounts over `/etc` for
//!   sshd and everything started from its sessions);
//! - a small metadata service in the host's namespace hands out the tokens of the VM's
//!   managed identity, minted by the authoriser.
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
    /// The authorising proxy in front of Azurite, when enforcing.
    proxy: Option<Child>,
    pub gateway: String,
    /// Where clients connect: the proxy's port when enforcing, else Azurite's own.
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
    #[allow(dead_code)] // not every test that includes this module asks
    pub fn start(gateway: &str, account: &str) -> Azurite {
        Azurite::start_with(gateway, account, None)
    }

    /// Azurite behind a proxy that asks `authorize` (an authoriser's URL) about each request
    /// and refuses what it refuses.
    #[allow(dead_code)] // not every test that includes this module asks
    pub fn start_enforcing(gateway: &str, account: &str, authorize: &str) -> Azurite {
        Azurite::start_with(gateway, account, Some(authorize))
    }

    fn start_with(gateway: &str, account: &str, authorize: Option<&str>) -> Azurite {
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
        let free_port = || {
            TcpListener::bind(format!("{gateway}:0"))
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let port = free_port();
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
        let (proxy, port) = match authorize {
            None => (None, port),
            Some(authorize) => {
                let public = free_port();
                let log = std::fs::File::create(d.join("proxy.log")).unwrap();
                let mut proxy = Command::new("python3")
                    .args(["-c", PROXY, gateway, &public.to_string()])
                    .arg(d.join("cert.pem"))
                    .arg(d.join("key.pem"))
                    .args([gateway, &port.to_string()])
                    .arg(d.join("ca.pem"))
                    .arg(authorize)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .expect("starting the authorising proxy (python3)");
                while TcpStream::connect(format!("{gateway}:{public}")).is_err() {
                    let exited = proxy.try_wait().unwrap().is_some();
                    assert!(
                        Instant::now() < deadline && !exited,
                        "the authorising proxy did not start: {}",
                        std::fs::read_to_string(d.join("proxy.log")).unwrap_or_default()
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
                (Some(proxy), public)
            }
        };
        Azurite {
            azurite,
            imds: None,
            proxy,
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
    /// TLS it trusts, and a metadata service handing out the identity's tokens, which it gets
    /// from `tokens` (an authoriser's `/imds`, given the request's query). sshd must be
    /// (re)started afterwards for its sessions to see the files.
    #[allow(dead_code)] // not every test that includes this module asks
    pub fn serve_host(&mut self, namespace: &str, tokens: &str) {
        let etc = PathBuf::from(format!("/etc/netns/{namespace}"));
        std::fs::create_dir_all(etc.join("ssl/certs")).unwrap();
        // This machine's own name too: sudo looks it up.
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        std::fs::write(
            etc.join("hosts"),
            format!(
                "127.0.0.1 localhost {}\n{} {}\n",
                hostname.trim(),
                self.gateway,
                self.host()
            ),
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
import http.server, sys, urllib.error, urllib.request
tokens = sys.argv[1]
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.headers.get("Metadata") != "true" or not self.path.startswith("/metadata/identity/oauth2/token"):
            return self.answer(400, b'{"error":"invalid_request","error_description":"Required metadata header not specified"}')
        try:
            with direct.open(tokens + "?" + self.path.partition("?")[2], timeout=30) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        self.answer(status, body)
    def answer(self, status, body):
        self.send_response(status); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("169.254.169.254", 80), H).serve_forever()
"#;
        let imds = Command::new("ip")
            .args(["netns", "exec", namespace, "python3", "-c", script, tokens])
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
        if let Some(mut proxy) = self.proxy.take() {
            let _ = proxy.kill();
            let _ = proxy.wait();
        }
        if let Some(mut imds) = self.imds.take() {
            let _ = imds.kill();
            let _ = imds.wait();
        }
        if let Some(etc) = &self.netns_dir {
            let _ = std::fs::remove_dir_all(etc);
        }
    }
}

/// The authorising proxy: TLS with Azurite's certificate on the public port; each request
/// (read whole) is put to the authoriser, and either its refusal is the answer or the request
/// goes on to Azurite over TLS on a kept-alive connection per thread.
/// argv: listen-ip listen-port cert key azurite-ip azurite-port ca authorize-url
const PROXY: &str = r#"
import http.client, http.server, json, ssl, sys, threading, urllib.request
ip, port, cert, key, up_ip, up_port, ca, authorize = sys.argv[1:9]
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(cert, key)
upstream_tls = ssl.create_default_context(cafile=ca)
upstream_tls.check_hostname = False
local = threading.local()
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
       "upgrade", "expect", "content-length"}

def read_chunked(f):
    out = b""
    while True:
        size = int(f.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while f.readline().strip():
                pass
            return out
        out += f.read(size)
        f.readline()

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def relay(self):
        n = self.headers.get("Content-Length")
        if n is not None:
            body = self.rfile.read(int(n))
        elif "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = read_chunked(self.rfile)
        else:
            body = b""
        ask = json.dumps({"method": self.command, "target": self.path,
                          "host": self.headers.get("Host", ""),
                          "authorization": self.headers.get("Authorization", ""),
                          "copy_source": self.headers.get("x-ms-copy-source", "")}).encode()
        with direct.open(urllib.request.Request(authorize, data=ask, headers={"Content-Type": "application/json"}), timeout=60) as r:
            verdict = json.load(r)
        if not verdict["allow"]:
            payload = verdict["body"].encode()
            self.send_response_only(verdict["status"], verdict["reason"])
            for k, v in verdict["headers"]:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        for attempt in (0, 1):
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPSConnection(up_ip, int(up_port), context=upstream_tls, timeout=300)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                local.conn = None
                if attempt:
                    raise
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP:
                self.send_header(k, v)
        if self.command == "HEAD":
            self.send_header("Content-Length", resp.getheader("Content-Length", "0"))
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = relay

    def log_message(self, *a):
        pass

class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def finish_request(self, request, client_address):
        # The handshake in the connection's own thread: a slow client holds up no other.
        super().finish_request(tls.wrap_socket(request, server_side=True), client_address)

S((ip, int(port)), H).serve_forever()
"#;
