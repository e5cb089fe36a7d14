//! Consumer groups' committed offsets are merged, durable and survive reopening.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use weir_core::{Error, TopicPartition};
use weir_log::{Log, LogOptions};

#[test]
fn group_offsets_merge_and_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a0 = TopicPartition::new("a", 0);
    let a1 = TopicPartition::new("a", 1);
    let b0 = TopicPartition::new("b", 0);
    {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        log.commit_group_offsets("g1", &BTreeMap::from([(a0.clone(), 5), (a1.clone(), 7)]))
            .unwrap();
        log.commit_group_offsets("g1", &BTreeMap::from([(a1.clone(), 9), (b0.clone(), 1)]))
            .unwrap();
        log.commit_group_offsets("weird/../group id ✓", &BTreeMap::from([(a0.clone(), 3)]))
            .unwrap();
        assert_eq!(
            log.group_offsets("g1").unwrap(),
            BTreeMap::from([(a0.clone(), 5), (a1.clone(), 9), (b0.clone(), 1)])
        );
    }
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(
        log.group_offsets("g1").unwrap(),
        BTreeMap::from([(a0.clone(), 5), (a1.clone(), 9), (b0.clone(), 1)])
    );
    assert_eq!(
        log.group_offsets("weird/../group id ✓").unwrap(),
        BTreeMap::from([(a0.clone(), 3)])
    );
    assert!(log.group_offsets("g2").unwrap().is_empty());
    // No temp files left behind.
    for e in std::fs::read_dir(dir.path().join("groups")).unwrap() {
        let name = e.unwrap().file_name();
        assert!(!name.to_string_lossy().ends_with(".tmp"), "{name:?}");
    }
}

#[test]
fn corrupt_group_file_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        log.commit_group_offsets("g", &BTreeMap::from([(TopicPartition::new("t", 0), 1)]))
            .unwrap();
    }
    let file = std::fs::read_dir(dir.path().join("groups"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&file, b"\0garbage").unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let err = log.group_offsets("g").unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { path, .. } if *path == file),
        "{err}"
    );
}

#[test]
fn group_file_of_an_unknown_version_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        log.commit_group_offsets("g", &BTreeMap::from([(TopicPartition::new("t", 0), 1)]))
            .unwrap();
    }
    let file = std::fs::read_dir(dir.path().join("groups"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\"version\": 1"), "{text}");
    std::fs::write(&file, text.replace("\"version\": 1", "\"version\": 2")).unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let err = log.group_offsets("g").unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { path, reason, .. } if *path == file && reason.contains("version 2")),
        "{err}"
    );
}
