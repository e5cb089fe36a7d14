//! The in-process group coordinator.
//!
//! One [`Coordinator`] exists per open log directory in a process; every consumer of
//! that log, on any task or thread, joins its groups through it. Each group is a
//! [`state::GroupState`] behind a mutex plus a `watch` channel that wakes members
//! waiting in `poll` when something changed (a rebalance began, a partition was
//! released, a member left).
//!
//! Liveness follows Kafka's model with a background heartbeat: a consumer is alive as
//! long as it exists. A consumer dropped without `close()` (a crash, a panicking
//! task) stops heartbeating and is evicted `session.timeout.ms` later; a consumer that
//! exists but does not call `poll` for `max.poll.interval.ms` is evicted too, and its
//! next poll reports [`Error::PollIntervalExceeded`](weir_core::Error::PollIntervalExceeded).
//! Evictions are checked on every call any member of the group makes, and members
//! waiting in `poll` wake up at the next possible expiry, so survivors take over a dead
//! member's partitions within `session.timeout.ms` plus one heartbeat interval.

pub(crate) mod state;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::watch;
use weir_core::{Result, Subscription, TopicPartition};

pub(crate) use state::{Directive, EvictReason, MemberSpec};
pub use state::{GroupDescription, MemberDescription};

use crate::Log;

/// What the coordinator needs from the log: topic metadata and durable group offsets.
pub(crate) trait GroupStore: Send + Sync + fmt::Debug {
    /// Every topic and its partition count.
    fn topics(&self) -> BTreeMap<String, i32>;
    /// Durably store (merge) a group's committed offsets.
    fn commit(&self, group: &str, offsets: &BTreeMap<TopicPartition, i64>) -> Result<()>;
}

impl GroupStore for Log {
    fn topics(&self) -> BTreeMap<String, i32> {
        Log::topics(self)
    }
    fn commit(&self, group: &str, offsets: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        Log::commit_group_offsets(self, group, offsets)
    }
}

/// The coordinator of every group of one log.
pub(crate) struct Coordinator {
    store: Arc<dyn GroupStore>,
    groups: Mutex<HashMap<String, Arc<GroupHandle>>>,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("store", &self.store)
            .field("groups", &self.groups.lock().len())
            .finish()
    }
}

type Registry = Mutex<HashMap<PathBuf, Weak<Coordinator>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Coordinator {
    /// A coordinator over any store (tests use an in-memory one).
    pub(crate) fn new(store: Arc<dyn GroupStore>) -> Self {
        Self {
            store,
            groups: Mutex::new(HashMap::new()),
        }
    }

    /// The process-wide coordinator of this log's directory.
    pub(crate) fn for_log(log: &Log) -> Arc<Coordinator> {
        let key = log.dir().to_path_buf();
        let mut map = registry().lock();
        if let Some(c) = map.get(&key).and_then(Weak::upgrade) {
            return c;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let c = Arc::new(Coordinator::new(Arc::new(log.clone())));
        map.insert(key, Arc::downgrade(&c));
        c
    }

    /// The coordinator of this log if one is running (consumers exist).
    pub(crate) fn existing(log: &Log) -> Option<Arc<Coordinator>> {
        registry().lock().get(log.dir()).and_then(Weak::upgrade)
    }

    /// The group named `group`, created on first use.
    pub(crate) fn group(&self, group: &str) -> Arc<GroupHandle> {
        let mut groups = self.groups.lock();
        groups
            .entry(group.to_owned())
            .or_insert_with(|| {
                let (tx, _rx) = watch::channel(0);
                Arc::new(GroupHandle {
                    store: self.store.clone(),
                    state: Mutex::new(state::GroupState::new(group)),
                    changed: tx,
                })
            })
            .clone()
    }

    /// A description of `group`, if it was ever used.
    pub(crate) fn describe(&self, group: &str) -> Option<GroupDescription> {
        let handle = self.groups.lock().get(group).cloned();
        handle.map(|h| {
            let topics = self.store.topics();
            h.with(|s| {
                s.expire(Instant::now(), &topics);
                s.describe()
            })
        })
    }
}

/// One group: its state, the store to commit to, and a change signal.
pub(crate) struct GroupHandle {
    store: Arc<dyn GroupStore>,
    state: Mutex<state::GroupState>,
    changed: watch::Sender<u64>,
}

impl fmt::Debug for GroupHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupHandle")
            .field("group", &self.state.lock().name())
            .finish()
    }
}

/// What a heartbeat returns: the directive and when to check again at the latest.
#[derive(Debug)]
pub(crate) struct Beat {
    pub directive: Directive,
    pub generation: i32,
    pub next_expiry: Option<Instant>,
}

impl GroupHandle {
    /// Runs `f` on the state and wakes waiting members if it changed anything.
    fn with<T>(&self, f: impl FnOnce(&mut state::GroupState) -> T) -> T {
        let mut st = self.state.lock();
        let before = st.version();
        let out = f(&mut st);
        let after = st.version();
        drop(st);
        if after != before {
            self.changed.send_replace(after);
        }
        out
    }

    /// Receives a new value whenever the group changes.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(crate) fn join(&self, spec: MemberSpec) -> Result<String> {
        let topics = self.store.topics();
        self.with(|s| s.join(spec, Instant::now(), &topics))
    }

    /// See [`state::GroupState::heartbeat`] for `poll_start`.
    pub(crate) fn heartbeat(&self, member: &str, poll_start: bool) -> Beat {
        let topics = self.store.topics();
        self.with(|s| {
            let directive = s.heartbeat(member, Instant::now(), poll_start, &topics);
            Beat {
                directive,
                generation: s.generation(),
                next_expiry: s.next_expiry(),
            }
        })
    }

    pub(crate) fn is_member(&self, member: &str) -> bool {
        let topics = self.store.topics();
        self.with(|s| s.is_member(member, Instant::now(), &topics))
    }

    pub(crate) fn revoked(&self, member: &str, partitions: &[TopicPartition]) {
        self.with(|s| s.revoked(member, partitions));
    }

    pub(crate) fn leave(&self, member: &str) {
        let topics = self.store.topics();
        self.with(|s| s.leave(member, Instant::now(), &topics));
    }

    pub(crate) fn vanish(&self, member: &str) {
        self.with(|s| s.vanish(member, Instant::now()));
    }

    pub(crate) fn resubscribe(&self, member: &str, subscription: Subscription) {
        let topics = self.store.topics();
        self.with(|s| s.resubscribe(member, subscription, Instant::now(), &topics));
    }

    /// Commits for a member: refused unless it owns every partition now. The write
    /// happens under the group's lock, so no new owner can read the offsets between
    /// the check and the write.
    pub(crate) fn commit(
        &self,
        member: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let topics = self.store.topics();
        self.with(|s| {
            s.expire(Instant::now(), &topics);
            s.check_commit(member, offsets.keys())?;
            if offsets.is_empty() {
                return Ok(());
            }
            self.store.commit(s.name(), offsets)
        })
    }
}

/// Describes a consumer group of an open log: its generation, members and what each
/// owns. `None` when no consumer of this process ever joined the group.
///
/// ```
/// # fn main() -> weir_core::Result<()> {
/// let dir = tempfile::tempdir().map_err(|e| weir_core::Error::io("tempdir", e))?;
/// let log = weir_log::Log::open(dir.path(), weir_log::LogOptions::default())?;
/// assert!(weir_log::describe_group(&log, "nobody-here").is_none());
/// # Ok(()) }
/// ```
pub fn describe_group(log: &Log, group: &str) -> Option<GroupDescription> {
    Coordinator::existing(log).and_then(|c| c.describe(group))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use weir_core::{CooperativeSticky, Error};

    #[derive(Debug, Default)]
    struct MemStore {
        committed: Mutex<BTreeMap<(String, TopicPartition), i64>>,
    }

    impl GroupStore for MemStore {
        fn topics(&self) -> BTreeMap<String, i32> {
            BTreeMap::from([("t".to_string(), 2)])
        }
        fn commit(&self, group: &str, offsets: &BTreeMap<TopicPartition, i64>) -> Result<()> {
            let mut c = self.committed.lock();
            for (tp, o) in offsets {
                c.insert((group.to_owned(), tp.clone()), *o);
            }
            Ok(())
        }
    }

    fn spec() -> MemberSpec {
        MemberSpec {
            client_id: String::new(),
            subscription: Subscription::topics(["t"]),
            session_timeout: Duration::from_millis(600),
            max_poll_interval: Duration::from_secs(30),
            assignors: vec![Arc::new(CooperativeSticky)],
        }
    }

    #[tokio::test]
    async fn commits_are_checked_and_changes_wake_waiters() {
        let store = Arc::new(MemStore::default());
        let c = Coordinator::new(store.clone());
        let g = c.group("g");
        let mut rx = g.changes();
        let a = g.join(spec()).unwrap();
        assert!(a.starts_with("consumer-"));
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        let tp = TopicPartition::new("t", 0);
        let early = g.commit(&a, &BTreeMap::from([(tp.clone(), 5)]));
        assert!(
            matches!(early, Err(Error::CommitFailed { .. })),
            "not told yet"
        );
        let beat = g.heartbeat(&a, true);
        assert!(matches!(beat.directive, Directive::Assign(ref v) if v.len() == 2));
        g.commit(&a, &BTreeMap::from([(tp.clone(), 5)])).unwrap();
        assert_eq!(store.committed.lock()[&("g".to_string(), tp.clone())], 5);
        g.leave(&a);
        let late = g.commit(&a, &BTreeMap::from([(tp, 6)])).unwrap_err();
        assert!(
            late.to_string().contains("no longer in the group"),
            "{late}"
        );
        assert_eq!(c.describe("g").unwrap().members.len(), 0);
        assert!(c.describe("other").is_none());
    }

    #[test]
    fn vanished_members_expire_for_the_survivors() {
        let c = Coordinator::new(Arc::new(MemStore::default()));
        let g = c.group("g");
        let a = g.join(spec()).unwrap();
        let b = g.join(spec()).unwrap();
        g.heartbeat(&a, true);
        g.heartbeat(&b, true);
        g.vanish(&a);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let beat = g.heartbeat(&b, true);
            if let Directive::Assign(v) = &beat.directive {
                if !v.is_empty() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "never took over");
            let wait = beat.next_expiry.map_or(Duration::from_millis(10), |t| {
                t.saturating_duration_since(Instant::now())
            });
            std::thread::sleep(wait.min(Duration::from_millis(50)));
        }
        assert_eq!(c.describe("g").unwrap().members[0].owned.len(), 2);
    }
}
