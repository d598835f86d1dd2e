//! What a remote state needs of a cloud's object store: whole objects read with their
//! version, and writes and deletes that happen only under a condition the store itself
//! checks. A lock is an object created only if absent; a state write names the version it
//! read. No lock server and no table: the store's conditional writes alone.

use crate::Result;

/// When a write or delete may happen. A store that finds the condition false answers
/// [`crate::ErrorCode::Conflict`] and changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Whatever is there.
    Always,
    /// Only if no object has the key (S3 `If-None-Match: *`, Azure `If-None-Match: *`, GCS
    /// `ifGenerationMatch=0`).
    Absent,
    /// Only if the object is still this version (an ETag, a generation).
    Matches(String),
}

/// An object's bytes and the version they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub body: Vec<u8>,
    pub version: String,
}

/// One bucket (container) of a cloud's object store.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync {
    /// Where a key lives, for messages (`s3://bucket/key`).
    fn describe(&self, key: &str) -> String;

    /// The object, or `None` when no object has the key.
    async fn get(&self, key: &str) -> Result<Option<Object>>;

    /// Writes the whole object if `when` holds; returns its new version.
    async fn put(&self, key: &str, body: Vec<u8>, when: Condition) -> Result<String>;

    /// Deletes the object if `when` holds; an object already gone is no error (with
    /// [`Condition::Always`]).
    async fn delete(&self, key: &str, when: Condition) -> Result<()>;

    /// The keys that start with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// Whether the bucket keeps old versions of overwritten objects (`None`: cannot tell).
    async fn versioned(&self) -> Result<Option<bool>> {
        Ok(None)
    }
}
