//! # weir-kafka
//!
//! weir's Kafka backend: [`KafkaConsumer`] implements weir-core's
//! [`Consumer`](weir_core::Consumer) over librdkafka (the `rdkafka` crate, built from
//! its bundled source), so a job that runs on the embedded log runs on a Kafka
//! consumer group unchanged, and scales out by starting more instances with the same
//! `group.id`.
//!
//! What it adds over using rdkafka directly:
//! - **Seek on assignment done right.** The [`RebalanceListener`](weir_core::RebalanceListener)
//!   (async: it may read offsets from a database) decides where each assigned
//!   partition starts, and that offset is in the partition list given to librdkafka's
//!   `assign`/`incremental_assign`: fetching starts there. No record from before the
//!   chosen offset is delivered, prefetched ones included.
//! - **Revoke done right.** The listener finishes and its commits are made before the
//!   partitions are given up; nothing of a revoked partition is delivered afterwards.
//!   An evicted member gets `on_partitions_lost`.
//! - Eager (`range`, `roundrobin`) and cooperative (`cooperative-sticky`) groups.
//! - `wakeup()` interrupts a blocked poll; `close()` is bounded even if the broker is
//!   gone.
//! - Kafka's configuration names ([`ConsumerConfig`](weir_core::ConsumerConfig)); keys
//!   weir does not know pass through to librdkafka; secrets never appear in `Debug`,
//!   errors or logs.
//!
//! The backend is chosen by URL: `kafka://host:port` (or plain `host:port`) in
//! `bootstrap.servers`; see [`is_kafka_url`].
//!
//! ```no_run
//! # async fn run() -> weir_core::Result<()> {
//! use std::{sync::Arc, time::Duration};
//! use weir_core::{async_trait, CommitOffsets, Consumer, ConsumerConfig, Offset,
//!                 RebalanceContext, RebalanceListener, Subscription, TopicPartition};
//!
//! /// Starts every partition where the database says (here: always at 0).
//! struct FromDb;
//! #[async_trait]
//! impl RebalanceListener for FromDb {
//!     async fn on_partitions_assigned(&self, tps: &[TopicPartition], ctx: &mut RebalanceContext)
//!         -> weir_core::Result<()> {
//!         for tp in tps { ctx.seek(tp.clone(), Offset::At(0)); }
//!         Ok(())
//!     }
//! }
//!
//! let config = ConsumerConfig::new()
//!     .with_bootstrap_servers("kafka://127.0.0.1:9092")
//!     .with_group_id("orders-to-db")
//!     .with_enable_auto_commit(false);
//! let mut consumer = weir_kafka::KafkaConsumer::new(config)?;
//! consumer.subscribe(Subscription::topics(["orders"]), Arc::new(FromDb)).await?;
//! for _ in 0..10 {
//!     let batch = consumer.poll(Duration::from_millis(500)).await?;
//!     for record in &batch { let _ = record.value.as_ref(); }
//!     consumer.commit_async(CommitOffsets::Consumed, None);
//! }
//! consumer.commit_sync(CommitOffsets::Consumed).await?;
//! consumer.close().await
//! # }
//! ```
//!
//! Features: none. librdkafka is built from source by `rdkafka-sys` (needs a C
//! compiler, `make`, `perl`).
#![warn(missing_docs)]

mod config;
mod consumer;
mod context;
mod error;
mod fetch;

pub use config::{bootstrap_servers, is_kafka_url};
pub use consumer::KafkaConsumer;
pub use context::WeirContext;
