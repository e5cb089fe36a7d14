//! Operating on a job's tables from outside the job (the `weir` CLI's database side):
//! list and reset offsets, list dead letters and record their replays.
//!
//! [`Admin`] connects by URL (`postgres://`, `sqlite:`, `mysql://` or `mariadb://`)
//! and speaks each dialect's SQL itself. An offsets reset runs in one transaction that
//! locks the rows, sets `next_offset` **and bumps `epoch`**: a job holding a partition
//! keeps its old epoch, so its next compare-and-set affects no row and it stops that
//! partition (fenced) instead of overwriting the reset; when it claims again it reads
//! the new offset.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use weir_core::TopicPartition;
//! use weir_sql::admin::{Admin, NewOffset};
//! use weir_sql::OffsetStore;
//!
//! let dir = tempfile::tempdir()?;
//! let url = format!("sqlite:{}", dir.path().join("db.sqlite").display());
//! let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
//! let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true)).await?;
//! let store = OffsetStore::<sqlx::Sqlite>::new("orders-to-db")?;
//! store.migrate(&pool).await?;
//! let tp = TopicPartition::new("orders", 0);
//! let epoch = store.claim(&pool, &[tp.clone()], "worker-1").await?[&tp].epoch;
//!
//! let admin = Admin::connect(&url).await?;
//! let done = admin
//!     .reset_offsets("orders-to-db", "orders", "weir-cli", |_rows| {
//!         Ok::<_, String>(vec![NewOffset { partition: 0, next_offset: 5 }])
//!     })
//!     .await??;
//! assert_eq!(done[0].epoch, epoch + 1);
//!
//! // The worker still holds the old epoch: its next commit is refused.
//! let mut tx = pool.begin().await?;
//! assert!(!store.advance(&mut tx, &tp, epoch, None, 10).await?);
//! # Ok(()) }
//! ```

use std::str::FromStr;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Row as _};

use crate::{DialectKind, Error, Ident, Result, TableName};

/// A pool of one of the dialects weir supports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AdminPool {
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    /// MySQL or MariaDB.
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
}

/// Runs `$body` with `$pool` bound to the typed pool, `$kind` to its
/// [`DialectKind`] and `$begin` to the statement that opens a write transaction.
macro_rules! with_pool {
    ($db:expr, |$pool:ident, $kind:ident, $begin:ident| $body:block) => {
        match $db {
            #[cfg(feature = "postgres")]
            AdminPool::Postgres($pool) => {
                let $kind = DialectKind::Postgres;
                let $begin = "BEGIN";
                $body
            }
            #[cfg(feature = "sqlite")]
            AdminPool::Sqlite($pool) => {
                let $kind = DialectKind::Sqlite;
                let $begin = "BEGIN IMMEDIATE";
                $body
            }
            #[cfg(feature = "mysql")]
            AdminPool::MySql($pool) => {
                let $kind = DialectKind::MySql;
                let $begin = "BEGIN";
                $body
            }
        }
    };
}

/// One row of the offsets table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetRow {
    /// The job.
    pub job: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Where the job resumes; `None` if it claimed the partition but never committed.
    pub next_offset: Option<i64>,
    /// The claim epoch; every commit presents it.
    pub epoch: i64,
    /// Who holds the epoch.
    pub owner: Option<String>,
    /// The last claim, commit or reset, as the database prints it.
    pub updated_at: Option<String>,
}

/// A new position for one partition, for [`Admin::reset_offsets`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewOffset {
    /// Partition.
    pub partition: i32,
    /// The next offset the job will process.
    pub next_offset: i64,
}

/// What a reset did to one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetRow {
    /// Partition.
    pub partition: i32,
    /// The stored offset before (`None`: never committed or no row).
    pub before: Option<i64>,
    /// The stored offset now.
    pub after: i64,
    /// The new epoch (the old one plus one; 1 for a new row).
    pub epoch: i64,
}

/// One dead letter, with its replay if there was one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterRow {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// The record's key.
    pub key: Option<Vec<u8>>,
    /// The record's value.
    pub value: Option<Vec<u8>>,
    /// Headers as stored (a JSON array of `{"key", "value_hex"}`).
    pub headers: Option<String>,
    /// Why it failed.
    pub error: String,
    /// Where it failed (`decode`, `sink`, `transform`).
    pub stage: String,
    /// When it was dead-lettered.
    pub at: Option<String>,
    /// Its replay, if one was started.
    pub replay: Option<Replay>,
}

/// A replay of a dead letter into a topic, as recorded in the replays table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// Target topic.
    pub target_topic: String,
    /// Target partition.
    pub target_partition: i32,
    /// The target partition's end offset when the replay was recorded: the appended
    /// copy, if any, is at or after it.
    pub scan_from: i64,
    /// The offset of the appended copy; `None` while the replay is pending (recorded,
    /// the append not confirmed).
    pub target_offset: Option<i64>,
    /// When it was recorded or confirmed.
    pub replayed_at: Option<String>,
}

/// Connects to a database by URL and works on weir's tables in it.
#[derive(Debug, Clone)]
pub struct Admin {
    pool: AdminPool,
    offsets: TableName,
    dead_letters: TableName,
    replays: TableName,
}

/// `url` with any password replaced by `***` (`postgres://u:***@host/db`), also in
/// query parameters whose name holds `password`, `secret` or `token`
/// (`?password=***`), for messages.
///
/// ```
/// use weir_sql::admin::redact_url;
/// assert_eq!(redact_url("postgres://app@db/x?password=s3cret&sslmode=require"), "postgres://app@db/x?password=***&sslmode=require");
/// assert_eq!(redact_url("postgres://app:s3cret@db:5432/x"), "postgres://app:***@db:5432/x");
/// assert_eq!(redact_url("mysql://root@127.0.0.1/test"), "mysql://root@127.0.0.1/test");
/// assert_eq!(redact_url("sqlite:/tmp/a.db"), "sqlite:/tmp/a.db");
/// ```
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = redact_userinfo(base);
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _))
                    if ["password", "secret", "token"]
                        .iter()
                        .any(|w| k.to_ascii_lowercase().contains(w)) =>
                {
                    format!("{k}=***")
                }
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let redacted = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => return url.to_owned(),
    };
    format!("{}{redacted}{}", &url[..scheme_end + 3], &rest[at..])
}

fn col(kind: DialectKind, name: &str) -> Result<String> {
    Ok(Ident::new(name)?.quoted(kind))
}

/// The placeholder for the `n`th parameter (bound in order, each once).
fn ph(kind: DialectKind, n: usize) -> String {
    match kind {
        DialectKind::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}

fn as_text(kind: DialectKind, column: &str) -> String {
    match kind {
        DialectKind::MySql => format!("CAST({column} AS CHAR)"),
        DialectKind::Postgres => format!("CAST({column} AS TEXT)"),
        DialectKind::Sqlite => column.to_owned(),
    }
}

fn now(kind: DialectKind) -> &'static str {
    match kind {
        DialectKind::Postgres => "now()",
        DialectKind::Sqlite => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        DialectKind::MySql => "CURRENT_TIMESTAMP(6)",
    }
}

/// Whether a database error means "no such table".
fn is_missing_table(e: &sqlx::Error) -> bool {
    let Some(db) = e.as_database_error() else {
        return false;
    };
    let code = db.code();
    matches!(
        code.as_deref(),
        Some("42P01") | Some("1146") | Some("42S02")
    ) || db.message().contains("no such table")
}

impl Admin {
    /// Connects to `url`: `postgres://` / `postgresql://`, `sqlite:` (an existing
    /// database file; never created), `mysql://` or `mariadb://`. Fails within about
    /// 10 s on an unreachable server (sqlx retries refused connections until then).
    pub async fn connect(url: &str) -> Result<Admin> {
        Self::connect_timeout(url, Duration::from_secs(10)).await
    }

    /// [`Admin::connect`], giving up on an unreachable server after `timeout`.
    pub async fn connect_timeout(url: &str, timeout: Duration) -> Result<Admin> {
        let during = "connect";
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            #[cfg(feature = "postgres")]
            {
                let options = sqlx::postgres::PgConnectOptions::from_str(url)
                    .map_err(|e| Error::db(during, e))?;
                AdminPool::Postgres(
                    sqlx::postgres::PgPoolOptions::new()
                        .max_connections(2)
                        .acquire_timeout(timeout)
                        .connect_with(options)
                        .await
                        .map_err(|e| Error::db(during, e))?,
                )
            }
            #[cfg(not(feature = "postgres"))]
            return Err(unsupported(url, "postgres"));
        } else if url.starts_with("sqlite:") {
            #[cfg(feature = "sqlite")]
            {
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                    .map_err(|e| Error::db(during, e))?
                    .create_if_missing(false)
                    .busy_timeout(Duration::from_secs(5));
                AdminPool::Sqlite(
                    sqlx::sqlite::SqlitePoolOptions::new()
                        .max_connections(1)
                        .acquire_timeout(timeout)
                        .connect_with(options)
                        .await
                        .map_err(|e| Error::db(during, e))?,
                )
            }
            #[cfg(not(feature = "sqlite"))]
            return Err(unsupported(url, "sqlite"));
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            #[cfg(feature = "mysql")]
            {
                let url = url.replacen("mariadb://", "mysql://", 1);
                let options = sqlx::mysql::MySqlConnectOptions::from_str(&url)
                    .map_err(|e| Error::db(during, e))?;
                AdminPool::MySql(
                    sqlx::mysql::MySqlPoolOptions::new()
                        .max_connections(2)
                        .acquire_timeout(timeout)
                        .connect_with(options)
                        .await
                        .map_err(|e| Error::db(during, e))?,
                )
            }
            #[cfg(not(feature = "mysql"))]
            return Err(unsupported(url, "mysql"));
        } else {
            return Err(Error::Setting {
                setting: "database URL",
                reason: format!(
                    "`{}`: expected postgres://, sqlite:, mysql:// or mariadb://",
                    redact_url(url)
                ),
            });
        };
        Ok(Admin {
            pool,
            offsets: TableName::new("weir_offsets")?,
            dead_letters: TableName::new("weir_dead_letters")?,
            replays: TableName::new("weir_dead_letter_replays")?,
        })
    }

    /// Works on this offsets table instead of `weir_offsets`.
    pub fn with_offsets_table(mut self, table: TableName) -> Self {
        self.offsets = table;
        self
    }

    /// Works on this dead-letter table instead of `weir_dead_letters`.
    pub fn with_dead_letters_table(mut self, table: TableName) -> Self {
        self.dead_letters = table;
        self
    }

    /// Records replays in this table instead of `weir_dead_letter_replays`.
    pub fn with_replays_table(mut self, table: TableName) -> Self {
        self.replays = table;
        self
    }

    /// The pool.
    pub fn pool(&self) -> &AdminPool {
        &self.pool
    }

    /// The offsets table's rows, of one job or of all, by job, topic and partition.
    /// A missing table is [`Error::Schema`].
    pub async fn offsets(&self, job: Option<&str>) -> Result<Vec<OffsetRow>> {
        with_pool!(&self.pool, |pool, kind, _begin| {
            let sql = self.offsets_select(kind, job.is_some(), None, false)?;
            let mut q = sqlx::query(AssertSqlSafe(sql));
            if let Some(job) = job {
                q = q.bind(job.to_owned());
            }
            let rows = q
                .fetch_all(pool)
                .await
                .map_err(|e| self.table_error(e, &self.offsets, "offsets read"))?;
            rows.iter().map(offset_row).collect()
        })
    }

    /// `SELECT job, topic, partition, next_offset, epoch, owner, updated_at` with
    /// optional `job = ?` and `topic = ?` filters, optionally `FOR UPDATE`.
    fn offsets_select(
        &self,
        kind: DialectKind,
        by_job: bool,
        by_topic: Option<()>,
        for_update: bool,
    ) -> Result<String> {
        let t = self.offsets.quoted(kind);
        let (job, topic, part) = (
            col(kind, "job")?,
            col(kind, "topic")?,
            col(kind, "partition")?,
        );
        let mut sql = format!(
            "SELECT {job}, {topic}, {part}, {}, {}, {}, {} FROM {t}",
            col(kind, "next_offset")?,
            col(kind, "epoch")?,
            col(kind, "owner")?,
            as_text(kind, &col(kind, "updated_at")?),
        );
        let mut n = 0;
        let mut conds = Vec::new();
        if by_job {
            n += 1;
            conds.push(format!("{job} = {}", ph(kind, n)));
        }
        if by_topic.is_some() {
            n += 1;
            conds.push(format!("{topic} = {}", ph(kind, n)));
        }
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY {job}, {topic}, {part}"));
        if for_update && kind != DialectKind::Sqlite {
            sql.push_str(" FOR UPDATE");
        }
        Ok(sql)
    }

    fn table_error(&self, e: sqlx::Error, table: &TableName, during: &'static str) -> Error {
        if is_missing_table(&e) {
            Error::Schema {
                table: table.to_string(),
                reason: "the table does not exist in this database (has a job run here? \
                         is this the database the job writes to?)"
                    .into(),
            }
        } else {
            Error::db(during, e)
        }
    }

    /// Resets `job`'s offsets on `topic` in one transaction: locks the topic's rows
    /// (SQLite: `BEGIN IMMEDIATE`), calls `plan` with them (the positions it returns
    /// are computed from what is stored at that moment), then for each new position
    /// sets `next_offset`, bumps `epoch` and sets `owner` (a partition without a row
    /// gets one, epoch 1), and commits.
    ///
    /// The bumped epoch fences a running job: its next compare-and-set on the
    /// partition affects no row, so it stops the partition without writing, and
    /// resumes from the new offset when it claims the partition again.
    ///
    /// `Ok(Err(e))`: `plan` refused, nothing changed.
    pub async fn reset_offsets<E>(
        &self,
        job: &str,
        topic: &str,
        owner: &str,
        plan: impl FnOnce(&[OffsetRow]) -> std::result::Result<Vec<NewOffset>, E>,
    ) -> Result<std::result::Result<Vec<ResetRow>, E>> {
        let during = "offsets reset";
        with_pool!(&self.pool, |pool, kind, begin| {
            let mut conn = pool.acquire().await.map_err(|e| Error::db(during, e))?;
            let mut tx = sqlx::Connection::begin_with(&mut *conn, AssertSqlSafe(begin))
                .await
                .map_err(|e| Error::db(during, e))?;
            // A row lock held by a stuck transaction (a paused zombie) makes the
            // reset fail after 10 s instead of waiting for ever.
            let bound = match kind {
                DialectKind::Postgres => Some("SET LOCAL lock_timeout = '10s'"),
                DialectKind::MySql => Some("SET SESSION innodb_lock_wait_timeout = 10"),
                DialectKind::Sqlite => None,
            };
            if let Some(sql) = bound {
                sqlx::query(sql)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| Error::db(during, e))?;
            }
            let select = self.offsets_select(kind, true, Some(()), true)?;
            let rows = sqlx::query(AssertSqlSafe(select))
                .bind(job.to_owned())
                .bind(topic.to_owned())
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| self.table_error(e, &self.offsets, during))?;
            let rows: Vec<OffsetRow> = rows.iter().map(offset_row).collect::<Result<_>>()?;
            let new = match plan(&rows) {
                Ok(n) => n,
                Err(e) => {
                    tx.rollback().await.map_err(|e| Error::db(during, e))?;
                    return Ok(Err(e));
                }
            };
            let t = self.offsets.quoted(kind);
            let (c_job, c_topic, c_part, c_next, c_epoch, c_owner, c_at) = (
                col(kind, "job")?,
                col(kind, "topic")?,
                col(kind, "partition")?,
                col(kind, "next_offset")?,
                col(kind, "epoch")?,
                col(kind, "owner")?,
                col(kind, "updated_at")?,
            );
            let update = format!(
                "UPDATE {t} SET {c_next} = {}, {c_epoch} = {c_epoch} + 1, {c_owner} = {}, {c_at} = {} \
                 WHERE {c_job} = {} AND {c_topic} = {} AND {c_part} = {} AND {c_epoch} = {}",
                ph(kind, 1),
                ph(kind, 2),
                now(kind),
                ph(kind, 3),
                ph(kind, 4),
                ph(kind, 5),
                ph(kind, 6),
            );
            let insert = format!(
                "INSERT INTO {t} ({c_job}, {c_topic}, {c_part}, {c_next}, {c_epoch}, {c_owner}, {c_at}) \
                 VALUES ({}, {}, {}, {}, 1, {}, {})",
                ph(kind, 1),
                ph(kind, 2),
                ph(kind, 3),
                ph(kind, 4),
                ph(kind, 5),
                now(kind),
            );
            let mut out = Vec::with_capacity(new.len());
            for n in &new {
                let before = rows.iter().find(|r| r.partition == n.partition);
                let (affected, epoch) = match before {
                    Some(row) => (
                        sqlx::query(AssertSqlSafe(update.clone()))
                            .bind(n.next_offset)
                            .bind(owner.to_owned())
                            .bind(job.to_owned())
                            .bind(topic.to_owned())
                            .bind(n.partition)
                            .bind(row.epoch)
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| Error::db(during, e))?
                            .rows_affected(),
                        row.epoch + 1,
                    ),
                    None => (
                        sqlx::query(AssertSqlSafe(insert.clone()))
                            .bind(job.to_owned())
                            .bind(topic.to_owned())
                            .bind(n.partition)
                            .bind(n.next_offset)
                            .bind(owner.to_owned())
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| Error::db(during, e))?
                            .rows_affected(),
                        1,
                    ),
                };
                if affected != 1 {
                    return Err(Error::Fenced {
                        partition: weir_core::TopicPartition::new(topic, n.partition),
                        detail: "the offsets row changed during the reset; nothing was changed, run it again".into(),
                    });
                }
                out.push(ResetRow {
                    partition: n.partition,
                    before: before.and_then(|r| r.next_offset),
                    after: n.next_offset,
                    epoch,
                });
            }
            tx.commit().await.map_err(|e| Error::db(during, e))?;
            Ok(Ok(out))
        })
    }

    /// Creates the replays table if it does not exist (idempotent).
    pub async fn migrate_replays(&self) -> Result<()> {
        with_pool!(&self.pool, |pool, kind, _begin| {
            let (key_text, int, big, ts) = match kind {
                DialectKind::Postgres => ("TEXT", "INTEGER", "BIGINT", "TIMESTAMPTZ"),
                DialectKind::Sqlite => ("TEXT", "INTEGER", "INTEGER", "TEXT"),
                DialectKind::MySql => ("VARCHAR(255)", "INT", "BIGINT", "TIMESTAMP(6)"),
            };
            let default_now = match kind {
                DialectKind::Sqlite => format!("({})", now(kind)),
                _ => now(kind).to_owned(),
            };
            let c = |n: &str| col(kind, n);
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} ({} {key_text} NOT NULL, {} {key_text} NOT NULL, \
                 {} {int} NOT NULL, {} {big} NOT NULL, {} {key_text} NOT NULL, {} {int} NOT NULL, \
                 {} {big} NOT NULL, {} {big} NULL, {} {ts} NOT NULL DEFAULT {default_now}, \
                 PRIMARY KEY ({}, {}, {}, {})){}",
                self.replays.quoted(kind),
                c("job")?,
                c("topic")?,
                c("partition")?,
                c("offset")?,
                c("target_topic")?,
                c("target_partition")?,
                c("scan_from")?,
                c("target_offset")?,
                c("replayed_at")?,
                c("job")?,
                c("topic")?,
                c("partition")?,
                c("offset")?,
                if kind == DialectKind::MySql {
                    " ENGINE=InnoDB"
                } else {
                    ""
                },
            );
            sqlx::query(AssertSqlSafe(sql))
                .execute(pool)
                .await
                .map_err(|e| Error::db("replays migrate", e))?;
            Ok(())
        })
    }

    /// `job`'s dead letters (optionally of one topic), by topic, partition and offset,
    /// each with its replay if the replays table exists (nothing is created).
    pub async fn dead_letters(&self, job: &str, topic: Option<&str>) -> Result<Vec<DeadLetterRow>> {
        with_pool!(&self.pool, |pool, kind, _begin| {
            let d = self.dead_letters.quoted(kind);
            let r = self.replays.quoted(kind);
            let c = |n: &str| col(kind, n);
            let (job_c, topic_c, part_c, off_c) =
                (c("job")?, c("topic")?, c("partition")?, c("offset")?);
            // Without a replays table (nothing was ever replayed) there is nothing to
            // join: reading dead letters creates no table.
            let probe = format!("SELECT 1 FROM {r} WHERE 1 = 0");
            let replays_exist = match sqlx::query(AssertSqlSafe(probe)).fetch_all(pool).await {
                Ok(_) => true,
                Err(e) if is_missing_table(&e) => false,
                Err(e) => return Err(Error::db("dead letters read", e)),
            };
            let (replay_cols, join) = if replays_exist {
                (
                    format!(
                        "r.{}, r.{}, r.{}, r.{}, {}",
                        c("target_topic")?,
                        c("target_partition")?,
                        c("scan_from")?,
                        c("target_offset")?,
                        as_text(kind, &format!("r.{}", c("replayed_at")?)),
                    ),
                    format!(
                        " LEFT JOIN {r} r ON r.{job_c} = d.{job_c} AND r.{topic_c} = d.{topic_c} \
                         AND r.{part_c} = d.{part_c} AND r.{off_c} = d.{off_c}"
                    ),
                )
            } else {
                let null = as_text(kind, "NULL");
                (format!("{null}, NULL, NULL, NULL, {null}"), String::new())
            };
            let mut sql = format!(
                "SELECT d.{topic_c}, d.{part_c}, d.{off_c}, d.{}, d.{}, d.{}, d.{}, d.{}, {}, \
                 {replay_cols} FROM {d} d{join} WHERE d.{job_c} = {}",
                c("key")?,
                c("value")?,
                c("headers")?,
                c("error")?,
                c("stage")?,
                as_text(kind, &format!("d.{}", c("at")?)),
                ph(kind, 1),
            );
            if topic.is_some() {
                sql.push_str(&format!(" AND d.{topic_c} = {}", ph(kind, 2)));
            }
            sql.push_str(&format!(" ORDER BY d.{topic_c}, d.{part_c}, d.{off_c}"));
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(job.to_owned());
            if let Some(t) = topic {
                q = q.bind(t.to_owned());
            }
            let rows = q
                .fetch_all(pool)
                .await
                .map_err(|e| self.table_error(e, &self.dead_letters, "dead letters read"))?;
            let during = "dead letters read";
            rows.iter()
                .map(|row| {
                    let target: Option<String> =
                        row.try_get(9).map_err(|e| Error::db(during, e))?;
                    let replay = match target {
                        None => None,
                        Some(target_topic) => Some(Replay {
                            target_topic,
                            target_partition: row.try_get(10).map_err(|e| Error::db(during, e))?,
                            scan_from: row.try_get(11).map_err(|e| Error::db(during, e))?,
                            target_offset: row.try_get(12).map_err(|e| Error::db(during, e))?,
                            replayed_at: row.try_get(13).map_err(|e| Error::db(during, e))?,
                        }),
                    };
                    Ok(DeadLetterRow {
                        topic: row.try_get(0).map_err(|e| Error::db(during, e))?,
                        partition: row.try_get(1).map_err(|e| Error::db(during, e))?,
                        offset: row.try_get(2).map_err(|e| Error::db(during, e))?,
                        key: row.try_get(3).map_err(|e| Error::db(during, e))?,
                        value: row.try_get(4).map_err(|e| Error::db(during, e))?,
                        headers: row.try_get(5).map_err(|e| Error::db(during, e))?,
                        error: row.try_get(6).map_err(|e| Error::db(during, e))?,
                        stage: row.try_get(7).map_err(|e| Error::db(during, e))?,
                        at: row.try_get(8).map_err(|e| Error::db(during, e))?,
                        replay,
                    })
                })
                .collect()
        })
    }

    /// Records pending replays (`target_offset` NULL) in one transaction, before
    /// anything is appended. The primary key refuses a dead letter recorded twice:
    /// then nothing is recorded ([`Error::Database`]).
    pub async fn record_replays(
        &self,
        job: &str,
        replays: &[(DeadLetterKey, Replay)],
    ) -> Result<()> {
        let during = "replays record";
        with_pool!(&self.pool, |pool, kind, begin| {
            let c = |n: &str| col(kind, n);
            let sql = format!(
                "INSERT INTO {} ({}, {}, {}, {}, {}, {}, {}, {}) VALUES ({}, {}, {}, {}, {}, {}, {}, NULL)",
                self.replays.quoted(kind),
                c("job")?,
                c("topic")?,
                c("partition")?,
                c("offset")?,
                c("target_topic")?,
                c("target_partition")?,
                c("scan_from")?,
                c("target_offset")?,
                ph(kind, 1),
                ph(kind, 2),
                ph(kind, 3),
                ph(kind, 4),
                ph(kind, 5),
                ph(kind, 6),
                ph(kind, 7),
            );
            let mut conn = pool.acquire().await.map_err(|e| Error::db(during, e))?;
            let mut tx = sqlx::Connection::begin_with(&mut *conn, AssertSqlSafe(begin))
                .await
                .map_err(|e| Error::db(during, e))?;
            for (k, r) in replays {
                sqlx::query(AssertSqlSafe(sql.clone()))
                    .bind(job.to_owned())
                    .bind(k.topic.clone())
                    .bind(k.partition)
                    .bind(k.offset)
                    .bind(r.target_topic.clone())
                    .bind(r.target_partition)
                    .bind(r.scan_from)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| Error::db(during, e))?;
            }
            tx.commit().await.map_err(|e| Error::db(during, e))?;
            Ok(())
        })
    }

    /// Confirms replays: sets `target_offset` (only where it is still NULL) in one
    /// transaction.
    pub async fn confirm_replays(&self, job: &str, done: &[(DeadLetterKey, i64)]) -> Result<()> {
        let during = "replays confirm";
        with_pool!(&self.pool, |pool, kind, begin| {
            let c = |n: &str| col(kind, n);
            let sql = format!(
                "UPDATE {} SET {} = {}, {} = {} WHERE {} = {} AND {} = {} AND {} = {} AND {} = {} AND {} IS NULL",
                self.replays.quoted(kind),
                c("target_offset")?,
                ph(kind, 1),
                c("replayed_at")?,
                now(kind),
                c("job")?,
                ph(kind, 2),
                c("topic")?,
                ph(kind, 3),
                c("partition")?,
                ph(kind, 4),
                c("offset")?,
                ph(kind, 5),
                c("target_offset")?,
            );
            let mut conn = pool.acquire().await.map_err(|e| Error::db(during, e))?;
            let mut tx = sqlx::Connection::begin_with(&mut *conn, AssertSqlSafe(begin))
                .await
                .map_err(|e| Error::db(during, e))?;
            for (k, offset) in done {
                sqlx::query(AssertSqlSafe(sql.clone()))
                    .bind(*offset)
                    .bind(job.to_owned())
                    .bind(k.topic.clone())
                    .bind(k.partition)
                    .bind(k.offset)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| Error::db(during, e))?;
            }
            tx.commit().await.map_err(|e| Error::db(during, e))?;
            Ok(())
        })
    }
}

/// Held while one replay of a job's dead letters runs
/// ([`Admin::lock_replays`]); released when dropped, and by the database (or the
/// operating system) when the process dies, so a crash never leaves it behind.
#[derive(Debug)]
pub struct ReplayLock {
    _held: Held,
}

#[derive(Debug)]
#[allow(dead_code)] // held for its drop only
enum Held {
    /// A session that holds `pg_advisory_lock` / `GET_LOCK`: closing it releases.
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgConnection),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlConnection),
    /// An exclusive lock on a file beside the SQLite database.
    #[cfg(feature = "sqlite")]
    File(nix::fcntl::Flock<std::fs::File>),
}

/// FNV-1a, 64 bits: a stable name for a lock (the same in every process and version).
fn lock_key(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

impl ReplayLock {
    /// Fails if the lock may have been lost: the session holding it no longer
    /// answers (a database lock goes with its session). Check before every step
    /// that must not overlap another replay.
    pub async fn check(&mut self) -> Result<()> {
        let during = "replays lock check";
        match &mut self._held {
            #[cfg(feature = "postgres")]
            Held::Postgres(conn) => sqlx::Connection::ping(conn)
                .await
                .map_err(|e| Error::db(during, e)),
            #[cfg(feature = "mysql")]
            Held::MySql(conn) => sqlx::Connection::ping(conn)
                .await
                .map_err(|e| Error::db(during, e)),
            #[cfg(feature = "sqlite")]
            Held::File(_) => Ok(()), // held by this process until it ends
        }
    }
}

impl Admin {
    /// Takes the lock that makes one replay of `job`'s dead letters (into the
    /// replays table this admin uses) exclusive across processes and hosts:
    /// PostgreSQL's `pg_try_advisory_lock`, MySQL/MariaDB's `GET_LOCK` (each held by a
    /// session of its own: not through a pooler in transaction mode), and for SQLite
    /// an exclusive lock on the file `<database>-weir-replay-<hash>.lock` beside it.
    /// `Ok(None)` if another replay holds it. `weir dead-letters replay` holds it,
    /// into any target, from before it reads the dead letters until it has confirmed
    /// the replays, and [`ReplayLock::check`]s it before every append.
    ///
    /// ```no_run
    /// # async fn f() -> weir_sql::Result<()> {
    /// let admin = weir_sql::admin::Admin::connect("postgres://postgres@127.0.0.1/test").await?;
    /// let Some(_lock) = admin.lock_replays("orders-to-db").await? else {
    ///     panic!("another replay of orders-to-db is running");
    /// };
    /// // … resolve, append, confirm …
    /// # Ok(()) }
    /// ```
    pub async fn lock_replays(&self, job: &str) -> Result<Option<ReplayLock>> {
        let during = "replays lock";
        let table = self.replays.to_string();
        let key = lock_key(&["weir-replay", &table, job]);
        let held = match &self.pool {
            #[cfg(feature = "postgres")]
            AdminPool::Postgres(pool) => {
                let mut conn = pool
                    .acquire()
                    .await
                    .map_err(|e| Error::db(during, e))?
                    .detach();
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(key as i64)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(|e| Error::db(during, e))?;
                got.then_some(Held::Postgres(conn))
            }
            #[cfg(feature = "mysql")]
            AdminPool::MySql(pool) => {
                let mut conn = pool
                    .acquire()
                    .await
                    .map_err(|e| Error::db(during, e))?
                    .detach();
                let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
                    .bind(format!("weir-replay-{key:016x}"))
                    .fetch_one(&mut conn)
                    .await
                    .map_err(|e| Error::db(during, e))?;
                (got == Some(1)).then_some(Held::MySql(conn))
            }
            #[cfg(feature = "sqlite")]
            AdminPool::Sqlite(pool) => {
                let db = pool.connect_options().get_filename().to_path_buf();
                let mut name = db.clone().into_os_string();
                name.push(format!("-weir-replay-{key:016x}.lock"));
                let path = std::path::PathBuf::from(name);
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::Sink {
                        sink: "replays lock".to_owned(),
                        message: format!("cannot open the lock file {}: {e}", path.display()),
                        retriable: false,
                    })?;
                match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                    Ok(lock) => Some(Held::File(lock)),
                    Err((_, nix::errno::Errno::EWOULDBLOCK)) => None,
                    Err((_, e)) => {
                        return Err(Error::Sink {
                            sink: "replays lock".to_owned(),
                            message: format!("cannot lock {}: {e}", path.display()),
                            retriable: false,
                        })
                    }
                }
            }
        };
        Ok(held.map(|h| ReplayLock { _held: h }))
    }
}

/// A dead letter's coordinates.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeadLetterKey {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
}

fn offset_row<R: sqlx::Row>(row: &R) -> Result<OffsetRow>
where
    usize: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let during = "offsets read";
    Ok(OffsetRow {
        job: row.try_get(0).map_err(|e| Error::db(during, e))?,
        topic: row.try_get(1).map_err(|e| Error::db(during, e))?,
        partition: row.try_get(2).map_err(|e| Error::db(during, e))?,
        next_offset: row.try_get(3).map_err(|e| Error::db(during, e))?,
        epoch: row.try_get(4).map_err(|e| Error::db(during, e))?,
        owner: row.try_get(5).map_err(|e| Error::db(during, e))?,
        updated_at: row.try_get(6).map_err(|e| Error::db(during, e))?,
    })
}

#[cfg(not(all(feature = "postgres", feature = "sqlite", feature = "mysql")))]
fn unsupported(url: &str, feature: &str) -> Error {
    Error::Setting {
        setting: "database URL",
        reason: format!(
            "`{}` needs weir-sql's feature `{feature}`, which this build lacks",
            redact_url(url)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_everything_but_the_password() {
        assert_eq!(
            redact_url("postgresql://u:p%40ss@h/db?sslmode=require"),
            "postgresql://u:***@h/db?sslmode=require"
        );
        assert_eq!(
            redact_url("mysql://a:b@c@host:3306/x"),
            "mysql://a:***@host:3306/x"
        );
        assert_eq!(redact_url("postgres://host/db"), "postgres://host/db");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn placeholders_follow_the_dialect() {
        assert_eq!(ph(DialectKind::Postgres, 3), "$3");
        assert_eq!(ph(DialectKind::MySql, 3), "?");
        assert_eq!(ph(DialectKind::Sqlite, 3), "?");
    }
}
