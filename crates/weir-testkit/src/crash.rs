//! The kill -9 crash loop: a job process (`weir-crash-job`) is killed again and again
//! — by its own failpoints (`WEIR_FAILPOINT`) and by `SIGKILL` from here at random
//! moments — and restarted at once; input keeps arriving between runs. At the end the
//! independent [`checker`](crate::checker) compares the input log with the database.
//!
//! The input is deterministic: record `i` goes to partition `i % partitions` with key
//! `k{i}` and a value from [`value_for`]; [`reference`] says what each must become
//! (written here again, independently of the job's own decoding).
//!
//! CI runs 50 kills on the embedded log + SQLite, 20 on the embedded log + PostgreSQL,
//! 10 on the embedded log + MariaDB and 20 on Kafka (tansu) + PostgreSQL. The soak
//! (≥ 200 kills per combination) is one command:
//!
//! ```text
//! WEIR_CRASH_KILLS=200 cargo test -p weir-testkit --test crash_loop -- --nocapture crash_loop
//! ```
//!
//! Each run prints `N kills (… random, … failpoint: per name), M records: 0 dup / 0 lost`.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use weir_core::{ConsumerConfig, TopicPartition};

use crate::checker::{check, read_input, Db, Expected, InputRecord, Inputs, Report, TableSpec};

/// The topic the crash job reads.
pub const TOPIC: &str = "in";

/// The value of input record `i`: `"<n>:p<i>"` (n output rows; n = 2 for every tenth
/// record), `POISON` for some (dead letter at decode), and a payload over 40
/// characters for some (refused by the database, dead letter at the sink).
pub fn value_for(i: u64) -> String {
    if i % 53 == 7 {
        "POISON".to_owned()
    } else if i % 61 == 3 {
        format!("1:{}", "y".repeat(45))
    } else if i % 10 == 0 {
        format!("2:p{i}")
    } else {
        format!("1:p{i}")
    }
}

/// What the crash job must make of a record (the checker's reference).
pub fn reference(r: &InputRecord) -> Expected {
    let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
    let Some((n, payload)) = v.split_once(':') else {
        return Expected::Dead;
    };
    let Ok(n) = n.parse::<usize>() else {
        return Expected::Dead;
    };
    if payload.chars().count() > 40 {
        return Expected::Dead;
    }
    Expected::Rows(vec![payload.to_owned(); n.max(1)])
}

/// Buckets of the aggregating crash job (`--dsl --agg`): record `i` counts into
/// bucket `i % AGG_BUCKETS`, whatever its partition (`i % partitions`).
pub const AGG_BUCKETS: i64 = 17;

/// The index `i` of an input record, from its key `k{i}`.
pub fn record_index(r: &weir_core::Record) -> std::result::Result<i64, String> {
    let key = r.key.as_deref().unwrap_or_default();
    std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.strip_prefix('k'))
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| format!("key {key:?} is not k<index>"))
}

/// Where the crash job reads from.
#[derive(Clone, Debug)]
pub enum Source {
    /// The embedded log in this directory (topic [`TOPIC`]); the job subscribes.
    Log(PathBuf),
    /// A Kafka cluster; the job assigns itself every partition of `topic`.
    Kafka {
        /// `host:port`.
        bootstrap: String,
        /// The input topic (created beforehand with `partitions` partitions).
        topic: String,
    },
}

impl Source {
    fn topic(&self) -> &str {
        match self {
            Source::Log(_) => TOPIC,
            Source::Kafka { topic, .. } => topic,
        }
    }
}

/// One crash-loop run.
#[derive(Clone, Debug)]
pub struct CrashConfig {
    /// The `weir-crash-job` binary.
    pub job_bin: PathBuf,
    /// The input.
    pub source: Source,
    /// The database URL (`sqlite://…`, `postgres://…`, `mysql://…`).
    pub db_url: String,
    /// PostgreSQL schema for the job's tables (None: the connection's default).
    pub schema: Option<String>,
    /// The job name.
    pub job: String,
    /// Kills to inflict: first one per failpoint (the sweep, each point armed alone),
    /// then random failpoints and random `SIGKILL`s.
    pub kills: usize,
    /// Partitions of the input topic.
    pub partitions: i32,
    /// Records appended each time the job has caught up.
    pub chunk: u64,
    /// `WEIR_FAILPOINT` for the job.
    pub failpoints: String,
    /// Longest wait before a random kill.
    pub max_kill_delay: Duration,
    /// The job's batch size.
    pub batch: usize,
    /// Where the job's stderr goes.
    pub stderr: PathBuf,
    /// Arguments added to every job run (`--dsl`: the job written with the pipeline
    /// DSL; `--group`: subscribe on Kafka instead of assigning).
    pub args: Vec<String>,
}

/// What a crash loop did and found.
#[derive(Clone, Debug)]
pub struct CrashOutcome {
    /// Kills in total.
    pub kills: usize,
    /// Of which the job's own failpoints.
    pub failpoint_kills: usize,
    /// Of which `SIGKILL` from the harness.
    pub random_kills: usize,
    /// Failpoint kills by failpoint name.
    pub by_failpoint: BTreeMap<String, usize>,
    /// Input records.
    pub records: u64,
    /// The checker's report.
    pub report: Report,
}

impl CrashOutcome {
    /// `N kills, M records: D dup / L lost` plus the other anomalies.
    pub fn summary(&self) -> String {
        let c = &self.report.counters;
        let fps: Vec<String> = self
            .by_failpoint
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        format!(
            "{} kills ({} random, {} failpoint: {}), {} records: {} dup / {} lost (dlq rows {}, sink rows {}, other anomalies {})",
            self.kills,
            self.random_kills,
            self.failpoint_kills,
            fps.join(", "),
            self.records,
            c.duplicates,
            c.lost,
            c.dlq_rows,
            c.sink_rows,
            self.report.anomalies() - c.duplicates - c.lost
        )
    }
}

fn append_log(dir: &Path, partitions: i32, from: u64, to: u64) -> Result<()> {
    let log = weir_log::Log::open(dir, weir_log::LogOptions::default())?;
    if log.partition_count(TOPIC).is_err() {
        log.create_topic(TOPIC, partitions)?;
    }
    for p in 0..partitions {
        let recs: Vec<weir_log::NewRecord> = (from..to)
            .filter(|i| i % partitions as u64 == p as u64)
            .map(|i| weir_log::NewRecord::new(format!("k{i}"), value_for(i)))
            .collect();
        if !recs.is_empty() {
            log.append(&TopicPartition::new(TOPIC, p), &recs)?;
        }
    }
    Ok(())
}

async fn append_kafka(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    from: u64,
    to: u64,
) -> Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "5")
        .create()?;
    // one partition at a time, awaiting each send, so the order within a partition is
    // the order of `i`
    for i in from..to {
        let p = (i % partitions as u64) as i32;
        let key = format!("k{i}");
        let value = value_for(i);
        let rec = FutureRecord::to(topic)
            .partition(p)
            .key(&key)
            .payload(&value);
        producer
            .send(rec, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("producing record {i} to {topic}/{p}: {e}"))?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

async fn append(cfg: &CrashConfig, from: u64, to: u64) -> Result<()> {
    match &cfg.source {
        Source::Log(dir) => append_log(dir, cfg.partitions, from, to),
        Source::Kafka { bootstrap, topic } => {
            append_kafka(bootstrap, topic, cfg.partitions, from, to).await
        }
    }
}

fn quoted(db_url: &str, schema: &Option<String>, table: &str) -> String {
    let q = if db_url.starts_with("mysql") {
        '`'
    } else {
        '"'
    };
    let id = |s: &str| format!("{q}{}{q}", s.replace(q, &format!("{q}{q}")));
    match schema {
        Some(s) => format!("{}.{}", id(s), id(table)),
        None => id(table),
    }
}

/// Expected next offset per partition after `records` records.
fn ends(topic: &str, partitions: i32, records: u64) -> BTreeMap<(String, i32), Option<i64>> {
    (0..partitions)
        .map(|p| {
            let n = (0..records)
                .filter(|i| i % partitions as u64 == p as u64)
                .count() as i64;
            ((topic.to_owned(), p), Some(n))
        })
        .collect()
}

async fn caught_up(db: &Db, cfg: &CrashConfig, records: u64) -> Result<bool> {
    let table = quoted(&cfg.db_url, &cfg.schema, "weir_offsets");
    match db.next_offsets(&cfg.job, &table).await {
        Ok(got) => Ok(got == ends(cfg.source.topic(), cfg.partitions, records)),
        Err(_) => Ok(false), // the table does not exist yet
    }
}

fn spawn(cfg: &CrashConfig, failpoints: bool, extra: &[String]) -> Result<tokio::process::Child> {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cfg.stderr)
        .with_context(|| format!("opening {}", cfg.stderr.display()))?;
    let mut cmd = tokio::process::Command::new(&cfg.job_bin);
    match &cfg.source {
        Source::Log(dir) => cmd.arg("--log").arg(dir),
        Source::Kafka { bootstrap, topic } => {
            cmd.arg("--kafka").arg(bootstrap).arg("--topic").arg(topic)
        }
    };
    cmd.arg("--db")
        .arg(&cfg.db_url)
        .arg("--job")
        .arg(&cfg.job)
        .arg("--batch")
        .arg(cfg.batch.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true);
    if let Some(s) = &cfg.schema {
        cmd.arg("--schema").arg(s);
    }
    cmd.args(&cfg.args);
    cmd.args(extra);
    if failpoints {
        cmd.env("WEIR_FAILPOINT", &cfg.failpoints);
    } else {
        cmd.env_remove("WEIR_FAILPOINT");
    }
    cmd.spawn()
        .with_context(|| format!("starting {}", cfg.job_bin.display()))
}

fn stderr_tail(cfg: &CrashConfig) -> String {
    let s = std::fs::read_to_string(&cfg.stderr).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Run the crash loop and check the result.
pub async fn run(cfg: &CrashConfig) -> Result<CrashOutcome> {
    let db = Db::connect(&cfg.db_url).await.with_context(|| {
        "cannot reach the database (PostgreSQL 127.0.0.1:5432, MariaDB 127.0.0.1:3306); run scripts/provision"
    })?;
    let mut records = cfg.chunk;
    append(cfg, 0, records).await?;
    let (mut failpoint_kills, mut random_kills) = (0, 0);
    let started = Instant::now();
    // The sweep: one run per failpoint, armed alone with probability 1, so each named
    // point is proven to be reached and survived whatever the random runs draw.
    for name in weir_sql::failpoint::NAMES {
        let mut one = cfg.clone();
        one.failpoints = format!("{name}:1");
        let mut child = spawn(&one, true, &[])?;
        match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
            Ok(status)
                if status.as_ref().ok().and_then(|s| s.signal()) == Some(nix::libc::SIGKILL) =>
            {
                failpoint_kills += 1;
            }
            Ok(status) => bail!(
                "sweep of failpoint {name}: the job exited by itself ({status:?}):\n{}",
                stderr_tail(cfg)
            ),
            Err(_) => {
                let _ = child.start_kill();
                bail!(
                    "sweep of failpoint {name}: not reached within 60 s:\n{}",
                    stderr_tail(cfg)
                )
            }
        }
        if caught_up(&db, cfg, records).await? {
            append(cfg, records, records + cfg.chunk).await?;
            records += cfg.chunk;
        }
    }
    while failpoint_kills + random_kills < cfg.kills {
        // 6 s a kill at most (a Kafka group join per restart), 10 minutes at least
        let cap = Duration::from_secs(600.max(6 * cfg.kills as u64));
        if started.elapsed() > cap {
            bail!(
                "crash loop ran over {cap:?} after {} kills",
                failpoint_kills + random_kills
            );
        }
        let mut child = spawn(cfg, true, &[])?;
        let max = cfg.max_kill_delay.as_millis().max(31) as u64;
        let delay = Duration::from_millis(rand::random_range(30..max));
        let status = match tokio::time::timeout(delay, child.wait()).await {
            Ok(status) => {
                let status = status?;
                if status.signal() == Some(nix::libc::SIGKILL) {
                    failpoint_kills += 1;
                } else {
                    bail!("the job exited by itself ({status}):\n{}", stderr_tail(cfg));
                }
                status
            }
            Err(_) => {
                child.start_kill()?;
                random_kills += 1;
                child.wait().await?
            }
        };
        let _ = status;
        if caught_up(&db, cfg, records).await? {
            append(cfg, records, records + cfg.chunk).await?;
            records += cfg.chunk;
        }
    }
    // a last run without failpoints until everything is processed
    let mut child = spawn(cfg, false, &[])?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if caught_up(&db, cfg, records).await? {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!("the final job run exited ({status}):\n{}", stderr_tail(cfg));
        }
        if Instant::now() > deadline {
            let _ = child.start_kill();
            bail!(
                "the final run did not catch up within 120 s:\n{}",
                stderr_tail(cfg)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.start_kill()?;
    child.wait().await?;

    let report = check_tables(&db, cfg).await?;
    let mut by_failpoint = BTreeMap::new();
    for line in std::fs::read_to_string(&cfg.stderr)
        .unwrap_or_default()
        .lines()
    {
        if let Some(name) = line
            .strip_prefix("weir failpoint ")
            .and_then(|l| l.strip_suffix(": SIGKILL"))
        {
            *by_failpoint.entry(name.to_owned()).or_insert(0) += 1;
        }
    }
    Ok(CrashOutcome {
        kills: failpoint_kills + random_kills,
        failpoint_kills,
        random_kills,
        by_failpoint,
        records,
        report,
    })
}

/// A multi-instance storm: several job processes in one consumer group on Kafka,
/// killed (`SIGKILL`) or stopped (`SIGTERM`) at random, restarted at once or after the
/// session timeout.
#[derive(Clone, Debug)]
pub struct StormConfig {
    /// The job, database and Kafka input ([`Source::Kafka`]).
    pub base: CrashConfig,
    /// Processes in the group.
    pub members: usize,
    /// Kills and terminations to inflict.
    pub actions: usize,
    /// The members' `session.timeout.ms`.
    pub session_timeout: Duration,
    /// The share of actions that are `SIGTERM`s (the rest are `SIGKILL`s).
    pub term_share: f64,
}

/// What a storm did and found.
#[derive(Clone, Debug)]
pub struct StormOutcome {
    /// `SIGKILL`s.
    pub kills: usize,
    /// `SIGTERM`s.
    pub terms: usize,
    /// Members that exited 0 after `SIGTERM` (committed their buffer, left the group).
    pub clean_exits: usize,
    /// Restarts delayed past the session timeout.
    pub late_restarts: usize,
    /// `SIGTERM`s turned into `SIGKILL`s (counted in `kills`) because the group did not
    /// settle within 60 s (see `storm`: tansu's leave-mid-JoinGroup fault).
    pub unsettled: usize,
    /// Input records.
    pub records: u64,
    /// The checker's report.
    pub report: Report,
}

impl StormOutcome {
    /// One line for the test log.
    pub fn summary(&self) -> String {
        format!(
            "{} kills + {} SIGTERMs ({} clean exits, {} SIGTERMs turned into kills as the group did not settle, {} restarts after the session timeout), {} records: {} anomalies",
            self.kills,
            self.terms,
            self.clean_exits,
            self.unsettled,
            self.late_restarts,
            self.records,
            self.report.anomalies()
        )
    }
}

/// Run a storm and check the result.
pub async fn storm(cfg: &StormConfig) -> Result<StormOutcome> {
    let base = &cfg.base;
    if !matches!(base.source, Source::Kafka { .. }) {
        bail!("a storm needs several processes in one group: use Source::Kafka");
    }
    let db = Db::connect(&base.db_url)
        .await
        .with_context(|| "cannot reach the database; run scripts/provision")?;
    let extra = vec![
        "--group".to_owned(),
        "--session-timeout-ms".to_owned(),
        cfg.session_timeout.as_millis().to_string(),
    ];
    let mut records = base.chunk;
    append(base, 0, records).await?;
    let table = quoted(&base.db_url, &base.schema, "weir_offsets");
    // the first member creates the tables alone (concurrent CREATE TABLE IF NOT EXISTS
    // can fail on PostgreSQL)
    let mut members: Vec<tokio::process::Child> = vec![spawn(base, false, &extra)?];
    let deadline = Instant::now() + Duration::from_secs(60);
    while !db
        .next_offsets(&base.job, &table)
        .await
        .is_ok_and(|m| !m.is_empty())
    {
        if Instant::now() > deadline {
            bail!(
                "the first member did not claim within 60 s:\n{}",
                stderr_tail(base)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 1..cfg.members {
        members.push(spawn(base, false, &extra)?);
    }
    let (mut kills, mut terms, mut clean_exits, mut late_restarts, mut unsettled) = (0, 0, 0, 0, 0);
    // Membership changes (spawn, kill, SIGTERM): a SIGTERM waits for a quiet group.
    let mut last_change = Instant::now();
    for _ in 0..cfg.actions {
        tokio::time::sleep(Duration::from_millis(rand::random_range(300..2000))).await;
        for m in &mut members {
            if let Some(status) = m.try_wait()? {
                bail!(
                    "a member exited by itself ({status}):\n{}",
                    stderr_tail(base)
                );
            }
        }
        let i = rand::random_range(0..members.len());
        // Workaround for a tansu 0.6 fault (DEVELOPERS.md, "Known broker faults (tansu)"):
        // a group leader that sends LeaveGroup while a JoinGroup round is in progress
        // stays the leader and the group stalls; a leave into a settled group is handled
        // correctly. So a SIGTERM (which leaves the group) is only sent once the group
        // has settled: no member spawned or killed for the session timeout plus the
        // broker's rebalance delay, and every partition claimed (offsets table `owner`)
        // by a live member, every live member owning one. SIGKILLs stay random.
        let mut term = rand::random_bool(cfg.term_share.clamp(0.0, 1.0));
        if term
            && !settled(
                &db,
                base,
                &table,
                &members,
                last_change,
                cfg.session_timeout,
            )
            .await?
        {
            term = false;
            unsettled += 1;
        }
        if !term {
            members[i].start_kill()?;
            members[i].wait().await?;
            kills += 1;
        } else {
            if let Some(pid) = members[i].id() {
                let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
            }
            terms += 1;
            match tokio::time::timeout(Duration::from_secs(30), members[i].wait()).await {
                Ok(Ok(status)) if status.success() => clean_exits += 1,
                Ok(status) => bail!(
                    "a member did not stop cleanly on SIGTERM ({status:?}):\n{}",
                    stderr_tail(base)
                ),
                Err(_) => bail!(
                    "a member did not stop within 30 s of SIGTERM:\n{}",
                    stderr_tail(base)
                ),
            }
        }
        if rand::random_bool(0.25) {
            late_restarts += 1;
            tokio::time::sleep(cfg.session_timeout + Duration::from_millis(500)).await;
        }
        members[i] = spawn(base, false, &extra)?;
        last_change = Instant::now();
        if caught_up(&db, base, records).await? {
            append(base, records, records + base.chunk).await?;
            records += base.chunk;
        }
    }
    // A liveness bound, not a speed check: on 2 shared cores the storm runs beside
    // the other crash loops of its binary (seen at 119 s alone, past 180 s beside a
    // build).
    let deadline = Instant::now() + Duration::from_secs(300);
    while !caught_up(&db, base, records).await? {
        for m in &mut members {
            if let Some(status) = m.try_wait()? {
                bail!(
                    "a member exited by itself ({status}):\n{}",
                    stderr_tail(base)
                );
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the group did not catch up within 300 s:\n{}",
                stderr_tail(base)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for m in &mut members {
        m.start_kill()?;
        m.wait().await?;
    }
    let report = check_tables(&db, base).await?;
    Ok(StormOutcome {
        kills,
        terms,
        clean_exits,
        late_restarts,
        unsettled,
        records,
        report,
    })
}

/// Wait (up to 60 s) until the storm's group has settled: `since_change` is at least
/// 1.5 × the session timeout ago (tansu's rebalance delay is about half the session
/// timeout), every partition of the offsets table is claimed by a live member (the
/// owner name the runner writes is `host-pid-nonce`) and every live member owns a
/// partition. `false` when it did not settle in time (the caller then kills instead).
async fn settled(
    db: &Db,
    cfg: &CrashConfig,
    table: &str,
    members: &[tokio::process::Child],
    since_change: Instant,
    session_timeout: Duration,
) -> Result<bool> {
    let quiet = session_timeout + session_timeout / 2;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if since_change.elapsed() >= quiet {
            let live: Vec<u32> = members.iter().filter_map(|m| m.id()).collect();
            let owners = owner_pids(db, &cfg.job, table).await.unwrap_or_default();
            let all_claimed = i32::try_from(owners.len()) == Ok(cfg.partitions)
                && owners
                    .iter()
                    .all(|o| o.is_some_and(|pid| live.contains(&pid)));
            let everyone_owns = live.iter().all(|pid| owners.contains(&Some(*pid)));
            if all_claimed && everyone_owns {
                return Ok(true);
            }
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pid in each offsets row's `owner` (`None` when it does not parse).
async fn owner_pids(db: &Db, job: &str, table: &str) -> Result<Vec<Option<u32>>> {
    let lit = format!("'{}'", job.replace('\'', "''"));
    let owners: Vec<(Option<String>,)> = match db {
        Db::Postgres(p) => {
            let q = format!("SELECT CAST(\"owner\" AS TEXT) FROM {table} WHERE \"job\" = {lit}");
            sqlx::query_as(sqlx::AssertSqlSafe(q)).fetch_all(p).await?
        }
        Db::MySql(p) => {
            let q = format!("SELECT CAST(`owner` AS CHAR) FROM {table} WHERE `job` = {lit}");
            sqlx::query_as(sqlx::AssertSqlSafe(q)).fetch_all(p).await?
        }
        Db::Sqlite(p) => {
            let q = format!("SELECT CAST(\"owner\" AS TEXT) FROM {table} WHERE \"job\" = {lit}");
            sqlx::query_as(sqlx::AssertSqlSafe(q)).fetch_all(p).await?
        }
    };
    Ok(owners
        .into_iter()
        .map(|(o,)| o.and_then(|o| o.rsplit('-').nth(1).and_then(|p| p.parse().ok())))
        .collect())
}

/// Read the input and the job's tables and run the checker.
async fn check_tables(db: &Db, cfg: &CrashConfig) -> Result<Report> {
    let topic = cfg.source.topic().to_owned();
    let tps: Vec<TopicPartition> = (0..cfg.partitions)
        .map(|p| TopicPartition::new(topic.clone(), p))
        .collect();
    let input = match &cfg.source {
        Source::Log(dir) => {
            let log = weir_log::Log::open(dir, weir_log::LogOptions::default())?;
            let mut consumer = weir_log::LogConsumer::new(&log, ConsumerConfig::new())?;
            read_input(&mut consumer, &tps, Duration::from_secs(60)).await?
        }
        Source::Kafka { bootstrap, .. } => {
            let mut consumer = weir_kafka::KafkaConsumer::new(
                ConsumerConfig::new().with_bootstrap_servers(bootstrap.clone()),
            )?;
            let input = read_input(&mut consumer, &tps, Duration::from_secs(60)).await;
            let _ = weir_core::Consumer::close(&mut consumer).await;
            input?
        }
    };
    let spec = TableSpec {
        job: cfg.job.clone(),
        sink_table: quoted(&cfg.db_url, &cfg.schema, "crash_out"),
        sink_topic: None,
        topic,
        sink_partition: "src_partition".into(),
        sink_offset: "src_offset".into(),
        sink_ordinal: Some("ordinal".into()),
        sink_payload: "payload".into(),
        dlq_table: quoted(&cfg.db_url, &cfg.schema, "weir_dead_letters"),
        offsets_table: quoted(&cfg.db_url, &cfg.schema, "weir_offsets"),
    };
    let tables = db.read(&spec).await?;
    if cfg.args.iter().any(|a| a == "--agg") {
        return check_aggregates(db, cfg, &input, &tables).await;
    }
    let report = check(
        &Inputs {
            input: &input,
            sink: &tables.sink,
            dlq: &tables.dlq,
            offsets: &tables.offsets,
            commits: None,
        },
        reference,
    );
    Ok(report)
}

/// The aggregating job's check: every bucket of `crash_agg` equals the count, sum,
/// min and max recomputed from the whole input (poison excluded), and every poison
/// record has exactly one dead letter. A bucket counting more records than it should
/// is reported as duplicates, fewer as lost; a sum, min or max that differs as corrupt.
async fn check_aggregates(
    db: &Db,
    cfg: &CrashConfig,
    input: &[InputRecord],
    tables: &crate::checker::Tables,
) -> Result<Report> {
    let mut want: BTreeMap<i64, (i64, i64, i64, i64)> = BTreeMap::new();
    let mut poison = std::collections::BTreeSet::new();
    for r in input {
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        let i: i64 = key
            .strip_prefix('k')
            .and_then(|i| i.parse().ok())
            .with_context(|| format!("input key {key:?} at {}/{}", r.partition, r.offset))?;
        if value_for(i as u64) == "POISON" {
            poison.insert((r.partition, r.offset));
            continue;
        }
        let e = want
            .entry(i % AGG_BUCKETS)
            .or_insert((0, 0, i64::MAX, i64::MIN));
        e.0 += 1;
        e.1 += i;
        e.2 = e.2.min(i);
        e.3 = e.3.max(i);
    }
    let table = quoted(&cfg.db_url, &cfg.schema, "crash_agg");
    let sql = format!("SELECT bucket, n, total, lo, hi FROM {table} ORDER BY bucket");
    let q = sqlx::AssertSqlSafe(sql);
    let rows: Vec<(i64, i64, i64, i64, i64)> = match db {
        Db::Postgres(p) => sqlx::query_as(q).fetch_all(p).await?,
        Db::MySql(p) => sqlx::query_as(q).fetch_all(p).await?,
        Db::Sqlite(p) => sqlx::query_as(q).fetch_all(p).await?,
    };
    let got: BTreeMap<i64, (i64, i64, i64, i64)> = rows
        .into_iter()
        .map(|(b, n, t, lo, hi)| (b, (n, t, lo, hi)))
        .collect();
    let mut report = Report::default();
    let c = &mut report.counters;
    c.input_records = input.len() as u64;
    // the records the table accounts for (each bucket's count), dead letters aside
    c.consumed = got.values().map(|v| v.0.max(0) as u64).sum::<u64>();
    c.sink_rows = got.len() as u64;
    c.dlq_rows = tables.dlq.len() as u64;
    let mut notes = Vec::new();
    for b in want
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let w = want.get(b).copied().unwrap_or((0, 0, 0, 0));
        let g = got.get(b).copied().unwrap_or((0, 0, 0, 0));
        if g.0 > w.0 {
            c.duplicates += (g.0 - w.0) as u64;
        } else if g.0 < w.0 {
            c.lost += (w.0 - g.0) as u64;
        }
        if g != w {
            c.corrupt += 1;
            notes.push(format!(
                "bucket {b}: (n, sum, min, max) {g:?}, expected {w:?}"
            ));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for d in &tables.dlq {
        if !seen.insert((d.partition, d.offset)) {
            c.dlq_duplicates += 1;
        } else if !poison.contains(&(d.partition, d.offset)) {
            c.misrouted += 1;
        }
    }
    c.dlq_missing = poison.difference(&seen).count() as u64;
    for n in notes {
        report.note("corrupt", n);
    }
    Ok(report)
}

/// A paused zombie: one member of a Kafka group is frozen with `SIGSTOP` (by its own
/// `stop` failpoint, so it is frozen at a known point with its batch transaction
/// open), kept stopped past the session timeout while a second member takes its
/// partitions over and commits them, then resumed with `SIGCONT`.
#[derive(Clone, Debug)]
pub struct ZombieConfig {
    /// The job, database and Kafka input ([`Source::Kafka`]); `failpoints` is unused.
    pub base: CrashConfig,
    /// The failpoint the zombie stops at (`after_sink_write`: transaction open, sink
    /// rows written, offsets not yet compared-and-set; `after_offset_update`: the
    /// offsets row is locked too).
    pub stop_at: String,
    /// The members' `session.timeout.ms`.
    pub session_timeout: Duration,
    /// Extra arguments for both members (e.g. `--idle-tx-timeout-ms`).
    pub extra: Vec<String>,
}

/// What a paused-zombie run did and found.
#[derive(Clone, Debug)]
pub struct ZombieOutcome {
    /// How long the zombie stayed stopped.
    pub stopped_for: Duration,
    /// "partition fenced" reports in the zombie's log after it was resumed (its
    /// compare-and-set or commit affected no row); the run fails when there are none.
    pub fenced_reports: usize,
    /// The zombie was still alive (not crashed) at the end.
    pub zombie_alive: bool,
    /// Input records.
    pub records: u64,
    /// The checker's report.
    pub report: Report,
}

impl ZombieOutcome {
    /// One line for the test log.
    pub fn summary(&self) -> String {
        format!(
            "zombie stopped {:.1} s, {} partition(s) fenced after SIGCONT, alive at the end: {}, {} records: {} dup / {} lost, {} anomalies",
            self.stopped_for.as_secs_f64(),
            self.fenced_reports,
            self.zombie_alive,
            self.records,
            self.report.counters.duplicates,
            self.report.counters.lost,
            self.report.anomalies()
        )
    }
}

/// The state letter of `/proc/<pid>/stat` (`T`: stopped).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

fn signal(child: &tokio::process::Child, sig: nix::sys::signal::Signal) -> Result<()> {
    let pid = child.id().context("the process has exited")?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
    nix::sys::signal::kill(pid, sig)?;
    Ok(())
}

async fn wait_caught_up(
    db: &Db,
    cfg: &CrashConfig,
    records: u64,
    limit: Duration,
    members: &mut [&mut tokio::process::Child],
    what: &str,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !caught_up(db, cfg, records).await? {
        for m in members.iter_mut() {
            if let Some(status) = m.try_wait()? {
                bail!(
                    "a member exited ({status}) while {what}:\n{}",
                    stderr_tail(cfg)
                );
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: not caught up within {limit:?}:\n{}",
                stderr_tail(cfg)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Run the paused-zombie scenario and check the result.
pub async fn paused_zombie(cfg: &ZombieConfig) -> Result<ZombieOutcome> {
    let base = &cfg.base;
    if !matches!(base.source, Source::Kafka { .. }) {
        bail!("a paused zombie needs two processes in one group: use Source::Kafka");
    }
    let db = Db::connect(&base.db_url)
        .await
        .with_context(|| "cannot reach the database; run scripts/provision")?;
    let mut extra = vec![
        "--group".to_owned(),
        "--session-timeout-ms".to_owned(),
        cfg.session_timeout.as_millis().to_string(),
    ];
    extra.extend(cfg.extra.iter().cloned());
    let mut records = base.chunk;
    append(base, 0, records).await?;

    // The zombie: stops itself inside its first batch transaction.
    let mut zombie_cfg = base.clone();
    zombie_cfg.failpoints = format!("{}:1:stop", cfg.stop_at);
    zombie_cfg.stderr = base.stderr.with_extension("zombie");
    let mut zombie = spawn(&zombie_cfg, true, &extra)?;
    let zpid = zombie.id().context("the zombie exited at once")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while process_state(zpid) != Some('T') {
        if let Some(status) = zombie.try_wait()? {
            bail!(
                "the zombie exited ({status}):\n{}",
                stderr_tail(&zombie_cfg)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the zombie did not reach {} within 60 s:\n{}",
                cfg.stop_at,
                stderr_tail(&zombie_cfg)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped_at = Instant::now();

    // The new owner: gets the partitions once the zombie's session has timed out,
    // claims them and commits everything, the zombie's open batch included.
    let mut owner = spawn(base, false, &extra)?;
    wait_caught_up(
        &db,
        base,
        records,
        Duration::from_secs(90),
        &mut [&mut owner],
        "the new owner took over from the stopped zombie",
    )
    .await?;
    if process_state(zpid) != Some('T') {
        bail!("the zombie was resumed by something else");
    }
    let stopped_for = stopped_at.elapsed();
    if stopped_for < cfg.session_timeout {
        bail!(
            "the new owner committed after {stopped_for:?}, before the zombie's session timed out: the scenario did not happen"
        );
    }

    // SIGCONT: the zombie's commit must affect no row, and it must not hang.
    signal(&zombie, nix::sys::signal::Signal::SIGCONT)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let zombie_log = || std::fs::read_to_string(&zombie_cfg.stderr).unwrap_or_default();
    while !zombie_log().contains("partition fenced") {
        if let Some(status) = zombie.try_wait()? {
            bail!(
                "the zombie exited after SIGCONT ({status}):\n{}",
                stderr_tail(&zombie_cfg)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the zombie did not report its partitions fenced within 60 s of SIGCONT:\n{}",
                stderr_tail(&zombie_cfg)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Both members go on: new input is processed once, nothing hangs.
    append(base, records, records + base.chunk).await?;
    records += base.chunk;
    wait_caught_up(
        &db,
        base,
        records,
        Duration::from_secs(120),
        &mut [&mut owner, &mut zombie],
        "both members processed new input after the zombie resumed",
    )
    .await?;
    let zombie_alive = zombie.try_wait()?.is_none();
    let fenced_reports = zombie_log().matches("partition fenced").count();
    for m in [&mut owner, &mut zombie] {
        m.start_kill()?;
        m.wait().await?;
    }
    let report = check_tables(&db, base).await?;
    Ok(ZombieOutcome {
        stopped_for,
        fenced_reports,
        zombie_alive,
        records,
        report,
    })
}

/// SIGTERM under load: the job (usually `--dsl` with `--sink-delay-ms`, so batches are
/// in flight) is signalled once it has committed something; with `second_after` a
/// second SIGTERM follows (abort). Then a last run finishes the input and the checker
/// compares. The last run is given `--sink-delay-ms 0`.
#[derive(Clone, Debug)]
pub struct SigtermConfig {
    /// The job and its input (`kills` is not used).
    pub base: CrashConfig,
    /// Send a second SIGTERM this long after the first.
    pub second_after: Option<Duration>,
}

/// What a SIGTERM run did.
#[derive(Clone, Debug)]
pub struct SigtermOutcome {
    /// The job's exit code after the signal(s) (`None`: killed by a signal).
    pub exit_code: Option<i32>,
    /// From the first SIGTERM to the exit.
    pub exit_after: Duration,
    /// Whether stderr says the job stopped cleanly (drained, left the group).
    pub stopped_cleanly: bool,
    /// Records committed (sum of the stored next offsets) right after the exit.
    pub committed_at_exit: i64,
    /// Input records in the end.
    pub records: u64,
    /// The checker's report after the last run.
    pub report: Report,
}

/// Run the SIGTERM scenario.
pub async fn sigterm(cfg: &SigtermConfig) -> Result<SigtermOutcome> {
    let base = &cfg.base;
    let db = Db::connect(&base.db_url).await.with_context(|| {
        "cannot reach the database (PostgreSQL 127.0.0.1:5432, MariaDB 127.0.0.1:3306); run scripts/provision"
    })?;
    let table = quoted(&base.db_url, &base.schema, "weir_offsets");
    let committed = |db: &Db| {
        let db = db.clone();
        let table = table.clone();
        let job = base.job.clone();
        async move {
            db.next_offsets(&job, &table)
                .await
                .map(|m| m.values().map(|v| v.unwrap_or(0)).sum::<i64>())
                .unwrap_or(0)
        }
    };
    let records = base.chunk;
    append(base, 0, records).await?;
    let _ = std::fs::remove_file(&base.stderr);
    let mut child = spawn(base, false, &[])?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&db).await == 0 {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the job exited before committing ({status}):\n{}",
                stderr_tail(base)
            );
        }
        if Instant::now() > deadline {
            let _ = child.start_kill();
            bail!(
                "the job committed nothing within 60 s:\n{}",
                stderr_tail(base)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // (the embedded log is one process's: input is appended between runs only)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child
        .id()
        .map(|p| nix::unistd::Pid::from_raw(p as i32))
        .context("the job has no pid")?;
    let signalled = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    if let Some(after) = cfg.second_after {
        tokio::time::sleep(after).await;
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    let status = match tokio::time::timeout(Duration::from_secs(90), child.wait()).await {
        Ok(s) => s?,
        Err(_) => {
            let _ = child.start_kill();
            bail!(
                "the job did not exit within 90 s of SIGTERM:\n{}",
                stderr_tail(base)
            );
        }
    };
    let exit_after = signalled.elapsed();
    let committed_at_exit = committed(&db).await;
    let stopped_cleanly = std::fs::read_to_string(&base.stderr)
        .unwrap_or_default()
        .contains("stopped cleanly");

    // a last run finishes the input, at full speed (the delay only served to keep
    // batches in flight at the signal)
    let mut child = spawn(base, false, &["--sink-delay-ms".to_owned(), "0".to_owned()])?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !caught_up(&db, base, records).await? {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the final job run exited ({status}):\n{}",
                stderr_tail(base)
            );
        }
        if Instant::now() > deadline {
            let _ = child.start_kill();
            bail!(
                "the final run did not catch up within 120 s:\n{}",
                stderr_tail(base)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.start_kill()?;
    child.wait().await?;
    let report = check_tables(&db, base).await?;
    Ok(SigtermOutcome {
        exit_code: status.code(),
        exit_after,
        stopped_cleanly,
        committed_at_exit,
        records,
        report,
    })
}
