//! The pipelined exactly-once runtime.
//!
//! ```text
//!  fetch side (caller's task)                          commit task (spawned)
//!  poll ─► reconcile claims ─► first-record check      BEGIN
//!       ─► operators ─► pending batch ──(channel)──►     sink rows, offsets CAS, dead letters
//!       ◄── pause while in-flight is at its limit ──     COMMIT / resolve / isolate
//! ```
//!
//! Each invariant lives in the file named for it: [`ownership`] (claims, generations,
//! the listener), [`pending`] (a batch and its accounting), [`fetch`] (the poll loop,
//! the chain of expected offsets, transient pauses, backpressure), [`reseek`] (the
//! first record after a claim), [`commit`] (one transaction per batch and the
//! resolution of refused or unknown outcomes), [`isolate`] (bisection of refused
//! rows), [`flight`] (in-flight accounting, revoke waits), [`backoff`].

mod backoff;
mod commit;
mod fetch;
mod flight;
mod isolate;
mod ownership;
mod pending;
mod reseek;
mod telemetry;

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sqlx::Pool;
use tokio::sync::mpsc;
use weir_core::{AutoOffsetReset, Consumer, Subscription};
use weir_sql::{DeadLetters, Dialect, DialectKind, OffsetStore, TransactionalSink};

use crate::ops::Flow;
use crate::{Error, Result, Summary};

pub(crate) use backoff::Backoff;
pub(crate) use telemetry::Health;

/// Settings of one run (validated by the job builder).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub job: String,
    pub owner: String,
    pub batch_records: usize,
    pub batch_bytes: usize,
    pub linger: Duration,
    pub poll_timeout: Duration,
    pub max_in_flight_records: usize,
    pub max_in_flight_bytes: usize,
    pub retry_for: Duration,
    pub shutdown_timeout: Duration,
    pub revoke_timeout: Duration,
    pub reset: AutoOffsetReset,
    pub idle_transaction_timeout: Option<Duration>,
    /// How often counters and gauges are published.
    pub metrics_interval: Duration,
    /// How often the lag gauges are refreshed (a watermarks request per partition).
    pub lag_interval: Duration,
}

fn idle_sql<DB: Dialect>(timeout: Option<Duration>) -> Option<Arc<str>> {
    match (DB::KIND, timeout) {
        (DialectKind::Postgres, Some(t)) if !t.is_zero() => {
            let ms = t.as_millis().clamp(1, i32::MAX as u128);
            Some(Arc::from(format!(
                "SET LOCAL idle_in_transaction_session_timeout = '{ms}ms'"
            )))
        }
        _ => None,
    }
}

/// Everything a run needs besides the consumer.
pub(crate) struct Parts<DB: Dialect, T, S> {
    pub cfg: Config,
    pub pool: Pool<DB>,
    pub store: OffsetStore<DB>,
    pub dead_letters: DeadLetters<DB>,
    pub sink: S,
    pub flow: Box<dyn Flow<T>>,
    pub subscription: Subscription,
    /// Read by the HTTP probes, if any.
    pub health: Arc<Health>,
}

/// A task aborted when dropped (also on an early return with `?`).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every `every`, unless a claim or commit succeeded within it or a commit is under
/// way, check that the database answers (a connection from the pool and its ping,
/// within `every`) and record the answer for the ready probe.
async fn ping<DB: Dialect>(pool: Pool<DB>, health: Arc<Health>, every: Duration) {
    use sqlx::Connection as _;
    loop {
        tokio::time::sleep(every).await;
        // A commit under way is a round trip of its own (and may hold the pool's only
        // connection); one that hangs is the stall check's business.
        if health.database_answered_within(every) || health.committing() {
            continue;
        }
        let answer = tokio::time::timeout(every, async {
            let mut conn = pool.acquire().await?;
            conn.ping().await
        })
        .await;
        let ok = matches!(answer, Ok(Ok(())));
        if !ok {
            if health.committing() {
                // a commit began while the ping waited for a connection (it may hold
                // the pool's only one): its own outcome tells
                continue;
            }
            tracing::debug!("the database did not answer a ping within {every:?}");
        }
        health.database(ok);
    }
}

/// Run until `stop` resolves (then drain and close) or a fatal error.
pub(crate) async fn run<DB, T, S, F>(
    parts: Parts<DB, T, S>,
    mut consumer: Box<dyn Consumer>,
    stop: F,
) -> Result<Summary>
where
    DB: Dialect,
    T: Send + Sync + 'static,
    S: TransactionalSink<DB, T> + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let cfg = Arc::new(parts.cfg);
    let stats = Arc::new(Mutex::new(Summary::default()));
    let state = Arc::default();
    let flight = Arc::new(flight::Flight::default());
    let claimer = Arc::new(ownership::Claimer {
        pool: parts.pool.clone(),
        store: parts.store.clone(),
        owner: Arc::from(cfg.owner.as_str()),
        reset: cfg.reset,
        state: Arc::clone(&state),
        health: Arc::clone(&parts.health),
    });
    let listener = Arc::new(ownership::Listener {
        claimer: Arc::clone(&claimer),
        flight: Arc::clone(&flight),
        revoke_timeout: cfg.revoke_timeout,
    });

    let span = tracing::info_span!("job", job = %cfg.job, owner = %cfg.owner);

    let wakeup = consumer.wakeup_handle();
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_flag = Arc::clone(&stopping);
    let abort = Arc::new(tokio::sync::Notify::new());
    let abort_tx = Arc::clone(&abort);
    // Signals are counted by a thread of their own (`shutdown::signals`, installed
    // by `shutdown_signal` or, at the latest, by the drain below), so one sent while
    // this runtime is busy is still seen. (Not installed here: that would take
    // Ctrl-C's default away from a job that stops on something else.)
    let signals_at_start = crate::shutdown::peek_count();
    let stop_task = AbortOnDrop(tokio::spawn(async move {
        stop.await;
        tracing::info!("shutdown requested: committing what is in flight");
        stop_flag.store(true, std::sync::atomic::Ordering::Release);
        wakeup.wakeup();
        // A signal since the start was (most likely) the stop itself: the next one
        // aborts. Counted, not listened for from here, so a second signal that
        // arrived before this task ran is not missed.
        let now = crate::shutdown::count();
        let abort_at = if now > signals_at_start {
            signals_at_start + 2
        } else {
            now + 1
        };
        crate::shutdown::count_reaches(abort_at).await;
        abort_tx.notify_one();
    }));

    consumer.subscribe(parts.subscription, listener).await?;
    tracing::info!(parent: &span, batch_records = cfg.batch_records, "job running");

    let health = parts.health;
    let telemetry = telemetry::Telemetry::new(
        &cfg.job,
        cfg.metrics_interval,
        cfg.lag_interval,
        Arc::clone(&health),
    );
    // An idle job makes no round trip to its database: the pinger does, so the ready
    // probe notices a database that went away while nothing was being committed.
    let _pinger = AbortOnDrop(tokio::spawn(ping(
        parts.pool.clone(),
        Arc::clone(&health),
        cfg.lag_interval,
    )));
    let (tx, rx) = mpsc::unbounded_channel();
    let committer = commit::Committer {
        pool: parts.pool,
        store: parts.store,
        dead_letters: parts.dead_letters,
        sink: Arc::new(parts.sink),
        state,
        stats: Arc::clone(&stats),
        retry_for: cfg.retry_for,
        idle_sql: idle_sql::<DB>(cfg.idle_transaction_timeout),
        job_label: metrics::SharedString::from(cfg.job.clone()),
        health: Arc::clone(&health),
        batch_started: None,
        _t: PhantomData,
    };
    let mut commit_task = tokio::spawn(tracing::Instrument::instrument(
        committer.run(rx, Arc::clone(&flight)),
        span.clone(),
    ));

    let abandon = Arc::clone(&flight);
    let mut fetcher = fetch::Fetcher {
        cfg: Arc::clone(&cfg),
        claimer,
        flow: parts.flow,
        flight,
        tx,
        stats: Arc::clone(&stats),
        pending: pending::Pending::default(),
        chain: HashMap::new(),
        reseeks: reseek::Reseeks::default(),
        retry_at: HashMap::new(),
        held: Default::default(),
        telemetry,
    };
    let fetched =
        tracing::Instrument::instrument(fetcher.run(consumer.as_mut()), span.clone()).await;
    // Closing the channel lets the commit task finish what it was given and end.
    // (the rest of the fetcher, its sender among it, is dropped here)
    let mut telemetry = fetcher.into_telemetry();

    let drain = async {
        match tokio::time::timeout(cfg.shutdown_timeout, &mut commit_task).await {
            Ok(Ok(r)) => r.map_err(Error::Sql),
            Ok(Err(join)) => Err(Error::Sql(weir_sql::Error::Sink {
                sink: "commit task".to_owned(),
                message: join.to_string(),
                retriable: false,
            })),
            Err(_) => Err(Error::ShutdownDeadline(cfg.shutdown_timeout)),
        }
    };
    let committed = if stopping.load(std::sync::atomic::Ordering::Acquire) {
        tokio::select! {
            r = drain => r,
            () = abort.notified() => {
                tracing::warn!("second shutdown signal: aborting at once (nothing is half-committed)");
                Err(Error::Aborted)
            }
        }
    } else {
        drain.await
    };
    commit_task.abort();
    // Nothing more will be committed (drained, aborted, past the deadline or failed):
    // the revoke that closing the consumer triggers must not wait for batches.
    abandon.abandon();
    let closed = if matches!(committed, Err(Error::Aborted)) {
        // An abort does not wait for the group either: the consumer is dropped (the
        // Kafka backend leaves the group on a thread of its own).
        drop(consumer);
        Ok(())
    } else if stopping.load(std::sync::atomic::Ordering::Acquire) {
        tokio::select! {
            r = consumer.close() => r.map_err(Error::from),
            () = abort.notified() => {
                tracing::warn!("second shutdown signal while closing the consumer: aborting at once");
                Err(Error::Aborted)
            }
        }
    } else {
        consumer.close().await.map_err(Error::from)
    };
    drop(stop_task);

    let summary = stats.lock().clone();
    telemetry.finish(&summary);
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        job = %cfg.job,
        records = summary.records,
        rows = summary.rows,
        dead_letters = summary.dead_letters,
        skipped = summary.skipped,
        commits = summary.commits,
        fenced = summary.fenced,
        seconds = secs,
        "job stopped"
    );
    // The first error wins: the fetch side's (it stopped the job), then the commit
    // task's, then closing the consumer.
    fetched?;
    committed?;
    closed?;
    Ok(summary)
}
