//! Poll throughput of `LogConsumer` beside its baselines in the same run: the same
//! records read straight from the log with `Log::read`, 500 per call (the consumer's
//! default `max.poll.records`) and 125 per call (what a poll over 4 busy partitions
//! reads from each: its fair share), which is what every poll does underneath. The ratio
//! shows what the consumer layer costs (positions, fairness, batching, and for the
//! subscribed variant the group heartbeat on every poll).
//!
//! `cargo bench -p weir-log --bench consumer_poll -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weir_core::{
    AutoOffsetReset, Consumer, ConsumerConfig, NoopListener, Offset, Subscription, TopicPartition,
};
use weir_log::{Durability, Log, LogConsumer, LogOptions, NewRecord};

const PARTITIONS: i32 = 4;
const PER_PARTITION: i64 = 25_000;
const TOTAL: usize = (PARTITIONS as i64 * PER_PARTITION) as usize;

fn bench_poll(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogOptions::default()
            .with_durability(Durability::Os)
            .with_segment_bytes(256 << 20),
    )
    .unwrap();
    log.create_topic("bench", PARTITIONS).unwrap();
    let tps: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new("bench", p))
        .collect();
    for tp in &tps {
        let mut i = 0;
        while i < PER_PARTITION {
            let batch: Vec<NewRecord> = (i..i + 100)
                .map(|i| NewRecord::new(format!("key-{i:08}"), vec![(i % 251) as u8; 150]))
                .collect();
            log.append(tp, &batch).unwrap();
            i += 100;
        }
    }
    log.flush().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut group = c.benchmark_group("consume/4x25k");
    group.throughput(Throughput::Elements(TOTAL as u64));
    group.sample_size(10);

    group.bench_function("baseline_log_read_125", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for tp in &tps {
                let mut at = 0;
                while at < PER_PARTITION {
                    let records = log.read(tp, at, 125, 1 << 20).unwrap();
                    at = records.last().unwrap().offset + 1;
                    n += records.len();
                    black_box(&records);
                }
            }
            assert_eq!(n, TOTAL);
        })
    });

    group.bench_function("baseline_log_read_500", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for tp in &tps {
                let mut at = 0;
                while at < PER_PARTITION {
                    let records = log.read(tp, at, 500, 1 << 20).unwrap();
                    at = records.last().unwrap().offset + 1;
                    n += records.len();
                    black_box(&records);
                }
            }
            assert_eq!(n, TOTAL);
        })
    });

    let config = ConsumerConfig::new()
        .with_auto_offset_reset(AutoOffsetReset::Earliest)
        .with_enable_auto_commit(false);
    let mut assigned = LogConsumer::new(&log, config.clone()).unwrap();
    rt.block_on(assigned.assign(&tps)).unwrap();
    group.bench_function("consumer_assigned_poll_500", |b| {
        b.iter(|| {
            for tp in &tps {
                assigned.seek(tp, Offset::Beginning).unwrap();
            }
            let n = rt.block_on(async {
                let mut n = 0;
                while n < TOTAL {
                    n += black_box(assigned.poll(Duration::from_secs(5)).await.unwrap()).len();
                }
                n
            });
            assert_eq!(n, TOTAL);
        })
    });

    let mut subscribed = LogConsumer::new(&log, config.with_group_id("bench")).unwrap();
    rt.block_on(async {
        subscribed
            .subscribe(Subscription::topics(["bench"]), Arc::new(NoopListener))
            .await
            .unwrap();
        while subscribed.assignment().len() < PARTITIONS as usize {
            subscribed.poll(Duration::from_millis(1)).await.unwrap();
        }
    });
    group.bench_function("consumer_subscribed_poll_500", |b| {
        b.iter(|| {
            for tp in &tps {
                subscribed.seek(tp, Offset::Beginning).unwrap();
            }
            let n = rt.block_on(async {
                let mut n = 0;
                while n < TOTAL {
                    n += black_box(subscribed.poll(Duration::from_secs(5)).await.unwrap()).len();
                }
                n
            });
            assert_eq!(n, TOTAL);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_poll);
criterion_main!(benches);
