//! Model-based property test: random appends (random sizes, null keys and values,
//! headers), reads with random offsets and limits, reopens and retention, checked
//! against a plain vector of what was appended.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use proptest::prelude::*;
use weir_core::{Header, TopicPartition};
use weir_log::{Durability, Log, LogOptions, NewRecord};

/// Key, value and whether the record gets a header.
type Rec = (Option<Vec<u8>>, Option<Vec<u8>>, bool);

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<Rec>),
    Read {
        at: u16,
        max_records: u8,
        max_bytes: u16,
    },
    Reopen,
    Retention,
}

fn op() -> impl Strategy<Value = Op> {
    let payload = prop::option::weighted(0.9, prop::collection::vec(any::<u8>(), 0..600));
    prop_oneof![
        6 => prop::collection::vec((payload.clone(), payload, any::<bool>()), 1..6).prop_map(Op::Append),
        4 => (any::<u16>(), 1u8..40, 1u16..5000).prop_map(|(at, max_records, max_bytes)| Op::Read { at, max_records, max_bytes }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Retention),
    ]
}

fn to_record(i: usize, (k, v, h): &Rec) -> NewRecord {
    NewRecord {
        key: k.clone().map(Bytes::from),
        value: v.clone().map(Bytes::from),
        headers: if *h {
            vec![Header::new(format!("h{i}"), vec![i as u8])]
        } else {
            Vec::new()
        },
        timestamp: Some(i as i64),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_a_vector_model(ops in prop::collection::vec(op(), 1..60), durability in 0u8..3) {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions::default()
            .with_durability(match durability {
                0 => Durability::Always,
                1 => Durability::Os,
                _ => Durability::Interval(std::time::Duration::from_millis(5)),
            })
            .with_segment_bytes(2048)
            .with_retention_bytes(Some(8192));
        let tp = TopicPartition::new("model", 0);
        let mut log = Log::open(dir.path(), options.clone()).unwrap();
        log.create_topic("model", 1).unwrap();
        let mut model: Vec<NewRecord> = Vec::new();
        for op in ops {
            match op {
                Op::Append(recs) => {
                    let batch: Vec<NewRecord> = recs.iter().enumerate().map(|(k, r)| to_record(model.len() + k, r)).collect();
                    let first = log.append(&tp, &batch).unwrap();
                    prop_assert_eq!(first, model.len() as i64);
                    model.extend(batch);
                }
                Op::Read { at, max_records, max_bytes } => {
                    let (start, end) = log.offsets(&tp).unwrap();
                    prop_assert_eq!(end, model.len() as i64);
                    prop_assert!(start <= end);
                    let at = i64::from(at) % (end + 2);
                    match log.read(&tp, at, usize::from(max_records), usize::from(max_bytes)) {
                        Ok(rs) => {
                            prop_assert!(at >= start && at <= end);
                            prop_assert!(rs.len() <= usize::from(max_records));
                            if at < end {
                                prop_assert!(!rs.is_empty());
                            }
                            for (k, r) in rs.iter().enumerate() {
                                let want = &model[(at as usize) + k];
                                prop_assert_eq!(r.offset, at + k as i64);
                                prop_assert_eq!(&r.key, &want.key);
                                prop_assert_eq!(&r.value, &want.value);
                                prop_assert_eq!(&r.headers, &want.headers);
                                prop_assert_eq!(r.timestamp, want.timestamp);
                            }
                        }
                        Err(weir_core::Error::OffsetOutOfRange { .. }) => prop_assert!(at < start || at > end),
                        Err(e) => return Err(TestCaseError::fail(format!("read at {at}: {e}"))),
                    }
                }
                Op::Reopen => {
                    let before = log.offsets(&tp).unwrap();
                    drop(log);
                    log = Log::open(dir.path(), options.clone()).unwrap();
                    prop_assert_eq!(log.offsets(&tp).unwrap(), before);
                }
                Op::Retention => {
                    let (before, _) = log.offsets(&tp).unwrap();
                    log.apply_retention().unwrap();
                    let (after, end) = log.offsets(&tp).unwrap();
                    prop_assert!(after >= before && after <= end);
                }
            }
        }
    }
}
