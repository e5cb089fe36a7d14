//! The librdkafka callbacks: rebalances are captured, not applied.
//!
//! librdkafka calls the rebalance callback inside `BaseConsumer::poll`, on the thread
//! that polls. The default callback assigns at once, which starts fetching from the
//! committed offset before weir's (async) [`RebalanceListener`](weir_core::RebalanceListener)
//! had a say. [`WeirContext`] instead records the event and returns without assigning;
//! librdkafka waits (its group state machine sits in "wait for assign call") until the
//! consumer's task has run the listener and calls `assign` / `incremental_assign` with
//! the chosen offsets in the partition list, so fetching starts exactly there.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use weir_core::TopicPartition;

use crate::config::Redactor;

/// A rebalance librdkafka asked the application to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RebalanceEvent {
    /// Partitions to add (cooperative) or the whole new assignment (eager).
    Assign(Vec<TopicPartition>),
    /// Partitions to give up. `lost`: the member was evicted; they already belong to
    /// someone else.
    Revoke {
        partitions: Vec<TopicPartition>,
        lost: bool,
    },
}

/// The outcome of one asynchronous offset commit: its id, and the error code and text
/// of a failure.
pub(crate) type CommitOutcome = (u64, Result<(), (Option<RDKafkaErrorCode>, String)>);

/// State shared between the librdkafka callbacks (on the polling thread) and the
/// consumer's task.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    rebalances: Mutex<VecDeque<RebalanceEvent>>,
    has_rebalance: AtomicBool,
    commits: Mutex<Vec<CommitOutcome>>,
    pub(crate) commit_done: tokio::sync::Notify,
    /// Set when the consumer is being torn down: from then on the rebalance callback
    /// carries rebalances out itself (see [`WeirContext::rebalance`]).
    closing: AtomicBool,
}

impl Shared {
    pub(crate) fn has_rebalance(&self) -> bool {
        self.has_rebalance.load(Ordering::SeqCst)
    }

    pub(crate) fn take_rebalance(&self) -> Option<RebalanceEvent> {
        let mut q = self.rebalances.lock();
        let ev = q.pop_front();
        self.has_rebalance.store(!q.is_empty(), Ordering::SeqCst);
        ev
    }

    fn push_rebalance(&self, ev: RebalanceEvent) {
        let mut q = self.rebalances.lock();
        q.push_back(ev);
        self.has_rebalance.store(true, Ordering::SeqCst);
    }

    /// From now on rebalances are carried out in the callback, not captured.
    pub(crate) fn begin_close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    pub(crate) fn take_commits(&self) -> Vec<CommitOutcome> {
        std::mem::take(&mut *self.commits.lock())
    }

    pub(crate) fn push_commit(&self, outcome: CommitOutcome) {
        self.commits.lock().push(outcome);
        self.commit_done.notify_waiters();
    }
}

/// weir-kafka's librdkafka context (the `C` of [`KafkaConsumer::rdkafka`](crate::KafkaConsumer::rdkafka)'s
/// `BaseConsumer<C>`): captures rebalances for the consumer's task instead of assigning,
/// and sends librdkafka's log lines and errors to `tracing` (target `librdkafka`) with
/// secret configuration values replaced by `***`. Made by [`KafkaConsumer::new`](crate::KafkaConsumer::new);
/// users never build one. Its `Debug` shows nothing of the configuration.
///
/// ```
/// use rdkafka::consumer::Consumer as _;
/// let config = weir_core::ConsumerConfig::new()
///     .with_bootstrap_servers("127.0.0.1:9092")
///     .with("sasl.password", "hunter2")?;
/// let consumer = weir_kafka::KafkaConsumer::new(config)?;
/// let context: &weir_kafka::WeirContext = consumer.rdkafka().expect("open consumer").context();
/// assert!(!format!("{context:?}").contains("hunter2"));
/// # Ok::<(), weir_core::Error>(())
/// ```
pub struct WeirContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) redactor: Redactor,
}

impl std::fmt::Debug for WeirContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeirContext").finish_non_exhaustive()
    }
}

pub(crate) fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

impl ClientContext for WeirContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let msg = self.redactor.clean(log_message);
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{msg}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{msg}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{msg}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{msg}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error
            .rdkafka_error_code()
            .map(|c| format!("{c:?}"))
            .unwrap_or_default();
        let reason = self.redactor.clean(reason);
        tracing::warn!(target: "librdkafka", code, "{reason}");
    }
}

impl ConsumerContext for WeirContext {
    fn rebalance(
        &self,
        base_consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        if self.shared.closing() {
            // Being torn down (`close()` or a drop): librdkafka's consumer close runs
            // in `BaseConsumer`'s `Drop`, whose poll loop serves the revoke the close
            // raises. No task of weir's will ever handle a captured event, and the
            // close cannot finish (nor LeaveGroup be sent) until the revoke is carried
            // out, so carry it out here, as rdkafka's default callback does. The
            // listener already ran in `close()` (a drop runs none). Once the close has
            // begun librdkafka treats an assign as an unassign; one served just before
            // is revoked by the close that follows.
            carry_out(base_consumer, err, tpl);
            return;
        }
        let partitions = partitions_of(tpl);
        let ev = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                RebalanceEvent::Assign(partitions)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => RebalanceEvent::Revoke {
                partitions,
                lost: base_consumer.assignment_lost(),
            },
            other => {
                // librdkafka's own handler gives everything up on an error; weir does
                // the same, treating the partitions as lost.
                tracing::warn!(target: "weir_kafka", error = ?other, "rebalance error: giving up the assignment");
                let all = base_consumer
                    .assignment()
                    .map(|a| partitions_of(&a))
                    .unwrap_or(partitions);
                RebalanceEvent::Revoke {
                    partitions: all,
                    lost: true,
                }
            }
        };
        self.shared.push_rebalance(ev);
    }
}

/// Carry a rebalance out the way librdkafka expects it for the group's protocol,
/// without weir's listener or start offsets: only while the consumer is torn down.
pub(crate) fn carry_out(
    rd: &BaseConsumer<WeirContext>,
    err: RDKafkaRespErr,
    tpl: &TopicPartitionList,
) {
    let cooperative = matches!(rd.rebalance_protocol(), RebalanceProtocol::Cooperative);
    let r = match (err, cooperative) {
        (RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, true) => rd.incremental_assign(tpl),
        (RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, false) => rd.assign(tpl),
        (_, true) => rd.incremental_unassign(tpl),
        (_, false) => rd.unassign(),
    };
    if let Err(e) = r {
        tracing::debug!(target: "weir_kafka", error = %e, "carrying out a rebalance while closing");
    }
}
