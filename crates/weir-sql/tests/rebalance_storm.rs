//! Join/leave storm over the embedded log (one process): members of one group join,
//! leave cleanly (wakeup + close) or crash (their task is dropped mid-flight, consumer
//! and open transaction included) while input keeps arriving; eager and cooperative
//! assignment. Every record lands once and the first record processed after every
//! claim is the one sought to.

mod common;

use std::time::Duration;

use anyhow::anyhow;
use common::job::{self, verify};
use common::{wait_until, TestDb};
use weir_core::{
    AssignmentStrategy, AutoOffsetReset, Consumer, ConsumerConfig, Subscription, WakeupHandle,
};
use weir_sql::{ExactlyOnceRunner, OffsetStore, RunStats};

type Member = (
    tokio::task::JoinHandle<weir_sql::Result<RunStats>>,
    WakeupHandle,
);

/// A member with its own pool (a crashed member takes its connections with it, as a
/// crashed process would; the others never see them).
async fn start<DB: TestDb>(
    pool: &sqlx::Pool<DB>,
    log: &weir_log::Log,
    strategy: AssignmentStrategy,
) -> anyhow::Result<Member> {
    let pool = sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(3)
        .connect_with((*pool.connect_options()).clone())
        .await?;
    let config = ConsumerConfig::new()
        .with_group_id("storm")
        .with_auto_offset_reset(AutoOffsetReset::Earliest)
        .with_enable_auto_commit(false)
        .with_max_poll_records(100)
        .with_session_timeout(Duration::from_millis(1000))
        .with_heartbeat_interval(Duration::from_millis(200))
        .with_assignment_strategy(strategy);
    let mut consumer = weir_log::LogConsumer::new(log, config)?;
    let wake = consumer.wakeup_handle();
    let mut runner =
        ExactlyOnceRunner::new(pool.clone(), "storm", job::table_sink::<DB>()?, job::decode)?
            .with_batch_records(150)
            .with_linger(Duration::from_millis(20));
    let task = tokio::spawn(async move {
        runner.migrate().await?;
        let r = runner
            .run(&mut consumer, Subscription::topics([job::TOPIC]))
            .await;
        let _ = consumer.close().await;
        r
    });
    Ok((task, wake))
}

async fn storm<DB: TestDb>(
    pool: sqlx::Pool<DB>,
    strategy: AssignmentStrategy,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = job::open_log(dir.path())?;
    job::create_out_table(&pool).await?;
    // tables first, so that members do not race to create them
    ExactlyOnceRunner::new(pool.clone(), "storm", job::table_sink::<DB>()?, job::decode)?
        .migrate()
        .await?;
    let mut produced = 600;
    job::produce(&log, 0, produced)?;
    let mut members: Vec<Member> = vec![start(&pool, &log, strategy).await?];
    let (mut joins, mut leaves, mut crashes) = (1, 0, 0);
    let mut stats: Vec<RunStats> = Vec::new();
    for step in 0..24_u64 {
        tokio::time::sleep(Duration::from_millis(100 + (step * 37) % 300)).await;
        match step % 4 {
            0 | 2 if members.len() < 4 => {
                members.push(start(&pool, &log, strategy).await?);
                joins += 1;
            }
            1 if members.len() > 1 => {
                let (task, wake) = members.remove((step as usize) % members.len());
                wake.wakeup();
                let s = tokio::time::timeout(Duration::from_secs(30), task)
                    .await
                    .map_err(|_| anyhow!("a leaving member hung"))???;
                stats.push(s);
                leaves += 1;
            }
            3 if members.len() > 1 => {
                let (task, _) = members.remove((step as usize) % members.len());
                task.abort();
                let _ = task.await;
                crashes += 1;
            }
            _ => {}
        }
        if step % 3 == 0 {
            job::produce(&log, produced, produced + 150)?;
            produced += 150;
        }
    }
    let (store, ends) = (OffsetStore::<DB>::new("storm")?, job::ends(&log)?);
    wait_until(Duration::from_secs(90), "the group to catch up", || {
        let (store, ends, pool) = (store.clone(), ends.clone(), pool.clone());
        async move {
            let got = store.read_all(&pool).await?;
            Ok(ends
                .iter()
                .all(|(tp, end)| got.get(tp).and_then(|r| r.next_offset) == Some(*end)))
        }
    })
    .await?;
    for (task, wake) in members {
        wake.wakeup();
        stats.push(
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .map_err(|_| anyhow!("a member hung at the end"))???,
        );
    }
    verify(&pool, produced).await?;
    let mismatches: u64 = stats.iter().map(|s| s.seek_mismatches).sum();
    let claims: u64 = stats.iter().map(|s| s.claims).sum();
    assert_eq!(mismatches, 0, "{stats:?}");
    println!(
        "join/leave storm ({strategy:?}): {joins} joins, {leaves} leaves, {crashes} crashes, {claims}+ claims, {produced} records, 0 seek mismatches, 0 anomalies"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_eager_join_leave_storm() -> anyhow::Result<()> {
    let (pool, _s) = common::pg("storm").await?;
    storm(pool, AssignmentStrategy::Range).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cooperative_join_leave_storm() -> anyhow::Result<()> {
    let (pool, _s) = common::pg("coopstorm").await?;
    storm(pool, AssignmentStrategy::CooperativeSticky).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_eager_join_leave_storm() -> anyhow::Result<()> {
    let (pool, _d) = common::sqlite("storm").await?;
    storm(pool, AssignmentStrategy::Range).await
}
