//! weir's `ConsumerConfig` → librdkafka properties, and the redaction of secrets.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use rdkafka::ClientConfig;
use weir_core::{AutoOffsetReset, ConsumerConfig, Error, Result};

/// librdkafka properties weir-kafka sets itself because its correctness depends on them.
/// A passthrough key that contradicts one of these is rejected by name.
const OWNED_KEYS: &[(&str, &str)] = &[
    // weir stores offsets itself, only for records it has delivered.
    ("enable.auto.offset.store", "false"),
    // weir implements enable.auto.commit itself, inside poll (as Kafka's Java client).
    ("enable.auto.commit", "false"),
    // weir handles partition ends through watermarks, not EOF events.
    ("enable.partition.eof", "false"),
];

/// Strip an optional `kafka://` scheme from each entry of a `bootstrap.servers` list.
///
/// ```
/// assert_eq!(weir_kafka::bootstrap_servers("kafka://a:9092, b:9093")?, "a:9092,b:9093");
/// assert!(weir_kafka::bootstrap_servers("log:///tmp/x").is_err());
/// # Ok::<(), weir_core::Error>(())
/// ```
pub fn bootstrap_servers(list: &str) -> Result<String> {
    let mut out = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let hostport = match entry.split_once("://") {
            Some(("kafka", rest)) => rest.trim_end_matches('/'),
            Some((scheme, _)) => {
                return Err(Error::config(
                    "bootstrap.servers",
                    format!("`{scheme}://` is not a Kafka address (expected kafka://host:port or host:port)"),
                ))
            }
            None => entry,
        };
        if hostport.is_empty() {
            return Err(Error::config(
                "bootstrap.servers",
                "empty address (expected kafka://host:port or host:port)",
            ));
        }
        out.push(hostport.to_owned());
    }
    if out.is_empty() {
        return Err(Error::config(
            "bootstrap.servers",
            "no broker address given (expected kafka://host:port or host:port)",
        ));
    }
    Ok(out.join(","))
}

/// Whether a `bootstrap.servers` value names the Kafka backend: `kafka://…` or plain
/// `host:port` entries (as opposed to `log:///path` for the embedded log).
///
/// ```
/// assert!(weir_kafka::is_kafka_url("kafka://localhost:9092"));
/// assert!(weir_kafka::is_kafka_url("broker-1:9092,broker-2:9092"));
/// assert!(!weir_kafka::is_kafka_url("log:///var/lib/weir"));
/// ```
pub fn is_kafka_url(servers: &str) -> bool {
    bootstrap_servers(servers).is_ok()
}

/// Replaces every secret value of a configuration by `***` in any text it is given.
///
/// librdkafka and rust-rdkafka can echo configuration values in their messages
/// (`Invalid value "…" for configuration property …`); every message weir-kafka turns
/// into an error or a log line passes through this first.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    pub(crate) fn new(config: &ConsumerConfig) -> Self {
        let mut secrets: Vec<String> = config
            .to_properties()
            .into_iter()
            .filter(|(k, v)| ConsumerConfig::is_secret_key(k) && !v.trim().is_empty())
            .map(|(_, v)| v)
            .collect();
        // Longest first so that a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self {
            secrets: Arc::new(secrets),
        }
    }

    pub(crate) fn clean(&self, text: &str) -> String {
        let mut s = text.to_owned();
        for secret in self.secrets.iter() {
            if s.contains(secret.as_str()) {
                s = s.replace(secret.as_str(), "***");
            }
            let trimmed = secret.trim();
            if !trimmed.is_empty() && s.contains(trimmed) {
                s = s.replace(trimmed, "***");
            }
        }
        s
    }
}

/// The librdkafka properties for a weir configuration.
pub(crate) struct Mapped {
    pub(crate) client: ClientConfig,
    /// True when weir's config had no `group.id` (standalone use only).
    pub(crate) standalone: bool,
}

fn ms(v: std::time::Duration) -> String {
    v.as_millis().to_string()
}

/// Map weir's config onto librdkafka's names. Known keys are translated (Kafka's Java
/// names where librdkafka differs), unknown keys pass through unchanged, and the keys
/// weir-kafka owns are checked for contradictions.
pub(crate) fn to_client_config(config: &ConsumerConfig) -> Result<Mapped> {
    config.validate()?;
    let mut props: BTreeMap<String, String> = BTreeMap::new();
    props.insert(
        "bootstrap.servers".into(),
        bootstrap_servers(config.bootstrap_servers())?,
    );
    let standalone = config.group_id().is_none();
    // librdkafka only routes fetched messages through the consumer queue (and supports
    // assign()) when a group is configured. A consumer without group.id gets a private
    // group name it never joins (no subscribe, commits are refused by weir).
    let group = match config.group_id() {
        Some(g) => g.to_owned(),
        None => format!(
            "weir-standalone-{}-{}",
            std::process::id(),
            STANDALONE_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ),
    };
    props.insert("group.id".into(), group);
    if !config.client_id().is_empty() {
        props.insert("client.id".into(), config.client_id().to_owned());
    }
    props.insert(
        "fetch.min.bytes".into(),
        config.fetch_min_bytes().to_string(),
    );
    props.insert("fetch.wait.max.ms".into(), ms(config.fetch_max_wait()));
    props.insert(
        "max.partition.fetch.bytes".into(),
        config.max_partition_fetch_bytes().to_string(),
    );
    props.insert("session.timeout.ms".into(), ms(config.session_timeout()));
    props.insert(
        "heartbeat.interval.ms".into(),
        ms(config.heartbeat_interval()),
    );
    props.insert(
        "max.poll.interval.ms".into(),
        ms(config.max_poll_interval()),
    );
    // weir resolves start offsets itself before assigning; this policy only applies
    // when a fetch later falls outside the log (retention moved the log start).
    props.insert(
        "auto.offset.reset".into(),
        match config.auto_offset_reset() {
            AutoOffsetReset::Earliest => "earliest",
            AutoOffsetReset::Latest => "latest",
            AutoOffsetReset::None => "error",
        }
        .into(),
    );
    props.insert(
        "partition.assignment.strategy".into(),
        config
            .assignment_strategies()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    props.insert(
        "isolation.level".into(),
        config.isolation_level().to_string(),
    );
    // Kafka's Java defaults for the socket buffers (64/128 KiB) are JVM habits;
    // librdkafka's default (the OS's) applies unless the user chose a value.
    if config.receive_buffer_bytes() != 64 * 1024 {
        props.insert(
            "socket.receive.buffer.bytes".into(),
            config.receive_buffer_bytes().max(0).to_string(),
        );
    }
    if config.send_buffer_bytes() != 128 * 1024 {
        props.insert(
            "socket.send.buffer.bytes".into(),
            config.send_buffer_bytes().max(0).to_string(),
        );
    }
    for (k, v) in OWNED_KEYS {
        props.insert((*k).into(), (*v).into());
    }
    for (k, v) in config.other() {
        if let Some((_, owned)) = OWNED_KEYS.iter().find(|(o, _)| o == k) {
            if v.trim() != *owned {
                return Err(Error::config(
                    k.as_str(),
                    format!("weir-kafka manages this property itself (it must stay `{owned}`)"),
                ));
            }
        }
        props.insert(k.clone(), v.clone());
    }
    let mut client = ClientConfig::new();
    for (k, v) in props {
        client.set(k, v);
    }
    Ok(Mapped { client, standalone })
}

static STANDALONE_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_are_translated_and_unknown_passed_through() {
        let c = ConsumerConfig::from_properties([
            ("bootstrap.servers", "kafka://127.0.0.1:9092"),
            ("group.id", "g"),
            ("fetch.max.wait.ms", "123"),
            ("statistics.interval.ms", "5000"),
        ])
        .unwrap();
        let m = to_client_config(&c).unwrap();
        assert!(!m.standalone);
        assert_eq!(m.client.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(m.client.get("fetch.wait.max.ms"), Some("123"));
        assert_eq!(m.client.get("statistics.interval.ms"), Some("5000"));
        assert_eq!(m.client.get("enable.auto.commit"), Some("false"));
        assert_eq!(m.client.get("socket.receive.buffer.bytes"), None);
    }

    #[test]
    fn owned_keys_cannot_be_contradicted() {
        let c = ConsumerConfig::from_properties([
            ("bootstrap.servers", "h:1"),
            ("enable.auto.offset.store", "true"),
        ])
        .unwrap();
        let e = to_client_config(&c).err().unwrap();
        assert!(e.to_string().contains("enable.auto.offset.store"), "{e}");
    }

    #[test]
    fn bad_bootstrap_is_named() {
        for bad in ["", "log:///tmp/x", "kafka://"] {
            let e = bootstrap_servers(bad).unwrap_err();
            assert!(e.to_string().contains("bootstrap.servers"), "{bad}: {e}");
        }
        assert_eq!(bootstrap_servers("h:1,kafka://g:2/").unwrap(), "h:1,g:2");
    }

    #[test]
    fn redactor_replaces_secret_values() {
        let c = ConsumerConfig::from_properties([
            ("sasl.password", "canary-pw-1"),
            ("ssl.key.password", "canary-pw-2"),
            ("client.id", "visible"),
        ])
        .unwrap();
        let r = Redactor::new(&c);
        let out = r.clean("bad value \"canary-pw-1\" and canary-pw-2 for visible");
        assert!(!out.contains("canary"), "{out}");
        assert!(out.contains("visible"));
        assert!(!format!("{r:?}").contains("canary"));
    }
}
