//! The one backoff policy of the runtime: exponential, capped, per use.

use std::time::Duration;

/// Exponential backoff: `base`, doubling, at most `cap`.
///
/// Used for the whole loop after a retriable consumer or database error (50 ms to
/// 2 s) and per partition after a transient decode failure (50 ms to 5 s), so that one
/// partition waiting for a registry never slows the others.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    n: u32,
}

impl Backoff {
    pub(crate) const fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap, n: 0 }
    }

    /// The loop's backoff: 50 ms doubling to 2 s.
    pub(crate) const fn for_loop() -> Self {
        Self::new(Duration::from_millis(50), Duration::from_secs(2))
    }

    /// A paused partition's backoff: 50 ms doubling to 5 s.
    pub(crate) const fn for_partition() -> Self {
        Self::new(Duration::from_millis(50), Duration::from_secs(5))
    }

    /// The next delay (and count one more failure).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.base.saturating_mul(1 << self.n.min(16)).min(self.cap);
        self.n = self.n.saturating_add(1);
        d
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    pub(crate) fn reset(&mut self) {
        self.n = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::for_partition();
        let ms: Vec<u128> = (0..9).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(b.n, 9);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(50));
        let mut l = Backoff::for_loop();
        assert_eq!(
            (0..10).map(|_| l.next_delay()).max(),
            Some(Duration::from_secs(2))
        );
    }
}
