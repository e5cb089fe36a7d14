//! The rebalance listener's timing contract.

use std::collections::BTreeMap;
use std::time::Duration;

use weir_core::{CommitOffsets, Offset};

use super::common::{group_config, topic as sub, tp};
use crate::harness::{
    create_topic, deadline, list, poll_members_until, produce_n, runs, wait_for_assignment, Event,
    Member, Recorder, Stamped, Timeline,
};
use crate::Backend;

/// The kinds of the callbacks that named at least one partition, in order.
fn kinds(events: &[Stamped<Event>]) -> Vec<&'static str> {
    events
        .iter()
        .filter_map(|e| match &e.value {
            Event::Assigned(ps) if !ps.is_empty() => Some("assigned"),
            Event::Revoked { partitions, .. } if !partitions.is_empty() => Some("revoked"),
            Event::Lost(ps) if !ps.is_empty() => Some("lost"),
            _ => None,
        })
        .collect()
}

/// When a second member joins (eager `range` assignment): the first member's
/// `on_partitions_revoked` runs before any `on_partitions_assigned` that follows it
/// (its own and the new owner's), no record of a revoked partition reaches the old
/// owner once revocation began, and the offset committed in `on_partitions_revoked`
/// (through `RebalanceContext::commit`, the position it reports) is where the new owner
/// starts.
pub async fn revoked_runs_before_assigned_and_its_commit_is_where_the_next_owner_starts(
    backend: &dyn Backend,
) -> anyhow::Result<()> {
    let topic = backend.unique("revoke");
    let group = backend.unique("revoke-group");
    let all = create_topic(backend, &topic, 2).await?;
    for p in 0..2 {
        produce_n(backend, &topic, p, 0, 20).await?;
    }
    let config = group_config(backend, &group).with_max_poll_records(3);
    let timeline = Timeline::new();
    let ra = Recorder::new(timeline.clone());
    ra.commit_position_on_revoke(true);
    let rb = Recorder::new(timeline.clone());
    rb.commit_position_on_revoke(true);
    let mut a = Member::subscribe_with(backend, "a", config.clone(), sub(&topic), ra).await?;
    poll_members_until(
        &mut [&mut a],
        backend.poll_timeout(),
        deadline(backend),
        "the first member to be given records of both partitions",
        |ms| all.iter().all(|p| !ms[0].offsets_of(p).is_empty()),
    )
    .await?;
    let mut b = Member::subscribe_with(backend, "b", config, sub(&topic), rb).await?;
    wait_for_assignment(
        &mut [&mut a, &mut b],
        &[1, 1],
        &all,
        backend.poll_timeout(),
        deadline(backend),
    )
    .await?;
    let moved = b
        .assignment()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the new member owns nothing"))?;

    let a_events = a.recorder.events();
    let a_kinds = kinds(&a_events);
    for pair in a_kinds.windows(2) {
        assert!(
            pair[0] != pair[1],
            "eager rebalancing should alternate assigned and revoked on the first member (callbacks with partitions), it saw {a_kinds:?}"
        );
    }
    assert_eq!(
        a_kinds.first(),
        Some(&"assigned"),
        "the first member's callbacks: {a_kinds:?}"
    );
    let revoke = a
        .recorder
        .events_of(&moved)
        .into_iter()
        .find(|e| matches!(e.value, Event::Revoked { .. }))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the first member never saw {moved} revoked; its callbacks: {a_kinds:?}"
            )
        })?;
    let assigned_to_b = b
        .recorder
        .events_of(&moved)
        .into_iter()
        .find(|e| matches!(e.value, Event::Assigned(_)))
        .ok_or_else(|| anyhow::anyhow!("the new member never saw {moved} assigned"))?;
    assert!(
        revoke.seq < assigned_to_b.seq,
        "{moved} was assigned to the new member (event {}) before the old owner's on_partitions_revoked ran (event {})",
        assigned_to_b.seq,
        revoke.seq
    );
    let late: Vec<i64> = a
        .deliveries_of(&moved)
        .filter(|d| d.seq > revoke.seq)
        .map(|d| d.value.offset)
        .collect();
    assert!(
        late.is_empty(),
        "the old owner was given records of {moved} after its revocation began: offsets {}",
        runs(&late)
    );
    let delivered = a.offsets_of(&moved);
    let reported = match &revoke.value {
        Event::Revoked { positions, .. } => positions.get(&moved).copied().flatten(),
        _ => None,
    };
    let expected = delivered.last().map(|o| o + 1);
    assert_eq!(
        reported,
        expected,
        "RebalanceContext::position({moved}) in on_partitions_revoked, after the old owner was given {}",
        runs(&delivered)
    );
    let committed_at = expected.unwrap_or(0);

    for p in 0..2 {
        produce_n(backend, &topic, p, 20, 1).await?;
    }
    poll_members_until(
        &mut [&mut a, &mut b],
        backend.poll_timeout(),
        deadline(backend),
        "the new owner to be given the record produced after the rebalance (offset 20)",
        |ms| ms[1].offsets_of(&moved).contains(&20),
    )
    .await?;
    let b_offsets = b.offsets_of(&moved);
    let want: Vec<i64> = (committed_at..=20).collect();
    assert_eq!(
        b_offsets, want,
        "the new owner of {moved} should start at {committed_at}, committed in on_partitions_revoked; it was given {}",
        runs(&b_offsets)
    );
    Ok(())
}

/// A seek made in `on_partitions_assigned` decides the first record delivered, over a
/// committed offset and over `auto.offset.reset`: seeking to an offset, and to the end.
/// No earlier record is ever delivered.
pub async fn seek_in_assigned_decides_the_first_record(
    backend: &dyn Backend,
) -> anyhow::Result<()> {
    seek_in_assigned(backend, "seek-assign", Duration::ZERO).await
}

/// As [`seek_in_assigned_decides_the_first_record`], with a handler that takes a while
/// (five poll timeouts, as a slow database read would) before it seeks: records the
/// backend fetched meanwhile from the committed offset are never delivered.
pub async fn seek_in_a_slow_assigned_handler_decides_the_first_record(
    backend: &dyn Backend,
) -> anyhow::Result<()> {
    seek_in_assigned(backend, "slow-seek-assign", backend.poll_timeout() * 5).await
}

async fn seek_in_assigned(
    backend: &dyn Backend,
    name: &str,
    delay: Duration,
) -> anyhow::Result<()> {
    let topic = backend.unique(name);
    let group = backend.unique(&format!("{name}-group"));
    let all = create_topic(backend, &topic, 3).await?;
    for p in 0..3 {
        produce_n(backend, &topic, p, 0, 10).await?;
    }
    let (p0, p1, p2) = (tp(&topic, 0), tp(&topic, 1), tp(&topic, 2));

    let timeline = Timeline::new();
    let mut setup = Member::subscribe(
        backend,
        "setup",
        group_config(backend, &group),
        sub(&topic),
        &timeline,
    )
    .await?;
    wait_for_assignment(
        &mut [&mut setup],
        &[3],
        &all,
        backend.poll_timeout(),
        deadline(backend),
    )
    .await?;
    let ones: BTreeMap<_, _> = all.iter().map(|p| (p.clone(), 1)).collect();
    setup
        .consumer
        .commit_sync(CommitOffsets::Explicit(ones))
        .await?;
    setup.consumer.close().await?;

    let recorder = Recorder::new(timeline.clone());
    recorder.seek_on_assign(p0.clone(), Offset::At(7));
    recorder.seek_on_assign(p1.clone(), Offset::At(3));
    recorder.seek_on_assign(p2.clone(), Offset::End);
    recorder.delay_assign(delay);
    let mut a = Member::subscribe_with(
        backend,
        "a",
        group_config(backend, &group),
        sub(&topic),
        recorder,
    )
    .await?;
    poll_members_until(
        &mut [&mut a],
        backend.poll_timeout(),
        deadline(backend),
        "offsets 7..=9 of partition 0 and 3..=9 of partition 1",
        |ms| ms[0].offsets_of(&p0).contains(&9) && ms[0].offsets_of(&p1).contains(&9),
    )
    .await?;
    let what = "after seeking in on_partitions_assigned (committed offset 1, auto.offset.reset earliest; seeks: 0→7, 1→3, 2→end)";
    for (p, want) in [
        (&p0, (7..=9).collect::<Vec<i64>>()),
        (&p1, (3..=9).collect()),
        (&p2, vec![]),
    ] {
        let got = a.offsets_of(p);
        assert_eq!(got, want, "offsets of {p} {what}: {}", runs(&got));
    }
    produce_n(backend, &topic, 2, 10, 1).await?;
    poll_members_until(
        &mut [&mut a],
        backend.poll_timeout(),
        deadline(backend),
        "offset 10 of partition 2, produced after the seek to its end",
        |ms| ms[0].offsets_of(&p2).contains(&10),
    )
    .await?;
    let got = a.offsets_of(&p2);
    assert_eq!(
        got,
        vec![10],
        "offsets of {p2} {what}, then one record appended: {}; assigned: {}",
        runs(&got),
        list(&a.assignment())
    );
    let assigned = a
        .recorder
        .events()
        .into_iter()
        .find(|e| matches!(e.value, Event::Assigned(_)))
        .map(|e| e.seq);
    let first_delivery = a.deliveries.first().map(|d| d.seq);
    assert!(
        assigned.is_some() && assigned < first_delivery,
        "on_partitions_assigned (event {assigned:?}) should run before the first delivery (event {first_delivery:?})"
    );
    Ok(())
}
