//! Retries for provider calls: throttling and 5xx-like answers (the provider says which)
//! are retried with capped exponential backoff and jitter; everything else fails at once.

use std::future::Future;
use std::time::Duration;

use anycloud_provider::ProviderError;
use backon::{ExponentialBuilder, Retryable};

pub fn policy() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(20))
        .with_max_times(6)
        .with_jitter()
}

pub async fn with_retries<T, F, Fut>(call: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    with_retries_noting(call, |_, _| {}).await
}

/// As [`with_retries`], telling `note` of each error that will be retried and when.
pub async fn with_retries_noting<T, F, Fut>(
    call: F,
    note: impl Fn(&ProviderError, Duration),
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    call.retry(policy())
        .when(|e: &ProviderError| e.retryable)
        .notify(|e: &ProviderError, after: Duration| note(e, after))
        .await
}
