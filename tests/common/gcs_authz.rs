//! What Cloud Storage enforces and fake-gcs-server does not: an authorising proxy in front of
//! the emulator. Every object request of the JSON API is mapped to the permissions Google
//! checks for it (on the resource name Google checks them on), and allowed only if the
//! bucket's IAM policy — the one anycloud set, as the policy store keeps it — grants them to
//! the caller's service account: a binding of a role holding the permission, for a member
//! naming the account, whose condition (a subset of CEL, evaluated faithfully; anything else
//! fails closed and is counted) holds for the request, and which was set at least `delay`
//! ago (IAM's propagation). The operator's token (the CLI and the provider's control-plane
//! calls) has full access, as a project owner's would. What is refused is answered as Google
//! answers (403 `forbidden`, Google's error envelope) and recorded.
//!
//! The proxy also mints the tokens of the VMs' metadata servers (`/harness/token`): each
//! identifies the service account the instance runs as (`serviceAccounts` of the instance
//! the contract server keeps) with the instance's scopes, and stays valid while that account
//! exists. Bucket policy requests pass through it to the policy store, so that the moment
//! each binding is written is known.
//!
//! A removed binding keeps working for a while too (`DEFAULT_REVOCATION`: Google's removals
//! propagate as well); a test can make removals immediate.
//!
//! Not modelled: bucket-level permissions (the contract server answers bucket requests and
//! accepts only the operator's token), object ACLs, deny policies, managed folders,
//! project-level bindings, resumable upload sessions (their URI is a capability, as on
//! Google; the initiating request is checked).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::{json, Value};

/// How long a new binding takes to be effective unless a test says otherwise.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(3);
/// How long a removed binding still works unless a test says otherwise (Google: changes,
/// removals included, typically take effect within minutes).
pub const DEFAULT_REVOCATION: Duration = Duration::from_secs(30);
/// What every token the proxy mints for a VM starts with.
pub const TOKEN_PREFIX: &str = "ya29.vm-service-account-token";

/// The service account an instance runs as, and its scopes (None: no such instance).
pub type InstanceAccount = Box<dyn Fn(&str) -> Option<(String, Vec<String>)> + Send + Sync>;

/// Who is who, from the contract server's world.
pub struct Directory {
    pub instance: InstanceAccount,
    /// Whether a service account (by email) exists: a deleted one's tokens stop working.
    pub account_exists: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

/// A request the proxy refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub method: String,
    /// The request's path, query left out.
    pub path: String,
    /// The caller: a service account's email, or what was wrong with its credentials.
    pub identity: String,
    /// The permission missing (`storage.objects.get`, …), `scope …` or `authentication`.
    pub permission: String,
    /// The resource name it was checked on (`projects/_/buckets/B/objects/N`).
    pub resource: String,
    /// For a listing: the prefix listed (`storage.googleapis.com/objectListPrefix`).
    pub list_prefix: Option<String>,
    /// A binding would allow it once it has propagated.
    pub propagating: bool,
}

/// (bucket, role, member, condition expression; "" for none).
type Grant = (String, String, String, String);

#[derive(Default)]
struct State {
    /// token → (email, scopes).
    tokens: BTreeMap<String, (String, Vec<String>)>,
    /// (bucket, role, member, condition expression) → when that grant was written.
    written: BTreeMap<Grant, Instant>,
    /// Grants written and since removed → when (they linger for `revocation`).
    removed: BTreeMap<Grant, Instant>,
    refusals: Vec<Refusal>,
    /// Conditions the proxy could not evaluate (each counted as it was met), and why.
    unevaluable: Vec<String>,
    /// Requests allowed for a service account, as "METHOD path".
    allowed: Vec<String>,
    minted: u64,
}

struct Shared {
    objects: String,
    public: String,
    policies: String,
    owner_token: String,
    delay: Mutex<Duration>,
    revocation: Mutex<Duration>,
    directory: Directory,
    state: Mutex<State>,
}

pub struct GcsAuthz {
    pub url: String,
    shared: Arc<Shared>,
}

impl GcsAuthz {
    /// Listening on `ip`, in front of fake-gcs-server at `objects` and the policy store at
    /// `policies` (both `http://host:port`). `owner_token` has full access.
    /// `public` is where clients reach Cloud Storage (the contract server, which hands object
    /// requests here): the emulator's own address in its answers (an object's `mediaLink`,
    /// a resumable upload's session URI) is rewritten to it, so that no download or upload
    /// goes past the proxy.
    pub fn start(
        ip: &str,
        objects: &str,
        policies: &str,
        public: &str,
        owner_token: &str,
        delay: Duration,
        directory: Directory,
    ) -> GcsAuthz {
        let shared = Arc::new(Shared {
            objects: objects.trim_end_matches('/').to_owned(),
            public: public.trim_end_matches('/').to_owned(),
            policies: policies.trim_end_matches('/').to_owned(),
            owner_token: owner_token.to_owned(),
            delay: Mutex::new(delay),
            revocation: Mutex::new(DEFAULT_REVOCATION),
            directory,
            state: Mutex::new(State::default()),
        });
        let served = shared.clone();
        let addr = crate::common::http_server::serve(ip, move |req| {
            let shared = served.clone();
            async move { handle(&shared, req).await }
        });
        GcsAuthz {
            url: format!("http://{addr}"),
            shared,
        }
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// How long a removed grant still works (as on Google, where a removal propagates too;
    /// `DEFAULT_REVOCATION` unless set).
    pub fn set_revocation_delay(&self, delay: Duration) {
        *self.shared.revocation.lock().unwrap() = delay;
    }

    pub fn refusals(&self) -> Vec<Refusal> {
        self.shared.state.lock().unwrap().refusals.clone()
    }

    pub fn unevaluable(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().unevaluable.clone()
    }

    /// The requests allowed to service accounts, as "METHOD path".
    pub fn allowed(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().allowed.clone()
    }

    /// A token for `email` with `scopes`, as a metadata server would hand out.
    pub fn mint(&self, email: &str, scopes: &[&str]) -> String {
        mint(
            &self.shared,
            email,
            scopes.iter().map(|s| s.to_string()).collect(),
        )
    }
}

fn mint(shared: &Shared, email: &str, scopes: Vec<String>) -> String {
    let mut s = shared.state.lock().unwrap();
    s.minted += 1;
    let token = format!("{TOKEN_PREFIX}-{}", s.minted);
    s.tokens.insert(token.clone(), (email.to_owned(), scopes));
    token
}

// HTTP.

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json; charset=UTF-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn google_error(status: u16, reason: &str, message: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        json!({"error": {"code": status, "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}]}}),
    )
}

/// Sends a request to `upstream` (`http://host:port`) and brings its answer back whole.
async fn send(
    upstream: &str,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let host = upstream.trim_start_matches("http://").to_owned();
    let Ok(stream) = tokio::net::TcpStream::connect(&host).await else {
        return google_error(502, "backendError", &format!("{host} does not answer"));
    };
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
    else {
        return google_error(502, "backendError", &format!("{host}: no HTTP"));
    };
    tokio::spawn(conn);
    let mut out = Request::builder()
        .method(method.clone())
        .uri(path_and_query)
        .header("host", &host);
    for (k, v) in headers {
        if k != "host" {
            out = out.header(k, v);
        }
    }
    let Ok(answer) = sender
        .send_request(out.body(Full::new(body)).unwrap())
        .await
    else {
        return google_error(502, "backendError", &format!("{host}: no answer"));
    };
    let (parts, body) = answer.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut back = Response::builder().status(parts.status);
    for (k, v) in &parts.headers {
        if k != "transfer-encoding" && k != "content-length" {
            back = back.header(k, v);
        }
    }
    back.body(Full::new(bytes)).unwrap()
}

async fn get_json(upstream: &str, path: &str) -> Option<Value> {
    let r = send(
        upstream,
        &Method::GET,
        path,
        &HeaderMap::new(),
        Bytes::new(),
    )
    .await;
    if !r.status().is_success() {
        return None;
    }
    let bytes = r.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|c| hex(*c)),
            b.get(i + 2).and_then(|c| hex(*c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

async fn handle(shared: &Shared, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let query: BTreeMap<String, String> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();

    // The metadata servers' side door.
    if let Some(what) = path.strip_prefix("/harness/") {
        let instance = query.get("instance").cloned().unwrap_or_default();
        let Some((email, scopes)) = (shared.directory.instance)(&instance) else {
            return google_error(404, "notFound", &format!("no instance {instance}"));
        };
        return match what {
            "token" => {
                let token = mint(shared, &email, scopes);
                reply(
                    200,
                    json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}),
                )
            }
            "email" => Response::builder()
                .status(200)
                .header("content-type", "application/text")
                .body(Full::new(Bytes::from(email)))
                .unwrap(),
            _ => google_error(404, "notFound", "no such harness call"),
        };
    }

    // Bucket policies: kept by the policy store; the moment each grant is written is noted.
    if let Some(bucket) = policy_bucket(&path) {
        let answer = send(
            &shared.policies,
            &parts.method,
            &path_and_query,
            &parts.headers,
            bytes,
        )
        .await;
        if parts.method == Method::GET || !answer.status().is_success() {
            return answer;
        }
        let (head, body) = answer.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if let Ok(policy) = serde_json::from_slice::<Value>(&body) {
            note_written(shared, &bucket, &policy);
        }
        return Response::from_parts(head, Full::new(body));
    }

    let token = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    let media =
        query.get("alt").map(String::as_str) == Some("media") || path.starts_with("/download/");
    let forward = || {
        to_objects(
            shared,
            &parts.method,
            &path_and_query,
            &parts.headers,
            bytes.clone(),
            media,
        )
    };
    // The owner has full access; a resumable upload's session URI is its own credential
    // (its start was checked).
    let session = path.starts_with("/upload/") && query.contains_key("upload_id");
    if session || (!token.is_empty() && token == shared.owner_token) {
        return forward().await;
    }
    let refuse = |permission: &str, identity: &str, resource: &str| {
        shared.state.lock().unwrap().refusals.push(Refusal {
            method: parts.method.to_string(),
            path: path.clone(),
            identity: identity.to_owned(),
            permission: permission.to_owned(),
            resource: resource.to_owned(),
            list_prefix: None,
            propagating: false,
        });
    };
    let known = shared.state.lock().unwrap().tokens.get(&token).cloned();
    let Some((email, scopes)) = known.filter(|(email, _)| (shared.directory.account_exists)(email))
    else {
        let who = if token.is_empty() {
            "no token".to_owned()
        } else if token.starts_with(TOKEN_PREFIX) {
            "a token of a deleted service account".to_owned()
        } else {
            "an unknown token".to_owned()
        };
        refuse("authentication", &who, "");
        return google_error(
            401,
            "authError",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        );
    };

    let (mut checks, overwrite) = match checks_of(
        &parts.method,
        &path,
        &query,
        content_type(&parts.headers),
        &bytes,
    ) {
        Ok(c) => c,
        Err(why) => {
            refuse(&format!("unmapped: {why}"), &email, "");
            return google_error(
                403,
                "forbidden",
                &format!(
                    "{email}: the harness does not know which permission {} {path} needs: {why}",
                    parts.method
                ),
            );
        }
    };
    // Replacing an object takes storage.objects.delete too.
    if let Some((bucket, name)) = overwrite {
        let exists = get_json(
            &shared.objects,
            &format!("/storage/v1/b/{bucket}/o/{}", encode(&name)),
        )
        .await
        .is_some();
        if exists {
            checks.push(Check::object("storage.objects.delete", &bucket, &name));
        }
    }
    let mut policies: BTreeMap<String, Value> = BTreeMap::new();
    for check in &checks {
        if !scope_allows(&scopes, check.permission) {
            refuse(
                &format!("scope for {}", check.permission),
                &email,
                &check.resource(),
            );
            return google_error(
                403,
                "insufficientPermissions",
                "Provided scope(s) are not authorized",
            );
        }
        if !policies.contains_key(&check.bucket) {
            let policy = get_json(
                &shared.policies,
                &format!(
                    "/storage/v1/b/{}/iam?optionsRequestedPolicyVersion=3",
                    check.bucket
                ),
            )
            .await
            .unwrap_or(Value::Null);
            policies.insert(check.bucket.clone(), policy);
        }
        let decision = decide(shared, &policies[&check.bucket], &email, check);
        if decision != Decision::Allowed {
            shared.state.lock().unwrap().refusals.push(Refusal {
                method: parts.method.to_string(),
                path: path.clone(),
                identity: email.clone(),
                permission: check.permission.to_owned(),
                resource: check.resource(),
                list_prefix: check.list_prefix.clone(),
                propagating: decision == Decision::Propagating,
            });
            let what = if check.object.is_some() {
                "object"
            } else {
                "bucket"
            };
            return google_error(
                403,
                "forbidden",
                &format!(
                    "{email} does not have {p} access to the Google Cloud Storage {what}. Permission '{p}' denied on resource (or it may not exist).",
                    p = check.permission
                ),
            );
        }
    }
    shared
        .state
        .lock()
        .unwrap()
        .allowed
        .push(format!("{} {path}", parts.method));
    forward().await
}

/// Hands a request to fake-gcs-server; in its answer (an object's bytes aside) its own
/// address becomes the public one.
async fn to_objects(
    shared: &Shared,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
    media: bool,
) -> Response<Full<Bytes>> {
    let answer = send(&shared.objects, method, path_and_query, headers, body).await;
    let (mut head, body) = answer.into_parts();
    if let Some(location) = head
        .headers
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(|l| l.replace(&shared.objects, &shared.public))
    {
        head.headers
            .insert("location", location.parse().expect("a header value"));
    }
    let mut bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !media {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            bytes = Bytes::from(text.replace(&shared.objects, &shared.public));
        }
    }
    Response::from_parts(head, Full::new(bytes))
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// `/storage/v1/b/B/iam` (and its `testPermissions`): B.
fn policy_bucket(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/storage/v1/b/")?;
    let (bucket, tail) = rest.split_once('/')?;
    (tail == "iam" || tail.starts_with("iam/")).then(|| percent_decode(bucket))
}

/// Notes when each (role, member, condition) of a bucket's new policy was first written,
/// and when each one no longer there was removed.
fn note_written(shared: &Shared, bucket: &str, policy: &Value) {
    let now = Instant::now();
    let revocation = *shared.revocation.lock().unwrap();
    let present: std::collections::BTreeSet<Grant> =
        grants_of(bucket, policy).into_iter().collect();
    let mut s = shared.state.lock().unwrap();
    let gone: Vec<Grant> = s
        .written
        .keys()
        .filter(|k| k.0 == bucket && !present.contains(*k))
        .cloned()
        .collect();
    for k in gone {
        s.removed.entry(k).or_insert(now);
    }
    for k in present {
        match s.removed.remove(&k) {
            // Back before its removal took effect: it never stopped working.
            Some(at) if at.elapsed() < revocation => {}
            Some(_) => {
                s.written.insert(k, now);
            }
            None => {
                s.written.entry(k).or_insert(now);
            }
        }
    }
}

fn grants_of(bucket: &str, policy: &Value) -> Vec<Grant> {
    let mut out = Vec::new();
    for b in policy["bindings"].as_array().into_iter().flatten() {
        let role = b["role"].as_str().unwrap_or("").to_owned();
        let expression = b["condition"]["expression"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        for m in b["members"].as_array().into_iter().flatten() {
            out.push((
                bucket.to_owned(),
                role.clone(),
                m.as_str().unwrap_or("").to_owned(),
                expression.clone(),
            ));
        }
    }
    out
}

// Requests → permissions.

/// One permission a request needs, on one resource.
#[derive(Clone, Debug)]
pub struct Check {
    pub permission: &'static str,
    pub bucket: String,
    /// None: the bucket itself (a listing).
    pub object: Option<String>,
    pub list_prefix: Option<String>,
}

impl Check {
    fn object(permission: &'static str, bucket: &str, name: &str) -> Check {
        Check {
            permission,
            bucket: bucket.to_owned(),
            object: Some(name.to_owned()),
            list_prefix: None,
        }
    }

    pub fn resource(&self) -> String {
        match &self.object {
            Some(o) => format!("projects/_/buckets/{}/objects/{o}", self.bucket),
            None => format!("projects/_/buckets/{}", self.bucket),
        }
    }

    fn resource_type(&self) -> &'static str {
        if self.object.is_some() {
            "storage.googleapis.com/Object"
        } else {
            "storage.googleapis.com/Bucket"
        }
    }
}

/// The permissions a JSON API object request needs, and the object it would replace if it
/// exists (whose replacement needs storage.objects.delete as well).
#[allow(clippy::type_complexity)]
pub fn checks_of(
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<(Vec<Check>, Option<(String, String)>), String> {
    let replaces = |bucket: &str, name: &str| {
        (query.get("ifGenerationMatch").map(String::as_str) != Some("0"))
            .then(|| (bucket.to_owned(), name.to_owned()))
    };
    // Uploads: the object's name is in the query, or in the metadata sent first.
    if let Some(rest) = path.strip_prefix("/upload/storage/v1/b/") {
        let Some((bucket, "o")) = rest.split_once('/') else {
            return Err("an upload path other than /upload/storage/v1/b/B/o".into());
        };
        let bucket = percent_decode(bucket);
        if query.contains_key("upload_id") {
            // A resumable session's URI is its own credential (checked as it began).
            return Ok((Vec::new(), None));
        }
        if *method != Method::POST {
            return Err(format!("{method} of an upload without a session"));
        }
        let name = match query.get("name") {
            Some(n) => n.clone(),
            None => metadata_name(content_type, body)
                .ok_or("an upload naming no object (neither ?name= nor metadata)")?,
        };
        return Ok((
            vec![Check::object("storage.objects.create", &bucket, &name)],
            replaces(&bucket, &name),
        ));
    }
    let (rest, download) = match path.strip_prefix("/download/storage/v1/b/") {
        Some(rest) => (rest, true),
        None => (
            path.strip_prefix("/storage/v1/b/")
                .ok_or("not a path of the JSON API's objects")?,
            false,
        ),
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let bucket = percent_decode(segments[0]);
    match (method.as_str(), &segments[1..]) {
        ("GET", ["o"]) if !download => Ok((
            vec![Check {
                permission: "storage.objects.list",
                bucket,
                object: None,
                list_prefix: Some(query.get("prefix").cloned().unwrap_or_default()),
            }],
            None,
        )),
        ("GET", ["o", name]) => Ok((
            vec![Check::object(
                "storage.objects.get",
                &bucket,
                &percent_decode(name),
            )],
            None,
        )),
        ("DELETE", ["o", name]) if !download => Ok((
            vec![Check::object(
                "storage.objects.delete",
                &bucket,
                &percent_decode(name),
            )],
            None,
        )),
        ("PATCH" | "PUT", ["o", name]) if !download => Ok((
            vec![Check::object(
                "storage.objects.update",
                &bucket,
                &percent_decode(name),
            )],
            None,
        )),
        ("POST", ["o", source, verb @ ("rewriteTo" | "copyTo"), "b", dest_bucket, "o", dest])
            if !download =>
        {
            let _ = verb;
            let (dest_bucket, dest) = (percent_decode(dest_bucket), percent_decode(dest));
            Ok((
                vec![
                    Check::object("storage.objects.get", &bucket, &percent_decode(source)),
                    Check::object("storage.objects.create", &dest_bucket, &dest),
                ],
                replaces(&dest_bucket, &dest),
            ))
        }
        ("POST", ["o", dest, "compose"]) if !download => {
            let dest = percent_decode(dest);
            let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let mut checks: Vec<Check> = request["sourceObjects"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["name"].as_str())
                .map(|s| Check::object("storage.objects.get", &bucket, s))
                .collect();
            checks.push(Check::object("storage.objects.create", &bucket, &dest));
            Ok((checks, replaces(&bucket, &dest)))
        }
        _ => Err(format!("{method} {path} is not a modelled object request")),
    }
}

/// The `name` of an upload's metadata: the JSON body of a resumable upload's start, or the
/// first part of a multipart one.
fn metadata_name(content_type: &str, body: &[u8]) -> Option<String> {
    let start = if content_type.starts_with("multipart/") {
        let blank = body.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        blank + body[blank..].iter().position(|b| *b == b'{')?
    } else {
        body.iter().position(|b| *b == b'{')?
    };
    let value = serde_json::Deserializer::from_slice(&body[start..])
        .into_iter::<Value>()
        .next()?
        .ok()?;
    value["name"].as_str().map(String::from)
}

/// The permissions of Cloud Storage's predefined roles that concern objects.
fn role_grants(role: &str, permission: &str) -> Option<bool> {
    const VIEWER: &[&str] = &["storage.objects.get", "storage.objects.list"];
    const CREATOR: &[&str] = &["storage.objects.create"];
    const USER: &[&str] = &[
        "storage.objects.get",
        "storage.objects.list",
        "storage.objects.create",
        "storage.objects.delete",
        "storage.objects.update",
    ];
    let perms: &[&str] = match role {
        "roles/storage.objectViewer" => VIEWER,
        "roles/storage.objectCreator" => CREATOR,
        "roles/storage.objectUser" | "roles/storage.objectAdmin" | "roles/storage.admin" => USER,
        "roles/storage.legacyObjectReader" => &["storage.objects.get"],
        "roles/storage.legacyObjectOwner" => &["storage.objects.get", "storage.objects.update"],
        "roles/storage.legacyBucketReader" => &["storage.objects.list"],
        "roles/storage.legacyBucketWriter" | "roles/storage.legacyBucketOwner" => &[
            "storage.objects.list",
            "storage.objects.create",
            "storage.objects.delete",
        ],
        // Roles of other services (project-level bindings are not modelled).
        r if r.starts_with("roles/storage.") => return None,
        _ => &[],
    };
    Some(perms.contains(&permission))
}

/// Whether an access token's scopes cover `permission`.
fn scope_allows(scopes: &[String], permission: &str) -> bool {
    let read = matches!(permission, "storage.objects.get" | "storage.objects.list");
    scopes.iter().any(|s| {
        let s = s.trim_start_matches("https://www.googleapis.com/auth/");
        matches!(
            s,
            "cloud-platform" | "devstorage.full_control" | "devstorage.read_write"
        ) || (read && matches!(s, "cloud-platform.read-only" | "devstorage.read_only"))
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Allowed,
    /// A binding allows it, written less than the delay ago.
    Propagating,
    Denied,
}

fn member_matches(member: &str, email: &str) -> bool {
    member == format!("serviceAccount:{email}")
        || member == "allUsers"
        || member == "allAuthenticatedUsers"
}

fn decide(shared: &Shared, policy: &Value, email: &str, check: &Check) -> Decision {
    let delay = *shared.delay.lock().unwrap();
    let revocation = *shared.revocation.lock().unwrap();
    // The policy's grants, and those removed whose removal has not spread yet.
    let mut grants = grants_of(&check.bucket, policy);
    {
        let s = shared.state.lock().unwrap();
        grants.extend(
            s.removed
                .iter()
                .filter(|(k, at)| k.0 == check.bucket && at.elapsed() < revocation)
                .map(|(k, _)| k.clone()),
        );
    }
    let mut decision = Decision::Denied;
    for grant in grants {
        let (_, role, member, expression) = &grant;
        if !member_matches(member, email) {
            continue;
        }
        match role_grants(role, check.permission) {
            Some(true) => {}
            Some(false) => continue,
            None => {
                shared
                    .state
                    .lock()
                    .unwrap()
                    .unevaluable
                    .push(format!("role {role}: not modelled"));
                continue;
            }
        }
        if !expression.is_empty() {
            let attrs = Attributes {
                name: check.resource(),
                kind: check.resource_type(),
                list_prefix: check.list_prefix.clone(),
            };
            match evaluate(expression, &attrs) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(why) => {
                    shared
                        .state
                        .lock()
                        .unwrap()
                        .unevaluable
                        .push(format!("{expression}: {why}"));
                    continue;
                }
            }
        }
        let written = *shared
            .state
            .lock()
            .unwrap()
            .written
            .entry(grant.clone())
            .or_insert_with(Instant::now);
        if written.elapsed() >= delay {
            return Decision::Allowed;
        }
        decision = Decision::Propagating;
    }
    decision
}

// IAM Conditions: the part of CEL Cloud Storage's conditions use.

/// What a condition can ask of a request.
pub struct Attributes {
    /// `resource.name`.
    pub name: String,
    /// `resource.type`.
    pub kind: &'static str,
    /// `api.getAttribute("storage.googleapis.com/objectListPrefix", d)`: a listing's prefix.
    pub list_prefix: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Op(&'static str),
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&d) = chars.get(i) else {
                    return Err("an unterminated string".into());
                };
                i += 1;
                match d {
                    d if d == c => break,
                    '\\' => {
                        let e = *chars.get(i).ok_or("an unterminated escape")?;
                        i += 1;
                        s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            '\\' | '"' | '\'' | '/' => e,
                            _ => return Err(format!("the escape \\{e} is not modelled")),
                        });
                    }
                    d => s.push(d),
                }
            }
            out.push(Token::Str(s));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let op = match two.as_str() {
                "||" => "||",
                "&&" => "&&",
                "==" => "==",
                "!=" => "!=",
                _ => match c {
                    '!' => "!",
                    '(' => "(",
                    ')' => ")",
                    '.' => ".",
                    ',' => ",",
                    _ => return Err(format!("'{c}' is not modelled")),
                },
            };
            i += op.len();
            out.push(Token::Op(op));
        }
    }
    Ok(out)
}

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Str(String),
    Bool(bool),
    /// `resource` or `api`, only to be selected from.
    Root(&'static str),
}

struct Eval<'a> {
    t: Vec<Token>,
    at: usize,
    attrs: &'a Attributes,
}

impl Eval<'_> {
    fn peek(&self) -> Option<&Token> {
        self.t.get(self.at)
    }

    fn eat(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Token::Op(o)) if *o == op) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, op: &str) -> Result<(), String> {
        if self.eat(op) {
            Ok(())
        } else {
            Err(format!("'{op}' expected at token {}", self.at))
        }
    }

    fn bool(v: Val) -> Result<bool, String> {
        match v {
            Val::Bool(b) => Ok(b),
            other => Err(format!("{other:?} is not a bool")),
        }
    }

    // Both sides are always evaluated: an error anywhere fails the whole condition.
    fn or(&mut self) -> Result<Val, String> {
        let first = self.and()?;
        if !matches!(self.peek(), Some(Token::Op("||"))) {
            return Ok(first);
        }
        let mut v = Self::bool(first)?;
        while self.eat("||") {
            let w = Self::bool(self.and()?)?;
            v = v || w;
        }
        Ok(Val::Bool(v))
    }

    fn and(&mut self) -> Result<Val, String> {
        let first = self.unary()?;
        if !matches!(self.peek(), Some(Token::Op("&&"))) {
            return Ok(first);
        }
        let mut v = Self::bool(first)?;
        while self.eat("&&") {
            let w = Self::bool(self.unary()?)?;
            v = v && w;
        }
        Ok(Val::Bool(v))
    }

    fn unary(&mut self) -> Result<Val, String> {
        if self.eat("!") {
            return Ok(Val::Bool(!Self::bool(self.unary()?)?));
        }
        let left = self.member()?;
        for (op, equal) in [("==", true), ("!=", false)] {
            if self.eat(op) {
                let right = self.member()?;
                return match (&left, &right) {
                    (Val::Str(_), Val::Str(_)) | (Val::Bool(_), Val::Bool(_)) => {
                        Ok(Val::Bool((left == right) == equal))
                    }
                    _ => Err(format!("{left:?} {op} {right:?}: no such overload")),
                };
            }
        }
        Ok(left)
    }

    fn member(&mut self) -> Result<Val, String> {
        let mut v = self.primary()?;
        while self.eat(".") {
            let Some(Token::Ident(field)) = self.peek().cloned() else {
                return Err("a name expected after '.'".into());
            };
            self.at += 1;
            let args = if self.eat("(") {
                let mut args = Vec::new();
                if !self.eat(")") {
                    loop {
                        args.push(self.or()?);
                        if self.eat(")") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                Some(args)
            } else {
                None
            };
            v = self.select(v, &field, args)?;
        }
        Ok(v)
    }

    fn select(&self, v: Val, field: &str, args: Option<Vec<Val>>) -> Result<Val, String> {
        match (v, field, args.as_deref()) {
            (Val::Root("resource"), "name", None) => Ok(Val::Str(self.attrs.name.clone())),
            (Val::Root("resource"), "type", None) => Ok(Val::Str(self.attrs.kind.to_owned())),
            (Val::Root("resource"), "service", None) => {
                Ok(Val::Str("storage.googleapis.com".into()))
            }
            (Val::Root("api"), "getAttribute", Some([Val::Str(key), default])) => {
                if key != "storage.googleapis.com/objectListPrefix" {
                    return Err(format!("the API attribute {key} is not modelled"));
                }
                Ok(match &self.attrs.list_prefix {
                    Some(p) => Val::Str(p.clone()),
                    None => default.clone(),
                })
            }
            (Val::Str(s), "startsWith", Some([Val::Str(p)])) => Ok(Val::Bool(s.starts_with(p))),
            (Val::Str(s), "endsWith", Some([Val::Str(p)])) => Ok(Val::Bool(s.ends_with(p))),
            (v, field, args) => Err(format!(
                "{v:?}.{field}{} is not modelled",
                if args.is_some() { "(…)" } else { "" }
            )),
        }
    }

    fn primary(&mut self) -> Result<Val, String> {
        let t = self.peek().cloned().ok_or("an expression ends early")?;
        self.at += 1;
        match t {
            Token::Str(s) => Ok(Val::Str(s)),
            Token::Ident(i) => match i.as_str() {
                "true" => Ok(Val::Bool(true)),
                "false" => Ok(Val::Bool(false)),
                "resource" => Ok(Val::Root("resource")),
                "api" => Ok(Val::Root("api")),
                other => Err(format!("the name '{other}' is not modelled")),
            },
            Token::Op("(") => {
                let v = self.or()?;
                self.expect(")")?;
                Ok(v)
            }
            Token::Op(op) => Err(format!("'{op}' where a value belongs")),
        }
    }
}

/// Evaluates an IAM condition for a request: Ok(whether it holds), or why it cannot be
/// evaluated (which grants nothing).
pub fn evaluate(expression: &str, attrs: &Attributes) -> Result<bool, String> {
    let mut e = Eval {
        t: tokens(expression)?,
        at: 0,
        attrs,
    };
    let v = e.or()?;
    if e.at != e.t.len() {
        return Err(format!("unexpected {:?}", e.t[e.at]));
    }
    Eval::bool(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str) -> Attributes {
        Attributes {
            name: format!("projects/_/buckets/b/objects/{name}"),
            kind: "storage.googleapis.com/Object",
            list_prefix: None,
        }
    }

    fn listing(prefix: Option<&str>) -> Attributes {
        Attributes {
            name: "projects/_/buckets/b".into(),
            kind: "storage.googleapis.com/Bucket",
            list_prefix: prefix.map(String::from),
        }
    }

    #[test]
    fn the_conditions_anycloud_writes_confine_objects_and_listings_to_the_prefix() {
        let e = "resource.name.startsWith(\"projects/_/buckets/b/objects/out/\") || (resource.type == \"storage.googleapis.com/Bucket\" && api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").startsWith(\"out/\"))";
        for (attrs, holds) in [
            (object("out/a.txt"), true),
            (object("out/deep/a.txt"), true),
            (object("out"), false),
            (object("outer/a.txt"), false),
            (object("in/a.txt"), false),
            (listing(Some("out/")), true),
            (listing(Some("out/sub/")), true),
            (listing(Some("out")), false),
            (listing(Some("")), false),
            (listing(None), false),
            (listing(Some("in/")), false),
        ] {
            assert_eq!(evaluate(e, &attrs), Ok(holds), "{}", attrs.name);
        }
    }

    #[test]
    fn what_cannot_be_evaluated_is_an_error_never_a_grant() {
        for e in [
            "request.time < timestamp(\"2030-01-01T00:00:00Z\")",
            "resource.name.matches(\".*\")",
            "resource.name.startsWith(\"x\") || api.getAttribute(\"iam.googleapis.com/modifiedGrantsByRole\", []).hasOnly([])",
            "resource.name.startsWith(\"projects/_/buckets/b/objects/\") || true && 1 == 1",
            "resource.name == true",
            "resource.name.startsWith(\"unterminated)",
            "resource.name",
            "(resource.name.startsWith(\"a\")",
        ] {
            assert!(evaluate(e, &object("a")).is_err(), "{e}");
        }
        assert_eq!(
            evaluate(
                "!(resource.type != 'storage.googleapis.com/Object')",
                &object("a")
            ),
            Ok(true)
        );
    }

    #[test]
    fn requests_map_to_the_permissions_google_checks() {
        let q = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let (c, _) = checks_of(
            &Method::GET,
            "/storage/v1/b/bk/o",
            &q(&[("prefix", "out/")]),
            "",
            b"",
        )
        .unwrap();
        assert_eq!(c[0].permission, "storage.objects.list");
        assert_eq!(c[0].resource(), "projects/_/buckets/bk");
        assert_eq!(c[0].list_prefix.as_deref(), Some("out/"));
        let (c, _) = checks_of(
            &Method::GET,
            "/storage/v1/b/bk/o/out%2Fa%20b.txt",
            &q(&[("alt", "media")]),
            "",
            b"",
        )
        .unwrap();
        assert_eq!(c[0].permission, "storage.objects.get");
        assert_eq!(c[0].resource(), "projects/_/buckets/bk/objects/out/a b.txt");
        let multipart = b"--xx\r\nContent-Type: application/json\r\n\r\n{\"name\":\"out/t.txt\",\"bucket\":\"bk\"}\r\n--xx\r\nContent-Type: text/plain\r\n\r\nhello\r\n--xx--\r\n";
        let (c, replaced) = checks_of(
            &Method::POST,
            "/upload/storage/v1/b/bk/o",
            &q(&[("uploadType", "multipart")]),
            "multipart/related; boundary=xx",
            multipart,
        )
        .unwrap();
        assert_eq!(c[0].permission, "storage.objects.create");
        assert_eq!(c[0].resource(), "projects/_/buckets/bk/objects/out/t.txt");
        assert_eq!(replaced, Some(("bk".into(), "out/t.txt".into())));
        let (_, replaced) = checks_of(
            &Method::POST,
            "/upload/storage/v1/b/bk/o",
            &q(&[
                ("uploadType", "media"),
                ("name", "m"),
                ("ifGenerationMatch", "0"),
            ]),
            "",
            b"",
        )
        .unwrap();
        assert_eq!(replaced, None, "a create-only write replaces nothing");
        let (c, replaced) = checks_of(
            &Method::POST,
            "/storage/v1/b/bk/o/out%2Fa/rewriteTo/b/bk/o/out%2Fkept%2Fa",
            &q(&[]),
            "",
            b"",
        )
        .unwrap();
        assert_eq!(
            c.iter()
                .map(|c| (c.permission, c.resource()))
                .collect::<Vec<_>>(),
            [
                (
                    "storage.objects.get",
                    "projects/_/buckets/bk/objects/out/a".to_owned()
                ),
                (
                    "storage.objects.create",
                    "projects/_/buckets/bk/objects/out/kept/a".to_owned()
                ),
            ]
        );
        assert_eq!(replaced, Some(("bk".into(), "out/kept/a".into())));
        let (c, _) = checks_of(&Method::DELETE, "/storage/v1/b/bk/o/x", &q(&[]), "", b"").unwrap();
        assert_eq!(c[0].permission, "storage.objects.delete");
        let (c, _) = checks_of(&Method::PATCH, "/storage/v1/b/bk/o/x", &q(&[]), "", b"").unwrap();
        assert_eq!(c[0].permission, "storage.objects.update");
        assert!(checks_of(&Method::POST, "/storage/v1/b/bk/o/watch", &q(&[]), "", b"").is_err());
        assert!(checks_of(&Method::GET, "/storage/v1/b/bk/o/x/acl", &q(&[]), "", b"").is_err());
    }

    #[test]
    fn roles_and_scopes() {
        assert_eq!(
            role_grants("roles/storage.objectViewer", "storage.objects.create"),
            Some(false)
        );
        assert_eq!(
            role_grants("roles/storage.objectAdmin", "storage.objects.delete"),
            Some(true)
        );
        assert_eq!(
            role_grants("roles/storage.somethingNew", "storage.objects.get"),
            None
        );
        let ro = ["https://www.googleapis.com/auth/devstorage.read_only".to_owned()];
        assert!(scope_allows(&ro, "storage.objects.get"));
        assert!(!scope_allows(&ro, "storage.objects.create"));
        let cp = ["https://www.googleapis.com/auth/cloud-platform".to_owned()];
        assert!(scope_allows(&cp, "storage.objects.delete"));
        assert!(!scope_allows(&[], "storage.objects.get"));
    }
}
