//! Kafka through librdkafka (feature `kafka`): partition ranges (watermarks) and
//! producing.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};

/// Counts failed deliveries (the default context only logs them).
#[derive(Debug, Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = self.first_error.lock() {
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// `partition → (low, high watermark)` of `topic`; `Ok(None)` if it does not exist.
pub fn ranges(servers: &str, topic: &str) -> anyhow::Result<Option<BTreeMap<i32, (i64, i64)>>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "weir-cli-watermarks")
        .set("enable.auto.commit", "false")
        .create()
        .with_context(|| format!("cannot create a Kafka client for {servers}"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .with_context(|| {
            format!("cannot read the metadata of topic `{topic}` from Kafka at {servers}")
        })?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if t.error().is_some() || t.partitions().is_empty() {
        return Ok(None);
    }
    let mut out = BTreeMap::new();
    for p in t.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), TIMEOUT)
            .with_context(|| {
                format!(
                    "cannot read the watermarks of {topic}/{} from Kafka at {servers}",
                    p.id()
                )
            })?;
        out.insert(p.id(), (low, high));
    }
    Ok(Some(out))
}

/// An idempotent producer (`acks=all`) that sends `(key, value)` records to `topic`
/// and waits for every acknowledgement; returns how many were acknowledged.
pub fn produce(
    servers: &str,
    properties: &[(String, String)],
    topic: &str,
    records: &mut dyn Iterator<Item = crate::produce::InputRecord>,
    on_sent: &mut dyn FnMut(u64),
) -> anyhow::Result<u64> {
    if ranges(servers, topic)?.is_none() {
        bail!("topic `{topic}` does not exist in Kafka at {servers}; create it first");
    }
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5");
    for (k, v) in properties {
        config.set(k, v);
    }
    let producer: ThreadedProducer<Deliveries> = config
        .create_with_context(Deliveries::default())
        .with_context(|| format!("cannot create a Kafka producer for {servers}"))?;
    let mut sent = 0u64;
    for r in records {
        let (key, value) = r?;
        let mut record = BaseRecord::<Vec<u8>, Vec<u8>>::to(topic).payload(&value);
        if let Some(k) = &key {
            record = record.key(k);
        }
        let mut pending = record;
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((e, back))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    producer.poll(Duration::from_millis(50));
                    pending = back;
                }
                Err((e, _)) => bail!("cannot send to `{topic}` at Kafka {servers}: {e}"),
            }
        }
        sent += 1;
        on_sent(sent);
    }
    producer.flush(Duration::from_secs(60)).with_context(|| {
        format!("not every record was acknowledged by Kafka at {servers} within 60 s")
    })?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = producer
            .context()
            .first_error
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default();
        bail!("{failed} of {sent} record(s) were not delivered to `{topic}` at Kafka {servers}: {first}");
    }
    Ok(sent)
}
