//! Fixtures for the pipeline tests: the same test body runs on the embedded log and on
//! Kafka (tansu), against SQLite, PostgreSQL or MariaDB.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use weir_core::TopicPartition;
pub use weir_testkit::checker::Db;
use weir_testkit::tansu::TansuBroker;

/// Where a test's records come from.
pub enum Input {
    Log {
        dir: tempfile::TempDir,
        log: weir_log::Log,
    },
    Kafka {
        broker: &'static TansuBroker,
        producer: rdkafka::producer::FutureProducer,
    },
}

impl Input {
    pub fn log() -> Result<Input> {
        let dir = tempfile::tempdir()?;
        let log = weir_log::Log::open(dir.path(), weir_log::LogOptions::default())?;
        Ok(Input::Log { dir, log })
    }

    /// The shared tansu broker; fails (never skips) with the command that installs it.
    pub fn kafka() -> Result<Input> {
        let broker = TansuBroker::shared()
            .map_err(|e| anyhow!("{e} (the tansu broker comes from scripts/provision)"))?;
        let producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "1")
            .set("linger.ms", "2")
            .create()?;
        Ok(Input::Kafka { broker, producer })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Input::Log { .. } => "embedded log",
            Input::Kafka { .. } => "Kafka (tansu)",
        }
    }

    /// The job's source URL.
    pub fn url(&self) -> String {
        match self {
            Input::Log { dir, .. } => format!("log://{}", dir.path().display()),
            Input::Kafka { broker, .. } => format!("kafka://{}", broker.bootstrap()),
        }
    }

    /// A fresh topic.
    pub fn topic(&self, prefix: &str, partitions: i32) -> Result<String> {
        let topic = weir_testkit::unique_name(prefix).replace('-', "_");
        match self {
            Input::Log { log, .. } => log.create_topic(&topic, partitions)?,
            Input::Kafka { broker, .. } => broker.create_topic(&topic, partitions)?,
        }
        Ok(topic)
    }

    /// Append `values` (key, value) to `topic`/`partition`, in order.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        values: &[(Option<String>, Vec<u8>)],
    ) -> Result<()> {
        match self {
            Input::Log { log, .. } => {
                let recs: Vec<weir_log::NewRecord> = values
                    .iter()
                    .map(|(k, v)| match k {
                        Some(k) => weir_log::NewRecord::new(k.clone(), v.clone()),
                        None => weir_log::NewRecord::value(v.clone()),
                    })
                    .collect();
                log.append(&TopicPartition::new(topic, partition), &recs)?;
            }
            Input::Kafka { producer, .. } => {
                use rdkafka::producer::FutureRecord;
                for (i, (k, v)) in values.iter().enumerate() {
                    let mut rec = FutureRecord::<String, Vec<u8>>::to(topic)
                        .partition(partition)
                        .payload(v);
                    if let Some(k) = k {
                        rec = rec.key(k);
                    }
                    producer
                        .send(rec, Duration::from_secs(30))
                        .await
                        .map_err(|(e, _)| {
                            anyhow!("producing record {i} to {topic}/{partition}: {e}")
                        })?;
                }
            }
        }
        Ok(())
    }
}

/// A SQLite database file in `dir`.
pub fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("weir.sqlite").display())
}

pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const MY_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// A PostgreSQL pool whose `search_path` is a fresh schema, and that schema.
pub async fn pg_pool() -> Result<(sqlx::PgPool, String)> {
    let schema = weir_testkit::unique_name("wp").replace('-', "_");
    let admin = sqlx::PgPool::connect(PG_URL).await.map_err(|e| {
        anyhow!("cannot reach PostgreSQL at 127.0.0.1:5432 (user postgres, db test): {e}; run scripts/provision")
    })?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&admin)
        .await?;
    let opts: sqlx::postgres::PgConnectOptions = PG_URL.parse()?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(opts.options([("search_path", schema.as_str())]))
        .await?;
    Ok((pool, schema))
}

/// A fresh MariaDB database; its URL.
pub async fn mariadb_url() -> Result<String> {
    let db = weir_testkit::unique_name("wp").replace('-', "_");
    let admin = sqlx::MySqlPool::connect(MY_URL).await.map_err(|e| {
        anyhow!(
            "cannot reach MariaDB at 127.0.0.1:3306 (root, db test): {e}; run scripts/provision"
        )
    })?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{db}`")))
        .execute(&admin)
        .await?;
    Ok(format!("mysql://root@127.0.0.1:3306/{db}"))
}

/// Per partition of `topic`: the next offset expected once everything is consumed.
pub fn ends(topic: &str, counts: &[i64]) -> BTreeMap<(String, i32), Option<i64>> {
    counts
        .iter()
        .enumerate()
        .map(|(p, n)| ((topic.to_owned(), p as i32), Some(*n)))
        .collect()
}

/// Resolves once `job` has committed exactly `ends` in `offsets_table` (quoted as
/// needed), or after `patience` (the test then fails on what it finds).
pub async fn committed(
    db_url: String,
    job: String,
    offsets_table: String,
    ends: BTreeMap<(String, i32), Option<i64>>,
    patience: Duration,
) {
    let deadline = Instant::now() + patience;
    // (the stop future runs from the start: the job may not have created the
    // database yet)
    let db = loop {
        match Db::connect(&db_url).await {
            Ok(db) => break db,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => return,
        }
    };
    while Instant::now() < deadline {
        if db
            .next_offsets(&job, &offsets_table)
            .await
            .is_ok_and(|got| got == ends)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until `f` holds, or fail after `patience` with `what`.
pub async fn eventually<F, Fut>(what: &str, patience: Duration, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + patience;
    loop {
        if f().await.with_context(|| what.to_owned())? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Installs a subscriber printing warnings (and `RUST_LOG`) for failing tests.
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Rows of `sql` as (i64, i64, text), on any of the three databases.
pub async fn rows3(db: &Db, sql: &str) -> Result<Vec<(i64, i64, String)>> {
    let q = sqlx::AssertSqlSafe(sql.to_owned());
    Ok(match db {
        Db::Postgres(p) => sqlx::query_as(q).fetch_all(p).await?,
        Db::MySql(p) => sqlx::query_as(q).fetch_all(p).await?,
        Db::Sqlite(p) => sqlx::query_as(q).fetch_all(p).await?,
    })
}

/// `SELECT COUNT(*)`-like single integer.
pub async fn scalar(db: &Db, sql: &str) -> Result<i64> {
    let q = sqlx::AssertSqlSafe(sql.to_owned());
    Ok(match db {
        Db::Postgres(p) => sqlx::query_scalar(q).fetch_one(p).await?,
        Db::MySql(p) => sqlx::query_scalar(q).fetch_one(p).await?,
        Db::Sqlite(p) => sqlx::query_scalar(q).fetch_one(p).await?,
    })
}
