//! A partition this job never stored an offset for starts where the runner's
//! `auto_offset_reset` says (default: the log start), decided by the database, never at
//! the consumer group's own committed offset: an auto-commit (or any other member of
//! the group) may have moved that past records this job never wrote.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::job::{self, verify};
use weir_core::{CommitOffsets, Consumer, NoopListener, Subscription};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_unstored_partitions_start_at_the_log_start_not_the_group_commit(
) -> anyhow::Result<()> {
    let (pool, _dir) = common::sqlite("reset").await?;
    let dir = tempfile::tempdir()?;
    let log = job::open_log(dir.path())?;
    job::create_out_table(&pool).await?;
    job::produce(&log, 0, 400)?;
    let name = "reset";

    // The group's committed offsets already point at the end of every partition (as an
    // auto-commit on revoke would leave them), while the database holds nothing.
    let ends = job::ends(&log)?;
    {
        let mut c = job::consumer(&log, name)?;
        c.subscribe(Subscription::topics([job::TOPIC]), Arc::new(NoopListener))
            .await?;
        let give_up = std::time::Instant::now() + Duration::from_secs(30);
        while c.assignment().len() < ends.len() {
            anyhow::ensure!(std::time::Instant::now() < give_up, "never assigned");
            c.poll(Duration::from_millis(50)).await?;
        }
        c.commit_sync(CommitOffsets::Explicit(ends.clone())).await?;
        let committed = c
            .committed(&ends.keys().cloned().collect::<Vec<_>>())
            .await?;
        for (tp, end) in &ends {
            assert_eq!(committed[tp], Some(*end), "group commit of {tp}");
        }
        c.close().await?;
    }

    let stats = job::run_until_done(&pool, &log, name, job::table_sink()?, 64).await?;
    assert_eq!(stats.records, 400, "every record processed once: {stats:?}");
    verify(&pool, 400).await
}
