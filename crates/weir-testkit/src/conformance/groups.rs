//! Consumer groups share partitions; separate groups each get everything.

use std::collections::{BTreeMap, BTreeSet};

use weir_core::TopicPartition;

use super::common::{group_config, topic as sub, tp};
use crate::harness::{
    create_topic, deadline, list, poll_members_until, produce_n, summarize, value_for,
    wait_for_assignment, Member, Timeline,
};
use crate::Backend;

/// One consumer in a group on a 4-partition topic reads all 4 partitions.
pub async fn group_of_one_reads_all_four_partitions(backend: &dyn Backend) -> anyhow::Result<()> {
    group_shares_four_partitions(backend, &[4]).await
}

/// Two consumers in a group on a 4-partition topic read 2 partitions each.
pub async fn group_of_two_reads_two_partitions_each(backend: &dyn Backend) -> anyhow::Result<()> {
    group_shares_four_partitions(backend, &[2, 2]).await
}

/// Four consumers in a group on a 4-partition topic read 1 partition each.
pub async fn group_of_four_reads_one_partition_each(backend: &dyn Backend) -> anyhow::Result<()> {
    group_shares_four_partitions(backend, &[1, 1, 1, 1]).await
}

/// Five consumers in a group on a 4-partition topic: four read 1 each, one sits idle.
pub async fn group_of_five_leaves_one_idle(backend: &dyn Backend) -> anyhow::Result<()> {
    group_shares_four_partitions(backend, &[0, 1, 1, 1, 1]).await
}

/// `expected.len()` members join; once the assignment has the expected sizes, 3
/// records per partition are produced and each must reach exactly the member that owns
/// its partition, once, while the assignment stays as it is.
async fn group_shares_four_partitions(
    backend: &dyn Backend,
    expected: &[usize],
) -> anyhow::Result<()> {
    let topic = backend.unique("share");
    let group = backend.unique("share-group");
    let all = create_topic(backend, &topic, 4).await?;
    let timeline = Timeline::new();
    let mut members = Vec::new();
    for i in 0..expected.len() {
        let name = format!("m{i}");
        members.push(
            Member::subscribe(
                backend,
                &name,
                group_config(backend, &group),
                sub(&topic),
                &timeline,
            )
            .await?,
        );
    }
    let mut refs: Vec<&mut Member> = members.iter_mut().collect();
    wait_for_assignment(
        &mut refs,
        expected,
        &all,
        backend.poll_timeout(),
        deadline(backend),
    )
    .await?;
    let settled: Vec<BTreeSet<TopicPartition>> = refs.iter().map(|m| m.assignment()).collect();

    for p in 0..4 {
        produce_n(backend, &topic, p, 0, 3).await?;
    }
    poll_members_until(
        &mut refs,
        backend.poll_timeout(),
        deadline(backend),
        "all 12 records delivered",
        |ms| ms.iter().map(|m| m.deliveries.len()).sum::<usize>() >= 12,
    )
    .await?;

    let mut seen: BTreeMap<(TopicPartition, i64), String> = BTreeMap::new();
    for (m, owned) in refs.iter().zip(&settled) {
        assert_eq!(
            &m.assignment(),
            owned,
            "member {} changed assignment while records flowed: had {}, now {}",
            m.name,
            list(owned),
            list(&m.assignment())
        );
        for d in &m.deliveries {
            let r = &d.value;
            let rtp = r.topic_partition();
            assert!(
                owned.contains(&rtp),
                "member {} owns {} but was given {}",
                m.name,
                list(owned),
                r.coordinates()
            );
            assert_eq!(
                r.value.as_deref(),
                Some(&value_for(&topic, r.partition, r.offset as usize)[..]),
                "payload of {}",
                r.coordinates()
            );
            let earlier = seen.insert((rtp, r.offset), m.name.clone());
            assert!(
                earlier.is_none(),
                "{} was delivered twice: to {} and to {}",
                r.coordinates(),
                earlier.unwrap_or_default(),
                m.name
            );
        }
    }
    let want: BTreeSet<(TopicPartition, i64)> = (0..4)
        .flat_map(|p| (0..3).map(move |o| (p, o)))
        .map(|(p, o)| (tp(&topic, p), o))
        .collect();
    let got: BTreeSet<(TopicPartition, i64)> = seen.keys().cloned().collect();
    assert_eq!(got, want, "records delivered to the group");
    Ok(())
}

/// Two groups on the same topic each receive every record.
pub async fn two_groups_each_receive_every_record(backend: &dyn Backend) -> anyhow::Result<()> {
    let topic = backend.unique("fanout");
    let all = create_topic(backend, &topic, 2).await?;
    for p in 0..2 {
        produce_n(backend, &topic, p, 0, 10).await?;
    }
    let timeline = Timeline::new();
    let mut first = Member::subscribe(
        backend,
        "first",
        group_config(backend, &backend.unique("fanout-first")),
        sub(&topic),
        &timeline,
    )
    .await?;
    let mut second = Member::subscribe(
        backend,
        "second",
        group_config(backend, &backend.unique("fanout-second")),
        sub(&topic),
        &timeline,
    )
    .await?;
    let mut refs = [&mut first, &mut second];
    poll_members_until(
        &mut refs,
        backend.poll_timeout(),
        deadline(backend),
        "each group's member to receive all 20 records",
        |ms| ms.iter().all(|m| m.deliveries.len() >= 20),
    )
    .await?;
    let want: Vec<(TopicPartition, i64)> = all
        .iter()
        .flat_map(|p| (0..10).map(move |o| (p.clone(), o)))
        .collect();
    for m in refs.iter() {
        let mut got: Vec<(TopicPartition, i64)> = m
            .deliveries
            .iter()
            .map(|d| (d.value.topic_partition(), d.value.offset))
            .collect();
        got.sort();
        let records: Vec<_> = m.deliveries.iter().map(|d| d.value.clone()).collect();
        assert_eq!(
            got,
            want,
            "group member {} should get every record exactly once, got {}",
            m.name,
            summarize(&records)
        );
    }
    Ok(())
}

/// A subscriber is given the partitions added to its topic (a rebalance follows the
/// change of the subscribed topics).
pub async fn added_partitions_are_assigned_to_subscribers(
    backend: &dyn Backend,
) -> anyhow::Result<()> {
    let topic = backend.unique("grow");
    let two = create_topic(backend, &topic, 2).await?;
    let timeline = Timeline::new();
    let group = backend.unique("grow-group");
    let mut a = Member::subscribe(
        backend,
        "a",
        group_config(backend, &group),
        sub(&topic),
        &timeline,
    )
    .await?;
    wait_for_assignment(
        &mut [&mut a],
        &[2],
        &two,
        backend.poll_timeout(),
        deadline(backend),
    )
    .await?;
    if !crate::conformance::grow_topic(backend, &topic, 4).await? {
        return Ok(());
    }
    produce_n(backend, &topic, 3, 0, 2).await?;
    let four = crate::harness::partitions_of(&topic, 4);
    let p3 = tp(&topic, 3);
    poll_members_until(
        &mut [&mut a],
        backend.poll_timeout(),
        deadline(backend),
        "the subscriber to own all 4 partitions and read the 2 records of the new partition 3",
        |ms| ms[0].assignment() == four && ms[0].offsets_of(&p3).len() >= 2,
    )
    .await?;
    assert_eq!(a.offsets_of(&p3), vec![0, 1], "offsets delivered from {p3}");
    Ok(())
}
