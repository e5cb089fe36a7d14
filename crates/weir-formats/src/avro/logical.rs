//! Avro's date and time logical types as chrono values, for serde's
//! `#[serde(with = "...")]`: through serde, apache-avro hands a `timestamp-micros`
//! or a `date` to a typed struct as the bare integer, so a `DateTime<Utc>` or
//! `NaiveDate` field needs one of these to decode without hand conversion. Each module
//! has `deserialize` and `serialize`, and an `option` module for `Option<_>` fields
//! (a union with `null`).
//!
//! The other logical types need no helper: a `uuid` decodes into [`uuid::Uuid`]
//! directly, and a `decimal` (on `bytes` or `fixed`) into weir-sql's `Numeric<P, S>`,
//! which reads the two's-complement bytes at its scale `S`.
//!
//! ```
//! use weir_formats::avro::{logical, parse_schema, Avro};
//! use weir_formats::{Context, Part, SyncDeserializer, SyncSerializer};
//! use chrono::{DateTime, NaiveDate, Utc};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! struct Event {
//!     #[serde(with = "logical::timestamp_micros")]
//!     at: DateTime<Utc>,
//!     #[serde(with = "logical::date")]
//!     day: NaiveDate,
//!     #[serde(with = "logical::timestamp_millis::option")]
//!     seen: Option<DateTime<Utc>>,
//! }
//! let schema = parse_schema(r#"{"type":"record","name":"Event","fields":[
//!     {"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}},
//!     {"name":"day","type":{"type":"int","logicalType":"date"}},
//!     {"name":"seen","type":["null",{"type":"long","logicalType":"timestamp-millis"}]}]}"#)?;
//! let avro = Avro::new(&schema)?;
//! let e = Event {
//!     at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
//!     day: NaiveDate::from_ymd_opt(2024, 2, 29).unwrap(),
//!     seen: None,
//! };
//! let bytes = avro.encode(&e)?;
//! let topic = "events".into();
//! let back: Event = avro.decode(Some(&bytes), &Context::new(&topic, 0, 0, Part::Value))?;
//! assert_eq!(back, e);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};

/// One logical type: `$name` carries `$ty`, as the integer `$to` computes and `$from`
/// reads back (`None`: out of chrono's range).
macro_rules! logical {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $w:ty, |$x:ident| $to:expr, |$n:ident| $from:expr) => {
        $(#[$doc])*
        pub mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn to($x: &$ty) -> i64 {
                $to
            }

            /// The integer in the width the schema has (`int` or `long`).
            fn narrow<E: serde::ser::Error>(v: &$ty) -> Result<$w, E> {
                let n = to(v);
                <$w>::try_from(n).map_err(|_| {
                    E::custom(format!("{n} does not fit Avro {}", stringify!($name)))
                })
            }

            fn from($n: i64) -> Option<$ty> {
                $from
            }

            /// Read the logical type's integer into the chrono value.
            pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                // Read in the schema's width: apache-avro refuses a `date` read as i64.
                let n = i64::from(<$w as serde::Deserialize>::deserialize(d)?);
                from(n).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{n} is out of range for Avro {}",
                        stringify!($name)
                    ))
                })
            }

            /// Write the chrono value as the logical type's integer.
            pub fn serialize<S: serde::Serializer>(v: &$ty, s: S) -> Result<S::Ok, S::Error> {
                serde::Serialize::serialize(&narrow::<S::Error>(v)?, s)
            }

            /// The same for an `Option` field (a union with `null`).
            pub mod option {
                use super::{from, narrow};
                #[allow(unused_imports)]
                use super::super::*;

                /// Read `null` or the logical type's integer.
                pub fn deserialize<'de, D: serde::Deserializer<'de>>(
                    d: D,
                ) -> Result<Option<$ty>, D::Error> {
                    match <Option<$w> as serde::Deserialize>::deserialize(d)? {
                        None => Ok(None),
                        Some(n) => from(i64::from(n)).map(Some).ok_or_else(|| {
                            serde::de::Error::custom(format!(
                                "{n} is out of range for Avro {}",
                                stringify!($name)
                            ))
                        }),
                    }
                }

                /// Write `null` or the logical type's integer.
                pub fn serialize<S: serde::Serializer>(
                    v: &Option<$ty>,
                    s: S,
                ) -> Result<S::Ok, S::Error> {
                    match v {
                        Some(v) => s.serialize_some(&narrow::<S::Error>(v)?),
                        None => s.serialize_none(),
                    }
                }
            }
        }
    };
}

fn epoch() -> NaiveDate {
    NaiveDate::default() // 1970-01-01
}

fn micros_of_day(t: &NaiveTime) -> i64 {
    i64::from(t.num_seconds_from_midnight()) * 1_000_000 + i64::from(t.nanosecond() / 1000)
}

logical!(
    /// `timestamp-micros` (long) ↔ `DateTime<Utc>`.
    timestamp_micros, DateTime<Utc>, i64, |t| t.timestamp_micros(), |n| DateTime::from_timestamp_micros(n)
);
logical!(
    /// `timestamp-millis` (long) ↔ `DateTime<Utc>`.
    timestamp_millis, DateTime<Utc>, i64, |t| t.timestamp_millis(), |n| DateTime::from_timestamp_millis(n)
);
logical!(
    /// `local-timestamp-micros` (long) ↔ `NaiveDateTime`.
    local_timestamp_micros, NaiveDateTime, i64, |t| t.and_utc().timestamp_micros(),
    |n| DateTime::from_timestamp_micros(n).map(|t| t.naive_utc())
);
logical!(
    /// `local-timestamp-millis` (long) ↔ `NaiveDateTime`.
    local_timestamp_millis, NaiveDateTime, i64, |t| t.and_utc().timestamp_millis(),
    |n| DateTime::from_timestamp_millis(n).map(|t| t.naive_utc())
);
logical!(
    /// `date` (int, days since 1970-01-01) ↔ `NaiveDate`.
    date, NaiveDate, i32, |d| d.signed_duration_since(epoch()).num_days(),
    |n| epoch().checked_add_signed(chrono::TimeDelta::try_days(n)?)
);
logical!(
    /// `time-micros` (long, microseconds after midnight) ↔ `NaiveTime`.
    time_micros, NaiveTime, i64, |t| micros_of_day(t),
    |n| {
        let (s, us) = (u32::try_from(n.div_euclid(1_000_000)).ok()?, n.rem_euclid(1_000_000));
        NaiveTime::from_num_seconds_from_midnight_opt(s, u32::try_from(us).ok()? * 1000)
    }
);
logical!(
    /// `time-millis` (int, milliseconds after midnight) ↔ `NaiveTime`.
    time_millis, NaiveTime, i32, |t| micros_of_day(t) / 1000,
    |n| {
        let (s, ms) = (u32::try_from(n.div_euclid(1000)).ok()?, n.rem_euclid(1000));
        NaiveTime::from_num_seconds_from_midnight_opt(s, u32::try_from(ms).ok()? * 1_000_000)
    }
);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::avro::{parse_schema, Avro};
    use crate::{Context, Part, SyncDeserializer, SyncSerializer};

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Times {
        #[serde(with = "time_millis")]
        tm: NaiveTime,
        #[serde(with = "time_micros")]
        tu: NaiveTime,
        #[serde(with = "local_timestamp_millis")]
        lm: NaiveDateTime,
        #[serde(with = "local_timestamp_micros::option")]
        lu: Option<NaiveDateTime>,
        #[serde(with = "date::option")]
        d: Option<NaiveDate>,
    }

    const SCHEMA: &str = r#"{"type":"record","name":"Times","fields":[
        {"name":"tm","type":{"type":"int","logicalType":"time-millis"}},
        {"name":"tu","type":{"type":"long","logicalType":"time-micros"}},
        {"name":"lm","type":{"type":"long","logicalType":"local-timestamp-millis"}},
        {"name":"lu","type":["null",{"type":"long","logicalType":"local-timestamp-micros"}]},
        {"name":"d","type":["null",{"type":"int","logicalType":"date"}]}]}"#;

    #[test]
    fn every_logical_type_round_trips() {
        let avro = Avro::new(&parse_schema(SCHEMA).unwrap()).unwrap();
        let topic = "t".into();
        let ctx = Context::new(&topic, 0, 0, Part::Value);
        let at = NaiveDate::from_ymd_opt(1969, 12, 31)
            .unwrap()
            .and_hms_micro_opt(23, 59, 58, 999_001)
            .unwrap();
        for (lu, d) in [(Some(at), Some(at.date())), (None, None)] {
            let v = Times {
                tm: NaiveTime::from_hms_milli_opt(23, 59, 59, 999).unwrap(),
                tu: NaiveTime::from_hms_micro_opt(0, 0, 0, 1).unwrap(),
                lm: at.with_nanosecond(999_000_000).unwrap(),
                lu,
                d,
            };
            let bytes = avro.encode(&v).unwrap();
            let back: Times = avro.decode(Some(&bytes), &ctx).unwrap();
            assert_eq!(back, v);
        }
    }

    #[test]
    fn out_of_range_integers_are_errors_naming_the_type() {
        // A time-micros past midnight is no NaiveTime: the decode fails, it does not wrap.
        #[derive(serde::Serialize)]
        struct Raw {
            tm: i32,
            tu: i64,
            lm: i64,
            lu: Option<i64>,
            d: Option<i32>,
        }
        let avro = Avro::new(&parse_schema(SCHEMA).unwrap()).unwrap();
        let raw = Raw {
            tm: 0,
            tu: 86_400_000_000,
            lm: 0,
            lu: None,
            d: None,
        };
        let bytes = avro.encode(&raw).unwrap();
        let topic = "t".into();
        let decoded: Result<Times, _> =
            avro.decode(Some(&bytes), &Context::new(&topic, 0, 7, Part::Value));
        let err = decoded.unwrap_err().to_string();
        assert!(err.contains("time_micros"), "{err}");
        assert!(err.contains("t/0@7"), "{err}");
    }
}
