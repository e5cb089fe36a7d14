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
use criterion::{criterion_group, Criterion, Throughput};
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

/// Everything built once, outside the timed loops, shared by criterion and the paired
/// ratio measurement.
struct Fixtures {
    topic: Arc<str>,
    json_bytes: Vec<u8>,
    json: Json,
    avro_schema: &'static apache_avro::Schema,
    avro_bytes: Vec<u8>,
    avro_framed: Vec<u8>,
    avro_typed: Avro,
    avro_generic: AvroGeneric,
    avro_registry: RegistryAvroGeneric,
    pb_bytes: Vec<u8>,
    pb_typed: Protobuf<PbOrder>,
    pb_desc: prost_reflect::MessageDescriptor,
    pb_dynamic: ProtobufDynamic,
}

impl Fixtures {
    fn new() -> Self {
        let schema: &'static apache_avro::Schema =
            Box::leak(Box::new(parse_schema(ORDER_AVRO).unwrap()));
        let avro_typed = Avro::new(schema).unwrap();
        let avro_bytes = avro_typed.encode(&order()).unwrap();
        let mut avro_framed = vec![0, 0, 0, 0, 1];
        avro_framed.extend_from_slice(&avro_bytes);
        let registry = Arc::new(
            SchemaRegistry::new(RegistryConfig::new("http://127.0.0.1:1").unwrap()).unwrap(),
        );
        registry.preload(SchemaRef::Id(1), Schema::avro(ORDER_AVRO));
        let avro_registry = RegistryAvroGeneric::new(registry);
        let topic: Arc<str> = "bench".into();
        {
            // First sight of id 1 compiles its reader (async); afterwards it is cached.
            let ctx = Context::new(&topic, 0, 0, Part::Value);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(avro_registry.deserialize(Some(&avro_framed), &ctx))
                .unwrap();
        }
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
        let pool = compile(&[("bench.proto", ORDER_PROTO)]).unwrap();
        let pb_desc = pool.get_message_by_name("bench.Order").unwrap();
        Fixtures {
            json_bytes: serde_json::to_vec(&order()).unwrap(),
            json: Json::new(),
            avro_schema: schema,
            avro_bytes,
            avro_framed,
            avro_typed,
            avro_generic: AvroGeneric::new(schema).unwrap(),
            avro_registry,
            pb_bytes: m.encode_to_vec(),
            pb_typed: Protobuf::new(),
            pb_dynamic: ProtobufDynamic::new(pb_desc.clone()),
            pb_desc,
            topic,
        }
    }
}

type Pair<'a> = (
    &'static str,
    usize,
    Box<dyn FnMut() + 'a>,
    Box<dyn FnMut() + 'a>,
);

/// (name, bytes, direct, weir) for every format.
fn pairs<'a>(
    f: &'a Fixtures,
    ctx: &'a Context<'a>,
    reader: &'a GenericDatumReader<'static>,
) -> Vec<Pair<'a>> {
    vec![
        (
            "json_typed",
            f.json_bytes.len(),
            Box::new(|| {
                black_box(serde_json::from_slice::<Order>(black_box(&f.json_bytes)).unwrap());
            }),
            Box::new(|| {
                black_box(
                    SyncDeserializer::<Order>::decode(&f.json, Some(black_box(&f.json_bytes)), ctx)
                        .unwrap(),
                );
            }),
        ),
        (
            "json_value",
            f.json_bytes.len(),
            Box::new(|| {
                black_box(
                    serde_json::from_slice::<serde_json::Value>(black_box(&f.json_bytes)).unwrap(),
                );
            }),
            Box::new(|| {
                black_box(
                    SyncDeserializer::<serde_json::Value>::decode(
                        &f.json,
                        Some(black_box(&f.json_bytes)),
                        ctx,
                    )
                    .unwrap(),
                );
            }),
        ),
        (
            "avro_typed",
            f.avro_bytes.len(),
            Box::new(|| {
                black_box(
                    reader
                        .read_deser::<Order>(&mut black_box(&f.avro_bytes[..]))
                        .unwrap(),
                );
            }),
            Box::new(|| {
                black_box(
                    SyncDeserializer::<Order>::decode(
                        &f.avro_typed,
                        Some(black_box(&f.avro_bytes)),
                        ctx,
                    )
                    .unwrap(),
                );
            }),
        ),
        (
            "avro_generic",
            f.avro_bytes.len(),
            Box::new(|| {
                black_box(
                    reader
                        .read_value(&mut black_box(&f.avro_bytes[..]))
                        .unwrap(),
                );
            }),
            Box::new(|| {
                black_box(
                    f.avro_generic
                        .decode(Some(black_box(&f.avro_bytes)), ctx)
                        .unwrap(),
                );
            }),
        ),
        (
            "avro_registry_framed",
            f.avro_framed.len(),
            // direct: split the 5-byte prefix by hand, look the id up in a map of
            // readers as any registry-aware consumer must, decode with the cached reader
            {
                let mut readers = std::collections::HashMap::new();
                readers.insert(1u32, reader);
                Box::new(move || {
                    let data = black_box(&f.avro_framed[..]);
                    assert_eq!(data[0], 0);
                    let id = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
                    let r = readers.get(&id).unwrap();
                    black_box(r.read_value(&mut &data[5..]).unwrap());
                })
            },
            Box::new(|| {
                black_box(
                    now(f
                        .avro_registry
                        .deserialize(Some(black_box(&f.avro_framed)), ctx))
                    .unwrap(),
                );
            }),
        ),
        (
            "protobuf_typed",
            f.pb_bytes.len(),
            Box::new(|| {
                black_box(PbOrder::decode(black_box(&f.pb_bytes[..])).unwrap());
            }),
            Box::new(|| {
                black_box(
                    f.pb_typed
                        .decode(Some(black_box(&f.pb_bytes)), ctx)
                        .unwrap(),
                );
            }),
        ),
        (
            "protobuf_dynamic",
            f.pb_bytes.len(),
            Box::new(|| {
                black_box(
                    prost_reflect::DynamicMessage::decode(
                        f.pb_desc.clone(),
                        black_box(&f.pb_bytes[..]),
                    )
                    .unwrap(),
                );
            }),
            Box::new(|| {
                black_box(
                    f.pb_dynamic
                        .decode(Some(black_box(&f.pb_bytes)), ctx)
                        .unwrap(),
                );
            }),
        ),
    ]
}

fn decode(c: &mut Criterion) {
    let f = Fixtures::new();
    let ctx = Context::new(&f.topic, 0, 0, Part::Value);
    let reader = GenericDatumReader::builder(f.avro_schema).build().unwrap();
    for (name, bytes, mut direct, mut weir) in pairs(&f, &ctx, &reader) {
        let mut g = c.benchmark_group(format!("{name}_{bytes}B"));
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function("direct", |b| b.iter(&mut direct));
        g.bench_function("weir", |b| b.iter(&mut weir));
        g.finish();
    }
}

/// CPU time of this thread, in seconds: unlike wall time, not inflated when the
/// shared machine's scheduler runs someone else.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux
    // supports; the call has no other effect.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// The machine is shared, so criterion's sequential direct-then-weir estimates drift
/// with the load. This measures the ratio robustly: 21 rounds, each timing (in thread
/// CPU time) a block of direct calls and a block of weir calls back to back (order
/// alternating), and reports the median of the per-round ratios.
/// Calls per timed block.
const BLOCK: usize = 20_000;

fn paired_ratios() {
    let f = Fixtures::new();
    let ctx = Context::new(&f.topic, 0, 0, Part::Value);
    let reader = GenericDatumReader::builder(f.avro_schema).build().unwrap();
    println!(
        "\nweir throughput / direct throughput (thread CPU time, median of 21 interleaved rounds):"
    );
    for (name, bytes, mut direct, mut weir) in pairs(&f, &ctx, &reader) {
        let time = |g: &mut Box<dyn FnMut() + '_>| {
            let start = thread_cpu_seconds();
            for _ in 0..BLOCK {
                g();
            }
            thread_cpu_seconds() - start
        };
        let mut ratios = Vec::new();
        let (mut d_total, mut w_total) = (0.0, 0.0);
        for round in 0..21 {
            let (d, w) = if round % 2 == 0 {
                let d = time(&mut direct);
                (d, time(&mut weir))
            } else {
                let w = time(&mut weir);
                (time(&mut direct), w)
            };
            d_total += d;
            w_total += w;
            ratios.push(d / w);
        }
        ratios.sort_by(|a, b| a.total_cmp(b));
        println!(
            "  {name:<22} {bytes:>4} B  direct {:>7.1} ns  weir {:>7.1} ns  ratio {:.2}",
            d_total / (21.0 * BLOCK as f64) * 1e9,
            w_total / (21.0 * BLOCK as f64) * 1e9,
            ratios[10]
        );
    }
}

criterion_group!(benches, decode);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    paired_ratios();
}
