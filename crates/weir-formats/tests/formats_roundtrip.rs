//! Property tests: for every format, serializer → deserializer gives back the value.

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use weir_formats::avro::{
    parse_schema, Avro, AvroGeneric, RegistryAvro, RegistryAvroSerializer, Value,
};
use weir_formats::framing::{
    parse_message_indexes, parse_prefix, write_message_indexes, write_prefix, SchemaRef,
};
use weir_formats::json::{RegistryJson, RegistryJsonSerializer};
use weir_formats::protobuf::{
    compile, Protobuf, ProtobufDynamic, RegistryProtobuf, RegistryProtobufSerializer,
};
use weir_formats::{
    ByteArray, Context, Deserializer, Json, Nullable, Part, Serializer, SyncDeserializer,
    SyncSerializer, Utf8, UuidFormat, F32, F64, I32, I64,
};

fn with_ctx<R>(f: impl FnOnce(&Context<'_>) -> R) -> R {
    let topic = "roundtrip".into();
    f(&Context::new(&topic, 0, 0, Part::Value))
}

fn rt<T, C: SyncSerializer<T> + SyncDeserializer<T>>(codec: &C, v: &T) -> T {
    let bytes = codec.encode(v).unwrap();
    with_ctx(|ctx| codec.decode(Some(&bytes), ctx)).unwrap()
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Event {
    name: String,
    n: i64,
    count: i32,
    score: f64,
    flag: bool,
    tags: Vec<String>,
    attrs: HashMap<String, i64>,
    maybe: Option<String>,
}

const EVENT_AVRO: &str = r#"{"type":"record","name":"Event","fields":[
  {"name":"name","type":"string"},
  {"name":"n","type":"long"},
  {"name":"count","type":"int"},
  {"name":"score","type":"double"},
  {"name":"flag","type":"boolean"},
  {"name":"tags","type":{"type":"array","items":"string"}},
  {"name":"attrs","type":{"type":"map","values":"long"}},
  {"name":"maybe","type":["null","string"]}
]}"#;

const EVENT_PROTO: &str = r#"
syntax = "proto3";
package rt;
message Event {
  string name = 1;
  int64 n = 2;
  int32 count = 3;
  double score = 4;
  bool flag = 5;
  repeated string tags = 6;
  map<string, int64> attrs = 7;
  optional string maybe = 8;
}
"#;

#[derive(Clone, PartialEq, prost::Message)]
struct PbEvent {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int64, tag = "2")]
    n: i64,
    #[prost(int32, tag = "3")]
    count: i32,
    #[prost(double, tag = "4")]
    score: f64,
    #[prost(bool, tag = "5")]
    flag: bool,
    #[prost(string, repeated, tag = "6")]
    tags: Vec<String>,
    #[prost(map = "string, int64", tag = "7")]
    attrs: HashMap<String, i64>,
    #[prost(string, optional, tag = "8")]
    maybe: Option<String>,
}

fn event() -> impl Strategy<Value = Event> {
    (
        ".{0,20}",
        any::<i64>(),
        any::<i32>(),
        -1e300f64..1e300,
        any::<bool>(),
        prop::collection::vec(".{0,8}", 0..5),
        prop::collection::hash_map("[a-z]{1,6}", any::<i64>(), 0..4),
        prop::option::of(".{0,10}"),
    )
        .prop_map(|(name, n, count, score, flag, tags, attrs, maybe)| Event {
            name,
            n,
            count,
            score,
            flag,
            tags,
            attrs,
            maybe,
        })
}

fn pb(e: &Event) -> PbEvent {
    PbEvent {
        name: e.name.clone(),
        n: e.n,
        count: e.count,
        score: e.score,
        flag: e.flag,
        tags: e.tags.clone(),
        attrs: e.attrs.clone(),
        maybe: e.maybe.clone(),
    }
}

proptest! {
    #[test]
    fn primitives(s in ".*", b in prop::collection::vec(any::<u8>(), 0..64), i in any::<i32>(), l in any::<i64>(),
                  f in any::<f32>(), d in any::<f64>(), u in any::<u128>()) {
        prop_assert_eq!(rt(&Utf8, &s), s);
        prop_assert_eq!(rt(&ByteArray, &b), b);
        prop_assert_eq!(rt(&I32, &i), i);
        prop_assert_eq!(rt(&I64, &l), l);
        prop_assert_eq!(rt(&F32, &f).to_bits(), f.to_bits());
        prop_assert_eq!(rt(&F64, &d).to_bits(), d.to_bits());
        let id = uuid::Uuid::from_u128(u);
        prop_assert_eq!(rt(&UuidFormat, &id), id);
        prop_assert_eq!(rt(&Nullable(I32), &Some(i)), Some(i));
    }

    #[test]
    fn json_typed_and_untyped(e in event()) {
        prop_assert_eq!(rt(&Json::new(), &e), e.clone());
        let v = serde_json::to_value(&e).unwrap();
        prop_assert_eq!(rt(&Json::new(), &v), v);
    }

    #[test]
    fn avro_typed_and_generic(e in event()) {
        let schema = parse_schema(EVENT_AVRO).unwrap();
        let typed = Avro::new(&schema).unwrap();
        prop_assert_eq!(rt(&typed, &e), e.clone());
        let generic = AvroGeneric::new(&schema).unwrap();
        let bytes = typed.encode(&e).unwrap();
        let value: Value = with_ctx(|ctx| generic.decode(Some(&bytes), ctx)).unwrap();
        prop_assert_eq!(rt(&generic, &value), value);
    }

    #[test]
    fn protobuf_typed_and_dynamic(e in event()) {
        let m = pb(&e);
        prop_assert_eq!(rt(&Protobuf::<PbEvent>::new(), &m), m.clone());
        let pool = compile(&[("rt.proto", EVENT_PROTO)]).unwrap();
        let dynamic = ProtobufDynamic::new(pool.get_message_by_name("rt.Event").unwrap());
        let bytes = prost::Message::encode_to_vec(&m);
        let msg = with_ctx(|ctx| dynamic.decode(Some(&bytes), ctx)).unwrap();
        let again = dynamic.encode(&msg).unwrap();
        prop_assert_eq!(<PbEvent as prost::Message>::decode(&again[..]).unwrap(), m);
    }

    #[test]
    fn framing_prefix_and_indexes(id in any::<u32>(), guid in any::<u128>(),
                                  indexes in prop::collection::vec(0usize..100_000, 1..10),
                                  payload in prop::collection::vec(any::<u8>(), 0..16)) {
        for schema in [SchemaRef::Id(id), SchemaRef::Guid(uuid::Uuid::from_u128(guid))] {
            let mut out = Vec::new();
            write_prefix(&schema, &mut out);
            write_message_indexes(&indexes, &mut out);
            out.extend_from_slice(&payload);
            let (back, rest) = parse_prefix(&out).unwrap();
            prop_assert_eq!(back, schema);
            let (idx, rest) = parse_message_indexes(rest).unwrap();
            prop_assert_eq!(&idx, &indexes);
            prop_assert_eq!(rest, &payload[..]);
        }
    }
}

#[test]
fn registry_framed_round_trips() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stub = runtime.block_on(support::Stub::start());
    let registry = stub.client();
    let schema = parse_schema(EVENT_AVRO).unwrap();
    let avro_ser = RegistryAvroSerializer::<Event>::new(registry.clone(), &schema).unwrap();
    let avro_de = RegistryAvro::new(registry.clone());
    let json_ser = RegistryJsonSerializer::new(registry.clone(), r#"{"type":"object"}"#);
    let json_de = RegistryJson::new(registry.clone());
    let pool = compile(&[("rt.proto", EVENT_PROTO)]).unwrap();
    let desc = pool.get_message_by_name("rt.Event").unwrap();
    let pb_ser = RegistryProtobufSerializer::new(registry.clone(), EVENT_PROTO, desc.clone());
    let pb_de = RegistryProtobuf::new(registry.clone());
    let dynamic = ProtobufDynamic::new(desc);
    let topic: Arc<str> = "registry-roundtrip".into();

    proptest!(ProptestConfig::with_cases(64), |(e in event(), part in prop::bool::ANY)| {
        let part = if part { Part::Key } else { Part::Value };
        let ctx = Context::new(&topic, 1, 2, part);
        runtime.block_on(async {
            let bytes = avro_ser.serialize(&e, &ctx).await.unwrap();
            let back: Event = avro_de.deserialize(Some(&bytes), &ctx).await.unwrap();
            assert_eq!(back, e);

            let bytes = json_ser.serialize(&e, &ctx).await.unwrap();
            let back: Event = json_de.deserialize(Some(&bytes), &ctx).await.unwrap();
            assert_eq!(back, e);

            let plain = prost::Message::encode_to_vec(&pb(&e));
            let msg = with_ctx(|c| dynamic.decode(Some(&plain), c)).unwrap();
            let bytes = pb_ser.serialize(&msg, &ctx).await.unwrap();
            let back = pb_de.deserialize(Some(&bytes), &ctx).await.unwrap();
            let again = prost::Message::encode_to_vec(&back);
            assert_eq!(<PbEvent as prost::Message>::decode(&again[..]).unwrap(), pb(&e));
        });
    });
    // One registration and one fetch per (format, subject), however many records.
    assert_eq!(
        stub.count("POST /subjects/registry-roundtrip-value/versions"),
        3
    );
    assert!(stub.count("GET /schemas/ids/") <= 3);
}
