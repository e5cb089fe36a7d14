//! A small job over the embedded log used by the runner tests: inputs with poison
//! records and rows the database refuses, and a check that every record landed once.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use weir_core::{AutoOffsetReset, ConsumerConfig, Record, Subscription, TopicPartition};
use weir_log::{Durability, Log, LogConsumer, LogOptions, NewRecord};
use weir_sql::{
    impl_row, ExactlyOnceRunner, OffsetStore, Reject, RunStats, TableName, TableSink,
    TransactionalSink,
};

use super::{wait_until, TestDb};

pub const TOPIC: &str = "in";
pub const PARTITIONS: i32 = 3;

/// One output row.
pub struct Out {
    pub src_partition: i32,
    pub src_offset: i64,
    pub ordinal: i32,
    pub payload: String,
    pub small: i32,
}
impl_row!(Out {
    src_partition,
    src_offset,
    ordinal,
    payload,
    small
});

/// What record `i` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Good,
    /// The decode closure rejects it.
    Poison,
    /// Payload over 40 characters.
    TooLong,
    /// `small` does not fit a SMALLINT.
    Overflow,
    /// A NUL byte in the payload.
    Nul,
}

pub fn kind(i: u64) -> Kind {
    match i {
        i if i % 97 == 5 => Kind::Poison,
        i if i % 89 == 7 => Kind::TooLong,
        i if i % 83 == 11 => Kind::Overflow,
        i if i % 79 == 13 => Kind::Nul,
        _ => Kind::Good,
    }
}

/// Records with index `i` produce two rows when `i % 10 == 0`.
pub fn outputs(i: u64) -> i32 {
    if i % 10 == 0 {
        2
    } else {
        1
    }
}

pub fn value(i: u64) -> String {
    match kind(i) {
        Kind::Good => format!("{}:v{i}", i % 1000),
        Kind::Poison => "POISON".to_owned(),
        Kind::TooLong => format!("1:{}", "x".repeat(50)),
        Kind::Overflow => "40000:big".to_owned(),
        Kind::Nul => format!("2:nul\0{i}"),
    }
}

pub fn decode(r: &Record) -> Result<Vec<Out>, Reject> {
    let v =
        std::str::from_utf8(r.value.as_deref().unwrap_or_default()).map_err(Reject::permanent)?;
    let (small, payload) = v
        .split_once(':')
        .ok_or_else(|| Reject::permanent("no ':' in value"))?;
    let small: i32 = small.parse().map_err(Reject::permanent)?;
    let key =
        std::str::from_utf8(r.key.as_deref().unwrap_or_default()).map_err(Reject::permanent)?;
    let i: u64 = key
        .trim_start_matches('k')
        .parse()
        .map_err(Reject::permanent)?;
    Ok((0..outputs(i))
        .map(|ordinal| Out {
            src_partition: r.partition,
            src_offset: r.offset,
            ordinal,
            payload: payload.to_owned(),
            small,
        })
        .collect())
}

pub fn open_log(dir: &std::path::Path) -> Result<Log> {
    let log = Log::open(dir, LogOptions::default().with_durability(Durability::Os))?;
    if log.partition_count(TOPIC).is_err() {
        log.create_topic(TOPIC, PARTITIONS)?;
    }
    Ok(log)
}

/// Append records `from..to` (key `k{i}`, partition `i % PARTITIONS`).
pub fn produce(log: &Log, from: u64, to: u64) -> Result<()> {
    for p in 0..PARTITIONS {
        let recs: Vec<NewRecord> = (from..to)
            .filter(|i| i % PARTITIONS as u64 == p as u64)
            .map(|i| NewRecord::new(format!("k{i}"), value(i)))
            .collect();
        if !recs.is_empty() {
            log.append(&TopicPartition::new(TOPIC, p), &recs)?;
        }
    }
    Ok(())
}

pub fn ends(log: &Log) -> Result<BTreeMap<TopicPartition, i64>> {
    (0..PARTITIONS)
        .map(|p| {
            let tp = TopicPartition::new(TOPIC, p);
            let (_, end) = log.offsets(&tp)?;
            Ok((tp, end))
        })
        .collect()
}

pub async fn create_out_table<DB: TestDb>(pool: &sqlx::Pool<DB>) -> Result<()> {
    DB::exec(
        pool,
        format!(
            "CREATE TABLE IF NOT EXISTS out_rows (src_partition INTEGER NOT NULL, src_offset BIGINT NOT NULL, \
             ordinal INTEGER NOT NULL, payload {} NOT NULL CHECK (length(payload) <= 40), \
             small SMALLINT NOT NULL CHECK (small BETWEEN -32768 AND 32767))",
            DB::VARCHAR40
        ),
    )
    .await?;
    Ok(())
}

pub fn consumer(log: &Log, group: &str) -> Result<LogConsumer> {
    consumer_with_poll_interval(log, group, Duration::from_secs(300))
}

/// A consumer evicted when it does not poll for `max_poll_interval`.
pub fn consumer_with_poll_interval(
    log: &Log,
    group: &str,
    max_poll_interval: Duration,
) -> Result<LogConsumer> {
    let config = ConsumerConfig::new()
        .with_max_poll_interval(max_poll_interval)
        .with_group_id(group)
        .with_auto_offset_reset(AutoOffsetReset::Earliest)
        .with_enable_auto_commit(false)
        .with_max_poll_records(150)
        .with_session_timeout(Duration::from_millis(1500))
        .with_heartbeat_interval(Duration::from_millis(300));
    Ok(LogConsumer::new(log, config)?)
}

/// Run the job with `sink` until the stored offsets reach the log's end, then wake it.
pub async fn run_until_done<DB, S>(
    pool: &sqlx::Pool<DB>,
    log: &Log,
    job: &str,
    sink: S,
    batch: usize,
) -> Result<RunStats>
where
    DB: TestDb,
    S: TransactionalSink<DB, Out> + 'static,
{
    let mut consumer = consumer(log, job)?;
    let wake = weir_core::Consumer::wakeup_handle(&consumer);
    let mut runner = ExactlyOnceRunner::new(pool.clone(), job, sink, decode)?
        .with_batch_records(batch)
        .with_linger(Duration::from_millis(50));
    runner.migrate().await?;
    let task = tokio::spawn(async move {
        let r = runner
            .run(&mut consumer, Subscription::topics([TOPIC]))
            .await;
        let _ = weir_core::Consumer::close(&mut consumer).await;
        r
    });
    stop_when_stored(pool, job, ends(log)?, wake, task).await
}

/// Wait (up to 90 s) until `job`'s stored offsets reach `want`, then wake the runner
/// and return what its task returned.
pub async fn stop_when_stored<DB: TestDb>(
    pool: &sqlx::Pool<DB>,
    job: &str,
    want: BTreeMap<TopicPartition, i64>,
    wake: weir_core::WakeupHandle,
    task: tokio::task::JoinHandle<weir_sql::Result<RunStats>>,
) -> Result<RunStats> {
    let store = OffsetStore::<DB>::new(job)?;
    let watch = wait_until(
        Duration::from_secs(90),
        "stored offsets to reach the log end",
        || {
            let store = store.clone();
            let want = want.clone();
            async move {
                let got = store.read_all(pool).await?;
                Ok(want
                    .iter()
                    .all(|(tp, end)| got.get(tp).and_then(|r| r.next_offset) == Some(*end)))
            }
        },
    )
    .await;
    wake.wakeup();
    let stats = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .map_err(|_| anyhow!("runner did not stop after wakeup"))???;
    watch?;
    Ok(stats)
}

pub fn table_sink<DB: TestDb>() -> Result<TableSink<DB, Out>> {
    Ok(TableSink::<DB, Out>::new(TableName::new("out_rows")?)?)
}

/// Check every record of `0..n` landed exactly once: as its rows, or as one dead letter
/// of the right stage.
pub async fn verify<DB: TestDb>(pool: &sqlx::Pool<DB>, n: u64) -> Result<()> {
    let dups = DB::scalar(
        pool,
        "SELECT COUNT(*) FROM (SELECT src_partition, src_offset, ordinal FROM out_rows \
         GROUP BY src_partition, src_offset, ordinal HAVING COUNT(*) > 1) d"
            .into(),
    )
    .await?;
    assert_eq!(dups, 0, "duplicate rows");
    let mut want_rows = 0_i64;
    let (mut want_decode, mut want_sink) = (0_i64, 0_i64);
    for i in 0..n {
        match kind(i) {
            Kind::Good => want_rows += i64::from(outputs(i)),
            Kind::Poison => want_decode += 1,
            Kind::TooLong | Kind::Overflow => want_sink += 1,
            Kind::Nul if DB::REFUSES_NUL => want_sink += 1,
            Kind::Nul => want_rows += i64::from(outputs(i)),
        }
    }
    let rows = DB::scalar(pool, "SELECT COUNT(*) FROM out_rows".into()).await?;
    assert_eq!(rows, want_rows, "sink rows");
    let decode = DB::scalar(
        pool,
        "SELECT COUNT(*) FROM weir_dead_letters WHERE stage = 'decode'".into(),
    )
    .await?;
    let sink = DB::scalar(
        pool,
        "SELECT COUNT(*) FROM weir_dead_letters WHERE stage = 'sink'".into(),
    )
    .await?;
    assert_eq!(
        (decode, sink),
        (want_decode, want_sink),
        "dead letters (decode, sink)"
    );
    // duplicate dead letters cannot exist: (job, topic, partition, offset) is the
    // table's primary key (a second write fails the batch instead)
    Ok(())
}

pub type Shared<T> = Arc<parking_lot::Mutex<T>>;
