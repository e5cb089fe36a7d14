//! The pipeline's errors, the operators' error value and the error policy.

use std::fmt;
use std::time::Duration;

use weir_core::Coordinates;

/// What a job's `build()` / `run_until()` can fail with.
///
/// ```
/// let e = weir_pipeline::Error::Build { job: "j".into(), stage: "sink".into(), reason: "no sink".into() };
/// assert_eq!(e.to_string(), "job `j`, sink: no sink");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The job is not well formed: found by `build()` before anything runs.
    #[error("job `{job}`, {stage}: {reason}")]
    Build {
        /// The job name.
        job: String,
        /// Which part: `source`, `value`, `sink \`orders\``, `config \`group.id\``, ….
        stage: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A stage whose policy is [`OnError::Fail`] failed on a record. Nothing of that
    /// record's batch was committed: a restart re-reads it.
    #[error("stage `{stage}` failed on {at} (policy: fail the job): {message}")]
    Stage {
        /// The operator.
        stage: String,
        /// The record.
        at: Coordinates,
        /// The operator's error.
        message: String,
    },
    /// The consumer failed (not retriable).
    #[error(transparent)]
    Consumer(#[from] weir_core::Error),
    /// The database failed (not retriable, or retries exhausted).
    #[error(transparent)]
    Sql(#[from] weir_sql::Error),
    /// Shutdown did not finish within the deadline: in-flight transactions were
    /// abandoned (rolled back by the database); their records are re-read on restart.
    #[error("shutdown did not finish within {0:?}; uncommitted batches were abandoned and will be re-read on restart")]
    ShutdownDeadline(Duration),
    /// A second shutdown signal aborted the drain; nothing is half-committed.
    #[error("shutdown aborted by a second signal; uncommitted batches will be re-read on restart")]
    Aborted,
}

impl Error {
    /// Whether trying again later may succeed.
    ///
    /// ```
    /// assert!(!weir_pipeline::Error::Aborted.is_retriable());
    /// ```
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Consumer(e) => e.is_retriable(),
            Error::Sql(e) => e.is_retriable(),
            _ => false,
        }
    }
}

/// A specialised `Result` for pipelines.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a permanent failure of a stage does with its record.
///
/// A transient (retriable) failure never follows the policy: the partition waits and
/// retries the record, so a good record is never dead-lettered because a service was
/// down.
///
/// | policy | the record | the job |
/// |---|---|---|
/// | `DeadLetter` (default) | one row in the dead letters, same transaction as its offset | goes on |
/// | `Skip` | consumed, counted (`skipped`), logged with its coordinates | goes on |
/// | `Fail` | not committed | stops with [`Error::Stage`] |
///
/// ```
/// assert_eq!(weir_pipeline::OnError::default(), weir_pipeline::OnError::DeadLetter);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnError {
    /// Stop the job.
    Fail,
    /// Consume the record, write nothing, count it.
    Skip,
    /// Write the record to the dead letters in the same transaction as its offset.
    #[default]
    DeadLetter,
}

/// The error of a fallible operator (`try_map`, `map_async`): a message and whether it
/// is retriable.
///
/// Conversions keep retryability: a weir-formats decode error or a registry outage
/// converts as retriable when it is; strings and other errors convert as permanent.
///
/// ```
/// use weir_pipeline::OpError;
/// assert!(!OpError::permanent("negative amount").is_retriable());
/// assert!(OpError::retriable("price service timed out").is_retriable());
/// let e: OpError = "bad currency".into();
/// assert_eq!(e.to_string(), "bad currency");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    message: String,
    retriable: bool,
}

impl OpError {
    /// The record is bad: the stage's policy applies.
    pub fn permanent(e: impl fmt::Display) -> Self {
        Self {
            message: e.to_string(),
            retriable: false,
        }
    }

    /// Something outside the record failed: the partition pauses and retries it.
    pub fn retriable(e: impl fmt::Display) -> Self {
        Self {
            message: e.to_string(),
            retriable: true,
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_retriable(&self) -> bool {
        self.retriable
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for OpError {}

impl From<&str> for OpError {
    fn from(s: &str) -> Self {
        Self::permanent(s)
    }
}

impl From<String> for OpError {
    fn from(s: String) -> Self {
        Self::permanent(s)
    }
}

impl From<weir_formats::DeserializeError> for OpError {
    fn from(e: weir_formats::DeserializeError) -> Self {
        let retriable = e.is_retriable();
        Self {
            message: e.to_string(),
            retriable,
        }
    }
}

impl From<weir_formats::Error> for OpError {
    fn from(e: weir_formats::Error) -> Self {
        let retriable = e.is_retriable();
        Self {
            message: e.to_string(),
            retriable,
        }
    }
}

impl From<weir_sql::Reject> for OpError {
    fn from(r: weir_sql::Reject) -> Self {
        Self {
            message: r.message().to_owned(),
            retriable: r.is_retriable(),
        }
    }
}

impl From<std::convert::Infallible> for OpError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}
