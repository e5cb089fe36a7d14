//! `weir produce --format avro|protobuf --registry URL`: JSON input encoded with a
//! schema registered in a Confluent-compatible schema registry, framed as Confluent's
//! wire format (magic byte 0, the schema id, for Protobuf the message indexes, then
//! the datum), so weir's registry deserializers (and any Confluent client) read it.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use clap::ValueEnum;
use weir_formats::framing::{write_prefix, SchemaRef};
use weir_formats::protobuf::{DynamicMessage, MessageDescriptor, RegistryProtobufSerializer};
use weir_formats::registry::{self, SchemaRegistry};
use weir_formats::{Context, Part, Serializer};

/// The value encoding of produced records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Each JSON line as is (no registry).
    #[default]
    Json,
    /// Avro, with an `.avsc` schema (`--schema`, or the sample order's for `--generate`).
    Avro,
    /// Protobuf, with a `.proto` file (`--schema`, `--message`), JSON in Protobuf's
    /// JSON mapping.
    Protobuf,
}

/// The Avro schema of the sample orders of `--generate`.
pub const ORDER_AVSC: &str = r#"{"type":"record","name":"Order","namespace":"weir.sample","fields":[{"name":"id","type":"long"},{"name":"customer","type":"string"},{"name":"amount","type":"double"}]}"#;

/// The Protobuf schema of the sample orders of `--generate`.
pub const ORDER_PROTO: &str = "syntax = \"proto3\";\npackage weir.sample;\nmessage Order {\n  int64 id = 1;\n  string customer = 2;\n  double amount = 3;\n}\n";

enum Codec {
    Avro(weir_formats::avro::Schema),
    Protobuf(MessageDescriptor),
}

/// Turns one JSON value into framed bytes; the schema is registered once, when made.
pub struct Encoder {
    prefix: Vec<u8>,
    codec: Codec,
    /// For messages: the schema's file, or "the sample order schema".
    schema_name: String,
}

impl Encoder {
    /// Registers the schema under `<topic>-value` at `registry` and returns the
    /// encoder; `None` for `Format::Json`.
    pub async fn new(
        format: Format,
        registry_url: Option<&str>,
        schema_file: Option<&Path>,
        message: Option<&str>,
        topic: &str,
    ) -> anyhow::Result<Option<Encoder>> {
        if format == Format::Json {
            if registry_url.is_some() || schema_file.is_some() || message.is_some() {
                bail!("--registry, --schema and --message go with --format avro or protobuf");
            }
            return Ok(None);
        }
        let Some(url) = registry_url else {
            bail!("--format {format:?} needs --registry URL (a Confluent-compatible schema registry, e.g. http://127.0.0.1:8081)", format = format.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default());
        };
        let registry = SchemaRegistry::from_url(url)
            .with_context(|| format!("bad --registry {}", weir_sql::admin::redact_url(url)))?;
        let place = weir_sql::admin::redact_url(registry.config().url());
        let (text, schema_name) = match schema_file {
            Some(p) => (
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read --schema {}", p.display()))?,
                p.display().to_string(),
            ),
            None => {
                let builtin = if format == Format::Avro {
                    ORDER_AVSC
                } else {
                    ORDER_PROTO
                };
                (builtin.to_owned(), "the sample order schema".to_owned())
            }
        };
        let subject = registry::topic_subject(topic, Part::Value);
        let topic_arc: Arc<str> = Arc::from(topic);
        let ctx = Context::new(&topic_arc, 0, 0, Part::Value);
        match format {
            Format::Avro => {
                let schema = weir_formats::avro::parse_schema(&text)
                    .with_context(|| format!("{schema_name} is not an Avro schema"))?;
                let id = registry
                    .register(&subject, &registry::Schema::avro(text.clone()))
                    .await
                    .with_context(|| {
                        format!("cannot register {schema_name} under `{subject}` at {place}")
                    })?;
                let mut prefix = Vec::new();
                write_prefix(&SchemaRef::Id(id), &mut prefix);
                Ok(Some(Encoder {
                    prefix,
                    codec: Codec::Avro(schema),
                    schema_name,
                }))
            }
            Format::Protobuf => {
                let file = schema_file
                    .and_then(|p| p.file_name())
                    .map_or("order.proto".to_owned(), |n| {
                        n.to_string_lossy().into_owned()
                    });
                let pool = weir_formats::protobuf::compile(&[(file.as_str(), text.as_str())])
                    .with_context(|| format!("{schema_name} does not compile"))?;
                let desc = match message {
                    Some(m) => pool.get_message_by_name(m).ok_or_else(|| {
                        let known: Vec<String> = pool
                            .all_messages()
                            .map(|m| m.full_name().to_owned())
                            .collect();
                        anyhow::anyhow!(
                            "{schema_name} has no message `{m}` (it has: {})",
                            known.join(", ")
                        )
                    })?,
                    None => pool
                        .files()
                        .find(|f| f.name() == file)
                        .and_then(|f| f.messages().next())
                        .ok_or_else(|| anyhow::anyhow!("{schema_name} defines no message"))?,
                };
                // The framing of an empty message is the prefix and the message
                // indexes alone (proto3 encodes it as no bytes): learnt once here.
                let ser = RegistryProtobufSerializer::new(registry, &text, desc.clone());
                let prefix = ser
                    .serialize(&DynamicMessage::new(desc.clone()), &ctx)
                    .await
                    .with_context(|| {
                        format!("cannot register {schema_name} under `{subject}` at {place}")
                    })?;
                Ok(Some(Encoder {
                    prefix,
                    codec: Codec::Protobuf(desc),
                    schema_name,
                }))
            }
            Format::Json => Ok(None),
        }
    }

    /// The framed encoding of `json` (one input line); `what` names it in errors.
    pub fn encode(&self, json: &[u8], what: &str) -> anyhow::Result<Vec<u8>> {
        let mut out = self.prefix.clone();
        match &self.codec {
            Codec::Avro(schema) => {
                let v: serde_json::Value =
                    serde_json::from_slice(json).with_context(|| format!("{what} is not JSON"))?;
                let value = json_to_avro(v)
                    .resolve(schema)
                    .with_context(|| format!("{what} does not match {}", self.schema_name))?;
                let datum = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
                    .build()
                    .and_then(|w| w.write_value_to_vec(value))
                    .with_context(|| {
                        format!("{what} cannot be written with {}", self.schema_name)
                    })?;
                out.extend_from_slice(&datum);
            }
            Codec::Protobuf(desc) => {
                let mut de = serde_json::Deserializer::from_slice(json);
                let msg =
                    DynamicMessage::deserialize(desc.clone(), &mut de).with_context(|| {
                        format!(
                            "{what} is not a {} in Protobuf's JSON mapping",
                            desc.full_name()
                        )
                    })?;
                prost::Message::encode(&msg, &mut out)
                    .with_context(|| format!("{what} cannot be encoded"))?;
            }
        }
        Ok(out)
    }
}

/// JSON as a schema-less Avro value (integers as `Long`, other numbers as `Double`,
/// objects as maps), for [`Value::resolve`](weir_formats::avro::Value::resolve)
/// against the schema to turn into records, ints, floats, enums and unions.
fn json_to_avro(v: serde_json::Value) -> weir_formats::avro::Value {
    use weir_formats::avro::Value;
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Boolean(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Long(i),
            None => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Array(a) => Value::Array(a.into_iter().map(json_to_avro).collect()),
        serde_json::Value::Object(o) => {
            Value::Map(o.into_iter().map(|(k, v)| (k, json_to_avro(v))).collect())
        }
    }
}
