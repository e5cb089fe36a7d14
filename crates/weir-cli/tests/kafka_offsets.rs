//! With the `kafka` feature: `weir produce --bootstrap kafka://…` and an offsets
//! reset checked against Kafka's watermarks, against the broker `scripts/provision`
//! starts on 127.0.0.1:9092.
#![cfg(feature = "kafka")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::{create_topic, unique, weir, BROKER};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

/// Sends `(partition, timestamp)` records one acknowledged record at a time (one
/// batch each): tansu answers ListOffsets "latest" with the last batch's base offset
/// + 1 (DEVELOPERS.md, "Known broker faults"), which is the true end only so.
async fn send_one_by_one(topic: &str, records: &[(i32, Option<i64>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .create()
        .unwrap();
    for &(partition, ts) in records {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .payload(b"{}");
        if let Some(ts) = ts {
            record = record.timestamp(ts);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn produce_to_kafka_then_reset_to_the_high_watermark() {
    let topic = unique("cli_orders");
    create_topic(&topic, 2).await;
    let bootstrap = format!("kafka://{BROKER}");
    let run = weir([
        "produce",
        "--bootstrap",
        &bootstrap,
        "--topic",
        &topic,
        "--generate",
        "50",
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let out: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(out["records"], 50);

    // Every record arrived (counted by consuming: see below for the watermarks).
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .set("group.id", unique("count"))
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset(&topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < 50 && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            seen.insert((m.partition(), m.offset()));
        }
    }
    assert_eq!(seen.len(), 50);

    // tansu answers ListOffsets "latest" with the last batch's base offset + 1
    // (DEVELOPERS.md, "Known broker faults"), so the reset is checked on a topic
    // written one acknowledged record at a time, where that is the true end.
    let topic = unique("cli_reset");
    create_topic(&topic, 2).await;
    let records: Vec<(i32, Option<i64>)> = (0..10).map(|i| (i % 2, None)).collect();
    send_one_by_one(&topic, &records).await;
    let common::Claimed {
        dir: _dir, // (the database lives in it)
        pool,
        url,
        job,
        store,
        parts,
        claims,
        ..
    } = common::claimed(&topic).await;

    let run = weir([
        "offsets",
        "reset",
        "--db",
        &url,
        "--job",
        &job,
        "--topic",
        &topic,
        "--to-latest",
        "--bootstrap",
        &bootstrap,
        "--execute",
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let out: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let after: i64 = out["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["after"].as_i64().unwrap())
        .sum();
    assert_eq!(after, 10, "{out}");
    for tp in &parts {
        let mut tx = pool.begin().await.unwrap();
        assert!(!store
            .advance(&mut *tx, tp, claims[tp].epoch, None, 1)
            .await
            .unwrap());
    }
    // Beyond the high watermark: refused.
    let run = weir([
        "offsets",
        "reset",
        "--db",
        &url,
        "--job",
        &job,
        "--topic",
        &topic,
        "--to-offset",
        "1000",
        "--bootstrap",
        &bootstrap,
        "--execute",
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("outside the log's range"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("in Kafka at {BROKER}")),
        "{}",
        run.stderr
    );
}

/// `--to-datetime` against Kafka: ListOffsets by timestamp, per partition, and the
/// broker's answer checked against the record it points at. tansu 0.6 answers offset
/// 0 for every time (DEVELOPERS.md, "Known broker faults"): against it the reset is
/// refused naming the wrong answer, and nothing changes; against a broker with a
/// correct time index (the offsets below) it moves.
#[tokio::test]
async fn reset_to_datetime_asks_kafka_for_the_offset_at_that_time() {
    let topic = unique("cli_time");
    create_topic(&topic, 2).await;
    // Partition p: 5 records at t = base + p s + i × 10 s.
    let base: i64 = 1_700_000_000_000;
    let records: Vec<(i32, Option<i64>)> = (0..2)
        .flat_map(|p| (0..5).map(move |i| (p, Some(base + i64::from(p) * 1000 + i * 10_000))))
        .collect();
    send_one_by_one(&topic, &records).await;
    let common::Claimed {
        dir: _dir, // (the database lives in it)
        pool,
        url,
        job,
        store,
        parts,
        ..
    } = common::claimed(&topic).await;
    // base + 20.5 s: partition 0's record 3 (30 s), partition 1's record 2 (21 s).
    let at = chrono::DateTime::from_timestamp_millis(base + 20_500)
        .unwrap()
        .to_rfc3339();
    let run = weir([
        "offsets",
        "reset",
        "--db",
        &url,
        "--job",
        &job,
        "--topic",
        &topic,
        "--to-datetime",
        &at,
        "--bootstrap",
        &format!("kafka://{BROKER}"),
        "--execute",
        "--output",
        "json",
    ]);
    let mut conn = pool.acquire().await.unwrap();
    let p0 = store.read(&mut *conn, &parts[0]).await.unwrap().unwrap();
    let p1 = store.read(&mut *conn, &parts[1]).await.unwrap().unwrap();
    if run.code == 0 {
        assert_eq!(
            (p0.next_offset, p1.next_offset),
            (Some(3), Some(2)),
            "{}",
            run.stdout
        );
    } else {
        assert_eq!(run.code, 1, "{run:?}");
        assert!(
            run.stderr.contains("answered offset 0 for")
                && run
                    .stderr
                    .contains("the broker's time index is wrong; nothing was changed"),
            "{}",
            run.stderr
        );
        assert_eq!(
            (p0.next_offset, p1.next_offset),
            (None, None),
            "nothing changed"
        );
    }
}

/// `weir lag --bootstrap kafka://…`: the high watermark minus the stored offset (a
/// partition never committed lags by all it holds).
#[tokio::test]
async fn lag_against_kafka_is_the_high_watermark_minus_the_stored_offset() {
    let topic = unique("cli_lag");
    create_topic(&topic, 2).await;
    let records: Vec<(i32, Option<i64>)> = (0..12).map(|i| (i % 2, None)).collect();
    send_one_by_one(&topic, &records).await;
    let common::Claimed {
        dir: _dir, // (the database lives in it)
        pool,
        url,
        job,
        store,
        parts,
        claims,
        ..
    } = common::claimed(&topic).await;
    let mut tx = pool.begin().await.unwrap();
    assert!(store
        .advance(&mut *tx, &parts[0], claims[&parts[0]].epoch, None, 2)
        .await
        .unwrap());
    tx.commit().await.unwrap();
    let run = weir([
        "lag",
        "--db",
        &url,
        "--job",
        &job,
        "--bootstrap",
        &format!("kafka://{BROKER}"),
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        common::lag_rows(&run.stdout),
        [(0, 6, 4), (1, 6, 6)],
        "{}",
        run.stdout
    );
}
