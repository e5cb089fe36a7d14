//! The `Consumer` trait every backend implements.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{Batch, Offset, RebalanceListener, Result, TopicPartition, WakeupHandle};

/// What to subscribe to: a list of topics or a pattern.
///
/// ```
/// use weir_core::Subscription;
/// let s = Subscription::pattern("^orders-.*$")?;
/// assert!(s.matches("orders-eu"));
/// assert!(!s.matches("payments"));
/// let s = Subscription::topics(["a", "b"]);
/// assert!(s.matches("b"));
/// # Ok::<(), weir_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub enum Subscription {
    /// These topics.
    Topics(Vec<String>),
    /// Every topic whose whole name matches; topics created later that match are picked
    /// up (a rebalance follows).
    Pattern(regex::Regex),
}

impl Subscription {
    /// A list of topics.
    pub fn topics<I, S>(topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Subscription::Topics(topics.into_iter().map(Into::into).collect())
    }

    /// A regular expression (Rust `regex` syntax) that must match a whole topic name.
    pub fn pattern(re: &str) -> Result<Self> {
        let anchored = format!("^(?:{re})$");
        regex::Regex::new(&anchored)
            .map(Subscription::Pattern)
            .map_err(|e| crate::Error::config("subscription.pattern", e.to_string()))
    }

    /// Whether `topic` is part of this subscription.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Subscription::Topics(t) => t.iter().any(|x| x == topic),
            Subscription::Pattern(re) => re.is_match(topic),
        }
    }
}

/// What a commit commits.
///
/// ```
/// use weir_core::{CommitOffsets, TopicPartition};
/// let explicit = CommitOffsets::from([(TopicPartition::new("t", 0), 42)]);
/// assert!(matches!(explicit, CommitOffsets::Explicit(_)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitOffsets {
    /// The positions after the records returned by the latest polls (what has been
    /// delivered), for every assigned partition.
    Consumed,
    /// This partition → next offset map (e.g. mid-batch).
    Explicit(BTreeMap<TopicPartition, i64>),
}

impl<const N: usize> From<[(TopicPartition, i64); N]> for CommitOffsets {
    fn from(v: [(TopicPartition, i64); N]) -> Self {
        CommitOffsets::Explicit(v.into_iter().collect())
    }
}

impl From<BTreeMap<TopicPartition, i64>> for CommitOffsets {
    fn from(v: BTreeMap<TopicPartition, i64>) -> Self {
        CommitOffsets::Explicit(v)
    }
}

/// Called once with the outcome of a [`Consumer::commit_async`]: the offsets that were
/// committed, or why not.
pub type CommitCallback = Box<dyn FnOnce(Result<BTreeMap<TopicPartition, i64>>) + Send + 'static>;

/// A Kafka-style consumer: the API of Kafka's `KafkaConsumer`, async.
///
/// Implemented by the embedded log (`weir-log`) and by Kafka (`weir-kafka`); both pass
/// the same conformance suite (`weir-testkit`). The consumer is driven by one task;
/// only its [`WakeupHandle`] may be used from elsewhere.
///
/// Group membership is driven by `poll`: the first poll joins the group, every poll
/// heartbeats, rebalances and [`RebalanceListener`] callbacks run inside it.
///
/// ```no_run
/// # async fn example(mut consumer: Box<dyn weir_core::Consumer>) -> weir_core::Result<()> {
/// use std::{sync::Arc, time::Duration};
/// use weir_core::{CommitOffsets, Error, NoopListener, Subscription};
///
/// consumer.subscribe(Subscription::topics(["orders"]), Arc::new(NoopListener)).await?;
/// let wakeup = consumer.wakeup_handle(); // give this to a signal handler
/// loop {
///     match consumer.poll(Duration::from_millis(500)).await {
///         Ok(batch) => {
///             for record in &batch { /* process */ let _ = record; }
///             consumer.commit_async(CommitOffsets::Consumed, None);
///         }
///         Err(Error::Wakeup) => break,
///         Err(e) => return Err(e),
///     }
/// }
/// consumer.commit_sync(CommitOffsets::Consumed).await?;
/// consumer.close().await
/// # }
/// ```
#[async_trait]
pub trait Consumer: Send {
    /// Join `group.id` and consume these topics; replaces any earlier subscription.
    /// Takes effect on the next poll. Fails with `IllegalState` after `assign`.
    async fn subscribe(
        &mut self,
        subscription: Subscription,
        listener: Arc<dyn RebalanceListener>,
    ) -> Result<()>;

    /// Leave the group (revoking all partitions through the listener) and stop
    /// consuming.
    async fn unsubscribe(&mut self) -> Result<()>;

    /// Standalone mode: consume exactly these partitions, no group, no rebalances.
    /// Replaces any earlier assignment. Fails with `IllegalState` while subscribed.
    async fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()>;

    /// The partitions of a topic (`UnknownTopic` if it does not exist).
    async fn partitions_for(&self, topic: &str) -> Result<Vec<TopicPartition>>;

    /// Wait up to `timeout` for records and return at most `max.poll.records` of them,
    /// each partition's in offset order. Drives the group: joins, heartbeats,
    /// rebalances and listener callbacks happen here. Returns `Error::Wakeup` once
    /// per [`WakeupHandle::wakeup`].
    async fn poll(&mut self, timeout: Duration) -> Result<Batch>;

    /// Commit and wait for the outcome, retrying retriable failures. Needs a group.
    async fn commit_sync(&mut self, offsets: CommitOffsets) -> Result<()>;

    /// Start a commit and return; the outcome goes to `callback` (never retried: a
    /// retry could overwrite a newer commit). The callback runs at the latest during
    /// a later `poll`, `commit_sync` or `close` of this consumer.
    fn commit_async(&mut self, offsets: CommitOffsets, callback: Option<CommitCallback>);

    /// The group's committed offsets for these partitions (`None`: nothing committed).
    async fn committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>>;

    /// The offset of the next record that would be delivered from `tp` (resolving a
    /// pending reset if needed). `NotAssigned` if `tp` is not assigned.
    async fn position(&mut self, tp: &TopicPartition) -> Result<i64>;

    /// The next poll delivers `tp` from `offset`. Records of `tp` already fetched are
    /// discarded. `NotAssigned` if `tp` is not assigned.
    fn seek(&mut self, tp: &TopicPartition, offset: Offset) -> Result<()>;

    /// Seek these partitions to their log start.
    fn seek_to_beginning(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        for tp in partitions {
            self.seek(tp, Offset::Beginning)?;
        }
        Ok(())
    }

    /// Seek these partitions to their log end.
    fn seek_to_end(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        for tp in partitions {
            self.seek(tp, Offset::End)?;
        }
        Ok(())
    }

    /// Stop delivering records of these partitions without giving them up (the
    /// member keeps heartbeating through polls).
    fn pause(&mut self, partitions: &[TopicPartition]) -> Result<()>;

    /// Deliver records of these partitions again, from where they stopped.
    fn resume(&mut self, partitions: &[TopicPartition]) -> Result<()>;

    /// The partitions currently paused.
    fn paused(&self) -> BTreeSet<TopicPartition>;

    /// The partitions currently assigned to this consumer.
    fn assignment(&self) -> BTreeSet<TopicPartition>;

    /// The log start and end offsets of a partition (low and high watermarks).
    async fn watermarks(&self, tp: &TopicPartition) -> Result<(i64, i64)>;

    /// A handle to interrupt `poll` from another task or thread.
    fn wakeup_handle(&self) -> WakeupHandle;

    /// Leave the group at once (revoking through the listener, so the others rebalance
    /// without waiting for `session.timeout.ms`), finish pending async commits, release
    /// resources. Returns within a bounded time even if the backend is unreachable.
    /// Further calls fail with `Error::Closed`.
    async fn close(&mut self) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_is_object_safe() {
        fn takes(_: Option<Box<dyn Consumer>>) {}
        takes(None);
    }

    #[test]
    fn pattern_is_anchored() {
        let s = Subscription::pattern("ord.*").unwrap();
        assert!(s.matches("orders"));
        assert!(!s.matches("my-orders"));
        let e = Subscription::pattern("(").unwrap_err();
        assert!(e.to_string().contains("subscription.pattern"));
    }
}
