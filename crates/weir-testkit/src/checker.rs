//! The independent exactly-once checker.
//!
//! It compares the input log with what a job left in the database, record by record,
//! and shares no code with the sink it checks: it reads the tables with its own SQL
//! (through sqlx directly, not weir-sql) and the input through any
//! [`Consumer`](weir_core::Consumer).
//!
//! 1. Consumed prefix: per partition, the records with offset < the stored
//!    `next_offset`.
//! 2. Per record: duplicates (more than one row per coordinate and ordinal), lost (a
//!    good record without its rows), DLQ missing / duplicated, misrouted (good record
//!    in the DLQ, bad record in the sink), corrupt (payload differs from the reference).
//! 3. Phantoms: rows or dead letters beyond the stored offset or not in the log.
//! 4. Offsets: a stored `next_offset` beyond the log end.
//! 5. Commit chain (when the job tags its transactions): ranges contiguous and
//!    disjoint, epochs never decreasing.
//!
//! The [`Report`] serialises to JSON with every counter and the first examples of each
//! anomaly; a run is valid only if every anomaly counter is 0.
//!
//! ```
//! use weir_testkit::checker::{check, Expected, InputRecord, Inputs, OffsetRow, SinkRow};
//! let input = vec![InputRecord::new("t", 0, 0, None, Some(b"a".to_vec()))];
//! let sink = vec![SinkRow { topic: "t".into(), partition: 0, offset: 0, ordinal: 0, payload: "a".into() }];
//! let offsets = vec![OffsetRow { topic: "t".into(), partition: 0, next_offset: Some(1), epoch: 1 }];
//! let report = check(
//!     &Inputs { input: &input, sink: &sink, dlq: &[], offsets: &offsets, commits: None },
//!     |r| Expected::Rows(vec![String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()]),
//! );
//! assert!(report.is_valid(), "{}", report.to_json());
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;
use weir_core::{Consumer, Offset, TopicPartition};

/// How many examples of each anomaly the report keeps.
pub const EXAMPLES: usize = 5;

/// One record of the input log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
}

impl InputRecord {
    /// A record.
    pub fn new(
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
    ) -> Self {
        Self {
            topic: topic.to_owned(),
            partition,
            offset,
            key,
            value,
        }
    }
}

/// One row the sink wrote, with the coordinates of its source record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkRow {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Position among the source record's outputs.
    pub ordinal: i64,
    /// The row's content, as the reference function renders it.
    pub payload: String,
}

/// One dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DlqRow {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// One row of the offsets table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetRow {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Stored next offset.
    pub next_offset: Option<i64>,
    /// Epoch.
    pub epoch: i64,
}

/// One committed transaction's range for one partition (when the job tags them), in
/// commit order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitRow {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The offset the commit started from (the previous `next_offset`), `None` for
    /// the first commit after an empty row.
    pub from: Option<i64>,
    /// The `next_offset` it stored.
    pub to: i64,
    /// The committing owner's epoch.
    pub epoch: i64,
}

/// What the reference says a record must become.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// These rows, by ordinal (payloads as [`SinkRow::payload`]).
    Rows(Vec<String>),
    /// One dead letter, no rows.
    Dead,
}

/// Everything the checker compares.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The input log, from its beginning to its end.
    pub input: &'a [InputRecord],
    /// The sink's rows.
    pub sink: &'a [SinkRow],
    /// The dead letters.
    pub dlq: &'a [DlqRow],
    /// The offsets table (of the checked job).
    pub offsets: &'a [OffsetRow],
    /// The commit chain, if the job tags its transactions.
    pub commits: Option<&'a [CommitRow]>,
}

/// Counters; every field but the first five is an anomaly and must be 0.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    /// Records in the input log.
    pub input_records: u64,
    /// Records below the stored offsets.
    pub consumed: u64,
    /// Rows in the sink.
    pub sink_rows: u64,
    /// Dead letters.
    pub dlq_rows: u64,
    /// Commit-chain entries checked.
    pub commits: u64,
    /// Extra rows for a coordinate and ordinal.
    pub duplicates: u64,
    /// Consumed good records (or ordinals) without a row.
    pub lost: u64,
    /// Consumed bad records without a dead letter.
    pub dlq_missing: u64,
    /// Extra dead letters for a record.
    pub dlq_duplicates: u64,
    /// Good records in the DLQ or bad records in the sink.
    pub misrouted: u64,
    /// Rows whose payload differs from the reference.
    pub corrupt: u64,
    /// Rows or dead letters beyond the stored offset or not in the log.
    pub phantoms: u64,
    /// Stored offsets beyond the log end.
    pub offset_beyond_log: u64,
    /// Commits that did not start where the previous one ended.
    pub chain_gaps: u64,
    /// Commits overlapping an earlier one.
    pub chain_overlaps: u64,
    /// Commits with a smaller epoch than an earlier one.
    pub epoch_decreases: u64,
}

/// The checker's verdict.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The counters.
    pub counters: Counters,
    /// The first examples of each anomaly, by counter name.
    pub examples: BTreeMap<String, Vec<String>>,
}

impl Report {
    /// The sum of the anomaly counters.
    pub fn anomalies(&self) -> u64 {
        let c = &self.counters;
        c.duplicates
            + c.lost
            + c.dlq_missing
            + c.dlq_duplicates
            + c.misrouted
            + c.corrupt
            + c.phantoms
            + c.offset_beyond_log
            + c.chain_gaps
            + c.chain_overlaps
            + c.epoch_decreases
    }

    /// Whether every anomaly counter is 0.
    pub fn is_valid(&self) -> bool {
        self.anomalies() == 0
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    pub(crate) fn note(&mut self, what: &str, example: String) {
        let v = self.examples.entry(what.to_owned()).or_default();
        if v.len() < EXAMPLES {
            v.push(example);
        }
    }
}

type Key = (String, i32, i64);

/// Compare. `reference` gives each input record's expected outcome.
pub fn check(inputs: &Inputs<'_>, reference: impl Fn(&InputRecord) -> Expected) -> Report {
    let mut rep = Report::default();
    rep.counters.input_records = inputs.input.len() as u64;
    rep.counters.sink_rows = inputs.sink.len() as u64;
    rep.counters.dlq_rows = inputs.dlq.len() as u64;

    let stored: HashMap<(String, i32), i64> = inputs
        .offsets
        .iter()
        .map(|o| {
            (
                (o.topic.clone(), o.partition),
                o.next_offset.unwrap_or(i64::MIN),
            )
        })
        .collect();
    let mut log_end: HashMap<(String, i32), i64> = HashMap::new();
    let mut in_log: HashMap<Key, &InputRecord> = HashMap::new();
    for r in inputs.input {
        let e = log_end.entry((r.topic.clone(), r.partition)).or_insert(0);
        *e = (*e).max(r.offset + 1);
        in_log.insert((r.topic.clone(), r.partition, r.offset), r);
    }
    let mut rows: HashMap<Key, BTreeMap<i64, Vec<&SinkRow>>> = HashMap::new();
    for s in inputs.sink {
        rows.entry((s.topic.clone(), s.partition, s.offset))
            .or_default()
            .entry(s.ordinal)
            .or_default()
            .push(s);
    }
    let mut dead: HashMap<Key, u64> = HashMap::new();
    for d in inputs.dlq {
        *dead
            .entry((d.topic.clone(), d.partition, d.offset))
            .or_default() += 1;
    }
    let consumed = |k: &Key| stored.get(&(k.0.clone(), k.1)).is_some_and(|n| k.2 < *n);

    for r in inputs.input {
        let k: Key = (r.topic.clone(), r.partition, r.offset);
        let at = format!("{}/{}@{}", r.topic, r.partition, r.offset);
        if !consumed(&k) {
            continue;
        }
        rep.counters.consumed += 1;
        let got_rows = rows.get(&k);
        let got_dead = dead.get(&k).copied().unwrap_or(0);
        match reference(r) {
            Expected::Rows(want) => {
                if got_dead > 0 {
                    rep.counters.misrouted += 1;
                    rep.note("misrouted", format!("{at}: good record in the DLQ"));
                }
                for (ordinal, payload) in want.iter().enumerate() {
                    let ordinal = ordinal as i64;
                    match got_rows.and_then(|m| m.get(&ordinal)) {
                        None => {
                            rep.counters.lost += 1;
                            rep.note("lost", format!("{at} ordinal {ordinal}"));
                        }
                        Some(v) => {
                            if v.len() > 1 {
                                rep.counters.duplicates += v.len() as u64 - 1;
                                rep.note(
                                    "duplicates",
                                    format!("{at} ordinal {ordinal}: {} rows", v.len()),
                                );
                            }
                            if v.iter().any(|s| &s.payload != payload) {
                                rep.counters.corrupt += 1;
                                rep.note(
                                    "corrupt",
                                    format!(
                                        "{at} ordinal {ordinal}: want {payload:?}, got {:?}",
                                        v[0].payload
                                    ),
                                );
                            }
                        }
                    }
                }
                if let Some(m) = got_rows {
                    let extra: usize = m
                        .range(want.len() as i64..)
                        .map(|(_, v)| v.len())
                        .sum::<usize>()
                        + m.range(..0).map(|(_, v)| v.len()).sum::<usize>();
                    if extra > 0 {
                        rep.counters.corrupt += extra as u64;
                        rep.note(
                            "corrupt",
                            format!("{at}: {extra} rows with unexpected ordinals"),
                        );
                    }
                }
            }
            Expected::Dead => {
                if let Some(m) = got_rows {
                    rep.counters.misrouted += 1;
                    rep.note(
                        "misrouted",
                        format!(
                            "{at}: bad record has {} rows in the sink",
                            m.values().map(Vec::len).sum::<usize>()
                        ),
                    );
                }
                match got_dead {
                    0 => {
                        rep.counters.dlq_missing += 1;
                        rep.note("dlq_missing", at);
                    }
                    1 => {}
                    n => {
                        rep.counters.dlq_duplicates += n - 1;
                        rep.note("dlq_duplicates", format!("{at}: {n} dead letters"));
                    }
                }
            }
        }
    }
    // phantoms: outputs of records not consumed or not in the log
    for (k, m) in &rows {
        if !in_log.contains_key(k) || !consumed(k) {
            let n: usize = m.values().map(Vec::len).sum();
            rep.counters.phantoms += n as u64;
            rep.note(
                "phantoms",
                format!(
                    "{}/{}@{}: {n} rows beyond the stored offset or not in the log",
                    k.0, k.1, k.2
                ),
            );
        }
    }
    for (k, n) in &dead {
        if !in_log.contains_key(k) || !consumed(k) {
            rep.counters.phantoms += n;
            rep.note(
                "phantoms",
                format!(
                    "{}/{}@{}: dead letter beyond the stored offset or not in the log",
                    k.0, k.1, k.2
                ),
            );
        }
    }
    for o in inputs.offsets {
        let end = log_end
            .get(&(o.topic.clone(), o.partition))
            .copied()
            .unwrap_or(0);
        if o.next_offset.is_some_and(|n| n > end) {
            rep.counters.offset_beyond_log += 1;
            rep.note(
                "offset_beyond_log",
                format!(
                    "{}/{}: next_offset {:?}, log end {end}",
                    o.topic, o.partition, o.next_offset
                ),
            );
        }
    }
    if let Some(commits) = inputs.commits {
        let mut last: HashMap<(String, i32), (i64, i64)> = HashMap::new();
        for c in commits {
            rep.counters.commits += 1;
            let key = (c.topic.clone(), c.partition);
            let at = format!(
                "{}/{} {:?}..{} epoch {}",
                c.topic, c.partition, c.from, c.to, c.epoch
            );
            if let Some((prev_to, prev_epoch)) = last.get(&key).copied() {
                match c.from {
                    Some(f) if f < prev_to => {
                        rep.counters.chain_overlaps += 1;
                        rep.note("chain_overlaps", format!("{at} after ..{prev_to}"));
                    }
                    Some(f) if f > prev_to => {
                        rep.counters.chain_gaps += 1;
                        rep.note("chain_gaps", format!("{at} after ..{prev_to}"));
                    }
                    None => {
                        rep.counters.chain_overlaps += 1;
                        rep.note(
                            "chain_overlaps",
                            format!("{at}: restarted from nothing after ..{prev_to}"),
                        );
                    }
                    Some(_) => {}
                }
                if c.epoch < prev_epoch {
                    rep.counters.epoch_decreases += 1;
                    rep.note("epoch_decreases", format!("{at} after epoch {prev_epoch}"));
                }
            }
            last.insert(key, (c.to, c.epoch));
        }
    }
    rep
}

/// Read a whole input log through `consumer` (standalone `assign`, from the beginning
/// to the end offsets seen at the start).
pub async fn read_input(
    consumer: &mut dyn Consumer,
    partitions: &[TopicPartition],
    patience: Duration,
) -> anyhow::Result<Vec<InputRecord>> {
    consumer.assign(partitions).await?;
    let mut ends = BTreeMap::new();
    for tp in partitions {
        let (_, end) = consumer.watermarks(tp).await?;
        ends.insert(tp.clone(), end);
        consumer.seek(tp, Offset::Beginning)?;
    }
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + patience;
    loop {
        let mut done = true;
        for (tp, end) in &ends {
            if consumer.position(tp).await? < *end {
                done = false;
            }
        }
        if done {
            break;
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("reading the input log did not reach its end within {patience:?}");
        }
        let batch = consumer.poll(Duration::from_millis(200)).await?;
        for r in batch {
            let tp = r.topic_partition();
            if ends.get(&tp).is_some_and(|end| r.offset < *end) {
                out.push(InputRecord {
                    topic: r.topic.to_string(),
                    partition: r.partition,
                    offset: r.offset,
                    key: r.key.map(|b| b.to_vec()),
                    value: r.value.map(|b| b.to_vec()),
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    out.dedup_by(|a, b| a.topic == b.topic && a.partition == b.partition && a.offset == b.offset);
    Ok(out)
}

/// Where the job's tables are and which columns hold what.
#[derive(Clone, Debug)]
pub struct TableSpec {
    /// The job (key of offsets and dead-letter rows).
    pub job: String,
    /// The sink table.
    pub sink_table: String,
    /// Sink columns: source topic (or `None`: all rows are of `topic`), partition,
    /// offset, ordinal, payload (any SQL expression over the row, cast to text).
    pub sink_topic: Option<String>,
    /// The topic when the sink has no topic column.
    pub topic: String,
    /// Partition column.
    pub sink_partition: String,
    /// Offset column.
    pub sink_offset: String,
    /// Ordinal column (or `None`: always 0).
    pub sink_ordinal: Option<String>,
    /// Payload expression.
    pub sink_payload: String,
    /// Dead-letter table.
    pub dlq_table: String,
    /// Offsets table.
    pub offsets_table: String,
}

/// The tables a job left behind, as the checker reads them.
#[derive(Clone, Debug, Default)]
pub struct Tables {
    /// Sink rows.
    pub sink: Vec<SinkRow>,
    /// Dead letters.
    pub dlq: Vec<DlqRow>,
    /// Offsets rows of the job.
    pub offsets: Vec<OffsetRow>,
}

/// A database the checker reads (`postgres://`, `mysql://`, `sqlite://`).
#[derive(Debug, Clone)]
pub enum Db {
    /// PostgreSQL.
    Postgres(sqlx::PgPool),
    /// MySQL / MariaDB.
    MySql(sqlx::MySqlPool),
    /// SQLite.
    Sqlite(sqlx::SqlitePool),
}

macro_rules! read_all {
    ($pool:expr, $q:expr, $cast_int:expr, $cast_text:expr, $quote:expr) => {{
        let pool = $pool;
        let spec: &TableSpec = $q;
        let ci = |e: &str| format!($cast_int, e);
        let ct = |e: &str| format!($cast_text, e);
        let qi = |s: &str| {
            format!(
                "{0}{1}{0}",
                $quote,
                s.replace($quote, &format!("{0}{0}", $quote))
            )
        };
        let lit = |s: &str| format!("'{}'", s.replace('\'', "''").replace('\\', "\\\\"));
        let topic = spec
            .sink_topic
            .as_deref()
            .map(|c| ct(c))
            .unwrap_or_else(|| lit(&spec.topic));
        let ordinal = spec
            .sink_ordinal
            .as_deref()
            .map(|c| ci(c))
            .unwrap_or_else(|| "0".to_owned());
        let q = format!(
            "SELECT {topic}, {}, {}, {ordinal}, {} FROM {}",
            ci(&spec.sink_partition),
            ci(&spec.sink_offset),
            ct(&spec.sink_payload),
            spec.sink_table
        );
        let sink: Vec<(String, i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(q))
            .fetch_all(pool)
            .await?;
        let q = format!(
            "SELECT {}, {}, {} FROM {} WHERE {} = {}",
            ct(&qi("topic")),
            ci(&qi("partition")),
            ci(&qi("offset")),
            spec.dlq_table,
            qi("job"),
            lit(&spec.job)
        );
        let dlq: Vec<(String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(q))
            .fetch_all(pool)
            .await?;
        let q = format!(
            "SELECT {}, {}, {}, {} FROM {} WHERE {} = {}",
            ct(&qi("topic")),
            ci(&qi("partition")),
            ci(&qi("next_offset")),
            ci(&qi("epoch")),
            spec.offsets_table,
            qi("job"),
            lit(&spec.job)
        );
        let offsets: Vec<(String, i64, Option<i64>, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(q))
            .fetch_all(pool)
            .await?;
        Tables {
            sink: sink
                .into_iter()
                .map(|(topic, p, offset, ordinal, payload)| SinkRow {
                    topic,
                    partition: p as i32,
                    offset,
                    ordinal,
                    payload,
                })
                .collect(),
            dlq: dlq
                .into_iter()
                .map(|(topic, p, offset)| DlqRow {
                    topic,
                    partition: p as i32,
                    offset,
                })
                .collect(),
            offsets: offsets
                .into_iter()
                .map(|(topic, p, next_offset, epoch)| OffsetRow {
                    topic,
                    partition: p as i32,
                    next_offset,
                    epoch,
                })
                .collect(),
        }
    }};
}

impl Db {
    /// Connect by URL.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        let scheme = url.split(':').next().unwrap_or("");
        Ok(match scheme {
            "postgres" | "postgresql" => Db::Postgres(sqlx::PgPool::connect(url).await?),
            "mysql" | "mariadb" => Db::MySql(sqlx::MySqlPool::connect(url).await?),
            "sqlite" => {
                let opts: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
                let opts = opts
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(10));
                Db::Sqlite(sqlx::SqlitePool::connect_with(opts).await?)
            }
            other => anyhow::bail!("unsupported database scheme `{other}`"),
        })
    }

    /// Read the sink rows, dead letters and offsets described by `spec`. Table names
    /// in `spec` are used as written (quote them there if needed).
    pub async fn read(&self, spec: &TableSpec) -> anyhow::Result<Tables> {
        Ok(match self {
            Db::Postgres(p) => read_all!(p, spec, "CAST({} AS BIGINT)", "CAST({} AS TEXT)", "\""),
            Db::MySql(p) => read_all!(p, spec, "CAST({} AS SIGNED)", "CAST({} AS CHAR)", "`"),
            Db::Sqlite(p) => read_all!(p, spec, "CAST({} AS INTEGER)", "CAST({} AS TEXT)", "\""),
        })
    }

    /// The stored next offsets of `job` in `offsets_table` (as written, quote it there
    /// if needed), by (topic, partition).
    pub async fn next_offsets(
        &self,
        job: &str,
        offsets_table: &str,
    ) -> anyhow::Result<BTreeMap<(String, i32), Option<i64>>> {
        let lit = format!("'{}'", job.replace('\'', "''"));
        let rows: Vec<(String, i64, Option<i64>)> = match self {
            Db::Postgres(p) => {
                let q = format!("SELECT CAST(\"topic\" AS TEXT), CAST(\"partition\" AS BIGINT), CAST(\"next_offset\" AS BIGINT) FROM {offsets_table} WHERE \"job\" = {lit}");
                sqlx::query_as(sqlx::AssertSqlSafe(q)).fetch_all(p).await?
            }
            Db::MySql(p) => {
                let q = format!("SELECT CAST(`topic` AS CHAR), CAST(`partition` AS SIGNED), CAST(`next_offset` AS SIGNED) FROM {offsets_table} WHERE `job` = {lit}");
                sqlx::query_as(sqlx::AssertSqlSafe(q)).fetch_all(p).await?
            }
            Db::Sqlite(p) => {
                let q = format!("SELECT CAST(\"topic\" AS TEXT), CAST(\"partition\" AS INTEGER), CAST(\"next_offset\" AS INTEGER) FROM {offsets_table} WHERE \"job\" = {lit}");
                sqlx::query_as(sqlx::AssertSqlSafe(q)).fetch_all(p).await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(t, p, n)| ((t, p as i32), n))
            .collect())
    }
}
