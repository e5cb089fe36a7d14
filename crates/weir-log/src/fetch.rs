//! Positions and fetching for [`LogConsumer`](crate::LogConsumer): resolving a start
//! position against the log's bounds and `auto.offset.reset`, and reading a poll's worth
//! of records fairly across partitions.
//!
//! The embedded log is local, so there is no prefetch: every poll reads straight from
//! the log at each partition's position. A seek therefore never has stale records to
//! discard.

use std::collections::BTreeMap;

use weir_core::{AutoOffsetReset, Error, Offset, Record, Result, TopicPartition};

use crate::Log;

/// Where a partition will be read next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pos {
    /// Not yet known: resolved (committed offset, log bounds, reset policy) before the
    /// next fetch.
    Pending(Offset),
    /// The offset of the next record to deliver.
    At(i64),
}

/// One assigned partition.
#[derive(Clone, Debug)]
pub(crate) struct PartState {
    pub pos: Pos,
    pub paused: bool,
}

impl PartState {
    pub(crate) fn new() -> Self {
        Self {
            pos: Pos::Pending(Offset::Stored),
            paused: false,
        }
    }
}

/// Applies `auto.offset.reset` to a partition whose position is missing or outside
/// `start..=end`.
fn reset(
    tp: &TopicPartition,
    policy: AutoOffsetReset,
    position: Option<i64>,
    (start, end): (i64, i64),
) -> Result<i64> {
    match policy {
        AutoOffsetReset::Earliest => Ok(start),
        AutoOffsetReset::Latest => Ok(end),
        AutoOffsetReset::None => Err(Error::NoOffset {
            partition: tp.clone(),
            position,
            log_start: start,
            log_end: end,
        }),
    }
}

/// Resolves a start position. `committed` is the group's committed offset of `tp`.
pub(crate) fn resolve(
    log: &Log,
    tp: &TopicPartition,
    offset: Offset,
    committed: Option<i64>,
    policy: AutoOffsetReset,
) -> Result<i64> {
    let bounds = log.offsets(tp)?;
    let (start, end) = bounds;
    let check = |o: i64| {
        if o < start || o > end {
            if o < start {
                tracing::warn!(partition = %tp, position = o, log_start = start, %policy,
                    "position below the log start (retention); applying auto.offset.reset");
            } else {
                tracing::warn!(partition = %tp, position = o, log_end = end, %policy,
                    "position beyond the log end; applying auto.offset.reset");
            }
            reset(tp, policy, Some(o), bounds)
        } else {
            Ok(o)
        }
    };
    match offset {
        Offset::Beginning => Ok(start),
        Offset::End => Ok(end),
        Offset::At(o) => check(o),
        Offset::Stored => match committed {
            Some(c) => check(c),
            None => reset(tp, policy, None, bounds),
        },
    }
}

/// Resolves every pending position; `committed` is read once, and only if needed.
pub(crate) fn resolve_all(
    log: &Log,
    parts: &mut BTreeMap<TopicPartition, PartState>,
    group: Option<&str>,
    policy: AutoOffsetReset,
    include_paused: bool,
) -> Result<()> {
    let mut committed: Option<BTreeMap<TopicPartition, i64>> = None;
    for (tp, st) in parts.iter_mut() {
        let Pos::Pending(offset) = st.pos else {
            continue;
        };
        if st.paused && !include_paused {
            // resolved when resumed: a paused partition whose position cannot be
            // resolved (auto.offset.reset=none) must not fail the others' fetch
            continue;
        }
        let stored = if offset == Offset::Stored {
            match (&committed, group) {
                (Some(c), _) => c.get(tp).copied(),
                (None, Some(g)) => {
                    let c = log.group_offsets(g)?;
                    let v = c.get(tp).copied();
                    committed = Some(c);
                    v
                }
                (None, None) => None,
            }
        } else {
            None
        };
        st.pos = Pos::At(resolve(log, tp, offset, stored, policy)?);
    }
    Ok(())
}

/// Limits of one poll.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FetchLimits {
    pub max_records: usize,
    pub max_partition_bytes: usize,
}

/// Reads up to `limits.max_records` records from the unpaused partitions, each in
/// offset order, advancing their positions. Fair: the first pass gives each partition
/// an equal share, starting at `rotation` (so the same partition does not always go
/// first); a second pass fills what is left.
pub(crate) fn fetch(
    log: &Log,
    parts: &mut BTreeMap<TopicPartition, PartState>,
    rotation: usize,
    limits: FetchLimits,
    group: Option<&str>,
    policy: AutoOffsetReset,
) -> Result<Vec<Record>> {
    resolve_all(log, parts, group, policy, false)?;
    let order: Vec<TopicPartition> = parts
        .iter()
        .filter(|(_, s)| !s.paused)
        .map(|(tp, _)| tp.clone())
        .collect();
    if order.is_empty() {
        return Ok(Vec::new());
    }
    let n = order.len();
    let share = limits.max_records.div_ceil(n).max(1);
    // Each partition's records stay contiguous and in order; partitions appear in
    // the order they were first served, with the position they had before.
    let mut served: Vec<(TopicPartition, i64, Vec<Record>)> = Vec::new();
    let mut count = 0usize;
    // A poll that fails part-way delivers nothing, so the positions of partitions
    // already read in it go back to where they were: their records are read again by
    // the next poll instead of being skipped (and auto-committed past).
    let undo = |parts: &mut BTreeMap<TopicPartition, PartState>,
                served: &[(TopicPartition, i64, Vec<Record>)]| {
        for (tp, before, _) in served {
            if let Some(st) = parts.get_mut(tp) {
                st.pos = Pos::At(*before);
            }
        }
    };
    for pass in 0..2 {
        for i in 0..n {
            let remaining = limits.max_records.saturating_sub(count);
            if remaining == 0 {
                break;
            }
            let tp = &order[(rotation + i) % n];
            let want = if pass == 0 {
                remaining.min(share)
            } else {
                remaining
            };
            let Some(st) = parts.get_mut(tp) else {
                continue;
            };
            let Pos::At(pos) = st.pos else {
                continue;
            };
            match log.read(tp, pos, want, limits.max_partition_bytes) {
                Ok(mut records) => {
                    records.truncate(remaining);
                    let Some(last) = records.last() else {
                        continue;
                    };
                    st.pos = Pos::At(last.offset + 1);
                    count += records.len();
                    match served.iter_mut().find(|(t, _, _)| t == tp) {
                        Some((_, _, v)) => v.extend(records),
                        None => served.push((tp.clone(), pos, records)),
                    }
                }
                Err(Error::OffsetOutOfRange { .. }) => {
                    // Retention moved the log start past us (or the topic was
                    // recreated): resolve again with auto.offset.reset.
                    match resolve(log, tp, Offset::At(pos), None, policy) {
                        Ok(o) => st.pos = Pos::At(o),
                        Err(e) => {
                            undo(parts, &served);
                            return Err(e);
                        }
                    }
                }
                Err(e) => {
                    undo(parts, &served);
                    return Err(e);
                }
            }
        }
    }
    Ok(served.into_iter().flat_map(|(_, _, v)| v).collect())
}
