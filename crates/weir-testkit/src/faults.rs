//! Deliberately broken consumers, to show that the suite notices each kind of bug.
//!
//! [`FaultyBackend`] wraps a working backend and breaks every consumer it builds in
//! one [`Fault`]; the [`suite_self_test!`](crate::suite_self_test) macro runs, for each
//! fault, the scenario that must catch it and fails if that scenario passes. A suite
//! that passes a broken consumer proves nothing, so every backend's instantiation can
//! run this beside the suite itself.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use weir_core::{
    Batch, CommitCallback, CommitOffsets, Consumer, ConsumerConfig, Error, RebalanceContext,
    RebalanceListener, Record, Result, Subscription, TopicPartition, WakeupHandle,
};

use crate::Backend;

/// One way of breaking a consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Seeks made in `on_partitions_assigned` are dropped.
    IgnoreListenerSeeks,
    /// Seeks made in `on_partitions_assigned` are applied only after the next poll
    /// returned (records fetched from the committed offset slip through first: the
    /// prefetch bug of librdkafka #458 / #3959).
    LateListenerSeeks,
    /// Commits made in `on_partitions_revoked` are dropped.
    DropRevokeCommits,
    /// After a revocation, the records of the revoked partitions from the previous
    /// poll are delivered again (a stale buffer).
    RedeliverRevoked,
    /// A poll that got records polls once more and returns both batches together,
    /// ignoring `max.poll.records`.
    OversizedBatches,
    /// Each batch is returned in reverse order.
    ReorderedBatches,
    /// `pause` is remembered by `paused()` but does not stop delivery.
    IgnoredPause,
    /// `close()` returns without leaving the group (the consumer is leaked).
    CloseWithoutLeaving,
    /// `commit_async` commits but never calls its callback.
    SilentCommitAsync,
    /// The wakeup handle is not connected to the consumer.
    IgnoredWakeup,
}

/// A backend whose consumers have one [`Fault`]; everything else is the wrapped
/// backend's. Its patience can be shortened, so that a scenario that waits for
/// something a fault prevents gives up sooner.
///
/// ```
/// # use weir_testkit::{faults::{Fault, FaultyBackend}, Backend};
/// # fn wrap(inner: impl Backend) {
/// let broken = FaultyBackend::new(inner, Fault::IgnoredPause)
///     .with_patience(std::time::Duration::from_secs(3));
/// assert_eq!(broken.fault(), Fault::IgnoredPause);
/// # }
/// ```
#[derive(Debug)]
pub struct FaultyBackend<B> {
    inner: B,
    fault: Fault,
    patience: Option<Duration>,
}

impl<B: Backend> FaultyBackend<B> {
    /// Break `inner`'s consumers with `fault`.
    pub fn new(inner: B, fault: Fault) -> Self {
        Self {
            inner,
            fault,
            patience: None,
        }
    }

    /// Use this patience instead of the wrapped backend's.
    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.patience = Some(patience);
        self
    }

    /// The fault.
    pub fn fault(&self) -> Fault {
        self.fault
    }
}

#[async_trait]
impl<B: Backend> Backend for FaultyBackend<B> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        self.inner.create_topic(topic, partitions).await
    }
    async fn add_partitions(&self, topic: &str, total: i32) -> Result<()> {
        self.inner.add_partitions(topic, total).await
    }
    async fn produce(
        &self,
        topic: &str,
        partition: i32,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<i64> {
        self.inner.produce(topic, partition, key, value).await
    }
    fn config(&self, group: Option<&str>) -> ConsumerConfig {
        self.inner.config(group)
    }
    async fn consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>> {
        let inner = self.inner.consumer(config).await?;
        Ok(Box::new(FaultyConsumer {
            inner: tokio::sync::Mutex::new(Some(inner)),
            fault: self.fault,
            paused: BTreeSet::new(),
            revoked: Arc::new(Mutex::new(Vec::new())),
            late_seeks: Arc::new(Mutex::new(BTreeMap::new())),
            previous: Vec::new(),
            detached: WakeupHandle::new(),
        }))
    }
    async fn abandon(&self, consumer: Box<dyn Consumer>) {
        self.inner.abandon(consumer).await
    }
    fn rejects_unknown_keys(&self) -> bool {
        self.inner.rejects_unknown_keys()
    }
    fn passthrough_keys(&self) -> Vec<(&'static str, &'static str)> {
        self.inner.passthrough_keys()
    }
    fn poll_timeout(&self) -> Duration {
        self.inner.poll_timeout()
    }
    fn patience(&self) -> Duration {
        self.patience.unwrap_or_else(|| self.inner.patience())
    }
    fn unique(&self, prefix: &str) -> String {
        self.inner.unique(prefix)
    }
}

struct FaultyConsumer {
    /// A mutex only so that `&self` methods can reach the consumer from a `Send`
    /// future; the consumer is driven by one task, so it is never contended.
    inner: tokio::sync::Mutex<Option<Box<dyn Consumer>>>,
    fault: Fault,
    paused: BTreeSet<TopicPartition>,
    revoked: Arc<Mutex<Vec<TopicPartition>>>,
    late_seeks: Arc<Mutex<BTreeMap<TopicPartition, weir_core::Offset>>>,
    previous: Vec<Record>,
    detached: WakeupHandle,
}

impl FaultyConsumer {
    fn inner(&mut self) -> Result<&mut Box<dyn Consumer>> {
        self.inner.get_mut().as_mut().ok_or(Error::Closed)
    }

    /// For the synchronous `&self` getters.
    fn peek<T: Default>(&self, f: impl FnOnce(&dyn Consumer) -> T) -> T {
        match self.inner.try_lock() {
            Ok(guard) => guard.as_deref().map(f).unwrap_or_default(),
            Err(_) => T::default(),
        }
    }
}

struct FaultyListener {
    inner: Arc<dyn RebalanceListener>,
    fault: Fault,
    revoked: Arc<Mutex<Vec<TopicPartition>>>,
    late_seeks: Arc<Mutex<BTreeMap<TopicPartition, weir_core::Offset>>>,
}

#[async_trait]
impl RebalanceListener for FaultyListener {
    async fn on_partitions_revoked(
        &self,
        revoked: &[TopicPartition],
        ctx: &mut RebalanceContext,
    ) -> Result<()> {
        self.revoked.lock().extend(revoked.iter().cloned());
        if self.fault == Fault::DropRevokeCommits {
            let positions: BTreeMap<TopicPartition, i64> = revoked
                .iter()
                .filter_map(|tp| ctx.position(tp).map(|p| (tp.clone(), p)))
                .collect();
            let mut scratch = RebalanceContext::new(positions);
            return self
                .inner
                .on_partitions_revoked(revoked, &mut scratch)
                .await;
        }
        self.inner.on_partitions_revoked(revoked, ctx).await
    }

    async fn on_partitions_assigned(
        &self,
        assigned: &[TopicPartition],
        ctx: &mut RebalanceContext,
    ) -> Result<()> {
        if self.fault == Fault::IgnoreListenerSeeks || self.fault == Fault::LateListenerSeeks {
            let mut scratch = RebalanceContext::default();
            let outcome = self
                .inner
                .on_partitions_assigned(assigned, &mut scratch)
                .await;
            if self.fault == Fault::LateListenerSeeks {
                self.late_seeks.lock().extend(scratch.into_parts().0);
            }
            return outcome;
        }
        self.inner.on_partitions_assigned(assigned, ctx).await
    }

    async fn on_partitions_lost(&self, lost: &[TopicPartition]) -> Result<()> {
        self.inner.on_partitions_lost(lost).await
    }
}

#[async_trait]
impl Consumer for FaultyConsumer {
    async fn subscribe(
        &mut self,
        subscription: Subscription,
        listener: Arc<dyn RebalanceListener>,
    ) -> Result<()> {
        let listener = Arc::new(FaultyListener {
            inner: listener,
            fault: self.fault,
            revoked: self.revoked.clone(),
            late_seeks: self.late_seeks.clone(),
        });
        self.inner()?.subscribe(subscription, listener).await
    }
    async fn unsubscribe(&mut self) -> Result<()> {
        self.inner()?.unsubscribe().await
    }
    async fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.inner()?.assign(partitions).await
    }
    async fn partitions_for(&self, topic: &str) -> Result<Vec<TopicPartition>> {
        let guard = self.inner.lock().await;
        let pending = match guard.as_deref() {
            Some(c) => c.partitions_for(topic),
            None => return Err(Error::Closed),
        };
        pending.await
    }
    async fn poll(&mut self, timeout: Duration) -> Result<Batch> {
        let fault = self.fault;
        let late_seeks = self.late_seeks.clone();
        let inner = self.inner()?;
        let mut records = inner.poll(timeout).await?.into_records();
        if fault == Fault::LateListenerSeeks && !records.is_empty() {
            let seeks = std::mem::take(&mut *late_seeks.lock());
            for (tp, offset) in seeks {
                inner.seek(&tp, offset)?;
            }
        }
        if fault == Fault::OversizedBatches && !records.is_empty() {
            records.extend(inner.poll(Duration::ZERO).await?.into_records());
        }
        if fault == Fault::ReorderedBatches {
            records.reverse();
        }
        if fault == Fault::RedeliverRevoked {
            let revoked: Vec<TopicPartition> = std::mem::take(&mut *self.revoked.lock());
            let stale: Vec<Record> = self
                .previous
                .iter()
                .filter(|r| revoked.contains(&r.topic_partition()))
                .cloned()
                .collect();
            self.previous = records.clone();
            records.extend(stale);
        }
        Ok(Batch::from(records))
    }
    async fn commit_sync(&mut self, offsets: CommitOffsets) -> Result<()> {
        self.inner()?.commit_sync(offsets).await
    }
    fn commit_async(&mut self, offsets: CommitOffsets, callback: Option<CommitCallback>) {
        let silent = self.fault == Fault::SilentCommitAsync;
        match self.inner.get_mut().as_mut() {
            Some(inner) => inner.commit_async(offsets, if silent { None } else { callback }),
            None => {
                if let Some(cb) = callback {
                    cb(Err(Error::Closed));
                }
            }
        }
    }
    async fn committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
        self.inner()?.committed(partitions).await
    }
    async fn position(&mut self, tp: &TopicPartition) -> Result<i64> {
        self.inner()?.position(tp).await
    }
    fn seek(&mut self, tp: &TopicPartition, offset: weir_core::Offset) -> Result<()> {
        self.inner()?.seek(tp, offset)
    }
    fn pause(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        if self.fault == Fault::IgnoredPause {
            self.inner()?;
            self.paused.extend(partitions.iter().cloned());
            return Ok(());
        }
        self.inner()?.pause(partitions)
    }
    fn resume(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        if self.fault == Fault::IgnoredPause {
            self.inner()?;
            for p in partitions {
                self.paused.remove(p);
            }
            return Ok(());
        }
        self.inner()?.resume(partitions)
    }
    fn paused(&self) -> BTreeSet<TopicPartition> {
        if self.fault == Fault::IgnoredPause {
            return self.paused.clone();
        }
        self.peek(|c| c.paused())
    }
    fn assignment(&self) -> BTreeSet<TopicPartition> {
        self.peek(|c| c.assignment())
    }
    async fn watermarks(&self, tp: &TopicPartition) -> Result<(i64, i64)> {
        let guard = self.inner.lock().await;
        let pending = match guard.as_deref() {
            Some(c) => c.watermarks(tp),
            None => return Err(Error::Closed),
        };
        pending.await
    }
    fn wakeup_handle(&self) -> WakeupHandle {
        if self.fault == Fault::IgnoredWakeup {
            return self.detached.clone();
        }
        self.peek(|c| Some(c.wakeup_handle()))
            .unwrap_or_else(|| self.detached.clone())
    }
    async fn close(&mut self) -> Result<()> {
        let mut inner = self.inner.get_mut().take().ok_or(Error::Closed)?;
        if self.fault == Fault::CloseWithoutLeaving {
            std::mem::forget(inner);
            return Ok(());
        }
        inner.close().await
    }
}

/// Run `scenario` (built around a [`FaultyBackend`]) and succeed only if it fails,
/// by an error or a failed assertion. Used by [`suite_self_test!`](crate::suite_self_test).
///
/// ```
/// let caught = weir_testkit::faults::expect_failure("always fails", async {
///     anyhow::bail!("as it should")
/// });
/// assert!(caught.is_ok());
/// let missed = weir_testkit::faults::expect_failure("always passes", async { Ok(()) });
/// assert!(missed.is_err());
/// ```
pub fn expect_failure<F>(name: &str, scenario: F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let outcome =
        std::panic::catch_unwind(AssertUnwindSafe(|| crate::run_scenario(name, scenario)));
    match outcome {
        Ok(Ok(())) => anyhow::bail!(
            "the suite did not notice the fault: `{name}` passed against a deliberately broken consumer"
        ),
        Ok(Err(e)) => {
            eprintln!("`{name}` caught the fault: {e:#}");
            Ok(())
        }
        Err(_) => Ok(()),
    }
}

/// Expand to one `#[test]` per [`Fault`], each running the scenario that must catch
/// it against `FaultyBackend::new(factory, fault)` (patience shortened to 3 s) and
/// failing if the scenario passes. Takes the same factory expression as
/// [`conformance_suite!`](crate::conformance_suite).
///
/// ```
/// # use std::time::Duration;
/// # use weir_core::{async_trait, Consumer, ConsumerConfig, Error, Result};
/// # struct MyBackend;
/// # #[async_trait]
/// # impl weir_testkit::Backend for MyBackend {
/// #     fn name(&self) -> &'static str { "mine" }
/// #     async fn create_topic(&self, t: &str, _: i32) -> Result<()> { Err(Error::UnknownTopic { topic: t.into() }) }
/// #     async fn add_partitions(&self, t: &str, _: i32) -> Result<()> { Err(Error::UnknownTopic { topic: t.into() }) }
/// #     async fn produce(&self, t: &str, _: i32, _: Option<&[u8]>, _: &[u8]) -> Result<i64> { Err(Error::UnknownTopic { topic: t.into() }) }
/// #     fn config(&self, _: Option<&str>) -> ConsumerConfig { ConsumerConfig::new() }
/// #     async fn consumer(&self, _: ConsumerConfig) -> Result<Box<dyn Consumer>> { Err(Error::Closed) }
/// # }
/// weir_testkit::suite_self_test!(MyBackend);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! suite_self_test {
    ($factory:expr $(,)?) => {
        $crate::__fault_tests! { $factory ;
            suite_catches_ignored_listener_seeks:
                IgnoreListenerSeeks => seek_in_assigned_decides_the_first_record,
            suite_catches_ignored_listener_seeks_in_the_exactly_once_recipe:
                IgnoreListenerSeeks => stored_offsets_sought_on_assignment_give_exactly_once_through_rebalances,
            suite_catches_ignored_listener_seeks_under_cooperative_rebalancing:
                IgnoreListenerSeeks => stored_offsets_sought_on_assignment_give_exactly_once_through_cooperative_rebalances,
            suite_catches_listener_seeks_applied_after_fetching:
                LateListenerSeeks => seek_in_a_slow_assigned_handler_decides_the_first_record,
            suite_catches_dropped_revoke_commits:
                DropRevokeCommits => revoked_runs_before_assigned_and_its_commit_is_where_the_next_owner_starts,
            suite_catches_records_of_revoked_partitions_delivered_again:
                RedeliverRevoked => stored_offsets_sought_on_assignment_give_exactly_once_through_rebalances,
            suite_catches_oversized_batches:
                OversizedBatches => max_poll_records_is_respected,
            suite_catches_reordered_batches:
                ReorderedBatches => records_of_a_partition_arrive_in_order_and_intact,
            suite_catches_ignored_pause:
                IgnoredPause => pause_and_resume,
            suite_catches_close_without_leaving:
                CloseWithoutLeaving => close_rebalances_before_the_session_timeout,
            suite_catches_silent_commit_async:
                SilentCommitAsync => commit_async_reports_to_its_callback,
            suite_catches_ignored_wakeup:
                IgnoredWakeup => wakeup_from_another_thread_interrupts_a_blocked_poll,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __fault_tests {
    ($factory:expr ; $($test:ident : $fault:ident => $scenario:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() -> ::core::result::Result<(), $crate::anyhow::Error> {
                $crate::faults::expect_failure(::core::stringify!($scenario), async {
                    let backend = $crate::faults::FaultyBackend::new(
                        $factory,
                        $crate::faults::Fault::$fault,
                    )
                    .with_patience(::std::time::Duration::from_secs(3));
                    $crate::with_time_limit(
                        &backend,
                        ::core::stringify!($scenario),
                        $crate::conformance::$scenario(&backend),
                    )
                    .await
                })
            }
        )*
    };
}
