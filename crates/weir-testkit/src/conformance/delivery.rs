//! What polls return: how many records, in which order, with which bytes.

use std::collections::BTreeMap;

use super::common::{group_config, topic as sub, tp};
use crate::harness::{
    create_topic, deadline, poll_members_until, produce_n, runs, value_for, Member, Timeline,
};
use crate::Backend;

/// No poll returns more than `max.poll.records` records, and nothing is lost or
/// repeated because of the limit.
pub async fn max_poll_records_is_respected(backend: &dyn Backend) -> anyhow::Result<()> {
    let topic = backend.unique("max-poll");
    let group = backend.unique("max-poll-group");
    create_topic(backend, &topic, 2).await?;
    for p in 0..2 {
        produce_n(backend, &topic, p, 0, 25).await?;
    }
    let limit = 7;
    let mut a = Member::subscribe(
        backend,
        "a",
        group_config(backend, &group).with_max_poll_records(limit),
        sub(&topic),
        &Timeline::new(),
    )
    .await?;
    poll_members_until(
        &mut [&mut a],
        backend.poll_timeout(),
        deadline(backend),
        "all 50 records",
        |ms| ms[0].deliveries.len() >= 50,
    )
    .await?;
    let mut per_poll: BTreeMap<u64, usize> = BTreeMap::new();
    for d in &a.deliveries {
        *per_poll.entry(d.seq).or_default() += 1;
    }
    let biggest = per_poll.values().copied().max().unwrap_or(0);
    assert!(
        biggest <= limit,
        "max.poll.records={limit}, yet a poll returned {biggest} records (batch sizes {:?})",
        per_poll.values().collect::<Vec<_>>()
    );
    for p in 0..2 {
        let got = a.offsets_of(&tp(&topic, p));
        assert_eq!(
            got,
            (0..25).collect::<Vec<_>>(),
            "partition {p} under max.poll.records={limit}: {}",
            runs(&got)
        );
    }
    a.consumer.close().await?;
    Ok(())
}

/// Records of each partition are delivered in offset order, once, with the offsets the
/// producer was given and byte-identical keys and values.
pub async fn records_of_a_partition_arrive_in_order_and_intact(
    backend: &dyn Backend,
) -> anyhow::Result<()> {
    let topic = backend.unique("order");
    let group = backend.unique("order-group");
    create_topic(backend, &topic, 3).await?;
    let mut produced = BTreeMap::new();
    for round in 0..10 {
        for p in 0..3 {
            let offsets = produce_n(backend, &topic, p, round * 3, 3).await?;
            produced.entry(p).or_insert_with(Vec::new).extend(offsets);
        }
    }
    for (p, offsets) in &produced {
        assert_eq!(
            offsets,
            &(0..30).collect::<Vec<i64>>(),
            "offsets the producer was given for partition {p} of a new topic"
        );
    }
    let mut a = Member::subscribe(
        backend,
        "a",
        group_config(backend, &group).with_max_poll_records(10),
        sub(&topic),
        &Timeline::new(),
    )
    .await?;
    poll_members_until(
        &mut [&mut a],
        backend.poll_timeout(),
        deadline(backend),
        "all 90 records",
        |ms| ms[0].deliveries.len() >= 90,
    )
    .await?;
    for p in 0..3 {
        let q = tp(&topic, p);
        let got = a.offsets_of(&q);
        assert_eq!(
            got,
            (0..30).collect::<Vec<_>>(),
            "offsets of {q} in delivery order: {}",
            runs(&got)
        );
        for d in a.deliveries_of(&q) {
            let r = &d.value;
            let i = r.offset as usize;
            assert_eq!(
                r.key.as_deref(),
                Some(format!("k{i}").as_bytes()),
                "key of {}",
                r.coordinates()
            );
            assert_eq!(
                r.value.as_deref(),
                Some(&value_for(&topic, p, i)[..]),
                "value of {}",
                r.coordinates()
            );
        }
    }
    a.consumer.close().await?;
    Ok(())
}
