//! Append throughput of the embedded log in `Durability::Os` mode, beside a raw-file
//! baseline in the same run: a `BufWriter<File>` writing the identical bytes (the
//! log's own framing, taken from a segment the log wrote) in the same units (one
//! `write_all` per append). Each iteration writes into a fresh directory; the
//! fsync at the end (the log's on close) is outside the timed section for both.
//!
//! `cargo bench -p weir-log --bench log_append -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weir_core::TopicPartition;
use weir_log::{Durability, Log, LogOptions, NewRecord};

const RECORDS: usize = 10_000;

fn workload(batch: usize) -> Vec<Vec<NewRecord>> {
    let records: Vec<NewRecord> = (0..RECORDS)
        .map(|i| {
            NewRecord::new(format!("key-{i:08}"), vec![(i % 251) as u8; 100 + i % 100])
                .with_timestamp(1)
        })
        .collect();
    records.chunks(batch).map(<[NewRecord]>::to_vec).collect()
}

fn options() -> LogOptions {
    LogOptions::default()
        .with_durability(Durability::Os)
        .with_segment_bytes(256 << 20)
}

/// Appends the workload once into a fresh log; returns the segment bytes and their
/// split into appends.
fn framing(dir: &Path, batches: &[Vec<NewRecord>]) -> (Vec<u8>, Vec<usize>) {
    let log = Log::open(dir, options()).unwrap();
    log.create_topic("bench", 1).unwrap();
    let tp = TopicPartition::new("bench", 0);
    for b in batches {
        log.append(&tp, b).unwrap();
    }
    let pdir = log.partition_dir(&tp).unwrap();
    drop(log);
    let bytes = std::fs::read(pdir.join("00000000000000000000.log")).unwrap();
    // Split at batch boundaries (u32 length at +4 of each batch).
    let mut sizes = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize + 8;
        sizes.push(len);
        pos += len;
    }
    (bytes, sizes)
}

fn bench_append(c: &mut Criterion) {
    for batch in [100usize, 1] {
        let batches = workload(batch);
        let scratch = tempfile::tempdir().unwrap();
        let (bytes, sizes) = framing(&scratch.path().join("framing"), &batches);
        let mut group = c.benchmark_group(format!("append/batch_{batch}"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.sample_size(10);
        group.bench_function("log_os", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir_in(scratch.path()).unwrap();
                    let log = Log::open(dir.path(), options()).unwrap();
                    log.create_topic("bench", 1).unwrap();
                    let tp = TopicPartition::new("bench", 0);
                    let start = Instant::now();
                    for b in &batches {
                        black_box(log.append(&tp, b).unwrap());
                    }
                    total += start.elapsed();
                    drop(log); // the close-time fsync is not part of Os-mode appends
                }
                total
            });
        });
        group.bench_function("raw_bufwriter", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir_in(scratch.path()).unwrap();
                    let file = std::fs::File::create(dir.path().join("raw.log")).unwrap();
                    let start = Instant::now();
                    let mut w = std::io::BufWriter::new(file);
                    let mut pos = 0;
                    for &n in &sizes {
                        w.write_all(&bytes[pos..pos + n]).unwrap();
                        pos += n;
                    }
                    w.flush().unwrap();
                    total += start.elapsed();
                    // Untimed, like the log's fsync on close: both leave the disk in
                    // the same state for the next iteration.
                    w.get_ref().sync_all().unwrap();
                }
                total
            });
        });
        group.finish();
    }
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
