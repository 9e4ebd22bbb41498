//! Waiting for something to become true, by polling with a deadline. The suite never sleeps
//! a fixed time: everything it waits for is observable, so it asks until it sees it.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;

/// How long a saga may take to reach a terminal state in one test (debug builds, two cores,
/// other tests running beside it).
pub const SAGA_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an asynchronous consequence (a notification, a stock deduction after completion)
/// may take to appear once the saga itself has ended.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The answer of one look at the world.
pub enum Check<T> {
    /// What we were waiting for.
    Done(T),
    /// Not yet; the string says what was seen, for the error message if the deadline passes.
    NotYet(String),
}

/// Calls `check` until it answers [`Check::Done`] or `timeout` passes. An `Err` from `check`
/// counts as "not yet" (a service still starting refuses connections), and the last thing
/// seen is part of the timeout error.
pub async fn wait_for<T, F, Fut>(what: impl Display, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Check<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(20);
    loop {
        let last_seen = match check().await {
            Ok(Check::Done(value)) => return Ok(value),
            Ok(Check::NotYet(seen)) => seen,
            Err(error) => format!("error: {error:#}"),
        };
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}; last seen: {last_seen}");
        }
        tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now()))).await;
        // Start fast (most waits are short) and back off so a long wait does not load the
        // services it is waiting for.
        interval = (interval * 3 / 2).min(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_condition_that_becomes_true_is_returned() {
        let mut calls = 0;
        let value = wait_for("the third call", Duration::from_secs(5), || {
            calls += 1;
            let seen = calls;
            async move {
                Ok(if seen >= 3 {
                    Check::Done(seen)
                } else {
                    Check::NotYet(format!("call {seen}"))
                })
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn a_condition_that_never_holds_times_out_with_what_was_seen() {
        let error = wait_for("never", Duration::from_millis(100), || async {
            Ok(Check::<()>::NotYet("still no".into()))
        })
        .await
        .unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.contains("never") && message.contains("still no"),
            "{message}"
        );
    }
}
