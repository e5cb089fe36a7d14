//! A zombie stopped between its compare-and-set and its `COMMIT` holds the offsets row
//! lock: the new owner's claim must fail with a retriable error after the configured
//! lock timeout instead of waiting for ever, succeed once the lock is gone, and the
//! zombie's late compare-and-set must then affect no row.

mod common;

use std::time::Duration;

use weir_core::TopicPartition;
use weir_sql::{Dialect, OffsetStore, DEFAULT_CLAIM_LOCK_TIMEOUT};

/// Far above the 300 ms lock timeout, far below "hangs for ever" (PostgreSQL's
/// default) or InnoDB's 50 s default.
const DEADLINE: Duration = Duration::from_secs(5);

async fn claim_waits_bounded<DB: Dialect>(pool: sqlx::Pool<DB>) -> anyhow::Result<()> {
    let store = OffsetStore::<DB>::new("lock-timeout-job")?;
    assert_eq!(store.lock_timeout(), DEFAULT_CLAIM_LOCK_TIMEOUT);
    let store = store.with_lock_timeout(Duration::from_millis(300));
    assert_eq!(store.lock_timeout(), Duration::from_millis(300));
    store.migrate(&pool).await?;
    let tp = TopicPartition::new("orders", 0);

    // The zombie owns epoch 1 and committed up to 10.
    let c1 = store
        .claim(&pool, std::slice::from_ref(&tp), "zombie")
        .await?;
    assert_eq!(c1[&tp].epoch, 1);
    let mut tx = pool.begin().await?;
    assert!(store.advance(&mut tx, &tp, 1, None, 10).await?);
    tx.commit().await?;

    // Its next compare-and-set ran but it stopped before COMMIT: the row is locked.
    let mut zombie = pool.begin().await?;
    assert!(store.advance(&mut zombie, &tp, 1, Some(10), 20).await?);

    // The new owner's claim gives up after the lock timeout with a retriable error.
    let blocked = tokio::time::timeout(
        DEADLINE,
        store.claim(&pool, std::slice::from_ref(&tp), "new-owner"),
    )
    .await;
    let err = match blocked {
        Err(_) => anyhow::bail!("claim still waiting for the zombie's row lock after {DEADLINE:?}"),
        Ok(Ok(c)) => anyhow::bail!("claim succeeded through a held row lock: {c:?}"),
        Ok(Err(e)) => e,
    };
    assert!(
        err.is_retriable(),
        "a lock timeout must be retriable: {err}"
    );

    // The zombie never commits (its process died): the lock is released.
    zombie.rollback().await?;
    let c2 = tokio::time::timeout(
        DEADLINE,
        store.claim(&pool, std::slice::from_ref(&tp), "new-owner"),
    )
    .await??;
    assert_eq!(c2[&tp].epoch, 2, "the retried claim bumps the epoch once");
    assert_eq!(c2[&tp].next_offset, Some(10), "resumes at the last commit");

    // The zombie wakes up and retries its compare-and-set: 0 rows, fenced.
    let mut zombie = pool.begin().await?;
    assert!(
        !store.advance(&mut zombie, &tp, 1, Some(10), 20).await?,
        "the zombie's stale compare-and-set must affect 0 rows"
    );
    zombie.commit().await?;

    let all = store.read_all(&pool).await?;
    assert_eq!(all[&tp].epoch, 2);
    assert_eq!(all[&tp].next_offset, Some(10));
    assert_eq!(all[&tp].owner.as_deref(), Some("new-owner"));

    // The new owner commits normally, and a later claim works on the same pool
    // (a pooled MySQL connection keeps the session setting: harmless).
    let mut tx = pool.begin().await?;
    assert!(store.advance(&mut tx, &tp, 2, Some(10), 30).await?);
    tx.commit().await?;
    let c3 = store
        .claim(&pool, std::slice::from_ref(&tp), "third")
        .await?;
    assert_eq!(c3[&tp].epoch, 3);
    assert_eq!(c3[&tp].next_offset, Some(30));
    Ok(())
}

#[tokio::test]
async fn postgres_claim_lock_wait_is_bounded() -> anyhow::Result<()> {
    let (pool, _schema) = common::pg("claim_lock").await?;
    claim_waits_bounded(pool).await
}

#[tokio::test]
async fn mysql_claim_lock_wait_is_bounded() -> anyhow::Result<()> {
    let (pool, _db) = common::mysql("claim_lock").await?;
    claim_waits_bounded(pool).await
}

#[tokio::test]
async fn sqlite_claim_lock_wait_is_bounded_by_busy_timeout() -> anyhow::Result<()> {
    // SQLite needs no statement: the pool's busy_timeout bounds the wait. Only the
    // happy path is checked here (a held write lock is a whole-database lock).
    let (pool, _dir) = common::sqlite("claim_lock").await?;
    let store = OffsetStore::<sqlx::Sqlite>::new("lock-timeout-job")?
        .with_lock_timeout(Duration::from_millis(300));
    store.migrate(&pool).await?;
    let tp = TopicPartition::new("orders", 0);
    let c = store.claim(&pool, std::slice::from_ref(&tp), "a").await?;
    assert_eq!(c[&tp].epoch, 1);
    let c = store.claim(&pool, std::slice::from_ref(&tp), "b").await?;
    assert_eq!(c[&tp].epoch, 2);
    Ok(())
}
