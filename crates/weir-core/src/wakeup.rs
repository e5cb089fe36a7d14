//! Interrupting a blocked poll from elsewhere.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// A cloneable, `Send + Sync` handle that makes the consumer's blocked or next
/// [`poll`](crate::Consumer::poll) return [`Error::Wakeup`](crate::Error::Wakeup).
///
/// It is the only part of a consumer that is safe to use from another task or thread,
/// as `wakeup()` is in Kafka's consumer. One wakeup is consumed by one poll.
///
/// ```
/// let handle = weir_core::WakeupHandle::new();
/// let remote = handle.clone();
/// std::thread::spawn(move || remote.wakeup()).join().unwrap();
/// assert!(handle.take());   // the consumer's poll sees it once...
/// assert!(!handle.take());  // ...and then it is gone
/// ```
#[derive(Clone, Debug, Default)]
pub struct WakeupHandle {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    pending: AtomicBool,
    notify: Notify,
}

impl WakeupHandle {
    /// A handle with no wakeup pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the consumer to stop waiting: its blocked poll, or its next one, returns
    /// `Error::Wakeup`.
    pub fn wakeup(&self) {
        self.inner.pending.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
        self.inner.notify.notify_one();
    }

    /// For backends: consume a pending wakeup, returning whether there was one.
    pub fn take(&self) -> bool {
        self.inner.pending.swap(false, Ordering::SeqCst)
    }

    /// For backends: whether a wakeup is pending, without consuming it.
    pub fn is_pending(&self) -> bool {
        self.inner.pending.load(Ordering::SeqCst)
    }

    /// For backends: resolves when `wakeup()` is called (or at once if one is
    /// pending). Does not consume the wakeup; call [`take`](Self::take) after.
    pub async fn notified(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_pending() {
                return;
            }
            notified.await;
            if self.is_pending() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn notified_wakes_a_waiting_task() {
        let h = WakeupHandle::new();
        let h2 = h.clone();
        let waiter = tokio::spawn(async move {
            h2.notified().await;
            h2.take()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        h.wakeup();
        let took = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(took);
    }

    #[tokio::test]
    async fn pending_wakeup_returns_at_once() {
        let h = WakeupHandle::new();
        h.wakeup();
        tokio::time::timeout(Duration::from_secs(1), h.notified())
            .await
            .unwrap();
    }
}
