//! Three OS processes in one consumer group on a 6-partition topic; one is killed with
//! SIGKILL. Its partitions move to the other two after the session timeout and every
//! record is consumed (at least once: exactly-once is the sinks' job).
//!
//! The members are this test binary itself, started with `WEIR_KAFKA_MEMBER=1`
//! (`harness = false`: `main` decides which role to play). A member prints one line
//! per event on stdout (`ASSIGNED 0,3`, `REVOKED ...`, `LOST ...`, `REC <partition>
//! <offset>`), commits asynchronously after every batch and synchronously in
//! `on_partitions_revoked`, and runs until its stdin closes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_core::{
    async_trait, AutoOffsetReset, CommitOffsets, Consumer, ConsumerConfig, RebalanceContext,
    RebalanceListener, Subscription, TopicPartition,
};
use weir_kafka::KafkaConsumer;
use weir_testkit::Backend;

const TEST_NAME: &str = "kill_9_one_of_three_processes_and_every_record_is_consumed";
const PARTITIONS: i32 = 6;
const PER_PARTITION: i64 = 40;

fn main() {
    if std::env::var_os("WEIR_KAFKA_MEMBER").is_some() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        if let Err(e) = rt.block_on(member(args)) {
            say(&format!("ERROR {e}"));
            std::process::exit(1);
        }
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        println!("{TEST_NAME}: test");
        return;
    }
    // Honour a name filter given to `cargo test` (other flags are ignored).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !filters.is_empty() && !filters.iter().any(|f| TEST_NAME.contains(f.as_str())) {
        println!("running 0 tests");
        return;
    }
    println!("running 1 test");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(kill_9_one_of_three_processes_and_every_record_is_consumed());
    println!("test {TEST_NAME} ... ok");
}

// ---- the member process ----

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn list(tps: &[TopicPartition]) -> String {
    tps.iter()
        .map(|tp| tp.partition().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

struct Announce;

#[async_trait]
impl RebalanceListener for Announce {
    async fn on_partitions_assigned(
        &self,
        assigned: &[TopicPartition],
        _ctx: &mut RebalanceContext,
    ) -> weir_core::Result<()> {
        say(&format!("ASSIGNED {}", list(assigned)));
        Ok(())
    }

    async fn on_partitions_revoked(
        &self,
        revoked: &[TopicPartition],
        ctx: &mut RebalanceContext,
    ) -> weir_core::Result<()> {
        for tp in revoked {
            if let Some(p) = ctx.position(tp) {
                ctx.commit(tp.clone(), p);
            }
        }
        say(&format!("REVOKED {}", list(revoked)));
        Ok(())
    }

    async fn on_partitions_lost(&self, lost: &[TopicPartition]) -> weir_core::Result<()> {
        say(&format!("LOST {}", list(lost)));
        Ok(())
    }
}

async fn member(args: Vec<String>) -> anyhow::Result<()> {
    let [bootstrap, topic, group] = args.as_slice() else {
        anyhow::bail!("usage: group_member BOOTSTRAP TOPIC GROUP");
    };
    let config = ConsumerConfig::new()
        .with_bootstrap_servers(bootstrap.as_str())
        .with_group_id(group.as_str())
        .with_session_timeout(Duration::from_secs(6))
        .with_heartbeat_interval(Duration::from_secs(1))
        .with_auto_offset_reset(AutoOffsetReset::Earliest)
        .with_enable_auto_commit(false)
        .with("fetch.queue.backoff.ms", "0")?;
    let mut consumer = KafkaConsumer::new(config)?;
    consumer
        .subscribe(Subscription::topics([topic.as_str()]), Arc::new(Announce))
        .await?;

    // Stop when the parent closes our stdin (or dies).
    let stop = Arc::new(AtomicBool::new(false));
    let wakeup = consumer.wakeup_handle();
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            if line.is_err() {
                break;
            }
        }
        stop2.store(true, Ordering::SeqCst);
        wakeup.wakeup();
    });

    while !stop.load(Ordering::SeqCst) {
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(batch) => {
                for r in &batch {
                    say(&format!("REC {} {}", r.partition, r.offset));
                }
                if !batch.is_empty() {
                    consumer.commit_async(CommitOffsets::Consumed, None);
                }
            }
            Err(weir_core::Error::Wakeup) => break,
            Err(e) => say(&format!("ERROR {e}")),
        }
    }
    consumer.close().await?;
    say("CLOSED");
    Ok(())
}

// ---- the test ----

#[derive(Default, Debug)]
struct Seen {
    /// member → partitions it owns now.
    owns: BTreeMap<usize, BTreeSet<i32>>,
    /// (partition, offset) → how many times it was delivered (all members).
    records: BTreeMap<(i32, i64), u32>,
    errors: Vec<String>,
}

fn spawn_member(
    me: usize,
    bootstrap: &str,
    topic: &str,
    group: &str,
    seen: &Arc<Mutex<Seen>>,
) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("WEIR_KAFKA_MEMBER", "1")
        .args([bootstrap, topic, group])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let seen = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut s = seen.lock().unwrap();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("ASSIGNED") => {
                    let ps = words.next().unwrap_or("");
                    let set = s.owns.entry(me).or_default();
                    set.extend(
                        ps.split(',')
                            .filter(|p| !p.is_empty())
                            .map(|p| p.parse::<i32>().unwrap()),
                    );
                }
                Some("REVOKED") | Some("LOST") => {
                    let ps = words.next().unwrap_or("");
                    let set = s.owns.entry(me).or_default();
                    for p in ps.split(',').filter(|p| !p.is_empty()) {
                        set.remove(&p.parse::<i32>().unwrap());
                    }
                }
                Some("REC") => {
                    let p: i32 = words.next().unwrap().parse().unwrap();
                    let o: i64 = words.next().unwrap().parse().unwrap();
                    *s.records.entry((p, o)).or_default() += 1;
                }
                Some("ERROR") => s.errors.push(format!("member {me}: {line}")),
                _ => {}
            }
        }
    });
    child
}

fn wait_for(what: &str, seen: &Arc<Mutex<Seen>>, within: Duration, cond: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        {
            let s = seen.lock().unwrap();
            if cond(&s) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; saw {s:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn all_consumed(s: &Seen, upto: i64) -> bool {
    (0..PARTITIONS).all(|p| (0..upto).all(|o| s.records.contains_key(&(p, o))))
}

async fn kill_9_one_of_three_processes_and_every_record_is_consumed() {
    let backend = common::KafkaBackend::new();
    // Members talk to the broker directly (not through the test proxy).
    let broker = backend.broker();
    let topic = backend.unique("procs");
    let group = backend.unique("procs-group");
    backend.create_topic(&topic, PARTITIONS).await.unwrap();
    for p in 0..PARTITIONS {
        for i in 0..PER_PARTITION {
            backend
                .produce(&topic, p, None, &i.to_be_bytes())
                .await
                .unwrap();
        }
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let bootstrap = broker.bootstrap();
    let mut members: Vec<Child> = (0..3)
        .map(|me| spawn_member(me, &bootstrap, &topic, &group, &seen))
        .collect();
    let patience = Duration::from_secs(60);
    wait_for(
        "three members with 2 partitions each and every record consumed",
        &seen,
        patience,
        |s| {
            (0..3).all(|m| s.owns.get(&m).map(BTreeSet::len) == Some(2))
                && all_consumed(s, PER_PARTITION)
        },
    );
    let victim: BTreeSet<i32> = seen.lock().unwrap().owns[&0].clone();

    // kill -9 member 0: no close, no leave; the group notices after session.timeout.ms.
    members[0].kill().unwrap();
    members[0].wait().unwrap();
    let killed_at = Instant::now();
    for p in 0..PARTITIONS {
        for i in PER_PARTITION..2 * PER_PARTITION {
            backend
                .produce(&topic, p, None, &i.to_be_bytes())
                .await
                .unwrap();
        }
    }
    wait_for(
        "the two survivors to own all 6 partitions and consume every record",
        &seen,
        patience,
        |s| {
            let owned: BTreeSet<i32> = [1, 2]
                .iter()
                .filter_map(|m| s.owns.get(m))
                .flatten()
                .copied()
                .collect();
            owned.len() == PARTITIONS as usize && all_consumed(s, 2 * PER_PARTITION)
        },
    );
    let moved_after = killed_at.elapsed();
    let survivors: BTreeSet<i32> = {
        let s = seen.lock().unwrap();
        [1, 2]
            .iter()
            .filter_map(|m| s.owns.get(m))
            .flatten()
            .copied()
            .collect()
    };
    assert!(
        victim.is_subset(&survivors),
        "the killed member's partitions {victim:?} did not move"
    );

    for m in members.iter_mut().skip(1) {
        drop(m.stdin.take());
    }
    for m in members.iter_mut().skip(1) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if m.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = m.kill();
                panic!("a surviving member did not exit after its stdin closed");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let s = seen.lock().unwrap();
    assert!(
        s.errors.is_empty(),
        "members reported errors: {:?}",
        s.errors
    );
    let duplicates: u32 = s.records.values().map(|n| n - 1).sum();
    eprintln!(
        "multi-process: {} records, all consumed; {duplicates} redelivered after the kill; partitions moved {moved_after:?} after kill -9",
        s.records.len()
    );
}
