//! Avro: generic values, typed serde decoding, and schema resolution against a reader
//! schema, all with a fixed writer schema.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use weir_formats::avro::{parse_schema, Avro, AvroGeneric, Value};
use weir_formats::{Context, Part, SyncDeserializer};

include!("common.rs");

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Resolved {
    id: i64,
    total: i64,
    name: String,
    added: String,
    tags: Vec<String>,
}

/// Matches WRITER: decoded by apache-avro's schema-aware serde path (no reader schema).
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Event {
    id: i64,
    count: i32,
    name: String,
    flag: bool,
    score: f64,
    raw: serde_json::Value,
    tags: Vec<String>,
    attrs: std::collections::HashMap<String, i64>,
    maybe: Option<serde_json::Value>,
    kind: String,
    hash: serde_json::Value,
    child: Option<Child>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Child {
    x: f32,
}

struct Decoders {
    generic: AvroGeneric,
    resolving: AvroGeneric,
    typed: Avro,
    direct: Avro,
}

fn decoders() -> &'static Decoders {
    static D: OnceLock<Decoders> = OnceLock::new();
    D.get_or_init(|| {
        let writer = parse_schema(WRITER).unwrap();
        let reader = parse_schema(READER).unwrap();
        Decoders {
            generic: AvroGeneric::new(&writer).unwrap(),
            resolving: AvroGeneric::new(&writer)
                .unwrap()
                .with_reader_schema(&reader)
                .unwrap(),
            typed: Avro::new(&writer)
                .unwrap()
                .with_reader_schema(&reader)
                .unwrap(),
            direct: Avro::new(&writer).unwrap(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let d = decoders();
    let topic = "fuzz".into();
    let ctx = Context::new(&topic, 0, 0, Part::Value);
    let _: Result<Value, _> = d.generic.decode(Some(data), &ctx);
    let _: Result<Value, _> = d.resolving.decode(Some(data), &ctx);
    let _: Result<Resolved, _> = d.typed.decode(Some(data), &ctx);
    let _: Result<Event, _> = d.direct.decode(Some(data), &ctx);
    let _: Result<serde_json::Value, _> = d.direct.decode(Some(data), &ctx);
});
