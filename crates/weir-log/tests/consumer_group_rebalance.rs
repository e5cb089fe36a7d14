//! Group coordinator scenarios: membership, generations, the eager join barrier,
//! hand-over of committed offsets on revocation, immediate leave on close.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use weir_core::{AssignmentStrategy, Consumer, Subscription, TopicPartition};
use weir_log::{describe_group, LogConsumer};

#[tokio::test]
async fn one_two_four_five_members_share_four_partitions_with_rising_generations() {
    let (_dir, log) = log_with_topic("t", 4);
    let journal = Journal::default();
    let mut consumers: Vec<LogConsumer> = Vec::new();
    let mut last_generation = 0;
    for (n, sizes) in [
        (1, vec![4]),
        (2, vec![2, 2]),
        (4, vec![1, 1, 1, 1]),
        (5, vec![1, 1, 1, 1, 0]),
    ] {
        while consumers.len() < n {
            let mut c =
                LogConsumer::new(&log, config("g-sizes", AssignmentStrategy::Range)).unwrap();
            let name = format!("c{}", consumers.len());
            c.subscribe(
                Subscription::topics(["t"]),
                Arc::new(Recorder::new(&name, &journal)),
            )
            .await
            .unwrap();
            consumers.push(c);
        }
        let mut refs: Vec<&mut LogConsumer> = consumers.iter_mut().collect();
        poll_until(&mut refs, |a| {
            balanced(a, 4, &sizes) && !describe_group(&log, "g-sizes").unwrap().rebalancing
        })
        .await;
        let desc = describe_group(&log, "g-sizes").unwrap();
        assert_eq!(desc.members.len(), n);
        assert!(!desc.rebalancing);
        assert_eq!(desc.assignor.as_deref(), Some("range"));
        assert!(
            desc.generation > last_generation,
            "every join is a new generation"
        );
        last_generation = desc.generation;
        for c in &consumers {
            assert_eq!(c.generation(), Some(desc.generation));
        }
    }
    // Eager: every member saw on_partitions_assigned after each rebalance it was in.
    let assigned_c0 = journal
        .lock()
        .iter()
        .filter(|e| matches!(e, Event::Assigned(n, _) if n == "c0"))
        .count();
    assert!(assigned_c0 >= 4, "{:?}", journal.lock());
}

#[tokio::test]
async fn close_rebalances_at_once_not_after_the_session_timeout() {
    let (_dir, log) = log_with_topic("t", 4);
    let cfg = config("g-close", AssignmentStrategy::RoundRobin)
        .with_session_timeout(Duration::from_secs(30))
        .with_heartbeat_interval(Duration::from_millis(100));
    let mut a = LogConsumer::new(&log, cfg.clone()).unwrap();
    let mut b = LogConsumer::new(&log, cfg).unwrap();
    let journal = Journal::default();
    a.subscribe(
        Subscription::topics(["t"]),
        Arc::new(Recorder::new("a", &journal)),
    )
    .await
    .unwrap();
    b.subscribe(
        Subscription::topics(["t"]),
        Arc::new(Recorder::new("b", &journal)),
    )
    .await
    .unwrap();
    poll_until(&mut [&mut a, &mut b], |x| balanced(x, 4, &[2, 2])).await;
    let a_had = a.assignment();
    let closed_at = Instant::now();
    a.close().await.unwrap();
    poll_until(&mut [&mut b], |x| x[0].len() == 4).await;
    assert!(
        closed_at.elapsed() < Duration::from_secs(15),
        "took over only after {:?}",
        closed_at.elapsed()
    );
    // close() revoked through the listener before leaving.
    assert!(journal
        .lock()
        .contains(&Event::Revoked("a".into(), a_had.into_iter().collect())));
    assert!(matches!(
        a.poll(Duration::from_millis(1)).await,
        Err(weir_core::Error::Closed)
    ));
    assert_eq!(describe_group(&log, "g-close").unwrap().members.len(), 1);
}

#[tokio::test]
async fn commit_made_in_revoke_is_where_the_next_owner_starts() {
    let (_dir, log) = log_with_topic("t", 2);
    produce(&log, "t", 0, 30);
    produce(&log, "t", 1, 30);
    let journal = Journal::default();
    let cfg = config("g-handover", AssignmentStrategy::Range).with_max_poll_records(7);
    let mut a = LogConsumer::new(&log, cfg.clone()).unwrap();
    let mut rec = Recorder::new("a", &journal);
    rec.commit_on_revoke = true;
    a.subscribe(Subscription::topics(["t"]), Arc::new(rec))
        .await
        .unwrap();
    let mut delivered_to_a = 0;
    while delivered_to_a < 20 {
        delivered_to_a += a.poll(Duration::from_millis(50)).await.unwrap().len();
    }
    let pos = [
        a.position(&TopicPartition::new("t", 0)).await.unwrap(),
        a.position(&TopicPartition::new("t", 1)).await.unwrap(),
    ];

    let mut b = LogConsumer::new(&log, cfg).unwrap();
    b.subscribe(
        Subscription::topics(["t"]),
        Arc::new(Recorder::new("b", &journal)),
    )
    .await
    .unwrap();
    let mut first_seen = std::collections::BTreeMap::new();
    let deadline = Instant::now() + DEADLINE;
    while first_seen.is_empty() {
        // B first: its first poll joins, so A's next poll revokes before fetching.
        for r in &b.poll(Duration::from_millis(10)).await.unwrap() {
            first_seen.entry(r.partition).or_insert(r.offset);
        }
        for r in &a.poll(Duration::from_millis(10)).await.unwrap() {
            assert_eq!(r.partition, 0, "A never sees partition 1 again");
        }
        assert!(Instant::now() < deadline);
    }
    let (p, first) = first_seen.into_iter().next().unwrap();
    assert_eq!(p, 1, "range gives the second member partition 1");
    assert_eq!(
        first, pos[1],
        "B starts exactly where A committed in revoke"
    );
    let events = journal.lock().clone();
    let revoked_at = events
        .iter()
        .position(|e| matches!(e, Event::Revoked(n, v) if n == "a" && v.len() == 2))
        .unwrap();
    let assigned_b = events
        .iter()
        .position(|e| matches!(e, Event::Assigned(n, v) if n == "b" && !v.is_empty()))
        .unwrap();
    assert!(revoked_at < assigned_b, "{events:?}");
    assert_eq!(
        log.group_offsets("g-handover").unwrap()[&TopicPartition::new("t", 0)],
        pos[0]
    );
}

#[tokio::test]
async fn eager_join_barrier_holds_the_new_assignment_until_revocation_is_done() {
    let (_dir, log) = log_with_topic("t", 2);
    let journal = Journal::default();
    let cfg = config("g-barrier", AssignmentStrategy::Range);
    let (entered_tx, mut entered_rx) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Notify::new());
    let mut rec_a = Recorder::new("a", &journal);
    rec_a.gate = Some((entered_tx, release.clone()));
    let mut a = LogConsumer::new(&log, cfg.clone()).unwrap();
    a.subscribe(Subscription::topics(["t"]), Arc::new(rec_a))
        .await
        .unwrap();
    poll_until(&mut [&mut a], |x| x[0].len() == 2).await;

    let mut b = LogConsumer::new(&log, cfg).unwrap();
    b.subscribe(
        Subscription::topics(["t"]),
        Arc::new(Recorder::new("b", &journal)),
    )
    .await
    .unwrap();
    b.poll(Duration::from_millis(10)).await.unwrap(); // joins: rebalance begins
    let a_task = tokio::spawn(async move {
        a.poll(Duration::from_millis(10)).await.unwrap();
        a
    });
    // A is now inside on_partitions_revoked and stays there.
    tokio::time::timeout(DEADLINE, entered_rx.recv())
        .await
        .unwrap()
        .unwrap();
    for _ in 0..5 {
        b.poll(Duration::from_millis(20)).await.unwrap();
        assert!(
            b.assignment().is_empty(),
            "B got partitions behind the barrier"
        );
        assert!(describe_group(&log, "g-barrier").unwrap().rebalancing);
    }
    release.notify_one();
    let mut a = tokio::time::timeout(DEADLINE, a_task)
        .await
        .unwrap()
        .unwrap();
    poll_until(&mut [&mut a, &mut b], |x| balanced(x, 2, &[1, 1])).await;
}

#[tokio::test]
async fn commit_of_a_partition_not_owned_is_refused() {
    let (_dir, log) = log_with_topic("t", 2);
    let cfg = config("g-commit", AssignmentStrategy::Range);
    let mut a = LogConsumer::new(&log, cfg.clone()).unwrap();
    let mut b = LogConsumer::new(&log, cfg).unwrap();
    let j = Journal::default();
    a.subscribe(
        Subscription::topics(["t"]),
        Arc::new(Recorder::new("a", &j)),
    )
    .await
    .unwrap();
    b.subscribe(
        Subscription::topics(["t"]),
        Arc::new(Recorder::new("b", &j)),
    )
    .await
    .unwrap();
    poll_until(&mut [&mut a, &mut b], |x| balanced(x, 2, &[1, 1])).await;
    let theirs = b.assignment().into_iter().next().unwrap();
    let err = a
        .commit_sync(weir_core::CommitOffsets::from([(theirs.clone(), 1)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, weir_core::Error::CommitFailed { group, .. } if group == "g-commit"),
        "{err}"
    );
    assert!(err.to_string().contains(&theirs.to_string()), "{err}");
    let mine = a.assignment().into_iter().next().unwrap();
    a.commit_sync(weir_core::CommitOffsets::from([(mine.clone(), 0)]))
        .await
        .unwrap();
    assert_eq!(log.group_offsets("g-commit").unwrap()[&mine], 0);
}

#[tokio::test]
async fn a_different_strategy_cannot_join_the_group() {
    let (_dir, log) = log_with_topic("t", 1);
    let mut a = LogConsumer::new(&log, config("g-mixed", AssignmentStrategy::Range)).unwrap();
    let mut b = LogConsumer::new(
        &log,
        config("g-mixed", AssignmentStrategy::CooperativeSticky),
    )
    .unwrap();
    let j = Journal::default();
    a.subscribe(
        Subscription::topics(["t"]),
        Arc::new(Recorder::new("a", &j)),
    )
    .await
    .unwrap();
    a.poll(Duration::from_millis(1)).await.unwrap();
    b.subscribe(
        Subscription::topics(["t"]),
        Arc::new(Recorder::new("b", &j)),
    )
    .await
    .unwrap();
    let err = b.poll(Duration::from_millis(1)).await.unwrap_err();
    assert!(
        matches!(&err, weir_core::Error::Config { key, .. } if key == "partition.assignment.strategy"),
        "{err}"
    );
}

#[tokio::test]
async fn new_matching_topics_and_added_partitions_are_picked_up() {
    let (_dir, log) = log_with_topic("orders-eu", 1);
    log.create_topic("payments", 1).unwrap();
    let mut a = LogConsumer::new(
        &log,
        config("g-pattern", AssignmentStrategy::CooperativeSticky),
    )
    .unwrap();
    let j = Journal::default();
    a.subscribe(
        Subscription::pattern("orders-.*").unwrap(),
        Arc::new(Recorder::new("a", &j)),
    )
    .await
    .unwrap();
    poll_until(&mut [&mut a], |x| x[0].len() == 1).await;
    let gen = a.generation().unwrap();
    log.create_topic("orders-us", 2).unwrap();
    poll_until(&mut [&mut a], |x| x[0].len() == 3).await;
    log.add_partitions("orders-eu", 3).unwrap();
    poll_until(&mut [&mut a], |x| x[0].len() == 5).await;
    assert!(a.generation().unwrap() > gen);
    assert!(!a.assignment().iter().any(|tp| tp.topic() == "payments"));
    // Cooperative: nothing was revoked along the way.
    assert!(!j.lock().iter().any(|e| matches!(e, Event::Revoked(..))));
}

/// A listener that records its wishes and then fails.
struct Failing;

#[weir_core::async_trait]
impl weir_core::RebalanceListener for Failing {
    async fn on_partitions_revoked(
        &self,
        revoked: &[TopicPartition],
        ctx: &mut weir_core::RebalanceContext,
    ) -> weir_core::Result<()> {
        for tp in revoked {
            ctx.commit(tp.clone(), 3);
        }
        Err(weir_core::Error::IllegalState(
            "revoke handler failed".into(),
        ))
    }

    async fn on_partitions_assigned(
        &self,
        assigned: &[TopicPartition],
        ctx: &mut weir_core::RebalanceContext,
    ) -> weir_core::Result<()> {
        for tp in assigned {
            ctx.seek(tp.clone(), weir_core::Offset::At(5));
        }
        Err(weir_core::Error::IllegalState(
            "assign handler failed".into(),
        ))
    }
}

#[tokio::test]
async fn listener_errors_surface_from_poll_but_the_rebalance_stands() {
    let (_dir, log) = log_with_topic("t", 2);
    produce(&log, "t", 0, 10);
    produce(&log, "t", 1, 10);
    let cfg = config("g-failing", AssignmentStrategy::Range);
    let mut a = LogConsumer::new(&log, cfg.clone()).unwrap();
    a.subscribe(Subscription::topics(["t"]), Arc::new(Failing))
        .await
        .unwrap();
    let err = a.poll(Duration::from_millis(10)).await.unwrap_err();
    assert!(
        matches!(&err, weir_core::Error::Listener(_))
            && err.to_string().contains("assign handler failed"),
        "{err}"
    );
    // The assignment and its seeks stand.
    assert_eq!(a.assignment().len(), 2);
    let batch = a.poll(Duration::from_secs(1)).await.unwrap();
    for tp in a.assignment() {
        assert_eq!(batch.records(&tp).next().unwrap().offset, 5);
    }

    // B joins; A's revoke handler commits 3 and fails: the error surfaces, the commits
    // are made and the partitions are handed over anyway.
    let mut b = LogConsumer::new(&log, cfg).unwrap();
    b.subscribe(
        Subscription::topics(["t"]),
        Arc::new(weir_core::NoopListener),
    )
    .await
    .unwrap();
    b.poll(Duration::from_millis(1)).await.unwrap();
    let err = a.poll(Duration::from_millis(10)).await.unwrap_err();
    assert!(err.to_string().contains("revoke handler failed"), "{err}");
    let committed = log.group_offsets("g-failing").unwrap();
    assert_eq!(committed.values().copied().collect::<Vec<_>>(), vec![3, 3]);
    // Range: A (the first member) gets t-0 back, B gets t-1 from the commit.
    let deadline = Instant::now() + DEADLINE;
    let mut first = None;
    while first.is_none() {
        let _ = a.poll(Duration::from_millis(5)).await; // its assign handler fails again
        first = b
            .poll(Duration::from_millis(20))
            .await
            .unwrap()
            .iter()
            .next()
            .map(|r| (r.partition, r.offset));
        assert!(Instant::now() < deadline);
    }
    assert_eq!(
        first,
        Some((1, 3)),
        "B starts where A's failing handler committed"
    );
}
