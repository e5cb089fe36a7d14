//! `weir offsets show|reset`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{ArgGroup, Args, Subcommand};
use serde_json::json;
use weir_sql::admin::{Admin, NewOffset, OffsetRow};
use weir_sql::TableName;

use crate::util::{connect, print_json, print_table, Output, Source};

#[derive(Debug, Subcommand)]
pub enum OffsetsCommand {
    /// The stored offsets: topic, partition, next_offset, epoch, owner, updated_at.
    #[command(
        after_help = "Examples:\n  weir offsets show --db postgres://app@db:5432/prod --job orders-to-db\n  weir offsets show --db sqlite:weir.db --output json"
    )]
    Show {
        #[command(flatten)]
        db: DbArgs,
        /// Only this job (an error if it has no stored offsets).
        #[arg(long)]
        job: Option<String>,
        /// The embedded log the job reads: adds each partition's log end and lag
        /// (end - next_offset), read without the log's lock.
        #[arg(long)]
        log: Option<PathBuf>,
        /// `log:///DIR` (the same as `--log DIR`), or Kafka's `kafka://host:port`
        /// (watermarks; needs the `kafka` feature).
        #[arg(long)]
        bootstrap: Option<String>,
    },
    /// Move a job's offsets on a topic. Without `--execute` only prints before and
    /// after. Executing sets next_offset and bumps each partition's epoch in one
    /// transaction: a running job holding a partition is fenced (its next commit is
    /// refused; it resumes from the new offset when it claims the partition again),
    /// never silently overwritten. New offsets must lie within the log's range.
    #[command(
        group(ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_offset", "shift_by", "to_datetime"])),
        after_help = "Examples:\n  weir offsets reset --db sqlite:weir.db --job orders-to-db --topic orders --to-earliest --log /var/lib/weir\n  weir offsets reset --db sqlite:weir.db --job orders-to-db --topic orders --shift-by -100 --partitions 0,2 --log /var/lib/weir --execute\n  weir offsets reset --db postgres://app@db/prod --job orders-to-db --topic orders --to-datetime 2026-12-01T08:00:00Z --bootstrap kafka://broker:9092\n\nMoving back processes records again (the sink sees them a second time); moving forward skips records."
    )]
    Reset {
        #[command(flatten)]
        db: DbArgs,
        /// The job (its name keys the offsets rows).
        #[arg(long)]
        job: String,
        /// The topic.
        #[arg(long)]
        topic: String,
        /// To each partition's first offset in the log.
        #[arg(long)]
        to_earliest: bool,
        /// To each partition's end (skip everything not processed yet).
        #[arg(long)]
        to_latest: bool,
        /// To this offset.
        #[arg(long, allow_hyphen_values = true)]
        to_offset: Option<i64>,
        /// By this many records from the stored offset (negative: back).
        #[arg(long, allow_hyphen_values = true)]
        shift_by: Option<i64>,
        /// To each partition's first record whose timestamp is at or after this time
        /// (its end if every record is older): RFC 3339 (`2026-12-01T08:00:00+01:00`),
        /// or `2026-12-01T08:00:00[.sss]` / `2026-12-01` read as UTC.
        #[arg(long, value_name = "TIME", value_parser = parse_datetime)]
        to_datetime: Option<i64>,
        /// Only these partitions (comma-separated); default: every partition of the
        /// topic in the log.
        #[arg(long, value_delimiter = ',')]
        partitions: Option<Vec<i32>>,
        /// The embedded log's directory, for the partitions' offset ranges.
        #[arg(long)]
        log: Option<PathBuf>,
        /// `log:///DIR` (the same as `--log DIR`), or Kafka's `kafka://host:port`
        /// (watermarks; needs the `kafka` feature).
        #[arg(long)]
        bootstrap: Option<String>,
        /// Apply the reset (default: dry run, nothing changes).
        #[arg(long)]
        execute: bool,
    },
}

/// `weir lag`: a job's lag per partition, once or every few seconds.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  weir lag --db sqlite:weir.db --job orders-to-db --log /var/lib/weir\n  weir lag --db postgres://app@db/prod --job orders-to-db --bootstrap kafka://broker:9092 --watch 5\n\nThe lag is the log's end minus the next_offset stored in the job's database (weir's truth), not Kafka's committed offsets."
)]
pub struct LagArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The job (its name keys the offsets rows).
    #[arg(long)]
    job: String,
    /// The embedded log the job reads (read without the log's lock).
    #[arg(long)]
    log: Option<PathBuf>,
    /// `log:///DIR`, or Kafka's `kafka://host:port` (needs the `kafka` feature).
    #[arg(long)]
    bootstrap: Option<String>,
    /// Print again every this many seconds until Ctrl-C.
    #[arg(long, value_name = "SECONDS")]
    watch: Option<u64>,
}

/// Run `weir lag`.
pub async fn lag(args: LagArgs, output: Output) -> anyhow::Result<ExitCode> {
    if args.log.is_none() && args.bootstrap.is_none() {
        bail!("weir lag needs the log's end: give --log DIR or --bootstrap URL");
    }
    if args.watch == Some(0) {
        bail!("--watch takes a number of seconds above 0");
    }
    loop {
        if args.watch.is_some() && matches!(output, Output::Text) {
            println!("{}", watch_header());
        }
        let show = OffsetsCommand::Show {
            db: args.db.clone(),
            job: Some(args.job.clone()),
            log: args.log.clone(),
            bootstrap: args.bootstrap.clone(),
        };
        let code = Box::pin(run(show, output)).await?;
        let Some(every) = args.watch else {
            return Ok(code);
        };
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(every)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(code),
        }
    }
}

/// Seconds since the epoch, as a header line of `--watch` (no date library needed).
fn watch_header() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("-- lag at unix time {secs}")
}

/// The database and the offsets table.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// The job's database: postgres://…, sqlite:PATH, mysql://… or mariadb://….
    #[arg(long, env = "WEIR_DB")]
    pub db: String,
    /// The offsets table (`schema.table` allowed).
    #[arg(long, default_value = "weir_offsets")]
    pub offsets_table: String,
    /// Seconds to wait for an unreachable database before giving up.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
}

pub fn table_name(name: &str) -> anyhow::Result<TableName> {
    let t = match name.split_once('.') {
        Some((schema, table)) => TableName::new(table)?.with_schema(schema)?,
        None => TableName::new(name)?,
    };
    Ok(t)
}

impl DbArgs {
    pub async fn admin(&self) -> anyhow::Result<Admin> {
        Ok(connect(
            &self.db,
            std::time::Duration::from_secs(self.connect_timeout),
        )
        .await?
        .with_offsets_table(table_name(&self.offsets_table)?))
    }
}

/// What a reset moves to.
#[derive(Clone, Debug)]
pub enum Target {
    Earliest,
    Latest,
    Offset(i64),
    ShiftBy(i64),
    /// `--to-datetime`: the time (ms since the Unix epoch) and, per partition, the
    /// offset the log or broker answered for it.
    AtTime {
        ms: i64,
        offsets: BTreeMap<i32, i64>,
    },
}

/// `--to-datetime`: milliseconds since the Unix epoch (not before it: Kafka reads
/// negative times as its "earliest" and "latest" codes).
pub fn parse_datetime(s: &str) -> Result<i64, String> {
    let ms = parse_time(s)?;
    if ms < 0 {
        return Err(format!(
            "`{s}` is before 1970-01-01T00:00:00Z; record timestamps start there"
        ));
    }
    Ok(ms)
}

fn parse_time(s: &str) -> Result<i64, String> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    if let Some(t) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
    {
        return Ok(t.and_utc().timestamp_millis());
    }
    Err(format!(
        "`{s}` is not a time: give RFC 3339 (2026-12-01T08:00:00Z, 2026-12-01T09:00:00+01:00), or 2026-12-01T08:00:00 / 2026-12-01 (read as UTC)"
    ))
}

fn opt(v: Option<i64>) -> String {
    v.map_or("-".to_owned(), |n| n.to_string())
}

pub async fn run(cmd: OffsetsCommand, output: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        OffsetsCommand::Show {
            db,
            job,
            log,
            bootstrap,
        } => {
            let dir = Source::parse(log.as_deref(), bootstrap.as_deref())?;
            let admin = db.admin().await?;
            let rows = admin.offsets(job.as_deref()).await.with_context(|| {
                format!(
                    "cannot read the offsets table {} in {}",
                    db.offsets_table,
                    weir_sql::admin::redact_url(&db.db)
                )
            })?;
            if let (Some(j), true) = (&job, rows.is_empty()) {
                bail!("{}", unknown_job(&admin, j, &db).await);
            }
            let ends = match &dir {
                Some(d) => log_ends(d, &rows)?,
                None => BTreeMap::new(),
            };
            let lag = |r: &OffsetRow| -> (Option<i64>, Option<i64>) {
                let Some(&(start, end)) = ends.get(&(r.topic.clone(), r.partition)) else {
                    return (None, None);
                };
                // Never committed: the job starts at the log's start (or end, per its
                // auto.offset.reset); the lag shown assumes the start.
                (Some(end), Some(end - r.next_offset.unwrap_or(start)))
            };
            match output {
                Output::Json => print_json(&json!(rows
                    .iter()
                    .map(|r| {
                        let mut v = row_json(r);
                        if dir.is_some() {
                            let (end, lag) = lag(r);
                            v["log_end"] = json!(end);
                            v["lag"] = json!(lag);
                        }
                        v
                    })
                    .collect::<Vec<_>>()))?,
                Output::Text => {
                    let header = [
                        "JOB",
                        "TOPIC",
                        "PARTITION",
                        "NEXT_OFFSET",
                        "EPOCH",
                        "OWNER",
                        "UPDATED_AT",
                        "LOG_END",
                        "LAG",
                    ];
                    let width = if dir.is_some() { 9 } else { 7 };
                    let cells: Vec<Vec<String>> = rows
                        .iter()
                        .map(|r| {
                            let (end, lag) = lag(r);
                            let mut v = vec![
                                r.job.clone(),
                                r.topic.clone(),
                                r.partition.to_string(),
                                opt(r.next_offset),
                                r.epoch.to_string(),
                                r.owner.clone().unwrap_or_else(|| "-".into()),
                                r.updated_at.clone().unwrap_or_else(|| "-".into()),
                                opt(end),
                                opt(lag),
                            ];
                            v.truncate(width);
                            v
                        })
                        .collect();
                    print_table(&header[..width], &cells);
                }
            }
        }
        OffsetsCommand::Reset {
            db,
            job,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            shift_by,
            to_datetime,
            partitions,
            log,
            bootstrap,
            execute,
        } => {
            let Some(source) = Source::parse(log.as_deref(), bootstrap.as_deref())? else {
                bail!("give --log DIR (or --bootstrap log:///DIR | kafka://host:port) so that the new offsets can be checked against the log's range");
            };
            let place = source.describe();
            let ranges = source
                .ranges(&topic)?
                .ok_or_else(|| anyhow::anyhow!("topic `{topic}` does not exist in {place}"))?;
            let chosen = partitions.map(|v| v.into_iter().collect::<BTreeSet<i32>>());
            let target = match (to_earliest, to_latest, to_offset, shift_by, to_datetime) {
                (true, ..) => Target::Earliest,
                (_, true, ..) => Target::Latest,
                (_, _, Some(n), ..) => Target::Offset(n),
                (_, _, _, Some(n), _) => Target::ShiftBy(n),
                (.., Some(ms)) => Target::AtTime {
                    ms,
                    offsets: source.offsets_for_time(&topic, ms, chosen.as_ref())?,
                },
                _ => bail!("give one of --to-earliest, --to-latest, --to-offset N, --shift-by N, --to-datetime TIME"),
            };
            let admin = db.admin().await?;
            let all = admin.offsets(Some(&job)).await.with_context(|| {
                format!(
                    "cannot read the offsets table {} in {}",
                    db.offsets_table,
                    weir_sql::admin::redact_url(&db.db)
                )
            })?;
            if all.is_empty() {
                bail!("{}", unknown_job(&admin, &job, &db).await);
            }
            let planner =
                |rows: &[OffsetRow]| plan(rows, &ranges, chosen.as_ref(), &target, &topic, &place);
            let result = if execute {
                admin
                    .reset_offsets(&job, &topic, "weir offsets reset", planner)
                    .await
                    .with_context(|| {
                        format!("the reset of job `{job}` on `{topic}` failed; nothing was changed")
                    })?
                    .map(|done| {
                        done.into_iter()
                            .map(|r| (r.partition, r.before, r.after, Some(r.epoch)))
                            .collect::<Vec<_>>()
                    })
            } else {
                let rows: Vec<OffsetRow> = all.into_iter().filter(|r| r.topic == topic).collect();
                planner(&rows).map(|new| {
                    new.into_iter()
                        .map(|n| {
                            let before = rows
                                .iter()
                                .find(|r| r.partition == n.partition)
                                .and_then(|r| r.next_offset);
                            (n.partition, before, n.next_offset, None)
                        })
                        .collect()
                })
            };
            let moves = match result {
                Ok(m) => m,
                Err(e) => bail!("{e}; nothing was changed"),
            };
            match output {
                Output::Json => print_json(&json!({
                    "job": job,
                    "topic": topic,
                    "executed": execute,
                    "partitions": moves.iter().map(|(p, b, a, e)| json!({
                        "partition": p, "before": b, "after": a, "epoch": e,
                    })).collect::<Vec<_>>(),
                }))?,
                Output::Text => {
                    print_table(
                        &[
                            "TOPIC",
                            "PARTITION",
                            "BEFORE",
                            "AFTER",
                            "LOG_RANGE",
                            "NEW_EPOCH",
                        ],
                        &moves
                            .iter()
                            .map(|(p, b, a, e)| {
                                let range = ranges
                                    .get(p)
                                    .map_or("-".into(), |(s, e)| format!("{s}..{e}"));
                                vec![
                                    topic.clone(),
                                    p.to_string(),
                                    opt(*b),
                                    a.to_string(),
                                    range,
                                    opt(*e),
                                ]
                            })
                            .collect::<Vec<_>>(),
                    );
                    if execute {
                        eprintln!("reset applied: each partition's epoch was bumped, so a job still holding one is fenced and resumes from the new offset when it claims it again");
                    } else {
                        eprintln!("dry run: nothing changed; add --execute to apply");
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The new offset of every chosen partition, checked against the log's ranges.
pub fn plan(
    rows: &[OffsetRow],
    ranges: &BTreeMap<i32, (i64, i64)>,
    chosen: Option<&BTreeSet<i32>>,
    target: &Target,
    topic: &str,
    place: &str,
) -> Result<Vec<NewOffset>, String> {
    let mut parts: BTreeSet<i32> = match chosen {
        Some(c) => c.clone(),
        None => ranges.keys().copied().collect(),
    };
    if chosen.is_none() {
        parts.extend(rows.iter().map(|r| r.partition));
    }
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let Some(&(start, end)) = ranges.get(&p) else {
            return Err(format!(
                "partition {p} of topic `{topic}` does not exist in {place} (it has partitions 0..{})",
                ranges.len()
            ));
        };
        let stored = rows
            .iter()
            .find(|r| r.partition == p)
            .and_then(|r| r.next_offset);
        let new = match target {
            Target::Earliest => start,
            Target::Latest => end,
            Target::Offset(n) => *n,
            Target::AtTime { ms, offsets } => match offsets.get(&p) {
                Some(&o) => o,
                None => {
                    return Err(format!(
                        "{place} gave no offset for {topic}/{p} at time {ms} ms"
                    ))
                }
            },
            Target::ShiftBy(d) => match stored {
                Some(s) => s.saturating_add(*d),
                None => {
                    return Err(format!(
                        "partition {topic}/{p} has no stored offset to shift; use --to-offset, --to-earliest or --to-latest"
                    ))
                }
            },
        };
        if new < start || new > end {
            return Err(format!(
                "offset {new} for {topic}/{p} is outside the log's range {start}..{end} (first offset..end) in {place}"
            ));
        }
        out.push(NewOffset {
            partition: p,
            next_offset: new,
        });
    }
    if out.is_empty() {
        return Err(format!("no partition of `{topic}` to reset"));
    }
    Ok(out)
}

/// `(topic, partition) → (start, end)` for the topics of `rows` found in the log.
fn log_ends(
    source: &Source,
    rows: &[OffsetRow],
) -> anyhow::Result<BTreeMap<(String, i32), (i64, i64)>> {
    let topics: BTreeSet<&str> = rows.iter().map(|r| r.topic.as_str()).collect();
    let mut out = BTreeMap::new();
    for t in topics {
        for (p, r) in source.ranges(t)?.unwrap_or_default() {
            out.insert((t.to_owned(), p), r);
        }
    }
    Ok(out)
}

fn row_json(r: &OffsetRow) -> serde_json::Value {
    json!({
        "job": r.job,
        "topic": r.topic,
        "partition": r.partition,
        "next_offset": r.next_offset,
        "epoch": r.epoch,
        "owner": r.owner,
        "updated_at": r.updated_at,
    })
}

/// "unknown job" with the jobs the table does know.
pub async fn unknown_job(admin: &Admin, job: &str, db: &DbArgs) -> String {
    let known: BTreeSet<String> = admin
        .offsets(None)
        .await
        .map(|rows| rows.into_iter().map(|r| r.job).collect())
        .unwrap_or_default();
    let known = if known.is_empty() {
        "none".to_owned()
    } else {
        known.into_iter().collect::<Vec<_>>().join(", ")
    };
    format!(
        "unknown job `{job}`: no offsets stored for it in table {} of {} (jobs there: {known})",
        db.offsets_table,
        weir_sql::admin::redact_url(&db.db)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(p: i32, next: Option<i64>) -> OffsetRow {
        OffsetRow {
            job: "j".into(),
            topic: "t".into(),
            partition: p,
            next_offset: next,
            epoch: 3,
            owner: None,
            updated_at: None,
        }
    }

    fn ranges() -> BTreeMap<i32, (i64, i64)> {
        [(0, (0, 10)), (1, (5, 20)), (2, (0, 0))]
            .into_iter()
            .collect()
    }

    fn run(
        rows: &[OffsetRow],
        chosen: Option<&[i32]>,
        target: Target,
    ) -> Result<Vec<(i32, i64)>, String> {
        let chosen = chosen.map(|c| c.iter().copied().collect::<BTreeSet<i32>>());
        plan(rows, &ranges(), chosen.as_ref(), &target, "t", "/log").map(|v| {
            v.into_iter()
                .map(|n| (n.partition, n.next_offset))
                .collect()
        })
    }

    #[test]
    fn targets_resolve_against_each_partitions_range() {
        let rows = [row(0, Some(4)), row(1, Some(15))];
        assert_eq!(
            run(&rows, None, Target::Earliest),
            Ok(vec![(0, 0), (1, 5), (2, 0)])
        );
        assert_eq!(
            run(&rows, None, Target::Latest),
            Ok(vec![(0, 10), (1, 20), (2, 0)])
        );
        assert_eq!(
            run(&rows, Some(&[0, 1]), Target::ShiftBy(-4)),
            Ok(vec![(0, 0), (1, 11)])
        );
        assert_eq!(
            run(&rows, Some(&[1]), Target::Offset(20)),
            Ok(vec![(1, 20)])
        );
    }

    #[test]
    fn out_of_range_unknown_partitions_and_unshiftable_rows_are_refused() {
        let rows = [row(0, Some(4)), row(1, None)];
        let e = run(&rows, Some(&[1]), Target::Offset(4)).unwrap_err();
        assert!(
            e.contains("offset 4 for t/1 is outside the log's range 5..20"),
            "{e}"
        );
        let e = run(&rows, Some(&[0]), Target::ShiftBy(-5)).unwrap_err();
        assert!(e.contains("offset -1 for t/0"), "{e}");
        let e = run(&rows, Some(&[1]), Target::ShiftBy(1)).unwrap_err();
        assert!(e.contains("no stored offset to shift"), "{e}");
        let e = run(&rows, Some(&[9]), Target::Earliest).unwrap_err();
        assert!(e.contains("partition 9 of topic `t` does not exist"), "{e}");
        // A stored row for a partition the log no longer has cannot be checked.
        let e = run(&[row(5, Some(1))], None, Target::Earliest).unwrap_err();
        assert!(e.contains("partition 5"), "{e}");
    }

    #[test]
    fn datetimes_parse_as_rfc3339_or_utc_and_bad_ones_say_what_is_accepted() {
        assert_eq!(parse_datetime("1970-01-01T00:00:01Z"), Ok(1_000));
        assert_eq!(parse_datetime("1970-01-01T01:00:01+01:00"), Ok(1_000));
        assert_eq!(parse_datetime("1970-01-01T00:00:01.250"), Ok(1_250));
        assert_eq!(parse_datetime("1970-01-02"), Ok(86_400_000));
        let e = parse_datetime("1969-12-31T23:59:59.999Z").unwrap_err();
        assert!(e.contains("before 1970"), "{e}");
        let e = parse_datetime("yesterday").unwrap_err();
        assert!(
            e.contains("`yesterday` is not a time") && e.contains("RFC 3339"),
            "{e}"
        );
    }

    #[test]
    fn a_time_target_takes_each_partitions_answer_and_checks_it() {
        let offsets: BTreeMap<i32, i64> = [(0, 7), (1, 20), (2, 0)].into_iter().collect();
        let target = Target::AtTime { ms: 5, offsets };
        assert_eq!(
            run(&[], None, target.clone()),
            Ok(vec![(0, 7), (1, 20), (2, 0)])
        );
        let only_0: BTreeMap<i32, i64> = [(0, 7)].into_iter().collect();
        let e = run(
            &[],
            Some(&[1]),
            Target::AtTime {
                ms: 5,
                offsets: only_0,
            },
        )
        .unwrap_err();
        assert!(e.contains("gave no offset for t/1 at time 5 ms"), "{e}");
    }
}
