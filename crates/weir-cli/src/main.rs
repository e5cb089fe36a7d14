//! `weir`: the command-line tool of the weir stream-processing framework.
//!
//! - `weir log …`: the embedded log without writing Rust (create, topics, describe,
//!   produce, consume, dump, verify and repair).
//! - `weir offsets show|reset`: a job's stored offsets; a reset bumps each
//!   partition's epoch in the same transaction, so a running job is fenced.
//! - `weir lag`: a job's lag per partition from its database, `--watch` to repeat.
//! - `weir dead-letters list|show|replay`: poison records, and their replay into a
//!   topic, at most once each.
//! - `weir produce`: JSON lines (or generated sample orders) into a topic.
//!
//! Exit codes: 0 success, 1 an error (the message says what and where), 2 bad usage,
//! 3 `log verify` found damage it did not repair.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod dead_letters_cmd;
mod encode;
#[cfg(feature = "kafka")]
mod kafka;
mod log_cmd;
mod offsets_cmd;
mod produce;
mod util;

use util::Output;

const EXAMPLES: &str = "\
Examples:
  weir log describe /var/lib/weir
  weir log verify /var/lib/weir --repair
  weir offsets show --db postgres://app@db/prod --job orders-to-db
  weir offsets reset --db sqlite:weir.db --job orders-to-db --topic orders --to-earliest --log /var/lib/weir --execute
  weir lag --db sqlite:weir.db --job orders-to-db --log /var/lib/weir --watch 5
  weir dead-letters list --db sqlite:weir.db --job orders-to-db
  weir produce --log /var/lib/weir --topic orders --generate 1000

Logging: RUST_LOG=debug (default: warn), to stderr.";

/// weir's command-line tool: the embedded log, offsets, dead letters.
#[derive(Debug, Parser)]
#[command(name = "weir", version, after_help = EXAMPLES)]
struct Cli {
    /// Output format of listings: `text` (aligned columns) or `json` (for scripts).
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The embedded log: create, topics, describe, produce, consume, dump, verify.
    #[command(subcommand)]
    Log(log_cmd::LogCommand),
    /// A job's stored offsets: show, reset.
    #[command(subcommand)]
    Offsets(offsets_cmd::OffsetsCommand),
    /// A job's lag per partition (log end - stored next_offset), once or with --watch.
    Lag(offsets_cmd::LagArgs),
    /// A job's dead letters: list, show, replay.
    #[command(subcommand)]
    DeadLetters(dead_letters_cmd::DeadLettersCommand),
    /// Append JSON lines (stdin or a file) or generated sample orders to a topic.
    Produce(produce::ProduceArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let output = cli.output;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Log(c) => log_cmd::run(c, output).await,
            Command::Offsets(c) => offsets_cmd::run(c, output).await,
            Command::Lag(a) => offsets_cmd::lag(a, output).await,
            Command::DeadLetters(c) => dead_letters_cmd::run(c, output).await,
            Command::Produce(a) => produce::run(a, output).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
