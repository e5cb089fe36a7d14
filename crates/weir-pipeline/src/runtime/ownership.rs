//! Which partitions this member owns, under which claim, and the one claim path shared
//! by the rebalance listener and the run loop.
//!
//! A claim bumps the partition's epoch in the offsets table and reads its stored
//! `next_offset` (see `weir_sql::OffsetStore::claim`); the consumer is sought there
//! before any record of the partition is delivered. Each claim gets a new local
//! *generation*, so buffered work of an older claim of the same partition is never
//! committed under the new one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use sqlx::Pool;
use weir_core::{AutoOffsetReset, Offset, RebalanceContext, RebalanceListener, TopicPartition};
use weir_sql::{Dialect, OffsetStore};

use super::flight::Flight;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PartState {
    pub epoch: i64,
    /// The stored `next_offset` read by the claim (`None`: never committed).
    pub claimed: Option<i64>,
    /// The stored `next_offset` as this member last read (claim) or wrote (commit) it,
    /// or for a partition never committed the offset of the first record this claim
    /// read: the lag gauge's base (and only that).
    pub stored: Option<i64>,
    pub generation: u64,
    pub fenced: bool,
    /// A record of this claim was processed (the seek on assignment took effect).
    pub started: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Ownership {
    pub parts: HashMap<TopicPartition, PartState>,
    next_generation: u64,
    pub claims: u64,
}

impl Ownership {
    pub(crate) fn insert_claim(&mut self, tp: TopicPartition, epoch: i64, claimed: Option<i64>) {
        self.next_generation += 1;
        self.claims += 1;
        self.parts.insert(
            tp,
            PartState {
                epoch,
                claimed,
                stored: claimed,
                generation: self.next_generation,
                fenced: false,
                started: false,
            },
        );
    }

    /// Whether work read under claim `generation` of `tp` may still be committed.
    pub(crate) fn owns(&self, tp: &TopicPartition, generation: u64) -> bool {
        self.parts
            .get(tp)
            .is_some_and(|s| !s.fenced && s.generation == generation)
    }

    /// Mark `tp` fenced, if it is still under claim `generation` (a later claim of the
    /// same partition by this member is not affected).
    pub(crate) fn fence(&mut self, tp: &TopicPartition, generation: u64) -> bool {
        match self.parts.get_mut(tp) {
            Some(s) if s.generation == generation => {
                s.fenced = true;
                true
            }
            _ => false,
        }
    }
}

pub(crate) type SharedOwnership = Arc<Mutex<Ownership>>;

/// Claims partitions and records the claims in the shared ownership.
pub(crate) struct Claimer<DB: Dialect> {
    pub pool: Pool<DB>,
    pub store: OffsetStore<DB>,
    pub owner: Arc<str>,
    pub reset: AutoOffsetReset,
    pub state: SharedOwnership,
    /// The ready probe's "database answered" (a claim is a database round trip).
    pub health: Arc<super::Health>,
}

impl<DB: Dialect> Claimer<DB> {
    /// Claim `tps`; returns where each must be sought before it is consumed.
    pub(crate) async fn claim(
        &self,
        tps: &[TopicPartition],
    ) -> weir_sql::Result<Vec<(TopicPartition, Offset)>> {
        let claims = self.store.claim(&self.pool, tps, &self.owner).await;
        self.health.database(claims.is_ok());
        let claims = claims?;
        weir_sql::failpoint::hit("between_claim_and_assign");
        let mut st = self.state.lock();
        let mut seeks = Vec::with_capacity(claims.len());
        for (tp, c) in claims {
            let start = start_of(&tp, c.next_offset, self.reset)?;
            tracing::info!(partition = %tp, epoch = c.epoch, next_offset = ?c.next_offset, "claimed");
            st.insert_claim(tp.clone(), c.epoch, c.next_offset);
            seeks.push((tp, start));
        }
        Ok(seeks)
    }
}

fn start_of(
    tp: &TopicPartition,
    stored: Option<i64>,
    reset: AutoOffsetReset,
) -> weir_sql::Result<Offset> {
    match (stored, reset) {
        (Some(next), _) => Ok(Offset::At(next)),
        (None, AutoOffsetReset::Earliest) => Ok(Offset::Beginning),
        (None, AutoOffsetReset::Latest) => Ok(Offset::End),
        (None, AutoOffsetReset::None) => {
            Err(weir_sql::Error::Consumer(weir_core::Error::NoOffset {
                partition: tp.clone(),
                position: None,
                log_start: -1,
                log_end: -1,
            }))
        }
    }
}

/// The runtime's rebalance listener.
///
/// - assigned: claim, then seek to the stored offsets (nothing of a partition is
///   delivered before this returns);
/// - revoked: wait (at most the revoke timeout) until every batch already handed to
///   the commit task is committed, then give the partitions up; records of them not
///   yet handed over are dropped and re-read by the next owner;
/// - lost: give them up at once; the fence rejects any late commit.
pub(crate) struct Listener<DB: Dialect> {
    pub claimer: Arc<Claimer<DB>>,
    pub flight: Arc<Flight>,
    pub revoke_timeout: Duration,
}

#[async_trait]
impl<DB: Dialect> RebalanceListener for Listener<DB> {
    async fn on_partitions_revoked(
        &self,
        revoked: &[TopicPartition],
        _ctx: &mut RebalanceContext,
    ) -> weir_core::Result<()> {
        let seq = self.flight.last_sent();
        if !self.flight.wait_done(seq, self.revoke_timeout).await {
            tracing::warn!(partitions = ?revoked, timeout = ?self.revoke_timeout, "revoke: in-flight batches not committed in time; giving the partitions up (the fence rejects a late commit)");
        }
        let mut st = self.claimer.state.lock();
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
            // unowned until the run loop claims them.
            let mut st = self.claimer.state.lock();
            for tp in assigned {
                st.parts.remove(tp);
            }
        }
        let seeks = self.claimer.claim(assigned).await?;
        for (tp, offset) in seeks {
            ctx.seek(tp, offset);
        }
        Ok(())
    }

    async fn on_partitions_lost(&self, lost: &[TopicPartition]) -> weir_core::Result<()> {
        let mut st = self.claimer.state.lock();
        for tp in lost {
            st.parts.remove(tp);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_separate_claims() {
        let tp = TopicPartition::new("t", 0);
        let mut o = Ownership::default();
        o.insert_claim(tp.clone(), 1, Some(5));
        let g1 = o.parts[&tp].generation;
        assert!(o.owns(&tp, g1));
        o.insert_claim(tp.clone(), 2, Some(9));
        let g2 = o.parts[&tp].generation;
        assert!(!o.owns(&tp, g1), "old claim's work is not ours any more");
        assert!(
            !o.fence(&tp, g1),
            "fencing an old claim leaves the new one alone"
        );
        assert!(o.owns(&tp, g2));
        assert!(o.fence(&tp, g2));
        assert!(!o.owns(&tp, g2));
        assert_eq!(o.claims, 2);
    }
}
