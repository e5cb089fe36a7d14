//! Protocol Buffers: typed `prost::Message` types ([`Protobuf`]), dynamic messages from
//! `.proto` files compiled at run time without `protoc` ([`compile`],
//! [`ProtobufDynamic`]), and registry-framed data ([`RegistryProtobuf`],
//! [`RegistryProtobufTyped`]).
//!
//! ## Nesting
//! prost and prost-reflect refuse messages nested more than 100 deep (prost's recursion
//! limit), so deep nesting is an [`ErrorKind::TooDeep`] error, never a stack overflow. The
//! dynamic deserializers take a lower [`with_max_depth`](ProtobufDynamic::with_max_depth),
//! checked by a scan of the wire format guided by the descriptor.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use parking_lot::RwLock;
use prost_reflect::FileDescriptor;
pub use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use crate::framing::{self, SchemaRef};
use crate::registry::{self, SchemaRegistry, SchemaType};
use crate::traits::{async_ser_via_sync, async_via_sync};
use crate::{
    Context, DeserializeError, Deserializer, Error, ErrorKind, Result, Serializer,
    SyncDeserializer, SyncSerializer,
};

/// prost's own recursion limit.
pub const PROST_RECURSION_LIMIT: usize = 100;

struct Sources(HashMap<String, String>);

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.get(name) {
            Some(source) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Compile `.proto` sources (name → text) at run time with protox (no `protoc`), the
/// Google well-known types available for import. Returns the pool of all descriptors.
///
/// ```
/// let pool = weir_formats::protobuf::compile(&[(
///     "shop.proto",
///     "syntax = \"proto3\"; package shop; message Order { int64 id = 1; string item = 2; }",
/// )]).unwrap();
/// assert!(pool.get_message_by_name("shop.Order").is_some());
/// assert!(weir_formats::protobuf::compile(&[("bad.proto", "message {")]).is_err());
/// ```
pub fn compile(files: &[(&str, &str)]) -> Result<DescriptorPool> {
    let sources: HashMap<String, String> = files
        .iter()
        .map(|(n, s)| ((*n).to_string(), (*s).to_string()))
        .collect();
    compile_sources(sources, files.iter().map(|(n, _)| *n))
}

fn compile_sources<'a>(
    sources: HashMap<String, String>,
    roots: impl Iterator<Item = &'a str>,
) -> Result<DescriptorPool> {
    let mut chain = ChainFileResolver::new();
    chain.add(Sources(sources));
    chain.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.include_imports(true);
    for root in roots {
        compiler.open_file(root).map_err(Error::schema)?;
    }
    Ok(compiler.descriptor_pool())
}

/// Compile `.proto` files from disk, found under `includes` (like `protoc -I`).
///
/// ```no_run
/// let pool = weir_formats::protobuf::compile_files(&["proto/shop.proto"], &["proto"]).unwrap();
/// ```
pub fn compile_files(files: &[&str], includes: &[&str]) -> Result<DescriptorPool> {
    let mut compiler = protox::Compiler::new(includes).map_err(Error::schema)?;
    compiler.include_imports(true);
    for f in files {
        compiler.open_file(f).map_err(Error::schema)?;
    }
    Ok(compiler.descriptor_pool())
}

fn decode_error(e: impl std::fmt::Display, ctx: &Context<'_>) -> DeserializeError {
    let msg = e.to_string();
    let kind = if msg.contains("recursion limit") {
        ErrorKind::TooDeep
    } else if msg.contains("UTF-8") || msg.contains("utf-8") {
        ErrorKind::InvalidUtf8
    } else {
        ErrorKind::Malformed
    };
    ctx.error(kind, format!("Protobuf: {msg}"))
}

/// A typed `prost::Message`.
///
/// ```
/// use weir_formats::protobuf::Protobuf;
/// use weir_formats::{Context, Part, SyncDeserializer, SyncSerializer};
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct Order { #[prost(int64, tag = "1")] id: i64, #[prost(string, tag = "2")] item: String }
/// let codec = Protobuf::<Order>::new();
/// let bytes = codec.encode(&Order { id: 1, item: "tea".into() }).unwrap();
/// let topic = "orders".into();
/// let back = codec.decode(Some(&bytes), &Context::new(&topic, 0, 0, Part::Value)).unwrap();
/// assert_eq!(back.item, "tea");
/// ```
pub struct Protobuf<M> {
    max_bytes: usize,
    _m: PhantomData<fn() -> M>,
}

impl<M> std::fmt::Debug for Protobuf<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protobuf")
            .field("type", &std::any::type_name::<M>())
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl<M> Clone for Protobuf<M> {
    fn clone(&self) -> Self {
        Self::new().with_max_bytes(self.max_bytes)
    }
}

impl<M> Default for Protobuf<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> Protobuf<M> {
    /// With the default size limit.
    pub fn new() -> Self {
        Self {
            max_bytes: crate::DEFAULT_MAX_BYTES,
            _m: PhantomData,
        }
    }

    /// Refuse inputs longer than `max_bytes`.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }
}

impl<M: prost::Message + Default> SyncDeserializer<M> for Protobuf<M> {
    fn decode(&self, data: Option<&[u8]>, ctx: &Context<'_>) -> Result<M, DeserializeError> {
        let data = ctx.require(data)?;
        ctx.check_size(data, self.max_bytes)?;
        M::decode(data).map_err(|e| decode_error(e, ctx))
    }
}

impl<M: prost::Message> SyncSerializer<M> for Protobuf<M> {
    fn encode(&self, value: &M) -> Result<Vec<u8>> {
        Ok(value.encode_to_vec())
    }
}

/// Dynamic messages of a type known at run time (from [`compile`]).
///
/// ```
/// use weir_formats::protobuf::{compile, ProtobufDynamic};
/// use weir_formats::{Context, Part, SyncDeserializer};
/// let pool = compile(&[("n.proto", "syntax = \"proto3\"; message N { N next = 1; int32 v = 2; }")]).unwrap();
/// let codec = ProtobufDynamic::new(pool.get_message_by_name("N").unwrap()).with_max_depth(3);
/// let topic = "t".into();
/// let ctx = Context::new(&topic, 0, 0, Part::Value);
/// let msg = codec.decode(Some(&[0x10, 0x07][..]), &ctx).unwrap();
/// assert_eq!(msg.get_field_by_name("v").unwrap().as_i32(), Some(7));
/// // four levels of `next`
/// let deep = [0x0a, 0x06, 0x0a, 0x04, 0x0a, 0x02, 0x0a, 0x00];
/// assert!(codec.decode(Some(&deep[..]), &ctx).is_err());
/// ```
#[derive(Clone, Debug)]
pub struct ProtobufDynamic {
    desc: MessageDescriptor,
    max_depth: usize,
    max_bytes: usize,
}

impl ProtobufDynamic {
    /// Decode messages of type `desc`.
    pub fn new(desc: MessageDescriptor) -> Self {
        Self {
            desc,
            max_depth: PROST_RECURSION_LIMIT,
            max_bytes: crate::DEFAULT_MAX_BYTES,
        }
    }

    /// Refuse messages nested deeper than `max_depth` (at most prost's 100).
    pub fn with_max_depth(mut self, max_depth: usize) -> Self {
        self.max_depth = max_depth.min(PROST_RECURSION_LIMIT);
        self
    }

    /// Refuse inputs longer than `max_bytes`.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The message type.
    pub fn descriptor(&self) -> &MessageDescriptor {
        &self.desc
    }
}

fn decode_dynamic(
    desc: &MessageDescriptor,
    data: &[u8],
    max_depth: usize,
    ctx: &Context<'_>,
) -> Result<DynamicMessage, DeserializeError> {
    if max_depth < PROST_RECURSION_LIMIT {
        depth::check(desc, data, max_depth).map_err(|e| match e {
            depth::Problem::TooDeep => ctx.error(
                ErrorKind::TooDeep,
                format!("Protobuf message nested deeper than {max_depth}"),
            ),
            depth::Problem::Malformed(m) => {
                ctx.error(ErrorKind::Malformed, format!("Protobuf: {m}"))
            }
        })?;
    }
    DynamicMessage::decode(desc.clone(), data).map_err(|e| decode_error(e, ctx))
}

impl SyncDeserializer<DynamicMessage> for ProtobufDynamic {
    fn decode(
        &self,
        data: Option<&[u8]>,
        ctx: &Context<'_>,
    ) -> Result<DynamicMessage, DeserializeError> {
        let data = ctx.require(data)?;
        ctx.check_size(data, self.max_bytes)?;
        decode_dynamic(&self.desc, data, self.max_depth, ctx)
    }
}

impl SyncSerializer<DynamicMessage> for ProtobufDynamic {
    fn encode(&self, value: &DynamicMessage) -> Result<Vec<u8>> {
        if value.descriptor() != self.desc {
            return Err(Error::serialize(format!(
                "message is a {}, expected {}",
                value.descriptor().full_name(),
                self.desc.full_name()
            )));
        }
        Ok(prost::Message::encode_to_vec(value))
    }
}

async_via_sync!(impl[M: prost::Message + Default + Send] Protobuf<M> => M);
async_ser_via_sync!(impl[M: prost::Message + Sync] Protobuf<M> => M);
async_via_sync!(impl[] ProtobufDynamic => DynamicMessage);
async_ser_via_sync!(impl[] ProtobufDynamic => DynamicMessage);

/// The message a Confluent message-index array selects in a schema file.
fn select(file: &FileDescriptor, indexes: &[usize]) -> Option<MessageDescriptor> {
    let (&first, rest) = indexes.split_first()?;
    let mut desc = file.messages().nth(first)?;
    for &i in rest {
        let child = desc.child_messages().nth(i)?;
        desc = child;
    }
    Some(desc)
}

/// The message-index array of a message in its file (the inverse of `select`).
fn indexes_of(desc: &MessageDescriptor) -> Vec<usize> {
    let mut path = Vec::new();
    let mut current = desc.clone();
    loop {
        match current.parent_message() {
            Some(parent) => {
                let i = parent
                    .child_messages()
                    .position(|m| m == current)
                    .unwrap_or(0);
                path.push(i);
                current = parent;
            }
            None => {
                let i = current
                    .parent_file()
                    .messages()
                    .position(|m| m == current)
                    .unwrap_or(0);
                path.push(i);
                break;
            }
        }
    }
    path.reverse();
    path
}

/// One compiled registry schema: the file the framing's message indexes point into.
struct RegistryCore {
    registry: Arc<SchemaRegistry>,
    files: RwLock<framing::SchemaMap<FileDescriptor>>,
    max_bytes: usize,
    max_depth: usize,
}

impl RegistryCore {
    fn new(registry: Arc<SchemaRegistry>) -> Self {
        Self {
            registry,
            files: RwLock::new(framing::SchemaMap::default()),
            max_bytes: crate::DEFAULT_MAX_BYTES,
            max_depth: PROST_RECURSION_LIMIT,
        }
    }

    async fn file(
        &self,
        schema: SchemaRef,
        ctx: &Context<'_>,
    ) -> Result<FileDescriptor, DeserializeError> {
        if let Some(f) = self.files.read().get(&schema) {
            return Ok(f.clone());
        }
        let fetched = self
            .registry
            .schema(schema)
            .await
            .map_err(|e| registry::to_deserialize_error(e, schema, ctx))?;
        let mismatch = |reason: String| {
            ctx.error(
                ErrorKind::SchemaMismatch,
                format!("writer schema {schema}: {reason}"),
            )
        };
        if fetched.schema_type != SchemaType::Protobuf {
            return Err(mismatch(format!(
                "is {:?}, not Protobuf",
                fetched.schema_type
            )));
        }
        // References are other registered subjects, imported by name.
        let mut sources = HashMap::new();
        let mut pending: Vec<registry::SchemaReference> = fetched.references.clone();
        while let Some(r) = pending.pop() {
            if sources.contains_key(&r.name) || sources.len() > 256 {
                continue;
            }
            let referenced = self
                .registry
                .referenced(&r.subject, r.version)
                .await
                .map_err(|e| registry::to_deserialize_error(e, schema, ctx))?;
            pending.extend(referenced.references.iter().cloned());
            sources.insert(r.name.clone(), referenced.schema.clone());
        }
        let root = format!("weir-registry-{}.proto", schema).replace(' ', "-");
        sources.insert(root.clone(), fetched.schema.clone());
        let pool = compile_sources(sources, std::iter::once(root.as_str()))
            .map_err(|e| mismatch(e.to_string()))?;
        let file = pool
            .get_file_by_name(&root)
            .ok_or_else(|| mismatch("compiled file missing".into()))?;
        self.files.write().insert(schema, file.clone());
        Ok(file)
    }

    async fn locate<'a>(
        &self,
        data: Option<&'a [u8]>,
        ctx: &Context<'a>,
    ) -> Result<(MessageDescriptor, &'a [u8]), DeserializeError> {
        let data = ctx.require(data)?;
        ctx.check_size(data, self.max_bytes)?;
        let located = framing::locate(data, ctx)?;
        let (indexes, payload) = located.protobuf(data, ctx)?;
        let file = self.file(located.schema, ctx).await?;
        let desc = select(&file, &indexes).ok_or_else(|| {
            ctx.error(
                ErrorKind::SchemaMismatch,
                format!(
                    "message index {indexes:?} selects no message in writer schema {}",
                    located.schema
                ),
            )
        })?;
        Ok((desc, payload))
    }
}

/// Registry-framed Protobuf (`0x00` + id + message indexes, `0x01` + GUID + message
/// indexes, or the id in a header), decoded into [`DynamicMessage`]s of the type the
/// message indexes select in the writer schema, compiled once per id.
///
/// ```
/// use std::sync::Arc;
/// use weir_core::{Bytes, Record};
/// use weir_formats::framing::SchemaRef;
/// use weir_formats::protobuf::{ReflectMessage, RegistryProtobuf};
/// use weir_formats::registry::{RegistryConfig, Schema, SchemaRegistry};
/// use weir_formats::{Deserializer, ErrorKind};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let registry = Arc::new(SchemaRegistry::new(RegistryConfig::new("http://127.0.0.1:8081").unwrap()).unwrap());
/// registry.preload(SchemaRef::Id(3), Schema::protobuf(
///     "syntax = \"proto3\"; package shop; message Order { int64 id = 1; message Line { string sku = 1; } }",
/// )); // as if fetched
/// let proto = RegistryProtobuf::new(registry);
/// // 0x00 + id 3 + indexes [0] (the single byte 0x00) + Order { id: 7 }
/// let order = Record::new("t", 0, 0, None, Some(Bytes::from_static(&[0, 0, 0, 0, 3, 0x00, 0x08, 0x07])));
/// let m = proto.value(&order).await.unwrap();
/// assert_eq!(m.descriptor().full_name(), "shop.Order");
/// // indexes [0, 0] (count 2, zig-zag 0x04) select the nested shop.Order.Line
/// let line = Record::new("t", 0, 1, None, Some(Bytes::from_static(&[0, 0, 0, 0, 3, 0x04, 0, 0, 0x0a, 0x01, b'a'])));
/// let m = proto.value(&line).await.unwrap();
/// assert_eq!(m.descriptor().full_name(), "shop.Order.Line");
/// // index [5] selects nothing: permanent
/// let bad = Record::new("t", 0, 2, None, Some(Bytes::from_static(&[0, 0, 0, 0, 3, 0x02, 0x0a])));
/// assert_eq!(proto.value(&bad).await.unwrap_err().kind(), ErrorKind::SchemaMismatch);
/// # }
/// ```
pub struct RegistryProtobuf {
    core: RegistryCore,
}

impl std::fmt::Debug for RegistryProtobuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryProtobuf")
            .field("registry", &self.core.registry)
            .finish()
    }
}

impl RegistryProtobuf {
    /// Fetch writer schemas from the registry at `url` (default settings; see
    /// [`RegistryAvro::from_url`](crate::avro::RegistryAvro::from_url)).
    ///
    /// ```
    /// let proto = weir_formats::protobuf::RegistryProtobuf::from_url("http://127.0.0.1:8081")?;
    /// # drop(proto);
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

    /// Refuse messages nested deeper than `max_depth` (at most 100).
    pub fn with_max_depth(mut self, max_depth: usize) -> Self {
        self.core.max_depth = max_depth.min(PROST_RECURSION_LIMIT);
        self
    }

    /// Refuse inputs longer than `max_bytes`.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.core.max_bytes = max_bytes;
        self
    }
}

impl Deserializer<DynamicMessage> for RegistryProtobuf {
    async fn deserialize(
        &self,
        data: Option<&[u8]>,
        ctx: &Context<'_>,
    ) -> Result<DynamicMessage, DeserializeError> {
        let (desc, payload) = self.core.locate(data, ctx).await?;
        decode_dynamic(&desc, payload, self.core.max_depth, ctx)
    }
}

/// Registry-framed Protobuf decoded into a typed `prost::Message` `M`. The framing is
/// checked (the id must exist, the message indexes must select a message whose full
/// name is `M`'s when [`with_full_name`](Self::with_full_name) is given).
///
/// ```
/// use std::sync::Arc;
/// use weir_core::{Bytes, Record};
/// use weir_formats::framing::SchemaRef;
/// use weir_formats::protobuf::RegistryProtobufTyped;
/// use weir_formats::registry::{RegistryConfig, Schema, SchemaRegistry};
/// use weir_formats::Deserializer;
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct Order { #[prost(int64, tag = "1")] id: i64 }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let registry = Arc::new(SchemaRegistry::new(RegistryConfig::new("http://127.0.0.1:8081").unwrap()).unwrap());
/// registry.preload(SchemaRef::Id(3), Schema::protobuf(
///     "syntax = \"proto3\"; package shop; message Order { int64 id = 1; }",
/// )); // as if fetched
/// let proto = RegistryProtobufTyped::<Order>::new(registry).with_full_name("shop.Order");
/// let record = Record::new("t", 0, 0, None, Some(Bytes::from_static(&[0, 0, 0, 0, 3, 0x00, 0x08, 0x07])));
/// assert_eq!(proto.value(&record).await.unwrap(), Order { id: 7 });
/// # }
/// ```
pub struct RegistryProtobufTyped<M> {
    core: RegistryCore,
    full_name: Option<String>,
    _m: PhantomData<fn() -> M>,
}

impl<M> std::fmt::Debug for RegistryProtobufTyped<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryProtobufTyped")
            .field("type", &std::any::type_name::<M>())
            .field("registry", &self.core.registry)
            .finish()
    }
}

impl<M> RegistryProtobufTyped<M> {
    /// Fetch writer schemas from `registry`.
    pub fn new(registry: Arc<SchemaRegistry>) -> Self {
        Self {
            core: RegistryCore::new(registry),
            full_name: None,
            _m: PhantomData,
        }
    }

    /// Require the selected message to be `full_name` (e.g. `shop.Order`); otherwise a
    /// permanent [`ErrorKind::SchemaMismatch`].
    pub fn with_full_name(mut self, full_name: impl Into<String>) -> Self {
        self.full_name = Some(full_name.into());
        self
    }

    /// Refuse inputs longer than `max_bytes`.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.core.max_bytes = max_bytes;
        self
    }
}

impl<M: prost::Message + Default + Send> Deserializer<M> for RegistryProtobufTyped<M> {
    async fn deserialize(
        &self,
        data: Option<&[u8]>,
        ctx: &Context<'_>,
    ) -> Result<M, DeserializeError> {
        let (desc, payload) = self.core.locate(data, ctx).await?;
        if let Some(name) = &self.full_name {
            if desc.full_name() != name {
                return Err(ctx.error(
                    ErrorKind::SchemaMismatch,
                    format!("writer message is {}, expected {name}", desc.full_name()),
                ));
            }
        }
        M::decode(payload).map_err(|e| decode_error(e, ctx))
    }
}

/// Serializes [`DynamicMessage`]s framed for a registry: registers the message's
/// `.proto` source under the record's TopicNameStrategy subject once, then writes
/// `0x00` + id + the message's index array + the message.
///
/// ```no_run
/// use std::sync::Arc;
/// use weir_formats::protobuf::{compile, DynamicMessage, RegistryProtobufSerializer};
/// use weir_formats::registry::{RegistryConfig, SchemaRegistry};
/// use weir_formats::{Context, Part, Serializer};
/// # async fn f() -> anyhow::Result<()> {
/// let source = "syntax = \"proto3\"; package shop; message Order { int64 id = 1; }";
/// let desc = compile(&[("shop.proto", source)])?.get_message_by_name("shop.Order").unwrap();
/// let registry = Arc::new(SchemaRegistry::new(RegistryConfig::new("http://127.0.0.1:8081")?)?);
/// let ser = RegistryProtobufSerializer::new(registry, source, desc.clone());
/// let topic = "orders".into();
/// // registers under `orders-value` (once): 0x00 + id + indexes [0] as 0x00 + message
/// let bytes = ser.serialize(&DynamicMessage::new(desc), &Context::new(&topic, 0, 0, Part::Value)).await?;
/// assert_eq!(bytes[5], 0x00);
/// # Ok(()) }
/// ```
pub struct RegistryProtobufSerializer {
    registry: Arc<SchemaRegistry>,
    schema: registry::Schema,
    desc: MessageDescriptor,
}

impl std::fmt::Debug for RegistryProtobufSerializer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryProtobufSerializer")
            .field("message", &self.desc.full_name())
            .finish()
    }
}

impl RegistryProtobufSerializer {
    /// Serialize messages of type `desc`, whose file's source is `proto_source`.
    pub fn new(registry: Arc<SchemaRegistry>, proto_source: &str, desc: MessageDescriptor) -> Self {
        Self {
            registry,
            schema: registry::Schema::protobuf(proto_source),
            desc,
        }
    }
}

impl Serializer<DynamicMessage> for RegistryProtobufSerializer {
    async fn serialize(&self, value: &DynamicMessage, ctx: &Context<'_>) -> Result<Vec<u8>> {
        let subject = registry::topic_subject(ctx.topic(), ctx.part());
        let id = self.registry.register(&subject, &self.schema).await?;
        let mut out = Vec::new();
        framing::write_prefix(&SchemaRef::Id(id), &mut out);
        framing::write_message_indexes(&indexes_of(&value.descriptor()), &mut out);
        prost::Message::encode(value, &mut out).map_err(Error::serialize)?;
        Ok(out)
    }
}

/// A scan of the wire format, guided by the descriptor, that measures message nesting
/// without building anything. Its own recursion is bounded by the limit it checks.
mod depth {
    use prost_reflect::{Kind, MessageDescriptor};

    pub(super) enum Problem {
        TooDeep,
        Malformed(&'static str),
    }

    fn varint(buf: &mut &[u8]) -> Result<u64, Problem> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = buf
                .split_first()
                .ok_or(Problem::Malformed("truncated varint"))?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Problem::Malformed("varint longer than 10 bytes"))
    }

    fn skip<'a>(buf: &mut &'a [u8], n: u64) -> Result<&'a [u8], Problem> {
        let n = usize::try_from(n).map_err(|_| Problem::Malformed("length too large"))?;
        if n > buf.len() {
            return Err(Problem::Malformed("length beyond the end of the message"));
        }
        let (head, rest) = buf.split_at(n);
        *buf = rest;
        Ok(head)
    }

    pub(super) fn check(desc: &MessageDescriptor, data: &[u8], max: usize) -> Result<(), Problem> {
        walk(Some(desc), data, 1, max)
    }

    fn walk(
        desc: Option<&MessageDescriptor>,
        mut buf: &[u8],
        depth: usize,
        max: usize,
    ) -> Result<(), Problem> {
        if depth > max {
            return Err(Problem::TooDeep);
        }
        let mut groups = 0usize;
        while !buf.is_empty() {
            let tag = varint(&mut buf)?;
            let number = u32::try_from(tag >> 3)
                .map_err(|_| Problem::Malformed("field number too large"))?;
            match tag & 7 {
                0 => {
                    varint(&mut buf)?;
                }
                1 => {
                    skip(&mut buf, 8)?;
                }
                5 => {
                    skip(&mut buf, 4)?;
                }
                2 => {
                    let len = varint(&mut buf)?;
                    let body = skip(&mut buf, len)?;
                    let sub = desc
                        .and_then(|d| d.get_field(number))
                        .and_then(|f| match f.kind() {
                            Kind::Message(m) => Some(m),
                            _ => None,
                        });
                    if let Some(sub) = sub {
                        walk(Some(&sub), body, depth + 1, max)?;
                    }
                }
                3 => {
                    groups += 1;
                    if depth + groups > max {
                        return Err(Problem::TooDeep);
                    }
                }
                4 => {
                    groups = groups
                        .checked_sub(1)
                        .ok_or(Problem::Malformed("unmatched end group"))?;
                }
                _ => return Err(Problem::Malformed("invalid wire type")),
            }
        }
        Ok(())
    }
}

/// Serializes a typed `prost::Message` framed for a registry: registers `proto_source`
/// under the record's TopicNameStrategy subject once, then writes `0x00` + id + the
/// message-index array of `full_name` in that source + the message.
///
/// ```no_run
/// use std::sync::Arc;
/// use weir_formats::protobuf::RegistryProtobufTypedSerializer;
/// use weir_formats::registry::{RegistryConfig, SchemaRegistry};
/// use weir_formats::{Context, Part, Serializer};
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct Order { #[prost(int64, tag = "1")] id: i64 }
/// # async fn f() -> anyhow::Result<()> {
/// let source = "syntax = \"proto3\"; package shop; message Order { int64 id = 1; }";
/// let registry = Arc::new(SchemaRegistry::new(RegistryConfig::new("http://127.0.0.1:8081")?)?);
/// let ser = RegistryProtobufTypedSerializer::<Order>::new(registry, source, "shop.Order")?;
/// let topic = "orders".into();
/// let bytes = ser.serialize(&Order { id: 7 }, &Context::new(&topic, 0, 0, Part::Value)).await?;
/// assert_eq!(&bytes[5..], &[0x00, 0x08, 0x07]);
/// # Ok(()) }
/// ```
pub struct RegistryProtobufTypedSerializer<M> {
    registry: Arc<SchemaRegistry>,
    schema: registry::Schema,
    indexes: Vec<usize>,
    _m: PhantomData<fn(&M)>,
}

impl<M> std::fmt::Debug for RegistryProtobufTypedSerializer<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryProtobufTypedSerializer")
            .field("type", &std::any::type_name::<M>())
            .field("indexes", &self.indexes)
            .finish()
    }
}

impl<M> RegistryProtobufTypedSerializer<M> {
    /// Serialize `M`, the message `full_name` (e.g. `shop.Order.Line`) of `proto_source`.
    pub fn new(registry: Arc<SchemaRegistry>, proto_source: &str, full_name: &str) -> Result<Self> {
        let pool = compile(&[("weir-typed.proto", proto_source)])?;
        let desc = pool
            .get_message_by_name(full_name)
            .ok_or_else(|| Error::schema(format!("no message `{full_name}` in the source")))?;
        Ok(Self {
            registry,
            schema: registry::Schema::protobuf(proto_source),
            indexes: indexes_of(&desc),
            _m: PhantomData,
        })
    }
}

impl<M: prost::Message + Sync> Serializer<M> for RegistryProtobufTypedSerializer<M> {
    async fn serialize(&self, value: &M, ctx: &Context<'_>) -> Result<Vec<u8>> {
        let subject = registry::topic_subject(ctx.topic(), ctx.part());
        let id = self.registry.register(&subject, &self.schema).await?;
        let mut out = Vec::with_capacity(8 + value.encoded_len());
        framing::write_prefix(&SchemaRef::Id(id), &mut out);
        framing::write_message_indexes(&self.indexes, &mut out);
        value.encode(&mut out).map_err(Error::serialize)?;
        Ok(out)
    }
}
