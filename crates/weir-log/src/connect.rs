//! Opening a consumer from configuration alone: `bootstrap.servers = log:///dir`.

use std::path::PathBuf;

use weir_core::{ConsumerConfig, Error, Result};

use crate::{Log, LogConsumer, LogOptions};

/// The URL scheme of the embedded log in `bootstrap.servers`.
///
/// ```
/// let servers = format!("{}{}", weir_log::SCHEME, "/var/lib/weir");
/// assert_eq!(servers, "log:///var/lib/weir");
/// ```
pub const SCHEME: &str = "log://";

/// The log directory named by a `bootstrap.servers` value of the form
/// `log:///path/to/dir` (absolute) or `log://relative/dir`.
///
/// ```
/// use std::path::Path;
/// let dir = weir_log::log_dir_from_url("log:///var/lib/weir")?;
/// assert_eq!(dir, Path::new("/var/lib/weir"));
/// let err = weir_log::log_dir_from_url("localhost:9092").unwrap_err();
/// assert!(err.to_string().contains("bootstrap.servers"));
/// # Ok::<(), weir_core::Error>(())
/// ```
pub fn log_dir_from_url(url: &str) -> Result<PathBuf> {
    let url = url.trim();
    match url.strip_prefix(SCHEME) {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(Error::config(
            "bootstrap.servers",
            format!(
                "the embedded log needs `log:///path/to/dir`, got `{url}` \
                 (a Kafka address belongs to the kafka backend)"
            ),
        )),
    }
}

/// Opens the log named by `bootstrap.servers` (`log:///path/to/dir`, created if
/// missing, with default [`LogOptions`]) and returns a consumer of it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> weir_core::Result<()> {
/// # let dir = tempfile::tempdir().map_err(|e| weir_core::Error::io("tempdir", e))?;
/// use weir_core::{Consumer, ConsumerConfig};
/// let url = format!("log://{}", dir.path().display());
/// let config = ConsumerConfig::new().with_bootstrap_servers(url).with_group_id("g");
/// let consumer = weir_log::connect(config)?;
/// consumer.log().create_topic("t", 1)?;
/// assert_eq!(consumer.partitions_for("t").await?.len(), 1);
///
/// let bad = ConsumerConfig::new().with_bootstrap_servers("localhost:9092");
/// assert!(weir_log::connect(bad).unwrap_err().to_string().contains("bootstrap.servers"));
/// # Ok(()) }
/// ```
pub fn connect(config: ConsumerConfig) -> Result<LogConsumer> {
    crate::consumer::check_config(&config)?;
    let dir = log_dir_from_url(config.bootstrap_servers())?;
    let log = Log::open(&dir, LogOptions::default())?;
    LogConsumer::new(&log, config)
}
