//! The Kafka backend of the conformance suite and helpers shared by weir-kafka's
//! integration tests: a tansu broker (one per test binary), a producer, consumers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
// Each test binary uses a part of these helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use weir_core::{async_trait, Consumer, ConsumerConfig, Error, Result};
use weir_kafka::KafkaConsumer;
use weir_testkit::tansu::TansuBroker;
use weir_testkit::Backend;

/// The test binary's broker. Fails the test (never skips) when tansu is missing.
pub fn broker() -> &'static TansuBroker {
    match TansuBroker::shared() {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

/// Settings every test client uses: short session (tests wait for it), quick
/// heartbeats, and `fetch.queue.backoff.ms=0` (without it librdkafka sometimes stalls
/// about a second before fetching again).
pub fn base_config(bootstrap: &str, group: Option<&str>) -> ConsumerConfig {
    let c = ConsumerConfig::new()
        .with_bootstrap_servers(format!("kafka://{bootstrap}"))
        .with_session_timeout(Duration::from_millis(6000))
        .with_heartbeat_interval(Duration::from_millis(1000))
        .with_auto_commit_interval(Duration::from_millis(1000))
        .with("fetch.queue.backoff.ms", "0")
        .and_then(|c| c.with("topic.metadata.refresh.interval.ms", "1000"))
        .unwrap_or_else(|e| panic!("test config: {e}"));
    match group {
        Some(g) => c.with_group_id(g),
        None => c,
    }
}

/// A producer that sends one record per request: tansu answers ListOffsets "latest"
/// with the last batch's base offset + 1, which is only right when every batch holds
/// one record (see DEVELOPERS.md, "Known broker faults").
pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .create()
        .unwrap_or_else(|e| panic!("creating the test producer: {e}"))
}

pub async fn produce_one(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: Option<&[u8]>,
    value: &[u8],
) -> Result<i64> {
    let mut rec = FutureRecord::<[u8], [u8]>::to(topic)
        .partition(partition)
        .payload(value);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    match producer.send(rec, Duration::from_secs(30)).await {
        Ok(d) => Ok(d.offset),
        Err((e, _)) => Err(Error::Backend {
            backend: "kafka",
            message: format!("producing to {topic}-{partition}: {e}"),
            retriable: false,
        }),
    }
}

/// weir-kafka as a conformance-suite backend, on the shared tansu broker.
pub struct KafkaBackend {
    broker: &'static TansuBroker,
    producer: &'static FutureProducer,
    /// `client.id` of each consumer handed out, by the address of its box, so that
    /// `abandon` can cut that client off at the broker's proxy.
    clients: Mutex<HashMap<usize, String>>,
}

impl KafkaBackend {
    pub fn new() -> Self {
        static PRODUCER: OnceLock<FutureProducer> = OnceLock::new();
        let broker = broker();
        let producer = PRODUCER.get_or_init(|| producer(&broker.bootstrap()));
        Self {
            broker,
            producer,
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn broker(&self) -> &'static TansuBroker {
        self.broker
    }
}

fn key_of(c: &dyn Consumer) -> usize {
    c as *const dyn Consumer as *const u8 as usize
}

#[async_trait]
impl Backend for KafkaBackend {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let broker = self.broker;
        let name = topic.to_owned();
        tokio::task::spawn_blocking(move || broker.create_topic(&name, partitions))
            .await
            .map_err(|e| Error::IllegalState(e.to_string()))?
            .map_err(|e| Error::Backend {
                backend: "kafka",
                message: e.to_string(),
                retriable: false,
            })
    }

    async fn add_partitions(&self, topic: &str, total: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.broker.bootstrap())
            .create()
            .map_err(|e| Error::IllegalState(format!("admin client: {e}")))?;
        let np = NewPartitions::new(topic, total as usize);
        let res = admin
            .create_partitions([&np], &AdminOptions::new())
            .await
            .map_err(|e| Error::Backend {
                backend: "kafka",
                message: format!("create_partitions {topic}: {e}"),
                retriable: false,
            })?;
        for r in res {
            if let Err((t, code)) = r {
                return Err(Error::Backend {
                    backend: "kafka",
                    message: format!("create_partitions {t}: {code}"),
                    retriable: false,
                });
            }
        }
        Ok(())
    }

    async fn produce(
        &self,
        topic: &str,
        partition: i32,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<i64> {
        produce_one(self.producer, topic, partition, key, value).await
    }

    fn config(&self, group: Option<&str>) -> ConsumerConfig {
        base_config(&self.broker.bootstrap(), group)
    }

    async fn consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>> {
        let mut config = config;
        if config.client_id().is_empty() {
            config = config.with_client_id(weir_testkit::unique_name("weir-test"));
        }
        let client_id = config.client_id().to_owned();
        let consumer: Box<dyn Consumer> = Box::new(KafkaConsumer::new(config)?);
        if let Ok(mut m) = self.clients.lock() {
            m.insert(key_of(&*consumer), client_id);
        }
        Ok(consumer)
    }

    /// librdkafka heartbeats from its own thread, so leaking the consumer is not a
    /// crash: the proxy in front of the broker cuts this client off instead (it can
    /// neither heartbeat nor leave the group), and the consumer is leaked.
    async fn abandon(&self, consumer: Box<dyn Consumer>) {
        let id = self
            .clients
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&key_of(&*consumer)));
        match id {
            Some(id) => {
                if let Err(e) = self.broker.cut_client(&id) {
                    panic!("cutting client {id} off: {e}");
                }
            }
            None => panic!("abandon: consumer was not made by this backend"),
        }
        std::mem::forget(consumer);
    }

    fn rejects_unknown_keys(&self) -> bool {
        // Unknown keys pass to librdkafka, which rejects the ones it does not know.
        true
    }

    fn passthrough_keys(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("socket.keepalive.enable", "true"),
            ("statistics.interval.ms", "0"),
            ("fetch.queue.backoff.ms", "0"),
        ]
    }

    fn poll_timeout(&self) -> Duration {
        Duration::from_millis(100)
    }

    fn patience(&self) -> Duration {
        Duration::from_secs(30)
    }

    fn cannot_add_partitions(&self) -> Option<&'static str> {
        // Broker fault, see DEVELOPERS.md: tansu 0.6 does not implement CreatePartitions;
        // librdkafka reports UnsupportedFeature. The scenarios check it still refuses.
        Some("tansu 0.6 does not implement CreatePartitions (librdkafka: UnsupportedFeature)")
    }

    /// tansu holds every JoinGroup round for about half `session.timeout.ms`
    /// (measured: 3 s → 2.0 s, 6 s → 3.1 s, 12 s → 6.1 s); see DEVELOPERS.md.
    fn rebalance_delay(&self) -> Duration {
        self.config(None).session_timeout() / 2
    }
}
