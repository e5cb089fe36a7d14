//! Where a job's values go: a table (insert or upsert), your own
//! [`TransactionalSink`], or several tables from one record (fan-out). Every sink
//! writes in the same transaction as the offsets and the dead letters.
//!
//! | sink | written with |
//! |---|---|
//! | [`Postgres::insert`] / [`Sqlite::insert`] / [`MySql::insert`] | PostgreSQL `COPY`, multi-row `INSERT` elsewhere |
//! | [`Postgres::upsert`] (and the others) | `INSERT … ON CONFLICT (key) DO UPDATE` (MySQL: `ON DUPLICATE KEY UPDATE`); last value of a key in a batch wins |
//! | [`custom`] | your [`TransactionalSink`] |
//! | [`fan_out`] | several tables, each from a projection of the value |
//! | [`Postgres::aggregate`] (and the others) | delta upserts of per-key (and per-window) count, sum, min, max: see [`agg`](crate::agg) |
//! | [`Postgres::fold`] (and the others) | a state of your type per key, folded by your function, one JSON row per (partition, key): see [`agg::FoldTable`](crate::agg::FoldTable) |
//!
//! Tables are created if missing (`create_if_missing(false)` to leave that to your
//! migrations), with a primary key on the upsert key.

use std::marker::PhantomData;

use async_trait::async_trait;
use futures::future::BoxFuture;
use sqlx::{Pool, Transaction};
use weir_sql::{Dialect, Item, Row, TableName, TableSink, TransactionalSink, WriteMode};

/// Creates what a sink needs (its tables) before the job starts.
/// A table sink and the set-up steps (create table) it needs at start.
type TableParts<DB, R> = (TableSink<DB, R>, Vec<Setup<DB>>);

pub(crate) type Setup<DB> =
    Box<dyn for<'a> FnOnce(&'a Pool<DB>) -> BoxFuture<'a, weir_sql::Result<()>> + Send>;

/// A sink ready to run, with what it must set up first. Made by [`IntoSink`].
pub struct BuiltSink<DB: Dialect, S> {
    pub(crate) sink: S,
    pub(crate) setup: Vec<Setup<DB>>,
}

impl<DB: Dialect, S> std::fmt::Debug for BuiltSink<DB, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltSink")
            .field("setup_steps", &self.setup.len())
            .finish_non_exhaustive()
    }
}

/// What a sink may need to know about its job when it is built (the job's offsets
/// table, where windowed aggregates keep their watermarks). weir builds it and passes
/// it to [`IntoSink::into_sink`]; a sink of your own may ignore it.
pub struct SinkContext<DB: Dialect> {
    pub(crate) store: weir_sql::OffsetStore<DB>,
}

impl<DB: Dialect> std::fmt::Debug for SinkContext<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkContext")
            .field("job", &self.store.job())
            .finish_non_exhaustive()
    }
}

impl<DB: Dialect> SinkContext<DB> {
    /// The job's name.
    ///
    /// ```
    /// # fn f<DB: weir_sql::Dialect>(ctx: &weir_pipeline::sink::SinkContext<DB>) {
    /// println!("building a sink of job {}", ctx.job());
    /// # }
    /// ```
    pub fn job(&self) -> &str {
        self.store.job()
    }
}

/// What [`Pipeline::sink`](crate::Pipeline::sink) accepts: a table spec, an
/// aggregate table, [`custom`] or [`fan_out`]. The error is `(stage, reason)`.
pub trait IntoSink<DB: Dialect, T: Send + Sync> {
    /// The sink this becomes.
    type Sink: TransactionalSink<DB, T> + 'static;
    /// Check and build it.
    fn into_sink(
        self,
        ctx: &SinkContext<DB>,
    ) -> Result<BuiltSink<DB, Self::Sink>, (String, String)>;
}

/// A table sink spec for dialect `DB`: made by [`Postgres`], [`Sqlite`] or [`MySql`].
///
/// ```
/// use weir_pipeline::sink::Postgres;
/// let spec = Postgres::upsert("big_orders", ["id"]).create_if_missing(false);
/// # drop(spec);
/// ```
pub struct Table<DB> {
    table: String,
    key: Option<Vec<String>>,
    create: bool,
    _db: PhantomData<fn() -> DB>,
}

impl<DB> std::fmt::Debug for Table<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("table", &self.table)
            .field("key", &self.key)
            .field("create", &self.create)
            .finish()
    }
}

impl<DB> Table<DB> {
    fn new(table: &str, key: Option<Vec<String>>) -> Self {
        Self {
            table: table.to_owned(),
            key,
            create: true,
            _db: PhantomData,
        }
    }

    /// Insert every value as a new row of `table`, on any dialect (for code generic
    /// over the database; [`Postgres::insert`] and the others name it for you).
    ///
    /// ```
    /// let spec = weir_pipeline::sink::Table::<sqlx::Sqlite>::insert("events");
    /// # drop(spec);
    /// ```
    pub fn insert(table: &str) -> Self {
        Self::new(table, None)
    }

    /// Insert or replace by the `key` columns, on any dialect.
    ///
    /// ```
    /// let spec = weir_pipeline::sink::Table::<sqlx::Postgres>::upsert("totals", ["customer"]);
    /// # drop(spec);
    /// ```
    pub fn upsert<I, S>(table: &str, key: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(table, Some(key.into_iter().map(Into::into).collect()))
    }

    /// Aggregates per key (and window) in `table`, on any dialect (for code generic
    /// over the database; [`Postgres::aggregate`] and the others name it for you).
    ///
    /// ```
    /// use weir_pipeline::{agg, sink::Table};
    /// let spec = Table::<sqlx::Sqlite>::aggregate("totals", ["customer"], agg::count::<i64>("n"));
    /// # drop(spec);
    /// ```
    pub fn aggregate<T, I, S>(
        table: &str,
        key: I,
        aggregates: crate::agg::Aggregates<T>,
    ) -> crate::agg::AggregateTable<DB, T>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        crate::agg::AggregateTable::new(table, key, aggregates)
    }

    /// A state of type `S` per key, folded from the key's records in offset order
    /// by `step`, starting from `init()`; one JSON row per (job, topic, partition,
    /// key) in `table`, written in the offsets' transaction. Partition-local: see
    /// [`agg::FoldTable`](crate::agg::FoldTable).
    ///
    /// ```
    /// use weir_pipeline::sink::Table;
    /// let spec = Table::<sqlx::Sqlite>::fold("counts", || 0_u64, |n, _: &String| n + 1);
    /// # drop(spec);
    /// ```
    pub fn fold<S, T>(
        table: &str,
        init: impl Fn() -> S + Send + Sync + 'static,
        step: impl Fn(S, &T) -> S + Send + Sync + 'static,
    ) -> crate::agg::FoldTable<DB, S, T> {
        crate::agg::FoldTable::new(table, init, step)
    }

    /// Create the table at start if it is missing (default true).
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    fn stage(&self) -> String {
        format!("sink `{}`", self.table)
    }
}

impl<DB: Dialect> Table<DB> {
    fn build<R: Row + 'static>(&self) -> Result<TableParts<DB, R>, (String, String)> {
        let err = |e: weir_sql::Error| (self.stage(), e.to_string());
        let name = TableName::new(&self.table).map_err(err)?;
        let mut sink = TableSink::<DB, R>::new(name).map_err(err)?;
        if let Some(key) = &self.key {
            sink = sink
                .with_mode(WriteMode::Upsert { key: key.clone() })
                .map_err(|e| match e {
                    weir_sql::Error::Identifier { name, reason } if !name.is_empty() => (
                        self.stage(),
                        format!("upsert key `{name}` {reason} (columns: {})", columns::<R>()),
                    ),
                    e => err(e),
                })?;
        }
        let mut setup: Vec<Setup<DB>> = Vec::new();
        if self.create {
            let s = sink.clone();
            setup.push(Box::new(move |pool| {
                Box::pin(async move { s.create_table(pool).await })
            }));
        }
        Ok((sink, setup))
    }
}

fn columns<R: Row>() -> String {
    R::columns()
        .map(|cs| {
            cs.iter()
                .map(|c| c.name.as_str().to_owned())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

macro_rules! dialect_spec {
    ($(#[$doc:meta])* $name:ident, $db:ty, $feature:literal) => {
        $(#[$doc])*
        #[cfg(feature = $feature)]
        #[derive(Debug, Clone, Copy)]
        pub struct $name;

        #[cfg(feature = $feature)]
        impl $name {
            /// Insert every value as a new row of `table`.
            pub fn insert(table: &str) -> Table<$db> {
                Table::insert(table)
            }

            /// Insert or replace by the `key` columns (the table's primary key when
            /// weir creates it); within a batch the last value of a key wins.
            pub fn upsert<I, S>(table: &str, key: I) -> Table<$db>
            where
                I: IntoIterator<Item = S>,
                S: Into<String>,
            {
                Table::upsert(table, key)
            }

            /// Aggregates per key (and window) in `table`, one column per part of the
            /// `key_by` key (`key`) and per aggregate, updated by delta upserts in the
            /// offsets' transaction: see [`agg`](crate::agg).
            ///
            /// ```
            /// use weir_pipeline::agg;
            #[doc = concat!("let t = weir_pipeline::sink::", stringify!($name), "::aggregate(")]
            ///     "totals",
            ///     ["customer"],
            ///     agg::count::<i64>("orders").and(agg::sum("cents", |c: &i64| *c)),
            /// );
            /// # drop(t);
            /// ```
            pub fn aggregate<T, I, S>(
                table: &str,
                key: I,
                aggregates: crate::agg::Aggregates<T>,
            ) -> crate::agg::AggregateTable<$db, T>
            where
                I: IntoIterator<Item = S>,
                S: Into<String>,
            {
                Table::aggregate(table, key, aggregates)
            }

            /// A state per key folded by `step` from `init()`, as JSON rows of
            /// `table`: see [`Table::fold`].
            ///
            /// ```
            #[doc = concat!("let t = weir_pipeline::sink::", stringify!($name), "::fold(")]
            ///     "last_seen",
            ///     || 0_i64,
            ///     |newest: i64, ts: &i64| newest.max(*ts),
            /// );
            /// # drop(t);
            /// ```
            pub fn fold<S, T>(
                table: &str,
                init: impl Fn() -> S + Send + Sync + 'static,
                step: impl Fn(S, &T) -> S + Send + Sync + 'static,
            ) -> crate::agg::FoldTable<$db, S, T> {
                Table::fold(table, init, step)
            }
        }
    };
}

dialect_spec!(
    /// Table sinks on PostgreSQL.
    ///
    /// ```
    /// let s = weir_pipeline::sink::Postgres::insert("orders");
    /// # drop(s);
    /// ```
    Postgres, sqlx::Postgres, "postgres"
);
dialect_spec!(
    /// Table sinks on SQLite.
    ///
    /// ```
    /// let s = weir_pipeline::sink::Sqlite::upsert("totals", ["customer"]);
    /// # drop(s);
    /// ```
    Sqlite, sqlx::Sqlite, "sqlite"
);
dialect_spec!(
    /// Table sinks on MySQL / MariaDB.
    ///
    /// ```
    /// let s = weir_pipeline::sink::MySql::insert("orders");
    /// # drop(s);
    /// ```
    MySql, sqlx::MySql, "mysql"
);

impl<DB: Dialect, R: Row + 'static> IntoSink<DB, R> for Table<DB> {
    type Sink = TableSink<DB, R>;
    fn into_sink(self, _: &SinkContext<DB>) -> Result<BuiltSink<DB, Self::Sink>, (String, String)> {
        let (sink, setup) = self.build::<R>()?;
        Ok(BuiltSink { sink, setup })
    }
}

/// Your own [`TransactionalSink`], written in the batch's transaction.
///
/// ```no_run
/// use weir_sql::{async_trait, Item, TransactionalSink};
/// struct Totals;
/// #[async_trait]
/// impl TransactionalSink<sqlx::Sqlite, i64> for Totals {
///     async fn write(&self, tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>, items: &[Item<i64>]) -> weir_sql::Result<()> {
///         let n: i64 = items.iter().map(|i| i.value).sum();
///         sqlx::query("UPDATE totals SET n = n + ?").bind(n).execute(&mut **tx).await
///             .map_err(|e| weir_sql::Error::db("totals", e))?;
///         Ok(())
///     }
/// }
/// let sink = weir_pipeline::sink::custom(Totals);
/// # drop(sink);
/// ```
pub fn custom<S>(sink: S) -> Custom<S> {
    Custom(sink)
}

/// See [`custom`].
#[derive(Debug)]
pub struct Custom<S>(S);

impl<DB: Dialect, T: Send + Sync, S: TransactionalSink<DB, T> + 'static> IntoSink<DB, T>
    for Custom<S>
{
    type Sink = S;
    fn into_sink(self, _: &SinkContext<DB>) -> Result<BuiltSink<DB, S>, (String, String)> {
        Ok(BuiltSink {
            sink: self.0,
            setup: Vec::new(),
        })
    }
}

/// Several tables from one value, in one transaction: e.g. `orders` and
/// `order_lines` from one order record.
///
/// ```
/// use weir_pipeline::sink::{fan_out, Sqlite};
/// struct Order { id: i64, lines: Vec<(i64, String)> }
/// struct OrderRow { id: i64 }
/// weir_sql::impl_row!(OrderRow { id });
/// struct LineRow { order_id: i64, n: i64, sku: String }
/// weir_sql::impl_row!(LineRow { order_id, n, sku });
/// let sink = fan_out::<sqlx::Sqlite, Order>()
///     .to(Sqlite::insert("orders"), |o: &Order| Some(OrderRow { id: o.id }))
///     .to(Sqlite::insert("order_lines"), |o: &Order| {
///         o.lines.iter().map(|(n, sku)| LineRow { order_id: o.id, n: *n, sku: sku.clone() }).collect::<Vec<_>>()
///     });
/// # drop(sink);
/// ```
pub fn fan_out<DB: Dialect, T>() -> FanOut<DB, T> {
    FanOut {
        branches: Vec::new(),
        setup: Vec::new(),
        errors: Vec::new(),
    }
}

/// See [`fan_out`].
pub struct FanOut<DB: Dialect, T> {
    branches: Vec<Box<dyn Branch<DB, T>>>,
    setup: Vec<Setup<DB>>,
    errors: Vec<(String, String)>,
}

impl<DB: Dialect, T> std::fmt::Debug for FanOut<DB, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field(
                "branches",
                &self.branches.iter().map(|b| b.name()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<DB: Dialect, T: Send + Sync + 'static> FanOut<DB, T> {
    /// Also write `project(value)`'s rows (none, one or many per value) to `table`.
    pub fn to<R, I, F>(mut self, table: Table<DB>, project: F) -> Self
    where
        R: Row + 'static,
        I: IntoIterator<Item = R>,
        F: Fn(&T) -> I + Send + Sync + 'static,
    {
        match table.build::<R>() {
            Ok((sink, setup)) => {
                self.setup.extend(setup);
                self.branches.push(Box::new(Projected {
                    sink,
                    project,
                    _t: PhantomData,
                }));
            }
            Err(e) => self.errors.push(e),
        }
        self
    }
}

#[async_trait]
trait Branch<DB: Dialect, T>: Send + Sync {
    fn name(&self) -> &str;
    async fn write(
        &self,
        tx: &mut Transaction<'static, DB>,
        items: &[Item<T>],
    ) -> weir_sql::Result<()>;
}

struct Projected<DB: Dialect, T, R: Row, F> {
    sink: TableSink<DB, R>,
    project: F,
    _t: PhantomData<fn(&T)>,
}

#[async_trait]
impl<DB, T, R, I, F> Branch<DB, T> for Projected<DB, T, R, F>
where
    DB: Dialect,
    T: Send + Sync,
    R: Row + 'static,
    I: IntoIterator<Item = R>,
    F: Fn(&T) -> I + Send + Sync,
{
    fn name(&self) -> &str {
        self.sink.table().name().as_str()
    }
    async fn write(
        &self,
        tx: &mut Transaction<'static, DB>,
        items: &[Item<T>],
    ) -> weir_sql::Result<()> {
        let rows: Vec<R> = items
            .iter()
            .flat_map(|i| (self.project)(&i.value))
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        self.sink.write_rows(&mut **tx, rows.iter()).await?;
        Ok(())
    }
}

/// The fan-out's sink (what [`FanOut`] becomes).
pub struct FanOutSink<DB: Dialect, T> {
    branches: Vec<Box<dyn Branch<DB, T>>>,
    name: String,
}

impl<DB: Dialect, T> std::fmt::Debug for FanOutSink<DB, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOutSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<DB: Dialect, T: Send + Sync + 'static> TransactionalSink<DB, T> for FanOutSink<DB, T> {
    fn name(&self) -> &str {
        &self.name
    }
    async fn write(
        &self,
        tx: &mut Transaction<'static, DB>,
        items: &[Item<T>],
    ) -> weir_sql::Result<()> {
        for b in &self.branches {
            b.write(tx, items).await?;
        }
        Ok(())
    }
}

impl<DB: Dialect, T: Send + Sync + 'static> IntoSink<DB, T> for FanOut<DB, T> {
    type Sink = FanOutSink<DB, T>;
    fn into_sink(
        mut self,
        _: &SinkContext<DB>,
    ) -> Result<BuiltSink<DB, Self::Sink>, (String, String)> {
        if let Some(e) = self.errors.drain(..).next() {
            return Err(e);
        }
        if self.branches.is_empty() {
            return Err((
                "sink fan-out".to_owned(),
                "has no table: add one with `.to(table, projection)`".to_owned(),
            ));
        }
        let name = format!(
            "fan-out({})",
            self.branches
                .iter()
                .map(|b| b.name().to_owned())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(BuiltSink {
            sink: FanOutSink {
                branches: self.branches,
                name,
            },
            setup: self.setup,
        })
    }
}
