//! Partition assignment strategies.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;

use crate::{AssignmentStrategy, TopicPartition};

/// How a group moves partitions between members during a rebalance.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AssignorProtocol {
    /// Every member gives up everything, then receives its new share (stop-the-world).
    Eager,
    /// Members keep what does not move and keep consuming it; a partition that moves
    /// is first revoked from its owner, then assigned in a follow-up rebalance.
    Cooperative,
}

/// One member as the assignor sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMember {
    /// The member's id in the group (stable for its lifetime).
    pub member_id: String,
    /// The topics it subscribes to.
    pub topics: BTreeSet<String>,
    /// What it owns now (used by sticky assignors).
    pub owned: Vec<TopicPartition>,
}

/// A partition assignment strategy. The group leader (or the embedded coordinator)
/// calls [`assign`](Self::assign) with every member and every subscribed topic's
/// partition count; each partition must go to at most one member subscribed to it.
///
/// Implement it for a strategy of your own:
///
/// ```
/// use std::collections::BTreeMap;
/// use weir_core::{Assignor, GroupMember, TopicPartition};
///
/// /// Everything to the member with the smallest id.
/// #[derive(Debug)]
/// struct AllToFirst;
/// impl Assignor for AllToFirst {
///     fn name(&self) -> &str { "all-to-first" }
///     fn assign(&self, members: &[GroupMember], partitions: &BTreeMap<String, i32>)
///         -> BTreeMap<String, Vec<TopicPartition>> {
///         let mut out: BTreeMap<String, Vec<TopicPartition>> =
///             members.iter().map(|m| (m.member_id.clone(), Vec::new())).collect();
///         if let Some(first) = members.iter().map(|m| &m.member_id).min() {
///             for (topic, n) in partitions {
///                 for p in 0..*n {
///                     out.get_mut(first).unwrap().push(TopicPartition::new(topic.as_str(), p));
///                 }
///             }
///         }
///         out
///     }
/// }
/// ```
pub trait Assignor: Send + Sync + Debug {
    /// The strategy's name, as in `partition.assignment.strategy`.
    fn name(&self) -> &str;

    /// Eager (default) or cooperative.
    fn protocol(&self) -> AssignorProtocol {
        AssignorProtocol::Eager
    }

    /// The target assignment: member id → partitions. Every member appears in the map.
    fn assign(
        &self,
        members: &[GroupMember],
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>>;
}

impl dyn Assignor {
    /// The built-in assignor for a configured strategy.
    ///
    /// ```
    /// use weir_core::{Assignor, AssignmentStrategy, AssignorProtocol};
    /// let a = <dyn Assignor>::for_strategy(AssignmentStrategy::CooperativeSticky);
    /// assert_eq!(a.protocol(), AssignorProtocol::Cooperative);
    /// ```
    pub fn for_strategy(strategy: AssignmentStrategy) -> Arc<dyn Assignor> {
        match strategy {
            AssignmentStrategy::Range => Arc::new(Range),
            AssignmentStrategy::RoundRobin => Arc::new(RoundRobin),
            AssignmentStrategy::CooperativeSticky => Arc::new(CooperativeSticky),
        }
    }
}

fn empty_assignment(members: &[GroupMember]) -> BTreeMap<String, Vec<TopicPartition>> {
    members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect()
}

/// Kafka's `RangeAssignor`: for each topic, members subscribed to it (sorted by id)
/// get contiguous ranges; the first `partitions % members` get one more.
///
/// ```
/// use std::collections::{BTreeMap, BTreeSet};
/// use weir_core::{Assignor, GroupMember, Range};
/// let m = |id: &str| GroupMember { member_id: id.into(), topics: BTreeSet::from(["t".to_string()]), owned: vec![] };
/// let out = Range.assign(&[m("a"), m("b")], &BTreeMap::from([("t".to_string(), 3)]));
/// assert_eq!(out["a"].len(), 2);
/// assert_eq!(out["b"].len(), 1);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Range;

impl Assignor for Range {
    fn name(&self) -> &str {
        "range"
    }

    fn assign(
        &self,
        members: &[GroupMember],
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut out = empty_assignment(members);
        for (topic, &count) in partitions {
            let mut subs: Vec<&str> = members
                .iter()
                .filter(|m| m.topics.contains(topic))
                .map(|m| m.member_id.as_str())
                .collect();
            if subs.is_empty() || count <= 0 {
                continue;
            }
            subs.sort_unstable();
            let n = subs.len() as i32;
            let (per, extra) = (count / n, count % n);
            let mut next = 0;
            for (i, id) in subs.iter().enumerate() {
                let take = per + i32::from((i as i32) < extra);
                if let Some(list) = out.get_mut(*id) {
                    list.extend(
                        (next..next + take).map(|p| TopicPartition::new(topic.as_str(), p)),
                    );
                }
                next += take;
            }
        }
        out
    }
}

/// Kafka's `RoundRobinAssignor`: all partitions, sorted, dealt in turn to the members
/// (sorted by id), skipping members not subscribed to a partition's topic.
///
/// ```
/// use std::collections::{BTreeMap, BTreeSet};
/// use weir_core::{Assignor, GroupMember, RoundRobin};
/// let m = |id: &str| GroupMember { member_id: id.into(), topics: BTreeSet::from(["t".to_string(), "u".to_string()]), owned: vec![] };
/// let parts = BTreeMap::from([("t".to_string(), 1), ("u".to_string(), 1)]);
/// let out = RoundRobin.assign(&[m("a"), m("b")], &parts);
/// assert_eq!((out["a"].len(), out["b"].len()), (1, 1));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobin;

impl Assignor for RoundRobin {
    fn name(&self) -> &str {
        "roundrobin"
    }

    fn assign(
        &self,
        members: &[GroupMember],
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut out = empty_assignment(members);
        let mut sorted: Vec<&GroupMember> = members.iter().collect();
        sorted.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        if sorted.is_empty() {
            return out;
        }
        let mut cursor = 0usize;
        for (topic, &count) in partitions {
            for p in 0..count.max(0) {
                for step in 0..sorted.len() {
                    let m = sorted[(cursor + step) % sorted.len()];
                    if m.topics.contains(topic) {
                        if let Some(list) = out.get_mut(&m.member_id) {
                            list.push(TopicPartition::new(topic.as_str(), p));
                        }
                        cursor = (cursor + step + 1) % sorted.len();
                        break;
                    }
                }
            }
        }
        out
    }
}

/// Kafka's `CooperativeStickyAssignor`: balanced like round-robin, but a member keeps
/// the partitions it owns wherever balance allows, so a rebalance moves as few
/// partitions as possible; used with the cooperative protocol, unmoved partitions keep
/// flowing during the rebalance.
///
/// Balance is exact (counts differ by at most one) when all members subscribe to the
/// same topics; with different subscriptions every partition still goes to a
/// subscriber, preferring the least loaded.
///
/// ```
/// use std::collections::{BTreeMap, BTreeSet};
/// use weir_core::{Assignor, CooperativeSticky, GroupMember, TopicPartition};
/// let t = BTreeSet::from(["t".to_string()]);
/// let a = GroupMember { member_id: "a".into(), topics: t.clone(),
///     owned: (0..4).map(|p| TopicPartition::new("t", p)).collect() };
/// let b = GroupMember { member_id: "b".into(), topics: t, owned: vec![] };
/// let out = CooperativeSticky.assign(&[a, b], &BTreeMap::from([("t".to_string(), 4)]));
/// assert_eq!(out["a"].len(), 2);
/// assert_eq!(out["b"].len(), 2);
/// // "a" kept two of the four it owned; nothing else moved.
/// assert!(out["a"].iter().all(|tp| tp.partition() < 4));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct CooperativeSticky;

impl Assignor for CooperativeSticky {
    fn name(&self) -> &str {
        "cooperative-sticky"
    }

    fn protocol(&self) -> AssignorProtocol {
        AssignorProtocol::Cooperative
    }

    fn assign(
        &self,
        members: &[GroupMember],
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut out = empty_assignment(members);
        if members.is_empty() {
            return out;
        }
        let exists = |tp: &TopicPartition| {
            partitions
                .get(tp.topic())
                .is_some_and(|&n| tp.partition() >= 0 && tp.partition() < n)
        };
        let mut sorted: Vec<&GroupMember> = members.iter().collect();
        sorted.sort_by(|a, b| a.member_id.cmp(&b.member_id));

        // 1. Keep what each member owns, if still valid and not claimed twice.
        let mut claimed: BTreeSet<TopicPartition> = BTreeSet::new();
        for m in &sorted {
            let mut owned = m.owned.clone();
            owned.sort();
            for tp in owned {
                if exists(&tp) && m.topics.contains(tp.topic()) && claimed.insert(tp.clone()) {
                    if let Some(list) = out.get_mut(&m.member_id) {
                        list.push(tp);
                    }
                }
            }
        }

        // 2. Trim members above their quota.
        let total: usize = partitions
            .iter()
            .filter(|(t, _)| sorted.iter().any(|m| m.topics.contains(*t)))
            .map(|(_, &n)| n.max(0) as usize)
            .sum();
        let n = sorted.len();
        let (min_q, mut extra) = (total / n, total % n);
        let mut order: Vec<String> = out.keys().cloned().collect();
        order.sort_by_key(|id| std::cmp::Reverse(out.get(id).map_or(0, Vec::len)));
        for id in order {
            if let Some(list) = out.get_mut(&id) {
                let limit = if extra > 0 && list.len() > min_q {
                    extra -= 1;
                    min_q + 1
                } else {
                    min_q
                };
                while list.len() > limit {
                    if let Some(tp) = list.pop() {
                        claimed.remove(&tp);
                    }
                }
            }
        }

        // 3. Give out the rest, each to the least-loaded subscriber.
        for (topic, &count) in partitions {
            for p in 0..count.max(0) {
                let tp = TopicPartition::new(topic.as_str(), p);
                if claimed.contains(&tp) {
                    continue;
                }
                let target = sorted
                    .iter()
                    .filter(|m| m.topics.contains(topic))
                    .min_by_key(|m| out.get(&m.member_id).map_or(0, Vec::len))
                    .map(|m| m.member_id.clone());
                if let Some(id) = target {
                    if let Some(list) = out.get_mut(&id) {
                        claimed.insert(tp.clone());
                        list.push(tp);
                    }
                }
            }
        }
        for list in out.values_mut() {
            list.sort();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str], owned: &[(&str, i32)]) -> GroupMember {
        GroupMember {
            member_id: id.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned: owned
                .iter()
                .map(|(t, p)| TopicPartition::new(*t, *p))
                .collect(),
        }
    }

    fn parts(v: &[(&str, i32)]) -> BTreeMap<String, i32> {
        v.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn check_valid(out: &BTreeMap<String, Vec<TopicPartition>>, p: &BTreeMap<String, i32>) {
        let mut all: Vec<TopicPartition> = out.values().flatten().cloned().collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a partition was assigned twice: {out:?}");
        let total: i32 = p.values().sum();
        assert_eq!(n as i32, total, "not every partition assigned: {out:?}");
    }

    #[test]
    fn all_strategies_cover_1_2_4_5_members() {
        let p = parts(&[("t", 4)]);
        for a in [
            <dyn Assignor>::for_strategy(AssignmentStrategy::Range),
            <dyn Assignor>::for_strategy(AssignmentStrategy::RoundRobin),
            <dyn Assignor>::for_strategy(AssignmentStrategy::CooperativeSticky),
        ] {
            for (n, expected) in [
                (1, vec![4]),
                (2, vec![2, 2]),
                (4, vec![1; 4]),
                (5, vec![1, 1, 1, 1, 0]),
            ] {
                let ms: Vec<_> = (0..n)
                    .map(|i| member(&format!("m{i}"), &["t"], &[]))
                    .collect();
                let out = a.assign(&ms, &p);
                check_valid(&out, &p);
                let mut sizes: Vec<usize> = out.values().map(Vec::len).collect();
                sizes.sort_unstable_by(|a, b| b.cmp(a));
                assert_eq!(sizes, expected, "{} with {n} members", a.name());
            }
        }
    }

    #[test]
    fn range_is_per_topic_contiguous() {
        let out = Range.assign(
            &[member("a", &["t"], &[]), member("b", &["t"], &[])],
            &parts(&[("t", 5)]),
        );
        let ps = |id: &str| out[id].iter().map(|tp| tp.partition()).collect::<Vec<_>>();
        assert_eq!(ps("a"), [0, 1, 2]);
        assert_eq!(ps("b"), [3, 4]);
    }

    #[test]
    fn sticky_moves_only_what_must_move() {
        let p = parts(&[("t", 6)]);
        let a = member("a", &["t"], &[("t", 0), ("t", 1), ("t", 2)]);
        let b = member("b", &["t"], &[("t", 3), ("t", 4), ("t", 5)]);
        let c = member("c", &["t"], &[]);
        let out = CooperativeSticky.assign(&[a, b, c], &p);
        check_valid(&out, &p);
        assert_eq!(out["a"].len(), 2);
        assert_eq!(out["b"].len(), 2);
        assert_eq!(out["c"].len(), 2);
        assert!(out["a"].iter().all(|tp| tp.partition() <= 2));
        assert!(out["b"].iter().all(|tp| tp.partition() >= 3));
    }

    #[test]
    fn sticky_drops_partitions_claimed_twice_or_vanished() {
        let p = parts(&[("t", 2)]);
        let a = member("a", &["t"], &[("t", 0), ("t", 7)]);
        let b = member("b", &["t"], &[("t", 0)]);
        let out = CooperativeSticky.assign(&[a, b], &p);
        check_valid(&out, &p);
    }

    #[test]
    fn unsubscribed_topics_are_not_assigned() {
        let p = parts(&[("t", 2), ("u", 2)]);
        for a in [&Range as &dyn Assignor, &RoundRobin, &CooperativeSticky] {
            let out = a.assign(&[member("a", &["t"], &[]), member("b", &["u"], &[])], &p);
            assert!(out["a"].iter().all(|tp| tp.topic() == "t"), "{}", a.name());
            assert!(out["b"].iter().all(|tp| tp.topic() == "u"), "{}", a.name());
            check_valid(&out, &p);
        }
    }
}
