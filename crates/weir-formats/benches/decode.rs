//! Decoding the same ~100-byte records through weir and through each library directly,
//! in one run: serde_json, apache-avro with a cached schema (and reader), prost and
//! prost-reflect. The ratio direct/weir time is the figure to watch (aim: weir ≥ 0.9×
//! direct throughput).
//!
//! `cargo bench -p weir-formats --bench decode -- --warm-up-time 1 --measurement-time 3`

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};

use apache_avro::reader::datum::GenericDatumReader;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use weir_formats::avro::{parse_schema, Avro, AvroGeneric, RegistryAvroGeneric};
use weir_formats::framing::SchemaRef;
use weir_formats::protobuf::{compile, Protobuf, ProtobufDynamic};
use weir_formats::registry::{RegistryConfig, Schema, SchemaRegistry};
use weir_formats::{Context, Deserializer, Json, Part, SyncDeserializer, SyncSerializer};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Order {
    id: i64,
    customer: String,
    item: String,
    quantity: i32,
    price: f64,
    express: bool,
    tags: Vec<String>,
}

const ORDER_AVRO: &str = r#"{"type":"record","name":"Order","fields":[
  {"name":"id","type":"long"},
  {"name":"customer","type":"string"},
  {"name":"item","type":"string"},
  {"name":"quantity","type":"int"},
  {"name":"price","type":"double"},
  {"name":"express","type":"boolean"},
  {"name":"tags","type":{"type":"array","items":"string"}}
]}"#;

const ORDER_PROTO: &str = r#"
syntax = "proto3";
package bench;
message Order {
  int64 id = 1;
  string customer = 2;
  string item = 3;
  int32 quantity = 4;
  double price = 5;
  bool express = 6;
  repeated string tags = 7;
}
"#;

#[derive(Clone, PartialEq, prost::Message)]
struct PbOrder {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(string, tag = "2")]
    customer: String,
    #[prost(string, tag = "3")]
    item: String,
    #[prost(int32, tag = "4")]
    quantity: i32,
    #[prost(double, tag = "5")]
    price: f64,
    #[prost(bool, tag = "6")]
    express: bool,
    #[prost(string, repeated, tag = "7")]
    tags: Vec<String>,
}

fn order() -> Order {
    Order {
        id: 1_234_567_890,
        customer: "customer-00042-with-a-longer-name".into(),
        item: "darjeeling first flush 250 g tin".into(),
        quantity: 3,
        price: 17.25,
        express: true,
        tags: vec!["tea".into(), "gift".into(), "eu".into()],
    }
}

/// Poll a future that is ready at once (cached registry schema) without a runtime.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut TaskContext::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("expected a ready future (schema cached)"),
    }
}

fn json(c: &mut Criterion) {
    let bytes = serde_json::to_vec(&order()).unwrap();
    let topic = "bench".into();
    let ctx = Context::new(&topic, 0, 0, Part::Value);
    let weir = Json::new();
    let mut g = c.benchmark_group(format!("json_typed_{}B", bytes.len()));
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("direct", |b| {
        b.iter(|| serde_json::from_slice::<Order>(black_box(&bytes)).unwrap())
    });
    g.bench_function("weir", |b| {
        b.iter(|| SyncDeserializer::<Order>::decode(&weir, Some(black_box(&bytes)), &ctx).unwrap())
    });
    g.finish();
    let mut g = c.benchmark_group(format!("json_value_{}B", bytes.len()));
    g.bench_function("direct", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&bytes)).unwrap())
    });
    g.bench_function("weir", |b| {
        b.iter(|| {
            SyncDeserializer::<serde_json::Value>::decode(&weir, Some(black_box(&bytes)), &ctx)
                .unwrap()
        })
    });
    g.finish();
}

fn avro(c: &mut Criterion) {
    let schema = parse_schema(ORDER_AVRO).unwrap();
    let typed = Avro::new(&schema).unwrap();
    let generic = AvroGeneric::new(&schema).unwrap();
    let bytes = typed.encode(&order()).unwrap();
    let topic = "bench".into();
    let ctx = Context::new(&topic, 0, 0, Part::Value);
    // direct: the schema parsed once and its reader built once, outside the loop
    let reader = GenericDatumReader::builder(&schema).build().unwrap();

    let mut g = c.benchmark_group(format!("avro_typed_{}B", bytes.len()));
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("direct", |b| {
        b.iter(|| {
            reader
                .read_deser::<Order>(&mut black_box(&bytes[..]))
                .unwrap()
        })
    });
    g.bench_function("weir", |b| {
        b.iter(|| SyncDeserializer::<Order>::decode(&typed, Some(black_box(&bytes)), &ctx).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group(format!("avro_generic_{}B", bytes.len()));
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("direct", |b| {
        b.iter(|| reader.read_value(&mut black_box(&bytes[..])).unwrap())
    });
    g.bench_function("weir", |b| {
        b.iter(|| generic.decode(Some(black_box(&bytes)), &ctx).unwrap())
    });
    g.finish();

    // registry framing: weir with the schema cached by id vs. direct prefix split +
    // the cached reader.
    let registry =
        Arc::new(SchemaRegistry::new(RegistryConfig::new("http://127.0.0.1:1").unwrap()).unwrap());
    registry.preload(SchemaRef::Id(1), Schema::avro(ORDER_AVRO));
    let framed_de = RegistryAvroGeneric::new(registry);
    let mut framed = vec![0, 0, 0, 0, 1];
    framed.extend_from_slice(&bytes);
    let warm = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    warm.block_on(framed_de.deserialize(Some(&framed), &ctx))
        .unwrap();
    let mut g = c.benchmark_group(format!("avro_registry_{}B", framed.len()));
    g.throughput(Throughput::Bytes(framed.len() as u64));
    g.bench_function("direct", |b| {
        b.iter(|| {
            let data = black_box(&framed[..]);
            assert_eq!(data[0], 0);
            let _id = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
            reader.read_value(&mut &data[5..]).unwrap()
        })
    });
    g.bench_function("weir", |b| {
        b.iter(|| now(framed_de.deserialize(Some(black_box(&framed)), &ctx)).unwrap())
    });
    g.finish();
}

fn protobuf(c: &mut Criterion) {
    let o = order();
    let m = PbOrder {
        id: o.id,
        customer: o.customer,
        item: o.item,
        quantity: o.quantity,
        price: o.price,
        express: o.express,
        tags: o.tags,
    };
    let bytes = m.encode_to_vec();
    let topic = "bench".into();
    let ctx = Context::new(&topic, 0, 0, Part::Value);
    let typed = Protobuf::<PbOrder>::new();
    let mut g = c.benchmark_group(format!("protobuf_typed_{}B", bytes.len()));
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("direct", |b| {
        b.iter(|| PbOrder::decode(black_box(&bytes[..])).unwrap())
    });
    g.bench_function("weir", |b| {
        b.iter(|| typed.decode(Some(black_box(&bytes)), &ctx).unwrap())
    });
    g.finish();

    let pool = compile(&[("bench.proto", ORDER_PROTO)]).unwrap();
    let desc = pool.get_message_by_name("bench.Order").unwrap();
    let dynamic = ProtobufDynamic::new(desc.clone());
    let mut g = c.benchmark_group(format!("protobuf_dynamic_{}B", bytes.len()));
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("direct", |b| {
        b.iter(|| {
            prost_reflect::DynamicMessage::decode(desc.clone(), black_box(&bytes[..])).unwrap()
        })
    });
    g.bench_function("weir", |b| {
        b.iter(|| dynamic.decode(Some(black_box(&bytes)), &ctx).unwrap())
    });
    g.finish();
}

criterion_group!(benches, json, avro, protobuf);
criterion_main!(benches);
