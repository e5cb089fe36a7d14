//! Cooperative (incremental) rebalancing.

use std::collections::BTreeSet;

use weir_core::{AssignmentStrategy, TopicPartition};

use super::common::{group_config, topic as sub};
use crate::harness::{
    create_topic, deadline, list, poll_members_until, poll_round, produce_n, runs,
    wait_for_assignment, Event, Member, Timeline,
};
use crate::Backend;

/// With `partition.assignment.strategy=cooperative-sticky`, when a second member joins
/// while records flow, the first member keeps the partitions that do not move: they
/// stay in its assignment after every poll, it never gets `on_partitions_revoked`,
/// `on_partitions_lost` or a new `on_partitions_assigned` for them, and it reads each
/// of them without a gap or a repeat. Partitions that move are revoked from it before
/// they are assigned to the newcomer.
pub async fn cooperative_rebalance_keeps_unmoved_partitions_flowing(
    backend: &dyn Backend,
) -> anyhow::Result<()> {
    let topic = backend.unique("coop");
    let group = backend.unique("coop-group");
    let all = create_topic(backend, &topic, 4).await?;
    let config = group_config(backend, &group)
        .with_assignment_strategy(AssignmentStrategy::CooperativeSticky);
    let timeline = Timeline::new();
    let mut a = Member::subscribe(backend, "a", config.clone(), sub(&topic), &timeline).await?;
    wait_for_assignment(
        &mut [&mut a],
        &[4],
        &all,
        backend.poll_timeout(),
        deadline(backend),
    )
    .await?;
    let mut produced = 0;
    for p in 0..4 {
        produce_n(backend, &topic, p, produced, 1).await?;
    }
    produced += 1;
    let owned_all_from = a.assignments.len();
    let first_events = a.recorder.events().len();

    let mut b = Member::subscribe(backend, "b", config, sub(&topic), &timeline).await?;
    let give_up = deadline(backend);
    loop {
        for p in 0..4 {
            produce_n(backend, &topic, p, produced, 1).await?;
        }
        produced += 1;
        poll_round(&mut [&mut a, &mut b], backend.poll_timeout()).await?;
        let (sa, sb) = (a.assignment(), b.assignment());
        if sa.len() == 2 && sb.len() == 2 && sa.is_disjoint(&sb) {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < give_up,
            "expected a cooperative 2+2 assignment; a owns {}, b owns {}",
            list(&sa),
            list(&sb)
        );
    }
    let kept = a.assignment();
    let moved = b.assignment();

    for snapshot in &a.assignments[owned_all_from..] {
        let missing: Vec<&TopicPartition> = kept.difference(&snapshot.value).collect();
        assert!(
            missing.is_empty(),
            "the first member should keep its unmoved partitions {} through the cooperative rebalance; after one poll it owned only {}",
            list(&kept),
            list(&snapshot.value)
        );
    }
    for e in &a.recorder.events()[first_events..] {
        let named: BTreeSet<TopicPartition> = match &e.value {
            Event::Assigned(ps) | Event::Lost(ps) => ps.iter().cloned().collect(),
            Event::Revoked { partitions, .. } => partitions.iter().cloned().collect(),
        };
        let touched: Vec<&TopicPartition> = named.intersection(&kept).collect();
        assert!(
            touched.is_empty(),
            "the first member got {:?} for unmoved partitions {} during a cooperative rebalance",
            e.value,
            list(touched)
        );
    }
    for p in &moved {
        let revoked = a
            .recorder
            .events_of(p)
            .into_iter()
            .find(|e| matches!(e.value, Event::Revoked { .. }))
            .map(|e| e.seq);
        let assigned = b
            .recorder
            .events_of(p)
            .into_iter()
            .find(|e| matches!(e.value, Event::Assigned(_)))
            .map(|e| e.seq);
        assert!(
            revoked.is_some() && assigned.is_some() && revoked < assigned,
            "{p} moved: it should be revoked from the first member (event {revoked:?}) before it is assigned to the newcomer (event {assigned:?})"
        );
    }

    let target = produced as i64 - 1;
    poll_members_until(
        &mut [&mut a, &mut b],
        backend.poll_timeout(),
        deadline(backend),
        &format!("every partition read up to offset {target}"),
        |ms| {
            kept.iter().all(|p| ms[0].offsets_of(p).contains(&target))
                && moved.iter().all(|p| ms[1].offsets_of(p).contains(&target))
        },
    )
    .await?;
    for p in &kept {
        let got = a.offsets_of(p);
        assert_eq!(
            got,
            (0..=target).collect::<Vec<_>>(),
            "the first member should read unmoved {p} without gap or repeat: {}",
            runs(&got)
        );
    }
    Ok(())
}
