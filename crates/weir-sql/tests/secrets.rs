//! Secrets: a canary password in the database URL never shows up in weir's errors,
//! Debug output, dead letters or log output (every event at TRACE level captured). (weir never sees URLs: users bring their pool; this
//! checks the errors weir wraps and the types it prints.)

mod common;

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use weir_core::{Record, TopicPartition};
use weir_sql::{DeadLetter, ExactlyOnceRunner, OffsetStore, Reject, Stage, TableName, TableSink};

const CANARY: &str = "Canary-Pw-7f3a9c";

/// Everything logged while the guard lives, as text.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn canary_password_appears_nowhere() -> anyhow::Result<()> {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
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
    )?
    .with_retry_for(Duration::from_millis(800));
    // retries a failing connection, logging each failure
    let err3 = runner
        .migrate()
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("runner migrate succeeded"))?;
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
        format!("{err3:?}"),
        logs.text(),
    ];
    for (i, o) in outputs.iter().enumerate() {
        assert!(!o.contains(CANARY), "output {i} leaks the password: {o}");
    }
    let log = logs.text();
    assert!(
        log.contains("retrying"),
        "the retries were not logged, so the log check proves nothing: {log}"
    );
    println!(
        "secrets: 0 canary hits in {} outputs, {} bytes of log",
        outputs.len(),
        log.len()
    );
    Ok(())
}
