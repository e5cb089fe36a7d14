//! Cooperative (incremental) rebalancing: unmoved partitions keep flowing while a move
//! is pending; a moving partition is revoked (with its commit) before its new owner
//! gets it, in a follow-up generation. Eager stops the world in the same situation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use weir_core::{AssignmentStrategy, Consumer, Subscription, TopicPartition};
use weir_log::{describe_group, LogConsumer};

/// A and X own two partitions each; X then stalls (alive, not polling) and B joins.
/// Returns (a, x, b) after B's join started the rebalance.
async fn stalled_owner_and_a_joiner(
    log: &weir_log::Log,
    group: &str,
    strategy: AssignmentStrategy,
    journal: &Journal,
) -> (LogConsumer, LogConsumer, LogConsumer) {
    let cfg = config(group, strategy)
        .with_session_timeout(Duration::from_secs(30))
        .with_max_poll_interval(Duration::from_millis(1500));
    let mut a = LogConsumer::new(log, cfg.clone()).unwrap();
    let mut x = LogConsumer::new(log, cfg.clone()).unwrap();
    a.subscribe(
        Subscription::topics(["t"]),
        Arc::new(Recorder::new("a", journal)),
    )
    .await
    .unwrap();
    a.poll(Duration::from_millis(1)).await.unwrap(); // a joins first (the leader)
    x.subscribe(
        Subscription::topics(["t"]),
        Arc::new(Recorder::new("x", journal)),
    )
    .await
    .unwrap();
    poll_until(&mut [&mut a, &mut x], |s| balanced(s, 4, &[2, 2])).await;
    let mut b = LogConsumer::new(log, cfg).unwrap();
    b.subscribe(
        Subscription::topics(["t"]),
        Arc::new(Recorder::new("b", journal)),
    )
    .await
    .unwrap();
    b.poll(Duration::from_millis(1)).await.unwrap();
    (a, x, b)
}

#[tokio::test]
async fn unmoved_partitions_keep_flowing_while_a_move_waits_for_a_stalled_owner() {
    let (_dir, log) = log_with_topic("t", 4);
    let j = Journal::default();
    let (mut a, x, mut b) = stalled_owner_and_a_joiner(
        &log,
        "g-coop-flow",
        AssignmentStrategy::CooperativeSticky,
        &j,
    )
    .await;
    let a_owns = a.assignment();
    assert_eq!(a_owns.len(), 2);
    let seen_before = j.lock().len();
    // The rebalance now waits for X to give one partition up; A keeps consuming.
    for round in 0..5 {
        for tp in &a_owns {
            produce(&log, "t", tp.partition(), 2);
        }
        let mut got = 0;
        let deadline = Instant::now() + DEADLINE;
        while got < 4 {
            let batch = a.poll(Duration::from_millis(50)).await.unwrap();
            assert!(batch.iter().all(|r| a_owns.contains(&r.topic_partition())));
            got += batch.len();
            assert!(
                Instant::now() < deadline,
                "A's partitions stopped in round {round}"
            );
        }
        b.poll(Duration::from_millis(1)).await.unwrap();
        let desc = describe_group(&log, "g-coop-flow").unwrap();
        assert!(desc.rebalancing, "round {round}: the move is still pending");
        assert_eq!(a.assignment(), a_owns);
    }
    assert!(
        !j.lock()[seen_before..]
            .iter()
            .any(|e| matches!(e, Event::Revoked(n, _) if n == "a")),
        "A revoked nothing: {:?}",
        j.lock()
    );
    // X's poll interval runs out; B gets its share; A still keeps its two.
    poll_until(&mut [&mut a, &mut b], |s| balanced(s, 4, &[2, 2])).await;
    assert_eq!(a.assignment(), a_owns);
    drop(x);
}

#[tokio::test]
async fn eager_stops_the_world_while_a_member_is_stalled() {
    let (_dir, log) = log_with_topic("t", 4);
    let j = Journal::default();
    let (mut a, x, mut b) =
        stalled_owner_and_a_joiner(&log, "g-eager-stop", AssignmentStrategy::Range, &j).await;
    let a_owned = a.assignment();
    for tp in &a_owned {
        produce(&log, "t", tp.partition(), 2);
    }
    // A revokes everything and then waits at the barrier behind X: no records.
    for _ in 0..5 {
        assert!(a.poll(Duration::from_millis(30)).await.unwrap().is_empty());
        b.poll(Duration::from_millis(1)).await.unwrap();
        assert!(a.assignment().is_empty());
    }
    assert!(j
        .lock()
        .contains(&Event::Revoked("a".into(), a_owned.into_iter().collect())));
    assert!(describe_group(&log, "g-eager-stop").unwrap().rebalancing);
    drop(x);
}

#[tokio::test]
async fn a_moving_partition_is_revoked_and_committed_before_its_new_owner_gets_it() {
    let (_dir, log) = log_with_topic("t", 4);
    for p in 0..4 {
        produce(&log, "t", p, 10);
    }
    let j = Journal::default();
    let cfg = config("g-coop-move", AssignmentStrategy::CooperativeSticky);
    let mut a = LogConsumer::new(&log, cfg.clone()).unwrap();
    let mut rec = Recorder::new("a", &j);
    rec.commit_on_revoke = true;
    a.subscribe(Subscription::topics(["t"]), Arc::new(rec))
        .await
        .unwrap();
    let mut consumed = 0;
    while consumed < 40 {
        consumed += a.poll(Duration::from_millis(20)).await.unwrap().len();
    }
    let mut b = LogConsumer::new(&log, cfg).unwrap();
    b.subscribe(
        Subscription::topics(["t"]),
        Arc::new(Recorder::new("b", &j)),
    )
    .await
    .unwrap();
    b.poll(Duration::from_millis(1)).await.unwrap();
    let join_generation = b.generation().unwrap();
    assert!(b.assignment().is_empty(), "nothing is free yet");
    a.poll(Duration::from_millis(1)).await.unwrap(); // revokes two, keeps two
    assert_eq!(a.assignment().len(), 2);
    poll_until(&mut [&mut a, &mut b], |s| balanced(s, 4, &[2, 2])).await;
    assert_eq!(
        b.generation().unwrap(),
        join_generation + 1,
        "moved partitions arrive in the follow-up generation"
    );
    let events = j.lock().clone();
    let revoked = events
        .iter()
        .position(|e| matches!(e, Event::Revoked(n, v) if n == "a" && v.len() == 2))
        .unwrap();
    let assigned = events
        .iter()
        .position(|e| matches!(e, Event::Assigned(n, v) if n == "b" && v.len() == 2))
        .unwrap();
    assert!(revoked < assigned, "{events:?}");
    // B starts the moved partitions where A committed in revoke: at the end.
    for tp in b.assignment() {
        assert_eq!(b.position(&tp).await.unwrap(), 10);
        assert_eq!(log.group_offsets("g-coop-move").unwrap()[&tp], 10);
    }
    produce(&log, "t", 0, 1);
    let moved: Vec<TopicPartition> = b.assignment().into_iter().collect();
    assert!(!a.assignment().iter().any(|tp| moved.contains(tp)));
}
