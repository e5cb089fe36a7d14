//! Unknown commit outcomes: the connection "drops" during `COMMIT` (failpoint
//! `commit_outcome`), either after the server applied it (the reply is lost) or before
//! (the `COMMIT` never arrived). The runner must read the offsets rows to learn which,
//! and neither apply a batch twice nor lose one, on all three dialects.

mod common;

use common::job::{self, run_until_done, table_sink, verify};
use common::TestDb;

/// `configure` is process-wide: the tests of this binary take turns.
async fn turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::OnceLock<tokio::sync::Mutex<()>> = std::sync::OnceLock::new();
    TURN.get_or_init(|| tokio::sync::Mutex::new(()))
        .lock()
        .await
}

async fn unknown_outcomes<DB: TestDb>(pool: sqlx::Pool<DB>, job_name: &str) -> anyhow::Result<()> {
    let _turn = turn().await;
    let dir = tempfile::tempdir()?;
    let log = job::open_log(dir.path())?;
    job::create_out_table(&pool).await?;

    // Every reply lost: each batch is committed, and each must be recognised as
    // committed from the offsets rows, never written again.
    weir_sql::failpoint::configure("commit_outcome:1:lose_reply");
    job::produce(&log, 0, 1500)?;
    let replies = run_until_done(&pool, &log, job_name, table_sink::<DB>()?, 40).await;
    weir_sql::failpoint::configure("");
    let replies = replies?;
    verify(&pool, 1500).await?;
    println!("{job_name}: every reply lost, 1500 records: {replies:?}, 0 anomalies");
    assert!(replies.commits > 0, "{replies:?}");
    assert_eq!(
        replies.unknown_outcomes, replies.commits,
        "every commit went through the offsets read: {replies:?}"
    );

    // Half the COMMITs lost: those batches are not applied and must be retried.
    weir_sql::failpoint::configure("commit_outcome:0.5:lose_commit");
    job::produce(&log, 1500, 4500)?;
    let commits = run_until_done(&pool, &log, job_name, table_sink::<DB>()?, 40).await;
    weir_sql::failpoint::configure("");
    let commits = commits?;
    verify(&pool, 4500).await?;
    println!("{job_name}: half the COMMITs lost, 3000 more records: {commits:?}, 0 anomalies");
    // about 20 commit attempts at 0.5: none firing has a chance of about 1e-6
    assert!(commits.unknown_outcomes > 0, "{commits:?}");
    assert!(
        commits.retries >= commits.unknown_outcomes,
        "each lost COMMIT is retried: {commits:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_unknown_commit_outcome_resolved_once() -> anyhow::Result<()> {
    let (pool, _dir) = common::sqlite("unknown").await?;
    unknown_outcomes(pool, "unknown-sqlite").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unknown_commit_outcome_resolved_once() -> anyhow::Result<()> {
    let (pool, _schema) = common::pg("unknown").await?;
    unknown_outcomes(pool, "unknown-pg").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_unknown_commit_outcome_resolved_once() -> anyhow::Result<()> {
    let (pool, _db) = common::mysql("unknown").await?;
    unknown_outcomes(pool, "unknown-mysql").await
}
