//! Apache Avro through `apache-avro`: typed values via serde ([`Avro`]) or the generic
//! [`Value`] ([`AvroGeneric`]), with a fixed writer schema or, for registry-framed data,
//! the writer schema from the registry ([`RegistryAvro`], [`RegistryAvroGeneric`]) and
//! Avro schema resolution against a reader schema.
//!
//! ## Allocation limit (CVE-2022-36124)
//! A length or block count in Avro data is a varint that may claim 2^62 bytes or items.
//! apache-avro refuses any allocation above a process-wide limit, set once. weir sets it
//! to [`DEFAULT_MAX_ALLOCATION_BYTES`] (16 MiB) the first time an Avro (de)serializer is
//! built, unless [`set_max_allocation_bytes`] was called before. Exceeding it is a
//! permanent [`ErrorKind::TooLarge`] error.
//!
//! ## Schema resolution
//! With a reader schema, each writer schema is first checked with apache-avro's
//! compatibility checker (an incompatible pair is refused when the deserializer is
//! built, or, for a registry id, is a permanent [`ErrorKind::SchemaMismatch`] for its
//! records), then each datum is resolved: defaults fill added fields, removed fields
//! are skipped, int→long→float→double promotions apply, and records and fields renamed
//! with `aliases` in the reader schema are matched (apache-avro matches by name only;
//! weir renames the writer's names first, as Java's `Schema.applyAliases` does).
//!
//! ## Guards beyond apache-avro
//! - A datum must be consumed exactly: trailing bytes (data of another schema) and a
//!   truncated string or boolean (which apache-avro reads as `null`) are errors.
//! - Registry schemas with `references` are fetched (transitively) and inlined.
//! - Each distinct schema is parsed once and kept for the life of the process (its
//!   compiled reader borrows it), however many deserializers use it.

pub mod logical;

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

use apache_avro::reader::datum::GenericDatumReader;
pub use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
pub use apache_avro::Schema;
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::framing::{self, SchemaRef};
use crate::registry::{self, SchemaRegistry, SchemaType};
use crate::traits::{async_ser_via_sync, async_via_sync};
use crate::{
    Context, DeserializeError, Deserializer, Error, ErrorKind, Result, Serializer,
    SyncDeserializer, SyncSerializer,
};

/// weir's default for apache-avro's process-wide allocation limit: 16 MiB.
pub const DEFAULT_MAX_ALLOCATION_BYTES: usize = 16 * 1024 * 1024;

/// Set apache-avro's process-wide allocation limit. Only the first call (by anyone,
/// including weir's own default when the first Avro deserializer is built) takes
/// effect; returns the limit in force.
///
/// ```
/// let in_force = weir_formats::avro::set_max_allocation_bytes(4 * 1024 * 1024);
/// assert_eq!(in_force, weir_formats::avro::max_allocation_bytes());
/// ```
pub fn set_max_allocation_bytes(bytes: usize) -> usize {
    apache_avro::util::max_allocation_bytes(bytes)
}

/// The allocation limit in force (setting weir's default if none was set yet).
pub fn max_allocation_bytes() -> usize {
    apache_avro::util::max_allocation_bytes(DEFAULT_MAX_ALLOCATION_BYTES)
}

/// Parse an Avro schema from its JSON text.
///
/// ```
/// let s = weir_formats::avro::parse_schema(r#"{"type":"array","items":"long"}"#).unwrap();
/// assert!(matches!(s, weir_formats::avro::Schema::Array(_)));
/// assert!(weir_formats::avro::parse_schema("{").is_err());
/// ```
pub fn parse_schema(json: &str) -> Result<Schema> {
    Schema::parse_str(json).map_err(Error::schema)
}

/// Schemas live as long as the process so that their compiled readers can be kept;
/// each distinct schema is stored once, however many deserializers use it.
fn intern(schema: &Schema) -> Result<&'static Schema> {
    static TABLE: OnceLock<Mutex<HashMap<String, &'static Schema>>> = OnceLock::new();
    let key = serde_json::to_string(schema).map_err(Error::schema)?;
    let mut table = TABLE.get_or_init(|| Mutex::new(HashMap::new())).lock();
    if let Some(s) = table.get(&key) {
        return Ok(s);
    }
    let leaked: &'static Schema = Box::leak(Box::new(schema.clone()));
    table.insert(key, leaked);
    Ok(leaked)
}

/// A writer schema (and optional reader schema), resolved once.
struct Codec {
    writer: &'static Schema,
    reader: GenericDatumReader<'static>,
    resolving: bool,
}

impl Codec {
    fn new(writer: &Schema, reader_schema: Option<&Schema>) -> Result<Self> {
        max_allocation_bytes();
        let writer = match reader_schema {
            Some(reader) => intern(&aliases::apply(writer, reader)?)?,
            None => intern(writer)?,
        };
        let reader_schema = reader_schema.map(intern).transpose()?;
        if let Some(reader) = reader_schema {
            apache_avro::schema_compatibility::SchemaCompatibility::can_read(writer, reader)
                .map_err(|e| {
                    Error::schema(format!(
                        "the reader schema cannot read the writer schema: {e}"
                    ))
                })?;
        }
        let reader = GenericDatumReader::builder(writer)
            .maybe_reader_schema(reader_schema)
            .build()
            .map_err(Error::schema)?;
        Ok(Self {
            writer,
            reader,
            resolving: reader_schema.is_some(),
        })
    }

    fn value(&self, data: &[u8], ctx: &Context<'_>) -> Result<Value, DeserializeError> {
        let mut cursor = EofWatch::new(data);
        let v = self
            .reader
            .read_value(&mut cursor)
            .map_err(|e| avro_error(e, ctx))?;
        cursor.finish(ctx)?;
        Ok(v)
    }

    fn typed<T: DeserializeOwned>(
        &self,
        data: &[u8],
        ctx: &Context<'_>,
    ) -> Result<T, DeserializeError> {
        if self.resolving {
            let v = self.value(data, ctx)?;
            return apache_avro::from_value::<T>(&v).map_err(|e| {
                ctx.error(
                    ErrorKind::WrongType,
                    format!("Avro value into the target type: {e}"),
                )
                .with_source(e)
            });
        }
        let mut cursor = EofWatch::new(data);
        let v = self
            .reader
            .read_deser::<T>(&mut cursor)
            .map_err(|e| avro_error(e, ctx))?;
        cursor.finish(ctx)?;
        Ok(v)
    }
}

/// A reader over the datum that remembers running past its end. apache-avro turns an
/// end of input inside a string or boolean into `Value::Null` (its file reader uses
/// that to detect the end of a block), which would make a truncated datum decode
/// "successfully"; weir makes it an error.
struct EofWatch<'a> {
    rest: &'a [u8],
    hit_end: bool,
}

impl<'a> EofWatch<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            rest: data,
            hit_end: false,
        }
    }

    fn finish(self, ctx: &Context<'_>) -> Result<(), DeserializeError> {
        if self.hit_end {
            return Err(ctx.error(ErrorKind::Malformed, "Avro datum truncated"));
        }
        if !self.rest.is_empty() {
            return Err(ctx.error(
                ErrorKind::Malformed,
                format!(
                    "Avro datum followed by {} unread bytes (wrong schema?)",
                    self.rest.len()
                ),
            ));
        }
        Ok(())
    }
}

impl std::io::Read for EofWatch<'_> {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.len() > self.rest.len() {
            self.hit_end = true;
        }
        let n = buf.len().min(self.rest.len());
        let (head, tail) = self.rest.split_at(n);
        if n == 1 {
            buf[0] = head[0];
        } else {
            buf[..n].copy_from_slice(head);
        }
        self.rest = tail;
        Ok(n)
    }

    #[inline]
    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        if buf.len() > self.rest.len() {
            self.hit_end = true;
            self.rest = &[];
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let (head, tail) = self.rest.split_at(buf.len());
        // Varints are read a byte at a time: avoid a memcpy call for those.
        if buf.len() == 1 {
            buf[0] = head[0];
        } else {
            buf.copy_from_slice(head);
        }
        self.rest = tail;
        Ok(())
    }
}

fn avro_error(e: apache_avro::Error, ctx: &Context<'_>) -> DeserializeError {
    use apache_avro::error::Details;
    let kind = match e.details() {
        Details::MemoryAllocation { .. } => ErrorKind::TooLarge,
        Details::ConvertToUtf8(..) | Details::ConvertToUtf8Error(..) => ErrorKind::InvalidUtf8,
        _ => ErrorKind::Malformed,
    };
    ctx.error(kind, format!("Avro: {e}")).with_source(e)
}

/// Avro with a fixed writer schema, decoded with serde into a `T`.
///
/// With a [reader schema](Self::with_reader_schema) the datum is first resolved (Avro
/// schema resolution: defaults for added fields, removed fields skipped, int→long
/// promotion, aliases), then converted to `T`.
///
/// ```
/// use weir_formats::avro::{parse_schema, Avro};
/// use weir_formats::{Context, Part, SyncDeserializer, SyncSerializer};
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Reading { sensor: String, value: f64 }
/// let schema = parse_schema(r#"{"type":"record","name":"Reading","fields":[
///     {"name":"sensor","type":"string"},{"name":"value","type":"double"}]}"#).unwrap();
/// let avro = Avro::new(&schema).unwrap();
/// let r = Reading { sensor: "s1".into(), value: 2.5 };
/// let bytes = avro.encode(&r).unwrap();
/// let topic = "readings".into();
/// let back: Reading = avro.decode(Some(&bytes), &Context::new(&topic, 0, 0, Part::Value)).unwrap();
/// assert_eq!(back, r);
/// ```
pub struct Avro {
    codec: Arc<Codec>,
    writer: GenericDatumWriter<'static>,
    max_bytes: usize,
}

impl std::fmt::Debug for Avro {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Avro")
            .field("writer_schema", &self.codec.writer.canonical_form())
            .field("resolving", &self.codec.resolving)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl Avro {
    /// Decode data written with `writer_schema`.
    pub fn new(writer_schema: &Schema) -> Result<Self> {
        let codec = Codec::new(writer_schema, None)?;
        let writer = GenericDatumWriter::builder(codec.writer)
            .build()
            .map_err(Error::schema)?;
        Ok(Self {
            codec: Arc::new(codec),
            writer,
            max_bytes: crate::DEFAULT_MAX_BYTES,
        })
    }

    /// Resolve each datum against `reader_schema` (Avro schema resolution).
    pub fn with_reader_schema(mut self, reader_schema: &Schema) -> Result<Self> {
        self.codec = Arc::new(Codec::new(self.codec.writer, Some(reader_schema))?);
        Ok(self)
    }

    /// Refuse inputs longer than `max_bytes`.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }
}

impl<T: DeserializeOwned> SyncDeserializer<T> for Avro {
    fn decode(&self, data: Option<&[u8]>, ctx: &Context<'_>) -> Result<T, DeserializeError> {
        let data = ctx.require(data)?;
        ctx.check_size(data, self.max_bytes)?;
        self.codec.typed(data, ctx)
    }
}

/// Serializes with the writer schema.
impl<T: Serialize> SyncSerializer<T> for Avro {
    fn encode(&self, value: &T) -> Result<Vec<u8>> {
        self.writer
            .write_ser_to_vec(value)
            .map_err(Error::serialize)
    }
}

/// Avro with a fixed writer schema, decoded into the generic [`Value`].
///
/// ```
/// use weir_formats::avro::{parse_schema, AvroGeneric, Value};
/// use weir_formats::{Context, Part, SyncDeserializer, SyncSerializer};
/// let schema = parse_schema(r#""long""#).unwrap();
/// let avro = AvroGeneric::new(&schema).unwrap();
/// let bytes = avro.encode(&Value::Long(-3)).unwrap();
/// assert_eq!(bytes, [5]);
/// let topic = "t".into();
/// let v = avro.decode(Some(&bytes), &Context::new(&topic, 0, 0, Part::Value)).unwrap();
/// assert_eq!(v, Value::Long(-3));
/// ```
pub struct AvroGeneric {
    inner: Avro,
}

impl std::fmt::Debug for AvroGeneric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AvroGeneric").field(&self.inner).finish()
    }
}

impl AvroGeneric {
    /// Decode data written with `writer_schema`.
    pub fn new(writer_schema: &Schema) -> Result<Self> {
        Ok(Self {
            inner: Avro::new(writer_schema)?,
        })
    }

    /// Resolve each datum against `reader_schema`.
    pub fn with_reader_schema(self, reader_schema: &Schema) -> Result<Self> {
        Ok(Self {
            inner: self.inner.with_reader_schema(reader_schema)?,
        })
    }

    /// Refuse inputs longer than `max_bytes`.
    pub fn with_max_bytes(self, max_bytes: usize) -> Self {
        Self {
            inner: self.inner.with_max_bytes(max_bytes),
        }
    }
}

impl SyncDeserializer<Value> for AvroGeneric {
    fn decode(&self, data: Option<&[u8]>, ctx: &Context<'_>) -> Result<Value, DeserializeError> {
        let data = ctx.require(data)?;
        ctx.check_size(data, self.inner.max_bytes)?;
        self.inner.codec.value(data, ctx)
    }
}

impl SyncSerializer<Value> for AvroGeneric {
    fn encode(&self, value: &Value) -> Result<Vec<u8>> {
        self.inner
            .writer
            .write_value_to_vec(value.clone())
            .map_err(Error::serialize)
    }
}

async_via_sync!(impl[T: DeserializeOwned + Send] Avro => T);
async_ser_via_sync!(impl[T: Serialize + Sync] Avro => T);
async_via_sync!(impl[] AvroGeneric => Value);
async_ser_via_sync!(impl[] AvroGeneric => Value);

/// Shared state of the registry-aware Avro deserializers: one compiled codec per writer
/// schema id, built on first sight.
struct RegistryCore {
    registry: Arc<SchemaRegistry>,
    reader_schema: Option<&'static Schema>,
    codecs: RwLock<framing::SchemaMap<Arc<Codec>>>,
    max_bytes: usize,
}

impl RegistryCore {
    fn new(registry: Arc<SchemaRegistry>) -> Self {
        max_allocation_bytes();
        Self {
            registry,
            reader_schema: None,
            codecs: RwLock::new(framing::SchemaMap::default()),
            max_bytes: crate::DEFAULT_MAX_BYTES,
        }
    }

    /// The fast path, with no future: decode with the cached codec of the record's
    /// writer schema. `None` when that schema has not been seen yet.
    fn cached<T>(
        &self,
        data: Option<&[u8]>,
        ctx: &Context<'_>,
        decode: impl FnOnce(&Codec, &[u8]) -> Result<T, DeserializeError>,
    ) -> Option<Result<T, DeserializeError>> {
        let data = match ctx.require(data) {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        if let Err(e) = ctx.check_size(data, self.max_bytes) {
            return Some(Err(e));
        }
        let located = match framing::locate(data, ctx) {
            Ok(l) => l,
            Err(e) => return Some(Err(e)),
        };
        let codecs = self.codecs.read();
        let codec = codecs.get(&located.schema)?;
        Some(decode(codec, located.payload(data)))
    }

    async fn codec<'a>(
        &self,
        data: Option<&'a [u8]>,
        ctx: &Context<'a>,
    ) -> Result<(Arc<Codec>, &'a [u8]), DeserializeError> {
        let data = ctx.require(data)?;
        ctx.check_size(data, self.max_bytes)?;
        let located = framing::locate(data, ctx)?;
        let payload = located.payload(data);
        if let Some(c) = self.codecs.read().get(&located.schema) {
            return Ok((c.clone(), payload));
        }
        let fetched = self
            .registry
            .schema(located.schema)
            .await
            .map_err(|e| registry::to_deserialize_error(e, located.schema, ctx))?;
        let mismatch = |reason: String| {
            ctx.error(
                ErrorKind::SchemaMismatch,
                format!("writer schema {}: {reason}", located.schema),
            )
        };
        if fetched.schema_type != SchemaType::Avro {
            return Err(mismatch(format!("is {:?}, not Avro", fetched.schema_type)));
        }
        let writer = self
            .parse_with_references(&fetched, located.schema, ctx)
            .await?;
        let codec = Codec::new(&writer, self.reader_schema)
            .map_err(|e| mismatch(format!("cannot be read with the reader schema: {e}")))?;
        let codec = Arc::new(codec);
        self.codecs.write().insert(located.schema, codec.clone());
        Ok((codec, payload))
    }

    /// The writer schema, made self-contained: schemas it references (other subjects)
    /// are fetched, transitively, and each referenced named type is defined inline at
    /// its first use. Registry failures keep their permanence (unavailable stays
    /// transient); unparsable schemas are a permanent mismatch.
    async fn parse_with_references(
        &self,
        schema: &registry::Schema,
        at: SchemaRef,
        ctx: &Context<'_>,
    ) -> Result<Schema, DeserializeError> {
        let mismatch = |reason: String| {
            ctx.error(
                ErrorKind::SchemaMismatch,
                format!("writer schema {at}: {reason}"),
            )
        };
        if schema.references.is_empty() {
            return parse_schema(&schema.schema).map_err(|e| mismatch(e.to_string()));
        }
        let mut texts = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut pending = schema.references.clone();
        while let Some(r) = pending.pop() {
            if !seen.insert((r.subject.clone(), r.version)) || seen.len() > 256 {
                continue;
            }
            let referenced = self
                .registry
                .referenced(&r.subject, r.version)
                .await
                .map_err(|e| registry::to_deserialize_error(e, at, ctx))?;
            pending.extend(referenced.references.iter().cloned());
            texts.push(referenced.schema.clone());
        }
        references::inline(&schema.schema, &texts).map_err(|e| mismatch(e.to_string()))
    }
}

/// Avro framed for a schema registry (`0x00` + id, `0x01` + GUID, or the id in a
/// header), decoded with serde into `T`. The writer schema is fetched once per id; with
/// a [reader schema](Self::with_reader_schema) each writer schema is resolved against
/// it. A registry that cannot be reached gives a *transient* error; an unknown id a
/// permanent one.
///
/// ```no_run
/// use std::sync::Arc;
/// use weir_formats::avro::RegistryAvro;
/// use weir_formats::registry::{RegistryConfig, SchemaRegistry};
/// use weir_formats::Deserializer;
/// # async fn f(record: weir_core::Record) -> anyhow::Result<()> {
/// let registry = Arc::new(SchemaRegistry::new(RegistryConfig::new("http://127.0.0.1:8081")?)?);
/// let avro = RegistryAvro::new(registry);
/// let value: serde_json::Value = avro.value(&record).await?;
/// # Ok(()) }
/// ```
pub struct RegistryAvro {
    core: RegistryCore,
}

impl std::fmt::Debug for RegistryAvro {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAvro")
            .field("registry", &self.core.registry)
            .field("resolving", &self.core.reader_schema.is_some())
            .finish()
    }
}

impl RegistryAvro {
    /// Fetch writer schemas from the registry at `url` (default settings; use
    /// [`new`](Self::new) with a [`SchemaRegistry`] for timeouts, credentials, or one
    /// client shared by several deserializers). A malformed URL is an error naming
    /// `schema.registry.url`; an unreachable registry is found only when decoding (a
    /// transient error: the job waits and retries, never a dead letter).
    ///
    /// ```
    /// let avro = weir_formats::avro::RegistryAvro::from_url("http://127.0.0.1:8081")?;
    /// # drop(avro);
    /// # Ok::<(), weir_formats::Error>(())
    /// ```
    pub fn from_url(url: impl AsRef<str>) -> Result<Self> {
        Ok(Self::new(SchemaRegistry::from_url(url)?))
    }

    /// Fetch writer schemas from `registry`.
    pub fn new(registry: Arc<SchemaRegistry>) -> Self {
        Self {
            core: RegistryCore::new(registry),
        }
    }

    /// Resolve every writer schema against `reader_schema`.
    pub fn with_reader_schema(mut self, reader_schema: &Schema) -> Result<Self> {
        self.core.reader_schema = Some(intern(reader_schema)?);
        self.core.codecs.write().clear();
        Ok(self)
    }

    /// Refuse inputs longer than `max_bytes`.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.core.max_bytes = max_bytes;
        self
    }
}

impl<T: DeserializeOwned + Send> Deserializer<T> for RegistryAvro {
    fn deserialize(
        &self,
        data: Option<&[u8]>,
        ctx: &Context<'_>,
    ) -> impl std::future::Future<Output = Result<T, DeserializeError>> + Send {
        let fast = self
            .core
            .cached(data, ctx, |codec, payload| codec.typed(payload, ctx));
        async move {
            if let Some(done) = fast {
                return done;
            }
            let (codec, payload) = self.core.codec(data, ctx).await?;
            codec.typed(payload, ctx)
        }
    }
}

/// Like [`RegistryAvro`], decoding into the generic [`Value`].
///
/// ```
/// use std::sync::Arc;
/// use weir_core::{Bytes, Record};
/// use weir_formats::avro::{RegistryAvroGeneric, Value};
/// use weir_formats::framing::SchemaRef;
/// use weir_formats::registry::{RegistryConfig, Schema, SchemaRegistry};
/// use weir_formats::Deserializer;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let registry = Arc::new(SchemaRegistry::new(RegistryConfig::new("http://127.0.0.1:8081").unwrap()).unwrap());
/// registry.preload(SchemaRef::Id(1), Schema::avro(r#""long""#)); // as if fetched
/// let avro = RegistryAvroGeneric::new(registry);
/// // 0x00 + schema id 1 + the Avro long 5 (zig-zag 0x0a)
/// let record = Record::new("t", 0, 0, None, Some(Bytes::from_static(&[0, 0, 0, 0, 1, 0x0a])));
/// assert_eq!(avro.value(&record).await.unwrap(), Value::Long(5));
/// let bad_magic = Record::new("t", 0, 1, None, Some(Bytes::from_static(&[7, 0, 0, 0, 1, 0x0a])));
/// assert!(!avro.value(&bad_magic).await.unwrap_err().is_retriable());
/// # }
/// ```
pub struct RegistryAvroGeneric {
    core: RegistryCore,
}

impl std::fmt::Debug for RegistryAvroGeneric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAvroGeneric")
            .field("registry", &self.core.registry)
            .field("resolving", &self.core.reader_schema.is_some())
            .finish()
    }
}

impl RegistryAvroGeneric {
    /// Fetch writer schemas from `registry`.
    pub fn new(registry: Arc<SchemaRegistry>) -> Self {
        Self {
            core: RegistryCore::new(registry),
        }
    }

    /// Resolve every writer schema against `reader_schema`.
    pub fn with_reader_schema(mut self, reader_schema: &Schema) -> Result<Self> {
        self.core.reader_schema = Some(intern(reader_schema)?);
        self.core.codecs.write().clear();
        Ok(self)
    }

    /// Refuse inputs longer than `max_bytes`.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.core.max_bytes = max_bytes;
        self
    }
}

impl Deserializer<Value> for RegistryAvroGeneric {
    fn deserialize(
        &self,
        data: Option<&[u8]>,
        ctx: &Context<'_>,
    ) -> impl std::future::Future<Output = Result<Value, DeserializeError>> + Send {
        let fast = self
            .core
            .cached(data, ctx, |codec, payload| codec.value(payload, ctx));
        async move {
            if let Some(done) = fast {
                return done;
            }
            let (codec, payload) = self.core.codec(data, ctx).await?;
            codec.value(payload, ctx)
        }
    }
}

/// Serializes `T` with a fixed schema, registers that schema under the record's
/// TopicNameStrategy subject (`<topic>-value` / `<topic>-key`) once, and frames the
/// datum with `0x00` + the id.
///
/// ```no_run
/// use std::sync::Arc;
/// use weir_formats::avro::{parse_schema, RegistryAvroSerializer};
/// use weir_formats::registry::{RegistryConfig, SchemaRegistry};
/// use weir_formats::{Context, Part, Serializer};
/// # async fn f() -> anyhow::Result<()> {
/// let registry = Arc::new(SchemaRegistry::new(RegistryConfig::new("http://127.0.0.1:8081")?)?);
/// let schema = parse_schema(r#""string""#)?;
/// let ser = RegistryAvroSerializer::<String>::new(registry, &schema)?;
/// let topic = "names".into();
/// // registers under `names-value` (once), then frames: 0x00 + id + datum
/// let bytes = ser.serialize(&"Ada".to_string(), &Context::new(&topic, 0, 0, Part::Value)).await?;
/// assert_eq!(bytes[0], 0x00);
/// # Ok(()) }
/// ```
pub struct RegistryAvroSerializer<T> {
    registry: Arc<SchemaRegistry>,
    schema: registry::Schema,
    avro: Avro,
    _t: PhantomData<fn(&T)>,
}

impl<T> std::fmt::Debug for RegistryAvroSerializer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAvroSerializer")
            .field("registry", &self.registry)
            .finish()
    }
}

impl<T> RegistryAvroSerializer<T> {
    /// Serialize with `schema`, registered in `registry`.
    pub fn new(registry: Arc<SchemaRegistry>, schema: &Schema) -> Result<Self> {
        let text = serde_json::to_string(schema).map_err(Error::schema)?;
        Ok(Self {
            registry,
            schema: registry::Schema::avro(text),
            avro: Avro::new(schema)?,
            _t: PhantomData,
        })
    }
}

impl<T: Serialize + Sync> Serializer<T> for RegistryAvroSerializer<T> {
    async fn serialize(&self, value: &T, ctx: &Context<'_>) -> Result<Vec<u8>> {
        let subject = registry::topic_subject(ctx.topic(), ctx.part());
        let id = self.registry.register(&subject, &self.schema).await?;
        let mut out = Vec::new();
        framing::write_prefix(&SchemaRef::Id(id), &mut out);
        let body = self
            .avro
            .writer
            .write_ser_to_vec(value)
            .map_err(Error::serialize)?;
        out.extend_from_slice(&body);
        Ok(out)
    }
}

/// Aliases for schema resolution. apache-avro's resolution and compatibility check
/// match records and fields by name only; as Java's `Schema.applyAliases` does, weir
/// renames, in the writer schema, records and fields to the reader's names when the
/// reader lists the writer's name among its `aliases`. Renaming does not change how a
/// datum is read. Names are matched by their last component.
mod aliases {
    use std::collections::HashMap;

    use serde_json::Value as Json;

    use super::Schema;
    use crate::{Error, Result};

    const MAX_DEPTH: usize = 64;

    struct Target {
        full_name: String,
        fields: Vec<(String, Vec<String>)>,
    }

    fn simple(name: &str) -> &str {
        name.rsplit('.').next().unwrap_or(name)
    }

    fn full(name: &str, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
            _ => name.to_string(),
        }
    }

    fn strings(v: Option<&Json>) -> Vec<String> {
        v.and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(|s| simple(s).to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn is_record(o: &serde_json::Map<String, Json>) -> bool {
        matches!(
            o.get("type").and_then(Json::as_str),
            Some("record" | "error")
        )
    }

    /// Nested schemas of `o` (field types, items, values, an inline "type").
    fn children_mut(o: &mut serde_json::Map<String, Json>) -> Vec<&mut Json> {
        let mut out = Vec::new();
        let record = is_record(o);
        for (k, v) in o.iter_mut() {
            match k.as_str() {
                "fields" if record => {
                    for f in v.as_array_mut().into_iter().flatten() {
                        if let Some(t) = f.get_mut("type") {
                            out.push(t);
                        }
                    }
                }
                "items" | "values" => out.push(v),
                "type" if v.is_object() || v.is_array() => out.push(v),
                _ => {}
            }
        }
        out
    }

    fn collect(v: &Json, ns: Option<&str>, out: &mut HashMap<String, Target>, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match v {
            Json::Array(items) => items.iter().for_each(|i| collect(i, ns, out, depth + 1)),
            Json::Object(o) => {
                let own_ns = o.get("namespace").and_then(Json::as_str).or(ns);
                if is_record(o) {
                    let fields: Vec<(String, Vec<String>)> = o
                        .get("fields")
                        .and_then(Json::as_array)
                        .map(|fs| {
                            fs.iter()
                                .filter_map(|f| {
                                    let name = f.get("name")?.as_str()?.to_string();
                                    Some((name, strings(f.get("aliases"))))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    if let Some(name) = o.get("name").and_then(Json::as_str) {
                        let full_name = full(name, own_ns);
                        for key in std::iter::once(simple(name).to_string())
                            .chain(strings(o.get("aliases")))
                        {
                            out.entry(key).or_insert_with(|| Target {
                                full_name: full_name.clone(),
                                fields: fields.clone(),
                            });
                        }
                    }
                }
                let mut o = o.clone();
                for child in children_mut(&mut o) {
                    collect(child, own_ns, out, depth + 1);
                }
            }
            _ => {}
        }
    }

    fn rewrite(
        v: &mut Json,
        ns: Option<&str>,
        reader: &HashMap<String, Target>,
        renamed: &mut HashMap<String, String>,
        depth: usize,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        match v {
            Json::Array(items) => items
                .iter_mut()
                .for_each(|i| rewrite(i, ns, reader, renamed, depth + 1)),
            Json::Object(o) => {
                let own_ns = o
                    .get("namespace")
                    .and_then(Json::as_str)
                    .or(ns)
                    .map(str::to_string);
                if is_record(o) {
                    let name = o.get("name").and_then(Json::as_str).map(str::to_string);
                    if let Some(target) = name.as_deref().and_then(|n| reader.get(simple(n))) {
                        let name = name.as_deref().unwrap_or_default();
                        if simple(&target.full_name) != simple(name) {
                            renamed.insert(full(name, own_ns.as_deref()), target.full_name.clone());
                            renamed.insert(simple(name).to_string(), target.full_name.clone());
                            o.insert("name".into(), Json::String(target.full_name.clone()));
                        }
                        for f in o
                            .get_mut("fields")
                            .and_then(Json::as_array_mut)
                            .into_iter()
                            .flatten()
                        {
                            let Some(fname) =
                                f.get("name").and_then(Json::as_str).map(str::to_string)
                            else {
                                continue;
                            };
                            if target.fields.iter().any(|(n, _)| *n == fname) {
                                continue;
                            }
                            if let Some((new, _)) =
                                target.fields.iter().find(|(_, a)| a.contains(&fname))
                            {
                                f["name"] = Json::String(new.clone());
                            }
                        }
                    }
                }
                for child in children_mut(o) {
                    rewrite(child, own_ns.as_deref(), reader, renamed, depth + 1);
                }
            }
            _ => {}
        }
    }

    /// Replace references (type names in type positions) to renamed records.
    fn rename_refs(v: &mut Json, renamed: &HashMap<String, String>, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match v {
            Json::String(s) => {
                if let Some(new) = renamed.get(s.as_str()) {
                    *s = new.clone();
                }
            }
            Json::Array(items) => items
                .iter_mut()
                .for_each(|i| rename_refs(i, renamed, depth + 1)),
            Json::Object(o) => {
                for child in children_mut(o) {
                    rename_refs(child, renamed, depth + 1);
                }
                for f in o
                    .get_mut("fields")
                    .and_then(Json::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(t @ Json::String(_)) = f.get_mut("type") {
                        rename_refs(t, renamed, depth + 1);
                    }
                }
                for key in ["items", "values"] {
                    if let Some(t @ Json::String(_)) = o.get_mut(key) {
                        rename_refs(t, renamed, depth + 1);
                    }
                }
            }
            _ => {}
        }
    }

    /// The writer schema with records and fields renamed to the reader's names via the
    /// reader's aliases.
    pub(super) fn apply(writer: &Schema, reader: &Schema) -> Result<Schema> {
        let reader_json = serde_json::to_value(reader).map_err(Error::schema)?;
        let mut targets = HashMap::new();
        collect(&reader_json, None, &mut targets, 0);
        let mut writer_json = serde_json::to_value(writer).map_err(Error::schema)?;
        let mut renamed = HashMap::new();
        rewrite(&mut writer_json, None, &targets, &mut renamed, 0);
        if !renamed.is_empty() {
            rename_refs(&mut writer_json, &renamed, 0);
        }
        Schema::parse(&writer_json).map_err(Error::schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_rename_nested_records_and_their_references() {
        let writer = parse_schema(
            r#"{"type":"record","name":"Outer","namespace":"n","fields":[
                {"name":"a","type":{"type":"record","name":"Old","fields":[{"name":"x","type":"int"}]}},
                {"name":"b","type":"Old"}]}"#,
        )
        .unwrap();
        let reader = parse_schema(
            r#"{"type":"record","name":"Outer","namespace":"n","fields":[
                {"name":"a","type":{"type":"record","name":"New","aliases":["Old"],"fields":[{"name":"y","aliases":["x"],"type":"long"}]}},
                {"name":"b","type":"New"}]}"#,
        )
        .unwrap();
        let renamed = aliases::apply(&writer, &reader).unwrap();
        let text = serde_json::to_string(&renamed).unwrap();
        assert!(text.contains("n.New") && !text.contains("Old"), "{text}");
        assert!(text.contains(r#""name":"y""#), "{text}");
        // and the pair now passes the compatibility check and decodes
        let avro = AvroGeneric::new(&writer)
            .unwrap()
            .with_reader_schema(&reader)
            .unwrap();
        let topic: Arc<str> = "t".into();
        let ctx = Context::new(&topic, 0, 0, crate::Part::Value);
        let v = avro.decode(Some(&[0x02, 0x04]), &ctx).unwrap();
        let Value::Record(fields) = v else {
            panic!("not a record")
        };
        assert_eq!(
            fields[1].1,
            Value::Record(vec![("y".into(), Value::Long(2))])
        );
    }

    #[test]
    fn interning_keeps_one_copy_per_schema() {
        let a = intern(&parse_schema(r#""long""#).unwrap()).unwrap();
        let b = intern(&parse_schema(r#""long""#).unwrap()).unwrap();
        assert!(std::ptr::eq(a, b));
    }
}

/// Avro schema references: named types defined in other registered schemas.
mod references {
    use std::collections::{HashMap, HashSet};

    use serde_json::Value as Json;

    use super::Schema;
    use crate::{Error, Result};

    const MAX_DEPTH: usize = 64;

    fn full_name(o: &serde_json::Map<String, Json>, ns: Option<&str>) -> Option<String> {
        let name = o.get("name")?.as_str()?;
        let ns = o.get("namespace").and_then(Json::as_str).or(ns);
        Some(match ns {
            Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
            _ => name.to_string(),
        })
    }

    /// Named types a schema text defines at its top level.
    fn definitions(text: &str) -> Result<Vec<(String, Json)>> {
        let json: Json = serde_json::from_str(text).map_err(Error::schema)?;
        let items = match json {
            Json::Array(items) => items,
            other => vec![other],
        };
        Ok(items
            .into_iter()
            .filter_map(|item| {
                let name = item.as_object().and_then(|o| full_name(o, None))?;
                Some((name, item))
            })
            .collect())
    }

    struct Inliner {
        defs: HashMap<String, Json>,
        defined: HashSet<String>,
    }

    impl Inliner {
        fn lookup(&self, name: &str, ns: Option<&str>) -> Option<String> {
            if self.defs.contains_key(name) {
                return Some(name.to_string());
            }
            let qualified = format!("{}.{name}", ns?);
            self.defs.contains_key(&qualified).then_some(qualified)
        }

        /// Walk type positions; replace the first reference to each referenced type by
        /// its definition.
        fn walk(&mut self, v: &mut Json, ns: Option<&str>, depth: usize) -> Result<()> {
            if depth > MAX_DEPTH {
                return Err(Error::schema("schema references nested too deep"));
            }
            match v {
                Json::String(name) => {
                    if let Some(full) = self.lookup(name, ns) {
                        if self.defined.insert(full.clone()) {
                            let mut def = self.defs.get(&full).cloned().unwrap_or(Json::Null);
                            let def_ns = full.rsplit_once('.').map(|(n, _)| n.to_string());
                            self.walk(&mut def, def_ns.as_deref(), depth + 1)?;
                            *v = def;
                        }
                    }
                }
                Json::Array(items) => {
                    for i in items {
                        self.walk(i, ns, depth + 1)?;
                    }
                }
                Json::Object(o) => {
                    let own = full_name(o, ns);
                    if let Some(own) = &own {
                        self.defined.insert(own.clone());
                    }
                    let inner_ns = own
                        .as_deref()
                        .and_then(|n| n.rsplit_once('.').map(|(ns, _)| ns.to_string()))
                        .or_else(|| ns.map(str::to_string));
                    let is_record = matches!(
                        o.get("type").and_then(Json::as_str),
                        Some("record" | "error")
                    );
                    for (k, child) in o.iter_mut() {
                        match k.as_str() {
                            "fields" if is_record => {
                                for f in child.as_array_mut().into_iter().flatten() {
                                    if let Some(t) = f.get_mut("type") {
                                        self.walk(t, inner_ns.as_deref(), depth + 1)?;
                                    }
                                }
                            }
                            "items" | "values" => {
                                self.walk(child, inner_ns.as_deref(), depth + 1)?
                            }
                            "type" if child.is_object() || child.is_array() => {
                                self.walk(child, inner_ns.as_deref(), depth + 1)?
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
            Ok(())
        }
    }

    /// `main` with the named types of `referenced` defined inline at first use.
    pub(super) fn inline(main: &str, referenced: &[String]) -> Result<Schema> {
        let mut defs = HashMap::new();
        for text in referenced {
            defs.extend(definitions(text)?);
        }
        let mut json: Json = serde_json::from_str(main).map_err(Error::schema)?;
        let mut inliner = Inliner {
            defs,
            defined: HashSet::new(),
        };
        inliner.walk(&mut json, None, 0)?;
        Schema::parse(&json).map_err(Error::schema)
    }
}
