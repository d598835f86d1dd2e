//! `state: { azureblob: { storage_account, container, key } }`: the state in a blob
//! container, locked and fenced by the blob service's conditional writes (`If-None-Match: *`
//! to create the lock and the journal's batches, `If-Match` with the ETag read to replace
//! the state or delete the lock). Signed in as the operator, as `anycloud bucket` is.

use std::sync::Arc;

use anycloud_provider::doc::{Checks, Doc};
use anycloud_provider::objects::{Condition, Object, ObjectStore};
use anycloud_provider::{ErrorCode, ProviderError, Result};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::arm::Arm;
use crate::blobs::{self, escaped, failure, VERSION};
use crate::naming::is_account_name;
use crate::settings::Settings;

pub const KEYS: &[&str] = &["storage_account", "container", "key"];
/// Where the state goes in its container when `key` is not given.
pub const DEFAULT_KEY: &str = "anycloud/state.json";
const EXAMPLE: &str =
    "state: { azureblob: { storage_account: myteamstate, container: anycloud-state } }";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSettings {
    pub storage_account: String,
    pub container: String,
    pub key: String,
}

/// Container names: 3–63 lowercase letters, digits and `-`, a letter or digit at both ends,
/// no `--`.
fn is_container_name(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (3..=63).contains(&name.len())
        && name.chars().all(|c| alnum(c) || c == '-')
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && !name.contains("--")
}

/// Checks `state.azureblob`: `storage_account` and `container` are needed, `key` has a
/// default.
pub fn check(doc: &Doc, checks: &mut Checks) -> serde_json::Value {
    if !checks.known_keys(doc, "state.azureblob", KEYS) {
        return serde_json::Value::Null;
    }
    let mut text = |key: &str| {
        doc.get(key)
            .and_then(|v| checks.string(v, &format!("state.azureblob.{key}")))
    };
    let (account, container, key) = (text("storage_account"), text("container"), text("key"));
    for (name, value) in [("storage_account", &account), ("container", &container)] {
        if value.is_none() && doc.get(name).is_none() {
            checks.error(
                doc.at,
                format!("state.azureblob needs '{name}'"),
                Some(EXAMPLE.into()),
            );
        }
    }
    let at = |name: &str| doc.get(name).map(|d| d.at).unwrap_or(doc.at);
    // The account names the host every request (and its token) goes to: nothing but a name.
    if let Some(a) = account.as_ref().filter(|a| !is_account_name(a)) {
        checks.error(
            at("storage_account"),
            format!(
                "state.azureblob.storage_account '{}' is not a storage account name: 3–24 lowercase letters and digits",
                a.escape_default()
            ),
            None,
        );
    }
    if let Some(c) = container.as_ref().filter(|c| !is_container_name(c)) {
        checks.error(
            at("container"),
            format!(
                "state.azureblob.container '{}' is not a container name: 3–63 lowercase letters, digits and '-', a letter or digit at both ends, no '--'",
                c.escape_default()
            ),
            None,
        );
    }
    if let Some(k) = &key {
        if k.is_empty() || k.starts_with('/') || k.ends_with('/') || k.len() > 1024 {
            checks.error(
                at("key"),
                format!(
                    "state.azureblob.key '{}' must name a blob: not empty, no leading or trailing '/', at most 1024 characters",
                    k.escape_default()
                ),
                None,
            );
        }
    }
    match (account, container) {
        (Some(storage_account), Some(container)) => serde_json::to_value(StateSettings {
            storage_account,
            container,
            key: key.unwrap_or_else(|| DEFAULT_KEY.into()),
        })
        .expect("plain data"),
        _ => serde_json::Value::Null,
    }
}

pub struct BlobObjects {
    blobs: Arm,
    /// `https://{account}.{suffix}`, for messages.
    endpoint: String,
    container: String,
}

impl BlobObjects {
    /// The container `state` names, on its account's blob service as `settings` reach it.
    pub fn open(settings: &Settings, state: &StateSettings) -> Result<Arc<dyn ObjectStore>> {
        // Checked when the config was read, and again here: the account names the host the
        // operator's token is sent to.
        if !is_account_name(&state.storage_account) || !is_container_name(&state.container) {
            return Err(ProviderError::new(
                ErrorCode::Invalid,
                format!(
                    "state.azureblob: '{}' / '{}' is not a storage account and container",
                    state.storage_account.escape_default(),
                    state.container.escape_default()
                ),
            ));
        }
        let endpoint = settings.blob_endpoint(&state.storage_account);
        Ok(Arc::new(BlobObjects {
            blobs: blobs::service(&endpoint)?,
            endpoint,
            container: state.container.clone(),
        }))
    }

    fn path(&self, key: &str) -> String {
        format!("/{}/{}", self.container, escaped(key))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        let mut all = vec![("x-ms-version", VERSION.to_owned())];
        all.extend(headers.iter().cloned());
        // A state is read whole, up to its own limit.
        self.blobs
            .raw_bounded(
                method,
                path,
                &all,
                Bytes::from(body),
                anycloud_provider::answers::STATE_LIMIT,
            )
            .await
    }
}

/// The service's own code of a failed answer (`BlobNotFound`, `ContainerNotFound`).
fn error_code(headers: &HeaderMap) -> &str {
    headers
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A missing blob, not a missing container (which is an error to report).
fn no_blob(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> bool {
    status == StatusCode::NOT_FOUND
        && (error_code(headers) == "BlobNotFound"
            || String::from_utf8_lossy(body).contains("<Code>BlobNotFound</Code>"))
}

fn etag(headers: &HeaderMap, path: &str) -> Result<String> {
    headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            ProviderError::new(
                ErrorCode::Unavailable,
                format!("Azure blob service: {path} answered without an ETag"),
            )
        })
}

#[async_trait::async_trait]
impl ObjectStore for BlobObjects {
    fn describe(&self, key: &str) -> String {
        format!("{}/{}/{key}", self.endpoint, self.container)
    }

    async fn get(&self, key: &str) -> Result<Option<Object>> {
        let path = self.path(key);
        let (status, headers, body) = self.call(Method::GET, &path, &[], Vec::new()).await?;
        if status.is_success() {
            return Ok(Some(Object {
                version: etag(&headers, &path)?,
                body: body.to_vec(),
            }));
        }
        if no_blob(status, &headers, &body) {
            return Ok(None);
        }
        Err(failure(&Method::GET, &path, status, &body))
    }

    async fn put(&self, key: &str, body: Vec<u8>, when: Condition) -> Result<String> {
        let path = self.path(key);
        let mut headers = vec![
            ("x-ms-blob-type", "BlockBlob".to_owned()),
            ("content-type", "application/json".to_owned()),
        ];
        match when {
            Condition::Always => {}
            // A blob already there answers 409 BlobAlreadyExists, a Conflict too.
            Condition::Absent => headers.push(("if-none-match", "*".to_owned())),
            Condition::Matches(version) => headers.push(("if-match", version)),
        }
        let (status, answer, bytes) = self.call(Method::PUT, &path, &headers, body).await?;
        if !status.is_success() {
            return Err(failure(&Method::PUT, &path, status, &bytes));
        }
        etag(&answer, &path)
    }

    async fn delete(&self, key: &str, when: Condition) -> Result<()> {
        let path = self.path(key);
        let headers = match when {
            Condition::Always => vec![],
            // Nothing to delete is the condition's answer.
            Condition::Absent => return Ok(()),
            Condition::Matches(version) => vec![("if-match", version)],
        };
        let (status, answer, bytes) = self
            .call(Method::DELETE, &path, &headers, Vec::new())
            .await?;
        if status.is_success() || no_blob(status, &answer, &bytes) {
            return Ok(());
        }
        Err(failure(&Method::DELETE, &path, status, &bytes))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let listed = blobs::list(&self.blobs, &self.container, prefix).await?;
        Ok(listed.into_iter().map(|(name, _)| name).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_follow_azures_rules() {
        assert!(is_container_name("anycloud-state"));
        assert!(is_container_name("abc"));
        assert!(!is_container_name("ab"));
        assert!(!is_container_name("Team-State"));
        assert!(!is_container_name("team--state"));
        assert!(!is_container_name("-team"));
        assert!(!is_container_name("team.state"));
    }

    #[test]
    fn only_a_missing_blob_reads_as_absent() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ms-error-code", "BlobNotFound".parse().unwrap());
        assert!(no_blob(StatusCode::NOT_FOUND, &headers, b""));
        headers.insert("x-ms-error-code", "ContainerNotFound".parse().unwrap());
        assert!(!no_blob(StatusCode::NOT_FOUND, &headers, b""));
        let body = b"<Error><Code>BlobNotFound</Code></Error>";
        assert!(no_blob(StatusCode::NOT_FOUND, &HeaderMap::new(), body));
    }
}
