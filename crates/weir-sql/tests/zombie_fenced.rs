//! The paused zombie, in one process over the embedded log: member A stalls in the
//! middle of a batch (holding its open transaction on PostgreSQL and MariaDB) past the
//! session timeout; member B takes the partitions over, claims them and commits; then A
//! resumes. A's commit must affect no row (it is fenced), nothing hangs, and every
//! record lands exactly once.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use common::job::{self, Out};
use common::{wait_until, TestDb};
use weir_core::{Consumer, Record, Subscription, TopicPartition};
use weir_log::NewRecord;
use weir_sql::{
    async_trait, ExactlyOnceRunner, Item, OffsetStore, Reject, TableSink, TransactionalSink,
};

struct Gate {
    armed: AtomicBool,
    paused: AtomicBool,
    release: tokio::sync::Semaphore,
    released: AtomicBool,
}

impl Gate {
    fn armed() -> Arc<Self> {
        Arc::new(Gate {
            armed: AtomicBool::new(true),
            paused: AtomicBool::new(false),
            release: tokio::sync::Semaphore::new(0),
            released: AtomicBool::new(false),
        })
    }
    fn should_stop(&self) -> bool {
        self.armed.swap(false, Ordering::SeqCst)
    }
}

/// Stalls in its first write (inside the open transaction) until released.
struct GatedSink<DB: TestDb> {
    inner: TableSink<DB, Out>,
    gate: Arc<Gate>,
}

#[async_trait]
impl<DB: TestDb> TransactionalSink<DB, Out> for GatedSink<DB> {
    async fn write(
        &self,
        tx: &mut sqlx::Transaction<'static, DB>,
        items: &[Item<Out>],
    ) -> weir_sql::Result<()> {
        self.inner.write(tx, items).await?;
        if self.gate.should_stop() {
            self.gate.paused.store(true, Ordering::SeqCst);
            let _ = self.gate.release.acquire().await.map(|p| p.forget());
        }
        Ok(())
    }
}

fn produce_good(log: &weir_log::Log, n: u64) -> anyhow::Result<()> {
    for p in 0..job::PARTITIONS {
        let recs: Vec<NewRecord> = (0..n)
            .filter(|i| i % job::PARTITIONS as u64 == p as u64)
            .map(|i| NewRecord::new(format!("k{i}"), format!("1:v{i}")))
            .collect();
        log.append(&TopicPartition::new(job::TOPIC, p), &recs)?;
    }
    Ok(())
}

async fn zombie<DB: TestDb>(pool: sqlx::Pool<DB>, gate_in_transaction: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = job::open_log(dir.path())?;
    job::create_out_table(&pool).await?;
    produce_good(&log, 600)?;
    let name = "zombie";
    let gate = Gate::armed();

    // member A: stalls in its first batch
    let mut consumer_a = job::consumer_with_poll_interval(&log, name, Duration::from_millis(2000))?;
    let wake_a = consumer_a.wakeup_handle();
    let sink_a = GatedSink {
        inner: job::table_sink::<DB>()?,
        gate: gate.clone(),
    };
    let decode_gate = gate.clone();
    let decode_a = move |r: &Record| -> Result<Vec<Out>, Reject> {
        if !gate_in_transaction && decode_gate.should_stop() {
            // stall outside any transaction (SQLite allows one writer only)
            decode_gate.paused.store(true, Ordering::SeqCst);
            while !decode_gate.released.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        job::decode(r)
    };
    let mut runner_a = ExactlyOnceRunner::new(pool.clone(), name, sink_a, decode_a)?
        .with_owner("A")
        .with_batch_records(100)
        .with_linger(Duration::from_millis(20));
    runner_a.migrate().await?;
    let task_a = tokio::spawn(async move {
        let r = runner_a
            .run(&mut consumer_a, Subscription::topics([job::TOPIC]))
            .await;
        let _ = consumer_a.close().await;
        r
    });
    wait_until(Duration::from_secs(30), "A to stall mid-batch", || {
        let g = gate.clone();
        async move { Ok(g.paused.load(Ordering::SeqCst)) }
    })
    .await?;

    // member B joins; A is evicted after the session timeout; B processes everything
    let mut consumer_b = job::consumer_with_poll_interval(&log, name, Duration::from_millis(2000))?;
    let wake_b = consumer_b.wakeup_handle();
    let mut runner_b =
        ExactlyOnceRunner::new(pool.clone(), name, job::table_sink::<DB>()?, job::decode)?
            .with_owner("B")
            .with_batch_records(100)
            .with_linger(Duration::from_millis(20));
    let task_b = tokio::spawn(async move {
        let r = runner_b
            .run(&mut consumer_b, Subscription::topics([job::TOPIC]))
            .await;
        let _ = consumer_b.close().await;
        r
    });
    let store = OffsetStore::<DB>::new(name)?;
    let ends = job::ends(&log)?;
    wait_until(
        Duration::from_secs(60),
        "B to commit every partition to the end",
        || {
            let (store, ends, pool) = (store.clone(), ends.clone(), pool.clone());
            async move {
                let got = store.read_all(&pool).await?;
                Ok(ends.iter().all(|(tp, end)| {
                    got.get(tp).is_some_and(|r| {
                        r.next_offset == Some(*end) && r.owner.as_deref() == Some("B")
                    })
                }))
            }
        },
    )
    .await?;

    // the zombie resumes: its commit must be refused
    gate.released.store(true, Ordering::SeqCst);
    gate.release.add_permits(1);
    tokio::time::sleep(Duration::from_millis(1)).await;
    wait_until(
        Duration::from_secs(30),
        "everything committed after A resumed",
        || {
            let (store, ends, pool) = (store.clone(), ends.clone(), pool.clone());
            async move {
                let got = store.read_all(&pool).await?;
                Ok(ends
                    .iter()
                    .all(|(tp, end)| got.get(tp).and_then(|r| r.next_offset) == Some(*end)))
            }
        },
    )
    .await?;
    // give A the chance to finish its doomed commit, observed through its stats below
    wake_a.wakeup();
    wake_b.wakeup();
    let stats_a = tokio::time::timeout(Duration::from_secs(30), task_a)
        .await
        .map_err(|_| anyhow!("zombie A hung after resuming"))???;
    let stats_b = tokio::time::timeout(Duration::from_secs(30), task_b)
        .await
        .map_err(|_| anyhow!("B hung"))???;
    assert!(
        stats_a.fenced >= 1,
        "the zombie's commit was fenced: {stats_a:?}"
    );
    assert!(stats_b.commits >= 1, "{stats_b:?}");
    assert_eq!(
        stats_a.seek_mismatches + stats_b.seek_mismatches,
        0,
        "first record after each claim is the one sought to"
    );
    let dups = DB::scalar(
        &pool,
        "SELECT COUNT(*) FROM (SELECT src_partition, src_offset, ordinal FROM out_rows \
         GROUP BY src_partition, src_offset, ordinal HAVING COUNT(*) > 1) d"
            .into(),
    )
    .await?;
    assert_eq!(dups, 0, "duplicate rows");
    let want: i64 = (0..600_u64).map(|i| i64::from(job::outputs(i))).sum();
    assert_eq!(
        DB::scalar(&pool, "SELECT COUNT(*) FROM out_rows".into()).await?,
        want,
        "rows"
    );
    assert_eq!(
        DB::scalar(&pool, "SELECT COUNT(*) FROM weir_dead_letters".into()).await?,
        0
    );
    println!(
        "paused zombie: 1 pause, {} fenced, 0 zombie rows (A {:?}, B {:?})",
        stats_a.fenced, stats_a, stats_b
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn postgres_paused_zombie_is_fenced() -> anyhow::Result<()> {
    let (pool, _schema) = common::pg("zombie").await?;
    zombie(pool, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn mysql_paused_zombie_is_fenced() -> anyhow::Result<()> {
    let (pool, _db) = common::mysql("zombie").await?;
    zombie(pool, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn sqlite_paused_zombie_is_fenced() -> anyhow::Result<()> {
    let (pool, _dir) = common::sqlite("zombie").await?;
    zombie(pool, false).await
}
