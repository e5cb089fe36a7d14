//! Operating a job: `/metrics` scraped from a running job (Prometheus text format,
//! `Job::serve_http`) equals what the job did (records, rows per sink, dead letters
//! per stage, commits, claims), the histograms saw every batch, and the lag gauge,
//! computed from the database's stored offsets, shows the backlog while the sink is
//! held and reaches 0 once the job has caught up. The probes: ready once the
//! partitions are claimed, live while the loop turns, not ready while a commit attempt
//! hangs past the stall timeout, gone when the job stops. Bad
//! addresses fail clearly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use common::{eventually, scalar, sqlite_url, Db, Input};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_pipeline::sink::custom;
use weir_pipeline::{Database, Job};
use weir_sql::{Item, TableName, TableSink, TransactionalSink};

struct Out {
    part: i32,
    src_offset: i64,
    amount: i64,
}
weir_sql::impl_row!(Out {
    part,
    src_offset,
    amount
});

/// The jobs' pipeline: each JSON integer becomes an `Out` row with its coordinates.
trait ToOut {
    fn to_out(self) -> weir_pipeline::Pipeline<Out>;
}

impl ToOut for Job {
    fn to_out(self) -> weir_pipeline::Pipeline<Out> {
        self.value::<i64, _>(weir_formats::Json::new())
            .map_with(|amount, rec| Out {
                part: rec.partition,
                src_offset: rec.offset,
                amount,
            })
    }
}

/// A table sink that holds every transaction until the gate opens.
struct Gated {
    inner: TableSink<sqlx::Sqlite, Out>,
    open: Arc<tokio::sync::watch::Sender<bool>>,
}

#[weir_sql::async_trait]
impl TransactionalSink<sqlx::Sqlite, Out> for Gated {
    fn name(&self) -> &str {
        "gated_out"
    }

    async fn write(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        items: &[Item<Out>],
    ) -> weir_sql::Result<()> {
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|o| *o).await;
        self.inner.write(tx, items).await
    }
}

/// GET `path` from `addr`: (status code, body).
async fn get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = String::new();
    stream.read_to_string(&mut buf).await?;
    let (head, body) = buf
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no response head: {buf:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line: {head:?}"))?;
    Ok((code, body.to_owned()))
}

/// The value of the sample `name` whose labels include every one of `labels`
/// (summed over the matching series), from Prometheus text.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, l) = series.split_once('{').unwrap_or((series, ""));
        if n != name
            || !labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        {
            continue;
        }
        let v: f64 = value.parse().ok()?;
        found = Some(found.unwrap_or(0.0) + v);
    }
    found
}

/// A port nobody listens on now.
fn free_addr() -> Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

const PARTITIONS: i32 = 3;
const PER_PARTITION: i64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_metrics_count_what_the_job_did_and_lag_reaches_zero() -> Result<()> {
    common::logs();
    let addr = free_addr()?;

    let input = Input::log()?;
    let topic = input.topic("orders", PARTITIONS)?;
    // every 20th record of each partition is not JSON: a decode dead letter
    let mut bad = 0;
    let mut bytes = 0;
    for p in 0..PARTITIONS {
        let values: Vec<_> = (0..PER_PARTITION)
            .map(|i| {
                let v = if i % 20 == 7 {
                    bad += 1;
                    b"{not json".to_vec()
                } else {
                    format!("{}", i * 10).into_bytes()
                };
                bytes += v.len() as i64;
                (None, v)
            })
            .collect();
        input.produce(&topic, p, &values).await?;
    }
    let total = i64::from(PARTITIONS) * PER_PARTITION;
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(dir.path());
    let pool = <sqlx::Sqlite as Database>::open(&url, 2).await?;
    let inner = TableSink::<sqlx::Sqlite, Out>::new(TableName::new("out")?)?;
    inner.create_table(&pool).await?;
    let (gate, _) = tokio::sync::watch::channel(false);
    let gate = Arc::new(gate);
    let job = Job::new("metered")
        .source(input.url(), [topic.as_str()])
        .batch_records(50)
        .linger(Duration::from_millis(5))
        .metrics_interval(Duration::from_millis(50))
        .lag_interval(Duration::from_millis(50))
        .serve_http(addr.clone())
        .stall_timeout(Duration::from_secs(2))
        .to_out()
        .sink(custom(Gated {
            inner,
            open: Arc::clone(&gate),
        }))
        .pool(pool.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(job.run_until(async move {
        let _ = stop_rx.await;
    }));

    let scrape = || async { Ok::<_, anyhow::Error>(get(&addr, "/metrics").await?.1) };
    let job = [("job", "metered")];
    let lag = |text: &str, p: i32| {
        let p = p.to_string();
        sample(
            text,
            "weir_lag_records",
            &[("job", "metered"), ("partition", &p)],
        )
    };
    // held sink: nothing is committed, so each partition lags by all it holds
    eventually(
        "the lag gauges show the backlog",
        Duration::from_secs(30),
        || async {
            let m = scrape().await.unwrap_or_default();
            Ok((0..PARTITIONS).all(|p| lag(&m, p) == Some(PER_PARTITION as f64)))
        },
    )
    .await?;
    eventually(
        "records are in flight while the sink is held",
        Duration::from_secs(30),
        || async {
            let m = scrape().await?;
            Ok(sample(&m, "weir_in_flight_records", &job).is_some_and(|v| v > 0.0))
        },
    )
    .await?;
    let held = scrape().await?;
    assert_eq!(
        sample(&held, "weir_commits_total", &job).unwrap_or(0.0),
        0.0
    );
    assert_eq!(
        sample(&held, "weir_assigned_partitions", &job),
        Some(PARTITIONS as f64)
    );
    assert_eq!(
        scalar(&Db::Sqlite(pool.clone()), "SELECT COUNT(*) FROM out").await?,
        0
    );
    // The commit attempt hangs in the held sink while the loop keeps turning: past
    // the stall timeout (2 s) the job is not ready, and still live (the loop turns).
    eventually(
        "a hung commit makes the job unready",
        Duration::from_secs(30),
        || async { Ok(get(&addr, "/health/ready").await? == (503, "not ready\n".to_owned())) },
    )
    .await?;
    assert_eq!(
        get(&addr, "/health/live").await?,
        (200, "live\n".to_owned())
    );
    assert_eq!(get(&addr, "/nope").await?.0, 404);
    // a request head over 8 KiB is answered 431, not read further
    let mut big = tokio::net::TcpStream::connect(&addr).await?;
    big.write_all(
        format!(
            "GET /metrics HTTP/1.1\r\nx-pad: {}\r\n\r\n",
            "a".repeat(9000)
        )
        .as_bytes(),
    )
    .await?;
    let mut reply = String::new();
    let _ = big.read_to_string(&mut reply).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    gate.send_replace(true);
    let db = Db::Sqlite(pool.clone());
    eventually(
        "every record is committed",
        Duration::from_secs(30),
        || async {
            let n = scalar(&db, "SELECT COUNT(*) FROM out").await?
                + scalar(&db, "SELECT COUNT(*) FROM weir_dead_letters").await?;
            Ok(n == i64::from(PARTITIONS) * PER_PARTITION)
        },
    )
    .await?;
    eventually(
        "live and ready again once commits move",
        Duration::from_secs(30),
        || async {
            Ok(
                get(&addr, "/health/live").await? == (200, "live\n".to_owned())
                    && get(&addr, "/health/ready").await? == (200, "ready\n".to_owned()),
            )
        },
    )
    .await?;
    eventually(
        "lag reaches 0 on every partition",
        Duration::from_secs(30),
        || async {
            let m = scrape().await?;
            Ok((0..PARTITIONS).all(|p| lag(&m, p) == Some(0.0)))
        },
    )
    .await?;
    eventually(
        "the counters are published",
        Duration::from_secs(30),
        || async {
            let m = scrape().await?;
            Ok(sample(&m, "weir_records_total", &job)
                == Some((i64::from(PARTITIONS) * PER_PARTITION) as f64))
        },
    )
    .await?;
    let m = scrape().await?;
    let _ = stop_tx.send(());
    let summary = running.await??;

    let rows = scalar(&db, "SELECT COUNT(*) FROM out").await?;
    let dead = scalar(
        &db,
        "SELECT COUNT(*) FROM weir_dead_letters WHERE job = 'metered'",
    )
    .await?;
    assert_eq!(
        (rows, dead),
        (total - bad, bad),
        "the job's own work: {summary:?}"
    );
    let count = |name: &str, extra: &[(&str, &str)]| {
        let mut l = vec![("job", "metered")];
        l.extend_from_slice(extra);
        sample(&m, name, &l).unwrap_or(0.0) as i64
    };
    assert_eq!(count("weir_records_total", &[]), total);
    assert_eq!(count("weir_rows_total", &[("sink", "gated_out")]), rows);
    assert_eq!(
        count("weir_dead_letters_total", &[("stage", "decode")]),
        dead
    );
    assert_eq!(count("weir_dead_letters_total", &[("stage", "sink")]), 0);
    assert_eq!(count("weir_commits_total", &[]) as u64, summary.commits);
    assert_eq!(count("weir_claims_total", &[]), i64::from(PARTITIONS));
    assert_eq!(count("weir_fenced_total", &[]), 0);
    // one sample per committed batch; the batch sizes add up to every record
    assert_eq!(
        count("weir_batch_records_count", &[]) as u64,
        summary.commits
    );
    assert_eq!(count("weir_batch_records_sum", &[]), total);
    assert_eq!(count("weir_batch_bytes_count", &[]) as u64, summary.commits);
    assert_eq!(
        count("weir_batch_bytes_sum", &[]),
        bytes,
        "key + value bytes"
    );
    assert_eq!(
        count("weir_commit_seconds_count", &[]) as u64,
        summary.commits
    );
    assert_eq!(
        count("weir_end_to_end_seconds_count", &[]) as u64,
        summary.commits
    );
    // record timestamps are the append time: the oldest waited for the gate
    let e2e = sample(&m, "weir_end_to_end_seconds_sum", &job).unwrap_or(-1.0);
    assert!((0.0..600.0).contains(&e2e), "{e2e}");
    assert!(
        m.contains("weir_commit_seconds_bucket{"),
        "histograms with buckets: {m}"
    );
    // stopped: the server is gone with the job
    assert!(get(&addr, "/health/live").await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_http_refuses_bad_and_busy_addresses() -> Result<()> {
    let input = Input::log()?;
    let topic = input.topic("orders", 1)?;
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(dir.path());
    let job = |addr: &str| {
        Job::new("probe")
            .source(input.url(), [topic.as_str()])
            .database(&url)
            .serve_http(addr)
            .value::<i64, _>(weir_formats::Json::new())
            .map(|amount| Out {
                part: 0,
                src_offset: 0,
                amount,
            })
            .sink(weir_pipeline::sink::Sqlite::insert("out"))
    };
    let err = job("localhost:http")
        .run_until(async {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("serve_http") && err.contains("localhost:http"),
        "{err}"
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = busy.local_addr()?.to_string();
    let err = job(&addr)
        .run_until(std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    Ok(())
}

/// The database password of the job's URL appears nowhere in what it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_metrics_carry_no_secret() -> Result<()> {
    common::logs();
    const SECRET: &str = "canary-s3cret-9f2e";
    // (the test server trusts local connections: any password is accepted)
    let url = format!("postgres://postgres:{SECRET}@127.0.0.1:5432/test");
    let admin = sqlx::PgPool::connect(common::PG_URL).await.map_err(|e| {
        anyhow::anyhow!("cannot reach PostgreSQL at 127.0.0.1:5432: {e}; run scripts/provision")
    })?;
    let name = weir_testkit::unique_name("canary").replace('-', "_");
    let input = Input::log()?;
    let topic = input.topic("orders", 1)?;
    input
        .produce(&topic, 0, &[(None, b"1".to_vec()), (None, b"x".to_vec())])
        .await?;
    let addr = free_addr()?;
    let job = Job::new(name.as_str())
        .source(input.url(), [topic.as_str()])
        .database(&url)
        .metrics_interval(Duration::from_millis(50))
        .lag_interval(Duration::from_millis(50))
        .serve_http(addr.clone())
        .to_out()
        .sink(weir_pipeline::sink::Postgres::insert(name.as_str()));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(job.run_until(async move {
        let _ = stop_rx.await;
    }));
    let want = format!("weir_records_total{{job=\"{name}\"}} 2");
    eventually(
        "both records are counted",
        Duration::from_secs(30),
        || async {
            Ok(get(&addr, "/metrics")
                .await
                .is_ok_and(|(_, m)| m.lines().any(|l| l == want)))
        },
    )
    .await?;
    for path in ["/metrics", "/health/live", "/health/ready", "/other"] {
        let (_, body) = get(&addr, path).await?;
        assert!(!body.contains(SECRET), "{path} shows the password: {body}");
    }
    let _ = stop_tx.send(());
    let summary = running.await??;
    assert_eq!((summary.rows, summary.dead_letters), (1, 1));
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {name}")))
        .execute(&admin)
        .await?;
    Ok(())
}

/// A TCP forwarder to PostgreSQL that can be cut (every connection closed, new ones
/// closed at once) and restored: the database vanishing, as seen by the job.
async fn cuttable_postgres() -> Result<(u16, tokio::sync::watch::Sender<bool>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (up, _) = tokio::sync::watch::channel(true);
    let up_rx = up.subscribe();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let mut up = up_rx.clone();
            if !*up.borrow() {
                continue; // dropped: closed at once
            }
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = up.wait_for(|u| !*u) => {}
                }
            });
        }
    });
    Ok((port, up))
}

/// An idle job (nothing to commit) whose database goes away turns unready through
/// its ping, stays live (an outage is not a stuck process), and is ready again once
/// the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_job_whose_database_vanishes_turns_unready_and_back() -> Result<()> {
    common::logs();
    sqlx::PgPool::connect(common::PG_URL).await.map_err(|e| {
        anyhow::anyhow!("cannot reach PostgreSQL at 127.0.0.1:5432: {e}; run scripts/provision")
    })?;
    let (port, up) = cuttable_postgres().await?;
    let name = weir_testkit::unique_name("ping").replace('-', "_");
    let input = Input::log()?;
    let topic = input.topic("orders", 1)?;
    input.produce(&topic, 0, &[(None, b"1".to_vec())]).await?;
    let addr = free_addr()?;
    let job = Job::new(name.as_str())
        .source(input.url(), [topic.as_str()])
        .database(format!("postgres://postgres@127.0.0.1:{port}/test"))
        .lag_interval(Duration::from_millis(200))
        .serve_http(addr.clone())
        .to_out()
        .sink(weir_pipeline::sink::Postgres::insert(name.as_str()));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(job.run_until(async move {
        let _ = stop_rx.await;
    }));
    // (the server comes up with the job: a refused connection is "not yet")
    let probes = || async {
        let code = |r: Result<(u16, String)>| r.map_or(0, |(c, _)| c);
        (
            code(get(&addr, "/health/live").await),
            code(get(&addr, "/health/ready").await),
        )
    };
    let want = format!("weir_commits_total{{job=\"{name}\"}} 1");
    eventually(
        "the record is committed and the job ready",
        Duration::from_secs(30),
        || async {
            let m = get(&addr, "/metrics")
                .await
                .map(|r| r.1)
                .unwrap_or_default();
            Ok(m.lines().any(|l| l == want) && probes().await == (200, 200))
        },
    )
    .await?;
    up.send_replace(false);
    eventually(
        "unready while the database is gone, still live",
        Duration::from_secs(30),
        || async { Ok(probes().await == (200, 503)) },
    )
    .await?;
    up.send_replace(true);
    eventually(
        "ready again once it is back",
        Duration::from_secs(30),
        || async { Ok(probes().await == (200, 200)) },
    )
    .await?;
    let _ = stop_tx.send(());
    running.await??;
    Ok(())
}

/// Under `auto.offset.reset=latest` a partition never committed lags from its end,
/// where the job starts, not from the log's start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_of_a_partition_never_committed_counts_from_where_the_reset_started() -> Result<()> {
    common::logs();
    let input = Input::log()?;
    let topic = input.topic("orders", 1)?;
    let old: Vec<_> = (0..10)
        .map(|i| (None, format!("{i}").into_bytes()))
        .collect();
    input.produce(&topic, 0, &old).await?;
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(dir.path());
    let addr = free_addr()?;
    let job = Job::new("latest")
        .source(input.url(), [topic.as_str()])
        .database(&url)
        .auto_offset_reset(weir_core::AutoOffsetReset::Latest)
        .metrics_interval(Duration::from_millis(50))
        .lag_interval(Duration::from_millis(50))
        .serve_http(addr.clone())
        .to_out()
        .sink(weir_pipeline::sink::Sqlite::insert("out"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(job.run_until(async move {
        let _ = stop_rx.await;
    }));
    let lag = || async {
        let m = get(&addr, "/metrics")
            .await
            .map(|r| r.1)
            .unwrap_or_default();
        sample(
            &m,
            "weir_lag_records",
            &[("job", "latest"), ("partition", "0")],
        )
    };
    eventually(
        "the lag gauge is published",
        Duration::from_secs(30),
        || async { Ok(lag().await.is_some()) },
    )
    .await?;
    assert_eq!(
        lag().await,
        Some(0.0),
        "the 10 old records are not the job's backlog"
    );
    let new: Vec<_> = (10..15)
        .map(|i| (None, format!("{i}").into_bytes()))
        .collect();
    input.produce(&topic, 0, &new).await?;
    let want = "weir_records_total{job=\"latest\"} 5";
    eventually(
        "the 5 new records are committed",
        Duration::from_secs(30),
        || async {
            let m = get(&addr, "/metrics")
                .await
                .map(|r| r.1)
                .unwrap_or_default();
            Ok(m.lines().any(|l| l == want))
        },
    )
    .await?;
    eventually("lag 0 again", Duration::from_secs(30), || async {
        Ok(lag().await == Some(0.0))
    })
    .await?;
    let _ = stop_tx.send(());
    let summary = running.await??;
    assert_eq!(summary.records, 5, "{summary:?}");
    Ok(())
}

/// An operator's offsets reset (`weir offsets reset --execute`, here through the
/// same `Admin::reset_offsets`) while a job runs: the job's next commit is refused
/// (fenced, nothing of it written), and after a restart it resumes at the new offset:
/// every record before the reset's target once, none it skipped, no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_fences_the_running_job_and_the_restart_resumes_at_the_new_offset() -> Result<()> {
    common::logs();
    let input = Input::log()?;
    let topic = input.topic("orders", 1)?;
    let values = |r: std::ops::Range<i64>| -> Vec<(Option<String>, Vec<u8>)> {
        r.map(|i| (None, format!("{i}").into_bytes())).collect()
    };
    input.produce(&topic, 0, &values(0..100)).await?;
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(dir.path());
    let addr = free_addr()?;
    let job = || {
        Job::new("resettable")
            .source(input.url(), [topic.as_str()])
            .database(&url)
            .batch_records(25)
            .metrics_interval(Duration::from_millis(50))
            .serve_http(addr.clone())
            .to_out()
            .sink(weir_pipeline::sink::Sqlite::insert("out"))
    };
    let pool = <sqlx::Sqlite as Database>::open(&url, 1).await?;
    let db = Db::Sqlite(pool.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let first = tokio::spawn(job().run_until(async move {
        let _ = stop_rx.await;
    }));
    eventually(
        "the first 100 records are committed",
        Duration::from_secs(30),
        || async { Ok(scalar(&db, "SELECT COUNT(*) FROM out").await.unwrap_or(0) == 100) },
    )
    .await?;
    let admin = weir_sql::admin::Admin::connect(&url).await?;
    let done = admin
        .reset_offsets("resettable", &topic, "test reset", |_| {
            Ok::<_, String>(vec![weir_sql::admin::NewOffset {
                partition: 0,
                next_offset: 120,
            }])
        })
        .await?
        .map_err(anyhow::Error::msg)?;
    assert_eq!((done[0].before, done[0].after), (Some(100), 120));
    input.produce(&topic, 0, &values(100..150)).await?;
    eventually(
        "the running job is fenced",
        Duration::from_secs(30),
        || async {
            let m = get(&addr, "/metrics")
                .await
                .map(|r| r.1)
                .unwrap_or_default();
            Ok(m.lines()
                .any(|l| l == "weir_fenced_total{job=\"resettable\"} 1"))
        },
    )
    .await?;
    let _ = stop_tx.send(());
    let summary = first.await??;
    assert!(
        summary.fenced >= 1,
        "its commit after the reset was refused: {summary:?}"
    );
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM out").await?,
        100,
        "nothing of it written"
    );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(job().run_until(async move {
        let _ = stop_rx.await;
    }));
    eventually(
        "the restart resumes at 120",
        Duration::from_secs(30),
        || async { Ok(scalar(&db, "SELECT COUNT(*) FROM out").await.unwrap_or(0) == 130) },
    )
    .await?;
    let _ = stop_tx.send(());
    second.await??;
    assert_eq!(
        scalar(&db, "SELECT COUNT(DISTINCT src_offset) FROM out").await?,
        130,
        "no duplicate (an insert sink: a record written twice would be two rows)"
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM out WHERE src_offset >= 100 AND src_offset < 120"
        )
        .await?,
        0,
        "the skipped records stay skipped"
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT MIN(src_offset) FROM out WHERE src_offset >= 100"
        )
        .await?,
        120
    );
    Ok(())
}
