//! Helpers shared by the CLI's tests: run the built binary, make logs and databases.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use weir_core::TopicPartition;
use weir_log::{Log, LogOptions, NewRecord};

pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const MARIADB_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// What a run of `weir` returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the built `weir` with these arguments.
pub fn weir<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run weir");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A name unique to this test run (tables and jobs of concurrent tests never meet).
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a closed log at `dir` with `topic` of `partitions` partitions holding
/// `per_partition` records each (one batch per record).
pub fn make_log(dir: &Path, topic: &str, partitions: i32, per_partition: i64) {
    let log = Log::open(dir, LogOptions::default()).unwrap();
    log.create_topic(topic, partitions).unwrap();
    for p in 0..partitions {
        let tp = TopicPartition::new(topic, p);
        for i in 0..per_partition {
            log.append(
                &tp,
                &[NewRecord::new(format!("k{i}"), format!("{{\"n\":{i}}}"))],
            )
            .unwrap();
        }
    }
}

/// A SQLite database file in `dir` (WAL), and its URL.
pub async fn sqlite(dir: &Path) -> (sqlx::SqlitePool, String) {
    let path = dir.join("weir.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    (pool, format!("sqlite:{}", path.display()))
}

pub async fn postgres() -> sqlx::PgPool {
    match sqlx::PgPool::connect(PG_URL).await {
        Ok(p) => p,
        Err(e) => panic!("PostgreSQL at {PG_URL} is unreachable ({e}): run scripts/provision"),
    }
}

pub async fn mariadb() -> sqlx::MySqlPool {
    match sqlx::MySqlPool::connect(MARIADB_URL).await {
        Ok(p) => p,
        Err(e) => panic!("MariaDB at {MARIADB_URL} is unreachable ({e}): run scripts/provision"),
    }
}

/// The broker `scripts/provision` starts.
#[cfg(feature = "kafka")]
pub const BROKER: &str = "127.0.0.1:9092";

/// Creates `name` with `partitions` partitions at [`BROKER`].
#[cfg(feature = "kafka")]
pub async fn create_topic(name: &str, partitions: i32) {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", BROKER)
            .create()
            .unwrap();
    let options = rdkafka::admin::AdminOptions::new()
        .operation_timeout(Some(std::time::Duration::from_secs(10)));
    let topic =
        rdkafka::admin::NewTopic::new(name, partitions, rdkafka::admin::TopicReplication::Fixed(1));
    let results = match tokio::time::timeout(
        std::time::Duration::from_secs(15),
        admin.create_topics([&topic], &options),
    )
    .await
    {
        Ok(r) => r.unwrap(),
        Err(_) => panic!("Kafka at {BROKER} did not answer: run scripts/provision"),
    };
    for r in results {
        if let Err((t, e)) = r {
            panic!("creating topic {t} at {BROKER}: {e} (run scripts/provision)");
        }
    }
}

/// A job's offsets in a fresh SQLite database with both partitions of a 2-partition
/// `topic` claimed by "worker", as a running job would hold them.
pub struct Claimed {
    pub dir: tempfile::TempDir,
    pub pool: sqlx::SqlitePool,
    pub url: String,
    pub job: String,
    pub store: weir_sql::OffsetStore<sqlx::Sqlite>,
    pub parts: [TopicPartition; 2],
    pub claims: std::collections::BTreeMap<TopicPartition, weir_sql::Claim>,
}

pub async fn claimed(topic: &str) -> Claimed {
    let dir = tempfile::tempdir().unwrap();
    let (pool, url) = sqlite(dir.path()).await;
    let job = unique("job");
    let store = weir_sql::OffsetStore::<sqlx::Sqlite>::new(&job).unwrap();
    store.migrate(&pool).await.unwrap();
    let parts = [TopicPartition::new(topic, 0), TopicPartition::new(topic, 1)];
    let claims = store.claim(&pool, &parts, "worker").await.unwrap();
    Claimed {
        dir,
        pool,
        url,
        job,
        store,
        parts,
        claims,
    }
}

/// `(partition, log_end, lag)` of each row of `weir lag|offsets show --output json`.
pub fn lag_rows(stdout: &str) -> Vec<(i64, i64, i64)> {
    let rows: serde_json::Value = serde_json::from_str(stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["partition"].as_i64().unwrap(),
                r["log_end"].as_i64().unwrap(),
                r["lag"].as_i64().unwrap(),
            )
        })
        .collect()
}
