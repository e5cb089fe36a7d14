//! Windowed revenue per customer, exactly once, on the embedded default (embedded log +
//! SQLite, no server).
//!
//! ```text
//! cargo run --release --example windowed_revenue
//! cargo run --release --example windowed_revenue -- --orders 200000
//! ```
//!
//! What it shows: a job that keys orders by customer and keeps, per customer and
//! minute of *event time*, the order count, the revenue and the largest order in the
//! SQLite table `revenue_per_minute`. Each batch's totals are delta upserts in the same
//! transaction as the batch's offsets, so a crash or restart never counts an order
//! twice or loses one. Orders arrive out of order (up to 20 s); the allowed lateness is
//! 30 s; one order in 1000 is three minutes late and goes to `weir_dead_letters` with
//! its window and the watermark in the reason. A window is `closed` once every
//! partition's watermark has passed its end: `WHERE closed` reads final results.
//!
//! The job runs twice (stopped after the first half of the orders, then restarted for
//! the rest: the watermarks come back from the offsets table), then the example
//! recomputes every window from the generated orders minus the dead letters and exits
//! non-zero unless each one matches exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::SqlitePool;
use weir::agg::{self, Window};
use weir::log::{Log, LogOptions, NewRecord, Producer};
use weir::{sink, Job};

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 4;
const JOB: &str = "windowed-revenue";
/// 2026-12-03T00:00:00Z, in milliseconds.
const START_MS: i64 = 1_796_256_000_000;

/// An order as producers write it (JSON).
#[derive(Deserialize)]
struct Order {
    customer: String,
    cents: i64,
    /// Event time, milliseconds since the Unix epoch.
    ts: i64,
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

/// The generated order `i`: 10 customers, 50 ms of event time apart, shuffled by up to
/// 20 s, and one in 1000 three minutes late.
fn order(i: u64) -> (String, i64, i64) {
    let customer = format!("c{}", i % 10);
    let cents = ((i * 7919) % 50_000) as i64 + 100;
    let jitter = ((i * 2_654_435_761) % 20_000) as i64;
    let mut ts = START_MS + i as i64 * 50 - jitter;
    if i % 1000 == 999 {
        ts -= 180_000;
    }
    (customer, cents, ts)
}

/// Runs the example with these command-line arguments (also used by
/// `tests/examples_embedded.rs`).
pub fn run(argv: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    let mut orders: u64 = 20_000;
    let mut dir = PathBuf::from("target/weir-windowed");
    let mut it = argv.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--orders" => orders = it.next().context("--orders needs a number")?.parse()?,
            "--dir" => dir = it.next().context("--dir needs a path")?.into(),
            other => bail!("unknown argument `{other}` (expected --orders N, --dir PATH)"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(example(orders, &dir))
}

async fn open_db(dir: &Path) -> anyhow::Result<SqlitePool> {
    let options = SqliteConnectOptions::new()
        .filename(dir.join("revenue.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    Ok(SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await?)
}

/// The job: what a user writes.
async fn job(log_dir: &Path, pool: SqlitePool, until: u64) -> anyhow::Result<weir::Summary> {
    let stop = committed(pool.clone(), until);
    let summary = Job::new(JOB)
        .source(format!("log://{}", log_dir.display()), [TOPIC])
        .value::<Order, _>(weir::formats::Json::new())
        .key_by(|o| o.customer.clone())
        .sink(
            sink::Sqlite::aggregate(
                "revenue_per_minute",
                ["customer"],
                agg::count("orders")
                    .and(agg::sum("revenue_cents", |o: &Order| o.cents))
                    .and(agg::max("largest_cents", |o: &Order| o.cents)),
            )
            .window(
                Window::tumbling(Duration::from_secs(60))
                    .event_time(|o: &Order| o.ts)
                    .allowed_lateness(Duration::from_secs(30)),
            ),
        )
        .pool(pool)
        .run_until(stop)
        .await?;
    Ok(summary)
}

/// Resolves once the job's stored offsets cover `records` records.
async fn committed(pool: SqlitePool, records: u64) {
    loop {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT SUM(next_offset) FROM weir_offsets WHERE job = 'windowed-revenue'",
        )
        .fetch_one(&pool)
        .await
        .unwrap_or(None);
        if n.unwrap_or(0) as u64 >= records {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn produce(log: &Log, from: u64, to: u64) -> anyhow::Result<()> {
    let producer = Producer::new(log.clone());
    let mut batch = Vec::new();
    for i in from..to {
        let (customer, cents, ts) = order(i);
        let json = format!(r#"{{"customer":"{customer}","cents":{cents},"ts":{ts}}}"#);
        batch.push(NewRecord::new(customer, json));
        if batch.len() == 1000 || i + 1 == to {
            producer.send_batch(TOPIC, std::mem::take(&mut batch))?;
        }
    }
    log.flush()?;
    Ok(())
}

async fn example(orders: u64, dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let log_dir = dir.join("log");
    let log = Log::open(&log_dir, LogOptions::default())?;
    log.create_topic(TOPIC, PARTITIONS)?;
    let pool = open_db(dir).await?;

    let half = orders / 2;
    produce(&log, 0, half)?;
    let first = job(&log_dir, pool.clone(), half).await?;
    println!(
        "windowed_revenue: first run stopped after {} orders ({} commits)",
        first.records, first.commits
    );
    produce(&log, half, orders)?;
    let second = job(&log_dir, pool.clone(), orders).await?;
    println!(
        "windowed_revenue: restarted, {} more orders ({} commits)",
        second.records, second.commits
    );

    // The check: every window equals the recomputation from the generated orders
    // without the dead-lettered ones, and every deliberately late order is a dead
    // letter.
    let dead: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT \"partition\", \"offset\", error FROM weir_dead_letters WHERE job = 'windowed-revenue'",
    )
    .fetch_all(&pool)
    .await?;
    if let Some((_, _, reason)) = dead.iter().find(|d| !d.2.contains("late record")) {
        bail!("a dead letter that is not a late record: {reason}");
    }
    let dead: BTreeSet<(i64, i64)> = dead.into_iter().map(|(p, o, _)| (p, o)).collect();
    // The producer puts order i of key c{i % 10} on its key's partition, in order:
    // recover (partition, offset) of each order the same way the log assigned them.
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut want: BTreeMap<(String, i64), (i64, i64, i64)> = BTreeMap::new();
    let mut late_missing = 0;
    for i in 0..orders {
        let (customer, cents, ts) = order(i);
        let p = weir::log::partition_for_key(customer.as_bytes(), PARTITIONS);
        let offset = next.entry(p).or_insert(0);
        let at = (i64::from(p), *offset);
        *offset += 1;
        if dead.contains(&at) {
            continue;
        }
        if i % 1000 == 999 {
            late_missing += 1;
        }
        let start = ts.div_euclid(60_000) * 60_000;
        let e = want.entry((customer, start)).or_insert((0, 0, 0));
        e.0 += 1;
        e.1 += cents;
        e.2 = e.2.max(cents);
    }
    let rows: Vec<(String, i64, i64, i64, i64, bool)> = sqlx::query_as(
        "SELECT customer, window_start, orders, revenue_cents, largest_cents, closed FROM revenue_per_minute",
    )
    .fetch_all(&pool)
    .await?;
    let closed = rows.iter().filter(|r| r.5).count();
    let got: BTreeMap<(String, i64), (i64, i64, i64)> = rows
        .into_iter()
        .map(|(c, s, n, r, l, _)| ((c, s), (n, r, l)))
        .collect();
    let wrong = want.iter().filter(|(k, v)| got.get(*k) != Some(*v)).count()
        + got.keys().filter(|k| !want.contains_key(*k)).count();
    println!(
        "windowed_revenue: {} orders, {} counted in {} windows ({} closed), {} late orders in weir_dead_letters",
        orders,
        orders - dead.len() as u64,
        got.len(),
        closed,
        dead.len()
    );
    if wrong > 0 || late_missing > 0 {
        bail!("{wrong} windows differ from the recomputation; {late_missing} late orders were counted");
    }
    // Only the deliberately late orders are dead letters, and the watermark has
    // closed windows (the stream spans far more than the allowed lateness).
    let late_orders = (0..orders).filter(|i| i % 1000 == 999).count();
    if dead.len() != late_orders || closed == 0 {
        bail!(
            "{} dead letters for {late_orders} late orders; {closed} windows closed",
            dead.len()
        );
    }
    println!("windowed_revenue: every window exact, every late order dead-lettered");
    Ok(())
}
