//! The rebalance listener that claims partitions and seeks to their stored offsets.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use sqlx::Pool;
use weir_core::{AutoOffsetReset, Offset, RebalanceContext, RebalanceListener, TopicPartition};

use crate::dialect::Dialect;
use crate::{OffsetStore, Result};

/// What this member knows about a partition it owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PartState {
    /// The epoch of our claim.
    pub epoch: i64,
    /// The stored next offset at the claim, then after each of our commits.
    pub expected: Option<i64>,
    /// Changes with every claim: buffered work of an older generation is dropped.
    pub generation: u64,
    /// A commit found another owner: stop processing until claimed again.
    pub fenced: bool,
    /// Whether a record of this claim was processed yet (to check the first one is
    /// the one sought to).
    pub started: bool,
}

/// Partition ownership shared by the listener (which runs inside `poll`) and the
/// runner (which commits between polls).
#[derive(Debug, Default)]
pub(crate) struct Ownership {
    pub parts: HashMap<TopicPartition, PartState>,
    next_generation: u64,
    pub claims: u64,
}

impl Ownership {
    pub fn insert_claim(&mut self, tp: TopicPartition, epoch: i64, expected: Option<i64>) {
        self.next_generation += 1;
        self.claims += 1;
        self.parts.insert(
            tp,
            PartState {
                epoch,
                expected,
                generation: self.next_generation,
                fenced: false,
                started: false,
            },
        );
    }
}

/// A [`RebalanceListener`] for exactly-once sinks.
///
/// - assigned: claims the partitions in the offsets table (epoch + 1) and seeks each
///   to its stored `next_offset`; a partition never committed is left to the
///   consumer's `auto.offset.reset`.
/// - revoked / lost: forgets the partitions, so that nothing buffered for them is
///   written afterwards; a late commit of theirs is also refused by the epoch fence.
///
/// [`ExactlyOnceRunner`](crate::ExactlyOnceRunner) creates and subscribes it; build one
/// yourself only when driving the consumer by hand.
///
/// ```no_run
/// # async fn example(pool: sqlx::PgPool, mut consumer: Box<dyn weir_core::Consumer>) -> weir_sql::Result<()> {
/// use std::sync::Arc;
/// use weir_sql::{ExactlyOnceListener, OffsetStore};
/// let listener = Arc::new(ExactlyOnceListener::new(pool, OffsetStore::new("job")?, "worker-1"));
/// consumer.subscribe(weir_core::Subscription::topics(["orders"]), listener.clone()).await?;
/// # Ok(()) }
/// ```
pub struct ExactlyOnceListener<DB: Dialect> {
    pool: Pool<DB>,
    store: OffsetStore<DB>,
    owner: Arc<str>,
    reset: AutoOffsetReset,
    pub(crate) state: Arc<Mutex<Ownership>>,
}

impl<DB: Dialect> std::fmt::Debug for ExactlyOnceListener<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExactlyOnceListener")
            .field("job", &self.store.job())
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl<DB: Dialect> ExactlyOnceListener<DB> {
    /// A listener claiming partitions of `store`'s job for `owner` (the name stored
    /// in the offsets table's `owner` column; unique per member helps debugging).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> weir_sql::Result<()> {
    /// use weir_sql::{ExactlyOnceListener, OffsetStore};
    /// let pool = sqlx::SqlitePool::connect("sqlite::memory:")
    ///     .await
    ///     .map_err(|e| weir_sql::Error::db("connect", e))?;
    /// let store = OffsetStore::new("orders-to-db")?;
    /// store.migrate(&pool).await?;
    /// let listener = ExactlyOnceListener::new(pool, store, "worker-1");
    /// assert!(format!("{listener:?}").contains("worker-1"));
    /// # Ok(()) }
    /// ```
    pub fn new(pool: Pool<DB>, store: OffsetStore<DB>, owner: &str) -> Self {
        Self {
            pool,
            store,
            owner: Arc::from(owner),
            reset: AutoOffsetReset::Earliest,
            state: Arc::default(),
        }
    }

    /// Where a partition with no stored offset (never committed by this job) starts:
    /// `Earliest` (the default: the log start), `Latest` (the log end) or `None` (an
    /// error). Decided here, by the database, never by the consumer group's own
    /// committed offset (which an auto-commit may have moved past records this job
    /// never stored).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> weir_sql::Result<()> {
    /// use weir_core::AutoOffsetReset;
    /// use weir_sql::{ExactlyOnceListener, OffsetStore};
    /// let pool = sqlx::SqlitePool::connect("sqlite::memory:")
    ///     .await
    ///     .map_err(|e| weir_sql::Error::db("connect", e))?;
    /// let listener = ExactlyOnceListener::new(pool, OffsetStore::new("job")?, "me")
    ///     .with_auto_offset_reset(AutoOffsetReset::Latest);
    /// # drop(listener); Ok(()) }
    /// ```
    pub fn with_auto_offset_reset(mut self, reset: AutoOffsetReset) -> Self {
        self.reset = reset;
        self
    }

    pub(crate) fn with_state(mut self, state: Arc<Mutex<Ownership>>) -> Self {
        self.state = state;
        self
    }

    /// The epoch and stored offset this member holds for `tp`, if it owns it (set
    /// when the consumer assigns it, cleared when it is revoked or lost).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> weir_sql::Result<()> {
    /// use weir_core::TopicPartition;
    /// use weir_sql::{ExactlyOnceListener, OffsetStore};
    /// let pool = sqlx::SqlitePool::connect("sqlite::memory:")
    ///     .await
    ///     .map_err(|e| weir_sql::Error::db("connect", e))?;
    /// let listener = ExactlyOnceListener::new(pool, OffsetStore::new("job")?, "worker-1");
    /// // Nothing was assigned yet.
    /// assert_eq!(listener.claimed(&TopicPartition::new("orders", 0)), None);
    /// # Ok(()) }
    /// ```
    pub fn claimed(&self, tp: &TopicPartition) -> Option<(i64, Option<i64>)> {
        self.state
            .lock()
            .parts
            .get(tp)
            .map(|s| (s.epoch, s.expected))
    }

    async fn claim_into(&self, tps: &[TopicPartition], ctx: &mut RebalanceContext) -> Result<()> {
        let claims = self.store.claim(&self.pool, tps, &self.owner).await?;
        crate::failpoint::hit("between_claim_and_assign");
        let mut st = self.state.lock();
        for (tp, c) in claims {
            ctx.seek(tp.clone(), start_of(&tp, c.next_offset, self.reset)?);
            tracing::debug!(partition = %tp, epoch = c.epoch, next_offset = ?c.next_offset, "claimed");
            st.insert_claim(tp, c.epoch, c.next_offset);
        }
        Ok(())
    }
}

#[async_trait]
impl<DB: Dialect> RebalanceListener for ExactlyOnceListener<DB> {
    async fn on_partitions_revoked(
        &self,
        revoked: &[TopicPartition],
        _ctx: &mut RebalanceContext,
    ) -> weir_core::Result<()> {
        let mut st = self.state.lock();
        for tp in revoked {
            st.parts.remove(tp);
        }
        Ok(())
    }

    async fn on_partitions_assigned(
        &self,
        assigned: &[TopicPartition],
        ctx: &mut RebalanceContext,
    ) -> weir_core::Result<()> {
        {
            // Forget older claims first: if the claim fails, these partitions are
            // unowned until the runner claims them.
            let mut st = self.state.lock();
            for tp in assigned {
                st.parts.remove(tp);
            }
        }
        self.claim_into(assigned, ctx).await.map_err(Into::into)
    }

    async fn on_partitions_lost(&self, lost: &[TopicPartition]) -> weir_core::Result<()> {
        let mut st = self.state.lock();
        for tp in lost {
            st.parts.remove(tp);
        }
        Ok(())
    }
}

/// Where a claimed partition starts: its stored next offset, or, for a partition this
/// job never committed, per `reset`.
pub(crate) fn start_of(
    tp: &TopicPartition,
    stored: Option<i64>,
    reset: AutoOffsetReset,
) -> Result<Offset> {
    match (stored, reset) {
        (Some(next), _) => Ok(Offset::At(next)),
        (None, AutoOffsetReset::Earliest) => Ok(Offset::Beginning),
        (None, AutoOffsetReset::Latest) => Ok(Offset::End),
        (None, AutoOffsetReset::None) => Err(crate::Error::Consumer(weir_core::Error::NoOffset {
            partition: tp.clone(),
            position: None,
            log_start: -1,
            log_end: -1,
        })),
    }
}
