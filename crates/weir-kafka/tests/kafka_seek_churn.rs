//! Seek on assignment under churn: while records flow into a 4-partition topic, a
//! member joins and leaves the group 10 times (20 membership changes, each a
//! rebalance; 4 times for the cooperative group, whose changes take two rounds).
//! Every member's listener seeks each assigned partition to the offset kept in a
//! shared "database" (the next offset to process, updated after each poll, as an
//! exactly-once sink would). After every assignment the first record delivered from a
//! partition must be exactly at the offset the listener chose; every record is
//! processed exactly once; nothing of a partition is delivered to a member that does
//! not own it. Eager (range) and cooperative-sticky groups run side by side.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_core::{
    async_trait, AssignmentStrategy, Consumer, Offset, RebalanceContext, RebalanceListener, Result,
    Subscription, TopicPartition,
};
use weir_kafka::KafkaConsumer;
use weir_testkit::Backend;

const PARTITIONS: i32 = 4;

/// What the members share: the "database" of next offsets, who owns what, counters.
#[derive(Default)]
struct World {
    /// partition → next offset to process (the database row).
    store: Mutex<HashMap<i32, i64>>,
    /// partition → member that owns it (as the listeners saw it).
    owners: Mutex<HashMap<i32, usize>>,
    assignments: AtomicU64,
    checked_first_offsets: AtomicU64,
    mismatches: Mutex<Vec<String>>,
    anomalies: Mutex<Vec<String>>,
}

struct Listener {
    me: usize,
    world: Arc<World>,
    /// partition → the offset chosen at assignment, until its first record arrives.
    expect: Arc<Mutex<HashMap<i32, i64>>>,
}

#[async_trait]
impl RebalanceListener for Listener {
    async fn on_partitions_assigned(
        &self,
        assigned: &[TopicPartition],
        ctx: &mut RebalanceContext,
    ) -> Result<()> {
        self.world.assignments.fetch_add(1, Ordering::SeqCst);
        for tp in assigned {
            let p = tp.partition();
            let next = self
                .world
                .store
                .lock()
                .unwrap()
                .get(&p)
                .copied()
                .unwrap_or(0);
            ctx.seek(tp.clone(), Offset::At(next));
            self.expect.lock().unwrap().insert(p, next);
            let prev = self.world.owners.lock().unwrap().insert(p, self.me);
            if let Some(other) = prev.filter(|o| *o != self.me) {
                self.world.anomalies.lock().unwrap().push(format!(
                    "member {} was assigned partition {p} while member {other} still owned it",
                    self.me
                ));
            }
        }
        Ok(())
    }

    async fn on_partitions_revoked(
        &self,
        revoked: &[TopicPartition],
        _ctx: &mut RebalanceContext,
    ) -> Result<()> {
        self.give_up(revoked);
        Ok(())
    }

    async fn on_partitions_lost(&self, lost: &[TopicPartition]) -> Result<()> {
        self.give_up(lost);
        Ok(())
    }
}

impl Listener {
    fn give_up(&self, tps: &[TopicPartition]) {
        let mut owners = self.world.owners.lock().unwrap();
        for tp in tps {
            self.expect.lock().unwrap().remove(&tp.partition());
            if owners.get(&tp.partition()) == Some(&self.me) {
                owners.remove(&tp.partition());
            }
        }
    }
}

/// One member: polls until told to stop, processes in order, updates the store.
fn spawn_member(
    backend: &common::KafkaBackend,
    group: &str,
    topic: &str,
    strategy: AssignmentStrategy,
    me: usize,
    world: Arc<World>,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    // Quick heartbeats: members notice a rebalance sooner (tansu adds ~3 s per
    // JoinGroup round anyway, see DEVELOPERS.md).
    let config = backend
        .config(Some(group))
        .with_session_timeout(Duration::from_secs(6))
        .with_heartbeat_interval(Duration::from_millis(300))
        .with_assignment_strategy(strategy)
        .with_enable_auto_commit(false);
    let topic = topic.to_owned();
    let stop2 = stop.clone();
    let handle = tokio::spawn(async move {
        let expect = Arc::new(Mutex::new(HashMap::new()));
        let listener = Arc::new(Listener {
            me,
            world: world.clone(),
            expect: expect.clone(),
        });
        let mut consumer = KafkaConsumer::new(config).unwrap();
        consumer
            .subscribe(Subscription::topics([topic]), listener)
            .await
            .unwrap();
        while !stop2.load(Ordering::SeqCst) {
            let batch = consumer.poll(Duration::from_millis(100)).await.unwrap();
            for r in &batch {
                let p = r.partition;
                if world.owners.lock().unwrap().get(&p) != Some(&me) {
                    world.anomalies.lock().unwrap().push(format!(
                        "member {me} got {} but does not own the partition",
                        r.coordinates()
                    ));
                }
                if let Some(chosen) = expect.lock().unwrap().remove(&p) {
                    world.checked_first_offsets.fetch_add(1, Ordering::SeqCst);
                    if r.offset != chosen {
                        world.mismatches.lock().unwrap().push(format!(
                            "member {me}: first record of partition {p} after assignment was at {}, the listener chose {chosen}",
                            r.offset
                        ));
                    }
                }
                let mut store = world.store.lock().unwrap();
                let next = store.entry(p).or_insert(0);
                if r.offset != *next {
                    world.anomalies.lock().unwrap().push(format!(
                        "member {me}: got {} while the store's next offset was {next} (duplicate or gap)",
                        r.coordinates()
                    ));
                }
                *next = (*next).max(r.offset + 1);
            }
        }
        consumer.close().await.unwrap();
    });
    (stop, handle)
}

async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn churn(strategy: AssignmentStrategy, rounds: usize) {
    let backend = common::KafkaBackend::new();
    let topic = backend.unique("churn");
    let group = backend.unique("churn-group");
    backend.create_topic(&topic, PARTITIONS).await.unwrap();
    let world = Arc::new(World::default());

    // Records flow the whole time.
    let producing = Arc::new(AtomicBool::new(true));
    let produced: Arc<Mutex<BTreeMap<i32, i64>>> = Arc::default();
    let producer = {
        let producing = producing.clone();
        let produced = produced.clone();
        let topic = topic.clone();
        let p = common::producer(&backend.broker().bootstrap());
        tokio::spawn(async move {
            let mut i = 0u64;
            while producing.load(Ordering::SeqCst) {
                let part = (i % PARTITIONS as u64) as i32;
                let off = common::produce_one(&p, &topic, part, None, &i.to_be_bytes())
                    .await
                    .unwrap();
                produced.lock().unwrap().insert(part, off + 1);
                i += 1;
                if i % PARTITIONS as u64 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };

    let patience = Duration::from_secs(60);
    let (stop_a, member_a) = spawn_member(&backend, &group, &topic, strategy, 0, world.clone());
    wait_until("member 0 to own every partition", patience, || {
        world.owners.lock().unwrap().len() == PARTITIONS as usize
    })
    .await;

    for round in 1..=rounds {
        let (stop_b, member_b) =
            spawn_member(&backend, &group, &topic, strategy, round, world.clone());
        wait_until(
            &format!("member {round} to own a partition"),
            patience,
            || world.owners.lock().unwrap().values().any(|m| *m == round),
        )
        .await;
        stop_b.store(true, Ordering::SeqCst);
        member_b.await.unwrap();
        wait_until(
            &format!("member 0 to own every partition again after member {round} left"),
            patience,
            || {
                let owners = world.owners.lock().unwrap();
                owners.len() == PARTITIONS as usize && owners.values().all(|m| *m == 0)
            },
        )
        .await;
    }

    producing.store(false, Ordering::SeqCst);
    producer.await.unwrap();
    let target = produced.lock().unwrap().clone();
    wait_until("member 0 to process every record", patience, || {
        let store = world.store.lock().unwrap();
        target.iter().all(|(p, end)| store.get(p) == Some(end))
    })
    .await;
    stop_a.store(true, Ordering::SeqCst);
    member_a.await.unwrap();

    let mismatches = world.mismatches.lock().unwrap().clone();
    let anomalies = world.anomalies.lock().unwrap().clone();
    let assignments = world.assignments.load(Ordering::SeqCst);
    let checked = world.checked_first_offsets.load(Ordering::SeqCst);
    eprintln!(
        "{strategy}: {} membership changes, {assignments} assignments, {checked} first offsets checked, {} mismatches, {} anomalies, {} records",
        rounds * 2,
        mismatches.len(),
        anomalies.len(),
        target.values().sum::<i64>()
    );
    assert!(mismatches.is_empty(), "seek mismatches: {mismatches:#?}");
    assert!(anomalies.is_empty(), "anomalies: {anomalies:#?}");
    assert!(
        assignments as usize > rounds * 2,
        "expected a rebalance per membership change, saw {assignments} assignments"
    );
    assert!(
        checked as usize >= rounds,
        "too few first offsets were checked ({checked})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eager_first_offset_after_each_assignment_is_the_listeners_choice() {
    churn(AssignmentStrategy::Range, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cooperative_first_offset_after_each_assignment_is_the_listeners_choice() {
    // Fewer rounds: each cooperative change takes two JoinGroup rounds on tansu.
    churn(AssignmentStrategy::CooperativeSticky, 4).await;
}
