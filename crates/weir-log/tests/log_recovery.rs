//! Recovery on open: torn tails are truncated, damage in the middle is reported with
//! the file and position, lost index files are rebuilt.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};

use weir_core::{Error, TopicPartition};
use weir_log::{Log, LogOptions, NewRecord};

fn options() -> LogOptions {
    LogOptions::default().with_segment_bytes(4096)
}

fn rec(i: i64) -> NewRecord {
    NewRecord::new(
        format!("k{i}"),
        vec![(i % 251) as u8; 100 + (i as usize % 50)],
    )
}

/// A log with topic `t` (1 partition) holding `n` records in batches of 3.
fn fill(dir: &Path, n: i64) -> TopicPartition {
    let log = Log::open(dir, options()).unwrap();
    log.create_topic("t", 1).unwrap();
    let tp = TopicPartition::new("t", 0);
    let mut i = 0;
    while i < n {
        let batch: Vec<_> = (i..(i + 3).min(n)).map(rec).collect();
        log.append(&tp, &batch).unwrap();
        i += batch.len() as i64;
    }
    tp
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("topics/t/0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn assert_intact(log: &Log, tp: &TopicPartition, n: i64) {
    assert_eq!(log.offsets(tp).unwrap(), (0, n));
    let mut at = 0;
    while at < n {
        for r in log.read(tp, at, 100, 1 << 20).unwrap() {
            assert_eq!(r.offset, at);
            assert_eq!(r.value, rec(at).value);
            at += 1;
        }
    }
}

#[test]
fn garbage_tail_is_truncated_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let tp = fill(dir.path(), 100);
    let last = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    append_bytes(&last, &[0xAB; 77]);
    let log = Log::open(dir.path(), options()).unwrap();
    assert_eq!(
        std::fs::metadata(&last).unwrap().len(),
        len,
        "tail truncated on open"
    );
    assert_intact(&log, &tp, 100);
    assert_eq!(log.append(&tp, &[rec(100)]).unwrap(), 100);
    assert_intact(&log, &tp, 101);
}

#[test]
fn half_a_batch_at_the_end_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let tp = fill(dir.path(), 50);
    // Make a complete copy of the log, then cut its last batch in half.
    let last = segments(dir.path()).pop().unwrap();
    let full = std::fs::read(&last).unwrap();
    let before = {
        let log = Log::open(dir.path(), options()).unwrap();
        log.append(&tp, &[rec(50), rec(51), rec(52)]).unwrap();
        drop(log);
        std::fs::read(segments(dir.path()).pop().unwrap()).unwrap()
    };
    let newest = segments(dir.path()).pop().unwrap();
    if newest == last {
        // The batch went into the same segment: cut it in half.
        let cut = full.len() + (before.len() - full.len()) / 2;
        std::fs::write(&newest, &before[..cut]).unwrap();
        let log = Log::open(dir.path(), options()).unwrap();
        assert_intact(&log, &tp, 50);
        assert_eq!(log.append(&tp, &[rec(50)]).unwrap(), 50);
    } else {
        std::fs::write(&newest, &before[..before.len() / 2]).unwrap();
        let log = Log::open(dir.path(), options()).unwrap();
        assert_intact(&log, &tp, 50);
        assert_eq!(log.append(&tp, &[rec(50)]).unwrap(), 50);
    }
}

#[test]
fn only_a_partial_header_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let tp = fill(dir.path(), 10);
    let last = segments(dir.path()).pop().unwrap();
    append_bytes(&last, &[1, 2, 3]);
    let log = Log::open(dir.path(), options()).unwrap();
    assert_intact(&log, &tp, 10);
}

#[test]
fn corrupt_crc_in_the_middle_of_the_newest_segment_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // One big segment so that the damage is in the newest one.
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.create_topic("t", 1).unwrap();
    let tp = TopicPartition::new("t", 0);
    for i in 0..20 {
        log.append(&tp, &[rec(i)]).unwrap();
    }
    drop(log);
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    match &err {
        Error::Corrupt {
            path,
            position,
            reason,
        } => {
            assert_eq!(path.canonicalize().unwrap(), seg.canonicalize().unwrap());
            assert!(
                *position <= at as u64,
                "position {position} after the damage at {at}"
            );
            assert!(reason.contains("not a torn tail"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(
        err.to_string().contains("00000000000000000000.log"),
        "{err}"
    );
    // Nothing was truncated: the acknowledged data after the damage is still there.
    assert_eq!(std::fs::read(&seg).unwrap().len(), bytes.len());
}

#[test]
fn corrupt_sealed_segment_is_an_error_on_read_naming_the_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let tp = fill(dir.path(), 200);
    let segs = segments(dir.path());
    assert!(segs.len() > 3);
    let victim = &segs[1];
    let mut bytes = std::fs::read(victim).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 1;
    std::fs::write(victim, &bytes).unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    let mut at_offset = 0;
    let err = loop {
        match log.read(&tp, at_offset, 10, 1 << 20) {
            Ok(rs) => at_offset = rs.last().unwrap().offset + 1,
            Err(e) => break e,
        }
        assert!(at_offset < 200, "corruption never reported");
    };
    match &err {
        Error::Corrupt {
            path,
            position,
            reason,
        } => {
            assert_eq!(path.file_name(), victim.file_name());
            assert!(*position < bytes.len() as u64);
            assert!(reason.contains("CRC32C"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    // Records in other segments are still readable.
    assert_eq!(log.read(&tp, 0, 1, 1 << 20).unwrap()[0].offset, 0);
}

#[test]
fn missing_or_damaged_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let tp = fill(dir.path(), 300);
    let pdir = dir.path().join("topics/t/0");
    let indexes: Vec<_> = std::fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "index"))
        .collect();
    assert!(indexes.len() >= 2);
    std::fs::remove_file(&indexes[0]).unwrap();
    let b = std::fs::read(&indexes[1]).unwrap();
    std::fs::write(&indexes[1], &b[..b.len() / 2]).unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    assert_intact(&log, &tp, 300);
    assert!(indexes[0].exists(), "index rewritten");
}

#[test]
fn missing_segment_in_the_middle_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200);
    let segs = segments(dir.path());
    std::fs::remove_file(&segs[2]).unwrap();
    let err = Log::open(dir.path(), options()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("records are missing"), "{err}");
}

#[test]
fn garbage_after_a_sealed_segment_is_an_error_not_a_truncation() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200);
    let segs = segments(dir.path());
    let sealed = &segs[1];
    let len = std::fs::metadata(sealed).unwrap().len();
    append_bytes(sealed, &[0u8; 100]);
    let err = Log::open(dir.path(), options()).unwrap_err();
    match &err {
        Error::Corrupt { path, position, .. } => {
            assert_eq!(path.file_name(), sealed.file_name());
            assert_eq!(*position, len);
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert_eq!(
        std::fs::metadata(sealed).unwrap().len(),
        len + 100,
        "nothing truncated"
    );
}
