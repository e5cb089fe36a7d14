//! The job process of the kill -9 crash loop (`weir_testkit::crash`).
//!
//! Reads topic `in` of an embedded log (or a Kafka cluster), turns each record into
//! rows (`<small>:<payload>` values; `POISON` and over-long payloads go to the dead
//! letters) and writes them exactly once into a database through weir-sql. Runs
//! until killed. Built with the `failpoints` feature, `WEIR_FAILPOINT=name:p,...` makes
//! it SIGKILL itself at named points.
//!
//! ```text
//! weir-crash-job --log DIR --db URL --job NAME [--schema S] [--batch N]
//! weir-crash-job --kafka HOST:PORT --topic T --db URL --job NAME ...   (standalone assign)
//! weir-crash-job --kafka HOST:PORT --topic T --group [--session-timeout-ms MS] ...
//!     [--idle-tx-timeout-ms MS]   (PostgreSQL: idle-in-transaction bound of each batch)
//! ```
//!
//! `--dsl` runs the same job written with the pipeline DSL (`weir_pipeline::Job`,
//! subscribing in the group `NAME` on either backend) instead of `ExactlyOnceRunner`;
//! `--sink-delay-ms MS` (with `--dsl`) makes every batch write take that much longer
//! (a slow database, for the shutdown tests). With `--dsl` the job stops on
//! `weir::shutdown_signal()`: the first SIGINT/SIGTERM drains, a second aborts.
//!
//! `--agg` (with `--dsl`) aggregates instead of writing rows: record `i` (key `k{i}`)
//! counts into bucket `i % 17` of table `crash_agg` (count, sum, min and max of `i`),
//! so every bucket is updated from every partition; poison still goes to the dead
//! letters. `weir_testkit::crash` then checks the buckets against the input.
//!
//! SIGTERM makes it commit what it buffered, leave the group and exit 0.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use weir_core::{AutoOffsetReset, Consumer, ConsumerConfig, Record, Subscription};
use weir_sql::{
    impl_row, DeadLetters, Dialect, ExactlyOnceRunner, OffsetStore, Reject, TableName, TableSink,
};

struct Out {
    src_partition: i32,
    src_offset: i64,
    ordinal: i32,
    payload: String,
}
impl_row!(Out {
    src_partition,
    src_offset,
    ordinal,
    payload
});

fn decode(r: &Record) -> std::result::Result<Vec<Out>, Reject> {
    let v =
        std::str::from_utf8(r.value.as_deref().unwrap_or_default()).map_err(Reject::permanent)?;
    let (n, payload) = v
        .split_once(':')
        .ok_or_else(|| Reject::permanent("no ':' in value"))?;
    let n: u32 = n.parse().map_err(Reject::permanent)?;
    Ok((0..n.max(1))
        .map(|ordinal| Out {
            src_partition: r.partition,
            src_offset: r.offset,
            ordinal: ordinal as i32,
            payload: payload.to_owned(),
        })
        .collect())
}

struct Args {
    log: Option<String>,
    kafka: Option<String>,
    db: String,
    job: String,
    schema: Option<String>,
    batch: usize,
    topic: String,
    group: bool,
    session_timeout_ms: Option<u64>,
    idle_tx_timeout_ms: Option<u64>,
    dsl: bool,
    agg: bool,
    sink_delay_ms: u64,
}

fn args() -> Result<Args> {
    let mut a = Args {
        log: None,
        kafka: None,
        db: String::new(),
        job: "crash".into(),
        schema: None,
        batch: 50,
        topic: "in".into(),
        group: false,
        session_timeout_ms: None,
        idle_tx_timeout_ms: None,
        dsl: false,
        agg: false,
        sink_delay_ms: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--log" => a.log = Some(val()?),
            "--kafka" => a.kafka = Some(val()?),
            "--db" => a.db = val()?,
            "--job" => a.job = val()?,
            "--schema" => a.schema = Some(val()?),
            "--batch" => a.batch = val()?.parse()?,
            "--topic" => a.topic = val()?,
            "--group" => a.group = true,
            "--dsl" => a.dsl = true,
            "--agg" => a.agg = true,
            "--sink-delay-ms" => a.sink_delay_ms = val()?.parse()?,
            "--session-timeout-ms" => a.session_timeout_ms = Some(val()?.parse()?),
            "--idle-tx-timeout-ms" => a.idle_tx_timeout_ms = Some(val()?.parse()?),
            other => bail!("unknown argument {other}"),
        }
    }
    if a.db.is_empty() {
        bail!("--db is required");
    }
    Ok(a)
}

fn table(name: &str, schema: &Option<String>) -> Result<TableName> {
    let t = TableName::new(name)?;
    Ok(match schema {
        Some(s) => t.with_schema(s)?,
        None => t,
    })
}

/// The sink table: payloads over 40 characters are refused by the database.
async fn create_sink_table<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    sink_table: &TableName,
) -> Result<()> {
    let k = DB::KIND;
    let q = |s: &str| weir_sql::Ident::new(s).map(|i| i.quoted(k));
    let text = if k == weir_sql::DialectKind::Sqlite {
        "TEXT"
    } else {
        "VARCHAR(40)"
    };
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS {} ({} INTEGER NOT NULL, {} BIGINT NOT NULL, {} INTEGER NOT NULL, {} {text} NOT NULL CHECK (length({}) <= 40))",
        sink_table.quoted(k),
        q("src_partition")?,
        q("src_offset")?,
        q("ordinal")?,
        q("payload")?,
        q("payload")?
    );
    let mut conn = pool.acquire().await?;
    DB::execute(&mut conn, &Arc::from(ddl), &[]).await?;
    Ok(())
}

/// A table sink whose every write takes `delay` longer.
struct Delayed<DB: Dialect> {
    inner: TableSink<DB, Out>,
    delay: Duration,
}

#[weir_sql::async_trait]
impl<DB: Dialect> weir_sql::TransactionalSink<DB, Out> for Delayed<DB> {
    fn name(&self) -> &str {
        "crash_out"
    }
    async fn write(
        &self,
        tx: &mut sqlx::Transaction<'static, DB>,
        items: &[weir_sql::Item<Out>],
    ) -> weir_sql::Result<()> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.inner.write(tx, items).await
    }
}

/// The same job through the pipeline DSL: records → rows (poison is a permanent
/// error, dead-lettered), the table refuses over-long payloads (isolated into the
/// dead letters by the runtime), offsets in the same transaction.
async fn run_dsl<DB: weir_pipeline::Database>(
    pool: sqlx::Pool<DB>,
    args: &Args,
    source: String,
    term: tokio::signal::unix::Signal,
) -> Result<()> {
    // the runtime installs its own SIGINT/SIGTERM handlers (first drains, second
    // aborts); the one main registered early only covered start-up
    drop(term);
    create_sink_table(&pool, &TableName::new("crash_out")?).await?;
    eprintln!("crash job {} starting (dsl)", args.job);
    let mut job = weir_pipeline::Job::new(&args.job)
        .source(source, [args.topic.as_str()])
        .config("max.poll.records", &args.batch.max(1).to_string())
        .batch_records(args.batch)
        .linger(Duration::from_millis(20))
        .poll_timeout(Duration::from_millis(50));
    if let Some(ms) = args.session_timeout_ms {
        job = job
            .config("session.timeout.ms", &ms.to_string())
            .config("heartbeat.interval.ms", &(ms / 4).max(100).to_string());
    }
    if let Some(ms) = args.idle_tx_timeout_ms {
        job = job.idle_transaction_timeout(Some(Duration::from_millis(ms)));
    }
    if args.agg {
        use weir_pipeline::agg;
        let summary = job
            .records()
            .try_map(|r: Record| {
                decode(&r).map_err(weir_pipeline::OpError::from)?;
                weir_testkit::crash::record_index(&r).map_err(weir_pipeline::OpError::permanent)
            })
            .key_by(|i: &i64| i % weir_testkit::crash::AGG_BUCKETS)
            .sink(weir_pipeline::sink::Table::<DB>::aggregate(
                "crash_agg",
                ["bucket"],
                agg::count("n")
                    .and(agg::sum("total", |i: &i64| *i))
                    .and(agg::min("lo", |i: &i64| *i))
                    .and(agg::max("hi", |i: &i64| *i)),
            ))
            .pool(pool)
            .run_until(weir_pipeline::shutdown_signal())
            .await?;
        eprintln!("crash job {} stopped cleanly: {summary:?}", args.job);
        return Ok(());
    }
    let summary = job
        .records()
        .try_map(|r: Record| decode(&r).map_err(weir_pipeline::OpError::from))
        .flat_map(|rows| rows)
        .sink(weir_pipeline::sink::custom(Delayed {
            inner: TableSink::<DB, Out>::new(TableName::new("crash_out")?)?,
            delay: Duration::from_millis(args.sink_delay_ms),
        }))
        .pool(pool)
        .run_until(weir_pipeline::shutdown_signal())
        .await?;
    eprintln!("crash job {} stopped cleanly: {summary:?}", args.job);
    Ok(())
}

async fn run<DB: Dialect>(
    pool: sqlx::Pool<DB>,
    args: &Args,
    mut consumer: Box<dyn Consumer>,
    mut term: tokio::signal::unix::Signal,
) -> Result<()> {
    let sink_table = table("crash_out", &args.schema)?;
    let sink = TableSink::<DB, Out>::new(sink_table.clone())?;
    let store =
        OffsetStore::<DB>::new(&args.job)?.with_table(table("weir_offsets", &args.schema)?)?;
    let dlq =
        DeadLetters::<DB>::new(&args.job)?.with_table(table("weir_dead_letters", &args.schema)?)?;
    let mut runner = ExactlyOnceRunner::new(pool.clone(), &args.job, sink, decode)?
        .with_offset_store(store)
        .with_dead_letters(dlq)
        .with_batch_records(args.batch)
        .with_linger(Duration::from_millis(20))
        .with_poll_timeout(Duration::from_millis(50));
    if let Some(ms) = args.idle_tx_timeout_ms {
        runner = runner.with_idle_transaction_timeout(Some(Duration::from_millis(ms)));
    }
    runner.migrate().await?;
    create_sink_table(&pool, &sink_table).await?;
    eprintln!("crash job {} starting", args.job);
    // SIGTERM: stop polling, commit what is buffered, leave the group, exit 0.
    let wake = consumer.wakeup_handle();
    tokio::spawn(async move {
        if term.recv().await.is_some() {
            wake.wakeup();
        }
    });
    if args.kafka.is_some() && !args.group {
        // Standalone assignment: a restarted process takes over at once instead of
        // waiting for the killed member's session to time out. Claims and seeks are
        // the runner's, as in group mode.
        let partitions = tokio::time::timeout(
            Duration::from_secs(30),
            consumer.partitions_for(&args.topic),
        )
        .await
        .context("reading the input topic's partitions timed out")??;
        runner.run_assigned(consumer.as_mut(), &partitions).await?;
    } else {
        runner
            .run(
                consumer.as_mut(),
                Subscription::topics([args.topic.as_str()]),
            )
            .await?;
    }
    consumer.close().await?;
    eprintln!("crash job {} stopped cleanly", args.job);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    // Registered first: a SIGTERM during start-up is honoured once the runner polls.
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let args = args()?;
    // warnings (fenced partitions, retries, failed claims) go to stderr, which the
    // harness shows when a run fails; WEIR_LOG overrides the filter
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,weir_sql=debug")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    if args.dsl {
        return main_dsl(&args, term).await;
    }
    let config = ConsumerConfig::new()
        .with_group_id(args.job.clone())
        .with_auto_offset_reset(AutoOffsetReset::Earliest)
        .with_enable_auto_commit(false)
        .with_max_poll_records(args.batch.max(1));
    let config = match args.session_timeout_ms {
        Some(ms) => config
            .with_session_timeout(Duration::from_millis(ms))
            .with_heartbeat_interval(Duration::from_millis((ms / 4).max(100))),
        None => config,
    };
    let consumer: Box<dyn Consumer> = match (&args.log, &args.kafka) {
        (Some(dir), None) => {
            let log = weir_log::Log::open(dir, weir_log::LogOptions::default())?;
            Box::new(weir_log::LogConsumer::new(&log, config)?)
        }
        (None, Some(servers)) => Box::new(weir_kafka::KafkaConsumer::new(
            config.with_bootstrap_servers(servers.clone()),
        )?),
        _ => bail!("exactly one of --log or --kafka is required"),
    };
    let scheme = args.db.split(':').next().unwrap_or("");
    match scheme {
        "postgres" | "postgresql" => {
            run(
                sqlx::PgPool::connect(&args.db).await?,
                &args,
                consumer,
                term,
            )
            .await
        }
        "mysql" | "mariadb" => {
            run(
                sqlx::MySqlPool::connect(&args.db).await?,
                &args,
                consumer,
                term,
            )
            .await
        }
        "sqlite" => {
            let opts: sqlx::sqlite::SqliteConnectOptions = args.db.parse()?;
            let opts = opts
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10));
            run(
                sqlx::SqlitePool::connect_with(opts).await?,
                &args,
                consumer,
                term,
            )
            .await
        }
        other => bail!("unsupported database scheme `{other}`"),
    }
}

async fn main_dsl(args: &Args, term: tokio::signal::unix::Signal) -> Result<()> {
    let source = match (&args.log, &args.kafka) {
        (Some(dir), None) => format!("log://{dir}"),
        (None, Some(servers)) => format!("kafka://{servers}"),
        _ => bail!("exactly one of --log or --kafka is required"),
    };
    let scheme = args.db.split(':').next().unwrap_or("");
    match scheme {
        "postgres" | "postgresql" => {
            let mut opts: sqlx::postgres::PgConnectOptions = args.db.parse()?;
            if let Some(schema) = &args.schema {
                opts = opts.options([("search_path", schema.as_str())]);
            }
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await?;
            run_dsl(pool, args, source, term).await
        }
        "mysql" | "mariadb" => {
            let pool = sqlx::MySqlPool::connect(&args.db).await?;
            run_dsl(pool, args, source, term).await
        }
        "sqlite" => {
            let opts: sqlx::sqlite::SqliteConnectOptions = args.db.parse()?;
            let opts = opts
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10));
            run_dsl(
                sqlx::SqlitePool::connect_with(opts).await?,
                args,
                source,
                term,
            )
            .await
        }
        other => bail!("unsupported database scheme `{other}`"),
    }
}
