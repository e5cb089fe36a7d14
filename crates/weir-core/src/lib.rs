//! # weir-core
//!
//! The consumer core of weir: the types every backend shares and the traits every
//! backend implements. A *backend* is where records come from: weir's embedded log
//! (`weir-log`, the default, no server needed) or Kafka (`weir-kafka`).
//!
//! - [`Record`], [`TopicPartition`], [`Offset`], [`Batch`]: what a poll returns.
//! - [`ConsumerConfig`]: Kafka's property names and defaults, validated, secrets redacted.
//! - [`Consumer`]: subscribe / assign / poll / commit / seek / pause / close, the API of
//!   Kafka's consumer, async.
//! - [`RebalanceListener`]: callbacks around partition assignment with a strict timing
//!   contract; the place where an exactly-once sink reads its stored offsets and seeks.
//! - [`Assignor`]: Range, RoundRobin, CooperativeSticky, or your own.
//! - [`WakeupHandle`]: the one handle that is safe to use from another task or thread.
//!
//! ```
//! use weir_core::{ConsumerConfig, Offset, TopicPartition};
//!
//! let config = ConsumerConfig::new()
//!     .with_group_id("orders-to-db")
//!     .with_auto_offset_reset(weir_core::AutoOffsetReset::Earliest)
//!     .with_enable_auto_commit(false);
//! assert_eq!(config.group_id(), Some("orders-to-db"));
//! let tp = TopicPartition::new("orders", 3);
//! assert_eq!(tp.to_string(), "orders-3");
//! assert_eq!(Offset::At(42).to_string(), "42");
//! ```
#![warn(missing_docs)]

mod assignor;
mod batch;
mod config;
mod consumer;
mod error;
mod listener;
mod offset;
mod record;
mod wakeup;

pub use assignor::{Assignor, AssignorProtocol, CooperativeSticky, GroupMember, Range, RoundRobin};
pub use batch::Batch;
pub use config::{AssignmentStrategy, AutoOffsetReset, ConsumerConfig, IsolationLevel, KNOWN_KEYS};
pub use consumer::{CommitCallback, CommitOffsets, Consumer, Subscription};
pub use error::{Error, Result};
pub use listener::{NoopListener, RebalanceContext, RebalanceListener};
pub use offset::Offset;
pub use record::{Coordinates, Header, Record, TopicPartition};
pub use wakeup::WakeupHandle;

// Types users move across tasks and threads stay `Send + Sync` (a consumer is `Send`:
// one task drives it, and `Box<dyn Consumer>` moves into a spawned task). Checked at
// compile time, so a field that breaks this fails the build, not a user's code.
const _: () = {
    const fn send_sync<T: Send + Sync + ?Sized>() {}
    const fn send<T: Send + ?Sized>() {}
    send_sync::<Record>();
    send_sync::<Batch>();
    send_sync::<TopicPartition>();
    send_sync::<Coordinates>();
    send_sync::<Header>();
    send_sync::<Offset>();
    send_sync::<ConsumerConfig>();
    send_sync::<Subscription>();
    send_sync::<CommitOffsets>();
    send_sync::<RebalanceContext>();
    send_sync::<WakeupHandle>();
    send_sync::<Error>();
    send_sync::<dyn RebalanceListener>();
    send_sync::<dyn Assignor>();
    send::<dyn Consumer>();
    send::<CommitCallback>();
};

/// Re-exported so that implementors of [`Consumer`] and [`RebalanceListener`] use the
/// same macro version as weir.
pub use async_trait::async_trait;
pub use bytes::Bytes;
