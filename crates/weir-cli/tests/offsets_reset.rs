//! `weir offsets reset`: a dry run changes nothing; an executed reset fences a job
//! that holds the partition (its compare-and-set with the old epoch is refused), on
//! SQLite, PostgreSQL and MariaDB; bad input fails with a message saying what.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::path::Path;

use common::{make_log, unique, weir, Run};
use weir_core::TopicPartition;
use weir_sql::{Dialect, OffsetStore, TableName};

fn reset(db: &str, table: &str, job: &str, log: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<String> = [
        "offsets",
        "reset",
        "--db",
        db,
        "--offsets-table",
        table,
        "--job",
        job,
        "--topic",
        "orders",
        "--log",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(log.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    weir(args)
}

/// Claim both partitions as a running worker would, commit p0 to 5, reset p0 to 2
/// (dry run, then executed), and check the worker is fenced on p0 only.
async fn reset_fences_a_claimed_partition<DB: Dialect>(pool: sqlx::Pool<DB>, url: &str) {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), "orders", 2, 10);
    let table = unique("offsets");
    let job = unique("job");
    let store = OffsetStore::<DB>::new(&job)
        .unwrap()
        .with_table(TableName::new(&table).unwrap())
        .unwrap();
    store.migrate(&pool).await.unwrap();
    let (p0, p1) = (
        TopicPartition::new("orders", 0),
        TopicPartition::new("orders", 1),
    );
    let claims = store
        .claim(&pool, &[p0.clone(), p1.clone()], "worker-1")
        .await
        .unwrap();
    let epoch = claims[&p0].epoch;
    let mut tx = pool.begin().await.unwrap();
    assert!(store.advance(&mut *tx, &p0, epoch, None, 5).await.unwrap());
    tx.commit().await.unwrap();

    // Dry run: prints before and after, changes nothing.
    let dry = reset(
        url,
        &table,
        &job,
        dir.path(),
        &["--to-offset", "2", "--partitions", "0"],
    );
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stderr.contains("dry run: nothing changed"),
        "{}",
        dry.stderr
    );
    let line = dry.stdout.lines().nth(1).unwrap();
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells[..4], ["orders", "0", "5", "2"], "{}", dry.stdout);
    let mut conn = pool.acquire().await.unwrap();
    let row = store.read(&mut *conn, &p0).await.unwrap().unwrap();
    assert_eq!((row.next_offset, row.epoch), (Some(5), epoch));
    drop(conn);

    // Executed: next_offset and epoch change together.
    let run = reset(
        url,
        &table,
        &job,
        dir.path(),
        &[
            "--to-offset",
            "2",
            "--partitions",
            "0",
            "--execute",
            "--output",
            "json",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let out: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(out["partitions"][0]["before"], 5);
    assert_eq!(out["partitions"][0]["after"], 2);
    assert_eq!(out["partitions"][0]["epoch"], epoch + 1);
    let mut conn = pool.acquire().await.unwrap();
    let row = store.read(&mut *conn, &p0).await.unwrap().unwrap();
    assert_eq!((row.next_offset, row.epoch), (Some(2), epoch + 1));
    let untouched = store.read(&mut *conn, &p1).await.unwrap().unwrap();
    assert_eq!(
        (untouched.next_offset, untouched.epoch),
        (None, claims[&p1].epoch)
    );
    drop(conn);

    // The worker still holds the old epoch: its next commit on p0 is refused, whatever
    // offset it expects; p1 is still its own.
    let mut tx = pool.begin().await.unwrap();
    assert!(!store
        .advance(&mut *tx, &p0, epoch, Some(5), 8)
        .await
        .unwrap());
    assert!(!store
        .advance(&mut *tx, &p0, epoch, Some(2), 8)
        .await
        .unwrap());
    assert!(store
        .advance(&mut *tx, &p1, claims[&p1].epoch, None, 3)
        .await
        .unwrap());
    tx.commit().await.unwrap();
    // Whoever claims p0 next resumes at the reset offset.
    let again = store
        .claim(&pool, std::slice::from_ref(&p0), "worker-2")
        .await
        .unwrap();
    assert_eq!(again[&p0].next_offset, Some(2));
    assert_eq!(again[&p0].epoch, epoch + 2);

    // show, with the log: next offsets, epochs, owners and lag.
    let log_dir = dir.path().display().to_string();
    let show = weir([
        "offsets",
        "show",
        "--db",
        url,
        "--offsets-table",
        &table,
        "--job",
        &job,
        "--log",
        &log_dir,
        "--output",
        "json",
    ]);
    assert_eq!(show.code, 0, "{show:?}");
    let rows: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(rows[0]["next_offset"], 2);
    assert_eq!(rows[0]["epoch"], epoch + 2);
    assert_eq!(rows[0]["owner"], "worker-2");
    assert_eq!(
        (rows[0]["log_end"].as_i64(), rows[0]["lag"].as_i64()),
        (Some(10), Some(8))
    );
    assert_eq!(rows[1]["lag"], 7);
    assert!(rows[1]["updated_at"].is_string());
}

#[tokio::test]
async fn reset_fences_a_claimed_partition_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, url) = common::sqlite(dir.path()).await;
    reset_fences_a_claimed_partition(pool, &url).await;
}

#[tokio::test]
async fn reset_fences_a_claimed_partition_postgres() {
    reset_fences_a_claimed_partition(common::postgres().await, common::PG_URL).await;
}

#[tokio::test]
async fn reset_fences_a_claimed_partition_mariadb() {
    reset_fences_a_claimed_partition(common::mariadb().await, common::MARIADB_URL).await;
}

#[tokio::test]
async fn bad_input_fails_with_what_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    make_log(&log_dir, "orders", 2, 10);
    let (pool, url) = common::sqlite(dir.path()).await;
    let job = unique("job");
    let store = OffsetStore::<sqlx::Sqlite>::new(&job).unwrap();
    store.migrate(&pool).await.unwrap();
    let tp = TopicPartition::new("orders", 0);
    let epoch = store
        .claim(&pool, std::slice::from_ref(&tp), "w")
        .await
        .unwrap()[&tp]
        .epoch;
    let mut tx = pool.begin().await.unwrap();
    assert!(store.advance(&mut *tx, &tp, epoch, None, 4).await.unwrap());
    tx.commit().await.unwrap();

    // Unknown job, in show and reset: names the job and the jobs there are.
    let run = weir(["offsets", "show", "--db", &url, "--job", "no-such-job"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("unknown job `no-such-job`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&job), "{}", run.stderr);
    let run = reset(
        &url,
        "weir_offsets",
        "no-such-job",
        &log_dir,
        &["--to-earliest", "--execute"],
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("unknown job `no-such-job`"),
        "{}",
        run.stderr
    );

    // Offsets outside the log's range: refused, nothing changed.
    for extra in [
        &["--to-offset", "11", "--execute"][..],
        &["--shift-by", "-5", "--partitions", "0", "--execute"][..],
        &["--to-offset", "3", "--partitions", "7", "--execute"][..],
    ] {
        let run = reset(&url, "weir_offsets", &job, &log_dir, extra);
        assert_eq!(run.code, 1, "{extra:?}: {run:?}");
        assert!(run.stderr.contains("nothing was changed"), "{}", run.stderr);
    }
    let run = reset(
        &url,
        "weir_offsets",
        &job,
        &log_dir,
        &["--to-offset", "11", "--execute"],
    );
    assert!(
        run.stderr.contains(&format!(
            "offset 11 for orders/0 is outside the log's range 0..10 (first offset..end) in {}",
            log_dir.display()
        )),
        "{}",
        run.stderr
    );
    let mut conn = pool.acquire().await.unwrap();
    let row = store.read(&mut *conn, &tp).await.unwrap().unwrap();
    assert_eq!((row.next_offset, row.epoch), (Some(4), epoch));
    drop(conn);

    // Without a log there is no range to check against.
    let run = weir([
        "offsets",
        "reset",
        "--db",
        &url,
        "--job",
        &job,
        "--topic",
        "orders",
        "--to-offset",
        "1",
    ]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("give --log DIR"), "{}", run.stderr);
    // A log directory that is not one.
    let empty = tempfile::tempdir().unwrap();
    let run = reset(&url, "weir_offsets", &job, empty.path(), &["--to-earliest"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("not a weir log directory"),
        "{}",
        run.stderr
    );

    // An unreachable database: named, without its password.
    let run = weir([
        "offsets",
        "show",
        "--db",
        "postgres://app:canary-secret@127.0.0.1:1/nowhere",
        "--connect-timeout",
        "1",
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("cannot connect to the database postgres://app:***@127.0.0.1:1/nowhere"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("canary-secret"), "{}", run.stderr);
    // A database without the table.
    let other = tempfile::tempdir().unwrap();
    let (_p, empty_url) = common::sqlite(other.path()).await;
    let run = weir(["offsets", "show", "--db", &empty_url]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("does not exist in this database"),
        "{}",
        run.stderr
    );
}

/// `--to-datetime` moves each partition to its first record at or after the time
/// (the end where every record is older), checked against timestamps we wrote; a time
/// that does not parse is refused with the forms that are accepted.
#[tokio::test]
async fn reset_to_datetime_moves_to_the_first_record_at_or_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    {
        let log = weir_log::Log::open(&log_dir, Default::default()).unwrap();
        log.create_topic("orders", 2).unwrap();
        // Partition 0: one record per second from t = 0 s; partition 1: from t = 100 s.
        for (p, from) in [(0, 0i64), (1, 100)] {
            let tp = TopicPartition::new("orders", p);
            for i in 0..10 {
                log.append(
                    &tp,
                    &[weir_log::NewRecord::value("{}").with_timestamp((from + i) * 1000)],
                )
                .unwrap();
            }
        }
    }
    let (pool, url) = common::sqlite(dir.path()).await;
    let job = unique("job");
    let store = OffsetStore::<sqlx::Sqlite>::new(&job).unwrap();
    store.migrate(&pool).await.unwrap();
    let parts = [
        TopicPartition::new("orders", 0),
        TopicPartition::new("orders", 1),
    ];
    let claims = store.claim(&pool, &parts, "w").await.unwrap();

    let run = reset(
        &url,
        "weir_offsets",
        &job,
        &log_dir,
        &[
            "--to-datetime",
            "1970-01-01T00:00:04.500Z",
            "--execute",
            "--output",
            "json",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let mut conn = pool.acquire().await.unwrap();
    let p0 = store.read(&mut *conn, &parts[0]).await.unwrap().unwrap();
    let p1 = store.read(&mut *conn, &parts[1]).await.unwrap().unwrap();
    // 4.5 s: partition 0's record 5 (t = 5 s); all of partition 1 is later: its start.
    assert_eq!(p0.next_offset, Some(5));
    assert_eq!(p1.next_offset, Some(0));
    assert!(
        p0.epoch > claims[&parts[0]].epoch,
        "the reset fences: epoch bumped"
    );
    drop(conn);

    // After every record (in +01:00): each partition's end.
    let run = reset(
        &url,
        "weir_offsets",
        &job,
        &log_dir,
        &[
            "--to-datetime",
            "1970-01-01T01:10:00+01:00",
            "--output",
            "json",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let out: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let after: Vec<i64> = out["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["after"].as_i64().unwrap())
        .collect();
    assert_eq!(after, [10, 10], "{out}");

    let run = reset(
        &url,
        "weir_offsets",
        &job,
        &log_dir,
        &["--to-datetime", "last tuesday"],
    );
    assert_eq!(run.code, 2, "a usage error: {run:?}");
    assert!(
        run.stderr.contains("`last tuesday` is not a time") && run.stderr.contains("RFC 3339"),
        "{}",
        run.stderr
    );
}
