//! JSON through serde_json: any `T: DeserializeOwned`, or untyped `serde_json::Value`.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::traits::{async_ser_via_sync, async_via_sync};
use crate::{
    Context, DeserializeError, Error, ErrorKind, Result, SyncDeserializer, SyncSerializer,
};

/// serde_json's own recursion limit; deeper input is always an error.
pub const SERDE_JSON_DEPTH_LIMIT: usize = 128;

/// JSON text, decoded with serde_json into any `T: DeserializeOwned` (including
/// `serde_json::Value`).
///
/// Nesting is limited to 128 levels (serde_json's own limit) or a lower
/// [`with_max_depth`](Self::with_max_depth) (checked by a scan before parsing), so a
/// 100 000-deep array is an [`ErrorKind::TooDeep`] error, never a stack overflow. Values
/// that a typed `T` ignores (unknown fields) are skipped by serde_json without
/// recursion; with the default limit their depth is not checked.
///
/// ```
/// use weir_formats::{Context, Json, Part, SyncDeserializer, SyncSerializer};
/// #[derive(serde::Deserialize, serde::Serialize, PartialEq, Debug)]
/// struct Order { id: u64, item: String }
/// let topic = "orders".into();
/// let ctx = Context::new(&topic, 0, 9, Part::Value);
/// let order: Order = Json::new().decode(Some(br#"{"id":1,"item":"tea"}"#), &ctx).unwrap();
/// assert_eq!(order, Order { id: 1, item: "tea".into() });
/// let any: serde_json::Value = Json::new().decode(Some(b"[1,2]"), &ctx).unwrap();
/// assert_eq!(any[1], 2);
/// let bytes = Json::new().encode(&order).unwrap();
/// assert_eq!(bytes, br#"{"id":1,"item":"tea"}"#);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Json {
    max_bytes: usize,
    max_depth: usize,
}

impl Default for Json {
    fn default() -> Self {
        Self::new()
    }
}

impl Json {
    /// Default limits: [`DEFAULT_MAX_BYTES`](crate::DEFAULT_MAX_BYTES), depth 128.
    pub fn new() -> Self {
        Self {
            max_bytes: crate::DEFAULT_MAX_BYTES,
            max_depth: SERDE_JSON_DEPTH_LIMIT,
        }
    }

    /// Refuse inputs longer than `max_bytes`.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Refuse arrays/objects nested deeper than `max_depth` (at most 128, serde_json's
    /// own limit).
    pub fn with_max_depth(mut self, max_depth: usize) -> Self {
        self.max_depth = max_depth.min(SERDE_JSON_DEPTH_LIMIT);
        self
    }

    /// Decode JSON bytes that are already unframed and size-checked.
    pub(crate) fn parse<T: DeserializeOwned>(
        &self,
        data: &[u8],
        ctx: &Context<'_>,
    ) -> Result<T, DeserializeError> {
        // serde_json enforces 128 levels for every value it builds; values a typed `T`
        // ignores are skipped iteratively (no recursion, whatever their depth). A lower
        // configured limit is checked by a scan (depth cannot exceed the count of
        // openers, counted first because that is vectorised).
        if self.max_depth < SERDE_JSON_DEPTH_LIMIT
            && data.len() > self.max_depth
            && openers(data) > self.max_depth
        {
            check_depth(data, self.max_depth, ctx)?;
        }
        serde_json::from_slice(data).map_err(|e| json_error(e, ctx))
    }
}

fn json_error(e: serde_json::Error, ctx: &Context<'_>) -> DeserializeError {
    use serde_json::error::Category;
    let msg = e.to_string();
    let kind = match e.classify() {
        Category::Data => ErrorKind::WrongType,
        _ if msg.starts_with("recursion limit exceeded") => ErrorKind::TooDeep,
        _ if msg.starts_with("invalid unicode") => ErrorKind::InvalidUtf8,
        _ => ErrorKind::Malformed,
    };
    ctx.error(kind, format!("JSON: {msg}")).with_source(e)
}

/// How many `[` and `{` bytes there are (a vectorisable upper bound of the depth).
fn openers(data: &[u8]) -> usize {
    // `[` is 0x5b and `{` 0x7b: one compare after setting bit 0x20 finds both, and the
    // count idiom vectorises.
    data.iter().filter(|&&b| b | 0x20 == b'{').count()
}

/// Nesting depth of arrays and objects, outside strings; stops at the first level past
/// `max`.
fn check_depth(data: &[u8], max: usize, ctx: &Context<'_>) -> Result<(), DeserializeError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in data.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(ctx.error(
                        ErrorKind::TooDeep,
                        format!("JSON nested deeper than {max} at byte {i}"),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

impl<T: DeserializeOwned> SyncDeserializer<T> for Json {
    fn decode(&self, data: Option<&[u8]>, ctx: &Context<'_>) -> Result<T, DeserializeError> {
        let data = ctx.require(data)?;
        ctx.check_size(data, self.max_bytes)?;
        self.parse(data, ctx)
    }
}

impl<T: Serialize + ?Sized> SyncSerializer<T> for Json {
    fn encode(&self, value: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(Error::serialize)
    }
}

async_via_sync!(impl[T: DeserializeOwned + Send] Json => T);
async_ser_via_sync!(impl[T: Serialize + Sync + ?Sized] Json => T);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Part;

    #[test]
    fn depth_scan_ignores_brackets_in_strings() {
        let topic = "t".into();
        let ctx = Context::new(&topic, 0, 0, Part::Value);
        let json = Json::new().with_max_depth(2);
        let v: serde_json::Value = json.decode(Some(br#"[["[[[[\"]]"]]"#), &ctx).unwrap();
        assert_eq!(v[0][0], "[[[[\"]]");
        let e = SyncDeserializer::<serde_json::Value>::decode(&json, Some(b"[[[1]]]"), &ctx)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooDeep);
    }
}

/// JSON framed for a schema registry with a JSON Schema (`0x00` + id, `0x01` + GUID, or
/// the id in a header), as Confluent's `KafkaJsonSchemaSerializer` writes it. The id
/// must name a JSON Schema in the registry (fetched once per id; unknown ids are
/// permanent errors, an unreachable registry transient). The JSON is decoded into `T`;
/// it is not validated against the JSON Schema.
///
/// ```
/// use std::sync::Arc;
/// use weir_core::{Bytes, Record};
/// use weir_formats::framing::SchemaRef;
/// use weir_formats::json::RegistryJson;
/// use weir_formats::registry::{RegistryConfig, Schema, SchemaRegistry};
/// use weir_formats::Deserializer;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let registry = Arc::new(SchemaRegistry::new(RegistryConfig::new("http://127.0.0.1:8081").unwrap()).unwrap());
/// registry.preload(SchemaRef::Id(4), Schema::json(r#"{"type":"object"}"#)); // as if fetched
/// let json = RegistryJson::new(registry);
/// let mut value = vec![0, 0, 0, 0, 4];
/// value.extend_from_slice(br#"{"id":7}"#);
/// let record = Record::new("orders", 0, 0, None, Some(Bytes::from(value)));
/// let v: serde_json::Value = json.value(&record).await.unwrap();
/// assert_eq!(v["id"], 7);
/// # }
/// ```
pub struct RegistryJson {
    registry: std::sync::Arc<crate::registry::SchemaRegistry>,
    known: parking_lot::RwLock<std::collections::HashSet<crate::framing::SchemaRef>>,
    json: Json,
}

impl std::fmt::Debug for RegistryJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryJson")
            .field("registry", &self.registry)
            .field("json", &self.json)
            .finish()
    }
}

impl RegistryJson {
    /// Check writer schemas against the registry at `url` (default settings; see
    /// [`RegistryAvro::from_url`](crate::avro::RegistryAvro::from_url)).
    ///
    /// ```
    /// let json = weir_formats::json::RegistryJson::from_url("http://127.0.0.1:8081")?;
    /// # drop(json);
    /// # Ok::<(), weir_formats::Error>(())
    /// ```
    pub fn from_url(url: impl AsRef<str>) -> crate::Result<Self> {
        Ok(Self::new(crate::registry::SchemaRegistry::from_url(url)?))
    }

    /// Check writer schemas against `registry`.
    pub fn new(registry: std::sync::Arc<crate::registry::SchemaRegistry>) -> Self {
        Self {
            registry,
            known: parking_lot::RwLock::new(std::collections::HashSet::new()),
            json: Json::new(),
        }
    }

    /// Use these JSON limits.
    pub fn with_json(mut self, json: Json) -> Self {
        self.json = json;
        self
    }
}

impl<T: DeserializeOwned + Send> crate::Deserializer<T> for RegistryJson {
    async fn deserialize(
        &self,
        data: Option<&[u8]>,
        ctx: &Context<'_>,
    ) -> Result<T, DeserializeError> {
        let data = ctx.require(data)?;
        ctx.check_size(data, self.json.max_bytes)?;
        let located = crate::framing::locate(data, ctx)?;
        if !self.known.read().contains(&located.schema) {
            let schema = self
                .registry
                .schema(located.schema)
                .await
                .map_err(|e| crate::registry::to_deserialize_error(e, located.schema, ctx))?;
            if schema.schema_type != crate::registry::SchemaType::Json {
                return Err(ctx.error(
                    ErrorKind::SchemaMismatch,
                    format!(
                        "writer schema {} is {:?}, not JSON Schema",
                        located.schema, schema.schema_type
                    ),
                ));
            }
            self.known.write().insert(located.schema);
        }
        self.json.parse(located.payload(data), ctx)
    }
}

/// Serializes `T` as JSON framed with `0x00` + the id of a JSON Schema, registered
/// under the record's TopicNameStrategy subject once.
///
/// ```no_run
/// use std::sync::Arc;
/// use weir_formats::json::RegistryJsonSerializer;
/// use weir_formats::registry::{RegistryConfig, SchemaRegistry};
/// use weir_formats::{Context, Part, Serializer};
/// # async fn f() -> anyhow::Result<()> {
/// let registry = Arc::new(SchemaRegistry::new(RegistryConfig::new("http://127.0.0.1:8081")?)?);
/// let ser = RegistryJsonSerializer::new(registry, r#"{"type":"object"}"#);
/// let topic = "orders".into();
/// // registers under `orders-value` (once), then frames: 0x00 + id + JSON text
/// let bytes = ser.serialize(&serde_json::json!({"id": 7}), &Context::new(&topic, 0, 0, Part::Value)).await?;
/// assert_eq!(bytes[0], 0x00);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RegistryJsonSerializer {
    registry: std::sync::Arc<crate::registry::SchemaRegistry>,
    schema: crate::registry::Schema,
}

impl RegistryJsonSerializer {
    /// Serialize with the JSON Schema `json_schema` (its text).
    pub fn new(
        registry: std::sync::Arc<crate::registry::SchemaRegistry>,
        json_schema: &str,
    ) -> Self {
        Self {
            registry,
            schema: crate::registry::Schema::json(json_schema),
        }
    }
}

impl<T: Serialize + Sync> crate::Serializer<T> for RegistryJsonSerializer {
    async fn serialize(&self, value: &T, ctx: &Context<'_>) -> Result<Vec<u8>> {
        let subject = crate::registry::topic_subject(ctx.topic(), ctx.part());
        let id = self.registry.register(&subject, &self.schema).await?;
        let mut out = Vec::new();
        crate::framing::write_prefix(&crate::framing::SchemaRef::Id(id), &mut out);
        serde_json::to_writer(&mut out, value).map_err(Error::serialize)?;
        Ok(out)
    }
}
