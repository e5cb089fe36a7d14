//! The record context a deserializer gets with the bytes.

use std::sync::Arc;

use weir_core::{Coordinates, Header, Record};

use crate::{DeserializeError, ErrorKind, Part};

/// Where the bytes being decoded come from: topic, partition, offset, headers, and
/// whether they are the key or the value. Errors are built from it, so that every error
/// names its record.
///
/// ```
/// use weir_core::{Bytes, Record};
/// use weir_formats::{Context, Part};
/// let record = Record::new("orders", 1, 7, None, Some(Bytes::from_static(b"{}")));
/// let ctx = Context::for_value(&record);
/// assert_eq!(ctx.part(), Part::Value);
/// assert_eq!(ctx.coordinates().to_string(), "orders/1@7");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    topic: &'a Arc<str>,
    partition: i32,
    offset: i64,
    headers: &'a [Header],
    part: Part,
}

impl<'a> Context<'a> {
    /// A context without headers.
    pub fn new(topic: &'a Arc<str>, partition: i32, offset: i64, part: Part) -> Self {
        Self {
            topic,
            partition,
            offset,
            headers: &[],
            part,
        }
    }

    /// The same context with these headers.
    pub fn with_headers(mut self, headers: &'a [Header]) -> Self {
        self.headers = headers;
        self
    }

    /// The context for a record's key.
    pub fn for_key(record: &'a Record) -> Self {
        Self {
            topic: &record.topic,
            partition: record.partition,
            offset: record.offset,
            headers: &record.headers,
            part: Part::Key,
        }
    }

    /// The context for a record's value.
    pub fn for_value(record: &'a Record) -> Self {
        Self {
            part: Part::Value,
            ..Self::for_key(record)
        }
    }

    /// The topic.
    pub fn topic(&self) -> &'a str {
        self.topic
    }

    /// The partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The offset.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Key or value.
    pub fn part(&self) -> Part {
        self.part
    }

    /// The record's headers.
    pub fn headers(&self) -> &'a [Header] {
        self.headers
    }

    /// The value of the last header with this name (Kafka's `lastHeader`), if any and
    /// not null.
    pub fn header(&self, key: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .rev()
            .find(|h| h.key == key)
            .and_then(|h| h.value.as_deref())
    }

    /// The record's coordinates.
    pub fn coordinates(&self) -> Coordinates {
        Coordinates::new(self.topic.clone(), self.partition, self.offset)
    }

    /// An error about this record's part.
    pub fn error(&self, kind: ErrorKind, detail: impl Into<String>) -> DeserializeError {
        DeserializeError::new(self.coordinates(), self.part, kind, detail)
    }

    /// `Err(TooLarge)` when `data` is longer than `max`.
    pub(crate) fn check_size(&self, data: &[u8], max: usize) -> Result<(), DeserializeError> {
        if data.len() > max {
            Err(self.error(
                ErrorKind::TooLarge,
                format!("{} bytes, more than the maximum of {max}", data.len()),
            ))
        } else {
            Ok(())
        }
    }

    /// `Err(Null)` for a null key or value.
    pub(crate) fn require(&self, data: Option<&'a [u8]>) -> Result<&'a [u8], DeserializeError> {
        data.ok_or_else(|| {
            self.error(
                ErrorKind::Null,
                "null, and this deserializer does not accept null (use Nullable)",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use weir_core::Bytes;

    use super::*;

    #[test]
    fn last_header_wins_and_null_headers_are_absent() {
        let mut r = Record::new("t", 0, 1, None, Some(Bytes::from_static(b"v")));
        r.headers.push(Header::new("h", &b"first"[..]));
        r.headers.push(Header::new("h", &b"second"[..]));
        r.headers.push(Header {
            key: "null".into(),
            value: None,
        });
        let ctx = Context::for_value(&r);
        assert_eq!(ctx.header("h"), Some(&b"second"[..]));
        assert_eq!(ctx.header("null"), None);
        assert_eq!(ctx.header("missing"), None);
    }

    #[test]
    fn errors_carry_the_context() {
        let r = Record::new("orders", 4, 99, None, None);
        let e = Context::for_key(&r).error(ErrorKind::Framing, "x");
        assert_eq!(e.coordinates(), &Coordinates::new("orders", 4, 99));
        assert_eq!(e.part(), Part::Key);
        assert_eq!(
            e.to_string(),
            "key of orders/4@99: bad schema-registry framing: x"
        );
        let big = [0u8; 11];
        let e = Context::for_value(&r).check_size(&big, 10).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooLarge);
    }
}
