//! moto's server (S3, IAM, EC2, STS) as a test peer: started per test on an address the
//! test chooses, reset by dropping it. `.ci/run` installs it (scripts/prereqs.sh).

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub url: String,
}

pub fn server_path() -> PathBuf {
    std::env::var_os("ANYCLOUD_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/anycloud/moto/bin/moto_server"))
}

impl Moto {
    /// A fresh moto listening on `host` (a free port).
    pub fn start(host: &str) -> Moto {
        let port = TcpListener::bind((host, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(server_path())
            .args(["-H", host, "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", server_path().display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((host, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not start on {host}:{port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            child,
            url: format!("http://{host}:{port}"),
        }
    }

    /// An HTTP request to moto (it does not check signatures): status and body.
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut cmd = Command::new("curl");
        // As the test account (moto checks no signature): objects are private, as on S3.
        // --path-as-is: a key with `..` in it reaches moto as written.
        cmd.args([
            "-s",
            "--path-as-is",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-H",
            &auth_header("s3"),
        ]);
        // curl -X HEAD would wait for a body that never comes: -I asks for the head only.
        if method == "HEAD" {
            cmd.arg("-I");
        } else {
            cmd.args(["-X", method]);
        }
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/xml", "--data-binary", b]);
        }
        let out = cmd.arg(format!("{}{path}", self.url)).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (status.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// An EC2 or IAM query-API call. moto routes by the service named in the credential
    /// scope (it checks no signature).
    pub fn query(&self, service: &str, params: &str) -> String {
        let auth = auth_header(service);
        let out = Command::new("curl")
            .args([
                "-s",
                "-w",
                "\n%{http_code}",
                "-X",
                "POST",
                "-H",
                &auth,
                "-d",
                "",
            ])
            .arg(format!("{}/?{params}", self.url))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        assert!(status.trim().starts_with('2'), "{params}: {status} {body}");
        body.to_owned()
    }

    /// The environment an anycloud process needs to reach this moto.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_ENDPOINT_URL", self.url.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Its own process group: the server and any workers it forked.
        // `--`: without it procps' kill reads "-PID" as an option.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// moto routes a request by the service in its credential scope.
fn auth_header(service: &str) -> String {
    format!(
        "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
    )
}

/// The text between `<tag>` and `</tag>`, each occurrence.
pub fn xml_all(body: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    body.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(v, _)| v.to_owned()))
        .collect()
}
