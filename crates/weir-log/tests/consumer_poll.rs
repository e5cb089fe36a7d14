//! The poll loop and positions of the embedded consumer: long polls without spinning,
//! max.poll.records with fairness, pause/resume, auto-commit timing, seeks in the
//! assign callback, auto.offset.reset at the log's edges (retention, beyond the end),
//! standalone assign, configuration checks and the closed state.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use weir_core::{
    AssignmentStrategy, AutoOffsetReset, CommitOffsets, Consumer, ConsumerConfig, Error,
    NoopListener, Offset, Subscription, TopicPartition,
};
use weir_log::{Log, LogConsumer, LogOptions, NewRecord};

fn standalone(log: &Log) -> LogConsumer {
    let cfg = ConsumerConfig::new()
        .with_auto_offset_reset(AutoOffsetReset::Earliest)
        .with_enable_auto_commit(false);
    LogConsumer::new(log, cfg).unwrap()
}

#[tokio::test]
async fn long_poll_returns_when_a_record_is_appended() {
    let (_dir, log) = log_with_topic("t", 1);
    let mut c = LogConsumer::new(&log, config("g-long", AssignmentStrategy::Range)).unwrap();
    c.subscribe(Subscription::topics(["t"]), Arc::new(NoopListener))
        .await
        .unwrap();
    poll_until(&mut [&mut c], |a| a[0].len() == 1).await;
    let writer = log.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        writer
            .append(&TopicPartition::new("t", 0), &[NewRecord::value("late")])
            .unwrap();
    });
    let started = Instant::now();
    let batch = c.poll(Duration::from_secs(30)).await.unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(
        batch.iter().next().unwrap().value.as_deref(),
        Some(&b"late"[..])
    );
    assert!(started.elapsed() < Duration::from_secs(25));
    t.join().unwrap();
    // Nothing more: a short poll times out empty.
    assert!(c.poll(Duration::from_millis(30)).await.unwrap().is_empty());
}

#[tokio::test]
async fn max_poll_records_is_fair_across_partitions_and_keeps_offset_order() {
    let (_dir, log) = log_with_topic("t", 3);
    for p in 0..3 {
        produce(&log, "t", p, 100);
    }
    let cfg = ConsumerConfig::new()
        .with_auto_offset_reset(AutoOffsetReset::Earliest)
        .with_max_poll_records(10);
    let mut c = LogConsumer::new(&log, cfg).unwrap();
    c.assign(&tps("t", 0..3)).await.unwrap();
    c.assign(&tps("t", 0..3)).await.unwrap(); // idempotent
    let first = c.poll(Duration::from_secs(1)).await.unwrap();
    assert_eq!(first.len(), 10);
    assert_eq!(first.partitions().len(), 3, "every partition gets a share");
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut total = 0;
    let mut batch = first;
    loop {
        for r in &batch {
            let want = next.entry(r.partition).or_insert(0);
            assert_eq!(r.offset, *want, "partition {} out of order", r.partition);
            *want += 1;
        }
        total += batch.len();
        if total == 300 {
            break;
        }
        batch = c.poll(Duration::from_secs(1)).await.unwrap();
        assert!(!batch.is_empty() && batch.len() <= 10);
    }
    assert!(c.poll(Duration::from_millis(10)).await.unwrap().is_empty());
}

#[tokio::test]
async fn pause_and_resume() {
    let (_dir, log) = log_with_topic("t", 2);
    produce(&log, "t", 0, 5);
    produce(&log, "t", 1, 5);
    let mut c = standalone(&log);
    let (p0, p1) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
    c.assign(&[p0.clone(), p1.clone()]).await.unwrap();
    c.pause(std::slice::from_ref(&p0)).unwrap();
    assert_eq!(c.paused().into_iter().collect::<Vec<_>>(), vec![p0.clone()]);
    let batch = c.poll(Duration::from_millis(100)).await.unwrap();
    assert_eq!(batch.len(), 5);
    assert!(batch.iter().all(|r| r.partition == 1));
    assert!(c.poll(Duration::from_millis(30)).await.unwrap().is_empty());
    c.resume(std::slice::from_ref(&p0)).unwrap();
    let batch = c.poll(Duration::from_millis(100)).await.unwrap();
    assert_eq!(batch.records(&p0).count(), 5);
    assert!(c.paused().is_empty());
    let other = TopicPartition::new("t", 9);
    assert!(
        matches!(c.pause(std::slice::from_ref(&other)), Err(Error::NotAssigned(tp)) if tp == other)
    );
}

#[tokio::test]
async fn auto_commit_commits_a_polls_records_at_a_later_poll() {
    let (_dir, log) = log_with_topic("t", 1);
    produce(&log, "t", 0, 10);
    let tp = TopicPartition::new("t", 0);
    let cfg = config("g-auto", AssignmentStrategy::Range)
        .with_enable_auto_commit(true)
        .with_auto_commit_interval(Duration::ZERO)
        .with_max_poll_records(4);
    let mut c = LogConsumer::new(&log, cfg).unwrap();
    c.subscribe(Subscription::topics(["t"]), Arc::new(NoopListener))
        .await
        .unwrap();
    let first = c.poll(Duration::from_secs(1)).await.unwrap();
    assert_eq!(first.len(), 4);
    assert_eq!(
        c.committed(std::slice::from_ref(&tp)).await.unwrap()[&tp],
        None
    );
    let second = c.poll(Duration::from_secs(1)).await.unwrap();
    assert_eq!(second.len(), 4);
    assert_eq!(
        c.committed(std::slice::from_ref(&tp)).await.unwrap()[&tp],
        Some(4),
        "the second poll committed what the first returned, not its own"
    );
    c.close().await.unwrap();
    assert_eq!(
        log.group_offsets("g-auto").unwrap()[&tp],
        8,
        "close commits"
    );
}

#[tokio::test]
async fn seek_in_the_assign_callback_decides_the_first_record() {
    let (_dir, log) = log_with_topic("t", 2);
    produce(&log, "t", 0, 20);
    produce(&log, "t", 1, 20);
    let j = Journal::default();
    let mut rec = Recorder::new("a", &j);
    rec.seek_on_assign = Some(Offset::At(13));
    let mut c = LogConsumer::new(&log, config("g-seek", AssignmentStrategy::Range)).unwrap();
    // A committed offset exists, but the seek wins.
    log.commit_group_offsets(
        "g-seek",
        &BTreeMap::from([(TopicPartition::new("t", 0), 2)]),
    )
    .unwrap();
    c.subscribe(Subscription::topics(["t"]), Arc::new(rec))
        .await
        .unwrap();
    let batch = c.poll(Duration::from_secs(1)).await.unwrap();
    for p in 0..2 {
        let tp = TopicPartition::new("t", p);
        assert_eq!(batch.records(&tp).next().unwrap().offset, 13);
    }
}

#[tokio::test]
async fn seek_position_and_seek_to_edges() {
    let (_dir, log) = log_with_topic("t", 1);
    produce(&log, "t", 0, 10);
    let tp = TopicPartition::new("t", 0);
    let mut c = standalone(&log);
    assert!(matches!(
        c.seek(&tp, Offset::At(1)),
        Err(Error::NotAssigned(_))
    ));
    c.assign(std::slice::from_ref(&tp)).await.unwrap();
    assert_eq!(c.position(&tp).await.unwrap(), 0);
    c.seek(&tp, Offset::At(7)).unwrap();
    assert_eq!(c.position(&tp).await.unwrap(), 7);
    let batch = c.poll(Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        batch.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![7, 8, 9]
    );
    c.seek_to_beginning(std::slice::from_ref(&tp)).unwrap();
    assert_eq!(c.poll(Duration::from_secs(1)).await.unwrap().len(), 10);
    c.seek_to_end(std::slice::from_ref(&tp)).unwrap();
    assert_eq!(c.position(&tp).await.unwrap(), 10);
    assert_eq!(c.watermarks(&tp).await.unwrap(), (0, 10));
    assert!(c.seek(&tp, Offset::At(-1)).is_err());
}

#[tokio::test]
async fn positions_beyond_the_end_apply_auto_offset_reset() {
    let (_dir, log) = log_with_topic("t", 1);
    produce(&log, "t", 0, 5);
    let tp = TopicPartition::new("t", 0);
    // The committed offset is beyond the end (e.g. the topic was recreated).
    log.commit_group_offsets("g-edge", &BTreeMap::from([(tp.clone(), 50)]))
        .unwrap();
    for (reset, expect) in [
        (AutoOffsetReset::Earliest, Ok(0)),
        (AutoOffsetReset::Latest, Ok(5)),
        (AutoOffsetReset::None, Err(())),
    ] {
        let cfg = ConsumerConfig::new()
            .with_group_id("g-edge")
            .with_enable_auto_commit(false)
            .with_auto_offset_reset(reset);
        let mut c = LogConsumer::new(&log, cfg).unwrap();
        c.assign(std::slice::from_ref(&tp)).await.unwrap();
        match expect {
            Ok(pos) => assert_eq!(c.position(&tp).await.unwrap(), pos, "{reset}"),
            Err(()) => {
                let err = c.poll(Duration::from_millis(10)).await.unwrap_err();
                assert!(
                    matches!(&err, Error::NoOffset { partition, position: Some(50), log_start: 0, log_end: 5 } if *partition == tp),
                    "{err}"
                );
            }
        }
    }
    // No committed offset at all with none: an error naming the partition.
    let cfg = ConsumerConfig::new()
        .with_group_id("g-edge-none")
        .with_auto_offset_reset(AutoOffsetReset::None);
    let mut c = LogConsumer::new(&log, cfg).unwrap();
    c.assign(std::slice::from_ref(&tp)).await.unwrap();
    let err = c.position(&tp).await.unwrap_err();
    assert!(err.to_string().contains("t-0"), "{err}");
}

#[tokio::test]
async fn positions_below_the_log_start_after_retention_apply_auto_offset_reset() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions::default()
        .with_segment_bytes(weir_log::MIN_SEGMENT_BYTES)
        .with_retention_bytes(Some(weir_log::MIN_SEGMENT_BYTES));
    let log = Log::open(dir.path(), options).unwrap();
    log.create_topic("t", 1).unwrap();
    let tp = TopicPartition::new("t", 0);
    let mut c = standalone(&log);
    c.assign(std::slice::from_ref(&tp)).await.unwrap();
    c.seek(&tp, Offset::At(0)).unwrap();
    assert_eq!(c.position(&tp).await.unwrap(), 0);
    for i in 0..200 {
        log.append(
            &tp,
            &[NewRecord::value(format!("record number {i:04} padding"))],
        )
        .unwrap();
    }
    log.apply_retention().unwrap();
    let (start, _) = log.offsets(&tp).unwrap();
    assert!(start > 0, "retention should have deleted old segments");
    // Position 0 is gone: earliest resets to the new log start.
    let batch = c.poll(Duration::from_secs(1)).await.unwrap();
    assert_eq!(batch.iter().next().unwrap().offset, start);

    let cfg = ConsumerConfig::new().with_auto_offset_reset(AutoOffsetReset::None);
    let mut strict = LogConsumer::new(&log, cfg).unwrap();
    strict.assign(std::slice::from_ref(&tp)).await.unwrap();
    strict.seek(&tp, Offset::At(0)).unwrap();
    let err = strict.poll(Duration::from_millis(10)).await.unwrap_err();
    assert!(
        matches!(err, Error::NoOffset { position: Some(0), log_start, .. } if log_start == start),
        "{err}"
    );
}

#[tokio::test]
async fn standalone_assign_needs_no_group_and_excludes_subscribe() {
    let (_dir, log) = log_with_topic("t", 3);
    produce(&log, "t", 2, 3);
    let mut c = standalone(&log);
    let parts = c.partitions_for("t").await.unwrap();
    assert_eq!(parts, tps("t", 0..3));
    assert!(matches!(
        c.partitions_for("missing").await,
        Err(Error::UnknownTopic { topic }) if topic == "missing"
    ));
    assert!(matches!(
        c.poll(Duration::from_millis(1)).await,
        Err(Error::IllegalState(_))
    ));
    c.assign(&[TopicPartition::new("t", 2)]).await.unwrap();
    assert_eq!(c.poll(Duration::from_secs(1)).await.unwrap().len(), 3);
    let err = c
        .subscribe(Subscription::topics(["t"]), Arc::new(NoopListener))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::IllegalState(_)), "{err}");
    // No group: commits and committed() are illegal.
    assert!(matches!(
        c.commit_sync(CommitOffsets::Consumed).await,
        Err(Error::IllegalState(_))
    ));
    assert!(matches!(
        c.assign(&[TopicPartition::new("t", 3)]).await,
        Err(Error::UnknownPartition(_))
    ));
    c.unsubscribe().await.unwrap();
    assert!(c.assignment().is_empty());

    let mut g = LogConsumer::new(&log, config("g-sub", AssignmentStrategy::Range)).unwrap();
    g.subscribe(Subscription::topics(["t"]), Arc::new(NoopListener))
        .await
        .unwrap();
    let err = g.assign(&tps("t", 0..1)).await.unwrap_err();
    assert!(matches!(err, Error::IllegalState(_)), "{err}");
    let err = standalone(&log)
        .subscribe(Subscription::topics(["t"]), Arc::new(NoopListener))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config { key, .. } if key == "group.id"),
        "{err}"
    );
}

#[tokio::test]
async fn async_commit_callbacks_run_at_the_next_poll() {
    let (_dir, log) = log_with_topic("t", 1);
    produce(&log, "t", 0, 3);
    let mut c = LogConsumer::new(&log, config("g-async", AssignmentStrategy::Range)).unwrap();
    c.subscribe(Subscription::topics(["t"]), Arc::new(NoopListener))
        .await
        .unwrap();
    assert_eq!(c.poll(Duration::from_secs(1)).await.unwrap().len(), 3);
    let outcome = Arc::new(parking_lot::Mutex::new(None));
    let o = outcome.clone();
    c.commit_async(
        CommitOffsets::Consumed,
        Some(Box::new(move |r| {
            *o.lock() = Some(r.map_err(|e| e.to_string()))
        })),
    );
    assert!(
        outcome.lock().is_none(),
        "runs later, not inside commit_async"
    );
    c.poll(Duration::from_millis(1)).await.unwrap();
    let tp = TopicPartition::new("t", 0);
    assert_eq!(
        outcome.lock().clone().unwrap().unwrap(),
        BTreeMap::from([(tp.clone(), 3)])
    );
    // A failing one reports the failure.
    let bad = Arc::new(parking_lot::Mutex::new(None));
    let b = bad.clone();
    c.commit_async(
        CommitOffsets::from([(TopicPartition::new("other", 0), 1)]),
        Some(Box::new(move |r| *b.lock() = Some(r.is_err()))),
    );
    c.close().await.unwrap();
    assert_eq!(*bad.lock(), Some(true));
}

#[tokio::test]
async fn closed_consumer_refuses_every_call() {
    let (_dir, log) = log_with_topic("t", 1);
    let mut c = standalone(&log);
    c.close().await.unwrap();
    let tp = TopicPartition::new("t", 0);
    assert!(matches!(c.close().await, Err(Error::Closed)));
    assert!(matches!(c.poll(Duration::ZERO).await, Err(Error::Closed)));
    assert!(matches!(
        c.assign(std::slice::from_ref(&tp)).await,
        Err(Error::Closed)
    ));
    assert!(matches!(c.seek(&tp, Offset::Beginning), Err(Error::Closed)));
    assert!(matches!(
        c.commit_sync(CommitOffsets::Consumed).await,
        Err(Error::Closed)
    ));
}

#[tokio::test]
async fn configuration_unknown_to_the_embedded_log_is_rejected_by_name() {
    let (dir, log) = log_with_topic("t", 1);
    let cfg =
        ConsumerConfig::from_properties([("group.id", "g"), ("sasl.password", "canary-secret-7")])
            .unwrap();
    let err = LogConsumer::new(&log, cfg).unwrap_err();
    assert!(matches!(&err, Error::Config { key, .. } if key == "sasl.password"));
    assert!(!err.to_string().contains("canary-secret-7"), "{err}");

    let bad = ConsumerConfig::new()
        .with_session_timeout(Duration::from_millis(100))
        .with_heartbeat_interval(Duration::from_millis(200));
    let err = LogConsumer::new(&log, bad).unwrap_err();
    assert!(matches!(&err, Error::Config { key, .. } if key == "heartbeat.interval.ms"));

    let elsewhere = tempfile::tempdir().unwrap();
    for servers in [
        "localhost:9092".to_owned(),
        format!("log://{}", elsewhere.path().display()),
    ] {
        let cfg = ConsumerConfig::new().with_bootstrap_servers(servers.clone());
        let err = LogConsumer::new(&log, cfg).unwrap_err();
        assert!(
            matches!(&err, Error::Config { key, .. } if key == "bootstrap.servers"),
            "{servers}: {err}"
        );
    }

    let url = format!("log://{}", dir.path().display());
    let mut c = weir_log::connect(ConsumerConfig::new().with_bootstrap_servers(url)).unwrap();
    assert_eq!(c.partitions_for("t").await.unwrap().len(), 1);
    c.close().await.unwrap();
    for servers in ["", "localhost:9092", "log://"] {
        let err =
            weir_log::connect(ConsumerConfig::new().with_bootstrap_servers(servers)).unwrap_err();
        assert!(
            matches!(&err, Error::Config { key, .. } if key == "bootstrap.servers"),
            "{servers}: {err}"
        );
    }
}

#[tokio::test]
async fn a_seek_is_what_a_consumed_commit_commits() {
    let (_dir, log) = log_with_topic("t", 1);
    produce(&log, "t", 0, 10);
    let tp = TopicPartition::new("t", 0);
    let cfg = ConsumerConfig::new()
        .with_group_id("g-seek-commit")
        .with_auto_offset_reset(AutoOffsetReset::Earliest)
        .with_enable_auto_commit(false);
    let mut c = LogConsumer::new(&log, cfg).unwrap();
    c.assign(std::slice::from_ref(&tp)).await.unwrap();
    assert_eq!(c.poll(Duration::from_secs(1)).await.unwrap().len(), 10);
    c.seek(&tp, Offset::At(4)).unwrap();
    c.commit_sync(CommitOffsets::Consumed).await.unwrap();
    assert_eq!(log.group_offsets("g-seek-commit").unwrap()[&tp], 4);
    c.seek_to_beginning(std::slice::from_ref(&tp)).unwrap();
    c.commit_async(CommitOffsets::Consumed, None);
    assert_eq!(log.group_offsets("g-seek-commit").unwrap()[&tp], 0);
}

/// A poll that fails part-way (here: `auto.offset.reset=none` on a partition that
/// retention moved past) must not advance the positions of partitions read earlier in
/// the same poll: their records were never delivered, and skipping them (or
/// auto-committing past them) would lose them.
#[tokio::test]
async fn a_poll_failing_on_one_partition_does_not_skip_records_of_another() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions::default()
        .with_segment_bytes(weir_log::MIN_SEGMENT_BYTES)
        .with_retention_bytes(Some(weir_log::MIN_SEGMENT_BYTES));
    let log = Log::open(dir.path(), options).unwrap();
    log.create_topic("t", 2).unwrap();
    let (p0, p1) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
    let cfg = ConsumerConfig::new().with_auto_offset_reset(AutoOffsetReset::None);
    let mut c = LogConsumer::new(&log, cfg).unwrap();
    c.assign(&[p0.clone(), p1.clone()]).await.unwrap();
    for tp in [&p0, &p1] {
        c.seek(tp, Offset::At(0)).unwrap();
        assert_eq!(c.position(tp).await.unwrap(), 0);
    }
    produce(&log, "t", 0, 5);
    for i in 0..200 {
        log.append(
            &p1,
            &[NewRecord::value(format!("record number {i:04} padding"))],
        )
        .unwrap();
    }
    log.apply_retention().unwrap();
    let (start, _) = log.offsets(&p1).unwrap();
    assert!(
        start > 0,
        "retention should have deleted old segments of {p1}"
    );
    // Successive polls visit the partitions in turn, so one of them reads t-0 before
    // failing on t-1.
    for _ in 0..4 {
        let err = c.poll(Duration::from_millis(10)).await.unwrap_err();
        assert!(
            matches!(&err, Error::NoOffset { partition, .. } if *partition == p1),
            "{err}"
        );
        assert_eq!(
            c.position(&p0).await.unwrap(),
            0,
            "a failed poll delivered nothing of {p0}, so its position must not move"
        );
    }
    c.seek_to_beginning(std::slice::from_ref(&p1)).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while got.len() < 5 && Instant::now() < deadline {
        let batch = c.poll(Duration::from_millis(50)).await.unwrap();
        got.extend(batch.records(&p0).map(|r| r.offset));
    }
    assert_eq!(
        got,
        vec![0, 1, 2, 3, 4],
        "every record of {p0}, once, in order"
    );
}

/// Bad arguments to commits, positions, seeks and pauses are errors naming the
/// partition; a rejected commit stores nothing.
#[tokio::test]
async fn bad_commit_position_seek_and_pause_arguments_are_errors() {
    let (_dir, log) = log_with_topic("t", 2);
    let (p0, p1) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
    let cfg = ConsumerConfig::new()
        .with_group_id("g-bad-args")
        .with_enable_auto_commit(false);
    let mut c = LogConsumer::new(&log, cfg).unwrap();
    c.assign(std::slice::from_ref(&p0)).await.unwrap();

    let err = c
        .commit_sync(CommitOffsets::from([(p0.clone(), -5)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::IllegalState(m) if m.contains("t-0") && m.contains("-5")),
        "{err}"
    );
    assert_eq!(
        c.committed(std::slice::from_ref(&p0)).await.unwrap()[&p0],
        None
    );

    assert!(matches!(c.position(&p1).await, Err(Error::NotAssigned(tp)) if tp == p1));
    assert!(matches!(c.seek(&p1, Offset::At(0)), Err(Error::NotAssigned(tp)) if tp == p1));
    assert!(matches!(c.pause(&[p0.clone(), p1.clone()]), Err(Error::NotAssigned(tp)) if tp == p1));
    assert!(c.paused().is_empty(), "a rejected pause pauses nothing");
    assert!(matches!(c.resume(std::slice::from_ref(&p1)), Err(Error::NotAssigned(tp)) if tp == p1));

    let err = c.assign(&[TopicPartition::new("t", 2)]).await.unwrap_err();
    assert!(
        matches!(&err, Error::UnknownPartition(tp) if tp.partition() == 2),
        "{err}"
    );
    let err = c
        .assign(&[TopicPartition::new("nope", 0)])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownTopic { topic } if topic == "nope"),
        "{err}"
    );
    assert_eq!(
        c.assignment(),
        std::collections::BTreeSet::from([p0.clone()]),
        "a rejected assign keeps the previous assignment"
    );
    c.close().await.unwrap();
}

/// `poll(Duration::MAX)` ("block until something happens", as Java users write
/// `poll(Long.MAX_VALUE)`) neither panics nor spins: it returns the first record
/// appended, or a wakeup.
#[tokio::test]
async fn poll_with_an_unbounded_timeout_returns_a_record_or_a_wakeup() {
    let (_dir, log) = log_with_topic("t", 1);
    let tp = TopicPartition::new("t", 0);
    let mut c = standalone(&log);
    c.assign(std::slice::from_ref(&tp)).await.unwrap();
    produce(&log, "t", 0, 1);
    let batch = tokio::time::timeout(DEADLINE, c.poll(Duration::MAX))
        .await
        .expect("a record is there")
        .unwrap();
    assert_eq!(batch.len(), 1);

    let handle = c.wakeup_handle();
    let waker = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        handle.wakeup();
    });
    let woken = tokio::time::timeout(DEADLINE, c.poll(Duration::MAX))
        .await
        .expect("the wakeup ends the poll");
    assert!(matches!(woken, Err(Error::Wakeup)), "{woken:?}");
    waker.await.unwrap();
}

/// As with Kafka's coordinator, a standalone (`assign`) consumer may commit for a group
/// only while the group has no members: it must not overwrite the offsets of the
/// partitions' current owners.
#[tokio::test]
async fn a_standalone_consumer_cannot_commit_for_an_active_group() {
    let (_dir, log) = log_with_topic("t", 1);
    produce(&log, "t", 0, 5);
    let tp = TopicPartition::new("t", 0);
    let mut member = LogConsumer::new(&log, config("g-active", AssignmentStrategy::Range)).unwrap();
    member
        .subscribe(Subscription::topics(["t"]), Arc::new(NoopListener))
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    while member.assignment().is_empty() {
        assert!(Instant::now() < deadline, "the member never got t-0");
        member.poll(Duration::from_millis(20)).await.unwrap();
    }
    member
        .commit_sync(CommitOffsets::from([(tp.clone(), 2)]))
        .await
        .unwrap();

    let cfg = ConsumerConfig::new()
        .with_group_id("g-active")
        .with_enable_auto_commit(false);
    let mut outsider = LogConsumer::new(&log, cfg).unwrap();
    outsider.assign(std::slice::from_ref(&tp)).await.unwrap();
    let err = outsider
        .commit_sync(CommitOffsets::from([(tp.clone(), 4)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::CommitFailed { group, .. } if group == "g-active"),
        "{err}"
    );
    assert_eq!(log.group_offsets("g-active").unwrap()[&tp], 2);

    member.close().await.unwrap();
    outsider
        .commit_sync(CommitOffsets::from([(tp.clone(), 4)]))
        .await
        .unwrap();
    assert_eq!(log.group_offsets("g-active").unwrap()[&tp], 4);
}
