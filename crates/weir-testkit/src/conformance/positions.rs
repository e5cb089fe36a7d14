//! Seeks, positions, committed offsets, watermarks.

use std::collections::BTreeMap;

use weir_core::{CommitOffsets, Error, Offset, TopicPartition};

use super::common::{group_config, topic as sub, tp};
use crate::harness::{
    create_topic, deadline, poll_members_until, produce_n, runs, wait_for_assignment, Member,
    Timeline,
};
use crate::Backend;

/// A member of a fresh group on a one-partition topic holding `records` records, given
/// all of them.
async fn member_at_end(
    backend: &dyn Backend,
    name: &str,
    records: usize,
) -> anyhow::Result<(String, TopicPartition, Member)> {
    let topic = backend.unique(name);
    let group = backend.unique(&format!("{name}-group"));
    create_topic(backend, &topic, 1).await?;
    produce_n(backend, &topic, 0, 0, records).await?;
    let p = tp(&topic, 0);
    let mut a = Member::subscribe(
        backend,
        "a",
        group_config(backend, &group),
        sub(&topic),
        &Timeline::new(),
    )
    .await?;
    poll_members_until(
        &mut [&mut a],
        backend.poll_timeout(),
        deadline(backend),
        &format!("all {records} records"),
        |ms| ms[0].deliveries.len() >= records,
    )
    .await?;
    Ok((topic, p, a))
}

/// Poll until `member` has been given offset `until` of `p`; return the offsets of `p`
/// given from delivery index `from` on.
async fn offsets_since(
    backend: &dyn Backend,
    member: &mut Member,
    p: &TopicPartition,
    from: usize,
    until: i64,
) -> anyhow::Result<Vec<i64>> {
    let what = format!("offset {until} of {p}");
    poll_members_until(
        &mut [&mut *member],
        backend.poll_timeout(),
        deadline(backend),
        &what,
        |ms| {
            ms[0].deliveries[from..]
                .iter()
                .any(|d| d.value.offset == until && d.value.topic_partition() == *p)
        },
    )
    .await?;
    Ok(member.deliveries[from..]
        .iter()
        .filter(|d| d.value.topic_partition() == *p)
        .map(|d| d.value.offset)
        .collect())
}

/// `seek(At(n))` sets `position()` to n at once and the next record delivered is n
/// (records fetched before are discarded); seeking or asking the position of a
/// partition that is not assigned fails with `NotAssigned`.
pub async fn seek_moves_the_position_and_the_next_record(
    backend: &dyn Backend,
) -> anyhow::Result<()> {
    let (topic, p, mut a) = member_at_end(backend, "seek", 10).await?;
    assert_eq!(
        a.consumer.position(&p).await?,
        10,
        "position after consuming 0..=9"
    );
    a.consumer.seek(&p, Offset::At(4))?;
    assert_eq!(
        a.consumer.position(&p).await?,
        4,
        "position after seek to 4"
    );
    let from = a.deliveries.len();
    let got = offsets_since(backend, &mut a, &p, from, 9).await?;
    assert_eq!(
        got,
        (4..=9).collect::<Vec<_>>(),
        "offsets after seek to 4: {}",
        runs(&got)
    );

    let elsewhere = tp(&topic, 7);
    match a.consumer.seek(&elsewhere, Offset::At(0)) {
        Err(Error::NotAssigned(q)) => assert_eq!(q, elsewhere, "NotAssigned names the partition"),
        other => anyhow::bail!(
            "seek on unassigned {elsewhere} should fail with NotAssigned, got {other:?}"
        ),
    }
    match a.consumer.position(&elsewhere).await {
        Err(Error::NotAssigned(q)) => assert_eq!(q, elsewhere, "NotAssigned names the partition"),
        other => anyhow::bail!(
            "position of unassigned {elsewhere} should fail with NotAssigned, got {other:?}"
        ),
    }
    Ok(())
}

/// `seek_to_beginning` re-delivers from the log start; `seek_to_end` delivers only
/// records appended afterwards; `position()` reflects both at once.
pub async fn seek_to_beginning_and_end(backend: &dyn Backend) -> anyhow::Result<()> {
    let (topic, p, mut a) = member_at_end(backend, "seek-ends", 10).await?;
    a.consumer.seek_to_beginning(std::slice::from_ref(&p))?;
    assert_eq!(
        a.consumer.position(&p).await?,
        0,
        "position after seek_to_beginning"
    );
    let from = a.deliveries.len();
    let got = offsets_since(backend, &mut a, &p, from, 9).await?;
    assert_eq!(
        got,
        (0..=9).collect::<Vec<_>>(),
        "offsets after seek_to_beginning: {}",
        runs(&got)
    );

    a.consumer.seek(&p, Offset::At(2))?;
    a.consumer.seek_to_end(std::slice::from_ref(&p))?;
    assert_eq!(
        a.consumer.position(&p).await?,
        10,
        "position after seek_to_end"
    );
    let from = a.deliveries.len();
    produce_n(backend, &topic, 0, 10, 2).await?;
    let got = offsets_since(backend, &mut a, &p, from, 11).await?;
    assert_eq!(
        got,
        vec![10, 11],
        "offsets after seek_to_end then two appends: {}",
        runs(&got)
    );
    Ok(())
}

/// `committed()` is `None` per partition until something is committed, then the
/// committed offset (also for a partition committed explicitly while another is not);
/// `watermarks()` are the log start and end.
pub async fn committed_and_watermarks(backend: &dyn Backend) -> anyhow::Result<()> {
    let topic = backend.unique("committed");
    let group = backend.unique("committed-group");
    let all = create_topic(backend, &topic, 2).await?;
    produce_n(backend, &topic, 0, 0, 5).await?;
    let (p0, p1) = (tp(&topic, 0), tp(&topic, 1));
    let both = [p0.clone(), p1.clone()];
    let mut a = Member::subscribe(
        backend,
        "a",
        group_config(backend, &group),
        sub(&topic),
        &Timeline::new(),
    )
    .await?;
    wait_for_assignment(
        &mut [&mut a],
        &[2],
        &all,
        backend.poll_timeout(),
        deadline(backend),
    )
    .await?;
    assert_eq!(
        a.consumer.watermarks(&p0).await?,
        (0, 5),
        "watermarks of {p0}"
    );
    assert_eq!(
        a.consumer.watermarks(&p1).await?,
        (0, 0),
        "watermarks of the empty {p1}"
    );
    assert_eq!(
        a.consumer.committed(&both).await?,
        BTreeMap::from([(p0.clone(), None), (p1.clone(), None)]),
        "committed() before any commit"
    );
    a.consumer
        .commit_sync(CommitOffsets::from([(p0.clone(), 2)]))
        .await?;
    assert_eq!(
        a.consumer.committed(&both).await?,
        BTreeMap::from([(p0, Some(2)), (p1, None)]),
        "committed() after committing only partition 0 at 2"
    );
    a.consumer.close().await?;
    Ok(())
}
