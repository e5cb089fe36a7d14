//! # weir-log
//!
//! weir's embedded log: a persistent, partitioned, Kafka-shaped log in a local
//! directory, with no server. Topics have partitions; each partition is an ordered
//! sequence of records numbered by offset; consumers read from any offset, and
//! consumer groups store their committed offsets beside the data.
//!
//! - [`Log`]: open a directory (one process at a time, shared within the process),
//!   create topics, [`Log::append`] and [`Log::read`] records, retention, group offsets.
//! - [`Producer`]: append by key with Kafka's murmur2 partitioner, round-robin without
//!   a key.
//! - [`LogOptions`] and [`Durability`]: what an acknowledged append survives.
//! - [`LogConsumer`]: a [`weir_core::Consumer`] over the log with Kafka's group
//!   semantics (generations, eager and cooperative rebalances, session and
//!   `max.poll.interval.ms` eviction) run by an in-process coordinator shared by every
//!   consumer of the directory; [`connect`] opens one from `bootstrap.servers =
//!   log:///path/to/dir`; [`describe_group`] shows a group's members and generation.
//!
//! ## Durability
//! Every batch carries a CRC32C; recovery on open truncates a torn tail (an append
//! cut short by a crash) and reports damage followed by valid data as
//! [`weir_core::Error::Corrupt`] naming the file and byte position, never silently
//! dropping acknowledged records. Segment files are fsynced before the log rolls to a
//! new one (except in [`Durability::Os`], which leaves fsync to [`Log::flush`] and
//! close), and directories are fsynced after files are created, renamed or deleted.
//! A failed write or fsync poisons the log: every later write returns
//! [`weir_core::Error::Poisoned`]. See [`Durability`] for each mode's exact guarantee.
//!
//! ## Example
//! ```
//! use weir_core::TopicPartition;
//! use weir_log::{Durability, Log, LogOptions, NewRecord, Producer};
//!
//! let dir = tempfile::tempdir()?;
//! let log = Log::open(dir.path(), LogOptions::default().with_durability(Durability::Always))?;
//! log.create_topic("orders", 3)?;
//!
//! let producer = Producer::new(log.clone());
//! let (partition, offset) = producer.send("orders", Some("customer-42".into()), Some("{\"total\":9.5}".into()))?;
//!
//! let tp = TopicPartition::new("orders", partition);
//! let records = log.read(&tp, offset, 100, 1 << 20)?;
//! assert_eq!(records[0].key.as_deref(), Some(&b"customer-42"[..]));
//! assert_eq!(records[0].offset, offset);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod codec;
mod connect;
mod consumer;
mod fetch;
mod fsutil;
mod group;
mod groups;
mod lock;
mod log;
mod options;
mod partition;
mod producer;
mod record;
mod segment;
mod shared;
mod verify;

pub use crate::log::{validate_topic_name, Log, MAX_PARTITIONS, MAX_TOPIC_NAME_LEN};
pub use connect::{connect, log_dir_from_url, SCHEME};
pub use consumer::LogConsumer;
pub use group::{describe_group, GroupDescription, MemberDescription};
pub use options::{Durability, LogOptions, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES};
pub use producer::{murmur2, partition_for_key, Producer};
pub use record::NewRecord;
pub use verify::{
    is_log_dir, offsets_for_time_unlocked, read_offsets_unlocked, verify, PartitionReport, Problem,
    ProblemKind, Repair, RepairDone, VerifyReport,
};

// Handles users share across tasks and threads stay `Send + Sync`; checked at compile
// time.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Log>();
    send_sync::<Producer>();
    send_sync::<LogConsumer>();
    send_sync::<LogOptions>();
    send_sync::<NewRecord>();
    send_sync::<GroupDescription>();
};

/// The result type of this crate: errors are [`weir_core::Error`].
pub type Result<T> = weir_core::Result<T>;

#[cfg(test)]
mod tests;
