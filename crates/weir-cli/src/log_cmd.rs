//! `weir log …`: the embedded log without writing Rust.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::json;
use weir_core::{Record, TopicPartition};
use weir_log::{Log, LogOptions, ProblemKind, Repair};

use crate::util::{bytes_json, open_log, print_json, print_table, progress, Output};

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Create a log directory (if needed) and a topic in it.
    #[command(
        after_help = "Example:\n  weir log create /var/lib/weir --topic orders --partitions 3"
    )]
    Create {
        /// The log directory.
        dir: PathBuf,
        /// The topic to create (idempotent with the same partition count).
        #[arg(long)]
        topic: String,
        /// Its partition count.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
    },
    /// List the topics: partitions, records, bytes.
    #[command(after_help = "Example:\n  weir log topics /var/lib/weir --output json")]
    Topics {
        /// The log directory.
        dir: PathBuf,
    },
    /// Every partition's offsets (start, end), records, segments and bytes.
    #[command(after_help = "Example:\n  weir log describe /var/lib/weir --topic orders")]
    Describe {
        /// The log directory.
        dir: PathBuf,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
    },
    /// Append JSON lines (stdin or a file) or generated sample orders to a topic.
    #[command(
        after_help = "Examples:\n  weir log produce /var/lib/weir --topic orders --generate 1000\n  weir log produce /var/lib/weir --topic orders --key-field id < orders.jsonl"
    )]
    Produce {
        /// The log directory (created if missing).
        dir: PathBuf,
        #[command(flatten)]
        input: crate::produce::InputArgs,
    },
    /// Print records of a partition as JSON lines.
    #[command(
        after_help = "Example:\n  weir log consume /var/lib/weir --topic orders --partition 0 --offset 100 --max 10"
    )]
    Consume {
        /// The log directory.
        dir: PathBuf,
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Partition.
        #[arg(long, default_value_t = 0)]
        partition: i32,
        /// First offset (default: the partition's start).
        #[arg(long)]
        offset: Option<i64>,
        /// Most records to print.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Print every record of every partition (or one topic) as JSON lines.
    #[command(
        after_help = "Example:\n  weir log dump /var/lib/weir --topic orders > orders.jsonl"
    )]
    Dump {
        /// The log directory.
        dir: PathBuf,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
    },
    /// Read every batch of every segment, check every CRC, report torn tails and
    /// damage with file and byte position; `--repair` cuts a damaged partition after
    /// its last good batch, keeping a backup of the cut bytes beside the segment.
    ///
    /// Exit code 3 when damage is found and not repaired. The log must not be open
    /// in another process (stop the job first).
    #[command(
        after_help = "Examples:\n  weir log verify /var/lib/weir\n  weir log verify /var/lib/weir --repair"
    )]
    Verify {
        /// The log directory.
        dir: PathBuf,
        /// Truncate damaged partitions after their last good batch (backups are
        /// written first: `<segment>.cut-<unix ms>`).
        #[arg(long)]
        repair: bool,
    },
}

pub async fn run(cmd: LogCommand, output: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        LogCommand::Create {
            dir,
            topic,
            partitions,
        } => {
            let log = Log::open(&dir, LogOptions::default())
                .with_context(|| format!("cannot open or create the log in {}", dir.display()))?;
            log.create_topic(&topic, partitions)
                .with_context(|| format!("cannot create topic `{topic}` in {}", dir.display()))?;
            eprintln!(
                "topic `{topic}` with {partitions} partition(s) in {}",
                dir.display()
            );
        }
        LogCommand::Topics { dir } => topics(&dir, output)?,
        LogCommand::Describe { dir, topic } => describe(&dir, topic.as_deref(), output)?,
        LogCommand::Produce { dir, input } => {
            let log = Log::open(&dir, LogOptions::default())
                .with_context(|| format!("cannot open or create the log in {}", dir.display()))?;
            crate::produce::produce_to_log(&log, &input, None, output)?;
        }
        LogCommand::Consume {
            dir,
            topic,
            partition,
            offset,
            max,
        } => {
            let log = open_log(&dir)?;
            let tp = TopicPartition::new(topic.as_str(), partition);
            let (start, end) = log
                .offsets(&tp)
                .with_context(|| format!("no partition {tp} in {}", dir.display()))?;
            let from = offset.unwrap_or(start);
            if from < start || from > end {
                bail!(
                    "offset {from} is outside partition {tp}'s range [{start}, {end}] in {}",
                    dir.display()
                );
            }
            let mut out = std::io::stdout().lock();
            read_range(&log, &tp, from, end, max, &mut |r| {
                writeln!(out, "{}", record_json(r))?;
                Ok(())
            })?;
        }
        LogCommand::Dump { dir, topic } => dump(&dir, topic.as_deref())?,
        LogCommand::Verify { dir, repair } => return verify(&dir, repair, output),
    }
    Ok(ExitCode::SUCCESS)
}

fn partitions_of(
    log: &Log,
    topic: Option<&str>,
    dir: &Path,
) -> anyhow::Result<Vec<TopicPartition>> {
    let topics = log.topics();
    if let Some(t) = topic {
        if !topics.contains_key(t) {
            bail!(
                "topic `{t}` does not exist in {} (topics: {})",
                dir.display(),
                topics.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    Ok(topics
        .iter()
        .filter(|(name, _)| topic.is_none_or(|t| t == name.as_str()))
        .flat_map(|(name, n)| (0..*n).map(move |p| TopicPartition::new(name.as_str(), p)))
        .collect())
}

fn topics(dir: &Path, output: Output) -> anyhow::Result<()> {
    let log = open_log(dir)?;
    let mut rows = Vec::new();
    for (topic, n) in log.topics() {
        let (mut records, mut bytes) = (0i64, 0u64);
        for p in 0..n {
            let tp = TopicPartition::new(topic.as_str(), p);
            let (s, e) = log.offsets(&tp)?;
            records += e - s;
            bytes += log.size_bytes(&tp)?;
        }
        rows.push((topic, n, records, bytes));
    }
    match output {
        Output::Json => print_json(&json!(rows
            .iter()
            .map(|(t, n, r, b)| json!({"topic": t, "partitions": n, "records": r, "bytes": b}))
            .collect::<Vec<_>>()))?,
        Output::Text => print_table(
            &["TOPIC", "PARTITIONS", "RECORDS", "BYTES"],
            &rows
                .iter()
                .map(|(t, n, r, b)| vec![t.clone(), n.to_string(), r.to_string(), b.to_string()])
                .collect::<Vec<_>>(),
        ),
    }
    Ok(())
}

fn describe(dir: &Path, topic: Option<&str>, output: Output) -> anyhow::Result<()> {
    let log = open_log(dir)?;
    let mut rows = Vec::new();
    for tp in partitions_of(&log, topic, dir)? {
        let (s, e) = log.offsets(&tp)?;
        rows.push(json!({
            "topic": tp.topic(),
            "partition": tp.partition(),
            "log_start": s,
            "log_end": e,
            "records": e - s,
            "segments": log.segment_count(&tp)?,
            "bytes": log.size_bytes(&tp)?,
            "dir": log.partition_dir(&tp)?,
        }));
    }
    match output {
        Output::Json => print_json(&json!(rows))?,
        Output::Text => print_table(
            &[
                "TOPIC",
                "PARTITION",
                "START",
                "END",
                "RECORDS",
                "SEGMENTS",
                "BYTES",
            ],
            &rows
                .iter()
                .map(|r| {
                    [
                        "topic",
                        "partition",
                        "log_start",
                        "log_end",
                        "records",
                        "segments",
                        "bytes",
                    ]
                    .iter()
                    .map(|k| match &r[k] {
                        serde_json::Value::String(s) => s.clone(),
                        v => v.to_string(),
                    })
                    .collect()
                })
                .collect::<Vec<_>>(),
        ),
    }
    Ok(())
}

/// Calls `each` on the records of `tp` in `[from, end)`, at most `max` of them.
pub fn read_range(
    log: &Log,
    tp: &TopicPartition,
    from: i64,
    end: i64,
    max: usize,
    each: &mut dyn FnMut(&Record) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let mut at = from;
    let mut n = 0;
    while at < end && n < max {
        let batch = log
            .read(tp, at, (max - n).min(10_000), 4 << 20)
            .with_context(|| {
                format!("cannot read {tp} at offset {at} in {}", log.dir().display())
            })?;
        let Some(last) = batch.last() else { break };
        at = last.offset + 1;
        for r in &batch {
            each(r)?;
            n += 1;
        }
    }
    Ok(n)
}

/// A record as one JSON object: UTF-8 payloads as strings, others as `{"hex": …}`.
pub fn record_json(r: &Record) -> serde_json::Value {
    json!({
        "topic": &*r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": bytes_json(r.key.as_deref()),
        "value": bytes_json(r.value.as_deref()),
        "headers": r.headers.iter().map(|h| json!({"key": h.key, "value": bytes_json(h.value.as_deref())})).collect::<Vec<_>>(),
    })
}

fn dump(dir: &Path, topic: Option<&str>) -> anyhow::Result<()> {
    let log = open_log(dir)?;
    let parts = partitions_of(&log, topic, dir)?;
    let mut ranges = Vec::with_capacity(parts.len());
    let mut total = 0u64;
    for tp in parts {
        let (s, e) = log.offsets(&tp)?;
        total += (e - s) as u64;
        ranges.push((tp, s, e));
    }
    let bar = progress(total, "dump");
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (tp, s, e) in ranges {
        read_range(&log, &tp, s, e, usize::MAX, &mut |r| {
            writeln!(out, "{}", record_json(r))?;
            bar.inc(1);
            Ok(())
        })?;
    }
    out.flush()?;
    bar.finish_and_clear();
    Ok(())
}

fn verify(dir: &Path, repair: bool, output: Output) -> anyhow::Result<ExitCode> {
    crate::util::check_log_dir(dir)?;
    let mode = if repair { Repair::Cut } else { Repair::No };
    let bar = progress(0, if repair { "verify --repair" } else { "verify" });
    let report = weir_log::verify(dir, mode, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("cannot verify the log in {}", dir.display()))?;
    bar.finish_and_clear();
    let healthy = report.is_healthy();
    match output {
        Output::Json => print_json(&json!({
            "dir": report.dir,
            "healthy": healthy,
            "partitions": report.partitions.iter().map(|p| json!({
                "topic": p.topic,
                "partition": p.partition,
                "dir": p.dir,
                "segments": p.segments,
                "valid_bytes": p.valid_bytes,
                "log_start": p.log_start,
                "valid_end": p.valid_end,
                "problem": p.problem.as_ref().map(problem_json),
                "repair": p.repair.as_ref().map(|r| json!({
                    "truncated": r.truncated,
                    "truncated_to": r.truncated_to,
                    "backups": r.backups,
                    "cut_bytes": r.cut_bytes,
                    "next_offset": r.next_offset,
                })),
            })).collect::<Vec<_>>(),
            "other_problems": report.other_problems.iter().map(problem_json).collect::<Vec<_>>(),
        }))?,
        Output::Text => {
            for p in &report.partitions {
                let state = match (&p.problem, &p.repair) {
                    (None, _) => "ok".to_owned(),
                    (Some(x), None) if x.kind == ProblemKind::TornTail => {
                        "torn tail (recovery truncates it on open)".to_owned()
                    }
                    (Some(_), None) => "DAMAGED".to_owned(),
                    (Some(_), Some(r)) => format!("REPAIRED: now ends at offset {}", r.next_offset),
                };
                println!(
                    "{}/{}: {} segment(s), offsets {}..{} valid: {state}",
                    p.topic, p.partition, p.segments, p.log_start, p.valid_end
                );
                if let Some(x) = &p.problem {
                    println!("  {}", problem_text(x));
                }
                if let Some(r) = &p.repair {
                    println!(
                        "  records from offset {} on are no longer in the log: a job whose stored offset is beyond it will find its offset outside the log (see `weir offsets show`)",
                        r.next_offset
                    );
                    println!(
                        "  cut {} at byte {}; {} byte(s) saved in {}",
                        r.truncated.display(),
                        r.truncated_to,
                        r.cut_bytes,
                        r.backups
                            .iter()
                            .map(|b| b.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
            for x in &report.other_problems {
                println!("{}", problem_text(x));
            }
            if healthy {
                println!("{}: healthy", report.dir.display());
            } else {
                println!(
                    "{}: damaged; `weir log verify {} --repair` cuts each damaged partition after its last good batch (records from the damage on are moved to backup files, not deleted)",
                    report.dir.display(),
                    dir.display()
                );
            }
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn problem_json(p: &weir_log::Problem) -> serde_json::Value {
    json!({
        "kind": match p.kind { ProblemKind::TornTail => "torn_tail", ProblemKind::Damage => "damage" },
        "path": p.path,
        "position": p.position,
        "reason": p.reason,
        "valid_batch_after": p.valid_batch_after,
    })
}

fn problem_text(p: &weir_log::Problem) -> String {
    let kind = match p.kind {
        ProblemKind::TornTail => "torn tail",
        ProblemKind::Damage => "damage",
    };
    let mut s = format!(
        "{kind} in {} at byte {}: {}",
        p.path.display(),
        p.position,
        p.reason
    );
    if let Some(q) = p.valid_batch_after {
        s.push_str(&format!(" (a valid batch follows at byte {q})"));
    }
    s
}
