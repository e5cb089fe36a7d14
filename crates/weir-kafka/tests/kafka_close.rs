//! close() is bounded even when the broker is gone, and wakeup() interrupts a blocked
//! poll without losing what the interrupted fetch brought.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_core::{AutoOffsetReset, Consumer, Error, NoopListener, Subscription};
use weir_kafka::KafkaConsumer;
use weir_testkit::tansu::TansuBroker;
use weir_testkit::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_returns_in_bounded_time_after_the_broker_is_killed() {
    // A broker of its own: this test kills it.
    let broker = TansuBroker::start().unwrap_or_else(|e| panic!("{e}"));
    broker.create_topic("close-gone", 2).unwrap();
    let producer = common::producer(&broker.bootstrap());
    for p in 0..2 {
        common::produce_one(&producer, "close-gone", p, None, b"x")
            .await
            .unwrap();
    }
    let config = common::base_config(&broker.bootstrap(), Some("close-gone-group"))
        .with_auto_offset_reset(AutoOffsetReset::Earliest);
    let mut consumer = KafkaConsumer::new(config).unwrap();
    consumer.set_close_timeout(Duration::from_secs(3));
    consumer
        .subscribe(Subscription::topics(["close-gone"]), Arc::new(NoopListener))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = 0;
    while got < 2 {
        assert!(Instant::now() < deadline, "records never arrived");
        got += consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap()
            .len();
    }
    broker.kill();
    // The close has work to do against the dead broker: an auto-commit, leaving the group.
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(30), consumer.close()).await;
    let took = started.elapsed();
    assert!(
        outcome.is_ok(),
        "close() did not return within 30 s with the broker gone (close timeout 3 s)"
    );
    assert!(
        matches!(consumer.poll(Duration::ZERO).await, Err(Error::Closed)),
        "a closed consumer must refuse to poll"
    );
    eprintln!("close with the broker gone took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakeup_interrupts_a_blocked_poll_and_loses_nothing() {
    let backend = common::KafkaBackend::new();
    let topic = backend.unique("wakeup");
    backend.create_topic(&topic, 1).await.unwrap();
    let group = backend.unique("wakeup-group");
    let config = backend
        .config(Some(&group))
        .with_auto_offset_reset(AutoOffsetReset::Earliest);
    let mut consumer = KafkaConsumer::new(config).unwrap();
    consumer
        .subscribe(
            Subscription::topics([topic.clone()]),
            Arc::new(NoopListener),
        )
        .await
        .unwrap();
    // Join the group first (nothing to read yet).
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumer.assignment().is_empty() {
        assert!(Instant::now() < deadline, "never assigned");
        consumer.poll(Duration::from_millis(100)).await.unwrap();
    }

    // A poll that would block for a minute: another thread wakes it up.
    let handle = consumer.wakeup_handle();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let waker = std::thread::spawn(move || {
        let _ = ready_rx.recv();
        handle.wakeup();
    });
    let started = Instant::now();
    let _ = ready_tx.send(());
    let outcome = consumer.poll(Duration::from_secs(60)).await;
    assert!(
        matches!(outcome, Err(Error::Wakeup)),
        "expected Wakeup, got {outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "wakeup did not interrupt the poll"
    );
    waker.join().unwrap();

    // Records produced now arrive in full, in order, exactly once, across wakeups.
    for i in 0..50u32 {
        backend
            .produce(&topic, 0, None, format!("v{i}").as_bytes())
            .await
            .unwrap();
    }
    let mut offsets = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while offsets.len() < 50 {
        assert!(Instant::now() < deadline, "got only {offsets:?}");
        if offsets.len() == 10 {
            consumer.wakeup_handle().wakeup();
        }
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(batch) => offsets.extend(batch.iter().map(|r| r.offset)),
            Err(Error::Wakeup) => {}
            Err(e) => panic!("poll failed: {e}"),
        }
    }
    assert_eq!(offsets, (0..50).collect::<Vec<i64>>());
    consumer.close().await.unwrap();
}

/// Records what the listener was told.
#[derive(Default)]
struct Told(std::sync::Mutex<Vec<&'static str>>);

#[weir_core::async_trait]
impl weir_core::RebalanceListener for Told {
    async fn on_partitions_assigned(
        &self,
        _: &[weir_core::TopicPartition],
        _: &mut weir_core::RebalanceContext,
    ) -> weir_core::Result<()> {
        self.0.lock().unwrap().push("assigned");
        Ok(())
    }
    async fn on_partitions_revoked(
        &self,
        _: &[weir_core::TopicPartition],
        _: &mut weir_core::RebalanceContext,
    ) -> weir_core::Result<()> {
        self.0.lock().unwrap().push("revoked");
        Ok(())
    }
    async fn on_partitions_lost(&self, _: &[weir_core::TopicPartition]) -> weir_core::Result<()> {
        self.0.lock().unwrap().push("lost");
        Ok(())
    }
}

/// A member that stopped polling past `max.poll.interval.ms` has been evicted; when it
/// then closes, its listener hears `on_partitions_lost` (the partitions are someone
/// else's), not `on_partitions_revoked` (which would commit for them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_after_eviction_tells_the_listener_lost_not_revoked() {
    use rdkafka::consumer::Consumer as _;
    let backend = common::KafkaBackend::new();
    let topic = backend.unique("close-evicted");
    backend.create_topic(&topic, 1).await.unwrap();
    let group = backend.unique("close-evicted-group");
    let base = backend.config(Some(&group));
    // librdkafka wants max.poll.interval.ms >= session.timeout.ms.
    let config = base.clone().with_max_poll_interval(base.session_timeout());
    let told = Arc::new(Told::default());
    let mut consumer = KafkaConsumer::new(config).unwrap();
    consumer
        .subscribe(Subscription::topics([topic.clone()]), told.clone())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumer.assignment().is_empty() {
        assert!(Instant::now() < deadline, "never assigned");
        consumer.poll(Duration::from_millis(100)).await.unwrap();
    }
    // Stop polling until librdkafka says the member was evicted.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !consumer.rdkafka().unwrap().assignment_lost() {
        assert!(
            Instant::now() < deadline,
            "not evicted 60 s after polling stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    consumer.close().await.unwrap();
    let told = told.0.lock().unwrap().clone();
    assert_eq!(told, vec!["assigned", "lost"], "what the listener was told");
}
