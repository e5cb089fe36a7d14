//! What a producer hands to the log.

use std::fmt;

use bytes::Bytes;
use weir_core::Header;

/// A record to append: key, value, headers and an optional timestamp. The log assigns
/// the offset.
///
/// ```
/// use weir_log::NewRecord;
/// let r = NewRecord::new("user-7", "clicked");
/// assert_eq!(r.key.as_deref(), Some(&b"user-7"[..]));
/// let tombstone = NewRecord { value: None, ..NewRecord::new("user-7", "") };
/// assert!(tombstone.value.is_none());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    /// The key, or `None` for a null key.
    pub key: Option<Bytes>,
    /// The value, or `None` for a null value (a tombstone).
    pub value: Option<Bytes>,
    /// Headers, kept in order.
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch; `None` stamps the record with the append
    /// time. Retention by age uses these timestamps.
    pub timestamp: Option<i64>,
}

impl NewRecord {
    /// A record with a key and a value.
    ///
    /// ```
    /// let r = weir_log::NewRecord::new(&b"k"[..], vec![1u8, 2, 3]);
    /// assert_eq!(r.value.as_deref(), Some(&[1u8, 2, 3][..]));
    /// ```
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            key: Some(key.into()),
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// A record with a null key and a value.
    ///
    /// ```
    /// let r = weir_log::NewRecord::value("hello");
    /// assert!(r.key.is_none());
    /// ```
    pub fn value(value: impl Into<Bytes>) -> Self {
        Self {
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// Adds a header.
    ///
    /// ```
    /// let r = weir_log::NewRecord::value("v").with_header(weir_core::Header::new("h", "x"));
    /// assert_eq!(r.headers.len(), 1);
    /// ```
    pub fn with_header(mut self, header: Header) -> Self {
        self.headers.push(header);
        self
    }

    /// Sets the timestamp (milliseconds since the Unix epoch).
    ///
    /// ```
    /// let r = weir_log::NewRecord::value("v").with_timestamp(1_700_000_000_000);
    /// assert_eq!(r.timestamp, Some(1_700_000_000_000));
    /// ```
    pub fn with_timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

/// Payloads are summarised (length only) so that `Debug` never dumps user data.
impl fmt::Debug for NewRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewRecord")
            .field("key_len", &self.key.as_ref().map(Bytes::len))
            .field("value_len", &self.value.as_ref().map(Bytes::len))
            .field("headers", &self.headers.len())
            .field("timestamp", &self.timestamp)
            .finish()
    }
}
