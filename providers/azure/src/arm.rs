//! A small typed client of Azure Resource Manager: JSON over HTTPS with a bearer token,
//! `api-version` on every call, errors classified by their invariant `error.code`, and
//! long-running operations followed to the end (`Azure-AsyncOperation`, `Location`,
//! `provisioningState`, a 202 with an empty body, `Retry-After`).
//!
//! One attempt per call: the engine retries what is retryable (throttled, unavailable,
//! propagating) under the one retry policy, honouring the `Retry-After` passed on here.
//! Polls are not attempts: an operation in progress is waited for, and a throttled poll is
//! polled again after the time asked.

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

/// The public cloud's Resource Manager.
pub const PUBLIC_CLOUD: &str = "https://management.azure.com";

/// How long a long-running operation may take before anycloud stops waiting for it.
const OPERATION_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// Between two polls when the service does not say (`Retry-After`).
const DEFAULT_POLL: Duration = Duration::from_secs(5);
/// A `Retry-After` longer than this is shortened: a stuck poll must not stall an apply.
const MAX_POLL: Duration = Duration::from_secs(60);

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

pub struct Arm {
    base: String,
    http: Client<Https, Full<Bytes>>,
    credential: Credential,
    calls: AtomicU64,
}

/// One answer of Resource Manager.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// `null` for an empty body.
    pub body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn retry_after(&self) -> Option<Duration> {
        // Integer seconds only (the RPC guide); no HTTP dates.
        self.header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
    }
}

impl Arm {
    pub fn new(base: &str, credential: Credential) -> Result<Arm> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| {
                ProviderError::permanent(format!(
                    "no trusted root certificates on this machine to reach Azure ({e}): install ca-certificates"
                ))
            })?
            // Plain http only ever for a local endpoint given in the settings (a test's).
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Arm {
            base: base.trim_end_matches('/').to_owned(),
            http: Client::builder(hyper_util::rt::TokioExecutor::new()).build(https),
            credential,
            calls: AtomicU64::new(0),
        })
    }

    /// Requests sent (polls included): what `plan -v` reports.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn url(&self, path_or_url: &str, api_version: Option<&str>) -> String {
        let mut url = if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_owned()
        } else {
            format!("{}{}", self.base, path_or_url)
        };
        if let Some(v) = api_version {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str("api-version=");
            url.push_str(v);
        }
        url
    }

    /// One request; any status is returned as it is.
    pub async fn send(
        &self,
        method: Method,
        path_or_url: &str,
        api_version: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply> {
        let url = self.url(path_or_url, api_version);
        let token = self.credential.token(&self.http).await?;
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).expect("JSON")),
            None => Bytes::new(),
        };
        let mut request = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "application/json");
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(Full::new(bytes))
            .map_err(|e| ProviderError::new(ErrorCode::Invalid, format!("{method} {url}: {e}")))?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let response = self.http.request(request).await.map_err(|e| {
            ProviderError::new(
                ErrorCode::Unavailable,
                format!("Azure Resource Manager: {method} {}: {e}", shown(&url)),
            )
        })?;
        let (parts, body) = response.into_parts();
        let bytes = answers::read(body, answers::API_LIMIT)
            .await
            .map_err(|(code, e)| {
                ProviderError::new(
                    code,
                    format!("Azure Resource Manager: {method} {}: {e}", shown(&url)),
                )
            })?;
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&bytes).chars().take(500).collect())
            })
        };
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// One request with raw bytes and headers of the caller's (the blob service's REST
    /// API); any status is returned as it is, with the body's bytes (an API's answer: at
    /// most [`answers::API_LIMIT`] of them).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        self.raw_bounded(method, path, headers, body, answers::API_LIMIT)
            .await
    }

    /// [`Self::raw`] whose answer may be up to `limit` bytes (a state).
    pub async fn raw_bounded(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
        limit: usize,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        let url = self.url(path, None);
        let token = self.credential.token(&self.http).await?;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header("authorization", format!("Bearer {token}"));
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| ProviderError::new(ErrorCode::Invalid, format!("{method} {url}: {e}")))?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let unavailable = |e: String| {
            ProviderError::new(
                ErrorCode::Unavailable,
                format!("Azure: {method} {}: {e}", shown(&url)),
            )
        };
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let bytes = answers::read(body, limit).await.map_err(|(code, e)| {
            ProviderError::new(code, format!("Azure: {method} {}: {e}", shown(&url)))
        })?;
        Ok((parts.status, parts.headers, bytes))
    }

    /// GETs `path` into `into` frame by frame, never whole in memory; `progress` hears the
    /// bytes as they land. A failure status comes back with its body for the caller to read.
    pub async fn download(
        &self,
        path: &str,
        headers: &[(&str, String)],
        into: &mut anycloud_provider::files::Staged,
        mut progress: impl FnMut(u64),
    ) -> Result<std::result::Result<(), (StatusCode, Bytes)>> {
        let url = self.url(path, None);
        let token = self.credential.token(&self.http).await?;
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(&url)
            .header("authorization", format!("Bearer {token}"));
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| ProviderError::new(ErrorCode::Invalid, format!("GET {url}: {e}")))?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let unavailable = |e: String| {
            ProviderError::new(
                ErrorCode::Unavailable,
                format!("Azure: GET {}: {e}", shown(&url)),
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
                    ProviderError::new(code, format!("Azure: GET {}: {e}", shown(&url)))
                })?;
            return Ok(Err((parts.status, bytes)));
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
        Ok(Ok(()))
    }

    /// One request whose error statuses become classified errors.
    async fn ok(
        &self,
        method: Method,
        path: &str,
        api_version: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply> {
        let reply = self.send(method.clone(), path, api_version, body).await?;
        if reply.status.is_client_error() || reply.status.is_server_error() {
            return Err(error_of(&method, path, &reply));
        }
        Ok(reply)
    }

    /// The resource, or `None` when Resource Manager says it is not there.
    pub async fn get(&self, path: &str, api_version: &str) -> Result<Option<Value>> {
        match self.ok(Method::GET, path, Some(api_version), None).await {
            Ok(reply) => Ok(Some(reply.body)),
            Err(e) if e.is(ErrorCode::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every item of a list, following `nextLink`.
    pub async fn list(&self, path: &str, api_version: &str) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut next = Some(self.url(path, Some(api_version)));
        while let Some(url) = next.take() {
            let reply = self.ok(Method::GET, &url, None, None).await?;
            if let Some(values) = reply.body.get("value").and_then(|v| v.as_array()) {
                items.extend(values.iter().cloned());
            }
            next = reply
                .body
                .get("nextLink")
                .and_then(|n| n.as_str())
                .filter(|n| !n.is_empty())
                .map(String::from);
        }
        Ok(items)
    }

    pub async fn post(&self, path: &str, api_version: &str, body: &Value) -> Result<Value> {
        let reply = self
            .ok(Method::POST, path, Some(api_version), Some(body))
            .await?;
        self.finish(&Method::POST, path, api_version, reply).await
    }

    /// Creates or updates the resource at `path`, waiting until it is provisioned.
    pub async fn put(&self, path: &str, api_version: &str, body: &Value) -> Result<Value> {
        let reply = self
            .ok(Method::PUT, path, Some(api_version), Some(body))
            .await?;
        self.finish(&Method::PUT, path, api_version, reply).await
    }

    /// Follows the answer of a PUT sent with [`Arm::send`] (whose failure the caller has
    /// looked at first) to its end.
    pub async fn finish_put(&self, path: &str, api_version: &str, reply: Reply) -> Result<Value> {
        if reply.status.is_client_error() || reply.status.is_server_error() {
            return Err(error_of(&Method::PUT, path, &reply));
        }
        self.finish(&Method::PUT, path, api_version, reply).await
    }

    /// Deletes the resource at `path`, waiting until it is gone; one already gone is fine.
    pub async fn delete(&self, path: &str, api_version: &str) -> Result<()> {
        let reply = match self.ok(Method::DELETE, path, Some(api_version), None).await {
            Ok(reply) => reply,
            Err(e) if e.is(ErrorCode::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        match self.finish(&Method::DELETE, path, api_version, reply).await {
            Err(e) if e.is(ErrorCode::NotFound) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Follows a long-running operation to its end and returns the final resource (PUT),
    /// the operation's result (POST) or `null` (DELETE).
    async fn finish(
        &self,
        method: &Method,
        path: &str,
        api_version: &str,
        reply: Reply,
    ) -> Result<Value> {
        let started = tokio::time::Instant::now();
        let async_op = reply.header("azure-asyncoperation").map(String::from);
        let location = reply.header("location").map(String::from);
        // An operation to poll, whatever the success code (network PUTs answer 200 or 201
        // with the resource still `Updating` and `Azure-AsyncOperation`).
        if let Some(status_url) = async_op {
            self.wait_for_status(&status_url, reply.retry_after(), started)
                .await
                .map_err(|e| in_operation(method, path, e))?;
            return self.final_state(method, path, api_version).await;
        }
        if reply.status == StatusCode::ACCEPTED {
            if let Some(location) = location {
                let done = self
                    .wait_for_location(&location, reply.retry_after(), started)
                    .await
                    .map_err(|e| in_operation(method, path, e))?;
                return match done {
                    Value::Null => self.final_state(method, path, api_version).await,
                    body => Ok(body),
                };
            }
            // Accepted with nothing to poll: the resource itself says when it is done.
            return self.final_state(method, path, api_version).await;
        }
        if *method == Method::PUT {
            if let Some(state) = provisioning_state(&reply.body) {
                if !is_terminal(state) {
                    return self
                        .wait_for_provisioning(path, api_version, reply.retry_after(), started)
                        .await;
                }
                check_succeeded(state, path, &reply.body)?;
            }
        }
        Ok(reply.body)
    }

    /// What a finished operation leaves: the resource after a PUT, nothing after a DELETE.
    async fn final_state(&self, method: &Method, path: &str, api_version: &str) -> Result<Value> {
        if *method == Method::DELETE || *method == Method::POST {
            return Ok(Value::Null);
        }
        let started = tokio::time::Instant::now();
        self.wait_for_provisioning(path, api_version, None, started)
            .await
    }

    /// GETs the resource until its `provisioningState` is terminal.
    async fn wait_for_provisioning(
        &self,
        path: &str,
        api_version: &str,
        mut wait: Option<Duration>,
        started: tokio::time::Instant,
    ) -> Result<Value> {
        loop {
            if let Some(w) = wait {
                pause(w, started, path).await?;
            }
            let reply = self
                .send(Method::GET, path, Some(api_version), None)
                .await?;
            if let Some(w) = still_busy(&reply) {
                wait = Some(w);
                continue;
            }
            if !reply.status.is_success() {
                return Err(error_of(&Method::GET, path, &reply));
            }
            match provisioning_state(&reply.body) {
                Some(state) if !is_terminal(state) => {
                    wait = Some(reply.retry_after().unwrap_or(DEFAULT_POLL));
                }
                Some(state) => {
                    check_succeeded(state, path, &reply.body)?;
                    return Ok(reply.body);
                }
                None => return Ok(reply.body),
            }
        }
    }

    /// Polls an `Azure-AsyncOperation` URL until its `status` is terminal.
    async fn wait_for_status(
        &self,
        url: &str,
        first: Option<Duration>,
        started: tokio::time::Instant,
    ) -> Result<()> {
        let mut wait = first.unwrap_or(DEFAULT_POLL);
        loop {
            pause(wait, started, url).await?;
            let reply = self.send(Method::GET, url, None, None).await?;
            if let Some(w) = still_busy(&reply) {
                wait = w;
                continue;
            }
            if !reply.status.is_success() {
                return Err(error_of(&Method::GET, url, &reply));
            }
            let status = reply
                .body
                .get("status")
                .and_then(|s| s.as_str())
                .unwrap_or("InProgress");
            match status {
                "Succeeded" => return Ok(()),
                "Failed" | "Canceled" => return Err(operation_error(status, &reply.body)),
                _ => wait = reply.retry_after().unwrap_or(DEFAULT_POLL),
            }
        }
    }

    /// Polls a `Location` URL while it answers 202; returns what it finally answers.
    async fn wait_for_location(
        &self,
        url: &str,
        first: Option<Duration>,
        started: tokio::time::Instant,
    ) -> Result<Value> {
        let mut wait = first.unwrap_or(DEFAULT_POLL);
        loop {
            pause(wait, started, url).await?;
            let reply = self.send(Method::GET, url, None, None).await?;
            if let Some(w) = still_busy(&reply) {
                wait = w;
                continue;
            }
            if reply.status == StatusCode::ACCEPTED {
                wait = reply.retry_after().unwrap_or(DEFAULT_POLL);
                continue;
            }
            if !reply.status.is_success() {
                return Err(error_of(&Method::GET, url, &reply));
            }
            return Ok(reply.body);
        }
    }
}

/// A poll that was throttled or met a passing fault: poll again after this long.
fn still_busy(reply: &Reply) -> Option<Duration> {
    let s = reply.status;
    (s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error())
        .then(|| reply.retry_after().unwrap_or(DEFAULT_POLL))
}

async fn pause(wait: Duration, started: tokio::time::Instant, what: &str) -> Result<()> {
    if started.elapsed() > OPERATION_DEADLINE {
        return Err(ProviderError::new(
            ErrorCode::Failed,
            format!(
                "Azure: {} still not finished after {} minutes",
                shown(what),
                OPERATION_DEADLINE.as_secs() / 60
            ),
        ));
    }
    tokio::time::sleep(wait.min(MAX_POLL)).await;
    Ok(())
}

fn provisioning_state(body: &Value) -> Option<&str> {
    body.get("properties")?.get("provisioningState")?.as_str()
}

fn is_terminal(state: &str) -> bool {
    matches!(state, "Succeeded" | "Failed" | "Canceled")
}

fn check_succeeded(state: &str, path: &str, body: &Value) -> Result<()> {
    if state == "Succeeded" {
        return Ok(());
    }
    Err(ProviderError::new(
        ErrorCode::Failed,
        format!("Azure: {} ended {state}{}", shown(path), detail(body)),
    ))
}

fn operation_error(status: &str, body: &Value) -> ProviderError {
    let code = body
        .get("error")
        .and_then(|e| e.get("code"))
        .and_then(|c| c.as_str())
        .unwrap_or("");
    ProviderError::new(
        classify(0, code),
        format!("the operation ended {status}{}", detail(body)),
    )
}

fn in_operation(method: &Method, path: &str, e: ProviderError) -> ProviderError {
    ProviderError {
        message: format!("Azure: {method} {}: {}", shown(path), e.message),
        ..e
    }
}

fn detail(body: &Value) -> String {
    let Some(error) = body.get("error") else {
        return String::new();
    };
    let code = error.get("code").and_then(|c| c.as_str()).unwrap_or("");
    let message = error.get("message").and_then(|c| c.as_str()).unwrap_or("");
    format!(": {code}: {message}")
}

/// The path without its query, for messages.
fn shown(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// Resource Manager's error codes, as anycloud acts on them.
pub(crate) fn classify(status: u16, code: &str) -> ErrorCode {
    match code {
        "StorageAccountAlreadyTaken" | "StorageAccountIsNotProvisioned" => ErrorCode::Conflict,
        "StorageAccountAlreadyExists" | "RoleAssignmentExists" | "ContainerAlreadyExists" => {
            ErrorCode::AlreadyExists
        }
        // An identity made a moment ago is not in Entra ID everywhere yet.
        "PrincipalNotFound" => ErrorCode::Propagating,
        "AnotherOperationInProgress" | "OperationNotAllowed" if status == 409 => ErrorCode::Busy,
        "ResourceNotFound" | "ResourceGroupNotFound" | "ContainerNotFound" | "NotFound" => {
            ErrorCode::NotFound
        }
        "AuthorizationFailed"
        | "AuthenticationFailed"
        | "InvalidAuthenticationToken"
        | "LinkedAuthorizationFailed" => ErrorCode::Permission,
        _ => match status {
            429 => ErrorCode::Throttled,
            401 | 403 => ErrorCode::Permission,
            404 => ErrorCode::NotFound,
            409 => ErrorCode::Conflict,
            400 | 405 | 411 | 412 | 413 | 415 | 422 => ErrorCode::Invalid,
            s if s >= 500 => ErrorCode::Unavailable,
            _ => ErrorCode::Failed,
        },
    }
}

/// The classified error of a failed answer, with Azure's own code and message.
pub fn error_of(method: &Method, path: &str, reply: &Reply) -> ProviderError {
    let code = reply
        .body
        .get("error")
        .and_then(|e| e.get("code"))
        .and_then(|c| c.as_str())
        .unwrap_or("");
    let message = reply
        .body
        .get("error")
        .and_then(|e| e.get("message"))
        .and_then(|c| c.as_str())
        .map(String::from)
        .unwrap_or_else(|| match &reply.body {
            Value::String(s) => s.clone(),
            _ => String::new(),
        });
    let class = classify(reply.status.as_u16(), code);
    let shown_code = if code.is_empty() {
        reply.status.to_string()
    } else {
        code.to_owned()
    };
    ProviderError::new(
        class,
        format!("Azure: {method} {}: {shown_code}: {message}", shown(path)),
    )
    .with_retry_after(reply.retry_after())
}

/// Resource Manager's own code of a failed answer (`error.code`), for a caller that must
/// tell two conflicts apart.
pub fn code_of(reply: &Reply) -> &str {
    reply
        .body
        .get("error")
        .and_then(|e| e.get("code"))
        .and_then(|c| c.as_str())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_decide_what_is_retried() {
        assert_eq!(
            classify(409, "StorageAccountAlreadyTaken"),
            ErrorCode::Conflict
        );
        assert_eq!(
            classify(409, "StorageAccountAlreadyExists"),
            ErrorCode::AlreadyExists
        );
        assert_eq!(
            classify(409, "RoleAssignmentExists"),
            ErrorCode::AlreadyExists
        );
        assert_eq!(classify(400, "PrincipalNotFound"), ErrorCode::Propagating);
        assert!(classify(429, "").retryable());
        assert!(classify(503, "ServerBusy").retryable());
        assert!(!classify(400, "InvalidParameter").retryable());
        assert_eq!(classify(403, "AuthorizationFailed"), ErrorCode::Permission);
    }
}
