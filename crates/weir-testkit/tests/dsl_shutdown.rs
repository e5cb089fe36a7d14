//! SIGTERM under load through the pipeline DSL (`weir-crash-job --dsl`, every batch
//! write slowed down so that batches are in flight at the signal): the job drains and
//! exits 0 within the shutdown deadline (30 s); a second SIGTERM aborts at once, which
//! is safe; either way a restart finishes with 0 duplicates and 0 lost.

use std::time::Duration;

use anyhow::Result;
use weir_testkit::crash::{sigterm, CrashConfig, SigtermConfig, Source};

fn config(name: &str, dir: &tempfile::TempDir, delay_ms: u64) -> CrashConfig {
    CrashConfig {
        job_bin: env!("CARGO_BIN_EXE_weir-crash-job").into(),
        source: Source::Log(dir.path().join("log")),
        db_url: format!("sqlite://{}", dir.path().join("db.sqlite").display()),
        schema: None,
        job: format!("sigterm-{name}"),
        kills: 0,
        partitions: 3,
        chunk: 3000,
        failpoints: String::new(),
        max_kill_delay: Duration::ZERO,
        batch: 40,
        stderr: dir.path().join("job.stderr"),
        args: vec![
            "--dsl".to_owned(),
            "--sink-delay-ms".to_owned(),
            delay_ms.to_string(),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_exits_within_the_deadline() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = sigterm(&SigtermConfig {
        base: config("drain", &dir, 40),
        second_after: None,
    })
    .await?;
    println!(
        "SIGTERM under load: exit {:?} after {:?}, {} committed at exit, {} records in the end: {} dup / {} lost",
        out.exit_code,
        out.exit_after,
        out.committed_at_exit,
        out.records,
        out.report.counters.duplicates,
        out.report.counters.lost
    );
    assert!(out.report.is_valid(), "{}", out.report.to_json());
    assert_eq!(out.exit_code, Some(0), "a clean stop exits 0");
    assert!(out.stopped_cleanly, "the job says it stopped cleanly");
    assert!(
        out.exit_after < Duration::from_secs(30),
        "exit within the shutdown deadline: {:?}",
        out.exit_after
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_aborts_at_once_and_loses_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // a batch write takes 1.5 s and 4 batches are in flight (160 records of 40): the
    // drain would take 6 s at the very least, a row refused by the table (bisected)
    // much longer
    let out = sigterm(&SigtermConfig {
        base: config("abort", &dir, 1_500),
        second_after: Some(Duration::from_millis(500)),
    })
    .await;
    let out = out?;
    println!(
        "second SIGTERM: exit {:?} after {:?}: {} dup / {} lost",
        out.exit_code, out.exit_after, out.report.counters.duplicates, out.report.counters.lost
    );
    assert!(out.report.is_valid(), "{}", out.report.to_json());
    assert_ne!(out.exit_code, Some(0), "an abort is not a clean stop");
    assert!(!out.stopped_cleanly);
    assert!(
        out.exit_after < Duration::from_secs(4),
        "the abort did not wait for the drain: {:?}",
        out.exit_after
    );
    Ok(())
}
