//! One segment: a file of batches (`<base offset>.log`) and its sparse offset index
//! (`<base offset>.index`, written when the segment is sealed).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use weir_core::Error;

use crate::codec::{first_at_or_after, verify_batch, BatchHeader, BATCH_HEADER, MAX_BATCH_BYTES};
use crate::fsutil::write_atomic;
use crate::Result;

/// One index entry per this many bytes of batches.
pub(crate) const INDEX_INTERVAL: u64 = 4096;

const INDEX_MAGIC: &[u8; 4] = b"WIDX";
const INDEX_VERSION: u32 = 1;
/// magic, version, next_offset, file_len, max_timestamp, count
const INDEX_HEADER: usize = 4 + 4 + 8 + 8 + 8 + 4;

/// A sparse index entry: the batch starting at `pos` has base offset `base + rel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub rel: u32,
    pub pos: u32,
}

/// The file name of the segment starting at `base`.
pub(crate) fn segment_file_name(base: i64) -> String {
    format!("{base:020}.log")
}

fn index_file_name(base: i64) -> String {
    format!("{base:020}.index")
}

/// Parses `00000000000000000042.log` into 42.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// An open segment. Readers use the visible length and end offset, which only cover
/// complete (and, in `Durability::Always`, fsynced) batches.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: i64,
    pub path: PathBuf,
    pub index_path: PathBuf,
    file: File,
    len: AtomicU64,
    next_offset: AtomicI64,
    max_ts: AtomicI64,
    index: RwLock<Vec<IndexEntry>>,
}

/// Where a time lookup in one segment ended ([`Segment::first_at_or_after`]).
#[derive(Debug)]
pub(crate) enum TimeScan {
    /// The offset of the first record at or after the time sought.
    Found(i64),
    /// No such record; `damage` is where (byte position) and why the segment's valid
    /// batches stopped early, if they did.
    NotFound { damage: Option<(u64, String)> },
}

/// What a scan of a segment found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Position after the last good batch.
    pub end: u64,
    pub next_offset: i64,
    pub max_ts: i64,
    pub index: Vec<IndexEntry>,
    /// The first bad batch: position and reason.
    pub failure: Option<(u64, String)>,
}

impl Segment {
    /// Creates a new, empty segment file (fails if it exists). The caller fsyncs the
    /// directory.
    pub(crate) fn create(dir: &Path, base: i64) -> Result<Segment> {
        let path = dir.join(segment_file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Segment {
            base,
            index_path: dir.join(index_file_name(base)),
            path,
            file,
            len: AtomicU64::new(0),
            next_offset: AtomicI64::new(base),
            max_ts: AtomicI64::new(i64::MIN),
            index: RwLock::new(Vec::new()),
        })
    }

    /// Opens a sealed segment: trusts its index file if it is intact and matches the
    /// segment's length, otherwise scans the segment (any bad batch is
    /// [`Error::Corrupt`]) and rewrites the index.
    pub(crate) fn open_sealed(dir: &Path, base: i64) -> Result<Segment> {
        let (seg, file_len) = Self::open_file(dir, base)?;
        if let Some((next, max_ts, index)) = seg.load_index(file_len) {
            seg.set_state(file_len, next, max_ts, index);
            return Ok(seg);
        }
        let scan = seg.scan(file_len)?;
        if let Some((pos, reason)) = scan.failure {
            return Err(Error::Corrupt {
                path: seg.path.clone(),
                position: pos,
                reason,
            });
        }
        seg.set_state(scan.end, scan.next_offset, scan.max_ts, scan.index);
        seg.write_index()?;
        Ok(seg)
    }

    /// Opens the newest segment of a partition: scans it, and returns the scan so the
    /// caller can decide between truncating a torn tail and reporting corruption.
    pub(crate) fn open_active(dir: &Path, base: i64) -> Result<(Segment, Scan, u64)> {
        let (seg, file_len) = Self::open_file(dir, base)?;
        let scan = seg.scan(file_len)?;
        Ok((seg, scan, file_len))
    }

    fn open_file(dir: &Path, base: i64) -> Result<(Segment, u64)> {
        Self::open_with(dir, base, true)
    }

    /// Opens a segment to read only (a lookup without the log's lock, which must
    /// work on a read-only mount): never written through.
    pub(crate) fn open_read_only(dir: &Path, base: i64) -> Result<(Segment, u64)> {
        Self::open_with(dir, base, false)
    }

    fn open_with(dir: &Path, base: i64, write: bool) -> Result<(Segment, u64)> {
        let path = dir.join(segment_file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        Ok((
            Segment {
                base,
                index_path: dir.join(index_file_name(base)),
                path,
                file,
                len: AtomicU64::new(0),
                next_offset: AtomicI64::new(base),
                max_ts: AtomicI64::new(i64::MIN),
                index: RwLock::new(Vec::new()),
            },
            file_len,
        ))
    }

    pub(crate) fn set_state(&self, len: u64, next: i64, max_ts: i64, index: Vec<IndexEntry>) {
        *self.index.write() = index;
        self.max_ts.store(max_ts, Ordering::Release);
        self.len.store(len, Ordering::Release);
        self.next_offset.store(next, Ordering::Release);
    }

    /// Visible length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// Visible end offset (offset after the last visible record).
    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Largest record timestamp, `i64::MIN` when empty.
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_ts.load(Ordering::Acquire)
    }

    /// Makes an appended batch visible to readers: length first, then end offset
    /// (readers load the end offset first, so the length they see covers it).
    pub(crate) fn publish(&self, len: u64, next: i64, max_ts: i64, entry: Option<IndexEntry>) {
        if let Some(e) = entry {
            self.index.write().push(e);
        }
        self.max_ts.fetch_max(max_ts, Ordering::AcqRel);
        self.len.store(len, Ordering::Release);
        self.next_offset.store(next, Ordering::Release);
    }

    /// Position of the batch containing `offset` or an earlier batch (a start for a
    /// forward scan).
    pub(crate) fn lookup(&self, offset: i64) -> u64 {
        let rel = offset - self.base;
        if rel <= 0 {
            return 0;
        }
        let index = self.index.read();
        let i = index.partition_point(|e| i64::from(e.rel) <= rel);
        if i == 0 {
            0
        } else {
            u64::from(index[i - 1].pos)
        }
    }

    /// Scans the batches from the start up to `file_len`, verifying each (CRC and
    /// framing) and that offsets continue without gaps, and rebuilds the index.
    pub(crate) fn scan(&self, file_len: u64) -> Result<Scan> {
        let mut reader = WindowReader::new(&self.file, &self.path, file_len);
        let mut pos = 0u64;
        let mut next = self.base;
        let mut max_ts = i64::MIN;
        let mut index = Vec::new();
        let mut last_indexed = 0u64;
        let mut failure = None;
        while pos < file_len {
            match reader.batch_at(pos)? {
                Ok(h) => {
                    if h.base_offset != next {
                        failure = Some((
                            pos,
                            format!(
                                "batch base offset {} where {next} was expected",
                                h.base_offset
                            ),
                        ));
                        break;
                    }
                    if pos > 0 && pos - last_indexed >= INDEX_INTERVAL {
                        index.push(IndexEntry {
                            rel: (next - self.base) as u32,
                            pos: pos as u32,
                        });
                        last_indexed = pos;
                    }
                    max_ts = max_ts.max(h.max_timestamp);
                    next = h.next_offset();
                    pos += h.total_len as u64;
                }
                Err(reason) => {
                    failure = Some((pos, reason));
                    break;
                }
            }
        }
        Ok(Scan {
            end: pos,
            next_offset: next,
            max_ts,
            index,
            failure,
        })
    }

    /// The first record at or after time `ts` among the segment's first `file_len`
    /// bytes: batches whose largest timestamp is older are skipped by their header,
    /// and only the batch that holds the answer is read record by record.
    pub(crate) fn first_at_or_after(&self, file_len: u64, ts: i64) -> Result<TimeScan> {
        let mut reader = WindowReader::new(&self.file, &self.path, file_len);
        let mut pos = 0u64;
        let mut next = self.base;
        while pos < file_len {
            let h = match reader.batch_at(pos)? {
                Ok(h) if h.base_offset == next => h,
                Ok(h) => {
                    let reason = format!(
                        "batch base offset {} where {next} was expected",
                        h.base_offset
                    );
                    return Ok(TimeScan::NotFound {
                        damage: Some((pos, reason)),
                    });
                }
                Err(reason) => {
                    return Ok(TimeScan::NotFound {
                        damage: Some((pos, reason)),
                    })
                }
            };
            if h.max_timestamp >= ts {
                let b = reader.get(pos, h.total_len)?;
                match first_at_or_after(b, &h, ts) {
                    Ok(Some(offset)) => return Ok(TimeScan::Found(offset)),
                    Ok(None) => {}
                    Err(e) => {
                        return Ok(TimeScan::NotFound {
                            damage: Some((pos, e.reason)),
                        })
                    }
                }
            }
            next = h.next_offset();
            pos += h.total_len as u64;
        }
        Ok(TimeScan::NotFound { damage: None })
    }

    /// Whether any complete, valid batch with a base offset at or after `min_offset`
    /// starts after `from`: tells corruption in the middle (data follows) from a torn
    /// tail (nothing valid follows).
    pub(crate) fn valid_batch_after(
        &self,
        from: u64,
        file_len: u64,
        min_offset: i64,
    ) -> Result<Option<u64>> {
        let mut reader = WindowReader::new(&self.file, &self.path, file_len);
        let mut q = from + 1;
        while q + BATCH_HEADER as u64 <= file_len {
            if let Some(h) = reader.header_at(q)? {
                let plausible = h.sanity().is_none()
                    && h.base_offset >= min_offset
                    && h.base_offset - min_offset < (1 << 32)
                    && q + h.total_len as u64 <= file_len;
                if plausible && reader.batch_at(q)?.is_ok() {
                    return Ok(Some(q));
                }
            }
            q += 1;
        }
        Ok(None)
    }

    /// Cuts the file at `len` (a torn tail) and fsyncs it.
    pub(crate) fn truncate(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| Error::io(&self.path, e))?;
        self.file.sync_all().map_err(|e| Error::io(&self.path, e))
    }

    /// Writes `bytes` at `pos`.
    pub(crate) fn write_at(&self, bytes: &[u8], pos: u64) -> std::io::Result<()> {
        self.file.write_all_at(bytes, pos)
    }

    /// fdatasync of the segment file.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Reads `n` bytes at `pos` with one positional read (`pread`, which leaves the
    /// file offset alone, so readers need no lock) into a buffer from a per-thread
    /// pool.
    pub(crate) fn read_at(&self, pos: u64, n: usize) -> Result<Bytes> {
        let mut buf = take_buffer(n);
        if let Err(e) = self.file.read_exact_at(&mut buf[..n], pos) {
            let e = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("end of file before {n} bytes at position {pos} were read"),
                )
            } else {
                e
            };
            return Err(Error::io(&self.path, e));
        }
        Ok(share_buffer(buf, n))
    }

    /// Writes the index file (atomically) with the current state.
    pub(crate) fn write_index(&self) -> Result<()> {
        let index = self.index.read();
        let mut b = Vec::with_capacity(INDEX_HEADER + index.len() * 8 + 4);
        b.extend_from_slice(INDEX_MAGIC);
        b.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        b.extend_from_slice(&self.next_offset().to_le_bytes());
        b.extend_from_slice(&self.len().to_le_bytes());
        b.extend_from_slice(&self.max_timestamp().to_le_bytes());
        b.extend_from_slice(&(index.len() as u32).to_le_bytes());
        for e in index.iter() {
            b.extend_from_slice(&e.rel.to_le_bytes());
            b.extend_from_slice(&e.pos.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        write_atomic(&self.index_path, &b)
    }

    /// Loads the index file if it is intact and describes a segment of `file_len`
    /// bytes: `(next_offset, max_timestamp, entries)`.
    fn load_index(&self, file_len: u64) -> Option<(i64, i64, Vec<IndexEntry>)> {
        let b = std::fs::read(&self.index_path).ok()?;
        if b.len() < INDEX_HEADER + 4 || &b[0..4] != INDEX_MAGIC {
            return None;
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let version = u32::from_le_bytes(body[4..8].try_into().ok()?);
        let next = i64::from_le_bytes(body[8..16].try_into().ok()?);
        let len = u64::from_le_bytes(body[16..24].try_into().ok()?);
        let max_ts = i64::from_le_bytes(body[24..32].try_into().ok()?);
        let count = u32::from_le_bytes(body[32..36].try_into().ok()?) as usize;
        if version != INDEX_VERSION || len != file_len || next < self.base {
            return None;
        }
        if body.len() != INDEX_HEADER + count * 8 {
            return None;
        }
        let mut entries = Vec::with_capacity(count);
        let mut prev: Option<IndexEntry> = None;
        for c in body[INDEX_HEADER..].chunks_exact(8) {
            let e = IndexEntry {
                rel: u32::from_le_bytes(c[0..4].try_into().ok()?),
                pos: u32::from_le_bytes(c[4..8].try_into().ok()?),
            };
            if u64::from(e.pos) >= file_len || i64::from(e.rel) >= next - self.base {
                return None;
            }
            if prev.is_some_and(|p| p.rel >= e.rel || p.pos >= e.pos) {
                return None;
            }
            prev = Some(e);
            entries.push(e);
        }
        Some((next, max_ts, entries))
    }
}

/// Buffers of this size or less are recycled by the per-thread pool.
const POOLED_MAX: usize = 2 << 20;
/// Buffers kept per thread for reuse.
const POOL_SLOTS: usize = 2;

thread_local! {
    /// Chunks handed out by recent reads on this thread. Once every record sliced
    /// from a chunk is dropped, the pool holds the only reference and the buffer is
    /// reused as it is: no allocator round trip, no page faults, and no zeroing (its
    /// bytes are already initialised, so only growth is zeroed).
    static POOL: std::cell::RefCell<Vec<Arc<Vec<u8>>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The first `len` bytes of a shared read buffer: the owner behind the [`Bytes`]
/// handed to readers.
struct Chunk {
    buf: Arc<Vec<u8>>,
    len: usize,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// A buffer of at least `n` initialised bytes, recycled when possible.
fn take_buffer(n: usize) -> Vec<u8> {
    let mut buf = if n <= POOLED_MAX {
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            let i = pool.iter().rposition(|b| Arc::strong_count(b) == 1)?;
            Arc::try_unwrap(pool.swap_remove(i)).ok()
        })
        .unwrap_or_default()
    } else {
        Vec::new()
    };
    if buf.len() < n {
        buf.resize(n, 0);
    }
    buf
}

/// Turns a buffer whose first `n` bytes were filled into [`Bytes`], remembering it
/// for reuse.
fn share_buffer(buf: Vec<u8>, n: usize) -> Bytes {
    let buf = Arc::new(buf);
    if buf.len() <= POOLED_MAX {
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() >= POOL_SLOTS {
                pool.remove(0);
            }
            pool.push(Arc::clone(&buf));
        });
    }
    Bytes::from_owner(Chunk { buf, len: n })
}

/// Buffered positional reads over a segment file, for scans.
struct WindowReader<'a> {
    file: &'a File,
    path: &'a Path,
    file_len: u64,
    start: u64,
    buf: Vec<u8>,
}

const WINDOW: usize = 1 << 20;

impl<'a> WindowReader<'a> {
    fn new(file: &'a File, path: &'a Path, file_len: u64) -> Self {
        Self {
            file,
            path,
            file_len,
            start: 0,
            buf: Vec::new(),
        }
    }

    /// Up to `n` bytes at `pos` (fewer at the end of the file).
    fn get(&mut self, pos: u64, n: usize) -> Result<&[u8]> {
        let want_end = (pos + n as u64).min(self.file_len);
        let have_end = self.start + self.buf.len() as u64;
        if pos < self.start || want_end > have_end {
            let size = (n.max(WINDOW) as u64).min(self.file_len.saturating_sub(pos)) as usize;
            self.buf.resize(size, 0);
            self.file
                .read_exact_at(&mut self.buf, pos)
                .map_err(|e| Error::io(self.path, e))?;
            self.start = pos;
        }
        let off = (pos - self.start) as usize;
        let end = (want_end - self.start) as usize;
        Ok(&self.buf[off..end])
    }

    fn header_at(&mut self, pos: u64) -> Result<Option<BatchHeader>> {
        Ok(BatchHeader::parse(self.get(pos, BATCH_HEADER)?))
    }

    /// The verified batch header at `pos`, or why there is no valid batch there.
    fn batch_at(&mut self, pos: u64) -> Result<std::result::Result<BatchHeader, String>> {
        let Some(h) = self.header_at(pos)? else {
            return Ok(Err(format!(
                "incomplete batch header ({} bytes before end of file)",
                self.file_len - pos
            )));
        };
        if let Some(reason) = h.sanity() {
            return Ok(Err(reason));
        }
        debug_assert!(h.total_len <= MAX_BATCH_BYTES);
        if pos + h.total_len as u64 > self.file_len {
            return Ok(Err(format!(
                "batch of {} bytes runs past the end of the file ({} bytes left)",
                h.total_len,
                self.file_len - pos
            )));
        }
        let b = self.get(pos, h.total_len)?;
        Ok(verify_batch(b).map_err(|e| e.reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(segment_file_name(42), "00000000000000000042.log");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.log"),
            Some(42)
        );
        assert_eq!(parse_segment_file_name("42.log"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_segment_file_name("00000000000000000042.index"), None);
    }
}
