//! [`Producer`]: appends records by key, with Kafka's default partitioner.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use weir_core::TopicPartition;

use crate::{Log, NewRecord, Result};

/// Kafka's murmur2 hash (the Java client's `Utils.murmur2`, seed `0x9747b28c`), so that
/// a key lands on the same partition number as with Kafka's default partitioner.
///
/// ```
/// assert_eq!(weir_log::murmur2(b"21"), -973932308);
/// assert_eq!(weir_log::murmur2(b"foobar"), -790332482);
/// ```
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = 0x9747_b28c ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a non-null key:
/// `(murmur2(key) & 0x7fffffff) % partitions`.
///
/// ```
/// let p = weir_log::partition_for_key(b"user-7", 4);
/// assert!((0..4).contains(&p));
/// assert_eq!(p, weir_log::partition_for_key(b"user-7", 4));
/// ```
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    if partitions <= 0 {
        return 0;
    }
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Appends records to topics of a [`Log`], choosing the partition like Kafka's
/// default partitioner: records with a key go to [`partition_for_key`] (murmur2), so
/// one key always lands on one partition (while the partition count is unchanged);
/// records without a key are spread round-robin. Each call returns once the records
/// are durable as the log's [`Durability`](crate::Durability) promises.
///
/// ```
/// use weir_log::{Log, NewRecord, Producer};
/// let dir = tempfile::tempdir()?;
/// let log = Log::open(dir.path(), Default::default())?;
/// log.create_topic("clicks", 3)?;
/// let producer = Producer::new(log.clone());
/// let (p1, o1) = producer.send("clicks", Some("user-7".into()), Some("a".into()))?;
/// let (p2, o2) = producer.send("clicks", Some("user-7".into()), Some("b".into()))?;
/// assert_eq!(p1, p2);           // same key, same partition
/// assert_eq!(o2, o1 + 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Producer {
    log: Log,
    round_robin: AtomicUsize,
}

impl Producer {
    /// A producer appending to `log`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let producer = weir_log::Producer::new(weir_log::Log::open(dir.path(), Default::default())?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(log: Log) -> Self {
        Self {
            log,
            round_robin: AtomicUsize::new(0),
        }
    }

    /// The log this producer appends to.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let producer = weir_log::Producer::new(weir_log::Log::open(dir.path(), Default::default())?);
    /// assert!(producer.log().topics().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn log(&self) -> &Log {
        &self.log
    }

    fn pick(&self, key: Option<&Bytes>, partitions: i32) -> i32 {
        match key {
            Some(k) => partition_for_key(k, partitions),
            None => {
                (self.round_robin.fetch_add(1, Ordering::Relaxed) % partitions.max(1) as usize)
                    as i32
            }
        }
    }

    /// Appends a record to `topic`, partitioned by `key`; returns `(partition, offset)`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// # log.create_topic("t", 2)?;
    /// let producer = weir_log::Producer::new(log);
    /// let (partition, offset) = producer.send("t", None, Some("no key: round-robin".into()))?;
    /// assert_eq!(offset, 0);
    /// assert!(producer.send("missing", None, None).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(
        &self,
        topic: &str,
        key: Option<Bytes>,
        value: Option<Bytes>,
    ) -> Result<(i32, i64)> {
        let partitions = self.log.partition_count(topic)?;
        let partition = self.pick(key.as_ref(), partitions);
        let record = NewRecord {
            key,
            value,
            headers: Vec::new(),
            timestamp: None,
        };
        let offset = self
            .log
            .append(&TopicPartition::new(topic, partition), &[record])?;
        Ok((partition, offset))
    }

    /// Appends a record to a given partition; returns its offset.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// # log.create_topic("t", 2)?;
    /// let producer = weir_log::Producer::new(log);
    /// let tp = weir_core::TopicPartition::new("t", 1);
    /// assert_eq!(producer.send_to(&tp, weir_log::NewRecord::value("v"))?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_to(&self, tp: &TopicPartition, record: NewRecord) -> Result<i64> {
        self.log.append(tp, std::slice::from_ref(&record))
    }

    /// Appends many records to `topic`, partitioned like [`Producer::send`], with one
    /// append (one fsync in `Durability::Always`) per partition. Returns each record's
    /// `(partition, offset)` in input order. Partitions are appended one after the
    /// other: if one fails, the earlier ones stay appended.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = weir_log::Log::open(dir.path(), Default::default())?;
    /// # log.create_topic("t", 2)?;
    /// use weir_log::NewRecord;
    /// let producer = weir_log::Producer::new(log);
    /// let placed = producer.send_batch("t", vec![NewRecord::new("a", "1"), NewRecord::new("a", "2")])?;
    /// assert_eq!(placed[0].0, placed[1].0);
    /// assert_eq!(placed[1].1, placed[0].1 + 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_batch(&self, topic: &str, records: Vec<NewRecord>) -> Result<Vec<(i32, i64)>> {
        let partitions = self.log.partition_count(topic)?;
        let mut by_partition: std::collections::BTreeMap<i32, (Vec<usize>, Vec<NewRecord>)> =
            std::collections::BTreeMap::new();
        for (i, r) in records.into_iter().enumerate() {
            let p = self.pick(r.key.as_ref(), partitions);
            let e = by_partition.entry(p).or_default();
            e.0.push(i);
            e.1.push(r);
        }
        let total = by_partition.values().map(|e| e.0.len()).sum();
        let mut placed = vec![(0, 0); total];
        for (p, (idx, recs)) in by_partition {
            let first = self.log.append(&TopicPartition::new(topic, p), &recs)?;
            for (k, i) in idx.into_iter().enumerate() {
                placed[i] = (p, first + k as i64);
            }
        }
        Ok(placed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Vectors from the Java client's UtilsTest.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }
}
