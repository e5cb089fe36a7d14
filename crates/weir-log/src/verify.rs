//! Checking a log directory offline, batch by batch, and cutting a damaged partition
//! back to its last good batch ([`verify`]); reading partition ranges from the files
//! without opening the log ([`read_offsets_unlocked`]).
//!
//! [`Log::open`](crate::Log::open) trusts the index of a sealed segment and scans only
//! the newest one, and refuses to open when it finds damage followed by valid data.
//! [`verify`] reads every batch of every segment of every partition (the same checks
//! as recovery: header, CRC32C, record framing, offsets without gaps), reports each
//! problem with its file and byte position, and with [`Repair::Cut`] truncates a
//! damaged partition after its last good batch, keeping a backup of every byte it cuts.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use weir_core::Error;

use crate::fsutil::{now_ms, sync_dir};
use crate::lock::{acquire, LOCK_FILE};
use crate::segment::{parse_segment_file_name, Segment, TimeScan};
use crate::Result;

/// Whether [`verify`] changes anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repair {
    /// Only read and report.
    No,
    /// Cut every damaged partition after its last good batch (torn tails too), after
    /// writing the cut bytes to backup files beside the segments (`<segment>.cut-<ms>`;
    /// whole later segments are renamed to `<segment>.cut-<ms>`). Recovery ignores
    /// those files; delete them once nothing in them is wanted.
    Cut,
}

/// What kind of problem a partition has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The newest segment ends in an incomplete or invalid batch and nothing valid
    /// follows: an append cut short by a crash. Opening the log truncates it by itself.
    TornTail,
    /// A bad batch in a sealed segment, a bad batch followed by valid data, a gap in
    /// the offsets, or unreadable metadata: opening the log (or reading past it) fails.
    Damage,
}

/// One problem, with where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Torn tail or damage.
    pub kind: ProblemKind,
    /// The file it is in.
    pub path: PathBuf,
    /// The byte position in that file where the first bad batch starts.
    pub position: u64,
    /// What is wrong.
    pub reason: String,
    /// Where a valid batch starts again after the damage in the same file, if one does.
    pub valid_batch_after: Option<u64>,
}

/// What [`Repair::Cut`] did to a partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RepairDone {
    /// The segment cut short, and the length it was cut to.
    pub truncated: PathBuf,
    /// Its new length (the position of the first bad batch).
    pub truncated_to: u64,
    /// Backup files holding every byte cut, in log order.
    pub backups: Vec<PathBuf>,
    /// Bytes moved to the backups.
    pub cut_bytes: u64,
    /// The partition's end offset after the repair: every record before it is intact.
    pub next_offset: i64,
}

/// The verdict on one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// The partition's directory.
    pub dir: PathBuf,
    /// Segment files read.
    pub segments: usize,
    /// Bytes of valid batches.
    pub valid_bytes: u64,
    /// First offset of the partition.
    pub log_start: i64,
    /// The offset after the last good record (before any repair).
    pub valid_end: i64,
    /// The first problem found (reading stops there: what follows is not trusted).
    pub problem: Option<Problem>,
    /// What the repair did, when one was asked for and needed.
    pub repair: Option<RepairDone>,
}

/// The result of [`verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The log directory.
    pub dir: PathBuf,
    /// Every partition of every topic, by topic and partition.
    pub partitions: Vec<PartitionReport>,
    /// Problems outside partitions (a topic's unreadable `topic.json`); never repaired.
    pub other_problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether the log would open and read cleanly now: no damage left (repaired
    /// damage and torn tails, which recovery truncates, do not count).
    pub fn is_healthy(&self) -> bool {
        self.other_problems.is_empty()
            && self.partitions.iter().all(|p| {
                p.repair.is_some()
                    || p.problem
                        .as_ref()
                        .is_none_or(|x| x.kind == ProblemKind::TornTail)
            })
    }

    /// Every problem found, repaired or not.
    pub fn problems(&self) -> impl Iterator<Item = &Problem> {
        self.other_problems
            .iter()
            .chain(self.partitions.iter().filter_map(|p| p.problem.as_ref()))
    }
}

/// Whether `dir` looks like a log directory (it has a `topics/` directory or the
/// `LOCK` file every opened log has). Checks before touching a directory someone
/// named by mistake.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// assert!(!weir_log::is_log_dir(dir.path()));
/// weir_log::Log::open(dir.path(), Default::default())?;
/// assert!(weir_log::is_log_dir(dir.path()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn is_log_dir(dir: impl AsRef<Path>) -> bool {
    let dir = dir.as_ref();
    dir.join("topics").is_dir() || dir.join(LOCK_FILE).is_file()
}

fn not_a_log(dir: &Path) -> Error {
    let what = if dir.is_dir() {
        "not a weir log directory (it has neither a topics/ directory nor a LOCK file)"
    } else if dir.exists() {
        "not a directory"
    } else {
        "log directory does not exist"
    };
    Error::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, what))
}

/// Reads every batch of every segment of every partition in the log at `dir` and
/// reports what is wrong where; with [`Repair::Cut`], cuts each damaged partition
/// after its last good batch (backups beside the segments).
///
/// It takes the directory's lock, so it fails (naming the holder's pid) while a
/// process has the log open. `progress(done, total)` is called with bytes read.
///
/// ```
/// use weir_core::TopicPartition;
/// use weir_log::{verify, Log, NewRecord, Repair};
///
/// let dir = tempfile::tempdir()?;
/// {
///     let log = Log::open(dir.path(), Default::default())?;
///     log.create_topic("orders", 1)?;
///     log.append(&TopicPartition::new("orders", 0), &[NewRecord::new("k", "v")])?;
/// } // closed: verify needs the directory to itself
/// let report = verify(dir.path(), Repair::No, &mut |_, _| {})?;
/// assert!(report.is_healthy());
/// assert_eq!(report.partitions[0].valid_end, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify(
    dir: impl AsRef<Path>,
    repair: Repair,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport> {
    let dir = dir.as_ref();
    if !is_log_dir(dir) {
        return Err(not_a_log(dir));
    }
    let dir = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    let _lock = acquire(&dir)?;
    let mut other_problems = Vec::new();
    let mut todo = Vec::new();
    for (topic, topic_dir) in topic_dirs(&dir)? {
        match read_partition_count(&topic_dir) {
            Ok(Some(n)) => {
                for p in 0..n {
                    todo.push((topic.clone(), p, topic_dir.join(p.to_string())));
                }
            }
            Ok(None) => {} // an interrupted create_topic: recovery ignores it too
            Err(problem) => other_problems.push(problem),
        }
    }
    let mut total = 0u64;
    let mut listed = Vec::with_capacity(todo.len());
    for (topic, p, pdir) in todo {
        let bases = segment_bases(&pdir)?;
        for base in bases.iter().flatten() {
            total += file_len(&pdir.join(crate::segment::segment_file_name(*base)))?;
        }
        listed.push((topic, p, pdir, bases));
    }
    let mut done = 0u64;
    progress(0, total);
    let mut partitions = Vec::with_capacity(listed.len());
    for (topic, partition, pdir, bases) in listed {
        let report = match bases {
            None => PartitionReport {
                topic,
                partition,
                problem: Some(Problem {
                    kind: ProblemKind::Damage,
                    path: pdir.clone(),
                    position: 0,
                    reason: format!("partition {partition}'s directory is missing"),
                    valid_batch_after: None,
                }),
                dir: pdir,
                segments: 0,
                valid_bytes: 0,
                log_start: 0,
                valid_end: 0,
                repair: None,
            },
            Some(bases) => {
                let mut r = verify_partition(topic, partition, pdir, &bases, &mut |n| {
                    done += n;
                    progress(done, total);
                })?;
                if repair == Repair::Cut {
                    r.repair = repair_partition(&r, &bases)?;
                }
                r
            }
        };
        partitions.push(report);
    }
    Ok(VerifyReport {
        dir,
        partitions,
        other_problems,
    })
}

/// `(topic, its directory)` for every directory under `<dir>/topics`, sorted.
fn topic_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let topics = dir.join("topics");
    let entries = match std::fs::read_dir(&topics) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&topics, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&topics, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if crate::validate_topic_name(&name).is_ok() && entry.path().is_dir() {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The partition count in `topic.json`; `Ok(None)` if there is none.
fn read_partition_count(topic_dir: &Path) -> std::result::Result<Option<i32>, Problem> {
    let path = topic_dir.join("topic.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Problem {
                kind: ProblemKind::Damage,
                path,
                position: 0,
                reason: format!("cannot read topic metadata: {e}"),
                valid_batch_after: None,
            })
        }
    };
    let parsed: serde_json::Result<serde_json::Value> = serde_json::from_slice(&bytes);
    let n = parsed
        .ok()
        .and_then(|v| v.get("partitions").and_then(serde_json::Value::as_i64))
        .and_then(|n| i32::try_from(n).ok())
        .filter(|n| (1..=crate::MAX_PARTITIONS).contains(n));
    match n {
        Some(n) => Ok(Some(n)),
        None => Err(Problem {
            kind: ProblemKind::Damage,
            path,
            position: 0,
            reason: "unreadable topic metadata (expected {\"version\":1,\"partitions\":N})".into(),
            valid_batch_after: None,
        }),
    }
}

/// The base offsets of a partition's segments, sorted; `None` if the directory is
/// missing.
fn segment_bases(pdir: &Path) -> Result<Option<Vec<i64>>> {
    let entries = match std::fs::read_dir(pdir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(pdir, e)),
    };
    let mut bases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(pdir, e))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(Some(bases))
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len())
}

fn verify_partition(
    topic: String,
    partition: i32,
    pdir: PathBuf,
    bases: &[i64],
    progress: &mut dyn FnMut(u64),
) -> Result<PartitionReport> {
    let mut report = PartitionReport {
        topic,
        partition,
        segments: bases.len(),
        valid_bytes: 0,
        log_start: bases.first().copied().unwrap_or(0),
        valid_end: bases.first().copied().unwrap_or(0),
        problem: None,
        repair: None,
        dir: pdir,
    };
    let last = bases.len().saturating_sub(1);
    for (i, &base) in bases.iter().enumerate() {
        let (seg, scan, len) = Segment::open_active(&report.dir, base)?;
        progress(len);
        if i > 0 && base != report.valid_end {
            report.problem = Some(Problem {
                kind: ProblemKind::Damage,
                path: seg.path.clone(),
                position: 0,
                reason: format!(
                    "segment starts at offset {base} but the previous segment ends at {}: records are missing",
                    report.valid_end
                ),
                valid_batch_after: None,
            });
            break;
        }
        report.valid_bytes += scan.end;
        report.valid_end = scan.next_offset;
        if let Some((position, reason)) = scan.failure {
            let after = seg.valid_batch_after(position, len, scan.next_offset)?;
            let kind = if i == last && after.is_none() {
                ProblemKind::TornTail
            } else {
                ProblemKind::Damage
            };
            report.problem = Some(Problem {
                kind,
                path: seg.path.clone(),
                position,
                reason,
                valid_batch_after: after,
            });
            break;
        }
    }
    Ok(report)
}

/// Cuts the partition at its problem: the bytes of the damaged segment from the
/// problem's position go to `<segment>.cut-<ms>`, later segments are renamed to
/// `<segment>.cut-<ms>` (and their index files removed), then the segment is truncated.
/// Backups are fsynced before anything is cut, so a crash during the repair loses
/// nothing (run it again).
fn repair_partition(report: &PartitionReport, bases: &[i64]) -> Result<Option<RepairDone>> {
    let Some(problem) = &report.problem else {
        return Ok(None);
    };
    let stamp = now_ms();
    let pdir = &report.dir;
    let Some(at) = bases
        .iter()
        .position(|b| pdir.join(crate::segment::segment_file_name(*b)) == problem.path)
    else {
        return Ok(None); // not a segment (a missing directory): nothing to cut
    };
    // A segment that does not continue its predecessor is cut whole.
    let (first_whole, truncate) = if problem.position == 0 && at > 0 {
        (at, None)
    } else {
        (at + 1, Some((problem.path.clone(), problem.position)))
    };
    let mut backups = Vec::new();
    let mut cut_bytes = 0;
    if let Some((path, pos)) = &truncate {
        let backup = backup_name(path, stamp);
        cut_bytes += copy_tail(path, *pos, &backup)?;
        backups.push(backup);
    }
    for &base in &bases[first_whole..] {
        let path = pdir.join(crate::segment::segment_file_name(base));
        let backup = backup_name(&path, stamp);
        cut_bytes += file_len(&path)?;
        std::fs::rename(&path, &backup).map_err(|e| Error::io(&path, e))?;
        backups.push(backup);
        remove_index(&path)?;
    }
    sync_dir(pdir)?;
    let truncated = match truncate {
        Some((path, pos)) => {
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            f.set_len(pos).map_err(|e| Error::io(&path, e))?;
            f.sync_all().map_err(|e| Error::io(&path, e))?;
            remove_index(&path)?;
            (path, pos)
        }
        None => {
            // The previous segment becomes the newest one, whole.
            let prev = pdir.join(crate::segment::segment_file_name(bases[at - 1]));
            remove_index(&prev)?;
            let len = file_len(&prev)?;
            (prev, len)
        }
    };
    sync_dir(pdir)?;
    tracing::warn!(
        partition_dir = %pdir.display(),
        segment = %truncated.0.display(),
        position = truncated.1,
        cut_bytes,
        "repaired a damaged partition: cut after the last good batch"
    );
    Ok(Some(RepairDone {
        truncated: truncated.0,
        truncated_to: truncated.1,
        backups,
        cut_bytes,
        next_offset: report.valid_end,
    }))
}

fn backup_name(segment: &Path, stamp: i64) -> PathBuf {
    let mut name = segment.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".cut-{stamp}"));
    segment.with_file_name(name)
}

/// Copies `path[from..]` to a new file `to` and fsyncs it; returns the bytes copied.
fn copy_tail(path: &Path, from: u64, to: &Path) -> Result<u64> {
    let mut src = File::open(path).map_err(|e| Error::io(path, e))?;
    src.seek(SeekFrom::Start(from))
        .map_err(|e| Error::io(path, e))?;
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|e| Error::io(to, e))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let got = src.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if got == 0 {
            break;
        }
        dst.write_all(&buf[..got]).map_err(|e| Error::io(to, e))?;
        n += got as u64;
    }
    dst.sync_all().map_err(|e| Error::io(to, e))?;
    Ok(n)
}

fn remove_index(segment: &Path) -> Result<()> {
    let index = segment.with_extension("index");
    match std::fs::remove_file(&index) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&index, e)),
    }
}

/// `partition → (log start, log end)` of `topic` in the log at `dir`, read from the
/// segment files without opening the log or taking its lock, so it works while a job
/// has the log open. The end is that of the complete batches on disk when read (an
/// append in progress is not counted); only the newest segment of each partition is
/// scanned.
///
/// ```
/// use weir_core::TopicPartition;
/// use weir_log::{read_offsets_unlocked, Log, NewRecord};
///
/// let dir = tempfile::tempdir()?;
/// let log = Log::open(dir.path(), Default::default())?;
/// log.create_topic("orders", 2)?;
/// log.append(&TopicPartition::new("orders", 1), &[NewRecord::value("a"), NewRecord::value("b")])?;
/// let ranges = read_offsets_unlocked(dir.path(), "orders")?; // the log is still open
/// assert_eq!(ranges[&0], (0, 0));
/// assert_eq!(ranges[&1], (0, 2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_offsets_unlocked(
    dir: impl AsRef<Path>,
    topic: &str,
) -> Result<BTreeMap<i32, (i64, i64)>> {
    let dir = dir.as_ref();
    if !is_log_dir(dir) {
        return Err(not_a_log(dir));
    }
    crate::validate_topic_name(topic)?;
    let topic_dir = dir.join("topics").join(topic);
    let count = match read_partition_count(&topic_dir) {
        Ok(Some(n)) => n,
        Ok(None) => {
            return Err(Error::UnknownTopic {
                topic: topic.to_owned(),
            })
        }
        Err(p) => {
            return Err(Error::Corrupt {
                path: p.path,
                position: p.position,
                reason: p.reason,
            })
        }
    };
    let mut out = BTreeMap::new();
    for p in 0..count {
        let pdir = topic_dir.join(p.to_string());
        let bases = segment_bases(&pdir)?.unwrap_or_default();
        let range = match (bases.first(), bases.last()) {
            (Some(&first), Some(&last)) => {
                let (_, scan, _) = Segment::open_active(&pdir, last)?;
                (first, scan.next_offset)
            }
            _ => (0, 0),
        };
        out.insert(p, range);
    }
    Ok(out)
}

/// `partition → offset` of the first record of each partition of `topic` whose
/// timestamp is at or after `timestamp_ms` (milliseconds since the Unix epoch), or the
/// partition's end if every record is older: what Kafka's `ListOffsets` by time
/// answers, for `weir offsets reset --to-datetime`. Read from the segment files
/// without the log's lock, like [`read_offsets_unlocked`]; a torn tail of the newest
/// segment ends the search, damage in an older one is [`Error::Corrupt`].
///
/// ```
/// use weir_core::TopicPartition;
/// use weir_log::{offsets_for_time_unlocked, Log, NewRecord};
///
/// let dir = tempfile::tempdir()?;
/// let log = Log::open(dir.path(), Default::default())?;
/// log.create_topic("orders", 1)?;
/// let tp = TopicPartition::new("orders", 0);
/// let at = |ts| NewRecord::value("x").with_timestamp(ts);
/// log.append(&tp, &[at(1_000), at(2_000), at(3_000)])?;
/// assert_eq!(offsets_for_time_unlocked(dir.path(), "orders", 1_500)?[&0], 1);
/// assert_eq!(offsets_for_time_unlocked(dir.path(), "orders", 9_999)?[&0], 3); // the end
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn offsets_for_time_unlocked(
    dir: impl AsRef<Path>,
    topic: &str,
    timestamp_ms: i64,
) -> Result<BTreeMap<i32, i64>> {
    let dir = dir.as_ref();
    let ranges = read_offsets_unlocked(dir, topic)?;
    let topic_dir = dir.join("topics").join(topic);
    let mut out = BTreeMap::new();
    for (&p, &(_, end)) in &ranges {
        let pdir = topic_dir.join(p.to_string());
        let bases = segment_bases(&pdir)?.unwrap_or_default();
        let mut found = end;
        for (i, &base) in bases.iter().enumerate() {
            let (seg, len) = Segment::open_read_only(&pdir, base)?;
            match seg.first_at_or_after(len, timestamp_ms)? {
                TimeScan::Found(offset) => {
                    found = offset.min(end);
                    break;
                }
                TimeScan::NotFound {
                    damage: Some((position, reason)),
                } if i + 1 < bases.len() => {
                    return Err(Error::Corrupt {
                        path: pdir.join(crate::segment::segment_file_name(base)),
                        position,
                        reason,
                    })
                }
                TimeScan::NotFound { .. } => {}
            }
        }
        out.insert(p, found);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Log, LogOptions, NewRecord};
    use weir_core::TopicPartition;

    /// A closed log of one topic, `batches` batches of 10 records on partition 0, in
    /// segments of `segment_bytes`.
    fn make_log(dir: &Path, batches: i64, segment_bytes: u64) {
        let log = Log::open(dir, LogOptions::default().with_segment_bytes(segment_bytes)).unwrap();
        log.create_topic("t", 2).unwrap();
        let tp = TopicPartition::new("t", 0);
        for b in 0..batches {
            let recs: Vec<NewRecord> = (0..10)
                .map(|i| NewRecord::new(format!("k{b}-{i}"), vec![b as u8; 200]))
                .collect();
            log.append(&tp, &recs).unwrap();
        }
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let pdir = dir.join("topics/t/0");
        let mut v: Vec<PathBuf> = std::fs::read_dir(&pdir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        v.sort();
        v
    }

    fn flip(path: &Path, at: u64) {
        let mut b = std::fs::read(path).unwrap();
        b[at as usize] ^= 0x40;
        std::fs::write(path, b).unwrap();
    }

    fn all_records(dir: &Path) -> Vec<i64> {
        let log = Log::open_existing(dir, LogOptions::default()).unwrap();
        let tp = TopicPartition::new("t", 0);
        let (start, end) = log.offsets(&tp).unwrap();
        let mut out = Vec::new();
        let mut at = start;
        while at < end {
            let recs = log.read(&tp, at, 1000, 1 << 20).unwrap();
            at = recs.last().unwrap().offset + 1;
            out.extend(recs.iter().map(|r| r.offset));
        }
        out
    }

    #[test]
    fn a_clean_log_is_healthy() {
        let dir = tempfile::tempdir().unwrap();
        make_log(dir.path(), 20, 16 << 10);
        let mut calls = 0;
        let r = verify(dir.path(), Repair::No, &mut |_, _| calls += 1).unwrap();
        assert!(r.is_healthy(), "{r:?}");
        assert_eq!(r.partitions.len(), 2);
        assert_eq!(r.partitions[0].valid_end, 200);
        assert!(r.partitions[0].segments > 1);
        assert!(calls > 1);
    }

    #[test]
    fn a_flipped_byte_in_a_sealed_segment_is_found_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        make_log(dir.path(), 40, 16 << 10);
        let segs = segments(dir.path());
        assert!(segs.len() >= 3);
        // A byte in the second batch of the first (sealed) segment.
        let first_len = {
            let b = std::fs::read(&segs[0]).unwrap();
            u64::from(u32::from_le_bytes([b[4], b[5], b[6], b[7]])) + 8
        };
        flip(&segs[0], first_len + 100);
        let r = verify(dir.path(), Repair::No, &mut |_, _| {}).unwrap();
        assert!(!r.is_healthy());
        let p = r.partitions[0].problem.clone().unwrap();
        assert_eq!(p.kind, ProblemKind::Damage);
        assert_eq!(p.path, segs[0].canonicalize().unwrap());
        assert_eq!(p.position, first_len);
        assert!(p.reason.contains("CRC32C"), "{}", p.reason);
        assert_eq!(r.partitions[0].valid_end, 10);

        let r = verify(dir.path(), Repair::Cut, &mut |_, _| {}).unwrap();
        let done = r.partitions[0].repair.clone().unwrap();
        assert_eq!(done.truncated_to, first_len);
        assert_eq!(done.next_offset, 10);
        assert!(done.backups.len() >= 3);
        let cut: u64 = done
            .backups
            .iter()
            .map(|b| std::fs::metadata(b).unwrap().len())
            .sum();
        assert_eq!(cut, done.cut_bytes);
        assert!(r.is_healthy());
        assert_eq!(all_records(dir.path()), (0..10).collect::<Vec<_>>());
        assert!(verify(dir.path(), Repair::No, &mut |_, _| {})
            .unwrap()
            .is_healthy());
    }

    #[test]
    fn damage_in_the_newest_segment_followed_by_data_is_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        make_log(dir.path(), 5, 1 << 20);
        let seg = segments(dir.path()).remove(0);
        flip(&seg, 40);
        assert!(Log::open_existing(dir.path(), LogOptions::default()).is_err());
        let r = verify(dir.path(), Repair::Cut, &mut |_, _| {}).unwrap();
        let p = r.partitions[0].problem.clone().unwrap();
        assert_eq!((p.kind, p.position), (ProblemKind::Damage, 0));
        assert!(p.valid_batch_after.is_some());
        assert_eq!(r.partitions[0].repair.clone().unwrap().next_offset, 0);
        assert!(all_records(dir.path()).is_empty());
    }

    #[test]
    fn a_torn_tail_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        make_log(dir.path(), 3, 1 << 20);
        let seg = segments(dir.path()).remove(0);
        let len = std::fs::metadata(&seg).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 7).unwrap();
        let r = verify(dir.path(), Repair::No, &mut |_, _| {}).unwrap();
        let p = r.partitions[0].problem.clone().unwrap();
        assert_eq!(p.kind, ProblemKind::TornTail);
        assert!(r.is_healthy());
        assert_eq!(r.partitions[0].valid_end, 20);
    }

    #[test]
    fn a_missing_segment_is_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        make_log(dir.path(), 40, 16 << 10);
        let segs: Vec<PathBuf> = segments(dir.path())
            .iter()
            .map(|p| p.canonicalize().unwrap())
            .collect();
        std::fs::remove_file(&segs[1]).unwrap();
        let r = verify(dir.path(), Repair::Cut, &mut |_, _| {}).unwrap();
        let p = r.partitions[0].problem.clone().unwrap();
        assert_eq!(p.path, segs[2]);
        assert!(p.reason.contains("records are missing"), "{}", p.reason);
        let kept = r.partitions[0].valid_end;
        assert_eq!(all_records(dir.path()), (0..kept).collect::<Vec<_>>());
    }

    #[test]
    fn not_a_log_directory_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let e = verify(dir.path(), Repair::Cut, &mut |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("not a weir log directory"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn time_lookup_spans_segments_and_takes_the_first_record_at_or_after() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default().with_segment_bytes(1024)).unwrap();
        log.create_topic("t", 2).unwrap();
        let tp = TopicPartition::new("t", 0);
        // 30 batches of 5 records, 10 ms apart, over several 1 KiB segments; the
        // second record of every batch is 1 s late (timestamps are not monotonic).
        for b in 0..30i64 {
            let recs: Vec<NewRecord> = (0..5i64)
                .map(|i| {
                    let late = if i == 1 { 1_000 } else { 0 };
                    NewRecord::value(vec![0u8; 40]).with_timestamp(10_000 + (b * 5 + i) * 10 - late)
                })
                .collect();
            log.append(&tp, &recs).unwrap();
        }
        assert!(log.segment_count(&tp).unwrap() > 3);
        let at = |ts| offsets_for_time_unlocked(dir.path(), "t", ts).unwrap();
        assert_eq!(at(0)[&0], 0);
        assert_eq!(at(10_000)[&0], 0);
        // Offset 77 has 10_770; 76 (late) has 9_760; 75 has 10_750.
        assert_eq!(at(10_751)[&0], 77);
        assert_eq!(at(11_490)[&0], 149);
        assert_eq!(at(11_491)[&0], 150, "after every record: the end");
        assert_eq!(at(11_491)[&1], 0, "an empty partition: its end");
        drop(log);
        let e = offsets_for_time_unlocked(dir.path(), "nope", 0).unwrap_err();
        assert!(matches!(e, Error::UnknownTopic { .. }), "{e}");
    }
}
