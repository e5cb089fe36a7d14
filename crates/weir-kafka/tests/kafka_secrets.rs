//! Secrets canary: a configuration carrying canary passwords; the canaries never appear
//! in Debug or Display output, in errors, or in anything logged while the consumer
//! runs against a broker (librdkafka's own debug logging included).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_core::{Consumer, ConsumerConfig, NoopListener, Subscription};
use weir_kafka::KafkaConsumer;
use weir_testkit::Backend;

const CANARIES: [&str; 4] = [
    "canary-sasl-5d1f",
    "canary-sslkey-77a2",
    "canary-jaas-c0de",
    "canary-truststore-91",
];

/// Everything logged, in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_clean(what: &str, text: &str) {
    for c in CANARIES {
        assert!(!text.contains(c), "canary {c} leaked into {what}: {text}");
    }
}

fn with_secrets(config: ConsumerConfig) -> ConsumerConfig {
    // (This librdkafka is built without OpenSSL: ssl.* secrets are tried below, where
    // librdkafka rejects them.)
    config
        .with("sasl.password", CANARIES[0])
        .and_then(|c| c.with("sasl.username", "visible-user"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_passwords_never_appear_in_debug_errors_or_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Global: librdkafka logs from its own threads.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let backend = common::KafkaBackend::new();
    let topic = backend.unique("secrets");
    backend.create_topic(&topic, 1).await.unwrap();
    backend.produce(&topic, 0, None, b"v").await.unwrap();

    // 1. A working consumer with secrets in its config and librdkafka debug logging on.
    let group = backend.unique("secrets-group");
    let config = with_secrets(backend.config(Some(&group)))
        .with("debug", "all")
        .unwrap()
        .with_auto_offset_reset(weir_core::AutoOffsetReset::Earliest);
    assert_clean("ConsumerConfig Debug", &format!("{config:?}"));
    let mut consumer = KafkaConsumer::new(config).unwrap();
    assert_clean("KafkaConsumer Debug", &format!("{consumer:?}"));
    consumer
        .subscribe(
            Subscription::topics([topic.clone()]),
            Arc::new(NoopListener),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = 0;
    while got == 0 {
        assert!(Instant::now() < deadline, "no record consumed");
        got += consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap()
            .len();
    }
    consumer.close().await.unwrap();

    // 2. Configurations librdkafka rejects, with a canary in a secret next to the bad key.
    for (key, value) in [
        ("ssl.key.password", CANARIES[1]),
        ("ssl.truststore.password", CANARIES[3]),
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanisms", "NOT-A-MECHANISM"),
        ("no.such.property", CANARIES[0]),
    ] {
        let config = with_secrets(backend.config(Some(&group)))
            .with("sasl.jaas.config", CANARIES[2])
            .unwrap()
            .with(key, value)
            .unwrap();
        match KafkaConsumer::new(config) {
            Err(e) => {
                assert_clean("error Display", &e.to_string());
                assert_clean("error Debug", &format!("{e:?}"));
            }
            Ok(c) => assert_clean("KafkaConsumer Debug", &format!("{c:?}")),
        }
    }
    // A bad address: the error names the key, not the secrets.
    let bad = with_secrets(ConsumerConfig::new().with_bootstrap_servers("log:///tmp/nope"));
    let e = KafkaConsumer::new(bad).unwrap_err();
    assert!(e.to_string().contains("bootstrap.servers"), "{e}");
    assert_clean("error Display", &e.to_string());

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("librdkafka"),
        "the test should have captured librdkafka's debug log, it captured {} bytes",
        logs.len()
    );
    assert_clean("the log output", &logs);
}
