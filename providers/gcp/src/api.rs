//! A small client of Google's JSON APIs (Cloud Storage, IAM, Compute Engine): JSON over
//! HTTPS with a bearer token, Google's error envelope classified by status and reason, lists
//! followed through `nextPageToken`, and Compute Engine's operations waited for until DONE.
//!
//! One attempt per call: the engine retries what is retryable (throttled, unavailable,
//! propagating) under its one retry policy. Waiting for an operation is not an attempt.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anycloud_provider::answers;
use anycloud_provider::{ErrorCode, ProviderError, Result};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde_json::Value;

use crate::auth::Credential;

/// How long an operation may take before anycloud stops waiting for it.
const OPERATION_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// Between two polls of an operation that `wait` handed back unfinished.
const POLL: Duration = Duration::from_secs(2);

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct Google {
    http: HttpClient,
    credential: Credential,
    calls: AtomicU64,
}

/// One answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    /// `null` for an empty body.
    pub body: Value,
}

impl Reply {
    /// Google's reason for a failure (`error.errors[0].reason`, else `error.status`).
    pub fn reason(&self) -> &str {
        let error = self.body.get("error");
        error
            .and_then(|e| e.get("errors"))
            .and_then(|e| e.get(0))
            .and_then(|e| e.get("reason"))
            .or_else(|| error.and_then(|e| e.get("status")))
            .and_then(|r| r.as_str())
            .unwrap_or("")
    }

    pub fn message(&self) -> String {
        match self.body.get("error").and_then(|e| e.get("message")) {
            Some(Value::String(m)) => m.clone(),
            _ => match &self.body {
                Value::String(s) => s.clone(),
                _ => String::new(),
            },
        }
    }
}

impl Google {
    pub fn new(credential: Credential) -> Result<Google> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| {
                ProviderError::permanent(format!(
                    "no trusted root certificates on this machine to reach Google ({e}): install ca-certificates"
                ))
            })?
            // Plain http only ever for a local endpoint given in the settings (a test's).
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Google {
            http: Client::builder(hyper_util::rt::TokioExecutor::new()).build(https),
            credential,
            calls: AtomicU64::new(0),
        })
    }

    /// Requests sent (operation polls included): what `plan -v` reports.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// One request with raw bytes; any status is returned as it is, with the body's bytes
    /// (an API's answer: at most [`answers::API_LIMIT`] of them).
    pub async fn raw(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        self.raw_bounded(method, url, headers, body, answers::API_LIMIT)
            .await
    }

    /// [`Self::raw`] whose answer may be up to `limit` bytes (a state).
    pub async fn raw_bounded(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
        limit: usize,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        // Twice at most: a cached token the service refuses is dropped and one new asked for.
        for attempt in 0..2 {
            let token = self.credential.token(&self.http).await?;
            let mut request = Request::builder()
                .method(method.clone())
                .uri(url)
                .header("authorization", format!("Bearer {token}"));
            for (k, v) in headers {
                request = request.header(*k, v);
            }
            let request = request.body(Full::new(body.clone())).map_err(|e| {
                ProviderError::new(ErrorCode::Invalid, format!("{method} {url}: {e}"))
            })?;
            self.calls.fetch_add(1, Ordering::Relaxed);
            let unavailable = |e: String| {
                ProviderError::new(
                    ErrorCode::Unavailable,
                    format!("Google: {method} {}: {e}", shown(url)),
                )
            };
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            let (parts, body) = response.into_parts();
            let bytes = answers::read(body, limit).await.map_err(|(code, e)| {
                ProviderError::new(code, format!("Google: {method} {}: {e}", shown(url)))
            })?;
            if parts.status == StatusCode::UNAUTHORIZED
                && attempt == 0
                && self.credential.forget(&token).await
            {
                continue;
            }
            return Ok((parts.status, parts.headers, bytes));
        }
        unreachable!("the second attempt returns")
    }

    /// Downloads what `url` answers into `into` frame by frame, never whole in memory;
    /// `progress` hears the bytes as they land. A failure status is an error.
    pub async fn download(
        &self,
        url: &str,
        into: &mut anycloud_provider::files::Staged,
        mut progress: impl FnMut(u64),
    ) -> Result<()> {
        let token = self.credential.token(&self.http).await?;
        let request = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| ProviderError::new(ErrorCode::Invalid, format!("GET {url}: {e}")))?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let unavailable = |e: String| {
            ProviderError::new(
                ErrorCode::Unavailable,
                format!("Google: GET {}: {e}", shown(url)),
            )
        };
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let (parts, mut body) = response.into_parts();
        if !parts.status.is_success() {
            let bytes = answers::read(body, answers::API_LIMIT)
                .await
                .map_err(|(code, e)| {
                    ProviderError::new(code, format!("Google: GET {}: {e}", shown(url)))
                })?;
            let reply = Reply {
                status: parts.status,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            return Err(error_of(&Method::GET, url, &reply));
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| unavailable(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                into.write(&data)
                    .await
                    .map_err(|e| ProviderError::permanent(format!("writing a download: {e}")))?;
                progress(data.len() as u64);
            }
        }
        Ok(())
    }

    /// One JSON request; any status is returned as it is.
    pub async fn send(&self, method: Method, url: &str, body: Option<&Value>) -> Result<Reply> {
        let mut headers = vec![("accept", "application/json".to_owned())];
        let bytes = match body {
            Some(b) => {
                headers.push(("content-type", "application/json".to_owned()));
                Bytes::from(serde_json::to_vec(b).expect("JSON"))
            }
            None => Bytes::new(),
        };
        let (status, _, bytes) = self.raw(method, url, &headers, bytes).await?;
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&bytes).chars().take(500).collect())
            })
        };
        Ok(Reply { status, body })
    }

    /// One request whose error statuses become classified errors.
    pub async fn ok(&self, method: Method, url: &str, body: Option<&Value>) -> Result<Value> {
        let reply = self.send(method.clone(), url, body).await?;
        if !reply.status.is_success() {
            return Err(error_of(&method, url, &reply));
        }
        Ok(reply.body)
    }

    /// The resource, or `None` when the API says it is not there.
    pub async fn get(&self, url: &str) -> Result<Option<Value>> {
        match self.ok(Method::GET, url, None).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is(ErrorCode::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every item of a list (the array under `key`), following `nextPageToken`.
    pub async fn list(&self, url: &str, key: &str) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page_url = match &token {
                Some(t) => format!(
                    "{url}{}pageToken={}",
                    if url.contains('?') { '&' } else { '?' },
                    encode(t)
                ),
                None => url.to_owned(),
            };
            let body = self.ok(Method::GET, &page_url, None).await?;
            if let Some(values) = body.get(key).and_then(|v| v.as_array()) {
                items.extend(values.iter().cloned());
            }
            token = body
                .get("nextPageToken")
                .and_then(|n| n.as_str())
                .filter(|n| !n.is_empty())
                .map(String::from);
            if token.is_none() {
                return Ok(items);
            }
        }
    }

    /// Deletes what `url` names; one already gone is fine. Returns the answer (an
    /// operation, for Compute Engine).
    pub async fn delete(&self, url: &str) -> Result<Option<Value>> {
        match self.ok(Method::DELETE, url, None).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is(ErrorCode::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits for a Compute Engine operation (`compute` is the API's base, e.g.
    /// `https://compute.googleapis.com/compute/v1`) until it is DONE, then fails with its
    /// error if it has one. `wait` holds each call up to two minutes on Google's side.
    pub async fn finish(&self, compute: &str, project: &str, operation: Value) -> Result<Value> {
        let op = self.done(compute, project, operation).await?;
        match op.get("error") {
            Some(error) => Err(operation_error(&op, error)),
            None => Ok(op),
        }
    }

    /// Waits for a Compute Engine operation until it is DONE and returns it as it ended,
    /// its `error` included: for a caller that acts on the error's code (a capacity code
    /// moves a VM to the next zone).
    pub async fn done(&self, compute: &str, project: &str, operation: Value) -> Result<Value> {
        let started = tokio::time::Instant::now();
        let mut op = operation;
        loop {
            if op.get("status").and_then(|s| s.as_str()) == Some("DONE") {
                return Ok(op);
            }
            if started.elapsed() > OPERATION_DEADLINE {
                return Err(ProviderError::new(
                    ErrorCode::Failed,
                    format!(
                        "Google: operation {} still not done after {} minutes",
                        op.get("name").and_then(|n| n.as_str()).unwrap_or("?"),
                        OPERATION_DEADLINE.as_secs() / 60
                    ),
                ));
            }
            let name = op
                .get("name")
                .and_then(|n| n.as_str())
                .ok_or_else(|| ProviderError::permanent("Google: an operation without a name"))?;
            let scope = match op.get("zone").and_then(|z| z.as_str()) {
                Some(zone) => format!("zones/{}", last_segment(zone)),
                None => match op.get("region").and_then(|r| r.as_str()) {
                    Some(region) => format!("regions/{}", last_segment(region)),
                    None => "global".into(),
                },
            };
            let url = format!("{compute}/projects/{project}/{scope}/operations/{name}");
            // Global operations have no `wait` in every API revision: poll them.
            let reply = if scope == "global" {
                self.send(Method::GET, &url, None).await?
            } else {
                self.send(Method::POST, &format!("{url}/wait"), None)
                    .await?
            };
            if reply.status.as_u16() == 429 || reply.status.is_server_error() {
                tokio::time::sleep(POLL).await;
                continue;
            }
            if !reply.status.is_success() {
                return Err(error_of(&Method::GET, &url, &reply));
            }
            let unfinished = reply.body.get("status").and_then(|s| s.as_str()) != Some("DONE");
            op = reply.body;
            if unfinished {
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

pub fn last_segment(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// A query parameter's value, form-encoded.
pub fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A path segment (an object's name): every byte but the unreserved ones escaped, `/` too.
pub fn segment(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn operation_error(op: &Value, error: &Value) -> ProviderError {
    let first = error.get("errors").and_then(|e| e.get(0));
    let code = first
        .and_then(|e| e.get("code"))
        .and_then(|c| c.as_str())
        .unwrap_or("");
    let message = first
        .and_then(|e| e.get("message"))
        .and_then(|c| c.as_str())
        .unwrap_or("");
    let status = op
        .get("httpErrorStatusCode")
        .and_then(|s| s.as_u64())
        .unwrap_or(0) as u16;
    ProviderError::new(
        classify(status, code),
        format!(
            "Google: {} of {} ended with {code}: {message}",
            op.get("operationType")
                .and_then(|t| t.as_str())
                .unwrap_or("an operation"),
            last_segment(op.get("targetLink").and_then(|t| t.as_str()).unwrap_or("?"))
        ),
    )
}

/// The path without its query, for messages.
fn shown(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// The codes of an instance insert that say its zone has no room for the machine (Spot or
/// standard): the VM moves to the next zone (`anycloud_provider::placement`). Not among them:
/// `QUOTA_EXCEEDED` and its kin, the project's limits, which another place would only hide.
pub const CAPACITY_CODES: &[&str] = &[
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "STOCKOUT",
];

pub fn is_capacity(code: &str) -> bool {
    CAPACITY_CODES.contains(&code)
}

/// Google's statuses and reasons, as anycloud acts on them.
pub fn classify(status: u16, reason: &str) -> ErrorCode {
    match reason {
        "rateLimitExceeded" | "userRateLimitExceeded" | "RESOURCE_EXHAUSTED" => {
            ErrorCode::Throttled
        }
        // A zone without room for the machine is a move to the next zone, never a retry
        // in place (`compute::insert_instance` acts on it before any classification).
        c if is_capacity(c) => ErrorCode::Failed,
        // Another change to the same resource is in progress.
        "resourceNotReady" | "ABORTED" => ErrorCode::Busy,
        "alreadyExists" | "ALREADY_EXISTS" => ErrorCode::AlreadyExists,
        "conditionNotMet" => ErrorCode::Conflict,
        "notFound" | "NOT_FOUND" => ErrorCode::NotFound,
        _ => match status {
            429 => ErrorCode::Throttled,
            401 | 403 => ErrorCode::Permission,
            404 => ErrorCode::NotFound,
            409 | 412 => ErrorCode::Conflict,
            400 | 405 | 411 | 413 | 415 | 422 => ErrorCode::Invalid,
            s if s >= 500 => ErrorCode::Unavailable,
            _ => ErrorCode::Failed,
        },
    }
}

/// The classified error of a failed answer, with Google's own reason and message.
pub fn error_of(method: &Method, url: &str, reply: &Reply) -> ProviderError {
    let reason = reply.reason();
    let shown_reason = if reason.is_empty() {
        reply.status.to_string()
    } else {
        reason.to_owned()
    };
    ProviderError::new(
        classify(reply.status.as_u16(), reason),
        format!(
            "Google: {method} {}: {shown_reason}: {}",
            shown(url),
            reply.message()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_decide_what_is_retried() {
        assert!(classify(429, "rateLimitExceeded").retryable());
        assert!(classify(403, "rateLimitExceeded").retryable());
        assert!(classify(503, "backendError").retryable());
        assert!(classify(409, "ABORTED").retryable());
        assert_eq!(classify(409, "conflict"), ErrorCode::Conflict);
        assert_eq!(classify(409, "alreadyExists"), ErrorCode::AlreadyExists);
        assert_eq!(classify(412, "conditionNotMet"), ErrorCode::Conflict);
        assert_eq!(classify(404, ""), ErrorCode::NotFound);
        assert!(!classify(400, "invalid").retryable());
        assert_eq!(classify(403, "forbidden"), ErrorCode::Permission);
    }
}
