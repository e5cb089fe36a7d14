//! `weir produce` and `weir log produce`: JSON lines or generated sample orders into
//! a topic of the embedded log.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use weir_log::{Log, LogOptions, NewRecord, Producer};

use crate::util::{log_location, print_json, progress, Output};

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
    after_help = "Examples:\n  weir produce --log /var/lib/weir --topic orders --generate 10000 --partitions 3\n  weir produce --log /var/lib/weir --topic orders --key-field id --input orders.jsonl"
)]
pub struct ProduceArgs {
    /// The embedded log's directory (created if missing).
    #[arg(long, required_unless_present = "bootstrap")]
    pub log: Option<PathBuf>,
    /// `log:///DIR` (the same as `--log DIR`); Kafka is not built into this CLI yet.
    #[arg(long)]
    pub bootstrap: Option<String>,
    #[command(flatten)]
    pub input: InputArgs,
}

pub async fn run(args: ProduceArgs, output: Output) -> anyhow::Result<ExitCode> {
    let Some(dir) = log_location(args.log.as_deref(), args.bootstrap.as_deref())? else {
        bail!("give --log DIR or --bootstrap log:///DIR");
    };
    let log = Log::open(&dir, LogOptions::default())
        .with_context(|| format!("cannot open or create the log in {}", dir.display()))?;
    produce_to_log(&log, &args.input, output)?;
    Ok(ExitCode::SUCCESS)
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
pub fn produce_to_log(log: &Log, input: &InputArgs, output: Output) -> anyhow::Result<()> {
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
    if let Some(n) = input.generate {
        let bar = progress(n, "produce");
        for i in 0..n {
            let (key, value) = sample_order(i);
            batch.push(NewRecord::new(key, value));
            if batch.len() >= 1000 {
                flush(&mut batch, &mut sent)?;
                bar.set_position(sent);
            }
        }
        flush(&mut batch, &mut sent)?;
        bar.finish_and_clear();
    } else {
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
        let bar = progress(0, "produce");
        for (i, line) in reader.lines().enumerate() {
            let line_no = i + 1;
            let line = line.with_context(|| format!("cannot read line {line_no} of {source}"))?;
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("line {line_no} of {source} is not JSON"))?;
            let record = match &input.key_field {
                Some(f) => NewRecord::new(
                    key_of(line_no, &v, f).with_context(|| format!("in {source}"))?,
                    line,
                ),
                None => NewRecord::value(line),
            };
            batch.push(record);
            if batch.len() >= 1000 {
                flush(&mut batch, &mut sent)?;
                bar.set_position(sent);
            }
        }
        flush(&mut batch, &mut sent)?;
        bar.finish_and_clear();
    }
    log.flush()
        .with_context(|| format!("cannot flush the log in {}", dir.display()))?;
    match output {
        Output::Json => print_json(&serde_json::json!({"topic": input.topic, "records": sent}))?,
        Output::Text => eprintln!(
            "{sent} record(s) appended to `{}` in {}",
            input.topic,
            dir.display()
        ),
    }
    Ok(())
}
