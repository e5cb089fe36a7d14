//! Test helper for weir-log's crash-consistency and lock tests; not a user tool.
//!
//! ```text
//! weir-log-crash-writer append <dir> <segment_bytes>
//!     Opens the log (Durability::Always), creates topic `crash` (1 partition) and
//!     appends forever. The record at offset o has content derived from o (see
//!     `expected_record`). After each append returns it prints `<first> <count>`.
//! weir-log-crash-writer open <dir>
//!     Tries to open the existing log; prints `opened` or the error (exit 2).
//! weir-log-crash-writer hold <dir>
//!     Opens the log, prints `locked`, and holds it until stdin closes.
//! ```
#![allow(missing_docs)]

use std::io::{BufRead, Write};
use std::process::ExitCode;

use weir_core::{Header, TopicPartition};
use weir_log::{Durability, Log, LogOptions, NewRecord};

/// The record the crash test expects at `offset` (duplicated in
/// tests/log_crash_consistency.rs, which checks byte identity).
fn expected_record(offset: i64) -> NewRecord {
    let o = offset as u64;
    let len = (o.wrapping_mul(7919) % 700 + 1) as usize;
    let value: Vec<u8> = (0..len)
        .map(|j| (o.wrapping_mul(31).wrapping_add(j as u64 * 7)) as u8)
        .collect();
    let mut r = NewRecord::new(format!("key-{offset}"), value).with_timestamp(offset);
    if offset % 5 == 0 {
        r = r.with_header(Header::new("offset", offset.to_string()));
    }
    r
}

fn append(dir: &str, segment_bytes: u64) -> Result<(), String> {
    let options = LogOptions::default()
        .with_durability(Durability::Always)
        .with_segment_bytes(segment_bytes);
    let log = Log::open(dir, options).map_err(|e| e.to_string())?;
    log.create_topic("crash", 1).map_err(|e| e.to_string())?;
    let tp = TopicPartition::new("crash", 0);
    let stdout = std::io::stdout();
    loop {
        let (_, next) = log.offsets(&tp).map_err(|e| e.to_string())?;
        let count = 1 + (next % 4);
        let batch: Vec<NewRecord> = (next..next + count).map(expected_record).collect();
        let first = log.append(&tp, &batch).map_err(|e| e.to_string())?;
        if first != next {
            return Err(format!("append returned offset {first}, expected {next}"));
        }
        let mut out = stdout.lock();
        writeln!(out, "{first} {count}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("append") if args.len() == 4 => match args[3].parse() {
            Ok(segment_bytes) => append(&args[2], segment_bytes),
            Err(e) => Err(format!("bad segment_bytes {:?}: {e}", args[3])),
        },
        Some("open") if args.len() == 3 => {
            match Log::open_existing(&args[2], LogOptions::default()) {
                Ok(_) => {
                    println!("opened");
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Some("hold") if args.len() == 3 => match Log::open(&args[2], LogOptions::default()) {
            Ok(log) => {
                println!("locked");
                let _ = std::io::stdout().flush();
                let mut line = String::new();
                while std::io::stdin().lock().read_line(&mut line).unwrap_or(0) > 0 {
                    line.clear();
                }
                drop(log);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        },
        _ => Err(
            "usage: weir-log-crash-writer append <dir> <segment_bytes> | open <dir> | hold <dir>"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
