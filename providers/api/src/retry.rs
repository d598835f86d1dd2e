//! The one retry policy of anycloud (backon): every provider, transport and the engine use
//! these two. A cloud SDK that retries by itself is set to the same figures and marks what it
//! gave up on as retried ([`ProviderError::retried`]), so attempts never multiply.
//!
//! - [`transient`]: a call that failed for now (throttled, 5xx, a dropped connection,
//!   something not yet propagated) is tried again with capped exponential backoff and jitter,
//!   honouring a `Retry-After` a provider passes on (`ProviderError::retry_after`).
//! - [`waiting`]: polling for something to come up (a VM's SSH while it boots, an instance
//!   reaching `running`) until a deadline.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::error::ProviderError;

/// Attempts of one call, the first included.
pub const ATTEMPTS: usize = 10;
/// The first wait before trying again.
pub const FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest wait between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(20);

/// Backoff for transient failures: [`FIRST_DELAY`] doubling to [`MAX_DELAY`], jittered,
/// [`ATTEMPTS`] in all (72 s of waiting before jitter, up to twice that with it: as long as
/// IAM takes to propagate). A cloud SDK that retries by itself is configured with the same figures and
/// marks what it gave up on as [`ProviderError::retried`].
pub fn transient() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(FIRST_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_max_times(ATTEMPTS - 1)
        .with_jitter()
}

/// Backoff while waiting for something to come up: `first` doubling to `max`, for `deadline`
/// in all.
pub fn waiting(first: Duration, max: Duration, deadline: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(max)
        .without_max_times()
        .with_total_delay(Some(deadline))
}

/// Waits spaced further and further apart, for what is not a failed call but something
/// that happened again (`anycloud run --recover`: a job's machine lost once more, a state
/// lock still held): `first` doubling to `max`, jittered, without end (the caller counts).
pub fn backing_off(first: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send {
    use backon::BackoffBuilder;
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(max)
        .without_max_times()
        .with_jitter()
        .build()
}

/// Runs `call`, retrying retryable errors under [`transient`]; `note` hears of each error
/// that will be retried and after how long.
pub async fn with_retries<T, F, Fut>(
    call: F,
    note: impl Fn(&ProviderError, Duration),
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    call.retry(transient())
        .when(|e: &ProviderError| e.retryable())
        .adjust(
            |e: &ProviderError, planned| match (e.retry_after, planned) {
                // The cloud said how long: wait at least that, within the same number of attempts.
                (Some(asked), Some(planned)) => Some(asked.max(planned)),
                (_, planned) => planned,
            },
        )
        .notify(|e: &ProviderError, after: Duration| note(e, after))
        .await
}

/// Runs `call` until it succeeds, fails with an error `keep_waiting` rejects, or `deadline`
/// has passed (then the last error is returned).
pub async fn wait_for<T, E, F, Fut>(
    first: Duration,
    max: Duration,
    deadline: Duration,
    call: F,
    keep_waiting: impl FnMut(&E) -> bool,
    note: impl FnMut(&E, Duration),
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    call.retry(waiting(first, max, deadline))
        .when(keep_waiting)
        .notify(note)
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::error::ErrorCode;

    #[tokio::test(start_paused = true)]
    async fn retryable_codes_are_retried_to_the_limit_and_others_are_not() {
        let calls = AtomicUsize::new(0);
        let throttled = with_retries(
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(ProviderError::new(ErrorCode::Throttled, "slow down"))
            },
            |_, _| {},
        )
        .await;
        assert!(throttled.is_err());
        assert_eq!(calls.swap(0, Ordering::SeqCst), ATTEMPTS);
        let missing = with_retries(
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(ProviderError::new(ErrorCode::NotFound, "gone"))
            },
            |_, _| {},
        )
        .await;
        assert_eq!(missing.unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_is_honoured() {
        let waits = std::sync::Mutex::new(Vec::new());
        let calls = AtomicUsize::new(0);
        let result = with_retries(
            || async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(ProviderError::new(ErrorCode::Throttled, "429")
                        .with_retry_after(Some(Duration::from_secs(7))))
                } else {
                    Ok(1)
                }
            },
            |_, after| waits.lock().unwrap().push(after),
        )
        .await;
        assert_eq!(result.unwrap(), 1);
        assert!(waits.lock().unwrap()[0] >= Duration::from_secs(7));
    }

    #[test]
    fn backing_off_doubles_to_its_cap_and_goes_on() {
        let first = Duration::from_secs(30);
        let max = Duration::from_secs(600);
        let waits: Vec<Duration> = backing_off(first, max).take(8).collect();
        assert_eq!(waits.len(), 8, "it has no end of its own");
        // Jitter adds up to the wait itself: each is within [d, 2d] of its step.
        for (i, w) in waits.iter().enumerate() {
            let step = (first * 2u32.pow(i as u32)).min(max);
            assert!(
                *w >= step && *w <= step * 2,
                "wait {i}: {w:?}, step {step:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_stops_at_the_deadline() {
        let start = tokio::time::Instant::now();
        let result: Result<(), &str> = wait_for(
            Duration::from_millis(250),
            Duration::from_secs(5),
            Duration::from_secs(30),
            || async { Err("not yet") },
            |_| true,
            |_, _| {},
        )
        .await;
        assert_eq!(result, Err("not yet"));
        let waited = start.elapsed();
        assert!(
            waited <= Duration::from_secs(31) && waited >= Duration::from_secs(20),
            "{waited:?}"
        );
    }
}
