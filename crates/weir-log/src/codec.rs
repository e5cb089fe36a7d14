//! The on-disk batch format.
//!
//! A segment file is a sequence of batches, all integers little-endian:
//!
//! ```text
//! batch header (32 bytes)
//!   0  crc           u32  CRC32C (Castagnoli) of bytes 4..end of batch
//!   4  length        u32  bytes after this field (24 + records)
//!   8  base_offset   i64  offset of the first record
//!   16 record_count  u32  at least 1
//!   20 magic         u8   1
//!   21 attributes    u8   0 (reserved)
//!   22 reserved      u16  0
//!   24 max_timestamp i64  largest record timestamp in the batch
//! records, record_count times
//!   length     u32  bytes after this field
//!   timestamp  i64  ms since the Unix epoch
//!   key_len    i32  -1 for a null key, then key bytes
//!   value_len  i32  -1 for a null value, then value bytes
//!   headers    u32  count, then per header:
//!     name_len u32, name (UTF-8), value_len i32 (-1 null), value bytes
//! ```
//! The offset of a record is `base_offset` plus its index in the batch.

use std::path::Path;

use bytes::Bytes;
use weir_core::{Error, Header, Record, TopicPartition};

use crate::NewRecord;

/// Size of the fixed batch header.
pub(crate) const BATCH_HEADER: usize = 32;
/// Current format version.
pub(crate) const MAGIC: u8 = 1;
/// Largest batch accepted on append and believed on read (guards allocations against a
/// corrupt length field).
pub(crate) const MAX_BATCH_BYTES: usize = 256 << 20;

/// The parsed fixed header of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub crc: u32,
    /// Total size of the batch in bytes, header included.
    pub total_len: usize,
    pub base_offset: i64,
    pub record_count: u32,
    pub magic: u8,
    pub max_timestamp: i64,
}

impl BatchHeader {
    /// Parses the first [`BATCH_HEADER`] bytes; `None` if there are fewer. Does not
    /// check anything.
    pub(crate) fn parse(b: &[u8]) -> Option<BatchHeader> {
        if b.len() < BATCH_HEADER {
            return None;
        }
        Some(BatchHeader {
            crc: u32_at(b, 0),
            total_len: u32_at(b, 4) as usize + 8,
            base_offset: i64_at(b, 8),
            record_count: u32_at(b, 16),
            magic: b[20],
            max_timestamp: i64_at(b, 24),
        })
    }

    /// The offset after the last record of this batch.
    pub(crate) fn next_offset(&self) -> i64 {
        self.base_offset + i64::from(self.record_count)
    }

    /// Checks what can be checked without the body: returns why the header is
    /// implausible.
    pub(crate) fn sanity(&self) -> Option<String> {
        if self.magic != MAGIC {
            return Some(format!("unknown batch format version {}", self.magic));
        }
        if self.total_len < BATCH_HEADER || self.total_len > MAX_BATCH_BYTES {
            return Some(format!("batch length {} out of bounds", self.total_len));
        }
        if self.record_count == 0 {
            return Some("batch with zero records".into());
        }
        if self.base_offset < 0 {
            return Some(format!("negative base offset {}", self.base_offset));
        }
        None
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_le_bytes(a)
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_le_bytes(a)
}

/// Why [`encode_batch`] refused.
#[derive(Debug)]
pub(crate) enum EncodeError {
    TooLarge(usize),
    TooMany,
}

fn opt_len(b: &Option<Bytes>) -> usize {
    b.as_ref().map_or(0, Bytes::len)
}

/// Encoded size of one record, including its length prefix.
pub(crate) fn record_size(r: &NewRecord) -> usize {
    let mut n = 4 + 8 + 4 + opt_len(&r.key) + 4 + opt_len(&r.value) + 4;
    for h in &r.headers {
        n += 4 + h.key.len() + 4 + opt_len(&h.value);
    }
    n
}

fn put_opt(out: &mut Vec<u8>, b: &Option<Bytes>) {
    match b {
        Some(b) => {
            // Lengths were bounded by MAX_BATCH_BYTES < i32::MAX before encoding.
            out.extend_from_slice(&(b.len() as i32).to_le_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&(-1i32).to_le_bytes()),
    }
}

/// Appends one encoded batch to `out` (which is cleared first). `now_ms` stamps
/// records without a timestamp.
pub(crate) fn encode_batch(
    out: &mut Vec<u8>,
    base_offset: i64,
    records: &[NewRecord],
    now_ms: i64,
) -> Result<(), EncodeError> {
    out.clear();
    let count = u32::try_from(records.len()).map_err(|_| EncodeError::TooMany)?;
    let mut total = BATCH_HEADER;
    for r in records {
        total = total.saturating_add(record_size(r));
    }
    if total > MAX_BATCH_BYTES {
        return Err(EncodeError::TooLarge(total));
    }
    out.reserve(total);
    let mut max_ts = i64::MIN;
    for r in records {
        max_ts = max_ts.max(r.timestamp.unwrap_or(now_ms));
    }
    out.extend_from_slice(&0u32.to_le_bytes()); // crc, patched below
    out.extend_from_slice(&((total - 8) as u32).to_le_bytes());
    out.extend_from_slice(&base_offset.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&[MAGIC, 0, 0, 0]);
    out.extend_from_slice(&max_ts.to_le_bytes());
    for r in records {
        let len = record_size(r) - 4;
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&r.timestamp.unwrap_or(now_ms).to_le_bytes());
        put_opt(out, &r.key);
        put_opt(out, &r.value);
        out.extend_from_slice(&(r.headers.len() as u32).to_le_bytes());
        for h in &r.headers {
            out.extend_from_slice(&(h.key.len() as u32).to_le_bytes());
            out.extend_from_slice(h.key.as_bytes());
            put_opt(out, &h.value);
        }
    }
    let crc = crc32c::crc32c(&out[4..]);
    out[0..4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A batch that failed its checks: where (relative to the buffer) and why.
#[derive(Debug)]
pub(crate) struct BadBatch {
    pub reason: String,
}

impl BadBatch {
    pub(crate) fn into_error(self, path: &Path, position: u64) -> Error {
        Error::Corrupt {
            path: path.to_path_buf(),
            position,
            reason: self.reason,
        }
    }
}

fn bad(reason: impl Into<String>) -> BadBatch {
    BadBatch {
        reason: reason.into(),
    }
}

/// Checks a complete batch's header and CRC (`b` is exactly the batch's bytes), not
/// the record framing: enough before [`decode_records`], which checks every bound.
pub(crate) fn verify_crc(b: &[u8]) -> Result<BatchHeader, BadBatch> {
    let h = BatchHeader::parse(b).ok_or_else(|| bad("truncated batch header"))?;
    if let Some(r) = h.sanity() {
        return Err(bad(r));
    }
    if b.len() != h.total_len {
        return Err(bad(format!(
            "batch length {} but {} bytes given",
            h.total_len,
            b.len()
        )));
    }
    let crc = crc32c::crc32c(&b[4..]);
    if crc != h.crc {
        return Err(bad(format!(
            "CRC32C mismatch (stored {:#010x}, computed {crc:#010x}) in batch at base offset {}",
            h.crc, h.base_offset
        )));
    }
    Ok(h)
}

/// Verifies a complete batch (`b` is exactly the batch's bytes): header sanity,
/// CRC and record framing. Does not allocate.
pub(crate) fn verify_batch(b: &[u8]) -> Result<BatchHeader, BadBatch> {
    let h = verify_crc(b)?;
    let mut pos = BATCH_HEADER;
    for i in 0..h.record_count {
        pos = walk_record(b, pos).map_err(|r| {
            bad(format!(
                "record {} of batch at base offset {}: {r}",
                i, h.base_offset
            ))
        })?;
    }
    if pos != b.len() {
        return Err(bad(format!(
            "{} trailing bytes after the records of batch at base offset {}",
            b.len() - pos,
            h.base_offset
        )));
    }
    Ok(h)
}

/// Skips one record starting at `pos`, checking its framing; returns the position
/// after it.
fn walk_record(b: &[u8], pos: usize) -> Result<usize, String> {
    let len = read_u32(b, pos)? as usize;
    let end = pos
        .checked_add(4 + len)
        .filter(|&e| e <= b.len())
        .ok_or("record length beyond the batch")?;
    let mut p = pos + 4 + 8;
    if p > end {
        return Err("record too short".into());
    }
    p = skip_opt(b, p, end)?;
    p = skip_opt(b, p, end)?;
    let headers = read_u32_within(b, p, end)?;
    p += 4;
    for _ in 0..headers {
        let klen = read_u32_within(b, p, end)? as usize;
        p += 4;
        if p + klen > end {
            return Err("header name beyond the record".into());
        }
        if std::str::from_utf8(&b[p..p + klen]).is_err() {
            return Err("header name is not UTF-8".into());
        }
        p += klen;
        p = skip_opt(b, p, end)?;
    }
    if p != end {
        return Err(format!("{} unexplained bytes in record", end - p));
    }
    Ok(end)
}

fn read_u32(b: &[u8], pos: usize) -> Result<u32, String> {
    if pos + 4 > b.len() {
        return Err("field beyond the batch".into());
    }
    Ok(u32_at(b, pos))
}

fn read_u32_within(b: &[u8], pos: usize, end: usize) -> Result<u32, String> {
    if pos + 4 > end {
        return Err("field beyond the record".into());
    }
    Ok(u32_at(b, pos))
}

fn skip_opt(b: &[u8], pos: usize, end: usize) -> Result<usize, String> {
    if pos + 4 > end {
        return Err("length field beyond the record".into());
    }
    let len = i32_at(b, pos);
    if len == -1 {
        return Ok(pos + 4);
    }
    if len < 0 {
        return Err(format!("negative length {len}"));
    }
    let e = pos + 4 + len as usize;
    if e > end {
        return Err("payload beyond the record".into());
    }
    Ok(e)
}

/// Decodes the records of a verified batch held in `buf[start..start+total_len]`,
/// pushing those with offset >= `from` (at most `limit` of them) onto `out`. Payloads
/// are slices of `buf` (no copy). Returns the number pushed.
pub(crate) fn decode_records(
    buf: &Bytes,
    start: usize,
    h: &BatchHeader,
    tp: &TopicPartition,
    from: i64,
    limit: usize,
    out: &mut Vec<Record>,
) -> Result<usize, BadBatch> {
    let b = &buf[..];
    let mut pos = start + BATCH_HEADER;
    let end = start + h.total_len;
    let mut pushed = 0;
    for i in 0..h.record_count {
        if pushed >= limit {
            break;
        }
        let offset = h.base_offset + i64::from(i);
        let rlen = read_u32(&b[..end], pos).map_err(bad)? as usize;
        let rend = pos + 4 + rlen;
        if rend > end {
            return Err(bad("record length beyond the batch"));
        }
        if offset < from {
            pos = rend;
            continue;
        }
        let mut p = pos + 4;
        if p + 8 > rend {
            return Err(bad("record too short for its timestamp"));
        }
        let ts = i64_at(b, p);
        p += 8;
        let (key, np) = take_opt(buf, p, rend)?;
        p = np;
        let (value, np) = take_opt(buf, p, rend)?;
        p = np;
        let hcount = read_u32_within(b, p, rend).map_err(bad)?;
        p += 4;
        let mut headers = Vec::new();
        for _ in 0..hcount {
            let klen = read_u32_within(b, p, rend).map_err(bad)? as usize;
            p += 4;
            if p + klen > rend {
                return Err(bad("header name beyond the record"));
            }
            let name = std::str::from_utf8(&b[p..p + klen])
                .map_err(|_| bad("header name is not UTF-8"))?
                .to_owned();
            p += klen;
            let (value, np) = take_opt(buf, p, rend)?;
            p = np;
            headers.push(Header { key: name, value });
        }
        out.push(Record {
            topic: tp.topic_arc().clone(),
            partition: tp.partition(),
            offset,
            timestamp: Some(ts),
            key,
            value,
            headers,
        });
        pushed += 1;
        pos = rend;
    }
    Ok(pushed)
}

/// The offset of the first record of a batch whose timestamp is at or after `ts`
/// (milliseconds since the Unix epoch); `b` is exactly the batch's bytes, already
/// checked by [`verify_batch`]. `Ok(None)` if every record is older.
pub(crate) fn first_at_or_after(
    b: &[u8],
    h: &BatchHeader,
    ts: i64,
) -> Result<Option<i64>, BadBatch> {
    let end = h.total_len.min(b.len());
    let mut pos = BATCH_HEADER;
    for i in 0..h.record_count {
        let rlen = read_u32(&b[..end], pos).map_err(bad)? as usize;
        let rend = pos + 4 + rlen;
        if rlen < 8 || rend > end {
            return Err(bad(
                "record too short for its timestamp or beyond the batch",
            ));
        }
        if i64_at(b, pos + 4) >= ts {
            return Ok(Some(h.base_offset + i64::from(i)));
        }
        pos = rend;
    }
    Ok(None)
}

fn take_opt(buf: &Bytes, pos: usize, end: usize) -> Result<(Option<Bytes>, usize), BadBatch> {
    if pos + 4 > end {
        return Err(bad("length field beyond the record"));
    }
    let len = i32_at(buf, pos);
    if len == -1 {
        return Ok((None, pos + 4));
    }
    if len < 0 {
        return Err(bad(format!("negative length {len}")));
    }
    let s = pos + 4;
    let e = s + len as usize;
    if e > end {
        return Err(bad("payload beyond the record"));
    }
    Ok((Some(buf.slice(s..e)), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<NewRecord> {
        vec![
            NewRecord::new("k1", "v1").with_header(Header::new("h", "x")),
            NewRecord {
                key: None,
                value: None,
                headers: vec![Header {
                    key: "n".into(),
                    value: None,
                }],
                timestamp: Some(5),
            },
            NewRecord::value(vec![7u8; 1000]).with_timestamp(9),
        ]
    }

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        encode_batch(&mut out, 40, &sample(), 100).unwrap();
        let h = verify_batch(&out).unwrap();
        assert_eq!(h.base_offset, 40);
        assert_eq!(h.record_count, 3);
        assert_eq!(h.max_timestamp, 100);
        assert_eq!(h.total_len, out.len());
        let buf = Bytes::from(out);
        let topic = TopicPartition::new("t", 2);
        let mut recs = Vec::new();
        let n = decode_records(&buf, 0, &h, &topic, 41, 10, &mut recs).unwrap();
        assert_eq!(n, 2);
        assert_eq!(recs[0].offset, 41);
        assert_eq!(recs[0].key, None);
        assert_eq!(recs[0].value, None);
        assert_eq!(recs[0].headers[0].key, "n");
        assert_eq!(recs[0].timestamp, Some(5));
        assert_eq!(recs[1].value.as_deref(), Some(&[7u8; 1000][..]));
        recs.clear();
        decode_records(&buf, 0, &h, &topic, 0, 1, &mut recs).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(recs[0].headers[0].value.as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut out = Vec::new();
        encode_batch(&mut out, 0, &sample()[..1], 1).unwrap();
        for byte in 0..out.len() {
            for bit in 0..8 {
                let mut c = out.clone();
                c[byte] ^= 1 << bit;
                assert!(verify_batch(&c).is_err(), "flip at {byte}:{bit} undetected");
            }
        }
    }

    #[test]
    fn damaged_records_with_a_valid_crc_are_errors_not_panics() {
        let mut out = Vec::new();
        encode_batch(&mut out, 0, &sample(), 1).unwrap();
        let topic = TopicPartition::new("t", 0);
        for at in BATCH_HEADER..out.len() {
            for v in [0x00u8, 0x7f, 0x80, 0xff] {
                let mut c = out.clone();
                c[at] = v;
                let crc = crc32c::crc32c(&c[4..]);
                c[0..4].copy_from_slice(&crc.to_le_bytes());
                let h = verify_crc(&c).unwrap();
                let full = verify_batch(&c).map(|_| ());
                let buf = Bytes::from(c);
                let mut recs = Vec::new();
                let decoded = decode_records(&buf, 0, &h, &topic, 0, 10, &mut recs).map(|_| ());
                // Framing damage is caught by at least the full verification.
                if decoded.is_err() {
                    assert!(
                        full.is_err(),
                        "decode failed but full verify passed at {at}"
                    );
                }
            }
        }
    }

    #[test]
    fn short_and_garbage_input_is_an_error_not_a_panic() {
        assert!(verify_batch(&[]).is_err());
        assert!(verify_batch(&[0u8; 31]).is_err());
        assert!(verify_batch(&[0xffu8; 64]).is_err());
        let mut out = Vec::new();
        encode_batch(&mut out, 0, &sample(), 1).unwrap();
        for cut in 0..out.len() {
            assert!(verify_batch(&out[..cut]).is_err());
        }
    }
}
