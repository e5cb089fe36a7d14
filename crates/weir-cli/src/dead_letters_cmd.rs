//! `weir dead-letters list|show|replay`.
//!
//! ## How a replay is done at most once (and, once finished, exactly once)
//! Replays are recorded in their own table, `weir_dead_letter_replays` (primary key
//! `(job, topic, partition, offset)`, created by the CLI), in three steps:
//!
//! 1. **record**: in one transaction, a row per chosen dead letter with its target
//!    partition, `scan_from` = that partition's end offset now, and `target_offset`
//!    NULL (pending);
//! 2. **append** the record to the target partition, with the header
//!    `weir-replay-of` = `{"job","topic","partition","offset"}`, fsynced (the
//!    embedded log) or acknowledged by every in-sync replica (Kafka: an idempotent
//!    producer with `acks=all`, one record at a time, so its offset is known);
//! 3. **confirm**: set `target_offset` in one transaction.
//!
//! One replay of a job runs at a time, into any target: it holds the database's
//! replay lock ([`weir_sql::admin::Admin::lock_replays`]: an advisory lock on
//! PostgreSQL and MySQL/MariaDB, a file lock beside a SQLite database) from before it
//! reads the dead letters until it has confirmed, checked before every append (and
//! into the embedded log, the log's exclusive lock too). Both are released when the
//! process dies. A dead letter with a confirmed
//! replay is never appended again. A pending one (a crash between 1 and 3) is
//! resolved on the next replay by reading the target partition from `scan_from` to
//! its end for the header: found, it is confirmed with that offset; not found, it was
//! never appended and is appended now. So a crash at any point leads to neither a
//! double nor a lost replay, as long as the records from `scan_from` on are still in
//! the log (retention could delete them only after the log had grown past them).
//! Into Kafka the same holds while the topic's retention keeps the records from
//! `scan_from` on; a record whose acknowledgement timed out stays pending and is
//! resolved the same way by the next replay.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::json;
use weir_core::{Header, TopicPartition};
use weir_log::{partition_for_key, Log, NewRecord};
use weir_sql::admin::{Admin, DeadLetterKey, DeadLetterRow, Replay};

use crate::log_cmd::read_range;
use crate::offsets_cmd::{table_name, unknown_job, DbArgs};
use crate::util::{
    bytes_json, bytes_text, open_log, print_json, print_table, progress, unhex, Output, Source,
};

/// The header a replayed record carries.
pub const REPLAY_HEADER: &str = "weir-replay-of";

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// List a job's dead letters: coordinates, stage, reason, replay.
    #[command(
        after_help = "Example:\n  weir dead-letters list --db sqlite:weir.db --job orders-to-db --output json"
    )]
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Show dead letters in full (key, value, headers, reason).
    #[command(
        after_help = "Example:\n  weir dead-letters show --db sqlite:weir.db --job orders-to-db --topic orders --partition 0 --offset 41"
    )]
    Show {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        select: Select,
    },
    /// Append chosen dead letters to a topic of the embedded log or Kafka (after a
    /// fix), each at most once: one already replayed is skipped (see the crate docs for
    /// how a crash mid-replay is resolved).
    #[command(
        after_help = "Examples:\n  weir dead-letters replay --db sqlite:weir.db --job orders-to-db --log /var/lib/weir --to-topic orders --all\n  weir dead-letters replay --db sqlite:weir.db --job orders-to-db --log /var/lib/weir --to-topic orders-retry --topic orders --partition 0 --offset 41,97\n  weir dead-letters replay --db postgres://app@db/prod --job orders-to-db --bootstrap kafka://broker:9092 --to-topic orders --all"
    )]
    Replay {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        select: Select,
        /// Every dead letter matching the filters (required unless --offset is given).
        #[arg(long)]
        all: bool,
        /// The embedded log to replay into.
        #[arg(long)]
        log: Option<PathBuf>,
        /// `log:///DIR` (the same as `--log DIR`), or Kafka's `kafka://host:port`
        /// (needs the `kafka` feature).
        #[arg(long)]
        bootstrap: Option<String>,
        /// The target topic (must exist in the log or broker).
        #[arg(long)]
        to_topic: String,
    },
}

#[derive(Debug, Args)]
pub struct Common {
    #[command(flatten)]
    db: DbArgs,
    /// The job.
    #[arg(long)]
    job: String,
    /// The dead-letter table (`schema.table` allowed).
    #[arg(long, default_value = "weir_dead_letters")]
    dead_letters_table: String,
    /// The table recording replays (created if missing).
    #[arg(long, default_value = "weir_dead_letter_replays")]
    replays_table: String,
}

/// Which dead letters.
#[derive(Debug, Args)]
pub struct Select {
    /// Source topic.
    #[arg(long)]
    topic: Option<String>,
    /// Source partition.
    #[arg(long)]
    partition: Option<i32>,
    /// Source offsets (comma-separated).
    #[arg(long, value_delimiter = ',')]
    offset: Option<Vec<i64>>,
}

impl Select {
    fn matches(&self, d: &DeadLetterRow) -> bool {
        self.topic.as_ref().is_none_or(|t| *t == d.topic)
            && self.partition.is_none_or(|p| p == d.partition)
            && self.offset.as_ref().is_none_or(|o| o.contains(&d.offset))
    }
}

async fn load(
    common: &Common,
    topic: Option<&str>,
    create_replays: bool,
) -> anyhow::Result<(Admin, Vec<DeadLetterRow>)> {
    let admin = admin_for(common, create_replays).await?;
    let rows = rows_of(&admin, common, topic).await?;
    Ok((admin, rows))
}

/// The admin on the job's database, with the replays table created if asked.
async fn admin_for(common: &Common, create_replays: bool) -> anyhow::Result<Admin> {
    let admin = common
        .db
        .admin()
        .await?
        .with_dead_letters_table(table_name(&common.dead_letters_table)?)
        .with_replays_table(table_name(&common.replays_table)?);
    let url = weir_sql::admin::redact_url(&common.db.db);
    if create_replays {
        admin.migrate_replays().await.with_context(|| {
            format!(
                "cannot create the replays table {} in {url}",
                common.replays_table
            )
        })?;
    }
    Ok(admin)
}

/// The job's dead letters (on `topic`, if given); an unknown job is an error.
async fn rows_of(
    admin: &Admin,
    common: &Common,
    topic: Option<&str>,
) -> anyhow::Result<Vec<DeadLetterRow>> {
    let url = weir_sql::admin::redact_url(&common.db.db);
    let rows = admin
        .dead_letters(&common.job, topic)
        .await
        .with_context(|| {
            format!(
                "cannot read the dead-letter table {} in {url}",
                common.dead_letters_table
            )
        })?;
    if rows.is_empty() {
        let known = admin.offsets(Some(&common.job)).await.unwrap_or_default();
        if known.is_empty() {
            bail!("{}", unknown_job(admin, &common.job, &common.db).await);
        }
    }
    Ok(rows)
}

fn replay_text(r: &Option<Replay>) -> String {
    match r {
        None => "-".into(),
        Some(Replay {
            target_topic,
            target_partition,
            target_offset: Some(o),
            ..
        }) => {
            format!("{target_topic}/{target_partition}@{o}")
        }
        Some(Replay {
            target_topic,
            target_partition,
            ..
        }) => {
            format!("pending to {target_topic}/{target_partition}")
        }
    }
}

fn replay_json(r: &Option<Replay>) -> serde_json::Value {
    match r {
        None => serde_json::Value::Null,
        Some(r) => json!({
            "target_topic": r.target_topic,
            "target_partition": r.target_partition,
            "target_offset": r.target_offset,
            "scan_from": r.scan_from,
            "replayed_at": r.replayed_at,
        }),
    }
}

fn letter_json(d: &DeadLetterRow, full: bool) -> serde_json::Value {
    let mut v = json!({
        "topic": d.topic,
        "partition": d.partition,
        "offset": d.offset,
        "stage": d.stage,
        "error": d.error,
        "at": d.at,
        "replay": replay_json(&d.replay),
    });
    if full {
        v["key"] = bytes_json(d.key.as_deref());
        v["value"] = bytes_json(d.value.as_deref());
        v["headers"] = d
            .headers
            .as_deref()
            .and_then(|h| serde_json::from_str(h).ok())
            .unwrap_or(serde_json::Value::Null);
    }
    v
}

pub async fn run(cmd: DeadLettersCommand, output: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        DeadLettersCommand::List { common } => {
            let (_, rows) = load(&common, None, false).await?;
            match output {
                Output::Json => print_json(&json!(rows
                    .iter()
                    .map(|d| letter_json(d, false))
                    .collect::<Vec<_>>()))?,
                Output::Text => print_table(
                    &[
                        "TOPIC",
                        "PARTITION",
                        "OFFSET",
                        "STAGE",
                        "AT",
                        "REPLAYED",
                        "ERROR",
                    ],
                    &rows
                        .iter()
                        .map(|d| {
                            vec![
                                d.topic.clone(),
                                d.partition.to_string(),
                                d.offset.to_string(),
                                d.stage.clone(),
                                d.at.clone().unwrap_or_default(),
                                replay_text(&d.replay),
                                d.error
                                    .chars()
                                    .take(100)
                                    .collect::<String>()
                                    .replace('\n', " "),
                            ]
                        })
                        .collect::<Vec<_>>(),
                ),
            }
        }
        DeadLettersCommand::Show { common, select } => {
            let (_, rows) = load(&common, select.topic.as_deref(), false).await?;
            let chosen: Vec<&DeadLetterRow> = rows.iter().filter(|d| select.matches(d)).collect();
            if chosen.is_empty() {
                bail!(
                    "no dead letter of job `{}` matches the selection",
                    common.job
                );
            }
            match output {
                Output::Json => print_json(&json!(chosen
                    .iter()
                    .map(|d| letter_json(d, true))
                    .collect::<Vec<_>>()))?,
                Output::Text => {
                    for d in chosen {
                        println!("{}/{}@{}", d.topic, d.partition, d.offset);
                        println!("  stage:    {}", d.stage);
                        println!("  at:       {}", d.at.as_deref().unwrap_or("-"));
                        println!("  error:    {}", d.error);
                        println!("  key:      {}", bytes_text(d.key.as_deref()));
                        println!("  value:    {}", bytes_text(d.value.as_deref()));
                        println!("  headers:  {}", d.headers.as_deref().unwrap_or("-"));
                        println!("  replayed: {}", replay_text(&d.replay));
                    }
                }
            }
        }
        DeadLettersCommand::Replay {
            common,
            select,
            all,
            log,
            bootstrap,
            to_topic,
        } => {
            if !all && select.offset.is_none() {
                bail!("choose what to replay: --offset N[,M…] (with --topic and --partition) or --all");
            }
            let Some(source) = Source::parse(log.as_deref(), bootstrap.as_deref())? else {
                bail!(
                    "give --log DIR, or --bootstrap log:///DIR | kafka://host:port, to replay into"
                );
            };
            let admin = admin_for(&common, true).await?;
            // The database's replay lock makes this the only replay of the job, into
            // any target, from before the dead letters are read until the replays
            // are confirmed (into the log the log's own lock is held as well).
            let Some(mut lock) = admin
                .lock_replays(&common.job)
                .await
                .context("cannot take the replay lock")?
            else {
                bail!(
                    "another replay of job `{}` is running (it holds the replay lock in {}); nothing was replayed",
                    common.job,
                    weir_sql::admin::redact_url(&common.db.db)
                );
            };
            let (target, partitions) = match source {
                Source::Log(dir) => {
                    let log = open_log(&dir)?;
                    let Some(&partitions) = log.topics().get(&to_topic) else {
                        bail!(
                            "topic `{to_topic}` does not exist in the log {}; create it first (`weir log create {} --topic {to_topic} --partitions N`)",
                            dir.display(),
                            dir.display()
                        );
                    };
                    (Target::Log(log), partitions)
                }
                #[cfg(feature = "kafka")]
                Source::Kafka(servers) => {
                    let replayer = crate::kafka::Replayer::new(&servers)?;
                    let Some(ranges) = replayer.ranges(&to_topic)? else {
                        bail!("topic `{to_topic}` does not exist in Kafka at {servers}; create it first");
                    };
                    let partitions = i32::try_from(ranges.len()).unwrap_or(i32::MAX);
                    (Target::Kafka(replayer), partitions)
                }
                #[cfg(not(feature = "kafka"))]
                Source::Kafka(servers) => bail!("{}", crate::util::no_kafka(&servers)),
            };
            let rows = rows_of(&admin, &common, select.topic.as_deref()).await?;
            let chosen: Vec<&DeadLetterRow> = rows.iter().filter(|d| select.matches(d)).collect();
            if chosen.is_empty() {
                bail!(
                    "no dead letter of job `{}` matches the selection",
                    common.job
                );
            }
            let summary = replay(
                &admin,
                &mut lock,
                &target,
                &common.job,
                &to_topic,
                partitions,
                &chosen,
            )
            .await?;
            match output {
                Output::Json => print_json(&summary)?,
                Output::Text => eprintln!(
                    "{} appended, {} already replayed (skipped), {} pending from an interrupted replay found in the log and confirmed",
                    summary["appended"], summary["skipped"], summary["recovered"]
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn key_of(d: &DeadLetterRow) -> DeadLetterKey {
    DeadLetterKey {
        topic: d.topic.clone(),
        partition: d.partition,
        offset: d.offset,
    }
}

fn marker(job: &str, k: &DeadLetterKey) -> String {
    json!({"job": job, "topic": k.topic, "partition": k.partition, "offset": k.offset}).to_string()
}

fn to_record(job: &str, d: &DeadLetterRow) -> anyhow::Result<NewRecord> {
    let mut headers = Vec::new();
    if let Some(h) = &d.headers {
        let parsed: Vec<serde_json::Value> = serde_json::from_str(h).with_context(|| {
            format!(
                "dead letter {}/{}@{} has unreadable headers {h}",
                d.topic, d.partition, d.offset
            )
        })?;
        for item in parsed {
            let key = item
                .get("key")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_owned();
            let value = match item.get("value_hex").and_then(|v| v.as_str()) {
                Some(hex) => Some(Bytes::from(unhex(hex).with_context(|| {
                    format!(
                        "dead letter {}/{}@{}: header `{key}` has bad hex",
                        d.topic, d.partition, d.offset
                    )
                })?)),
                None => None,
            };
            headers.push(Header { key, value });
        }
    }
    headers.push(Header::new(REPLAY_HEADER, marker(job, &key_of(d))));
    Ok(NewRecord {
        key: d.key.clone().map(Bytes::from),
        value: d.value.clone().map(Bytes::from),
        headers,
        timestamp: None,
    })
}

/// The target partition: by key like the producer (murmur2), else the source
/// partition (modulo the target's count).
fn target_partition(d: &DeadLetterRow, partitions: i32) -> i32 {
    match &d.key {
        Some(k) => partition_for_key(k, partitions),
        None => d.partition.rem_euclid(partitions.max(1)),
    }
}

/// Where a replay appends: the embedded log (held under its exclusive lock for the
/// whole replay) or Kafka (under the database's replay lock).
enum Target {
    Log(Log),
    #[cfg(feature = "kafka")]
    Kafka(crate::kafka::Replayer),
}

impl Target {
    /// `(first offset, end)` of `tp`.
    fn range(&self, tp: &TopicPartition) -> anyhow::Result<(i64, i64)> {
        match self {
            Target::Log(log) => log
                .offsets(tp)
                .with_context(|| format!("no partition {tp} in {}", log.dir().display())),
            #[cfg(feature = "kafka")]
            Target::Kafka(k) => k
                .ranges(tp.topic())?
                .and_then(|r| r.get(&tp.partition()).copied())
                .ok_or_else(|| anyhow::anyhow!("no partition {tp} in Kafka")),
        }
    }

    /// The replay markers (header values) found in `tp` from `from` to `end`, each
    /// with the offset of its first record.
    fn markers(
        &self,
        tp: &TopicPartition,
        from: i64,
        end: i64,
    ) -> anyhow::Result<BTreeMap<String, i64>> {
        let mut found: BTreeMap<String, i64> = BTreeMap::new();
        let mut note = |offset: i64, key: &str, value: Option<&[u8]>| {
            if key == REPLAY_HEADER {
                if let Some(v) = value.and_then(|v| std::str::from_utf8(v).ok()) {
                    found.entry(v.to_owned()).or_insert(offset);
                }
            }
        };
        match self {
            Target::Log(log) => {
                read_range(log, tp, from, end, usize::MAX, &mut |rec| {
                    for h in &rec.headers {
                        note(rec.offset, &h.key, h.value.as_deref());
                    }
                    Ok(())
                })?;
            }
            #[cfg(feature = "kafka")]
            Target::Kafka(k) => k.scan(
                tp.topic(),
                tp.partition(),
                from,
                end,
                &mut |offset, headers| {
                    for (key, value) in &headers {
                        note(offset, key, value.as_deref());
                    }
                },
            )?,
        }
        Ok(found)
    }

    /// Appends `record` to `tp` (fsynced, or acknowledged by every in-sync replica):
    /// its offset.
    fn append(&self, tp: &TopicPartition, record: &NewRecord) -> anyhow::Result<i64> {
        match self {
            Target::Log(log) => Ok(log.append(tp, std::slice::from_ref(record))?),
            #[cfg(feature = "kafka")]
            Target::Kafka(k) => k.append(tp.topic(), tp.partition(), record),
        }
    }

    fn flush(&self) -> anyhow::Result<()> {
        match self {
            Target::Log(log) => log
                .flush()
                .with_context(|| format!("cannot flush the log in {}", log.dir().display())),
            #[cfg(feature = "kafka")]
            Target::Kafka(_) => Ok(()), // every record was acknowledged one by one
        }
    }
}

async fn replay(
    admin: &Admin,
    lock: &mut weir_sql::admin::ReplayLock,
    target: &Target,
    job: &str,
    to_topic: &str,
    partitions: i32,
    chosen: &[&DeadLetterRow],
) -> anyhow::Result<serde_json::Value> {
    let mut skipped = 0u64;
    let mut pending: Vec<(&DeadLetterRow, Replay)> = Vec::new();
    let mut fresh: Vec<(&DeadLetterRow, Replay)> = Vec::new();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for d in chosen {
        match &d.replay {
            Some(r) if r.target_offset.is_some() => skipped += 1,
            Some(r) => pending.push((d, r.clone())),
            None => {
                let p = target_partition(d, partitions);
                let tp = TopicPartition::new(to_topic, p);
                // one lookup per partition (the lock keeps the end a lower bound of
                // where this run's copies land)
                let end = match ends.get(&p) {
                    Some(&e) => e,
                    None => {
                        let (_, e) = target.range(&tp)?;
                        ends.insert(p, e);
                        e
                    }
                };
                fresh.push((
                    d,
                    Replay {
                        target_topic: to_topic.to_owned(),
                        target_partition: p,
                        scan_from: end,
                        target_offset: None,
                        replayed_at: None,
                    },
                ))
            }
        }
    }
    // 1. Resolve replays an earlier run left pending: is the copy in the log?
    let mut recovered = 0u64;
    let mut to_append: Vec<(&DeadLetterRow, Replay)> = Vec::new();
    let mut confirmed: Vec<(DeadLetterKey, i64)> = Vec::new();
    let mut by_partition: BTreeMap<(String, i32), Vec<(&DeadLetterRow, Replay)>> = BTreeMap::new();
    for (d, r) in pending {
        by_partition
            .entry((r.target_topic.clone(), r.target_partition))
            .or_default()
            .push((d, r));
    }
    for ((topic, p), items) in by_partition {
        let tp = TopicPartition::new(topic.as_str(), p);
        let (start, end) = target.range(&tp)?;
        let from = items
            .iter()
            .map(|(_, r)| r.scan_from)
            .min()
            .unwrap_or(end)
            .max(start);
        let found = target.markers(&tp, from, end)?;
        for (d, r) in items {
            match found.get(&marker(job, &key_of(d))) {
                Some(&o) => {
                    confirmed.push((key_of(d), o));
                    recovered += 1;
                }
                None => to_append.push((d, r)),
            }
        }
    }
    // 2. Record the new replays as pending before anything is appended.
    if !fresh.is_empty() {
        let records: Vec<(DeadLetterKey, Replay)> =
            fresh.iter().map(|(d, r)| (key_of(d), r.clone())).collect();
        admin
            .record_replays(job, &records)
            .await
            .context("cannot record the replays; nothing was appended")?;
    }
    to_append.extend(fresh);
    // 3. Append, fsynced (the log's default durability fsyncs every append), each
    //    after checking that the replay lock is still held (a lost session would
    //    let another replay start).
    let bar = progress(to_append.len() as u64, "replay");
    let mut appended = 0u64;
    let mut failure = None;
    for (d, r) in &to_append {
        let tp = TopicPartition::new(r.target_topic.as_str(), r.target_partition);
        if let Err(e) = lock.check().await {
            failure = Some(anyhow::Error::new(e).context(
                "the replay lock was lost (its database session ended); stopping before the next append",
            ));
            break;
        }
        match target.append(&tp, &to_record(job, d)?) {
            Ok(offset) => {
                confirmed.push((key_of(d), offset));
                appended += 1;
                bar.inc(1);
            }
            Err(e) => {
                failure = Some(e.context(format!(
                    "cannot append the replay of {}/{}@{} to {tp}; it stays pending and the next replay resolves it",
                    d.topic, d.partition, d.offset
                )));
                break;
            }
        }
    }
    target.flush()?;
    bar.finish_and_clear();
    // 4. Confirm what is in the target, also when an append failed.
    if !confirmed.is_empty() {
        admin.confirm_replays(job, &confirmed).await.context(
            "the records were appended but confirming the replays failed; the next replay finds them in the target and confirms them without appending again",
        )?;
    }
    if let Some(e) = failure {
        return Err(e.context(format!(
            "{} replay(s) were appended and confirmed before this",
            confirmed.len()
        )));
    }
    Ok(json!({
        "appended": appended,
        "skipped": skipped,
        "recovered": recovered,
        "replays": confirmed.iter().map(|(k, o)| json!({
            "topic": k.topic, "partition": k.partition, "offset": k.offset, "target_offset": o,
        })).collect::<Vec<_>>(),
    }))
}
