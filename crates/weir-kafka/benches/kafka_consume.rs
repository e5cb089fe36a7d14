//! Consume throughput: weir-kafka's consumer against plain rdkafka, in one run.
//!
//! Starts a tansu broker, produces `WEIR_BENCH_RECORDS` (default 1,000,000) records of
//! ~100 bytes into a 4-partition topic, then reads them all, from the beginning, with:
//!   (a) rdkafka `BaseConsumer`, polled in a loop (the ceiling),
//!   (b) rdkafka `StreamConsumer`, `recv().await` per record (what users often write),
//!   (c) weir-kafka's `KafkaConsumer` (`poll` returns batches of `max.poll.records`).
//! Every reader touches each payload (sums the lengths) and must see every record.
//! Each reader runs `WEIR_BENCH_ROUNDS` times (default 2, interleaved); the best round
//! counts. `WEIR_BENCH_ONLY=c` runs only reader c (e.g. under a profiler). The clock
//! starts at the first record, so connecting and joining are not measured. Prints
//! records/s and the ratios c/a and c/b.
//!
//! ```text
//! cargo bench -p weir-kafka --bench kafka_consume
//! WEIR_BENCH_RECORDS=200000 cargo bench -p weir-kafka --bench kafka_consume
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::topic_partition_list::{Offset as RdOffset, TopicPartitionList};
use rdkafka::{ClientConfig, Message as _};
use weir_core::{AutoOffsetReset, Consumer as _, ConsumerConfig, TopicPartition};
use weir_kafka::KafkaConsumer;
use weir_testkit::tansu::TansuBroker;

const TOPIC: &str = "bench-consume";
const PARTITIONS: i32 = 4;
const VALUE_LEN: usize = 100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// librdkafka settings shared by every reader, so that only the API on top differs.
fn common(config: &mut ClientConfig, bootstrap: &str, group: &str) {
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.queue.backoff.ms", "0");
}

fn assignment() -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        let _ = tpl.add_partition_offset(TOPIC, p, RdOffset::Beginning);
    }
    tpl
}

fn produce(bootstrap: &str, n: usize) -> anyhow::Result<Duration> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let value = vec![b'x'; VALUE_LEN - 12];
    let started = Instant::now();
    for i in 0..n {
        let key = format!("{i:012}");
        let mut record = BaseRecord::<String, Vec<u8>>::to(TOPIC)
            .partition((i % PARTITIONS as usize) as i32)
            .key(&key)
            .payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) => {
                    if !matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        anyhow::bail!("producing record {i}: {e}");
                    }
                    producer.poll(Duration::from_millis(10));
                    record = r;
                }
            }
        }
        if i % 10_000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(300))?;
    Ok(started.elapsed())
}

/// (records, bytes, seconds from first to last record)
type Outcome = (usize, usize, f64);

fn base_consumer(bootstrap: &str, n: usize, round: usize) -> anyhow::Result<Outcome> {
    let mut config = ClientConfig::new();
    common(&mut config, bootstrap, &format!("bench-base-{round}"));
    let consumer: BaseConsumer = config.create()?;
    consumer.assign(&assignment())?;
    let (mut count, mut bytes, mut first) = (0usize, 0usize, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    while count < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "BaseConsumer got only {count} of {n}"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            first.get_or_insert_with(Instant::now);
            bytes += m.payload().map_or(0, <[u8]>::len);
            count += 1;
        }
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    Ok((count, bytes, secs))
}

async fn stream_consumer(bootstrap: &str, n: usize, round: usize) -> anyhow::Result<Outcome> {
    let mut config = ClientConfig::new();
    common(&mut config, bootstrap, &format!("bench-stream-{round}"));
    let consumer: StreamConsumer = config.create()?;
    consumer.assign(&assignment())?;
    let (mut count, mut bytes, mut first) = (0usize, 0usize, None);
    let mut stream = consumer.stream();
    while count < n {
        let next = tokio::time::timeout(Duration::from_secs(60), stream.next()).await;
        let m = match next {
            Ok(Some(m)) => m?,
            _ => anyhow::bail!("StreamConsumer got only {count} of {n}"),
        };
        first.get_or_insert_with(Instant::now);
        bytes += m.payload().map_or(0, <[u8]>::len);
        count += 1;
    }
    let secs = first.map_or(0.0, |f: Instant| f.elapsed().as_secs_f64());
    Ok((count, bytes, secs))
}

async fn weir_consumer(bootstrap: &str, n: usize, round: usize) -> anyhow::Result<Outcome> {
    let config = ConsumerConfig::new()
        .with_bootstrap_servers(format!("kafka://{bootstrap}"))
        .with_group_id(format!("bench-weir-{round}"))
        .with_enable_auto_commit(false)
        .with_auto_offset_reset(AutoOffsetReset::Earliest)
        .with("fetch.queue.backoff.ms", "0")?;
    let mut consumer = KafkaConsumer::new(config)?;
    let tps: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(TOPIC, p))
        .collect();
    consumer.assign(&tps).await?;
    consumer.seek_to_beginning(&tps)?;
    let (mut count, mut bytes, mut first) = (0usize, 0usize, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    while count < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "weir-kafka got only {count} of {n}"
        );
        let batch = consumer.poll(Duration::from_millis(100)).await?;
        if !batch.is_empty() {
            first.get_or_insert_with(Instant::now);
        }
        for r in &batch {
            bytes += r.value.as_ref().map_or(0, |v| v.len());
            count += 1;
        }
    }
    let secs = first.map_or(0.0, |f: Instant| f.elapsed().as_secs_f64());
    consumer.close().await?;
    Ok((count, bytes, secs))
}

fn rate((count, _, secs): Outcome) -> f64 {
    // The first record starts the clock.
    (count.saturating_sub(1)) as f64 / secs.max(1e-9)
}

fn main() -> anyhow::Result<()> {
    // `cargo test --benches` / `cargo bench -- --list`: nothing to run there.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return Ok(());
    }
    let n = env_usize("WEIR_BENCH_RECORDS", 1_000_000);
    let rounds = env_usize("WEIR_BENCH_ROUNDS", 2).max(1);
    let broker = TansuBroker::start()?;
    broker.create_topic(TOPIC, PARTITIONS)?;
    let bootstrap = broker.bootstrap();
    let took = produce(&bootstrap, n)?;
    println!(
        "produced {n} records of {VALUE_LEN} bytes to {PARTITIONS} partitions in {:.1} s ({:.0} rec/s)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // WEIR_BENCH_ONLY=c (or a, b, ac, ...) runs only those readers (for profiling).
    let only = std::env::var("WEIR_BENCH_ONLY").unwrap_or_else(|_| "abc".into());
    let (mut a, mut b, mut c) = (0f64, 0f64, 0f64);
    for round in 0..rounds {
        let mut ra = 0.0;
        let mut rb = 0.0;
        let mut rc = 0.0;
        if only.contains('a') {
            ra = rate(base_consumer(&bootstrap, n, round)?);
        }
        if only.contains('b') {
            rb = rate(rt.block_on(stream_consumer(&bootstrap, n, round))?);
        }
        if only.contains('c') {
            rc = rate(rt.block_on(weir_consumer(&bootstrap, n, round))?);
        }
        println!("round {round}: (a) BaseConsumer {ra:.0} rec/s, (b) StreamConsumer {rb:.0} rec/s, (c) weir-kafka {rc:.0} rec/s");
        a = a.max(ra);
        b = b.max(rb);
        c = c.max(rc);
    }
    println!("best of {rounds} rounds, {n} records each:");
    println!("  (a) rdkafka BaseConsumer   {a:>12.0} rec/s");
    println!("  (b) rdkafka StreamConsumer {b:>12.0} rec/s");
    println!("  (c) weir-kafka             {c:>12.0} rec/s");
    println!(
        "  c/a = {:.2} (aim >= 0.8), c/b = {:.2} (aim >= 1.5)",
        c / a,
        c / b
    );
    Ok(())
}
