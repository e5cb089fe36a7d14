//! What every command shares: output formats, progress bars, opening a log or a
//! database with errors that say what and where.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use weir_log::{Log, LogOptions};
use weir_sql::admin::{redact_url, Admin};

/// How listings are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Text,
    /// One JSON document (or JSON lines for record streams) for scripts.
    Json,
}

/// A progress bar on stderr when stderr is a terminal; hidden otherwise.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {human_pos}/{human_len} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// Opens an existing log, refusing a directory that is not one (without creating a
/// lock file in it).
pub fn open_log(dir: &Path) -> anyhow::Result<Log> {
    check_log_dir(dir)?;
    Log::open_existing(dir, LogOptions::default()).map_err(|e| {
        let hint = if matches!(e, weir_core::Error::Corrupt { .. }) {
            format!(
                "; `weir log verify {}` reports every damaged partition (it changes nothing)",
                dir.display()
            )
        } else {
            String::new()
        };
        anyhow::anyhow!("cannot open the log in {}: {e}{hint}", dir.display())
    })
}

/// Fails unless `dir` is a log directory, saying what it is instead.
pub fn check_log_dir(dir: &Path) -> anyhow::Result<()> {
    if !weir_log::is_log_dir(dir) {
        if !dir.exists() {
            bail!("log directory {} does not exist", dir.display());
        }
        bail!(
            "{} is not a weir log directory (it has neither a topics/ directory nor a LOCK file)",
            dir.display()
        );
    }
    Ok(())
}

/// Connects to a database, naming the URL (without its password) on failure.
pub async fn connect(url: &str, timeout: std::time::Duration) -> anyhow::Result<Admin> {
    Admin::connect_timeout(url, timeout)
        .await
        .with_context(|| format!("cannot connect to the database {}", redact_url(url)))
}

/// Prints rows as aligned columns under `header`.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let pad = widths[i].saturating_sub(c.chars().count());
                s.push_str(c);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Prints a JSON value on stdout.
pub fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Bytes as a JSON string when they are UTF-8, else `{"hex": "..."}`.
pub fn bytes_json(b: Option<&[u8]>) -> serde_json::Value {
    match b {
        None => serde_json::Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => serde_json::Value::String(s.to_owned()),
            Err(_) => serde_json::json!({ "hex": hex(b) }),
        },
    }
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses lower- or upper-case hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect()
}

/// Bytes for a text column: UTF-8 as is, else `hex:…`.
pub fn bytes_text(b: Option<&[u8]>) -> String {
    match b {
        None => "(null)".into(),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => s.to_owned(),
            Err(_) => format!("hex:{}", hex(b)),
        },
    }
}

/// Where a topic's partitions live: the embedded log or a Kafka cluster.
#[derive(Debug, Clone)]
pub enum Source {
    /// The embedded log's directory.
    Log(std::path::PathBuf),
    /// Kafka `bootstrap.servers` (`host:port[,host:port…]`).
    Kafka(String),
}

impl Source {
    /// From `--log DIR` or `--bootstrap log:///DIR | kafka://host:port | host:port`.
    pub fn parse(log: Option<&Path>, bootstrap: Option<&str>) -> anyhow::Result<Option<Source>> {
        match (log, bootstrap) {
            (Some(d), _) => Ok(Some(Source::Log(d.to_path_buf()))),
            (None, Some(url)) if url.starts_with("log://") => Ok(Some(Source::Log(
                weir_log::log_dir_from_url(url).with_context(|| format!("bad log URL {url}"))?,
            ))),
            (None, Some(url)) => {
                let servers = url.strip_prefix("kafka://").unwrap_or(url);
                if servers.is_empty() || servers.contains('/') {
                    bail!("--bootstrap {url}: expected log:///DIR, kafka://host:port or host:port");
                }
                Ok(Some(Source::Kafka(
                    servers.trim_end_matches('/').to_owned(),
                )))
            }
            (None, None) => Ok(None),
        }
    }

    /// For messages: the log's directory or `Kafka at host:port`.
    pub fn describe(&self) -> String {
        match self {
            Source::Log(d) => d.display().to_string(),
            Source::Kafka(s) => format!("Kafka at {s}"),
        }
    }

    /// `partition → (first offset, end)` of `topic`; `Ok(None)` if the topic does not
    /// exist. The embedded log is read without its lock (it may be open in a job).
    pub fn ranges(
        &self,
        topic: &str,
    ) -> anyhow::Result<Option<std::collections::BTreeMap<i32, (i64, i64)>>> {
        match self {
            Source::Log(dir) => {
                check_log_dir(dir)?;
                match weir_log::read_offsets_unlocked(dir, topic) {
                    Ok(r) => Ok(Some(r)),
                    Err(weir_core::Error::UnknownTopic { .. }) => Ok(None),
                    Err(e) => Err(anyhow::anyhow!(
                        "cannot read the offsets of topic `{topic}` in the log {}: {e}",
                        dir.display()
                    )),
                }
            }
            #[cfg(feature = "kafka")]
            Source::Kafka(servers) => crate::kafka::ranges(servers, topic),
            #[cfg(not(feature = "kafka"))]
            Source::Kafka(servers) => bail!("{}", no_kafka(servers)),
        }
    }
}

impl Source {
    /// `partition → offset` of the first record at or after `ms` (milliseconds since
    /// the Unix epoch) on every partition of `topic`, the end where every record is
    /// older. The embedded log is read without its lock.
    pub fn offsets_for_time(
        &self,
        topic: &str,
        ms: i64,
        only: Option<&std::collections::BTreeSet<i32>>,
    ) -> anyhow::Result<std::collections::BTreeMap<i32, i64>> {
        match self {
            Source::Log(dir) => {
                let mut found =
                    weir_log::offsets_for_time_unlocked(dir, topic, ms).map_err(|e| {
                        anyhow::anyhow!(
                            "cannot look up time {ms} ms in topic `{topic}` of the log {}: {e}",
                            dir.display()
                        )
                    })?;
                if let Some(only) = only {
                    found.retain(|p, _| only.contains(p));
                }
                Ok(found)
            }
            #[cfg(feature = "kafka")]
            Source::Kafka(servers) => crate::kafka::offsets_for_time(servers, topic, ms, only),
            #[cfg(not(feature = "kafka"))]
            Source::Kafka(servers) => bail!("{}", no_kafka(servers)),
        }
    }
}

/// The error of a build without Kafka.
#[cfg(not(feature = "kafka"))]
pub fn no_kafka(servers: &str) -> String {
    format!(
        "Kafka at {servers}: this weir was built without Kafka support (build weir-cli with `--features kafka`)"
    )
}
