//! With the `kafka` feature: `weir produce --bootstrap kafka://…` and an offsets
//! reset checked against Kafka's watermarks, against the broker `scripts/provision`
//! starts on 127.0.0.1:9092.
#![cfg(feature = "kafka")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::{unique, weir};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use weir_core::TopicPartition;
use weir_sql::OffsetStore;

const BROKER: &str = "127.0.0.1:9092";

async fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .create()
        .unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = match tokio::time::timeout(
        Duration::from_secs(15),
        admin.create_topics([&topic], &options),
    )
    .await
    {
        Ok(r) => r.unwrap(),
        Err(_) => panic!("Kafka at {BROKER} did not answer: run scripts/provision"),
    };
    for r in results {
        if let Err((t, e)) = r {
            panic!("creating topic {t} at {BROKER}: {e} (run scripts/provision)");
        }
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
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .create()
        .unwrap();
    for i in 0..10 {
        producer
            .send(
                FutureRecord::<[u8], [u8]>::to(&topic)
                    .partition(i % 2)
                    .payload(b"{}"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (pool, url) = common::sqlite(dir.path()).await;
    let job = unique("job");
    let store = OffsetStore::<sqlx::Sqlite>::new(&job).unwrap();
    store.migrate(&pool).await.unwrap();
    let parts = [
        TopicPartition::new(topic.as_str(), 0),
        TopicPartition::new(topic.as_str(), 1),
    ];
    let claims = store.claim(&pool, &parts, "worker").await.unwrap();

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
