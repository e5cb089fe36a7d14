//! Sequential read throughput of the embedded log (every record decoded into a
//! `Record` with zero-copy `Bytes` payloads, every batch CRC-checked), beside a
//! raw-file baseline in the same run: plain `read(2)`s of the same segment file into
//! a reused 1 MiB buffer. Both read from the page cache. Two record sizes: small
//! (100-199 byte values, where per-record costs dominate) and 1 KiB values.
//!
//! `cargo bench -p weir-log --bench log_read -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::io::Read;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weir_core::TopicPartition;
use weir_log::{Durability, Log, LogOptions, NewRecord};

fn bench_read(c: &mut Criterion) {
    for (name, records, value_len) in [
        ("small_values", 100_000i64, None),
        ("1k_values", 20_000, Some(1024usize)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(
            dir.path(),
            LogOptions::default()
                .with_durability(Durability::Os)
                .with_segment_bytes(256 << 20),
        )
        .unwrap();
        log.create_topic("bench", 1).unwrap();
        let tp = TopicPartition::new("bench", 0);
        let mut i = 0;
        while i < records {
            let batch: Vec<NewRecord> = (i..i + 100)
                .map(|i| {
                    let len = value_len.unwrap_or(100 + (i % 100) as usize);
                    NewRecord::new(format!("key-{i:08}"), vec![(i % 251) as u8; len])
                })
                .collect();
            log.append(&tp, &batch).unwrap();
            i += 100;
        }
        log.flush().unwrap();
        let segment = log
            .partition_dir(&tp)
            .unwrap()
            .join("00000000000000000000.log");
        let bytes = std::fs::metadata(&segment).unwrap().len();

        let mut group = c.benchmark_group(format!("read/{name}"));
        group.throughput(Throughput::Bytes(bytes));
        group.sample_size(20);
        group.bench_function("log_500_per_read", |b| {
            b.iter(|| {
                let mut at = 0;
                let mut sum = 0usize;
                while at < records {
                    let batch = log.read(&tp, at, 500, 1 << 20).unwrap();
                    for r in &batch {
                        sum += r.value.as_ref().map_or(0, |v| v.len());
                    }
                    at = batch.last().unwrap().offset + 1;
                }
                black_box(sum)
            });
        });
        group.bench_function("raw_read", |b| {
            let mut buf = vec![0u8; 1 << 20];
            b.iter(|| {
                let mut f = std::fs::File::open(&segment).unwrap();
                let mut sum = 0usize;
                loop {
                    let n = f.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    sum += n;
                }
                black_box(sum)
            });
        });
        group.finish();
    }
}

criterion_group!(benches, bench_read);
criterion_main!(benches);
