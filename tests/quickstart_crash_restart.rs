//! Runs the README's first command (the quickstart) as a test: the job on the embedded
//! log + SQLite is killed with SIGKILL 8 times and restarted; the run fails unless the
//! record-by-record check finds 0 duplicates, 0 lost, 0 misrouted and 0 corrupt.
//!
//! A `harness = false` test: the binary is its own worker (`--worker`), like the example.

#[path = "../examples/quickstart.rs"]
#[allow(dead_code)]
mod quickstart;

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "--worker") {
        return quickstart::run(argv);
    }
    let dir = tempfile::tempdir()?;
    let job_dir = dir.path().join("quickstart");
    quickstart::run(
        [
            "--records",
            "30000",
            "--kills",
            "8",
            "--dir",
            job_dir.to_str().unwrap_or("target/weir-quickstart-test"),
        ]
        .map(String::from),
    )?;
    println!("test quickstart_crash_restart ... ok");
    println!("1 passed, 0 failed");
    Ok(())
}
