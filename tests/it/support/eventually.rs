//! Bounded polling: retry a check until it passes or a deadline passes, then
//! fail with the last observation. Tests never sleep for a fixed time.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// The default bound: generous for a loaded 2-core CI machine; a passing
/// check returns as soon as it passes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `check` every 50 ms until it returns `Ok`, or panics after
/// `timeout` with `what` and the last `Err`.
pub async fn eventually_within<T, E, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(error) => error,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn eventually<T, E, F, Fut>(what: &str, check: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    eventually_within(what, DEFAULT_TIMEOUT, check).await
}
