//! # weir-sql
//!
//! Exactly-once SQL sinks: every batch's results, its dead letters and the partitions'
//! next offsets are written in **one database transaction**, fenced by a claim epoch,
//! so that neither a crash nor a zombie consumer can duplicate or lose a record.
//!
//! - [`OffsetStore`]: the offsets table `(job, topic, partition) → next_offset, epoch,
//!   owner, updated_at`; [`claim`](OffsetStore::claim) on assignment (epoch + 1, read
//!   the offset), [`advance`](OffsetStore::advance) in each batch (compare-and-set on
//!   epoch and expected offset).
//! - [`ExactlyOnceListener`]: the [`RebalanceListener`](weir_core::RebalanceListener)
//!   that claims assigned partitions and seeks them to their stored offsets.
//! - [`TransactionalSink`]: write anything on the batch's transaction; [`TableSink`]
//!   inserts or upserts [`Row`]s (PostgreSQL `COPY`/`UNNEST`, multi-row `VALUES`).
//! - [`DeadLetters`]: poison records, written in the same transaction.
//! - [`ExactlyOnceRunner`]: the poll → decode → sink → commit loop over any
//!   [`Consumer`](weir_core::Consumer), isolating rows the database refuses.
//!
//! Bring your own sqlx pool; weir never logs connection strings. Open SQLite in WAL
//! mode, and MySQL/MariaDB with a strict `sql_mode` (the servers' default):
//! [`OffsetStore::migrate`] warns about the first and refuses to run without the
//! second.
//!
//! ```no_run
//! # async fn example(mut consumer: Box<dyn weir_core::Consumer>) -> Result<(), Box<dyn std::error::Error>> {
//! use weir_core::{Record, Subscription};
//! use weir_sql::{impl_row, ExactlyOnceRunner, Reject, TableName, TableSink};
//!
//! struct Event { topic: String, part: i32, off: i64, body: Vec<u8> }
//! impl_row!(Event { topic, part, off, body });
//!
//! let options = sqlx::sqlite::SqliteConnectOptions::new()
//!     .filename("events.db")
//!     .create_if_missing(true)
//!     .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
//! let pool = sqlx::SqlitePool::connect_with(options).await?;
//! let sink = TableSink::<sqlx::Sqlite, Event>::new(TableName::new("events")?)?;
//! sink.create_table(&pool).await?;
//! let mut runner = ExactlyOnceRunner::new(pool, "events-job", sink, |r: &Record| {
//!     let body = r.value.clone().ok_or_else(|| Reject::permanent("null value"))?;
//!     Ok(vec![Event { topic: r.topic.to_string(), part: r.partition, off: r.offset, body: body.to_vec() }])
//! })?;
//! runner.migrate().await?;
//! runner.run(consumer.as_mut(), Subscription::topics(["events"])).await?;
//! # Ok(()) }
//! ```
//!
//! Features: `postgres`, `sqlite`, `mysql` (all on by default) choose the dialects;
//! `derive` (on by default) adds `#[derive(Row)]`; `failpoints` compiles the named
//! crash points used by the kill -9 tests ([`failpoint`]).
//!
//! ## How it is proven
//! This crate's tests run on all three dialects (each test in its own schema or
//! database): claim and fence, the runner over the embedded log with poison records and
//! rows the database refuses, a paused zombie, PostgreSQL connections killed mid
//! transaction and during `COMMIT`, SQLite busy, identifier injection. The kill -9 crash
//! loops, the multi-instance storm and the independent checker live in `weir-testkit`
//! (`crash`, `checker`).
#![warn(missing_docs)]

// `#[derive(Row)]` names this crate `::weir_sql`, also when it expands inside it.
extern crate self as weir_sql;

pub mod admin;
mod classify;
mod dead_letters;
mod dialect;
mod error;
pub mod failpoint;
mod ident;
mod listener;
mod migrate;
#[cfg(feature = "mysql")]
mod mysql;
pub mod nodelay;
mod offsets;
#[cfg(feature = "postgres")]
mod pg;
mod runner;
mod sink;
#[cfg(feature = "sqlite")]
mod sqlite;
mod types;
mod value;

pub use dead_letters::{DeadLetter, DeadLetters, Stage, MAX_ERROR_CHARS};
pub use dialect::Dialect;
pub use error::{Error, Result};
pub use ident::{DialectKind, Ident, TableName, MAX_IDENT_BYTES};
pub use listener::ExactlyOnceListener;
/// Runs DDL safely when several instances start at once (used by weir-pipeline's
/// aggregate tables).
#[doc(hidden)]
pub use migrate::run_ddl;
pub use offsets::{
    Claim, OffsetStore, PartitionWatermark, StoredOffset, DEFAULT_CLAIM_LOCK_TIMEOUT, MAX_JOB_BYTES,
};
pub use runner::{ExactlyOnceRunner, Reject, RunStats, DEFAULT_IDLE_TRANSACTION_TIMEOUT};
pub use sink::{Item, Refusal, TableSink, TransactionalSink, WriteMode};
pub use types::{Numeric, DEFAULT_DECIMAL};
pub use value::{
    Column, ColumnType, Row, ToValue, Value, MAX_DECIMAL_PRECISION, MAX_DECIMAL_SCALE,
};
/// `#[derive(Row)]`: implement [`Row`] for a struct, one column per field (see
/// [`weir_macros::Row`](macro@weir_macros::Row) for `#[weir(rename = "...")]` and
/// `#[weir(skip)]`).
#[cfg(feature = "derive")]
pub use weir_macros::Row;

/// Re-exported so that sink implementations use the same macro version as weir.
pub use async_trait::async_trait;
/// Re-exported: pools, transactions and drivers come from this sqlx.
pub use sqlx;

/// Re-exported: the date and time types of [`ColumnType::TimestampTz`],
/// [`ColumnType::Timestamp`], [`ColumnType::Date`] and [`ColumnType::Time`].
pub use chrono;
/// Re-exported: the exact decimal of [`ColumnType::Decimal`].
pub use rust_decimal;
/// Re-exported: the JSON document of [`ColumnType::Json`].
pub use serde_json;
/// Re-exported: the UUID of [`ColumnType::Uuid`].
pub use uuid;
