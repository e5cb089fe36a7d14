//! The sink trait and the built-in table sink.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{Pool, Transaction};
use weir_core::Coordinates;

use crate::dialect::{BulkPlan, Dialect};
use crate::{DialectKind, Error, Result, Row, TableName, Value};

/// One output value of a batch, with the record it came from.
///
/// ```
/// use weir_core::Coordinates;
/// let item = weir_sql::Item { at: Coordinates::new("orders", 0, 7), ordinal: 0, timestamp: None, value: "row" };
/// assert_eq!(item.at.offset, 7);
/// ```
#[derive(Clone, Debug)]
pub struct Item<T> {
    /// The source record's coordinates.
    pub at: Coordinates,
    /// Its position among the outputs of that record (0 for one-to-one transforms).
    pub ordinal: u32,
    /// The source record's timestamp (milliseconds since the Unix epoch), if it has one.
    pub timestamp: Option<i64>,
    /// The value to write.
    pub value: T,
}

/// Writes a batch of values on an open transaction; weir commits it together with the
/// offsets. Implement it to write anything; use [`TableSink`] for plain inserts and
/// upserts.
///
/// `write` must only use `tx` (never another connection, never commit): the batch's
/// rows, its dead letters and its offset advance become visible together or not at all.
/// It may be called again with the same items after a rollback (transient failure,
/// isolation of a bad row), and with a subset of them.
///
/// ```
/// use weir_sql::{async_trait, Item, Result, TransactionalSink};
///
/// /// Counts records per key in a `counts(k TEXT PRIMARY KEY, n BIGINT)` table.
/// struct Counts;
///
/// #[async_trait]
/// impl TransactionalSink<sqlx::Postgres, String> for Counts {
///     async fn write(&self, tx: &mut sqlx::Transaction<'static, sqlx::Postgres>, items: &[Item<String>]) -> Result<()> {
///         for item in items {
///             sqlx::query("INSERT INTO counts (k, n) VALUES ($1, 1) ON CONFLICT (k) DO UPDATE SET n = counts.n + 1")
///                 .bind(&item.value)
///                 .execute(&mut **tx)
///                 .await
///                 .map_err(|e| weir_sql::Error::db("counts", e))?;
///         }
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait TransactionalSink<DB: Dialect, T: Send + Sync>: Send + Sync {
    /// A name for errors and logs (default `"sink"`; [`TableSink`] uses its
    /// table's name).
    ///
    /// ```
    /// use weir_sql::{impl_row, TableName, TableSink, TransactionalSink};
    /// struct Order { id: i64 }
    /// impl_row!(Order { id });
    /// let sink = TableSink::<sqlx::Sqlite, Order>::new(TableName::new("orders")?)?;
    /// assert_eq!(TransactionalSink::<sqlx::Sqlite, Order>::name(&sink), "orders");
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    fn name(&self) -> &str {
        "sink"
    }

    /// Write `items` on `tx`. Database errors returned as [`Error::Database`] are
    /// classified: a refused value (NUL byte, too long, out of range, constraint)
    /// isolates the offending record into the dead letters; a lost connection or
    /// lock conflict retries the batch; anything else stops the job.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use weir_core::Coordinates;
    /// use weir_sql::{impl_row, Item, TableName, TableSink, TransactionalSink};
    /// struct Order { id: i64 }
    /// impl_row!(Order { id });
    ///
    /// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
    /// let sink = TableSink::<sqlx::Sqlite, Order>::new(TableName::new("orders")?)?;
    /// sink.create_table(&pool).await?;
    /// let items: Vec<Item<Order>> = (0..3)
    ///     .map(|i| Item { at: Coordinates::new("orders", 0, i), ordinal: 0, timestamp: None, value: Order { id: i } })
    ///     .collect();
    /// let mut tx = pool.begin().await?;
    /// sink.write(&mut tx, &items).await?;
    /// tx.commit().await?;
    /// let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders").fetch_one(&pool).await?;
    /// assert_eq!(n, 3);
    /// # Ok(()) }
    /// ```
    async fn write(&self, tx: &mut Transaction<'static, DB>, items: &[Item<T>]) -> Result<()>;

    /// Like [`write`](Self::write), but the sink may refuse whole records instead of
    /// failing the batch: it writes nothing of a refused record (none of its items)
    /// and returns it with the reason. weir then sends each refused record to the
    /// dead letters or drops it (see [`Refusal`]) in the same transaction. Windowed
    /// aggregates refuse records later than the allowed lateness this way. The default
    /// writes everything and refuses nothing. weir-pipeline's runtime calls this;
    /// [`ExactlyOnceRunner`](crate::ExactlyOnceRunner) calls [`write`](Self::write).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use weir_core::Coordinates;
    /// use weir_sql::{impl_row, Item, TableName, TableSink, TransactionalSink};
    /// struct Order { id: i64 }
    /// impl_row!(Order { id });
    /// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
    /// let sink = TableSink::<sqlx::Sqlite, Order>::new(TableName::new("orders")?)?;
    /// sink.create_table(&pool).await?;
    /// let items = [Item { at: Coordinates::new("orders", 0, 0), ordinal: 0, timestamp: None, value: Order { id: 1 } }];
    /// let mut tx = pool.begin().await?;
    /// assert!(sink.write_refusing(&mut tx, &items).await?.is_empty());
    /// # Ok(()) }
    /// ```
    async fn write_refusing(
        &self,
        tx: &mut Transaction<'static, DB>,
        items: &[Item<T>],
    ) -> Result<Vec<Refusal>> {
        self.write(tx, items).await?;
        Ok(Vec::new())
    }
}

/// A record a sink refused in [`TransactionalSink::write_refusing`]: nothing of it was
/// written; it is consumed with the batch, into the dead letters or dropped.
///
/// ```
/// use weir_core::Coordinates;
/// let r = weir_sql::Refusal { at: Coordinates::new("orders", 0, 7), reason: "late".into(), dead_letter: true };
/// assert!(r.dead_letter);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The refused record.
    pub at: Coordinates,
    /// Why (stored with the dead letter, or logged when dropped).
    pub reason: String,
    /// Into the dead letters (`true`) or dropped and counted (`false`).
    pub dead_letter: bool,
}

/// What the [`TableSink`] does with a row whose key already exists.
///
/// ```
/// use weir_sql::{impl_row, TableName, TableSink, WriteMode};
/// struct Balance { account: String, cents: i64 }
/// impl_row!(Balance { account, cents });
///
/// // The latest balance per account: rows with a known account replace the stored one.
/// let sink = TableSink::<sqlx::Postgres, Balance>::new(TableName::new("balances")?)?
///     .with_mode(WriteMode::Upsert { key: vec!["account".into()] })?;
/// assert!(matches!(sink.mode(), WriteMode::Upsert { .. }));
/// # Ok::<(), weir_sql::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteMode {
    /// Plain `INSERT` (PostgreSQL: `COPY … FROM STDIN`); an existing key is an error.
    Insert,
    /// Insert or replace the non-key columns (`ON CONFLICT … DO UPDATE` / `ON DUPLICATE
    /// KEY UPDATE`; PostgreSQL through `UNNEST` arrays). Within one batch the last
    /// value of a key wins.
    Upsert {
        /// The key columns (a primary key or unique index must cover them).
        key: Vec<String>,
    },
}

/// The built-in sink: writes each value (a [`Row`]) as one row of a table, the
/// fastest way the dialect allows (PostgreSQL `COPY` or `UNNEST`, multi-row `VALUES`
/// elsewhere; statements prepared once and reused).
///
/// ```
/// use weir_sql::{impl_row, TableName, TableSink, WriteMode};
/// struct Order { id: i64, customer: String }
/// impl_row!(Order { id, customer });
///
/// let insert = TableSink::<sqlx::Sqlite, Order>::new(TableName::new("orders")?)?;
/// let upsert = TableSink::<sqlx::Sqlite, Order>::new(TableName::new("orders")?)?
///     .with_mode(WriteMode::Upsert { key: vec!["id".into()] })?;
/// # let _ = (insert, upsert);
/// # Ok::<(), weir_sql::Error>(())
/// ```
#[derive(Debug)]
pub struct TableSink<DB: Dialect, R: Row> {
    table: TableName,
    mode: WriteMode,
    plan: Arc<BulkPlan>,
    _p: PhantomData<fn() -> (DB, R)>,
}

impl<DB: Dialect, R: Row> TableSink<DB, R> {
    /// Insert rows of type `R` into `table` ([`WriteMode::Insert`]); its columns are
    /// named by [`Row::columns`].
    ///
    /// ```
    /// use weir_sql::{impl_row, TableName, TableSink, WriteMode};
    /// struct Order { id: i64, customer: String }
    /// impl_row!(Order { id, customer });
    /// let sink = TableSink::<sqlx::MySql, Order>::new(TableName::new("orders")?.with_schema("shop")?)?;
    /// assert_eq!(sink.table().to_string(), "shop.orders");
    /// assert_eq!(sink.mode(), &WriteMode::Insert);
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn new(table: TableName) -> Result<Self> {
        let plan = BulkPlan::new(
            DB::KIND,
            DB::MAX_PARAMS,
            table.quoted(DB::KIND),
            R::columns()?,
            None,
        );
        Ok(Self {
            table,
            mode: WriteMode::Insert,
            plan: Arc::new(plan),
            _p: PhantomData,
        })
    }

    /// Insert or upsert. An upsert key must name at least one column of the row
    /// type, else [`Error::Identifier`].
    ///
    /// ```
    /// use weir_sql::{impl_row, TableName, TableSink, WriteMode};
    /// struct Order { id: i64, status: String }
    /// impl_row!(Order { id, status });
    ///
    /// let upsert = TableSink::<sqlx::Sqlite, Order>::new(TableName::new("orders")?)?
    ///     .with_mode(WriteMode::Upsert { key: vec!["id".into()] })?;
    /// # let _ = upsert;
    /// let bad = TableSink::<sqlx::Sqlite, Order>::new(TableName::new("orders")?)?
    ///     .with_mode(WriteMode::Upsert { key: vec!["order_id".into()] });
    /// assert!(bad.is_err());
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn with_mode(self, mode: WriteMode) -> Result<Self> {
        let columns = R::columns()?;
        let keys = match &mode {
            WriteMode::Insert => None,
            WriteMode::Upsert { key } => {
                if key.is_empty() {
                    return Err(Error::identifier(
                        "",
                        "an upsert needs at least one key column",
                    ));
                }
                let mut idx = Vec::new();
                for k in key {
                    let i = columns
                        .iter()
                        .position(|c| c.name.as_str() == k)
                        .ok_or_else(|| {
                            Error::identifier(k.clone(), "is not a column of the row type")
                        })?;
                    idx.push(i);
                }
                Some(idx)
            }
        };
        let plan = BulkPlan::new(
            DB::KIND,
            DB::MAX_PARAMS,
            self.table.quoted(DB::KIND),
            columns,
            keys,
        );
        Ok(Self {
            mode,
            plan: Arc::new(plan),
            ..self
        })
    }

    /// The table.
    ///
    /// ```
    /// use weir_sql::{impl_row, TableName, TableSink};
    /// struct Order { id: i64 }
    /// impl_row!(Order { id });
    /// let sink = TableSink::<sqlx::Postgres, Order>::new(TableName::new("orders")?)?;
    /// assert_eq!(sink.table().name().as_str(), "orders");
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// The write mode (see [`with_mode`](Self::with_mode)).
    ///
    /// ```
    /// use weir_sql::{impl_row, TableName, TableSink, WriteMode};
    /// struct Order { id: i64 }
    /// impl_row!(Order { id });
    /// let sink = TableSink::<sqlx::Postgres, Order>::new(TableName::new("orders")?)?;
    /// assert_eq!(sink.mode(), &WriteMode::Insert);
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn mode(&self) -> &WriteMode {
        &self.mode
    }

    /// Create the table if missing, from the row type's columns (the upsert key
    /// becomes the primary key). For tests and quick starts; production schemas are
    /// usually managed elsewhere. Safe when several instances run it at the same
    /// moment (like [`OffsetStore::migrate`](crate::OffsetStore::migrate)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use weir_sql::{impl_row, TableName, TableSink, WriteMode};
    /// struct Balance { account: String, cents: i64, note: Option<String> }
    /// impl_row!(Balance { account, cents, note });
    ///
    /// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
    /// let sink = TableSink::<sqlx::Sqlite, Balance>::new(TableName::new("balances")?)?
    ///     .with_mode(WriteMode::Upsert { key: vec!["account".into()] })?;
    /// sink.create_table(&pool).await?;
    /// sink.create_table(&pool).await?; // IF NOT EXISTS
    /// let sql: String = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'balances'")
    ///     .fetch_one(&pool)
    ///     .await?;
    /// assert!(sql.contains(r#"PRIMARY KEY ("account")"#), "{sql}");
    /// # Ok(()) }
    /// ```
    pub async fn create_table(&self, pool: &Pool<DB>) -> Result<()> {
        let k = DB::KIND;
        let keys = self.plan.upsert_keys.clone().unwrap_or_default();
        let mut stmts: Vec<Arc<str>> = Vec::new();
        if let (Some(schema), DialectKind::Postgres | DialectKind::MySql) = (self.table.schema(), k)
        {
            let kw = if k == DialectKind::Postgres {
                "SCHEMA"
            } else {
                "DATABASE"
            };
            stmts.push(Arc::from(format!(
                "CREATE {kw} IF NOT EXISTS {}",
                schema.quoted(k)
            )));
        }
        let mut cols: Vec<String> = self
            .plan
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "{} {} {}",
                    c.name.quoted(k),
                    c.ty.sql_type(k, keys.contains(&i)),
                    if c.nullable { "NULL" } else { "NOT NULL" }
                )
            })
            .collect();
        if !keys.is_empty() {
            let list = keys
                .iter()
                .map(|i| self.plan.columns[*i].name.quoted(k))
                .collect::<Vec<_>>()
                .join(", ");
            cols.push(format!("PRIMARY KEY ({list})"));
        }
        stmts.push(Arc::from(format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            self.plan.table,
            cols.join(", ")
        )));
        let during = "create table";
        let mut conn = pool.acquire().await.map_err(|e| Error::db(during, e))?;
        crate::migrate::run_ddl::<DB>(&mut conn, during, &self.table, &stmts).await
    }

    /// Write rows on an open connection or transaction (what [`TransactionalSink::write`]
    /// does, usable on its own). Returns the rows written (an upsert that replaces a
    /// row may count it twice on MySQL).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use weir_sql::{impl_row, TableName, TableSink, WriteMode};
    /// struct Balance { account: String, cents: i64 }
    /// impl_row!(Balance { account, cents });
    ///
    /// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
    /// let sink = TableSink::<sqlx::Sqlite, Balance>::new(TableName::new("balances")?)?
    ///     .with_mode(WriteMode::Upsert { key: vec!["account".into()] })?;
    /// sink.create_table(&pool).await?;
    /// let rows = [
    ///     Balance { account: "ada".into(), cents: 100 },
    ///     Balance { account: "ada".into(), cents: 250 }, // the last value of a key wins
    /// ];
    /// let mut tx = pool.begin().await?;
    /// sink.write_rows(&mut tx, &rows).await?;
    /// tx.commit().await?;
    /// let cents: i64 = sqlx::query_scalar("SELECT cents FROM balances WHERE account = 'ada'")
    ///     .fetch_one(&pool)
    ///     .await?;
    /// assert_eq!(cents, 250);
    /// # Ok(()) }
    /// ```
    pub async fn write_rows<'a, I>(&self, conn: &mut DB::Connection, rows: I) -> Result<u64>
    where
        I: IntoIterator<Item = &'a R>,
        R: 'a,
    {
        let ncols = self.plan.columns.len();
        let mut values: Vec<Value<'_>> = Vec::new();
        for r in rows {
            let before = values.len();
            r.values(&mut values);
            if values.len() - before != ncols {
                return Err(Error::Schema {
                    table: self.plan.table.clone(),
                    reason: format!(
                        "the row type produced {} values for {ncols} columns",
                        values.len() - before
                    ),
                });
            }
            for (c, v) in self.plan.columns.iter().zip(&mut values[before..]) {
                if let Err(reason) = crate::types::check(c.ty, v, DB::KIND) {
                    // An encoding error: the runner isolates the row into the dead
                    // letters, as it does for a value the database refuses.
                    return Err(Error::db(
                        "sink write",
                        sqlx::Error::Encode(
                            format!(
                                "table {} column {}: {reason}",
                                self.plan.table,
                                c.name.quoted(DB::KIND)
                            )
                            .into(),
                        ),
                    ));
                }
                crate::types::prepare(c.ty, v);
            }
        }
        if let (Some(keys), DialectKind::Postgres) = (&self.plan.upsert_keys, DB::KIND) {
            values = dedup_last(values, ncols, keys);
        }
        DB::bulk_write(conn, &self.plan, &values)
            .await
            .map_err(|e| Error::db("sink write", e))
    }
}

/// Keep only the last row of each key (PostgreSQL refuses to update a row twice in
/// one `INSERT … ON CONFLICT`).
fn dedup_last<'a>(values: Vec<Value<'a>>, ncols: usize, keys: &[usize]) -> Vec<Value<'a>> {
    let nrows = values.len() / ncols;
    let mut last: HashMap<Vec<u8>, usize> = HashMap::with_capacity(nrows);
    let mut key = Vec::new();
    let mut key_vals = Vec::with_capacity(keys.len());
    for (i, row) in values.chunks(ncols).enumerate() {
        key.clear();
        key_vals.clear();
        key_vals.extend(keys.iter().map(|k| row[*k]));
        crate::value::key_bytes(&key_vals, &mut key);
        last.insert(key.clone(), i);
    }
    if last.len() == nrows {
        return values;
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    let mut out = Vec::with_capacity(keep.len() * ncols);
    for i in keep {
        out.extend_from_slice(&values[i * ncols..(i + 1) * ncols]);
    }
    out
}

#[async_trait]
impl<DB: Dialect, R: Row> TransactionalSink<DB, R> for TableSink<DB, R> {
    fn name(&self) -> &str {
        self.table.name().as_str()
    }

    async fn write(&self, tx: &mut Transaction<'static, DB>, items: &[Item<R>]) -> Result<()> {
        self.write_rows(&mut **tx, items.iter().map(|i| &i.value))
            .await?;
        Ok(())
    }
}

impl<DB: Dialect, R: Row> Clone for TableSink<DB, R> {
    fn clone(&self) -> Self {
        Self {
            table: self.table.clone(),
            mode: self.mode.clone(),
            plan: self.plan.clone(),
            _p: PhantomData,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keeps_last_of_each_key() {
        let v = vec![
            Value::BigInt(1),
            Value::Text("a"),
            Value::BigInt(2),
            Value::Text("b"),
            Value::BigInt(1),
            Value::Text("c"),
        ];
        let out = dedup_last(v, 2, &[0]);
        assert_eq!(
            out,
            vec![
                Value::BigInt(2),
                Value::Text("b"),
                Value::BigInt(1),
                Value::Text("c")
            ]
        );
    }
}
