//! MySQL and MariaDB: multi-row `VALUES` statements, `ON DUPLICATE KEY UPDATE`.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::mysql::{MySql, MySqlArguments, MySqlConnection, MySqlRow};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Row as _};

use crate::dialect::{multi_row_bulk_write, BulkPlan, Dialect};
use crate::types::{micros, micros_time};
use crate::{ColumnType, DialectKind, Value};

fn bind<'q>(
    q: Query<'q, MySql, MySqlArguments>,
    v: &Value<'_>,
) -> Query<'q, MySql, MySqlArguments> {
    match *v {
        Value::Null(ty) => match ty {
            ColumnType::Bool => q.bind(None::<bool>),
            ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt => q.bind(None::<i64>),
            ColumnType::Double => q.bind(None::<f64>),
            ColumnType::Text => q.bind(None::<String>),
            ColumnType::Bytes => q.bind(None::<Vec<u8>>),
            ColumnType::Decimal { .. } => q.bind(None::<rust_decimal::Decimal>),
            ColumnType::TimestampTz | ColumnType::Timestamp => {
                q.bind(None::<chrono::NaiveDateTime>)
            }
            ColumnType::Date => q.bind(None::<chrono::NaiveDate>),
            ColumnType::Time => q.bind(None::<chrono::NaiveTime>),
            ColumnType::Uuid | ColumnType::Json => q.bind(None::<String>),
        },
        Value::Bool(b) => q.bind(b),
        Value::SmallInt(i) => q.bind(i64::from(i)),
        Value::Int(i) => q.bind(i64::from(i)),
        Value::BigInt(i) => q.bind(i),
        Value::Double(f) => q.bind(f),
        Value::Text(s) => q.bind(s),
        Value::Bytes(b) => q.bind(b),
        Value::Decimal(d) => q.bind(d),
        // DATETIME(6) holds the UTC wall-clock time: no session time zone applies
        Value::TimestampTz(t) => q.bind(micros(t.naive_utc())),
        Value::Timestamp(t) => q.bind(micros(t)),
        Value::Date(d) => q.bind(d),
        Value::Time(t) => q.bind(micros_time(t)),
        Value::Uuid(u) => q.bind(u.hyphenated().to_string()),
        Value::Json(j) => q.bind(j.to_string()),
    }
}

fn query<'q>(sql: &Arc<str>, args: &[Value<'_>]) -> Query<'q, MySql, MySqlArguments> {
    let mut q = sqlx::query(AssertSqlSafe(sql.clone()));
    for a in args {
        q = bind(q, a);
    }
    q
}

#[async_trait]
impl Dialect for MySql {
    const KIND: DialectKind = DialectKind::MySql;
    const BEGIN: &'static str = "BEGIN";
    const NOW: &'static str = "CURRENT_TIMESTAMP(6)";
    const MAX_PARAMS: usize = 65_535;

    async fn execute(
        conn: &mut MySqlConnection,
        sql: &Arc<str>,
        args: &[Value<'_>],
    ) -> Result<u64, sqlx::Error> {
        Ok(query(sql, args).execute(conn).await?.rows_affected())
    }

    async fn fetch_claim(
        conn: &mut MySqlConnection,
        sql: &Arc<str>,
        args: &[Value<'_>],
    ) -> Result<Option<(i64, Option<i64>)>, sqlx::Error> {
        let row: Option<MySqlRow> = query(sql, args).fetch_optional(conn).await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    async fn fetch_offsets(
        conn: &mut MySqlConnection,
        sql: &Arc<str>,
        args: &[Value<'_>],
    ) -> Result<Vec<(String, i32, Option<i64>, i64, Option<String>)>, sqlx::Error> {
        let rows: Vec<MySqlRow> = query(sql, args).fetch_all(conn).await?;
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
        conn: &mut MySqlConnection,
        plan: &BulkPlan,
        values: &[Value<'_>],
    ) -> Result<u64, sqlx::Error> {
        multi_row_bulk_write!(MySql, conn, plan, values)
    }
}

/// Whether a `sql_mode` value makes the server refuse over-long and out-of-range
/// values (`STRICT_TRANS_TABLES` or `STRICT_ALL_TABLES`) instead of storing them
/// truncated or clamped with a warning.
pub(crate) fn is_strict(sql_mode: &str) -> bool {
    sql_mode.split(',').any(|m| {
        let m = m.trim();
        m.eq_ignore_ascii_case("STRICT_TRANS_TABLES") || m.eq_ignore_ascii_case("STRICT_ALL_TABLES")
    })
}

/// Refuse a connection whose `sql_mode` is not strict: without it the server stores
/// a value too long for its column cut short (a silently corrupted row) where weir
/// counts on an error that isolates the record into the dead letters.
pub(crate) async fn check_strict_mode(
    conn: &mut MySqlConnection,
    during: &'static str,
) -> crate::Result<()> {
    let mode: String = sqlx::query_scalar("SELECT CAST(@@SESSION.sql_mode AS CHAR)")
        .fetch_one(conn)
        .await
        .map_err(|e| crate::Error::db(during, e))?;
    if is_strict(&mode) {
        return Ok(());
    }
    Err(crate::Error::Setting {
        setting: "sql_mode",
        reason: format!(
            "the session's sql_mode ({mode:?}) has neither STRICT_TRANS_TABLES nor \
             STRICT_ALL_TABLES, so the server would store over-long values truncated \
             (a silently corrupted row) instead of refusing them (a dead letter); add \
             STRICT_TRANS_TABLES to the server's sql_mode (the MySQL 5.7+ and MariaDB \
             10.2.4+ default), or on every connection in the pool's after_connect: \
             SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), \
             'STRICT_TRANS_TABLES')"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::is_strict;

    #[test]
    fn strict_modes() {
        assert!(is_strict("STRICT_TRANS_TABLES"));
        assert!(is_strict(
            "ERROR_FOR_DIVISION_BY_ZERO,STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION"
        ));
        assert!(is_strict("strict_trans_tables"));
        assert!(!is_strict(""));
        assert!(!is_strict("NO_ENGINE_SUBSTITUTION,PIPES_AS_CONCAT"));
        assert!(!is_strict("STRICT_TRANS_TABLES_X"));
    }
}
