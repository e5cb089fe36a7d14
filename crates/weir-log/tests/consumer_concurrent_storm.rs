//! Members on their own tasks (multi-threaded runtime) join and close while records
//! flow. Each member commits its position in `on_partitions_revoked`; because the
//! group hands a partition over only after that commit, every record is processed
//! exactly once across all members, for every strategy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use parking_lot::Mutex;
use weir_core::{AssignmentStrategy, Consumer, Subscription};
use weir_log::{Log, LogConsumer};

const PARTITIONS: i32 = 6;
const RECORDS: usize = 1800;

type Seen = Arc<Mutex<HashMap<(i32, i64), usize>>>;

async fn member(
    log: Log,
    group: String,
    strategy: AssignmentStrategy,
    polls: usize,
    seen: Seen,
    total: Arc<AtomicUsize>,
) {
    let journal = Journal::default();
    let mut listener = Recorder::new("m", &journal);
    listener.commit_on_revoke = true;
    let cfg = config(&group, strategy).with_max_poll_records(37);
    let mut c = LogConsumer::new(&log, cfg).unwrap();
    c.subscribe(Subscription::topics(["t"]), Arc::new(listener))
        .await
        .unwrap();
    let mut n = 0;
    // `polls == 0`: run until every record was processed.
    while (polls == 0 && total.load(Ordering::SeqCst) < RECORDS) || (polls > 0 && n < polls) {
        let batch = c.poll(Duration::from_millis(20)).await.unwrap();
        let mut s = seen.lock();
        for r in &batch {
            *s.entry((r.partition, r.offset)).or_insert(0) += 1;
        }
        total.fetch_add(batch.len(), Ordering::SeqCst);
        n += 1;
    }
    c.close().await.unwrap();
}

async fn storm(strategy: AssignmentStrategy, group: &str) {
    let (_dir, log) = log_with_topic("t", PARTITIONS);
    let seen = Seen::default();
    let total = Arc::new(AtomicUsize::new(0));
    let writer = log.clone();
    let producer = std::thread::spawn(move || {
        for i in 0..RECORDS {
            let p = (i % PARTITIONS as usize) as i32;
            produce(&writer, "t", p, 1);
            if i % 60 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    let mut tasks = Vec::new();
    // Waves of short-lived members, then one that stays to the end.
    for (wave, polls) in [(0, 30), (0, 45), (1, 25), (1, 60), (2, 35), (2, 20), (3, 0)] {
        let _ = wave;
        tasks.push(tokio::spawn(member(
            log.clone(),
            group.to_owned(),
            strategy,
            polls,
            seen.clone(),
            total.clone(),
        )));
        tokio::time::sleep(Duration::from_millis(40)).await; // stagger the joins
    }
    let deadline = Instant::now() + DEADLINE * 2;
    for t in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, t)
            .await
            .expect("a member hung")
            .unwrap();
    }
    producer.join().unwrap();
    let seen = seen.lock();
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dups.is_empty(), "{strategy}: processed twice: {dups:?}");
    assert_eq!(
        seen.len(),
        RECORDS,
        "{strategy}: some records never processed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_range() {
    storm(AssignmentStrategy::Range, "g-storm-range").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_roundrobin() {
    storm(AssignmentStrategy::RoundRobin, "g-storm-rr").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_cooperative_sticky() {
    storm(AssignmentStrategy::CooperativeSticky, "g-storm-coop").await;
}
