//! `weir produce --format avro|protobuf --registry URL`: the schema is registered
//! under `<topic>-value`, every record is framed in Confluent's wire format, and
//! weir's own registry deserializers read back exactly what was produced. Input that
//! does not fit the schema fails naming the line and the file; a missing or
//! unreachable registry fails saying so. Needs the registry `scripts/provision`
//! starts on 127.0.0.1:8081.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::path::Path;

use common::{unique, weir, Run};
use weir_core::TopicPartition;
use weir_formats::protobuf::ReflectMessage;
use weir_formats::Deserializer;
use weir_log::{Log, LogOptions};

const REGISTRY: &str = "http://127.0.0.1:8081";

#[derive(Debug, PartialEq, serde::Deserialize)]
struct Order {
    id: i64,
    customer: String,
    amount: f64,
}

fn produce(log: &Path, topic: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "produce".to_owned(),
        "--log".to_owned(),
        log.display().to_string(),
        "--topic".to_owned(),
        topic.to_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    weir(args)
}

fn records(log: &Path, topic: &str) -> Vec<weir_core::Record> {
    let log = Log::open_existing(log, LogOptions::default()).unwrap();
    log.read(&TopicPartition::new(topic, 0), 0, 1000, 1 << 20)
        .unwrap()
}

fn registry_is_up() {
    if std::net::TcpStream::connect("127.0.0.1:8081").is_err() {
        panic!("no schema registry on 127.0.0.1:8081: run scripts/provision");
    }
}

/// The sample orders `--generate` writes, as JSON (what `weir produce` encodes).
fn expected(n: u64) -> Vec<Order> {
    let dir = tempfile::tempdir().unwrap();
    let run = produce(dir.path(), "json", &["--generate", &n.to_string()]);
    assert_eq!(run.code, 0, "{run:?}");
    records(dir.path(), "json")
        .iter()
        .map(|r| serde_json::from_slice(r.value.as_deref().unwrap()).unwrap())
        .collect()
}

#[tokio::test]
async fn generated_orders_in_avro_read_back_through_the_registry() {
    registry_is_up();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("avro_orders");
    let run = produce(
        dir.path(),
        &topic,
        &[
            "--generate",
            "20",
            "--format",
            "avro",
            "--registry",
            REGISTRY,
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let got = records(dir.path(), &topic);
    assert_eq!(got.len(), 20);
    assert!(
        got.iter().all(|r| r.value.as_deref().unwrap()[0] == 0),
        "magic byte"
    );
    let avro = weir_formats::avro::RegistryAvro::from_url(REGISTRY).unwrap();
    let mut decoded = Vec::new();
    for r in &got {
        let o: Order = avro.value(r).await.unwrap();
        decoded.push(o);
    }
    assert_eq!(decoded, expected(20));
}

#[tokio::test]
async fn json_lines_in_protobuf_read_back_and_bad_lines_name_where() {
    registry_is_up();
    let dir = tempfile::tempdir().unwrap();
    let proto = dir.path().join("shop.proto");
    std::fs::write(
        &proto,
        "syntax = \"proto3\";\npackage shop;\nmessage Note { string text = 1; }\nmessage Order { int64 id = 1; string customer = 2; double amount = 3; }\n",
    )
    .unwrap();
    let input = dir.path().join("orders.jsonl");
    std::fs::write(
        &input,
        "{\"id\": 1, \"customer\": \"ada\", \"amount\": 2.5}\n\n{\"id\": \"2\", \"customer\": \"bob\", \"amount\": 10}\n",
    )
    .unwrap();
    let log = dir.path().join("log");
    let topic = unique("proto_orders");
    let args = |input: &Path, message: &str| {
        vec![
            "--input".to_owned(),
            input.display().to_string(),
            "--format".to_owned(),
            "protobuf".to_owned(),
            "--registry".to_owned(),
            REGISTRY.to_owned(),
            "--schema".to_owned(),
            proto.display().to_string(),
            "--message".to_owned(),
            message.to_owned(),
        ]
    };
    let a = args(&input, "shop.Order");
    let run = produce(
        &log,
        &topic,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    let proto_de = weir_formats::protobuf::RegistryProtobuf::from_url(REGISTRY).unwrap();
    let mut seen = Vec::new();
    for r in records(&log, &topic) {
        let m: weir_formats::protobuf::DynamicMessage = proto_de.value(&r).await.unwrap();
        assert_eq!(
            m.descriptor().full_name(),
            "shop.Order",
            "the second message, by its index"
        );
        let f = |name: &str| m.get_field_by_name(name).unwrap().into_owned();
        seen.push((
            f("id").as_i64().unwrap(),
            f("customer").as_str().unwrap().to_owned(),
            f("amount").as_f64().unwrap(),
        ));
    }
    assert_eq!(
        seen,
        [(1, "ada".to_owned(), 2.5), (2, "bob".to_owned(), 10.0)]
    );

    // A line that is no Order: refused with its line and file; nothing after it.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\": 3}\n{\"id\": \"three\"}\n").unwrap();
    let topic2 = unique("proto_bad");
    let a = args(&bad, "shop.Order");
    let run = produce(
        &log,
        &topic2,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!("line 2 of {}", bad.display()))
            && run.stderr.contains("is not a shop.Order"),
        "{}",
        run.stderr
    );
    // An unknown message names the ones there are.
    let a = args(&input, "shop.Nope");
    let run = produce(
        &log,
        &topic2,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("no message `shop.Nope`") && run.stderr.contains("shop.Order"),
        "{}",
        run.stderr
    );
}

#[test]
fn avro_without_a_registry_or_with_a_bad_one_fails_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let run = produce(dir.path(), "t", &["--generate", "1", "--format", "avro"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("needs --registry URL"),
        "{}",
        run.stderr
    );
    let run = produce(
        dir.path(),
        "t",
        &[
            "--generate",
            "1",
            "--format",
            "avro",
            "--registry",
            "http://user:s3cr3t-canary@127.0.0.1:1",
        ],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("cannot register the sample order schema"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("s3cr3t-canary"),
        "the password leaked: {}",
        run.stderr
    );
    // A JSON line that does not match the Avro schema: its line and file.
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"name\": \"x\"}\n").unwrap();
    let schema = dir.path().join("order.avsc");
    std::fs::write(
        &schema,
        r#"{"type":"record","name":"O","fields":[{"name":"id","type":"long"}]}"#,
    )
    .unwrap();
    let run = produce(
        dir.path(),
        "t",
        &[
            "--input",
            &input.display().to_string(),
            "--format",
            "avro",
            "--registry",
            REGISTRY,
            "--schema",
            &schema.display().to_string(),
        ],
    );
    if std::net::TcpStream::connect("127.0.0.1:8081").is_err() {
        panic!("no schema registry on 127.0.0.1:8081: run scripts/provision");
    }
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("line 1 of {}", input.display()))
            && run.stderr.contains("does not match"),
        "{}",
        run.stderr
    );
}
