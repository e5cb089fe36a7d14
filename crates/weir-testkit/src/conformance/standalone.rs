//! Standalone consumers: `assign` without a group, `partitions_for`.

use std::collections::BTreeSet;

use anyhow::Context;
use weir_core::{CommitOffsets, Error, NoopListener, Subscription, TopicPartition};

use super::common::{standalone_config, tp};
use crate::harness::{create_topic, deadline, poll_until, produce_n, summarize};
use crate::Backend;

/// Without `group.id`: `partitions_for` lists a topic's partitions (and fails with
/// `UnknownTopic` naming a missing topic); `assign` reads exactly the assigned
/// partitions, with no sharing between consumers (two consumers assigned the same
/// partition both read it all); `subscribe` after `assign` and commits without a group
/// fail with `IllegalState`.
pub async fn standalone_assign_without_a_group(backend: &dyn Backend) -> anyhow::Result<()> {
    let topic = backend.unique("standalone");
    let all = create_topic(backend, &topic, 3).await?;
    let mut c = backend.consumer(standalone_config(backend)).await?;
    let listed: BTreeSet<TopicPartition> = c.partitions_for(&topic).await?.into_iter().collect();
    assert_eq!(listed, all, "partitions_for({topic})");
    let missing = backend.unique("missing");
    match c.partitions_for(&missing).await {
        Err(Error::UnknownTopic { topic: t }) => {
            assert_eq!(t, missing, "UnknownTopic should name the topic asked for")
        }
        other => anyhow::bail!(
            "partitions_for a topic that does not exist should fail with UnknownTopic, got {other:?}"
        ),
    }

    let (p0, p1, p2) = (tp(&topic, 0), tp(&topic, 1), tp(&topic, 2));
    c.assign(&[p0.clone(), p2.clone()]).await?;
    assert_eq!(
        c.assignment(),
        BTreeSet::from([p0.clone(), p2.clone()]),
        "assignment() after assign"
    );
    let mut d = backend.consumer(standalone_config(backend)).await?;
    d.assign(std::slice::from_ref(&p0)).await?;
    for p in 0..3 {
        produce_n(backend, &topic, p, 0, 4).await?;
    }
    let mut got = poll_until(
        c.as_mut(),
        backend.poll_timeout(),
        deadline(backend),
        "the 8 records of partitions 0 and 2",
        |rs| rs.len() >= 8,
    )
    .await?;
    for _ in 0..2 {
        got.extend(c.poll(backend.poll_timeout()).await?);
    }
    let mut coords: Vec<(TopicPartition, i64)> = got
        .iter()
        .map(|r| (r.topic_partition(), r.offset))
        .collect();
    coords.sort();
    let want: Vec<(TopicPartition, i64)> = [&p0, &p2]
        .into_iter()
        .flat_map(|p| (0..4).map(move |o| (p.clone(), o)))
        .collect();
    assert_eq!(
        coords,
        want,
        "a consumer assigned {p0} and {p2} (not {p1}) got {}",
        summarize(&got)
    );
    let other = poll_until(
        d.as_mut(),
        backend.poll_timeout(),
        deadline(backend),
        "the 4 records of partition 0 on a second standalone consumer",
        |rs| rs.len() >= 4,
    )
    .await?;
    let offsets: Vec<i64> = other.iter().map(|r| r.offset).collect();
    assert_eq!(
        offsets,
        vec![0, 1, 2, 3],
        "a second standalone consumer of {p0} reads it all as well: {}",
        summarize(&other)
    );

    let sub = c
        .subscribe(
            Subscription::topics([topic.as_str()]),
            std::sync::Arc::new(NoopListener),
        )
        .await;
    assert!(
        matches!(sub, Err(Error::IllegalState(_))),
        "subscribe after assign should fail with IllegalState, got {sub:?}"
    );
    let commit = c.commit_sync(CommitOffsets::Consumed).await;
    assert!(
        matches!(commit, Err(Error::IllegalState(_))),
        "commit_sync without group.id should fail with IllegalState, got {commit:?}"
    );
    c.close().await.context("closing the standalone consumer")?;
    d.close()
        .await
        .context("closing the second standalone consumer")?;
    Ok(())
}

/// A standalone consumer notices new partitions itself: `partitions_for` lists the
/// partitions added to a topic, and they can be assigned and read.
pub async fn partitions_for_sees_added_partitions(backend: &dyn Backend) -> anyhow::Result<()> {
    let topic = backend.unique("standalone-grow");
    create_topic(backend, &topic, 2).await?;
    let mut c = backend.consumer(standalone_config(backend)).await?;
    assert_eq!(
        c.partitions_for(&topic).await?.len(),
        2,
        "partitions_for before growing"
    );
    if !crate::conformance::grow_topic(backend, &topic, 3).await? {
        return Ok(());
    }
    let give_up = deadline(backend);
    let listed = loop {
        let listed: BTreeSet<TopicPartition> =
            c.partitions_for(&topic).await?.into_iter().collect();
        if listed.len() == 3 || std::time::Instant::now() >= give_up {
            break listed;
        }
        tokio::time::sleep(backend.poll_timeout()).await;
    };
    assert_eq!(
        listed,
        crate::harness::partitions_of(&topic, 3),
        "partitions_for after growing {topic} to 3 partitions"
    );
    let p2 = tp(&topic, 2);
    c.assign(std::slice::from_ref(&p2)).await?;
    produce_n(backend, &topic, 2, 0, 1).await?;
    let got = poll_until(
        c.as_mut(),
        backend.poll_timeout(),
        deadline(backend),
        "the record produced to the new partition",
        |rs| !rs.is_empty(),
    )
    .await?;
    assert_eq!(
        got[0].coordinates(),
        weir_core::Coordinates::new(topic.as_str(), 2, 0),
        "the first record read from the new partition"
    );
    c.close().await?;
    Ok(())
}
