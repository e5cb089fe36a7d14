//! Sinks on PostgreSQL, SQLite and MariaDB: upsert on a key (last value wins, within a
//! batch and across batches), fan-out to two tables in one transaction, and a user's
//! own `TransactionalSink`; `#[derive(Row)]` (rename, skip, `Option`, a record's
//! `Arc<str>` topic) on all three.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{committed, ends, pg_pool, rows3, scalar, sqlite_url, Db, Input};
use weir_pipeline::sink::{custom, fan_out, Table};
use weir_pipeline::{Database, Job, OpError};

#[derive(weir_sql::Row)]
struct Total {
    id: i64,
    #[weir(rename = "ver")]
    version: i64,
    label: String,
    /// the record's topic, carried without a copy
    topic: std::sync::Arc<str>,
    /// NULL for even versions
    note: Option<String>,
    #[weir(skip)]
    _scratch: Vec<u32>,
}

struct OrderRow {
    order_id: i64,
    lines: i64,
}
weir_sql::impl_row!(OrderRow { order_id, lines });

struct LineRow {
    order_id: i64,
    n: i64,
    sku: String,
}
weir_sql::impl_row!(LineRow { order_id, n, sku });

const IDS: i64 = 10;
const VERSIONS: i64 = 5;

/// `id:version` records, every id `VERSIONS` times, interleaved; then `order:lines`.
async fn fill(input: Input) -> Result<(Input, String, String)> {
    let updates = input.topic("updates", 1)?;
    let values: Vec<_> = (0..VERSIONS)
        .flat_map(|v| (0..IDS).map(move |id| (None, format!("{id}:{v}").into_bytes())))
        .collect();
    input.produce(&updates, 0, &values).await?;
    let orders = input.topic("orders", 1)?;
    let values: Vec<_> = (0..20)
        .map(|o| (None, format!("{o}:{}", o % 4).into_bytes()))
        .collect();
    input.produce(&orders, 0, &values).await?;
    Ok((input, updates, orders))
}

fn pair(r: weir_core::Record) -> Result<(i64, i64), OpError> {
    let text =
        std::str::from_utf8(r.value.as_deref().unwrap_or_default()).map_err(OpError::permanent)?;
    let (a, b) = text
        .split_once(':')
        .ok_or_else(|| OpError::permanent("no ':'"))?;
    Ok((
        a.parse().map_err(OpError::permanent)?,
        b.parse().map_err(OpError::permanent)?,
    ))
}

async fn sinks_on<DB: Database>(pool: sqlx::Pool<DB>, db: Db, check_url: String) -> Result<()> {
    sinks_from(Input::log()?, pool, db, check_url).await
}

async fn sinks_from<DB: Database>(
    input: Input,
    pool: sqlx::Pool<DB>,
    db: Db,
    check_url: String,
) -> Result<()> {
    common::logs();
    let (input, updates, orders) = fill(input).await?;

    // upsert: batches of 7 hold the same id twice at times; the last version wins
    let summary = Job::new("upserts")
        .source(input.url(), [updates.as_str()])
        .batch_records(7)
        .linger(Duration::from_millis(5))
        .records()
        .try_map(pair)
        .map_with(|(id, version), r| Total {
            id,
            version,
            label: format!("v{version}"),
            topic: r.topic.clone(),
            note: (version % 2 == 1).then(|| format!("odd {version}")),
            _scratch: vec![1, 2, 3],
        })
        .sink(Table::<DB>::upsert("totals", ["id"]))
        .pool(pool.clone())
        .run_until(committed(
            check_url.clone(),
            "upserts".into(),
            "weir_offsets".into(),
            ends(&updates, &[IDS * VERSIONS]),
            Duration::from_secs(60),
        ))
        .await?;
    let got = rows3(&db, "SELECT id, ver, label FROM totals ORDER BY id").await?;
    let want: Vec<_> = (0..IDS)
        .map(|id| (id, VERSIONS - 1, format!("v{}", VERSIONS - 1)))
        .collect();
    assert_eq!(got, want, "one row per id, the last version");
    // derive(Row): the topic column, NULL where the note was None (last version 4)
    let q = format!("SELECT COUNT(*) FROM totals WHERE topic = '{updates}' AND note IS NULL");
    assert_eq!(scalar(&db, &q).await?, IDS);
    assert!(
        scalar(&db, "SELECT COUNT(_scratch) FROM totals")
            .await
            .is_err(),
        "a skipped field has no column"
    );
    assert_eq!(summary.records, (IDS * VERSIONS) as u64);

    // fan-out: `orders` and `order_lines` from one record, one transaction
    Job::new("fanout")
        .source(input.url(), [orders.as_str()])
        .batch_records(6)
        .records()
        .try_map(pair)
        .sink(
            fan_out::<DB, (i64, i64)>()
                .to(Table::<DB>::upsert("orders", ["order_id"]), |(o, n)| {
                    Some(OrderRow {
                        order_id: *o,
                        lines: *n,
                    })
                })
                .to(Table::<DB>::insert("order_lines"), |(o, n)| {
                    (0..*n)
                        .map(|k| LineRow {
                            order_id: *o,
                            n: k,
                            sku: format!("sku-{o}-{k}"),
                        })
                        .collect::<Vec<_>>()
                }),
        )
        .pool(pool.clone())
        .run_until(committed(
            check_url.clone(),
            "fanout".into(),
            "weir_offsets".into(),
            ends(&orders, &[20]),
            Duration::from_secs(60),
        ))
        .await?;
    assert_eq!(scalar(&db, "SELECT COUNT(*) FROM orders").await?, 20);
    let lines: i64 = (0..20).map(|o| o % 4).sum();
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM order_lines").await?,
        lines
    );
    let per_order = rows3(
        &db,
        "SELECT o.order_id, COUNT(l.n), CAST(MAX(o.lines) AS CHAR(10)) FROM orders o LEFT JOIN order_lines l ON l.order_id = o.order_id GROUP BY o.order_id ORDER BY o.order_id",
    )
    .await?;
    for (o, n, _) in per_order {
        assert_eq!(n, o % 4, "order {o} has its lines");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_sqlite() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(dir.path());
    let pool = <sqlx::Sqlite as Database>::open(&url, 2).await?;
    let db = Db::connect(&url).await?;
    sinks_on(pool, db, url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_postgres() -> Result<()> {
    let (pool, schema) = pg_pool().await?;
    let db = Db::Postgres(pool.clone());
    let url = format!("{}?options=-csearch_path%3D{schema}", common::PG_URL);
    sinks_on(pool, db, url).await
}

/// The same sinks with Kafka as the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_postgres_kafka() -> Result<()> {
    let (pool, schema) = pg_pool().await?;
    let db = Db::Postgres(pool.clone());
    let url = format!("{}?options=-csearch_path%3D{schema}", common::PG_URL);
    sinks_from(Input::kafka()?, pool, db, url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_mariadb() -> Result<()> {
    let url = common::mariadb_url().await?;
    let pool = <sqlx::MySql as Database>::open(&url, 2).await?;
    let db = Db::connect(&url).await?;
    sinks_on(pool, db, url).await
}

/// A user's own `TransactionalSink` runs in the job's transaction: a running total
/// that is exact because it commits with the offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_transactional_sink() -> Result<()> {
    struct Sum;
    #[weir_sql::async_trait]
    impl weir_sql::TransactionalSink<sqlx::Sqlite, i64> for Sum {
        fn name(&self) -> &str {
            "sum"
        }
        async fn write(
            &self,
            tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
            items: &[weir_sql::Item<i64>],
        ) -> weir_sql::Result<()> {
            let n: i64 = items.iter().map(|i| i.value).sum();
            sqlx::query("UPDATE sum SET total = total + ?, batches = batches + 1")
                .bind(n)
                .execute(&mut **tx)
                .await
                .map_err(|e| weir_sql::Error::db("sum", e))?;
            Ok(())
        }
    }
    let (input, updates, _) = fill(Input::log()?).await?;
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(dir.path());
    let pool = <sqlx::Sqlite as Database>::open(&url, 2).await?;
    sqlx::query("CREATE TABLE sum (total INTEGER NOT NULL, batches INTEGER NOT NULL)")
        .execute(&pool)
        .await?;
    sqlx::query("INSERT INTO sum VALUES (0, 0)")
        .execute(&pool)
        .await?;
    let summary = Job::new("sum")
        .source(input.url(), [updates.as_str()])
        .batch_records(9)
        .records()
        .try_map(pair)
        .map(|(id, _)| id)
        .sink(custom(Sum))
        .pool(pool.clone())
        .run_until(committed(
            url.clone(),
            "sum".into(),
            "weir_offsets".into(),
            ends(&updates, &[IDS * VERSIONS]),
            Duration::from_secs(60),
        ))
        .await?;
    let (total, batches): (i64, i64) = sqlx::query_as("SELECT total, batches FROM sum")
        .fetch_one(&pool)
        .await?;
    assert_eq!(total, VERSIONS * (0..IDS).sum::<i64>());
    assert_eq!(
        batches as u64, summary.commits,
        "one write per committed batch"
    );
    Ok(())
}
