//! SDK errors as provider errors with a code. The SDK itself retries throttling, 5xx and
//! transport trouble with anycloud's retry figures (`clients.rs`); what it gave up on is
//! marked retried, so the engine does not multiply the attempts.

use anycloud_provider::{ErrorCode, ProviderError};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// The service's error code, if the service answered with one.
pub fn code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}

/// What an AWS error code means for anycloud.
pub fn code_of(aws_code: &str, status: u16, message: &str) -> ErrorCode {
    match aws_code {
        "Throttling"
        | "ThrottlingException"
        | "SlowDown"
        | "RequestLimitExceeded"
        | "TooManyRequestsException" => ErrorCode::Throttled,
        "InternalError" | "ServiceUnavailable" | "RequestTimeout" | "Unavailable" => {
            ErrorCode::Unavailable
        }
        // A conditional write whose condition failed (S3's `If-Match`, `If-None-Match`).
        "PreconditionFailed" => ErrorCode::Conflict,
        "IncorrectState"
        | "ConditionalRequestConflict"
        | "ConcurrentModification"
        | "OperationAborted"
        | "DependencyViolation" => ErrorCode::Busy,
        // IAM is eventually consistent: a role or instance profile made a moment ago can be
        // refused by EC2 or S3 for some seconds.
        "InvalidParameterValue" if message.contains("iamInstanceProfile") => ErrorCode::Propagating,
        "MalformedPolicy" if message.to_lowercase().contains("principal") => ErrorCode::Propagating,
        "EntityAlreadyExists"
        | "BucketAlreadyExists"
        | "BucketAlreadyOwnedByYou"
        | "InvalidGroup.Duplicate"
        | "InvalidKeyPair.Duplicate" => ErrorCode::AlreadyExists,
        "AccessDenied"
        | "AccessDeniedException"
        | "UnauthorizedOperation"
        | "AuthFailure"
        | "InvalidClientTokenId"
        | "ExpiredToken" => ErrorCode::Permission,
        c if c.starts_with("NoSuch") || c.ends_with("NotFound") || c.ends_with(".NotFound") => {
            ErrorCode::NotFound
        }
        _ if status == 429 => ErrorCode::Throttled,
        _ if status >= 500 => ErrorCode::Unavailable,
        _ if status == 404 => ErrorCode::NotFound,
        _ if status == 403 => ErrorCode::Permission,
        _ if status == 409 => ErrorCode::Conflict,
        _ if status == 400 => ErrorCode::Invalid,
        _ => ErrorCode::Failed,
    }
}

/// The codes of RunInstances that say a zone has no room for the machine asked for: they
/// move the VM to the next zone (`anycloud_provider::placement`), never retried in place.
/// `Unsupported` is how EC2 says a zone lacks the instance type. Not among them, because
/// another place would only hide them: the account's limits (`MaxSpotInstanceCountExceeded`,
/// `InstanceLimitExceeded`, `VcpuLimitExceeded`, to raise with the quota) and a spot price
/// the user set too low (`SpotMaxPriceTooLow`).
pub const CAPACITY_CODES: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "InsufficientFreeAddressesInSubnet",
    "UnfulfillableCapacity",
    "Unsupported",
];

pub fn is_capacity(aws_code: &str) -> bool {
    CAPACITY_CODES.contains(&aws_code)
}

/// Keeps the SDK from retrying a capacity answer in place: EC2 answers
/// `InsufficientInstanceCapacity` with HTTP 500, which the SDK's status classifier would
/// retry with anycloud's whole retry policy before the VM could move on.
#[derive(Debug)]
pub struct CapacityIsNotRetried;

impl aws_smithy_runtime_api::client::retries::classifiers::ClassifyRetry for CapacityIsNotRetried {
    fn classify_retry(
        &self,
        ctx: &aws_smithy_runtime_api::client::interceptors::context::InterceptorContext,
    ) -> aws_smithy_runtime_api::client::retries::classifiers::RetryAction {
        use aws_smithy_runtime_api::client::retries::classifiers::RetryAction;
        let code = match ctx.output_or_error() {
            Some(Err(e)) => e
                .as_operation_error()
                .and_then(|e| {
                    e.downcast_ref::<aws_sdk_ec2::operation::run_instances::RunInstancesError>()
                })
                .and_then(|e| e.code()),
            _ => None,
        };
        match code {
            Some(c) if is_capacity(c) => RetryAction::RetryForbidden,
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "anycloud: capacity is a move, not a retry"
    }
}

pub fn classify<E, R>(what: &str, err: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HasStatus + 'static,
{
    let error = match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let status = se.raw().status_code();
            let aws_code = e.code().unwrap_or("unknown");
            let message = e.message().unwrap_or("(no message)");
            ProviderError::new(
                code_of(aws_code, status, message),
                format!("{what}: {aws_code}: {message}"),
            )
        }
        // No credentials is no outage: say what to set, and do not wait for it.
        SdkError::DispatchFailure(_) if lacks_credentials(&err) => ProviderError::new(
            ErrorCode::Permission,
            format!(
                "{what}: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with AWS_SESSION_TOKEN for temporary ones), or AWS_PROFILE for a profile in ~/.aws (after `aws sso login` for SSO), or run where an instance role or web identity applies. The SDK said: {}",
                describe(&err)
            ),
        ),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ProviderError::new(
                ErrorCode::Unavailable,
                format!("{what}: {}", describe(&err)),
            )
        }
        _ => ProviderError::permanent(format!("{what}: {}", describe(&err))),
    };
    // What the SDK retries by itself it has retried already.
    if matches!(error.code, ErrorCode::Throttled | ErrorCode::Unavailable) {
        error.retried()
    } else {
        error
    }
}

/// Whether the SDK failed because no credentials could be loaded.
fn lacks_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = err.source();
    while let Some(s) = source {
        if s.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
            .is_some()
        {
            return true;
        }
        source = s.source();
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(code_of("SlowDown", 503, ""), ErrorCode::Throttled);
        assert_eq!(code_of("NoSuchBucket", 404, ""), ErrorCode::NotFound);
        assert_eq!(
            code_of("InvalidInstanceID.NotFound", 400, ""),
            ErrorCode::NotFound
        );
        assert_eq!(
            code_of(
                "InvalidParameterValue",
                400,
                "Value (x) for parameter iamInstanceProfile.name is invalid"
            ),
            ErrorCode::Propagating
        );
        assert_eq!(
            code_of("InvalidParameterValue", 400, "bad ami"),
            ErrorCode::Invalid
        );
        assert_eq!(code_of("DependencyViolation", 400, ""), ErrorCode::Busy);
        assert_eq!(code_of("Whatever", 502, ""), ErrorCode::Unavailable);
    }

    #[test]
    fn capacity_codes_move_and_limits_do_not() {
        for c in [
            "InsufficientInstanceCapacity",
            "InsufficientCapacity",
            "Unsupported",
        ] {
            assert!(is_capacity(c), "{c}");
        }
        for c in [
            "MaxSpotInstanceCountExceeded",
            "SpotMaxPriceTooLow",
            "VcpuLimitExceeded",
            "InvalidAMIID.NotFound",
        ] {
            assert!(!is_capacity(c), "{c}");
        }
    }
}
