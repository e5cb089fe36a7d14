//! What differs between PostgreSQL, SQLite and MySQL: binding, fetching, bulk inserts.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{Column, DialectKind, Value};

/// A database weir can keep offsets in: implemented for [`sqlx::Postgres`],
/// [`sqlx::Sqlite`] and [`sqlx::MySql`] (each behind the crate feature of the same
/// name). Its methods are weir's plumbing; users only name the type.
///
/// ```
/// fn store_for<DB: weir_sql::Dialect>(job: &str) -> weir_sql::Result<weir_sql::OffsetStore<DB>> {
///     weir_sql::OffsetStore::<DB>::new(job)
/// }
/// let store = store_for::<sqlx::Sqlite>("job")?;
/// assert_eq!(store.job(), "job");
/// # Ok::<(), weir_sql::Error>(())
/// ```
#[async_trait]
pub trait Dialect: sqlx::Database + Sized {
    /// Which dialect this is.
    const KIND: DialectKind;

    /// The statement that opens a batch transaction (SQLite: `BEGIN IMMEDIATE`, so a
    /// second writer waits for the lock instead of failing half-way through).
    #[doc(hidden)]
    const BEGIN: &'static str;

    /// The SQL expression for "now" in a timestamp column.
    #[doc(hidden)]
    const NOW: &'static str;

    /// Most bind parameters one statement may carry.
    #[doc(hidden)]
    const MAX_PARAMS: usize;

    /// Run `sql` with these arguments; returns the rows affected.
    #[doc(hidden)]
    async fn execute(
        conn: &mut Self::Connection,
        sql: &Arc<str>,
        args: &[Value<'_>],
    ) -> Result<u64, sqlx::Error>;

    /// Run a query returning rows of `(BIGINT epoch, BIGINT NULL next_offset)`, and
    /// return the first.
    #[doc(hidden)]
    async fn fetch_claim(
        conn: &mut Self::Connection,
        sql: &Arc<str>,
        args: &[Value<'_>],
    ) -> Result<Option<(i64, Option<i64>)>, sqlx::Error>;

    /// Run a query returning `(TEXT topic, INT partition, BIGINT NULL next_offset,
    /// BIGINT epoch, TEXT NULL owner)` rows.
    #[doc(hidden)]
    async fn fetch_offsets(
        conn: &mut Self::Connection,
        sql: &Arc<str>,
        args: &[Value<'_>],
    ) -> Result<Vec<(String, i32, Option<i64>, i64, Option<String>)>, sqlx::Error>;

    /// Insert rows (`values` holds `columns.len()` values per row) into `table` the
    /// fastest way this dialect offers. With `upsert_keys`, rows whose key exists
    /// replace the stored ones.
    #[doc(hidden)]
    async fn bulk_write(
        conn: &mut Self::Connection,
        plan: &BulkPlan,
        values: &[Value<'_>],
    ) -> Result<u64, sqlx::Error>;
}

/// A prepared plan for [`Dialect::bulk_write`]: table, columns, upsert keys and the
/// statement texts derived from them (built once, reused: sqlx caches the prepared
/// statements per connection by text).
#[derive(Debug, Clone)]
#[doc(hidden)]
pub struct BulkPlan {
    pub(crate) table: String,
    pub(crate) columns: Vec<Column>,
    /// Indexes of the key columns when upserting.
    pub(crate) upsert_keys: Option<Vec<usize>>,
    /// Rows per multi-row statement.
    pub(crate) rows_per_stmt: usize,
    /// The statement for a full chunk of `rows_per_stmt` rows (multi-row dialects) or
    /// the `COPY` / `UNNEST` statement (PostgreSQL).
    pub(crate) full: Arc<str>,
}

impl BulkPlan {
    pub(crate) fn new(
        kind: DialectKind,
        max_params: usize,
        table: String,
        columns: Vec<Column>,
        upsert_keys: Option<Vec<usize>>,
    ) -> Self {
        let ncols = columns.len().max(1);
        let rows_per_stmt = (max_params / ncols).clamp(1, 500);
        let mut plan = Self {
            table,
            columns,
            upsert_keys,
            rows_per_stmt,
            full: Arc::from(""),
        };
        plan.full = match kind {
            DialectKind::Postgres if plan.upsert_keys.is_none() => Arc::from(plan.copy_sql()),
            DialectKind::Postgres => Arc::from(plan.unnest_sql()),
            _ => Arc::from(plan.values_sql(kind, rows_per_stmt)),
        };
        plan
    }

    fn column_list(&self, kind: DialectKind) -> String {
        self.columns
            .iter()
            .map(|c| c.name.quoted(kind))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn copy_sql(&self) -> String {
        format!(
            "COPY {} ({}) FROM STDIN",
            self.table,
            self.column_list(DialectKind::Postgres)
        )
    }

    fn unnest_sql(&self) -> String {
        let k = DialectKind::Postgres;
        let args = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("${}::{}", i + 1, c.ty.pg_array()))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {} ({}) SELECT * FROM UNNEST({args}){}",
            self.table,
            self.column_list(k),
            self.conflict_clause(k)
        )
    }

    /// `INSERT INTO t (..) VALUES (..), (..)` for `rows` rows.
    pub(crate) fn values_sql(&self, kind: DialectKind, rows: usize) -> String {
        let ncols = self.columns.len();
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ",
            self.table,
            self.column_list(kind)
        );
        let mut n = 0;
        for r in 0..rows {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..ncols {
                if c > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                match kind {
                    DialectKind::Postgres => sql.push_str(&format!("${n}")),
                    _ => sql.push('?'),
                }
            }
            sql.push(')');
        }
        sql.push_str(&self.conflict_clause(kind));
        sql
    }

    fn conflict_clause(&self, kind: DialectKind) -> String {
        let Some(keys) = &self.upsert_keys else {
            return String::new();
        };
        let others: Vec<&Column> = self
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !keys.contains(i))
            .map(|(_, c)| c)
            .collect();
        match kind {
            DialectKind::MySql => {
                let sets = if others.is_empty() {
                    let k = self.columns[keys[0]].name.quoted(kind);
                    format!("{k} = {k}")
                } else {
                    others
                        .iter()
                        .map(|c| {
                            let q = c.name.quoted(kind);
                            format!("{q} = VALUES({q})")
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!(" ON DUPLICATE KEY UPDATE {sets}")
            }
            DialectKind::Postgres | DialectKind::Sqlite => {
                let key_list = keys
                    .iter()
                    .map(|i| self.columns[*i].name.quoted(kind))
                    .collect::<Vec<_>>()
                    .join(", ");
                if others.is_empty() {
                    format!(" ON CONFLICT ({key_list}) DO NOTHING")
                } else {
                    let sets = others
                        .iter()
                        .map(|c| {
                            let q = c.name.quoted(kind);
                            format!("{q} = excluded.{q}")
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!(" ON CONFLICT ({key_list}) DO UPDATE SET {sets}")
                }
            }
        }
    }
}

/// The most bytes of values one multi-row statement carries (at least one row): far
/// below MySQL's smallest `max_allowed_packet` default (4 MiB; MariaDB 16 MiB), which a
/// batch of large rows in one statement would exceed (error 1153, connection closed).
pub(crate) const STATEMENT_BYTES: usize = 1 << 20;

/// The bytes `v` adds to a statement on the wire, roughly.
pub(crate) fn wire_bytes(v: &Value<'_>) -> usize {
    match v {
        Value::Text(s) => s.len() + 9,
        Value::Bytes(b) => b.len() + 9,
        Value::Decimal(_) => 40,
        Value::TimestampTz(_) | Value::Timestamp(_) => 32,
        Value::Uuid(_) => 45,
        Value::Json(j) => crate::types::json_len(j) + 9,
        _ => 9,
    }
}

/// Bulk write through multi-row `VALUES` statements, chunked by rows and by bytes
/// ([`STATEMENT_BYTES`]) (SQLite, MySQL).
macro_rules! multi_row_bulk_write {
    ($db:ty, $conn:expr, $plan:expr, $values:expr) => {{
        let conn = $conn;
        let plan: &BulkPlan = $plan;
        let values: &[Value<'_>] = $values;
        let ncols = plan.columns.len();
        let mut affected = 0;
        if ncols == 0 {
            return Ok(0);
        }
        debug_assert_eq!(values.len() % ncols, 0, "values are whole rows");
        let total = values.len() / ncols;
        let mut start = 0;
        while start < total {
            let (mut end, mut bytes) = (start, 0_usize);
            while end < total && end - start < plan.rows_per_stmt {
                let row: usize = values[end * ncols..(end + 1) * ncols]
                    .iter()
                    .map(crate::dialect::wire_bytes)
                    .sum();
                if end > start && bytes + row > crate::dialect::STATEMENT_BYTES {
                    break;
                }
                bytes += row;
                end += 1;
            }
            let rows = end - start;
            let sql: Arc<str> = if rows == plan.rows_per_stmt {
                plan.full.clone()
            } else {
                Arc::from(plan.values_sql(<$db as Dialect>::KIND, rows))
            };
            affected +=
                <$db as Dialect>::execute(conn, &sql, &values[start * ncols..end * ncols]).await?;
            start = end;
        }
        Ok(affected)
    }};
}
pub(crate) use multi_row_bulk_write;
