//! What to make of the first record after a claim when it is not at the claimed offset.
//!
//! Before it: delivered before the claim's seek took effect, or the consumer's position
//! was reset because the offset lies beyond the log's end. Beyond it: the seek did not
//! take effect (records fetched before it), or the log has no record there (compaction,
//! transaction markers). Processing such a record as it is would skip records, or write
//! records under offsets already committed, and the compare-and-set (expecting the
//! claimed offset) would not notice. So: seek to the claimed offset and look again; the
//! same first record beyond it twice is a real gap; anything else after
//! [`MAX_RESEEKS`] seeks stops the run with an error.

use std::collections::HashMap;

use weir_core::TopicPartition;

/// Seeks to a claimed offset before giving up on a partition.
pub(crate) const MAX_RESEEKS: u32 = 3;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Seek to the claimed offset and look again.
    Seek,
    /// The log has no record there: go on from this one.
    Gap,
    /// Give up: the message says why (and never advises an action that would skip or
    /// repeat records).
    Stop(String),
}

/// Per partition: claim generation, first offset delivered before the last seek, seeks.
#[derive(Debug, Default)]
pub(crate) struct Reseeks {
    seen: HashMap<TopicPartition, (u64, i64, u32)>,
}

impl Reseeks {
    /// Decide about `tp` (claim `generation`, claimed offset `claimed`) whose first
    /// delivered record is at `first`.
    pub(crate) fn verdict(
        &mut self,
        job: &str,
        tp: &TopicPartition,
        generation: u64,
        claimed: i64,
        first: i64,
    ) -> Verdict {
        let prior = self
            .seen
            .get(tp)
            .copied()
            .filter(|(g, _, _)| *g == generation);
        match prior {
            None => {
                tracing::warn!(partition = %tp, claimed, first, "first record after a claim is not at the claimed offset; seeking to it");
                self.seen.insert(tp.clone(), (generation, first, 1));
                Verdict::Seek
            }
            Some((_, seen, _)) if seen == first && first > claimed => Verdict::Gap,
            Some((_, seen, tries)) if seen != first && tries < MAX_RESEEKS => {
                self.seen.insert(tp.clone(), (generation, first, tries + 1));
                Verdict::Seek
            }
            Some((_, _, tries)) => {
                let why = if first < claimed {
                    "the consumer delivers from before it after seeking there: the offset lies beyond what the log holds (was the topic recreated or truncated, or do these offsets belong to another cluster?). weir neither skips nor replays records on its own: restore the topic's records or point the job at the cluster its offsets belong to. The offsets row is this job's exactly-once progress; editing or deleting it makes the job skip or repeat records"
                } else {
                    "the consumer's position does not follow the seek"
                };
                Verdict::Stop(format!(
                    "stored next_offset {claimed} of {tp} (job `{job}`): first record delivered at {first} after {tries} seek(s) to it; {why}"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp() -> TopicPartition {
        TopicPartition::new("t", 0)
    }

    #[test]
    fn a_gap_is_accepted_after_one_seek() {
        let mut r = Reseeks::default();
        assert_eq!(r.verdict("j", &tp(), 1, 10, 12), Verdict::Seek);
        assert_eq!(r.verdict("j", &tp(), 1, 10, 12), Verdict::Gap);
    }

    #[test]
    fn delivery_before_the_claim_stops_after_max_seeks_without_unsafe_advice() {
        let mut r = Reseeks::default();
        assert_eq!(r.verdict("j", &tp(), 1, 100, 0), Verdict::Seek);
        // same record before the claimed offset again: not a gap
        let v = r.verdict("j", &tp(), 1, 100, 0);
        let Verdict::Stop(msg) = v else {
            panic!("expected a stop, got {v:?}")
        };
        assert!(msg.contains("t-0") && msg.contains("job `j`") && msg.contains("100"));
        assert!(!msg.to_lowercase().contains("delete that"));
    }

    #[test]
    fn moving_first_offsets_are_sought_up_to_the_limit() {
        let mut r = Reseeks::default();
        assert_eq!(r.verdict("j", &tp(), 1, 10, 20), Verdict::Seek);
        assert_eq!(r.verdict("j", &tp(), 1, 10, 15), Verdict::Seek);
        assert_eq!(r.verdict("j", &tp(), 1, 10, 14), Verdict::Seek);
        assert!(matches!(r.verdict("j", &tp(), 1, 10, 13), Verdict::Stop(_)));
    }

    #[test]
    fn a_new_claim_starts_over() {
        let mut r = Reseeks::default();
        assert_eq!(r.verdict("j", &tp(), 1, 10, 20), Verdict::Seek);
        assert_eq!(r.verdict("j", &tp(), 2, 10, 20), Verdict::Seek);
    }
}
