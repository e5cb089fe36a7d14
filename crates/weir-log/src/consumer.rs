//! [`LogConsumer`]: weir's [`Consumer`] over the embedded log.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;
use weir_core::{
    async_trait, Assignor, Batch, CommitCallback, CommitOffsets, Consumer, ConsumerConfig, Error,
    Offset, RebalanceContext, RebalanceListener, Result, Subscription, TopicPartition,
    WakeupHandle,
};

use crate::fetch::{self, FetchLimits, PartState, Pos};
use crate::group::{
    Coordinator, Directive, EvictReason, GroupDescription, GroupHandle, MemberSpec,
};
use crate::Log;

/// A consumer of the embedded log, implementing [`weir_core::Consumer`] with Kafka's
/// semantics: consumer groups with generations and rebalances (eager or cooperative),
/// committed offsets stored durably in the log directory, `auto.offset.reset`,
/// `max.poll.records`, pause/resume, seeks, standalone `assign`, and a wakeup handle.
///
/// Consumers of the same log directory anywhere in the process share one in-process
/// group coordinator; consumers with the same `group.id` share partitions.
///
/// - The first `poll` after `subscribe` joins the group; every poll heartbeats and runs
///   rebalances and their [`RebalanceListener`] callbacks. A consumer is alive while it
///   exists: dropping it without [`close`](Consumer::close) is a crash (the group takes
///   its partitions back after `session.timeout.ms`); not polling for
///   `max.poll.interval.ms` gets it evicted, and its next poll calls
///   `on_partitions_lost` and returns [`Error::PollIntervalExceeded`]; the poll after
///   that joins again.
/// - Keys the embedded log cannot use (`ConsumerConfig::other`, e.g. `security.protocol`)
///   are rejected with [`Error::Config`] naming the key. `fetch.min.bytes`,
///   `fetch.max.wait.ms`, buffer sizes and `isolation.level` have no effect on a local
///   log (a poll returns as soon as any record is there).
/// - `commit_sync` does not retry: the embedded log's commit either succeeds or fails
///   for good (a rebalance took the partition: [`Error::CommitFailed`]; a disk error).
///   A consumer using `assign` may commit for its `group.id` only while that group has
///   no members (as with Kafka's coordinator); otherwise [`Error::CommitFailed`].
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use weir_core::{AutoOffsetReset, CommitOffsets, Consumer, ConsumerConfig, NoopListener, Subscription};
/// use weir_log::{Log, LogConsumer, LogOptions, Producer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> weir_core::Result<()> {
/// let dir = tempfile::tempdir().map_err(|e| weir_core::Error::io("tempdir", e))?;
/// let log = Log::open(dir.path(), LogOptions::default())?;
/// log.create_topic("greetings", 2)?;
/// let producer = Producer::new(log.clone());
/// producer.send("greetings", Some("k".into()), Some("hello".into()))?;
///
/// let config = ConsumerConfig::new()
///     .with_group_id("greeters")
///     .with_auto_offset_reset(AutoOffsetReset::Earliest)
///     .with_enable_auto_commit(false);
/// let mut consumer = LogConsumer::new(&log, config)?;
/// consumer.subscribe(Subscription::topics(["greetings"]), Arc::new(NoopListener)).await?;
/// let batch = consumer.poll(Duration::from_secs(5)).await?;
/// assert_eq!(batch.len(), 1);
/// consumer.commit_sync(CommitOffsets::Consumed).await?;
/// consumer.close().await?;
/// # Ok(()) }
/// ```
pub struct LogConsumer {
    log: Log,
    config: ConsumerConfig,
    assignors: Vec<Arc<dyn Assignor>>,
    coordinator: Arc<Coordinator>,
    mode: Mode,
    parts: BTreeMap<TopicPartition, PartState>,
    wakeup: WakeupHandle,
    closed: bool,
    rotation: usize,
    last_auto_commit: Instant,
    /// Outcomes of async commits waiting for their callbacks (a mutex only to make
    /// the consumer `Sync`; it is never contended).
    callbacks: Mutex<Vec<PendingCallback>>,
    appended: Option<watch::Receiver<u64>>,
}

type PendingCallback = (CommitCallback, Result<BTreeMap<TopicPartition, i64>>);

enum Mode {
    Idle,
    Assigned,
    Subscribed(Box<Membership>),
}

struct Membership {
    subscription: Subscription,
    listener: Arc<dyn RebalanceListener>,
    group: Arc<GroupHandle>,
    changes: watch::Receiver<u64>,
    member: Option<String>,
    generation: i32,
    next_expiry: Option<Instant>,
}

impl fmt::Debug for LogConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.mode {
            Mode::Idle => "idle".to_owned(),
            Mode::Assigned => "assigned".to_owned(),
            Mode::Subscribed(m) => format!(
                "subscribed as {} (generation {})",
                m.member.as_deref().unwrap_or("not yet joined"),
                m.generation
            ),
        };
        f.debug_struct("LogConsumer")
            .field("dir", &self.log.dir())
            .field("group", &self.config.group_id())
            .field("mode", &mode)
            .field("assignment", &self.parts.keys().collect::<Vec<_>>())
            .field("closed", &self.closed)
            .finish()
    }
}

fn listener_error(e: Error) -> Error {
    match e {
        Error::Listener(_) => e,
        other => Error::Listener(Box::new(other)),
    }
}

/// Rejects configuration the embedded log cannot honour.
pub(crate) fn check_config(config: &ConsumerConfig) -> Result<()> {
    config.validate()?;
    if let Some(key) = config.other().keys().next() {
        return Err(Error::config(
            key.clone(),
            "not a property of the embedded log (weir-log); it understands only the keys in \
             weir_core::KNOWN_KEYS (Kafka-only properties belong to a kafka:// configuration)",
        ));
    }
    Ok(())
}

/// `bootstrap.servers` may be empty or must name this log (`log:///its/dir`): a
/// configuration meant for another log or for Kafka is a mistake worth reporting.
fn check_servers(log: &Log, servers: &str) -> Result<()> {
    if servers.trim().is_empty() {
        return Ok(());
    }
    let dir = crate::connect::log_dir_from_url(servers)?;
    let same = dir.canonicalize().map(|d| d == log.dir()).unwrap_or(false);
    if same {
        Ok(())
    } else {
        Err(Error::config(
            "bootstrap.servers",
            format!(
                "names `{}`, but this consumer reads the log in `{}`",
                dir.display(),
                log.dir().display()
            ),
        ))
    }
}

impl LogConsumer {
    /// A consumer of `log` using the strategies listed in
    /// `partition.assignment.strategy` (the group picks the first one of its oldest
    /// member that every member lists, as Kafka does).
    /// Fails with [`Error::Config`] on invalid settings, on keys the embedded log does
    /// not know, and on a `bootstrap.servers` that is neither empty nor this log's
    /// `log:///dir`.
    ///
    /// ```
    /// # fn main() -> weir_core::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| weir_core::Error::io("tempdir", e))?;
    /// use weir_core::{ConsumerConfig, Error};
    /// use weir_log::{Log, LogConsumer, LogOptions};
    /// let log = Log::open(dir.path(), LogOptions::default())?;
    /// let consumer = LogConsumer::new(&log, ConsumerConfig::new().with_group_id("g"))?;
    /// # drop(consumer);
    /// let bad = ConsumerConfig::from_properties([("security.protocol", "SSL")])?;
    /// let err = LogConsumer::new(&log, bad).unwrap_err();
    /// assert!(matches!(err, Error::Config { ref key, .. } if key == "security.protocol"));
    /// # Ok(()) }
    /// ```
    pub fn new(log: &Log, config: ConsumerConfig) -> Result<Self> {
        let assignors = config
            .assignment_strategies()
            .iter()
            .map(|s| <dyn Assignor>::for_strategy(*s))
            .collect();
        Self::build(log, config, assignors)
    }

    /// A consumer of `log` with a user-provided assignment strategy (every member of a
    /// group must use the same one; a consumer joining with another is refused with
    /// [`Error::Config`] on `partition.assignment.strategy`).
    ///
    /// ```
    /// # fn main() -> weir_core::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| weir_core::Error::io("tempdir", e))?;
    /// use std::sync::Arc;
    /// use weir_core::{ConsumerConfig, RoundRobin};
    /// use weir_log::{Log, LogConsumer, LogOptions};
    /// let log = Log::open(dir.path(), LogOptions::default())?;
    /// let consumer = LogConsumer::with_assignor(&log, ConsumerConfig::new().with_group_id("g"), Arc::new(RoundRobin))?;
    /// # drop(consumer);
    /// # Ok(()) }
    /// ```
    pub fn with_assignor(
        log: &Log,
        config: ConsumerConfig,
        assignor: Arc<dyn Assignor>,
    ) -> Result<Self> {
        Self::build(log, config, vec![assignor])
    }

    fn build(log: &Log, config: ConsumerConfig, assignors: Vec<Arc<dyn Assignor>>) -> Result<Self> {
        check_config(&config)?;
        check_servers(log, config.bootstrap_servers())?;
        Ok(Self {
            coordinator: Coordinator::for_log(log),
            appended: Some(log.appended()),
            log: log.clone(),
            config,
            assignors,
            mode: Mode::Idle,
            parts: BTreeMap::new(),
            wakeup: WakeupHandle::new(),
            closed: false,
            rotation: 0,
            last_auto_commit: Instant::now(),
            callbacks: Mutex::new(Vec::new()),
        })
    }

    /// The log this consumer reads.
    ///
    /// ```
    /// # fn main() -> weir_core::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| weir_core::Error::io("tempdir", e))?;
    /// let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// let consumer = weir_log::LogConsumer::new(&log, weir_core::ConsumerConfig::new())?;
    /// assert_eq!(consumer.log().dir(), log.dir());
    /// # Ok(()) }
    /// ```
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The member id the group gave this consumer (`None` before the first poll after
    /// `subscribe`, after an eviction, and when not subscribed).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> weir_core::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| weir_core::Error::io("tempdir", e))?;
    /// use std::{sync::Arc, time::Duration};
    /// use weir_core::{Consumer, ConsumerConfig, NoopListener, Subscription};
    /// let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// log.create_topic("t", 2)?;
    /// let config = ConsumerConfig::new().with_group_id("g").with_client_id("worker");
    /// let mut consumer = weir_log::LogConsumer::new(&log, config)?;
    /// consumer.subscribe(Subscription::topics(["t"]), Arc::new(NoopListener)).await?;
    /// assert_eq!(consumer.member_id(), None); // joins on the first poll
    /// consumer.poll(Duration::from_millis(10)).await?;
    /// assert!(consumer.member_id().is_some_and(|id| id.starts_with("worker-")));
    /// assert_eq!(consumer.generation(), Some(1));
    /// let group = consumer.group_description().expect("the group exists");
    /// assert_eq!(group.members[0].owned.len(), 2);
    /// # Ok(()) }
    /// ```
    pub fn member_id(&self) -> Option<&str> {
        match &self.mode {
            Mode::Subscribed(m) => m.member.as_deref(),
            _ => None,
        }
    }

    /// The group generation this consumer last saw (`None` when not in a group).
    /// Every rebalance starts a new one; see [`member_id`](Self::member_id) for an
    /// example.
    pub fn generation(&self) -> Option<i32> {
        match &self.mode {
            Mode::Subscribed(m) if m.member.is_some() => Some(m.generation),
            _ => None,
        }
    }

    /// The coordinator's view of this consumer's group (`None` without `group.id` or
    /// before any member joined it); see [`member_id`](Self::member_id) for an example
    /// and [`describe_group`](crate::describe_group) to look at any group.
    pub fn group_description(&self) -> Option<GroupDescription> {
        self.config
            .group_id()
            .and_then(|g| self.coordinator.describe(g))
    }

    fn ensure_open(&self) -> Result<()> {
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn group_id(&self, what: &str) -> Result<&str> {
        self.config
            .group_id()
            .ok_or_else(|| Error::IllegalState(format!("{what} needs a group.id")))
    }

    /// Resolves pending positions (seeks, committed offsets) so that commits and
    /// revocations see them; a partition that cannot be resolved (e.g.
    /// `auto.offset.reset=none`) stays pending, and the error shows at the next poll.
    fn resolve_positions(&mut self) {
        if let Err(e) = fetch::resolve_all(
            &self.log,
            &mut self.parts,
            self.config.group_id(),
            self.config.auto_offset_reset(),
            true,
        ) {
            tracing::debug!(error = %e, "position not resolved yet");
        }
    }

    /// The positions of partitions whose position is known (what has been delivered,
    /// or where a seek put it).
    fn consumed(&self) -> BTreeMap<TopicPartition, i64> {
        self.parts
            .iter()
            .filter_map(|(tp, s)| match s.pos {
                Pos::At(o) => Some((tp.clone(), o)),
                Pos::Pending(_) => None,
            })
            .collect()
    }

    fn do_commit(&self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        if let Some((tp, o)) = offsets.iter().find(|(_, o)| **o < 0) {
            return Err(Error::IllegalState(format!(
                "cannot commit negative offset {o} for {tp}"
            )));
        }
        match &self.mode {
            Mode::Subscribed(m) => match &m.member {
                Some(id) => m.group.commit(id, offsets),
                None if offsets.is_empty() => Ok(()),
                None => Err(Error::CommitFailed {
                    group: self.config.group_id().unwrap_or_default().to_owned(),
                    reason: "this consumer is not a member of the group (not joined yet, or \
                             evicted); poll to join"
                        .to_owned(),
                }),
            },
            Mode::Assigned | Mode::Idle => {
                let group = self.group_id("commit")?;
                if offsets.is_empty() {
                    return Ok(());
                }
                // As Kafka's coordinator does: a consumer outside the group may commit
                // for it only while it has no members, never over the offsets of the
                // partitions' current owners.
                if let Some(d) = self.coordinator.describe(group) {
                    if !d.members.is_empty() {
                        return Err(Error::CommitFailed {
                            group: group.to_owned(),
                            reason: format!(
                                "the group has {} active member(s); a consumer that is not a member \
                                 (assign() rather than subscribe()) cannot commit for it",
                                d.members.len()
                            ),
                        });
                    }
                }
                self.log.commit_group_offsets(group, offsets)
            }
        }
    }

    fn run_callbacks(&mut self) {
        let pending = std::mem::take(self.callbacks.get_mut());
        for (cb, outcome) in pending {
            cb(outcome);
        }
    }

    fn maybe_auto_commit(&mut self, force: bool) {
        if !self.config.enable_auto_commit() || self.config.group_id().is_none() {
            return;
        }
        let now = Instant::now();
        if !force && now.duration_since(self.last_auto_commit) < self.config.auto_commit_interval()
        {
            return;
        }
        self.last_auto_commit = now;
        self.resolve_positions();
        let offsets = self.consumed();
        if let Err(e) = self.do_commit(&offsets) {
            tracing::warn!(group = ?self.config.group_id(), error = %e, "auto-commit failed");
        }
    }

    /// Revokes `partitions`: auto-commit, listener, the listener's commits, then hands
    /// them back to the group.
    async fn revoke(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let Mode::Subscribed(m) = &self.mode else {
            return Ok(());
        };
        let (group, listener, member) = (m.group.clone(), m.listener.clone(), m.member.clone());
        let Some(member) = member else {
            return Ok(());
        };
        let local: Vec<TopicPartition> = partitions
            .iter()
            .filter(|tp| self.parts.contains_key(*tp))
            .cloned()
            .collect();
        self.resolve_positions();
        let positions: BTreeMap<TopicPartition, i64> = self
            .consumed()
            .into_iter()
            .filter(|(tp, _)| local.contains(tp))
            .collect();
        // From here on nothing of these partitions is delivered.
        for tp in &local {
            self.parts.remove(tp);
        }
        if self.config.enable_auto_commit() && !positions.is_empty() {
            if let Err(e) = group.commit(&member, &positions) {
                tracing::warn!(member, error = %e, "auto-commit before revocation failed");
            }
        }
        let mut ctx = RebalanceContext::new(positions);
        let outcome = if local.is_empty() {
            Ok(())
        } else {
            listener.on_partitions_revoked(&local, &mut ctx).await
        };
        let (_, commits) = ctx.into_parts();
        let committed = if commits.is_empty() {
            Ok(())
        } else {
            group.commit(&member, &commits)
        };
        group.revoked(&member, partitions);
        outcome.map_err(listener_error)?;
        committed
    }

    /// Takes `partitions` on: the listener runs, then its seeks apply; only then are
    /// they fetched.
    async fn assign_from_group(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let Mode::Subscribed(m) = &self.mode else {
            return Ok(());
        };
        let (group, listener, member) = (m.group.clone(), m.listener.clone(), m.member.clone());
        for tp in partitions {
            self.parts.entry(tp.clone()).or_insert_with(PartState::new);
        }
        let mut ctx = RebalanceContext::new(BTreeMap::new());
        let outcome = listener.on_partitions_assigned(partitions, &mut ctx).await;
        let (seeks, commits) = ctx.into_parts();
        for (tp, offset) in seeks {
            match self.parts.get_mut(&tp) {
                Some(st) => st.pos = Pos::Pending(offset),
                None => {
                    tracing::warn!(partition = %tp, "seek in on_partitions_assigned for a partition not assigned; ignored")
                }
            }
        }
        let committed = match (&member, commits.is_empty()) {
            (Some(id), false) => group.commit(id, &commits),
            _ => Ok(()),
        };
        outcome.map_err(listener_error)?;
        committed
    }

    /// The group lost this member: its partitions already belong to others.
    async fn lose_all(&mut self) -> Result<()> {
        let lost: Vec<TopicPartition> = std::mem::take(&mut self.parts).into_keys().collect();
        let listener = match &mut self.mode {
            Mode::Subscribed(m) => {
                m.member = None;
                m.listener.clone()
            }
            _ => return Ok(()),
        };
        listener
            .on_partitions_lost(&lost)
            .await
            .map_err(listener_error)
    }

    /// Joins if needed, heartbeats, and carries out what the group asks until it asks
    /// for nothing more.
    async fn drive_group(&mut self, mut poll_start: bool) -> Result<()> {
        loop {
            let (group, member) = match &mut self.mode {
                Mode::Subscribed(m) => {
                    m.changes.borrow_and_update();
                    let member = match &m.member {
                        Some(id) => id.clone(),
                        None => {
                            let spec = MemberSpec {
                                client_id: self.config.client_id().to_owned(),
                                subscription: m.subscription.clone(),
                                session_timeout: self.config.session_timeout(),
                                max_poll_interval: self.config.max_poll_interval(),
                                assignors: self.assignors.clone(),
                            };
                            let id = m.group.join(spec)?;
                            m.member = Some(id.clone());
                            id
                        }
                    };
                    (m.group.clone(), member)
                }
                _ => return Ok(()),
            };
            let beat = group.heartbeat(&member, poll_start);
            poll_start = false;
            if let Mode::Subscribed(m) = &mut self.mode {
                m.generation = beat.generation;
                m.next_expiry = beat.next_expiry;
            }
            match beat.directive {
                Directive::Stable | Directive::Wait => return Ok(()),
                Directive::Revoke(partitions) => self.revoke(&partitions).await?,
                Directive::Assign(partitions) => self.assign_from_group(&partitions).await?,
                Directive::Evicted(reason) => {
                    tracing::info!(member, ?reason, "evicted from the group");
                    self.lose_all().await?;
                    if reason == EvictReason::PollInterval {
                        return Err(Error::PollIntervalExceeded {
                            group: self.config.group_id().unwrap_or_default().to_owned(),
                            max_poll_interval_ms: self.config.max_poll_interval().as_millis()
                                as u64,
                        });
                    }
                }
            }
        }
    }

    fn fetch(&mut self) -> Result<Batch> {
        self.rotation = self.rotation.wrapping_add(1);
        let limits = FetchLimits {
            max_records: self.config.max_poll_records(),
            max_partition_bytes: self.config.max_partition_fetch_bytes() as usize,
        };
        let records = fetch::fetch(
            &self.log,
            &mut self.parts,
            self.rotation,
            limits,
            self.config.group_id(),
            self.config.auto_offset_reset(),
        )?;
        Ok(Batch::from(records))
    }

    /// Waits until something may have changed: an append, a group change, a wakeup,
    /// or `until`.
    async fn wait(&mut self, until: Instant) {
        let until = tokio::time::Instant::from_std(until);
        let wakeup = self.wakeup.clone();
        let (appended, mode) = (&mut self.appended, &mut self.mode);
        let appended = async move {
            match appended.as_mut() {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let group = async move {
            match mode {
                Mode::Subscribed(m) => {
                    if m.changes.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                _ => std::future::pending().await,
            }
        };
        let appended_open = tokio::select! {
            ok = appended => ok,
            () = group => true,
            () = wakeup.notified() => true,
            () = tokio::time::sleep_until(until) => true,
        };
        if !appended_open {
            // The log's sender is gone; fall back to the heartbeat timer.
            self.appended = None;
        }
    }
}

impl Drop for LogConsumer {
    /// Dropping without `close()` is a crash: the group is not told, and takes the
    /// partitions back after `session.timeout.ms`.
    fn drop(&mut self) {
        if let Mode::Subscribed(m) = &self.mode {
            if let Some(id) = &m.member {
                m.group.vanish(id);
            }
        }
    }
}

#[async_trait]
impl Consumer for LogConsumer {
    async fn subscribe(
        &mut self,
        subscription: Subscription,
        listener: Arc<dyn RebalanceListener>,
    ) -> Result<()> {
        self.ensure_open()?;
        if matches!(self.mode, Mode::Assigned) {
            return Err(Error::IllegalState(
                "subscribe after assign: call unsubscribe() (or assign(&[])) first".into(),
            ));
        }
        if matches!(&subscription, Subscription::Topics(t) if t.is_empty()) {
            return self.unsubscribe().await;
        }
        let group_id = self
            .config
            .group_id()
            .ok_or_else(|| {
                Error::config(
                    "group.id",
                    "subscribe needs a group.id (or use assign() without a group)",
                )
            })?
            .to_owned();
        match &mut self.mode {
            Mode::Subscribed(m) => {
                m.subscription = subscription.clone();
                m.listener = listener;
                if let Some(id) = &m.member {
                    m.group.resubscribe(id, subscription);
                }
            }
            _ => {
                let group = self.coordinator.group(&group_id);
                self.mode = Mode::Subscribed(Box::new(Membership {
                    subscription,
                    listener,
                    changes: group.changes(),
                    group,
                    member: None,
                    generation: 0,
                    next_expiry: None,
                }));
            }
        }
        Ok(())
    }

    async fn unsubscribe(&mut self) -> Result<()> {
        self.ensure_open()?;
        let mut outcome = Ok(());
        if let Mode::Subscribed(m) = &self.mode {
            if let Some(id) = m.member.clone() {
                let group = m.group.clone();
                if group.is_member(&id) {
                    // `revoke` auto-commits (when enabled) before the listener runs.
                    let all: Vec<TopicPartition> = self.parts.keys().cloned().collect();
                    outcome = self.revoke(&all).await;
                    group.leave(&id);
                } else {
                    // Evicted meanwhile: the partitions are someone else's already.
                    outcome = self.lose_all().await;
                }
            }
        } else if matches!(self.mode, Mode::Assigned) {
            self.maybe_auto_commit(true);
        }
        self.parts.clear();
        self.mode = Mode::Idle;
        outcome
    }

    async fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.ensure_open()?;
        if matches!(self.mode, Mode::Subscribed(_)) {
            return Err(Error::IllegalState(
                "assign while subscribed: call unsubscribe() first".into(),
            ));
        }
        if partitions.is_empty() {
            return self.unsubscribe().await;
        }
        for tp in partitions {
            let n = self.log.partition_count(tp.topic())?;
            if tp.partition() < 0 || tp.partition() >= n {
                return Err(Error::UnknownPartition(tp.clone()));
            }
        }
        let wanted: BTreeSet<&TopicPartition> = partitions.iter().collect();
        self.parts.retain(|tp, _| wanted.contains(tp));
        for tp in partitions {
            self.parts.entry(tp.clone()).or_insert_with(PartState::new);
        }
        self.mode = Mode::Assigned;
        Ok(())
    }

    async fn partitions_for(&self, topic: &str) -> Result<Vec<TopicPartition>> {
        self.ensure_open()?;
        let n = self.log.partition_count(topic)?;
        Ok((0..n).map(|p| TopicPartition::new(topic, p)).collect())
    }

    async fn poll(&mut self, timeout: Duration) -> Result<Batch> {
        self.ensure_open()?;
        if self.wakeup.take() {
            return Err(Error::Wakeup);
        }
        self.run_callbacks();
        if matches!(self.mode, Mode::Idle) {
            return Err(Error::IllegalState(
                "poll before subscribe() or assign()".into(),
            ));
        }
        // `None`: a timeout too long to represent (e.g. `Duration::MAX`) waits forever.
        let deadline = Instant::now().checked_add(timeout);
        // Commits what earlier polls returned (never this poll's records).
        self.maybe_auto_commit(false);
        // A poll waiting for records heartbeats at least this often, so that the
        // group never takes it for a member that stopped polling.
        let beat_every = self
            .config
            .heartbeat_interval()
            .min(self.config.max_poll_interval() / 2);
        let mut poll_start = true;
        loop {
            if let Some(rx) = self.appended.as_mut() {
                rx.borrow_and_update();
            }
            self.drive_group(poll_start).await?;
            poll_start = false;
            let batch = self.fetch()?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(batch);
            }
            let next_beat = now + beat_every;
            let mut until = deadline.map_or(next_beat, |d| d.min(next_beat));
            if let Mode::Subscribed(m) = &self.mode {
                if let Some(t) = m.next_expiry {
                    // Wake a moment after the next possible eviction.
                    until = until.min(t.max(now) + Duration::from_millis(1));
                }
            }
            self.wait(until).await;
            if self.wakeup.take() {
                return Err(Error::Wakeup);
            }
        }
    }

    async fn commit_sync(&mut self, offsets: CommitOffsets) -> Result<()> {
        self.ensure_open()?;
        let map = match offsets {
            CommitOffsets::Consumed => {
                self.resolve_positions();
                self.consumed()
            }
            CommitOffsets::Explicit(m) => m,
        };
        let outcome = self.do_commit(&map);
        self.run_callbacks();
        outcome
    }

    fn commit_async(&mut self, offsets: CommitOffsets, callback: Option<CommitCallback>) {
        let map = match offsets {
            CommitOffsets::Consumed => {
                self.resolve_positions();
                self.consumed()
            }
            CommitOffsets::Explicit(m) => m,
        };
        let outcome = if self.closed {
            Err(Error::Closed)
        } else {
            self.do_commit(&map).map(|()| map)
        };
        match callback {
            Some(cb) => self.callbacks.get_mut().push((cb, outcome)),
            None => {
                if let Err(e) = outcome {
                    tracing::warn!(group = ?self.config.group_id(), error = %e, "async commit failed");
                }
            }
        }
    }

    async fn committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
        self.ensure_open()?;
        let group = self.group_id("committed()")?;
        let stored = self.log.group_offsets(group)?;
        Ok(partitions
            .iter()
            .map(|tp| (tp.clone(), stored.get(tp).copied()))
            .collect())
    }

    async fn position(&mut self, tp: &TopicPartition) -> Result<i64> {
        self.ensure_open()?;
        let Some(st) = self.parts.get(tp) else {
            return Err(Error::NotAssigned(tp.clone()));
        };
        match st.pos {
            Pos::At(o) => Ok(o),
            Pos::Pending(offset) => {
                let committed = if offset == Offset::Stored {
                    match self.config.group_id() {
                        Some(g) => self.log.group_offsets(g)?.get(tp).copied(),
                        None => None,
                    }
                } else {
                    None
                };
                let o = fetch::resolve(
                    &self.log,
                    tp,
                    offset,
                    committed,
                    self.config.auto_offset_reset(),
                )?;
                if let Some(st) = self.parts.get_mut(tp) {
                    st.pos = Pos::At(o);
                }
                Ok(o)
            }
        }
    }

    fn seek(&mut self, tp: &TopicPartition, offset: Offset) -> Result<()> {
        self.ensure_open()?;
        if let Offset::At(o) = offset {
            if o < 0 {
                return Err(Error::IllegalState(format!(
                    "cannot seek {tp} to negative offset {o}"
                )));
            }
        }
        match self.parts.get_mut(tp) {
            Some(st) => {
                st.pos = Pos::Pending(offset);
                Ok(())
            }
            None => Err(Error::NotAssigned(tp.clone())),
        }
    }

    fn pause(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.ensure_open()?;
        if let Some(tp) = partitions.iter().find(|tp| !self.parts.contains_key(*tp)) {
            return Err(Error::NotAssigned(tp.clone()));
        }
        for tp in partitions {
            if let Some(st) = self.parts.get_mut(tp) {
                st.paused = true;
            }
        }
        Ok(())
    }

    fn resume(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.ensure_open()?;
        if let Some(tp) = partitions.iter().find(|tp| !self.parts.contains_key(*tp)) {
            return Err(Error::NotAssigned(tp.clone()));
        }
        for tp in partitions {
            if let Some(st) = self.parts.get_mut(tp) {
                st.paused = false;
            }
        }
        Ok(())
    }

    fn paused(&self) -> BTreeSet<TopicPartition> {
        self.parts
            .iter()
            .filter(|(_, s)| s.paused)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    fn assignment(&self) -> BTreeSet<TopicPartition> {
        self.parts.keys().cloned().collect()
    }

    async fn watermarks(&self, tp: &TopicPartition) -> Result<(i64, i64)> {
        self.ensure_open()?;
        self.log.offsets(tp)
    }

    fn wakeup_handle(&self) -> WakeupHandle {
        self.wakeup.clone()
    }

    async fn close(&mut self) -> Result<()> {
        self.ensure_open()?;
        let outcome = self.unsubscribe().await;
        self.run_callbacks();
        self.closed = true;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<LogConsumer>();
    }
}
