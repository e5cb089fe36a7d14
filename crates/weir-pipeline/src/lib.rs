//! # weir-pipeline: exactly-once jobs in a dozen lines
//!
//! A [`Job`] reads topics from the embedded log or Kafka, decodes them with any
//! weir-formats deserializer, transforms them with operators and writes the results
//! **and the consumer offsets in one database transaction** per batch. On every
//! assignment it claims the partitions in the database (bumping their epoch) and seeks
//! to the stored offsets, so a crash, a redeploy or a rebalance never duplicates or
//! loses a record, and a zombie is fenced by the database.
//!
//! ```no_run
//! use weir_pipeline::{sink::Sqlite, Job};
//!
//! #[derive(serde::Deserialize)]
//! struct Order { id: i64, customer: String, amount: f64 }
//! #[derive(weir_sql::Row)] // weir::Row through the facade
//! struct BigOrder { id: i64, customer: String, amount: f64 }
//!
//! # async fn f() -> weir_pipeline::Result<()> {
//! let summary = Job::new("big-orders")
//!     .source("log:///var/lib/weir", ["orders"])
//!     .database("sqlite:big-orders.db")
//!     .value::<Order, _>(weir_formats::Json::new())
//!     .filter(|o| o.amount > 100.0)
//!     .map(|o| BigOrder { id: o.id, customer: o.customer, amount: o.amount })
//!     .sink(Sqlite::upsert("big_orders", ["id"]))
//!     .run_until(weir_pipeline::shutdown_signal())
//!     .await?;
//! println!("{} records, {} rows", summary.records, summary.rows);
//! # Ok(()) }
//! ```
//!
//! ## The runtime: pipelined, bounded, fenced
//! The caller's task polls, claims, decodes and transforms; a spawned commit task
//! writes batch N while batch N+1 is being fetched, so the database is not idle while
//! records wait. Per partition, batches commit in offset order: each compare-and-set
//! expects the previous batch's end, so a batch that lost its claim fails cleanly.
//! In-flight records and bytes are bounded ([`Job::max_in_flight_records`],
//! [`Job::max_in_flight_bytes`]): at the limit every partition is paused (the poll
//! loop keeps turning, so the consumer stays in its group) and resumed once commits
//! catch up.
//!
//! Stages run on the task that polls, one poll's records (at most `max.poll.records`,
//! 500 by default) at a time, while the commit task works on earlier batches. As
//! with Kafka's own consumer, one poll's stage work must stay well below
//! `max.poll.interval.ms` (5 min) or the member is evicted (safe: its partitions
//! move and it is fenced, but it is not progress): for slow per-record work use
//! [`Pipeline::map_async`] with some concurrency, or lower `max.poll.records`. A
//! stage that fails transiently pauses only its partition, and the partition's later
//! records in that poll are not decoded (a registry that is down costs one timeout
//! per partition and poll, not one per record).
//!
//! ## Errors of a stage
//! | failure | what happens |
//! |---|---|
//! | transient (registry unreachable, [`OpError::retriable`]) | the partition pauses at that record and retries it with backoff (50 ms doubling to 5 s); other partitions go on; never a dead letter |
//! | permanent, policy [`OnError::DeadLetter`] (default) | the record goes to `weir_dead_letters` in the same transaction as its offset |
//! | permanent, policy [`OnError::Skip`] | consumed, counted in [`Summary::skipped`], logged with its coordinates |
//! | permanent, policy [`OnError::Fail`] | the job stops with [`Error::Stage`]; that record's batch is not committed |
//! | a row the database refuses | bisection isolates the record into the dead letters (stage `sink`); the rest commits once |
//!
//! ## Rebalances and shutdown
//! - assigned: claim, seek to the stored offsets; nothing is delivered before.
//! - revoked: the batches already handed to the commit task are committed before the
//!   listener returns (bounded by [`Job::revoke_timeout`]); records not yet handed
//!   over are dropped and re-read by the next owner; the epoch fence covers every race.
//! - lost: dropped at once.
//! - `run_until(stop)`: when `stop` resolves the job stops fetching, commits what is
//!   in flight (within [`Job::shutdown_timeout`], 30 s, else
//!   [`Error::ShutdownDeadline`]), closes the consumer (leaving the group; on Kafka
//!   bounded by its close timeout, 10 s) and returns its [`Summary`], which is also
//!   logged. A second SIGINT/SIGTERM during the drain or the close aborts at once
//!   ([`Error::Aborted`]), which is safe: nothing is half-committed. (The runtime
//!   installs SIGINT/SIGTERM handlers for that once a stop begins; tokio keeps them
//!   for the life of the process.)
//!
//! ## Features
//! `log` (default: `log://`), `kafka` (`kafka://`, builds librdkafka), `postgres`,
//! `sqlite`, `mysql` (default: all three), `failpoints` (kill -9 tests only).
#![warn(missing_docs)]

pub mod agg;
mod db;
mod decode;
mod error;
#[cfg(feature = "prometheus")]
mod http;
mod job;
mod ops;
mod runtime;
mod shutdown;
pub mod sink;
mod source;

pub use db::Database;
pub use error::{Error, OnError, OpError, Result};
pub use job::{defaults, Built, Job, Pipeline, Ready};
pub use ops::Keyed;
pub use shutdown::shutdown_signal;
pub use source::{connect, properties, Source};

/// What a job did, returned by `run_until` and logged when it stops.
///
/// ```
/// let s = weir_pipeline::Summary::default();
/// assert_eq!(s.records + s.rows + s.dead_letters + s.fenced, 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Records consumed (with rows, dead-lettered, skipped or filtered out).
    pub records: u64,
    /// Rows committed (over all sinks' inputs: one per output value).
    pub rows: u64,
    /// Dead letters committed.
    pub dead_letters: u64,
    /// Records skipped by an [`OnError::Skip`] stage.
    pub skipped: u64,
    /// Records a sink refused and dropped (late records under
    /// [`agg::Late::Drop`]).
    pub dropped: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Claims made (assignments).
    pub claims: u64,
    /// Partitions found fenced (another member claimed them).
    pub fenced: u64,
    /// Commits whose outcome was unknown and was resolved from the offsets rows.
    pub unknown_outcomes: u64,
    /// Batch attempts retried after a transient database error.
    pub retries: u64,
    /// Batches in which a refused row was isolated.
    pub isolations: u64,
    /// Records retried after a transient stage failure (partition paused).
    pub transient_retries: u64,
    /// First records after a claim not at the claimed offset (gaps accepted).
    pub seek_mismatches: u64,
    /// Times fetching paused because the in-flight limit was reached.
    pub backpressure_pauses: u64,
    /// Most records in flight at once (polled, not yet committed).
    pub peak_in_flight_records: u64,
    /// Most key + value bytes in flight at once.
    pub peak_in_flight_bytes: u64,
}

const _: () = {
    const fn send<T: Send>() {}
    send::<Job>();
    send::<Pipeline<i64>>();
    send::<Summary>();
    send::<Error>();
};
