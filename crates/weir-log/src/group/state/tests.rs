use super::*;
use weir_core::{CooperativeSticky, Range, RoundRobin};

fn topics(v: &[(&str, i32)]) -> BTreeMap<String, i32> {
    v.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

fn spec(assignor: Arc<dyn Assignor>, sub: Subscription) -> MemberSpec {
    MemberSpec {
        client_id: "c".into(),
        subscription: sub,
        session_timeout: Duration::from_millis(600),
        max_poll_interval: Duration::from_millis(2000),
        assignors: vec![assignor],
    }
}

fn tps(d: &Directive) -> Vec<TopicPartition> {
    match d {
        Directive::Assign(v) | Directive::Revoke(v) => v.clone(),
        other => panic!("expected assign/revoke, got {other:?}"),
    }
}

fn all(n: i32) -> Vec<TopicPartition> {
    (0..n).map(|p| TopicPartition::new("t", p)).collect()
}

#[test]
fn eager_join_barrier_holds_assignment_until_revoked() {
    let t = topics(&[("t", 4)]);
    let now = Instant::now();
    let mut g = GroupState::new("g");
    let a = g
        .join(spec(Arc::new(Range), Subscription::topics(["t"])), now, &t)
        .unwrap();
    assert_eq!(g.generation(), 1);
    assert_eq!(tps(&g.heartbeat(&a, now, true, &t)), all(4));
    assert_eq!(g.heartbeat(&a, now, true, &t), Directive::Stable);

    let b = g
        .join(spec(Arc::new(Range), Subscription::topics(["t"])), now, &t)
        .unwrap();
    assert_eq!(g.generation(), 2);
    // B waits behind the barrier while A still owns everything.
    assert_eq!(g.heartbeat(&b, now, true, &t), Directive::Wait);
    assert_eq!(tps(&g.heartbeat(&a, now, true, &t)), all(4));
    assert_eq!(g.heartbeat(&b, now, true, &t), Directive::Wait);
    assert!(
        g.check_commit(&a, &all(4)).is_ok(),
        "A commits while revoking"
    );
    g.revoked(&a, &all(4));
    assert!(
        g.check_commit(&a, &all(1)).is_err(),
        "revoked: commit refused"
    );
    let got_a = tps(&g.heartbeat(&a, now, true, &t));
    let got_b = tps(&g.heartbeat(&b, now, true, &t));
    assert_eq!(got_a.len(), 2);
    assert_eq!(got_b.len(), 2);
    assert_eq!(g.generation(), 2);
    assert!(!g.describe().rebalancing);
}

#[test]
fn cooperative_moves_only_after_revocation_in_a_follow_up_generation() {
    let t = topics(&[("t", 4)]);
    let now = Instant::now();
    let mut g = GroupState::new("g");
    let sticky = || spec(Arc::new(CooperativeSticky), Subscription::topics(["t"]));
    let a = g.join(sticky(), now, &t).unwrap();
    assert_eq!(tps(&g.heartbeat(&a, now, true, &t)), all(4));
    let b = g.join(sticky(), now, &t).unwrap();
    let gen_join = g.generation();
    // B is not blocked (cooperative) but gets nothing yet.
    assert_eq!(g.heartbeat(&b, now, true, &t), Directive::Stable);
    let revoked = tps(&g.heartbeat(&a, now, true, &t));
    assert_eq!(revoked.len(), 2, "only what moves is revoked");
    let kept: Vec<_> = all(4)
        .into_iter()
        .filter(|tp| !revoked.contains(tp))
        .collect();
    // A can still commit what it keeps and what it is revoking.
    g.check_commit(&a, &all(4)).unwrap();
    assert_eq!(g.heartbeat(&b, now, true, &t), Directive::Stable);
    g.revoked(&a, &revoked);
    assert_eq!(g.generation(), gen_join + 1, "follow-up generation");
    assert_eq!(tps(&g.heartbeat(&b, now, true, &t)), revoked);
    assert_eq!(
        tps(&g.heartbeat(&a, now, true, &t)),
        Vec::<TopicPartition>::new()
    );
    let d = g.describe();
    assert_eq!(d.members[0].owned, kept.into_iter().collect());
    g.check_commit(&b, &revoked).unwrap();
}

#[test]
fn cooperative_hands_out_free_partitions_at_once() {
    let t = topics(&[("t", 4)]);
    let now = Instant::now();
    let mut g = GroupState::new("g");
    let sticky = || spec(Arc::new(CooperativeSticky), Subscription::topics(["t"]));
    let a = g.join(sticky(), now, &t).unwrap();
    let b = g.join(sticky(), now, &t).unwrap();
    let got_a = tps(&g.heartbeat(&a, now, true, &t));
    let got_b = tps(&g.heartbeat(&b, now, true, &t));
    assert_eq!(got_a.len() + got_b.len(), 4);
    // A leaves: B keeps its two and gets A's two without revoking anything.
    g.leave(&a, now, &t);
    assert_eq!(tps(&g.heartbeat(&b, now, true, &t)), got_a);
    assert_eq!(g.describe().members[0].owned.len(), 4);
}

#[test]
fn member_that_stops_polling_is_evicted_and_told() {
    let t = topics(&[("t", 2)]);
    let t0 = Instant::now();
    let mut g = GroupState::new("g");
    let a = g
        .join(
            spec(Arc::new(RoundRobin), Subscription::topics(["t"])),
            t0,
            &t,
        )
        .unwrap();
    assert_eq!(tps(&g.heartbeat(&a, t0, true, &t)), all(2));
    let b = g
        .join(
            spec(Arc::new(RoundRobin), Subscription::topics(["t"])),
            t0,
            &t,
        )
        .unwrap();
    assert_eq!(g.heartbeat(&b, t0, true, &t), Directive::Wait);
    let r = tps(&g.heartbeat(&a, t0, true, &t));
    g.revoked(&a, &r);
    assert_eq!(tps(&g.heartbeat(&a, t0, true, &t)).len(), 1);
    assert_eq!(tps(&g.heartbeat(&b, t0, true, &t)).len(), 1);
    // B keeps polling, A does not.
    let later = t0 + Duration::from_millis(1999);
    assert_eq!(g.heartbeat(&b, later, true, &t), Directive::Stable);
    assert_eq!(g.next_expiry(), Some(t0 + Duration::from_millis(2000)));
    let after = t0 + Duration::from_millis(2000);
    // Eager: B revokes its one, then gets both.
    let r = tps(&g.heartbeat(&b, after, true, &t));
    assert_eq!(r.len(), 1);
    g.revoked(&b, &r);
    assert_eq!(tps(&g.heartbeat(&b, after, true, &t)), all(2));
    assert_eq!(
        g.heartbeat(&a, after, true, &t),
        Directive::Evicted(EvictReason::PollInterval)
    );
    assert!(matches!(
        g.check_commit(&a, &all(1)),
        Err(Error::CommitFailed { .. })
    ));
}

#[test]
fn vanished_member_is_evicted_after_session_timeout() {
    let t = topics(&[("t", 2)]);
    let t0 = Instant::now();
    let mut g = GroupState::new("g");
    let sticky = || spec(Arc::new(CooperativeSticky), Subscription::topics(["t"]));
    let a = g.join(sticky(), t0, &t).unwrap();
    let b = g.join(sticky(), t0, &t).unwrap();
    g.heartbeat(&a, t0, true, &t);
    g.heartbeat(&b, t0, true, &t);
    g.vanish(&a, t0);
    assert_eq!(g.next_expiry(), Some(t0 + Duration::from_millis(600)));
    let before = t0 + Duration::from_millis(599);
    assert_eq!(g.heartbeat(&b, before, true, &t), Directive::Stable);
    assert_eq!(g.describe().members.len(), 2);
    let at = t0 + Duration::from_millis(600);
    assert_eq!(tps(&g.heartbeat(&b, at, true, &t)).len(), 1);
    assert_eq!(g.describe().members.len(), 1);
    assert_eq!(g.describe().members[0].owned.len(), 2);
}

#[test]
fn eager_barrier_is_bounded_by_max_poll_interval() {
    let t = topics(&[("t", 2)]);
    let t0 = Instant::now();
    let mut g = GroupState::new("g");
    let a = g
        .join(spec(Arc::new(Range), Subscription::topics(["t"])), t0, &t)
        .unwrap();
    assert_eq!(tps(&g.heartbeat(&a, t0, true, &t)), all(2));
    let t1 = t0 + Duration::from_millis(500);
    let b = g
        .join(spec(Arc::new(Range), Subscription::topics(["t"])), t1, &t)
        .unwrap();
    // A never acknowledges; B waits until A's poll interval runs out.
    let mut now = t1;
    while now < t0 + Duration::from_millis(2000) {
        assert_eq!(g.heartbeat(&b, now, true, &t), Directive::Wait);
        now += Duration::from_millis(100);
    }
    assert_eq!(tps(&g.heartbeat(&b, now, true, &t)), all(2));
}

#[test]
fn topic_changes_start_a_rebalance() {
    let now = Instant::now();
    let mut g = GroupState::new("g");
    let t = topics(&[("orders-a", 1), ("other", 3)]);
    let a = g
        .join(
            spec(
                Arc::new(CooperativeSticky),
                Subscription::pattern("orders-.*").unwrap(),
            ),
            now,
            &t,
        )
        .unwrap();
    assert_eq!(
        tps(&g.heartbeat(&a, now, true, &t)),
        vec![TopicPartition::new("orders-a", 0)]
    );
    let gen = g.generation();
    let t2 = topics(&[("orders-a", 2), ("orders-b", 1), ("other", 3)]);
    assert_eq!(
        tps(&g.heartbeat(&a, now, true, &t2)),
        vec![
            TopicPartition::new("orders-a", 1),
            TopicPartition::new("orders-b", 0)
        ]
    );
    assert!(g.generation() > gen);
    assert_eq!(g.heartbeat(&a, now, true, &t2), Directive::Stable);
}

#[test]
fn resubscribe_revokes_what_is_no_longer_subscribed() {
    let now = Instant::now();
    let mut g = GroupState::new("g");
    let t = topics(&[("x", 1), ("y", 1)]);
    let a = g
        .join(
            spec(
                Arc::new(CooperativeSticky),
                Subscription::topics(["x", "y"]),
            ),
            now,
            &t,
        )
        .unwrap();
    assert_eq!(tps(&g.heartbeat(&a, now, true, &t)).len(), 2);
    g.resubscribe(&a, Subscription::topics(["y"]), now, &t);
    assert_eq!(
        tps(&g.heartbeat(&a, now, true, &t)),
        vec![TopicPartition::new("x", 0)]
    );
    g.revoked(&a, &[TopicPartition::new("x", 0)]);
    assert_eq!(
        tps(&g.heartbeat(&a, now, true, &t)),
        Vec::<TopicPartition>::new()
    );
    assert_eq!(g.heartbeat(&a, now, true, &t), Directive::Stable);
}

#[test]
fn mixed_strategies_are_refused_by_name() {
    let now = Instant::now();
    let t = topics(&[("t", 1)]);
    let mut g = GroupState::new("g");
    g.join(spec(Arc::new(Range), Subscription::topics(["t"])), now, &t)
        .unwrap();
    let e = g
        .join(
            spec(Arc::new(CooperativeSticky), Subscription::topics(["t"])),
            now,
            &t,
        )
        .unwrap_err();
    assert!(
        matches!(&e, Error::Config { key, .. } if key == "partition.assignment.strategy"),
        "{e}"
    );
}

/// An assignor that gives every partition to everyone and invents one.
#[derive(Debug)]
struct Sloppy;
impl Assignor for Sloppy {
    fn name(&self) -> &str {
        "sloppy"
    }
    fn assign(
        &self,
        members: &[GroupMember],
        _partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        members
            .iter()
            .map(|m| {
                let mut v = all(2);
                v.push(TopicPartition::new("nope", 0));
                v.push(TopicPartition::new("t", 99));
                (m.member_id.clone(), v)
            })
            .collect()
    }
}

#[test]
fn a_sloppy_user_assignor_cannot_assign_twice_or_invent_partitions() {
    let now = Instant::now();
    let t = topics(&[("t", 2)]);
    let mut g = GroupState::new("g");
    let a = g
        .join(spec(Arc::new(Sloppy), Subscription::topics(["t"])), now, &t)
        .unwrap();
    let b = g
        .join(spec(Arc::new(Sloppy), Subscription::topics(["t"])), now, &t)
        .unwrap();
    let ga = tps(&g.heartbeat(&a, now, true, &t));
    let gb = tps(&g.heartbeat(&b, now, true, &t));
    assert_eq!(ga, all(2));
    assert!(gb.is_empty());
}

#[test]
fn leave_of_unknown_member_is_harmless() {
    let now = Instant::now();
    let t = topics(&[("t", 1)]);
    let mut g = GroupState::new("g");
    g.leave("ghost", now, &t);
    assert_eq!(g.generation(), 0);
    assert_eq!(
        g.heartbeat("ghost", now, true, &t),
        Directive::Evicted(EvictReason::SessionTimeout)
    );
}

#[test]
fn a_member_waiting_inside_a_long_poll_does_not_evict_itself() {
    let t = topics(&[("t", 1)]);
    let t0 = Instant::now();
    let mut g = GroupState::new("g");
    let a = g
        .join(spec(Arc::new(Range), Subscription::topics(["t"])), t0, &t)
        .unwrap();
    assert_eq!(tps(&g.heartbeat(&a, t0, true, &t)), all(1));
    // Still inside the same poll, 3 s later (max.poll.interval.ms is 2 s).
    let later = t0 + Duration::from_secs(3);
    assert_eq!(g.heartbeat(&a, later, false, &t), Directive::Stable);
    // A new poll after a long absence is told.
    let much_later = later + Duration::from_secs(3);
    assert_eq!(
        g.heartbeat(&a, much_later, true, &t),
        Directive::Evicted(EvictReason::PollInterval)
    );
}

/// A tiny deterministic generator (xorshift), so the storm is reproducible by seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

type Views = BTreeMap<String, BTreeSet<TopicPartition>>;

/// One simulated consumer's poll: carries out the directive on its local view (what
/// it believes it owns: delivered assignments minus what it revoked).
fn poll_once(
    g: &mut GroupState,
    views: &mut Views,
    id: &str,
    now: Instant,
    t: &BTreeMap<String, i32>,
) {
    match g.heartbeat(id, now, false, t) {
        Directive::Revoke(v) => {
            if let Some(set) = views.get_mut(id) {
                for tp in &v {
                    set.remove(tp);
                }
            }
            g.revoked(id, &v);
        }
        Directive::Assign(v) => {
            let set = views.entry(id.to_owned()).or_default();
            for tp in v {
                assert!(set.insert(tp.clone()), "{tp} assigned twice to {id}");
            }
        }
        Directive::Evicted(_) => {
            views.remove(id);
        }
        Directive::Stable | Directive::Wait => {}
    }
}

/// Random joins, closes, stalls (evictions) and polls. Invariant after every step: the
/// views of the group's current members are disjoint (an evicted member is a zombie,
/// fenced by the database, not by the group). At the end, with everyone polling, the
/// group settles and every subscribed partition is owned.
fn storm(seed: u64, assignor: fn() -> Arc<dyn Assignor>) {
    let t = topics(&[("t", 6), ("u", 3)]);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut now = Instant::now();
    let mut g = GroupState::new("storm");
    let mut views = Views::new();
    let mut subscribes_u: BTreeMap<String, bool> = BTreeMap::new();
    let mut zombies: BTreeSet<String> = BTreeSet::new();
    for step in 0..300 {
        let ids: Vec<String> = views
            .keys()
            .filter(|i| !zombies.contains(*i))
            .cloned()
            .collect();
        match rng.next(10) {
            0 | 1 if ids.len() < 6 => {
                let with_u = rng.next(3) != 0;
                let sub = if with_u {
                    Subscription::topics(["t", "u"])
                } else {
                    Subscription::topics(["t"])
                };
                let id = g.join(spec(assignor(), sub), now, &t).unwrap();
                views.insert(id.clone(), BTreeSet::new());
                subscribes_u.insert(id, with_u);
            }
            2 if !ids.is_empty() => {
                // close(): revokes everything locally, then leaves.
                let id = &ids[rng.next(ids.len())];
                views.remove(id);
                subscribes_u.remove(id);
                g.leave(id, now, &t);
            }
            3 if !ids.is_empty() && rng.next(3) == 0 => {
                // A member stops polling; the others go on until it is evicted.
                let stalled = ids[rng.next(ids.len())].clone();
                zombies.insert(stalled.clone());
                for _ in 0..21 {
                    now += Duration::from_millis(100);
                    for id in ids.iter().filter(|i| **i != stalled) {
                        poll_once(&mut g, &mut views, id, now, &t);
                    }
                }
            }
            _ if !ids.is_empty() => {
                let id = ids[rng.next(ids.len())].clone();
                poll_once(&mut g, &mut views, &id, now, &t);
            }
            _ => {}
        }
        now += Duration::from_millis(5);
        let members: BTreeSet<String> = g
            .describe()
            .members
            .into_iter()
            .map(|m| m.member_id)
            .collect();
        let mut seen = BTreeMap::new();
        for (id, set) in views.iter().filter(|(id, _)| members.contains(*id)) {
            for tp in set {
                if let Some(other) = seen.insert(tp.clone(), id.clone()) {
                    panic!("seed {seed} step {step}: {tp} held by {other} and {id}");
                }
            }
        }
    }
    // The zombies are gone for good; everyone else keeps polling until settled.
    for z in &zombies {
        views.remove(z);
        subscribes_u.remove(z);
    }
    for _ in 0..30 {
        let ids: Vec<String> = views.keys().cloned().collect();
        for id in &ids {
            poll_once(&mut g, &mut views, id, now, &t);
        }
        now += Duration::from_millis(5);
    }
    let d = g.describe();
    assert!(!d.rebalancing, "seed {seed}: still rebalancing: {d:?}");
    assert_eq!(d.members.len(), views.len(), "seed {seed}");
    for m in &d.members {
        assert_eq!(m.owned, views[&m.member_id], "seed {seed}: views differ");
    }
    let held: usize = views.values().map(BTreeSet::len).sum();
    let expected = if views.is_empty() {
        0
    } else if subscribes_u.values().any(|u| *u) {
        9
    } else {
        6
    };
    assert_eq!(held, expected, "seed {seed}: {views:?}");
}

#[test]
fn join_leave_evict_storm_never_gives_a_partition_to_two_members() {
    for seed in 1..40 {
        storm(seed, || Arc::new(Range));
        storm(seed, || Arc::new(RoundRobin));
        storm(seed, || Arc::new(CooperativeSticky));
    }
}

#[test]
fn strategy_lists_pick_the_leaders_first_common_one_and_roll_over() {
    let t = topics(&[("t", 2)]);
    let now = Instant::now();
    let mut g = GroupState::new("g");
    let both = || MemberSpec {
        assignors: vec![Arc::new(Range), Arc::new(CooperativeSticky)],
        ..spec(Arc::new(Range), Subscription::topics(["t"]))
    };
    let coop_only = || spec(Arc::new(CooperativeSticky), Subscription::topics(["t"]));
    let a = g.join(both(), now, &t).unwrap();
    assert_eq!(g.describe().assignor.as_deref(), Some("range"));
    // A member that only speaks cooperative-sticky: the common one is chosen.
    let b = g.join(coop_only(), now, &t).unwrap();
    assert_eq!(g.describe().assignor.as_deref(), Some("cooperative-sticky"));
    assert_eq!(g.protocol(), AssignorProtocol::Cooperative);
    // A range-only member shares nothing with B: refused, naming the key.
    let err = g
        .join(spec(Arc::new(Range), Subscription::topics(["t"])), now, &t)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config { key, .. } if key == "partition.assignment.strategy"),
        "{err}"
    );
    // B leaves: the group goes back to the leader's first choice.
    g.leave(&b, now, &t);
    assert_eq!(g.describe().assignor.as_deref(), Some("range"));
    let _ = a;
}
