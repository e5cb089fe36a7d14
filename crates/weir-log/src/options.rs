//! How a [`Log`](crate::Log) stores data: durability, segment size, retention.

use std::time::Duration;

use crate::Result;

/// The smallest accepted [`LogOptions::segment_bytes`].
pub const MIN_SEGMENT_BYTES: u64 = 1024;
/// The largest accepted [`LogOptions::segment_bytes`] (positions in the offset index
/// are 32-bit).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 31;

/// When an append is durable, i.e. what survives which crash once
/// [`Log::append`](crate::Log::append) has returned `Ok`.
///
/// Whatever the mode, an append is either wholly present after recovery or wholly
/// absent (every batch carries a CRC32C; a torn tail is truncated on open), records are
/// never reordered. In `Always` and `Interval` modes a segment is fsynced before the
/// log rolls to a new one, so a power loss can only affect the newest segment.
///
/// ```
/// use std::time::Duration;
/// use weir_log::{Durability, LogOptions};
/// let safe = LogOptions::default().with_durability(Durability::Always);
/// let fast = LogOptions::default().with_durability(Durability::Interval(Duration::from_millis(50)));
/// assert!(matches!(safe.durability, Durability::Always));
/// assert!(matches!(fast.durability, Durability::Interval(_)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `write(2)` then `fdatasync(2)` of the segment before `append` returns, and
    /// readers see a record only after that. An acknowledged record survives a
    /// process crash, a kernel crash and a power loss (given a disk that honours
    /// flushes). The default.
    Always,
    /// `write(2)` before `append` returns; a background thread fsyncs every partition
    /// written to at most this often (and a clean close or [`Log::flush`](crate::Log::flush)
    /// fsyncs at once). An acknowledged record survives a process crash; a kernel crash
    /// or power loss can lose the records acknowledged during the last interval plus
    /// the duration of one fsync (the loss window), never earlier ones, and never
    /// anything out of order. Readers see a record once it is written, before its
    /// fsync.
    Interval(Duration),
    /// `write(2)` only: the operating system writes the page cache back when it likes
    /// (segments are fsynced only by [`Log::flush`](crate::Log::flush) and when the
    /// last handle is dropped). An acknowledged record survives a process crash
    /// (kill -9), not a kernel crash or power loss, which can lose any record written
    /// since the last flush. After such a loss the log either opens with a shorter
    /// tail or, if the loss left a hole followed by surviving data, refuses to open
    /// with [`Error::Corrupt`](weir_core::Error::Corrupt) naming the file, rather than
    /// silently skipping records. Readers see a record once it is written.
    Os,
}

/// Options for [`Log::open`](crate::Log::open).
///
/// Within one process the first opener of a directory decides the options; later
/// opens of the same directory return the already open log.
///
/// ```
/// use std::time::Duration;
/// use weir_log::{Durability, LogOptions};
/// let options = LogOptions::default()
///     .with_durability(Durability::Os)
///     .with_segment_bytes(8 << 20)
///     .with_retention_bytes(Some(1 << 30))
///     .with_retention_age(Some(Duration::from_secs(7 * 24 * 3600)));
/// assert_eq!(options.segment_bytes, 8 << 20);
/// options.validate().unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// When appends are durable. Default [`Durability::Always`].
    pub durability: Durability,
    /// A partition rolls to a new segment file once the current one would grow past
    /// this many bytes. Default 64 MiB; from 1 KiB to 2 GiB.
    pub segment_bytes: u64,
    /// Keep at most about this many bytes per partition: whole oldest segments are
    /// deleted while the rest still holds at least this much. The newest segment is
    /// never deleted. Default `None` (unbounded).
    pub retention_bytes: Option<u64>,
    /// Delete whole segments whose newest record timestamp is older than this. The
    /// newest segment is never deleted. Default `None` (forever).
    pub retention_age: Option<Duration>,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Always,
            segment_bytes: 64 << 20,
            retention_bytes: None,
            retention_age: None,
        }
    }
}

impl LogOptions {
    /// Sets [`LogOptions::durability`].
    ///
    /// ```
    /// let o = weir_log::LogOptions::default().with_durability(weir_log::Durability::Os);
    /// assert_eq!(o.durability, weir_log::Durability::Os);
    /// ```
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets [`LogOptions::segment_bytes`].
    ///
    /// ```
    /// let o = weir_log::LogOptions::default().with_segment_bytes(1 << 20);
    /// assert_eq!(o.segment_bytes, 1 << 20);
    /// ```
    pub fn with_segment_bytes(mut self, segment_bytes: u64) -> Self {
        self.segment_bytes = segment_bytes;
        self
    }

    /// Sets [`LogOptions::retention_bytes`].
    ///
    /// ```
    /// let o = weir_log::LogOptions::default().with_retention_bytes(Some(1 << 30));
    /// assert_eq!(o.retention_bytes, Some(1 << 30));
    /// ```
    pub fn with_retention_bytes(mut self, retention_bytes: Option<u64>) -> Self {
        self.retention_bytes = retention_bytes;
        self
    }

    /// Sets [`LogOptions::retention_age`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let o = weir_log::LogOptions::default().with_retention_age(Some(Duration::from_secs(3600)));
    /// assert_eq!(o.retention_age, Some(Duration::from_secs(3600)));
    /// ```
    pub fn with_retention_age(mut self, retention_age: Option<Duration>) -> Self {
        self.retention_age = retention_age;
        self
    }

    /// Checks the values; [`Log::open`](crate::Log::open) calls it.
    ///
    /// ```
    /// let bad = weir_log::LogOptions::default().with_segment_bytes(10);
    /// let err = bad.validate().unwrap_err();
    /// assert!(err.to_string().contains("segment_bytes"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(weir_core::Error::config(
                "segment_bytes",
                format!(
                    "must be between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}, got {}",
                    self.segment_bytes
                ),
            ));
        }
        if let Durability::Interval(d) = self.durability {
            if d.is_zero() {
                return Err(weir_core::Error::config(
                    "durability",
                    "Interval(0) is not allowed: use Durability::Always to fsync every append",
                ));
            }
        }
        if self.retention_bytes == Some(0) {
            return Err(weir_core::Error::config(
                "retention_bytes",
                "must be at least 1 (use None for unbounded)",
            ));
        }
        if self.retention_age.is_some_and(|d| d.is_zero()) {
            return Err(weir_core::Error::config(
                "retention_age",
                "must be positive (use None to keep forever)",
            ));
        }
        Ok(())
    }
}
