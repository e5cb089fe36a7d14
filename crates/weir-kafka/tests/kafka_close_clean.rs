//! A normal `close()` (and a drop without one) tears librdkafka down without an error
//! in the log and still leaves the group at once: the other member owns every
//! partition well before `session.timeout.ms`.
//!
//! rdkafka logs through the `log` crate (its `tracing` feature is off); a subscriber
//! installed with `try_init` also installs tracing-log's bridge, so rdkafka's own
//! `error!("Failed to close consumer queue on drop: ...")` reaches the capture below,
//! as it reaches the `fmt` subscriber of weir-pipeline's tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer;
use weir_core::{Consumer, NoopListener, Subscription, TopicPartition};
use weir_kafka::KafkaConsumer;
use weir_testkit::Backend;

/// Every event at WARN or above, as `LEVEL target: fields`.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(Level, String)>>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::WARN {
            return;
        }
        let mut fields = Fields(format!("{} {}:", meta.level(), meta.target()));
        event.record(&mut fields);
        self.0.lock().unwrap().push((*meta.level(), fields.0));
    }
}

/// The test binary's capture, installed once (global: librdkafka and the consumer's
/// teardown log from threads of their own).
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c = Capture::default();
        tracing_subscriber::registry()
            .with(c.clone())
            .try_init()
            .expect("installing the log capture (with the log bridge)");
        c
    })
}

/// What was logged about this test's consumers at ERROR, or by a close that did not
/// finish cleanly. Tests of this binary run one at a time (a mutex), so what is
/// captured from `from` on is theirs.
fn close_problems(from: usize) -> Vec<String> {
    capture().0.lock().unwrap()[from..]
        .iter()
        .filter(|(level, text)| {
            *level == Level::ERROR
                || text.contains("Failed to close")
                || text.contains("close did not finish cleanly")
                || text.contains("close timed out")
        })
        .map(|(_, text)| text.clone())
        .collect()
}

fn captured_len() -> usize {
    capture().0.lock().unwrap().len()
}

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn poll_all(consumers: &mut [&mut KafkaConsumer]) {
    for c in consumers.iter_mut() {
        c.poll(Duration::from_millis(100)).await.unwrap();
    }
}

/// Two members of one group, one partition each.
async fn two_members(
    backend: &common::KafkaBackend,
    name: &str,
) -> (KafkaConsumer, KafkaConsumer, Vec<TopicPartition>) {
    let topic = backend.unique(name);
    backend.create_topic(&topic, 2).await.unwrap();
    let all: Vec<TopicPartition> = (0..2)
        .map(|p| TopicPartition::new(topic.as_str(), p))
        .collect();
    let group = backend.unique(&format!("{name}-group"));
    let mut members = Vec::new();
    for _ in 0..2 {
        let mut c = KafkaConsumer::new(backend.config(Some(&group))).unwrap();
        c.subscribe(
            Subscription::topics([topic.clone()]),
            Arc::new(NoopListener),
        )
        .await
        .unwrap();
        members.push(c);
    }
    let mut b = members.pop().unwrap();
    let mut a = members.pop().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.assignment().len() != 1 || b.assignment().len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the two members never got one partition each: {:?} / {:?}",
            a.assignment(),
            b.assignment()
        );
        poll_all(&mut [&mut a, &mut b]).await;
    }
    (a, b, all)
}

/// Polls `survivor` until it owns `all`; returns how long that took from `start`.
async fn survivor_takes_over(
    survivor: &mut KafkaConsumer,
    all: &[TopicPartition],
    start: Instant,
) -> Duration {
    let deadline = start + Duration::from_secs(60);
    loop {
        if survivor.assignment().iter().eq(all.iter()) {
            return start.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the survivor never owned every partition"
        );
        survivor.poll(Duration::from_millis(100)).await.unwrap();
    }
}

/// Before the fix, `close()` closed librdkafka's consumer itself (close_queue, then
/// polled until closed) and then dropped the `BaseConsumer`, whose `Drop` closes it a
/// second time: librdkafka answers `__DESTROY` ("Consumer already closed") and rdkafka
/// logs `ERROR Failed to close consumer queue on drop: ... BrokerDestroy` for every
/// consumer closed normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_logs_no_error_and_the_survivor_takes_over_at_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let from = captured_len();
    let backend = common::KafkaBackend::new();
    let session = backend.config(None).session_timeout();
    let (mut a, mut b, all) = two_members(&backend, "close-clean").await;

    let start = Instant::now();
    let close = async {
        let r = a.close().await;
        (r, start.elapsed())
    };
    let ((closed, close_took), took) =
        tokio::join!(close, survivor_takes_over(&mut b, &all, start));
    closed.unwrap();
    eprintln!("close() returned in {close_took:?}");
    // The teardown of the old code ran on a thread after close() returned: give it time.
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!("after close() the survivor owned every partition in {took:?}");
    let problems = close_problems(from);
    assert!(
        problems.is_empty(),
        "close() logged problems:\n{}",
        problems.join("\n")
    );
    // Without a LeaveGroup the survivor waits for the session timeout (and then for
    // tansu's JoinGroup round, about half of it).
    assert!(
        took < session,
        "after close() the survivor should own every partition before session.timeout.ms ({session:?}): it took {took:?}"
    );
    b.close().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let problems = close_problems(from);
    assert!(
        problems.is_empty(),
        "close() logged problems:\n{}",
        problems.join("\n")
    );
}

/// A consumer dropped without `close()` also leaves the group (librdkafka's close in
/// `BaseConsumer`'s `Drop`), without an error: weir's callback carries out the revoke
/// librdkafka raises while closing, which no `poll` of weir's would ever handle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_without_close_logs_no_error_and_leaves_the_group() {
    let _one = ONE_AT_A_TIME.lock().await;
    let from = captured_len();
    let backend = common::KafkaBackend::new();
    let session = backend.config(None).session_timeout();
    let (a, mut b, all) = two_members(&backend, "drop-clean").await;

    let start = Instant::now();
    drop(a);
    let took = survivor_takes_over(&mut b, &all, start).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!("after the drop the survivor owned every partition in {took:?}");
    let problems = close_problems(from);
    assert!(
        problems.is_empty(),
        "dropping the consumer logged problems:\n{}",
        problems.join("\n")
    );
    assert!(
        took < session,
        "after the drop the survivor should own every partition before session.timeout.ms ({session:?}): it took {took:?}"
    );
    b.close().await.unwrap();
}
