//! The state machine of one consumer group: members, generations, the target
//! assignment, revocations and grants. Pure and synchronous: time is passed in, the
//! caller holds the lock, the topic metadata is given to every call.
//!
//! ## How a rebalance runs
//!
//! A rebalance starts when a member joins, leaves, is evicted, changes its
//! subscription, or when the partition counts of the subscribed topics change. It
//! bumps the generation. A partition is handed to a member only once no other member
//! owns it, and a member gives a partition up only by acknowledging its revocation
//! ([`GroupState::revoked`]) after its listener ran and its commits were made.
//!
//! - **Eager** (range, roundrobin): every member is asked to revoke everything it
//!   owns. Until all have acknowledged (or were evicted after `max.poll.interval.ms`
//!   without polling) nobody receives anything: the join barrier. Then the target is
//!   computed and every member is told its share.
//! - **Cooperative** (cooperative-sticky): the target is computed at once from what
//!   the members own; each member revokes only what moves away from it and keeps
//!   consuming the rest. Partitions nobody owns are handed out at once; partitions
//!   that move are handed to their new owner once the old owner revoked them, in a
//!   follow-up generation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_core::{
    Assignor, AssignorProtocol, Error, GroupMember, Result, Subscription, TopicPartition,
};

/// Why a member was removed from its group without leaving.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum EvictReason {
    /// The consumer was dropped without `close()` and `session.timeout.ms` passed.
    SessionTimeout,
    /// The consumer did not poll within `max.poll.interval.ms`.
    PollInterval,
}

/// What a member must do next, returned by every heartbeat.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Directive {
    /// Nothing to do: consume what it owns.
    Stable,
    /// Stop consuming these, run the revoke listener, commit, then call
    /// [`GroupState::revoked`].
    Revoke(Vec<TopicPartition>),
    /// These partitions are now the member's (possibly none: the rebalance finished).
    /// Run the assign listener, apply its seeks, then consume them.
    Assign(Vec<TopicPartition>),
    /// A rebalance waits for other members (eager join barrier); consume nothing.
    Wait,
    /// The member is no longer in the group; its partitions belong to others.
    Evicted(EvictReason),
}

/// How a member joins: its subscription and its timeouts.
#[derive(Clone, Debug)]
pub(crate) struct MemberSpec {
    /// `client.id`, used as the prefix of the member id.
    pub client_id: String,
    /// What it consumes.
    pub subscription: Subscription,
    /// `session.timeout.ms`: how long after the consumer vanished it is evicted.
    pub session_timeout: Duration,
    /// `max.poll.interval.ms`: how long it may go without polling.
    pub max_poll_interval: Duration,
    /// Its assignment strategies, preferred first (never empty). The group uses the
    /// first strategy of its oldest member that every member supports, as Kafka's
    /// coordinator does (so `range,cooperative-sticky` members can roll over to
    /// `cooperative-sticky` one by one).
    pub assignors: Vec<Arc<dyn Assignor>>,
}

#[derive(Debug)]
struct Member {
    spec: MemberSpec,
    seq: u64,
    owned: BTreeSet<TopicPartition>,
    /// Owned, but the member has not been told yet.
    undelivered: BTreeSet<TopicPartition>,
    pending_revoke: BTreeSet<TopicPartition>,
    /// The member must be told (an `Assign`, possibly empty) that a rebalance ended.
    notify: bool,
    last_poll: Instant,
    dropped_at: Option<Instant>,
}

impl Member {
    fn expiry(&self) -> (Instant, EvictReason) {
        let poll = (
            self.last_poll + self.spec.max_poll_interval,
            EvictReason::PollInterval,
        );
        match self.dropped_at {
            Some(d) if d + self.spec.session_timeout < poll.0 => {
                (d + self.spec.session_timeout, EvictReason::SessionTimeout)
            }
            _ => poll,
        }
    }
}

/// A read-only view of a group, for operators and tests, from
/// [`describe_group`](crate::describe_group) or
/// [`LogConsumer::group_description`](crate::LogConsumer::group_description).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> weir_core::Result<()> {
/// # let dir = tempfile::tempdir().map_err(|e| weir_core::Error::io("tempdir", e))?;
/// use std::{sync::Arc, time::Duration};
/// use weir_core::{Consumer, ConsumerConfig, NoopListener, Subscription};
/// let log = weir_log::Log::open(dir.path(), Default::default())?;
/// log.create_topic("t", 3)?;
/// let mut c = weir_log::LogConsumer::new(&log, ConsumerConfig::new().with_group_id("ops"))?;
/// c.subscribe(Subscription::topics(["t"]), Arc::new(NoopListener)).await?;
/// c.poll(Duration::from_millis(10)).await?;
/// let d = weir_log::describe_group(&log, "ops").expect("joined");
/// assert_eq!((d.group.as_str(), d.generation, d.rebalancing), ("ops", 1, false));
/// assert_eq!(d.assignor.as_deref(), Some("range"));
/// let m = &d.members[0];
/// assert_eq!(m.owned.len(), 3);
/// assert!(m.revoking.is_empty());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group's name (`group.id`).
    pub group: String,
    /// The current generation; bumped by every rebalance (and by the follow-up of a
    /// cooperative one).
    pub generation: i32,
    /// Whether a rebalance is in progress (revocations pending).
    pub rebalancing: bool,
    /// The strategy in use (the oldest member's), e.g. `range`.
    pub assignor: Option<String>,
    /// The members, oldest first.
    pub members: Vec<MemberDescription>,
}

/// One member of a [`GroupDescription`] (see there for an example).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member id the coordinator gave it.
    pub member_id: String,
    /// Its `client.id`.
    pub client_id: String,
    /// The partitions it owns (including ones it has not been told about yet).
    pub owned: BTreeSet<TopicPartition>,
    /// The partitions it has been asked to revoke and has not yet given up.
    pub revoking: BTreeSet<TopicPartition>,
}

/// One group's state. See the module documentation.
#[derive(Debug)]
pub(crate) struct GroupState {
    name: String,
    generation: i32,
    members: BTreeMap<String, Member>,
    evicted: HashMap<String, EvictReason>,
    /// Subscribed topics' partition counts used by the current generation.
    partitions: BTreeMap<String, i32>,
    target: BTreeMap<String, BTreeSet<TopicPartition>>,
    rebalancing: bool,
    had_revocations: bool,
    next_seq: u64,
    /// Bumped by every change a waiting member may care about.
    version: u64,
}

/// Whether a member offers a strategy of this name and protocol.
fn supports(spec: &MemberSpec, assignor: &dyn Assignor) -> bool {
    spec.assignors
        .iter()
        .any(|b| b.name() == assignor.name() && b.protocol() == assignor.protocol())
}

fn resolve(sub: &Subscription, topics: &BTreeMap<String, i32>) -> BTreeSet<String> {
    topics.keys().filter(|t| sub.matches(t)).cloned().collect()
}

impl GroupState {
    pub(crate) fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            generation: 0,
            members: BTreeMap::new(),
            evicted: HashMap::new(),
            partitions: BTreeMap::new(),
            target: BTreeMap::new(),
            rebalancing: false,
            had_revocations: false,
            next_seq: 0,
            version: 0,
        }
    }

    /// The group's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// A counter bumped by every change (for waking waiting members).
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// The current generation.
    pub(crate) fn generation(&self) -> i32 {
        self.generation
    }

    /// The strategy in use: the oldest member's first one that every member supports.
    fn leader_assignor(&self) -> Option<&Arc<dyn Assignor>> {
        let leader = self.members.values().min_by_key(|m| m.seq)?;
        leader
            .spec
            .assignors
            .iter()
            .find(|a| self.members.values().all(|m| supports(&m.spec, a.as_ref())))
            .or_else(|| leader.spec.assignors.first())
    }

    fn protocol(&self) -> AssignorProtocol {
        self.leader_assignor()
            .map_or(AssignorProtocol::Eager, |a| a.protocol())
    }

    /// A new member; a rebalance starts. Fails when its strategy differs from the
    /// group's.
    pub(crate) fn join(
        &mut self,
        spec: MemberSpec,
        now: Instant,
        topics: &BTreeMap<String, i32>,
    ) -> Result<String> {
        self.expire(now, topics);
        if spec.assignors.is_empty() {
            return Err(Error::config(
                "partition.assignment.strategy",
                "a member needs at least one assignment strategy",
            ));
        }
        if !self.members.is_empty() {
            let common = spec
                .assignors
                .iter()
                .any(|a| self.members.values().all(|m| supports(&m.spec, a.as_ref())));
            if !common {
                let names = |s: &MemberSpec| {
                    s.assignors
                        .iter()
                        .map(|a| a.name().to_owned())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let group_uses = self
                    .leader_assignor()
                    .map_or_else(String::new, |a| a.name().to_owned());
                return Err(Error::config(
                    "partition.assignment.strategy",
                    format!(
                        "group `{}` uses `{group_uses}`; this consumer offers `{}`, which not every member supports",
                        self.name,
                        names(&spec)
                    ),
                ));
            }
        }
        self.next_seq += 1;
        let prefix = if spec.client_id.is_empty() {
            "consumer"
        } else {
            spec.client_id.as_str()
        };
        let id = format!("{prefix}-{:06}", self.next_seq);
        self.members.insert(
            id.clone(),
            Member {
                spec,
                seq: self.next_seq,
                owned: BTreeSet::new(),
                undelivered: BTreeSet::new(),
                pending_revoke: BTreeSet::new(),
                notify: false,
                last_poll: now,
                dropped_at: None,
            },
        );
        self.rebalance(topics);
        Ok(id)
    }

    /// The member leaves at once (after revoking through its listener); a rebalance
    /// starts. Unknown members are ignored.
    pub(crate) fn leave(&mut self, id: &str, now: Instant, topics: &BTreeMap<String, i32>) {
        self.evicted.remove(id);
        if self.members.remove(id).is_some() {
            self.rebalance(topics);
        }
        self.expire(now, topics);
    }

    /// The consumer was dropped without `close()`: it stops heartbeating and is evicted
    /// after its `session.timeout.ms`, as a crashed process would be.
    pub(crate) fn vanish(&mut self, id: &str, now: Instant) {
        self.evicted.remove(id);
        if let Some(m) = self.members.get_mut(id) {
            m.dropped_at = Some(now);
            self.version += 1;
        }
    }

    /// A new subscription for a member; a rebalance starts.
    pub(crate) fn resubscribe(
        &mut self,
        id: &str,
        subscription: Subscription,
        now: Instant,
        topics: &BTreeMap<String, i32>,
    ) {
        self.expire(now, topics);
        if let Some(m) = self.members.get_mut(id) {
            m.spec.subscription = subscription;
            self.rebalance(topics);
        }
    }

    /// The member is polling. `poll_start` marks the first heartbeat of a `poll` call:
    /// a member coming back after `max.poll.interval.ms` is evicted (and told so)
    /// before its poll counts. Later heartbeats of the same call (a poll waiting for
    /// records) first count as polling, so a member blocked in a long poll never
    /// evicts itself. Also evicts expired members, notices metadata changes, and tells
    /// the member what to do next.
    pub(crate) fn heartbeat(
        &mut self,
        id: &str,
        now: Instant,
        poll_start: bool,
        topics: &BTreeMap<String, i32>,
    ) -> Directive {
        if !poll_start {
            self.touch(id, now);
        }
        self.expire(now, topics);
        if poll_start {
            self.touch(id, now);
        }
        if !self.members.contains_key(id) {
            let reason = self
                .evicted
                .remove(id)
                .unwrap_or(EvictReason::SessionTimeout);
            return Directive::Evicted(reason);
        }
        if self.subscribed_partitions(topics) != self.partitions {
            self.rebalance(topics);
        }
        let protocol = self.protocol();
        let rebalancing = self.rebalancing;
        let Some(m) = self.members.get_mut(id) else {
            return Directive::Evicted(EvictReason::SessionTimeout);
        };
        if !m.pending_revoke.is_empty() {
            return Directive::Revoke(m.pending_revoke.iter().cloned().collect());
        }
        if m.notify || !m.undelivered.is_empty() {
            m.notify = false;
            let newly = std::mem::take(&mut m.undelivered);
            return Directive::Assign(newly.into_iter().collect());
        }
        if rebalancing && protocol == AssignorProtocol::Eager {
            return Directive::Wait;
        }
        Directive::Stable
    }

    fn touch(&mut self, id: &str, now: Instant) {
        if let Some(m) = self.members.get_mut(id) {
            if m.dropped_at.is_none() {
                m.last_poll = now;
            }
        }
    }

    /// The member has revoked these partitions (listener ran, commits made): they are
    /// free for their next owner.
    pub(crate) fn revoked(&mut self, id: &str, partitions: &[TopicPartition]) {
        if let Some(m) = self.members.get_mut(id) {
            for tp in partitions {
                m.owned.remove(tp);
                m.pending_revoke.remove(tp);
            }
            self.version += 1;
            self.maybe_complete();
        }
    }

    /// Whether `id` may commit offsets of these partitions: it must be a member and
    /// own (and know it owns) each of them.
    pub(crate) fn check_commit<'a>(
        &self,
        id: &str,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Result<()> {
        let Some(m) = self.members.get(id) else {
            return Err(Error::CommitFailed {
                group: self.name.clone(),
                reason: format!(
                    "member `{id}` is no longer in the group (evicted or left); its partitions were reassigned"
                ),
            });
        };
        for tp in partitions {
            if !m.owned.contains(tp) || m.undelivered.contains(tp) {
                return Err(Error::CommitFailed {
                    group: self.name.clone(),
                    reason: format!(
                        "partition {tp} is not assigned to member `{id}` in generation {}",
                        self.generation
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether `id` is (still) a member, after evicting expired members.
    pub(crate) fn is_member(
        &mut self,
        id: &str,
        now: Instant,
        topics: &BTreeMap<String, i32>,
    ) -> bool {
        self.expire(now, topics);
        self.members.contains_key(id)
    }

    /// The earliest moment some member expires (so waiting members wake up for it).
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.members.values().map(|m| m.expiry().0).min()
    }

    /// A read-only view.
    pub(crate) fn describe(&self) -> GroupDescription {
        let mut members: Vec<(&String, &Member)> = self.members.iter().collect();
        members.sort_by_key(|(_, m)| m.seq);
        GroupDescription {
            group: self.name.clone(),
            generation: self.generation,
            rebalancing: self.rebalancing,
            assignor: self.leader_assignor().map(|a| a.name().to_owned()),
            members: members
                .into_iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    client_id: m.spec.client_id.clone(),
                    owned: m.owned.clone(),
                    revoking: m.pending_revoke.clone(),
                })
                .collect(),
        }
    }

    fn subscribed_partitions(&self, topics: &BTreeMap<String, i32>) -> BTreeMap<String, i32> {
        topics
            .iter()
            .filter(|(t, _)| {
                self.members
                    .values()
                    .any(|m| m.spec.subscription.matches(t))
            })
            .map(|(t, n)| (t.clone(), *n))
            .collect()
    }

    /// Evicts every member whose session or poll interval ran out; a rebalance starts
    /// if any was.
    pub(crate) fn expire(&mut self, now: Instant, topics: &BTreeMap<String, i32>) {
        let expired: Vec<(String, EvictReason, bool)> = self
            .members
            .iter()
            .filter_map(|(id, m)| {
                let (at, reason) = m.expiry();
                (now >= at).then(|| (id.clone(), reason, m.dropped_at.is_some()))
            })
            .collect();
        if expired.is_empty() {
            return;
        }
        for (id, reason, dropped) in expired {
            self.members.remove(&id);
            if !dropped {
                self.evicted.insert(id.clone(), reason);
            }
            tracing::info!(group = %self.name, member = %id, ?reason, "member evicted");
        }
        self.rebalance(topics);
    }

    fn group_members(&self, with_owned: bool) -> Vec<GroupMember> {
        self.members
            .iter()
            .map(|(id, m)| GroupMember {
                member_id: id.clone(),
                topics: resolve(&m.spec.subscription, &self.partitions),
                owned: if with_owned {
                    m.owned.iter().cloned().collect()
                } else {
                    Vec::new()
                },
            })
            .collect()
    }

    fn compute_target(&mut self, with_owned: bool) {
        let members = self.group_members(with_owned);
        let Some(assignor) = self.leader_assignor().cloned() else {
            self.target.clear();
            return;
        };
        let raw = assignor.assign(&members, &self.partitions);
        // Keep only valid, subscribed, existing partitions, each at most once (a
        // user-provided assignor may be sloppy).
        let mut seen = BTreeSet::new();
        let mut target = BTreeMap::new();
        for gm in &members {
            let mut set = BTreeSet::new();
            for tp in raw.get(&gm.member_id).into_iter().flatten() {
                let exists = self
                    .partitions
                    .get(tp.topic())
                    .is_some_and(|&n| tp.partition() >= 0 && tp.partition() < n);
                if exists && gm.topics.contains(tp.topic()) && seen.insert(tp.clone()) {
                    set.insert(tp.clone());
                }
            }
            target.insert(gm.member_id.clone(), set);
        }
        self.target = target;
    }

    fn rebalance(&mut self, topics: &BTreeMap<String, i32>) {
        self.generation += 1;
        self.version += 1;
        self.partitions = self.subscribed_partitions(topics);
        self.rebalancing = true;
        self.had_revocations = false;
        tracing::debug!(group = %self.name, generation = self.generation, "rebalance");
        match self.protocol() {
            AssignorProtocol::Eager => {
                self.target.clear();
                for m in self.members.values_mut() {
                    // Never told about them: take them back silently.
                    for tp in std::mem::take(&mut m.undelivered) {
                        m.owned.remove(&tp);
                    }
                    m.pending_revoke = m.owned.clone();
                    if !m.pending_revoke.is_empty() {
                        self.had_revocations = true;
                    }
                }
            }
            AssignorProtocol::Cooperative => {
                self.compute_target(true);
                for (id, m) in self.members.iter_mut() {
                    let target = self.target.get(id).cloned().unwrap_or_default();
                    let silent: Vec<TopicPartition> = m
                        .undelivered
                        .iter()
                        .filter(|tp| !target.contains(*tp))
                        .cloned()
                        .collect();
                    for tp in silent {
                        m.undelivered.remove(&tp);
                        m.owned.remove(&tp);
                    }
                    m.pending_revoke = m.owned.difference(&target).cloned().collect();
                    if !m.pending_revoke.is_empty() {
                        self.had_revocations = true;
                    }
                }
            }
        }
        self.maybe_complete();
    }

    /// Hands out what can be handed out; ends the rebalance once no revocation is
    /// pending.
    fn maybe_complete(&mut self) {
        if !self.rebalancing {
            return;
        }
        let pending = self.members.values().any(|m| !m.pending_revoke.is_empty());
        let protocol = self.protocol();
        if pending {
            if protocol == AssignorProtocol::Cooperative {
                self.grant_free(false);
            }
            return;
        }
        if protocol == AssignorProtocol::Eager {
            self.compute_target(false);
        } else if self.had_revocations {
            // The follow-up generation hands out what was revoked.
            self.generation += 1;
        }
        self.grant_free(true);
        self.rebalancing = false;
        self.had_revocations = false;
        self.version += 1;
        tracing::debug!(group = %self.name, generation = self.generation, "rebalance complete");
    }

    /// Gives each member the partitions of its target that nobody owns. With
    /// `notify_all`, every member is told the rebalance ended (even with nothing new).
    fn grant_free(&mut self, notify_all: bool) {
        let owned_anywhere: BTreeSet<TopicPartition> = self
            .members
            .values()
            .flat_map(|m| m.owned.iter().cloned())
            .collect();
        let mut granted_any = false;
        for (id, m) in self.members.iter_mut() {
            let Some(target) = self.target.get(id) else {
                m.notify |= notify_all;
                continue;
            };
            for tp in target {
                if !owned_anywhere.contains(tp) && !m.owned.contains(tp) {
                    m.owned.insert(tp.clone());
                    m.undelivered.insert(tp.clone());
                    m.notify = true;
                    granted_any = true;
                }
            }
            m.notify |= notify_all;
        }
        if granted_any {
            self.version += 1;
        }
    }
}

#[cfg(test)]
mod tests;
