//! The rebalance listener and its context.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::{Offset, Result, TopicPartition};

/// What a [`RebalanceListener`] can ask of the consumer while it runs.
///
/// The listener does not hold the consumer (the consumer is busy calling it); it
/// records its wishes here and the consumer applies them before it goes on:
/// seeks are applied before any record of an assigned partition is fetched, commits
/// are made synchronously before revoked partitions are given up.
///
/// ```
/// use weir_core::{Offset, RebalanceContext, TopicPartition};
/// let tp = TopicPartition::new("orders", 0);
/// let mut ctx = RebalanceContext::new([(tp.clone(), 17)].into_iter().collect());
/// assert_eq!(ctx.position(&tp), Some(17));
/// ctx.seek(tp.clone(), Offset::At(40));
/// ctx.commit(tp.clone(), 17);
/// assert_eq!(ctx.seeks()[&tp], Offset::At(40));
/// assert_eq!(ctx.commits()[&tp], 17);
/// ```
#[derive(Debug, Default, Clone)]
pub struct RebalanceContext {
    positions: BTreeMap<TopicPartition, i64>,
    seeks: BTreeMap<TopicPartition, Offset>,
    commits: BTreeMap<TopicPartition, i64>,
}

impl RebalanceContext {
    /// For backends: a context knowing the consumer's current positions (of the
    /// partitions being revoked; empty on assignment).
    pub fn new(positions: BTreeMap<TopicPartition, i64>) -> Self {
        Self {
            positions,
            ..Self::default()
        }
    }

    /// The consumer's position (next offset it would deliver) in a partition being
    /// revoked: what has been delivered so far. `None` when unknown.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.positions.get(tp).copied()
    }

    /// Start `tp` at `offset`. In `on_partitions_assigned` this decides the first
    /// record delivered from `tp`; without a seek, an assigned partition starts at the
    /// group's committed offset or per `auto.offset.reset`.
    pub fn seek(&mut self, tp: TopicPartition, offset: Offset) {
        self.seeks.insert(tp, offset);
    }

    /// Commit `next_offset` for `tp` to the group before the partition is given up
    /// (meaningful in `on_partitions_revoked`): the next owner starts there.
    pub fn commit(&mut self, tp: TopicPartition, next_offset: i64) {
        self.commits.insert(tp, next_offset);
    }

    /// For backends: the seeks asked for.
    pub fn seeks(&self) -> &BTreeMap<TopicPartition, Offset> {
        &self.seeks
    }

    /// For backends: the commits asked for.
    pub fn commits(&self) -> &BTreeMap<TopicPartition, i64> {
        &self.commits
    }

    /// For backends: take both.
    pub fn into_parts(
        self,
    ) -> (
        BTreeMap<TopicPartition, Offset>,
        BTreeMap<TopicPartition, i64>,
    ) {
        (self.seeks, self.commits)
    }
}

/// Callbacks around partition assignment, with a timing contract every backend keeps.
///
/// All methods run on the consumer's own task, inside `poll` (or `close` /
/// `unsubscribe`), one at a time. They may await anything (a database, a flush).
///
/// - [`on_partitions_revoked`](Self::on_partitions_revoked): runs **after** the consumer
///   stopped delivering records of these partitions and **before** it gives them up.
///   No record of a revoked partition is delivered once it has begun. Commits recorded
///   in the context are made synchronously before the partitions go, so the next owner
///   starts there. Eager rebalancing revokes everything; cooperative only what moves.
/// - [`on_partitions_assigned`](Self::on_partitions_assigned): runs **after** the
///   partitions are assigned and **before** any of their records is fetched or
///   delivered. Seeks recorded in the context are applied before fetching starts: the
///   first record delivered from a partition is the one sought to. Called (possibly
///   with an empty list) after every rebalance this member took part in.
/// - [`on_partitions_lost`](Self::on_partitions_lost): the partitions already belong
///   to someone else (the member was evicted: session timeout, `max.poll.interval.ms`).
///   Do not commit; drop what was buffered. A database fence rejects late writes.
///
/// Returning an error makes the `poll` that ran the callback return
/// [`Error::Listener`](crate::Error::Listener); the assignment itself stands.
///
/// ```
/// use weir_core::{async_trait, Offset, RebalanceContext, RebalanceListener, Result, TopicPartition};
///
/// /// Starts every assigned partition at offsets kept elsewhere (here: a map).
/// struct SeekToStored(std::collections::BTreeMap<TopicPartition, i64>);
///
/// #[async_trait]
/// impl RebalanceListener for SeekToStored {
///     async fn on_partitions_assigned(&self, assigned: &[TopicPartition], ctx: &mut RebalanceContext) -> Result<()> {
///         for tp in assigned {
///             if let Some(next) = self.0.get(tp) {
///                 ctx.seek(tp.clone(), Offset::At(*next));
///             }
///         }
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait RebalanceListener: Send + Sync {
    /// Partitions are about to be given up. See the trait's timing contract.
    async fn on_partitions_revoked(
        &self,
        revoked: &[TopicPartition],
        ctx: &mut RebalanceContext,
    ) -> Result<()> {
        let _ = (revoked, ctx);
        Ok(())
    }

    /// Partitions were assigned; set their start positions in `ctx`.
    async fn on_partitions_assigned(
        &self,
        assigned: &[TopicPartition],
        ctx: &mut RebalanceContext,
    ) -> Result<()> {
        let _ = (assigned, ctx);
        Ok(())
    }

    /// Partitions were taken away without a chance to commit.
    async fn on_partitions_lost(&self, lost: &[TopicPartition]) -> Result<()> {
        let _ = lost;
        Ok(())
    }
}

/// A listener that does nothing: partitions start at the committed offset or per
/// `auto.offset.reset`.
///
/// ```
/// let listener: std::sync::Arc<dyn weir_core::RebalanceListener> = std::sync::Arc::new(weir_core::NoopListener);
/// # drop(listener);
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopListener;

impl RebalanceListener for NoopListener {}
