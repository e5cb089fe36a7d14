//! The poison corpus: every class of bad input the reliability doc names (and more),
//! each decoded through weir. Each must be an `Err` (never a panic) naming the record's
//! coordinates, with the expected kind and permanence, and the whole corpus must run in
//! bounded memory (lengths of 2^62 allocate nothing).

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use weir_core::{Bytes, Coordinates, Header, Record};
use weir_formats::avro::{parse_schema, Avro, AvroGeneric, RegistryAvroGeneric};
use weir_formats::json::RegistryJson;
use weir_formats::protobuf::{compile, Protobuf, ProtobufDynamic, RegistryProtobuf};
use weir_formats::registry::Schema;
use weir_formats::{
    DeserializeError, Deserializer, ErrorKind, Json, SyncDeserializer, Utf8, UuidFormat, I64,
};

const TOPIC: &str = "poison-corpus";
const PARTITION: i32 = 3;

const PROTO: &str = r#"
syntax = "proto3";
package poison;
message Node { Node child = 1; string name = 2; int64 n = 3; }
message Outer { message Inner { int32 x = 1; } Inner inner = 1; }
"#;

#[derive(Clone, PartialEq, prost::Message)]
struct Node {
    #[prost(message, optional, boxed, tag = "1")]
    child: Option<Box<Node>>,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(int64, tag = "3")]
    n: i64,
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Order {
    id: u64,
}

fn zz(v: i64) -> Vec<u8> {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return out;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        if v < 0x80 {
            out.push(v as u8);
            return out;
        }
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// `depth` levels of `Node.child`.
fn nested_node(depth: usize) -> Vec<u8> {
    let mut inner: Vec<u8> = Vec::new();
    for _ in 0..depth {
        let mut outer = vec![0x0a];
        outer.extend(varint(inner.len() as u64));
        outer.extend(&inner);
        inner = outer;
    }
    inner
}

type Run = Pin<Box<dyn Future<Output = Result<(), DeserializeError>> + Send>>;

struct Case {
    name: &'static str,
    kinds: &'static [ErrorKind],
    transient: bool,
    run: Run,
}

fn record(offset: i64, value: Vec<u8>) -> Record {
    Record::new(TOPIC, PARTITION, offset, None, Some(Bytes::from(value)))
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Corpus {
    cases: Vec<Case>,
}

impl Corpus {
    fn add<T: Send + 'static>(
        &mut self,
        name: &'static str,
        kinds: &'static [ErrorKind],
        fut: impl Future<Output = Result<T, DeserializeError>> + Send + 'static,
    ) {
        self.push(name, kinds, false, fut);
    }

    fn push<T: Send + 'static>(
        &mut self,
        name: &'static str,
        kinds: &'static [ErrorKind],
        transient: bool,
        fut: impl Future<Output = Result<T, DeserializeError>> + Send + 'static,
    ) {
        self.cases.push(Case {
            name,
            kinds,
            transient,
            run: Box::pin(async move { fut.await.map(|_| ()) }),
        });
    }
}

/// Decode `value` as the value of the record at `offset` with `d`.
fn dec<T: Send + 'static, D: Deserializer<T> + 'static>(
    d: Arc<D>,
    offset: i64,
    value: Vec<u8>,
) -> impl Future<Output = Result<T, DeserializeError>> + Send + 'static {
    let r = record(offset, value);
    async move { d.value(&r).await }
}

fn dec_headers<T: Send + 'static, D: Deserializer<T> + 'static>(
    d: Arc<D>,
    offset: i64,
    value: Vec<u8>,
    headers: Vec<Header>,
) -> impl Future<Output = Result<T, DeserializeError>> + Send + 'static {
    let mut r = record(offset, value);
    r.headers = headers;
    async move { d.value(&r).await }
}

#[tokio::test]
async fn poison_corpus() {
    use ErrorKind::*;
    let stub = support::Stub::start().await;
    let record_schema = r#"{"type":"record","name":"P","fields":[{"name":"s","type":"string"},{"name":"n","type":"long"}]}"#;
    stub.add(1, "poison-corpus-value", Schema::avro(record_schema));
    stub.add(2, "poison-proto-value", Schema::protobuf(PROTO));
    stub.add(3, "poison-json-value", Schema::json(r#"{"type":"object"}"#));
    let registry = stub.client();
    let down_stub = support::Stub::start().await;
    let down_registry = down_stub.client();
    down_stub.down();

    let avro = |schema: &str| Arc::new(AvroGeneric::new(&parse_schema(schema).unwrap()).unwrap());
    let pool = compile(&[("poison.proto", PROTO)]).unwrap();
    let node = Arc::new(ProtobufDynamic::new(
        pool.get_message_by_name("poison.Node").unwrap(),
    ));
    let node_shallow = Arc::new(
        ProtobufDynamic::new(pool.get_message_by_name("poison.Node").unwrap()).with_max_depth(5),
    );
    let typed_node = Arc::new(Protobuf::<Node>::new());
    let json = Arc::new(Json::new());
    let ravro = Arc::new(RegistryAvroGeneric::new(registry.clone()));
    let rproto = Arc::new(RegistryProtobuf::new(registry.clone()));
    let rjson = Arc::new(RegistryJson::new(registry.clone()));
    let ravro_down = Arc::new(RegistryAvroGeneric::new(down_registry));

    let two62 = 1i64 << 62;
    let mut c = Corpus { cases: Vec::new() };
    let mut o = 0i64;
    let mut next = || {
        o += 1;
        o
    };

    // ---- Avro ----
    c.add(
        "avro truncated string",
        &[Malformed],
        dec(avro(r#""string""#), next(), cat(&[&zz(10), b"abc"])),
    );
    c.add(
        "avro truncated record",
        &[Malformed],
        dec(avro(record_schema), next(), cat(&[&zz(2), b"ab"])),
    );
    c.add(
        "avro over-long varint",
        &[Malformed],
        dec(avro(r#""long""#), next(), vec![0xff; 11]),
    );
    c.add(
        "avro string length 2^62",
        &[TooLarge],
        dec(avro(r#""string""#), next(), zz(two62)),
    );
    c.add(
        "avro bytes length 2^62",
        &[TooLarge],
        dec(avro(r#""bytes""#), next(), zz(two62)),
    );
    c.add(
        "avro negative length",
        &[Malformed],
        dec(avro(r#""string""#), next(), zz(-5)),
    );
    c.add(
        "avro huge array block count",
        &[TooLarge],
        dec(
            avro(r#"{"type":"array","items":"long"}"#),
            next(),
            zz(two62),
        ),
    );
    c.add(
        "avro huge block of nulls (0 bytes each)",
        &[TooLarge],
        dec(
            avro(r#"{"type":"array","items":"null"}"#),
            next(),
            cat(&[&zz(1_000_000_000), &[0]]),
        ),
    );
    c.add(
        "avro negative block count with size",
        &[TooLarge],
        dec(
            avro(r#"{"type":"array","items":"long"}"#),
            next(),
            cat(&[&zz(-two62), &zz(8)]),
        ),
    );
    c.add(
        "avro huge map block count",
        &[TooLarge],
        dec(
            avro(r#"{"type":"map","values":"null"}"#),
            next(),
            zz(1 << 40),
        ),
    );
    c.add(
        "avro bad union index",
        &[Malformed],
        dec(avro(r#"["null","string"]"#), next(), zz(7)),
    );
    c.add(
        "avro negative union index",
        &[Malformed],
        dec(avro(r#"["null","string"]"#), next(), zz(-1)),
    );
    c.add(
        "avro bytes of another schema (trailing bytes)",
        &[Malformed],
        dec(avro(r#""string""#), next(), vec![2, 4, 6]),
    );
    c.add(
        "avro invalid UTF-8 string",
        &[InvalidUtf8, Malformed],
        dec(avro(r#""string""#), next(), vec![4, 0xff, 0xfe]),
    );
    c.add(
        "avro empty input",
        &[Malformed],
        dec(avro(record_schema), next(), vec![]),
    );
    c.add(
        "avro typed: fixed length 2^62 in serde path",
        &[TooLarge, Malformed],
        dec::<serde_json::Value, _>(
            Arc::new(Avro::new(&parse_schema(r#""bytes""#).unwrap()).unwrap()),
            next(),
            zz(two62),
        ),
    );
    c.add(
        "avro enum index out of range",
        &[Malformed],
        dec(
            avro(r#"{"type":"enum","name":"E","symbols":["A","B"]}"#),
            next(),
            zz(5),
        ),
    );

    // ---- Protobuf ----
    c.add(
        "protobuf bad wire type",
        &[Malformed],
        dec(node.clone(), next(), vec![0x0f, 0x00]),
    );
    c.add(
        "protobuf truncated field",
        &[Malformed],
        dec(node.clone(), next(), vec![0x12, 0x0a, b'a', b'b']),
    );
    c.add(
        "protobuf typed truncated field",
        &[Malformed],
        dec(typed_node.clone(), next(), vec![0x12, 0x0a, b'a']),
    );
    c.add(
        "protobuf length 2^62",
        &[Malformed],
        dec(node.clone(), next(), cat(&[&[0x12], &varint(1 << 62)])),
    );
    c.add(
        "protobuf over-long varint",
        &[Malformed],
        dec(node.clone(), next(), cat(&[&[0x18], &[0xff; 10], &[0x01]])),
    );
    c.add(
        "protobuf field number 0",
        &[Malformed],
        dec(node.clone(), next(), vec![0x00, 0x00]),
    );
    c.add(
        "protobuf nested 200 deep (prost limit)",
        &[TooDeep],
        dec(node.clone(), next(), nested_node(200)),
    );
    c.add(
        "protobuf typed nested 200 deep",
        &[TooDeep],
        dec(typed_node.clone(), next(), nested_node(200)),
    );
    c.add(
        "protobuf nested past configured limit",
        &[TooDeep],
        dec(node_shallow.clone(), next(), nested_node(10)),
    );
    c.add(
        "protobuf invalid UTF-8 in string",
        &[InvalidUtf8],
        dec(node.clone(), next(), vec![0x12, 0x02, 0xff, 0xfe]),
    );
    c.add(
        "protobuf typed invalid UTF-8",
        &[InvalidUtf8],
        dec(typed_node.clone(), next(), vec![0x12, 0x02, 0xc3, 0x28]),
    );
    c.add(
        "protobuf unmatched end group",
        &[Malformed],
        dec(node.clone(), next(), vec![0x0c]),
    );

    // ---- JSON ----
    c.add(
        "json nested 100k deep, low configured limit",
        &[TooDeep],
        dec::<Order, _>(
            Arc::new(Json::new().with_max_depth(16)),
            next(),
            b"{\"x\":".repeat(100_000),
        ),
    );
    c.add(
        "json nested 100k deep",
        &[TooDeep],
        dec::<serde_json::Value, _>(json.clone(), next(), vec![b'['; 100_000]),
    );
    c.add(
        "json objects nested 100k deep (typed, ignored field)",
        &[TooDeep, Malformed],
        dec::<Order, _>(json.clone(), next(), b"{\"a\":".repeat(100_000)),
    );
    c.add(
        "json invalid UTF-8",
        &[InvalidUtf8, Malformed],
        dec::<serde_json::Value, _>(json.clone(), next(), b"\"\xff\xfe\"".to_vec()),
    );
    c.add(
        "json wrong type",
        &[WrongType],
        dec::<Order, _>(json.clone(), next(), br#"{"id":"seven"}"#.to_vec()),
    );
    c.add(
        "json truncated",
        &[Malformed],
        dec::<Order, _>(json.clone(), next(), br#"{"id":"#.to_vec()),
    );
    c.add(
        "json trailing garbage",
        &[Malformed],
        dec::<Order, _>(json.clone(), next(), br#"{"id":1} x"#.to_vec()),
    );
    c.add(
        "json number overflow",
        &[WrongType, Malformed],
        dec::<Order, _>(json.clone(), next(), br#"{"id":1e400}"#.to_vec()),
    );

    // ---- schema-registry framing ----
    c.add(
        "framing shorter than 5 bytes",
        &[Framing],
        dec(ravro.clone(), next(), vec![0, 0, 0]),
    );
    c.add(
        "framing empty",
        &[Framing],
        dec(ravro.clone(), next(), vec![]),
    );
    c.add(
        "framing exactly 5 bytes (Avro, empty payload)",
        &[Malformed],
        dec(ravro.clone(), next(), vec![0, 0, 0, 0, 1]),
    );
    c.add(
        "framing exactly 5 bytes (Protobuf, no indexes)",
        &[Framing],
        dec(rproto.clone(), next(), vec![0, 0, 0, 0, 2]),
    );
    c.add(
        "framing magic not 0/1",
        &[Framing],
        dec(ravro.clone(), next(), vec![7, 0, 0, 0, 1, 0, 0]),
    );
    c.add(
        "framing GUID too short",
        &[Framing],
        dec(ravro.clone(), next(), vec![1, 1, 2, 3]),
    );
    c.add(
        "framing unknown schema id",
        &[UnknownSchema],
        dec(ravro.clone(), next(), vec![0, 0, 0, 3, 231, 0]),
    );
    c.add(
        "framing unknown GUID",
        &[UnknownSchema],
        dec(ravro.clone(), next(), cat(&[&[1], &[9; 16], &[0]])),
    );
    c.add(
        "framing JSON Schema unknown id",
        &[UnknownSchema],
        dec::<serde_json::Value, _>(rjson.clone(), next(), cat(&[&[0, 0, 0, 0, 42], b"{}"])),
    );
    c.push(
        "registry down (transient)",
        &[RegistryUnavailable],
        true,
        dec(ravro_down.clone(), next(), vec![0, 0, 0, 0, 1, 2, b'a', 2]),
    );
    c.add(
        "message index out of range",
        &[SchemaMismatch],
        dec(rproto.clone(), next(), vec![0, 0, 0, 0, 2, 0x02, 0x12]),
    );
    c.add(
        "nested message index out of range",
        &[SchemaMismatch],
        dec(
            rproto.clone(),
            next(),
            vec![0, 0, 0, 0, 2, 0x04, 0x02, 0x08],
        ),
    );
    c.add(
        "message index count negative",
        &[Framing],
        dec(rproto.clone(), next(), vec![0, 0, 0, 0, 2, 0x01]),
    );
    c.add(
        "message index count past the data",
        &[Framing],
        dec(rproto.clone(), next(), vec![0, 0, 0, 0, 2, 0x7e]),
    );
    c.add(
        "message index over-long varint",
        &[Framing],
        dec(
            rproto.clone(),
            next(),
            vec![0, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ),
    );
    c.add(
        "schema of another format (Protobuf id for Avro)",
        &[SchemaMismatch],
        dec(ravro.clone(), next(), vec![0, 0, 0, 0, 2, 0]),
    );
    c.add(
        "bad schema id header",
        &[Framing],
        dec_headers(
            ravro.clone(),
            next(),
            vec![2, b'a', 2],
            vec![Header::new("__value_schema_id", vec![9u8])],
        ),
    );

    // ---- sizes, nulls, primitives ----
    c.add(
        "oversized JSON over configured max",
        &[TooLarge],
        dec::<serde_json::Value, _>(
            Arc::new(Json::new().with_max_bytes(16)),
            next(),
            vec![b' '; 17],
        ),
    );
    c.add(
        "oversized Avro over configured max",
        &[TooLarge],
        dec(
            Arc::new(
                AvroGeneric::new(&parse_schema(r#""bytes""#).unwrap())
                    .unwrap()
                    .with_max_bytes(64),
            ),
            next(),
            vec![0; 65],
        ),
    );
    c.add(
        "oversized Protobuf over configured max",
        &[TooLarge],
        dec(
            Arc::new(
                ProtobufDynamic::new(pool.get_message_by_name("poison.Node").unwrap())
                    .with_max_bytes(8),
            ),
            next(),
            [0x18, 1].repeat(5),
        ),
    );
    c.add(
        "oversized registry-framed over configured max",
        &[TooLarge],
        dec(
            Arc::new(RegistryAvroGeneric::new(registry.clone()).with_max_bytes(10)),
            next(),
            vec![0; 11],
        ),
    );
    {
        let r = Record::new(TOPIC, PARTITION, next(), None, None);
        let j = json.clone();
        c.add(
            "null value for a non-nullable deserializer",
            &[Null],
            async move { SyncDeserializer::<serde_json::Value>::decode_value(&*j, &r) },
        );
    }
    c.add(
        "UTF-8 string invalid",
        &[InvalidUtf8],
        dec(Arc::new(Utf8), next(), vec![b'a', 0xc3, 0x28]),
    );
    c.add(
        "i64 of 3 bytes",
        &[Malformed],
        dec(Arc::new(I64), next(), vec![1, 2, 3]),
    );
    c.add(
        "UUID garbage",
        &[Malformed],
        dec(
            Arc::new(UuidFormat),
            next(),
            b"not-a-uuid-not-a-uuid-not-a-uuid-xx".to_vec(),
        ),
    );

    let hwm_before = vm_hwm_kib();
    let total = c.cases.len();
    let mut failures = Vec::new();
    for (i, case) in c.cases.into_iter().enumerate() {
        let offset = i as i64 + 1;
        let outcome = tokio::spawn(case.run).await;
        let err = match outcome {
            Err(join) => {
                failures.push(format!("{}: PANICKED: {join}", case.name));
                continue;
            }
            Ok(Ok(())) => {
                failures.push(format!("{}: decoded without error", case.name));
                continue;
            }
            Ok(Err(e)) => e,
        };
        if err.coordinates() != &Coordinates::new(TOPIC, PARTITION, offset) {
            failures.push(format!(
                "{}: wrong coordinates {}",
                case.name,
                err.coordinates()
            ));
        }
        if !case.kinds.contains(&err.kind()) {
            failures.push(format!(
                "{}: kind {:?}, expected one of {:?} ({err})",
                case.name,
                err.kind(),
                case.kinds
            ));
        }
        if err.is_retriable() != case.transient {
            failures.push(format!(
                "{}: permanence {:?} ({err})",
                case.name,
                err.permanence()
            ));
        }
        if !err
            .to_string()
            .contains(&format!("{TOPIC}/{PARTITION}@{offset}"))
        {
            failures.push(format!("{}: message lacks coordinates: {err}", case.name));
        }
    }
    if let (Some(before), Some(after)) = (hwm_before, vm_hwm_kib()) {
        // 2^62 lengths and 10^9-element blocks must not allocate: the corpus stays within
        // a small multiple of the 16 MiB Avro allocation limit.
        assert!(
            after.saturating_sub(before) < 256 * 1024,
            "peak RSS grew by {} KiB",
            after - before
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {total} classes failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(total >= 25, "only {total} poison classes");
    println!(
        "{total} poison classes: all Err with coordinates, right kind and permanence, 0 panics"
    );
}

/// Oversized records: just under, at and over the configured limit give the same
/// outcome every time (decoded, decoded, permanent TooLarge), for every format.
#[test]
fn size_limits_at_the_boundary() {
    let topic = "sizes".into();
    let ctx = weir_formats::Context::new(&topic, 0, 5, weir_formats::Part::Value);
    let limit = 64;
    // JSON: a string padded with spaces to the exact length.
    let json = Json::new().with_max_bytes(limit);
    let json_of = |len: usize| {
        let mut v = b"\"x\"".to_vec();
        v.resize(len, b' ');
        v
    };
    // Avro "bytes": one length byte + payload.
    let avro = AvroGeneric::new(&parse_schema(r#""bytes""#).unwrap())
        .unwrap()
        .with_max_bytes(limit);
    let avro_of = |len: usize| {
        let mut v = zz(len as i64 - 1);
        v.resize(len, 7);
        v
    };
    // Protobuf: field 2 (string) of Node, 2-byte header + payload.
    let pool = compile(&[("poison.proto", PROTO)]).unwrap();
    let pb = ProtobufDynamic::new(pool.get_message_by_name("poison.Node").unwrap())
        .with_max_bytes(limit);
    let pb_of = |len: usize| {
        let mut v = vec![0x12, (len - 2) as u8];
        v.resize(len, b'a');
        v
    };
    for _run in 0..3 {
        for (len, ok) in [(limit - 1, true), (limit, true), (limit + 1, false)] {
            let j = SyncDeserializer::<serde_json::Value>::decode(&json, Some(&json_of(len)), &ctx);
            let a = avro.decode(Some(&avro_of(len)), &ctx);
            let p = pb.decode(Some(&pb_of(len)), &ctx);
            for (name, r) in [
                ("json", j.map(|_| ())),
                ("avro", a.map(|_| ())),
                ("protobuf", p.map(|_| ())),
            ] {
                match r {
                    Ok(()) => assert!(ok, "{name} {len} bytes decoded over the limit"),
                    Err(e) => {
                        assert!(!ok, "{name} {len} bytes: {e}");
                        assert_eq!(e.kind(), ErrorKind::TooLarge);
                        assert!(!e.is_retriable());
                    }
                }
            }
        }
    }
}
