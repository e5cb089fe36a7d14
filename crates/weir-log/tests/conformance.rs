//! weir's conformance suite (weir-testkit) run against the embedded log: every test
//! gets a fresh log directory.

use std::time::Duration;

use weir_core::{async_trait, Consumer, ConsumerConfig, Result, TopicPartition};
use weir_log::{Log, LogConsumer, LogOptions, NewRecord};
use weir_testkit::Backend;

/// The embedded log in a temporary directory, removed when the test ends.
struct LogBackend {
    dir: tempfile::TempDir,
    log: Log,
}

impl LogBackend {
    fn new() -> Result<Self> {
        let dir =
            tempfile::tempdir().map_err(|e| weir_core::Error::io("temporary directory", e))?;
        let log = Log::open(dir.path(), LogOptions::default())?;
        Ok(Self { dir, log })
    }
}

#[async_trait]
impl Backend for LogBackend {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        self.log.create_topic(topic, partitions)
    }

    async fn add_partitions(&self, topic: &str, total: i32) -> Result<()> {
        self.log.add_partitions(topic, total)
    }

    async fn produce(
        &self,
        topic: &str,
        partition: i32,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<i64> {
        let record = match key {
            Some(k) => NewRecord::new(k.to_vec(), value.to_vec()),
            None => NewRecord::value(value.to_vec()),
        };
        self.log
            .append(&TopicPartition::new(topic, partition), &[record])
    }

    fn config(&self, group: Option<&str>) -> ConsumerConfig {
        let config = ConsumerConfig::new()
            .with_bootstrap_servers(format!("log://{}", self.dir.path().display()))
            .with_session_timeout(Duration::from_millis(1500))
            .with_heartbeat_interval(Duration::from_millis(300))
            .with_max_poll_interval(Duration::from_millis(5000))
            .with_auto_commit_interval(Duration::from_millis(250));
        match group {
            Some(g) => config.with_group_id(g),
            None => config,
        }
    }

    async fn consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>> {
        Ok(Box::new(LogConsumer::new(&self.log, config)?))
    }

    /// Dropping a `LogConsumer` without `close()` is a crash: the group is not told.
    async fn abandon(&self, consumer: Box<dyn Consumer>) {
        drop(consumer);
    }

    fn poll_timeout(&self) -> Duration {
        Duration::from_millis(50)
    }

    fn patience(&self) -> Duration {
        Duration::from_secs(10)
    }
}

weir_testkit::conformance_suite!(LogBackend::new()?);

weir_testkit::suite_self_test!(LogBackend::new()?);
