//! Keyed aggregates and event-time windows as rows, updated in the offsets'
//! transaction: exact totals against a recomputation from the input, with the
//! aggregation key crossing partitions and two instances of the job updating the same
//! rows at once (SQLite, PostgreSQL, MariaDB); windows with late records under each
//! policy, the `closed` flag, a restart in the middle of a window, an idle partition;
//! a changed definition refused; a panicking key function dead-lettered.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use common::{committed, ends, eventually, pg_pool, scalar, sqlite_url, Db, Input};
use weir_pipeline::agg::{self, Late, Window};
use weir_pipeline::sink::Table;
use weir_pipeline::{Database, Job, OpError};

#[derive(Clone, Debug)]
struct Order {
    customer: String,
    cents: i64,
    ts: i64,
}

fn order(r: weir_core::Record) -> Result<Order, OpError> {
    let text =
        std::str::from_utf8(r.value.as_deref().unwrap_or_default()).map_err(OpError::permanent)?;
    let mut it = text.split(':');
    let (Some(c), Some(a), Some(t)) = (it.next(), it.next(), it.next()) else {
        return Err(OpError::permanent(format!(
            "not customer:cents:ts: {text:?}"
        )));
    };
    Ok(Order {
        customer: c.to_owned(),
        cents: a.parse().map_err(OpError::permanent)?,
        ts: t.parse().map_err(OpError::permanent)?,
    })
}

fn line(o: &Order) -> (Option<String>, Vec<u8>) {
    (
        None,
        format!("{}:{}:{}", o.customer, o.cents, o.ts).into_bytes(),
    )
}

const PARTITIONS: i32 = 4;
const PER_PARTITION: i64 = 300;

/// Orders over 4 partitions whose customers (13 of them) cross the partitions, with
/// amounts of both signs.
fn orders(partition: i32, from: i64, to: i64) -> Vec<Order> {
    (from..to)
        .map(|i| {
            let n = i * PARTITIONS as i64 + partition as i64;
            Order {
                customer: format!("c{}", (n * 7) % 13),
                cents: (n * 37) % 1000 - 200,
                ts: n,
            }
        })
        .collect()
}

/// customer -> (count, sum, min, max), recomputed from the input.
fn expected(all: &[Order]) -> BTreeMap<String, (i64, i64, i64, i64)> {
    let mut m: BTreeMap<String, (i64, i64, i64, i64)> = BTreeMap::new();
    for o in all {
        let e = m
            .entry(o.customer.clone())
            .or_insert((0, 0, i64::MAX, i64::MIN));
        e.0 += 1;
        e.1 += o.cents;
        e.2 = e.2.min(o.cents);
        e.3 = e.3.max(o.cents);
    }
    m
}

async fn totals(db: &Db, table: &str) -> Result<BTreeMap<String, (i64, i64, i64, i64)>> {
    let sql = format!(
        "SELECT customer, n, cents, lo, hi, avg_sum, avg_count FROM {table} ORDER BY customer"
    );
    let q = sqlx::AssertSqlSafe(sql);
    type R = (String, i64, i64, i64, i64, i64, i64);
    let rows: Vec<R> = match db {
        Db::Postgres(p) => sqlx::query_as(q).fetch_all(p).await?,
        Db::MySql(p) => sqlx::query_as(q).fetch_all(p).await?,
        Db::Sqlite(p) => sqlx::query_as(q).fetch_all(p).await?,
    };
    let mut m = BTreeMap::new();
    for (c, n, s, lo, hi, avg_sum, avg_count) in rows {
        assert_eq!((avg_sum, avg_count), (s, n), "avg columns of {c}");
        m.insert(c, (n, s, lo, hi));
    }
    Ok(m)
}

fn aggregates() -> agg::Aggregates<Order> {
    agg::count("n")
        .and(agg::sum("cents", |o: &Order| o.cents))
        .and(agg::min("lo", |o: &Order| o.cents))
        .and(agg::max("hi", |o: &Order| o.cents))
        .and(agg::avg("avg", |o: &Order| o.cents))
}

fn running_totals<DB: Database>(
    input: &Input,
    topic: &str,
    pool: sqlx::Pool<DB>,
) -> weir_pipeline::Ready<DB, weir_pipeline::Keyed<String, Order>, agg::AggregateSink<DB, Order>> {
    Job::new("totals")
        .source(input.url(), [topic])
        .batch_records(40)
        .linger(Duration::from_millis(5))
        .records()
        .try_map(order)
        .key_by(|o: &Order| o.customer.clone())
        .sink(Table::<DB>::aggregate("totals", ["customer"], aggregates()))
        .pool(pool)
}

/// Two phases (the job stops in between), and in the second two instances of the job
/// in one consumer group at once: every total exact.
async fn exact_totals<DB: Database>(pool: sqlx::Pool<DB>, db: Db, url: String) -> Result<()> {
    common::logs();
    let input = Input::log()?;
    let topic = input.topic("orders", PARTITIONS)?;
    let half = PER_PARTITION / 2;
    let mut all = Vec::new();
    for p in 0..PARTITIONS {
        let os = orders(p, 0, half);
        input
            .produce(&topic, p, &os.iter().map(line).collect::<Vec<_>>())
            .await?;
        all.extend(os);
    }
    let s = running_totals(&input, &topic, pool.clone())
        .run_until(committed(
            url.clone(),
            "totals".into(),
            "weir_offsets".into(),
            ends(&topic, &[half; PARTITIONS as usize]),
            Duration::from_secs(60),
        ))
        .await?;
    assert_eq!(s.records, (half * PARTITIONS as i64) as u64);
    assert_eq!(
        totals(&db, "totals").await?,
        expected(&all),
        "after phase 1"
    );

    for p in 0..PARTITIONS {
        let os = orders(p, half, PER_PARTITION);
        input
            .produce(&topic, p, &os.iter().map(line).collect::<Vec<_>>())
            .await?;
        all.extend(os);
    }
    let done = || {
        committed(
            url.clone(),
            "totals".into(),
            "weir_offsets".into(),
            ends(&topic, &[PER_PARTITION; PARTITIONS as usize]),
            Duration::from_secs(90),
        )
    };
    let a = tokio::spawn(running_totals(&input, &topic, pool.clone()).run_until(done()));
    let b = tokio::spawn(running_totals(&input, &topic, pool.clone()).run_until(done()));
    let (a, b) = (a.await??, b.await??);
    assert_eq!(
        a.records + b.records,
        (half * PARTITIONS as i64) as u64,
        "the second half, shared by the two instances ({} + {})",
        a.records,
        b.records
    );
    let want = expected(&all);
    let got = totals(&db, "totals").await?;
    assert_eq!(got, want, "after phase 2 (two instances)");
    println!(
        "exact totals: {} customers over {} records; instances read {} and {} records, {} and {} retries",
        got.len(),
        all.len(),
        a.records,
        b.records,
        a.retries,
        b.retries
    );

    // The same table under another definition is refused, naming both.
    let err = Job::new("totals-v2")
        .source(input.url(), [topic.as_str()])
        .records()
        .try_map(order)
        .key_by(|o: &Order| o.customer.clone())
        .sink(Table::<DB>::aggregate(
            "totals",
            ["customer"],
            agg::count("n").and(agg::sum("cents", |o: &Order| o.cents)),
        ))
        .pool(pool.clone())
        .run_until(std::future::pending())
        .await
        .expect_err("a changed definition must be refused");
    let msg = err.to_string();
    assert!(msg.contains("holds state defined as"), "{msg}");
    assert!(msg.contains("write to a new table"), "{msg}");
    assert_eq!(got, totals(&db, "totals").await?, "nothing changed");

    // start_fresh(): the table is emptied and counts from the job's offsets on (the
    // new job name has none: it reads the whole log again, once).
    Job::new("totals-v2")
        .source(input.url(), [topic.as_str()])
        .records()
        .try_map(order)
        .key_by(|o: &Order| o.customer.clone())
        .sink(
            Table::<DB>::aggregate(
                "totals",
                ["customer"],
                agg::count("n").and(agg::sum("cents", |o: &Order| o.cents)),
            )
            .start_fresh(),
        )
        .pool(pool.clone())
        .run_until(committed(
            url.clone(),
            "totals-v2".into(),
            "weir_offsets".into(),
            ends(&topic, &[PER_PARTITION; PARTITIONS as usize]),
            Duration::from_secs(60),
        ))
        .await?;
    let q = sqlx::AssertSqlSafe("SELECT n FROM totals".to_owned());
    let ns: Vec<i64> = match &db {
        Db::Postgres(p) => sqlx::query_scalar(q).fetch_all(p).await?,
        Db::MySql(p) => sqlx::query_scalar(q).fetch_all(p).await?,
        Db::Sqlite(p) => sqlx::query_scalar(q).fetch_all(p).await?,
    };
    let n: i64 = ns.iter().sum();
    assert_eq!(
        n,
        all.len() as i64,
        "one count per record under the new definition"
    );

    // The same definition under a third job name: the table belongs to totals-v2.
    let err = Job::new("totals-v3")
        .source(input.url(), [topic.as_str()])
        .records()
        .try_map(order)
        .key_by(|o: &Order| o.customer.clone())
        .sink(Table::<DB>::aggregate(
            "totals",
            ["customer"],
            agg::count("n").and(agg::sum("cents", |o: &Order| o.cents)),
        ))
        .pool(pool.clone())
        .run_until(std::future::pending())
        .await
        .expect_err("another job's table must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains("is maintained by job `totals-v2`, not `totals-v3`"),
        "{msg}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_totals_sqlite() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(dir.path());
    let pool = <sqlx::Sqlite as Database>::open(&url, 2).await?;
    let db = Db::connect(&url).await?;
    exact_totals(pool, db, url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_totals_postgres() -> Result<()> {
    let (pool, schema) = pg_pool().await?;
    let db = Db::Postgres(pool.clone());
    let url = format!("{}?options=-csearch_path%3D{schema}", common::PG_URL);
    exact_totals(pool, db, url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_totals_mariadb() -> Result<()> {
    let url = common::mariadb_url().await?;
    let pool = <sqlx::MySql as Database>::open(&url, 4).await?;
    let db = Db::connect(&url).await?;
    exact_totals(pool, db, url).await
}

/// A windowed job: per customer and minute of event time, count and sum.
fn windowed<DB: Database>(
    input: &Input,
    topic: &str,
    pool: sqlx::Pool<DB>,
    table: &str,
    late: Late,
    idle: Duration,
) -> weir_pipeline::Ready<DB, weir_pipeline::Keyed<String, Order>, agg::AggregateSink<DB, Order>> {
    Job::new(format!("win-{table}"))
        .source(input.url(), [topic])
        .batch_records(100)
        .linger(Duration::from_millis(5))
        .records()
        .try_map(order)
        .key_by(|o: &Order| o.customer.clone())
        .sink(
            Table::<DB>::aggregate(
                table,
                ["customer"],
                agg::count("n").and(agg::sum("cents", |o: &Order| o.cents)),
            )
            .window(
                Window::tumbling(Duration::from_secs(60))
                    .event_time(|o: &Order| o.ts)
                    .allowed_lateness(Duration::from_secs(5))
                    .on_late(late)
                    .idle_timeout(idle),
            ),
        )
        .pool(pool)
}

/// (partition, offset, error) of the job's dead letters.
async fn dead_letters(db: &Db, job: &str) -> Result<Vec<(i64, i64, String)>> {
    let (q, big) = match db {
        Db::MySql(_) => ('`', "SIGNED"),
        _ => ('"', "BIGINT"),
    };
    let sql = format!(
        "SELECT CAST({q}partition{q} AS {big}), {q}offset{q}, error FROM weir_dead_letters WHERE job = '{job}' ORDER BY 1, 2"
    );
    common::rows3(db, &sql).await
}

fn o(customer: &str, cents: i64, ts: i64) -> Order {
    Order {
        customer: customer.into(),
        cents,
        ts,
    }
}

/// (customer, window_start, n, cents, closed)
async fn windows(db: &Db, table: &str) -> Result<Vec<(String, i64, i64, i64, bool)>> {
    let sql = format!(
        "SELECT customer, window_start, n, cents, CASE WHEN closed THEN 1 ELSE 0 END FROM {table} ORDER BY customer, window_start"
    );
    let q = sqlx::AssertSqlSafe(sql);
    type R = (String, i64, i64, i64, i32);
    let rows: Vec<R> = match db {
        Db::Postgres(p) => sqlx::query_as(q).fetch_all(p).await?,
        Db::MySql(p) => sqlx::query_as(q).fetch_all(p).await?,
        Db::Sqlite(p) => sqlx::query_as(q).fetch_all(p).await?,
    };
    Ok(rows
        .into_iter()
        .map(|(c, s, n, a, closed)| (c, s, n, a, closed != 0))
        .collect())
}

async fn windows_on<DB: Database>(pool: sqlx::Pool<DB>, db: Db, url: String) -> Result<()> {
    common::logs();
    for late in [Late::DeadLetter, Late::Drop, Late::Apply] {
        let input = Input::log()?;
        let topic = input.topic("clicks", 2)?;
        let table = format!("w_{}", format!("{late:?}").to_lowercase());
        let job = format!("win-{table}");
        // Phase 1, out of order within the allowed lateness: p0 reaches 65 s, p1 70 s.
        let p0 = [
            o("a", 1, 1_000),
            o("a", 2, 59_000),
            o("b", 4, 65_000),
            o("a", 8, 62_000),
        ];
        let p1 = [o("a", 16, 10_000), o("a", 64, 40_000), o("b", 32, 70_000)];
        input
            .produce(&topic, 0, &p0.iter().map(line).collect::<Vec<_>>())
            .await?;
        input
            .produce(&topic, 1, &p1.iter().map(line).collect::<Vec<_>>())
            .await?;
        windowed(
            &input,
            &topic,
            pool.clone(),
            &table,
            late,
            Duration::from_secs(60),
        )
        .run_until(committed(
            url.clone(),
            job.clone(),
            "weir_offsets".into(),
            ends(&topic, &[4, 3]),
            Duration::from_secs(60),
        ))
        .await?;
        // watermarks 60 s and 65 s: the global one (60 s) closes [0, 60 s) exactly
        let got = windows(&db, &table).await?;
        assert_eq!(
            got,
            [
                ("a".into(), 0, 4, 1 + 2 + 16 + 64, true),
                ("a".into(), 60_000, 1, 8, false),
                ("b".into(), 60_000, 2, 4 + 32, false),
            ],
            "{late:?} phase 1"
        );

        // Phase 2, after a restart: a record for the closed window (late) and one for
        // the open window, which stays open (watermarks 60 s / 66 s).
        input
            .produce(&topic, 0, &[line(&o("a", 128, 30_000))])
            .await?;
        input
            .produce(&topic, 1, &[line(&o("b", 256, 71_000))])
            .await?;
        let s = windowed(
            &input,
            &topic,
            pool.clone(),
            &table,
            late,
            Duration::from_secs(60),
        )
        .run_until(committed(
            url.clone(),
            job.clone(),
            "weir_offsets".into(),
            ends(&topic, &[5, 4]),
            Duration::from_secs(60),
        ))
        .await?;
        let got = windows(&db, &table).await?;
        let dead = scalar(
            &db,
            &format!("SELECT COUNT(*) FROM weir_dead_letters WHERE job = '{job}'"),
        )
        .await?;
        let first = if late == Late::Apply {
            (5, 1 + 2 + 16 + 64 + 128)
        } else {
            (4, 1 + 2 + 16 + 64)
        };
        assert_eq!(
            got,
            [
                ("a".into(), 0, first.0, first.1, true),
                ("a".into(), 60_000, 1, 8, false),
                ("b".into(), 60_000, 3, 4 + 32 + 256, false),
            ],
            "{late:?} phase 2"
        );
        match late {
            Late::DeadLetter => {
                assert_eq!((dead, s.dropped), (1, 0));
                let reason = dead_letters(&db, &job).await?;
                assert_eq!(
                    (reason[0].0, reason[0].1),
                    (0, 4),
                    "the late record's coordinates"
                );
                assert!(
                    reason[0].2.contains("late record: window [0, 60000)"),
                    "{}",
                    reason[0].2
                );
            }
            Late::Drop => assert_eq!((dead, s.dropped), (0, 1)),
            Late::Apply => assert_eq!((dead, s.dropped), (0, 0)),
        }

        // Phase 3: p1 moves to 200 s, p0 stays behind at 60 s: nothing more closes
        // (p0 holds the windows open) until p0 catches up.
        input
            .produce(&topic, 1, &[line(&o("b", 1, 200_000))])
            .await?;
        windowed(
            &input,
            &topic,
            pool.clone(),
            &table,
            late,
            Duration::from_secs(60),
        )
        .run_until(committed(
            url.clone(),
            job.clone(),
            "weir_offsets".into(),
            ends(&topic, &[5, 5]),
            Duration::from_secs(60),
        ))
        .await?;
        let closed: Vec<bool> = windows(&db, &table).await?.iter().map(|w| w.4).collect();
        assert_eq!(
            closed,
            [true, false, false, false],
            "{late:?} phase 3: p0 holds [60 s, 120 s)"
        );
        input
            .produce(&topic, 0, &[line(&o("a", 1, 190_000))])
            .await?;
        windowed(
            &input,
            &topic,
            pool.clone(),
            &table,
            late,
            Duration::from_secs(60),
        )
        .run_until(committed(
            url.clone(),
            job.clone(),
            "weir_offsets".into(),
            ends(&topic, &[6, 5]),
            Duration::from_secs(60),
        ))
        .await?;
        let closed: Vec<(String, i64, bool)> = windows(&db, &table)
            .await?
            .into_iter()
            .map(|w| (w.0, w.1, w.4))
            .collect();
        assert_eq!(
            closed,
            [
                ("a".into(), 0, true),
                ("a".into(), 60_000, true),
                ("a".into(), 180_000, false),
                ("b".into(), 60_000, true),
                ("b".into(), 180_000, false),
            ],
            "{late:?} phase 3: global watermark 185 s"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_sqlite() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(dir.path());
    let pool = <sqlx::Sqlite as Database>::open(&url, 2).await?;
    let db = Db::connect(&url).await?;
    windows_on(pool, db, url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_postgres() -> Result<()> {
    let (pool, schema) = pg_pool().await?;
    let db = Db::Postgres(pool.clone());
    let url = format!("{}?options=-csearch_path%3D{schema}", common::PG_URL);
    windows_on(pool, db, url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_mariadb() -> Result<()> {
    let url = common::mariadb_url().await?;
    let pool = <sqlx::MySql as Database>::open(&url, 2).await?;
    let db = Db::connect(&url).await?;
    windows_on(pool, db, url).await
}

/// A partition that never gets a record holds the windows open only until it is
/// idle; then the others' watermark closes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_partition_stops_holding_windows() -> Result<()> {
    common::logs();
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(dir.path());
    let pool = <sqlx::Sqlite as Database>::open(&url, 2).await?;
    let db = Db::connect(&url).await?;
    let input = Input::log()?;
    let topic = input.topic("idle", 2)?;
    input
        .produce(
            &topic,
            0,
            &[line(&o("a", 1, 1_000)), line(&o("a", 1, 130_000))],
        )
        .await?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let job = tokio::spawn(
        windowed(
            &input,
            &topic,
            pool,
            "idle_w",
            Late::DeadLetter,
            Duration::from_secs(2),
        )
        .run_until(async move {
            let _ = rx.await;
        }),
    );
    // p1 is claimed (active) without a watermark: it holds [0, 60 s) open
    eventually("the first batch", Duration::from_secs(30), || async {
        Ok(windows(&db, "idle_w")
            .await
            .map(|w| w.len() == 2)
            .unwrap_or(false))
    })
    .await?;
    assert!(
        windows(&db, "idle_w").await?.iter().all(|w| !w.4),
        "nothing closed while p1 is active"
    );
    // after 2 s p1 is idle; the next commit of p0 closes what p0's watermark passed
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    input
        .produce(&topic, 0, &[line(&o("a", 1, 131_000))])
        .await?;
    eventually(
        "windows closed once p1 is idle",
        Duration::from_secs(30),
        || async {
            let w = windows(&db, "idle_w").await?;
            Ok(w.iter().map(|w| (w.1, w.4)).collect::<Vec<_>>() == [(0, true), (120_000, false)])
        },
    )
    .await?;
    let _ = tx.send(());
    job.await??;
    Ok(())
}

/// A key function that panics on one value dead-letters that record (with its
/// coordinates and the panic's message); the rest is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_key_function_is_a_dead_letter() -> Result<()> {
    common::logs();
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(dir.path());
    let pool = <sqlx::Sqlite as Database>::open(&url, 2).await?;
    let db = Db::connect(&url).await?;
    let input = Input::log()?;
    let topic = input.topic("keys", 1)?;
    let values: Vec<_> = ["a:1:0", "boom:2:0", "a:4:0"]
        .iter()
        .map(|v| (None, v.as_bytes().to_vec()))
        .collect();
    input.produce(&topic, 0, &values).await?;
    let s = Job::new("keys")
        .source(input.url(), [topic.as_str()])
        .records()
        .try_map(order)
        .key_by(|o: &Order| {
            assert!(o.customer != "boom", "no key for customer {}", o.customer);
            o.customer.clone()
        })
        .sink(Table::<sqlx::Sqlite>::aggregate(
            "key_totals",
            ["customer"],
            agg::sum("cents", |o: &Order| o.cents),
        ))
        .pool(pool)
        .run_until(committed(
            url.clone(),
            "keys".into(),
            "weir_offsets".into(),
            ends(&topic, &[3]),
            Duration::from_secs(30),
        ))
        .await?;
    assert_eq!((s.records, s.dead_letters), (3, 1));
    assert_eq!(
        scalar(&db, "SELECT cents FROM key_totals WHERE customer = 'a'").await?,
        5
    );
    let reason = dead_letters(&db, "keys").await?;
    assert_eq!((reason[0].0, reason[0].1), (0, 1));
    assert!(
        reason[0]
            .2
            .contains("key function panicked: no key for customer boom"),
        "{}",
        reason[0].2
    );
    Ok(())
}

#[test]
fn bad_aggregate_specs_fail_the_build() {
    let input = Input::log().unwrap();
    let err = Job::new("bad")
        .source(input.url(), ["t"])
        .database("sqlite::memory:")
        .records()
        .key_by(|r| (r.partition, r.offset))
        .sink(Table::<sqlx::Sqlite>::aggregate(
            "t",
            ["partition"],
            agg::count("n"),
        ))
        .build()
        .map(|_| ())
        .expect_err("two key parts, one column");
    let msg = err.to_string();
    assert!(
        msg.contains("sink aggregate `t`") && msg.contains("key_by key has 2 part(s)"),
        "{msg}"
    );
    let err = Job::new("bad")
        .source(input.url(), ["t"])
        .database("sqlite::memory:")
        .records()
        .key_by(|r| r.partition)
        .sink(
            Table::<sqlx::Sqlite>::aggregate("t", ["p"], agg::count("n")).window(
                Window::hopping(Duration::from_secs(1), Duration::from_secs(2))
                    .event_time(|r: &weir_core::Record| r.offset),
            ),
        )
        .build()
        .map(|_| ())
        .expect_err("slide above size");
    assert!(
        err.to_string()
            .contains("records between windows would be lost"),
        "{err}"
    );
    let err = Job::new("bad")
        .source(input.url(), ["t"])
        .database("sqlite::memory:")
        .records()
        .key_by(|r| r.partition)
        .sink(
            Table::<sqlx::Sqlite>::aggregate("t", ["p"], agg::count("n")).window(
                Window::tumbling(Duration::from_secs(60))
                    .event_time(|r: &weir_core::Record| r.offset)
                    .idle_timeout(Duration::from_secs(u64::MAX / 2)),
            ),
        )
        .build()
        .map(|_| ())
        .expect_err("an idle timeout the databases cannot add");
    assert!(
        err.to_string().contains("idle_timeout") && err.to_string().contains("30 days"),
        "{err}"
    );
}

/// MySQL/MariaDB's default collation would make `Alice`, `alice` and `ALICE` one row;
/// aggregate keys are compared as Rust compares them (binary collation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_variant_keys_stay_distinct_mariadb() -> Result<()> {
    common::logs();
    let url = common::mariadb_url().await?;
    let pool = <sqlx::MySql as Database>::open(&url, 2).await?;
    let db = Db::connect(&url).await?;
    let input = Input::log()?;
    let topic = input.topic("cases", 1)?;
    let table = weir_testkit::unique_name("case_totals").replace('-', "_");
    let values: Vec<_> = [
        "Alice:1:0",
        "alice:2:0",
        "ALICE:4:0",
        "alice:8:0",
        "Älice:16:0",
    ]
    .iter()
    .map(|v| (None, v.as_bytes().to_vec()))
    .collect();
    input.produce(&topic, 0, &values).await?;
    Job::new(table.as_str())
        .source(input.url(), [topic.as_str()])
        .records()
        .try_map(order)
        .key_by(|o: &Order| o.customer.clone())
        .sink(Table::<sqlx::MySql>::aggregate(
            table.as_str(),
            ["customer"],
            agg::sum("cents", |o: &Order| o.cents),
        ))
        .pool(pool)
        .run_until(committed(
            url.clone(),
            table.clone(),
            "weir_offsets".into(),
            ends(&topic, &[5]),
            Duration::from_secs(30),
        ))
        .await?;
    let rows = common::rows3(
        &db,
        &format!("SELECT cents, 0, customer FROM {table} ORDER BY cents"),
    )
    .await?;
    let got: Vec<(i64, &str)> = rows.iter().map(|(c, _, k)| (*c, k.as_str())).collect();
    assert_eq!(
        got,
        [(1, "Alice"), (4, "ALICE"), (10, "alice"), (16, "Älice")]
    );
    Ok(())
}

/// `record_time()`: windows by the records' own timestamps (the values carry none);
/// a record older than the watermark is late like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_time_windows_sqlite() -> Result<()> {
    common::logs();
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(dir.path());
    let pool = <sqlx::Sqlite as Database>::open(&url, 2).await?;
    let db = Db::connect(&url).await?;
    let input = Input::log()?;
    let topic = input.topic("stamped", 1)?;
    let Input::Log { log, .. } = &input else {
        unreachable!("an embedded log")
    };
    // (value cents, record timestamp in ms)
    let stamped = [
        (1, 1_000),
        (2, 61_000),
        (4, 62_000),
        (8, 5_000),
        (16, 119_999),
    ];
    let recs: Vec<weir_log::NewRecord> = stamped
        .iter()
        .map(|(cents, ts)| weir_log::NewRecord::value(format!("c:{cents}:0")).with_timestamp(*ts))
        .collect();
    log.append(&weir_core::TopicPartition::new(topic.as_str(), 0), &recs)?;
    let s = Job::new("stamped")
        .source(input.url(), [topic.as_str()])
        .records()
        .try_map(order)
        .key_by(|o: &Order| o.customer.clone())
        .sink(
            Table::<sqlx::Sqlite>::aggregate(
                "stamped",
                ["customer"],
                agg::count("n").and(agg::sum("cents", |o: &Order| o.cents)),
            )
            .window(Window::tumbling(Duration::from_secs(60)).record_time()),
        )
        .pool(pool)
        .run_until(committed(
            url.clone(),
            "stamped".into(),
            "weir_offsets".into(),
            ends(&topic, &[5]),
            Duration::from_secs(30),
        ))
        .await?;
    assert_eq!((s.records, s.dead_letters), (5, 1));
    assert_eq!(
        windows(&db, "stamped").await?,
        [
            ("c".to_owned(), 0, 1, 1, true),
            ("c".to_owned(), 60_000, 3, 22, false),
        ]
    );
    let dead = dead_letters(&db, "stamped").await?;
    assert_eq!(
        (dead[0].0, dead[0].1),
        (0, 3),
        "the record stamped 5 s: {dead:?}"
    );
    assert!(dead[0].2.contains("late"), "{}", dead[0].2);
    Ok(())
}
