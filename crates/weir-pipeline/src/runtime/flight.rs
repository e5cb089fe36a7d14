//! In-flight accounting between the fetch side and the commit task.
//!
//! The fetch side counts every batch it hands over (records, bytes, a sequence
//! number); the commit task counts it done when the batch is committed or dropped. The
//! fetch side pauses its partitions while the count is at the limit (backpressure),
//! and a revoke waits until every batch sent before it is done.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug)]
pub(crate) struct Flight {
    records: AtomicUsize,
    bytes: AtomicUsize,
    sent: AtomicU64,
    done: watch::Sender<u64>,
    /// Set on an abort: nobody waits for in-flight batches any more (they are
    /// abandoned, not committed; the next owner re-reads them).
    abandoned: AtomicBool,
}

impl Default for Flight {
    fn default() -> Self {
        Self {
            records: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            done: watch::Sender::new(0),
            abandoned: AtomicBool::new(false),
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

    /// Wait until batch `seq` and all before it are done, at most `timeout` and not
    /// past [`abandon`](Self::abandon). Whether they are done.
    pub(crate) async fn wait_done(&self, seq: u64, timeout: Duration) -> bool {
        let mut rx = self.done.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            rx.wait_for(|d| *d >= seq || self.abandoned.load(Ordering::Acquire)),
        )
        .await;
        waited.is_ok_and(|r| r.is_ok_and(|d| *d >= seq))
    }

    /// Wait until fewer than `records` records and `bytes` bytes are in flight (a
    /// commit finished), at most `timeout`. Whether there is room.
    pub(crate) async fn wait_room(&self, records: usize, bytes: usize, timeout: Duration) -> bool {
        let room = || self.records() < records && self.bytes() < bytes;
        let mut rx = self.done.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|_| room())).await;
        waited.is_ok_and(|r| r.is_ok()) || room()
    }

    /// The job aborts: wake every waiter now (a revoke during the consumer's close
    /// then gives its partitions up at once instead of waiting for batches that the
    /// abort cancelled).
    pub(crate) fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        self.done.send_modify(|_| {});
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

    #[tokio::test]
    async fn wait_room_wakes_when_a_batch_is_done() {
        let f = std::sync::Arc::new(Flight::default());
        let a = f.send(10, 100);
        assert!(!f.wait_room(10, 1000, Duration::from_millis(20)).await);
        let g = f.clone();
        let waiter =
            tokio::spawn(async move { g.wait_room(10, 1000, Duration::from_secs(60)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        f.done(a, 10, 100);
        assert!(waiter.await.unwrap());
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "woken, not timed out"
        );
        assert!(f.wait_room(10, 1000, Duration::ZERO).await, "room at once");
    }

    #[tokio::test]
    async fn abandon_wakes_waiters_who_see_not_done() {
        let f = std::sync::Arc::new(Flight::default());
        let seq = f.send(1, 1);
        let g = f.clone();
        let waiter = tokio::spawn(async move { g.wait_done(seq, Duration::from_secs(60)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        f.abandon();
        assert!(!waiter.await.unwrap(), "an abandoned batch is not done");
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(!f.wait_done(seq, Duration::from_secs(60)).await);
    }
}
