//! `state: { s3: { bucket, key, region } }`: the state in an S3 bucket, locked and fenced by
//! S3's conditional writes (`If-None-Match: *` to create the lock and the journal's
//! batches, `If-Match` with the ETag read to replace the state or delete the lock).

use std::sync::Arc;

use anycloud_provider::doc::{Checks, Doc};
use anycloud_provider::objects::{Condition, Object, ObjectStore};
use anycloud_provider::{ErrorCode, ProviderError, Result};
use serde::{Deserialize, Serialize};

use crate::clients::Clients;
use crate::errors::classify;

pub const KEYS: &[&str] = &["bucket", "key", "region"];
/// Where the state goes in its bucket when `key` is not given.
pub const DEFAULT_KEY: &str = "anycloud/state.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSettings {
    pub bucket: String,
    pub key: String,
    pub region: String,
}

/// Checks `state.s3`: `bucket` and `region` are needed, `key` has a default.
pub fn check(doc: &Doc, checks: &mut Checks) -> serde_json::Value {
    if !checks.known_keys(doc, "state.s3", KEYS) {
        return serde_json::Value::Null;
    }
    let mut text = |key: &str| {
        doc.get(key)
            .and_then(|v| checks.string(v, &format!("state.s3.{key}")))
    };
    let (bucket, key, region) = (text("bucket"), text("key"), text("region"));
    for (name, value) in [("bucket", &bucket), ("region", &region)] {
        if value.is_none() && doc.get(name).is_none() {
            checks.error(
                doc.at,
                format!("state.s3 needs '{name}'"),
                Some("state: { s3: { bucket: my-team-state, region: eu-west-1 } }".into()),
            );
        }
    }
    if let Some(k) = &key {
        if k.is_empty() || k.starts_with('/') || k.ends_with('/') {
            checks.error(
                doc.get("key").map(|d| d.at).unwrap_or(doc.at),
                format!(
                    "state.s3.key '{k}' must name an object: not empty, no leading or trailing '/'"
                ),
                None,
            );
        }
    }
    match (bucket, region) {
        (Some(bucket), Some(region)) => serde_json::to_value(StateSettings {
            bucket,
            key: key.unwrap_or_else(|| DEFAULT_KEY.into()),
            region,
        })
        .expect("plain data"),
        _ => serde_json::Value::Null,
    }
}

pub struct S3Objects {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Objects {
    pub async fn open(clients: &Clients, settings: &StateSettings) -> Arc<dyn ObjectStore> {
        Arc::new(S3Objects {
            client: clients.s3(&settings.region).await,
            bucket: settings.bucket.clone(),
        })
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Objects {
    fn describe(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    async fn get(&self, key: &str) -> Result<Option<Object>> {
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        let object = match got {
            Ok(o) => o,
            Err(e) => {
                let e = classify(&format!("GetObject {}", self.describe(key)), e);
                return if e.is(ErrorCode::NotFound) && !e.message.contains("NoSuchBucket") {
                    Ok(None)
                } else {
                    Err(e)
                };
            }
        };
        let version = object.e_tag().unwrap_or_default().to_owned();
        let limit = anycloud_provider::answers::STATE_LIMIT;
        if object
            .content_length()
            .is_some_and(|n| n as u64 > limit as u64)
        {
            return Err(ProviderError::new(
                ErrorCode::Failed,
                format!(
                    "reading {}: answer larger than {limit} bytes: not read further",
                    self.describe(key)
                ),
            ));
        }
        let body = object.body.collect().await.map_err(|e| {
            ProviderError::new(
                ErrorCode::Unavailable,
                format!("reading {}: {e}", self.describe(key)),
            )
        })?;
        Ok(Some(Object {
            body: body.into_bytes().to_vec(),
            version,
        }))
    }

    async fn put(&self, key: &str, body: Vec<u8>, when: Condition) -> Result<String> {
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(body.into());
        put = match when {
            Condition::Always => put,
            Condition::Absent => put.if_none_match("*"),
            Condition::Matches(etag) => put.if_match(etag),
        };
        let out = put
            .send()
            .await
            .map_err(|e| classify(&format!("PutObject {}", self.describe(key)), e))?;
        Ok(out.e_tag().unwrap_or_default().to_owned())
    }

    async fn delete(&self, key: &str, when: Condition) -> Result<()> {
        let mut delete = self.client.delete_object().bucket(&self.bucket).key(key);
        delete = match when {
            Condition::Always => delete,
            // Nothing to delete is the condition's answer.
            Condition::Absent => return Ok(()),
            Condition::Matches(etag) => delete.if_match(etag),
        };
        match delete.send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = classify(&format!("DeleteObject {}", self.describe(key)), e);
                if e.is(ErrorCode::NotFound) && !e.message.contains("NoSuchBucket") {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                classify(&format!("ListObjectsV2 s3://{}/{prefix}", self.bucket), e)
            })?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys.sort();
        Ok(keys)
    }

    async fn versioned(&self) -> Result<Option<bool>> {
        let out = self
            .client
            .get_bucket_versioning()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| classify(&format!("GetBucketVersioning {}", self.bucket), e))?;
        Ok(Some(matches!(
            out.status(),
            Some(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
        )))
    }
}
