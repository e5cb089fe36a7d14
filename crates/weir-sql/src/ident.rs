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
/// attached database such as `main` or `temp`).
///
/// [`TableName::new`] reads `schema.table` as a qualified name; each part is quoted
/// on its own. A name with more than one dot, an empty part, or quote characters
/// next to a dot is refused as ambiguous: use [`with_schema`](Self::with_schema) for
/// the schema and [`unqualified`](Self::unqualified) for a table whose own name
/// contains a dot.
///
/// ```
/// use weir_sql::{DialectKind, TableName};
/// let t = TableName::new("weir_offsets")?.with_schema("jobs")?;
/// assert_eq!(t.quoted(DialectKind::Postgres), "\"jobs\".\"weir_offsets\"");
/// let q = TableName::new("analytics.orders")?;
/// assert_eq!(q.quoted(DialectKind::MySql), "`analytics`.`orders`");
/// assert_eq!(q, TableName::new("orders")?.with_schema("analytics")?);
/// assert_eq!(TableName::unqualified("a.b")?.quoted(DialectKind::MySql), "`a.b`");
/// assert!(TableName::new("a.b.c").is_err());
/// # Ok::<(), weir_sql::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableName {
    schema: Option<Ident>,
    name: Ident,
}

impl TableName {
    /// A table in the connection's default schema (PostgreSQL: the first of the
    /// `search_path`; MySQL: the connection's database), or, written
    /// `schema.table`, in that schema (MySQL: database). Exactly one dot with a
    /// name on each side is a qualified name; more dots, an empty side or a quote
    /// character in a dotted name is refused (the error says to use
    /// [`with_schema`](Self::with_schema) or [`unqualified`](Self::unqualified)).
    ///
    /// ```
    /// use weir_sql::TableName;
    /// let t = TableName::new("orders")?;
    /// assert!(t.schema().is_none());
    /// let q = TableName::new("analytics.orders")?;
    /// assert_eq!((q.schema().map(|s| s.as_str()), q.name().as_str()), (Some("analytics"), "orders"));
    /// assert!(TableName::new("").is_err());
    /// for ambiguous in ["a.b.c", ".orders", "analytics.", "\"my.schema\".orders"] {
    ///     let e = TableName::new(ambiguous).unwrap_err();
    ///     assert!(e.to_string().contains("with_schema"), "{e}");
    /// }
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn new(name: &str) -> Result<Self> {
        let Some((schema, table)) = name.split_once('.') else {
            return Self::unqualified(name);
        };
        let quoted = name.contains(['"', '`', '[', ']']);
        if schema.is_empty() || table.is_empty() || table.contains('.') || quoted {
            return Err(Error::identifier(
                name,
                "is ambiguous as a table name: `schema.table` takes exactly one dot with a \
                 name on each side and no quote characters (each part is quoted by weir); \
                 write TableName::new(table)?.with_schema(schema), or \
                 TableName::unqualified(name) for one table whose name contains the dots",
            ));
        }
        Self::unqualified(table)?.with_schema(schema)
    }

    /// A table in the default schema whose name is taken as it is, dots included
    /// (`"a.b"` is one table named `a.b`, quoted as one identifier).
    ///
    /// ```
    /// use weir_sql::{DialectKind, TableName};
    /// let t = TableName::unqualified("events.v2")?;
    /// assert!(t.schema().is_none());
    /// assert_eq!(t.quoted(DialectKind::Postgres), "\"events.v2\"");
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn unqualified(name: &str) -> Result<Self> {
        Ok(Self {
            schema: None,
            name: Ident::new(name)?,
        })
    }

    /// The same table in `schema` (validated like the name, taken as it is, dots
    /// included). weir's `migrate` and `create_table` create a missing PostgreSQL
    /// schema or MySQL database. A name that already has another schema is refused.
    ///
    /// ```
    /// use weir_sql::TableName;
    /// let t = TableName::new("orders")?.with_schema("shop")?;
    /// assert_eq!(t.to_string(), "shop.orders");
    /// assert!(TableName::new("orders")?.with_schema("a\0").is_err());
    /// assert!(TableName::new("shop.orders")?.with_schema("shop").is_ok());
    /// assert!(TableName::new("shop.orders")?.with_schema("other").is_err());
    /// # Ok::<(), weir_sql::Error>(())
    /// ```
    pub fn with_schema(mut self, schema: &str) -> Result<Self> {
        let schema = Ident::new(schema)?;
        if let Some(old) = &self.schema {
            if *old != schema {
                return Err(Error::identifier(
                    schema.as_str(),
                    format!(
                        "cannot be the schema of table {:?}, which is already in schema {:?}",
                        self.name.as_str(),
                        old.as_str()
                    ),
                ));
            }
        }
        self.schema = Some(schema);
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
