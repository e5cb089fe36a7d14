//! SQLite: multi-row `VALUES` statements, `BEGIN IMMEDIATE`.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Row as _, Sqlite};

use crate::dialect::{multi_row_bulk_write, BulkPlan, Dialect};
use crate::types::{
    date_text, decimal_text, micros, micros_time, time_text, timestamp_text, timestamptz_text,
};
use crate::{ColumnType, DialectKind, Value};

fn bind<'q>(
    q: Query<'q, Sqlite, SqliteArguments>,
    v: &Value<'_>,
) -> Query<'q, Sqlite, SqliteArguments> {
    match *v {
        Value::Null(ty) => match ty {
            ColumnType::Bool => q.bind(None::<bool>),
            ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt => q.bind(None::<i64>),
            ColumnType::Double => q.bind(None::<f64>),
            ColumnType::Text => q.bind(None::<String>),
            ColumnType::Bytes => q.bind(None::<Vec<u8>>),
            // every other type is stored as text (see `ColumnType`)
            _ => q.bind(None::<String>),
        },
        Value::Bool(b) => q.bind(b),
        Value::SmallInt(i) => q.bind(i64::from(i)),
        Value::Int(i) => q.bind(i64::from(i)),
        Value::BigInt(i) => q.bind(i),
        Value::Double(f) => q.bind(f),
        Value::Text(s) => q.bind(s),
        Value::Bytes(b) => q.bind(b),
        // `TableSink` has rescaled it to the column's scale (`types::prepare`)
        Value::Decimal(d) => q.bind(decimal_text(d)),
        Value::TimestampTz(t) => q.bind(timestamptz_text(&micros(t.naive_utc()).and_utc())),
        Value::Timestamp(t) => q.bind(timestamp_text(&micros(t))),
        Value::Date(d) => q.bind(date_text(&d)),
        Value::Time(t) => q.bind(time_text(&micros_time(t))),
        Value::Uuid(u) => q.bind(u.hyphenated().to_string()),
        Value::Json(j) => q.bind(j.to_string()),
    }
}

fn query<'q>(sql: &Arc<str>, args: &[Value<'_>]) -> Query<'q, Sqlite, SqliteArguments> {
    let mut q = sqlx::query(AssertSqlSafe(sql.clone()));
    for a in args {
        q = bind(q, a);
    }
    q
}

#[async_trait]
impl Dialect for Sqlite {
    const KIND: DialectKind = DialectKind::Sqlite;
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    const NOW: &'static str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";
    const MAX_PARAMS: usize = 32_766;

    async fn execute(
        conn: &mut SqliteConnection,
        sql: &Arc<str>,
        args: &[Value<'_>],
    ) -> Result<u64, sqlx::Error> {
        Ok(query(sql, args).execute(conn).await?.rows_affected())
    }

    async fn fetch_claim(
        conn: &mut SqliteConnection,
        sql: &Arc<str>,
        args: &[Value<'_>],
    ) -> Result<Option<(i64, Option<i64>)>, sqlx::Error> {
        let row: Option<SqliteRow> = query(sql, args).fetch_optional(conn).await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    async fn fetch_offsets(
        conn: &mut SqliteConnection,
        sql: &Arc<str>,
        args: &[Value<'_>],
    ) -> Result<Vec<(String, i32, Option<i64>, i64, Option<String>)>, sqlx::Error> {
        let rows: Vec<SqliteRow> = query(sql, args).fetch_all(conn).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                ))
            })
            .collect()
    }

    async fn bulk_write(
        conn: &mut SqliteConnection,
        plan: &BulkPlan,
        values: &[Value<'_>],
    ) -> Result<u64, sqlx::Error> {
        multi_row_bulk_write!(Sqlite, conn, plan, values)
    }
}

/// Warn when the database is not in WAL mode (an in-memory database, which cannot
/// be, excepted): in the rollback-journal modes a committing writer waits for every
/// reader and blocks them meanwhile, so batches stall and fail with `SQLITE_BUSY`
/// as soon as anything else reads the database.
pub(crate) async fn warn_unless_wal(
    conn: &mut SqliteConnection,
    during: &'static str,
) -> crate::Result<()> {
    // The main database's file: empty for an in-memory (or temporary) database.
    let file: String =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| crate::Error::db(during, e))?
            .unwrap_or_default();
    if file.is_empty() {
        return Ok(());
    }
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(conn)
        .await
        .map_err(|e| crate::Error::db(during, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            journal_mode = %mode,
            "the SQLite database is not in WAL mode: commits wait for every reader and \
             block them; open the pool with \
             SqliteConnectOptions::journal_mode(SqliteJournalMode::Wal)"
        );
    }
    Ok(())
}
