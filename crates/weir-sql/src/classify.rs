//! Sorting database errors into "this row is bad", "try again" and "give up".

/// What a database error means for the batch that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// The database refused a value (NUL byte in text, too long, out of range,
    /// constraint): isolate the row and dead-letter it.
    Row,
    /// Connection lost, lock contention, serialization failure: retry the batch.
    Transient,
    /// Anything else (bad SQL, missing table): stop.
    Fatal,
}

/// Classify a sqlx error.
pub(crate) fn classify(e: &sqlx::Error) -> ErrorClass {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        // a pooled connection left mid-statement by a cancelled task (e.g. inside
        // COPY) refuses the first BEGIN and is usable again after it
        | sqlx::Error::BeginFailed => ErrorClass::Transient,
        sqlx::Error::Encode(_) => ErrorClass::Row,
        sqlx::Error::Database(db) => classify_db(db.as_ref()),
        _ => ErrorClass::Fatal,
    }
}

/// Whether retrying may succeed.
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    classify(e) == ErrorClass::Transient
}

fn classify_db(db: &dyn sqlx::error::DatabaseError) -> ErrorClass {
    #[allow(unused_imports)]
    use sqlx::error::DatabaseError as _;
    #[cfg(feature = "mysql")]
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return classify_mysql(my.number(), my.code().unwrap_or(""));
    }
    #[cfg(feature = "sqlite")]
    if let Some(lite) = db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
        let code: i64 = lite.code().and_then(|c| c.parse().ok()).unwrap_or(0);
        return classify_sqlite(code);
    }
    #[cfg(feature = "postgres")]
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return classify_sqlstate(pg.code());
    }
    match db.code() {
        Some(code) => classify_sqlstate(&code),
        None => ErrorClass::Fatal,
    }
}

/// PostgreSQL (and standard) SQLSTATE codes.
pub(crate) fn classify_sqlstate(code: &str) -> ErrorClass {
    let class = code.get(..2).unwrap_or("");
    match class {
        // data exception, integrity constraint violation
        "22" | "23" => ErrorClass::Row,
        // connection exception, transaction rollback (serialization, deadlock),
        // insufficient resources, operator intervention (terminate, shutdown)
        "08" | "40" | "53" | "57" => ErrorClass::Transient,
        // lock not available; idle-in-transaction timeout (the server ended a session
        // frozen mid-transaction: the member may resume, reconnect and be fenced)
        _ if code == "55P03" || code == "25P03" => ErrorClass::Transient,
        _ => ErrorClass::Fatal,
    }
}

/// SQLite extended result codes.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) fn classify_sqlite(code: i64) -> ErrorClass {
    match code & 0xff {
        // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR is not retried
        5 | 6 => ErrorClass::Transient,
        // SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH, SQLITE_RANGE
        18 | 19 | 20 | 25 => ErrorClass::Row,
        _ => ErrorClass::Fatal,
    }
}

/// MySQL / MariaDB error numbers (the SQLSTATE is too coarse: `HY000` covers both bad
/// values and lock timeouts).
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
pub(crate) fn classify_mysql(number: u16, sqlstate: &str) -> ErrorClass {
    match number {
        // lock wait timeout, deadlock, server gone, lost connection, query interrupted
        1205 | 1213 | 2006 | 2013 | 1317 | 1927 | 4031 => ErrorClass::Transient,
        // column cannot be null, duplicate entry, out of range, data truncated,
        // incorrect value, incorrect string value, data too long, check constraint
        1048 | 1062 | 1264 | 1265 | 1292 | 1366 | 1367 | 1406 | 3819 | 4025 | 1690 => {
            ErrorClass::Row
        }
        // ER_NET_PACKET_TOO_LARGE, "Got a packet bigger than 'max_allowed_packet'": a
        // statement carrying a record too big for the server. Its SQLSTATE (08S01)
        // says "connection", but retrying the same batch fails the same way: a row
        // error, so that the batch is bisected down to the oversized record. (The
        // server closes the connection right after sending it, so the bisection
        // must not count on that connection's savepoints.)
        1153 => ErrorClass::Row,
        _ => classify_sqlstate(sqlstate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_classes() {
        assert_eq!(classify_sqlstate("22021"), ErrorClass::Row); // NUL byte
        assert_eq!(classify_sqlstate("22001"), ErrorClass::Row); // too long
        assert_eq!(classify_sqlstate("22003"), ErrorClass::Row); // overflow
        assert_eq!(classify_sqlstate("40001"), ErrorClass::Transient);
        assert_eq!(classify_sqlstate("57P01"), ErrorClass::Transient); // terminated
        assert_eq!(classify_sqlstate("55P03"), ErrorClass::Transient); // lock_timeout
        assert_eq!(classify_sqlstate("25P03"), ErrorClass::Transient); // idle in transaction
        assert_eq!(classify_sqlstate("57P05"), ErrorClass::Transient); // idle session
        assert_eq!(classify_sqlstate("25P02"), ErrorClass::Fatal); // other class 25
        assert_eq!(classify_sqlstate("55000"), ErrorClass::Fatal); // other class 55
        assert_eq!(classify_sqlstate("42P01"), ErrorClass::Fatal); // no table
        assert_eq!(classify_sqlstate(""), ErrorClass::Fatal);
    }

    #[test]
    fn sqlite_and_mysql_codes() {
        assert_eq!(classify_sqlite(5), ErrorClass::Transient);
        assert_eq!(classify_sqlite(275), ErrorClass::Row); // SQLITE_CONSTRAINT_CHECK
        assert_eq!(classify_sqlite(1), ErrorClass::Fatal);
        assert_eq!(classify_mysql(1406, "22001"), ErrorClass::Row);
        assert_eq!(classify_mysql(1213, "40001"), ErrorClass::Transient);
        assert_eq!(classify_mysql(1205, "HY000"), ErrorClass::Transient); // lock wait timeout
        assert_eq!(classify_mysql(1146, "42S02"), ErrorClass::Fatal);
    }

    #[test]
    fn mysql_packet_too_large_is_a_row_error() {
        // As MariaDB sends it: number 1153, SQLSTATE 08S01 (a connection class, which
        // the SQLSTATE fallback alone would retry for ever).
        assert_eq!(classify_sqlstate("08S01"), ErrorClass::Transient);
        assert_eq!(classify_mysql(1153, "08S01"), ErrorClass::Row);
        // Server gone / lost connection stay transient.
        assert_eq!(classify_mysql(2006, "HY000"), ErrorClass::Transient);
        assert_eq!(classify_mysql(2013, "HY000"), ErrorClass::Transient);
    }
}
