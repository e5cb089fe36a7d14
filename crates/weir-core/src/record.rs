//! Records and their coordinates.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// A partition of a topic: the unit of ordering, ownership and offsets.
///
/// Cheap to clone (the topic name is shared).
///
/// ```
/// use weir_core::TopicPartition;
/// let tp = TopicPartition::new("orders", 2);
/// assert_eq!(tp.topic(), "orders");
/// assert_eq!(tp.partition(), 2);
/// assert_eq!(tp.to_string(), "orders-2");
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    topic: Arc<str>,
    partition: i32,
}

impl TopicPartition {
    /// A topic name and a partition number.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic's name as a shared string (cheap to clone).
    pub fn topic_arc(&self) -> &Arc<str> {
        &self.topic
    }

    /// The partition number, from 0.
    pub fn partition(&self) -> i32 {
        self.partition
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

impl fmt::Debug for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Where a record lives: topic, partition and offset. Every error about a record
/// carries these, so that an operator can find it.
///
/// ```
/// use weir_core::Coordinates;
/// let at = Coordinates::new("orders", 1, 1234);
/// assert_eq!(at.to_string(), "orders/1@1234");
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Coordinates {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The record's offset in its partition.
    pub offset: i64,
}

impl Coordinates {
    /// Coordinates of a record.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32, offset: i64) -> Self {
        Self {
            topic: topic.into(),
            partition,
            offset,
        }
    }

    /// The partition part.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }
}

impl fmt::Display for Coordinates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// A record header: a name and an optional byte value, as in Kafka.
///
/// ```
/// use weir_core::{Header, Record};
/// let mut r = Record::new("orders", 0, 1, None, None);
/// r.headers.push(Header::new("trace-id", &b"abc"[..]));
/// r.headers.push(Header { key: "empty".into(), value: None });
/// assert_eq!(r.header("trace-id").and_then(|h| h.value.as_deref()), Some(&b"abc"[..]));
/// assert_eq!(r.header("empty").map(|h| h.value.is_none()), Some(true));
/// ```
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Header {
    /// The header's name.
    pub key: String,
    /// The header's value; `None` is a null value.
    pub value: Option<Bytes>,
}

impl Header {
    /// A header with a value.
    ///
    /// ```
    /// let h = weir_core::Header::new("schema-id", &b"7"[..]);
    /// assert_eq!(h.value.as_deref(), Some(&b"7"[..]));
    /// ```
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            value: Some(value.into()),
        }
    }
}

/// One record as a consumer delivers it.
///
/// Key and value are raw bytes (`None` is Kafka's null); typed decoding is the job of
/// `weir-formats`. Cloning is cheap: payloads are reference-counted [`Bytes`].
///
/// ```
/// use weir_core::{Bytes, Record};
/// let r = Record::new("orders", 0, 7, Some(Bytes::from_static(b"k")), Some(Bytes::from_static(b"v")));
/// assert_eq!(r.coordinates().to_string(), "orders/0@7");
/// assert_eq!(r.value.as_deref(), Some(&b"v"[..]));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// The topic the record was read from.
    pub topic: Arc<str>,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Milliseconds since the Unix epoch, when the backend provides one.
    pub timestamp: Option<i64>,
    /// The key, or `None` for a null key.
    pub key: Option<Bytes>,
    /// The value, or `None` for a null value (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in the order they were written.
    pub headers: Vec<Header>,
}

impl Record {
    /// A record without timestamp or headers.
    pub fn new(
        topic: impl Into<Arc<str>>,
        partition: i32,
        offset: i64,
        key: Option<Bytes>,
        value: Option<Bytes>,
    ) -> Self {
        Self {
            topic: topic.into(),
            partition,
            offset,
            timestamp: None,
            key,
            value,
            headers: Vec::new(),
        }
    }

    /// The record's topic and partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }

    /// The record's coordinates (topic, partition, offset).
    pub fn coordinates(&self) -> Coordinates {
        Coordinates {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
        }
    }

    /// The first header with this name.
    pub fn header(&self, key: &str) -> Option<&Header> {
        self.headers.iter().find(|h| h.key == key)
    }
}

/// Payloads are summarised (length only) so that `Debug` never dumps user data.
impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("key_len", &self.key.as_ref().map(Bytes::len))
            .field("value_len", &self.value.as_ref().map(Bytes::len))
            .field("headers", &self.headers.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_is_topic_then_partition() {
        let mut v = [
            TopicPartition::new("b", 0),
            TopicPartition::new("a", 2),
            TopicPartition::new("a", 1),
        ];
        v.sort();
        assert_eq!(
            v.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["a-1", "a-2", "b-0"]
        );
    }

    #[test]
    fn debug_does_not_print_payloads() {
        let r = Record::new("t", 0, 1, None, Some(Bytes::from_static(b"secret-payload")));
        assert!(!format!("{r:?}").contains("secret-payload"));
    }
}
