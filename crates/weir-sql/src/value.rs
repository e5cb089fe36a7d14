//! Mapping Rust values and structs to SQL columns without per-type SQL.

use std::borrow::Cow;

use crate::{DialectKind, Error, Ident, Result};

/// The SQL type of a column, as weir maps it to each dialect.
///
/// ```
/// use weir_sql::{ColumnType, DialectKind};
/// assert_eq!(ColumnType::Bytes.sql_name(DialectKind::Postgres, false), "BYTEA");
/// assert_eq!(
///     ColumnType::Text.sql_name(DialectKind::MySql, true),
///     "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ColumnType {
    /// `BOOLEAN`.
    Bool,
    /// 16-bit integer (`SMALLINT`).
    SmallInt,
    /// 32-bit integer (`INTEGER`).
    Int,
    /// 64-bit integer (`BIGINT`).
    BigInt,
    /// 64-bit float (`DOUBLE PRECISION`).
    Double,
    /// UTF-8 text.
    Text,
    /// Bytes (`BYTEA`, `BLOB`).
    Bytes,
    /// An exact decimal of at most `precision` digits, `scale` of them after the
    /// point: `NUMERIC(p, s)` (PostgreSQL), `DECIMAL(p, s)` (MySQL), and on SQLite
    /// `TEXT` holding the decimal string with exactly `scale` fractional digits
    /// (SQLite's `NUMERIC` affinity would turn it into a lossy 64-bit float).
    /// `precision` is 1 to [`MAX_DECIMAL_PRECISION`], `scale` at most `precision` and
    /// at most [`MAX_DECIMAL_SCALE`]. Values come from [`rust_decimal::Decimal`]
    /// (`NUMERIC(38, 10)`) or [`Numeric<P, S>`](crate::Numeric). A value with more
    /// fractional digits or more integer digits than the column holds is refused
    /// (never rounded).
    ///
    /// ```
    /// use weir_sql::{ColumnType, DialectKind};
    /// let money = ColumnType::Decimal { precision: 12, scale: 2 };
    /// assert_eq!(money.sql_type(DialectKind::Postgres, false), "NUMERIC(12, 2)");
    /// assert_eq!(money.sql_type(DialectKind::MySql, false), "DECIMAL(12, 2)");
    /// assert_eq!(money.sql_type(DialectKind::Sqlite, false), "TEXT");
    /// ```
    Decimal {
        /// Total number of digits.
        precision: u8,
        /// Digits after the decimal point.
        scale: u8,
    },
    /// An instant, with microsecond precision, from [`chrono::DateTime<Utc>`]:
    /// `TIMESTAMPTZ` (PostgreSQL), `DATETIME(6)` holding UTC (MySQL, whose
    /// `TIMESTAMP` ends in 2038), ISO-8601 `TEXT` `2024-05-06T07:08:09.123456Z`
    /// (SQLite: fixed width, so it sorts in time order, and SQLite's date functions
    /// read it). Finer digits are truncated.
    ///
    /// ```
    /// use weir_sql::{ColumnType, DialectKind};
    /// assert_eq!(ColumnType::TimestampTz.sql_name(DialectKind::Postgres, false), "TIMESTAMPTZ");
    /// assert_eq!(ColumnType::TimestampTz.sql_name(DialectKind::MySql, false), "DATETIME(6)");
    /// ```
    TimestampTz,
    /// A date and time of day without time zone ([`chrono::NaiveDateTime`]),
    /// microsecond precision: `TIMESTAMP`, `DATETIME(6)`, SQLite ISO-8601 `TEXT`
    /// `2024-05-06T07:08:09.123456`.
    ///
    /// ```
    /// use weir_sql::{ColumnType, DialectKind};
    /// assert_eq!(ColumnType::Timestamp.sql_name(DialectKind::Postgres, false), "TIMESTAMP");
    /// ```
    Timestamp,
    /// A calendar date ([`chrono::NaiveDate`]): `DATE`, SQLite `TEXT` `2024-05-06`.
    ///
    /// ```
    /// use weir_sql::{ColumnType, DialectKind};
    /// assert_eq!(ColumnType::Date.sql_name(DialectKind::Sqlite, false), "TEXT");
    /// ```
    Date,
    /// A time of day ([`chrono::NaiveTime`]), microsecond precision: `TIME`,
    /// `TIME(6)` (MySQL), SQLite `TEXT` `07:08:09.123456`.
    ///
    /// ```
    /// use weir_sql::{ColumnType, DialectKind};
    /// assert_eq!(ColumnType::Time.sql_name(DialectKind::MySql, false), "TIME(6)");
    /// ```
    Time,
    /// A UUID ([`uuid::Uuid`]): `UUID` (PostgreSQL), `CHAR(36)` (MySQL) and `TEXT`
    /// (SQLite) holding the lower-case hyphenated form, readable in any client.
    ///
    /// ```
    /// use weir_sql::{ColumnType, DialectKind};
    /// assert_eq!(ColumnType::Uuid.sql_name(DialectKind::MySql, true), "CHAR(36)");
    /// ```
    Uuid,
    /// A JSON document ([`serde_json::Value`]): `JSONB` (PostgreSQL), `JSON`
    /// (MySQL; MariaDB's `JSON` is `LONGTEXT` with a validity check), `TEXT` (SQLite).
    ///
    /// ```
    /// use weir_sql::{ColumnType, DialectKind};
    /// assert_eq!(ColumnType::Json.sql_name(DialectKind::Postgres, false), "JSONB");
    /// ```
    Json,
}

/// The widest [`ColumnType::Decimal`] precision weir creates (PostgreSQL allows
/// 1000, MySQL 65; a [`rust_decimal::Decimal`] holds 28 to 29 digits).
///
/// ```
/// use weir_sql::{Column, ColumnType, MAX_DECIMAL_PRECISION};
/// let widest = ColumnType::Decimal { precision: MAX_DECIMAL_PRECISION, scale: 0 };
/// assert!(Column::new("n", widest, false).is_ok());
/// ```
pub const MAX_DECIMAL_PRECISION: u8 = 38;

/// The largest [`ColumnType::Decimal`] scale: the most fractional digits a
/// [`rust_decimal::Decimal`] carries.
///
/// ```
/// use weir_sql::{Column, ColumnType, MAX_DECIMAL_SCALE};
/// let too_fine = ColumnType::Decimal { precision: 38, scale: MAX_DECIMAL_SCALE + 1 };
/// assert!(Column::new("n", too_fine, false).is_err());
/// ```
pub const MAX_DECIMAL_SCALE: u8 = 28;

impl ColumnType {
    /// The type's name in `dialect`'s DDL. `key` asks for a type usable in a MySQL
    /// primary key (`VARCHAR(255)` with a binary collation / `VARBINARY(255)` instead of
    /// `TEXT` / `BLOB`).
    /// For [`Decimal`](Self::Decimal) this is the bare name (`NUMERIC`, `DECIMAL`);
    /// [`sql_type`](Self::sql_type) adds precision and scale.
    ///
    /// ```
    /// use weir_sql::{ColumnType, DialectKind};
    /// assert_eq!(ColumnType::BigInt.sql_name(DialectKind::Postgres, false), "BIGINT");
    /// assert_eq!(ColumnType::Bool.sql_name(DialectKind::Sqlite, false), "INTEGER");
    /// assert_eq!(ColumnType::Text.sql_name(DialectKind::MySql, false), "LONGTEXT");
    /// assert_eq!(ColumnType::Bytes.sql_name(DialectKind::MySql, true), "VARBINARY(255)");
    /// ```
    pub fn sql_name(self, dialect: DialectKind, key: bool) -> &'static str {
        use ColumnType::*;
        use DialectKind::*;
        match (dialect, self) {
            (Postgres, Bool) => "BOOLEAN",
            (Postgres, SmallInt) => "SMALLINT",
            (Postgres, Int) => "INTEGER",
            (Postgres, BigInt) => "BIGINT",
            (Postgres, Double) => "DOUBLE PRECISION",
            (Postgres, Text) => "TEXT",
            (Postgres, Bytes) => "BYTEA",
            (Sqlite, Bool | SmallInt | Int | BigInt) => "INTEGER",
            (Sqlite, Double) => "REAL",
            (Sqlite, Text) => "TEXT",
            (Sqlite, Bytes) => "BLOB",
            (MySql, Bool) => "BOOLEAN",
            (MySql, SmallInt) => "SMALLINT",
            (MySql, Int) => "INT",
            (MySql, BigInt) => "BIGINT",
            (MySql, Double) => "DOUBLE",
            // Binary collation: keys that differ in case or accents are different
            // keys, as they are in Rust (the default collation would merge `Alice`
            // and `alice` into one row, and a fold would overwrite one's state with
            // the other's). Trailing spaces still compare equal (PAD SPACE).
            (MySql, Text) if key => "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            (MySql, Text) => "LONGTEXT",
            (MySql, Bytes) if key => "VARBINARY(255)",
            (MySql, Bytes) => "LONGBLOB",
            (Postgres, Decimal { .. }) => "NUMERIC",
            (Postgres, TimestampTz) => "TIMESTAMPTZ",
            (Postgres, Timestamp) => "TIMESTAMP",
            (Postgres, Date) => "DATE",
            (Postgres, Time) => "TIME",
            (Postgres, Uuid) => "UUID",
            (Postgres, Json) => "JSONB",
            (Sqlite, Decimal { .. } | TimestampTz | Timestamp | Date | Time | Uuid | Json) => {
                "TEXT"
            }
            (MySql, Decimal { .. }) => "DECIMAL",
            (MySql, TimestampTz | Timestamp) => "DATETIME(6)",
            (MySql, Date) => "DATE",
            (MySql, Time) => "TIME(6)",
            (MySql, Uuid) => "CHAR(36)",
            (MySql, Json) => "JSON",
        }
    }

    /// The full column type in `dialect`'s DDL, as `create_table` writes it: like
    /// [`sql_name`](Self::sql_name), with a decimal's precision and scale.
    ///
    /// ```
    /// use weir_sql::{ColumnType, DialectKind};
    /// let t = ColumnType::Decimal { precision: 38, scale: 10 };
    /// assert_eq!(t.sql_type(DialectKind::Postgres, false), "NUMERIC(38, 10)");
    /// assert_eq!(ColumnType::Json.sql_type(DialectKind::MySql, false), "JSON");
    /// ```
    pub fn sql_type(self, dialect: DialectKind, key: bool) -> Cow<'static, str> {
        match (self, dialect) {
            (
                ColumnType::Decimal { precision, scale },
                DialectKind::Postgres | DialectKind::MySql,
            ) => Cow::Owned(format!(
                "{}({precision}, {scale})",
                self.sql_name(dialect, key)
            )),
            _ => Cow::Borrowed(self.sql_name(dialect, key)),
        }
    }

    /// Why this type cannot be a column, if it cannot.
    fn invalid(self) -> Option<String> {
        let ColumnType::Decimal { precision, scale } = self else {
            return None;
        };
        if precision == 0 || precision > MAX_DECIMAL_PRECISION {
            return Some(format!(
                "decimal precision {precision} is outside 1..={MAX_DECIMAL_PRECISION}"
            ));
        }
        if scale > precision || scale > MAX_DECIMAL_SCALE {
            return Some(format!(
                "decimal scale {scale} is more than the precision ({precision}) or more than {MAX_DECIMAL_SCALE}"
            ));
        }
        None
    }

    /// The PostgreSQL array type used by the `UNNEST` fast path.
    pub(crate) fn pg_array(self) -> &'static str {
        match self {
            ColumnType::Bool => "BOOLEAN[]",
            ColumnType::SmallInt => "SMALLINT[]",
            ColumnType::Int => "INTEGER[]",
            ColumnType::BigInt => "BIGINT[]",
            ColumnType::Double => "DOUBLE PRECISION[]",
            ColumnType::Text => "TEXT[]",
            ColumnType::Bytes => "BYTEA[]",
            ColumnType::Decimal { .. } => "NUMERIC[]",
            ColumnType::TimestampTz => "TIMESTAMPTZ[]",
            ColumnType::Timestamp => "TIMESTAMP[]",
            ColumnType::Date => "DATE[]",
            ColumnType::Time => "TIME[]",
            ColumnType::Uuid => "UUID[]",
            ColumnType::Json => "JSONB[]",
        }
    }
}

/// One SQL value, borrowed from the row it comes from.
///
/// ```
/// use weir_sql::{ToValue, Value};
/// let name = String::from("ada");
/// assert_eq!(name.to_value(), Value::Text("ada"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Value<'a> {
    /// SQL `NULL` of a column of this type.
    Null(ColumnType),
    /// A boolean.
    Bool(bool),
    /// A 16-bit integer.
    SmallInt(i16),
    /// A 32-bit integer.
    Int(i32),
    /// A 64-bit integer.
    BigInt(i64),
    /// A float.
    Double(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Bytes(&'a [u8]),
    /// An exact decimal (see [`ColumnType::Decimal`]).
    ///
    /// ```
    /// use weir_sql::{rust_decimal::Decimal, ToValue, Value};
    /// let d = Decimal::new(1250, 2); // 12.50
    /// assert_eq!(d.to_value(), Value::Decimal(d));
    /// ```
    Decimal(rust_decimal::Decimal),
    /// An instant (see [`ColumnType::TimestampTz`]).
    ///
    /// ```
    /// use weir_sql::{chrono::{TimeZone, Utc}, ToValue, Value};
    /// let t = Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap();
    /// assert_eq!(t.to_value(), Value::TimestampTz(t));
    /// ```
    TimestampTz(chrono::DateTime<chrono::Utc>),
    /// A date and time without time zone (see [`ColumnType::Timestamp`]).
    ///
    /// ```
    /// use weir_sql::{chrono::NaiveDate, ToValue, Value};
    /// let t = NaiveDate::from_ymd_opt(2024, 5, 6).unwrap().and_hms_opt(7, 8, 9).unwrap();
    /// assert_eq!(t.to_value(), Value::Timestamp(t));
    /// ```
    Timestamp(chrono::NaiveDateTime),
    /// A date (see [`ColumnType::Date`]).
    ///
    /// ```
    /// use weir_sql::{chrono::NaiveDate, ToValue, Value};
    /// let d = NaiveDate::from_ymd_opt(2024, 5, 6).unwrap();
    /// assert_eq!(d.to_value(), Value::Date(d));
    /// ```
    Date(chrono::NaiveDate),
    /// A time of day (see [`ColumnType::Time`]).
    ///
    /// ```
    /// use weir_sql::{chrono::NaiveTime, ToValue, Value};
    /// let t = NaiveTime::from_hms_micro_opt(7, 8, 9, 123_456).unwrap();
    /// assert_eq!(t.to_value(), Value::Time(t));
    /// ```
    Time(chrono::NaiveTime),
    /// A UUID (see [`ColumnType::Uuid`]).
    ///
    /// ```
    /// use weir_sql::{uuid::Uuid, ToValue, Value};
    /// let id = Uuid::from_u128(7);
    /// assert_eq!(id.to_value(), Value::Uuid(id));
    /// ```
    Uuid(uuid::Uuid),
    /// A JSON document, borrowed (see [`ColumnType::Json`]).
    ///
    /// ```
    /// use weir_sql::{ToValue, Value};
    /// let doc = serde_json::json!({"sku": "A-1", "qty": 2});
    /// assert_eq!(doc.to_value(), Value::Json(&doc));
    /// ```
    Json(&'a serde_json::Value),
}

/// A Rust value that maps to one SQL column.
///
/// ```
/// use weir_sql::{ColumnType, ToValue, Value};
/// assert_eq!(<i64 as ToValue>::TYPE, ColumnType::BigInt);
/// assert_eq!(Some(3_i32).to_value(), Value::Int(3));
/// assert_eq!(None::<String>.to_value(), Value::Null(ColumnType::Text));
/// ```
///
/// Implement it for a newtype to use it as a [`Row`] field:
///
/// ```
/// use weir_sql::{impl_row, ColumnType, Row, ToValue, Value};
/// struct Cents(i64);
/// impl ToValue for Cents {
///     const TYPE: ColumnType = ColumnType::BigInt;
///     fn to_value(&self) -> Value<'_> {
///         Value::BigInt(self.0)
///     }
/// }
/// struct Payment { id: String, amount: Cents }
/// impl_row!(Payment { id, amount });
/// assert_eq!(Payment::columns()?[1].ty, ColumnType::BigInt);
/// # Ok::<(), weir_sql::Error>(())
/// ```
pub trait ToValue {
    /// The column type.
    ///
    /// ```
    /// use weir_sql::{ColumnType, ToValue};
    /// assert_eq!(<Vec<u8> as ToValue>::TYPE, ColumnType::Bytes);
    /// assert_eq!(<Option<bool> as ToValue>::TYPE, ColumnType::Bool);
    /// ```
    const TYPE: ColumnType;
    /// Whether the value can be `NULL` (only `Option<T>` by default).
    ///
    /// ```
    /// use weir_sql::ToValue;
    /// assert!(!<String as ToValue>::NULLABLE);
    /// assert!(<Option<String> as ToValue>::NULLABLE);
    /// ```
    const NULLABLE: bool = false;
    /// The value, borrowed from `self`.
    ///
    /// ```
    /// use weir_sql::{ColumnType, ToValue, Value};
    /// assert_eq!(7_i16.to_value(), Value::SmallInt(7));
    /// assert_eq!(None::<f64>.to_value(), Value::Null(ColumnType::Double));
    /// assert_eq!(b"ab".to_vec().to_value(), Value::Bytes(b"ab"));
    /// let topic: std::sync::Arc<str> = "orders".into(); // a record's topic, not copied
    /// assert_eq!(topic.to_value(), Value::Text("orders"));
    /// ```
    fn to_value(&self) -> Value<'_>;
}

macro_rules! to_value {
    ($($t:ty => $ty:ident, $v:ident, |$x:ident| $e:expr;)*) => {$(
        impl ToValue for $t {
            const TYPE: ColumnType = ColumnType::$ty;
            fn to_value(&self) -> Value<'_> {
                let $x = self;
                Value::$v($e)
            }
        }
    )*};
}

to_value! {
    bool => Bool, Bool, |x| *x;
    i16 => SmallInt, SmallInt, |x| *x;
    i32 => Int, Int, |x| *x;
    i64 => BigInt, BigInt, |x| *x;
    f64 => Double, Double, |x| *x;
    String => Text, Text, |x| x.as_str();
    str => Text, Text, |x| x;
    Vec<u8> => Bytes, Bytes, |x| x.as_slice();
    [u8] => Bytes, Bytes, |x| x;
    weir_core::Bytes => Bytes, Bytes, |x| x.as_ref();
    // `Record::topic` is an `Arc<str>`: a row can carry it without a copy per record
    std::sync::Arc<str> => Text, Text, |x| x;
    Box<str> => Text, Text, |x| x;
    std::borrow::Cow<'_, str> => Text, Text, |x| x;
    std::sync::Arc<[u8]> => Bytes, Bytes, |x| x;
}

impl<T: ToValue> ToValue for Option<T> {
    const TYPE: ColumnType = T::TYPE;
    const NULLABLE: bool = true;
    fn to_value(&self) -> Value<'_> {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null(T::TYPE),
        }
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    const TYPE: ColumnType = T::TYPE;
    const NULLABLE: bool = T::NULLABLE;
    fn to_value(&self) -> Value<'_> {
        (**self).to_value()
    }
}

/// A column of a table a [`Row`] is written to.
///
/// ```
/// use weir_sql::{Column, ColumnType};
/// let c = Column::new("order id", ColumnType::BigInt, false)?;
/// assert_eq!(c.name.as_str(), "order id");
/// # Ok::<(), weir_sql::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// The column's name (validated, always quoted).
    pub name: Ident,
    /// Its type.
    pub ty: ColumnType,
    /// Whether it accepts `NULL`.
    pub nullable: bool,
}

impl Column {
    /// A column named `name` (validated as an [`Ident`], always quoted) of type `ty`.
    ///
    /// ```
    /// use weir_sql::{Column, ColumnType};
    /// let c = Column::new("note", ColumnType::Text, true)?;
    /// assert!(c.nullable);
    /// assert!(Column::new("", ColumnType::Text, true).is_err());
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn new(name: &str, ty: ColumnType, nullable: bool) -> Result<Self> {
        if let Some(reason) = ty.invalid() {
            return Err(Error::ColumnType {
                column: name.to_owned(),
                reason,
            });
        }
        Ok(Self {
            name: Ident::new(name)?,
            ty,
            nullable,
        })
    }

    /// The column for a field, its type taken from the field accessor (used by
    /// [`impl_row!`](crate::impl_row)).
    ///
    /// ```
    /// use weir_sql::{Column, ColumnType};
    /// struct Order { note: Option<String> }
    /// let c = Column::of("note", |o: &Order| &o.note)?;
    /// assert_eq!((c.ty, c.nullable), (ColumnType::Text, true));
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn of<R, T: ToValue + ?Sized>(name: &str, _field: fn(&R) -> &T) -> Result<Self> {
        Self::new(name, T::TYPE, T::NULLABLE)
    }
}

/// A Rust struct written as one table row by the built-in sinks.
///
/// Implement it by hand, or with [`impl_row!`](crate::impl_row) (columns named after
/// the fields):
///
/// ```
/// use weir_sql::{impl_row, Row, Value};
/// struct Order { id: i64, customer: String, note: Option<String> }
/// impl_row!(Order { id, customer, note });
///
/// let cols = Order::columns()?;
/// assert_eq!(cols.len(), 3);
/// assert!(cols[2].nullable);
/// let o = Order { id: 7, customer: "ada".into(), note: None };
/// let mut v = Vec::new();
/// o.values(&mut v);
/// assert_eq!(v[0], Value::BigInt(7));
/// # Ok::<(), weir_sql::Error>(())
/// ```
pub trait Row: Send + Sync {
    /// The columns, in the order [`values`](Self::values) pushes them.
    ///
    /// ```
    /// use weir_sql::{Column, ColumnType, Result, Row, Value};
    /// struct Pair { a: i32, b: String }
    /// impl Row for Pair {
    ///     fn columns() -> Result<Vec<Column>> {
    ///         Ok(vec![Column::new("a", ColumnType::Int, false)?, Column::new("b", ColumnType::Text, false)?])
    ///     }
    ///     fn values<'a>(&'a self, out: &mut Vec<Value<'a>>) {
    ///         out.extend([Value::Int(self.a), Value::Text(&self.b)]);
    ///     }
    /// }
    /// assert_eq!(Pair::columns()?[1].name.as_str(), "b");
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    fn columns() -> Result<Vec<Column>>;
    /// Push this row's values, one per column, borrowed from the row.
    ///
    /// ```
    /// use weir_sql::{impl_row, Row, Value};
    /// struct Pair { a: i32, b: String }
    /// impl_row!(Pair { a, b });
    /// let p = Pair { a: 1, b: "x".into() };
    /// let mut out = Vec::new();
    /// p.values(&mut out);
    /// assert_eq!(out, [Value::Int(1), Value::Text("x")]);
    /// ```
    fn values<'a>(&'a self, out: &mut Vec<Value<'a>>);
}

/// Implement [`Row`] for a struct: `impl_row!(Type { field, field, ... })`. Each field
/// becomes a column of the same name; its type must implement [`ToValue`]. Fields
/// not listed are not written.
///
/// ```
/// use weir_sql::{impl_row, ColumnType, Row};
/// struct Click { user: String, at_ms: i64, referrer: Option<String>, raw: Vec<u8> }
/// impl_row!(Click { user, at_ms, referrer });
///
/// let cols = Click::columns()?;
/// let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
/// assert_eq!(names, ["user", "at_ms", "referrer"]);
/// assert_eq!((cols[1].ty, cols[2].nullable), (ColumnType::BigInt, true));
/// # Ok::<(), weir_sql::Error>(())
/// ```
#[macro_export]
macro_rules! impl_row {
    ($ty:ty { $($field:ident),+ $(,)? }) => {
        impl $crate::Row for $ty {
            fn columns() -> $crate::Result<::std::vec::Vec<$crate::Column>> {
                ::std::result::Result::Ok(::std::vec![
                    $($crate::Column::of(::std::stringify!($field), |r: &$ty| &r.$field)?),+
                ])
            }
            fn values<'a>(&'a self, out: &mut ::std::vec::Vec<$crate::Value<'a>>) {
                $(out.push($crate::ToValue::to_value(&self.$field));)+
            }
        }
    };
}

/// A key that identifies equal values (for de-duplicating upsert batches).
pub(crate) fn key_bytes(values: &[Value<'_>], out: &mut Vec<u8>) {
    for v in values {
        match v {
            Value::Null(_) => out.push(0),
            Value::Bool(b) => out.extend_from_slice(&[1, u8::from(*b)]),
            Value::SmallInt(i) => {
                out.push(2);
                out.extend_from_slice(&i64::from(*i).to_le_bytes());
            }
            Value::Int(i) => {
                out.push(2);
                out.extend_from_slice(&i64::from(*i).to_le_bytes());
            }
            Value::BigInt(i) => {
                out.push(2);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Value::Double(f) => {
                out.push(3);
                out.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            Value::Text(s) => {
                out.push(4);
                out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Value::Bytes(b) => {
                out.push(5);
                out.extend_from_slice(&(b.len() as u64).to_le_bytes());
                out.extend_from_slice(b);
            }
            // 1.5 and 1.50 are one key, as in a NUMERIC column
            Value::Decimal(d) => {
                out.push(6);
                out.extend_from_slice(&d.normalize().serialize());
            }
            Value::TimestampTz(t) => {
                out.push(7);
                crate::types::key_datetime(&t.naive_utc(), out);
            }
            Value::Timestamp(t) => {
                out.push(8);
                crate::types::key_datetime(t, out);
            }
            Value::Date(d) => {
                out.push(9);
                out.extend_from_slice(&crate::types::days(d).to_le_bytes());
            }
            Value::Time(t) => {
                out.push(10);
                out.extend_from_slice(&crate::types::time_micros(t).to_le_bytes());
            }
            Value::Uuid(u) => {
                out.push(11);
                out.extend_from_slice(u.as_bytes());
            }
            Value::Json(j) => {
                let s = j.to_string();
                out.push(12);
                out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
}
