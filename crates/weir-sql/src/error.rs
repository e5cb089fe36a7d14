//! weir-sql's error type.

use weir_core::TopicPartition;

/// A specialised `Result` for weir-sql.
///
/// ```
/// fn table(name: &str) -> weir_sql::Result<weir_sql::TableName> {
///     weir_sql::TableName::new(name)
/// }
/// assert!(table("orders").is_ok());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything weir-sql can fail with, named for what the caller does next.
///
/// Database errors are kept as [`sqlx::Error`], whose messages never contain the
/// connection string (weir never formats one).
///
/// ```
/// use weir_sql::Error;
/// let e = Error::identifier("a\0b", "contains a NUL byte");
/// assert_eq!(e.to_string(), "invalid SQL identifier \"a\\0b\": contains a NUL byte");
/// assert!(!e.is_retriable());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A table, schema or column name was refused (empty, NUL byte, too long).
    #[error("invalid SQL identifier {name:?}: {reason}")]
    Identifier {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A column's type was refused before any SQL was sent (a decimal precision or
    /// scale out of range).
    ///
    /// ```
    /// use weir_sql::{Column, ColumnType, Error};
    /// let e = Column::new("amount", ColumnType::Decimal { precision: 40, scale: 2 }, false).unwrap_err();
    /// assert!(matches!(e, Error::ColumnType { .. }), "{e}");
    /// assert!(e.to_string().contains("amount"), "{e}");
    /// ```
    #[error("invalid type for column {column:?}: {reason}")]
    ColumnType {
        /// The column's name.
        column: String,
        /// What is wrong with its type.
        reason: String,
    },

    /// Another owner claimed the partition (its epoch is newer, or the stored offset
    /// moved): this member stops processing it and drops what it buffered.
    #[error("fenced on {partition}: {detail}")]
    Fenced {
        /// The partition this member lost.
        partition: TopicPartition,
        /// What the offsets row showed.
        detail: String,
    },

    /// The database reported an error.
    #[error("database error during {during}: {source}")]
    Database {
        /// What weir was doing (`claim`, `commit`, `sink write`, ...).
        during: &'static str,
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },

    /// A sink failed for a reason other than the database.
    #[error("sink `{sink}` failed: {message}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What failed.
        message: String,
        /// Whether trying the batch again may succeed.
        retriable: bool,
    },

    /// The offsets table (or dead-letter table) exists with an unexpected shape.
    #[error("table {table} has an unexpected schema: {reason}")]
    Schema {
        /// The table, quoted.
        table: String,
        /// What is missing or wrong.
        reason: String,
    },

    /// The database connection is set up in a way weir cannot run on safely (e.g. a
    /// MySQL `sql_mode` that truncates over-long values instead of refusing them);
    /// `reason` names the fix. Not retriable: change the setting and start again.
    #[error("unsafe database setting `{setting}`: {reason}")]
    Setting {
        /// The setting, as the database names it (`sql_mode`).
        setting: &'static str,
        /// What is wrong with its value and how to fix it.
        reason: String,
    },

    /// The consumer failed.
    #[error(transparent)]
    Consumer(#[from] weir_core::Error),

    /// A transient failure did not clear within the configured retry time.
    #[error("gave up after {attempts} attempts during {during}: {last}")]
    RetriesExhausted {
        /// What was being retried.
        during: &'static str,
        /// How many attempts were made.
        attempts: u32,
        /// The last error.
        last: Box<Error>,
    },
}

impl Error {
    /// An [`Error::Identifier`].
    ///
    /// ```
    /// let e = weir_sql::Error::identifier("x y", "no spaces here");
    /// assert!(matches!(e, weir_sql::Error::Identifier { .. }));
    /// ```
    pub fn identifier(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Identifier {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// A database error while doing `during` (what a [`TransactionalSink`] returns
    /// for its own statements, so that weir can classify them).
    ///
    /// [`TransactionalSink`]: crate::TransactionalSink
    ///
    /// ```
    /// let e = weir_sql::Error::db("counts upsert", sqlx::Error::PoolTimedOut);
    /// assert!(e.to_string().starts_with("database error during counts upsert"));
    /// assert!(e.is_retriable());
    /// ```
    pub fn db(during: &'static str, source: sqlx::Error) -> Self {
        Error::Database { during, source }
    }

    /// Whether trying the same operation again may succeed (connection lost, pool
    /// timeout, lock contention, serialization failure). A value the database refuses,
    /// a schema problem, a fence or an unsafe setting is not.
    ///
    /// ```
    /// use weir_sql::Error;
    /// assert!(Error::db("commit", sqlx::Error::PoolTimedOut).is_retriable());
    /// assert!(!Error::db("commit", sqlx::Error::RowNotFound).is_retriable());
    /// assert!(!Error::identifier("", "is empty").is_retriable());
    /// ```
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Database { source, .. } => crate::classify::is_transient(source),
            Error::Sink { retriable, .. } => *retriable,
            Error::Consumer(e) => e.is_retriable(),
            _ => false,
        }
    }
}

impl Error {
    /// Whether the database refused a value of a row (a NUL byte in text, a value too
    /// long or out of range, a constraint): the record that produced it is bad, the
    /// rest of its batch is not. weir isolates such rows by bisection and dead-letters
    /// them.
    ///
    /// ```
    /// assert!(!weir_sql::Error::db("sink write", sqlx::Error::PoolTimedOut).is_row_error());
    /// ```
    pub fn is_row_error(&self) -> bool {
        matches!(self, Error::Database { source, .. }
            if crate::classify::classify(source) == crate::classify::ErrorClass::Row)
    }
}

impl From<Error> for weir_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Fenced { partition, detail } => weir_core::Error::Fenced { partition, detail },
            Error::Consumer(e) => e,
            other => weir_core::Error::Listener(Box::new(other)),
        }
    }
}
