//! Database faults under a running job over the embedded log: PostgreSQL connections
//! killed mid-transaction and during `COMMIT` (`pg_terminate_backend`), SQLite busy
//! because a second writer holds the lock. No anomaly: every record lands once; an
//! unknown commit outcome is resolved by re-reading the offsets rows.

mod common;

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use common::job::{self, run_until_done, verify, Out};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use weir_sql::{async_trait, Item, TableSink, TransactionalSink};

/// Terminates its own backend from another connection before every `every`-th write.
struct KillMidTransaction {
    inner: TableSink<sqlx::Postgres, Out>,
    admin: sqlx::PgPool,
    calls: AtomicU32,
    kills: AtomicU32,
    every: u32,
    max_kills: u32,
}

#[async_trait]
impl TransactionalSink<sqlx::Postgres, Out> for KillMidTransaction {
    async fn write(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        items: &[Item<Out>],
    ) -> weir_sql::Result<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n % self.every == 1 && self.kills.load(Ordering::SeqCst) < self.max_kills {
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut **tx)
                .await
                .map_err(|e| weir_sql::Error::db("test", e))?;
            sqlx::query("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .execute(&self.admin)
                .await
                .map_err(|e| weir_sql::Error::db("test", e))?;
            self.kills.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.write(tx, items).await
    }
}

async fn pg_pool(test: &str, app: &str) -> Result<(sqlx::PgPool, sqlx::PgPool)> {
    let (pool, schema) = common::pg(test).await?;
    pool.close().await;
    let opts = PgConnectOptions::from_str(common::PG_URL)?
        .options([("search_path", schema.as_str())])
        .application_name(app);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await?;
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect(common::PG_URL)
        .await?;
    Ok((pool, admin))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connection_killed_mid_transaction() -> Result<()> {
    let app = common::unique("weir_kill_mid");
    let (pool, admin) = pg_pool("killmid", &app).await?;
    let dir = tempfile::tempdir()?;
    let log = job::open_log(dir.path())?;
    job::create_out_table(&pool).await?;
    job::produce(&log, 0, 1500)?;
    let sink = KillMidTransaction {
        inner: job::table_sink()?,
        admin,
        calls: AtomicU32::new(0),
        kills: AtomicU32::new(0),
        every: 3,
        max_kills: 4,
    };
    let stats = run_until_done(&pool, &log, "killmid", sink, 200).await?;
    verify(&pool, 1500).await?;
    assert!(
        stats.retries >= 4,
        "each killed transaction was retried: {stats:?}"
    );
    println!(
        "pg_terminate_backend mid-transaction: {} retries, 0 anomalies ({stats:?})",
        stats.retries
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connection_killed_during_commit() -> Result<()> {
    let app = common::unique("weir_kill_commit");
    let (pool, admin) = pg_pool("killcommit", &app).await?;
    let dir = tempfile::tempdir()?;
    let log = job::open_log(dir.path())?;
    job::create_out_table(&pool).await?;
    // COMMIT runs a deferred trigger that takes 500 ms for some batches: the window in
    // which the connection is cut (300 ms was missed once on a heavily loaded machine).
    sqlx::query(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$",
    )
    .execute(&pool)
    .await?;
    sqlx::query(
        "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON out_rows DEFERRABLE INITIALLY DEFERRED \
         FOR EACH ROW WHEN (NEW.src_offset % 97 = 1 AND NEW.ordinal = 0) EXECUTE FUNCTION slow_commit()",
    )
    .execute(&pool)
    .await?;
    job::produce(&log, 0, 1500)?;
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicU32::new(0));
    let killer = {
        let (stop, killed, admin, app) = (stop.clone(), killed.clone(), admin.clone(), app.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) && killed.load(Ordering::SeqCst) < 3 {
                let n: Vec<bool> = sqlx::query_scalar(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1 AND state = 'active' AND query = 'COMMIT'",
                )
                .bind(&app)
                .fetch_all(&admin)
                .await
                .unwrap_or_default();
                killed.fetch_add(n.iter().filter(|k| **k).count() as u32, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let stats = run_until_done(&pool, &log, "killcommit", job::table_sink()?, 200).await?;
    stop.store(true, Ordering::SeqCst);
    killer.await?;
    verify(&pool, 1500).await?;
    let kills = killed.load(Ordering::SeqCst);
    assert!(kills >= 1, "no COMMIT was cut");
    // A kill can land just after its COMMIT completed (pg_stat_activity showed it
    // active a moment earlier): the runner then meets the dead connection at its next
    // BEGIN, a plain retry. So not every kill is an unknown outcome, but one is.
    assert!(
        stats.unknown_outcomes >= 1,
        "no COMMIT outcome was unknown: {stats:?}"
    );
    println!(
        "pg_terminate_backend during COMMIT: {kills} kills, {} unknown outcomes, 0 anomalies",
        stats.unknown_outcomes
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_busy_from_a_second_writer() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("busy.sqlite");
    let opts = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_millis(50));
    let pool = SqlitePoolOptions::new()
        .max_connections(3)
        .connect_with(opts.clone())
        .await?;
    let other = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await?;
    let logdir = tempfile::tempdir()?;
    let log = job::open_log(logdir.path())?;
    job::create_out_table(&pool).await?;
    job::produce(&log, 0, 6000)?;
    let stop = Arc::new(AtomicBool::new(false));
    let holds = Arc::new(AtomicU32::new(0));
    let writer = {
        let (stop, holds) = (stop.clone(), holds.clone());
        tokio::spawn(async move {
            // hold the lock while batches are being committed, not during start-up
            while !stop.load(Ordering::SeqCst) {
                let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM out_rows")
                    .fetch_one(&other)
                    .await
                    .unwrap_or(0);
                if rows > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            while !stop.load(Ordering::SeqCst) && holds.load(Ordering::SeqCst) < 30 {
                let Ok(mut conn) = other.acquire().await else {
                    break;
                };
                if sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut *conn)
                    .await
                    .is_ok()
                {
                    holds.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    let _ = sqlx::query("COMMIT").execute(&mut *conn).await;
                }
                drop(conn);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    let stats = run_until_done(&pool, &log, "busy", job::table_sink()?, 50).await?;
    stop.store(true, Ordering::SeqCst);
    writer.await?;
    verify(&pool, 6000).await?;
    assert!(holds.load(Ordering::SeqCst) > 0);
    assert!(
        stats.retries > 0,
        "the second writer never made a batch fail with SQLITE_BUSY: {stats:?}"
    );
    println!(
        "SQLITE_BUSY from a second writer: {} lock holds, {} retries, 0 anomalies",
        holds.load(Ordering::SeqCst),
        stats.retries
    );
    Ok(())
}
