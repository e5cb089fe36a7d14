//! A schema registry that goes away and comes back: registry Avro records wait (their
//! partitions paused, retried with backoff) instead of being dead-lettered; poison
//! (a bad magic byte) is dead-lettered all the same; once the registry is back every
//! good record lands exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../weir-formats/tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use common::{committed, ends, eventually, scalar, sqlite_url, Db, Input};
use tokio::net::{TcpListener, TcpStream};
use weir_formats::avro::RegistryAvro;
use weir_formats::framing::{write_prefix, SchemaRef};
use weir_formats::registry::Schema;
use weir_pipeline::sink::Sqlite;
use weir_pipeline::Job;

const READING: &str = r#"{"type":"record","name":"Reading","fields":[
  {"name":"sensor","type":"string"},{"name":"value","type":"long"}]}"#;

#[derive(serde::Deserialize)]
struct Reading {
    sensor: String,
    value: i64,
}

struct Out {
    part: i32,
    src_offset: i64,
    sensor: String,
    value: i64,
}
weir_sql::impl_row!(Out {
    part,
    src_offset,
    sensor,
    value
});

/// Avro datum of `Reading { sensor, value }`, framed with schema id 1.
fn framed(sensor: &str, value: i64) -> Vec<u8> {
    let mut out = Vec::new();
    write_prefix(&SchemaRef::Id(1), &mut out);
    let zigzag = |n: i64, out: &mut Vec<u8>| {
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    };
    zigzag(sensor.len() as i64, &mut out);
    out.extend_from_slice(sensor.as_bytes());
    zigzag(value, &mut out);
    out
}

/// A TCP gate in front of the registry: open, it forwards; closed, it drops every
/// connection at once (what a client sees while a service restarts).
struct Gate {
    url: String,
    open: Arc<AtomicBool>,
}

async fn gate(upstream: String) -> Result<Gate> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let open = Arc::new(AtomicBool::new(false));
    let o = open.clone();
    let target = upstream.trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            if !o.load(Ordering::SeqCst) {
                drop(conn);
                continue;
            }
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut up) = TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                }
            });
        }
    });
    Ok(Gate { url, open })
}

const PER_PARTITION: i64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_outage_dead_letters_nothing_good_embedded_log() -> Result<()> {
    registry_outage(Input::log()?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_outage_dead_letters_nothing_good_kafka() -> Result<()> {
    registry_outage(Input::kafka()?).await
}

async fn registry_outage(input: Input) -> Result<()> {
    common::logs();
    let stub = support::Stub::start().await;
    stub.add(1, "readings-value", Schema::avro(READING));
    let gate = gate(stub.url.clone()).await?;
    // the client talks to the gate, not to the stub
    let registry = Arc::new(weir_formats::registry::SchemaRegistry::new(
        weir_formats::registry::RegistryConfig::new(&gate.url)?
            .with_request_timeout(Duration::from_millis(500))
            .with_max_retries(1)
            .with_backoff(Duration::from_millis(10), Duration::from_millis(20)),
    )?);

    let topic = input.topic("readings", 2)?;
    for p in 0..2 {
        let values: Vec<_> = (0..PER_PARTITION)
            .map(|i| {
                let v = if i % 10 == 4 {
                    b"\x07 not avro".to_vec() // bad magic byte: permanent
                } else {
                    framed(&format!("s{p}"), i)
                };
                (None, v)
            })
            .collect();
        input.produce(&topic, p, &values).await?;
    }
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(dir.path());
    let job = Job::new("readings")
        .source(input.url(), [topic.as_str()])
        .database(&url)
        .batch_records(10)
        .linger(Duration::from_millis(10))
        .value::<Reading, _>(RegistryAvro::new(registry))
        .map_with(|r, rec| Out {
            part: rec.partition,
            src_offset: rec.offset,
            sensor: r.sensor,
            value: r.value,
        })
        .sink(Sqlite::insert("readings"));
    let done = committed(
        url.clone(),
        "readings".into(),
        "weir_offsets".into(),
        ends(&topic, &[PER_PARTITION, PER_PARTITION]),
        Duration::from_secs(60),
    );
    let running = tokio::spawn(job.run_until(done));

    // the registry is down: nothing may be written, above all no dead letter; the
    // outage lasts 2.5 s from the claims (on Kafka the group join comes first)
    let db = loop {
        if let Ok(db) = Db::connect(&url).await {
            break db;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eventually(
        "both partitions are claimed",
        Duration::from_secs(60),
        || async {
            Ok(scalar(
                &db,
                "SELECT COUNT(*) FROM weir_offsets WHERE job = 'readings' AND epoch > 0",
            )
            .await
            .unwrap_or(0)
                == 2)
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let rows = scalar(&db, "SELECT COUNT(*) FROM readings")
        .await
        .unwrap_or(0);
    let dead = scalar(&db, "SELECT COUNT(*) FROM weir_dead_letters")
        .await
        .unwrap_or(0);
    assert_eq!((rows, dead), (0, 0), "while the registry is down");

    gate.open.store(true, Ordering::SeqCst);
    let summary = running.await??;
    let poison = 2 * (0..PER_PARTITION).filter(|i| i % 10 == 4).count() as i64;
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM readings").await?,
        2 * PER_PARTITION - poison
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(DISTINCT part * 1000 + src_offset) FROM readings"
        )
        .await?,
        2 * PER_PARTITION - poison,
        "no duplicates"
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM weir_dead_letters WHERE stage = 'decode'"
        )
        .await?,
        poison,
        "only the poison is dead-lettered"
    );
    assert!(summary.transient_retries > 0, "{summary:?}");
    println!("registry outage: {summary:?}");
    Ok(())
}
