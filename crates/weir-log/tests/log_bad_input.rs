//! Bad input is a clear error naming what and where: topic names, partition counts,
//! options, missing directories, unknown topics and partitions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use weir_core::{Error, TopicPartition};
use weir_log::{Durability, Log, LogOptions, NewRecord, Producer};

#[test]
fn bad_topic_names_are_rejected_with_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let too_long = "x".repeat(250);
    for name in [
        "",
        ".",
        "..",
        "a/b",
        "a b",
        "ünï",
        "tab\t",
        "../escape",
        too_long.as_str(),
    ] {
        match log.create_topic(name, 1) {
            Err(Error::Config { key, reason }) => {
                assert_eq!(key, "topic");
                assert!(reason.contains("invalid topic name"), "{reason}");
            }
            other => panic!("{name:?}: expected Config error, got {other:?}"),
        }
    }
    log.create_topic(&"x".repeat(249), 1).unwrap();
    log.create_topic("a.b_c-D9", 1).unwrap();
    assert_eq!(log.topics().len(), 2);
}

#[test]
fn bad_partition_counts_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    for n in [0, -1, i32::MIN, weir_log::MAX_PARTITIONS + 1] {
        let err = log.create_topic("t", n).unwrap_err();
        assert!(
            matches!(&err, Error::Config { key, .. } if key == "partitions"),
            "{err}"
        );
    }
    log.create_topic("t", 2).unwrap();
    log.create_topic("t", 2).unwrap();
    let err = log.create_topic("t", 3).unwrap_err();
    assert!(
        err.to_string().contains("already exists with 2 partitions"),
        "{err}"
    );
    let err = log.add_partitions("t", 1).unwrap_err();
    assert!(err.to_string().contains("cannot shrink"), "{err}");
    assert!(matches!(
        log.add_partitions("nope", 3),
        Err(Error::UnknownTopic { .. })
    ));
    log.add_partitions("t", 4).unwrap();
    drop(log);
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.partition_count("t").unwrap(), 4);
}

#[test]
fn bad_options_name_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (LogOptions::default().with_segment_bytes(0), "segment_bytes"),
        (
            LogOptions::default().with_segment_bytes(u64::MAX),
            "segment_bytes",
        ),
        (
            LogOptions::default().with_durability(Durability::Interval(Duration::ZERO)),
            "durability",
        ),
        (
            LogOptions::default().with_retention_bytes(Some(0)),
            "retention_bytes",
        ),
        (
            LogOptions::default().with_retention_age(Some(Duration::ZERO)),
            "retention_age",
        ),
    ];
    for (options, name) in cases {
        match Log::open(dir.path(), options) {
            Err(Error::Config { key, .. }) => assert_eq!(key, name),
            other => panic!("{name}: expected Config error, got {other:?}"),
        }
    }
}

#[test]
fn missing_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-here");
    let err = Log::open_existing(&missing, LogOptions::default()).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if *path == missing),
        "{err}"
    );
    assert!(err.to_string().contains("not-here"), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    // A file where the directory should be.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let err = Log::open_existing(&file, LogOptions::default()).unwrap_err();
    assert!(err.to_string().contains("a-file"), "{err}");
    assert!(Log::open(&file, LogOptions::default()).is_err());
}

#[test]
fn unknown_topics_and_partitions_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.create_topic("known", 2).unwrap();
    let unknown = TopicPartition::new("unknown", 0);
    for err in [
        log.append(&unknown, &[NewRecord::value("x")]).unwrap_err(),
        log.read(&unknown, 0, 1, 1).unwrap_err(),
        log.offsets(&unknown).unwrap_err(),
        log.partition_count("unknown").unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::UnknownTopic { topic } if topic == "unknown"),
            "{err}"
        );
        assert!(err.to_string().contains("unknown"));
    }
    for p in [2, -1, i32::MAX] {
        let tp = TopicPartition::new("known", p);
        let err = log.append(&tp, &[NewRecord::value("x")]).unwrap_err();
        assert!(
            matches!(&err, Error::UnknownPartition(x) if *x == tp),
            "{err}"
        );
        assert!(matches!(
            log.read(&tp, 0, 1, 1),
            Err(Error::UnknownPartition(_))
        ));
    }
    let producer = Producer::new(log.clone());
    assert!(matches!(
        producer.send("unknown", None, None),
        Err(Error::UnknownTopic { .. })
    ));
    assert!(log.commit_group_offsets("", &Default::default()).is_err());
}

#[test]
fn corrupt_topic_metadata_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        log.create_topic("meta", 1).unwrap();
    }
    let meta = dir.path().join("topics/meta/topic.json");
    std::fs::write(&meta, b"{not json").unwrap();
    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("topic.json"), "{err}");
}
