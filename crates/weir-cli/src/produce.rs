//! `weir produce` and `weir log produce`: JSON lines or generated sample orders into
//! a topic of the embedded log or Kafka, as JSON or (`weir produce --format`) Avro or
//! Protobuf framed for a schema registry.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use weir_log::{Log, LogOptions, NewRecord, Producer};

use crate::util::{print_json, progress, Output, Source};

/// Where the records come from and how they are keyed.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// The topic (created with `--partitions` partitions if it does not exist).
    #[arg(long)]
    pub topic: String,
    /// Partitions of the topic when it has to be created.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// A file of JSON lines (default: stdin). Each line must be one JSON value.
    #[arg(long, conflicts_with = "generate")]
    pub input: Option<PathBuf>,
    /// Instead of reading input, generate N sample orders
    /// (`{"id", "customer", "amount"}`, keyed by customer), deterministic.
    #[arg(long)]
    pub generate: Option<u64>,
    /// Use this top-level field of each JSON object as the record key (its text; a
    /// string as is). Without it records have no key and are spread round-robin.
    #[arg(long)]
    pub key_field: Option<String>,
}

/// `weir produce`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  weir produce --log /var/lib/weir --topic orders --generate 10000 --partitions 3\n  weir produce --log /var/lib/weir --topic orders --key-field id --input orders.jsonl\n  weir produce --bootstrap kafka://broker:9092 --topic orders --generate 1000 --format avro --registry http://registry:8081\n  weir produce --bootstrap kafka://broker:9092 --topic orders --input orders.jsonl --format protobuf --registry http://registry:8081 --schema shop.proto --message shop.Order"
)]
pub struct ProduceArgs {
    /// The embedded log's directory (created if missing).
    #[arg(long, required_unless_present = "bootstrap")]
    pub log: Option<PathBuf>,
    /// `log:///DIR` (the same as `--log DIR`), or Kafka's `kafka://host:port` /
    /// `host:port` (needs the `kafka` feature; the topic must exist).
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// A librdkafka producer property for Kafka, `KEY=VALUE` (repeatable; set after
    /// weir's defaults `enable.idempotence=true`, `acks=all`, `linger.ms=5`).
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    pub kafka_properties: Vec<String>,
    #[command(flatten)]
    pub input: InputArgs,
    /// The value encoding: the JSON as is, or Avro / Protobuf with a registered
    /// schema, in Confluent's wire format (needs --registry).
    #[arg(long, value_enum, default_value_t = crate::encode::Format::Json)]
    pub format: crate::encode::Format,
    /// The schema registry (`http://[user:password@]host:port`) to register the
    /// schema in, under `<topic>-value`.
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
    /// The schema: an `.avsc` file for Avro, a `.proto` file for Protobuf
    /// (default with --generate: the sample order's).
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// The Protobuf message (full name, e.g. `shop.Order`; default: the file's first).
    #[arg(long, value_name = "NAME")]
    pub message: Option<String>,
}

pub async fn run(args: ProduceArgs, output: Output) -> anyhow::Result<ExitCode> {
    if args.schema.is_some() && args.input.generate.is_some() {
        bail!("--schema goes with --input or stdin; --generate writes the sample orders with their own schema");
    }
    let source = Source::parse(args.log.as_deref(), args.bootstrap.as_deref())?;
    let encoder = crate::encode::Encoder::new(
        args.format,
        args.registry.as_deref(),
        args.schema.as_deref(),
        args.message.as_deref(),
        &args.input.topic,
    )
    .await?;
    match source {
        None => bail!("give --log DIR or --bootstrap log:///DIR | kafka://host:port"),
        Some(Source::Log(dir)) => {
            let log = Log::open(&dir, LogOptions::default())
                .with_context(|| format!("cannot open or create the log in {}", dir.display()))?;
            produce_to_log(&log, &args.input, encoder.as_ref(), output)?;
        }
        #[cfg(feature = "kafka")]
        Some(Source::Kafka(servers)) => {
            let bar = progress(args.input.generate.unwrap_or(0), "produce");
            let mut records = records(&args.input, encoder.as_ref())?;
            let mut props = Vec::new();
            for p in &args.kafka_properties {
                let Some((k, v)) = p.split_once('=') else {
                    // (not echoed: a typo'd `sasl.password:…` must not be printed)
                    bail!("--kafka-property: expected KEY=VALUE, got an argument without `=`");
                };
                props.push((k.to_owned(), v.to_owned()));
            }
            let sent = crate::kafka::produce(
                &servers,
                &props,
                &args.input.topic,
                &mut records,
                &mut |n| bar.set_position(n),
            )?;
            bar.finish_and_clear();
            report(
                output,
                &args.input.topic,
                sent,
                &format!("Kafka at {servers}"),
            )?;
        }
        #[cfg(not(feature = "kafka"))]
        Some(Source::Kafka(servers)) => bail!("{}", crate::util::no_kafka(&servers)),
    }
    Ok(ExitCode::SUCCESS)
}

fn report(output: Output, topic: &str, sent: u64, place: &str) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(&serde_json::json!({"topic": topic, "records": sent}))?,
        Output::Text => eprintln!("{sent} record(s) appended to `{topic}` in {place}"),
    }
    Ok(())
}

/// One input record, `(key, value)`, or why a line could not be one.
pub type InputRecord = anyhow::Result<(Option<Vec<u8>>, Vec<u8>)>;

/// The input as `(key, value)` records: generated orders, or JSON lines (each
/// checked to parse; the error names the line and the file).
pub fn records<'a>(
    input: &'a InputArgs,
    encoder: Option<&'a crate::encode::Encoder>,
) -> anyhow::Result<Box<dyn Iterator<Item = InputRecord> + 'a>> {
    if let Some(n) = input.generate {
        return Ok(Box::new((0..n).map(move |i| {
            let (key, value) = sample_order(i);
            let value = match encoder {
                Some(e) => e.encode(value.as_bytes(), &format!("sample order {i}"))?,
                None => value.into_bytes(),
            };
            Ok((Some(key.into_bytes()), value))
        })));
    }
    let reader: Box<dyn BufRead> = match &input.input {
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    let source = input
        .input
        .as_ref()
        .map_or("stdin".to_owned(), |p| p.display().to_string());
    Ok(Box::new(reader.lines().enumerate().filter_map(
        move |(i, line)| {
            let line_no = i + 1;
            let line = match line.with_context(|| format!("cannot read line {line_no} of {source}"))
            {
                Ok(l) => l,
                Err(e) => return Some(Err(e)),
            };
            if line.trim().is_empty() {
                return None;
            }
            let parsed: anyhow::Result<serde_json::Value> = serde_json::from_str(&line)
                .with_context(|| format!("line {line_no} of {source} is not JSON"));
            let v = match parsed {
                Ok(v) => v,
                Err(e) => return Some(Err(e)),
            };
            let key = match &input.key_field {
                Some(f) => match key_of(line_no, &v, f).with_context(|| format!("in {source}")) {
                    Ok(k) => Some(k.to_vec()),
                    Err(e) => return Some(Err(e)),
                },
                None => None,
            };
            let value = match encoder {
                Some(e) => {
                    match e.encode(line.as_bytes(), &format!("line {line_no} of {source}")) {
                        Ok(v) => v,
                        Err(e) => return Some(Err(e)),
                    }
                }
                None => line.into_bytes(),
            };
            Some(Ok((key, value)))
        },
    )))
}

/// One sample order, deterministic in `i`.
pub fn sample_order(i: u64) -> (String, String) {
    let x = i
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let customer = format!("customer-{}", (x >> 33) % 97);
    let cents = (x >> 17) % 100_000;
    let value = format!(
        "{{\"id\":{i},\"customer\":\"{customer}\",\"amount\":{}.{:02}}}",
        cents / 100,
        cents % 100
    );
    (customer, value)
}

fn key_of(line_no: usize, v: &serde_json::Value, field: &str) -> anyhow::Result<Bytes> {
    match v.get(field) {
        Some(serde_json::Value::String(s)) => Ok(Bytes::from(s.clone())),
        Some(serde_json::Value::Null) | None => {
            bail!("line {line_no}: no field `{field}` for the key")
        }
        Some(other) => Ok(Bytes::from(other.to_string())),
    }
}

/// Appends the input to the topic in batches of 1000; prints how many went where.
pub fn produce_to_log(
    log: &Log,
    input: &InputArgs,
    encoder: Option<&crate::encode::Encoder>,
    output: Output,
) -> anyhow::Result<()> {
    let dir = log.dir().to_path_buf();
    if !log.topics().contains_key(&input.topic) {
        log.create_topic(&input.topic, input.partitions)
            .with_context(|| {
                format!("cannot create topic `{}` in {}", input.topic, dir.display())
            })?;
    }
    let producer = Producer::new(log.clone());
    let mut sent = 0u64;
    let mut batch: Vec<NewRecord> = Vec::with_capacity(1000);
    let flush = |batch: &mut Vec<NewRecord>, sent: &mut u64| -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len() as u64;
        producer
            .send_batch(&input.topic, std::mem::take(batch))
            .with_context(|| format!("cannot append to `{}` in {}", input.topic, dir.display()))?;
        *sent += n;
        Ok(())
    };
    let bar = progress(input.generate.unwrap_or(0), "produce");
    for r in records(input, encoder)? {
        let (key, value) = r?;
        batch.push(match key {
            Some(k) => NewRecord::new(k, value),
            None => NewRecord::value(value),
        });
        if batch.len() >= 1000 {
            flush(&mut batch, &mut sent)?;
            bar.set_position(sent);
        }
    }
    flush(&mut batch, &mut sent)?;
    bar.finish_and_clear();
    log.flush()
        .with_context(|| format!("cannot flush the log in {}", dir.display()))?;
    report(output, &input.topic, sent, &dir.display().to_string())?;
    Ok(())
}
