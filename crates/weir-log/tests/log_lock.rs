//! A second process opening a log directory gets a clear error, not corruption.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use weir_core::TopicPartition;
use weir_log::{Log, LogOptions, NewRecord};

const EXE: &str = env!("CARGO_BIN_EXE_weir-log-crash-writer");

#[test]
fn second_process_gets_a_clear_error_while_this_one_holds_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.create_topic("locked", 1).unwrap();
    let out = Command::new(EXE)
        .args(["open", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "second process opened a locked log"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&log.dir().display().to_string()),
        "names the directory: {stderr}"
    );
    assert!(
        stderr.contains(&format!("process {}", std::process::id())),
        "names the holder: {stderr}"
    );
    // Once this process closes the log, the other process can open it.
    drop(log);
    let out = Command::new(EXE)
        .args(["open", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn this_process_gets_a_clear_error_while_another_holds_the_log_and_the_lock_dies_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(EXE)
        .args(["hold", dir.path().to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("is locked by"), "{msg}");
    assert!(msg.contains(&format!("process {}", child.id())), "{msg}");
    assert!(msg.contains("LOCK"), "{msg}");
    // kill -9: the kernel releases the lock.
    child.kill().unwrap();
    child.wait().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.create_topic("after", 1).unwrap();
    log.append(&TopicPartition::new("after", 0), &[NewRecord::value("x")])
        .unwrap();
}

#[test]
fn a_clean_close_releases_the_lock_for_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(EXE)
        .args(["hold", dir.path().to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    child.stdin.take().unwrap().write_all(b"").unwrap(); // closing stdin ends the hold
    assert!(child.wait().unwrap().success());
    Log::open(dir.path(), LogOptions::default()).unwrap();
}
