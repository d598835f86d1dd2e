//! A contract server for Google Cloud's control plane, driven by Google's own discovery
//! documents (`../discovery/`, Apache-2.0, see `LICENSE-NOTE.md` there):
//!
//! - Cloud Storage JSON API `storage/v1`, revision 20240809;
//! - IAM `v1`, revision 20240725;
//! - Compute Engine `compute/v1`, revision 20230606, an **extract** (instances, zone
//!   operations and firewalls with the schemas they reference) plus three methods the
//!   extract left out, written here in the document's own shape (see [`COMPUTE_EXTRAS`]).
//!
//! Google has no emulator for Compute Engine or IAM, and fake-gcs-server keeps no bucket
//! labels or IAM policies, so this server holds anycloud to the published contract instead:
//!
//! - every request must be a method of those documents: its HTTP method and path template
//!   (`rootUrl` + `servicePath` + `flatPath`/`path`, or the media upload path), the query
//!   parameters it declares (required ones present, types, enums, bounds, patterns), and a
//!   body the method's `request` schema accepts, checked recursively (types, int64 as
//!   strings, enums, unknown properties, `additionalProperties` maps, arrays' items, the
//!   `annotations.required` of the method and IAM's "Required." fields). Anything else is
//!   answered as Google would (400/404, the standard error envelope) **and** recorded as a
//!   violation, which the tests assert there are none of;
//! - on top of the schemas, the rules Google enforces and the documents only describe in
//!   prose: bucket and account names, labels, IAM members, conditions needing policy
//!   version 3, one boot disk per VM, Spot scheduling;
//! - behaviour is modelled where anycloud depends on it: etags on bucket policies (412 when
//!   stale), Compute's long-running operations (RUNNING for `slow_polls` polls), requestId
//!   idempotency, paging with `nextPageToken`, a new service account not yet visible to
//!   bucket policies, Spot preemption;
//! - faults can be injected: 429 `rateLimitExceeded`, slow operations, bucket names owned
//!   elsewhere, concurrent policy writers.
//!
//! The server also plays Google's OAuth 2.0 token endpoint (`POST /token`) for the
//! service-account (JWT bearer) and refresh-token grants.

// Each test binary that includes it uses part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

/// The project the tests work in.
pub const PROJECT: &str = "anycloud-contract";
/// Another project, for buckets and accounts that are not ours.
pub const OTHER_PROJECT: &str = "someone-else-4242";
/// The access token accepted without being issued (`GOOGLE_OAUTH_ACCESS_TOKEN`).
pub const ACCESS_TOKEN: &str = "ya29.contract-server-fixed-token";
/// The OAuth client and refresh token of the refresh-token grant (gcloud's user credentials).
pub const CLIENT_ID: &str = "764086051850-contract.apps.googleusercontent.com";
pub const CLIENT_SECRET: &str = "contract-server-secret-not-real";
pub const REFRESH_TOKEN: &str = "1//contract-server-refresh-token";

const STORAGE_DOC: &str = include_str!("../discovery/storage-v1.json");
const IAM_DOC: &str = include_str!("../discovery/iam-v1.json");
const COMPUTE_DOC: &str = include_str!("../discovery/compute-v1-extract.json");

/// Methods of the full compute v1 document that the extract left out and anycloud uses:
/// firewall rules are global resources, so their inserts and deletes answer a *global*
/// operation, polled at `projects/{p}/global/operations/{op}`; and the firewalls of a
/// project can be listed; and a region is read for its quotas (`regions.get`, a `Region`
/// whose `quotas[]` are `Quota`s: metric, limit, usage, owner; the metric's long enum left
/// out). Written in the document's shape (same parameters as their zonal and instance
/// counterparts), merged into the extract at load.
const COMPUTE_EXTRAS: &str = r#"{
  "globalOperations": {"methods": {
    "get": {"id": "compute.globalOperations.get", "httpMethod": "GET",
      "path": "projects/{project}/global/operations/{operation}",
      "flatPath": "projects/{project}/global/operations/{operation}",
      "parameterOrder": ["project", "operation"],
      "parameters": {
        "project": {"location": "path", "required": true, "type": "string"},
        "operation": {"location": "path", "required": true, "type": "string",
          "pattern": "[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?|[1-9][0-9]{0,19}"}},
      "response": {"$ref": "Operation"}},
    "wait": {"id": "compute.globalOperations.wait", "httpMethod": "POST",
      "path": "projects/{project}/global/operations/{operation}/wait",
      "flatPath": "projects/{project}/global/operations/{operation}/wait",
      "parameterOrder": ["project", "operation"],
      "parameters": {
        "project": {"location": "path", "required": true, "type": "string"},
        "operation": {"location": "path", "required": true, "type": "string",
          "pattern": "[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?|[1-9][0-9]{0,19}"}},
      "response": {"$ref": "Operation"}}}},
  "firewallsList": {"id": "compute.firewalls.list", "httpMethod": "GET",
    "path": "projects/{project}/global/firewalls",
    "flatPath": "projects/{project}/global/firewalls",
    "parameterOrder": ["project"],
    "parameters": {
      "project": {"location": "path", "required": true, "type": "string"},
      "filter": {"location": "query", "type": "string"},
      "maxResults": {"location": "query", "type": "integer", "format": "uint32", "minimum": "0", "default": "500"},
      "orderBy": {"location": "query", "type": "string"},
      "pageToken": {"location": "query", "type": "string"},
      "returnPartialSuccess": {"location": "query", "type": "boolean"}},
    "response": {"$ref": "FirewallList"}},
  "regions": {"methods": {
    "get": {"id": "compute.regions.get", "httpMethod": "GET",
      "path": "projects/{project}/regions/{region}",
      "flatPath": "projects/{project}/regions/{region}",
      "parameterOrder": ["project", "region"],
      "parameters": {
        "project": {"location": "path", "required": true, "type": "string"},
        "region": {"location": "path", "required": true, "type": "string",
          "pattern": "[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?|[1-9][0-9]{0,19}"}},
      "response": {"$ref": "Region"}}}},
  "Region": {"id": "Region", "type": "object", "properties": {
    "creationTimestamp": {"type": "string"}, "description": {"type": "string"},
    "id": {"type": "string", "format": "uint64"},
    "kind": {"type": "string", "default": "compute#region"}, "name": {"type": "string"},
    "quotas": {"type": "array", "items": {"$ref": "Quota"}},
    "selfLink": {"type": "string"},
    "status": {"type": "string", "enum": ["DOWN", "UP"]},
    "supportsPzs": {"type": "boolean"},
    "zones": {"type": "array", "items": {"type": "string"}}}},
  "Quota": {"id": "Quota", "type": "object", "properties": {
    "limit": {"type": "number", "format": "double"},
    "metric": {"type": "string"},
    "owner": {"type": "string"},
    "usage": {"type": "number", "format": "double"}}}
}"#;

/// Called with (bucket, made) as a bucket is made or deleted.
pub type Mirror = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// A bucket: its metadata as `buckets.get` answers it, its IAM policy, its objects.
#[derive(Clone, Debug)]
pub struct Bucket {
    pub project: String,
    pub meta: Value,
    pub policy: Value,
    pub objects: BTreeMap<String, Object>,
}

#[derive(Clone, Debug)]
pub struct Object {
    pub meta: Value,
    pub bytes: Vec<u8>,
}

/// A Compute operation: the resource changes when it is DONE, after `polls_left` polls.
#[derive(Clone, Debug)]
struct Operation {
    op: Value,
    polls_left: usize,
    effect: Effect,
}

#[derive(Clone, Debug)]
enum Effect {
    None,
    /// (project, zone, name): the instance is RUNNING.
    Start(String, String, String),
    RemoveInstance(String, String, String),
    RemoveFirewall(String, String),
    /// (project, zone): the insert ends with the zone out of resources, nothing made.
    NoCapacity(String, String),
}

#[derive(Default)]
pub struct World {
    /// Every API request, as "METHOD path" (query left out); token calls are not in it.
    pub requests: Vec<String>,
    /// Calls of the token endpoint.
    pub token_requests: usize,
    pub violations: Vec<String>,
    tokens: BTreeSet<String>,
    /// A token accepted without being issued (the tests' `GOOGLE_OAUTH_ACCESS_TOKEN`).
    pub accept_token: Option<String>,
    /// name → bucket (names are global).
    pub buckets: BTreeMap<String, Bucket>,
    /// Bucket names another project owns: insert → 409, reads → 403.
    pub buckets_taken_elsewhere: BTreeSet<String>,
    /// email → service account.
    pub accounts: BTreeMap<String, Value>,
    /// email → setIamPolicy calls still to answer "does not exist" (IAM propagation).
    pub fresh_accounts: BTreeMap<String, usize>,
    /// How many setIamPolicy calls a new account stays unknown to bucket policies.
    pub unknown_member_polls: usize,
    /// Answer that many setIamPolicy calls 412, as if someone else wrote first.
    pub stale_etag_next: usize,
    /// (project, zone, name) → instance.
    pub instances: BTreeMap<(String, String, String), Value>,
    /// (region, quota metric) → the project's limit; [`DEFAULT_QUOTA`] where not set.
    pub quota_limits: BTreeMap<(String, String), f64>,
    /// (project, name) → firewall.
    pub firewalls: BTreeMap<(String, String), Value>,
    /// operation name → operation.
    operations: BTreeMap<String, Operation>,
    /// requestId → the operation it started.
    request_ids: BTreeMap<String, String>,
    /// Called as a bucket is made (`true`) or deleted: mirrors it into a data-plane emulator.
    pub on_bucket: Option<Mirror>,
    /// Service account email → its public key (PKCS#1 DER): assertions of these accounts
    /// must carry their signature.
    pub service_account_keys: BTreeMap<String, Vec<u8>>,
    /// The data plane's emulator (`http://host:port`): object requests go there as they
    /// come, bucket and policy requests are answered here (fake-gcs-server keeps no labels
    /// and no IAM policies).
    pub objects_upstream: Option<String>,
    /// An emulator that keeps bucket IAM policies (`http://host:port`): policy requests are
    /// checked here and answered there.
    pub policies_upstream: Option<String>,
    /// Fault injection.
    /// Zones whose instance inserts end `ZONE_RESOURCE_POOL_EXHAUSTED` (`*`: every zone).
    pub full_zones: BTreeSet<String>,
    pub throttle_next: usize,
    pub slow_polls: usize,
    pub page_size: usize,
    next_id: u64,
}

impl World {
    fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn etag(&mut self) -> String {
        let n = self.next();
        b64(format!("etag-{n}").as_bytes(), STD)
    }
}

#[derive(Clone)]
pub struct Contract {
    pub url: String,
    pub world: Arc<Mutex<World>>,
}

impl Contract {
    pub fn start() -> Contract {
        Contract::start_on("127.0.0.1")
    }

    /// Listening on `ip` (a test host's gateway, for commands run in its namespace).
    pub fn start_on(ip: &str) -> Contract {
        // Parse the documents once, before the first request (a broken copy fails here).
        spec();
        let ip = ip.to_owned();
        let world = Arc::new(Mutex::new(World {
            page_size: 2,
            accept_token: Some(ACCESS_TOKEN.into()),
            ..World::default()
        }));
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = world.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind((ip.as_str(), 0))
                    .await
                    .unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let world = shared.clone();
                    let addr: SocketAddr = stream.local_addr().unwrap();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let world = world.clone();
                            async move { Ok::<_, Infallible>(handle(&world, addr, req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        let addr = rx.recv().unwrap();
        Contract {
            url: format!("http://{addr}"),
            world,
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        f(&mut self.world.lock().unwrap())
    }

    pub fn violations(&self) -> Vec<String> {
        self.with(|w| w.violations.clone())
    }

    /// Requests whose "METHOD path" starts with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.with(|w| w.requests.iter().filter(|r| r.starts_with(prefix)).count())
    }

    pub fn total(&self) -> usize {
        self.with(|w| w.requests.len())
    }

    /// The OAuth 2.0 token endpoint (a service account key's `token_uri`).
    pub fn token_url(&self) -> String {
        format!("{}/token", self.url)
    }

    /// The environment that makes anycloud sign in to this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let token = self.with(|w| w.accept_token.clone());
        vec![(
            "GOOGLE_OAUTH_ACCESS_TOKEN",
            token.unwrap_or_else(|| ACCESS_TOKEN.into()),
        )]
    }

    pub fn bucket(&self, name: &str) -> Option<Value> {
        self.with(|w| w.buckets.get(name).map(|b| b.meta.clone()))
    }

    pub fn policy(&self, bucket: &str) -> Option<Value> {
        self.with(|w| w.buckets.get(bucket).map(|b| b.policy.clone()))
    }

    /// An object's bytes.
    pub fn object(&self, bucket: &str, name: &str) -> Option<Vec<u8>> {
        self.with(|w| {
            w.buckets
                .get(bucket)
                .and_then(|b| b.objects.get(name))
                .map(|o| o.bytes.clone())
        })
    }

    pub fn account(&self, email: &str) -> Option<Value> {
        self.with(|w| w.accounts.get(email).cloned())
    }

    /// The first instance of that name, in any project and zone.
    pub fn instance(&self, name: &str) -> Option<Value> {
        self.with(|w| {
            w.instances
                .iter()
                .find(|((_, _, n), _)| n == name)
                .map(|(_, i)| i.clone())
        })
    }

    pub fn firewall(&self, name: &str) -> Option<Value> {
        self.with(|w| {
            w.firewalls
                .iter()
                .find(|((_, n), _)| n == name)
                .map(|(_, f)| f.clone())
        })
    }

    /// A Spot preemption: an instance whose termination action is DELETE is gone, any
    /// other is TERMINATED (STOP is the default action).
    pub fn preempt(&self, name: &str) {
        self.with(|w| {
            w.instances.retain(|(_, _, n), vm| {
                if n != name {
                    return true;
                }
                if vm["scheduling"]["instanceTerminationAction"] == json!("DELETE") {
                    return false;
                }
                vm["status"] = json!("TERMINATED");
                true
            })
        });
    }
}

// The discovery documents, as a table of methods.

/// One path segment of a method's template: a literal, or a variable with any literal
/// around it (IAM's `{serviceAccountsId}:disable`).
#[derive(Debug)]
enum Seg {
    Lit(String),
    Var(String, String, String),
}

#[derive(Debug)]
struct Method {
    /// "storage.buckets.insert"
    id: String,
    http: String,
    template: Vec<Seg>,
    /// Index of its document in `Spec::docs`.
    doc: usize,
    def: Value,
    /// The simple media upload of `mediaUpload.protocols.simple.path`: the body is the bytes.
    upload: bool,
}

struct Spec {
    docs: Vec<Value>,
    methods: Vec<Method>,
}

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let mut compute: Value = serde_json::from_str(COMPUTE_DOC).unwrap();
        let extras: Value = serde_json::from_str(COMPUTE_EXTRAS).unwrap();
        compute["resources"]["globalOperations"] = extras["globalOperations"].clone();
        compute["resources"]["firewalls"]["methods"]["list"] = extras["firewallsList"].clone();
        compute["resources"]["regions"] = extras["regions"].clone();
        compute["schemas"]["Region"] = extras["Region"].clone();
        compute["schemas"]["Quota"] = extras["Quota"].clone();
        // The extract has the list's item schema but not the list's envelope.
        compute["schemas"]["FirewallList"] = json!({"id": "FirewallList", "type": "object",
            "properties": {"id": {"type": "string"}, "items": {"type": "array", "items": {"$ref": "Firewall"}},
                "kind": {"type": "string"}, "nextPageToken": {"type": "string"}, "selfLink": {"type": "string"}}});
        let docs = vec![
            serde_json::from_str(STORAGE_DOC).unwrap(),
            serde_json::from_str(IAM_DOC).unwrap(),
            compute,
        ];
        let mut methods = Vec::new();
        for (i, doc) in docs.iter().enumerate() {
            let root = doc["rootUrl"].as_str().unwrap();
            let root = root
                .split_once("://")
                .and_then(|(_, r)| r.find('/').map(|at| &r[at..]))
                .unwrap_or("/");
            let base = format!("{root}{}", doc["servicePath"].as_str().unwrap_or(""));
            collect(i, &base, &doc["resources"], &mut methods);
        }
        Spec { docs, methods }
    })
}

fn collect(doc: usize, base: &str, resources: &Value, out: &mut Vec<Method>) {
    for r in resources.as_object().into_iter().flat_map(|o| o.values()) {
        for m in r["methods"]
            .as_object()
            .into_iter()
            .flat_map(|o| o.values())
        {
            let path = m["path"].as_str().unwrap_or("");
            // `{+name}` spans segments; the flat path spells them out.
            let path = match m["flatPath"].as_str() {
                Some(flat) if path.contains("{+") => flat,
                _ => path,
            };
            let method = |template: &str, upload| Method {
                id: m["id"].as_str().unwrap_or("").to_owned(),
                http: m["httpMethod"].as_str().unwrap_or("").to_owned(),
                template: template
                    .trim_start_matches('/')
                    .split('/')
                    .map(segment)
                    .collect(),
                doc,
                def: m.clone(),
                upload,
            };
            out.push(method(&format!("{base}{path}"), false));
            if let Some(simple) = m["mediaUpload"]["protocols"]["simple"]["path"].as_str() {
                out.push(method(simple, true));
            }
        }
        collect(doc, base, &r["resources"], out);
    }
}

fn segment(s: &str) -> Seg {
    match (s.find('{'), s.find('}')) {
        (Some(a), Some(b)) if a < b => Seg::Var(
            s[..a].to_owned(),
            s[a + 1..b].trim_start_matches('+').to_owned(),
            s[b + 1..].to_owned(),
        ),
        _ => Seg::Lit(s.to_owned()),
    }
}

/// The method a request is, with its path parameters (percent-decoded); the one with the
/// most literal segments wins (`b/{bucket}/o/watch` before `b/{bucket}/o/{object}`).
/// `Err(true)`: the path is a method's, with another HTTP method.
fn route(http: &str, path: &str) -> Result<(&'static Method, BTreeMap<String, String>), bool> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut best: Option<(usize, &Method, BTreeMap<String, String>)> = None;
    let mut other_verb = false;
    for m in &spec().methods {
        if m.template.len() != segs.len() {
            continue;
        }
        let mut vars = BTreeMap::new();
        let mut literals = 0;
        let fits = m.template.iter().zip(&segs).all(|(t, s)| match t {
            Seg::Lit(l) => {
                literals += 1;
                l == s
            }
            Seg::Var(pre, name, suf) => {
                let fits = s.len() > pre.len() + suf.len()
                    && s.starts_with(pre.as_str())
                    && s.ends_with(suf.as_str());
                if fits {
                    // A literal around the variable counts (`{serviceAccountsId}:disable`).
                    literals += usize::from(!pre.is_empty() || !suf.is_empty());
                    vars.insert(
                        name.clone(),
                        percent_decode(&s[pre.len()..s.len() - suf.len()]),
                    );
                }
                fits
            }
        });
        if !fits {
            continue;
        }
        if m.http != http {
            other_verb = true;
            continue;
        }
        if best.as_ref().is_none_or(|(n, _, _)| literals > *n) {
            best = Some((literals, m, vars));
        }
    }
    best.map(|(_, m, v)| (m, v)).ok_or(other_verb)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query parameters: each one the method (or its document, globally) declares, none
/// repeated unless `repeated`, required ones present, values of the declared type, enum,
/// bounds and pattern.
fn check_query(
    m: &Method,
    path: &BTreeMap<String, String>,
    query: &[(String, String)],
) -> Result<(), String> {
    let doc = &spec().docs[m.doc];
    // Path parameters have patterns too (Compute's names and project ids).
    for (k, v) in path {
        if let Some(p) = m.def["parameters"].get(k) {
            param_value(p, v).map_err(|e| format!("path parameter '{k}': {e}"))?;
        }
    }
    let declared = |k: &str| -> Option<&Value> {
        m.def["parameters"]
            .get(k)
            .filter(|p| p["location"] == json!("query"))
            .or_else(|| doc["parameters"].get(k))
    };
    let mut seen = BTreeSet::new();
    for (k, v) in query {
        let Some(p) = declared(k) else {
            return Err(format!(
                "query parameter '{k}' is not one {} declares",
                m.id
            ));
        };
        if !seen.insert(k.as_str()) && p["repeated"] != json!(true) {
            return Err(format!("query parameter '{k}' given twice"));
        }
        // Storage's `alt` enum is ["json"]; media downloads are declared per method.
        if k == "alt" && v == "media" && m.def["supportsMediaDownload"] == json!(true) {
            continue;
        }
        param_value(p, v).map_err(|e| format!("query parameter '{k}': {e}"))?;
    }
    for (k, p) in m.def["parameters"].as_object().into_iter().flatten() {
        if p["location"] == json!("query")
            && p["required"] == json!(true)
            && !seen.contains(k.as_str())
        {
            return Err(format!("Required parameter: {k}"));
        }
    }
    if m.upload {
        match query
            .iter()
            .find(|(k, _)| k == "uploadType")
            .map(|(_, v)| v.as_str())
        {
            Some("media") => {
                if !seen.contains("name") {
                    return Err("a media upload names its object with the 'name' parameter".into());
                }
            }
            other => {
                return Err(format!(
                    "uploadType {other:?}: the contract server models simple media uploads only"
                ))
            }
        }
    }
    Ok(())
}

fn param_value(p: &Value, v: &str) -> Result<(), String> {
    match p["type"].as_str() {
        Some("integer") => {
            let n: i64 = v.parse().map_err(|_| format!("'{v}' is not an integer"))?;
            let bound = |k: &str| p[k].as_str().and_then(|b| b.parse::<i64>().ok());
            if bound("minimum").is_some_and(|b| n < b) || bound("maximum").is_some_and(|b| n > b) {
                return Err(format!("{n} is out of range"));
            }
        }
        Some("boolean") if v != "true" && v != "false" => {
            return Err(format!("'{v}' is not a boolean"))
        }
        _ => {}
    }
    if let Some(allowed) = p["enum"].as_array() {
        if !allowed.iter().any(|a| a == v) {
            return Err(format!("'{v}' is not one of {allowed:?}"));
        }
    }
    if let Some(pattern) = p["pattern"].as_str() {
        if pattern_ok(pattern, v) == Some(false) {
            return Err(format!("'{v}' does not match {pattern}"));
        }
    }
    Ok(())
}

/// The patterns the three documents use, checked by hand (no regex engine here); `None`
/// for a pattern this server does not know, which is then not checked.
fn pattern_ok(pattern: &str, v: &str) -> Option<bool> {
    const NAME: &str = "[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?";
    const PROJECT: &str = r"(?:(?:[-a-z0-9]{1,63}\.)*(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?):)?(?:[0-9]{1,19}|(?:[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?))";
    let digits = |v: &str| {
        (1..=20).contains(&v.len()) && v.bytes().all(|c| c.is_ascii_digit()) && !v.starts_with('0')
    };
    Some(match pattern {
        NAME => rfc1035(v),
        p if p == format!("{NAME}|[1-9][0-9]{{0,19}}") => rfc1035(v) || digits(v),
        "[a-zA-Z0-9-_]{1,128}" => {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        }
        PROJECT => {
            // An optional "domain.example:" before an id or number.
            let id = v.rsplit_once(':').map(|(_, id)| id).unwrap_or(v);
            (1..=63).contains(&id.len())
                && id
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !id.starts_with('-')
                && !id.ends_with('-')
        }
        _ => return None,
    })
}

fn rfc1035(v: &str) -> bool {
    (1..=63).contains(&v.len())
        && v.starts_with(|c: char| c.is_ascii_lowercase())
        && !v.ends_with('-')
        && v.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// A request body against a schema of the method's document.
struct Check<'a> {
    doc: &'a Value,
    method: &'a str,
    /// PATCH: nothing is required, and null clears a field (labels).
    patch: bool,
    errs: Vec<String>,
}

impl Check<'_> {
    fn value(&mut self, schema: &Value, v: &Value, at: &str) {
        if let Some(r) = schema["$ref"].as_str() {
            match self.doc["schemas"].get(r) {
                Some(s) => self.value(s, v, at),
                None => self
                    .errs
                    .push(format!("{at}: schema {r} is not in the document")),
            }
            return;
        }
        if v.is_null() {
            if !self.patch {
                self.errs.push(format!("{at}: null (leave the field out)"));
            }
            return;
        }
        let default = if schema.get("properties").is_some() {
            "object"
        } else {
            "any"
        };
        match schema["type"].as_str().unwrap_or(default) {
            "any" => {}
            "object" => self.object(schema, v, at),
            "array" => match v.as_array() {
                Some(items) => {
                    for (i, x) in items.iter().enumerate() {
                        let at = format!("{at}[{i}]");
                        self.value(&schema["items"], x, &at);
                        // Compute puts an array's item pattern on the array (Tags.items).
                        if let (Some(p), Some(s)) = (schema["pattern"].as_str(), x.as_str()) {
                            if pattern_ok(p, s) == Some(false) {
                                self.errs.push(format!("{at}: '{s}' does not match {p}"));
                            }
                        }
                    }
                }
                None => self.errs.push(format!("{at}: must be an array")),
            },
            "string" => self.string(schema, v, at),
            "integer" => {
                if !(v.is_i64() || v.is_u64()) {
                    self.errs.push(format!("{at}: must be an integer"));
                }
            }
            "number" => {
                if !v.is_number() {
                    self.errs.push(format!("{at}: must be a number"));
                }
            }
            "boolean" => {
                if !v.is_boolean() {
                    self.errs.push(format!("{at}: must be a boolean"));
                }
            }
            other => self
                .errs
                .push(format!("{at}: unknown type {other} in the document")),
        }
    }

    fn object(&mut self, schema: &Value, v: &Value, at: &str) {
        let Some(o) = v.as_object() else {
            self.errs.push(format!("{at}: must be an object"));
            return;
        };
        let props = schema["properties"].as_object();
        for (k, x) in o {
            match (
                props.and_then(|p| p.get(k)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => self.value(s, x, &format!("{at}.{k}")),
                (None, Some(s)) => self.value(s, x, &format!("{at}[{k:?}]")),
                (None, None) if props.is_none() => {}
                (None, None) => self.errs.push(format!("{at}: unknown property '{k}'")),
            }
        }
        if self.patch {
            return;
        }
        for (k, p) in props.into_iter().flatten() {
            let annotated = p["annotations"]["required"]
                .as_array()
                .is_some_and(|r| r.iter().any(|m| m == self.method));
            // The proto-generated documents (IAM) say so in the description.
            let described = p["description"]
                .as_str()
                .is_some_and(|d| d.starts_with("Required."));
            if (annotated || described) && !o.contains_key(k) {
                self.errs.push(format!("{at}.{k}: required"));
            }
        }
    }

    fn string(&mut self, schema: &Value, v: &Value, at: &str) {
        let format = schema["format"].as_str().unwrap_or("");
        let Some(s) = v.as_str() else {
            // 64-bit integers are strings in JSON; a number is accepted too.
            if ["int64", "uint64", "int32", "uint32"].contains(&format)
                && (v.is_i64() || v.is_u64())
            {
                return;
            }
            self.errs.push(format!("{at}: must be a string"));
            return;
        };
        let ok = match format {
            "int64" | "int32" => s.strip_prefix('-').unwrap_or(s).parse::<u64>().is_ok(),
            "uint64" | "uint32" => s.parse::<u64>().is_ok(),
            "byte" => s
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"+/=-_".contains(&c)),
            "date-time" | "google-datetime" => s.len() >= 20 && s.as_bytes().get(10) == Some(&b'T'),
            "google-duration" => s.ends_with('s') && s[..s.len() - 1].parse::<f64>().is_ok(),
            _ => true,
        };
        if !ok {
            self.errs
                .push(format!("{at}: '{s}' is not of format {format}"));
        }
        if let Some(allowed) = schema["enum"].as_array() {
            if !allowed.iter().any(|a| a == s) {
                self.errs
                    .push(format!("{at}: '{s}' is not one of {allowed:?}"));
            }
        }
        if let Some(p) = schema["pattern"].as_str() {
            if pattern_ok(p, s) == Some(false) {
                self.errs.push(format!("{at}: '{s}' does not match {p}"));
            }
        }
    }
}

/// The body of a JSON method against its `request` schema; a method without one takes none.
fn check_body(m: &Method, body: &Value) -> Result<(), String> {
    let Some(schema) = m.def["request"]["$ref"].as_str() else {
        return match body {
            Value::Null => Ok(()),
            _ => Err(format!("{} takes no request body", m.id)),
        };
    };
    let mut check = Check {
        doc: &spec().docs[m.doc],
        method: &m.id,
        patch: m.http == "PATCH",
        errs: vec![],
    };
    let body = if body.is_null() {
        json!({})
    } else {
        body.clone()
    };
    check.value(&json!({"$ref": schema}), &body, schema);
    match check.errs.is_empty() {
        true => Ok(()),
        false => Err(check.errs.join("; ")),
    }
}

// Answers.

enum Payload {
    Json(Value),
    Bytes(Vec<u8>, String),
    Empty,
    /// Checked here, answered by an emulator at this URL.
    Forward(String),
}

struct Answer(u16, Payload);

fn ok(status: u16, body: Value) -> Answer {
    Answer(status, Payload::Json(body))
}

fn no_content() -> Answer {
    Answer(204, Payload::Empty)
}

/// Google's error envelope. `status` is the canonical code the newer APIs add.
fn error(code: u16, reason: &str, message: &str) -> Answer {
    let status = match (code, reason) {
        (400, _) => "INVALID_ARGUMENT",
        (401, _) => "UNAUTHENTICATED",
        (403, _) => "PERMISSION_DENIED",
        (404, _) => "NOT_FOUND",
        (409, "alreadyExists" | "ALREADY_EXISTS") => "ALREADY_EXISTS",
        (409, "conflict") if message.contains("not empty") => "FAILED_PRECONDITION",
        (409, _) => "ALREADY_EXISTS",
        (412, _) => "FAILED_PRECONDITION",
        (429, _) => "RESOURCE_EXHAUSTED",
        (501, _) => "UNIMPLEMENTED",
        _ => "UNKNOWN",
    };
    ok(
        code,
        json!({"error": {
            "code": code, "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": status,
        }}),
    )
}

/// A request outside the contract: answered as Google would, and recorded.
fn violation(w: &mut World, code: u16, reason: &str, what: String) -> Answer {
    w.violations.push(what.clone());
    error(code, reason, &what)
}

struct Req<'a> {
    base: &'a str,
    what: String,
    /// Path parameters (percent-decoded).
    p: BTreeMap<String, String>,
    /// Query parameters (the last of a repeated one).
    q: BTreeMap<String, String>,
    body: Value,
    raw: &'a [u8],
    content_type: &'a str,
}

impl Req<'_> {
    fn p(&self, k: &str) -> &str {
        self.p.get(k).map(String::as_str).unwrap_or("")
    }
    fn q(&self, k: &str) -> Option<&str> {
        self.q.get(k).map(String::as_str)
    }
}

async fn handle(
    world: &Arc<Mutex<World>>,
    addr: SocketAddr,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let header = |k: &str| {
        parts
            .headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let auth = header("authorization");
    let content_type = header("content-type");
    let upstream = world.lock().unwrap().objects_upstream.clone();
    if let Some(upstream) = upstream.filter(|_| is_object_path(&path)) {
        return forward(&upstream, &parts, bytes).await;
    }
    let base = format!("http://{addr}");
    let Answer(status, payload) = {
        let mut w = world.lock().unwrap();
        answer(
            &mut w,
            &base,
            &method,
            &path,
            &query,
            &auth,
            &content_type,
            &bytes,
        )
    };
    let mut r = Response::builder().status(StatusCode::from_u16(status).unwrap());
    let body = match payload {
        Payload::Json(v) => {
            r = r.header("content-type", "application/json; charset=UTF-8");
            Bytes::from(serde_json::to_vec(&v).unwrap())
        }
        Payload::Bytes(b, ct) => {
            r = r.header("content-type", ct);
            Bytes::from(b)
        }
        Payload::Empty => Bytes::new(),
        Payload::Forward(upstream) => return forward(&upstream, &parts, bytes).await,
    };
    r.body(Full::new(body)).unwrap()
}

/// Objects (their listing, uploads, downloads) rather than buckets and their policies.
fn is_object_path(path: &str) -> bool {
    path.starts_with("/upload/storage/v1/")
        || path.starts_with("/download/storage/v1/")
        || path
            .strip_prefix("/storage/v1/b/")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(_, rest)| rest == "o" || rest.starts_with("o/"))
}

/// Hands a request to an emulator as it came, and its answer back as it went.
async fn forward(
    upstream: &str,
    parts: &hyper::http::request::Parts,
    bytes: Bytes,
) -> Response<Full<Bytes>> {
    let host = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut out = Request::builder()
        .method(parts.method.clone())
        .uri(
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/"),
        )
        .header("host", &host);
    for (k, v) in &parts.headers {
        if k != "host" {
            out = out.header(k, v);
        }
    }
    let answer = sender
        .send_request(out.body(Full::new(bytes)).unwrap())
        .await
        .unwrap();
    let (parts, body) = answer.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let mut back = Response::builder().status(parts.status);
    for (k, v) in &parts.headers {
        if k != "transfer-encoding" && k != "content-length" {
            back = back.header(k, v);
        }
    }
    back.body(Full::new(bytes)).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn answer(
    w: &mut World,
    base: &str,
    method: &str,
    path: &str,
    query: &[(String, String)],
    auth: &str,
    content_type: &str,
    bytes: &[u8],
) -> Answer {
    if path == "/token" {
        w.token_requests += 1;
        return token(w, base, method, bytes);
    }
    let what = format!("{method} {path}");
    w.requests.push(what.clone());
    let token = auth.strip_prefix("Bearer ").unwrap_or("");
    if !(w.tokens.contains(token) || w.accept_token.as_deref() == Some(token) && !token.is_empty())
    {
        w.violations.push(format!("{what}: no valid bearer token"));
        return error(
            401,
            "authError",
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
        );
    }
    if w.throttle_next > 0 {
        w.throttle_next -= 1;
        return ok(
            429,
            json!({"error": {"code": 429, "message": "Rate Limit Exceeded",
                "errors": [{"message": "Rate Limit Exceeded", "domain": "usageLimits", "reason": "rateLimitExceeded"}],
                "status": "RESOURCE_EXHAUSTED"}}),
        );
    }
    let (m, p) = match route(method, path) {
        Ok(found) => found,
        Err(other_verb) => {
            let why = if other_verb {
                "not a method of this path"
            } else {
                "no method of the discovery documents has this path"
            };
            return violation(w, 404, "notFound", format!("{what}: {why}"));
        }
    };
    if let Err(why) = check_query(m, &p, query) {
        return violation(
            w,
            400,
            "invalidParameter",
            format!("{what} ({}): {why}", m.id),
        );
    }
    let body = if m.upload || bytes.is_empty() {
        Value::Null
    } else if !content_type.starts_with("application/json") {
        return violation(
            w,
            400,
            "parseError",
            format!(
                "{what}: a JSON body needs Content-Type application/json, got '{content_type}'"
            ),
        );
    } else {
        match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                return violation(
                    w,
                    400,
                    "parseError",
                    format!("{what}: the body is not JSON: {e}"),
                )
            }
        }
    };
    if !m.upload {
        if let Err(why) = check_body(m, &body) {
            return violation(w, 400, "invalid", format!("{what} ({}): {why}", m.id));
        }
    }
    let r = Req {
        base,
        what,
        p,
        q: query.iter().cloned().collect(),
        body,
        raw: bytes,
        content_type,
    };
    if let Some(upstream) = w.policies_upstream.clone() {
        if matches!(
            m.id.as_str(),
            "storage.buckets.getIamPolicy" | "storage.buckets.setIamPolicy"
        ) {
            return Answer(200, Payload::Forward(upstream));
        }
    }
    match m.id.split('.').next() {
        Some("storage") => storage(w, m, &r),
        Some("iam") => iam(w, m, &r),
        Some("compute") => compute(w, m, &r),
        _ => unmodelled(w, m, &r),
    }
}

/// A method of the contract this server does not model: anycloud is not expected to call it.
fn unmodelled(w: &mut World, m: &Method, r: &Req) -> Answer {
    violation(
        w,
        501,
        "notImplemented",
        format!(
            "{}: {} is in the contract but not modelled by the contract server",
            r.what, m.id
        ),
    )
}

// The token endpoint.

fn token(w: &mut World, base: &str, method: &str, bytes: &[u8]) -> Answer {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(bytes).into_owned().collect();
    let bad = |w: &mut World, error: &str, why: String| {
        w.violations.push(format!("{method} /token: {why}"));
        ok(400, json!({"error": error, "error_description": why}))
    };
    if method != "POST" {
        return bad(w, "invalid_request", "the token endpoint takes POST".into());
    }
    match form.get("grant_type").map(String::as_str) {
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
            let assertion = form.get("assertion").map(String::as_str).unwrap_or("");
            if let Err(why) = jwt(assertion, &format!("{base}/token"), &w.service_account_keys) {
                return bad(w, "invalid_grant", why);
            }
        }
        Some("refresh_token") => {
            for k in ["client_id", "client_secret", "refresh_token"] {
                if !form.contains_key(k) {
                    return bad(w, "invalid_request", format!("{k} is required"));
                }
            }
            if form["client_id"] != CLIENT_ID || form["client_secret"] != CLIENT_SECRET {
                return ok(
                    401,
                    json!({"error": "invalid_client", "error_description": "The OAuth client was not found."}),
                );
            }
            if form["refresh_token"] != REFRESH_TOKEN {
                return ok(
                    400,
                    json!({"error": "invalid_grant", "error_description": "Bad Request"}),
                );
            }
        }
        other => return bad(w, "unsupported_grant_type", format!("grant_type {other:?}")),
    }
    let n = w.next();
    let token = format!("ya29.contract-{n}");
    w.tokens.insert(token.clone());
    ok(
        200,
        json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}),
    )
}

/// A service account's assertion: three base64url parts, an RS256 header, the claims Google
/// requires (iss, scope, aud = the token endpoint, iat, exp at most an hour later). The
/// signature is not verified.
fn jwt(assertion: &str, audience: &str, keys: &BTreeMap<String, Vec<u8>>) -> Result<(), String> {
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err("the assertion is not a JWT (three dot-separated parts)".into());
    }
    let decode = |p: &str| -> Result<Value, String> {
        let raw = b64url_decode(p).ok_or("a JWT part is not base64url")?;
        serde_json::from_slice(&raw).map_err(|e| format!("a JWT part is not JSON: {e}"))
    };
    let header = decode(parts[0])?;
    let claims = decode(parts[1])?;
    b64url_decode(parts[2]).ok_or("the signature is not base64url")?;
    if header["alg"] != json!("RS256") {
        return Err(format!("alg {} (Google wants RS256)", header["alg"]));
    }
    for k in ["iss", "scope", "aud"] {
        if !claims[k].is_string() {
            return Err(format!("claim {k} is missing"));
        }
    }
    if claims["aud"] != json!(audience) {
        return Err(format!("aud {} is not {audience}", claims["aud"]));
    }
    // A key the test registered for this account: the signature must be its.
    if let Some(key) = claims["iss"].as_str().and_then(|iss| keys.get(iss)) {
        let signature = b64url_decode(parts[2]).ok_or("the signature is not base64url")?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .map_err(|_| format!("the signature is not {}'s", claims["iss"]))?;
    }
    match (claims["iat"].as_i64(), claims["exp"].as_i64()) {
        (Some(iat), Some(exp)) if exp > iat && exp - iat <= 3600 => Ok(()),
        _ => Err("iat and exp must be numbers, exp after iat by at most an hour".into()),
    }
}

/// An assertion as a service account's key would make it, unsigned (the server does not
/// check signatures): for tests of the JWT-bearer grant.
pub fn unsigned_assertion(iss: &str, scope: &str, aud: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"alg": "RS256", "typ": "JWT"});
    let claims = json!({"iss": iss, "scope": scope, "aud": aud, "iat": now, "exp": now + 3600});
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes(), URL),
        b64(claims.to_string().as_bytes(), URL),
        b64(b"not-a-signature", URL)
    )
}

// Cloud Storage.

fn storage(w: &mut World, m: &Method, r: &Req) -> Answer {
    let name = r.p("bucket").to_owned();
    // Buckets of another project: reads and writes are denied, as to a stranger.
    if !name.is_empty() && w.buckets_taken_elsewhere.contains(&name) {
        let perm = match m.id.as_str() {
            "storage.buckets.getIamPolicy" => "storage.buckets.getIamPolicy",
            "storage.buckets.setIamPolicy" => "storage.buckets.setIamPolicy",
            "storage.buckets.delete" => "storage.buckets.delete",
            "storage.buckets.patch" => "storage.buckets.update",
            "storage.buckets.get" => "storage.buckets.get",
            "storage.objects.insert" => "storage.objects.create",
            "storage.objects.delete" => "storage.objects.delete",
            "storage.objects.list" => "storage.objects.list",
            _ => "storage.objects.get",
        };
        return error(
            403,
            "forbidden",
            &format!("contract-caller@{PROJECT}.iam.gserviceaccount.com does not have {perm} access to the Google Cloud Storage bucket. Permission '{perm}' denied on resource (or it may not exist)."),
        );
    }
    match m.id.as_str() {
        "storage.buckets.insert" => bucket_insert(w, r),
        "storage.buckets.list" => {
            let project = r.q("project").unwrap_or("");
            let prefix = r.q("prefix").unwrap_or("");
            let all: Vec<Value> = w
                .buckets
                .iter()
                .filter(|(n, b)| b.project == project && n.starts_with(prefix))
                .map(|(_, b)| b.meta.clone())
                .collect();
            list(
                w,
                r,
                "maxResults",
                all,
                json!({"kind": "storage#buckets"}),
                "items",
            )
        }
        "storage.buckets.get" => match w.buckets.get(&name) {
            Some(b) => ok(200, b.meta.clone()),
            None => no_bucket(&name),
        },
        "storage.buckets.patch" => {
            let Some(b) = w.buckets.get(&name) else {
                return no_bucket(&name);
            };
            if let Err(a) = metageneration_match(b, r) {
                return a;
            }
            if let Err(why) = labels_ok(r.body.get("labels"), true) {
                return violation(w, 400, "invalid", format!("{}: {why}", r.what));
            }
            let etag = w.etag();
            let b = w.buckets.get_mut(&name).unwrap();
            let mut meta = b.meta.clone();
            merge_patch(&mut meta, &r.body);
            let mg = meta["metageneration"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(1)
                + 1;
            meta["metageneration"] = json!(mg.to_string());
            meta["etag"] = json!(etag);
            meta["updated"] = json!(now());
            // Kept in sync by GCS: the older name of uniform bucket-level access.
            let ubla = meta["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"].clone();
            meta["iamConfiguration"]["bucketPolicyOnly"]["enabled"] = ubla;
            for (k, v) in [
                ("name", name.clone()),
                (
                    "location",
                    b.meta["location"].as_str().unwrap_or("").to_owned(),
                ),
            ] {
                meta[k] = json!(v);
            }
            b.meta = meta.clone();
            ok(200, meta)
        }
        "storage.buckets.delete" => {
            let Some(b) = w.buckets.get(&name) else {
                return no_bucket(&name);
            };
            if let Err(a) = metageneration_match(b, r) {
                return a;
            }
            if !b.objects.is_empty() {
                return error(
                    409,
                    "conflict",
                    "The bucket you tried to delete is not empty.",
                );
            }
            w.buckets.remove(&name);
            if let Some(mirror) = w.on_bucket.clone() {
                mirror(&name, false);
            }
            no_content()
        }
        "storage.buckets.getIamPolicy" => {
            let Some(b) = w.buckets.get(&name) else {
                return no_bucket(&name);
            };
            let requested = r
                .q("optionsRequestedPolicyVersion")
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(1);
            let conditional = b.policy["bindings"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|b| b.get("condition").is_some());
            if conditional && requested < 3 {
                return violation(
                    w,
                    400,
                    "invalid",
                    format!(
                        "{}: the policy has conditional bindings; request policy version 3",
                        r.what
                    ),
                );
            }
            ok(200, b.policy.clone())
        }
        "storage.buckets.setIamPolicy" => set_policy(w, r, &name),
        "storage.objects.list" => {
            let Some(b) = w.buckets.get(&name) else {
                return no_bucket(&name);
            };
            let prefix = r.q("prefix").unwrap_or("");
            let delimiter = r.q("delimiter").filter(|d| !d.is_empty());
            // Objects and, with a delimiter, the "directories" under the prefix, in order.
            let mut entries: BTreeMap<String, Option<Value>> = BTreeMap::new();
            for (n, o) in b.objects.iter().filter(|(n, _)| n.starts_with(prefix)) {
                match delimiter.and_then(|d| n[prefix.len()..].find(d).map(|at| at + d.len())) {
                    Some(end) => entries.insert(n[..prefix.len() + end].to_owned(), None),
                    None => entries.insert(n.clone(), Some(o.meta.clone())),
                };
            }
            let all: Vec<Value> = entries
                .into_iter()
                .map(|(n, o)| o.unwrap_or_else(|| json!({"__prefix": n})))
                .collect();
            let mut a = list(
                w,
                r,
                "maxResults",
                all,
                json!({"kind": "storage#objects"}),
                "items",
            );
            if let Answer(200, Payload::Json(body)) = &mut a {
                let items: Vec<Value> = body["items"].as_array().cloned().unwrap_or_default();
                let (prefixes, objects): (Vec<Value>, Vec<Value>) =
                    items.into_iter().partition(|i| i.get("__prefix").is_some());
                let o = body.as_object_mut().unwrap();
                o.remove("items");
                if !objects.is_empty() {
                    o.insert("items".into(), json!(objects));
                }
                if !prefixes.is_empty() {
                    o.insert(
                        "prefixes".into(),
                        prefixes.iter().map(|p| p["__prefix"].clone()).collect(),
                    );
                }
            }
            a
        }
        "storage.objects.get" => {
            let object = r.p("object");
            match w.buckets.get(&name).map(|b| b.objects.get(object)) {
                None => no_bucket(&name),
                Some(None) => error(404, "notFound", &format!("No such object: {name}/{object}")),
                Some(Some(o)) if r.q("alt") == Some("media") => Answer(
                    200,
                    Payload::Bytes(
                        o.bytes.clone(),
                        o.meta["contentType"]
                            .as_str()
                            .unwrap_or("application/octet-stream")
                            .to_owned(),
                    ),
                ),
                Some(Some(o)) => ok(200, o.meta.clone()),
            }
        }
        "storage.objects.delete" => {
            let object = r.p("object");
            match w.buckets.get_mut(&name).map(|b| b.objects.remove(object)) {
                None => no_bucket(&name),
                Some(None) => error(404, "notFound", &format!("No such object: {name}/{object}")),
                Some(Some(_)) => no_content(),
            }
        }
        "storage.objects.insert" if m.upload => upload(w, r, &name),
        _ => unmodelled(w, m, r),
    }
}

fn no_bucket(name: &str) -> Answer {
    error(
        404,
        "notFound",
        &format!("The specified bucket does not exist: {name}"),
    )
}

fn metageneration_match(b: &Bucket, r: &Req) -> Result<(), Answer> {
    match r.q("ifMetagenerationMatch") {
        Some(m) if b.meta["metageneration"] != json!(m) => Err(error(
            412,
            "conditionNotMet",
            "At least one of the pre-conditions you specified did not hold.",
        )),
        _ => Ok(()),
    }
}

fn bucket_insert(w: &mut World, r: &Req) -> Answer {
    let project = r.q("project").unwrap_or("").to_owned();
    let name = r.body["name"].as_str().unwrap_or("").to_owned();
    let valid = (3..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(&c))
        && !name.starts_with("goog");
    if !valid {
        return violation(
            w,
            400,
            "invalid",
            format!("{}: Invalid bucket name: '{name}'", r.what),
        );
    }
    if let Err(why) = labels_ok(r.body.get("labels"), false) {
        return violation(w, 400, "invalid", format!("{}: {why}", r.what));
    }
    if let Some(b) = w.buckets.get(&name) {
        let message = if b.project == project {
            "Your previous request to create the named bucket succeeded and you already own it."
        } else {
            "The requested bucket name is not available. The bucket namespace is shared by all users of the system. Please select a different name and try again."
        };
        return error(409, "conflict", message);
    }
    if w.buckets_taken_elsewhere.contains(&name) {
        return error(409, "conflict", "The requested bucket name is not available. The bucket namespace is shared by all users of the system. Please select a different name and try again.");
    }
    let location = r.body["location"]
        .as_str()
        .unwrap_or("US")
        .to_ascii_uppercase();
    let ubla = r.body["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"]
        .as_bool()
        .or(r.body["iamConfiguration"]["bucketPolicyOnly"]["enabled"].as_bool())
        .unwrap_or(false);
    let n = w.next();
    let etag = w.etag();
    let policy_etag = w.etag();
    let time = now();
    let meta = json!({
        "kind": "storage#bucket",
        "selfLink": format!("{}/storage/v1/b/{name}", r.base),
        "id": name, "name": name,
        "projectNumber": project_number(&project),
        "generation": (1_700_000_000_000_000u64 + n).to_string(),
        "metageneration": "1",
        "location": location,
        "locationType": if location.contains('-') { "region" } else { "multi-region" },
        "storageClass": r.body["storageClass"].as_str().unwrap_or("STANDARD"),
        "etag": etag,
        "timeCreated": time, "updated": time,
        "labels": r.body.get("labels").cloned().unwrap_or(json!({})),
        "iamConfiguration": {
            "bucketPolicyOnly": {"enabled": ubla},
            "uniformBucketLevelAccess": {"enabled": ubla},
            "publicAccessPrevention": r.body["iamConfiguration"]["publicAccessPrevention"].as_str().unwrap_or("inherited"),
        },
        "softDeletePolicy": r.body.get("softDeletePolicy").cloned().unwrap_or(json!({"retentionDurationSeconds": "604800"})),
        "rpo": "DEFAULT",
    });
    let policy = json!({
        "kind": "storage#policy",
        "resourceId": format!("projects/_/buckets/{name}"),
        "version": 1,
        "etag": policy_etag,
        "bindings": [
            {"role": "roles/storage.legacyBucketOwner", "members": [format!("projectEditor:{project}"), format!("projectOwner:{project}")]},
            {"role": "roles/storage.legacyBucketReader", "members": [format!("projectViewer:{project}")]},
        ],
    });
    w.buckets.insert(
        name.clone(),
        Bucket {
            project,
            meta: meta.clone(),
            policy,
            objects: BTreeMap::new(),
        },
    );
    if let Some(mirror) = w.on_bucket.clone() {
        mirror(&name, true);
    }
    ok(200, meta)
}

fn set_policy(w: &mut World, r: &Req, name: &str) -> Answer {
    let Some(current) = w.buckets.get(name).map(|b| b.policy.clone()) else {
        return no_bucket(name);
    };
    let stale = || {
        error(
            412,
            "conditionNotMet",
            "At least one of the pre-conditions you specified did not hold.",
        )
    };
    let Some(etag) = r.body["etag"].as_str() else {
        // GCS would overwrite blindly; a read-modify-write without the etag loses writes.
        w.violations
            .push(format!("{}: setIamPolicy without the etag it read", r.what));
        return stale();
    };
    // IAM's limit: at most 100 conditional role bindings in one allow policy.
    let conditional = r.body["bindings"].as_array().map_or(0, |b| {
        b.iter().filter(|b| b.get("condition").is_some()).count()
    });
    if conditional > 100 {
        return error(
            400,
            "invalid",
            &format!(
                "The policy has {conditional} conditional role bindings; at most 100 are allowed."
            ),
        );
    }
    if w.stale_etag_next > 0 {
        // Someone else wrote between our read and this write.
        w.stale_etag_next -= 1;
        let e = w.etag();
        w.buckets.get_mut(name).unwrap().policy["etag"] = json!(e);
        return stale();
    }
    if current["etag"] != json!(etag) {
        return stale();
    }
    let version = r.body["version"].as_i64().unwrap_or(1);
    let mut bindings = Vec::new();
    let mut unknown = None;
    let mut named_fresh = BTreeSet::new();
    for b in r.body["bindings"].as_array().into_iter().flatten() {
        let role = b["role"].as_str().unwrap_or("");
        if !(role.starts_with("roles/")
            || role.starts_with("projects/")
            || role.starts_with("organizations/"))
        {
            return violation(
                w,
                400,
                "invalid",
                format!("{}: role '{role}' is not a role name", r.what),
            );
        }
        if let Some(c) = b.get("condition") {
            if version != 3 {
                return violation(
                    w,
                    400,
                    "invalid",
                    format!(
                        "{}: a conditional binding needs policy version 3, got {version}",
                        r.what
                    ),
                );
            }
            if c["title"].as_str().is_none_or(str::is_empty)
                || c["expression"].as_str().is_none_or(str::is_empty)
            {
                return violation(
                    w,
                    400,
                    "invalid",
                    format!("{}: a condition needs a title and an expression", r.what),
                );
            }
        }
        for member in b["members"].as_array().into_iter().flatten() {
            let member = member.as_str().unwrap_or("");
            if !member_ok(member) {
                return violation(
                    w,
                    400,
                    "invalid",
                    format!("{}: '{member}' is not a member identifier", r.what),
                );
            }
            if let Some(email) = member.strip_prefix("serviceAccount:") {
                // Our accounts live in this world; other domains (the Compute default
                // account, Google's service agents) are taken as existing.
                let ours = email.ends_with(".iam.gserviceaccount.com");
                let fresh = w.fresh_accounts.get(email).copied().unwrap_or(0) > 0;
                if fresh {
                    named_fresh.insert(email.to_owned());
                }
                if ours && (!w.accounts.contains_key(email) || fresh) && unknown.is_none() {
                    unknown = Some(email.to_owned());
                }
            }
        }
        // Bindings without members are dropped, as Google does.
        if b["members"].as_array().is_some_and(|m| !m.is_empty()) {
            bindings.push(b.clone());
        }
    }
    if let Some(email) = unknown {
        // Propagation: each fresh account named counts this call.
        for email in named_fresh {
            if let Some(left) = w.fresh_accounts.get_mut(&email) {
                *left = left.saturating_sub(1);
            }
        }
        return error(
            400,
            "invalid",
            &format!("Service account {email} does not exist."),
        );
    }
    let etag = w.etag();
    let b = w.buckets.get_mut(name).unwrap();
    b.policy = json!({
        "kind": "storage#policy",
        "resourceId": format!("projects/_/buckets/{name}"),
        "version": version,
        "etag": etag,
        "bindings": bindings,
    });
    ok(200, b.policy.clone())
}

fn member_ok(m: &str) -> bool {
    if m == "allUsers" || m == "allAuthenticatedUsers" {
        return true;
    }
    let email = |e: &str| {
        e.split_once('@')
            .is_some_and(|(a, d)| !a.is_empty() && d.contains('.'))
    };
    match m.split_once(':') {
        Some(("user" | "serviceAccount" | "group", e)) => email(e),
        Some(("domain", d)) => d.contains('.'),
        Some(("projectOwner" | "projectEditor" | "projectViewer", p)) => !p.is_empty(),
        Some(("principal" | "principalSet", p)) => p.starts_with("//"),
        _ => false,
    }
}

fn upload(w: &mut World, r: &Req, bucket: &str) -> Answer {
    let name = r.q("name").unwrap_or("").to_owned();
    if name.is_empty() || name.len() > 1024 || name.contains('\n') || name.contains('\r') {
        return violation(
            w,
            400,
            "invalid",
            format!("{}: object name '{name}' is not valid", r.what),
        );
    }
    let n = w.next();
    let Some(b) = w.buckets.get_mut(bucket) else {
        return no_bucket(bucket);
    };
    let current = b
        .objects
        .get(&name)
        .and_then(|o| o.meta["generation"].as_str().map(str::to_owned));
    if let Some(want) = r.q("ifGenerationMatch") {
        let holds = match &current {
            None => want == "0",
            Some(g) => g == want,
        };
        if !holds {
            return error(
                412,
                "conditionNotMet",
                "At least one of the pre-conditions you specified did not hold.",
            );
        }
    }
    let generation = (1_700_000_000_000_000u64 + n).to_string();
    let time = now();
    let content_type = if r.content_type.is_empty() {
        "application/octet-stream"
    } else {
        r.content_type
    };
    let meta = json!({
        "kind": "storage#object",
        "id": format!("{bucket}/{name}/{generation}"),
        "selfLink": format!("{}/storage/v1/b/{bucket}/o/{}", r.base, encode_segment(&name)),
        "mediaLink": format!("{}/download/storage/v1/b/{bucket}/o/{}?generation={generation}&alt=media", r.base, encode_segment(&name)),
        "name": name, "bucket": bucket,
        "generation": generation, "metageneration": "1",
        "contentType": content_type,
        "storageClass": "STANDARD",
        "size": r.raw.len().to_string(),
        "timeCreated": time, "updated": time,
        "etag": b64(generation.as_bytes(), STD),
    });
    b.objects.insert(
        name,
        Object {
            meta: meta.clone(),
            bytes: r.raw.to_vec(),
        },
    );
    ok(200, meta)
}

/// Labels (buckets and instances share Google's label rules): at most 64, keys start with a
/// lower-case letter, keys and values of at most 63 lower-case letters, digits, `_` and `-`.
fn labels_ok(labels: Option<&Value>, patch: bool) -> Result<(), String> {
    let Some(labels) = labels.and_then(Value::as_object) else {
        return Ok(());
    };
    let chars = |s: &str| {
        s.len() <= 63
            && s.chars()
                .all(|c| c.is_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    };
    if labels.len() > 64 {
        return Err("more than 64 labels".into());
    }
    for (k, v) in labels {
        if !k.starts_with(|c: char| c.is_lowercase()) || !chars(k) {
            return Err(format!("label key '{k}' breaks the label rules"));
        }
        match v {
            Value::Null if patch => {}
            Value::String(s) if chars(s) => {}
            _ => return Err(format!("label value {v} of '{k}' breaks the label rules")),
        }
    }
    Ok(())
}

/// JSON merge patch (RFC 7396), which is how GCS's PATCH treats nested objects and nulls.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

// IAM.

fn iam(w: &mut World, m: &Method, r: &Req) -> Answer {
    let project = r.p("projectsId").to_owned();
    match m.id.as_str() {
        "iam.projects.serviceAccounts.create" => {
            let id = r.body["accountId"].as_str().unwrap_or("");
            if !((6..=30).contains(&id.len()) && rfc1035(id)) {
                return violation(
                    w,
                    400,
                    "INVALID_ARGUMENT",
                    format!("{}: accountId '{id}' must be 6-30 characters matching [a-z]([-a-z0-9]*[a-z0-9])", r.what),
                );
            }
            let sa = &r.body["serviceAccount"];
            let display = sa["displayName"].as_str().unwrap_or("");
            let description = sa["description"].as_str().unwrap_or("");
            if display.chars().count() > 100 || description.chars().count() > 256 {
                return violation(
                    w,
                    400,
                    "INVALID_ARGUMENT",
                    format!(
                        "{}: displayName is at most 100 characters, description 256",
                        r.what
                    ),
                );
            }
            let email = format!("{id}@{project}.iam.gserviceaccount.com");
            if w.accounts.contains_key(&email) {
                return error(
                    409,
                    "ALREADY_EXISTS",
                    &format!(
                        "Service account {id} already exists within project projects/{project}."
                    ),
                );
            }
            let n = w.next();
            let unique = format!("1{:020}", 10_000_000_000_000_000 + n);
            let mut account = json!({
                "name": format!("projects/{project}/serviceAccounts/{email}"),
                "projectId": project, "uniqueId": unique, "email": email,
                "etag": b64(b"\x00\x00\x00\x00\x00\x00\x00\x00", STD),
                "oauth2ClientId": unique,
            });
            // Proto JSON leaves empty strings out.
            for (k, v) in [("displayName", display), ("description", description)] {
                if !v.is_empty() {
                    account[k] = json!(v);
                }
            }
            w.accounts.insert(email.clone(), account.clone());
            if w.unknown_member_polls > 0 {
                w.fresh_accounts.insert(email, w.unknown_member_polls);
            }
            ok(200, account)
        }
        "iam.projects.serviceAccounts.get" => {
            match find_account(w, &project, r.p("serviceAccountsId")) {
                Some(email) => ok(200, w.accounts[&email].clone()),
                None => no_account(&project),
            }
        }
        "iam.projects.serviceAccounts.delete" => {
            match find_account(w, &project, r.p("serviceAccountsId")) {
                Some(email) => {
                    w.accounts.remove(&email);
                    w.fresh_accounts.remove(&email);
                    ok(200, json!({}))
                }
                None => no_account(&project),
            }
        }
        "iam.projects.serviceAccounts.list" => {
            let all: Vec<Value> = w
                .accounts
                .values()
                .filter(|a| a["projectId"] == json!(project))
                .cloned()
                .collect();
            list(w, r, "pageSize", all, json!({}), "accounts")
        }
        _ => unmodelled(w, m, r),
    }
}

/// An account by email or unique id, in `project` (`-` is any project).
fn find_account(w: &World, project: &str, key: &str) -> Option<String> {
    w.accounts
        .iter()
        .find(|(email, a)| {
            (*email == key || a["uniqueId"] == json!(key))
                && (project == "-" || a["projectId"] == json!(project))
        })
        .map(|(email, _)| email.clone())
}

fn no_account(project: &str) -> Answer {
    // The document warns: with the `-` wildcard a missing account is 403, not 404.
    if project == "-" {
        return error(
            403,
            "PERMISSION_DENIED",
            "Permission 'iam.serviceAccounts.get' denied on resource (or it may not exist).",
        );
    }
    error(404, "NOT_FOUND", "Unknown service account")
}

// Compute Engine.

fn compute(w: &mut World, m: &Method, r: &Req) -> Answer {
    let project = r.p("project").to_owned();
    let zone = r.p("zone").to_owned();
    let api = format!("{}/compute/v1", r.base);
    match m.id.as_str() {
        "compute.instances.insert" => {
            if let Some(a) = repeated_request(w, r) {
                return a;
            }
            if let Err(why) = instance_body(&r.body, &zone) {
                return violation(w, 400, "invalid", format!("{}: {why}", r.what));
            }
            let name = r.body["name"].as_str().unwrap_or("").to_owned();
            let key = (project.clone(), zone.clone(), name.clone());
            if w.full_zones.contains(&zone) || w.full_zones.contains("*") {
                let link = format!("{api}/projects/{project}/zones/{zone}/instances/{name}");
                return operation(
                    w,
                    r,
                    &api,
                    "insert",
                    &link,
                    json!("0"),
                    Some(zone.as_str()),
                    Effect::NoCapacity(project, zone.clone()),
                );
            }
            if w.instances.contains_key(&key) {
                return error(409, "alreadyExists", &format!("The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists"));
            }
            let vm = instance(w, &api, &key, &r.body);
            let link = vm["selfLink"].as_str().unwrap_or("").to_owned();
            let id = vm["id"].clone();
            w.instances.insert(key.clone(), vm);
            operation(
                w,
                r,
                &api,
                "insert",
                &link,
                id,
                Some(zone.as_str()),
                Effect::Start(project, zone.clone(), name),
            )
        }
        "compute.instances.get" => match find_instance(w, &project, &zone, r.p("instance")) {
            Some(k) => ok(200, w.instances[&k].clone()),
            None => not_found(&format!(
                "projects/{project}/zones/{zone}/instances/{}",
                r.p("instance")
            )),
        },
        "compute.instances.list" => {
            let filter = match Filter::parse(r.q("filter").unwrap_or("")) {
                Ok(f) => f,
                Err(why) => return violation(w, 400, "invalid", format!("{}: {why}", r.what)),
            };
            let all: Vec<Value> = w
                .instances
                .iter()
                .filter(|((p, z, _), vm)| *p == project && *z == zone && filter.matches(vm))
                .map(|(_, vm)| vm.clone())
                .collect();
            let envelope = json!({"kind": "compute#instanceList", "id": format!("projects/{project}/zones/{zone}/instances"),
                "selfLink": format!("{api}/projects/{project}/zones/{zone}/instances")});
            list(w, r, "maxResults", all, envelope, "items")
        }
        "compute.instances.delete" => {
            if let Some(a) = repeated_request(w, r) {
                return a;
            }
            let Some(key) = find_instance(w, &project, &zone, r.p("instance")) else {
                return not_found(&format!(
                    "projects/{project}/zones/{zone}/instances/{}",
                    r.p("instance")
                ));
            };
            let vm = w.instances.get_mut(&key).unwrap();
            vm["status"] = json!("STOPPING");
            let (link, id) = (
                vm["selfLink"].as_str().unwrap_or("").to_owned(),
                vm["id"].clone(),
            );
            let (p, z, n) = key;
            operation(
                w,
                r,
                &api,
                "delete",
                &link,
                id,
                Some(zone.as_str()),
                Effect::RemoveInstance(p, z, n),
            )
        }
        "compute.firewalls.insert" => {
            if let Some(a) = repeated_request(w, r) {
                return a;
            }
            if let Err(why) = firewall_body(&r.body) {
                return violation(w, 400, "invalid", format!("{}: {why}", r.what));
            }
            let name = r.body["name"].as_str().unwrap_or("").to_owned();
            let key = (project.clone(), name.clone());
            if w.firewalls.contains_key(&key) {
                return error(
                    409,
                    "alreadyExists",
                    &format!(
                        "The resource 'projects/{project}/global/firewalls/{name}' already exists"
                    ),
                );
            }
            let n = w.next();
            let mut fw = r.body.clone();
            let link = format!("{api}/projects/{project}/global/firewalls/{name}");
            let network = fw["network"]
                .as_str()
                .unwrap_or("global/networks/default")
                .to_owned();
            for (k, v) in [
                ("kind", json!("compute#firewall")),
                ("id", json!((5_000_000_000_000_000_000u64 + n).to_string())),
                ("creationTimestamp", json!(now())),
                ("selfLink", json!(link)),
                ("network", json!(full_url(&api, &project, &network))),
                (
                    "direction",
                    fw.get("direction").cloned().unwrap_or(json!("INGRESS")),
                ),
                (
                    "priority",
                    fw.get("priority").cloned().unwrap_or(json!(1000)),
                ),
                (
                    "disabled",
                    fw.get("disabled").cloned().unwrap_or(json!(false)),
                ),
            ] {
                fw[k] = v;
            }
            let id = fw["id"].clone();
            w.firewalls.insert(key, fw);
            operation(w, r, &api, "insert", &link, id, None, Effect::None)
        }
        "compute.firewalls.get" => match w
            .firewalls
            .get(&(project.clone(), r.p("firewall").to_owned()))
        {
            Some(f) => ok(200, f.clone()),
            None => not_found(&format!(
                "projects/{project}/global/firewalls/{}",
                r.p("firewall")
            )),
        },
        "compute.firewalls.list" => {
            let filter = match Filter::parse(r.q("filter").unwrap_or("")) {
                Ok(f) => f,
                Err(why) => return violation(w, 400, "invalid", format!("{}: {why}", r.what)),
            };
            let all: Vec<Value> = w
                .firewalls
                .iter()
                .filter(|((p, _), f)| *p == project && filter.matches(f))
                .map(|(_, f)| f.clone())
                .collect();
            let envelope = json!({"kind": "compute#firewallList", "id": format!("projects/{project}/global/firewalls"),
                "selfLink": format!("{api}/projects/{project}/global/firewalls")});
            list(w, r, "maxResults", all, envelope, "items")
        }
        "compute.firewalls.delete" => {
            if let Some(a) = repeated_request(w, r) {
                return a;
            }
            let key = (project.clone(), r.p("firewall").to_owned());
            let Some(fw) = w.firewalls.get(&key) else {
                return not_found(&format!(
                    "projects/{project}/global/firewalls/{}",
                    r.p("firewall")
                ));
            };
            let (link, id) = (
                fw["selfLink"].as_str().unwrap_or("").to_owned(),
                fw["id"].clone(),
            );
            operation(
                w,
                r,
                &api,
                "delete",
                &link,
                id,
                None,
                Effect::RemoveFirewall(key.0, key.1),
            )
        }
        "compute.regions.get" => {
            let region = r.p("region").to_owned();
            match zones_of(&region) {
                Some(_) => ok(200, region_of(w, &api, &project, &region)),
                None => not_found(&format!("projects/{project}/regions/{region}")),
            }
        }
        "compute.machineTypes.get" => {
            let name = r.p("machineType");
            match machine_type(&api, &project, &zone, name) {
                Some(t) => ok(200, t),
                None => not_found(&format!(
                    "projects/{project}/zones/{zone}/machineTypes/{name}"
                )),
            }
        }
        "compute.zoneOperations.get"
        | "compute.zoneOperations.wait"
        | "compute.globalOperations.get"
        | "compute.globalOperations.wait" => {
            let name = r.p("operation");
            let scope = if zone.is_empty() {
                "global".to_owned()
            } else {
                format!("zones/{zone}")
            };
            let found = w.operations.get(name).is_some_and(|o| {
                let link = o.op["selfLink"].as_str().unwrap_or("");
                link.ends_with(&format!("/projects/{project}/{scope}/operations/{name}"))
            });
            if !found {
                return not_found(&format!("projects/{project}/{scope}/operations/{name}"));
            }
            ok(200, poll(w, name))
        }
        _ => unmodelled(w, m, r),
    }
}

/// A region's limits where a test set none.
pub const DEFAULT_QUOTA: f64 = 100.0;

/// The quota metrics a region reports here: the regional CPUs (N1, E2 and types without a
/// family quota), the N2 and A2 families', Spot's, and the GPUs of the types below.
const METRICS: [&str; 8] = [
    "CPUS",
    "N2_CPUS",
    "A2_CPUS",
    "PREEMPTIBLE_CPUS",
    "NVIDIA_L4_GPUS",
    "PREEMPTIBLE_NVIDIA_L4_GPUS",
    "NVIDIA_A100_GPUS",
    "PREEMPTIBLE_NVIDIA_A100_GPUS",
];

/// `Region` with its `quotas`: each metric's usage counted from the project's instances in
/// the region's zones (Spot ones under the `PREEMPTIBLE_` metrics), its limit the test's.
fn region_of(w: &World, api: &str, project: &str, region: &str) -> Value {
    let mut usage: BTreeMap<String, f64> = BTreeMap::new();
    for ((p, zone, _), vm) in &w.instances {
        if p != project || zone.rsplit_once('-').map(|(r, _)| r) != Some(region) {
            continue;
        }
        let machine = vm["machineType"].as_str().unwrap_or_default();
        let name = machine.rsplit('/').next().unwrap_or_default();
        let Some(t) = machine_type(api, project, zone, name) else {
            continue;
        };
        let spot = vm["scheduling"]["provisioningModel"].as_str() == Some("SPOT");
        let family = name
            .split('-')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let mut cpus_metric = format!("{family}_CPUS");
        if !METRICS.contains(&cpus_metric.as_str()) {
            cpus_metric = "CPUS".into();
        }
        if spot {
            cpus_metric = "PREEMPTIBLE_CPUS".into();
        }
        *usage.entry(cpus_metric).or_default() += t["guestCpus"].as_f64().unwrap_or(0.0);
        for a in t["accelerators"].as_array().into_iter().flatten() {
            let kind = a["guestAcceleratorType"].as_str().unwrap_or_default();
            let gpu = kind
                .trim_start_matches("nvidia-tesla-")
                .trim_start_matches("nvidia-")
                .to_ascii_uppercase()
                .replace('-', "_");
            let metric = format!(
                "{}NVIDIA_{gpu}_GPUS",
                if spot { "PREEMPTIBLE_" } else { "" }
            );
            *usage.entry(metric).or_default() += a["guestAcceleratorCount"].as_f64().unwrap_or(0.0);
        }
    }
    let quotas: Vec<Value> = METRICS
        .iter()
        .map(|m| {
            let limit = w
                .quota_limits
                .get(&(region.to_owned(), (*m).to_owned()))
                .copied()
                .unwrap_or(DEFAULT_QUOTA);
            json!({"metric": m, "limit": limit, "usage": usage.get(*m).copied().unwrap_or(0.0)})
        })
        .collect();
    // A region's zones: the order a VM's create tries them in.
    let zones: Vec<String> = zones_of(region)
        .unwrap_or_default()
        .iter()
        .map(|z| format!("{api}/projects/{project}/zones/{z}"))
        .collect();
    json!({
        "kind": "compute#region",
        "id": "1000",
        "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
        "name": region,
        "status": "UP",
        "zones": zones,
        "quotas": quotas,
        "selfLink": format!("{api}/projects/{project}/regions/{region}"),
        "supportsPzs": false,
    })
}

/// The machine types this server knows, as `MachineType` (compute v1 discovery document):
/// the accelerator-optimized ones carry `accelerators` (their GPUs come with the type), an
/// N1 type none (GPUs are attached to it explicitly). Counts and sizes as Google lists them.
fn machine_type(api: &str, project: &str, zone: &str, name: &str) -> Option<Value> {
    let (cpus, memory_mb, gpus): (u32, u32, Option<(&str, u32)>) = match name {
        "e2-small" => (2, 2048, None),
        "e2-standard-4" => (4, 16384, None),
        "n1-standard-4" => (4, 15360, None),
        "g2-standard-4" => (4, 16384, Some(("nvidia-l4", 1))),
        "g2-standard-24" => (24, 98304, Some(("nvidia-l4", 2))),
        "a2-highgpu-1g" => (12, 87040, Some(("nvidia-tesla-a100", 1))),
        _ => return None,
    };
    let mut t = json!({
        "kind": "compute#machineType",
        "id": format!("{}", 1_000_000 + cpus),
        "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
        "name": name,
        "description": format!("{cpus} vCPUs, {} GB RAM", memory_mb / 1024),
        "guestCpus": cpus,
        "memoryMb": memory_mb,
        "imageSpaceGb": 0,
        "maximumPersistentDisks": 128,
        "maximumPersistentDisksSizeGb": "263168",
        "zone": zone,
        "selfLink": format!("{api}/projects/{project}/zones/{zone}/machineTypes/{name}"),
        "isSharedCpu": name == "e2-small",
    });
    if let Some((kind, count)) = gpus {
        t["accelerators"] = json!([{"guestAcceleratorType": kind, "guestAcceleratorCount": count}]);
    }
    Some(t)
}

fn not_found(resource: &str) -> Answer {
    error(
        404,
        "notFound",
        &format!("The resource '{resource}' was not found"),
    )
}

fn find_instance(
    w: &World,
    project: &str,
    zone: &str,
    key: &str,
) -> Option<(String, String, String)> {
    w.instances
        .iter()
        .find(|((p, z, n), vm)| p == project && z == zone && (n == key || vm["id"] == json!(key)))
        .map(|(k, _)| k.clone())
}

/// A retry of a request with the same requestId: the operation it started, as it is now.
fn repeated_request(w: &mut World, r: &Req) -> Option<Answer> {
    let id = r.q("requestId")?;
    let name = w.request_ids.get(id)?.clone();
    Some(ok(200, w.operations.get(&name)?.op.clone()))
}

#[allow(clippy::too_many_arguments)]
fn operation(
    w: &mut World,
    r: &Req,
    api: &str,
    kind: &str,
    target: &str,
    target_id: Value,
    zone: Option<&str>,
    effect: Effect,
) -> Answer {
    let n = w.next();
    let name = format!("operation-{}-{n:013x}", 1_700_000_000_000u64 + n);
    let project = r.p("project");
    let scope = match zone {
        Some(z) => format!("projects/{project}/zones/{z}"),
        None => format!("projects/{project}/global"),
    };
    let time = now();
    let mut op = json!({
        "kind": "compute#operation",
        "id": (7_000_000_000_000_000_000u64 + n).to_string(),
        "name": name,
        "operationType": kind,
        "targetLink": target, "targetId": target_id,
        "status": "RUNNING",
        "user": format!("contract-caller@{PROJECT}.iam.gserviceaccount.com"),
        "progress": 0,
        "insertTime": time, "startTime": time,
        "selfLink": format!("{api}/{scope}/operations/{name}"),
    });
    if let Some(z) = zone {
        op["zone"] = json!(format!("{api}/projects/{project}/zones/{z}"));
    }
    w.operations.insert(
        name.clone(),
        Operation {
            op: op.clone(),
            polls_left: w.slow_polls,
            effect,
        },
    );
    if let Some(id) = r.q("requestId") {
        w.request_ids.insert(id.to_owned(), name);
    }
    ok(200, op)
}

/// One poll: RUNNING while polls are left, then DONE and the change is made.
fn poll(w: &mut World, name: &str) -> Value {
    let o = w.operations.get_mut(name).unwrap();
    if o.op["status"] == json!("DONE") {
        return o.op.clone();
    }
    if o.polls_left > 0 {
        o.polls_left -= 1;
        return o.op.clone();
    }
    o.op["status"] = json!("DONE");
    o.op["progress"] = json!(100);
    o.op["endTime"] = json!(now());
    if let Effect::NoCapacity(p, z) = &o.effect {
        // As Compute Engine ends an insert into a zone without room for the machine.
        o.op["error"] = json!({"errors": [{
            "code": "ZONE_RESOURCE_POOL_EXHAUSTED",
            "message": format!("The zone 'projects/{p}/zones/{z}' does not have enough resources available to fulfill the request.  Try a different zone, or try again later."),
        }]});
        o.op["httpErrorStatusCode"] = json!(503);
        o.op["httpErrorMessage"] = json!("SERVICE UNAVAILABLE");
    }
    let (op, effect) = (o.op.clone(), std::mem::replace(&mut o.effect, Effect::None));
    match effect {
        Effect::None | Effect::NoCapacity(..) => {}
        Effect::Start(p, z, n) => {
            if let Some(vm) = w.instances.get_mut(&(p, z, n)) {
                if vm["status"] == json!("PROVISIONING") {
                    vm["status"] = json!("RUNNING");
                    vm["lastStartTimestamp"] = json!(now());
                }
            }
        }
        Effect::RemoveInstance(p, z, n) => {
            w.instances.remove(&(p, z, n));
        }
        Effect::RemoveFirewall(p, n) => {
            w.firewalls.remove(&(p, n));
        }
    }
    op
}

/// The zones of a region, as Google lists them (not every region has an `a` zone); a region
/// outside GCP's continents table is unknown.
fn zones_of(region: &str) -> Option<Vec<String>> {
    let letters: &[&str] = match region {
        "us-central1" => &["a", "b", "c", "f"],
        "us-east1" | "europe-west1" => &["b", "c", "d"],
        r if r.contains('-') && r.ends_with(|c: char| c.is_ascii_digit()) => &["a", "b", "c"],
        _ => return None,
    };
    Some(letters.iter().map(|l| format!("{region}-{l}")).collect())
}

/// What Compute checks of an instance beyond its schema.
fn instance_body(b: &Value, zone: &str) -> Result<(), String> {
    let machine = b["machineType"].as_str().unwrap_or("");
    if !machine.contains("machineTypes/") {
        return Err("machineType is required (zones/ZONE/machineTypes/TYPE)".into());
    }
    if machine.contains("zones/") && !machine.contains(&format!("zones/{zone}/")) {
        return Err(format!("machineType {machine} is not in zone {zone}"));
    }
    let disks = b["disks"].as_array().ok_or("disks is required")?;
    let boots = disks.iter().filter(|d| d["boot"] == json!(true)).count();
    if boots != 1 {
        return Err(format!("exactly one boot disk is required, found {boots}"));
    }
    for d in disks {
        if d["source"].is_null()
            && d["initializeParams"]["sourceImage"].is_null()
            && d["boot"] == json!(true)
        {
            return Err("the boot disk needs initializeParams.sourceImage or a source".into());
        }
    }
    if b["networkInterfaces"].as_array().is_none_or(Vec::is_empty) {
        return Err("networkInterfaces is required".into());
    }
    if b["serviceAccounts"].as_array().is_some_and(|s| s.len() > 1) {
        return Err("at most one service account per instance".into());
    }
    labels_ok(b.get("labels"), false)?;
    let mut keys = BTreeSet::new();
    for item in b["metadata"]["items"].as_array().into_iter().flatten() {
        if !keys.insert(item["key"].as_str().unwrap_or("")) {
            return Err(format!("metadata key {} given twice", item["key"]));
        }
    }
    let s = &b["scheduling"];
    let spot = s["provisioningModel"] == json!("SPOT") || s["preemptible"] == json!(true);
    if spot
        && (s["automaticRestart"] == json!(true) || s["onHostMaintenance"] != json!("TERMINATE"))
    {
        return Err("Spot and preemptible instances need automaticRestart false and onHostMaintenance TERMINATE".into());
    }
    if !spot && s.get("instanceTerminationAction").is_some() {
        return Err("instanceTerminationAction applies to Spot instances".into());
    }
    Ok(())
}

/// What Compute checks of a firewall beyond its schema.
fn firewall_body(b: &Value) -> Result<(), String> {
    let allowed = b["allowed"].as_array().map_or(0, Vec::len);
    let denied = b["denied"].as_array().map_or(0, Vec::len);
    if (allowed == 0) == (denied == 0) {
        return Err("a firewall has either allowed or denied rules".into());
    }
    for rule in b["allowed"]
        .as_array()
        .into_iter()
        .chain(b["denied"].as_array())
        .flatten()
    {
        if !rule["IPProtocol"].is_string() {
            return Err("every rule needs IPProtocol".into());
        }
    }
    if let Some(p) = b["priority"].as_i64() {
        if !(0..=65535).contains(&p) {
            return Err("priority is 0..65535".into());
        }
    }
    for range in b["sourceRanges"]
        .as_array()
        .into_iter()
        .chain(b["destinationRanges"].as_array())
        .flatten()
    {
        let range = range.as_str().unwrap_or("");
        let (ip, bits) = range.split_once('/').unwrap_or((range, "32"));
        if ip.parse::<std::net::Ipv4Addr>().is_err() || !bits.parse::<u8>().is_ok_and(|b| b <= 32) {
            return Err(format!("'{range}' is not a CIDR range"));
        }
    }
    Ok(())
}

/// The instance as Compute reports it: PROVISIONING until its insert is DONE.
fn instance(w: &mut World, api: &str, key: &(String, String, String), body: &Value) -> Value {
    let (project, zone, name) = key;
    let n = w.next();
    let mut vm = body.clone();
    let fingerprint = b64(&n.to_be_bytes(), STD);
    for (k, v) in [
        ("kind", json!("compute#instance")),
        ("id", json!((1_000_000_000_000_000_000u64 + n).to_string())),
        ("creationTimestamp", json!(now())),
        ("status", json!("PROVISIONING")),
        (
            "zone",
            json!(format!("{api}/projects/{project}/zones/{zone}")),
        ),
        (
            "selfLink",
            json!(format!(
                "{api}/projects/{project}/zones/{zone}/instances/{name}"
            )),
        ),
        (
            "machineType",
            json!(full_url(
                api,
                project,
                body["machineType"].as_str().unwrap_or("")
            )),
        ),
        ("labels", body.get("labels").cloned().unwrap_or(json!({}))),
        ("labelFingerprint", json!(fingerprint)),
        ("fingerprint", json!(fingerprint)),
        ("cpuPlatform", json!("Intel Broadwell")),
        (
            "canIpForward",
            body.get("canIpForward").cloned().unwrap_or(json!(false)),
        ),
        (
            "deletionProtection",
            body.get("deletionProtection")
                .cloned()
                .unwrap_or(json!(false)),
        ),
    ] {
        vm[k] = v;
    }
    let mut metadata = body.get("metadata").cloned().unwrap_or(json!({}));
    metadata["kind"] = json!("compute#metadata");
    metadata["fingerprint"] = json!(fingerprint);
    vm["metadata"] = metadata;
    let mut tags = body.get("tags").cloned().unwrap_or(json!({}));
    tags["fingerprint"] = json!(fingerprint);
    vm["tags"] = tags;
    let mut scheduling = body.get("scheduling").cloned().unwrap_or(json!({}));
    let spot = scheduling["provisioningModel"] == json!("SPOT");
    let defaults = [
        ("provisioningModel", json!("STANDARD")),
        ("automaticRestart", json!(!spot)),
        (
            "onHostMaintenance",
            json!(if spot { "TERMINATE" } else { "MIGRATE" }),
        ),
        ("preemptible", json!(false)),
    ];
    for (k, v) in defaults {
        if scheduling.get(k).is_none() {
            scheduling[k] = v;
        }
    }
    if spot && scheduling.get("instanceTerminationAction").is_none() {
        scheduling["instanceTerminationAction"] = json!("STOP");
    }
    vm["scheduling"] = scheduling;
    let octet = n % 250 + 2;
    for (i, nic) in vm["networkInterfaces"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let network = nic["network"]
            .as_str()
            .unwrap_or("global/networks/default")
            .to_owned();
        nic["network"] = json!(full_url(api, project, &network));
        nic["networkIP"] = json!(format!("10.128.0.{octet}"));
        nic["name"] = json!(format!("nic{i}"));
        nic["kind"] = json!("compute#networkInterface");
        nic["stackType"] = json!("IPV4_ONLY");
        for ac in nic["accessConfigs"].as_array_mut().into_iter().flatten() {
            ac["kind"] = json!("compute#accessConfig");
            ac["natIP"] = json!(format!("203.0.113.{octet}"));
            if ac.get("type").is_none() {
                ac["type"] = json!("ONE_TO_ONE_NAT");
            }
            if ac.get("networkTier").is_none() {
                ac["networkTier"] = json!("PREMIUM");
            }
        }
    }
    for (i, d) in vm["disks"].as_array_mut().into_iter().flatten().enumerate() {
        let dname = d["initializeParams"]["diskName"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| name.clone());
        // As Compute Engine reports an attached disk: its size (10 GB unless asked), no
        // initializeParams.
        d["diskSizeGb"] = d["initializeParams"]
            .get("diskSizeGb")
            .cloned()
            .unwrap_or(json!("10"));
        d.as_object_mut().unwrap().remove("initializeParams");
        d["kind"] = json!("compute#attachedDisk");
        d["index"] = json!(i);
        d["source"] = json!(format!(
            "{api}/projects/{project}/zones/{zone}/disks/{dname}"
        ));
        d["type"] = json!("PERSISTENT");
        d["mode"] = json!("READ_WRITE");
    }
    vm
}

/// A partial URL (`zones/z/machineTypes/t`, `global/networks/n`, `projects/p/...`) made full.
fn full_url(api: &str, project: &str, partial: &str) -> String {
    if partial.contains("://") {
        partial.to_owned()
    } else if partial.starts_with("projects/") {
        format!("{api}/{partial}")
    } else {
        format!(
            "{api}/projects/{project}/{}",
            partial.trim_start_matches('/')
        )
    }
}

/// The filters the contract server understands: `FIELD = VALUE` and `FIELD:*` clauses (in
/// parentheses or not, joined by spaces or AND) on `name`, `status` and `labels.KEY`.
/// Another filter is a violation: a test should not rely on what this server cannot check.
struct Filter(Vec<(String, Option<String>)>);

impl Filter {
    fn parse(f: &str) -> Result<Filter, String> {
        let cleaned = f.replace(['(', ')'], " ");
        let mut tokens: Vec<String> = Vec::new();
        let mut glue = false;
        for t in cleaned.split_whitespace().filter(|t| *t != "AND") {
            // `labels.a = "b"` and `labels.a="b"` alike.
            if let (true, Some(last)) = (glue || t.starts_with('='), tokens.last_mut()) {
                last.push_str(t);
            } else {
                tokens.push(t.to_owned());
            }
            glue = t.ends_with('=');
        }
        let mut clauses = Vec::new();
        for t in tokens {
            let (field, value) = if let Some(field) = t.strip_suffix(":*") {
                (field.to_owned(), None)
            } else if let Some((field, value)) = t.split_once('=') {
                (field.to_owned(), Some(value.trim_matches('"').to_owned()))
            } else {
                return Err(format!(
                    "filter clause '{t}' is not one the contract server understands"
                ));
            };
            if !(field == "name"
                || field == "status"
                || field.strip_prefix("labels.").is_some_and(|k| !k.is_empty()))
            {
                return Err(format!(
                    "filter field '{field}' is not one the contract server understands"
                ));
            }
            clauses.push((field, value));
        }
        Ok(Filter(clauses))
    }

    fn matches(&self, v: &Value) -> bool {
        self.0.iter().all(|(field, want)| {
            let got = match field.strip_prefix("labels.") {
                Some(k) => &v["labels"][k],
                None => &v[field.as_str()],
            };
            match want {
                None => !got.is_null(),
                Some(want) => got.as_str() == Some(want.as_str()),
            }
        })
    }
}

// Lists.

/// One page of `all` under `key` in `envelope`: `size_param` asks for at most that many,
/// the world's `page_size` caps it; `nextPageToken` while more remain. An empty page leaves
/// `key` out, as Google's JSON does.
fn list(
    w: &mut World,
    r: &Req,
    size_param: &str,
    all: Vec<Value>,
    mut envelope: Value,
    key: &str,
) -> Answer {
    let start = match r.q("pageToken").filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => match b64url_decode(t)
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("start=").and_then(|n| n.parse().ok()))
        {
            Some(n) => n,
            None => {
                return violation(
                    w,
                    400,
                    "invalid",
                    format!("{}: pageToken '{t}' was not issued by this server", r.what),
                )
            }
        },
    };
    let asked = r
        .q(size_param)
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n > 0);
    let size = asked.unwrap_or(usize::MAX).min(w.page_size.max(1));
    let page: Vec<Value> = all.iter().skip(start).take(size).cloned().collect();
    if !page.is_empty() {
        envelope[key] = json!(page);
    }
    if start + size < all.len() {
        envelope["nextPageToken"] = json!(b64(format!("start={}", start + size).as_bytes(), URL));
    }
    ok(200, envelope)
}

// Small helpers: time, base64, ids.

fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A stable 12-digit project number for a project id (FNV-1a).
fn project_number(project: &str) -> String {
    let h = project.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (100_000_000_000 + h % 900_000_000_000).to_string()
}

fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (c as char).to_string()
            }
            _ => format!("%{c:02X}"),
        })
        .collect()
}

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 with `alphabet`; the standard one is padded, the URL one not.
fn b64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if alphabet == STD {
            out.push_str(&"=="[..3 - chunk.len()]);
        }
    }
    out
}

/// Base64url without padding (JWT parts, page tokens); padding is tolerated.
fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = URL.iter().position(|&a| a == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (bits < 6).then_some(out)
}
