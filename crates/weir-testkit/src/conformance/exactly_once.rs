//! The exactly-once recipe through joins, a close and a crash: results and offsets are
//! stored together, and every assignment seeks to the stored offsets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use parking_lot::Mutex;
use weir_core::{AssignmentStrategy, Offset, RebalanceContext, RebalanceListener, TopicPartition};

use super::common::{group_config, topic as sub};
use crate::harness::{
    create_topic, deadline, describe, list, partitions_of, poll_round, produce_n, Member, Recorder,
    Timeline,
};
use crate::Backend;

/// The "database": per partition, the next offset to process. Processing a record and
/// storing its offset happen together, as in one transaction.
type Store = Arc<Mutex<BTreeMap<TopicPartition, i64>>>;

/// Seeks every assigned partition to its stored offset, then lets the recorder record.
struct SeekToStored {
    store: Store,
    recorder: Arc<Recorder>,
}

#[async_trait]
impl RebalanceListener for SeekToStored {
    async fn on_partitions_revoked(
        &self,
        revoked: &[TopicPartition],
        ctx: &mut RebalanceContext,
    ) -> weir_core::Result<()> {
        self.recorder.on_partitions_revoked(revoked, ctx).await
    }

    async fn on_partitions_assigned(
        &self,
        assigned: &[TopicPartition],
        ctx: &mut RebalanceContext,
    ) -> weir_core::Result<()> {
        let stored = self.store.lock().clone();
        for tp in assigned {
            if let Some(next) = stored.get(tp) {
                ctx.seek(tp.clone(), Offset::At(*next));
            }
        }
        self.recorder.on_partitions_assigned(assigned, ctx).await
    }

    async fn on_partitions_lost(&self, lost: &[TopicPartition]) -> weir_core::Result<()> {
        self.recorder.on_partitions_lost(lost).await
    }
}

/// Drives a group through phases while records flow, "processing" every delivery
/// against the store: a record must be exactly the stored next offset of its
/// partition (anything else is a duplicate or a gap).
struct Run<'a> {
    backend: &'a dyn Backend,
    topic: String,
    store: Store,
    processed: BTreeMap<String, usize>,
    produced: usize,
    strategy: AssignmentStrategy,
}

impl Run<'_> {
    async fn member(
        &self,
        name: &str,
        group: &str,
        timeline: &Arc<Timeline>,
    ) -> anyhow::Result<Member> {
        let recorder = Recorder::new(timeline.clone());
        let listener = Arc::new(SeekToStored {
            store: self.store.clone(),
            recorder: recorder.clone(),
        });
        Member::subscribe_with_listener(
            self.backend,
            name,
            group_config(self.backend, group).with_assignment_strategy(self.strategy),
            sub(&self.topic),
            recorder,
            listener,
        )
        .await
    }

    fn process(&mut self, members: &[&mut Member]) {
        for m in members {
            let done = self.processed.entry(m.name.clone()).or_insert(0);
            let mut store = self.store.lock();
            for d in &m.deliveries[*done..] {
                let r = &d.value;
                let tp = r.topic_partition();
                let next = store.get(&tp).copied().unwrap_or(0);
                assert_eq!(
                    r.offset,
                    next,
                    "member {} was given {} while the stored next offset of {tp} was {next} ({}); it owns {}",
                    m.name,
                    r.coordinates(),
                    if r.offset < next { "a duplicate" } else { "a gap" },
                    list(&m.assignment())
                );
                store.insert(tp, next + 1);
            }
            *done = m.deliveries.len();
        }
    }

    /// Produce one record per partition, poll every member once, process; until the
    /// members' assignment sizes (sorted) are `sizes`.
    async fn until_sizes(
        &mut self,
        members: &mut [&mut Member],
        sizes: &[usize],
        give_up: Instant,
    ) -> anyhow::Result<()> {
        loop {
            for p in 0..4 {
                produce_n(self.backend, &self.topic, p, self.produced, 1).await?;
            }
            self.produced += 1;
            poll_round(members, self.backend.poll_timeout()).await?;
            self.process(members);
            let mut got: Vec<usize> = members.iter().map(|m| m.assignment().len()).collect();
            got.sort_unstable();
            if got == sizes {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < give_up,
                "expected assignment sizes {sizes:?}; seen: {}",
                describe(members)
            );
        }
    }
}

/// The exactly-once recipe, end to end on the consumer side: a listener that seeks
/// every assigned partition to the offset stored with the results, through a member
/// joining, another joining, one closing and one crashing, while records flow. Every
/// record is processed exactly once: each delivery is the stored next offset of its
/// partition, and at the end every partition's stored offset is its log end.
pub async fn stored_offsets_sought_on_assignment_give_exactly_once_through_rebalances(
    backend: &dyn Backend,
) -> anyhow::Result<()> {
    exactly_once_through_rebalances(backend, AssignmentStrategy::Range).await
}

/// As [`stored_offsets_sought_on_assignment_give_exactly_once_through_rebalances`],
/// with `partition.assignment.strategy=cooperative-sticky`: only the partitions that
/// move are revoked and assigned (and sought), the others keep flowing.
pub async fn stored_offsets_sought_on_assignment_give_exactly_once_through_cooperative_rebalances(
    backend: &dyn Backend,
) -> anyhow::Result<()> {
    exactly_once_through_rebalances(backend, AssignmentStrategy::CooperativeSticky).await
}

async fn exactly_once_through_rebalances(
    backend: &dyn Backend,
    strategy: AssignmentStrategy,
) -> anyhow::Result<()> {
    let topic = backend.unique("exactly-once");
    let group = backend.unique("exactly-once-group");
    let all = create_topic(backend, &topic, 4).await?;
    let session = group_config(backend, &group).session_timeout();
    let timeline = Timeline::new();
    let mut run = Run {
        backend,
        topic: topic.clone(),
        store: Arc::new(Mutex::new(BTreeMap::new())),
        processed: BTreeMap::new(),
        produced: 0,
        strategy,
    };

    let mut a = run.member("a", &group, &timeline).await?;
    run.until_sizes(&mut [&mut a], &[4], deadline(backend))
        .await?;
    let mut b = run.member("b", &group, &timeline).await?;
    run.until_sizes(&mut [&mut a, &mut b], &[2, 2], deadline(backend))
        .await?;
    let mut c = run.member("c", &group, &timeline).await?;
    run.until_sizes(&mut [&mut a, &mut b, &mut c], &[1, 1, 2], deadline(backend))
        .await?;
    b.consumer.close().await?;
    run.until_sizes(&mut [&mut a, &mut c], &[2, 2], deadline(backend))
        .await?;
    backend.abandon(c.consumer).await;
    run.until_sizes(&mut [&mut a], &[4], deadline(backend) + session)
        .await?;

    let end = run.produced as i64;
    let give_up = deadline(backend);
    loop {
        let caught_up = {
            let store = run.store.lock();
            all.iter().all(|p| store.get(p) == Some(&end))
        };
        if caught_up {
            break;
        }
        anyhow::ensure!(
            Instant::now() < give_up,
            "expected every partition processed up to offset {end}; stored offsets: {:?}",
            run.store.lock()
        );
        poll_round(&mut [&mut a], backend.poll_timeout()).await?;
        run.process(&[&mut a]);
    }
    let store = run.store.lock().clone();
    let want: BTreeMap<TopicPartition, i64> = partitions_of(&topic, 4)
        .into_iter()
        .map(|p| (p, end))
        .collect();
    assert_eq!(
        store, want,
        "stored next offsets after processing everything"
    );
    a.consumer.close().await?;
    Ok(())
}
