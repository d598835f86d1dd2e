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
    call.retry(policy())
        .when(|e: &ProviderError| e.retryable)
        .await
}
