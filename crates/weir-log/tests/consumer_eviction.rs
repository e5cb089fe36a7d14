//! Liveness: a consumer dropped without close is evicted after session.timeout.ms; a
//! consumer that stops polling is evicted after max.poll.interval.ms, told so on its
//! next poll, and rejoins on the poll after that; the eager barrier does not wait for
//! a stalled member longer than its poll interval.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use weir_core::{AssignmentStrategy, CommitOffsets, Consumer, Error, Subscription};
use weir_log::{describe_group, LogConsumer};

#[tokio::test]
async fn dropped_member_is_replaced_after_the_session_timeout() {
    let (_dir, log) = log_with_topic("t", 4);
    let cfg = config("g-vanish", AssignmentStrategy::Range); // session 600 ms, heartbeat 100 ms
    let j = Journal::default();
    let mut a = LogConsumer::new(&log, cfg.clone()).unwrap();
    let mut b = LogConsumer::new(&log, cfg).unwrap();
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
    poll_until(&mut [&mut a, &mut b], |x| balanced(x, 4, &[2, 2])).await;
    let gen = b.generation().unwrap();
    let a_had = a.assignment();
    for tp in &a_had {
        produce(&log, "t", tp.partition(), 3);
    }
    let seen_before = j.lock().len();
    let vanished_at = Instant::now();
    drop(a); // a crash: no close, no leave
             // One blocked poll: B wakes up by itself when A's session expires, takes A's
             // partitions over and returns the records waiting there.
    let batch = b.poll(Duration::from_secs(10)).await.unwrap();
    let took = vanished_at.elapsed();
    assert!(took < Duration::from_secs(9), "B did not wake up: {took:?}");
    assert!(!batch.is_empty());
    assert!(batch.iter().all(|r| a_had.contains(&r.topic_partition())));
    assert_eq!(b.assignment().len(), 4);
    assert!(
        took >= Duration::from_millis(590),
        "evicted before session.timeout.ms: {took:?}"
    );
    assert!(b.generation().unwrap() > gen);
    assert_eq!(describe_group(&log, "g-vanish").unwrap().members.len(), 1);
    // A vanished member is not told anything: no lost/revoked callback ran for it.
    assert!(!j.lock()[seen_before..]
        .iter()
        .any(|e| matches!(e, Event::Lost(n, _) | Event::Revoked(n, _) if n == "a")));
}

#[tokio::test]
async fn member_that_stops_polling_is_evicted_told_and_rejoins() {
    let (_dir, log) = log_with_topic("t", 2);
    let cfg = config("g-slow", AssignmentStrategy::RoundRobin)
        .with_session_timeout(Duration::from_secs(30))
        .with_max_poll_interval(Duration::from_millis(500));
    let j = Journal::default();
    let mut a = LogConsumer::new(&log, cfg.clone()).unwrap();
    let mut b = LogConsumer::new(&log, cfg).unwrap();
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
    let a_had: Vec<_> = a.assignment().into_iter().collect();
    let stopped = Instant::now();
    // A stops polling; B keeps going and takes everything once A's interval is over.
    poll_until(&mut [&mut b], |x| x[0].len() == 2).await;
    // (A's last heartbeat was up to two 20 ms polls before `stopped`.)
    assert!(stopped.elapsed() >= Duration::from_millis(440));

    // A does not know yet; its commit is refused.
    let err = a.commit_sync(CommitOffsets::Consumed).await.unwrap_err();
    assert!(matches!(err, Error::CommitFailed { .. }), "{err}");
    // Its next poll: partitions lost, then the error.
    let err = a.poll(Duration::from_millis(10)).await.unwrap_err();
    assert!(
        matches!(err, Error::PollIntervalExceeded { max_poll_interval_ms: 500, ref group } if group == "g-slow"),
        "{err}"
    );
    assert!(j.lock().contains(&Event::Lost("a".into(), a_had)));
    assert!(a.assignment().is_empty());
    assert_eq!(a.member_id(), None);
    // The poll after that rejoins.
    poll_until(&mut [&mut a, &mut b], |x| balanced(x, 2, &[1, 1])).await;
    assert!(a.member_id().is_some());
}

#[tokio::test]
async fn single_member_that_stops_polling_is_told_on_its_next_poll() {
    let (_dir, log) = log_with_topic("t", 1);
    let cfg = config("g-alone", AssignmentStrategy::Range)
        .with_session_timeout(Duration::from_secs(30))
        .with_max_poll_interval(Duration::from_millis(200));
    let mut a = LogConsumer::new(&log, cfg).unwrap();
    let j = Journal::default();
    a.subscribe(
        Subscription::topics(["t"]),
        Arc::new(Recorder::new("a", &j)),
    )
    .await
    .unwrap();
    poll_until(&mut [&mut a], |x| x[0].len() == 1).await;
    let member = a.member_id().unwrap().to_owned();
    // Wait (without polling) until the interval has certainly passed.
    let until = Instant::now() + Duration::from_millis(250);
    while Instant::now() < until {
        tokio::time::sleep_until(until.into()).await;
    }
    let err = a.poll(Duration::from_millis(10)).await.unwrap_err();
    assert!(matches!(err, Error::PollIntervalExceeded { .. }), "{err}");
    poll_until(&mut [&mut a], |x| x[0].len() == 1).await;
    assert_ne!(a.member_id().unwrap(), member, "rejoined as a new member");
}

#[tokio::test]
async fn eager_barrier_waits_for_a_stalled_member_only_until_its_poll_interval() {
    let (_dir, log) = log_with_topic("t", 2);
    let cfg = config("g-stall", AssignmentStrategy::Range)
        .with_session_timeout(Duration::from_secs(30))
        .with_max_poll_interval(Duration::from_millis(800));
    let j = Journal::default();
    let mut a = LogConsumer::new(&log, cfg.clone()).unwrap();
    a.subscribe(
        Subscription::topics(["t"]),
        Arc::new(Recorder::new("a", &j)),
    )
    .await
    .unwrap();
    poll_until(&mut [&mut a], |x| x[0].len() == 2).await;
    let a_last_poll = Instant::now();
    let mut b = LogConsumer::new(&log, cfg).unwrap();
    b.subscribe(
        Subscription::topics(["t"]),
        Arc::new(Recorder::new("b", &j)),
    )
    .await
    .unwrap();
    // A holds both partitions and never acknowledges the revocation.
    poll_until(&mut [&mut b], |x| x[0].len() == 2).await;
    let waited = a_last_poll.elapsed();
    assert!(
        waited >= Duration::from_millis(790),
        "barrier broken after {waited:?}"
    );
    assert!(j
        .lock()
        .iter()
        .all(|e| !matches!(e, Event::Revoked(n, _) if n == "a")));
    drop(a);
}

#[tokio::test]
async fn wakeup_interrupts_a_poll_waiting_at_the_barrier() {
    let (_dir, log) = log_with_topic("t", 1);
    let cfg = config("g-wake", AssignmentStrategy::Range)
        .with_session_timeout(Duration::from_secs(30))
        .with_max_poll_interval(Duration::from_secs(30));
    let j = Journal::default();
    let mut a = LogConsumer::new(&log, cfg.clone()).unwrap();
    a.subscribe(
        Subscription::topics(["t"]),
        Arc::new(Recorder::new("a", &j)),
    )
    .await
    .unwrap();
    poll_until(&mut [&mut a], |x| x[0].len() == 1).await;
    let mut b = LogConsumer::new(&log, cfg).unwrap();
    b.subscribe(
        Subscription::topics(["t"]),
        Arc::new(Recorder::new("b", &j)),
    )
    .await
    .unwrap();
    let handle = b.wakeup_handle();
    let waker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        handle.wakeup();
    });
    let started = Instant::now();
    let err = b.poll(Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(err, Error::Wakeup), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    waker.join().unwrap();
    // Once only.
    b.poll(Duration::from_millis(1)).await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn a_long_blocked_poll_is_polling_not_stalling() {
    let (_dir, log) = log_with_topic("t", 1);
    // The poll below blocks 3x longer than max.poll.interval.ms.
    let cfg = config("g-longpoll", AssignmentStrategy::Range)
        .with_session_timeout(Duration::from_secs(30))
        .with_heartbeat_interval(Duration::from_secs(10))
        .with_max_poll_interval(Duration::from_millis(200));
    let mut a = LogConsumer::new(&log, cfg).unwrap();
    let j = Journal::default();
    a.subscribe(
        Subscription::topics(["t"]),
        Arc::new(Recorder::new("a", &j)),
    )
    .await
    .unwrap();
    poll_until(&mut [&mut a], |x| x[0].len() == 1).await;
    let member = a.member_id().unwrap().to_owned();
    assert!(a.poll(Duration::from_millis(600)).await.unwrap().is_empty());
    a.poll(Duration::from_millis(1)).await.unwrap();
    assert_eq!(a.member_id(), Some(member.as_str()));
    assert!(!j.lock().iter().any(|e| matches!(e, Event::Lost(..))));
}
