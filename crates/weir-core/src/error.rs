//! weir-core's error type.

use std::path::PathBuf;

use crate::TopicPartition;

/// A specialised `Result` for consumer operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a consumer operation can fail with. Variants are named for what the
/// caller does next.
///
/// ```
/// use weir_core::Error;
/// let e = Error::config("max.poll.records", "must be at least 1, got 0");
/// assert_eq!(e.to_string(), "invalid configuration `max.poll.records`: must be at least 1, got 0");
/// assert!(!e.is_retriable());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// [`WakeupHandle::wakeup`](crate::WakeupHandle::wakeup) was called: leave the poll
    /// loop and `close()` the consumer.
    #[error("consumer woken up")]
    Wakeup,

    /// This member no longer owns the partition: another owner has claimed it. Stop
    /// processing it and drop whatever was buffered for it.
    #[error("fenced on {partition}: {detail}")]
    Fenced {
        /// The partition this member lost.
        partition: TopicPartition,
        /// What showed it (epoch, generation).
        detail: String,
    },

    /// A configuration property has a bad value or is unknown to this backend.
    #[error("invalid configuration `{key}`: {reason}")]
    Config {
        /// The property's name, e.g. `session.timeout.ms`.
        key: String,
        /// What is wrong and what is accepted.
        reason: String,
    },

    /// The topic does not exist.
    #[error("unknown topic `{topic}`")]
    UnknownTopic {
        /// The topic asked for.
        topic: String,
    },

    /// The topic exists but not this partition.
    #[error("unknown partition {0}")]
    UnknownPartition(TopicPartition),

    /// The operation needs the partition to be assigned to this consumer.
    #[error("partition {0} is not assigned to this consumer")]
    NotAssigned(TopicPartition),

    /// No committed offset and `auto.offset.reset=none`, or a position outside the log
    /// with `none`.
    #[error("no valid offset for {partition} (position {position:?}, log {log_start}..{log_end}) and auto.offset.reset=none")]
    NoOffset {
        /// The partition.
        partition: TopicPartition,
        /// The position that was invalid, if there was one.
        position: Option<i64>,
        /// The log start offset.
        log_start: i64,
        /// The log end offset.
        log_end: i64,
    },

    /// An offset outside the partition's log was asked for.
    #[error("offset {offset} out of range for {partition} (log {log_start}..{log_end})")]
    OffsetOutOfRange {
        /// The partition.
        partition: TopicPartition,
        /// The offset asked for.
        offset: i64,
        /// The log start offset.
        log_start: i64,
        /// The log end offset.
        log_end: i64,
    },

    /// The group removed this member because it did not poll within
    /// `max.poll.interval.ms`; its partitions were reassigned. The next poll rejoins.
    #[error("member removed from group `{group}`: no poll within max.poll.interval.ms ({max_poll_interval_ms} ms)")]
    PollIntervalExceeded {
        /// The group.
        group: String,
        /// The configured interval.
        max_poll_interval_ms: u64,
    },

    /// A commit was rejected because the group rebalanced since the records were
    /// polled; the partitions may now belong to another member.
    #[error("commit rejected by group `{group}`: {reason}")]
    CommitFailed {
        /// The group.
        group: String,
        /// Why (generation, ownership).
        reason: String,
    },

    /// The call is not allowed in the consumer's current state (e.g. `subscribe` after
    /// `assign`, `commit` without `group.id`).
    #[error("illegal state: {0}")]
    IllegalState(String),

    /// The consumer was closed.
    #[error("consumer is closed")]
    Closed,

    /// The operation did not complete in time.
    #[error("timed out: {0}")]
    Timeout(String),

    /// An I/O error on a file of the embedded log.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Stored data failed its checks (CRC, framing) beyond what recovery repairs.
    #[error("corrupt data in {} at byte {position}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The byte position in it.
        position: u64,
        /// What failed.
        reason: String,
    },

    /// The log refuses writes after a failed flush (its durability can no longer be
    /// promised); reopen it.
    #[error("log is poisoned after a failed flush of {}: reopen it", path.display())]
    Poisoned {
        /// The file whose flush failed.
        path: PathBuf,
    },

    /// The [`RebalanceListener`](crate::RebalanceListener) returned an error.
    #[error("rebalance listener failed: {0}")]
    Listener(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// An error from the backend (broker, client library) not covered above.
    #[error("{backend}: {message}")]
    Backend {
        /// `kafka`, `log`, ...
        backend: &'static str,
        /// What it said (secrets removed).
        message: String,
        /// Whether trying again may succeed.
        retriable: bool,
    },
}

impl Error {
    /// A [`Error::Config`] for `key`.
    pub fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether trying the same operation again may succeed.
    ///
    /// ```
    /// use weir_core::Error;
    /// assert!(Error::Timeout("fetch".into()).is_retriable());
    /// assert!(!Error::Wakeup.is_retriable());
    /// assert!(!Error::config("group.id", "empty").is_retriable());
    /// ```
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Timeout(_) | Error::CommitFailed { .. } => true,
            Error::Backend { retriable, .. } => *retriable,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_static() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Error>();
    }

    #[test]
    fn messages_name_what_and_where() {
        let e = Error::OffsetOutOfRange {
            partition: TopicPartition::new("orders", 2),
            offset: 5,
            log_start: 10,
            log_end: 20,
        };
        assert_eq!(
            e.to_string(),
            "offset 5 out of range for orders-2 (log 10..20)"
        );
        let e = Error::UnknownTopic {
            topic: "nope".into(),
        };
        assert!(e.to_string().contains("nope"));
    }
}
