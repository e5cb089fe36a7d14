//! PostgreSQL: `COPY ... FROM STDIN` for inserts, `UNNEST` arrays for upserts.

use std::fmt::Write as _;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgConnection, PgRow};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Postgres, Row as _};

use crate::dialect::{BulkPlan, Dialect};
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

use crate::types::{decimal_text, micros, micros_time};
use crate::{ColumnType, DialectKind, Value};

fn bind<'q>(
    q: Query<'q, Postgres, PgArguments>,
    v: &Value<'_>,
) -> Query<'q, Postgres, PgArguments> {
    match *v {
        Value::Null(ty) => match ty {
            ColumnType::Bool => q.bind(None::<bool>),
            ColumnType::SmallInt => q.bind(None::<i16>),
            ColumnType::Int => q.bind(None::<i32>),
            ColumnType::BigInt => q.bind(None::<i64>),
            ColumnType::Double => q.bind(None::<f64>),
            ColumnType::Text => q.bind(None::<String>),
            ColumnType::Bytes => q.bind(None::<Vec<u8>>),
            ColumnType::Decimal { .. } => q.bind(None::<rust_decimal::Decimal>),
            ColumnType::TimestampTz => q.bind(None::<chrono::DateTime<chrono::Utc>>),
            ColumnType::Timestamp => q.bind(None::<NaiveDateTime>),
            ColumnType::Date => q.bind(None::<NaiveDate>),
            ColumnType::Time => q.bind(None::<NaiveTime>),
            ColumnType::Uuid => q.bind(None::<uuid::Uuid>),
            ColumnType::Json => q.bind(None::<serde_json::Value>),
        },
        Value::Bool(b) => q.bind(b),
        Value::SmallInt(i) => q.bind(i),
        Value::Int(i) => q.bind(i),
        Value::BigInt(i) => q.bind(i),
        Value::Double(f) => q.bind(f),
        Value::Text(s) => q.bind(s),
        Value::Bytes(b) => q.bind(b),
        Value::Decimal(d) => q.bind(d),
        Value::TimestampTz(t) => q.bind(micros(t.naive_utc()).and_utc()),
        Value::Timestamp(t) => q.bind(micros(t)),
        Value::Date(d) => q.bind(d),
        Value::Time(t) => q.bind(micros_time(t)),
        Value::Uuid(u) => q.bind(u),
        Value::Json(j) => q.bind(j),
    }
}

fn query<'q>(sql: &Arc<str>, args: &[Value<'_>]) -> Query<'q, Postgres, PgArguments> {
    let mut q = sqlx::query(AssertSqlSafe(sql.clone()));
    for a in args {
        q = bind(q, a);
    }
    q
}

/// Append a decimal integer.
fn push_int(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0_u8; 20];
    let mut i = buf.len();
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// Append `v` in COPY text format.
fn copy_text(out: &mut Vec<u8>, v: &Value<'_>) {
    match *v {
        Value::Null(_) => out.extend_from_slice(b"\\N"),
        Value::Bool(b) => out.push(if b { b't' } else { b'f' }),
        Value::SmallInt(i) => push_int(out, i64::from(i)),
        Value::Int(i) => push_int(out, i64::from(i)),
        Value::BigInt(i) => push_int(out, i),
        Value::Double(f) => {
            if f.is_nan() {
                out.extend_from_slice(b"NaN");
            } else if f.is_infinite() {
                out.extend_from_slice(if f > 0.0 { b"Infinity" } else { b"-Infinity" });
            } else {
                let _ = write!(ByteWriter(out), "{f:?}");
            }
        }
        Value::Text(s) => copy_escaped(out, s),
        Value::Decimal(d) => out.extend_from_slice(decimal_text(d).as_bytes()),
        Value::TimestampTz(t) => copy_datetime(out, &micros(t.naive_utc()), "+00"),
        Value::Timestamp(t) => copy_datetime(out, &micros(t), ""),
        Value::Date(d) => {
            let bc = copy_date(out, &d);
            if bc {
                out.extend_from_slice(b" BC");
            }
        }
        Value::Time(t) => copy_time(out, &micros_time(t)),
        Value::Uuid(u) => {
            let mut buf = uuid::Uuid::encode_buffer();
            out.extend_from_slice(u.hyphenated().encode_lower(&mut buf).as_bytes());
        }
        // compact JSON has no raw newline or tab, but its escapes have backslashes
        Value::Json(j) => copy_escaped(out, &j.to_string()),
        Value::Bytes(b) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\\\x");
            for &x in b {
                out.push(HEX[usize::from(x >> 4)]);
                out.push(HEX[usize::from(x & 15)]);
            }
        }
    }
}

/// Append text with COPY's escapes (backslash, newline, carriage return, tab).
fn copy_escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !bytes
        .iter()
        .any(|b| matches!(b, b'\\' | b'\n' | b'\r' | b'\t'))
    {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(b),
        }
    }
}

/// Append `YYYY-MM-DD` in PostgreSQL's ISO input form; returns whether the date is
/// BC (chrono's year 0 is 1 BC), which PostgreSQL reads from a trailing ` BC`.
fn copy_date(out: &mut Vec<u8>, d: &NaiveDate) -> bool {
    let (year, bc) = match d.year() {
        y if y <= 0 => (1 - i64::from(y), true),
        y => (i64::from(y), false),
    };
    let _ = write!(ByteWriter(out), "{year:04}-{:02}-{:02}", d.month(), d.day());
    bc
}

/// Append `HH:MM:SS.ffffff`.
fn copy_time(out: &mut Vec<u8>, t: &NaiveTime) {
    let _ = write!(
        ByteWriter(out),
        "{:02}:{:02}:{:02}.{:06}",
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 1000
    );
}

/// Append a timestamp, `zone` after the time (`+00` for UTC: explicit, so the
/// session's `TimeZone` does not matter), ` BC` last when it is one.
fn copy_datetime(out: &mut Vec<u8>, t: &NaiveDateTime, zone: &str) {
    let bc = copy_date(out, &t.date());
    out.push(b' ');
    copy_time(out, &t.time());
    out.extend_from_slice(zone.as_bytes());
    if bc {
        out.extend_from_slice(b" BC");
    }
}

struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn column_array<'q>(
    q: Query<'q, Postgres, PgArguments>,
    ty: ColumnType,
    col: usize,
    ncols: usize,
    values: &[Value<'_>],
) -> Query<'q, Postgres, PgArguments> {
    let cells = values.iter().skip(col).step_by(ncols);
    macro_rules! arr {
        ($t:ty, $pat:pat => $e:expr) => {{
            let v: Vec<Option<$t>> = cells
                .map(|c| match *c {
                    $pat => Some($e),
                    _ => None,
                })
                .collect();
            q.bind(v)
        }};
    }
    match ty {
        ColumnType::Bool => arr!(bool, Value::Bool(b) => b),
        ColumnType::SmallInt => arr!(i16, Value::SmallInt(i) => i),
        ColumnType::Int => arr!(i32, Value::Int(i) => i),
        ColumnType::BigInt => arr!(i64, Value::BigInt(i) => i),
        ColumnType::Double => arr!(f64, Value::Double(f) => f),
        ColumnType::Text => arr!(&str, Value::Text(s) => s),
        ColumnType::Bytes => arr!(&[u8], Value::Bytes(b) => b),
        ColumnType::Decimal { .. } => arr!(rust_decimal::Decimal, Value::Decimal(d) => d),
        ColumnType::TimestampTz => {
            arr!(chrono::DateTime<chrono::Utc>, Value::TimestampTz(t) => micros(t.naive_utc()).and_utc())
        }
        ColumnType::Timestamp => arr!(NaiveDateTime, Value::Timestamp(t) => micros(t)),
        ColumnType::Date => arr!(NaiveDate, Value::Date(d) => d),
        ColumnType::Time => arr!(NaiveTime, Value::Time(t) => micros_time(t)),
        ColumnType::Uuid => arr!(uuid::Uuid, Value::Uuid(u) => u),
        ColumnType::Json => arr!(&serde_json::Value, Value::Json(j) => j),
    }
}

#[async_trait]
impl Dialect for Postgres {
    const KIND: DialectKind = DialectKind::Postgres;
    const BEGIN: &'static str = "BEGIN";
    const NOW: &'static str = "now()";
    const MAX_PARAMS: usize = 32_767;

    async fn execute(
        conn: &mut PgConnection,
        sql: &Arc<str>,
        args: &[Value<'_>],
    ) -> Result<u64, sqlx::Error> {
        Ok(query(sql, args).execute(conn).await?.rows_affected())
    }

    async fn fetch_claim(
        conn: &mut PgConnection,
        sql: &Arc<str>,
        args: &[Value<'_>],
    ) -> Result<Option<(i64, Option<i64>)>, sqlx::Error> {
        let row: Option<PgRow> = query(sql, args).fetch_optional(conn).await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    async fn fetch_offsets(
        conn: &mut PgConnection,
        sql: &Arc<str>,
        args: &[Value<'_>],
    ) -> Result<Vec<(String, i32, Option<i64>, i64, Option<String>)>, sqlx::Error> {
        let rows: Vec<PgRow> = query(sql, args).fetch_all(conn).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                ))
            })
            .collect()
    }

    async fn bulk_write(
        conn: &mut PgConnection,
        plan: &BulkPlan,
        values: &[Value<'_>],
    ) -> Result<u64, sqlx::Error> {
        let ncols = plan.columns.len();
        if ncols == 0 || values.is_empty() {
            return Ok(0);
        }
        if plan.upsert_keys.is_some() {
            let mut q = sqlx::query(AssertSqlSafe(plan.full.clone()));
            for (i, c) in plan.columns.iter().enumerate() {
                q = column_array(q, c.ty, i, ncols, values);
            }
            return Ok(q.execute(conn).await?.rows_affected());
        }
        let mut buf = Vec::with_capacity(values.len() * 12);
        for row in values.chunks(ncols) {
            for (i, v) in row.iter().enumerate() {
                if i > 0 {
                    buf.push(b'\t');
                }
                copy_text(&mut buf, v);
            }
            buf.push(b'\n');
        }
        let mut copy = conn.copy_in_raw(&plan.full).await?;
        if let Err(e) = copy.send(buf).await {
            let _ = copy.abort("weir: sending rows failed").await;
            return Err(e);
        }
        copy.finish().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_format_like_display() {
        for v in [0, 1, -1, 9, 10, -10, i64::MAX, i64::MIN, 1234567890] {
            let mut out = Vec::new();
            push_int(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
    }

    #[test]
    fn copy_text_escapes() {
        let mut out = Vec::new();
        for v in [
            Value::Text("a\tb\nc\\d\re"),
            Value::Null(ColumnType::Text),
            Value::Bytes(&[0, 255]),
            Value::Double(f64::INFINITY),
            Value::Double(0.5),
            Value::Bool(true),
        ] {
            copy_text(&mut out, &v);
            out.push(b'|');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\tb\\nc\\\\d\\re|\\N|\\\\x00ff|Infinity|0.5|t|"
        );
    }
}
