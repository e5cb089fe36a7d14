//! kill -9 crash loops: the `weir-crash-job` process over the embedded log is killed by
//! its failpoints and by random SIGKILLs, restarted at once, and the independent checker
//! verifies every record landed exactly once. `WEIR_CRASH_KILLS=N` overrides the number
//! of kills (the soak: `WEIR_CRASH_KILLS=200 cargo test -p weir-testkit --test crash_loop
//! -- --nocapture crash_loop`); `WEIR_STORM_ACTIONS=N` sets the storm's kills and
//! terminations.

use std::time::Duration;

use anyhow::{anyhow, Result};
use weir_testkit::crash::{run, CrashConfig, Source};

/// Every failpoint armed; the once-per-start ones and the COMMIT race more often.
const FAILPOINTS: &str =
    "between_claim_and_assign:0.15,after_commit_sent:0.04,during_dlq_write:0.1,*:0.015";

fn kills(default: usize) -> usize {
    std::env::var("WEIR_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(
    name: &str,
    dir: &tempfile::TempDir,
    db_url: String,
    schema: Option<String>,
    kills: usize,
) -> CrashConfig {
    CrashConfig {
        job_bin: env!("CARGO_BIN_EXE_weir-crash-job").into(),
        source: Source::Log(dir.path().join("log")),
        db_url,
        schema,
        job: format!("crash-{name}"),
        kills,
        partitions: 3,
        chunk: 1500,
        failpoints: FAILPOINTS.to_owned(),
        max_kill_delay: Duration::from_millis(900),
        batch: 40,
        stderr: dir.path().join("job.stderr"),
        args: Vec::new(),
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{nanos:x}", std::process::id())
}

async fn check_run(name: &str, cfg: CrashConfig, min_kills: usize) -> Result<()> {
    let outcome = run(&cfg).await?;
    println!("crash loop {name}: {}", outcome.summary());
    assert!(
        outcome.report.is_valid(),
        "{name}: {}",
        outcome.report.to_json()
    );
    assert!(outcome.kills >= min_kills);
    for name in weir_sql::failpoint::NAMES {
        assert!(
            outcome.by_failpoint.get(*name).is_some_and(|n| *n > 0),
            "{name}: failpoint {name} never killed the job: {:?}",
            outcome.by_failpoint
        );
    }
    assert!(outcome.report.counters.consumed > 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_embedded_log_crash_loop() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("crash.sqlite").display());
    let n = kills(50);
    check_run(
        "embedded log + SQLite",
        config("sqlite", &dir, url, None, n),
        n,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_embedded_log_crash_loop() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = "postgres://postgres@127.0.0.1:5432/test".to_owned();
    let schema = unique("crash_pg");
    let admin = sqlx::PgPool::connect(&url).await.map_err(|e| {
        anyhow!("cannot reach PostgreSQL at 127.0.0.1:5432: {e}; run scripts/provision")
    })?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&admin)
        .await?;
    let n = kills(20);
    check_run(
        "embedded log + PostgreSQL",
        config("pg", &dir, url, Some(schema), n),
        n,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_embedded_log_crash_loop() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = unique("crash_my");
    let admin = sqlx::MySqlPool::connect("mysql://root@127.0.0.1:3306/test")
        .await
        .map_err(|e| {
            anyhow!("cannot reach MariaDB at 127.0.0.1:3306: {e}; run scripts/provision")
        })?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{db}`")))
        .execute(&admin)
        .await?;
    let url = format!("mysql://root@127.0.0.1:3306/{db}");
    let n = kills(10);
    check_run(
        "embedded log + MariaDB",
        config("mariadb", &dir, url, None, n),
        n,
    )
    .await
}

/// The same job written with the pipeline DSL (`weir-crash-job --dsl`: pipelined
/// runtime, subscribe, dead letters by policy and by bisection).
fn dsl(mut cfg: CrashConfig) -> CrashConfig {
    cfg.args.push("--dsl".to_owned());
    cfg.job.push_str("-dsl");
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsl_sqlite_embedded_log_crash_loop() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("crash.sqlite").display());
    let n = kills(50);
    check_run(
        "DSL, embedded log + SQLite",
        dsl(config("sqlite", &dir, url, None, n)),
        n,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsl_postgres_embedded_log_crash_loop() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = "postgres://postgres@127.0.0.1:5432/test".to_owned();
    let schema = unique("crash_dsl_pg");
    let admin = sqlx::PgPool::connect(&url).await.map_err(|e| {
        anyhow!("cannot reach PostgreSQL at 127.0.0.1:5432: {e}; run scripts/provision")
    })?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&admin)
        .await?;
    let n = kills(20);
    check_run(
        "DSL, embedded log + PostgreSQL",
        dsl(config("pg", &dir, url, Some(schema), n)),
        n,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsl_mariadb_embedded_log_crash_loop() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = unique("crash_dsl_my");
    let admin = sqlx::MySqlPool::connect("mysql://root@127.0.0.1:3306/test")
        .await
        .map_err(|e| {
            anyhow!("cannot reach MariaDB at 127.0.0.1:3306: {e}; run scripts/provision")
        })?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{db}`")))
        .execute(&admin)
        .await?;
    let url = format!("mysql://root@127.0.0.1:3306/{db}");
    let n = kills(10);
    check_run(
        "DSL, embedded log + MariaDB",
        dsl(config("mariadb", &dir, url, None, n)),
        n,
    )
    .await
}

/// The aggregating DSL job (`--dsl --agg`): every record counts into one of 17
/// buckets shared by all partitions; after the crash loop every bucket's count, sum,
/// min and max equals the recomputation from the whole log.
fn agg(mut cfg: CrashConfig) -> CrashConfig {
    cfg = dsl(cfg);
    cfg.args.push("--agg".to_owned());
    cfg.job.push_str("-agg");
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agg_sqlite_embedded_log_crash_loop() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("crash.sqlite").display());
    let n = kills(20);
    check_run(
        "aggregates, embedded log + SQLite",
        agg(config("sqlite", &dir, url, None, n)),
        n,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agg_postgres_embedded_log_crash_loop() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = "postgres://postgres@127.0.0.1:5432/test".to_owned();
    let schema = unique("crash_agg_pg");
    let admin = sqlx::PgPool::connect(&url).await.map_err(|e| {
        anyhow!("cannot reach PostgreSQL at 127.0.0.1:5432: {e}; run scripts/provision")
    })?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&admin)
        .await?;
    let n = kills(10);
    check_run(
        "aggregates, embedded log + PostgreSQL",
        agg(config("pg", &dir, url, Some(schema), n)),
        n,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agg_mariadb_embedded_log_crash_loop() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = unique("crash_agg_my");
    let admin = sqlx::MySqlPool::connect("mysql://root@127.0.0.1:3306/test")
        .await
        .map_err(|e| {
            anyhow!("cannot reach MariaDB at 127.0.0.1:3306: {e}; run scripts/provision")
        })?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{db}`")))
        .execute(&admin)
        .await?;
    let url = format!("mysql://root@127.0.0.1:3306/{db}");
    let n = kills(10);
    check_run(
        "aggregates, embedded log + MariaDB",
        agg(config("mariadb", &dir, url, None, n)),
        n,
    )
    .await
}

/// Kafka through the DSL subscribes in a group: a restarted member waits for the
/// killed one's session (3 s here) to time out before it gets the partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsl_postgres_kafka_crash_loop() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let n = kills(10);
    let mut cfg = dsl(kafka_pg_config("kafka-pg-dsl", &dir, 3, 600, "WEIR_CRASH_STDERR").await?);
    cfg.args
        .extend(["--session-timeout-ms".to_owned(), "3000".to_owned()]);
    cfg.kills = n;
    cfg.max_kill_delay = Duration::from_millis(4000);
    check_run("DSL, Kafka (tansu) + PostgreSQL", cfg, n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kafka_crash_loop() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let n = kills(20);
    let mut cfg = kafka_pg_config("kafka-pg", &dir, 3, 600, "WEIR_CRASH_STDERR").await?;
    cfg.kills = n;
    cfg.max_kill_delay = Duration::from_millis(2500);
    check_run("Kafka (tansu) + PostgreSQL", cfg, n).await
}

/// Three job processes in one consumer group on Kafka + PostgreSQL, killed with
/// SIGKILL at random and restarted before or after the session timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kafka_multi_instance_kill_storm() -> Result<()> {
    kafka_storm("kill-storm", 0.0).await
}

/// The same with SIGTERMs among the kills (clean shutdowns: commit, leave the group).
///
/// Works around a tansu 0.6 broker fault (DEVELOPERS.md, "Known broker faults
/// (tansu)"): when the group's leader sends LeaveGroup while a JoinGroup round is in
/// progress, tansu removes the member but keeps it as the leader, so every member is a
/// follower, SyncGroup answers REBALANCE_IN_PROGRESS and nobody gets partitions until
/// tansu happens to reload the group from storage (seen: 43 s, 99 s, > 60 s). A leave
/// into a settled group is handled correctly, so the storm (`crash::storm`) sends a
/// SIGTERM only once the group has settled: no member started or killed for 1.5 × the
/// session timeout, every partition's offsets row owned by a live member and every
/// live member owning one. SIGKILLs still land at random moments, mid-rebalance
/// included. Run it alone with
/// `cargo test -p weir-testkit --test crash_loop -- --nocapture storm_with_sigterm`
/// (`WEIR_STORM_STDERR=/tmp/storm.err WEIR_LOG=debug` keeps the members' logs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kafka_multi_instance_storm_with_sigterm() -> Result<()> {
    kafka_storm("term-storm", 0.35).await
}

/// Three aggregating DSL processes (`--dsl --agg`) in one group on Kafka +
/// PostgreSQL, SIGKILLed and SIGTERMed at random: the 17 buckets are shared by all 6
/// partitions, so every member updates the same hot rows at once; the totals must come
/// out exact and no deadlock may be left unresolved (a run that hung would not catch
/// up and fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kafka_multi_instance_aggregate_storm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut base = kafka_pg_config("agg-storm", &dir, 6, 600, "WEIR_STORM_STDERR").await?;
    base.args = vec!["--dsl".to_owned(), "--agg".to_owned()];
    base.job.push_str("-agg");
    let cfg = weir_testkit::crash::StormConfig {
        base,
        members: 3,
        actions: std::env::var("WEIR_STORM_ACTIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8),
        session_timeout: Duration::from_millis(6000),
        term_share: 0.3,
    };
    let outcome = weir_testkit::crash::storm(&cfg).await?;
    println!("aggregate storm Kafka + PostgreSQL: {}", outcome.summary());
    assert!(outcome.report.is_valid(), "{}", outcome.report.to_json());
    assert!(outcome.report.counters.consumed > 0);
    assert_eq!(
        outcome.clean_exits, outcome.terms,
        "every SIGTERM ended in a clean exit"
    );
    Ok(())
}

/// A Kafka (tansu) + PostgreSQL crash config: a fresh topic of `partitions`
/// partitions, a fresh schema, stderr in `dir` (or in the file `stderr_env` names).
async fn kafka_pg_config(
    name: &str,
    dir: &tempfile::TempDir,
    partitions: i32,
    chunk: u64,
    stderr_env: &str,
) -> Result<CrashConfig> {
    let broker = weir_testkit::tansu::TansuBroker::shared()
        .map_err(|e| anyhow!("{e} (the tansu broker comes from scripts/provision)"))?;
    let topic = unique(&format!("{name}_in").replace('-', "_"));
    broker.create_topic(&topic, partitions)?;
    let url = "postgres://postgres@127.0.0.1:5432/test".to_owned();
    let schema = unique(&format!("{name}_pg").replace('-', "_"));
    let admin = sqlx::PgPool::connect(&url).await.map_err(|e| {
        anyhow!("cannot reach PostgreSQL at 127.0.0.1:5432: {e}; run scripts/provision")
    })?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&admin)
        .await?;
    let mut base = config(name, dir, url, Some(schema), 0);
    base.source = Source::Kafka {
        bootstrap: broker.bootstrap(),
        topic,
    };
    base.partitions = partitions;
    base.chunk = chunk;
    if let Ok(path) = std::env::var(stderr_env) {
        base.stderr = path.into();
    }
    Ok(base)
}

async fn kafka_storm(name: &str, term_share: f64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let base = kafka_pg_config(name, &dir, 6, 600, "WEIR_STORM_STDERR").await?;
    let cfg = weir_testkit::crash::StormConfig {
        base,
        members: 3,
        actions: std::env::var("WEIR_STORM_ACTIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(12),
        session_timeout: Duration::from_millis(6000),
        term_share,
    };
    let outcome = weir_testkit::crash::storm(&cfg).await?;
    println!(
        "multi-instance storm Kafka + PostgreSQL: {}",
        outcome.summary()
    );
    assert!(outcome.report.is_valid(), "{}", outcome.report.to_json());
    assert_eq!(
        outcome.clean_exits, outcome.terms,
        "every SIGTERM ended in a clean exit"
    );
    Ok(())
}

/// The paused zombie on Kafka + PostgreSQL: a member frozen by `SIGSTOP` inside its
/// batch transaction (sink rows written, offsets not yet compared-and-set) past the
/// session timeout; the new owner claims and commits; `SIGCONT`: the zombie's
/// compare-and-set affects no row, it drops that batch and the partition, nothing hangs,
/// and every record lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kafka_paused_zombie_is_fenced() -> Result<()> {
    paused_zombie("zombie", "after_sink_write", Vec::new()).await
}

/// The same, frozen after its compare-and-set: it holds the offsets rows' locks, so
/// the new owner's claim would wait for it for ever; PostgreSQL ends the zombie's idle
/// transaction after the runner's idle-transaction timeout (2 s here), the new owner
/// claims and commits, and the resumed zombie finds its connection gone, resolves the
/// unknown outcome from the offsets rows and is fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kafka_paused_zombie_holding_row_locks_is_fenced() -> Result<()> {
    paused_zombie(
        "zombie-locks",
        "after_offset_update",
        vec!["--idle-tx-timeout-ms".to_owned(), "2000".to_owned()],
    )
    .await
}

async fn paused_zombie(name: &str, stop_at: &str, extra: Vec<String>) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let base = kafka_pg_config(name, &dir, 2, 400, "WEIR_ZOMBIE_STDERR").await?;
    let cfg = weir_testkit::crash::ZombieConfig {
        base,
        stop_at: stop_at.to_owned(),
        session_timeout: Duration::from_millis(6000),
        extra,
    };
    let outcome = weir_testkit::crash::paused_zombie(&cfg).await?;
    println!(
        "paused zombie ({stop_at}) Kafka + PostgreSQL: {}",
        outcome.summary()
    );
    assert!(outcome.report.is_valid(), "{}", outcome.report.to_json());
    assert!(outcome.fenced_reports > 0);
    assert!(
        outcome.zombie_alive,
        "the zombie crashed instead of stopping the partition"
    );
    Ok(())
}
