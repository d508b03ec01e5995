//! Waiting for something another process does: poll a condition until it
//! holds, within a named bound. The demo and the integration tests use this
//! one loop, so "how long is too long" and "how often to look" are always
//! stated where a wait is written, never buried in a hand-made loop.
//!
//! It knows nothing of what it waits for; a condition that never holds is
//! reported as an error naming what was awaited, and the caller decides
//! whether that fails a command or a test.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a wait may last and how often the condition is looked at.
#[derive(Clone, Copy, Debug)]
pub struct Patience {
    /// Once this much time has passed with the condition still false, the
    /// wait gives up.
    pub at_most: Duration,
    /// The pause between two looks at the condition.
    pub poll_every: Duration,
}

/// Polls `condition` until it holds. The condition is looked at once before
/// any pause, so a condition that already holds costs no wait; it fails with
/// "gave up waiting for {what}" once `patience.at_most` has passed.
pub async fn wait_until<F, Fut>(
    what: &str,
    patience: Patience,
    mut condition: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    assert!(
        !patience.poll_every.is_zero(),
        "a wait must pause between polls"
    );
    assert!(
        patience.poll_every <= patience.at_most,
        "a wait must poll at least once within its bound"
    );
    let started = Instant::now();
    while !condition().await {
        if started.elapsed() > patience.at_most {
            anyhow::bail!("gave up waiting for {what}");
        }
        tokio::time::sleep(patience.poll_every).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIEF: Patience = Patience {
        at_most: Duration::from_millis(30),
        poll_every: Duration::from_millis(5),
    };

    #[tokio::test]
    async fn a_condition_that_comes_true_ends_the_wait() {
        let mut looks = 0;
        wait_until("the third look", BRIEF, || {
            looks += 1;
            let done = looks == 3;
            async move { done }
        })
        .await
        .unwrap();
        assert_eq!(looks, 3);
    }

    #[tokio::test]
    async fn a_condition_that_never_holds_names_what_was_awaited() {
        let error = wait_until("the impossible", BRIEF, || async { false })
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "gave up waiting for the impossible");
    }
}
