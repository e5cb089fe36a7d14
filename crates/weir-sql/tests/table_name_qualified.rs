//! Schema-qualified table names: `TableName::new("analytics.orders")` is table
//! `orders` in schema (MySQL: database; SQLite: attached database) `analytics`, each
//! part quoted on its own, never one table literally named `analytics.orders`;
//! ambiguous dotted names are refused before any SQL is sent, and hostile parts stay
//! inside their quotes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::TestDb;
use weir_sql::{impl_row, OffsetStore, TableName, TableSink};

struct Order {
    id: i64,
    note: String,
}
impl_row!(Order { id, note });

fn orders() -> Vec<Order> {
    (0..3)
        .map(|id| Order {
            id,
            note: format!("order {id}"),
        })
        .collect()
}

async fn write<DB: TestDb>(pool: &sqlx::Pool<DB>, table: TableName) -> anyhow::Result<()> {
    let sink = TableSink::<DB, Order>::new(table)?;
    sink.create_table(pool).await?;
    let mut tx = pool.begin().await?;
    sink.write_rows(&mut *tx, &orders()).await?;
    tx.commit().await?;
    Ok(())
}

#[test]
fn ambiguous_dotted_names_are_refused_pointing_at_with_schema() {
    for bad in [
        "a.b.c",
        ".orders",
        "analytics.",
        ".",
        "\"analytics\".\"orders\"",
        "`analytics`.orders",
        "[dbo].orders",
    ] {
        let e = TableName::new(bad).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("with_schema") && msg.contains("unqualified"),
            "{bad}: {msg}"
        );
    }
    let t = TableName::new("analytics.orders").unwrap();
    assert_eq!(t.schema().unwrap().as_str(), "analytics");
    assert_eq!(t.name().as_str(), "orders");
    // parts are validated like any identifier
    assert!(TableName::new(&format!("{}.orders", "s".repeat(64))).is_err());
    assert!(TableName::new("analytics.trailing ").is_err());
    // a dotted table name on purpose
    assert!(TableName::unqualified("a.b.c").unwrap().schema().is_none());
}

#[tokio::test]
async fn postgres_schema_dot_table_is_a_table_in_that_schema() -> anyhow::Result<()> {
    let (pool, schema) = common::pg("qualified").await?;
    let other = format!("{schema}_a");
    write(&pool, TableName::new(&format!("{other}.orders"))?).await?;
    let n = <sqlx::Postgres as TestDb>::scalar(
        &pool,
        format!("SELECT COUNT(*) FROM \"{other}\".\"orders\""),
    )
    .await?;
    assert_eq!(n, 3);
    let dotted = <sqlx::Postgres as TestDb>::scalar(
        &pool,
        format!(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_name LIKE '%.%' \
             AND table_schema IN ('{schema}', '{other}')"
        ),
    )
    .await?;
    assert_eq!(dotted, 0, "no table literally named `schema.orders`");
    // the offsets store takes the same names
    let store = OffsetStore::<sqlx::Postgres>::new("job")?
        .with_table(TableName::new(&format!("{other}.offs"))?)?;
    store.migrate(&pool).await?;

    // hostile parts (no quote characters: those are refused as ambiguous)
    <sqlx::Postgres as TestDb>::exec(&pool, "CREATE TABLE victim (x INTEGER)".into()).await?;
    let tag = &schema[schema.len() - 10..];
    let hostile = format!("{tag}; DROP TABLE victim; --.t; DELETE FROM victim");
    let t = TableName::new(&hostile)?;
    write(&pool, t.clone()).await?;
    assert_eq!(t.name().as_str(), "t; DELETE FROM victim");
    assert_eq!(
        <sqlx::Postgres as TestDb>::scalar(&pool, "SELECT COUNT(*) FROM victim".into()).await?,
        0,
        "victim intact (and empty, as created)"
    );
    for s in [other.clone(), format!("{tag}; DROP TABLE victim; --")] {
        <sqlx::Postgres as TestDb>::exec(
            &pool,
            format!("DROP SCHEMA \"{}\" CASCADE", s.replace('"', "\"\"")),
        )
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn mysql_schema_dot_table_is_a_table_in_that_database() -> anyhow::Result<()> {
    let (pool, db) = common::mysql("qualified").await?;
    let other = format!("{db}_a");
    write(&pool, TableName::new(&format!("{other}.orders"))?).await?;
    let n =
        <sqlx::MySql as TestDb>::scalar(&pool, format!("SELECT COUNT(*) FROM `{other}`.`orders`"))
            .await?;
    assert_eq!(n, 3);
    let dotted = <sqlx::MySql as TestDb>::scalar(
        &pool,
        format!(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_name LIKE '%.%' \
             AND table_schema IN ('{db}', '{other}')"
        ),
    )
    .await?;
    assert_eq!(dotted, 0, "no table literally named `database.orders`");
    <sqlx::MySql as TestDb>::exec(&pool, format!("DROP DATABASE `{other}`")).await?;
    <sqlx::MySql as TestDb>::exec(&pool, format!("DROP DATABASE `{db}`")).await?;
    Ok(())
}

#[tokio::test]
async fn sqlite_schema_is_an_attached_database() -> anyhow::Result<()> {
    let (pool, _dir) = common::sqlite("qualified").await?;
    write(&pool, TableName::new("main.orders")?).await?;
    let n = <sqlx::Sqlite as TestDb>::scalar(&pool, "SELECT COUNT(*) FROM orders".into()).await?;
    assert_eq!(n, 3);
    let err = write(&pool, TableName::new("nosuch.orders")?)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nosuch"), "{err:#}");
    Ok(())
}
