//! General folds: a state of your type per key, kept as a JSON row per (job, topic,
//! partition, key) and updated in the batch's transaction.
//!
//! Unlike the commutative aggregates, a fold is **partition-local**: the state of a key
//! in partition 3 is folded only from partition 3's records, in offset order, by the
//! one member that owns partition 3 (the epoch fence guarantees it). Key your records
//! the way the topic is partitioned (the usual case: the key_by key is the record
//! key) and each key has one state; otherwise a key has one state per partition.
//!
//! Each batch reads the states of the keys it touches (one query per partition and
//! batch, inside the transaction), folds its records in order and writes the new
//! states back before the offsets' compare-and-set: a crash, a retry or a fenced
//! zombie can neither lose a step nor apply one twice. No state is cached between
//! batches: a cache would have to know each commit's outcome, and the read is one
//! indexed query per partition.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::{Pool, Transaction};
use weir_core::{Coordinates, TopicPartition};
use weir_sql::{
    ColumnType, Dialect, DialectKind, Ident, Item, Refusal, TableName, TransactionalSink, Value,
};

use super::{panic_message, placeholder, prepare, Definition, GroupKey, KeyPart};
use crate::sink::{BuiltSink, IntoSink, Setup, SinkContext};
use crate::Keyed;

/// Keys per state read and rows per state upsert, at most.
const CHUNK: usize = 256;

type Init<S> = Arc<dyn Fn() -> S + Send + Sync>;
type Step<S, T> = Arc<dyn Fn(S, &T) -> S + Send + Sync>;

/// A fold table spec: made by [`Table::fold`](crate::sink::Table::fold) (and
/// `Postgres::fold`, `Sqlite::fold`, `MySql::fold`).
///
/// ```
/// use weir_pipeline::sink::Sqlite;
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
/// struct Session { clicks: u32, last_page: String }
/// struct Click { page: String }
/// let t = Sqlite::fold("sessions", Session::default, |mut s: Session, c: &Click| {
///     s.clicks += 1;
///     s.last_page = c.page.clone();
///     s
/// });
/// # drop(t);
/// ```
pub struct FoldTable<DB, S, T> {
    table: String,
    init: Init<S>,
    step: Step<S, T>,
    create: bool,
    _db: PhantomData<fn() -> DB>,
}

impl<DB, S, T> std::fmt::Debug for FoldTable<DB, S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoldTable")
            .field("table", &self.table)
            .field("state", &std::any::type_name::<S>())
            .finish_non_exhaustive()
    }
}

impl<DB, S, T> FoldTable<DB, S, T> {
    pub(crate) fn new(
        table: &str,
        init: impl Fn() -> S + Send + Sync + 'static,
        step: impl Fn(S, &T) -> S + Send + Sync + 'static,
    ) -> Self {
        Self {
            table: table.to_owned(),
            init: Arc::new(init),
            step: Arc::new(step),
            create: true,
            _db: PhantomData,
        }
    }

    /// Create the table at start if it is missing (default true).
    ///
    /// ```
    /// let t = weir_pipeline::sink::Sqlite::fold("counts", || 0_u64, |n, _: &String| n + 1)
    ///     .create_if_missing(false);
    /// # drop(t);
    /// ```
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create = create;
        self
    }
}

#[derive(Debug)]
struct FoldSql {
    quoted: String,
    select_head: String,
    upsert_head: String,
    upsert_tail: String,
    kind: DialectKind,
    stmts: parking_lot::Mutex<HashMap<(bool, usize), Arc<str>>>,
}

impl FoldSql {
    /// `SELECT` of `n` keys (`read`) or upsert of `n` rows.
    fn stmt(&self, read: bool, n: usize) -> Arc<str> {
        let mut cache = self.stmts.lock();
        if let Some(s) = cache.get(&(read, n)) {
            return s.clone();
        }
        let p = |i| placeholder(self.kind, i);
        let sql = if read {
            let keys: Vec<String> = (0..n).map(|i| p(4 + i)).collect();
            format!("{}({})", self.select_head, keys.join(", "))
        } else {
            let rows: Vec<String> = (0..n)
                .map(|r| {
                    let ps: Vec<String> = (1..=6).map(|c| p(r * 6 + c)).collect();
                    format!("({})", ps.join(", "))
                })
                .collect();
            format!(
                "{}{}{}",
                self.upsert_head,
                rows.join(", "),
                self.upsert_tail
            )
        };
        let sql: Arc<str> = Arc::from(sql);
        cache.insert((read, n), sql.clone());
        sql
    }
}

/// The sink a [`FoldTable`] becomes when the job is built; it appears in the job's
/// type, not in user code.
///
/// ```
/// type SeenJob = weir_pipeline::Ready<
///     sqlx::Sqlite,
///     weir_pipeline::Keyed<String, i64>,
///     weir_pipeline::agg::FoldSink<sqlx::Sqlite, u64, i64>,
/// >;
/// ```
pub struct FoldSink<DB: Dialect, S, T> {
    sql: Arc<FoldSql>,
    init: Init<S>,
    step: Step<S, T>,
    job: Arc<str>,
    name: String,
    _db: PhantomData<fn() -> DB>,
}

impl<DB: Dialect, S, T> std::fmt::Debug for FoldSink<DB, S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoldSink")
            .field("table", &self.sql.quoted)
            .finish_non_exhaustive()
    }
}

/// The text a key is stored under: a single column as itself (text, decimal integer,
/// `true`/`false`), several as a JSON array.
fn key_text(parts: &[KeyPart]) -> String {
    let one = |p: &KeyPart| match p {
        KeyPart::Bool(b) => serde_json::Value::Bool(*b),
        KeyPart::Int(i) => serde_json::Value::from(*i),
        KeyPart::Text(s) => serde_json::Value::String(s.to_string()),
    };
    match parts {
        [KeyPart::Text(s)] => s.to_string(),
        [KeyPart::Int(i)] => i.to_string(),
        [KeyPart::Bool(b)] => b.to_string(),
        many => serde_json::Value::Array(many.iter().map(one).collect()).to_string(),
    }
}

/// Chunk sizes covering `n`: full chunks, then powers of two (few distinct
/// statements for the database to prepare).
fn chunks(mut n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    while n > 0 {
        let c = if n >= CHUNK {
            CHUNK
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        out.push(c);
        n -= c;
    }
    out
}

impl<DB, S, T> FoldSink<DB, S, T>
where
    DB: Dialect,
    S: Serialize + DeserializeOwned + Send + Sync,
    T: Send + Sync,
{
    /// The stored states of `keys` in `tp`: key → (JSON, last offset).
    async fn load(
        &self,
        conn: &mut DB::Connection,
        tp: &TopicPartition,
        keys: &[&str],
    ) -> weir_sql::Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        let mut at = 0;
        for n in chunks(keys.len()) {
            let mut args: Vec<Value<'_>> = vec![
                Value::Text(&self.job),
                Value::Text(tp.topic()),
                Value::Int(tp.partition()),
            ];
            args.extend(keys[at..at + n].iter().map(|k| Value::Text(k)));
            let rows = DB::fetch_offsets(conn, &self.sql.stmt(true, n), &args)
                .await
                .map_err(|e| weir_sql::Error::db("fold state read", e))?;
            for (key, _, _, _, state) in rows {
                out.insert(key, state.unwrap_or_default());
            }
            at += n;
        }
        Ok(out)
    }

    fn decode(&self, tp: &TopicPartition, key: &str, json: &str) -> weir_sql::Result<S> {
        serde_json::from_str(json).map_err(|e| weir_sql::Error::Sink {
            sink: self.name.clone(),
            message: format!(
                "the state of key `{key}` in {} ({tp}) does not deserialize as {}: {e}; it was written by another definition of the fold (nothing of this batch was committed)",
                self.sql.quoted,
                std::any::type_name::<S>()
            ),
            retriable: false,
        })
    }
}

#[async_trait]
impl<DB, K, S, T> TransactionalSink<DB, Keyed<K, T>> for FoldSink<DB, S, T>
where
    DB: Dialect,
    K: GroupKey,
    S: Serialize + DeserializeOwned + Send + Sync,
    T: Send + Sync,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(
        &self,
        tx: &mut Transaction<'static, DB>,
        items: &[Item<Keyed<K, T>>],
    ) -> weir_sql::Result<()> {
        let refused = self.write_refusing(tx, items).await?;
        super::refused_whole(&self.name, &refused)
    }

    async fn write_refusing(
        &self,
        tx: &mut Transaction<'static, DB>,
        items: &[Item<Keyed<K, T>>],
    ) -> weir_sql::Result<Vec<Refusal>> {
        // Items by partition, each with its key text, in batch (offset) order.
        let mut by_part: BTreeMap<TopicPartition, Vec<(usize, String)>> = BTreeMap::new();
        for (i, it) in items.iter().enumerate() {
            let mut parts = Vec::new();
            it.value.key.parts(&mut parts);
            by_part
                .entry(TopicPartition::new(
                    it.at.topic.to_string(),
                    it.at.partition,
                ))
                .or_default()
                .push((i, key_text(&parts)));
        }
        let mut refused: BTreeMap<Coordinates, String> = BTreeMap::new();
        for (tp, list) in &by_part {
            let keys: BTreeSet<&str> = list.iter().map(|(_, k)| k.as_str()).collect();
            let keys: Vec<&str> = keys.into_iter().collect();
            let stored = self.load(&mut **tx, tp, &keys).await?;
            // Fold the partition's items in offset order. A record whose fold (or
            // `init`) panics is refused whole: it may have items under several keys,
            // so the partition is folded again from the stored states without it,
            // and nothing of it is applied (the `Refusal` contract).
            let states: BTreeMap<&str, (S, i64)> = 'attempt: loop {
                let mut states: BTreeMap<&str, (S, i64)> = BTreeMap::new();
                for (i, key) in list {
                    let it = &items[*i];
                    if refused.contains_key(&it.at) {
                        continue;
                    }
                    let state = match states.remove(key.as_str()) {
                        Some((s, _)) => Ok(s),
                        None => match stored.get(key) {
                            Some(json) => Ok(self.decode(tp, key, json)?),
                            None => catch_unwind(AssertUnwindSafe(|| (self.init)()))
                                .map_err(|p| format!("fold init panicked: {}", panic_message(&*p))),
                        },
                    };
                    let next = state.and_then(|s| {
                        catch_unwind(AssertUnwindSafe(|| (self.step)(s, &it.value.value)))
                            .map_err(|p| format!("fold function panicked: {}", panic_message(&*p)))
                    });
                    match next {
                        Ok(next) => {
                            states.insert(key.as_str(), (next, it.at.offset));
                        }
                        Err(reason) => {
                            refused.insert(it.at.clone(), reason);
                            continue 'attempt;
                        }
                    }
                }
                break states;
            };
            // Write back in key order (the map is sorted).
            let mut rows: Vec<(String, &str, i64)> = Vec::with_capacity(states.len());
            for (key, (s, last)) in &states {
                let json = serde_json::to_string(s).map_err(|e| weir_sql::Error::Sink {
                    sink: self.name.clone(),
                    message: format!(
                        "the state of key `{key}` in {} ({tp}) does not serialize: {e}",
                        self.sql.quoted
                    ),
                    retriable: false,
                })?;
                rows.push((json, key, *last));
            }
            let mut at = 0;
            for n in chunks(rows.len()) {
                let mut args: Vec<Value<'_>> = Vec::with_capacity(n * 6);
                for (json, key, last) in &rows[at..at + n] {
                    args.extend([
                        Value::Text(&self.job),
                        Value::Text(tp.topic()),
                        Value::Int(tp.partition()),
                        Value::Text(key),
                        Value::Text(json),
                        Value::BigInt(*last),
                    ]);
                }
                DB::execute(&mut **tx, &self.sql.stmt(false, n), &args)
                    .await
                    .map_err(|e| weir_sql::Error::db("fold state write", e))?;
                at += n;
            }
        }
        Ok(refused
            .into_iter()
            .map(|(at, reason)| Refusal {
                at,
                reason,
                dead_letter: true,
            })
            .collect())
    }
}

impl<DB, K, S, T> IntoSink<DB, Keyed<K, T>> for FoldTable<DB, S, T>
where
    DB: Dialect,
    K: GroupKey + 'static,
    S: Serialize + DeserializeOwned + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    type Sink = FoldSink<DB, S, T>;

    fn into_sink(
        self,
        ctx: &SinkContext<DB>,
    ) -> Result<BuiltSink<DB, Self::Sink>, (String, String)> {
        let stage = format!("sink fold `{}`", self.table);
        let err = |e: weir_sql::Error| (stage.clone(), e.to_string());
        let kind = DB::KIND;
        let table = TableName::new(&self.table).map_err(err)?;
        let quoted = table.quoted(kind);
        let c = |n: &str| Ident::new(n).map(|i| i.quoted(kind)).map_err(err);
        let (job, topic, part, key, state, last) = (
            c("job")?,
            c("topic")?,
            c("partition")?,
            c("key")?,
            c("state")?,
            c("last_offset")?,
        );
        let text_key = ColumnType::Text.sql_name(kind, true);
        let text = ColumnType::Text.sql_name(kind, false);
        let int = ColumnType::Int.sql_name(kind, true);
        let big = ColumnType::BigInt.sql_name(kind, false);
        let engine = if kind == DialectKind::MySql {
            " ENGINE=InnoDB"
        } else {
            ""
        };
        let mut create: Vec<Arc<str>> = Vec::new();
        if let (Some(schema), DialectKind::Postgres | DialectKind::MySql) = (table.schema(), kind) {
            let kw = if kind == DialectKind::Postgres {
                "SCHEMA"
            } else {
                "DATABASE"
            };
            create.push(Arc::from(format!(
                "CREATE {kw} IF NOT EXISTS {}",
                schema.quoted(kind)
            )));
        }
        create.push(Arc::from(format!(
            "CREATE TABLE IF NOT EXISTS {quoted} ({job} {text_key} NOT NULL, {topic} {text_key} NOT NULL, \
             {part} {int} NOT NULL, {key} {text_key} NOT NULL, {state} {text} NOT NULL, {last} {big} NOT NULL, \
             PRIMARY KEY ({job}, {topic}, {part}, {key})){engine}"
        )));
        let cast = if kind == DialectKind::MySql {
            "SIGNED"
        } else {
            "BIGINT"
        };
        let p = |i| placeholder(kind, i);
        let select_head = format!(
            "SELECT {key}, {part}, {last}, CAST(0 AS {cast}), {state} FROM {quoted} \
             WHERE {job} = {} AND {topic} = {} AND {part} = {} AND {key} IN ",
            p(1),
            p(2),
            p(3)
        );
        let upsert_head = format!(
            "INSERT INTO {quoted} ({job}, {topic}, {part}, {key}, {state}, {last}) VALUES "
        );
        let upsert_tail = match kind {
            DialectKind::Postgres | DialectKind::Sqlite => format!(
                " ON CONFLICT ({job}, {topic}, {part}, {key}) DO UPDATE SET {state} = excluded.{state}, {last} = excluded.{last}"
            ),
            _ => format!(" ON DUPLICATE KEY UPDATE {state} = VALUES({state}), {last} = VALUES({last})"),
        };
        let definition = format!(
            "fold(state={}) keys({})",
            std::any::type_name::<S>(),
            K::types()
                .iter()
                .map(|t| t.sql_name(DialectKind::Postgres, false))
                .collect::<Vec<_>>()
                .join(",")
        );
        let def = Definition {
            quoted: quoted.clone(),
            create,
            definition,
            fresh: false,
        };
        let job_name = ctx.job().to_owned();
        let create_table = self.create;
        let name = table.to_string();
        let setup: Vec<Setup<DB>> = vec![Box::new(move |pool: &Pool<DB>| {
            Box::pin(async move { prepare::<DB>(pool, &def, create_table, &job_name, &name).await })
        })];
        Ok(BuiltSink {
            sink: FoldSink {
                sql: Arc::new(FoldSql {
                    quoted,
                    select_head,
                    upsert_head,
                    upsert_tail,
                    kind,
                    stmts: parking_lot::Mutex::new(HashMap::new()),
                }),
                init: self.init,
                step: self.step,
                job: Arc::from(ctx.job()),
                name: self.table,
                _db: PhantomData,
            },
            setup,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stored_readably() {
        assert_eq!(key_text(&[KeyPart::Text("alice".into())]), "alice");
        assert_eq!(key_text(&[KeyPart::Int(-7)]), "-7");
        assert_eq!(
            key_text(&[KeyPart::Text("a\"b".into()), KeyPart::Int(3)]),
            r#"["a\"b",3]"#
        );
    }

    #[test]
    fn chunks_cover_exactly() {
        for n in 0..1000 {
            let c = chunks(n);
            assert_eq!(c.iter().sum::<usize>(), n);
            assert!(c.iter().all(|c| c.is_power_of_two() && *c <= CHUNK));
        }
    }
}
