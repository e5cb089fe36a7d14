//! A value that does not fit its column (a decimal with more digits than its
//! `NUMERIC(p, s)` holds, a timestamp the dialect cannot store) is a bad record, not a
//! truncation: the runner isolates it into the dead letters (stage `sink`, with the
//! record's coordinates and an error naming table and column) and commits the rest
//! of its batch once, on all three dialects.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::job::{self, stop_when_stored};
use common::TestDb;
use weir_core::{Record, Subscription};
use weir_sql::rust_decimal::Decimal;
use weir_sql::{ExactlyOnceRunner, Numeric, Reject, Row, TableName, TableSink};

#[derive(Row)]
struct Payment {
    src_partition: i32,
    src_offset: i64,
    amount: Numeric<8, 2>,
    at: DateTime<Utc>,
}

const RECORDS: u64 = 120;

/// What record `i` carries: `amount|unix seconds`.
fn value(i: u64, far_secs: i64) -> String {
    match i {
        i if i % 17 == 3 => format!("1.005|{i}"), // a third fractional digit
        i if i % 19 == 4 => format!("1234567.00|{i}"), // 7 integer digits, 6 fit
        i if i % 23 == 5 => format!("1.00|{far_secs}"), // a year the dialect lacks
        i => format!("{}.{:02}|{}", i * 3, i % 100, 1_700_000_000 + i),
    }
}

fn is_bad(i: u64) -> bool {
    i % 17 == 3 || i % 19 == 4 || i % 23 == 5
}

fn decode(r: &Record) -> Result<Vec<Payment>, Reject> {
    let v =
        std::str::from_utf8(r.value.as_deref().unwrap_or_default()).map_err(Reject::permanent)?;
    let (amount, secs) = v
        .split_once('|')
        .ok_or_else(|| Reject::permanent("no '|'"))?;
    let secs: i64 = secs.parse().map_err(Reject::permanent)?;
    Ok(vec![Payment {
        src_partition: r.partition,
        src_offset: r.offset,
        amount: Numeric(Decimal::from_str(amount).map_err(Reject::permanent)?),
        at: DateTime::from_timestamp(secs, 0).ok_or_else(|| Reject::permanent("secs"))?,
    }])
}

async fn misfits_become_dead_letters<DB: TestDb>(
    pool: sqlx::Pool<DB>,
    far_year: i32,
) -> anyhow::Result<()> {
    let far_secs = Utc
        .with_ymd_and_hms(far_year, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    let dir = tempfile::tempdir()?;
    let log = job::open_log(dir.path())?;
    for p in 0..job::PARTITIONS {
        let recs: Vec<weir_log::NewRecord> = (0..RECORDS)
            .filter(|i| i % job::PARTITIONS as u64 == p as u64)
            .map(|i| weir_log::NewRecord::new(format!("k{i}"), value(i, far_secs)))
            .collect();
        log.append(&weir_core::TopicPartition::new(job::TOPIC, p), &recs)?;
    }
    let sink = TableSink::<DB, Payment>::new(TableName::new("payments")?)?;
    sink.create_table(&pool).await?;
    let name = "misfits";
    let mut consumer = job::consumer(&log, name)?;
    let wake = weir_core::Consumer::wakeup_handle(&consumer);
    let mut runner = ExactlyOnceRunner::new(pool.clone(), name, sink, decode)?
        .with_batch_records(64)
        .with_linger(Duration::from_millis(20));
    runner.migrate().await?;
    let task = tokio::spawn(async move {
        let r = runner
            .run(&mut consumer, Subscription::topics([job::TOPIC]))
            .await;
        let _ = weir_core::Consumer::close(&mut consumer).await;
        r
    });
    let stats = stop_when_stored(&pool, name, job::ends(&log)?, wake, task).await?;

    // where each record landed: partition i % 3, offset i / 3
    let at = |i: u64| (i % 3) as i64 * 1_000_000 + (i / 3) as i64;
    let bad: BTreeSet<i64> = (0..RECORDS).filter(|i| is_bad(*i)).map(at).collect();
    let good = RECORDS as i64 - bad.len() as i64;
    let rows = DB::scalar(&pool, "SELECT COUNT(*) FROM payments".into()).await?;
    assert_eq!(rows, good, "every good record written once");
    let sql = match DB::KIND {
        weir_sql::DialectKind::MySql => {
            "SELECT `partition`, `offset`, error FROM weir_dead_letters WHERE stage = 'sink'"
        }
        _ => {
            "SELECT CAST(\"partition\" AS BIGINT), \"offset\", error FROM weir_dead_letters \
             WHERE stage = 'sink'"
        }
    };
    let dead = DB::rows3(&pool, sql.into()).await?;
    let got: BTreeSet<i64> = dead.iter().map(|(p, o, _)| p * 1_000_000 + o).collect();
    assert_eq!(
        got, bad,
        "exactly the misfits dead-lettered, at their coordinates"
    );
    for (_, _, error) in &dead {
        let e = error.as_deref().unwrap_or_default();
        assert!(e.contains("payments"), "{e}");
        assert!(
            (e.contains("amount") && (e.contains("not rounded") || e.contains("holds 6")))
                || (e.contains("\"at\"") || e.contains("`at`")) && e.contains("out of range"),
            "{e}"
        );
    }
    assert!(stats.isolations > 0, "{stats:?}");
    Ok(())
}

#[tokio::test]
async fn sqlite_misfit_values_become_dead_letters() -> anyhow::Result<()> {
    let (pool, _dir) = common::sqlite("misfits").await?;
    misfits_become_dead_letters(pool, 10_000).await
}

#[tokio::test]
async fn postgres_misfit_values_become_dead_letters() -> anyhow::Result<()> {
    let (pool, _schema) = common::pg("misfits").await?;
    misfits_become_dead_letters(pool, -5000).await
}

#[tokio::test]
async fn mysql_misfit_values_become_dead_letters() -> anyhow::Result<()> {
    let (pool, _db) = common::mysql("misfits").await?;
    misfits_become_dead_letters(pool, 10_000).await
}
