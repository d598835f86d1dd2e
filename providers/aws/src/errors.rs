//! SDK errors as provider errors: throttling, 5xx and transport trouble are retryable;
//! everything else stops this resource's branch.

use anycloud_provider::ProviderError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "SlowDown",
    "RequestLimitExceeded",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "IncorrectState",
    "ConcurrentModification",
    "OperationAborted",
    // Made by a parallel or earlier attempt: the retry finds and uses it.
    "InvalidGroup.Duplicate",
    "InvalidKeyPair.Duplicate",
];

/// IAM is eventually consistent: a role or instance profile made a moment ago can be
/// refused by EC2 or S3 (or not yet found by IAM itself) for some seconds.
pub fn is_iam_propagation(e: &anycloud_provider::ProviderError) -> bool {
    let m = &e.message;
    (m.contains("InvalidParameterValue") && m.contains("iamInstanceProfile"))
        || (m.contains("MalformedPolicy") && m.to_lowercase().contains("principal"))
        || (m.contains("GetInstanceProfile") && m.contains("NoSuchEntity"))
}

/// Runs `call` again while IAM catches up, for a minute and a half at most.
pub async fn while_iam_propagates<T, F, Fut>(mut call: F) -> anycloud_provider::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anycloud_provider::Result<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let mut delay = std::time::Duration::from_secs(2);
    loop {
        match call().await {
            Err(e) if is_iam_propagation(&e) && std::time::Instant::now() + delay < deadline => {
                anycloud_provider::output::line(&format!(
                    "waiting for IAM to propagate: {}",
                    e.message
                ));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

/// The service's error code, if the service answered with one.
pub fn code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}

pub fn classify<E, R>(what: &str, err: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HasStatus,
{
    match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let status = se.raw().status_code();
            let code = e.code().unwrap_or("unknown");
            let message = format!("{what}: {code}: {}", e.message().unwrap_or("(no message)"));
            if status >= 500 || status == 429 || RETRYABLE_CODES.contains(&code) {
                ProviderError::retryable(message)
            } else {
                ProviderError::permanent(message)
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ProviderError::retryable(format!("{what}: {}", describe(&err)))
        }
        _ => ProviderError::permanent(format!("{what}: {}", describe(&err))),
    }
}

fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The HTTP status of a raw response, whatever the SDK's response type.
pub trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}
