//! Members leaving: by `close()`, by vanishing, by not polling.

use std::time::{Duration, Instant};

use weir_core::Error;

use super::common::{group_config, topic as sub};
use crate::harness::{
    create_topic, deadline, list, poll_members_until, wait_for_assignment, Event, Member, Timeline,
};
use crate::Backend;

/// `close()` leaves the group at once: the survivor owns every partition well before
/// `session.timeout.ms` (in less than half of it), and the closing member's listener
/// saw its partitions revoked.
pub async fn close_rebalances_before_the_session_timeout(
    backend: &dyn Backend,
) -> anyhow::Result<()> {
    let topic = backend.unique("close");
    let group = backend.unique("close-group");
    let all = create_topic(backend, &topic, 4).await?;
    let config = group_config(backend, &group);
    let session = config.session_timeout();
    let timeline = Timeline::new();
    let mut a = Member::subscribe(backend, "a", config.clone(), sub(&topic), &timeline).await?;
    let mut b = Member::subscribe(backend, "b", config, sub(&topic), &timeline).await?;
    wait_for_assignment(
        &mut [&mut a, &mut b],
        &[2, 2],
        &all,
        backend.poll_timeout(),
        deadline(backend),
    )
    .await?;
    let a_owned = a.assignment();

    let start = Instant::now();
    let mut reached = None;
    let mut survivors = [&mut b];
    let (closed, survivor) = tokio::join!(
        a.consumer.close(),
        poll_members_until(
            &mut survivors,
            backend.poll_timeout(),
            start + session + backend.patience(),
            "the survivor to own all 4 partitions after the other member closed",
            |ms| {
                let done = ms[0].assignment() == all;
                if done {
                    reached = Some(start.elapsed());
                }
                done
            },
        )
    );
    closed.map_err(|e| anyhow::anyhow!("close() of member a failed: {e}"))?;
    survivor?;
    let took = reached.unwrap_or(Duration::MAX);
    let bound = session / 2 + backend.rebalance_delay();
    assert!(
        took < bound,
        "after close() the survivor should own every partition in less than half the session timeout plus the backend's rebalance delay ({bound:?}), it took {took:?}"
    );
    let revoked: Vec<_> = a
        .recorder
        .events()
        .into_iter()
        .filter_map(|e| match e.value {
            Event::Revoked { partitions, .. } => Some(partitions),
            _ => None,
        })
        .flatten()
        .collect();
    for p in &a_owned {
        assert!(
            revoked.contains(p),
            "close() should revoke {p} through the listener; revoked: {}",
            list(&revoked)
        );
    }
    Ok(())
}

/// A member that vanishes without `close()` (a crash) keeps its partitions until
/// `session.timeout.ms` has passed, then the survivor gets them: not much before the
/// timeout (no earlier than the timeout less one heartbeat interval and 10%), and not
/// much after.
pub async fn vanished_member_is_replaced_after_the_session_timeout(
    backend: &dyn Backend,
) -> anyhow::Result<()> {
    let topic = backend.unique("vanish");
    let group = backend.unique("vanish-group");
    let all = create_topic(backend, &topic, 4).await?;
    let base = group_config(backend, &group);
    let session = base.session_timeout();
    let heartbeat = base.heartbeat_interval();
    let config = base.with_max_poll_interval(session * 10);
    let timeline = Timeline::new();
    let mut a = Member::subscribe(backend, "a", config.clone(), sub(&topic), &timeline).await?;
    let mut b = Member::subscribe(backend, "b", config, sub(&topic), &timeline).await?;
    wait_for_assignment(
        &mut [&mut a, &mut b],
        &[2, 2],
        &all,
        backend.poll_timeout(),
        deadline(backend),
    )
    .await?;

    let start = Instant::now();
    backend.abandon(a.consumer).await;
    let mut reached = None;
    poll_members_until(
        &mut [&mut b],
        backend.poll_timeout(),
        start + session + backend.patience(),
        "the survivor to own all 4 partitions after the other member vanished",
        |ms| {
            let done = ms[0].assignment() == all;
            if done {
                reached = Some(start.elapsed());
            }
            done
        },
    )
    .await?;
    let took = reached.unwrap_or(Duration::MAX);
    let earliest = session.saturating_sub(heartbeat + session / 10);
    assert!(
        took >= earliest,
        "a vanished member should keep its partitions until about session.timeout.ms ({session:?}); the survivor got them after {took:?}, before {earliest:?}"
    );
    Ok(())
}

/// A member that stops calling `poll` for longer than `max.poll.interval.ms` (set
/// equal to `session.timeout.ms` here) is removed: the other member gets its
/// partitions, not much before the interval. Its next poll tells it so, with
/// `Error::PollIntervalExceeded` or by calling `on_partitions_lost` with its
/// partitions; the polls after that rejoin the group.
pub async fn member_that_stops_polling_is_removed_and_told(
    backend: &dyn Backend,
) -> anyhow::Result<()> {
    let topic = backend.unique("stall");
    let group = backend.unique("stall-group");
    let all = create_topic(backend, &topic, 4).await?;
    let base = group_config(backend, &group);
    let session = base.session_timeout();
    let heartbeat = base.heartbeat_interval();
    let interval = session;
    let config = base.with_max_poll_interval(interval);
    let timeline = Timeline::new();
    let mut a = Member::subscribe(backend, "a", config.clone(), sub(&topic), &timeline).await?;
    let mut b = Member::subscribe(backend, "b", config, sub(&topic), &timeline).await?;
    wait_for_assignment(
        &mut [&mut a, &mut b],
        &[2, 2],
        &all,
        backend.poll_timeout(),
        deadline(backend),
    )
    .await?;
    let a_owned = a.assignment();
    let events_before = a.recorder.events().len();

    let start = Instant::now();
    let mut reached = None;
    poll_members_until(
        &mut [&mut b],
        backend.poll_timeout(),
        start + interval + session + backend.patience(),
        "the polling member to own all 4 partitions after the other stopped polling",
        |ms| {
            let done = ms[0].assignment() == all;
            if done {
                reached = Some(start.elapsed());
            }
            done
        },
    )
    .await?;
    let took = reached.unwrap_or(Duration::MAX);
    let earliest = interval.saturating_sub(heartbeat + interval / 10);
    assert!(
        took >= earliest,
        "a member that stopped polling should keep its partitions until about max.poll.interval.ms ({interval:?}); the other got them after {took:?}, before {earliest:?}"
    );

    let told = a.consumer.poll(backend.poll_timeout()).await;
    let lost: Vec<_> = a.recorder.events()[events_before..]
        .iter()
        .filter_map(|e| match &e.value {
            Event::Lost(ps) => Some(ps.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    match told {
        Err(Error::PollIntervalExceeded { .. }) => {}
        Ok(batch) => {
            for p in &a_owned {
                assert!(
                    lost.contains(p),
                    "the first poll after removal should report PollIntervalExceeded or call on_partitions_lost with {}; it returned {} records and lost was called with {}",
                    list(&a_owned),
                    batch.len(),
                    list(&lost)
                );
            }
            for r in &batch {
                assert!(
                    !a_owned.contains(&r.topic_partition()),
                    "the removed member was given {} from a partition it lost",
                    r.coordinates()
                );
            }
        }
        Err(e) => anyhow::bail!(
            "the first poll after removal should report PollIntervalExceeded or call on_partitions_lost, it failed with: {e}"
        ),
    }

    wait_for_assignment(
        &mut [&mut a, &mut b],
        &[2, 2],
        &all,
        backend.poll_timeout(),
        deadline(backend),
    )
    .await?;
    Ok(())
}

/// `unsubscribe()` revokes the member's partitions through its listener, empties its
/// assignment and leaves the group at once (the other member owns every partition
/// well before `session.timeout.ms`); subscribing again rejoins and the group shares
/// the partitions again.
pub async fn unsubscribe_leaves_the_group_and_resubscribe_rejoins(
    backend: &dyn Backend,
) -> anyhow::Result<()> {
    let topic = backend.unique("unsubscribe");
    let group = backend.unique("unsubscribe-group");
    let all = create_topic(backend, &topic, 4).await?;
    let config = group_config(backend, &group);
    let session = config.session_timeout();
    let timeline = Timeline::new();
    let mut a = Member::subscribe(backend, "a", config.clone(), sub(&topic), &timeline).await?;
    let mut b = Member::subscribe(backend, "b", config, sub(&topic), &timeline).await?;
    wait_for_assignment(
        &mut [&mut a, &mut b],
        &[2, 2],
        &all,
        backend.poll_timeout(),
        deadline(backend),
    )
    .await?;
    let a_owned = a.assignment();

    let start = Instant::now();
    let mut reached = None;
    let mut others = [&mut b];
    let (left, survivor) = tokio::join!(
        a.consumer.unsubscribe(),
        poll_members_until(
            &mut others,
            backend.poll_timeout(),
            start + session + backend.patience(),
            "the other member to own all 4 partitions after unsubscribe()",
            |ms| {
                let done = ms[0].assignment() == all;
                if done {
                    reached = Some(start.elapsed());
                }
                done
            },
        )
    );
    left.map_err(|e| anyhow::anyhow!("unsubscribe() of member a failed: {e}"))?;
    survivor?;
    let took = reached.unwrap_or(Duration::MAX);
    let bound = session / 2 + backend.rebalance_delay();
    assert!(
        took < bound,
        "after unsubscribe() the other member should own every partition in less than half the session timeout plus the backend's rebalance delay ({bound:?}), it took {took:?}"
    );
    assert!(
        a.assignment().is_empty(),
        "assignment() after unsubscribe() should be empty, it is {}",
        list(&a.assignment())
    );
    let revoked: Vec<_> = a
        .recorder
        .events()
        .into_iter()
        .filter_map(|e| match e.value {
            Event::Revoked { partitions, .. } => Some(partitions),
            _ => None,
        })
        .flatten()
        .collect();
    for p in &a_owned {
        assert!(
            revoked.contains(p),
            "unsubscribe() should revoke {p} through the listener; revoked: {}",
            list(&revoked)
        );
    }

    a.consumer
        .subscribe(sub(&topic), a.recorder.clone())
        .await
        .map_err(|e| anyhow::anyhow!("subscribing again after unsubscribe() failed: {e}"))?;
    wait_for_assignment(
        &mut [&mut a, &mut b],
        &[2, 2],
        &all,
        backend.poll_timeout(),
        deadline(backend),
    )
    .await?;
    Ok(())
}

/// A member removed from the group (it stopped polling past `max.poll.interval.ms`)
/// cannot commit for the partitions it lost: its `commit_sync` fails (a zombie's
/// commit must not move the new owner's offsets), and the group's committed offsets
/// stay as they were.
pub async fn commit_by_a_removed_member_is_rejected(backend: &dyn Backend) -> anyhow::Result<()> {
    let topic = backend.unique("zombie");
    let group = backend.unique("zombie-group");
    let all = create_topic(backend, &topic, 4).await?;
    for p in 0..4 {
        crate::harness::produce_n(backend, &topic, p, 0, 3).await?;
    }
    let base = group_config(backend, &group);
    let session = base.session_timeout();
    let config = base.with_max_poll_interval(session);
    let timeline = Timeline::new();
    let mut a = Member::subscribe(backend, "a", config.clone(), sub(&topic), &timeline).await?;
    let mut b = Member::subscribe(backend, "b", config, sub(&topic), &timeline).await?;
    wait_for_assignment(
        &mut [&mut a, &mut b],
        &[2, 2],
        &all,
        backend.poll_timeout(),
        deadline(backend),
    )
    .await?;
    let a_owned: Vec<_> = a.assignment().into_iter().collect();

    poll_members_until(
        &mut [&mut b],
        backend.poll_timeout(),
        Instant::now() + session * 2 + backend.patience(),
        "the polling member to own all 4 partitions after the other stopped polling",
        |ms| ms[0].assignment() == all,
    )
    .await?;
    let before = b.consumer.committed(&a_owned).await?;
    let zombie: std::collections::BTreeMap<_, _> = a_owned.iter().map(|p| (p.clone(), 2)).collect();
    let outcome = a
        .consumer
        .commit_sync(weir_core::CommitOffsets::Explicit(zombie))
        .await;
    assert!(
        outcome.is_err(),
        "a member removed from the group committed offsets for {} it no longer owns",
        list(&a_owned)
    );
    let after = b.consumer.committed(&a_owned).await?;
    assert_eq!(
        after, before,
        "the group's committed offsets after a removed member's rejected commit ({outcome:?})"
    );
    Ok(())
}
