//! Kafka through librdkafka (feature `kafka`): partition ranges (watermarks) and
//! producing.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

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

/// A consumer that only asks the broker questions (it never joins the group).
fn client(servers: &str) -> anyhow::Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "weir-cli-watermarks")
        .set("enable.auto.commit", "false")
        .create()
        .with_context(|| format!("cannot create a Kafka client for {servers}"))
}

/// `partition → (low, high watermark)` of `topic`; `Ok(None)` if it does not exist.
pub fn ranges(servers: &str, topic: &str) -> anyhow::Result<Option<BTreeMap<i32, (i64, i64)>>> {
    let consumer = client(servers)?;
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

/// `partition → offset` of the first record at or after `ms` on every partition of
/// `topic` (Kafka's `ListOffsets` by timestamp); the high watermark where every record
/// is older.
pub fn offsets_for_time(
    servers: &str,
    topic: &str,
    ms: i64,
    only: Option<&std::collections::BTreeSet<i32>>,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let Some(mut ranges) = ranges(servers, topic)? else {
        bail!("topic `{topic}` does not exist in Kafka at {servers}");
    };
    if let Some(only) = only {
        ranges.retain(|p, _| only.contains(p));
    }
    let consumer = client(servers)?;
    let mut query = TopicPartitionList::new();
    for &p in ranges.keys() {
        query
            .add_partition_offset(topic, p, Offset::Offset(ms))
            .with_context(|| format!("cannot ask for {topic}/{p} at time {ms}"))?;
    }
    let answer = consumer
        .offsets_for_times(query, TIMEOUT)
        .with_context(|| {
            format!("cannot look up time {ms} ms in topic `{topic}` at Kafka {servers}")
        })?;
    let mut out = BTreeMap::new();
    for e in answer.elements() {
        if let Err(err) = e.error() {
            bail!(
                "Kafka at {servers} could not look up time {ms} ms in {topic}/{}: {err}",
                e.partition()
            );
        }
        let range = ranges.get(&e.partition()).copied().unwrap_or((0, 0));
        let offset = match e.offset() {
            Offset::Offset(o) => o,
            // No record at or after the time: the end.
            Offset::End => range.1,
            other => bail!(
                "Kafka at {servers} answered {other:?} for {topic}/{} at time {ms} ms",
                e.partition()
            ),
        };
        check_time_answer(&consumer, servers, topic, e.partition(), range, offset, ms)?;
        out.insert(e.partition(), offset);
    }
    Ok(out)
}

/// The answer for time `ms` must be the first record from `ms` on: the record at
/// `offset` (unless it is the end) is from `ms` or later, and the record just before
/// it (unless it is the start, or a gap) is older. Checked, so a broker whose time
/// index is wrong (tansu 0.6 answers 0 for every time) fails the reset instead of
/// moving the job somewhere else.
fn check_time_answer(
    consumer: &BaseConsumer,
    servers: &str,
    topic: &str,
    partition: i32,
    (low, high): (i64, i64),
    offset: i64,
    ms: i64,
) -> anyhow::Result<()> {
    let wrong = |at: i64, ts: i64| {
        anyhow::anyhow!(
            "Kafka at {servers} answered offset {offset} for {topic}/{partition} at time {ms} ms, but the record at {at} is from {ts} ms: the broker's time index is wrong; nothing was changed (use --to-offset)"
        )
    };
    if offset < high {
        if let (at, Some(ts)) = first_record_from(consumer, servers, topic, partition, offset)? {
            if at == offset && ts < ms {
                return Err(wrong(at, ts));
            }
        }
    }
    if offset > low {
        if let (at, Some(ts)) = first_record_from(consumer, servers, topic, partition, offset - 1)?
        {
            if at == offset - 1 && ts >= ms {
                return Err(wrong(at, ts));
            }
        }
    }
    Ok(())
}

/// `(offset, timestamp)` of the first record of `topic`/`partition` at or after
/// `from`; an error if none arrives within the timeout.
fn first_record_from(
    consumer: &BaseConsumer,
    servers: &str,
    topic: &str,
    partition: i32,
    from: i64,
) -> anyhow::Result<(i64, Option<i64>)> {
    use rdkafka::message::Message;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .with_context(|| format!("cannot assign {topic}/{partition}"))?;
    consumer
        .assign(&tpl)
        .with_context(|| format!("cannot read {topic}/{partition} at Kafka {servers}"))?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if m.offset() >= from => {
                return Ok((m.offset(), m.timestamp().to_millis()))
            }
            Some(Ok(_)) | None => {}
            Some(Err(e)) => bail!("cannot read {topic}/{partition} at Kafka {servers}: {e}"),
        }
    }
    bail!("cannot read {topic}/{partition} from offset {from} at Kafka {servers} within {TIMEOUT:?} to check the broker's answer; nothing was changed")
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

/// The delivery report of the one record a [`Replayer`] has in flight.
#[derive(Debug, Default)]
struct LastDelivery(Mutex<Option<Result<i64, String>>>);

impl ClientContext for LastDelivery {}

impl ProducerContext for LastDelivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        let r = match result {
            Ok(m) => Ok(rdkafka::Message::offset(m)),
            Err((e, _)) => Err(e.to_string()),
        };
        if let Ok(mut last) = self.0.lock() {
            *last = Some(r);
        }
    }
}

/// A record header read back: name and value (`None`: a null value).
pub type Header = (String, Option<Vec<u8>>);

/// How long one replayed record may take to be acknowledged.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Appends dead letters to Kafka one acknowledged record at a time (idempotent,
/// `acks=all`), and scans partitions for the replay marker.
pub struct Replayer {
    servers: String,
    producer: rdkafka::producer::BaseProducer<LastDelivery>,
}

impl Replayer {
    pub fn new(servers: &str) -> anyhow::Result<Replayer> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .create_with_context(LastDelivery::default())
            .with_context(|| format!("cannot create a Kafka producer for {servers}"))?;
        Ok(Replayer {
            servers: servers.to_owned(),
            producer,
        })
    }

    /// `partition → (low, high watermark)` of `topic`; `Ok(None)` if it does not exist.
    pub fn ranges(&self, topic: &str) -> anyhow::Result<Option<BTreeMap<i32, (i64, i64)>>> {
        ranges(&self.servers, topic)
    }

    /// Sends one record to `topic`/`partition` and waits for its acknowledgement: its
    /// offset. A record whose outcome is not known within the delivery timeout is an
    /// error; its replay stays pending, and the next replay finds it in the partition
    /// or sends it.
    pub fn append(
        &self,
        topic: &str,
        partition: i32,
        record: &weir_log::NewRecord,
    ) -> anyhow::Result<i64> {
        let mut headers = rdkafka::message::OwnedHeaders::new();
        for h in &record.headers {
            headers = headers.insert(rdkafka::message::Header {
                key: &h.key,
                value: h.value.as_deref(),
            });
        }
        let mut r = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .headers(headers);
        if let Some(k) = record.key.as_deref() {
            r = r.key(k);
        }
        if let Some(v) = record.value.as_deref() {
            r = r.payload(v);
        }
        if let Ok(mut last) = self.producer.context().0.lock() {
            *last = None;
        }
        self.producer.send(r).map_err(|(e, _)| {
            anyhow::anyhow!(
                "cannot send to {topic}/{partition} at Kafka {}: {e}",
                self.servers
            )
        })?;
        let deadline = std::time::Instant::now() + DELIVERY_TIMEOUT + Duration::from_secs(5);
        loop {
            self.producer.poll(Duration::from_millis(50));
            let got = self
                .producer
                .context()
                .0
                .lock()
                .ok()
                .and_then(|mut l| l.take());
            match got {
                Some(Ok(offset)) => return Ok(offset),
                Some(Err(e)) => bail!(
                    "Kafka at {} refused the record for {topic}/{partition}: {e}",
                    self.servers
                ),
                None if std::time::Instant::now() > deadline => bail!(
                    "no acknowledgement from Kafka at {} for {topic}/{partition} within {DELIVERY_TIMEOUT:?}",
                    self.servers
                ),
                None => {}
            }
        }
    }

    /// Calls `each(offset, headers)` for every record of `topic`/`partition` from
    /// `from` up to `end` (exclusive).
    pub fn scan(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        end: i64,
        each: &mut dyn FnMut(i64, Vec<Header>),
    ) -> anyhow::Result<()> {
        use rdkafka::message::{Headers, Message};
        if from >= end {
            return Ok(());
        }
        let consumer = client(&self.servers)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))
            .with_context(|| format!("cannot assign {topic}/{partition}"))?;
        consumer.assign(&tpl).with_context(|| {
            format!("cannot read {topic}/{partition} at Kafka {}", self.servers)
        })?;
        // Given up only when no record arrives for a while (a long range takes as
        // long as it takes). Records after an open transaction are read too
        // (librdkafka's default `read_uncommitted`): a copy is looked for, not used.
        let mut deadline = std::time::Instant::now() + TIMEOUT * 3;
        loop {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    deadline = std::time::Instant::now() + TIMEOUT * 3;
                    let headers = m
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default();
                    let offset = m.offset();
                    if offset < end {
                        each(offset, headers);
                    }
                    if offset + 1 >= end {
                        return Ok(());
                    }
                }
                Some(Err(e)) => bail!(
                    "cannot read {topic}/{partition} at Kafka {}: {e}",
                    self.servers
                ),
                None => {}
            }
            // A tail of transaction markers has no record to reach `end` with.
            let position = consumer.position().ok().and_then(|p| {
                match p.find_partition(topic, partition).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                }
            });
            if position.is_some_and(|p| p >= end) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "no record of {topic}/{partition} (reading from {from} to {end}) arrived from Kafka at {} for {:?}",
                    self.servers,
                    TIMEOUT * 3
                );
            }
        }
    }
}
