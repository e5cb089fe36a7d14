//! The column types beyond the scalars: exact decimals, dates and times, UUIDs and
//! JSON. Their [`ToValue`] implementations, the check every value passes before it is
//! sent (so that nothing is rounded, clamped or nulled by the server), and the text
//! forms SQLite stores.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use rust_decimal::Decimal;

use crate::{ColumnType, DialectKind, ToValue, Value};

/// A decimal for a `NUMERIC(P, S)` column: `P` digits in all, `S` after the point.
/// A bare [`Decimal`] maps to `NUMERIC(38, 10)`; wrap it to choose the column.
///
/// ```
/// use weir_sql::{rust_decimal::Decimal, ColumnType, Numeric, Row, ToValue, Value};
///
/// #[derive(Row)]
/// struct Payment {
///     id: i64,
///     amount: Numeric<12, 2>, // NUMERIC(12, 2) / DECIMAL(12, 2)
///     fee: Option<Numeric<6, 4>>,
/// }
/// let cols = Payment::columns()?;
/// assert_eq!(cols[1].ty, ColumnType::Decimal { precision: 12, scale: 2 });
/// assert!(cols[2].nullable);
///
/// let amount = Numeric::<12, 2>(Decimal::new(1999, 2)); // 19.99
/// assert_eq!(amount.to_value(), Value::Decimal(Decimal::new(1999, 2)));
/// assert_eq!(Decimal::from(amount).to_string(), "19.99");
/// # Ok::<(), weir_sql::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Numeric<const P: u8, const S: u8>(pub Decimal);

impl<const P: u8, const S: u8> From<Decimal> for Numeric<P, S> {
    fn from(d: Decimal) -> Self {
        Self(d)
    }
}

impl<const P: u8, const S: u8> From<Numeric<P, S>> for Decimal {
    fn from(n: Numeric<P, S>) -> Self {
        n.0
    }
}

impl<const P: u8, const S: u8> std::fmt::Display for Numeric<P, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

/// Serialized as the decimal's exact string (`"19.99"`).
impl<const P: u8, const S: u8> serde::Serialize for Numeric<P, S> {
    fn serialize<Z: serde::Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        serializer.collect_str(&self.0)
    }
}

/// Deserialized from what decoders produce for a decimal, so that a decoded record's
/// field needs no hand conversion: a string (`"19.99"`, exact), an integer, a float
/// (read through its shortest text, so JSON's `19.99` is 19.99), or **bytes**: a
/// big-endian two's-complement unscaled integer of at most 16 bytes at scale `S`,
/// which is how Avro's `decimal` logical type (on `bytes` or `fixed`) and Kafka
/// Connect's `Decimal` carry it. The value is not checked against `P` here; the sink
/// refuses one that does not fit.
///
/// ```
/// use weir_sql::Numeric;
/// #[derive(serde::Deserialize)]
/// struct Order { amount: Numeric<12, 2> }
/// let o: Order = serde_json::from_str(r#"{"amount": "19.99"}"#)?;
/// assert_eq!(o.amount.to_string(), "19.99");
/// let o: Order = serde_json::from_str(r#"{"amount": 19.99}"#)?;
/// assert_eq!(o.amount.to_string(), "19.99");
/// // Avro decimal(12, 2) bytes of -1.50: the unscaled -150 in two's complement
/// let n: Numeric<12, 2> = serde::Deserialize::deserialize(
///     serde::de::value::BytesDeserializer::<serde::de::value::Error>::new(&[0xff, 0x6a]),
/// )?;
/// assert_eq!(n.to_string(), "-1.50");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<'de, const P: u8, const S: u8> serde::Deserialize<'de> for Numeric<P, S> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NumericVisitor::<P, S>)
    }
}

struct NumericVisitor<const P: u8, const S: u8>;

impl<const P: u8, const S: u8> serde::de::Visitor<'_> for NumericVisitor<P, S> {
    type Value = Numeric<P, S>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a decimal for NUMERIC({P}, {S}): a string, a number, or big-endian \
             two's-complement unscaled bytes"
        )
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        use std::str::FromStr;
        Decimal::from_str(v)
            .or_else(|_| Decimal::from_scientific(v))
            .map(Numeric)
            .map_err(|e| E::custom(format!("{v:?} is not a decimal: {e}")))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Numeric(Decimal::from(v)))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Numeric(Decimal::from(v)))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if !v.is_finite() {
            return Err(E::custom(format!("{v} is not a decimal")));
        }
        self.visit_str(&v.to_string())
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        if v.len() > 16 {
            return Err(E::custom(format!(
                "a decimal of {} bytes is wider than 128 bits",
                v.len()
            )));
        }
        let negative = v.first().is_some_and(|b| b & 0x80 != 0);
        let mut buf = if negative { [0xff_u8; 16] } else { [0_u8; 16] };
        buf[16 - v.len()..].copy_from_slice(v);
        let unscaled = i128::from_be_bytes(buf);
        Decimal::try_from_i128_with_scale(unscaled, u32::from(S))
            .map(Numeric)
            .map_err(|e| E::custom(format!("unscaled {unscaled} at scale {S}: {e}")))
    }
}

impl<const P: u8, const S: u8> ToValue for Numeric<P, S> {
    const TYPE: ColumnType = ColumnType::Decimal {
        precision: P,
        scale: S,
    };
    fn to_value(&self) -> Value<'_> {
        Value::Decimal(self.0)
    }
}

/// The column a bare [`Decimal`] gets: `NUMERIC(38, 10)`, 28 digits before the point
/// and 10 after.
///
/// ```
/// use weir_sql::{rust_decimal::Decimal, ColumnType, ToValue, DEFAULT_DECIMAL};
/// assert_eq!(<Decimal as ToValue>::TYPE, DEFAULT_DECIMAL);
/// assert_eq!(DEFAULT_DECIMAL, ColumnType::Decimal { precision: 38, scale: 10 });
/// ```
pub const DEFAULT_DECIMAL: ColumnType = ColumnType::Decimal {
    precision: 38,
    scale: 10,
};

impl ToValue for Decimal {
    const TYPE: ColumnType = DEFAULT_DECIMAL;
    fn to_value(&self) -> Value<'_> {
        Value::Decimal(*self)
    }
}

impl ToValue for DateTime<Utc> {
    const TYPE: ColumnType = ColumnType::TimestampTz;
    fn to_value(&self) -> Value<'_> {
        Value::TimestampTz(*self)
    }
}

/// Written as the same instant in UTC (the offset itself is not stored, as in a
/// PostgreSQL `TIMESTAMPTZ`).
impl ToValue for DateTime<FixedOffset> {
    const TYPE: ColumnType = ColumnType::TimestampTz;
    fn to_value(&self) -> Value<'_> {
        Value::TimestampTz(self.with_timezone(&Utc))
    }
}

impl ToValue for NaiveDateTime {
    const TYPE: ColumnType = ColumnType::Timestamp;
    fn to_value(&self) -> Value<'_> {
        Value::Timestamp(*self)
    }
}

impl ToValue for NaiveDate {
    const TYPE: ColumnType = ColumnType::Date;
    fn to_value(&self) -> Value<'_> {
        Value::Date(*self)
    }
}

impl ToValue for NaiveTime {
    const TYPE: ColumnType = ColumnType::Time;
    fn to_value(&self) -> Value<'_> {
        Value::Time(*self)
    }
}

impl ToValue for uuid::Uuid {
    const TYPE: ColumnType = ColumnType::Uuid;
    fn to_value(&self) -> Value<'_> {
        Value::Uuid(*self)
    }
}

impl ToValue for serde_json::Value {
    const TYPE: ColumnType = ColumnType::Json;
    fn to_value(&self) -> Value<'_> {
        Value::Json(self)
    }
}

/// The years a date or timestamp may have on `dialect`: PostgreSQL from 4713 BC
/// (year -4712 in chrono's proleptic numbering, where 1 BC is year 0); MySQL's
/// `DATETIME`/`DATE` and SQLite's fixed-width text 0001 to 9999 (Protobuf's
/// `Timestamp` range too).
fn years(dialect: DialectKind) -> (i32, i32) {
    match dialect {
        DialectKind::Postgres => (-4712, i32::MAX),
        DialectKind::MySql | DialectKind::Sqlite => (1, 9999),
    }
}

fn dialect_name(dialect: DialectKind) -> &'static str {
    match dialect {
        DialectKind::Postgres => "PostgreSQL",
        DialectKind::MySql => "MySQL/MariaDB",
        DialectKind::Sqlite => "SQLite",
    }
}

fn check_year(
    what: &str,
    shown: &dyn std::fmt::Display,
    year: i32,
    d: DialectKind,
) -> Result<(), String> {
    let (lo, hi) = years(d);
    if year < lo || year > hi {
        let hi = if hi == i32::MAX {
            String::from("on")
        } else {
            format!("to {hi}")
        };
        return Err(format!(
            "{what} {shown} is out of range: {} stores the years {lo} {hi}",
            dialect_name(d)
        ));
    }
    Ok(())
}

fn check_leap(what: &str, shown: &dyn std::fmt::Display, nanos: u32) -> Result<(), String> {
    if nanos >= 1_000_000_000 {
        return Err(format!(
            "{what} {shown} is a leap second, which the databases do not store"
        ));
    }
    Ok(())
}

fn check_decimal(d: Decimal, precision: u8, scale: u8) -> Result<(), String> {
    let n = d.normalize();
    if n.scale() > u32::from(scale) {
        return Err(format!(
            "decimal {d} has {} digits after the point but the column (NUMERIC({precision}, \
             {scale})) keeps {scale}: it is refused, not rounded",
            n.scale()
        ));
    }
    let int = n.trunc().mantissa().unsigned_abs();
    let digits = if int == 0 { 0 } else { int.ilog10() + 1 };
    let room = u32::from(precision - scale);
    if digits > room {
        return Err(format!(
            "decimal {d} has {digits} digits before the point but the column \
             (NUMERIC({precision}, {scale})) holds {room}"
        ));
    }
    Ok(())
}

/// The column type a value variant belongs to, for the mismatch message.
fn variant(v: &Value<'_>) -> &'static str {
    match v {
        Value::Null(_) => "NULL",
        Value::Bool(_) => "Bool",
        Value::SmallInt(_) => "SmallInt",
        Value::Int(_) => "Int",
        Value::BigInt(_) => "BigInt",
        Value::Double(_) => "Double",
        Value::Text(_) => "Text",
        Value::Bytes(_) => "Bytes",
        Value::Decimal(_) => "Decimal",
        Value::TimestampTz(_) => "TimestampTz",
        Value::Timestamp(_) => "Timestamp",
        Value::Date(_) => "Date",
        Value::Time(_) => "Time",
        Value::Uuid(_) => "Uuid",
        Value::Json(_) => "Json",
    }
}

/// Check `v` before it is sent to a column of type `ty`: its variant is the column's
/// (a mismatch would be stored as `NULL` or coerced by some paths), a decimal fits
/// without rounding, a date or timestamp is in the dialect's range and is not a leap
/// second. The reason names the value and the limit; the caller adds table and column.
pub(crate) fn check(ty: ColumnType, v: &Value<'_>, d: DialectKind) -> Result<(), String> {
    use ColumnType as T;
    match (ty, v) {
        (_, Value::Null(_))
        | (T::Bool, Value::Bool(_))
        | (T::SmallInt, Value::SmallInt(_))
        | (T::Int, Value::Int(_))
        | (T::BigInt, Value::BigInt(_))
        | (T::Double, Value::Double(_))
        | (T::Text, Value::Text(_))
        | (T::Bytes, Value::Bytes(_))
        | (T::Uuid, Value::Uuid(_))
        | (T::Json, Value::Json(_)) => Ok(()),
        (T::Decimal { precision, scale }, Value::Decimal(x)) => check_decimal(*x, precision, scale),
        (T::TimestampTz, Value::TimestampTz(t)) => {
            check_year("timestamp", t, t.year(), d)?;
            check_leap("timestamp", t, t.nanosecond())
        }
        (T::Timestamp, Value::Timestamp(t)) => {
            check_year("timestamp", t, t.year(), d)?;
            check_leap("timestamp", t, t.nanosecond())
        }
        (T::Date, Value::Date(x)) => check_year("date", x, x.year(), d),
        (T::Time, Value::Time(t)) => check_leap("time", t, t.nanosecond()),
        _ => Err(format!(
            "the row gave a {} value for a column of type {}",
            variant(v),
            ty.sql_type(d, false)
        )),
    }
}

/// Bring a checked value into the form every dialect stores: a decimal with exactly
/// its column's fractional digits (what SQLite's text then shows; the servers pad
/// the same way), never `-0`; dates and times truncated to whole microseconds.
pub(crate) fn prepare(ty: ColumnType, v: &mut Value<'_>) {
    match (ty, v) {
        (ColumnType::Decimal { scale, .. }, Value::Decimal(d)) => {
            d.rescale(u32::from(scale));
            if d.is_zero() {
                d.set_sign_positive(true);
            }
        }
        (_, Value::TimestampTz(t)) => *t = micros(t.naive_utc()).and_utc(),
        (_, Value::Timestamp(t)) => *t = micros(*t),
        (_, Value::Time(t)) => *t = micros_time(*t),
        _ => {}
    }
}

/// A decimal's text, never `-0`.
pub(crate) fn decimal_text(d: Decimal) -> String {
    let mut r = d;
    if r.is_zero() {
        r.set_sign_positive(true);
    }
    r.to_string()
}

/// `t` truncated to whole microseconds (what every dialect stores).
pub(crate) fn micros(t: NaiveDateTime) -> NaiveDateTime {
    t.with_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t)
}

/// `t` truncated to whole microseconds.
pub(crate) fn micros_time(t: NaiveTime) -> NaiveTime {
    t.with_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t)
}

/// SQLite's text for an instant: `2024-05-06T07:08:09.123456Z`.
pub(crate) fn timestamptz_text(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// SQLite's text for a timestamp without time zone: `2024-05-06T07:08:09.123456`.
pub(crate) fn timestamp_text(t: &NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// SQLite's text for a date: `2024-05-06`.
pub(crate) fn date_text(d: &NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// SQLite's text for a time of day: `07:08:09.123456`.
pub(crate) fn time_text(t: &NaiveTime) -> String {
    t.format("%H:%M:%S%.6f").to_string()
}

/// Days since 0001-01-01 (for de-duplication keys).
pub(crate) fn days(d: &NaiveDate) -> i32 {
    d.num_days_from_ce()
}

/// Microseconds since midnight (for de-duplication keys).
pub(crate) fn time_micros(t: &NaiveTime) -> u64 {
    u64::from(t.num_seconds_from_midnight()) * 1_000_000 + u64::from(t.nanosecond() / 1000)
}

/// A de-duplication key for a date and time, to the microsecond.
pub(crate) fn key_datetime(t: &NaiveDateTime, out: &mut Vec<u8>) {
    out.extend_from_slice(&days(&t.date()).to_le_bytes());
    out.extend_from_slice(&time_micros(&t.time()).to_le_bytes());
}

/// How many bytes a JSON document's compact text takes, without building it.
pub(crate) fn json_len(j: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    match serde_json::to_writer(&mut c, j) {
        Ok(()) => c.0,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn decimals_fit_or_are_refused() {
        let ty = |p, s| ColumnType::Decimal {
            precision: p,
            scale: s,
        };
        let ok = |s: &str, p, sc| check(ty(p, sc), &Value::Decimal(dec(s)), DialectKind::Postgres);
        assert!(ok("999.99", 5, 2).is_ok());
        assert!(ok("-999.99", 5, 2).is_ok());
        assert!(
            ok("1.500", 5, 2).is_ok(),
            "trailing zeros are not digits lost"
        );
        assert!(ok("0.01", 2, 2).is_ok());
        assert!(ok("0", 1, 0).is_ok());
        let e = ok("1000.00", 5, 2).unwrap_err();
        assert!(
            e.contains("4 digits before the point") && e.contains("holds 3"),
            "{e}"
        );
        let e = ok("1.005", 5, 2).unwrap_err();
        assert!(
            e.contains("3 digits after the point") && e.contains("not rounded"),
            "{e}"
        );
        assert!(ok("1", 2, 2).is_err());
    }

    #[test]
    fn prepared_decimals_have_the_column_scale() {
        let text = |s: &str, scale| {
            let mut v = Value::Decimal(dec(s));
            prepare(
                ColumnType::Decimal {
                    precision: 20,
                    scale,
                },
                &mut v,
            );
            match v {
                Value::Decimal(d) => decimal_text(d),
                _ => unreachable!(),
            }
        };
        assert_eq!(text("1.5", 2), "1.50");
        assert_eq!(text("-0.00", 2), "0.00");
        assert_eq!(text("12", 0), "12");
        assert_eq!(text("-7.25", 4), "-7.2500");
        assert_eq!(text("1.500", 2), "1.50");
    }

    #[test]
    fn dates_out_of_range_name_the_limit() {
        let far = NaiveDate::from_ymd_opt(10_000, 1, 1).unwrap();
        let e = check(ColumnType::Date, &Value::Date(far), DialectKind::MySql).unwrap_err();
        assert!(e.contains("10000-01-01") && e.contains("1 to 9999"), "{e}");
        assert!(check(ColumnType::Date, &Value::Date(far), DialectKind::Postgres).is_ok());
        let bc = NaiveDate::from_ymd_opt(-5000, 1, 1).unwrap();
        assert!(check(ColumnType::Date, &Value::Date(bc), DialectKind::Postgres).is_err());
    }

    #[test]
    fn mismatched_variants_are_refused() {
        let e = check(ColumnType::BigInt, &Value::Int(1), DialectKind::Postgres).unwrap_err();
        assert!(e.contains("Int value") && e.contains("BIGINT"), "{e}");
        assert!(check(
            ColumnType::Uuid,
            &Value::Null(ColumnType::Text),
            DialectKind::Sqlite
        )
        .is_ok());
    }

    #[test]
    fn texts_are_fixed_width_and_truncated_to_micros() {
        let t = NaiveDate::from_ymd_opt(2024, 5, 6)
            .unwrap()
            .and_hms_nano_opt(7, 8, 9, 123_456_789)
            .unwrap();
        assert_eq!(timestamp_text(&micros(t)), "2024-05-06T07:08:09.123456");
        assert_eq!(
            timestamptz_text(&micros(t).and_utc()),
            "2024-05-06T07:08:09.123456Z"
        );
        assert_eq!(time_text(&micros_time(t.time())), "07:08:09.123456");
        assert_eq!(date_text(&t.date()), "2024-05-06");
        assert_eq!(
            json_len(&serde_json::json!({"a": [1, "x"]})),
            r#"{"a":[1,"x"]}"#.len()
        );
    }
}
