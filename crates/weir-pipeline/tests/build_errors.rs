//! Bad input at build time: `build()` (and `run_until`, which builds first) returns
//! `Error::Build` naming the job, the stage and the problem; secrets never appear.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use weir_pipeline::sink::{fan_out, Postgres, Sqlite};
use weir_pipeline::{Error, Job};

struct Row1 {
    id: i64,
    name: String,
}
weir_sql::impl_row!(Row1 { id, name });

fn base(dir: &tempfile::TempDir) -> Job {
    Job::new("bad-input")
        .source(format!("log://{}", dir.path().display()), ["orders"])
        .database(format!(
            "sqlite://{}",
            dir.path().join("db.sqlite").display()
        ))
}

fn rows(job: Job) -> weir_pipeline::Pipeline<Row1> {
    job.records().map(|r| Row1 {
        id: r.offset,
        name: String::new(),
    })
}

/// (stage, reason) of a build error.
fn build_error(e: Error) -> (String, String) {
    match e {
        Error::Build { job, stage, reason } => {
            assert_eq!(job, "bad-input");
            (stage, reason)
        }
        other => panic!("expected Error::Build, got {other:?}"),
    }
}

fn check(r: weir_pipeline::Result<impl std::fmt::Debug>, stage: &str, words: &[&str]) {
    let (s, reason) = build_error(r.expect_err("build must fail"));
    assert_eq!(s, stage, "{reason}");
    for w in words {
        assert!(reason.contains(w), "`{w}` not in: {reason}");
    }
}

#[test]
fn no_source_names_the_call_to_make() {
    let r = rows(Job::new("bad-input").database("sqlite::memory:"))
        .sink(Sqlite::insert("t"))
        .build();
    check(r, "source", &[".source("]);
}

#[test]
fn unknown_scheme_names_bootstrap_servers() {
    let dir = tempfile::tempdir().unwrap();
    let r = rows(base(&dir).source("pulsar://broker:6650", ["orders"]))
        .sink(Sqlite::insert("t"))
        .build();
    check(r, "source", &["bootstrap.servers", "pulsar://"]);
}

#[test]
fn no_topics_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = rows(base(&dir).source("log:///tmp/x", Vec::<String>::new()))
        .sink(Sqlite::insert("t"))
        .build();
    check(r, "source", &["topics"]);
}

#[test]
fn auto_commit_on_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = rows(base(&dir).config("enable.auto.commit", "true"))
        .sink(Sqlite::insert("t"))
        .build();
    check(r, "config `enable.auto.commit`", &["database holds"]);
}

#[test]
fn a_bad_config_value_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let r = rows(base(&dir).config("max.poll.records", "lots"))
        .sink(Sqlite::insert("t"))
        .build();
    check(r, "config `max.poll.records`", &["max.poll.records"]);
}

#[test]
fn upsert_key_must_be_a_column_of_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let r = rows(base(&dir))
        .sink(Sqlite::upsert("t", ["customer"]))
        .build();
    check(r, "sink `t`", &["customer", "id, name"]);
}

#[test]
fn a_bad_table_name_names_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let r = rows(base(&dir)).sink(Sqlite::insert("bad\0name")).build();
    let (stage, _) = build_error(r.expect_err("NUL in an identifier"));
    assert!(stage.starts_with("sink `bad"), "{stage}");
    let r = rows(base(&dir)).sink(Sqlite::insert("")).build();
    build_error(r.expect_err("empty table name"));
}

#[test]
fn a_fan_out_without_tables_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = rows(base(&dir))
        .sink(fan_out::<sqlx::Sqlite, Row1>())
        .build();
    check(r, "sink fan-out", &[".to("]);
}

#[test]
fn conflicting_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let r = rows(base(&dir).batch_records(100).max_in_flight_records(10))
        .sink(Sqlite::insert("t"))
        .build();
    check(r, "settings", &["max_in_flight_records", "batch_records"]);
    let r = rows(
        base(&dir)
            .config("max.poll.interval.ms", "10000")
            .revoke_timeout(Duration::from_secs(20)),
    )
    .sink(Sqlite::insert("t"))
    .build();
    check(r, "settings", &["revoke_timeout", "max.poll.interval.ms"]);
    let r = rows(base(&dir).batch_records(0))
        .sink(Sqlite::insert("t"))
        .build();
    check(r, "settings", &["batch_records"]);
    let r = rows(
        base(&dir)
            .poll_timeout(Duration::from_secs(1))
            .stall_timeout(Duration::from_secs(2)),
    )
    .sink(Sqlite::insert("t"))
    .build();
    check(r, "stall_timeout", &["idle job stuck", "two poll timeouts"]);
}

#[test]
fn a_database_url_of_another_dialect_is_refused_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let r = rows(base(&dir).database("mysql://weir:hunter2@db.example:3306/app"))
        .sink(Postgres::insert("t"))
        .build();
    let (stage, reason) = build_error(r.expect_err("wrong dialect"));
    assert_eq!(stage, "database");
    assert!(reason.contains("postgres://"), "{reason}");
    assert!(!reason.contains("hunter2"), "password leaked: {reason}");
}

#[test]
fn an_empty_job_name_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = Job::new("")
        .source(format!("log://{}", dir.path().display()), ["orders"])
        .database("sqlite::memory:")
        .records()
        .map(|r| Row1 {
            id: r.offset,
            name: String::new(),
        })
        .sink(Sqlite::insert("t"))
        .build();
    match r.expect_err("empty job name") {
        Error::Build { stage, .. } => assert_eq!(stage, "job name"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let job = Job::new("bad-input")
        .source("kafka://localhost:9092", ["orders"])
        .config("sasl.password", "hunter2")
        .database("postgres://weir:hunter2@localhost/app");
    let text = format!("{job:?}");
    assert!(text.contains("sasl.password"), "{text}");
    let text = format!("{job:?}");
    assert!(!text.contains("hunter2"), "{text}");
    let ready = rows(job).sink(Postgres::insert("t"));
    let text = format!("{ready:?}");
    assert!(!text.contains("hunter2"), "{text}");
}

/// A database that cannot be reached fails `run_until` with the stage `database`,
/// the URL redacted.
#[tokio::test]
async fn an_unreachable_database_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let r = rows(base(&dir).database("postgres://weir:hunter2@127.0.0.1:1/app"))
        .sink(Postgres::insert("t"))
        .run_until(std::future::pending())
        .await;
    let (stage, reason) = build_error(r.expect_err("nothing listens on port 1"));
    assert_eq!(stage, "database");
    assert!(reason.contains("cannot connect"), "{reason}");
    assert!(reason.contains("127.0.0.1:1"), "{reason}");
    assert!(!reason.contains("hunter2"), "{reason}");
}

#[test]
fn a_consumer_config_with_auto_commit_on_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = weir_core::ConsumerConfig::new()
        .with_bootstrap_servers(format!("log://{}", dir.path().display()));
    // Kafka's default is on: refused, not silently overridden
    let r = rows(base(&dir).source(config.clone(), ["orders"]))
        .sink(Sqlite::insert("t"))
        .build();
    check(
        r,
        "source",
        &["enable.auto.commit", "with_enable_auto_commit(false)"],
    );
    let ok = rows(base(&dir).source(config.with_enable_auto_commit(false), ["orders"]))
        .sink(Sqlite::insert("t"))
        .build();
    assert!(ok.is_ok(), "{:?}", ok.err());
}

#[test]
fn in_flight_bytes_below_a_batch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = rows(base(&dir).batch_bytes(4 << 20).max_in_flight_bytes(1 << 20))
        .sink(Sqlite::insert("t"))
        .build();
    check(r, "settings", &["max_in_flight_bytes", "batch_bytes"]);
}

#[test]
fn a_bad_bootstrap_url_is_named_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let r = rows(base(&dir).source("pulsar://user:hunter2@broker:6650", ["orders"]))
        .sink(Sqlite::insert("t"))
        .build();
    let (stage, reason) = build_error(r.expect_err("build must fail"));
    assert_eq!(stage, "source");
    assert!(reason.contains("pulsar://"), "{reason}");
    assert!(!reason.contains("hunter2"), "the password leaked: {reason}");
}
