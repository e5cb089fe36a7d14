//! Exactly-once keyed aggregates and event-time windows, kept as rows of a table that
//! is updated in the same transaction as the offsets.
//!
//! ```no_run
//! use std::time::Duration;
//! use weir_pipeline::{agg, sink::Sqlite, Job};
//!
//! #[derive(serde::Deserialize)]
//! struct Order { customer: String, cents: i64, ts_ms: i64 }
//!
//! # async fn f() -> weir_pipeline::Result<()> {
//! Job::new("revenue")
//!     .source("log:///var/lib/weir", ["orders"])
//!     .database("sqlite:revenue.db")
//!     .value::<Order, _>(weir_formats::Json::new())
//!     .key_by(|o| o.customer.clone())
//!     .sink(
//!         Sqlite::aggregate(
//!             "revenue_per_minute",
//!             ["customer"],
//!             agg::count("orders")
//!                 .and(agg::sum("cents", |o: &Order| o.cents))
//!                 .and(agg::max("largest", |o: &Order| o.cents)),
//!         )
//!         .window(
//!             agg::Window::tumbling(Duration::from_secs(60))
//!                 .event_time(|o: &Order| o.ts_ms)
//!                 .allowed_lateness(Duration::from_secs(30)),
//!         ),
//!     )
//!     .run_until(weir_pipeline::shutdown_signal())
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ## Why the totals are exact, on any number of instances
//! Each batch is collapsed in memory by key (one row per key and window per batch),
//! then applied as **delta upserts**: `INSERT … ON CONFLICT (key) DO UPDATE SET n =
//! n + excluded.n` (`GREATEST`/`LEAST` for max and min; MySQL `ON DUPLICATE KEY
//! UPDATE`), in the transaction that also moves the batch's offsets forward with their
//! compare-and-set. A delta therefore commits exactly when its records are marked
//! consumed: a crash, a retry or a fenced zombie can neither lose nor double it. Count,
//! sum, min and max are commutative, so instances may update the same row in any
//! order: the aggregation key need not be the partitioning key and no repartition
//! topic is needed. Rows are applied in sorted key order so that two instances take
//! their row locks in the same order; a deadlock or serialization failure that still
//! happens rolls the whole transaction back and is retried (never half-applied).
//! Integer sums and counts are exact; `f64` sums depend on the order of additions.
//! `avg` is stored as `<name>_sum` and `<name>_count`: read `sum / count`.
//!
//! ## Windows and watermarks
//! With [`AggregateTable::window`] each record is assigned, by its event time (epoch
//! milliseconds from your function), to one tumbling window or to every hopping
//! window that holds it; a row per key and window carries `window_start`,
//! `window_end` (exclusive) and `closed`.
//! - Each partition's **watermark** is the largest event time it committed minus the
//!   allowed lateness. It is stored in the partition's offsets row (column
//!   `watermark`) in the same transaction, so it survives restarts and rebalances.
//! - The **global watermark** is the minimum over the job's partitions that are
//!   active (claimed or committed within the idle timeout); a partition that never
//!   committed a windowed record counts as holding every window open until it is
//!   idle. It is read from the offsets table, so it is global across instances.
//! - A window is **closed** (`closed` set, in a commit transaction) once the global
//!   watermark reaches its end. Read final results with `WHERE closed`. A stream that
//!   stops entirely leaves its last windows open until records arrive again.
//! - A record is **late** when one of its windows ends at or before its partition's
//!   watermark or the global watermark: such a window is closed or about to be. The
//!   policy ([`Late`]): into the dead letters (default), dropped and counted in
//!   [`Summary::dropped`](crate::Summary::dropped), or applied anyway (a closed row
//!   then changes).
//! - **Idle partitions**: a partition without a commit for the idle timeout (default
//!   [`DEFAULT_IDLE_TIMEOUT`], 60 s) stops holding windows open. The default is well
//!   above the seconds between commits of a partition that has traffic and a
//!   rebalance's pause, so a busy partition is never taken for idle, and short enough
//!   that one quiet partition delays final results by a minute, not forever. A
//!   partition that wakes up after its windows closed has its old records treated as
//!   late.
//!
//! ## Changing the definition
//! The table's definition (key columns, aggregates, window) is stored in
//! `weir_aggregates` when the job starts. A job that finds the table defined
//! differently refuses to start, naming both definitions: adding to rows computed
//! another way would silently mix two meanings. Use a new table (and a new job name
//! to recompute from the start of the log), or [`AggregateTable::start_fresh`] to
//! empty the table and count from the job's current offsets on.

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{Pool, Transaction};
use weir_core::{Coordinates, TopicPartition};
use weir_sql::{
    ColumnType, Dialect, DialectKind, Ident, Item, OffsetStore, Refusal, TableName,
    TransactionalSink, Value,
};

use crate::sink::{BuiltSink, IntoSink, Setup, SinkContext};
use crate::Keyed;

mod fold;
pub use fold::{FoldSink, FoldTable};

/// How long a partition may go without a commit before it stops holding windows open
/// (see the module docs for the reasoning).
///
/// ```
/// assert_eq!(weir_pipeline::agg::DEFAULT_IDLE_TIMEOUT.as_secs(), 60);
/// ```
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// `write` of a sink that refuses records: a caller that cannot dead-letter them (a
/// plain `write`) gets an error naming the first.
pub(crate) fn refused_whole(sink: &str, refused: &[Refusal]) -> weir_sql::Result<()> {
    match refused.first() {
        None => Ok(()),
        Some(r) => Err(weir_sql::Error::Sink {
            sink: sink.to_owned(),
            message: format!(
                "{} record(s) refused, first {}: {}",
                refused.len(),
                r.at,
                r.reason
            ),
            retriable: false,
        }),
    }
}

/// The longest [`Window::idle_timeout`]: 30 days.
///
/// ```
/// assert_eq!(weir_pipeline::agg::MAX_IDLE_TIMEOUT.as_secs(), 30 * 86_400);
/// ```
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 86_400);

/// Most rows one delta-upsert statement carries (a power of two).
const MAX_CHUNK: usize = 512;

type Extract<T> = Arc<dyn Fn(&T) -> Num + Send + Sync>;

/// A number an aggregate takes from a value.
#[derive(Clone, Copy, Debug, PartialEq)]
#[doc(hidden)]
pub enum Num {
    Int(i64),
    Float(f64),
}

/// Numbers [`sum`], [`min`], [`max`] and [`avg`] accept: integers are stored as
/// `BIGINT` and added exactly, floats as `DOUBLE PRECISION`.
///
/// ```
/// use weir_pipeline::agg::Numeric;
/// assert!(!<i32 as Numeric>::FLOAT);
/// assert!(<f64 as Numeric>::FLOAT);
/// ```
pub trait Numeric: Copy {
    /// Whether the column is a float.
    const FLOAT: bool;
    #[doc(hidden)]
    fn num(self) -> Num;
}

macro_rules! numeric_int {
    ($($t:ty),*) => {$(
        impl Numeric for $t {
            const FLOAT: bool = false;
            fn num(self) -> Num {
                Num::Int(i64::from(self))
            }
        }
    )*};
}
numeric_int!(i8, i16, i32, i64, u8, u16, u32);

impl Numeric for f64 {
    const FLOAT: bool = true;
    fn num(self) -> Num {
        Num::Float(self)
    }
}

impl Numeric for f32 {
    const FLOAT: bool = true;
    fn num(self) -> Num {
        Num::Float(f64::from(self))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Count,
    Sum,
    Min,
    Max,
}

struct Column<T> {
    name: String,
    kind: Kind,
    float: bool,
    extract: Option<Extract<T>>,
}

impl<T> Clone for Column<T> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            kind: self.kind,
            float: self.float,
            extract: self.extract.clone(),
        }
    }
}

/// The aggregate columns of an [`AggregateTable`]: made by [`count`], [`sum`],
/// [`min`], [`max`], [`avg`], combined with [`and`](Self::and).
///
/// ```
/// use weir_pipeline::agg;
/// struct Order { cents: i64 }
/// let a = agg::count::<Order>("orders").and(agg::sum("cents", |o: &Order| o.cents));
/// assert_eq!(a.columns(), ["orders", "cents"]);
/// ```
pub struct Aggregates<T> {
    cols: Vec<Column<T>>,
}

impl<T> std::fmt::Debug for Aggregates<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregates")
            .field("columns", &self.definition())
            .finish()
    }
}

impl<T> Aggregates<T> {
    fn one(name: &str, kind: Kind, float: bool, extract: Option<Extract<T>>) -> Self {
        Self {
            cols: vec![Column {
                name: name.to_owned(),
                kind,
                float,
                extract,
            }],
        }
    }

    /// These aggregates and `other`'s.
    ///
    /// ```
    /// use weir_pipeline::agg;
    /// let a = agg::count::<i64>("n").and(agg::max("top", |v: &i64| *v));
    /// assert_eq!(a.columns().len(), 2);
    /// ```
    pub fn and(mut self, other: Aggregates<T>) -> Self {
        self.cols.extend(other.cols);
        self
    }

    /// The column names, in order.
    ///
    /// ```
    /// let a = weir_pipeline::agg::avg("amount", |v: &f64| *v);
    /// assert_eq!(a.columns(), ["amount_sum", "amount_count"]);
    /// ```
    pub fn columns(&self) -> Vec<&str> {
        self.cols.iter().map(|c| c.name.as_str()).collect()
    }

    fn definition(&self) -> String {
        self.cols
            .iter()
            .map(|c| {
                let kind = match c.kind {
                    Kind::Count => "count",
                    Kind::Sum => "sum",
                    Kind::Min => "min",
                    Kind::Max => "max",
                };
                let ty = if c.kind == Kind::Count {
                    ""
                } else if c.float {
                    "(float)"
                } else {
                    "(int)"
                };
                format!("{}={kind}{ty}", c.name)
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn extract<T, N: Numeric>(f: impl Fn(&T) -> N + Send + Sync + 'static) -> Extract<T> {
    Arc::new(move |t| f(t).num())
}

/// The number of records per key (and window), in a `BIGINT` column `column`.
///
/// ```
/// let a = weir_pipeline::agg::count::<String>("orders");
/// assert_eq!(a.columns(), ["orders"]);
/// ```
pub fn count<T>(column: &str) -> Aggregates<T> {
    Aggregates::one(column, Kind::Count, false, None)
}

/// The sum of `f(value)` per key (and window).
///
/// ```
/// struct Order { cents: i64 }
/// let a = weir_pipeline::agg::sum("cents", |o: &Order| o.cents);
/// # drop(a);
/// ```
pub fn sum<T, N: Numeric>(
    column: &str,
    f: impl Fn(&T) -> N + Send + Sync + 'static,
) -> Aggregates<T> {
    Aggregates::one(column, Kind::Sum, N::FLOAT, Some(extract(f)))
}

/// The smallest `f(value)` per key (and window).
///
/// ```
/// struct Order { cents: i64 }
/// let a = weir_pipeline::agg::min("smallest", |o: &Order| o.cents);
/// # drop(a);
/// ```
pub fn min<T, N: Numeric>(
    column: &str,
    f: impl Fn(&T) -> N + Send + Sync + 'static,
) -> Aggregates<T> {
    Aggregates::one(column, Kind::Min, N::FLOAT, Some(extract(f)))
}

/// The largest `f(value)` per key (and window).
///
/// ```
/// struct Order { cents: i64 }
/// let a = weir_pipeline::agg::max("largest", |o: &Order| o.cents);
/// # drop(a);
/// ```
pub fn max<T, N: Numeric>(
    column: &str,
    f: impl Fn(&T) -> N + Send + Sync + 'static,
) -> Aggregates<T> {
    Aggregates::one(column, Kind::Max, N::FLOAT, Some(extract(f)))
}

/// The mean of `f(value)`, stored exactly as two columns `<column>_sum` and
/// `<column>_count` (read `sum / count`; an average of averages would be wrong
/// across batches and instances).
///
/// ```
/// struct Order { cents: i64 }
/// let a = weir_pipeline::agg::avg("cents", |o: &Order| o.cents);
/// assert_eq!(a.columns(), ["cents_sum", "cents_count"]);
/// ```
pub fn avg<T, N: Numeric>(
    column: &str,
    f: impl Fn(&T) -> N + Send + Sync + 'static,
) -> Aggregates<T> {
    sum(&format!("{column}_sum"), f).and(count(&format!("{column}_count")))
}

/// One column of a group key (see [`GroupKey`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[doc(hidden)]
pub enum KeyPart {
    Bool(bool),
    Int(i64),
    Text(Box<str>),
}

/// A key [`Pipeline::key_by`](crate::Pipeline::key_by) may produce for an
/// aggregate: a string, an integer or a bool, or a tuple of two or three of them (one
/// column each).
///
/// ```
/// use weir_pipeline::agg::GroupKey;
/// assert_eq!(<(String, i32) as GroupKey>::types().len(), 2);
/// ```
pub trait GroupKey: Send + Sync {
    /// The column types, in order.
    fn types() -> Vec<ColumnType>;
    #[doc(hidden)]
    fn parts(&self, out: &mut Vec<KeyPart>);
}

/// A single-column [`GroupKey`]: `String`, `Arc<str>`, `&'static str`, `i16`,
/// `i32`, `i64`, `bool` (implemented by weir; tuples of them are composite keys).
///
/// ```
/// use weir_pipeline::agg::GroupKey;
/// assert_eq!(<i64 as GroupKey>::types().len(), 1);
/// assert_eq!(<(String, i64, bool) as GroupKey>::types().len(), 3);
/// ```
pub trait KeyColumn: Send + Sync {
    /// The column type.
    const TYPE: ColumnType;
    #[doc(hidden)]
    fn part(&self) -> KeyPart;
}

macro_rules! key_int {
    ($($t:ty => $ct:ident),*) => {$(
        impl KeyColumn for $t {
            const TYPE: ColumnType = ColumnType::$ct;
            fn part(&self) -> KeyPart {
                KeyPart::Int(i64::from(*self))
            }
        }
    )*};
}
key_int!(i16 => SmallInt, i32 => Int, i64 => BigInt);

impl KeyColumn for bool {
    const TYPE: ColumnType = ColumnType::Bool;
    fn part(&self) -> KeyPart {
        KeyPart::Bool(*self)
    }
}

impl KeyColumn for String {
    const TYPE: ColumnType = ColumnType::Text;
    fn part(&self) -> KeyPart {
        KeyPart::Text(self.as_str().into())
    }
}

impl KeyColumn for Arc<str> {
    const TYPE: ColumnType = ColumnType::Text;
    fn part(&self) -> KeyPart {
        KeyPart::Text((**self).into())
    }
}

impl KeyColumn for &'static str {
    const TYPE: ColumnType = ColumnType::Text;
    fn part(&self) -> KeyPart {
        KeyPart::Text((*self).into())
    }
}

impl<K: KeyColumn> GroupKey for K {
    fn types() -> Vec<ColumnType> {
        vec![K::TYPE]
    }
    fn parts(&self, out: &mut Vec<KeyPart>) {
        out.push(self.part());
    }
}

impl<A: KeyColumn, B: KeyColumn> GroupKey for (A, B) {
    fn types() -> Vec<ColumnType> {
        vec![A::TYPE, B::TYPE]
    }
    fn parts(&self, out: &mut Vec<KeyPart>) {
        out.push(self.0.part());
        out.push(self.1.part());
    }
}

impl<A: KeyColumn, B: KeyColumn, C: KeyColumn> GroupKey for (A, B, C) {
    fn types() -> Vec<ColumnType> {
        vec![A::TYPE, B::TYPE, C::TYPE]
    }
    fn parts(&self, out: &mut Vec<KeyPart>) {
        out.push(self.0.part());
        out.push(self.1.part());
        out.push(self.2.part());
    }
}

/// What happens to a record later than the allowed lateness (one of its windows ends
/// at or before the watermark).
///
/// ```
/// assert_eq!(weir_pipeline::agg::Late::default(), weir_pipeline::agg::Late::DeadLetter);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Late {
    /// Into the dead letters (stage `sink`, the reason names the window and the
    /// watermark), in the same transaction.
    #[default]
    DeadLetter,
    /// Consumed without effect, counted in [`Summary::dropped`](crate::Summary::dropped).
    Drop,
    /// Applied anyway: a row already marked `closed` changes.
    Apply,
}

/// A value's event time in ms since the epoch.
type EventTime<T> = Arc<dyn Fn(&T) -> i64 + Send + Sync>;

/// An event-time window: tumbling or hopping, sized in milliseconds of event time.
/// Made by [`Window::tumbling`] or [`Window::hopping`], then given the event time with
/// [`event_time`](WindowSpec::event_time) (from the value) or
/// [`record_time`](WindowSpec::record_time) (the record's timestamp).
///
/// ```
/// use std::time::Duration;
/// use weir_pipeline::agg::Window;
/// struct Order { ts_ms: i64 }
/// let w = Window::hopping(Duration::from_secs(60), Duration::from_secs(10))
///     .event_time(|o: &Order| o.ts_ms)
///     .allowed_lateness(Duration::from_secs(5));
/// assert_eq!(w.windows_of(65_000), [(10_000, 70_000), (20_000, 80_000), (30_000, 90_000), (40_000, 100_000), (50_000, 110_000), (60_000, 120_000)]);
/// ```
pub struct Window<T> {
    size: i64,
    slide: i64,
    /// `None`: the record's own timestamp ([`WindowSpec::record_time`]).
    event_time: Option<EventTime<T>>,
    lateness: i64,
    late: Late,
    idle: Duration,
}

impl<T> std::fmt::Debug for Window<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("size_ms", &self.size)
            .field("slide_ms", &self.slide)
            .field("lateness_ms", &self.lateness)
            .field("late", &self.late)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

/// A window's sizes, waiting for its event-time function (see [`Window`]).
///
/// ```
/// use std::time::Duration;
/// let spec = weir_pipeline::agg::Window::hopping(Duration::from_secs(60), Duration::from_secs(10));
/// let w = spec.event_time(|ts: &i64| *ts); // now a `Window<i64>`
/// # drop(w);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct WindowSpec {
    size: Duration,
    slide: Duration,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Window<()> {
    /// Windows of `size` one after another: every record is in exactly one.
    ///
    /// ```
    /// use std::time::Duration;
    /// let w = weir_pipeline::agg::Window::tumbling(Duration::from_secs(60)).event_time(|t: &i64| *t);
    /// assert_eq!(w.windows_of(61_000), [(60_000, 120_000)]);
    /// assert_eq!(w.windows_of(-1), [(-60_000, 0)]);
    /// ```
    pub fn tumbling(size: Duration) -> WindowSpec {
        WindowSpec { size, slide: size }
    }

    /// Windows of `size` starting every `slide`: a record is in `size / slide` of them.
    ///
    /// ```
    /// use std::time::Duration;
    /// let w = weir_pipeline::agg::Window::hopping(Duration::from_secs(10), Duration::from_secs(5)).event_time(|t: &i64| *t);
    /// assert_eq!(w.windows_of(7_000), [(0, 10_000), (5_000, 15_000)]);
    /// ```
    pub fn hopping(size: Duration, slide: Duration) -> WindowSpec {
        WindowSpec { size, slide }
    }
}

impl WindowSpec {
    /// The event time of a value, in milliseconds since the Unix epoch (a timestamp
    /// field of the value; for the record's own timestamp, see
    /// [`record_time`](Self::record_time)).
    ///
    /// ```
    /// use std::time::Duration;
    /// struct Order { ts_ms: i64 }
    /// let w = weir_pipeline::agg::Window::tumbling(Duration::from_secs(1)).event_time(|o: &Order| o.ts_ms);
    /// # drop(w);
    /// ```
    pub fn event_time<T>(self, f: impl Fn(&T) -> i64 + Send + Sync + 'static) -> Window<T> {
        self.with_clock(Some(Arc::new(f)))
    }

    /// The event time is the record's own timestamp (Kafka's `CreateTime` or
    /// `LogAppendTime`, the embedded log's append time or the producer's), for values
    /// of any type. A record without a timestamp is refused into the dead letters.
    ///
    /// ```
    /// use std::time::Duration;
    /// let w = weir_pipeline::agg::Window::tumbling(Duration::from_secs(60)).record_time::<String>();
    /// # drop(w);
    /// ```
    pub fn record_time<T>(self) -> Window<T> {
        self.with_clock(None)
    }

    fn with_clock<T>(self, event_time: Option<EventTime<T>>) -> Window<T> {
        Window {
            size: millis(self.size),
            slide: millis(self.slide),
            event_time,
            lateness: 0,
            late: Late::default(),
            idle: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl<T> Window<T> {
    /// How far behind its partition's newest event time a record may be and still
    /// count (default 0): the watermark is the newest event time minus this.
    ///
    /// ```
    /// use std::time::Duration;
    /// let w = weir_pipeline::agg::Window::tumbling(Duration::from_secs(60))
    ///     .event_time(|t: &i64| *t)
    ///     .allowed_lateness(Duration::from_secs(30));
    /// # drop(w);
    /// ```
    pub fn allowed_lateness(mut self, d: Duration) -> Self {
        self.lateness = millis(d);
        self
    }

    /// What to do with late records (default [`Late::DeadLetter`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir_pipeline::agg::{Late, Window};
    /// let w = Window::tumbling(Duration::from_secs(60)).event_time(|t: &i64| *t).on_late(Late::Drop);
    /// # drop(w);
    /// ```
    pub fn on_late(mut self, policy: Late) -> Self {
        self.late = policy;
        self
    }

    /// After how long without a commit a partition stops holding windows open
    /// (default [`DEFAULT_IDLE_TIMEOUT`]; 1 s to [`MAX_IDLE_TIMEOUT`], checked when
    /// the job is built).
    ///
    /// ```
    /// use std::time::Duration;
    /// let w = weir_pipeline::agg::Window::tumbling(Duration::from_secs(60))
    ///     .event_time(|t: &i64| *t)
    ///     .idle_timeout(Duration::from_secs(10));
    /// # drop(w);
    /// ```
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle = d;
        self
    }

    /// The windows `[start, end)` that hold event time `t`, oldest first.
    ///
    /// ```
    /// use std::time::Duration;
    /// let w = weir_pipeline::agg::Window::tumbling(Duration::from_millis(10)).event_time(|t: &i64| *t);
    /// assert_eq!(w.windows_of(25), [(20, 30)]);
    /// ```
    pub fn windows_of(&self, t: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        if self.size <= 0 || self.slide <= 0 {
            return out;
        }
        // In i128: a window near the ends of the i64 range has an end beyond it
        // (clamped when stored).
        let (t, size, slide) = (i128::from(t), i128::from(self.size), i128::from(self.slide));
        let clamp = |v: i128| i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX });
        let mut start = t.div_euclid(slide) * slide;
        while start + size > t {
            out.push((clamp(start), clamp(start + size)));
            start -= slide;
        }
        out.reverse();
        out
    }

    fn definition(&self) -> String {
        format!(
            "window(size={}ms,slide={}ms,lateness={}ms)",
            self.size, self.slide, self.lateness
        )
    }
}

/// A table of aggregates per key (and window), made by
/// [`sink::Postgres::aggregate`](crate::sink::Postgres::aggregate) and the others;
/// the sink of a [`Pipeline`](crate::Pipeline) of [`Keyed`] values.
///
/// ```
/// use weir_pipeline::{agg, sink::Postgres};
/// struct Order { cents: i64 }
/// let t = Postgres::aggregate("totals", ["customer"], agg::sum("cents", |o: &Order| o.cents));
/// # drop(t);
/// ```
pub struct AggregateTable<DB, T> {
    table: String,
    keys: Vec<String>,
    aggs: Aggregates<T>,
    window: Option<Window<T>>,
    create: bool,
    fresh: bool,
    _db: PhantomData<fn() -> DB>,
}

impl<DB, T> std::fmt::Debug for AggregateTable<DB, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregateTable")
            .field("table", &self.table)
            .field("keys", &self.keys)
            .field("aggs", &self.aggs)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl<DB, T> AggregateTable<DB, T> {
    pub(crate) fn new<I, S>(table: &str, keys: I, aggs: Aggregates<T>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            table: table.to_owned(),
            keys: keys.into_iter().map(Into::into).collect(),
            aggs,
            window: None,
            create: true,
            fresh: false,
            _db: PhantomData,
        }
    }

    /// Aggregate per event-time window too (see the [module docs](self)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir_pipeline::{agg, sink::Sqlite};
    /// let t = Sqlite::aggregate("per_minute", ["k"], agg::count::<i64>("n"))
    ///     .window(agg::Window::tumbling(Duration::from_secs(60)).event_time(|t: &i64| *t));
    /// # drop(t);
    /// ```
    pub fn window(mut self, window: Window<T>) -> Self {
        self.window = Some(window);
        self
    }

    /// If the table holds aggregates of another definition (other keys, aggregates
    /// or window), empty it (a table weir created is dropped and created again in the
    /// new shape) and record this definition instead of refusing to start.
    /// The table then counts only what the job reads from now on: the job's offsets
    /// are kept, so records it already consumed are not counted again. To recompute
    /// from the start of the log, use a new table and a new job name instead.
    ///
    /// ```
    /// use weir_pipeline::{agg, sink::Sqlite};
    /// let t = Sqlite::aggregate("totals", ["k"], agg::count::<i64>("n")).start_fresh();
    /// # drop(t);
    /// ```
    pub fn start_fresh(mut self) -> Self {
        self.fresh = true;
        self
    }

    /// Create the table at start if it is missing (default true).
    ///
    /// ```
    /// use weir_pipeline::{agg, sink::Sqlite};
    /// let t = Sqlite::aggregate("totals", ["k"], agg::count::<i64>("n")).create_if_missing(false);
    /// # drop(t);
    /// ```
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create = create;
        self
    }
}

/// The statements of one aggregate table, built once.
#[derive(Debug)]
struct Plan {
    kind: DialectKind,
    quoted: String,
    /// Key columns, then (windowed) `window_start`, `window_end`, `closed`, then the
    /// aggregates.
    insert_head: String,
    conflict_tail: String,
    ncols: usize,
    close: Option<Arc<str>>,
    /// The SQL for a chunk of `n` rows, by power of two.
    chunks: parking_lot::Mutex<HashMap<usize, Arc<str>>>,
    create: Vec<Arc<str>>,
    definition: String,
    key_types: Vec<ColumnType>,
    /// PostgreSQL: the whole batch in one `INSERT … SELECT * FROM UNNEST($1::T[], …)`.
    unnest: Arc<str>,
    /// The type of every column, in statement order.
    col_types: Vec<ColumnType>,
}

pub(crate) fn placeholder(kind: DialectKind, n: usize) -> String {
    match kind {
        DialectKind::Postgres => format!("${n}"),
        // SQLite: plain `?` (bound in order); numbered `?N` parameters make sqlx
        // look each one up by name: the aggregate bench ran 131k rec/s with them,
        // 587k with `?` (100k records into 10k keys).
        _ => "?".to_owned(),
    }
}

impl Plan {
    fn new<T>(
        kind: DialectKind,
        table: &TableName,
        keys: &[String],
        key_types: Vec<ColumnType>,
        aggs: &Aggregates<T>,
        window: Option<&Window<T>>,
    ) -> Result<Self, String> {
        if keys.is_empty() {
            return Err("no key column: name one per part of the key_by key".into());
        }
        if keys.len() != key_types.len() {
            return Err(format!(
                "{} key column(s) named ({}) but the key_by key has {} part(s)",
                keys.len(),
                keys.join(", "),
                key_types.len()
            ));
        }
        if aggs.cols.is_empty() {
            return Err("no aggregate".into());
        }
        let q = |name: &str| -> Result<String, String> {
            Ident::new(name)
                .map(|i| i.quoted(kind))
                .map_err(|e| format!("column `{name}`: {e}"))
        };
        let mut names: Vec<&str> = keys.iter().map(String::as_str).collect();
        if window.is_some() {
            names.extend(["window_start", "window_end", "closed"]);
        }
        names.extend(aggs.cols.iter().map(|c| c.name.as_str()));
        let mut seen = std::collections::BTreeSet::new();
        for n in &names {
            if !seen.insert(n.to_ascii_lowercase()) {
                return Err(format!("column `{n}` appears twice (window columns are window_start, window_end, closed)"));
            }
        }
        let quoted = table.quoted(kind);
        let cols: Vec<String> = names.iter().map(|n| q(n)).collect::<Result<_, _>>()?;
        let mut pk: Vec<String> = cols[..keys.len()].to_vec();
        if window.is_some() {
            pk.push(cols[keys.len()].clone());
        }
        let pk = pk.join(", ");
        let insert_head = match kind {
            DialectKind::Postgres => format!(
                "INSERT INTO {quoted} AS weir_t ({}) VALUES ",
                cols.join(", ")
            ),
            _ => format!("INSERT INTO {quoted} ({}) VALUES ", cols.join(", ")),
        };
        let first_agg = names.len() - aggs.cols.len();
        let sets: Vec<String> = aggs
            .cols
            .iter()
            .zip(&cols[first_agg..])
            .map(|(c, col)| {
                let (old, new) = match kind {
                    DialectKind::Postgres => (format!("weir_t.{col}"), format!("excluded.{col}")),
                    DialectKind::Sqlite => (col.clone(), format!("excluded.{col}")),
                    _ => (col.clone(), format!("VALUES({col})")),
                };
                let expr = match (c.kind, kind) {
                    (Kind::Count | Kind::Sum, _) => format!("{old} + {new}"),
                    (Kind::Min, DialectKind::Sqlite) => format!("min({old}, {new})"),
                    (Kind::Max, DialectKind::Sqlite) => format!("max({old}, {new})"),
                    (Kind::Min, _) => format!("LEAST({old}, {new})"),
                    (Kind::Max, _) => format!("GREATEST({old}, {new})"),
                };
                format!("{col} = {expr}")
            })
            .collect();
        let conflict_tail = match kind {
            DialectKind::MySql => format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", ")),
            _ => format!(" ON CONFLICT ({pk}) DO UPDATE SET {}", sets.join(", ")),
        };
        let ty = |t: ColumnType, key: bool| t.sql_name(kind, key);
        let mut defs: Vec<String> = Vec::new();
        for (c, t) in cols.iter().zip(&key_types) {
            defs.push(format!("{c} {} NOT NULL", ty(*t, true)));
        }
        if window.is_some() {
            let b = ty(ColumnType::BigInt, true);
            defs.push(format!("{} {b} NOT NULL", cols[keys.len()]));
            defs.push(format!("{} {b} NOT NULL", cols[keys.len() + 1]));
            defs.push(format!(
                "{} {} NOT NULL DEFAULT FALSE",
                cols[keys.len() + 2],
                ty(ColumnType::Bool, false)
            ));
        }
        for (c, col) in aggs.cols.iter().zip(&cols[first_agg..]) {
            let t = if c.kind != Kind::Count && c.float {
                ColumnType::Double
            } else {
                ColumnType::BigInt
            };
            defs.push(format!("{col} {} NOT NULL", ty(t, false)));
        }
        let mut create: Vec<Arc<str>> = Vec::new();
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
        let (closing_index, engine) = match (kind, window.is_some()) {
            (DialectKind::MySql, true) => (
                format!(
                    ", INDEX weir_closing ({}, {})",
                    cols[keys.len() + 2],
                    cols[keys.len() + 1]
                ),
                " ENGINE=InnoDB",
            ),
            (DialectKind::MySql, false) => (String::new(), " ENGINE=InnoDB"),
            _ => (String::new(), ""),
        };
        create.push(Arc::from(format!(
            "CREATE TABLE IF NOT EXISTS {quoted} ({}, PRIMARY KEY ({pk}){closing_index}){engine}",
            defs.join(", ")
        )));
        let close = window.map(|_| {
            let (closed, end) = (&cols[keys.len() + 2], &cols[keys.len() + 1]);
            Arc::from(format!(
                "UPDATE {quoted} SET {closed} = TRUE WHERE {closed} = FALSE AND {end} <= {}",
                placeholder(kind, 1)
            ))
        });
        if let (Some(_), DialectKind::Postgres | DialectKind::Sqlite) = (window, kind) {
            let index = Ident::new(&format!("{}_weir_closing", table.name().as_str()))
                .map_err(|e| format!("index name: {e}"))?;
            let on = match (table.schema(), kind) {
                (Some(s), DialectKind::Sqlite) => {
                    format!("{}.{}", s.quoted(kind), index.quoted(kind))
                }
                _ => index.quoted(kind),
            };
            create.push(Arc::from(format!(
                "CREATE INDEX IF NOT EXISTS {on} ON {} ({}, {})",
                match (table.schema(), kind) {
                    (Some(_), DialectKind::Sqlite) => table.name().quoted(kind),
                    _ => quoted.clone(),
                },
                cols[keys.len() + 2],
                cols[keys.len() + 1]
            )));
        }
        let mut definition = format!(
            "keys({}) aggregates({})",
            keys.iter()
                .zip(&key_types)
                .map(|(k, t)| format!("{k}:{}", t.sql_name(DialectKind::Postgres, false)))
                .collect::<Vec<_>>()
                .join(","),
            aggs.definition()
        );
        if let Some(w) = window {
            definition.push(' ');
            definition.push_str(&w.definition());
        }
        let mut col_types = key_types.clone();
        if window.is_some() {
            col_types.extend([ColumnType::BigInt, ColumnType::BigInt, ColumnType::Bool]);
        }
        col_types.extend(aggs.cols.iter().map(|c| {
            if c.kind != Kind::Count && c.float {
                ColumnType::Double
            } else {
                ColumnType::BigInt
            }
        }));
        let arrays: Vec<String> = col_types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!(
                    "${}::{}[]",
                    i + 1,
                    match t {
                        ColumnType::Bool => "BOOLEAN",
                        ColumnType::SmallInt => "SMALLINT",
                        ColumnType::Int => "INTEGER",
                        ColumnType::BigInt => "BIGINT",
                        ColumnType::Double => "DOUBLE PRECISION",
                        _ => "TEXT",
                    }
                )
            })
            .collect();
        let unnest = Arc::from(format!(
            "INSERT INTO {quoted} AS weir_t ({}) SELECT * FROM UNNEST({}){conflict_tail}",
            cols.join(", "),
            arrays.join(", ")
        ));
        Ok(Self {
            unnest,
            col_types,
            kind,
            quoted,
            insert_head,
            conflict_tail,
            ncols: names.len(),
            close,
            chunks: parking_lot::Mutex::new(HashMap::new()),
            create,
            definition,
            key_types,
        })
    }

    /// The delta upsert of `n` rows.
    fn upsert(&self, n: usize) -> Arc<str> {
        let mut cache = self.chunks.lock();
        if let Some(s) = cache.get(&n) {
            return s.clone();
        }
        let mut sql = String::with_capacity(
            self.insert_head.len() + n * self.ncols * 5 + self.conflict_tail.len(),
        );
        sql.push_str(&self.insert_head);
        let mut p = 0;
        for r in 0..n {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..self.ncols {
                if c > 0 {
                    sql.push_str(", ");
                }
                p += 1;
                sql.push_str(&placeholder(self.kind, p));
            }
            sql.push(')');
        }
        sql.push_str(&self.conflict_tail);
        let sql: Arc<str> = Arc::from(sql);
        cache.insert(n, sql.clone());
        sql
    }

    /// Rows per statement: a power of two within the dialect's parameter limit.
    fn max_chunk(&self, max_params: usize) -> usize {
        let fit = (max_params / self.ncols.max(1)).clamp(1, MAX_CHUNK);
        1 << (usize::BITS - 1 - fit.leading_zeros())
    }
}

/// One aggregate column's value for a key in a batch.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Acc {
    Int(i64),
    Float(f64),
}

/// The sink an [`AggregateTable`] becomes when the job is built; it appears in the
/// job's type (`Ready<DB, Keyed<K, T>, AggregateSink<DB, T>>`), not in user code.
///
/// ```
/// type TotalsJob = weir_pipeline::Ready<
///     sqlx::Sqlite,
///     weir_pipeline::Keyed<String, i64>,
///     weir_pipeline::agg::AggregateSink<sqlx::Sqlite, i64>,
/// >;
/// ```
pub struct AggregateSink<DB: Dialect, T> {
    plan: Arc<Plan>,
    aggs: Aggregates<T>,
    window: Option<Window<T>>,
    store: OffsetStore<DB>,
    name: String,
}

impl<DB: Dialect, T> std::fmt::Debug for AggregateSink<DB, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregateSink")
            .field("table", &self.plan.quoted)
            .field("definition", &self.plan.definition)
            .finish_non_exhaustive()
    }
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// Group key of one row of a batch: key parts, then the window start.
type RowKey = (Vec<KeyPart>, Option<(i64, i64)>);

impl<DB: Dialect, T: Send + Sync> AggregateSink<DB, T> {
    /// Fold one value into its row's accumulators; `Err` names the column that
    /// overflowed.
    fn fold(&self, accs: &mut Vec<Acc>, value: &T, fresh: bool) -> Result<(), String> {
        if fresh {
            accs.clear();
        }
        for (i, c) in self.aggs.cols.iter().enumerate() {
            let v = match (&c.extract, c.kind) {
                (None, _) | (_, Kind::Count) => Num::Int(1),
                (Some(f), _) => f(value),
            };
            if fresh {
                accs.push(match v {
                    Num::Int(x) => Acc::Int(x),
                    Num::Float(x) => Acc::Float(x),
                });
                continue;
            }
            let slot = &mut accs[i];
            *slot = match (*slot, v, c.kind) {
                (Acc::Int(a), Num::Int(b), Kind::Count | Kind::Sum) => Acc::Int(
                    a.checked_add(b)
                        .ok_or_else(|| format!("`{}` overflows a 64-bit integer", c.name))?,
                ),
                (Acc::Int(a), Num::Int(b), Kind::Min) => Acc::Int(a.min(b)),
                (Acc::Int(a), Num::Int(b), Kind::Max) => Acc::Int(a.max(b)),
                (Acc::Float(a), Num::Float(b), Kind::Count | Kind::Sum) => Acc::Float(a + b),
                (Acc::Float(a), Num::Float(b), Kind::Min) => Acc::Float(a.min(b)),
                (Acc::Float(a), Num::Float(b), Kind::Max) => Acc::Float(a.max(b)),
                // One column has one numeric type (Numeric::FLOAT is per type).
                (slot, _, _) => slot,
            };
        }
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut DB::Connection,
        rows: &BTreeMap<RowKey, Vec<Acc>>,
    ) -> weir_sql::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        #[cfg(feature = "postgres")]
        {
            let any: &mut (dyn std::any::Any + Send) = conn;
            if let Some(pg) = any.downcast_mut::<sqlx::postgres::PgConnection>() {
                return unnest_upsert(pg, &self.plan, rows).await;
            }
        }
        let chunk = self.plan.max_chunk(DB::MAX_PARAMS);
        let list: Vec<(&RowKey, &Vec<Acc>)> = rows.iter().collect();
        let mut at = 0;
        while at < list.len() {
            let left = list.len() - at;
            let n = if left >= chunk {
                chunk
            } else {
                1 << (usize::BITS - 1 - left.leading_zeros())
            };
            let mut args: Vec<Value<'_>> = Vec::with_capacity(n * self.plan.ncols);
            for ((parts, window), accs) in &list[at..at + n] {
                for (p, t) in parts.iter().zip(&self.plan.key_types) {
                    args.push(key_value(p, *t));
                }
                if let Some((start, end)) = window {
                    args.push(Value::BigInt(*start));
                    args.push(Value::BigInt(*end));
                    args.push(Value::Bool(false));
                }
                for a in accs.iter() {
                    args.push(match a {
                        Acc::Int(x) => Value::BigInt(*x),
                        Acc::Float(x) => Value::Double(*x),
                    });
                }
            }
            DB::execute(conn, &self.plan.upsert(n), &args)
                .await
                .map_err(|e| weir_sql::Error::db("aggregate upsert", e))?;
            at += n;
        }
        Ok(())
    }
}

/// PostgreSQL: the batch's rows as one array per column in one statement (measured
/// faster than multi-row `VALUES`: one parse and bind instead of one per 512 rows).
#[cfg(feature = "postgres")]
async fn unnest_upsert(
    conn: &mut sqlx::postgres::PgConnection,
    plan: &Plan,
    rows: &BTreeMap<RowKey, Vec<Acc>>,
) -> weir_sql::Result<()> {
    enum Col<'a> {
        Bool(Vec<bool>),
        Small(Vec<i16>),
        Int(Vec<i32>),
        Big(Vec<i64>),
        Double(Vec<f64>),
        Text(Vec<&'a str>),
    }
    let n = rows.len();
    let mut cols: Vec<Col<'_>> = plan
        .col_types
        .iter()
        .map(|t| match t {
            ColumnType::Bool => Col::Bool(Vec::with_capacity(n)),
            ColumnType::SmallInt => Col::Small(Vec::with_capacity(n)),
            ColumnType::Int => Col::Int(Vec::with_capacity(n)),
            ColumnType::BigInt => Col::Big(Vec::with_capacity(n)),
            ColumnType::Double => Col::Double(Vec::with_capacity(n)),
            _ => Col::Text(Vec::with_capacity(n)),
        })
        .collect();
    for ((parts, window), accs) in rows {
        let mut values: Vec<Value<'_>> = Vec::with_capacity(plan.ncols);
        for (p, t) in parts.iter().zip(&plan.key_types) {
            values.push(key_value(p, *t));
        }
        if let Some((start, end)) = window {
            values.extend([
                Value::BigInt(*start),
                Value::BigInt(*end),
                Value::Bool(false),
            ]);
        }
        for a in accs {
            values.push(match a {
                Acc::Int(x) => Value::BigInt(*x),
                Acc::Float(x) => Value::Double(*x),
            });
        }
        for (col, v) in cols.iter_mut().zip(values) {
            match (col, v) {
                (Col::Bool(c), Value::Bool(x)) => c.push(x),
                (Col::Small(c), Value::SmallInt(x)) => c.push(x),
                (Col::Int(c), Value::Int(x)) => c.push(x),
                (Col::Big(c), Value::BigInt(x)) => c.push(x),
                (Col::Double(c), Value::Double(x)) => c.push(x),
                (Col::Text(c), Value::Text(x)) => c.push(x),
                (_, v) => {
                    return Err(weir_sql::Error::Sink {
                        sink: plan.quoted.clone(),
                        message: format!("internal: value {v:?} does not fit its column"),
                        retriable: false,
                    })
                }
            }
        }
    }
    let mut q = sqlx::query(sqlx::AssertSqlSafe(&*plan.unnest));
    for c in cols {
        q = match c {
            Col::Bool(v) => q.bind(v),
            Col::Small(v) => q.bind(v),
            Col::Int(v) => q.bind(v),
            Col::Big(v) => q.bind(v),
            Col::Double(v) => q.bind(v),
            Col::Text(v) => q.bind(v),
        };
    }
    q.execute(conn)
        .await
        .map_err(|e| weir_sql::Error::db("aggregate upsert", e))?;
    Ok(())
}

fn key_value(p: &KeyPart, t: ColumnType) -> Value<'_> {
    match (p, t) {
        (KeyPart::Int(x), ColumnType::SmallInt) => {
            Value::SmallInt(i16::try_from(*x).unwrap_or(i16::MAX))
        }
        (KeyPart::Int(x), ColumnType::Int) => Value::Int(i32::try_from(*x).unwrap_or(i32::MAX)),
        (KeyPart::Int(x), _) => Value::BigInt(*x),
        (KeyPart::Bool(b), _) => Value::Bool(*b),
        (KeyPart::Text(s), _) => Value::Text(s),
    }
}

/// What the watermarks say before a batch: per partition, and globally.
struct Marks {
    own: HashMap<TopicPartition, i64>,
    global: Option<i64>,
    /// Active partitions not in this batch, with their watermark (`i64::MIN` before
    /// their first windowed commit).
    others: Vec<(TopicPartition, i64)>,
}

impl<DB: Dialect, T: Send + Sync> AggregateSink<DB, T> {
    async fn marks(
        &self,
        conn: &mut DB::Connection,
        w: &Window<T>,
        batch: &BTreeMap<TopicPartition, i64>,
    ) -> weir_sql::Result<Marks> {
        let rows = self.store.watermarks(conn, w.idle).await?;
        let mut own = HashMap::new();
        let mut others = Vec::new();
        let mut global: Option<i64> = None;
        for r in rows {
            let wm = r.watermark.unwrap_or(i64::MIN);
            if batch.contains_key(&r.partition) {
                own.insert(r.partition.clone(), wm);
            } else if r.active {
                others.push((r.partition.clone(), wm));
            }
            if r.active {
                global = Some(global.map_or(wm, |g| g.min(wm)));
            }
        }
        Ok(Marks {
            own,
            global,
            others,
        })
    }
}

#[async_trait]
impl<DB, K, T> TransactionalSink<DB, Keyed<K, T>> for AggregateSink<DB, T>
where
    DB: Dialect,
    K: GroupKey,
    T: Send + Sync,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(
        &self,
        tx: &mut Transaction<'static, DB>,
        items: &[Item<Keyed<K, T>>],
    ) -> weir_sql::Result<()> {
        let refused = self.write_refusing(tx, items).await?;
        refused_whole(&self.name, &refused)
    }

    async fn write_refusing(
        &self,
        tx: &mut Transaction<'static, DB>,
        items: &[Item<Keyed<K, T>>],
    ) -> weir_sql::Result<Vec<Refusal>> {
        let mut refused: BTreeMap<Coordinates, (String, bool)> = BTreeMap::new();
        // Event times and windows, per item (a panicking event-time function refuses
        // its record into the dead letters).
        let mut windows: Vec<Vec<(i64, i64)>> = Vec::with_capacity(items.len());
        let mut times: Vec<Option<i64>> = Vec::with_capacity(items.len());
        let mut newest: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        if let Some(w) = &self.window {
            for it in items {
                let time = match &w.event_time {
                    Some(f) => catch_unwind(AssertUnwindSafe(|| f(&it.value.value))).map_err(|p| {
                        format!("event-time function panicked: {}", panic_message(&*p))
                    }),
                    None => it.timestamp.ok_or_else(|| {
                        "the record has no timestamp (record_time windows)".to_owned()
                    }),
                };
                match time {
                    Ok(t) => {
                        let tp = TopicPartition::new(it.at.topic.to_string(), it.at.partition);
                        let e = newest.entry(tp).or_insert(t);
                        *e = (*e).max(t);
                        windows.push(w.windows_of(t));
                        times.push(Some(t));
                    }
                    Err(reason) => {
                        refused.insert(it.at.clone(), (reason, true));
                        windows.push(Vec::new());
                        times.push(None);
                    }
                }
            }
            let marks = self.marks(&mut **tx, w, &newest).await?;
            // The watermark a record meets is its partition's as of the record before
            // it (the committed one, advanced by the earlier records of this batch), so
            // whether a record is late does not depend on how records were batched.
            let mut running: HashMap<TopicPartition, i64> = HashMap::new();
            for (i, (it, ws)) in items.iter().zip(&windows).enumerate() {
                if refused.contains_key(&it.at) {
                    continue;
                }
                let tp = TopicPartition::new(it.at.topic.to_string(), it.at.partition);
                let own = *running
                    .entry(tp.clone())
                    .or_insert_with(|| marks.own.get(&tp).copied().unwrap_or(i64::MIN));
                if let Some(t) = times.get(i).copied().flatten() {
                    running.insert(tp.clone(), own.max(t.saturating_sub(w.lateness)));
                }
                if w.late == Late::Apply {
                    continue;
                }
                let mark = own.max(marks.global.unwrap_or(i64::MIN));
                if let Some((s, e)) = ws.iter().find(|(_, e)| *e <= mark) {
                    refused.insert(
                        it.at.clone(),
                        (
                            format!(
                                "late record: window [{s}, {e}) ms of table {} ended at or before the watermark {mark} ms (allowed lateness {} ms)",
                                self.plan.quoted, w.lateness
                            ),
                            w.late == Late::DeadLetter,
                        ),
                    );
                }
            }
            // New watermarks, and the global one after this batch.
            let mut after: Option<i64> = marks.others.iter().map(|(_, wm)| *wm).min();
            for (tp, t) in &newest {
                let new = t.saturating_sub(w.lateness);
                let old = marks.own.get(tp).copied().unwrap_or(i64::MIN);
                let wm = old.max(new);
                self.store.advance_watermark(&mut **tx, tp, wm).await?;
                after = Some(after.map_or(wm, |a| a.min(wm)));
            }
            // Apply first, then close: a window this batch completes is closed with it.
            let rows = self.collapse(items, &windows, &mut refused)?;
            self.apply(&mut **tx, &rows).await?;
            if let (Some(close), Some(wm)) = (&self.plan.close, after) {
                if wm > i64::MIN {
                    DB::execute(&mut **tx, close, &[Value::BigInt(wm)])
                        .await
                        .map_err(|e| weir_sql::Error::db("aggregate close windows", e))?;
                }
            }
        } else {
            let rows = self.collapse(items, &windows, &mut refused)?;
            self.apply(&mut **tx, &rows).await?;
        }
        Ok(refused
            .into_iter()
            .map(|(at, (reason, dead_letter))| Refusal {
                at,
                reason,
                dead_letter,
            })
            .collect())
    }
}

impl<DB: Dialect, T: Send + Sync> AggregateSink<DB, T> {
    /// Collapse the items not refused into one row per key and window, in key order.
    /// A record whose key or aggregate panics, or overflows, is refused (with every
    /// other item of it: a record counts wholly or not at all).
    fn collapse<K: GroupKey>(
        &self,
        items: &[Item<Keyed<K, T>>],
        windows: &[Vec<(i64, i64)>],
        refused: &mut BTreeMap<Coordinates, (String, bool)>,
    ) -> weir_sql::Result<BTreeMap<RowKey, Vec<Acc>>> {
        loop {
            match self.try_collapse(items, windows, refused) {
                Ok(rows) => return Ok(rows),
                Err((at, reason)) => {
                    // Refuse that record and start over without it (rare: only on a
                    // panic or an overflow).
                    if refused.insert(at, (reason, true)).is_some() {
                        return Err(weir_sql::Error::Sink {
                            sink: self.name.clone(),
                            message: "aggregate refused the same record twice".into(),
                            retriable: false,
                        });
                    }
                }
            }
        }
    }

    fn try_collapse<K: GroupKey>(
        &self,
        items: &[Item<Keyed<K, T>>],
        windows: &[Vec<(i64, i64)>],
        refused: &BTreeMap<Coordinates, (String, bool)>,
    ) -> Result<BTreeMap<RowKey, Vec<Acc>>, (Coordinates, String)> {
        let mut rows: BTreeMap<RowKey, Vec<Acc>> = BTreeMap::new();
        let none = [None];
        for (i, it) in items.iter().enumerate() {
            if refused.contains_key(&it.at) {
                continue;
            }
            let mut parts = Vec::with_capacity(self.plan.key_types.len());
            it.value.key.parts(&mut parts);
            let ws: Vec<Option<(i64, i64)>> = match windows.get(i) {
                Some(ws) if self.window.is_some() => ws.iter().copied().map(Some).collect(),
                _ => none.to_vec(),
            };
            for w in ws {
                let key = (parts.clone(), w);
                let fresh = !rows.contains_key(&key);
                let accs = rows.entry(key).or_default();
                catch_unwind(AssertUnwindSafe(|| self.fold(accs, &it.value.value, fresh)))
                    .map_err(|p| {
                        (
                            it.at.clone(),
                            format!("aggregate function panicked: {}", panic_message(&*p)),
                        )
                    })?
                    .map_err(|e| (it.at.clone(), format!("aggregate {e} for key {:?}", parts)))?;
            }
        }
        Ok(rows)
    }
}

impl<DB, K, T> IntoSink<DB, Keyed<K, T>> for AggregateTable<DB, T>
where
    DB: Dialect,
    K: GroupKey + 'static,
    T: Send + Sync + 'static,
{
    type Sink = AggregateSink<DB, T>;

    fn into_sink(
        self,
        ctx: &SinkContext<DB>,
    ) -> Result<BuiltSink<DB, Self::Sink>, (String, String)> {
        let stage = format!("sink aggregate `{}`", self.table);
        let err = |reason: String| (stage.clone(), reason);
        let table = TableName::new(&self.table).map_err(|e| err(e.to_string()))?;
        if let Some(w) = &self.window {
            if w.size <= 0 || w.slide <= 0 {
                return Err(err("window size and slide must be at least 1 ms".into()));
            }
            if w.slide > w.size {
                return Err(err(format!(
                    "hopping window slide ({} ms) is longer than its size ({} ms): records between windows would be lost",
                    w.slide, w.size
                )));
            }
            if w.size / w.slide > 1000 {
                return Err(err(format!(
                    "a record would be in {} hopping windows (size / slide): at most 1000",
                    w.size / w.slide
                )));
            }
            // The databases' date arithmetic on the idle bound: outside this range it
            // overflows (NULL on SQLite and MySQL, an error on PostgreSQL).
            if w.idle < Duration::from_secs(1) || w.idle > MAX_IDLE_TIMEOUT {
                return Err(err(format!(
                    "idle_timeout ({:?}) must be between 1 s and {} days",
                    w.idle,
                    MAX_IDLE_TIMEOUT.as_secs() / 86_400
                )));
            }
        }
        let plan = Plan::new(
            DB::KIND,
            &table,
            &self.keys,
            K::types(),
            &self.aggs,
            self.window.as_ref(),
        )
        .map_err(err)?;
        let plan = Arc::new(plan);
        let mut setup: Vec<Setup<DB>> = Vec::new();
        let job = ctx.store.job().to_owned();
        let p = Definition {
            quoted: plan.quoted.clone(),
            create: plan.create.clone(),
            definition: plan.definition.clone(),
            fresh: self.fresh,
        };
        let create = self.create;
        let name = table.to_string();
        setup.push(Box::new(move |pool: &Pool<DB>| {
            Box::pin(async move { prepare::<DB>(pool, &p, create, &job, &name).await })
        }));
        Ok(BuiltSink {
            sink: AggregateSink {
                plan,
                aggs: self.aggs,
                window: self.window,
                store: ctx.store.clone(),
                name: self.table,
            },
            setup,
        })
    }
}

/// What [`prepare`] needs of a state table: its name, DDL and definition.
#[derive(Debug, Clone)]
pub(crate) struct Definition {
    pub quoted: String,
    pub create: Vec<Arc<str>>,
    pub definition: String,
    /// On a different stored definition: empty the table and store this one.
    pub fresh: bool,
}

/// Create the table (if asked) and check the stored definition.
pub(crate) async fn prepare<DB: Dialect>(
    pool: &Pool<DB>,
    plan: &Definition,
    create: bool,
    job: &str,
    table: &str,
) -> weir_sql::Result<()> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| weir_sql::Error::db("aggregate setup", e))?;
    let defs = TableName::new("weir_aggregates")?;
    let kind = DB::KIND;
    let (text_key, text, int, big) = match kind {
        DialectKind::Postgres => ("TEXT", "TEXT", "INTEGER", "BIGINT"),
        DialectKind::Sqlite => ("TEXT", "TEXT", "INTEGER", "INTEGER"),
        _ => ("VARCHAR(255)", "LONGTEXT", "INT", "SIGNED"),
    };
    let engine = if kind == DialectKind::MySql {
        " ENGINE=InnoDB"
    } else {
        ""
    };
    let dq = defs.quoted(kind);
    let mut ddl: Vec<Arc<str>> = Vec::new();
    if create {
        ddl.extend(plan.create.iter().cloned());
    }
    ddl.push(Arc::from(format!(
        "CREATE TABLE IF NOT EXISTS {dq} (tbl {text_key} NOT NULL, version {int} NOT NULL, job {text} NOT NULL, definition {text} NOT NULL, PRIMARY KEY (tbl)){engine}"
    )));
    let target = TableName::new(table).unwrap_or(defs.clone());
    weir_sql::run_ddl::<DB>(&mut conn, "aggregate setup", &target, &ddl).await?;
    let insert: Arc<str> = Arc::from(match kind {
        DialectKind::Postgres => format!("INSERT INTO {dq} (tbl, version, job, definition) VALUES ($1, 1, $2, $3) ON CONFLICT (tbl) DO NOTHING"),
        DialectKind::Sqlite => format!("INSERT INTO {dq} (tbl, version, job, definition) VALUES (?1, 1, ?2, ?3) ON CONFLICT (tbl) DO NOTHING"),
        _ => format!("INSERT IGNORE INTO {dq} (tbl, version, job, definition) VALUES (?, 1, ?, ?)"),
    });
    let key = plan.quoted.as_str();
    DB::execute(
        &mut conn,
        &insert,
        &[
            Value::Text(key),
            Value::Text(job),
            Value::Text(&plan.definition),
        ],
    )
    .await
    .map_err(|e| weir_sql::Error::db("aggregate setup", e))?;
    let read: Arc<str> = Arc::from(format!(
        "SELECT job, version, NULL, CAST(0 AS {big}), definition FROM {dq} WHERE tbl = {}",
        placeholder(kind, 1)
    ));
    let rows = DB::fetch_offsets(&mut conn, &read, &[Value::Text(key)]).await;
    let (owner, stored) = match rows {
        Ok(rows) => match rows.into_iter().next() {
            Some(r) => (Some(r.0), r.4),
            None => (None, None),
        },
        // fetch_offsets expects (TEXT, INT, BIGINT NULL, BIGINT, TEXT NULL); a type
        // mismatch here is a bug in this query, reported as such.
        Err(e) => return Err(weir_sql::Error::db("aggregate definition read", e)),
    };
    let other_job = owner.as_deref().filter(|o| *o != job);
    match stored {
        Some(s) if s == plan.definition && other_job.is_none() => Ok(()),
        // (a new definition, or a new job taking the table over)
        Some(s) if plan.fresh => {
            tracing::warn!(table = %plan.quoted, old = %s, new = %plan.definition, "definition changed and start_fresh() asked: emptying the table");
            let during = "aggregate start fresh";
            // A table weir created is dropped and created in the new shape (the
            // columns may differ); one managed by your migrations is only emptied.
            if create {
                let drop: Arc<str> = Arc::from(format!("DROP TABLE IF EXISTS {}", plan.quoted));
                DB::execute(&mut conn, &drop, &[])
                    .await
                    .map_err(|e| weir_sql::Error::db(during, e))?;
                weir_sql::run_ddl::<DB>(&mut conn, during, &target, &plan.create).await?;
            }
            // (on the connection already held: a one-connection pool would wait forever)
            let mut tx = sqlx::Connection::begin(&mut *conn)
                .await
                .map_err(|e| weir_sql::Error::db(during, e))?;
            let delete: Arc<str> = Arc::from(format!("DELETE FROM {}", plan.quoted));
            DB::execute(&mut tx, &delete, &[])
                .await
                .map_err(|e| weir_sql::Error::db(during, e))?;
            let update: Arc<str> = Arc::from(format!(
                "UPDATE {dq} SET definition = {}, job = {} WHERE tbl = {}",
                placeholder(kind, 1),
                placeholder(kind, 2),
                placeholder(kind, 3)
            ));
            DB::execute(
                &mut tx,
                &update,
                &[Value::Text(&plan.definition), Value::Text(job), Value::Text(key)],
            )
            .await
            .map_err(|e| weir_sql::Error::db(during, e))?;
            tx.commit().await.map_err(|e| weir_sql::Error::db(during, e))
        }
        Some(s) if s == plan.definition => Err(weir_sql::Error::Schema {
            // Another job's deltas (or watermarks) in the same rows: two jobs reading
            // the same topic would count it twice, and a windowed table would be
            // closed by either job's progress.
            table: plan.quoted.clone(),
            reason: format!(
                "is maintained by job `{}`, not `{job}`: each aggregate or fold table belongs to one job (any number of its instances); write to another table, or, for an aggregate table, call start_fresh() to empty it and take it over",
                other_job.unwrap_or_default()
            ),
        }),
        Some(s) => Err(weir_sql::Error::Schema {
            table: plan.quoted.clone(),
            reason: format!(
                "holds state defined as `{s}`; this job defines `{}`. Adding to rows computed another way would mix two meanings: write to a new table (with a new job name to recompute from the start of the log), or, for an aggregate table, call start_fresh() to empty it and count only what the job reads from now on",
                plan.definition
            ),
        }),
        None => Err(weir_sql::Error::Schema {
            table: plan.quoted.clone(),
            reason: "its definition could not be stored in weir_aggregates".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(kind: DialectKind, windowed: bool) -> Plan {
        let aggs = count::<i64>("n")
            .and(sum("total", |v: &i64| *v))
            .and(min("lo", |v: &i64| *v))
            .and(max("hi", |v: &i64| *v as f64));
        let w = Window::tumbling(Duration::from_secs(60)).event_time(|v: &i64| *v);
        Plan::new(
            kind,
            &TableName::new("totals").unwrap(),
            &["customer".to_owned()],
            vec![ColumnType::Text],
            &aggs,
            windowed.then_some(&w),
        )
        .unwrap()
    }

    #[test]
    fn delta_upserts_per_dialect() {
        let pg = plan(DialectKind::Postgres, false);
        assert_eq!(
            &*pg.upsert(2),
            "INSERT INTO \"totals\" AS weir_t (\"customer\", \"n\", \"total\", \"lo\", \"hi\") VALUES ($1, $2, $3, $4, $5), ($6, $7, $8, $9, $10) \
             ON CONFLICT (\"customer\") DO UPDATE SET \"n\" = weir_t.\"n\" + excluded.\"n\", \"total\" = weir_t.\"total\" + excluded.\"total\", \
             \"lo\" = LEAST(weir_t.\"lo\", excluded.\"lo\"), \"hi\" = GREATEST(weir_t.\"hi\", excluded.\"hi\")"
        );
        let lite = plan(DialectKind::Sqlite, true);
        let s = lite.upsert(1);
        assert!(s.contains("ON CONFLICT (\"customer\", \"window_start\") DO UPDATE SET \"n\" = \"n\" + excluded.\"n\""), "{s}");
        assert!(s.contains("\"lo\" = min(\"lo\", excluded.\"lo\")"), "{s}");
        let my = plan(DialectKind::MySql, true);
        let s = my.upsert(1);
        assert!(
            s.contains("ON DUPLICATE KEY UPDATE `n` = `n` + VALUES(`n`)"),
            "{s}"
        );
        assert!(s.contains("`hi` = GREATEST(`hi`, VALUES(`hi`))"), "{s}");
        assert!(my
            .create
            .iter()
            .any(|c| c.contains("PRIMARY KEY (`customer`, `window_start`), INDEX weir_closing")));
    }

    #[test]
    fn chunks_are_powers_of_two_within_the_parameter_limit() {
        let p = plan(DialectKind::Postgres, false);
        assert_eq!(p.max_chunk(32_767), 512);
        assert_eq!(p.max_chunk(100), 16); // 100 / 5 = 20 -> 16
        assert_eq!(p.max_chunk(3), 1);
    }

    #[test]
    fn bad_definitions_are_named() {
        let aggs = count::<i64>("customer");
        let e = Plan::new(
            DialectKind::Sqlite,
            &TableName::new("t").unwrap(),
            &["customer".into()],
            vec![ColumnType::Text],
            &aggs,
            None,
        )
        .unwrap_err();
        assert!(e.contains("`customer` appears twice"), "{e}");
        let e = Plan::new(
            DialectKind::Sqlite,
            &TableName::new("t").unwrap(),
            &["a".into()],
            vec![ColumnType::Text, ColumnType::Int],
            &count::<i64>("n"),
            None,
        )
        .unwrap_err();
        assert!(e.contains("key_by key has 2 part(s)"), "{e}");
    }

    #[test]
    fn windows_cover_every_instant_once_per_slide() {
        let w = Window::hopping(Duration::from_millis(30), Duration::from_millis(10))
            .event_time(|v: &i64| *v);
        for t in -50..50 {
            let ws = w.windows_of(t);
            assert_eq!(ws.len(), 3, "{t}: {ws:?}");
            assert!(
                ws.iter().all(|(s, e)| *s <= t && t < *e && e - s == 30),
                "{t}: {ws:?}"
            );
        }
        let tumbling = Window::tumbling(Duration::from_millis(10)).event_time(|v: &i64| *v);
        assert_eq!(tumbling.windows_of(i64::MIN + 5).len(), 1);
        assert_eq!(tumbling.windows_of(i64::MAX).len(), 1);
    }
}
