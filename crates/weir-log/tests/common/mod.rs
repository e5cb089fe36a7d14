//! Helpers shared by the `consumer_*` scenario tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use weir_core::{
    async_trait, AssignmentStrategy, AutoOffsetReset, Consumer, ConsumerConfig, Offset,
    RebalanceContext, RebalanceListener, Result, TopicPartition,
};
use weir_log::{Log, LogConsumer, LogOptions, NewRecord};

/// How long any wait in these tests may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A fresh log with one topic.
pub fn log_with_topic(topic: &str, partitions: i32) -> (tempfile::TempDir, Log) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.create_topic(topic, partitions).unwrap();
    (dir, log)
}

/// Appends `n` records `"{partition}:{i}"` to one partition.
pub fn produce(log: &Log, topic: &str, partition: i32, n: usize) {
    let tp = TopicPartition::new(topic, partition);
    let records: Vec<NewRecord> = (0..n)
        .map(|i| NewRecord::value(format!("{partition}:{i}")))
        .collect();
    log.append(&tp, &records).unwrap();
}

/// Short timeouts, earliest, manual commits.
pub fn config(group: &str, strategy: AssignmentStrategy) -> ConsumerConfig {
    ConsumerConfig::new()
        .with_group_id(group)
        .with_auto_offset_reset(AutoOffsetReset::Earliest)
        .with_enable_auto_commit(false)
        .with_session_timeout(Duration::from_millis(600))
        .with_heartbeat_interval(Duration::from_millis(100))
        .with_max_poll_interval(Duration::from_secs(10))
        .with_assignment_strategy(strategy)
}

/// What a [`Recorder`] saw, in order, across all recorders sharing one journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Revoked(String, Vec<TopicPartition>),
    Assigned(String, Vec<TopicPartition>),
    Lost(String, Vec<TopicPartition>),
}

pub type Journal = Arc<Mutex<Vec<Event>>>;

/// A listener that journals every callback, commits positions on revoke, and can be
/// told to seek assigned partitions or to block in revoke until released.
pub struct Recorder {
    pub name: String,
    pub journal: Journal,
    pub commit_on_revoke: bool,
    pub seek_on_assign: Option<Offset>,
    /// When set, `on_partitions_revoked` announces itself and waits for the release.
    pub gate: Option<(
        tokio::sync::mpsc::UnboundedSender<()>,
        Arc<tokio::sync::Notify>,
    )>,
}

impl Recorder {
    pub fn new(name: &str, journal: &Journal) -> Self {
        Self {
            name: name.into(),
            journal: journal.clone(),
            commit_on_revoke: false,
            seek_on_assign: None,
            gate: None,
        }
    }
}

#[async_trait]
impl RebalanceListener for Recorder {
    async fn on_partitions_revoked(
        &self,
        revoked: &[TopicPartition],
        ctx: &mut RebalanceContext,
    ) -> Result<()> {
        if let Some((entered, release)) = &self.gate {
            let _ = entered.send(());
            release.notified().await;
        }
        if self.commit_on_revoke {
            for tp in revoked {
                if let Some(p) = ctx.position(tp) {
                    ctx.commit(tp.clone(), p);
                }
            }
        }
        self.journal
            .lock()
            .push(Event::Revoked(self.name.clone(), revoked.to_vec()));
        Ok(())
    }

    async fn on_partitions_assigned(
        &self,
        assigned: &[TopicPartition],
        ctx: &mut RebalanceContext,
    ) -> Result<()> {
        if let Some(o) = self.seek_on_assign {
            for tp in assigned {
                ctx.seek(tp.clone(), o);
            }
        }
        self.journal
            .lock()
            .push(Event::Assigned(self.name.clone(), assigned.to_vec()));
        Ok(())
    }

    async fn on_partitions_lost(&self, lost: &[TopicPartition]) -> Result<()> {
        self.journal
            .lock()
            .push(Event::Lost(self.name.clone(), lost.to_vec()));
        Ok(())
    }
}

/// Polls every consumer (short timeouts) until `done` holds for their assignments;
/// fails after [`DEADLINE`].
pub async fn poll_until(
    consumers: &mut [&mut LogConsumer],
    mut done: impl FnMut(&[BTreeSet<TopicPartition>]) -> bool,
) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        for c in consumers.iter_mut() {
            c.poll(Duration::from_millis(20)).await.unwrap();
        }
        let assignments: Vec<_> = consumers.iter().map(|c| c.assignment()).collect();
        if done(&assignments) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached; assignments: {assignments:?}"
        );
    }
}

/// True when the assignments are disjoint, cover `topic`'s `n` partitions, and have
/// these sizes (any order).
pub fn balanced(assignments: &[BTreeSet<TopicPartition>], n: i32, sizes: &[usize]) -> bool {
    let mut all: Vec<&TopicPartition> = assignments.iter().flatten().collect();
    let count = all.len();
    all.sort();
    all.dedup();
    let mut got: Vec<usize> = assignments.iter().map(BTreeSet::len).collect();
    got.sort_unstable();
    let mut want = sizes.to_vec();
    want.sort_unstable();
    count == all.len() && count == n as usize && got == want
}

pub fn tps(topic: &str, parts: impl IntoIterator<Item = i32>) -> Vec<TopicPartition> {
    parts
        .into_iter()
        .map(|p| TopicPartition::new(topic, p))
        .collect()
}
