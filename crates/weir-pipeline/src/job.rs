//! The job builder: [`Job`] → [`Pipeline`] → [`Ready`].
//!
//! Builder methods take `self` and never fail; whatever is wrong is collected and
//! reported by [`Ready::build`] (or `run_until`) as one [`Error::Build`] naming the
//! stage and the problem.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Pool;
use weir_core::{AutoOffsetReset, Record, Subscription};
use weir_formats::Deserializer;
use weir_sql::{DeadLetters, Dialect, OffsetStore, TableName};

use crate::db::{redact, Database};
use crate::decode::{DecodeKeyValue, DecodeValue, Raw};
use crate::ops::{self, Flow, Keyed};
use crate::runtime::{self, Backoff};
use crate::sink::{BuiltSink, IntoSink, SinkContext};
use crate::source::Source;
use crate::{Error, OnError, OpError, Result, Summary};

/// The defaults of a job's settings.
pub mod defaults {
    use std::time::Duration;
    /// Records per transaction.
    pub const BATCH_RECORDS: usize = 5000;
    /// Key + value bytes per transaction.
    pub const BATCH_BYTES: usize = 16 << 20;
    /// Longest wait before a partial batch commits.
    pub const LINGER: Duration = Duration::from_millis(200);
    /// One poll's wait.
    pub const POLL_TIMEOUT: Duration = Duration::from_millis(100);
    /// In-flight records (polled, not yet committed), in batches of `BATCH_RECORDS`.
    pub const IN_FLIGHT_BATCHES: usize = 4;
    /// In-flight key + value bytes.
    pub const MAX_IN_FLIGHT_BYTES: usize = 64 << 20;
    /// How long transient database errors are retried before the job fails.
    pub const RETRY_FOR: Duration = Duration::from_secs(60);
    /// How long a shutdown may take to commit what is in flight.
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
    /// How long a revoke waits for in-flight commits of the revoked partitions.
    pub const REVOKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// PostgreSQL's idle-in-transaction bound for a batch transaction.
    pub const IDLE_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
    /// How often a run publishes its counters and gauges.
    pub const METRICS_INTERVAL: Duration = Duration::from_secs(1);
    /// How often a run refreshes its lag gauges (one watermarks request per partition).
    pub const LAG_INTERVAL: Duration = Duration::from_secs(5);
}

#[derive(Clone, Debug)]
struct Settings {
    batch_records: usize,
    batch_bytes: usize,
    linger: Duration,
    poll_timeout: Duration,
    max_in_flight_records: Option<usize>,
    max_in_flight_bytes: usize,
    retry_for: Duration,
    shutdown_timeout: Duration,
    revoke_timeout: Duration,
    reset: Option<AutoOffsetReset>,
    idle_transaction_timeout: Option<Duration>,
    owner: Option<String>,
    offsets_table: Option<String>,
    dead_letters_table: Option<String>,
    connections: u32,
    metrics_interval: Duration,
    lag_interval: Duration,
    http: Option<String>,
    stall_timeout: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch_records: defaults::BATCH_RECORDS,
            batch_bytes: defaults::BATCH_BYTES,
            linger: defaults::LINGER,
            poll_timeout: defaults::POLL_TIMEOUT,
            max_in_flight_records: None,
            max_in_flight_bytes: defaults::MAX_IN_FLIGHT_BYTES,
            retry_for: defaults::RETRY_FOR,
            shutdown_timeout: defaults::SHUTDOWN_TIMEOUT,
            revoke_timeout: defaults::REVOKE_TIMEOUT,
            reset: None,
            idle_transaction_timeout: Some(defaults::IDLE_TRANSACTION_TIMEOUT),
            owner: None,
            offsets_table: None,
            dead_letters_table: None,
            connections: 4,
            metrics_interval: defaults::METRICS_INTERVAL,
            lag_interval: defaults::LAG_INTERVAL,
            http: None,
            stall_timeout: None,
        }
    }
}

/// An exactly-once job: a name (the key of its offsets rows and, by default, its
/// `group.id`), a source, settings. Turn it into a [`Pipeline`] with
/// [`value`](Self::value), [`key_value`](Self::key_value) or
/// [`records`](Self::records).
///
/// ```no_run
/// # #[derive(serde::Deserialize)] struct Order { id: i64, customer: String, amount: f64 }
/// # struct BigOrder { id: i64, customer: String, amount: f64 }
/// # weir_sql::impl_row!(BigOrder { id, customer, amount });
/// # async fn f() -> weir_pipeline::Result<()> {
/// use weir_pipeline::{sink::Postgres, Job};
/// Job::new("big-orders")
///     .source("kafka://localhost:9092", ["orders"])
///     .database("postgres://postgres@127.0.0.1:5432/test")
///     .value::<Order, _>(weir_formats::Json::new())
///     .filter(|o| o.amount > 100.0)
///     .map(|o| BigOrder { id: o.id, customer: o.customer, amount: o.amount })
///     .sink(Postgres::upsert("big_orders", ["id"]))
///     .run_until(weir_pipeline::shutdown_signal())
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Job {
    name: String,
    source: Option<Source>,
    topics: Vec<String>,
    overrides: Vec<(String, String)>,
    database: Option<String>,
    settings: Settings,
    problems: Vec<(String, String)>,
}

/// Secrets stay out: the database URL's password and secret configuration values
/// (`sasl.password`, `ssl.key.password`, …) are shown as `***`.
impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let overrides: Vec<(&str, &str)> = self
            .overrides
            .iter()
            .map(|(k, v)| {
                let v = if weir_core::ConsumerConfig::is_secret_key(k) {
                    "***"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("Job")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("topics", &self.topics)
            .field("overrides", &overrides)
            .field("database", &self.database.as_deref().map(redact))
            .field("settings", &self.settings)
            .field("problems", &self.problems)
            .finish()
    }
}

impl Job {
    /// The job's offsets store (its name, its offsets table); the error is `(stage,
    /// reason)`.
    fn offset_store<DB: Dialect>(&self) -> std::result::Result<OffsetStore<DB>, (String, String)> {
        let store = OffsetStore::<DB>::new(&self.name)
            .map_err(|e| ("job name".to_owned(), e.to_string()))?;
        match &self.settings.offsets_table {
            None => Ok(store),
            Some(t) => TableName::new(t)
                .and_then(|t| store.with_table(t))
                .map_err(|e| ("offsets table".to_owned(), e.to_string())),
        }
    }

    /// A job named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            source: None,
            topics: Vec::new(),
            overrides: Vec::new(),
            database: None,
            settings: Settings::default(),
            problems: Vec::new(),
        }
    }

    /// Read `topics` from `source`: a URL (`"log:///var/lib/weir"`,
    /// `"kafka://host:9092"`), a `ConsumerConfig` or [`properties`](crate::properties).
    pub fn source<S, I, T>(mut self, source: S, topics: I) -> Self
    where
        S: Into<Source>,
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.source = Some(source.into());
        self.topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// Set a consumer property (Kafka's names: `session.timeout.ms`,
    /// `max.poll.records`, `group.instance.id`, …), applied over the source's.
    /// `enable.auto.commit=true` is refused at build: the database holds the offsets.
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.overrides.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The database URL (`postgres://…`, `sqlite:path?mode=rwc`, `mysql://…`); default
    /// `DATABASE_URL` from the environment. Or give a pool with [`Ready::pool`].
    pub fn database(mut self, url: impl Into<String>) -> Self {
        self.database = Some(url.into());
        self
    }

    /// Commit once this many records are buffered (default 5000).
    pub fn batch_records(mut self, n: usize) -> Self {
        self.settings.batch_records = n;
        self
    }

    /// Commit once this many key + value bytes are buffered (default 16 MiB).
    pub fn batch_bytes(mut self, n: usize) -> Self {
        self.settings.batch_bytes = n;
        self
    }

    /// Commit a partial batch at the latest this long after its first record
    /// (default 200 ms).
    pub fn linger(mut self, d: Duration) -> Self {
        self.settings.linger = d;
        self
    }

    /// How long one poll waits (default 100 ms).
    pub fn poll_timeout(mut self, d: Duration) -> Self {
        self.settings.poll_timeout = d;
        self
    }

    /// Most records polled but not yet committed (default 4 batches); at the limit
    /// fetching pauses until commits catch up, so memory stays bounded however slow
    /// the database.
    pub fn max_in_flight_records(mut self, n: usize) -> Self {
        self.settings.max_in_flight_records = Some(n);
        self
    }

    /// Most key + value bytes polled but not yet committed (default 64 MiB).
    pub fn max_in_flight_bytes(mut self, n: usize) -> Self {
        self.settings.max_in_flight_bytes = n;
        self
    }

    /// How long transient database errors are retried before the job fails (60 s).
    pub fn retry_for(mut self, d: Duration) -> Self {
        self.settings.retry_for = d;
        self
    }

    /// How long a shutdown may take to commit what is in flight (30 s).
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.settings.shutdown_timeout = d;
        self
    }

    /// How long a revoke waits for in-flight commits (10 s; keep it well below
    /// `max.poll.interval.ms`).
    pub fn revoke_timeout(mut self, d: Duration) -> Self {
        self.settings.revoke_timeout = d;
        self
    }

    /// Where a partition this job never committed starts: `Earliest` for a URL source
    /// or a properties file without the key; otherwise the source's
    /// `auto.offset.reset` (`Job::config`, the file, or a `ConsumerConfig`, whose
    /// default is Kafka's `latest`); this setting overrides them all. The consumer's committed offsets are never used: the
    /// database is the truth. It applies only to partitions without an offsets row: a
    /// claimed offset outside the log is never reset (see the crate guide).
    pub fn auto_offset_reset(mut self, reset: AutoOffsetReset) -> Self {
        self.settings.reset = Some(reset);
        self
    }

    /// PostgreSQL: end a batch transaction idle this long (a frozen member) so its
    /// locks are freed (default 60 s; `None`: never).
    pub fn idle_transaction_timeout(mut self, d: Option<Duration>) -> Self {
        self.settings.idle_transaction_timeout = d;
        self
    }

    /// How often the run publishes its counters and gauges through the [`metrics`]
    /// facade (default 1 s; also once when it stops). The names are listed in the
    /// README's "Operating weir".
    ///
    /// ```
    /// let job = weir_pipeline::Job::new("orders")
    ///     .metrics_interval(std::time::Duration::from_millis(500));
    /// ```
    pub fn metrics_interval(mut self, d: Duration) -> Self {
        self.settings.metrics_interval = d;
        self
    }

    /// How often the `weir_lag_records` gauges are refreshed (default 5 s): the
    /// source's high watermark (one request per assigned partition)
    /// minus the `next_offset` stored in the database. Also how long a job may go
    /// without a successful database round trip before it pings the database (for
    /// the ready probe), and how long that ping may take.
    ///
    /// ```
    /// let job = weir_pipeline::Job::new("orders")
    ///     .lag_interval(std::time::Duration::from_secs(15));
    /// ```
    pub fn lag_interval(mut self, d: Duration) -> Self {
        self.settings.lag_interval = d;
        self
    }

    /// Serve `GET /metrics` (Prometheus text format), `/health/live` and
    /// `/health/ready` on `addr` while the job runs (feature `prometheus`).
    ///
    /// `/metrics` renders weir's Prometheus recorder, which the first such job of the
    /// process installs as the global [`metrics`] recorder; a process that already
    /// installed another recorder fails to start with an error saying so.
    /// `/health/live` is 200 while the run loop turns (and while the job starts), 503
    /// once its loop is stuck (see [`stall_timeout`](Self::stall_timeout)) or it
    /// stopped; `/health/ready` is 200 when partitions are assigned, every one of
    /// them claimed and not fenced, no commit attempt is stuck, and the database
    /// answered the last claim, commit or ping. A bad address fails the build, an address in use
    /// fails the start; both name it. Without the feature the build fails saying so.
    ///
    /// ```
    /// let job = weir_pipeline::Job::new("orders").serve_http("127.0.0.1:9464");
    /// ```
    pub fn serve_http(mut self, addr: impl Into<String>) -> Self {
        self.settings.http = Some(addr.into());
        self
    }

    /// How long one turn of the run loop may take before `/health/live` of
    /// [`serve_http`](Self::serve_http) answers 503 (stuck), and one commit attempt
    /// before `/health/ready` does (a transaction waiting on a lock, a database that
    /// stopped answering). Default: the revoke timeout + two poll timeouts + 30 s (a
    /// backpressure wait lasts at most one poll timeout). It must exceed two poll
    /// timeouts (an idle loop turns once per poll timeout).
    ///
    /// ```
    /// let job = weir_pipeline::Job::new("orders")
    ///     .serve_http("127.0.0.1:9464")
    ///     .stall_timeout(std::time::Duration::from_secs(120));
    /// ```
    pub fn stall_timeout(mut self, d: Duration) -> Self {
        self.settings.stall_timeout = Some(d);
        self
    }

    /// The owner name written with each claim (default: host, pid and a nonce).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.settings.owner = Some(owner.into());
        self
    }

    /// The offsets table (default `weir_offsets`).
    pub fn offsets_table(mut self, table: impl Into<String>) -> Self {
        self.settings.offsets_table = Some(table.into());
        self
    }

    /// The dead-letter table (default `weir_dead_letters`).
    pub fn dead_letters_table(mut self, table: impl Into<String>) -> Self {
        self.settings.dead_letters_table = Some(table.into());
        self
    }

    /// Connections of the pool weir opens from the URL (default 4).
    pub fn connections(mut self, n: u32) -> Self {
        self.settings.connections = n;
        self
    }

    /// Decode each record's value with `deserializer` (any weir-formats
    /// deserializer, sync or async). Poison follows the stage's policy
    /// ([`Pipeline::on_error`], default dead letter); a transient error (registry
    /// unreachable) pauses the partition and retries.
    pub fn value<T, D>(self, deserializer: D) -> Pipeline<T>
    where
        T: Send + 'static,
        D: Deserializer<T> + 'static,
    {
        Pipeline {
            job: self,
            flow: Box::new(DecodeValue {
                deser: deserializer,
                policy: OnError::default(),
                name: Arc::from("decode"),
                _t: PhantomData,
            }),
        }
    }

    /// Decode keys with `key` and values with `value`: a pipeline of `(K, V)`.
    pub fn key_value<K, V, KD, VD>(self, key: KD, value: VD) -> Pipeline<(K, V)>
    where
        K: Send + 'static,
        V: Send + 'static,
        KD: Deserializer<K> + 'static,
        VD: Deserializer<V> + 'static,
    {
        Pipeline {
            job: self,
            flow: Box::new(DecodeKeyValue {
                key,
                value,
                policy: OnError::default(),
                name: Arc::from("decode"),
                _t: PhantomData,
            }),
        }
    }

    /// The records themselves, undecoded (coordinates, key, value, headers).
    pub fn records(self) -> Pipeline<Record> {
        Pipeline {
            job: self,
            flow: Box::new(Raw),
        }
    }
}

/// A job's chain of operators, from decoded values of type `T`. End it with
/// [`sink`](Self::sink).
///
/// | operator | closure | what it does |
/// |---|---|---|
/// | [`map`](Self::map) | `T -> U` | one value out per value |
/// | [`map_with`](Self::map_with) | `(T, &Record) -> U` | same, seeing coordinates, timestamp, key, headers |
/// | [`filter`](Self::filter) | `&T -> bool` | drop values (their records are consumed) |
/// | [`filter_map`](Self::filter_map) | `T -> Option<U>` | map and drop |
/// | [`flat_map`](Self::flat_map) | `T -> impl IntoIterator<Item = U>` | any number of rows per record (ordinals 0, 1, …) |
/// | [`inspect`](Self::inspect) | `(&T, &Record)` | look, change nothing |
/// | [`try_map`](Self::try_map) | `T -> Result<U, E>` | an error follows the stage's [`OnError`] (retriable ones retry) |
/// | [`map_async`](Self::map_async) | `T -> impl Future<Output = Result<U, E>>` | bounded concurrency, order kept |
/// | [`key_by`](Self::key_by) | `&T -> K` | [`Keyed`] values |
pub struct Pipeline<T> {
    job: Job,
    flow: Box<dyn Flow<T>>,
}

impl<T> std::fmt::Debug for Pipeline<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("job", &self.job.name)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Pipeline<T> {
    fn then<U>(self, flow: impl FnOnce(Box<dyn Flow<T>>) -> Box<dyn Flow<U>>) -> Pipeline<U> {
        Pipeline {
            job: self.job,
            flow: flow(self.flow),
        }
    }

    /// What a permanent failure of the last stage does (default
    /// [`OnError::DeadLetter`]). Applies to `value`/`key_value` (decode), `try_map`
    /// and `map_async`.
    ///
    /// ```
    /// use weir_pipeline::{Job, OnError};
    /// #[derive(serde::Deserialize)]
    /// struct Click { user: String }
    /// let p = Job::new("clicks")
    ///     .source("log:///var/lib/weir", ["clicks"])
    ///     .value::<Click, _>(weir_formats::Json::new())
    ///     .on_error(OnError::Skip); // malformed clicks: counted and logged, not kept
    /// # drop(p);
    /// ```
    pub fn on_error(mut self, policy: OnError) -> Self {
        self.flow.set_policy(policy);
        self
    }

    /// `f` on every value.
    ///
    /// ```
    /// use weir_pipeline::{Job, OpError};
    /// let p = Job::new("j").source("log:///var/lib/weir", ["orders"]).records();
    /// let sizes = p.map(|r| r.value.map_or(0, |v| v.len() as i64));
    /// # drop(sizes);
    /// ```
    pub fn map<U: Send + 'static>(self, f: impl FnMut(T) -> U + Send + 'static) -> Pipeline<U> {
        self.then(|inner| Box::new(ops::Map { inner, f }))
    }

    /// `f` on every value, with its record (topic, partition, offset, timestamp, key,
    /// headers): a later stage sees what this one keeps.
    ///
    /// ```
    /// use weir_pipeline::{Job, OpError};
    /// let p = Job::new("j").source("log:///var/lib/weir", ["orders"]).records();
    /// let at = p
    ///     .map(|r| r.offset)
    ///     .map_with(|n, r| (r.topic.clone(), r.partition, n, r.timestamp));
    /// # drop(at);
    /// ```
    pub fn map_with<U: Send + 'static>(
        self,
        f: impl FnMut(T, &Record) -> U + Send + 'static,
    ) -> Pipeline<U> {
        self.then(|inner| Box::new(ops::MapWith { inner, f }))
    }

    /// Keep values for which `f` is true (the others are consumed, nothing is written
    /// for them).
    ///
    /// ```
    /// use weir_pipeline::{Job, OpError};
    /// let p = Job::new("j").source("log:///var/lib/weir", ["orders"]).records();
    /// let non_empty = p.filter(|r| r.value.as_ref().is_some_and(|v| !v.is_empty()));
    /// # drop(non_empty);
    /// ```
    pub fn filter(self, f: impl FnMut(&T) -> bool + Send + 'static) -> Pipeline<T> {
        self.then(|inner| Box::new(ops::Filter { inner, f }))
    }

    /// Map, dropping `None`.
    ///
    /// ```
    /// use weir_pipeline::{Job, OpError};
    /// let p = Job::new("j").source("log:///var/lib/weir", ["orders"]).records();
    /// let texts = p.filter_map(|r| String::from_utf8(r.value?.to_vec()).ok());
    /// # drop(texts);
    /// ```
    pub fn filter_map<U: Send + 'static>(
        self,
        f: impl FnMut(T) -> Option<U> + Send + 'static,
    ) -> Pipeline<U> {
        self.then(|inner| Box::new(ops::FilterMap { inner, f }))
    }

    /// Any number of values per value (one record, several rows; none is fine).
    ///
    /// ```
    /// use weir_pipeline::{Job, OpError};
    /// let p = Job::new("j").source("log:///var/lib/weir", ["orders"]).records();
    /// let words = p.flat_map(|r| {
    ///     let text = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
    ///     text.split(' ').map(str::to_owned).collect::<Vec<_>>()
    /// });
    /// # drop(words);
    /// ```
    pub fn flat_map<U, I>(self, f: impl FnMut(T) -> I + Send + 'static) -> Pipeline<U>
    where
        U: Send + 'static,
        I: IntoIterator<Item = U> + 'static,
    {
        self.then(|inner| Box::new(ops::FlatMap { inner, f }))
    }

    /// Look at each value and its record.
    ///
    /// ```
    /// use weir_pipeline::{Job, OpError};
    /// let p = Job::new("j").source("log:///var/lib/weir", ["orders"]).records();
    /// let p = p.inspect(|_, r| println!("{}", r.coordinates()));
    /// # drop(p);
    /// ```
    pub fn inspect(self, f: impl FnMut(&T, &Record) + Send + 'static) -> Pipeline<T> {
        self.then(|inner| Box::new(ops::Inspect { inner, f }))
    }

    /// A fallible map: an `Err` follows this stage's policy ([`on_error`](Self::on_error)),
    /// a retriable one ([`OpError::retriable`]) pauses the partition and retries.
    ///
    /// ```
    /// use weir_pipeline::{Job, OpError};
    /// let p = Job::new("j").source("log:///var/lib/weir", ["orders"]).records();
    /// let amounts = p.try_map(|r| {
    ///     let text = std::str::from_utf8(r.value.as_deref().unwrap_or_default())
    ///         .map_err(OpError::permanent)?; // poison: a dead letter by default
    ///     text.trim().parse::<i64>().map_err(OpError::permanent)
    /// });
    /// # drop(amounts);
    /// ```
    pub fn try_map<U, E>(
        self,
        f: impl FnMut(T) -> std::result::Result<U, E> + Send + 'static,
    ) -> Pipeline<U>
    where
        U: Send + 'static,
        E: Into<OpError> + 'static,
    {
        self.then(|inner| {
            Box::new(ops::TryMap {
                inner,
                f,
                name: Arc::from("try_map"),
                policy: OnError::default(),
            })
        })
    }

    /// An async fallible map, at most `concurrency` calls at once, results in input
    /// order (so per-partition order is kept). An error follows this stage's policy;
    /// [`OpError::retriable`] (a service down) pauses the partition and retries.
    ///
    /// ```
    /// use weir_pipeline::{Job, OpError};
    /// let p = Job::new("j").source("log:///var/lib/weir", ["orders"]).records();
    /// let looked_up = p.map_async(8, |r| async move {
    ///     // e.g. an HTTP lookup; a timeout would be OpError::retriable
    ///     Ok::<_, OpError>(r.offset * 2)
    /// });
    /// # drop(looked_up);
    /// ```
    pub fn map_async<U, E, Fut>(
        self,
        concurrency: usize,
        f: impl Fn(T) -> Fut + Send + Sync + 'static,
    ) -> Pipeline<U>
    where
        U: Send + 'static,
        E: Into<OpError> + Send + 'static,
        Fut: Future<Output = std::result::Result<U, E>> + Send + 'static,
    {
        self.then(|inner| {
            Box::new(ops::MapAsync {
                inner,
                f,
                concurrency,
                name: Arc::from("map_async"),
                policy: OnError::default(),
            })
        })
    }

    /// Attach a key to each value.
    ///
    /// ```
    /// use weir_pipeline::{Job, OpError};
    /// let p = Job::new("j").source("log:///var/lib/weir", ["orders"]).records();
    /// let keyed = p.key_by(|r| r.partition);
    /// # drop(keyed);
    /// ```
    pub fn key_by<K: Send + 'static>(
        self,
        f: impl FnMut(&T) -> K + Send + 'static,
    ) -> Pipeline<Keyed<K, T>> {
        self.then(|inner| Box::new(ops::KeyBy { inner, f }))
    }

    /// Where the values go: a table spec ([`sink::Postgres`](crate::sink::Postgres)
    /// and the others), [`sink::custom`](crate::sink::custom) or
    /// [`sink::fan_out`](crate::sink::fan_out).
    pub fn sink<DB, S>(self, sink: S) -> Ready<DB, T, S::Sink>
    where
        DB: Database,
        T: Sync,
        S: IntoSink<DB, T>,
    {
        let sink = self
            .job
            .offset_store::<DB>()
            .and_then(|store| sink.into_sink(&SinkContext { store }));
        Ready {
            job: self.job,
            flow: self.flow,
            sink,
            pool: None,
        }
    }
}

/// A whole job, ready to [`build`](Self::build) or [`run_until`](Self::run_until).
pub struct Ready<DB: Dialect, T, S> {
    job: Job,
    flow: Box<dyn Flow<T>>,
    sink: std::result::Result<BuiltSink<DB, S>, (String, String)>,
    pool: Option<Pool<DB>>,
}

impl<DB: Dialect, T, S> std::fmt::Debug for Ready<DB, T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready")
            .field("job", &self.job.name)
            .finish_non_exhaustive()
    }
}

/// A validated job (see [`Ready::build`]).
pub struct Built<DB: Dialect, T, S> {
    cfg: runtime::Config,
    consumer_config: weir_core::ConsumerConfig,
    subscription: Subscription,
    store: OffsetStore<DB>,
    dead_letters: DeadLetters<DB>,
    flow: Box<dyn Flow<T>>,
    sink: BuiltSink<DB, S>,
    pool: PoolSource<DB>,
    connections: u32,
    /// Where to serve `/metrics` and the probes (feature `prometheus`).
    #[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
    http: Option<std::net::SocketAddr>,
    /// After how long without a loop turn, or in one commit attempt, the probes fail.
    #[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
    stall_timeout: Duration,
}

impl<DB: Dialect, T, S> std::fmt::Debug for Built<DB, T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("job", &self.cfg.job)
            .field("subscription", &self.subscription)
            .finish_non_exhaustive()
    }
}

enum PoolSource<DB: Dialect> {
    Pool(Pool<DB>),
    Url(String),
}

fn default_owner() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "weir".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}-{}-{nanos:08x}", std::process::id())
}

impl<DB, T, S> Ready<DB, T, S>
where
    DB: Database,
    T: Send + Sync + 'static,
    S: weir_sql::TransactionalSink<DB, T> + 'static,
{
    /// Use this pool instead of opening one from the URL.
    ///
    /// The pools weir opens set `TCP_NODELAY` on their connections, which sqlx 0.9
    /// does not: without it a commit can wait about 40 ms for a delayed ACK. Give your
    /// own pool the same with
    /// [`weir_sql::nodelay::after_connect`](weir_sql::nodelay::after_connect):
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), sqlx::Error> {
    /// let pool = sqlx::postgres::PgPoolOptions::new()
    ///     .max_connections(2)
    ///     .after_connect(weir_sql::nodelay::after_connect::<sqlx::Postgres>("127.0.0.1", 5432))
    ///     .connect("postgres://postgres@127.0.0.1:5432/test")
    ///     .await?;
    /// # drop(pool); Ok(()) }
    /// ```
    pub fn pool(mut self, pool: Pool<DB>) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Check everything that can be checked without connecting: the source and its
    /// configuration, the topics, the sink (tables, upsert keys against the row's
    /// columns), the database URL, conflicting settings. Errors name the stage.
    pub fn build(self) -> Result<Built<DB, T, S>> {
        let job = self.job;
        let name = job.name.clone();
        let fail = |stage: &str, reason: String| Error::Build {
            job: name.clone(),
            stage: stage.to_owned(),
            reason,
        };
        if let Some((stage, reason)) = job.problems.first() {
            return Err(fail(stage, reason.clone()));
        }
        let store = job
            .offset_store::<DB>()
            .map_err(|(stage, reason)| fail(&stage, reason))?;
        let dead_letters =
            DeadLetters::<DB>::new(&job.name).map_err(|e| fail("job name", e.to_string()))?;
        let dead_letters = match &job.settings.dead_letters_table {
            None => dead_letters,
            Some(t) => TableName::new(t)
                .and_then(|t| dead_letters.with_table(t))
                .map_err(|e| fail("dead letters table", e.to_string()))?,
        };
        let Some(source) = &job.source else {
            return Err(fail(
                "source",
                "no source: call `.source(\"log:///path\" or \"kafka://host:port\", [topics])`"
                    .into(),
            ));
        };
        if job.topics.is_empty() || job.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(fail("source", "no topics, or an empty topic name".into()));
        }
        let (consumer_config, source_reset) = source
            .resolve(&job.name, &job.overrides)
            .map_err(|(stage, reason)| fail(&stage, reason))?;
        let sink = self.sink.map_err(|(stage, reason)| fail(&stage, reason))?;
        let s = &job.settings;
        if s.batch_records == 0 || s.batch_bytes == 0 {
            return Err(fail(
                "settings",
                "batch_records and batch_bytes must be at least 1".into(),
            ));
        }
        if s.poll_timeout.is_zero() || s.shutdown_timeout.is_zero() {
            return Err(fail(
                "settings",
                "poll_timeout and shutdown_timeout must be above zero".into(),
            ));
        }
        let max_in_flight_records = s
            .max_in_flight_records
            .unwrap_or(s.batch_records.saturating_mul(defaults::IN_FLIGHT_BATCHES));
        if max_in_flight_records < s.batch_records {
            return Err(fail(
                "settings",
                format!("max_in_flight_records ({max_in_flight_records}) is below batch_records ({}): a batch could never fill", s.batch_records),
            ));
        }
        if s.max_in_flight_bytes < s.batch_bytes {
            return Err(fail(
                "settings",
                format!(
                    "max_in_flight_bytes ({}) is below batch_bytes ({}): a batch could never fill; lower batch_bytes or raise the limit",
                    s.max_in_flight_bytes, s.batch_bytes
                ),
            ));
        }
        if s.revoke_timeout >= consumer_config.max_poll_interval() {
            return Err(fail(
                "settings",
                format!(
                    "revoke_timeout ({:?}) must be below max.poll.interval.ms ({:?})",
                    s.revoke_timeout,
                    consumer_config.max_poll_interval()
                ),
            ));
        }
        for (name, d) in [
            ("metrics_interval", s.metrics_interval),
            ("lag_interval", s.lag_interval),
        ] {
            if d.is_zero() {
                return Err(fail("settings", format!("{name} must be above zero")));
            }
        }
        if let Some(stall) = s.stall_timeout.filter(|d| *d <= s.poll_timeout * 2) {
            return Err(fail(
                "stall_timeout",
                format!(
                    "{stall:?} would call an idle job stuck: it must exceed two poll timeouts ({:?})",
                    s.poll_timeout * 2
                ),
            ));
        }
        if s.http.is_some() && !cfg!(feature = "prometheus") {
            return Err(fail(
                "serve_http",
                "serving /metrics and the probes needs the `prometheus` feature (weir = { features = [\"prometheus\"] })".into(),
            ));
        }
        let http = match &s.http {
            None => None,
            Some(addr) => Some(addr.parse::<std::net::SocketAddr>().map_err(|e| {
                fail(
                    "serve_http",
                    format!("{addr:?} is not an address to listen on (ip:port, e.g. 127.0.0.1:9464): {e}"),
                )
            })?),
        };
        let pool = match (self.pool, &job.database) {
            (Some(p), _) => PoolSource::Pool(p),
            (None, Some(url)) => PoolSource::Url(url.clone()),
            (None, None) => match std::env::var("DATABASE_URL") {
                Ok(url) if !url.trim().is_empty() => PoolSource::Url(url),
                _ => {
                    return Err(fail(
                        "database",
                        "no database: call `.database(url)`, give a pool with `.pool(pool)`, or set DATABASE_URL".into(),
                    ))
                }
            },
        };
        if let PoolSource::Url(url) = &pool {
            if !DB::SCHEMES.iter().any(|s| url.starts_with(s)) {
                return Err(fail(
                    "database",
                    format!(
                        "`{}` is not a {:?} URL (the sink is for {:?}; expected {})",
                        redact(url),
                        DB::KIND,
                        DB::KIND,
                        DB::SCHEMES.join(" or ")
                    ),
                ));
            }
        }
        if s.connections == 0 {
            return Err(fail("settings", "connections must be at least 1".into()));
        }
        let cfg = runtime::Config {
            job: job.name.clone(),
            owner: s.owner.clone().unwrap_or_else(default_owner),
            batch_records: s.batch_records,
            batch_bytes: s.batch_bytes,
            linger: s.linger,
            poll_timeout: s.poll_timeout,
            max_in_flight_records,
            max_in_flight_bytes: s.max_in_flight_bytes,
            retry_for: s.retry_for,
            shutdown_timeout: s.shutdown_timeout,
            revoke_timeout: s.revoke_timeout,
            reset: s
                .reset
                .or(source_reset)
                .unwrap_or(AutoOffsetReset::Earliest),
            idle_transaction_timeout: s.idle_transaction_timeout,
            metrics_interval: s.metrics_interval,
            lag_interval: s.lag_interval,
        };
        Ok(Built {
            cfg,
            consumer_config,
            subscription: Subscription::topics(job.topics.clone()),
            store,
            dead_letters,
            flow: self.flow,
            sink,
            pool,
            connections: s.connections,
            http,
            // Stuck: no turn of the run loop for longer than a revoke, two polls
            // and a margin (a backpressure wait lasts at most one poll timeout).
            stall_timeout: s
                .stall_timeout
                .unwrap_or(s.revoke_timeout + s.poll_timeout * 2 + Duration::from_secs(30)),
        })
    }

    /// [`build`](Self::build), then [`Built::run_until`].
    pub async fn run_until<F>(self, stop: F) -> Result<Summary>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.build()?.run_until(stop).await
    }

    /// Run until SIGINT or SIGTERM ([`shutdown_signal`](crate::shutdown_signal)).
    pub async fn run(self) -> Result<Summary> {
        self.run_until(crate::shutdown_signal()).await
    }
}

impl<DB, T, S> Built<DB, T, S>
where
    DB: Database,
    T: Send + Sync + 'static,
    S: weir_sql::TransactionalSink<DB, T> + 'static,
{
    /// The consumer configuration the job will use (`group.id` filled in, auto-commit
    /// off).
    pub fn consumer_config(&self) -> &weir_core::ConsumerConfig {
        &self.consumer_config
    }

    /// Connect (database, then consumer), create the tables, run until `stop`
    /// resolves, then commit what is in flight and close the consumer.
    pub async fn run_until<F>(self, stop: F) -> Result<Summary>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let job = self.cfg.job.clone();
        // The stop future is watched from the start: a signal while connecting or
        // creating tables (which retry for a while on a database that is down) stops
        // the job there, with nothing to drain.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let watcher = tokio::spawn(async move {
            stop.await;
            let _ = stop_tx.send(true);
        });
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                if rx.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        let before = stopped();
        let r = self.start(job, before, stopped()).await;
        watcher.abort();
        r
    }

    /// Connect, set up (both given up when `before` resolves), then run until `stop`.
    async fn start(
        mut self,
        job: String,
        before: impl Future<Output = ()> + Send,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Summary> {
        let health = Arc::new(runtime::Health::default());
        // Served from the start, so a probe sees the job starting (live, not ready).
        #[cfg(feature = "prometheus")]
        let _http = match self.http {
            Some(addr) => {
                let within = self.stall_timeout;
                Some(crate::http::serve(addr, Arc::clone(&health), within, &job).await?)
            }
            None => None,
        };
        let pool = tokio::select! {
            r = self.prepare(&job) => r?,
            () = before => {
                tracing::info!(job = %job, "stopped before the job started");
                return Ok(Summary::default());
            }
        };
        self.launch(pool, stop, health).await
    }
}

impl<DB, T, S> Built<DB, T, S>
where
    DB: Database,
    T: Send + Sync + 'static,
    S: weir_sql::TransactionalSink<DB, T> + 'static,
{
    /// Open the pool (unless given one) and create the tables.
    async fn prepare(&mut self, job: &str) -> Result<Pool<DB>> {
        let pool = match &self.pool {
            PoolSource::Pool(p) => p.clone(),
            PoolSource::Url(url) => {
                DB::open(url, self.connections)
                    .await
                    .map_err(|e| Error::Build {
                        job: job.to_owned(),
                        stage: "database".to_owned(),
                        reason: format!("cannot connect to {}: {e}", redact(url)),
                    })?
            }
        };
        setup(
            &pool,
            &self.store,
            &self.dead_letters,
            std::mem::take(&mut self.sink.setup),
            self.cfg.retry_for,
        )
        .await?;
        Ok(pool)
    }

    /// Connect the consumer and run.
    async fn launch(
        self,
        pool: Pool<DB>,
        stop: impl Future<Output = ()> + Send + 'static,
        health: Arc<runtime::Health>,
    ) -> Result<Summary> {
        let consumer = crate::connect(self.consumer_config)?;
        let parts = runtime::Parts {
            cfg: self.cfg,
            pool,
            store: self.store,
            dead_letters: self.dead_letters,
            sink: self.sink.sink,
            flow: self.flow,
            subscription: self.subscription,
            health,
        };
        runtime::run(parts, consumer, stop).await
    }
}

/// Create the offsets, dead-letter and sink tables, retrying transient errors.
async fn setup<DB: Dialect>(
    pool: &Pool<DB>,
    store: &OffsetStore<DB>,
    dead_letters: &DeadLetters<DB>,
    sink_setup: Vec<crate::sink::Setup<DB>>,
    retry_for: Duration,
) -> Result<()> {
    let deadline = std::time::Instant::now() + retry_for;
    let mut backoff = Backoff::for_loop();
    loop {
        let r = async {
            store.migrate(pool).await?;
            dead_letters.migrate(pool).await
        }
        .await;
        match r {
            Ok(()) => break,
            Err(e) if e.is_retriable() && std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "creating the offsets and dead-letter tables failed, retrying");
                backoff.wait().await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    for step in sink_setup {
        // a setup step is FnOnce: retried steps are not possible, so fail clearly
        step(pool).await?;
    }
    Ok(())
}
