//! The commit task: one database transaction per batch, in the order the batches were
//! read, and the resolution of every outcome that is not a plain success.
//!
//! Per batch: `BEGIN`; the sink's rows; per partition the compare-and-set of its
//! `next_offset` (`… WHERE epoch = mine AND next_offset = expected`); the dead
//! letters; `COMMIT`. The compare-and-set comes before the dead letters: a zombie
//! (resumed after its partitions moved on) learns it is fenced there and rolls back,
//! instead of colliding with dead letters the new owner already committed.
//!
//! | outcome | what happens |
//! |---|---|
//! | committed | the partitions' batches are done |
//! | a compare-and-set refused | roll back; read the offsets rows: already committed (an earlier unknown outcome) → done, moved on → that partition is fenced and dropped, otherwise retried |
//! | connection lost during `COMMIT` | read the offsets rows the same way (committed or not, never applied twice) |
//! | a row the database refuses | isolate the bad records by bisection (see `isolate`) |
//! | a retriable error | retried with backoff for `retry_for`, then `RetriesExhausted` |

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sqlx::{AssertSqlSafe, Pool, Transaction};
use tokio::sync::mpsc;
use weir_core::TopicPartition;
use weir_sql::{DeadLetters, Dialect, Error, OffsetStore, TransactionalSink};

use super::backoff::Backoff;
use super::flight::Flight;
use super::ownership::SharedOwnership;
use super::pending::Pending;
use crate::Summary;

/// A batch handed to the commit task.
pub(crate) struct Sent<T> {
    pub seq: u64,
    pub pending: Pending<T>,
}

/// The state of an offsets row after a refused compare-and-set or an unknown commit.
enum Resolution {
    Committed,
    NotCommitted,
    Fenced(String),
}

pub(crate) struct Committer<DB: Dialect, T, S> {
    pub pool: Pool<DB>,
    pub store: OffsetStore<DB>,
    pub dead_letters: DeadLetters<DB>,
    pub sink: Arc<S>,
    pub state: SharedOwnership,
    pub stats: Arc<Mutex<Summary>>,
    pub retry_for: Duration,
    /// PostgreSQL: `SET LOCAL idle_in_transaction_session_timeout = …`.
    pub idle_sql: Option<Arc<str>>,
    /// The `job` label of the metrics.
    pub job_label: metrics::SharedString,
    pub health: Arc<super::Health>,
    /// When the batch being committed was first begun (the commit latency's start).
    pub batch_started: Option<Instant>,
    pub _t: PhantomData<fn() -> T>,
}

impl<DB, T, S> Committer<DB, T, S>
where
    DB: Dialect,
    T: Send + Sync + 'static,
    S: TransactionalSink<DB, T> + 'static,
{
    /// Commit batches as they arrive until the channel closes or a batch fails for
    /// good.
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Sent<T>>,
        flight: Arc<Flight>,
    ) -> weir_sql::Result<()> {
        while let Some(sent) = rx.recv().await {
            let (records, bytes) = (sent.pending.records, sent.pending.bytes);
            // One span per batch's commit, inside the job's span: its size, and
            // (at debug) how it ended and how long it took. Free when no subscriber
            // wants it.
            let span = tracing::info_span!(
                "commit",
                batch = sent.seq,
                records,
                bytes,
                partitions = sent.pending.parts.len(),
                first = %sent.pending.parts.iter().next().map(|(tp, p)| format!("{tp}@{}", p.expected.unwrap_or(-1))).unwrap_or_default(),
            );
            let started = Instant::now();
            let r = tracing::Instrument::instrument(self.commit(sent.pending), span.clone()).await;
            span.in_scope(|| match &r {
                Ok(()) => tracing::debug!(took_ms = started.elapsed().as_millis() as u64, "batch committed"),
                Err(e) => tracing::error!(error = %e, took_ms = started.elapsed().as_millis() as u64, "batch not committed: the job stops"),
            });
            flight.done(sent.seq, records, bytes);
            if r.is_err() {
                // nothing more will be committed: a revoke must not wait for it
                flight.abandon();
            }
            r?;
        }
        Ok(())
    }

    /// Drop the partitions of `pending` no longer owned under the claim they were read
    /// under (revoked, lost, fenced, claimed again).
    fn drop_unowned(&self, pending: &mut Pending<T>) {
        let st = self.state.lock();
        pending.retain(|tp, p| st.owns(tp, p.generation));
    }

    /// Commit `pending`, retrying transient failures.
    async fn commit(&mut self, mut pending: Pending<T>) -> weir_sql::Result<()> {
        let deadline = Instant::now() + self.retry_for;
        let mut backoff = Backoff::for_loop();
        let mut attempts = 0_u32;
        self.batch_started = Some(Instant::now());
        loop {
            self.drop_unowned(&mut pending);
            if pending.is_empty() {
                return Ok(());
            }
            attempts += 1;
            // The probes see an attempt that hangs (a lock, a silent peer).
            self.health.attempt(true);
            let attempt = self.try_commit(&mut pending).await;
            self.health.attempt(false);
            match attempt {
                Ok(()) => self.health.database(true),
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    self.health.database(false);
                    tracing::warn!(error = %e, attempt = attempts, "batch failed, retrying");
                    self.stats.lock().retries += 1;
                    backoff.wait().await;
                }
                Err(e) if e.is_retriable() => {
                    return Err(Error::RetriesExhausted {
                        during: "commit",
                        attempts,
                        last: Box::new(e),
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) async fn begin(&self) -> weir_sql::Result<Transaction<'static, DB>> {
        let mut tx = self
            .pool
            .begin_with(AssertSqlSafe(DB::BEGIN))
            .await
            .map_err(|e| Error::db("begin", e))?;
        if let Some(sql) = &self.idle_sql {
            DB::execute(&mut tx, sql, &[])
                .await
                .map_err(|e| Error::db("begin", e))?;
        }
        Ok(tx)
    }

    /// One attempt. Partitions found committed or fenced leave `pending`; what
    /// remains is retried by the caller.
    async fn try_commit(&mut self, pending: &mut Pending<T>) -> weir_sql::Result<()> {
        let mut tx = self.begin().await?;
        match self.sink.write_refusing(&mut tx, &pending.items).await {
            Ok(refused) => pending.refuse(refused),
            Err(e) if e.is_row_error() => {
                let _ = tx.rollback().await;
                tx = self.begin().await?;
                self.stats.lock().isolations += 1;
                super::isolate::isolate(&*self.sink, &mut tx, pending).await?;
            }
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(e);
            }
        }
        weir_sql::failpoint::hit("after_sink_write");
        let mut refused = Vec::new();
        for (tp, p) in &pending.parts {
            if !self
                .store
                .advance(&mut tx, tp, p.epoch, p.expected, p.next)
                .await?
            {
                refused.push(tp.clone());
            }
        }
        weir_sql::failpoint::hit("after_offset_update");
        if !refused.is_empty() {
            let _ = tx.rollback().await;
            if !self.resolve(pending, &refused).await? {
                return Err(Error::Sink {
                    sink: "offsets".to_owned(),
                    message: "compare-and-set refused although the row matched; retrying"
                        .to_owned(),
                    retriable: true,
                });
            }
            return Ok(());
        }
        self.dead_letters.write(&mut tx, &pending.dead).await?;
        weir_sql::failpoint::hit_soon("after_commit_sent");
        let outcome = match weir_sql::failpoint::lost("commit_outcome") {
            None => tx.commit().await,
            Some(lost) => {
                let sent = match lost {
                    weir_sql::failpoint::Lost::Reply => tx.commit().await,
                    weir_sql::failpoint::Lost::Commit => tx.rollback().await,
                };
                sent.and(Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    format!("failpoint commit_outcome: {lost:?} lost"),
                ))))
            }
        };
        if let Err(e) = outcome {
            self.stats.lock().unknown_outcomes += 1;
            tracing::warn!(error = %e, "commit outcome unknown, reading the offsets rows");
            let all: Vec<TopicPartition> = pending.parts.keys().cloned().collect();
            if !self.resolve(pending, &all).await? {
                return Err(Error::db("commit", e));
            }
            return Ok(());
        }
        weir_sql::failpoint::hit("after_commit");
        let done: BTreeSet<TopicPartition> = pending.parts.keys().cloned().collect();
        self.finish(pending, &done);
        Ok(())
    }

    /// The batches of `tps` are committed: count them and take them out of `pending`.
    fn finish(&self, pending: &mut Pending<T>, tps: &BTreeSet<TopicPartition>) {
        if tps.is_empty() {
            return;
        }
        let done = pending.take(tps);
        {
            let mut st = self.state.lock();
            for (tp, p) in &done.parts {
                if let Some(part) = st.parts.get_mut(tp) {
                    if part.generation == p.generation {
                        part.stored = Some(p.next);
                    }
                }
            }
        }
        {
            let mut s = self.stats.lock();
            s.rows += done.rows() as u64;
            s.dead_letters += done.dead.len() as u64;
            s.dropped += done.parts.values().map(|p| p.dropped as u64).sum::<u64>();
            s.commits += 1;
        }
        let oldest_ms = done
            .groups
            .iter()
            .map(|g| &g.record)
            .chain(done.dead.iter().map(|d| &d.record))
            .filter_map(|r| r.timestamp)
            .min();
        super::telemetry::BatchMetrics {
            job: &self.job_label,
            sink: self.sink.name(),
            records: done.records,
            bytes: done.bytes,
            rows: done.rows(),
            dead_letters: &done.dead,
            took: self.batch_started.map_or(Duration::ZERO, |t| t.elapsed()),
            oldest_ms,
        }
        .record();
    }

    /// Read the offsets rows of `tps` and act: committed partitions are done, fenced
    /// ones are dropped (and marked fenced), the rest stay. Whether any left `pending`.
    async fn resolve(
        &self,
        pending: &mut Pending<T>,
        tps: &[TopicPartition],
    ) -> weir_sql::Result<bool> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| Error::db("offsets read", e))?;
        let mut committed = BTreeSet::new();
        let mut fenced = BTreeSet::new();
        for tp in tps {
            let Some(p) = pending.parts.get(tp).copied() else {
                continue;
            };
            let row = self.store.read(&mut conn, tp).await?;
            let res = match row {
                Some(r) if r.epoch == p.epoch && r.next_offset == Some(p.next) => {
                    Resolution::Committed
                }
                Some(r) if r.epoch == p.epoch && r.next_offset == p.expected => {
                    Resolution::NotCommitted
                }
                Some(r) => Resolution::Fenced(format!(
                    "offsets row has epoch {} next_offset {:?} (owner {:?}); this member holds epoch {} expecting {:?}",
                    r.epoch, r.next_offset, r.owner, p.epoch, p.expected
                )),
                None => Resolution::Fenced("offsets row is gone".to_owned()),
            };
            match res {
                Resolution::Committed => {
                    committed.insert(tp.clone());
                }
                Resolution::NotCommitted => {}
                Resolution::Fenced(detail) => {
                    let err = Error::Fenced {
                        partition: tp.clone(),
                        detail,
                    };
                    tracing::warn!(error = %err, "partition fenced, dropping its buffered records");
                    if self.state.lock().fence(tp, p.generation) {
                        self.stats.lock().fenced += 1;
                    }
                    fenced.insert(tp.clone());
                }
            }
        }
        drop(conn);
        let progressed = !committed.is_empty() || !fenced.is_empty();
        self.finish(pending, &committed);
        drop(pending.take(&fenced));
        Ok(progressed)
    }
}
