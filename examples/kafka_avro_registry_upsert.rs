//! Kafka → PostgreSQL upserts from schema-registry Avro: orders are updated several
//! times, a weir job keeps the latest version of each in a table keyed by id, exactly
//! once.
//!
//! Needs a Kafka broker on 127.0.0.1:9092, PostgreSQL on 127.0.0.1:5432 (database
//! `test`, user `postgres`) and a Confluent-compatible schema registry on
//! http://127.0.0.1:8081 (`--registry URL` or `$SCHEMA_REGISTRY_URL` for another);
//! `scripts/provision` starts all three (the registry is `weir-registry`, an in-memory
//! development stand-in from weir-testkit). Then:
//!
//! ```text
//! cargo run --example kafka_avro_registry_upsert --features kafka
//! cargo run --example kafka_avro_registry_upsert --features kafka -- --ids 5000 --versions 5
//! ```
//!
//! What happens:
//! 1. The example starts over: it (re)creates the topic `orders` with 4 partitions,
//!    drops the table `orders_latest` and forgets the job's stored offsets.
//! 2. It registers the Avro schema `Order` under the subject `orders-value` and gets
//!    its id, then produces `--versions` versions of each of `--ids` orders in the
//!    Confluent wire format (byte 0, the 4-byte big-endian schema id, the Avro datum),
//!    round by round (version 1 of every order, then version 2, …). Each record is
//!    keyed by its order id, so all versions of an order are in one partition, in
//!    order: Kafka orders records only within a partition.
//! 3. It runs the job in [`job`] (the part a user writes): decode with the registry
//!    (each schema id fetched once), upsert by `id` into `orders_latest`, the offsets
//!    in the same transaction. It stops once every produced offset is committed (or on
//!    Ctrl-C: it commits what is in flight, then the run exits non-zero, unchecked).
//! 4. It prints the table and checks that the last version of every order won: one row
//!    per id, each at version `--versions` with that version's amount.

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
use weir::formats::avro::{parse_schema, Avro, RegistryAvro};
use weir::formats::framing::{write_prefix, SchemaRef};
use weir::formats::registry::{RegistryConfig, Schema, SchemaRegistry};
use weir::formats::SyncSerializer;

const PARTITIONS: i32 = 4;
const PROVISION: &str = "start the services with scripts/provision";

/// The writer schema, registered under `<topic>-value`.
const ORDER_SCHEMA: &str = r#"{
  "type": "record", "name": "Order", "namespace": "weir.example",
  "fields": [
    {"name": "id", "type": "long"},
    {"name": "customer", "type": "string"},
    {"name": "amount", "type": "double"},
    {"name": "version", "type": "int"}
  ]
}"#;

/// An order as producers write it (Avro).
#[derive(Serialize, Deserialize)]
struct Order {
    id: i64,
    customer: String,
    amount: f64,
    version: i32,
}

/// One row of `orders_latest`: the latest version of an order.
#[derive(weir::Row)]
struct LatestOrder {
    id: i64,
    customer: String,
    amount: f64,
    version: i32,
}

/// The job: what a user of weir writes. It runs until `stop` resolves.
async fn job(
    args: &Args,
    registry: Arc<SchemaRegistry>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> weir::pipeline::Result<weir::Summary> {
    weir::Job::new(args.job.as_str()) // the key of its rows in `weir_offsets`
        .source(format!("kafka://{}", args.brokers), [args.topic.as_str()])
        .database(args.database.as_str())
        .config("group.id", &args.group) // default: the job's name
        .config("session.timeout.ms", "6000") // a quick group join on a development broker
        .batch_records(100) // small transactions: an order's versions span several
        .value::<Order, _>(RegistryAvro::new(registry)) // writer schema by id, cached
        .map(|o| LatestOrder {
            id: o.id,
            customer: o.customer,
            amount: o.amount,
            version: o.version,
        })
        .sink(weir::sink::Postgres::upsert(&args.table, ["id"]))
        .run_until(stop)
        .await
}

// ---------------------------------------------------------------------------------
// Around the job: start over, register, produce, wait, check.
// ---------------------------------------------------------------------------------

/// Command-line arguments (the test runs the example with its own names).
struct Args {
    brokers: String,
    database: String,
    registry: String,
    topic: String,
    table: String,
    job: String,
    /// The consumer group: a fresh one per run, since every run starts over (and
    /// tansu can wedge a group whose member left during a join: DEVELOPERS.md).
    group: String,
    ids: u64,
    versions: i32,
}

fn parse_args(argv: impl IntoIterator<Item = String>) -> anyhow::Result<Args> {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let mut args = Args {
        brokers: env("KAFKA_BROKERS", "127.0.0.1:9092"),
        database: env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
        registry: env("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081"),
        topic: "orders".into(),
        table: "orders_latest".into(),
        job: "avro-upsert".into(),
        group: String::new(),
        ids: 1000,
        versions: 3,
    };
    let mut it = argv.into_iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{a} needs {name}"));
        match a.as_str() {
            "--brokers" => args.brokers = value("HOST:PORT")?,
            "--database" => args.database = value("URL")?,
            "--registry" => args.registry = value("URL")?,
            "--topic" => args.topic = value("NAME")?,
            "--table" => args.table = value("NAME")?,
            "--job" => args.job = value("NAME")?,
            "--ids" => args.ids = value("N")?.parse()?,
            "--versions" => args.versions = value("N")?.parse()?,
            "-h" | "--help" => {
                println!(
                    "usage: kafka_avro_registry_upsert [--ids N] [--versions N] [--registry URL]\n\
                     \x20                                 [--brokers HOST:PORT] [--database URL]\n\
                     \x20                                 [--topic NAME] [--table NAME] [--job NAME]\n\
                     (defaults: $SCHEMA_REGISTRY_URL or http://127.0.0.1:8081, $KAFKA_BROKERS or\n\
                     127.0.0.1:9092, $DATABASE_URL or postgres://postgres@127.0.0.1:5432/test)"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    if args.ids == 0 || args.versions < 1 {
        bail!("--ids and --versions must be at least 1");
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
    /// Records produced (ids × versions).
    pub produced: u64,
    /// Rows in the table.
    pub rows: i64,
    /// Rows holding the last version with its amount.
    pub latest: i64,
    /// Dead letters of this job.
    pub dead_letters: i64,
    /// The schema id the registry gave.
    pub schema_id: u32,
}

/// Runs the example with these command-line arguments (also used by
/// `tests/examples_kafka.rs`); fails unless the last version of every order won.
pub fn run(argv: impl IntoIterator<Item = String>) -> anyhow::Result<Outcome> {
    let args = parse_args(argv)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(example(args))
}

fn amount_of(id: u64, version: i32) -> f64 {
    (id % 1000) as f64 + f64::from(version) / 100.0
}

async fn example(args: Args) -> anyhow::Result<Outcome> {
    reachable(&args.brokers, "Kafka").await?;
    let registry_addr = args
        .registry
        .trim_start_matches("http://")
        .trim_end_matches('/');
    reachable(registry_addr, "the schema registry").await?;
    let pool = PgPool::connect(&args.database).await.with_context(|| {
        format!(
            "cannot connect to PostgreSQL at {}: {PROVISION}",
            args.database
        )
    })?;
    start_over(&args, &pool).await?;

    // Register the schema (TopicNameStrategy: subject `<topic>-value`).
    let registry = Arc::new(SchemaRegistry::new(RegistryConfig::new(&args.registry)?)?);
    let subject = format!("{}-value", args.topic);
    let schema_id = registry
        .register(&subject, &Schema::avro(ORDER_SCHEMA))
        .await
        .with_context(|| format!("registering the schema at {}: {PROVISION}", args.registry))?;
    let avro = Avro::new(&parse_schema(ORDER_SCHEMA)?)?; // writes Avro datums
    println!(
        "registered `Order` under `{subject}` at {}: schema id {schema_id}",
        args.registry
    );

    // Produce every version of every order, in the Confluent wire format.
    let started = Instant::now();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("acks", "all")
        .set("linger.ms", "5")
        // one request in flight: a retry cannot reorder the versions of an order
        .set("max.in.flight.requests.per.connection", "1")
        .create()?;
    let mut deliveries = Vec::new();
    for version in 1..=args.versions {
        for id in 0..args.ids {
            let order = Order {
                id: i64::try_from(id)?,
                customer: format!("c{}", id % 97),
                amount: amount_of(id, version),
                version,
            };
            let mut value = Vec::new();
            write_prefix(&SchemaRef::Id(schema_id), &mut value); // 0x00 + id
            value.extend(avro.encode(&order)?); // + the Avro datum
            let key = id.to_string();
            let record = FutureRecord::to(&args.topic).key(&key).payload(&value);
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
        }
    }
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for d in deliveries {
        let delivered = d.await?.map_err(|(e, _)| e).context("producing")?;
        let end = ends.entry(delivered.partition).or_default();
        *end = (*end).max(delivered.offset + 1);
    }
    let produced = args.ids * u64::try_from(args.versions)?;
    println!(
        "produced {produced} Avro records ({} orders × {} versions) to `{}` ({PARTITIONS} partitions) in {:.1} s",
        args.ids,
        args.versions,
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
    let summary = job(&args, registry.clone(), stop).await?;
    println!(
        "job `{}` stopped after {:.1} s: {} records, {} rows upserted, {} dead letters, {} commits, {} registry requests",
        args.job,
        started.elapsed().as_secs_f64(),
        summary.records,
        summary.rows,
        summary.dead_letters,
        summary.commits,
        registry.http_requests()
    );
    if !all.load(Ordering::SeqCst) {
        let stored = stored_offsets(&pool, &args.job, &args.topic).await;
        bail!("stopped before every record was committed (Ctrl-C or the 300 s deadline): offsets {stored:?}, produced up to {ends:?}");
    }
    check(&args, &pool, produced, schema_id, &ends).await
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
    produced: u64,
    schema_id: u32,
    ends: &BTreeMap<i32, i64>,
) -> anyhow::Result<Outcome> {
    let rows: Vec<(i64, f64, i32)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT id, amount, version FROM "{}" ORDER BY id"#,
        args.table
    )))
    .fetch_all(pool)
    .await?;
    let latest = rows
        .iter()
        .filter(|(id, amount, version)| {
            let want = u64::try_from(*id).map(|id| amount_of(id, args.versions));
            *version == args.versions && want.is_ok_and(|w| (w - amount).abs() < 1e-9)
        })
        .count();
    let dead_letters: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM weir_dead_letters WHERE job = $1 AND topic = $2")
            .bind(&args.job)
            .bind(&args.topic)
            .fetch_one(pool)
            .await?;
    let stored = stored_offsets(pool, &args.job, &args.topic).await;
    println!("`{}` (first rows):", args.table);
    for (id, amount, version) in rows.iter().take(3) {
        println!("  id {id:>4}  version {version}  amount {amount:.2}");
    }
    println!(
        "`{}`: {} rows for {} ids, {latest} at their last version ({}); {dead_letters} dead letters",
        args.table,
        rows.len(),
        args.ids,
        args.versions
    );
    println!("`weir_offsets` (partition → next offset): {stored:?}; produced up to {ends:?}");
    let outcome = Outcome {
        produced,
        rows: i64::try_from(rows.len())?,
        latest: i64::try_from(latest)?,
        dead_letters,
        schema_id,
    };
    let ids = i64::try_from(args.ids)?;
    if outcome.rows != ids || outcome.latest != ids || dead_letters != 0 {
        bail!("the last version did not win everywhere: {outcome:?}");
    }
    println!(
        "last version wins: one row per order, each at version {}",
        args.versions
    );
    Ok(outcome)
}
