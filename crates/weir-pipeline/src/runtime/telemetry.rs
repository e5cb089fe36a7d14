//! Metrics, lag and health of a run, through the [`metrics`] facade: the user installs
//! the exporter (or uses `Job::serve_http` with the `prometheus` feature); without a
//! recorder every call here is a no-op.
//!
//! The run's counters are kept in its [`Summary`] (one mutex, already taken on every
//! batch); the fetch side publishes their increase every `metrics_interval` and once
//! more when the run ends, so the hot path pays for no extra atomic per record. What
//! only the commit task knows per batch (rows per sink, dead letters per stage, the
//! histograms) is recorded there, once per batch.
//!
//! Lag is computed from the database, not from Kafka's committed offsets (which weir
//! never uses as the truth): the log's high watermark minus the partition's stored
//! `next_offset` as this member last read it (its claim) or wrote it (its commits,
//! compare-and-set, so equal to the row). Refreshed every `lag_interval`; a partition
//! that leaves the assignment has its gauge set to 0 (its new owner reports it).
//!
//! The metric names, labels and units are listed in the README ("Operating weir").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge, histogram};
use weir_core::{Consumer, TopicPartition};

use super::flight::Flight;
use super::ownership::SharedOwnership;
use crate::Summary;

/// Health of a run, read by the HTTP probes.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Milliseconds since the epoch of the fetch loop's last turn (0: not started).
    turned_ms: AtomicU64,
    /// Every assigned partition is claimed and not fenced, and at least one is.
    claimed: AtomicBool,
    /// The last database round trip (claim or commit) succeeded.
    db_ok: AtomicBool,
    /// The run ended: neither live nor ready.
    ended: AtomicBool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

// The probes read these with the `prometheus` feature only.
#[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
impl Health {
    pub(crate) fn database(&self, ok: bool) {
        self.db_ok.store(ok, Ordering::Release);
    }

    /// The loop turned within `within`, or has not started yet (the job is connecting
    /// and creating its tables, bounded by its retry settings).
    pub(crate) fn live(&self, within: Duration) -> bool {
        let at = self.turned_ms.load(Ordering::Acquire);
        !self.ended.load(Ordering::Acquire)
            && (at == 0
                || now_ms().saturating_sub(at)
                    <= u64::try_from(within.as_millis()).unwrap_or(u64::MAX))
    }

    /// Partitions assigned and claimed, and the database reachable.
    pub(crate) fn ready(&self) -> bool {
        !self.ended.load(Ordering::Acquire)
            && self.claimed.load(Ordering::Acquire)
            && self.db_ok.load(Ordering::Acquire)
    }

    pub(crate) fn end(&self) {
        self.ended.store(true, Ordering::Release);
    }
}

/// The fetch side's publisher of counters and gauges.
pub(crate) struct Telemetry {
    job: metrics::SharedString,
    interval: Duration,
    lag_interval: Duration,
    published: Summary,
    published_at: Option<Instant>,
    lag_at: Option<Instant>,
    /// Partitions whose lag gauge this run has set (to zero them when they leave).
    lagging: BTreeSet<TopicPartition>,
    pub health: Arc<Health>,
}

impl Telemetry {
    pub(crate) fn new(
        job: &str,
        interval: Duration,
        lag_interval: Duration,
        health: Arc<Health>,
    ) -> Self {
        // The job connected and created its tables before the run starts.
        health.database(true);
        Self {
            job: metrics::SharedString::from(job.to_owned()),
            interval,
            lag_interval,
            published: Summary::default(),
            published_at: None,
            lag_at: None,
            lagging: BTreeSet::new(),
            health,
        }
    }

    /// One turn of the fetch loop: mark it live and, when due, publish.
    pub(crate) async fn tick(
        &mut self,
        consumer: &mut dyn Consumer,
        stats: &parking_lot::Mutex<Summary>,
        flight: &Flight,
        buffered: (usize, usize),
        state: &SharedOwnership,
    ) {
        self.health.turned_ms.store(now_ms(), Ordering::Release);
        let assigned = consumer.assignment();
        let claimed = {
            let st = state.lock();
            !assigned.is_empty()
                && assigned
                    .iter()
                    .all(|tp| st.parts.get(tp).is_some_and(|s| !s.fenced))
        };
        self.health.claimed.store(claimed, Ordering::Release);
        if self
            .published_at
            .is_some_and(|t| t.elapsed() < self.interval)
        {
            return;
        }
        self.published_at = Some(Instant::now());
        let summary = stats.lock().clone();
        self.publish(&summary);
        let job = self.job.clone();
        gauge!("weir_in_flight_records", "job" => job.clone())
            .set((flight.records() + buffered.0) as f64);
        gauge!("weir_in_flight_bytes", "job" => job.clone())
            .set((flight.bytes() + buffered.1) as f64);
        gauge!("weir_assigned_partitions", "job" => job.clone()).set(assigned.len() as f64);
        gauge!("weir_paused_partitions", "job" => job).set(consumer.paused().len() as f64);
        if self.lag_at.is_none_or(|t| t.elapsed() >= self.lag_interval) {
            self.lag_at = Some(Instant::now());
            self.refresh_lag(consumer, &assigned, state).await;
        }
    }

    /// Publish the counters' increase since the last call.
    pub(crate) fn publish(&mut self, now: &Summary) {
        let was = std::mem::replace(&mut self.published, now.clone());
        let job = &self.job;
        let add = |name: &'static str, now: u64, was: u64| {
            if now > was {
                counter!(name, "job" => job.clone()).increment(now - was);
            }
        };
        add("weir_records_total", now.records, was.records);
        add("weir_skipped_total", now.skipped, was.skipped);
        add("weir_dropped_total", now.dropped, was.dropped);
        add("weir_commits_total", now.commits, was.commits);
        add("weir_claims_total", now.claims, was.claims);
        add("weir_fenced_total", now.fenced, was.fenced);
        add(
            "weir_unknown_commit_outcomes_total",
            now.unknown_outcomes,
            was.unknown_outcomes,
        );
        add("weir_commit_retries_total", now.retries, was.retries);
        add("weir_isolations_total", now.isolations, was.isolations);
        add(
            "weir_transient_retries_total",
            now.transient_retries,
            was.transient_retries,
        );
        add(
            "weir_seek_mismatches_total",
            now.seek_mismatches,
            was.seek_mismatches,
        );
        add(
            "weir_backpressure_pauses_total",
            now.backpressure_pauses,
            was.backpressure_pauses,
        );
    }

    /// Lag per assigned partition: high watermark minus the stored `next_offset`.
    async fn refresh_lag(
        &mut self,
        consumer: &mut dyn Consumer,
        assigned: &BTreeSet<TopicPartition>,
        state: &SharedOwnership,
    ) {
        let stored: BTreeMap<TopicPartition, Option<i64>> = {
            let st = state.lock();
            assigned
                .iter()
                .filter_map(|tp| st.parts.get(tp).map(|s| (tp.clone(), s.stored)))
                .collect()
        };
        // One after the other: the consumer is not `Sync`, so its requests cannot be
        // in flight together from this task (on Kafka each is a round trip to the
        // partition's leader, every `lag_interval`).
        let mut seen = BTreeSet::new();
        for tp in stored.keys() {
            let (low, high) = match consumer.watermarks(tp).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(partition = %tp, error = %e, "no watermarks for the lag gauge this round");
                    continue;
                }
            };
            let next = stored.get(tp).copied().flatten().unwrap_or(low);
            let lag = high.saturating_sub(next).max(0);
            gauge!("weir_lag_records", "job" => self.job.clone(), "topic" => tp.topic().to_owned(), "partition" => tp.partition().to_string())
                .set(lag as f64);
            seen.insert(tp.clone());
        }
        for gone in self.lagging.difference(assigned) {
            gauge!("weir_lag_records", "job" => self.job.clone(), "topic" => gone.topic().to_owned(), "partition" => gone.partition().to_string())
                .set(0.0);
        }
        self.lagging.retain(|tp| assigned.contains(tp));
        self.lagging.extend(seen);
    }

    /// The run ended: publish the last increase, zero the gauges, fail the probes.
    pub(crate) fn finish(&mut self, summary: &Summary) {
        self.publish(summary);
        for gone in std::mem::take(&mut self.lagging) {
            gauge!("weir_lag_records", "job" => self.job.clone(), "topic" => gone.topic().to_owned(), "partition" => gone.partition().to_string())
                .set(0.0);
        }
        for name in [
            "weir_in_flight_records",
            "weir_in_flight_bytes",
            "weir_assigned_partitions",
            "weir_paused_partitions",
        ] {
            gauge!(name, "job" => self.job.clone()).set(0.0);
        }
        self.health.end();
    }
}

/// What the commit task records once per committed batch.
pub(crate) struct BatchMetrics<'a> {
    pub job: &'a metrics::SharedString,
    pub sink: &'a str,
    pub records: usize,
    pub rows: usize,
    pub dead_letters: &'a [weir_sql::DeadLetter],
    /// From the first `BEGIN` of the batch to its `COMMIT` (retries included).
    pub took: Duration,
    /// The oldest record timestamp of the batch (ms since the epoch).
    pub oldest_ms: Option<i64>,
}

impl BatchMetrics<'_> {
    pub(crate) fn record(self) {
        let job = self.job.clone();
        if self.rows > 0 {
            counter!("weir_rows_total", "job" => job.clone(), "sink" => self.sink.to_owned())
                .increment(self.rows as u64);
        }
        let mut by_stage: BTreeMap<&'static str, u64> = BTreeMap::new();
        for d in self.dead_letters {
            *by_stage.entry(d.stage.as_str()).or_default() += 1;
        }
        for (stage, n) in by_stage {
            counter!("weir_dead_letters_total", "job" => job.clone(), "stage" => stage)
                .increment(n);
        }
        histogram!("weir_commit_seconds", "job" => job.clone()).record(self.took.as_secs_f64());
        histogram!("weir_batch_records", "job" => job.clone()).record(self.records as f64);
        if let Some(ts) = self.oldest_ms.filter(|ts| *ts > 0) {
            let age_ms = i64::try_from(now_ms())
                .unwrap_or(i64::MAX)
                .saturating_sub(ts);
            histogram!("weir_end_to_end_seconds", "job" => job).record(age_ms.max(0) as f64 / 1e3);
        }
    }
}
