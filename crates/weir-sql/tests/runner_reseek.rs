//! A claim's seek that does not take effect (records fetched before it, librdkafka
//! #1359; a rewind that overrode it): the consumer delivers from beyond the claimed
//! offset. The runner must seek back to the claimed offset instead of processing the
//! later records, which would skip the ones in between without the compare-and-set
//! noticing (it expects the claimed offset, and gets it).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::job::{self, run_until_done, table_sink, verify};
use common::TestDb;
use weir_core::{
    async_trait, Batch, CommitCallback, CommitOffsets, Consumer, Offset, RebalanceListener,
    Subscription, TopicPartition, WakeupHandle,
};
use weir_sql::ExactlyOnceRunner;

/// A consumer whose first seek of each partition lands `skew` records further on.
struct StaleSeek {
    inner: weir_log::LogConsumer,
    skew: i64,
    seen: HashSet<TopicPartition>,
}

#[async_trait]
impl Consumer for StaleSeek {
    async fn subscribe(
        &mut self,
        s: Subscription,
        l: Arc<dyn RebalanceListener>,
    ) -> weir_core::Result<()> {
        self.inner.subscribe(s, l).await
    }
    async fn unsubscribe(&mut self) -> weir_core::Result<()> {
        self.inner.unsubscribe().await
    }
    async fn assign(&mut self, p: &[TopicPartition]) -> weir_core::Result<()> {
        self.inner.assign(p).await
    }
    async fn partitions_for(&self, topic: &str) -> weir_core::Result<Vec<TopicPartition>> {
        self.inner.partitions_for(topic).await
    }
    async fn poll(&mut self, timeout: Duration) -> weir_core::Result<Batch> {
        self.inner.poll(timeout).await
    }
    async fn commit_sync(&mut self, o: CommitOffsets) -> weir_core::Result<()> {
        self.inner.commit_sync(o).await
    }
    fn commit_async(&mut self, o: CommitOffsets, cb: Option<CommitCallback>) {
        self.inner.commit_async(o, cb)
    }
    async fn committed(
        &mut self,
        p: &[TopicPartition],
    ) -> weir_core::Result<BTreeMap<TopicPartition, Option<i64>>> {
        self.inner.committed(p).await
    }
    async fn position(&mut self, tp: &TopicPartition) -> weir_core::Result<i64> {
        self.inner.position(tp).await
    }
    fn seek(&mut self, tp: &TopicPartition, offset: Offset) -> weir_core::Result<()> {
        match offset {
            Offset::At(o) if self.seen.insert(tp.clone()) => {
                self.inner.seek(tp, Offset::At(o + self.skew))
            }
            other => self.inner.seek(tp, other),
        }
    }
    fn pause(&mut self, p: &[TopicPartition]) -> weir_core::Result<()> {
        self.inner.pause(p)
    }
    fn resume(&mut self, p: &[TopicPartition]) -> weir_core::Result<()> {
        self.inner.resume(p)
    }
    fn paused(&self) -> BTreeSet<TopicPartition> {
        self.inner.paused()
    }
    fn assignment(&self) -> BTreeSet<TopicPartition> {
        self.inner.assignment()
    }
    async fn watermarks(&self, tp: &TopicPartition) -> weir_core::Result<(i64, i64)> {
        self.inner.watermarks(tp).await
    }
    fn wakeup_handle(&self) -> WakeupHandle {
        self.inner.wakeup_handle()
    }
    async fn close(&mut self) -> weir_core::Result<()> {
        self.inner.close().await
    }
}

async fn stale_seek<DB: TestDb>(
    pool: sqlx::Pool<DB>,
    job_name: &str,
    skew: i64,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = job::open_log(dir.path())?;
    job::create_out_table(&pool).await?;
    job::produce(&log, 0, 600)?;
    run_until_done(&pool, &log, job_name, table_sink::<DB>()?, 100).await?;
    job::produce(&log, 600, 1200)?;

    // Standalone: the runner claims and seeks itself; each first seek lands 25 further.
    let mut consumer = StaleSeek {
        inner: job::consumer(&log, job_name)?,
        skew,
        seen: HashSet::new(),
    };
    let wake = consumer.wakeup_handle();
    let tps: Vec<TopicPartition> = (0..job::PARTITIONS)
        .map(|p| TopicPartition::new(job::TOPIC, p))
        .collect();
    let mut runner =
        ExactlyOnceRunner::new(pool.clone(), job_name, table_sink::<DB>()?, job::decode)?
            .with_batch_records(100)
            .with_linger(Duration::from_millis(50));
    let task = tokio::spawn(async move {
        let r = runner.run_assigned(&mut consumer, &tps).await;
        let _ = consumer.close().await;
        r
    });
    let stats = job::stop_when_stored(&pool, job_name, job::ends(&log)?, wake, task).await?;
    // Without the re-seek, a positive skew loses 25 records per partition here.
    verify(&pool, 1200).await?;
    println!("{job_name}: first seeks skewed by {skew} on 3 partitions, 1200 records, {stats:?}, 0 anomalies");
    assert_eq!(stats.seek_mismatches, 0, "{stats:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_stale_seek_after_claim_is_corrected() -> anyhow::Result<()> {
    let (pool, _dir) = common::sqlite("reseek").await?;
    stale_seek(pool, "reseek-sqlite", 25).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stale_seek_after_claim_is_corrected() -> anyhow::Result<()> {
    let (pool, _schema) = common::pg("reseek").await?;
    stale_seek(pool, "reseek-pg", 25).await
}

/// The first seek lands 25 records early (records from before the claim delivered):
/// written again, they would be duplicates; they are skipped by seeking again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_early_seek_after_claim_is_corrected() -> anyhow::Result<()> {
    let (pool, _dir) = common::sqlite("reseek_early").await?;
    stale_seek(pool, "reseek-early", -25).await
}
