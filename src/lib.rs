//! # weir
//!
//! Stream processing with exactly-once sinks: read records from Kafka or from weir's
//! embedded log, decode them, transform them, and write the results **and the consumer
//! offsets in one database transaction**, so that a job can crash, be redeployed or
//! rebalanced at any moment and restart with no duplicate and no lost record.
//!
//! This facade re-exports the member crates behind features:
//!
//! | feature | crate | what |
//! |---|---|---|
//! | (always) | [`core`] (`weir-core`) | records, config, `Consumer`, `RebalanceListener` |
//! | `log` (default) | [`log`] (`weir-log`) | the embedded, persistent, partitioned log |
//! | `formats` (default) | `formats` (`weir-formats`) | JSON, Avro, Protobuf deserializers, schema registry |
//! | `sql` (default) | `sql` (`weir-sql`) | offsets store with fencing, table sinks, dead letters, `ExactlyOnceRunner` |
//! | `pipeline` (default) | `pipeline` (`weir-pipeline`) | the job DSL: [`Job`], operators, sinks, the pipelined runtime |
//! | `kafka` | `kafka` (`weir-kafka`) | the Kafka backend (`kafka://`), builds librdkafka |
//! | `prometheus` | (`weir-pipeline`) | `Job::serve_http`: `/metrics` in Prometheus text format, `/health/live`, `/health/ready` |
//!
//! A whole exactly-once job (embedded log into SQLite; `kafka://host:9092` and a
//! `postgres://` database work the same way):
//!
//! ```no_run
//! #[derive(serde::Deserialize)]
//! struct Order { id: i64, customer: String, amount: f64 }
//! #[derive(weir::Row)]
//! struct BigOrder { id: i64, customer: String, amount: f64 }
//!
//! # async fn f() -> Result<(), weir::pipeline::Error> {
//! weir::Job::new("big-orders")
//!     .source("log:///var/lib/weir", ["orders"])
//!     .database("sqlite:big-orders.db")
//!     .value::<Order, _>(weir::formats::Json::new())
//!     .filter(|o| o.amount > 100.0)
//!     .map(|o| BigOrder { id: o.id, customer: o.customer, amount: o.amount })
//!     .sink(weir::sink::Sqlite::upsert("big_orders", ["id"]))
//!     .run_until(weir::shutdown_signal())
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ```
//! use weir::core::{ConsumerConfig, TopicPartition};
//! let config = ConsumerConfig::new().with_group_id("example");
//! assert_eq!(config.group_id(), Some("example"));
//! # let _ = TopicPartition::new("t", 0);
//! ```
#![warn(missing_docs)]

pub use weir_core as core;
pub use weir_core::{
    Batch, Consumer, ConsumerConfig, Error, Offset, RebalanceListener, Record, Result,
    TopicPartition,
};

/// The embedded log (feature `log`, on by default).
#[cfg(feature = "log")]
pub use weir_log as log;

/// Typed deserializers and serializers: JSON, Avro, Protobuf, schema registry
/// (feature `formats`).
#[cfg(feature = "formats")]
pub use weir_formats as formats;

/// Exactly-once SQL sinks: offsets store, fencing, table sinks, dead letters (feature
/// `sql`).
#[cfg(feature = "sql")]
pub use weir_sql as sql;

/// The Kafka backend over librdkafka (feature `kafka`, off by default: it builds
/// librdkafka from source).
#[cfg(feature = "kafka")]
pub use weir_kafka as kafka;

/// The pipeline DSL and job runtime (feature `pipeline`, on by default).
#[cfg(feature = "pipeline")]
pub use weir_pipeline as pipeline;

#[cfg(feature = "pipeline")]
pub use weir_pipeline::{agg, connect, shutdown_signal, sink, Job, OnError, OpError, Summary};

/// A table row: the trait (and, with weir-sql's `derive` feature, `#[derive(Row)]`).
#[cfg(feature = "sql")]
pub use weir_sql::Row;

/// The README's code blocks, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
