//! N job instances starting at once on fresh tables: `OffsetStore::migrate`,
//! `DeadLetters::migrate` and `TableSink::create_table` must all succeed on every
//! dialect, with no advisory lock of the user's own around them.
//!
//! Each instance has its own pool of one connection; the instances pass a
//! `tokio::sync::Barrier` before each of the three calls, so that they send the same
//! `CREATE` at the same moment. Several rounds, each on fresh table names: on
//! PostgreSQL and MariaDB every other round puts its tables in a schema (database)
//! that does not exist yet, so that its `CREATE SCHEMA` / `CREATE DATABASE` races too.
//! A call that failed is reported with its error (the test goes on to the end of the
//! round, so that no instance is left waiting at a barrier) and fails the test.
//!
//! Also: half the instances naming the tables with their schema (database) and half
//! without, the same tables under names that do not look alike (PostgreSQL: not
//! under the same advisory lock); SQLite with sqlx's default busy timeout and with
//! none at all (`SQLITE_BUSY` at once).
//!
//! Before the fix (plain `IF NOT EXISTS` statements) the PostgreSQL tests failed on
//! every run (72 to 90 % of the calls: 23505 on `pg_type_typname_nsp_index` and
//! `pg_namespace_nspname_index`, 42710, 42P07) and so did SQLite without a busy
//! timeout (half to seven tenths: `SQLITE_BUSY`); MariaDB and SQLite with a busy
//! timeout passed.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::TestDb;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use tokio::sync::Barrier;
use weir_core::TopicPartition;
use weir_sql::{impl_row, DeadLetters, DialectKind, OffsetStore, TableName, TableSink, WriteMode};

/// Instances starting together.
const INSTANCES: usize = 16;
/// Rounds, each on fresh names.
const ROUNDS: usize = 6;

struct Event {
    id: i64,
    body: String,
}
impl_row!(Event { id, body });

/// The three tables of one round.
#[derive(Clone)]
struct Names {
    offsets: TableName,
    dead_letters: TableName,
    sink: TableName,
}

impl Names {
    fn new(round: usize, schema: Option<&str>) -> Result<Self> {
        let t = |what: &str| -> Result<TableName> {
            let name = TableName::new(&common::unique(&format!("mc{round}_{what}")))?;
            Ok(match schema {
                Some(s) => name.with_schema(s)?,
                None => name,
            })
        };
        Ok(Self {
            offsets: t("off")?,
            dead_letters: t("dlq")?,
            sink: t("ev")?,
        })
    }

    /// The same tables named with their schema.
    fn qualified(&self, schema: &str) -> Result<Self> {
        let q = |t: &TableName| TableName::new(t.name().as_str())?.with_schema(schema);
        Ok(Self {
            offsets: q(&self.offsets)?,
            dead_letters: q(&self.dead_letters)?,
            sink: q(&self.sink)?,
        })
    }

    fn all(&self) -> [&TableName; 3] {
        [&self.offsets, &self.dead_letters, &self.sink]
    }
}

/// An error with the database's code (SQLSTATE, MySQL error number or SQLite
/// extended code), when it has one.
fn described(e: &weir_sql::Error) -> String {
    match e {
        weir_sql::Error::Database {
            source: sqlx::Error::Database(db),
            ..
        } => format!("[{}] {e}", db.code().unwrap_or_default()),
        _ => e.to_string(),
    }
}

/// One instance's start-up: the three calls, each after the barrier. Returns the
/// failures as `step: error` (every barrier is passed whatever failed).
async fn instance<DB: TestDb>(
    pool: sqlx::Pool<DB>,
    names: Names,
    barrier: Arc<Barrier>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let store = OffsetStore::<DB>::new("mc-job").and_then(|s| s.with_table(names.offsets));
    let dlq = DeadLetters::<DB>::new("mc-job").and_then(|d| d.with_table(names.dead_letters));
    let sink = TableSink::<DB, Event>::new(names.sink).and_then(|s| {
        s.with_mode(WriteMode::Upsert {
            key: vec!["id".into()],
        })
    });

    barrier.wait().await;
    if let Err(e) = match &store {
        Ok(store) => store.migrate(&pool).await,
        Err(e) => Err(weir_sql::Error::identifier("offsets", e.to_string())),
    } {
        failures.push(format!("OffsetStore::migrate: {}", described(&e)));
    }
    barrier.wait().await;
    if let Err(e) = match &dlq {
        Ok(dlq) => dlq.migrate(&pool).await,
        Err(e) => Err(weir_sql::Error::identifier("dead letters", e.to_string())),
    } {
        failures.push(format!("DeadLetters::migrate: {}", described(&e)));
    }
    barrier.wait().await;
    if let Err(e) = match &sink {
        Ok(sink) => sink.create_table(&pool).await,
        Err(e) => Err(weir_sql::Error::identifier("sink", e.to_string())),
    } {
        failures.push(format!("TableSink::create_table: {}", described(&e)));
    }
    failures
}

/// Where a round's tables are.
enum Schemas {
    /// In the connections' default schema.
    Default,
    /// Every other round in a schema that does not exist yet.
    NewEveryOtherRound,
    /// In the connections' default schema, this one, which every other instance
    /// names (the same table, under a name that does not look the same).
    Mixed(String),
}

/// The rounds on these pools (one per instance); `admin` drops and checks.
async fn storm<DB: TestDb>(
    pools: &[sqlx::Pool<DB>],
    admin: &sqlx::Pool<DB>,
    schemas: Schemas,
    what: &str,
) -> Result<()> {
    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut failed_calls = 0;
    for round in 0..ROUNDS {
        let schema = (matches!(schemas, Schemas::NewEveryOtherRound) && round % 2 == 1)
            .then(|| common::unique(&format!("mc{round}_s")));
        let names = Names::new(round, schema.as_deref())?;
        // Fresh tables: unique names, and dropped should they exist.
        for t in names.all() {
            DB::exec(
                admin,
                format!("DROP TABLE IF EXISTS {}", t.quoted(DB::KIND)),
            )
            .await?;
        }
        let barrier = Arc::new(Barrier::new(pools.len()));
        let mut tasks = Vec::new();
        for (i, pool) in pools.iter().enumerate() {
            let names = match &schemas {
                Schemas::Mixed(s) if i % 2 == 1 => names.qualified(s)?,
                _ => names.clone(),
            };
            tasks.push(tokio::spawn(instance(pool.clone(), names, barrier.clone())));
        }
        for task in tasks {
            let got = task.await?;
            failed_calls += got.len();
            failures.extend(got.into_iter().map(|f| format!("round {round}: {f}")));
        }
        // Every table is there and usable.
        let store = OffsetStore::<DB>::new("mc-job")?.with_table(names.offsets.clone())?;
        let tp = TopicPartition::new("t", 0);
        if failures.is_empty() {
            let claim = store
                .claim(admin, std::slice::from_ref(&tp), "checker")
                .await?;
            assert_eq!(claim[&tp].epoch, 1, "round {round}: a fresh offsets table");
            for t in [&names.dead_letters, &names.sink] {
                let n = DB::scalar(
                    admin,
                    format!("SELECT COUNT(*) FROM {}", t.quoted(DB::KIND)),
                )
                .await?;
                assert_eq!(n, 0, "round {round}: {t} is empty");
            }
        }
        for t in names.all() {
            DB::exec(
                admin,
                format!("DROP TABLE IF EXISTS {}", t.quoted(DB::KIND)),
            )
            .await?;
        }
        if let Some(s) = &schema {
            let drop = match DB::KIND {
                DialectKind::Postgres => format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"),
                _ => format!("DROP DATABASE IF EXISTS `{s}`"),
            };
            DB::exec(admin, drop).await?;
        }
    }
    eprintln!(
        "{what}: {ROUNDS} rounds of {} instances x 3 calls in {:?}, {failed_calls} failed",
        pools.len(),
        started.elapsed()
    );
    if !failures.is_empty() {
        let total = ROUNDS * pools.len() * 3;
        // The same error, by call, counted once with its number.
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &failures {
            let call = f.split_once(": ").map_or(f.as_str(), |(_, call)| call);
            *kinds.entry(call).or_default() += 1;
        }
        let summary: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} x {k}")).collect();
        bail!(
            "{failed_calls} of {total} concurrent migrate/create_table calls failed \
             ({what}, {ROUNDS} rounds of {} instances):\n{}",
            pools.len(),
            summary.join("\n")
        );
    }
    Ok(())
}

/// PostgreSQL: the instances' pools, whose `search_path` is a fresh schema (also
/// the admin pool's).
async fn postgres_pools() -> Result<(sqlx::PgPool, String, Vec<sqlx::PgPool>)> {
    let (admin, schema) = common::pg("migrate_concurrent").await?;
    let mut pools = Vec::new();
    for _ in 0..INSTANCES {
        let opts =
            PgConnectOptions::from_str(common::PG_URL)?.options([("search_path", schema.as_str())]);
        pools.push(
            PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(20))
                .connect_with(opts)
                .await?,
        );
    }
    Ok((admin, schema, pools))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_instances_migrate_at_once() -> Result<()> {
    let (admin, _, pools) = postgres_pools().await?;
    storm(&pools, &admin, Schemas::NewEveryOtherRound, "PostgreSQL").await
}

/// Half the instances name the tables with their schema, half without: the same
/// tables under two names, so not under the same advisory lock. The "already
/// being created" errors are then retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_instances_naming_the_schema_or_not_migrate_at_once() -> Result<()> {
    let (admin, schema, pools) = postgres_pools().await?;
    let what = "PostgreSQL, with and without the schema";
    storm(&pools, &admin, Schemas::Mixed(schema), what).await
}

/// MariaDB: the instances' pools on a fresh database (also the admin pool's).
async fn mariadb_pools() -> Result<(sqlx::MySqlPool, String, Vec<sqlx::MySqlPool>)> {
    let (admin, db) = common::mysql("migrate_concurrent").await?;
    let mut pools = Vec::new();
    for _ in 0..INSTANCES {
        let opts = MySqlConnectOptions::from_str(common::MY_URL)?.database(&db);
        pools.push(
            MySqlPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(20))
                .connect_with(opts)
                .await?,
        );
    }
    Ok((admin, db, pools))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_instances_migrate_at_once() -> Result<()> {
    let (admin, db, pools) = mariadb_pools().await?;
    let r = storm(&pools, &admin, Schemas::NewEveryOtherRound, "MariaDB").await;
    sqlx::MySql::exec(&admin, format!("DROP DATABASE IF EXISTS `{db}`")).await?;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_instances_naming_the_database_or_not_migrate_at_once() -> Result<()> {
    let (admin, db, pools) = mariadb_pools().await?;
    let what = "MariaDB, with and without the database";
    let r = storm(&pools, &admin, Schemas::Mixed(db.clone()), what).await;
    sqlx::MySql::exec(&admin, format!("DROP DATABASE IF EXISTS `{db}`")).await?;
    r
}

/// SQLite: the instances' pools on one WAL file, each connection with this busy
/// timeout (`None`: sqlx's default, 5 s).
async fn sqlite_storm(busy_timeout: Option<Duration>) -> Result<()> {
    // The file is created (in WAL mode) by the admin pool; each instance then opens
    // its own pool on it, as a job would.
    let (admin, dir) = common::sqlite("migrate_concurrent").await?;
    let mut pools = Vec::new();
    for _ in 0..INSTANCES {
        let mut opts = SqliteConnectOptions::new()
            .filename(dir.path().join("db.sqlite"))
            .journal_mode(SqliteJournalMode::Wal);
        if let Some(t) = busy_timeout {
            opts = opts.busy_timeout(t);
        }
        pools.push(
            SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts)
                .await?,
        );
    }
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pools[0])
        .await?;
    if journal != "wal" {
        bail!("the test database is in {journal} mode, not wal");
    }
    let what = format!("SQLite, busy_timeout {busy_timeout:?}");
    storm(&pools, &admin, Schemas::Default, &what).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_instances_migrate_at_once() -> Result<()> {
    sqlite_storm(None).await
}

/// With no busy timeout every writer that finds the database locked gets
/// `SQLITE_BUSY` at once: the migration retries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_instances_migrate_at_once_without_busy_timeout() -> Result<()> {
    sqlite_storm(Some(Duration::ZERO)).await
}
