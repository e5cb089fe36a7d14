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

/// The most time one lag refresh spends on watermark requests.
const LAG_BUDGET: Duration = Duration::from_millis(500);

/// Health of a run, read by the HTTP probes.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Milliseconds after [`started`] of the fetch loop's last turn, plus one (0: not
    /// started). A monotonic clock: a wall-clock step cannot fail the probe.
    turned_ms: AtomicU64,
    /// Every assigned partition is claimed and not fenced, and at least one is.
    claimed: AtomicBool,
    /// The last database round trip (claim, commit or ping) succeeded.
    db_ok: AtomicBool,
    /// Monotonic milliseconds (as `turned_ms`) of the last successful round trip.
    db_at_ms: AtomicU64,
    /// Monotonic milliseconds (as `turned_ms`) when the commit attempt under way
    /// began; 0 when none is. A commit blocked on a lock while the fetch loop keeps
    /// turning is caught by this, not by `turned_ms`.
    attempt_ms: AtomicU64,
    /// The run ended: neither live nor ready.
    ended: AtomicBool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The process's monotonic time base for the live probe.
fn started() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn mono_ms() -> u64 {
    u64::try_from(started().elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

// The probes read these with the `prometheus` feature only.
#[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
impl Health {
    /// The fetch loop turned (called at the top of every turn, also while polls or
    /// claims fail and are retried: an outage of the broker or the database is not
    /// a stuck process, and `ready` reports it).
    pub(crate) fn turn(&self) {
        self.turned_ms.store(mono_ms(), Ordering::Release);
    }

    pub(crate) fn database(&self, ok: bool) {
        if ok {
            self.db_at_ms.store(mono_ms(), Ordering::Release);
        }
        self.db_ok.store(ok, Ordering::Release);
    }

    /// Whether the database answered within `within` (the pinger then stays quiet).
    pub(crate) fn database_answered_within(&self, within: Duration) -> bool {
        let at = self.db_at_ms.load(Ordering::Acquire);
        at != 0 && mono_ms().saturating_sub(at) <= millis(within)
    }

    /// A commit attempt begins (`true`) or ends (`false`).
    pub(crate) fn attempt(&self, begins: bool) {
        self.attempt_ms
            .store(if begins { mono_ms() } else { 0 }, Ordering::Release);
    }

    /// A commit attempt is under way.
    pub(crate) fn committing(&self) -> bool {
        self.attempt_ms.load(Ordering::Acquire) != 0
    }

    /// No commit attempt has been under way for longer than `within`.
    fn commit_moving(&self, within: Duration) -> bool {
        let at = self.attempt_ms.load(Ordering::Acquire);
        at == 0 || mono_ms().saturating_sub(at) <= millis(within)
    }

    /// The loop turned within `within`, or has not started yet (the job is connecting
    /// and creating its tables, bounded by its retry settings). A hung commit
    /// attempt does not fail it (only `ready`): a commit can legitimately be long
    /// (a large batch, isolating a refused row), and a restart would only start it
    /// over.
    pub(crate) fn live(&self, within: Duration) -> bool {
        let at = self.turned_ms.load(Ordering::Acquire);
        !self.ended.load(Ordering::Acquire)
            && (at == 0 || mono_ms().saturating_sub(at) <= millis(within))
    }

    /// Partitions assigned and claimed, the database reachable, and no commit
    /// attempt hung for longer than `within`.
    pub(crate) fn ready(&self, within: Duration) -> bool {
        !self.ended.load(Ordering::Acquire)
            && self.claimed.load(Ordering::Acquire)
            && self.db_ok.load(Ordering::Acquire)
            && self.commit_moving(within)
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
    /// The last partition a lag refresh reached (the next one starts after it).
    lag_cursor: Option<TopicPartition>,
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
            lag_cursor: None,
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

    /// Lag per assigned, claimed, unfenced partition: high watermark minus the stored
    /// `next_offset`.
    ///
    /// The watermark requests run on the fetch loop (the consumer is not `Sync`), so a
    /// refresh has a time budget ([`LAG_BUDGET`]): partitions it did not reach are
    /// refreshed first next time (round robin), and a slow broker delays polling by
    /// at most the budget per `lag_interval`.
    async fn refresh_lag(
        &mut self,
        consumer: &mut dyn Consumer,
        assigned: &BTreeSet<TopicPartition>,
        state: &SharedOwnership,
    ) {
        let owned: BTreeMap<TopicPartition, Option<i64>> = {
            let st = state.lock();
            assigned
                .iter()
                .filter_map(|tp| match st.parts.get(tp) {
                    // a fenced partition is someone else's now: its owner reports it
                    Some(s) if !s.fenced => Some((tp.clone(), s.stored)),
                    _ => None,
                })
                .collect()
        };
        let order: Vec<&TopicPartition> = match &self.lag_cursor {
            Some(c) => owned
                .keys()
                .filter(|tp| *tp > c)
                .chain(owned.keys().filter(|tp| *tp <= c))
                .collect(),
            None => owned.keys().collect(),
        };
        let deadline = Instant::now() + LAG_BUDGET;
        let mut seen = BTreeSet::new();
        for tp in order {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            let marks = match tokio::time::timeout(left, consumer.watermarks(tp)).await {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    tracing::debug!(partition = %tp, error = %e, "no watermarks for the lag gauge this round");
                    continue;
                }
                Err(_) => break,
            };
            self.lag_cursor = Some(tp.clone());
            let (low, high) = marks;
            // `None`: never committed and no record read yet under this claim, so the
            // consumer's position is where `auto.offset.reset` put it (the log's
            // start, or its end under `latest`), nothing of it in flight.
            let next = match owned.get(tp).copied().flatten() {
                Some(base) => base,
                None => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, consumer.position(tp)).await {
                        Ok(Ok(p)) if p >= low => p,
                        _ => low,
                    }
                }
            };
            let lag = high.saturating_sub(next).max(0);
            self.lag_gauge(tp, lag as f64);
            seen.insert(tp.clone());
        }
        let gone: Vec<TopicPartition> = self
            .lagging
            .iter()
            .filter(|tp| !owned.contains_key(*tp))
            .cloned()
            .collect();
        for tp in &gone {
            self.lag_gauge(tp, 0.0);
        }
        self.lagging.retain(|tp| owned.contains_key(tp));
        self.lagging.extend(seen);
    }

    fn lag_gauge(&self, tp: &TopicPartition, value: f64) {
        gauge!("weir_lag_records", "job" => self.job.clone(), "topic" => tp.topic().to_owned(), "partition" => tp.partition().to_string())
            .set(value);
    }

    /// The run ended: publish the last increase, zero the gauges, fail the probes.
    pub(crate) fn finish(&mut self, summary: &Summary) {
        self.publish(summary);
        for gone in std::mem::take(&mut self.lagging) {
            self.lag_gauge(&gone, 0.0);
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
    /// Key and value bytes of those records.
    pub bytes: usize,
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
        histogram!("weir_batch_bytes", "job" => job.clone()).record(self.bytes as f64);
        if let Some(ts) = self.oldest_ms.filter(|ts| *ts > 0) {
            let age_ms = i64::try_from(now_ms())
                .unwrap_or(i64::MAX)
                .saturating_sub(ts);
            histogram!("weir_end_to_end_seconds", "job" => job).record(age_ms.max(0) as f64 / 1e3);
        }
    }
}
