//! `state: { gcs: { bucket, key } }`: the state in a Cloud Storage bucket, locked and fenced
//! by generation preconditions (`ifGenerationMatch=0` to create the lock and the journal's
//! batches, `ifGenerationMatch=<generation read>` to replace the state or delete the lock).
//! Signed in as the operator, as `anycloud bucket` is.

use std::sync::Arc;

use anycloud_provider::doc::{Checks, Doc};
use anycloud_provider::objects::{Condition, Object, ObjectStore};
use anycloud_provider::{ErrorCode, ProviderError, Result};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{encode, error_of, segment, Google, Reply};
use crate::auth::Credential;
use crate::settings::Settings;

pub const KEYS: &[&str] = &["bucket", "key"];
/// Where the state goes in its bucket when `key` is not given.
pub const DEFAULT_KEY: &str = "anycloud/state.json";
/// Reads of an object replaced between its metadata and its bytes, before giving up for now.
const READS: usize = 5;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSettings {
    pub bucket: String,
    pub key: String,
}

/// A bucket name: GCS's rule for plain names (`naming::is_bucket_name`), or a domain-named
/// bucket: up to 222 characters of dot-separated parts, each at most 63.
fn is_bucket_name(name: &str) -> bool {
    if !name.contains('.') {
        return crate::naming::is_bucket_name(name);
    }
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (3..=222).contains(&name.len())
        && name
            .chars()
            .all(|c| alnum(c) || c == '-' || c == '_' || c == '.')
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name.split('.').all(|part| (1..=63).contains(&part.len()))
        && !name.starts_with("goog")
        && !name.contains("google")
}

/// Checks `state.gcs`: `bucket` is needed, `key` has a default.
pub fn check(doc: &Doc, checks: &mut Checks) -> Value {
    if !checks.known_keys(doc, "state.gcs", KEYS) {
        return Value::Null;
    }
    let mut text = |key: &str| {
        doc.get(key)
            .and_then(|v| checks.string(v, &format!("state.gcs.{key}")))
    };
    let (bucket, key) = (text("bucket"), text("key"));
    if bucket.is_none() && doc.get("bucket").is_none() {
        checks.error(
            doc.at,
            "state.gcs needs 'bucket'",
            Some("state: { gcs: { bucket: my-team-state } }".into()),
        );
    }
    let at = |name: &str| doc.get(name).map(|d| d.at).unwrap_or(doc.at);
    if let Some(b) = bucket.as_ref().filter(|b| !is_bucket_name(b)) {
        checks.error(
            at("bucket"),
            format!(
                "state.gcs.bucket '{}' is not a bucket name: 3–63 lowercase letters, digits, '-' and '_' (dots only in domain-named buckets), a letter or digit at both ends",
                b.escape_default()
            ),
            None,
        );
    }
    if let Some(k) = &key {
        if k.is_empty() || k.starts_with('/') || k.ends_with('/') || k.len() > 1024 {
            checks.error(
                at("key"),
                format!(
                    "state.gcs.key '{}' must name an object: not empty, no leading or trailing '/', at most 1024 bytes",
                    k.escape_default()
                ),
                None,
            );
        }
    }
    match bucket {
        Some(bucket) => serde_json::to_value(StateSettings {
            bucket,
            key: key.unwrap_or_else(|| DEFAULT_KEY.into()),
        })
        .expect("plain data"),
        None => Value::Null,
    }
}

pub struct GcsObjects {
    g: Google,
    /// The JSON API's root and its upload root (`…/storage/v1`, `…/upload/storage/v1`).
    storage: String,
    upload: String,
    bucket: String,
}

impl GcsObjects {
    /// The bucket `state` names, through Cloud Storage as `settings` reach it.
    pub fn open(settings: &Settings, state: &StateSettings) -> Result<Arc<dyn ObjectStore>> {
        if !is_bucket_name(&state.bucket) {
            return Err(ProviderError::new(
                ErrorCode::Invalid,
                format!(
                    "state.gcs.bucket '{}' is not a bucket name",
                    state.bucket.escape_default()
                ),
            ));
        }
        Ok(Arc::new(GcsObjects {
            g: Google::new(Credential::from_env())?,
            storage: settings.storage(),
            upload: settings.upload(),
            bucket: state.bucket.clone(),
        }))
    }

    fn object_url(&self, key: &str) -> String {
        format!("{}/b/{}/o/{}", self.storage, self.bucket, segment(key))
    }
}

/// A 404 for the object, not for its bucket (which is an error to report).
fn no_object(reply: &Reply) -> bool {
    reply.status == StatusCode::NOT_FOUND && !reply.message().contains("bucket does not exist")
}

fn json_reply(status: StatusCode, bytes: &[u8]) -> Reply {
    Reply {
        status,
        body: serde_json::from_slice(bytes).unwrap_or(Value::Null),
    }
}

/// An object's `generation`, which the API gives as a string (a number, in some emulators).
fn generation(object: &Value) -> Option<String> {
    match object.get("generation")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A `multipart/related` upload body: the object's metadata, then its bytes, between
/// boundaries the bytes do not contain.
fn multipart(key: &str, body: &[u8]) -> (String, Vec<u8>) {
    let mut n = 0u32;
    let boundary = loop {
        let b = format!("anycloud-state-{n}");
        if !body.windows(b.len()).any(|w| w == b.as_bytes()) {
            break b;
        }
        n += 1;
    };
    let metadata = json!({"name": key, "contentType": "application/json"});
    let mut out = format!(
        "--{boundary}\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n--{boundary}\r\ncontent-type: application/json\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (boundary, out)
}

#[async_trait::async_trait]
impl ObjectStore for GcsObjects {
    fn describe(&self, key: &str) -> String {
        format!("gs://{}/{key}", self.bucket)
    }

    /// The metadata, then the bytes of the very generation it named: an object replaced in
    /// between is read again, so the version always is the bytes'.
    async fn get(&self, key: &str) -> Result<Option<Object>> {
        let url = self.object_url(key);
        for _ in 0..READS {
            let meta = self.g.send(Method::GET, &url, None).await?;
            if no_object(&meta) {
                return Ok(None);
            }
            if !meta.status.is_success() {
                return Err(error_of(&Method::GET, &url, &meta));
            }
            let version = generation(&meta.body).ok_or_else(|| {
                ProviderError::new(
                    ErrorCode::Unavailable,
                    format!("Cloud Storage: {} has no generation", self.describe(key)),
                )
            })?;
            let media = format!("{url}?alt=media&generation={}", encode(&version));
            let (status, _, bytes) = self
                .g
                .raw_bounded(
                    Method::GET,
                    &media,
                    &[],
                    Bytes::new(),
                    anycloud_provider::answers::STATE_LIMIT,
                )
                .await?;
            if status.is_success() {
                return Ok(Some(Object {
                    body: bytes.to_vec(),
                    version,
                }));
            }
            if status != StatusCode::NOT_FOUND {
                return Err(error_of(&Method::GET, &media, &json_reply(status, &bytes)));
            }
        }
        Err(ProviderError::new(
            ErrorCode::Busy,
            format!(
                "Cloud Storage: {} changed under each of {READS} reads",
                self.describe(key)
            ),
        ))
    }

    async fn put(&self, key: &str, body: Vec<u8>, when: Condition) -> Result<String> {
        // A multipart upload, not a media one: it carries the metadata, and some emulators
        // check preconditions on it alone.
        let mut url = format!("{}/b/{}/o?uploadType=multipart", self.upload, self.bucket);
        match &when {
            Condition::Always => {}
            Condition::Absent => url.push_str("&ifGenerationMatch=0"),
            Condition::Matches(g) => url.push_str(&format!("&ifGenerationMatch={}", encode(g))),
        }
        let (boundary, bytes) = multipart(key, &body);
        let content_type = format!("multipart/related; boundary={boundary}");
        let (status, _, answer) = self
            .g
            .raw(
                Method::POST,
                &url,
                &[("content-type", content_type)],
                Bytes::from(bytes),
            )
            .await?;
        // A false precondition answers 412 (`conditionNotMet`): a Conflict.
        let reply = json_reply(status, &answer);
        if !status.is_success() {
            return Err(error_of(&Method::POST, &url, &reply));
        }
        generation(&reply.body).ok_or_else(|| {
            ProviderError::new(
                ErrorCode::Unavailable,
                format!(
                    "Cloud Storage: the upload of {} answered no generation",
                    self.describe(key)
                ),
            )
        })
    }

    async fn delete(&self, key: &str, when: Condition) -> Result<()> {
        let mut url = self.object_url(key);
        match &when {
            Condition::Always => {}
            // Nothing to delete is the condition's answer.
            Condition::Absent => return Ok(()),
            Condition::Matches(g) => url.push_str(&format!("?ifGenerationMatch={}", encode(g))),
        }
        let reply = self.g.send(Method::DELETE, &url, None).await?;
        if reply.status.is_success() || no_object(&reply) {
            return Ok(());
        }
        Err(error_of(&Method::DELETE, &url, &reply))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let url = format!(
            "{}/b/{}/o?prefix={}&fields={}",
            self.storage,
            self.bucket,
            encode(prefix),
            encode("items(name),nextPageToken")
        );
        let mut keys: Vec<String> = self
            .g
            .list(&url, "items")
            .await?
            .iter()
            .filter_map(|o| Some(o.get("name")?.as_str()?.to_owned()))
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn versioned(&self) -> Result<Option<bool>> {
        let url = format!("{}/b/{}?fields=versioning", self.storage, self.bucket);
        match self.g.ok(Method::GET, &url, None).await {
            Ok(bucket) => Ok(Some(
                bucket
                    .pointer("/versioning/enabled")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            )),
            // Reading the bucket's settings is not a state permission: an operator with
            // object rights alone cannot tell.
            Err(e) if e.is(ErrorCode::Permission) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_googles_rules() {
        assert!(is_bucket_name("team-state"));
        assert!(is_bucket_name("state.example.com"));
        assert!(!is_bucket_name("ab"));
        assert!(!is_bucket_name("Team-State"));
        assert!(!is_bucket_name("-team"));
        assert!(!is_bucket_name("team..state"));
        assert!(!is_bucket_name("team/state"));
        assert!(!is_bucket_name("goog-state"), "GCS's reserved prefix");
    }

    #[test]
    fn a_multipart_boundary_is_not_in_the_body() {
        let body = b"{\"a\": \"--anycloud-state-0\"}";
        let (boundary, bytes) = multipart("k/state.json", body);
        assert_eq!(boundary, "anycloud-state-1");
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("--anycloud-state-1\r\n"));
        assert!(text.contains("\"name\":\"k/state.json\""));
        assert!(text.ends_with("\r\n--anycloud-state-1--\r\n"));
    }

    #[test]
    fn only_a_missing_object_reads_as_absent() {
        let reply = |message: &str| Reply {
            status: StatusCode::NOT_FOUND,
            body: json!({"error": {"code": 404, "message": message}}),
        };
        assert!(no_object(&reply("No such object: team-state/k")));
        assert!(!no_object(&reply("The specified bucket does not exist.")));
    }
}
