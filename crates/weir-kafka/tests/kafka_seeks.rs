//! Seeks during normal operation while librdkafka holds prefetched records, and start
//! offsets that could not be resolved at first.
//!
//! `max.poll.records` is 5, so after a few polls librdkafka has fetched far more of the
//! partition than weir handed out. Every seek, backward or forward, paused or not, after
//! an interrupted poll or twice in a row, must make the next record delivered exactly the
//! one sought to and the ones after it contiguous: a stale prefetched record from before
//! the seek is never delivered (a backward seek would otherwise deliver the old position
//! first and then drop the re-fetched records below it as duplicates).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::{Duration, Instant};

use weir_core::{Consumer, Error, Offset, Record, TopicPartition};
use weir_kafka::KafkaConsumer;
use weir_testkit::Backend;

const RECORDS: i64 = 400;

fn value(i: i64) -> Vec<u8> {
    format!("v{i}").into_bytes()
}

/// Poll until at least `n` records arrived; return all of them.
async fn next_records(c: &mut KafkaConsumer, n: usize, what: &str) -> Vec<Record> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "{what}: only {} of {n} records within 30 s",
            out.len()
        );
        match c.poll(Duration::from_millis(200)).await {
            Ok(batch) => out.extend(batch),
            Err(e) => panic!("{what}: poll failed: {e}"),
        }
    }
    out
}

/// The records must be `from, from+1, ...` with the values produced at those offsets.
fn assert_contiguous(got: &[Record], from: i64, what: &str) {
    let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
    let want: Vec<i64> = (from..from + got.len() as i64).collect();
    assert_eq!(offsets, want, "{what}: offsets delivered");
    for r in got {
        assert_eq!(
            r.value.as_deref(),
            Some(&value(r.offset)[..]),
            "{what}: value at offset {}",
            r.offset
        );
    }
}

/// Seek `p` to `to` and check the next records (up to 12, fewer near `end`).
async fn seek_and_check(c: &mut KafkaConsumer, p: &TopicPartition, to: i64, end: i64, what: &str) {
    c.seek(p, Offset::At(to)).unwrap();
    assert_eq!(
        c.position(p).await.unwrap(),
        to,
        "{what}: position after seek"
    );
    let n = 12.min((end - to) as usize);
    let got = next_records(c, n, what).await;
    assert_contiguous(&got, to, what);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeks_never_deliver_records_prefetched_before_them() {
    let backend = common::KafkaBackend::new();
    let topic = backend.unique("seek-prefetched");
    backend.create_topic(&topic, 1).await.unwrap();
    for i in 0..RECORDS {
        let off = backend.produce(&topic, 0, None, &value(i)).await.unwrap();
        assert_eq!(off, i, "offset of produced record {i}");
    }
    let p = TopicPartition::new(topic.as_str(), 0);
    let config = backend.config(None).with_max_poll_records(5);
    let mut c = KafkaConsumer::new(config).unwrap();
    c.assign(std::slice::from_ref(&p)).await.unwrap();
    c.seek(&p, Offset::Beginning).unwrap();

    // Read 0..40 five at a time: librdkafka fetched ahead by now.
    let got = next_records(&mut c, 40, "first read").await;
    assert_contiguous(&got, 0, "first read");

    // Backward and forward, near and far, deterministic but irregular.
    let mut x: u64 = 0x9e37_79b9;
    let mut targets = vec![7, 300, 3, RECORDS - 1, 0, 250, 249, 100, 101, 2];
    for _ in 0..20 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        targets.push(((x >> 33) % RECORDS as u64) as i64);
    }
    for (i, to) in targets.into_iter().enumerate() {
        seek_and_check(&mut c, &p, to, RECORDS, &format!("seek #{i} to {to}")).await;
    }

    // Two seeks before a poll: the last one counts.
    c.seek(&p, Offset::At(350)).unwrap();
    seek_and_check(&mut c, &p, 20, RECORDS, "seek to 350 then to 20").await;

    // Seek while paused, then resume: nothing prefetched before the seek appears.
    c.pause(std::slice::from_ref(&p)).unwrap();
    let paused = c.poll(Duration::from_millis(300)).await.unwrap();
    assert!(
        paused.is_empty(),
        "a paused partition delivered {} records",
        paused.len()
    );
    c.seek(&p, Offset::At(5)).unwrap();
    c.resume(std::slice::from_ref(&p)).unwrap();
    let got = next_records(&mut c, 12, "seek to 5 while paused").await;
    assert_contiguous(&got, 5, "seek to 5 while paused");

    // A poll interrupted by wakeup (its fetch still running), then a backward seek.
    c.seek(&p, Offset::At(RECORDS)).unwrap();
    let handle = c.wakeup_handle();
    // The delay only makes it likely that the wakeup lands during the blocking fetch
    // (the path that leaves a fetch in flight); Wakeup is the outcome either way.
    let waker = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        handle.wakeup();
    });
    let outcome = c.poll(Duration::from_secs(30)).await;
    assert!(
        matches!(outcome, Err(Error::Wakeup)),
        "expected Wakeup, got {outcome:?}"
    );
    waker.await.unwrap();
    seek_and_check(
        &mut c,
        &p,
        30,
        RECORDS,
        "seek to 30 after an interrupted poll",
    )
    .await;

    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_beyond_the_log_end_with_reset_none_is_an_error_naming_the_partition() {
    let backend = common::KafkaBackend::new();
    let topic = backend.unique("seek-out-of-range");
    backend.create_topic(&topic, 1).await.unwrap();
    for i in 0..3 {
        backend.produce(&topic, 0, None, &value(i)).await.unwrap();
    }
    let p = TopicPartition::new(topic.as_str(), 0);
    let config = backend
        .config(None)
        .with_auto_offset_reset(weir_core::AutoOffsetReset::None);
    let mut c = KafkaConsumer::new(config).unwrap();
    c.assign(std::slice::from_ref(&p)).await.unwrap();
    c.seek(&p, Offset::At(0)).unwrap();
    let got = next_records(&mut c, 3, "read 0..3").await;
    assert_contiguous(&got, 0, "read 0..3");

    c.seek(&p, Offset::At(1_000)).unwrap();
    match c.poll(Duration::from_millis(200)).await {
        Err(Error::NoOffset {
            partition,
            position,
            ..
        }) => {
            assert_eq!(partition, p, "NoOffset names the partition");
            assert_eq!(position, Some(1_000), "NoOffset names the offset sought");
        }
        other => panic!("seek beyond the end with auto.offset.reset=none: got {other:?}"),
    }
    // A valid seek recovers the partition.
    seek_and_check(&mut c, &p, 1, 3, "seek back into the log").await;
    c.close().await.unwrap();
}

/// A start offset that cannot be resolved because the broker is unreachable is a
/// retriable error from `poll`, and retrying works: once the broker is reachable again
/// the partition starts where it should (here: `earliest`, offset 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_failed_while_the_broker_was_unreachable_is_resolved_on_a_later_poll() {
    let backend = common::KafkaBackend::new();
    let topic = backend.unique("unreachable-start");
    backend.create_topic(&topic, 1).await.unwrap();
    for i in 0..3 {
        backend.produce(&topic, 0, None, &value(i)).await.unwrap();
    }
    let client = backend.unique("cut-then-restored");
    let config = backend
        .config(None)
        .with_client_id(client.clone())
        .with_auto_offset_reset(weir_core::AutoOffsetReset::Earliest)
        .with("reconnect.backoff.max.ms", "500")
        .unwrap();
    let mut c = KafkaConsumer::new(config).unwrap();
    backend.broker().cut_client(&client).unwrap();
    let p = TopicPartition::new(topic.as_str(), 0);
    // The watermarks cannot be read: the start stays unresolved (after librdkafka's
    // request timeout).
    c.assign(std::slice::from_ref(&p)).await.unwrap();
    match c.poll(Duration::from_millis(100)).await {
        Err(e) => assert!(e.is_retriable(), "expected a retriable error, got {e}"),
        Ok(b) => panic!("got {} records with the broker unreachable", b.len()),
    }
    backend.broker().restore_client(&client).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    let mut last_error = None;
    while got.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "no records 60 s after the broker became reachable again; last error: {last_error:?}"
        );
        match c.poll(Duration::from_millis(200)).await {
            Ok(batch) => got.extend(batch),
            Err(e) if e.is_retriable() => last_error = Some(e.to_string()),
            Err(e) => panic!("poll failed: {e}"),
        }
    }
    assert_contiguous(&got, 0, "after the broker became reachable again");
    c.close().await.unwrap();
}
