//! Avro schema resolution with a fixed writer schema and a reader schema: added field
//! with default, removed field, int→long (and float→double) promotion, renamed fields
//! and records via aliases; and incompatible schemas refused.

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use weir_formats::avro::{parse_schema, Avro, AvroGeneric, Value};
use weir_formats::{Context, ErrorKind, Part, SyncDeserializer, SyncSerializer};

const V1: &str = r#"{"type":"record","name":"User","namespace":"app","fields":[
  {"name":"id","type":"int"},
  {"name":"name","type":"string"},
  {"name":"legacy","type":"string"},
  {"name":"ratio","type":"float"}
]}"#;

const V2: &str = r#"{"type":"record","name":"Account","namespace":"app","aliases":["app.User"],"fields":[
  {"name":"id","type":"long"},
  {"name":"full_name","aliases":["name"],"type":"string"},
  {"name":"email","type":"string","default":"unknown@example.invalid"},
  {"name":"tags","type":{"type":"array","items":"string"},"default":[]},
  {"name":"ratio","type":"double"}
]}"#;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct UserV1 {
    id: i32,
    name: String,
    legacy: String,
    ratio: f32,
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct AccountV2 {
    id: i64,
    full_name: String,
    email: String,
    tags: Vec<String>,
    ratio: f64,
}

fn v1_bytes() -> Vec<u8> {
    let writer = Avro::new(&parse_schema(V1).unwrap()).unwrap();
    writer
        .encode(&UserV1 {
            id: 7,
            name: "Ada".into(),
            legacy: "dropped".into(),
            ratio: 0.5,
        })
        .unwrap()
}

fn ctx_do<R>(f: impl FnOnce(&Context<'_>) -> R) -> R {
    let topic = "users".into();
    f(&Context::new(&topic, 0, 11, Part::Value))
}

#[test]
fn typed_reader_sees_defaults_promotions_aliases_and_no_removed_field() {
    let avro = Avro::new(&parse_schema(V1).unwrap())
        .unwrap()
        .with_reader_schema(&parse_schema(V2).unwrap())
        .unwrap();
    let bytes = v1_bytes();
    let a: AccountV2 = ctx_do(|ctx| avro.decode(Some(&bytes), ctx)).unwrap();
    assert_eq!(
        a,
        AccountV2 {
            id: 7,
            full_name: "Ada".into(),
            email: "unknown@example.invalid".into(),
            tags: vec![],
            ratio: 0.5,
        }
    );
}

#[test]
fn generic_reader_resolves_too() {
    let avro = AvroGeneric::new(&parse_schema(V1).unwrap())
        .unwrap()
        .with_reader_schema(&parse_schema(V2).unwrap())
        .unwrap();
    let bytes = v1_bytes();
    let v = ctx_do(|ctx| avro.decode(Some(&bytes), ctx)).unwrap();
    let Value::Record(fields) = v else {
        panic!("expected a record, got {v:?}")
    };
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["id", "full_name", "email", "tags", "ratio"]);
    assert_eq!(fields[0].1, Value::Long(7));
    assert!(!names.contains(&"legacy"));
}

#[test]
fn incompatible_reader_schemas_are_refused_up_front() {
    let v1 = parse_schema(V1).unwrap();
    // A reader field without default that the writer lacks.
    let missing = parse_schema(
        r#"{"type":"record","name":"User","namespace":"app","fields":[{"name":"required_new","type":"string"}]}"#,
    )
    .unwrap();
    let err = AvroGeneric::new(&v1)
        .unwrap()
        .with_reader_schema(&missing)
        .unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
    // long -> int is not a promotion (apache-avro alone would accept values that fit).
    let err = AvroGeneric::new(&parse_schema(r#""long""#).unwrap())
        .unwrap()
        .with_reader_schema(&parse_schema(r#""int""#).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
}

#[test]
fn registry_style_mismatch_is_a_permanent_record_error() {
    // Bytes that do not fit the writer schema fail per record, permanently.
    let avro = Avro::new(&parse_schema(V1).unwrap())
        .unwrap()
        .with_reader_schema(&parse_schema(V2).unwrap())
        .unwrap();
    let err = ctx_do(|ctx| SyncDeserializer::<AccountV2>::decode(&avro, Some(&[0x0e, 0x06]), ctx))
        .unwrap_err();
    assert!(!err.is_retriable());
    assert_eq!(err.coordinates().to_string(), "users/0@11");
}

#[test]
fn allocation_limit_is_set_and_exposed() {
    let _ = Avro::new(&parse_schema(r#""bytes""#).unwrap()).unwrap();
    let limit = weir_formats::avro::max_allocation_bytes();
    assert!(
        limit <= weir_formats::avro::DEFAULT_MAX_ALLOCATION_BYTES,
        "{limit}"
    );
    // A claim one byte over the limit is refused before allocating.
    let avro = AvroGeneric::new(&parse_schema(r#""bytes""#).unwrap()).unwrap();
    let over = (limit as i64) + 1;
    let mut z = ((over << 1) ^ (over >> 63)) as u64;
    let mut bytes = Vec::new();
    while z >= 0x80 {
        bytes.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    bytes.push(z as u8);
    let err = ctx_do(|ctx| avro.decode(Some(&bytes), ctx)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
}
