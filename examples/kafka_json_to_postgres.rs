//! Kafka → PostgreSQL, exactly once: JSON orders filtered and mapped by a weir job
//! into a PostgreSQL table, the offsets committed in the same transactions.
//!
//! Needs a Kafka broker on 127.0.0.1:9092 and PostgreSQL on 127.0.0.1:5432 (database
//! `test`, user `postgres`); `scripts/provision` starts both (the broker is tansu, a
//! Kafka-protocol broker in one binary). Then:
//!
//! ```text
//! cargo run --example kafka_json_to_postgres --features kafka
//! cargo run --example kafka_json_to_postgres --features kafka -- --records 100000
//! ```
//!
//! What happens:
//! 1. The example starts over: it (re)creates the topic `orders` with 4 partitions,
//!    drops the table `big_orders` and forgets the job's stored offsets.
//! 2. It produces `--records` JSON orders `{id, customer, amount}`, keyed by customer;
//!    one in 250 is deliberately malformed (a poison record).
//! 3. It runs the job in [`job`] (the part a user writes), named `json-to-postgres`:
//!    consume `orders` (in a consumer group of its own for this run), decode JSON,
//!    keep orders over 100.00, insert them into `big_orders`, poison records into `weir_dead_letters` and each
//!    partition's next offset into `weir_offsets`, one transaction per batch. It stops
//!    once every produced offset is committed (or on Ctrl-C: it commits what is in
//!    flight and leaves the group; the run then exits non-zero, unchecked).
//! 4. It prints the rows, dead letters and offsets, and checks exactly once: as many
//!    rows as big orders produced, each id once, each poison record dead-lettered once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

const PARTITIONS: i32 = 4;
const POISON_EVERY: u64 = 250;
const PROVISION: &str = "start the services with scripts/provision";

/// An order as producers write it (JSON).
#[derive(Serialize, Deserialize)]
struct Order {
    id: i64,
    customer: String,
    amount: f64,
}

/// One row of `big_orders`.
#[derive(weir::Row)]
struct BigOrder {
    id: i64,
    customer: String,
    amount: f64,
}

/// The job: what a user of weir writes. It runs until `stop` resolves.
async fn job(
    args: &Args,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> weir::pipeline::Result<weir::Summary> {
    weir::Job::new(args.job.as_str()) // the key of its rows in `weir_offsets`
        .source(format!("kafka://{}", args.brokers), [args.topic.as_str()])
        .database(args.database.as_str())
        .config("group.id", &args.group) // default: the job's name
        .config("session.timeout.ms", "6000") // a quick group join on a development broker
        .value::<Order, _>(weir::formats::Json::new()) // malformed JSON: a dead letter
        .filter(|o| o.amount > 100.0)
        .map(|o| BigOrder {
            id: o.id,
            customer: o.customer,
            amount: o.amount,
        })
        .sink(weir::sink::Postgres::insert(&args.table))
        .run_until(stop)
        .await
}

// ---------------------------------------------------------------------------------
// Around the job: start over, produce, wait, check.
// ---------------------------------------------------------------------------------

/// Command-line arguments (the test runs the example with its own names).
struct Args {
    brokers: String,
    database: String,
    topic: String,
    table: String,
    job: String,
    /// The consumer group: a fresh one per run, since every run starts over (and
    /// tansu can wedge a group whose member left during a join: DEVELOPERS.md).
    group: String,
    records: u64,
}

fn parse_args(argv: impl IntoIterator<Item = String>) -> anyhow::Result<Args> {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let mut args = Args {
        brokers: env("KAFKA_BROKERS", "127.0.0.1:9092"),
        database: env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
        topic: "orders".into(),
        table: "big_orders".into(),
        job: "json-to-postgres".into(),
        group: String::new(),
        records: 10_000,
    };
    let mut it = argv.into_iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{a} needs {name}"));
        match a.as_str() {
            "--brokers" => args.brokers = value("HOST:PORT")?,
            "--database" => args.database = value("URL")?,
            "--topic" => args.topic = value("NAME")?,
            "--table" => args.table = value("NAME")?,
            "--job" => args.job = value("NAME")?,
            "--records" => args.records = value("N")?.parse()?,
            "-h" | "--help" => {
                println!(
                    "usage: kafka_json_to_postgres [--records N] [--brokers HOST:PORT] [--database URL]\n\
                     \x20                             [--topic NAME] [--table NAME] [--job NAME]\n\
                     (defaults: $KAFKA_BROKERS or 127.0.0.1:9092, $DATABASE_URL or postgres://postgres@127.0.0.1:5432/test)"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    if args.records == 0 {
        bail!("--records must be at least 1");
    }
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    args.group = format!("{}-{millis}", args.job);
    // the table name goes into SQL text: plain identifiers only
    if !args
        .table
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        bail!("--table must be letters, digits and `_`");
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    // weir's logs on stderr, filtered by RUST_LOG (default: warnings; `RUST_LOG=info`
    // shows claims, fences and retries)
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    run(std::env::args().skip(1)).map(|_| ())
}

/// What a run saw (the test asserts on it).
#[derive(Debug)]
pub struct Outcome {
    /// Rows in the table.
    pub rows: i64,
    /// Distinct ids among them.
    pub distinct_ids: i64,
    /// Orders over 100.00 that were produced.
    pub expected_rows: i64,
    /// Dead letters of this job.
    pub dead_letters: i64,
    /// Poison records produced.
    pub poison: i64,
}

/// Runs the example with these command-line arguments (also used by
/// `tests/examples_kafka.rs`); fails unless the exactly-once checks pass.
pub fn run(argv: impl IntoIterator<Item = String>) -> anyhow::Result<Outcome> {
    let args = parse_args(argv)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(example(args))
}

fn amount_of(i: u64) -> f64 {
    ((i * 7919) % 20_000) as f64 / 100.0 // 0.00 ..= 199.99
}

async fn example(args: Args) -> anyhow::Result<Outcome> {
    reachable(&args.brokers, "Kafka").await?;
    let pool = PgPool::connect(&args.database).await.with_context(|| {
        format!(
            "cannot connect to PostgreSQL at {}: {PROVISION}",
            args.database
        )
    })?;
    start_over(&args, &pool).await?;

    // Produce. The partition and offset of each delivery say where the job must end.
    let started = Instant::now();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?;
    let mut deliveries = Vec::new();
    let (mut expected_rows, mut poison) = (0i64, 0i64);
    for i in 0..args.records {
        let key = format!("c{}", i % 97);
        let value = if i % POISON_EVERY == POISON_EVERY - 1 {
            poison += 1;
            format!(r#"{{"id":{i},"customer":"#).into_bytes() // truncated: poison
        } else {
            let order = Order {
                id: i64::try_from(i)?,
                customer: key.clone(),
                amount: amount_of(i),
            };
            expected_rows += i64::from(order.amount > 100.0);
            serde_json::to_vec(&order)?
        };
        let record = FutureRecord::to(&args.topic).key(&key).payload(&value);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for d in deliveries {
        let delivered = d.await?.map_err(|(e, _)| e).context("producing")?;
        let end = ends.entry(delivered.partition).or_default();
        *end = (*end).max(delivered.offset + 1);
    }
    println!(
        "produced {} JSON orders ({poison} malformed) to `{}` ({PARTITIONS} partitions) in {:.1} s",
        args.records,
        args.topic,
        started.elapsed().as_secs_f64()
    );

    // Run the job until every produced offset is committed, or Ctrl-C.
    let started = Instant::now();
    let done = committed(
        pool.clone(),
        args.job.clone(),
        args.topic.clone(),
        ends.clone(),
    );
    let all = Arc::new(AtomicBool::new(false));
    let flag = all.clone();
    let stop = async move {
        tokio::select! {
            r = done => flag.store(r.is_ok(), Ordering::SeqCst),
            () = weir::shutdown_signal() => {}
        }
    };
    let summary = job(&args, stop).await?;
    let all = all.load(Ordering::SeqCst);
    println!(
        "job `{}` stopped after {:.1} s: {} records, {} rows, {} dead letters, {} commits",
        args.job,
        started.elapsed().as_secs_f64(),
        summary.records,
        summary.rows,
        summary.dead_letters,
        summary.commits
    );

    if !all {
        let stored = stored_offsets(&pool, &args.job, &args.topic).await;
        bail!("stopped before every record was committed (Ctrl-C or the 300 s deadline): offsets {stored:?}, produced up to {ends:?}");
    }
    check(&args, &pool, expected_rows, poison, &ends).await
}

/// Fails naming `scripts/provision` if nothing answers at `addr`.
async fn reachable(addr: &str, what: &str) -> anyhow::Result<()> {
    let first = addr.split(',').next().unwrap_or(addr).trim();
    match tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(first),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => bail!("cannot reach {what} at {first}: {e}: {PROVISION}"),
        Err(_) => bail!("cannot reach {what} at {first}: timed out: {PROVISION}"),
    }
}

/// A fresh topic, a fresh table and no stored offsets for the job.
async fn start_over(args: &Args, pool: &PgPool) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    // the topic may not exist: that answer is fine
    let _ = admin.delete_topics(&[&args.topic], &options).await?;
    let topic = NewTopic::new(&args.topic, PARTITIONS, TopicReplication::Fixed(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let results = admin.create_topics([&topic], &options).await?;
        match results.into_iter().next() {
            Some(Ok(_)) => break,
            Some(Err((_, e))) if Instant::now() < deadline => {
                // a deleted topic can take a moment to go
                eprintln!("retrying: creating topic `{}`: {e}", args.topic);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some(Err((_, e))) => bail!("creating topic `{}`: {e}", args.topic),
            None => bail!("creating topic `{}`: no answer", args.topic),
        }
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"DROP TABLE IF EXISTS "{}""#,
        args.table
    )))
    .execute(pool)
    .await?;
    for table in ["weir_offsets", "weir_dead_letters"] {
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(table)
            .fetch_one(pool)
            .await?;
        if exists.is_some() {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE job = $1"
            )))
            .bind(&args.job)
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

/// Resolves once `weir_offsets` holds `ends` for every partition of `topic`.
async fn committed(
    pool: PgPool,
    job: String,
    topic: String,
    ends: BTreeMap<i32, i64>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    let total: i64 = ends.values().sum();
    let mut report = started + Duration::from_secs(5);
    loop {
        let stored = stored_offsets(&pool, &job, &topic).await;
        if stored == ends {
            return Ok(());
        }
        if Instant::now() > report {
            let done: i64 = stored.values().sum();
            println!(
                "waiting: {done} of {total} offsets committed after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            report += Duration::from_secs(5);
        }
        if Instant::now() > deadline {
            bail!("the job did not commit every record within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stored_offsets(pool: &PgPool, job: &str, topic: &str) -> BTreeMap<i32, i64> {
    let q = r#"SELECT "partition", next_offset FROM weir_offsets WHERE job = $1 AND topic = $2"#;
    sqlx::query_as::<_, (i32, i64)>(q)
        .bind(job)
        .bind(topic)
        .fetch_all(pool)
        .await
        .map(|rows| rows.into_iter().collect())
        .unwrap_or_default() // the table does not exist yet
}

async fn check(
    args: &Args,
    pool: &PgPool,
    expected_rows: i64,
    poison: i64,
    ends: &BTreeMap<i32, i64>,
) -> anyhow::Result<Outcome> {
    let (rows, distinct_ids): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT COUNT(*), COUNT(DISTINCT id) FROM "{}""#,
        args.table
    )))
    .fetch_one(pool)
    .await?;
    let small: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        r#"SELECT COUNT(*) FROM "{}" WHERE amount <= 100.0"#,
        args.table
    )))
    .fetch_one(pool)
    .await?;
    let dead_letters: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM weir_dead_letters WHERE job = $1 AND topic = $2")
            .bind(&args.job)
            .bind(&args.topic)
            .fetch_one(pool)
            .await?;
    let stored = stored_offsets(pool, &args.job, &args.topic).await;
    println!(
        "`{}`: {rows} rows ({distinct_ids} distinct ids; {expected_rows} orders over 100.00 were produced)",
        args.table
    );
    println!("`weir_dead_letters`: {dead_letters} ({poison} malformed records were produced)");
    println!("`weir_offsets` (partition → next offset): {stored:?}; produced up to {ends:?}");
    let outcome = Outcome {
        rows,
        distinct_ids,
        expected_rows,
        dead_letters,
        poison,
    };
    if rows != expected_rows || distinct_ids != rows || small != 0 || dead_letters != poison {
        bail!("exactly-once violated: {outcome:?} ({small} rows at or under 100.00)");
    }
    println!("exactly once: every big order once, every poison record dead-lettered once");
    Ok(outcome)
}
