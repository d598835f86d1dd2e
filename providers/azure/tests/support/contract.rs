//! A contract server for Azure Resource Manager, written from the REST API specifications
//! (azure-rest-api-specs: Microsoft.Resources 2025-04-01, Microsoft.Storage 2025-06-01,
//! Microsoft.ManagedIdentity 2024-11-30, Microsoft.Authorization 2022-04-01, Microsoft.Compute
//! Resource SKUs 2021-07-01 and Usage_List 2025-04-01) and the ARM
//! RPC's long-running-operation rules. Azure has no emulator of its control plane; this
//! server holds anycloud to the published contract instead:
//!
//! - every request's method and path must be an operation of those specs, with the
//!   api-version of its service and a body the operation's schema accepts (required fields,
//!   types, enums, name patterns); anything else is answered as ARM would (400/404) **and**
//!   recorded as a violation, which the tests assert there are none of;
//! - answers use the documented status codes: a storage account PUT answers 202 with an
//!   empty body, `Location` and `Retry-After`, the account staying invisible until the
//!   operation finishes; lists page with `nextLink`;
//! - faults can be injected: 429 with `Retry-After`, slow provisioning, an account name
//!   taken by another subscription, a role assignment that exists under another name.
//!
//! The fixtures are our own, made from the schemas, not copies of the specs' examples.

// Each test binary that includes it uses part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

pub const RESOURCES_API: &str = "2025-04-01";
pub const STORAGE_API: &str = "2025-06-01";
pub const MSI_API: &str = "2024-11-30";
pub const AUTHORIZATION_API: &str = "2022-04-01";
pub const NETWORK_API: &str = "2026-01-01";
pub const COMPUTE_API: &str = "2025-04-01";
/// Microsoft.Compute's Resource SKUs (`Skus/stable/2021-07-01/skus.json`).
pub const SKUS_API: &str = "2021-07-01";

/// The tenant and service principal the tests sign in as (client-credentials flow).
pub const TENANT: &str = "72f988bf-0000-4000-8000-00000000c0de";
pub const CLIENT_ID: &str = "5b0c6a53-0000-4000-8000-0000000c11e7";
pub const CLIENT_SECRET: &str = "contract-server-secret-not-real";
/// The object id of that service principal: the `oid` of its tokens.
pub const OPERATOR_OBJECT_ID: &str = "0b5e7a70-0000-4000-8000-00000000a11c";

/// Called with (account, container, made) as a container is made or deleted.
pub type Mirror = Arc<dyn Fn(&str, &str, bool) + Send + Sync>;

#[derive(Default)]
pub struct World {
    /// Every request, as "METHOD path" (query left out).
    pub requests: Vec<String>,
    pub violations: Vec<String>,
    tokens: BTreeSet<String>,
    /// (subscription, lower-cased group) → location, tags
    pub groups: BTreeMap<(String, String), Value>,
    /// account name → (subscription, group, the account, polls left before it is provisioned)
    pub accounts: BTreeMap<String, (String, String, Value, usize)>,
    /// (account, container) → container
    pub containers: BTreeMap<(String, String), Value>,
    /// lower-cased identity id → identity
    pub identities: BTreeMap<String, Value>,
    /// lower-cased assignment name → assignment
    pub assignments: BTreeMap<String, Value>,
    /// lower-cased assignment name → when it was made (an assignment put here by a test
    /// has none): what the blob service's authorisation counts its propagation from.
    pub assigned_at: BTreeMap<String, std::time::Instant>,
    /// lower-cased assignment name → the assignment deleted, and when.
    pub revoked: BTreeMap<String, (Value, std::time::Instant)>,
    /// lower-cased id → network object (virtual networks, NSGs, public IPs, NICs)
    pub network: BTreeMap<String, Value>,
    /// lower-cased id → virtual machine; its power state in `properties.instanceView`
    pub vms: BTreeMap<String, Value>,
    /// (lower-cased region, usage name as `usages` reports it: `cores`, `lowPriorityCores`,
    /// a family) → the subscription's limit; [`DEFAULT_VCPU_LIMIT`] where not set.
    pub vcpu_limits: BTreeMap<(String, String), u64>,
    /// operation id → (polls left, lower-cased id of the resource it provisions, or none)
    operations: BTreeMap<u64, (usize, Option<String>)>,
    /// Called as a container is made (`true`) or deleted: mirrors it into a blob service.
    pub on_container: Option<Mirror>,
    /// Fault injection.
    pub throttle_next: usize,
    pub slow_polls: usize,
    pub taken_elsewhere: BTreeSet<String>,
    pub page_size: usize,
    next_id: u64,
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
        let ip = ip.to_owned();
        let world = Arc::new(Mutex::new(World {
            page_size: 2,
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

    /// A Spot eviction with policy Delete: the VM is gone.
    pub fn evict(&self, name: &str) {
        self.with(|w| w.vms.retain(|_, vm| vm["name"] != json!(name)));
    }

    /// The environment that makes anycloud sign in to this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_TENANT_ID", TENANT.into()),
            ("AZURE_CLIENT_ID", CLIENT_ID.into()),
            ("AZURE_CLIENT_SECRET", CLIENT_SECRET.into()),
            ("AZURE_AUTHORITY_HOST", self.url.clone()),
        ]
    }
}

struct Answer(StatusCode, Value, Vec<(&'static str, String)>);

fn ok(status: u16, body: Value) -> Answer {
    Answer(StatusCode::from_u16(status).unwrap(), body, vec![])
}

fn error(status: u16, code: &str, message: &str) -> Answer {
    ok(status, json!({"error": {"code": code, "message": message}}))
}

async fn handle(
    world: &Arc<Mutex<World>>,
    addr: SocketAddr,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    let base = format!("http://{addr}");
    let Answer(status, body, headers) = {
        let mut w = world.lock().unwrap();
        w.requests.push(format!("{method} {path}"));
        answer(&mut w, &base, &method, &path, &query, &auth, &bytes)
    };
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(k, v);
    }
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(serde_json::to_vec(&body).unwrap())
    };
    if !body.is_empty() {
        r = r.header("content-type", "application/json");
    }
    r.body(Full::new(body)).unwrap()
}

fn violation(w: &mut World, status: u16, code: &str, what: String) -> Answer {
    w.violations.push(what.clone());
    error(status, code, &what)
}

fn answer(
    w: &mut World,
    base: &str,
    method: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    auth: &str,
    bytes: &[u8],
) -> Answer {
    // Entra ID's token endpoint (client-credentials flow).
    if method == "POST" && path == format!("/{TENANT}/oauth2/v2.0/token") {
        let form: BTreeMap<String, String> =
            url::form_urlencoded::parse(bytes).into_owned().collect();
        let good = form.get("grant_type").map(String::as_str) == Some("client_credentials")
            && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
            && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
            && form.get("scope").is_some_and(|s| s.ends_with("/.default"));
        if !good {
            return ok(
                400,
                json!({"error": "invalid_client", "error_description": "bad client credentials"}),
            );
        }
        w.next_id += 1;
        // For the blob service, a token as Entra ID issues it (Azurite checks its claims).
        let token = if form["scope"].starts_with("https://storage.azure.com") {
            storage_token()
        } else {
            format!("token-{}", w.next_id)
        };
        w.tokens.insert(token.clone());
        return ok(
            200,
            json!({"token_type": "Bearer", "expires_in": "3599", "access_token": token}),
        );
    }
    let token = auth.strip_prefix("Bearer ").unwrap_or("");
    if !w.tokens.contains(token) {
        return violation(
            w,
            401,
            "InvalidAuthenticationToken",
            format!("{method} {path}: no valid bearer token"),
        );
    }
    if w.throttle_next > 0 {
        w.throttle_next -= 1;
        let mut a = error(429, "TooManyRequests", "throttled by the contract server");
        a.2.push(("retry-after", "1".into()));
        return a;
    }
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                return violation(
                    w,
                    400,
                    "InvalidRequestContent",
                    format!("{method} {path}: {e}"),
                )
            }
        }
    };
    // Polls of a long-running operation: URLs this server handed out.
    if let Some(name) = path.strip_prefix("/_operations/storage/") {
        return poll_account(w, name);
    }
    if let Some(id) = path.strip_prefix("/_operations/async/") {
        return poll_async(w, id.parse().unwrap_or(0));
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let route = Route::of(&segments);
    let Some((route, api)) = route else {
        return violation(
            w,
            404,
            "InvalidResourceType",
            format!("{method} {path}: no such operation in the specs anycloud uses"),
        );
    };
    match query.get("api-version") {
        Some(v) if v == api => {}
        other => {
            return violation(
                w,
                400,
                "InvalidApiVersionParameter",
                format!("{method} {path}: api-version {other:?}, the contract is {api}"),
            )
        }
    }
    route.answer(w, base, method, &segments, query, &body)
}

/// The regions and VM sizes Resource SKUs lists here: name, vCPUs, GPUs (0: no `GPUs`
/// capability, as for a size without them).
const REGIONS: [&str; 3] = ["westeurope", "eastus", "westus2"];
const SIZES: [(&str, u32, u32); 4] = [
    ("Standard_B2s", 2, 0),
    ("Standard_D4s_v5", 4, 0),
    ("Standard_NC4as_T4_v3", 4, 1),
    ("Standard_NC24ads_A100_v4", 24, 1),
];

/// Each size's quota family, as Resource SKUs' `family` and Compute's usages name it.
fn family(size: &str) -> &'static str {
    match size {
        "Standard_B2s" => "standardBSFamily",
        "Standard_D4s_v5" => "standardDSv5Family",
        "Standard_NC4as_T4_v3" => "standardNCASv3_T4Family",
        _ => "StandardNCADSA100v4Family",
    }
}

/// A region's vCPU limits where a test set none: what a new pay-as-you-go subscription
/// often starts with.
pub const DEFAULT_VCPU_LIMIT: u64 = 100;

/// Compute's usages of `region` (`Usage_List`): the region's totals and each family's vCPUs
/// of the VMs here (Spot ones in `lowPriorityCores` only), with their limits.
fn usages(w: &World, sub: &str, region: &str) -> Vec<Value> {
    let mut used: BTreeMap<String, u64> = BTreeMap::new();
    let mut names: Vec<(String, String)> = vec![
        ("cores".into(), "Total Regional vCPUs".into()),
        (
            "lowPriorityCores".into(),
            "Total Regional Spot vCPUs".into(),
        ),
    ];
    for (name, _, _) in SIZES {
        let f = family(name).to_owned();
        if !names.iter().any(|(n, _)| *n == f) {
            let words = format!(
                "Standard {} Family vCPUs",
                name.trim_start_matches("Standard_")
            );
            names.push((f, words));
        }
    }
    let prefix = format!("/subscriptions/{sub}/").to_ascii_lowercase();
    for (id, vm) in &w.vms {
        let here = vm["location"]
            .as_str()
            .is_some_and(|l| l.eq_ignore_ascii_case(region));
        if !id.starts_with(&prefix) || !here {
            continue;
        }
        let p = &vm["properties"];
        let size = p["hardwareProfile"]["vmSize"].as_str().unwrap_or_default();
        let Some((name, cpus, _)) = SIZES.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(size))
        else {
            continue;
        };
        let cpus = u64::from(*cpus);
        if p["priority"].as_str() == Some("Spot") {
            *used.entry("lowPriorityCores".into()).or_default() += cpus;
        } else {
            *used.entry("cores".into()).or_default() += cpus;
            *used.entry(family(name).into()).or_default() += cpus;
        }
    }
    names
        .into_iter()
        .map(|(name, words)| {
            let limit = w
                .vcpu_limits
                .get(&(region.to_ascii_lowercase(), name.clone()))
                .copied()
                .unwrap_or(DEFAULT_VCPU_LIMIT);
            json!({
                "unit": "Count",
                "currentValue": used.get(&name).copied().unwrap_or(0),
                "limit": limit,
                "name": {"value": name, "localizedValue": words},
            })
        })
        .collect()
}

/// A `ResourceSku` of a VM size (the shape of the spec's `ResourceSku` definition).
fn sku(region: &str, name: &str, cpus: u32, gpus: u32) -> Value {
    let mut capabilities = vec![
        json!({"name": "vCPUs", "value": cpus.to_string()}),
        json!({"name": "HyperVGenerations", "value": "V1,V2"}),
        json!({"name": "LowPriorityCapable", "value": "True"}),
    ];
    if gpus > 0 {
        capabilities.push(json!({"name": "GPUs", "value": gpus.to_string()}));
    }
    let size = name.trim_start_matches("Standard_");
    json!({
        "resourceType": "virtualMachines",
        "name": name,
        "tier": "Standard",
        "size": size,
        "family": family(name),
        "locations": [region],
        "locationInfo": [{"location": region, "zones": ["1", "2", "3"]}],
        "capabilities": capabilities,
        "restrictions": [],
    })
}

enum Route {
    Group,
    CheckName,
    Accounts,
    Account,
    Containers,
    Container,
    Identities,
    Identity,
    Assignments,
    Assignment,
    /// virtualNetworks, networkSecurityGroups, publicIPAddresses, networkInterfaces
    Network(&'static str),
    Machine,
    Machines,
    Addresses,
    Skus,
    /// Compute's usages of a location.
    Usages,
}

const NETWORK_KINDS: [&str; 4] = [
    "virtualNetworks",
    "networkSecurityGroups",
    "publicIPAddresses",
    "networkInterfaces",
];

impl Route {
    fn of(s: &[&str]) -> Option<(Route, &'static str)> {
        let eq = |i: usize, v: &str| s.get(i).is_some_and(|x| x.eq_ignore_ascii_case(v));
        if !eq(0, "subscriptions") || s.len() < 2 {
            return None;
        }
        // Role assignments hang off any scope.
        if let Some(i) = s
            .iter()
            .position(|x| x.eq_ignore_ascii_case("Microsoft.Authorization"))
        {
            if eq(i - 1, "providers") && eq(i + 1, "roleAssignments") {
                return match s.len() - i {
                    2 => Some((Route::Assignments, AUTHORIZATION_API)),
                    3 => Some((Route::Assignment, AUTHORIZATION_API)),
                    _ => None,
                };
            }
            return None;
        }
        match s.len() {
            4 if eq(2, "resourcegroups") => Some((Route::Group, RESOURCES_API)),
            5 if eq(2, "providers")
                && eq(3, "Microsoft.Storage")
                && eq(4, "checkNameAvailability") =>
            {
                Some((Route::CheckName, STORAGE_API))
            }
            5 if eq(2, "providers") && eq(3, "Microsoft.Storage") && eq(4, "storageAccounts") => {
                Some((Route::Accounts, STORAGE_API))
            }
            5 if eq(2, "providers")
                && eq(3, "Microsoft.ManagedIdentity")
                && eq(4, "userAssignedIdentities") =>
            {
                Some((Route::Identities, MSI_API))
            }
            5 if eq(2, "providers") && eq(3, "Microsoft.Compute") && eq(4, "virtualMachines") => {
                Some((Route::Machines, COMPUTE_API))
            }
            5 if eq(2, "providers") && eq(3, "Microsoft.Compute") && eq(4, "skus") => {
                Some((Route::Skus, SKUS_API))
            }
            5 if eq(2, "providers") && eq(3, "Microsoft.Network") && eq(4, "publicIPAddresses") => {
                Some((Route::Addresses, NETWORK_API))
            }
            7 if eq(2, "providers")
                && eq(3, "Microsoft.Compute")
                && eq(4, "locations")
                && eq(6, "usages") =>
            {
                Some((Route::Usages, COMPUTE_API))
            }
            8 if eq(2, "resourceGroups")
                && eq(4, "providers")
                && eq(5, "Microsoft.Compute")
                && eq(6, "virtualMachines") =>
            {
                Some((Route::Machine, COMPUTE_API))
            }
            8 if eq(2, "resourceGroups") && eq(4, "providers") && eq(5, "Microsoft.Network") => {
                NETWORK_KINDS
                    .iter()
                    .find(|k| eq(6, k))
                    .map(|k| (Route::Network(k), NETWORK_API))
            }
            8 if eq(2, "resourceGroups")
                && eq(4, "providers")
                && eq(5, "Microsoft.Storage")
                && eq(6, "storageAccounts") =>
            {
                Some((Route::Account, STORAGE_API))
            }
            8 if eq(2, "resourceGroups")
                && eq(4, "providers")
                && eq(5, "Microsoft.ManagedIdentity")
                && eq(6, "userAssignedIdentities") =>
            {
                Some((Route::Identity, MSI_API))
            }
            11 | 12
                if eq(2, "resourceGroups")
                    && eq(5, "Microsoft.Storage")
                    && eq(6, "storageAccounts")
                    && eq(8, "blobServices")
                    && eq(9, "default")
                    && eq(10, "containers") =>
            {
                if s.len() == 11 {
                    Some((Route::Containers, STORAGE_API))
                } else {
                    Some((Route::Container, STORAGE_API))
                }
            }
            _ => None,
        }
    }

    fn answer(
        self,
        w: &mut World,
        base: &str,
        method: &str,
        s: &[&str],
        query: &BTreeMap<String, String>,
        body: &Value,
    ) -> Answer {
        let sub = s[1].to_owned();
        let what = format!("{method} /{}", s.join("/"));
        match (self, method) {
            (Route::Group, "GET") => match w.groups.get(&(sub, s[3].to_ascii_lowercase())) {
                Some(g) => ok(200, g.clone()),
                None => error(404, "ResourceGroupNotFound", "no such resource group"),
            },
            (Route::Group, "PUT") => {
                if let Err(why) = group_name(s[3])
                    .and(object(
                        body,
                        &["location"],
                        &["location", "tags", "properties", "managedBy"],
                    ))
                    .and(tags(body))
                {
                    return violation(w, 400, "InvalidRequestContent", format!("{what}: {why}"));
                }
                let key = (sub.clone(), s[3].to_ascii_lowercase());
                let created = !w.groups.contains_key(&key);
                let g = json!({
                    "id": format!("/subscriptions/{sub}/resourceGroups/{}", s[3]),
                    "name": s[3], "type": "Microsoft.Resources/resourceGroups",
                    "location": body["location"], "tags": body.get("tags").cloned().unwrap_or(json!({})),
                    "properties": {"provisioningState": "Succeeded"},
                });
                w.groups.insert(key, g.clone());
                ok(if created { 201 } else { 200 }, g)
            }
            (Route::CheckName, "POST") => {
                if let Err(why) = object(body, &["name", "type"], &["name", "type"]).and(enum_of(
                    body,
                    "type",
                    &["Microsoft.Storage/storageAccounts"],
                )) {
                    return violation(w, 400, "InvalidRequestContent", format!("{what}: {why}"));
                }
                let name = body["name"].as_str().unwrap_or("");
                if account_name(name).is_err() {
                    return ok(
                        200,
                        json!({"nameAvailable": false, "reason": "AccountNameInvalid", "message": format!("{name} is not a valid storage account name.")}),
                    );
                }
                if w.taken_elsewhere.contains(name) || w.accounts.contains_key(name) {
                    return ok(
                        200,
                        json!({"nameAvailable": false, "reason": "AlreadyExists", "message": format!("The storage account named {name} is already taken.")}),
                    );
                }
                ok(200, json!({"nameAvailable": true}))
            }
            (Route::Accounts, "GET") => {
                let all: Vec<Value> = w
                    .accounts
                    .values()
                    .filter(|(s2, _, _, left)| *s2 == sub && *left == 0)
                    .map(|(_, _, a, _)| a.clone())
                    .collect();
                page(w, base, &what, query, all)
            }
            (Route::Account, "GET") => match w.accounts.get(s[7]) {
                Some((s2, g, a, 0)) if *s2 == sub && g.eq_ignore_ascii_case(s[3]) => {
                    ok(200, a.clone())
                }
                _ => error(404, "ResourceNotFound", "The Resource was not found."),
            },
            (Route::Account, "PUT") => {
                let name = s[7];
                let check = account_name(name)
                    .and(object(
                        body,
                        &["sku", "kind", "location"],
                        &[
                            "sku",
                            "kind",
                            "location",
                            "tags",
                            "properties",
                            "identity",
                            "extendedLocation",
                        ],
                    ))
                    .and(enum_of(
                        &body["sku"],
                        "name",
                        &[
                            "Standard_LRS",
                            "Standard_GRS",
                            "Standard_RAGRS",
                            "Standard_ZRS",
                            "Premium_LRS",
                            "Premium_ZRS",
                            "Standard_GZRS",
                            "Standard_RAGZRS",
                        ],
                    ))
                    .and(enum_of(
                        body,
                        "kind",
                        &[
                            "Storage",
                            "StorageV2",
                            "BlobStorage",
                            "FileStorage",
                            "BlockBlobStorage",
                        ],
                    ))
                    .and(tags(body))
                    .and(booleans(
                        body.get("properties"),
                        &[
                            "allowBlobPublicAccess",
                            "allowSharedKeyAccess",
                            "supportsHttpsTrafficOnly",
                        ],
                    ))
                    .and(enum_of_opt(
                        body.get("properties"),
                        "minimumTlsVersion",
                        &["TLS1_0", "TLS1_1", "TLS1_2", "TLS1_3"],
                    ));
                if let Err(why) = check {
                    return violation(w, 400, "InvalidRequestContent", format!("{what}: {why}"));
                }
                if !w
                    .groups
                    .contains_key(&(sub.clone(), s[3].to_ascii_lowercase()))
                {
                    return error(
                        404,
                        "ResourceGroupNotFound",
                        &format!("Resource group '{}' could not be found.", s[3]),
                    );
                }
                if w.taken_elsewhere.contains(name) {
                    return error(
                        409,
                        "StorageAccountAlreadyTaken",
                        &format!("The storage account named {name} is already taken."),
                    );
                }
                if let Some((s2, g, _, _)) = w.accounts.get(name) {
                    if *s2 != sub {
                        return error(
                            409,
                            "StorageAccountAlreadyTaken",
                            &format!("The storage account named {name} is already taken."),
                        );
                    }
                    if !g.eq_ignore_ascii_case(s[3]) {
                        return error(409, "StorageAccountAlreadyExists", &format!("The storage account named {name} already exists under the subscription."));
                    }
                    // Idempotent: the same account again (in flight or made).
                } else {
                    let account = json!({
                        "id": format!("/subscriptions/{sub}/resourceGroups/{}/providers/Microsoft.Storage/storageAccounts/{name}", s[3]),
                        "name": name, "type": "Microsoft.Storage/storageAccounts",
                        "location": body["location"], "kind": body["kind"], "sku": body["sku"],
                        "tags": body.get("tags").cloned().unwrap_or(json!({})),
                        "properties": {
                            "provisioningState": "Succeeded",
                            "primaryEndpoints": {"blob": format!("https://{name}.blob.core.windows.net/")},
                            "allowSharedKeyAccess": body["properties"].get("allowSharedKeyAccess").cloned().unwrap_or(json!(true)),
                        },
                    });
                    let polls = w.slow_polls;
                    w.accounts.insert(
                        name.to_owned(),
                        (sub.clone(), s[3].to_owned(), account, polls.max(1)),
                    );
                }
                // The spec's 202: an empty body, the operation's Location and Retry-After.
                Answer(
                    StatusCode::ACCEPTED,
                    Value::Null,
                    vec![
                        ("location", format!("{base}/_operations/storage/{name}")),
                        ("retry-after", "1".into()),
                    ],
                )
            }
            (Route::Containers, "GET") => match live_account(w, &sub, s[3], s[7]) {
                Ok(()) => {
                    let all: Vec<Value> = w
                        .containers
                        .iter()
                        .filter(|((a, _), _)| a == s[7])
                        .map(|(_, c)| c.clone())
                        .collect();
                    page(w, base, &what, query, all)
                }
                Err(a) => a,
            },
            (Route::Container, "GET") => match live_account(w, &sub, s[3], s[7]) {
                Ok(()) => match w.containers.get(&(s[7].to_owned(), s[11].to_owned())) {
                    Some(c) => ok(200, c.clone()),
                    None => error(
                        404,
                        "ContainerNotFound",
                        "The specified container does not exist.",
                    ),
                },
                Err(a) => a,
            },
            (Route::Container, "PUT") => {
                let check = container_name(s[11])
                    .and(object(body, &[], &["properties"]))
                    .and(object(
                        body.get("properties").unwrap_or(&json!({})),
                        &[],
                        &[
                            "publicAccess",
                            "metadata",
                            "defaultEncryptionScope",
                            "denyEncryptionScopeOverride",
                            "immutableStorageWithVersioning",
                            "enableNfsV3RootSquash",
                            "enableNfsV3AllSquash",
                        ],
                    ))
                    .and(enum_of_opt(
                        body.get("properties"),
                        "publicAccess",
                        &["Container", "Blob", "None"],
                    ))
                    .and(string_map(
                        body.get("properties").and_then(|p| p.get("metadata")),
                    ));
                if let Err(why) = check {
                    return violation(w, 400, "InvalidRequestContent", format!("{what}: {why}"));
                }
                if let Err(a) = live_account(w, &sub, s[3], s[7]) {
                    return a;
                }
                let key = (s[7].to_owned(), s[11].to_owned());
                let created = !w.containers.contains_key(&key);
                let c = json!({
                    "id": format!("/subscriptions/{sub}/resourceGroups/{}/providers/Microsoft.Storage/storageAccounts/{}/blobServices/default/containers/{}", s[3], s[7], s[11]),
                    "name": s[11], "type": "Microsoft.Storage/storageAccounts/blobServices/containers",
                    "properties": {
                        "publicAccess": body["properties"].get("publicAccess").cloned().unwrap_or(json!("None")),
                        "metadata": body["properties"].get("metadata").cloned().unwrap_or(json!({})),
                    },
                });
                w.containers.insert(key, c.clone());
                if let Some(mirror) = w.on_container.clone() {
                    mirror(s[7], s[11], true);
                }
                ok(if created { 201 } else { 200 }, c)
            }
            (Route::Container, "DELETE") => match live_account(w, &sub, s[3], s[7]) {
                Ok(()) => match w.containers.remove(&(s[7].to_owned(), s[11].to_owned())) {
                    Some(_) => {
                        if let Some(mirror) = w.on_container.clone() {
                            mirror(s[7], s[11], false);
                        }
                        ok(200, Value::Null)
                    }
                    None => ok(204, Value::Null),
                },
                Err(a) => a,
            },
            (Route::Identities, "GET") => {
                let prefix = format!("/subscriptions/{sub}/").to_ascii_lowercase();
                let all: Vec<Value> = w
                    .identities
                    .iter()
                    .filter(|(id, _)| id.starts_with(&prefix))
                    .map(|(_, i)| i.clone())
                    .collect();
                page(w, base, &what, query, all)
            }
            (Route::Identity, "GET") => match w
                .identities
                .get(&format!("/{}", s.join("/")).to_ascii_lowercase())
            {
                Some(i) => ok(200, i.clone()),
                None => error(404, "ResourceNotFound", "The Resource was not found."),
            },
            (Route::Identity, "PUT") => {
                let check = identity_name(s[7])
                    .and(object(
                        body,
                        &["location"],
                        &["location", "tags", "properties"],
                    ))
                    .and(tags(body));
                if let Err(why) = check {
                    return violation(w, 400, "InvalidRequestContent", format!("{what}: {why}"));
                }
                if !w
                    .groups
                    .contains_key(&(sub.clone(), s[3].to_ascii_lowercase()))
                {
                    return error(
                        404,
                        "ResourceGroupNotFound",
                        &format!("Resource group '{}' could not be found.", s[3]),
                    );
                }
                let id = format!("/{}", s.join("/"));
                let created = !w.identities.contains_key(&id.to_ascii_lowercase());
                w.next_id += 1;
                let n = w.next_id;
                let existing = w.identities.get(&id.to_ascii_lowercase()).cloned();
                let props = existing
                    .and_then(|e| e.get("properties").cloned())
                    .unwrap_or_else(|| {
                        json!({
                            "tenantId": TENANT,
                            "principalId": format!("00000000-0000-4000-a000-{n:012}"),
                            "clientId": format!("00000000-0000-4000-b000-{n:012}"),
                        })
                    });
                let i = json!({
                    "id": id, "name": s[7], "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
                    "location": body["location"], "tags": body.get("tags").cloned().unwrap_or(json!({})),
                    "properties": props,
                });
                w.identities.insert(id.to_ascii_lowercase(), i.clone());
                ok(if created { 201 } else { 200 }, i)
            }
            (Route::Identity, "DELETE") => match w
                .identities
                .remove(&format!("/{}", s.join("/")).to_ascii_lowercase())
            {
                Some(_) => ok(200, Value::Null),
                None => ok(204, Value::Null),
            },
            (Route::Assignments, "GET") => {
                let scope = format!("/{}", s[..s.len() - 3].join("/")).to_ascii_lowercase();
                let at_scope = query.get("$filter").map(String::as_str) == Some("atScope()");
                if let Some(f) = query.get("$filter") {
                    if f != "atScope()" {
                        return violation(
                            w,
                            400,
                            "InvalidFilter",
                            format!("{what}: $filter {f} is not one anycloud uses"),
                        );
                    }
                }
                let all: Vec<Value> = w
                    .assignments
                    .values()
                    .filter(|a| {
                        let sc = a["properties"]["scope"]
                            .as_str()
                            .unwrap_or("")
                            .to_ascii_lowercase();
                        if at_scope {
                            sc == scope
                        } else {
                            sc.starts_with(&scope)
                        }
                    })
                    .cloned()
                    .collect();
                page(w, base, &what, query, all)
            }
            (Route::Assignment, "PUT") => {
                let name = s[s.len() - 1];
                let props = body.get("properties").cloned().unwrap_or(Value::Null);
                let check = guid(name)
                    .and(object(body, &["properties"], &["properties"]))
                    .and(object(
                        &props,
                        &["roleDefinitionId", "principalId"],
                        &[
                            "roleDefinitionId",
                            "principalId",
                            "principalType",
                            "description",
                            "condition",
                            "conditionVersion",
                            "delegatedManagedIdentityResourceId",
                        ],
                    ))
                    .and(enum_of_opt(
                        Some(&props),
                        "principalType",
                        &[
                            "User",
                            "Group",
                            "ServicePrincipal",
                            "ForeignGroup",
                            "Device",
                        ],
                    ));
                if let Err(why) = check {
                    return violation(w, 400, "InvalidRequestContent", format!("{what}: {why}"));
                }
                let scope = format!("/{}", s[..s.len() - 4].join("/"));
                let principal = props["principalId"].as_str().unwrap_or("");
                let definition = props["roleDefinitionId"].as_str().unwrap_or("");
                if !w
                    .identities
                    .values()
                    .any(|i| i["properties"]["principalId"] == principal)
                {
                    return error(
                        400,
                        "PrincipalNotFound",
                        &format!("Principal {principal} does not exist in the directory {TENANT}."),
                    );
                }
                if !scope_exists(w, &scope) {
                    return error(
                        404,
                        "ResourceNotFound",
                        &format!("The scope {scope} does not exist."),
                    );
                }
                let same = w.assignments.iter().find(|(n, a)| {
                    **n != name.to_ascii_lowercase()
                        && a["properties"]["scope"]
                            .as_str()
                            .is_some_and(|x| x.eq_ignore_ascii_case(&scope))
                        && a["properties"]["principalId"] == principal
                        && a["properties"]["roleDefinitionId"]
                            .as_str()
                            .is_some_and(|x| x.eq_ignore_ascii_case(definition))
                });
                if same.is_some() {
                    return error(
                        409,
                        "RoleAssignmentExists",
                        "The role assignment already exists.",
                    );
                }
                let a = json!({
                    "id": format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"),
                    "name": name, "type": "Microsoft.Authorization/roleAssignments",
                    "properties": {
                        "roleDefinitionId": definition, "principalId": principal,
                        "principalType": props.get("principalType").cloned().unwrap_or(json!("User")),
                        "scope": scope,
                        "description": props.get("description").cloned().unwrap_or(Value::Null),
                    },
                });
                let created = w
                    .assignments
                    .insert(name.to_ascii_lowercase(), a.clone())
                    .is_none();
                if created {
                    w.assigned_at
                        .insert(name.to_ascii_lowercase(), std::time::Instant::now());
                }
                ok(if created { 201 } else { 200 }, a)
            }
            (Route::Assignment, "GET") => {
                match w.assignments.get(&s[s.len() - 1].to_ascii_lowercase()) {
                    Some(a) => ok(200, a.clone()),
                    None => error(
                        404,
                        "RoleAssignmentNotFound",
                        "The role assignment does not exist.",
                    ),
                }
            }
            (Route::Assignment, "DELETE") => {
                let name = s[s.len() - 1].to_ascii_lowercase();
                w.assigned_at.remove(&name);
                match w.assignments.remove(&name) {
                    Some(a) => {
                        w.revoked
                            .insert(name, (a.clone(), std::time::Instant::now()));
                        ok(200, a)
                    }
                    None => ok(204, Value::Null),
                }
            }
            (Route::Network(_), "GET") | (Route::Machine, "GET") => {
                let id = format!("/{}", s.join("/")).to_ascii_lowercase();
                // Provisioning goes on whether or not the operation is polled.
                let pending: Vec<u64> = w
                    .operations
                    .iter()
                    .filter(|(_, (_, r))| r.as_deref() == Some(id.as_str()))
                    .map(|(op, _)| *op)
                    .collect();
                for op in pending {
                    poll_async(w, op);
                }
                match w.network.get(&id).or_else(|| w.vms.get(&id)) {
                    Some(r) => ok(200, r.clone()),
                    None => error(404, "ResourceNotFound", "The Resource was not found."),
                }
            }
            (Route::Network(kind), "PUT") => {
                let check = object(
                    body,
                    &["location"],
                    &["location", "tags", "properties", "sku", "zones"],
                )
                .and(tags(body))
                .and(network_body(w, kind, body));
                if let Err(why) = check {
                    return violation(w, 400, "InvalidRequestContent", format!("{what}: {why}"));
                }
                if !w
                    .groups
                    .contains_key(&(sub.clone(), s[3].to_ascii_lowercase()))
                {
                    return error(
                        404,
                        "ResourceGroupNotFound",
                        &format!("Resource group '{}' could not be found.", s[3]),
                    );
                }
                let id = format!("/{}", s.join("/"));
                w.next_id += 1;
                let n = w.next_id;
                let mut props = body.get("properties").cloned().unwrap_or(json!({}));
                props["provisioningState"] = json!("Updating");
                if kind == "publicIPAddresses" {
                    props["ipAddress"] = json!(format!("203.0.113.{}", n % 250 + 1));
                }
                let r = json!({
                    "id": id, "name": s[7], "type": format!("Microsoft.Network/{kind}"),
                    "location": body["location"], "tags": body.get("tags").cloned().unwrap_or(json!({})),
                    "sku": body.get("sku").cloned().unwrap_or(Value::Null),
                    "properties": props,
                });
                let created = w
                    .network
                    .insert(id.to_ascii_lowercase(), r.clone())
                    .is_none();
                // The network RP's answer: the resource, still Updating, and an operation to poll.
                let op = start_operation(w, Some(id.to_ascii_lowercase()));
                Answer(
                    StatusCode::from_u16(if created { 201 } else { 200 }).unwrap(),
                    r,
                    vec![(
                        "azure-asyncoperation",
                        format!("{base}/_operations/async/{op}"),
                    )],
                )
            }
            (Route::Network(kind), "DELETE") => {
                let id = format!("/{}", s.join("/")).to_ascii_lowercase();
                if !w.network.contains_key(&id) {
                    return ok(204, Value::Null);
                }
                if let Some(user) = in_use_by(w, &id) {
                    return error(
                        400,
                        "InUseCannotBeDeleted",
                        &format!("{kind} {id} is in use by {user} and cannot be deleted."),
                    );
                }
                w.network.remove(&id);
                let op = start_operation(w, None);
                Answer(
                    StatusCode::ACCEPTED,
                    Value::Null,
                    vec![
                        (
                            "azure-asyncoperation",
                            format!("{base}/_operations/async/{op}"),
                        ),
                        ("location", format!("{base}/_operations/async/{op}")),
                        ("retry-after", "1".into()),
                    ],
                )
            }
            (Route::Machine, "PUT") => {
                if let Err(why) = machine_body(w, body) {
                    return violation(w, 400, "InvalidRequestContent", format!("{what}: {why}"));
                }
                if !w
                    .groups
                    .contains_key(&(sub.clone(), s[3].to_ascii_lowercase()))
                {
                    return error(
                        404,
                        "ResourceGroupNotFound",
                        &format!("Resource group '{}' could not be found.", s[3]),
                    );
                }
                let id = format!("/{}", s.join("/"));
                w.next_id += 1;
                let n = w.next_id;
                let mut props = body["properties"].clone();
                props["provisioningState"] = json!("Creating");
                props["vmId"] = json!(format!("00000000-0000-4000-c000-{n:012}"));
                props["instanceView"] = json!({"statuses": [
                    {"code": "ProvisioningState/succeeded"}, {"code": "PowerState/running"}]});
                let vm = json!({
                    "id": id, "name": s[7], "type": "Microsoft.Compute/virtualMachines",
                    "location": body["location"], "tags": body.get("tags").cloned().unwrap_or(json!({})),
                    "identity": body["identity"], "properties": props,
                });
                let created = w.vms.insert(id.to_ascii_lowercase(), vm.clone()).is_none();
                let op = start_operation(w, Some(id.to_ascii_lowercase()));
                Answer(
                    StatusCode::from_u16(if created { 201 } else { 200 }).unwrap(),
                    vm,
                    vec![(
                        "azure-asyncoperation",
                        format!("{base}/_operations/async/{op}"),
                    )],
                )
            }
            (Route::Machine, "DELETE") => {
                let id = format!("/{}", s.join("/")).to_ascii_lowercase();
                if w.vms.remove(&id).is_none() {
                    return ok(204, Value::Null);
                }
                let op = start_operation(w, None);
                Answer(
                    StatusCode::ACCEPTED,
                    Value::Null,
                    vec![
                        (
                            "azure-asyncoperation",
                            format!("{base}/_operations/async/{op}"),
                        ),
                        ("location", format!("{base}/_operations/async/{op}")),
                    ],
                )
            }
            (Route::Machines, "GET") => {
                let prefix = format!("/subscriptions/{sub}/").to_ascii_lowercase();
                let status_only = query.get("statusOnly").map(String::as_str) == Some("true");
                let all: Vec<Value> = w
                    .vms
                    .iter()
                    .filter(|(id, _)| id.starts_with(&prefix))
                    .map(|(_, vm)| {
                        let mut vm = vm.clone();
                        if !status_only {
                            if let Some(p) = vm["properties"].as_object_mut() {
                                p.remove("instanceView");
                            }
                        }
                        vm
                    })
                    .collect();
                page(w, base, &what, query, all)
            }
            (Route::Skus, "GET") => {
                // ResourceSkus_List: `$filter` is optional and may only be `location eq '…'`.
                let location = match query.get("$filter").map(|f| {
                    f.strip_prefix("location eq '")
                        .and_then(|r| r.strip_suffix('\''))
                        .map(str::to_owned)
                        .ok_or(f.clone())
                }) {
                    None => None,
                    Some(Ok(l)) => Some(l),
                    Some(Err(f)) => {
                        return violation(
                            w,
                            400,
                            "InvalidFilter",
                            format!("{what}: $filter {f} is not location eq '…'"),
                        )
                    }
                };
                let all: Vec<Value> = REGIONS
                    .iter()
                    .filter(|r| {
                        location
                            .as_deref()
                            .is_none_or(|l| l.eq_ignore_ascii_case(r))
                    })
                    .flat_map(|r| {
                        SIZES
                            .iter()
                            .map(move |(name, cpus, gpus)| sku(r, name, *cpus, *gpus))
                    })
                    .collect();
                ok(200, json!({"value": all}))
            }
            (Route::Usages, "GET") => {
                let region = s[5].to_ascii_lowercase();
                if !REGIONS.contains(&region.as_str()) {
                    return error(
                        404,
                        "NoRegisteredProviderFound",
                        &format!("No registered resource provider found for location '{region}'."),
                    );
                }
                let all = usages(w, &sub, &region);
                page(w, base, &what, query, all)
            }
            (Route::Addresses, "GET") => {
                let prefix = format!("/subscriptions/{sub}/").to_ascii_lowercase();
                let all: Vec<Value> = w
                    .network
                    .iter()
                    .filter(|(id, r)| {
                        id.starts_with(&prefix)
                            && r["type"] == json!("Microsoft.Network/publicIPAddresses")
                    })
                    .map(|(_, r)| r.clone())
                    .collect();
                page(w, base, &what, query, all)
            }
            (_, m) => violation(
                w,
                405,
                "MethodNotAllowed",
                format!("{m} is not an operation of /{}", s.join("/")),
            ),
        }
    }
}

fn start_operation(w: &mut World, provisions: Option<String>) -> u64 {
    w.next_id += 1;
    let id = w.next_id;
    w.operations.insert(id, (w.slow_polls.max(1), provisions));
    id
}

/// An `Azure-AsyncOperation` status: InProgress while it runs, then Succeeded (and the
/// resource it provisions with it).
fn poll_async(w: &mut World, op: u64) -> Answer {
    let Some((left, provisions)) = w.operations.get_mut(&op) else {
        return error(404, "OperationNotFound", "no such operation");
    };
    *left = left.saturating_sub(1);
    if *left > 0 {
        return Answer(
            StatusCode::OK,
            json!({"status": "InProgress"}),
            vec![("retry-after", "1".into())],
        );
    }
    if let Some(id) = provisions.take() {
        for r in [w.network.get_mut(&id), w.vms.get_mut(&id)]
            .into_iter()
            .flatten()
        {
            r["properties"]["provisioningState"] = json!("Succeeded");
        }
    }
    ok(200, json!({"status": "Succeeded"}))
}

/// What still refers to a network object (a NIC to its NSG and IP, a VM to its NIC).
fn in_use_by(w: &World, id: &str) -> Option<String> {
    let refers = |v: &Value| {
        v.to_string()
            .to_ascii_lowercase()
            .contains(&format!("\"{id}\""))
    };
    w.network
        .iter()
        .filter(|(other, _)| other.as_str() != id)
        .find(|(_, r)| refers(&r["properties"]))
        .map(|(other, _)| other.clone())
        .or_else(|| {
            w.vms
                .iter()
                .find(|(_, vm)| refers(&vm["properties"]))
                .map(|(v, _)| v.clone())
        })
}

fn network_body(w: &World, kind: &str, body: &Value) -> Result<(), String> {
    let p = body.get("properties").cloned().unwrap_or(json!({}));
    match kind {
        "virtualNetworks" => {
            let prefixes = p["addressSpace"]["addressPrefixes"]
                .as_array()
                .ok_or("addressSpace.addressPrefixes is required")?;
            if prefixes.iter().any(|x| !x.is_string()) {
                return Err("address prefixes are strings".into());
            }
            for subnet in p["subnets"].as_array().into_iter().flatten() {
                object(subnet, &["name"], &["name", "properties", "id"])?;
                subnet["properties"]["addressPrefix"]
                    .as_str()
                    .ok_or("a subnet needs properties.addressPrefix")?;
            }
            Ok(())
        }
        "networkSecurityGroups" => {
            for rule in p["securityRules"].as_array().into_iter().flatten() {
                object(rule, &["name", "properties"], &["name", "properties", "id"])?;
                let r = &rule["properties"];
                object(
                    r,
                    &["protocol", "access", "priority", "direction"],
                    &[
                        "protocol",
                        "sourceAddressPrefix",
                        "sourcePortRange",
                        "destinationAddressPrefix",
                        "destinationPortRange",
                        "access",
                        "priority",
                        "direction",
                        "description",
                        "sourceAddressPrefixes",
                        "destinationAddressPrefixes",
                        "sourcePortRanges",
                        "destinationPortRanges",
                    ],
                )?;
                enum_of(r, "protocol", &["Tcp", "Udp", "Icmp", "Esp", "*", "Ah"])?;
                enum_of(r, "access", &["Allow", "Deny"])?;
                enum_of(r, "direction", &["Inbound", "Outbound"])?;
                if !r["priority"]
                    .as_i64()
                    .is_some_and(|n| (100..=4096).contains(&n))
                {
                    return Err("priority must be 100..4096".into());
                }
            }
            Ok(())
        }
        "publicIPAddresses" => {
            if let Some(sku) = body.get("sku") {
                enum_of(sku, "name", &["Basic", "Standard"])?;
            }
            enum_of_opt(Some(&p), "publicIPAllocationMethod", &["Static", "Dynamic"])?;
            enum_of_opt(Some(&p), "publicIPAddressVersion", &["IPv4", "IPv6"])
        }
        "networkInterfaces" => {
            let configs = p["ipConfigurations"]
                .as_array()
                .ok_or("ipConfigurations is required")?;
            for c in configs {
                let cp = &c["properties"];
                let subnet = cp["subnet"]["id"]
                    .as_str()
                    .ok_or("an IP configuration needs a subnet id")?;
                let vnet = subnet.to_ascii_lowercase();
                let vnet = vnet.split("/subnets/").next().unwrap_or("");
                if !w.network.contains_key(vnet) {
                    return Err(format!("subnet {subnet} does not exist"));
                }
                if let Some(ip) = cp["publicIPAddress"]["id"].as_str() {
                    if !w.network.contains_key(&ip.to_ascii_lowercase()) {
                        return Err(format!("public IP {ip} does not exist"));
                    }
                }
                enum_of_opt(
                    Some(cp),
                    "privateIPAllocationMethod",
                    &["Static", "Dynamic"],
                )?;
            }
            if let Some(nsg) = p["networkSecurityGroup"]["id"].as_str() {
                if !w.network.contains_key(&nsg.to_ascii_lowercase()) {
                    return Err(format!("network security group {nsg} does not exist"));
                }
            }
            Ok(())
        }
        _ => Err(format!("{kind} is not a network type anycloud uses")),
    }
}

fn machine_body(w: &World, body: &Value) -> Result<(), String> {
    object(
        body,
        &["location", "properties"],
        &[
            "location",
            "tags",
            "identity",
            "properties",
            "zones",
            "plan",
        ],
    )?;
    tags(body)?;
    let p = &body["properties"];
    object(
        p,
        &[
            "hardwareProfile",
            "storageProfile",
            "osProfile",
            "networkProfile",
        ],
        &[
            "hardwareProfile",
            "storageProfile",
            "osProfile",
            "networkProfile",
            "priority",
            "evictionPolicy",
            "billingProfile",
            "diagnosticsProfile",
            "userData",
        ],
    )?;
    p["hardwareProfile"]["vmSize"]
        .as_str()
        .ok_or("hardwareProfile.vmSize is required")?;
    let image = &p["storageProfile"]["imageReference"];
    for k in ["publisher", "offer", "sku", "version"] {
        image[k]
            .as_str()
            .ok_or(format!("imageReference.{k} is required"))?;
    }
    let disk = &p["storageProfile"]["osDisk"];
    enum_of(disk, "createOption", &["FromImage", "Empty", "Attach"])?;
    enum_of_opt(Some(disk), "deleteOption", &["Delete", "Detach"])?;
    if let Some(gb) = disk.get("diskSizeGB") {
        if !gb.is_u64() {
            return Err("osDisk.diskSizeGB is an integer".into());
        }
    }
    let os = &p["osProfile"];
    os["adminUsername"]
        .as_str()
        .filter(|u| *u != "root")
        .ok_or("osProfile.adminUsername is required and may not be root")?;
    let linux = &os["linuxConfiguration"];
    if linux["disablePasswordAuthentication"] != json!(true) || os.get("adminPassword").is_some() {
        return Err("anycloud's VMs use SSH keys only".into());
    }
    let keys = linux["ssh"]["publicKeys"]
        .as_array()
        .ok_or("linuxConfiguration.ssh.publicKeys is required")?;
    for k in keys {
        object(k, &["path", "keyData"], &["path", "keyData"])?;
    }
    for nic in p["networkProfile"]["networkInterfaces"]
        .as_array()
        .ok_or("networkProfile.networkInterfaces is required")?
    {
        let id = nic["id"]
            .as_str()
            .ok_or("a network interface needs an id")?;
        if !w.network.contains_key(&id.to_ascii_lowercase()) {
            return Err(format!("network interface {id} does not exist"));
        }
    }
    enum_of_opt(Some(p), "priority", &["Regular", "Low", "Spot"])?;
    enum_of_opt(Some(p), "evictionPolicy", &["Deallocate", "Delete"])?;
    if p.get("evictionPolicy").is_some()
        && p["priority"] != json!("Spot")
        && p["priority"] != json!("Low")
    {
        return Err("evictionPolicy applies to Spot VMs only".into());
    }
    if let Some(identity) = body.get("identity") {
        enum_of(
            identity,
            "type",
            &[
                "SystemAssigned",
                "UserAssigned",
                "SystemAssigned, UserAssigned",
                "None",
            ],
        )?;
        for id in identity["userAssignedIdentities"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if !w.identities.contains_key(&id.to_ascii_lowercase()) {
                return Err(format!("user-assigned identity {id} does not exist"));
            }
        }
    }
    Ok(())
}

/// The Location poll of a storage account create: 202 while it provisions, then the account.
fn poll_account(w: &mut World, name: &str) -> Answer {
    match w.accounts.get_mut(name) {
        Some((_, _, account, left)) => {
            if *left > 0 {
                *left -= 1;
                if *left > 0 {
                    return Answer(
                        StatusCode::ACCEPTED,
                        Value::Null,
                        vec![("retry-after", "1".into())],
                    );
                }
            }
            ok(200, account.clone())
        }
        None => error(404, "ResourceNotFound", "no such operation"),
    }
}

fn live_account(w: &World, sub: &str, group: &str, account: &str) -> Result<(), Answer> {
    match w.accounts.get(account) {
        Some((s2, g, _, 0)) if s2 == sub && g.eq_ignore_ascii_case(group) => Ok(()),
        _ => Err(error(
            404,
            "ResourceNotFound",
            &format!("The storage account {account} was not found."),
        )),
    }
}

fn scope_exists(w: &World, scope: &str) -> bool {
    let s: Vec<&str> = scope.trim_start_matches('/').split('/').collect();
    if s.len() == 12 {
        return w
            .containers
            .contains_key(&(s[7].to_owned(), s[11].to_owned()));
    }
    s.len() == 2
}

fn page(
    w: &mut World,
    base: &str,
    what: &str,
    query: &BTreeMap<String, String>,
    all: Vec<Value>,
) -> Answer {
    let start: usize = query
        .get("$skiptoken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let size = w.page_size.max(1);
    let value: Vec<Value> = all.iter().skip(start).take(size).cloned().collect();
    let mut body = json!({"value": value});
    if start + size < all.len() {
        let path = what.split_once(' ').map(|(_, p)| p).unwrap_or("");
        let mut q: Vec<(String, String)> = query
            .iter()
            .filter(|(k, _)| *k != "$skiptoken")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        q.push(("$skiptoken".into(), (start + size).to_string()));
        let qs = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(q)
            .finish();
        body["nextLink"] = json!(format!("{base}{path}?{qs}"));
    }
    ok(200, body)
}

// The schemas' checks.

fn object(v: &Value, required: &[&str], known: &[&str]) -> Result<(), String> {
    let Some(o) = v.as_object() else {
        return Err("the body must be a JSON object".into());
    };
    for r in required {
        if !o.contains_key(*r) {
            return Err(format!("'{r}' is required"));
        }
    }
    for k in o.keys() {
        if !known.contains(&k.as_str()) {
            return Err(format!("'{k}' is not a property of the schema"));
        }
    }
    Ok(())
}

fn enum_of(v: &Value, key: &str, allowed: &[&str]) -> Result<(), String> {
    match v.get(key).and_then(|x| x.as_str()) {
        Some(x) if allowed.contains(&x) => Ok(()),
        other => Err(format!(
            "'{key}' must be one of {allowed:?}, found {other:?}"
        )),
    }
}

fn enum_of_opt(v: Option<&Value>, key: &str, allowed: &[&str]) -> Result<(), String> {
    match v.and_then(|v| v.get(key)) {
        None => Ok(()),
        Some(_) => enum_of(v.unwrap(), key, allowed),
    }
}

fn booleans(v: Option<&Value>, keys: &[&str]) -> Result<(), String> {
    for k in keys {
        if let Some(x) = v.and_then(|v| v.get(*k)) {
            if !x.is_boolean() {
                return Err(format!("'{k}' must be a boolean"));
            }
        }
    }
    Ok(())
}

fn tags(body: &Value) -> Result<(), String> {
    string_map(body.get("tags"))
}

fn string_map(v: Option<&Value>) -> Result<(), String> {
    match v {
        None => Ok(()),
        Some(Value::Object(m)) if m.values().all(|x| x.is_string()) => Ok(()),
        Some(_) => Err("tags and metadata are maps of strings".into()),
    }
}

fn account_name(n: &str) -> Result<(), String> {
    let ok = (3..=24).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    ok.then_some(())
        .ok_or_else(|| format!("account name '{n}' breaks ^[a-z0-9]{{3,24}}$"))
}

fn container_name(n: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !n.starts_with('-')
        && !n.ends_with('-')
        && !n.contains("--");
    ok.then_some(())
        .ok_or_else(|| format!("container name '{n}' breaks the container naming rules"))
}

fn group_name(n: &str) -> Result<(), String> {
    let ok = (1..=90).contains(&n.len())
        && n.chars()
            .all(|c| c.is_alphanumeric() || "-_.()".contains(c))
        && !n.ends_with('.');
    ok.then_some(())
        .ok_or_else(|| format!("resource group name '{n}' breaks ^[-\\w\\._\\(\\)]+$"))
}

fn identity_name(n: &str) -> Result<(), String> {
    let ok = (3..=128).contains(&n.len())
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then_some(())
        .ok_or_else(|| format!("identity name '{n}' breaks ^[a-zA-Z0-9][a-zA-Z0-9_-]{{2,127}}$"))
}

fn guid(n: &str) -> Result<(), String> {
    let ok = n.len() == 36
        && n.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    ok.then_some(())
        .ok_or_else(|| format!("role assignment name '{n}' is not a GUID"))
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..(chunk.len() + 1) {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A token for the blob service as Entra ID issues it to the operator's service principal
/// (unsigned: Azurite's basic OAuth checks the issuer, the audience and the lifetime).
pub fn storage_token() -> String {
    storage_token_for(json!({
        "appid": CLIENT_ID, "oid": OPERATOR_OBJECT_ID, "sub": OPERATOR_OBJECT_ID,
        "tid": TENANT, "idtyp": "app",
    }))
}

/// A token for the blob service with `claims` (who it is for) besides the audience, issuer
/// and lifetime Entra ID puts in every token.
pub fn storage_token_for(mut claims: Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = b64url(br#"{"alg":"RS256","typ":"JWT"}"#);
    claims["aud"] = json!("https://storage.azure.com");
    claims["iss"] = json!(format!("https://sts.windows.net/{TENANT}/"));
    claims["iat"] = json!(now - 60);
    claims["nbf"] = json!(now - 60);
    claims["exp"] = json!(now + 3600);
    format!(
        "{header}.{}.{}",
        b64url(claims.to_string().as_bytes()),
        b64url(b"not-a-signature")
    )
}
