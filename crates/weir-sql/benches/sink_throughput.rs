//! Sink throughput against a ceiling measured in the same run.
//!
//! - PostgreSQL (127.0.0.1:5432, db `test`): one `COPY … FROM STDIN` of all rows in one
//!   transaction (the ceiling) vs weir's `TableSink` + `OffsetStore::advance`
//!   committing the same rows in transactions of `WEIR_BENCH_BATCH` rows (default 5000).
//! - SQLite (WAL file): a raw prepared single-row `INSERT` loop in one transaction (the
//!   baseline) vs weir's sink + offsets in batches.
//!
//! `WEIR_BENCH_ROWS` sets the rows per iteration (default 1,000,000 for PostgreSQL,
//! 200,000 for SQLite); `WEIR_BENCH_SYNC_COMMIT=off` runs PostgreSQL with
//! `synchronous_commit = off` (each batch commit otherwise waits for a WAL fsync, which
//! bounds small batches: ~5 ms per commit on the CI disk). The ratio weir / ceiling (by mean time per iteration) is
//! printed at the end of each group. Run: `cargo bench -p weir-sql --bench
//! sink_throughput`. PostgreSQL must be up (`scripts/provision`).

// Benchmark code: a setup failure aborts the run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::AssertSqlSafe;
use weir_core::TopicPartition;
use weir_sql::{impl_row, OffsetStore, TableName, TableSink};

struct Ev {
    id: i64,
    part: i32,
    off: i64,
    payload: String,
}
impl_row!(Ev {
    id,
    part,
    off,
    payload
});

fn rows(n: usize) -> Vec<Ev> {
    (0..n as i64)
        .map(|i| Ev {
            id: i,
            part: (i % 8) as i32,
            off: i,
            payload: format!("payload-{i:010}-abcdefghijklmnopqrstuvwxyz"),
        })
        .collect()
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

static MEANS: Mutex<Vec<(String, Duration)>> = Mutex::new(Vec::new());

fn record(name: &str, total: Duration, iters: u64) {
    if let Ok(mut m) = MEANS.lock() {
        m.push((name.to_owned(), total / iters.max(1) as u32));
    }
}

fn mean(name: &str) -> Option<Duration> {
    let m = MEANS.lock().ok()?;
    let v: Vec<Duration> = m
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, d)| *d)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<Duration>() / v.len() as u32)
}

fn report(group: &str, ceiling: &str, weir: &str, n: usize) {
    if let (Some(c), Some(w)) = (mean(ceiling), mean(weir)) {
        let rc = n as f64 / c.as_secs_f64();
        let rw = n as f64 / w.as_secs_f64();
        println!(
            "{group}: {ceiling} {rc:.0} rec/s, {weir} {rw:.0} rec/s, ratio {:.2} ({n} rows per iteration)",
            rw / rc
        );
    }
}

async fn pg_setup(rt_schema: &str) -> anyhow::Result<PgPool> {
    let url = "postgres://postgres@127.0.0.1:5432/test";
    let admin = PgPool::connect(url).await.map_err(|e| {
        anyhow::anyhow!("PostgreSQL at 127.0.0.1:5432 unreachable: {e}; run scripts/provision")
    })?;
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{rt_schema}\" CASCADE"
    )))
    .execute(&admin)
    .await?;
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA \"{rt_schema}\"")))
        .execute(&admin)
        .await?;
    // WEIR_BENCH_SYNC_COMMIT=off measures without waiting for the WAL flush at each
    // commit (still exactly-once: a database crash loses rows and offsets together).
    let sync = std::env::var("WEIR_BENCH_SYNC_COMMIT").unwrap_or_else(|_| "on".to_owned());
    let opts = PgConnectOptions::from_str(url)?.options([
        ("search_path", rt_schema),
        ("synchronous_commit", sync.as_str()),
    ]);
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(opts)
        .await?;
    sqlx::query("CREATE TABLE ev (id BIGINT NOT NULL, part INTEGER NOT NULL, off BIGINT NOT NULL, payload TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    Ok(pool)
}

fn copy_text(rows: &[Ev]) -> Vec<u8> {
    use std::io::Write;
    let mut buf = Vec::with_capacity(rows.len() * 64);
    for r in rows {
        // payloads need no escaping here
        let _ = writeln!(buf, "{}\t{}\t{}\t{}", r.id, r.part, r.off, r.payload);
    }
    buf
}

async fn weir_batches<DB: weir_sql::Dialect>(
    pool: &sqlx::Pool<DB>,
    sink: &TableSink<DB, Ev>,
    store: &OffsetStore<DB>,
    data: &[Ev],
    batch: usize,
) -> anyhow::Result<()> {
    let tp = TopicPartition::new("bench", 0);
    let claim = store
        .claim(pool, std::slice::from_ref(&tp), "bench")
        .await?;
    let epoch = claim[&tp].epoch;
    let mut expected = claim[&tp].next_offset;
    for chunk in data.chunks(batch) {
        let mut tx = pool.begin().await?;
        sink.write_rows(&mut tx, chunk).await?;
        let next = chunk.last().map_or(0, |r| r.off + 1);
        if !store.advance(&mut tx, &tp, epoch, expected, next).await? {
            anyhow::bail!("fenced in a benchmark");
        }
        tx.commit().await?;
        expected = Some(next);
    }
    Ok(())
}

fn postgres(c: &mut Criterion) {
    let n = env_usize("WEIR_BENCH_ROWS", 1_000_000);
    let batch = env_usize("WEIR_BENCH_BATCH", 5000);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    let pool = match rt.block_on(pg_setup("weir_bench_sink")) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let data = rows(n);
    let sink = TableSink::<sqlx::Postgres, Ev>::new(
        TableName::new("ev").unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("postgres");
    g.sample_size(10)
        .throughput(Throughput::Elements(n as u64))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("copy_ceiling", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                rt.block_on(async {
                    sqlx::query("TRUNCATE ev")
                        .execute(&pool)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    let start = Instant::now();
                    let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
                    let buf = copy_text(&data);
                    let mut copy = tx
                        .copy_in_raw("COPY ev (id, part, off, payload) FROM STDIN")
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    copy.send(buf).await.unwrap_or_else(|e| panic!("{e}"));
                    copy.finish().await.unwrap_or_else(|e| panic!("{e}"));
                    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
                    total += start.elapsed();
                });
            }
            record("copy_ceiling", total, iters);
            total
        })
    });
    let mut round = 0_u32;
    g.bench_function(format!("weir_sink_batches_of_{batch}"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let store = OffsetStore::<sqlx::Postgres>::new(&format!("bench-{round}"))
                    .unwrap_or_else(|e| panic!("{e}"));
                rt.block_on(async {
                    store.migrate(&pool).await.unwrap_or_else(|e| panic!("{e}"));
                    sqlx::query("TRUNCATE ev")
                        .execute(&pool)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    let start = Instant::now();
                    weir_batches(&pool, &sink, &store, &data, batch)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    total += start.elapsed();
                });
            }
            record("weir_sink", total, iters);
            total
        })
    });
    g.finish();
    report("postgres", "copy_ceiling", "weir_sink", n);
}

async fn sqlite_setup(path: &std::path::Path) -> anyhow::Result<SqlitePool> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await?;
    sqlx::query("CREATE TABLE ev (id INTEGER NOT NULL, part INTEGER NOT NULL, off INTEGER NOT NULL, payload TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    Ok(pool)
}

fn sqlite(c: &mut Criterion) {
    let n = env_usize("WEIR_BENCH_ROWS", 200_000);
    let batch = env_usize("WEIR_BENCH_BATCH", 5000);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pool = rt
        .block_on(sqlite_setup(&dir.path().join("bench.sqlite")))
        .unwrap_or_else(|e| panic!("{e}"));
    let data = rows(n);
    let sink =
        TableSink::<sqlx::Sqlite, Ev>::new(TableName::new("ev").unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("sqlite");
    g.sample_size(10)
        .throughput(Throughput::Elements(n as u64))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("prepared_insert_loop_one_txn", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                rt.block_on(async {
                    sqlx::query("DELETE FROM ev")
                        .execute(&pool)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    let start = Instant::now();
                    let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
                    for r in &data {
                        sqlx::query(
                            "INSERT INTO ev (id, part, off, payload) VALUES (?1, ?2, ?3, ?4)",
                        )
                        .bind(r.id)
                        .bind(r.part)
                        .bind(r.off)
                        .bind(&r.payload)
                        .execute(&mut *tx)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    }
                    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
                    total += start.elapsed();
                });
            }
            record("prepared_loop", total, iters);
            total
        })
    });
    let mut round = 0_u32;
    g.bench_function(format!("weir_sink_batches_of_{batch}"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let store = OffsetStore::<sqlx::Sqlite>::new(&format!("bench-{round}"))
                    .unwrap_or_else(|e| panic!("{e}"));
                rt.block_on(async {
                    store.migrate(&pool).await.unwrap_or_else(|e| panic!("{e}"));
                    sqlx::query("DELETE FROM ev")
                        .execute(&pool)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    let start = Instant::now();
                    weir_batches(&pool, &sink, &store, &data, batch)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    total += start.elapsed();
                });
            }
            record("weir_sink_sqlite", total, iters);
            total
        })
    });
    g.finish();
    report("sqlite", "prepared_loop", "weir_sink_sqlite", n);
}

criterion_group!(benches, postgres, sqlite);
criterion_main!(benches);
