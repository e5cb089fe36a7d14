//! The [`Backend`] trait: what a backend provides so the conformance suite can run
//! against it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use weir_core::{Consumer, ConsumerConfig, Result};

/// A backend under test: creates topics, produces records and builds consumers.
///
/// The conformance scenarios only talk to the backend through this trait and through
/// [`weir_core::Consumer`], so the same test bodies run against the embedded log and
/// against Kafka. Each scenario creates its own topics and groups with names from
/// [`unique`](Self::unique); a backend value may be shared by many scenarios running
/// at once, or made fresh for each one (the [`conformance_suite!`](crate::conformance_suite)
/// macro evaluates the factory expression once per test).
///
/// Timeouts the scenarios depend on (`session.timeout.ms`, `heartbeat.interval.ms`,
/// `max.poll.interval.ms`, `auto.commit.interval.ms`) are read from
/// [`config`](Self::config), so a broker-backed backend can use larger ones than the
/// embedded log. How long a scenario waits for something that should happen "soon" is
/// [`patience`](Self::patience).
///
/// ```
/// use weir_core::{async_trait, Consumer, ConsumerConfig, Result};
/// use weir_testkit::Backend;
///
/// /// A backend that cannot do anything (a real one wraps a log or a broker).
/// struct Nothing;
///
/// #[async_trait]
/// impl Backend for Nothing {
///     fn name(&self) -> &'static str { "nothing" }
///     async fn create_topic(&self, topic: &str, _partitions: i32) -> Result<()> {
///         Err(weir_core::Error::UnknownTopic { topic: topic.into() })
///     }
///     async fn add_partitions(&self, topic: &str, _total: i32) -> Result<()> {
///         Err(weir_core::Error::UnknownTopic { topic: topic.into() })
///     }
///     async fn produce(&self, topic: &str, _p: i32, _k: Option<&[u8]>, _v: &[u8]) -> Result<i64> {
///         Err(weir_core::Error::UnknownTopic { topic: topic.into() })
///     }
///     fn config(&self, group: Option<&str>) -> ConsumerConfig {
///         let c = ConsumerConfig::new().with_bootstrap_servers("nowhere:0");
///         match group { Some(g) => c.with_group_id(g), None => c }
///     }
///     async fn consumer(&self, _config: ConsumerConfig) -> Result<Box<dyn Consumer>> {
///         Err(weir_core::Error::IllegalState("no consumers here".into()))
///     }
/// }
///
/// let b = Nothing;
/// assert_ne!(b.unique("orders"), b.unique("orders"));
/// assert!(b.rejects_unknown_keys());
/// ```
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A short name for messages (`log`, `kafka`).
    fn name(&self) -> &'static str;

    /// Create `topic` with `partitions` partitions and return once consumers and
    /// producers of this backend can use it.
    async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()>;

    /// Grow `topic` to `total` partitions and return once the new partitions can be
    /// produced to.
    async fn add_partitions(&self, topic: &str, total: i32) -> Result<()>;

    /// Append one record to `topic`/`partition` and return its offset once it is
    /// readable by consumers. A broker-backed backend may work around broker faults
    /// here (one record per produce request, retries); it must never reorder records
    /// of a partition nor return before the record is stored.
    async fn produce(
        &self,
        topic: &str,
        partition: i32,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<i64>;

    /// A consumer configuration for this backend: `bootstrap.servers`, `group.id` (when
    /// `group` is given) and timeouts short enough for tests. Scenarios start from it
    /// and set only what they test (`auto.offset.reset`, `enable.auto.commit`,
    /// `max.poll.records`, ...); they read the timeouts they measure from it.
    ///
    /// Scenarios override `max.poll.interval.ms` only where they test it (set equal to
    /// `session.timeout.ms`) or must rule it out (ten times `session.timeout.ms`).
    /// Topics created and partitions added during a scenario must be noticed within
    /// [`patience`](Self::patience): a Kafka backend sets a short metadata refresh
    /// interval (librdkafka's `topic.metadata.refresh.interval.ms`) here.
    fn config(&self, group: Option<&str>) -> ConsumerConfig;

    /// Build a consumer from `config` (the configuration is the caller's, possibly
    /// invalid on purpose: a bad value must come back as `Error::Config` naming the
    /// key).
    async fn consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>>;

    /// Make `consumer` vanish as a crashed process would: it stops heartbeating and
    /// polling at once, and it does **not** leave its group; the group notices only
    /// through `session.timeout.ms`.
    ///
    /// The default drops the consumer, which is right for a backend whose `Drop` is a
    /// crash (the embedded log: dropping a `LogConsumer` without `close()` does not tell
    /// the group). A backend whose `Drop` leaves the group, or whose client heartbeats
    /// from a background thread while the consumer value lives (librdkafka), must
    /// override this to cut the client off, e.g. by severing its connections through a
    /// proxy or by running the consumer in a process it kills. Leaking the consumer
    /// (`std::mem::forget`) is not a crash for such clients: they keep heartbeating.
    async fn abandon(&self, consumer: Box<dyn Consumer>) {
        drop(consumer);
    }

    /// Whether a configuration key that neither weir nor this backend knows is rejected
    /// with `Error::Config` naming the key when a consumer is built. The embedded log
    /// rejects every key it does not know; a backend that passes unknown keys on to a
    /// client library that rejects them also answers `true`.
    fn rejects_unknown_keys(&self) -> bool {
        true
    }

    /// Properties weir does not know but this backend accepts and passes on (e.g.
    /// librdkafka's `socket.keepalive.enable`). Building a consumer with each of them
    /// must succeed. Empty by default.
    fn passthrough_keys(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }

    /// How long one `poll` in a scenario's loop waits. Short, so that a scenario
    /// polling several members round after round keeps every member heartbeating.
    fn poll_timeout(&self) -> Duration {
        Duration::from_millis(100)
    }

    /// How long a scenario waits for something that should happen "soon" (records
    /// arriving, an assignment settling) before it fails with what it saw.
    fn patience(&self) -> Duration {
        Duration::from_secs(30)
    }

    /// How long this backend's group coordinator holds every rebalance round beyond
    /// what the protocol needs (zero by default). Scenarios that time a rebalance
    /// (after `close()` or `unsubscribe()`) allow this much on top of their bound. The
    /// tansu broker used for Kafka tests holds each JoinGroup round for about half
    /// `session.timeout.ms` (see DEVELOPERS.md).
    fn rebalance_delay(&self) -> Duration {
        Duration::ZERO
    }

    /// `Some(reason)` when this backend's test broker cannot add partitions to an
    /// existing topic (a documented broker fault, not a weir limitation). The two
    /// scenarios that grow a topic then check that the broker still refuses, and fail
    /// the moment it succeeds, so that the exception is removed as soon as the broker
    /// learns the feature. `None` (the default): growing a topic must work.
    fn cannot_add_partitions(&self) -> Option<&'static str> {
        None
    }

    /// A fresh name for a topic or a group: `prefix` followed by a suffix unique in
    /// this process and unlikely to repeat across processes. Only ASCII letters,
    /// digits, `-` and `_` (safe in topic names and regular expressions).
    fn unique(&self, prefix: &str) -> String {
        unique_name(prefix)
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A name unique in this process (a counter) and across processes (pid, clock).
///
/// ```
/// let a = weir_testkit::unique_name("t");
/// let b = weir_testkit::unique_name("t");
/// assert!(a.starts_with("t-"));
/// assert_ne!(a, b);
/// ```
pub fn unique_name(prefix: &str) -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}-{n}", std::process::id())
}
