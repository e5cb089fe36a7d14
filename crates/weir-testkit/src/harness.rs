//! Building blocks of the scenarios: group members that record what they saw, and
//! waiting on conditions with deadlines.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use parking_lot::Mutex;
use weir_core::{
    Consumer, ConsumerConfig, Offset, RebalanceContext, RebalanceListener, Record, Subscription,
    TopicPartition,
};

use crate::Backend;

/// A counter shared by every member of a scenario, so that listener events and
/// deliveries of different members can be put in one order.
///
/// ```
/// let t = weir_testkit::Timeline::new();
/// let a = t.next();
/// assert!(t.next() > a);
/// ```
#[derive(Debug, Default)]
pub struct Timeline {
    seq: AtomicU64,
}

impl Timeline {
    /// A new timeline, shared through an `Arc`.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The next sequence number (strictly increasing across threads).
    pub fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// Something that happened, with its place on the [`Timeline`] and its time.
#[derive(Clone, Debug)]
pub struct Stamped<T> {
    /// Position on the scenario's timeline.
    pub seq: u64,
    /// When it was recorded.
    pub at: Instant,
    /// What happened.
    pub value: T,
}

/// A rebalance callback as a [`Recorder`] saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `on_partitions_assigned` ran with these partitions.
    Assigned(Vec<TopicPartition>),
    /// `on_partitions_revoked` ran with these partitions; `positions` is what the
    /// context reported for each (the next offset the member would have delivered).
    Revoked {
        /// The revoked partitions.
        partitions: Vec<TopicPartition>,
        /// `RebalanceContext::position` of each.
        positions: BTreeMap<TopicPartition, Option<i64>>,
    },
    /// `on_partitions_lost` ran with these partitions.
    Lost(Vec<TopicPartition>),
}

/// A [`RebalanceListener`] that records every callback on a [`Timeline`] and can be
/// told to seek on assignment or to commit its position on revocation.
///
/// ```
/// use std::sync::Arc;
/// use weir_core::{Offset, RebalanceContext, RebalanceListener, TopicPartition};
/// use weir_testkit::{Event, Recorder, Timeline};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let recorder = Recorder::new(Timeline::new());
/// let tp = TopicPartition::new("t", 0);
/// recorder.seek_on_assign(tp.clone(), Offset::At(5));
/// let mut ctx = RebalanceContext::default();
/// recorder.on_partitions_assigned(&[tp.clone()], &mut ctx).await.unwrap();
/// assert_eq!(ctx.seeks()[&tp], Offset::At(5));
/// assert_eq!(recorder.events()[0].value, Event::Assigned(vec![tp]));
/// # });
/// ```
#[derive(Debug)]
pub struct Recorder {
    timeline: Arc<Timeline>,
    events: Mutex<Vec<Stamped<Event>>>,
    seeks: Mutex<BTreeMap<TopicPartition, Offset>>,
    commit_on_revoke: AtomicBool,
    assign_delay: Mutex<Duration>,
}

impl Recorder {
    /// A recorder that only records.
    pub fn new(timeline: Arc<Timeline>) -> Arc<Self> {
        Arc::new(Self {
            timeline,
            events: Mutex::new(Vec::new()),
            seeks: Mutex::new(BTreeMap::new()),
            commit_on_revoke: AtomicBool::new(false),
            assign_delay: Mutex::new(Duration::ZERO),
        })
    }

    /// When `tp` is assigned, seek it to `offset` through the context.
    pub fn seek_on_assign(&self, tp: TopicPartition, offset: Offset) {
        self.seeks.lock().insert(tp, offset);
    }

    /// When partitions are revoked, commit each one's position through the context.
    pub fn commit_position_on_revoke(&self, on: bool) {
        self.commit_on_revoke.store(on, Ordering::SeqCst);
    }

    /// Make `on_partitions_assigned` take this long before it returns, as a handler
    /// reading its start offsets from a slow database would.
    pub fn delay_assign(&self, delay: Duration) {
        *self.assign_delay.lock() = delay;
    }

    /// Every callback so far, in order.
    pub fn events(&self) -> Vec<Stamped<Event>> {
        self.events.lock().clone()
    }

    /// The events of one partition: `(seq, event)` for each event naming it.
    pub fn events_of(&self, tp: &TopicPartition) -> Vec<Stamped<Event>> {
        self.events()
            .into_iter()
            .filter(|e| match &e.value {
                Event::Assigned(ps) | Event::Lost(ps) => ps.contains(tp),
                Event::Revoked { partitions, .. } => partitions.contains(tp),
            })
            .collect()
    }

    fn push(&self, value: Event) {
        let seq = self.timeline.next();
        self.events.lock().push(Stamped {
            seq,
            at: Instant::now(),
            value,
        });
    }
}

#[async_trait]
impl RebalanceListener for Recorder {
    async fn on_partitions_revoked(
        &self,
        revoked: &[TopicPartition],
        ctx: &mut RebalanceContext,
    ) -> weir_core::Result<()> {
        let positions: BTreeMap<TopicPartition, Option<i64>> = revoked
            .iter()
            .map(|tp| (tp.clone(), ctx.position(tp)))
            .collect();
        if self.commit_on_revoke.load(Ordering::SeqCst) {
            for (tp, pos) in &positions {
                if let Some(p) = pos {
                    ctx.commit(tp.clone(), *p);
                }
            }
        }
        self.push(Event::Revoked {
            partitions: revoked.to_vec(),
            positions,
        });
        Ok(())
    }

    async fn on_partitions_assigned(
        &self,
        assigned: &[TopicPartition],
        ctx: &mut RebalanceContext,
    ) -> weir_core::Result<()> {
        let delay = *self.assign_delay.lock();
        if !delay.is_zero() && !assigned.is_empty() {
            tokio::time::sleep(delay).await;
        }
        let seeks = self.seeks.lock().clone();
        for tp in assigned {
            if let Some(offset) = seeks.get(tp) {
                ctx.seek(tp.clone(), *offset);
            }
        }
        self.push(Event::Assigned(assigned.to_vec()));
        Ok(())
    }

    async fn on_partitions_lost(&self, lost: &[TopicPartition]) -> weir_core::Result<()> {
        self.push(Event::Lost(lost.to_vec()));
        Ok(())
    }
}

/// One consumer of a scenario with its [`Recorder`] and every record it was given.
///
/// ```no_run
/// use weir_core::Subscription;
/// use weir_testkit::{deadline, poll_members_until, Backend, Member, Timeline};
///
/// # async fn example(backend: &dyn Backend) -> anyhow::Result<()> {
/// let timeline = Timeline::new();
/// let config = backend.config(Some("g"));
/// let mut a = Member::subscribe(backend, "a", config, Subscription::topics(["t"]), &timeline).await?;
/// poll_members_until(&mut [&mut a], backend.poll_timeout(), deadline(backend), "10 records", |ms| {
///     ms[0].deliveries.len() >= 10
/// })
/// .await?;
/// println!("a owns {:?}, got {} records", a.assignment(), a.deliveries.len());
/// # Ok(()) }
/// ```
pub struct Member {
    /// Its name in messages (`a`, `b`, ...).
    pub name: String,
    /// The consumer under test.
    pub consumer: Box<dyn Consumer>,
    /// Its rebalance listener.
    pub recorder: Arc<Recorder>,
    /// Every record its polls returned, stamped on the timeline when the poll returned.
    pub deliveries: Vec<Stamped<Record>>,
    /// Its assignment after each poll, stamped like the deliveries.
    pub assignments: Vec<Stamped<BTreeSet<TopicPartition>>>,
    timeline: Arc<Timeline>,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.name)
            .field("assignment", &self.consumer.assignment())
            .field("deliveries", &self.deliveries.len())
            .finish()
    }
}

impl Member {
    /// Build a consumer from `config` and subscribe it with a fresh [`Recorder`].
    /// Nothing happens in the group before the first poll.
    pub async fn subscribe(
        backend: &dyn Backend,
        name: &str,
        config: ConsumerConfig,
        subscription: Subscription,
        timeline: &Arc<Timeline>,
    ) -> anyhow::Result<Self> {
        let recorder = Recorder::new(timeline.clone());
        Self::subscribe_with(backend, name, config, subscription, recorder).await
    }

    /// Like [`subscribe`](Self::subscribe) with a recorder prepared by the caller
    /// (seeks on assignment, commits on revocation).
    pub async fn subscribe_with(
        backend: &dyn Backend,
        name: &str,
        config: ConsumerConfig,
        subscription: Subscription,
        recorder: Arc<Recorder>,
    ) -> anyhow::Result<Self> {
        let listener: Arc<dyn RebalanceListener> = recorder.clone();
        Self::subscribe_with_listener(backend, name, config, subscription, recorder, listener).await
    }

    /// Like [`subscribe_with`](Self::subscribe_with) with a listener of the caller's
    /// that forwards to `recorder` (so that the member's events are still recorded).
    pub async fn subscribe_with_listener(
        backend: &dyn Backend,
        name: &str,
        config: ConsumerConfig,
        subscription: Subscription,
        recorder: Arc<Recorder>,
        listener: Arc<dyn RebalanceListener>,
    ) -> anyhow::Result<Self> {
        let mut consumer = backend
            .consumer(config)
            .await
            .with_context(|| format!("{}: building consumer {name}", backend.name()))?;
        consumer
            .subscribe(subscription, listener)
            .await
            .with_context(|| format!("{}: subscribing consumer {name}", backend.name()))?;
        Ok(Self {
            name: name.to_owned(),
            consumer,
            timeline: recorder.timeline.clone(),
            recorder,
            deliveries: Vec::new(),
            assignments: Vec::new(),
        })
    }

    /// Poll once, keep what came back, return how many records that was.
    pub async fn poll_once(&mut self, timeout: Duration) -> anyhow::Result<usize> {
        let batch = self
            .consumer
            .poll(timeout)
            .await
            .with_context(|| format!("poll of member {}", self.name))?;
        let seq = self.timeline.next();
        let at = Instant::now();
        let n = batch.len();
        self.deliveries
            .extend(batch.into_iter().map(|value| Stamped { seq, at, value }));
        self.assignments.push(Stamped {
            seq,
            at,
            value: self.consumer.assignment(),
        });
        Ok(n)
    }

    /// The current assignment.
    pub fn assignment(&self) -> BTreeSet<TopicPartition> {
        self.consumer.assignment()
    }

    /// The offsets delivered from `tp`, in delivery order.
    pub fn offsets_of(&self, tp: &TopicPartition) -> Vec<i64> {
        self.deliveries
            .iter()
            .filter(|d| d.value.partition == tp.partition() && &*d.value.topic == tp.topic())
            .map(|d| d.value.offset)
            .collect()
    }

    /// Deliveries from `tp`, in delivery order.
    pub fn deliveries_of<'a>(
        &'a self,
        tp: &'a TopicPartition,
    ) -> impl Iterator<Item = &'a Stamped<Record>> + 'a {
        self.deliveries
            .iter()
            .filter(move |d| d.value.partition == tp.partition() && &*d.value.topic == tp.topic())
    }
}

/// Poll every member once, concurrently (so that members blocked in a rebalance wait
/// for each other as they would in separate processes).
pub async fn poll_round(members: &mut [&mut Member], timeout: Duration) -> anyhow::Result<()> {
    let results = futures::future::join_all(members.iter_mut().map(|m| m.poll_once(timeout))).await;
    for r in results {
        r?;
    }
    Ok(())
}

/// Poll all members round after round until `done` holds, failing after `deadline`
/// with `what` and the members' state. See [`Member`] for an example.
pub async fn poll_members_until<F>(
    members: &mut [&mut Member],
    poll_timeout: Duration,
    deadline: Instant,
    what: &str,
    mut done: F,
) -> anyhow::Result<()>
where
    F: FnMut(&[&mut Member]) -> bool,
{
    loop {
        poll_round(members, poll_timeout).await?;
        if done(members) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "expected {what} before the deadline; seen: {}",
                describe(members)
            );
        }
    }
}

/// Poll all members until their assignment sizes, sorted, equal `expected` (sorted),
/// no partition is assigned twice, and together they hold exactly `partitions` (or a
/// subset of it when `expected` sums to less).
///
/// ```no_run
/// # use weir_testkit::{deadline, partitions_of, wait_for_assignment, Backend, Member};
/// # async fn example(backend: &dyn Backend, a: &mut Member, b: &mut Member) -> anyhow::Result<()> {
/// let all = partitions_of("t", 4);
/// wait_for_assignment(&mut [a, b], &[2, 2], &all, backend.poll_timeout(), deadline(backend)).await?;
/// # Ok(()) }
/// ```
pub async fn wait_for_assignment(
    members: &mut [&mut Member],
    expected: &[usize],
    partitions: &BTreeSet<TopicPartition>,
    poll_timeout: Duration,
    deadline: Instant,
) -> anyhow::Result<()> {
    let mut want = expected.to_vec();
    want.sort_unstable();
    let what = format!("assignment sizes {want:?} covering {}", list(partitions));
    poll_members_until(members, poll_timeout, deadline, &what, |ms| {
        assignment_settled(ms, &want, partitions)
    })
    .await
}

fn assignment_settled(
    members: &[&mut Member],
    want: &[usize],
    partitions: &BTreeSet<TopicPartition>,
) -> bool {
    let sets: Vec<BTreeSet<TopicPartition>> = members.iter().map(|m| m.assignment()).collect();
    let mut sizes: Vec<usize> = sets.iter().map(BTreeSet::len).collect();
    sizes.sort_unstable();
    if sizes != want {
        return false;
    }
    let mut union = BTreeSet::new();
    for s in &sets {
        for tp in s {
            if !union.insert(tp.clone()) || !partitions.contains(tp) {
                return false;
            }
        }
    }
    union.len() == want.iter().sum::<usize>()
}

/// Each member's name, assignment and delivery count, for failure messages.
pub fn describe(members: &[&mut Member]) -> String {
    members
        .iter()
        .map(|m| {
            format!(
                "{} owns {} and got {} records",
                m.name,
                list(&m.assignment()),
                m.deliveries.len()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Partitions as `[t-0, t-1]`.
pub fn list<'a, I>(partitions: I) -> String
where
    I: IntoIterator<Item = &'a TopicPartition>,
{
    let v: Vec<String> = partitions.into_iter().map(ToString::to_string).collect();
    format!("[{}]", v.join(", "))
}

/// Poll one consumer until `done` holds for everything it returned so far; return
/// those records. Fails after `deadline` with `what` and the count seen.
///
/// ```no_run
/// # use weir_testkit::{deadline, poll_until, Backend};
/// # async fn example(backend: &dyn Backend, consumer: &mut dyn weir_core::Consumer) -> anyhow::Result<()> {
/// let records = poll_until(consumer, backend.poll_timeout(), deadline(backend), "5 records", |rs| rs.len() >= 5).await?;
/// assert!(records.len() >= 5);
/// # Ok(()) }
/// ```
pub async fn poll_until<F>(
    consumer: &mut dyn Consumer,
    poll_timeout: Duration,
    deadline: Instant,
    what: &str,
    mut done: F,
) -> anyhow::Result<Vec<Record>>
where
    F: FnMut(&[Record]) -> bool,
{
    let mut got = Vec::new();
    loop {
        let batch = consumer
            .poll(poll_timeout)
            .await
            .with_context(|| format!("poll while waiting for {what}"))?;
        got.extend(batch);
        if done(&got) {
            return Ok(got);
        }
        if Instant::now() >= deadline {
            bail!(
                "expected {what} before the deadline; seen {} records: {}",
                got.len(),
                summarize(&got)
            );
        }
    }
}

/// Records as `t-0@[0..=4], t-1@[0, 2]` (per partition, offsets in delivery order,
/// runs collapsed), for failure messages.
///
/// ```
/// use weir_core::Record;
/// let rs: Vec<Record> = [0, 1, 2].iter().map(|o| Record::new("t", 0, *o, None, None)).collect();
/// assert_eq!(weir_testkit::summarize(&rs), "t-0@[0..=2]");
/// ```
pub fn summarize(records: &[Record]) -> String {
    let mut by: BTreeMap<TopicPartition, Vec<i64>> = BTreeMap::new();
    for r in records {
        by.entry(r.topic_partition()).or_default().push(r.offset);
    }
    by.iter()
        .map(|(tp, offs)| format!("{tp}@{}", runs(offs)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Offsets with consecutive runs collapsed: `[0..=4, 7, 9..=10]`.
///
/// ```
/// assert_eq!(weir_testkit::runs(&[0, 1, 2, 3, 4, 7, 9, 10]), "[0..=4, 7, 9..=10]");
/// ```
pub fn runs(offsets: &[i64]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < offsets.len() {
        let start = offsets[i];
        let mut j = i;
        while j + 1 < offsets.len() && offsets[j + 1] == offsets[j] + 1 {
            j += 1;
        }
        if j == i {
            parts.push(start.to_string());
        } else {
            parts.push(format!("{start}..={}", offsets[j]));
        }
        i = j + 1;
    }
    format!("[{}]", parts.join(", "))
}

/// The value the suite writes at `index` of a partition: `topic/partition/index`.
///
/// ```
/// assert_eq!(weir_testkit::value_for("t", 2, 7), b"t/2/7".to_vec());
/// ```
pub fn value_for(topic: &str, partition: i32, index: usize) -> Vec<u8> {
    format!("{topic}/{partition}/{index}").into_bytes()
}

/// Produce `count` records to `topic`/`partition` with values from [`value_for`]
/// (indexes `first..first+count`) and keys `k<index>`; return their offsets.
pub async fn produce_n(
    backend: &dyn Backend,
    topic: &str,
    partition: i32,
    first: usize,
    count: usize,
) -> anyhow::Result<Vec<i64>> {
    let mut offsets = Vec::with_capacity(count);
    for i in first..first + count {
        let key = format!("k{i}");
        let offset = backend
            .produce(
                topic,
                partition,
                Some(key.as_bytes()),
                &value_for(topic, partition, i),
            )
            .await
            .with_context(|| {
                format!(
                    "{}: producing record {i} to {topic}-{partition}",
                    backend.name()
                )
            })?;
        offsets.push(offset);
    }
    Ok(offsets)
}

/// Create `topic` with `partitions` partitions, naming the backend on failure.
pub async fn create_topic(
    backend: &dyn Backend,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<BTreeSet<TopicPartition>> {
    backend
        .create_topic(topic, partitions)
        .await
        .with_context(|| {
            format!(
                "{}: creating topic {topic} with {partitions} partitions",
                backend.name()
            )
        })?;
    Ok(partitions_of(topic, partitions))
}

/// `topic-0 .. topic-(n-1)`.
///
/// ```
/// assert_eq!(weir_testkit::partitions_of("t", 3).len(), 3);
/// assert_eq!(weir_testkit::list(&weir_testkit::partitions_of("t", 2)), "[t-0, t-1]");
/// ```
pub fn partitions_of(topic: &str, n: i32) -> BTreeSet<TopicPartition> {
    (0..n).map(|p| TopicPartition::new(topic, p)).collect()
}

/// `now + backend.patience()`.
pub fn deadline(backend: &dyn Backend) -> Instant {
    Instant::now() + backend.patience()
}
