//! What Azure Storage enforces and Azurite does not: which identity a bearer token is for,
//! and whether that identity's role assignments allow the request. Azurite (`--oauth basic`)
//! takes any well-formed token; in front of it, a TLS proxy (`azurite.rs`) asks this
//! authoriser about every request, and the instance metadata service of the test host mints
//! its tokens here.
//!
//! - **Tokens** carry who they are for, as Entra ID's do: `oid` (the principal's object id),
//!   `appid` (its client id) and, for a managed identity, `xms_mirid` (its resource id). The
//!   metadata service hands out the token of the identity the VM asked for (rclone's
//!   `use_msi` sends `client_id`, `object_id` or `msi_res_id` when configured), or of the VM's
//!   one user-assigned identity: the VM and its identities are the contract server's record.
//! - **Authorisation** follows Azure RBAC for blobs: `Storage Blob Data Reader` reads and
//!   lists, `Storage Blob Data Contributor` also writes and deletes, `Storage Blob Data
//!   Owner` everything; an assignment at a scope covers everything under it (a container,
//!   its account, its group, the subscription). Listing the account's containers or reading
//!   its service properties needs an assignment at the account or above. A copy needs read on
//!   its source too. The assignments are the contract server's, each effective only
//!   `propagation` after it was made, and still effective for as long after it was deleted
//!   (Azure's caches: a removal propagates too; what only such a removed assignment allowed
//!   is recorded, [`Authz::late`]). A request they do not allow gets Azure's 403
//!   `AuthorizationPermissionMismatch`, and is recorded ([`Refusal`]).
//! - The operator's service principal (the CLI's `anycloud bucket`, the test's own calls)
//!   has full access, as an account owner's would.

// Each test binary that includes it uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::contract::{self, Contract};

/// Azure's built-in roles for blob data (their role definition ids are the same in every
/// subscription): what each allows.
const ROLES: [(&str, &[Action]); 3] = [
    // Storage Blob Data Reader
    ("2a2b9908-6ea1-4ae2-8e65-a410df84e7d1", &[Action::Read]),
    // Storage Blob Data Contributor
    (
        "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        &[Action::Read, Action::Write, Action::Delete],
    ),
    // Storage Blob Data Owner
    (
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
        &[Action::Read, Action::Write, Action::Delete],
    ),
];

/// How long a new role assignment takes to be effective unless a test says otherwise.
pub const DEFAULT_PROPAGATION: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Read,
    Write,
    Delete,
}

/// A request the blob service refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub method: String,
    /// The request's path, without its query.
    pub path: String,
    /// The query (`restype=container&comp=list…`), as sent.
    pub query: String,
    /// The identity's name (its resource id's last part), or its object id.
    pub identity: String,
    pub action: Action,
    /// Would an assignment made less than the propagation delay ago have allowed it?
    pub propagating: bool,
}

struct Inner {
    propagation: Duration,
    /// The VM whose identities the test host's metadata service hands out tokens for.
    vm: Option<String>,
    refusals: Vec<Refusal>,
    /// Requests allowed only by an assignment deleted less than the propagation delay ago.
    late: Vec<Refusal>,
    /// Tokens minted, by identity name.
    minted: BTreeMap<String, usize>,
    /// Requests allowed for a managed identity.
    allowed: usize,
    next_request: u64,
}

#[derive(Clone)]
pub struct Authz {
    /// `http://IP:PORT`: `/authorize` for the blob proxy, `/imds` for the metadata service.
    pub url: String,
    arm: Contract,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Grant {
    Denied,
    /// An assignment would allow it, once it has propagated.
    Propagating,
    /// Only an assignment deleted, its removal still propagating, allows it.
    Late,
    Allowed,
}

impl Authz {
    /// An authoriser listening on `ip`, reading identities and role assignments from `arm`.
    pub fn start(arm: &Contract, ip: &str, propagation: Duration) -> Authz {
        let inner = Arc::new(Mutex::new(Inner {
            propagation,
            vm: None,
            refusals: vec![],
            late: vec![],
            minted: BTreeMap::new(),
            allowed: 0,
            next_request: 0,
        }));
        let me = Authz {
            url: String::new(),
            arm: arm.clone(),
            inner,
        };
        let server = me.clone();
        // Decisions lock the contract server's world, which may be held while it calls into
        // the blob service (a container mirrored): the server's own worker threads answer
        // the operator's request it waits for meanwhile.
        let addr = crate::common::http_server::serve(ip, move |req| {
            let server = server.clone();
            async move { server.handle(req).await }
        });
        Authz {
            url: format!("http://{addr}"),
            ..me
        }
    }

    /// Where the blob proxy asks about each request.
    pub fn authorize_url(&self) -> String {
        format!("{}/authorize", self.url)
    }

    /// Where the test host's metadata service gets its tokens.
    pub fn imds_url(&self) -> String {
        format!("{}/imds", self.url)
    }

    /// The test host stands for the VM named `vm` (in the contract server's record).
    pub fn serve_vm(&self, vm: &str) {
        self.inner.lock().unwrap().vm = Some(vm.to_owned());
    }

    pub fn refusals(&self) -> Vec<Refusal> {
        self.inner.lock().unwrap().refusals.clone()
    }

    /// The requests allowed only because an assignment's removal had not propagated yet
    /// (as refusals: what an Azure whose caches were quicker would refuse).
    pub fn late(&self) -> Vec<Refusal> {
        self.inner.lock().unwrap().late.clone()
    }

    /// Tokens minted for `identity` (by name) so far.
    pub fn minted(&self, identity: &str) -> usize {
        self.inner
            .lock()
            .unwrap()
            .minted
            .get(identity)
            .copied()
            .unwrap_or(0)
    }

    /// Requests of managed identities allowed so far.
    pub fn allowed(&self) -> usize {
        self.inner.lock().unwrap().allowed
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
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
        let bytes = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let me = self.clone();
        let (status, body) = tokio::task::spawn_blocking(move || match path.as_str() {
            "/authorize" => match serde_json::from_slice::<Value>(&bytes) {
                Ok(ask) => (200, me.decide(&ask)),
                Err(e) => (400, json!({"error": e.to_string()})),
            },
            "/imds" => me.mint(&query),
            _ => (404, json!({"error": "no such route"})),
        })
        .await
        .unwrap_or((500, json!({"error": "the authoriser panicked"})));
        Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
            .unwrap()
    }

    /// The instance metadata service's token endpoint, for the VM this host stands for.
    fn mint(&self, query: &BTreeMap<String, String>) -> (u16, Value) {
        let not_found = |why: &str| {
            (
                400,
                json!({"error": "invalid_request", "error_description": why}),
            )
        };
        let Some(resource) = query.get("resource") else {
            return not_found("Required query variable 'resource' is missing");
        };
        let vm = self.inner.lock().unwrap().vm.clone();
        let Some(vm) = vm else {
            return not_found("Identity not found");
        };
        // (resource id, principal id, client id) of each of the VM's identities.
        let identities: Vec<(String, String, String)> = self.arm.with(|w| {
            let Some(machine) = w.vms.values().find(|m| {
                m["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&vm))
            }) else {
                return vec![];
            };
            machine["identity"]["userAssignedIdentities"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(id, _)| {
                    let i = w.identities.get(&id.to_ascii_lowercase())?;
                    Some((
                        i["id"].as_str()?.to_owned(),
                        i["properties"]["principalId"].as_str()?.to_owned(),
                        i["properties"]["clientId"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        });
        let asked = |k: &str| query.get(k).map(|v| v.to_ascii_lowercase());
        let chosen: Vec<&(String, String, String)> =
            match (
                asked("client_id"),
                asked("object_id"),
                asked("msi_res_id").or_else(|| asked("mi_res_id")),
            ) {
                (Some(c), _, _) => identities
                    .iter()
                    .filter(|i| i.2.to_ascii_lowercase() == c)
                    .collect(),
                (_, Some(o), _) => identities
                    .iter()
                    .filter(|i| i.1.to_ascii_lowercase() == o)
                    .collect(),
                (_, _, Some(r)) => identities
                    .iter()
                    .filter(|i| i.0.to_ascii_lowercase() == r)
                    .collect(),
                _ if identities.len() > 1 => return not_found(
                    "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request",
                ),
                _ => identities.iter().collect(),
            };
        let Some((id, principal, client)) = chosen.first() else {
            return not_found("Identity not found");
        };
        let name = id.rsplit('/').next().unwrap_or(id).to_owned();
        *self.inner.lock().unwrap().minted.entry(name).or_default() += 1;
        let token = contract::storage_token_for(json!({
            "appid": client, "oid": principal, "sub": principal, "xms_mirid": id,
            "tid": contract::TENANT, "idtyp": "app",
        }));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        (
            200,
            json!({
                "access_token": token, "client_id": client,
                "expires_in": "3599", "ext_expires_in": "3599",
                "expires_on": (now + 3599).to_string(), "not_before": (now - 60).to_string(),
                "resource": resource, "token_type": "Bearer",
            }),
        )
    }

    /// The verdict on one request to the blob service: `{"allow": true}`, or the answer to
    /// give instead.
    fn decide(&self, ask: &Value) -> Value {
        let field = |k: &str| ask[k].as_str().unwrap_or("").to_owned();
        let (method, target, host) = (field("method"), field("target"), field("host"));
        // Without a bearer token (or with one that is not a JWT) Azurite judges alone.
        let Some(claims) = field("authorization")
            .strip_prefix("Bearer ")
            .and_then(claims)
        else {
            return json!({"allow": true});
        };
        let claim = |k: &str| claims[k].as_str().unwrap_or("").to_owned();
        // The operator's own service principal: full access, as an account owner's.
        // (Decided before anything is locked: the contract server may be waiting for it.)
        if claim("appid") == contract::CLIENT_ID {
            return json!({"allow": true});
        }
        let principal = claim("oid");
        let identity = match claims["xms_mirid"].as_str() {
            Some(id) => id.rsplit('/').next().unwrap_or(id).to_owned(),
            None => principal.clone(),
        };
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let account = host.split('.').next().unwrap_or("").to_owned();
        let action = match method.as_str() {
            "GET" | "HEAD" | "OPTIONS" => Action::Read,
            "DELETE" => Action::Delete,
            _ => Action::Write,
        };
        let container = path.trim_start_matches('/').split('/').next().unwrap_or("");
        let mut needs = vec![(account.clone(), container.to_owned(), action)];
        // A copy reads its source (a URL in the same or another account).
        let source = field("copy_source");
        if let Ok(u) = url::Url::parse(&source) {
            let from = u.host_str().unwrap_or("").split('.').next().unwrap_or("");
            let c = u
                .path()
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or("");
            needs.push((from.to_owned(), c.to_owned(), Action::Read));
        }
        let propagation = self.inner.lock().unwrap().propagation;
        let grants: Vec<Grant> = self.arm.with(|w| {
            needs
                .iter()
                .map(|(account, container, action)| {
                    let Some((sub, group, _, _)) = w.accounts.get(account.as_str()) else {
                        return Grant::Denied;
                    };
                    let mut scope = format!(
                        "/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.Storage/storageAccounts/{account}"
                    );
                    if !container.is_empty() {
                        scope.push_str(&format!("/blobServices/default/containers/{container}"));
                    }
                    let scope = scope.to_ascii_lowercase();
                    let permits = |a: &Value| {
                        let p = &a["properties"];
                        let covers = p["scope"].as_str().is_some_and(|s| {
                            let s = s.to_ascii_lowercase();
                            scope == s || scope.starts_with(&format!("{}/", s.trim_end_matches('/')))
                        });
                        let role = p["roleDefinitionId"]
                            .as_str()
                            .and_then(|d| d.rsplit('/').next())
                            .unwrap_or("")
                            .to_ascii_lowercase();
                        let permits = ROLES
                            .iter()
                            .any(|(guid, actions)| *guid == role && actions.contains(action));
                        covers && permits && p["principalId"] == json!(principal)
                    };
                    let made = w.assignments.iter().filter(|(_, a)| permits(a)).map(|(name, _)| {
                        match w.assigned_at.get(name) {
                            Some(t) if t.elapsed() < propagation => Grant::Propagating,
                            _ => Grant::Allowed,
                        }
                    });
                    let removed = w
                        .revoked
                        .values()
                        .filter(|(a, at)| at.elapsed() < propagation && permits(a))
                        .map(|_| Grant::Late);
                    made.chain(removed).max().unwrap_or(Grant::Denied)
                })
                .collect()
        });
        let verdict = grants.iter().copied().min().unwrap_or(Grant::Allowed);
        let mut inner = self.inner.lock().unwrap();
        let refusal = Refusal {
            method: method.clone(),
            path: path.to_owned(),
            query: query.to_owned(),
            identity,
            action,
            propagating: verdict == Grant::Propagating,
        };
        match verdict {
            Grant::Allowed => {
                inner.allowed += 1;
                return json!({"allow": true});
            }
            Grant::Late => {
                inner.allowed += 1;
                inner.late.push(refusal);
                return json!({"allow": true});
            }
            Grant::Propagating | Grant::Denied => inner.refusals.push(refusal),
        }
        inner.next_request += 1;
        let request_id = format!("5eed0000-701e-0000-0000-{:012}", inner.next_request);
        let time = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        let message =
            "This request is not authorized to perform this operation using this permission.";
        json!({
            "allow": false,
            "status": 403,
            "reason": message,
            "headers": [
                ["Content-Type", "application/xml"],
                ["Server", "Windows-Azure-Blob/1.0 Microsoft-HTTPAPI/2.0"],
                ["x-ms-error-code", "AuthorizationPermissionMismatch"],
                ["x-ms-request-id", request_id],
                ["x-ms-version", "2021-08-06"],
            ],
            "body": format!(
                "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthorizationPermissionMismatch</Code><Message>{message}\nRequestId:{request_id}\nTime:{time}</Message></Error>"
            ),
        })
    }
}

/// The claims of a JWT (its signature unchecked, as Azurite's basic OAuth does).
fn claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&b64url_decode(payload)?).ok()
}

fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        } as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
