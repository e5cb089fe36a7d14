//! Wakeup, pause and resume, closing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use weir_core::{CommitOffsets, Error, NoopListener, Offset, Subscription};

use super::common::{group_config, standalone_config, topic as sub, tp};
use crate::harness::{
    create_topic, deadline, poll_members_until, produce_n, runs, wait_for_assignment, Event,
    Member, Timeline,
};
use crate::Backend;

/// `wakeup()` from another thread makes a poll blocked on an empty partition return
/// `Error::Wakeup` promptly (long before its timeout); the next poll works. A wakeup
/// made while no poll runs is seen by the next poll, once.
pub async fn wakeup_from_another_thread_interrupts_a_blocked_poll(
    backend: &dyn Backend,
) -> anyhow::Result<()> {
    let topic = backend.unique("wakeup");
    create_topic(backend, &topic, 1).await?;
    let p = tp(&topic, 0);
    let mut c = backend.consumer(standalone_config(backend)).await?;
    c.assign(std::slice::from_ref(&p)).await?;
    let handle = c.wakeup_handle();
    let long = backend.patience();

    let waker = std::thread::spawn({
        let handle = handle.clone();
        move || {
            std::thread::sleep(Duration::from_millis(200));
            handle.wakeup();
        }
    });
    let start = Instant::now();
    let woken = c.poll(long).await;
    let took = start.elapsed();
    waker
        .join()
        .map_err(|_| anyhow::anyhow!("the waking thread panicked"))?;
    assert!(
        matches!(woken, Err(Error::Wakeup)),
        "a poll interrupted by wakeup() should return Error::Wakeup, got {woken:?}"
    );
    assert!(
        took < long / 2,
        "a poll with timeout {long:?} woken after 200 ms should return promptly, it took {took:?}"
    );
    let next = c.poll(backend.poll_timeout()).await;
    assert!(
        matches!(next, Ok(ref b) if b.is_empty()),
        "the poll after a wakeup should work (an empty batch here), got {next:?}"
    );

    handle.wakeup();
    let pending = c.poll(long).await;
    assert!(
        matches!(pending, Err(Error::Wakeup)),
        "a wakeup made before poll should make the next poll return Error::Wakeup, got {pending:?}"
    );
    produce_n(backend, &topic, 0, 0, 1).await?;
    let records = crate::harness::poll_until(
        c.as_mut(),
        backend.poll_timeout(),
        deadline(backend),
        "the record produced after the wakeups",
        |rs| !rs.is_empty(),
    )
    .await?;
    assert_eq!(records[0].offset, 0, "the first record after the wakeups");
    c.close().await?;
    Ok(())
}

/// A paused partition delivers nothing while the others flow and stays assigned; after
/// `resume` it delivers from where it stopped.
pub async fn pause_and_resume(backend: &dyn Backend) -> anyhow::Result<()> {
    let topic = backend.unique("pause");
    let group = backend.unique("pause-group");
    let all = create_topic(backend, &topic, 2).await?;
    for p in 0..2 {
        produce_n(backend, &topic, p, 0, 5).await?;
    }
    let (p0, p1) = (tp(&topic, 0), tp(&topic, 1));
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
        "all 10 records",
        |ms| ms[0].deliveries.len() >= 10,
    )
    .await?;
    a.consumer.pause(std::slice::from_ref(&p0))?;
    assert_eq!(
        a.consumer.paused(),
        BTreeSet::from([p0.clone()]),
        "paused() after pausing {p0}"
    );
    let paused_at = a.deliveries.len();
    for p in 0..2 {
        produce_n(backend, &topic, p, 5, 5).await?;
    }
    poll_members_until(
        &mut [&mut a],
        backend.poll_timeout(),
        deadline(backend),
        "the 5 new records of the unpaused partition",
        |ms| ms[0].offsets_of(&p1).contains(&9),
    )
    .await?;
    for _ in 0..3 {
        a.poll_once(backend.poll_timeout()).await?;
    }
    let while_paused: Vec<i64> = a.deliveries[paused_at..]
        .iter()
        .filter(|d| d.value.topic_partition() == p0)
        .map(|d| d.value.offset)
        .collect();
    assert!(
        while_paused.is_empty(),
        "paused {p0} delivered offsets {}",
        runs(&while_paused)
    );
    assert_eq!(a.assignment(), all, "a paused partition stays assigned");

    a.consumer.resume(std::slice::from_ref(&p0))?;
    assert!(a.consumer.paused().is_empty(), "paused() after resume");
    let resumed_at = a.deliveries.len();
    poll_members_until(
        &mut [&mut a],
        backend.poll_timeout(),
        deadline(backend),
        "the resumed partition's 5 new records",
        |ms| ms[0].offsets_of(&p0).contains(&9),
    )
    .await?;
    let after: Vec<i64> = a.deliveries[resumed_at..]
        .iter()
        .filter(|d| d.value.topic_partition() == p0)
        .map(|d| d.value.offset)
        .collect();
    assert_eq!(
        after,
        (5..=9).collect::<Vec<_>>(),
        "{p0} after resume should continue where it stopped (5), got {}",
        runs(&after)
    );
    a.consumer.close().await?;
    Ok(())
}

/// `close()` revokes the partitions through the listener; afterwards every call fails
/// with `Error::Closed`, including a second `close()`.
pub async fn closed_consumer_returns_closed(backend: &dyn Backend) -> anyhow::Result<()> {
    let topic = backend.unique("closed");
    let group = backend.unique("closed-group");
    let all = create_topic(backend, &topic, 1).await?;
    let p = tp(&topic, 0);
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
        &[1],
        &all,
        backend.poll_timeout(),
        deadline(backend),
    )
    .await?;
    a.consumer.close().await.context("the first close()")?;
    let revoked =
        a.recorder.events().into_iter().any(
            |e| matches!(&e.value, Event::Revoked { partitions, .. } if partitions.contains(&p)),
        );
    assert!(
        revoked,
        "close() should run on_partitions_revoked with {p}; callbacks: {:?}",
        a.recorder
            .events()
            .iter()
            .map(|e| &e.value)
            .collect::<Vec<_>>()
    );

    let c = a.consumer.as_mut();
    let ps = std::slice::from_ref(&p);
    let mut outcomes: Vec<(&str, Result<(), Error>)> = vec![
        ("poll", c.poll(backend.poll_timeout()).await.map(drop)),
        ("commit_sync", c.commit_sync(CommitOffsets::Consumed).await),
        ("committed", c.committed(ps).await.map(drop)),
        ("position", c.position(&p).await.map(drop)),
        ("seek", c.seek(&p, Offset::At(0))),
        ("pause", c.pause(ps)),
        ("resume", c.resume(ps)),
        ("assign", c.assign(ps).await),
        (
            "subscribe",
            c.subscribe(
                Subscription::topics([topic.as_str()]),
                std::sync::Arc::new(NoopListener),
            )
            .await,
        ),
        ("unsubscribe", c.unsubscribe().await),
        ("partitions_for", c.partitions_for(&topic).await.map(drop)),
        ("watermarks", c.watermarks(&p).await.map(drop)),
    ];
    outcomes.push(("close (again)", c.close().await));
    let wrong: Vec<String> = outcomes
        .iter()
        .filter(|(_, r)| !matches!(r, Err(Error::Closed)))
        .map(|(op, r)| format!("{op} returned {r:?}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "every call on a closed consumer should fail with Error::Closed; instead: {}",
        wrong.join("; ")
    );
    Ok(())
}
