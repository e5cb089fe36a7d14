//! What one poll returns.

use std::collections::BTreeMap;

use crate::{Record, TopicPartition};

/// The records one [`Consumer::poll`](crate::Consumer::poll) returned: at most
/// `max.poll.records`, each partition's records in offset order.
///
/// ```
/// use weir_core::{Batch, Record, TopicPartition};
/// let batch = Batch::from(vec![
///     Record::new("t", 0, 5, None, None),
///     Record::new("t", 1, 9, None, None),
///     Record::new("t", 0, 6, None, None),
/// ]);
/// assert_eq!(batch.len(), 3);
/// assert_eq!(batch.records(&TopicPartition::new("t", 0)).count(), 2);
/// assert_eq!(batch.next_offsets()[&TopicPartition::new("t", 0)], 7);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    records: Vec<Record>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when the poll returned nothing.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// All records, partitions interleaved, each partition in offset order.
    pub fn iter(&self) -> std::slice::Iter<'_, Record> {
        self.records.iter()
    }

    /// The records of one partition, in offset order.
    pub fn records<'a>(&'a self, tp: &'a TopicPartition) -> impl Iterator<Item = &'a Record> + 'a {
        self.records
            .iter()
            .filter(move |r| r.partition == tp.partition() && &*r.topic == tp.topic())
    }

    /// The partitions that have records in this batch, sorted.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        let mut v: Vec<TopicPartition> = self.records.iter().map(Record::topic_partition).collect();
        v.sort();
        v.dedup();
        v
    }

    /// For each partition, the offset after its last record in this batch: what to
    /// commit once the batch is processed.
    pub fn next_offsets(&self) -> BTreeMap<TopicPartition, i64> {
        let mut m = BTreeMap::new();
        for r in &self.records {
            let e = m.entry(r.topic_partition()).or_insert(r.offset + 1);
            if r.offset + 1 > *e {
                *e = r.offset + 1;
            }
        }
        m
    }

    /// The records, by value.
    pub fn into_records(self) -> Vec<Record> {
        self.records
    }
}

impl From<Vec<Record>> for Batch {
    fn from(records: Vec<Record>) -> Self {
        Self { records }
    }
}

impl IntoIterator for Batch {
    type Item = Record;
    type IntoIter = std::vec::IntoIter<Record>;
    fn into_iter(self) -> Self::IntoIter {
        self.records.into_iter()
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = &'a Record;
    type IntoIter = std::slice::Iter<'a, Record>;
    fn into_iter(self) -> Self::IntoIter {
        self.records.iter()
    }
}
