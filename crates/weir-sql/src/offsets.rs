//! The offsets table: who owns a partition (epoch) and where its processing stands.

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Pool};
use weir_core::TopicPartition;

use crate::dialect::Dialect;
use crate::{DialectKind, Error, Result, TableName, Value};

/// The longest job name stored (MySQL keys are `VARCHAR(255)`).
///
/// ```
/// use weir_sql::{OffsetStore, MAX_JOB_BYTES};
/// assert!(OffsetStore::<sqlx::Sqlite>::new(&"j".repeat(MAX_JOB_BYTES)).is_ok());
/// assert!(OffsetStore::<sqlx::Sqlite>::new(&"j".repeat(MAX_JOB_BYTES + 1)).is_err());
/// ```
pub const MAX_JOB_BYTES: usize = 255;

/// How long [`OffsetStore::claim`] waits for a row lock by default (see
/// [`OffsetStore::with_lock_timeout`]).
///
/// ```
/// use weir_sql::{OffsetStore, DEFAULT_CLAIM_LOCK_TIMEOUT};
/// let store = OffsetStore::<sqlx::Sqlite>::new("job")?;
/// assert_eq!(store.lock_timeout(), DEFAULT_CLAIM_LOCK_TIMEOUT);
/// # Ok::<(), weir_sql::Error>(())
/// ```
pub const DEFAULT_CLAIM_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// What a claim returned for one partition.
///
/// ```
/// let fresh = weir_sql::Claim { epoch: 1, next_offset: None };
/// assert!(fresh.next_offset.is_none()); // never committed: auto.offset.reset decides
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The epoch this owner now holds; every commit must present it.
    pub epoch: i64,
    /// Where processing resumes; `None` when nothing was ever committed (the consumer's
    /// `auto.offset.reset` decides).
    pub next_offset: Option<i64>,
}

/// A partition's event-time watermark, as [`OffsetStore::watermarks`] returns it.
///
/// ```
/// use weir_core::TopicPartition;
/// let w = weir_sql::PartitionWatermark { partition: TopicPartition::new("orders", 0), watermark: Some(60_000), active: true };
/// assert!(w.active);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionWatermark {
    /// The partition.
    pub partition: TopicPartition,
    /// Its watermark (milliseconds of event time); `None` before its first windowed
    /// commit.
    pub watermark: Option<i64>,
    /// Whether its row was claimed or committed within the idle timeout given to
    /// [`OffsetStore::watermarks`].
    pub active: bool,
}

/// One row of the offsets table, as [`OffsetStore::read`] returns it.
///
/// ```
/// let row = weir_sql::StoredOffset { next_offset: Some(42), epoch: 3, owner: Some("worker-2".into()) };
/// assert_eq!(row.next_offset, Some(42));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredOffset {
    /// The next offset to process; `None` before the first commit.
    pub next_offset: Option<i64>,
    /// The current owner's epoch.
    pub epoch: i64,
    /// The current owner's name.
    pub owner: Option<String>,
}

/// The offsets table of one job: `(job, topic, partition) → next_offset, epoch, owner,
/// updated_at`, in the database the results go to.
///
/// - [`claim`](Self::claim) on assignment: bumps the epoch and reads `next_offset` in
///   one statement (MySQL: an upsert and a `SELECT … FOR UPDATE` in one transaction).
/// - [`advance`](Self::advance) in every batch transaction: the compare-and-set
///   `UPDATE … SET next_offset = $next WHERE … AND epoch = $mine AND next_offset =
///   $expected`; anything but one row affected means the partition was fenced.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use weir_core::TopicPartition;
/// use weir_sql::{OffsetStore, TableName};
///
/// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
/// let store = OffsetStore::<sqlx::Sqlite>::new("orders-to-db")?
///     .with_table(TableName::new("weir_offsets")?)?;
/// store.migrate(&pool).await?;
/// let tp = TopicPartition::new("orders", 0);
/// let claims = store.claim(&pool, &[tp.clone()], "worker-1").await?;
/// assert_eq!(claims[&tp].next_offset, None); // never committed
///
/// let mut tx = pool.begin().await?;
/// assert!(store.advance(&mut tx, &tp, claims[&tp].epoch, None, 100).await?);
/// tx.commit().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct OffsetStore<DB: Dialect> {
    job: Arc<str>,
    table: TableName,
    lock_timeout: Duration,
    sql: Arc<OffsetSql>,
    _db: PhantomData<fn() -> DB>,
}

#[derive(Debug)]
struct OffsetSql {
    quoted: String,
    create: Vec<Arc<str>>,
    check: Arc<str>,
    migrate: Vec<Arc<str>>,
    claim: Arc<str>,
    claim_select: Arc<str>,
    advance: Arc<str>,
    read: Arc<str>,
    read_all: Arc<str>,
    watermark_advance: Arc<str>,
    watermarks: Arc<str>,
}

fn build_sql(kind: DialectKind, table: &TableName, now: &str) -> Result<OffsetSql> {
    let t = table.quoted(kind);
    let c = |name: &str| -> Result<String> { Ok(crate::Ident::new(name)?.quoted(kind)) };
    let (job, topic, part, next, epoch, owner, at) = (
        c("job")?,
        c("topic")?,
        c("partition")?,
        c("next_offset")?,
        c("epoch")?,
        c("owner")?,
        c("updated_at")?,
    );
    let wm = c("watermark")?;
    let (text_key, text, big, int, ts) = match kind {
        DialectKind::Postgres => ("TEXT", "TEXT", "BIGINT", "INTEGER", "TIMESTAMPTZ"),
        DialectKind::Sqlite => ("TEXT", "TEXT", "INTEGER", "INTEGER", "TEXT"),
        DialectKind::MySql => (
            "VARCHAR(255)",
            "VARCHAR(255)",
            "BIGINT",
            "INT",
            "TIMESTAMP(6)",
        ),
    };
    let p = |n: usize| match kind {
        DialectKind::Postgres => format!("${n}"),
        DialectKind::Sqlite => format!("?{n}"),
        DialectKind::MySql => "?".to_owned(),
    };
    let mut create = Vec::new();
    if let (Some(schema), DialectKind::Postgres | DialectKind::MySql) = (table.schema(), kind) {
        let kw = if kind == DialectKind::Postgres {
            "SCHEMA"
        } else {
            "DATABASE"
        };
        create.push(Arc::from(format!(
            "CREATE {kw} IF NOT EXISTS {}",
            schema.quoted(kind)
        )));
    }
    let engine = if kind == DialectKind::MySql {
        " ENGINE=InnoDB"
    } else {
        ""
    };
    create.push(Arc::from(format!(
        "CREATE TABLE IF NOT EXISTS {t} ({job} {text_key} NOT NULL, {topic} {text_key} NOT NULL, \
         {part} {int} NOT NULL, {next} {big} NULL, {epoch} {big} NOT NULL DEFAULT 0, \
         {owner} {text} NULL, {at} {ts} NOT NULL DEFAULT {default_now}, {wm} {big} NULL, \
         PRIMARY KEY ({job}, {topic}, {part})){engine}",
        default_now = match kind {
            DialectKind::Sqlite => format!("({now})"),
            _ => now.to_owned(),
        }
    )));
    let check = format!(
        "SELECT {job}, {topic}, {part}, {next}, {epoch}, {owner}, {at}, {wm} FROM {t} WHERE 1 = 0"
    );
    let migrate = vec![
        Arc::from(format!("ALTER TABLE {t} ADD COLUMN {owner} {text} NULL")),
        Arc::from(format!(
            "ALTER TABLE {t} ADD COLUMN {at} {ts} NULL{}",
            if kind == DialectKind::Sqlite {
                ""
            } else {
                " DEFAULT NULL"
            }
        )),
        Arc::from(format!("ALTER TABLE {t} ADD COLUMN {wm} {big} NULL")),
    ];
    let key_where = format!(
        "{job} = {} AND {topic} = {} AND {part} = {}",
        p(1),
        p(2),
        p(3)
    );
    let (claim, claim_select) = match kind {
        DialectKind::Postgres => (
            format!(
                "INSERT INTO {t} AS w ({job}, {topic}, {part}, {next}, {epoch}, {owner}, {at}) \
                 VALUES ($1, $2, $3, NULL, 1, $4, {now}) \
                 ON CONFLICT ({job}, {topic}, {part}) DO UPDATE SET {epoch} = w.{epoch} + 1, \
                 {owner} = excluded.{owner}, {at} = {now} RETURNING {epoch}, {next}"
            ),
            String::new(),
        ),
        DialectKind::Sqlite => (
            format!(
                "INSERT INTO {t} ({job}, {topic}, {part}, {next}, {epoch}, {owner}, {at}) \
                 VALUES (?1, ?2, ?3, NULL, 1, ?4, {now}) \
                 ON CONFLICT ({job}, {topic}, {part}) DO UPDATE SET {epoch} = {epoch} + 1, \
                 {owner} = excluded.{owner}, {at} = {now} RETURNING {epoch}, {next}"
            ),
            String::new(),
        ),
        DialectKind::MySql => (
            format!(
                "INSERT INTO {t} ({job}, {topic}, {part}, {next}, {epoch}, {owner}, {at}) \
                 VALUES (?, ?, ?, NULL, 1, ?, {now}) \
                 ON DUPLICATE KEY UPDATE {epoch} = {epoch} + 1, {owner} = VALUES({owner}), {at} = {now}"
            ),
            format!("SELECT {epoch}, {next} FROM {t} WHERE {key_where} FOR UPDATE"),
        ),
    };
    let same_next = match kind {
        DialectKind::Postgres => format!("{next} IS NOT DISTINCT FROM {}", p(6)),
        DialectKind::Sqlite => format!("{next} IS {}", p(6)),
        DialectKind::MySql => format!("{next} <=> ?"),
    };
    // Parameters: job, topic, partition, epoch, next, expected (MySQL binds in text
    // order: next, job, topic, partition, epoch, expected).
    let advance = match kind {
        DialectKind::MySql => format!(
            "UPDATE {t} SET {next} = ?, {at} = {now} WHERE {job} = ? AND {topic} = ? AND {part} = ? \
             AND {epoch} = ? AND {same_next}"
        ),
        _ => format!(
            "UPDATE {t} SET {next} = {}, {at} = {now} WHERE {key_where} AND {epoch} = {} AND {same_next}",
            p(5),
            p(4)
        ),
    };
    // Watermarks only move forward. Parameters: job, topic, partition, watermark
    // (MySQL binds in text order: watermark twice, job, topic, partition).
    let watermark_advance = match kind {
        DialectKind::MySql => format!(
            "UPDATE {t} SET {wm} = CASE WHEN {wm} IS NULL OR {wm} < ? THEN ? ELSE {wm} END \
             WHERE {job} = ? AND {topic} = ? AND {part} = ?"
        ),
        _ => format!(
            "UPDATE {t} SET {wm} = CASE WHEN {wm} IS NULL OR {wm} < {p4} THEN {p4} ELSE {wm} END \
             WHERE {key_where}",
            p4 = p(4)
        ),
    };
    // Rows of the job with their watermark and whether they were updated within the
    // idle timeout (parameter 2: PostgreSQL milliseconds, MySQL microseconds, SQLite
    // a `-N.NNN seconds` modifier), shaped as `fetch_offsets` rows: (topic,
    // partition, watermark, active 0/1, owner).
    let recent = match kind {
        DialectKind::Postgres => {
            format!("{at} >= now() - make_interval(secs => ($2::bigint)::float8 / 1000.0)")
        }
        DialectKind::MySql => format!("{at} >= CURRENT_TIMESTAMP(6) - INTERVAL ? MICROSECOND"),
        DialectKind::Sqlite => format!("{at} >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?2)"),
    };
    let watermarks = match kind {
        DialectKind::MySql => format!(
            "SELECT {topic}, {part}, {wm}, CAST(CASE WHEN {recent} THEN 1 ELSE 0 END AS SIGNED), {owner} \
             FROM {t} WHERE {job} = ? ORDER BY {topic}, {part}"
        ),
        _ => format!(
            "SELECT {topic}, {part}, {wm}, CAST(CASE WHEN {recent} THEN 1 ELSE 0 END AS BIGINT), {owner} \
             FROM {t} WHERE {job} = {} ORDER BY {topic}, {part}",
            p(1)
        ),
    };
    Ok(OffsetSql {
        watermark_advance: Arc::from(watermark_advance),
        watermarks: Arc::from(watermarks),
        quoted: t.clone(),
        create,
        check: Arc::from(check),
        migrate,
        claim: Arc::from(claim),
        claim_select: Arc::from(claim_select),
        advance: Arc::from(advance),
        read: Arc::from(format!(
            "SELECT {topic}, {part}, {next}, {epoch}, {owner} FROM {t} WHERE {key_where}"
        )),
        read_all: Arc::from(format!(
            "SELECT {topic}, {part}, {next}, {epoch}, {owner} FROM {t} WHERE {job} = {} ORDER BY {topic}, {part}",
            p(1)
        )),
    })
}

impl<DB: Dialect> OffsetStore<DB> {
    /// The offsets of job `job` in the table `weir_offsets`. The job name is the
    /// first key column: several jobs can share one table. It must be 1 to
    /// [`MAX_JOB_BYTES`] bytes without NUL.
    ///
    /// ```
    /// use weir_sql::OffsetStore;
    /// let store = OffsetStore::<sqlx::MySql>::new("orders-to-db")?;
    /// assert_eq!(store.table().to_string(), "weir_offsets");
    /// assert!(OffsetStore::<sqlx::MySql>::new("").is_err());
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn new(job: &str) -> Result<Self> {
        Self::with_table_name(job, TableName::new("weir_offsets")?)
    }

    fn with_table_name(job: &str, table: TableName) -> Result<Self> {
        if job.is_empty() || job.len() > MAX_JOB_BYTES || job.contains('\0') {
            return Err(Error::identifier(
                job,
                format!("a job name must be 1 to {MAX_JOB_BYTES} bytes without NUL"),
            ));
        }
        let sql = build_sql(DB::KIND, &table, DB::NOW)?;
        Ok(Self {
            job: Arc::from(job),
            table,
            lock_timeout: DEFAULT_CLAIM_LOCK_TIMEOUT,
            sql: Arc::new(sql),
            _db: PhantomData,
        })
    }

    /// The same job's offsets in another table (name and schema are validated by
    /// [`TableName`] and always quoted); the other settings are kept.
    ///
    /// Fails if the table's statements cannot be built (an [`Error::Identifier`]),
    /// like [`DeadLetters::with_table`](crate::DeadLetters::with_table).
    ///
    /// ```
    /// use weir_sql::{OffsetStore, TableName};
    /// let store = OffsetStore::<sqlx::Postgres>::new("orders-to-db")?
    ///     .with_table(TableName::new("offsets")?.with_schema("ops")?)?;
    /// assert_eq!(store.table().to_string(), "ops.offsets");
    /// assert_eq!(store.job(), "orders-to-db");
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn with_table(self, table: TableName) -> Result<Self> {
        let sql = build_sql(DB::KIND, &table, DB::NOW)?;
        Ok(Self {
            table,
            sql: Arc::new(sql),
            ..self
        })
    }

    /// How long [`claim`](Self::claim) waits for a row lock another transaction holds
    /// (default [`DEFAULT_CLAIM_LOCK_TIMEOUT`], 5 s) before failing with a retriable
    /// error instead of waiting for ever.
    ///
    /// A zombie owner stopped (SIGSTOP, GC pause) between its compare-and-set and its
    /// `COMMIT` keeps the offsets row locked; without a bound the new owner's claim
    /// would wait for it indefinitely (PostgreSQL's `lock_timeout` defaults to 0, off)
    /// or 50 s (InnoDB), inside the rebalance listener, and be evicted in turn. With
    /// it the claim fails, [`Error::is_retriable`] holds, and the runner pauses the
    /// unclaimed partitions and claims them again later; once the zombie's lock is
    /// gone the claim bumps the epoch and the zombie's commit affects no row.
    ///
    /// PostgreSQL: `SET LOCAL lock_timeout` in the claim's transaction (milliseconds,
    /// at least 1). MySQL/MariaDB: `SET SESSION innodb_lock_wait_timeout` on the
    /// claim's connection before each claim (whole seconds, at least 1; the setting
    /// stays on that pooled connection). SQLite: unused, the pool's `busy_timeout`
    /// bounds the wait.
    ///
    /// ```
    /// use std::time::Duration;
    /// let store = weir_sql::OffsetStore::<sqlx::Sqlite>::new("job")?
    ///     .with_lock_timeout(Duration::from_millis(300));
    /// assert_eq!(store.lock_timeout(), Duration::from_millis(300));
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn with_lock_timeout(self, timeout: Duration) -> Self {
        Self {
            lock_timeout: timeout,
            ..self
        }
    }

    /// The claim's lock wait bound (see [`with_lock_timeout`](Self::with_lock_timeout)).
    ///
    /// ```
    /// let store = weir_sql::OffsetStore::<sqlx::Postgres>::new("job")?;
    /// assert_eq!(store.lock_timeout(), weir_sql::DEFAULT_CLAIM_LOCK_TIMEOUT);
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// The statement bounding the claim's lock wait, if this dialect needs one.
    fn lock_timeout_sql(&self) -> Option<Arc<str>> {
        match DB::KIND {
            DialectKind::Postgres => {
                let ms = self.lock_timeout.as_millis().clamp(1, i32::MAX as u128);
                Some(Arc::from(format!("SET LOCAL lock_timeout = '{ms}ms'")))
            }
            DialectKind::MySql => {
                let secs = self
                    .lock_timeout
                    .as_secs_f64()
                    .ceil()
                    .clamp(1.0, 1_073_741_824.0);
                Some(Arc::from(format!(
                    "SET SESSION innodb_lock_wait_timeout = {secs:.0}"
                )))
            }
            DialectKind::Sqlite => None,
        }
    }

    /// The job name (the first key column).
    ///
    /// ```
    /// let store = weir_sql::OffsetStore::<sqlx::Sqlite>::new("orders-to-db")?;
    /// assert_eq!(store.job(), "orders-to-db");
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The table.
    ///
    /// ```
    /// use weir_sql::{DialectKind, OffsetStore, TableName};
    /// let store = OffsetStore::<sqlx::Postgres>::new("job")?
    ///     .with_table(TableName::new("offsets")?.with_schema("ops")?)?;
    /// assert_eq!(store.table().quoted(DialectKind::Postgres), "\"ops\".\"offsets\"");
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// Create the table (and schema) if missing, add columns older versions lacked,
    /// and check its shape. [`ExactlyOnceRunner::migrate`](crate::ExactlyOnceRunner::migrate)
    /// calls it.
    ///
    /// Safe when several instances run it at the same moment on a fresh database:
    /// on PostgreSQL the creation runs in one transaction behind a transaction-scoped
    /// advisory lock (`pg_advisory_xact_lock`), and on every dialect an error meaning
    /// "another session is creating it" (PostgreSQL 23505 on a catalog index, 42P07;
    /// MySQL 1050; `SQLITE_BUSY`) is retried briefly. The `ALTER`s that add missing
    /// columns run the same way; one that finds its column already added (by another
    /// instance) fails and is ignored, and the shape is checked after them.
    ///
    /// It first checks the settings of the connection it runs on (pooled connections
    /// are opened with the same options; one changed later by hand is not seen):
    ///
    /// - MySQL/MariaDB: `@@SESSION.sql_mode` must contain `STRICT_TRANS_TABLES` or
    ///   `STRICT_ALL_TABLES`. Without either the server stores a value too long for
    ///   its column cut short, with a mere warning: a silently corrupted row where
    ///   weir expects an error that sends the record to the dead letters. Such a
    ///   session fails with [`Error::Setting`] naming `sql_mode` and the fix (add
    ///   `STRICT_TRANS_TABLES` to the server's `sql_mode`, its default since MySQL
    ///   5.7 and MariaDB 10.2.4, or set it in the pool's `after_connect`), before
    ///   anything is created.
    /// - SQLite: if `PRAGMA journal_mode` is not `wal` (and the database is a file,
    ///   not an in-memory one, which cannot be) a warning is logged naming the fix,
    ///   `SqliteConnectOptions::journal_mode(SqliteJournalMode::Wal)`: in the
    ///   rollback-journal modes every commit waits for the readers and blocks them.
    ///   The migration goes on.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use weir_sql::OffsetStore;
    /// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
    /// let store = OffsetStore::<sqlx::Sqlite>::new("orders-to-db")?;
    /// store.migrate(&pool).await?;
    /// store.migrate(&pool).await?; // idempotent
    /// assert!(store.read_all(&pool).await?.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self, pool: &Pool<DB>) -> Result<()> {
        let mut conn = pool
            .acquire()
            .await
            .map_err(|e| Error::db("offsets migrate", e))?;
        check_connection::<DB>(&mut conn, "offsets migrate").await?;
        crate::migrate::run_ddl::<DB>(&mut conn, "offsets migrate", &self.table, &self.sql.create)
            .await?;
        if DB::execute(&mut conn, &self.sql.check, &[]).await.is_ok() {
            return Ok(());
        }
        for stmt in &self.sql.migrate {
            // A column that already exists makes its ALTER fail: fine (the check
            // below tells whether the table has the expected shape).
            let _ = crate::migrate::run_ddl::<DB>(
                &mut conn,
                "offsets migrate",
                &self.table,
                std::slice::from_ref(stmt),
            )
            .await;
        }
        DB::execute(&mut conn, &self.sql.check, &[])
            .await
            .map_err(|e| Error::Schema {
                table: self.sql.quoted.clone(),
                reason: format!("expected columns job, topic, partition, next_offset, epoch, owner, updated_at, watermark: {e}"),
            })?;
        Ok(())
    }

    fn key<'a>(&'a self, tp: &'a TopicPartition) -> [Value<'a>; 3] {
        [
            Value::Text(&self.job),
            Value::Text(tp.topic()),
            Value::Int(tp.partition()),
        ]
    }

    /// Claim these partitions for `owner` in one transaction: bump each epoch (creating
    /// missing rows with epoch 1 and no offset) and read where processing resumes.
    ///
    /// The rows are locked in sorted `(topic, partition)` order whatever the order of
    /// `partitions`, and a partition named twice is claimed once: two members claiming
    /// overlapping sets (a rebalance hands `[a, b]` to one and `[b, a]` to another)
    /// then wait for each other instead of deadlocking.
    ///
    /// A row lock held by another transaction is waited for at most
    /// [`lock_timeout`](Self::lock_timeout) (PostgreSQL, MySQL); the error is then
    /// retriable. [`ExactlyOnceListener`](crate::ExactlyOnceListener) calls this on
    /// every assignment.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use weir_core::TopicPartition;
    /// use weir_sql::{Claim, OffsetStore};
    ///
    /// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
    /// let store = OffsetStore::<sqlx::Sqlite>::new("orders-to-db")?;
    /// store.migrate(&pool).await?;
    /// let (p0, p1) = (TopicPartition::new("orders", 0), TopicPartition::new("orders", 1));
    /// let first = store.claim(&pool, &[p1.clone(), p0.clone()], "worker-1").await?;
    /// assert_eq!(first[&p0], Claim { epoch: 1, next_offset: None });
    ///
    /// // Another member takes p0 over: its epoch fences worker-1's commits.
    /// let second = store.claim(&pool, &[p0.clone()], "worker-2").await?;
    /// assert_eq!(second[&p0].epoch, 2);
    /// # Ok(()) }
    /// ```
    pub async fn claim(
        &self,
        pool: &Pool<DB>,
        partitions: &[TopicPartition],
        owner: &str,
    ) -> Result<BTreeMap<TopicPartition, Claim>> {
        let mut out = BTreeMap::new();
        // Sorted and without duplicates: every claimer takes the row locks in the
        // same order.
        let partitions: BTreeSet<&TopicPartition> = partitions.iter().collect();
        if partitions.is_empty() {
            return Ok(out);
        }
        let owner: String = owner.chars().filter(|c| *c != '\0').take(200).collect();
        let during = "offsets claim";
        let bound = self.lock_timeout_sql();
        let mut conn = pool.acquire().await.map_err(|e| Error::db(during, e))?;
        if let (Some(sql), DialectKind::MySql) = (&bound, DB::KIND) {
            // Session-scoped on a pooled connection: set before every claim.
            DB::execute(&mut conn, sql, &[])
                .await
                .map_err(|e| Error::db(during, e))?;
        }
        let mut tx = sqlx::Connection::begin_with(&mut *conn, AssertSqlSafe(DB::BEGIN))
            .await
            .map_err(|e| Error::db(during, e))?;
        if let (Some(sql), DialectKind::Postgres) = (&bound, DB::KIND) {
            DB::execute(&mut tx, sql, &[])
                .await
                .map_err(|e| Error::db(during, e))?;
        }
        for tp in partitions {
            let [j, t, p] = self.key(tp);
            let args = [j, t, p, Value::Text(&owner)];
            let row = if DB::KIND == DialectKind::MySql {
                DB::execute(&mut tx, &self.sql.claim, &args)
                    .await
                    .map_err(|e| Error::db(during, e))?;
                DB::fetch_claim(&mut tx, &self.sql.claim_select, &args[..3]).await
            } else {
                DB::fetch_claim(&mut tx, &self.sql.claim, &args).await
            }
            .map_err(|e| Error::db(during, e))?;
            let Some((epoch, next_offset)) = row else {
                return Err(Error::Schema {
                    table: self.sql.quoted.clone(),
                    reason: format!("claiming {tp} returned no row"),
                });
            };
            out.insert(tp.clone(), Claim { epoch, next_offset });
        }
        tx.commit().await.map_err(|e| Error::db(during, e))?;
        Ok(out)
    }

    /// The compare-and-set of every batch, on the batch's open transaction: set
    /// `tp`'s next offset to `next` if this owner still holds `epoch` and the stored
    /// offset is still `expected`. `Ok(false)`: fenced, roll the transaction back.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use weir_core::TopicPartition;
    /// use weir_sql::OffsetStore;
    ///
    /// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
    /// let store = OffsetStore::<sqlx::Sqlite>::new("orders-to-db")?;
    /// store.migrate(&pool).await?;
    /// let tp = TopicPartition::new("orders", 0);
    /// let epoch = store.claim(&pool, &[tp.clone()], "worker-1").await?[&tp].epoch;
    ///
    /// // The batch's rows are written on `tx`, then the offset moves on the same `tx`.
    /// let mut tx = pool.begin().await?;
    /// assert!(store.advance(&mut tx, &tp, epoch, None, 100).await?);
    /// tx.commit().await?;
    ///
    /// // A stale expectation (or a stale epoch) is refused: fenced.
    /// let mut tx = pool.begin().await?;
    /// assert!(!store.advance(&mut tx, &tp, epoch, None, 200).await?);
    /// tx.rollback().await?;
    /// # Ok(()) }
    /// ```
    pub async fn advance(
        &self,
        conn: &mut DB::Connection,
        tp: &TopicPartition,
        epoch: i64,
        expected: Option<i64>,
        next: i64,
    ) -> Result<bool> {
        let [j, t, p] = self.key(tp);
        let expected = match expected {
            Some(e) => Value::BigInt(e),
            None => Value::Null(crate::ColumnType::BigInt),
        };
        let args = match DB::KIND {
            DialectKind::MySql => [Value::BigInt(next), j, t, p, Value::BigInt(epoch), expected],
            _ => [j, t, p, Value::BigInt(epoch), Value::BigInt(next), expected],
        };
        let n = DB::execute(conn, &self.sql.advance, &args)
            .await
            .map_err(|e| Error::db("offsets advance", e))?;
        Ok(n == 1)
    }

    /// The stored row of one partition, on any connection or transaction (`None` if
    /// it was never claimed).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use weir_core::TopicPartition;
    /// use weir_sql::OffsetStore;
    ///
    /// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
    /// let store = OffsetStore::<sqlx::Sqlite>::new("orders-to-db")?;
    /// store.migrate(&pool).await?;
    /// let tp = TopicPartition::new("orders", 0);
    /// let mut conn = pool.acquire().await?;
    /// assert_eq!(store.read(&mut conn, &tp).await?, None);
    /// drop(conn);
    ///
    /// store.claim(&pool, &[tp.clone()], "worker-1").await?;
    /// let mut conn = pool.acquire().await?;
    /// let row = store.read(&mut conn, &tp).await?.ok_or("no row")?;
    /// assert_eq!((row.epoch, row.next_offset), (1, None));
    /// assert_eq!(row.owner.as_deref(), Some("worker-1"));
    /// # Ok(()) }
    /// ```
    pub async fn read(
        &self,
        conn: &mut DB::Connection,
        tp: &TopicPartition,
    ) -> Result<Option<StoredOffset>> {
        let args = self.key(tp);
        let rows = DB::fetch_offsets(conn, &self.sql.read, &args)
            .await
            .map_err(|e| Error::db("offsets read", e))?;
        Ok(rows
            .into_iter()
            .next()
            .map(|(_, _, next_offset, epoch, owner)| StoredOffset {
                next_offset,
                epoch,
                owner,
            }))
    }

    /// Every stored row of this job, by partition (other jobs' rows in the same
    /// table are left out).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use weir_core::TopicPartition;
    /// use weir_sql::OffsetStore;
    ///
    /// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
    /// let store = OffsetStore::<sqlx::Sqlite>::new("orders-to-db")?;
    /// store.migrate(&pool).await?;
    /// let parts: Vec<_> = (0..3).map(|p| TopicPartition::new("orders", p)).collect();
    /// store.claim(&pool, &parts, "worker-1").await?;
    ///
    /// let all = store.read_all(&pool).await?;
    /// assert_eq!(all.keys().cloned().collect::<Vec<_>>(), parts);
    /// assert!(OffsetStore::<sqlx::Sqlite>::new("other-job")?.read_all(&pool).await?.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn read_all(
        &self,
        pool: &Pool<DB>,
    ) -> Result<BTreeMap<TopicPartition, StoredOffset>> {
        let mut conn = pool
            .acquire()
            .await
            .map_err(|e| Error::db("offsets read", e))?;
        let rows = DB::fetch_offsets(&mut conn, &self.sql.read_all, &[Value::Text(&self.job)])
            .await
            .map_err(|e| Error::db("offsets read", e))?;
        Ok(rows
            .into_iter()
            .map(|(topic, partition, next_offset, epoch, owner)| {
                (
                    TopicPartition::new(topic, partition),
                    StoredOffset {
                        next_offset,
                        epoch,
                        owner,
                    },
                )
            })
            .collect())
    }

    /// Move the watermark of `tp` forward to `watermark` (never back), on the batch's
    /// transaction: it commits with the offsets it was computed from.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use weir_core::TopicPartition;
    /// use weir_sql::OffsetStore;
    ///
    /// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
    /// let store = OffsetStore::<sqlx::Sqlite>::new("revenue")?;
    /// store.migrate(&pool).await?;
    /// let tp = TopicPartition::new("orders", 0);
    /// store.claim(&pool, &[tp.clone()], "worker-1").await?;
    /// let mut conn = pool.acquire().await?;
    /// store.advance_watermark(&mut conn, &tp, 5_000).await?;
    /// store.advance_watermark(&mut conn, &tp, 3_000).await?; // never back
    /// let w = store.watermarks(&mut conn, Duration::from_secs(60)).await?;
    /// assert_eq!((w[0].watermark, w[0].active), (Some(5_000), true));
    /// # Ok(()) }
    /// ```
    pub async fn advance_watermark(
        &self,
        conn: &mut DB::Connection,
        tp: &TopicPartition,
        watermark: i64,
    ) -> Result<()> {
        let [j, t, p] = self.key(tp);
        let w = Value::BigInt(watermark);
        let args: Vec<Value<'_>> = match DB::KIND {
            DialectKind::MySql => vec![w, w, j, t, p],
            _ => vec![j, t, p, w],
        };
        DB::execute(conn, &self.sql.watermark_advance, &args)
            .await
            .map_err(|e| Error::db("watermark advance", e))?;
        Ok(())
    }

    /// The watermarks of every partition of this job, each marked active if its row
    /// was claimed or committed within `idle` (by the database's clock).
    ///
    /// See [`advance_watermark`](Self::advance_watermark) for an example.
    pub async fn watermarks(
        &self,
        conn: &mut DB::Connection,
        idle: Duration,
    ) -> Result<Vec<PartitionWatermark>> {
        let ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        let modifier;
        let args: Vec<Value<'_>> = match DB::KIND {
            DialectKind::Postgres => vec![Value::Text(&self.job), Value::BigInt(ms)],
            DialectKind::MySql => vec![
                Value::BigInt(ms.saturating_mul(1000)),
                Value::Text(&self.job),
            ],
            DialectKind::Sqlite => {
                modifier = format!("-{}.{:03} seconds", ms / 1000, ms % 1000);
                vec![Value::Text(&self.job), Value::Text(&modifier)]
            }
        };
        let rows = DB::fetch_offsets(conn, &self.sql.watermarks, &args)
            .await
            .map_err(|e| Error::db("watermarks read", e))?;
        Ok(rows
            .into_iter()
            .map(
                |(topic, partition, watermark, active, _)| PartitionWatermark {
                    partition: TopicPartition::new(topic, partition),
                    watermark,
                    active: active != 0,
                },
            )
            .collect())
    }
}

/// The per-dialect checks of [`OffsetStore::migrate`] on the connection it runs on.
#[cfg_attr(
    not(any(feature = "mysql", feature = "sqlite")),
    allow(unused_variables)
)]
async fn check_connection<DB: Dialect>(
    conn: &mut DB::Connection,
    during: &'static str,
) -> Result<()> {
    let conn: &mut (dyn std::any::Any + Send) = conn;
    #[cfg(feature = "mysql")]
    if let Some(my) = conn.downcast_mut::<sqlx::mysql::MySqlConnection>() {
        return crate::mysql::check_strict_mode(my, during).await;
    }
    #[cfg(feature = "sqlite")]
    if let Some(lite) = conn.downcast_mut::<sqlx::sqlite::SqliteConnection>() {
        return crate::sqlite::warn_unless_wal(lite, during).await;
    }
    Ok(())
}

impl<DB: Dialect> Clone for OffsetStore<DB> {
    fn clone(&self) -> Self {
        Self {
            job: self.job.clone(),
            table: self.table.clone(),
            lock_timeout: self.lock_timeout,
            sql: self.sql.clone(),
            _db: PhantomData,
        }
    }
}
