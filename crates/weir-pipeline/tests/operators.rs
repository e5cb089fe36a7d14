//! Operator semantics and per-stage error policies, the same bodies on the embedded log
//! and on Kafka (tansu), into SQLite: map_with (coordinates), filter, flat_map
//! (ordinals), inspect, try_map, map_async (order kept per partition), key_by; dead
//! letter (default) / skip / fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use common::{committed, ends, sqlite_url, Input};
use weir_pipeline::sink::Sqlite;
use weir_pipeline::{Job, OnError, OpError};

#[derive(serde::Deserialize, Clone, Debug)]
struct Order {
    id: i64,
    customer: String,
    amount: f64,
}

struct Line {
    part: i32,
    src_offset: i64,
    ordinal: i32,
    id: i64,
    customer: String,
}
weir_sql::impl_row!(Line {
    part,
    src_offset,
    ordinal,
    id,
    customer
});

const PER_PARTITION: i64 = 40;

fn is_poison(i: i64) -> bool {
    i % 13 == 5
}

/// Record `i` of a partition: an order, or (every 13th) text that is not JSON.
fn value(p: i32, i: i64) -> Vec<u8> {
    if is_poison(i) {
        format!("not json {p}/{i}").into_bytes()
    } else {
        let id = i64::from(p) * 1000 + i;
        format!(
            r#"{{"id":{id},"customer":"c{}","amount":{}}}"#,
            id % 3,
            i * 10
        )
        .into_bytes()
    }
}

async fn orders(input: &Input, partitions: i32) -> Result<String> {
    let topic = input.topic("orders", partitions)?;
    for p in 0..partitions {
        let values: Vec<_> = (0..PER_PARTITION)
            .map(|i| (Some(format!("k{i}")), value(p, i)))
            .collect();
        input.produce(&topic, p, &values).await?;
    }
    Ok(topic)
}

async fn lines(url: &str, table: &str) -> Result<Vec<(i32, i64, i32, i64, String)>> {
    let pool = sqlx::SqlitePool::connect(url).await?;
    let q = format!("SELECT part, src_offset, ordinal, id, customer FROM {table} ORDER BY rowid");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(q))
        .fetch_all(&pool)
        .await?)
}

async fn dead_letters(url: &str, job: &str) -> Result<Vec<(i32, i64, String, String)>> {
    let pool = sqlx::SqlitePool::connect(url).await?;
    Ok(sqlx::query_as(
        "SELECT \"partition\", \"offset\", stage, error FROM weir_dead_letters WHERE job = ? ORDER BY \"partition\", \"offset\"",
    )
    .bind(job)
    .fetch_all(&pool)
    .await?)
}

fn all_done(topic: &str, partitions: i32) -> BTreeMap<(String, i32), Option<i64>> {
    ends(topic, &vec![PER_PARTITION; partitions as usize])
}

/// map_with sees coordinates, filter drops, flat_map emits 2 rows for every 5th id,
/// inspect sees each survivor once; poison is dead-lettered (the default policy) in
/// the same transaction as the offsets.
async fn operators_and_dead_letters(input: Input) -> Result<()> {
    common::logs();
    let dir = tempfile::tempdir()?;
    let db = sqlite_url(dir.path());
    let topic = orders(&input, 2).await?;
    let job = "ops";
    let seen = Arc::new(AtomicU64::new(0));
    let seen2 = seen.clone();
    let summary = Job::new(job)
        .source(input.url(), [topic.as_str()])
        .database(&db)
        .batch_records(16)
        .linger(Duration::from_millis(10))
        .value::<Order, _>(weir_formats::Json::new())
        .map_with(|o, r| (o, r.partition, r.offset, r.key.clone()))
        .filter(|(o, _, _, _)| o.amount >= 100.0)
        .inspect(move |(_, _, offset, key), r| {
            assert_eq!(*offset, r.offset, "inspect sees the value's own record");
            assert_eq!(key.as_deref(), r.key.as_deref());
            seen2.fetch_add(1, Ordering::Relaxed);
        })
        .flat_map(|(o, part, src_offset, _)| {
            let n = if o.id % 5 == 0 { 2 } else { 1 };
            (0..n).map(move |ordinal| Line {
                part,
                src_offset,
                ordinal,
                id: o.id,
                customer: o.customer.clone(),
            })
        })
        .sink(Sqlite::insert("lines"))
        .run_until(committed(
            db.clone(),
            job.into(),
            "weir_offsets".into(),
            all_done(&topic, 2),
            Duration::from_secs(60),
        ))
        .await?;

    let mut want = BTreeSet::new();
    let mut poison = BTreeSet::new();
    for p in 0..2 {
        for i in 0..PER_PARTITION {
            let id = i64::from(p) * 1000 + i;
            if is_poison(i) {
                poison.insert((p, i));
            } else if i * 10 >= 100 {
                for k in 0..if id % 5 == 0 { 2 } else { 1 } {
                    want.insert((p, i, k, id, format!("c{}", id % 3)));
                }
            }
        }
    }
    let got = lines(&db, "lines").await?;
    let got_set: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(got.len(), got_set.len(), "{}: duplicate rows", input.name());
    assert_eq!(got_set, want, "{}: rows", input.name());
    let dead = dead_letters(&db, job).await?;
    let dead_at: BTreeSet<(i32, i64)> = dead.iter().map(|d| (d.0, d.1)).collect();
    assert_eq!(dead_at, poison, "{}: dead letters", input.name());
    for (_, _, stage, error) in &dead {
        assert_eq!(stage, "decode");
        assert!(error.starts_with("decode: "), "{error}");
    }
    assert_eq!(summary.records, 2 * PER_PARTITION as u64);
    assert_eq!(summary.rows, want.len() as u64);
    assert_eq!(summary.dead_letters, poison.len() as u64);
    assert_eq!(summary.skipped, 0);
    let survivors = want
        .iter()
        .map(|w| (w.0, w.1))
        .collect::<BTreeSet<_>>()
        .len();
    assert_eq!(seen.load(Ordering::Relaxed), survivors as u64);
    println!("{}: {summary:?}", input.name());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_and_dead_letters_embedded_log() -> Result<()> {
    operators_and_dead_letters(Input::log()?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_and_dead_letters_kafka() -> Result<()> {
    operators_and_dead_letters(Input::kafka()?).await
}

/// `on_error(Skip)`: poison is consumed and counted, nothing is dead-lettered.
async fn skip_policy(input: Input) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = sqlite_url(dir.path());
    let topic = orders(&input, 1).await?;
    let summary = Job::new("skip")
        .source(input.url(), [topic.as_str()])
        .database(&db)
        .value::<Order, _>(weir_formats::Json::new())
        .on_error(OnError::Skip)
        .map(|o| Line {
            part: 0,
            src_offset: o.id,
            ordinal: 0,
            id: o.id,
            customer: o.customer,
        })
        .sink(Sqlite::insert("lines"))
        .run_until(committed(
            db.clone(),
            "skip".into(),
            "weir_offsets".into(),
            all_done(&topic, 1),
            Duration::from_secs(60),
        ))
        .await?;
    let poison = (0..PER_PARTITION).filter(|i| is_poison(*i)).count() as u64;
    assert_eq!(summary.skipped, poison);
    assert_eq!(summary.dead_letters, 0);
    assert!(dead_letters(&db, "skip").await?.is_empty());
    assert_eq!(
        lines(&db, "lines").await?.len() as u64,
        PER_PARTITION as u64 - poison
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_policy_embedded_log() -> Result<()> {
    skip_policy(Input::log()?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_policy_kafka() -> Result<()> {
    skip_policy(Input::kafka()?).await
}

/// `on_error(Fail)`: the job stops with an error naming the stage and the record's
/// coordinates; the poison record's batch is not committed, what came before is.
async fn fail_policy(input: Input) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = sqlite_url(dir.path());
    let topic = orders(&input, 1).await?;
    let err = Job::new("fail")
        .source(input.url(), [topic.as_str()])
        .database(&db)
        .batch_records(4)
        .value::<Order, _>(weir_formats::Json::new())
        .on_error(OnError::Fail)
        .map(|o| Line {
            part: 0,
            src_offset: o.id,
            ordinal: 0,
            id: o.id,
            customer: o.customer,
        })
        .sink(Sqlite::insert("lines"))
        .run_until(tokio::time::sleep(Duration::from_secs(60)))
        .await
        .expect_err("a poison record with policy Fail stops the job");
    let msg = err.to_string();
    assert!(matches!(err, weir_pipeline::Error::Stage { .. }), "{msg}");
    assert!(msg.contains("stage `decode`"), "{msg}");
    assert!(
        msg.contains(&format!("{topic}/0@5")),
        "names topic, partition and offset: {msg}"
    );
    let db = weir_testkit::checker::Db::connect(&db).await?;
    let stored = db.next_offsets("fail", "weir_offsets").await?;
    let next = stored
        .get(&(topic.clone(), 0))
        .copied()
        .flatten()
        .unwrap_or(0);
    assert!(
        next <= 5,
        "the poison record (offset 5) is not consumed: {next}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_policy_embedded_log() -> Result<()> {
    fail_policy(Input::log()?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_policy_kafka() -> Result<()> {
    fail_policy(Input::kafka()?).await
}

/// try_map: a retriable error pauses the partition and retries the same record
/// (never a dead letter); a permanent one is dead-lettered with stage `transform`.
/// map_async: at most `concurrency` at once, results in offset order per partition.
/// key_by attaches the key.
async fn try_map_map_async_key_by(input: Input) -> Result<()> {
    common::logs();
    let dir = tempfile::tempdir()?;
    let db = sqlite_url(dir.path());
    let topic = input.topic("plain", 2)?;
    for p in 0..2 {
        let values: Vec<_> = (0..PER_PARTITION)
            .map(|i| (None, format!("{p}:{i}").into_bytes()))
            .collect();
        input.produce(&topic, p, &values).await?;
    }
    let flaky: Arc<parking_lot::Mutex<BTreeMap<(i32, i64), u32>>> = Arc::default();
    let flaky2 = flaky.clone();
    let running = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let (running2, peak2) = (running.clone(), peak.clone());
    let summary = Job::new("try")
        .source(input.url(), [topic.as_str()])
        .database(&db)
        .batch_records(8)
        .linger(Duration::from_millis(5))
        .records()
        .map(|r| {
            let text = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            (r.partition, r.offset, text)
        })
        .try_map(move |(p, i, text)| {
            // offsets 3 and 17 fail twice transiently, then succeed; 11 is permanent
            if i == 11 {
                return Err(OpError::permanent(format!("record {p}/{i} is refused")));
            }
            if i == 3 || i == 17 {
                let mut f = flaky2.lock();
                let n = f.entry((p, i)).or_insert(0);
                if *n < 2 {
                    *n += 1;
                    return Err(OpError::retriable("service unavailable"));
                }
            }
            Ok((p, i, text))
        })
        .map_async(4, move |(p, i, text)| {
            let (running, peak) = (running2.clone(), peak2.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // later records finish first: order must still be kept
                tokio::time::sleep(Duration::from_millis(((PER_PARTITION - i) % 7) as u64)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, OpError>((p, i, text))
            }
        })
        .key_by(|(_, i, _)| i % 3)
        .map(|k| Line {
            part: k.value.0,
            src_offset: k.value.1,
            ordinal: k.key as i32,
            id: k.value.1,
            customer: k.value.2,
        })
        .sink(Sqlite::insert("lines"))
        .run_until(committed(
            db.clone(),
            "try".into(),
            "weir_offsets".into(),
            ends(&topic, &[PER_PARTITION, PER_PARTITION]),
            Duration::from_secs(60),
        ))
        .await?;
    let got = lines(&db, "lines").await?;
    for p in 0..2 {
        let offsets: Vec<i64> = got.iter().filter(|l| l.0 == p).map(|l| l.1).collect();
        let want: Vec<i64> = (0..PER_PARTITION).filter(|i| *i != 11).collect();
        assert_eq!(
            offsets,
            want,
            "{}: partition {p} rows in offset order",
            input.name()
        );
    }
    for l in &got {
        assert_eq!(i64::from(l.2), l.1 % 3, "key_by key");
        assert_eq!(l.4, format!("{}:{}", l.0, l.1));
    }
    let dead = dead_letters(&db, "try").await?;
    assert_eq!(dead.len(), 2, "only the permanent failures: {dead:?}");
    for (p, off, stage, error) in &dead {
        assert_eq!((*off, stage.as_str()), (11, "transform"), "{p}");
        assert!(
            error.contains("try_map") && error.contains("refused"),
            "{error}"
        );
    }
    assert!(summary.transient_retries >= 4, "{summary:?}");
    assert!(flaky.lock().values().all(|n| *n == 2));
    assert!(
        peak.load(Ordering::SeqCst) <= 4,
        "map_async concurrency bound"
    );
    assert!(
        peak.load(Ordering::SeqCst) >= 2,
        "map_async ran calls concurrently"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_map_map_async_key_by_embedded_log() -> Result<()> {
    try_map_map_async_key_by(Input::log()?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_map_map_async_key_by_kafka() -> Result<()> {
    try_map_map_async_key_by(Input::kafka()?).await
}
