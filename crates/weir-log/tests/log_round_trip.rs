//! Append and read back across segment rolls, reopen after a clean close.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use weir_core::{Header, TopicPartition};
use weir_log::{Durability, Log, LogOptions, NewRecord};

fn value_for(i: i64) -> Vec<u8> {
    let len = (i as usize * 37) % 500 + 1;
    (0..len).map(|j| (i as usize + j) as u8).collect()
}

fn record(i: i64) -> NewRecord {
    let mut r = NewRecord::new(format!("key-{i}"), value_for(i)).with_timestamp(1_000 + i);
    if i % 3 == 0 {
        r = r.with_header(Header::new("seq", i.to_string()));
    }
    if i % 7 == 0 {
        r.key = None;
    }
    if i % 11 == 0 {
        r.value = None;
    }
    r
}

fn check(records: &[weir_core::Record], from: i64) {
    for (k, r) in records.iter().enumerate() {
        let i = from + k as i64;
        let want = record(i);
        assert_eq!(r.offset, i);
        assert_eq!(r.key, want.key, "key at {i}");
        assert_eq!(r.value, want.value, "value at {i}");
        assert_eq!(r.headers, want.headers, "headers at {i}");
        assert_eq!(r.timestamp, Some(1_000 + i));
        assert_eq!(&*r.topic, "rt");
    }
}

fn read_all(
    log: &Log,
    tp: &TopicPartition,
    from: i64,
    max_records: usize,
    max_bytes: usize,
) -> Vec<weir_core::Record> {
    let (_, end) = log.offsets(tp).unwrap();
    let mut out = Vec::new();
    let mut at = from;
    while at < end {
        let batch = log.read(tp, at, max_records, max_bytes).unwrap();
        assert!(!batch.is_empty(), "empty read at {at} before end {end}");
        assert!(batch.len() <= max_records);
        at = batch.last().unwrap().offset + 1;
        out.extend(batch);
    }
    out
}

#[test]
fn round_trip_across_segment_rolls_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let tp = TopicPartition::new("rt", 1);
    let options = LogOptions::default()
        .with_durability(Durability::Os)
        .with_segment_bytes(8 * 1024);
    let n = 2_000i64;
    {
        let log = Log::open(dir.path(), options.clone()).unwrap();
        log.create_topic("rt", 2).unwrap();
        let mut i = 0;
        while i < n {
            let batch: Vec<NewRecord> = (i..(i + 1 + i % 5).min(n)).map(record).collect();
            let first = log.append(&tp, &batch).unwrap();
            assert_eq!(first, i);
            i += batch.len() as i64;
        }
        assert_eq!(log.offsets(&tp).unwrap(), (0, n));
        assert!(
            log.segment_count(&tp).unwrap() > 20,
            "segments: {}",
            log.segment_count(&tp).unwrap()
        );
        for (max_records, max_bytes) in [(1, 1), (7, 300), (500, 1 << 20), (10_000, usize::MAX)] {
            let all = read_all(&log, &tp, 0, max_records, max_bytes);
            assert_eq!(all.len() as i64, n);
            check(&all, 0);
        }
        // Reads starting in the middle of batches and segments.
        for from in [1, 2, 999, 1234, n - 1] {
            let rs = log.read(&tp, from, 3, 1 << 20).unwrap();
            check(&rs, from);
        }
        assert_eq!(log.offsets(&TopicPartition::new("rt", 0)).unwrap(), (0, 0));
    }
    // Clean close, reopen: everything is there and appends continue.
    let log = Log::open_existing(dir.path(), options).unwrap();
    assert_eq!(log.partition_count("rt").unwrap(), 2);
    assert_eq!(log.offsets(&tp).unwrap(), (0, n));
    check(&read_all(&log, &tp, 0, 333, 64 * 1024), 0);
    assert_eq!(log.append(&tp, &[record(n)]).unwrap(), n);
    check(&log.read(&tp, n, 10, 1).unwrap(), n);
}

#[test]
fn reads_honour_limits_and_return_one_oversized_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.create_topic("big", 1).unwrap();
    let tp = TopicPartition::new("big", 0);
    let big = Bytes::from(vec![9u8; 100_000]);
    log.append(&tp, &[NewRecord::value(big.clone())]).unwrap();
    log.append(&tp, &[NewRecord::value("small")]).unwrap();
    let rs = log.read(&tp, 0, 10, 10).unwrap();
    assert_eq!(rs.len(), 1, "one record even when bigger than max_bytes");
    assert_eq!(rs[0].value.as_ref(), Some(&big));
    assert_eq!(log.read(&tp, 0, 10, 1 << 20).unwrap().len(), 2);
    assert!(log.read(&tp, 0, 0, 1 << 20).unwrap().is_empty());
    assert!(log.read(&tp, 2, 10, 1 << 20).unwrap().is_empty());
    let err = log.read(&tp, 3, 10, 1 << 20).unwrap_err();
    assert!(
        matches!(
            err,
            weir_core::Error::OffsetOutOfRange {
                offset: 3,
                log_start: 0,
                log_end: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        log.read(&tp, -1, 10, 10),
        Err(weir_core::Error::OffsetOutOfRange { .. })
    ));
}

#[test]
fn log_is_send_sync_and_shared_within_the_process() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Log>();
    let dir = tempfile::tempdir().unwrap();
    let a = Log::open(dir.path(), LogOptions::default()).unwrap();
    a.create_topic("shared", 1).unwrap();
    let b = Log::open(dir.path().join("."), LogOptions::default()).unwrap();
    assert_eq!(b.partition_count("shared").unwrap(), 1);
    let tp = TopicPartition::new("shared", 0);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = if t % 2 == 0 { a.clone() } else { b.clone() };
            let tp = tp.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    log.append(&tp, &[NewRecord::new(format!("t{t}"), format!("{i}"))])
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(a.offsets(&tp).unwrap(), (0, 200));
    // Per writer, its records are in order.
    let rs = a.read(&tp, 0, 1000, usize::MAX).unwrap();
    for t in 0..4 {
        let seq: Vec<i32> = rs
            .iter()
            .filter(|r| r.key.as_deref() == Some(format!("t{t}").as_bytes()))
            .map(|r| {
                std::str::from_utf8(r.value.as_deref().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(seq, (0..50).collect::<Vec<_>>());
    }
}

#[test]
fn readers_tail_a_partition_while_it_is_appended_and_rolled() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogOptions::default()
            .with_durability(Durability::Os)
            .with_segment_bytes(4096),
    )
    .unwrap();
    log.create_topic("rt", 1).unwrap();
    let tp = TopicPartition::new("rt", 0);
    let n = 3_000i64;
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let log = log.clone();
            let tp = tp.clone();
            std::thread::spawn(move || {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                let mut at = 0;
                while at < n {
                    assert!(std::time::Instant::now() < deadline, "reader stuck at {at}");
                    let rs = log.read(&tp, at, 50, 8 * 1024).unwrap();
                    if rs.is_empty() {
                        std::thread::yield_now();
                        continue;
                    }
                    check(&rs, at);
                    at += rs.len() as i64;
                }
            })
        })
        .collect();
    for i in 0..n {
        log.append(&tp, &[record(i)]).unwrap();
    }
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn reopening_while_the_last_handle_is_dropped_on_another_thread_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..50 {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        log.create_topic("race", 1).unwrap();
        let dropper = std::thread::spawn(move || drop(log));
        let again = Log::open(dir.path(), LogOptions::default())
            .unwrap_or_else(|e| panic!("round {i}: reopen racing a drop failed: {e}"));
        assert_eq!(again.partition_count("race").unwrap(), 1);
        dropper.join().unwrap();
    }
}
