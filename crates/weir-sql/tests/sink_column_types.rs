//! The column types beyond the scalars (exact decimals, timestamps with and without
//! time zone, dates, times of day, UUIDs, JSON, and `Option` of each) on all three
//! dialects: `#[derive(Row)]` structs written by the built-in `TableSink` (insert:
//! PostgreSQL's COPY; upsert: PostgreSQL's UNNEST arrays, multi-row VALUES
//! elsewhere) read back with plain sqlx and compared exactly: decimals keep their
//! column's scale, timestamps their microseconds, NULL stays NULL. Values that do not
//! fit (a decimal with too many digits, a year the dialect cannot store) are refused
//! before any SQL is sent, with an error naming table and column that the runner
//! treats as a bad row (a dead letter), never rounded or clamped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;
use weir_sql::{Dialect, Numeric, Row, TableName, TableSink, WriteMode};

#[derive(Row, Clone, Debug, PartialEq)]
struct Typed {
    id: i64,
    amount: Numeric<12, 2>,
    fee: Option<Numeric<6, 4>>,
    big: Decimal, // NUMERIC(38, 10)
    ts: DateTime<Utc>,
    ts_opt: Option<DateTime<Utc>>,
    wall: NaiveDateTime,
    dt: NaiveDate,
    dt_opt: Option<NaiveDate>,
    tod: NaiveTime,
    uid: Uuid,
    uid_opt: Option<Uuid>,
    doc: serde_json::Value,
    doc_opt: Option<serde_json::Value>,
}

const SELECT: &str = "SELECT id, amount, fee, big, ts, ts_opt, wall, dt, dt_opt, tod, uid, \
                      uid_opt, doc, doc_opt FROM typed ORDER BY id";

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn samples() -> Vec<Typed> {
    let nanos = date(2024, 5, 6)
        .and_hms_nano_opt(7, 8, 9, 123_456_789)
        .unwrap();
    vec![
        Typed {
            id: 1,
            amount: Numeric(dec("19.99")),
            fee: Some(Numeric(dec("0.0125"))),
            big: dec("1234567890123456789.0123456789"),
            ts: nanos.and_utc(), // stored as .123456
            ts_opt: Some(Utc.with_ymd_and_hms(1969, 7, 20, 20, 17, 40).unwrap()),
            wall: date(1999, 12, 31)
                .and_hms_micro_opt(23, 59, 59, 999_999)
                .unwrap(),
            dt: date(2024, 2, 29),
            dt_opt: Some(date(1970, 1, 1)),
            tod: NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999).unwrap(),
            uid: Uuid::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210),
            uid_opt: Some(Uuid::from_u128(u128::MAX)),
            doc: json!({
                "note": "tab\there\nnewline \\ backslash \"quote\" 'single' é😀 \\N",
                "n": [1, 2.5, -3e-7, null, true, 12345678901234567_i64],
                "nested": {"empty": {}, "list": []}
            }),
            doc_opt: Some(json!("just a string")),
        },
        Typed {
            id: 2,
            amount: Numeric(dec("-0.01")),
            fee: None,
            big: dec("0"),
            ts: Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
            ts_opt: None,
            wall: date(9999, 12, 31)
                .and_hms_micro_opt(23, 59, 59, 999_999)
                .unwrap(),
            dt: date(1, 1, 1),
            dt_opt: None,
            tod: NaiveTime::MIN,
            uid: Uuid::nil(),
            uid_opt: None,
            doc: json!([]),
            doc_opt: None,
        },
        Typed {
            id: 3,
            amount: Numeric(dec("1.5")), // stored as 1.50
            fee: Some(Numeric(dec("-99.9999"))),
            big: dec("-1.5"), // stored as -1.5000000000
            ts: Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            ts_opt: Some(
                DateTime::parse_from_rfc3339("2024-03-10T02:30:00.5-08:00")
                    .unwrap()
                    .to_utc(),
            ),
            wall: date(2024, 3, 31).and_hms_opt(2, 30, 0).unwrap(), // a DST gap in Europe
            dt: date(9999, 12, 31),
            dt_opt: Some(date(2000, 1, 1)),
            tod: NaiveTime::from_hms_micro_opt(12, 0, 0, 1).unwrap(),
            uid: Uuid::from_u128(42),
            uid_opt: Some(Uuid::from_u128(43)),
            doc: json!({"k": "v"}),
            doc_opt: Some(json!(null)),
        },
    ]
}

/// The decimals' text as the databases hold them: each with its column's scale.
const DECIMAL_TEXT: [[&str; 3]; 3] = [
    ["19.99", "0.0125", "1234567890123456789.0123456789"],
    ["-0.01", "NULL", "0.0000000000"],
    ["1.50", "-99.9999", "-1.5000000000"],
];

/// What a written row reads back as: microseconds kept, finer digits truncated.
fn stored(mut t: Typed) -> Typed {
    use chrono::Timelike;
    let trunc = |x: NaiveDateTime| x.with_nanosecond(x.nanosecond() / 1000 * 1000).unwrap();
    t.ts = trunc(t.ts.naive_utc()).and_utc();
    t.ts_opt = t.ts_opt.map(|x| trunc(x.naive_utc()).and_utc());
    t.wall = trunc(t.wall);
    t
}

/// The decimals as the database prints them (its own text, not a driver's decoding:
/// sqlx's PostgreSQL decoder drops the scale of a zero).
async fn decimal_texts<DB: ReadBack>(pool: &sqlx::Pool<DB>) -> anyhow::Result<Vec<[String; 3]>> {
    let rows = DB::decimal_texts(pool).await?;
    Ok(rows
        .into_iter()
        .map(|(a, f, b)| [a, f.unwrap_or_else(|| "NULL".into()), b])
        .collect())
}

fn want_texts(rows: &[[&str; 3]]) -> Vec<[String; 3]> {
    rows.iter().map(|r| r.map(String::from)).collect()
}

/// Reading the table back with plain sqlx, each dialect with the types its driver
/// decodes the columns into.
trait ReadBack: Dialect {
    fn read(
        pool: &sqlx::Pool<Self>,
    ) -> impl std::future::Future<Output = anyhow::Result<Vec<Typed>>>;
    /// `amount`, `fee`, `big` as the database's own text.
    fn decimal_texts(
        pool: &sqlx::Pool<Self>,
    ) -> impl std::future::Future<Output = anyhow::Result<Vec<(String, Option<String>, String)>>>;
}

impl ReadBack for sqlx::Postgres {
    async fn decimal_texts(
        pool: &sqlx::PgPool,
    ) -> anyhow::Result<Vec<(String, Option<String>, String)>> {
        Ok(
            sqlx::query_as("SELECT amount::text, fee::text, big::text FROM typed ORDER BY id")
                .fetch_all(pool)
                .await?,
        )
    }
    async fn read(pool: &sqlx::PgPool) -> anyhow::Result<Vec<Typed>> {
        type T = (
            i64,
            Decimal,
            Option<Decimal>,
            Decimal,
            DateTime<Utc>,
            Option<DateTime<Utc>>,
            NaiveDateTime,
            NaiveDate,
            Option<NaiveDate>,
            NaiveTime,
            Uuid,
            Option<Uuid>,
            serde_json::Value,
            Option<serde_json::Value>,
        );
        let rows: Vec<T> = sqlx::query_as(SELECT).fetch_all(pool).await?;
        Ok(rows
            .into_iter()
            .map(|r| Typed {
                id: r.0,
                amount: Numeric(r.1),
                fee: r.2.map(Numeric),
                big: r.3,
                ts: r.4,
                ts_opt: r.5,
                wall: r.6,
                dt: r.7,
                dt_opt: r.8,
                tod: r.9,
                uid: r.10,
                uid_opt: r.11,
                doc: r.12,
                doc_opt: r.13,
            })
            .collect())
    }
}

impl ReadBack for sqlx::MySql {
    async fn decimal_texts(
        pool: &sqlx::MySqlPool,
    ) -> anyhow::Result<Vec<(String, Option<String>, String)>> {
        Ok(sqlx::query_as(
            "SELECT CAST(amount AS CHAR), CAST(fee AS CHAR), CAST(big AS CHAR) FROM typed ORDER BY id",
        )
        .fetch_all(pool)
        .await?)
    }
    async fn read(pool: &sqlx::MySqlPool) -> anyhow::Result<Vec<Typed>> {
        type T = (
            i64,
            Decimal,
            Option<Decimal>,
            Decimal,
            NaiveDateTime, // DATETIME(6) holding UTC
            Option<NaiveDateTime>,
            NaiveDateTime,
            NaiveDate,
            Option<NaiveDate>,
            NaiveTime,
            String, // CHAR(36)
            Option<String>,
            String, // MariaDB's JSON is LONGTEXT
            Option<String>,
        );
        let rows: Vec<T> = sqlx::query_as(SELECT).fetch_all(pool).await?;
        rows.into_iter()
            .map(|r| {
                Ok(Typed {
                    id: r.0,
                    amount: Numeric(r.1),
                    fee: r.2.map(Numeric),
                    big: r.3,
                    ts: r.4.and_utc(),
                    ts_opt: r.5.map(|t| t.and_utc()),
                    wall: r.6,
                    dt: r.7,
                    dt_opt: r.8,
                    tod: r.9,
                    uid: Uuid::parse_str(&r.10)?,
                    uid_opt: r.11.as_deref().map(Uuid::parse_str).transpose()?,
                    doc: serde_json::from_str(&r.12)?,
                    doc_opt: r.13.as_deref().map(serde_json::from_str).transpose()?,
                })
            })
            .collect()
    }
}

type Texts = (
    i64,
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
);

impl ReadBack for sqlx::Sqlite {
    async fn decimal_texts(
        pool: &sqlx::SqlitePool,
    ) -> anyhow::Result<Vec<(String, Option<String>, String)>> {
        Ok(
            sqlx::query_as("SELECT amount, fee, big FROM typed ORDER BY id")
                .fetch_all(pool)
                .await?,
        )
    }
    async fn read(pool: &sqlx::SqlitePool) -> anyhow::Result<Vec<Typed>> {
        let rows: Vec<Texts> = sqlx::query_as(SELECT).fetch_all(pool).await?;
        let ts = |s: &str| -> anyhow::Result<DateTime<Utc>> {
            Ok(DateTime::parse_from_rfc3339(s)?.to_utc())
        };
        let wall = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f");
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d");
        rows.into_iter()
            .map(|r| {
                Ok(Typed {
                    id: r.0,
                    amount: Numeric(Decimal::from_str(&r.1)?),
                    fee: r
                        .2
                        .as_deref()
                        .map(Decimal::from_str)
                        .transpose()?
                        .map(Numeric),
                    big: Decimal::from_str(&r.3)?,
                    ts: ts(&r.4)?,
                    ts_opt: r.5.as_deref().map(ts).transpose()?,
                    wall: wall(&r.6)?,
                    dt: day(&r.7)?,
                    dt_opt: r.8.as_deref().map(day).transpose()?,
                    tod: NaiveTime::parse_from_str(&r.9, "%H:%M:%S%.f")?,
                    uid: Uuid::parse_str(&r.10)?,
                    uid_opt: r.11.as_deref().map(Uuid::parse_str).transpose()?,
                    doc: serde_json::from_str(&r.12)?,
                    doc_opt: r.13.as_deref().map(serde_json::from_str).transpose()?,
                })
            })
            .collect()
    }
}

async fn write<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    sink: &TableSink<DB, Typed>,
    rows: &[Typed],
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sink.write_rows(&mut *tx, rows).await?;
    tx.commit().await?;
    Ok(())
}

fn table() -> TableName {
    TableName::new("typed").unwrap()
}

/// Insert (PostgreSQL: COPY) round trip.
async fn insert_round_trip<DB: ReadBack>(pool: sqlx::Pool<DB>) -> anyhow::Result<()> {
    let sink = TableSink::<DB, Typed>::new(table())?;
    sink.create_table(&pool).await?;
    let rows = samples();
    write(&pool, &sink, &rows).await?;
    let got = DB::read(&pool).await?;
    let want: Vec<Typed> = rows.into_iter().map(stored).collect();
    assert_eq!(got, want);
    assert_eq!(decimal_texts(&pool).await?, want_texts(&DECIMAL_TEXT));
    Ok(())
}

/// Upsert (PostgreSQL: UNNEST arrays of every type) replaces, the last of a batch
/// wins, and NULLs replace values.
async fn upsert_round_trip<DB: ReadBack>(pool: sqlx::Pool<DB>) -> anyhow::Result<()> {
    let sink = TableSink::<DB, Typed>::new(table())?.with_mode(WriteMode::Upsert {
        key: vec!["id".into()],
    })?;
    sink.create_table(&pool).await?;
    let rows = samples();
    let mut first = rows[0].clone();
    first.amount = Numeric(dec("1.00"));
    first.doc = json!({"first": true});
    write(&pool, &sink, &[first, rows[1].clone(), rows[0].clone()]).await?;
    // row 3 arrives, row 2 is replaced by one with every nullable column set and
    // row 1 by one with every nullable column NULL
    let mut two = rows[2].clone();
    two.id = 2;
    let mut one = rows[1].clone();
    one.id = 1;
    write(&pool, &sink, &[rows[2].clone(), two.clone(), one.clone()]).await?;
    let got = DB::read(&pool).await?;
    let want: Vec<Typed> = [one, two, rows[2].clone()]
        .into_iter()
        .map(stored)
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        decimal_texts(&pool).await?,
        want_texts(&[DECIMAL_TEXT[1], DECIMAL_TEXT[2], DECIMAL_TEXT[2]])
    );
    Ok(())
}

/// A value that does not fit its column is refused before any SQL is sent: the
/// error names table, column and value, and is a row error (the runner
/// dead-letters the record); nothing of the batch is written.
async fn misfits_are_refused<DB: ReadBack>(
    pool: sqlx::Pool<DB>,
    far_year: i32,
) -> anyhow::Result<()> {
    let sink = TableSink::<DB, Typed>::new(table())?;
    sink.create_table(&pool).await?;
    let good = samples()[0].clone();
    let cases: Vec<(Typed, &str, &str)> = vec![
        (
            Typed {
                amount: Numeric(dec("1.005")),
                ..good.clone()
            },
            "amount",
            "3 digits after the point",
        ),
        (
            Typed {
                amount: Numeric(dec("12345678901.5")),
                ..good.clone()
            },
            "amount",
            "11 digits before the point",
        ),
        (
            Typed {
                fee: Some(Numeric(dec("100"))),
                ..good.clone()
            },
            "fee",
            "holds 2",
        ),
        (
            Typed {
                ts: Utc.with_ymd_and_hms(far_year, 1, 1, 0, 0, 0).unwrap(),
                ..good.clone()
            },
            "ts",
            "out of range",
        ),
        (
            Typed {
                dt_opt: Some(date(far_year, 6, 1)),
                ..good.clone()
            },
            "dt_opt",
            "out of range",
        ),
    ];
    for (row, column, what) in cases {
        let mut tx = pool.begin().await?;
        let err = sink
            .write_rows(&mut *tx, &[good.clone(), row])
            .await
            .expect_err(column);
        tx.rollback().await?;
        let msg = err.to_string();
        assert!(
            msg.contains("typed") && msg.contains(column) && msg.contains(what),
            "{msg}"
        );
        assert!(err.is_row_error(), "a bad row, for the dead letters: {msg}");
        assert!(!err.is_retriable(), "{msg}");
    }
    assert!(DB::read(&pool).await?.is_empty());
    Ok(())
}

mod sqlite {
    use super::*;

    #[tokio::test]
    async fn insert_round_trips_every_column_type() -> anyhow::Result<()> {
        let (pool, _dir) = common::sqlite("types").await?;
        insert_round_trip(pool).await
    }

    #[tokio::test]
    async fn upsert_round_trips_every_column_type() -> anyhow::Result<()> {
        let (pool, _dir) = common::sqlite("types").await?;
        upsert_round_trip(pool).await
    }

    #[tokio::test]
    async fn misfits_are_refused_naming_the_column() -> anyhow::Result<()> {
        let (pool, _dir) = common::sqlite("types").await?;
        misfits_are_refused(pool, 10_000).await
    }

    /// SQLite has none of these types: the documented text forms, exactly (fixed
    /// width, so timestamps sort in time order; decimals with their column's scale).
    #[tokio::test]
    async fn stored_as_documented_text() -> anyhow::Result<()> {
        let (pool, _dir) = common::sqlite("types").await?;
        let sink = TableSink::<sqlx::Sqlite, Typed>::new(table())?;
        sink.create_table(&pool).await?;
        write(&pool, &sink, &samples()).await?;
        let rows: Vec<Texts> = sqlx::query_as(SELECT).fetch_all(&pool).await?;
        let r = &rows[0];
        assert_eq!((r.1.as_str(), r.2.as_deref()), ("19.99", Some("0.0125")));
        assert_eq!(r.4, "2024-05-06T07:08:09.123456Z");
        assert_eq!(r.5.as_deref(), Some("1969-07-20T20:17:40.000000Z"));
        assert_eq!(r.6, "1999-12-31T23:59:59.999999");
        assert_eq!(
            (r.7.as_str(), r.9.as_str()),
            ("2024-02-29", "23:59:59.999999")
        );
        assert_eq!(r.10, "01234567-89ab-cdef-fedc-ba9876543210");
        assert_eq!(rows[1].4, "0001-01-01T00:00:00.000000Z");
        assert_eq!(rows[2].1, "1.50");
        let types: Vec<String> = sqlx::query_scalar("SELECT DISTINCT typeof(amount) FROM typed")
            .fetch_all(&pool)
            .await?;
        assert_eq!(
            types,
            ["text"],
            "no NUMERIC affinity turning decimals into floats"
        );
        // SQLite's own date functions read the text
        let unix: i64 = sqlx::query_scalar("SELECT unixepoch(ts) FROM typed WHERE id = 1")
            .fetch_one(&pool)
            .await?;
        assert_eq!(unix, samples()[0].ts.timestamp());
        Ok(())
    }
}

mod postgres {
    use super::*;

    /// A pool on a fresh schema whose session time zone is not UTC, so that a
    /// timestamp that depended on it would read back shifted.
    async fn pool(test: &str) -> anyhow::Result<sqlx::PgPool> {
        let (_, schema) = common::pg(test).await?;
        let opts = sqlx::postgres::PgConnectOptions::from_str(common::PG_URL)?.options([
            ("search_path", schema.as_str()),
            ("TimeZone", "Asia/Kolkata"),
        ]);
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await?)
    }

    #[tokio::test]
    async fn insert_by_copy_round_trips_every_column_type() -> anyhow::Result<()> {
        insert_round_trip(pool("types").await?).await
    }

    #[tokio::test]
    async fn upsert_by_unnest_round_trips_every_column_type() -> anyhow::Result<()> {
        upsert_round_trip(pool("types").await?).await
    }

    #[tokio::test]
    async fn misfits_are_refused_naming_the_column() -> anyhow::Result<()> {
        misfits_are_refused(pool("types").await?, -5000).await
    }

    /// PostgreSQL's wider range: BC dates and years past 9999, through COPY and
    /// through UNNEST.
    #[tokio::test]
    async fn bc_and_five_digit_years() -> anyhow::Result<()> {
        let pool = pool("types").await?;
        let mut rows = samples();
        rows[0].ts = Utc.with_ymd_and_hms(-43, 3, 15, 12, 0, 0).unwrap(); // 44 BC
        rows[0].dt = date(0, 12, 31); // 1 BC
        rows[0].wall = date(-4712, 1, 1).and_hms_opt(12, 0, 0).unwrap();
        rows[1].ts = Utc.with_ymd_and_hms(20_000, 1, 1, 0, 0, 0).unwrap();
        rows[1].dt = date(200_000, 2, 29);
        rows[1].wall = date(10_000, 1, 1).and_hms_micro_opt(0, 0, 0, 1).unwrap();
        let want: Vec<Typed> = rows.iter().cloned().map(stored).collect();
        let copy = TableSink::<sqlx::Postgres, Typed>::new(table())?;
        copy.create_table(&pool).await?;
        write(&pool, &copy, &rows).await?;
        assert_eq!(sqlx::Postgres::read(&pool).await?, want);
        let text: String = sqlx::query_scalar("SELECT dt::text FROM typed WHERE id = 1")
            .fetch_one(&pool)
            .await?;
        assert_eq!(text, "0001-12-31 BC");
        sqlx::query("DELETE FROM typed").execute(&pool).await?;
        let unnest = copy.with_mode(WriteMode::Upsert {
            key: vec!["id".into()],
        })?;
        sqlx::query("ALTER TABLE typed ADD PRIMARY KEY (id)")
            .execute(&pool)
            .await?;
        write(&pool, &unnest, &rows).await?;
        assert_eq!(sqlx::Postgres::read(&pool).await?, want);
        Ok(())
    }

    #[tokio::test]
    async fn table_has_the_documented_column_types() -> anyhow::Result<()> {
        let pool = pool("types").await?;
        TableSink::<sqlx::Postgres, Typed>::new(table())?
            .create_table(&pool)
            .await?;
        let cols: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, format_type(atttypid, atttypmod) FROM information_schema.columns \
             JOIN pg_attribute ON attrelid = 'typed'::regclass AND attname = column_name \
             WHERE table_schema = current_schema() AND table_name = 'typed' ORDER BY ordinal_position",
        )
        .fetch_all(&pool)
        .await?;
        let types: Vec<&str> = cols.iter().map(|c| c.1.as_str()).collect();
        assert_eq!(
            types,
            [
                "bigint",
                "numeric(12,2)",
                "numeric(6,4)",
                "numeric(38,10)",
                "timestamp with time zone",
                "timestamp with time zone",
                "timestamp without time zone",
                "date",
                "date",
                "time without time zone",
                "uuid",
                "uuid",
                "jsonb",
                "jsonb"
            ]
        );
        Ok(())
    }
}

mod mysql {
    use super::*;

    /// A pool on a fresh database whose session time zone is not UTC.
    async fn pool(test: &str) -> anyhow::Result<sqlx::MySqlPool> {
        let (_, db) = common::mysql(test).await?;
        let opts = sqlx::mysql::MySqlConnectOptions::from_str(common::MY_URL)?.database(&db);
        Ok(sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(2)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("SET time_zone = '+05:30'")
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?)
    }

    #[tokio::test]
    async fn insert_round_trips_every_column_type() -> anyhow::Result<()> {
        insert_round_trip(pool("types").await?).await
    }

    #[tokio::test]
    async fn upsert_round_trips_every_column_type() -> anyhow::Result<()> {
        upsert_round_trip(pool("types").await?).await
    }

    #[tokio::test]
    async fn misfits_are_refused_naming_the_column() -> anyhow::Result<()> {
        misfits_are_refused(pool("types").await?, 10_000).await
    }

    #[tokio::test]
    async fn table_has_the_documented_column_types() -> anyhow::Result<()> {
        let pool = pool("types").await?;
        TableSink::<sqlx::MySql, Typed>::new(table())?
            .create_table(&pool)
            .await?;
        let types: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(COLUMN_TYPE AS CHAR) FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = 'typed' ORDER BY ordinal_position",
        )
        .fetch_all(&pool)
        .await?;
        let json = types[12].as_str(); // MariaDB: longtext; MySQL: json
        assert!(json == "longtext" || json == "json", "{json}");
        assert!(types[0].starts_with("bigint"), "{}", types[0]);
        assert_eq!(
            &types[1..12],
            [
                "decimal(12,2)",
                "decimal(6,4)",
                "decimal(38,10)",
                "datetime(6)",
                "datetime(6)",
                "datetime(6)",
                "date",
                "date",
                "time(6)",
                "char(36)",
                "char(36)",
            ]
        );
        Ok(())
    }
}
