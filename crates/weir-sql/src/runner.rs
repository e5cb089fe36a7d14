//! The exactly-once driver: poll → decode → sink → commit, with fencing.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sqlx::{AssertSqlSafe, Pool, Transaction};
use weir_core::{Consumer, Offset, Record, Subscription, TopicPartition};

use crate::classify::{classify, ErrorClass};
use crate::dialect::Dialect;
use crate::ident::DialectKind;
use crate::listener::Ownership;
use crate::{
    DeadLetter, DeadLetters, Error, ExactlyOnceListener, Item, OffsetStore, Result, Stage,
    TransactionalSink,
};

/// Why a record could not be turned into output values.
///
/// ```
/// use weir_sql::Reject;
/// let r = Reject::permanent("bad magic byte 7");
/// assert!(!r.is_retriable());
/// assert!(Reject::transient("schema registry unreachable").is_retriable());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    message: String,
    transient: bool,
}

impl Reject {
    /// The record is bad: it goes to the dead letters.
    pub fn permanent(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            transient: false,
        }
    }

    /// Something outside the record failed (a registry, a lookup): the partition
    /// stops at this record and retries it after a pause.
    pub fn transient(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            transient: true,
        }
    }

    /// Whether this is a transient failure.
    #[deprecated(
        since = "0.1.0",
        note = "use `is_retriable()`: weir's one word for retryability"
    )]
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// Whether this is a transient failure (weir's one word for retryability; same
    /// as [`is_transient`](Self::is_transient)).
    /// ```
    /// assert!(weir_sql::Reject::transient("registry down").is_retriable());
    /// ```
    pub fn is_retriable(&self) -> bool {
        self.transient
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Counters of a runner, for logs and tests.
///
/// ```
/// let s = weir_sql::RunStats::default();
/// assert_eq!(s.fenced + s.seek_mismatches, 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunStats {
    /// Records taken from the consumer and processed.
    pub records: u64,
    /// Output values committed.
    pub rows: u64,
    /// Dead letters committed.
    pub dead_letters: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Claims made (assignments).
    pub claims: u64,
    /// Times a partition was found fenced.
    pub fenced: u64,
    /// Commits whose outcome was unknown (connection lost during `COMMIT`) and was
    /// resolved by re-reading the offsets row.
    pub unknown_outcomes: u64,
    /// Batches retried after a transient error.
    pub retries: u64,
    /// Batches in which a refused row was isolated.
    pub isolations: u64,
    /// Claims whose first processed record was not at the claimed `next_offset`
    /// (expected 0 on logs without offset gaps: the seek on assignment took effect).
    pub seek_mismatches: u64,
}

#[derive(Clone, Copy, Debug)]
struct PartPending {
    generation: u64,
    epoch: i64,
    expected: Option<i64>,
    next: i64,
}

#[derive(Debug)]
struct Group {
    record: Record,
    start: usize,
    end: usize,
}

struct Pending<T> {
    items: Vec<Item<T>>,
    groups: Vec<Group>,
    dead: Vec<DeadLetter>,
    parts: BTreeMap<TopicPartition, PartPending>,
    records: usize,
    since: Option<Instant>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            groups: Vec::new(),
            dead: Vec::new(),
            parts: BTreeMap::new(),
            records: 0,
            since: None,
        }
    }
}

impl<T> Pending<T> {
    fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Keep only partitions for which `keep` holds, and drop the groups whose index
    /// is in `reject` (returned as dead letters with their errors).
    fn retain(&mut self, keep: impl Fn(&TopicPartition) -> bool) {
        let dropped: Vec<TopicPartition> =
            self.parts.keys().filter(|tp| !keep(tp)).cloned().collect();
        if dropped.is_empty() {
            return;
        }
        let gone: HashSet<&TopicPartition> = dropped.iter().collect();
        let in_gone = |r: &Record| {
            gone.iter()
                .any(|tp| tp.partition() == r.partition && tp.topic() == &*r.topic)
        };
        let groups = std::mem::take(&mut self.groups);
        let mut items: Vec<Option<Item<T>>> = std::mem::take(&mut self.items)
            .into_iter()
            .map(Some)
            .collect();
        for g in groups {
            if in_gone(&g.record) {
                self.records = self.records.saturating_sub(1);
                continue;
            }
            let start = self.items.len();
            for slot in &mut items[g.start..g.end] {
                if let Some(it) = slot.take() {
                    self.items.push(it);
                }
            }
            self.groups.push(Group {
                record: g.record,
                start,
                end: self.items.len(),
            });
        }
        self.dead.retain(|d| !in_gone(&d.record));
        for tp in &dropped {
            self.parts.remove(tp);
        }
    }

    /// Move these groups to the dead letters.
    fn reject(&mut self, rejected: Vec<(usize, String)>) {
        if rejected.is_empty() {
            return;
        }
        let bad: BTreeMap<usize, String> = rejected.into_iter().collect();
        let groups = std::mem::take(&mut self.groups);
        let mut items: Vec<Option<Item<T>>> = std::mem::take(&mut self.items)
            .into_iter()
            .map(Some)
            .collect();
        for (i, g) in groups.into_iter().enumerate() {
            if let Some(err) = bad.get(&i) {
                self.dead.push(DeadLetter::new(g.record, Stage::Sink, err));
                continue;
            }
            let start = self.items.len();
            for slot in &mut items[g.start..g.end] {
                if let Some(it) = slot.take() {
                    self.items.push(it);
                }
            }
            self.groups.push(Group {
                record: g.record,
                start,
                end: self.items.len(),
            });
        }
    }
}

/// The state of an offsets row after a failed compare-and-set or an unknown commit.
enum Resolution {
    Committed,
    NotCommitted,
    Fenced(String),
}

/// Runs a job exactly once into a database: polls a [`Consumer`], turns each record into
/// values with a closure, writes them with a [`TransactionalSink`] and advances the
/// partitions' offsets, all in one transaction per batch, fenced by the claim epoch.
///
/// - Records whose closure returns [`Reject::permanent`] go to the [`DeadLetters`] in
///   the same transaction.
/// - Rows the database refuses (NUL byte in text, too long, out of range, constraint)
///   are isolated by bisecting the batch under savepoints; the bad record goes to the
///   dead letters and the rest commits once.
/// - A partition whose compare-and-set affects no row is fenced: its buffered records
///   are dropped, it is paused, and it stays so until claimed again.
/// - A lost connection during `COMMIT` is resolved by re-reading the offsets rows.
///
/// ```no_run
/// # async fn example(pool: sqlx::PgPool, mut consumer: Box<dyn weir_core::Consumer>) -> weir_sql::Result<()> {
/// use weir_core::Subscription;
/// use weir_sql::{impl_row, ExactlyOnceRunner, Reject, TableName, TableSink};
///
/// struct Order { id: i64, body: String }
/// impl_row!(Order { id, body });
///
/// let sink = TableSink::<sqlx::Postgres, Order>::new(TableName::new("orders")?)?;
/// let mut runner = ExactlyOnceRunner::new(pool, "orders-to-db", sink, |r: &weir_core::Record| {
///     let body = std::str::from_utf8(r.value.as_deref().unwrap_or_default())
///         .map_err(Reject::permanent)?;
///     Ok(vec![Order { id: r.offset, body: body.to_owned() }])
/// })?;
/// runner.migrate().await?;
/// let stats = runner.run(consumer.as_mut(), Subscription::topics(["orders"])).await?; // until wakeup
/// println!("{stats:?}");
/// # Ok(()) }
/// ```
pub struct ExactlyOnceRunner<DB, T, S, F>
where
    DB: Dialect,
    T: Send + Sync,
    S: TransactionalSink<DB, T>,
    F: FnMut(&Record) -> std::result::Result<Vec<T>, Reject> + Send,
{
    pool: Pool<DB>,
    store: OffsetStore<DB>,
    dead_letters: DeadLetters<DB>,
    sink: S,
    decode: F,
    owner: Arc<str>,
    state: Arc<Mutex<Ownership>>,
    pending: Pending<T>,
    /// Partitions sought back to their claimed offset: claim generation, the first
    /// offset delivered before that seek, and how many seeks so far.
    reseeked: std::collections::HashMap<TopicPartition, (u64, i64, u32)>,
    /// Partitions paused after a transient reject: when to resume, failures in a row.
    retry_at: std::collections::HashMap<TopicPartition, (Instant, u32)>,
    stats: RunStats,
    batch_records: usize,
    linger: Duration,
    poll_timeout: Duration,
    retry_for: Duration,
    reset: weir_core::AutoOffsetReset,
    idle_transaction_sql: Option<Arc<str>>,
    _t: PhantomData<fn() -> T>,
}

impl<DB, T, S, F> std::fmt::Debug for ExactlyOnceRunner<DB, T, S, F>
where
    DB: Dialect,
    T: Send + Sync,
    S: TransactionalSink<DB, T>,
    F: FnMut(&Record) -> std::result::Result<Vec<T>, Reject> + Send,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExactlyOnceRunner")
            .field("job", &self.store.job())
            .field("owner", &self.owner)
            .field("sink", &self.sink.name())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn default_owner() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "weir".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}-{}-{nanos:08x}", std::process::id())
}

/// The default of [`ExactlyOnceRunner::with_idle_transaction_timeout`]: 60 s.
pub const DEFAULT_IDLE_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

fn idle_transaction_sql<DB: Dialect>(timeout: Option<Duration>) -> Option<Arc<str>> {
    match (DB::KIND, timeout) {
        // zero means "never" for PostgreSQL too
        (DialectKind::Postgres, Some(t)) if !t.is_zero() => {
            let ms = t.as_millis().clamp(1, i32::MAX as u128);
            Some(Arc::from(format!(
                "SET LOCAL idle_in_transaction_session_timeout = '{ms}ms'"
            )))
        }
        _ => None,
    }
}

fn is_row_error(e: &Error) -> bool {
    matches!(e, Error::Database { source, .. } if classify(source) == ErrorClass::Row)
}

impl<DB, T, S, F> ExactlyOnceRunner<DB, T, S, F>
where
    DB: Dialect,
    T: Send + Sync,
    S: TransactionalSink<DB, T>,
    F: FnMut(&Record) -> std::result::Result<Vec<T>, Reject> + Send,
{
    /// A runner for job `job` (the key of its offsets rows) writing through `sink`,
    /// with offsets in `weir_offsets` and dead letters in `weir_dead_letters`.
    pub fn new(pool: Pool<DB>, job: &str, sink: S, decode: F) -> Result<Self> {
        Ok(Self {
            pool,
            store: OffsetStore::new(job)?,
            dead_letters: DeadLetters::new(job)?,
            sink,
            decode,
            owner: Arc::from(default_owner()),
            state: Arc::default(),
            pending: Pending::default(),
            stats: RunStats::default(),
            reseeked: std::collections::HashMap::new(),
            retry_at: std::collections::HashMap::new(),
            batch_records: 5000,
            linger: Duration::from_millis(200),
            poll_timeout: Duration::from_millis(100),
            retry_for: Duration::from_secs(60),
            reset: weir_core::AutoOffsetReset::Earliest,
            idle_transaction_sql: idle_transaction_sql::<DB>(Some(
                DEFAULT_IDLE_TRANSACTION_TIMEOUT,
            )),
            _t: PhantomData,
        })
    }

    /// Use this offsets store (e.g. another table).
    /// ```
    /// # use weir_sql::{impl_row, ExactlyOnceRunner, Reject, TableName, TableSink};
    /// # struct Row { n: i64 }
    /// # impl_row!(Row { n });
    /// # async fn example(pool: sqlx::SqlitePool) -> weir_sql::Result<()> {
    /// # let sink = TableSink::<sqlx::Sqlite, Row>::new(TableName::new("rows")?)?;
    /// # let decode = |r: &weir_core::Record| Ok::<_, Reject>(vec![Row { n: r.offset }]);
    /// use weir_sql::OffsetStore;
    /// let store = OffsetStore::<sqlx::Sqlite>::new("orders-to-db")?
    ///     .with_table(TableName::new("job_offsets")?)?;
    /// let runner = ExactlyOnceRunner::new(pool, "orders-to-db", sink, decode)?
    ///     .with_offset_store(store);
    /// assert_eq!(runner.offset_store().job(), "orders-to-db");
    /// # Ok(()) }
    /// ```
    pub fn with_offset_store(mut self, store: OffsetStore<DB>) -> Self {
        self.store = store;
        self
    }

    /// Use this dead-letter table.
    /// ```
    /// # use weir_sql::{impl_row, ExactlyOnceRunner, Reject, TableName, TableSink};
    /// # struct Row { n: i64 }
    /// # impl_row!(Row { n });
    /// # async fn example(pool: sqlx::SqlitePool) -> weir_sql::Result<()> {
    /// # let sink = TableSink::<sqlx::Sqlite, Row>::new(TableName::new("rows")?)?;
    /// # let decode = |r: &weir_core::Record| Ok::<_, Reject>(vec![Row { n: r.offset }]);
    /// use weir_sql::DeadLetters;
    /// let dlq = DeadLetters::<sqlx::Sqlite>::new("orders-to-db")?
    ///     .with_table(TableName::new("orders_rejected")?)?;
    /// let runner = ExactlyOnceRunner::new(pool, "orders-to-db", sink, decode)?
    ///     .with_dead_letters(dlq);
    /// # let _ = runner;
    /// # Ok(()) }
    /// ```
    pub fn with_dead_letters(mut self, dead_letters: DeadLetters<DB>) -> Self {
        self.dead_letters = dead_letters;
        self
    }

    /// The owner name written with each claim (default: host, pid and a nonce).
    /// ```
    /// # use weir_sql::{impl_row, ExactlyOnceRunner, Reject, TableName, TableSink};
    /// # struct Row { n: i64 }
    /// # impl_row!(Row { n });
    /// # async fn example(pool: sqlx::SqlitePool) -> weir_sql::Result<()> {
    /// # let sink = TableSink::<sqlx::Sqlite, Row>::new(TableName::new("rows")?)?;
    /// # let decode = |r: &weir_core::Record| Ok::<_, Reject>(vec![Row { n: r.offset }]);
    /// let runner = ExactlyOnceRunner::new(pool, "job", sink, decode)?
    ///     .with_owner("orders-pod-3"); // shown in the offsets rows' `owner`
    /// # let _ = runner;
    /// # Ok(()) }
    /// ```
    pub fn with_owner(mut self, owner: &str) -> Self {
        self.owner = Arc::from(owner);
        self
    }

    /// Commit once this many records are buffered (default 5000).
    /// ```
    /// # use weir_sql::{impl_row, ExactlyOnceRunner, Reject, TableName, TableSink};
    /// # struct Row { n: i64 }
    /// # impl_row!(Row { n });
    /// # async fn example(pool: sqlx::SqlitePool) -> weir_sql::Result<()> {
    /// # let sink = TableSink::<sqlx::Sqlite, Row>::new(TableName::new("rows")?)?;
    /// # let decode = |r: &weir_core::Record| Ok::<_, Reject>(vec![Row { n: r.offset }]);
    /// let runner = ExactlyOnceRunner::new(pool, "job", sink, decode)?
    ///     .with_batch_records(20_000); // fewer, larger transactions
    /// # let _ = runner;
    /// # Ok(()) }
    /// ```
    pub fn with_batch_records(mut self, n: usize) -> Self {
        self.batch_records = n.max(1);
        self
    }

    /// Commit buffered records at the latest this long after the first (default 200 ms).
    /// ```
    /// # use weir_sql::{impl_row, ExactlyOnceRunner, Reject, TableName, TableSink};
    /// # struct Row { n: i64 }
    /// # impl_row!(Row { n });
    /// # async fn example(pool: sqlx::SqlitePool) -> weir_sql::Result<()> {
    /// # let sink = TableSink::<sqlx::Sqlite, Row>::new(TableName::new("rows")?)?;
    /// # let decode = |r: &weir_core::Record| Ok::<_, Reject>(vec![Row { n: r.offset }]);
    /// use std::time::Duration;
    /// let runner = ExactlyOnceRunner::new(pool, "job", sink, decode)?
    ///     .with_linger(Duration::from_millis(20)); // lower latency on a trickle
    /// # let _ = runner;
    /// # Ok(()) }
    /// ```
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// How long one poll waits for records (default 100 ms).
    /// ```
    /// # use weir_sql::{impl_row, ExactlyOnceRunner, Reject, TableName, TableSink};
    /// # struct Row { n: i64 }
    /// # impl_row!(Row { n });
    /// # async fn example(pool: sqlx::SqlitePool) -> weir_sql::Result<()> {
    /// # let sink = TableSink::<sqlx::Sqlite, Row>::new(TableName::new("rows")?)?;
    /// # let decode = |r: &weir_core::Record| Ok::<_, Reject>(vec![Row { n: r.offset }]);
    /// use std::time::Duration;
    /// let runner = ExactlyOnceRunner::new(pool, "job", sink, decode)?
    ///     .with_poll_timeout(Duration::from_millis(500));
    /// # let _ = runner;
    /// # Ok(()) }
    /// ```
    pub fn with_poll_timeout(mut self, timeout: Duration) -> Self {
        self.poll_timeout = timeout;
        self
    }

    /// How long transient database errors are retried before `run` fails (default 60 s).
    /// ```
    /// # use weir_sql::{impl_row, ExactlyOnceRunner, Reject, TableName, TableSink};
    /// # struct Row { n: i64 }
    /// # impl_row!(Row { n });
    /// # async fn example(pool: sqlx::SqlitePool) -> weir_sql::Result<()> {
    /// # let sink = TableSink::<sqlx::Sqlite, Row>::new(TableName::new("rows")?)?;
    /// # let decode = |r: &weir_core::Record| Ok::<_, Reject>(vec![Row { n: r.offset }]);
    /// use std::time::Duration;
    /// let runner = ExactlyOnceRunner::new(pool, "job", sink, decode)?
    ///     .with_retry_for(Duration::from_secs(600)); // ride out a database failover
    /// # let _ = runner;
    /// # Ok(()) }
    /// ```
    pub fn with_retry_for(mut self, d: Duration) -> Self {
        self.retry_for = d;
        self
    }

    /// Where a partition this job never committed starts (default `Earliest`; see
    /// [`ExactlyOnceListener::with_auto_offset_reset`]). The consumer's own
    /// `auto.offset.reset` and group-committed offsets are not used for this: the
    /// database is the truth.
    /// ```
    /// # use weir_sql::{impl_row, ExactlyOnceRunner, Reject, TableName, TableSink};
    /// # struct Row { n: i64 }
    /// # impl_row!(Row { n });
    /// # async fn example(pool: sqlx::SqlitePool) -> weir_sql::Result<()> {
    /// # let sink = TableSink::<sqlx::Sqlite, Row>::new(TableName::new("rows")?)?;
    /// # let decode = |r: &weir_core::Record| Ok::<_, Reject>(vec![Row { n: r.offset }]);
    /// use weir_core::AutoOffsetReset;
    /// let runner = ExactlyOnceRunner::new(pool, "job", sink, decode)?
    ///     .with_auto_offset_reset(AutoOffsetReset::Latest); // new partitions: only new records
    /// # let _ = runner;
    /// # Ok(()) }
    /// ```
    pub fn with_auto_offset_reset(mut self, reset: weir_core::AutoOffsetReset) -> Self {
        self.reset = reset;
        self
    }

    /// PostgreSQL: how long a batch transaction may sit idle (no statement running)
    /// before the server ends the session and rolls it back (default
    /// [`DEFAULT_IDLE_TRANSACTION_TIMEOUT`], 60 s; `None` or zero: never).
    ///
    /// A member frozen mid-batch (SIGSTOP, a VM pause, a debugger) keeps its
    /// transaction and its row locks; without a bound, the new owner of its partitions
    /// waits on those locks until the zombie resumes or dies. With it the server
    /// frees them after this long; the zombie, once resumed, finds its connection
    /// gone, resolves the unknown outcome from the offsets rows and is fenced. Set it
    /// above the longest pause your sink makes between statements inside a batch.
    ///
    /// Applied with `SET LOCAL idle_in_transaction_session_timeout` in each batch
    /// transaction. MySQL/MariaDB and SQLite: not applied (MySQL has no such bound;
    /// the claim's lock timeout, [`OffsetStore::with_lock_timeout`], keeps the new
    /// owner from hanging, but the partition waits for the zombie).
    ///
    /// ```
    /// # async fn example(pool: sqlx::PgPool) -> weir_sql::Result<()> {
    /// use std::time::Duration;
    /// use weir_sql::{impl_row, ExactlyOnceRunner, Reject, TableName, TableSink};
    /// struct Row { n: i64 }
    /// impl_row!(Row { n });
    /// let sink = TableSink::<sqlx::Postgres, Row>::new(TableName::new("rows")?)?;
    /// let runner = ExactlyOnceRunner::new(pool, "job", sink, |r: &weir_core::Record| {
    ///     Ok::<_, Reject>(vec![Row { n: r.offset }])
    /// })?
    /// .with_idle_transaction_timeout(Some(Duration::from_secs(20)));
    /// # let _ = runner; Ok(()) }
    /// ```
    pub fn with_idle_transaction_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_transaction_sql = idle_transaction_sql::<DB>(timeout);
        self
    }

    /// The counters so far.
    /// ```
    /// # use weir_sql::{impl_row, ExactlyOnceRunner, Reject, TableName, TableSink};
    /// # struct Row { n: i64 }
    /// # impl_row!(Row { n });
    /// # async fn example(pool: sqlx::SqlitePool) -> weir_sql::Result<()> {
    /// # let sink = TableSink::<sqlx::Sqlite, Row>::new(TableName::new("rows")?)?;
    /// # let decode = |r: &weir_core::Record| Ok::<_, Reject>(vec![Row { n: r.offset }]);
    /// let runner = ExactlyOnceRunner::new(pool, "job", sink, decode)?;
    /// assert_eq!(runner.stats().commits, 0);
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> &RunStats {
        &self.stats
    }

    /// The offsets store.
    /// ```
    /// # use weir_sql::{impl_row, ExactlyOnceRunner, Reject, TableName, TableSink};
    /// # struct Row { n: i64 }
    /// # impl_row!(Row { n });
    /// # async fn example(pool: sqlx::SqlitePool) -> weir_sql::Result<()> {
    /// # let sink = TableSink::<sqlx::Sqlite, Row>::new(TableName::new("rows")?)?;
    /// # let decode = |r: &weir_core::Record| Ok::<_, Reject>(vec![Row { n: r.offset }]);
    /// let runner = ExactlyOnceRunner::new(pool, "job", sink, decode)?;
    /// assert_eq!(runner.offset_store().job(), "job");
    /// # Ok(()) }
    /// ```
    pub fn offset_store(&self) -> &OffsetStore<DB> {
        &self.store
    }

    /// Create the offsets and dead-letter tables if missing (retrying transient
    /// errors, e.g. a locked SQLite database, for up to the retry time).
    /// ```
    /// # use weir_sql::{impl_row, ExactlyOnceRunner, Reject, TableName, TableSink};
    /// # struct Row { n: i64 }
    /// # impl_row!(Row { n });
    /// # async fn example(pool: sqlx::SqlitePool) -> weir_sql::Result<()> {
    /// # let sink = TableSink::<sqlx::Sqlite, Row>::new(TableName::new("rows")?)?;
    /// # let decode = |r: &weir_core::Record| Ok::<_, Reject>(vec![Row { n: r.offset }]);
    /// let runner = ExactlyOnceRunner::new(pool, "job", sink, decode)?;
    /// runner.migrate().await?; // weir_offsets, weir_dead_letters
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self) -> Result<()> {
        let deadline = Instant::now() + self.retry_for;
        let mut backoff = Backoff::default();
        loop {
            let r = match self.store.migrate(&self.pool).await {
                Ok(()) => self.dead_letters.migrate(&self.pool).await,
                Err(e) => Err(e),
            };
            match r {
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    tracing::warn!(error = %e, "creating tables failed, retrying");
                    backoff.wait().await;
                }
                r => return r,
            }
        }
    }

    /// The listener this runner subscribes with (shares its ownership state).
    /// ```
    /// # use weir_sql::{impl_row, ExactlyOnceRunner, Reject, TableName, TableSink};
    /// # struct Row { n: i64 }
    /// # impl_row!(Row { n });
    /// # async fn example(pool: sqlx::SqlitePool) -> weir_sql::Result<()> {
    /// # let sink = TableSink::<sqlx::Sqlite, Row>::new(TableName::new("rows")?)?;
    /// # let decode = |r: &weir_core::Record| Ok::<_, Reject>(vec![Row { n: r.offset }]);
    /// // subscribe a consumer yourself, with the runner's claims and seeks
    /// let runner = ExactlyOnceRunner::new(pool, "job", sink, decode)?;
    /// let listener = runner.listener();
    /// # let _ = listener;
    /// # Ok(()) }
    /// ```
    pub fn listener(&self) -> Arc<ExactlyOnceListener<DB>> {
        Arc::new(
            ExactlyOnceListener::new(self.pool.clone(), self.store.clone(), &self.owner)
                .with_auto_offset_reset(self.reset)
                .with_state(self.state.clone()),
        )
    }

    /// Subscribe `consumer` (with this runner's listener) and process until its
    /// [`WakeupHandle`](weir_core::WakeupHandle) fires; commits what is buffered and
    /// returns. The caller closes the consumer.
    ///
    /// Stop it with the wakeup handle rather than by dropping the future: a future
    /// dropped in the middle of a statement (a `COPY` in particular) can hand a
    /// connection in an unusable state back to the pool, which then fails the next
    /// user of that connection once (weir retries such errors; other code may not).
    pub async fn run(
        &mut self,
        consumer: &mut dyn Consumer,
        subscription: Subscription,
    ) -> Result<RunStats> {
        consumer.subscribe(subscription, self.listener()).await?;
        self.run_loop(consumer).await
    }

    /// Standalone mode: `assign` these partitions, claim them, seek to their stored
    /// offsets and process until wakeup.
    /// ```
    /// # use weir_sql::{impl_row, ExactlyOnceRunner, Reject, TableName, TableSink};
    /// # struct Row { n: i64 }
    /// # impl_row!(Row { n });
    /// # async fn example(pool: sqlx::SqlitePool) -> weir_sql::Result<()> {
    /// # let sink = TableSink::<sqlx::Sqlite, Row>::new(TableName::new("rows")?)?;
    /// # let decode = |r: &weir_core::Record| Ok::<_, Reject>(vec![Row { n: r.offset }]);
    /// # let mut consumer: Box<dyn weir_core::Consumer> = todo!();
    /// use weir_core::TopicPartition;
    /// let mut runner = ExactlyOnceRunner::new(pool, "job", sink, decode)?;
    /// let parts = [TopicPartition::new("orders", 0), TopicPartition::new("orders", 1)];
    /// let stats = runner.run_assigned(consumer.as_mut(), &parts).await?; // until wakeup
    /// # let _ = stats;
    /// # Ok(()) }
    /// ```
    pub async fn run_assigned(
        &mut self,
        consumer: &mut dyn Consumer,
        partitions: &[TopicPartition],
    ) -> Result<RunStats> {
        consumer.assign(partitions).await?;
        self.run_loop(consumer).await
    }

    async fn run_loop(&mut self, consumer: &mut dyn Consumer) -> Result<RunStats> {
        let mut backoff = Backoff::default();
        loop {
            let batch = match consumer.poll(self.poll_timeout).await {
                Ok(b) => b,
                Err(weir_core::Error::Wakeup) => {
                    self.drop_unowned();
                    self.commit().await?;
                    return Ok(self.stats.clone());
                }
                Err(
                    e @ (weir_core::Error::PollIntervalExceeded { .. }
                    | weir_core::Error::Fenced { .. }),
                ) => {
                    // Evicted: the partitions are someone else's now (the listener was
                    // told they are lost); the next poll rejoins.
                    tracing::warn!(error = %e, "this member lost its partitions; rejoining");
                    self.state.lock().parts.clear();
                    self.drop_unowned();
                    continue;
                }
                Err(weir_core::Error::Listener(e)) => {
                    tracing::warn!(error = %e, "rebalance listener failed; claiming on the next round");
                    weir_core::Batch::new()
                }
                Err(e) if e.is_retriable() => {
                    tracing::warn!(error = %e, "poll failed, retrying");
                    backoff.wait().await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            crate::failpoint::hit("after_poll");
            let skip = match self.reconcile(consumer).await {
                Ok(skip) => skip,
                Err(e) if e.is_retriable() => {
                    tracing::warn!(error = %e, "claiming partitions failed, retrying");
                    // This batch is dropped: rewind every assigned partition it holds
                    // records of, so that none of them is skipped.
                    // A partition claimed before the failure goes back to its claimed
                    // offset, not to this batch's first record (fetched before the
                    // claim, possibly beyond it).
                    let assigned = consumer.assignment();
                    let claimed: std::collections::HashMap<TopicPartition, i64> = {
                        let st = self.state.lock();
                        st.parts
                            .iter()
                            .filter(|(_, s)| !s.started)
                            .filter_map(|(tp, s)| s.expected.map(|e| (tp.clone(), e)))
                            .collect()
                    };
                    for tp in batch.partitions() {
                        if !assigned.contains(&tp) {
                            continue;
                        }
                        if let Some(at) = claimed.get(&tp) {
                            consumer.seek(&tp, Offset::At(*at))?;
                        } else if let Some(first) = batch.records(&tp).next() {
                            consumer.seek(&tp, Offset::At(first.offset))?;
                        }
                    }
                    backoff.wait().await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            backoff.reset();
            let empty = batch.is_empty();
            let seeks = self.process(batch, &skip)?;
            let due = self.pending.records >= self.batch_records
                || (empty && !self.pending.is_empty())
                || self
                    .pending
                    .since
                    .is_some_and(|s| s.elapsed() >= self.linger)
                || !seeks.is_empty();
            if due {
                self.commit().await?;
            }
            for seek in &seeks {
                match seek {
                    Seek::Reseek(tp, offset) => consumer.seek(tp, Offset::At(*offset))?,
                    Seek::Rewind(tp, offset) => {
                        // Only this partition waits (its own backoff, 50 ms doubling
                        // to 5 s); the others go on.
                        consumer.seek(tp, Offset::At(*offset))?;
                        consumer.pause(std::slice::from_ref(tp))?;
                        let failures = self.retry_at.get(tp).map_or(0, |(_, n)| *n);
                        let wait = Duration::from_millis(50_u64 << failures.min(7))
                            .min(Duration::from_secs(5));
                        self.retry_at
                            .insert(tp.clone(), (Instant::now() + wait, failures + 1));
                    }
                }
            }
        }
    }

    /// Align ownership with the consumer's assignment after a poll: forget partitions
    /// no longer assigned, drop buffered work of old claims, claim partitions the
    /// listener could not. Returns partitions whose records in this batch are stale.
    async fn reconcile(&mut self, consumer: &mut dyn Consumer) -> Result<HashSet<TopicPartition>> {
        let assigned = consumer.assignment();
        let missing: Vec<TopicPartition> = {
            let mut st = self.state.lock();
            st.parts.retain(|tp, _| assigned.contains(tp));
            assigned
                .iter()
                .filter(|tp| !st.parts.contains_key(*tp))
                .cloned()
                .collect()
        };
        self.drop_unowned();
        let mut skip = HashSet::new();
        if !missing.is_empty() {
            match self.store.claim(&self.pool, &missing, &self.owner).await {
                Ok(claims) => {
                    crate::failpoint::hit("between_claim_and_assign");
                    let mut st = self.state.lock();
                    for (tp, c) in claims {
                        let start = crate::listener::start_of(&tp, c.next_offset, self.reset)?;
                        consumer.seek(&tp, start)?;
                        skip.insert(tp.clone());
                        st.insert_claim(tp, c.epoch, c.next_offset);
                    }
                }
                Err(e) => {
                    // Hold these partitions until claimed; the caller rewinds every
                    // assigned partition of the dropped batch, these included.
                    consumer.pause(&missing)?;
                    return Err(e);
                }
            }
        }
        let paused = consumer.paused();
        let (resume, pause): (Vec<TopicPartition>, Vec<TopicPartition>) = {
            let st = self.state.lock();
            let now = Instant::now();
            let resume = paused
                .iter()
                .filter(|tp| st.parts.get(*tp).is_some_and(|s| !s.fenced))
                // a partition waiting after a transient reject resumes when its time comes
                .filter(|tp| self.retry_at.get(*tp).is_none_or(|(at, _)| *at <= now))
                .cloned()
                .collect();
            // A fenced partition stays assigned until the group moves it: stop
            // fetching it (a new claim, after a rebalance, resumes it).
            let pause = st
                .parts
                .iter()
                .filter(|(tp, s)| s.fenced && !paused.contains(*tp))
                .map(|(tp, _)| tp.clone())
                .collect();
            (resume, pause)
        };
        if !resume.is_empty() {
            consumer.resume(&resume)?;
        }
        if !pause.is_empty() {
            tracing::warn!(partitions = ?pause, "pausing fenced partitions");
            consumer.pause(&pause)?;
        }
        self.stats.claims = self.state.lock().claims;
        Ok(skip)
    }

    /// Drop buffered work of partitions no longer owned under the same claim.
    fn drop_unowned(&mut self) {
        let keep: HashSet<TopicPartition> = {
            let st = self.state.lock();
            self.pending
                .parts
                .iter()
                .filter(|(tp, p)| {
                    st.parts
                        .get(*tp)
                        .is_some_and(|s| !s.fenced && s.generation == p.generation)
                })
                .map(|(tp, _)| tp.clone())
                .collect()
        };
        self.pending.retain(|tp| keep.contains(tp));
    }

    /// Decide about partition `tp` (claim `generation`, claimed offset `claimed`) whose
    /// first delivered record is at `first`.
    fn reseek_verdict(
        &mut self,
        tp: &TopicPartition,
        generation: u64,
        claimed: i64,
        first: i64,
    ) -> Result<Verdict> {
        let prior = self
            .reseeked
            .get(tp)
            .copied()
            .filter(|(g, _, _)| *g == generation);
        match prior {
            None => {
                tracing::warn!(partition = %tp, claimed, first, "first record after a claim is not at the claimed offset; seeking to it");
                self.reseeked.insert(tp.clone(), (generation, first, 1));
                Ok(Verdict::Seek)
            }
            // After seeking to the claimed offset, the same first record beyond it: the
            // log has nothing in between (compaction, transaction markers).
            Some((_, seen, _)) if seen == first && first > claimed => Ok(Verdict::Gap),
            Some((_, seen, tries)) if seen != first && tries < MAX_RESEEKS => {
                self.reseeked
                    .insert(tp.clone(), (generation, first, tries + 1));
                Ok(Verdict::Seek)
            }
            Some((_, _, tries)) => {
                let why = if first < claimed {
                    "the consumer delivers from before it after seeking there: the offset lies beyond what the log holds (was the topic recreated or truncated, or do these offsets belong to another cluster?). weir neither skips nor replays records on its own: restore the topic's records or point the job at the cluster its offsets belong to. The offsets row is this job's exactly-once progress; editing or deleting it makes the job skip or repeat records"
                } else {
                    "the consumer's position does not follow the seek"
                };
                Err(Error::Sink {
                    sink: "offsets".to_owned(),
                    message: format!(
                        "stored next_offset {claimed} of {tp} (job `{}`): first record delivered at {first} after {tries} seek(s) to it; {why}",
                        self.store.job()
                    ),
                    retriable: false,
                })
            }
        }
    }

    /// Decode a batch into the pending buffer. Returns the partitions to rewind
    /// (transient decode failures) and where.
    fn process(
        &mut self,
        batch: weir_core::Batch,
        skip: &HashSet<TopicPartition>,
    ) -> Result<Vec<Seek>> {
        let mut seeks: Vec<Seek> = Vec::new();
        let mut stopped: BTreeSet<TopicPartition> = BTreeSet::new();
        let mut owned: std::collections::HashMap<TopicPartition, crate::listener::PartState> =
            self.state.lock().parts.clone();
        for record in batch {
            let tp = record.topic_partition();
            if skip.contains(&tp) || stopped.contains(&tp) {
                continue;
            }
            let Some(st) = owned.get(&tp).copied() else {
                continue;
            };
            if st.fenced {
                continue;
            }
            let position = match self.pending.parts.get(&tp) {
                Some(p) if p.generation == st.generation => Some(p.next),
                _ => st.expected,
            };
            if let Some(e) = st.expected.filter(|e| !st.started && record.offset != *e) {
                // The first record after a claim is not at the claimed offset. Before it:
                // delivered before the claim's seek took effect, or the position was
                // reset because the offset is beyond the log's end. Beyond it: the seek
                // did not take effect (records fetched before it, a rewind that
                // overrode it), or the log has no record there. Processing it as it
                // is would skip records, or write records under offsets already
                // committed, and the compare-and-set (expecting the claimed offset)
                // would not notice. Seek to the claimed offset and look again.
                match self.reseek_verdict(&tp, st.generation, e, record.offset)? {
                    Verdict::Seek => {
                        seeks.push(Seek::Reseek(tp.clone(), e));
                        stopped.insert(tp);
                        continue;
                    }
                    Verdict::Gap => {
                        self.stats.seek_mismatches += 1;
                        tracing::warn!(at = %record.coordinates(), expected = e, "no record at the claimed offset (compaction, transaction markers); the partition resumes at the next one");
                    }
                }
            }
            if position.is_some_and(|p| record.offset < p) {
                continue; // delivered before a rewind took effect
            }
            if !st.started {
                if let Some(s) = self.state.lock().parts.get_mut(&tp) {
                    s.started = true;
                }
                owned.entry(tp.clone()).and_modify(|s| s.started = true);
            }
            match (self.decode)(&record) {
                Ok(values) => {
                    self.retry_at.remove(&tp);
                    if !values.is_empty() {
                        let start = self.pending.items.len();
                        let at = record.coordinates();
                        for (i, value) in values.into_iter().enumerate() {
                            self.pending.items.push(Item {
                                at: at.clone(),
                                ordinal: u32::try_from(i).unwrap_or(u32::MAX),
                                timestamp: record.timestamp,
                                value,
                            });
                        }
                        let end = self.pending.items.len();
                        self.pending.groups.push(Group {
                            record: record.clone(),
                            start,
                            end,
                        });
                    }
                }
                Err(r) if r.is_retriable() => {
                    tracing::warn!(at = %record.coordinates(), error = %r.message(), "transient failure, pausing partition");
                    seeks.push(Seek::Rewind(tp.clone(), record.offset));
                    stopped.insert(tp);
                    continue;
                }
                Err(r) => {
                    let at = record.coordinates();
                    tracing::debug!(%at, error = %r.message(), "dead letter");
                    self.pending.dead.push(DeadLetter::new(
                        record.clone(),
                        Stage::Decode,
                        r.message(),
                    ));
                }
            }
            let entry = self.pending.parts.entry(tp).or_insert(PartPending {
                generation: st.generation,
                epoch: st.epoch,
                expected: st.expected,
                next: record.offset + 1,
            });
            entry.next = record.offset + 1;
            self.pending.records += 1;
            self.stats.records += 1;
            if self.pending.since.is_none() {
                self.pending.since = Some(Instant::now());
            }
        }
        Ok(seeks)
    }

    /// Commit everything pending, retrying transient failures.
    async fn commit(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.retry_for;
        let mut backoff = Backoff::default();
        let mut attempts = 0_u32;
        loop {
            self.drop_unowned();
            if self.pending.is_empty() {
                self.pending = Pending::default();
                return Ok(());
            }
            attempts += 1;
            match self.try_commit().await {
                Ok(()) => {}
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    tracing::warn!(error = %e, attempt = attempts, "batch failed, retrying");
                    self.stats.retries += 1;
                    backoff.wait().await;
                }
                Err(e) if e.is_retriable() => {
                    return Err(Error::RetriesExhausted {
                        during: "commit",
                        attempts,
                        last: Box::new(e),
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn begin(&self) -> Result<Transaction<'static, DB>> {
        let mut tx = self
            .pool
            .begin_with(AssertSqlSafe(DB::BEGIN))
            .await
            .map_err(|e| Error::db("begin", e))?;
        if let Some(sql) = &self.idle_transaction_sql {
            DB::execute(&mut tx, sql, &[])
                .await
                .map_err(|e| Error::db("begin", e))?;
        }
        Ok(tx)
    }

    /// One attempt. On success, or when partitions were found committed or fenced,
    /// they leave `pending`; what remains is retried by the caller.
    async fn try_commit(&mut self) -> Result<()> {
        let mut tx = self.begin().await?;
        match self.sink.write(&mut tx, &self.pending.items).await {
            Ok(()) => {}
            Err(e) if is_row_error(&e) => {
                let _ = tx.rollback().await;
                tx = self.begin().await?;
                self.isolate(&mut tx).await?;
            }
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(e);
            }
        }
        crate::failpoint::hit("after_sink_write");
        // The compare-and-set comes before the dead letters: a fenced member (a zombie
        // resumed after its partitions moved on) must learn it here and roll back, not
        // collide with the dead letters the new owner already committed.
        let mut refused = Vec::new();
        for (tp, p) in &self.pending.parts {
            if !self
                .store
                .advance(&mut tx, tp, p.epoch, p.expected, p.next)
                .await?
            {
                refused.push(tp.clone());
            }
        }
        crate::failpoint::hit("after_offset_update");
        if !refused.is_empty() {
            let _ = tx.rollback().await;
            if !self.resolve(&refused).await? {
                return Err(Error::Sink {
                    sink: "offsets".to_owned(),
                    message: "compare-and-set refused although the row matched; retrying"
                        .to_owned(),
                    retriable: true,
                });
            }
            return Ok(());
        }
        self.dead_letters.write(&mut tx, &self.pending.dead).await?;
        crate::failpoint::hit_soon("after_commit_sent");
        let outcome = match crate::failpoint::lost("commit_outcome") {
            None => tx.commit().await,
            Some(lost) => {
                let sent = match lost {
                    crate::failpoint::Lost::Reply => tx.commit().await,
                    crate::failpoint::Lost::Commit => tx.rollback().await,
                };
                sent.and(Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    format!("failpoint commit_outcome: {lost:?} lost"),
                ))))
            }
        };
        if let Err(e) = outcome {
            self.stats.unknown_outcomes += 1;
            tracing::warn!(error = %e, "commit outcome unknown, reading the offsets rows");
            let all: Vec<TopicPartition> = self.pending.parts.keys().cloned().collect();
            let progressed = self.resolve(&all).await?;
            if !progressed {
                return Err(Error::db("commit", e));
            }
            return Ok(());
        }
        crate::failpoint::hit("after_commit");
        let done: Vec<TopicPartition> = self.pending.parts.keys().cloned().collect();
        self.finish(&done, true);
        Ok(())
    }

    /// Partitions whose batch is committed leave `pending`; the counters move.
    fn finish(&mut self, tps: &[TopicPartition], count_commit: bool) {
        if tps.is_empty() {
            return;
        }
        let set: HashSet<&TopicPartition> = tps.iter().collect();
        {
            let mut st = self.state.lock();
            for tp in tps {
                if let (Some(p), Some(s)) = (self.pending.parts.get(tp), st.parts.get_mut(tp)) {
                    if s.generation == p.generation {
                        s.expected = Some(p.next);
                    }
                }
            }
        }
        let in_set = |r: &Record| {
            set.iter()
                .any(|tp| tp.partition() == r.partition && tp.topic() == &*r.topic)
        };
        let rows = self
            .pending
            .groups
            .iter()
            .filter(|g| in_set(&g.record))
            .map(|g| g.end - g.start)
            .sum::<usize>();
        let dead = self
            .pending
            .dead
            .iter()
            .filter(|d| in_set(&d.record))
            .count();
        self.stats.rows += rows as u64;
        self.stats.dead_letters += dead as u64;
        if count_commit {
            self.stats.commits += 1;
        }
        let keep: HashSet<TopicPartition> = self
            .pending
            .parts
            .keys()
            .filter(|tp| !set.contains(tp))
            .cloned()
            .collect();
        self.pending.retain(|tp| keep.contains(tp));
        if self.pending.is_empty() {
            self.pending = Pending::default();
        }
    }

    /// Read the offsets rows of `tps` (after a refused compare-and-set or an unknown
    /// commit) and act: committed partitions are done, fenced ones are dropped and
    /// paused, the rest stay pending. Returns whether any partition left `pending`.
    async fn resolve(&mut self, tps: &[TopicPartition]) -> Result<bool> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| Error::db("offsets read", e))?;
        let mut committed = Vec::new();
        let mut fenced = Vec::new();
        for tp in tps {
            let Some(p) = self.pending.parts.get(tp).copied() else {
                continue;
            };
            let row = self.store.read(&mut conn, tp).await?;
            let res = match row {
                Some(r) if r.epoch == p.epoch && r.next_offset == Some(p.next) => Resolution::Committed,
                Some(r) if r.epoch == p.epoch && r.next_offset == p.expected => Resolution::NotCommitted,
                Some(r) => Resolution::Fenced(format!(
                    "offsets row has epoch {} next_offset {:?} (owner {:?}); this member holds epoch {} expecting {:?}",
                    r.epoch, r.next_offset, r.owner, p.epoch, p.expected
                )),
                None => Resolution::Fenced("offsets row is gone".to_owned()),
            };
            match res {
                Resolution::Committed => committed.push(tp.clone()),
                Resolution::NotCommitted => {}
                Resolution::Fenced(detail) => {
                    let err = Error::Fenced {
                        partition: tp.clone(),
                        detail,
                    };
                    tracing::warn!(error = %err, "partition fenced, dropping its buffered records");
                    fenced.push(tp.clone());
                }
            }
        }
        drop(conn);
        let progressed = !committed.is_empty() || !fenced.is_empty();
        self.finish(&committed, true);
        if !fenced.is_empty() {
            self.stats.fenced += fenced.len() as u64;
            let mut st = self.state.lock();
            for tp in &fenced {
                if let Some(s) = st.parts.get_mut(tp) {
                    s.fenced = true;
                }
            }
            drop(st);
            let set: HashSet<TopicPartition> = fenced.into_iter().collect();
            self.pending.retain(|tp| !set.contains(tp));
        }
        Ok(progressed)
    }

    /// The sink refused a row: find the bad records by bisection under savepoints,
    /// leaving the good rows written on `tx` and the bad records in the dead letters.
    async fn isolate(&mut self, tx: &mut Transaction<'static, DB>) -> Result<()> {
        self.stats.isolations += 1;
        let save: Arc<str> = Arc::from("SAVEPOINT weir_isolate");
        let back: Arc<str> = Arc::from("ROLLBACK TO SAVEPOINT weir_isolate");
        let release: Arc<str> = Arc::from("RELEASE SAVEPOINT weir_isolate");
        let sp = |e| Error::db("savepoint", e);
        let mut rejected: Vec<(usize, String)> = Vec::new();
        let mut stack = vec![(0_usize, self.pending.groups.len())];
        while let Some((a, b)) = stack.pop() {
            if a >= b {
                continue;
            }
            let (start, end) = (self.pending.groups[a].start, self.pending.groups[b - 1].end);
            DB::execute(tx, &save, &[]).await.map_err(sp)?;
            match self.sink.write(tx, &self.pending.items[start..end]).await {
                Ok(()) => {
                    DB::execute(tx, &release, &[]).await.map_err(sp)?;
                }
                Err(e) if is_row_error(&e) => {
                    DB::execute(tx, &back, &[]).await.map_err(sp)?;
                    DB::execute(tx, &release, &[]).await.map_err(sp)?;
                    if b - a == 1 {
                        tracing::debug!(at = %self.pending.groups[a].record.coordinates(), error = %e, "row refused");
                        rejected.push((a, e.to_string()));
                    } else {
                        let mid = a + (b - a) / 2;
                        stack.push((mid, b));
                        stack.push((a, mid));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.pending.reject(rejected);
        Ok(())
    }
}

/// A seek the run loop makes after a poll.
#[derive(Clone, Debug)]
enum Seek {
    /// Back to the claimed offset: the first delivered record was elsewhere.
    Reseek(TopicPartition, i64),
    /// Back to a record whose decode failed transiently: pause, then retry it.
    Rewind(TopicPartition, i64),
}

/// What to make of a first record that is not at the claimed offset.
enum Verdict {
    /// Seek to the claimed offset and look again.
    Seek,
    /// The log has no record there: go on from this one.
    Gap,
}

/// Seeks to a claimed offset before giving up on a partition.
const MAX_RESEEKS: u32 = 3;

/// Exponential backoff between 50 ms and 2 s.
#[derive(Debug, Default)]
struct Backoff {
    n: u32,
}

impl Backoff {
    async fn wait(&mut self) {
        let ms = 50_u64.saturating_mul(1 << self.n.min(5)).min(2000);
        self.n = self.n.saturating_add(1);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    fn reset(&mut self) {
        self.n = 0;
    }
}
