//! Consumer configuration with Kafka's property names and defaults.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use crate::{Error, Result};

/// Where to start when a partition has no valid committed offset (`auto.offset.reset`):
/// none was committed, or the committed one (or a seek) lies outside the log, e.g.
/// below the log start after retention deleted old records.
///
/// ```
/// use weir_core::AutoOffsetReset;
/// assert_eq!("earliest".parse::<AutoOffsetReset>(), Ok(AutoOffsetReset::Earliest));
/// assert_eq!("none".parse::<AutoOffsetReset>(), Ok(AutoOffsetReset::None));
/// assert_eq!(AutoOffsetReset::default().to_string(), "latest");
/// assert!("middle".parse::<AutoOffsetReset>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum AutoOffsetReset {
    /// Start at the log start offset.
    Earliest,
    /// Start at the log end: only new records (Kafka's default).
    #[default]
    Latest,
    /// Fail the poll with [`Error::NoOffset`].
    None,
}

impl FromStr for AutoOffsetReset {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "earliest" | "smallest" | "beginning" => Ok(Self::Earliest),
            "latest" | "largest" | "end" => Ok(Self::Latest),
            "none" | "error" => Ok(Self::None),
            other => Err(format!("expected earliest, latest or none, got `{other}`")),
        }
    }
}

impl fmt::Display for AutoOffsetReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Earliest => "earliest",
            Self::Latest => "latest",
            Self::None => "none",
        })
    }
}

/// `partition.assignment.strategy`: how a group spreads partitions over members.
/// Kafka's Java class names are accepted too.
///
/// ```
/// use weir_core::AssignmentStrategy;
/// let s: AssignmentStrategy = "org.apache.kafka.clients.consumer.CooperativeStickyAssignor".parse()?;
/// assert_eq!(s, AssignmentStrategy::CooperativeSticky);
/// assert_eq!(s.to_string(), "cooperative-sticky");
/// assert_eq!("roundrobin".parse::<AssignmentStrategy>()?, AssignmentStrategy::RoundRobin);
/// # Ok::<(), String>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum AssignmentStrategy {
    /// Per topic, contiguous ranges of partitions (Kafka's default).
    #[default]
    Range,
    /// All partitions dealt round-robin over the members.
    RoundRobin,
    /// Keeps partitions where they are and moves only what must move, without
    /// stopping the unmoved ones (incremental, cooperative rebalancing).
    CooperativeSticky,
}

impl FromStr for AssignmentStrategy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        let short = t.rsplit('.').next().unwrap_or(t).to_ascii_lowercase();
        match short.as_str() {
            "range" | "rangeassignor" => Ok(Self::Range),
            "roundrobin" | "roundrobinassignor" => Ok(Self::RoundRobin),
            "cooperative-sticky" | "cooperativestickyassignor" => Ok(Self::CooperativeSticky),
            _ => Err(format!(
                "expected range, roundrobin or cooperative-sticky, got `{t}`"
            )),
        }
    }
}

impl fmt::Display for AssignmentStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Range => "range",
            Self::RoundRobin => "roundrobin",
            Self::CooperativeSticky => "cooperative-sticky",
        })
    }
}

/// `isolation.level`: whether records of aborted transactions are visible.
///
/// ```
/// use weir_core::IsolationLevel;
/// assert_eq!("read_committed".parse::<IsolationLevel>(), Ok(IsolationLevel::ReadCommitted));
/// assert_eq!(IsolationLevel::default().to_string(), "read_uncommitted");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum IsolationLevel {
    /// Every record, transactional or not (Kafka's Java default).
    #[default]
    ReadUncommitted,
    /// Only records of committed transactions.
    ReadCommitted,
}

impl FromStr for IsolationLevel {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read_uncommitted" => Ok(Self::ReadUncommitted),
            "read_committed" => Ok(Self::ReadCommitted),
            other => Err(format!(
                "expected read_uncommitted or read_committed, got `{other}`"
            )),
        }
    }
}

impl fmt::Display for IsolationLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ReadUncommitted => "read_uncommitted",
            Self::ReadCommitted => "read_committed",
        })
    }
}

/// The properties weir itself understands, with their defaults (Kafka's).
///
/// ```
/// let (key, default) = weir_core::KNOWN_KEYS
///     .iter()
///     .find(|(k, _)| *k == "max.poll.records")
///     .copied()
///     .unwrap_or_default();
/// assert_eq!((key, default), ("max.poll.records", "500"));
/// ```
pub const KNOWN_KEYS: &[(&str, &str)] = &[
    ("bootstrap.servers", ""),
    ("group.id", ""),
    ("client.id", ""),
    ("fetch.min.bytes", "1"),
    ("fetch.max.wait.ms", "500"),
    ("max.partition.fetch.bytes", "1048576"),
    ("session.timeout.ms", "45000"),
    ("heartbeat.interval.ms", "3000"),
    ("auto.offset.reset", "latest"),
    ("enable.auto.commit", "true"),
    ("auto.commit.interval.ms", "5000"),
    ("partition.assignment.strategy", "range"),
    ("max.poll.records", "500"),
    ("max.poll.interval.ms", "300000"),
    ("receive.buffer.bytes", "65536"),
    ("send.buffer.bytes", "131072"),
    ("isolation.level", "read_uncommitted"),
];

fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.contains("token")
        || k.contains("jaas")
        || k.ends_with(".pem")
        || k.ends_with("key")
        || k.contains("credentials")
        || k.contains("oauthbearer.config")
        || k.ends_with("user.info")
}

/// `scheme://user:password@host/...` → `scheme://***@host/...`, for every
/// comma-separated item of a value (URLs of any property can carry credentials).
fn redact_userinfo(value: &str) -> String {
    value
        .split(',')
        .map(|item| {
            let Some(scheme_end) = item.find("://").map(|i| i + 3) else {
                return item.to_owned();
            };
            let rest = &item[scheme_end..];
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{}***{}", &item[..scheme_end], &rest[at..]),
                None => item.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Consumer configuration: Kafka's property names, Kafka's defaults.
///
/// Build it from a properties map or file (a Kafka user's `consumer.properties` works
/// unchanged) or with typed `with_*` setters. Every known value is checked when set;
/// the error names the key. `*.ms` values range up to 2147483647 (Kafka's `int`); the
/// typed setters clamp longer durations to that. Keys weir does not know are kept as they are: the Kafka
/// backend passes them to librdkafka, the embedded log rejects them by name.
/// `Debug` prints secrets (`*password*`, `*secret*`, `*token*`, `sasl.jaas.config`,
/// `*user.info`, ...) as `***`, and the credentials of `scheme://user:pass@host` URLs
/// in any value as `***`.
///
/// | key | default |
/// |---|---|
/// | fetch.min.bytes | 1 |
/// | fetch.max.wait.ms | 500 |
/// | max.partition.fetch.bytes | 1048576 |
/// | session.timeout.ms | 45000 |
/// | heartbeat.interval.ms | 3000 |
/// | auto.offset.reset | latest |
/// | enable.auto.commit | true |
/// | auto.commit.interval.ms | 5000 |
/// | partition.assignment.strategy | range |
/// | client.id | "" |
/// | max.poll.records | 500 |
/// | max.poll.interval.ms | 300000 |
/// | receive.buffer.bytes / send.buffer.bytes | 65536 / 131072 |
/// | isolation.level | read_uncommitted |
///
/// ```
/// use weir_core::ConsumerConfig;
///
/// let config = ConsumerConfig::from_properties([
///     ("group.id", "billing"),
///     ("max.poll.records", "100"),
///     ("sasl.password", "hunter2"),
/// ])?;
/// assert_eq!(config.max_poll_records(), 100);
/// assert!(!format!("{config:?}").contains("hunter2"));
///
/// let err = ConsumerConfig::from_properties([("session.timeout.ms", "soon")]).unwrap_err();
/// assert!(err.to_string().contains("session.timeout.ms"));
/// # Ok::<(), weir_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    bootstrap_servers: String,
    group_id: Option<String>,
    client_id: String,
    fetch_min_bytes: u32,
    fetch_max_wait_ms: u64,
    max_partition_fetch_bytes: u32,
    session_timeout_ms: u64,
    heartbeat_interval_ms: u64,
    auto_offset_reset: AutoOffsetReset,
    enable_auto_commit: bool,
    auto_commit_interval_ms: u64,
    assignment_strategies: Vec<AssignmentStrategy>,
    max_poll_records: usize,
    max_poll_interval_ms: u64,
    receive_buffer_bytes: i32,
    send_buffer_bytes: i32,
    isolation_level: IsolationLevel,
    other: BTreeMap<String, String>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: String::new(),
            group_id: None,
            client_id: String::new(),
            fetch_min_bytes: 1,
            fetch_max_wait_ms: 500,
            max_partition_fetch_bytes: 1024 * 1024,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
            auto_offset_reset: AutoOffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
            assignment_strategies: vec![AssignmentStrategy::Range],
            max_poll_records: 500,
            max_poll_interval_ms: 300_000,
            receive_buffer_bytes: 64 * 1024,
            send_buffer_bytes: 128 * 1024,
            isolation_level: IsolationLevel::ReadUncommitted,
            other: BTreeMap::new(),
        }
    }
}

fn parse<T: FromStr>(key: &str, value: &str, what: &str) -> Result<T> {
    value
        .trim()
        .parse::<T>()
        .map_err(|_| Error::config(key, format!("expected {what}, got `{}`", value.trim())))
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(Error::config(
            key,
            format!("expected true or false, got `{other}`"),
        )),
    }
}

/// The largest accepted `*.ms` value: Kafka's properties are Java `int`s (about 24.8
/// days). Larger values would also overflow deadlines computed from them.
const MAX_MS: u64 = i32::MAX as u64;

/// A `*.ms` property: milliseconds from 0 to [`MAX_MS`].
fn millis(key: &str, value: &str) -> Result<u64> {
    let v: u64 = parse(key, value, "milliseconds")?;
    if v > MAX_MS {
        return Err(Error::config(
            key,
            format!("must be at most {MAX_MS} ms, got {v}"),
        ));
    }
    Ok(v)
}

/// A typed setter's duration in milliseconds, clamped to [`MAX_MS`].
fn clamp_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(MAX_MS).min(MAX_MS)
}

fn at_least<T: PartialOrd + fmt::Display + Copy>(key: &str, v: T, min: T) -> Result<T> {
    if v < min {
        Err(Error::config(
            key,
            format!("must be at least {min}, got {v}"),
        ))
    } else {
        Ok(v)
    }
}

/// One `(line, key, value)` of a Java properties text, or `(line, what is wrong)`.
type PropertyLine = std::result::Result<(usize, String, String), (usize, String)>;

/// Splits a Java properties text into logical lines and those into keys and values
/// (the format of `java.util.Properties::load`, minus its lenience for lines with a
/// key and no value, which are reported: they are usually a mistake).
fn parse_properties(text: &str) -> Vec<PropertyLine> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, first)) = lines.next() {
        let start = first.trim_start();
        if start.is_empty() || start.starts_with('#') || start.starts_with('!') {
            continue;
        }
        let mut logical = start.to_owned();
        while ends_with_odd_backslashes(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        out.push(
            split_property(&logical)
                .map_or_else(|reason| Err((n + 1, reason)), |(k, v)| Ok((n + 1, k, v))),
        );
    }
    out
}

fn ends_with_odd_backslashes(s: &str) -> bool {
    s.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1
}

/// Splits one logical line at the first unescaped `=`, `:` or blank, and decodes
/// escapes in both halves.
fn split_property(line: &str) -> std::result::Result<(String, String), String> {
    let mut chars = line.char_indices();
    let mut key_end = line.len();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            chars.next();
        } else if c == '=' || c == ':' || c.is_whitespace() {
            key_end = i;
            break;
        }
    }
    let raw_key = &line[..key_end];
    let mut rest = line[key_end..].trim_start();
    let had_separator = key_end < line.len();
    if let Some(r) = rest.strip_prefix(['=', ':']) {
        rest = r.trim_start();
    }
    if raw_key.is_empty() {
        return Err("expected `key=value`, found no key".to_owned());
    }
    if !had_separator {
        return Err("expected `key=value`, found a key without a value".to_owned());
    }
    Ok((unescape(raw_key)?, unescape(rest)?))
}

fn unescape(s: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let decoded = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 4)
                    .and_then(char::from_u32)
                    .ok_or_else(|| "malformed \\uXXXX escape".to_owned())?;
                out.push(decoded);
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

impl ConsumerConfig {
    /// Kafka's defaults, no group.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a property's value is a secret that must never be printed.
    ///
    /// ```
    /// assert!(weir_core::ConsumerConfig::is_secret_key("sasl.password"));
    /// assert!(weir_core::ConsumerConfig::is_secret_key("ssl.key.password"));
    /// assert!(!weir_core::ConsumerConfig::is_secret_key("group.id"));
    /// ```
    pub fn is_secret_key(key: &str) -> bool {
        is_secret(key)
    }

    /// Build from `key = value` pairs; each value is checked, then the whole.
    pub fn from_properties<I, K, V>(props: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut c = Self::default();
        for (k, v) in props {
            c.set(k.as_ref(), v.as_ref())?;
        }
        c.validate()?;
        Ok(c)
    }

    /// Read a Java properties file, as Kafka's tools do: `key=value`, `key: value` or
    /// `key value`; `#` and `!` start comment lines; a line ending in `\` continues on
    /// the next (leading blanks of the continuation dropped), which is how multi-line
    /// `sasl.jaas.config` values are usually written; `\t`, `\n`, `\uXXXX` and
    /// `\<char>` escapes are decoded. Errors name the file and line, and never quote
    /// the line itself (it may hold a secret).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("consumer.properties");
    /// std::fs::write(&path, "# billing consumer\n\
    ///     group.id = billing\n\
    ///     max.poll.records: 100\n\
    ///     sasl.jaas.config org.apache.kafka.common.security.plain.PlainLoginModule required \\\n\
    ///         username=\"billing\" \\\n\
    ///         password=\"hunter2\";\n")?;
    /// let config = weir_core::ConsumerConfig::from_file(&path)?;
    /// assert_eq!(config.group_id(), Some("billing"));
    /// assert_eq!(config.max_poll_records(), 100);
    /// assert!(config.other()["sasl.jaas.config"].ends_with("password=\"hunter2\";"));
    /// assert!(!format!("{config:?}").contains("hunter2"));
    ///
    /// std::fs::write(&path, "group.id=billing\nmax.poll.records=lots\n")?;
    /// let err = weir_core::ConsumerConfig::from_file(&path).unwrap_err().to_string();
    /// assert!(err.contains("max.poll.records") && err.contains("consumer.properties:2"), "{err}");
    /// # Ok(()) }
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut c = Self::default();
        for entry in parse_properties(&text) {
            let (line, k, v) = entry.map_err(|(line, reason)| {
                Error::config(
                    format!("{}:{line}", path.display()),
                    format!("{reason} (the line is not shown: it may hold a secret)"),
                )
            })?;
            c.set(&k, &v).map_err(|e| match e {
                Error::Config { key, reason } => Error::Config {
                    key,
                    reason: format!("{} (in {}:{})", reason, path.display(), line),
                },
                other => other,
            })?;
        }
        c.validate()?;
        Ok(c)
    }

    /// Set one property by its Kafka name. Known keys are parsed and checked here;
    /// other keys are kept for the backend (see [`other`](Self::other)).
    ///
    /// ```
    /// use weir_core::{ConsumerConfig, Error};
    /// let mut config = ConsumerConfig::new();
    /// config.set("group.id", "billing")?.set("max.poll.records", "100")?;
    /// config.set("security.protocol", "SSL")?; // not weir's: kept for the backend
    /// assert_eq!(config.max_poll_records(), 100);
    /// assert_eq!(config.other()["security.protocol"], "SSL");
    ///
    /// let err = config.set("enable.auto.commit", "sometimes").unwrap_err();
    /// assert!(matches!(err, Error::Config { ref key, .. } if key == "enable.auto.commit"));
    /// # Ok::<(), weir_core::Error>(())
    /// ```
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self> {
        let key = key.trim();
        let v = value.trim();
        match key {
            "bootstrap.servers" => self.bootstrap_servers = v.to_owned(),
            "group.id" => self.group_id = (!v.is_empty()).then(|| v.to_owned()),
            "client.id" => self.client_id = v.to_owned(),
            "fetch.min.bytes" => {
                self.fetch_min_bytes = at_least(key, parse(key, v, "a byte count")?, 1)?
            }
            "fetch.max.wait.ms" => self.fetch_max_wait_ms = millis(key, v)?,
            "max.partition.fetch.bytes" => {
                self.max_partition_fetch_bytes = at_least(key, parse(key, v, "a byte count")?, 1)?
            }
            "session.timeout.ms" => self.session_timeout_ms = at_least(key, millis(key, v)?, 1)?,
            "heartbeat.interval.ms" => {
                self.heartbeat_interval_ms = at_least(key, millis(key, v)?, 1)?
            }
            "auto.offset.reset" => {
                self.auto_offset_reset = v.parse().map_err(|r| Error::config(key, r))?
            }
            "enable.auto.commit" => self.enable_auto_commit = parse_bool(key, v)?,
            "auto.commit.interval.ms" => self.auto_commit_interval_ms = millis(key, v)?,
            "partition.assignment.strategy" => {
                let mut list = Vec::new();
                for part in v.split(',').filter(|p| !p.trim().is_empty()) {
                    list.push(part.parse().map_err(|r| Error::config(key, r))?);
                }
                if list.is_empty() {
                    return Err(Error::config(key, "must name at least one strategy"));
                }
                self.assignment_strategies = list;
            }
            "max.poll.records" => {
                self.max_poll_records = at_least(key, parse(key, v, "a record count")?, 1)?
            }
            "max.poll.interval.ms" => {
                self.max_poll_interval_ms = at_least(key, millis(key, v)?, 1)?
            }
            "receive.buffer.bytes" => {
                self.receive_buffer_bytes = at_least(key, parse(key, v, "a byte count")?, -1)?
            }
            "send.buffer.bytes" => {
                self.send_buffer_bytes = at_least(key, parse(key, v, "a byte count")?, -1)?
            }
            "isolation.level" => {
                self.isolation_level = v.parse().map_err(|r| Error::config(key, r))?
            }
            "" => return Err(Error::config("", "empty property name")),
            _ => {
                self.other.insert(key.to_owned(), value.to_owned());
            }
        }
        Ok(self)
    }

    /// Check the values together (e.g. `heartbeat.interval.ms` below
    /// `session.timeout.ms`). Backends call this when they create a consumer.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = weir_core::ConsumerConfig::new()
    ///     .with_session_timeout(Duration::from_secs(3))
    ///     .with_heartbeat_interval(Duration::from_secs(5));
    /// let err = config.validate().unwrap_err();
    /// assert!(err.to_string().contains("heartbeat.interval.ms"), "{err}");
    /// ```
    pub fn validate(&self) -> Result<()> {
        if self.heartbeat_interval_ms >= self.session_timeout_ms {
            return Err(Error::config(
                "heartbeat.interval.ms",
                format!(
                    "must be lower than session.timeout.ms ({}), got {}",
                    self.session_timeout_ms, self.heartbeat_interval_ms
                ),
            ));
        }
        Ok(())
    }

    /// Every property as `(key, value)`, known keys with their current values, then
    /// the others. Secrets are included as they are: do not print this.
    pub fn to_properties(&self) -> Vec<(String, String)> {
        let strategies = self
            .assignment_strategies
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut v: Vec<(String, String)> = vec![
            ("bootstrap.servers".into(), self.bootstrap_servers.clone()),
            ("group.id".into(), self.group_id.clone().unwrap_or_default()),
            ("client.id".into(), self.client_id.clone()),
            ("fetch.min.bytes".into(), self.fetch_min_bytes.to_string()),
            (
                "fetch.max.wait.ms".into(),
                self.fetch_max_wait_ms.to_string(),
            ),
            (
                "max.partition.fetch.bytes".into(),
                self.max_partition_fetch_bytes.to_string(),
            ),
            (
                "session.timeout.ms".into(),
                self.session_timeout_ms.to_string(),
            ),
            (
                "heartbeat.interval.ms".into(),
                self.heartbeat_interval_ms.to_string(),
            ),
            (
                "auto.offset.reset".into(),
                self.auto_offset_reset.to_string(),
            ),
            (
                "enable.auto.commit".into(),
                self.enable_auto_commit.to_string(),
            ),
            (
                "auto.commit.interval.ms".into(),
                self.auto_commit_interval_ms.to_string(),
            ),
            ("partition.assignment.strategy".into(), strategies),
            ("max.poll.records".into(), self.max_poll_records.to_string()),
            (
                "max.poll.interval.ms".into(),
                self.max_poll_interval_ms.to_string(),
            ),
            (
                "receive.buffer.bytes".into(),
                self.receive_buffer_bytes.to_string(),
            ),
            (
                "send.buffer.bytes".into(),
                self.send_buffer_bytes.to_string(),
            ),
            ("isolation.level".into(), self.isolation_level.to_string()),
        ];
        v.extend(self.other.iter().map(|(k, v)| (k.clone(), v.clone())));
        v
    }

    /// Properties weir does not know, for the backend to pass on or reject.
    pub fn other(&self) -> &BTreeMap<String, String> {
        &self.other
    }

    /// `bootstrap.servers`: `host:port,...` for Kafka, `log:///dir` for the embedded log.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }
    /// `group.id`, if any.
    pub fn group_id(&self) -> Option<&str> {
        self.group_id.as_deref()
    }
    /// `client.id`.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
    /// `fetch.min.bytes`.
    pub fn fetch_min_bytes(&self) -> u32 {
        self.fetch_min_bytes
    }
    /// `fetch.max.wait.ms`.
    pub fn fetch_max_wait(&self) -> Duration {
        Duration::from_millis(self.fetch_max_wait_ms)
    }
    /// `max.partition.fetch.bytes`.
    pub fn max_partition_fetch_bytes(&self) -> u32 {
        self.max_partition_fetch_bytes
    }
    /// `session.timeout.ms`.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.session_timeout_ms)
    }
    /// `heartbeat.interval.ms`.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }
    /// `auto.offset.reset`.
    pub fn auto_offset_reset(&self) -> AutoOffsetReset {
        self.auto_offset_reset
    }
    /// `enable.auto.commit`.
    pub fn enable_auto_commit(&self) -> bool {
        self.enable_auto_commit
    }
    /// `auto.commit.interval.ms`.
    pub fn auto_commit_interval(&self) -> Duration {
        Duration::from_millis(self.auto_commit_interval_ms)
    }
    /// The first (preferred) `partition.assignment.strategy`.
    pub fn assignment_strategy(&self) -> AssignmentStrategy {
        self.assignment_strategies
            .first()
            .copied()
            .unwrap_or_default()
    }
    /// All strategies listed in `partition.assignment.strategy`, preferred first.
    pub fn assignment_strategies(&self) -> &[AssignmentStrategy] {
        &self.assignment_strategies
    }
    /// `max.poll.records`.
    pub fn max_poll_records(&self) -> usize {
        self.max_poll_records
    }
    /// `max.poll.interval.ms`.
    pub fn max_poll_interval(&self) -> Duration {
        Duration::from_millis(self.max_poll_interval_ms)
    }
    /// `receive.buffer.bytes`.
    pub fn receive_buffer_bytes(&self) -> i32 {
        self.receive_buffer_bytes
    }
    /// `send.buffer.bytes`.
    pub fn send_buffer_bytes(&self) -> i32 {
        self.send_buffer_bytes
    }
    /// `isolation.level`.
    pub fn isolation_level(&self) -> IsolationLevel {
        self.isolation_level
    }

    /// Set `bootstrap.servers`.
    pub fn with_bootstrap_servers(mut self, servers: impl Into<String>) -> Self {
        self.bootstrap_servers = servers.into();
        self
    }
    /// Set `group.id`.
    pub fn with_group_id(mut self, group: impl Into<String>) -> Self {
        self.group_id = Some(group.into());
        self
    }
    /// Set `client.id`.
    pub fn with_client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }
    /// Set `fetch.min.bytes` (at least 1).
    pub fn with_fetch_min_bytes(mut self, bytes: u32) -> Self {
        self.fetch_min_bytes = bytes.max(1);
        self
    }
    /// Set `fetch.max.wait.ms`.
    pub fn with_fetch_max_wait(mut self, wait: Duration) -> Self {
        self.fetch_max_wait_ms = clamp_ms(wait);
        self
    }
    /// Set `max.partition.fetch.bytes` (at least 1).
    pub fn with_max_partition_fetch_bytes(mut self, bytes: u32) -> Self {
        self.max_partition_fetch_bytes = bytes.max(1);
        self
    }
    /// Set `session.timeout.ms`.
    pub fn with_session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout_ms = clamp_ms(timeout).max(1);
        self
    }
    /// Set `heartbeat.interval.ms`.
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval_ms = clamp_ms(interval).max(1);
        self
    }
    /// Set `auto.offset.reset`.
    pub fn with_auto_offset_reset(mut self, reset: AutoOffsetReset) -> Self {
        self.auto_offset_reset = reset;
        self
    }
    /// Set `enable.auto.commit`.
    pub fn with_enable_auto_commit(mut self, enable: bool) -> Self {
        self.enable_auto_commit = enable;
        self
    }
    /// Set `auto.commit.interval.ms`.
    pub fn with_auto_commit_interval(mut self, interval: Duration) -> Self {
        self.auto_commit_interval_ms = clamp_ms(interval);
        self
    }
    /// Set `partition.assignment.strategy` to one strategy.
    pub fn with_assignment_strategy(mut self, strategy: AssignmentStrategy) -> Self {
        self.assignment_strategies = vec![strategy];
        self
    }
    /// Set `max.poll.records` (at least 1).
    pub fn with_max_poll_records(mut self, records: usize) -> Self {
        self.max_poll_records = records.max(1);
        self
    }
    /// Set `max.poll.interval.ms`.
    pub fn with_max_poll_interval(mut self, interval: Duration) -> Self {
        self.max_poll_interval_ms = clamp_ms(interval).max(1);
        self
    }
    /// Set `isolation.level`.
    pub fn with_isolation_level(mut self, level: IsolationLevel) -> Self {
        self.isolation_level = level;
        self
    }
    /// Set any property by name, builder style; fails as [`set`](Self::set) does,
    /// with [`Error::Config`] naming the key.
    ///
    /// ```
    /// let config = weir_core::ConsumerConfig::new()
    ///     .with("group.id", "billing")?
    ///     .with("auto.offset.reset", "earliest")?;
    /// assert_eq!(config.auto_offset_reset(), weir_core::AutoOffsetReset::Earliest);
    /// assert!(weir_core::ConsumerConfig::new().with("fetch.min.bytes", "0").is_err());
    /// # Ok::<(), weir_core::Error>(())
    /// ```
    pub fn with(mut self, key: &str, value: &str) -> Result<Self> {
        self.set(key, value)?;
        Ok(self)
    }
}

impl fmt::Debug for ConsumerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in self.to_properties() {
            if is_secret(&k) {
                m.entry(&k, &"***");
            } else {
                m.entry(&k, &redact_userinfo(&v));
            }
        }
        m.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafkas() {
        let c = ConsumerConfig::new();
        for (k, v) in KNOWN_KEYS {
            let got = c
                .to_properties()
                .into_iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v);
            assert_eq!(got.as_deref(), Some(*v), "default of {k}");
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        for (k, v) in [
            ("max.poll.records", "0"),
            ("max.poll.records", "many"),
            ("enable.auto.commit", "yes"),
            ("auto.offset.reset", "middle"),
            ("partition.assignment.strategy", "sticky-ish"),
            ("session.timeout.ms", "-5"),
            ("isolation.level", "serializable"),
            ("max.poll.interval.ms", "2147483648"),
            ("session.timeout.ms", "18446744073709551615"),
            ("fetch.max.wait.ms", "99999999999"),
        ] {
            let e = ConsumerConfig::from_properties([(k, v)]).unwrap_err();
            match e {
                Error::Config { key, .. } => assert_eq!(key, k),
                other => panic!("{k}={v}: {other}"),
            }
        }
    }

    #[test]
    fn millisecond_values_stay_within_kafkas_int_range() {
        let c = ConsumerConfig::from_properties([("max.poll.interval.ms", "2147483647")]).unwrap();
        assert_eq!(c.max_poll_interval(), Duration::from_millis(2_147_483_647));
        let c = ConsumerConfig::new()
            .with_max_poll_interval(Duration::MAX)
            .with_session_timeout(Duration::MAX)
            .with_fetch_max_wait(Duration::MAX);
        assert_eq!(c.max_poll_interval(), Duration::from_millis(MAX_MS));
        assert_eq!(c.session_timeout(), Duration::from_millis(MAX_MS));
        assert_eq!(c.fetch_max_wait(), Duration::from_millis(MAX_MS));
        // Deadlines computed from any accepted value do not overflow.
        let _ = std::time::Instant::now() + c.max_poll_interval() + c.session_timeout();
    }

    #[test]
    fn heartbeat_must_be_below_session_timeout() {
        let e = ConsumerConfig::from_properties([
            ("session.timeout.ms", "1000"),
            ("heartbeat.interval.ms", "1000"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("heartbeat.interval.ms"), "{e}");
    }

    #[test]
    fn java_class_names_are_accepted() {
        let c = ConsumerConfig::from_properties([(
            "partition.assignment.strategy",
            "org.apache.kafka.clients.consumer.CooperativeStickyAssignor",
        )])
        .unwrap();
        assert_eq!(
            c.assignment_strategy(),
            AssignmentStrategy::CooperativeSticky
        );
    }

    #[test]
    fn unknown_keys_are_kept_and_secrets_redacted() {
        let c = ConsumerConfig::from_properties([
            ("security.protocol", "SASL_SSL"),
            ("sasl.password", "canary-4711"),
            ("ssl.key.password", "canary-4712"),
            ("sasl.jaas.config", "canary-4713"),
        ])
        .unwrap();
        assert_eq!(c.other()["security.protocol"], "SASL_SSL");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("canary"), "{dbg}");
        assert!(dbg.contains("SASL_SSL"));
    }

    #[test]
    fn credentials_in_urls_and_user_info_are_redacted() {
        let c = ConsumerConfig::from_properties([
            (
                "schema.registry.url",
                "https://reg:canary-1@registry:8081/x,http://plain:8081",
            ),
            ("basic.auth.user.info", "reg:canary-2"),
            ("bootstrap.servers", "kafka:9092"),
        ])
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("canary"), "{dbg}");
        assert!(
            dbg.contains("https://***@registry:8081/x,http://plain:8081"),
            "{dbg}"
        );
        assert!(dbg.contains("kafka:9092"), "{dbg}");
        assert_eq!(redact_userinfo("log:///tmp/a@b"), "log:///tmp/a@b");
    }

    #[test]
    fn properties_file_round_trip_and_line_numbers() {
        let dir = std::env::temp_dir().join(format!("weir-core-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.properties");
        std::fs::write(
            &good,
            "# comment\ngroup.id = g1\nmax.poll.records: 42\n! other comment\n",
        )
        .unwrap();
        let c = ConsumerConfig::from_file(&good).unwrap();
        assert_eq!(c.group_id(), Some("g1"));
        assert_eq!(c.max_poll_records(), 42);
        let bad = dir.join("bad.properties");
        std::fs::write(&bad, "group.id=g\nfetch.min.bytes=lots\n").unwrap();
        let e = ConsumerConfig::from_file(&bad).unwrap_err().to_string();
        assert!(e.contains("fetch.min.bytes") && e.contains(":2"), "{e}");
        let missing = ConsumerConfig::from_file(dir.join("nope.properties")).unwrap_err();
        assert!(missing.to_string().contains("nope.properties"));
    }

    #[test]
    fn properties_file_follows_java_syntax() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("java.properties");
        std::fs::write(
            &path,
            "  # indented comment\n\
             group.id billing\n\
             client.id\t=\tworker-\\u0031\n\
             my\\ odd\\=key = a\\tb\n\
             sasl.jaas.config = org.example.Login required \\\n    user=\"u\" \\\n    password=\"canary-77\";\n\
             bootstrap.servers: log:///tmp/x\n",
        )
        .unwrap();
        let c = ConsumerConfig::from_file(&path).unwrap();
        assert_eq!(c.group_id(), Some("billing"));
        assert_eq!(c.client_id(), "worker-1");
        assert_eq!(c.other()["my odd=key"], "a\tb");
        assert_eq!(
            c.other()["sasl.jaas.config"],
            "org.example.Login required user=\"u\" password=\"canary-77\";"
        );
        assert_eq!(c.bootstrap_servers(), "log:///tmp/x");
        assert!(!format!("{c:?}").contains("canary"));
    }

    #[test]
    fn malformed_properties_lines_name_file_and_line_but_never_their_text() {
        let dir = tempfile::tempdir().unwrap();
        for (text, line) in [
            ("group.id=g\ncanary-secret-1\n", 2),
            ("=canary-secret-2\n", 1),
            ("a=1\n\nb=2\nsasl.password=canary-secret-3\\u12\n", 4),
        ] {
            let path = dir.path().join("bad.properties");
            std::fs::write(&path, text).unwrap();
            let e = ConsumerConfig::from_file(&path).unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(shown.contains(&format!("bad.properties:{line}")), "{shown}");
            assert!(!shown.contains("canary"), "{shown}");
        }
    }
}
