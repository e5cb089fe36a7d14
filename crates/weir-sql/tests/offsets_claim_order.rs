//! `OffsetStore::claim` takes its row locks in one global order (sorted, without
//! duplicates), so two members claiming overlapping sets in different orders wait for
//! each other instead of deadlocking.
//!
//! The lock-order test is deterministic: a third transaction holds the lock of the
//! first partition in sorted order, a claim of `[p1, p0]` is started and waits for it;
//! a claimer that locks in the caller's order already holds `p1` at that point (the
//! half of a deadlock), one that sorts holds nothing. A `FOR UPDATE NOWAIT` probe of
//! `p1` tells the two apart.

mod common;

use std::time::Duration;

use common::TestDb;
use weir_core::TopicPartition;
use weir_sql::{Dialect, DialectKind, OffsetStore, TableName};

/// A partition named twice is claimed once (its epoch moves by one), whatever the
/// order.
async fn duplicates_claimed_once<DB: Dialect>(pool: sqlx::Pool<DB>) -> anyhow::Result<()> {
    let store = OffsetStore::<DB>::new("claim-order")?;
    store.migrate(&pool).await?;
    let t0 = TopicPartition::new("orders", 0);
    let t1 = TopicPartition::new("orders", 1);
    let c = store
        .claim(
            &pool,
            &[t1.clone(), t0.clone(), t1.clone(), t0.clone()],
            "me",
        )
        .await?;
    assert_eq!(c.len(), 2);
    assert_eq!(c[&t0].epoch, 1, "a duplicate must not bump the epoch twice");
    assert_eq!(c[&t1].epoch, 1, "a duplicate must not bump the epoch twice");
    let all = store.read_all(&pool).await?;
    assert_eq!(all[&t0].epoch, 1);
    assert_eq!(all[&t1].epoch, 1);

    let c = store.claim(&pool, &[t1.clone(), t0.clone()], "you").await?;
    assert_eq!((c[&t0].epoch, c[&t1].epoch), (2, 2));
    Ok(())
}

#[tokio::test]
async fn sqlite_claim_dedupes() -> anyhow::Result<()> {
    let (pool, _dir) = common::sqlite("claim_dedupe").await?;
    duplicates_claimed_once(pool).await
}

#[tokio::test]
async fn postgres_claim_dedupes() -> anyhow::Result<()> {
    let (pool, _schema) = common::pg("claim_dedupe").await?;
    duplicates_claimed_once(pool).await
}

#[tokio::test]
async fn mysql_claim_dedupes() -> anyhow::Result<()> {
    let (pool, _db) = common::mysql("claim_dedupe").await?;
    duplicates_claimed_once(pool).await
}

/// `[p1, p0]` is claimed while another transaction holds `p0`'s row lock: the waiting
/// claim must not hold `p1`'s.
///
/// `blocked_sql` counts the claims of this test's schema waiting for a row lock.
async fn claim_waits_holding_nothing<DB: TestDb>(
    pool: sqlx::Pool<DB>,
    table: TableName,
    blocked_sql: String,
) -> anyhow::Result<()> {
    let q = |s: &str| weir_sql::Ident::new(s).map(|i| i.quoted(DB::KIND));
    let nowait_sql = format!(
        "SELECT {epoch} FROM {t} WHERE {job} = 'claim-order' AND {topic} = 'orders' \
         AND {part} = 1 FOR UPDATE NOWAIT",
        epoch = q("epoch")?,
        t = table.quoted(DB::KIND),
        job = q("job")?,
        topic = q("topic")?,
        part = q("partition")?,
    );
    let store = OffsetStore::<DB>::new("claim-order")?
        .with_table(table)?
        .with_lock_timeout(Duration::from_secs(120));
    store.migrate(&pool).await?;
    let p0 = TopicPartition::new("orders", 0);
    let p1 = TopicPartition::new("orders", 1);
    let first = store.claim(&pool, &[p0.clone(), p1.clone()], "a").await?;
    assert_eq!((first[&p0].epoch, first[&p1].epoch), (1, 1));
    DB::exec(&pool, nowait_sql.clone()).await?; // the probe works on a free row

    // Another transaction holds p0's row lock.
    let mut holder = pool.begin().await?;
    assert!(store.advance(&mut holder, &p0, 1, None, 5).await?);

    let claimer = {
        let (store, pool) = (store.clone(), pool.clone());
        let parts = vec![p1.clone(), p0.clone()];
        tokio::spawn(async move { store.claim(&pool, &parts, "b").await })
    };
    // Wait (up to a minute) until the claim waits for p0's lock. Polled every 250 ms:
    // InnoDB refreshes INFORMATION_SCHEMA.INNODB_TRX only after 100 ms without a read.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while DB::scalar(&pool, blocked_sql.clone()).await? != 1 {
        if claimer.is_finished() || std::time::Instant::now() > deadline {
            anyhow::bail!("the claim of [p1, p0] never waited for p0's row lock");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let probe = DB::exec(&pool, nowait_sql).await;
    holder.rollback().await?;
    let claims = claimer.await??;
    if let Err(e) = probe {
        anyhow::bail!(
            "a claim waiting for p0 held p1's row lock (locks taken in the caller's order, \
             the first half of a deadlock): {e:#}"
        );
    }
    assert_eq!((claims[&p0].epoch, claims[&p1].epoch), (2, 2));
    Ok(())
}

#[tokio::test]
async fn postgres_claim_locks_in_sorted_order() -> anyhow::Result<()> {
    let (pool, schema) = common::pg("claim_order").await?;
    // The table is named with its schema so that the claim's text names the
    // test's own schema (other tests may share the server).
    let table = TableName::new("offs")?.with_schema(&schema)?;
    let blocked = format!(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND wait_event_type = 'Lock' AND query LIKE '%{}%' AND pid <> pg_backend_pid()",
        table.quoted(DialectKind::Postgres)
    );
    claim_waits_holding_nothing(pool, table, blocked).await
}

#[tokio::test]
async fn mysql_claim_locks_in_sorted_order() -> anyhow::Result<()> {
    let (pool, _db) = common::mysql("claim_order").await?;
    // Each test has its own database: count the lock waits of connections using it.
    let blocked = "SELECT COUNT(*) FROM information_schema.INNODB_TRX t \
                   JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id \
                   WHERE t.trx_state = 'LOCK WAIT' AND p.DB = DATABASE()"
        .to_owned();
    claim_waits_holding_nothing(pool, TableName::new("offs")?, blocked).await
}
