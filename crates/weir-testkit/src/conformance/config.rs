//! Bad configuration is an `Error::Config` naming the key.

use weir_core::Error;

use crate::Backend;

fn config_key(result: &weir_core::Result<()>) -> Option<&str> {
    match result {
        Err(Error::Config { key, .. }) => Some(key.as_str()),
        _ => None,
    }
}

/// Bad values of known keys are rejected with `Error::Config` naming the key: each
/// when it is set, and a combination that is only wrong as a whole
/// (`heartbeat.interval.ms` not below `session.timeout.ms`) when the backend builds the
/// consumer.
pub async fn bad_config_values_are_rejected_naming_the_key(
    backend: &dyn Backend,
) -> anyhow::Result<()> {
    let group = backend.unique("bad-values");
    let bad = [
        ("max.poll.records", "0"),
        ("session.timeout.ms", "soon"),
        ("heartbeat.interval.ms", ""),
        ("auto.offset.reset", "sometimes"),
        ("enable.auto.commit", "yes please"),
        ("partition.assignment.strategy", "fastest"),
        ("fetch.min.bytes", "-1"),
        ("max.poll.interval.ms", "0"),
        ("isolation.level", "read_whatever"),
    ];
    let mut wrong = Vec::new();
    for (key, value) in bad {
        let mut config = backend.config(Some(&group));
        let result = config.set(key, value).map(drop);
        if config_key(&result) != Some(key) {
            wrong.push(format!("{key}={value:?} gave {result:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "each bad value should be rejected with Error::Config naming its key; instead: {}",
        wrong.join("; ")
    );

    let mut config = backend.config(Some(&group));
    let session = config.session_timeout().as_millis().to_string();
    config.set("heartbeat.interval.ms", &session)?;
    let built = backend.consumer(config).await.map(drop);
    assert_eq!(
        config_key(&built),
        Some("heartbeat.interval.ms"),
        "building a consumer with heartbeat.interval.ms = session.timeout.ms = {session} should fail with Error::Config naming heartbeat.interval.ms, got {built:?}"
    );
    Ok(())
}

/// A key neither weir nor the backend knows: rejected with `Error::Config` naming it
/// when the backend [rejects unknown keys](Backend::rejects_unknown_keys), accepted
/// otherwise. Keys the backend [passes through](Backend::passthrough_keys) are
/// accepted.
pub async fn unknown_config_keys_follow_the_backend(backend: &dyn Backend) -> anyhow::Result<()> {
    let group = backend.unique("unknown-keys");
    let key = "weir.testkit.no-such-property";
    let mut config = backend.config(Some(&group));
    config.set(key, "1")?;
    let built = backend.consumer(config).await;
    if backend.rejects_unknown_keys() {
        let result = built.map(drop);
        assert_eq!(
            config_key(&result),
            Some(key),
            "the {} backend rejects unknown keys: building a consumer with `{key}` should fail with Error::Config naming it, got {result:?}",
            backend.name()
        );
    } else {
        let mut consumer = built.map_err(|e| {
            anyhow::anyhow!(
                "the {} backend accepts unknown keys, yet `{key}` was refused: {e}",
                backend.name()
            )
        })?;
        consumer.close().await?;
    }
    for (k, v) in backend.passthrough_keys() {
        let mut config = backend.config(Some(&group));
        config.set(k, v)?;
        let mut consumer = backend.consumer(config).await.map_err(|e| {
            anyhow::anyhow!(
                "the {} backend passes `{k}` through, yet a consumer with {k}={v} was refused: {e}",
                backend.name()
            )
        })?;
        consumer.close().await?;
    }
    Ok(())
}
