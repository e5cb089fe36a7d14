//! General folds: a serde state per (partition, key), folded in offset order and
//! written in the offsets' transaction. Each state records the offsets it folded, so
//! the check sees every record applied exactly once and in order, across a restart,
//! on SQLite, PostgreSQL and MariaDB. A state that no longer deserializes stops the
//! job with the key named and nothing committed; a panicking fold function
//! dead-letters its record and keeps the state.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use common::{committed, ends, pg_pool, sqlite_url, Db, Input};
use weir_pipeline::sink::Table;
use weir_pipeline::{Database, Job};

#[derive(Default, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Seen {
    sum: i64,
    offsets: Vec<i64>,
}

const PARTITIONS: i32 = 3;

type FoldJob<DB> = weir_pipeline::Ready<
    DB,
    weir_pipeline::Keyed<String, (i64, i64)>,
    weir_pipeline::agg::FoldSink<DB, Seen, (i64, i64)>,
>;

/// Record `i` of partition `p`: key `u{(i + p) % 5}`, value `i`.
fn records(p: i32, from: i64, to: i64) -> Vec<(Option<String>, Vec<u8>)> {
    (from..to)
        .map(|i| {
            (
                Some(format!("u{}", (i + p as i64) % 5)),
                i.to_string().into_bytes(),
            )
        })
        .collect()
}

fn job<DB: Database>(input: &Input, topic: &str, pool: sqlx::Pool<DB>) -> FoldJob<DB> {
    Job::new("fold")
        .source(input.url(), [topic])
        .batch_records(16)
        .linger(Duration::from_millis(5))
        .records()
        .map(|r| {
            let v: i64 = std::str::from_utf8(r.value.as_deref().unwrap_or_default())
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            (
                String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                (r.offset, v),
            )
        })
        .key_by(|(k, _)| k.clone())
        .map(|k| weir_pipeline::Keyed {
            key: k.key,
            value: k.value.1,
        })
        .sink(Table::<DB>::fold(
            "seen",
            Seen::default,
            |mut s: Seen, (offset, v): &(i64, i64)| {
                assert!(*v != 13, "value 13 is unlucky");
                s.sum += v;
                s.offsets.push(*offset);
                s
            },
        ))
        .pool(pool)
}

async fn states(db: &Db) -> Result<BTreeMap<(i64, String), Seen>> {
    let (q, big) = match db {
        Db::MySql(_) => ('`', "SIGNED"),
        _ => ('"', "BIGINT"),
    };
    let sql = format!("SELECT CAST({q}partition{q} AS {big}), {q}last_offset{q}, {q}key{q}, state FROM seen ORDER BY 1, 3");
    let sql = sqlx::AssertSqlSafe(sql);
    let rows: Vec<(i64, i64, String, String)> = match db {
        Db::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await?,
        Db::MySql(p) => sqlx::query_as(sql).fetch_all(p).await?,
        Db::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await?,
    };
    let mut m = BTreeMap::new();
    for (p, last, k, json) in rows {
        let s: Seen = serde_json::from_str(&json)?;
        assert_eq!(s.offsets.last(), Some(&last), "last_offset of {p}/{k}");
        m.insert((p, k), s);
    }
    Ok(m)
}

/// What the states must be after `n` records per partition (value 13 dead-lettered).
fn expected(n: i64) -> BTreeMap<(i64, String), Seen> {
    let mut m: BTreeMap<(i64, String), Seen> = BTreeMap::new();
    for p in 0..PARTITIONS {
        for (offset, i) in (0..n).enumerate() {
            if i == 13 {
                continue;
            }
            let s = m
                .entry((p as i64, format!("u{}", (i + p as i64) % 5)))
                .or_default();
            s.sum += i;
            s.offsets.push(offset as i64);
        }
    }
    m
}

async fn fold_on<DB: Database>(pool: sqlx::Pool<DB>, db: Db, url: String) -> Result<()> {
    common::logs();
    let input = Input::log()?;
    let topic = input.topic("folds", PARTITIONS)?;
    for p in 0..PARTITIONS {
        input.produce(&topic, p, &records(p, 0, 40)).await?;
    }
    let s = job(&input, &topic, pool.clone())
        .run_until(committed(
            url.clone(),
            "fold".into(),
            "weir_offsets".into(),
            ends(&topic, &[40; 3]),
            Duration::from_secs(60),
        ))
        .await?;
    assert_eq!(s.dead_letters, 3, "value 13 in each partition");
    assert_eq!(states(&db).await?, expected(40), "after the first run");
    for p in 0..PARTITIONS {
        input.produce(&topic, p, &records(p, 40, 100)).await?;
    }
    job(&input, &topic, pool.clone())
        .run_until(committed(
            url.clone(),
            "fold".into(),
            "weir_offsets".into(),
            ends(&topic, &[100; 3]),
            Duration::from_secs(60),
        ))
        .await?;
    assert_eq!(
        states(&db).await?,
        expected(100),
        "after the restart: every record once, in order"
    );

    // A state that no longer deserializes: the job stops naming the key, and commits
    // nothing (the offsets stay where they were).
    let (q, _) = match &db {
        Db::MySql(_) => ('`', ""),
        _ => ('"', ""),
    };
    let corrupt = format!("UPDATE seen SET state = '{{\"sum\": \"oops\"}}' WHERE {q}key{q} = 'u1' AND {q}partition{q} = 0");
    match &db {
        Db::Postgres(p) => {
            sqlx::query(sqlx::AssertSqlSafe(corrupt)).execute(p).await?;
        }
        Db::MySql(p) => {
            sqlx::query(sqlx::AssertSqlSafe(corrupt)).execute(p).await?;
        }
        Db::Sqlite(p) => {
            sqlx::query(sqlx::AssertSqlSafe(corrupt)).execute(p).await?;
        }
    }
    input.produce(&topic, 0, &records(0, 100, 110)).await?;
    let err = job(&input, &topic, pool.clone())
        .run_until(tokio::time::sleep(Duration::from_secs(30)))
        .await
        .expect_err("a state that does not deserialize stops the job");
    let msg = err.to_string();
    assert!(
        msg.contains("state of key `u1`") && msg.contains("does not deserialize"),
        "{msg}"
    );
    let offsets = Db::connect(&url)
        .await?
        .next_offsets("fold", "weir_offsets")
        .await?;
    assert_eq!(offsets, ends(&topic, &[100; 3]), "nothing committed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fold_sqlite() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(dir.path());
    let pool = <sqlx::Sqlite as Database>::open(&url, 2).await?;
    let db = Db::connect(&url).await?;
    fold_on(pool, db, url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fold_postgres() -> Result<()> {
    let (pool, schema) = pg_pool().await?;
    let db = Db::Postgres(pool.clone());
    let url = format!("{}?options=-csearch_path%3D{schema}", common::PG_URL);
    fold_on(pool, db, url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fold_mariadb() -> Result<()> {
    let url = common::mariadb_url().await?;
    let pool = <sqlx::MySql as Database>::open(&url, 2).await?;
    let db = Db::connect(&url).await?;
    fold_on(pool, db, url).await
}
