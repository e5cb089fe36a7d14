//! Partition lists and start offsets: what a seek or an assignment resolves to.

use std::collections::BTreeMap;

use rdkafka::consumer::Consumer as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::{Offset as RdOffset, TopicPartitionList};
use weir_core::{AutoOffsetReset, Error, Offset, Result, TopicPartition};

use super::{backend, Rd, REQUEST_TIMEOUT};
use crate::config::Redactor;
use crate::error::from_kafka;

pub(crate) fn tpl_of(map: &BTreeMap<TopicPartition, i64>) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::with_capacity(map.len());
    for (tp, off) in map {
        tpl.add_partition_offset(tp.topic(), tp.partition(), RdOffset::Offset(*off))
            .map_err(|e| backend(format!("building the partition list for {tp}: {e}")))?;
    }
    Ok(tpl)
}

pub(crate) fn tpl_plain(tps: &[TopicPartition]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(tps.len());
    for tp in tps {
        tpl.add_partition(tp.topic(), tp.partition());
    }
    tpl
}

/// Resolve start offsets to numbers: the listener's (or user's) seek, else the group's
/// committed offset, else `auto.offset.reset`. Out-of-range offsets get the reset
/// policy as well. Runs on a blocking thread.
pub(crate) fn resolve(
    rd: &Rd,
    targets: &BTreeMap<TopicPartition, Offset>,
    use_committed: bool,
    reset: AutoOffsetReset,
    redactor: &Redactor,
) -> (
    BTreeMap<TopicPartition, i64>,
    BTreeMap<TopicPartition, Error>,
) {
    let mut out = BTreeMap::new();
    let mut failed = BTreeMap::new();
    let mut committed: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    let stored: Vec<TopicPartition> = targets
        .iter()
        .filter(|(_, o)| matches!(o, Offset::Stored))
        .map(|(tp, _)| tp.clone())
        .collect();
    if use_committed && !stored.is_empty() {
        match rd.committed_offsets(tpl_plain(&stored), REQUEST_TIMEOUT) {
            Ok(tpl) => {
                for e in tpl.elements() {
                    if let RdOffset::Offset(o) = e.offset() {
                        committed.insert(TopicPartition::new(e.topic(), e.partition()), o);
                    }
                }
            }
            Err(e) => {
                let err = from_kafka("reading committed offsets", &e, redactor);
                for tp in stored {
                    failed.insert(tp, clone_error(&err));
                }
            }
        }
    }
    for (tp, target) in targets {
        if failed.contains_key(tp) {
            continue;
        }
        let (low, high) = match rd.fetch_watermarks(tp.topic(), tp.partition(), REQUEST_TIMEOUT) {
            Ok(w) => w,
            Err(e) => {
                failed.insert(tp.clone(), watermark_error(tp, &e, redactor));
                continue;
            }
        };
        let reset_to = |position: Option<i64>| match reset {
            AutoOffsetReset::Earliest => Ok(low),
            AutoOffsetReset::Latest => Ok(high),
            AutoOffsetReset::None => Err(Error::NoOffset {
                partition: tp.clone(),
                position,
                log_start: low,
                log_end: high,
            }),
        };
        let start = match target {
            Offset::Beginning => Ok(low),
            Offset::End => Ok(high),
            Offset::At(n) if (low..=high).contains(n) => Ok(*n),
            Offset::At(n) => reset_to(Some(*n)),
            Offset::Stored => match committed.get(tp) {
                Some(c) if (low..=high).contains(c) => Ok(*c),
                Some(c) => reset_to(Some(*c)),
                None => reset_to(None),
            },
        };
        match start {
            Ok(s) => {
                out.insert(tp.clone(), s);
            }
            Err(e) => {
                failed.insert(tp.clone(), e);
            }
        }
    }
    (out, failed)
}

pub(crate) fn watermark_error(tp: &TopicPartition, e: &KafkaError, redactor: &Redactor) -> Error {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) | Some(RDKafkaErrorCode::UnknownTopic) => {
            Error::UnknownTopic {
                topic: tp.topic().to_owned(),
            }
        }
        Some(RDKafkaErrorCode::UnknownPartition) => Error::UnknownPartition(tp.clone()),
        _ => from_kafka(&format!("reading the watermarks of {tp}"), e, redactor),
    }
}

/// weir-core's `Error` is not `Clone`; the variants weir-kafka repeats are rebuilt.
pub(crate) fn clone_error(e: &Error) -> Error {
    match e {
        Error::NoOffset {
            partition,
            position,
            log_start,
            log_end,
        } => Error::NoOffset {
            partition: partition.clone(),
            position: *position,
            log_start: *log_start,
            log_end: *log_end,
        },
        Error::UnknownTopic { topic } => Error::UnknownTopic {
            topic: topic.clone(),
        },
        Error::UnknownPartition(tp) => Error::UnknownPartition(tp.clone()),
        other => Error::Backend {
            backend: "kafka",
            message: other.to_string(),
            retriable: other.is_retriable(),
        },
    }
}
