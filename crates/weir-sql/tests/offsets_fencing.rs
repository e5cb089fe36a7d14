//! The offsets table on all three dialects: claim bumps the epoch and reads the
//! offset, the compare-and-set refuses stale epochs and stale offsets.

mod common;

use weir_core::TopicPartition;
use weir_sql::{Dialect, OffsetStore, TableName};

async fn claim_and_fence<DB: Dialect>(
    pool: sqlx::Pool<DB>,
    table: TableName,
) -> anyhow::Result<()> {
    let store = OffsetStore::<DB>::new("job-a")?.with_table(table.clone())?;
    store.migrate(&pool).await?;
    store.migrate(&pool).await?; // idempotent
    let other_job = OffsetStore::<DB>::new("job-b")?.with_table(table)?;

    let t0 = TopicPartition::new("orders", 0);
    let t1 = TopicPartition::new("orders", 1);
    let c = store.claim(&pool, &[t0.clone(), t1.clone()], "me").await?;
    assert_eq!(c[&t0].epoch, 1);
    assert_eq!(c[&t0].next_offset, None);

    // first commit: expected NULL
    let mut tx = pool.begin().await?;
    assert!(store.advance(&mut tx, &t0, 1, None, 10).await?);
    tx.commit().await?;

    // wrong expected offset, then wrong epoch: refused
    let mut tx = pool.begin().await?;
    assert!(!store.advance(&mut tx, &t0, 1, Some(9), 20).await?);
    assert!(!store.advance(&mut tx, &t0, 1, None, 20).await?);
    assert!(!store.advance(&mut tx, &t0, 2, Some(10), 20).await?);
    tx.rollback().await?;

    // a new owner claims: epoch 2, resumes at 10; the old epoch is fenced
    let c2 = store.claim(&pool, std::slice::from_ref(&t0), "you").await?;
    assert_eq!(c2[&t0].epoch, 2);
    assert_eq!(c2[&t0].next_offset, Some(10));
    let mut tx = pool.begin().await?;
    assert!(
        !store.advance(&mut tx, &t0, 1, Some(10), 20).await?,
        "zombie epoch must be refused"
    );
    assert!(store.advance(&mut tx, &t0, 2, Some(10), 20).await?);
    tx.commit().await?;

    let all = store.read_all(&pool).await?;
    assert_eq!(all[&t0].next_offset, Some(20));
    assert_eq!(all[&t0].epoch, 2);
    assert_eq!(all[&t0].owner.as_deref(), Some("you"));
    assert_eq!(all[&t1].next_offset, None);
    assert_eq!(all[&t1].epoch, 1);

    // another job's rows are its own
    assert!(other_job.read_all(&pool).await?.is_empty());
    let c3 = other_job
        .claim(&pool, std::slice::from_ref(&t0), "x")
        .await?;
    assert_eq!(
        c3[&t0],
        weir_sql::Claim {
            epoch: 1,
            next_offset: None
        }
    );
    Ok(())
}

async fn rolled_back_advance_leaves_nothing<DB: Dialect>(
    pool: sqlx::Pool<DB>,
) -> anyhow::Result<()> {
    let store = OffsetStore::<DB>::new("job")?;
    store.migrate(&pool).await?;
    let tp = TopicPartition::new("t", 3);
    let c = store.claim(&pool, std::slice::from_ref(&tp), "me").await?;
    let mut tx = pool.begin().await?;
    assert!(store.advance(&mut tx, &tp, c[&tp].epoch, None, 5).await?);
    tx.rollback().await?;
    let mut conn = pool.acquire().await?;
    let row = store
        .read(&mut conn, &tp)
        .await?
        .ok_or_else(|| anyhow::anyhow!("row missing"))?;
    assert_eq!(row.next_offset, None);
    Ok(())
}

#[tokio::test]
async fn sqlite_claim_and_fence() -> anyhow::Result<()> {
    let (pool, _dir) = common::sqlite("claim").await?;
    claim_and_fence(pool.clone(), TableName::new("weir_offsets")?).await?;
    rolled_back_advance_leaves_nothing(pool).await
}

#[tokio::test]
async fn postgres_claim_and_fence() -> anyhow::Result<()> {
    let (pool, schema) = common::pg("claim").await?;
    // an explicit schema that differs from the search_path, created by migrate
    claim_and_fence(
        pool.clone(),
        TableName::new("offs")?.with_schema(&format!("{schema}_x"))?,
    )
    .await?;
    rolled_back_advance_leaves_nothing(pool).await
}

#[tokio::test]
async fn mysql_claim_and_fence() -> anyhow::Result<()> {
    let (pool, _db) = common::mysql("claim").await?;
    claim_and_fence(pool.clone(), TableName::new("weir_offsets")?).await?;
    rolled_back_advance_leaves_nothing(pool).await
}

#[test]
fn job_names_are_validated() {
    assert!(OffsetStore::<sqlx::Sqlite>::new("").is_err());
    assert!(OffsetStore::<sqlx::Sqlite>::new("a\0b").is_err());
    assert!(OffsetStore::<sqlx::Sqlite>::new(&"j".repeat(256)).is_err());
    assert!(OffsetStore::<sqlx::Sqlite>::new("orders → db; 'quoted'").is_ok());
}
