//! A partition this job never stored an offset for starts where the runner's
//! `auto_offset_reset` says (default: the log start), decided by the database, never at
//! the consumer group's own committed offset: an auto-commit (or any other member of
//! the group) may have moved that past records this job never wrote.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::job::{self, verify};
use weir_core::{CommitOffsets, Consumer, NoopListener, Subscription};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_unstored_partitions_start_at_the_log_start_not_the_group_commit(
) -> anyhow::Result<()> {
    let (pool, _dir) = common::sqlite("reset").await?;
    let dir = tempfile::tempdir()?;
    let log = job::open_log(dir.path())?;
    job::create_out_table(&pool).await?;
    job::produce(&log, 0, 400)?;
    let name = "reset";

    // The group's committed offsets already point at the end of every partition (as an
    // auto-commit on revoke would leave them), while the database holds nothing.
    let ends = job::ends(&log)?;
    {
        let mut c = job::consumer(&log, name)?;
        c.subscribe(Subscription::topics([job::TOPIC]), Arc::new(NoopListener))
            .await?;
        let give_up = std::time::Instant::now() + Duration::from_secs(30);
        while c.assignment().len() < ends.len() {
            anyhow::ensure!(std::time::Instant::now() < give_up, "never assigned");
            c.poll(Duration::from_millis(50)).await?;
        }
        c.commit_sync(CommitOffsets::Explicit(ends.clone())).await?;
        let committed = c
            .committed(&ends.keys().cloned().collect::<Vec<_>>())
            .await?;
        for (tp, end) in &ends {
            assert_eq!(committed[tp], Some(*end), "group commit of {tp}");
        }
        c.close().await?;
    }

    let stats = job::run_until_done(&pool, &log, name, job::table_sink()?, 64).await?;
    assert_eq!(stats.records, 400, "every record processed once: {stats:?}");
    verify(&pool, 400).await
}

/// A stored offset beyond the log's end (the topic was recreated, or the offsets row
/// belongs to another cluster): the runner stops with an error naming the partition
/// and the offsets, and writes nothing, instead of skipping the new records silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_stored_offset_beyond_the_log_end_fails_loudly() -> anyhow::Result<()> {
    let (pool, _dir) = common::sqlite("recreated").await?;
    let name = "recreated";
    job::create_out_table(&pool).await?;
    let first = tempfile::tempdir()?;
    let log = job::open_log(first.path())?;
    job::produce(&log, 0, 300)?;
    job::run_until_done(&pool, &log, name, job::table_sink()?, 64).await?;
    let rows_before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM out_rows")
        .fetch_one(&pool)
        .await?;

    // "The topic was recreated": a new log with fewer records than the stored offsets.
    let second = tempfile::tempdir()?;
    let log = job::open_log(second.path())?;
    job::produce(&log, 0, 30)?;
    let mut consumer = job::consumer(&log, name)?;
    let mut runner =
        weir_sql::ExactlyOnceRunner::new(pool.clone(), name, job::table_sink()?, job::decode)?;
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        runner.run(&mut consumer, Subscription::topics([job::TOPIC])),
    )
    .await;
    let _ = consumer.close().await;
    let err = match outcome {
        Err(_) => anyhow::bail!("the runner went on for 30 s instead of failing"),
        Ok(Ok(stats)) => anyhow::bail!("the runner stopped without an error: {stats:?}"),
        Ok(Err(e)) => e.to_string(),
    };
    println!("stored offset beyond the log end: {err}");
    assert!(err.contains("beyond what the log holds"), "{err}");
    assert!(
        err.contains(&format!("{}-", job::TOPIC)),
        "names the partition: {err}"
    );
    let rows_after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM out_rows")
        .fetch_one(&pool)
        .await?;
    assert_eq!(rows_before, rows_after, "nothing written");
    Ok(())
}
