//! The checker's self-test: a correct sink passes, and each deliberately broken sink
//! is caught. The sinks are simulated here with raw SQL on SQLite (none of weir-sql's
//! code), through one scenario per partition:
//!
//! 1. owner A (epoch 1) commits offsets 0..20 in two batches, then reads 20..30 and
//!    stalls (a zombie with a batch in flight);
//! 2. owner B claims (epoch 2) and commits 20..30;
//! 3. the zombie A commits its 20..30;
//! 4. B crashes in the middle of committing 30..40;
//! 5. owner C claims (epoch 3) and processes from the stored offset to the end.

use std::time::Duration;

use anyhow::Result;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, SqliteConnection};
use weir_testkit::checker::{check, Db, Expected, InputRecord, Inputs, Report, TableSpec};

const JOB: &str = "selftest";
const TOPIC: &str = "t";
const PER_PARTITION: i64 = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Correct,
    /// Rows in one transaction, the offset advance in another.
    OffsetsInSeparateTxn,
    /// `UPDATE … SET next_offset = $last + 1 WHERE job, topic, partition`: no epoch
    /// predicate (and no expected-offset check), the naive recipe.
    NoEpochPredicate,
    /// Stores `last + 2`.
    OffsetPlusTwo,
    /// A fenced owner commits its rows anyway (writes a revoked partition).
    WritesRevokedPartitions,
    /// Commits the offset, then writes the rows in a second transaction.
    CommitBeforeWrite,
    /// Dead letters written outside the batch transaction.
    DeadLettersOutsideTxn,
}

fn input() -> Vec<InputRecord> {
    let mut v = Vec::new();
    for p in 0..2 {
        for o in 0..PER_PARTITION {
            let value = if o % 17 == 0 {
                "POISON".to_owned()
            } else {
                format!("v{p}-{o}")
            };
            v.push(InputRecord::new(
                TOPIC,
                p,
                o,
                None,
                Some(value.into_bytes()),
            ));
        }
    }
    v
}

fn reference(r: &InputRecord) -> Expected {
    let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
    if v == "POISON" {
        Expected::Dead
    } else if r.offset % 10 == 0 {
        Expected::Rows(vec![v.clone(), format!("{v}#1")])
    } else {
        Expected::Rows(vec![v])
    }
}

async fn exec(conn: &mut SqliteConnection, sql: &'static str) -> Result<u64> {
    Ok(sqlx::query(sql).execute(conn).await?.rows_affected())
}

async fn claim(pool: &SqlitePool, p: i32) -> Result<(i64, Option<i64>)> {
    let row = sqlx::query(
        "INSERT INTO weir_offsets (job, topic, partition, next_offset, epoch) VALUES (?1, ?2, ?3, NULL, 1) \
         ON CONFLICT (job, topic, partition) DO UPDATE SET epoch = epoch + 1 RETURNING epoch, next_offset",
    )
    .bind(JOB)
    .bind(TOPIC)
    .bind(p)
    .fetch_one(pool)
    .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

async fn write_rows(
    conn: &mut SqliteConnection,
    recs: &[InputRecord],
    dead_letters: bool,
) -> Result<()> {
    for r in recs {
        match reference(r) {
            Expected::Rows(payloads) => {
                if dead_letters {
                    continue;
                }
                for (i, payload) in payloads.iter().enumerate() {
                    sqlx::query("INSERT INTO sink (topic, part, off, ordinal, payload) VALUES (?1, ?2, ?3, ?4, ?5)")
                        .bind(&r.topic)
                        .bind(r.partition)
                        .bind(r.offset)
                        .bind(i as i64)
                        .bind(payload)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            Expected::Dead => {
                if dead_letters {
                    sqlx::query("INSERT INTO weir_dead_letters (job, topic, partition, \"offset\", stage) VALUES (?1, ?2, ?3, ?4, 'decode')")
                        .bind(JOB)
                        .bind(&r.topic)
                        .bind(r.partition)
                        .bind(r.offset)
                        .execute(&mut *conn)
                        .await?;
                }
            }
        }
    }
    Ok(())
}

async fn advance(
    conn: &mut SqliteConnection,
    p: i32,
    epoch: i64,
    expected: Option<i64>,
    next: i64,
    fenced: bool,
) -> Result<bool> {
    let n = if fenced {
        sqlx::query(
            "UPDATE weir_offsets SET next_offset = ?1 WHERE job = ?2 AND topic = ?3 AND partition = ?4 \
             AND epoch = ?5 AND next_offset IS ?6",
        )
        .bind(next)
        .bind(JOB)
        .bind(TOPIC)
        .bind(p)
        .bind(epoch)
        .bind(expected)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    } else {
        sqlx::query("UPDATE weir_offsets SET next_offset = ?1 WHERE job = ?2 AND topic = ?3 AND partition = ?4")
            .bind(next)
            .bind(JOB)
            .bind(TOPIC)
            .bind(p)
            .execute(&mut *conn)
            .await?
            .rows_affected()
    };
    Ok(n == 1)
}

/// Commit one batch as `variant` does; `crash` kills the owner half-way. Returns the
/// stored offset afterwards as this owner believes it (None: fenced or crashed).
async fn commit_batch(
    pool: &SqlitePool,
    variant: Variant,
    p: i32,
    epoch: i64,
    expected: Option<i64>,
    recs: &[InputRecord],
    crash: bool,
) -> Result<Option<i64>> {
    let last = recs.last().map_or(0, |r| r.offset);
    let next = if variant == Variant::OffsetPlusTwo {
        last + 2
    } else {
        last + 1
    };
    let fenced = variant != Variant::NoEpochPredicate;
    let mut conn = pool.acquire().await?;
    match variant {
        Variant::OffsetsInSeparateTxn => {
            exec(&mut conn, "BEGIN IMMEDIATE").await?;
            write_rows(&mut conn, recs, false).await?;
            write_rows(&mut conn, recs, true).await?;
            exec(&mut conn, "COMMIT").await?;
            if crash {
                return Ok(None);
            }
            exec(&mut conn, "BEGIN IMMEDIATE").await?;
            let ok = advance(&mut conn, p, epoch, expected, next, true).await?;
            exec(&mut conn, if ok { "COMMIT" } else { "ROLLBACK" }).await?;
            Ok(ok.then_some(next))
        }
        Variant::CommitBeforeWrite => {
            exec(&mut conn, "BEGIN IMMEDIATE").await?;
            let ok = advance(&mut conn, p, epoch, expected, next, true).await?;
            exec(&mut conn, if ok { "COMMIT" } else { "ROLLBACK" }).await?;
            if crash || !ok {
                return Ok(None);
            }
            exec(&mut conn, "BEGIN IMMEDIATE").await?;
            write_rows(&mut conn, recs, false).await?;
            write_rows(&mut conn, recs, true).await?;
            exec(&mut conn, "COMMIT").await?;
            Ok(Some(next))
        }
        _ => {
            if variant == Variant::DeadLettersOutsideTxn {
                write_rows(&mut conn, recs, true).await?;
            }
            exec(&mut conn, "BEGIN IMMEDIATE").await?;
            write_rows(&mut conn, recs, false).await?;
            if variant != Variant::DeadLettersOutsideTxn {
                write_rows(&mut conn, recs, true).await?;
            }
            let ok = advance(&mut conn, p, epoch, expected, next, fenced).await?;
            if crash {
                exec(&mut conn, "ROLLBACK").await?;
                return Ok(None);
            }
            if !ok && variant != Variant::WritesRevokedPartitions {
                exec(&mut conn, "ROLLBACK").await?;
                return Ok(None);
            }
            exec(&mut conn, "COMMIT").await?;
            Ok(ok.then_some(next))
        }
    }
}

async fn scenario(variant: Variant) -> Result<Report> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("selftest.sqlite");
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .busy_timeout(Duration::from_secs(5)),
        )
        .await?;
    for ddl in [
        "CREATE TABLE sink (topic TEXT, part INTEGER, off INTEGER, ordinal INTEGER, payload TEXT)",
        "CREATE TABLE weir_dead_letters (job TEXT, topic TEXT, partition INTEGER, \"offset\" INTEGER, stage TEXT)",
        "CREATE TABLE weir_offsets (job TEXT, topic TEXT, partition INTEGER, next_offset INTEGER, epoch INTEGER, \
         PRIMARY KEY (job, topic, partition))",
    ] {
        sqlx::query(ddl).execute(&pool).await?;
    }
    let input = input();
    let recs = |p: i32, from: i64, to: i64| -> Vec<InputRecord> {
        input
            .iter()
            .filter(|r| r.partition == p && r.offset >= from && r.offset < to)
            .cloned()
            .collect()
    };
    for p in 0..2 {
        // 1. A commits 0..20, then stalls holding 20..30
        let (ea, na) = claim(&pool, p).await?;
        let mut pos = na;
        for from in [0, 10] {
            pos =
                commit_batch(&pool, variant, p, ea, pos, &recs(p, from, from + 10), false).await?;
        }
        let zombie_expected = pos;
        // 2. B claims and commits 20..30
        let (eb, nb) = claim(&pool, p).await?;
        let start = nb.unwrap_or(0);
        let pos_b = commit_batch(
            &pool,
            variant,
            p,
            eb,
            nb,
            &recs(p, start, start + 10),
            false,
        )
        .await?;
        // 3. the zombie commits its 20..30
        commit_batch(
            &pool,
            variant,
            p,
            ea,
            zombie_expected,
            &recs(p, 20, 30),
            false,
        )
        .await?;
        // 4. B crashes while committing its next batch
        let from_b = pos_b.unwrap_or(start + 10);
        commit_batch(
            &pool,
            variant,
            p,
            eb,
            pos_b,
            &recs(p, from_b, from_b + 10),
            true,
        )
        .await?;
        // 5. C takes over and processes to the end
        let (ec, nc) = claim(&pool, p).await?;
        let mut pos = nc;
        let mut from = nc.unwrap_or(0);
        while from < PER_PARTITION {
            let to = (from + 10).min(PER_PARTITION);
            match commit_batch(&pool, variant, p, ec, pos, &recs(p, from, to), false).await? {
                Some(n) => {
                    pos = Some(n);
                    from = n;
                }
                None => break,
            }
        }
    }
    let tables = Db::Sqlite(pool.clone())
        .read(&TableSpec {
            job: JOB.into(),
            sink_table: "sink".into(),
            sink_topic: Some("topic".into()),
            topic: TOPIC.into(),
            sink_partition: "part".into(),
            sink_offset: "off".into(),
            sink_ordinal: Some("ordinal".into()),
            sink_payload: "payload".into(),
            dlq_table: "weir_dead_letters".into(),
            offsets_table: "weir_offsets".into(),
        })
        .await?;
    pool.close().await;
    Ok(check(
        &Inputs {
            input: &input,
            sink: &tables.sink,
            dlq: &tables.dlq,
            offsets: &tables.offsets,
            commits: None,
        },
        reference,
    ))
}

#[tokio::test]
async fn correct_sink_passes() -> Result<()> {
    let report = scenario(Variant::Correct).await?;
    assert!(report.is_valid(), "{}", report.to_json());
    assert_eq!(report.counters.consumed, 2 * PER_PARTITION as u64);
    Ok(())
}

#[tokio::test]
async fn every_broken_sink_is_caught() -> Result<()> {
    let broken = [
        (Variant::OffsetsInSeparateTxn, "duplicates"),
        (Variant::NoEpochPredicate, "duplicates"),
        (Variant::OffsetPlusTwo, "lost"),
        (Variant::WritesRevokedPartitions, "duplicates"),
        (Variant::CommitBeforeWrite, "lost"),
        (Variant::DeadLettersOutsideTxn, "dlq_duplicates"),
    ];
    let mut caught = 0;
    for (variant, counter) in broken {
        let report = scenario(variant).await?;
        let json: serde_json::Value = serde_json::from_str(&report.to_json())?;
        let n = json["counters"][counter].as_u64().unwrap_or(0);
        assert!(
            !report.is_valid() && n > 0,
            "{variant:?} not caught by `{counter}`: {}",
            report.to_json()
        );
        assert!(
            report.examples.contains_key(counter),
            "{variant:?}: no example of {counter}"
        );
        caught += 1;
    }
    println!(
        "checker self-test: {caught}/{} broken variants caught",
        broken.len()
    );
    assert_eq!(caught, 6);
    Ok(())
}

#[test]
fn phantoms_and_chain_anomalies_are_counted() {
    use weir_testkit::checker::{CommitRow, DlqRow, OffsetRow, SinkRow};
    let input = vec![
        InputRecord::new("t", 0, 0, None, Some(b"a".to_vec())),
        InputRecord::new("t", 0, 1, None, Some(b"b".to_vec())),
    ];
    let row = |o: i64, payload: &str| SinkRow {
        topic: "t".into(),
        partition: 0,
        offset: o,
        ordinal: 0,
        payload: payload.into(),
    };
    let sink = vec![row(0, "a"), row(1, "b"), row(7, "zzz")];
    let dlq = vec![DlqRow {
        topic: "t".into(),
        partition: 0,
        offset: 1,
    }];
    let offsets = vec![OffsetRow {
        topic: "t".into(),
        partition: 0,
        next_offset: Some(1),
        epoch: 2,
    }];
    let commit = |from: Option<i64>, to: i64, epoch: i64| CommitRow {
        topic: "t".into(),
        partition: 0,
        from,
        to,
        epoch,
    };
    let commits = vec![
        commit(None, 1, 2),
        commit(Some(0), 2, 1),
        commit(Some(5), 6, 1),
    ];
    let report = check(
        &Inputs {
            input: &input,
            sink: &sink,
            dlq: &dlq,
            offsets: &offsets,
            commits: Some(&commits),
        },
        |r| {
            Expected::Rows(vec![String::from_utf8_lossy(
                r.value.as_deref().unwrap_or_default(),
            )
            .into_owned()])
        },
    );
    let c = &report.counters;
    // offset 1 is beyond the stored offset: its row and dead letter are phantoms, as is
    // the row of offset 7 which is not in the log
    assert_eq!(c.phantoms, 3, "{}", report.to_json());
    assert_eq!(c.chain_overlaps, 1);
    assert_eq!(c.chain_gaps, 1);
    assert_eq!(c.epoch_decreases, 1);
    assert_eq!(c.lost + c.duplicates + c.corrupt, 0);
}
