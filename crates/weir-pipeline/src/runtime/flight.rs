//! In-flight accounting between the fetch side and the commit task.
//!
//! The fetch side counts every batch it hands over (records, bytes, a sequence
//! number); the commit task counts it done when the batch is committed or dropped. The
//! fetch side pauses its partitions while the count is at the limit (backpressure),
//! and a revoke waits until every batch sent before it is done.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug)]
pub(crate) struct Flight {
    records: AtomicUsize,
    bytes: AtomicUsize,
    sent: AtomicU64,
    done: watch::Sender<u64>,
}

impl Default for Flight {
    fn default() -> Self {
        Self {
            records: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            done: watch::Sender::new(0),
        }
    }
}

impl Flight {
    /// A batch of `records` and `bytes` leaves for the commit task; its sequence number.
    pub(crate) fn send(&self, records: usize, bytes: usize) -> u64 {
        self.records.fetch_add(records, Ordering::AcqRel);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        self.sent.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Batch `seq` is committed or dropped.
    pub(crate) fn done(&self, seq: u64, records: usize, bytes: usize) {
        self.records.fetch_sub(records, Ordering::AcqRel);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.done.send_modify(|d| *d = (*d).max(seq));
    }

    pub(crate) fn records(&self) -> usize {
        self.records.load(Ordering::Acquire)
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// The sequence number of the last batch sent.
    pub(crate) fn last_sent(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }

    /// Wait until batch `seq` and all before it are done, at most `timeout`. Whether
    /// they are.
    pub(crate) async fn wait_done(&self, seq: u64, timeout: Duration) -> bool {
        let mut rx = self.done.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|d| *d >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_and_waits() {
        let f = std::sync::Arc::new(Flight::default());
        let a = f.send(10, 100);
        let b = f.send(5, 50);
        assert_eq!((a, b, f.records(), f.bytes()), (1, 2, 15, 150));
        assert!(!f.wait_done(b, Duration::from_millis(20)).await);
        let g = f.clone();
        let waiter = tokio::spawn(async move { g.wait_done(2, Duration::from_secs(5)).await });
        f.done(a, 10, 100);
        f.done(b, 5, 50);
        assert!(waiter.await.unwrap());
        assert_eq!((f.records(), f.bytes(), f.last_sent()), (0, 0, 2));
    }
}
