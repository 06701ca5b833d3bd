//! Waiting in tests for a condition, never for a time: each helper polls the condition itself
//! until it holds, and fails the test with what it waited for once the deadline passes.
//!
//! Invariant: a wait ends as soon as the condition holds (checked first, then every
//! [`POLL`]); it never outlasts its deadline by more than one poll.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
pub const POLL: Duration = Duration::from_millis(100);

/// Blocks until `cond` holds; panics after `timeout` naming `what`.
pub fn until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Polls `probe` until it returns `Ok(value)`; panics after `timeout` naming `what` and the
/// last `Err` the probe gave (the state it saw).
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    match try_poll(timeout, probe).await {
        Ok(v) => v,
        Err(last) => panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}"),
    }
}

/// Polls `probe` until it returns `Ok(value)`; after `timeout`, the last `Err` it gave (for
/// harness helpers that report rather than panic).
pub async fn try_poll<T, F, Fut>(timeout: Duration, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(v) => return Ok(v),
            Err(state) => state,
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(POLL).await;
    }
}
