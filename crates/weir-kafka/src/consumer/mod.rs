//! [`KafkaConsumer`]: weir's `Consumer` over librdkafka.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::Offset as RdOffset;
use weir_core::{
    async_trait, Batch, CommitCallback, CommitOffsets, Consumer, ConsumerConfig, Error, Offset,
    RebalanceListener, Record, Result, Subscription, TopicPartition, WakeupHandle,
};

use crate::config::{to_client_config, Redactor};
use crate::context::{RebalanceEvent, Shared, WeirContext};
use crate::error::{from_code, from_kafka};
use crate::fetch::{fetch, Fetched};

mod commit;
mod offsets;
mod rebalance;
mod teardown;

use offsets::{clone_error, tpl_plain, watermark_error};
use teardown::{teardown, DROP_PATIENCE};

/// Async commits waiting for their outcome: id, offsets, callback.
type PendingCommits = VecDeque<(u64, BTreeMap<TopicPartition, i64>, Option<CommitCallback>)>;

type Rd = BaseConsumer<WeirContext>;

/// How long one blocking fetch waits at most before the consumer's task looks at
/// wakeups, rebalances and its deadline again.
const FETCH_SLICE: Duration = Duration::from_millis(100);
/// Timeout of broker requests made on the consumer's behalf (metadata, watermarks,
/// committed offsets).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `commit_sync` retries retriable failures.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a pattern subscription looks for new matching topics.
const PATTERN_REFRESH: Duration = Duration::from_secs(2);
/// How long `unsubscribe()` waits for librdkafka to give the assignment up.
const UNSUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound of `close()`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `poll` waits before resolving again a start offset that failed for a
/// reason that may pass (broker unreachable, coordinator loading).
const RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// Per assigned partition: what is buffered and where delivery stands.
#[derive(Debug, Default)]
struct PartState {
    /// Records fetched but not delivered yet, in offset order.
    buf: VecDeque<Record>,
    /// The offset of the next record to deliver (`None`: start not resolved yet).
    position: Option<i64>,
    /// The lowest offset a newly fetched record may have: anything below was fetched
    /// before a seek or assignment and is dropped.
    floor: Option<i64>,
}

enum Mode {
    Idle,
    Subscribed {
        subscription: Subscription,
        listener: Arc<dyn RebalanceListener>,
        /// For patterns: the topics currently subscribed and when they were computed.
        matched: Option<(BTreeSet<String>, Instant)>,
    },
    Assigned,
}

/// weir's [`Consumer`] for Kafka, over librdkafka (`rdkafka`'s `BaseConsumer`).
///
/// - **Seek on assignment.** librdkafka's rebalance callback does not assign: the
///   partition list is handed to the consumer's task, which runs the (async)
///   [`RebalanceListener`], resolves every partition's start offset (the listener's
///   seek, else the committed offset, else `auto.offset.reset`) and then calls
///   `assign` / `incremental_assign` with those offsets in the list. Fetching starts
///   at the chosen offset; records fetched earlier (before a seek or a reassignment)
///   are dropped by a per-partition floor, so none is ever delivered.
/// - **Revoke.** Buffered records of revoked partitions are dropped, the listener runs,
///   its commits (and the auto-commit) are made synchronously, and only then are the
///   partitions unassigned. A member evicted from its group gets
///   `on_partitions_lost` instead, with no commit.
/// - **Eager and cooperative** (`range`, `roundrobin`, `cooperative-sticky`), following
///   librdkafka's `rebalance_protocol()`.
/// - **Threads.** Blocking librdkafka calls run off the async runtime (the blocking
///   pool, or a detached thread where a call may hang on a dead broker); `poll` fetches
///   up to `max.poll.records` in one blocking call, so there is no per-record task hop.
/// - **Commits.** `enable.auto.commit` is done by weir inside `poll` (the positions of
///   what earlier polls returned), never for records that were only prefetched.
/// - **close()** is bounded (10 s by default, [`set_close_timeout`](Self::set_close_timeout)),
///   even when the broker is gone. It leaves the group at once (LeaveGroup: the other
///   members get its partitions without waiting for `session.timeout.ms`). A consumer
///   dropped without `close()` leaves the group too, on a thread of its own, but runs
///   no listener and makes no final commit.
///
/// ```no_run
/// # async fn run() -> weir_core::Result<()> {
/// use std::{sync::Arc, time::Duration};
/// use weir_core::{Consumer, ConsumerConfig, NoopListener, Subscription};
///
/// let config = ConsumerConfig::new()
///     .with_bootstrap_servers("kafka://127.0.0.1:9092")
///     .with_group_id("orders-to-db");
/// let mut consumer = weir_kafka::KafkaConsumer::new(config)?;
/// consumer.subscribe(Subscription::topics(["orders"]), Arc::new(NoopListener)).await?;
/// let batch = consumer.poll(Duration::from_millis(500)).await?;
/// println!("{} records", batch.len());
/// consumer.close().await
/// # }
/// ```
pub struct KafkaConsumer {
    rd: Option<Arc<Rd>>,
    shared: Arc<Shared>,
    redactor: Redactor,
    config: ConsumerConfig,
    /// No group.id in weir's config: only `assign` is allowed, no commits.
    standalone: bool,
    mode: Mode,
    parts: BTreeMap<TopicPartition, PartState>,
    /// Partitions assigned whose start could not be resolved (auto.offset.reset=none):
    /// paused in librdkafka until a seek gives them a start.
    unresolved: BTreeMap<TopicPartition, Error>,
    /// The unresolved partitions whose error may pass, with the start they were to
    /// get: `poll` resolves them again (from `retry_at` on) instead of failing forever.
    retry: BTreeMap<TopicPartition, Offset>,
    retry_at: Instant,
    paused: BTreeSet<TopicPartition>,
    pending_seeks: BTreeMap<TopicPartition, Offset>,
    inflight: Option<tokio::task::JoinHandle<Fetched>>,
    pending_error: Option<Error>,
    /// Async commits waiting for their outcome, by id. Mutex only to make the consumer
    /// `Sync` (callbacks are `Send`, not `Sync`).
    async_commits: parking_lot::Mutex<PendingCommits>,
    /// The commit thread's queue (started on the first async commit).
    committer: Option<std::sync::mpsc::Sender<(u64, BTreeMap<TopicPartition, i64>)>>,
    next_commit_id: u64,
    last_auto_commit: Instant,
    auto_committed: BTreeMap<TopicPartition, i64>,
    topics: Vec<Arc<str>>,
    rr: usize,
    wakeup: WakeupHandle,
    close_timeout: Duration,
}

impl fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("group_id", &self.config.group_id())
            .field("assignment", &self.parts.keys().collect::<Vec<_>>())
            .field("paused", &self.paused)
            .field("closed", &self.rd.is_none())
            .finish_non_exhaustive()
    }
}

fn backend(message: impl Into<String>) -> Error {
    Error::Backend {
        backend: "kafka",
        message: message.into(),
        retriable: false,
    }
}

/// Run a blocking librdkafka call on a thread of its own and wait for it. A thread of
/// its own (not tokio's blocking pool) because some calls can hang while the broker is
/// unreachable; an abandoned call must not keep the runtime from shutting down.
async fn detached<T, F>(what: &'static str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("weir-kafka-{what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| backend(format!("{what}: cannot start a thread: {e}")))?;
    rx.await
        .map_err(|_| backend(format!("{what}: the librdkafka call failed")))
}

fn is_cooperative(rd: &Rd) -> bool {
    matches!(rd.rebalance_protocol(), RebalanceProtocol::Cooperative)
}

impl KafkaConsumer {
    /// Create a consumer (no broker contact yet). Fails with `Error::Config` naming the
    /// key when weir or librdkafka rejects a property; values never appear in errors.
    ///
    /// ```
    /// use weir_core::ConsumerConfig;
    /// let bad = ConsumerConfig::new()
    ///     .with_bootstrap_servers("127.0.0.1:9")
    ///     .with("no.such.property", "1")?;
    /// let err = weir_kafka::KafkaConsumer::new(bad).unwrap_err();
    /// assert!(err.to_string().contains("no.such.property"));
    /// # Ok::<(), weir_core::Error>(())
    /// ```
    pub fn new(config: ConsumerConfig) -> Result<Self> {
        let redactor = Redactor::new(&config);
        let mapped = to_client_config(&config)?;
        let shared = Arc::new(Shared::default());
        let context = WeirContext {
            shared: shared.clone(),
            redactor: redactor.clone(),
        };
        let rd = Rd::from_config_and_context(&mapped.client, context)
            .map_err(|e| from_kafka("creating the consumer", &e, &redactor))?;
        Ok(Self {
            rd: Some(Arc::new(rd)),
            shared,
            redactor,
            standalone: mapped.standalone,
            config,
            mode: Mode::Idle,
            parts: BTreeMap::new(),
            unresolved: BTreeMap::new(),
            retry: BTreeMap::new(),
            retry_at: Instant::now(),
            paused: BTreeSet::new(),
            pending_seeks: BTreeMap::new(),
            inflight: None,
            pending_error: None,
            async_commits: parking_lot::Mutex::new(VecDeque::new()),
            committer: None,
            next_commit_id: 0,
            last_auto_commit: Instant::now(),
            auto_committed: BTreeMap::new(),
            topics: Vec::new(),
            rr: 0,
            wakeup: WakeupHandle::new(),
            close_timeout: CLOSE_TIMEOUT,
        })
    }

    /// Bound `close()` to `timeout` (10 s by default): whatever is not done by then
    /// (a final commit, leaving the group) is abandoned.
    ///
    /// ```
    /// let config = weir_core::ConsumerConfig::new().with_bootstrap_servers("kafka://127.0.0.1:9092");
    /// let mut consumer = weir_kafka::KafkaConsumer::new(config)?;
    /// consumer.set_close_timeout(std::time::Duration::from_secs(3));
    /// # Ok::<(), weir_core::Error>(())
    /// ```
    pub fn set_close_timeout(&mut self, timeout: Duration) {
        self.close_timeout = timeout;
    }

    /// The underlying rdkafka consumer, for what weir does not cover (statistics,
    /// group metadata). Assigning, seeking or committing through it bypasses weir's
    /// bookkeeping. `None` after `close`.
    ///
    /// ```
    /// use rdkafka::consumer::Consumer as _;
    /// let config = weir_core::ConsumerConfig::new().with_bootstrap_servers("127.0.0.1:9092");
    /// let consumer = weir_kafka::KafkaConsumer::new(config)?;
    /// let rd = consumer.rdkafka().expect("open consumer");
    /// assert!(rd.assignment().map(|a| a.count() == 0).unwrap_or(true));
    /// # Ok::<(), weir_core::Error>(())
    /// ```
    pub fn rdkafka(&self) -> Option<&BaseConsumer<WeirContext>> {
        self.rd.as_deref()
    }

    fn rd(&self) -> Result<Arc<Rd>> {
        self.rd.clone().ok_or(Error::Closed)
    }

    fn group(&self) -> String {
        self.config.group_id().unwrap_or_default().to_owned()
    }

    fn need_group(&self, what: &str) -> Result<()> {
        if self.standalone {
            Err(Error::IllegalState(format!(
                "{what} needs a group.id in the configuration"
            )))
        } else {
            Ok(())
        }
    }

    /// Wait for a fetch still running (after a wakeup) and keep what it brought.
    async fn settle(&mut self) -> Result<()> {
        if let Some(h) = self.inflight.take() {
            let fetched = h
                .await
                .map_err(|e| backend(format!("fetch task failed: {e}")))?;
            self.merge(fetched, false);
        }
        Ok(())
    }

    /// Keep what a fetch brought. Records of partitions not assigned (any more), below
    /// a partition's floor (fetched before a seek or assignment), or of a partition
    /// without a resolved start are dropped. With `direct` (nothing buffered, nothing
    /// paused: the common case while records flow) the records are returned for
    /// delivery at once, positions advanced; otherwise they are buffered per partition.
    fn merge(&mut self, fetched: Fetched, direct: bool) -> Vec<Record> {
        self.topics = fetched.topics;
        let direct = direct
            && fetched.error.is_none()
            && !self.shared.has_rebalance()
            && self.paused.is_empty()
            && self.parts.values().all(|st| st.buf.is_empty());
        let mut out = Vec::with_capacity(if direct { fetched.records.len() } else { 0 });
        let mut current: Option<(TopicPartition, bool)> = None;
        for r in fetched.records {
            let same = matches!(&current, Some((tp, _)) if tp.partition() == r.partition && tp.topic() == &*r.topic);
            if !same {
                let tp = r.topic_partition();
                let known = self.parts.contains_key(&tp);
                current = Some((tp, known));
            }
            let Some((tp, true)) = &current else {
                // Not assigned (any more): fetched before a revoke.
                continue;
            };
            let Some(st) = self.parts.get_mut(tp) else {
                continue;
            };
            match st.floor {
                Some(floor) if r.offset < floor => {
                    tracing::debug!(target: "weir_kafka", partition = %tp, offset = r.offset, floor, "dropping a record fetched before a seek");
                    continue;
                }
                None => {
                    // Start not resolved (auto.offset.reset=none): nothing is delivered.
                    continue;
                }
                _ => {}
            }
            st.floor = Some(r.offset + 1);
            if direct {
                st.position = Some(r.offset + 1);
                out.push(r);
            } else {
                st.buf.push_back(r);
            }
        }
        if let Some(e) = fetched.error {
            self.note_fetch_error(e);
        }
        out
    }

    fn note_fetch_error(&mut self, e: KafkaError) {
        let code = e.rdkafka_error_code();
        match (&e, code) {
            (_, Some(RDKafkaErrorCode::PollExceeded)) => {
                self.pending_error = Some(Error::PollIntervalExceeded {
                    group: self.group(),
                    max_poll_interval_ms: self.config.max_poll_interval().as_millis() as u64,
                });
            }
            (KafkaError::MessageConsumptionFatal(_), _) => {
                self.pending_error = Some(from_kafka("consuming", &e, &self.redactor));
            }
            (_, Some(RDKafkaErrorCode::AutoOffsetReset)) => {
                self.pending_error = Some(from_kafka(
                    "consuming (a fetch position fell outside the log and auto.offset.reset=none)",
                    &e,
                    &self.redactor,
                ));
            }
            (_, Some(RDKafkaErrorCode::UnknownTopicOrPartition))
            | (_, Some(RDKafkaErrorCode::UnknownTopic)) => {
                tracing::warn!(target: "weir_kafka", error = %from_kafka("consuming", &e, &self.redactor), "subscribed topic not found");
            }
            _ => {
                // Transport failures and the like: librdkafka retries on its own.
                tracing::debug!(target: "weir_kafka", error = %from_kafka("consuming", &e, &self.redactor), "transient consumer error");
            }
        }
    }

    /// Positions of all assigned partitions (what has been delivered).
    fn positions(&self) -> BTreeMap<TopicPartition, i64> {
        self.parts
            .iter()
            .filter_map(|(tp, st)| st.position.map(|p| (tp.clone(), p)))
            .collect()
    }

    /// Take up to `max.poll.records` buffered records, partitions in turn, skipping
    /// paused ones; advance positions.
    fn take_batch(&mut self) -> Vec<Record> {
        let max = self.config.max_poll_records();
        let mut out = Vec::new();
        let keys: Vec<TopicPartition> = self
            .parts
            .iter()
            .filter(|(tp, st)| !st.buf.is_empty() && !self.paused.contains(*tp))
            .map(|(tp, _)| tp.clone())
            .collect();
        if keys.is_empty() {
            return out;
        }
        let n = keys.len();
        self.rr = self.rr.wrapping_add(1);
        for i in 0..n {
            if out.len() >= max {
                break;
            }
            let tp = &keys[(self.rr + i) % n];
            let Some(st) = self.parts.get_mut(tp) else {
                continue;
            };
            let take = (max - out.len()).min(st.buf.len());
            let before = out.len();
            out.extend(st.buf.drain(..take));
            if let Some(last) = out[before..].last() {
                st.position = Some(last.offset + 1);
            }
        }
        out
    }

    fn buffered(&self) -> usize {
        self.parts
            .iter()
            .filter(|(tp, _)| !self.paused.contains(*tp))
            .map(|(_, st)| st.buf.len())
            .sum()
    }

    fn check_open(&self) -> Result<()> {
        if self.rd.is_none() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    async fn close_inner(&mut self, deadline: Instant) -> Result<()> {
        self.settle().await?;
        self.finish_async_commits(deadline).await;
        let mut result = Ok(());
        if matches!(self.mode, Mode::Subscribed { .. }) {
            let all: Vec<TopicPartition> = self.parts.keys().cloned().collect();
            // The listener runs now; librdkafka's own revoke during close only unassigns.
            // A member already evicted (session or poll interval expired) gets
            // on_partitions_lost: its partitions belong to someone else, no commit.
            let lost = self.rd()?.assignment_lost();
            result = self.on_revoke(all, lost, false).await;
        } else if self.config.enable_auto_commit() && !self.standalone {
            let map = self.positions();
            let _ = self.commit_map_sync(map, deadline).await;
        }
        // weir's part is done: librdkafka's consumer close (leaving the group) is the
        // one `BaseConsumer`'s `Drop` makes, once the commit thread and any fetch let
        // the handle go; closing it here as well made that drop's close fail and log
        // an error (reasoning in teardown.rs).
        self.committer = None;
        let rd = self.rd.take().ok_or(Error::Closed)?;
        let shared = self.shared.clone();
        let torn_down = detached("close", move || teardown(rd, &shared, deadline));
        let remaining = deadline.saturating_duration_since(Instant::now());
        let closed = match tokio::time::timeout(remaining, torn_down).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(Error::Timeout(
                "closing the consumer (another handle to it was still in use)".into(),
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Timeout(
                "closing the consumer (leaving the group)".into(),
            )),
        };
        self.run_commit_callbacks();
        if let Err(e) = closed {
            tracing::warn!(target: "weir_kafka", error = %e, "close did not finish cleanly");
        }
        result
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        if let Some(rd) = self.rd.take() {
            // librdkafka's close leaves the group and may wait for the broker: never on
            // the caller's thread. Set before the thread starts, so that even a drop
            // made here (the thread could not start) carries its revoke out.
            self.shared.begin_close();
            let shared = self.shared.clone();
            let _ = std::thread::Builder::new()
                .name("weir-kafka-drop".into())
                .spawn(move || teardown(rd, &shared, Instant::now() + DROP_PATIENCE));
        }
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn subscribe(
        &mut self,
        subscription: Subscription,
        listener: Arc<dyn RebalanceListener>,
    ) -> Result<()> {
        let rd = self.rd()?;
        if matches!(self.mode, Mode::Assigned) {
            return Err(Error::IllegalState(
                "subscribe after assign: call assign(&[]) first".into(),
            ));
        }
        self.need_group("subscribe")?;
        match &subscription {
            Subscription::Topics(topics) => {
                if topics.is_empty() {
                    return self.unsubscribe().await;
                }
                // rd_kafka_subscribe waits for librdkafka's main thread: off the runtime.
                let list = topics.clone();
                detached("subscribe", move || {
                    let names: Vec<&str> = list.iter().map(String::as_str).collect();
                    rd.subscribe(&names)
                })
                .await?
                .map_err(|e| from_kafka("subscribing", &e, &self.redactor))?;
            }
            Subscription::Pattern(_) => {}
        }
        self.mode = Mode::Subscribed {
            subscription,
            listener,
            matched: None,
        };
        self.refresh_pattern().await
    }

    async fn unsubscribe(&mut self) -> Result<()> {
        let rd = self.rd()?;
        self.settle().await?;
        let mut result = Ok(());
        if matches!(self.mode, Mode::Subscribed { .. }) {
            let all: Vec<TopicPartition> = self.parts.keys().cloned().collect();
            let had_partitions = !all.is_empty();
            let lost = rd.assignment_lost();
            result = self.on_revoke(all, lost, false).await;
            // librdkafka leaves the group only once the revoke it now raises has been
            // carried out, which happens in a poll; the caller may not poll again, so
            // carry it out here (the listener already ran above).
            let shared = self.shared.clone();
            let redactor = self.redactor.clone();
            detached("unsubscribe", move || {
                rd.unsubscribe();
                let started = Instant::now();
                let deadline = started + UNSUBSCRIBE_TIMEOUT;
                let mut handled = false;
                while Instant::now() < deadline {
                    let _ = rd.poll(Duration::from_millis(20));
                    while let Some(ev) = shared.take_rebalance() {
                        handled = true;
                        let r = match ev {
                            RebalanceEvent::Revoke { partitions, .. } if is_cooperative(&rd) => {
                                rd.incremental_unassign(&tpl_plain(&partitions))
                            }
                            _ => rd.unassign(),
                        };
                        if let Err(e) = r {
                            tracing::debug!(target: "weir_kafka", error = %from_kafka("unassigning after unsubscribe", &e, &redactor), "unsubscribe");
                        }
                    }
                    let empty = rd.assignment().map(|a| a.count() == 0).unwrap_or(true);
                    let settled = handled || (!had_partitions && started.elapsed() > Duration::from_millis(200));
                    if empty && settled {
                        break;
                    }
                }
            })
            .await?;
            self.parts.clear();
            self.paused.clear();
            self.pending_seeks.clear();
            self.unresolved.clear();
            self.retry.clear();
        }
        self.mode = Mode::Idle;
        result
    }

    async fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let rd = self.rd()?;
        if matches!(self.mode, Mode::Subscribed { .. }) {
            return Err(Error::IllegalState(
                "assign while subscribed: unsubscribe first".into(),
            ));
        }
        self.settle().await?;
        let old: Vec<TopicPartition> = self.parts.keys().cloned().collect();
        if !old.is_empty() {
            self.on_revoke(old, false, false).await?;
        }
        if partitions.is_empty() {
            let r = detached("unassign", move || rd.unassign()).await?;
            r.map_err(|e| from_kafka("unassigning partitions", &e, &self.redactor))?;
            self.mode = Mode::Idle;
            return Ok(());
        }
        self.mode = Mode::Assigned;
        self.on_assign(partitions.to_vec(), false).await
    }

    async fn partitions_for(&self, topic: &str) -> Result<Vec<TopicPartition>> {
        let rd = self.rd()?;
        let name = topic.to_owned();
        let md = detached("metadata", move || {
            rd.fetch_metadata(Some(&name), REQUEST_TIMEOUT).map(|m| {
                m.topics().iter().find(|t| t.name() == name).map(|t| {
                    (
                        t.error(),
                        t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>(),
                    )
                })
            })
        })
        .await?
        .map_err(|e| {
            from_kafka(
                &format!("reading the metadata of `{topic}`"),
                &e,
                &self.redactor,
            )
        })?;
        match md {
            Some((None, ids)) if !ids.is_empty() => {
                let mut v: Vec<TopicPartition> = ids
                    .into_iter()
                    .map(|p| TopicPartition::new(topic, p))
                    .collect();
                v.sort();
                Ok(v)
            }
            Some((Some(err), _)) => {
                let code = RDKafkaErrorCode::from(err);
                match code {
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                        Err(Error::UnknownTopic {
                            topic: topic.to_owned(),
                        })
                    }
                    other => Err(from_code(
                        &format!("reading the metadata of `{topic}`"),
                        other,
                    )),
                }
            }
            _ => Err(Error::UnknownTopic {
                topic: topic.to_owned(),
            }),
        }
    }

    async fn poll(&mut self, timeout: Duration) -> Result<Batch> {
        self.check_open()?;
        if self.wakeup.take() {
            return Err(Error::Wakeup);
        }
        let deadline = Instant::now() + timeout;
        self.settle().await?;
        self.run_commit_callbacks();
        self.maybe_auto_commit();
        let mut fetched_once = false;
        loop {
            while let Some(ev) = self.shared.take_rebalance() {
                self.handle_rebalance(ev).await?;
            }
            if let Some(e) = self.pending_error.take() {
                return Err(e);
            }
            self.refresh_pattern().await?;
            self.schedule_retries();
            self.apply_seeks().await?;
            // A paused partition's unresolved start is not reported: the caller paused
            // it (e.g. to retry it later), and reporting it on every poll would keep
            // the other partitions from being delivered at all.
            if let Some((_, e)) = self
                .unresolved
                .iter()
                .find(|(tp, _)| !self.paused.contains(*tp))
            {
                return Err(clone_error(e));
            }
            let records = self.take_batch();
            if !records.is_empty() {
                return Ok(Batch::from(records));
            }
            if self.wakeup.take() {
                return Err(Error::Wakeup);
            }
            let now = Instant::now();
            if fetched_once && now >= deadline {
                return Ok(Batch::new());
            }
            fetched_once = true;
            let rd = self.rd()?;
            let want = self
                .config
                .max_poll_records()
                .saturating_sub(self.buffered())
                .max(1);
            // First without waiting, on this thread: while records flow, no thread
            // hop at all.
            let quick = fetch(&rd, &self.shared, Duration::ZERO, want, self.topics.clone());
            if !quick.records.is_empty() || quick.error.is_some() || self.shared.has_rebalance() {
                let direct = self.merge(quick, true);
                if !direct.is_empty() {
                    return Ok(Batch::from(direct));
                }
                continue;
            }
            self.topics = quick.topics;
            let shared = self.shared.clone();
            let slice = deadline.saturating_duration_since(now).min(FETCH_SLICE);
            let topics = self.topics.clone();
            let mut handle =
                tokio::task::spawn_blocking(move || fetch(&rd, &shared, slice, want, topics));
            let wakeup = self.wakeup.clone();
            let outcome = tokio::select! {
                r = &mut handle => Some(r),
                _ = wakeup.notified() => None,
            };
            match outcome {
                Some(r) => {
                    let fetched = r.map_err(|e| backend(format!("fetch task failed: {e}")))?;
                    let direct = self.merge(fetched, true);
                    if !direct.is_empty() {
                        return Ok(Batch::from(direct));
                    }
                }
                None => {
                    self.inflight = Some(handle);
                    self.wakeup.take();
                    return Err(Error::Wakeup);
                }
            }
        }
    }

    async fn commit_sync(&mut self, offsets: CommitOffsets) -> Result<()> {
        self.check_open()?;
        self.need_group("commit_sync")?;
        let map = match offsets {
            CommitOffsets::Consumed => self.positions(),
            CommitOffsets::Explicit(m) => m,
        };
        self.commit_map_sync(map, Instant::now() + COMMIT_TIMEOUT)
            .await
    }

    fn commit_async(&mut self, offsets: CommitOffsets, callback: Option<CommitCallback>) {
        let map = match offsets {
            CommitOffsets::Consumed => self.positions(),
            CommitOffsets::Explicit(m) => m,
        };
        self.run_commit_callbacks();
        self.start_async_commit(map, callback);
    }

    async fn committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
        let rd = self.rd()?;
        self.need_group("committed")?;
        let tpl = tpl_plain(partitions);
        let r = detached("committed", move || {
            rd.committed_offsets(tpl, REQUEST_TIMEOUT)
        })
        .await?;
        let tpl = r.map_err(|e| from_kafka("reading committed offsets", &e, &self.redactor))?;
        let mut out: BTreeMap<TopicPartition, Option<i64>> =
            partitions.iter().map(|tp| (tp.clone(), None)).collect();
        for e in tpl.elements() {
            if let RdOffset::Offset(o) = e.offset() {
                out.insert(TopicPartition::new(e.topic(), e.partition()), Some(o));
            }
        }
        Ok(out)
    }

    async fn position(&mut self, tp: &TopicPartition) -> Result<i64> {
        self.check_open()?;
        if !self.parts.contains_key(tp) {
            return Err(Error::NotAssigned(tp.clone()));
        }
        self.settle().await?;
        self.schedule_retries();
        self.apply_seeks().await?;
        if let Some(e) = self.unresolved.get(tp) {
            return Err(clone_error(e));
        }
        self.parts
            .get(tp)
            .and_then(|st| st.position)
            .ok_or_else(|| Error::NotAssigned(tp.clone()))
    }

    fn seek(&mut self, tp: &TopicPartition, offset: Offset) -> Result<()> {
        self.check_open()?;
        let Some(st) = self.parts.get_mut(tp) else {
            return Err(Error::NotAssigned(tp.clone()));
        };
        st.buf.clear();
        self.pending_seeks.insert(tp.clone(), offset);
        Ok(())
    }

    fn pause(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let rd = self.rd()?;
        if let Some(tp) = partitions.iter().find(|tp| !self.parts.contains_key(*tp)) {
            return Err(Error::NotAssigned(tp.clone()));
        }
        rd.pause(&tpl_plain(partitions))
            .map_err(|e| from_kafka("pausing", &e, &self.redactor))?;
        self.paused.extend(partitions.iter().cloned());
        Ok(())
    }

    fn resume(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let rd = self.rd()?;
        if let Some(tp) = partitions.iter().find(|tp| !self.parts.contains_key(*tp)) {
            return Err(Error::NotAssigned(tp.clone()));
        }
        let to_resume: Vec<TopicPartition> = partitions
            .iter()
            .filter(|tp| !self.unresolved.contains_key(*tp))
            .cloned()
            .collect();
        rd.resume(&tpl_plain(&to_resume))
            .map_err(|e| from_kafka("resuming", &e, &self.redactor))?;
        for tp in partitions {
            self.paused.remove(tp);
        }
        Ok(())
    }

    fn paused(&self) -> BTreeSet<TopicPartition> {
        self.paused.clone()
    }

    fn assignment(&self) -> BTreeSet<TopicPartition> {
        self.parts.keys().cloned().collect()
    }

    async fn watermarks(&self, tp: &TopicPartition) -> Result<(i64, i64)> {
        let rd = self.rd()?;
        let t = tp.clone();
        let r = detached("watermarks", move || {
            rd.fetch_watermarks(t.topic(), t.partition(), REQUEST_TIMEOUT)
        })
        .await?;
        r.map_err(|e| watermark_error(tp, &e, &self.redactor))
    }

    fn wakeup_handle(&self) -> WakeupHandle {
        self.wakeup.clone()
    }

    async fn close(&mut self) -> Result<()> {
        self.check_open()?;
        let deadline = Instant::now() + self.close_timeout;
        let result = match tokio::time::timeout(self.close_timeout, self.close_inner(deadline))
            .await
        {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(target: "weir_kafka", "close timed out; abandoning the librdkafka handle");
                Ok(())
            }
        };
        let left: Vec<_> = self.async_commits.lock().drain(..).collect();
        for (_, _, cb) in left.into_iter() {
            if let Some(cb) = cb {
                cb(Err(Error::Timeout(
                    "the consumer closed before the commit's outcome was known".into(),
                )));
            }
        }
        self.committer = None;
        if let Some(rd) = self.rd.take() {
            // close_inner timed out before handing the handle over: tear it down anyway.
            self.shared.begin_close();
            let shared = self.shared.clone();
            let _ = std::thread::Builder::new()
                .name("weir-kafka-drop".into())
                .spawn(move || teardown(rd, &shared, Instant::now() + DROP_PATIENCE));
        }
        self.parts.clear();
        self.paused.clear();
        self.mode = Mode::Idle;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::NoopListener;

    #[test]
    fn consumer_is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<KafkaConsumer>();
        check::<crate::WeirContext>();
    }

    #[tokio::test]
    async fn standalone_consumer_refuses_group_operations() {
        let config = ConsumerConfig::new().with_bootstrap_servers("127.0.0.1:9");
        let mut c = KafkaConsumer::new(config).unwrap();
        let e = c
            .subscribe(Subscription::topics(["t"]), Arc::new(NoopListener))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::IllegalState(_)), "{e}");
        let e = c.commit_sync(CommitOffsets::Consumed).await.unwrap_err();
        assert!(matches!(e, Error::IllegalState(_)), "{e}");
        let tp = TopicPartition::new("t", 0);
        assert!(matches!(
            c.seek(&tp, Offset::At(1)),
            Err(Error::NotAssigned(_))
        ));
        assert!(matches!(
            c.pause(std::slice::from_ref(&tp)),
            Err(Error::NotAssigned(_))
        ));
        c.close().await.unwrap();
        assert!(matches!(c.poll(Duration::ZERO).await, Err(Error::Closed)));
        assert!(matches!(c.close().await, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn wakeup_before_poll_returns_wakeup() {
        let config = ConsumerConfig::new().with_bootstrap_servers("127.0.0.1:9");
        let mut c = KafkaConsumer::new(config).unwrap();
        c.wakeup_handle().wakeup();
        assert!(matches!(
            c.poll(Duration::from_secs(5)).await,
            Err(Error::Wakeup)
        ));
        c.close().await.unwrap();
    }
}
