//! Tearing librdkafka's consumer down: one consumer close, made by `BaseConsumer`'s
//! `Drop`.
//!
//! rdkafka's `BaseConsumer::drop` always closes the consumer of a group
//! (`rd_kafka_consumer_close_queue`, then polls until `rd_kafka_consumer_closed`) and
//! then destroys the handle. librdkafka closes a consumer once: a second close gets
//! `RD_KAFKA_RESP_ERR__DESTROY` ("Consumer already closed", rdkafka's `BrokerDestroy`).
//! weir used to make its own close in `close()` and then drop the handle, so every
//! normal close ended with rdkafka logging
//! `ERROR Failed to close consumer queue on drop: ... BrokerDestroy`. And a consumer
//! dropped without `close()` never left its group: the revoke that librdkafka's close
//! raises was captured by weir's callback for a task that no longer polls, so the close
//! in `Drop` waited for it forever (the group saw the member only at the session
//! timeout, and the thread and its librdkafka handle were never freed).
//!
//! So weir no longer closes the consumer itself: `close()` does weir's part (the
//! listener, the final commits, the outcomes of async commits) and then hands the last
//! reference to [`teardown`], where the drop makes librdkafka's one close. The close
//! still leaves the group at once: librdkafka sends LeaveGroup, and
//! `rd_kafka_consumer_closed` turns true only once it was answered. With
//! [`Shared::begin_close`] set, weir's callback carries out the revoke itself.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::types::RDKafkaRespErr;

use super::offsets::tpl_plain;
use super::Rd;
use crate::context::{carry_out, RebalanceEvent, Shared};

/// How long a consumer dropped without `close()` waits, on its own thread, for the
/// other holders of the librdkafka handle (a fetch, the commit thread) to let it go.
pub(super) const DROP_PATIENCE: Duration = Duration::from_secs(30);

/// Drop the librdkafka consumer once nothing else holds it (waiting until `give_up_at`
/// at most), so that `BaseConsumer`'s `Drop` makes the one consumer close here: it
/// leaves the group and returns once the broker answered, or when the broker is gone
/// and librdkafka gives up. Blocks: call it on a thread of its own. Returns false when
/// another holder still had the handle at `give_up_at` (that holder's drop closes it).
pub(super) fn teardown(rd: Arc<Rd>, shared: &Shared, give_up_at: Instant) -> bool {
    shared.begin_close();
    let mut rd = rd;
    let rd = loop {
        match Arc::try_unwrap(rd) {
            Ok(rd) => break rd,
            Err(still_shared) => {
                if Instant::now() >= give_up_at {
                    return false;
                }
                rd = still_shared;
                thread::sleep(Duration::from_millis(5));
            }
        }
    };
    // A rebalance captured before the teardown began and not handled by the consumer's
    // task: librdkafka waits for it to be carried out (its group state sits in "wait
    // for assign call"), its close included. Nothing else polls now: carry it out.
    while let Some(ev) = shared.take_rebalance() {
        let (err, partitions) = match ev {
            RebalanceEvent::Assign(p) => (RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, p),
            RebalanceEvent::Revoke { partitions, .. } => (
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS,
                partitions,
            ),
        };
        carry_out(&rd, err, &tpl_plain(&partitions));
    }
    drop(rd);
    true
}
