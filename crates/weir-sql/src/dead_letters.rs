//! The dead-letter table: records that cannot be processed, written in the same
//! transaction as the offset advance that skips them.

use std::marker::PhantomData;
use std::sync::Arc;

use sqlx::Pool;
use weir_core::Record;

use crate::dialect::{BulkPlan, Dialect};
use crate::{Column, ColumnType, DialectKind, Error, Result, TableName, Value};

/// Longest error text stored, in characters.
///
/// ```
/// use weir_sql::{DeadLetter, Stage, MAX_ERROR_CHARS};
/// let r = weir_core::Record::new("orders", 0, 9, None, None);
/// let d = DeadLetter::new(r, Stage::Sink, "e".repeat(MAX_ERROR_CHARS + 10));
/// assert_eq!(d.error.chars().count(), MAX_ERROR_CHARS);
/// ```
pub const MAX_ERROR_CHARS: usize = 4000;

/// Where in the pipeline a record failed.
///
/// ```
/// assert_eq!(weir_sql::Stage::Decode.as_str(), "decode");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// Turning bytes into a typed value (or the user's transform) failed.
    Decode,
    /// The database refused the record's rows (bad value, constraint).
    Sink,
    /// A pipeline operator (`try_map`, `map_async`, …) failed; the error names it.
    Transform,
}

impl Stage {
    /// The name stored in the `stage` column.
    ///
    /// ```
    /// use weir_sql::Stage;
    /// assert_eq!(Stage::Decode.as_str(), "decode");
    /// assert_eq!(Stage::Sink.as_str(), "sink");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Sink => "sink",
            Stage::Transform => "transform",
        }
    }
}

/// One record for the dead-letter table.
///
/// ```
/// use weir_sql::{DeadLetter, Stage};
/// let r = weir_core::Record::new("orders", 0, 9, None, None);
/// let d = DeadLetter::new(r, Stage::Decode, "bad\0magic");
/// assert_eq!(d.error, "badmagic"); // NUL bytes are removed
/// ```
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The record as it was read.
    pub record: Record,
    /// Why it failed (NUL bytes removed, cut at [`MAX_ERROR_CHARS`]).
    pub error: String,
    /// Where it failed.
    pub stage: Stage,
}

impl DeadLetter {
    /// A dead letter for `record`: `error`'s text without NUL bytes (PostgreSQL
    /// refuses them), cut at [`MAX_ERROR_CHARS`] characters.
    ///
    /// ```
    /// use weir_sql::{DeadLetter, Stage};
    /// let r = weir_core::Record::new("orders", 2, 41, None, Some("{oops".into()));
    /// let d = DeadLetter::new(r, Stage::Decode, "expected JSON");
    /// assert_eq!((d.record.offset, d.stage, d.error.as_str()), (41, Stage::Decode, "expected JSON"));
    /// ```
    pub fn new(record: Record, stage: Stage, error: impl std::fmt::Display) -> Self {
        let error = error
            .to_string()
            .chars()
            .filter(|c| *c != '\0')
            .take(MAX_ERROR_CHARS)
            .collect();
        Self {
            record,
            error,
            stage,
        }
    }
}

/// The dead-letter table of a job: `(job, topic, partition, offset, key, value,
/// headers, error, stage, at)`, primary key `(job, topic, partition, offset)` so a
/// record can land there only once.
///
/// [`ExactlyOnceRunner`](crate::ExactlyOnceRunner) writes its poison records here
/// (set another table with
/// [`with_dead_letters`](crate::ExactlyOnceRunner::with_dead_letters)); a custom loop
/// calls [`write`](Self::write) on its batch transaction.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use weir_core::Record;
/// use weir_sql::{DeadLetter, DeadLetters, Stage};
///
/// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
/// let dlq = DeadLetters::<sqlx::Sqlite>::new("orders-to-db")?;
/// dlq.migrate(&pool).await?;
///
/// let poison = Record::new("orders", 0, 7, None, Some("\u{0}garbage".into()));
/// let mut tx = pool.begin().await?;
/// dlq.write(&mut tx, &[DeadLetter::new(poison, Stage::Decode, "not JSON")]).await?;
/// tx.commit().await?;
///
/// let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM weir_dead_letters WHERE stage = 'decode'")
///     .fetch_one(&pool)
///     .await?;
/// assert_eq!(n, 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DeadLetters<DB: Dialect> {
    job: Arc<str>,
    table: TableName,
    plan: Arc<BulkPlan>,
    _db: PhantomData<fn() -> DB>,
}

fn columns() -> Result<Vec<Column>> {
    Ok(vec![
        Column::new("job", ColumnType::Text, false)?,
        Column::new("topic", ColumnType::Text, false)?,
        Column::new("partition", ColumnType::Int, false)?,
        Column::new("offset", ColumnType::BigInt, false)?,
        Column::new("key", ColumnType::Bytes, true)?,
        Column::new("value", ColumnType::Bytes, true)?,
        Column::new("headers", ColumnType::Text, true)?,
        Column::new("error", ColumnType::Text, false)?,
        Column::new("stage", ColumnType::Text, false)?,
    ])
}

impl<DB: Dialect> DeadLetters<DB> {
    /// Dead letters of job `job` in the table `weir_dead_letters` (the job name is
    /// the first key column: several jobs can share one table).
    ///
    /// ```
    /// let dlq = weir_sql::DeadLetters::<sqlx::MySql>::new("orders-to-db")?;
    /// assert_eq!(dlq.table().to_string(), "weir_dead_letters");
    /// assert!(weir_sql::DeadLetters::<sqlx::MySql>::new("").is_err());
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn new(job: &str) -> Result<Self> {
        Self::build(job, TableName::new("weir_dead_letters")?)
    }

    fn build(job: &str, table: TableName) -> Result<Self> {
        if job.is_empty() || job.len() > crate::offsets::MAX_JOB_BYTES || job.contains('\0') {
            return Err(Error::identifier(
                job,
                "a job name must be 1 to 255 bytes without NUL",
            ));
        }
        let plan = BulkPlan::new(
            DB::KIND,
            DB::MAX_PARAMS,
            table.quoted(DB::KIND),
            columns()?,
            None,
        );
        Ok(Self {
            job: Arc::from(job),
            table,
            plan: Arc::new(plan),
            _db: PhantomData,
        })
    }

    /// The same job's dead letters in another table (name and schema validated by
    /// [`TableName`] and always quoted).
    ///
    /// ```
    /// use weir_sql::{DeadLetters, TableName};
    /// let dlq = DeadLetters::<sqlx::Postgres>::new("orders-to-db")?
    ///     .with_table(TableName::new("orders_dlq")?.with_schema("ops")?)?;
    /// assert_eq!(dlq.table().to_string(), "ops.orders_dlq");
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn with_table(self, table: TableName) -> Result<Self> {
        Self::build(&self.job, table)
    }

    /// The table.
    ///
    /// ```
    /// use weir_sql::{DeadLetters, DialectKind};
    /// let dlq = DeadLetters::<sqlx::MySql>::new("job")?;
    /// assert_eq!(dlq.table().quoted(DialectKind::MySql), "`weir_dead_letters`");
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// Create the table (and schema) if missing; idempotent, and safe when several
    /// instances run it at the same moment (like
    /// [`OffsetStore::migrate`](crate::OffsetStore::migrate)).
    /// [`ExactlyOnceRunner::migrate`](crate::ExactlyOnceRunner::migrate) calls it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
    /// let dlq = weir_sql::DeadLetters::<sqlx::Sqlite>::new("orders-to-db")?;
    /// dlq.migrate(&pool).await?;
    /// dlq.migrate(&pool).await?;
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self, pool: &Pool<DB>) -> Result<()> {
        let k = DB::KIND;
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
        let cols = self
            .plan
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "{} {} {}",
                    c.name.quoted(k),
                    c.ty.sql_name(k, i < 4),
                    if c.nullable { "NULL" } else { "NOT NULL" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let key = self.plan.columns[..4]
            .iter()
            .map(|c| c.name.quoted(k))
            .collect::<Vec<_>>()
            .join(", ");
        let (ts, now) = match k {
            DialectKind::Postgres => ("TIMESTAMPTZ", DB::NOW.to_owned()),
            DialectKind::Sqlite => ("TEXT", format!("({})", DB::NOW)),
            DialectKind::MySql => ("TIMESTAMP(6)", DB::NOW.to_owned()),
        };
        stmts.push(Arc::from(format!(
            "CREATE TABLE IF NOT EXISTS {} ({cols}, {} {ts} NOT NULL DEFAULT {now}, PRIMARY KEY ({key})){}",
            self.plan.table,
            crate::Ident::new("at")?.quoted(k),
            if k == DialectKind::MySql { " ENGINE=InnoDB" } else { "" }
        )));
        let during = "dead letters migrate";
        let mut conn = pool.acquire().await.map_err(|e| Error::db(during, e))?;
        crate::migrate::run_ddl::<DB>(&mut conn, during, &self.table, &stmts).await
    }

    /// Write these dead letters on the batch's open transaction (they become
    /// visible with the batch's offset advance, or not at all). Returns the rows
    /// written. The primary key `(job, topic, partition, offset)` refuses a record
    /// dead-lettered twice.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use weir_core::Record;
    /// use weir_sql::{DeadLetter, DeadLetters, Stage};
    ///
    /// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
    /// let dlq = DeadLetters::<sqlx::Sqlite>::new("orders-to-db")?;
    /// dlq.migrate(&pool).await?;
    /// let letters: Vec<DeadLetter> = (3..5)
    ///     .map(|off| DeadLetter::new(Record::new("orders", 1, off, None, None), Stage::Sink, "too long"))
    ///     .collect();
    /// let mut tx = pool.begin().await?;
    /// assert_eq!(dlq.write(&mut tx, &letters).await?, 2);
    /// tx.rollback().await?; // rolled back with the batch: nothing stored
    /// # Ok(()) }
    /// ```
    pub async fn write(&self, conn: &mut DB::Connection, letters: &[DeadLetter]) -> Result<u64> {
        if letters.is_empty() {
            return Ok(0);
        }
        let headers: Vec<Option<String>> = letters
            .iter()
            .map(|d| {
                if d.record.headers.is_empty() {
                    return None;
                }
                let v: Vec<serde_json::Value> = d
                    .record
                    .headers
                    .iter()
                    .map(|h| {
                        serde_json::json!({
                            "key": h.key,
                            "value_hex": h.value.as_ref().map(|v| hex_string(v)),
                        })
                    })
                    .collect();
                Some(serde_json::Value::Array(v).to_string())
            })
            .collect();
        let mut values = Vec::with_capacity(letters.len() * 9);
        for (d, h) in letters.iter().zip(&headers) {
            values.extend_from_slice(&[
                Value::Text(&self.job),
                Value::Text(&d.record.topic),
                Value::Int(d.record.partition),
                Value::BigInt(d.record.offset),
                d.record
                    .key
                    .as_deref()
                    .map_or(Value::Null(ColumnType::Bytes), Value::Bytes),
                d.record
                    .value
                    .as_deref()
                    .map_or(Value::Null(ColumnType::Bytes), Value::Bytes),
                h.as_deref()
                    .map_or(Value::Null(ColumnType::Text), Value::Text),
                Value::Text(&d.error),
                Value::Text(d.stage.as_str()),
            ]);
        }
        let n = DB::bulk_write(conn, &self.plan, &values)
            .await
            .map_err(|e| Error::db("dead letters write", e))?;
        crate::failpoint::hit("during_dlq_write");
        Ok(n)
    }
}

fn hex_string(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(char::from(HEX[usize::from(x >> 4)]));
        s.push(char::from(HEX[usize::from(x & 15)]));
    }
    s
}

impl<DB: Dialect> Clone for DeadLetters<DB> {
    fn clone(&self) -> Self {
        Self {
            job: self.job.clone(),
            table: self.table.clone(),
            plan: self.plan.clone(),
            _db: PhantomData,
        }
    }
}
