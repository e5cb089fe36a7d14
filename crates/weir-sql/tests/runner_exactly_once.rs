//! The runner over the embedded log on all three dialects: every record lands once
//! (rows, or one dead letter for poison records and rows the database refuses), and a
//! restart resumes at the stored offsets.

mod common;

use common::job::{self, run_until_done, table_sink, verify};
use common::TestDb;

async fn end_to_end<DB: TestDb>(pool: sqlx::Pool<DB>, job_name: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = job::open_log(dir.path())?;
    job::create_out_table(&pool).await?;
    job::produce(&log, 0, 1200)?;
    let s1 = run_until_done(&pool, &log, job_name, table_sink::<DB>()?, 400).await?;
    assert!(s1.isolations > 0, "refused rows were isolated: {s1:?}");
    verify(&pool, 1200).await?;
    // restart with more input: resumes where it stopped, nothing twice
    job::produce(&log, 1200, 2000)?;
    let s2 = run_until_done(&pool, &log, job_name, table_sink::<DB>()?, 5000).await?;
    assert!(
        s2.records <= 800,
        "second run reprocessed old records: {s2:?}"
    );
    verify(&pool, 2000).await?;
    assert_eq!(s1.seek_mismatches + s2.seek_mismatches, 0);
    // refused rows are isolated within their batch: no batch is retried for them
    assert_eq!(s1.retries + s2.retries, 0, "{s1:?} {s2:?}");
    println!(
        "{job_name}: 2000 records, refused rows isolated in {} + {} batches (bisection, no endless retry), dead letters {} + {}, 0 anomalies",
        s1.isolations, s2.isolations, s1.dead_letters, s2.dead_letters
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_every_record_lands_once() -> anyhow::Result<()> {
    let (pool, _dir) = common::sqlite("e2e").await?;
    end_to_end(pool, "e2e-sqlite").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_record_lands_once() -> anyhow::Result<()> {
    let (pool, _schema) = common::pg("e2e").await?;
    end_to_end(pool, "e2e-pg").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_every_record_lands_once() -> anyhow::Result<()> {
    let (pool, _db) = common::mysql("e2e").await?;
    end_to_end(pool, "e2e-mysql").await
}
