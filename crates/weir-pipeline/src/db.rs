//! Opening the job's database from a URL, per dialect.

use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::Pool;
use weir_sql::Dialect;

/// A database weir can open from a URL for a job (implemented for `sqlx::Postgres`,
/// `sqlx::Sqlite`, `sqlx::MySql`).
pub trait Database: Dialect {
    /// The URL schemes of this database.
    const SCHEMES: &'static [&'static str];

    /// Open a pool of `max` connections.
    #[doc(hidden)]
    fn open(url: &str, max: u32) -> BoxFuture<'_, Result<Pool<Self>, sqlx::Error>>;
}

/// Pool options for a networked database: `max` connections, a 10 s acquire
/// timeout and, on a TCP connection to `tcp`, `TCP_NODELAY` (sqlx 0.9 leaves Nagle
/// on; see `weir_sql::nodelay`).
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn pool_options<DB: sqlx::Database>(
    max: u32,
    tcp: Option<(&str, u16)>,
) -> sqlx::pool::PoolOptions<DB> {
    let pool = sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10));
    match tcp {
        Some((host, port)) => {
            pool.after_connect(weir_sql::nodelay::after_connect::<DB>(host, port))
        }
        None => pool,
    }
}

#[cfg(feature = "postgres")]
impl Database for sqlx::Postgres {
    const SCHEMES: &'static [&'static str] = &["postgres://", "postgresql://"];
    fn open(url: &str, max: u32) -> BoxFuture<'_, Result<Pool<Self>, sqlx::Error>> {
        Box::pin(async move {
            use std::str::FromStr;
            let opts = sqlx::postgres::PgConnectOptions::from_str(url)?;
            let tcp = opts.get_socket().is_none();
            pool_options::<Self>(max, tcp.then(|| (opts.get_host(), opts.get_port())))
                .connect_with(opts)
                .await
        })
    }
}

#[cfg(feature = "mysql")]
impl Database for sqlx::MySql {
    const SCHEMES: &'static [&'static str] = &["mysql://", "mariadb://"];
    fn open(url: &str, max: u32) -> BoxFuture<'_, Result<Pool<Self>, sqlx::Error>> {
        Box::pin(async move {
            let url = url
                .strip_prefix("mariadb://")
                .map_or_else(|| url.to_owned(), |rest| format!("mysql://{rest}"));
            use std::str::FromStr;
            let opts = sqlx::mysql::MySqlConnectOptions::from_str(&url)?;
            let tcp = opts.get_socket().is_none();
            pool_options::<Self>(max, tcp.then(|| (opts.get_host(), opts.get_port())))
                .connect_with(opts)
                .await
        })
    }
}

#[cfg(feature = "sqlite")]
impl Database for sqlx::Sqlite {
    const SCHEMES: &'static [&'static str] = &["sqlite:"];
    fn open(url: &str, max: u32) -> BoxFuture<'_, Result<Pool<Self>, sqlx::Error>> {
        Box::pin(async move {
            use std::str::FromStr;
            // A file created if missing, in WAL mode (readers never block the job's
            // writer), waiting on a busy lock rather than failing at once.
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5));
            // Switching a new file to WAL takes an exclusive lock and can answer
            // SQLITE_BUSY at once (the busy timeout does not cover it) when another
            // process opens the same file at that moment, e.g. a second instance
            // starting: retry that for a while rather than failing the job's start.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let mut wait = Duration::from_millis(10);
            loop {
                let r = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(max)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(opts.clone())
                    .await;
                match r {
                    Err(e) if sqlite_busy(&e) && std::time::Instant::now() < deadline => {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_millis(500));
                    }
                    r => return r,
                }
            }
        })
    }
}

/// SQLITE_BUSY (5) or SQLITE_LOCKED (6), extended codes included.
#[cfg(feature = "sqlite")]
fn sqlite_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

/// `url` with any password replaced by `***` (for errors and logs).
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let mut host = host.to_owned();
    if let Some((path, query)) = host.split_once('?') {
        let q: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.to_ascii_lowercase().contains("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        host = format!("{path}?{}", q.join("&"));
    }
    match auth {
        Some(a) => match a.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{a}@{host}"),
        },
        None => format!("{scheme}://{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:s3cret@h:5432/db?sslmode=require"),
            "postgres://u:***@h:5432/db?sslmode=require"
        );
        assert_eq!(redact("mysql://root@h/db"), "mysql://root@h/db");
        assert_eq!(
            redact("postgres://h/db?user=u&password=s3cret"),
            "postgres://h/db?user=u&password=***"
        );
        assert_eq!(redact("sqlite:jobs.db"), "sqlite:jobs.db");
    }
}
