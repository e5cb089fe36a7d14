//! Retention deletes whole old segments and moves the log start offset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use weir_core::{Error, TopicPartition};
use weir_log::{Durability, Log, LogOptions, NewRecord};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn retention_by_size_moves_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions::default()
        .with_durability(Durability::Os)
        .with_segment_bytes(4096)
        .with_retention_bytes(Some(16 * 1024));
    let log = Log::open(dir.path(), options.clone()).unwrap();
    log.create_topic("sized", 1).unwrap();
    let tp = TopicPartition::new("sized", 0);
    for i in 0..1000 {
        log.append(&tp, &[NewRecord::new(format!("{i}"), vec![1u8; 200])])
            .unwrap();
    }
    let (start, end) = log.offsets(&tp).unwrap();
    assert_eq!(end, 1000);
    assert!(start > 0, "retention ran on roll");
    let size = log.size_bytes(&tp).unwrap();
    assert!(size >= 16 * 1024, "keeps at least the limit: {size}");
    assert!(
        size < 16 * 1024 + 2 * 4096,
        "deletes beyond the limit: {size}"
    );
    // The new start is readable, below it is out of range.
    assert_eq!(log.read(&tp, start, 1, 1).unwrap()[0].offset, start);
    match log.read(&tp, start - 1, 1, 1) {
        Err(Error::OffsetOutOfRange {
            log_start, log_end, ..
        }) => {
            assert_eq!((log_start, log_end), (start, end));
        }
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    // Survives a reopen.
    drop(log);
    let log = Log::open(dir.path(), options).unwrap();
    assert_eq!(log.offsets(&tp).unwrap(), (start, end));
}

#[test]
fn retention_by_age_deletes_segments_with_old_timestamps_only() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions::default()
        .with_durability(Durability::Os)
        .with_segment_bytes(4096)
        .with_retention_age(Some(Duration::from_secs(3600)));
    let log = Log::open(dir.path(), options).unwrap();
    log.create_topic("aged", 1).unwrap();
    let tp = TopicPartition::new("aged", 0);
    let old = now_ms() - 2 * 3600 * 1000;
    for i in 0..100 {
        log.append(
            &tp,
            &[NewRecord::value(vec![0u8; 300]).with_timestamp(old + i)],
        )
        .unwrap();
    }
    let old_end = log.offsets(&tp).unwrap().1;
    for _ in 0..100 {
        log.append(&tp, &[NewRecord::value(vec![0u8; 300])])
            .unwrap();
    }
    log.apply_retention().unwrap();
    let (start, end) = log.offsets(&tp).unwrap();
    assert_eq!(end, 200);
    assert!(start > 0, "old segments deleted");
    assert!(
        start <= old_end,
        "a segment holding recent records was deleted: start {start} > {old_end}"
    );
    // Everything from the new start is intact.
    let mut records = Vec::new();
    while (records.len() as i64) < end - start {
        let at = start + records.len() as i64;
        let batch = log.read(&tp, at, 1000, usize::MAX).unwrap();
        assert!(!batch.is_empty(), "empty read at {at}");
        records.extend(batch);
    }
    assert_eq!(records.len() as i64, end - start);
    assert!(records
        .iter()
        .skip((old_end - start) as usize)
        .all(|r| r.timestamp.unwrap() > old + 1000));
}

#[test]
fn newest_segment_is_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions::default()
        .with_retention_bytes(Some(1))
        .with_retention_age(Some(Duration::from_millis(1)));
    let log = Log::open(dir.path(), options).unwrap();
    log.create_topic("one", 1).unwrap();
    let tp = TopicPartition::new("one", 0);
    log.append(&tp, &[NewRecord::value("x").with_timestamp(0)])
        .unwrap();
    log.apply_retention().unwrap();
    assert_eq!(log.offsets(&tp).unwrap(), (0, 1));
    assert_eq!(log.read(&tp, 0, 1, 1).unwrap().len(), 1);
}
