//! Large rows on MySQL/MariaDB: one batch of 120 rows of 300 KB each (36 MB) is far
//! over the server's `max_allowed_packet` (16 MiB on MariaDB), so one multi-row
//! statement for the batch would be refused with error 1153 and the connection
//! closed. The sink splits its statements by bytes as well as by rows: the batch
//! commits once, every row intact.

mod common;

use std::time::Duration;

use weir_core::{Consumer, Record, Subscription, TopicPartition};
use weir_log::NewRecord;
use weir_sql::{impl_row, ExactlyOnceRunner, Reject, TableName, TableSink};

struct Big {
    src_offset: i64,
    payload: String,
}
impl_row!(Big {
    src_offset,
    payload
});

const RECORDS: i64 = 120;
const BYTES: usize = 300_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_batch_larger_than_max_allowed_packet_commits() -> anyhow::Result<()> {
    let (pool, _db) = common::mysql("large_rows").await?;
    sqlx::query("CREATE TABLE big (src_offset BIGINT NOT NULL, payload LONGTEXT NOT NULL)")
        .execute(&pool)
        .await?;
    let packet: i64 = sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
        .fetch_one(&pool)
        .await?;
    assert!(
        (RECORDS as usize * BYTES) as i64 > packet,
        "the batch must exceed max_allowed_packet ({packet}) for this test to mean anything"
    );
    let dir = tempfile::tempdir()?;
    let log = weir_log::Log::open(dir.path(), weir_log::LogOptions::default())?;
    log.create_topic("big", 1)?;
    let tp = TopicPartition::new("big", 0);
    let recs: Vec<NewRecord> = (0..RECORDS)
        .map(|i| NewRecord::new(format!("k{i}"), format!("{i}:{}", "z".repeat(BYTES))))
        .collect();
    log.append(&tp, &recs)?;

    let config = weir_core::ConsumerConfig::new()
        .with_group_id("large-rows")
        .with_enable_auto_commit(false)
        .with_max_poll_records(500)
        .with_max_partition_fetch_bytes(64 << 20);
    let mut consumer = weir_log::LogConsumer::new(&log, config)?;
    let wake = consumer.wakeup_handle();
    let sink = TableSink::<sqlx::MySql, Big>::new(TableName::new("big")?)?;
    let decode = |r: &Record| -> Result<Vec<Big>, Reject> {
        let v = std::str::from_utf8(r.value.as_deref().unwrap_or_default())
            .map_err(Reject::permanent)?;
        Ok(vec![Big {
            src_offset: r.offset,
            payload: v.to_owned(),
        }])
    };
    let mut runner = ExactlyOnceRunner::new(pool.clone(), "large-rows", sink, decode)?
        .with_batch_records(1000)
        .with_linger(Duration::from_millis(300))
        .with_retry_for(Duration::from_secs(10));
    runner.migrate().await?;
    let task = tokio::spawn(async move {
        let r = runner
            .run(&mut consumer, Subscription::topics(["big"]))
            .await;
        let _ = consumer.close().await;
        r
    });
    let want = [(tp, RECORDS)].into_iter().collect();
    let stats = common::job::stop_when_stored(&pool, "large-rows", want, wake, task).await?;
    let (rows, total): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), CAST(SUM(LENGTH(payload)) AS SIGNED) FROM big")
            .fetch_one(&pool)
            .await?;
    assert_eq!(rows, RECORDS, "{stats:?}");
    let want: i64 = (0..RECORDS)
        .map(|i| (format!("{i}:").len() + BYTES) as i64)
        .sum();
    assert_eq!(total, want, "payload bytes");
    assert_eq!(stats.dead_letters, 0, "{stats:?}");
    println!(
        "MariaDB, max_allowed_packet {packet}: {RECORDS} rows of {BYTES} bytes committed in {} commits, {stats:?}",
        stats.commits
    );
    Ok(())
}
