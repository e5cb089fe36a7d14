//! Runs both Kafka examples end to end against the services `scripts/provision`
//! starts (tansu on 127.0.0.1:9092, PostgreSQL on 127.0.0.1:5432, weir-registry on
//! 127.0.0.1:8081), with few records and their own topic, table and job names, and
//! asserts the examples' own checks. A service that cannot be reached fails the test
//! with a message naming `scripts/provision`; nothing skips.
//!
//! ```text
//! scripts/provision && cargo test --features kafka --test examples_kafka
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/kafka_json_to_postgres.rs"]
#[allow(dead_code)]
mod kafka_json_to_postgres;

#[path = "../examples/kafka_avro_registry_upsert.rs"]
#[allow(dead_code)]
mod kafka_avro_registry_upsert;

use std::time::{SystemTime, UNIX_EPOCH};

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A name no other run uses: `prefix_<pid>_<nanos>`.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{nanos}", std::process::id())
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// Drop the test's table and its job's offsets and dead letters.
fn clean_up(table: &str, job: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(PG_URL).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"DROP TABLE IF EXISTS "{table}""#
        )))
        .execute(&pool)
        .await?;
        for t in ["weir_offsets", "weir_dead_letters"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {t} WHERE job = $1"
            )))
            .bind(job)
            .execute(&pool)
            .await?;
        }
        anyhow::Ok(())
    })
}

#[test]
fn kafka_json_to_postgres_writes_every_big_order_once() -> anyhow::Result<()> {
    let name = unique("json_orders");
    let table = format!("{name}_big");
    let job = format!("{name}_job");
    let outcome = kafka_json_to_postgres::run(argv(&[
        "--records",
        "600",
        "--topic",
        &name,
        "--table",
        &table,
        "--job",
        &job,
    ]))?;
    assert_eq!(outcome.rows, outcome.expected_rows, "{outcome:?}");
    assert_eq!(outcome.distinct_ids, outcome.rows, "{outcome:?}");
    assert!(outcome.rows > 0, "{outcome:?}");
    assert_eq!(
        (outcome.dead_letters, outcome.poison),
        (2, 2),
        "{outcome:?}"
    );
    clean_up(&table, &job)
}

#[test]
fn kafka_avro_registry_upsert_keeps_the_last_version() -> anyhow::Result<()> {
    let name = unique("avro_orders");
    let table = format!("{name}_latest");
    let job = format!("{name}_job");
    let outcome = kafka_avro_registry_upsert::run(argv(&[
        "--ids",
        "80",
        "--versions",
        "3",
        "--topic",
        &name,
        "--table",
        &table,
        "--job",
        &job,
    ]))?;
    assert_eq!(outcome.produced, 240, "{outcome:?}");
    assert_eq!((outcome.rows, outcome.latest), (80, 80), "{outcome:?}");
    assert_eq!(outcome.dead_letters, 0, "{outcome:?}");
    assert!(outcome.schema_id > 0, "{outcome:?}");
    clean_up(&table, &job)
}
