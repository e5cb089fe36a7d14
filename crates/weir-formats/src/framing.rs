//! Confluent schema-registry wire formats.
//!
//! - `0x00` + 4-byte big-endian schema id + payload (the classic form, all formats);
//! - `0x01` + 16-byte schema GUID + payload (the newer form);
//! - for Protobuf, a *message-index array* after the id: a zig-zag varint count, then
//!   that many zig-zag varint indexes selecting a (nested) message in the schema file;
//!   the common `[0]` is written as the single byte `0x00`;
//! - the schema id in a header (`__key_schema_id` / `__value_schema_id`) holding the
//!   same prefix (and, for Protobuf, the message indexes), the payload then being the
//!   whole key or value.
//!
//! ```
//! use weir_formats::framing::{parse_prefix, write_prefix, SchemaRef};
//! let mut bytes = Vec::new();
//! write_prefix(&SchemaRef::Id(7), &mut bytes);
//! bytes.extend_from_slice(b"payload");
//! let (schema, payload) = parse_prefix(&bytes).unwrap();
//! assert_eq!(schema, SchemaRef::Id(7));
//! assert_eq!(payload, b"payload");
//! assert!(parse_prefix(&[0, 0, 0]).is_err());
//! ```

use std::fmt;

use crate::{Context, DeserializeError, ErrorKind, Part};

/// Magic byte of the classic framing (`0x00` + 4-byte id).
pub const MAGIC_ID: u8 = 0x00;
/// Magic byte of the GUID framing (`0x01` + 16-byte GUID).
pub const MAGIC_GUID: u8 = 0x01;
/// Header carrying the key's schema id.
pub const KEY_SCHEMA_ID_HEADER: &str = "__key_schema_id";
/// Header carrying the value's schema id.
pub const VALUE_SCHEMA_ID_HEADER: &str = "__value_schema_id";
/// At most this many Protobuf message indexes (nesting of message declarations).
pub const MAX_MESSAGE_INDEXES: usize = 64;

/// How a framed record names its writer schema.
///
/// ```
/// use weir_formats::framing::SchemaRef;
/// assert_eq!(SchemaRef::Id(42).to_string(), "id 42");
/// assert_eq!(SchemaRef::Guid(uuid::Uuid::nil()).to_string(), "guid 00000000-0000-0000-0000-000000000000");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SchemaRef {
    /// A registry schema id.
    Id(u32),
    /// A registry schema GUID.
    Guid(uuid::Uuid),
}

impl fmt::Display for SchemaRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaRef::Id(id) => write!(f, "id {id}"),
            SchemaRef::Guid(g) => write!(f, "guid {g}"),
        }
    }
}

/// A map keyed by schema reference with a cheap hash (ids are small integers chosen by
/// the registry, GUIDs random): looked up once per record.
pub(crate) type SchemaMap<V> =
    std::collections::HashMap<SchemaRef, V, std::hash::BuildHasherDefault<RefHasher>>;

/// FxHash-style multiply-rotate hasher for [`SchemaMap`].
#[derive(Default)]
pub(crate) struct RefHasher(u64);

impl std::hash::Hasher for RefHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    fn write_isize(&mut self, v: isize) {
        self.write_u64(v as u64);
    }
}

/// What is wrong with a framing.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// Fewer bytes than the prefix needs.
    #[error("{len} bytes, too short for a schema-registry prefix of {need} bytes")]
    TooShort {
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The first byte is neither 0x00 nor 0x01.
    #[error("unknown magic byte 0x{0:02x} (expected 0x00 or 0x01)")]
    BadMagic(u8),
    /// The message-index array is malformed.
    #[error("bad Protobuf message-index array: {0}")]
    MessageIndexes(String),
}

/// Split `data` into its schema reference and the rest.
pub fn parse_prefix(data: &[u8]) -> Result<(SchemaRef, &[u8]), FramingError> {
    match data.first() {
        None => Err(FramingError::TooShort { len: 0, need: 5 }),
        Some(&MAGIC_ID) => {
            let (id, rest) = data[1..]
                .split_first_chunk::<4>()
                .ok_or(FramingError::TooShort {
                    len: data.len(),
                    need: 5,
                })?;
            Ok((SchemaRef::Id(u32::from_be_bytes(*id)), rest))
        }
        Some(&MAGIC_GUID) => {
            let (guid, rest) =
                data[1..]
                    .split_first_chunk::<16>()
                    .ok_or(FramingError::TooShort {
                        len: data.len(),
                        need: 17,
                    })?;
            Ok((SchemaRef::Guid(uuid::Uuid::from_bytes(*guid)), rest))
        }
        Some(&other) => Err(FramingError::BadMagic(other)),
    }
}

/// Append the prefix for `schema`.
pub fn write_prefix(schema: &SchemaRef, out: &mut Vec<u8>) {
    match schema {
        SchemaRef::Id(id) => {
            out.push(MAGIC_ID);
            out.extend_from_slice(&id.to_be_bytes());
        }
        SchemaRef::Guid(g) => {
            out.push(MAGIC_GUID);
            out.extend_from_slice(g.as_bytes());
        }
    }
}

/// Read one zig-zag varint of at most 32 bits (5 bytes).
fn read_zigzag_i32(data: &[u8]) -> Result<(i32, &[u8]), FramingError> {
    let mut value: u64 = 0;
    for (i, &b) in data.iter().enumerate() {
        if i >= 5 {
            return Err(FramingError::MessageIndexes(
                "varint longer than 5 bytes".into(),
            ));
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let raw = u32::try_from(value).map_err(|_| {
                FramingError::MessageIndexes("varint does not fit in 32 bits".into())
            })?;
            let decoded = ((raw >> 1) as i32) ^ -((raw & 1) as i32);
            return Ok((decoded, &data[i + 1..]));
        }
    }
    Err(FramingError::MessageIndexes("truncated varint".into()))
}

fn write_zigzag_i32(v: i32, out: &mut Vec<u8>) {
    let mut z = ((v << 1) ^ (v >> 31)) as u32;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

/// Read a Protobuf message-index array; a count of 0 means `[0]`.
///
/// ```
/// use weir_formats::framing::{parse_message_indexes, write_message_indexes};
/// assert_eq!(parse_message_indexes(&[0x00, 9]).unwrap(), (vec![0], &[9u8][..]));
/// let mut out = Vec::new();
/// write_message_indexes(&[1, 2], &mut out);
/// assert_eq!(out, [4, 2, 4]);
/// assert_eq!(parse_message_indexes(&out).unwrap().0, vec![1, 2]);
/// ```
pub fn parse_message_indexes(data: &[u8]) -> Result<(Vec<usize>, &[u8]), FramingError> {
    let (count, mut rest) = read_zigzag_i32(data)?;
    if count == 0 {
        return Ok((vec![0], rest));
    }
    let count = usize::try_from(count)
        .map_err(|_| FramingError::MessageIndexes(format!("negative count {count}")))?;
    if count > MAX_MESSAGE_INDEXES || count > rest.len() {
        return Err(FramingError::MessageIndexes(format!(
            "count {count} exceeds the limit of {MAX_MESSAGE_INDEXES} or the {} bytes left",
            rest.len()
        )));
    }
    let mut indexes = Vec::with_capacity(count);
    for _ in 0..count {
        let (index, r) = read_zigzag_i32(rest)?;
        let index = usize::try_from(index)
            .map_err(|_| FramingError::MessageIndexes(format!("negative index {index}")))?;
        indexes.push(index);
        rest = r;
    }
    Ok((indexes, rest))
}

/// Append a message-index array (`[0]` as the single byte `0x00`).
pub fn write_message_indexes(indexes: &[usize], out: &mut Vec<u8>) {
    if indexes == [0] {
        out.push(0);
        return;
    }
    write_zigzag_i32(i32::try_from(indexes.len()).unwrap_or(i32::MAX), out);
    for &i in indexes {
        write_zigzag_i32(i32::try_from(i).unwrap_or(i32::MAX), out);
    }
}

/// A located writer schema and the bytes around it.
#[derive(Clone, Copy, Debug)]
pub struct Located<'a> {
    /// The writer schema.
    pub schema: SchemaRef,
    /// Bytes that follow the schema reference in the frame: for Protobuf the message
    /// indexes (and, for prefix framing, the payload after them).
    pub after_ref: &'a [u8],
    /// Whether the reference came from a header (the payload is then the whole data).
    pub from_header: bool,
}

/// The header name carrying the schema id of `part`.
pub fn schema_id_header(part: Part) -> &'static str {
    match part {
        Part::Key => KEY_SCHEMA_ID_HEADER,
        Part::Value => VALUE_SCHEMA_ID_HEADER,
    }
}

/// Find the writer schema of `data`: in the `__key_schema_id` / `__value_schema_id`
/// header when present, else in the prefix. Errors are permanent
/// [`ErrorKind::Framing`] errors with the record's coordinates.
///
/// ```
/// use weir_core::{Bytes, Header, Record};
/// use weir_formats::framing::{locate, SchemaRef};
/// use weir_formats::{Context, ErrorKind};
/// // id in the prefix
/// let r = Record::new("t", 0, 5, None, Some(Bytes::from_static(&[0, 0, 0, 0, 9, b'x'])));
/// let data = r.value.as_deref().unwrap();
/// let l = locate(data, &Context::for_value(&r)).unwrap();
/// assert_eq!((l.schema, l.payload(data)), (SchemaRef::Id(9), &b"x"[..]));
/// // id in the `__value_schema_id` header: the payload is the whole value
/// let mut r = Record::new("t", 0, 6, None, Some(Bytes::from_static(b"x")));
/// r.headers.push(Header::new("__value_schema_id", &[0u8, 0, 0, 0, 3][..]));
/// let data = r.value.as_deref().unwrap();
/// let l = locate(data, &Context::for_value(&r)).unwrap();
/// assert_eq!((l.schema, l.payload(data)), (SchemaRef::Id(3), &b"x"[..]));
/// // too short: a permanent framing error naming the record
/// let r = Record::new("t", 0, 7, None, Some(Bytes::from_static(&[0, 0])));
/// let e = locate(r.value.as_deref().unwrap(), &Context::for_value(&r)).unwrap_err();
/// assert_eq!((e.kind(), e.coordinates().to_string()), (ErrorKind::Framing, "t/0@7".to_string()));
/// ```
pub fn locate<'a>(data: &'a [u8], ctx: &Context<'a>) -> Result<Located<'a>, DeserializeError> {
    let header = ctx.header(schema_id_header(ctx.part()));
    let (framed, from_header) = match header {
        Some(h) => (h, true),
        None => (data, false),
    };
    let (schema, after_ref) = parse_prefix(framed).map_err(|e| {
        let place = if from_header {
            "schema-id header"
        } else {
            "prefix"
        };
        ctx.error(ErrorKind::Framing, format!("{place}: {e}"))
            .with_source(e)
    })?;
    Ok(Located {
        schema,
        after_ref,
        from_header,
    })
}

impl<'a> Located<'a> {
    /// The payload for non-Protobuf formats.
    pub fn payload(&self, data: &'a [u8]) -> &'a [u8] {
        if self.from_header {
            data
        } else {
            self.after_ref
        }
    }

    /// The message indexes and payload for Protobuf.
    pub fn protobuf(
        &self,
        data: &'a [u8],
        ctx: &Context<'_>,
    ) -> Result<(Vec<usize>, &'a [u8]), DeserializeError> {
        let err = |e: FramingError| ctx.error(ErrorKind::Framing, e.to_string()).with_source(e);
        if self.from_header {
            if self.after_ref.is_empty() {
                return Ok((vec![0], data));
            }
            let (indexes, _) = parse_message_indexes(self.after_ref).map_err(err)?;
            Ok((indexes, data))
        } else {
            parse_message_indexes(self.after_ref).map_err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_round_trip() {
        for v in [0, 1, -1, 63, -64, 64, 300, i32::MAX, i32::MIN] {
            let mut out = Vec::new();
            write_zigzag_i32(v, &mut out);
            assert_eq!(read_zigzag_i32(&out).unwrap().0, v);
        }
    }

    #[test]
    fn guid_prefix() {
        let g = uuid::Uuid::from_u128(0x1234);
        let mut out = Vec::new();
        write_prefix(&SchemaRef::Guid(g), &mut out);
        assert_eq!(out.len(), 17);
        assert_eq!(parse_prefix(&out).unwrap().0, SchemaRef::Guid(g));
        assert!(matches!(
            parse_prefix(&out[..16]),
            Err(FramingError::TooShort { .. })
        ));
    }

    #[test]
    fn bad_indexes() {
        assert!(parse_message_indexes(&[]).is_err());
        assert!(parse_message_indexes(&[0x01]).is_err()); // count -1
        assert!(parse_message_indexes(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
        assert!(parse_message_indexes(&[0x7e]).is_err()); // 63 indexes, no bytes
    }
}
