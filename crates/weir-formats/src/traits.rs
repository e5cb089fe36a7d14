//! The `Deserializer` and `Serializer` traits.

use std::future::Future;

use weir_core::Record;

use crate::{Context, DeserializeError, Result};

/// The default maximum size of one key or value, in bytes (8 MiB). Larger inputs are a
/// permanent [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) error. Every JSON,
/// Avro and Protobuf deserializer (fixed-schema and registry) has a `with_max_bytes`
/// setting ([`RegistryJson`](crate::json::RegistryJson) takes a configured
/// [`Json`](crate::Json)); [`Utf8`](crate::Utf8) and [`ByteArray`](crate::ByteArray)
/// always use this default, and the fixed-width primitives need exactly their width.
pub const DEFAULT_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Decodes a record's key or value into a `T`: what a pipeline plugs onto a record.
///
/// It is `async` because some deserializers fetch writer schemas from a schema registry
/// (once per schema id; afterwards the future is ready at once). Every deserializer that
/// needs no I/O implements [`SyncDeserializer`] too, and this trait by delegating to it.
///
/// ```
/// use weir_core::{Bytes, Record};
/// use weir_formats::{Deserializer, Utf8};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let record = Record::new("t", 0, 3, None, Some(Bytes::from_static(b"hello")));
/// let v: String = Utf8.value(&record).await.unwrap();
/// assert_eq!(v, "hello");
/// # }
/// ```
pub trait Deserializer<T>: Send + Sync {
    /// Decode `data` (`None` is Kafka's null) of the record described by `ctx`.
    fn deserialize(
        &self,
        data: Option<&[u8]>,
        ctx: &Context<'_>,
    ) -> impl Future<Output = Result<T, DeserializeError>> + Send;

    /// Decode a record's key.
    fn key(&self, record: &Record) -> impl Future<Output = Result<T, DeserializeError>> + Send {
        async move {
            let ctx = Context::for_key(record);
            self.deserialize(record.key.as_deref(), &ctx).await
        }
    }

    /// Decode a record's value.
    fn value(&self, record: &Record) -> impl Future<Output = Result<T, DeserializeError>> + Send {
        async move {
            let ctx = Context::for_value(record);
            self.deserialize(record.value.as_deref(), &ctx).await
        }
    }
}

/// A deserializer that needs no I/O: decodes in place, synchronously.
///
/// ```
/// use weir_core::{Bytes, Record};
/// use weir_formats::{SyncDeserializer, I64};
/// let record = Record::new("t", 0, 3, None, Some(Bytes::from(42i64.to_be_bytes().to_vec())));
/// assert_eq!(I64.decode_value(&record).unwrap(), 42);
/// ```
pub trait SyncDeserializer<T>: Send + Sync {
    /// Decode `data` (`None` is Kafka's null) of the record described by `ctx`.
    fn decode(&self, data: Option<&[u8]>, ctx: &Context<'_>) -> Result<T, DeserializeError>;

    /// Decode a record's key.
    fn decode_key(&self, record: &Record) -> Result<T, DeserializeError> {
        self.decode(record.key.as_deref(), &Context::for_key(record))
    }

    /// Decode a record's value.
    fn decode_value(&self, record: &Record) -> Result<T, DeserializeError> {
        self.decode(record.value.as_deref(), &Context::for_value(record))
    }
}

/// Encodes a `T` into the bytes of a key or value: for producing test data and for the
/// CLI. `async` because registry-aware serializers register their schema (once).
///
/// ```
/// use weir_formats::{Context, Part, Serializer, Utf8};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let topic = "t".into();
/// let bytes = Utf8.serialize(&"hi".to_string(), &Context::new(&topic, 0, 0, Part::Value)).await.unwrap();
/// assert_eq!(bytes, b"hi");
/// # }
/// ```
pub trait Serializer<T: ?Sized>: Send + Sync {
    /// Encode `value` for the record described by `ctx` (its topic and part choose the
    /// registry subject).
    fn serialize(
        &self,
        value: &T,
        ctx: &Context<'_>,
    ) -> impl Future<Output = Result<Vec<u8>>> + Send;
}

/// A serializer that needs no I/O.
///
/// ```
/// use weir_formats::{SyncSerializer, I32};
/// assert_eq!(I32.encode(&1).unwrap(), vec![0, 0, 0, 1]);
/// ```
pub trait SyncSerializer<T: ?Sized>: Send + Sync {
    /// Encode `value`.
    fn encode(&self, value: &T) -> Result<Vec<u8>>;
}

/// Implement [`Deserializer`] for a [`SyncDeserializer`] by delegating to it.
macro_rules! async_via_sync {
    (impl[$($gen:tt)*] $ty:ty => $out:ty $(, where $($bounds:tt)*)?) => {
        impl<$($gen)*> $crate::Deserializer<$out> for $ty $(where $($bounds)*)? {
            fn deserialize(
                &self,
                data: Option<&[u8]>,
                ctx: &$crate::Context<'_>,
            ) -> impl std::future::Future<Output = std::result::Result<$out, $crate::DeserializeError>> + Send {
                std::future::ready($crate::SyncDeserializer::<$out>::decode(self, data, ctx))
            }
        }
    };
}

/// Implement [`Serializer`] for a [`SyncSerializer`] by delegating to it.
macro_rules! async_ser_via_sync {
    (impl[$($gen:tt)*] $ty:ty => $in:ty $(, where $($bounds:tt)*)?) => {
        impl<$($gen)*> $crate::Serializer<$in> for $ty $(where $($bounds)*)? {
            fn serialize(
                &self,
                value: &$in,
                _ctx: &$crate::Context<'_>,
            ) -> impl std::future::Future<Output = $crate::Result<Vec<u8>>> + Send {
                std::future::ready($crate::SyncSerializer::<$in>::encode(self, value))
            }
        }
    };
}

pub(crate) use {async_ser_via_sync, async_via_sync};
