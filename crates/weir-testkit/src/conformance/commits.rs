//! Commits: synchronous, asynchronous, explicit maps, automatic; where the next
//! consumer starts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::Mutex;
use weir_core::{CommitOffsets, Consumer, ConsumerConfig, TopicPartition};

use super::common::{group_config, topic as sub, tp};
use crate::harness::{
    create_topic, deadline, poll_members_until, produce_n, runs, Member, Timeline,
};
use crate::Backend;

type Outcome = Arc<Mutex<Option<weir_core::Result<BTreeMap<TopicPartition, i64>>>>>;

/// Start an async commit whose outcome lands in the returned slot.
fn commit_async(consumer: &mut dyn Consumer, offsets: CommitOffsets) -> Outcome {
    let slot: Outcome = Arc::new(Mutex::new(None));
    let sink = slot.clone();
    consumer.commit_async(
        offsets,
        Some(Box::new(move |r| {
            *sink.lock() = Some(r);
        })),
    );
    slot
}

/// Poll `member` until the async commit's callback has run; return its outcome.
async fn await_callback(
    backend: &dyn Backend,
    member: &mut Member,
    slot: &Outcome,
) -> anyhow::Result<BTreeMap<TopicPartition, i64>> {
    poll_members_until(
        &mut [member],
        backend.poll_timeout(),
        deadline(backend),
        "the commit_async callback to run during a later poll",
        |_| slot.lock().is_some(),
    )
    .await?;
    let outcome = slot.lock().take();
    match outcome {
        Some(Ok(map)) => Ok(map),
        Some(Err(e)) => anyhow::bail!("commit_async reported failure to its callback: {e}"),
        None => anyhow::bail!("commit_async callback did not run"),
    }
}

/// A new member of `group` (earliest, no auto-commit): polls until it has a record of
/// every partition in `expect_first`, then asserts the first offset delivered from
/// each.
async fn new_member_starts_at(
    backend: &dyn Backend,
    group: &str,
    topic: &str,
    expect_first: &BTreeMap<TopicPartition, i64>,
) -> anyhow::Result<()> {
    let timeline = Timeline::new();
    let mut next = Member::subscribe(
        backend,
        "next",
        group_config(backend, group),
        sub(topic),
        &timeline,
    )
    .await?;
    poll_members_until(
        &mut [&mut next],
        backend.poll_timeout(),
        deadline(backend),
        "the next member of the group to receive a record of every partition",
        |ms| expect_first.keys().all(|p| !ms[0].offsets_of(p).is_empty()),
    )
    .await?;
    for (p, first) in expect_first {
        let offsets = next.offsets_of(p);
        assert_eq!(
            offsets.first(),
            Some(first),
            "the next member of the group should start {p} at the committed offset {first}, it was given {}",
            runs(&offsets)
        );
    }
    next.consumer
        .close()
        .await
        .context("closing the next member")?;
    Ok(())
}

/// A one-partition topic with 20 records and a member `a` of a fresh group that has
/// been given at least 5 of them (`max.poll.records` 5, no auto-commit).
async fn consuming_member(
    backend: &dyn Backend,
    name: &str,
) -> anyhow::Result<(String, String, TopicPartition, Member)> {
    let topic = backend.unique(name);
    let group = backend.unique(&format!("{name}-group"));
    create_topic(backend, &topic, 1).await?;
    produce_n(backend, &topic, 0, 0, 20).await?;
    let p = tp(&topic, 0);
    let mut a = Member::subscribe(
        backend,
        "a",
        group_config(backend, &group).with_max_poll_records(5),
        sub(&topic),
        &Timeline::new(),
    )
    .await?;
    poll_members_until(
        &mut [&mut a],
        backend.poll_timeout(),
        deadline(backend),
        "at least 5 records",
        |ms| ms[0].deliveries.len() >= 5,
    )
    .await?;
    Ok((topic, group, p, a))
}

fn next_after_delivered(member: &Member, p: &TopicPartition) -> anyhow::Result<i64> {
    member
        .offsets_of(p)
        .last()
        .map(|o| o + 1)
        .with_context(|| format!("member {} was given nothing from {p}", member.name))
}

/// `commit_sync(Consumed)` commits the position after the records delivered so far;
/// `committed()` reports it (and reported nothing before); a new member of the group
/// starts there.
pub async fn commit_sync_commits_what_was_consumed(backend: &dyn Backend) -> anyhow::Result<()> {
    let (topic, group, p, mut a) = consuming_member(backend, "commit-sync").await?;
    let before = a.consumer.committed(std::slice::from_ref(&p)).await?;
    assert_eq!(
        before.get(&p),
        Some(&None),
        "committed() before any commit should report no offset for {p}"
    );
    let next = next_after_delivered(&a, &p)?;
    a.consumer.commit_sync(CommitOffsets::Consumed).await?;
    let after = a.consumer.committed(std::slice::from_ref(&p)).await?;
    assert_eq!(
        after.get(&p),
        Some(&Some(next)),
        "committed() after commit_sync(Consumed) having been given up to offset {}",
        next - 1
    );
    assert_eq!(a.consumer.position(&p).await?, next, "position of {p}");
    a.consumer.close().await?;
    new_member_starts_at(backend, &group, &topic, &BTreeMap::from([(p, next)])).await
}

/// `commit_async(Consumed, callback)`: the callback runs (during a later poll) with
/// `Ok` and the committed map; `committed()` and a new member see it.
pub async fn commit_async_reports_to_its_callback(backend: &dyn Backend) -> anyhow::Result<()> {
    let (topic, group, p, mut a) = consuming_member(backend, "commit-async").await?;
    let next = next_after_delivered(&a, &p)?;
    let slot = commit_async(a.consumer.as_mut(), CommitOffsets::Consumed);
    let map = await_callback(backend, &mut a, &slot).await?;
    assert_eq!(
        map.get(&p),
        Some(&next),
        "the commit_async callback should report {p} committed at {next}; it reported {map:?}"
    );
    let committed = a.consumer.committed(std::slice::from_ref(&p)).await?;
    assert_eq!(committed.get(&p), Some(&Some(next)), "committed() of {p}");
    a.consumer.close().await?;
    new_member_starts_at(backend, &group, &topic, &BTreeMap::from([(p, next)])).await
}

/// Explicit partition → offset maps, through `commit_sync` and `commit_async`, even
/// behind what was consumed: `committed()` sees each, a new member starts at the last.
pub async fn explicit_offset_commits_are_where_the_next_member_starts(
    backend: &dyn Backend,
) -> anyhow::Result<()> {
    let topic = backend.unique("commit-map");
    let group = backend.unique("commit-map-group");
    let all = create_topic(backend, &topic, 2).await?;
    for partition in 0..2 {
        produce_n(backend, &topic, partition, 0, 10).await?;
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
        "all 20 records",
        |ms| ms[0].deliveries.len() >= 20,
    )
    .await?;
    let both: Vec<TopicPartition> = all.iter().cloned().collect();

    a.consumer
        .commit_sync(CommitOffsets::from([(p0.clone(), 3), (p1.clone(), 7)]))
        .await?;
    let c = a.consumer.committed(&both).await?;
    assert_eq!(
        c,
        BTreeMap::from([(p0.clone(), Some(3)), (p1.clone(), Some(7))]),
        "committed() after commit_sync({{{p0}: 3, {p1}: 7}})"
    );

    let slot = commit_async(a.consumer.as_mut(), CommitOffsets::from([(p0.clone(), 4)]));
    let map = await_callback(backend, &mut a, &slot).await?;
    assert_eq!(
        map,
        BTreeMap::from([(p0.clone(), 4)]),
        "what the commit_async callback reports for commit_async({{{p0}: 4}})"
    );
    let c = a.consumer.committed(&both).await?;
    assert_eq!(
        c,
        BTreeMap::from([(p0.clone(), Some(4)), (p1.clone(), Some(7))]),
        "committed() after commit_async({{{p0}: 4}})"
    );
    a.consumer.close().await?;
    new_member_starts_at(backend, &group, &topic, &BTreeMap::from([(p0, 4), (p1, 7)])).await
}

/// With `enable.auto.commit`, a consumer that crashes (vanishes without close) makes
/// the next owner reprocess at most the records it was given during the last
/// `auto.commit.interval.ms` (plus one poll's slack), and lose none.
pub async fn auto_commit_reprocesses_at_most_an_interval_after_a_crash(
    backend: &dyn Backend,
) -> anyhow::Result<()> {
    let topic = backend.unique("auto-commit");
    let group = backend.unique("auto-commit-group");
    create_topic(backend, &topic, 1).await?;
    produce_n(backend, &topic, 0, 0, 120).await?;
    let p = tp(&topic, 0);
    let config: ConsumerConfig = group_config(backend, &group)
        .with_enable_auto_commit(true)
        .with_max_poll_records(2);
    let interval = config.auto_commit_interval();
    let session = config.session_timeout();
    let work = interval / 8;
    let mut a =
        Member::subscribe(backend, "a", config.clone(), sub(&topic), &Timeline::new()).await?;

    let give_up = deadline(backend) + interval * 3;
    let mut first_delivery: Option<Instant> = None;
    loop {
        let n = a.poll_once(backend.poll_timeout()).await?;
        if n > 0 {
            first_delivery.get_or_insert_with(Instant::now);
            tokio::time::sleep(work).await;
        }
        if first_delivery.is_some_and(|t| t.elapsed() >= interval * 3) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < give_up,
            "expected the auto-committing consumer to consume for {:?}; it got {} records",
            interval * 3,
            a.deliveries.len()
        );
    }
    let delivered = a.offsets_of(&p);
    let last = delivered.last().copied().unwrap_or(-1);
    anyhow::ensure!(
        last < 119,
        "the auto-committing consumer consumed every record before the crash; the scenario needs some left"
    );
    let crash = Instant::now();
    let given_at: BTreeMap<i64, Instant> = a
        .deliveries
        .iter()
        .map(|d| (d.value.offset, d.at))
        .collect();
    backend.abandon(a.consumer).await;

    let mut b = Member::subscribe(backend, "b", config, sub(&topic), &Timeline::new()).await?;
    poll_members_until(
        &mut [&mut b],
        backend.poll_timeout(),
        Instant::now() + session + backend.patience(),
        "the next owner to receive records after the crash",
        |ms| !ms[0].deliveries.is_empty(),
    )
    .await?;
    let first = b.offsets_of(&p).first().copied().unwrap_or(-1);
    assert!(
        first > 0,
        "auto-commit should have committed during {:?} of consumption (interval {interval:?}); the next owner started at {first}",
        interval * 3
    );
    assert!(
        first <= last + 1,
        "the crashed consumer was given up to offset {last}, the next owner started at {first}: records in between were lost"
    );
    let slack = (work + backend.poll_timeout()) * 2 + Duration::from_millis(50);
    for o in first..=last {
        if let Some(at) = given_at.get(&o) {
            let age = crash.saturating_duration_since(*at);
            assert!(
                age <= interval + slack,
                "offset {o} was given to the crashed consumer {age:?} before the crash, more than auto.commit.interval.ms ({interval:?}) + {slack:?}, yet the next owner reprocessed it (it started at {first})"
            );
        }
    }
    b.consumer.close().await?;
    Ok(())
}
