//! The buffer of one batch: output items grouped by source record, dead letters and,
//! per partition, the offsets range the batch covers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use weir_core::{Record, TopicPartition};
use weir_sql::{DeadLetter, Item, Refusal, Stage};

/// A partition's part of a batch: the claim it was read under and the offsets range
/// (`expected` is the compare-and-set's expected `next_offset`, `next` the new one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PartPending {
    pub generation: u64,
    pub epoch: i64,
    pub expected: Option<i64>,
    pub next: i64,
    /// Records and bytes of this partition in the batch.
    pub records: usize,
    pub bytes: usize,
    /// Records of this partition the sink refused and dropped (late records).
    pub dropped: usize,
}

/// The items `start..end` came from `record`.
#[derive(Debug)]
pub(crate) struct Group {
    pub record: Record,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug)]
pub(crate) struct Pending<T> {
    pub items: Vec<Item<T>>,
    pub groups: Vec<Group>,
    pub dead: Vec<DeadLetter>,
    pub parts: BTreeMap<TopicPartition, PartPending>,
    /// Records consumed (with rows, dead-lettered, skipped or filtered out).
    pub records: usize,
    /// Key and value bytes of those records.
    pub bytes: usize,
    /// When the first record arrived (for the linger).
    pub since: Option<Instant>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            groups: Vec::new(),
            dead: Vec::new(),
            parts: BTreeMap::new(),
            records: 0,
            bytes: 0,
            since: None,
        }
    }
}

pub(crate) fn record_bytes(r: &Record) -> usize {
    r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len())
}

fn in_set(set: &BTreeSet<TopicPartition>, r: &Record) -> bool {
    set.iter()
        .any(|tp| tp.partition() == r.partition && tp.topic() == &*r.topic)
}

impl<T> Pending<T> {
    pub(crate) fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Account one consumed record of `tp` (its offsets range grows to include it).
    pub(crate) fn consume(&mut self, tp: TopicPartition, record: &Record, part: PartPending) {
        let n = record_bytes(record);
        let e = self.parts.entry(tp).or_insert(part);
        e.next = record.offset + 1;
        e.records += 1;
        e.bytes += n;
        self.records += 1;
        self.bytes += n;
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    /// Add the output values of `record`, with ordinals 0, 1, ….
    pub(crate) fn push_values(&mut self, record: &Record, values: impl IntoIterator<Item = T>) {
        let start = self.items.len();
        let at = record.coordinates();
        for (i, value) in values.into_iter().enumerate() {
            self.items.push(Item {
                at: at.clone(),
                ordinal: u32::try_from(i).unwrap_or(u32::MAX),
                timestamp: record.timestamp,
                value,
            });
        }
        if self.items.len() > start {
            self.groups.push(Group {
                record: record.clone(),
                start,
                end: self.items.len(),
            });
        }
    }

    /// Rows written per output group so far.
    pub(crate) fn rows(&self) -> usize {
        self.items.len()
    }

    /// Keep only the partitions for which `keep` holds.
    pub(crate) fn retain(&mut self, keep: impl Fn(&TopicPartition, &PartPending) -> bool) {
        let gone: BTreeSet<TopicPartition> = self
            .parts
            .iter()
            .filter(|(tp, p)| !keep(tp, p))
            .map(|(tp, _)| tp.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        let kept = self.split_off(&gone);
        *self = kept;
    }

    /// Split `self` into the partitions in `set` (returned) and the rest (kept), with
    /// records and bytes counted on each side.
    pub(crate) fn take(&mut self, set: &BTreeSet<TopicPartition>) -> Pending<T> {
        let mut rest = self.split_off(set);
        std::mem::swap(self, &mut rest);
        rest
    }

    /// The part of `self` NOT in `set` (the part in `set` is dropped).
    fn split_off(&mut self, set: &BTreeSet<TopicPartition>) -> Pending<T> {
        let mut kept = Pending::default();
        let groups = std::mem::take(&mut self.groups);
        let mut items: Vec<Option<Item<T>>> = std::mem::take(&mut self.items)
            .into_iter()
            .map(Some)
            .collect();
        let mut taken = Pending::default();
        for g in groups {
            let dest = if in_set(set, &g.record) {
                &mut taken
            } else {
                &mut kept
            };
            let start = dest.items.len();
            for slot in &mut items[g.start..g.end] {
                if let Some(it) = slot.take() {
                    dest.items.push(it);
                }
            }
            dest.groups.push(Group {
                record: g.record,
                start,
                end: dest.items.len(),
            });
        }
        for d in std::mem::take(&mut self.dead) {
            if in_set(set, &d.record) {
                taken.dead.push(d);
            } else {
                kept.dead.push(d);
            }
        }
        for (tp, p) in std::mem::take(&mut self.parts) {
            if set.contains(&tp) {
                taken.parts.insert(tp, p);
            } else {
                kept.parts.insert(tp, p);
            }
        }
        for side in [&mut taken, &mut kept] {
            side.records = side.parts.values().map(|p| p.records).sum();
            side.bytes = side.parts.values().map(|p| p.bytes).sum();
        }
        kept.since = self.since;
        taken.since = self.since;
        *self = taken;
        kept
    }

    /// Move the groups whose index is in `rejected` to the dead letters (stage sink).
    pub(crate) fn reject(&mut self, rejected: Vec<(usize, String)>) {
        self.remove_groups(
            rejected
                .into_iter()
                .map(|(i, reason)| (i, (reason, true)))
                .collect(),
        );
    }

    /// Take the records a sink refused out of the batch: into the dead letters (stage
    /// sink) or dropped (counted on their partition). A refusal naming no record of
    /// the batch is ignored.
    pub(crate) fn refuse(&mut self, refusals: Vec<Refusal>) {
        if refusals.is_empty() {
            return;
        }
        let mut by_at: BTreeMap<weir_core::Coordinates, (String, bool)> = BTreeMap::new();
        for r in refusals {
            by_at.insert(r.at, (r.reason, r.dead_letter));
        }
        let mut bad = BTreeMap::new();
        for (i, g) in self.groups.iter().enumerate() {
            if let Some(v) = by_at.remove(&g.record.coordinates()) {
                bad.insert(i, v);
            }
        }
        self.remove_groups(bad);
    }

    /// Remove the groups in `bad` (index → reason, into the dead letters or not).
    fn remove_groups(&mut self, bad: BTreeMap<usize, (String, bool)>) {
        if bad.is_empty() {
            return;
        }
        let groups = std::mem::take(&mut self.groups);
        let mut items: Vec<Option<Item<T>>> = std::mem::take(&mut self.items)
            .into_iter()
            .map(Some)
            .collect();
        for (i, g) in groups.into_iter().enumerate() {
            if let Some((err, dead)) = bad.get(&i) {
                if *dead {
                    self.dead.push(DeadLetter::new(g.record, Stage::Sink, err));
                } else {
                    tracing::debug!(at = %g.record.coordinates(), reason = %err, "record dropped by the sink");
                    let tp = TopicPartition::new(g.record.topic.to_string(), g.record.partition);
                    if let Some(p) = self.parts.get_mut(&tp) {
                        p.dropped += 1;
                    }
                }
                continue;
            }
            let start = self.items.len();
            for slot in &mut items[g.start..g.end] {
                if let Some(it) = slot.take() {
                    self.items.push(it);
                }
            }
            self.groups.push(Group {
                record: g.record,
                start,
                end: self.items.len(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(p: i32, o: i64) -> Record {
        Record::new(
            "t",
            p,
            o,
            None,
            Some(weir_core::Bytes::from(vec![b'x'; 10])),
        )
    }

    fn part(next: i64) -> PartPending {
        PartPending {
            generation: 1,
            epoch: 1,
            expected: Some(next),
            next,
            records: 0,
            bytes: 0,
            dropped: 0,
        }
    }

    fn filled() -> Pending<i64> {
        let mut p = Pending::default();
        for o in 0..4 {
            for partition in 0..2 {
                let r = rec(partition, o);
                p.consume(r.topic_partition(), &r, part(0));
                // one row per record, two for offset 2, none for offset 3 (filtered)
                let n = match o {
                    2 => 2,
                    3 => 0,
                    _ => 1,
                };
                p.push_values(&r, (0..n).map(|i| o * 10 + i));
            }
        }
        p
    }

    #[test]
    fn accounting_of_consumed_records() {
        let p = filled();
        assert_eq!(
            (p.records, p.bytes, p.rows(), p.groups.len()),
            (8, 80, 8, 6)
        );
        assert_eq!(p.parts[&TopicPartition::new("t", 0)].next, 4);
        let ordinals: Vec<u32> = p.items.iter().map(|i| i.ordinal).collect();
        assert_eq!(ordinals, [0, 0, 0, 0, 0, 1, 0, 1]);
    }

    #[test]
    fn retain_drops_a_partition_whole() {
        let mut p = filled();
        p.retain(|tp, _| tp.partition() == 1);
        assert_eq!(p.parts.len(), 1);
        assert!(p.items.iter().all(|i| i.at.partition == 1));
        assert_eq!((p.rows(), p.records, p.bytes), (4, 4, 40));
        for g in &p.groups {
            assert!(p.items[g.start..g.end]
                .iter()
                .all(|i| i.at.offset == g.record.offset));
        }
    }

    #[test]
    fn take_splits_and_the_sides_sum_to_the_whole() {
        let mut p = filled();
        let set: BTreeSet<_> = [TopicPartition::new("t", 0)].into();
        let taken = p.take(&set);
        assert!(taken.items.iter().all(|i| i.at.partition == 0));
        assert!(p.items.iter().all(|i| i.at.partition == 1));
        assert_eq!(taken.records + p.records, 8);
        assert_eq!(taken.bytes + p.bytes, 80);
        assert_eq!(taken.rows() + p.rows(), 8);
    }

    #[test]
    fn reject_moves_groups_to_the_dead_letters() {
        let mut p = filled();
        // group 4 is offset 2 of partition 0 (two rows)
        p.reject(vec![(4, "value too long".into())]);
        assert_eq!(p.dead.len(), 1);
        assert_eq!(
            (p.dead[0].record.partition, p.dead[0].record.offset),
            (0, 2)
        );
        assert_eq!(p.rows(), 6);
        assert_eq!(p.groups.len(), 5);
        assert_eq!(p.records, 8, "a rejected record is still consumed");
    }
}
