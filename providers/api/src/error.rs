//! How a provider says what went wrong: a code the engine (and the provider itself) matches
//! on, and a message for people. Only the code decides whether a call is tried again.

use std::fmt;
use std::time::Duration;

/// What kind of failure it was. Providers map their cloud's own codes to these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The cloud asked us to slow down (HTTP 429, `SlowDown`, `Throttling`).
    Throttled,
    /// The service or the way to it failed for now (5xx, a dropped connection, a timeout).
    Unavailable,
    /// Something made a moment ago is not visible everywhere yet (IAM, role assignments).
    Propagating,
    /// The resource is busy with another change that settles by itself (an instance still
    /// shutting down holds its security group, a conflicting operation is in progress).
    Busy,
    NotFound,
    AlreadyExists,
    /// The resource is in a state that forbids the change (a name taken by someone else, a
    /// stale etag, an object owned by another state).
    Conflict,
    /// The credentials in use may not do this.
    Permission,
    /// The request itself is wrong (a bad parameter, an unknown image).
    Invalid,
    /// Anything else.
    Failed,
}

impl ErrorCode {
    /// Whether trying the same call again later can succeed.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Throttled
                | ErrorCode::Unavailable
                | ErrorCode::Propagating
                | ErrorCode::Busy
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Throttled => "throttled",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Propagating => "propagating",
            ErrorCode::Busy => "busy",
            ErrorCode::NotFound => "not found",
            ErrorCode::AlreadyExists => "already exists",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Permission => "permission denied",
            ErrorCode::Invalid => "invalid request",
            ErrorCode::Failed => "failed",
        }
    }
}

/// A provider failure. The engine retries the retryable codes with capped backoff
/// ([`crate::retry`]); the rest stop the resource's branch of the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderError {
    pub code: ErrorCode,
    pub message: String,
    /// How long the cloud asked us to wait (`Retry-After`), if it said.
    pub retry_after: Option<Duration>,
    /// Whether the engine should try again: the code's say, unless the call was already
    /// retried under the same policy below (by an SDK configured from [`crate::retry`]).
    pub retry: bool,
}

/// How a lost state's successor takes over the objects of its lineage: said the same way by
/// every provider that refuses another lineage's object.
pub fn adopt_hint(lineage: &str) -> String {
    format!(
        ". If that state was this project's and is lost, `anycloud state adopt {lineage}` makes an empty state its successor, which takes its objects over"
    )
}

impl ProviderError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProviderError {
            code,
            message: message.into(),
            retry_after: None,
            retry: code.retryable(),
        }
    }

    /// A failure that trying again will not mend.
    pub fn permanent(message: impl Into<String>) -> Self {
        ProviderError::new(ErrorCode::Failed, message)
    }

    pub fn retryable(&self) -> bool {
        self.retry
    }

    /// The same error, marked as retried already: attempts must not multiply.
    pub fn retried(mut self) -> Self {
        self.retry = false;
        self
    }

    pub fn is(&self, code: ErrorCode) -> bool {
        self.code == code
    }

    pub fn with_retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProviderError {}

pub type Result<T, E = ProviderError> = std::result::Result<T, E>;
