//! End to end, in one run: the pipelined DSL runtime (`weir_pipeline::Job`) against
//! the sequential `weir_sql::ExactlyOnceRunner`, both reading the same records and
//! writing them into PostgreSQL, next to the PostgreSQL ceiling for the same
//! transaction shape.
//!
//! - Records: `WEIR_BENCH_RECORDS` (default 200,000) JSON values of about 95 bytes,
//!   `{"id", "customer", "amount"}`, on 4 partitions (`id % 4`), produced once.
//! - Source: the embedded log (default), or Kafka with `WEIR_BENCH_KAFKA=1`
//!   (`WEIR_BENCH_KAFKA_BOOTSTRAP`, default `127.0.0.1:9092`; when nothing listens
//!   there a tansu broker is started from `scripts/provision`'s cache).
//! - Both variants: transactions of 5,000 records (`batch_records` /
//!   `with_batch_records`), linger 200 ms, a pool of 4 connections, the same JSON
//!   decoder (`weir_formats::Json`), PostgreSQL `COPY` into `orders` plus one offsets
//!   compare-and-set per partition per transaction.
//! - Ceiling: no source, no decode: rows built in memory, written the way the sink
//!   writes them (`TableSink::write_rows`, i.e. `COPY`) in transactions of 5,000 rows,
//!   each with the `SET LOCAL idle_in_transaction_session_timeout` and the 4 offsets
//!   compare-and-sets the runtimes issue.
//! - Each run gets a fresh schema (its own `orders`, `weir_offsets`,
//!   `weir_dead_letters`) and a fresh job name (its own group). Rounds run DSL,
//!   runner, ceiling; `WEIR_BENCH_ROUNDS` rounds (default 3); medians are reported.
//!   Each run is timed from the start of the job (setup, consumer, claims included,
//!   pool already open) to the moment a watcher sees every partition's offsets row
//!   at the end of the data; "steady" excludes the time before the first commit.
//!   "DB busy" is the share of 10 ms samples in which one of the run's connections
//!   was not idle (`pg_stat_activity`).
//! - After each run the table must hold exactly N rows with N distinct ids and no
//!   dead letters; otherwise the bench fails.
//!
//! Run: `cargo bench -p weir-pipeline --bench end_to_end` (PostgreSQL must be up:
//! `scripts/provision`). `WEIR_BENCH_SYNC_COMMIT=off` runs with
//! `synchronous_commit = off`; `WEIR_BENCH_KEEP=1` keeps the schemas;
//! `WEIR_BENCH_NAGLE=1` leaves Nagle's algorithm on (no `TCP_NODELAY`, sqlx 0.9's
//! default) on every variant's connections.

// Benchmark code: a setup failure aborts the run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::AssertSqlSafe;
use weir_core::{ConsumerConfig, Record, Subscription, TopicPartition};
use weir_formats::{Context, Json, SyncDeserializer};
use weir_pipeline::{sink, Job};
use weir_sql::{ExactlyOnceRunner, OffsetStore, Reject, TableName, TableSink};

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const PARTITIONS: i32 = 4;
const BATCH: usize = 5000;
const CONNECTIONS: u32 = 4;
const TABLE: &str = "orders";
const AGG_TABLE: &str = "orders_agg";
const KEYS: i64 = 10_000;

#[derive(serde::Deserialize)]
struct Order {
    id: i64,
    customer: String,
    amount: f64,
}
weir_sql::impl_row!(Order {
    id,
    customer,
    amount
});

fn customer(id: i64) -> String {
    format!(
        "customer-{:06} Northwind Traders GmbH & Co. KG, DE",
        id % 50_000
    )
}

fn amount(id: i64) -> f64 {
    ((id * 7919) % 1_000_000) as f64 / 100.0
}

fn value(id: i64) -> Vec<u8> {
    format!(
        r#"{{"id":{id},"customer":"{}","amount":{:.2}}}"#,
        customer(id),
        amount(id)
    )
    .into_bytes()
}

fn env_usize(key: &str, default: usize) -> Result<usize> {
    match std::env::var(key) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .with_context(|| format!("{key}={v} is not a count")),
        Err(_) => Ok(default),
    }
}

fn env_opt(key: &str) -> Result<Option<usize>> {
    match std::env::var(key) {
        Ok(_) => env_usize(key, 0).map(Some),
        Err(_) => Ok(None),
    }
}

fn env_on(key: &str) -> bool {
    std::env::var(key).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes" | "on"))
}

/// Per partition: the next offset once everything is consumed.
type Ends = BTreeMap<TopicPartition, i64>;

/// Where the records are.
enum Input {
    Log {
        _dir: tempfile::TempDir,
        _log: weir_log::Log,
        url: String,
    },
    Kafka {
        _broker: Option<weir_testkit::tansu::TansuBroker>,
        url: String,
    },
}

impl Input {
    fn url(&self) -> &str {
        match self {
            Input::Log { url, .. } | Input::Kafka { url, .. } => url,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Input::Log { .. } => "embedded log",
            Input::Kafka { .. } => "Kafka",
        }
    }
}

fn ids_of(p: i32, n: i64) -> impl Iterator<Item = i64> {
    (i64::from(p)..n).step_by(PARTITIONS as usize)
}

fn log_input(topic: &str, n: i64) -> Result<(Input, Ends)> {
    let dir = tempfile::tempdir()?;
    let log = weir_log::Log::open(dir.path(), weir_log::LogOptions::default())?;
    log.create_topic(topic, PARTITIONS)?;
    let mut ends = Ends::new();
    for p in 0..PARTITIONS {
        let tp = TopicPartition::new(topic, p);
        let recs: Vec<weir_log::NewRecord> = ids_of(p, n)
            .map(|id| weir_log::NewRecord::new(id.to_string(), value(id)))
            .collect();
        // appends of 500 records (~48 KB), a producer's batch: one log batch is not
        // re-read whole (a 2 MB batch would be) for each poll of 500 records
        for chunk in recs.chunks(500) {
            log.append(&tp, chunk)?;
        }
        ends.insert(tp, recs.len() as i64);
    }
    let url = format!("log://{}", dir.path().display());
    Ok((
        Input::Log {
            _dir: dir,
            _log: log,
            url,
        },
        ends,
    ))
}

async fn kafka_input(topic: &str, n: i64) -> Result<(Input, Ends)> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};

    let wanted =
        std::env::var("WEIR_BENCH_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let reachable = wanted
        .parse::<std::net::SocketAddr>()
        .ok()
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok());
    let (broker, bootstrap) = if reachable {
        (None, wanted)
    } else {
        eprintln!("end_to_end: nothing listens on {wanted}; starting a tansu broker");
        let b = weir_testkit::tansu::TansuBroker::start().map_err(|e| {
            anyhow!("no Kafka broker on {wanted} and tansu could not start: {e} (run scripts/provision)")
        })?;
        let bootstrap = b.bootstrap();
        (Some(b), bootstrap)
    };
    match &broker {
        Some(b) => b.create_topic(topic, PARTITIONS)?,
        None => {
            use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
            let admin: AdminClient<rdkafka::client::DefaultClientContext> =
                rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", &bootstrap)
                    .create()?;
            let r = admin
                .create_topics(
                    &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
                    &AdminOptions::new(),
                )
                .await?;
            for t in r {
                t.map_err(|(t, e)| anyhow!("creating topic {t}: {e}"))?;
            }
        }
    }
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        // as weir's tests produce to tansu: with several requests in flight, tansu
        // (in-memory storage) acknowledged batches it did not keep
        .set("enable.idempotence", "false")
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()?;
    let started = Instant::now();
    for chunk_start in (0..n).step_by(50_000) {
        let mut deliveries = Vec::with_capacity(50_000);
        for id in chunk_start..(chunk_start + 50_000).min(n) {
            let key = id.to_string();
            let payload = value(id);
            let mut rec = FutureRecord::to(topic)
                .partition((id % i64::from(PARTITIONS)) as i32)
                .key(&key)
                .payload(&payload);
            // enqueue now (the delivery is awaited below); wait while the queue is full
            loop {
                match producer.send_result(rec) {
                    Ok(d) => break deliveries.push(d),
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        back,
                    )) => {
                        rec = back;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => bail!("producing record {id}: {e}"),
                }
            }
        }
        for (i, d) in futures::future::join_all(deliveries)
            .await
            .into_iter()
            .enumerate()
        {
            d.map_err(|_| anyhow!("record {}: delivery cancelled", chunk_start + i as i64))?
                .map_err(|(e, _)| anyhow!("producing record {}: {e}", chunk_start + i as i64))?;
        }
    }
    producer.flush(Duration::from_secs(30))?;
    eprintln!(
        "end_to_end: produced {n} records to Kafka in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let probe: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "weir-bench-probe")
        .create()?;
    let mut ends = Ends::new();
    for p in 0..PARTITIONS {
        let want = ids_of(p, n).count() as i64;
        // tansu reports a high watermark short of the acknowledged records (it stops
        // at the base of the last batch, it seems); offsets start at 0, so the end is
        // the count, and the row check after each run catches any loss
        let (low, high) = probe.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if low != 0 || high > want {
            bail!("{topic}/{p}: watermarks {low}..{high}, expected 0..{want}");
        }
        if high != want {
            eprintln!(
                "end_to_end: {topic}/{p}: high watermark {high}, {want} records acknowledged"
            );
        }
        ends.insert(TopicPartition::new(topic, p), want);
    }
    Ok((
        Input::Kafka {
            _broker: broker,
            url: format!("kafka://{bootstrap}"),
        },
        ends,
    ))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Dsl,
    DslAgg,
    Runner,
    Ceiling,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Dsl => "DSL (weir_pipeline::Job)",
            Variant::DslAgg => "DSL, count + sum, 10k keys",
            Variant::Runner => "runner (ExactlyOnceRunner)",
            Variant::Ceiling => "PostgreSQL ceiling",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Variant::Dsl => "dsl",
            Variant::DslAgg => "agg",
            Variant::Runner => "runner",
            Variant::Ceiling => "ceiling",
        }
    }
}

/// One measured run.
#[derive(Clone, Debug)]
struct Run {
    total: Duration,
    /// From the first commit seen to the last.
    steady: Duration,
    /// Records committed at the first sample that saw a commit.
    first: i64,
    busy: f64,
    commits: u64,
    note: String,
}

/// A fresh schema and a pool of `CONNECTIONS` whose `search_path` is it, tagged with
/// the schema as `application_name` (for the busy samples).
async fn fresh_pool(admin: &PgPool, schema: &str, connections: u32) -> Result<PgPool> {
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(admin)
    .await?;
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(admin)
        .await?;
    let sync = std::env::var("WEIR_BENCH_SYNC_COMMIT").unwrap_or_else(|_| "on".to_owned());
    let opts = PgConnectOptions::from_str(PG_URL)?
        .application_name(schema)
        .options([
            ("search_path", schema),
            ("synchronous_commit", sync.as_str()),
        ]);
    let mut pool = PgPoolOptions::new().max_connections(connections);
    // TCP_NODELAY as the pools weir opens from a URL have it (sqlx 0.9 leaves Nagle
    // on: weir_sql::nodelay); WEIR_BENCH_NAGLE=1 measures without it
    if std::env::var_os("WEIR_BENCH_NAGLE").is_none() {
        pool = pool.after_connect(weir_sql::nodelay::after_connect::<sqlx::Postgres>(
            "127.0.0.1",
            5432,
        ));
    }
    Ok(pool.connect_with(opts).await?)
}

/// What a watcher saw: when every partition reached its end, when the first commit
/// appeared (and how far it was), the busy share.
struct Seen {
    done: Instant,
    first: Option<(Instant, i64)>,
    busy: f64,
}

/// Sample every 10 ms until `job`'s offsets rows in `schema` reach `ends`.
async fn watch(admin: &PgPool, schema: &str, job: &str, ends: &Ends) -> Result<Seen> {
    let store = OffsetStore::<sqlx::Postgres>::new(job)?;
    let opts = PgConnectOptions::from_str(PG_URL)?
        .application_name("weir-bench-watcher")
        .options([("search_path", schema)]);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await?;
    let total: i64 = ends.values().sum();
    let (mut samples, mut busy) = (0_u64, 0_u64);
    let mut first = None;
    let mut table_seen = false;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1 AND state IS DISTINCT FROM 'idle'",
        )
        .bind(schema)
        .fetch_one(admin)
        .await?;
        samples += 1;
        busy += u64::from(active > 0);
        let rows = match store.read_all(&pool).await {
            Ok(rows) => rows,
            // the run has not created its offsets table yet
            Err(_) if first.is_none() && !table_seen => continue,
            Err(e) => return Err(e.into()),
        };
        table_seen = true;
        let now = Instant::now();
        let committed: i64 = rows.values().filter_map(|r| r.next_offset).sum();
        if first.is_none() && committed > 0 {
            first = Some((now, committed));
        }
        let at_end = ends
            .iter()
            .all(|(tp, end)| rows.get(tp).and_then(|r| r.next_offset) == Some(*end));
        if at_end {
            return Ok(Seen {
                done: now,
                first,
                busy: busy as f64 / samples.max(1) as f64,
            });
        }
        if committed > total {
            bail!("{job}: offsets rows beyond the data ({committed} > {total}): {rows:?}");
        }
    }
}

/// Wait for the watcher, failing if the job ends first or takes too long.
async fn until_done<T>(
    admin: &PgPool,
    schema: &str,
    job: &str,
    ends: &Ends,
    task: &mut tokio::task::JoinHandle<Result<T>>,
) -> Result<Seen> {
    let patience = Duration::from_secs(120 + ends.values().sum::<i64>() as u64 / 2000);
    tokio::select! {
        seen = watch(admin, schema, job, ends) => seen,
        r = &mut *task => match r {
            Ok(Ok(_)) => bail!("{job} stopped before committing everything"),
            Ok(Err(e)) => Err(e.context(format!("{job} failed"))),
            Err(e) => bail!("{job} panicked: {e}"),
        },
        () = tokio::time::sleep(patience) => bail!("{job}: not done within {patience:?}"),
    }
}

fn decode(json: Json) -> impl FnMut(&Record) -> std::result::Result<Vec<Order>, Reject> + Send {
    move |r: &Record| {
        SyncDeserializer::<Order>::decode(&json, r.value.as_deref(), &Context::for_value(r))
            .map(|o| vec![o])
            .map_err(Reject::permanent)
    }
}

async fn run_dsl(
    admin: &PgPool,
    input: &Input,
    topic: &str,
    ends: &Ends,
    schema: &str,
    job: &str,
    aggregate: bool,
) -> Result<Run> {
    let pool = fresh_pool(admin, schema, CONNECTIONS).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // WEIR_BENCH_AGG_BATCH: a larger batch for the aggregate variant (more records
    // collapse into each key's row)
    let batch = match (aggregate, env_opt("WEIR_BENCH_AGG_BATCH")?) {
        (true, Some(b)) => b,
        _ => BATCH,
    };
    let mut job_spec = Job::new(job)
        .source(input.url(), [topic])
        .batch_records(batch);
    // diagnostics only (defaults otherwise): WEIR_BENCH_DSL_POLL_MS, WEIR_BENCH_DSL_IN_FLIGHT
    if let Some(ms) = env_opt("WEIR_BENCH_DSL_POLL_MS")? {
        job_spec = job_spec.poll_timeout(Duration::from_millis(ms as u64));
    }
    if let Some(n) = env_opt("WEIR_BENCH_DSL_IN_FLIGHT")? {
        job_spec = job_spec.max_in_flight_records(n);
    }
    let pipeline = job_spec.value::<Order, _>(Json::new());
    let start = Instant::now();
    let stop = async move {
        let _ = stop_rx.await;
    };
    let mut task = if aggregate {
        spawn_job(
            pipeline
                .key_by(|o| agg_key(o.id))
                .sink(sink::Postgres::aggregate(AGG_TABLE, ["k"], aggregates()))
                .pool(pool.clone()),
            stop,
        )
    } else {
        spawn_job(
            pipeline
                .sink(sink::Postgres::insert(TABLE))
                .pool(pool.clone()),
            stop,
        )
    };
    let seen = until_done(admin, schema, job, ends, &mut task).await?;
    let _ = stop_tx.send(());
    let summary = task.await??;
    pool.close().await;
    let mut note = String::new();
    if aggregate {
        note = rows_per_batch(admin, schema, summary.commits).await?;
    }
    let n: i64 = ends.values().sum();
    if summary.dead_letters != 0 || summary.records != n as u64 {
        bail!("{job}: summary {summary:?}, expected {n} records and 0 dead letters");
    }
    Ok(measured(
        start,
        &seen,
        n,
        summary.commits,
        format!(
            "peak in flight {}, pauses {}{note}",
            summary.peak_in_flight_records, summary.backpressure_pauses
        ),
    ))
}

/// Run a built job in a task until `stop`.
fn spawn_job<DB, T, S>(
    ready: weir_pipeline::Ready<DB, T, S>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<Result<weir_pipeline::Summary>>
where
    DB: weir_pipeline::Database,
    T: Send + Sync + 'static,
    S: weir_sql::TransactionalSink<DB, T> + 'static,
{
    tokio::spawn(async move { ready.run_until(stop).await.map_err(anyhow::Error::from) })
}

/// The aggregation key of order `id`: one of `KEYS`, spread like a hash.
fn agg_key(id: i64) -> i64 {
    (id.wrapping_mul(2_654_435_761) >> 7).rem_euclid(KEYS)
}

fn cents(id: i64) -> i64 {
    (id * 7919) % 1_000_000
}

fn aggregates() -> weir_pipeline::agg::Aggregates<Order> {
    weir_pipeline::agg::count("n").and(weir_pipeline::agg::sum("cents", |o: &Order| cents(o.id)))
}

/// Rows the delta upserts wrote per commit (PostgreSQL's own counters: inserted plus
/// updated tuples of the aggregate table), once the run's connections are closed.
async fn rows_per_batch(admin: &PgPool, schema: &str, commits: u64) -> Result<String> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows: Option<i64> = sqlx::query_scalar(
        "SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2",
    )
    .bind(schema)
    .bind(AGG_TABLE)
    .fetch_optional(admin)
    .await?;
    Ok(match rows {
        Some(r) => format!(", {} upserted rows per commit", r / commits.max(1) as i64),
        None => String::new(),
    })
}

/// Expected (sum of counts, keys, sum of cents) of the aggregate table after `n`.
fn agg_expected(n: i64) -> (i64, i64, i64) {
    let keys: std::collections::BTreeSet<i64> = (0..n).map(agg_key).collect();
    (n, keys.len() as i64, (0..n).map(cents).sum())
}

async fn run_runner(
    admin: &PgPool,
    input: &Input,
    topic: &str,
    ends: &Ends,
    schema: &str,
    job: &str,
) -> Result<Run> {
    let pool = fresh_pool(admin, schema, CONNECTIONS).await?;
    let config = ConsumerConfig::new()
        .with_bootstrap_servers(input.url())
        .with_group_id(job)
        .with_enable_auto_commit(false);
    let sink = TableSink::<sqlx::Postgres, Order>::new(TableName::new(TABLE)?)?;
    let mut runner = ExactlyOnceRunner::new(pool.clone(), job, sink.clone(), decode(Json::new()))?
        .with_batch_records(BATCH);
    let (wake_tx, wake_rx) = tokio::sync::oneshot::channel();
    let topic_owned = topic.to_owned();
    let start = Instant::now();
    let task_pool = pool.clone();
    let mut task = tokio::spawn(async move {
        // the same setup as a job's: offsets and dead-letter tables, the sink table
        runner.migrate().await?;
        sink.create_table(&task_pool).await?;
        let mut consumer = weir_pipeline::connect(config)?;
        let _ = wake_tx.send(consumer.wakeup_handle());
        let r = runner
            .run(consumer.as_mut(), Subscription::topics([topic_owned]))
            .await;
        let closed = consumer.close().await;
        let stats = r?;
        closed?;
        Ok::<_, anyhow::Error>(stats)
    });
    let seen = until_done(admin, schema, job, ends, &mut task).await?;
    wake_rx
        .await
        .map_err(|_| anyhow!("{job}: no wakeup handle"))?
        .wakeup();
    let stats = task.await??;
    pool.close().await;
    let n: i64 = ends.values().sum();
    if stats.dead_letters != 0 || stats.records != n as u64 {
        bail!("{job}: stats {stats:?}, expected {n} records and 0 dead letters");
    }
    Ok(measured(start, &seen, n, stats.commits, String::new()))
}

async fn run_ceiling(
    admin: &PgPool,
    topic: &str,
    ends: &Ends,
    schema: &str,
    job: &str,
) -> Result<Run> {
    let pool = fresh_pool(admin, schema, CONNECTIONS).await?;
    let n: i64 = ends.values().sum();
    // the rows as the runtimes would have decoded them, in the order a poll mixes
    // partitions (id order: each transaction holds every partition)
    let tps: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let rows: Vec<(TopicPartition, i64, Order)> = (0..n)
        .map(|id| {
            let p = (id % i64::from(PARTITIONS)) as usize;
            (
                tps[p].clone(),
                id / i64::from(PARTITIONS),
                Order {
                    id,
                    customer: customer(id),
                    amount: amount(id),
                },
            )
        })
        .collect();
    let job_owned = job.to_owned();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let task_pool = pool.clone();
    let mut task = tokio::spawn(async move {
        let store = OffsetStore::<sqlx::Postgres>::new(&job_owned)?;
        store.migrate(&task_pool).await?;
        weir_sql::DeadLetters::<sqlx::Postgres>::new(&job_owned)?
            .migrate(&task_pool)
            .await?;
        let sink = TableSink::<sqlx::Postgres, Order>::new(TableName::new(TABLE)?)?;
        sink.create_table(&task_pool).await?;
        let claims = store.claim(&task_pool, &tps, "bench-ceiling").await?;
        let mut expected: BTreeMap<TopicPartition, Option<i64>> = claims
            .iter()
            .map(|(tp, c)| (tp.clone(), c.next_offset))
            .collect();
        let mut commits = 0_u64;
        for chunk in rows.chunks(BATCH) {
            let mut tx = task_pool.begin().await?;
            sqlx::query("SET LOCAL idle_in_transaction_session_timeout = '60000ms'")
                .execute(&mut *tx)
                .await?;
            sink.write_rows(&mut tx, chunk.iter().map(|r| &r.2)).await?;
            let mut next: BTreeMap<&TopicPartition, i64> = BTreeMap::new();
            for (tp, off, _) in chunk {
                next.insert(tp, off + 1);
            }
            for (tp, nx) in next {
                let epoch = claims[tp].epoch;
                if !store.advance(&mut tx, tp, epoch, expected[tp], nx).await? {
                    bail!("ceiling fenced on {tp}");
                }
                expected.insert(tp.clone(), Some(nx));
            }
            tx.commit().await?;
            commits += 1;
        }
        // timed by the watcher, like the jobs: wait for it
        let _ = stop_rx.await;
        Ok(commits)
    });
    let seen = until_done(admin, schema, job, ends, &mut task).await?;
    let _ = stop_tx.send(());
    let commits = task.await??;
    pool.close().await;
    Ok(measured(start, &seen, n, commits, String::new()))
}

fn measured(start: Instant, seen: &Seen, n: i64, commits: u64, note: String) -> Run {
    let total = seen.done.saturating_duration_since(start);
    let (steady, first) = match seen.first {
        Some((t, done)) if done < n => (seen.done.saturating_duration_since(t), done),
        _ => (total, 0),
    };
    Run {
        total,
        steady,
        first,
        busy: seen.busy,
        commits,
        note,
    }
}

/// Every count and sum exact (against [`agg_expected`]), and no dead letters.
async fn verify_agg(admin: &PgPool, schema: &str, n: i64) -> Result<()> {
    let got: (i64, i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT SUM(n)::bigint, COUNT(*), SUM(cents)::bigint FROM \"{schema}\".{AGG_TABLE}"
    )))
    .fetch_one(admin)
    .await?;
    let want = agg_expected(n);
    if got != want {
        bail!("{schema}: (records counted, keys, cents) {got:?}, expected {want:?}");
    }
    Ok(())
}

/// Exactly `n` rows with `n` distinct ids `0..n`, and no dead letters.
async fn verify(admin: &PgPool, schema: &str, n: i64) -> Result<()> {
    let (rows, distinct, lo, hi): (i64, i64, Option<i64>, Option<i64>) =
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT COUNT(*), COUNT(DISTINCT id), MIN(id), MAX(id) FROM \"{schema}\".{TABLE}"
        )))
        .fetch_one(admin)
        .await?;
    let dead: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM \"{schema}\".weir_dead_letters"
    )))
    .fetch_one(admin)
    .await?;
    let ok = rows == n && distinct == n && lo == Some(0) && hi == Some(n - 1) && dead == 0;
    if !ok {
        bail!(
            "{schema}: {rows} rows, {distinct} distinct ids (min {lo:?}, max {hi:?}), {dead} dead letters; \
             expected {n} rows, {n} distinct ids 0..{n}, 0 dead letters: {} duplicates, {} lost",
            rows - distinct,
            n - distinct
        );
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        l if l % 2 == 1 => v[l / 2],
        l => (v[l / 2 - 1] + v[l / 2]) / 2.0,
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing that
    // asks for a run of minutes: only run when asked to bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("end_to_end: run with `cargo bench -p weir-pipeline --bench end_to_end`");
        return Ok(());
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let n = env_usize("WEIR_BENCH_RECORDS", 200_000)? as i64;
    let rounds = env_usize("WEIR_BENCH_ROUNDS", 3)?.max(1);
    if n < 1 {
        bail!("WEIR_BENCH_RECORDS must be at least 1");
    }
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect(PG_URL)
        .await
        .map_err(|e| {
            anyhow!("PostgreSQL at 127.0.0.1:5432 (user postgres, db test) unreachable: {e}; run scripts/provision")
        })?;
    let pid = std::process::id();
    let topic = format!("bench_orders_{pid}");
    let produced = Instant::now();
    let (input, ends) = if env_on("WEIR_BENCH_KAFKA") {
        kafka_input(&topic, n).await?
    } else {
        log_input(&topic, n)?
    };
    let avg_bytes =
        (0..n.min(10_000)).map(|id| value(id).len()).sum::<usize>() as f64 / n.min(10_000) as f64;
    let sync = std::env::var("WEIR_BENCH_SYNC_COMMIT").unwrap_or_else(|_| "on".to_owned());
    println!(
        "end_to_end: {n} records (~{avg_bytes:.0} B JSON) on {PARTITIONS} partitions of the {} ({:.1} s to produce), transactions of {BATCH}, {CONNECTIONS} connections, synchronous_commit={sync}, TCP_NODELAY {}, {rounds} rounds",
        input.name(),
        produced.elapsed().as_secs_f64(),
        if std::env::var_os("WEIR_BENCH_NAGLE").is_some() { "off" } else { "on" }
    );
    let keep = env_on("WEIR_BENCH_KEEP");
    // WEIR_BENCH_ONLY=dsl (or runner, ceiling; comma-separated) runs only those, for
    // profiling; the summary then needs all three and is skipped
    let only = std::env::var("WEIR_BENCH_ONLY").unwrap_or_default();
    let order: Vec<Variant> = [
        Variant::Dsl,
        Variant::DslAgg,
        Variant::Runner,
        Variant::Ceiling,
    ]
    .into_iter()
    .filter(|v| only.trim().is_empty() || only.split(',').any(|o| o.trim() == v.tag()))
    .collect();
    let mut runs: BTreeMap<&'static str, Vec<Run>> = BTreeMap::new();
    let mut schemas = Vec::new();
    for round in 0..rounds {
        for &v in &order {
            let schema = format!("weir_e2e_{}_{round}_{pid}", v.tag());
            let job = format!("e2e-{}-{round}-{pid}", v.tag());
            // each run starts from a flushed database, not in another run's checkpoint
            let _ = sqlx::query("CHECKPOINT").execute(&admin).await;
            let run = match v {
                Variant::Dsl => run_dsl(&admin, &input, &topic, &ends, &schema, &job, false).await,
                Variant::DslAgg => {
                    run_dsl(&admin, &input, &topic, &ends, &schema, &job, true).await
                }
                Variant::Runner => run_runner(&admin, &input, &topic, &ends, &schema, &job).await,
                Variant::Ceiling => run_ceiling(&admin, &topic, &ends, &schema, &job).await,
            }
            .with_context(|| format!("round {round}, {}", v.label()))?;
            if v == Variant::DslAgg {
                verify_agg(&admin, &schema, n).await
            } else {
                verify(&admin, &schema, n).await
            }
            .with_context(|| format!("round {round}, {}", v.label()))?;
            println!(
                "  round {round} {:<28} {:>7.2} s  {:>9.0} rec/s  steady {:>9.0} rec/s  DB busy {:>3.0} %  {} commits  checked: 0 duplicates, 0 lost{}",
                v.label(),
                run.total.as_secs_f64(),
                n as f64 / run.total.as_secs_f64(),
                (n - run.first) as f64 / run.steady.as_secs_f64(),
                run.busy * 100.0,
                run.commits,
                if run.note.is_empty() { String::new() } else { format!("  ({})", run.note) }
            );
            runs.entry(v.tag()).or_default().push(run);
            if keep {
                schemas.push(schema);
            } else {
                sqlx::query(AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                )))
                .execute(&admin)
                .await?;
            }
        }
    }
    if order.len() < 4 {
        return Ok(());
    }
    let rate = |tag: &str| {
        median(
            runs[tag]
                .iter()
                .map(|r| n as f64 / r.total.as_secs_f64())
                .collect(),
        )
    };
    let steady = |tag: &str| {
        median(
            runs[tag]
                .iter()
                .map(|r| (n - r.first) as f64 / r.steady.as_secs_f64())
                .collect(),
        )
    };
    let secs = |tag: &str| median(runs[tag].iter().map(|r| r.total.as_secs_f64()).collect());
    let busy = |tag: &str| median(runs[tag].iter().map(|r| r.busy * 100.0).collect());
    let ceiling = rate("ceiling");
    let ceiling_steady = steady("ceiling");
    println!();
    println!(
        "medians of {rounds} ({n} records, {}, transactions of {BATCH}):",
        input.name()
    );
    println!(
        "| {:<28} | {:>8} | {:>10} | {:>10} | {:>10} | {:>10} | {:>7} |",
        "variant", "time s", "rec/s", "/ ceiling", "steady r/s", "/ ceiling", "DB busy"
    );
    println!(
        "|{:-<30}|{:->10}|{:->12}|{:->12}|{:->12}|{:->12}|{:->9}|",
        "", "", "", "", "", "", ""
    );
    for v in [
        Variant::Ceiling,
        Variant::Dsl,
        Variant::DslAgg,
        Variant::Runner,
    ] {
        let t = v.tag();
        println!(
            "| {:<28} | {:>8.2} | {:>10.0} | {:>10.2} | {:>10.0} | {:>10.2} | {:>6.0} % |",
            v.label(),
            secs(t),
            rate(t),
            rate(t) / ceiling,
            steady(t),
            steady(t) / ceiling_steady,
            busy(t)
        );
    }
    println!(
        "DSL / runner: {:.2} (end to end), {:.2} (steady)",
        rate("dsl") / rate("runner"),
        steady("dsl") / steady("runner")
    );
    println!(
        "aggregate (count + sum into {KEYS} keys) / plain inserts: {:.2} (end to end), {:.2} (steady)",
        rate("agg") / rate("dsl"),
        steady("agg") / steady("dsl")
    );
    if keep {
        println!("kept schemas: {}", schemas.join(", "));
    }
    if !env_on("WEIR_BENCH_NO_SQLITE") {
        sqlite_pair(&input, &topic, &ends, rounds).await?;
    }
    Ok(())
}

/// SQLite: the same records inserted, and aggregated, by the DSL, interleaved
/// rounds; medians and their ratio.
async fn sqlite_pair(input: &Input, topic: &str, ends: &Ends, rounds: usize) -> Result<()> {
    let n: i64 = ends.values().sum();
    let mut rates: BTreeMap<bool, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        for aggregate in [false, true] {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}", dir.path().join("bench.sqlite").display());
            let pool = <sqlx::Sqlite as weir_pipeline::Database>::open(&url, 2).await?;
            let job = format!("sqlite-{aggregate}-{round}");
            let watcher = pool.clone();
            let (job_name, total) = (job.clone(), n);
            let done = async move {
                loop {
                    let c: Option<i64> = sqlx::query_scalar(
                        "SELECT SUM(next_offset) FROM weir_offsets WHERE job = ?1",
                    )
                    .bind(&job_name)
                    .fetch_one(&watcher)
                    .await
                    .unwrap_or(None);
                    if c == Some(total) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            let pipeline = Job::new(&job)
                .source(input.url(), [topic])
                .batch_records(BATCH)
                .value::<Order, _>(Json::new());
            let start = Instant::now();
            let summary = if aggregate {
                pipeline
                    .key_by(|o| agg_key(o.id))
                    .sink(sink::Sqlite::aggregate(AGG_TABLE, ["k"], aggregates()))
                    .pool(pool.clone())
                    .run_until(done)
                    .await?
            } else {
                pipeline
                    .sink(sink::Sqlite::insert(TABLE))
                    .pool(pool.clone())
                    .run_until(done)
                    .await?
            };
            let secs = start.elapsed().as_secs_f64();
            let got: (i64, i64, i64) = if aggregate {
                sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT SUM(n), COUNT(*), SUM(cents) FROM {AGG_TABLE}"
                )))
                .fetch_one(&pool)
                .await?
            } else {
                let (rows, ids): (i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT COUNT(*), COUNT(DISTINCT id) FROM {TABLE}"
                )))
                .fetch_one(&pool)
                .await?;
                (rows, ids, 0)
            };
            let want = if aggregate {
                agg_expected(n)
            } else {
                (n, n, 0)
            };
            if got != want {
                bail!("SQLite round {round} (aggregate {aggregate}): {got:?}, expected {want:?}");
            }
            println!(
                "  round {round} SQLite {:<24} {secs:>7.2} s  {:>9.0} rec/s  {} commits  checked: 0 duplicates, 0 lost",
                if aggregate { "count + sum, 10k keys" } else { "insert" },
                n as f64 / secs,
                summary.commits
            );
            rates.entry(aggregate).or_default().push(n as f64 / secs);
            pool.close().await;
        }
    }
    let (plain, agg) = (median(rates[&false].clone()), median(rates[&true].clone()));
    println!(
        "SQLite medians of {rounds}: insert {plain:.0} rec/s, count + sum into {KEYS} keys {agg:.0} rec/s: aggregate / plain {:.2}",
        agg / plain
    );
    Ok(())
}
