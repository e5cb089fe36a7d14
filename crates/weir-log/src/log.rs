//! [`Log`]: an open log directory, shared process-wide.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use weir_core::{Error, Record, TopicPartition};

use crate::fsutil::{create_dir_durable, write_atomic};
use crate::groups::GroupStore;
use crate::lock::{acquire, DirLock};
use crate::partition::Partition;
use crate::shared::Shared;
use crate::{Durability, LogOptions, NewRecord, Result};

/// The longest topic name accepted (Kafka's limit).
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// The most partitions a topic may have.
pub const MAX_PARTITIONS: i32 = 100_000;

const TOPIC_META: &str = "topic.json";

#[derive(Serialize, Deserialize)]
struct TopicMeta {
    version: u32,
    partitions: i32,
}

#[derive(Debug)]
struct Topic {
    partitions: Vec<Arc<Partition>>,
}

/// Open logs of this process by canonical directory.
static REGISTRY: std::sync::Mutex<BTreeMap<PathBuf, Weak<Inner>>> =
    std::sync::Mutex::new(BTreeMap::new());

fn registry() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, Weak<Inner>>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

struct Inner {
    dir: PathBuf,
    shared: Arc<Shared>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises topic creation and partition additions.
    meta_lock: Mutex<()>,
    groups: GroupStore,
    appended: watch::Sender<u64>,
    lock: Mutex<Option<DirLock>>,
    /// Dropping it stops the background flusher of `Durability::Interval`.
    flusher_stop: Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.flusher_stop.lock().take();
        if !self.shared.is_poisoned() {
            if let Err(e) = self.flush_all() {
                tracing::error!(dir = %self.dir.display(), error = %e, "final flush on close failed");
            }
        }
        // Release the directory lock before taking the registry: an open racing with
        // this drop holds the registry while it waits for the lock.
        self.lock.lock().take();
        let mut reg = registry();
        if reg.get(&self.dir).is_some_and(|w| w.strong_count() == 0) {
            reg.remove(&self.dir);
        }
    }
}

impl Inner {
    fn flush_all(&self) -> Result<()> {
        let topics: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        let mut first_err = None;
        for t in topics {
            for p in &t.partitions {
                if let Err(e) = p.flush() {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// An embedded, persistent, partitioned log in a directory: topics of partitions of
/// records with offsets, as in Kafka, with no server.
///
/// `Log` is a cheap handle (`Clone + Send + Sync`). Within one process, opening the
/// same directory again returns a handle to the same open log, so consumers and
/// producers on any task or thread share it. Another process opening the directory
/// gets an error naming the directory and the holder's pid. Dropping the last handle
/// fsyncs what was written and releases the directory.
///
/// On-disk layout:
///
/// ```text
/// <dir>/LOCK                                  flock(2)ed by the holder, contains its pid
/// <dir>/topics/<topic>/topic.json             {"version":1,"partitions":N}
/// <dir>/topics/<topic>/<partition>/<base>.log    segment: CRC32C-checked batches
/// <dir>/topics/<topic>/<partition>/<base>.index  sparse offset index of a sealed segment
/// <dir>/groups/<hex of group id>.json         a group's committed offsets
/// ```
///
/// ```
/// use weir_log::{Log, LogOptions, NewRecord};
/// use weir_core::TopicPartition;
///
/// let dir = tempfile::tempdir()?;
/// let log = Log::open(dir.path(), LogOptions::default())?;
/// log.create_topic("orders", 2)?;
/// let tp = TopicPartition::new("orders", 1);
/// let first = log.append(&tp, &[NewRecord::new("k", "v1"), NewRecord::new("k", "v2")])?;
/// assert_eq!(first, 0);
/// let records = log.read(&tp, 0, 10, 1 << 20)?;
/// assert_eq!(records[1].value.as_deref(), Some(&b"v2"[..]));
/// assert_eq!(log.offsets(&tp)?, (0, 2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.dir)
            .field("options", &self.inner.shared.options)
            .field("poisoned", &self.inner.shared.is_poisoned())
            .finish()
    }
}

/// Validates a topic name: 1 to 249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
///
/// ```
/// assert!(weir_log::validate_topic_name("orders.v2_eu-west").is_ok());
/// assert!(weir_log::validate_topic_name("bad/name").is_err());
/// assert!(weir_log::validate_topic_name("..").is_err());
/// ```
pub fn validate_topic_name(topic: &str) -> Result<()> {
    let reason = if topic.is_empty() {
        Some("must not be empty".to_owned())
    } else if topic.len() > MAX_TOPIC_NAME_LEN {
        Some(format!(
            "is {} characters long, at most {MAX_TOPIC_NAME_LEN} are allowed",
            topic.len()
        ))
    } else if topic == "." || topic == ".." {
        Some("`.` and `..` are not allowed".to_owned())
    } else {
        topic
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .map(|c| {
                format!("contains {c:?}; only ASCII letters, digits, '.', '_' and '-' are allowed")
            })
    };
    match reason {
        Some(r) => Err(Error::config(
            "topic",
            format!("invalid topic name {topic:?}: {r}"),
        )),
        None => Ok(()),
    }
}

impl Log {
    /// Opens the log in `dir`, creating the directory if it does not exist.
    ///
    /// Recovery runs on open: the newest segment of every partition is scanned, a torn
    /// tail (an append interrupted by a crash) is truncated, and damage followed by
    /// valid data is reported as [`Error::Corrupt`] naming the file and byte position.
    /// If this process already has the directory open, the open log is returned (its
    /// options stay those of the first opener).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let a = weir_log::Log::open(dir.path(), Default::default())?;
    /// let b = weir_log::Log::open(dir.path(), Default::default())?;
    /// a.create_topic("t", 1)?;
    /// assert_eq!(b.partition_count("t")?, 1); // the same log
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log> {
        let dir = dir.as_ref();
        options.validate()?;
        create_dir_durable(dir)?;
        Self::open_dir(dir, options)
    }

    /// Like [`Log::open`], but the directory must exist.
    ///
    /// ```
    /// let err = weir_log::Log::open_existing("/nonexistent/weir-log", Default::default()).unwrap_err();
    /// assert!(err.to_string().contains("/nonexistent/weir-log"));
    /// ```
    pub fn open_existing(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log> {
        let dir = dir.as_ref();
        options.validate()?;
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::io(
                    dir,
                    std::io::Error::new(
                        std::io::ErrorKind::NotADirectory,
                        "log path is not a directory",
                    ),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::io(
                    dir,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "log directory does not exist",
                    ),
                ))
            }
            Err(e) => return Err(Error::io(dir, e)),
        }
        Self::open_dir(dir, options)
    }

    fn open_dir(dir: &Path, options: LogOptions) -> Result<Log> {
        let canonical = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
        let mut reg = registry();
        if let Some(inner) = reg.get(&canonical).and_then(Weak::upgrade) {
            return Ok(Log { inner });
        }
        let lock = acquire(&canonical)?;
        let shared = Arc::new(Shared::new(options));
        let topics = load_topics(&canonical, &shared)?;
        let (appended, _) = watch::channel(0u64);
        let inner = Arc::new(Inner {
            groups: GroupStore::new(&canonical),
            dir: canonical.clone(),
            shared,
            topics: RwLock::new(topics),
            meta_lock: Mutex::new(()),
            appended,
            lock: Mutex::new(Some(lock)),
            flusher_stop: Mutex::new(None),
        });
        if let Durability::Interval(every) = inner.shared.options.durability {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let weak = Arc::downgrade(&inner);
            let spawned = std::thread::Builder::new()
                .name("weir-log-flusher".into())
                .spawn(move || flusher(weak, rx, every));
            if let Err(e) = spawned {
                // `inner`'s drop takes the registry lock: release it first.
                drop(reg);
                return Err(Error::io(&canonical, e));
            }
            *inner.flusher_stop.lock() = Some(tx);
        }
        reg.insert(canonical, Arc::downgrade(&inner));
        Ok(Log { inner })
    }

    /// The log's directory (canonical path).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// assert_eq!(log.dir(), dir.path().canonicalize()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options the log was opened with.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// assert_eq!(log.options().durability, weir_log::Durability::Always);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn options(&self) -> &LogOptions {
        &self.inner.shared.options
    }

    /// Creates a topic with `partitions` partitions. Idempotent when the topic exists
    /// with the same count; an error if it exists with another count. Names are 1 to
    /// 249 characters of `[A-Za-z0-9._-]` (see [`validate_topic_name`]).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// log.create_topic("orders", 4)?;
    /// log.create_topic("orders", 4)?; // no-op
    /// assert!(log.create_topic("orders", 3).is_err());
    /// assert!(log.create_topic("no spaces", 1).is_err());
    /// assert!(log.create_topic("empty", 0).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        validate_topic_name(topic)?;
        validate_partitions(partitions)?;
        let _guard = self.inner.meta_lock.lock();
        if let Some(t) = self.inner.topics.read().get(topic) {
            let have = t.partitions.len() as i32;
            if have == partitions {
                return Ok(());
            }
            return Err(Error::config(
                "partitions",
                format!("topic `{topic}` already exists with {have} partitions, not {partitions}"),
            ));
        }
        self.inner.shared.check_poisoned()?;
        let topic_dir = self.topic_dir(topic);
        let parts = self.open_partitions(topic, &topic_dir, 0, partitions, Vec::new())?;
        write_meta(&topic_dir, partitions)?;
        self.inner
            .topics
            .write()
            .insert(topic.to_owned(), Arc::new(Topic { partitions: parts }));
        Ok(())
    }

    /// Grows a topic to `new_total` partitions (never shrinks; the same count is a
    /// no-op). Keys hash to other partitions afterwards, as in Kafka.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// log.create_topic("orders", 2)?;
    /// log.add_partitions("orders", 5)?;
    /// assert_eq!(log.partition_count("orders")?, 5);
    /// assert!(log.add_partitions("orders", 3).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_partitions(&self, topic: &str, new_total: i32) -> Result<()> {
        validate_partitions(new_total)?;
        let _guard = self.inner.meta_lock.lock();
        let current = self
            .inner
            .topics
            .read()
            .get(topic)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic {
                topic: topic.to_owned(),
            })?;
        let have = current.partitions.len() as i32;
        if new_total == have {
            return Ok(());
        }
        if new_total < have {
            return Err(Error::config(
                "partitions",
                format!("topic `{topic}` has {have} partitions; cannot shrink to {new_total}"),
            ));
        }
        self.inner.shared.check_poisoned()?;
        let topic_dir = self.topic_dir(topic);
        let parts = self.open_partitions(
            topic,
            &topic_dir,
            have,
            new_total,
            current.partitions.clone(),
        )?;
        write_meta(&topic_dir, new_total)?;
        self.inner
            .topics
            .write()
            .insert(topic.to_owned(), Arc::new(Topic { partitions: parts }));
        Ok(())
    }

    fn topic_dir(&self, topic: &str) -> PathBuf {
        self.inner.dir.join("topics").join(topic)
    }

    fn open_partitions(
        &self,
        topic: &str,
        topic_dir: &Path,
        from: i32,
        to: i32,
        mut parts: Vec<Arc<Partition>>,
    ) -> Result<Vec<Arc<Partition>>> {
        create_dir_durable(topic_dir)?;
        for p in from..to {
            parts.push(Arc::new(Partition::open_or_create(
                TopicPartition::new(topic, p),
                topic_dir.join(p.to_string()),
                self.inner.shared.clone(),
            )?));
        }
        Ok(parts)
    }

    /// Every topic and its partition count.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// log.create_topic("a", 1)?;
    /// log.create_topic("b", 3)?;
    /// assert_eq!(log.topics().into_iter().collect::<Vec<_>>(), [("a".to_owned(), 1), ("b".to_owned(), 3)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn topics(&self) -> BTreeMap<String, i32> {
        self.inner
            .topics
            .read()
            .iter()
            .map(|(k, t)| (k.clone(), t.partitions.len() as i32))
            .collect()
    }

    /// The number of partitions of `topic`, or [`Error::UnknownTopic`].
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// assert!(matches!(log.partition_count("nope"), Err(weir_core::Error::UnknownTopic { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn partition_count(&self, topic: &str) -> Result<i32> {
        self.inner
            .topics
            .read()
            .get(topic)
            .map(|t| t.partitions.len() as i32)
            .ok_or_else(|| Error::UnknownTopic {
                topic: topic.to_owned(),
            })
    }

    pub(crate) fn partition(&self, tp: &TopicPartition) -> Result<Arc<Partition>> {
        let topics = self.inner.topics.read();
        let t = topics.get(tp.topic()).ok_or_else(|| Error::UnknownTopic {
            topic: tp.topic().to_owned(),
        })?;
        usize::try_from(tp.partition())
            .ok()
            .and_then(|i| t.partitions.get(i))
            .cloned()
            .ok_or_else(|| Error::UnknownPartition(tp.clone()))
    }

    /// Appends `records` to one partition as one batch and returns the offset of the
    /// first (an empty slice appends nothing and returns the log end). Returns once
    /// the batch is durable as the [`Durability`] mode promises; readers see it from
    /// then on. After a failed write or fsync the log is poisoned and every later
    /// write returns [`Error::Poisoned`]. A failed append was not acknowledged: its
    /// records may or may not be present after the log is reopened (as with any
    /// producer, retrying can duplicate them).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// use weir_core::TopicPartition;
    /// use weir_log::NewRecord;
    /// log.create_topic("t", 1)?;
    /// let tp = TopicPartition::new("t", 0);
    /// assert_eq!(log.append(&tp, &[NewRecord::value("a")])?, 0);
    /// assert_eq!(log.append(&tp, &[NewRecord::value("b"), NewRecord::value("c")])?, 1);
    /// assert!(log.append(&TopicPartition::new("t", 9), &[NewRecord::value("x")]).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn append(&self, tp: &TopicPartition, records: &[NewRecord]) -> Result<i64> {
        let p = self.partition(tp)?;
        let first = p.append(records)?;
        if !records.is_empty() && self.inner.appended.receiver_count() > 0 {
            self.inner.appended.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(first)
    }

    /// Up to `max_records` records of a partition starting at `offset`, stopping
    /// before a batch that would take the bytes read past `max_bytes`. At least one
    /// record is returned when one exists at `offset`, however big; fewer than
    /// `max_records` may come back even when more exist (read again from the next
    /// offset). `offset` equal to
    /// the log end returns an empty vector; an offset below the log start or beyond
    /// the end is [`Error::OffsetOutOfRange`]. Every batch read is CRC-checked: damage
    /// is [`Error::Corrupt`] naming the segment file and position.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// use weir_core::TopicPartition;
    /// use weir_log::NewRecord;
    /// log.create_topic("t", 1)?;
    /// let tp = TopicPartition::new("t", 0);
    /// log.append(&tp, &[NewRecord::value("a"), NewRecord::value("b"), NewRecord::value("c")])?;
    /// let rs = log.read(&tp, 1, 100, 1 << 20)?;
    /// assert_eq!(rs.iter().map(|r| r.offset).collect::<Vec<_>>(), [1, 2]);
    /// assert!(log.read(&tp, 3, 100, 1 << 20)?.is_empty());
    /// assert!(log.read(&tp, 4, 100, 1 << 20).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read(
        &self,
        tp: &TopicPartition,
        offset: i64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>> {
        self.partition(tp)?.read(offset, max_records, max_bytes)
    }

    /// `(log start, log end)` of a partition: the first offset still stored and the
    /// offset the next append gets.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// # use weir_core::TopicPartition;
    /// log.create_topic("t", 1)?;
    /// let tp = TopicPartition::new("t", 0);
    /// log.append(&tp, &[weir_log::NewRecord::value("a")])?;
    /// assert_eq!(log.offsets(&tp)?, (0, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn offsets(&self, tp: &TopicPartition) -> Result<(i64, i64)> {
        Ok(self.partition(tp)?.offsets())
    }

    /// A watch channel whose value changes after every successful append to any
    /// partition, so a consumer can wait for new data without spinning. Subscribe
    /// first, then check the offsets, then wait: appends made while nobody is
    /// subscribed notify nobody.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// log.create_topic("t", 1)?;
    /// let mut appended = log.appended();
    /// log.append(&weir_core::TopicPartition::new("t", 0), &[weir_log::NewRecord::value("x")])?;
    /// appended.changed().await.unwrap(); // returns at once: an append happened
    /// # Ok(()) }
    /// ```
    pub fn appended(&self) -> watch::Receiver<u64> {
        self.inner.appended.subscribe()
    }

    /// Deletes whole segments beyond [`LogOptions::retention_bytes`] /
    /// [`LogOptions::retention_age`] in every partition, moving log start offsets.
    /// Also runs whenever a partition rolls to a new segment.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// log.apply_retention()?; // no limits configured: nothing to do
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_retention(&self) -> Result<()> {
        for p in self.all_partitions() {
            p.apply_retention()?;
        }
        Ok(())
    }

    /// fsyncs everything written so far (a no-op in [`Durability::Always`]). A
    /// failure poisons the log.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let log = weir_log::Log::open(dir.path(), weir_log::LogOptions::default().with_durability(weir_log::Durability::Os))?;
    /// log.create_topic("t", 1)?;
    /// log.append(&weir_core::TopicPartition::new("t", 0), &[weir_log::NewRecord::value("x")])?;
    /// log.flush()?; // now durable against power loss too
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn flush(&self) -> Result<()> {
        self.inner.shared.check_poisoned()?;
        self.inner.flush_all()
    }

    /// Durably stores a consumer group's committed offsets, merged into what is
    /// stored (partitions not in `offsets` keep theirs). Written to a temp file,
    /// fsynced, renamed over the group's file, directory fsynced: a crash leaves the
    /// old or the new offsets, never a mix.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// use std::collections::BTreeMap;
    /// use weir_core::TopicPartition;
    /// let tp = TopicPartition::new("orders", 0);
    /// log.commit_group_offsets("billing", &BTreeMap::from([(tp.clone(), 42)]))?;
    /// assert_eq!(log.group_offsets("billing")?.get(&tp), Some(&42));
    /// assert!(log.group_offsets("other")?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit_group_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        validate_group(group)?;
        self.inner.shared.check_poisoned()?;
        self.inner.groups.commit(group, offsets)
    }

    /// A group's committed offsets (empty if it never committed).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// assert!(log.group_offsets("new-group")?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn group_offsets(&self, group: &str) -> Result<BTreeMap<TopicPartition, i64>> {
        validate_group(group)?;
        self.inner.groups.get(group)
    }

    /// Bytes stored for a partition (sum of its segment files).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// # log.create_topic("t", 1)?;
    /// let tp = weir_core::TopicPartition::new("t", 0);
    /// assert_eq!(log.size_bytes(&tp)?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn size_bytes(&self, tp: &TopicPartition) -> Result<u64> {
        Ok(self.partition(tp)?.size_bytes())
    }

    /// Number of segment files of a partition.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// # log.create_topic("t", 1)?;
    /// assert_eq!(log.segment_count(&weir_core::TopicPartition::new("t", 0))?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn segment_count(&self, tp: &TopicPartition) -> Result<usize> {
        Ok(self.partition(tp)?.segment_count())
    }

    /// The directory holding a partition's segment files.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// # log.create_topic("t", 1)?;
    /// let p = log.partition_dir(&weir_core::TopicPartition::new("t", 0))?;
    /// assert!(p.ends_with("topics/t/0"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn partition_dir(&self, tp: &TopicPartition) -> Result<PathBuf> {
        Ok(self.partition(tp)?.dir().to_path_buf())
    }

    /// Whether a failed write or flush has poisoned the log. A poisoned log refuses
    /// every write with [`Error::Poisoned`] until it is reopened; as [`Log::open`]
    /// returns the already open log while any handle to it exists in this process
    /// (clones, [`Producer`](crate::Producer)s, [`LogConsumer`](crate::LogConsumer)s),
    /// drop them all first: the reopen then runs recovery, which truncates whatever
    /// the failed write left behind.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// assert!(!log.is_poisoned());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_poisoned(&self) -> bool {
        self.inner.shared.is_poisoned()
    }

    fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.inner
            .topics
            .read()
            .values()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }
}

fn validate_partitions(partitions: i32) -> Result<()> {
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err(Error::config(
            "partitions",
            format!("must be between 1 and {MAX_PARTITIONS}, got {partitions}"),
        ));
    }
    Ok(())
}

fn validate_group(group: &str) -> Result<()> {
    if group.is_empty() {
        return Err(Error::config("group.id", "must not be empty"));
    }
    Ok(())
}

fn write_meta(topic_dir: &Path, partitions: i32) -> Result<()> {
    let path = topic_dir.join(TOPIC_META);
    let bytes = serde_json::to_vec(&TopicMeta {
        version: 1,
        partitions,
    })
    .map_err(|e| Error::io(&path, std::io::Error::other(e)))?;
    write_atomic(&path, &bytes)
}

/// Opens every topic found in `<dir>/topics`. A topic directory without metadata is
/// an interrupted `create_topic` and is ignored.
fn load_topics(dir: &Path, shared: &Arc<Shared>) -> Result<BTreeMap<String, Arc<Topic>>> {
    let topics_dir = dir.join("topics");
    let mut topics = BTreeMap::new();
    let entries = match std::fs::read_dir(&topics_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(topics),
        Err(e) => return Err(Error::io(&topics_dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&topics_dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if validate_topic_name(&name).is_err() {
            continue;
        }
        let topic_dir = entry.path();
        let meta_path = topic_dir.join(TOPIC_META);
        let bytes = match std::fs::read(&meta_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&meta_path, e)),
        };
        let meta: TopicMeta = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            path: meta_path.clone(),
            position: 0,
            reason: format!("unreadable topic metadata: {e}"),
        })?;
        if validate_partitions(meta.partitions).is_err() {
            return Err(Error::Corrupt {
                path: meta_path,
                position: 0,
                reason: format!("invalid partition count {}", meta.partitions),
            });
        }
        let mut parts = Vec::with_capacity(meta.partitions as usize);
        for p in 0..meta.partitions {
            let pdir = topic_dir.join(p.to_string());
            if !pdir.is_dir() {
                return Err(Error::Corrupt {
                    path: pdir,
                    position: 0,
                    reason: format!("partition {p} of topic `{name}` is missing its directory"),
                });
            }
            parts.push(Arc::new(Partition::open_or_create(
                TopicPartition::new(name.as_str(), p),
                pdir,
                shared.clone(),
            )?));
        }
        topics.insert(name, Arc::new(Topic { partitions: parts }));
    }
    Ok(topics)
}

/// The background fsync loop of `Durability::Interval`.
fn flusher(weak: Weak<Inner>, stop: std::sync::mpsc::Receiver<()>, every: std::time::Duration) {
    loop {
        match stop.recv_timeout(every) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let Some(inner) = weak.upgrade() else { return };
        if inner.shared.is_poisoned() {
            return;
        }
        if let Err(e) = inner.flush_all() {
            tracing::error!(dir = %inner.dir.display(), error = %e, "background flush failed");
        }
    }
}
