//! SQL identifiers: validated once, always quoted.

use std::fmt;

use crate::{Error, Result};

/// The longest identifier accepted, in bytes: PostgreSQL silently truncates names
/// longer than 63 bytes (MySQL allows 64), so weir refuses them instead.
///
/// ```
/// use weir_sql::{Ident, MAX_IDENT_BYTES};
/// assert!(Ident::new(&"c".repeat(MAX_IDENT_BYTES)).is_ok());
/// assert!(Ident::new(&"c".repeat(MAX_IDENT_BYTES + 1)).is_err());
/// ```
pub const MAX_IDENT_BYTES: usize = 63;

/// Which SQL dialect a statement is written for.
///
/// ```
/// use weir_sql::{Dialect, DialectKind};
/// assert_eq!(<sqlx::Postgres as Dialect>::KIND, DialectKind::Postgres);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DialectKind {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
    /// MySQL and MariaDB.
    MySql,
}

/// A validated SQL identifier (table, schema or column name).
///
/// Any name is accepted except an empty one, one with a NUL byte, one with trailing
/// spaces (MySQL drops them) or one longer than [`MAX_IDENT_BYTES`]. Quotes, dots,
/// semicolons and reserved words are fine: the name is always quoted, its quote
/// characters doubled, so it can never end the identifier early.
///
/// ```
/// use weir_sql::{DialectKind, Ident};
/// let id = Ident::new("my \"table\"; DROP TABLE x")?;
/// assert_eq!(id.quoted(DialectKind::Postgres), "\"my \"\"table\"\"; DROP TABLE x\"");
/// assert_eq!(Ident::new("a`b")?.quoted(DialectKind::MySql), "`a``b`");
/// assert!(Ident::new("").is_err());
/// assert!(Ident::new("x\0y").is_err());
/// assert!(Ident::new(&"n".repeat(64)).is_err());
/// # Ok::<(), weir_sql::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    /// Validate `name` (see the rules above); the error names it and what is wrong.
    ///
    /// ```
    /// use weir_sql::Ident;
    /// assert!(Ident::new("order lines").is_ok());
    /// assert!(matches!(Ident::new("trailing "), Err(e) if e.to_string().contains("ends with a space")));
    /// ```
    pub fn new(name: &str) -> Result<Self> {
        if name.is_empty() {
            return Err(Error::identifier(name, "is empty"));
        }
        if name.contains('\0') {
            return Err(Error::identifier(name, "contains a NUL byte"));
        }
        if name.len() > MAX_IDENT_BYTES {
            return Err(Error::identifier(
                name,
                format!(
                    "is {} bytes long, at most {MAX_IDENT_BYTES} are allowed",
                    name.len()
                ),
            ));
        }
        if name.ends_with(' ') {
            return Err(Error::identifier(name, "ends with a space"));
        }
        if name.chars().any(|c| (c as u32) > 0xFFFF) {
            return Err(Error::identifier(
                name,
                "contains a character outside the Basic Multilingual Plane (MySQL refuses it)",
            ));
        }
        Ok(Ident(name.to_owned()))
    }

    /// The name as given.
    ///
    /// ```
    /// assert_eq!(weir_sql::Ident::new("Order")?.as_str(), "Order");
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name quoted for `dialect`: `"name"` (PostgreSQL, SQLite) or `` `name` ``
    /// (MySQL), embedded quote characters doubled.
    ///
    /// ```
    /// use weir_sql::{DialectKind, Ident};
    /// let id = Ident::new("select")?; // reserved words are fine
    /// assert_eq!(id.quoted(DialectKind::Sqlite), "\"select\"");
    /// assert_eq!(id.quoted(DialectKind::MySql), "`select`");
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn quoted(&self, dialect: DialectKind) -> String {
        let q = match dialect {
            DialectKind::MySql => '`',
            DialectKind::Postgres | DialectKind::Sqlite => '"',
        };
        let mut out = String::with_capacity(self.0.len() + 2);
        out.push(q);
        for c in self.0.chars() {
            if c == q {
                out.push(q);
            }
            out.push(c);
        }
        out.push(q);
        out
    }
}

impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A table name with an optional schema (PostgreSQL schema, MySQL database, SQLite
/// attached database).
///
/// ```
/// use weir_sql::{DialectKind, TableName};
/// let t = TableName::new("weir_offsets")?.with_schema("jobs")?;
/// assert_eq!(t.quoted(DialectKind::Postgres), "\"jobs\".\"weir_offsets\"");
/// assert_eq!(TableName::new("a.b")?.quoted(DialectKind::MySql), "`a.b`");
/// # Ok::<(), weir_sql::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableName {
    schema: Option<Ident>,
    name: Ident,
}

impl TableName {
    /// A table in the connection's default schema (PostgreSQL: the first of the
    /// `search_path`; MySQL: the connection's database).
    ///
    /// ```
    /// use weir_sql::TableName;
    /// let t = TableName::new("orders")?;
    /// assert!(t.schema().is_none());
    /// assert!(TableName::new("").is_err());
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn new(name: &str) -> Result<Self> {
        Ok(Self {
            schema: None,
            name: Ident::new(name)?,
        })
    }

    /// The same table in `schema` (validated like the name). weir's `migrate` and
    /// `create_table` create a missing PostgreSQL schema or MySQL database.
    ///
    /// ```
    /// use weir_sql::TableName;
    /// let t = TableName::new("orders")?.with_schema("shop")?;
    /// assert_eq!(t.to_string(), "shop.orders");
    /// assert!(TableName::new("orders")?.with_schema("a\0").is_err());
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn with_schema(mut self, schema: &str) -> Result<Self> {
        self.schema = Some(Ident::new(schema)?);
        Ok(self)
    }

    /// The schema, if one was given.
    ///
    /// ```
    /// use weir_sql::TableName;
    /// let t = TableName::new("orders")?.with_schema("shop")?;
    /// assert_eq!(t.schema().map(|s| s.as_str()), Some("shop"));
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn schema(&self) -> Option<&Ident> {
        self.schema.as_ref()
    }

    /// The table's own name.
    ///
    /// ```
    /// use weir_sql::TableName;
    /// assert_eq!(TableName::new("orders")?.with_schema("shop")?.name().as_str(), "orders");
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn name(&self) -> &Ident {
        &self.name
    }

    /// `"schema"."name"` or `"name"`, quoted for `dialect`.
    ///
    /// ```
    /// use weir_sql::{DialectKind, TableName};
    /// let t = TableName::new("orders")?.with_schema("shop")?;
    /// assert_eq!(t.quoted(DialectKind::MySql), "`shop`.`orders`");
    /// assert_eq!(TableName::new("orders")?.quoted(DialectKind::Sqlite), "\"orders\"");
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn quoted(&self, dialect: DialectKind) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", s.quoted(dialect), self.name.quoted(dialect)),
            None => self.name.quoted(dialect),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_stay_inside_their_quotes() {
        for name in [
            "x\"; DROP TABLE t; --",
            "x`; DROP TABLE t; --",
            "a.b",
            "select",
            "weird 'name'",
            "\"\"",
        ] {
            let id = Ident::new(name).unwrap();
            for d in [
                DialectKind::Postgres,
                DialectKind::Sqlite,
                DialectKind::MySql,
            ] {
                let q = id.quoted(d);
                let qc = q.chars().next().unwrap();
                let inner = &q[1..q.len() - 1];
                // every quote character inside comes in pairs
                let mut chars = inner.chars().peekable();
                while let Some(c) = chars.next() {
                    if c == qc {
                        assert_eq!(chars.next(), Some(qc), "{q}");
                    }
                }
            }
        }
    }

    #[test]
    fn refused_names() {
        assert!(Ident::new("").is_err());
        assert!(Ident::new("a\0").is_err());
        assert!(Ident::new("trailing ").is_err());
        assert!(Ident::new("emoji😀").is_err());
        assert!(Ident::new(&"é".repeat(32)).is_err()); // 64 bytes
        assert!(Ident::new(&"é".repeat(31)).is_ok());
    }
}
