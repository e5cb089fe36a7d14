//! Creating weir's tables when several job instances start at once.
//!
//! [`OffsetStore::migrate`](crate::OffsetStore::migrate),
//! [`DeadLetters::migrate`](crate::DeadLetters::migrate) and
//! [`TableSink::create_table`](crate::TableSink::create_table) send `CREATE SCHEMA /
//! DATABASE / TABLE / INDEX … IF NOT EXISTS` statements. `IF NOT EXISTS` alone does
//! not make them safe to run from N instances at the same moment on every database;
//! [`run_ddl`] runs them (and the offsets table's `ALTER … ADD COLUMN` upgrades) so
//! that it is. What each database does (seen with 16 instances started together,
//! `tests/migrate_concurrent.rs`):
//!
//! - **PostgreSQL** checks `IF NOT EXISTS` against the committed catalog and takes no
//!   lock on the name it creates: two sessions both see no table, both insert their
//!   catalog rows, and the later one fails on a unique index of the catalog: SQLSTATE
//!   23505 on `pg_type_typname_nsp_index` (the table's row type) or
//!   `pg_namespace_nspname_index` (`CREATE SCHEMA`), or 42710 "type already exists" /
//!   42P07 "relation already exists" when the other session committed in between
//!   (and, by the same logic, 23505 on `pg_class_relname_nsp_index` for an index,
//!   42P06 for a schema). Without a fix 72 to 90 % of the calls failed. So the
//!   statements run in
//!   **one transaction that first takes `pg_advisory_xact_lock(WEIR, hash)`**, the
//!   hash of the schema (a qualified table, whose schema may be created too) or of the
//!   table name: the instances take turns, and each after the first finds the objects
//!   committed and skips them. The lock is transaction-scoped, so nothing can leave
//!   it held: `COMMIT`, `ROLLBACK`, a dropped future (sqlx rolls back a dropped
//!   transaction when its connection goes back to the pool) and a lost connection all
//!   release it. Its two-key form keeps it apart from an application's one-key
//!   advisory locks (the two key spaces do not overlap). The wait is bounded by the
//!   session's own `lock_timeout` / `statement_timeout`, if any. The lock alone is
//!   not enough: instances that name the same table with and without its schema
//!   take different keys, and then about one call in sixteen failed again.
//! - **MySQL / MariaDB** serialize DDL on one name with an exclusive metadata lock:
//!   the second `CREATE TABLE IF NOT EXISTS` waits for the first and then finds the
//!   table (a note, not an error); `CREATE DATABASE IF NOT EXISTS` likewise. No
//!   failure was seen in over 6,000 concurrent calls on MariaDB 10.11. `GET_LOCK` is not
//!   used: it is session-scoped, and a migration future dropped between `GET_LOCK`
//!   and `RELEASE_LOCK` would hand the still-locked connection back to the pool
//!   (sqlx's release ping does not release it), blocking every later migration.
//!   DDL commits implicitly there, so there is no transaction either.
//! - **SQLite** locks the whole database for a writer, so creations are serial: a
//!   `CREATE … IF NOT EXISTS` finds an existing object when it is prepared and then
//!   writes nothing, and one whose object another connection creates between prepare
//!   and run is prepared again (`SQLITE_SCHEMA`, handled inside SQLite) and finds
//!   it. A statement that must write waits for the lock up to the connection's
//!   `busy_timeout`, and past it fails with `SQLITE_BUSY` (at once with a zero
//!   timeout: half to seven tenths of the calls failed that way; none with sqlx's
//!   default of 5 s). The statements run one by one in autocommit mode, and `SQLITE_BUSY` is
//!   retried. (Not in one `BEGIN IMMEDIATE` transaction: that would take the write
//!   lock even when every table exists, and 16 instances queueing for it through
//!   SQLite's coarse busy-wait took about 20 times longer.)
//!
//! On every dialect an error that means "another session is creating or has just
//! created the same object" (the codes above; MySQL 1050 table exists, 1007 database
//! exists, 1061 duplicate key name, 1213 deadlock, 1205 lock wait timeout;
//! `SQLITE_BUSY`, `SQLITE_LOCKED`) is retried after a short randomized backoff, at
//! most [`ATTEMPTS`] times within [`RETRY_FOR`]: the retry's `IF NOT EXISTS` sees the
//! other session's committed object and skips it. That covers creators that do not
//! take weir's lock (an older weir, a schema tool, the same table named with and
//! without its schema) and MySQL versions whose metadata locking differs. Any other
//! error is returned at once, among them a unique violation on an index that is not
//! the catalog's (a `CREATE UNIQUE INDEX` over duplicate rows) and a duplicate column
//! (an `ALTER … ADD COLUMN` another instance ran first, which the offsets migration
//! ignores and then checks the table's shape).
//!
//! Indexes belong in the same statement list as their table: they are created under
//! the same lock and retried the same way (a catalog 23505 on
//! `pg_class_relname_nsp_index` or 42P07 for an index, MySQL 1061).

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::AssertSqlSafe;

use crate::dialect::Dialect;
use crate::{DialectKind, Error, Result, TableName, Value};

/// The first key of weir's PostgreSQL advisory locks (ASCII "weir").
const LOCK_CLASS: i32 = 0x7765_6972;

/// Most attempts at one migration.
pub(crate) const ATTEMPTS: u32 = 12;

/// Longest time spent retrying one migration.
pub(crate) const RETRY_FOR: Duration = Duration::from_secs(30);

/// Run `statements` (idempotent DDL: `CREATE … IF NOT EXISTS`, in order) on `conn`, safely
/// when other sessions run the same ones at the same time (see the module doc).
pub async fn run_ddl<DB: Dialect>(
    conn: &mut DB::Connection,
    during: &'static str,
    table: &TableName,
    statements: &[Arc<str>],
) -> Result<()> {
    let key = lock_key(table);
    let deadline = Instant::now() + RETRY_FOR;
    let mut attempt = 1;
    loop {
        match ddl_once::<DB>(conn, key, statements).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < ATTEMPTS && Instant::now() < deadline && is_race(&e) => {
                tracing::debug!(
                    table = %table,
                    attempt,
                    error = %e,
                    "another session is creating the same objects; trying again"
                );
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(Error::db(during, e)),
        }
    }
}

/// One attempt: on PostgreSQL all statements in one transaction behind the advisory
/// lock; elsewhere one by one, each in its own implicit transaction.
async fn ddl_once<DB: Dialect>(
    conn: &mut DB::Connection,
    key: i32,
    statements: &[Arc<str>],
) -> std::result::Result<(), sqlx::Error> {
    if DB::KIND != DialectKind::Postgres {
        for s in statements {
            DB::execute(conn, s, &[]).await?;
        }
        return Ok(());
    }
    let mut tx = sqlx::Connection::begin_with(conn, AssertSqlSafe(DB::BEGIN)).await?;
    match locked_statements::<DB>(&mut tx, key, statements).await {
        Ok(()) => tx.commit().await,
        Err(e) => {
            // A failed rollback leaves a broken connection, which the next attempt
            // reports with its own (non-race) error.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// The advisory lock (PostgreSQL), then the statements, on an open transaction.
async fn locked_statements<DB: Dialect>(
    tx: &mut DB::Connection,
    key: i32,
    statements: &[Arc<str>],
) -> std::result::Result<(), sqlx::Error> {
    if DB::KIND == DialectKind::Postgres {
        let lock: Arc<str> = Arc::from("SELECT pg_advisory_xact_lock($1, $2)");
        DB::execute(tx, &lock, &[Value::Int(LOCK_CLASS), Value::Int(key)]).await?;
    }
    for s in statements {
        DB::execute(tx, s, &[]).await?;
    }
    Ok(())
}

/// The second key of the advisory lock: the schema when there is one (its tables and
/// the schema itself are created under it), else the table name. FNV-1a, so that
/// every instance and every weir version computes the same key.
fn lock_key(table: &TableName) -> i32 {
    let text = match table.schema() {
        Some(schema) => format!("schema\0{}", schema.as_str()),
        None => format!("table\0{}", table.name().as_str()),
    };
    // The same 32 bits, as PostgreSQL's int4.
    fnv1a32(text.as_bytes()) as i32
}

fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// 5 ms doubling up to 320 ms, each scaled by a random factor in [0.5, 1) so that
/// instances that collided do not collide again in step.
fn backoff(attempt: u32) -> Duration {
    let base = 5_u64 << attempt.saturating_sub(1).min(6);
    let random = std::collections::hash_map::RandomState::new().hash_one(attempt);
    let ms = base / 2 + random % (base / 2).max(1);
    Duration::from_millis(ms)
}

/// Whether `e` means another session is creating (or just created) the same
/// objects, so that trying again finds them.
fn is_race(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    #[allow(unused_imports)]
    use sqlx::error::DatabaseError as _;
    #[cfg(feature = "mysql")]
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return is_race_mysql(my.number());
    }
    #[cfg(feature = "sqlite")]
    if let Some(lite) = db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
        let code: i64 = lite.code().and_then(|c| c.parse().ok()).unwrap_or(0);
        return is_race_sqlite(code);
    }
    match db.code() {
        Some(code) => is_race_sqlstate(&code, db.constraint()),
        None => false,
    }
}

/// PostgreSQL: a unique violation on a system catalog's index (`pg_…`: two sessions
/// inserting the same name), an object that already exists, a deadlock or
/// serialization failure, a lock wait that timed out. A unique violation on any
/// other index (a unique index built over duplicate rows) is not a race.
fn is_race_sqlstate(code: &str, constraint: Option<&str>) -> bool {
    match code {
        "23505" => constraint.is_some_and(|c| c.starts_with("pg_")),
        "42P07" | "42710" | "42P06" | "40P01" | "40001" | "55P03" => true,
        _ => false,
    }
}

/// MySQL / MariaDB: table exists, database exists, duplicate key (index) name,
/// deadlock, lock wait timeout.
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
fn is_race_mysql(number: u16) -> bool {
    matches!(number, 1050 | 1007 | 1061 | 1213 | 1205)
}

/// SQLite: `SQLITE_BUSY`, `SQLITE_LOCKED` (and their extended codes).
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
fn is_race_sqlite(code: i64) -> bool {
    matches!(code & 0xff, 5 | 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_the_published_one() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn lock_keys() -> Result<()> {
        let t = |name: &str| TableName::new(name);
        // Stable across versions: a changed key would let an old and a new instance
        // race again.
        assert_eq!(
            lock_key(&t("weir_offsets")?),
            fnv1a32(b"table\0weir_offsets") as i32
        );
        // A qualified table locks its schema: every table created there, and the
        // schema itself, under one key.
        assert_eq!(
            lock_key(&t("a")?.with_schema("ops")?),
            lock_key(&t("b")?.with_schema("ops")?)
        );
        assert_ne!(lock_key(&t("a")?), lock_key(&t("b")?));
        // A table named like a schema does not share its key.
        assert_ne!(lock_key(&t("ops")?), lock_key(&t("x")?.with_schema("ops")?));
        Ok(())
    }

    #[test]
    fn race_codes() {
        assert!(is_race_sqlstate("23505", Some("pg_type_typname_nsp_index")));
        assert!(is_race_sqlstate(
            "23505",
            Some("pg_namespace_nspname_index")
        ));
        assert!(is_race_sqlstate(
            "23505",
            Some("pg_class_relname_nsp_index")
        ));
        assert!(!is_race_sqlstate("23505", Some("orders_email_key")));
        assert!(!is_race_sqlstate("23505", None));
        assert!(is_race_sqlstate("42P07", None));
        assert!(is_race_sqlstate("42710", None));
        assert!(is_race_sqlstate("42P06", None));
        assert!(!is_race_sqlstate("42601", None)); // syntax error
        assert!(!is_race_sqlstate("42501", None)); // permission denied
        assert!(is_race_mysql(1050));
        assert!(is_race_mysql(1007));
        assert!(!is_race_mysql(1044)); // access denied to database
        assert!(!is_race_mysql(1064)); // syntax error
        assert!(is_race_sqlite(5));
        assert!(is_race_sqlite(517)); // SQLITE_BUSY_SNAPSHOT
        assert!(is_race_sqlite(6));
        assert!(!is_race_sqlite(1));
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for attempt in 1..=ATTEMPTS {
            let d = backoff(attempt);
            let base = 5_u64 << (attempt - 1).min(6);
            assert!(d >= Duration::from_millis(base / 2), "{attempt}: {d:?}");
            assert!(d < Duration::from_millis(base), "{attempt}: {d:?}");
        }
        let total: Duration = (1..ATTEMPTS).map(backoff).sum();
        assert!(total < RETRY_FOR, "{total:?}");
    }
}
