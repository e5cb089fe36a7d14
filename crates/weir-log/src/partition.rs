//! One partition: a directory of segments, its recovery, appends, reads, rolls and
//! retention.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use weir_core::{Error, Record, TopicPartition};

use crate::codec::{
    decode_records, encode_batch, verify_crc, BatchHeader, EncodeError, BATCH_HEADER,
};
use crate::fsutil::{create_dir_durable, now_ms, sync_dir};
use crate::segment::{parse_segment_file_name, IndexEntry, Segment, INDEX_INTERVAL};
use crate::shared::Shared;
use crate::{Durability, NewRecord, Result};

/// Most segments one read call visits.
const MAX_SEGMENTS_PER_READ: usize = 32;
/// Largest buffer one read call fills at a time.
const READ_CHUNK_MAX: usize = 1 << 20;

#[derive(Debug)]
struct Writer {
    active: Arc<Segment>,
    /// Bytes written to the active segment (may be ahead of what readers see until the
    /// fsync in `Durability::Always`).
    written: u64,
    last_indexed: u64,
    next_offset: i64,
    buf: Vec<u8>,
    /// Sealed segments not fsynced yet (`Durability::Os` only).
    unsynced: Vec<Arc<Segment>>,
}

/// A partition of a topic.
#[derive(Debug)]
pub(crate) struct Partition {
    tp: TopicPartition,
    dir: PathBuf,
    shared: Arc<Shared>,
    writer: Mutex<Writer>,
    /// Segments oldest first; the last one is the active segment.
    segments: RwLock<Vec<Arc<Segment>>>,
    dirty: AtomicBool,
}

impl Partition {
    /// Opens the partition in `dir`, creating the directory and a first segment if
    /// needed, recovering the newest segment (a torn tail is truncated; corruption
    /// followed by valid data is [`Error::Corrupt`]).
    pub(crate) fn open_or_create(
        tp: TopicPartition,
        dir: PathBuf,
        shared: Arc<Shared>,
    ) -> Result<Partition> {
        create_dir_durable(&dir)?;
        let mut bases = Vec::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(base) = parse_segment_file_name(name) {
                bases.push(base);
            } else if name.ends_with(".tmp") {
                // An index write interrupted by a crash.
                let _ = std::fs::remove_file(entry.path());
            }
        }
        bases.sort_unstable();
        let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len().max(1));
        if bases.is_empty() {
            let seg = Segment::create(&dir, 0)?;
            sync_dir(&dir)?;
            segments.push(Arc::new(seg));
        } else {
            let last = bases.len() - 1;
            for (i, &base) in bases.iter().enumerate() {
                let seg = if i < last {
                    Segment::open_sealed(&dir, base)?
                } else {
                    recover_active(&dir, base)?
                };
                if let Some(prev) = segments.last() {
                    if prev.next_offset() != seg.base {
                        return Err(Error::Corrupt {
                            path: seg.path.clone(),
                            position: 0,
                            reason: format!(
                                "segment starts at offset {} but the previous segment ends at {}: records are missing",
                                seg.base,
                                prev.next_offset()
                            ),
                        });
                    }
                }
                segments.push(Arc::new(seg));
            }
        }
        let active = segments
            .last()
            .cloned()
            .ok_or_else(|| Error::io(&dir, std::io::Error::other("partition without segments")))?;
        let writer = Writer {
            written: active.len(),
            last_indexed: active.lookup(i64::MAX),
            next_offset: active.next_offset(),
            active,
            buf: Vec::new(),
            unsynced: Vec::new(),
        };
        Ok(Partition {
            tp,
            dir,
            shared,
            writer: Mutex::new(writer),
            segments: RwLock::new(segments),
            dirty: AtomicBool::new(false),
        })
    }

    /// `(log start, log end)`.
    pub(crate) fn offsets(&self) -> (i64, i64) {
        let segs = self.segments.read();
        let end = segs.last().map_or(0, |s| s.next_offset());
        let start = segs.first().map_or(end, |s| s.base);
        (start, end)
    }

    /// Total bytes of the partition's segments.
    pub(crate) fn size_bytes(&self) -> u64 {
        self.segments.read().iter().map(|s| s.len()).sum()
    }

    /// Number of segment files.
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.read().len()
    }

    /// Appends one batch; returns the offset of its first record.
    pub(crate) fn append(&self, records: &[NewRecord]) -> Result<i64> {
        let mut w = self.writer.lock();
        self.shared.check_poisoned()?;
        if records.is_empty() {
            return Ok(w.next_offset);
        }
        let base = w.next_offset;
        let mut buf = std::mem::take(&mut w.buf);
        let encoded = encode_batch(&mut buf, base, records, now_ms());
        let result = match encoded {
            Ok(()) => self.append_encoded(&mut w, &buf, base, records.len()),
            Err(EncodeError::TooLarge(n)) => Err(Error::Backend {
                backend: "log",
                message: format!(
                    "batch of {n} bytes for {} exceeds the maximum of {} bytes",
                    self.tp,
                    crate::codec::MAX_BATCH_BYTES
                ),
                retriable: false,
            }),
            Err(EncodeError::TooMany) => Err(Error::Backend {
                backend: "log",
                message: format!("too many records in one batch for {}", self.tp),
                retriable: false,
            }),
        };
        if buf.capacity() <= 4 << 20 {
            w.buf = buf;
        }
        result
    }

    fn append_encoded(&self, w: &mut Writer, batch: &[u8], base: i64, count: usize) -> Result<i64> {
        let len = batch.len() as u64;
        if w.written > 0 && w.written + len > self.shared.options.segment_bytes {
            self.roll(w)?;
        }
        let pos = w.written;
        #[cfg(test)]
        let write = if self.shared.take_injected_write_failure() {
            let _ = w.active.write_at(&batch[..batch.len() / 2], pos);
            Err(std::io::Error::other("injected short write"))
        } else {
            w.active.write_at(batch, pos)
        };
        #[cfg(not(test))]
        let write = w.active.write_at(batch, pos);
        if let Err(e) = write {
            self.shared.poison(&w.active.path);
            return Err(Error::io(&w.active.path, e));
        }
        if matches!(self.shared.options.durability, Durability::Always) {
            self.sync_segment(&w.active)?;
        } else {
            self.dirty.store(true, Ordering::Release);
        }
        let entry = (pos > 0 && pos - w.last_indexed >= INDEX_INTERVAL).then(|| {
            w.last_indexed = pos;
            IndexEntry {
                rel: (base - w.active.base) as u32,
                pos: pos as u32,
            }
        });
        let max_ts = BatchHeader::parse(batch).map_or(i64::MIN, |h| h.max_timestamp);
        w.written = pos + len;
        w.next_offset = base + count as i64;
        w.active.publish(w.written, w.next_offset, max_ts, entry);
        Ok(base)
    }

    /// fsyncs a segment; a failure poisons the log.
    fn sync_segment(&self, seg: &Segment) -> Result<()> {
        let result = {
            #[cfg(test)]
            {
                if self.shared.take_injected_sync_failure() {
                    Err(std::io::Error::other("injected fsync failure"))
                } else {
                    seg.sync()
                }
            }
            #[cfg(not(test))]
            {
                seg.sync()
            }
        };
        result.map_err(|e| {
            self.shared.poison(&seg.path);
            tracing::error!(path = %seg.path.display(), error = %e, "fsync failed: the log is poisoned");
            Error::io(&seg.path, e)
        })
    }

    /// Seals the active segment (fsync, index file) and starts a new one.
    fn roll(&self, w: &mut Writer) -> Result<()> {
        let old = w.active.clone();
        match self.shared.options.durability {
            Durability::Always => {}
            Durability::Interval(_) => self.sync_segment(&old)?,
            // Os mode promises nothing against power loss: the sealed segment is
            // fsynced by the next flush() or the close, not on the append path.
            Durability::Os => w.unsynced.push(old.clone()),
        }
        if let Err(e) = old.write_index() {
            self.shared.poison(&old.index_path);
            return Err(e);
        }
        let new = Arc::new(Segment::create(&self.dir, w.next_offset)?);
        if let Err(e) = sync_dir(&self.dir) {
            self.shared.poison(&self.dir);
            return Err(e);
        }
        self.segments.write().push(new.clone());
        w.active = new;
        w.written = 0;
        w.last_indexed = 0;
        if let Err(e) = self.apply_retention() {
            tracing::warn!(partition = %self.tp, error = %e, "retention after a segment roll failed");
        }
        Ok(())
    }

    /// fsyncs the active segment if it was written since the last fsync.
    pub(crate) fn flush(&self) -> Result<()> {
        if !self.dirty.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut w = self.writer.lock();
        self.shared.check_poisoned()?;
        if self.dirty.swap(false, Ordering::AcqRel) {
            for seg in std::mem::take(&mut w.unsynced) {
                self.sync_segment(&seg)?;
            }
            self.sync_segment(&w.active)?;
        }
        Ok(())
    }

    /// Deletes whole old segments beyond the retention limits (never the active one).
    /// Returns how many were deleted.
    pub(crate) fn apply_retention(&self) -> Result<usize> {
        let options = &self.shared.options;
        if options.retention_bytes.is_none() && options.retention_age.is_none() {
            return Ok(0);
        }
        let cutoff = options
            .retention_age
            .map(|age| now_ms().saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)));
        let victims: Vec<Arc<Segment>> = {
            let mut segs = self.segments.write();
            let mut total: u64 = segs.iter().map(|s| s.len()).sum();
            let mut n = 0;
            while n + 1 < segs.len() {
                let s = &segs[n];
                let by_size = options
                    .retention_bytes
                    .is_some_and(|limit| total - s.len() >= limit);
                let by_age = cutoff.is_some_and(|c| s.max_timestamp() < c);
                if !(by_size || by_age) {
                    break;
                }
                total -= s.len();
                n += 1;
            }
            segs.drain(..n).collect()
        };
        if victims.is_empty() {
            return Ok(0);
        }
        for s in &victims {
            tracing::debug!(partition = %self.tp, segment = %s.path.display(), "retention deletes segment");
            std::fs::remove_file(&s.path).map_err(|e| Error::io(&s.path, e))?;
            match std::fs::remove_file(&s.index_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&s.index_path, e)),
            }
        }
        sync_dir(&self.dir)?;
        Ok(victims.len())
    }

    /// Reads up to `max_records` records from `offset`; see [`crate::Log::read`].
    pub(crate) fn read(
        &self,
        offset: i64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>> {
        let (end, segs) = {
            let segs = self.segments.read();
            let end = segs.last().map_or(0, |s| s.next_offset());
            let start = segs.first().map_or(end, |s| s.base);
            if offset < start || offset > end {
                return Err(Error::OffsetOutOfRange {
                    partition: self.tp.clone(),
                    offset,
                    log_start: start,
                    log_end: end,
                });
            }
            if offset == end || max_records == 0 {
                return Ok(Vec::new());
            }
            let first = segs.partition_point(|s| s.base <= offset).saturating_sub(1);
            // A read spans few segments: cloning them all would cost a reference
            // count per segment of the partition.
            let last = segs.len().min(first + MAX_SEGMENTS_PER_READ);
            (end, segs[first..last].to_vec())
        };
        let avg_record = segs.first().map_or(64, |s| {
            (s.len() / (s.next_offset() - s.base).max(1) as u64).max(1) as usize
        });
        let mut out = Vec::with_capacity(max_records.min(max_bytes / avg_record + 1).min(8192));
        let mut budget = max_bytes;
        let mut expect: Option<i64> = None;
        'segments: for (i, seg) in segs.iter().enumerate() {
            let seg_len = seg.len();
            let mut pos = if i == 0 { seg.lookup(offset) } else { 0 };
            let records_in_seg = (seg.next_offset() - seg.base).max(1) as u64;
            let avg = (seg_len / records_in_seg).max(1) as usize;
            while pos < seg_len {
                if out.len() >= max_records || (budget == 0 && !out.is_empty()) {
                    break 'segments;
                }
                let remaining = seg_len - pos;
                let estimate = (max_records - out.len())
                    .saturating_mul(avg)
                    .saturating_add(INDEX_INTERVAL as usize + BATCH_HEADER);
                let mut want = budget.min(READ_CHUNK_MAX).min(estimate).max(BATCH_HEADER);
                want = (want as u64).min(remaining) as usize;
                let mut chunk = seg.read_at(pos, want)?;
                // Make sure the chunk starts with a complete batch.
                if let Some(h) = BatchHeader::parse(&chunk) {
                    if h.sanity().is_none() && h.total_len > chunk.len() {
                        if !out.is_empty() && h.total_len > budget {
                            break 'segments; // the next batch does not fit the budget
                        }
                        if pos + h.total_len as u64 > seg_len {
                            return Err(corrupt(
                                seg,
                                pos,
                                "batch runs past the end of the segment".into(),
                            ));
                        }
                        chunk = seg.read_at(pos, h.total_len)?;
                    }
                }
                let buf = chunk;
                let mut p = 0usize;
                while p < buf.len() {
                    let Some(h) = BatchHeader::parse(&buf[p..]) else {
                        break;
                    };
                    if let Some(reason) = h.sanity() {
                        return Err(corrupt(seg, pos + p as u64, reason));
                    }
                    if p + h.total_len > buf.len() {
                        break;
                    }
                    if !out.is_empty() && h.total_len > budget {
                        break 'segments;
                    }
                    if h.next_offset() > offset {
                        let at = pos + p as u64;
                        let vh = verify_crc(&buf[p..p + h.total_len])
                            .map_err(|b| b.into_error(&seg.path, at))?;
                        // Offsets must continue exactly where the read started
                        // or the previous batch ended.
                        let continues = match expect {
                            Some(e) => vh.base_offset == e,
                            None => vh.base_offset <= offset,
                        };
                        if !continues {
                            return Err(corrupt(
                                seg,
                                at,
                                format!(
                                    "batch starts at offset {} where {} was expected",
                                    vh.base_offset,
                                    expect.unwrap_or(offset)
                                ),
                            ));
                        }
                        expect = Some(vh.next_offset());
                        decode_records(
                            &buf,
                            p,
                            &vh,
                            &self.tp,
                            offset,
                            max_records - out.len(),
                            &mut out,
                        )
                        .map_err(|b| b.into_error(&seg.path, pos + p as u64))?;
                        budget = budget.saturating_sub(h.total_len);
                    }
                    p += h.total_len;
                    if out.len() >= max_records || (budget == 0 && !out.is_empty()) {
                        break 'segments;
                    }
                }
                if p == 0 {
                    return Err(corrupt(
                        seg,
                        pos,
                        "no complete batch where one should start".into(),
                    ));
                }
                pos += p as u64;
            }
        }
        if out.is_empty() && offset < end {
            // Visible data exists but nothing was decoded: a gap in the offsets.
            return Err(Error::Corrupt {
                path: self.dir.clone(),
                position: 0,
                reason: format!(
                    "no record found at offset {offset} of {} (log end {end})",
                    self.tp
                ),
            });
        }
        Ok(out)
    }

    #[cfg(test)]
    pub(crate) fn unsynced_count(&self) -> usize {
        self.writer.lock().unsynced.len()
    }

    #[cfg(test)]
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    #[cfg(test)]
    pub(crate) fn active_path(&self) -> PathBuf {
        self.writer.lock().active.path.clone()
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

fn corrupt(seg: &Segment, position: u64, reason: String) -> Error {
    Error::Corrupt {
        path: seg.path.clone(),
        position,
        reason,
    }
}

/// Opens and recovers the newest segment of a partition.
fn recover_active(dir: &Path, base: i64) -> Result<Segment> {
    let (seg, scan, file_len) = Segment::open_active(dir, base)?;
    let mut end = scan.end;
    if let Some((pos, reason)) = &scan.failure {
        if let Some(q) = seg.valid_batch_after(*pos, file_len, scan.next_offset)? {
            return Err(Error::Corrupt {
                path: seg.path.clone(),
                position: *pos,
                reason: format!(
                    "{reason}; a valid batch follows at byte {q}, so this is damage in the middle of the log, not a torn tail"
                ),
            });
        }
        tracing::warn!(
            segment = %seg.path.display(),
            position = pos,
            dropped_bytes = file_len - pos,
            %reason,
            "truncating a torn tail"
        );
        seg.truncate(*pos)?;
        end = *pos;
    }
    // The index of the newest segment is rebuilt by the scan and written when it is
    // sealed; a stale file from an interrupted roll is removed.
    match std::fs::remove_file(&seg.index_path) {
        Ok(()) => sync_dir(dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&seg.index_path, e)),
    }
    seg.set_state(end, scan.next_offset, scan.max_ts, scan.index);
    Ok(seg)
}
