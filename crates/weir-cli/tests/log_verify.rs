//! `weir log verify` finds an injected flipped byte (file and position) and
//! `--repair` recovers every batch before it; a directory that is not a log is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::{make_log, weir};
use weir_core::TopicPartition;
use weir_log::{Log, LogOptions};

#[test]
fn verify_finds_a_flipped_byte_and_repair_keeps_every_batch_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    make_log(&log_dir, "orders", 2, 50);
    let segment = log_dir
        .join("topics/orders/1/00000000000000000000.log")
        .canonicalize()
        .unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    // One batch per record: find where the batch of offset 30 starts.
    let mut pos = 0usize;
    for _ in 0..30 {
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize + 8;
        pos += len;
    }
    let mut damaged = bytes.clone();
    damaged[pos + 40] ^= 0x01; // inside the record, after the 32-byte header
    std::fs::write(&segment, &damaged).unwrap();
    assert!(Log::open_existing(&log_dir, LogOptions::default()).is_err());

    let run = weir([
        "log".as_ref(),
        "verify".as_ref(),
        log_dir.as_os_str(),
        "--output".as_ref(),
        "json".as_ref(),
    ]);
    assert_eq!(run.code, 3, "{run:?}");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["healthy"], false);
    let p1 = &report["partitions"][1];
    assert_eq!(p1["problem"]["kind"], "damage");
    assert_eq!(p1["problem"]["path"], segment.display().to_string());
    assert_eq!(p1["problem"]["position"], pos as u64);
    assert!(p1["problem"]["reason"].as_str().unwrap().contains("CRC32C"));
    assert_eq!(p1["valid_end"], 30);
    assert!(report["partitions"][0]["problem"].is_null());
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        damaged,
        "verify changed the file"
    );

    // The text report names the file and the byte position too.
    let text = weir(["log".as_ref(), "verify".as_ref(), log_dir.as_os_str()]);
    assert_eq!(text.code, 3);
    assert!(
        text.stdout
            .contains(&format!("{} at byte {pos}", segment.display())),
        "{}",
        text.stdout
    );

    let repair = weir([
        "log".as_ref(),
        "verify".as_ref(),
        log_dir.as_os_str(),
        "--repair".as_ref(),
    ]);
    assert_eq!(repair.code, 0, "{repair:?}");
    assert!(repair.stdout.contains("REPAIRED"), "{}", repair.stdout);
    // The backup holds exactly the cut bytes.
    let backup = std::fs::read_dir(segment.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains(".log.cut-"))
        .expect("a backup file");
    assert_eq!(std::fs::read(&backup).unwrap(), &damaged[pos..]);

    let log = Log::open_existing(&log_dir, LogOptions::default()).unwrap();
    let tp = TopicPartition::new("orders", 1);
    assert_eq!(log.offsets(&tp).unwrap(), (0, 30));
    let records = log.read(&tp, 0, 1000, 1 << 20).unwrap();
    let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..30).collect::<Vec<_>>());
    assert_eq!(records[29].value.as_deref(), Some(&b"{\"n\":29}"[..]));
    let other = TopicPartition::new("orders", 0);
    assert_eq!(log.offsets(&other).unwrap(), (0, 50));
}

#[test]
fn a_directory_that_is_not_a_log_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in ["verify", "describe", "topics", "dump"] {
        let run = weir(["log".as_ref(), cmd.as_ref(), dir.path().as_os_str()]);
        assert_eq!(run.code, 1, "{cmd}: {run:?}");
        assert!(
            run.stderr.contains(&format!(
                "{} is not a weir log directory",
                dir.path().display()
            )),
            "{cmd}: {}",
            run.stderr
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let missing = dir.path().join("nope");
    let run = weir(["log".as_ref(), "describe".as_ref(), missing.as_os_str()]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);
}

#[test]
fn produce_then_consume_and_dump_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"id\":1,\"x\":\"a\"}\n\n{\"id\":2,\"x\":\"b\"}\n").unwrap();
    let run = weir([
        "produce".as_ref(),
        "--log".as_ref(),
        log_dir.as_os_str(),
        "--topic".as_ref(),
        "t".as_ref(),
        "--key-field".as_ref(),
        "id".as_ref(),
        "--input".as_ref(),
        input.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let gen = weir([
        "log".as_ref(),
        "produce".as_ref(),
        log_dir.as_os_str(),
        "--topic".as_ref(),
        "t".as_ref(),
        "--generate".as_ref(),
        "3".as_ref(),
    ]);
    assert_eq!(gen.code, 0, "{gen:?}");
    let consume = weir([
        "log".as_ref(),
        "consume".as_ref(),
        log_dir.as_os_str(),
        "--topic".as_ref(),
        "t".as_ref(),
        "--max".as_ref(),
        "2".as_ref(),
    ]);
    let lines: Vec<serde_json::Value> = consume
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["key"], "1");
    assert_eq!(lines[1]["value"], "{\"id\":2,\"x\":\"b\"}");
    let dump = weir(["log".as_ref(), "dump".as_ref(), log_dir.as_os_str()]);
    assert_eq!(dump.stdout.lines().count(), 5, "{dump:?}");

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\":1}\n{oops\n").unwrap();
    let run = weir([
        "produce".as_ref(),
        "--log".as_ref(),
        log_dir.as_os_str(),
        "--topic".as_ref(),
        "t".as_ref(),
        "--input".as_ref(),
        bad.as_os_str(),
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains(&format!("line 2 of {} is not JSON", bad.display())),
        "{}",
        run.stderr
    );
    let range = weir([
        "log".as_ref(),
        "consume".as_ref(),
        log_dir.as_os_str(),
        "--topic".as_ref(),
        "t".as_ref(),
        "--offset".as_ref(),
        "99".as_ref(),
    ]);
    assert_eq!(range.code, 1);
    assert!(
        range.stderr.contains("outside partition t-0's range"),
        "{}",
        range.stderr
    );
}
