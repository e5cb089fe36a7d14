//! weir's quickstart: the main job on the embedded default (embedded log + SQLite, no
//! server), killed with SIGKILL mid-stream and restarted, then checked record by record.
//!
//! ```text
//! cargo run --release --example quickstart                       # 100 000 records, 5 kills
//! cargo run --release --example quickstart -- --records 1000000 --kills 20
//! ```
//!
//! What happens:
//! 1. A fresh directory `target/weir-quickstart/` gets an embedded log with a topic
//!    `orders` (4 partitions) holding `--records` JSON orders; about one in 500 is
//!    deliberately malformed (a poison record).
//! 2. A worker process (this example with `--worker`) runs the job, written with
//!    weir's pipeline DSL in `worker()` (the part a user writes; the rest of this file
//!    is the crash driver and the checker): it consumes
//!    `orders` in the consumer group `quickstart`, decodes each value as JSON and writes
//!    one row per order into the SQLite table `orders`, poison records into
//!    `weir_dead_letters`, and the partitions' next offsets into `weir_offsets`, all in
//!    one transaction per batch. On every assignment it reads `weir_offsets` and seeks
//!    there.
//! 3. The driver kills the worker with SIGKILL `--kills` times at moments spread over
//!    the run, restarting it at once; the last run is stopped cleanly with SIGTERM once
//!    every offset is stored.
//! 4. The driver then reads the whole log and both tables and counts, per record:
//!    duplicates, losses, poison records in the sink or good ones in the dead letters.
//!    It exits non-zero if any counter is not 0.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde::Deserialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Row as _, SqlitePool};
use weir::core::TopicPartition;
use weir::formats::Json;
use weir::log::{Log, LogOptions, NewRecord, Producer};
use weir::{sink, Job};

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 4;
const JOB: &str = "quickstart";
const POISON_EVERY: u64 = 500;

/// An order as producers write it (JSON).
#[derive(Deserialize)]
struct Order {
    id: i64,
    customer: String,
    amount_cents: i64,
}

/// One row of the `orders` table: the order plus where it came from.
#[derive(weir::Row)]
struct OrderRow {
    src_partition: i32,
    src_offset: i64,
    id: i64,
    customer: String,
    amount_cents: i64,
}

struct Args {
    records: u64,
    kills: u32,
    dir: PathBuf,
    worker: bool,
}

fn parse_args(argv: impl IntoIterator<Item = String>) -> anyhow::Result<Args> {
    let mut args = Args {
        records: 100_000,
        kills: 5,
        dir: PathBuf::from("target/weir-quickstart"),
        worker: false,
    };
    let mut it = argv.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--records" => args.records = it.next().context("--records N")?.parse()?,
            "--kills" => args.kills = it.next().context("--kills N")?.parse()?,
            "--dir" => args.dir = PathBuf::from(it.next().context("--dir PATH")?),
            "--worker" => args.worker = true,
            "-h" | "--help" => {
                println!("usage: quickstart [--records N] [--kills N] [--dir PATH]");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    if args.records == 0 {
        bail!("--records must be at least 1");
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
    run(std::env::args().skip(1))
}

/// Runs the quickstart with these command-line arguments (also used by the test
/// `tests/quickstart_crash_restart.rs`).
pub fn run(argv: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    let args = parse_args(argv)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if args.worker {
        rt.block_on(worker(&args.dir))
    } else {
        rt.block_on(driver(&args))
    }
}

async fn open_db(dir: &Path) -> anyhow::Result<SqlitePool> {
    let options = SqliteConnectOptions::new()
        .filename(dir.join("results.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    Ok(SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await?)
}

// ---------------------------------------------------------------------------------
// The job: what a user of weir writes.
// ---------------------------------------------------------------------------------

async fn worker(dir: &Path) -> anyhow::Result<()> {
    // SIGTERM is handled from here on (tokio replaces the default action for good
    // once a handler is registered); the driver waits for the ready file below.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let dir = std::path::absolute(dir)?;
    std::fs::write(
        dir.join(format!("worker-{}.ready", std::process::id())),
        b"",
    )?;

    let summary = Job::new(JOB) // also the consumer group
        .source(format!("log://{}", dir.join("log").display()), [TOPIC])
        .database(format!("sqlite://{}", dir.join("results.db").display()))
        .batch_records(500)
        .linger(Duration::from_millis(50))
        .value::<Order, _>(Json::new()) // a malformed order is dead-lettered
        .map_with(|order, r| OrderRow {
            src_partition: r.partition,
            src_offset: r.offset,
            id: order.id,
            customer: order.customer,
            amount_cents: order.amount_cents,
        })
        .sink(sink::Sqlite::insert("orders"))
        // SIGTERM: stop fetching, commit what is in flight, leave the group
        .run_until(async move {
            term.recv().await;
        })
        .await?;
    eprintln!(
        "worker {}: stopped cleanly: {summary:?}",
        std::process::id()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------
// The driver: produce, kill and restart the job, then check.
// ---------------------------------------------------------------------------------

fn order_json(i: u64) -> Vec<u8> {
    if i % POISON_EVERY == POISON_EVERY - 1 {
        // Truncated JSON: a poison record that must land in the dead letters, once.
        return format!(r#"{{"id":{i},"customer":"#).into_bytes();
    }
    format!(
        r#"{{"id":{i},"customer":"c{}","amount_cents":{}}}"#,
        i % 97,
        (i * 37) % 10_000
    )
    .into_bytes()
}

fn produce(dir: &Path, records: u64) -> anyhow::Result<BTreeMap<i32, i64>> {
    let log = Log::open(dir.join("log"), LogOptions::default())?;
    log.create_topic(TOPIC, PARTITIONS)?;
    let producer = Producer::new(log.clone());
    let mut batch = Vec::with_capacity(1000);
    for i in 0..records {
        let key = format!("c{}", i % 97);
        batch.push(NewRecord::new(key, order_json(i)));
        if batch.len() == 1000 || i + 1 == records {
            producer.send_batch(TOPIC, std::mem::take(&mut batch))?;
        }
    }
    log.flush()?;
    let mut ends = BTreeMap::new();
    for p in 0..PARTITIONS {
        ends.insert(p, log.offsets(&TopicPartition::new(TOPIC, p))?.1);
    }
    Ok(ends)
}

fn spawn_worker(dir: &Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    Ok(Command::new(exe)
        .arg("--worker")
        .arg("--dir")
        .arg(dir)
        .spawn()?)
}

/// Rows committed so far (sink + dead letters), or 0 before the tables exist.
async fn committed_rows(pool: &SqlitePool) -> i64 {
    let q = "SELECT (SELECT COUNT(*) FROM orders) + (SELECT COUNT(*) FROM weir_dead_letters)";
    sqlx::query_scalar::<_, i64>(q)
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

async fn stored_offsets(pool: &SqlitePool) -> BTreeMap<i32, i64> {
    let q = r#"SELECT "partition", "next_offset" FROM weir_offsets WHERE job = ? AND topic = ?"#;
    match sqlx::query(q).bind(JOB).bind(TOPIC).fetch_all(pool).await {
        Ok(rows) => rows
            .iter()
            .map(|r| (r.get::<i32, _>(0), r.get::<i64, _>(1)))
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

fn jitter_ms(max: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos) % max.max(1)
}

fn exited(child: &mut Child) -> anyhow::Result<Option<ExitStatus>> {
    Ok(child.try_wait()?)
}

async fn driver(args: &Args) -> anyhow::Result<()> {
    let dir = &args.dir;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let started = Instant::now();
    let ends = produce(dir, args.records)?;
    println!(
        "quickstart: produced {} records to `{TOPIC}` ({PARTITIONS} partitions) in {}",
        args.records,
        dir.join("log").display()
    );

    let pool = open_db(dir).await?;
    let total = i64::try_from(args.records)?;
    let mut runs = 0;
    for k in 0..args.kills {
        let target = total * i64::from(k + 1) / i64::from(args.kills + 1);
        let at_spawn = committed_rows(&pool).await;
        let mut child = spawn_worker(dir)?;
        runs += 1;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = exited(&mut child)? {
                bail!("worker exited on its own with {status} before it was killed");
            }
            let rows = committed_rows(&pool).await;
            // Kill mid-stream: past this run's share, and after it committed something.
            // A fast run can commit every record before the driver's next look; the
            // later runs then have nothing left to commit, and are killed while they
            // claim, seek and idle at the end of the log (a crash there must be
            // harmless too).
            if (rows >= target && rows > at_spawn) || rows >= total {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("no progress to {target} rows within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let idle = committed_rows(&pool).await >= total;
        let jitter = jitter_ms(if idle { 400 } else { 40 });
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        child.kill()?; // SIGKILL: no cleanup, no goodbye
        child.wait()?;
        println!(
            "quickstart: kill -9 #{} of worker after {} committed rows",
            k + 1,
            committed_rows(&pool).await
        );
    }

    // Last run: let it finish, then stop it cleanly.
    let mut child = spawn_worker(dir)?;
    runs += 1;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = exited(&mut child)? {
            bail!("worker exited on its own with {status}");
        }
        let stored = stored_offsets(&pool).await;
        if ends.iter().all(|(p, end)| stored.get(p) == Some(end)) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the job did not reach the end of the log within 300 s: stored {stored:?}, ends {ends:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = i32::try_from(child.id())?;
    let ready = dir.join(format!("worker-{pid}.ready"));
    while !ready.exists() {
        if let Some(status) = exited(&mut child)? {
            bail!("worker exited on its own with {status}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("could not send SIGTERM to worker {pid}");
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("worker stopped with {status}");
    }

    let report = check(dir, &pool).await?;
    println!(
        "quickstart: {} records ({} poison), {} kill -9, {} worker runs, {:.1} s",
        args.records,
        report.poison,
        args.kills,
        runs,
        started.elapsed().as_secs_f64()
    );
    println!(
        "quickstart: {} rows in `orders`, {} dead letters: {} duplicates, {} lost, {} misrouted, {} corrupt",
        report.sink_rows, report.dead_letters, report.duplicates, report.lost, report.misrouted, report.corrupt
    );
    if report.anomalies() > 0 {
        bail!("exactly-once violated: {} anomalies", report.anomalies());
    }
    println!("quickstart: exactly once: 0 duplicates, 0 lost");
    Ok(())
}

/// A good record's expected row: (id, customer, amount_cents). `None` in the map: poison.
type Expected = (i64, String, i64);

#[derive(Default)]
struct Report {
    poison: u64,
    sink_rows: u64,
    dead_letters: u64,
    duplicates: u64,
    lost: u64,
    misrouted: u64,
    corrupt: u64,
}

impl Report {
    fn anomalies(&self) -> u64 {
        self.duplicates + self.lost + self.misrouted + self.corrupt
    }
}

/// Compares the log with the tables, record by record. Independent of the sink: it
/// reads the log from the beginning and the tables with plain SQL.
async fn check(dir: &Path, pool: &SqlitePool) -> anyhow::Result<Report> {
    // What the log holds: (partition, offset) → expected (id, customer, amount) or poison.
    let log = Log::open(dir.join("log"), LogOptions::default())?;
    let mut expected: BTreeMap<(i32, i64), Option<Expected>> = BTreeMap::new();
    for p in 0..PARTITIONS {
        let tp = TopicPartition::new(TOPIC, p);
        let (mut next, end) = log.offsets(&tp)?;
        while next < end {
            let records = log.read(&tp, next, 1000, 1 << 20)?;
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            for r in records {
                let parsed = r
                    .value
                    .as_deref()
                    .and_then(|v| serde_json::from_slice::<Order>(v).ok())
                    .map(|o| (o.id, o.customer, o.amount_cents));
                expected.insert((p, r.offset), parsed);
            }
        }
    }
    drop(log);

    let mut report = Report {
        poison: expected.values().filter(|v| v.is_none()).count() as u64,
        ..Report::default()
    };
    let mut seen: BTreeMap<(i32, i64), u64> = BTreeMap::new();
    let rows =
        sqlx::query("SELECT src_partition, src_offset, id, customer, amount_cents FROM orders")
            .fetch_all(pool)
            .await?;
    report.sink_rows = rows.len() as u64;
    for row in &rows {
        let at = (row.get::<i32, _>(0), row.get::<i64, _>(1));
        *seen.entry(at).or_default() += 1;
        match expected.get(&at) {
            Some(Some((id, customer, amount))) => {
                let got = (
                    row.get::<i64, _>(2),
                    row.get::<String, _>(3),
                    row.get::<i64, _>(4),
                );
                if got != (*id, customer.clone(), *amount) {
                    report.corrupt += 1;
                }
            }
            Some(None) => report.misrouted += 1, // poison in the sink
            None => report.corrupt += 1,         // a row for no record (phantom)
        }
    }
    let dlq = sqlx::query(
        r#"SELECT "partition", "offset" FROM weir_dead_letters WHERE job = ? AND topic = ?"#,
    )
    .bind(JOB)
    .bind(TOPIC)
    .fetch_all(pool)
    .await?;
    report.dead_letters = dlq.len() as u64;
    for row in &dlq {
        let at = (row.get::<i32, _>(0), row.get::<i64, _>(1));
        *seen.entry(at).or_default() += 1;
        if !matches!(expected.get(&at), Some(None)) {
            report.misrouted += 1; // a good record dead-lettered, or a phantom
        }
    }
    let all: BTreeSet<(i32, i64)> = expected.keys().copied().collect();
    for at in &all {
        match seen.get(at).copied().unwrap_or(0) {
            0 => report.lost += 1,
            1 => {}
            n => report.duplicates += n - 1,
        }
    }
    Ok(report)
}
