//! Secrets: a canary password in the database URL never shows up in weir's errors,
//! Debug output or dead letters. (weir never sees URLs: users bring their pool; this
//! checks the errors weir wraps and the types it prints.)

mod common;

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use weir_core::{Record, TopicPartition};
use weir_sql::{DeadLetter, ExactlyOnceRunner, OffsetStore, Reject, Stage, TableName, TableSink};

const CANARY: &str = "Canary-Pw-7f3a9c";

#[tokio::test]
async fn canary_password_appears_nowhere() -> anyhow::Result<()> {
    // a pool that cannot connect (nothing listens on port 9), with a password
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy(&format!("postgres://weir:{CANARY}@127.0.0.1:9/test"))?;
    let store = OffsetStore::<sqlx::Postgres>::new("secret-job")?;
    let err = store
        .migrate(&pool)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("migrate succeeded"))?;
    let err2 = store
        .claim(&pool, &[TopicPartition::new("t", 0)], "me")
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("claim succeeded"))?;
    #[derive(Debug)]
    struct Row1 {
        n: i64,
    }
    weir_sql::impl_row!(Row1 { n });
    let sink = TableSink::<sqlx::Postgres, Row1>::new(TableName::new("t")?)?;
    let runner = ExactlyOnceRunner::new(
        pool.clone(),
        "secret-job",
        sink,
        |_r: &Record| -> Result<Vec<Row1>, Reject> { Ok(vec![Row1 { n: 1 }]) },
    )?;
    let letter = DeadLetter::new(Record::new("t", 0, 0, None, None), Stage::Sink, &err);
    let outputs = [
        err.to_string(),
        format!("{err:?}"),
        err2.to_string(),
        format!("{err2:?}"),
        format!("{runner:?}"),
        format!("{store:?}"),
        letter.error.clone(),
        weir_core::Error::from(err2).to_string(),
    ];
    for (i, o) in outputs.iter().enumerate() {
        assert!(!o.contains(CANARY), "output {i} leaks the password: {o}");
    }
    println!("secrets: 0 canary hits in {} outputs", outputs.len());
    Ok(())
}
