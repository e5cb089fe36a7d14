//! Where a job reads from: a URL, a `ConsumerConfig` or a properties file, and the one
//! entry point that opens the backend its `bootstrap.servers` names.

use std::path::PathBuf;

use weir_core::{AutoOffsetReset, Consumer, ConsumerConfig, Error, Result};

/// Open the consumer that `bootstrap.servers` names, as sqlx picks a driver from a
/// URL's scheme:
///
/// | `bootstrap.servers` | backend | feature |
/// |---|---|---|
/// | `log:///path/to/dir` | the embedded log in that directory | `log` (default) |
/// | `kafka://host:port[,host:port]` or `host:port[,…]` | Kafka through librdkafka | `kafka` |
///
/// Anything else is an [`Error::Config`] naming `bootstrap.servers`.
///
/// ```
/// use weir_core::ConsumerConfig;
/// let dir = tempfile::tempdir()?;
/// let url = format!("log://{}", dir.path().display());
/// let consumer = weir_pipeline::connect(
///     ConsumerConfig::new().with_bootstrap_servers(url).with_group_id("g"),
/// )?;
/// # drop(consumer);
/// let err = weir_pipeline::connect(ConsumerConfig::new().with_bootstrap_servers("pulsar://x:6650"))
///     .err().unwrap();
/// assert!(err.to_string().contains("bootstrap.servers"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn connect(config: ConsumerConfig) -> Result<Box<dyn Consumer>> {
    match backend_of(config.bootstrap_servers())? {
        Backend::Log => connect_log(config),
        Backend::Kafka => connect_kafka(config),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Log,
    Kafka,
}

pub(crate) fn backend_of(servers: &str) -> Result<Backend> {
    let s = servers.trim();
    if s.is_empty() {
        return Err(Error::config(
            "bootstrap.servers",
            "is empty: give `log:///path/to/dir` (embedded log) or `kafka://host:port`",
        ));
    }
    if s.starts_with("log://") {
        return Ok(Backend::Log);
    }
    if s.starts_with("kafka://") {
        return Ok(Backend::Kafka);
    }
    if let Some((scheme, _)) = s.split_once("://") {
        return Err(Error::config(
            "bootstrap.servers",
            format!("unknown scheme `{scheme}://` in `{}`: weir reads `log:///path/to/dir` (embedded log) or `kafka://host:port`", crate::db::redact(s)),
        ));
    }
    // plain host:port entries are Kafka, as in Kafka's own configuration
    let plain = s.split(',').all(|e| {
        e.trim()
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    });
    if plain {
        Ok(Backend::Kafka)
    } else {
        Err(Error::config(
            "bootstrap.servers",
            format!("`{}` is neither `log:///path/to/dir` nor `kafka://host:port` nor `host:port` entries", crate::db::redact(s)),
        ))
    }
}

#[cfg(feature = "log")]
fn connect_log(config: ConsumerConfig) -> Result<Box<dyn Consumer>> {
    Ok(Box::new(weir_log::connect(config)?))
}

#[cfg(not(feature = "log"))]
fn connect_log(_config: ConsumerConfig) -> Result<Box<dyn Consumer>> {
    Err(Error::config(
        "bootstrap.servers",
        "`log://` needs weir's feature `log` (on by default), which this build leaves out",
    ))
}

#[cfg(feature = "kafka")]
fn connect_kafka(config: ConsumerConfig) -> Result<Box<dyn Consumer>> {
    Ok(Box::new(weir_kafka::KafkaConsumer::new(config)?))
}

#[cfg(not(feature = "kafka"))]
fn connect_kafka(_config: ConsumerConfig) -> Result<Box<dyn Consumer>> {
    Err(Error::config(
        "bootstrap.servers",
        "a Kafka address needs weir's feature `kafka` (off by default: it builds librdkafka); enable it in Cargo.toml",
    ))
}

/// Where a job's records come from, before the job fills in what it owns (`group.id`
/// defaults to the job name; auto-commit is off because the database holds the
/// offsets).
///
/// Made from a URL (`"log:///var/lib/weir"`, `"kafka://localhost:9092"`), a
/// [`ConsumerConfig`], or [`properties`] (a Kafka properties file).
///
/// ```
/// use weir_pipeline::Source;
/// let a: Source = "kafka://localhost:9092".into();
/// let b: Source = weir_core::ConsumerConfig::new().with_bootstrap_servers("log:///tmp/x").into();
/// let c = weir_pipeline::properties("consumer.properties");
/// # drop((a, b, c));
/// ```
#[derive(Clone)]
pub struct Source(pub(crate) SourceKind);

/// A URL's password is shown as `***`; a `ConsumerConfig` redacts its own secrets.
impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            SourceKind::Url(u) => f.debug_tuple("Url").field(&crate::db::redact(u)).finish(),
            SourceKind::Config(c) => f.debug_tuple("Config").field(c).finish(),
            SourceKind::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum SourceKind {
    Url(String),
    Config(Box<ConsumerConfig>),
    File(PathBuf),
}

impl From<&str> for Source {
    fn from(url: &str) -> Self {
        Source(SourceKind::Url(url.to_owned()))
    }
}

impl From<String> for Source {
    fn from(url: String) -> Self {
        Source(SourceKind::Url(url))
    }
}

impl From<ConsumerConfig> for Source {
    fn from(c: ConsumerConfig) -> Self {
        Source(SourceKind::Config(Box::new(c)))
    }
}

/// A source read from a Kafka-style properties file (`key=value` lines, `#`
/// comments), e.g. one a Kafka user already has. Errors name the file and the key.
///
/// ```
/// let s = weir_pipeline::properties("/etc/weir/orders.properties");
/// # drop(s);
/// ```
pub fn properties(path: impl Into<PathBuf>) -> Source {
    Source(SourceKind::File(path.into()))
}

impl Source {
    /// The consumer configuration for job `job`, with the job's own settings
    /// (`overrides`, from `Job::config`) applied last, and the `auto.offset.reset`
    /// the source asked for, if it did.
    ///
    /// The consumer itself always gets `auto.offset.reset=none`: the runtime resolves
    /// where an unclaimed partition starts (from the returned policy) and seeks there
    /// on every claim, so a reset inside the consumer could only ever move a
    /// *claimed* partition away from its stored offset (beyond the log end after a
    /// broker failover, say) behind weir's back: a silent replay or skip. With
    /// `none` that case comes back as an error the runtime handles.
    pub(crate) fn resolve(
        &self,
        job: &str,
        overrides: &[(String, String)],
    ) -> std::result::Result<(ConsumerConfig, Option<AutoOffsetReset>), (String, String)> {
        let (mut config, explicit_auto_commit, mut reset) = match &self.0 {
            SourceKind::Url(url) => (
                ConsumerConfig::new().with_bootstrap_servers(url.clone()),
                None,
                None,
            ),
            SourceKind::Config(c) => {
                // A ConsumerConfig cannot tell a default from a choice, and Kafka's
                // default is on: refuse it rather than overriding it in silence.
                if c.enable_auto_commit() {
                    return Err((
                        "source".to_owned(),
                        "the ConsumerConfig has enable.auto.commit on (Kafka's default): set `.with_enable_auto_commit(false)`; the database holds this job's offsets, in the same transaction as its results".to_owned(),
                    ));
                }
                ((**c).clone(), None, Some(c.auto_offset_reset()))
            }
            SourceKind::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    (
                        "source".to_owned(),
                        format!("cannot read properties file {}: {e}", path.display()),
                    )
                })?;
                let mut props = Vec::new();
                let mut auto = None;
                let mut file_reset = false;
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                        continue;
                    }
                    let Some((k, v)) = line.split_once('=').or_else(|| line.split_once(':')) else {
                        return Err((
                            "source".to_owned(),
                            format!(
                                "{}:{}: expected `key=value`, got a line without `=`",
                                path.display(),
                                n + 1
                            ),
                        ));
                    };
                    let (k, v) = (k.trim().to_owned(), v.trim().to_owned());
                    if k == "enable.auto.commit" {
                        auto = Some(v.clone());
                    }
                    file_reset |= k == "auto.offset.reset";
                    props.push((k, v));
                }
                let c = ConsumerConfig::from_properties(props)
                    .map_err(|e| ("source".to_owned(), format!("{}: {e}", path.display())))?;
                let reset = file_reset.then(|| c.auto_offset_reset());
                (c, auto, reset)
            }
        };
        let mut auto = explicit_auto_commit;
        for (k, v) in overrides {
            if k == "enable.auto.commit" {
                auto = Some(v.clone());
            }
            config
                .set(k, v)
                .map_err(|e| (format!("config `{k}`"), e.to_string()))?;
            if k == "auto.offset.reset" {
                reset = Some(config.auto_offset_reset());
            }
        }
        if auto.as_deref().is_some_and(|v| v.trim() != "false") {
            return Err((
                "config `enable.auto.commit`".to_owned(),
                "must stay off: the database holds this job's offsets, in the same transaction as its results; an auto-commit would let the group's offsets drift from them".to_owned(),
            ));
        }
        config = config
            .with_enable_auto_commit(false)
            .with_auto_offset_reset(AutoOffsetReset::None);
        if config.group_id().is_none_or(str::is_empty) {
            config = config.with_group_id(job);
        }
        config
            .validate()
            .map_err(|e| ("source".to_owned(), e.to_string()))?;
        let backend = backend_of(config.bootstrap_servers())
            .map_err(|e| ("source".to_owned(), e.to_string()))?;
        // a backend left out of this build is a build error, not one found after the
        // database was opened
        let missing = match backend {
            Backend::Log if !cfg!(feature = "log") => Some("`log://` needs weir's feature `log` (on by default), which this build leaves out"),
            Backend::Kafka if !cfg!(feature = "kafka") => Some("Kafka needs weir's feature `kafka` (`weir = { features = [\"kafka\"] }`), which this build leaves out"),
            _ => None,
        };
        if let Some(why) = missing {
            return Err(("source".to_owned(), why.to_owned()));
        }
        Ok((config, reset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_pick_backends() {
        assert_eq!(backend_of("log:///var/lib/weir").unwrap(), Backend::Log);
        assert_eq!(backend_of("kafka://a:9092").unwrap(), Backend::Kafka);
        assert_eq!(backend_of("a:9092,b:9093").unwrap(), Backend::Kafka);
        for bad in ["", "pulsar://x:1", "just-a-host", "a:notaport"] {
            let e = backend_of(bad).unwrap_err().to_string();
            assert!(e.contains("bootstrap.servers"), "{bad}: {e}");
        }
    }

    #[test]
    fn group_defaults_to_the_job_and_auto_commit_is_off() {
        let (c, reset) = Source::from("log:///tmp/x")
            .resolve("orders-job", &[])
            .unwrap();
        assert_eq!(c.group_id(), Some("orders-job"));
        assert!(!c.enable_auto_commit());
        assert_eq!(reset, None);
        let (c, _) = Source::from("log:///tmp/x")
            .resolve("j", &[("group.id".into(), "other".into())])
            .unwrap();
        assert_eq!(c.group_id(), Some("other"));
    }

    #[test]
    fn the_consumer_never_resets_and_the_job_keeps_the_policy() {
        let (c, reset) = Source::from("log:///tmp/x")
            .resolve("j", &[("auto.offset.reset".into(), "latest".into())])
            .unwrap();
        assert_eq!(c.auto_offset_reset(), AutoOffsetReset::None);
        assert_eq!(reset, Some(AutoOffsetReset::Latest));
    }

    #[test]
    fn auto_commit_on_is_an_error_naming_the_key() {
        let (stage, why) = Source::from("log:///tmp/x")
            .resolve("j", &[("enable.auto.commit".into(), "true".into())])
            .unwrap_err();
        assert_eq!(stage, "config `enable.auto.commit`");
        assert!(why.contains("database holds"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.properties");
        std::fs::write(
            &path,
            "# a Kafka user's file\nbootstrap.servers=log:///tmp/x\nenable.auto.commit=true\n",
        )
        .unwrap();
        let (stage, _) = properties(&path).resolve("j", &[]).unwrap_err();
        assert_eq!(stage, "config `enable.auto.commit`");
    }

    #[test]
    fn properties_file_errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.properties");
        std::fs::write(
            &path,
            "bootstrap.servers=log:///tmp/x\nthis line is wrong\n",
        )
        .unwrap();
        let (_, why) = properties(&path).resolve("j", &[]).unwrap_err();
        assert!(why.contains("bad.properties:2"), "{why}");
        let (_, why) = properties(dir.path().join("missing.properties"))
            .resolve("j", &[])
            .unwrap_err();
        assert!(why.contains("missing.properties"), "{why}");
    }
}
