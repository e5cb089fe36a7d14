//! `weir lag`: the log's end minus the job's stored next_offset, per partition (a
//! partition never committed lags by the whole log); `--output json`; bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::{make_log, sqlite, unique, weir};
use weir_core::TopicPartition;
use weir_sql::OffsetStore;

#[tokio::test]
async fn lag_is_log_end_minus_the_stored_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    make_log(&log, "orders", 2, 10);
    let (pool, url) = sqlite(dir.path()).await;
    let job = unique("job");
    let store = OffsetStore::<sqlx::Sqlite>::new(&job).unwrap();
    store.migrate(&pool).await.unwrap();
    let (p0, p1) = (
        TopicPartition::new("orders", 0),
        TopicPartition::new("orders", 1),
    );
    let claims = store
        .claim(&pool, &[p0.clone(), p1.clone()], "worker-1")
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    assert!(store
        .advance(&mut *tx, &p0, claims[&p0].epoch, None, 7)
        .await
        .unwrap());
    tx.commit().await.unwrap();

    let args = |extra: &[&str]| {
        let mut v: Vec<String> = ["lag", "--db", &url, "--job", &job, "--log"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push(log.display().to_string());
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = weir(args(&["--output", "json"]));
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        common::lag_rows(&run.stdout),
        [(0, 10, 3), (1, 10, 10)],
        "{}",
        run.stdout
    );

    let text = weir(args(&[]));
    assert_eq!(text.code, 0, "{text:?}");
    assert!(
        text.stdout.lines().next().unwrap().ends_with("LAG"),
        "{}",
        text.stdout
    );

    let none = weir(["lag", "--db", &url, "--job", &job]);
    assert_eq!(none.code, 1, "{none:?}");
    assert!(
        none.stderr.contains("--log DIR or --bootstrap URL"),
        "{}",
        none.stderr
    );
    let zero = weir(args(&["--watch", "0"]));
    assert_eq!(zero.code, 1, "{zero:?}");
    assert!(zero.stderr.contains("--watch"), "{}", zero.stderr);
    let unknown = weir([
        "lag",
        "--db",
        &url,
        "--job",
        "nobody",
        "--log",
        &log.display().to_string(),
    ]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("nobody"), "{}", unknown.stderr);
}
