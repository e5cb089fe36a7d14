//! Primitives encoded as Kafka's own serializers encode them.

use crate::traits::{async_ser_via_sync, async_via_sync};
use crate::{
    Context, DeserializeError, Error, ErrorKind, Result, SyncDeserializer, SyncSerializer,
};

/// UTF-8 text, validated (Kafka's `StringSerializer`).
///
/// ```
/// use weir_formats::{Context, Part, SyncDeserializer, SyncSerializer, Utf8};
/// let topic = "t".into();
/// let ctx = Context::new(&topic, 0, 0, Part::Value);
/// assert_eq!(Utf8.decode(Some("é".as_bytes()), &ctx).unwrap(), "é");
/// assert!(Utf8.decode(Some(&[0xff][..]), &ctx).is_err());
/// assert_eq!(Utf8.encode("é").unwrap(), "é".as_bytes());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Utf8;

impl SyncDeserializer<String> for Utf8 {
    fn decode(&self, data: Option<&[u8]>, ctx: &Context<'_>) -> Result<String, DeserializeError> {
        let data = ctx.require(data)?;
        ctx.check_size(data, crate::DEFAULT_MAX_BYTES)?;
        match std::str::from_utf8(data) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(ctx
                .error(
                    ErrorKind::InvalidUtf8,
                    format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                )
                .with_source(e)),
        }
    }
}

impl SyncSerializer<str> for Utf8 {
    fn encode(&self, value: &str) -> Result<Vec<u8>> {
        Ok(value.as_bytes().to_vec())
    }
}

impl SyncSerializer<String> for Utf8 {
    fn encode(&self, value: &String) -> Result<Vec<u8>> {
        Ok(value.as_bytes().to_vec())
    }
}

/// Raw bytes, unchanged (Kafka's `ByteArraySerializer`).
///
/// ```
/// use weir_formats::{ByteArray, Context, Part, SyncDeserializer};
/// let topic = "t".into();
/// let ctx = Context::new(&topic, 0, 0, Part::Key);
/// assert_eq!(ByteArray.decode(Some(&[1, 2][..]), &ctx).unwrap(), vec![1, 2]);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ByteArray;

impl SyncDeserializer<Vec<u8>> for ByteArray {
    fn decode(&self, data: Option<&[u8]>, ctx: &Context<'_>) -> Result<Vec<u8>, DeserializeError> {
        let data = ctx.require(data)?;
        ctx.check_size(data, crate::DEFAULT_MAX_BYTES)?;
        Ok(data.to_vec())
    }
}

impl SyncSerializer<[u8]> for ByteArray {
    fn encode(&self, value: &[u8]) -> Result<Vec<u8>> {
        Ok(value.to_vec())
    }
}

impl SyncSerializer<Vec<u8>> for ByteArray {
    fn encode(&self, value: &Vec<u8>) -> Result<Vec<u8>> {
        Ok(value.clone())
    }
}

fn fixed<const N: usize>(
    data: Option<&[u8]>,
    ctx: &Context<'_>,
    what: &str,
) -> Result<[u8; N], DeserializeError> {
    let data = ctx.require(data)?;
    <[u8; N]>::try_from(data).map_err(|_| {
        ctx.error(
            ErrorKind::Malformed,
            format!("{what} needs exactly {N} bytes, got {}", data.len()),
        )
    })
}

macro_rules! big_endian {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $n:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $name;

        impl SyncDeserializer<$ty> for $name {
            fn decode(&self, data: Option<&[u8]>, ctx: &Context<'_>) -> Result<$ty, DeserializeError> {
                fixed::<$n>(data, ctx, stringify!($ty)).map(<$ty>::from_be_bytes)
            }
        }

        impl SyncSerializer<$ty> for $name {
            fn encode(&self, value: &$ty) -> Result<Vec<u8>> {
                Ok(value.to_be_bytes().to_vec())
            }
        }

        async_via_sync!(impl[] $name => $ty);
        async_ser_via_sync!(impl[] $name => $ty);
    };
}

big_endian!(
    /// A big-endian 32-bit integer, exactly 4 bytes (Kafka's `IntegerSerializer`).
    ///
    /// ```
    /// use weir_formats::{SyncSerializer, I32};
    /// assert_eq!(I32.encode(&-2).unwrap(), vec![0xff, 0xff, 0xff, 0xfe]);
    /// ```
    I32, i32, 4
);
big_endian!(
    /// A big-endian 64-bit integer, exactly 8 bytes (Kafka's `LongSerializer`).
    ///
    /// ```
    /// use weir_formats::{SyncSerializer, I64};
    /// assert_eq!(I64.encode(&1).unwrap(), vec![0, 0, 0, 0, 0, 0, 0, 1]);
    /// ```
    I64, i64, 8
);
big_endian!(
    /// A big-endian IEEE 754 single, exactly 4 bytes (Kafka's `FloatSerializer`).
    ///
    /// ```
    /// use weir_formats::{SyncSerializer, F32};
    /// assert_eq!(F32.encode(&1.0).unwrap(), vec![0x3f, 0x80, 0, 0]);
    /// ```
    F32, f32, 4
);
big_endian!(
    /// A big-endian IEEE 754 double, exactly 8 bytes (Kafka's `DoubleSerializer`).
    ///
    /// ```
    /// use weir_formats::{SyncSerializer, F64};
    /// assert_eq!(F64.encode(&1.0).unwrap()[0], 0x3f);
    /// ```
    F64, f64, 8
);

/// A UUID. Kafka's `UUIDSerializer` writes the 36-character text form; that is what
/// this serializer writes. The deserializer also accepts the 16 raw bytes (a length no
/// text form can have).
///
/// ```
/// use weir_formats::{Context, Part, SyncDeserializer, SyncSerializer, UuidFormat};
/// let id = uuid::Uuid::from_u128(7);
/// let bytes = UuidFormat.encode(&id).unwrap();
/// assert_eq!(bytes.len(), 36);
/// let topic = "t".into();
/// let ctx = Context::new(&topic, 0, 0, Part::Key);
/// assert_eq!(UuidFormat.decode(Some(&bytes), &ctx).unwrap(), id);
/// assert_eq!(UuidFormat.decode(Some(id.as_bytes()), &ctx).unwrap(), id);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct UuidFormat;

impl SyncDeserializer<uuid::Uuid> for UuidFormat {
    fn decode(
        &self,
        data: Option<&[u8]>,
        ctx: &Context<'_>,
    ) -> Result<uuid::Uuid, DeserializeError> {
        let data = ctx.require(data)?;
        if let Ok(raw) = <[u8; 16]>::try_from(data) {
            return Ok(uuid::Uuid::from_bytes(raw));
        }
        if data.len() != 36 {
            return Err(ctx.error(
                ErrorKind::Malformed,
                format!(
                    "a UUID is 36 characters of text or 16 bytes, got {} bytes",
                    data.len()
                ),
            ));
        }
        let text = std::str::from_utf8(data).map_err(|e| {
            ctx.error(ErrorKind::InvalidUtf8, "UUID text is not UTF-8")
                .with_source(e)
        })?;
        uuid::Uuid::parse_str(text)
            .map_err(|e| ctx.error(ErrorKind::Malformed, "not a UUID").with_source(e))
    }
}

impl SyncSerializer<uuid::Uuid> for UuidFormat {
    fn encode(&self, value: &uuid::Uuid) -> Result<Vec<u8>> {
        Ok(value.hyphenated().to_string().into_bytes())
    }
}

/// Makes null explicit: Kafka's null decodes to `None`, anything else through the inner
/// deserializer. Without it, null is a permanent [`ErrorKind::Null`] error.
///
/// ```
/// use weir_formats::{Context, Nullable, Part, SyncDeserializer, I32};
/// let topic = "t".into();
/// let ctx = Context::new(&topic, 0, 0, Part::Key);
/// assert_eq!(Nullable(I32).decode(None, &ctx).unwrap(), None);
/// assert_eq!(Nullable(I32).decode(Some(&[0, 0, 0, 5][..]), &ctx).unwrap(), Some(5));
/// assert!(I32.decode(None, &ctx).is_err());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Nullable<D>(pub D);

impl<T, D: SyncDeserializer<T>> SyncDeserializer<Option<T>> for Nullable<D> {
    fn decode(
        &self,
        data: Option<&[u8]>,
        ctx: &Context<'_>,
    ) -> Result<Option<T>, DeserializeError> {
        match data {
            None => Ok(None),
            Some(_) => self.0.decode(data, ctx).map(Some),
        }
    }
}

/// Serializing `None` is refused: a null key or value is written by not calling a
/// serializer.
impl<T, S: SyncSerializer<T>> SyncSerializer<Option<T>> for Nullable<S> {
    fn encode(&self, value: &Option<T>) -> Result<Vec<u8>> {
        match value {
            Some(v) => self.0.encode(v),
            None => Err(Error::serialize(
                "None has no byte form; write a null instead",
            )),
        }
    }
}

async_via_sync!(impl[] Utf8 => String);
async_ser_via_sync!(impl[] Utf8 => str);
async_ser_via_sync!(impl[] Utf8 => String);
async_via_sync!(impl[] ByteArray => Vec<u8>);
async_ser_via_sync!(impl[] ByteArray => [u8]);
async_ser_via_sync!(impl[] ByteArray => Vec<u8>);
async_via_sync!(impl[] UuidFormat => uuid::Uuid);
async_ser_via_sync!(impl[] UuidFormat => uuid::Uuid);
/// Works around any [`Deserializer`](crate::Deserializer), registry-backed ones too.
impl<T: Send, D: crate::Deserializer<T>> crate::Deserializer<Option<T>> for Nullable<D> {
    fn deserialize(
        &self,
        data: Option<&[u8]>,
        ctx: &Context<'_>,
    ) -> impl std::future::Future<Output = Result<Option<T>, DeserializeError>> + Send {
        let inner = data.map(|_| self.0.deserialize(data, ctx));
        async move {
            match inner {
                None => Ok(None),
                Some(decoding) => decoding.await.map(Some),
            }
        }
    }
}
async_ser_via_sync!(impl[T: Sync, S: SyncSerializer<T>] Nullable<S> => Option<T>);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Deserializer, Part};

    fn ctx_do<R>(f: impl FnOnce(&Context<'_>) -> R) -> R {
        let topic: Arc<str> = "t".into();
        f(&Context::new(&topic, 1, 2, Part::Key))
    }

    #[test]
    fn null_is_an_error_unless_nullable() {
        let e = ctx_do(|c| Utf8.decode(None, c)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Null);
        assert_eq!(e.part(), Part::Key);
        assert_eq!(ctx_do(|c| Nullable(Utf8).decode(None, c)).unwrap(), None);
        assert!(Nullable(I32).encode(&None).is_err());
    }

    #[test]
    fn fixed_widths_are_exact() {
        for len in [0usize, 3, 5, 8] {
            let data = vec![0u8; len];
            assert!(ctx_do(|c| I32.decode(Some(&data), c)).is_err(), "{len}");
        }
        assert_eq!(
            ctx_do(|c| F64.decode(Some(&2.5f64.to_be_bytes()), c)).unwrap(),
            2.5
        );
    }

    #[test]
    fn uuid_forms() {
        let text = b"67e55044-10b1-426f-9247-bb680e5fe0c8";
        let id = ctx_do(|c| UuidFormat.decode(Some(text), c)).unwrap();
        assert_eq!(id.to_string().as_bytes(), text);
        assert!(ctx_do(|c| UuidFormat.decode(Some(&[0xff; 36]), c)).is_err());
    }

    #[tokio::test]
    async fn nullable_wraps_async_deserializers() {
        let topic: Arc<str> = "t".into();
        let ctx = Context::new(&topic, 0, 0, Part::Value);
        let d = Nullable(I64);
        let none: Option<i64> = d.deserialize(None, &ctx).await.unwrap();
        assert_eq!(none, None);
        let some: Option<i64> = d
            .deserialize(Some(&7i64.to_be_bytes()), &ctx)
            .await
            .unwrap();
        assert_eq!(some, Some(7));
    }
}
