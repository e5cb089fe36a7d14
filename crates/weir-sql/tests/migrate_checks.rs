//! `OffsetStore::migrate` checks the connection's settings: a MySQL/MariaDB session
//! without a strict `sql_mode` (which would store over-long values truncated instead
//! of refusing them) is refused with an error naming `sql_mode` and the fix; a SQLite
//! database not in WAL mode is migrated with a warning naming the fix.

mod common;

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;

use common::TestDb;
use parking_lot::Mutex;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use weir_core::Record;
use weir_sql::{impl_row, Error, ExactlyOnceRunner, OffsetStore, TableName, TableSink};

struct Out {
    id: i64,
}
impl_row!(Out { id });

#[tokio::test]
async fn mysql_non_strict_sql_mode_is_refused() -> anyhow::Result<()> {
    let (shared, db) = common::mysql("sql_mode").await?;
    shared.close().await;
    // One connection, so the session setting below is the one migrate sees.
    let pool = MySqlPoolOptions::new()
        .max_connections(1)
        .connect_with(MySqlConnectOptions::from_str(common::MY_URL)?.database(&db))
        .await?;
    sqlx::MySql::exec(&pool, "SET SESSION sql_mode = ''".into()).await?;

    let store = OffsetStore::<sqlx::MySql>::new("strict-job")?;
    let err = match store.migrate(&pool).await {
        Ok(()) => anyhow::bail!("migrate accepted a session with sql_mode = ''"),
        Err(e) => e,
    };
    assert!(
        matches!(
            err,
            Error::Setting {
                setting: "sql_mode",
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    for needle in ["sql_mode", "STRICT_TRANS_TABLES", "after_connect"] {
        assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
    }
    assert!(!err.is_retriable());
    assert_eq!(
        sqlx::MySql::scalar(&pool, sqlx::MySql::COUNT_TABLES.into()).await?,
        0,
        "nothing is created on a refused connection"
    );

    // The runner's migrate surfaces the same error (it does not retry it).
    let sink = TableSink::<sqlx::MySql, Out>::new(TableName::new("out")?)?;
    let runner = ExactlyOnceRunner::new(pool.clone(), "strict-job", sink, |r: &Record| {
        Ok(vec![Out { id: r.offset }])
    })?;
    let err = match runner.migrate().await {
        Ok(()) => anyhow::bail!("the runner's migrate accepted sql_mode = ''"),
        Err(e) => e,
    };
    assert!(
        matches!(
            err,
            Error::Setting {
                setting: "sql_mode",
                ..
            }
        ),
        "{err:?}"
    );

    // The fix the message names works, and strict sessions migrate.
    sqlx::MySql::exec(
        &pool,
        "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), \
         'STRICT_TRANS_TABLES')"
            .into(),
    )
    .await?;
    store.migrate(&pool).await?;
    sqlx::MySql::exec(&pool, "SET SESSION sql_mode = 'STRICT_ALL_TABLES'".into()).await?;
    store.migrate(&pool).await?;
    runner.migrate().await?;
    Ok(())
}

#[tokio::test]
async fn mysql_default_sql_mode_migrates() -> anyhow::Result<()> {
    let (pool, _db) = common::mysql("sql_mode_default").await?;
    OffsetStore::<sqlx::MySql>::new("strict-job")?
        .migrate(&pool)
        .await?;
    Ok(())
}

/// The events logged on this thread while it lives (level and fields).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<(tracing::Level, String)>>>);

impl Captured {
    fn warnings_about(&self, what: &str) -> Vec<String> {
        self.0
            .lock()
            .iter()
            .filter(|(level, text)| *level == tracing::Level::WARN && text.contains(what))
            .map(|(_, text)| text.clone())
            .collect()
    }
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl tracing::Subscriber for Captured {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().push((*event.metadata().level(), fields.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Migrate a fresh SQLite file opened in `mode`; the journal_mode warnings logged.
async fn sqlite_migrate_in(mode: SqliteJournalMode) -> anyhow::Result<Vec<String>> {
    let dir = tempfile::tempdir()?;
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(dir.path().join("db.sqlite"))
                .create_if_missing(true)
                .journal_mode(mode),
        )
        .await?;
    let captured = Captured::default();
    let store = OffsetStore::<sqlx::Sqlite>::new("wal-job")?;
    {
        // The test runs on one thread: everything migrate logs reaches `captured`.
        let _guard = tracing::subscriber::set_default(captured.clone());
        store.migrate(&pool).await?;
    }
    // Migrated: the table is there and usable.
    let tp = weir_core::TopicPartition::new("t", 0);
    let c = store.claim(&pool, std::slice::from_ref(&tp), "me").await?;
    assert_eq!(c[&tp].epoch, 1);
    Ok(captured.warnings_about("journal_mode"))
}

#[tokio::test]
async fn sqlite_without_wal_migrates_with_a_warning() -> anyhow::Result<()> {
    let warnings = sqlite_migrate_in(SqliteJournalMode::Delete).await?;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("SqliteConnectOptions::journal_mode(SqliteJournalMode::Wal)"),
        "the warning must name the fix: {warnings:?}"
    );
    assert!(warnings[0].contains("delete"), "{warnings:?}");
    Ok(())
}

#[tokio::test]
async fn sqlite_file_with_memory_journal_is_warned_about() -> anyhow::Result<()> {
    // Only an in-memory database is excused, not a file with an in-memory journal.
    let warnings = sqlite_migrate_in(SqliteJournalMode::Memory).await?;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    Ok(())
}

#[tokio::test]
async fn sqlite_in_wal_mode_migrates_quietly() -> anyhow::Result<()> {
    let warnings = sqlite_migrate_in(SqliteJournalMode::Wal).await?;
    assert!(warnings.is_empty(), "{warnings:?}");
    Ok(())
}

#[tokio::test]
async fn sqlite_in_memory_migrates_quietly() -> anyhow::Result<()> {
    // An in-memory database cannot be in WAL mode: no warning it could not act on.
    let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
    let captured = Captured::default();
    {
        let _guard = tracing::subscriber::set_default(captured.clone());
        OffsetStore::<sqlx::Sqlite>::new("mem-job")?
            .migrate(&pool)
            .await?;
    }
    let warnings = captured.warnings_about("journal_mode");
    assert!(warnings.is_empty(), "{warnings:?}");
    Ok(())
}
