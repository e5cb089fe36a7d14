//! The fetch side of the runtime: poll, align ownership, check each partition's first
//! record, run the operators and hand batches to the commit task.
//!
//! It runs on the caller's task and never waits for a commit: while the commit task
//! writes batch N, this side polls and decodes batch N+1. Per partition it keeps the
//! *chain*, the offset after the last record it consumed under the current claim; the
//! next batch's compare-and-set expects exactly that, so batches of a partition commit
//! in offset order and a batch committed out of turn (or by a zombie) is refused.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use weir_core::{Consumer, Offset, Record, TopicPartition};
use weir_sql::{DeadLetter, Dialect, Stage};

use super::backoff::Backoff;
use super::commit::Sent;
use super::flight::Flight;
use super::ownership::Claimer;
use super::pending::{PartPending, Pending};
use super::reseek::{Reseeks, Verdict};
use super::Config;
use crate::ops::{Failure, Flow, Out};
use crate::{Error, OnError, Result, Summary};

/// A seek the loop makes after processing a poll.
#[derive(Clone, Debug)]
enum Seek {
    /// Back to the claimed offset: the first delivered record was elsewhere.
    Reseek(TopicPartition, i64),
    /// Back to a record that failed transiently: pause, then retry it.
    Rewind(TopicPartition, i64),
}

/// Why the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The consumer was woken up (shutdown).
    Wakeup,
    /// The commit task stopped (its error is in its join handle).
    CommitterGone,
}

pub(crate) struct Fetcher<DB: Dialect, T> {
    pub cfg: Arc<Config>,
    pub claimer: Arc<Claimer<DB>>,
    pub flow: Box<dyn Flow<T>>,
    pub flight: Arc<Flight>,
    pub tx: mpsc::UnboundedSender<Sent<T>>,
    pub stats: Arc<Mutex<Summary>>,
    pub pending: Pending<T>,
    /// Per partition: (claim generation, offset after the last consumed record).
    pub chain: HashMap<TopicPartition, (u64, i64)>,
    pub reseeks: Reseeks,
    /// Partitions paused after a transient failure: when to resume, their backoff.
    pub retry_at: HashMap<TopicPartition, (Instant, Backoff)>,
    /// Partitions this loop paused because too much is in flight.
    pub held: BTreeSet<TopicPartition>,
    /// Counters, gauges, lag and health (see `telemetry`).
    pub telemetry: super::telemetry::Telemetry,
}

impl<DB: Dialect, T: Send + Sync + 'static> Fetcher<DB, T> {
    /// Drop the fetcher (closing the commit task's channel) and keep its telemetry.
    pub(crate) fn into_telemetry(self) -> super::telemetry::Telemetry {
        self.telemetry
    }

    pub(crate) async fn run(&mut self, consumer: &mut dyn Consumer) -> Result<Ended> {
        let mut backoff = Backoff::for_loop();
        loop {
            self.telemetry.health.turn();
            if self.tx.is_closed() {
                return Ok(Ended::CommitterGone);
            }
            if !self.held.is_empty() {
                // Paused for backpressure: a poll would find nothing to fetch and
                // sleep its whole timeout, so wait for a commit to make room instead
                // (at most that timeout, then poll anyway so the consumer keeps
                // turning) and resume at once (measured: each pause cost 100-200 ms
                // of an idle database when resuming waited for the next poll).
                self.flight
                    .wait_room(
                        self.cfg
                            .max_in_flight_records
                            .saturating_sub(self.pending.records),
                        self.cfg
                            .max_in_flight_bytes
                            .saturating_sub(self.pending.bytes),
                        self.cfg.poll_timeout,
                    )
                    .await;
                self.backpressure(consumer)?;
            }
            let batch = match consumer.poll(self.cfg.poll_timeout).await {
                Ok(b) => b,
                Err(weir_core::Error::Wakeup) => {
                    self.drop_unowned();
                    self.send();
                    return Ok(Ended::Wakeup);
                }
                Err(
                    e @ (weir_core::Error::PollIntervalExceeded { .. }
                    | weir_core::Error::Fenced { .. }),
                ) => {
                    // Evicted: the partitions are someone else's now (the listener was
                    // told they are lost); the next poll rejoins.
                    tracing::warn!(error = %e, "this member lost its partitions; rejoining");
                    self.claimer.state.lock().parts.clear();
                    self.drop_unowned();
                    continue;
                }
                Err(weir_core::Error::NoOffset {
                    partition,
                    position: Some(at),
                    log_start,
                    log_end,
                })
                | Err(weir_core::Error::OffsetOutOfRange {
                    partition,
                    offset: at,
                    log_start,
                    log_end,
                }) => {
                    self.out_of_range(consumer, &partition, at, log_start, log_end)?;
                    continue;
                }
                Err(weir_core::Error::Listener(e)) => {
                    tracing::warn!(error = %e, "rebalance listener failed; claiming on the next round");
                    weir_core::Batch::new()
                }
                Err(e) if e.is_retriable() => {
                    tracing::warn!(error = %e, "poll failed, retrying");
                    backoff.wait().await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            weir_sql::failpoint::hit("after_poll");
            let skip = match self.reconcile(consumer).await {
                Ok(skip) => skip,
                Err(e) if e.is_retriable() => {
                    self.telemetry.health.database(false);
                    tracing::warn!(error = %e, "claiming partitions failed, retrying");
                    self.rewind_dropped(consumer, &batch)?;
                    backoff.wait().await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            backoff.reset();
            self.telemetry
                .tick(
                    consumer,
                    &self.stats,
                    &self.flight,
                    (self.pending.records, self.pending.bytes),
                    &self.claimer.state,
                )
                .await;
            let empty = batch.is_empty();
            let seeks = self.process(batch, &skip).await?;
            let due = self.pending.records >= self.cfg.batch_records
                || self.pending.bytes >= self.cfg.batch_bytes
                || (empty && !self.pending.is_empty())
                || self
                    .pending
                    .since
                    .is_some_and(|s| s.elapsed() >= self.cfg.linger);
            if due && !self.send() {
                return Ok(Ended::CommitterGone);
            }
            self.apply(consumer, &seeks)?;
            self.backpressure(consumer)?;
        }
    }

    /// The consumer could not start `tp` at `at`, outside its log `log_start..log_end`
    /// (the consumer never resets: see `Source::resolve`).
    ///
    /// Beyond the end: the offsets row says this job committed up to `at`, so the
    /// broker held those records once; after a leader failover the new leader may be
    /// behind for a while (unclean election, a restored broker). Resetting would
    /// replay the partition into the sink (duplicates) or skip what comes: the
    /// partition waits instead, retrying with backoff, while the others go on.
    /// Below the start: records this job never committed were deleted by retention;
    /// that is a loss weir will not hide, so the job stops and says so.
    fn out_of_range(
        &mut self,
        consumer: &mut dyn Consumer,
        tp: &TopicPartition,
        at: i64,
        log_start: i64,
        log_end: i64,
    ) -> Result<()> {
        if at < log_start {
            return Err(Error::Sql(weir_sql::Error::Sink {
                sink: "offsets".to_owned(),
                message: format!(
                    "job `{}`: records {at}..{log_start} of {tp} were deleted by the topic's retention before this job committed them; they cannot be read any more, and weir does not skip them silently. Nothing of them was written. Raise the topic's retention (or the job's throughput) so it does not recur",
                    self.cfg.job
                ),
                retriable: false,
            }));
        }
        tracing::warn!(
            partition = %tp,
            stored_offset = at,
            log_start,
            log_end,
            "the stored offset is beyond the broker's log end (a leader behind after a failover?); \
             weir never resets a claimed partition, it waits and retries this partition; \
             if the topic was deleted and re-created, its new records are not the ones this job committed"
        );
        if consumer.assignment().contains(tp) {
            self.apply(consumer, &[Seek::Rewind(tp.clone(), at)])?;
        }
        Ok(())
    }

    /// This poll's batch is dropped (a claim failed): rewind every assigned partition
    /// it holds records of, so that none of them is skipped. A partition claimed
    /// before the failure goes back to its claimed offset, not to this batch's first
    /// record (fetched before the claim, possibly beyond it).
    fn rewind_dropped(
        &mut self,
        consumer: &mut dyn Consumer,
        batch: &weir_core::Batch,
    ) -> Result<()> {
        let assigned = consumer.assignment();
        let claimed: HashMap<TopicPartition, i64> = {
            let st = self.claimer.state.lock();
            st.parts
                .iter()
                .filter(|(_, s)| !s.started)
                .filter_map(|(tp, s)| s.claimed.map(|e| (tp.clone(), e)))
                .collect()
        };
        for tp in batch.partitions() {
            if !assigned.contains(&tp) {
                continue;
            }
            let at = match (claimed.get(&tp), self.chain.get(&tp)) {
                (Some(at), _) => Some(*at),
                (None, Some((_, next))) => Some(*next),
                (None, None) => batch.records(&tp).next().map(|r| r.offset),
            };
            if let Some(at) = at {
                consumer.seek(&tp, Offset::At(at))?;
            }
        }
        Ok(())
    }

    /// Hand the pending batch to the commit task. False if the task is gone.
    fn send(&mut self) -> bool {
        self.drop_unowned();
        if self.pending.is_empty() {
            self.pending = Pending::default();
            return true;
        }
        let pending = std::mem::take(&mut self.pending);
        let seq = self.flight.send(pending.records, pending.bytes);
        let (records, bytes) = (pending.records, pending.bytes);
        if self.tx.send(Sent { seq, pending }).is_err() {
            self.flight.done(seq, records, bytes);
            return false;
        }
        true
    }

    /// Drop buffered work of partitions no longer owned under the same claim.
    fn drop_unowned(&mut self) {
        let st = self.claimer.state.lock();
        self.pending.retain(|tp, p| st.owns(tp, p.generation));
        self.chain
            .retain(|tp, (g, _)| st.parts.get(tp).is_some_and(|s| s.generation == *g));
    }

    /// Align ownership with the consumer's assignment after a poll: forget partitions
    /// no longer assigned, drop buffered work of old claims, claim partitions the
    /// listener could not, pause fenced ones and resume those whose wait is over.
    /// Returns partitions whose records in this batch are stale (claimed just now).
    async fn reconcile(
        &mut self,
        consumer: &mut dyn Consumer,
    ) -> weir_sql::Result<HashSet<TopicPartition>> {
        let assigned = consumer.assignment();
        let missing: Vec<TopicPartition> = {
            let mut st = self.claimer.state.lock();
            st.parts.retain(|tp, _| assigned.contains(tp));
            assigned
                .iter()
                .filter(|tp| !st.parts.contains_key(*tp))
                .cloned()
                .collect()
        };
        self.drop_unowned();
        self.held.retain(|tp| assigned.contains(tp));
        let mut skip = HashSet::new();
        if !missing.is_empty() {
            match self.claimer.claim(&missing).await {
                Ok(seeks) => {
                    self.telemetry.health.database(true);
                    for (tp, start) in seeks {
                        consumer.seek(&tp, start)?;
                        skip.insert(tp);
                    }
                }
                Err(e) => {
                    // Hold these partitions until claimed; the caller rewinds every
                    // assigned partition of the dropped batch, these included.
                    consumer.pause(&missing)?;
                    return Err(e);
                }
            }
        }
        self.resume_ready(consumer)?;
        let paused = consumer.paused();
        // A fenced partition stays assigned until the group moves it: stop fetching
        // it (a new claim, after a rebalance, resumes it).
        let pause: Vec<TopicPartition> = self
            .claimer
            .state
            .lock()
            .parts
            .iter()
            .filter(|(tp, s)| s.fenced && !paused.contains(*tp))
            .map(|(tp, _)| tp.clone())
            .collect();
        if !pause.is_empty() {
            tracing::warn!(partitions = ?pause, "pausing fenced partitions");
            consumer.pause(&pause)?;
        }
        self.stats.lock().claims = self.claimer.state.lock().claims;
        Ok(skip)
    }

    /// Resume the paused partitions that may fetch: claimed and not fenced, not
    /// waiting for a retry, not held for backpressure; none while the in-flight
    /// limit is reached.
    fn resume_ready(&mut self, consumer: &mut dyn Consumer) -> weir_core::Result<()> {
        let paused = consumer.paused();
        if paused.is_empty() || self.full() {
            return Ok(());
        }
        let resume: Vec<TopicPartition> = {
            let st = self.claimer.state.lock();
            let now = Instant::now();
            paused
                .iter()
                .filter(|tp| st.parts.get(*tp).is_some_and(|s| !s.fenced))
                .filter(|tp| self.retry_at.get(*tp).is_none_or(|(at, _)| *at <= now))
                .filter(|tp| !self.held.contains(*tp))
                .cloned()
                .collect()
        };
        if !resume.is_empty() {
            consumer.resume(&resume)?;
        }
        Ok(())
    }

    /// Whether the in-flight records or bytes are at their limit.
    fn full(&self) -> bool {
        self.flight.records() + self.pending.records >= self.cfg.max_in_flight_records
            || self.flight.bytes() + self.pending.bytes >= self.cfg.max_in_flight_bytes
    }

    /// Pause every fetching partition while the in-flight records or bytes are at
    /// their limit (also one resumed or assigned since the last pause: a rebalance
    /// clears the consumer's paused set); resume them as soon as there is room.
    fn backpressure(&mut self, consumer: &mut dyn Consumer) -> Result<()> {
        let records = self.flight.records() + self.pending.records;
        let bytes = self.flight.bytes() + self.pending.bytes;
        {
            let mut s = self.stats.lock();
            s.peak_in_flight_records = s.peak_in_flight_records.max(records as u64);
            s.peak_in_flight_bytes = s.peak_in_flight_bytes.max(bytes as u64);
        }
        if self.full() {
            let paused = consumer.paused();
            let hold: Vec<TopicPartition> = consumer
                .assignment()
                .into_iter()
                .filter(|tp| !paused.contains(tp))
                .collect();
            if !hold.is_empty() {
                if self.held.is_empty() {
                    tracing::debug!(
                        records,
                        bytes,
                        partitions = hold.len(),
                        "in-flight limit reached: pausing fetching"
                    );
                    self.stats.lock().backpressure_pauses += 1;
                }
                consumer.pause(&hold)?;
                self.held.extend(hold);
            }
        } else if !self.held.is_empty() {
            // unless fenced or waiting for a retry
            self.held.clear();
            self.resume_ready(consumer)?;
        }
        Ok(())
    }

    fn apply(&mut self, consumer: &mut dyn Consumer, seeks: &[Seek]) -> Result<()> {
        for seek in seeks {
            match seek {
                Seek::Reseek(tp, offset) => consumer.seek(tp, Offset::At(*offset))?,
                Seek::Rewind(tp, offset) => {
                    // Only this partition waits, with its own backoff; the others go on.
                    consumer.seek(tp, Offset::At(*offset))?;
                    consumer.pause(std::slice::from_ref(tp))?;
                    let mut b = self
                        .retry_at
                        .remove(tp)
                        .map_or_else(Backoff::for_partition, |(_, b)| b);
                    let wait = b.next_delay();
                    self.retry_at.insert(tp.clone(), (Instant::now() + wait, b));
                    self.stats.lock().transient_retries += 1;
                }
            }
        }
        Ok(())
    }

    /// Check, transform and buffer one poll's records. Returns the seeks to make.
    async fn process(
        &mut self,
        batch: weir_core::Batch,
        skip: &HashSet<TopicPartition>,
    ) -> Result<Vec<Seek>> {
        let mut seeks = Vec::new();
        let mut stopped: BTreeSet<TopicPartition> = BTreeSet::new();
        let mut owned = self.claimer.state.lock().parts.clone();
        let mut accepted: Vec<Record> = Vec::with_capacity(batch.len());
        for record in batch {
            let tp = record.topic_partition();
            if skip.contains(&tp) || stopped.contains(&tp) {
                continue;
            }
            let Some(st) = owned.get(&tp).copied() else {
                continue;
            };
            if st.fenced {
                continue;
            }
            let position = self
                .chain
                .get(&tp)
                .filter(|(g, _)| *g == st.generation)
                .map(|(_, n)| *n)
                .or(st.claimed);
            if let Some(claimed) = st.claimed.filter(|e| !st.started && record.offset != *e) {
                match self.reseeks.verdict(
                    &self.cfg.job,
                    &tp,
                    st.generation,
                    claimed,
                    record.offset,
                ) {
                    Verdict::Seek => {
                        seeks.push(Seek::Reseek(tp.clone(), claimed));
                        stopped.insert(tp);
                        continue;
                    }
                    Verdict::Gap => {
                        self.stats.lock().seek_mismatches += 1;
                        tracing::warn!(at = %record.coordinates(), expected = claimed, "no record at the claimed offset (compaction, transaction markers); the partition resumes at the next one");
                    }
                    Verdict::Stop(message) => {
                        return Err(Error::Sql(weir_sql::Error::Sink {
                            sink: "offsets".to_owned(),
                            message,
                            retriable: false,
                        }))
                    }
                }
            }
            if position.is_some_and(|p| record.offset < p) {
                continue; // delivered before a rewind took effect
            }
            if !st.started {
                if let Some(s) = self.claimer.state.lock().parts.get_mut(&tp) {
                    if s.generation == st.generation {
                        s.started = true;
                        // Never committed: the lag counts from the first record read
                        // (where `auto.offset.reset` put the consumer: the log's
                        // start, or its end under `latest`), not the log's start.
                        s.stored = s.stored.or(Some(record.offset));
                    }
                }
                if let Some(s) = owned.get_mut(&tp) {
                    s.started = true;
                }
            }
            accepted.push(record);
        }
        if accepted.is_empty() {
            return Ok(seeks);
        }

        let mut out = Out::default();
        self.flow.run(&accepted, &mut out).await;

        // The first failure of each record; per partition, the first transient one.
        let mut failed: HashMap<u32, Failure> = HashMap::new();
        let mut cut: HashMap<TopicPartition, i64> = HashMap::new();
        for f in out.failures {
            let Some(r) = accepted.get(f.src as usize) else {
                continue;
            };
            if f.retriable {
                let at = cut.entry(r.topic_partition()).or_insert(r.offset);
                *at = (*at).min(r.offset);
            }
            failed.entry(f.src).or_insert(f);
        }
        let is_cut = |r: &Record| {
            cut.iter().any(|(tp, k)| {
                tp.partition() == r.partition && tp.topic() == &*r.topic && r.offset >= *k
            })
        };
        let mut srcs: Vec<&u32> = failed.keys().collect();
        srcs.sort();
        for src in srcs {
            let f = &failed[src];
            let r = &accepted[*src as usize];
            if !f.retriable && f.policy == OnError::Fail && !is_cut(r) {
                return Err(Error::Stage {
                    stage: f.stage.to_string(),
                    at: r.coordinates(),
                    message: f.message.clone(),
                });
            }
        }
        for (tp, at) in &cut {
            tracing::warn!(partition = %tp, offset = at, "transient failure; pausing the partition and retrying this record");
            seeks.push(Seek::Rewind(tp.clone(), *at));
        }

        let mut elems = out.elems.into_iter().peekable();
        let (mut skipped, mut consumed) = (0_u64, 0_u64);
        for (i, r) in accepted.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            let mut values = Vec::new();
            while let Some(e) = elems.next_if(|e| e.src <= i) {
                if e.src == i {
                    values.push(e.value);
                }
            }
            if is_cut(r) {
                continue;
            }
            let tp = r.topic_partition();
            let Some(st) = owned.get(&tp).copied() else {
                continue;
            };
            match failed.get(&i) {
                Some(f) => match f.policy {
                    OnError::DeadLetter => {
                        let stage = if &*f.stage == "decode" {
                            Stage::Decode
                        } else {
                            Stage::Transform
                        };
                        tracing::debug!(at = %r.coordinates(), stage = %f.stage, error = %f.message, "dead letter");
                        self.pending.dead.push(DeadLetter::new(
                            r.clone(),
                            stage,
                            format!("{}: {}", f.stage, f.message),
                        ));
                    }
                    _ => {
                        // Skip (Fail returned above)
                        skipped += 1;
                        tracing::warn!(at = %r.coordinates(), stage = %f.stage, error = %f.message, "record skipped (policy: skip)");
                    }
                },
                None => self.pending.push_values(r, values),
            }
            let expected = self
                .chain
                .get(&tp)
                .filter(|(g, _)| *g == st.generation)
                .map(|(_, n)| *n)
                .or(st.claimed);
            self.pending.consume(
                tp.clone(),
                r,
                PartPending {
                    generation: st.generation,
                    epoch: st.epoch,
                    expected,
                    next: r.offset + 1,
                    records: 0,
                    bytes: 0,
                    dropped: 0,
                },
            );
            if !self.retry_at.is_empty() {
                self.retry_at.remove(&tp);
            }
            self.chain.insert(tp, (st.generation, r.offset + 1));
            consumed += 1;
        }
        let mut s = self.stats.lock();
        s.records += consumed;
        s.skipped += skipped;
        Ok(seeks)
    }
}
