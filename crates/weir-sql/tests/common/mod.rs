//! Fixtures for weir-sql's integration tests: a fresh database (schema) per test.
#![allow(dead_code)]

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::AssertSqlSafe;

pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const MY_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// A name unique to this test run: `prefix_pid_nanos_n`, lower case.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}_{}_{:x}_{}",
        prefix.to_lowercase(),
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A PostgreSQL pool whose `search_path` is a fresh schema.
pub async fn pg(test: &str) -> Result<(PgPool, String)> {
    let schema = unique(&format!("w_{}", &test[..test.len().min(30)]));
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(PG_URL)
        .await
        .map_err(|e| {
            anyhow!("cannot reach PostgreSQL at 127.0.0.1:5432 (user postgres, database test): {e}; run scripts/provision")
        })?;
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&admin)
        .await
        .context("create schema")?;
    admin.close().await;
    let opts = PgConnectOptions::from_str(PG_URL)?.options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(6)
        .acquire_timeout(Duration::from_secs(20))
        .connect_with(opts)
        .await?;
    Ok((pool, schema))
}

/// A MySQL/MariaDB pool on a fresh database.
pub async fn mysql(test: &str) -> Result<(MySqlPool, String)> {
    let db = unique(&format!("w_{}", &test[..test.len().min(30)]));
    let admin = MySqlPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(MY_URL)
        .await
        .map_err(|e| {
            anyhow!("cannot reach MariaDB at 127.0.0.1:3306 (user root, database test): {e}; run scripts/provision")
        })?;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE `{db}`")))
        .execute(&admin)
        .await
        .context("create database")?;
    admin.close().await;
    let opts = MySqlConnectOptions::from_str(MY_URL)?.database(&db);
    let pool = MySqlPoolOptions::new()
        .max_connections(6)
        .acquire_timeout(Duration::from_secs(20))
        .connect_with(opts)
        .await?;
    Ok((pool, db))
}

/// A SQLite pool on a fresh file in WAL mode (the directory lives as long as the
/// returned guard).
pub async fn sqlite(_test: &str) -> Result<(SqlitePool, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let opts = SqliteConnectOptions::new()
        .filename(dir.path().join("db.sqlite"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await?;
    Ok((pool, dir))
}

/// Wait for `cond` to hold, checking every 20 ms, failing after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut cond: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if cond().await? {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(anyhow!("timed out after {limit:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Dialect-specific helpers for assertions (literal SQL only).
pub trait TestDb: weir_sql::Dialect {
    /// Run a statement.
    fn exec(
        pool: &sqlx::Pool<Self>,
        sql: String,
    ) -> impl std::future::Future<Output = Result<u64>> + Send;
    /// Run a query returning one BIGINT.
    fn scalar(
        pool: &sqlx::Pool<Self>,
        sql: String,
    ) -> impl std::future::Future<Output = Result<i64>> + Send;
    /// Run a query returning (BIGINT, BIGINT, TEXT) rows.
    fn rows3(
        pool: &sqlx::Pool<Self>,
        sql: String,
    ) -> impl std::future::Future<Output = Result<Vec<(i64, i64, Option<String>)>>> + Send;
    /// Whether the database refuses a NUL byte in text.
    const REFUSES_NUL: bool;
    /// SQL type for a bounded text column.
    const VARCHAR40: &'static str;
    /// A query counting the tables of the test's schema / database.
    const COUNT_TABLES: &'static str;
}

macro_rules! test_db {
    ($db:ty, $nul:expr, $vc:expr, $count:expr) => {
        impl TestDb for $db {
            async fn exec(pool: &sqlx::Pool<Self>, sql: String) -> Result<u64> {
                Ok(sqlx::query(AssertSqlSafe(sql.clone()))
                    .execute(pool)
                    .await
                    .with_context(|| sql)?
                    .rows_affected())
            }
            async fn scalar(pool: &sqlx::Pool<Self>, sql: String) -> Result<i64> {
                sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.clone()))
                    .fetch_one(pool)
                    .await
                    .with_context(|| sql)
            }
            async fn rows3(
                pool: &sqlx::Pool<Self>,
                sql: String,
            ) -> Result<Vec<(i64, i64, Option<String>)>> {
                sqlx::query_as::<_, (i64, i64, Option<String>)>(AssertSqlSafe(sql.clone()))
                    .fetch_all(pool)
                    .await
                    .with_context(|| sql)
            }
            const REFUSES_NUL: bool = $nul;
            const VARCHAR40: &'static str = $vc;
            const COUNT_TABLES: &'static str = $count;
        }
    };
}

test_db!(
    sqlx::Postgres,
    true,
    "VARCHAR(40)",
    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()"
);
test_db!(
    sqlx::MySql,
    false,
    "VARCHAR(40)",
    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()"
);
test_db!(
    sqlx::Sqlite,
    false,
    "TEXT",
    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'"
);
pub mod job;
