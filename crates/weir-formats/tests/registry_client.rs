//! The schema-registry client and the registry-framed deserializers against a stub
//! registry on 127.0.0.1: caching (one fetch per id), request coalescing, retries on
//! 500, timeouts on a hung registry, a registry that is down (transient), unknown ids
//! (permanent), credentials sent but never printed, GUIDs and header-carried ids.

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use weir_core::{Bytes, Header, Record};
use weir_formats::avro::{
    parse_schema, RegistryAvro, RegistryAvroGeneric, RegistryAvroSerializer, Value,
};
use weir_formats::framing::{write_prefix, SchemaRef};
use weir_formats::json::{RegistryJson, RegistryJsonSerializer};
use weir_formats::protobuf::{
    compile, ReflectMessage, RegistryProtobuf, RegistryProtobufSerializer, RegistryProtobufTyped,
    RegistryProtobufTypedSerializer,
};
use weir_formats::registry::{Auth, Schema};
use weir_formats::{Context, Deserializer, ErrorKind, Part, Serializer};

const READING: &str = r#"{"type":"record","name":"Reading","fields":[
  {"name":"sensor","type":"string"},{"name":"value","type":"long"}]}"#;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Reading {
    sensor: String,
    value: i64,
}

fn framed(id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_prefix(&SchemaRef::Id(id), &mut out);
    out.extend_from_slice(payload);
    out
}

/// Avro datum of Reading { sensor: "s", value }.
fn reading_datum(value: i64) -> Vec<u8> {
    let mut out = vec![2, b's'];
    let z = ((value << 1) ^ (value >> 63)) as u64;
    let mut z = z;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            break;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out
}

fn rec(topic: &str, offset: i64, value: Vec<u8>) -> Record {
    Record::new(topic, 0, offset, None, Some(Bytes::from(value)))
}

#[tokio::test]
async fn one_fetch_per_schema_id_for_many_records() {
    let stub = support::Stub::start().await;
    stub.add(1, "cache-value", Schema::avro(READING));
    let registry = stub.client();
    let avro = RegistryAvro::new(registry.clone());
    for offset in 0..500 {
        let r: Reading = avro
            .value(&rec("cache", offset, framed(1, &reading_datum(offset))))
            .await
            .unwrap();
        assert_eq!(r.value, offset);
    }
    assert_eq!(stub.count("GET /schemas/ids/1"), 1);
    assert_eq!(registry.http_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_share_one_fetch() {
    let stub = support::Stub::start().await;
    stub.add(7, "coalesce-value", Schema::avro(READING));
    let registry = stub.client();
    let avro = Arc::new(RegistryAvroGeneric::new(registry.clone()));
    let tasks: Vec<_> = (0..64)
        .map(|offset| {
            let avro = avro.clone();
            tokio::spawn(async move {
                avro.value(&rec("coalesce", offset, framed(7, &reading_datum(1))))
                    .await
            })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        assert!(matches!(t.unwrap().unwrap(), Value::Record(_)));
    }
    assert_eq!(stub.count("GET /schemas/ids/7"), 1);
}

#[tokio::test]
async fn server_errors_are_retried() {
    let stub = support::Stub::start().await;
    stub.add(1, "retry-value", Schema::avro(READING));
    stub.fail_next(2);
    let registry = stub.client();
    let avro = RegistryAvro::new(registry.clone());
    let r: Reading = avro
        .value(&rec("retry", 0, framed(1, &reading_datum(5))))
        .await
        .unwrap();
    assert_eq!(r.value, 5);
    assert_eq!(stub.count("GET /schemas/ids/1"), 3);
}

#[tokio::test]
async fn persistent_server_errors_are_transient_then_recover() {
    let stub = support::Stub::start().await;
    stub.add(1, "flaky-value", Schema::avro(READING));
    stub.fail_next(3); // 1 try + 2 retries
    let avro = RegistryAvro::new(stub.client());
    let record = rec("flaky", 9, framed(1, &reading_datum(1)));
    let err = Deserializer::<Reading>::value(&avro, &record)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RegistryUnavailable);
    assert!(err.is_retriable(), "{err}");
    assert_eq!(err.coordinates().offset, 9);
    // The failure was not cached: the same record decodes once the registry is back.
    let r: Reading = avro.value(&record).await.unwrap();
    assert_eq!(r.sensor, "s");
}

#[tokio::test]
async fn hung_registry_times_out_as_transient() {
    let stub = support::Stub::start().await;
    stub.add(1, "hang-value", Schema::avro(READING));
    stub.set_hang(true);
    let registry = stub.client_with(|c| {
        c.with_request_timeout(Duration::from_millis(150))
            .with_max_retries(1)
    });
    let avro = RegistryAvroGeneric::new(registry);
    let record = rec("hang", 3, framed(1, &reading_datum(1)));
    let err = avro.value(&record).await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert_eq!(stub.count("GET /schemas/ids/1"), 2);
    stub.set_hang(false);
    assert!(avro.value(&record).await.is_ok());
}

#[tokio::test]
async fn registry_down_is_transient() {
    let stub = support::Stub::start().await;
    let registry = stub.client();
    stub.down();
    let avro = RegistryAvroGeneric::new(registry);
    let err = avro
        .value(&rec("down", 4, framed(1, &reading_datum(1))))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RegistryUnavailable);
    assert!(err.is_retriable());
}

#[tokio::test]
async fn unknown_id_is_permanent_and_not_retried() {
    let stub = support::Stub::start().await;
    let avro = RegistryAvroGeneric::new(stub.client());
    let err = avro
        .value(&rec("unknown", 5, framed(404, &[0])))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownSchema);
    assert!(!err.is_retriable());
    assert_eq!(stub.count("GET /schemas/ids/404"), 1);
    // Many poison records with the same unknown id: the miss is remembered.
    for offset in 6..50 {
        let err = avro
            .value(&rec("unknown", offset, framed(404, &[0])))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnknownSchema);
        assert_eq!(err.coordinates().offset, offset);
    }
    assert_eq!(stub.count("GET /schemas/ids/404"), 1);
}

#[tokio::test]
async fn a_404_without_a_registry_error_code_is_transient() {
    // A wrong base path answers 404 for everything: that is not the record's fault.
    let stub = support::Stub::start().await;
    stub.add(1, "path-value", Schema::avro(READING));
    let registry = Arc::new(
        weir_formats::registry::SchemaRegistry::new(
            weir_formats::registry::RegistryConfig::new(format!("{}/wrong/prefix", stub.url))
                .unwrap()
                .with_max_retries(0),
        )
        .unwrap(),
    );
    let avro = RegistryAvroGeneric::new(registry);
    let err = avro
        .value(&rec("path", 0, framed(1, &reading_datum(1))))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RegistryUnavailable, "{err}");
    assert!(err.is_retriable());
}

/// A URL pointing at some other HTTP server: `status` with a body that is not the
/// registry's, for every request. Returns the base URL.
async fn foreign_http_server(status: u16, body: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    url
}

#[tokio::test]
async fn answers_that_are_not_the_registrys_are_transient() {
    // A wrong URL (another server) must pause the partition, never dead-letter good
    // records: neither a 200 that is not a schema nor another client error is "unknown".
    for (status, body) in [
        (200, "<html>welcome</html>"),
        (400, "bad request"),
        (405, ""),
    ] {
        let url = foreign_http_server(status, body).await;
        let registry = Arc::new(
            weir_formats::registry::SchemaRegistry::new(
                weir_formats::registry::RegistryConfig::new(&url)
                    .unwrap()
                    .with_max_retries(0),
            )
            .unwrap(),
        );
        let avro = RegistryAvroGeneric::new(registry);
        let err = avro
            .value(&rec("foreign", 3, framed(1, &reading_datum(1))))
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::RegistryUnavailable,
            "{status}: {err}"
        );
        assert!(err.is_retriable(), "{status}: {err}");
        assert_eq!(err.coordinates().offset, 3);
    }
}

#[tokio::test]
async fn basic_auth_is_sent_and_never_printed() {
    let stub = support::Stub::start().await;
    stub.add(1, "auth-value", Schema::avro(READING));
    let canary = "canary-p4ss";
    let registry = stub.client_with(|c| c.with_auth(Auth::basic("svc", canary)));
    let avro = RegistryAvroGeneric::new(registry.clone());
    avro.value(&rec("auth", 0, framed(1, &reading_datum(1))))
        .await
        .unwrap();
    // "svc:canary-p4ss" in base64
    assert_eq!(
        stub.authorization_headers(),
        vec!["Basic c3ZjOmNhbmFyeS1wNHNz".to_string()]
    );
    assert!(!format!("{registry:?}").contains(canary));
    assert!(!format!("{avro:?}").contains(canary));
    // errors do not carry it either
    let err = avro
        .value(&rec("auth", 1, framed(2, &[0])))
        .await
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains(canary));
}

#[tokio::test]
async fn credentials_in_the_url_become_basic_auth_and_stay_hidden() {
    let stub = support::Stub::start().await;
    stub.add(1, "urlauth-value", Schema::avro(READING));
    let url = stub.url.replace("http://", "http://svc:canary-url@");
    let registry = Arc::new(
        weir_formats::registry::SchemaRegistry::new(
            weir_formats::registry::RegistryConfig::new(&url)
                .unwrap()
                .with_max_retries(0),
        )
        .unwrap(),
    );
    assert!(!format!("{registry:?}").contains("canary-url"));
    registry.schema(SchemaRef::Id(1)).await.unwrap();
    assert_eq!(stub.authorization_headers().len(), 1);
    stub.down();
    let err = registry.schema(SchemaRef::Id(2)).await.unwrap_err();
    assert!(err.is_retriable());
    assert!(!format!("{err} {err:?}").contains("canary-url"));
}

#[tokio::test]
async fn bearer_token_is_sent() {
    let stub = support::Stub::start().await;
    stub.add(1, "bearer-value", Schema::avro(READING));
    let registry = stub.client_with(|c| c.with_auth(Auth::bearer("canary-token")));
    registry.schema(SchemaRef::Id(1)).await.unwrap();
    assert_eq!(
        stub.authorization_headers(),
        vec!["Bearer canary-token".to_string()]
    );
    assert!(!format!("{registry:?}").contains("canary-token"));
}

#[tokio::test]
async fn subject_versions_and_register() {
    let stub = support::Stub::start().await;
    stub.add(3, "orders/value v2", Schema::avro(READING));
    let registry = stub.client();
    let latest = registry
        .subject_version("orders/value v2", None)
        .await
        .unwrap();
    assert_eq!((latest.id, latest.version), (3, 1));
    let v1 = registry
        .subject_version("orders/value v2", Some(1))
        .await
        .unwrap();
    assert_eq!(v1.schema.schema, READING);
    let missing = registry.subject_version("nope", Some(1)).await.unwrap_err();
    assert!(matches!(
        missing,
        weir_formats::Error::Registry {
            status: 404,
            error_code: Some(40401),
            ..
        }
    ));

    let id = registry
        .register("new-value", &Schema::avro(r#""long""#))
        .await
        .unwrap();
    let again = registry
        .register("new-value", &Schema::avro(r#""long""#))
        .await
        .unwrap();
    assert_eq!(id, again);
    assert_eq!(stub.count("POST /subjects/new-value/versions"), 1);
}

#[tokio::test]
async fn avro_serializer_registers_once_and_round_trips() {
    let stub = support::Stub::start().await;
    let registry = stub.client();
    let schema = parse_schema(READING).unwrap();
    let ser = RegistryAvroSerializer::<Reading>::new(registry.clone(), &schema).unwrap();
    let de = RegistryAvro::new(registry.clone());
    let topic = "ser".into();
    for offset in 0..20 {
        let ctx = Context::new(&topic, 0, offset, Part::Value);
        let bytes = ser
            .serialize(
                &Reading {
                    sensor: "x".into(),
                    value: offset,
                },
                &ctx,
            )
            .await
            .unwrap();
        assert_eq!(bytes[0], 0);
        let back: Reading = de.deserialize(Some(&bytes), &ctx).await.unwrap();
        assert_eq!(back.value, offset);
    }
    assert_eq!(stub.count("POST /subjects/ser-value/versions"), 1);
    assert_eq!(stub.count("GET /schemas/ids/"), 1);
}

#[tokio::test]
async fn guid_framing_and_header_ids() {
    let stub = support::Stub::start().await;
    stub.add(11, "guid-value", Schema::avro(READING));
    let guid = uuid::Uuid::from_u128(0xfeed);
    stub.add_guid(guid, 11);
    let avro = RegistryAvro::new(stub.client());
    let mut bytes = Vec::new();
    write_prefix(&SchemaRef::Guid(guid), &mut bytes);
    bytes.extend(reading_datum(42));
    let r: Reading = avro.value(&rec("guid", 0, bytes)).await.unwrap();
    assert_eq!(r.value, 42);

    // The id in a header, the value unframed.
    let mut header = Vec::new();
    write_prefix(&SchemaRef::Guid(guid), &mut header);
    let mut record = rec("guid", 1, reading_datum(43));
    record
        .headers
        .push(Header::new("__value_schema_id", header));
    let r: Reading = avro.value(&record).await.unwrap();
    assert_eq!(r.value, 43);
    assert_eq!(stub.count("GET /schemas/guids/"), 1);
}

#[tokio::test]
async fn registry_avro_resolves_against_a_reader_schema() {
    let stub = support::Stub::start().await;
    // writer v1: int count; reader: long count (promotion) + added field with default
    stub.add(
        1,
        "evolve-value",
        Schema::avro(r#"{"type":"record","name":"R","fields":[{"name":"count","type":"int"},{"name":"old","type":"string"}]}"#),
    );
    let reader = parse_schema(
        r#"{"type":"record","name":"R","fields":[{"name":"count","type":"long"},{"name":"added","type":"string","default":"d"}]}"#,
    )
    .unwrap();
    let avro = RegistryAvro::new(stub.client())
        .with_reader_schema(&reader)
        .unwrap();
    #[derive(serde::Deserialize)]
    struct R {
        count: i64,
        added: String,
    }
    let r: R = avro
        .value(&rec("evolve", 0, framed(1, &[0x0e, 2, b'z'])))
        .await
        .unwrap();
    assert_eq!((r.count, r.added.as_str()), (7, "d"));
}

const PROTO: &str = r#"
syntax = "proto3";
package shop;
message Order {
  int64 id = 1;
  string item = 2;
  message Line { string sku = 1; int32 qty = 2; }
  repeated Line lines = 3;
}
message Refund { int64 order_id = 1; }
"#;

#[derive(Clone, PartialEq, prost::Message)]
struct Refund {
    #[prost(int64, tag = "1")]
    order_id: i64,
}

#[tokio::test]
async fn protobuf_message_indexes_select_nested_types() {
    let stub = support::Stub::start().await;
    stub.add(5, "shop-value", Schema::protobuf(PROTO));
    let registry = stub.client();
    let de = RegistryProtobuf::new(registry.clone());
    // [0] shortcut: Order
    let msg = de
        .value(&rec(
            "shop",
            0,
            [framed(5, &[0x00]), vec![0x08, 0x07]].concat(),
        ))
        .await
        .unwrap();
    assert_eq!(msg.descriptor().full_name(), "shop.Order");
    // [1]: Refund
    let msg = de
        .value(&rec(
            "shop",
            1,
            [framed(5, &[0x02, 0x02]), vec![0x08, 0x09]].concat(),
        ))
        .await
        .unwrap();
    assert_eq!(msg.descriptor().full_name(), "shop.Refund");
    // [0, 0]: Order.Line
    let msg = de
        .value(&rec(
            "shop",
            2,
            [framed(5, &[0x04, 0x00, 0x00]), vec![0x0a, 0x01, b'k']].concat(),
        ))
        .await
        .unwrap();
    assert_eq!(msg.descriptor().full_name(), "shop.Order.Line");
    assert_eq!(stub.count("GET /schemas/ids/5"), 1);

    let typed =
        RegistryProtobufTyped::<Refund>::new(registry.clone()).with_full_name("shop.Refund");
    let r = typed
        .value(&rec(
            "shop",
            3,
            [framed(5, &[0x02, 0x02]), vec![0x08, 0x09]].concat(),
        ))
        .await
        .unwrap();
    assert_eq!(r.order_id, 9);
    let err = typed
        .value(&rec(
            "shop",
            4,
            [framed(5, &[0x00]), vec![0x08, 0x09]].concat(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SchemaMismatch);

    // The serializer writes the index array of the message it is given.
    let pool = compile(&[("shop.proto", PROTO)]).unwrap();
    let line = pool.get_message_by_name("shop.Order.Line").unwrap();
    let ser = RegistryProtobufSerializer::new(registry.clone(), PROTO, line.clone());
    let mut m = weir_formats::protobuf::DynamicMessage::new(line);
    m.set_field_by_name("sku", prost_reflect::Value::String("abc".into()));
    let topic = "shop".into();
    let ctx = Context::new(&topic, 0, 5, Part::Value);
    let bytes = ser.serialize(&m, &ctx).await.unwrap();
    let back = de.deserialize(Some(&bytes), &ctx).await.unwrap();
    // Different pools (compiled here, compiled from the registry): compare by content.
    assert_eq!(back.descriptor().full_name(), "shop.Order.Line");
    assert_eq!(back.get_field_by_name("sku").unwrap().as_str(), Some("abc"));
}

#[tokio::test]
async fn protobuf_references_are_fetched_by_subject() {
    let stub = support::Stub::start().await;
    stub.add(
        20,
        "common",
        Schema::protobuf("syntax = \"proto3\"; package common; message Money { int64 cents = 1; }"),
    );
    let mut main = Schema::protobuf(
        "syntax = \"proto3\"; package shop; import \"common/money.proto\"; message Price { common.Money amount = 1; }",
    );
    main.references
        .push(weir_formats::registry::SchemaReference {
            name: "common/money.proto".into(),
            subject: "common".into(),
            version: 1,
        });
    stub.add(21, "price-value", main);
    let de = RegistryProtobuf::new(stub.client());
    let msg = de
        .value(&rec(
            "price",
            0,
            [framed(21, &[0]), vec![0x0a, 0x02, 0x08, 0x05]].concat(),
        ))
        .await
        .unwrap();
    assert_eq!(msg.descriptor().full_name(), "shop.Price");
}

#[tokio::test]
async fn json_schema_framing() {
    let stub = support::Stub::start().await;
    let registry = stub.client();
    let ser = RegistryJsonSerializer::new(registry.clone(), r#"{"type":"object"}"#);
    let de = RegistryJson::new(registry.clone());
    let topic = "js".into();
    let ctx = Context::new(&topic, 1, 2, Part::Key);
    let bytes = ser
        .serialize(&serde_json::json!({"a": 1}), &ctx)
        .await
        .unwrap();
    let v: serde_json::Value = de.deserialize(Some(&bytes), &ctx).await.unwrap();
    assert_eq!(v["a"], 1);
    assert_eq!(stub.count("POST /subjects/js-key/versions"), 1);
    // An Avro id is not a JSON Schema.
    stub.add(1, "x", Schema::avro(READING));
    let err = Deserializer::<serde_json::Value>::deserialize(&de, Some(&framed(1, b"{}")), &ctx)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SchemaMismatch);
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<weir_formats::registry::SchemaRegistry>();
    check::<RegistryAvro>();
    check::<RegistryAvroGeneric>();
    check::<RegistryProtobuf>();
    check::<RegistryJson>();
    check::<weir_formats::avro::Avro>();
    check::<weir_formats::protobuf::ProtobufDynamic>();
    check::<weir_formats::DeserializeError>();
}

#[derive(Clone, PartialEq, prost::Message)]
struct Line {
    #[prost(string, tag = "1")]
    sku: String,
    #[prost(int32, tag = "2")]
    qty: i32,
}

#[tokio::test]
async fn typed_protobuf_serializer_and_header_ids() {
    let stub = support::Stub::start().await;
    let registry = stub.client();
    let ser =
        RegistryProtobufTypedSerializer::<Line>::new(registry.clone(), PROTO, "shop.Order.Line")
            .unwrap();
    assert!(
        RegistryProtobufTypedSerializer::<Line>::new(registry.clone(), PROTO, "shop.Nope").is_err()
    );
    let topic = "lines".into();
    let ctx = Context::new(&topic, 0, 0, Part::Value);
    let line = Line {
        sku: "k-1".into(),
        qty: 3,
    };
    let bytes = ser.serialize(&line, &ctx).await.unwrap();
    // 0x00 + id + [0, 0] + message
    assert_eq!(&bytes[5..8], &[0x04, 0x00, 0x00]);
    let typed =
        RegistryProtobufTyped::<Line>::new(registry.clone()).with_full_name("shop.Order.Line");
    assert_eq!(typed.deserialize(Some(&bytes), &ctx).await.unwrap(), line);

    // The same message with the id and indexes in the value-schema header instead.
    let header = bytes[..8].to_vec();
    let mut record = rec("lines", 1, prost::Message::encode_to_vec(&line));
    record
        .headers
        .push(Header::new("__value_schema_id", header));
    assert_eq!(typed.value(&record).await.unwrap(), line);
    // A header with only the id selects message [0] (shop.Order): a mismatch here.
    let mut record = rec("lines", 2, prost::Message::encode_to_vec(&line));
    record
        .headers
        .push(Header::new("__value_schema_id", bytes[..5].to_vec()));
    let err = typed.value(&record).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SchemaMismatch);
    assert_eq!(stub.count("POST /subjects/lines-value/versions"), 1);
}

#[tokio::test]
async fn avro_references_are_fetched_by_subject() {
    let stub = support::Stub::start().await;
    stub.add(
        30,
        "money",
        Schema::avro(r#"{"type":"record","name":"Money","namespace":"common","fields":[{"name":"cents","type":"long"}]}"#),
    );
    let mut price = Schema::avro(
        r#"{"type":"record","name":"Price","fields":[{"name":"amount","type":"common.Money"}]}"#,
    );
    price
        .references
        .push(weir_formats::registry::SchemaReference {
            name: "common.Money".into(),
            subject: "money".into(),
            version: 1,
        });
    stub.add(31, "price-value", price.clone());

    // The reference cannot be fetched (500s past the retries): transient, not poison.
    let flaky = stub.client();
    flaky.preload(SchemaRef::Id(31), price);
    stub.fail_next(3);
    let err = RegistryAvroGeneric::new(flaky)
        .value(&rec("price", 0, framed(31, &[0x0a])))
        .await
        .unwrap_err();
    assert!(err.is_retriable(), "{err}");

    let de = RegistryAvroGeneric::new(stub.client());
    let v = de
        .value(&rec("price", 0, framed(31, &[0x0a])))
        .await
        .unwrap();
    let Value::Record(fields) = v else {
        panic!("not a record: {v:?}")
    };
    assert_eq!(
        fields[0].1,
        Value::Record(vec![("cents".into(), Value::Long(5))])
    );
    assert_eq!(stub.count("GET /subjects/money/versions/1"), 3 + 1);
}
