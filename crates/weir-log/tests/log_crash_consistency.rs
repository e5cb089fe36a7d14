//! Crash consistency: a child process appends in `Durability::Always` with tiny
//! segments (frequent rolls) and is SIGKILLed at random moments; after each kill the
//! log is reopened and must hold every acknowledged record, in order, byte-identical,
//! with no torn record readable, and appends must continue.
//!
//! `WEIR_CRASH_KILLS` (default 40) and `WEIR_CRASH_SEED` tune a run; a longer soak is
//! `WEIR_CRASH_KILLS=500 cargo test -p weir-log --test log_crash_consistency -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use weir_core::{Header, TopicPartition};
use weir_log::{Log, LogOptions, NewRecord};

const SEGMENT_BYTES: u64 = 4096;

/// Same as `expected_record` in src/bin/weir-log-crash-writer.rs.
fn expected_record(offset: i64) -> NewRecord {
    let o = offset as u64;
    let len = (o.wrapping_mul(7919) % 700 + 1) as usize;
    let value: Vec<u8> = (0..len)
        .map(|j| (o.wrapping_mul(31).wrapping_add(j as u64 * 7)) as u8)
        .collect();
    let mut r = NewRecord::new(format!("key-{offset}"), value).with_timestamp(offset);
    if offset % 5 == 0 {
        r = r.with_header(Header::new("offset", offset.to_string()));
    }
    r
}

/// Appends to the newest segment a torn copy of its last batch renumbered to the next
/// offset (a strict prefix: what a write cut short by a power loss leaves), or random
/// garbage. Returns the bytes added.
fn inject_torn_tail(dir: &Path, rng: &mut rand::rngs::StdRng) -> u64 {
    use std::io::Write;
    let pdir = dir.join("topics/crash/0");
    let mut segs: Vec<_> = std::fs::read_dir(&pdir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segs.sort();
    let path = segs.last().unwrap();
    let bytes = std::fs::read(path).unwrap();
    let tail: Vec<u8> = if bytes.is_empty() || rng.random_bool(0.3) {
        (0..rng.random_range(1..200))
            .map(|_| rng.random())
            .collect()
    } else {
        // Walk the documented framing (u32 length at +4) to the last batch.
        let (mut pos, mut last) = (0usize, 0usize);
        while pos < bytes.len() {
            last = pos;
            pos += u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize + 8;
        }
        let mut batch = bytes[last..].to_vec();
        let base = i64::from_le_bytes(batch[8..16].try_into().unwrap());
        let count = i64::from(u32::from_le_bytes(batch[16..20].try_into().unwrap()));
        batch[8..16].copy_from_slice(&(base + count).to_le_bytes());
        let cut = rng.random_range(1..batch.len());
        batch.truncate(cut);
        batch
    };
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(&tail).unwrap();
    tail.len() as u64
}

/// Whether the kill interrupted a segment roll: an index temp file is left, or the
/// segment before the newest lacks its index, or the newest is still empty.
fn roll_interrupted(dir: &Path) -> bool {
    let pdir = dir.join("topics/crash/0");
    let names: Vec<String> = std::fs::read_dir(&pdir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.iter().any(|n| n.ends_with(".tmp")) {
        return true;
    }
    let mut logs: Vec<&String> = names.iter().filter(|n| n.ends_with(".log")).collect();
    logs.sort();
    let newest_empty = logs
        .last()
        .is_some_and(|n| std::fs::metadata(pdir.join(n.as_str())).unwrap().len() == 0);
    let previous_unindexed = logs.len() >= 2 && {
        let prev = logs[logs.len() - 2].replace(".log", ".index");
        !names.contains(&prev)
    };
    newest_empty || previous_unindexed
}

fn segment_bytes_on_disk(dir: &Path) -> u64 {
    let pdir = dir.join("topics/crash/0");
    let Ok(entries) = std::fs::read_dir(pdir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Reopens the log and checks it against `acked_end` (every offset below it was
/// acknowledged). Returns the log end.
fn verify(dir: &Path, acked_end: i64) -> i64 {
    let log = Log::open_existing(dir, LogOptions::default().with_segment_bytes(SEGMENT_BYTES))
        .unwrap_or_else(|e| panic!("reopen after kill failed: {e}"));
    let tp = TopicPartition::new("crash", 0);
    let (start, end) = log.offsets(&tp).unwrap();
    assert_eq!(start, 0);
    assert!(
        end >= acked_end,
        "acknowledged records lost: log end {end} < acknowledged end {acked_end}"
    );
    let mut at = 0;
    while at < end {
        let records = log
            .read(&tp, at, 1000, 1 << 20)
            .unwrap_or_else(|e| panic!("read at {at} failed: {e}"));
        assert!(!records.is_empty(), "empty read at {at} < end {end}");
        for r in &records {
            assert_eq!(r.offset, at, "offsets out of order");
            let want = expected_record(at);
            assert_eq!(r.key, want.key, "key differs at offset {at}");
            assert_eq!(r.value, want.value, "value differs at offset {at}");
            assert_eq!(r.headers, want.headers, "headers differ at offset {at}");
            assert_eq!(r.timestamp, Some(at), "timestamp differs at offset {at}");
            at += 1;
        }
    }
    assert!(matches!(
        log.read(&tp, end + 1, 1, 1),
        Err(weir_core::Error::OffsetOutOfRange { .. })
    ));
    end
}

#[test]
fn acknowledged_records_survive_kill_9_during_appends_and_rolls() {
    let kills: usize = std::env::var("WEIR_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let seed: u64 = std::env::var("WEIR_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash test: seed {seed} (WEIR_CRASH_SEED to replay), {kills} kills");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_weir-log-crash-writer");
    let mut acked_end = 0i64;
    let mut truncated_tails = 0usize;
    let mut injected_tails = 0usize;
    let mut kills_in_rolls = 0usize;
    let mut early_kills = 0usize;
    let mut unacked_survivors = 0i64;
    for kill in 0..kills {
        let mut child = Command::new(exe)
            .args([
                "append",
                dir.path().to_str().unwrap(),
                &SEGMENT_BYTES.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<(i64, i64)>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut it = line.split(' ').map(|s| s.parse::<i64>().unwrap());
                let (first, count) = (it.next().unwrap(), it.next().unwrap());
                if tx.send((first, count)).is_err() {
                    break;
                }
            }
        });
        // Kill after a random number of acknowledged appends, plus a random delay of
        // up to 3 ms: the kill lands anywhere in an append, an fsync or a roll.
        // One kill in six lands early, before any ack: during process start, open,
        // recovery or topic creation.
        let early = kill > 0 && rng.random_bool(1.0 / 6.0);
        let target = if early {
            0
        } else {
            rng.random_range(1..=40usize)
        };
        if early {
            early_kills += 1;
        }
        let extra = Duration::from_micros(rng.random_range(0..3000));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = 0usize;
        while seen < target {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok((first, count)) => {
                    assert!(first >= acked_end - count, "ack at {first} went backwards");
                    acked_end = acked_end.max(first + count);
                    seen += 1;
                }
                Err(_) => {
                    let _ = child.kill();
                    let out = child.wait_with_output().unwrap();
                    panic!(
                        "writer produced {seen} acks before timing out or exiting; stderr: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        std::thread::sleep(extra); // fault-injection timing, not synchronisation
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        // Acks printed before the kill are still in the pipe.
        for (first, count) in rx.try_iter() {
            acked_end = acked_end.max(first + count);
        }
        if roll_interrupted(dir.path()) {
            kills_in_rolls += 1;
        }
        if rng.random_bool(0.33) {
            injected_tails += 1;
            inject_torn_tail(dir.path(), &mut rng);
        }
        let before = segment_bytes_on_disk(dir.path());
        let end = verify(dir.path(), acked_end);
        if segment_bytes_on_disk(dir.path()) < before {
            truncated_tails += 1;
        }
        unacked_survivors += end - acked_end;
        acked_end = end; // what survived is now the base the next writer builds on
        if kill % 10 == 9 {
            println!("  {} kills, log end {end}", kill + 1);
        }
    }
    // Appends continue after the last recovery, in this process too.
    let log = Log::open_existing(
        dir.path(),
        LogOptions::default().with_segment_bytes(SEGMENT_BYTES),
    )
    .unwrap();
    let tp = TopicPartition::new("crash", 0);
    let segments = log.segment_count(&tp).unwrap();
    let first = log.append(&tp, &[expected_record(acked_end)]).unwrap();
    assert_eq!(first, acked_end);
    drop(log);
    verify(dir.path(), acked_end + 1);
    println!(
        "crash test: {kills} kills ({kills_in_rolls} at or inside a segment roll, {early_kills} before the first ack), {} records acknowledged and verified byte-identical, \
         {truncated_tails} torn tails truncated ({injected_tails} injected), {unacked_survivors} unacknowledged records survived, \
         {segments} segments, 0 anomalies",
        acked_end + 1
    );
    assert!(truncated_tails >= injected_tails);
}
