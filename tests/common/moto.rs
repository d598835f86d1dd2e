//! moto's server (S3, IAM, EC2, STS) as a test peer: started per test on an address the
//! test chooses, reset by dropping it. `.ci/run` installs it (scripts/prereqs.sh).
//!
//! `Moto::start` checks nothing (every request passes as the test account).
//! `Moto::start_enforcing` runs it with IAM enforced (tests/fixtures/moto_iam.py: each S3
//! request checked under the IAM action AWS checks for it, every refusal logged): an admin
//! user's access key signs the operator's calls and this helper's own (SigV4).

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub url: String,
    /// With IAM enforced: the admin user's key, which signs every call made here.
    admin: Option<AccessKey>,
    /// With IAM enforced: where moto_iam.py logs each refusal (a JSON object a line).
    refusals: Option<PathBuf>,
    /// With EC2's quotas answered: the file moto_quotas.py reads them from.
    quotas: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Clone, Debug)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

pub fn server_path() -> PathBuf {
    std::env::var_os("ANYCLOUD_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/anycloud/moto/bin/moto_server"))
}

/// The Python of moto's virtualenv (beside `moto_server`).
pub fn python_path() -> PathBuf {
    server_path().with_file_name("python3")
}

/// A free port on `host`.
pub fn free_port(host: &str) -> u16 {
    TcpListener::bind((host, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `cmd` in a process group of its own and waits until `host:port` answers.
fn spawn(mut cmd: Command, host: &str, port: u16) -> Child {
    let child = cmd
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting moto ({cmd:?}): {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect((host, port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto did not start on {host}:{port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

impl Moto {
    /// A fresh moto listening on `host` (a free port).
    pub fn start(host: &str) -> Moto {
        let port = free_port(host);
        let mut cmd = Command::new(server_path());
        cmd.args(["-H", host, "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Moto {
            child: spawn(cmd, host, port),
            url: format!("http://{host}:{port}"),
            admin: None,
            refusals: None,
            quotas: None,
            _dir: None,
        }
    }

    /// A fresh moto on `host` whose Service Quotas answers EC2's quotas
    /// (tests/fixtures/moto_quotas.py), as [`Moto::set_ec2_quotas`] last set them; none
    /// until then.
    pub fn start_with_quotas(host: &str) -> Moto {
        let dir = tempfile::Builder::new()
            .prefix("anycloud-moto-")
            .tempdir()
            .unwrap();
        let quotas = dir.path().join("ec2-quotas.json");
        std::fs::write(&quotas, "{}").unwrap();
        let port = free_port(host);
        let mut cmd = Command::new(python_path());
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/moto_quotas.py"))
            .args(["-H", host, "-p", &port.to_string()])
            .env("ANYCLOUD_MOTO_EC2_QUOTAS", &quotas)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("moto.log")).unwrap());
        Moto {
            child: spawn(cmd, host, port),
            url: format!("http://{host}:{port}"),
            admin: None,
            refusals: None,
            quotas: Some(quotas),
            _dir: Some(dir),
        }
    }

    /// The account's EC2 quotas from here on: `{"REGION": {"QUOTA_CODE": VALUE}}`.
    pub fn set_ec2_quotas(&self, quotas: &serde_json::Value) {
        let path = self.quotas.as_ref().expect("moto answers no EC2 quotas");
        std::fs::write(path, quotas.to_string()).unwrap();
    }

    /// A fresh moto on `host` that enforces IAM (TESTING.md, "IAM enforcement"): started
    /// with no request checked, an admin user (`Action: *`) and its access key are made,
    /// then `reset-auth 0` checks every request from there on. S3 requests are checked
    /// under the IAM actions AWS checks for them (tests/fixtures/moto_iam.py).
    pub fn start_enforcing(host: &str) -> Moto {
        let dir = tempfile::Builder::new()
            .prefix("anycloud-moto-")
            .tempdir()
            .unwrap();
        let refusals = dir.path().join("refusals.jsonl");
        let port = free_port(host);
        let mut cmd = Command::new(python_path());
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/moto_iam.py"))
            .args(["-H", host, "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "inf")
            .env("ANYCLOUD_MOTO_REFUSALS", &refusals)
            // Its requests and tracebacks, for a test that fails.
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("moto.log")).unwrap());
        let mut moto = Moto {
            child: spawn(cmd, host, port),
            url: format!("http://{host}:{port}"),
            admin: None,
            refusals: Some(refusals.clone()),
            quotas: None,
            _dir: Some(dir),
        };
        let everything = urlencoding::encode(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
        );
        moto.query("iam", "Action=CreateUser&Version=2010-05-08&UserName=admin");
        moto.query(
            "iam",
            &format!("Action=PutUserPolicy&Version=2010-05-08&UserName=admin&PolicyName=everything&PolicyDocument={everything}"),
        );
        let key = moto.query(
            "iam",
            "Action=CreateAccessKey&Version=2010-05-08&UserName=admin",
        );
        let admin = AccessKey {
            id: xml_all(&key, "AccessKeyId").remove(0),
            secret: xml_all(&key, "SecretAccessKey").remove(0),
        };
        moto.reset_auth("0");
        // From here on a request without the admin's signature is refused.
        assert_eq!(
            moto.http("GET", "/", None).0,
            403,
            "moto does not enforce IAM"
        );
        moto.admin = Some(admin);
        assert_eq!(
            moto.http("GET", "/", None).0,
            200,
            "the admin key is refused"
        );
        std::fs::write(&refusals, "").unwrap();
        moto
    }

    /// `POST /moto-api/reset-auth`: the next `count` requests go unchecked (`inf`: all).
    pub fn reset_auth(&self, count: &str) {
        let out = Command::new("curl")
            .args(["-s", "-f", "-X", "POST", "-H", "Content-Type: text/plain"])
            .args(["--data-binary", count])
            .arg(format!("{}/moto-api/reset-auth", self.url))
            .output()
            .unwrap();
        assert!(out.status.success(), "reset-auth {count}: {out:?}");
    }

    /// The admin user's key (with IAM enforced).
    pub fn admin(&self) -> Option<&AccessKey> {
        self.admin.as_ref()
    }

    /// Every refusal moto logged so far (with IAM enforced): `refusal` (AccessDenied,
    /// InvalidAccessKey, SignatureDoesNotMatch), `principal`, `service`, `operation` (moto's
    /// name of an S3 call), `action` (what was checked), `resource`, `method`, `path`.
    pub fn refusals(&self) -> Vec<serde_json::Value> {
        let path = self.refusals.as_ref().expect("moto does not enforce IAM");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// An HTTP request to moto's S3: status and body. Unsigned as the test account when
    /// moto checks nothing, else signed with the admin's key.
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut cmd = Command::new("curl");
        // --path-as-is: a key with `..` in it reaches moto as written.
        cmd.args(["-s", "--path-as-is", "-o", "-", "-w", "\n%{http_code}"]);
        match &self.admin {
            // As the test account (moto checks no signature): objects are private, as on S3.
            None => {
                cmd.args(["-H", &auth_header("s3")]);
            }
            Some(key) => {
                let (path, query) = path.split_once('?').unwrap_or((path, ""));
                for h in sign(
                    key,
                    method,
                    self.host(),
                    path,
                    query,
                    "s3",
                    body.unwrap_or("").as_bytes(),
                ) {
                    cmd.args(["-H", &h]);
                }
            }
        }
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

    /// An EC2, IAM or STS query-API call (`params` URL-encoded). moto routes by the service
    /// named in the credential scope. Insists on a 2xx answer.
    pub fn query(&self, service: &str, params: &str) -> String {
        let (status, body) = self.try_query(service, params);
        assert!((200..300).contains(&status), "{params}: {status} {body}");
        body
    }

    /// A query-API call of `service` in `region` (moto without IAM enforced: signatures
    /// unchecked, the region taken from the credential scope).
    #[allow(dead_code)]
    pub fn query_in(&self, region: &str, service: &str, params: &str) -> String {
        let out = Command::new("curl")
            .args(["-s", "-X", "POST", "-d", ""])
            .arg("-H")
            .arg(auth_header(service).replace("/us-east-1/", &format!("/{region}/")))
            .arg(format!("{}/?{params}", self.url))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A query-API call: status and body.
    pub fn try_query(&self, service: &str, params: &str) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-w", "\n%{http_code}", "-X", "POST"]);
        match &self.admin {
            // moto checks no signature.
            None => {
                cmd.args(["-H", &auth_header(service), "-d", ""])
                    .arg(format!("{}/?{params}", self.url));
            }
            // The parameters in the body, as the SDKs send them (moto's signature check
            // reads them from there).
            Some(key) => {
                for h in sign(
                    key,
                    "POST",
                    self.host(),
                    "/",
                    "",
                    service,
                    params.as_bytes(),
                ) {
                    cmd.args(["-H", &h]);
                }
                cmd.args(["--data-binary", params])
                    .arg(format!("{}/", self.url));
            }
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (status.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// The environment an anycloud process needs to reach this moto (as the admin user,
    /// with IAM enforced).
    pub fn env(&self) -> Vec<(String, String)> {
        let (id, secret) = match &self.admin {
            Some(k) => (k.id.as_str(), k.secret.as_str()),
            None => ("test", "test"),
        };
        [
            ("AWS_ACCESS_KEY_ID", id),
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_ENDPOINT_URL", self.url.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// `host:port`, as curl sends it in `Host`.
    fn host(&self) -> &str {
        self.url.trim_start_matches("http://")
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

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, data.as_bytes()).as_ref().to_vec()
}

/// AWS Signature Version 4 for a request whose `path` and `query` are sent as given (already
/// URI-encoded, as every caller here writes them): the headers to send (`Name: value`).
/// The canonical query is its pairs sorted, `name` without a value written `name=`; the
/// payload's hash goes in `x-amz-content-sha256` and is signed, as S3 wants and as moto
/// checks every service.
pub fn sign(
    key: &AccessKey,
    method: &str,
    host: &str,
    path: &str,
    query: &str,
    service: &str,
    body: &[u8],
) -> Vec<String> {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let amz_date: String = now.chars().filter(|c| *c != '-' && *c != ':').collect();
    let day = &amz_date[..8];
    let region = "us-east-1";
    let payload = sha256_hex(body);
    let mut pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    pairs.sort();
    let canonical_query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let signed_headers = "host;x-amz-content-sha256;x-amz-date";
    let canonical = format!(
        "{method}\n{path}\n{canonical_query}\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz_date}\n\n{signed_headers}\n{payload}"
    );
    let scope = format!("{day}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let mut k = hmac(format!("AWS4{}", key.secret).as_bytes(), day);
    for part in [region, service, "aws4_request"] {
        k = hmac(&k, part);
    }
    let signature = hex::encode(hmac(&k, &to_sign));
    vec![
        format!("x-amz-date: {amz_date}"),
        format!("x-amz-content-sha256: {payload}"),
        format!(
            "Authorization: AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            key.id
        ),
    ]
}

/// The text between `<tag>` and `</tag>`, each occurrence.
pub fn xml_all(body: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    body.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(v, _)| v.to_owned()))
        .collect()
}
