//! `auto.offset.reset`: earliest, latest, none.

use std::time::Instant;

use weir_core::{AutoOffsetReset, CommitOffsets, Error};

use super::common::{group_config, topic as sub, tp};
use crate::harness::{
    create_topic, deadline, poll_members_until, produce_n, runs, wait_for_assignment, Member,
    Timeline,
};
use crate::Backend;

/// With no committed offset, `earliest` starts at the log start.
pub async fn auto_offset_reset_earliest(backend: &dyn Backend) -> anyhow::Result<()> {
    let topic = backend.unique("reset-earliest");
    let group = backend.unique("reset-earliest-group");
    create_topic(backend, &topic, 1).await?;
    produce_n(backend, &topic, 0, 0, 5).await?;
    let p = tp(&topic, 0);
    let config = group_config(backend, &group).with_auto_offset_reset(AutoOffsetReset::Earliest);
    let mut a = Member::subscribe(backend, "a", config, sub(&topic), &Timeline::new()).await?;
    poll_members_until(
        &mut [&mut a],
        backend.poll_timeout(),
        deadline(backend),
        "the 5 records",
        |ms| ms[0].deliveries.len() >= 5,
    )
    .await?;
    let got = a.offsets_of(&p);
    assert_eq!(
        got,
        (0..5).collect::<Vec<_>>(),
        "auto.offset.reset=earliest without a committed offset: {}",
        runs(&got)
    );
    a.consumer.close().await?;
    Ok(())
}

/// With no committed offset, `latest` starts at the log end: the position once
/// assigned is the end, and only records appended afterwards are delivered.
pub async fn auto_offset_reset_latest(backend: &dyn Backend) -> anyhow::Result<()> {
    let topic = backend.unique("reset-latest");
    let group = backend.unique("reset-latest-group");
    let all = create_topic(backend, &topic, 1).await?;
    produce_n(backend, &topic, 0, 0, 5).await?;
    let p = tp(&topic, 0);
    let config = group_config(backend, &group).with_auto_offset_reset(AutoOffsetReset::Latest);
    let mut a = Member::subscribe(backend, "a", config, sub(&topic), &Timeline::new()).await?;
    wait_for_assignment(
        &mut [&mut a],
        &[1],
        &all,
        backend.poll_timeout(),
        deadline(backend),
    )
    .await?;
    assert_eq!(
        a.consumer.position(&p).await?,
        5,
        "position with auto.offset.reset=latest over 5 records"
    );
    produce_n(backend, &topic, 0, 5, 3).await?;
    poll_members_until(
        &mut [&mut a],
        backend.poll_timeout(),
        deadline(backend),
        "offset 7",
        |ms| ms[0].offsets_of(&p).contains(&7),
    )
    .await?;
    let got = a.offsets_of(&p);
    assert_eq!(
        got,
        vec![5, 6, 7],
        "auto.offset.reset=latest delivers only records appended after the reset: {}",
        runs(&got)
    );
    a.consumer.close().await?;
    Ok(())
}

/// With `none`: no committed offset makes the poll fail with `Error::NoOffset` naming
/// the partition; once an offset is committed, a member with `none` starts there.
pub async fn auto_offset_reset_none(backend: &dyn Backend) -> anyhow::Result<()> {
    let topic = backend.unique("reset-none");
    let group = backend.unique("reset-none-group");
    let all = create_topic(backend, &topic, 1).await?;
    produce_n(backend, &topic, 0, 0, 5).await?;
    let p = tp(&topic, 0);
    let none = group_config(backend, &group).with_auto_offset_reset(AutoOffsetReset::None);
    let mut a = backend.consumer(none.clone()).await?;
    a.subscribe(sub(&topic), std::sync::Arc::new(weir_core::NoopListener))
        .await?;
    let give_up = deadline(backend);
    let mut delivered = 0;
    loop {
        match a.poll(backend.poll_timeout()).await {
            Err(Error::NoOffset { partition, .. }) => {
                assert_eq!(partition, p, "NoOffset should name the partition");
                break;
            }
            Err(e) => anyhow::bail!(
                "with auto.offset.reset=none and no committed offset, poll should fail with NoOffset, it failed with: {e}"
            ),
            Ok(batch) => delivered += batch.len(),
        }
        anyhow::ensure!(
            Instant::now() < give_up,
            "with auto.offset.reset=none and no committed offset, poll should fail with NoOffset; it kept succeeding"
        );
    }
    assert_eq!(
        delivered, 0,
        "auto.offset.reset=none without a committed offset delivered records"
    );
    a.close().await?;

    let mut setup = Member::subscribe(
        backend,
        "setup",
        group_config(backend, &group),
        sub(&topic),
        &Timeline::new(),
    )
    .await?;
    wait_for_assignment(
        &mut [&mut setup],
        &[1],
        &all,
        backend.poll_timeout(),
        deadline(backend),
    )
    .await?;
    setup
        .consumer
        .commit_sync(CommitOffsets::from([(p.clone(), 2)]))
        .await?;
    setup.consumer.close().await?;

    let mut b = Member::subscribe(backend, "b", none, sub(&topic), &Timeline::new()).await?;
    poll_members_until(
        &mut [&mut b],
        backend.poll_timeout(),
        deadline(backend),
        "offset 4",
        |ms| ms[0].offsets_of(&p).contains(&4),
    )
    .await?;
    let got = b.offsets_of(&p);
    assert_eq!(
        got,
        vec![2, 3, 4],
        "auto.offset.reset=none with offset 2 committed: {}",
        runs(&got)
    );
    b.consumer.close().await?;
    Ok(())
}
