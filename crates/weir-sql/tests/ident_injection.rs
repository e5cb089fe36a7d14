//! Identifier injection on all three dialects: table, schema and column names with
//! quotes, backticks, semicolons, dots, comment markers and reserved words are always
//! quoted, so only the intended statements run; over-long and NUL names are refused
//! before any SQL is sent.

mod common;

use common::TestDb;
use weir_core::TopicPartition;
use weir_sql::{Column, ColumnType, DeadLetters, OffsetStore, Row, TableName, TableSink, Value};

const HOSTILE: &[&str] = &[
    "quote\"; DROP TABLE victim; --",
    "tick`; DROP TABLE victim; --",
    "semi; DELETE FROM victim",
    "select",
    "a.b",
    "'single'",
    "\"",
    "`",
    "/* c */ x",
    "Mixed Case",
    "ünï côdé",
];

/// A row whose column names are hostile too.
struct HostileRow {
    n: i64,
    t: String,
}

impl Row for HostileRow {
    fn columns() -> weir_sql::Result<Vec<Column>> {
        Ok(vec![
            Column::new("col\"; DROP TABLE victim; --", ColumnType::BigInt, false)?,
            Column::new(
                "order`) VALUES (1); DROP TABLE victim; --",
                ColumnType::Text,
                false,
            )?,
        ])
    }
    fn values<'a>(&'a self, out: &mut Vec<Value<'a>>) {
        out.push(Value::BigInt(self.n));
        out.push(Value::Text(&self.t));
    }
}

async fn injection<DB: TestDb>(pool: sqlx::Pool<DB>) -> anyhow::Result<usize> {
    DB::exec(&pool, "CREATE TABLE victim (x INTEGER)".into()).await?;
    DB::exec(&pool, "INSERT INTO victim (x) VALUES (42)".into()).await?;
    let before = DB::scalar(&pool, DB::COUNT_TABLES.into()).await?;
    let tp = TopicPartition::new("topic'; DROP TABLE victim; --", 0);
    let mut names = 0;
    for name in HOSTILE {
        // `unqualified`: "a.b" is one table named so (`new` would read a schema)
        let sink = TableSink::<DB, HostileRow>::new(TableName::unqualified(name)?)?;
        sink.create_table(&pool).await?;
        let store = OffsetStore::<DB>::new(&format!("job {name}"))?
            .with_table(TableName::unqualified(&format!("o {name}"))?)?;
        store.migrate(&pool).await?;
        let dlq = DeadLetters::<DB>::new("job")?
            .with_table(TableName::unqualified(&format!("d {name}"))?)?;
        dlq.migrate(&pool).await?;
        let claim = store.claim(&pool, std::slice::from_ref(&tp), name).await?;
        let mut tx = pool.begin().await?;
        sink.write_rows(
            &mut tx,
            &[HostileRow {
                n: 1,
                t: (*name).to_owned(),
            }],
        )
        .await?;
        dlq.write(
            &mut tx,
            &[weir_sql::DeadLetter::new(
                weir_core::Record::new(tp.topic(), 0, 0, None, None),
                weir_sql::Stage::Decode,
                *name,
            )],
        )
        .await?;
        assert!(
            store
                .advance(&mut tx, &tp, claim[&tp].epoch, None, 1)
                .await?
        );
        tx.commit().await?;
        let all = store.read_all(&pool).await?;
        assert_eq!(all[&tp].next_offset, Some(1), "{name}");
        assert_eq!(all[&tp].owner.as_deref(), Some(*name));
        names += 1;
    }
    let after = DB::scalar(&pool, DB::COUNT_TABLES.into()).await?;
    assert_eq!(
        after - before,
        3 * HOSTILE.len() as i64,
        "exactly the intended tables were created"
    );
    assert_eq!(
        DB::scalar(&pool, "SELECT COUNT(*) FROM victim WHERE x = 42".into()).await?,
        1,
        "victim intact"
    );
    Ok(names)
}

#[tokio::test]
async fn sqlite_hostile_names_run_only_intended_statements() -> anyhow::Result<()> {
    let (pool, _dir) = common::sqlite("inj").await?;
    let n = injection(pool).await?;
    println!("identifier injection: {n} names x SQLite, 0 unintended");
    Ok(())
}

#[tokio::test]
async fn postgres_hostile_names_run_only_intended_statements() -> anyhow::Result<()> {
    let (pool, _schema) = common::pg("inj").await?;
    let n = injection(pool).await?;
    println!("identifier injection: {n} names x PostgreSQL, 0 unintended");
    Ok(())
}

#[tokio::test]
async fn mysql_hostile_names_run_only_intended_statements() -> anyhow::Result<()> {
    let (pool, _db) = common::mysql("inj").await?;
    let n = injection(pool).await?;
    println!("identifier injection: {n} names x MariaDB, 0 unintended");
    Ok(())
}

#[tokio::test]
async fn hostile_schema_names_are_quoted() -> anyhow::Result<()> {
    let (pool, schema) = common::pg("injs").await?;
    <sqlx::Postgres as TestDb>::exec(&pool, "CREATE TABLE victim (x INTEGER)".into()).await?;
    let tag = &schema[schema.len() - 10..];
    let hostile = format!("{tag}\";DROP TABLE victim;--");
    let store = OffsetStore::<sqlx::Postgres>::new("j")?
        .with_table(TableName::new("offs")?.with_schema(&hostile)?)?;
    store.migrate(&pool).await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = $1",
    )
    .bind(&hostile)
    .fetch_one(&pool)
    .await?;
    assert_eq!(n, 1);
    assert_eq!(
        <sqlx::Postgres as TestDb>::scalar(&pool, "SELECT COUNT(*) FROM victim".into()).await?,
        0
    );

    let (mypool, db) = common::mysql("injs").await?;
    <sqlx::MySql as TestDb>::exec(&mypool, "CREATE TABLE victim (x INTEGER)".into()).await?;
    let tag = &db[db.len() - 10..];
    let hostile = format!("{tag}`;DROP TABLE victim;--");
    let store = OffsetStore::<sqlx::MySql>::new("j")?
        .with_table(TableName::new("offs")?.with_schema(&hostile)?)?;
    store.migrate(&mypool).await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?",
    )
    .bind(&hostile)
    .fetch_one(&mypool)
    .await?;
    assert_eq!(n, 1);
    assert_eq!(
        <sqlx::MySql as TestDb>::scalar(&mypool, "SELECT COUNT(*) FROM victim".into()).await?,
        0
    );
    <sqlx::MySql as TestDb>::exec(
        &mypool,
        format!("DROP DATABASE `{}`", hostile.replace('`', "``")),
    )
    .await?;
    Ok(())
}

#[test]
fn over_long_and_nul_names_are_refused_before_any_sql() {
    let long = "n".repeat(64);
    for bad in [long.as_str(), "", "nul\0byte", "trailing "] {
        assert!(TableName::new(bad).is_err(), "{bad:?}");
        assert!(
            TableName::new("t").unwrap().with_schema(bad).is_err(),
            "{bad:?}"
        );
        assert!(
            Column::new(bad, ColumnType::Text, false).is_err(),
            "{bad:?}"
        );
    }
}
